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
use actix_cpg::transport::{QuorumState, RingId};
use actix_cpg::wire::{Codec, Kind};
use actix_cpg::{Epoch, Member, NodeId, PrimaryEpoch, StateId};
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
        kinds: Vec<&'a str>,
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

/// The announcement that makes a process a member of an unkeyed group:
/// the protocol versions it speaks, and that it holds no state.
pub fn group_announce() -> Vec<u8> {
    #[derive(Serialize)]
    struct Announce {
        min_version: u8,
        max_version: u8,
        /// The role's variant index: 0, a participant.
        role: u32,
        synced: bool,
    }
    let version = actix_cpg::wire::PROTOCOL_VERSION;
    let body = Announce {
        min_version: version,
        max_version: version,
        role: 0,
        synced: false,
    };
    codec().encode(Kind::Announce, &body).expect("encode")
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
                        kinds: Vec::new(),
                    },
                )
                .expect("encode")
        })
        .expect("thread")
        .join()
        .expect("encoded")
}

/// A member from its `node/pid` form (`node2/1234`), as the agents print it.
pub fn member(text: &str) -> Member {
    let (node, pid) = text.split_once('/').expect("node/pid");
    Member::new(
        node.trim_start_matches("node").parse().expect("node id"),
        pid.parse().expect("pid"),
    )
}

/// The members of a raw agent's `CONFCHG members=a,b,... joined=...` line.
pub fn confchg_members(line: &str) -> Vec<Member> {
    line.split(' ')
        .find_map(|w| w.strip_prefix("members="))
        .map(|list| {
            list.split(',')
                .filter(|m| !m.is_empty())
                .map(member)
                .collect()
        })
        .unwrap_or_default()
}

// ---- replicated state (envelope kind `Replicated`) -------------------------

#[derive(Serialize)]
struct PrimaryRecord {
    epoch: PrimaryEpoch,
    members: Vec<Member>,
}

/// What a replica's info announces: the versions it speaks and its role
/// (the variant index of `Role`: 0, a participant).
#[derive(Serialize, Clone, Copy)]
struct ReplicaAnnouncement {
    min_version: u8,
    max_version: u8,
    role: u32,
}

impl ReplicaAnnouncement {
    fn this_build() -> Self {
        ReplicaAnnouncement {
            min_version: actix_cpg::wire::PROTOCOL_VERSION,
            max_version: actix_cpg::wire::PROTOCOL_VERSION,
            role: 0,
        }
    }
}

#[derive(Serialize)]
struct ReplicaInfo {
    announcement: ReplicaAnnouncement,
    fact: Option<QuorumState>,
    known: Option<PrimaryRecord>,
    state: StateId,
    founder: bool,
    view: u64,
    round: u32,
    members: Option<Vec<(Member, ReplicaAnnouncement)>>,
    merged: Vec<Member>,
    mark: u64,
}

#[derive(Serialize)]
struct CommandMsg {
    id: u64,
    payload: Vec<u8>,
}

#[derive(Serialize)]
struct Chunk {
    state: StateId,
    index: u32,
    total: u32,
    bytes: Vec<u8>,
}

/// Variant order as on the wire.
#[derive(Serialize)]
enum ReplicaMessage {
    Info(ReplicaInfo),
    Fact(QuorumState),
    Command(CommandMsg),
    Ack(u64),
    Chunk(Chunk),
    NoRoster { view: u64, mark: u64 },
    Mark(u64),
    Check(u64),
    Digest(DigestMsg),
}

#[derive(Serialize)]
struct DigestMsg {
    at: StateId,
    digest: Option<[u8; 32]>,
}

fn fnv(prev: u64, m: Member, id: u64) -> u64 {
    let mut h = prev ^ 0xcbf2_9ce4_8422_2325;
    for b in m
        .node
        .0
        .to_le_bytes()
        .iter()
        .chain(m.pid.to_le_bytes().iter())
        .chain(id.to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The tag a replica gives a raw view (FNV-1a chained over the sorted
/// members), so a forged info is of the current view, not merely stale.
pub fn replicated_view_tag(raw: &[Member]) -> u64 {
    let mut sorted = raw.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.iter().fold(0x9e37_79b9, |h, m| fnv(h, *m, 0))
}

/// A state far beyond any real one: epoch `2^40.2^40`.
pub fn huge_state() -> StateId {
    let epoch = PrimaryEpoch {
        ring_seq: 1 << 40,
        term: 1 << 40,
    };
    StateId {
        epoch,
        applied: 1 << 40,
        chain: 7,
        genesis: 7,
    }
}

/// The mark that ties a process's next info to this incarnation of the view
/// (what a replica multicasts after each confchg, before its info).
pub fn replicated_mark(mark: u64) -> Vec<u8> {
    codec()
        .encode(Kind::Replicated, &ReplicaMessage::Mark(mark))
        .expect("encode")
}

/// An info from `me` for the raw view `raw` (round 0) claiming `state` and a
/// last primary component of `{me}` at its epoch: consistent with itself,
/// current, a founder, with a roster naming only `me`. It counts after
/// `replicated_mark(mark)` from the same process, in the same view.
pub fn replicated_info(raw: &[Member], me: Member, state: StateId, mark: u64) -> Vec<u8> {
    let info = ReplicaInfo {
        announcement: ReplicaAnnouncement::this_build(),
        fact: Some(QuorumState {
            quorate: true,
            ring_id: RingId {
                seq: state.epoch.ring_seq,
                nodeid: me.node,
            },
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
        }),
        known: Some(PrimaryRecord {
            epoch: state.epoch,
            members: vec![me],
        }),
        state,
        founder: true,
        view: replicated_view_tag(raw),
        round: 0,
        members: Some(vec![(me, ReplicaAnnouncement::this_build())]),
        merged: Vec::new(),
        mark,
    };
    codec()
        .encode(Kind::Replicated, &ReplicaMessage::Info(info))
        .expect("encode")
}

/// The whole snapshot of `state` in one chunk.
pub fn replicated_chunk(state: StateId, bytes: Vec<u8>) -> Vec<u8> {
    codec()
        .encode(
            Kind::Replicated,
            &ReplicaMessage::Chunk(Chunk {
                state,
                index: 0,
                total: 1,
                bytes,
            }),
        )
        .expect("encode")
}

/// A command carrying `payload` (an encoded state-machine command).
/// A divergence check (protocol version 3 on), written at `version`.
pub fn replicated_check(number: u64, version: u8) -> Vec<u8> {
    codec()
        .at_version(version)
        .encode(Kind::Replicated, &ReplicaMessage::Check(number))
        .expect("encode")
}

/// A participant's digest of its state at `at` (protocol version 3 on).
pub fn replicated_digest(at: StateId, digest: [u8; 32]) -> Vec<u8> {
    codec()
        .encode(
            Kind::Replicated,
            &ReplicaMessage::Digest(DigestMsg {
                at,
                digest: Some(digest),
            }),
        )
        .expect("encode")
}

pub fn replicated_command(id: u64, payload: Vec<u8>) -> Vec<u8> {
    codec()
        .encode(
            Kind::Replicated,
            &ReplicaMessage::Command(CommandMsg { id, payload }),
        )
        .expect("encode")
}

// ---- elections (envelope kind `Election`) ----------------------------------

// Mirrors of the election messages, public for tests that forge their own.

#[derive(Serialize, Clone, Copy)]
pub struct Announcement {
    pub min_version: u8,
    pub max_version: u8,
    /// The role's variant index: 0, a participant.
    pub role: u32,
}

impl Announcement {
    /// A participant speaking only the current protocol version.
    pub fn participant() -> Self {
        Announcement {
            min_version: actix_cpg::wire::PROTOCOL_VERSION,
            max_version: actix_cpg::wire::PROTOCOL_VERSION,
            role: 0,
        }
    }
}

/// `members` as an election info lists them: each with its announcement
/// (here a participant of the current version).
pub fn election_listed(members: impl IntoIterator<Item = Member>) -> Vec<(Member, Announcement)> {
    members
        .into_iter()
        .map(|m| (m, Announcement::participant()))
        .collect()
}

#[derive(Serialize)]
pub struct ElectionState {
    pub candidates: Vec<(Member, u64)>,
    pub leader: Option<Member>,
    pub epoch: Option<Epoch>,
}

#[derive(Serialize)]
pub struct GroupState {
    pub next_stamp: u64,
    pub founded: u64,
    pub elections: Vec<(String, ElectionState)>,
}

#[derive(Serialize)]
pub struct ElectionInfo {
    pub tag: u64,
    pub clock: u64,
    pub fact: Option<QuorumState>,
    pub state: Option<GroupState>,
    pub announced: Option<Vec<(Member, Announcement)>>,
    pub unannounced: Vec<Member>,
    pub merging: Vec<Member>,
    pub mark: u64,
}

/// Variant order as on the wire.
#[derive(Serialize)]
pub enum ElectionMessage {
    Info(ElectionInfo),
    Fact(QuorumState),
    Stand(String),
    Withdraw(String),
    Announce(Announcement),
    Mark(u64),
}

/// An election message as a member would multicast it.
pub fn election(msg: &ElectionMessage) -> Vec<u8> {
    codec().encode(Kind::Election, msg).expect("encode")
}

/// The tag election members put on infos for a raw view: FNV-1a over the
/// sorted members (node, then pid, little-endian).
pub fn election_view_tag(raw: &[Member]) -> u64 {
    let mut sorted = raw.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.iter().fold(0xcbf2_9ce4_8422_2325, |mut h, m| {
        for b in m
            .node
            .0
            .to_le_bytes()
            .iter()
            .chain(m.pid.to_le_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    })
}

/// A quorum fact of ring `seq`.
pub fn quorum_state(seq: u64, quorate: bool) -> QuorumState {
    QuorumState {
        quorate,
        ring_id: RingId {
            seq,
            nodeid: NodeId(1),
        },
        nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
    }
}

/// A candidacy of the sender in `name`.
pub fn election_stand(name: &str) -> Vec<u8> {
    election(&ElectionMessage::Stand(name.to_owned()))
}

/// A withdrawal from `name`.
pub fn election_withdraw(name: &str) -> Vec<u8> {
    election(&ElectionMessage::Withdraw(name.to_owned()))
}

/// A quorum fact of the election protocol.
pub fn election_fact(seq: u64, quorate: bool) -> Vec<u8> {
    election(&ElectionMessage::Fact(quorum_state(seq, quorate)))
}

/// An announcement of the current protocol version.
pub fn election_announce() -> Vec<u8> {
    election(&ElectionMessage::Announce(Announcement::participant()))
}

/// An info from `me` for the raw view `raw` naming `me` leader of the
/// group-wide election `election` with `epoch`, a fact of ring
/// `epoch.ring_seq`, founded at `clock` and announcing only `me`.
pub fn election_info(
    raw: &[Member],
    me: Member,
    election_name: &str,
    epoch: Epoch,
    clock: u64,
) -> Vec<u8> {
    election(&ElectionMessage::Info(ElectionInfo {
        tag: election_view_tag(raw),
        clock,
        fact: Some(quorum_state(epoch.ring_seq, true)),
        state: Some(GroupState {
            next_stamp: 0,
            founded: clock.saturating_sub(1),
            elections: vec![(
                election_name.to_owned(),
                ElectionState {
                    candidates: vec![(me, 0)],
                    leader: Some(me),
                    epoch: Some(epoch),
                },
            )],
        }),
        announced: Some(election_listed([me])),
        unannounced: Vec::new(),
        merging: Vec::new(),
        mark: 1,
    }))
}

/// The mark an election member multicasts after each confchg, before its
/// info; an info counts only after its sender's mark of the same view
/// (`election_info` carries mark 1).
pub fn election_mark(mark: u64) -> Vec<u8> {
    election(&ElectionMessage::Mark(mark))
}
