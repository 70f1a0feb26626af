//! An observer replica on the sim backend, through the actix runtime: a
//! group of three participants takes writes; an observer joins, holds the
//! same state and follows every write, but its commands are refused
//! before anything is sent; killing it changes nothing for the
//! participants; and once two of the three participants are gone (one
//! killed, one on a crashed node), the last one and an observer are two of
//! the last primary view's three processes but one of its two
//! participants: the group is no primary component.

use std::time::Duration;

use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::{
    GroupName, Member, NodeId, Replica, ReplicaConfig, ReplicaError, ReplicaStatus, Role, Transport,
};

use crate::support::ledger;
use ledger::Ledger;

fn join(cluster: &SimCluster, node: u32) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new("ledger-observed").expect("name"))
        .expect("join")
}

async fn start(cluster: &SimCluster, node: u32, role: Role) -> Replica<Ledger> {
    let config = ReplicaConfig {
        role,
        learn_timeout: Duration::from_millis(200),
        ..ReplicaConfig::default()
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        Replica::<Ledger>::start(join(cluster, node), config),
    )
    .await
    .expect("started in time")
    .expect("started")
}

/// Waits until every replica's status satisfies `ok`.
async fn until(replicas: &[&Replica<Ledger>], what: &str, ok: impl Fn(&ReplicaStatus) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if replicas.iter().all(|r| ok(&r.status())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "never {what}: {:?}",
            replicas.iter().map(|r| r.status()).collect::<Vec<_>>()
        )
    });
}

/// Every replica of `replicas` sees the view `members` (sorted), of which
/// `observers` observe, installed and holding the state; `primary` or not.
async fn settled(
    replicas: &[&Replica<Ledger>],
    members: &[Member],
    observers: &[Member],
    primary: bool,
) {
    let (mut members, mut observers) = (members.to_vec(), observers.to_vec());
    members.sort();
    observers.sort();
    until(replicas, "settled", |s| {
        s.installed
            && s.holding
            && s.primary == primary
            && s.members == members
            && s.observers == observers
    })
    .await;
}

/// Waits until every replica of `replicas` holds the same state id, and
/// returns that state (read from the first).
async fn same_state(replicas: &[&Replica<Ledger>]) -> Ledger {
    let first = replicas[0];
    until(replicas, "the same state", |s| {
        s.state == first.status().state && s.holding
    })
    .await;
    let state = first.query(Ledger::clone).await.expect("query");
    for r in replicas {
        assert_eq!(r.query(Ledger::clone).await.expect("query"), state);
    }
    state
}

async fn write(r: &Replica<Ledger>, n: u64) {
    r.execute((r.local(), n)).await.expect("a write");
}

#[actix_rt::test]
async fn an_observer_reads_everything_writes_nothing_and_makes_no_majority() {
    let cluster = SimCluster::new(3);
    let mut participants = Vec::new();
    for node in 1..=3 {
        participants.push(start(&cluster, node, Role::Participant).await);
    }
    let ids: Vec<Member> = participants.iter().map(|r| r.local()).collect();
    for (i, r) in participants.iter().enumerate() {
        write(r, i as u64 + 1).await;
    }

    // An observer joins: it gets the state, and is listed as observing.
    let observer = start(&cluster, 3, Role::Observer).await;
    assert_eq!(observer.role(), Role::Observer);
    let mut everyone: Vec<&Replica<Ledger>> = participants.iter().collect();
    everyone.push(&observer);
    let all: Vec<Member> = everyone.iter().map(|r| r.local()).collect();
    settled(&everyone, &all, &[observer.local()], true).await;
    assert_eq!(same_state(&everyone).await.0.len(), 3);

    // Its command is refused before anything is sent.
    let sent = observer.metrics().multicasts;
    assert_eq!(
        observer.execute((observer.local(), 99)).await,
        Err(ReplicaError::Observer)
    );
    assert_eq!(observer.metrics().multicasts, sent, "nothing went out");
    // It follows every write.
    for (i, r) in participants.iter().enumerate() {
        write(r, 10 + i as u64).await;
    }
    let state = same_state(&everyone).await;
    assert_eq!(state.0.len(), 6);
    assert!(state.0.iter().all(|(m, _)| *m != observer.local()));
    for r in &everyone {
        assert_eq!(r.status().refused.hostile(), 0);
    }

    // Killing it changes nothing: the same history goes on, and the
    // participants stay primary.
    let history = participants[0].status().state;
    cluster.kill_process(observer.local()).expect("kill");
    let three: Vec<&Replica<Ledger>> = participants.iter().collect();
    settled(&three, &ids, &[], true).await;
    write(&participants[1], 20).await;
    let after = participants[0].status().state;
    assert_eq!(after.genesis, history.genesis);
    assert_eq!(same_state(&three).await.0.len(), 7);

    // Another observer, on the third participant's node.
    let observer = start(&cluster, 3, Role::Observer).await;
    // The first participant is killed: the two others go on.
    cluster.kill_process(ids[0]).expect("kill");
    let left = [&participants[1], &participants[2], &observer];
    let members = [ids[1], ids[2], observer.local()];
    settled(&left, &members, &[observer.local()], true).await;
    write(&participants[2], 30).await;
    let state = same_state(&left).await;
    assert_eq!(state.0.len(), 8);

    // The second participant's node crashes. The third participant and
    // the observer are two of the three processes of the last primary
    // view, and the nodes left are quorate, but only one of its two
    // participants is here: no primary component.
    cluster.crash_node(NodeId(2)).expect("crash");
    assert!(cluster.quorum(NodeId(3)).is_some_and(|q| q.quorate));
    let last = [&participants[2], &observer];
    settled(
        &last,
        &[ids[2], observer.local()],
        &[observer.local()],
        false,
    )
    .await;
    assert_eq!(
        participants[2].execute((ids[2], 40)).await,
        Err(ReplicaError::NotPrimary)
    );
    // The observer still reads the state it holds.
    assert_eq!(same_state(&last).await, state);
}
