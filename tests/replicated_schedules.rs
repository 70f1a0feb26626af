//! Seeded fault schedules against replicated state machines on the sim
//! backend, through the actix runtime. Each seed draws a cluster, client
//! commands and a `FaultPlan` (joins, leaves, kills, crashes, restarts,
//! partitions, heals); after the schedule the network heals, every node
//! restarts, and the replicas settle. Then:
//!
//! - every live replica holds the same state (same `StateId`, same hash),
//!   and every joiner got there;
//! - no command is applied twice;
//! - if the final view is primary, every acknowledged command of its history
//!   (same genesis) is in the state, at the position its reply named;
//! - no command refused with `NotPrimary` is in the state;
//! - an acknowledged command is missing only if every replica that held its
//!   history died (only the initial replicas may found a group; later ones
//!   join an existing one).
//!
//! Two more runs give every replica a data directory (one with a group
//! key, one without): after the schedule every process is killed at once,
//! and one new process per directory comes back, in a seeded order. The same checks hold, and
//! the group must be primary again at the end — in memory, every state
//! would be gone.
//!
//! Safe delivery runs with both acknowledgement rules: a majority of the
//! primary's members (`Safe`) and every holder (`SafeAll`). With data
//! directories, safe delivery must lose no acknowledged command and end
//! primary in every run; a durable run with agreed delivery measures what
//! that mode loses (its summary line), the loss window the docs state.
//!
//! `SIM_SEEDS=n` changes how many seeds run (default 200; 60 for the
//! every-holder run and the keyed durable run, 30 for the unkeyed and the
//! agreed durable ones),
//! `SIM_SEED=s` replays one; a failure names its seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix_cpg::transport::sim::{Fault, FaultOutcome, FaultPlan, SimCluster, SimRng};
use actix_cpg::{
    Delivery, GroupName, Member, NodeId, Replica, ReplicaConfig, ReplicaError, Transport,
};

const STEPS: usize = 30;

use crate::support::ledger;
use crate::support::scratch::Scratch;
use ledger::Ledger;

#[derive(Debug, Clone)]
struct Outcome {
    entry: (Member, u64),
    result: Result<(u64, u64), ReplicaError>,
}

struct World {
    cluster: SimCluster,
    replicas: Rc<RefCell<Vec<Replica<Ledger>>>>,
    outcomes: Rc<RefCell<Vec<Outcome>>>,
    pending: Rc<RefCell<usize>>,
    /// Every genesis each replica was seen holding.
    held: BTreeMap<Member, BTreeSet<u64>>,
    config: ReplicaConfig,
    log: Vec<String>,
    /// Durable runs: where the data directories are, and how many were
    /// handed out (one per replica started, in order).
    durable: Option<(std::path::PathBuf, Rc<RefCell<usize>>)>,
    /// Why a replica's data directory did not open, if one did not.
    storage_errors: Rc<RefCell<Vec<String>>>,
    /// Every replica process started, and how many have not finished
    /// starting (they hold their data directory already).
    started: Rc<RefCell<Vec<Member>>>,
    starting: Rc<RefCell<usize>>,
}

impl World {
    /// Starts a replica; only `founder`s may start a new history.
    fn start(&self, conn: actix_cpg::transport::sim::SimConnection, founder: bool) {
        let dir = self.durable.as_ref().map(|(base, next)| {
            let mut next = next.borrow_mut();
            *next += 1;
            base.join(format!("r{}", *next - 1))
        });
        self.start_on(conn, founder, dir);
    }

    /// Starts a replica on the data directory `dir` (durable runs).
    fn start_on(
        &self,
        conn: actix_cpg::transport::sim::SimConnection,
        founder: bool,
        dir: Option<std::path::PathBuf>,
    ) {
        let replicas = self.replicas.clone();
        let config = ReplicaConfig {
            found_group: founder,
            data_dir: dir,
            ..self.config.clone()
        };
        let storage = self.storage_errors.clone();
        let starting = self.starting.clone();
        *starting.borrow_mut() += 1;
        self.started.borrow_mut().push(conn_member(&conn));
        actix::spawn(async move {
            let started = Replica::start(conn, config).await;
            *starting.borrow_mut() -= 1;
            match started {
                Ok(r) => replicas.borrow_mut().push(r),
                // A data directory that does not open is a failure of the
                // run, not a replica that could not start in time.
                Err(ReplicaError::Storage(why)) => storage.borrow_mut().push(why),
                Err(_) => {}
            }
        });
    }

    fn observe(&mut self) {
        for r in self.replicas.borrow().iter() {
            let s = r.status();
            if s.holding && s.state.genesis != 0 {
                self.held
                    .entry(r.local())
                    .or_default()
                    .insert(s.state.genesis);
            }
        }
    }

    fn live(&self) -> Vec<Replica<Ledger>> {
        self.replicas
            .borrow()
            .iter()
            .filter(|r| self.cluster.is_alive(r.local()) && !r.status().closed)
            .cloned()
            .collect()
    }

    fn execute(&self, replica: &Replica<Ledger>, n: u64) {
        let entry = (replica.local(), n);
        let outcomes = self.outcomes.clone();
        let pending = self.pending.clone();
        *pending.borrow_mut() += 1;
        let fut = replica.execute_traced(entry);
        actix::spawn(async move {
            let result = fut.await.map(|e| (e.state.applied, e.state.genesis));
            outcomes.borrow_mut().push(Outcome { entry, result });
            *pending.borrow_mut() -= 1;
        });
    }
}

async fn turn() {
    yields(50).await;
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Waits until every live replica is installed, holds the state, has
/// nothing in flight and shares one view, and no command awaits a reply.
async fn settle(world: &World) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        turn().await;
        let live = world.live();
        let statuses: Vec<_> = live.iter().map(|r| r.status()).collect();
        let quiet = !statuses.is_empty()
            && statuses
                .iter()
                .all(|s| s.installed && s.holding && s.outstanding == 0)
            && statuses.windows(2).all(|w| w[0].members == w[1].members)
            && *world.pending.borrow() == 0;
        if quiet {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("did not settle: {statuses:#?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How the replicas of a run keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keeping {
    /// In memory only.
    Memory,
    /// Each on a data directory, the group keyed.
    Keyed,
    /// Each on a data directory, without a key.
    Unkeyed,
}

async fn run(seed: u64, delivery: Delivery, keeping: Keeping) -> Result<Stats, String> {
    let mut rng = SimRng::new(seed ^ 0x0005_1A7E_5EED);
    let nodes = 3 + rng.below(3) as u32;
    let durable = keeping != Keeping::Memory;
    let scratch =
        durable.then(|| Scratch::new(&format!("schedules-{seed}-{delivery:?}-{keeping:?}")));
    let mut world = World {
        cluster: SimCluster::builder(nodes)
            .max_backlog(4 + rng.below(12) as usize)
            .build(),
        replicas: Rc::default(),
        outcomes: Rc::default(),
        pending: Rc::default(),
        held: BTreeMap::new(),
        config: ReplicaConfig {
            delivery,
            chunk_size: 64,
            // Keyed or not, a replica back from its disk may claim a later
            // primary than those back before it (module docs of
            // `replicated`): both come back in any order.
            key: (keeping == Keeping::Keyed)
                .then(|| actix_cpg::auth::GroupKey::from_passphrase("schedules")),
            // Processes die here, machines do not: what was written survives.
            sync: actix_cpg::replicated::SyncPolicy::Never,
            snapshot_every: 16,
            learn_timeout: Duration::from_millis(50),
            ..ReplicaConfig::default()
        },
        log: Vec::new(),
        durable: scratch
            .as_ref()
            .map(|s| (s.path().to_owned(), Rc::new(RefCell::new(0)))),
        storage_errors: Rc::default(),
        started: Rc::default(),
        starting: Rc::default(),
    };
    let group = GroupName::new("ledger").expect("name");
    for node in 1..=nodes.min(3) {
        let conn = world
            .cluster
            .process(NodeId(node))
            .expect("up")
            .join(&group)
            .expect("join");
        world.start(conn, true);
        turn().await;
    }
    settle(&world).await?;
    let mut next = 0u64;
    let mut plan = FaultPlan::new(seed, nodes);
    for _ in 0..STEPS {
        let live = world.live();
        for _ in 0..rng.below(6) {
            if live.is_empty() {
                break;
            }
            let r = &live[rng.below(live.len() as u64) as usize];
            next += 1;
            world.execute(r, next);
        }
        // Faults land while commands, installs and transfers are in flight.
        yields(rng.below(30)).await;
        world.observe();
        let fault = plan.next_fault();
        match world.cluster.apply_fault(&fault, &group) {
            Ok(FaultOutcome::Joined(conn)) => {
                world.log.push(format!("{fault} -> {}", conn_member(&conn)));
                world.start(conn, false);
            }
            Ok(FaultOutcome::Applied) => world.log.push(fault.to_string()),
            Ok(FaultOutcome::Skipped) => world.log.push(format!("({fault}: skipped)")),
            Err(e) => return Err(format!("fault {fault} rejected: {e}")),
        }
        yields(rng.below(30)).await;
        world.observe();
    }
    world.cluster.heal();
    for node in world.cluster.nodes() {
        let _ = world.cluster.restart_node(node);
    }
    world.log.push("heal, restart every node".into());
    if let Some((base, handed)) = world.durable.clone() {
        // Every process dies at once, wherever the group is (commands,
        // installs and transfers in flight); one new process per directory
        // comes back, in a seeded order, on a seeded node.
        let all: Vec<Replica<Ledger>> = world.replicas.borrow_mut().drain(..).collect();
        // Those still starting too: they hold their directories already.
        for m in world.started.borrow().iter() {
            let _ = world.cluster.kill_process(*m);
        }
        for r in &all {
            // Closed: its directory is free.
            while !r.status().closed {
                turn().await;
            }
        }
        while *world.starting.borrow() > 0 {
            turn().await;
        }
        let mut dirs: Vec<usize> = (0..*handed.borrow()).collect();
        for i in (1..dirs.len()).rev() {
            dirs.swap(i, rng.below(i as u64 + 1) as usize);
        }
        world
            .log
            .push(format!("kill every process; back in order {dirs:?}"));
        for i in dirs {
            let node = NodeId(1 + rng.below(u64::from(nodes)) as u32);
            let conn = world
                .cluster
                .process(node)
                .expect("up")
                .join(&group)
                .expect("join");
            world.start_on(conn, false, Some(base.join(format!("r{i}"))));
            turn().await;
        }
    }
    if world.live().is_empty() && world.durable.is_none() {
        let conn = world
            .cluster
            .process(NodeId(1))
            .expect("up")
            .join(&group)
            .expect("join");
        world.start(conn, true);
        world.log.push("fresh founding member on node1".into());
    }
    // One more joiner that must catch up by state transfer.
    let fault = Fault::Join { node: NodeId(1) };
    if let Ok(FaultOutcome::Joined(conn)) = world.cluster.apply_fault(&fault, &group) {
        world.start(conn, false);
    }
    settle(&world).await?;
    if let Some(why) = world.storage_errors.borrow().first() {
        return Err(format!("a data directory did not open: {why}"));
    }
    if world.durable.is_some() {
        // Back from their disks: primary again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !world.live().iter().all(|r| r.status().primary) {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "not primary again after the restart from disk: {:#?}",
                    world.live().iter().map(|r| r.status()).collect::<Vec<_>>()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    let live = world.live();
    let mut states = Vec::new();
    for r in &live {
        let state = r
            .query(|s: &Ledger| s.clone())
            .await
            .map_err(|e| e.to_string())?;
        states.push((r.local(), r.status(), state));
    }
    let (first_member, first_status, first_state) = &states[0];
    for (member, status, state) in &states[1..] {
        if status.state != first_status.state || state != first_state {
            return Err(format!(
                "{member} holds {:?}, {first_member} holds {:?}",
                status.state, first_status.state
            ));
        }
    }
    let mut position: BTreeMap<(Member, u64), u64> = BTreeMap::new();
    for (i, entry) in first_state.0.iter().enumerate() {
        if position.insert(*entry, i as u64 + 1).is_some() {
            return Err(format!("{entry:?} applied twice"));
        }
    }
    let outcomes = world.outcomes.borrow();
    let genesis = first_status.state.genesis;
    let alive: BTreeSet<Member> = live.iter().map(|r| r.local()).collect();
    let (mut acked, mut refused, mut uncertain, mut other_history, mut replaced_alive) =
        (0, 0, 0, 0, 0);
    for o in outcomes.iter() {
        match &o.result {
            Ok((at, g)) => {
                acked += 1;
                if *g != genesis {
                    other_history += 1;
                    if alive
                        .iter()
                        .any(|m| world.held.get(m).is_some_and(|h| h.contains(g)))
                    {
                        replaced_alive += 1;
                    }
                } else if first_status.primary && position.get(&o.entry) != Some(at) {
                    return Err(format!(
                        "{:?} acknowledged at {at} but found at {:?}",
                        o.entry,
                        position.get(&o.entry)
                    ));
                }
            }
            Err(ReplicaError::NotPrimary) => {
                refused += 1;
                if position.contains_key(&o.entry) {
                    return Err(format!("{:?} was refused but applied", o.entry));
                }
            }
            Err(_) => uncertain += 1,
        }
    }
    if std::env::var("SIM_LOG").is_ok() {
        println!("schedule:\n  {}", world.log.join("\n  "));
        println!("held: {:?}", world.held);
        for o in outcomes.iter() {
            println!("  {o:?}");
        }
    }
    Ok(Stats {
        primary: first_status.primary,
        replicas: live.len(),
        applied: first_state.0.len(),
        acked,
        checked: if first_status.primary {
            acked - other_history
        } else {
            0
        },
        other_history,
        replaced_alive,
        refused,
        uncertain,
    })
}

/// What one schedule did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    primary: bool,
    replicas: usize,
    applied: usize,
    acked: usize,
    /// Acknowledged commands found at their position in the final state.
    checked: usize,
    /// Acknowledged in a history the final state does not descend from
    /// (every holder of it died, or a group founded afresh replaced it).
    other_history: usize,
    /// ... of which a replica seen holding that history was still alive at
    /// the end: the documented fresh-founding limit.
    replaced_alive: usize,
    refused: usize,
    uncertain: usize,
}

fn conn_member(conn: &actix_cpg::transport::sim::SimConnection) -> Member {
    use actix_cpg::Connection;
    conn.local()
}

fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..count).collect()
}

fn check_all(delivery: Delivery) {
    check_runs(delivery, Keeping::Memory, 200);
}

fn check_runs(delivery: Delivery, keeping: Keeping, default_seeds: u64) {
    let mut total = Stats::default();
    let (mut runs, mut primary_at_end) = (0usize, 0usize);
    for seed in seeds(default_seeds) {
        match simulated().block_on(run(seed, delivery, keeping)) {
            Ok(stats) => {
                if stats.replaced_alive > 0 {
                    println!("seed {seed}: {stats:?}");
                }
                runs += 1;
                primary_at_end += usize::from(stats.primary);
                total.replicas += stats.replicas;
                total.applied += stats.applied;
                total.acked += stats.acked;
                total.checked += stats.checked;
                total.other_history += stats.other_history;
                total.replaced_alive += stats.replaced_alive;
                total.refused += stats.refused;
                total.uncertain += stats.uncertain;
            }
            Err(why) => {
                panic!("seed {seed} ({delivery:?}) failed: {why}\nreplay with SIM_SEED={seed}")
            }
        }
    }
    println!(
        "{delivery:?}, {keeping:?}: {runs} schedules, {primary_at_end} ended primary; {total:?}"
    );
    assert!(
        runs < 10 || primary_at_end * 4 > runs,
        "too few schedules end in a primary component to check much"
    );
    assert_eq!(
        total.replaced_alive, 0,
        "a history was replaced while a replica holding it lived"
    );
    if keeping != Keeping::Memory && delivery != Delivery::Agreed {
        // Every directory comes back, and a safe reply left only once a
        // majority had the command on disk: nothing acknowledged is lost.
        assert_eq!(
            total.other_history, 0,
            "an acknowledged command is missing after the restart from disk"
        );
    }
}

#[test]
fn agreed_delivery_survives_seeded_fault_schedules() {
    check_all(Delivery::Agreed);
}

#[test]
fn safe_delivery_survives_seeded_fault_schedules() {
    check_all(Delivery::Safe);
}

#[test]
fn safe_all_delivery_survives_seeded_fault_schedules() {
    check_runs(Delivery::SafeAll, Keeping::Memory, 60);
}

#[test]
fn durable_safe_replicas_come_back_from_disk_after_every_process_is_killed() {
    check_runs(Delivery::Safe, Keeping::Keyed, 60);
}

/// Agreed delivery with data directories: a reply leaves once this
/// replica applied (and logged) the command, so what a restart from disk
/// loses is measured here (printed), not asserted: the loss window the
/// `replicated` module docs state.
#[test]
fn durable_agreed_replicas_come_back_from_disk_after_every_process_is_killed() {
    check_runs(Delivery::Agreed, Keeping::Keyed, 30);
}

#[test]
fn unkeyed_durable_replicas_come_back_from_disk_in_any_order() {
    check_runs(Delivery::Safe, Keeping::Unkeyed, 30);
}

use crate::support::simulated;
use simulated::simulated;
