//! A `wire::Payload` in a remote message, end to end on the sim backend:
//! the actor gets the bytes that were sent, for a message large enough to
//! travel in pieces and for one that travels alone; and a 64 KiB payload
//! reaches the handler as a slice of the buffer the message was delivered
//! in, not as a copy of it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::wire::Payload;
use actix_cpg::{Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage, Transport};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "usize")]
struct Upload {
    seq: u32,
    data: Payload,
}

impl RemoteMessage for Upload {
    const TYPE_TAG: &'static str = "test.payload.Upload";
}

type Seen = Rc<RefCell<Vec<Upload>>>;

struct Store {
    seen: Seen,
}

impl Actor for Store {
    type Context = Context<Self>;
}

impl Handler<Upload> for Store {
    type Result = usize;
    fn handle(&mut self, u: Upload, _: &mut Context<Self>) -> usize {
        let len = u.data.len();
        self.seen.borrow_mut().push(u);
        len
    }
}

/// A group `name` on nodes 1 and 2 of `cluster`, default configuration:
/// each member with its process (kept alive with it).
async fn two_members(cluster: &SimCluster, name: &str) -> Vec<(SimProcess, Group)> {
    let name = GroupName::new(name).expect("valid name");
    let mut groups = Vec::new();
    for node in [1, 2] {
        let process = cluster.process(NodeId(node)).expect("node up");
        let conn = process.join(&name).expect("join");
        let group = Group::start(conn, GroupConfig::default())
            .await
            .expect("start");
        groups.push((process, group));
    }
    groups
}

fn bytes_of(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seq) as u8)
        .collect()
}

#[actix_rt::test]
async fn an_actor_gets_the_bytes_of_a_one_mebibyte_payload_and_of_a_small_one() {
    // An atomic size of 64 KiB: the 1 MiB upload travels in pieces, the
    // others alone.
    let cluster = SimCluster::builder(2).max_message_size(64 << 10).build();
    let groups = two_members(&cluster, "payload").await;
    let seen = Seen::default();
    let store = Store { seen: seen.clone() }.start();
    groups[0]
        .1
        .register("store", Handlers::new(store).with::<Upload>())
        .await
        .expect("register");

    let remote = groups[1].1.remote::<Upload>("store");
    let sizes = [1 << 20, 100, 40 << 10];
    for (seq, &len) in sizes.iter().enumerate() {
        let sent = Upload {
            seq: seq as u32,
            data: Payload::from(bytes_of(seq as u32, len)),
        };
        let got = remote.send(sent).await.expect("delivered");
        assert_eq!(got, len);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.borrow().len() < sizes.len() {
        assert!(Instant::now() < deadline, "not every upload arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (seq, upload) in seen.borrow().iter().enumerate() {
        assert_eq!(upload.seq, seq as u32);
        assert_eq!(&upload.data[..], &bytes_of(seq as u32, sizes[seq])[..]);
    }
}

/// Two payloads in one message: decoded from the delivered buffer, both
/// are slices of it, so `tail` starts right behind `data` and the
/// length prefix bincode writes for it (a `u64`, fixint encoding).
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
struct Framed {
    data: Payload,
    tail: Payload,
}

impl RemoteMessage for Framed {
    const TYPE_TAG: &'static str = "test.payload.Framed";
}

/// What the handler saw of one `Framed`: where its two payloads lie, and
/// whether `data` held the bytes that were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    data_at: usize,
    data_len: usize,
    tail_at: usize,
    intact: bool,
}

struct Probe {
    expected: Vec<Vec<u8>>,
    seen: Rc<RefCell<Vec<Layout>>>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Framed> for Probe {
    type Result = ();
    fn handle(&mut self, f: Framed, _: &mut Context<Self>) {
        let n = self.seen.borrow().len();
        let intact = self.expected.get(n).is_some_and(|e| f.data[..] == e[..]);
        self.seen.borrow_mut().push(Layout {
            data_at: f.data.as_ptr() as usize,
            data_len: f.data.len(),
            tail_at: f.tail.as_ptr() as usize,
            intact,
        });
    }
}

/// `len` bytes that LZ4 cannot shrink.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[actix_rt::test]
async fn a_64_kib_payload_is_a_slice_of_the_delivered_buffer_not_a_copy() {
    // One incompressible payload (delivered as it was sent) and one that
    // compresses (above `compress_above`, so it travels compressed and is
    // opened into a buffer of its own, which is then the delivery).
    let sent = [noise(64 << 10), bytes_of(7, 64 << 10)];
    let cluster = SimCluster::builder(2).build();
    let groups = two_members(&cluster, "payload-shared").await;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let probe = Probe {
        expected: sent.to_vec(),
        seen: seen.clone(),
    }
    .start();
    groups[0]
        .1
        .register("probe", Handlers::new(probe).with::<Framed>())
        .await
        .expect("register");

    let remote = groups[1].1.remote::<Framed>("probe");
    for data in &sent {
        remote
            .send(Framed {
                data: Payload::from(data.clone()),
                tail: Payload::from(vec![0xa5; 16]),
            })
            .await
            .expect("delivered");
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.borrow().len() < sent.len() {
        assert!(Instant::now() < deadline, "not every message arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, layout) in seen.borrow().iter().enumerate() {
        assert!(layout.intact, "message {i}: the bytes differ");
        assert_eq!(layout.data_len, 64 << 10, "message {i}");
        // Copied out one by one, the two payloads would be two heap blocks:
        // the allocator puts a block's header between them (16 bytes or
        // more behind a 64 KiB block), never exactly the 8 of the prefix.
        assert_eq!(
            layout.tail_at,
            layout.data_at + layout.data_len + 8,
            "message {i}: the payloads are not slices of one delivered buffer"
        );
    }
}
