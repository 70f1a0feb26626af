//! The deterministic state of one side of the group and how each ordered
//! event changes it. Merges are handled one level up, in the engine; here a
//! `NodeUp` join is an ordinary join.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::tree::{
    self, exited_event, on_child_down, reconcile, running_slots, stop_all, Ctx, Host, Slot,
    SupState, Tree,
};
use crate::supervisor::command::{
    Command, ExitCause, IgnoreReason, Output, Refusal, StopReason, SupervisionEvent,
};
use crate::supervisor::event::{Event, ViewChange};
use crate::supervisor::fingerprint::Fingerprint;
use crate::supervisor::ids::{ChildPath, FencingToken, IncarnationId};
use crate::supervisor::placement::{SlotKey, ViewMember};
use crate::supervisor::spec::{QuorumPolicy, SpecError, TreeSpec};
use crate::transport::{Member, MemberChange, NodeId, Reason};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Core {
    /// Events applied so far: the stream position.
    pub(crate) seq: u64,
    /// Largest epoch seen.
    pub(crate) epoch: u64,
    /// Stream time: the largest tick seen.
    pub(crate) now_ms: u64,
    pub(crate) quorate: bool,
    /// Nodes that left with `NodeDown` since the last quorum report: until
    /// a report without them arrives, quorum is unknown and nothing starts
    /// (the minority of a partition must not restart what the majority
    /// runs in the moment before it learns it lost quorum).
    pub(crate) quorum_fence: Option<Vec<NodeId>>,
    /// Sorted by member.
    pub(crate) view: Vec<ViewMember>,
    pub(crate) next_incarnation: u64,
    pub(crate) trees: BTreeMap<String, Tree>,
}

impl Core {
    pub(crate) fn token(&self) -> FencingToken {
        FencingToken {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    pub(crate) fn apply(&mut self, event: Event) -> Output {
        self.seq = self.seq.saturating_add(1);
        match event {
            Event::ViewChanged(vc) => self.apply_view(vc),
            Event::ChildExited {
                path,
                incarnation,
                host,
                normal,
            } => self.apply_exit(path, incarnation, host, normal),
            Event::Tick { now_ms } => {
                if now_ms < self.now_ms {
                    tracing::trace!(
                        now_ms,
                        stream_ms = self.now_ms,
                        "tick behind the stream time"
                    );
                }
                self.now_ms = self.now_ms.max(now_ms);
                Output::default()
            }
            Event::QuorumChanged { quorate, nodes } => self.apply_quorum(quorate, nodes),
            Event::TreeStarted {
                name,
                fingerprint,
                spec,
                by,
                kinds,
            } => self.apply_tree_started(name, fingerprint, spec, by, kinds),
            Event::StateOffered { .. } => Output::ignored(IgnoreReason::UnexpectedOffer),
        }
    }

    /// Runs `f` on every tree with a context, then reconciles the trees.
    fn for_trees(
        &mut self,
        rebalance: bool,
        mut f: impl FnMut(&mut Tree, &mut Ctx<'_>, bool),
    ) -> Output {
        let mut out = Output::default();
        let token = self.token();
        let Core {
            view,
            trees,
            next_incarnation,
            quorate,
            quorum_fence,
            now_ms,
            ..
        } = self;
        let quorum_known = *quorate && quorum_fence.is_none();
        for (name, tree) in trees.iter_mut() {
            let allow_start = quorum_known || tree.spec.quorum_policy == QuorumPolicy::Ignore;
            // Lent to the context while the tree's state changes (nothing
            // in a pass changes who hosts the tree).
            let hosts = std::mem::take(&mut tree.hosts);
            let mut ctx = Ctx {
                tree: name,
                view,
                hosts: &hosts,
                now_ms: *now_ms,
                token,
                next_incarnation,
                out: &mut out,
            };
            f(tree, &mut ctx, allow_start);
            let Tree { spec, root, .. } = tree;
            reconcile(
                &spec.root,
                root,
                &mut Vec::new(),
                &mut ctx,
                allow_start,
                rebalance,
            );
            tree.hosts = hosts;
        }
        out
    }

    pub(crate) fn reconcile_all(&mut self, rebalance: bool) -> Output {
        self.for_trees(rebalance, |_, _, _| {})
    }

    fn apply_view(&mut self, vc: ViewChange) -> Output {
        if vc.epoch < self.epoch {
            tracing::debug!(
                epoch = vc.epoch,
                current = self.epoch,
                "view epoch went back; keeping the larger one"
            );
        }
        self.epoch = self.epoch.max(vc.epoch);
        let mut members = vc.members;
        members.sort();
        members.dedup();
        let since = |m: &Member| {
            self.view
                .binary_search_by_key(m, |v| v.member)
                .map_or(self.seq, |i| self.view[i].since)
        };
        let new_view: Vec<ViewMember> = members
            .iter()
            .map(|m| ViewMember {
                member: *m,
                since: since(m),
            })
            .collect();
        // A member that vanished without a reason is treated as crashed:
        // the safe choice, since its children are then restarted.
        let departed: BTreeMap<Member, Reason> = self
            .view
            .iter()
            .filter(|v| members.binary_search(&v.member).is_err())
            .map(|v| {
                let reason = reason_of(&vc.left, v.member).unwrap_or(Reason::NodeDown);
                (v.member, reason)
            })
            .collect();
        for change in &vc.left {
            if members.binary_search(&change.member).is_ok() {
                tracing::warn!(member = %change.member, "confchg lists a member as left and present; keeping it");
            }
        }
        let mut gone: Vec<NodeId> = departed
            .iter()
            .filter(|(_, r)| **r == Reason::NodeDown)
            .map(|(m, _)| m.node)
            .collect();
        if !gone.is_empty() {
            gone.extend(self.quorum_fence.take().unwrap_or_default());
            gone.sort();
            gone.dedup();
            self.quorum_fence = Some(gone);
        }
        self.view = new_view;
        for tree in self.trees.values_mut() {
            tree.hosts.retain(|m, _| members.binary_search(m).is_ok());
        }
        self.for_trees(true, |tree, ctx, _| {
            let mut found = Vec::new();
            running_slots(&tree.spec.root, &tree.root, &mut Vec::new(), &mut found);
            for f in found {
                let Some(&reason) = departed.get(&f.running.host) else {
                    continue;
                };
                let ids = tree::ids_of(&tree.spec.root, &f.sup_path, f.idx);
                let Some((_, w, ws)) = tree::worker_at(tree, &f.sup_path, f.idx) else {
                    continue;
                };
                // An earlier restart in this same change may have stopped it.
                if tree::get_slot(&ws.slots, f.key) != Some(Slot::Running(f.running)) {
                    continue;
                }
                exited_event(ctx, &ids, f.key, f.running, ExitCause::HostLeft(reason));
                // An instance bound to a member, or to a node with no
                // eligible member left, ends with it: nothing to restart.
                let vanished = match f.key {
                    SlotKey::Single => false,
                    SlotKey::Member(_) => true,
                    SlotKey::Node(_) => w.placement.host(0, &f.key, ctx.view).is_none(),
                };
                if vanished {
                    ws.slots.retain(|(k, _)| *k != f.key);
                    continue;
                }
                tree::set_slot(&mut ws.slots, f.key, Slot::Pending { restart: true });
                on_child_down(
                    tree,
                    f.sup_path,
                    f.idx,
                    Some(f.key),
                    !reason.is_crash(),
                    ctx,
                );
            }
        })
    }

    fn apply_exit(
        &mut self,
        path: ChildPath,
        incarnation: IncarnationId,
        host: Member,
        normal: bool,
    ) -> Output {
        let Some(tree) = self.trees.get(&path.tree) else {
            return Output::ignored(IgnoreReason::UnknownTree);
        };
        let Some((sup_path, idx)) = tree::locate(&tree.spec.root, &path.ids) else {
            return Output::ignored(IgnoreReason::UnknownChild);
        };
        let mut stale = true;
        let out = self.for_trees(false, |tree, ctx, _| {
            if ctx.tree != path.tree {
                return;
            }
            let Some((_, _, ws)) = tree::worker_at(tree, &sup_path, idx) else {
                return;
            };
            let Some((key, r)) = ws.slots.iter().find_map(|(k, s)| match s {
                Slot::Running(r) if r.incarnation == incarnation && r.host == host => {
                    Some((*k, *r))
                }
                _ => None,
            }) else {
                return;
            };
            stale = false;
            tree::set_slot(&mut ws.slots, key, Slot::Pending { restart: true });
            let cause = if normal {
                ExitCause::Normal
            } else {
                ExitCause::Crashed
            };
            exited_event(ctx, &path.ids, key, r, cause);
            on_child_down(tree, sup_path.clone(), idx, Some(key), normal, ctx);
        });
        if stale {
            tracing::debug!(%path, %incarnation, %host, "exit report for a stale incarnation");
            let mut ignored = Output::ignored(IgnoreReason::StaleIncarnation);
            ignored.extend(out);
            return ignored;
        }
        out
    }

    fn apply_quorum(&mut self, quorate: bool, nodes: Vec<NodeId>) -> Output {
        if let Some(gone) = &self.quorum_fence {
            if gone.iter().any(|n| nodes.contains(n)) {
                return Output::ignored(IgnoreReason::StaleQuorum);
            }
            self.quorum_fence = None;
        }
        if quorate == self.quorate {
            return self.reconcile_all(false);
        }
        self.quorate = quorate;
        let mut out = Output::default();
        if quorate {
            out.events.push(SupervisionEvent::QuorumRegained);
            // Placement may have changed while nothing could move.
            out.extend(self.reconcile_all(true));
        } else {
            out.events.push(SupervisionEvent::QuorumLost);
            out.extend(self.for_trees(false, |tree, ctx, _| {
                if tree.spec.quorum_policy == QuorumPolicy::Stop {
                    let Tree { spec, root, .. } = tree;
                    stop_all(
                        &spec.root,
                        root,
                        &mut Vec::new(),
                        ctx,
                        StopReason::QuorumLost,
                    );
                }
            }));
        }
        out
    }

    fn apply_tree_started(
        &mut self,
        name: String,
        claimed: Fingerprint,
        spec: TreeSpec,
        by: Member,
        kinds: Vec<String>,
    ) -> Output {
        let refuse = |why: Refusal| {
            tracing::info!(tree = %name, %by, ?why, "tree start refused");
            Output {
                commands: vec![Command::RefuseTree {
                    name: name.clone(),
                    by,
                    why: why.clone(),
                }],
                events: vec![SupervisionEvent::TreeRefused {
                    name: name.clone(),
                    by,
                    why,
                }],
            }
        };
        if name.is_empty() {
            return refuse(Refusal::InvalidSpec(SpecError::EmptyTreeName));
        }
        if let Err(e) = spec.validate() {
            return refuse(Refusal::InvalidSpec(e));
        }
        let computed = spec.fingerprint();
        if computed != claimed {
            return refuse(Refusal::FingerprintMismatch { claimed, computed });
        }
        // Only kinds the spec names: what a sender claims beyond them could
        // only grow the state.
        let named = spec.worker_kinds();
        let kinds: BTreeSet<String> = kinds.into_iter().filter(|k| named.contains(k)).collect();
        let token = self.token();
        match self.trees.get_mut(&name) {
            Some(tree) if tree.fingerprint != computed => {
                return refuse(Refusal::SpecMismatch {
                    expected: tree.fingerprint,
                    got: computed,
                })
            }
            Some(tree) if tree.root.alive => {
                if tree.hosts.get(&by).is_some_and(|h| h.kinds == kinds) {
                    return Output::ignored(IgnoreReason::AlreadyStarted);
                }
                // Another member takes part (or says anew what it can
                // build): children waiting for a host start, and `Any`
                // children that now score highest on it move, as on a join.
                let since = tree.hosts.get(&by).map_or(self.seq, |h| h.since);
                tree.hosts.insert(by, Host { since, kinds });
                return self.reconcile_all(true);
            }
            Some(tree) => {
                tree.root = SupState::fresh(&tree.spec.root);
                tree.by = by;
                let since = tree.hosts.get(&by).map_or(self.seq, |h| h.since);
                tree.hosts.insert(by, Host { since, kinds });
            }
            None => {
                let root = SupState::fresh(&spec.root);
                self.trees.insert(
                    name.clone(),
                    Tree {
                        spec,
                        fingerprint: computed,
                        by,
                        started: token,
                        root,
                        hosts: BTreeMap::from([(
                            by,
                            Host {
                                since: self.seq,
                                kinds,
                            },
                        )]),
                    },
                );
            }
        }
        let mut out = Output::default();
        out.events.push(SupervisionEvent::TreeStarted {
            name,
            fingerprint: computed,
            by,
        });
        out.extend(self.reconcile_all(false));
        out
    }
}

/// The reason `member` has in a joined or left list; a crash wins over a
/// clean leave if a list names it twice.
pub(crate) fn reason_of(list: &[MemberChange], member: Member) -> Option<Reason> {
    let mut reasons = list.iter().filter(|c| c.member == member).map(|c| c.reason);
    let first = reasons.next()?;
    Some(if first.is_crash() {
        first
    } else {
        reasons.find(|r| r.is_crash()).unwrap_or(first)
    })
}
