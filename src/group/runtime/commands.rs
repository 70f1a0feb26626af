//! The core's commands, carried out: multicasts queued, local actors
//! given their requests, replies sent, registrations and calls resolved,
//! supervision executed, events published; a view change's in the order
//! of the runtime's rules 1–3.

use actix::prelude::*;
use tracing::{debug, error, warn};

use super::{GroupActor, OnSent};
use crate::group::core::{Command, Outgoing};
use crate::group::messages::{RegistryOp, RemoteFailure, Reply, RequestRef};
use crate::group::{GroupError, GroupEvent, NameDropReason};
use crate::spans::RequestKey;
use crate::transport::Member;
use crate::wire::Kind;

impl GroupActor {
    /// Carries out `commands` in their order, then multicasts what they
    /// queued if the window has room.
    pub(super) fn execute(&mut self, commands: Vec<Command>, ctx: &mut Context<Self>) {
        self.follow_version();
        if self.carry_out(commands, false, ctx) {
            self.refill(ctx);
        }
    }

    /// Carries out the commands of a view change: first what its
    /// supervision decisions ask of this member (rule 1 of the runtime),
    /// then everything in its order; and sends nothing (rule 3: the pump
    /// sends at its next turn).
    pub(super) fn execute_view_change(&mut self, commands: Vec<Command>, ctx: &mut Context<Self>) {
        // First: the version the view change moved the group to, which
        // the names of the children started below are registered at.
        self.follow_version();
        for command in &commands {
            if let Command::Supervise(output) = command {
                self.act_on(output);
            }
        }
        self.carry_out(commands, true, ctx);
    }

    /// Carries out `commands` in their order; the supervision decisions
    /// only reported if `acted` (carried out already). `false` if the
    /// group refused this member, which then stops.
    fn carry_out(&mut self, commands: Vec<Command>, acted: bool, ctx: &mut Context<Self>) -> bool {
        let mut settled = false;
        for command in commands {
            match command {
                Command::Mcast(outgoing) => {
                    if matches!(outgoing, Outgoing::SyncRequest(_)) {
                        self.telemetry.state_asked();
                    }
                    // State transfer goes ahead of user traffic: the member
                    // that asked waits on it, and its position relative to
                    // this member's other messages does not matter.
                    let encoded = match &outgoing {
                        Outgoing::Announce(a) => self.codec.encode(Kind::Announce, a),
                        Outgoing::Refusal(r) => self.codec.encode(Kind::Refusal, r),
                        Outgoing::SyncRequest(r) => self.codec.encode(Kind::SyncRequest, r),
                        Outgoing::Snapshot(s) => self.codec.encode(Kind::Snapshot, s),
                        Outgoing::Supervision(m) => self.codec.encode(Kind::Supervision, m),
                    };
                    match encoded {
                        Ok(bytes) => {
                            if let Err(refused) = self.queue.push_control(bytes, OnSent::Nothing) {
                                self.finish(refused);
                            }
                        }
                        Err(e) => error!("state transfer message not sent: {e}"),
                    }
                }
                Command::RegisterDone { token, result } => {
                    if let Some((name, done)) = self.registering.remove(&token) {
                        let outcome = match result {
                            Ok(()) => Ok(()),
                            Err(owner) => {
                                let endpoint = self.endpoints.remove(&name);
                                let child_name = self.sup.children.values().any(|c| c.name == name);
                                if let (true, Some(endpoint)) = (child_name, endpoint) {
                                    // The former host has not released it yet.
                                    self.sup.wanted.insert(name.clone(), endpoint);
                                } else if done.is_none() {
                                    self.publish(GroupEvent::NameDropped {
                                        name: name.clone(),
                                        host: self.local(),
                                        reason: NameDropReason::LostInMerge,
                                    });
                                }
                                Err(GroupError::NameTaken { name, owner })
                            }
                        };
                        if let Some(done) = done {
                            let _ = done.send(outcome);
                        }
                    }
                }
                Command::Deliver { from, request } => self.deliver_local(from, request, ctx),
                Command::CallDone { id, outcome } => {
                    if let Some(done) = self.calls.remove(&id) {
                        let _ = done.send(outcome.map(Some));
                    }
                }
                Command::Reclaim { name } => {
                    if self.endpoints.contains_key(&name) {
                        let token = self.next_id();
                        self.registering.insert(token, (name.clone(), None));
                        self.enqueue(
                            Kind::Registry,
                            &RegistryOp::Register { name, token },
                            OnSent::Registering(token),
                        );
                    }
                }
                Command::Dropped { from, cause } => {
                    self.metrics.refused(cause);
                    warn!(group = %self.conn.group(), %from, ?cause, "refused a message");
                }
                Command::Refused(refusal) => {
                    self.refused(refusal, ctx);
                    return false;
                }
                Command::Supervise(output) if acted => self.report(output),
                Command::Supervise(output) => self.supervise(output),
                Command::Reconcile => self.reconcile(),
                Command::Event(event) => {
                    settled |= matches!(event, GroupEvent::ViewChanged { .. });
                    match &event {
                        GroupEvent::NameDropped { name, host, .. } if *host == self.local() => {
                            self.endpoints.remove(name);
                        }
                        GroupEvent::NameDropped { name, .. }
                        | GroupEvent::NameUnregistered { name, .. } => {
                            if let Some(endpoint) = self.sup.wanted.remove(name) {
                                self.register_child_name(name.clone(), endpoint);
                            }
                        }
                        GroupEvent::Ready => {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                            self.announce_quorum();
                        }
                        GroupEvent::ViewChanged { .. } if self.is_lowest() => {
                            self.announce_quorum();
                        }
                        _ => {}
                    }
                    self.publish(event);
                }
            }
        }
        // A start that joins a running tree may change nothing the engine
        // reports (no child moves): it is done once it is in all the same.
        if !self.sup.starting.is_empty() {
            self.resolve_tree_starts();
        }
        // A view change's decisions are carried out once its commands are.
        if settled {
            self.telemetry.view_settled();
        }
        if self.core.is_synced() {
            self.telemetry.state_held();
        }
        true
    }

    /// Multicasts again once half the window is free (in multicasts and in
    /// bytes), or leaves it to the pump, which flushes whenever it runs out
    /// of events and after taking in the ops waiting: sending a slot's worth
    /// at a time would make every freed slot a multicast of its own, where
    /// waiting a little packs the queue into a batch.
    pub(super) fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.queue.half_free() {
            self.flush_or_close(ctx);
        }
    }

    pub(super) fn publish(&self, event: GroupEvent) {
        match &event {
            // The registry's own traffic, one line per name: not a
            // decision about the group.
            GroupEvent::NameRegistered { .. } | GroupEvent::NameUnregistered { .. } => {
                debug!("{event}")
            }
            // The confchg itself is logged where it is read.
            GroupEvent::ViewChanged { .. } => {}
            _ => tracing::info!("{event}"),
        }
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    pub(super) fn deliver_local(
        &mut self,
        from: Member,
        request: impl AsRequest,
        ctx: &mut Context<Self>,
    ) {
        let RequestRef {
            id,
            target,
            type_tag,
            want_reply,
            payload,
            ..
        } = request.as_request();
        let span = crate::spans::request(
            &self.span,
            RequestKey { caller: from, id },
            target,
            type_tag,
        );
        let _entered = span.enter();
        let dispatched = match self.endpoints.get(target) {
            Some(endpoint) => endpoint.dispatch(&self.codec, type_tag, payload, want_reply),
            None => Err(RemoteFailure::ActorGone),
        };
        match dispatched {
            Ok(Some(fut)) => {
                let replying = span.clone();
                ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                    let _entered = replying.enter();
                    debug!(ok = outcome.is_ok(), "replying");
                    act.reply(id, from, outcome);
                    act.flush_or_close(ctx);
                }));
            }
            Ok(None) => {}
            Err(failure) => {
                match failure {
                    RemoteFailure::UnknownType(_) => self.metrics.unknown_type(),
                    RemoteFailure::BadPayload(_) => self.metrics.bad_payload(),
                    _ => {}
                }
                let type_tag = String::from_utf8_lossy(type_tag);
                warn!(%from, %target, %type_tag, ?failure, "request not handled");
                if want_reply {
                    self.reply(id, from, Err(failure));
                }
            }
        }
    }

    pub(super) fn reply(&mut self, id: u64, to: Member, outcome: Result<Vec<u8>, RemoteFailure>) {
        let encoded = Reply { id, to, outcome }.encode(&self.codec).or_else(|e| {
            Reply {
                id,
                to,
                outcome: Err(RemoteFailure::Encode(e.to_string())),
            }
            .encode(&self.codec)
        });
        match encoded {
            Ok(bytes) => self.push_back(bytes, OnSent::Nothing, false),
            Err(e) => error!(group = %self.conn.group(), "reply not sent: {e}"),
        }
    }
}

/// A request to hand to a local actor: read in place, or owned by the core
/// (replayed after a state transfer).
pub(super) trait AsRequest {
    fn as_request(&self) -> RequestRef<'_>;
}

impl AsRequest for RequestRef<'_> {
    fn as_request(&self) -> RequestRef<'_> {
        *self
    }
}

impl AsRequest for crate::group::messages::Request {
    fn as_request(&self) -> RequestRef<'_> {
        RequestRef::from(self)
    }
}
