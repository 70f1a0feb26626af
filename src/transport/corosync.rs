//! The real backend: one CPG handle per group, over a corosync daemon.
//!
//! ```text
//!   poll_event()                                   libcpg / libquorum
//!   ────────────                                   ──────────────────
//!   inbox empty? ── yes ──► AsyncFd readable? ──► cpg_dispatch(ONE_NONBLOCKING) × up to 64 / 256 KiB
//!        │ no                  │ (tokio reactor)        │ calls on_deliver / on_confchg /
//!        ▼                     ▼                        │ on_totem / on_quorum, each of which
//!   pop an event    TRY_AGAIN: clear_ready, loop         │ copies its arguments into an owned
//!                                                       ▼ event and pushes it into
//!                                        ROUTES[context key] = this connection's inbox
//! ```
//!
//! Why it is built this way:
//!
//! - libcpg callbacks are plain `fn` pointers, so they cannot capture the
//!   connection. Right after `initialize` the handle's context is set to a
//!   process-unique key, and the callbacks find their inbox in a global
//!   `DashMap` by that key. (The context argument of rust-corosync 3.2's
//!   `initialize` is the address of a stack slot, so it is useless.)
//! - rust-corosync runs every callback while holding a global mutex, so a
//!   callback never calls into libcpg, never drops a handle and never panics:
//!   it copies the bytes (they point into libcpg's buffer) and returns.
//! - Dispatch only runs from [`Connection::poll_event`], on the caller's
//!   thread, when tokio says the fd is readable and the inbox is empty.
//!   It takes events one at a time (`DispatchFlags::OneNonblocking`)
//!   until the inbox holds 64 events or 256 KiB of deliveries, or libcpg
//!   has none left; the fd's readiness is cleared only in that last case.
//!   So a backlog beyond that stays in libcpg's shared-memory ring and the
//!   daemon, as it does for a client that handles each delivery inside
//!   its callback. Draining everything at
//!   once (`DispatchFlags::All`) copied the whole backlog into the inbox:
//!   a member that fell behind grew its heap by megabytes, every copy
//!   into fresh pages (BENCHMARKS.md, run S). A client that stops polling
//!   makes the *daemon* buffer its deliveries, so callers must keep
//!   polling while they send.
//! - libqb IPC is not thread-safe: a connection is used from one thread.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use rust_corosync::{cpg, quorum, CsError, DispatchFlags, TrackFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{
    Connection, FlowControl, GroupName, Member, MemberChange, NodeId, QuorumState, Reason, RingId,
    Transport, TransportError, TransportEvent,
};

/// Events copied out of callbacks, waiting for `poll_event`.
type Inbox = Arc<Mutex<VecDeque<TransportEvent>>>;

/// Context key → inbox of the connection whose handles carry that key (the
/// CPG handle and the quorum handle of one connection share a key).
static ROUTES: LazyLock<DashMap<u64, Inbox>> = LazyLock::new(DashMap::new);

/// Source of context keys; 0 is never handed out.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Most events one readiness of the fd moves from libcpg into the inbox.
const INBOX_EVENTS: usize = 64;
/// Delivered bytes in the inbox after which the rest waits in libcpg's
/// ring until the runtime took these.
const INBOX_BYTES: usize = 256 << 10;
/// How long `join` keeps retrying `cpg_join` while the daemon answers
/// `TRY_AGAIN` (it does so while the ring is still forming).
const JOIN_RETRY_FOR: Duration = Duration::from_secs(2);
const JOIN_RETRY_EVERY: Duration = Duration::from_millis(20);

/// The corosync backend: a cheap factory whose [`Transport::join`] opens a
/// fresh CPG connection to the daemon of this network namespace.
///
/// `join` must run inside a tokio runtime with I/O enabled (an actix
/// `System` or `Arbiter` qualifies): the connection registers its file
/// descriptors with that runtime's reactor, and must then be polled on it.
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_cpg::transport::TransportError> {
/// use actix_cpg::transport::{corosync::Corosync, next_event, Connection, GroupName, Transport};
///
/// let mut conn = Corosync::new().join(&GroupName::new("my-group")?)?;
/// conn.mcast(b"hello")?;
/// loop {
///     println!("{:?}", next_event(&mut conn).await?);
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Corosync {
    track_quorum: bool,
}

impl Default for Corosync {
    fn default() -> Self {
        Self::new()
    }
}

impl Corosync {
    /// A factory with default settings: quorum notifications on.
    pub fn new() -> Self {
        Corosync { track_quorum: true }
    }

    /// Whether each connection also opens the quorum service and emits
    /// [`TransportEvent::Quorum`] (default `true`). Without it a connection
    /// uses one daemon connection instead of two.
    pub fn track_quorum(mut self, on: bool) -> Self {
        self.track_quorum = on;
        self
    }
}

impl Transport for Corosync {
    type Connection = CorosyncConnection;

    fn join(&self, group: &GroupName) -> Result<CorosyncConnection, TransportError> {
        CorosyncConnection::open(group, self.track_quorum)
    }
}

/// A libqb IPC descriptor as tokio sees it. It does not own the fd: the
/// library handle does, and closes it in `finalize`.
#[derive(Debug)]
pub(crate) struct IpcFd(RawFd);

impl AsRawFd for IpcFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The quorum service of one connection.
struct QuorumLink {
    // Declared before `handle`: fields drop in order, so the fd leaves the
    // reactor before `quorum::Handle`'s Drop finalizes (and closes) it.
    fd: AsyncFd<IpcFd>,
    handle: quorum::Handle,
}

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Life {
    /// Joined; events flow.
    Open,
    /// `leave` was called; events flow until our own `Leave` confchg.
    Leaving,
    /// No further events: the reason, returned by every later call.
    Closed(String),
}

/// One process's membership of one CPG group, from [`Corosync::join`].
///
/// Dropping it leaves the group (the others see `ProcDown` unless
/// [`Connection::leave`] was called first, then `Leave`).
pub struct CorosyncConnection {
    // Field order is drop order, and it matters: each `AsyncFd` must leave
    // the reactor before the handle owning its fd is finalized (which closes
    // the fd). `Drop::drop` below runs first and removes the routes.
    cpg_fd: AsyncFd<IpcFd>,
    quorum: Option<QuorumLink>,
    cpg: cpg::Handle,
    inbox: Inbox,
    key: u64,
    group: GroupName,
    local: Member,
    max_message_size: usize,
    life: Life,
}

impl std::fmt::Debug for CorosyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorosyncConnection")
            .field("group", &self.group)
            .field("local", &self.local)
            .field("key", &self.key)
            .field("quorum", &self.quorum.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}

/// Removes a route on every early return of `open`.
struct RouteGuard(u64);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        ROUTES.remove(&self.0);
    }
}

impl CorosyncConnection {
    fn open(group: &GroupName, track_quorum: bool) -> Result<Self, TransportError> {
        // Checked first: without a reactor there is nothing to wait on, and
        // a daemon connection opened for nothing is a wasted round trip.
        if let Err(e) = tokio::runtime::Handle::try_current() {
            return Err(TransportError::Other(format!(
                "Corosync::join must be called inside a tokio runtime with I/O enabled \
                 (e.g. an actix System or #[tokio::main]): {e}"
            )));
        }

        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let inbox: Inbox = Arc::default();
        ROUTES.insert(key, Arc::clone(&inbox));
        let route_guard = RouteGuard(key);

        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(on_deliver),
            confchg_fn: Some(on_confchg),
            totem_confchg_fn: Some(on_totem_confchg),
        });
        let handle = cpg::initialize(&model, key).map_err(initialize_error)?;
        // Before anything can dispatch: the callbacks route by this key.
        cpg::context_set(&handle, key).map_err(|e| cs_error("cpg_context_set", e))?;
        let node = cpg::local_get(&handle).map_err(|e| cs_error("cpg_local_get", e))?;
        let max_message_size = cpg::max_atomic_msgsize_get(&handle)
            .map_err(|e| cs_error("cpg_max_atomic_msgsize_get", e))?
            as usize;
        let raw_fd = cpg::fd_get(&handle).map_err(|e| cs_error("cpg_fd_get", e))?;
        let cpg_fd = register(raw_fd, "cpg")?;

        join_with_retry(&handle, group)?;

        let quorum = if track_quorum {
            match open_quorum(key) {
                Ok(link) => Some(link),
                Err(e) => {
                    tracing::warn!(
                        group = %group,
                        "quorum service unavailable, going on without quorum notifications: {e}"
                    );
                    None
                }
            }
        } else {
            None
        };

        // Success: the route now lives as long as the connection.
        std::mem::forget(route_guard);
        let local = Member {
            node: NodeId(u32::from(node)),
            pid: std::process::id(),
        };
        tracing::debug!(group = %group, %local, max_message_size, "joined CPG group");
        Ok(CorosyncConnection {
            cpg_fd,
            quorum,
            cpg: handle,
            inbox,
            key,
            group: group.clone(),
            local,
            max_message_size,
            life: Life::Open,
        })
    }

    fn pop(&self) -> Option<TransportEvent> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Dispatches the quorum service if its fd is readable. Returns whether
    /// anything happened (so the caller looks at the inbox again).
    fn poll_quorum(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(link) = &self.quorum else {
            return false;
        };
        let failure = match link.fd.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Ok(mut guard)) => {
                match quorum::dispatch(&link.handle, DispatchFlags::All) {
                    Ok(()) => {
                        guard.clear_ready();
                        return true;
                    }
                    Err(e) => format!("quorum_dispatch failed: {e}"),
                }
            }
            Poll::Ready(Err(e)) => format!("polling the quorum fd failed: {e}"),
        };
        // Not fatal for the group: CPG has its own connection, and its
        // dispatch reports a dead daemon on its own.
        tracing::warn!(group = %self.group, "{failure}; going on without quorum notifications");
        self.quorum = None;
        true
    }

    /// Dispatches one CPG event if its fd is readable: `Ready(true)` if it
    /// did (or found nothing left and cleared the readiness: the caller
    /// polls again), `Ready(false)` if the connection just closed,
    /// `Pending` otherwise.
    fn poll_cpg(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let failure = match self.cpg_fd.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(mut guard)) => {
                probe::dispatch_begins();
                let dispatch = crate::stages::time(crate::stages::Stage::Dispatch);
                let dispatched = self.dispatch_some();
                drop(dispatch);
                match dispatched {
                    // Events were taken; more may wait behind them: the
                    // readiness stays.
                    Ok(true) => return Poll::Ready(true),
                    // Nothing left: wait for the fd again.
                    Ok(false) => {
                        guard.clear_ready();
                        return Poll::Ready(true);
                    }
                    Err(e) => format!(
                        "lost the connection to the corosync daemon (cpg_dispatch: {e}); \
                         the daemon stopped or was killed"
                    ),
                }
            }
            Poll::Ready(Err(e)) => format!("polling the CPG fd failed: {e}"),
        };
        tracing::warn!(group = %self.group, local = %self.local, "{failure}");
        self.life = Life::Closed(failure);
        Poll::Ready(false)
    }

    /// Takes events from libcpg one at a time until the inbox holds
    /// [`INBOX_EVENTS`] events or [`INBOX_BYTES`] bytes of deliveries, or
    /// libcpg has none left: `Ok(true)` if it stopped with events maybe
    /// left behind, `Ok(false)` if none is left.
    fn dispatch_some(&self) -> Result<bool, CsError> {
        let inbox = || self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut len, mut held) = (inbox().len(), 0);
        for _ in 0..INBOX_EVENTS {
            match cpg::dispatch(&self.cpg, DispatchFlags::OneNonblocking) {
                Ok(()) => {}
                Err(CsError::CsErrTryAgain) => return Ok(false),
                Err(e) => return Err(e),
            }
            // One message at most, so at most one event, at the back.
            let events = inbox();
            if events.len() > len {
                if let Some(TransportEvent::Deliver { bytes, .. }) = events.back() {
                    held += bytes.len();
                }
            }
            len = events.len();
            if held >= INBOX_BYTES {
                break;
            }
        }
        Ok(true)
    }

    fn closed_error(&self) -> Option<TransportError> {
        match &self.life {
            Life::Open => None,
            Life::Leaving => Some(TransportError::Closed(format!(
                "this connection left group {}",
                self.group
            ))),
            Life::Closed(why) => Some(TransportError::Closed(why.clone())),
        }
    }
}

impl Connection for CorosyncConnection {
    fn group(&self) -> &GroupName {
        &self.group
    }

    fn local(&self) -> Member {
        self.local
    }

    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        // libcpg would split a larger message with blocking calls that fail
        // if the membership changes midway; chunking is the caller's job.
        if bytes.len() > self.max_message_size {
            return Err(TransportError::MessageTooLarge {
                len: bytes.len(),
                max: self.max_message_size,
            });
        }
        cpg::mcast_joined(&self.cpg, cpg::Guarantee::TypeAgreed, bytes).map_err(|e| match e {
            CsError::CsErrTooBig => TransportError::MessageTooLarge {
                len: bytes.len(),
                max: self.max_message_size,
            },
            e => cs_error("cpg_mcast_joined", e),
        })
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<TransportEvent, TransportError>> {
        loop {
            if let Some(event) = self.pop() {
                probe::taken(&event);
                if self.life == Life::Leaving && is_own_leave(&event, self.local) {
                    // Our own Leave ends the view. corosync may still hand a
                    // leaver confchgs of the group (seen: another member's
                    // leave, with an empty member list), which belong to no
                    // view of ours: drop them.
                    self.life = Life::Closed(format!("left group {}", self.group));
                    self.inbox
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                }
                return Poll::Ready(Ok(event));
            }
            if let Life::Closed(why) = &self.life {
                return Poll::Ready(Err(TransportError::Closed(why.clone())));
            }
            // Both fds are polled every round so both wakers stay registered.
            let quorum_moved = self.poll_quorum(cx);
            match self.poll_cpg(cx) {
                Poll::Ready(_) => continue,
                Poll::Pending if quorum_moved => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn members(&self) -> Result<Vec<Member>, TransportError> {
        if let Life::Closed(why) = &self.life {
            return Err(TransportError::Closed(why.clone()));
        }
        let list = cpg::membership_get(&self.cpg, self.group.as_str())
            .map_err(|e| cs_error("cpg_membership_get", e))?;
        Ok(list.iter().map(member_of).collect())
    }

    fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn flow_control(&self) -> FlowControl {
        match cpg::flow_control_state_get(&self.cpg) {
            Ok(true) => FlowControl::Enabled,
            Ok(false) => FlowControl::Disabled,
            Err(e) => {
                // The trait has no error here; a dead daemon surfaces as
                // `Closed` from `poll_event`/`mcast` instead.
                tracing::debug!(group = %self.group, "cpg_flow_control_state_get failed: {e}");
                FlowControl::Disabled
            }
        }
    }

    fn leave(&mut self) -> Result<(), TransportError> {
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        cpg::leave(&self.cpg, self.group.as_str()).map_err(|e| cs_error("cpg_leave", e))?;
        self.life = Life::Leaving;
        Ok(())
    }
}

impl Drop for CorosyncConnection {
    fn drop(&mut self) {
        // Then the fields drop in declaration order: AsyncFds first, then
        // the handles, whose Drop finalizes them. No callback can run after
        // this point: callbacks only run inside our own dispatch calls.
        ROUTES.remove(&self.key);
    }
}

/// Registers a library handle's IPC fd with tokio. Whoever keeps the
/// returned `AsyncFd` must drop it before finalizing the handle.
pub(crate) fn register(fd: RawFd, what: &str) -> Result<AsyncFd<IpcFd>, TransportError> {
    // tokio panics (rather than erring) when the runtime was built without
    // its I/O driver; turn that into an error the caller can act on.
    let registered = std::panic::catch_unwind(|| {
        // SAFETY: `fd` is the open IPC socket of a library handle that
        // outlives the returned AsyncFd: the handle is finalized (and the fd
        // closed) only when it drops, and every owner declares the AsyncFd
        // before the handle so the AsyncFd drops first. libqb keeps the
        // same fd until `finalize`, and `IpcFd::as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(IpcFd(fd), Interest::READABLE) }
    });
    match registered {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(e)) => Err(TransportError::Other(format!(
            "cannot register the {what} fd with tokio: {e}"
        ))),
        Err(_) => Err(TransportError::Other(format!(
            "cannot register the {what} fd with tokio: the runtime has I/O disabled \
             (build it with enable_io or enable_all)"
        ))),
    }
}

fn join_with_retry(handle: &cpg::Handle, group: &GroupName) -> Result<(), TransportError> {
    let deadline = std::time::Instant::now() + JOIN_RETRY_FOR;
    loop {
        match cpg::join(handle, group.as_str()) {
            Ok(()) => return Ok(()),
            Err(CsError::CsErrTryAgain) if std::time::Instant::now() < deadline => {
                std::thread::sleep(JOIN_RETRY_EVERY);
            }
            Err(e) => return Err(cs_error("cpg_join", e)),
        }
    }
}

fn open_quorum(key: u64) -> Result<QuorumLink, String> {
    let model = quorum::ModelData::ModelV1(quorum::Model1Data {
        flags: quorum::Model1Flags::None,
        quorum_notification_fn: Some(on_quorum),
        nodelist_notification_fn: None,
    });
    let (handle, _quorum_type) =
        quorum::initialize(&model, key).map_err(|e| format!("quorum_initialize: {e}"))?;
    quorum::context_set(&handle, key).map_err(|e| format!("quorum_context_set: {e}"))?;
    let raw_fd = quorum::fd_get(&handle).map_err(|e| format!("quorum_fd_get: {e}"))?;
    let fd = register(raw_fd, "quorum").map_err(|e| e.to_string())?;
    quorum::trackstart(&handle, TrackFlags::Changes)
        .map_err(|e| format!("quorum_trackstart: {e}"))?;
    Ok(QuorumLink { fd, handle })
}

/// `cpg_initialize` fails when no daemon listens on this namespace's IPC
/// sockets; say so rather than print a bare error code.
fn initialize_error(e: CsError) -> TransportError {
    match e {
        CsError::CsErrAccess | CsError::CsErrSecurity => TransportError::Other(format!(
            "cpg_initialize: corosync refused this process ({e}); run as root or allow \
             this user in /etc/corosync/uidgid.d"
        )),
        CsError::CsErrNoMemory => TransportError::Other(format!("cpg_initialize: {e}")),
        e => TransportError::DaemonUnavailable(format!("cpg_initialize failed with {e}")),
    }
}

fn cs_error(op: &str, e: CsError) -> TransportError {
    match e {
        CsError::CsErrTryAgain => TransportError::TryAgain,
        CsError::CsErrLibrary | CsError::CsErrBadHandle => TransportError::Closed(format!(
            "{op}: lost the connection to the corosync daemon ({e})"
        )),
        e => TransportError::Other(format!("{op} failed: {e}")),
    }
}

fn is_own_leave(event: &TransportEvent, local: Member) -> bool {
    match event {
        TransportEvent::ConfChg { left, .. } => left.iter().any(|c| c.member == local),
        _ => false,
    }
}

fn member_of(a: &cpg::Address) -> Member {
    Member {
        node: NodeId(u32::from(a.nodeid)),
        pid: a.pid,
    }
}

/// Which list of a confchg an address came from.
#[derive(Clone, Copy)]
enum Side {
    Joined,
    Left,
}

fn change_of(a: &cpg::Address, side: Side) -> MemberChange {
    let reason = match a.reason {
        cpg::Reason::Join => Reason::Join,
        cpg::Reason::Leave => Reason::Leave,
        cpg::Reason::NodeDown => Reason::NodeDown,
        cpg::Reason::NodeUp => Reason::NodeUp,
        cpg::Reason::ProcDown => Reason::ProcDown,
        cpg::Reason::Undefined => {
            // Never seen from corosync 3.1; a departure of unknown cause is
            // treated as a crash so nothing it owned is silently lost.
            let guess = match side {
                Side::Joined => Reason::Join,
                Side::Left => Reason::ProcDown,
            };
            tracing::warn!(
                member = %member_of(a),
                "CPG reported an undefined reason; treating it as {guess:?}"
            );
            guess
        }
    };
    MemberChange {
        member: member_of(a),
        reason,
    }
}

// ---- callbacks -------------------------------------------------------------
//
// They run inside `cpg_dispatch`/`quorum_dispatch` while rust-corosync holds
// its global handle-table mutex: no libcpg calls except reading the context,
// no panics, no blocking beyond our inbox mutex.

fn route(key: Result<u64, CsError>, event: TransportEvent) {
    let Ok(key) = key else {
        tracing::warn!("corosync callback without a readable context; event dropped");
        return;
    };
    // Clone the Arc so no DashMap shard lock is held while pushing.
    let inbox = ROUTES.get(&key).map(|entry| Arc::clone(entry.value()));
    match inbox {
        Some(inbox) => inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(event),
        None => tracing::debug!(key, "corosync callback for a closed connection; dropped"),
    }
}

fn on_deliver(
    handle: &cpg::Handle,
    _group: String,
    nodeid: rust_corosync::NodeId,
    pid: u32,
    msg: &[u8],
    _msg_len: usize,
) {
    let event = TransportEvent::Deliver {
        from: Member {
            node: NodeId(u32::from(nodeid)),
            pid,
        },
        bytes: msg.to_vec(),
    };
    route(cpg::context_get(handle), event);
}

fn on_confchg(
    handle: &cpg::Handle,
    _group: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    let event = TransportEvent::ConfChg {
        members: members.iter().map(member_of).collect(),
        joined: joined.iter().map(|a| change_of(a, Side::Joined)).collect(),
        left: left.iter().map(|a| change_of(a, Side::Left)).collect(),
    };
    probe::confchg_called();
    route(cpg::context_get(handle), event);
}

fn on_totem_confchg(handle: &cpg::Handle, ring_id: cpg::RingId, nodes: Vec<rust_corosync::NodeId>) {
    let event = TransportEvent::TotemConfChg {
        ring_id: RingId {
            nodeid: NodeId(u32::from(ring_id.nodeid)),
            seq: ring_id.seq,
        },
        nodes: nodes.into_iter().map(|n| NodeId(u32::from(n))).collect(),
    };
    route(cpg::context_get(handle), event);
}

fn on_quorum(
    handle: &quorum::Handle,
    quorate: bool,
    ring_id: quorum::RingId,
    nodes: Vec<rust_corosync::NodeId>,
) {
    let event = TransportEvent::Quorum(QuorumState {
        quorate,
        ring_id: RingId {
            nodeid: NodeId(u32::from(ring_id.nodeid)),
            seq: ring_id.seq,
        },
        nodes: nodes.into_iter().map(|n| NodeId(u32::from(n))).collect(),
    });
    route(quorum::context_get(handle), event);
}

/// When this process's last confchg went through each stage of the
/// backend: for measuring where the time between a kill and a survivor
/// acting on it goes (the `failover` example's `--stages`). Off unless
/// [`probe::enable`] was called; then a confchg costs three clock reads,
/// and a dispatch one. Not part of the API.
#[doc(hidden)]
pub mod probe {
    use std::cell::Cell;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::{AtomicBool, Ordering, PoisonError, TransportEvent};

    static ON: AtomicBool = AtomicBool::new(false);
    static LAST: Mutex<Option<ConfChgStages>> = Mutex::new(None);

    thread_local! {
        static DISPATCH_BEGAN: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// The stages of one confchg, in the order it went through them.
    #[derive(Clone, Copy, Debug)]
    pub struct ConfChgStages {
        /// `cpg_dispatch` was called (the fd was readable and the
        /// connection's task ran).
        pub dispatch_began: Option<Instant>,
        /// libcpg called the confchg callback.
        pub callback: Instant,
        /// `poll_event` handed the event to its caller.
        pub taken: Option<Instant>,
    }

    /// Starts taking timestamps (for the whole process).
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// The stages of the last confchg, if any since [`enable`].
    pub fn last_confchg() -> Option<ConfChgStages> {
        *LAST.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn dispatch_begins() {
        if ON.load(Ordering::Relaxed) {
            DISPATCH_BEGAN.with(|c| c.set(Some(Instant::now())));
        }
    }

    pub(super) fn confchg_called() {
        if ON.load(Ordering::Relaxed) {
            let stages = ConfChgStages {
                dispatch_began: DISPATCH_BEGAN.with(Cell::get),
                callback: Instant::now(),
                taken: None,
            };
            *LAST.lock().unwrap_or_else(PoisonError::into_inner) = Some(stages);
        }
    }

    pub(super) fn taken(event: &TransportEvent) {
        if ON.load(Ordering::Relaxed) && matches!(event, TransportEvent::ConfChg { .. }) {
            if let Some(stages) = LAST.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                stages.taken.get_or_insert_with(Instant::now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_outside_a_tokio_runtime_is_a_clear_error() {
        let err = Corosync::new()
            .join(&GroupName::new("no-runtime").unwrap())
            .unwrap_err();
        match err {
            TransportError::Other(msg) => assert!(msg.contains("tokio runtime"), "{msg}"),
            other => panic!("unexpected error: {other:?}"),
        }
    }

    #[test]
    fn undefined_reason_is_mapped_defensively() {
        let a = cpg::Address {
            nodeid: rust_corosync::NodeId::from(2),
            pid: 7,
            reason: cpg::Reason::Undefined,
        };
        assert_eq!(change_of(&a, Side::Left).reason, Reason::ProcDown);
        assert_eq!(change_of(&a, Side::Joined).reason, Reason::Join);
        assert_eq!(change_of(&a, Side::Left).member, Member::new(2, 7));
    }

    #[test]
    fn try_again_maps_to_backpressure() {
        assert_eq!(
            cs_error("cpg_mcast_joined", CsError::CsErrTryAgain),
            TransportError::TryAgain
        );
        assert!(matches!(
            initialize_error(CsError::CsErrLibrary),
            TransportError::DaemonUnavailable(_)
        ));
    }
}
