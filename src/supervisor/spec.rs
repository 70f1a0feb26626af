//! Supervisor specs: pure data, written in code and identical on every
//! member that runs the same build.
//!
//! A spec never holds the function that builds an actor. A worker names a
//! *kind* (a string key) and the runtime maps kinds to factories, so a spec
//! can travel in the ordered stream, be fingerprinted and be compared.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::placement::Placement;

mod canonical;

/// When a child that exited is started again (OTP's `restart`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartType {
    /// Always restarted, whatever the reason of the exit.
    Permanent,
    /// Restarted only after an abnormal exit (a crash).
    Transient,
    /// Never restarted; also not restarted when a sibling's failure makes the
    /// supervisor terminate it.
    Temporary,
}

/// How the runtime stops a child. Carried as data; the core never waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    /// Stop the actor at once, without a grace period.
    BrutalKill,
    /// Ask the actor to stop and kill it after this many milliseconds.
    Timeout {
        /// Grace period in milliseconds.
        ms: u64,
    },
    /// Ask the actor to stop and wait as long as it takes (usual for a
    /// child that is itself a supervisor).
    Infinity,
}

/// Which siblings restart when one child fails (OTP's strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Only the failed child restarts.
    OneForOne,
    /// Every child is stopped (in reverse start order) and all are started
    /// again (in start order).
    OneForAll,
    /// The failed child and every child after it in the spec restart.
    RestForOne,
}

/// Restart intensity: more than `max_restarts` restarts within `period_ms`
/// (stream time, see [`Event::Tick`](super::Event::Tick)) make the
/// supervisor give up and escalate to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts tolerated within the window (OTP's `intensity`).
    pub max_restarts: u32,
    /// Length of the window in milliseconds (OTP's `period`, in ms).
    pub period_ms: u64,
}

impl Default for Intensity {
    /// OTP's defaults: 1 restart in 5 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 1,
            period_ms: 5_000,
        }
    }
}

/// What a member does with its children while its partition has no quorum
/// (after Pacemaker's `no-quorum-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuorumPolicy {
    /// Stop every child; start nothing until quorum returns.
    Stop,
    /// Keep running children; start (and restart) nothing until quorum returns.
    Freeze,
    /// Behave as if the partition were quorate.
    Ignore,
}

/// A worker child: an actor of a named kind, placed by a policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The key the runtime maps to an actor factory.
    pub kind: String,
    /// Where the child runs.
    pub placement: Placement,
}

/// What a child is: a worker actor or a nested supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// An actor the runtime builds from its kind.
    Worker(WorkerSpec),
    /// A nested supervisor. It is not an actor: the core supervises its
    /// children directly, and "restarting" it restarts its subtree afresh.
    Supervisor(SupervisorSpec),
}

/// One child of a supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Unique among its siblings; names the child in paths.
    pub id: String,
    /// When the child is restarted.
    pub restart: RestartType,
    /// How the runtime stops it.
    pub shutdown: Shutdown,
    /// Worker or supervisor.
    pub kind: ChildKind,
}

impl ChildSpec {
    /// A permanent worker of `kind`, placed on any member, stopped with a
    /// 5 s grace period (OTP's worker default).
    pub fn worker(id: impl Into<String>, kind: impl Into<String>) -> Self {
        ChildSpec {
            id: id.into(),
            restart: RestartType::Permanent,
            shutdown: Shutdown::Timeout { ms: 5_000 },
            kind: ChildKind::Worker(WorkerSpec {
                kind: kind.into(),
                placement: Placement::default(),
            }),
        }
    }

    /// A permanent nested supervisor, stopped with [`Shutdown::Infinity`].
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        ChildSpec {
            id: id.into(),
            restart: RestartType::Permanent,
            shutdown: Shutdown::Infinity,
            kind: ChildKind::Supervisor(spec),
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown behaviour.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets the placement of a worker; a supervisor child ignores it.
    pub fn placement(mut self, placement: Placement) -> Self {
        if let ChildKind::Worker(w) = &mut self.kind {
            w.placement = placement;
        }
        self
    }
}

/// A supervisor: a strategy, an intensity and ordered children (the order is
/// the start order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SupervisorSpec {
    /// Which siblings restart with a failed child.
    pub strategy: Strategy,
    /// When to give up.
    pub intensity: Intensity,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// An empty supervisor with the default intensity.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: Intensity::default(),
            children: Vec::new(),
        }
    }

    /// Sets the intensity: at most `max_restarts` in `period_ms`.
    pub fn intensity(mut self, max_restarts: u32, period_ms: u64) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period_ms,
        };
        self
    }

    /// Appends a child.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}

/// A whole tree: its root supervisor and the quorum policy of its children.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeSpec {
    /// The root supervisor.
    pub root: SupervisorSpec,
    /// What happens without quorum.
    pub quorum_policy: QuorumPolicy,
}

impl TreeSpec {
    /// A tree with the [`QuorumPolicy::Stop`] policy.
    pub fn new(root: SupervisorSpec) -> Self {
        TreeSpec {
            root,
            quorum_policy: QuorumPolicy::Stop,
        }
    }

    /// Sets the quorum policy.
    pub fn quorum_policy(mut self, policy: QuorumPolicy) -> Self {
        self.quorum_policy = policy;
        self
    }

    /// The spec's stable fingerprint, equal on every process and build that
    /// holds the same spec (see [`Fingerprint`]).
    pub fn fingerprint(&self) -> Fingerprint {
        canonical::fingerprint(self)
    }

    /// Every worker kind the tree names, at any depth: what a member needs
    /// factories for to host all of it.
    pub fn worker_kinds(&self) -> BTreeSet<String> {
        fn walk(spec: &SupervisorSpec, depth: usize, out: &mut BTreeSet<String>) {
            if depth > MAX_DEPTH {
                return;
            }
            for c in &spec.children {
                match &c.kind {
                    ChildKind::Worker(w) => {
                        out.insert(w.kind.clone());
                    }
                    ChildKind::Supervisor(s) => walk(s, depth + 1, out),
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root, 0, &mut out);
        out
    }

    /// Checks what the engine relies on: non-empty ids unique among
    /// siblings, a non-empty worker kind, no node weighted twice, a non-zero
    /// intensity window, and a bounded nesting depth.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_supervisor(&self.root, &mut Vec::new())
    }
}

/// Deepest nesting of supervisors a tree may have. The engine recurses over
/// the tree, so the bound keeps a hostile spec from exhausting the stack.
pub const MAX_DEPTH: usize = 32;

/// Why a spec was refused. Refusing leaves every state unchanged; the same
/// spec is refused again, so a retry only helps after fixing it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SpecError {
    /// A child id is empty.
    #[error("a child under {parent:?} has an empty id")]
    EmptyId {
        /// Ids from the root to the supervisor holding the child.
        parent: Vec<String>,
    },
    /// Two siblings share an id.
    #[error("duplicate child id {id:?} under {parent:?}")]
    DuplicateId {
        /// Ids from the root to the supervisor holding the children.
        parent: Vec<String>,
        /// The repeated id.
        id: String,
    },
    /// A worker names no kind.
    #[error("worker {path:?} has an empty kind")]
    EmptyKind {
        /// Ids from the root to the worker.
        path: Vec<String>,
    },
    /// A placement gives a node two weights.
    #[error("worker {path:?} weights a node twice")]
    DuplicateWeight {
        /// Ids from the root to the worker.
        path: Vec<String>,
    },
    /// An intensity window of zero milliseconds can never hold a restart.
    #[error("supervisor {path:?} has an intensity period of 0 ms")]
    ZeroPeriod {
        /// Ids from the root to the supervisor.
        path: Vec<String>,
    },
    /// Supervisors nest deeper than [`MAX_DEPTH`].
    #[error("supervisors nest deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The tree name is empty.
    #[error("the tree name is empty")]
    EmptyTreeName,
}

fn validate_supervisor(spec: &SupervisorSpec, path: &mut Vec<String>) -> Result<(), SpecError> {
    if path.len() >= MAX_DEPTH {
        return Err(SpecError::TooDeep { max: MAX_DEPTH });
    }
    if spec.intensity.period_ms == 0 {
        return Err(SpecError::ZeroPeriod { path: path.clone() });
    }
    for (i, child) in spec.children.iter().enumerate() {
        if child.id.is_empty() {
            return Err(SpecError::EmptyId {
                parent: path.clone(),
            });
        }
        if spec.children[..i].iter().any(|c| c.id == child.id) {
            return Err(SpecError::DuplicateId {
                parent: path.clone(),
                id: child.id.clone(),
            });
        }
        path.push(child.id.clone());
        let checked = match &child.kind {
            ChildKind::Worker(w) if w.kind.is_empty() => {
                Err(SpecError::EmptyKind { path: path.clone() })
            }
            ChildKind::Worker(w) => {
                let mut nodes: Vec<_> = w.placement.weights.iter().map(|(n, _)| *n).collect();
                nodes.sort();
                let before = nodes.len();
                nodes.dedup();
                if nodes.len() == before {
                    Ok(())
                } else {
                    Err(SpecError::DuplicateWeight { path: path.clone() })
                }
            }
            ChildKind::Supervisor(s) => validate_supervisor(s, path),
        };
        path.pop();
        checked?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::placement::PlacementPolicy;
    use crate::transport::NodeId;

    fn tree() -> TreeSpec {
        TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::worker("a", "kind-a"))
                .child(ChildSpec::supervisor(
                    "sub",
                    SupervisorSpec::new(Strategy::RestForOne)
                        .child(ChildSpec::worker("b", "kind-b")),
                )),
        )
    }

    #[test]
    fn a_valid_spec_passes() {
        assert_eq!(tree().validate(), Ok(()));
    }

    #[test]
    fn duplicate_sibling_ids_are_refused() {
        let mut t = tree();
        t.root.children.push(ChildSpec::worker("a", "other"));
        assert!(matches!(t.validate(), Err(SpecError::DuplicateId { id, .. }) if id == "a"));
    }

    #[test]
    fn empty_ids_kinds_and_zero_periods_are_refused() {
        let t = TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("", "k")),
        );
        assert!(matches!(t.validate(), Err(SpecError::EmptyId { .. })));
        let t = TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("x", "")),
        );
        assert!(matches!(t.validate(), Err(SpecError::EmptyKind { .. })));
        let t = TreeSpec::new(SupervisorSpec::new(Strategy::OneForOne).intensity(1, 0));
        assert!(matches!(t.validate(), Err(SpecError::ZeroPeriod { .. })));
    }

    #[test]
    fn a_node_weighted_twice_is_refused() {
        let p = Placement::any().weight(NodeId(1), 2).weight(NodeId(1), 3);
        let t = TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::worker("x", "k").placement(p)),
        );
        assert!(matches!(
            t.validate(),
            Err(SpecError::DuplicateWeight { .. })
        ));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let mut sup = SupervisorSpec::new(Strategy::OneForOne);
        for i in 0..MAX_DEPTH + 1 {
            sup = SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::supervisor(format!("s{i}"), sup));
        }
        assert_eq!(
            TreeSpec::new(sup).validate(),
            Err(SpecError::TooDeep { max: MAX_DEPTH })
        );
    }

    #[test]
    fn fingerprints_are_stable_and_tell_specs_apart() {
        let a = tree();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        // Pinned value: a change of the canonical encoding must be deliberate.
        assert_eq!(a.fingerprint(), crate::supervisor::Fingerprint(GOLDEN));
        let mut b = tree();
        b.root.strategy = Strategy::OneForAll;
        assert_ne!(a.fingerprint(), b.fingerprint());
        let c = tree().quorum_policy(QuorumPolicy::Freeze);
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut d = tree();
        d.root.children[0] = d.root.children[0]
            .clone()
            .placement(Placement::new(PlacementPolicy::Singleton));
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn weight_and_exclusion_order_does_not_change_the_fingerprint() {
        let p1 = Placement::any()
            .weight(NodeId(1), 2)
            .weight(NodeId(2), 3)
            .exclude(NodeId(4))
            .exclude(NodeId(3));
        let p2 = Placement::any()
            .weight(NodeId(2), 3)
            .weight(NodeId(1), 2)
            .exclude(NodeId(3))
            .exclude(NodeId(4));
        let t = |p: Placement| {
            TreeSpec::new(
                SupervisorSpec::new(Strategy::OneForOne)
                    .child(ChildSpec::worker("x", "k").placement(p)),
            )
        };
        assert_eq!(t(p1).fingerprint(), t(p2).fingerprint());
    }

    const GOLDEN: u64 = 0x5f7c3e73c594362f;
}
