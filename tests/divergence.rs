//! Divergence checks on the sim backend (rule 11 of the replica's rules):
//! a state machine whose `apply` is deliberately not deterministic on one
//! replica is found by a check — on demand and every so many commands —,
//! reported on every member, and sent the majority's state; a durable
//! replica keeps what it was sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_cpg::replicated::{
    decode_snapshot, digest_of, encode_snapshot, ReplicaEvent, StateDigest, SyncPolicy,
};
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::{GroupName, Member, NodeId, Replica, ReplicaConfig, StateMachine, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::support::scratch::Scratch;

/// Whether the next state restored from a snapshot applies commands
/// wrongly: a joiner restores the group's state, so the test arms this
/// just before the third replica joins. The tests of this file run one at a
/// time (`FAULTY_LOCK`).
static NEXT_IS_FAULTY: AtomicBool = AtomicBool::new(false);
static FAULTY_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counters by name. A faulty instance adds one too many on every `Add`:
/// the non-deterministic `apply` a divergence check is there to find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counters {
    map: BTreeMap<String, u64>,
    faulty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add(String, u64);

impl StateMachine for Counters {
    type Command = Add;
    type Response = u64;
    type Snapshot = BTreeMap<String, u64>;

    fn apply(&mut self, Add(name, n): Add) -> u64 {
        let step = if self.faulty { n + 1 } else { n };
        let v = self.map.entry(name).or_default();
        *v += step;
        *v
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.map.clone()
    }

    fn encode(snapshot: Self::Snapshot) -> Vec<u8> {
        encode_snapshot(&snapshot)
    }

    fn restore(bytes: &[u8]) -> Result<Self, String> {
        Ok(Counters {
            map: decode_snapshot(bytes, 1 << 20)?,
            faulty: NEXT_IS_FAULTY.swap(false, Ordering::SeqCst),
        })
    }

    fn digest(&self) -> Option<StateDigest> {
        Some(digest_of(&encode_snapshot(&self.map)))
    }
}

fn join(cluster: &SimCluster, node: u32) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new("counters").expect("name"))
        .expect("join")
}

/// Three replicas, the third one faulty (from the state it restores as a
/// joiner); each with `config`.
async fn three(
    cluster: &SimCluster,
    config: impl Fn(u32) -> ReplicaConfig,
) -> Vec<Replica<Counters>> {
    let mut replicas = Vec::new();
    for node in 1..=3 {
        NEXT_IS_FAULTY.store(node == 3, Ordering::SeqCst);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            Replica::<Counters>::start(join(cluster, node), config(node)),
        )
        .await
        .expect("started in time")
        .expect("start");
        replicas.push(r);
    }
    for r in &replicas {
        r.wait_primary().await.expect("primary");
    }
    replicas
}

async fn counters(r: &Replica<Counters>) -> BTreeMap<String, u64> {
    r.query(|s| s.map.clone()).await.expect("query")
}

/// The next divergence-check event on `rx` (others are skipped).
async fn next_check(rx: &mut broadcast::Receiver<ReplicaEvent>) -> ReplicaEvent {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("events");
            if matches!(
                event,
                ReplicaEvent::Checked { .. } | ReplicaEvent::Diverged { .. }
            ) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("a check completed in time")
}

/// Waits until every replica holds the same counters.
async fn converged(replicas: &[Replica<Counters>]) -> BTreeMap<String, u64> {
    for _ in 0..2000 {
        let first = counters(&replicas[0]).await;
        let mut same = true;
        for r in &replicas[1..] {
            same &= counters(r).await == first;
        }
        if same {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the replicas never converged");
}

#[actix_rt::test]
async fn a_non_deterministic_replica_is_found_on_demand_and_sent_the_majoritys_state() {
    let _one = FAULTY_LOCK.lock().await;
    let cluster = SimCluster::new(3);
    let replicas = three(&cluster, |_| ReplicaConfig {
        digest_every: 0,
        ..ReplicaConfig::default()
    })
    .await;
    let members: Vec<Member> = replicas.iter().map(Replica::local).collect();
    let mut events: Vec<_> = replicas.iter().map(Replica::subscribe).collect();
    for i in 0..5u64 {
        replicas[(i % 3) as usize]
            .execute(Add("hits".into(), 10))
            .await
            .expect("applied");
    }
    // Same state id everywhere, another state on the faulty one.
    let ids: Vec<_> = replicas.iter().map(|r| r.status().state).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(counters(&replicas[0]).await["hits"], 50);
    assert_eq!(counters(&replicas[2]).await["hits"], 55);

    replicas[1].check().await.expect("check sent");
    for rx in events.iter_mut() {
        match next_check(rx).await {
            ReplicaEvent::Diverged {
                members: diverged,
                resync_from,
                at,
            } => {
                assert_eq!(diverged, vec![members[2]]);
                assert_eq!(resync_from, Some(members[0]));
                assert_eq!(at.applied, 5);
            }
            other => panic!("expected a divergence, got {other}"),
        }
    }
    let state = converged(&replicas).await;
    assert_eq!(state["hits"], 50);
    // The restored replica is a good one now: the next check agrees.
    replicas[2]
        .execute(Add("hits".into(), 1))
        .await
        .expect("applied");
    replicas[0].check().await.expect("check sent");
    for rx in events.iter_mut() {
        assert!(matches!(
            next_check(rx).await,
            ReplicaEvent::Checked { compared: 3, .. }
        ));
    }
    for r in &replicas {
        let seen = r.inspect().await.expect("inspect");
        assert_eq!((seen.checks.completed, seen.checks.diverged), (2, 1));
        assert_eq!(seen.refused.hostile(), 0);
    }
}

#[actix_rt::test]
async fn the_lowest_participant_checks_every_so_many_commands() {
    let _one = FAULTY_LOCK.lock().await;
    let cluster = SimCluster::new(3);
    let replicas = three(&cluster, |_| ReplicaConfig {
        digest_every: 4,
        ..ReplicaConfig::default()
    })
    .await;
    let mut rx = replicas[1].subscribe();
    for _ in 0..4 {
        replicas[0]
            .execute(Add("a".into(), 1))
            .await
            .expect("applied");
    }
    assert!(matches!(
        next_check(&mut rx).await,
        ReplicaEvent::Diverged {
            resync_from: Some(_),
            ..
        }
    ));
    assert_eq!(converged(&replicas).await["a"], 4);
}

#[actix_rt::test]
async fn a_durable_replica_keeps_the_state_it_was_sent_after_a_divergence() {
    let _one = FAULTY_LOCK.lock().await;
    let dirs: Vec<Scratch> = (1..=3)
        .map(|n| Scratch::new(&format!("divergence-{n}")))
        .collect();
    let dir_of = |node: u32| dirs[node as usize - 1].path().to_path_buf();
    let config = |node: u32| ReplicaConfig {
        digest_every: 0,
        data_dir: Some(dir_of(node)),
        sync: SyncPolicy::Never,
        ..ReplicaConfig::default()
    };
    let cluster = SimCluster::new(3);
    let mut replicas = three(&cluster, config).await;
    for _ in 0..3 {
        replicas[0]
            .execute(Add("n".into(), 2))
            .await
            .expect("applied");
    }
    let mut rx = replicas[2].subscribe();
    replicas[0].check().await.expect("check sent");
    assert!(matches!(
        next_check(&mut rx).await,
        ReplicaEvent::Diverged { .. }
    ));
    assert_eq!(converged(&replicas).await["n"], 6);
    // The replica that was sent the state stops and comes back from its
    // directory: with the state it was sent.
    let third = replicas.pop().expect("three");
    let limit = Duration::from_secs(20);
    tokio::time::timeout(limit, third.leave())
        .await
        .expect("left in time")
        .expect("left");
    let mut closed = third.watch_status();
    let _ = tokio::time::timeout(limit, closed.wait_for(|s| s.closed))
        .await
        .expect("closed in time");
    let back = tokio::time::timeout(
        limit,
        Replica::<Counters>::start(join(&cluster, 3), config(3)),
    )
    .await
    .expect("restarted in time")
    .expect("restart");
    tokio::time::timeout(limit, back.wait_primary())
        .await
        .expect("primary in time")
        .expect("primary");
    assert_eq!(counters(&back).await["n"], 6);
    assert_eq!(back.status().state, replicas[0].status().state);
}

/// The same counters, hashed from a capture on a blocking thread
/// (`DIGESTS_SNAPSHOTS`) instead of on the replica's actor.
#[derive(Debug, Default)]
struct HashedOffActor(Counters);

impl StateMachine for HashedOffActor {
    type Command = Add;
    type Response = u64;
    type Snapshot = BTreeMap<String, u64>;

    fn apply(&mut self, add: Add) -> u64 {
        self.0.apply(add)
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.0.snapshot()
    }

    fn encode(snapshot: Self::Snapshot) -> Vec<u8> {
        Counters::encode(snapshot)
    }

    fn restore(bytes: &[u8]) -> Result<Self, String> {
        Counters::restore(bytes).map(HashedOffActor)
    }

    const DIGESTS_SNAPSHOTS: bool = true;

    fn snapshot_digest(snapshot: &Self::Snapshot) -> Option<StateDigest> {
        Some(digest_of(&encode_snapshot(snapshot)))
    }
}

#[actix_rt::test]
async fn a_replica_hashing_off_its_actor_is_compared_with_those_hashing_on_theirs() {
    let _one = FAULTY_LOCK.lock().await;
    let cluster = SimCluster::new(3);
    let limit = Duration::from_secs(20);
    let config = || ReplicaConfig {
        digest_every: 0,
        ..ReplicaConfig::default()
    };
    let mut on_actor = Vec::new();
    for node in 1..=2 {
        NEXT_IS_FAULTY.store(false, Ordering::SeqCst);
        let r = tokio::time::timeout(
            limit,
            Replica::<Counters>::start(join(&cluster, node), config()),
        )
        .await
        .expect("started in time")
        .expect("start");
        on_actor.push(r);
    }
    // The third restores the group's state as a joiner: faulty.
    NEXT_IS_FAULTY.store(true, Ordering::SeqCst);
    let off = tokio::time::timeout(
        limit,
        Replica::<HashedOffActor>::start(join(&cluster, 3), config()),
    )
    .await
    .expect("started in time")
    .expect("start");
    off.wait_primary().await.expect("primary");
    let members = [on_actor[0].local(), on_actor[1].local(), off.local()];
    let mut events: Vec<_> = on_actor.iter().map(Replica::subscribe).collect();
    events.push(off.subscribe());
    for _ in 0..5 {
        off.execute(Add("hits".into(), 10)).await.expect("applied");
    }
    assert_eq!(off.query(|s| s.0.map["hits"]).await.expect("query"), 55);

    // A check the faulty replica answers from its blocking thread.
    on_actor[0].check().await.expect("check sent");
    for rx in events.iter_mut() {
        match next_check(rx).await {
            ReplicaEvent::Diverged {
                members: diverged,
                resync_from,
                ..
            } => {
                assert_eq!(diverged, vec![members[2]]);
                assert_eq!(resync_from, Some(members[0]));
            }
            other => panic!("expected a divergence, got {other}"),
        }
    }
    let mut resent = None;
    for _ in 0..2000 {
        let hits = off.query(|s| s.0.map.get("hits").copied()).await;
        if hits.as_ref().ok() == Some(&Some(50)) {
            resent = hits.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(resent, Some(Some(50)), "the majority's state was resent");

    // Equal states, either way of hashing: the next check agrees.
    off.execute(Add("hits".into(), 1)).await.expect("applied");
    off.check().await.expect("check sent");
    for rx in events.iter_mut() {
        assert!(matches!(
            next_check(rx).await,
            ReplicaEvent::Checked { compared: 3, .. }
        ));
    }
}
