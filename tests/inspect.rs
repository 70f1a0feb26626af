//! `Group::inspect` on the sim backend: what an observer sees of a group
//! (members with roles and versions, pending processes, the registry, the
//! trees with every slot, quorum, counters), and how it follows a failover.

use std::time::Duration;

use actix::prelude::*;
use actix_cpg::group::GroupInspection;
use actix_cpg::supervisor::{ChildSpec, QuorumPolicy, SlotStatus, Strategy, SupervisorSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::wire::{Versions, PROTOCOL_VERSION};
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupName, Handlers, Member, NodeId, Role,
    Transport, TreeSpec,
};

struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

fn spec() -> TreeSpec {
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(20, 60_000)
            .child(ChildSpec::worker("a", "idle"))
            .child(ChildSpec::worker("b", "idle"))
            .child(ChildSpec::worker("c", "idle")),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

fn factories() -> Factories {
    Factories::new().worker("idle", |_: &ChildContext| Child::start(Idle))
}

fn group() -> GroupName {
    GroupName::new("inspected").unwrap()
}

async fn participant(cluster: &SimCluster, node: u32) -> Group {
    let process = cluster.process(NodeId(node)).unwrap();
    Group::start(process.join(&group()).unwrap(), GroupConfig::default())
        .await
        .unwrap()
}

async fn observer(cluster: &SimCluster, node: u32) -> Group {
    let process = cluster.process(NodeId(node)).unwrap();
    let config = GroupConfig {
        role: Role::Observer,
        ..GroupConfig::default()
    };
    Group::start(process.join(&group()).unwrap(), config)
        .await
        .unwrap()
}

/// Inspects `group` until `pred` holds (the runtimes act asynchronously).
async fn inspect_until(
    group: &Group,
    what: &str,
    pred: impl Fn(&GroupInspection) -> bool,
) -> GroupInspection {
    let mut last = None;
    for _ in 0..2000 {
        let seen = group.inspect().await.unwrap();
        if pred(&seen) {
            return seen;
        }
        last = Some(seen);
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {what}; last inspection {last:#?}");
}

fn all_running_on(seen: &GroupInspection, hosts: &[Member]) -> bool {
    let slots: Vec<_> = seen.slots().collect();
    slots.len() == 3
        && slots
            .iter()
            .all(|s| s.host().is_some_and(|h| hosts.contains(&h)))
}

#[actix_rt::test]
async fn an_observer_sees_members_pending_processes_names_and_every_slot() {
    let cluster = SimCluster::new(3);
    let p1 = participant(&cluster, 1).await;
    let p2 = participant(&cluster, 2).await;
    for p in [&p1, &p2] {
        p.start_tree("jobs", spec(), factories()).await.unwrap();
    }
    p1.register("journal", Handlers::new(Idle.start()))
        .await
        .unwrap();
    let watcher = observer(&cluster, 3).await;
    // A plain CPG client that never announces itself.
    let silent = cluster.process(NodeId(3)).unwrap();
    let _silent_conn = silent.join(&group()).unwrap();

    let hosts = [p1.local(), p2.local()];
    let seen = inspect_until(
        &watcher,
        "every slot runs and the silent client shows",
        |s| all_running_on(s, &hosts) && !s.pending.is_empty() && !s.names.is_empty(),
    )
    .await;

    assert_eq!(seen.group, "inspected");
    assert_eq!(seen.local, watcher.local());
    assert_eq!(seen.role, Role::Observer);
    assert_eq!(seen.versions, Versions::this_build());
    assert_eq!(seen.group_version, Some(PROTOCOL_VERSION));
    assert!(seen.holds_state);
    let members: Vec<(Member, Role)> = seen.members.iter().map(|m| (m.member, m.role)).collect();
    let mut want = vec![
        (p1.local(), Role::Participant),
        (p2.local(), Role::Participant),
        (watcher.local(), Role::Observer),
    ];
    want.sort_by_key(|(m, _)| *m);
    assert_eq!(members, want, "members, sorted, with their roles");
    assert!(seen
        .members
        .iter()
        .all(|m| m.versions == Versions::this_build()));
    assert_eq!(seen.pending, vec![silent.member()], "announced nothing");
    let names: Vec<(&str, Member)> = seen
        .names
        .iter()
        .map(|n| (n.name.as_str(), n.host))
        .collect();
    assert_eq!(names, vec![("journal", p1.local())]);

    assert_eq!(seen.trees.len(), 1);
    let tree = &seen.trees[0];
    assert_eq!(tree.name, "jobs");
    assert_eq!(tree.fingerprint, spec().fingerprint());
    assert!(tree.alive);
    assert_eq!(tree.quorum_policy, QuorumPolicy::Stop);
    assert_eq!(tree.hosts, hosts.to_vec(), "the observer hosts nothing");
    let slot_names: Vec<&str> = tree.children.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(slot_names, ["jobs/a", "jobs/b", "jobs/c"]);
    // The slots are the engine's, as `children()` reports them.
    let children = watcher.children().await.unwrap();
    for (slot, child) in tree.children.iter().zip(&children) {
        assert_eq!((&slot.path, slot.status), (&child.path, child.status));
    }
    assert!(seen.quorum.quorate && !seen.quorum.fenced);
    assert!(!seen.supervision.merging);
    assert!(seen.supervision.seq > 0);
    assert!(seen.metrics.delivered > 0, "counters come along");
}

#[actix_rt::test]
async fn an_inspection_follows_a_failover_to_new_incarnations_with_larger_tokens() {
    let cluster = SimCluster::new(3);
    let mut participants = Vec::new();
    for node in 1..=3 {
        let p = participant(&cluster, node).await;
        p.start_tree("jobs", spec(), factories()).await.unwrap();
        participants.push(p);
    }
    let all: Vec<Member> = participants.iter().map(Group::local).collect();
    let before = inspect_until(&participants[0], "every slot runs", |s| {
        all_running_on(s, &all)
    })
    .await;
    // Kill the host of `jobs/a`; inspect from another member.
    let victim = before
        .slots()
        .find(|slot| slot.name == "jobs/a")
        .and_then(|slot| slot.host())
        .unwrap();
    let inspector = participants.iter().find(|p| p.local() != victim).unwrap();
    cluster.kill_process(victim).unwrap();
    let survivors: Vec<Member> = all.iter().copied().filter(|m| *m != victim).collect();
    let after = inspect_until(inspector, "the victim's slots run on survivors", |s| {
        s.member(victim).is_none() && all_running_on(s, &survivors)
    })
    .await;
    for (old, new) in before.slots().zip(after.slots()) {
        let token = |s: &SlotStatus| match s {
            SlotStatus::Running { token, .. } => Some(*token),
            _ => None,
        };
        if old.host() == Some(victim) {
            assert!(
                token(&new.status) > token(&old.status),
                "{} moved with a larger fencing token: {:?} -> {:?}",
                old.name,
                old.status,
                new.status
            );
        } else {
            assert_eq!(old.status, new.status, "{} did not move", old.name);
        }
    }
}

#[actix_rt::test]
async fn an_inspection_reads_back_from_json() {
    let cluster = SimCluster::new(2);
    let p1 = participant(&cluster, 1).await;
    p1.start_tree("jobs", spec(), factories()).await.unwrap();
    p1.register("journal", Handlers::new(Idle.start()))
        .await
        .unwrap();
    let seen = inspect_until(&p1, "every slot runs", |s| all_running_on(s, &[p1.local()])).await;
    let json = serde_json::to_string(&seen).unwrap();
    let back: GroupInspection = serde_json::from_str(&json).unwrap();
    assert_eq!(back, seen);
}
