//! A joined CPG group as an actor registry.
//!
//! [`Group::start`] hands a [`Connection`] to a group runtime actor (the only
//! code that touches the transport) and returns a cheap, cloneable handle once
//! this member holds the group's state. Through the handle a process
//! registers local actors under group-wide names, looks names up, and sends
//! typed messages to named actors anywhere in the group
//! ([`Group::remote`]).

mod children;
mod core;
mod messages;
mod metrics;
mod replay;
mod runtime;

pub(crate) use self::replay::replay_registry;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use self::children::{child_name, Child, ChildContext, ExitReporter, Factories, Terminate};
pub use self::messages::RemoteFailure;
pub use self::metrics::{GroupMetrics, MetricsSnapshot};
use self::runtime::{GroupActor, Op, Outlets};
use crate::remote::{Handlers, RemoteAddr, RemoteMessage};
use crate::supervisor::{ChildStatus, SupervisionEvent, TreeSpec};
use crate::transport::{Connection, GroupName, Member, MemberChange, Reason, TransportError};

/// The outcome of a queued call: the encoded reply (`None` for a tell).
pub(crate) type CallOutcome = Result<Option<Vec<u8>>, CallError>;

/// Tuning of one group member.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Largest message this member sends or accepts, header included. It is
    /// capped by the transport's own atomic limit.
    pub max_message_size: usize,
    /// Messages multicast but not yet delivered back to this member. Keeps
    /// the daemon from queueing without bound (corosync rarely says
    /// `TRY_AGAIN` for small messages).
    pub send_window: usize,
    /// Capacity of the [`Group::subscribe`] channel; a slower subscriber
    /// misses events (and is told how many).
    pub event_capacity: usize,
    /// Record this member's ordered stream to this file (see
    /// [`crate::record`]), to replay its decisions offline.
    pub record_to: Option<std::path::PathBuf>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_message_size: 1 << 20,
            send_window: 64,
            event_capacity: 4096,
            record_to: None,
        }
    }
}

/// Something that happened in the group, at its position in the ordered
/// stream; every member sees the same sequence of these (except `Ready`,
/// which marks when this member got the state).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The transport failed; the group runtime has stopped.
    Closed {
        /// What the transport said.
        error: TransportError,
    },
}

/// Why a name left the registry on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameDropReason {
    /// The host left the group, for this confchg reason.
    HostLeft(Reason),
    /// Two partitions merged and the other side held the name.
    LostInMerge,
}

/// Why a remote call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The message or its result could not be encoded or decoded here.
    #[error("codec: {0}")]
    Codec(String),
    /// The group runtime stopped (left, or transport closed).
    #[error("group closed")]
    Closed,
    /// The transport refused the message (e.g. too large); nothing was sent.
    #[error("transport: {0}")]
    Transport(TransportError),
}

/// Why a group operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    Codec(String),
    /// The recording file could not be created; nothing was joined.
    #[error("recording: {0}")]
    Record(String),
    /// The supervision tree spec is invalid; nothing was sent.
    #[error("invalid tree spec: {0}")]
    InvalidSpec(String),
    /// Another member started a tree of this name with another spec first.
    /// Nothing runs here for it; fix the spec (or the name) and start again.
    #[error("tree refused: {0}")]
    TreeRefused(String),
}

/// A handle to this process's membership of one group. Clone freely; the
/// group runtime stops when [`Group::leave`] is called or the transport
/// closes.
#[derive(Clone)]
pub struct Group {
    ops: mpsc::UnboundedSender<Op>,
    supervision_events: broadcast::Sender<SupervisionEvent>,
    local: Member,
    name: GroupName,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<GroupEvent>,
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
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let recorder = match &config.record_to {
            Some(path) => Some(
                crate::record::Recorder::create(path, local)
                    .map_err(|e| GroupError::Record(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        GroupActor::start_with(
            Box::new(conn),
            ops_rx,
            config,
            Outlets {
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
                local,
                name,
                metrics,
                events,
            }),
            Ok(Err(e)) => Err(GroupError::Transport(e)),
            Err(_) => Err(GroupError::Closed),
        }
    }

    /// This member.
    pub fn local(&self) -> Member {
        self.local
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
    pub async fn lookup(&self, name: &str) -> Result<Option<Member>, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Lookup {
            name: name.to_owned(),
            done: tx,
        })?;
        rx.await.map_err(|_| GroupError::Closed)
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
    /// the children wherever the engine places them. Resolves when the start
    /// reaches its place in the order.
    pub async fn start_tree(
        &self,
        name: &str,
        spec: TreeSpec,
        factories: Factories,
    ) -> Result<(), GroupError> {
        spec.validate()
            .map_err(|e| GroupError::InvalidSpec(e.to_string()))?;
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

    /// Queues a call now; the receiver yields its outcome.
    pub(crate) fn call_now(
        &self,
        target: String,
        type_tag: &'static str,
        payload: Vec<u8>,
        want_reply: bool,
    ) -> Result<oneshot::Receiver<CallOutcome>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.op(Op::Call {
            target,
            type_tag,
            payload,
            want_reply,
            done: tx,
        })
        .map_err(|_| CallError::Closed)?;
        Ok(rx)
    }

    pub(crate) fn codec(&self) -> crate::wire::Codec {
        crate::wire::Codec::new(self.metrics.limit())
    }

    /// Queues `op` for the runtime now, so operations issued one after the
    /// other from a task enter the total order in that order even when their
    /// futures are awaited later or together.
    fn op(&self, op: Op) -> Result<(), GroupError> {
        self.ops.send(op).map_err(|_| GroupError::Closed)
    }
}
