//! Envelope buffers reused on the send path: a handle writes a message's
//! envelope into a buffer taken here, and the runtime gives it back once
//! the message is multicast (`cpg_mcast_joined` copies synchronously, so
//! nothing refers to the buffer after that).
//!
//! ```text
//!  handle: take(len) ──► encode into it ──► Op::Call ──► SendQueue
//!  runtime: multicast ──► SendQueue keeps the spent buffer ──► give_back (one lock per flush)
//! ```
//!
//! Why: an envelope of 1 KiB or more is above glibc's per-thread cache, so
//! each one took `malloc`'s slow path, and at 16–64 KiB a freed envelope
//! merged into the top of its arena, which glibc hands back to the kernel
//! once it passes the trim threshold: the next envelope then faulted its
//! pages in again.
//!
//! The delivery path keeps no such pool: the corosync callback's copy
//! written into buffers the runtime gave back once unshared raised the
//! sender's page faults instead of lowering them (BENCHMARKS.md, run P).
//!
//! Rules:
//!
//! 1. **Bounded.** At most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] of
//!    capacity are kept; a buffer above [`MAX_ONE`] or below [`MIN_ONE`] is
//!    freed as before. What does not fit is freed outside the lock.
//! 2. **Small messages skip the pool.** Below [`MIN_ONE`] the allocator's
//!    per-thread cache is as fast as the pool's lock.
//! 3. **A taken buffer is empty** and holds at least the length asked.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most buffers kept: the default send window.
pub(crate) const MAX_BUFFERS: usize = 64;
/// Most capacity kept in all.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Largest buffer kept (a 256 KiB message and its envelope, the default
/// piece size).
pub(crate) const MAX_ONE: usize = 260 << 10;
/// Smallest envelope that takes a buffer from the pool (rule 2; glibc's
/// per-thread cache holds chunks up to about 1 KiB).
pub(crate) const MIN_ONE: usize = 1024;

#[derive(Debug, Default)]
struct Kept {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// Shared by a group's handles and its runtime.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    kept: Mutex<Kept>,
}

impl BufferPool {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty buffer of at least `len` bytes of capacity (rule 3): a kept
    /// one if one is large enough, else a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len < MIN_ONE {
            return Vec::with_capacity(len);
        }
        let found = {
            let mut kept = self.lock();
            // The last given back first: its pages are the most likely to
            // be in the cache still.
            match kept.buffers.iter().rposition(|b| b.capacity() >= len) {
                Some(i) => {
                    let b = kept.buffers.swap_remove(i);
                    kept.bytes -= b.capacity();
                    Some(b)
                }
                None => None,
            }
        };
        match found {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps what `spent` holds within the bounds (rule 1) and frees the
    /// rest; leaves `spent` empty.
    pub(crate) fn give_back(&self, spent: &mut Vec<Vec<u8>>) {
        if spent.is_empty() {
            return;
        }
        {
            let mut kept = self.lock();
            let mut i = 0;
            while i < spent.len() {
                let cap = spent[i].capacity();
                if (MIN_ONE..=MAX_ONE).contains(&cap)
                    && kept.buffers.len() < MAX_BUFFERS
                    && kept.bytes + cap <= MAX_BYTES
                {
                    kept.bytes += cap;
                    kept.buffers.push(spent.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        spent.clear();
    }

    /// Buffers and bytes kept now.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let kept = self.lock();
        (kept.buffers.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let pool = BufferPool::default();
        let mut b = pool.take(4096);
        b.extend_from_slice(&[7; 4096]);
        let ptr = b.as_ptr();
        pool.give_back(&mut vec![b]);
        assert_eq!(pool.kept().0, 1);
        let again = pool.take(2048);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert!(again.capacity() >= 4096);
        assert_eq!(pool.kept(), (0, 0));
    }

    #[test]
    fn a_buffer_too_small_for_the_request_stays_and_a_new_one_is_made() {
        let pool = BufferPool::default();
        pool.give_back(&mut vec![Vec::with_capacity(2048)]);
        let big = pool.take(8192);
        assert!(big.capacity() >= 8192);
        assert_eq!(pool.kept().0, 1);
    }

    #[test]
    fn small_requests_and_small_or_huge_buffers_skip_the_pool() {
        let pool = BufferPool::default();
        pool.give_back(&mut vec![
            Vec::with_capacity(MIN_ONE - 1),
            Vec::with_capacity(MAX_ONE + 1),
            Vec::with_capacity(MIN_ONE),
        ]);
        assert_eq!(pool.kept(), (1, MIN_ONE));
        // A small message does not take the kept buffer.
        let small = pool.take(64);
        assert!(small.capacity() < MIN_ONE);
        assert_eq!(pool.kept().0, 1);
    }

    #[test]
    fn the_pool_stays_within_its_bounds() {
        let pool = BufferPool::default();
        let mut many: Vec<Vec<u8>> = (0..MAX_BUFFERS * 2)
            .map(|_| Vec::with_capacity(MIN_ONE))
            .collect();
        pool.give_back(&mut many);
        assert!(many.is_empty());
        assert_eq!(pool.kept().0, MAX_BUFFERS);
        let pool = BufferPool::default();
        let mut big: Vec<Vec<u8>> = (0..MAX_BUFFERS)
            .map(|_| Vec::with_capacity(MAX_ONE))
            .collect();
        pool.give_back(&mut big);
        let (count, bytes) = pool.kept();
        assert!(bytes <= MAX_BYTES);
        assert_eq!(count, MAX_BYTES / MAX_ONE);
    }
}
