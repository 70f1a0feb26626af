//! Bodies of the replicated-state protocol (envelope kind
//! [`crate::wire::Kind::Replicated`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.

use serde::{Deserialize, Serialize};

use crate::transport::{Member, QuorumState};

/// Identifies a primary component of a replicated group: it only grows
/// along the history of the group's state. `ring_seq` is the highest totem
/// ring sequence the members reported when the component formed (never
/// lower than the previous component's); `term` counts components.
/// Ordered by `ring_seq`, then `term`.
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
/// greatest id in a view is the state the view keeps.
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
/// leave on purpose or die (`Leave`, `ProcDown`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrimaryRecord {
    pub epoch: PrimaryEpoch,
    /// Sorted.
    pub members: Vec<Member>,
}

/// What every member multicasts right after each confchg; the view is
/// installed once every member's info has been delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Info {
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
    /// The announced members as the sender knew them right after the
    /// confchg (`None`: the sender did not know them, it was joining).
    /// A joiner, and both sides of a merge, learn the roster from it.
    pub members: Option<Vec<Member>>,
    /// The processes the sender counts as mergers (in the view at a merge,
    /// not yet in an install); a learner takes them with the roster.
    pub merged: Vec<Member>,
    /// The sender's [`ReplicaMessage::Mark`] of this incarnation of the
    /// view, which it saw delivered before sending this info: an info
    /// counts only if that mark was delivered after the latest confchg.
    pub mark: u64,
}

/// A client command; `id` is unique per sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommandMsg {
    pub id: u64,
    /// The command, encoded with [`crate::wire::Codec::encode_payload`].
    pub payload: Vec<u8>,
}

/// One piece of a snapshot sent to the members that need the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The state the snapshot captures.
    pub state: StateId,
    pub index: u32,
    pub total: u32,
    pub bytes: Vec<u8>,
}

/// The body of every replicated-state message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ReplicaMessage {
    /// View installation: the sender's state and knowledge.
    Info(Info),
    /// The sender's quorum notification changed.
    Fact(QuorumState),
    /// A command to apply in the total order.
    Command(CommandMsg),
    /// Safe delivery: the sender has applied this many commands.
    Ack(u64),
    /// State transfer.
    Chunk(Chunk),
    /// A process still learning the members found no process that knows
    /// them (its timer ran out). Delivered before any roster of the view,
    /// and after the sender's mark of this incarnation, it means nobody in
    /// it is announced.
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
    /// set of processes forms it again (rule 1).
    Mark(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{NodeId, RingId};
    use crate::wire::{Codec, Kind};

    #[test]
    fn every_message_round_trips() {
        let codec = Codec::new(1 << 20);
        let fact = QuorumState {
            quorate: true,
            ring_id: RingId {
                seq: 7,
                nodeid: NodeId(1),
            },
            nodes: vec![NodeId(1), NodeId(2)],
        };
        let id = StateId {
            epoch: PrimaryEpoch {
                ring_seq: 7,
                term: 2,
            },
            applied: 9,
            chain: 0xfeed,
            genesis: 3,
        };
        let messages = vec![
            ReplicaMessage::Info(Info {
                fact: Some(fact.clone()),
                known: Some(PrimaryRecord {
                    epoch: id.epoch,
                    members: vec![Member::new(1, 2)],
                }),
                state: id,
                founder: true,
                view: 11,
                round: 2,
                members: Some(vec![Member::new(1, 2)]),
                merged: vec![Member::new(3, 4)],
                mark: 5,
            }),
            ReplicaMessage::Fact(fact),
            ReplicaMessage::Command(CommandMsg {
                id: 3,
                payload: vec![1, 2, 3],
            }),
            ReplicaMessage::Ack(12),
            ReplicaMessage::NoRoster { view: 99, mark: 4 },
            ReplicaMessage::Mark(6),
            ReplicaMessage::Chunk(Chunk {
                state: id,
                index: 0,
                total: 1,
                bytes: vec![0; 10],
            }),
        ];
        for msg in messages {
            let bytes = codec.encode(Kind::Replicated, &msg).expect("encodes");
            let frame = codec.decode_frame(&bytes).expect("frame");
            assert_eq!(frame.kind, Kind::Replicated);
            assert_eq!(codec.decode_body::<ReplicaMessage>(frame.body), Ok(msg));
        }
    }

    #[test]
    fn golden_bytes_of_an_ack() {
        let bytes = Codec::new(64)
            .encode(Kind::Replicated, &ReplicaMessage::Ack(5))
            .expect("encodes");
        // Header (kind 16), variant index 3 as u32, then the u64.
        assert_eq!(
            bytes,
            [
                &b"ACPG"[..],
                &[2, 16, 0, 0],
                &[3, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
    }
}
