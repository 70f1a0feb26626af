//! The key-value store's client history is linearizable, per key, under
//! seeded fault schedules on the sim backend: three clients issue
//! overlapping puts, gets (as commands, and as `Replica::read` at a
//! barrier), compare-and-sets and deletes through replicas
//! (moving to another replica when theirs fails) while a `FaultPlan` kills,
//! crashes, partitions, heals and adds members. Every operation is recorded
//! with its invocation and response (on a logical clock of this process;
//! even seeds with agreed delivery, odd ones with safe delivery)
//! and the whole history goes through `support::history::check`.
//!
//! `SIM_SEEDS=n` (default 100) and `SIM_SEED=s` as in the other schedules.

use crate::support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use actix_cpg::kv::{KvCommand, KvResponse, KvStore};
use actix_cpg::replicated::Delivery;
use actix_cpg::transport::sim::{FaultOutcome, FaultPlan, SimCluster, SimConnection, SimRng};
use actix_cpg::{GroupName, NodeId, Replica, ReplicaConfig, ReplicaError, Transport};
use support::history::{check, Event, Op, Outcome};

const KEYS: u64 = 5;
const STEPS: usize = 30;

#[derive(Default)]
struct Shared {
    replicas: RefCell<Vec<Replica<KvStore>>>,
    history: RefCell<Vec<Event>>,
    /// (invoked, genesis, epoch) of each answered operation, for diagnosis.
    trace: RefCell<Vec<(u64, u64, String)>>,
    log: RefCell<Vec<String>>,
    clock: Cell<u64>,
    pending: Cell<usize>,
    /// Reads at a barrier answered.
    reads: Cell<usize>,
    /// When the replicas reply (and answer reads).
    delivery: Cell<Delivery>,
}

impl Shared {
    fn tick(&self) -> u64 {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        t
    }
}

fn start(shared: &Rc<Shared>, conn: SimConnection, founder: bool) {
    let shared = shared.clone();
    actix::spawn(async move {
        let config = ReplicaConfig {
            found_group: founder,
            delivery: shared.delivery.get(),
            chunk_size: 128,
            ..ReplicaConfig::default()
        };
        if let Ok(r) = Replica::start(conn, config).await {
            shared.replicas.borrow_mut().push(r);
        }
    });
}

fn live(shared: &Shared, cluster: &SimCluster) -> Vec<Replica<KvStore>> {
    shared
        .replicas
        .borrow()
        .iter()
        .filter(|r| cluster.is_alive(r.local()) && !r.status().closed)
        .cloned()
        .collect()
}

/// Reads `key` through `Replica::read` (a barrier, no command) and
/// records the read in the history when it is answered. A read that fails
/// read nothing, whatever the error: it is left out.
fn read(shared: &Rc<Shared>, replica: &Replica<KvStore>, key: String) {
    let invoked = shared.tick();
    let shared = shared.clone();
    let replica = replica.clone();
    shared.pending.set(shared.pending.get() + 1);
    actix::spawn(async move {
        let wanted = key.clone();
        let result = replica
            .read(move |s: &KvStore| s.get(&wanted).map(str::to_owned))
            .await;
        let returned = shared.tick();
        if let Ok(value) = result {
            shared.reads.set(shared.reads.get() + 1);
            shared.history.borrow_mut().push(Event {
                key,
                op: Op::Get,
                outcome: Outcome::Value(value),
                invoked,
                returned: Some(returned),
                position: None,
            });
        }
        shared.pending.set(shared.pending.get() - 1);
    });
}

/// Sends one operation and records it in the history when it completes.
fn issue(shared: &Rc<Shared>, replica: &Replica<KvStore>, key: String, op: Op) {
    let command = match &op {
        Op::Put(v) => KvCommand::Put {
            key: key.clone(),
            value: v.clone(),
        },
        Op::Get => KvCommand::Get { key: key.clone() },
        Op::Del => KvCommand::Delete { key: key.clone() },
        Op::Cas { expected, new } => KvCommand::Cas {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        },
    };
    let invoked = shared.tick();
    let fut = replica.execute_traced(command);
    let shared = shared.clone();
    shared.pending.set(shared.pending.get() + 1);
    actix::spawn(async move {
        let result = fut.await;
        let returned = shared.tick();
        let (outcome, returned, position) = match result {
            Ok(e) => {
                shared.trace.borrow_mut().push((
                    invoked,
                    e.state.genesis,
                    e.state.epoch.to_string(),
                ));
                let outcome = match e.response {
                    KvResponse::Previous(_) => Outcome::Done,
                    KvResponse::Value(v) => Outcome::Value(v.map(|v| v.to_string())),
                    KvResponse::Cas { swapped, .. } => Outcome::Cas(swapped),
                    KvResponse::Filled(_) => Outcome::Done,
                };
                (outcome, Some(returned), Some(e.state.applied))
            }
            // Refused everywhere: it never happened.
            Err(ReplicaError::NotPrimary) => {
                shared.pending.set(shared.pending.get() - 1);
                return;
            }
            Err(_) => (Outcome::Unknown, None, None),
        };
        shared.history.borrow_mut().push(Event {
            key,
            op,
            outcome,
            invoked,
            returned,
            position,
        });
        shared.pending.set(shared.pending.get() - 1);
    });
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

async fn run(seed: u64) -> Result<(usize, usize, usize), String> {
    let mut rng = SimRng::new(seed ^ 0x4157_0121);
    let nodes = 3 + rng.below(3) as u32;
    let cluster = SimCluster::builder(nodes).max_backlog(8).build();
    let group = GroupName::new("kv-history").expect("name");
    let shared = Rc::new(Shared::default());
    // Odd seeds reply (and answer reads) once a majority acknowledged.
    if seed % 2 == 1 {
        shared.delivery.set(Delivery::Safe);
    }
    for node in 1..=3 {
        let conn = cluster
            .process(NodeId(node))
            .expect("up")
            .join(&group)
            .expect("join");
        start(&shared, conn, true);
        yields(50).await;
    }
    // The founders form one primary component before anything fails (a
    // founder cut off before it ever saw the group could found a second
    // history; see `ReplicaConfig::found_group`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while live(&shared, &cluster).len() < 3
        || live(&shared, &cluster)
            .iter()
            .any(|r| !(r.status().primary && r.status().holding))
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the founders did not form a primary component".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut plan = FaultPlan::new(seed, nodes);
    let mut next_value = 0u64;
    for _ in 0..STEPS {
        let replicas = live(&shared, &cluster);
        for _client in 0..3 {
            if replicas.is_empty() {
                break;
            }
            let r = &replicas[rng.below(replicas.len() as u64) as usize];
            for _ in 0..rng.below(4) {
                let key = format!("k{}", rng.below(KEYS));
                next_value += 1;
                let op = match rng.below(10) {
                    0..=4 => Op::Put(format!("v{next_value}")),
                    // Half the reads as a command, half at a barrier.
                    5 | 6 if rng.below(2) == 0 => {
                        read(&shared, r, key);
                        continue;
                    }
                    5..=7 => Op::Get,
                    8 => Op::Del,
                    _ => Op::Cas {
                        expected: (!next_value.is_multiple_of(3))
                            .then(|| format!("v{}", next_value.saturating_sub(rng.below(8)))),
                        new: Some(format!("v{next_value}")),
                    },
                };
                issue(&shared, r, key, op);
            }
        }
        yields(rng.below(30)).await;
        let fault = plan.next_fault();
        shared
            .log
            .borrow_mut()
            .push(format!("t={} {fault}", shared.clock.get()));
        match cluster.apply_fault(&fault, &group) {
            Ok(FaultOutcome::Joined(conn)) => start(&shared, conn, false),
            Ok(_) => {}
            Err(e) => return Err(format!("fault {fault} rejected: {e}")),
        }
        yields(rng.below(30)).await;
    }
    cluster.heal();
    for node in cluster.nodes() {
        let _ = cluster.restart_node(node);
    }
    // Settle, then read every key through the order from every replica.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shared.pending.get() > 0
        || live(&shared, &cluster).iter().any(|r| {
            let s = r.status();
            !(s.installed && s.holding && s.outstanding == 0)
        })
    {
        if tokio::time::Instant::now() > deadline {
            return Err("did not settle".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for r in live(&shared, &cluster) {
        if r.status().primary {
            for k in 0..KEYS {
                issue(&shared, &r, format!("k{k}"), Op::Get);
            }
        }
    }
    while shared.pending.get() > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err("final reads did not finish".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let history = shared.history.borrow();
    let checked = match check(&history) {
        Ok(c) => c,
        Err(why) => {
            if std::env::var("SIM_LOG").is_ok() {
                let key = why.split('"').nth(1).unwrap_or_default().to_owned();
                let mut evs: Vec<&Event> = history.iter().filter(|e| e.key == key).collect();
                evs.sort_by_key(|e| e.invoked);
                let trace: std::collections::BTreeMap<u64, (u64, String)> = shared
                    .trace
                    .borrow()
                    .iter()
                    .map(|(i, g, e)| (*i, (*g, e.clone())))
                    .collect();
                for e in evs {
                    println!(
                        "  {:?} {:?} [{} .. {:?}] pos {:?} {:?}",
                        e.op,
                        e.outcome,
                        e.invoked,
                        e.returned,
                        e.position,
                        trace.get(&e.invoked)
                    );
                }
                println!("  schedule: {:?}", shared.log.borrow());
            }
            return Err(why);
        }
    };
    Ok((history.len(), checked, shared.reads.get()))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100u64);
    (0..count).collect()
}

#[test]
fn kv_histories_are_linearizable_per_key_under_seeded_faults() {
    let (mut ops, mut checked, mut reads) = (0, 0, 0);
    let runs = seeds();
    for seed in &runs {
        match simulated().block_on(run(*seed)) {
            Ok((n, c, r)) => {
                ops += n;
                checked += c;
                reads += r;
            }
            Err(why) => panic!("seed {seed}: {why}\nreplay with SIM_SEED={seed}"),
        }
    }
    println!(
        "{} schedules, {ops} operations recorded ({reads} reads at a barrier), {checked} checked",
        runs.len()
    );
    assert!(reads > 0, "no read at a barrier was answered");
}

use crate::support::simulated;
use simulated::simulated;
