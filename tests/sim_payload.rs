//! A `wire::Payload` in a remote message, end to end on the sim backend:
//! the actor gets the bytes that were sent, for a message large enough to
//! travel in pieces and for one that travels alone.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::transport::sim::SimCluster;
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
    let name = GroupName::new("payload").expect("valid name");
    let mut groups = Vec::new();
    for node in [1, 2] {
        let process = cluster.process(NodeId(node)).expect("node up");
        let conn = process.join(&name).expect("join");
        let group = Group::start(conn, GroupConfig::default())
            .await
            .expect("start");
        groups.push((process, group));
    }
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
