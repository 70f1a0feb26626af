//! The CPG contract: join one group per connection, multicast bytes in agreed
//! order, and read one ordered stream of events.
//!
//! ```text
//!            mcast(bytes)                       poll_event()
//!  caller ───────────────► Connection ───────────────────────► caller
//!                              │   Deliver { from, bytes }   (agreed order,
//!                              │   ConfChg { members, joined, left }  same
//!                              │   TotemConfChg { ring_id, nodes }    on every
//!                              │   Quorum(QuorumState)               member)
//!                     backend: corosync (real daemon) | sim (in-process)
//! ```
//!
//! Every member, the sender included, receives every message, and every
//! member sees confchgs at the same position among the messages (virtual
//! synchrony). Both backends keep that promise; `harness/tests/conformance.rs`
//! checks they keep it alike.
//!
//! `Quorum` and `TotemConfChg` notifications come from the node's daemon,
//! not from the group's total order: they are local facts. A group-level
//! decision that needs them must put them into the ordered stream first.

#[cfg(feature = "corosync")]
#[cfg_attr(docsrs, doc(cfg(feature = "corosync")))]
pub mod corosync;
pub mod sim;

use std::fmt;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

/// Longest group name CPG accepts, in bytes (`CPG_MAX_NAME_LENGTH - 1`).
pub const MAX_GROUP_NAME_LEN: usize = 127;

/// A corosync node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// One process in a group: CPG names a member by `(nodeid, pid)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node the process runs on.
    pub node: NodeId,
    /// The process id on that node.
    pub pid: u32,
}

impl Member {
    /// A member from its node id and pid.
    pub const fn new(node: u32, pid: u32) -> Self {
        Member {
            node: NodeId(node),
            pid,
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.pid)
    }
}

/// Why a member appears in a confchg's joined or left list (`cpg_reason_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The process called `cpg_join`.
    Join,
    /// The process called `cpg_leave` (a clean exit).
    Leave,
    /// The member's node left the ring (daemon killed, link cut).
    NodeDown,
    /// The member's node came back into the ring (partition merged).
    NodeUp,
    /// The process died or closed its connection without leaving.
    ProcDown,
}

impl Reason {
    /// Whether a member that left for this reason crashed, as opposed to
    /// leaving on purpose. `Join`/`NodeUp` never appear in a left list.
    pub fn is_crash(self) -> bool {
        matches!(self, Reason::NodeDown | Reason::ProcDown)
    }
}

/// `join`, `leave`, `node down`, `node up`, `process down`.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Join => "join",
            Reason::Leave => "leave",
            Reason::NodeDown => "node down",
            Reason::NodeUp => "node up",
            Reason::ProcDown => "process down",
        })
    }
}

/// What a member did, for a reason: `joined`, `left`, or either with the
/// reason when it says more (`left (node down)`, `joined (node up)`).
/// `Join`/`NodeUp` appear only in joined lists, the others only in left
/// lists, so the reason tells which.
pub(crate) fn went(reason: Reason) -> &'static str {
    match reason {
        Reason::Join => "joined",
        Reason::Leave => "left",
        Reason::NodeDown => "left (node down)",
        Reason::NodeUp => "joined (node up)",
        Reason::ProcDown => "left (process down)",
    }
}

/// Members as a bracketed list: `[node1/1007, node2/1008]`.
pub(crate) struct MemberList<'a>(pub(crate) &'a [Member]);

impl fmt::Display for MemberList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, member) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{member}")?;
        }
        f.write_str("]")
    }
}

/// A view change in one line, as every event enum with a `ViewChanged`
/// prints it: `view [node1/1007, node3/1009]: node2/1008 left (node down)`.
pub(crate) fn write_view(
    f: &mut fmt::Formatter<'_>,
    members: &[Member],
    joined: &[MemberChange],
    left: &[MemberChange],
) -> fmt::Result {
    write!(f, "view {}", MemberList(members))?;
    for (i, change) in joined.iter().chain(left).enumerate() {
        f.write_str(if i == 0 { ": " } else { ", " })?;
        write!(f, "{change}")?;
    }
    Ok(())
}

/// A member in a confchg's joined or left list, with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberChange {
    /// Who joined or left.
    pub member: Member,
    /// Why.
    pub reason: Reason,
}

/// `node2/1007 left (node down)`, `node3/1009 joined`.
impl fmt::Display for MemberChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.member, went(self.reason))
    }
}

/// Totem ring identifier; `seq` only grows, so it can seed fencing epochs.
/// Ordered by `seq` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RingId {
    /// The ring sequence number.
    pub seq: u64,
    /// The node that formed the ring.
    pub nodeid: NodeId,
}

/// What the node's quorum service last said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumState {
    /// Whether this node's partition holds quorum.
    pub quorate: bool,
    /// The ring the notification belongs to.
    pub ring_id: RingId,
    /// The nodes of this node's partition.
    pub nodes: Vec<NodeId>,
}

/// One entry of a connection's ordered event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A message multicast by `from`, in agreed order.
    Deliver {
        /// The sending process.
        from: Member,
        /// The bytes it sent (an owned copy).
        bytes: Vec<u8>,
    },
    /// The group's membership changed.
    ConfChg {
        /// The whole view after the change, in the daemon's order.
        members: Vec<Member>,
        /// Who joined, and why.
        joined: Vec<MemberChange>,
        /// Who left, and why.
        left: Vec<MemberChange>,
    },
    /// The totem ring changed (a node-level fact, not ordered with messages).
    TotemConfChg {
        /// The new ring.
        ring_id: RingId,
        /// The nodes on it.
        nodes: Vec<NodeId>,
    },
    /// The quorum service reported (a node-level fact, not ordered with messages).
    Quorum(QuorumState),
}

/// Whether the daemon currently throttles this connection's sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// Sends go through.
    Disabled,
    /// The daemon asks senders to slow down; `mcast` may return `TryAgain`.
    Enabled,
}

/// A transport failure. Each variant says whether a retry can help.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransportError {
    /// The daemon applies flow control: nothing was sent; retry the same
    /// message later (after dispatching). Order is kept if the caller
    /// retries before sending anything else.
    #[error("flow control: the daemon asked to try again later")]
    TryAgain,
    /// The group name is empty or longer than [`MAX_GROUP_NAME_LEN`] bytes.
    /// Nothing was joined; a retry with the same name fails again.
    #[error("group name of {len} bytes is invalid (must be 1..={max} bytes)")]
    InvalidGroupName {
        /// Length of the rejected name.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message is larger than the transport can send atomically.
    /// Nothing was sent; a retry fails again.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Length of the rejected message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No daemon answered (not running, or not reachable from this network
    /// namespace). Nothing was joined; a retry helps once it runs.
    #[error("corosync daemon not reachable: {0} (is corosync running in this network namespace?)")]
    DaemonUnavailable(String),
    /// The connection is gone: the daemon died, the process was killed (sim)
    /// or the connection was left. No further events come; join again.
    #[error("connection closed: {0}")]
    Closed(String),
    /// (`sim` backend) This process was killed, or its node crashed: the
    /// member is gone, as a real one would be, and nothing it does is seen
    /// any more. Runtimes log it at `info` (a real process that is killed
    /// logs nothing); join again from another process.
    #[error("gone: {0}")]
    Killed(String),
    /// Any other error reported by the backend. State is unknown.
    #[error("transport error: {0}")]
    Other(String),
}

/// A validated CPG group name (1 to 127 bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Checks the length CPG accepts.
    pub fn new(name: impl Into<String>) -> Result<Self, TransportError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN {
            return Err(TransportError::InvalidGroupName {
                len: name.len(),
                max: MAX_GROUP_NAME_LEN,
            });
        }
        Ok(GroupName(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process's membership of one CPG group.
///
/// Methods are called from one thread (libqb IPC is not thread-safe), which
/// is why the trait does not require `Send`.
pub trait Connection: 'static {
    /// The group this connection joined.
    fn group(&self) -> &GroupName;

    /// This process as the group sees it.
    fn local(&self) -> Member;

    /// Multicasts `bytes` to every member (this one included) in agreed
    /// order. `Err(TryAgain)` sent nothing: keep the message and retry it
    /// before any later one.
    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError>;

    /// The next event of the ordered stream. `Err(Closed)` ends the stream.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<TransportEvent, TransportError>>;

    /// The current membership as the daemon reports it (a local snapshot,
    /// not a position in the ordered stream).
    fn members(&self) -> Result<Vec<Member>, TransportError>;

    /// Largest message `mcast` sends atomically.
    fn max_message_size(&self) -> usize;

    /// Whether the daemon currently throttles sends.
    fn flow_control(&self) -> FlowControl;

    /// Leaves the group cleanly: the others see `Reason::Leave`. Events
    /// already queued may still be read; then the stream reports `Closed`.
    fn leave(&mut self) -> Result<(), TransportError>;

    /// This member's wall clock, in microseconds since the Unix epoch: what
    /// the facts it puts in the stream read (supervision ticks, election
    /// infos). The host's clock by default; the sim's runs on simulated
    /// time, so a sim run replays exactly.
    fn wall_clock_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// Something that joins groups: a corosync daemon connection factory, or a
/// process of the simulated cluster.
pub trait Transport {
    /// The connection type this transport produces.
    type Connection: Connection;

    /// Joins `group` with a fresh connection (one group per connection).
    fn join(&self, group: &GroupName) -> Result<Self::Connection, TransportError>;
}

/// Waits for the next event of a connection.
pub async fn next_event<C: Connection + ?Sized>(
    conn: &mut C,
) -> Result<TransportEvent, TransportError> {
    std::future::poll_fn(|cx| conn.poll_event(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_longer_than_127_bytes_are_rejected() {
        assert!(GroupName::new("a".repeat(127)).is_ok());
        assert_eq!(
            GroupName::new("a".repeat(128)),
            Err(TransportError::InvalidGroupName { len: 128, max: 127 })
        );
        assert!(GroupName::new("").is_err());
    }

    #[test]
    fn members_reasons_and_changes_read_as_short_lines() {
        assert_eq!(Member::new(2, 1007).to_string(), "node2/1007");
        assert_eq!(Reason::NodeDown.to_string(), "node down");
        assert_eq!(Reason::ProcDown.to_string(), "process down");
        assert_eq!(Reason::Leave.to_string(), "leave");
        let change = |reason| MemberChange {
            member: Member::new(2, 1007),
            reason,
        };
        assert_eq!(
            change(Reason::NodeDown).to_string(),
            "node2/1007 left (node down)"
        );
        assert_eq!(change(Reason::Leave).to_string(), "node2/1007 left");
        assert_eq!(change(Reason::Join).to_string(), "node2/1007 joined");
        assert_eq!(
            change(Reason::NodeUp).to_string(),
            "node2/1007 joined (node up)"
        );
    }
}
