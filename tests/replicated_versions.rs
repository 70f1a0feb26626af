//! A replicated state machine across builds of different protocol
//! versions, on the sim backend, through the actix runtime: a group of
//! replicas that speak only the current version takes writes; replicas
//! that also speak the next version join while writes flow; the old ones
//! leave one by one, and where the last leaves the group moves to the next
//! version on every member; a replica of the old build that joins then is
//! refused, with an event on every member and an error on itself. Every
//! acknowledged write is in the final state of every member, and all
//! states are equal.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::wire::{Versions, NEXT_PROTOCOL_VERSION, PROTOCOL_VERSION};
use actix_cpg::{
    GroupName, Member, NodeId, Replica, ReplicaConfig, ReplicaError, ReplicaEvent, Transport,
};
use tokio::sync::broadcast;

/// The build every release so far is: the current version only.
const OLD: Versions = Versions::this_build();
/// A newer build: the current version and the next.
const BOTH: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};

use crate::support::ledger;
use ledger::Ledger;

fn join(cluster: &SimCluster, node: u32) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new("ledger-versions").expect("name"))
        .expect("join")
}

fn config(versions: Versions) -> ReplicaConfig {
    ReplicaConfig {
        protocol_versions: versions,
        learn_timeout: Duration::from_millis(200),
        ..ReplicaConfig::default()
    }
}

async fn start(
    cluster: &SimCluster,
    node: u32,
    versions: Versions,
) -> Result<Replica<Ledger>, ReplicaError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        Replica::<Ledger>::start(join(cluster, node), config(versions)),
    )
    .await
    .expect("started or refused in time")
}

/// Writes to every replica in `targets`, one write each every few
/// milliseconds, until `stop`; keeps what was acknowledged.
#[derive(Clone, Default)]
struct Writers {
    targets: Rc<RefCell<Vec<Replica<Ledger>>>>,
    acked: Rc<RefCell<BTreeSet<(Member, u64)>>>,
    pending: Rc<RefCell<usize>>,
    stop: Rc<RefCell<bool>>,
}

impl Writers {
    fn run(&self) {
        let me = self.clone();
        actix::spawn(async move {
            let mut n = 0;
            while !*me.stop.borrow() {
                let targets = me.targets.borrow().clone();
                for r in targets {
                    n += 1;
                    let entry = (r.local(), n);
                    let write = r.execute(entry);
                    let (acked, pending) = (me.acked.clone(), me.pending.clone());
                    *pending.borrow_mut() += 1;
                    actix::spawn(async move {
                        if write.await.is_ok() {
                            acked.borrow_mut().insert(entry);
                        }
                        *pending.borrow_mut() -= 1;
                    });
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
    }

    fn add(&self, r: &Replica<Ledger>) {
        self.targets.borrow_mut().push(r.clone());
    }

    fn remove(&self, r: &Replica<Ledger>) {
        self.targets.borrow_mut().retain(|t| t.local() != r.local());
    }

    /// How many writes were acknowledged so far.
    fn count(&self) -> usize {
        self.acked.borrow().len()
    }

    /// Waits until `more` further writes are acknowledged.
    async fn flow(&self, more: usize) {
        let target = self.count() + more;
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.count() < target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("writes keep being acknowledged");
    }

    async fn finish(&self) {
        *self.stop.borrow_mut() = true;
        tokio::time::timeout(Duration::from_secs(10), async {
            while *self.pending.borrow() > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("every write answered");
    }
}

/// Waits until every replica in `replicas` counts exactly `members`, holding
/// the state of a primary view.
async fn settled(replicas: &[&Replica<Ledger>], members: &[Member]) {
    let mut want = members.to_vec();
    want.sort();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if replicas.iter().all(|r| {
                let s = r.status();
                s.primary && s.holding && s.members == want
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not settled on {want:?}: {:?}",
            replicas.iter().map(|r| r.status()).collect::<Vec<_>>()
        )
    });
}

/// The events that mark points of the group's stream (the same on every
/// member), received so far.
fn stream_events(events: &mut broadcast::Receiver<ReplicaEvent>) -> Vec<ReplicaEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if matches!(
            e,
            ReplicaEvent::ViewChanged { .. }
                | ReplicaEvent::VersionChanged { .. }
                | ReplicaEvent::MemberRefused { .. }
                | ReplicaEvent::Installed { .. }
        ) {
            out.push(e);
        }
    }
    out
}

async fn ledger(r: &Replica<Ledger>) -> Ledger {
    r.query(Ledger::clone).await.expect("query")
}

#[actix_rt::test]
async fn an_upgraded_group_moves_up_when_the_last_old_replica_leaves_and_refuses_an_old_one_after()
{
    let cluster = SimCluster::new(3);
    let writers = Writers::default();
    // A group of the old build takes writes.
    let mut old = Vec::new();
    for node in 1..=3 {
        let r = start(&cluster, node, OLD).await.expect("an old replica");
        writers.add(&r);
        old.push(r);
    }
    writers.run();
    writers.flow(20).await;
    for r in &old {
        assert_eq!(r.metrics().protocol_version, PROTOCOL_VERSION);
    }
    // Two replicas of the newer build join while writes flow; the group
    // stays at the version every member speaks.
    let mut new = Vec::new();
    for node in [1, 2] {
        let r = start(&cluster, node, BOTH).await.expect("a newer replica");
        writers.add(&r);
        new.push(r);
        writers.flow(10).await;
    }
    let everyone: Vec<Member> = old.iter().chain(&new).map(|r| r.local()).collect();
    let all: Vec<&Replica<Ledger>> = old.iter().chain(&new).collect();
    settled(&all, &everyone).await;
    for r in &new {
        assert_eq!(r.metrics().protocol_version, PROTOCOL_VERSION);
    }
    let mut events: Vec<_> = new.iter().map(|r| r.subscribe()).collect();
    // The old ones leave one by one.
    let mut members = everyone.clone();
    for r in &old {
        writers.remove(r);
        r.leave().await.expect("leaves");
        members.retain(|m| *m != r.local());
        settled(&new.iter().collect::<Vec<_>>(), &members).await;
        writers.flow(10).await;
    }
    let last_old = old[2].local();
    let seen: Vec<Vec<ReplicaEvent>> = events.iter_mut().map(stream_events).collect();
    // The same points of the stream on both, and the move right where the
    // last old replica left.
    assert_eq!(seen[0], seen[1]);
    let moved = ReplicaEvent::VersionChanged {
        from: Some(PROTOCOL_VERSION),
        to: NEXT_PROTOCOL_VERSION,
    };
    let at = seen[0]
        .iter()
        .position(|e| *e == moved)
        .unwrap_or_else(|| panic!("no move in {:?}", seen[0]));
    assert!(
        matches!(&seen[0][at - 1], ReplicaEvent::ViewChanged { left, .. }
            if left.iter().any(|c| c.member == last_old)),
        "{:?}",
        seen[0]
    );
    assert_eq!(
        seen[0].iter().filter(|e| **e == moved).count(),
        1,
        "one move"
    );
    for r in &new {
        assert_eq!(r.metrics().protocol_version, NEXT_PROTOCOL_VERSION);
    }
    // Writes go on at the new version.
    writers.flow(20).await;
    // A replica of the old build joins: refused on every member, with an
    // error on itself, and the group goes on.
    let refused = start(&cluster, 3, OLD).await;
    assert_eq!(
        refused.err(),
        Some(ReplicaError::Incompatible {
            ours: OLD,
            group_version: NEXT_PROTOCOL_VERSION,
        })
    );
    writers.flow(10).await;
    writers.finish().await;
    settled(&new.iter().collect::<Vec<_>>(), &members).await;
    let after: Vec<Vec<ReplicaEvent>> = events.iter_mut().map(stream_events).collect();
    assert_eq!(after[0], after[1]);
    let refusals: Vec<&ReplicaEvent> = after[0]
        .iter()
        .filter(|e| matches!(e, ReplicaEvent::MemberRefused { .. }))
        .collect();
    assert!(
        matches!(refusals.as_slice(), [ReplicaEvent::MemberRefused { versions, group_version, .. }]
            if *versions == OLD && *group_version == NEXT_PROTOCOL_VERSION),
        "{after:?}"
    );
    for r in &new {
        let s = r.status();
        assert_eq!(s.refused.incompatible, 1, "{:?}", s.refused);
        assert_eq!(s.refused.hostile(), 0, "{:?}", s.refused);
        assert_eq!(s.members, members);
    }
    // Every acknowledged write is in the final state, on every member, and
    // the states are equal.
    let states = [ledger(&new[0]).await, ledger(&new[1]).await];
    assert_eq!(states[0], states[1]);
    assert_eq!(new[0].status().state, new[1].status().state);
    let applied: BTreeSet<(Member, u64)> = states[0].0.iter().copied().collect();
    assert_eq!(applied.len(), states[0].0.len(), "a write applied twice");
    let acked = writers.acked.borrow();
    let lost: Vec<_> = acked.difference(&applied).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(acked.iter().any(|(m, _)| *m == old[0].local()));
    assert!(acked
        .iter()
        .any(|(m, _)| new.iter().any(|r| r.local() == *m)));
}
