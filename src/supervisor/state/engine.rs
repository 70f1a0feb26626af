//! The public engine: one side's [`Core`] plus, while partitions merge, the
//! merge round.

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::merge::{MergeOffer, MergeRound};
use super::tree::{NodeState, Slot, SupState};
use crate::supervisor::command::{IgnoreReason, Output, SupervisionEvent};
use crate::supervisor::event::{Event, ViewChange};
use crate::supervisor::fingerprint::Fingerprint;
use crate::supervisor::ids::{ChildPath, FencingToken, IncarnationId};
use crate::supervisor::placement::{PlacementPolicy, SlotKey};
use crate::supervisor::spec::{ChildKind, RestartType, SupervisorSpec, TreeSpec};
use crate::transport::{Member, NodeId, Reason};

/// The pure decision core of the distributed supervision tree.
///
/// Feed it every event of the ordered stream, in order; it returns what to
/// do. Two engines fed the same events are equal (`==`) and return equal
/// outputs. It never panics, reads no clock and does no I/O. The whole
/// state is `Serialize`, so it can be handed to a joiner or recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    core: Core,
    merge: Option<Box<MergeRound>>,
}

/// The state of one slot, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotStatus {
    /// Running this incarnation.
    Running {
        /// Where.
        host: Member,
        /// Which incarnation.
        incarnation: IncarnationId,
        /// Its token.
        token: FencingToken,
    },
    /// Wants to run; waits for quorum or an eligible host.
    Pending,
    /// A transient child that exited normally.
    Stopped,
    /// A temporary child that ended; never started again.
    Removed,
}

/// One slot of one worker, for inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// The child.
    pub path: ChildPath,
    /// Which instance.
    pub slot: SlotKey,
    /// Its restart type.
    pub restart: RestartType,
    /// Its placement policy.
    pub policy: PlacementPolicy,
    /// Whether every supervisor above it is alive.
    pub supervised: bool,
    /// Its state.
    pub status: SlotStatus,
}

impl ChildStatus {
    /// The name under which this instance, while it runs, is reachable in
    /// the group's registry (with [`Group::remote`](crate::Group::remote)),
    /// if its factory gave it handlers (`Child::serving`):
    ///
    /// - `tree/id` for the single instance of an `Any`, `Pinned` or
    ///   `Singleton` child: the tree's name, then the child ids from the
    ///   root down, one `/id` per level (`jobs/indexer`, or
    ///   `jobs/pool/indexer` under a nested supervisor `pool`);
    /// - `tree/id@node<N>` for the instance of a `OnePerNode` child on
    ///   node `N` (`jobs/agent@node2`);
    /// - `tree/id@node<N>/<pid>` for the instance of an `OnEveryMember`
    ///   child on member `(N, pid)` (`jobs/probe@node2/4242`).
    ///
    /// Its host registers the name once it has built the child, an ordered
    /// message of its own that comes after the start: to reach a child
    /// just started, wait for the name with
    /// [`Group::wait_for_name`](crate::Group::wait_for_name).
    pub fn name(&self) -> String {
        crate::supervisor::ChildName(&self.path, &self.slot).to_string()
    }
}

impl Engine {
    /// An engine that has seen nothing: empty view, no trees, not quorate.
    pub fn new() -> Self {
        Engine::default()
    }

    /// Applies the next event of the ordered stream.
    pub fn handle(&mut self, event: Event) -> Output {
        if let Some(round) = self.merge.as_mut() {
            let mut out = Output::default();
            match event {
                Event::StateOffered { from, offer } => {
                    round.consumed = round.consumed.saturating_add(1);
                    if round.view.binary_search(&from).is_err()
                        || round.offers.iter().any(|(m, _)| *m == from)
                    {
                        return Output::ignored(IgnoreReason::UnexpectedOffer);
                    }
                    round.offers.push((from, offer));
                }
                Event::ViewChanged(vc) => {
                    round.note_view(&vc);
                    round.buffered.push(Event::ViewChanged(vc));
                }
                other => round.buffered.push(other),
            }
            if round.covered() {
                if let Some(round) = self.merge.take() {
                    let (core, resolved) = round.resolve();
                    self.core = core;
                    out.extend(resolved);
                }
            }
            return out;
        }
        match event {
            Event::ViewChanged(vc) if is_merge(&vc) && !self.core.view.is_empty() => {
                tracing::info!(
                    epoch = vc.epoch,
                    "partitions merge; waiting for every side's state"
                );
                self.merge = Some(Box::new(MergeRound::new(&vc)));
                Output {
                    commands: Vec::new(),
                    events: vec![SupervisionEvent::MergeStarted],
                }
            }
            other => self.core.apply(other),
        }
    }

    /// [`Event::ViewChanged`].
    pub fn handle_view_change(&mut self, change: ViewChange) -> Output {
        self.handle(Event::ViewChanged(change))
    }

    /// [`Event::ChildExited`].
    pub fn handle_child_exited(
        &mut self,
        path: ChildPath,
        incarnation: IncarnationId,
        host: Member,
        normal: bool,
    ) -> Output {
        self.handle(Event::ChildExited {
            path,
            incarnation,
            host,
            normal,
        })
    }

    /// [`Event::Tick`].
    pub fn handle_tick(&mut self, now_ms: u64) -> Output {
        self.handle(Event::Tick { now_ms })
    }

    /// [`Event::QuorumChanged`].
    pub fn handle_quorum(&mut self, quorate: bool, nodes: Vec<NodeId>) -> Output {
        self.handle(Event::QuorumChanged { quorate, nodes })
    }

    /// [`Event::TreeStarted`], with the fingerprint the sender computed and
    /// the worker kinds the sender can build.
    pub fn handle_tree_started(
        &mut self,
        name: impl Into<String>,
        fingerprint: Fingerprint,
        spec: TreeSpec,
        by: Member,
        kinds: Vec<String>,
    ) -> Output {
        self.handle(Event::TreeStarted {
            name: name.into(),
            fingerprint,
            spec,
            by,
            kinds,
        })
    }

    /// [`Event::StateOffered`].
    pub fn handle_state_offered(&mut self, from: Member, offer: MergeOffer) -> Output {
        self.handle(Event::StateOffered { from, offer })
    }

    /// While a merge is in progress, this side's state to multicast as
    /// [`Event::StateOffered`]; `None` otherwise.
    pub fn merge_offer(&self) -> Option<MergeOffer> {
        self.merge.as_ref().map(|round| MergeOffer {
            core: self.core.clone(),
            left: round.trigger_left.clone(),
            epoch: round.trigger_epoch,
            side: Vec::new(),
        })
    }

    /// The members of the view that started (or joined) the tree `name`
    /// with factories: the only ones its children are placed on. Sorted;
    /// empty for an unknown tree.
    pub fn tree_hosts(&self, name: &str) -> Vec<Member> {
        let Some(tree) = self.core.trees.get(name) else {
            return Vec::new();
        };
        self.core
            .view
            .iter()
            .map(|v| v.member)
            .filter(|m| tree.hosts.get(m).is_some_and(|h| !h.kinds.is_empty()))
            .collect()
    }

    /// Whether `member` started (or joined) the live tree `name` and is
    /// still in its view: its start, with or without factories, is in.
    pub fn took_part(&self, name: &str, member: Member) -> bool {
        self.core
            .trees
            .get(name)
            .is_some_and(|t| t.root.alive && t.hosts.contains_key(&member))
    }

    /// Whether `local` should multicast [`Engine::merge_offer`] now: a
    /// merge is in progress, `local` is the smallest member of its own side
    /// still in the view, and no offer covering it has arrived. Ask again
    /// after every event of the round (the elected member may leave).
    pub fn should_offer(&self, local: Member) -> bool {
        let Some(round) = &self.merge else {
            return false;
        };
        let representative = self
            .core
            .view
            .iter()
            .map(|v| v.member)
            .find(|m| round.view.binary_search(m).is_ok());
        representative == Some(local) && !round.covers(local)
    }

    /// Whether a state that came from another member (a snapshot) is one
    /// this engine can run on: every list the engine binary-searches is
    /// sorted without duplicates, every tree's spec is valid and matches
    /// its fingerprint, and every tree's state has its spec's shape. The
    /// engine never panics on a state that is not, but it would decide
    /// nonsense from it; a snapshot that fails this is refused whole.
    pub fn is_sane(&self) -> bool {
        let core_sane = |core: &Core| {
            core.view.windows(2).all(|w| w[0].member < w[1].member)
                && core.trees.iter().all(|(name, tree)| {
                    !name.is_empty()
                        && tree.spec.validate().is_ok()
                        && tree.spec.fingerprint() == tree.fingerprint
                        && shape_matches(&tree.spec.root, &tree.root)
                })
        };
        let sorted = |v: &[Member]| v.windows(2).all(|w| w[0] < w[1]);
        core_sane(&self.core)
            && self.merge.as_ref().is_none_or(|round| {
                sorted(&round.view)
                    && round
                        .offers
                        .iter()
                        .all(|(_, offer)| core_sane(&offer.core) && sorted(&offer.side))
            })
    }

    /// Whether a merge round is waiting for offers.
    pub fn is_merging(&self) -> bool {
        self.merge.is_some()
    }

    /// Events applied (the stream position of the last one).
    pub fn seq(&self) -> u64 {
        self.core.seq
    }

    /// The current fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.core.epoch
    }

    /// The stream time: the largest tick seen.
    pub fn now_ms(&self) -> u64 {
        self.core.now_ms
    }

    /// Whether the last quorum event said quorate.
    pub fn quorate(&self) -> bool {
        self.core.quorate
    }

    /// Whether a `NodeDown` view change came after the last quorum report:
    /// quorum is unknown and nothing starts until a fresh report.
    pub fn quorum_fenced(&self) -> bool {
        self.core.quorum_fence.is_some()
    }

    /// The current view, sorted.
    pub fn view(&self) -> Vec<Member> {
        self.core.view.iter().map(|v| v.member).collect()
    }

    /// The names of the started trees, sorted.
    pub fn tree_names(&self) -> Vec<String> {
        self.core.trees.keys().cloned().collect()
    }

    /// The spec a started tree runs with (the first start of its name).
    pub fn tree_spec(&self, name: &str) -> Option<&TreeSpec> {
        self.core.trees.get(name).map(|t| &t.spec)
    }

    /// The fingerprint of a started tree.
    pub fn tree_fingerprint(&self, name: &str) -> Option<Fingerprint> {
        self.core.trees.get(name).map(|t| t.fingerprint)
    }

    /// Whether a tree's root supervisor is alive (`None`: no such tree).
    pub fn tree_alive(&self, name: &str) -> Option<bool> {
        self.core.trees.get(name).map(|t| t.root.alive)
    }

    /// Whether `incarnation` on `host` is the running incarnation of a slot
    /// of `path`. A runtime rejects commands and reports that fail this.
    pub fn is_current(&self, path: &ChildPath, incarnation: IncarnationId, host: Member) -> bool {
        self.children().iter().any(|c| {
            c.path == *path
                && matches!(c.status, SlotStatus::Running { host: h, incarnation: i, .. } if h == host && i == incarnation)
        })
    }

    /// Every slot of every worker, in tree order.
    pub fn children(&self) -> Vec<ChildStatus> {
        let mut out = Vec::new();
        for (name, tree) in &self.core.trees {
            collect(
                name,
                &tree.spec.root,
                &tree.root,
                &mut Vec::new(),
                true,
                &mut out,
            );
        }
        out
    }

    /// The worker kind (factory key) of the child at `path`, from the spec
    /// of its tree.
    pub fn worker_kind(&self, path: &ChildPath) -> Option<String> {
        let mut spec = &self.core.trees.get(&path.tree)?.spec.root;
        let (last, parents) = path.ids.split_last()?;
        for id in parents {
            match &spec.children.iter().find(|c| &c.id == id)?.kind {
                ChildKind::Supervisor(inner) => spec = inner,
                ChildKind::Worker(_) => return None,
            }
        }
        match &spec.children.iter().find(|c| &c.id == last)?.kind {
            ChildKind::Worker(w) => Some(w.kind.clone()),
            ChildKind::Supervisor(_) => None,
        }
    }

    /// The running slots, in tree order.
    pub fn running(&self) -> Vec<ChildStatus> {
        self.children()
            .into_iter()
            .filter(|c| matches!(c.status, SlotStatus::Running { .. }))
            .collect()
    }
}

/// Whether `st` has the shape `spec` gives it (depth is bounded by the
/// spec, which is validated first).
fn shape_matches(spec: &SupervisorSpec, st: &SupState) -> bool {
    spec.children.len() == st.children.len()
        && spec
            .children
            .iter()
            .zip(&st.children)
            .all(|(cspec, cst)| match (&cspec.kind, cst) {
                (ChildKind::Worker(_), NodeState::Worker(ws)) => {
                    ws.slots.windows(2).all(|w| w[0].0 < w[1].0)
                }
                (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => shape_matches(s, ss),
                _ => false,
            })
}

fn is_merge(vc: &ViewChange) -> bool {
    vc.joined.iter().any(|c| c.reason == Reason::NodeUp)
}

fn collect(
    tree: &str,
    spec: &SupervisorSpec,
    st: &SupState,
    ids: &mut Vec<String>,
    supervised: bool,
    out: &mut Vec<ChildStatus>,
) {
    let supervised = supervised && st.alive;
    for (cspec, cst) in spec.children.iter().zip(&st.children) {
        ids.push(cspec.id.clone());
        match (&cspec.kind, cst) {
            (ChildKind::Worker(w), NodeState::Worker(ws)) => {
                for (key, slot) in &ws.slots {
                    out.push(ChildStatus {
                        path: ChildPath {
                            tree: tree.to_owned(),
                            ids: ids.clone(),
                        },
                        slot: *key,
                        restart: cspec.restart,
                        policy: w.placement.policy,
                        supervised,
                        status: match slot {
                            Slot::Running(r) => SlotStatus::Running {
                                host: r.host,
                                incarnation: r.incarnation,
                                token: r.token,
                            },
                            Slot::Pending { .. } => SlotStatus::Pending,
                            Slot::Stopped => SlotStatus::Stopped,
                            Slot::Removed => SlotStatus::Removed,
                        },
                    });
                }
            }
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                collect(tree, s, ss, ids, supervised, out)
            }
            _ => {}
        }
        ids.pop();
    }
}
