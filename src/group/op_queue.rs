//! The queue of operations from a group's handles to its runtime: one
//! mutex-guarded `VecDeque`, which the runtime empties in one swap per
//! pump turn instead of one channel operation per message.
//!
//! ```text
//!  handles: send(op) ──► lock, push, take the runtime's waker ──► wake (once per turn)
//!  runtime: poll_recv ── taken empty? ── lock, swap the queue with `taken` ──► pop
//!                              └─ no ──► pop (no lock)
//! ```
//!
//! Rules (those of an unbounded channel, which this replaces):
//!
//! 1. **Order.** Operations come out in the order they went in; every
//!    operation of a group takes this one queue, so a registration, a
//!    call and a flush issued one after the other stay in that order.
//! 2. **End.** Once every sender is gone the receiver gets what was
//!    queued, then `None`. Once the receiver is gone `send` fails and
//!    hands the operation back; what was queued is dropped.
//! 3. **Weak senders** ([`WeakOpSender`]) do not keep the runtime alive:
//!    they send only while a strong sender exists.
//! 4. **Wake-ups.** A send wakes the runtime only if it is waiting (its
//!    waker is taken by the first send after it went to sleep), so a
//!    producer that queues many operations between two turns wakes it once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's waker while it waits for an operation.
    waker: Option<Waker>,
    /// Strong senders alive.
    senders: usize,
    receiver_alive: bool,
    /// Waiters for the receiver's end ([`OpSender::closed`]).
    closed_wakers: Vec<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rule 2 and 4: pushes `op` unless the receiver is gone.
    fn push(&self, op: T) -> Result<(), T> {
        let mut s = self.lock();
        if !s.receiver_alive {
            return Err(op);
        }
        s.queue.push_back(op);
        let waker = s.waker.take();
        drop(s);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

/// A new queue: its first sender and its receiver.
pub(crate) fn op_queue<T>() -> (OpSender<T>, OpReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_alive: true,
            closed_wakers: Vec::new(),
        }),
    });
    (
        OpSender {
            shared: shared.clone(),
        },
        OpReceiver {
            shared,
            taken: VecDeque::new(),
        },
    )
}

/// The handles' side; clones count as senders until dropped.
pub(crate) struct OpSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> OpSender<T> {
    /// Queues `op`; hands it back if the receiver is gone.
    pub(crate) fn send(&self, op: T) -> Result<(), T> {
        self.shared.push(op)
    }

    /// A sender that does not count (rule 3).
    pub(crate) fn downgrade(&self) -> WeakOpSender<T> {
        WeakOpSender {
            shared: self.shared.clone(),
        }
    }

    /// Resolves once the receiver is gone.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.shared.lock();
            if !s.receiver_alive {
                return Poll::Ready(());
            }
            // One waker per task: a future polled again, or made again in a
            // loop, does not pile up wakers.
            if !s.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                s.closed_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl<T> Clone for OpSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        OpSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for OpSender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders = s.senders.saturating_sub(1);
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A sender that does not keep the queue open (rule 3).
pub(crate) struct WeakOpSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> WeakOpSender<T> {
    /// Queues `op` if a strong sender and the receiver are still alive.
    pub(crate) fn send(&self, op: T) -> Result<(), T> {
        if self.shared.lock().senders == 0 {
            return Err(op);
        }
        self.shared.push(op)
    }
}

/// The runtime's side.
pub(crate) struct OpReceiver<T> {
    shared: Arc<Shared<T>>,
    /// Operations taken from the shared queue in one swap, not yet handed
    /// out (read without the lock).
    taken: VecDeque<T>,
}

impl<T> OpReceiver<T> {
    /// The next operation; `None` once every sender is gone and nothing is
    /// left (rule 2).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(op) = self.taken.pop_front() {
            return Poll::Ready(Some(op));
        }
        let mut s = self.shared.lock();
        // `taken` is empty: the swap leaves the shared queue empty, and
        // both deques keep their capacity.
        std::mem::swap(&mut s.queue, &mut self.taken);
        if let Some(op) = self.taken.pop_front() {
            return Poll::Ready(Some(op));
        }
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        let replaced = match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            slot => slot.replace(cx.waker().clone()),
        };
        drop(s);
        // A waker is dropped outside the lock: nothing it owns can reach
        // this queue while it is held.
        drop(replaced);
        Poll::Pending
    }
}

impl<T> Drop for OpReceiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver_alive = false;
        let queued = std::mem::take(&mut s.queue);
        let wakers = std::mem::take(&mut s.closed_wakers);
        drop(s);
        // Dropped outside the lock: an operation's drop may wake others.
        drop(queued);
        for w in wakers {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl futures::task::ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(count.clone());
        (count, waker)
    }

    #[test]
    fn operations_come_out_in_order_across_swaps() {
        let (tx, mut rx) = op_queue();
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        tx.send(3).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(3)));
        assert!(rx.poll_recv(&mut cx).is_pending());
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_per_sleep() {
        let (tx, mut rx) = op_queue();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "one wake for five sends"
        );
        for i in 0..5 {
            assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(i)));
        }
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(9).unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_last_sender_gone_ends_the_queue_after_what_was_queued() {
        let (tx, mut rx) = op_queue();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let second = tx.clone();
        let weak = tx.downgrade();
        tx.send(1).unwrap();
        drop(tx);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert!(rx.poll_recv(&mut cx).is_pending(), "a clone is alive");
        weak.send(2).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert!(rx.poll_recv(&mut cx).is_pending());
        let before = count.0.load(Ordering::Relaxed);
        drop(second);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            before + 1,
            "woken to see the end"
        );
        assert_eq!(weak.send(3), Err(3), "a weak sender alone sends nothing");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn the_receiver_gone_fails_sends_and_wakes_closed_waiters() {
        let (tx, rx) = op_queue::<u32>();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        {
            let mut closed = std::pin::pin!(tx.closed());
            assert!(closed.as_mut().poll(&mut cx).is_pending());
            assert!(closed.as_mut().poll(&mut cx).is_pending());
        }
        let mut closed = std::pin::pin!(tx.closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "one waker per task");
        assert!(closed.as_mut().poll(&mut cx).is_ready());
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(tx.downgrade().send(3), Err(3));
    }
}
