//! Messages larger than one multicast, on the sim backend with a small
//! atomic size so that a few kilobytes take many pieces.
//!
//! Invariants: a message in pieces reaches its actor whole, in its
//! sender's order among small messages, exactly once, while members join,
//! leave and crash around it (a cut message is sent again whole); a message
//! above `max_message_size` is refused with a clear error and nothing else
//! is lost; pieces that start nowhere or do not add up are dropped and
//! counted, and the group goes on.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::wire::{ChunkHead, Codec, WireError};
use actix_cpg::{
    CallError, Connection, Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage,
    Transport,
};
use serde::{Deserialize, Serialize};

/// The transport's atomic size in these tests: pieces of 480 bytes.
const ATOMIC: usize = 512;

#[derive(Message, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "usize")]
struct Blob {
    sender: u32,
    seq: u32,
    #[serde(with = "actix_cpg::wire::bytes")]
    data: Vec<u8>,
}

impl RemoteMessage for Blob {
    const TYPE_TAG: &'static str = "test.chunking.Blob";
}

fn blob(sender: u32, seq: u32, len: usize) -> Blob {
    Blob {
        sender,
        seq,
        data: (0..len)
            .map(|i| (i as u32 ^ seq.wrapping_mul(31) ^ sender) as u8)
            .collect(),
    }
}

type Seen = Rc<RefCell<Vec<Blob>>>;

struct Sink {
    seen: Seen,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Blob> for Sink {
    type Result = usize;
    fn handle(&mut self, b: Blob, _: &mut Context<Self>) -> usize {
        let len = b.data.len();
        self.seen.borrow_mut().push(b);
        len
    }
}

fn name() -> GroupName {
    GroupName::new("chunking").expect("valid name")
}

async fn member(cluster: &SimCluster, node: u32) -> (SimProcess, Group) {
    member_with(cluster, node, GroupConfig::default()).await
}

async fn member_with(cluster: &SimCluster, node: u32, config: GroupConfig) -> (SimProcess, Group) {
    let process = cluster.process(NodeId(node)).expect("node up");
    let conn = process.join(&name()).expect("join");
    let group = Group::start(conn, config).await.expect("start");
    (process, group)
}

/// A window of `pieces` multicasts, so that membership changes land
/// between the pieces of a message (with a wide window the sim takes every
/// piece of a message into the order at once).
fn narrow(pieces: usize) -> GroupConfig {
    GroupConfig {
        send_window: pieces,
        ..GroupConfig::default()
    }
}

/// Each sender (sender `s` is the `s`-th) tells the sink `count` blobs of
/// `size(s, i)` bytes, one after the other, stopping at the first failure.
fn streams(
    senders: &[(SimProcess, Group)],
    count: u32,
    size: impl Fn(u32, u32) -> usize + Copy + 'static,
) -> Vec<tokio::task::JoinHandle<Result<(), CallError>>> {
    senders
        .iter()
        .enumerate()
        .map(|(s, (_, g))| {
            let sink = g.remote::<Blob>("sink");
            let s = s as u32;
            actix::spawn(async move {
                for i in 0..count {
                    sink.tell(blob(s, i, size(s, i))).await?;
                }
                Ok(())
            })
        })
        .collect()
}

async fn host_sink(group: &Group) -> Seen {
    let seen = Seen::default();
    let sink = Sink { seen: seen.clone() }.start();
    group
        .register("sink", Handlers::new(sink).with::<Blob>())
        .await
        .expect("register");
    seen
}

async fn wait_for(seen: &Seen, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while seen.borrow().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            seen.borrow().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn a_large_message_arrives_whole_in_order_among_small_ones() {
    let cluster = SimCluster::builder(3).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let (_p2, sender) = member(&cluster, 2).await;
    let sink = sender.remote::<Blob>("sink");
    let sizes = [10, 100_000, 3, ATOMIC, 0, 20_000, 7];
    let pending: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| sink.tell(blob(2, i as u32, len)))
        .collect();
    for r in futures::future::join_all(pending).await {
        r.expect("sent");
    }
    // A reply that itself goes in pieces comes back whole too.
    let echoed = sink.send(blob(2, 99, 50_000)).await.expect("answered");
    assert_eq!(echoed, 50_000);
    wait_for(&seen, sizes.len() + 1, 10).await;
    let expected: Vec<Blob> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| blob(2, i as u32, len))
        .chain([blob(2, 99, 50_000)])
        .collect();
    assert_eq!(*seen.borrow(), expected);
    let m = sender.metrics();
    assert!(
        m.chunks_sent >= (100_000 + 20_000 + 50_000) / ATOMIC as u64,
        "{m:?}"
    );
    assert_eq!(host.metrics().chunked_delivered, 4, "{:?}", host.metrics());
    assert_eq!(host.metrics().dropped(), 0);
}

#[actix_rt::test]
async fn a_message_above_the_limit_is_refused_and_nothing_else_is_lost() {
    let cluster = SimCluster::builder(2).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let process = cluster.process(NodeId(2)).expect("up");
    let config = GroupConfig {
        max_message_size: 4096,
        ..GroupConfig::default()
    };
    let sender = Group::start(process.join(&name()).expect("join"), config)
        .await
        .expect("start");
    let sink = sender.remote::<Blob>("sink");
    let first = sink.tell(blob(2, 0, 3000));
    let too_big = sink.tell(blob(2, 1, 5000));
    let last = sink.tell(blob(2, 2, 10));
    first.await.expect("fits");
    match too_big.await {
        Err(CallError::Codec(WireError::TooLarge { .. })) => {}
        other => panic!("expected a size error, got {other:?}"),
    }
    assert!(matches!(
        sink.try_tell(&blob(2, 1, 5000)),
        Err(CallError::Codec(WireError::TooLarge { .. }))
    ));
    last.await.expect("fits");
    wait_for(&seen, 2, 10).await;
    assert_eq!(*seen.borrow(), vec![blob(2, 0, 3000), blob(2, 2, 10)]);
}

/// Three senders stream messages of every size to one sink while other
/// members join, leave and are killed: the sink gets each sender's
/// messages whole, once, in order.
#[actix_rt::test]
async fn messages_in_pieces_keep_flowing_while_members_come_and_go() {
    let cluster = SimCluster::builder(3).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let mut senders = Vec::new();
    for s in 0..3u32 {
        senders.push(member_with(&cluster, 1 + s % 3, narrow(3)).await);
    }
    const PER_SENDER: u32 = 150;
    let sizes = |s: u32, i: u32| ((i * 7919 + s * 104_729) % 20_000) as usize;
    let streams = streams(&senders, PER_SENDER, sizes);
    // Churn: members join, leave and crash while the streams run. The
    // senders are paused meanwhile (their sends so far stay in the order,
    // their deliveries wait), so the confchgs fall between the pieces of the
    // messages they are sending, not only between messages. Joins cut the
    // messages under way (sent again whole); leaves and kills do not.
    let mut churn = 0;
    while seen.borrow().len() < (3 * PER_SENDER) as usize && churn < 60 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        for (p, _) in &senders {
            cluster.pause_process(p.member()).expect("paused");
        }
        // Paused senders still multicast a window of pieces; the join
        // lands behind them.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (process, group) = member(&cluster, 1 + churn % 3).await;
        if churn % 2 == 0 {
            group.leave().await.expect("left");
        } else {
            process.kill().expect("killed");
        }
        for (p, _) in &senders {
            cluster.resume_process(p.member()).expect("resumed");
        }
        churn += 1;
    }
    for stream in streams {
        stream.await.expect("stream ended").expect("sent");
    }
    wait_for(&seen, (3 * PER_SENDER) as usize, 30).await;
    for s in 0..3u32 {
        let got: Vec<Blob> = seen
            .borrow()
            .iter()
            .filter(|b| b.sender == s)
            .cloned()
            .collect();
        let want: Vec<Blob> = (0..PER_SENDER).map(|i| blob(s, i, sizes(s, i))).collect();
        assert_eq!(got, want, "sender {s}: whole, once, in order");
    }
    assert_eq!(seen.borrow().len(), (3 * PER_SENDER) as usize);
    let resent: u64 = senders
        .iter()
        .map(|(_, g)| g.metrics().chunked_resent)
        .sum();
    let stray = host.metrics().chunks_stray;
    println!("churn {churn}, messages sent again {resent}, stray pieces at the host {stray}");
    assert!(
        resent > 0 && stray > 0,
        "no membership change cut through a message"
    );
    assert_eq!(host.metrics().dropped(), 0);
}

/// Pieces forged on a raw connection: a piece with no start, and pieces
/// that do not add up, are dropped and counted; good pieces after them
/// still make a message.
#[actix_rt::test]
async fn stray_and_broken_pieces_are_dropped_and_counted() {
    let cluster = SimCluster::builder(2).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let raw_process = cluster.process(NodeId(2)).expect("up");
    let mut raw = raw_process.join(&name()).expect("join");
    // Let the raw member's join settle before forging.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let codec = Codec::new(16 << 20);
    let head = |id, index, count, total| ChunkHead {
        id,
        index,
        count,
        total,
    };
    let before = host.metrics();
    raw.mcast(&codec.encode_chunk(head(1, 1, 2, 10), b"tail"))
        .expect("sent");
    raw.mcast(&codec.encode_chunk(head(2, 0, 2, 3), b"ab"))
        .expect("sent");
    raw.mcast(&codec.encode_chunk(head(2, 1, 2, 3), b"cd"))
        .expect("sent");
    raw.mcast(&codec.encode_chunk(head(3, 5, 2, 3), b"x"))
        .expect("sent");
    // Then a well-formed request in two pieces.
    let sender_conn = cluster
        .process(NodeId(2))
        .expect("up")
        .join(&name())
        .expect("join");
    let sender = Group::start(sender_conn, GroupConfig::default())
        .await
        .expect("start");
    sender
        .remote::<Blob>("sink")
        .tell(blob(7, 0, 700))
        .await
        .expect("sent");
    wait_for(&seen, 1, 10).await;
    assert_eq!(*seen.borrow(), vec![blob(7, 0, 700)]);
    let after = host.metrics();
    assert_eq!(after.chunks_stray - before.chunks_stray, 1, "{after:?}");
    assert_eq!(
        after.dropped_malformed - before.dropped_malformed,
        2,
        "{after:?}"
    );
    assert_eq!(after.chunked_delivered - before.chunked_delivered, 1);
}

/// A group state larger than one multicast reaches a joiner in pieces:
/// state-transfer messages go ahead of the queue, and never between the
/// pieces of a message under way.
#[actix_rt::test]
async fn a_large_group_state_reaches_a_joiner_in_pieces() {
    let cluster = SimCluster::builder(3).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    for i in 0..60 {
        let sink = Sink {
            seen: Seen::default(),
        }
        .start();
        host.register(
            &format!("a-rather-long-service-name-{i:03}"),
            Handlers::new(sink).with::<Blob>(),
        )
        .await
        .expect("register");
    }
    // A message in pieces is under way from another member while the
    // joiner asks for the state.
    let (_p2, sender) = member_with(&cluster, 2, narrow(2)).await;
    let big = sender.remote::<Blob>("sink").tell(blob(2, 0, 30_000));
    let (_p3, joiner) = member(&cluster, 3).await;
    big.await.expect("sent");
    let names = joiner.names().await.expect("names");
    assert_eq!(names.len(), 61, "{names:?}");
    assert!(
        host.metrics().chunks_sent > 0,
        "the state went in pieces: {:?}",
        host.metrics()
    );
    wait_for(&seen, 1, 10).await;
    assert_eq!(*seen.borrow(), vec![blob(2, 0, 30_000)]);
}

/// Leaving waits for a message in pieces to be delivered whole.
#[actix_rt::test]
async fn leaving_waits_for_a_message_in_pieces() {
    let cluster = SimCluster::builder(2).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let (_p2, sender) = member_with(&cluster, 2, narrow(2)).await;
    let told = sender.remote::<Blob>("sink").tell(blob(2, 0, 40_000));
    sender.leave().await.expect("left");
    told.await.expect("sent before leaving");
    wait_for(&seen, 1, 10).await;
    assert_eq!(*seen.borrow(), vec![blob(2, 0, 40_000)]);
}

/// Seeded schedules: two senders stream messages of every size (most in
/// pieces) to a sink while other members join, leave and are killed and
/// the nodes are partitioned and healed. Across partitions a sink may miss
/// what was sent on the other side, but it never gets a message twice, out
/// of its sender's order, or altered; and once the cluster is whole and
/// quiet, each sender's last message arrives. `CHUNK_SEEDS=n` runs n seeds
/// (default 12), `CHUNK_SEED=s` only seed s.
#[actix_rt::test]
async fn pieces_under_seeded_partitions_and_churn_keep_order_and_integrity() {
    use actix_cpg::transport::sim::SimRng;
    let seeds: Vec<u64> = match std::env::var("CHUNK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let n = std::env::var("CHUNK_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        let cluster = SimCluster::builder(3).max_message_size(ATOMIC).build();
        let (_p1, host) = member(&cluster, 1).await;
        let seen = host_sink(&host).await;
        let mut senders = Vec::new();
        for node in [2, 3] {
            senders.push(member_with(&cluster, node, narrow(3)).await);
        }
        const PER_SENDER: u32 = 30;
        let size = move |s: u32, i: u32| {
            let mut rng = SimRng::new(seed ^ (u64::from(s) << 32) ^ u64::from(i));
            rng.below(6000) as usize
        };
        let streams = streams(&senders, PER_SENDER, size);
        let mut rng = SimRng::new(seed);
        let mut extras = Vec::new();
        let mut schedule = Vec::new();
        for _ in 0..25 {
            match rng.below(5) {
                0 => {
                    let node = 1 + rng.below(3) as u32;
                    if let Ok(process) = cluster.process(NodeId(node)) {
                        if let Ok(conn) = process.join(&name()) {
                            schedule.push(format!("join on node {node}"));
                            extras.push((process, conn));
                        }
                    }
                }
                1 if !extras.is_empty() => {
                    let (process, conn) = extras.remove(rng.below(extras.len() as u64) as usize);
                    if rng.chance(50) {
                        schedule.push("leave".into());
                        let mut conn = conn;
                        let _ = conn.leave();
                    } else {
                        schedule.push("kill".into());
                        let _ = process.kill();
                    }
                }
                2 => {
                    let alone = 1 + rng.below(3) as u32;
                    let rest: Vec<NodeId> = (1..=3).filter(|n| *n != alone).map(NodeId).collect();
                    schedule.push(format!("partition node {alone} off"));
                    let _ = cluster.partition(&[&[NodeId(alone)], &rest]);
                }
                3 => {
                    schedule.push("heal".into());
                    cluster.heal();
                }
                _ => {
                    // Hold a sender's deliveries a moment, so the next
                    // change lands between its pieces.
                    let (p, _) = &senders[rng.below(2) as usize];
                    schedule.push(format!("pause {}", p.member()));
                    let _ = cluster.pause_process(p.member());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let _ = cluster.resume_process(p.member());
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
        }
        cluster.heal();
        for stream in streams {
            // A tell fails only if its sender's group closed; the last
            // tells below say whether it did.
            let _ = stream.await.expect("stream ended");
        }
        // Quiet and whole: one more message from each sender must arrive.
        for (s, (_, g)) in senders.iter().enumerate() {
            g.remote::<Blob>("sink")
                .tell(blob(s as u32, PER_SENDER, 4000))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: last tell: {e}; {schedule:?}"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = {
                let got = seen.borrow();
                (0..2u32).all(|s| got.iter().any(|b| b.sender == s && b.seq == PER_SENDER))
            };
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: the last messages did not arrive; schedule {schedule:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for s in 0..2u32 {
            let got: Vec<Blob> = seen
                .borrow()
                .iter()
                .filter(|b| b.sender == s)
                .cloned()
                .collect();
            for pair in got.windows(2) {
                assert!(
                    pair[0].seq < pair[1].seq,
                    "seed {seed}: sender {s} delivered {} then {}; schedule {schedule:?}",
                    pair[0].seq,
                    pair[1].seq
                );
            }
            for b in &got {
                let len = if b.seq == PER_SENDER {
                    4000
                } else {
                    size(s, b.seq)
                };
                assert_eq!(
                    *b,
                    blob(s, b.seq, len),
                    "seed {seed}: altered; {schedule:?}"
                );
            }
        }
        assert_eq!(host.metrics().dropped(), 0, "seed {seed}");
        for (_, conn) in extras {
            let mut conn = conn;
            let _ = conn.leave();
        }
    }
}

/// A member leaving or crashing between the pieces of a message costs the
/// others nothing: every member that stays has the same pieces, so nothing
/// is sent again.
#[actix_rt::test]
async fn members_leaving_between_pieces_do_not_make_a_message_go_again() {
    let cluster = SimCluster::builder(3).max_message_size(ATOMIC).build();
    let (_p1, host) = member(&cluster, 1).await;
    let seen = host_sink(&host).await;
    let (p2, sender) = member_with(&cluster, 2, narrow(2)).await;
    let (_p3a, leaver) = member(&cluster, 3).await;
    let (p3b, _crasher) = member(&cluster, 3).await;
    cluster.pause_process(p2.member()).expect("paused");
    let told = sender.remote::<Blob>("sink").tell(blob(2, 0, 20_000));
    tokio::time::sleep(Duration::from_millis(2)).await;
    leaver.leave().await.expect("left");
    p3b.kill().expect("killed");
    cluster.resume_process(p2.member()).expect("resumed");
    told.await.expect("sent");
    wait_for(&seen, 1, 10).await;
    assert_eq!(*seen.borrow(), vec![blob(2, 0, 20_000)]);
    assert_eq!(sender.metrics().chunked_resent, 0, "{:?}", sender.metrics());
    assert_eq!(host.metrics().chunks_stray, 0, "{:?}", host.metrics());
}
