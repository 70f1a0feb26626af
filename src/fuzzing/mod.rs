//! The harness behind the coverage-guided fuzz targets in `fuzz/` (cargo
//! feature `fuzzing`; not a supported API, hidden from the docs).
//!
//! Every target is one function here taking arbitrary bytes, so the
//! libFuzzer targets stay one line each and the same functions run as
//! ordinary tests on stable (`tests.rs`). A function panics on a broken
//! property; anything else (a malformed message, a skipped op) is a normal
//! outcome.
//!
//! ```text
//!  fuzz input ─► Stream::decode ─► ops ─► Membership (CPG's rules) ─┐
//!                                                                   ▼
//!             ┌─────────── the same event, in the same order ───────────┐
//!             ▼                                                         ▼
//!   Subject(member 0): wire decode ─► core        Subject(member 1): ─► core
//!             │ own multicasts wait in an outbox; an `echo` op            │
//!             │ delivers one to both, as the ring would                   │
//!             └────────────── after each op: agree(a, b), bounds ─────────┘
//! ```
//!
//! Everything the harness needs from a core's internals goes through
//! `Subject` and the three `fuzz_access` lists (`group`, `replicated`,
//! `election`), so a change of a core touches its `Subject` and nothing
//! else.

mod stream;
mod subjects;
#[cfg(test)]
mod tests;

pub use stream::{
    Op, Stream, JOIN, JOIN_NODE_UP, LEAVE, LEAVE_NODE_DOWN, LEAVE_PROC_DOWN, POOL, WRAP_KINDS,
};

use std::collections::BTreeMap;

use crate::group::fuzz_access::{Reassembly, Request, RequestRef};
use crate::record::{Recorded, Recording};
use crate::transport::{Member, MemberChange, QuorumState, Reason, RingId, TransportEvent};
use crate::wire::{Codec, Kind, HEADER_LEN};
use stream::Membership;
use subjects::{ElectionSubject, GroupSubject, ReplicaSubject, Subject};

/// The size limit of the codecs under test: small enough that a forged
/// length at the limit costs little, large enough for chunked messages.
pub const LIMIT: usize = 1 << 20;

/// The cap on what a replica or an election member holds while it waits:
/// small, so a stream of a few hundred operations can reach it.
pub const MAX_HELD: usize = 256;

/// Most ops a stream runs: bounds the time of one input.
const MAX_OPS: usize = 4_096;

/// What a stream did to a pair of cores, for tests that want to see that
/// an input went somewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Ops that took effect (skipped ones not counted).
    pub applied: usize,
    /// Deliveries the subject accepted (decoded and handed to the core).
    pub accepted: usize,
    /// Whether both cores held the group's state at the end (group:
    /// synced; replicated: installed and holding; election: installed).
    pub holding: bool,
    /// Linearizable reads the two cores answered (replicated, with flag
    /// bit 3).
    pub reads_answered: usize,
}

/// Frame, batch and chunk decoders on arbitrary bytes. The first two bytes
/// pick the codec's limit, so the limit checks are reached with small
/// inputs; the rest is one delivered message.
pub fn wire(data: &[u8]) {
    let (limit, bytes) = match data.split_first_chunk::<2>() {
        Some((l, rest)) => (u16::from_le_bytes(*l) as usize * 16 + HEADER_LEN, rest),
        None => (LIMIT, data),
    };
    let codec = Codec::new(limit);
    let Ok(frame) = codec.decode_frame(bytes) else {
        return;
    };
    assert!(bytes.len() <= limit, "a frame over the limit decoded");
    assert_eq!(frame.body.len() + HEADER_LEN, bytes.len());
    match frame.kind {
        Kind::Batch => {
            if let Ok(parts) = codec.split_batch(frame.body) {
                let framed: usize = parts.iter().map(|p| p.len() + 4).sum();
                assert_eq!(framed, frame.body.len(), "a batch's parts cover its body");
                for part in parts {
                    assert!(part.get(5) != Some(&(Kind::Batch as u8)));
                    assert!(part.get(5) != Some(&(Kind::Chunk as u8)));
                    let _ = codec.decode_frame(part);
                }
            }
        }
        Kind::Chunk => {
            if let Ok((head, piece)) = codec.decode_chunk(frame.body) {
                assert!(head.index < head.count);
                assert!(head.total as usize <= limit);
                assert!(piece.len() as u64 <= head.total);
                // Re-encoding gives the same body: the head has one form.
                // (The header's two reserved bytes are not read.)
                assert_eq!(
                    codec.encode_chunk(head, piece)[HEADER_LEN..],
                    bytes[HEADER_LEN..]
                );
                let mut pieces = Reassembly::default();
                let _ = pieces.accept(Member::new(1, 1), head, piece);
                let (_, held) = pieces.buffered();
                assert!(held <= limit, "a piece held more than its message");
            }
        }
        Kind::Compressed => {
            if let Ok(opened) = codec.decompress(frame.body) {
                assert!(opened.len() <= limit, "opened past the limit");
                // What it opens into is read like a delivery of its own.
                let mut pieces = Reassembly::default();
                let _ = crate::group::fuzz_access::receive(
                    &codec,
                    &mut pieces,
                    Member::new(1, 1),
                    &opened,
                );
            }
        }
        _ => {}
    }
}

/// Every message kind's body on arbitrary bytes: the first byte picks the
/// type, the rest is its body. Whatever decodes must re-encode and decode
/// to the same value, and a request's hand-written reader must agree with
/// serde's.
pub fn bodies(data: &[u8]) {
    use crate::election::fuzz_access::ElectionMessage;
    use crate::group::fuzz_access::{
        Announce, RegistryOp, Reply, Snapshot, SupervisionMsg, SyncRequest,
    };
    use crate::replicated::fuzz_access::ReplicaMessage;

    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let codec = Codec::new(LIMIT);
    match pick % 12 {
        0 => round_trip::<RegistryOp>(&codec, Kind::Registry, body),
        1 => {
            round_trip::<Request>(&codec, Kind::Request, body);
            request_readers_agree(&codec, body);
        }
        2 => round_trip::<Reply>(&codec, Kind::Reply, body),
        3 => round_trip::<Snapshot>(&codec, Kind::Snapshot, body),
        4 => round_trip::<SyncRequest>(&codec, Kind::SyncRequest, body),
        5 => round_trip::<SupervisionMsg>(&codec, Kind::Supervision, body),
        6 => round_trip::<ReplicaMessage>(&codec, Kind::Replicated, body),
        7 => round_trip::<ElectionMessage>(&codec, Kind::Election, body),
        8 => round_trip::<crate::kv::KvCommand>(&codec, Kind::Request, body),
        9 => {
            // A kv snapshot as a joiner restores it.
            let _ = <crate::kv::KvStore as crate::StateMachine>::restore(body);
        }
        10 => round_trip::<Recorded>(&codec, Kind::Request, body),
        _ => round_trip::<Announce>(&codec, Kind::Announce, body),
    }
}

fn round_trip<T>(codec: &Codec, kind: Kind, body: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(value) = codec.decode_body::<T>(body) else {
        return;
    };
    let again = codec
        .encode(kind, &value)
        .unwrap_or_else(|e| panic!("{value:?} decoded but does not encode: {e}"));
    let back: T = codec
        .decode_body(&again[HEADER_LEN..])
        .unwrap_or_else(|e| panic!("{value:?} re-encoded does not decode: {e}"));
    assert_eq!(back, value, "a decoded value changed through the codec");
}

fn request_readers_agree(codec: &Codec, body: &[u8]) {
    let serde = codec.decode_body::<Request>(body);
    let parsed = RequestRef::parse(body);
    match (serde, parsed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.id, b.id);
            assert_eq!(a.target, b.target);
            assert_eq!(a.type_tag.as_bytes(), b.type_tag);
            assert_eq!(a.want_reply, b.want_reply);
            assert_eq!(a.fence, b.fence);
            assert_eq!(a.payload, b.payload);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("the request readers disagree: serde {a:?}, parse {b:?}"),
    }
}

/// The group core (registry, calls, state hand-over, chunks, batches, and
/// the supervision engine inside it) fed a stream.
pub fn group(data: &[u8]) -> Outcome {
    drive::<GroupSubject>(&Stream::decode(data), None)
}

/// The same core, with every wrapped delivery a supervision fact, so the
/// mutations land on the supervision engine.
pub fn supervisor(data: &[u8]) -> Outcome {
    drive::<GroupSubject>(&Stream::decode(data), Some(Kind::Supervision))
}

/// A replica of the key-value map fed a stream.
pub fn replicated(data: &[u8]) -> Outcome {
    drive::<ReplicaSubject>(&Stream::decode(data), None)
}

/// The election core fed a stream.
pub fn election(data: &[u8]) -> Outcome {
    drive::<ElectionSubject>(&Stream::decode(data), None)
}

/// Runs one stream through two cores of kind `S`, checking after every op
/// that they agree and stay within their bounds.
fn drive<S: Subject>(stream: &Stream, force_kind: Option<Kind>) -> Outcome {
    let flags = stream.flags;
    let mut subjects = [
        S::new(stream.pool[0], flags, 0),
        S::new(stream.pool[1], flags, u64::from(flags >> 2)),
    ];
    let (mut membership, first) = Membership::first(stream);
    let mut clock: u64 = 0;
    let mut ring_seq: u64 = 0;
    let mut fed = 0usize;
    let mut outcome = Outcome::default();
    for s in &mut subjects {
        s.confchg(&first.view, &first.joined, &first.left, clock);
    }
    for op in stream.ops.iter().take(MAX_OPS) {
        if subjects.iter().any(|s| s.stopped()) {
            assert!(
                subjects.iter().all(|s| s.stopped()),
                "one core stopped and the other did not"
            );
            break;
        }
        match op {
            Op::Deliver {
                sender,
                wrap,
                bytes,
            } => {
                let from = membership.sender(*sender);
                let wrapped = wrap_bytes(*wrap, force_kind, bytes);
                if let Some(who) = stream.pool[..2].iter().position(|m| *m == from) {
                    if !S::self_may_send(&wrapped) {
                        // Only this member's core makes such a message: its
                        // oldest pending one goes out instead.
                        let Some(own) = subjects[who].take_outgoing(0) else {
                            continue;
                        };
                        fed += own.len();
                        for s in &mut subjects {
                            s.deliver(from, &own);
                        }
                        outcome.applied += 1;
                        let [a, b] = &subjects;
                        S::agree(a, b);
                        continue;
                    }
                }
                fed += wrapped.len();
                let accepted: Vec<bool> = subjects
                    .iter_mut()
                    .map(|s| s.deliver(from, &wrapped))
                    .collect();
                assert_eq!(accepted[0], accepted[1], "the cores decode alike");
                outcome.accepted += usize::from(accepted[0]);
            }
            Op::ConfChg { actions } => {
                let Some(change) = membership.confchg(actions) else {
                    continue;
                };
                for s in &mut subjects {
                    s.confchg(&change.view, &change.joined, &change.left, clock);
                }
            }
            Op::Quorum {
                quorate,
                ring_step,
                nodes,
            } => {
                ring_seq += u64::from(*ring_step);
                let q = QuorumState {
                    quorate: *quorate,
                    ring_id: RingId {
                        seq: ring_seq,
                        nodeid: stream.pool[0].node,
                    },
                    nodes: membership.nodes(*nodes),
                };
                for s in &mut subjects {
                    s.quorum(&q);
                }
            }
            Op::Tick { ms } => {
                clock += u64::from(*ms);
                continue;
            }
            Op::Echo { core, index } => {
                let who = usize::from(core % 2);
                let Some(bytes) = subjects[who].take_outgoing(*index) else {
                    continue;
                };
                let from = stream.pool[who];
                fed += bytes.len();
                for s in &mut subjects {
                    s.deliver(from, &bytes);
                }
            }
        }
        outcome.applied += 1;
        let [a, b] = &subjects;
        S::agree(a, b);
        for s in &subjects {
            s.check_bounds(fed);
        }
    }
    let [a, b] = &subjects;
    S::agree(a, b);
    for s in &subjects {
        s.check_final_bounds(fed);
    }
    outcome.holding = a.holding() && b.holding();
    outcome.reads_answered = a.reads_answered() + b.reads_answered();
    outcome
}

fn wrap_bytes(wrap: u8, force_kind: Option<Kind>, bytes: &[u8]) -> Vec<u8> {
    let pick = wrap % 16;
    if pick == 0 || pick as usize > WRAP_KINDS.len() {
        return bytes.to_vec();
    }
    let kind = force_kind.unwrap_or(WRAP_KINDS[pick as usize - 1]);
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
    out.extend_from_slice(&crate::wire::MAGIC);
    out.extend_from_slice(&[crate::wire::PROTOCOL_VERSION, kind as u8, 0, 0]);
    out.extend_from_slice(bytes);
    out
}

/// A recorded stream as a fuzz input (see [`stream_from_events`]).
pub fn stream_from_recording(recording: &Recording, extra: &[Op]) -> Stream {
    let events: Vec<TransportEvent> = recording
        .entries
        .iter()
        .map(|e| match e.clone() {
            Recorded::Deliver { from, bytes } => TransportEvent::Deliver { from, bytes },
            Recorded::ConfChg {
                members,
                joined,
                left,
            } => TransportEvent::ConfChg {
                members,
                joined,
                left,
            },
            Recorded::Quorum(q) => TransportEvent::Quorum(q),
        })
        .collect();
    stream_from_events(recording.local, &events, extra)
}

/// A member's ordered events as a fuzz input: `local` becomes driven
/// member 0, another member of its first view (or a made-up one) member
/// 1, and up to four more members keep their identities, so member ids
/// inside the recorded bytes still name them. Events about members beyond
/// those, or about member 1 leaving, are left out; `extra` ops are
/// appended (e.g. echoes, so the driven cores' own messages go round).
///
/// A made-up member 1 changes every raw view, and an election's info
/// names the raw view it answers (a hash of it): recorded election infos
/// are re-tagged to the view they answer in the stream, so the driven
/// cores can count them and install.
pub fn stream_from_events(local: Member, events: &[TransportEvent], extra: &[Op]) -> Stream {
    let mut seen: Vec<Member> = Vec::new();
    let mut first_view: Option<Vec<Member>> = None;
    for event in events {
        if let TransportEvent::ConfChg { members, .. } = event {
            first_view.get_or_insert_with(|| members.clone());
            seen.extend(members.iter().filter(|m| **m != local));
        }
    }
    let first_view = first_view.unwrap_or_default();
    // Member 1 must start as member 0 does: joining in the same first
    // confchg. A recorded member that did is kept (its own protocol
    // messages then come from its core, see `drive`); if the recorder
    // joined a group already there, member 1 is made up, and its core's
    // messages go round after each confchg.
    let first_joined: Vec<Member> = events
        .iter()
        .find_map(|e| match e {
            TransportEvent::ConfChg { joined, .. } => {
                Some(joined.iter().map(|c| c.member).collect())
            }
            _ => None,
        })
        .unwrap_or_default();
    let recorded_partner = first_view
        .iter()
        .copied()
        .find(|m| *m != local && first_joined.contains(m));
    let partner = recorded_partner.unwrap_or_else(|| {
        let mut made_up = Member::new(local.node.0.wrapping_add(100), 1);
        while first_view.contains(&made_up) || seen.contains(&made_up) {
            made_up.pid += 1;
        }
        made_up
    });
    // After a confchg a core has up to three messages of its own to send
    // (an announcement, a mark, then an info or a request once the mark
    // is back).
    let partner_echoes = [
        Op::Echo { core: 1, index: 0 },
        Op::Echo { core: 1, index: 0 },
        Op::Echo { core: 1, index: 0 },
    ];
    let mut pool: Vec<Member> = vec![local, partner];
    for m in seen {
        if pool.len() < POOL && !pool.contains(&m) {
            pool.push(m);
        }
    }
    let mut n = 1;
    while pool.len() < POOL {
        let filler = Member::new(0xffff_0000 + n, n);
        n += 1;
        if !pool.contains(&filler) {
            pool.push(filler);
        }
    }
    let pool: [Member; POOL] = pool.try_into().expect("six members");
    let index = |m: &Member| pool.iter().position(|p| p == m);

    // Election view tags: recorded raw view's -> the stream's.
    let mut retag: BTreeMap<u64, u64> = BTreeMap::new();
    let note_view = |retag: &mut BTreeMap<u64, u64>, members: &[Member]| {
        if recorded_partner.is_some() {
            return;
        }
        let mut recorded = members.to_vec();
        recorded.sort();
        let mut ours: Vec<Member> = recorded
            .iter()
            .copied()
            .filter(|m| index(m).is_some())
            .chain([partner])
            .collect();
        ours.sort();
        retag.insert(
            crate::election::fuzz_access::view_tag(&recorded),
            crate::election::fuzz_access::view_tag(&ours),
        );
    };
    let mut first = 0u8;
    let mut only_driven = false;
    let mut ops = Vec::new();
    let mut started = false;
    let mut ring_seq = 0u64;
    for event in events {
        match event {
            TransportEvent::ConfChg {
                members, joined, ..
            } if !started => {
                started = true;
                note_view(&mut retag, members);
                for i in members.iter().filter_map(index).filter(|&i| i >= 2) {
                    first |= 1 << (i - 2);
                }
                // The recorder joined a group that was already there.
                only_driven = members.len() > 1 && joined.iter().all(|c| c.member == local);
                if recorded_partner.is_none() {
                    ops.extend_from_slice(&partner_echoes);
                }
            }
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => {
                note_view(&mut retag, members);
                let mut actions = [0u8; POOL - 2];
                let changes = joined.iter().map(|c| (c, false));
                for (MemberChange { member, reason }, leaving) in
                    changes.chain(left.iter().map(|c| (c, true)))
                {
                    let Some(i) = index(member).filter(|&i| i >= 2) else {
                        continue;
                    };
                    actions[i - 2] = match (leaving, reason) {
                        (false, Reason::NodeUp) => JOIN_NODE_UP,
                        (false, _) => JOIN,
                        (true, Reason::Leave) => LEAVE,
                        (true, Reason::NodeDown) => LEAVE_NODE_DOWN,
                        (true, _) => LEAVE_PROC_DOWN,
                    };
                }
                if actions != [0; POOL - 2] {
                    ops.push(Op::ConfChg { actions });
                    if recorded_partner.is_none() {
                        ops.extend_from_slice(&partner_echoes);
                    }
                }
            }
            TransportEvent::Deliver { from, bytes } if started => {
                if let Some(i) = index(from) {
                    ops.push(Op::Deliver {
                        sender: i as u8,
                        wrap: 0,
                        bytes: retagged(bytes, &retag).unwrap_or_else(|| bytes.clone()),
                    });
                }
            }
            TransportEvent::Quorum(q) if started => {
                let step = q.ring_id.seq.saturating_sub(ring_seq).min(255);
                ring_seq += step;
                let nodes = (0..POOL)
                    .filter(|&i| q.nodes.contains(&pool[i].node))
                    .fold(0u8, |mask, i| mask | 1 << i);
                ops.push(Op::Quorum {
                    quorate: q.quorate,
                    ring_step: step as u8,
                    nodes,
                });
            }
            _ => {}
        }
    }
    ops.extend_from_slice(extra);
    Stream {
        pool,
        first,
        flags: u8::from(only_driven),
        ops,
    }
}

/// `bytes` with the tag of the election info they carry replaced as
/// `retag` says; `None` if they carry no such info.
fn retagged(bytes: &[u8], retag: &BTreeMap<u64, u64>) -> Option<Vec<u8>> {
    use crate::election::fuzz_access::ElectionMessage;
    let codec = Codec::new(LIMIT);
    let frame = codec.decode_frame(bytes).ok()?;
    if frame.kind != Kind::Election {
        return None;
    }
    let ElectionMessage::Info(mut info) = codec.decode_body(frame.body).ok()? else {
        return None;
    };
    info.tag = *retag.get(&info.tag)?;
    codec
        .encode(Kind::Election, &ElectionMessage::Info(info))
        .ok()
}

/// How many ops of each kind a stream holds: a quick look at a corpus
/// file (`examples/fuzz_corpus.rs` prints it).
pub fn summary(stream: &Stream) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for op in &stream.ops {
        let key = match op {
            Op::Deliver { .. } => "deliver",
            Op::ConfChg { .. } => "confchg",
            Op::Quorum { .. } => "quorum",
            Op::Tick { .. } => "tick",
            Op::Echo { .. } => "echo",
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}
