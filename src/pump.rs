//! The event pump shared by the group, replica and election runtimes: it
//! drives a transport from inside its actor.
//!
//! Each turn it takes in every operation the handles queued (then lets the
//! actor send them together: one batch when batching), reads one event,
//! and repeats while there are any; then it sends what can be sent,
//! retries sends after `TRY_AGAIN`, wakes at the actor's linger deadline,
//! and otherwise sleeps on the transport's and the operation queue's
//! wakers (no busy polling). When every handle is gone the member leaves.
//!
//! A view change ends the turn at once (the pump wakes itself and goes
//! on at the next one): what it set going on this thread (children
//! started in a lost member's place, subscribers of the view) runs
//! before this member's sends and the events behind it, instead of after
//! them. A failover then waits for the decision only, not also for a
//! round of multicasts (each a round trip to a daemon busy with the same
//! view change); the group runtime also sends nothing while it handles
//! the view change itself (its rule 3). Only when things run changes;
//! the order of events and of sends does not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::prelude::*;

use crate::transport::{TransportError, TransportEvent};

/// Events handled per turn before the actor lets its mailbox in.
const BUDGET: usize = 256;
/// Operations taken per turn. Taking one only moves it into the runtime's
/// queues, and the send gate bounds how many calls can wait (4096 by
/// default), so a turn takes what the handles queued since the last one:
/// the send queue then sees it all at once and fills its batches.
const OPS_BUDGET: usize = 4096;
/// Back-off before retrying a send the daemon answered with `TRY_AGAIN`
/// when no event arrives to wake the runtime sooner.
const TRY_AGAIN_BACKOFF: Duration = Duration::from_millis(1);

/// What a runtime actor gives the pump.
pub(crate) trait Pumped: Actor<Context = Context<Self>> {
    /// An operation from a handle.
    type Op;
    /// The runtime's span ([`crate::spans::runtime`]), entered for every
    /// turn of the pump.
    fn span(&self) -> &tracing::Span;
    /// Remembers the pump's waker, to wake it after queueing a send.
    fn set_pump_waker(&mut self, waker: Waker);
    /// The next operation from the handles; `None` when every handle is gone.
    fn poll_op(&mut self, task: &mut TaskContext<'_>) -> Poll<Option<Self::Op>>;
    /// Executes one operation.
    fn handle_op(&mut self, op: Self::Op, ctx: &mut Context<Self>);
    /// The operations waiting were all taken: send them together if the
    /// runtime batches (by default they go out when the pump is idle).
    fn ops_taken(&mut self, _ctx: &mut Context<Self>) {}
    /// Every handle is gone: leave, unless already leaving.
    fn handles_gone(&mut self, ctx: &mut Context<Self>);
    /// The next transport event.
    fn poll_event(
        &mut self,
        task: &mut TaskContext<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>>;
    /// Handles one transport event.
    fn handle_event(&mut self, event: TransportEvent, ctx: &mut Context<Self>);
    /// The transport failed: fail what waits and stop.
    fn close(&mut self, error: TransportError, ctx: &mut Context<Self>);
    /// Nothing more to read now: send what can be sent.
    fn idle(&mut self, ctx: &mut Context<Self>);
    /// Whether the last send met `TRY_AGAIN` and something waits to go.
    fn send_blocked(&self) -> bool;
    /// When held sends must go even if nothing else happens (a batch
    /// lingering for company), if any.
    fn linger_deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
}

/// The pump itself; spawn it on the actor's context in `started`.
pub(crate) struct EventPump {
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl EventPump {
    pub(crate) fn new() -> Self {
        EventPump {
            retry: None,
            linger: None,
        }
    }
}

impl<A: Pumped> ActorFuture<A> for EventPump {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let _turn = crate::stages::time(crate::stages::Stage::Pump);
        let span = act.span().clone();
        let _entered = span.enter();
        act.set_pump_waker(task.waker().clone());
        let mut budget = BUDGET;
        let mut ops_budget = OPS_BUDGET;
        while budget > 0 {
            let mut took_ops = false;
            while ops_budget > 0 {
                match act.poll_op(task) {
                    Poll::Ready(Some(op)) => {
                        ops_budget -= 1;
                        took_ops = true;
                        act.handle_op(op, ctx);
                    }
                    Poll::Ready(None) => {
                        act.handles_gone(ctx);
                        took_ops = true;
                        if ctx.state().stopping() {
                            return Poll::Ready(());
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
                if ctx.state().stopping() {
                    return Poll::Ready(());
                }
            }
            if took_ops {
                act.ops_taken(ctx);
                if ctx.state().stopping() {
                    return Poll::Ready(());
                }
            }
            budget = budget.saturating_sub(1);
            match act.poll_event(task) {
                Poll::Ready(Ok(event)) => {
                    let view_change = matches!(event, TransportEvent::ConfChg { .. });
                    act.handle_event(event, ctx);
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                    if view_change {
                        task.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Err(e)) => {
                    act.close(e, ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    act.idle(ctx);
                    if ctx.state().stopping() {
                        return Poll::Ready(());
                    }
                    self.arm_timers(act, task);
                    if ops_budget == 0 {
                        // Operations may be left, and nothing registered
                        // a wake-up for them: take them next turn.
                        task.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
            }
        }
        act.idle(ctx);
        if ctx.state().stopping() {
            return Poll::Ready(());
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

impl EventPump {
    /// Before sleeping: a retry after `TRY_AGAIN` and the linger deadline
    /// wake the pump if nothing else does sooner.
    fn arm_timers<A: Pumped>(&mut self, act: &A, task: &mut TaskContext<'_>) {
        if act.send_blocked() {
            let retry = self
                .retry
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(TRY_AGAIN_BACKOFF)));
            if retry.as_mut().poll(task).is_ready() {
                self.retry = None;
                task.waker().wake_by_ref();
            }
        } else {
            self.retry = None;
        }
        match act.linger_deadline() {
            Some(deadline) => {
                let linger = self
                    .linger
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if linger.deadline() != deadline {
                    linger.as_mut().reset(deadline);
                }
                if linger.as_mut().poll(task).is_ready() {
                    self.linger = None;
                    task.waker().wake_by_ref();
                }
            }
            None => self.linger = None,
        }
    }
}
