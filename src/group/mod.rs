//! A joined CPG group as an actor registry.
//!
//! [`Group::start`] hands a [`Connection`] to a group runtime actor (the only
//! code that touches the transport) and returns a cheap, cloneable handle once
//! this member holds the group's state. Through the handle a process
//! registers local actors under group-wide names, looks names up, and sends
//! typed messages to named actors anywhere in the group
//! ([`Group::remote`]).

mod buffers;
mod children;
mod chunks;
mod core;
mod gate;
mod inbound;
mod inspect;
mod messages;
mod metrics;
mod op_queue;
mod remote_addr;
mod replay;
mod runtime;
mod send_queue;

pub use self::replay::replay;
/// What `crate::fuzzing` drives: the core, its receive pipeline and the
/// wire types of its messages, in one list so the harness's coupling to
/// this module stays visible.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz_access {
    pub(crate) use super::chunks::Reassembly;
    pub(crate) use super::core::{Command, GroupCore, Outgoing};
    pub(crate) use super::inbound::{handle_envelope, receive, unpack, Handled};
    pub(crate) use super::messages::{
        Announce, RegistryOp, Reply, Request, RequestRef, Snapshot, SupervisionMsg, SyncRequest,
    };
}

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

pub use self::children::{child_name, Child, ChildContext, ExitReporter, Factories, Terminate};
use self::gate::{Admission, GateClosed, SendGate};
pub use self::inspect::{
    GroupInspection, MemberInspection, QuorumInspection, RegisteredName, SlotInspection,
    SupervisionPosition, TreeInspection,
};
pub use self::messages::RemoteFailure;
pub(crate) use self::messages::RequestHead;
pub use self::metrics::{GroupMetrics, MetricsSnapshot};
pub use self::remote_addr::RemoteAddr;
use self::runtime::{GroupActor, Op, Outlets};
use crate::remote::{Handlers, RemoteMessage};
pub use crate::roster::Role;
use crate::supervisor::{ChildStatus, Refusal, SpecError, SupervisionEvent, TreeSpec};
use crate::transport::{
    went, write_view, Connection, GroupName, Member, MemberChange, Reason, TransportError,
};
use crate::wire::{Versions, WireError};

/// The outcome of a queued call: the encoded reply (`None` for a tell).
pub(crate) type CallOutcome = Result<Option<Vec<u8>>, CallError>;

/// Tuning of one group member.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Largest message this member sends or accepts, header included. A
    /// message larger than one multicast ([`GroupConfig::chunk_size`]) goes
    /// in pieces that are put back together on delivery, and sent again
    /// whole if a member joins between them; each member holds
    /// at most one such message under way per sender. Give every member
    /// the same limit: a member drops (and counts as malformed) a message
    /// above its own. Replicas and elections keep their own limit, one
    /// multicast ([`crate::replicated::ReplicaConfig`]).
    pub max_message_size: usize,
    /// Largest multicast this member makes, capped by the transport's
    /// atomic size (`cpg_max_atomic_msgsize_get`, about 1 MiB), so libcpg
    /// never fragments a message itself (its fragments fail with
    /// `CS_ERR_INTERRUPT` on a membership change). Larger messages go in
    /// pieces of this size. The default, 256 KiB, pipelines better than
    /// pieces of the whole atomic size (BENCHMARKS.md, large messages).
    pub chunk_size: usize,
    /// Multicasts made but not yet delivered back to this member (a batch
    /// counts once). Keeps the daemon from queueing without bound (corosync
    /// rarely says `TRY_AGAIN` for small messages), and this member
    /// dispatching while it sends.
    pub send_window: usize,
    /// The same bound in bytes of those multicasts (one multicast always
    /// goes when none is in flight): what the daemon holds for this member,
    /// and what a message just queued waits behind. The default, 4 MiB,
    /// is 64 multicasts of 64 KiB; it mostly bounds the pieces of large
    /// messages (16 of 256 KiB).
    pub send_window_bytes: usize,
    /// Messages that callers may queue for multicast beyond the window;
    /// past it `RemoteAddr::tell`/`send` wait their turn and
    /// `RemoteAddr::try_tell` returns [`CallError::WouldBlock`].
    pub send_queue_messages: usize,
    /// The same bound in bytes of encoded messages (a single message larger
    /// than this still goes, alone).
    pub send_queue_bytes: usize,
    /// How small messages are packed into one multicast.
    pub batch: BatchConfig,
    /// Multicasts of at least this many bytes (a lone message, a batch, or
    /// a piece of a larger message) travel compressed with LZ4 when that
    /// makes them smaller; `None` never compresses. Only once every member
    /// speaks a protocol version that reads compressed frames
    /// ([`crate::wire::COMPRESSION_VERSION`]): in a group with a member of
    /// an older build, everything goes as it is. Only what an older build
    /// could not read anyway is ever compressed (no announcement, no
    /// refusal notice), and a member opens a compressed frame only within
    /// [`GroupConfig::max_message_size`]. The default, 8 KiB: on the test
    /// cluster (one 2-core machine, CPU-bound) no gain showed below it;
    /// from it JSON-like data gained in some runs and not in others, and
    /// at 64 KiB gained in every run (1.07–2.4×); incompressible data costs
    /// the sender an LZ4 pass over its first 4 KiB
    /// ([`crate::wire::COMPRESSION_PROBE`]), then goes as it is. See
    /// BENCHMARKS.md, compression. Set `None` for payloads that never
    /// compress.
    pub compress_above: Option<usize>,
    /// Capacity of the [`Group::subscribe`] channel; a slower subscriber
    /// misses events (and is told how many).
    pub event_capacity: usize,
    /// Record this member's ordered stream to this file (see
    /// [`crate::record`]), to replay its decisions offline.
    pub record_to: Option<std::path::PathBuf>,
    /// The group's shared secret. With a key, every multicast carries a
    /// MAC bound to this member and the group, and a delivery without a
    /// valid one is dropped before it is decoded (counted in
    /// [`MetricsSnapshot::dropped_unauthenticated`]); a process without
    /// the key is nobody. Every member needs the same key. `None` (the
    /// default) sends and accepts today's bytes unchanged. See
    /// [`crate::auth`]; a recording holds the verified messages without
    /// their MACs.
    pub key: Option<crate::auth::GroupKey>,
    /// Messages a joining member holds while it waits for the group state
    /// (everything delivered after its request, replayed once the state
    /// arrives). Past it the member drops them and asks again
    /// ([`GroupEvent::StateTransferRestarted`]) rather than grow.
    pub max_sync_buffer: usize,
    /// Calls of this member awaiting a reply. Past it a call fails at once
    /// with [`CallError::WouldBlock`] (its request still reaches the host;
    /// the reply is ignored).
    pub max_awaiting_replies: usize,
    /// How long a [`RemoteAddr::send`] waits for its outcome, from the
    /// call, before it fails with [`CallError::Timeout`]; an address can
    /// set its own ([`RemoteAddr::timeout`]). `None` (the default): as long
    /// as it takes — a call still ends if its host leaves or the group
    /// closes, but a host that never answers holds it forever.
    pub call_timeout: Option<Duration>,
    /// What this member does in the group. [`Role::Participant`] (the
    /// default) takes part in everything; [`Role::Observer`] sees the
    /// registry and the trees and can call any name, but registers no
    /// name and starts no tree ([`GroupError::Observer`]), and every member
    /// refuses such a message from it: for monitoring tools and clients
    /// that must never host or decide anything.
    pub role: Role,
    /// The protocol versions this member speaks: this build's
    /// ([`Versions::this_build`]). Only tests of version negotiation set
    /// another range (with [`crate::wire::NEXT_PROTOCOL_VERSION`], whose
    /// replies have a changed shape), to play a newer build.
    #[doc(hidden)]
    pub protocol_versions: Versions,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_message_size: 16 << 20,
            chunk_size: 256 << 10,
            send_window: 64,
            send_window_bytes: 4 << 20,
            send_queue_messages: 4096,
            send_queue_bytes: 16 << 20,
            batch: BatchConfig::default(),
            compress_above: Some(8 << 10),
            event_capacity: 4096,
            record_to: None,
            key: None,
            max_sync_buffer: 65_536,
            max_awaiting_replies: 65_536,
            call_timeout: None,
            role: Role::Participant,
            protocol_versions: Versions::this_build(),
        }
    }
}

/// Packing of messages queued close together into one multicast.
///
/// When a slot of the send window opens, the messages at the head of the
/// queue go out together, up to `max_messages` and `max_bytes`; the group
/// delivers them in the same order, at the same position between the same
/// two confchgs on every member. Under load the window fills and batches
/// form by themselves; `linger` also lets a lone message wait a little for
/// company when the window has room (it only delays the multicast, and
/// [`Group::flush`] cuts it short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Largest batch multicast, in bytes, capped by the transport's atomic
    /// message size (`max_atomic_msgsize_get`), so libcpg never fragments it.
    pub max_bytes: usize,
    /// Most messages in one batch; 1 turns batching off.
    pub max_messages: usize,
    /// How long a message may wait for others while the window has room.
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: 64 << 10,
            max_messages: 1024,
            linger: Duration::ZERO,
        }
    }
}

impl BatchConfig {
    /// One message per multicast.
    pub fn disabled() -> Self {
        BatchConfig {
            max_messages: 1,
            ..BatchConfig::default()
        }
    }
}

/// Something that happened in the group, at its position in the ordered
/// stream; every member sees the same sequence of these (except `Ready`,
/// which marks when this member got the state). Serializable for tools
/// (`acpg watch --json`); never sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum GroupEvent {
    /// The membership changed.
    ViewChanged {
        /// The view after the change, sorted.
        members: Vec<Member>,
        /// Who joined, and why.
        joined: Vec<MemberChange>,
        /// Who left, and why.
        left: Vec<MemberChange>,
    },
    /// `name` now lives on `host`.
    NameRegistered {
        /// The name.
        name: String,
        /// Its host.
        host: Member,
    },
    /// `host` released `name`.
    NameUnregistered {
        /// The name.
        name: String,
        /// Its former host.
        host: Member,
    },
    /// `name` left the registry without its host asking.
    NameDropped {
        /// The name.
        name: String,
        /// Its former host.
        host: Member,
        /// Why.
        reason: NameDropReason,
    },
    /// This member holds the group state (after joining, or after a merge).
    Ready,
    /// While waiting for the group state, this member delivered more than
    /// [`GroupConfig::max_sync_buffer`] messages after its request: it
    /// dropped them and asked for the state again (a newer one, so nothing
    /// is lost). Frequent restarts mean the group is busier than the cap
    /// allows; raise it.
    StateTransferRestarted {
        /// Messages buffered when it gave up.
        buffered: usize,
    },
    /// A process announced protocol versions that do not include the one
    /// the group speaks: it is no member, and none of its messages changes
    /// anything. Every member reports it at the same position; when
    /// `member` is this process, the group runtime stops
    /// ([`GroupError::Incompatible`]).
    MemberRefused {
        /// The refused process.
        member: Member,
        /// The versions it speaks.
        versions: Versions,
        /// The version the group speaks there.
        group_version: u8,
    },
    /// The group moved to another protocol version at this point of the
    /// stream: the highest every member speaks changed, because the last
    /// member that held it back left (or, for the first member, it
    /// founded the group).
    VersionChanged {
        /// The version spoken before; `None` when nobody was a member.
        from: Option<u8>,
        /// The version spoken from here on.
        to: u8,
    },
    /// The transport failed; the group runtime has stopped.
    Closed {
        /// What the transport said.
        error: TransportError,
    },
}

/// One line: `view [node1/1007, node3/1009]: node2/1008 left (node down)`,
/// `"journal" registered on node1/1007`.
impl std::fmt::Display for GroupEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupEvent::ViewChanged {
                members,
                joined,
                left,
            } => write_view(f, members, joined, left),
            GroupEvent::NameRegistered { name, host } => {
                write!(f, "{name:?} registered on {host}")
            }
            GroupEvent::NameUnregistered { name, host } => {
                write!(f, "{name:?} released by {host}")
            }
            GroupEvent::NameDropped { name, host, reason } => {
                write!(f, "{name:?} dropped from {host}: {reason}")
            }
            GroupEvent::Ready => f.write_str("ready: this member holds the group state"),
            GroupEvent::StateTransferRestarted { buffered } => write!(
                f,
                "state transfer restarted after {buffered} buffered messages"
            ),
            GroupEvent::MemberRefused {
                member,
                versions,
                group_version,
            } => write!(
                f,
                "{member} refused: it speaks {versions}, the group speaks v{group_version}"
            ),
            GroupEvent::VersionChanged { from: Some(v), to } => {
                write!(f, "protocol version v{v} -> v{to}")
            }
            GroupEvent::VersionChanged { from: None, to } => {
                write!(f, "protocol version v{to}")
            }
            GroupEvent::Closed { error } => write!(f, "closed: {error}"),
        }
    }
}

/// Why a name left the registry on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NameDropReason {
    /// The host left the group, for this confchg reason.
    HostLeft(Reason),
    /// Two partitions merged and the other side held the name.
    LostInMerge,
}

/// `host left (node down)`, `lost in a merge`.
impl std::fmt::Display for NameDropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameDropReason::HostLeft(reason) => write!(f, "host {}", went(*reason)),
            NameDropReason::LostInMerge => f.write_str("lost in a merge"),
        }
    }
}

/// Why a remote call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No actor was registered under the name when the request reached its
    /// place in the order. Retrying helps once someone registers it.
    #[error("no actor registered as {0:?}")]
    NoSuchName(String),
    /// The host left the group before replying; the request may or may not
    /// have been handled.
    #[error("host {host} left the group ({reason:?}) before replying")]
    HostLeft {
        /// The host that left.
        host: Member,
        /// The confchg reason.
        reason: Reason,
    },
    /// The host could not handle the message.
    #[error("remote failure: {0:?}")]
    Remote(RemoteFailure),
    /// The request was fenced to an incarnation of a supervised child that
    /// no longer runs (at the request's place in the order). Nothing was
    /// delivered; every member decided the same. Look the child up again.
    #[error("{name:?} no longer runs the incarnation with token {fence}")]
    StaleIncarnation {
        /// The child's registered name.
        name: String,
        /// The token the request was fenced to.
        fence: crate::supervisor::FencingToken,
    },
    /// The message or its result could not be encoded or decoded here.
    #[error("codec: {0}")]
    Codec(#[source] WireError),
    /// The group runtime stopped (left, or transport closed).
    #[error("group closed")]
    Closed,
    /// The transport refused the message (e.g. too large); nothing was sent.
    #[error("transport: {0}")]
    Transport(TransportError),
    /// The send queue is full (`GroupConfig::send_queue_*`), or callers
    /// wait in line for it. Nothing was queued; retry once
    /// [`Group::ready_to_send`] resolves, or use the awaiting variant.
    #[error("send queue full: would block")]
    WouldBlock,
    /// No outcome within the call's time limit ([`RemoteAddr::timeout`],
    /// [`GroupConfig::call_timeout`]). This member forgot the call and will
    /// ignore a late reply. If the call was still waiting for room in the
    /// send queue nothing was sent; otherwise the request may or may not be
    /// handled, so retry only what is safe to repeat.
    #[error("no outcome within {0:?}")]
    Timeout(Duration),
    /// The request went by while this member waited for the group state
    /// (partitions had just merged), so it cannot tell who hosted the name
    /// at that point or match a reply. The request may or may not have been
    /// handled; retry only what is safe to repeat.
    #[error("outcome unknown: the request went by while this member waited for the group state")]
    OutcomeUnknown,
}

/// Why a group operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Another member registered the name first in the total order. Nothing
    /// changed; retry with another name or after the owner releases it.
    #[error("name {name:?} is taken by {owner}")]
    NameTaken {
        /// The name.
        name: String,
        /// Who holds it.
        owner: Member,
    },
    /// The transport failed or refused the operation.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The group runtime has stopped; join again.
    #[error("group closed")]
    Closed,
    /// The operation's message could not be encoded.
    #[error("codec: {0}")]
    Codec(#[source] WireError),
    /// The recording file could not be created; nothing was joined.
    #[error("recording: {0}")]
    Record(String),
    /// The supervision tree spec is invalid; nothing was sent.
    #[error("invalid tree spec: {0}")]
    InvalidSpec(#[source] SpecError),
    /// The group refused the tree at its place in the order (another
    /// member started a tree of this name with another spec first, or the
    /// spec sent does not match its fingerprint). Nothing runs here for
    /// it; fix the spec (or the name) and start again.
    #[error("tree refused: {0}")]
    TreeRefused(#[source] Refusal),
    /// The spec names a worker kind this member has no factory for; nothing
    /// was sent. Usually a typo in the spec or in
    /// [`Factories::worker`]; a member that means to take part without
    /// hosting uses [`Group::start_tree_without_hosting`].
    #[error("tree {tree:?} names worker kind {kind:?}, and this member has no factory for it")]
    NoFactory {
        /// The tree.
        tree: String,
        /// The first kind (in order) without a factory.
        kind: String,
    },
    /// This member is an observer ([`Role::Observer`]): it registers no
    /// name and starts no tree. Nothing was sent.
    #[error("an observer registers no name and starts no tree")]
    Observer,
    /// The group speaks a protocol version this build does not: it refused
    /// this member where its announcement was delivered, and the group
    /// runtime stopped. Upgrade (or downgrade) this build to one that
    /// speaks `group_version`, or wait until the members that hold the
    /// group there are upgraded.
    #[error("the group speaks protocol v{group_version}; this build speaks {ours}")]
    Incompatible {
        /// What this build speaks.
        ours: Versions,
        /// What the group speaks.
        group_version: u8,
    },
}

/// A handle to this process's membership of one group. Clone freely; the
/// group runtime stops when [`Group::leave`] is called or the transport
/// closes.
#[derive(Clone)]
pub struct Group {
    ops: op_queue::OpSender<Op>,
    supervision_events: broadcast::Sender<SupervisionEvent>,
    gate: Arc<SendGate>,
    /// Envelope buffers the runtime gives back once multicast.
    buffers: Arc<buffers::BufferPool>,
    ids: Arc<AtomicU64>,
    local: Member,
    name: GroupName,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<GroupEvent>,
    call_timeout: Option<Duration>,
    role: Role,
    /// The protocol versions this member speaks.
    versions: Versions,
    /// Where calls record their duration ([`crate::telemetry`]).
    call_timers: crate::telemetry::CallTimers,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish()
    }
}

impl Group {
    /// Starts the group runtime on the current actix arbiter over `conn`,
    /// and returns once this member holds the group state (at once if it is
    /// the first member; after the state hand-over otherwise).
    pub async fn start<C: Connection>(conn: C, config: GroupConfig) -> Result<Group, GroupError> {
        let local = conn.local();
        let name = conn.group().clone();
        let metrics = Arc::new(GroupMetrics::default());
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (supervision_events, _) = broadcast::channel(config.event_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let (ops, ops_rx) = op_queue::op_queue();
        let call_timeout = config.call_timeout;
        let call_timers = crate::telemetry::CallTimers::new(&name, local);
        let role = config.role;
        let versions = config.protocol_versions;
        let recorder = crate::record::Recorder::for_config(
            config.record_to.as_deref(),
            local,
            crate::record::Protocol::Registry,
        )
        .map_err(GroupError::Record)?;
        let gate = Arc::new(SendGate::new(
            config.send_queue_messages,
            config.send_queue_bytes,
        ));
        let buffers = Arc::new(buffers::BufferPool::default());
        let conn = crate::auth::boxed(conn, config.key.as_ref(), metrics.unauthenticated_counter());
        GroupActor::start_with(
            conn,
            ops_rx,
            config,
            Outlets {
                gate: gate.clone(),
                buffers: buffers.clone(),
                metrics: metrics.clone(),
                events: events.clone(),
                supervision_events: supervision_events.clone(),
            },
            ready_tx,
            recorder,
        );
        match ready_rx.await {
            Ok(Ok(())) => Ok(Group {
                ops,
                supervision_events,
                gate,
                buffers,
                ids: Arc::new(AtomicU64::new(1)),
                local,
                name,
                metrics,
                events,
                call_timeout,
                role,
                versions,
                call_timers,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(GroupError::Closed),
        }
    }

    /// This member.
    pub fn local(&self) -> Member {
        self.local
    }

    /// What this member does in the group ([`GroupConfig::role`]).
    pub fn role(&self) -> Role {
        self.role
    }

    fn participant(&self) -> Result<(), GroupError> {
        match self.role {
            Role::Participant => Ok(()),
            Role::Observer => Err(GroupError::Observer),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &GroupName {
        &self.name
    }

    /// Counters of what this member received, sent and dropped.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// A stream of group events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<GroupEvent> {
        self.events.subscribe()
    }

    /// Registers `handlers` (a local actor and the message types it takes)
    /// under `name`, group-wide. Resolves when the registration reaches its
    /// place in the total order: first registration of a name wins on every
    /// member; later ones get [`GroupError::NameTaken`].
    pub async fn register<A>(&self, name: &str, handlers: Handlers<A>) -> Result<(), GroupError>
    where
        A: actix::Actor<Context = actix::Context<A>>,
    {
        self.participant()?;
        let (tx, rx) = oneshot::channel();
        self.op(Op::Register {
            name: name.to_owned(),
            endpoint: handlers.into_endpoint(),
            done: tx,
        })?;
        rx.await.map_err(|_| GroupError::Closed)?
    }

    /// Releases `name` if this member holds it. Resolves once the release
    /// has been multicast.
    pub async fn unregister(&self, name: &str) -> Result<(), GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Unregister {
            name: name.to_owned(),
            done: tx,
        })?;
        rx.await.map_err(|_| GroupError::Closed)?
    }

    /// Where `name` lives, as of the last message this member processed.
    ///
    /// Each member processes the ordered stream at its own pace, so right
    /// after another member's [`Group::register`] resolves, this member may
    /// not have reached that registration yet and still say `None`. To
    /// wait for a name, use [`Group::wait_for_name`] rather than polling
    /// this.
    pub async fn lookup(&self, name: &str) -> Result<Option<Member>, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Lookup {
            name: name.to_owned(),
            done: tx,
        })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// Resolves with the host of `name` once this member's registry holds
    /// it: at once if it already does, otherwise when its registration
    /// reaches this member in the order (or a state hand-over brings it).
    ///
    /// This is what to use after another member registers a name: its
    /// `register` resolves when the registration reaches *that* member, and
    /// [`Group::lookup`] here may still say `None` for a while. Nothing is
    /// missed between looking and waiting: the wait listens from before
    /// the look.
    ///
    /// Fails with [`GroupError::Closed`] if the group closes (this member
    /// leaves, or its transport fails) first. It waits as long as that
    /// takes: bound it with a timer (`tokio::time::timeout`) if the name
    /// may never come.
    pub async fn wait_for_name(&self, name: &str) -> Result<Member, GroupError> {
        let mut events = self.subscribe();
        if let Some(host) = self.lookup(name).await? {
            return Ok(host);
        }
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                // The runtime is gone (left) without a `Closed` event.
                () = self.ops.closed() => return Err(GroupError::Closed),
            };
            match event {
                Ok(GroupEvent::NameRegistered {
                    name: registered,
                    host,
                }) if registered == name => {
                    return Ok(host);
                }
                Ok(GroupEvent::Closed { .. }) | Err(broadcast::error::RecvError::Closed) => {
                    return Err(GroupError::Closed);
                }
                // A state hand-over installs names without an event each,
                // and a lagging receiver missed some: look again.
                Ok(GroupEvent::Ready) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(host) = self.lookup(name).await? {
                        return Ok(host);
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// Every registered name and its host.
    pub async fn names(&self) -> Result<Vec<(String, Member)>, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Names { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// The current view, sorted.
    pub async fn members(&self) -> Result<Vec<Member>, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Members { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// Starts (or joins) the supervision tree `name` on this member: the
    /// spec travels in the ordered stream, and the first spec of a name
    /// wins; a member that starts it with another spec gets
    /// [`GroupError::TreeRefused`]. `factories` build this member's share of
    /// the children wherever the engine places them: this member becomes a
    /// host of the tree, and the engine places children only on its hosts
    /// (a member that never starts the tree never hosts any of it).
    /// Resolves when this member's start has reached its place in the
    /// order and the tree runs with this spec: from then on this member
    /// hosts its share.
    ///
    /// Refused with [`GroupError::NoFactory`], before anything is sent, if
    /// the spec names a worker kind `factories` cannot build.
    pub async fn start_tree(
        &self,
        name: &str,
        spec: TreeSpec,
        factories: Factories,
    ) -> Result<(), GroupError> {
        spec.validate().map_err(GroupError::InvalidSpec)?;
        if let Some(kind) = spec.worker_kinds().into_iter().find(|k| !factories.has(k)) {
            return Err(GroupError::NoFactory {
                tree: name.to_owned(),
                kind,
            });
        }
        self.send_tree_start(name, spec, factories).await
    }

    /// Starts (or joins) the supervision tree `name` without hosting any of
    /// it: the tree runs on the members that start it with factories, and
    /// this member sees its state ([`Group::children`]) and can call its
    /// children by name. A child whose kind no member can build waits
    /// ([`SupervisionEvent::ChildWaitsForHost`]).
    pub async fn start_tree_without_hosting(
        &self,
        name: &str,
        spec: TreeSpec,
    ) -> Result<(), GroupError> {
        spec.validate().map_err(GroupError::InvalidSpec)?;
        self.send_tree_start(name, spec, Factories::new()).await
    }

    async fn send_tree_start(
        &self,
        name: &str,
        spec: TreeSpec,
        factories: Factories,
    ) -> Result<(), GroupError> {
        self.participant()?;
        let (tx, rx) = oneshot::channel();
        self.op(Op::StartTree {
            name: name.to_owned(),
            spec,
            factories,
            done: tx,
        })?;
        rx.await.map_err(|_| GroupError::Closed)?
    }

    /// Every child slot of every tree and its state, as of the last message
    /// this member processed (the same on every member at that point).
    pub async fn children(&self) -> Result<Vec<ChildStatus>, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Children { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// What this member sees of the group at one point of the ordered
    /// stream: the members with their roles and protocol versions, the
    /// processes not announced yet, the registry, every supervision tree
    /// with its slots (where each child runs, its incarnation and fencing
    /// token), quorum as the supervision engine knows it, and this
    /// member's counters. Every field holds at the same position (see
    /// [`GroupInspection`] for the rules). Observers can call it: it is
    /// what `acpg status` prints.
    pub async fn inspect(&self) -> Result<GroupInspection, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Inspect { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// A stream of supervision decisions (starts, exits, restarts,
    /// escalations, quorum) from now on.
    pub fn supervision_events(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.supervision_events.subscribe()
    }

    /// A typed address of the actor registered as `name`, wherever it runs.
    pub fn remote<M: RemoteMessage>(&self, name: &str) -> RemoteAddr<M> {
        RemoteAddr::new(self.clone(), name.to_owned())
    }

    /// Leaves the group cleanly (others see `Reason::Leave`) and stops the
    /// runtime.
    pub async fn leave(&self) -> Result<(), GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Leave { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)?
    }

    /// Multicasts every message queued so far without waiting for the
    /// batch linger; resolves once they have all been handed to the
    /// transport.
    pub async fn flush(&self) -> Result<(), GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Flush { done: tx })?;
        rx.await.map_err(|_| GroupError::Closed)
    }

    /// Resolves when the send queue has drained to half its bounds, so
    /// that `RemoteAddr::try_tell` of any message up to half the byte bound
    /// would not return [`CallError::WouldBlock`] (unless another caller
    /// takes the room first).
    pub async fn ready_to_send(&self) -> Result<(), GroupError> {
        std::future::poll_fn(|cx| self.gate.poll_room(0, cx))
            .await
            .map_err(|GateClosed::Closed| GroupError::Closed)
    }

    /// Messages and bytes callers queued that are not multicast yet.
    pub fn send_queue_len(&self) -> (usize, usize) {
        self.gate.queued()
    }

    /// The time limit of calls through a new [`RemoteAddr`].
    pub(crate) fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a call now, or takes its place in line for the send queue;
    /// either way its position among this process's calls is fixed here.
    /// The future yields the call's outcome.
    pub(crate) fn call(
        &self,
        id: u64,
        bytes: Vec<u8>,
        want_reply: bool,
    ) -> impl Future<Output = CallOutcome> + 'static {
        let queued = match self.gate.admit_or_ticket(bytes.len()) {
            Ok(Admission::Now) => Queued::Now(self.send_call(id, bytes, want_reply)),
            Ok(Admission::Ticket(ticket)) => Queued::Later(InLine {
                group: self.clone(),
                ticket: Some(ticket),
                id,
                bytes,
                want_reply,
            }),
            Err(GateClosed::Closed) => Queued::Now(Err(CallError::Closed)),
        };
        async move {
            let outcome = match queued {
                Queued::Now(outcome) => outcome?,
                Queued::Later(mut in_line) => in_line.admitted().await?,
            };
            outcome.await
        }
    }

    /// Queues a call that nobody awaits, if the send queue has room and
    /// nobody waits for it; [`CallError::WouldBlock`] otherwise.
    pub(crate) fn try_forget(&self, id: u64, bytes: Vec<u8>) -> Result<(), CallError> {
        match self.gate.try_admit(bytes.len()) {
            Ok(true) => self.push_call(id, bytes, false, None),
            Ok(false) => Err(CallError::WouldBlock),
            Err(GateClosed::Closed) => Err(CallError::Closed),
        }
    }

    fn send_call(
        &self,
        id: u64,
        bytes: Vec<u8>,
        want_reply: bool,
    ) -> Result<PendingOutcome, CallError> {
        let (tx, rx) = oneshot::channel();
        self.push_call(id, bytes, want_reply, Some(tx))?;
        Ok(PendingOutcome {
            rx,
            forget: want_reply.then(|| (self.ops.downgrade(), id)),
        })
    }

    fn push_call(
        &self,
        id: u64,
        bytes: Vec<u8>,
        want_reply: bool,
        done: Option<oneshot::Sender<CallOutcome>>,
    ) -> Result<(), CallError> {
        let len = bytes.len();
        let op = Op::Call {
            id,
            bytes,
            want_reply,
            done,
        };
        if self.ops.send(op).is_err() {
            self.gate.release(len);
            return Err(CallError::Closed);
        }
        Ok(())
    }

    /// A call's duration starts now.
    pub(crate) fn call_timer(&self) -> crate::telemetry::CallTimer {
        self.call_timers.start()
    }

    /// Where an envelope of `len` bytes is written (`buffers`).
    pub(crate) fn envelope_buffer(&self, len: usize) -> Vec<u8> {
        self.buffers.take(len)
    }

    pub(crate) fn codec(&self) -> crate::wire::Codec {
        crate::wire::Codec::new(self.metrics.limit())
            .reading(self.versions)
            .at_version(self.metrics.version())
    }

    /// Queues `op` for the runtime now, so operations issued one after the
    /// other from a task enter the total order in that order even when their
    /// futures are awaited later or together.
    fn op(&self, op: Op) -> Result<(), GroupError> {
        self.ops.send(op).map_err(|_| GroupError::Closed)
    }
}

enum Queued {
    Now(Result<PendingOutcome, CallError>),
    Later(InLine),
}

/// The outcome of a queued call, to come. Dropped before it comes (a
/// timeout, or a caller that gave up), it has the runtime forget a call
/// awaiting a reply, so nothing is kept for a reply nobody reads. It does
/// not keep the membership alive (a weak handle to the runtime).
struct PendingOutcome {
    rx: oneshot::Receiver<CallOutcome>,
    /// Whom to tell, and which call, if it is dropped unresolved; `None`
    /// for a tell or once resolved.
    forget: Option<(op_queue::WeakOpSender<Op>, u64)>,
}

impl Future for PendingOutcome {
    type Output = CallOutcome;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<CallOutcome> {
        let outcome = std::task::ready!(std::pin::Pin::new(&mut self.rx).poll(cx));
        self.forget = None;
        Poll::Ready(outcome.unwrap_or(Err(CallError::Closed)))
    }
}

impl Drop for PendingOutcome {
    fn drop(&mut self) {
        if let Some((ops, id)) = self.forget.take() {
            let _ = ops.send(Op::Forget { id });
        }
    }
}

/// A call waiting in line for the send queue. Dropped before its turn, it
/// gives its place up (the message is not sent).
struct InLine {
    group: Group,
    ticket: Option<u64>,
    id: u64,
    bytes: Vec<u8>,
    want_reply: bool,
}

impl InLine {
    async fn admitted(&mut self) -> Result<PendingOutcome, CallError> {
        let Some(ticket) = self.ticket else {
            return Err(CallError::Closed);
        };
        let len = self.bytes.len();
        std::future::poll_fn(|cx| match self.group.gate.poll_ticket(ticket, len, cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Pending,
        })
        .await
        .map_err(|GateClosed::Closed| CallError::Closed)?;
        self.ticket = None;
        let bytes = std::mem::take(&mut self.bytes);
        self.group.send_call(self.id, bytes, self.want_reply)
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.group.gate.cancel(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_events_read_as_short_lines() {
        let (a, b, c) = (
            Member::new(1, 1007),
            Member::new(2, 1008),
            Member::new(3, 1009),
        );
        let view = GroupEvent::ViewChanged {
            members: vec![a, c],
            joined: vec![],
            left: vec![MemberChange {
                member: b,
                reason: Reason::NodeDown,
            }],
        };
        assert_eq!(
            view.to_string(),
            "view [node1/1007, node3/1009]: node2/1008 left (node down)"
        );
        let grown = GroupEvent::ViewChanged {
            members: vec![a, b],
            joined: vec![MemberChange {
                member: b,
                reason: Reason::Join,
            }],
            left: vec![],
        };
        assert_eq!(
            grown.to_string(),
            "view [node1/1007, node2/1008]: node2/1008 joined"
        );
        let registered = GroupEvent::NameRegistered {
            name: "journal".into(),
            host: a,
        };
        assert_eq!(
            registered.to_string(),
            r#""journal" registered on node1/1007"#
        );
        let dropped = GroupEvent::NameDropped {
            name: "journal".into(),
            host: b,
            reason: NameDropReason::HostLeft(Reason::ProcDown),
        };
        assert_eq!(
            dropped.to_string(),
            r#""journal" dropped from node2/1008: host left (process down)"#
        );
        assert_eq!(NameDropReason::LostInMerge.to_string(), "lost in a merge");
        assert_eq!(
            GroupEvent::Ready.to_string(),
            "ready: this member holds the group state"
        );
        let closed = GroupEvent::Closed {
            error: TransportError::TryAgain,
        };
        assert!(closed.to_string().starts_with("closed: flow control"));
    }
}
