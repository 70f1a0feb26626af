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
//! names already registered. At each confchg, the lowest-ordered member that
//! holds the group's state multicasts a [`Snapshot`] of the registry *as it
//! stands right after that confchg*, tagged with the view. A member waiting
//! for state buffers every message from that confchg on; a snapshot whose
//! view equals the receiver's current view is valid (a confchg in between
//! makes it stale everywhere at once), so the waiting member installs it and
//! replays its buffer. If the sender dies first, the next confchg elects the
//! next sender. On a merge (joined members with `NodeUp`), the side holding
//! the lowest member of the view (counting only members that carry state)
//! keeps its registry; the other side waits for its snapshot, then re-claims
//! the names it hosts through ordinary ordered registrations, which lose to
//! names the primary side already holds.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, warn};

use super::messages::{Reply, RegistryOp, Request, Snapshot};
use super::{CallError, GroupEvent, NameDropReason};
use crate::transport::{Member, MemberChange, Reason};

/// A decoded group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Registry(RegistryOp),
    Request(Request),
    Reply(Reply),
    Snapshot(Snapshot),
}

/// A message the core asks the runtime to multicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    Snapshot(Snapshot),
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SyncState {
    /// This member holds the group's state; `unsynced` are members of the
    /// view still waiting for a snapshot.
    Synced { unsynced: BTreeSet<Member> },
    /// Waiting for a snapshot. `expected` are members believed to hold
    /// state; `buffered` is everything delivered since the last confchg.
    Waiting {
        expected: BTreeSet<Member>,
        buffered: Vec<(Member, Inbound)>,
        hosted_before: BTreeSet<String>,
    },
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
}

impl GroupCore {
    /// A member that has not yet seen its first confchg.
    pub(crate) fn new(local: Member) -> Self {
        GroupCore {
            local,
            view: Vec::new(),
            joined: false,
            names: BTreeMap::new(),
            sync: SyncState::Waiting {
                expected: BTreeSet::new(),
                buffered: Vec::new(),
                hosted_before: BTreeSet::new(),
            },
            awaiting: BTreeMap::new(),
        }
    }

    /// Whether this member holds the group state (and may answer lookups).
    #[cfg(test)]
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
                    unsynced: BTreeSet::new(),
                };
                out.push(Command::Event(GroupEvent::Ready));
            } else {
                self.sync = SyncState::Waiting {
                    expected,
                    buffered: Vec::new(),
                    hosted_before: BTreeSet::new(),
                };
            }
            return out;
        }

        match &mut self.sync {
            SyncState::Synced { unsynced } => {
                let merged = joined.iter().any(|c| c.reason != Reason::Join);
                let my_side: BTreeSet<Member> = in_view.difference(&joined_set).copied().collect();
                let candidates: BTreeSet<Member> = in_view
                    .difference(&fresh)
                    .filter(|m| !unsynced.contains(m))
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
                    let expected = joined_set.difference(&fresh).copied().collect();
                    debug!(local = %self.local, "merged into a component that holds the group state; waiting for its snapshot");
                    self.sync = SyncState::Waiting {
                        expected,
                        buffered: Vec::new(),
                        hosted_before,
                    };
                    return out;
                }
                unsynced.extend(joined_set.iter().copied());
                unsynced.retain(|m| in_view.contains(m));
                let sender = in_view.iter().find(|m| !unsynced.contains(m)).copied();
                let unsynced_left = !unsynced.is_empty();
                out.extend(self.drop_names_of(left));
                if unsynced_left && sender == Some(self.local) {
                    out.push(Command::Mcast(Outgoing::Snapshot(Snapshot {
                        for_view: self.view.clone(),
                        names: self
                            .names
                            .iter()
                            .map(|(n, h)| (n.clone(), *h))
                            .collect(),
                    })));
                }
            }
            SyncState::Waiting {
                expected, buffered, ..
            } => {
                buffered.clear();
                expected.retain(|m| in_view.contains(m));
                if expected.is_empty() {
                    warn!(local = %self.local, "every member that held the group state is gone; continuing with local state");
                    let names_left = self.drop_names_of(left);
                    out.extend(names_left);
                    out.extend(self.finish_sync(Vec::new()));
                }
            }
        }
        out
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

    /// A decoded message from `from`, at its position in the stream.
    pub(crate) fn handle_message(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        if !self.joined {
            return Vec::new();
        }
        match (&mut self.sync, msg) {
            (SyncState::Synced { unsynced }, Inbound::Snapshot(snap)) => {
                if snap.for_view == self.view {
                    unsynced.clear();
                }
                Vec::new()
            }
            (SyncState::Synced { .. }, msg) => self.apply(from, msg),
            (SyncState::Waiting { .. }, Inbound::Snapshot(snap)) => {
                if snap.for_view != self.view {
                    debug!(local = %self.local, "stale snapshot ignored");
                    return Vec::new();
                }
                self.names = snap.names.into_iter().collect();
                self.finish_sync(Vec::new())
            }
            (SyncState::Waiting { buffered, .. }, msg) => {
                buffered.push((from, msg));
                Vec::new()
            }
        }
    }

    fn finish_sync(&mut self, mut out: Vec<Command>) -> Vec<Command> {
        let previous = std::mem::replace(
            &mut self.sync,
            SyncState::Synced {
                unsynced: BTreeSet::new(),
            },
        );
        if let SyncState::Waiting {
            buffered,
            hosted_before,
            ..
        } = previous
        {
            for (from, msg) in buffered {
                out.extend(self.apply(from, msg));
            }
            for name in hosted_before {
                if !self.names.contains_key(&name) {
                    out.push(Command::Reclaim { name });
                } else if self.names.get(&name) != Some(&self.local) {
                    out.push(Command::Event(GroupEvent::NameDropped {
                        name,
                        host: self.local,
                        reason: NameDropReason::LostInMerge,
                    }));
                }
            }
        }
        out.push(Command::Event(GroupEvent::Ready));
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
                        out.push(Command::Event(GroupEvent::NameRegistered { name, host: from }));
                    }
                }
            }
            Inbound::Registry(RegistryOp::Unregister { name }) => {
                if self.names.get(&name) == Some(&from) {
                    self.names.remove(&name);
                    out.push(Command::Event(GroupEvent::NameUnregistered { name, host: from }));
                }
            }
            Inbound::Request(request) => {
                let host = self.names.get(&request.target).copied();
                if from == self.local && request.want_reply {
                    match host {
                        Some(h) => {
                            self.awaiting.insert(request.id, h);
                        }
                        None => out.push(Command::CallDone {
                            id: request.id,
                            outcome: Err(CallError::NoSuchName(request.target.clone())),
                        }),
                    }
                }
                if host == Some(self.local) {
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
            Inbound::Snapshot(_) => {}
        }
        out
    }

    /// Fails every call still awaiting a reply (the group is closing).
    pub(crate) fn fail_all_calls(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.awaiting).into_keys().collect()
    }
}

#[cfg(test)]
mod tests;
