//! The pure decision core of the distributed supervision tree.
//!
//! Every member of the group feeds its [`Engine`] the same ordered stream
//! (CPG's virtual synchrony), so every member holds the same tree and
//! computes the same decisions, with no further coordination. The engine
//! reads no clock, draws no random number and does no I/O: time, quorum and
//! local actor exits enter the stream as ordered events first. A runtime
//! (not in this module) turns deliveries into [`Event`]s and executes the
//! [`Command`]s addressed to its own member.
//!
//! ```text
//!  ordered stream (same on every member)
//!  ─────────────────────────────────────────────────────────────────────►
//!   ViewChanged  TreeStarted  Tick  ChildExited  QuorumChanged  StateOffered
//!        │            │         │        │             │              │
//!        ▼            ▼         ▼        ▼             ▼              ▼
//!  ┌──────────────────────────── Engine::handle ─────────────────────────┐
//!  │ merging? ── yes ──► buffer until every side offered ──► merge ─┐    │
//!  │    │ no                                                       │    │
//!  │    ▼                                                          ▼    │
//!  │  Core::apply   seq += 1, token = (epoch, seq)                      │
//!  │    ├─ view:   departed host ⇒ slot exits with the confchg reason    │
//!  │    ├─ exit:   stale incarnation ⇒ Ignored                            │
//!  │    ├─ quorum: lost under Stop ⇒ stop everything                      │
//!  │    └─ tree:   first start wins; other spec ⇒ RefuseTree               │
//!  │          │                                                          │
//!  │          ▼ on_child_down                                            │
//!  │    restart type ─ no ──► Stopped / Removed                          │
//!  │          │ yes                                                      │
//!  │    intensity ─ exceeded ──► stop subtree, escalate to parent ──┐    │
//!  │          │ ok                              (root ⇒ Escalated)  │    │
//!  │    strategy: one_for_one / one_for_all / rest_for_one ◄────────┘    │
//!  │          │                                                          │
//!  │          ▼ reconcile (every event)                                  │
//!  │    pending slot + quorum (or Ignore) + eligible host ⇒ start        │
//!  │    view change: placement moved ⇒ stop here, start there           │
//!  └──────────────────────────────┬──────────────────────────────────────┘
//!                                 ▼
//!        Output { commands: [StartChild | StopChild | Escalated | RefuseTree],
//!                 events:   [SupervisionEvent ...] }
//!                                 │
//!           runtime on member M executes commands whose host (or by) is M;
//!           a stopped or panicked actor is multicast as ChildExited.
//! ```
//!
//! # Rules
//!
//! - **Restart types.** A host that leaves with [`Reason::Leave`] makes its
//!   children exit normally: transient and temporary children stay down,
//!   permanent ones restart elsewhere. `ProcDown` and `NodeDown` are
//!   crashes: permanent and transient children restart, temporary ones
//!   never do. A host's own report ([`Event::ChildExited`]) follows the
//!   same rules. Instances bound to a member ([`PlacementPolicy::OnEveryMember`])
//!   or to a node with no member left ([`PlacementPolicy::OnePerNode`]) end
//!   with it and are not restarted.
//! - **Strategies** follow OTP: `one_for_all` stops every sibling (last
//!   first) and starts all again (first first); `rest_for_one` does that
//!   for the failed child and those after it; temporary siblings stopped
//!   this way are removed; a nested supervisor restarts afresh from its spec.
//! - **Intensity** is cluster-wide: more than `max_restarts` restart
//!   decisions of one supervisor within `period_ms` of stream time make it
//!   stop its subtree and count as a crash of itself in its parent; the
//!   root's give-up is [`Command::Escalated`] (the process stays up; the
//!   tree can be started again with the same spec).
//! - **Quorum** ([`QuorumPolicy`], per tree): without quorum, `Stop` stops
//!   every child and starts nothing, `Freeze` keeps running children and
//!   starts nothing (failures are decided, restarts wait), `Ignore` acts as
//!   quorate. The engine starts not quorate: the runtime must put the
//!   quorum state into the stream.
//! - **Hosts.** Children are placed only on members that started the tree
//!   ([`Event::TreeStarted`]) saying they can build the child's kind: a
//!   member in the view that never started it (a client, a tool) hosts
//!   none of it. A member that starts the tree later is its newest host:
//!   `Any` children that now score highest on it move, as on a join, and no
//!   singleton moves. A child that no host in the view can build waits
//!   ([`SlotStatus::Pending`], reported once by
//!   [`SupervisionEvent::ChildWaitsForHost`]). Hosts that leave the view
//!   stop being hosts; a process that comes back starts the tree again.
//! - **Merge.** A confchg with `NodeUp` joiners opens a merge round: the
//!   engine buffers events until every side has offered its pre-merge state
//!   ([`Engine::should_offer`], [`Engine::merge_offer`],
//!   [`Event::StateOffered`]); then all engines compute the same merged
//!   state, in which, per slot, only the incarnation with the largest
//!   fencing token survives (the others are stopped), placement is
//!   recomputed and the buffered events are replayed. See `state/merge.rs`.
//! - **Fencing.** Every start gets a new [`IncarnationId`] and a
//!   [`FencingToken`] `(epoch, seq)`; a slot's successive tokens strictly
//!   grow. Reports about another incarnation are ignored
//!   ([`IgnoreReason::StaleIncarnation`]).
//!
//! [`Reason::Leave`]: crate::transport::Reason::Leave

mod command;
mod event;
mod fingerprint;
mod ids;
mod placement;
mod spec;
mod state;

pub use command::{
    Command, ExitCause, IgnoreReason, Output, Refusal, StopReason, SupervisionEvent,
};
pub use event::{Event, ViewChange};
pub use fingerprint::Fingerprint;
pub(crate) use ids::ChildName;
pub use ids::{ChildPath, FencingToken, IncarnationId};
pub use placement::{rendezvous, Placement, PlacementPolicy, SlotKey, ViewMember, MAX_WEIGHT};
pub use spec::{
    ChildKind, ChildSpec, Intensity, QuorumPolicy, RestartType, Shutdown, SpecError, Strategy,
    SupervisorSpec, TreeSpec, WorkerSpec, MAX_DEPTH,
};
pub use state::{ChildStatus, Engine, MergeOffer, SlotStatus};

#[cfg(test)]
mod rules_test;
#[cfg(test)]
mod testing;
