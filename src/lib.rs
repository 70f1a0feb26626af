//! actix-cpg: an actix actor registry, supervision tree and replicated state
//! spread across every process of a Corosync CPG (closed process group).
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod group;
pub mod remote;
pub mod testing;
pub mod transport;
pub mod wire;

pub use group::{
    CallError, Group, GroupConfig, GroupError, GroupEvent, MetricsSnapshot, NameDropReason,
    RemoteFailure,
};
pub use remote::{Handlers, RemoteAddr, RemoteMessage};
pub use transport::{
    Connection, GroupName, Member, MemberChange, NodeId, Reason, Transport, TransportError,
    TransportEvent,
};
