//! Counters a user can read without a round trip through the runtime.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::wire::WireError;

/// Live counters of one group member (shared with its runtime).
#[derive(Debug, Default)]
pub struct GroupMetrics {
    delivered: AtomicU64,
    requests: AtomicU64,
    sent: AtomicU64,
    multicasts: AtomicU64,
    batches_sent: AtomicU64,
    batches_delivered: AtomicU64,
    try_again: AtomicU64,
    chunks_sent: AtomicU64,
    chunked_delivered: AtomicU64,
    chunked_resent: AtomicU64,
    chunks_stray: AtomicU64,
    compressed_sent: AtomicU64,
    compressed_saved: AtomicU64,
    compressed_delivered: AtomicU64,
    dropped_foreign: AtomicU64,
    dropped_version: AtomicU64,
    dropped_unknown_kind: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_unknown_type: AtomicU64,
    dropped_bad_payload: AtomicU64,
    /// Shared with the connection's [`crate::auth::Authenticated`] wrapper,
    /// which drops before the runtime sees anything.
    dropped_unauthenticated: Arc<AtomicU64>,
    limit: AtomicUsize,
    // Refused by a sender rule (see `super::core`), by cause.
    refused_unannounced: AtomicU64,
    refused_not_host: AtomicU64,
    refused_unasked: AtomicU64,
    refused_clock: AtomicU64,
    refused_invalid: AtomicU64,
    refused_incompatible: AtomicU64,
    refused_observer: AtomicU64,
    refused_version: AtomicU64,
    /// The protocol version this member writes at (the group's).
    version: std::sync::atomic::AtomicU8,
    calls_outstanding: AtomicU64,
    replies_awaited: AtomicU64,
    calls_abandoned: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
// Counters are added as the library grows: built only by the library.
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Messages delivered to this member and decoded (each message of a
    /// batch counts once).
    pub delivered: u64,
    /// Of those, requests to named actors (for any host).
    pub requests: u64,
    /// Messages this member multicast (each message of a batch counts once).
    pub sent: u64,
    /// Multicasts this member made: one per lone message, one per batch.
    pub multicasts: u64,
    /// Multicasts this member made that were batches.
    pub batches_sent: u64,
    /// Batches delivered to this member.
    pub batches_delivered: u64,
    /// Times the transport answered `TRY_AGAIN` (each retried, none lost).
    pub try_again: u64,
    /// Pieces of messages larger than one multicast that this member sent
    /// (each is a multicast of its own, also counted in `multicasts`).
    pub chunks_sent: u64,
    /// Messages in pieces delivered to this member whole (each also counts
    /// once in `delivered`).
    pub chunked_delivered: u64,
    /// Messages in pieces this member sent again because a confchg cut
    /// through them.
    pub chunked_resent: u64,
    /// Pieces delivered here that belonged to no message under way: the
    /// rest of a message a confchg cut (sent again whole), or of one begun
    /// before this member joined. Not lost: see `chunked_resent`.
    pub chunks_stray: u64,
    /// Multicasts (lone messages, batches or pieces) this member sent
    /// compressed (see [`GroupConfig::compress_above`](crate::GroupConfig::compress_above)).
    pub compressed_sent: u64,
    /// Bytes compression saved on those multicasts.
    pub compressed_saved: u64,
    /// Compressed multicasts delivered to this member and opened (one that
    /// does not open is counted in `dropped_malformed`).
    pub compressed_delivered: u64,
    /// Dropped: not an actix-cpg message (bad magic or too short).
    pub dropped_foreign: u64,
    /// Dropped: an actix-cpg protocol version this build does not speak.
    pub dropped_version: u64,
    /// Dropped: an envelope kind this build does not know.
    pub dropped_unknown_kind: u64,
    /// Dropped: the body did not decode (or exceeded the size limit).
    pub dropped_malformed: u64,
    /// Requests for a local actor naming a message type it does not take.
    pub dropped_unknown_type: u64,
    /// Requests for a local actor whose payload does not decode as the
    /// type it names (a shape changed under an old tag, or garbage).
    pub dropped_bad_payload: u64,
    /// Dropped before decoding: the group has a key and the delivery
    /// carried no valid MAC from its CPG sender (no MAC, another key,
    /// another sender's message sent again, truncated). See
    /// [`crate::auth`].
    pub dropped_unauthenticated: u64,
    // Messages that decoded but broke a sender rule (DESIGN.md §6): refused
    // on every member alike, nothing changed. See `MetricsSnapshot::refused`.
    /// Refused: the sender is not a member (never announced itself).
    pub refused_unannounced: u64,
    /// Refused: a reply, or a child's exit, from a member that does not
    /// host the callee or the incarnation.
    pub refused_not_host: u64,
    /// Refused: a sync request from a member not waiting for the state, or
    /// a snapshot not from the member chosen to answer (a snapshot
    /// overtaken by a confchg also lands here).
    pub refused_unasked: u64,
    /// Refused: a tick too far past the stream time.
    pub refused_clock: u64,
    /// Refused: a body that did not validate (a tree spec, a snapshot).
    pub refused_invalid: u64,
    /// Refused: an announcement of protocol versions that do not include
    /// the one the group speaks (each is also a
    /// [`GroupEvent::MemberRefused`](crate::GroupEvent::MemberRefused)).
    pub refused_incompatible: u64,
    /// Refused: a registration, tree start, child exit, clock or quorum
    /// fact from an observer (which takes part in no decision).
    pub refused_observer: u64,
    /// Refused: a message in an envelope of a protocol version some member
    /// does not speak (sent before the group moved to a newer version,
    /// delivered after a member that speaks only the newer one came in).
    pub refused_version: u64,
    /// The protocol version this member writes its messages at: the one
    /// the group speaks, once this member knows it.
    pub protocol_version: u8,
    /// Calls of this member waiting for their outcome now (queued, on
    /// their way, or awaiting the reply), as of the runtime's last step.
    pub calls_outstanding: u64,
    /// Of those, the calls whose request reached its place in the order
    /// and whose host owes the reply.
    pub replies_awaited: u64,
    /// Calls given up before their outcome came (a timeout, or a caller
    /// that dropped the call's future), since the start; a late reply to
    /// one is ignored.
    pub calls_abandoned: u64,
}

impl MetricsSnapshot {
    /// Every message refused by a sender rule.
    pub fn refused(&self) -> u64 {
        self.refused_unannounced
            + self.refused_not_host
            + self.refused_unasked
            + self.refused_clock
            + self.refused_invalid
            + self.refused_incompatible
            + self.refused_observer
            + self.refused_version
    }

    /// Every message dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_foreign
            + self.dropped_version
            + self.dropped_unknown_kind
            + self.dropped_malformed
            + self.dropped_unknown_type
            + self.dropped_bad_payload
            + self.dropped_unauthenticated
    }
}

impl GroupMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            delivered: r(&self.delivered),
            requests: r(&self.requests),
            sent: r(&self.sent),
            multicasts: r(&self.multicasts),
            batches_sent: r(&self.batches_sent),
            batches_delivered: r(&self.batches_delivered),
            try_again: r(&self.try_again),
            chunks_sent: r(&self.chunks_sent),
            chunked_delivered: r(&self.chunked_delivered),
            chunked_resent: r(&self.chunked_resent),
            chunks_stray: r(&self.chunks_stray),
            compressed_sent: r(&self.compressed_sent),
            compressed_saved: r(&self.compressed_saved),
            compressed_delivered: r(&self.compressed_delivered),
            dropped_foreign: r(&self.dropped_foreign),
            dropped_version: r(&self.dropped_version),
            dropped_unknown_kind: r(&self.dropped_unknown_kind),
            dropped_malformed: r(&self.dropped_malformed),
            dropped_unknown_type: r(&self.dropped_unknown_type),
            dropped_bad_payload: r(&self.dropped_bad_payload),
            dropped_unauthenticated: r(&self.dropped_unauthenticated),
            refused_unannounced: r(&self.refused_unannounced),
            refused_not_host: r(&self.refused_not_host),
            refused_unasked: r(&self.refused_unasked),
            refused_clock: r(&self.refused_clock),
            refused_invalid: r(&self.refused_invalid),
            refused_incompatible: r(&self.refused_incompatible),
            refused_observer: r(&self.refused_observer),
            refused_version: r(&self.refused_version),
            protocol_version: self.version.load(Ordering::Relaxed),
            calls_outstanding: r(&self.calls_outstanding),
            replies_awaited: r(&self.replies_awaited),
            calls_abandoned: r(&self.calls_abandoned),
        }
    }

    /// The counter a keyed connection's wrapper adds its drops to.
    pub(crate) fn unauthenticated_counter(&self) -> Arc<AtomicU64> {
        self.dropped_unauthenticated.clone()
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// One multicast carrying `messages` messages.
    pub(crate) fn multicast(&self, messages: u64) {
        self.sent.fetch_add(messages, Ordering::Relaxed);
        self.multicasts.fetch_add(1, Ordering::Relaxed);
        if messages > 1 {
            self.batches_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn request_delivered(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn batch_delivered(&self) {
        self.batches_delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// What one flush of the send queue did.
    pub(crate) fn flushed(&self, f: &super::send_queue::Flushed) {
        if f.multicasts + f.pieces > 0 {
            self.sent.fetch_add(f.messages, Ordering::Relaxed);
            self.multicasts
                .fetch_add(f.multicasts + f.pieces, Ordering::Relaxed);
            self.batches_sent.fetch_add(f.batches, Ordering::Relaxed);
            self.chunks_sent.fetch_add(f.pieces, Ordering::Relaxed);
        }
        if f.try_again > 0 {
            self.try_again.fetch_add(f.try_again, Ordering::Relaxed);
        }
        if f.compressed > 0 {
            self.compressed_sent
                .fetch_add(f.compressed, Ordering::Relaxed);
            self.compressed_saved
                .fetch_add(f.compressed_saved, Ordering::Relaxed);
        }
    }

    pub(crate) fn compressed_delivered(&self) {
        self.compressed_delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn try_again(&self) {
        self.try_again.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn chunked_delivered(&self) {
        self.chunked_delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn chunked_resent(&self) {
        self.chunked_resent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn chunk_stray(&self) {
        self.chunks_stray.fetch_add(1, Ordering::Relaxed);
    }

    /// The call gauges: calls waiting for their outcome, and of those the
    /// ones whose host owes the reply.
    pub(crate) fn set_calls(&self, outstanding: usize, awaited: usize) {
        self.calls_outstanding
            .store(outstanding as u64, Ordering::Relaxed);
        self.replies_awaited
            .store(awaited as u64, Ordering::Relaxed);
    }

    /// The protocol version this member writes at.
    pub(crate) fn version(&self) -> u8 {
        self.version.load(Ordering::Relaxed)
    }

    pub(crate) fn set_version(&self, version: u8) {
        self.version.store(version, Ordering::Relaxed);
    }

    pub(crate) fn call_abandoned(&self) {
        self.calls_abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_payload(&self) {
        self.dropped_bad_payload.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unknown_type(&self) {
        self.dropped_unknown_type.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message a sender rule refused.
    pub(crate) fn refused(&self, cause: super::core::DropCause) {
        use super::core::DropCause;
        let counter = match cause {
            DropCause::Unannounced => &self.refused_unannounced,
            DropCause::NotHost => &self.refused_not_host,
            DropCause::Unasked => &self.refused_unasked,
            DropCause::Clock => &self.refused_clock,
            DropCause::Invalid => &self.refused_invalid,
            DropCause::Incompatible => &self.refused_incompatible,
            DropCause::Observer => &self.refused_observer,
            DropCause::Version => &self.refused_version,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message dropped for `error`.
    pub(crate) fn dropped(&self, error: &WireError) {
        let counter = match error {
            WireError::Truncated(_) | WireError::BadMagic => &self.dropped_foreign,
            WireError::UnsupportedVersion(_) => &self.dropped_version,
            WireError::UnknownKind(_) => &self.dropped_unknown_kind,
            WireError::Malformed(_) | WireError::TooLarge { .. } => &self.dropped_malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
