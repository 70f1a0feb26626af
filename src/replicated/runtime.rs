//! The replica runtime: one actix actor per replica, the only code that
//! touches its connection. It decodes events, feeds them to
//! [`ReplicaCore`] and executes the actions that come back.
//!
//! ```text
//!  Op (execute, query, leave) ──► Outbox (control | user | bulk lanes)
//!                                        │ mcast (window, TRY_AGAIN)
//!  transport ─ poll_event ─► decode ─► ReplicaCore ─► actions ─► replies,
//!                                        events, snapshot chunks
//! ```
//!
//! Rules of the send and receive paths (the core's decisions are the
//! same whatever they do):
//!
//! 1. A delivered multicast is one replica message or a
//!    [`Kind::Batch`] of them. A batch's framing is checked whole (broken:
//!    the whole multicast is dropped, counted once); then each piece is
//!    decoded and handed to the core on its own, at its own position, a
//!    piece that does not decode dropped alone and counted.
//! 2. With [`super::ReplicaConfig::batch_messages`] above 1, what is queued
//!    when the runtime flushes goes out packed, up to that many messages
//!    and the message size per multicast (see [`crate::outbox`]): commands
//!    taken in one turn of the runtime, and what piled up while the send
//!    window was full. Nothing waits for company. Only once the group
//!    speaks [`super::BATCH_VERSION`], which every member that speaks it
//!    reads; before, each message goes alone.
//! 3. Acknowledgements are cumulative (safe delivery): while the pieces of
//!    one batch are handled, and while a durable replica holds one for its
//!    commit, an acknowledgement the core asked for is sent once, at the
//!    end, carrying the highest count applied by then, if the state is
//!    still of the same primary epoch and founding (the core asked for an
//!    acknowledgement of it, and it only grew by commands since). The
//!    core keeps a few of its acknowledgements in flight
//!    (`core::ACKS_IN_FLIGHT`); two asked for in one batch, or released
//!    by one sync, go as one, and the core is told it has one fewer in
//!    flight. One the core finds would release nothing by the time it is
//!    sent (core rule 13) is not sent.
//! 4. Replies and acknowledgements of a durable replica wait for the sync
//!    of what was appended before them (`keeper` rule 1), but delivery
//!    does not: at the end of a turn that appended entries the runtime
//!    starts one sync on a blocking thread and goes on; entries appended
//!    meanwhile wait for the next sync, started as soon as that one
//!    returns. A returned sync releases, in order, what it covers; an
//!    acknowledgement then says the state that sync made durable, never
//!    more. A reply whose command a sync already covered (safe delivery:
//!    its acknowledgements came in later) does not wait. A failed sync
//!    stops the replica; when the runtime stops, the last sync runs on its
//!    thread. A read's answer waits for its state's sync as a reply does.
//! 5. Reads (core rule 12): the reads taken in one turn share one barrier,
//!    queued at the turn's end behind the commands already queued (so a
//!    read sees every command its handle queued before it; in the same
//!    lane, which new rounds do not purge). A read runs on the state where
//!    the core says, and its caller learns the value only once the core
//!    releases it.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::core::{Action, Actions, ReplicaCore};
use super::durable::StoreError;
use super::keeper::Keeper;
use super::messages::{
    transfer_body, Chunk, CommandMsg, DigestMsg, ReplicaMessage, StateId, SuffixEntry,
    BATCH_VERSION,
};
use super::{
    Executed, ReplicaConfig, ReplicaError, ReplicaEvent, ReplicaInspection, ReplicaStatus,
    StateMachine, Stopped,
};
use crate::group::GroupMetrics;
use crate::outbox::{Outbox, Packing};
use crate::pump::{EventPump, Pumped};
use crate::record::{Recorded, Recorder};
use crate::roster::Refusal;
use crate::telemetry::{self, ReplicaGauges, ReplicaTelemetry};
use crate::transport::{Connection, Member, TransportError, TransportEvent};
use crate::wire::{Codec, Kind, WireError, HEADER_LEN};

/// Room for a chunk's own fields (state id, index, total, length prefix)
/// and the enum tag, on top of the header.
const CHUNK_OVERHEAD: usize = 64;

/// The outbox token of a read's barrier among the commands (theirs are
/// their ids, from 1).
const READ_TOKEN: u64 = 0;

type Done<T> = oneshot::Sender<T>;
/// A read of the state, run on the runtime's actor.
pub(crate) type Reader<S> = Box<dyn FnOnce(&S) + Send>;
type Reply<S> = Done<Result<Executed<<S as StateMachine>::Response>, ReplicaError>>;

/// A request from a [`super::Replica`] handle.
pub(crate) enum Op<S: StateMachine> {
    Execute {
        payload: Vec<u8>,
        done: Reply<S>,
    },
    Query(Reader<S>),
    /// A linearizable read (core rule 12): `read` runs on the state where
    /// its barrier comes back; `done` says whether its answer may be
    /// taken.
    Read {
        read: Reader<S>,
        done: Done<Result<StateId, ReplicaError>>,
    },
    /// Answered from the core between two events.
    Inspect {
        done: Done<ReplicaInspection>,
    },
    Leave {
        done: Done<Result<(), ReplicaError>>,
    },
    /// Ask the participants for a divergence check.
    Check {
        done: Done<Result<(), ReplicaError>>,
    },
}

/// A linearizable read under way.
pub(crate) struct PendingRead<S> {
    /// Taken when the read is evaluated.
    read: Option<Reader<S>>,
    /// The state it was read at, once it may be answered.
    done: Done<Result<StateId, ReplicaError>>,
}

/// Where the runtime reports: shared with the [`super::Replica`] handles.
pub(crate) struct Outlets {
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) events: broadcast::Sender<ReplicaEvent>,
    pub(crate) status: watch::Sender<ReplicaStatus>,
    pub(crate) stopped: Stopped,
    pub(crate) recorder: Option<Recorder>,
}

type KeeperOf<S> = Keeper<<S as StateMachine>::Response, <S as StateMachine>::Snapshot>;

pub(crate) struct ReplicaActor<S: StateMachine> {
    conn: Box<dyn Connection>,
    ops: mpsc::UnboundedReceiver<Op<S>>,
    // Boxed: actix needs an `Unpin` actor, and a user state need not be.
    core: Box<ReplicaCore<S>>,
    codec: Codec,
    chunk_size: usize,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<ReplicaEvent>,
    status: watch::Sender<ReplicaStatus>,
    stopped: Stopped,
    ready: Option<Done<Result<(), ReplicaError>>>,
    outbox: Outbox<u64>,
    calls: HashMap<u64, Reply<S>>,
    next_id: u64,
    /// Linearizable reads under way, by id (core rule 12): the read until
    /// it is evaluated, and who waits for the verdict.
    reads: HashMap<u64, PendingRead<S>>,
    /// Reads taken in this turn, for one barrier at its end.
    reads_asked: Vec<u64>,
    leaving: Option<Done<Result<(), ReplicaError>>>,
    pump_waker: Option<std::task::Waker>,
    restored: Option<(Member, u64)>,
    /// Bumped at every new round (`Purge`): an encoding or a hashing
    /// started before is void.
    round: u64,
    learn_timeout: std::time::Duration,
    recorder: Option<Recorder>,
    /// This runtime's span (group and member), entered on every turn.
    span: tracing::Span,
    telemetry: ReplicaTelemetry,
    /// The data directory of a durable replica (boxed, as `core`: it holds
    /// user types).
    keeper: Option<Box<KeeperOf<S>>>,
    /// Most messages per multicast (rule 2; 1: each alone).
    batch_messages: usize,
    /// The size cap of a multicast.
    limit: usize,
    /// Set while the pieces of one batch are handled: acknowledgements
    /// wait in `deferred_ack` and nothing is flushed (rule 3).
    in_batch: bool,
    deferred_ack: Option<u64>,
    /// The stages of the commands under way, when [`crate::probe`] is on.
    probe: crate::probe::Commands,
}

/// One piece of a delivered multicast: the message with the version of
/// its envelope, or why it is dropped.
pub(crate) type Piece = Result<(u8, ReplicaMessage), WireError>;

/// The replica messages of one delivered multicast, in order (rule 1):
/// one, or the pieces of a batch. `Err` drops the whole multicast (its
/// framing); an `Err` piece is dropped alone.
pub(crate) fn unpack(codec: &Codec, bytes: &[u8]) -> Result<Vec<Piece>, WireError> {
    let decode = |frame: crate::wire::Frame<'_>| {
        ReplicaMessage::decode(codec, frame).map(|msg| (frame.version, msg))
    };
    let frame = codec.decode_frame_any_version(bytes)?;
    if frame.kind != Kind::Batch {
        return Ok(vec![decode(frame)]);
    }
    Ok(codec
        .split_batch(frame.body)?
        .into_iter()
        .map(|piece| codec.decode_frame_any_version(piece).and_then(decode))
        .collect())
}

impl<S: StateMachine> ReplicaActor<S> {
    pub(crate) fn start_with(
        conn: Box<dyn Connection>,
        ops: mpsc::UnboundedReceiver<Op<S>>,
        config: ReplicaConfig,
        outlets: Outlets,
        ready: Done<Result<(), ReplicaError>>,
    ) -> Result<Addr<Self>, ReplicaError> {
        let Outlets {
            metrics,
            events,
            status,
            stopped,
            recorder,
        } = outlets;
        let limit = config.max_message_size.min(conn.max_message_size());
        metrics.set_limit(limit);
        // Until it knows the group's version, a replica writes at its own
        // highest: what it sends then is read at any version.
        let codec = Codec::new(limit).reading(config.protocol_versions);
        metrics.set_version(codec.version());
        let chunk_size = config
            .chunk_size
            .clamp(1, limit.saturating_sub(HEADER_LEN + CHUNK_OVERHEAD).max(1));
        let local = conn.local();
        let span = crate::spans::runtime(crate::spans::Protocol::Replica, conn.group(), local);
        let telemetry = ReplicaTelemetry::new(conn.group(), local);
        let mut core = ReplicaCore::from_config(local, codec, &config);
        let keeper = match &config.data_dir {
            Some(dir) => Some(Box::new(Self::recover(dir, &config, &mut core)?)),
            None => None,
        };
        Ok(ReplicaActor {
            conn,
            ops,
            core: Box::new(core),
            codec,
            chunk_size,
            metrics,
            events,
            status,
            stopped,
            ready: Some(ready),
            outbox: Outbox::new(config.send_window, config.chunks_in_flight),
            calls: HashMap::new(),
            next_id: 1,
            reads: HashMap::new(),
            reads_asked: Vec::new(),
            leaving: None,
            pump_waker: None,
            restored: None,
            round: 0,
            learn_timeout: config.learn_timeout,
            recorder,
            span,
            telemetry,
            keeper,
            batch_messages: config.batch_messages.max(1),
            limit,
            in_batch: false,
            deferred_ack: None,
            probe: crate::probe::Commands::default(),
        }
        .start())
    }

    /// Opens the data directory and gives `core` the state it holds.
    fn recover(
        dir: &std::path::Path,
        config: &ReplicaConfig,
        core: &mut ReplicaCore<S>,
    ) -> Result<KeeperOf<S>, ReplicaError> {
        let storage = |e: String| ReplicaError::Storage(format!("{}: {e}", dir.display()));
        let limit = config.max_snapshot_size.max(config.max_message_size);
        let opened = Keeper::open(dir, core.local(), config.sync, config.snapshot_every, limit)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        let recovered = opened.recovered;
        if recovered.dropped_bytes > 0 {
            warn!(
                dir = %dir.display(),
                dropped = recovered.dropped_bytes,
                "the log ended in an incomplete record (a write cut short); dropped it"
            );
        }
        let snapshot = match recovered.snapshot {
            Some((id, bytes)) => Some((id, S::restore(&bytes).map_err(storage)?)),
            None => None,
        };
        let entries = recovered.entries.len();
        core.recover(snapshot, recovered.entries, opened.known, opened.gone)
            .map_err(storage)?;
        if let Some(predecessor) = opened.predecessor {
            core.succeed(predecessor);
        }
        core.journal_changes();
        let id = core.state_id();
        tracing::info!(
            dir = %dir.display(),
            applied = id.applied,
            epoch = %id.epoch,
            replayed = entries,
            "recovered the state from the data directory"
        );
        Ok(opened.keeper)
    }

    fn publish(&self, event: ReplicaEvent) {
        tracing::info!("{event}");
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn refresh_status(&mut self) {
        let core = &self.core;
        let next = ReplicaStatus {
            local: Some(self.conn.local()),
            members: core.view().to_vec(),
            observers: core.observers(),
            installed: core.is_installed(),
            holding: core.is_holding(),
            primary: core.is_primary(),
            epoch: core.primary_epoch(),
            ready: core.is_ready(),
            state: core.state_id(),
            outstanding: self.outbox.in_flight() + usize::from(self.outbox.has_queued()),
            closed: false,
            restored: self.restored,
            refused: core.refused(),
            protocol_version: core.group_version(),
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
        let core = &self.core;
        let gauges = ReplicaGauges {
            members: core.view().len(),
            queued: self.outbox.queued(),
            in_flight: self.outbox.in_flight(),
            primary: core.is_primary(),
            applied: core.state_id().applied,
            protocol_version: core.group_version().unwrap_or(0),
            acks_skipped: core.acks_skipped(),
            checks: core.checks().completed,
            checks_diverged: core.checks().diverged,
        };
        self.telemetry
            .publish(&self.metrics.snapshot(), &core.refused(), gauges);
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        if self.recorder.is_some() {
            // Quorum notifications are left out: a replica's only reach
            // the decisions as facts it multicasts (recorded as delivered).
            crate::record::keep(
                &mut self.recorder,
                self.conn.group(),
                Recorded::from_event(&event),
            );
        }
        match event {
            TransportEvent::Deliver { from, bytes } => {
                if from == self.conn.local() {
                    self.outbox.own_delivered();
                }
                match unpack(&self.codec, &bytes) {
                    Ok(pieces) => self.handle_pieces(from, pieces, ctx),
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
                crate::spans::confchg(&members, &joined, &left);
                self.telemetry.confchg();
                let actions = self.core.handle_confchg(&members, &joined, &left);
                self.follow_version();
                self.execute(actions, ctx);
            }
            TransportEvent::TotemConfChg { ring_id, nodes } => {
                debug!(?ring_id, ?nodes, "totem confchg");
            }
            TransportEvent::Quorum(q) => {
                debug!(quorate = q.quorate, ring = ?q.ring_id, "quorum");
                let actions = self.core.handle_quorum(q);
                self.execute(actions, ctx);
            }
        }
    }

    /// The messages of one multicast, one by one at their own positions
    /// (rules 1 and 3); one flush at the end.
    fn handle_pieces(&mut self, from: Member, pieces: Vec<Piece>, ctx: &mut Context<Self>) {
        self.in_batch = pieces.len() > 1;
        if self.in_batch {
            self.metrics.batch_delivered();
        }
        let mut changed = false;
        for piece in pieces {
            match piece {
                Ok((version, msg)) => {
                    self.metrics.delivered();
                    let actions = self.core.handle_message(from, version, msg);
                    changed |= actions.iter().any(|a| matches!(a, Action::Event(_)));
                    self.follow_version();
                    if !self.apply(actions, ctx) {
                        self.in_batch = false;
                        return;
                    }
                }
                Err(e) => {
                    self.metrics.dropped(&e);
                    warn!(group = %self.conn.group(), %from, "dropped a message of a batch: {e}");
                }
            }
        }
        self.in_batch = false;
        if let Some(upto) = self.deferred_ack.take() {
            if let Some(upto) = self.core.raise_ack(upto, None) {
                let ack = ReplicaMessage::Ack(upto);
                if !self.apply(vec![Action::Mcast(ack)], ctx) {
                    return;
                }
            }
        }
        self.finish(changed, ctx);
    }

    /// Whether `action` answers a command, or reads, at a state an
    /// earlier sync made durable (rule 4).
    fn is_durable(&self, action: &Action<S::Response, S::Snapshot>) -> bool {
        let at = match action {
            Action::Reply {
                result: Ok(executed),
                ..
            } => executed.state,
            Action::ReadDone { at, .. } => *at,
            _ => return false,
        };
        self.keeper.as_ref().is_some_and(|k| {
            let durable = k.durable();
            at.epoch == durable.epoch
                && at.genesis == durable.genesis
                && at.applied <= durable.applied
        })
    }

    /// Writes at the version the group speaks once this replica knows it
    /// and speaks it (rule 9 of the core): it moves at a point of the
    /// stream, before the actions of that point are encoded.
    fn follow_version(&mut self) {
        if let Some(v) = self.core.writes_at() {
            if v != self.codec.version() {
                self.codec = self.codec.at_version(v);
                self.metrics.set_version(v);
            }
        }
    }

    fn execute(&mut self, actions: Actions<S>, ctx: &mut Context<Self>) {
        let changed = actions.iter().any(|a| matches!(a, Action::Event(_)));
        if self.apply(actions, ctx) {
            self.finish(changed, ctx);
        }
    }

    /// After the actions of an input: the status, if `changed`, and a
    /// flush.
    fn finish(&mut self, changed: bool, ctx: &mut Context<Self>) {
        if changed {
            self.refresh_status();
        }
        self.flush_or_close(ctx);
    }

    /// Carries out the actions of one input, without flushing; false when
    /// the runtime stopped.
    fn apply(&mut self, actions: Actions<S>, ctx: &mut Context<Self>) -> bool {
        for action in actions {
            let durable = self.is_durable(&action);
            if let Some(keeper) = &mut self.keeper {
                if keeper.holds(&action) && !durable {
                    keeper.hold(action);
                    continue;
                }
            }
            match action {
                Action::Persist(entry) => {
                    if let Some(keeper) = &mut self.keeper {
                        if let Err(e) = keeper.persist(&entry, self.core.known()) {
                            self.storage_failed(e, ctx);
                            return false;
                        }
                    }
                    self.release_written();
                }
                Action::Rebase { state, bytes } => {
                    if let Some(keeper) = &mut self.keeper {
                        if let Err(e) = keeper.rebase(state, &bytes, self.core.known()) {
                            self.storage_failed(e, ctx);
                            return false;
                        }
                    }
                    self.release_written();
                }
                Action::Mcast(ReplicaMessage::Ack(upto)) if self.in_batch => {
                    if self.deferred_ack.replace(upto).is_some() {
                        self.core.ack_absorbed();
                    }
                }
                Action::Mcast(barrier @ ReplicaMessage::Barrier(_)) => self.send_barrier(barrier),
                Action::Mcast(msg) => self.send_control(msg),
                Action::Purge => {
                    // A snapshot still being encoded belongs to the old view.
                    self.round += 1;
                    self.outbox.purge();
                }
                Action::SendSnapshot {
                    state,
                    snapshot,
                    suffix,
                } => self.encode_snapshot(state, snapshot, suffix, ctx),
                Action::Digest { at, snapshot } => self.hash_off_actor(at, snapshot, ctx),
                Action::Reply { id, result } => self.reply(id, result),
                Action::Read { ids } => self.evaluate_reads(&ids),
                Action::ReadDone { ids, at } => self.answer_reads(ids, Ok(at)),
                Action::ReadFailed { ids, error } => self.answer_reads(ids, Err(error)),
                Action::Event(event) => {
                    match &event {
                        ReplicaEvent::Installed { receivers, .. } => {
                            let local = self.conn.local();
                            self.telemetry.installed(receivers.contains(&local));
                        }
                        ReplicaEvent::Restored { from, bytes, .. } => {
                            self.telemetry.restored();
                            self.restored = Some((*from, *bytes));
                        }
                        _ => {}
                    }
                    if event == ReplicaEvent::Ready {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                    self.publish(event);
                }
                Action::Fatal(why) => {
                    error!(group = %self.conn.group(), "replica stops: {why}");
                    let _ = self.conn.leave();
                    self.close(TransportError::Other(why), ctx);
                    return false;
                }
                Action::Refused(refusal) => {
                    // The event about itself went out just before.
                    self.refused(refusal, ctx);
                    return false;
                }
            }
        }
        if let Err(e) = self.keep_up(ctx) {
            self.storage_failed(e, ctx);
            return false;
        }
        self.release_written();
        true
    }

    /// Answers the call `id`.
    fn reply(&mut self, id: u64, result: Result<Executed<S::Response>, ReplicaError>) {
        self.telemetry.outcome(id, result.is_ok());
        self.probe.answered(id);
        if let Some(done) = self.calls.remove(&id) {
            let _ = done.send(result);
        }
    }

    /// The reads taken this turn wait for one barrier (core rule 12), or
    /// fail at once if the core sends none.
    fn ask_reads(&mut self, ctx: &mut Context<Self>) {
        if self.reads_asked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.reads_asked);
        match self.core.request_read(ids.clone()) {
            Ok(actions) => {
                self.apply(actions, ctx);
            }
            Err(error) => self.answer_reads(ids, Err(error)),
        }
    }

    /// Runs the reads `ids` on the state now (core rule 12).
    fn evaluate_reads(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(read) = self.reads.get_mut(id).and_then(|r| r.read.take()) {
                read(self.core.state());
            }
        }
    }

    /// Gives the reads `ids` their verdict.
    fn answer_reads(&mut self, ids: Vec<u64>, verdict: Result<StateId, ReplicaError>) {
        for id in ids {
            if let Some(pending) = self.reads.remove(&id) {
                let _ = pending.done.send(verdict.clone());
            }
        }
    }

    /// Queues a read's barrier behind the commands queued before it (rule
    /// 5), so a read sees the commands its handle queued earlier; it
    /// survives new rounds, as they do.
    fn send_barrier(&mut self, barrier: ReplicaMessage) {
        match barrier.encode(&self.codec) {
            Ok(bytes) => self.outbox.push_user(bytes, READ_TOKEN),
            Err(e) => error!("read barrier not sent: {e}"),
        }
    }

    /// Queues a protocol message.
    fn send_control(&mut self, msg: ReplicaMessage) {
        match msg.encode(&self.codec) {
            // An info, and the mark it waits for, must reach the group
            // even across later install rounds (see
            // `ReplicaCore::handle_confchg`).
            Ok(bytes) => self.outbox.push_control(
                bytes,
                matches!(msg, ReplicaMessage::Info(_) | ReplicaMessage::Mark(_)),
            ),
            Err(e) => error!("protocol message not sent: {e}"),
        }
    }

    /// Carries out what a synchronous write of the data directory released
    /// (rule 4), before anything the core asks later.
    fn release_written(&mut self) {
        if let Some(keeper) = &mut self.keeper {
            let released = keeper.take_released();
            self.release(released);
        }
    }

    /// Sends what the data directory released, in order and never held
    /// again; an acknowledgement says what is durable now (rule 3, bounded
    /// by rule 4).
    fn release(&mut self, released: Actions<S>) {
        let durable = self.keeper.as_ref().map(|k| k.durable());
        let mut sent = None;
        for action in released {
            match action {
                Action::Mcast(ReplicaMessage::Ack(upto)) => {
                    let Some(upto) = self.core.raise_ack(upto, durable) else {
                        // Core rule 13: it would release nothing.
                        continue;
                    };
                    if sent.is_some_and(|s| s >= upto) {
                        // An acknowledgement of this sync says it already.
                        self.core.ack_absorbed();
                    } else {
                        sent = Some(upto);
                        self.send_control(ReplicaMessage::Ack(upto));
                    }
                }
                Action::Mcast(msg) => self.send_control(msg),
                Action::Reply { id, result } => self.reply(id, result),
                Action::ReadDone { ids, at } => self.answer_reads(ids, Ok(at)),
                _ => debug_assert!(false, "only replies, reads and acknowledgements are held"),
            }
        }
    }

    /// After the actions of one input: the knowledge and, when the log is
    /// long, a snapshot reach the data directory (see `keeper`); the
    /// snapshot is encoded and written off the actor.
    fn keep_up(&mut self, ctx: &mut Context<Self>) -> Result<(), StoreError> {
        let Some(keeper) = &mut self.keeper else {
            return Ok(());
        };
        keeper.remember(self.core.known())?;
        if !(keeper.wants_snapshot() && self.core.is_holding()) {
            return Ok(());
        }
        let state = self.core.state_id();
        let capture = self.core.state().snapshot();
        let write = keeper.begin_snapshot(state, self.core.known())?;
        let writing = tokio::task::spawn_blocking(move || write.run(&S::encode(capture)));
        ctx.spawn(writing.into_actor(self).map(move |outcome, act, ctx| {
            let span = act.span.clone();
            let _entered = span.enter();
            let Some(keeper) = &mut act.keeper else {
                return;
            };
            match outcome {
                Ok(Ok(written)) => {
                    keeper.snapshot_written();
                    debug!(
                        applied = state.applied,
                        written, "snapshot of the state written"
                    );
                }
                Ok(Err(e)) => act.storage_failed(e, ctx),
                Err(e) => act.storage_failed(
                    StoreError::Encode(format!("writing the snapshot stopped: {e}")),
                    ctx,
                ),
            }
        }));
        Ok(())
    }

    /// End of a pump turn, or a sync returned: starts the sync of what
    /// was appended, unless one is in flight (rule 4). Delivery goes on
    /// meanwhile; the sync's return releases what it covers.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        let Some(keeper) = &mut self.keeper else {
            return;
        };
        let (ticket, handle) = match keeper.start_sync() {
            Ok(Some(started)) => started,
            Ok(None) => return,
            Err(e) => return self.storage_failed(e, ctx),
        };
        let started = crate::probe::enabled().then(std::time::Instant::now);
        let syncing = tokio::task::spawn_blocking(move || {
            let at = started.map(|_| std::time::Instant::now());
            let outcome = handle.run();
            if let Some(at) = at {
                crate::probe::record("replica.sync (fdatasync thread)", at.elapsed());
            }
            outcome
        });
        ctx.spawn(syncing.into_actor(self).map(move |outcome, act, ctx| {
            let span = act.span.clone();
            let _entered = span.enter();
            if let Some(at) = started {
                crate::probe::record("replica.sync started→back on the actor", at.elapsed());
            }
            if act.keeper.is_none() || ctx.state().stopping() {
                return;
            }
            let outcome = outcome.unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: "log".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
            if let Err(e) = outcome {
                return act.storage_failed(e, ctx);
            }
            let released = match &mut act.keeper {
                Some(keeper) => keeper.synced(ticket),
                None => return,
            };
            act.release(released);
            // The next sync starts at once: what was appended meanwhile.
            act.commit(ctx);
            if act.keeper.is_some() {
                act.flush_or_close(ctx);
            }
        }));
    }

    /// The runtime stops: what was appended reaches the disk as the policy
    /// says, on this thread, and the directory is free for the next
    /// replica before anyone sees this one closed. Replies still held for
    /// the sync are not sent (their callers learn the replica closed:
    /// outcome unknown).
    fn release_dir(&mut self) {
        if let Some(mut keeper) = self.keeper.take() {
            if let Err(e) = keeper.commit_now() {
                warn!(group = %self.conn.group(), "last commit of the data directory failed: {e}");
            }
        }
    }

    /// The data directory failed: what was acknowledged is durable, what
    /// waits is not and never will be. The replica stops.
    fn storage_failed(&mut self, e: StoreError, ctx: &mut Context<Self>) {
        let why = format!("data directory failed: {e}");
        error!(group = %self.conn.group(), "replica stops: {why}");
        self.keeper = None;
        let _ = self.conn.leave();
        self.close(TransportError::Other(why), ctx);
    }

    /// Encodes the capture on a blocking thread, then sends it, unless the
    /// view changed meanwhile (the transfer is void then).
    /// Encodes the state to send (a snapshot, or the commands the
    /// receivers lack if that is smaller) off the actor, then sends it.
    fn encode_snapshot(
        &mut self,
        state: StateId,
        snapshot: S::Snapshot,
        suffix: Option<Vec<SuffixEntry>>,
        ctx: &mut Context<Self>,
    ) {
        let round = self.round;
        let version = self.codec.version();
        let encoding = tokio::task::spawn_blocking(move || {
            transfer_body(version, S::encode(snapshot), suffix.as_deref())
        });
        ctx.spawn(encoding.into_actor(self).map(move |encoded, act, ctx| {
            if act.round != round {
                return;
            }
            match encoded {
                Ok(bytes) => {
                    act.publish(ReplicaEvent::TransferEncoded {
                        bytes: bytes.len() as u64,
                    });
                    act.send_snapshot(state, bytes);
                    act.flush_or_close(ctx);
                }
                Err(e) => error!("encoding a snapshot failed: {e}; no transfer"),
            }
        }));
    }

    /// Hashes the capture taken at a check on a blocking thread, then
    /// multicasts this member's digest for it, unless a new round began
    /// meanwhile (the check closed with it).
    fn hash_off_actor(&mut self, at: StateId, snapshot: S::Snapshot, ctx: &mut Context<Self>) {
        let round = self.round;
        let hashing = tokio::task::spawn_blocking(move || S::snapshot_digest(&snapshot));
        ctx.spawn(hashing.into_actor(self).map(move |hashed, act, ctx| {
            if act.round != round {
                debug!(
                    ?at,
                    "state hashed for a check of an earlier round; not sent"
                );
                return;
            }
            match hashed {
                Ok(digest) => {
                    let actions = vec![Action::Mcast(ReplicaMessage::Digest(DigestMsg {
                        at,
                        digest,
                    }))];
                    if act.apply(actions, ctx) {
                        act.flush_or_close(ctx);
                    }
                }
                Err(e) => {
                    error!("hashing the state for a divergence check failed: {e}; no digest sent")
                }
            }
        }));
    }

    fn send_snapshot(&mut self, state: StateId, bytes: Vec<u8>) {
        let codec = self.codec;
        let size = self.chunk_size;
        // An empty state still takes one (empty) chunk: the receivers wait
        // for a last chunk.
        let total = bytes.len().div_ceil(size).max(1);
        let Ok(total) = u32::try_from(total) else {
            error!(
                "snapshot of {} bytes needs too many chunks; not sent",
                bytes.len()
            );
            return;
        };
        let mut index = 0u32;
        self.outbox.set_bulk(Box::new(move || {
            if index >= total {
                return None;
            }
            let start = index as usize * size;
            let end = (start + size).min(bytes.len());
            let chunk = Chunk {
                state,
                index,
                total,
                bytes: bytes.get(start..end).unwrap_or_default().to_vec(),
            };
            index += 1;
            match ReplicaMessage::Chunk(chunk).encode(&codec) {
                Ok(encoded) => Some(encoded),
                Err(e) => {
                    error!("snapshot chunk not encoded: {e}; transfer abandoned");
                    None
                }
            }
        }));
    }

    fn flush_or_close(&mut self, ctx: &mut Context<Self>) {
        // Rule 2: only where every member reads a batch.
        let batching =
            self.batch_messages > 1 && self.core.writes_at().is_some_and(|v| v >= BATCH_VERSION);
        let packing = batching.then_some(Packing {
            codec: self.codec,
            max_messages: self.batch_messages,
            max_bytes: self.limit,
        });
        self.outbox.set_packing(packing);
        let mut sent = Vec::new();
        let flushing = crate::probe::enabled().then(std::time::Instant::now);
        let result = self.outbox.flush(self.conn.as_mut(), &mut sent);
        if let (Some(at), false) = (flushing, sent.is_empty()) {
            crate::probe::record("replica.flush (with a command)", at.elapsed());
        }
        for (id, outcome) in sent {
            if id == READ_TOKEN {
                // A barrier: its reads wait for it to come back.
                continue;
            }
            match outcome {
                Ok(()) => {
                    if packing.is_none() {
                        self.metrics.multicast(1);
                    }
                    self.telemetry.multicast(id);
                    self.probe.sent(id);
                }
                Err(e) => {
                    if let Some(done) = self.calls.remove(&id) {
                        let _ = done.send(Err(ReplicaError::Transport(e)));
                    }
                }
            }
        }
        for messages in self.outbox.take_user_multicasts() {
            crate::probe::count("replica.commands/multicast", messages);
            self.metrics.multicast(messages as u64);
        }
        if self.outbox.blocked() {
            self.metrics.try_again();
            if let Some(w) = &self.pump_waker {
                w.wake_by_ref();
            }
        }
        if let Err(e) = result {
            self.close(e, ctx);
            return;
        }
        if self.leaving.is_some() && !self.outbox.has_queued() {
            let result = self.conn.leave().map_err(ReplicaError::Transport);
            if let Some(done) = self.leaving.take() {
                let _ = done.send(result);
            }
            self.fail_everything();
            self.release_dir();
            self.status.send_modify(|s| s.closed = true);
            self.publish(ReplicaEvent::Closed {
                error: TransportError::Closed("left the group".into()),
            });
            ctx.stop();
        }
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        crate::spans::transport_closed(self.conn.group(), &error);
        self.release_dir();
        self.status.send_modify(|s| s.closed = true);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ReplicaError::Transport(error.clone())));
        }
        self.fail_everything();
        self.publish(ReplicaEvent::Closed { error });
        ctx.stop();
    }

    /// The group refused this replica: it cannot speak the group's
    /// version. It leaves; what waits on it, and every later call, fails
    /// with [`ReplicaError::Incompatible`].
    fn refused(&mut self, refusal: Refusal, ctx: &mut Context<Self>) {
        let error = ReplicaError::Incompatible {
            ours: refusal.versions,
            group_version: refusal.group_version,
        };
        error!(group = %self.conn.group(), "replica stops: {error}");
        let _ = self.stopped.set(error.clone());
        if let Err(e) = self.conn.leave() {
            warn!(group = %self.conn.group(), "leaving after the refusal: {e}");
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(error.clone()));
        }
        self.fail_everything();
        self.release_dir();
        self.status.send_modify(|s| s.closed = true);
        self.publish(ReplicaEvent::Closed {
            error: TransportError::Closed(error.to_string()),
        });
        ctx.stop();
    }

    /// Fails every call in flight, with why the runtime stopped.
    fn fail_everything(&mut self) {
        self.telemetry.forget_commands();
        let error = self.stopped.get().cloned().unwrap_or(ReplicaError::Closed);
        for id in self.outbox.drain_user() {
            if let Some(done) = self.calls.remove(&id) {
                let _ = done.send(Err(error.clone()));
            }
        }
        for (_, done) in self.calls.drain() {
            let _ = done.send(Err(error.clone()));
        }
        self.reads_asked.clear();
        for (_, pending) in self.reads.drain() {
            let _ = pending.done.send(Err(error.clone()));
        }
    }

    fn handle_op(&mut self, op: Op<S>, ctx: &mut Context<Self>) {
        // Commands taken in one turn go out together (rule 2), flushed
        // once the turn's ops are taken.
        let packed = self.batch_messages > 1
            && self.core.writes_at().is_some_and(|v| v >= BATCH_VERSION)
            && matches!(op, Op::Execute { .. });
        match op {
            Op::Execute { payload, done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ReplicaError::Closed));
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let msg = ReplicaMessage::Command(CommandMsg { id, payload });
                match msg.encode(&self.codec) {
                    Ok(bytes) => {
                        self.calls.insert(id, done);
                        self.probe.taken(id);
                        self.outbox.push_user(bytes, id);
                    }
                    Err(e) => {
                        let _ = done.send(Err(ReplicaError::Codec(e)));
                    }
                }
            }
            Op::Query(read) => read(self.core.state()),
            Op::Read { read, done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ReplicaError::Closed));
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let read = Some(read);
                self.reads.insert(id, PendingRead { read, done });
                // One barrier for the turn's reads, at its end.
                self.reads_asked.push(id);
                return;
            }
            Op::Inspect { done } => {
                let seen = self
                    .core
                    .inspect(self.conn.group().as_str(), self.metrics.snapshot());
                let _ = done.send(seen);
            }
            Op::Check { done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ReplicaError::Closed));
                    return;
                }
                match self.core.request_check() {
                    Ok(actions) => {
                        let _ = done.send(Ok(()));
                        self.execute(actions, ctx);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Op::Leave { done } => {
                if self.leaving.is_some() {
                    let _ = done.send(Err(ReplicaError::Closed));
                    return;
                }
                self.leaving = Some(done);
            }
        }
        if !packed {
            self.flush_or_close(ctx);
        }
    }
}

impl<S: StateMachine> Actor for ReplicaActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(EventPump::new());
        // The learning timer: a tick is harmless when there is nothing to
        // learn, and the decision it asks for is taken in the stream.
        ctx.run_interval(
            self.learn_timeout.max(std::time::Duration::from_millis(10)),
            |act, ctx| {
                let span = act.span.clone();
                let _entered = span.enter();
                let actions = act.core.handle_tick();
                act.execute(actions, ctx);
            },
        );
        if let Some(every) = telemetry::PUBLISH_EVERY {
            // Only a copy of the counters: nothing is decided from it.
            ctx.run_interval(every, |act, _| act.publish_metrics());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.release_dir();
        if telemetry::PUBLISH_EVERY.is_some() {
            // The last counts, then a stopped member's gauges.
            self.publish_metrics();
            self.telemetry.closed();
        }
        crate::record::finish(&mut self.recorder, self.conn.group());
    }
}

impl<S: StateMachine> Pumped for ReplicaActor<S> {
    type Op = Op<S>;

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
        ReplicaActor::<S>::handle_op(self, op, ctx);
    }

    fn ops_taken(&mut self, ctx: &mut Context<Self>) {
        if !ctx.state().stopping() {
            self.ask_reads(ctx);
            self.flush_or_close(ctx);
        }
    }

    fn handles_gone(&mut self, ctx: &mut Context<Self>) {
        // Every handle is gone: nobody can use the replica.
        if self.leaving.is_none() {
            let (done, _) = oneshot::channel();
            ReplicaActor::<S>::handle_op(self, Op::Leave { done }, ctx);
        }
    }

    fn poll_event(
        &mut self,
        task: &mut TaskContext<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        self.conn.poll_event(task)
    }

    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        ReplicaActor::<S>::handle_event(self, event, ctx);
    }

    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>) {
        ReplicaActor::<S>::close(self, error, ctx);
    }

    fn idle(&mut self, ctx: &mut Context<Self>) {
        self.commit(ctx);
        self.flush_or_close(ctx);
        self.refresh_status();
    }

    fn send_blocked(&self) -> bool {
        self.outbox.blocked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_to_batch;

    fn codec() -> Codec {
        Codec::new(1 << 16)
    }

    fn envelope(msg: &ReplicaMessage) -> Vec<u8> {
        msg.encode(&codec()).expect("encodes")
    }

    #[test]
    fn a_batch_unpacks_into_its_messages_in_order_with_a_bad_piece_dropped_alone() {
        let c = codec();
        let mut batch = c.begin_batch(256);
        push_to_batch(&mut batch, &envelope(&ReplicaMessage::Ack(1)));
        push_to_batch(&mut batch, b"not an envelope");
        push_to_batch(
            &mut batch,
            &c.encode(Kind::Election, &1u32).expect("encodes"),
        );
        push_to_batch(&mut batch, &envelope(&ReplicaMessage::Mark(2)));
        let pieces = unpack(&c, &batch).expect("framing holds");
        assert_eq!(pieces.len(), 4);
        assert!(matches!(pieces[0], Ok((_, ReplicaMessage::Ack(1)))));
        assert!(pieces[1].is_err());
        assert_eq!(
            pieces[2].as_ref().err(),
            Some(&WireError::UnknownKind(Kind::Election as u8))
        );
        assert!(matches!(pieces[3], Ok((_, ReplicaMessage::Mark(2)))));
    }

    #[test]
    fn a_lone_message_unpacks_as_itself_and_broken_framing_drops_the_whole_batch() {
        let c = codec();
        let lone = unpack(&c, &envelope(&ReplicaMessage::Ack(3))).expect("whole");
        assert!(matches!(lone.as_slice(), [Ok((_, ReplicaMessage::Ack(3)))]));
        let mut batch = c.begin_batch(64);
        push_to_batch(&mut batch, &envelope(&ReplicaMessage::Ack(1)));
        // The last entry's length claims more than follows.
        batch.extend_from_slice(&100u32.to_le_bytes());
        batch.extend_from_slice(b"short");
        assert!(matches!(unpack(&c, &batch), Err(WireError::Malformed(_))));
        let mut nested = c.begin_batch(64);
        push_to_batch(&mut nested, &batch);
        assert!(unpack(&c, &nested).is_err());
    }
}
