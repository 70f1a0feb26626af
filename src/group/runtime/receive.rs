//! What the transport delivers, on its way to the core: recorded, put
//! through the inbound pipeline (`crate::group::inbound`: frames, pieces,
//! batches), and handed to the core; this member's own multicasts coming
//! back free the send window.

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, warn};

use super::GroupActor;
use crate::group::chunks::Piece;
use crate::group::inbound::{self, Handled, Received};
use crate::record::Recorded;
use crate::stages::{self, Stage};
use crate::transport::{Member, MemberChange, TransportEvent};
use crate::wire::{self, Codec, Kind, WireError, HEADER_LEN};

impl GroupActor {
    pub(super) fn record(&mut self, event: &TransportEvent) {
        if self.recorder.is_some() {
            crate::record::keep(
                &mut self.recorder,
                self.conn.group(),
                Recorded::from_event(event),
            );
        }
    }

    pub(super) fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>) {
        self.record(&event);
        match event {
            TransportEvent::Deliver { from, bytes } => {
                // The transport's copy, now shared (no copy).
                let bytes = Bytes::from(bytes);
                if from == self.local() {
                    self.queue.own_delivered(bytes.len());
                }
                let decode = stages::time(Stage::Decode);
                let received = inbound::receive(&self.codec, &mut self.reassembly, from, &bytes);
                drop(decode);
                if received.is_ok() && bytes.get(5) == Some(&(Kind::Compressed as u8)) {
                    self.metrics.compressed_delivered();
                }
                match received {
                    Ok(Received::Whole(message)) => {
                        let whole = inbound::whole_buffer(&bytes, message);
                        self.handle_delivered(from, whole, false, ctx)
                    }
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
                crate::spans::confchg(&members, &joined, &left);
                self.telemetry.confchg();
                self.interrupt_chunks(&joined, &left);
                let commands = self.core.handle_confchg(&members, &joined, &left);
                self.execute_view_change(commands, ctx);
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
    pub(super) fn handle_piece(
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
                self.handle_delivered(from, Bytes::from(message), true, ctx);
            }
        }
        self.refill(ctx);
    }

    /// One of this member's pieces came back: the message at the head of
    /// the queue leaves it once the last one is back.
    pub(super) fn own_piece_delivered(&mut self, head: &wire::ChunkHead) {
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
    pub(super) fn interrupt_chunks(&mut self, joined: &[MemberChange], left: &[MemberChange]) {
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

    /// A whole message in the buffer it was delivered, opened or put back
    /// together in: that buffer is the current delivery while the message
    /// is handled, so the actor's `wire::Payload` fields share it
    /// (`wire::Payload`, rule 2).
    pub(super) fn handle_delivered(
        &mut self,
        from: Member,
        message: Bytes,
        reassembled: bool,
        ctx: &mut Context<Self>,
    ) {
        let _current = wire::Delivery::enter(&message);
        self.handle_message(from, &message, reassembled, ctx);
    }

    /// A whole message delivered from `from` (alone, or put back together
    /// from pieces): a single envelope, or a batch unpacked in order.
    pub(super) fn handle_message(
        &mut self,
        from: Member,
        message: &[u8],
        reassembled: bool,
        ctx: &mut Context<Self>,
    ) {
        let decode = stages::time(Stage::Decode);
        let unpacked = inbound::unpack(&self.codec, message, reassembled);
        drop(decode);
        let unpacked = match unpacked {
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

    pub(super) fn handle_envelope(
        &mut self,
        from: Member,
        frame: wire::Frame<'_>,
        ctx: &mut Context<Self>,
    ) {
        let len = frame.body.len() + HEADER_LEN;
        let decode = stages::time(Stage::Decode);
        let handled = inbound::handle_envelope(&mut self.core, &self.codec, from, frame);
        drop(decode);
        let handled = match handled {
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
                    let _deliver = stages::time(Stage::Deliver);
                    self.deliver_local(from, request, ctx);
                }
                self.execute(commands, ctx);
            }
            Handled::Core(commands) => self.execute(commands, ctx),
        }
    }

    pub(super) fn drop_message(&self, from: Member, len: usize, e: &WireError) {
        self.metrics.dropped(e);
        warn!(group = %self.conn.group(), %from, len, "dropped a message: {e}");
    }
}

/// Whether `bytes` is framed as a piece of a larger message.
fn is_piece(codec: &Codec, bytes: &[u8]) -> bool {
    codec
        .decode_frame(bytes)
        .is_ok_and(|frame| frame.kind == Kind::Chunk)
}
