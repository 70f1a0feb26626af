#![allow(dead_code)]
//! Well-formed forgeries of the group protocol's messages, as a plain CPG
//! client that has read the wire format would write them.
//!
//! The message bodies are private types of the library; these mirrors have
//! the same serde layout (bincode lays out a struct as its fields in order
//! and an enum as a `u32` variant index then the variant's fields), so the
//! bytes are exactly what a member would send. An outsider needs nothing
//! from the library to produce them, which is the point.

use actix_cpg::supervisor::{
    ChildPath, ChildSpec, Fingerprint, IncarnationId, Strategy, SupervisorSpec, TreeSpec,
};
use actix_cpg::wire::{Codec, Kind};
use actix_cpg::Member;
use serde::Serialize;

fn codec() -> Codec {
    Codec::new(1 << 20)
}

#[derive(Serialize)]
enum RegistryOp<'a> {
    Register { name: &'a str, token: u64 },
}

#[derive(Serialize)]
struct Reply {
    id: u64,
    to: Member,
    outcome: Result<Vec<u8>, ()>,
}

#[derive(Serialize)]
struct SyncRequest {
    nonce: u64,
}

#[derive(Serialize)]
enum SupervisionMsg<'a> {
    TreeStarted {
        name: &'a str,
        fingerprint: Fingerprint,
        spec: &'a TreeSpec,
    },
    ChildExited {
        path: ChildPath,
        incarnation: IncarnationId,
        normal: bool,
    },
    Tick {
        now_ms: u64,
    },
    Quorum {
        quorate: bool,
        nodes: Vec<u32>,
    },
}

/// `Register name` for the sender.
pub fn register(name: &str) -> Vec<u8> {
    codec()
        .encode(Kind::Registry, &RegistryOp::Register { name, token: 1 })
        .expect("encode")
}

/// A successful reply to call `id` of `to`, carrying `payload` as the
/// encoded result.
pub fn reply(id: u64, to: Member, payload: Vec<u8>) -> Vec<u8> {
    codec()
        .encode(
            Kind::Reply,
            &Reply {
                id,
                to,
                outcome: Ok(payload),
            },
        )
        .expect("encode")
}

/// A request for the group state (a member that answers multicasts all of
/// it).
pub fn sync_request(nonce: u64) -> Vec<u8> {
    codec()
        .encode(Kind::SyncRequest, &SyncRequest { nonce })
        .expect("encode")
}

/// A quorum fact for the supervision engine.
pub fn quorum(quorate: bool) -> Vec<u8> {
    codec()
        .encode(
            Kind::Supervision,
            &SupervisionMsg::Quorum {
                quorate,
                nodes: Vec::new(),
            },
        )
        .expect("encode")
}

/// A clock tick for the supervision engine.
pub fn tick(now_ms: u64) -> Vec<u8> {
    codec()
        .encode(Kind::Supervision, &SupervisionMsg::Tick { now_ms })
        .expect("encode")
}

/// A crash report for an incarnation of a child of `tree`.
pub fn child_exited(tree: &str, ids: &[&str], incarnation: u64) -> Vec<u8> {
    codec()
        .encode(
            Kind::Supervision,
            &SupervisionMsg::ChildExited {
                path: ChildPath {
                    tree: tree.to_owned(),
                    ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                },
                incarnation: IncarnationId(incarnation),
                normal: false,
            },
        )
        .expect("encode")
}

/// A tree whose spec nests `levels` supervisors deep. Building, encoding
/// and dropping the spec each recurse once per level, so this runs on a
/// thread with a large stack.
pub fn deep_tree(levels: usize) -> Vec<u8> {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let mut spec =
                SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("w", "w"));
            for i in 0..levels {
                spec = SupervisorSpec::new(Strategy::OneForOne)
                    .child(ChildSpec::supervisor(format!("s{i}"), spec));
            }
            let spec = TreeSpec::new(spec);
            codec()
                .encode(
                    Kind::Supervision,
                    &SupervisionMsg::TreeStarted {
                        name: "deep",
                        fingerprint: spec.fingerprint(),
                        spec: &spec,
                    },
                )
                .expect("encode")
        })
        .expect("thread")
        .join()
        .expect("encoded")
}
