//! The group runtime: one actix actor per joined group, the only code that
//! touches the transport. It decodes events, feeds them to [`GroupCore`] and
//! executes the commands that come back.
//!
//! ```text
//!  Op (register, call, ...) ──► outbound queue ──► mcast (window, TRY_AGAIN)
//!                                                        │
//!  transport ─ poll_event ─► decode ─► GroupCore ─► commands ─► local actors,
//!                                                        replies, events
//! ```
//!
//! The send window bounds messages multicast but not yet delivered back to
//! this member; a message that meets `TRY_AGAIN` stays at the head of the
//! queue and is retried before anything behind it, so nothing is lost or
//! reordered.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, warn};

use super::core::{Command, GroupCore, Inbound, Outgoing};
use super::messages::{RegistryOp, RemoteFailure, Reply, Request, Snapshot, SyncRequest};
use super::metrics::GroupMetrics;
use super::{CallError, CallOutcome, GroupConfig, GroupError, GroupEvent, NameDropReason};
use crate::remote::Endpoint;
use crate::transport::{Connection, Member, TransportError, TransportEvent};
use crate::wire::{Codec, Kind};

/// Events handled per turn before the actor lets its mailbox in.
const EVENT_BUDGET: usize = 256;
/// Back-off before retrying a send the daemon answered with `TRY_AGAIN`
/// when no event arrives to wake the runtime sooner.
const TRY_AGAIN_BACKOFF: Duration = Duration::from_millis(1);

type Done<T> = oneshot::Sender<T>;
type Registering = (String, Option<Done<Result<(), GroupError>>>);

/// A request from a [`super::Group`] handle.
pub(crate) enum Op {
    Register {
        name: String,
        endpoint: Endpoint,
        done: Done<Result<(), GroupError>>,
    },
    Unregister {
        name: String,
        done: Done<Result<(), GroupError>>,
    },
    Lookup {
        name: String,
        done: Done<Option<Member>>,
    },
    Names {
        done: Done<Vec<(String, Member)>>,
    },
    Members {
        done: Done<Vec<Member>>,
    },
    Call {
        target: String,
        type_tag: &'static str,
        payload: Vec<u8>,
        want_reply: bool,
        done: Done<CallOutcome>,
    },
    Leave {
        done: Done<Result<(), GroupError>>,
    },
}

/// What to do once a queued message has been handed to the transport.
enum OnSent {
    Nothing,
    Resolve(Done<Result<(), GroupError>>),
    /// A fire-and-forget call: resolve it now.
    Told(Done<CallOutcome>),
    /// A call awaiting a reply: only a send failure ends it here.
    Awaiting(u64),
    /// A registration: only a send failure ends it here.
    Registering(u64),
}

struct Outbound {
    bytes: Vec<u8>,
    on_sent: OnSent,
}

pub(crate) struct GroupActor {
    conn: Box<dyn Connection>,
    ops: mpsc::UnboundedReceiver<Op>,
    core: GroupCore,
    codec: Codec,
    window: usize,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<GroupEvent>,
    ready: Option<Done<Result<(), TransportError>>>,
    outbound: VecDeque<Outbound>,
    in_flight: usize,
    blocked_by_flow_control: bool,
    endpoints: HashMap<String, Endpoint>,
    /// Registrations in flight by token; `None` for a re-claim after a merge.
    registering: HashMap<u64, Registering>,
    calls: HashMap<u64, Done<CallOutcome>>,
    next_id: u64,
    leaving: Option<Done<Result<(), GroupError>>>,
    pump_waker: Option<std::task::Waker>,
}

impl GroupActor {
    pub(crate) fn start_with(
        conn: Box<dyn Connection>,
        ops: mpsc::UnboundedReceiver<Op>,
        config: GroupConfig,
        metrics: Arc<GroupMetrics>,
        events: broadcast::Sender<GroupEvent>,
        ready: Done<Result<(), TransportError>>,
    ) -> Addr<GroupActor> {
        let limit = config.max_message_size.min(conn.max_message_size());
        metrics.set_limit(limit);
        let local = conn.local();
        GroupActor {
            conn,
            ops,
            core: GroupCore::new(local),
            codec: Codec::new(limit),
            window: config.send_window.max(1),
            metrics,
            events,
            ready: Some(ready),
            outbound: VecDeque::new(),
            in_flight: 0,
            blocked_by_flow_control: false,
            endpoints: HashMap::new(),
            registering: HashMap::new(),
            calls: HashMap::new(),
            next_id: 1,
            leaving: None,
            pump_waker: None,
        }
        .start()
    }

    fn local(&self) -> Member {
        self.conn.local()
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn wake_pump(&mut self) {
        if let Some(w) = &self.pump_waker {
            w.wake_by_ref();
        }
    }

    fn enqueue<T: serde::Serialize>(&mut self, kind: Kind, body: &T, on_sent: OnSent) {
        match self.codec.encode(kind, body) {
            Ok(bytes) => self.outbound.push_back(Outbound { bytes, on_sent }),
            Err(e) => self.finish_sent(on_sent, Err(e.to_string())),
        }
    }

    /// Multicasts queued messages while the window has room. Stops at the
    /// first `TRY_AGAIN`, leaving that message at the head.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.blocked_by_flow_control = false;
        while self.in_flight < self.window {
            let Some(next) = self.outbound.front() else {
                break;
            };
            match self.conn.mcast(&next.bytes) {
                Ok(()) => {
                    self.in_flight += 1;
                    self.metrics.sent();
                    if let Some(sent) = self.outbound.pop_front() {
                        self.finish_sent(sent.on_sent, Ok(()));
                    }
                }
                Err(TransportError::TryAgain) => {
                    self.metrics.try_again();
                    self.blocked_by_flow_control = true;
                    self.wake_pump();
                    break;
                }
                Err(e @ TransportError::MessageTooLarge { .. }) => {
                    if let Some(refused) = self.outbound.pop_front() {
                        self.finish_sent(refused.on_sent, Err(e.to_string()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn finish_sent(&mut self, on_sent: OnSent, result: Result<(), String>) {
        match on_sent {
            OnSent::Nothing => {
                if let Err(e) = result {
                    error!(group = %self.conn.group(), "could not send a group message: {e}");
                }
            }
            OnSent::Resolve(done) => {
                let _ = done.send(result.map_err(GroupError::Codec));
            }
            OnSent::Told(done) => {
                let _ = done.send(result.map(|()| None).map_err(CallError::Codec));
            }
            OnSent::Awaiting(id) => {
                if let Err(e) = result {
                    if let Some(done) = self.calls.remove(&id) {
                        let _ = done.send(Err(CallError::Codec(e)));
                    }
                }
            }
            OnSent::Registering(token) => {
                if let Err(e) = result {
                    if let Some((name, done)) = self.registering.remove(&token) {
                        self.endpoints.remove(&name);
                        if let Some(done) = done {
                            let _ = done.send(Err(GroupError::Codec(e)));
                        }
                    }
                }
            }
        }
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        match event {
            TransportEvent::Deliver { from, bytes } => {
                if from == self.local() {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                match self.decode(&bytes) {
                    Ok(inbound) => {
                        self.metrics.delivered();
                        let commands = self.core.handle_message(from, inbound);
                        self.execute(commands, ctx);
                    }
                    Err(e) => {
                        self.metrics.dropped(&e);
                        warn!(group = %self.conn.group(), %from, len = bytes.len(), "dropped a message: {e}");
                    }
                }
            }
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => {
                debug!(group = %self.conn.group(), ?joined, ?left, "confchg");
                let commands = self.core.handle_confchg(&members, &joined, &left);
                self.execute(commands, ctx);
            }
            TransportEvent::TotemConfChg { ring_id, nodes } => {
                debug!(?ring_id, ?nodes, "totem confchg");
            }
            TransportEvent::Quorum(q) => {
                debug!(quorate = q.quorate, ring = ?q.ring_id, "quorum");
            }
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Inbound, crate::wire::WireError> {
        let frame = self.codec.decode_frame(bytes)?;
        let c = &self.codec;
        Ok(match frame.kind {
            Kind::Registry => Inbound::Registry(c.decode_body::<RegistryOp>(frame.body)?),
            Kind::Request => Inbound::Request(c.decode_body::<Request>(frame.body)?),
            Kind::Reply => Inbound::Reply(c.decode_body::<Reply>(frame.body)?),
            Kind::Snapshot => Inbound::Snapshot(c.decode_body::<Snapshot>(frame.body)?),
            Kind::SyncRequest => Inbound::SyncRequest(c.decode_body::<SyncRequest>(frame.body)?),
            // Kinds of other protocols (replicated state, elections) never
            // belong in a registry group: count and drop them like any
            // unknown kind.
            other => return Err(crate::wire::WireError::UnknownKind(other as u8)),
        })
    }

    fn execute(&mut self, commands: Vec<Command>, ctx: &mut Context<Self>) {
        for command in commands {
            match command {
                Command::Mcast(outgoing) => {
                    // State transfer goes ahead of user traffic: the member
                    // that asked waits on it, and its position relative to
                    // this member's other messages does not matter.
                    let encoded = match &outgoing {
                        Outgoing::SyncRequest(r) => self.codec.encode(Kind::SyncRequest, r),
                        Outgoing::Snapshot(s) => self.codec.encode(Kind::Snapshot, s),
                    };
                    match encoded {
                        Ok(bytes) => self.outbound.push_front(Outbound {
                            bytes,
                            on_sent: OnSent::Nothing,
                        }),
                        Err(e) => error!("state transfer message not sent: {e}"),
                    }
                }
                Command::RegisterDone { token, result } => {
                    if let Some((name, done)) = self.registering.remove(&token) {
                        let outcome = match result {
                            Ok(()) => Ok(()),
                            Err(owner) => {
                                self.endpoints.remove(&name);
                                if done.is_none() {
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
                Command::Event(event) => {
                    match &event {
                        GroupEvent::NameDropped { name, host, .. } if *host == self.local() => {
                            self.endpoints.remove(name);
                        }
                        GroupEvent::Ready => {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        _ => {}
                    }
                    self.publish(event);
                }
            }
        }
        self.flush_or_close(ctx);
    }

    fn publish(&self, event: GroupEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn deliver_local(&mut self, from: Member, request: Request, ctx: &mut Context<Self>) {
        let Request {
            id,
            target,
            type_tag,
            want_reply,
            payload,
        } = request;
        let dispatched = match self.endpoints.get(&target) {
            Some(endpoint) => endpoint.dispatch(&self.codec, &type_tag, &payload),
            None => Err(RemoteFailure::ActorGone),
        };
        match dispatched {
            Ok(fut) => {
                if want_reply {
                    ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                        act.reply(id, from, outcome);
                        act.flush_or_close(ctx);
                    }));
                } else {
                    ctx.spawn(fut.into_actor(self).map(|_, _, _| ()));
                }
            }
            Err(failure) => {
                if matches!(failure, RemoteFailure::UnknownType(_)) {
                    self.metrics.unknown_type();
                }
                warn!(%from, %target, %type_tag, ?failure, "request not handled");
                if want_reply {
                    self.reply(id, from, Err(failure));
                }
            }
        }
    }

    fn reply(&mut self, id: u64, to: Member, outcome: Result<Vec<u8>, RemoteFailure>) {
        let reply = Reply { id, to, outcome };
        let reply = match self.codec.encode(Kind::Reply, &reply) {
            Ok(_) => reply,
            Err(e) => Reply {
                id,
                to,
                outcome: Err(RemoteFailure::Encode(e.to_string())),
            },
        };
        self.enqueue(Kind::Reply, &reply, OnSent::Nothing);
    }

    fn flush_or_close(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = self.flush() {
            self.close(e, ctx);
            return;
        }
        if self.leaving.is_some() && self.outbound.is_empty() {
            let result = self.conn.leave().map_err(GroupError::from);
            if let Some(done) = self.leaving.take() {
                let _ = done.send(result);
            }
            self.fail_everything();
            ctx.stop();
        }
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        error!(group = %self.conn.group(), "group transport closed: {error}");
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(error.clone()));
        }
        self.fail_everything();
        self.publish(GroupEvent::Closed { error });
        ctx.stop();
    }

    fn fail_everything(&mut self) {
        for id in self.core.fail_all_calls() {
            if let Some(done) = self.calls.remove(&id) {
                let _ = done.send(Err(CallError::Closed));
            }
        }
        for (_, done) in self.calls.drain() {
            let _ = done.send(Err(CallError::Closed));
        }
        for (_, (_, done)) in self.registering.drain() {
            if let Some(done) = done {
                let _ = done.send(Err(GroupError::Closed));
            }
        }
        for out in std::mem::take(&mut self.outbound) {
            match out.on_sent {
                OnSent::Resolve(done) => {
                    let _ = done.send(Err(GroupError::Closed));
                }
                OnSent::Told(done) => {
                    let _ = done.send(Err(CallError::Closed));
                }
                _ => {}
            }
        }
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(EventPump { retry: None });
    }
}

/// Drives the transport from inside the actor: reads events while there are
/// any, retries sends after `TRY_AGAIN`, and sleeps on the transport's waker
/// otherwise (no busy polling).
struct EventPump {
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ActorFuture<GroupActor> for EventPump {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut GroupActor,
        ctx: &mut Context<GroupActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        act.pump_waker = Some(task.waker().clone());
        for _ in 0..EVENT_BUDGET {
            match act.ops.poll_recv(task) {
                Poll::Ready(Some(op)) => {
                    act.handle_op(op, ctx);
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    // Every handle is gone: nobody can use the membership.
                    if act.leaving.is_none() {
                        let (done, _) = oneshot::channel();
                        act.handle_op(Op::Leave { done }, ctx);
                    }
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending => {}
            }
            match act.conn.poll_event(task) {
                Poll::Ready(Ok(event)) => {
                    act.handle_event(event, ctx);
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Err(e)) => {
                    act.close(e, ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    act.flush_or_close(ctx);
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                    if act.blocked_by_flow_control && !act.outbound.is_empty() {
                        let retry = self
                            .retry
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(TRY_AGAIN_BACKOFF)));
                        if retry.as_mut().poll(task).is_ready() {
                            self.retry = None;
                            task.waker().wake_by_ref();
                        }
                    } else {
                        self.retry = None;
                    }
                    return Poll::Pending;
                }
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

impl GroupActor {
    fn handle_op(&mut self, op: Op, ctx: &mut Context<Self>) {
        if self.leaving.is_some() {
            reject_closed(op);
            return;
        }
        match op {
            Op::Register {
                name,
                endpoint,
                done,
            } => {
                if self.endpoints.contains_key(&name) {
                    let _ = done.send(Err(GroupError::NameTaken {
                        name,
                        owner: self.local(),
                    }));
                    return;
                }
                let token = self.next_id();
                self.endpoints.insert(name.clone(), endpoint);
                self.registering.insert(token, (name.clone(), Some(done)));
                self.enqueue(
                    Kind::Registry,
                    &RegistryOp::Register { name, token },
                    OnSent::Registering(token),
                );
            }
            Op::Unregister { name, done } => {
                if self.endpoints.remove(&name).is_some() {
                    self.enqueue(
                        Kind::Registry,
                        &RegistryOp::Unregister { name },
                        OnSent::Resolve(done),
                    );
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Op::Lookup { name, done } => {
                let _ = done.send(self.core.lookup(&name));
            }
            Op::Names { done } => {
                let _ = done.send(
                    self.core
                        .names()
                        .iter()
                        .map(|(n, h)| (n.clone(), *h))
                        .collect(),
                );
            }
            Op::Members { done } => {
                let _ = done.send(self.core.view().to_vec());
            }
            Op::Call {
                target,
                type_tag,
                payload,
                want_reply,
                done,
            } => {
                let id = self.next_id();
                let request = Request {
                    id,
                    target,
                    type_tag: type_tag.to_owned(),
                    want_reply,
                    payload,
                };
                let on_sent = if want_reply {
                    self.calls.insert(id, done);
                    OnSent::Awaiting(id)
                } else {
                    OnSent::Told(done)
                };
                self.enqueue(Kind::Request, &request, on_sent);
            }
            Op::Leave { done } => {
                self.leaving = Some(done);
            }
        }
        self.flush_or_close(ctx);
    }
}

fn reject_closed(op: Op) {
    match op {
        Op::Register { done, .. } | Op::Unregister { done, .. } | Op::Leave { done } => {
            let _ = done.send(Err(GroupError::Closed));
        }
        Op::Call { done, .. } => {
            let _ = done.send(Err(CallError::Closed));
        }
        Op::Lookup { .. } | Op::Names { .. } | Op::Members { .. } => {}
    }
}
