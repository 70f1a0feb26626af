//! Seeded fault schedules against leader elections on the sim backend,
//! through the actix runtime: joins, leaves, kills, crashes, restarts,
//! partitions and heals from a `FaultPlan`, members standing in a named
//! election, and checks at quiet points:
//!
//! - every member of an installed view names the same leader;
//! - in every quorate view (by the cluster's own quorum) there is exactly
//!   one leader of the group election, and it is the only member acting as
//!   leader; in a view without quorum nobody acts;
//! - no epoch is ever held by two different members, and the epochs a
//!   member is elected with only grow.
//!
//! `SIM_SEEDS=n` (default 200) and `SIM_SEED=s` as in the other schedules.
//!
//! Each seed runs on simulated time (a paused tokio clock in a fresh
//! system), so a seed replays the same run. The members take their wall
//! clock from that clock, and epochs depend on it: a group founded again in
//! the same ring (everyone gone, then a joiner) starts its terms at its
//! founders' clock + 1, and terms grow by one per leader change, so epochs
//! stay unique only while the clock moves faster than leaders change, as
//! it does on a real cluster. Paused time stands still while anything is
//! ready to run (the members wait on no timer), so the schedule moves the
//! clock itself, as real time would pass: 50 µs at every scheduler pass
//! between faults, 1 ms at every round of waiting for a quiet point.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix_cpg::transport::sim::{FaultOutcome, FaultPlan, SimCluster, SimConnection, SimRng};
use actix_cpg::{
    Election, ElectionConfig, ElectionEvent, Epoch, GroupName, Member, NodeId, Transport,
    GROUP_ELECTION,
};

const STEPS: usize = 30;

struct World {
    cluster: SimCluster,
    members: Rc<RefCell<Vec<Election>>>,
    /// Every (election, epoch) anyone was elected with, and by whom.
    elected: Rc<RefCell<Vec<(String, Epoch, Member)>>>,
}

impl World {
    fn start(&self, conn: SimConnection) {
        let members = self.members.clone();
        let elected = self.elected.clone();
        actix::spawn(async move {
            let Ok(e) = Election::start(conn, ElectionConfig::default()).await else {
                return;
            };
            let mut events = e.subscribe();
            let me = e.local();
            // Elected before subscribing shows in the status.
            for (name, epoch) in e.status().acting {
                elected.borrow_mut().push((name, epoch, me));
            }
            members.borrow_mut().push(e);
            while let Ok(event) = events.recv().await {
                if let ElectionEvent::Elected { name, epoch } = event {
                    elected.borrow_mut().push((name, epoch, me));
                }
            }
        });
    }

    fn live(&self) -> Vec<Election> {
        self.members
            .borrow()
            .iter()
            .filter(|e| self.cluster.is_alive(e.local()) && !e.status().closed)
            .cloned()
            .collect()
    }
}

/// How far the clock moves in one scheduler pass of the schedule.
const PASS: Duration = Duration::from_micros(50);

/// `n` scheduler passes (the members run what is ready), the clock
/// moving [`PASS`] in each as it would on a busy runtime. Simulated time
/// otherwise stands still while anything is ready to run, and no timer of
/// the members needs to fire for them to progress.
async fn passes(n: u64) {
    for _ in 0..n {
        tokio::time::advance(PASS).await;
    }
}

/// Runs until every live member is installed and nothing changes. Each
/// round sleeps 1 ms: on the paused clock that runs the members until none
/// has anything left to do, then the millisecond passes.
async fn quiet(world: &World) {
    let mut last = Vec::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now: Vec<_> = world.live().iter().map(|e| e.status()).collect();
        if now == last && now.iter().all(|s| s.installed) {
            return;
        }
        last = now;
    }
}

fn check_views(world: &World) -> Result<(), String> {
    let mut views: BTreeMap<Vec<Member>, Vec<actix_cpg::ElectionStatus>> = BTreeMap::new();
    for e in world.live() {
        let s = e.status();
        if s.installed {
            views.entry(s.members.clone()).or_default().push(s);
        }
    }
    for (view, statuses) in views {
        let leaders: BTreeSet<_> = statuses
            .iter()
            .map(|s| s.leaders.get(GROUP_ELECTION).copied())
            .collect();
        if leaders.len() != 1 {
            return Err(format!(
                "view {view:?} disagrees on the leader: {leaders:?}"
            ));
        }
        let quorate = world
            .cluster
            .quorum(view[0].node)
            .is_some_and(|q| q.quorate);
        let acting: Vec<Member> = statuses
            .iter()
            .filter(|s| s.acting.contains_key(GROUP_ELECTION))
            .filter_map(|s| s.local)
            .collect();
        if quorate {
            let Some(Some(l)) = leaders.into_iter().next() else {
                return Err(format!("quorate view {view:?} has no leader"));
            };
            if acting != vec![l.leader] {
                return Err(format!(
                    "quorate view {view:?}: {acting:?} act, {l:?} leads"
                ));
            }
        } else if !acting.is_empty() {
            return Err(format!(
                "{acting:?} act as leader without quorum in {view:?}"
            ));
        }
    }
    Ok(())
}

fn check_epochs(world: &World) -> Result<usize, String> {
    let elected = world.elected.borrow();
    let mut holder: BTreeMap<(String, Epoch), Member> = BTreeMap::new();
    let mut last: BTreeMap<(String, Member), Epoch> = BTreeMap::new();
    for (name, epoch, member) in elected.iter() {
        if let Some(other) = holder.insert((name.clone(), *epoch), *member) {
            if other != *member {
                return Err(format!(
                    "{name:?} epoch {epoch} held by {other} and {member}"
                ));
            }
        }
        if let Some(prev) = last.insert((name.clone(), *member), *epoch) {
            if prev > *epoch {
                return Err(format!("{member} elected with {epoch} after {prev}"));
            }
        }
    }
    Ok(holder.len())
}

async fn run(seed: u64) -> Result<(usize, usize), String> {
    let mut rng = SimRng::new(seed ^ 0x00E1_EC7E);
    let nodes = 3 + rng.below(3) as u32;
    let world = World {
        cluster: SimCluster::new(nodes),
        members: Rc::default(),
        elected: Rc::default(),
    };
    let group = GroupName::new("elections").expect("name");
    for node in 1..=nodes.min(3) {
        let conn = world
            .cluster
            .process(NodeId(node))
            .expect("up")
            .join(&group)
            .expect("join");
        world.start(conn);
        passes(50).await;
    }
    let mut plan = FaultPlan::new(seed, nodes);
    let mut checks = 0;
    for _ in 0..STEPS {
        let live = world.live();
        if !live.is_empty() && rng.chance(30) {
            let e = &live[rng.below(live.len() as u64) as usize];
            let stand = e.stand("jobs");
            actix::spawn(async move {
                let _ = stand.await;
            });
        }
        let fault = plan.next_fault();
        match world.cluster.apply_fault(&fault, &group) {
            Ok(FaultOutcome::Joined(conn)) => world.start(conn),
            Ok(_) => {}
            Err(e) => return Err(format!("fault {fault} rejected: {e}")),
        }
        // At least one pass: a step takes time, as on a real runtime.
        passes(1 + rng.below(40)).await;
        if rng.chance(50) {
            quiet(&world).await;
            check_views(&world).map_err(|e| format!("after {fault}: {e}"))?;
            checks += 1;
        }
    }
    world.cluster.heal();
    for node in world.cluster.nodes() {
        let _ = world.cluster.restart_node(node);
    }
    quiet(&world).await;
    check_views(&world)?;
    let epochs = check_epochs(&world)?;
    Ok((checks + 1, epochs))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u64);
    (0..count).collect()
}

#[test]
fn one_leader_per_quorate_view_and_no_shared_epochs_across_seeded_schedules() {
    let (mut checks, mut epochs) = (0, 0);
    let runs = seeds();
    for seed in &runs {
        match simulated().block_on(run(*seed)) {
            Ok((c, e)) => {
                checks += c;
                epochs += e;
            }
            Err(why) => panic!("seed {seed} failed: {why}\nreplay with SIM_SEED={seed}"),
        }
    }
    println!(
        "{} schedules: {checks} quiet points checked, {epochs} distinct epochs held",
        runs.len()
    );
}

use crate::support::simulated;
use simulated::simulated;
