//! The group's decision core: registry, state hand-over to joiners, and the
//! bookkeeping of this member's outstanding calls. No I/O, no clock, no
//! actix: events in, commands out.
//!
//! ```text
//!   transport events            GroupCore                     commands
//!  ────────────────────►  ┌──────────────────────┐  ──────────────────────►
//!   handle_confchg        │ view                 │   Mcast(Outgoing)
//!   handle_message        │ names: name -> host  │   RegisterDone{token,..}
//!    (decoded Registry,   │ sync: Synced{..} |   │   Deliver{request}   (to a
//!     Request, Reply,     │       Waiting{..}    │     local actor)
//!     Snapshot)           │ awaiting calls       │   CallDone{id,..}
//!                         └──────────────────────┘   Reclaim{name}
//!                                                     Event(GroupEvent)
//! ```
//!
//! Every group-level decision here (who owns a name, which names drop when
//! a member leaves, which snapshot a joiner accepts) is a function of the
//! ordered stream alone, so every member reaches it at the same position.
//!
//! State hand-over: a member that joins (reason `Join`) knows nothing of the
//! names already registered. It multicasts a [`SyncRequest`]; the lowest
//! member of the view that holds the state answers with a [`Snapshot`] of
//! the state *at the request's position in the order*, and the asking member
//! buffers everything it delivers after its own request, installs the
//! snapshot and replays the buffer. A confchg while waiting (the answering
//! member may have died) makes it ask again with a fresh nonce, so a late
//! answer to an old request can never be mistaken for the current one. On a
//! merge (joined members with `NodeUp`), the side holding the lowest member
//! of the view (counting only members that carry state) keeps its registry;
//! the other side asks for its state, then re-claims the names it hosts
//! through ordinary ordered registrations, which lose to names the primary
//! side already holds.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, warn};

use super::messages::{
    RegistryOp, Reply, Request, RequestRef, Snapshot, SupervisionMsg, SyncRequest,
};
use super::{CallError, GroupEvent, NameDropReason};
use crate::supervisor::{self, Engine, ViewChange};
use crate::transport::{Member, MemberChange, Reason};
use crate::wire::{Codec, Frame, Kind, WireError};

/// A decoded group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Registry(RegistryOp),
    Request(Request),
    Reply(Reply),
    SyncRequest(SyncRequest),
    Snapshot(Snapshot),
    Supervision(SupervisionMsg),
}

/// Decodes one (non-batch) envelope into the message the core takes.
pub(crate) fn decode_inbound(codec: &Codec, frame: Frame<'_>) -> Result<Inbound, WireError> {
    Ok(match frame.kind {
        Kind::Registry => Inbound::Registry(codec.decode_body(frame.body)?),
        Kind::Request => Inbound::Request(codec.decode_body(frame.body)?),
        Kind::Reply => Inbound::Reply(codec.decode_body(frame.body)?),
        Kind::Snapshot => Inbound::Snapshot(codec.decode_body(frame.body)?),
        Kind::SyncRequest => Inbound::SyncRequest(codec.decode_body(frame.body)?),
        Kind::Supervision => Inbound::Supervision(codec.decode_body(frame.body)?),
        Kind::Batch => return Err(WireError::Malformed("batch nested in a batch".into())),
        // Kinds of other protocols (replicated state, elections) never
        // belong in a registry group: counted and dropped like any unknown
        // kind.
        other => return Err(WireError::UnknownKind(other as u8)),
    })
}

/// A message the core asks the runtime to multicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    SyncRequest(SyncRequest),
    Snapshot(Box<Snapshot>),
    Supervision(SupervisionMsg),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Multicast this message.
    Mcast(Outgoing),
    /// This member's registration with `token` was decided.
    RegisterDone {
        token: u64,
        result: Result<(), Member>,
    },
    /// A request for a name this member hosts: hand it to the local actor.
    Deliver { from: Member, request: Request },
    /// This member's call `id` ended.
    CallDone {
        id: u64,
        outcome: Result<Vec<u8>, CallError>,
    },
    /// After a merge this member hosts `name` locally but the group lost it:
    /// register it again (an ordinary ordered registration).
    Reclaim { name: String },
    /// Tell subscribers.
    Event(GroupEvent),
    /// What the supervision engine decided; the runtime executes the
    /// commands addressed to this member.
    Supervise(supervisor::Output),
    /// The supervision state was replaced (state hand-over): start and stop
    /// local children so that exactly the engine's incarnations for this
    /// member run here.
    Reconcile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SyncState {
    /// This member holds the group's state; `unsynced` are members of the
    /// view still waiting for it, each with the nonce of its latest request
    /// delivered since the last confchg (a snapshot answers only that one).
    Synced {
        unsynced: BTreeMap<Member, Option<u64>>,
    },
    /// Waiting for a snapshot.
    Waiting(Waiting),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    /// Members known to hold the state: those that held it when this member
    /// started waiting, plus any seen receiving a valid snapshot since.
    /// When none is left, nobody can answer (see `handle_confchg`).
    holders: BTreeSet<Member>,
    /// Members that started waiting at the same confchg for the same reason:
    /// if every holder dies, they fall back together, in agreement.
    peers: BTreeSet<Member>,
    /// Nonce of this member's latest request delivered since the last
    /// confchg; `buffered` is everything delivered after it.
    asked: Option<u64>,
    buffered: Vec<(Member, Inbound)>,
    /// Every member's latest request since the last confchg, to tell which
    /// snapshots are valid.
    requests: BTreeMap<Member, u64>,
    /// Names this member hosted before it lost the state (after a merge).
    hosted_before: BTreeSet<String>,
}

impl Waiting {
    fn new(
        holders: BTreeSet<Member>,
        peers: BTreeSet<Member>,
        hosted_before: BTreeSet<String>,
    ) -> Self {
        Waiting {
            holders,
            peers,
            asked: None,
            buffered: Vec::new(),
            requests: BTreeMap::new(),
            hosted_before,
        }
    }
}

/// The pure state of one member of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupCore {
    local: Member,
    view: Vec<Member>,
    joined: bool,
    names: BTreeMap<String, Member>,
    sync: SyncState,
    /// This member's calls whose request was delivered, by id, with the host
    /// that owes the reply.
    awaiting: BTreeMap<u64, Member>,
    /// Last sync request nonce this member used.
    nonce: u64,
    /// The supervision trees of the group.
    engine: Engine,
    /// Whether this member sent its side's state in the current merge round.
    offered: bool,
}

impl GroupCore {
    /// A member that has not yet seen its first confchg.
    pub(crate) fn new(local: Member) -> Self {
        GroupCore {
            local,
            view: Vec::new(),
            joined: false,
            names: BTreeMap::new(),
            sync: SyncState::Waiting(Waiting::new(
                BTreeSet::new(),
                BTreeSet::new(),
                BTreeSet::new(),
            )),
            awaiting: BTreeMap::new(),
            nonce: 0,
            engine: Engine::new(),
            offered: false,
        }
    }

    /// Whether this member holds the group state (and may answer lookups).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn is_synced(&self) -> bool {
        matches!(self.sync, SyncState::Synced { .. })
    }

    /// The current view, sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// Where `name` lives, as of the last delivered message.
    pub(crate) fn lookup(&self, name: &str) -> Option<Member> {
        self.names.get(name).copied()
    }

    /// The supervision engine, as of the last delivered message.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Every registered name and its host.
    pub(crate) fn names(&self) -> &BTreeMap<String, Member> {
        &self.names
    }

    /// A configuration change, at its position in the stream.
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Vec<Command> {
        let mut out = Vec::new();
        let mut view = members.to_vec();
        view.sort();
        view.dedup();
        self.view = view;
        out.push(Command::Event(GroupEvent::ViewChanged {
            members: self.view.clone(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        }));

        for change in left {
            let failed: Vec<u64> = self
                .awaiting
                .iter()
                .filter(|(_, host)| **host == change.member)
                .map(|(id, _)| *id)
                .collect();
            for id in failed {
                self.awaiting.remove(&id);
                out.push(Command::CallDone {
                    id,
                    outcome: Err(CallError::HostLeft {
                        host: change.member,
                        reason: change.reason,
                    }),
                });
            }
        }

        let fresh: BTreeSet<Member> = joined
            .iter()
            .filter(|c| c.reason == Reason::Join)
            .map(|c| c.member)
            .collect();
        let joined_set: BTreeSet<Member> = joined.iter().map(|c| c.member).collect();
        let in_view: BTreeSet<Member> = self.view.iter().copied().collect();

        if !self.joined {
            if !in_view.contains(&self.local) {
                return out;
            }
            self.joined = true;
            let expected: BTreeSet<Member> = in_view.difference(&joined_set).copied().collect();
            if expected.is_empty() {
                // Everyone in the view is new: the (empty) state is agreed.
                self.sync = SyncState::Synced {
                    unsynced: BTreeMap::new(),
                };
                self.supervise_view(joined, left, &mut out);
                out.push(Command::Event(GroupEvent::Ready));
            } else {
                let peers = fresh.intersection(&in_view).copied().collect();
                self.wait_for_state(Waiting::new(expected, peers, BTreeSet::new()), &mut out);
            }
            return out;
        }

        match &mut self.sync {
            SyncState::Synced { unsynced } => {
                let merged = joined.iter().any(|c| c.reason != Reason::Join);
                let my_side: BTreeSet<Member> = in_view.difference(&joined_set).copied().collect();
                let candidates: BTreeSet<Member> = in_view
                    .difference(&fresh)
                    .filter(|m| !unsynced.contains_key(m))
                    .copied()
                    .collect();
                let primary = candidates.iter().next().is_none_or(|m| my_side.contains(m));
                if merged && !primary {
                    let hosted_before = self
                        .names
                        .iter()
                        .filter(|(_, h)| **h == self.local)
                        .map(|(n, _)| n.clone())
                        .collect();
                    let holders = joined_set.difference(&fresh).copied().collect();
                    let peers = my_side
                        .iter()
                        .filter(|m| !unsynced.contains_key(m))
                        .copied()
                        .collect();
                    // The registry kept while waiting is the fallback if
                    // every holder dies before answering: it must lose the
                    // names of members leaving at this same confchg, or
                    // they would never drop.
                    out.extend(self.drop_names_of(left));
                    // The supervision engine merges through its own round
                    // of offers: this side's offer must leave now, from the
                    // state it held before the merge.
                    self.supervise_view(joined, left, &mut out);
                    debug!(local = %self.local, "merged into a component that holds the group state; asking for it");
                    self.wait_for_state(Waiting::new(holders, peers, hosted_before), &mut out);
                    return out;
                }
                // A confchg voids every outstanding request: members still
                // waiting ask again.
                unsynced.retain(|m, _| in_view.contains(m));
                for asked in unsynced.values_mut() {
                    *asked = None;
                }
                unsynced.extend(joined_set.iter().map(|m| (*m, None)));
                out.extend(self.drop_names_of(left));
                self.supervise_view(joined, left, &mut out);
            }
            SyncState::Waiting(waiting) => {
                waiting.holders.retain(|m| in_view.contains(m));
                waiting.peers.retain(|m| in_view.contains(m));
                // Members merging in may hold state too.
                waiting
                    .holders
                    .extend(joined_set.difference(&fresh).copied());
                let mut waiting = waiting.clone();
                if waiting.holders.is_empty() {
                    // Nobody holds the state any more. Every peer reaches
                    // this at this same confchg (same holders, same stream),
                    // so they fall back together on their own state and
                    // treat everyone else as waiting.
                    warn!(local = %self.local, "every member that held the group state is gone; continuing with local state");
                    out.extend(self.drop_names_of(left));
                    let unsynced = in_view
                        .difference(&waiting.peers)
                        .map(|m| (*m, None))
                        .collect();
                    self.sync = SyncState::Synced { unsynced };
                    out.extend(self.reclaim(waiting.hosted_before));
                    out.push(Command::Event(GroupEvent::Ready));
                } else {
                    // The fallback registry follows departures while
                    // waiting too (see the merge above).
                    out.extend(self.drop_names_of(left));
                    // Whoever was to answer may be gone: ask again.
                    waiting.asked = None;
                    waiting.buffered.clear();
                    waiting.requests.clear();
                    self.wait_for_state(waiting, &mut out);
                }
            }
        }
        out
    }

    /// Feeds a confchg to the supervision engine.
    fn supervise_view(
        &mut self,
        joined: &[MemberChange],
        left: &[MemberChange],
        out: &mut Vec<Command>,
    ) {
        // The epoch counts view changes in the engine's own (transferred)
        // state, so every member computes the same one; starts after a
        // partition carry a larger epoch than anything started before it.
        let change = ViewChange {
            epoch: self.engine.epoch() + 1,
            members: self.view.clone(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        };
        self.offered = false;
        let output = self.engine.handle_view_change(change);
        self.push_supervision(output, out);
    }

    fn push_supervision(&mut self, output: supervisor::Output, out: &mut Vec<Command>) {
        if !output.commands.is_empty() || !output.events.is_empty() {
            out.push(Command::Supervise(output));
        }
        if !self.engine.is_merging() {
            self.offered = false;
        } else if !self.offered && self.engine.should_offer(self.local) {
            if let Some(offer) = self.engine.merge_offer() {
                self.offered = true;
                out.push(Command::Mcast(Outgoing::Supervision(
                    SupervisionMsg::StateOffered { offer },
                )));
            }
        }
    }

    fn wait_for_state(&mut self, waiting: Waiting, out: &mut Vec<Command>) {
        self.nonce += 1;
        self.sync = SyncState::Waiting(waiting);
        out.push(Command::Mcast(Outgoing::SyncRequest(SyncRequest {
            nonce: self.nonce,
        })));
    }

    fn drop_names_of(&mut self, left: &[MemberChange]) -> Vec<Command> {
        let mut out = Vec::new();
        for change in left {
            let gone: Vec<String> = self
                .names
                .iter()
                .filter(|(_, h)| **h == change.member)
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                self.names.remove(&name);
                out.push(Command::Event(GroupEvent::NameDropped {
                    name,
                    host: change.member,
                    reason: NameDropReason::HostLeft(change.reason),
                }));
            }
        }
        out
    }

    /// Whether a request from `from` for `target` can matter to this
    /// member. `false` only where [`GroupCore::handle_message`] would return
    /// no command and change nothing: a synced member that neither hosts
    /// the target nor awaits the reply. The runtime then skips building the
    /// request (its strings and payload) at all, which is most requests on
    /// most members.
    pub(crate) fn wants_request(&self, from: Member, target: &str, want_reply: bool) -> bool {
        if !self.joined {
            return false;
        }
        match self.sync {
            // Buffered for replay after the snapshot.
            SyncState::Waiting(_) => true,
            SyncState::Synced { .. } => {
                (from == self.local && want_reply) || self.names.get(target) == Some(&self.local)
            }
        }
    }

    /// A decoded message from `from`, at its position in the stream.
    pub(crate) fn handle_message(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        if !self.joined {
            return Vec::new();
        }
        let local = self.local;
        match (&mut self.sync, msg) {
            (SyncState::Synced { unsynced }, Inbound::SyncRequest(req)) => {
                if let Some(asked) = unsynced.get_mut(&from) {
                    *asked = Some(req.nonce);
                }
                let responder = self.view.iter().find(|m| !unsynced.contains_key(m));
                if responder != Some(&local) || from == local {
                    return Vec::new();
                }
                vec![Command::Mcast(Outgoing::Snapshot(Box::new(Snapshot {
                    for_member: from,
                    nonce: req.nonce,
                    names: self.names.iter().map(|(n, h)| (n.clone(), *h)).collect(),
                    supervision: self.engine.clone(),
                    unsynced: unsynced.iter().map(|(m, a)| (*m, *a)).collect(),
                })))]
            }
            (SyncState::Synced { unsynced }, Inbound::Snapshot(snap)) => {
                if unsynced.get(&snap.for_member) == Some(&Some(snap.nonce)) {
                    unsynced.remove(&snap.for_member);
                }
                Vec::new()
            }
            (SyncState::Synced { .. }, msg) => self.apply(from, msg),
            (SyncState::Waiting(w), Inbound::SyncRequest(req)) => {
                w.requests.insert(from, req.nonce);
                if from == local {
                    // Only the state at our latest request counts.
                    w.asked = Some(req.nonce);
                    w.buffered.clear();
                } else if w.asked.is_some() {
                    w.buffered.push((from, Inbound::SyncRequest(req)));
                }
                Vec::new()
            }
            (SyncState::Waiting(w), Inbound::Snapshot(snap))
                if snap.for_member == local && w.asked == Some(snap.nonce) =>
            {
                // The snapshot answers a request made in this view (a
                // confchg makes the member ask again), so every name it
                // lists lives on a member of the view. One that does not
                // is forged, and could never drop (no confchg will name its
                // host): it is not installed, alike on every member.
                let view = &self.view;
                self.names = snap
                    .names
                    .into_iter()
                    .filter(|(_, host)| view.contains(host))
                    .collect();
                self.engine = snap.supervision;
                self.offered = false;
                let unsynced = snap.unsynced.into_iter().collect();
                self.finish_sync(unsynced)
            }
            (SyncState::Waiting(w), Inbound::Snapshot(snap)) => {
                if w.requests.get(&snap.for_member) == Some(&snap.nonce) {
                    w.holders.insert(snap.for_member);
                }
                if w.asked.is_some() {
                    w.buffered.push((from, Inbound::Snapshot(snap)));
                }
                Vec::new()
            }
            (SyncState::Waiting(w), msg) => {
                // Before our own request the snapshot will include it.
                if w.asked.is_some() {
                    w.buffered.push((from, msg));
                }
                Vec::new()
            }
        }
    }

    fn finish_sync(&mut self, unsynced: BTreeMap<Member, Option<u64>>) -> Vec<Command> {
        let previous = std::mem::replace(&mut self.sync, SyncState::Synced { unsynced });
        let mut out = Vec::new();
        if let SyncState::Waiting(Waiting {
            buffered,
            hosted_before,
            ..
        }) = previous
        {
            for (from, msg) in buffered {
                out.extend(self.handle_message(from, msg));
            }
            if let SyncState::Synced { unsynced } = &mut self.sync {
                unsynced.remove(&self.local);
            }
            out.extend(self.reclaim(hosted_before));
        }
        out.push(Command::Reconcile);
        out.push(Command::Event(GroupEvent::Ready));
        out
    }

    /// Names this member hosted before it lost the group state: claim the
    /// ones nobody holds, and report the ones another member holds now.
    fn reclaim(&mut self, hosted_before: BTreeSet<String>) -> Vec<Command> {
        let mut out = Vec::new();
        for name in hosted_before {
            match self.names.get(&name) {
                None => out.push(Command::Reclaim { name }),
                Some(host) if *host != self.local => {
                    out.push(Command::Event(GroupEvent::NameDropped {
                        name,
                        host: self.local,
                        reason: NameDropReason::LostInMerge,
                    }))
                }
                Some(_) => {}
            }
        }
        out
    }

    fn apply(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        let mut out = Vec::new();
        match msg {
            Inbound::Registry(RegistryOp::Register { name, token }) => {
                match self.names.get(&name) {
                    Some(owner) if *owner != from => {
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Err(*owner),
                            });
                        }
                    }
                    Some(_) => {
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Ok(()),
                            });
                        }
                    }
                    None => {
                        self.names.insert(name.clone(), from);
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Ok(()),
                            });
                        }
                        out.push(Command::Event(GroupEvent::NameRegistered {
                            name,
                            host: from,
                        }));
                    }
                }
            }
            Inbound::Registry(RegistryOp::Unregister { name }) => {
                if self.names.get(&name) == Some(&from) {
                    self.names.remove(&name);
                    out.push(Command::Event(GroupEvent::NameUnregistered {
                        name,
                        host: from,
                    }));
                }
            }
            Inbound::Request(request) => {
                if self.route_request(from, &RequestRef::from(&request), &mut out) {
                    out.push(Command::Deliver { from, request });
                }
            }
            Inbound::Reply(reply) => {
                if reply.to == self.local && self.awaiting.get(&reply.id) == Some(&from) {
                    self.awaiting.remove(&reply.id);
                    out.push(Command::CallDone {
                        id: reply.id,
                        outcome: reply.outcome.map_err(CallError::Remote),
                    });
                }
            }
            Inbound::Supervision(msg) => {
                let event = match msg {
                    SupervisionMsg::TreeStarted {
                        name,
                        fingerprint,
                        spec,
                    } => supervisor::Event::TreeStarted {
                        name,
                        fingerprint,
                        spec,
                        by: from,
                    },
                    SupervisionMsg::ChildExited {
                        path,
                        incarnation,
                        normal,
                    } => supervisor::Event::ChildExited {
                        path,
                        incarnation,
                        host: from,
                        normal,
                    },
                    SupervisionMsg::Tick { now_ms } => supervisor::Event::Tick { now_ms },
                    SupervisionMsg::Quorum { quorate, nodes } => {
                        supervisor::Event::QuorumChanged { quorate, nodes }
                    }
                    SupervisionMsg::StateOffered { offer } => {
                        supervisor::Event::StateOffered { from, offer }
                    }
                };
                let output = self.engine.handle(event);
                self.push_supervision(output, &mut out);
            }
            Inbound::SyncRequest(_) | Inbound::Snapshot(_) => {}
        }
        out
    }

    /// A request at its place in the order, read in place, on a member that
    /// holds the group state: the commands it gives (a call of this
    /// member's that ended), and whether it goes to the local actor (which
    /// the runtime then hands it straight from the delivered bytes, instead
    /// of the core building an owned [`Request`] for [`Command::Deliver`]).
    /// `None` when the core must keep the request (this member is not
    /// synced): give it to [`GroupCore::handle_message`] instead.
    pub(crate) fn handle_request_in_place(
        &mut self,
        from: Member,
        request: &RequestRef<'_>,
    ) -> Option<(Vec<Command>, bool)> {
        if !self.joined || !matches!(self.sync, SyncState::Synced { .. }) {
            return None;
        }
        let mut out = Vec::new();
        let deliver = self.route_request(from, request, &mut out);
        Some((out, deliver))
    }

    /// What a request means here, as of its place in the order: fencing,
    /// the call it answers on the sender, and whether this member hosts its
    /// target (the return value).
    fn route_request(
        &mut self,
        from: Member,
        request: &RequestRef<'_>,
        out: &mut Vec<Command>,
    ) -> bool {
        if let Some(fence) = request.fence {
            if !self.runs_incarnation(request.target, fence) {
                if from == self.local && request.want_reply {
                    out.push(Command::CallDone {
                        id: request.id,
                        outcome: Err(CallError::StaleIncarnation {
                            name: request.target.to_owned(),
                            fence,
                        }),
                    });
                }
                return false;
            }
        }
        let host = self.names.get(request.target).copied();
        if from == self.local && request.want_reply {
            match host {
                Some(h) => {
                    self.awaiting.insert(request.id, h);
                }
                None => out.push(Command::CallDone {
                    id: request.id,
                    outcome: Err(CallError::NoSuchName(request.target.to_owned())),
                }),
            }
        }
        host == Some(self.local)
    }

    /// Whether the supervised child registered as `name` runs the
    /// incarnation with token `fence`, as of this point in the stream.
    fn runs_incarnation(&self, name: &str, fence: supervisor::FencingToken) -> bool {
        self.engine.running().iter().any(|c| {
            matches!(c.status, supervisor::SlotStatus::Running { token, .. } if token == fence)
                && super::children::child_name(&c.path, &c.slot) == name
        })
    }

    /// Fails every call still awaiting a reply (the group is closing).
    pub(crate) fn fail_all_calls(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.awaiting).into_keys().collect()
    }
}

#[cfg(test)]
mod tests;
