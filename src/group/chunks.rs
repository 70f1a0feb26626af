//! Messages larger than one multicast, sent in pieces ([`Kind::Chunk`]).
//!
//! libcpg can fragment a large message itself, but a membership change in
//! the middle fails the send with `CS_ERR_INTERRUPT` (DESIGN.md §3). Here
//! the pieces are ordinary multicasts of the ordered stream, and every
//! member, the sender included, follows the same rules on that stream:
//!
//! 1. A member assembles a sender's message from its piece 0, taking each
//!    following piece only as the next one of the assembly under way.
//! 2. A confchg that brings members in interrupts every message in pieces:
//!    what was assembled is dropped, and its pieces still to come are
//!    strays, dropped as well. A confchg that only takes members out drops
//!    the messages of those who left; the others go on, since every member
//!    that stays has seen the same pieces (virtual synchrony).
//! 3. A message is delivered at the place of its last piece in the order.
//! 4. The sender reads its own pieces back: if a confchg that brings
//!    members in falls after its piece 0 and before its last piece, it
//!    sends the whole message again, under a new id. A message whose piece
//!    0 comes after the confchg is not touched.
//! 5. After the last piece of a message the sender multicasts nothing until
//!    that piece comes back, so a message sent again never lands behind a
//!    later message of its sender: per-sender order holds.
//!
//! A member that joins in the middle of a message sees pieces without a
//! piece 0 and drops them; the message sent again after the confchg reaches
//! it whole, as it reaches everyone. Members leaving, crashing or being cut
//! off cost the others nothing: only joins and merges make a message go
//! again, and a message keeps being cut only while members keep joining
//! faster than it travels. Memory is bounded by one message of at
//! most the codec's limit per sender, and an assembly holds room for only
//! a few of the pieces it has seen, never for what its first piece claims.
//!
//! [`Kind::Chunk`]: crate::wire::Kind::Chunk

use std::collections::HashMap;

use crate::transport::Member;
use crate::wire::{ChunkHead, WireError};

/// Pieces' worth of room an assembly takes when it starts (see
/// [`Reassembly::accept`]).
const PREALLOCATED_PIECES: usize = 4;

/// What a delivered piece amounted to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Taken; the message is not whole yet.
    Pending,
    /// The last piece: the whole message, to handle at this place.
    Whole(Vec<u8>),
    /// Not the next piece of any message under way (rules 1 and 2).
    Stray,
}

struct Assembly {
    id: u64,
    next: u32,
    count: u32,
    total: u64,
    bytes: Vec<u8>,
}

/// The messages in pieces that a member is putting back together, one per
/// sender at most.
#[derive(Default)]
pub(crate) struct Reassembly {
    under_way: HashMap<Member, Assembly>,
}

impl Reassembly {
    /// Takes a piece delivered from `from` (already checked by
    /// [`crate::wire::Codec::decode_chunk`]). A piece that contradicts the
    /// assembly it continues drops that assembly and is refused.
    pub(crate) fn accept(
        &mut self,
        from: Member,
        head: ChunkHead,
        piece: &[u8],
    ) -> Result<Piece, WireError> {
        if head.index == 0 {
            // A sender starts a message only once its previous one is
            // whole (rule 5), so one under way here was interrupted by
            // nothing a member could see: a broken sender. It is replaced.
            self.under_way.remove(&from);
            // Room for a few pieces, not for the whole claimed message: a
            // forged first piece of a byte claiming 16 MiB in 16 million
            // pieces must cost what its sender multicast, not 16 MiB. The
            // buffer grows with what actually arrives (amortized doubling:
            // a couple of extra copies of a large message, far below the
            // time its pieces take to cross the ring).
            let mut bytes = Vec::with_capacity(
                (head.total as usize).min(piece.len().saturating_mul(PREALLOCATED_PIECES)),
            );
            bytes.extend_from_slice(piece);
            let assembly = Assembly {
                id: head.id,
                next: 1,
                count: head.count,
                total: head.total,
                bytes,
            };
            return finish_or_keep(&mut self.under_way, from, assembly);
        }
        let Some(mut assembly) = self.under_way.remove(&from) else {
            return Ok(Piece::Stray);
        };
        if (assembly.id, assembly.next) != (head.id, head.index) {
            // Pieces of one sender arrive in its order; any other piece is
            // from an interrupted message, and the one under way stays.
            self.under_way.insert(from, assembly);
            return Ok(Piece::Stray);
        }
        if (assembly.count, assembly.total) != (head.count, head.total) {
            return Err(WireError::Malformed(format!(
                "chunk {} of message {} changes its size",
                head.index, head.id
            )));
        }
        if assembly.bytes.len() as u64 + piece.len() as u64 > assembly.total {
            return Err(WireError::Malformed(format!(
                "chunks of message {} exceed its {} bytes",
                head.id, head.total
            )));
        }
        assembly.bytes.extend_from_slice(piece);
        assembly.next += 1;
        finish_or_keep(&mut self.under_way, from, assembly)
    }

    /// Messages under way and the bytes held for them, to check that
    /// memory stays within one message size per sender.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize) {
        let bytes = self.under_way.values().map(|a| a.bytes.capacity()).sum();
        (self.under_way.len(), bytes)
    }

    /// A confchg (rule 2): if members `joined`, every message under way is
    /// interrupted; otherwise only those of the members who `left`. Returns
    /// how many were.
    pub(crate) fn confchg(&mut self, joined: bool, left: &[Member]) -> usize {
        if joined {
            let n = self.under_way.len();
            self.under_way.clear();
            return n;
        }
        left.iter()
            .filter(|m| self.under_way.remove(m).is_some())
            .count()
    }
}

fn finish_or_keep(
    under_way: &mut HashMap<Member, Assembly>,
    from: Member,
    assembly: Assembly,
) -> Result<Piece, WireError> {
    if assembly.next < assembly.count {
        under_way.insert(from, assembly);
        return Ok(Piece::Pending);
    }
    if assembly.bytes.len() as u64 != assembly.total {
        return Err(WireError::Malformed(format!(
            "chunks of message {} add up to {} bytes, not {}",
            assembly.id,
            assembly.bytes.len(),
            assembly.total
        )));
    }
    Ok(Piece::Whole(assembly.bytes))
}

/// The sender's side of one message in pieces: what went out, what came
/// back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    id: u64,
    piece_len: usize,
    count: u32,
    total: u64,
    sent: u32,
    delivered: u32,
}

impl Outgoing {
    /// Plans a message of `total` bytes in pieces of at most `piece_len`;
    /// `None` if that would take more pieces than a chunk head counts.
    pub(crate) fn new(id: u64, total: usize, piece_len: usize) -> Option<Outgoing> {
        let piece_len = piece_len.max(1);
        let count = u32::try_from(total.div_ceil(piece_len).max(1)).ok()?;
        Some(Outgoing {
            id,
            piece_len,
            count,
            total: total as u64,
            sent: 0,
            delivered: 0,
        })
    }

    /// The next piece to multicast of `message` (the bytes this plan was
    /// made for), or `None` once every piece went out.
    pub(crate) fn next_piece<'a>(&self, message: &'a [u8]) -> Option<(ChunkHead, &'a [u8])> {
        if self.sent >= self.count {
            return None;
        }
        let start = self.sent as usize * self.piece_len;
        let end = (start + self.piece_len).min(message.len());
        let head = ChunkHead {
            id: self.id,
            index: self.sent,
            count: self.count,
            total: self.total,
        };
        Some((head, message.get(start..end)?))
    }

    /// The piece from [`Outgoing::next_piece`] was multicast.
    pub(crate) fn piece_sent(&mut self) {
        self.sent += 1;
    }

    /// Some piece has gone out and the message is not back whole yet.
    pub(crate) fn started(&self) -> bool {
        self.sent > 0
    }

    /// One of this member's own pieces came back. True when it was the last
    /// piece of this message: the message is delivered everywhere. Pieces
    /// of an earlier, interrupted attempt are ignored.
    pub(crate) fn piece_delivered(&mut self, head: &ChunkHead) -> bool {
        if head.id != self.id || head.index != self.delivered {
            return false;
        }
        self.delivered += 1;
        self.delivered == self.count
    }

    /// A confchg that brought members in. If it interrupted this message
    /// (rule 4) the plan starts over under `new_id`, and true is returned.
    pub(crate) fn interrupted(&mut self, new_id: impl FnOnce() -> u64) -> bool {
        if self.delivered == 0 {
            return false;
        }
        self.id = new_id();
        self.sent = 0;
        self.delivered = 0;
        true
    }
}

#[cfg(test)]
mod tests;
