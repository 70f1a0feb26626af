//! Hostile bytes on the decode path: a value nested far deeper than any
//! real message is refused as malformed while it is decoded, on an ordinary
//! thread stack, and a group that delivers one drops it on every member and
//! keeps serving.
//!
//! The forgery is a supervision spec nested 5,000 supervisors deep (about
//! 240 KB, under one multicast). Before decoding was bounded, serde's
//! recursion overflowed a 2 MiB stack on it and aborted the process, on
//! every member at the same point of the stream.

use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{ChildSpec, Fingerprint, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::wire::{Codec, Kind, WireError};
use actix_cpg::Transport;
use actix_cpg::{Connection, Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage};
use serde::{Deserialize, Serialize};

/// The stack of a tokio or actix worker thread.
const WORKER_STACK: usize = 2 << 20;

/// Runs `f` on a thread with a stack of `bytes`.
fn on_stack<T: Send + 'static>(bytes: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic")
}

/// A spec with `levels` supervisors, each the only child of the one above.
fn deep_spec(levels: usize) -> TreeSpec {
    let mut spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("w", "w"));
    for i in 0..levels {
        spec = SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::supervisor(format!("s{i}"), spec));
    }
    TreeSpec::new(spec)
}

/// `f` of a deep spec, on a stack large enough to build, encode and drop it
/// (each of which recurses once per level).
fn with_deep_spec<T: Send + 'static>(
    levels: usize,
    f: impl FnOnce(&TreeSpec) -> T + Send + 'static,
) -> T {
    on_stack(1 << 30, move || f(&deep_spec(levels)))
}

fn codec() -> Codec {
    Codec::new(1 << 20)
}

#[test]
fn a_spec_nested_5000_deep_is_malformed_on_a_2_mib_stack() {
    // Deeper ones than fit one multicast can still arrive in pieces.
    let large = Codec::new(16 << 20);
    for levels in [5_000, 100_000] {
        let bytes = with_deep_spec(levels, move |spec| {
            large.encode_payload(spec).expect("encode")
        });
        if levels == 5_000 {
            assert!(bytes.len() < 1 << 20, "{levels} levels fit one multicast");
        }
        let outcome = on_stack(WORKER_STACK, move || {
            large.decode_payload::<TreeSpec>(&bytes).map(|_| ())
        });
        match outcome {
            Err(WireError::Malformed(why)) => assert!(why.contains("nest deeper"), "{why}"),
            other => panic!("{levels} levels: {other:?}"),
        }
    }
}

#[test]
fn a_spec_at_the_engines_own_bound_still_decodes_on_a_2_mib_stack() {
    let levels = actix_cpg::supervisor::MAX_DEPTH - 1;
    let spec = deep_spec(levels);
    assert!(spec.validate().is_ok());
    let bytes = codec().encode_payload(&spec).expect("encode");
    let back = on_stack(WORKER_STACK, move || {
        codec().decode_payload::<TreeSpec>(&bytes).expect("decodes")
    });
    assert_eq!(back, spec);
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Ping(u64);

impl RemoteMessage for Ping {
    const TYPE_TAG: &'static str = "test.hostile.Ping";
}

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, Ping(n): Ping, _: &mut Context<Self>) -> u64 {
        n
    }
}

/// The body of a supervision fact announcing a tree, laid out as the group
/// protocol lays it out (variant 0 of its supervision message).
#[derive(Serialize)]
enum SupervisionFact<'a> {
    TreeStarted {
        name: &'a str,
        fingerprint: Fingerprint,
        spec: &'a TreeSpec,
        kinds: Vec<&'a str>,
    },
}

#[actix_rt::test]
async fn a_group_drops_a_deep_spec_on_every_member_and_keeps_serving() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("hostile-decoding").expect("name");
    let mut members = Vec::new();
    for node in 1..=3 {
        let conn = cluster
            .process(NodeId(node))
            .expect("up")
            .join(&name)
            .expect("join");
        members.push(
            Group::start(conn, GroupConfig::default())
                .await
                .expect("start"),
        );
    }
    members[0]
        .register("echo", Handlers::new(Echo.start()).with::<Ping>())
        .await
        .expect("registered");

    let forged = with_deep_spec(5_000, |spec| {
        codec()
            .encode(
                Kind::Supervision,
                &SupervisionFact::TreeStarted {
                    name: "deep",
                    fingerprint: spec.fingerprint(),
                    spec,
                    kinds: Vec::new(),
                },
            )
            .expect("encode")
    });
    let before: Vec<u64> = members
        .iter()
        .map(|m| m.metrics().dropped_malformed)
        .collect();
    // A plain client of the group, no actix-cpg runtime behind it.
    let mut raw = cluster
        .process(NodeId(2))
        .expect("up")
        .join(&name)
        .expect("join");
    raw.mcast(&forged).expect("sent");

    // Ordered after the forgery: once it is answered, every member has
    // delivered (and dropped) the forgery.
    for (i, member) in members.iter().enumerate() {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            member.remote::<Ping>("echo").send(Ping(i as u64)),
        )
        .await
        .expect("the group keeps serving")
        .expect("reply");
        assert_eq!(reply, i as u64);
    }
    for (member, before) in members.iter().zip(before) {
        let m = member.metrics();
        assert_eq!(m.dropped_malformed, before + 1, "{m:?}");
    }
    drop(raw);
}
