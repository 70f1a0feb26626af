//! The floor: the least any actix-based design has to do per message.
//!
//! ```text
//!  sender                                   every member (the sender too)
//!  ──────                                   ─────────────────────────────
//!  Blob ─ bincode ─► [len|blob][len|blob]…  deliver callback ─► split ─► bincode decode
//!        (one multicast, or several blobs          │
//!         behind u32 lengths when batched)         └─► do_send(FloorDelivery) ─► FloorSink
//! ```
//!
//! Rules:
//!
//! 1. A message is the bench's [`Blob`] serialized with the codec the
//!    library uses (bincode 1.3, fixint, with a size limit), nothing else:
//!    no envelope, no request head, no target name, no type tag.
//! 2. Batched, every blob travels behind a little-endian `u32` length, and
//!    a multicast holds at most [`BatchConfig::default`]'s `max_bytes`
//!    (counting the lengths) and `max_messages` blobs: the library's cap. A
//!    blob larger than the cap goes alone. Unbatched, a multicast is one
//!    blob with no length.
//! 3. Every member decodes every blob and hands it to its actor with
//!    `do_send` (no reply, no mailbox bound): the cheapest hand-off actix
//!    has. The actor counts what it got and, for its own member's blobs,
//!    checks the order and takes the latency sample.
//! 4. A multicast that does not split or decode is counted and dropped.
//!
//! The send window is the raw path's, counted in multicasts.

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;
use bincode::Options;

use serde::Serialize;

use super::{mono_ns, Blob, Tally, BLOB_OVERHEAD};
use actix_cpg::BatchConfig;

/// Bytes in front of each blob of a batch.
const LENGTH_PREFIX: usize = 4;

/// The largest blob a member decodes: the largest load and then some.
const DECODE_LIMIT: u64 = 64 << 20;

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(DECODE_LIMIT)
}

/// A [`Blob`] as it is sent: the same bytes, with the padding borrowed
/// (so a send makes no copy of it besides the encoding, like `try_tell`).
#[derive(Serialize)]
struct BlobRef<'a> {
    seq: u64,
    ts: u64,
    #[serde(with = "actix_cpg::wire::bytes")]
    data: &'a [u8],
}

/// Builds the multicasts of one floor sender (rules 1 and 2).
pub(super) struct FloorSender {
    batching: bool,
    data: Vec<u8>,
    max_bytes: usize,
    max_messages: usize,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl FloorSender {
    /// A sender of blobs of `size` bytes serialized that batches (rule 2)
    /// or sends one blob a multicast.
    pub(super) fn new(batching: bool, size: usize) -> FloorSender {
        let cap = BatchConfig::default();
        FloorSender {
            batching,
            data: vec![0xa5; size.saturating_sub(BLOB_OVERHEAD)],
            max_bytes: cap.max_bytes,
            max_messages: cap.max_messages,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Encodes the blobs whose sequence numbers `next` hands out (it
    /// returns `None` when no more may go now), each stamped with the time
    /// it is encoded, into one multicast; returns the multicast and how
    /// many blobs it holds.
    pub(super) fn fill(&mut self, mut next: impl FnMut() -> Option<u64>) -> (&[u8], u64) {
        self.buf.clear();
        let mut n = 0u64;
        let data = &self.data[..];
        let blob = |seq| BlobRef {
            seq,
            ts: mono_ns(),
            data,
        };
        if !self.batching {
            if let Some(seq) = next() {
                let blob = blob(seq);
                // A Vec sink cannot fail, and the blob is within the limit.
                if codec().serialize_into(&mut self.buf, &blob).is_ok() {
                    n = 1;
                }
            }
            return (&self.buf, n);
        }
        while (n as usize) < self.max_messages {
            let Some(seq) = next() else { break };
            let blob = blob(seq);
            self.scratch.clear();
            if codec().serialize_into(&mut self.scratch, &blob).is_err() {
                break;
            }
            self.buf
                .extend_from_slice(&(self.scratch.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&self.scratch);
            n += 1;
            // Room for one more blob of the same size? Every blob of a load
            // has one size, so this is the cap of rule 2.
            if self.buf.len() + LENGTH_PREFIX + self.scratch.len() > self.max_bytes {
                break;
            }
        }
        (&self.buf, n)
    }
}

/// Calls `each` with every blob of a delivered multicast, in order (rule
/// 3); an error if the multicast does not split or a blob does not decode
/// (rule 4), after the blobs before it.
pub(super) fn for_each_blob(
    bytes: &[u8],
    batching: bool,
    mut each: impl FnMut(Blob),
) -> Result<u64, String> {
    if !batching {
        let blob = codec().deserialize(bytes).map_err(|e| e.to_string())?;
        each(blob);
        return Ok(1);
    }
    let mut rest = bytes;
    let mut n = 0;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<LENGTH_PREFIX>() else {
            return Err(format!("{} bytes left, too few for a length", rest.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((blob, tail)) = tail.split_at_checked(len) else {
            return Err(format!("a blob of {len} bytes, {} left", tail.len()));
        };
        each(codec().deserialize(blob).map_err(|e| e.to_string())?);
        n += 1;
        rest = tail;
    }
    Ok(n)
}

/// One blob handed to a member's actor: whether this member sent it.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FloorDelivery {
    /// Sent by the member the actor belongs to.
    pub own: bool,
    /// The decoded blob.
    pub blob: Blob,
}

/// The floor's actor on every member (rule 3).
pub(super) struct FloorSink {
    pub tally: Rc<RefCell<Tally>>,
}

impl Actor for FloorSink {
    type Context = Context<Self>;
}

impl Handler<FloorDelivery> for FloorSink {
    type Result = ();
    fn handle(&mut self, d: FloorDelivery, _: &mut Context<Self>) {
        let mut tally = self.tally.borrow_mut();
        tally.delivered += 1;
        if d.own {
            if d.blob.seq != tally.own {
                tally.out_of_order += 1;
            }
            tally.own_delivered(Some(d.blob.ts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> impl FnMut() -> Option<u64> {
        let mut seq = 0;
        move || {
            seq += 1;
            Some(seq - 1)
        }
    }

    #[test]
    fn a_blob_is_serialized_to_the_loads_size_and_reads_back_as_one() {
        let mut sender = FloorSender::new(false, 64);
        let (bytes, n) = sender.fill(blobs());
        assert_eq!((bytes.len(), n), (64, 1));
        let mut seen = Vec::new();
        assert_eq!(for_each_blob(bytes, false, |b| seen.push(b)), Ok(1));
        assert_eq!((seen[0].seq, seen[0].data.len()), (0, 64 - BLOB_OVERHEAD));
    }

    #[test]
    fn a_batch_fills_to_the_librarys_cap_and_splits_back_in_order() {
        let mut sender = FloorSender::new(true, 64);
        let cap = BatchConfig::default();
        let (bytes, n) = sender.fill(blobs());
        let bytes = bytes.to_vec();
        assert!(bytes.len() <= cap.max_bytes);
        assert_eq!(n as usize, (cap.max_bytes / 68).min(cap.max_messages));
        let mut seen = Vec::new();
        assert_eq!(for_each_blob(&bytes, true, |b| seen.push(b.seq)), Ok(n));
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_holds_what_may_go_now_and_a_large_blob_goes_alone() {
        let mut sender = FloorSender::new(true, 64);
        let mut left = 3;
        let (_, n) = sender.fill(|| {
            left -= 1;
            (left >= 0).then_some(0)
        });
        assert_eq!(n, 3);
        assert_eq!(sender.fill(|| None).1, 0);
        let mut large = FloorSender::new(true, 65536);
        let (bytes, n) = large.fill(blobs());
        assert_eq!((bytes.len(), n), (65540, 1));
    }

    #[test]
    fn a_cut_or_foreign_multicast_is_refused() {
        let mut sender = FloorSender::new(true, 64);
        let bytes = sender.fill(blobs()).0.to_vec();
        let mut n = 0;
        assert!(for_each_blob(&bytes[..bytes.len() - 1], true, |_| n += 1).is_err());
        assert!(for_each_blob(&[1, 0], true, |_| ()).is_err());
        assert!(for_each_blob(b"BNCHxxxx", false, |_| ()).is_err());
    }
}
