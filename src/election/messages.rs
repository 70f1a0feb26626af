//! Bodies of the election protocol (envelope kind
//! [`crate::wire::Kind::Election`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.

use serde::{Deserialize, Serialize};

use crate::roster::Announcement;
use crate::transport::{Member, QuorumState};

/// A fencing epoch: it only grows, and a new one is minted each time an
/// election gets a leader (a new one, or the same one after a time without
/// any). `ring_seq` is the highest totem ring sequence the members reported
/// when it was minted (never lower than the previous epoch's); `term` grows
/// by one with each leadership, starting above the time the group was
/// founded (in microseconds, from the founders' clocks, entered into the
/// stream), so a group that died out and was founded again in the same
/// ring still mints greater epochs. Ordered by `ring_seq`, then `term`:
/// hand the epoch to whatever the leader writes to, and have it refuse
/// anything stamped with an older one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    /// Highest totem ring sequence known when the epoch was minted.
    pub ring_seq: u64,
    /// The group's founding time plus the leaderships of this election so
    /// far, this one included.
    pub term: u64,
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.ring_seq, self.term)
    }
}

/// One named election's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ElectionState {
    /// Candidates and their seniority (lower stood earlier).
    pub candidates: Vec<(Member, u64)>,
    /// The current leader, if any.
    pub leader: Option<Member>,
    /// The latest epoch minted for this election.
    pub epoch: Option<Epoch>,
}

/// Every election of a group, as one member holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// The next seniority stamp to hand out.
    pub next_stamp: u64,
    /// When the group was founded (microseconds since the Unix epoch, from
    /// its founders' clocks): the term below every epoch of this group.
    pub founded: u64,
    /// By election name (the group-wide election is `""`).
    pub elections: Vec<(String, ElectionState)>,
}

/// What every member multicasts right after each confchg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Info {
    /// Names the view this info answers (a hash of its members).
    pub tag: u64,
    /// The sender's wall clock (microseconds since the Unix epoch), used
    /// only if this view founds the group.
    pub clock: u64,
    /// The sender's latest quorum notification, if any.
    pub fact: Option<QuorumState>,
    /// The elections as the sender held them when it saw the confchg
    /// (`None` for a member that never held them).
    pub state: Option<GroupState>,
    /// The members the sender counted when the round began (its announced
    /// set, sorted), or `None` from a joiner that does not know them yet:
    /// how a joiner learns who is announced.
    pub announced: Option<Vec<Member>>,
    /// Processes the sender had in its view before the round began and knew
    /// to be unannounced: how the other side of a merge learns that a
    /// silent process there is not a member it must wait for.
    pub unannounced: Vec<Member>,
    /// Processes of another side of a merge that the sender still waits
    /// for (to announce themselves, or be named unannounced by their side):
    /// a joiner that learns the members from this info waits for them too.
    pub merging: Vec<Member>,
    /// The sender's mark of this incarnation of the view, which came back
    /// before it sent this info (see [`crate::incarnation`]): the info
    /// counts only if that mark is the sender's latest since the confchg.
    pub mark: u64,
    /// The observers among `announced` (sorted; empty when `announced` is
    /// `None`): a joiner learns them with the members.
    pub observers: Vec<Member>,
}

/// The body of every election message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ElectionMessage {
    /// View installation: the sender's quorum fact and elections.
    Info(Info),
    /// The sender's quorum notification changed.
    Fact(QuorumState),
    /// The sender stands in the named election.
    Stand(String),
    /// The sender withdraws from the named election.
    Withdraw(String),
    /// The sender announces itself (sent after every confchg that brings
    /// anyone in): from a process in the view that is not yet a member,
    /// it admits it.
    Announce(Announcement),
    /// Multicast after every confchg that keeps the sender in the view,
    /// before its info (see [`crate::incarnation`]). Last, so the earlier
    /// variants keep their wire index.
    Mark(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{NodeId, RingId};
    use crate::wire::{Codec, Kind};

    #[test]
    fn every_message_round_trips() {
        let codec = Codec::new(1 << 16);
        let fact = QuorumState {
            quorate: true,
            ring_id: RingId {
                seq: 4,
                nodeid: NodeId(1),
            },
            nodes: vec![NodeId(1)],
        };
        let state = GroupState {
            next_stamp: 3,
            founded: 7,
            elections: vec![(
                "jobs".into(),
                ElectionState {
                    candidates: vec![(Member::new(1, 2), 0)],
                    leader: Some(Member::new(1, 2)),
                    epoch: Some(Epoch {
                        ring_seq: 4,
                        term: 1,
                    }),
                },
            )],
        };
        for msg in [
            ElectionMessage::Info(Info {
                tag: 9,
                clock: 11,
                fact: Some(fact.clone()),
                state: Some(state),
                announced: Some(vec![Member::new(1, 2)]),
                unannounced: vec![Member::new(3, 4)],
                merging: vec![Member::new(5, 6)],
                mark: 8,
                observers: vec![Member::new(1, 2)],
            }),
            ElectionMessage::Fact(fact),
            ElectionMessage::Stand("jobs".into()),
            ElectionMessage::Withdraw("jobs".into()),
            ElectionMessage::Announce(Announcement::this_build()),
            ElectionMessage::Mark(12),
        ] {
            let bytes = codec.encode(Kind::Election, &msg).expect("encodes");
            let frame = codec.decode_frame(&bytes).expect("frame");
            assert_eq!(frame.kind, Kind::Election);
            assert_eq!(codec.decode_body::<ElectionMessage>(frame.body), Ok(msg));
        }
    }
}
