//! The group runtime: one actix actor per joined group, the only code that
//! touches the transport. It decodes events, feeds them to [`GroupCore`] and
//! executes the commands that come back.
//!
//! ```text
//!  Op (register, call, ...) ──► outbound queue ──► pack ──► mcast (window, TRY_AGAIN)
//!   (calls pass the SendGate)                       (batch)      │
//!  transport ─ poll_event ─► decode ─► unbatch ─► GroupCore ─► commands ─► local
//!                                                        actors, replies, events
//! ```
//!
//! The send window bounds multicasts made but not yet delivered back to
//! this member; a multicast that meets `TRY_AGAIN` stays at the head of the
//! queue and is retried before anything behind it, so nothing is lost or
//! reordered. The runtime polls the transport between sends, so the daemon
//! never holds more than a window of this member's deliveries.
//!
//! Batching: when a window slot opens, the messages at the head of the
//! queue that fit within [`BatchConfig`]'s caps go out as one
//! [`Kind::Batch`] multicast. A batch is unpacked on delivery into the same
//! messages, handed to the core one by one at the batch's place in the
//! order, so the core cannot tell a batched message from a lone one. The
//! linger only delays *when* the runtime multicasts (local I/O timing); it
//! decides nothing in the group.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, warn};

use super::children::{child_name, ChildContext, ExitReporter, Factories, LocalChild};
use super::chunks::{Piece, Reassembly};
use super::core::{Command, GroupCore, Limits, Outgoing, MAX_TICK_STEP_MS};
use super::gate::SendGate;
use super::inbound::{self, Handled, Received};
use super::messages::{RegistryOp, RemoteFailure, Reply, RequestRef, SupervisionMsg};
use super::metrics::GroupMetrics;
use super::send_queue::{Finished, QueueLimits, SendQueue};
use super::{
    BatchConfig, CallError, CallOutcome, GroupConfig, GroupError, GroupEvent, NameDropReason,
};
use crate::pump::{EventPump, Pumped};

mod local_supervision;
use crate::record::{Recorded, Recorder};
use crate::remote::Endpoint;
use crate::supervisor::{
    ChildPath, ChildStatus, Command as SupCommand, Fingerprint, Output, Shutdown, SlotKey,
    SlotStatus, SupervisionEvent, TreeSpec,
};
use crate::transport::{Connection, Member, MemberChange, TransportError, TransportEvent};
use crate::wire::{self, Codec, Kind, WireError, HEADER_LEN};
use local_supervision::LocalSupervision;

/// How often local children are checked for having stopped. Only the
/// detection delay depends on it, never a decision.
const CHILD_WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// How often the lowest member puts its clock into the stream (the
/// supervision engine's only notion of time).
const TICK_INTERVAL: Duration = Duration::from_millis(500);

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
    /// A request envelope built by the caller, admitted by the gate (its
    /// bytes are released there once multicast).
    Call {
        id: u64,
        bytes: Vec<u8>,
        want_reply: bool,
        /// `None` for a fire-and-forget `try_tell`: nobody awaits it.
        done: Option<Done<CallOutcome>>,
    },
    /// Multicast everything queued so far without waiting for the linger.
    Flush {
        done: Done<()>,
    },
    Leave {
        done: Done<Result<(), GroupError>>,
    },
    StartTree {
        name: String,
        spec: TreeSpec,
        factories: Factories,
        done: Done<Result<(), GroupError>>,
    },
    Children {
        done: Done<Vec<ChildStatus>>,
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

pub(crate) struct GroupActor {
    conn: Box<dyn Connection>,
    ops: mpsc::UnboundedReceiver<Op>,
    core: GroupCore,
    codec: Codec,
    reassembly: Reassembly,
    queue: SendQueue<OnSent>,
    /// Reused for what each flush finished.
    finished: Vec<Finished<OnSent>>,
    gate: Arc<SendGate>,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<GroupEvent>,
    ready: Option<Done<Result<(), TransportError>>>,
    /// Looked up once per request hosted here, by a name read off the wire.
    endpoints: HashMap<String, Endpoint, BuildHasherDefault<crate::stable_hash::StableHasher>>,
    /// Registrations in flight by token; `None` for a re-claim after a merge.
    registering: HashMap<u64, Registering>,
    calls: HashMap<u64, Done<CallOutcome>>,
    next_id: u64,
    leaving: Option<Done<Result<(), GroupError>>>,
    pump_waker: Option<std::task::Waker>,
    recorder: Option<Recorder>,
    sup: LocalSupervision,
    /// Flush requests, resolved once the message with that seq is sent.
    flush_marks: VecDeque<(u64, Done<()>)>,
}

/// Where the runtime publishes what the group handles read.
pub(crate) struct Outlets {
    pub(crate) gate: Arc<SendGate>,
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) events: broadcast::Sender<GroupEvent>,
    pub(crate) supervision_events: broadcast::Sender<SupervisionEvent>,
}

impl GroupActor {
    pub(crate) fn start_with(
        conn: Box<dyn Connection>,
        ops: mpsc::UnboundedReceiver<Op>,
        config: GroupConfig,
        outlets: Outlets,
        ready: Done<Result<(), TransportError>>,
        recorder: Option<Recorder>,
    ) -> Addr<GroupActor> {
        let Outlets {
            gate,
            metrics,
            events,
            supervision_events,
        } = outlets;
        let limit = config.max_message_size;
        metrics.set_limit(limit);
        let frame_limit = config.chunk_size.min(conn.max_message_size());
        let local = conn.local();
        let batch = BatchConfig {
            // A batch is one multicast: it must fit the transport's atomic
            // limit, or libcpg would fragment it (see DESIGN §3).
            max_bytes: config.batch.max_bytes.min(frame_limit),
            max_messages: config.batch.max_messages.max(1),
            linger: config.batch.linger,
        };
        GroupActor {
            conn,
            ops,
            core: GroupCore::with_limits(
                local,
                Limits {
                    max_buffered: config.max_sync_buffer.max(1),
                    max_awaiting: config.max_awaiting_replies.max(1),
                },
            ),
            codec: Codec::new(limit),
            reassembly: Reassembly::default(),
            queue: SendQueue::new(QueueLimits {
                window: config.send_window,
                window_bytes: config.send_window_bytes,
                frame_limit,
                batch,
            }),
            finished: Vec::new(),
            gate,
            metrics,
            events,
            ready: Some(ready),
            endpoints: HashMap::default(),
            registering: HashMap::new(),
            calls: HashMap::new(),
            next_id: 1,
            leaving: None,
            pump_waker: None,
            recorder,
            sup: LocalSupervision {
                events: Some(supervision_events),
                ..LocalSupervision::default()
            },
            flush_marks: VecDeque::new(),
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
            Ok(bytes) => self.push_back(bytes, on_sent, false),
            Err(e) => self.finish_sent(on_sent, Err(e.to_string())),
        }
    }

    fn push_back(&mut self, bytes: Vec<u8>, on_sent: OnSent, gated: bool) {
        if let Err(refused) = self.queue.push(bytes, on_sent, gated) {
            self.finish(refused);
        }
    }

    /// Multicasts what the queue lets go (see `super::send_queue`) and tells
    /// the senders of what left it.
    fn flush(&mut self) -> Result<(), TransportError> {
        let mut finished = std::mem::take(&mut self.finished);
        let conn = &mut self.conn;
        let result = self.queue.flush(
            Instant::now(),
            &self.codec,
            &mut |bytes| conn.mcast(bytes),
            &mut finished,
        );
        let (mut freed, mut freed_bytes) = (0, 0);
        for done in finished.drain(..) {
            if let Some(len) = done.gated {
                freed += 1;
                freed_bytes += len;
            }
            self.resolve_flush_marks(done.seq);
            self.finish_sent(done.token, done.result);
        }
        self.finished = finished;
        if freed > 0 {
            self.gate.release_many(freed, freed_bytes);
        }
        let flushed = result?;
        self.metrics.flushed(&flushed);
        if flushed.batch_refused {
            warn!(group = %self.conn.group(), "a batch was refused as too large; sent one by one");
        }
        if self.queue.blocked() {
            self.wake_pump();
        }
        if self.queue.is_empty() {
            for (_, done) in self.flush_marks.drain(..) {
                let _ = done.send(());
            }
        }
        Ok(())
    }

    /// Flush requests for messages up to `seq` are done.
    fn resolve_flush_marks(&mut self, seq: u64) {
        while let Some((mark, _)) = self.flush_marks.front() {
            if *mark > seq {
                break;
            }
            if let Some((_, done)) = self.flush_marks.pop_front() {
                let _ = done.send(());
            }
        }
    }

    /// A message left the queue: release its place in the gate and tell
    /// its sender.
    fn finish(&mut self, done: Finished<OnSent>) {
        if let Some(len) = done.gated {
            self.gate.release(len);
        }
        self.finish_sent(done.token, done.result);
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
                if let Err(Err(e)) = done.send(result.map(|()| None).map_err(CallError::Codec)) {
                    // A `try_tell` has nobody to tell.
                    error!(group = %self.conn.group(), "could not send a message: {e}");
                }
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

    fn record(&mut self, event: &TransportEvent) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        let Some(entry) = Recorded::from_event(event) else {
            return;
        };
        let mut result = recorder.append(&entry);
        if matches!(entry, Recorded::ConfChg { .. }) {
            // Membership changes are what an incident review needs first.
            result = result.and_then(|()| recorder.flush());
        }
        if let Err(e) = result {
            error!(group = %self.conn.group(), "recording stopped: {e}");
            self.recorder = None;
        }
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        self.record(&event);
        match event {
            TransportEvent::Deliver { from, bytes } => {
                if from == self.local() {
                    self.queue.own_delivered(bytes.len());
                }
                match inbound::receive(&self.codec, &mut self.reassembly, from, &bytes) {
                    Ok(Received::Whole(message)) => self.handle_message(from, message, false, ctx),
                    Ok(Received::Piece { head, outcome }) => {
                        self.handle_piece(from, head, outcome, ctx)
                    }
                    Err(e) => {
                        self.drop_message(from, bytes.len(), &e);
                        if is_piece(&self.codec, &bytes) {
                            self.refill(ctx);
                        }
                    }
                }
            }
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => {
                debug!(group = %self.conn.group(), ?joined, ?left, "confchg");
                self.interrupt_chunks(&joined, &left);
                let commands = self.core.handle_confchg(&members, &joined, &left);
                self.execute(commands, ctx);
            }
            TransportEvent::TotemConfChg { ring_id, nodes } => {
                debug!(?ring_id, ?nodes, "totem confchg");
            }
            TransportEvent::Quorum(q) => {
                debug!(quorate = q.quorate, ring = ?q.ring_id, "quorum");
                self.sup.quorate = Some((q.quorate, q.nodes.clone()));
                self.announce_quorum();
                self.flush_or_close(ctx);
            }
        }
    }

    /// One piece of a message too large for one multicast, as the
    /// reassembly took it: a message it completes is handled here, at the
    /// place of its last piece.
    fn handle_piece(
        &mut self,
        from: Member,
        head: wire::ChunkHead,
        outcome: Piece,
        ctx: &mut Context<Self>,
    ) {
        if from == self.local() {
            self.own_piece_delivered(&head);
        }
        match outcome {
            Piece::Pending => {}
            Piece::Stray => self.metrics.chunk_stray(),
            Piece::Whole(message) => {
                self.metrics.chunked_delivered();
                self.handle_message(from, &message, true, ctx);
            }
        }
        self.refill(ctx);
    }

    /// One of this member's pieces came back: the message at the head of
    /// the queue leaves it once the last one is back.
    fn own_piece_delivered(&mut self, head: &wire::ChunkHead) {
        if let Some(sent) = self.queue.own_piece_delivered(head) {
            let seq = sent.seq;
            self.finish(sent);
            self.resolve_flush_marks(seq);
        }
    }

    /// A confchg that brings members in cuts every message in pieces, and
    /// this member's own one, if it was cut, goes again from its first
    /// piece; one that only takes members out drops their messages alone
    /// (see `super::chunks`).
    fn interrupt_chunks(&mut self, joined: &[MemberChange], left: &[MemberChange]) {
        let left: Vec<Member> = left.iter().map(|c| c.member).collect();
        let cut = self.reassembly.confchg(!joined.is_empty(), &left);
        let restarted = self.queue.confchg(!joined.is_empty());
        if cut > 0 || restarted {
            debug!(group = %self.conn.group(), cut, restarted, "confchg cut messages in pieces");
        }
        if restarted {
            self.metrics.chunked_resent();
        }
    }

    /// A whole message delivered from `from` (alone, or put back together
    /// from pieces): a single envelope, or a batch unpacked in order.
    fn handle_message(
        &mut self,
        from: Member,
        message: &[u8],
        reassembled: bool,
        ctx: &mut Context<Self>,
    ) {
        let unpacked = match inbound::unpack(&self.codec, message, reassembled) {
            Ok(unpacked) => unpacked,
            Err(e) => return self.drop_message(from, message.len(), &e),
        };
        if unpacked.batch {
            self.metrics.batch_delivered();
        }
        for envelope in unpacked.envelopes {
            match envelope {
                Ok(frame) => self.handle_envelope(from, frame, ctx),
                Err((len, e)) => self.drop_message(from, len, &e),
            }
            if ctx.state().stopping() {
                return;
            }
        }
    }

    fn handle_envelope(&mut self, from: Member, frame: wire::Frame<'_>, ctx: &mut Context<Self>) {
        let len = frame.body.len() + HEADER_LEN;
        let handled = match inbound::handle_envelope(&mut self.core, &self.codec, from, frame) {
            Ok(handled) => handled,
            Err(e) => return self.drop_message(from, len, &e),
        };
        self.metrics.delivered();
        match handled {
            Handled::Skipped => {
                // One of ours freed a window slot.
                self.metrics.request_delivered();
                if from == self.local() {
                    self.refill(ctx);
                }
            }
            Handled::Request {
                request,
                commands,
                deliver,
            } => {
                self.metrics.request_delivered();
                if deliver {
                    self.deliver_local(from, request, ctx);
                }
                self.execute(commands, ctx);
            }
            Handled::Core(commands) => self.execute(commands, ctx),
        }
    }

    fn drop_message(&self, from: Member, len: usize, e: &WireError) {
        self.metrics.dropped(e);
        warn!(group = %self.conn.group(), %from, len, "dropped a message: {e}");
    }

    fn execute(&mut self, commands: Vec<Command>, ctx: &mut Context<Self>) {
        for command in commands {
            match command {
                Command::Mcast(outgoing) => {
                    // State transfer goes ahead of user traffic: the member
                    // that asked waits on it, and its position relative to
                    // this member's other messages does not matter.
                    let encoded = match &outgoing {
                        Outgoing::Announce(a) => self.codec.encode(Kind::Announce, a),
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
                Command::Supervise(output) => self.supervise(output),
                Command::Reconcile => self.reconcile(),
                Command::Event(event) => {
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
        self.refill(ctx);
    }

    /// Multicasts again once half the window is free (in multicasts and in
    /// bytes), or leaves it to the pump, which flushes whenever it runs out
    /// of events and after taking in the ops waiting: sending a slot's worth
    /// at a time would make every freed slot a multicast of its own, where
    /// waiting a little packs the queue into a batch.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.queue.half_free() {
            self.flush_or_close(ctx);
        }
    }

    fn publish(&self, event: GroupEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn deliver_local(&mut self, from: Member, request: impl AsRequest, ctx: &mut Context<Self>) {
        let RequestRef {
            id,
            target,
            type_tag,
            want_reply,
            payload,
            ..
        } = request.as_request();
        let dispatched = match self.endpoints.get(target) {
            Some(endpoint) => endpoint.dispatch(&self.codec, type_tag, payload, want_reply),
            None => Err(RemoteFailure::ActorGone),
        };
        match dispatched {
            Ok(Some(fut)) => {
                ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                    act.reply(id, from, outcome);
                    act.flush_or_close(ctx);
                }));
            }
            Ok(None) => {}
            Err(failure) => {
                if matches!(failure, RemoteFailure::UnknownType(_)) {
                    self.metrics.unknown_type();
                }
                let type_tag = String::from_utf8_lossy(type_tag);
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
        if self.leaving.is_some() && self.queue.is_empty() {
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
        // Children run only while this member is in the group; the others
        // restart them elsewhere when they see it leave.
        for (_, child) in std::mem::take(&mut self.sup.children) {
            child.terminate(Shutdown::BrutalKill);
        }
        for (_, (_, done)) in self.sup.starting.drain() {
            let _ = done.send(Err(GroupError::Closed));
        }
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
        self.gate.close();
        self.flush_marks.clear();
        let unsent: Vec<Finished<OnSent>> = self.queue.drain().collect();
        for out in unsent {
            if let Some(len) = out.gated {
                self.gate.release(len);
            }
            match out.token {
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
        ctx.spawn(EventPump::new());
        ctx.run_interval(CHILD_WATCH_INTERVAL, |act, ctx| {
            act.watch_children();
            act.flush_or_close(ctx);
        });
        ctx.run_interval(TICK_INTERVAL, |act, ctx| {
            act.tick();
            act.flush_or_close(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(recorder) = &mut self.recorder {
            if let Err(e) = recorder.flush() {
                error!("recording not flushed: {e}");
            }
        }
    }
}

impl Pumped for GroupActor {
    type Op = Op;

    fn set_pump_waker(&mut self, waker: std::task::Waker) {
        self.pump_waker = Some(waker);
    }

    fn poll_op(&mut self, task: &mut TaskContext<'_>) -> Poll<Option<Op>> {
        self.ops.poll_recv(task)
    }

    fn handle_op(&mut self, op: Op, _ctx: &mut Context<Self>) {
        GroupActor::handle_op(self, op);
    }

    /// What callers queued together leaves together (one batch when
    /// batching).
    fn ops_taken(&mut self, ctx: &mut Context<Self>) {
        self.flush_or_close(ctx);
    }

    fn handles_gone(&mut self, _ctx: &mut Context<Self>) {
        // Every handle is gone: nobody can use the membership.
        if self.leaving.is_none() {
            let (done, _) = oneshot::channel();
            GroupActor::handle_op(self, Op::Leave { done });
        }
    }

    fn poll_event(
        &mut self,
        task: &mut TaskContext<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        self.conn.poll_event(task)
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        GroupActor::handle_event(self, event, ctx);
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        GroupActor::close(self, error, ctx);
    }

    fn idle(&mut self, ctx: &mut Context<Self>) {
        self.flush_or_close(ctx);
    }

    fn send_blocked(&self) -> bool {
        self.queue.blocked()
    }

    fn linger_deadline(&self) -> Option<tokio::time::Instant> {
        self.queue
            .linger_deadline()
            .map(tokio::time::Instant::from_std)
    }
}

impl GroupActor {
    fn handle_op(&mut self, op: Op) {
        if self.leaving.is_some() {
            if let Op::Call { bytes, .. } = &op {
                self.gate.release(bytes.len());
            }
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
                id,
                bytes,
                want_reply,
                done,
            } => {
                let on_sent = match (want_reply, done) {
                    (true, Some(done)) => {
                        self.calls.insert(id, done);
                        OnSent::Awaiting(id)
                    }
                    (false, Some(done)) => OnSent::Told(done),
                    (_, None) => OnSent::Nothing,
                };
                self.push_back(bytes, on_sent, true);
            }
            Op::Flush { done } => match self.queue.flush_all() {
                None => {
                    let _ = done.send(());
                }
                Some(upto) => self.flush_marks.push_back((upto, done)),
            },
            Op::Leave { done } => {
                self.leaving = Some(done);
            }
            Op::StartTree {
                name,
                spec,
                factories,
                done,
            } => {
                let fingerprint = spec.fingerprint();
                self.sup.trees.insert(name.clone(), factories);
                if let Some((_, earlier)) =
                    self.sup.starting.insert(name.clone(), (fingerprint, done))
                {
                    let _ = earlier.send(Err(GroupError::Closed));
                }
                self.enqueue(
                    Kind::Supervision,
                    &SupervisionMsg::TreeStarted {
                        name,
                        fingerprint,
                        spec,
                    },
                    OnSent::Nothing,
                );
                // Children the engine already placed here may now be built.
                self.reconcile();
            }
            Op::Children { done } => {
                let _ = done.send(self.core.engine().children());
            }
        }
    }
}

/// A request to hand to a local actor: read in place, or owned by the core
/// (replayed after a state transfer).
trait AsRequest {
    fn as_request(&self) -> RequestRef<'_>;
}

impl AsRequest for RequestRef<'_> {
    fn as_request(&self) -> RequestRef<'_> {
        *self
    }
}

impl AsRequest for super::messages::Request {
    fn as_request(&self) -> RequestRef<'_> {
        RequestRef::from(self)
    }
}

fn reject_closed(op: Op) {
    match op {
        Op::Register { done, .. } | Op::Unregister { done, .. } | Op::Leave { done } => {
            let _ = done.send(Err(GroupError::Closed));
        }
        Op::Call { done, .. } => {
            if let Some(done) = done {
                let _ = done.send(Err(CallError::Closed));
            }
        }
        Op::StartTree { done, .. } => {
            let _ = done.send(Err(GroupError::Closed));
        }
        Op::Lookup { .. }
        | Op::Names { .. }
        | Op::Members { .. }
        | Op::Children { .. }
        | Op::Flush { .. } => {}
    }
}

/// Whether `bytes` is framed as a piece of a larger message.
fn is_piece(codec: &Codec, bytes: &[u8]) -> bool {
    codec
        .decode_frame(bytes)
        .is_ok_and(|frame| frame.kind == Kind::Chunk)
}
