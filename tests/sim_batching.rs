//! Batching and backpressure of the group runtime, on the sim backend.
//!
//! Invariants: batched messages reach the actor in call order, exactly
//! once; a batch never exceeds its caps; a malformed batch is dropped whole
//! and the group goes on; a full send queue makes `try_tell` say
//! `WouldBlock` and `tell` wait, without losing, duplicating or reordering
//! anything, and the queue never grows past its bound.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::wire::{push_to_batch, Codec, Kind, PROTOCOL_VERSION};
use actix_cpg::{
    BatchConfig, CallError, Connection, Group, GroupConfig, GroupName, Handlers, NodeId,
    RemoteMessage, Transport,
};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
struct Num(u64);

impl RemoteMessage for Num {
    const TYPE_TAG: &'static str = "test.batching.Num";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Count;

impl RemoteMessage for Count {
    const TYPE_TAG: &'static str = "test.batching.Count";
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

impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        self.seen.borrow().len() as u64
    }
}

fn name() -> GroupName {
    GroupName::new("batching").expect("valid name")
}

/// Two members; member 1 hosts `sink`. Returns (host, sender, seen).
async fn two_members(
    cluster: &SimCluster,
    sender_config: GroupConfig,
) -> (Group, Group, Rc<RefCell<Vec<u64>>>) {
    let host = Group::start(
        cluster
            .process(NodeId(1))
            .expect("up")
            .join(&name())
            .expect("join"),
        GroupConfig::default(),
    )
    .await
    .expect("start");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = Sink { seen: seen.clone() }.start();
    host.register("sink", Handlers::new(sink).with::<Num>().with::<Count>())
        .await
        .expect("register");
    let sender = Group::start(
        cluster
            .process(NodeId(2))
            .expect("up")
            .join(&name())
            .expect("join"),
        sender_config,
    )
    .await
    .expect("start");
    (host, sender, seen)
}

async fn wait_for(seen: &Rc<RefCell<Vec<u64>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.borrow().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            seen.borrow().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn messages_queued_together_travel_in_batches_and_arrive_in_order() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 2,
        ..GroupConfig::default()
    };
    let (host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let before = sender.metrics();
    let pending: Vec<_> = (0..5000).map(|i| sink.tell(Num(i))).collect();
    for r in futures::future::join_all(pending).await {
        r.expect("told");
    }
    wait_for(&seen, 5000).await;
    assert_eq!(*seen.borrow(), (0..5000).collect::<Vec<_>>());
    let m = sender.metrics();
    assert_eq!(m.sent - before.sent, 5000);
    assert!(m.batches_sent > 0, "{m:?}");
    assert!(
        m.multicasts - before.multicasts < 1000,
        "5000 messages took {} multicasts",
        m.multicasts
    );
    assert!(host.metrics().batches_delivered > 0);
    assert_eq!(host.metrics().requests, 5000);
    assert_eq!(host.metrics().dropped(), 0);
}

#[actix_rt::test]
async fn disabled_batching_sends_one_message_per_multicast() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 2,
        batch: BatchConfig::disabled(),
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let pending: Vec<_> = (0..500).map(|i| sink.tell(Num(i))).collect();
    futures::future::join_all(pending).await;
    wait_for(&seen, 500).await;
    assert_eq!(*seen.borrow(), (0..500).collect::<Vec<_>>());
    let m = sender.metrics();
    assert_eq!(m.batches_sent, 0);
    assert_eq!(m.multicasts, m.sent);
}

#[actix_rt::test]
async fn a_batch_never_exceeds_the_transport_limit_or_its_caps() {
    // The transport takes at most 2 KiB: a 64 KiB cap is cut to that.
    let cluster = SimCluster::builder(2).max_message_size(2048).build();
    let config = GroupConfig {
        send_window: 1,
        batch: BatchConfig {
            max_bytes: 64 << 10,
            max_messages: 7,
            linger: Duration::ZERO,
        },
        ..GroupConfig::default()
    };
    let (host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let pending: Vec<_> = (0..2000).map(|i| sink.tell(Num(i))).collect();
    for r in futures::future::join_all(pending).await {
        r.expect("no batch was refused as too large");
    }
    wait_for(&seen, 2000).await;
    assert_eq!(*seen.borrow(), (0..2000).collect::<Vec<_>>());
    let m = sender.metrics();
    assert!(
        m.multicasts * 7 >= 2000,
        "more than 7 messages in a batch: {m:?}"
    );
    assert_eq!(host.metrics().dropped(), 0);
}

#[actix_rt::test]
async fn the_window_also_bounds_bytes_in_flight() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 64,
        // Room for one request of a `Num` (about 60 bytes) but not two.
        send_window_bytes: 100,
        batch: BatchConfig::disabled(),
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    // The sender stops seeing its own deliveries: nothing leaves the window.
    cluster.pause_process(sender.local()).expect("paused");
    let before = sender.metrics().multicasts;
    for i in 0..10 {
        sink.try_tell(&Num(i)).expect("room in the queue");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        sender.metrics().multicasts - before,
        1,
        "a second request would pass the byte bound"
    );
    cluster.resume_process(sender.local()).expect("resumed");
    wait_for(&seen, 10).await;
    assert_eq!(*seen.borrow(), (0..10).collect::<Vec<_>>());
    assert_eq!(sender.metrics().multicasts - before, 10);
}

#[actix_rt::test]
async fn linger_waits_for_company_and_flush_cuts_it_short() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        batch: BatchConfig {
            linger: Duration::from_secs(3600),
            ..BatchConfig::default()
        },
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let before = sender.metrics().multicasts;
    // Fire and forget: the tells are queued now; nothing goes while they
    // linger.
    for i in 0..3 {
        sink.try_tell(&Num(i)).expect("room");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.borrow().is_empty(), "sent before the linger ran out");
    sender.flush().await.expect("flushed");
    wait_for(&seen, 3).await;
    assert_eq!(*seen.borrow(), vec![0, 1, 2]);
    assert_eq!(
        sender.metrics().multicasts - before,
        1,
        "one batch of three"
    );
}

#[actix_rt::test]
async fn a_full_queue_says_would_block_and_drops_nothing() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 1,
        send_queue_messages: 8,
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    // Without yielding, the runtime cannot drain: the ninth is refused.
    for i in 0..8 {
        sink.try_tell(&Num(i)).expect("room for eight");
    }
    assert_eq!(sink.try_tell(&Num(8)), Err(CallError::WouldBlock));
    assert_eq!(sender.send_queue_len().0, 8);
    // A producer that waits for room each time it hears WouldBlock.
    let mut next = 8;
    let mut max_queued = 0;
    while next < 20_000 {
        match sink.try_tell(&Num(next)) {
            Ok(()) => next += 1,
            Err(CallError::WouldBlock) => sender.ready_to_send().await.expect("open"),
            Err(e) => panic!("{e}"),
        }
        max_queued = max_queued.max(sender.send_queue_len().0);
    }
    assert!(max_queued <= 8, "queue grew to {max_queued}");
    wait_for(&seen, 20_000).await;
    assert_eq!(*seen.borrow(), (0..20_000).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn tells_waiting_for_room_keep_their_call_order_and_a_dropped_one_is_not_sent() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 1,
        send_queue_messages: 4,
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let mut pending: Vec<_> = (0..1000).map(|i| sink.tell(Num(i))).collect();
    // Number 500 is given up before its turn; the rest are awaited in
    // reverse: their order was fixed when they were called.
    drop(pending.remove(500));
    pending.reverse();
    for r in futures::future::join_all(pending).await {
        r.expect("told");
    }
    let count = sender
        .remote::<Count>("sink")
        .send(Count)
        .await
        .expect("count");
    assert_eq!(count, 999);
    let expected: Vec<u64> = (0..1000).filter(|i| *i != 500).collect();
    assert_eq!(*seen.borrow(), expected);
}

#[actix_rt::test]
async fn calls_with_replies_pass_the_gate_too() {
    let cluster = SimCluster::new(2);
    let config = GroupConfig {
        send_window: 1,
        send_queue_messages: 2,
        ..GroupConfig::default()
    };
    let (_host, sender, seen) = two_members(&cluster, config).await;
    let sink = sender.remote::<Num>("sink");
    let counter = sender.remote::<Count>("sink");
    let tells: Vec<_> = (0..100).map(|i| sink.tell(Num(i))).collect();
    let count = counter.send(Count);
    futures::future::join_all(tells).await;
    assert_eq!(
        count.await.expect("reply"),
        100,
        "the call came after the tells"
    );
    assert_eq!(seen.borrow().len(), 100);
}

#[actix_rt::test]
async fn a_malformed_batch_is_dropped_whole_and_a_bad_entry_alone() {
    let cluster = SimCluster::new(2);
    let (host, sender, seen) = two_members(&cluster, GroupConfig::default()).await;
    // A plain client in the same group sends forged batches.
    let mut raw: SimConnection = cluster
        .process(NodeId(2))
        .expect("up")
        .join(&name())
        .expect("join");
    let codec = Codec::new(1 << 20);
    // It announces itself first: requests count only from members (the
    // group core's sender rules), and what is tested here is the framing.
    #[derive(Serialize)]
    struct Announce {
        min_version: u8,
        max_version: u8,
        /// The role's variant index: 0, a participant.
        role: u32,
        synced: bool,
    }
    let announce = Announce {
        min_version: actix_cpg::wire::PROTOCOL_VERSION,
        max_version: actix_cpg::wire::PROTOCOL_VERSION,
        role: 0,
        synced: false,
    };
    raw.mcast(&codec.encode(Kind::Announce, &announce).expect("encode"))
        .expect("sent");
    let good = |n: u64| {
        // The envelope a real sender would make for `tell(Num(n))`.
        #[derive(Serialize)]
        struct Request<'a> {
            id: u64,
            target: &'a str,
            type_tag: &'a str,
            want_reply: bool,
            fence: Option<actix_cpg::supervisor::FencingToken>,
            payload: Vec<u8>,
        }
        codec
            .encode(
                Kind::Request,
                &Request {
                    id: 1_000_000 + n,
                    target: "sink",
                    type_tag: Num::TYPE_TAG,
                    want_reply: false,
                    fence: None,
                    payload: codec.encode_payload(&Num(n)).expect("payload"),
                },
            )
            .expect("encode")
    };
    // Framing broken after a good entry: nothing of it is delivered.
    let mut broken = codec.begin_batch(256);
    push_to_batch(&mut broken, &good(100));
    broken.extend_from_slice(&[0xff, 0xff, 0, 0, 1]);
    raw.mcast(&broken).expect("sent");
    // Framing fine, middle entry garbage: the other two are delivered.
    let mut mixed = codec.begin_batch(256);
    push_to_batch(&mut mixed, &good(1));
    let garbage = [&b"ACPG"[..], &[PROTOCOL_VERSION, 2, 0, 0], &[0xff]].concat();
    push_to_batch(&mut mixed, &garbage);
    push_to_batch(&mut mixed, &good(2));
    raw.mcast(&mixed).expect("sent");
    // The group goes on.
    sender
        .remote::<Num>("sink")
        .tell(Num(3))
        .await
        .expect("told");
    wait_for(&seen, 3).await;
    assert_eq!(*seen.borrow(), vec![1, 2, 3]);
    let m = host.metrics();
    assert_eq!(m.dropped_malformed, 2, "{m:?}");
    assert_eq!(m.refused(), 0, "{m:?}");
    drop(raw);
}
