//! Merging partitions.
//!
//! After a partition heals, each side arrives with the state its own stream
//! built, and the confchg that reunites them differs per side (each sees
//! the other as `NodeUp` joiners). Only what follows is common. So every
//! side puts its pre-merge state into the common stream
//! ([`Event::StateOffered`](crate::supervisor::Event::StateOffered)), and
//! once every side is covered each engine computes the same merged state
//! from those offers alone:
//!
//! - a tree name known on several sides keeps the spec started first
//!   (smallest start token, then smallest starter); running children of a
//!   tree with another spec are stopped ([`StopReason::Superseded`]);
//! - for every slot, the running incarnation with the largest
//!   `(token, host, incarnation)` survives and every other one is stopped
//!   ([`StopReason::Duplicate`]): no child runs twice;
//! - restart histories are united (intensity is cluster-wide), stream
//!   time, epoch and position take the maximum, quorum is the "or";
//! - then the view is set to the common one, placement is recomputed, and
//!   the events buffered during the round are replayed.
//!
//! A round can outlive the partition that it heals: a side may split again
//! and come back in parts before every offer is in. An offer speaks only
//! for the processes that arrived in the round with its sender (this
//! side's members at the merging confchg, or the processes of one later
//! change that brought them back), and a change that brings processes back
//! starts the offers over: the returning side may have settled a round of
//! its own and started trees while away, and the round it begins on its
//! side needs every side's offer from after the change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::core::{reason_of, Core};
use super::tree::{get_slot, set_slot, NodeState, Running, Slot, SupState, Tree};
use crate::supervisor::command::{Command, Output, Refusal, StopReason, SupervisionEvent};
use crate::supervisor::event::{Event, ViewChange};
use crate::supervisor::ids::ChildPath;
use crate::supervisor::placement::{SlotKey, ViewMember};
use crate::supervisor::spec::{ChildKind, SupervisorSpec};
use crate::transport::{Member, MemberChange, Reason};

/// One side's state as it was just before a merge, plus the departures
/// that side saw in the merging confchg. Opaque; produced by
/// [`Engine::merge_offer`](crate::supervisor::Engine::merge_offer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOffer {
    pub(crate) core: Core,
    pub(crate) left: Vec<MemberChange>,
    /// The epoch of the merging confchg as this side saw it.
    pub(crate) epoch: u64,
    /// Every process of the offering side's CPG view before the merge,
    /// members or not (sorted): a process that never announced itself on
    /// its side is covered by its side's offer, so a silent process in a
    /// side that offers holds no round up.
    pub(crate) side: Vec<Member>,
}

/// A merge in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MergeRound {
    /// Largest epoch of the view changes that followed the merging one
    /// (common to every side, unlike the merging confchg itself).
    pub(crate) epoch: u64,
    /// This side's epoch of the merging confchg.
    pub(crate) trigger_epoch: u64,
    /// The latest view.
    pub(crate) view: Vec<Member>,
    /// Members whose side must have offered before the round resolves.
    pub(crate) required: BTreeSet<Member>,
    /// This side's departures in the merging confchg.
    pub(crate) trigger_left: Vec<MemberChange>,
    /// Offers in arrival order, one per sender.
    pub(crate) offers: Vec<(Member, MergeOffer)>,
    /// Other events of the round, replayed after the merge.
    pub(crate) buffered: Vec<Event>,
    /// Events of the round that are not replayed (trigger, offers).
    pub(crate) consumed: u64,
    /// How each process of the round arrived in it: 0 for this side's
    /// members at the merging confchg, `k` for the processes that came in
    /// together in the round's `k`-th change that brought anyone (`NodeUp`).
    /// An offer speaks only for processes that arrived with its sender: a
    /// side that split during the round and came back in parts has moved
    /// on, and only its own new offer knows where to.
    pub(crate) arrival: BTreeMap<Member, u32>,
    /// Changes of the round that brought processes in.
    pub(crate) arrivals: u32,
}

impl MergeRound {
    pub(crate) fn new(vc: &ViewChange) -> Self {
        MergeRound {
            epoch: 0,
            trigger_epoch: vc.epoch,
            view: sorted(&vc.members),
            // The members of this side, and every process of the sides
            // that merge in (whether they are members there is theirs to
            // say, in their offer).
            required: vc
                .members
                .iter()
                .copied()
                .chain(
                    vc.joined
                        .iter()
                        .filter(|c| c.reason == Reason::NodeUp)
                        .map(|c| c.member),
                )
                .collect(),
            trigger_left: vc.left.clone(),
            offers: Vec::new(),
            buffered: Vec::new(),
            consumed: 1,
            arrival: vc
                .members
                .iter()
                .map(|m| (*m, 0))
                .chain(
                    vc.joined
                        .iter()
                        .filter(|c| c.reason == Reason::NodeUp)
                        .map(|c| (c.member, 1)),
                )
                .collect(),
            arrivals: 1,
        }
    }

    /// Notes a view change of the round: departed members no longer need
    /// covering, `NodeUp` joiners (another merging side) do.
    pub(crate) fn note_view(&mut self, vc: &ViewChange) {
        self.epoch = self.epoch.max(vc.epoch);
        let before = std::mem::replace(&mut self.view, sorted(&vc.members));
        // Members that left need no covering. The view lists members only:
        // a process of another side that has not announced itself here yet
        // was never in it, and goes only when a change lists it as left.
        let view = &self.view;
        self.required.retain(|m| {
            view.binary_search(m).is_ok()
                || (before.binary_search(m).is_err() && !vc.left.iter().any(|c| c.member == *m))
        });
        let back: BTreeSet<Member> = vc
            .joined
            .iter()
            .filter(|c| c.reason == Reason::NodeUp)
            .map(|c| c.member)
            .collect();
        if back.is_empty() {
            return;
        }
        self.required.extend(back.iter().copied());
        // Processes come back: what they did while away is in no offer
        // made before, and their side (which may have settled its round
        // and started trees meanwhile) begins a round of its own that
        // needs every side's offer after this change. So the offers start
        // over, and the returning processes count as one new side.
        self.offers.clear();
        self.arrivals = self.arrivals.saturating_add(1);
        for m in back {
            self.arrival.insert(m, self.arrivals);
        }
    }

    /// Whether the offer `from` sent speaks for `member`: it lists it, and
    /// its sender arrived in the round with it.
    fn speaks_for(&self, from: Member, offer: &MergeOffer, member: Member) -> bool {
        let listed =
            offer.core.view.iter().any(|v| v.member == member) || offer.side.contains(&member);
        listed
            && self
                .arrival
                .get(&from)
                .is_some_and(|side| self.arrival.get(&member) == Some(side))
    }

    /// Whether an offer that speaks for `member` is in.
    pub(crate) fn covers(&self, member: Member) -> bool {
        self.offers
            .iter()
            .any(|(from, o)| self.speaks_for(*from, o, member))
    }

    pub(crate) fn covered(&self) -> bool {
        self.required.iter().all(|m| self.covers(*m))
    }

    /// The merged state and what it takes to get there.
    pub(crate) fn resolve(self) -> (Core, Output) {
        let mut out = Output::default();
        out.events.push(SupervisionEvent::MergeResolved {
            offers: self.offers.len(),
        });
        let mut offers: Vec<&(Member, MergeOffer)> = self.offers.iter().collect();
        offers.sort_by_key(|(from, _)| *from);
        let mut core = merge_cores(offers.iter().map(|(_, o)| &o.core), &mut out);
        let epoch = offers
            .iter()
            .map(|(_, o)| o.epoch)
            .fold(self.epoch, u64::max);
        core.epoch = core.epoch.max(epoch);
        core.seq = core.seq.saturating_add(self.consumed.saturating_sub(1));

        let mut left: Vec<MemberChange> = offers
            .iter()
            .flat_map(|(_, o)| o.left.iter().copied())
            .collect();
        for ev in &self.buffered {
            if let Event::ViewChanged(vc) = ev {
                left.extend(vc.left.iter().copied());
            }
        }
        // The merged view: this side's members, and the members the
        // offers list that are still here. A member of another side may
        // not have announced itself on this side yet; its side's offer
        // vouches for it (the group core admits it at that offer).
        let mut view = self.view.clone();
        for (_, o) in &offers {
            for v in &o.core.view {
                if self.required.contains(&v.member) {
                    view.push(v.member);
                }
            }
        }
        let view = sorted(&view);
        let departed: Vec<MemberChange> = core
            .view
            .iter()
            .filter(|v| view.binary_search(&v.member).is_err())
            .map(|v| MemberChange {
                member: v.member,
                reason: reason_of(&left, v.member).unwrap_or(Reason::NodeDown),
            })
            .collect();
        out.extend(core.apply(Event::ViewChanged(ViewChange {
            epoch,
            members: view,
            joined: Vec::new(),
            left: departed,
        })));
        for ev in self.buffered {
            if let Event::ViewChanged(vc) = &ev {
                // Its membership is already in the merged view; keep the
                // position count and the epoch.
                core.seq = core.seq.saturating_add(1);
                core.epoch = core.epoch.max(vc.epoch);
                continue;
            }
            out.extend(core.apply(ev));
        }
        (core, out)
    }
}

fn sorted(members: &[Member]) -> Vec<Member> {
    let mut v = members.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Merges the cores of every side (in sender order).
fn merge_cores<'a>(cores: impl Iterator<Item = &'a Core> + Clone, out: &mut Output) -> Core {
    let mut merged = Core::default();
    let mut view: BTreeMap<Member, u64> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for c in cores.clone() {
        merged.seq = merged.seq.max(c.seq);
        merged.epoch = merged.epoch.max(c.epoch);
        merged.now_ms = merged.now_ms.max(c.now_ms);
        merged.quorate |= c.quorate;
        merged.next_incarnation = merged.next_incarnation.max(c.next_incarnation);
        for v in &c.view {
            let since = view.entry(v.member).or_insert(v.since);
            *since = (*since).min(v.since);
        }
        names.extend(c.trees.keys().cloned());
    }
    merged.view = view
        .into_iter()
        .map(|(member, since)| ViewMember { member, since })
        .collect();
    for name in names {
        // An offer is group input like any other: a tree whose spec does
        // not validate or hash to its fingerprint is dropped, not trusted.
        let candidates: Vec<&Tree> = cores
            .clone()
            .filter_map(|c| c.trees.get(&name))
            .filter(|t| t.spec.validate().is_ok() && t.spec.fingerprint() == t.fingerprint)
            .collect();
        let Some(base) = candidates.iter().min_by_key(|t| (t.started, t.by)).copied() else {
            continue;
        };
        let mut tree = base.clone();
        let mut same = Vec::new();
        for t in &candidates {
            if t.fingerprint == base.fingerprint {
                same.push(&t.root);
                // Whoever took part on any side hosts the merged tree.
                for (m, host) in &t.hosts {
                    let merged = tree.hosts.entry(*m).or_insert_with(|| host.clone());
                    merged.since = merged.since.min(host.since);
                    merged.kinds.extend(host.kinds.iter().cloned());
                }
                continue;
            }
            let mut stops = Vec::new();
            collect_running(&t.spec.root, &t.root, &mut Vec::new(), &mut stops);
            for (ids, key, r) in stops {
                push_stop(
                    out,
                    &name,
                    ids,
                    key,
                    r,
                    &t.spec.root,
                    StopReason::Superseded,
                );
            }
            let why = Refusal::SpecMismatch {
                expected: base.fingerprint,
                got: t.fingerprint,
            };
            out.commands.push(Command::RefuseTree {
                name: name.clone(),
                by: t.by,
                why: why.clone(),
            });
            out.events.push(SupervisionEvent::TreeRefused {
                name: name.clone(),
                by: t.by,
                why,
            });
        }
        let spec = base.spec.root.clone();
        merge_sup(
            &name,
            &spec,
            &mut tree.root,
            &same,
            &mut Vec::new(),
            &spec,
            out,
        );
        merged.trees.insert(name, tree);
    }
    merged
}

fn merge_sup(
    tree: &str,
    spec: &SupervisorSpec,
    into: &mut SupState,
    sides: &[&SupState],
    ids: &mut Vec<String>,
    root: &SupervisorSpec,
    out: &mut Output,
) {
    let mut restarts: Vec<u64> = sides
        .iter()
        .flat_map(|s| s.restarts.iter().copied())
        .collect();
    restarts.sort_unstable();
    restarts.dedup();
    into.restarts = restarts;
    for (i, cspec) in spec.children.iter().enumerate() {
        ids.push(cspec.id.clone());
        match (&cspec.kind, into.children.get_mut(i)) {
            (ChildKind::Worker(_), Some(NodeState::Worker(w))) => {
                let others: Vec<&[(SlotKey, Slot)]> = sides
                    .iter()
                    .filter_map(|s| match s.children.get(i) {
                        Some(NodeState::Worker(ow)) => Some(ow.slots.as_slice()),
                        _ => None,
                    })
                    .collect();
                let keys: BTreeSet<SlotKey> = others
                    .iter()
                    .flat_map(|s| s.iter().map(|(k, _)| *k))
                    .collect();
                for key in keys {
                    let mut runs: Vec<Running> = others
                        .iter()
                        .filter_map(|s| match get_slot(s, key) {
                            Some(Slot::Running(r)) => Some(r),
                            _ => None,
                        })
                        .collect();
                    runs.sort_by_key(|r| (r.token, r.host, r.incarnation));
                    runs.dedup();
                    match runs.pop() {
                        Some(winner) => {
                            for loser in runs {
                                push_stop(
                                    out,
                                    tree,
                                    ids.clone(),
                                    key,
                                    loser,
                                    root,
                                    StopReason::Duplicate,
                                );
                            }
                            set_slot(&mut w.slots, key, Slot::Running(winner));
                        }
                        None => {
                            if get_slot(&w.slots, key).is_none() {
                                if let Some(s) = others.iter().find_map(|s| get_slot(s, key)) {
                                    set_slot(&mut w.slots, key, s);
                                }
                            }
                        }
                    }
                }
            }
            (ChildKind::Supervisor(s), Some(NodeState::Supervisor(ss))) => {
                let subs: Vec<&SupState> = sides
                    .iter()
                    .filter_map(|side| match side.children.get(i) {
                        Some(NodeState::Supervisor(o)) => Some(o),
                        _ => None,
                    })
                    .collect();
                merge_sup(tree, s, ss, &subs, ids, root, out);
            }
            _ => {}
        }
        ids.pop();
    }
}

fn collect_running(
    spec: &SupervisorSpec,
    st: &SupState,
    ids: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, SlotKey, Running)>,
) {
    for (cspec, cst) in spec.children.iter().zip(&st.children) {
        ids.push(cspec.id.clone());
        match (&cspec.kind, cst) {
            (ChildKind::Worker(_), NodeState::Worker(w)) => {
                for (key, slot) in &w.slots {
                    if let Slot::Running(r) = slot {
                        found.push((ids.clone(), *key, *r));
                    }
                }
            }
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                collect_running(s, ss, ids, found)
            }
            _ => {}
        }
        ids.pop();
    }
}

fn push_stop(
    out: &mut Output,
    tree: &str,
    ids: Vec<String>,
    key: SlotKey,
    r: Running,
    root: &SupervisorSpec,
    reason: StopReason,
) {
    let shutdown = shutdown_of(root, &ids);
    let path = ChildPath {
        tree: tree.to_owned(),
        ids,
    };
    out.commands.push(Command::StopChild {
        path: path.clone(),
        slot: key,
        host: r.host,
        incarnation: r.incarnation,
        token: r.token,
        shutdown,
        reason,
    });
    out.events.push(SupervisionEvent::ChildStopped {
        path,
        slot: key,
        host: r.host,
        incarnation: r.incarnation,
        reason,
    });
}

fn shutdown_of(root: &SupervisorSpec, ids: &[String]) -> crate::supervisor::spec::Shutdown {
    let mut spec = root;
    let mut found = crate::supervisor::spec::Shutdown::BrutalKill;
    for id in ids {
        let Some(c) = spec.children.iter().find(|c| &c.id == id) else {
            break;
        };
        found = c.shutdown;
        if let ChildKind::Supervisor(s) = &c.kind {
            spec = s;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_covered_once_every_required_member_is_in_some_offer() {
        let a = Member::new(1, 1);
        let b = Member::new(2, 1);
        let vc = ViewChange {
            epoch: 5,
            members: vec![a, b],
            joined: vec![MemberChange {
                member: b,
                reason: Reason::NodeUp,
            }],
            left: vec![],
        };
        let mut round = MergeRound::new(&vc);
        assert!(!round.covered());
        let side = |m: Member| MergeOffer {
            core: Core {
                view: vec![ViewMember {
                    member: m,
                    since: 0,
                }],
                ..Core::default()
            },
            left: vec![],
            epoch: 5,
            side: vec![],
        };
        round.offers.push((a, side(a)));
        assert!(!round.covered());
        round.offers.push((b, side(b)));
        assert!(round.covered());
    }

    #[test]
    fn a_silent_process_of_a_side_is_covered_by_its_sides_offer() {
        let a = Member::new(1, 1);
        let b = Member::new(2, 1);
        let x = Member::new(2, 9);
        // This side's members, and every process of the other side.
        let vc = ViewChange {
            epoch: 5,
            members: vec![a],
            joined: vec![
                MemberChange {
                    member: b,
                    reason: Reason::NodeUp,
                },
                MemberChange {
                    member: x,
                    reason: Reason::NodeUp,
                },
            ],
            left: vec![],
        };
        let mut round = MergeRound::new(&vc);
        let offer = |m: Member, side: Vec<Member>| MergeOffer {
            core: Core {
                view: vec![ViewMember {
                    member: m,
                    since: 0,
                }],
                ..Core::default()
            },
            left: vec![],
            epoch: 5,
            side,
        };
        round.offers.push((a, offer(a, vec![a])));
        round.offers.push((b, offer(b, vec![])));
        assert!(!round.covered(), "x is neither a member nor vouched for");
        round.offers.pop();
        round.offers.push((b, offer(b, vec![b, x])));
        assert!(round.covered());
        // The merged view: the members, never the silent process.
        let (core, _) = round.resolve();
        let view: Vec<Member> = core.view.iter().map(|v| v.member).collect();
        assert_eq!(view, vec![a, b]);
    }
}
