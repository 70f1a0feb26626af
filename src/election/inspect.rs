//! A snapshot of one member's view of an election group, for operators and
//! tools ([`crate::Election::inspect`], `acpg status --election`).
//!
//! ```text
//!   Election::inspect() ──► Op::Inspect ──► runtime, between two events of
//!                                           the stream
//!                                              │ ElectionCore::inspect
//!                                              ▼
//!      ElectionInspection { members, pending, elections (candidates,
//!                           leader, epoch), quorum, refused }  ──► serde
//! ```
//!
//! The rules it keeps are on [`ElectionInspection`], where users read them.
//! Built by the library only (`#[non_exhaustive]`); read by anyone, and
//! serde both ways, so a tool can print it as JSON and read it back.

use serde::{Deserialize, Serialize};

use super::{ElectionRefusals, Epoch};
use crate::group::MemberInspection;
use crate::roster::Role;
use crate::transport::Member;
use crate::wire::Versions;

/// One member's view of its election group at one point of the ordered
/// stream ([`crate::Election::inspect`]). It keeps these rules:
///
/// 1. **One point of the stream.** The runtime answers between two events,
///    from its decision core alone, so every field holds at the same
///    position; two members inspected at the same position agree on
///    everything but `local`, `role`, `versions`, `acting`,
///    `locally_quorate`, `refused` and `dropped_unauthenticated`.
/// 2. **Members are who counts.** `members` are the announced processes of
///    the view, with the role and protocol versions they announced;
///    `pending` are processes of the CPG view that have not announced
///    themselves (a joiner on its way, or a silent client): they are never
///    candidates and change nothing, and are listed so a stuck joiner or an
///    intruder shows.
/// 3. **Decisions as the group took them.** Each election's leader and
///    epoch are the group's decision (the same on every member), not
///    whether this member acts on it: a member acts as leader only while
///    its own node is quorate too (`acting`). While a view is being
///    installed (`installed: false`) the last decision stands, or none
///    where the view change removed the leader.
/// 4. **Epochs are fencing tokens.** `epoch` is the latest epoch the
///    election minted, kept while it has no leader: the next leader's is
///    greater. Whatever a leader writes to should refuse a write stamped
///    with an epoch below the greatest it has seen.
/// 5. **Quorum as the core knows it:** the quorum facts the members put in
///    the stream since the last view change (observers' do not count), and
///    this node's own latest notification (a local guard, not a group
///    decision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ElectionInspection {
    /// The group's name.
    pub group: String,
    /// The member that answered.
    pub local: Member,
    /// Its role.
    pub role: Role,
    /// The protocol versions it speaks.
    pub versions: Versions,
    /// The protocol version the group speaks, as it knows it (`None`
    /// before it knows the members).
    pub group_version: Option<u8>,
    /// Whether it knows who is announced (false only for a joiner that has
    /// not heard from a member yet: it decides nothing until it does).
    pub knows_members: bool,
    /// Whether the view is installed (every member's info is in) with this
    /// member in it.
    pub installed: bool,
    /// The members (announced processes of the view), sorted.
    pub members: Vec<MemberInspection>,
    /// Processes of the CPG view that have not announced themselves,
    /// sorted: they count for nothing.
    pub pending: Vec<Member>,
    /// Every election of the group, sorted by name (the group-wide one,
    /// [`super::GROUP_ELECTION`], is `""`).
    pub elections: Vec<ElectionEntry>,
    /// Quorum, as the core knows it (rule 5).
    pub quorum: ElectionQuorum,
    /// Messages this member refused, by cause.
    pub refused: ElectionRefusals,
    /// Deliveries dropped before decoding for want of a valid MAC (the
    /// group has a key).
    pub dropped_unauthenticated: u64,
}

impl ElectionInspection {
    /// The member `m`, if it is one.
    pub fn member(&self, m: Member) -> Option<&MemberInspection> {
        self.members.iter().find(|i| i.member == m)
    }

    /// The election `name`, if the group has it.
    pub fn election(&self, name: &str) -> Option<&ElectionEntry> {
        self.elections.iter().find(|e| e.name == name)
    }
}

/// One election of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ElectionEntry {
    /// Its name (`""`: the group-wide election every participant stands
    /// in).
    pub name: String,
    /// Its candidates in the view, most senior first: the first one leads
    /// while the view is quorate.
    pub candidates: Vec<Member>,
    /// The group's leader, if it has one (rule 3).
    pub leader: Option<Member>,
    /// The latest epoch the election minted, the leader's while it has one
    /// (rule 4).
    pub epoch: Option<Epoch>,
    /// Whether the inspected member acts as leader (the group names it and
    /// its node is quorate).
    pub acting: bool,
}

/// Quorum as the election core knows it (rule 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ElectionQuorum {
    /// Whether the view is quorate by the facts in the stream: at least
    /// one member reported since the last view change, and every report
    /// says quorate. Without it no election has a leader.
    pub quorate: bool,
    /// The members whose quorum fact is in, sorted.
    pub reported: Vec<Member>,
    /// The highest totem ring sequence they reported (what the next epoch
    /// starts from).
    pub ring_seq: u64,
    /// Whether this node's own latest quorum notification says quorate.
    pub locally_quorate: bool,
}
