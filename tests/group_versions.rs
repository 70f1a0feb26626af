//! Version negotiation in a registry group, on the sim backend and
//! simulated time: a rolling upgrade from builds speaking only version 2 to
//! builds speaking up to the test-only next version (whose replies have
//! another layout) while calls flow. The group speaks the highest version
//! every member speaks; it moves up at the point of the stream where the
//! last old member leaves, the same on every member; a process that cannot
//! speak the group's version is refused, with an event on every member and
//! an error on itself, and changes nothing.

use std::time::Duration;

use actix::prelude::*;
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::wire::{Versions, NEXT_PROTOCOL_VERSION, PROTOCOL_VERSION};
use actix_cpg::{
    Group, GroupConfig, GroupError, GroupEvent, GroupName, Handlers, NodeId, RemoteMessage,
    Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::support::simulated;
use simulated::simulated;

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Ask;

impl RemoteMessage for Ask {
    const TYPE_TAG: &'static str = "test.versions.Ask";
}

/// Answers with the number it was started with.
struct Echo(u64);

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ask> for Echo {
    type Result = u64;
    fn handle(&mut self, _: Ask, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

const OLD: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: PROTOCOL_VERSION,
};
const NEW: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};
const NEWEST: Versions = Versions {
    min: NEXT_PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};

fn group_name() -> GroupName {
    GroupName::new("versions").expect("valid group name")
}

fn config(versions: Versions) -> GroupConfig {
    GroupConfig {
        protocol_versions: versions,
        call_timeout: Some(Duration::from_secs(5)),
        ..GroupConfig::default()
    }
}

async fn join(cluster: &SimCluster, node: u32, versions: Versions) -> Result<Group, GroupError> {
    let conn = cluster
        .process(NodeId(node))
        .expect("node is up")
        .join(&group_name())
        .expect("joined");
    actix_rt::time::timeout(STUCK, Group::start(conn, config(versions)))
        .await
        .expect("joining ends")
}

/// A member that registers `echo-<n>` answering `n`.
async fn serving(cluster: &SimCluster, node: u32, versions: Versions, n: u64) -> Group {
    let g = join(cluster, node, versions).await.expect("admitted");
    let name = format!("echo-{n}");
    let register = g.register(&name, Handlers::new(Echo(n).start()).with::<Ask>());
    actix_rt::time::timeout(STUCK, register)
        .await
        .expect("registering ends")
        .expect("registered");
    g
}

/// How long, in simulated time, a step may take before the test calls it
/// stuck: far past anything the sim needs.
const STUCK: Duration = Duration::from_secs(60);

/// Every name `echo-<n>` in `names` answers `caller` with `n`.
async fn all_answer(caller: &Group, names: &[u64]) {
    for n in names {
        let name = format!("echo-{n}");
        actix_rt::time::timeout(STUCK, caller.wait_for_name(&name))
            .await
            .unwrap_or_else(|_| panic!("{name} never registered on {}", caller.local()))
            .expect("open");
        let got = caller.remote::<Ask>(&name).send(Ask).await;
        assert_eq!(got, Ok(*n), "{name} from {}", caller.local());
    }
}

/// The events received so far.
fn drain(rx: &mut broadcast::Receiver<GroupEvent>) -> Vec<GroupEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn version_moves(events: &[GroupEvent]) -> Vec<(Option<u8>, u8)> {
    events
        .iter()
        .filter_map(|e| match e {
            GroupEvent::VersionChanged { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn refusals(events: &[GroupEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| matches!(e, GroupEvent::MemberRefused { .. }))
        .map(|e| e.to_string())
        .collect()
}

/// Waits until `group` has seen `members` as its view.
async fn view_is(group: &Group, members: &[&Group]) {
    let mut want: Vec<_> = members.iter().map(|g| g.local()).collect();
    want.sort();
    for _ in 0..200 {
        if group.members().await.expect("open") == want {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never saw the view {want:?}", group.local());
}

#[test]
fn a_rolling_upgrade_moves_the_group_up_where_the_last_old_member_leaves() {
    simulated().block_on(async {
        let cluster = SimCluster::new(3);
        // A running group of old builds.
        let old: Vec<Group> = vec![
            serving(&cluster, 1, OLD, 1).await,
            serving(&cluster, 2, OLD, 2).await,
            serving(&cluster, 3, OLD, 3).await,
        ];
        // New builds join it: the group keeps speaking version 2.
        let d = serving(&cluster, 1, NEW, 4).await;
        let e = serving(&cluster, 2, NEW, 5).await;
        let mut d_events = d.subscribe();
        let mut e_events = e.subscribe();
        for g in old.iter().chain([&d, &e]) {
            all_answer(g, &[1, 2, 3, 4, 5]).await;
            assert_eq!(g.metrics().protocol_version, PROTOCOL_VERSION);
        }
        // Calls keep flowing from both kinds of build while the old
        // members leave one by one; the version moves only at the last.
        for (i, leaving) in old.iter().enumerate() {
            let still: Vec<u64> = (i as u64 + 2..=5).collect();
            leaving.leave().await.expect("left");
            let remaining: Vec<&Group> = old[i + 1..].iter().chain([&d, &e]).collect();
            for g in &remaining {
                view_is(g, &remaining).await;
            }
            for g in &remaining {
                all_answer(g, &still).await;
            }
            let moved = (
                version_moves(&drain(&mut d_events)),
                version_moves(&drain(&mut e_events)),
            );
            if i + 1 < old.len() {
                assert_eq!(moved, (vec![], vec![]), "an old member is still there");
                assert_eq!(d.metrics().protocol_version, PROTOCOL_VERSION);
            } else {
                let up = vec![(Some(PROTOCOL_VERSION), NEXT_PROTOCOL_VERSION)];
                assert_eq!(moved, (up.clone(), up), "both move, once");
            }
        }
        // The next version now, replies in its shape both ways.
        for g in [&d, &e] {
            assert_eq!(g.metrics().protocol_version, NEXT_PROTOCOL_VERSION);
            all_answer(g, &[4, 5]).await;
        }
        assert_eq!(d.metrics().refused(), 0);
        assert_eq!(
            d.metrics().dropped_version,
            0,
            "nothing was lost to a version"
        );

        // An old build cannot join any more: refused on every member and
        // on itself, and the registry is untouched.
        let names_before = (d.lookup("echo-4").await, d.lookup("echo-9").await);
        match join(&cluster, 3, OLD).await {
            Err(GroupError::Incompatible {
                ours,
                group_version,
            }) => {
                assert_eq!(ours, OLD);
                assert_eq!(group_version, NEXT_PROTOCOL_VERSION);
            }
            Ok(_) => panic!("an old build was admitted into a group of the next version"),
            Err(other) => panic!("refused with the wrong error: {other}"),
        }
        for (g, rx) in [(&d, &mut d_events), (&e, &mut e_events)] {
            let mut seen = Vec::new();
            for _ in 0..100 {
                seen.extend(refusals(&drain(rx)));
                if !seen.is_empty() {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(seen.len(), 1, "one refusal on {}: {seen:?}", g.local());
            assert!(
                seen[0].contains(&format!("speaks {OLD}"))
                    && seen[0].contains(&format!("the group speaks v{NEXT_PROTOCOL_VERSION}")),
                "the event says why: {}",
                seen[0]
            );
            assert!(g.metrics().refused_incompatible >= 1);
            view_is(g, &[&d, &e]).await;
        }
        assert_eq!(
            (d.lookup("echo-4").await, d.lookup("echo-9").await),
            names_before
        );

        // A build speaking only the new version is welcome.
        let f = serving(&cluster, 3, NEWEST, 6).await;
        for g in [&d, &e, &f] {
            all_answer(g, &[4, 5, 6]).await;
        }
        for g in [&d, &e, &f] {
            g.leave().await.expect("left");
        }
    });
}

#[test]
fn a_build_that_speaks_only_a_newer_version_is_refused_while_an_old_member_remains() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let a = serving(&cluster, 1, OLD, 1).await;
        let b = serving(&cluster, 2, NEW, 2).await;
        let mut events = b.subscribe();
        match join(&cluster, 2, NEWEST).await {
            Err(GroupError::Incompatible {
                ours,
                group_version,
            }) => assert_eq!((ours, group_version), (NEWEST, PROTOCOL_VERSION)),
            Ok(_) => panic!("admitted a member that cannot speak the group's version"),
            Err(other) => panic!("refused with the wrong error: {other}"),
        }
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen.extend(refusals(&drain(&mut events)));
            if !seen.is_empty() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        view_is(&a, &[&a, &b]).await;
        all_answer(&a, &[1, 2]).await;
        all_answer(&b, &[1, 2]).await;
        assert_eq!(a.metrics().protocol_version, PROTOCOL_VERSION);
        a.leave().await.expect("left");
        b.leave().await.expect("left");
    });
}

#[test]
fn new_builds_founding_a_group_speak_the_newer_version() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let a = serving(&cluster, 1, NEW, 1).await;
        let b = serving(&cluster, 2, NEW, 2).await;
        for g in [&a, &b] {
            all_answer(g, &[1, 2]).await;
            assert_eq!(g.metrics().protocol_version, NEXT_PROTOCOL_VERSION);
        }
        a.leave().await.expect("left");
        b.leave().await.expect("left");
    });
}
