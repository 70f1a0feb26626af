//! The send queue's admission gate: bounds what callers may queue for the
//! group runtime, so a producer that outruns the daemon waits (or hears
//! `WouldBlock`) instead of growing the queue without end.
//!
//! ```text
//!  tell/send ──► admit? ── room, nobody waiting ──► queued now (ordered)
//!                  │
//!                  └─ full ──► ticket (place in line, taken at call time)
//!                                 │  poll: my turn and room? ──► queued
//!                                 └─ dropped before that ──► cancelled
//!  runtime: message multicast ──► release(bytes) ──► wake the next ticket
//! ```
//!
//! Tickets are served strictly in the order they were taken, and a caller
//! that finds anybody in line takes a ticket too, so messages enter the
//! queue in call order even when some of them had to wait. The gate only
//! counts what waits to be multicast; what is multicast but not yet
//! delivered back is bounded by the runtime's send window.
//!
//! A producer waiting for room without a ticket (`poll_room`, behind
//! `Group::ready_to_send`) is woken only once the queue has drained to half
//! its bounds: waking it for every message that leaves would make it and
//! the runtime take turns per message, which costs more than the messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Why a ticket could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateClosed {
    /// The runtime stopped; nothing will be queued any more.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    messages: usize,
    bytes: usize,
    /// Next ticket to hand out; `serving` is the first not yet admitted.
    next_ticket: u64,
    serving: u64,
    /// Tickets given up before their turn: skipped when reached.
    cancelled: BTreeSet<u64>,
    waiting: BTreeMap<u64, Waker>,
    /// Wakers of callers waiting for room without a ticket (`poll_room`).
    room_wakers: Vec<Waker>,
    closed: bool,
}

/// Shared by a group's handles and its runtime.
#[derive(Debug)]
pub(crate) struct SendGate {
    max_messages: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

impl SendGate {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        SendGate {
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Low-water mark for waking producers without a ticket.
    fn drained(&self, s: &State) -> bool {
        s.messages <= self.max_messages / 2 && s.bytes <= self.max_bytes / 2
    }

    fn has_room(&self, s: &State, bytes: usize) -> bool {
        // One message of any size may always be queued alone, or a message
        // larger than the byte budget could never go.
        s.messages < self.max_messages && (s.messages == 0 || s.bytes + bytes <= self.max_bytes)
    }

    /// Admits a message of `bytes` now if there is room and nobody waits
    /// in line ahead of it.
    pub(crate) fn try_admit(&self, bytes: usize) -> Result<bool, GateClosed> {
        let mut s = self.lock();
        if s.closed {
            return Err(GateClosed::Closed);
        }
        if s.serving == s.next_ticket && self.has_room(&s, bytes) {
            s.messages += 1;
            s.bytes += bytes;
            return Ok(true);
        }
        Ok(false)
    }

    /// Admits now, or hands out a place in line.
    pub(crate) fn admit_or_ticket(&self, bytes: usize) -> Result<Admission, GateClosed> {
        let mut s = self.lock();
        if s.closed {
            return Err(GateClosed::Closed);
        }
        if s.serving == s.next_ticket && self.has_room(&s, bytes) {
            s.messages += 1;
            s.bytes += bytes;
            return Ok(Admission::Now);
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        Ok(Admission::Ticket(ticket))
    }

    /// Admits `ticket` once it is first in line and there is room.
    pub(crate) fn poll_ticket(
        &self,
        ticket: u64,
        bytes: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), GateClosed>> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(Err(GateClosed::Closed));
        }
        if s.serving == ticket && self.has_room(&s, bytes) {
            s.messages += 1;
            s.bytes += bytes;
            s.waiting.remove(&ticket);
            self.advance(&mut s);
            return Poll::Ready(Ok(()));
        }
        s.waiting.insert(ticket, cx.waker().clone());
        Poll::Pending
    }

    /// Gives up a ticket that was never admitted.
    pub(crate) fn cancel(&self, ticket: u64) {
        let mut s = self.lock();
        s.waiting.remove(&ticket);
        if ticket == s.serving {
            self.advance(&mut s);
        } else if ticket > s.serving {
            s.cancelled.insert(ticket);
        }
    }

    /// Resolves when the queue has drained to half its bounds (or less) and
    /// a message of `bytes` could be admitted without waiting (another
    /// caller may take the room first).
    pub(crate) fn poll_room(
        &self,
        bytes: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), GateClosed>> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(Err(GateClosed::Closed));
        }
        // Drained to half, not merely one message short of full: otherwise
        // a producer of messages larger than the room left would be told
        // "ready", then "WouldBlock", and spin.
        if s.serving == s.next_ticket && self.drained(&s) && self.has_room(&s, bytes) {
            return Poll::Ready(Ok(()));
        }
        s.room_wakers.push(cx.waker().clone());
        Poll::Pending
    }

    /// The runtime multicast (or gave up on) an admitted message.
    pub(crate) fn release(&self, bytes: usize) {
        self.release_many(1, bytes);
    }

    /// [`SendGate::release`] of `messages` messages of `bytes` in all, under
    /// one lock (a batch leaves the queue at once).
    pub(crate) fn release_many(&self, messages: usize, bytes: usize) {
        let mut s = self.lock();
        s.messages = s.messages.saturating_sub(messages);
        s.bytes = s.bytes.saturating_sub(bytes);
        self.wake_next(&mut s);
    }

    /// The runtime stopped: every waiter learns it.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        for (_, w) in std::mem::take(&mut s.waiting) {
            w.wake();
        }
        for w in s.room_wakers.drain(..) {
            w.wake();
        }
    }

    /// Messages and bytes admitted and not yet released.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let s = self.lock();
        (s.messages, s.bytes)
    }

    fn advance(&self, s: &mut State) {
        s.serving += 1;
        while s.cancelled.remove(&s.serving) {
            s.serving += 1;
        }
        self.wake_next(s);
    }

    fn wake_next(&self, s: &mut State) {
        if let Some(w) = s.waiting.get(&s.serving) {
            w.wake_by_ref();
        } else if s.serving == s.next_ticket && !s.room_wakers.is_empty() && self.drained(s) {
            for w in s.room_wakers.drain(..) {
                w.wake();
            }
        }
    }
}

/// The answer of [`SendGate::admit_or_ticket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queued now: the caller owns one admitted message.
    Now,
    /// Wait for this turn with [`SendGate::poll_ticket`].
    Ticket(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn cx() -> Context<'static> {
        Context::from_waker(noop_waker_ref())
    }

    #[test]
    fn admits_until_full_then_hands_out_tickets_in_order() {
        let gate = SendGate::new(2, 1000);
        assert_eq!(gate.admit_or_ticket(10), Ok(Admission::Now));
        assert_eq!(gate.admit_or_ticket(10), Ok(Admission::Now));
        assert_eq!(gate.admit_or_ticket(10), Ok(Admission::Ticket(0)));
        assert_eq!(gate.admit_or_ticket(10), Ok(Admission::Ticket(1)));
        assert_eq!(gate.try_admit(1), Ok(false));
        let mut cx = cx();
        assert!(
            gate.poll_ticket(1, 10, &mut cx).is_pending(),
            "1 is behind 0"
        );
        gate.release(10);
        assert!(
            gate.poll_ticket(1, 10, &mut cx).is_pending(),
            "still behind 0"
        );
        assert_eq!(gate.poll_ticket(0, 10, &mut cx), Poll::Ready(Ok(())));
        assert!(gate.poll_ticket(1, 10, &mut cx).is_pending(), "full again");
        gate.release(10);
        assert_eq!(gate.poll_ticket(1, 10, &mut cx), Poll::Ready(Ok(())));
        assert_eq!(gate.queued(), (2, 20));
    }

    #[test]
    fn nobody_jumps_the_line_while_a_ticket_waits() {
        let gate = SendGate::new(1, 1000);
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Now));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(0)));
        gate.release(1);
        // Room now, but ticket 0 was first.
        assert_eq!(gate.try_admit(1), Ok(false));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(1)));
        assert!(gate.poll_room(1, &mut cx()).is_pending());
    }

    #[test]
    fn cancelled_tickets_are_skipped() {
        let gate = SendGate::new(1, 1000);
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Now));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(0)));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(1)));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(2)));
        gate.cancel(1);
        gate.cancel(0);
        gate.release(1);
        assert_eq!(gate.poll_ticket(2, 1, &mut cx()), Poll::Ready(Ok(())));
        gate.release(1);
        assert_eq!(gate.try_admit(1), Ok(true));
    }

    #[test]
    fn bytes_bound_the_queue_but_one_message_always_fits() {
        let gate = SendGate::new(100, 50);
        assert_eq!(gate.try_admit(500), Ok(true), "alone, any size goes");
        assert_eq!(gate.try_admit(1), Ok(false));
        gate.release(500);
        assert_eq!(gate.try_admit(30), Ok(true));
        assert_eq!(gate.try_admit(20), Ok(true));
        assert_eq!(gate.try_admit(1), Ok(false));
        assert!(gate.poll_room(1, &mut cx()).is_pending());
    }

    #[test]
    fn room_means_room_for_large_messages_too() {
        // 3 KiB queued of 4 KiB: a 2 KiB message does not fit, and "ready"
        // must not be said until it would.
        let gate = SendGate::new(100, 4096);
        for _ in 0..3 {
            assert_eq!(gate.try_admit(1024), Ok(true));
        }
        assert_eq!(gate.try_admit(2048), Ok(false));
        assert!(gate.poll_room(0, &mut cx()).is_pending());
        gate.release(1024);
        assert!(gate.poll_room(0, &mut cx()).is_ready(), "2 KiB of 4 queued");
        assert_eq!(gate.try_admit(2048), Ok(true));
    }

    #[test]
    fn a_producer_waiting_for_room_is_woken_at_half_the_bounds() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let gate = SendGate::new(8, 1000);
        for _ in 0..8 {
            assert_eq!(gate.try_admit(1), Ok(true));
        }
        assert!(gate.poll_room(1, &mut cx).is_pending());
        for _ in 0..3 {
            gate.release(1);
        }
        assert_eq!(woken.0.load(Ordering::Relaxed), 0, "5 queued of 8");
        gate.release(1);
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "4 queued of 8");
        assert!(gate.poll_room(1, &mut cx).is_ready());
    }

    #[test]
    fn closing_wakes_and_fails_everyone() {
        let gate = SendGate::new(1, 10);
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Now));
        assert_eq!(gate.admit_or_ticket(1), Ok(Admission::Ticket(0)));
        gate.close();
        assert_eq!(
            gate.poll_ticket(0, 1, &mut cx()),
            Poll::Ready(Err(GateClosed::Closed))
        );
        assert_eq!(gate.try_admit(1), Err(GateClosed::Closed));
    }
}
