//! Bodies of the replicated-state protocol (envelope kind
//! [`crate::wire::Kind::Replicated`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.
//!
//! # Versions
//!
//! A [`ReplicaMessage`] is one envelope; its body is the variant index (a
//! `u32`) then the variant's fields. Three variants are what a process
//! sends before it knows the version the group speaks: [`ReplicaMessage::Mark`]
//! (index 6), [`ReplicaMessage::Info`] (index 0, its announcement) and
//! [`ReplicaMessage::NoRoster`] (index 5). Their **layout is shared** by
//! every version: the index, and the fields of the variant and of every
//! type inside it ([`Info`], [`PrimaryRecord`], [`StateId`],
//! [`PrimaryEpoch`], `QuorumState`, `Member`, `Announcement`), never change;
//! a newer version may only append fields at the end of the body. So
//! [`ReplicaMessage::decode`] reads them in an envelope of any version
//! (what trails them at a version it does not read is ignored), and
//! members of different builds judge the same announcements alike.
//!
//! Every other variant is read only at a version this build reads, in the
//! layout of the envelope's version (the core then counts it only if every
//! member speaks that version), and is written in the layout of the
//! version the writer's codec writes. The one that differs so far:
//! `Command` at [`NEXT_PROTOCOL_VERSION`], a version only tests speak.
//!
//! [`ReplicaMessage::Check`] (index 7) and [`ReplicaMessage::Digest`]
//! (index 8) exist from version [`DIGEST_VERSION`] on, and
//! [`ReplicaMessage::Barrier`] (index 9) from [`READ_VERSION`] on: in an
//! envelope of an earlier version they are malformed (no build of that
//! version sends them).

use serde::{Deserialize, Serialize};

use crate::roster::Announcement;
use crate::transport::{Member, QuorumState};
use crate::wire::{Codec, Frame, Kind, WireError, NEXT_PROTOCOL_VERSION};

/// The first protocol version whose replicas compare digests of their
/// state (two replica messages of its own: a check, and each
/// participant's digest).
pub const DIGEST_VERSION: u8 = 3;

/// The first protocol version whose unkeyed replica groups take a claim
/// of a newer primary component that no member can check: when no
/// participant's last primary component names the participant itself, as
/// when every member came back from its disk after the whole group
/// stopped (rule 6 of the core). Before it, such a claim was refused, and
/// a group restarted all at once waited, without a primary, for the one
/// that died last. No layout changes with it.
pub const RECOVERY_VERSION: u8 = 4;

/// The first protocol version whose state transfer may carry, instead of
/// a snapshot, the commands every receiver lacks (when each holds a prefix
/// of the sender's history and they are fewer bytes). The transfer's last
/// byte says which (0: a snapshot, 1: the commands); before it, a
/// transfer is a snapshot and has no such byte.
pub const SUFFIX_VERSION: u8 = 4;

/// The first protocol version whose replicas all read a multicast that
/// carries several replica messages (a batch, in the group layer's
/// framing); a replica packs them only once its group speaks it
/// ([`super::ReplicaConfig::batch_messages`]). No layout changes with it.
pub const BATCH_VERSION: u8 = 4;

/// The first protocol version whose replicas answer linearizable reads
/// without logging them ([`super::Replica::read`]): a reader multicasts a
/// barrier message and reads its own state where the barrier
/// comes back (rule 12 of the core). Only the reader acts on it; a
/// member of an earlier build would drop it as malformed, so a replica
/// sends one only once its group speaks this version. No other layout
/// changes with it.
pub const READ_VERSION: u8 = 6;

/// The last byte of a transfer from [`SUFFIX_VERSION`] on: the bytes
/// before it are a snapshot, as [`super::StateMachine::encode`] made it.
pub(crate) const TRANSFER_SNAPSHOT: u8 = 0;
/// The last byte of a transfer from [`SUFFIX_VERSION`] on: the bytes
/// before it are a `Vec<SuffixEntry>`, the commands that take each
/// receiver to the state the install chose.
pub(crate) const TRANSFER_SUFFIX: u8 = 1;

/// The bytes of a transfer written at protocol `version`: the snapshot's
/// (as [`super::StateMachine::encode`] made them), or the commands of
/// `suffix` if given and smaller; from [`SUFFIX_VERSION`] on, followed by
/// the byte that says which. Before it, always the snapshot.
pub(crate) fn transfer_body(
    version: u8,
    mut snapshot: Vec<u8>,
    suffix: Option<&[SuffixEntry]>,
) -> Vec<u8> {
    if version < SUFFIX_VERSION {
        return snapshot;
    }
    if let Some(suffix) = suffix {
        let mut commands = super::encode_snapshot(suffix);
        if commands.len() < snapshot.len() {
            commands.push(TRANSFER_SUFFIX);
            return commands;
        }
    }
    snapshot.push(TRANSFER_SNAPSHOT);
    snapshot
}

/// One command of a suffix transfer: who sent it, its id, its payload as
/// multicast, and the id of the sender's state right after it (which the
/// receiver checks its own against).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SuffixEntry {
    pub from: Member,
    pub id: u64,
    #[serde(with = "crate::wire::bytes")]
    pub payload: Vec<u8>,
    pub after: StateId,
}

/// A digest of a replica's state ([`super::StateMachine::digest`]).
pub type StateDigest = [u8; 32];

/// Identifies a primary component of a replicated group: it only grows
/// along the history of the group's state. `ring_seq` is the highest totem
/// ring sequence the members reported when the component formed (never
/// lower than the previous component's); `term` counts components.
/// Ordered by `ring_seq`, then `term`. Every replica's announcement carries
/// it: its layout is the same in every protocol version.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PrimaryEpoch {
    /// Highest totem ring sequence known when the component formed.
    pub ring_seq: u64,
    /// How many primary components came before this one, plus one.
    pub term: u64,
}

impl std::fmt::Display for PrimaryEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.ring_seq, self.term)
    }
}

/// What a replica's state is: two replicas with equal ids hold equal
/// states. Ordered by `epoch`, then `applied`, `chain` and `genesis`; the
/// greatest id in a view is the state the view keeps. Every replica's
/// announcement carries it: its layout is the same in every protocol
/// version.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StateId {
    /// The last primary component this state was part of.
    pub epoch: PrimaryEpoch,
    /// Commands applied since the group was founded.
    pub applied: u64,
    /// A running hash of the ids of those commands, in order: tells apart
    /// two states with the same count (after a partition).
    pub chain: u64,
    /// Names the founding of the group this state descends from (0 before
    /// the first primary component). Two states with different geneses
    /// share no history.
    pub genesis: u64,
}

/// The last primary component a member knows of, minus the members it saw
/// leave on purpose or die (`Leave`, `ProcDown`). Part of an [`Info`]: its
/// layout is the same in every protocol version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrimaryRecord {
    pub epoch: PrimaryEpoch,
    /// Sorted.
    pub members: Vec<Member>,
}

/// What every member multicasts right after each confchg; the view is
/// installed once every member's info has been delivered. It is also the
/// sender's announcement. Shared layout (module docs): read in an envelope
/// of any version; a newer version may append fields at its end only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Info {
    /// What the sender says of itself: the protocol versions it speaks
    /// (and its role). First, so that it stays where every build reads it.
    pub announcement: Announcement,
    /// The sender's latest quorum notification, if any.
    pub fact: Option<QuorumState>,
    /// The latest primary component the sender knows of.
    pub known: Option<PrimaryRecord>,
    /// The state the sender holds.
    pub state: StateId,
    /// Whether the sender may found a group (start a new history).
    pub founder: bool,
    /// Names the raw CPG view this info answers (a hash of its sorted
    /// members): an info delivered in another view is stale.
    pub view: u64,
    /// Which install round of that view it answers (0 after the confchg,
    /// one more after every late admission).
    pub round: u32,
    /// The announced members, with what each announced (versions, role),
    /// as the sender knew them right after the confchg (`None`: the sender
    /// did not know them, it was joining). A joiner, and both sides of a
    /// merge, learn the roster from it, and with it the group's version.
    pub members: Option<Vec<(Member, Announcement)>>,
    /// The processes the sender counts as mergers (in the view at a merge,
    /// not yet in an install); a learner takes them with the roster.
    pub merged: Vec<Member>,
    /// The sender's [`ReplicaMessage::Mark`] of this incarnation of the
    /// view, which it saw delivered before sending this info: an info
    /// counts only if that mark was delivered after the latest confchg.
    pub mark: u64,
    /// The replica whose data directory the sender took over: gone for
    /// sure (the directory is locked while a replica runs), and back as
    /// the sender. Written after the fields above from
    /// [`RECOVERY_VERSION`] on (an envelope of an earlier version has no
    /// room for it; an info without it is read as `None`).
    #[serde(skip)]
    pub succeeds: Option<Member>,
}

/// A client command; `id` is unique per sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommandMsg {
    pub id: u64,
    /// The command, encoded with [`crate::wire::Codec::encode_payload`].
    /// Coded as one block of bytes: the same bincode bytes as a sequence
    /// of `u8`, copied at once.
    #[serde(with = "crate::wire::bytes")]
    pub payload: Vec<u8>,
}

/// One piece of a snapshot sent to the members that need the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The state the snapshot captures.
    pub state: StateId,
    pub index: u32,
    pub total: u32,
    /// One block of bytes, as [`CommandMsg::payload`].
    #[serde(with = "crate::wire::bytes")]
    pub bytes: Vec<u8>,
}

/// A replica's answer to a divergence check: the digest of its state at
/// the check's point of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DigestMsg {
    /// The state the digest is of: the state every member held where the
    /// check was delivered.
    pub at: StateId,
    /// `None`: the state machine has no digest; the sender abstains.
    pub digest: Option<StateDigest>,
}

/// The body of every replicated-state message. The variant order is the
/// wire's: `Info`, `NoRoster` and `Mark` have a layout every version shares
/// (module docs); the others are laid out by the envelope's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ReplicaMessage {
    /// View installation: the sender's announcement, state and knowledge.
    /// Shared layout.
    Info(Info),
    /// The sender's quorum notification changed.
    Fact(QuorumState),
    /// A command to apply in the total order. At
    /// [`NEXT_PROTOCOL_VERSION`] its fields are laid out anew (see
    /// [`ReplicaMessage::encode`]).
    Command(CommandMsg),
    /// Safe delivery: the sender has applied this many commands.
    Ack(u64),
    /// State transfer.
    Chunk(Chunk),
    /// A process still learning the members found no process that knows
    /// them (its timer ran out). Delivered before any roster of the view,
    /// and after the sender's mark of this incarnation, it means nobody in
    /// it is announced. Shared layout.
    NoRoster {
        /// The view tag.
        view: u64,
        /// The sender's mark of this incarnation.
        mark: u64,
    },
    /// Multicast after every confchg that keeps the sender in the view,
    /// before its info: a number the sender never used before. The info
    /// follows once the mark came back with no confchg in between, so an
    /// info is tied to one incarnation of a raw view even when the same
    /// set of processes forms it again (rule 1). Shared layout.
    Mark(u64),
    /// Asks every participant for the digest of its state at the point
    /// where this is delivered (rule 11). The number names the request
    /// among its sender's, for logs. From [`DIGEST_VERSION`] on.
    Check(u64),
    /// A participant's digest at a check's point (rule 11). From
    /// [`DIGEST_VERSION`] on.
    Digest(DigestMsg),
    /// A linearizable read's barrier (rule 12): where it comes back to its
    /// sender, every command acknowledged to anyone before the read began
    /// has been delivered there. The number names the barrier among its
    /// sender's; every other process ignores it. From [`READ_VERSION`] on.
    Barrier(u64),
}

/// Variant indices of [`ReplicaMessage`] on the wire (bincode writes an
/// enum as its variant index, a `u32`, then the variant's fields).
const INFO: u32 = 0;
const COMMAND: u32 = 2;
const NO_ROSTER: u32 = 5;
const MARK: u32 = 6;
const CHECK: u32 = 7;
const DIGEST: u32 = 8;
const BARRIER: u32 = 9;

/// `Command` as [`NEXT_PROTOCOL_VERSION`] lays it out: the same command
/// with its fields in another order and one more, so tests show that
/// replicas read each version's shape and write the one the group speaks.
/// A decoder of the other shape would misread it. Written and read as the
/// pair (variant index, fields), which is how bincode writes the variant.
#[derive(Serialize, Deserialize)]
struct NextCommand<P> {
    /// Always 0: room a newer version would use.
    flags: u8,
    id: u64,
    payload: P,
}

impl ReplicaMessage {
    /// Whether every version lays this message out alike (module docs):
    /// what a process sends before it knows the group's version.
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        matches!(
            self,
            ReplicaMessage::Info(_) | ReplicaMessage::NoRoster { .. } | ReplicaMessage::Mark(_)
        )
    }

    /// The envelope of this message, in the layout of the version `codec`
    /// writes.
    pub(crate) fn encode(&self, codec: &Codec) -> Result<Vec<u8>, WireError> {
        match self {
            ReplicaMessage::Info(info) if codec.version() >= RECOVERY_VERSION => {
                codec.encode(Kind::Replicated, &(INFO, info, info.succeeds))
            }
            ReplicaMessage::Command(cmd) if codec.version() >= NEXT_PROTOCOL_VERSION => {
                let next = NextCommand {
                    flags: 0,
                    id: cmd.id,
                    payload: cmd.payload.as_slice(),
                };
                codec.encode(Kind::Replicated, &(COMMAND, next))
            }
            _ => codec.encode(Kind::Replicated, self),
        }
    }

    /// The message in `frame` (decoded with
    /// [`Codec::decode_frame_any_version`]), in the layout of the version
    /// its envelope names. At a version `codec` does not read, only the
    /// shared variants are read (their leading fields: a newer version may
    /// have appended more); anything else is
    /// [`WireError::UnsupportedVersion`].
    pub(crate) fn decode(codec: &Codec, frame: Frame<'_>) -> Result<ReplicaMessage, WireError> {
        if frame.kind != Kind::Replicated {
            return Err(WireError::UnknownKind(frame.kind as u8));
        }
        let index = frame
            .body
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b));
        if !codec.reads().contains(frame.version) {
            return match index {
                // A newer version keeps the successor right after the
                // shared fields, and may append more after it.
                Some(INFO) => match codec
                    .decode_body_prefix::<(u32, Info, Option<Member>)>(frame.body)
                {
                    Ok((_, info, succeeds)) => Ok(ReplicaMessage::Info(Info { succeeds, ..info })),
                    Err(_) => codec.decode_body_prefix(frame.body),
                },
                Some(NO_ROSTER | MARK) => codec.decode_body_prefix(frame.body),
                _ => Err(WireError::UnsupportedVersion(frame.version)),
            };
        }
        if frame.version >= RECOVERY_VERSION && index == Some(INFO) {
            // With the successor after the shared fields; a sender may
            // leave it out (the layout every version shares).
            if let Ok((_, info, succeeds)) =
                codec.decode_body::<(u32, Info, Option<Member>)>(frame.body)
            {
                return Ok(ReplicaMessage::Info(Info { succeeds, ..info }));
            }
        }
        if frame.version < DIGEST_VERSION && matches!(index, Some(CHECK | DIGEST)) {
            return Err(WireError::Malformed(format!(
                "a digest check in an envelope of version {} (they exist from version {DIGEST_VERSION})",
                frame.version
            )));
        }
        if frame.version < READ_VERSION && index == Some(BARRIER) {
            return Err(WireError::Malformed(format!(
                "a read barrier in an envelope of version {} (they exist from version {READ_VERSION})",
                frame.version
            )));
        }
        if frame.version >= NEXT_PROTOCOL_VERSION && index == Some(COMMAND) {
            let (_, next): (u32, NextCommand<Vec<u8>>) = codec.decode_body(frame.body)?;
            return Ok(ReplicaMessage::Command(CommandMsg {
                id: next.id,
                payload: next.payload,
            }));
        }
        codec.decode_body(frame.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{NodeId, RingId};
    use crate::wire::{Versions, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

    /// Reads and writes both versions, writing at `version`.
    fn both(version: u8) -> Codec {
        Codec::new(1 << 20)
            .reading(Versions {
                min: PROTOCOL_VERSION,
                max: NEXT_PROTOCOL_VERSION,
            })
            .at_version(version)
    }

    /// This build's default: reads and writes the current version only.
    fn old() -> Codec {
        Codec::new(1 << 20)
    }

    fn decode(codec: &Codec, bytes: &[u8]) -> Result<ReplicaMessage, WireError> {
        ReplicaMessage::decode(codec, codec.decode_frame_any_version(bytes)?)
    }

    fn info() -> Info {
        let id = StateId {
            epoch: PrimaryEpoch {
                ring_seq: 7,
                term: 2,
            },
            applied: 9,
            chain: 0xfeed,
            genesis: 3,
        };
        Info {
            announcement: Announcement::this_build(),
            fact: Some(QuorumState {
                quorate: true,
                ring_id: RingId {
                    seq: 7,
                    nodeid: NodeId(1),
                },
                nodes: vec![NodeId(1), NodeId(2)],
            }),
            known: Some(PrimaryRecord {
                epoch: id.epoch,
                members: vec![Member::new(1, 2)],
            }),
            state: id,
            founder: true,
            view: 11,
            round: 2,
            members: Some(vec![(Member::new(1, 2), Announcement::this_build())]),
            merged: vec![Member::new(3, 4)],
            mark: 5,
            succeeds: None,
        }
    }

    fn every_message() -> Vec<ReplicaMessage> {
        let info = info();
        vec![
            ReplicaMessage::Info(info.clone()),
            ReplicaMessage::Fact(info.fact.clone().expect("a fact")),
            ReplicaMessage::Command(CommandMsg {
                id: 3,
                payload: vec![1, 2, 3],
            }),
            ReplicaMessage::Ack(12),
            ReplicaMessage::NoRoster { view: 99, mark: 4 },
            ReplicaMessage::Mark(6),
            ReplicaMessage::Chunk(Chunk {
                state: info.state,
                index: 0,
                total: 1,
                bytes: vec![0; 10],
            }),
            ReplicaMessage::Check(8),
            ReplicaMessage::Digest(DigestMsg {
                at: info.state,
                digest: Some([7; 32]),
            }),
            ReplicaMessage::Digest(DigestMsg {
                at: info.state,
                digest: None,
            }),
            ReplicaMessage::Barrier(9),
        ]
    }

    #[test]
    fn an_info_names_its_predecessor_from_the_recovery_version_on() {
        let with = Info {
            succeeds: Some(Member::new(1, 77)),
            ..info()
        };
        let msg = ReplicaMessage::Info(with.clone());
        let current = msg.encode(&old()).expect("encodes");
        assert_eq!(current[4], PROTOCOL_VERSION);
        assert_eq!(decode(&old(), &current), Ok(msg.clone()));
        // The layout every version shares, in an envelope of this version
        // too (a sender that leaves it out): read without one.
        let shared = old().encode(Kind::Replicated, &msg).expect("encodes");
        assert_eq!(shared.len() + 9, current.len());
        let without = ReplicaMessage::Info(Info {
            succeeds: None,
            ..with.clone()
        });
        assert_eq!(decode(&old(), &shared), Ok(without.clone()));
        // Before the recovery version there is no room for it.
        let earlier = msg.encode(&both(RECOVERY_VERSION - 1)).expect("encodes");
        assert_eq!(earlier.len(), shared.len());
        assert_eq!(decode(&old(), &earlier), Ok(without));
        // Trailing bytes past it are malformed at a version this build
        // reads, and read as a newer version's at one it does not.
        let mut longer = current.clone();
        longer.push(0);
        assert!(decode(&old(), &longer).is_err());
        longer[4] = NEXT_PROTOCOL_VERSION;
        assert_eq!(decode(&old(), &longer), Ok(msg));
    }

    #[test]
    fn a_digest_check_exists_from_its_version_on() {
        let check = ReplicaMessage::Check(1);
        let digest = ReplicaMessage::Digest(DigestMsg {
            at: StateId::default(),
            digest: Some([1; 32]),
        });
        for msg in [check, digest] {
            let current = msg.encode(&old()).expect("encodes");
            assert_eq!(current[4], PROTOCOL_VERSION);
            assert_eq!(decode(&old(), &current), Ok(msg.clone()));
            // The same body in an envelope of version 2: no build of that
            // version sends it.
            let mut earlier = current.clone();
            earlier[4] = DIGEST_VERSION - 1;
            assert!(matches!(
                decode(&old(), &earlier),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_read_barrier_exists_from_its_version_on() {
        let barrier = ReplicaMessage::Barrier(7);
        let current = barrier.encode(&old()).expect("encodes");
        assert_eq!(current[4], PROTOCOL_VERSION);
        assert_eq!(decode(&old(), &current), Ok(barrier.clone()));
        // The same body in an envelope of the version before: no build of
        // that version sends it, and none of them would read it.
        for version in [MIN_PROTOCOL_VERSION, READ_VERSION - 1] {
            let mut earlier = current.clone();
            earlier[4] = version;
            assert!(matches!(
                decode(&old(), &earlier),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn every_message_round_trips_at_every_version() {
        for version in [PROTOCOL_VERSION, NEXT_PROTOCOL_VERSION] {
            let codec = both(version);
            for msg in every_message() {
                let bytes = msg.encode(&codec).expect("encodes");
                assert_eq!(bytes[4], version);
                assert_eq!(decode(&codec, &bytes), Ok(msg));
            }
        }
    }

    /// A command as builds before the payload was coded as bytes laid it
    /// out: the same fields, the payload a sequence of `u8`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SeqCommand {
        id: u64,
        payload: Vec<u8>,
    }

    /// A chunk as those builds laid it out.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SeqChunk {
        state: StateId,
        index: u32,
        total: u32,
        bytes: Vec<u8>,
    }

    /// The wire index of `Chunk`.
    const CHUNK: u32 = 4;

    #[test]
    fn payloads_coded_as_bytes_keep_the_bytes_of_a_sequence_both_ways() {
        let codec = old();
        let state = info().state;
        for len in [0usize, 1, 255, 4096] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let command = CommandMsg {
                id: 9,
                payload: bytes.clone(),
            };
            let seq = SeqCommand {
                id: 9,
                payload: bytes.clone(),
            };
            let before = codec
                .encode(Kind::Replicated, &(COMMAND, &seq))
                .expect("encodes");
            let now = ReplicaMessage::Command(command.clone())
                .encode(&codec)
                .expect("encodes");
            assert_eq!(now, before, "a command of {len} bytes");
            assert_eq!(
                decode(&codec, &before),
                Ok(ReplicaMessage::Command(command))
            );
            assert_eq!(
                codec.decode_body::<(u32, SeqCommand)>(&now[8..]),
                Ok((COMMAND, seq))
            );

            let chunk = Chunk {
                state,
                index: 2,
                total: 3,
                bytes: bytes.clone(),
            };
            let seq = SeqChunk {
                state,
                index: 2,
                total: 3,
                bytes,
            };
            let before = codec
                .encode(Kind::Replicated, &(CHUNK, &seq))
                .expect("encodes");
            let now = ReplicaMessage::Chunk(chunk.clone())
                .encode(&codec)
                .expect("encodes");
            assert_eq!(now, before, "a chunk of {len} bytes");
            assert_eq!(decode(&codec, &before), Ok(ReplicaMessage::Chunk(chunk)));
            assert_eq!(
                codec.decode_body::<(u32, SeqChunk)>(&now[8..]),
                Ok((CHUNK, seq))
            );
        }
    }

    #[test]
    fn a_payload_longer_than_its_bytes_is_malformed() {
        let codec = old();
        let mut bytes = ReplicaMessage::Command(CommandMsg {
            id: 1,
            payload: vec![1, 2, 3],
        })
        .encode(&codec)
        .expect("encodes");
        // The payload's length prefix (after header, index and id) claims
        // one byte more than follows.
        bytes[8 + 4 + 8] = 4;
        assert!(decode(&codec, &bytes).is_err());
        // And a prefix past the limit allocates nothing.
        bytes[8 + 4 + 8..8 + 4 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&codec, &bytes).is_err());
    }

    #[test]
    fn golden_bytes_of_an_ack() {
        let bytes = ReplicaMessage::Ack(5).encode(&old()).expect("encodes");
        // Header (kind 16), variant index 3 as u32, then the u64.
        assert_eq!(
            bytes,
            [
                &b"ACPG"[..],
                &[6, 16, 0, 0],
                &[3, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
    }

    #[test]
    fn golden_bytes_of_a_read_barrier() {
        let bytes = ReplicaMessage::Barrier(5).encode(&old()).expect("encodes");
        // Header (version 6, kind 16), variant index 9 as u32, the u64.
        assert_eq!(
            bytes,
            [
                &b"ACPG"[..],
                &[6, 16, 0, 0],
                &[9, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
    }

    #[test]
    fn the_shared_variants_keep_their_indices_and_the_announcement_leads_the_info() {
        let mark = ReplicaMessage::Mark(9).encode(&old()).expect("encodes");
        assert_eq!(
            mark,
            [
                &b"ACPG"[..],
                &[6, 16, 0, 0],
                &[6, 0, 0, 0],
                &[9, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
        let no_roster = ReplicaMessage::NoRoster { view: 1, mark: 2 }
            .encode(&old())
            .expect("encodes");
        assert_eq!(
            no_roster[8..],
            [
                &[5, 0, 0, 0][..],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
        let info = ReplicaMessage::Info(info())
            .encode(&old())
            .expect("encodes");
        // Variant 0, then the announcement: min 2, max 6, role 0
        // (participant) as u32.
        assert_eq!(info[8..17], [0, 0, 0, 0, 2, 6, 0, 0, 0]);
    }

    #[test]
    fn a_command_at_the_next_version_has_its_own_layout() {
        let cmd = ReplicaMessage::Command(CommandMsg {
            id: 7,
            payload: vec![0xaa],
        });
        let next = cmd.encode(&both(NEXT_PROTOCOL_VERSION)).expect("encodes");
        assert_eq!(
            next,
            [
                &b"ACPG"[..],
                &[7, 16, 0, 0],
                &[2, 0, 0, 0],
                // flags, id, then the payload with its length.
                &[0],
                &[7, 0, 0, 0, 0, 0, 0, 0],
                &[1, 0, 0, 0, 0, 0, 0, 0, 0xaa]
            ]
            .concat()
        );
        let current = cmd.encode(&both(PROTOCOL_VERSION)).expect("encodes");
        assert_ne!(next[8..], current[8..]);
        // The other version's layout does not read it back.
        assert_ne!(
            both(PROTOCOL_VERSION).decode_body::<ReplicaMessage>(&next[8..]),
            Ok(cmd)
        );
    }

    #[test]
    fn a_build_reads_only_the_shared_messages_of_a_version_it_does_not_read() {
        let newer = both(NEXT_PROTOCOL_VERSION);
        for msg in every_message() {
            let mut bytes = msg.encode(&newer).expect("encodes");
            if msg.is_shared() {
                // A newer version may append fields at the end.
                bytes.extend_from_slice(&[1, 2, 3]);
                assert_eq!(decode(&old(), &bytes), Ok(msg));
            } else {
                assert_eq!(
                    decode(&old(), &bytes),
                    Err(WireError::UnsupportedVersion(NEXT_PROTOCOL_VERSION)),
                    "{msg:?}"
                );
            }
        }
        // At a version it reads, trailing bytes are malformed.
        let mut bytes = ReplicaMessage::Mark(1).encode(&old()).expect("encodes");
        bytes.push(0);
        assert!(matches!(
            decode(&old(), &bytes),
            Err(WireError::Malformed(_))
        ));
        // Only its own kind.
        let other = old().encode(Kind::Election, &1u32).expect("encodes");
        assert_eq!(
            decode(&old(), &other),
            Err(WireError::UnknownKind(Kind::Election as u8))
        );
    }
}
