//! Bodies of the election protocol (envelope kind
//! [`crate::wire::Kind::Election`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.
//!
//! # Versions
//!
//! Every election message travels in one envelope kind, so the kind cannot
//! say which bodies every version shares: the variant does
//! ([`ElectionMessage::is_shared`]).
//!
//! - **Shared**: `Announce`, `Mark` and `Info`, what a process sends before
//!   it knows the version the group speaks (a joiner announces itself,
//!   marks the view and sends its info before any member has told it who
//!   counts), and what it must read to learn it (the members' infos). Every
//!   version lays them out alike: the variant index (`Info` 0, `Announce`
//!   4, `Mark` 5), then the body as below, which a newer version may extend
//!   at its end only. Any build reads them whatever version their envelope
//!   names: exactly at a version it reads, by their leading bytes at
//!   another ([`crate::wire::Codec::decode_body_prefix`]).
//! - **Not shared**: `Fact`, `Stand` and `Withdraw`, sent only by a process
//!   that knows the group's version, in an envelope of that version. Read
//!   only at a version the reader reads (at another they are dropped as
//!   [`WireError::UnsupportedVersion`]), and counted only if every member
//!   speaks the envelope's version (see the core's rule 9).

use serde::{Deserialize, Serialize};

use crate::roster::Announcement;
use crate::transport::{Member, QuorumState};
use crate::wire::{Codec, Kind, WireError};

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
    /// The members the sender counted when the round began, with what
    /// each announced (versions and role), sorted; or `None` from a joiner
    /// that does not know them yet: how a joiner learns who is announced,
    /// which of them observe, and the version the group speaks.
    pub announced: Option<Vec<(Member, Announcement)>>,
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
}

impl Info {
    /// Whether the list of members it carries could come from a roster:
    /// strictly sorted, and every member speaking the version the members
    /// speak (the highest all of them speak). Another list is forged.
    pub(crate) fn announced_is_sane(&self) -> bool {
        let Some(claim) = &self.announced else {
            return true;
        };
        let sorted = claim.windows(2).all(|w| w[0].0 < w[1].0);
        let group_version = claim.iter().map(|(_, a)| a.max_version).min();
        sorted
            && claim
                .iter()
                .all(|(_, a)| group_version.is_some_and(|v| a.speaks(v)))
    }
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

impl ElectionMessage {
    /// Whether every version lays this message out alike (see the module
    /// docs): what a process sends before it knows the group's version.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(
            self,
            ElectionMessage::Announce(_) | ElectionMessage::Mark(_) | ElectionMessage::Info(_)
        )
    }
}

/// Decodes an election envelope: its version and its message. At a
/// version `codec` does not read, only a shared message is read (by its
/// leading bytes: that version may have extended it at its end); any other
/// is [`WireError::UnsupportedVersion`]. Never panics, never allocates past
/// the limit.
pub(crate) fn decode_envelope(
    codec: &Codec,
    bytes: &[u8],
) -> Result<(u8, ElectionMessage), WireError> {
    let frame = codec.decode_frame_any_version(bytes)?;
    if frame.kind != Kind::Election {
        return Err(WireError::UnknownKind(frame.kind as u8));
    }
    if codec.reads().contains(frame.version) {
        return Ok((frame.version, codec.decode_body(frame.body)?));
    }
    match codec.decode_body_prefix::<ElectionMessage>(frame.body) {
        Ok(msg) if msg.is_shared() => Ok((frame.version, msg)),
        _ => Err(WireError::UnsupportedVersion(frame.version)),
    }
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
                announced: Some(vec![(
                    Member::new(1, 2),
                    Announcement::this_build().with_role(crate::roster::Role::Observer),
                )]),
                unannounced: vec![Member::new(3, 4)],
                merging: vec![Member::new(5, 6)],
                mark: 8,
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
            assert_eq!(
                codec.decode_body::<ElectionMessage>(frame.body),
                Ok(msg.clone())
            );
            assert_eq!(
                decode_envelope(&codec, &bytes),
                Ok((crate::wire::PROTOCOL_VERSION, msg))
            );
        }
    }

    fn info() -> Info {
        Info {
            tag: 1,
            clock: 2,
            fact: None,
            state: None,
            announced: Some(vec![(Member::new(1, 2), Announcement::this_build())]),
            unannounced: vec![],
            merging: vec![],
            mark: 3,
        }
    }

    /// The shared messages keep one layout in every version: pinned.
    #[test]
    fn the_shared_layouts_are_pinned() {
        let codec = Codec::new(1 << 16);
        let body = |msg: &ElectionMessage| {
            codec.encode(Kind::Election, msg).expect("encodes")[crate::wire::HEADER_LEN..].to_vec()
        };
        let announce = ElectionMessage::Announce(crate::roster::Announcement {
            min_version: 2,
            max_version: 3,
            role: crate::roster::Role::Observer,
        });
        assert_eq!(body(&announce), [4, 0, 0, 0, 2, 3, 1, 0, 0, 0]);
        assert_eq!(
            body(&ElectionMessage::Mark(7)),
            [5, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut expected = vec![0, 0, 0, 0]; // Info
        expected.extend(1u64.to_le_bytes()); // tag
        expected.extend(2u64.to_le_bytes()); // clock
        expected.extend([0, 0]); // no fact, no state
        expected.push(1); // announced: Some
        expected.extend(1u64.to_le_bytes()); // one member
        expected.extend(1u32.to_le_bytes()); // node
        expected.extend(2u32.to_le_bytes()); // pid
        expected.extend([2, 6, 0, 0, 0, 0]); // versions 2..=6, participant
        expected.extend(0u64.to_le_bytes()); // unannounced
        expected.extend(0u64.to_le_bytes()); // merging
        expected.extend(3u64.to_le_bytes()); // mark
        assert_eq!(body(&ElectionMessage::Info(info())), expected);
    }

    /// At a version it does not read, a build reads the shared messages by
    /// their leading bytes (a newer version may append to them) and drops
    /// the others.
    #[test]
    fn at_a_version_not_read_only_shared_messages_are_read() {
        let old = Codec::new(1 << 16);
        let next = crate::wire::NEXT_PROTOCOL_VERSION;
        let newer = Codec::new(1 << 16)
            .reading(crate::wire::Versions { min: 2, max: next })
            .at_version(next);
        for msg in [
            ElectionMessage::Info(info()),
            ElectionMessage::Announce(Announcement::this_build()),
            ElectionMessage::Mark(4),
        ] {
            let mut bytes = newer.encode(Kind::Election, &msg).expect("encodes");
            assert_eq!(decode_envelope(&newer, &bytes), Ok((next, msg.clone())));
            // What a newer version may append.
            bytes.extend([9, 9, 9]);
            assert_eq!(decode_envelope(&old, &bytes), Ok((next, msg.clone())));
            assert!(decode_envelope(&newer, &bytes).is_err(), "read exactly");
        }
        for msg in [
            ElectionMessage::Stand("jobs".into()),
            ElectionMessage::Withdraw("jobs".into()),
            ElectionMessage::Fact(QuorumState {
                quorate: true,
                ring_id: crate::transport::RingId {
                    seq: 1,
                    nodeid: NodeId(1),
                },
                nodes: vec![],
            }),
        ] {
            let bytes = newer.encode(Kind::Election, &msg).expect("encodes");
            assert_eq!(decode_envelope(&newer, &bytes), Ok((next, msg)));
            assert_eq!(
                decode_envelope(&old, &bytes),
                Err(WireError::UnsupportedVersion(next))
            );
        }
        let other = old.encode(Kind::Registry, &0u8).expect("encodes");
        assert_eq!(
            decode_envelope(&old, &other),
            Err(WireError::UnknownKind(Kind::Registry as u8))
        );
    }

    #[test]
    fn a_list_of_members_no_roster_could_hold_is_not_sane() {
        let speaking = |min, max| Announcement::speaking(crate::wire::Versions { min, max });
        let (a, b) = (Member::new(1, 1), Member::new(2, 2));
        let with = |announced| Info {
            announced,
            ..info()
        };
        assert!(with(None).announced_is_sane());
        assert!(with(Some(vec![])).announced_is_sane());
        assert!(with(Some(vec![(a, speaking(2, 2)), (b, speaking(2, 3))])).announced_is_sane());
        assert!(!with(Some(vec![(b, speaking(2, 2)), (a, speaking(2, 2))])).announced_is_sane());
        assert!(!with(Some(vec![(a, speaking(2, 2)), (a, speaking(2, 2))])).announced_is_sane());
        assert!(!with(Some(vec![(a, speaking(2, 2)), (b, speaking(3, 3))])).announced_is_sane());
        assert!(!with(Some(vec![(a, speaking(3, 2))])).announced_is_sane());
    }
}
