//! The group runtime: one actix actor per joined group, the only code that
//! touches the transport. It is glue between pure parts:
//!
//! ```text
//!  Op (register, call, ...) ──► ops ──► SendQueue ──► mcast (window, batch, pieces)
//!   (calls pass the SendGate)                              │
//!  transport ─ poll_event ─► receive ─► inbound pipeline ─► GroupCore
//!                                                              │
//!               local actors, replies, events ◄── commands ◄───┘
//!               children (local_supervision)
//! ```
//!
//! - `ops`: what a [`super::Group`] handle asks, answered locally or queued;
//! - [`super::send_queue`]: the window of multicasts in flight, batching
//!   with linger, messages in pieces, `TRY_AGAIN` (no I/O: this actor hands
//!   it the transport's multicast);
//! - `receive`: recording, the inbound pipeline (frames, pieces, batches,
//!   see [`super::inbound`]) and this member's own multicasts coming back;
//! - `commands`: the core's commands carried out;
//! - `local_supervision`: the children this member hosts.
//!
//! The event pump ([`crate::pump`]) drives it: ops first, then transport
//! events, flushing the queue when it runs out of both. The linger only
//! delays *when* the runtime multicasts (local I/O timing); it decides
//! nothing in the group.
//!
//! # A view change's turn
//!
//! A failover is as fast as this member's turn on the confchg up to the
//! restarted child's start, so that turn is ordered for it:
//!
//! 1. **Children first.** Once the core has decided, what its supervision
//!    decisions ask of this member (children started and stopped, in the
//!    engine's order, and a reconcile a merge round left due) is carried
//!    out before anything else: then the view and the other events are
//!    published, in the core's order, and the decisions logged, counted
//!    and published to the supervision subscribers.
//! 2. So a restart decided at a confchg starts its child before the
//!    view's subscribers hear of the change (the child's actor is spawned
//!    on this thread ahead of the subscribers' wake-ups, so its `started`
//!    runs first too). Only this member's execution order moves: every
//!    member decides the same at the same point of the stream, and each
//!    subscriber sees the same sequence of events as before.
//! 3. **No sends in that turn.** What it queued (the restarted children's
//!    names, quorum facts, announcements) is multicast at the pump's next
//!    turn, after the children and subscribers ran: a multicast is a
//!    round trip to a daemon busy with the same view change. Only when the
//!    messages leave changes, never their order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, error, info, warn};

use super::buffers::BufferPool;
use super::children::{child_name, ChildContext, ExitReporter, Factories, LocalChild};
use super::chunks::Reassembly;
use super::core::{GroupCore, Limits, MAX_TICK_STEP_MS};
use super::gate::SendGate;
use super::messages::{RegistryOp, SupervisionMsg};
use super::metrics::GroupMetrics;
use super::send_queue::{Finished, QueueLimits, SendQueue};
use super::{BatchConfig, CallError, CallOutcome, GroupConfig, GroupError, GroupEvent, Role};
use crate::pump::{EventPump, Pumped};
use crate::spans::Protocol;
use crate::stages::{self, Stage};

mod commands;
mod local_supervision;
mod ops;
mod receive;
use crate::record::Recorder;
use crate::remote::Endpoint;
use crate::supervisor::{
    ChildPath, Command as SupCommand, Fingerprint, Output, Shutdown, SlotKey, SlotStatus,
    SupervisionEvent,
};
use crate::telemetry::{self, GroupGauges, GroupTelemetry};
use crate::transport::{Connection, Member, TransportError, TransportEvent};
use crate::wire::{Codec, Kind, WireError, COMPRESSION_VERSION};
use local_supervision::LocalSupervision;
pub(crate) use ops::Op;

/// How often local children are checked for having stopped. Only the
/// detection delay depends on it, never a decision.
const CHILD_WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// How often the lowest member puts its clock into the stream (the
/// supervision engine's only notion of time).
const TICK_INTERVAL: Duration = Duration::from_millis(500);

type Done<T> = oneshot::Sender<T>;

type Registering = (String, Option<Done<Result<(), GroupError>>>);

/// Why a message of this member was never multicast.
#[derive(Debug, thiserror::Error)]
enum Unsent {
    /// It could not be encoded.
    #[error("codec: {0}")]
    Codec(WireError),
    /// The transport refused it (too large).
    #[error("transport: {0}")]
    Transport(TransportError),
}

impl Unsent {
    fn group_error(self) -> GroupError {
        match self {
            Unsent::Codec(e) => GroupError::Codec(e),
            Unsent::Transport(e) => GroupError::Transport(e),
        }
    }

    fn call_error(self) -> CallError {
        match self {
            Unsent::Codec(e) => CallError::Codec(e),
            Unsent::Transport(e) => CallError::Transport(e),
        }
    }
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
    ops: super::op_queue::OpReceiver<Op>,
    core: GroupCore,
    codec: Codec,
    reassembly: Reassembly,
    queue: SendQueue<OnSent>,
    /// Reused for what each flush finished.
    finished: Vec<Finished<OnSent>>,
    gate: Arc<SendGate>,
    buffers: Arc<BufferPool>,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<GroupEvent>,
    ready: Option<Done<Result<(), GroupError>>>,
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
    /// This runtime's span (group and member), entered on every turn.
    span: tracing::Span,
    flush_marks: VecDeque<(u64, Done<()>)>,
    telemetry: GroupTelemetry,
}

/// Where the runtime publishes what the group handles read.
pub(crate) struct Outlets {
    pub(crate) gate: Arc<SendGate>,
    pub(crate) buffers: Arc<BufferPool>,
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) events: broadcast::Sender<GroupEvent>,
    pub(crate) supervision_events: broadcast::Sender<SupervisionEvent>,
}

impl GroupActor {
    pub(crate) fn start_with(
        conn: Box<dyn Connection>,
        ops: super::op_queue::OpReceiver<Op>,
        config: GroupConfig,
        outlets: Outlets,
        ready: Done<Result<(), GroupError>>,
        recorder: Option<Recorder>,
    ) -> Addr<GroupActor> {
        let Outlets {
            gate,
            buffers,
            metrics,
            events,
            supervision_events,
        } = outlets;
        let limit = config.max_message_size;
        metrics.set_limit(limit);
        metrics.set_version(config.protocol_versions.max);
        let frame_limit = config.chunk_size.min(conn.max_message_size());
        let local = conn.local();
        let group = conn.group().clone();
        let telemetry = GroupTelemetry::new(conn.group(), local);
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
            )
            .with_role(config.role)
            .with_versions(config.protocol_versions),
            codec: Codec::new(limit).reading(config.protocol_versions),
            reassembly: Reassembly::default(),
            queue: SendQueue::new(QueueLimits {
                window: config.send_window,
                window_bytes: config.send_window_bytes,
                frame_limit,
                batch,
                compress_above: config.compress_above,
            }),
            finished: Vec::new(),
            gate,
            buffers,
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
            span: crate::spans::runtime(Protocol::Registry, &group, local),
            telemetry,
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
            Err(e) => self.finish_sent(on_sent, Err(Unsent::Codec(e))),
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
        let _flush = stages::time(Stage::SendQueue);
        let mut finished = std::mem::take(&mut self.finished);
        let conn = &mut self.conn;
        let result = self.queue.flush(
            Instant::now(),
            &self.codec,
            &mut |bytes| {
                let _multicast = stages::time(Stage::Multicast);
                conn.mcast(bytes)
            },
            &mut finished,
        );
        let (mut freed, mut freed_bytes) = (0, 0);
        for done in finished.drain(..) {
            if let Some(len) = done.gated {
                freed += 1;
                freed_bytes += len;
            }
            self.resolve_flush_marks(done.seq);
            self.finish_sent(done.token, done.result.map_err(Unsent::Transport));
        }
        self.finished = finished;
        self.buffers.give_back(self.queue.spent());
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
        self.finish_sent(done.token, done.result.map_err(Unsent::Transport));
    }

    fn finish_sent(&mut self, on_sent: OnSent, result: Result<(), Unsent>) {
        match on_sent {
            OnSent::Nothing => {
                if let Err(e) = result {
                    error!(group = %self.conn.group(), "could not send a group message: {e}");
                }
            }
            OnSent::Resolve(done) => {
                let _ = done.send(result.map_err(Unsent::group_error));
            }
            OnSent::Told(done) => {
                if let Err(Err(e)) = done.send(result.map(|()| None).map_err(Unsent::call_error)) {
                    // A `try_tell` has nobody to tell.
                    error!(group = %self.conn.group(), "could not send a message: {e}");
                }
            }
            OnSent::Awaiting(id) => {
                if let Err(e) = result {
                    match self.calls.remove(&id) {
                        Some(done) => {
                            let _ = done.send(Err(e.call_error()));
                        }
                        None => self.core.call_unsent(id),
                    }
                }
            }
            OnSent::Registering(token) => {
                if let Err(e) = result {
                    if let Some((name, done)) = self.registering.remove(&token) {
                        self.endpoints.remove(&name);
                        if let Some(done) = done {
                            let _ = done.send(Err(e.group_error()));
                        }
                    }
                }
            }
        }
    }

    /// Copies the counters and gauges into the metrics recorder (see
    /// [`crate::telemetry`]).
    fn publish_metrics(&mut self) {
        let (queued, queued_bytes) = self.queue.depth();
        let engine = self.core.engine();
        let children_pending = engine
            .children()
            .iter()
            .filter(|c| c.status == SlotStatus::Pending)
            .count();
        let gauges = GroupGauges {
            members: self.core.view().len(),
            queued,
            queued_bytes,
            in_flight: self.queue.in_flight(),
            children_running: self.sup.children.len(),
            children_pending,
        };
        self.telemetry.publish(&self.metrics.snapshot(), gauges);
    }

    /// Publishes the call gauges of the metrics.
    fn count_calls(&self) {
        self.metrics
            .set_calls(self.calls.len(), self.core.awaiting_replies());
    }

    fn flush_or_close(&mut self, ctx: &mut Context<Self>) {
        let flushed = self.flush();
        // A send that failed ended its call.
        self.count_calls();
        if let Err(e) = flushed {
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

    /// This process cannot speak the group's version: it leaves, and
    /// everything waiting on it fails.
    fn refused(&mut self, refusal: crate::roster::Refusal, ctx: &mut Context<Self>) {
        error!(group = %self.conn.group(), versions = %refusal.versions, group_version = refusal.group_version, "the group refused this member: it speaks a protocol version this build does not");
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(GroupError::Incompatible {
                ours: refusal.versions,
                group_version: refusal.group_version,
            }));
        }
        if let Err(e) = self.conn.leave() {
            warn!(group = %self.conn.group(), "leaving after the refusal: {e}");
        }
        self.fail_everything();
        ctx.stop();
    }

    /// Writes at the version the group speaks once this member knows it
    /// (rule 8 of the core): it moves at a point of the stream.
    pub(super) fn follow_version(&mut self) {
        if let Some(v) = self.core.group_version() {
            if v != self.codec.version() {
                self.codec = self.codec.at_version(v);
                self.metrics.set_version(v);
            }
            // Rule 6 of the send queue: compressed frames only once every
            // member reads them.
            self.queue.set_compression(v >= COMPRESSION_VERSION);
        }
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        crate::spans::transport_closed(self.conn.group(), &error);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(GroupError::Transport(error.clone())));
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
        self.count_calls();
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
            let span = act.span.clone();
            let _entered = span.enter();
            act.watch_children();
            act.flush_or_close(ctx);
        });
        ctx.run_interval(TICK_INTERVAL, |act, ctx| {
            let span = act.span.clone();
            let _entered = span.enter();
            act.tick();
            act.flush_or_close(ctx);
        });
        if let Some(every) = telemetry::PUBLISH_EVERY {
            // Only a copy of the counters: nothing is decided from it.
            ctx.run_interval(every, |act, _| act.publish_metrics());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if telemetry::PUBLISH_EVERY.is_some() {
            // The last counts, then a stopped member's gauges.
            self.publish_metrics();
            self.telemetry.closed();
        }
        crate::record::finish(&mut self.recorder, self.conn.group());
    }
}

impl Pumped for GroupActor {
    type Op = Op;

    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn set_pump_waker(&mut self, waker: std::task::Waker) {
        self.pump_waker = Some(waker);
    }

    fn poll_op(&mut self, task: &mut TaskContext<'_>) -> Poll<Option<Op>> {
        self.ops.poll_recv(task)
    }

    fn handle_op(&mut self, op: Op, _ctx: &mut Context<Self>) {
        let _take = stages::time(Stage::TakeOp);
        self.take_op(op);
        self.count_calls();
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
            self.take_op(Op::Leave { done });
        }
    }

    fn poll_event(
        &mut self,
        task: &mut TaskContext<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        let _poll = stages::time(Stage::PollEvent);
        self.conn.poll_event(task)
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        let _event = stages::time(Stage::Event);
        GroupActor::handle_event(self, event, ctx);
        self.count_calls();
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
