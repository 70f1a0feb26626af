//! The decision core of elections: who leads each election of a group, and
//! with which fencing epoch. No I/O, no clock, no actix: events in,
//! actions out.
//!
//! ```text
//!   transport events              ElectionCore                 actions
//!  ────────────────────►  ┌──────────────────────────┐  ─────────────────────►
//!   handle_confchg        │ view, facts (quorum, in  │   Mcast(Info | Fact)
//!   handle_quorum (local) │   the stream)            │   Purge     (view changed)
//!   handle_message        │ phase: Installing{infos, │   Applied(op) (own
//!    Info Fact            │   buffered ops} |        │     stand/withdraw done)
//!    Stand Withdraw       │   Installed              │   Resend(op)
//!                         │ elections: candidates    │   Event(ElectionEvent)
//!                         │   (seniority), leader,   │
//!                         │   epoch                  │
//!                         └──────────────────────────┘
//! ```
//!
//! # The rule
//!
//! An election's leader is its most senior candidate in the view — the one
//! that stood first in the total order (every member is a candidate of the
//! group-wide election `""`, with seniority from when it joined) — but only
//! while the view is quorate: every quorum fact delivered since the last
//! confchg says quorate, at least one member having reported (each member
//! multicasts its node's quorum notifications, so they are facts in the
//! stream). Each time an election gets a leader (another one, or one after
//! a time without) a new [`Epoch`] is minted: `term + 1`, and `ring_seq` =
//! the highest ring sequence the view reported (never lower than before).
//! The first term of a group is its founding time (the founders' clocks,
//! carried in their infos) plus one, so a group that dies out and is
//! founded again in the same ring (the ring seq did not move) still mints
//! greater epochs.
//!
//! # View changes
//!
//! After a confchg every member multicasts an info — its quorum fact and
//! the elections as it holds them — tagged with a hash of the view, so an
//! info sent for an earlier, different view is never counted. Until every member's
//! info is in, candidacy changes are buffered, no epoch is minted, and a
//! leader continues only if it is still in the view and nothing merged in
//! (after a merge two leaders may meet: leadership pauses). Once the infos
//! are in, every member rebuilds the same elections from them (candidates
//! of every side, the highest epoch of each election), replays the buffered
//! candidacies, and applies the rule.
//!
//! # Acting
//!
//! The group decides who leads; a member *acts* as leader only while that
//! decision names it and its own node's latest quorum notification says
//! quorate (a local guard, deliberately not a group decision: it can only
//! make a leader stop earlier). `Elected`/`Deposed` events follow acting.

use std::collections::{BTreeMap, BTreeSet};

use super::messages::{ElectionMessage, ElectionState, Epoch, GroupState, Info};
use super::{ElectionEvent, Leadership, GROUP_ELECTION};
use crate::transport::{Member, MemberChange, QuorumState, Reason};

/// A candidacy change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CandidacyOp {
    Stand(String),
    Withdraw(String),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Multicast this protocol message.
    Mcast(ElectionMessage),
    /// The view changed: drop protocol messages not yet multicast.
    Purge,
    /// This member's candidacy change took effect.
    Applied(CandidacyOp),
    /// This member's candidacy change was dropped by a view change before it
    /// took effect: multicast it again.
    Resend(CandidacyOp),
    /// Tell subscribers.
    Event(ElectionEvent),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    candidates: BTreeMap<Member, u64>,
    leader: Option<Member>,
    epoch: Option<Epoch>,
}

#[derive(Debug)]
enum Phase {
    Unjoined,
    Installing {
        tag: u64,
        infos: BTreeMap<Member, Info>,
        buffered: Vec<(Member, CandidacyOp)>,
    },
    Installed,
}

/// One member's pure election state.
pub(crate) struct ElectionCore {
    local: Member,
    view: Vec<Member>,
    tag: u64,
    facts: BTreeMap<Member, QuorumState>,
    local_fact: Option<QuorumState>,
    sent_fact: Option<QuorumState>,
    phase: Phase,
    installed_once: bool,
    next_stamp: u64,
    founded: u64,
    elections: BTreeMap<String, Entry>,
    /// Elections this member acts as leader of, with the epoch.
    acting: BTreeMap<String, Epoch>,
}

impl ElectionCore {
    /// A member that has not seen its first confchg.
    pub(crate) fn new(local: Member) -> Self {
        ElectionCore {
            local,
            view: Vec::new(),
            tag: 0,
            facts: BTreeMap::new(),
            local_fact: None,
            sent_fact: None,
            phase: Phase::Unjoined,
            installed_once: false,
            next_stamp: 0,
            founded: 0,
            elections: BTreeMap::new(),
            acting: BTreeMap::new(),
        }
    }

    /// The current view, sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// Whether the view is installed.
    pub(crate) fn is_installed(&self) -> bool {
        matches!(self.phase, Phase::Installed)
    }

    /// Every election's decided leader (as this member knows it).
    pub(crate) fn leaders(&self) -> BTreeMap<String, Leadership> {
        self.elections
            .iter()
            .filter_map(|(name, e)| {
                Some((
                    name.clone(),
                    Leadership {
                        leader: e.leader?,
                        epoch: e.epoch?,
                    },
                ))
            })
            .collect()
    }

    /// Elections this member acts as leader of.
    pub(crate) fn acting(&self) -> &BTreeMap<String, Epoch> {
        &self.acting
    }

    /// Whether this node's latest quorum notification says quorate.
    pub(crate) fn locally_quorate(&self) -> bool {
        self.local_fact.as_ref().is_some_and(|q| q.quorate)
    }

    /// Every election's candidates, most senior first.
    pub(crate) fn candidates(&self) -> BTreeMap<String, Vec<Member>> {
        self.elections
            .iter()
            .map(|(name, e)| {
                let mut c: Vec<(u64, Member)> =
                    e.candidates.iter().map(|(m, s)| (*s, *m)).collect();
                c.sort();
                (name.clone(), c.into_iter().map(|(_, m)| m).collect())
            })
            .collect()
    }

    /// A configuration change, at its position in the stream; `now` is the
    /// local wall clock in microseconds (it enters the stream in the info,
    /// and counts only if this view founds the group).
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
        now: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let mut view = members.to_vec();
        view.sort();
        view.dedup();
        self.view = view;
        out.push(Action::Event(ElectionEvent::ViewChanged {
            members: self.view.clone(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        }));
        if !self.view.contains(&self.local) {
            // Not joined yet, or our own leave.
            return out;
        }
        self.tag = view_tag(&self.view);
        // Facts from before the confchg may describe another ring: every
        // member reports afresh in its info.
        self.facts.clear();
        if let Phase::Installing { buffered, .. } = &mut self.phase {
            // Never installed: every member of the old view drops them alike.
            for (from, op) in std::mem::take(buffered) {
                if from == self.local {
                    out.push(Action::Resend(op));
                }
            }
        }
        let merging = joined.iter().any(|c| c.reason == Reason::NodeUp);
        let view = &self.view;
        for entry in self.elections.values_mut() {
            entry.candidates.retain(|m, _| view.contains(m));
            if merging || entry.leader.is_some_and(|l| !view.contains(&l)) {
                entry.leader = None;
            }
        }
        self.phase = Phase::Installing {
            tag: self.tag,
            infos: BTreeMap::new(),
            buffered: Vec::new(),
        };
        out.push(Action::Purge);
        self.sent_fact = self.local_fact.clone();
        out.push(Action::Mcast(ElectionMessage::Info(Info {
            tag: self.tag,
            clock: now,
            fact: self.local_fact.clone(),
            state: self.installed_once.then(|| self.export()),
        })));
        self.update_acting(&mut out);
        out
    }

    /// This node's quorum service reported (a local fact: multicast, and
    /// used for group decisions when it comes back in order; used at once
    /// only to stop acting as leader).
    pub(crate) fn handle_quorum(&mut self, q: QuorumState) -> Vec<Action> {
        let mut out = Vec::new();
        self.local_fact = Some(q);
        if !matches!(self.phase, Phase::Unjoined) && self.sent_fact != self.local_fact {
            self.sent_fact = self.local_fact.clone();
            if let Some(q) = self.local_fact.clone() {
                out.push(Action::Mcast(ElectionMessage::Fact(q)));
            }
        }
        self.update_acting(&mut out);
        out
    }

    /// A decoded message from `from`, at its position in the stream.
    pub(crate) fn handle_message(&mut self, from: Member, msg: ElectionMessage) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.view.contains(&from) || matches!(self.phase, Phase::Unjoined) {
            return out;
        }
        match msg {
            ElectionMessage::Info(info) => {
                let complete = match &mut self.phase {
                    Phase::Installing { tag, infos, .. } if info.tag == *tag => {
                        if let Some(f) = &info.fact {
                            self.facts.insert(from, f.clone());
                        }
                        infos.insert(from, info);
                        self.view.iter().all(|m| infos.contains_key(m))
                    }
                    // An info for another confchg: not this view's.
                    _ => false,
                };
                if complete {
                    self.install(&mut out);
                }
            }
            ElectionMessage::Fact(q) => {
                self.facts.insert(from, q);
                if self.is_installed() {
                    self.decide_all(&mut out);
                }
            }
            ElectionMessage::Stand(name) => {
                self.candidacy(from, CandidacyOp::Stand(name), &mut out)
            }
            ElectionMessage::Withdraw(name) => {
                self.candidacy(from, CandidacyOp::Withdraw(name), &mut out)
            }
        }
        self.update_acting(&mut out);
        out
    }

    fn candidacy(&mut self, from: Member, op: CandidacyOp, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Installing { buffered, .. } => buffered.push((from, op)),
            Phase::Installed => {
                let name = self.apply_op(from, &op);
                if from == self.local {
                    out.push(Action::Applied(op));
                }
                self.decide(&name, out);
            }
            Phase::Unjoined => {}
        }
    }

    /// Applies a candidacy change; returns the election's name.
    fn apply_op(&mut self, from: Member, op: &CandidacyOp) -> String {
        match op {
            CandidacyOp::Stand(name) => {
                let entry = self.elections.entry(name.clone()).or_default();
                if let std::collections::btree_map::Entry::Vacant(v) = entry.candidates.entry(from)
                {
                    v.insert(self.next_stamp);
                    self.next_stamp += 1;
                }
                name.clone()
            }
            CandidacyOp::Withdraw(name) => {
                if let Some(entry) = self.elections.get_mut(name) {
                    entry.candidates.remove(&from);
                }
                name.clone()
            }
        }
    }

    fn export(&self) -> GroupState {
        GroupState {
            next_stamp: self.next_stamp,
            founded: self.founded,
            elections: self
                .elections
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        ElectionState {
                            candidates: e.candidates.iter().map(|(m, s)| (*m, *s)).collect(),
                            leader: e.leader,
                            epoch: e.epoch,
                        },
                    )
                })
                .collect(),
        }
    }

    fn install(&mut self, out: &mut Vec<Action>) {
        let Phase::Installing {
            infos, buffered, ..
        } = std::mem::replace(&mut self.phase, Phase::Installed)
        else {
            return;
        };
        // Every member rebuilds the elections from the same infos, so all
        // agree whatever each held before.
        let in_view: BTreeSet<Member> = self.view.iter().copied().collect();
        let mut next_stamp = 0;
        let states: Vec<&GroupState> = infos.values().filter_map(|i| i.state.as_ref()).collect();
        // A group founded here starts its terms above its founders' clocks.
        let founded = if states.is_empty() {
            infos.values().map(|i| i.clock).max().unwrap_or(0)
        } else {
            states.iter().map(|s| s.founded).max().unwrap_or(0)
        };
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        // Leaders as each side saw them: kept only where every side agrees.
        let mut leaders: BTreeMap<String, BTreeSet<Option<Member>>> = BTreeMap::new();
        for state in states {
            next_stamp = next_stamp.max(state.next_stamp);
            for (name, e) in &state.elections {
                let entry = merged.entry(name.clone()).or_default();
                for (m, stamp) in &e.candidates {
                    if in_view.contains(m) {
                        let s = entry.candidates.entry(*m).or_insert(*stamp);
                        *s = (*s).min(*stamp);
                    }
                }
                entry.epoch = entry.epoch.max(e.epoch);
                leaders.entry(name.clone()).or_default().insert(e.leader);
            }
        }
        for (name, seen) in leaders {
            if let (Some(entry), 1) = (merged.get_mut(&name), seen.len()) {
                entry.leader = seen
                    .into_iter()
                    .next()
                    .flatten()
                    .filter(|l| in_view.contains(l));
            }
        }
        let group = merged.entry(GROUP_ELECTION.to_owned()).or_default();
        for m in &self.view {
            if !group.candidates.contains_key(m) {
                group.candidates.insert(*m, next_stamp);
                next_stamp += 1;
            }
        }
        self.next_stamp = next_stamp;
        self.founded = founded;
        self.elections = merged;
        self.installed_once = true;
        for (from, op) in buffered {
            self.apply_op(from, &op);
            if from == self.local {
                out.push(Action::Applied(op));
            }
        }
        out.push(Action::Event(ElectionEvent::Installed {
            members: self.view.clone(),
        }));
        self.decide_all(out);
    }

    /// Quorate by the facts delivered since the last confchg.
    fn view_quorate(&self) -> bool {
        let mut reported = self
            .view
            .iter()
            .filter_map(|m| self.facts.get(m))
            .peekable();
        reported.peek().is_some() && reported.all(|f| f.quorate)
    }

    fn decide_all(&mut self, out: &mut Vec<Action>) {
        let names: Vec<String> = self.elections.keys().cloned().collect();
        for name in names {
            self.decide(&name, out);
        }
    }

    /// Applies the rule to one election (installed views only).
    fn decide(&mut self, name: &str, out: &mut Vec<Action>) {
        if !self.is_installed() {
            return;
        }
        let quorate = self.view_quorate();
        let ring_seq = self
            .view
            .iter()
            .filter_map(|m| self.facts.get(m))
            .map(|f| f.ring_id.seq)
            .max()
            .unwrap_or(0);
        let founded = self.founded;
        let Some(entry) = self.elections.get_mut(name) else {
            return;
        };
        let next = if quorate {
            entry
                .candidates
                .iter()
                .map(|(m, s)| (*s, *m))
                .min()
                .map(|(_, m)| m)
        } else {
            None
        };
        if next == entry.leader {
            return;
        }
        if next.is_some() {
            let prev = entry.epoch.unwrap_or(Epoch {
                ring_seq: 0,
                term: founded,
            });
            entry.epoch = Some(Epoch {
                ring_seq: prev.ring_seq.max(ring_seq),
                term: prev.term + 1,
            });
        }
        entry.leader = next;
        out.push(Action::Event(ElectionEvent::LeaderChanged {
            name: name.to_owned(),
            leader: next,
            epoch: next.and(entry.epoch),
        }));
    }

    /// Recomputes where this member acts as leader and reports changes.
    fn update_acting(&mut self, out: &mut Vec<Action>) {
        let quorate = self.locally_quorate();
        let mut now = BTreeMap::new();
        if quorate {
            for (name, e) in &self.elections {
                if let (Some(l), Some(epoch)) = (e.leader, e.epoch) {
                    if l == self.local {
                        now.insert(name.clone(), epoch);
                    }
                }
            }
        }
        for (name, epoch) in &self.acting {
            if now.get(name) != Some(epoch) {
                out.push(Action::Event(ElectionEvent::Deposed {
                    name: name.clone(),
                    epoch: *epoch,
                }));
            }
        }
        for (name, epoch) in &now {
            if self.acting.get(name) != Some(epoch) {
                out.push(Action::Event(ElectionEvent::Elected {
                    name: name.clone(),
                    epoch: *epoch,
                }));
            }
        }
        self.acting = now;
    }
}

/// Identifies a view for infos: a hash of its sorted member list, the one
/// thing every member of the view sees alike (at a merge each side sees the
/// other side in its joined list).
fn view_tag(members: &[Member]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in members {
        for b in m
            .node
            .0
            .to_le_bytes()
            .iter()
            .chain(m.pid.to_le_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests;
