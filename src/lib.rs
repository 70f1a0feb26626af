//! actix-cpg: an actix actor registry, replicated state machines and leader
//! elections spread across every process of a Corosync CPG (closed process
//! group).
//!
//! # The model
//!
//! CPG gives *virtual synchrony*: every member of a group sees the same
//! sequence of events — messages in one total (agreed) order, and
//! membership changes (with a reason: `Join`, `Leave`, `NodeDown`, `NodeUp`,
//! `ProcDown`) at the same position among them. Any state that is a pure
//! function of that stream is identical on every member without any extra
//! coordination. actix-cpg builds on that one fact:
//!
//! - a group is an **actor registry**: registering a name is an ordered
//!   event, and the first registration of a name in the order wins on every
//!   member; names of a member that leaves vanish everywhere at the same
//!   point of the stream;
//! - a [`RemoteAddr`] sends a typed actix message (serde + bincode) to a
//!   named actor wherever it runs, and awaits its reply;
//! - a member that joins late gets the registry as it stood at its request's
//!   position in the order, then replays what followed;
//! - a [`Replica`] of a [`StateMachine`] lives on every member of its group
//!   and applies commands in the total order, only while the group is a
//!   primary component; joiners get a snapshot ([`replicated`]);
//! - an [`Election`] names one leader per quorate view, with a fencing
//!   [`Epoch`] that only grows ([`election`]);
//! - a **supervision tree** ([`TreeSpec`]: Erlang/OTP supervisors of
//!   workers, with restart strategies, intensities and placement policies)
//!   started with [`Group::start_tree`] runs its children across the
//!   members: the supervision engine ([`supervisor`]) decides from the
//!   ordered stream where each child runs and when it restarts — a member
//!   leaving or its node going down restarts its children elsewhere, on
//!   every member alike — and each incarnation carries a [`FencingToken`]
//!   so a call to a stale one is refused.
//!
//! ```text
//!  examples/ tests/              users (kv_store, leader_election, demo)
//!  replicated · election         Replica, Election             (each: actix
//!  group (registry, calls)       Group, RemoteAddr, Handlers    runtime over
//!                                                                a pure core)
//!  wire                          versioned envelope, bincode, size limits
//!  transport                     Connection trait: `corosync` | `sim`
//! ```
//!
//! Sending fast: a member keeps at most `GroupConfig::send_window`
//! multicasts in flight until they come back to it, packs small messages
//! queued together into one multicast ([`BatchConfig`]), and bounds what
//! callers may queue (`GroupConfig::send_queue_*`): past it
//! [`RemoteAddr::try_tell`] returns [`CallError::WouldBlock`] and
//! [`RemoteAddr::tell`] waits its turn, so memory stays bounded however
//! fast a producer is. A message larger than one multicast
//! (`GroupConfig::chunk_size`) travels in pieces of the ordered stream and
//! is delivered whole at the place of its last piece; a member joining
//! between its pieces makes every member drop it and its sender send it
//! again, so large messages keep flowing while members come and go.
//!
//! A group, replica or election can have a [`GroupKey`]: then every
//! multicast carries a MAC bound to its CPG sender and the group, and a
//! process without the key is nobody — its messages are dropped before
//! anything decodes them ([`auth`]).
//!
//! The [`transport::sim`] backend is an in-process cluster with the same
//! semantics (and fault injection); the `corosync` feature adds
//! `transport::corosync`, the real thing.
//!
//! # Example
//!
//! Two processes of a simulated cluster: one hosts a counter under a
//! group-wide name, the other calls it. The message derives
//! [`RemoteMessage`](trait@RemoteMessage) with its wire tag (cargo feature `derive`; without it,
//! `impl RemoteMessage for Add { const TYPE_TAG: &'static str = "doc.Add.v1"; }`
//! does the same).
//!
//! ```
//! use actix::prelude::*;
//! use actix_cpg::transport::sim::SimCluster;
//! use actix_cpg::{Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage, Transport};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Message, Serialize, Deserialize, RemoteMessage)]
//! #[rtype(result = "u64")]
//! #[remote(tag = "doc.Add.v1")]
//! struct Add(u64);
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Actor for Counter {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<Add> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
//!         self.0 += n;
//!         self.0
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! actix::System::new().block_on(async {
//!     let cluster = SimCluster::new(2);
//!     let name = GroupName::new("counters")?;
//!     let a = Group::start(cluster.process(NodeId(1))?.join(&name)?, GroupConfig::default()).await?;
//!     let b = Group::start(cluster.process(NodeId(2))?.join(&name)?, GroupConfig::default()).await?;
//!
//!     a.register("counter", Handlers::new(Counter::default().start()).with::<Add>()).await?;
//!
//!     let counter = b.remote::<Add>("counter");
//!     assert_eq!(counter.send(Add(2)).await?, 2);
//!     assert_eq!(counter.send(Add(3)).await?, 5);
//!     assert_eq!(b.lookup("counter").await?, Some(a.local()));
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod auth;
pub mod election;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
mod incarnation;
pub mod kv;
mod outbox;
#[doc(hidden)]
pub mod probe;
mod pump;
mod quorum;
pub mod record;
pub mod remote;
pub mod replicated;
pub(crate) mod roster;
pub mod spans;
mod stable_hash;
#[doc(hidden)]
pub mod stages;
pub mod supervisor;
pub mod telemetry;
pub mod transport;
pub mod wire;

/// `#[derive(RemoteMessage)]` with `#[remote(tag = "...")]`: the trait's
/// impl with that wire tag (feature `derive`).
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use actix_cpg_macros::RemoteMessage;
pub use auth::GroupKey;
pub use election::{
    Election, ElectionConfig, ElectionError, ElectionEvent, ElectionInspection, ElectionStatus,
    Epoch, Leadership, GROUP_ELECTION,
};
pub use group::RemoteAddr;
pub use group::{
    child_name, BatchConfig, CallError, Child, ChildContext, ExitReporter, Factories, Group,
    GroupConfig, GroupError, GroupEvent, GroupInspection, MetricsSnapshot, NameDropReason,
    RemoteFailure, Role, Terminate,
};
pub use remote::{Handlers, RemoteMessage};
pub use replicated::{
    Delivery, Executed, PrimaryEpoch, RefusedCounts, Replica, ReplicaConfig, ReplicaError,
    ReplicaEvent, ReplicaInspection, ReplicaObserver, ReplicaStatus, StateId, StateMachine,
};
pub use supervisor::{
    ChildSpec, ChildStatus, FencingToken, Placement, PlacementPolicy, QuorumPolicy, RestartType,
    Shutdown, SlotStatus, Strategy, SupervisionEvent, SupervisorSpec, TreeSpec,
};
pub use transport::{
    Connection, GroupName, Member, MemberChange, NodeId, Reason, Transport, TransportError,
    TransportEvent,
};
