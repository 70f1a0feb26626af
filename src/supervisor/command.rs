//! Outputs of the engine: [`Command`]s the runtime executes and
//! [`SupervisionEvent`]s it hands to subscribers.
//!
//! Every member computes the same outputs; a runtime executes only the
//! commands whose `host` (or `by`) is its own member and may publish all
//! the events.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::ids::{ChildName, ChildPath, FencingToken, IncarnationId};
use super::placement::SlotKey;
use super::spec::{Shutdown, SpecError};
use crate::transport::{went, Member, Reason};

/// Why the engine stops a running incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopReason {
    /// A sibling failed and the strategy restarts this child too.
    SiblingRestart,
    /// Its supervisor exceeded its restart intensity and gave up.
    SupervisorGaveUp,
    /// The partition lost quorum under [`QuorumPolicy::Stop`](super::QuorumPolicy::Stop).
    QuorumLost,
    /// The view changed and placement now picks another host.
    Rebalanced,
    /// After a merge another incarnation of the same slot won (larger
    /// fencing token).
    Duplicate,
    /// After a merge, its tree lost to a tree of the same name with
    /// another spec that was started first.
    Superseded,
    /// It runs under a supervisor that is no longer alive.
    Orphaned,
}

/// Why, in a few words: `quorum lost`, `placement moved it`.
impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::SiblingRestart => "a sibling restarts",
            StopReason::SupervisorGaveUp => "its supervisor gave up",
            StopReason::QuorumLost => "quorum lost",
            StopReason::Rebalanced => "placement moved it",
            StopReason::Duplicate => "a duplicate after a merge",
            StopReason::Superseded => "its tree was superseded after a merge",
            StopReason::Orphaned => "its supervisor is gone",
        })
    }
}

/// Why a [`Event::TreeStarted`](super::Event::TreeStarted) was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A tree of that name already runs with another spec.
    #[error("a tree of that name runs with another spec ({expected}, not {got})")]
    SpecMismatch {
        /// Fingerprint of the running tree.
        expected: Fingerprint,
        /// Fingerprint of the refused spec.
        got: Fingerprint,
    },
    /// The fingerprint sent does not match the spec sent (a different
    /// encoding or a corrupted message).
    #[error("the fingerprint sent ({claimed}) is not the spec's ({computed})")]
    FingerprintMismatch {
        /// What the sender claimed.
        claimed: Fingerprint,
        /// What the spec hashes to.
        computed: Fingerprint,
    },
    /// The spec is invalid.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[source] SpecError),
}

/// Something the runtime must do. Only the addressed member acts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `host` builds a fresh actor of `kind` for this slot.
    StartChild {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// The factory key.
        kind: String,
        /// The member that runs it.
        host: Member,
        /// The new incarnation (report it back in `ChildExited`).
        incarnation: IncarnationId,
        /// Its fencing token.
        token: FencingToken,
    },
    /// `host` stops this incarnation (if it still runs it).
    StopChild {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// The member that runs it.
        host: Member,
        /// The incarnation to stop; any other incarnation is left alone.
        incarnation: IncarnationId,
        /// Its fencing token.
        token: FencingToken,
        /// How to stop it.
        shutdown: Shutdown,
        /// Why.
        reason: StopReason,
    },
    /// The root supervisor of `tree` gave up: every child is stopped and
    /// the application must decide (the process keeps running; a new
    /// `TreeStarted` with the same spec starts the tree afresh).
    Escalated {
        /// The tree.
        tree: String,
        /// Stream position of the decision.
        at: FencingToken,
    },
    /// Tell `by` that its tree start was refused.
    RefuseTree {
        /// The tree name.
        name: String,
        /// The member that asked.
        by: Member,
        /// Why.
        why: Refusal,
    },
}

/// Why an incarnation is no longer running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitCause {
    /// Its host reported a normal stop.
    Normal,
    /// Its host reported a crash or panic.
    Crashed,
    /// Its host left the view for this reason.
    HostLeft(Reason),
}

/// `normal exit`, `crash`, `host left (node down)`.
impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Normal => f.write_str("normal exit"),
            ExitCause::Crashed => f.write_str("crash"),
            ExitCause::HostLeft(reason) => write!(f, "host {}", went(*reason)),
        }
    }
}

/// Why an event changed nothing. Every member ignores the same events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoreReason {
    /// An exit report for an incarnation that is not the running one.
    StaleIncarnation,
    /// An event names a tree that does not exist.
    UnknownTree,
    /// An event names a child that is not a worker of the tree.
    UnknownChild,
    /// A tree start repeated an identical, running tree.
    AlreadyStarted,
    /// A state offer outside a merge, or from a member not in the view.
    UnexpectedOffer,
    /// A quorum report that predates the last `NodeDown` view change (it
    /// still lists a departed node).
    StaleQuorum,
}

/// Why, in a few words: `stale incarnation`, `unknown tree`.
impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IgnoreReason::StaleIncarnation => "stale incarnation",
            IgnoreReason::UnknownTree => "unknown tree",
            IgnoreReason::UnknownChild => "unknown child",
            IgnoreReason::AlreadyStarted => "tree already started",
            IgnoreReason::UnexpectedOffer => "unexpected state offer",
            IgnoreReason::StaleQuorum => "stale quorum report",
        })
    }
}

/// A fact about supervision, for subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SupervisionEvent {
    /// A tree was created (or started again after its root gave up).
    TreeStarted {
        /// The tree name.
        name: String,
        /// Its spec's fingerprint.
        fingerprint: Fingerprint,
        /// Who asked.
        by: Member,
    },
    /// A tree start was refused.
    TreeRefused {
        /// The tree name.
        name: String,
        /// Who asked.
        by: Member,
        /// Why.
        why: Refusal,
    },
    /// A slot was started for the first time.
    ChildStarted {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// Where.
        host: Member,
        /// The incarnation.
        incarnation: IncarnationId,
        /// Its token.
        token: FencingToken,
    },
    /// A slot was started again (after a failure, a strategy restart, a
    /// quorum stop or a move).
    ChildRestarted {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// Where.
        host: Member,
        /// The new incarnation.
        incarnation: IncarnationId,
        /// Its token.
        token: FencingToken,
    },
    /// An incarnation ended on its own (not stopped by the engine).
    ChildExited {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// Where it ran.
        host: Member,
        /// The incarnation.
        incarnation: IncarnationId,
        /// Why.
        cause: ExitCause,
    },
    /// The engine stopped an incarnation.
    ChildStopped {
        /// The child.
        path: ChildPath,
        /// Which instance.
        slot: SlotKey,
        /// Where it ran.
        host: Member,
        /// The incarnation.
        incarnation: IncarnationId,
        /// Why.
        reason: StopReason,
    },
    /// A supervisor exceeded its intensity, stopped its children and
    /// escalated to its parent (or, for the root, to the application).
    SupervisorEscalated {
        /// The supervisor (`ids` empty for the root).
        supervisor: ChildPath,
        /// Stream position of the decision.
        at: FencingToken,
    },
    /// A child waits (its status stays [`SlotStatus::Pending`](crate::supervisor::SlotStatus::Pending))
    /// because no member of the view said it can build its kind: nobody
    /// started the tree with a factory for it (a typo in the spec's kind,
    /// or only members that take part without hosting). It starts as soon
    /// as a member that can build it starts the tree. Reported once each
    /// time the child starts waiting for this reason.
    ChildWaitsForHost {
        /// The child.
        path: ChildPath,
        /// The kind nobody can build.
        kind: String,
    },
    /// The partition lost quorum.
    QuorumLost,
    /// The partition regained quorum.
    QuorumRegained,
    /// A merge began: decisions wait until every side offered its state.
    MergeStarted,
    /// Every side offered; the states were merged.
    MergeResolved {
        /// How many offers were merged.
        offers: usize,
    },
    /// The event changed nothing.
    Ignored {
        /// Why.
        why: IgnoreReason,
    },
}

/// One line, children by their group-wide name ([`crate::child_name`]):
/// `jobs/ingest restarted on node2/1008 (incarnation #4, token 3.17)`,
/// `jobs/cache@node3 #2 on node3/1009 stopped: quorum lost`.
impl fmt::Display for SupervisionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisionEvent::TreeStarted {
                name,
                fingerprint,
                by,
            } => write!(f, "tree {name} started by {by} (spec {fingerprint})"),
            SupervisionEvent::TreeRefused { name, by, why } => {
                write!(f, "tree {name} refused to {by}: {why}")
            }
            SupervisionEvent::ChildStarted {
                path,
                slot,
                host,
                incarnation,
                token,
            } => write!(
                f,
                "{} started on {host} (incarnation {incarnation}, token {token})",
                ChildName(path, slot)
            ),
            SupervisionEvent::ChildRestarted {
                path,
                slot,
                host,
                incarnation,
                token,
            } => write!(
                f,
                "{} restarted on {host} (incarnation {incarnation}, token {token})",
                ChildName(path, slot)
            ),
            SupervisionEvent::ChildExited {
                path,
                slot,
                host,
                incarnation,
                cause,
            } => write!(
                f,
                "{} {incarnation} on {host} ended: {cause}",
                ChildName(path, slot)
            ),
            SupervisionEvent::ChildStopped {
                path,
                slot,
                host,
                incarnation,
                reason,
            } => write!(
                f,
                "{} {incarnation} on {host} stopped: {reason}",
                ChildName(path, slot)
            ),
            SupervisionEvent::SupervisorEscalated { supervisor, at } => {
                write!(f, "supervisor {supervisor} gave up and escalated (at {at})")
            }
            SupervisionEvent::ChildWaitsForHost { path, kind } => write!(
                f,
                "{path} waits: no member can build kind {kind:?} (none started the tree with a factory for it)"
            ),
            SupervisionEvent::QuorumLost => f.write_str("quorum lost"),
            SupervisionEvent::QuorumRegained => f.write_str("quorum regained"),
            SupervisionEvent::MergeStarted => {
                f.write_str("merge started: decisions wait for every side's state")
            }
            SupervisionEvent::MergeResolved { offers } => {
                write!(f, "merge resolved ({offers} offers)")
            }
            SupervisionEvent::Ignored { why } => write!(f, "ignored: {why}"),
        }
    }
}

/// What one event produced, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Commands for the runtime.
    pub commands: Vec<Command>,
    /// Events for subscribers.
    pub events: Vec<SupervisionEvent>,
}

impl Output {
    /// Appends another output.
    pub fn extend(&mut self, other: Output) {
        self.commands.extend(other.commands);
        self.events.extend(other.events);
    }

    pub(crate) fn ignored(why: IgnoreReason) -> Self {
        tracing::debug!(?why, "supervision event ignored");
        Output {
            commands: Vec::new(),
            events: vec![SupervisionEvent::Ignored { why }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::NodeId;

    #[test]
    fn supervision_events_read_as_short_lines() {
        let host = Member::new(2, 1008);
        let path = ChildPath::new("jobs", ["ingest"]);
        let token = FencingToken { epoch: 3, seq: 17 };
        let restarted = SupervisionEvent::ChildRestarted {
            path: path.clone(),
            slot: SlotKey::Single,
            host,
            incarnation: IncarnationId(4),
            token,
        };
        assert_eq!(
            restarted.to_string(),
            "jobs/ingest restarted on node2/1008 (incarnation #4, token 3.17)"
        );
        let stopped = SupervisionEvent::ChildStopped {
            path: ChildPath::new("jobs", ["cache"]),
            slot: SlotKey::Node(NodeId(3)),
            host: Member::new(3, 1009),
            incarnation: IncarnationId(2),
            reason: StopReason::QuorumLost,
        };
        assert_eq!(
            stopped.to_string(),
            "jobs/cache@node3 #2 on node3/1009 stopped: quorum lost"
        );
        let exited = SupervisionEvent::ChildExited {
            path: ChildPath::new("jobs", ["agent"]),
            slot: SlotKey::Member(host),
            host,
            incarnation: IncarnationId(5),
            cause: ExitCause::HostLeft(Reason::NodeDown),
        };
        assert_eq!(
            exited.to_string(),
            "jobs/agent@node2/1008 #5 on node2/1008 ended: host left (node down)"
        );
        let escalated = SupervisionEvent::SupervisorEscalated {
            supervisor: ChildPath::new("jobs", ["pipeline"]),
            at: token,
        };
        assert_eq!(
            escalated.to_string(),
            "supervisor jobs/pipeline gave up and escalated (at 3.17)"
        );
        let started = SupervisionEvent::TreeStarted {
            name: "jobs".into(),
            fingerprint: Fingerprint(0xab),
            by: host,
        };
        assert_eq!(
            started.to_string(),
            "tree jobs started by node2/1008 (spec 00000000000000ab)"
        );
        assert_eq!(SupervisionEvent::QuorumLost.to_string(), "quorum lost");
        assert_eq!(
            SupervisionEvent::MergeResolved { offers: 2 }.to_string(),
            "merge resolved (2 offers)"
        );
        let ignored = SupervisionEvent::Ignored {
            why: IgnoreReason::StaleIncarnation,
        };
        assert_eq!(ignored.to_string(), "ignored: stale incarnation");
    }

    #[test]
    fn exit_causes_and_stop_reasons_are_a_few_words() {
        assert_eq!(ExitCause::Crashed.to_string(), "crash");
        assert_eq!(ExitCause::Normal.to_string(), "normal exit");
        assert_eq!(ExitCause::HostLeft(Reason::Leave).to_string(), "host left");
        assert_eq!(StopReason::Rebalanced.to_string(), "placement moved it");
        assert_eq!(StopReason::SiblingRestart.to_string(), "a sibling restarts");
    }
}
