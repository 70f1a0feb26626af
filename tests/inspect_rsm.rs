//! `Election::inspect`, `Replica::inspect` and `ReplicaObserver` on the sim
//! backend: members agree at the same point of the stream, a leader change
//! shows a new epoch, a killed replica disappears, a replica that comes
//! back from a minority partition shows as disagreeing at the merge (and
//! agreeing once it received the state), and an observer of no state
//! machine type follows the same state ids as the participants.

use std::time::Duration;

use actix_cpg::election::ElectionInspection;
use actix_cpg::replicated::{ReplicaInspection, StateId};
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::wire::Versions;
use actix_cpg::{
    Election, ElectionConfig, GroupName, Member, NodeId, Replica, ReplicaConfig, ReplicaObserver,
    Role, Transport, GROUP_ELECTION,
};

use crate::support::ledger::Ledger;

fn join(cluster: &SimCluster, node: u32, group: &str) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new(group).expect("name"))
        .expect("join")
}

/// Inspects until `pred` holds (the runtimes act asynchronously).
async fn election_until(
    e: &Election,
    what: &str,
    pred: impl Fn(&ElectionInspection) -> bool,
) -> ElectionInspection {
    let mut last = None;
    for _ in 0..2000 {
        let seen = e.inspect().await.expect("inspect");
        if pred(&seen) {
            return seen;
        }
        last = Some(seen);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never reached: {what}; last inspection {last:#?}");
}

/// The same for a replica (typed or not).
async fn replica_until<F, Fut>(
    inspect: F,
    what: &str,
    pred: impl Fn(&ReplicaInspection) -> bool,
) -> ReplicaInspection
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ReplicaInspection>,
{
    let mut last = None;
    for _ in 0..2000 {
        let seen = inspect().await;
        if pred(&seen) {
            return seen;
        }
        last = Some(seen);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never reached: {what}; last inspection {last:#?}");
}

async fn inspected(r: &Replica<Ledger>) -> ReplicaInspection {
    r.inspect().await.expect("inspect")
}

fn sorted(mut m: Vec<Member>) -> Vec<Member> {
    m.sort();
    m
}

/// What every member must agree on at one point of the stream.
fn group_decisions(seen: &ElectionInspection) -> impl PartialEq + std::fmt::Debug {
    let elections: Vec<_> = seen
        .elections
        .iter()
        .map(|e| (e.name.clone(), e.candidates.clone(), e.leader, e.epoch))
        .collect();
    (
        seen.members.clone(),
        seen.pending.clone(),
        seen.group_version,
        elections,
        seen.quorum.quorate,
    )
}

#[actix_rt::test]
async fn election_members_agree_on_the_inspection_and_a_new_leader_shows_a_greater_epoch() {
    let cluster = SimCluster::new(3);
    let mut members = Vec::new();
    for node in 1..=3 {
        let e = Election::start(
            join(&cluster, node, "inspect-elect"),
            ElectionConfig::default(),
        )
        .await
        .expect("start");
        members.push(e);
    }
    members[1].stand("jobs").await.expect("stand");
    let ids: Vec<Member> = members.iter().map(Election::local).collect();
    let led = |s: &ElectionInspection| {
        s.installed
            && s.members.len() == 3
            && s.election(GROUP_ELECTION)
                .is_some_and(|e| e.leader.is_some())
            && s.election("jobs").is_some_and(|e| e.leader.is_some())
    };
    let mut seen = Vec::new();
    for e in &members {
        seen.push(election_until(e, "three members, two leaders", led).await);
    }
    // Nothing happens between these inspections: every member is at the
    // same point of the stream.
    for s in &seen[1..] {
        assert_eq!(group_decisions(s), group_decisions(&seen[0]));
    }
    let first = &seen[0];
    assert_eq!(first.group, "inspect-elect");
    assert_eq!(first.local, ids[0]);
    assert_eq!(first.role, Role::Participant);
    assert_eq!(first.versions, Versions::this_build());
    assert!(first.knows_members && first.quorum.quorate);
    assert_eq!(first.quorum.reported, sorted(ids.clone()));
    assert!(first.pending.is_empty());
    let group = first.election(GROUP_ELECTION).expect("the group election");
    assert_eq!(group.candidates, ids, "most senior first");
    assert_eq!(group.leader, Some(ids[0]));
    assert!(group.acting, "the first member acts as the group's leader");
    assert!(!seen[1].election(GROUP_ELECTION).unwrap().acting);
    let jobs = first.election("jobs").expect("jobs");
    assert_eq!(
        (jobs.candidates.clone(), jobs.leader),
        (vec![ids[1]], Some(ids[1]))
    );
    assert!(seen[1].election("jobs").unwrap().acting);
    assert_eq!(first.refused.total(), 0);

    // The JSON reads back as the inspection.
    let json = serde_json::to_string(first).expect("json");
    let back: ElectionInspection = serde_json::from_str(&json).expect("reads back");
    assert_eq!(&back, first);

    // The group's leader is killed: the next most senior leads, with a
    // greater epoch, and the dead member is gone from the inspection.
    let old = group.epoch.expect("an epoch");
    cluster.kill_process(ids[0]).expect("kill");
    let after = election_until(&members[1], "a new leader", |s| {
        s.installed
            && s.members.len() == 2
            && s.election(GROUP_ELECTION)
                .is_some_and(|e| e.leader == Some(ids[1]))
    })
    .await;
    let group = after.election(GROUP_ELECTION).unwrap();
    assert!(group.epoch.expect("an epoch") > old);
    assert!(after.member(ids[0]).is_none());
    assert_eq!(group.candidates, vec![ids[1], ids[2]]);
    // "jobs" kept its leader, and its epoch.
    assert_eq!(after.election("jobs").unwrap().epoch, jobs.epoch);
    let third = election_until(&members[2], "the same view", |s| {
        s.installed && s.members.len() == 2
    })
    .await;
    assert_eq!(group_decisions(&third), group_decisions(&after));
}

#[actix_rt::test]
async fn an_election_observer_inspects_as_an_observer_and_is_no_candidate() {
    let cluster = SimCluster::new(2);
    let member = Election::start(
        join(&cluster, 1, "inspect-watch"),
        ElectionConfig::default(),
    )
    .await
    .expect("start");
    let observer = Election::start(
        join(&cluster, 2, "inspect-watch"),
        ElectionConfig {
            role: Role::Observer,
            ..ElectionConfig::default()
        },
    )
    .await
    .expect("start");
    let seen = election_until(&observer, "two members, a leader", |s| {
        s.members.len() == 2
            && s.election(GROUP_ELECTION)
                .is_some_and(|e| e.leader == Some(member.local()))
    })
    .await;
    assert_eq!(seen.role, Role::Observer);
    assert_eq!(seen.member(observer.local()).unwrap().role, Role::Observer);
    assert_eq!(
        seen.election(GROUP_ELECTION).unwrap().candidates,
        vec![member.local()]
    );
    assert!(!seen.quorum.reported.contains(&observer.local()));
}

fn replica_config(role: Role) -> ReplicaConfig {
    ReplicaConfig {
        role,
        learn_timeout: Duration::from_millis(200),
        ..ReplicaConfig::default()
    }
}

async fn replica(cluster: &SimCluster, node: u32, group: &str) -> Replica<Ledger> {
    tokio::time::timeout(
        Duration::from_secs(10),
        Replica::<Ledger>::start(
            join(cluster, node, group),
            replica_config(Role::Participant),
        ),
    )
    .await
    .expect("started in time")
    .expect("started")
}

async fn write(r: &Replica<Ledger>, n: u64) {
    r.execute((r.local(), n)).await.expect("a write");
}

/// Installed, holding, primary and agreeing in a view of `n` members.
fn settled(n: usize) -> impl Fn(&ReplicaInspection) -> bool {
    move |s| s.installed && s.holding && s.primary && s.members.len() == n && s.agreement.agree
}

#[actix_rt::test]
async fn replicas_agree_at_the_same_point_and_a_killed_replica_disappears() {
    let cluster = SimCluster::new(3);
    let mut replicas = Vec::new();
    for node in 1..=3 {
        replicas.push(replica(&cluster, node, "inspect-rsm").await);
    }
    for (i, r) in replicas.iter().enumerate() {
        write(r, i as u64).await;
    }
    let ids: Vec<Member> = replicas.iter().map(Replica::local).collect();
    let mut seen = Vec::new();
    for r in &replicas {
        seen.push(
            replica_until(
                || inspected(r),
                "three, primary, 3 applied",
                |s| settled(3)(s) && s.state.applied == 3,
            )
            .await,
        );
    }
    let first = &seen[0];
    for s in &seen[1..] {
        assert_eq!(s.members, first.members);
        assert_eq!(s.agreement, first.agreement);
        assert_eq!(
            (s.state, s.epoch, s.group_version),
            (first.state, first.epoch, first.group_version)
        );
    }
    assert_eq!(
        first.members.iter().map(|m| m.member).collect::<Vec<_>>(),
        sorted(ids.clone())
    );
    // The latest round is the third joiner's: the first two announced the
    // history they founded, the third none (it received the state).
    let states = &first.agreement.states;
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].members, sorted(ids[..2].to_vec()));
    assert_eq!(first.agreement.empty, vec![ids[2]]);
    assert_eq!(first.agreement.receivers, vec![ids[2]]);
    assert_eq!(first.agreement.sender, Some(ids[0]), "the lowest holder");
    assert!(first.epoch.is_some());
    let json = serde_json::to_string(first).expect("json");
    let back: ReplicaInspection = serde_json::from_str(&json).expect("reads back");
    assert_eq!(&back, first);

    // A replica is killed: it disappears, and the two others agree on the
    // state they announced after the view change.
    cluster.kill_process(ids[2]).expect("kill");
    let after = replica_until(|| inspected(&replicas[0]), "two members", settled(2)).await;
    assert!(after.member(ids[2]).is_none());
    assert_eq!(after.agreement.states.len(), 1);
    assert_eq!(after.agreement.states[0].state, first.state);
    assert_eq!(after.agreement.states[0].members, sorted(ids[..2].to_vec()));
    assert!(after.epoch > first.epoch, "a new primary component");
    assert_eq!(after.agreement.sender, None, "nobody needed the state");
}

#[actix_rt::test]
async fn a_replica_back_from_a_minority_shows_as_disagreeing_until_it_received_the_state() {
    let cluster = SimCluster::new(3);
    let mut replicas = Vec::new();
    for node in 1..=3 {
        replicas.push(replica(&cluster, node, "inspect-split").await);
    }
    let ids: Vec<Member> = replicas.iter().map(Replica::local).collect();
    write(&replicas[0], 1).await;
    replica_until(
        || inspected(&replicas[2]),
        "one applied",
        |s| s.state.applied == 1,
    )
    .await;

    // Node 3 is cut off: the majority goes on without it.
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .expect("partition");
    replica_until(|| inspected(&replicas[0]), "two members", settled(2)).await;
    write(&replicas[0], 2).await;
    write(&replicas[1], 3).await;
    let minority = replica_until(
        || inspected(&replicas[2]),
        "alone",
        |s| s.installed && s.members.len() == 1,
    )
    .await;
    assert!(!minority.primary);
    assert_eq!(minority.state.applied, 1);

    // The partition heals: at the merge round the two sides announced
    // different states; the lagging replica received the majority's.
    cluster.heal();
    let merged = replica_until(
        || inspected(&replicas[0]),
        "merged",
        |s| s.installed && s.members.len() == 3 && !s.agreement.agree,
    )
    .await;
    let states = &merged.agreement.states;
    assert_eq!(states.len(), 2, "{states:?}");
    assert_eq!(states[0].members, sorted(ids[..2].to_vec()));
    assert_eq!(states[0].state.applied, 3, "the greatest state first");
    assert_eq!(states[1].members, vec![ids[2]]);
    assert_eq!(states[1].state.applied, 1);
    assert_eq!(
        merged.member(ids[2]).unwrap().announced,
        Some(states[1].state)
    );
    assert_eq!(merged.agreement.receivers, vec![ids[2]]);
    assert!(merged
        .agreement
        .sender
        .is_some_and(|s| ids[..2].contains(&s)));
    // Once it holds the state, it holds the same id as the others.
    let caught_up = replica_until(
        || inspected(&replicas[2]),
        "caught up",
        |s| s.holding && s.primary && s.state.applied == 3,
    )
    .await;
    let now = inspected(&replicas[0]).await;
    assert_eq!(caught_up.state, now.state);
}

#[actix_rt::test]
async fn an_untyped_observer_follows_the_participants_state_ids() {
    let cluster = SimCluster::new(3);
    let mut replicas = Vec::new();
    for node in 1..=2 {
        replicas.push(replica(&cluster, node, "inspect-untyped").await);
    }
    write(&replicas[0], 1).await;
    write(&replicas[1], 2).await;
    let observer = tokio::time::timeout(
        Duration::from_secs(10),
        ReplicaObserver::start(
            join(&cluster, 3, "inspect-untyped"),
            // Asking to take part changes nothing: it can only observe.
            replica_config(Role::Participant),
        ),
    )
    .await
    .expect("in time")
    .expect("started");
    let ids: Vec<Member> = replicas.iter().map(Replica::local).collect();
    let seen = replica_until(
        || async { observer.inspect().await.expect("inspect") },
        "three members, holding",
        |s| s.installed && s.holding && s.members.len() == 3,
    )
    .await;
    assert_eq!(seen.role, Role::Observer);
    assert_eq!(seen.member(observer.local()).unwrap().role, Role::Observer);
    assert!(seen.agreement.agree);
    assert_eq!(seen.agreement.states.len(), 1);
    assert_eq!(seen.agreement.states[0].members, sorted(ids.clone()));
    let participants = inspected(&replicas[0]).await;
    assert_eq!(seen.state, participants.state, "the snapshot's id");
    assert_eq!(seen.agreement, participants.agreement);

    // It applies what the group applies, without decoding it.
    write(&replicas[0], 3).await;
    write(&replicas[1], 4).await;
    let want = inspected(&replicas[1]).await.state;
    assert_eq!(want.applied, 4);
    replica_until(
        || async { observer.inspect().await.expect("inspect") },
        "the participants' id",
        |s| s.state == want,
    )
    .await;
    for r in &replicas {
        assert_eq!(inspected(r).await.refused.hostile(), 0);
    }
    observer.leave().await.expect("leave");
}

#[actix_rt::test]
async fn a_history_founded_apart_shows_another_genesis_at_the_merge() {
    let cluster = SimCluster::new(3);
    let first = replica(&cluster, 1, "inspect-geneses").await;
    write(&first, 1).await;
    // Node 1 is cut off before anyone else joined: a replica started on
    // the quorate side knows of no primary component, and founds a
    // history of its own.
    cluster
        .partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]])
        .expect("partition");
    let second = replica(&cluster, 2, "inspect-geneses").await;
    replica_until(|| inspected(&second), "founded", settled(1)).await;
    write(&second, 2).await;
    write(&second, 3).await;
    let apart = (
        inspected(&first).await.state,
        inspected(&second).await.state,
    );
    assert_ne!(apart.0.genesis, apart.1.genesis, "two histories");

    cluster.heal();
    let merged = replica_until(
        || inspected(&second),
        "merged",
        |s| s.installed && s.members.len() == 2 && !s.agreement.agree,
    )
    .await;
    let geneses: Vec<u64> = merged
        .agreement
        .states
        .iter()
        .map(|s| s.state.genesis)
        .collect();
    assert_eq!(geneses.len(), 2, "{merged:#?}");
    assert!(geneses.contains(&apart.0.genesis) && geneses.contains(&apart.1.genesis));
    // (Epochs may move without a command: compare the histories.)
    let history = |s: StateId| (s.genesis, s.applied, s.chain);
    let announced = merged.member(first.local()).unwrap().announced;
    assert_eq!(announced.map(history), Some(history(apart.0)));
    // The greatest state wins (listed first); the other side receives it.
    let states = &merged.agreement.states;
    assert!(states[0].state > states[1].state);
    assert_eq!(merged.agreement.receivers, states[1].members);
    // One history goes on, whole, on both (module docs of `replicated`:
    // which one the stream decides); the other side's writes are gone.
    let winner = history(states[0].state);
    assert!(winner == history(apart.0) || winner == history(apart.1));
    for r in [&first, &second] {
        let s = replica_until(|| inspected(r), "holding", |s| s.holding).await;
        assert_eq!(s.state.genesis, winner.0);
        assert!(s.state.applied >= winner.1);
    }
}
