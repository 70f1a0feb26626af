//! Compact batches of requests (`wire::Kind::Requests`, protocol version
//! 7) on the sim backend, watched by a plain client in the group.
//!
//! Invariants: a group whose members all speak version 7 sends batched
//! requests as compact batches, and they reach the actor in call order,
//! exactly once; while a member speaks only up to version 6, not one
//! compact batch goes out and the same calls arrive through plain batches.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::transport::TransportEvent;
use actix_cpg::wire::{Kind, Versions, COMPACT_BATCH_VERSION, MIN_PROTOCOL_VERSION};
use actix_cpg::{Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage, Transport};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
struct Num(u64);

impl RemoteMessage for Num {
    const TYPE_TAG: &'static str = "test.compact.Num";
}

struct Sink {
    seen: Rc<RefCell<Vec<u64>>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Num> for Sink {
    type Result = ();
    fn handle(&mut self, Num(n): Num, _: &mut Context<Self>) {
        self.seen.borrow_mut().push(n);
    }
}

fn name() -> GroupName {
    GroupName::new("compact").expect("valid name")
}

async fn start(cluster: &SimCluster, node: u32, versions: Versions) -> Group {
    let conn = cluster
        .process(NodeId(node))
        .expect("up")
        .join(&name())
        .expect("join");
    let config = GroupConfig {
        protocol_versions: versions,
        send_window: 2,
        ..GroupConfig::default()
    };
    Group::start(conn, config).await.expect("start")
}

/// The kind byte of every multicast `watcher` has been delivered so far.
fn kinds(watcher: &mut SimConnection, into: &mut Vec<u8>) {
    while let Some(event) = watcher.try_next_event().expect("open") {
        if let TransportEvent::Deliver { bytes, .. } = event {
            into.push(bytes[5]);
        }
    }
}

/// A host speaking up to `host_max` with `sink`, a sender of this build,
/// and a plain client watching; 3000 tells from the sender. Returns the
/// kind of every multicast the watcher saw (the calls, and whatever the
/// group sent after it joined).
async fn tells_through_a_group(host_max: u8) -> Vec<u8> {
    let cluster = SimCluster::new(3);
    let host = start(
        &cluster,
        1,
        Versions {
            min: MIN_PROTOCOL_VERSION,
            max: host_max,
        },
    )
    .await;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = Sink { seen: seen.clone() }.start();
    host.register("sink", Handlers::new(sink).with::<Num>())
        .await
        .expect("register");
    let sender = start(&cluster, 2, Versions::this_build()).await;
    sender.wait_for_name("sink").await.expect("open");
    // Joins once the group holds its state: a process already in the view
    // when the first member starts would look like a holder of state to
    // wait for.
    let mut watcher: SimConnection = cluster
        .process(NodeId(3))
        .expect("up")
        .join(&name())
        .expect("join");
    let to = sender.remote::<Num>("sink");
    let pending: Vec<_> = (0..3000).map(|i| to.tell(Num(i))).collect();
    for r in futures::future::join_all(pending).await {
        r.expect("told");
    }
    let mut seen_kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.borrow().len() < 3000 {
        assert!(Instant::now() < deadline, "only {}", seen.borrow().len());
        kinds(&mut watcher, &mut seen_kinds);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kinds(&mut watcher, &mut seen_kinds);
    assert_eq!(*seen.borrow(), (0..3000).collect::<Vec<_>>());
    assert_eq!(host.metrics().requests, 3000);
    assert_eq!(host.metrics().dropped(), 0);
    assert!(host.metrics().batches_delivered > 0);
    seen_kinds
}

#[actix_rt::test]
async fn requests_go_compact_once_every_member_speaks_the_version_and_arrive_in_order() {
    let kinds = tells_through_a_group(COMPACT_BATCH_VERSION).await;
    let first = kinds
        .iter()
        .position(|&k| k == Kind::Requests as u8)
        .unwrap_or_else(|| panic!("no compact batch: {kinds:?}"));
    // What the group says of the watcher's join may go plain; the calls
    // do not.
    assert!(
        !kinds[first..].contains(&(Kind::Batch as u8)),
        "a plain batch among the calls: {kinds:?}"
    );
}

#[actix_rt::test]
async fn a_group_with_a_member_of_version_6_never_sees_a_compact_batch() {
    let kinds = tells_through_a_group(COMPACT_BATCH_VERSION - 1).await;
    assert!(!kinds.contains(&(Kind::Requests as u8)), "{kinds:?}");
    assert!(kinds.contains(&(Kind::Batch as u8)), "{kinds:?}");
}
