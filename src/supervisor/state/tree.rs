//! One tree's state and the OTP rules that change it: restart types,
//! strategies, intensity and escalation, plus the reconcile pass that
//! starts and moves slots.
//!
//! The spec and the state are walked side by side: `spec.children[i]`
//! describes `state.children[i]`. The state is only ever built from its own
//! spec ([`SupState::fresh`]), and every access is checked, so a state from
//! an untrusted merge offer with another shape is skipped, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::stable_hash::StableHasher;
use crate::supervisor::command::{Command, ExitCause, Output, StopReason, SupervisionEvent};
use crate::supervisor::fingerprint::Fingerprint;
use crate::supervisor::ids::{ChildPath, FencingToken, IncarnationId};
use crate::supervisor::placement::{PlacementPolicy, SlotKey, ViewMember};
use crate::supervisor::spec::{
    ChildKind, ChildSpec, RestartType, Strategy, SupervisorSpec, TreeSpec, WorkerSpec,
};
use crate::transport::Member;

/// A running incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Running {
    pub(crate) incarnation: IncarnationId,
    pub(crate) host: Member,
    pub(crate) token: FencingToken,
}

/// The state of one instance slot of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Slot {
    Running(Running),
    /// Wants to run; starts as soon as quorum and an eligible host allow.
    /// `restart` tells subscribers whether the start is a restart.
    Pending {
        restart: bool,
    },
    /// A transient child that exited normally: down, but a strategy restart
    /// of its supervisor starts it again (as in OTP).
    Stopped,
    /// A temporary child that exited or was terminated: never started again.
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerState {
    /// The whole child was removed (a temporary child terminated by a
    /// sibling's restart): no new slots are added for new members.
    pub(crate) removed: bool,
    /// The child waits because no member of the view said it can build
    /// its kind (reported once, when it starts waiting for that reason).
    pub(crate) no_host: bool,
    /// Sorted by key.
    pub(crate) slots: Vec<(SlotKey, Slot)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NodeState {
    Worker(WorkerState),
    Supervisor(SupState),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SupState {
    pub(crate) alive: bool,
    /// A temporary supervisor child that ended: its parent never revives it.
    pub(crate) removed: bool,
    /// Stream times of the restarts inside the intensity window.
    pub(crate) restarts: Vec<u64>,
    pub(crate) children: Vec<NodeState>,
}

impl SupState {
    /// A supervisor as it is right after its start: every child wants to run.
    pub(crate) fn fresh(spec: &SupervisorSpec) -> Self {
        SupState {
            alive: true,
            removed: false,
            restarts: Vec::new(),
            children: spec
                .children
                .iter()
                .map(|c| match &c.kind {
                    ChildKind::Worker(w) => NodeState::Worker(WorkerState {
                        removed: false,
                        no_host: false,
                        slots: if is_multi(w) {
                            Vec::new()
                        } else {
                            vec![(SlotKey::Single, Slot::Pending { restart: false })]
                        },
                    }),
                    ChildKind::Supervisor(s) => NodeState::Supervisor(SupState::fresh(s)),
                })
                .collect(),
        }
    }
}

/// A started tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub(crate) spec: TreeSpec,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) by: Member,
    /// Token of the first start; the earliest start wins a merge conflict.
    pub(crate) started: FencingToken,
    pub(crate) root: SupState,
    /// Members that started (or joined) the tree, with the worker kinds
    /// each can build: the only members that host its children.
    pub(crate) hosts: BTreeMap<Member, Host>,
}

/// A member that hosts a tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Host {
    /// Stream position at which it became a host: placement counts a host
    /// as present from then on, so a member that starts the tree late is
    /// the newest host and moves no singleton.
    pub(crate) since: u64,
    /// The worker kinds it can build.
    pub(crate) kinds: BTreeSet<String>,
}

fn is_multi(w: &WorkerSpec) -> bool {
    matches!(
        w.placement.policy,
        PlacementPolicy::OnePerNode | PlacementPolicy::OnEveryMember
    )
}

/// Where a running slot sits in a tree.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) sup_path: Vec<usize>,
    pub(crate) idx: usize,
    pub(crate) key: SlotKey,
    pub(crate) running: Running,
}

/// Everything a rule needs besides the tree itself.
pub(crate) struct Ctx<'a> {
    pub(crate) tree: &'a str,
    pub(crate) view: &'a [ViewMember],
    /// The tree's hosts and the kinds each can build.
    pub(crate) hosts: &'a BTreeMap<Member, Host>,
    pub(crate) now_ms: u64,
    /// Token for every start decided by the current event.
    pub(crate) token: FencingToken,
    pub(crate) next_incarnation: &'a mut u64,
    pub(crate) out: &'a mut Output,
}

impl Ctx<'_> {
    fn in_view(&self, m: Member) -> bool {
        self.view.binary_search_by_key(&m, |v| v.member).is_ok()
    }

    fn path(&self, ids: &[String]) -> ChildPath {
        ChildPath {
            tree: self.tree.to_owned(),
            ids: ids.to_vec(),
        }
    }

    /// The members of the view that can build `kind`, in view order, each
    /// present since it became a host (if that came after its join).
    fn able(&self, kind: &str) -> Vec<ViewMember> {
        self.view
            .iter()
            .filter_map(|v| {
                let host = self.hosts.get(&v.member)?;
                host.kinds.contains(kind).then_some(ViewMember {
                    member: v.member,
                    since: v.since.max(host.since),
                })
            })
            .collect()
    }
}

/// The rendezvous key of a child: its tree and ids, length-prefixed so
/// `"a/b" + "c"` and `"a" + "b/c"` differ.
pub(crate) fn child_key(tree: &str, ids: &[String]) -> u64 {
    let mut h = StableHasher::new();
    h.str(tree).u64(ids.len() as u64);
    for id in ids {
        h.str(id);
    }
    h.finish()
}

pub(crate) fn set_slot(slots: &mut Vec<(SlotKey, Slot)>, key: SlotKey, slot: Slot) {
    match slots.binary_search_by_key(&key, |(k, _)| *k) {
        Ok(i) => slots[i].1 = slot,
        Err(i) => slots.insert(i, (key, slot)),
    }
}

pub(crate) fn get_slot(slots: &[(SlotKey, Slot)], key: SlotKey) -> Option<Slot> {
    slots
        .binary_search_by_key(&key, |(k, _)| *k)
        .ok()
        .map(|i| slots[i].1)
}

/// Stops `slot` if it runs; a host that already left gets no command.
fn stop_slot(
    ctx: &mut Ctx<'_>,
    ids: &[String],
    child: &ChildSpec,
    key: SlotKey,
    slot: &mut Slot,
    reason: StopReason,
) {
    if let Slot::Running(r) = *slot {
        if ctx.in_view(r.host) {
            let path = ctx.path(ids);
            ctx.out.commands.push(Command::StopChild {
                path: path.clone(),
                slot: key,
                host: r.host,
                incarnation: r.incarnation,
                token: r.token,
                shutdown: child.shutdown,
                reason,
            });
            ctx.out.events.push(SupervisionEvent::ChildStopped {
                path,
                slot: key,
                host: r.host,
                incarnation: r.incarnation,
                reason,
            });
        }
        *slot = Slot::Pending { restart: true };
    }
}

/// Stops every running slot under `st`, last child first (OTP's shutdown
/// order), leaving them pending.
pub(crate) fn stop_all(
    spec: &SupervisorSpec,
    st: &mut SupState,
    ids: &mut Vec<String>,
    ctx: &mut Ctx<'_>,
    reason: StopReason,
) {
    for (cspec, cst) in spec.children.iter().zip(st.children.iter_mut()).rev() {
        ids.push(cspec.id.clone());
        match (&cspec.kind, cst) {
            (ChildKind::Worker(_), NodeState::Worker(w)) => {
                for (key, slot) in w.slots.iter_mut().rev() {
                    stop_slot(ctx, ids, cspec, *key, slot, reason);
                }
            }
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                stop_all(s, ss, ids, ctx, reason)
            }
            _ => {}
        }
        ids.pop();
    }
}

/// A strategy restart of one child: stop it, then make it want to run
/// again, afresh. A temporary child is removed instead (OTP).
fn restart_whole(cspec: &ChildSpec, cst: &mut NodeState, ids: &mut Vec<String>, ctx: &mut Ctx<'_>) {
    ids.push(cspec.id.clone());
    match (&cspec.kind, cst) {
        (ChildKind::Worker(_), NodeState::Worker(w)) => {
            for (key, slot) in w.slots.iter_mut().rev() {
                stop_slot(ctx, ids, cspec, *key, slot, StopReason::SiblingRestart);
            }
            let after = if cspec.restart == RestartType::Temporary {
                w.removed = true;
                Slot::Removed
            } else {
                Slot::Pending { restart: true }
            };
            for (_, slot) in w.slots.iter_mut() {
                *slot = after;
            }
        }
        (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) if !ss.removed => {
            stop_all(s, ss, ids, ctx, StopReason::SiblingRestart);
            if cspec.restart == RestartType::Temporary {
                ss.alive = false;
                ss.removed = true;
            } else {
                *ss = SupState::fresh(s);
            }
        }
        _ => {}
    }
    ids.pop();
}

/// The supervisor at `path` (child indices from the root) and its ids.
fn sup_at<'a>(
    mut spec: &'a SupervisorSpec,
    mut st: &'a mut SupState,
    path: &[usize],
    ids: &mut Vec<String>,
) -> Option<(&'a SupervisorSpec, &'a mut SupState)> {
    for &i in path {
        let cspec = spec.children.get(i)?;
        match (&cspec.kind, st.children.get_mut(i)?) {
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                ids.push(cspec.id.clone());
                spec = s;
                st = ss;
            }
            _ => return None,
        }
    }
    Some((spec, st))
}

/// The worker named by `ids`: its supervisor's path and its index.
pub(crate) fn locate(spec: &SupervisorSpec, ids: &[String]) -> Option<(Vec<usize>, usize)> {
    let (last, parents) = ids.split_last()?;
    let mut spec = spec;
    let mut path = Vec::with_capacity(parents.len());
    for id in parents {
        let i = spec.children.iter().position(|c| &c.id == id)?;
        match &spec.children[i].kind {
            ChildKind::Supervisor(s) => spec = s,
            ChildKind::Worker(_) => return None,
        }
        path.push(i);
    }
    let idx = spec.children.iter().position(|c| &c.id == last)?;
    matches!(spec.children[idx].kind, ChildKind::Worker(_)).then_some((path, idx))
}

/// The slots of the worker at `(sup_path, idx)`, with its spec.
pub(crate) fn worker_at<'a>(
    tree: &'a mut Tree,
    sup_path: &[usize],
    idx: usize,
) -> Option<(&'a ChildSpec, &'a WorkerSpec, &'a mut WorkerState)> {
    let (spec, st) = sup_at(&tree.spec.root, &mut tree.root, sup_path, &mut Vec::new())?;
    if !st.alive {
        return None;
    }
    let cspec = spec.children.get(idx)?;
    match (&cspec.kind, st.children.get_mut(idx)?) {
        (ChildKind::Worker(w), NodeState::Worker(ws)) => Some((cspec, w, ws)),
        _ => None,
    }
}

/// Every running slot under live supervisors, in start order.
pub(crate) fn running_slots(
    spec: &SupervisorSpec,
    st: &SupState,
    sup_path: &mut Vec<usize>,
    found: &mut Vec<Found>,
) {
    if !st.alive {
        return;
    }
    for (i, (cspec, cst)) in spec.children.iter().zip(&st.children).enumerate() {
        match (&cspec.kind, cst) {
            (ChildKind::Worker(_), NodeState::Worker(w)) => {
                for (key, slot) in &w.slots {
                    if let Slot::Running(r) = slot {
                        found.push(Found {
                            sup_path: sup_path.clone(),
                            idx: i,
                            key: *key,
                            running: *r,
                        });
                    }
                }
            }
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                sup_path.push(i);
                running_slots(s, ss, sup_path, found);
                sup_path.pop();
            }
            _ => {}
        }
    }
}

/// A child of the supervisor at `sup_path` went down: the worker slot `key`
/// (already marked pending by the caller) or, with `key == None`, a nested
/// supervisor that gave up. Applies the restart type, then the intensity,
/// then the strategy; a supervisor that gives up escalates to its parent,
/// and the root's escalation goes to the application.
pub(crate) fn on_child_down(
    tree: &mut Tree,
    mut sup_path: Vec<usize>,
    mut idx: usize,
    mut key: Option<SlotKey>,
    mut normal: bool,
    ctx: &mut Ctx<'_>,
) {
    loop {
        let mut ids = Vec::new();
        let Some((spec, st)) = sup_at(&tree.spec.root, &mut tree.root, &sup_path, &mut ids) else {
            return;
        };
        let (Some(cspec), Some(_)) = (spec.children.get(idx), st.children.get(idx)) else {
            return;
        };
        let restart = match cspec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => !normal,
            RestartType::Temporary => false,
        };
        if !restart {
            match (&mut st.children[idx], key) {
                (NodeState::Worker(w), Some(k)) => {
                    let after = if cspec.restart == RestartType::Temporary {
                        Slot::Removed
                    } else {
                        Slot::Stopped
                    };
                    set_slot(&mut w.slots, k, after);
                }
                (NodeState::Supervisor(ss), _) => {
                    ss.alive = false;
                    ss.removed = cspec.restart == RestartType::Temporary;
                }
                _ => {}
            }
            return;
        }

        let now = ctx.now_ms;
        let period = spec.intensity.period_ms;
        st.restarts.retain(|t| now.saturating_sub(*t) < period);
        st.restarts.push(now);
        if st.restarts.len() > spec.intensity.max_restarts as usize {
            tracing::info!(tree = ctx.tree, supervisor = ?ids, "restart intensity exceeded, escalating");
            stop_all(
                spec,
                st,
                &mut ids.clone(),
                ctx,
                StopReason::SupervisorGaveUp,
            );
            st.alive = false;
            ctx.out.events.push(SupervisionEvent::SupervisorEscalated {
                supervisor: ctx.path(&ids),
                at: ctx.token,
            });
            match sup_path.pop() {
                Some(parent_idx) => {
                    idx = parent_idx;
                    key = None;
                    normal = false;
                    continue;
                }
                None => {
                    ctx.out.commands.push(Command::Escalated {
                        tree: ctx.tree.to_owned(),
                        at: ctx.token,
                    });
                    return;
                }
            }
        }

        let range = match spec.strategy {
            Strategy::OneForOne => {
                if let (NodeState::Supervisor(ss), ChildKind::Supervisor(s)) =
                    (&mut st.children[idx], &cspec.kind)
                {
                    *ss = SupState::fresh(s);
                }
                return;
            }
            Strategy::OneForAll => 0..spec.children.len(),
            Strategy::RestForOne => idx..spec.children.len(),
        };
        for j in range.rev() {
            if let (Some(c), Some(s)) = (spec.children.get(j), st.children.get_mut(j)) {
                restart_whole(c, s, &mut ids, ctx);
            }
        }
        return;
    }
}

/// Brings the tree toward its wanted state: adds and drops instance slots
/// of multi-instance workers, starts pending slots on their placement host
/// when `allow_start`, and, with `rebalance`, moves running slots whose
/// placement changed. Running slots under a dead supervisor are stopped.
pub(crate) fn reconcile(
    spec: &SupervisorSpec,
    st: &mut SupState,
    ids: &mut Vec<String>,
    ctx: &mut Ctx<'_>,
    allow_start: bool,
    rebalance: bool,
) {
    if !st.alive {
        stop_all(spec, st, ids, ctx, StopReason::Orphaned);
        return;
    }
    for (cspec, cst) in spec.children.iter().zip(st.children.iter_mut()) {
        ids.push(cspec.id.clone());
        match (&cspec.kind, cst) {
            (ChildKind::Worker(w), NodeState::Worker(ws)) => {
                reconcile_worker(cspec, w, ws, ids, ctx, allow_start, rebalance)
            }
            (ChildKind::Supervisor(s), NodeState::Supervisor(ss)) => {
                reconcile(s, ss, ids, ctx, allow_start, rebalance)
            }
            _ => {}
        }
        ids.pop();
    }
}

fn reconcile_worker(
    cspec: &ChildSpec,
    w: &WorkerSpec,
    ws: &mut WorkerState,
    ids: &[String],
    ctx: &mut Ctx<'_>,
    allow_start: bool,
    rebalance: bool,
) {
    let placement = &w.placement;
    let able = ctx.able(&w.kind);
    if is_multi(w) {
        let wanted = placement.slot_keys(&able);
        let mut kept = Vec::with_capacity(ws.slots.len());
        for (key, mut slot) in std::mem::take(&mut ws.slots) {
            if wanted.contains(&key) {
                kept.push((key, slot));
            } else {
                stop_slot(ctx, ids, cspec, key, &mut slot, StopReason::Rebalanced);
            }
        }
        ws.slots = kept;
        if !ws.removed {
            for key in wanted {
                if get_slot(&ws.slots, key).is_none() {
                    set_slot(&mut ws.slots, key, Slot::Pending { restart: false });
                }
            }
        }
    }
    let child = child_key(ctx.tree, ids);
    // Whether the child waits only because nobody can build its kind: the
    // whole view would have a place for it.
    let mut no_host = false;
    if allow_start && !ws.removed {
        no_host = if is_multi(w) {
            ws.slots.is_empty() && !placement.slot_keys(ctx.view).is_empty()
        } else {
            ws.slots.iter().any(|(key, slot)| {
                matches!(slot, Slot::Pending { .. })
                    && placement.host(child, key, &able).is_none()
                    && placement.host(child, key, ctx.view).is_some()
            })
        };
    }
    if no_host && !ws.no_host {
        let path = ctx.path(ids);
        tracing::warn!(child = %path, kind = %w.kind,
            "no member can build this child's kind: it waits until one starts the tree with a factory for it");
        ctx.out.events.push(SupervisionEvent::ChildWaitsForHost {
            path,
            kind: w.kind.clone(),
        });
    }
    ws.no_host = no_host;
    for (key, slot) in ws.slots.iter_mut() {
        match *slot {
            Slot::Running(r) if !ctx.in_view(r.host) => *slot = Slot::Pending { restart: true },
            Slot::Running(r) if rebalance && allow_start => {
                if let Some(host) = placement.host(child, key, &able) {
                    if host != r.host {
                        stop_slot(ctx, ids, cspec, *key, slot, StopReason::Rebalanced);
                    }
                }
            }
            _ => {}
        }
        if let (Slot::Pending { restart }, true) = (*slot, allow_start) {
            if let Some(host) = placement.host(child, key, &able) {
                let incarnation = IncarnationId(*ctx.next_incarnation);
                *ctx.next_incarnation = ctx.next_incarnation.saturating_add(1);
                let token = ctx.token;
                let path = ctx.path(ids);
                ctx.out.commands.push(Command::StartChild {
                    path: path.clone(),
                    slot: *key,
                    kind: w.kind.clone(),
                    host,
                    incarnation,
                    token,
                });
                let (path, slot_key) = (path, *key);
                ctx.out.events.push(if restart {
                    SupervisionEvent::ChildRestarted {
                        path,
                        slot: slot_key,
                        host,
                        incarnation,
                        token,
                    }
                } else {
                    SupervisionEvent::ChildStarted {
                        path,
                        slot: slot_key,
                        host,
                        incarnation,
                        token,
                    }
                });
                *slot = Slot::Running(Running {
                    incarnation,
                    host,
                    token,
                });
            }
        }
    }
}

/// Records that a running slot ended on its own, for subscribers.
pub(crate) fn exited_event(
    ctx: &mut Ctx<'_>,
    ids: &[String],
    key: SlotKey,
    r: Running,
    cause: ExitCause,
) {
    let path = ctx.path(ids);
    ctx.out.events.push(SupervisionEvent::ChildExited {
        path,
        slot: key,
        host: r.host,
        incarnation: r.incarnation,
        cause,
    });
}

/// The ids of the worker at `(sup_path, idx)`.
pub(crate) fn ids_of(spec: &SupervisorSpec, sup_path: &[usize], idx: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(sup_path.len() + 1);
    let mut spec = spec;
    for &i in sup_path {
        let Some(c) = spec.children.get(i) else { break };
        ids.push(c.id.clone());
        match &c.kind {
            ChildKind::Supervisor(s) => spec = s,
            ChildKind::Worker(_) => break,
        }
    }
    if let Some(c) = spec.children.get(idx) {
        ids.push(c.id.clone());
    }
    ids
}
