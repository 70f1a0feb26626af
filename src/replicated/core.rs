//! The decision core of one replica: view installation, the primary
//! component, apply order, state transfer and safe delivery. No I/O, no
//! clock, no actix: events in, actions out.
//!
//! ```text
//!   transport events                ReplicaCore<S>                 actions
//!  ─────────────────────►  ┌─────────────────────────────┐  ───────────────────►
//!   handle_confchg         │ view, facts (quorum, in     │   Mcast(Info | Fact | Ack)
//!   handle_quorum (local)  │   the stream)               │   Purge      (view changed)
//!   handle_message         │ phase: Installing{infos,    │   SendSnapshot{state, capture}
//!    Info Fact Command     │         held} | Installed   │   Reply{id, result}
//!    Ack Chunk             │ sm: S, id: StateId          │   Event(ReplicaEvent)
//!                          │ known: last primary (L)     │   Fatal(why)
//!                          └─────────────────────────────┘
//! ```
//!
//! # View installation
//!
//! After every confchg each member multicasts an [`Info`]: its latest quorum
//! notification, the latest primary component it knows of, and the
//! [`StateId`] of the state it holds. Commands delivered before every
//! member's info is in are *held*. When the last info is delivered, every
//! member computes the same install (it saw the same infos in the same
//! order):
//!
//! - **winner**: the greatest state id in the view; the members holding it
//!   (equal ids mean equal states) keep their state, everyone else
//!   discards theirs and receives the winner's;
//! - **sender**: the lowest winner; it captures its state *at this point*
//!   (before the held commands), and its runtime encodes and multicasts it
//!   in chunks; receivers buffer every command applied after this point and
//!   replay it once the snapshot is restored;
//! - **primary** ⇔ every member's latest quorum fact says quorate (at least
//!   one member reported), and either no member knows of any earlier
//!   primary component and one of them may found a group
//!   ([`super::ReplicaConfig::found_group`]), or the winner holds the state
//!   of the last primary component `L` and the view holds a strict
//!   majority of `L` (minus members seen leaving with `Leave`/`ProcDown`,
//!   which are gone for sure; if that leaves nobody, no majority is
//!   needed);
//! - if primary: a new [`PrimaryEpoch`] (`term + 1`, `ring_seq` = the
//!   highest ring seq reported), which becomes the winners' state epoch,
//!   and the held commands are applied; if not, they are refused
//!   ([`ReplicaError::NotPrimary`]: nobody applied them).
//!
//! A quorum fact delivered later re-evaluates the same rule in place: the
//! view can become primary (new epoch) or stop being primary. Commands are
//! applied only while the installed view is primary, in delivery order.
//!
//! Why a majority of the last primary as well as quorum: quorum alone lets
//! a partition holding only stale replicas (the up-to-date ones elsewhere)
//! become primary and lose acknowledged writes; a majority of the last
//! primary always contains a member of it, i.e. its state.
//!
//! # Safe delivery
//!
//! In [`Delivery::Safe`] commands are applied in delivery order as above,
//! but the caller's reply waits until every member that holds the state has
//! multicast an [`ReplicaMessage::Ack`] at or past the command's position.
//! Replies still waiting when the view changes are released only if this
//! member's state survives into a primary view; otherwise the caller gets
//! [`ReplicaError::Uncertain`].

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, warn};

use super::messages::{
    Chunk, CommandMsg, Info, PrimaryEpoch, PrimaryRecord, ReplicaMessage, StateId,
};
use super::{Delivery, Executed, ReplicaError, ReplicaEvent, StateMachine};
use crate::transport::{Member, MemberChange, QuorumState, Reason};
use crate::wire::Codec;

/// The actions for a state machine `S`.
pub(crate) type Actions<S> =
    Vec<Action<<S as StateMachine>::Response, <S as StateMachine>::Snapshot>>;

/// What the runtime must do (`R`: responses, `C`: snapshot captures).
pub(crate) enum Action<R, C> {
    /// Multicast this protocol message (ahead of user commands).
    Mcast(ReplicaMessage),
    /// The view changed: drop protocol messages and snapshot chunks not
    /// yet multicast (they belong to the old view).
    Purge,
    /// Encode this capture of `state` and multicast it in chunks.
    SendSnapshot { state: StateId, snapshot: C },
    /// This member's command `id` finished.
    Reply {
        id: u64,
        result: Result<Executed<R>, ReplicaError>,
    },
    /// Tell subscribers.
    Event(ReplicaEvent),
    /// This replica cannot go on (a snapshot did not restore): leave.
    Fatal(String),
}

/// Something to redo, in order, after a received snapshot is restored.
#[derive(Debug, Clone)]
enum Replay {
    Apply(Member, CommandMsg),
    /// The view became primary with this epoch (and, if it founded the
    /// group, this genesis).
    Promote(PrimaryEpoch, Option<u64>),
}

#[derive(Debug)]
struct Incoming {
    from: Member,
    /// The state the snapshot captures.
    expect: StateId,
    next: u32,
    bytes: Vec<u8>,
    replay: Vec<Replay>,
}

#[derive(Debug)]
struct Installed {
    primary: bool,
    /// The last primary component as of the install (re-evaluation uses it).
    latest: Option<PrimaryEpoch>,
    lineage: BTreeSet<Member>,
    /// Epoch of the winning state at install (after any promotion).
    winner_epoch: PrimaryEpoch,
    sender: Option<Member>,
    receivers: BTreeSet<Member>,
    /// Whether a member of the view may found a group.
    founders: bool,
    /// Set while this member waits for the snapshot.
    incoming: Option<Incoming>,
}

#[derive(Debug)]
enum Phase {
    Unjoined,
    Installing {
        infos: BTreeMap<Member, Info>,
        held: Vec<(Member, CommandMsg)>,
    },
    Installed(Installed),
}

/// One replica's pure state.
pub(crate) struct ReplicaCore<S: StateMachine> {
    local: Member,
    codec: Codec,
    delivery: Delivery,
    max_snapshot: usize,
    founder: bool,
    view: Vec<Member>,
    joined: bool,
    sm: S,
    id: StateId,
    known: Option<PrimaryRecord>,
    facts: BTreeMap<Member, QuorumState>,
    local_fact: Option<QuorumState>,
    sent_fact: Option<QuorumState>,
    phase: Phase,
    ready: bool,
    // Safe delivery.
    holders: BTreeSet<Member>,
    acks: BTreeMap<Member, u64>,
    ack_in_flight: bool,
    acked: u64,
    /// Our info was multicast and not yet delivered back.
    info_in_flight: bool,
    /// This member's applied commands whose reply waits for stability, by
    /// position (`applied` after the command).
    unstable: BTreeMap<u64, (u64, Executed<S::Response>)>,
}

impl<S: StateMachine> ReplicaCore<S> {
    /// A replica that has not seen its first confchg, holding `S::default()`.
    pub(crate) fn new(
        local: Member,
        codec: Codec,
        delivery: Delivery,
        max_snapshot: usize,
        founder: bool,
    ) -> Self {
        ReplicaCore {
            local,
            codec,
            delivery,
            max_snapshot,
            founder,
            view: Vec::new(),
            joined: false,
            sm: S::default(),
            id: StateId::default(),
            known: None,
            facts: BTreeMap::new(),
            local_fact: None,
            sent_fact: None,
            phase: Phase::Unjoined,
            ready: false,
            holders: BTreeSet::new(),
            acks: BTreeMap::new(),
            ack_in_flight: false,
            acked: 0,
            info_in_flight: false,
            unstable: BTreeMap::new(),
        }
    }

    /// The local state (as of the last delivered event).
    pub(crate) fn state(&self) -> &S {
        &self.sm
    }

    /// The local state's id.
    pub(crate) fn state_id(&self) -> StateId {
        self.id
    }

    /// The current view, sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// Whether this member holds the view's state (not waiting for a
    /// snapshot, not between a confchg and the install).
    pub(crate) fn is_holding(&self) -> bool {
        matches!(&self.phase, Phase::Installed(i) if i.incoming.is_none())
    }

    /// Whether the installed view is a primary component.
    pub(crate) fn is_primary(&self) -> bool {
        matches!(&self.phase, Phase::Installed(i) if i.primary)
    }

    /// Whether the view is installed (every member's info delivered).
    pub(crate) fn is_installed(&self) -> bool {
        matches!(self.phase, Phase::Installed(_))
    }

    /// The epoch of the primary component, while primary.
    pub(crate) fn primary_epoch(&self) -> Option<PrimaryEpoch> {
        match &self.phase {
            Phase::Installed(i) if i.primary => self.known.as_ref().map(|k| k.epoch),
            _ => None,
        }
    }

    /// Whether this member has held the state at least once.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// A configuration change, at its position in the stream.
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Actions<S> {
        let mut out = Vec::new();
        let mut view = members.to_vec();
        view.sort();
        view.dedup();
        self.view = view;
        out.push(Action::Event(ReplicaEvent::ViewChanged {
            members: self.view.clone(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        }));
        if !self.view.contains(&self.local) {
            // Not joined yet, or this is our own leave: no view to install.
            return out;
        }
        self.joined = true;
        // Members that left on purpose or whose process died are gone for
        // good; `NodeDown` may be a partition, so those stay counted.
        if let Some(known) = &mut self.known {
            known.members.retain(|m| {
                !left
                    .iter()
                    .any(|c| c.member == *m && matches!(c.reason, Reason::Leave | Reason::ProcDown))
            });
        }
        let view = &self.view;
        self.facts.retain(|m, _| view.contains(m));

        match std::mem::replace(
            &mut self.phase,
            Phase::Installing {
                infos: BTreeMap::new(),
                held: Vec::new(),
            },
        ) {
            Phase::Installing { held, .. } => {
                // Never installed: whether another part of the old view
                // applied them is unknown.
                for (from, cmd) in held {
                    if from == self.local {
                        out.push(Action::Reply {
                            id: cmd.id,
                            result: Err(ReplicaError::Uncertain),
                        });
                    }
                }
            }
            Phase::Installed(installed) => {
                if let Some(incoming) = installed.incoming {
                    // The transfer is void: fail the commands that waited
                    // for it; the state stays the stale one until the next
                    // install designates a sender.
                    for step in incoming.replay {
                        if let Replay::Apply(from, cmd) = step {
                            if from == self.local {
                                out.push(Action::Reply {
                                    id: cmd.id,
                                    result: Err(ReplicaError::Uncertain),
                                });
                            }
                        }
                    }
                }
            }
            Phase::Unjoined => {}
        }
        self.holders.clear();
        self.acks.clear();
        // An ack still queued is purged below; one already sent comes back
        // before our info, so it cannot be mistaken for a later one.
        self.ack_in_flight = false;
        out.push(Action::Purge);
        if self.info_in_flight {
            // At most one info of ours is on its way: the one already sent
            // will be delivered after this confchg and count for this view.
            // Its content is still true, because nothing changes our state
            // before our own info is delivered. A second info could arrive
            // after a later confchg and be counted there with content from
            // before an install. The purge dropped any queued fact.
            if let Some(q) = self.local_fact.clone() {
                self.sent_fact = Some(q.clone());
                out.push(Action::Mcast(ReplicaMessage::Fact(q)));
            }
        } else {
            self.info_in_flight = true;
            out.push(Action::Mcast(ReplicaMessage::Info(Info {
                fact: self.local_fact.clone(),
                known: self.known.clone(),
                state: self.id,
                founder: self.founder,
            })));
            self.sent_fact = self.local_fact.clone();
        }
        out
    }

    /// This node's quorum service reported (a local fact: it is multicast,
    /// and used when it comes back in order).
    pub(crate) fn handle_quorum(&mut self, q: QuorumState) -> Actions<S> {
        self.local_fact = Some(q);
        if self.joined && self.sent_fact != self.local_fact {
            self.sent_fact = self.local_fact.clone();
            if let Some(q) = self.local_fact.clone() {
                return vec![Action::Mcast(ReplicaMessage::Fact(q))];
            }
        }
        Vec::new()
    }

    /// A decoded message from `from`, at its position in the stream.
    pub(crate) fn handle_message(&mut self, from: Member, msg: ReplicaMessage) -> Actions<S> {
        let mut out = Vec::new();
        if !self.joined {
            return out;
        }
        match msg {
            ReplicaMessage::Info(info) => {
                if from == self.local {
                    self.info_in_flight = false;
                }
                let in_view = self.view.contains(&from);
                if let Phase::Installing { infos, .. } = &mut self.phase {
                    if in_view {
                        if let Some(f) = &info.fact {
                            self.facts.insert(from, f.clone());
                        }
                        infos.insert(from, info);
                        let complete = self.view.iter().all(|m| infos.contains_key(m));
                        if complete {
                            self.install(&mut out);
                        }
                    }
                }
                // Once installed, a late info is a stale copy: its content
                // was already counted.
            }
            ReplicaMessage::Fact(q) => {
                if self.view.contains(&from) {
                    self.facts.insert(from, q);
                    if matches!(self.phase, Phase::Installed(_)) {
                        self.reevaluate(&mut out);
                    }
                }
            }
            ReplicaMessage::Command(cmd) => match &mut self.phase {
                Phase::Unjoined => {}
                Phase::Installing { held, .. } => held.push((from, cmd)),
                Phase::Installed(installed) => {
                    if !installed.primary {
                        if from == self.local {
                            out.push(Action::Reply {
                                id: cmd.id,
                                result: Err(ReplicaError::NotPrimary),
                            });
                        }
                    } else if let Some(incoming) = &mut installed.incoming {
                        incoming.replay.push(Replay::Apply(from, cmd));
                    } else {
                        self.apply(from, cmd, &mut out);
                    }
                }
            },
            ReplicaMessage::Ack(upto) => {
                if from == self.local {
                    self.ack_in_flight = false;
                }
                if matches!(self.phase, Phase::Installed(_)) && self.holders.contains(&from) {
                    let acked = self.acks.entry(from).or_default();
                    *acked = (*acked).max(upto);
                    self.release_stable(&mut out);
                }
            }
            ReplicaMessage::Chunk(chunk) => self.handle_chunk(from, chunk, &mut out),
        }
        self.maybe_ack(&mut out);
        out
    }

    /// Whether the view's quorum facts say quorate: at least one member
    /// reported, and every report present says quorate. A member that has
    /// not reported yet (a joiner reads its first quorum notification after
    /// its first confchg) shares the others' ring, hence their quorum.
    fn view_quorate(&self) -> bool {
        let mut reported = self
            .view
            .iter()
            .filter_map(|m| self.facts.get(m))
            .peekable();
        reported.peek().is_some() && reported.all(|f| f.quorate)
    }

    fn highest_ring_seq(&self) -> u64 {
        self.view
            .iter()
            .filter_map(|m| self.facts.get(m))
            .map(|f| f.ring_id.seq)
            .max()
            .unwrap_or(0)
    }

    /// The genesis of a group founded by the current view with `epoch`:
    /// every member of the view computes the same.
    fn genesis_of(&self, epoch: PrimaryEpoch) -> u64 {
        let founder = self.view.first().copied().unwrap_or(self.local);
        chain(chain(0, founder, epoch.ring_seq), founder, epoch.term).max(1)
    }

    fn next_epoch(&self, base: Option<PrimaryEpoch>) -> PrimaryEpoch {
        let base = base.unwrap_or_default();
        PrimaryEpoch {
            ring_seq: base.ring_seq.max(self.highest_ring_seq()),
            term: base.term + 1,
        }
    }

    /// The rule for a primary component (see the module docs).
    fn eligible(
        &self,
        latest: Option<PrimaryEpoch>,
        lineage: &BTreeSet<Member>,
        winner: PrimaryEpoch,
        founders: bool,
    ) -> bool {
        match latest {
            None => founders,
            Some(latest) => {
                // The latest state must be here: going on from an older one
                // would silently drop what the last primary acknowledged.
                if winner < latest {
                    return false;
                }
                // Every member of the last primary is gone for sure: nobody
                // can be primary elsewhere, and its state is here.
                if lineage.is_empty() {
                    return true;
                }
                let present = self.view.iter().filter(|m| lineage.contains(m)).count();
                2 * present > lineage.len()
            }
        }
    }

    fn install(&mut self, out: &mut Actions<S>) {
        let Phase::Installing { infos, held } = std::mem::replace(&mut self.phase, Phase::Unjoined)
        else {
            return;
        };
        // The greatest state wins; ties (equal ids) are the same state.
        let winner = infos.values().map(|i| i.state).max().unwrap_or_default();
        let winners: BTreeSet<Member> = infos
            .iter()
            .filter(|(_, i)| i.state == winner)
            .map(|(m, _)| *m)
            .collect();
        let receivers: BTreeSet<Member> = self
            .view
            .iter()
            .filter(|m| !winners.contains(m))
            .copied()
            .collect();
        let latest = infos
            .values()
            .filter_map(|i| i.known.as_ref().map(|k| k.epoch))
            .max();
        let mut lineage: Option<BTreeSet<Member>> = None;
        for info in infos.values() {
            if let Some(k) = &info.known {
                if Some(k.epoch) == latest {
                    let set: BTreeSet<Member> = k.members.iter().copied().collect();
                    lineage = Some(match lineage {
                        None => set,
                        Some(l) => l.intersection(&set).copied().collect(),
                    });
                }
            }
        }
        let lineage = lineage.unwrap_or_default();
        let founders = infos.values().any(|i| i.founder);
        let primary =
            self.view_quorate() && self.eligible(latest, &lineage, winner.epoch, founders);
        let mut winner_epoch = winner.epoch;
        let mut genesis = winner.genesis;
        let (latest, lineage) = if primary {
            let epoch = self.next_epoch(latest);
            if latest.is_none() {
                genesis = self.genesis_of(epoch);
            }
            winner_epoch = epoch;
            self.known = Some(PrimaryRecord {
                epoch,
                members: self.view.clone(),
            });
            (Some(epoch), self.view.iter().copied().collect())
        } else {
            if let Some(epoch) = latest {
                self.known = Some(PrimaryRecord {
                    epoch,
                    members: lineage.iter().copied().collect(),
                });
            }
            (latest, lineage)
        };
        let sender = if receivers.is_empty() {
            None
        } else {
            winners.iter().next().copied()
        };
        let snapshot_id = StateId {
            epoch: winner_epoch,
            genesis,
            ..winner
        };
        let am_winner = winners.contains(&self.local);
        let mut incoming = None;
        if am_winner {
            self.id.epoch = winner_epoch;
            self.id.genesis = genesis;
            if sender == Some(self.local) {
                debug!(local = %self.local, to = ?receivers, "sending the state");
                out.push(Action::Event(ReplicaEvent::TransferStarted {
                    to: receivers.iter().copied().collect(),
                }));
                out.push(Action::SendSnapshot {
                    state: self.id,
                    snapshot: self.sm.snapshot(),
                });
            }
        } else {
            incoming = Some(Incoming {
                from: sender.unwrap_or(self.local),
                expect: snapshot_id,
                next: 0,
                bytes: Vec::new(),
                replay: Vec::new(),
            });
        }
        self.phase = Phase::Installed(Installed {
            primary,
            latest,
            lineage,
            winner_epoch,
            sender,
            receivers: receivers.clone(),
            founders,
            incoming,
        });
        self.holders = winners;
        self.acks.clear();
        self.acked = 0;
        // Replies waiting for stability survive only into a primary view
        // that keeps this member's state.
        let waiting = std::mem::take(&mut self.unstable);
        if am_winner && primary {
            self.unstable = waiting;
        } else {
            for (_, (id, _)) in waiting {
                out.push(Action::Reply {
                    id,
                    result: Err(ReplicaError::Uncertain),
                });
            }
        }
        out.push(Action::Event(ReplicaEvent::Installed {
            primary,
            epoch: if primary { latest } else { None },
            sender,
            receivers: receivers.into_iter().collect(),
        }));
        for (from, cmd) in held {
            if !primary {
                if from == self.local {
                    out.push(Action::Reply {
                        id: cmd.id,
                        result: Err(ReplicaError::NotPrimary),
                    });
                }
            } else if let Phase::Installed(Installed {
                incoming: Some(incoming),
                ..
            }) = &mut self.phase
            {
                incoming.replay.push(Replay::Apply(from, cmd));
            } else {
                self.apply(from, cmd, out);
            }
        }
        if am_winner && !self.ready {
            self.ready = true;
            out.push(Action::Event(ReplicaEvent::Ready));
        }
    }

    /// A quorum fact changed the view's quorum: re-apply the primary rule.
    fn reevaluate(&mut self, out: &mut Actions<S>) {
        let quorate = self.view_quorate();
        let Phase::Installed(installed) = &self.phase else {
            return;
        };
        if installed.primary && !quorate {
            if let Phase::Installed(installed) = &mut self.phase {
                installed.primary = false;
            }
            for (_, (id, _)) in std::mem::take(&mut self.unstable) {
                out.push(Action::Reply {
                    id,
                    result: Err(ReplicaError::Uncertain),
                });
            }
            out.push(Action::Event(ReplicaEvent::PrimaryChanged {
                primary: false,
                epoch: None,
            }));
        } else if !installed.primary
            && quorate
            && self.eligible(
                installed.latest,
                &installed.lineage,
                installed.winner_epoch,
                installed.founders,
            )
        {
            let epoch = self.next_epoch(installed.latest);
            let genesis = installed.latest.is_none().then(|| self.genesis_of(epoch));
            self.known = Some(PrimaryRecord {
                epoch,
                members: self.view.clone(),
            });
            let lineage: BTreeSet<Member> = self.view.iter().copied().collect();
            if let Phase::Installed(installed) = &mut self.phase {
                installed.primary = true;
                installed.latest = Some(epoch);
                installed.lineage = lineage;
                installed.winner_epoch = epoch;
                match &mut installed.incoming {
                    Some(incoming) => incoming.replay.push(Replay::Promote(epoch, genesis)),
                    None => {
                        self.id.epoch = epoch;
                        if let Some(genesis) = genesis {
                            self.id.genesis = genesis;
                        }
                    }
                }
            }
            out.push(Action::Event(ReplicaEvent::PrimaryChanged {
                primary: true,
                epoch: Some(epoch),
            }));
        }
    }

    fn apply(&mut self, from: Member, cmd: CommandMsg, out: &mut Actions<S>) {
        let command = match self.codec.decode_payload::<S::Command>(&cmd.payload) {
            Ok(c) => c,
            Err(e) => {
                // Every replica fails alike on the same bytes, so skipping
                // keeps them equal.
                warn!(%from, id = cmd.id, "command does not decode; skipped: {e}");
                if from == self.local {
                    out.push(Action::Reply {
                        id: cmd.id,
                        result: Err(ReplicaError::Codec(e.to_string())),
                    });
                }
                return;
            }
        };
        let response = self.sm.apply(command);
        self.id.applied += 1;
        self.id.chain = chain(self.id.chain, from, cmd.id);
        if from == self.local {
            let executed = Executed {
                response,
                state: self.id,
            };
            match self.delivery {
                Delivery::Agreed => out.push(Action::Reply {
                    id: cmd.id,
                    result: Ok(executed),
                }),
                Delivery::Safe => {
                    self.unstable.insert(self.id.applied, (cmd.id, executed));
                }
            }
        }
    }

    fn release_stable(&mut self, out: &mut Actions<S>) {
        if self.unstable.is_empty() {
            return;
        }
        let stable = self
            .holders
            .iter()
            .map(|h| self.acks.get(h).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        while let Some(entry) = self.unstable.first_entry() {
            if *entry.key() > stable {
                break;
            }
            let (id, executed) = entry.remove();
            out.push(Action::Reply {
                id,
                result: Ok(executed),
            });
        }
    }

    fn maybe_ack(&mut self, out: &mut Actions<S>) {
        if self.delivery != Delivery::Safe
            || self.ack_in_flight
            || !self.is_holding()
            || self.id.applied <= self.acked
        {
            return;
        }
        self.acked = self.id.applied;
        self.ack_in_flight = true;
        out.push(Action::Mcast(ReplicaMessage::Ack(self.id.applied)));
    }

    fn handle_chunk(&mut self, from: Member, chunk: Chunk, out: &mut Actions<S>) {
        let Phase::Installed(installed) = &mut self.phase else {
            return;
        };
        if installed.sender != Some(from) {
            return;
        }
        let last = chunk.index.saturating_add(1) >= chunk.total;
        let Some(incoming) = &mut installed.incoming else {
            if last {
                // Every receiver restores at this same point.
                let receivers = installed.receivers.clone();
                self.holders.extend(receivers);
            }
            return;
        };
        if incoming.from != from || chunk.state != incoming.expect || chunk.index != incoming.next {
            warn!(%from, index = chunk.index, "unexpected snapshot chunk; dropped");
            return;
        }
        incoming.bytes.extend_from_slice(&chunk.bytes);
        incoming.next += 1;
        if incoming.bytes.len() > self.max_snapshot {
            out.push(Action::Fatal(format!(
                "snapshot from {from} exceeds the limit of {} bytes",
                self.max_snapshot
            )));
            return;
        }
        if !last {
            return;
        }
        let receivers = installed.receivers.clone();
        let Some(incoming) = installed.incoming.take() else {
            return;
        };
        self.holders.extend(receivers);
        match S::restore(&incoming.bytes) {
            Ok(sm) => {
                self.sm = sm;
                self.id = incoming.expect;
                let replayed = incoming.replay.len();
                for step in incoming.replay {
                    match step {
                        Replay::Apply(from, cmd) => self.apply(from, cmd, out),
                        Replay::Promote(epoch, genesis) => {
                            self.id.epoch = epoch;
                            if let Some(genesis) = genesis {
                                self.id.genesis = genesis;
                            }
                        }
                    }
                }
                out.push(Action::Event(ReplicaEvent::Restored {
                    from,
                    bytes: incoming.bytes.len() as u64,
                    replayed,
                }));
                if !self.ready {
                    self.ready = true;
                    out.push(Action::Event(ReplicaEvent::Ready));
                }
                self.release_stable(out);
            }
            Err(e) => out.push(Action::Fatal(format!(
                "snapshot from {from} does not restore: {e}"
            ))),
        }
    }
}

/// FNV-1a over the previous chain and the command's identity.
fn chain(prev: u64, from: Member, id: u64) -> u64 {
    let mut h = prev ^ 0xcbf2_9ce4_8422_2325;
    for b in from
        .node
        .0
        .to_le_bytes()
        .iter()
        .chain(from.pid.to_le_bytes().iter())
        .chain(id.to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
