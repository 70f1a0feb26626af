//! A snapshot of one member's view of its group, for operators and tools
//! ([`crate::Group::inspect`], the `acpg` command).
//!
//! ```text
//!   Group::inspect() ──► Op::Inspect ──► runtime, between two events of
//!                                        the stream
//!                                           │ inspect(core, name, metrics)
//!                                           ▼
//!        GroupInspection { members, pending, names, trees, quorum,
//!                          supervision, metrics }  ──► serde (`acpg status`)
//! ```
//!
//! The rules it keeps are on [`GroupInspection`], where users read them.
//!
//! Built by the library only (`#[non_exhaustive]`); read by anyone, and
//! serde both ways, so a tool can print it as JSON and read it back.

use serde::{Deserialize, Serialize};

use super::core::GroupCore;
use super::metrics::MetricsSnapshot;
use crate::roster::Role;
use crate::supervisor::{
    ChildPath, ChildStatus, Fingerprint, PlacementPolicy, QuorumPolicy, RestartType, SlotKey,
    SlotStatus,
};
use crate::transport::{GroupName, Member};
use crate::wire::Versions;

/// One member's view of its group at one point of the ordered stream
/// ([`crate::Group::inspect`]). It keeps these rules:
///
/// 1. **One point of the stream.** The runtime answers between two events,
///    from its decision core alone, so every field holds at the same
///    position, and two members inspected at the same position agree on
///    everything but `local`, `role`, `versions` and `metrics`.
/// 2. **Members are who counts.** `members` are the announced processes of
///    the view, with the role and protocol versions they announced;
///    `pending` are processes of the CPG view that have not announced
///    themselves (a joiner on its way, or a silent client): they change
///    nothing, and are listed so a stuck joiner or an intruder shows.
/// 3. **The state as held.** A member waiting for the group state (after a
///    merge) says so (`holds_state: false`); its registry and trees are then
///    its own side's, until the hand-over.
/// 4. **Quorum as the engine knows it:** the last quorum fact that reached
///    the stream, and whether a node that went down since then leaves it
///    unknown (`fenced`: nothing starts until a fresh report).
/// 5. **Metrics are local**: this member's counters at that moment, not a
///    group decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupInspection {
    /// The group's name.
    pub group: String,
    /// The member that answered.
    pub local: Member,
    /// Its role.
    pub role: Role,
    /// The protocol versions it speaks.
    pub versions: Versions,
    /// The protocol version the group speaks, as it knows it (`None`
    /// before anyone is a member).
    pub group_version: Option<u8>,
    /// Whether it holds the group state (false only while it waits for a
    /// hand-over).
    pub holds_state: bool,
    /// The members (announced processes of the view), sorted.
    pub members: Vec<MemberInspection>,
    /// Processes of the CPG view that have not announced themselves,
    /// sorted: they count for nothing.
    pub pending: Vec<Member>,
    /// The registry, sorted by name.
    pub names: Vec<RegisteredName>,
    /// The supervision trees, sorted by name.
    pub trees: Vec<TreeInspection>,
    /// Quorum, as the supervision engine knows it.
    pub quorum: QuorumInspection,
    /// Where the supervision engine stands in the stream.
    pub supervision: SupervisionPosition,
    /// This member's counters.
    pub metrics: MetricsSnapshot,
}

impl GroupInspection {
    /// The member `m`, if it is one.
    pub fn member(&self, m: Member) -> Option<&MemberInspection> {
        self.members.iter().find(|i| i.member == m)
    }

    /// Every slot of every tree, in tree order.
    pub fn slots(&self) -> impl Iterator<Item = &SlotInspection> {
        self.trees.iter().flat_map(|t| t.children.iter())
    }
}

/// A member and what it announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberInspection {
    /// The process.
    pub member: Member,
    /// What it does in the group.
    pub role: Role,
    /// The protocol versions it speaks.
    pub versions: Versions,
}

/// A registered name and its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegisteredName {
    /// The name.
    pub name: String,
    /// Where the actor runs.
    pub host: Member,
}

/// One supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TreeInspection {
    /// Its name.
    pub name: String,
    /// Its spec's fingerprint.
    pub fingerprint: Fingerprint,
    /// Whether its root supervisor runs (false once it gave up,
    /// [`crate::SupervisionEvent::SupervisorEscalated`]).
    pub alive: bool,
    /// What it does without quorum.
    pub quorum_policy: QuorumPolicy,
    /// The members its children may be placed on (in the view, started it
    /// with factories), sorted.
    pub hosts: Vec<Member>,
    /// Its worker slots, in tree order.
    pub children: Vec<SlotInspection>,
}

/// One slot of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlotInspection {
    /// The group-wide name of the instance ([`crate::child_name`]).
    pub name: String,
    /// The child's place in its tree.
    pub path: ChildPath,
    /// Which instance.
    pub slot: SlotKey,
    /// Its restart type.
    pub restart: RestartType,
    /// Its placement policy.
    pub policy: PlacementPolicy,
    /// Whether every supervisor above it is alive.
    pub supervised: bool,
    /// Running (where, which incarnation, which fencing token), pending,
    /// stopped or removed.
    pub status: SlotStatus,
}

impl SlotInspection {
    /// Where it runs, if it does.
    pub fn host(&self) -> Option<Member> {
        match self.status {
            SlotStatus::Running { host, .. } => Some(host),
            _ => None,
        }
    }
}

impl From<ChildStatus> for SlotInspection {
    fn from(c: ChildStatus) -> Self {
        SlotInspection {
            name: c.name(),
            path: c.path,
            slot: c.slot,
            restart: c.restart,
            policy: c.policy,
            supervised: c.supervised,
            status: c.status,
        }
    }
}

/// Quorum as the supervision engine knows it (rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuorumInspection {
    /// What the last quorum fact in the stream said.
    pub quorate: bool,
    /// A node went down since that fact: quorum is unknown, and nothing
    /// starts until a fresh one.
    pub fenced: bool,
}

/// Where the supervision engine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SupervisionPosition {
    /// Events it applied (its stream position).
    pub seq: u64,
    /// The fencing epoch.
    pub epoch: u64,
    /// The stream time, in ms (the largest tick).
    pub now_ms: u64,
    /// Whether a merge round waits for the sides' states.
    pub merging: bool,
}

/// The inspection of `core`, the decision core of a runtime in `group`,
/// with `metrics` read at the same moment.
pub(crate) fn inspect(
    core: &GroupCore,
    group: &GroupName,
    metrics: MetricsSnapshot,
) -> GroupInspection {
    let roster = core.roster();
    let engine = core.engine();
    let children = engine.children();
    let trees = engine
        .tree_names()
        .into_iter()
        .filter_map(|name| {
            let spec = engine.tree_spec(&name)?;
            let slots = children
                .iter()
                .filter(|c| c.path.tree == name)
                .cloned()
                .map(SlotInspection::from)
                .collect();
            Some(TreeInspection {
                fingerprint: spec.fingerprint(),
                alive: engine.tree_alive(&name).unwrap_or(false),
                quorum_policy: spec.quorum_policy,
                hosts: engine.tree_hosts(&name),
                children: slots,
                name,
            })
        })
        .collect();
    let mut pending: Vec<Member> = roster.pending().collect();
    pending.sort();
    GroupInspection {
        group: group.to_string(),
        local: core.local(),
        role: core.role(),
        versions: core.versions(),
        group_version: core.group_version(),
        holds_state: core.is_synced(),
        members: roster
            .announcements()
            .into_iter()
            .map(|(member, a)| MemberInspection {
                member,
                role: a.role,
                versions: a.versions(),
            })
            .collect(),
        pending,
        names: core
            .names()
            .iter()
            .map(|(name, host)| RegisteredName {
                name: name.clone(),
                host: *host,
            })
            .collect(),
        trees,
        quorum: QuorumInspection {
            quorate: engine.quorate(),
            fenced: engine.quorum_fenced(),
        },
        supervision: SupervisionPosition {
            seq: engine.seq(),
            epoch: engine.epoch(),
            now_ms: engine.now_ms(),
            merging: engine.is_merging(),
        },
        metrics,
    }
}
