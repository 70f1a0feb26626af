//! Compression of large multicasts, on the sim backend: agreed through the
//! members' announcements (protocol version 5, `wire::COMPRESSION_VERSION`).
//!
//! Invariants: while any member speaks only version 4, nothing goes
//! compressed and every message arrives; once every member speaks 5, a
//! compressible message above `GroupConfig::compress_above` goes
//! compressed and arrives as it was sent, and an incompressible one goes as
//! it is; a forged compressed frame that would open past the size limit
//! (a decompression bomb) is dropped and counted, and the group goes on.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::transport::Connection as _;
use actix_cpg::wire::{
    Codec, Kind, Versions, COMPRESSION_VERSION, HEADER_LEN, MIN_PROTOCOL_VERSION,
};
use actix_cpg::{Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage, Transport};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
struct Doc {
    seq: u32,
    #[serde(with = "actix_cpg::wire::bytes")]
    body: Vec<u8>,
}

impl RemoteMessage for Doc {
    const TYPE_TAG: &'static str = "test.compression.Doc";
}

/// About `len` bytes of JSON-like text.
fn json_like(seq: u32, len: usize) -> Doc {
    let mut body = Vec::with_capacity(len + 64);
    let mut i = 0;
    while body.len() < len {
        body.extend_from_slice(
            format!(r#"{{"seq":{seq},"item":{i},"name":"item-{i}","ok":true}},"#).as_bytes(),
        );
        i += 1;
    }
    body.truncate(len);
    Doc { seq, body }
}

/// `len` bytes that do not compress.
fn noise(seq: u32, len: usize) -> Doc {
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ u64::from(seq);
    let body = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    Doc { seq, body }
}

type Seen = Rc<RefCell<Vec<Doc>>>;

struct Sink(Seen);

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Doc> for Sink {
    type Result = ();
    fn handle(&mut self, d: Doc, _: &mut Context<Self>) {
        self.0.borrow_mut().push(d);
    }
}

const OLD: Versions = Versions {
    min: MIN_PROTOCOL_VERSION,
    max: COMPRESSION_VERSION - 1,
};

fn name() -> GroupName {
    GroupName::new("compression").expect("valid name")
}

async fn member(cluster: &SimCluster, node: u32, versions: Versions) -> (SimProcess, Group) {
    let process = cluster.process(NodeId(node)).expect("node up");
    let conn = process.join(&name()).expect("join");
    let config = GroupConfig {
        protocol_versions: versions,
        ..GroupConfig::default()
    };
    let group = Group::start(conn, config).await.expect("start");
    (process, group)
}

async fn host_sink(group: &Group) -> Seen {
    let seen = Seen::default();
    group
        .register(
            "sink",
            Handlers::new(Sink(seen.clone()).start()).with::<Doc>(),
        )
        .await
        .expect("register");
    seen
}

async fn wait_for(seen: &Seen, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
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
async fn a_group_with_a_member_of_version_4_sends_everything_uncompressed() {
    let cluster = SimCluster::builder(3).build();
    // The old build founds the group: the group speaks its version, and
    // newer builds join at it (a group never moves down to admit one).
    let (_p1, old) = member(&cluster, 1, OLD).await;
    let (_p2, host) = member(&cluster, 2, Versions::this_build()).await;
    let seen = host_sink(&host).await;
    let (_p3, new) = member(&cluster, 3, Versions::this_build()).await;
    let docs: Vec<Doc> = (0..4).map(|i| json_like(i, 64 << 10)).collect();
    for (i, doc) in docs.iter().enumerate() {
        let from = if i % 2 == 0 { &new } else { &old };
        from.remote::<Doc>("sink")
            .tell(doc.clone())
            .await
            .expect("sent");
    }
    wait_for(&seen, docs.len()).await;
    let mut got = seen.borrow().clone();
    got.sort_by_key(|d| d.seq);
    assert_eq!(got, docs);
    for g in [&host, &old, &new] {
        let m = g.metrics();
        assert_eq!(m.protocol_version, COMPRESSION_VERSION - 1);
        assert_eq!((m.compressed_sent, m.compressed_delivered), (0, 0), "{m:?}");
        assert_eq!(m.dropped(), 0, "{m:?}");
    }
}

#[actix_rt::test]
async fn a_group_of_this_build_compresses_what_shrinks_above_the_threshold() {
    let cluster = SimCluster::builder(2).build();
    let (_p1, host) = member(&cluster, 1, Versions::this_build()).await;
    let seen = host_sink(&host).await;
    let (_p2, sender) = member(&cluster, 2, Versions::this_build()).await;
    let sink = sender.remote::<Doc>("sink");
    let threshold = GroupConfig::default()
        .compress_above
        .expect("on by default");
    let docs = vec![
        json_like(0, 64 << 10),
        noise(1, 64 << 10),
        json_like(2, threshold / 4),
        // In pieces (above the 256 KiB chunk size), each compressed.
        json_like(3, 600 << 10),
    ];
    for doc in &docs {
        sink.tell(doc.clone()).await.expect("sent");
    }
    wait_for(&seen, docs.len()).await;
    assert_eq!(*seen.borrow(), docs);
    let (s, h) = (sender.metrics(), host.metrics());
    assert!(s.protocol_version >= COMPRESSION_VERSION, "{s:?}");
    // The first JSON-like document, and the pieces of the last.
    assert!(s.compressed_sent >= 4, "{s:?}");
    assert!(s.compressed_saved > (64 << 10) / 2, "{s:?}");
    assert_eq!(h.compressed_delivered, s.compressed_sent, "{h:?}");
    assert_eq!((s.dropped(), h.dropped()), (0, 0));

    // Off by configuration: the same document goes as it is.
    let (_p3, plain) = {
        let process = cluster.process(NodeId(2)).expect("node up");
        let conn = process.join(&name()).expect("join");
        let config = GroupConfig {
            compress_above: None,
            ..GroupConfig::default()
        };
        (process, Group::start(conn, config).await.expect("start"))
    };
    let before = plain.metrics().compressed_sent;
    plain
        .remote::<Doc>("sink")
        .tell(json_like(4, 64 << 10))
        .await
        .expect("sent");
    wait_for(&seen, docs.len() + 1).await;
    assert_eq!(plain.metrics().compressed_sent, before);
}

#[actix_rt::test]
async fn a_compressed_frame_that_would_open_past_the_limit_is_dropped_and_counted() {
    let cluster = SimCluster::builder(2).build();
    let (_p1, host) = member(&cluster, 1, Versions::this_build()).await;
    let seen = host_sink(&host).await;
    let (_p2, sender) = member(&cluster, 2, Versions::this_build()).await;
    // A member's raw connection forges a frame of a few hundred bytes that
    // claims to open into 1 GiB, far above the 16 MiB limit.
    let mut forger = cluster
        .process(NodeId(2))
        .expect("node up")
        .join(&name())
        .expect("join");
    let codec = Codec::new(16 << 20);
    let envelope = codec
        .encode(Kind::Request, &vec![0u8; 4096])
        .expect("encodes");
    let mut packed = Vec::new();
    assert!(codec.compress_into(&envelope, &mut packed));
    packed[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let before = host.metrics().dropped_malformed;
    forger.mcast(&packed).expect("multicast");
    // The group goes on: a real message after it arrives.
    let doc = json_like(0, 32 << 10);
    sender
        .remote::<Doc>("sink")
        .tell(doc.clone())
        .await
        .expect("sent");
    wait_for(&seen, 1).await;
    assert_eq!(*seen.borrow(), vec![doc]);
    assert_eq!(host.metrics().dropped_malformed, before + 1);
}
