//! What a member has to multicast, without I/O: the queue, the window of
//! multicasts in flight (in multicasts and in bytes), batching with linger,
//! and messages too large for one multicast, which go in pieces from the
//! head of the queue (see `super::chunks`).
//!
//! The runtime hands [`SendQueue::flush`] a function that multicasts one
//! buffer; the tests hand it one that records. Each message carries a token
//! `T` (what to tell its sender) that comes back in a [`Finished`] once the
//! message left, was refused, or was dropped with the queue.
//!
//! Rules:
//!
//! 1. **Order.** Messages leave in the order they were queued, except
//!    control messages ([`SendQueue::push_control`]: state transfer, whose
//!    position relative to this member's other traffic does not matter and
//!    whose receiver waits on it), which go ahead of everything but each
//!    other and a message whose pieces are under way.
//! 2. **Window.** A multicast goes only while fewer than `window` are in
//!    flight and their bytes stay within `window_bytes`; one always goes
//!    when nothing is in flight, however large. A multicast is in flight
//!    until it is delivered back ([`SendQueue::own_delivered`]).
//! 3. **Batches.** Messages at the head of the queue share one multicast,
//!    up to `max_messages` and `max_bytes`. A head that would go alone, or
//!    in a batch below its caps, waits for company while a quarter of the
//!    window is in flight, and otherwise up to `linger`, unless a flush
//!    asked for it ([`SendQueue::flush_all`]). Under load one of the
//!    multicasts in flight comes back soon and frees the window, and the
//!    batch fills meanwhile instead of leaving at whatever the runtime had
//!    taken in since its last turn (a fraction of the cap); a lightly
//!    loaded member, with little in flight, sends at once as before.
//! 4. **Pieces.** A message above `frame_limit` is cut into pieces sent one
//!    after the other from the head; it leaves the queue once its last
//!    piece is delivered back, and nothing behind it goes before. A confchg
//!    that brings members in restarts it under a new id.
//! 5. **Flow control.** At the transport's `TRY_AGAIN` the flush stops and
//!    leaves what it tried at the head; the queue reports it is blocked.
//! 6. **Compression.** Once the group speaks `wire::COMPRESSION_VERSION`
//!    ([`SendQueue::set_compression`]), a multicast — a lone message, a
//!    batch, or a piece — of at least `compress_above` bytes goes as one
//!    compressed frame if every message it carries is
//!    [`wire::compressible`] (written at that version, of a kind a process
//!    of an older build drops anyway) and the compressed frame is smaller;
//!    otherwise it goes as it is. Per multicast, so a batch of small
//!    messages is compressed whole, and a piece on its own (the pieces of
//!    one message are cut before compression, so a restarted message is
//!    cut alike). The window counts the bytes that went.

use std::collections::VecDeque;
use std::time::Instant;

use super::chunks::Outgoing as Pieces;
use super::BatchConfig;
use crate::transport::TransportError;
use crate::wire::{self, ChunkHead, Codec, BATCH_ENTRY_OVERHEAD, CHUNK_OVERHEAD, HEADER_LEN};

/// A batch below its caps waits for company while at least one
/// `BUSY_SHARE`th of the window is in flight (rule 3).
const BUSY_SHARE: usize = 4;

/// A message that left the queue, and how.
#[derive(Debug)]
pub(crate) struct Finished<T> {
    /// What its sender gave with it.
    pub(crate) token: T,
    /// Its length, if it was admitted through the send gate (release it
    /// there).
    pub(crate) gated: Option<usize>,
    /// Its place in the queue (0 for control messages).
    pub(crate) seq: u64,
    /// `Err`: it was never multicast, and why.
    pub(crate) result: Result<(), TransportError>,
}

/// What one flush did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Multicasts of whole messages (alone or in a batch).
    pub(crate) multicasts: u64,
    /// Messages those carried.
    pub(crate) messages: u64,
    /// Of those multicasts, the batches of two or more.
    pub(crate) batches: u64,
    /// Pieces of large messages multicast.
    pub(crate) pieces: u64,
    /// `TRY_AGAIN` answers.
    pub(crate) try_again: u64,
    /// The transport refused a batch as too large (below the size it
    /// announced): its messages went one by one.
    pub(crate) batch_refused: bool,
    /// Of the multicasts and pieces, those that went compressed (rule 6).
    pub(crate) compressed: u64,
    /// Bytes compression saved on them.
    pub(crate) compressed_saved: u64,
}

struct Entry<T> {
    bytes: Vec<u8>,
    token: T,
    gated: bool,
    seq: u64,
    /// Only read for the linger, so only taken when there is one (a clock
    /// read per message is not free on every machine).
    queued_at: Option<Instant>,
    pieces: Option<Pieces>,
}

impl<T> Entry<T> {
    fn finish(self, result: Result<(), TransportError>) -> Finished<T> {
        self.finish_with_bytes(result).0
    }

    /// [`Entry::finish`], handing back the message's buffer (to be reused
    /// once it was multicast).
    fn finish_with_bytes(self, result: Result<(), TransportError>) -> (Finished<T>, Vec<u8>) {
        let done = Finished {
            gated: self.gated.then_some(self.bytes.len()),
            token: self.token,
            seq: self.seq,
            result,
        };
        (done, self.bytes)
    }
}

/// The size limits of a queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Most multicasts in flight.
    pub(crate) window: usize,
    /// Most bytes in flight.
    pub(crate) window_bytes: usize,
    /// Largest multicast; larger messages go in pieces.
    pub(crate) frame_limit: usize,
    /// Batching.
    pub(crate) batch: BatchConfig,
    /// Multicasts of at least this many bytes are compressed, once the
    /// group speaks a version that reads them (rule 6); `None`: never.
    pub(crate) compress_above: Option<usize>,
}

/// A member's outgoing messages (rules in the module doc).
pub(crate) struct SendQueue<T> {
    entries: VecDeque<Entry<T>>,
    limits: QueueLimits,
    in_flight: usize,
    in_flight_bytes: usize,
    next_seq: u64,
    next_piece_id: u64,
    /// Messages up to this seq go out without lingering.
    flush_upto: u64,
    /// When the head of the queue stops lingering.
    linger_until: Option<Instant>,
    blocked: bool,
    /// Whether the group speaks a version that reads compressed frames.
    compress: bool,
    /// Where a compressed multicast is written, reused.
    scratch: Vec<u8>,
    /// Where a batch is written, reused (within the batch's byte cap).
    batch: Vec<u8>,
    /// Buffers of messages multicast whole since [`SendQueue::spent`] was
    /// last emptied: the runtime reuses them for later envelopes.
    spent: Vec<Vec<u8>>,
}

impl<T> SendQueue<T> {
    /// An empty queue. A window of 0 counts as 1.
    pub(crate) fn new(mut limits: QueueLimits) -> Self {
        limits.window = limits.window.max(1);
        limits.window_bytes = limits.window_bytes.max(1);
        limits.batch.max_messages = limits.batch.max_messages.max(1);
        SendQueue {
            entries: VecDeque::new(),
            limits,
            in_flight: 0,
            in_flight_bytes: 0,
            next_seq: 1,
            next_piece_id: 1,
            flush_upto: 0,
            linger_until: None,
            blocked: false,
            compress: false,
            scratch: Vec::new(),
            batch: Vec::new(),
            spent: Vec::new(),
        }
    }

    /// Buffers of the messages multicast whole since this was last emptied;
    /// the caller empties it after each flush (so it holds at most one
    /// window's worth).
    pub(crate) fn spent(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.spent
    }

    /// Whether the group speaks a version that reads compressed frames
    /// (rule 6): what this member knows of it, from the ordered stream.
    pub(crate) fn set_compression(&mut self, on: bool) {
        self.compress = on;
    }

    /// The size from which a multicast is compressed now, if any.
    fn compress_above(&self) -> Option<usize> {
        self.limits.compress_above.filter(|_| self.compress)
    }

    /// Whether nothing waits to be multicast.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages waiting to be multicast, and their bytes (a message whose
    /// pieces are under way counts whole until it leaves).
    pub(crate) fn depth(&self) -> (usize, usize) {
        (
            self.entries.len(),
            self.entries.iter().map(|e| e.bytes.len()).sum(),
        )
    }

    /// Multicasts sent and not yet delivered back.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the last flush stopped at `TRY_AGAIN` with messages left.
    pub(crate) fn blocked(&self) -> bool {
        self.blocked && !self.entries.is_empty()
    }

    /// When the head of the queue stops lingering, if it lingers.
    pub(crate) fn linger_deadline(&self) -> Option<Instant> {
        self.linger_until
    }

    /// Whether half the window is free (in multicasts and in bytes): the
    /// point where flushing again packs the queue into batches instead of
    /// making every freed slot a multicast of its own.
    pub(crate) fn half_free(&self) -> bool {
        self.in_flight * 2 <= self.limits.window
            && self.in_flight_bytes * 2 <= self.limits.window_bytes
    }

    /// Queues a message behind the others (rule 1). `Err` (with its
    /// token) if it can never be sent: too large even for pieces.
    pub(crate) fn push(
        &mut self,
        bytes: Vec<u8>,
        token: T,
        gated: bool,
    ) -> Result<(), Finished<T>> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let queued_at = (!self.limits.batch.linger.is_zero()).then(Instant::now);
        let entry = self.entry(bytes, token, gated, seq, queued_at)?;
        self.entries.push_back(entry);
        Ok(())
    }

    /// Queues a control message ahead of the traffic (rule 1), behind the
    /// control messages already queued (their order matters: an
    /// announcement goes before the request or offer that follows it) and
    /// never between the pieces of a message under way.
    pub(crate) fn push_control(&mut self, bytes: Vec<u8>, token: T) -> Result<(), Finished<T>> {
        let entry = self.entry(bytes, token, false, 0, None)?;
        let mut at = match self.entries.front() {
            Some(head) if head.pieces.as_ref().is_some_and(|p| p.started()) => 1,
            _ => 0,
        };
        while self.entries.get(at).is_some_and(|e| e.seq == 0) {
            at += 1;
        }
        self.entries.insert(at, entry);
        Ok(())
    }

    fn entry(
        &mut self,
        bytes: Vec<u8>,
        token: T,
        gated: bool,
        seq: u64,
        queued_at: Option<Instant>,
    ) -> Result<Entry<T>, Finished<T>> {
        let mut entry = Entry {
            bytes,
            token,
            gated,
            seq,
            queued_at,
            pieces: None,
        };
        if entry.bytes.len() > self.limits.frame_limit {
            let piece_len = self.limits.frame_limit.saturating_sub(CHUNK_OVERHEAD);
            let id = self.next_piece_id;
            entry.pieces = (piece_len > 0)
                .then(|| Pieces::new(id, entry.bytes.len(), piece_len))
                .flatten();
            if entry.pieces.is_none() {
                let error = TransportError::MessageTooLarge {
                    len: entry.bytes.len(),
                    max: self.limits.frame_limit,
                };
                return Err(entry.finish(Err(error)));
            }
            self.next_piece_id += 1;
        }
        Ok(entry)
    }

    /// Everything queued so far goes without lingering (rule 3). Returns
    /// the seq a flush request waits for, or `None` if nothing is queued.
    pub(crate) fn flush_all(&mut self) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        self.flush_upto = self.next_seq - 1;
        Some(self.flush_upto)
    }

    /// Multicasts queued messages while the window has room, packing what
    /// fits into batches, through `mcast`. What left the queue goes to
    /// `finished`, in order. Stops at the first `TRY_AGAIN`, leaving what it
    /// tried at the head; any other transport error ends the flush and is
    /// returned (the queue stays as it was).
    pub(crate) fn flush(
        &mut self,
        now: Instant,
        codec: &Codec,
        mcast: &mut dyn FnMut(&[u8]) -> Result<(), TransportError>,
        finished: &mut Vec<Finished<T>>,
    ) -> Result<Flushed, TransportError> {
        let mut report = Flushed::default();
        self.blocked = false;
        self.linger_until = None;
        let mut alone = false;
        while self.in_flight < self.limits.window {
            match self.send_piece(codec, mcast, finished, &mut report)? {
                PieceStep::Sent => continue,
                PieceStep::Stop => break,
                PieceStep::NotInPieces => {}
            }
            let Some((count, len)) = self.next_mcast(now) else {
                break;
            };
            let (count, len) = if alone {
                (1, self.entries[0].bytes.len())
            } else {
                (count, len)
            };
            if !self.window_has_room(len) {
                break;
            }
            let compress = self.compress_above().is_some_and(|above| len >= above)
                && self
                    .entries
                    .iter()
                    .take(count)
                    .all(|e| wire::compressible(&e.bytes));
            let raw: &[u8] = if count == 1 {
                &self.entries[0].bytes
            } else {
                // A copy of each payload the binding forces:
                // `cpg_mcast_joined` takes an iovec, but rust-corosync 3.2
                // passes it one slice only.
                codec.begin_batch_in(&mut self.batch, len);
                for entry in self.entries.iter().take(count) {
                    wire::push_to_batch(&mut self.batch, &entry.bytes);
                }
                &self.batch
            };
            let packed = compress && codec.compress_into(raw, &mut self.scratch);
            let sent = if packed { &self.scratch[..] } else { raw };
            let (raw_len, sent_len) = (raw.len(), sent.len());
            let result = mcast(sent);
            match result {
                Ok(()) => {
                    alone = false;
                    self.in_flight += 1;
                    self.in_flight_bytes += sent_len;
                    if packed {
                        report.compressed += 1;
                        report.compressed_saved += (raw_len - sent_len) as u64;
                    }
                    report.multicasts += 1;
                    report.messages += count as u64;
                    if count > 1 {
                        report.batches += 1;
                    }
                    for entry in self.entries.drain(..count) {
                        let (done, bytes) = entry.finish_with_bytes(Ok(()));
                        finished.push(done);
                        self.spent.push(bytes);
                    }
                }
                Err(TransportError::TryAgain) => {
                    report.try_again += 1;
                    self.blocked = true;
                    break;
                }
                Err(TransportError::MessageTooLarge { .. }) if count > 1 => {
                    // The transport's limit is below what it announced:
                    // send the head on its own instead.
                    report.batch_refused = true;
                    alone = true;
                }
                Err(e @ TransportError::MessageTooLarge { .. }) => {
                    if let Some(refused) = self.entries.pop_front() {
                        finished.push(refused.finish(Err(e)));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// How many messages from the head of the queue the next multicast
    /// carries, and its length; `None` if the queue is empty or its head
    /// lingers for company.
    fn next_mcast(&mut self, now: Instant) -> Option<(usize, usize)> {
        let batch = self.limits.batch;
        let first = self.entries.front()?;
        if first.pieces.is_some() {
            return Some((1, first.bytes.len()));
        }
        let mut count = 1;
        let mut len = HEADER_LEN + BATCH_ENTRY_OVERHEAD + first.bytes.len();
        let mut full = batch.max_messages <= 1 || len > batch.max_bytes;
        if !full {
            for entry in self.entries.iter().skip(1) {
                if count >= batch.max_messages || entry.pieces.is_some() {
                    full = true;
                    break;
                }
                let grown = len + BATCH_ENTRY_OVERHEAD + entry.bytes.len();
                if grown > batch.max_bytes {
                    full = true;
                    break;
                }
                len = grown;
                count += 1;
            }
            full |= count >= batch.max_messages;
        }
        if !full && first.seq > self.flush_upto && batch.max_messages > 1 && self.busy() {
            return None;
        }
        if !full && !batch.linger.is_zero() && first.seq > self.flush_upto {
            let until = first.queued_at.unwrap_or(now) + batch.linger;
            if now < until {
                self.linger_until = Some(until);
                return None;
            }
        }
        if count == 1 {
            len = first.bytes.len();
        }
        Some((count, len))
    }

    /// If the head of the queue is a message in pieces, multicasts its next
    /// piece, or stops everything until its last piece is back (rule 4).
    fn send_piece(
        &mut self,
        codec: &Codec,
        mcast: &mut dyn FnMut(&[u8]) -> Result<(), TransportError>,
        finished: &mut Vec<Finished<T>>,
        report: &mut Flushed,
    ) -> Result<PieceStep, TransportError> {
        let Some(head) = self.entries.front() else {
            return Ok(PieceStep::NotInPieces);
        };
        let Some(plan) = &head.pieces else {
            return Ok(PieceStep::NotInPieces);
        };
        let Some((chunk, piece)) = plan.next_piece(&head.bytes) else {
            return Ok(PieceStep::Stop);
        };
        let len = CHUNK_OVERHEAD + piece.len();
        if !self.window_has_room(len) {
            return Ok(PieceStep::Stop);
        }
        let compress = self.compress_above().is_some_and(|above| len >= above)
            && wire::compressible(&head.bytes);
        // The piece is copied behind its head: the binding takes one slice.
        let frame = codec.encode_chunk(chunk, piece);
        let started = plan.started();
        let packed = compress && codec.compress_into(&frame, &mut self.scratch);
        let sent = if packed {
            &self.scratch[..]
        } else {
            &frame[..]
        };
        let sent_len = sent.len();
        match mcast(sent) {
            Ok(()) => {
                if let Some(plan) = self.entries.front_mut().and_then(|e| e.pieces.as_mut()) {
                    plan.piece_sent();
                }
                self.in_flight += 1;
                self.in_flight_bytes += sent_len;
                report.pieces += 1;
                if packed {
                    report.compressed += 1;
                    report.compressed_saved += (frame.len() - sent_len) as u64;
                }
                Ok(PieceStep::Sent)
            }
            Err(TransportError::TryAgain) => {
                report.try_again += 1;
                self.blocked = true;
                Ok(PieceStep::Stop)
            }
            Err(e @ TransportError::MessageTooLarge { .. }) if !started => {
                if let Some(refused) = self.entries.pop_front() {
                    finished.push(refused.finish(Err(e)));
                }
                Ok(PieceStep::Sent)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether enough of the window is in flight that a batch below its
    /// caps waits for company (rule 3).
    fn busy(&self) -> bool {
        self.in_flight > 0 && self.in_flight * BUSY_SHARE >= self.limits.window
    }

    /// Whether a multicast of `len` bytes fits the window now (rule 2).
    fn window_has_room(&self, len: usize) -> bool {
        self.in_flight == 0
            || (self.in_flight < self.limits.window
                && self.in_flight_bytes + len <= self.limits.window_bytes)
    }

    /// One of this member's multicasts (`len` bytes as delivered) came
    /// back: its window slot is free.
    pub(crate) fn own_delivered(&mut self, len: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(len);
    }

    /// One of this member's pieces came back (after [`Self::own_delivered`]
    /// for its multicast): the message at the head leaves the queue once
    /// its last piece is back.
    pub(crate) fn own_piece_delivered(&mut self, head: &ChunkHead) -> Option<Finished<T>> {
        let whole = self
            .entries
            .front_mut()
            .and_then(|e| e.pieces.as_mut())
            .is_some_and(|plan| plan.piece_delivered(head));
        if !whole {
            return None;
        }
        self.entries.pop_front().map(|e| e.finish(Ok(())))
    }

    /// A confchg: one that brings members in cuts every message in pieces,
    /// so this member's own, if under way, starts again from its first
    /// piece under a new id (rule 4). Whether it did.
    pub(crate) fn confchg(&mut self, joined: bool) -> bool {
        if !joined {
            return false;
        }
        let mut id = self.next_piece_id;
        let restarted = match self.entries.front_mut().and_then(|e| e.pieces.as_mut()) {
            Some(plan) => plan.interrupted(|| {
                let new = id;
                id += 1;
                new
            }),
            None => false,
        };
        self.next_piece_id = id;
        restarted
    }

    /// Empties the queue (the member closes): every message, unsent.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Finished<T>> + '_ {
        self.entries
            .drain(..)
            .map(|e| e.finish(Err(TransportError::Closed("the group closed".to_owned()))))
    }
}

/// What [`SendQueue::send_piece`] did.
enum PieceStep {
    /// The head of the queue is not a message in pieces.
    NotInPieces,
    /// A piece went out, or a message that cannot go was refused: go on.
    Sent,
    /// Nothing more now (window full, `TRY_AGAIN`, or the last piece is
    /// awaited).
    Stop,
}

#[cfg(test)]
mod tests;
