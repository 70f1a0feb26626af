//! The election runtime: one actix actor per election group, the only code
//! that touches its connection. It decodes events, feeds them to
//! [`ElectionCore`] and executes the actions that come back.
//!
//! ```text
//!  Op (stand, withdraw, leave) ──► Outbox ──► mcast (window, TRY_AGAIN)
//!  transport ─ poll_event ─► decode ─► ElectionCore ─► actions ─► events,
//!                                                      status, completions
//! ```
//!
//! Envelopes are read at any version from the lowest this build knows (the
//! messages every version shares are read whatever version they name, see
//! `messages`), and written at the version the group speaks once the core
//! knows it ([`ElectionCore::write_version`]), before that at the highest
//! this member speaks (only shared messages go out then).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::core::{Action, CandidacyOp, ElectionCore};
use super::messages::{decode_envelope, ElectionMessage};
use super::{ElectionConfig, ElectionError, ElectionEvent, ElectionInspection, ElectionStatus};
use crate::outbox::Outbox;
use crate::pump::{EventPump, Pumped};
use crate::record::{Recorded, Recorder};
use crate::telemetry::{self, ElectionGauges, ElectionTelemetry};
use crate::transport::{Connection, TransportError, TransportEvent};
use crate::wire::{Codec, Kind, Versions};

type Done<T> = oneshot::Sender<T>;
type Completion = Done<Result<(), ElectionError>>;

/// A request from an [`super::Election`] handle.
pub(crate) enum Op {
    Candidacy {
        name: String,
        stand: bool,
        done: Done<Result<(), ElectionError>>,
    },
    Leave {
        done: Done<Result<(), ElectionError>>,
    },
    /// Answered from the core between two events.
    Inspect { done: Done<ElectionInspection> },
}

/// Where the runtime reports: the handles' channels (shared with the
/// [`super::Election`] handles), and the recording.
pub(crate) struct Outlets {
    pub(crate) events: broadcast::Sender<ElectionEvent>,
    pub(crate) status: watch::Sender<ElectionStatus>,
    /// Deliveries the group key's check dropped.
    pub(crate) unauthenticated: Arc<AtomicU64>,
    pub(crate) recorder: Option<Recorder>,
}

pub(crate) struct ElectionActor {
    conn: Box<dyn Connection>,
    ops: mpsc::UnboundedReceiver<Op>,
    core: ElectionCore,
    codec: Codec,
    events: broadcast::Sender<ElectionEvent>,
    status: watch::Sender<ElectionStatus>,
    ready: Option<Done<Result<(), ElectionError>>>,
    outbox: Outbox<()>,
    /// Candidacy changes in flight, per (name, stand), oldest first.
    waiting: HashMap<(String, bool), VecDeque<Completion>>,
    leaving: Option<Done<Result<(), ElectionError>>>,
    pump_waker: Option<std::task::Waker>,
    recorder: Option<Recorder>,
    /// This runtime's span (group and member), entered on every turn.
    span: tracing::Span,
    /// Deliveries the group key's check dropped (shared with the handles).
    unauthenticated: Arc<AtomicU64>,
    telemetry: ElectionTelemetry,
}

impl ElectionActor {
    pub(crate) fn start_with(
        conn: Box<dyn Connection>,
        ops: mpsc::UnboundedReceiver<Op>,
        config: ElectionConfig,
        outlets: Outlets,
        ready: Done<Result<(), ElectionError>>,
    ) -> Addr<Self> {
        let Outlets {
            events,
            status,
            unauthenticated,
            recorder,
        } = outlets;
        let limit = config.max_message_size.min(conn.max_message_size());
        let local = conn.local();
        let span = crate::spans::runtime(crate::spans::Protocol::Election, conn.group(), local);
        let telemetry = ElectionTelemetry::new(conn.group(), local);
        ElectionActor {
            conn,
            ops,
            core: ElectionCore::with_cap(local, config.max_buffered_ops)
                .with_role(config.role)
                .with_versions(config.protocol_versions),
            codec: Codec::new(limit).reading(config.protocol_versions),
            events,
            status,
            ready: Some(ready),
            outbox: Outbox::new(config.send_window, 1),
            waiting: HashMap::new(),
            leaving: None,
            pump_waker: None,
            recorder,
            span,
            unauthenticated,
            telemetry,
        }
        .start()
    }

    fn refresh_status(&mut self) {
        let next = ElectionStatus {
            local: Some(self.conn.local()),
            members: self.core.view().to_vec(),
            installed: self.core.is_installed(),
            leaders: self.core.leaders(),
            acting: self.core.acting().clone(),
            candidates: self.core.candidates(),
            locally_quorate: self.core.locally_quorate(),
            closed: false,
            refused: self.core.refused(),
        };
        self.status.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// Copies the counters and gauges into the metrics recorder (see
    /// [`crate::telemetry`]).
    fn publish_metrics(&mut self) {
        let status = self.status.borrow();
        self.telemetry.publish(ElectionGauges {
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            in_flight: self.outbox.in_flight(),
            queued: self.outbox.queued(),
            protocol_version: self.core.write_version().unwrap_or(0),
            status: &status,
        });
    }

    /// Appends what this member decides from to its recording: the
    /// ordered events and, since acting as leader follows it, this node's
    /// quorum notifications.
    fn record(&mut self, event: &TransportEvent) {
        if self.recorder.is_none() {
            return;
        }
        let entry = match event {
            TransportEvent::Quorum(q) => Some(Recorded::Quorum(q.clone())),
            other => Recorded::from_event(other),
        };
        crate::record::keep(&mut self.recorder, self.conn.group(), entry);
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        self.record(&event);
        let actions = match event {
            TransportEvent::Deliver { from, bytes } => {
                let before = self.core.refused();
                if from == self.conn.local() {
                    self.outbox.own_delivered();
                }
                let actions = match decode_envelope(&self.codec, &bytes) {
                    Ok((version, msg)) => {
                        self.telemetry.delivered();
                        self.core.handle_envelope(from, version, msg)
                    }
                    Err(e) => {
                        warn!(group = %self.conn.group(), %from, "dropped a message: {e}");
                        self.core.count_undecodable(&e);
                        Vec::new()
                    }
                };
                let refused = self.core.refused();
                if refused != before {
                    warn!(group = %self.conn.group(), %from, ?refused, "refused a message");
                }
                actions
            }
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => {
                crate::spans::confchg(&members, &joined, &left);
                self.telemetry.confchg();
                // The clock only enters the stream (see `Info::clock`).
                let now = self.conn.wall_clock_us();
                self.core.handle_confchg(&members, &joined, &left, now)
            }
            TransportEvent::Quorum(q) => self.core.handle_quorum(q),
            TransportEvent::TotemConfChg { .. } => Vec::new(),
        };
        self.execute(actions, ctx);
    }

    fn mcast(&mut self, msg: &ElectionMessage) {
        // An announcement is never purged: a joiner that came in with an
        // earlier confchg learns this member only from it.
        let sticky = matches!(msg, ElectionMessage::Announce(_) | ElectionMessage::Mark(_));
        match self.codec.encode(Kind::Election, msg) {
            Ok(bytes) => self.outbox.push_control(bytes, sticky),
            Err(e) => error!("election message not sent: {e}"),
        }
    }

    /// Writes at the version the group speaks once the core knows it: it
    /// moves at a point of the stream, before the messages that point
    /// causes are encoded.
    fn follow_version(&mut self) {
        if let Some(v) = self.core.write_version() {
            if v != self.codec.version() {
                debug!(group = %self.conn.group(), version = v, "writing at the group's protocol version");
                self.codec = self.codec.at_version(v);
            }
        }
    }

    fn execute(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        self.follow_version();
        for action in actions {
            match action {
                // Infos carry a tag, so a stale one is harmless: any queued
                // message may be purged and the current info still goes out.
                Action::Mcast(msg) => self.mcast(&msg),
                Action::Purge => self.outbox.purge(),
                Action::Applied(op) => {
                    let key = match op {
                        CandidacyOp::Stand(name) => (name, true),
                        CandidacyOp::Withdraw(name) => (name, false),
                    };
                    if let Some(queue) = self.waiting.get_mut(&key) {
                        if let Some(done) = queue.pop_front() {
                            let _ = done.send(Ok(()));
                        }
                        if queue.is_empty() {
                            self.waiting.remove(&key);
                        }
                    }
                }
                Action::Resend(op) => {
                    let msg = match op {
                        CandidacyOp::Stand(name) => ElectionMessage::Stand(name),
                        CandidacyOp::Withdraw(name) => ElectionMessage::Withdraw(name),
                    };
                    // The user lane: a purge must not drop it.
                    match self.codec.encode(Kind::Election, &msg) {
                        Ok(bytes) => self.outbox.push_user(bytes, ()),
                        Err(e) => error!("candidacy not resent: {e}"),
                    }
                }
                Action::GiveUp => {
                    error!(
                        group = %self.conn.group(),
                        "too many candidacy changes while installing: leaving the group"
                    );
                    self.outbox.purge();
                    if self.leaving.is_none() {
                        let (done, _) = oneshot::channel();
                        self.leaving = Some(done);
                    }
                }
                Action::Refused {
                    ours,
                    group_version,
                } => {
                    self.refused(ours, group_version, ctx);
                    return;
                }
                Action::Event(event) => {
                    if matches!(event, ElectionEvent::Installed { .. }) {
                        self.telemetry.installed();
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                    tracing::info!("{event}");
                    let _ = self.events.send(event);
                }
            }
        }
        self.refresh_status();
        self.flush_or_close(ctx);
    }

    fn flush_or_close(&mut self, ctx: &mut Context<Self>) {
        let mut sent = Vec::new();
        let result = self.outbox.flush(self.conn.as_mut(), &mut sent);
        if self.outbox.blocked() {
            if let Some(w) = &self.pump_waker {
                w.wake_by_ref();
            }
        }
        if let Err(e) = result {
            self.close(e, ctx);
            return;
        }
        if self.leaving.is_some() && !self.outbox.has_queued() {
            let result = self.conn.leave().map_err(ElectionError::Transport);
            if let Some(done) = self.leaving.take() {
                let _ = done.send(result);
            }
            self.close(TransportError::Closed("left the group".into()), ctx);
        }
    }

    /// The group refused this process (rule 9 of the core): it leaves,
    /// a start in progress fails, and the runtime stops.
    fn refused(&mut self, ours: Versions, group_version: u8, ctx: &mut Context<Self>) {
        error!(
            group = %self.conn.group(),
            %ours,
            group_version,
            "the group refused this member: it speaks a protocol version this build does not"
        );
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ElectionError::Incompatible {
                ours,
                group_version,
            }));
        }
        self.outbox.purge();
        if let Err(e) = self.conn.leave() {
            warn!(group = %self.conn.group(), "leaving after the refusal: {e}");
        }
        self.close(
            TransportError::Closed(format!(
                "refused: the group speaks v{group_version}, this build speaks {ours}"
            )),
            ctx,
        );
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        debug!(group = %self.conn.group(), "election runtime stops: {error}");
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ElectionError::Transport(error.clone())));
        }
        for (_, queue) in self.waiting.drain() {
            for done in queue {
                let _ = done.send(Err(ElectionError::Closed));
            }
        }
        self.status.send_modify(|s| {
            s.closed = true;
            s.acting.clear();
        });
        let _ = self.events.send(ElectionEvent::Closed { error });
        ctx.stop();
    }

    fn handle_op(&mut self, op: Op, ctx: &mut Context<Self>) {
        match op {
            Op::Inspect { done } => {
                let dropped = self.unauthenticated.load(Ordering::Relaxed);
                let _ = done.send(self.core.inspect(self.conn.group().as_str(), dropped));
                return;
            }
            Op::Candidacy { name, stand, done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ElectionError::Closed));
                    return;
                }
                let msg = if stand {
                    ElectionMessage::Stand(name.clone())
                } else {
                    ElectionMessage::Withdraw(name.clone())
                };
                match self.codec.encode(Kind::Election, &msg) {
                    Ok(bytes) => {
                        self.waiting
                            .entry((name, stand))
                            .or_default()
                            .push_back(done);
                        self.outbox.push_user(bytes, ());
                    }
                    Err(e) => {
                        let _ = done.send(Err(ElectionError::Codec(e)));
                    }
                }
            }
            Op::Leave { done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ElectionError::Closed));
                    return;
                }
                self.leaving = Some(done);
            }
        }
        self.flush_or_close(ctx);
    }
}

impl Actor for ElectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(EventPump::new());
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

impl Pumped for ElectionActor {
    type Op = Op;

    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn set_pump_waker(&mut self, waker: std::task::Waker) {
        self.pump_waker = Some(waker);
    }

    fn poll_op(&mut self, task: &mut TaskContext<'_>) -> Poll<Option<Self::Op>> {
        self.ops.poll_recv(task)
    }

    fn handle_op(&mut self, op: Self::Op, ctx: &mut Context<Self>) {
        ElectionActor::handle_op(self, op, ctx);
    }

    fn handles_gone(&mut self, ctx: &mut Context<Self>) {
        // Every handle is gone: nobody can use the membership.
        if self.leaving.is_none() {
            let (done, _) = oneshot::channel();
            ElectionActor::handle_op(self, Op::Leave { done }, ctx);
        }
    }

    fn poll_event(
        &mut self,
        task: &mut TaskContext<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        self.conn.poll_event(task)
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        ElectionActor::handle_event(self, event, ctx);
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        ElectionActor::close(self, error, ctx);
    }

    fn idle(&mut self, ctx: &mut Context<Self>) {
        self.flush_or_close(ctx);
    }

    fn send_blocked(&self) -> bool {
        self.outbox.blocked()
    }
}
