//! A snapshot of one replica's view of its group, for operators and tools
//! ([`crate::Replica::inspect`], [`crate::ReplicaObserver::inspect`],
//! `acpg status --replica`).
//!
//! ```text
//!   Replica::inspect() ──► Op::Inspect ──► runtime, between two events of
//!                                          the stream
//!                                             │ ReplicaCore::inspect
//!                                             ▼
//!     ReplicaInspection { members (+ the state each announced), pending,
//!                         primary, state, agreement, refused, metrics }
//! ```
//!
//! The rules it keeps are on [`ReplicaInspection`], where users read them.
//! Built by the library only (`#[non_exhaustive]`); read by anyone, and
//! serde both ways, so a tool can print it as JSON and read it back.

use serde::{Deserialize, Serialize};

use super::{PrimaryEpoch, RefusedCounts, StateId};
use crate::group::MetricsSnapshot;
use crate::roster::Role;
use crate::transport::Member;
use crate::wire::Versions;

/// One replica's view of its group at one point of the ordered stream
/// ([`crate::Replica::inspect`]). It keeps these rules:
///
/// 1. **One point of the stream.** The runtime answers between two events,
///    from its decision core alone, so every field holds at the same
///    position; two replicas inspected at the same position agree on
///    everything but `local`, `role`, `versions`, `holding`, `state` (a
///    replica waiting for a snapshot holds an older one), `refused` and
///    `metrics`.
/// 2. **Members are who counts.** `members` are the announced processes of
///    the view, with the role and protocol versions they announced;
///    `pending` are processes of the CPG view that have not announced
///    themselves (a joiner on its way, or a silent client): they change
///    nothing, and are listed so a stuck joiner or an intruder shows.
/// 3. **A state id is a position in the history, not a digest.** A
///    [`StateId`] says which primary component the state last belonged to,
///    how many commands it applied, and a chain hashed over the (sender,
///    command id) of each of them, in order: two replicas with equal ids
///    applied the same commands in the same order. It is not computed from
///    the state itself, so a state machine that is not deterministic, or a
///    replica whose memory was changed outside the stream, still shows the
///    id of the history it followed. What finds those is the divergence
///    check, which compares digests of the states themselves (`checks`).
/// 4. **States compared at one point.** Every member multicasts its state
///    id in its info after each view change (and again in the round a late
///    admission starts); commands wait until the install, so all the infos
///    of a round describe the same point of the stream, and are
///    comparable. `members[].announced` is each member's id in the latest
///    round installed; [`Agreement`] groups the participants by it. After
///    the install every member that did not hold the winning state
///    receives it (`agreement.sender` to `agreement.receivers`), so a
///    disagreement shows what the view started from, and how it was
///    resolved: the replicas agree again once the transfer is done.
/// 5. **Observers hold the state and count for nothing**: their announced
///    ids are listed, but [`Agreement`] compares the participants only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaInspection {
    /// The group's name.
    pub group: String,
    /// The replica that answered.
    pub local: Member,
    /// Its role.
    pub role: Role,
    /// The protocol versions it speaks.
    pub versions: Versions,
    /// The protocol version the group speaks, as it knows it (`None`
    /// before it knows the members).
    pub group_version: Option<u8>,
    /// Whether the view is installed (every member's info is in).
    pub installed: bool,
    /// Whether this replica holds the view's state (not waiting for it).
    pub holding: bool,
    /// Whether the installed view is a primary component: commands are
    /// applied only then.
    pub primary: bool,
    /// The primary component's epoch, while primary.
    pub epoch: Option<PrimaryEpoch>,
    /// This replica's state id now (rule 3).
    pub state: StateId,
    /// The members (announced processes of the view), sorted, each with
    /// the state it announced (rule 4).
    pub members: Vec<ReplicaMemberInspection>,
    /// Processes of the CPG view that have not announced themselves,
    /// sorted: they count for nothing.
    pub pending: Vec<Member>,
    /// Whether the participants held the same state at the latest round
    /// (rule 4).
    pub agreement: Agreement,
    /// The divergence checks this replica saw complete (rule 11 of the
    /// replica's rules: digests of the state compared at one point).
    pub checks: Checks,
    /// Protocol messages this replica refused, by cause.
    pub refused: RefusedCounts,
    /// This replica's counters.
    pub metrics: MetricsSnapshot,
}

/// The divergence checks a replica saw complete, and the latest one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checks {
    /// Checks completed (every participant's digest came in).
    pub completed: u64,
    /// Of those, the ones where some participant's digest differed.
    pub diverged: u64,
    /// The latest completed check.
    pub last: Option<CheckReport>,
}

/// What one divergence check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// The state every participant held where the check was delivered.
    pub at: StateId,
    /// Participants that sent a digest (the others' state machines have
    /// none), sorted.
    pub compared: Vec<Member>,
    /// Participants whose digest differed from the majority's (or, with no
    /// majority, every participant compared), sorted; empty: they agreed.
    pub diverged: Vec<Member>,
    /// Who sends its state to the diverged ones (`None`: they agreed, or no
    /// digest was held by a majority, and nobody can tell which is right).
    pub resync_from: Option<Member>,
}

impl ReplicaInspection {
    /// The member `m`, if it is one.
    pub fn member(&self, m: Member) -> Option<&ReplicaMemberInspection> {
        self.members.iter().find(|i| i.member == m)
    }
}

/// A member, what it announced, and the state it held at the latest round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaMemberInspection {
    /// The process.
    pub member: Member,
    /// What it does in the group.
    pub role: Role,
    /// The protocol versions it speaks.
    pub versions: Versions,
    /// The state id it announced in the latest round installed (`None`:
    /// it was not in that round, e.g. it was admitted while this replica
    /// was not yet installed).
    pub announced: Option<StateId>,
}

/// The participants' states at the latest round installed (rule 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Agreement {
    /// Whether every participant of the view that held a history
    /// announced the same state id there (true with none).
    pub agree: bool,
    /// The round of its view (0 after the view change, one more after each
    /// late admission).
    pub round: u32,
    /// The distinct state ids the participants of the view announced,
    /// greatest first (the first one is what the view went on from), each
    /// with the participants that held it, sorted.
    pub states: Vec<SharedState>,
    /// Participants that announced no history at all (a joiner's empty
    /// state, genesis 0), sorted: they receive the state and are not
    /// compared.
    pub empty: Vec<Member>,
    /// Who sent the winning state at that install, if anyone needed it.
    pub sender: Option<Member>,
    /// Who received it (participants and observers), sorted.
    pub receivers: Vec<Member>,
}

/// A state id and the participants that held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SharedState {
    /// The state.
    pub state: StateId,
    /// Who held it, sorted.
    pub members: Vec<Member>,
}
