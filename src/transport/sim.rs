//! An in-process CPG cluster with the semantics of corosync CPG: the embedded
//! default for examples and the fast half of the tests.
//!
//! ```text
//!  SimCluster = Arc<Mutex<State>>        one lock ⇒ one total order
//!  ┌──────────────────────────────────────────────────────────────────┐
//!  │ nodes 1 2 3 … (up/down, side of a partition) ──► rings (seq ++)  │
//!  │ processes (node, pid) ──► connections, one per joined group      │
//!  │                                                                  │
//!  │ mcast(c)  ─► append Deliver to the queue of every member of c's  │
//!  │              current view, c included                            │
//!  │ fault     ─► recompute every view; append the same ConfChg to    │
//!  │ join/leave   every member that shared the old view, at the same  │
//!  │              position (virtual synchrony)                        │
//!  └──────────────────────────────┬───────────────────────────────────┘
//!                                 │ one queue per connection
//!                                 ▼
//!   SimConnection::poll_event ─ pops; registers the waker; a push wakes it
//! ```
//!
//! Everything happens synchronously under the cluster lock, so the result
//! is a pure function of the sequence of calls: no threads, no clock, no
//! randomness except the seeded [`FaultPlan`].
//!
//! # Membership and reasons
//!
//! A connection's view is every open member of its group whose node is up
//! and on the same side of the current partition. After any change, each
//! survivor compares its old view with its new one and receives, as in
//! corosync (downlist first, then joinlist):
//!
//! 1. one `ConfChg` with the members that left (if any): `Leave` after
//!    [`Connection::leave`], `ProcDown` after [`SimCluster::kill_process`] or
//!    a dropped connection (like `cpg_finalize` without `cpg_leave`),
//!    `NodeDown` after [`SimCluster::crash_node`] or when a partition puts
//!    the member on another side;
//! 2. one `ConfChg` with the members that joined (if any): `Join` for a
//!    fresh `cpg_join`, `NodeUp` for members that become reachable again
//!    ([`SimCluster::heal`], or a new partition that merges sides).
//!
//! `members` is always the whole view sorted by `(node, pid)`. A joiner's
//! first event is the confchg that admits it (`joined = [itself, Join]`,
//! `members` = the full view), which the others receive too. A leaver gets
//! the same final confchg as the others (itself in `left` with `Leave`),
//! may read what was queued before it, then `Closed`. A killed process's
//! connections (and a crashed node's) drop their queues and report `Closed`
//! at once.
//!
//! # Rings and quorum
//!
//! Nodes that are up and on the same side form a ring. When the node set of
//! a ring changes, that ring gets a new [`RingId`] whose `seq` is strictly
//! greater than every seq handed out before anywhere in the cluster, and
//! whose `nodeid` is the lowest node id on it. Quorum is votequorum with one
//! vote per node and `expected_votes` = the configured node count: a ring is
//! quorate when it holds more than half of the configured nodes.
//!
//! For one cluster change, a connection on a node whose ring changed reads,
//! in this order:
//!
//! ```text
//!   Quorum(new ring) → ConfChg(left) → ConfChg(joined) → TotemConfChg(new ring)
//! ```
//!
//! `Quorum` comes first because votequorum recalculates as soon as totem
//! reports nodes gone, before CPG finishes its sync: a member on the
//! minority side learns that it lost quorum *before* it sees the `NodeDown`
//! that would otherwise make it restart children. A *regained* quorum is
//! reported after the confchgs instead, as a real daemon does after a
//! merge (its quorum notification follows the sync):
//!
//! ```text
//!   ConfChg(left) → ConfChg(joined) → Quorum(new ring, quorate) → TotemConfChg(new ring)
//! ```
//!
//! `TotemConfChg` comes last because CPG notifies the
//! totem membership at the end of its sync, after the group confchgs. A node that restarts or crashes without members in a
//! group still changes the ring: the other connections read `Quorum` and
//! `TotemConfChg` with no `ConfChg`.
//!
//! A joiner reads `ConfChg` (its own join) → `TotemConfChg` (the current
//! ring, as `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF` gives) → `Quorum` (the
//! current state, as quorum `trackstart` gives).
//!
//! Both `Quorum` and `TotemConfChg` are node-level facts: the sim places
//! them deterministically, but a real daemon delivers them on other
//! channels, so group decisions must not depend on that placement.
//!
//! # Flow control
//!
//! A connection's *backlog* is the number of its own messages still
//! outstanding; with [`SimClusterBuilder::max_backlog`] set, `mcast` returns
//! `Err(TryAgain)` (and [`Connection::flow_control`] reports `Enabled`) while
//! the backlog is at the limit. What counts as outstanding is the
//! [`FlowControlPolicy`]: by default a message is outstanding until the
//! sender reads it back (a client that sends without dispatching is
//! throttled, the failure corosync leaves to the daemon's memory); with
//! [`FlowControlPolicy::SlowestMember`] it is outstanding until every member
//! it was delivered to has read it (so a paused member slows the group). When
//! the backlog drops below the limit, the sender's registered waker is woken
//! so a task parked in `poll_event` can retry. Nothing is ever dropped: a
//! rejected message was not sent, and retrying it before any later one keeps
//! the order.
//!
//! # Faults from a seed
//!
//! [`FaultPlan`] draws a reproducible schedule of [`Fault`]s from a seed with
//! a small splitmix64 generator ([`SimRng`]); [`SimCluster::apply_fault`]
//! applies one. A test that runs hundreds of seeds prints the failing seed,
//! and the same seed replays the same schedule.
//!
//! ```
//! use actix_cpg::transport::sim::SimCluster;
//! use actix_cpg::transport::{Connection, GroupName, NodeId, Transport, TransportEvent};
//!
//! let cluster = SimCluster::new(3);
//! let group = GroupName::new("demo").unwrap();
//! let mut a = cluster.process(NodeId(1)).unwrap().join(&group).unwrap();
//! a.mcast(b"hello").unwrap();
//! let events: Vec<TransportEvent> = std::iter::from_fn(|| a.try_next_event().ok().flatten()).collect();
//! assert!(matches!(events[0], TransportEvent::ConfChg { .. }));
//! assert!(events.iter().any(|e| matches!(e, TransportEvent::Deliver { bytes, .. } if bytes == b"hello")));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{
    Connection, FlowControl, GroupName, Member, MemberChange, NodeId, QuorumState, Reason, RingId,
    Transport, TransportError, TransportEvent,
};

/// Default largest atomic message: corosync's `max_atomic_msgsize`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1_047_552;

/// The wall clock of a sim cluster when it is built, in microseconds since
/// the Unix epoch (2023-11-14): the sim's clock starts here, whatever the
/// host's clock says.
pub const SIM_EPOCH_US: u64 = 1_700_000_000_000_000;

/// The pid given to the first process of a cluster; later ones count up.
pub const FIRST_PID: u32 = 1000;

/// What keeps a sent message counted in its sender's backlog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowControlPolicy {
    /// Until the sender reads its own copy back (self-delivery). Throttles a
    /// sender that does not dispatch; other members' pace does not matter.
    #[default]
    OwnBacklog,
    /// Until every member it was delivered to has read it (or left, or
    /// died). A slow or paused member throttles every sender of its view.
    SlowestMember,
}

/// A fault-injection or cluster-control call that could not be applied.
/// Every variant leaves the cluster unchanged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// The cluster was not configured with this node. Nothing changed.
    #[error("the cluster has no {0}")]
    UnknownNode(NodeId),
    /// The node is down (crashed, not restarted). Nothing changed; retry
    /// after [`SimCluster::restart_node`].
    #[error("{0} is down")]
    NodeDown(NodeId),
    /// [`SimCluster::restart_node`] on a node that is up. Nothing changed.
    #[error("{0} is already up")]
    NodeAlreadyUp(NodeId),
    /// No process with this `(node, pid)` was ever created. Nothing changed.
    #[error("no process {0}")]
    UnknownProcess(Member),
    /// The process was killed, or its node crashed. Nothing changed.
    #[error("process {0} is dead")]
    ProcessDead(Member),
    /// The sides of a partition do not list every configured node exactly
    /// once. Nothing changed; a retry with the same sides fails again.
    #[error("invalid partition: {0}")]
    InvalidPartition(String),
}

impl From<SimError> for TransportError {
    fn from(err: SimError) -> Self {
        match err {
            SimError::NodeDown(_) => TransportError::DaemonUnavailable(err.to_string()),
            SimError::ProcessDead(_) => TransportError::Closed(err.to_string()),
            other => TransportError::Other(other.to_string()),
        }
    }
}

/// Options of a [`SimCluster`]; start from [`SimCluster::builder`].
#[derive(Clone, Debug)]
pub struct SimClusterBuilder {
    nodes: u32,
    max_backlog: Option<usize>,
    max_message_size: usize,
    policy: FlowControlPolicy,
}

impl SimClusterBuilder {
    /// Enables flow control: at most `limit` outstanding messages per
    /// connection (see [`FlowControlPolicy`]). `0` is treated as `1`, since
    /// a connection that may never send is of no use. Default: unbounded,
    /// like a real daemon that queues without limit.
    pub fn max_backlog(mut self, limit: usize) -> Self {
        self.max_backlog = Some(limit.max(1));
        self
    }

    /// What counts as outstanding for `max_backlog`.
    pub fn flow_control(mut self, policy: FlowControlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Largest message `mcast` accepts; default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Builds the cluster: every node up, all on one ring.
    pub fn build(self) -> SimCluster {
        let mut state = State {
            clock_start: tokio::time::Instant::now(),
            last_clock_us: 0,
            max_backlog: self.max_backlog,
            max_message_size: self.max_message_size,
            policy: self.policy,
            nodes: (1..=self.nodes)
                .map(|n| {
                    (
                        NodeId(n),
                        NodeState {
                            up: true,
                            side: 0,
                            ring: None,
                        },
                    )
                })
                .collect(),
            procs: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_pid: FIRST_PID,
            next_conn: 0,
            ring_seq: 0,
        };
        state.reform_rings();
        SimCluster {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

/// A simulated cluster: nodes, processes, groups and the faults between
/// them. Cheap to clone (all clones are the same cluster), `Send + Sync`.
#[derive(Clone)]
pub struct SimCluster {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimCluster")
            .field("nodes", &state.nodes.len())
            .field("processes", &state.procs.len())
            .field("connections", &state.conns.len())
            .field("ring_seq", &state.ring_seq)
            .finish_non_exhaustive()
    }
}

impl SimCluster {
    /// A cluster of `nodes` nodes (ids `1..=nodes`), all up on one ring,
    /// with the default options.
    pub fn new(nodes: u32) -> Self {
        Self::builder(nodes).build()
    }

    /// Options for a cluster of `nodes` nodes (ids `1..=nodes`).
    pub fn builder(nodes: u32) -> SimClusterBuilder {
        SimClusterBuilder {
            nodes,
            max_backlog: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            policy: FlowControlPolicy::default(),
        }
    }

    // A panic elsewhere while the lock was held cannot leave `State` torn:
    // every mutation completes before any call that could panic, so the
    // poisoned guard is safe to keep using.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // Wakers run after the lock is released: a waker may poll inline.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, &mut Vec<Waker>) -> R) -> R {
        let mut wakers = Vec::new();
        let result = {
            let mut state = self.lock();
            f(&mut state, &mut wakers)
        };
        for waker in wakers {
            waker.wake();
        }
        result
    }

    /// Starts a new process on `node` with a fresh pid ([`FIRST_PID`], then
    /// counting up cluster-wide, so a pid alone is unique too).
    pub fn process(&self, node: NodeId) -> Result<SimProcess, SimError> {
        let member = self.with_state(|state, _| {
            let up = state
                .nodes
                .get(&node)
                .ok_or(SimError::UnknownNode(node))?
                .up;
            if !up {
                return Err(SimError::NodeDown(node));
            }
            let member = Member {
                node,
                pid: state.next_pid,
            };
            state.next_pid = state.next_pid.wrapping_add(1);
            state.procs.insert(
                member,
                ProcState {
                    alive: true,
                    paused: false,
                },
            );
            Ok(member)
        })?;
        Ok(SimProcess {
            cluster: self.clone(),
            member,
        })
    }

    /// Kills a process (SIGKILL): the other members of each of its groups
    /// see it leave with `ProcDown`; each of its connections drops what it
    /// had queued and reports `Closed`.
    pub fn kill_process(&self, process: Member) -> Result<(), SimError> {
        self.with_state(|state, wakers| state.kill(process, wakers))
    }

    /// Crashes a node: its processes die, members elsewhere see them leave
    /// with `NodeDown`, and the node leaves its ring (new `TotemConfChg` and
    /// `Quorum` for the rest of the ring).
    pub fn crash_node(&self, node: NodeId) -> Result<(), SimError> {
        self.with_state(|state, wakers| state.crash(node, wakers))
    }

    /// Brings a crashed node back, empty: it rejoins the ring of its side of
    /// the partition, and new processes can be started on it.
    pub fn restart_node(&self, node: NodeId) -> Result<(), SimError> {
        self.with_state(|state, wakers| {
            let ns = state
                .nodes
                .get_mut(&node)
                .ok_or(SimError::UnknownNode(node))?;
            if ns.up {
                return Err(SimError::NodeAlreadyUp(node));
            }
            ns.up = true;
            state.reconfigure(&BTreeMap::new(), wakers);
            Ok(())
        })
    }

    /// Splits the network: each side is a set of nodes that reach each other
    /// and no other. Every configured node (up or down) must be listed
    /// exactly once; empty sides are ignored. Members see those on other
    /// sides leave with `NodeDown`, and members that become reachable again
    /// (when a new partition merges former sides) join with `NodeUp`.
    pub fn partition(&self, sides: &[&[NodeId]]) -> Result<(), SimError> {
        let sides: Vec<Vec<NodeId>> = sides.iter().map(|side| side.to_vec()).collect();
        self.with_state(|state, wakers| state.partition(&sides, wakers))
    }

    /// Merges every side into one network: each member sees those of the
    /// other sides join with `NodeUp`, in one confchg per group.
    pub fn heal(&self) {
        self.with_state(|state, wakers| {
            for ns in state.nodes.values_mut() {
                ns.side = 0;
            }
            state.reconfigure(&BTreeMap::new(), wakers);
        });
    }

    /// Pauses a process (like SIGSTOP): its connections deliver nothing
    /// (`poll_event` stays `Pending`) while events keep queuing, which makes
    /// it a slow member. Its sends are not affected.
    pub fn pause_process(&self, process: Member) -> Result<(), SimError> {
        self.set_paused(process, true)
    }

    /// Resumes a paused process and wakes its connections.
    pub fn resume_process(&self, process: Member) -> Result<(), SimError> {
        self.set_paused(process, false)
    }

    fn set_paused(&self, process: Member, paused: bool) -> Result<(), SimError> {
        self.with_state(|state, wakers| {
            let ps = state
                .procs
                .get_mut(&process)
                .ok_or(SimError::UnknownProcess(process))?;
            if !ps.alive {
                return Err(SimError::ProcessDead(process));
            }
            ps.paused = paused;
            if !paused {
                for conn in state.conns.values_mut() {
                    if conn.member == process {
                        wakers.extend(conn.waker.take());
                    }
                }
            }
            Ok(())
        })
    }

    /// The configured nodes, up or down.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.lock().nodes.keys().copied().collect()
    }

    /// Whether `node` is configured and up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.lock().nodes.get(&node).is_some_and(|ns| ns.up)
    }

    /// Whether `process` exists and was neither killed nor crashed.
    pub fn is_alive(&self, process: Member) -> bool {
        self.lock().procs.get(&process).is_some_and(|ps| ps.alive)
    }

    /// The ring `node` is on and its nodes, or `None` if it is down or
    /// unknown.
    pub fn ring(&self, node: NodeId) -> Option<(RingId, Vec<NodeId>)> {
        let state = self.lock();
        let ring = state.nodes.get(&node)?.ring.as_ref()?;
        Some((ring.id, ring.nodes.clone()))
    }

    /// What the quorum service of `node` currently reports, or `None` if the
    /// node is down or unknown.
    pub fn quorum(&self, node: NodeId) -> Option<QuorumState> {
        self.lock().quorum_of(node)
    }

    /// Every open member of `group` on any side, sorted (a global view no
    /// real member has; for tests and fault plans).
    pub fn group_members(&self, group: &GroupName) -> Vec<Member> {
        let state = self.lock();
        let mut members: Vec<Member> = state
            .conns
            .values()
            .filter(|c| c.status == Status::Open && c.group == *group)
            .map(|c| c.member)
            .collect();
        members.sort();
        members
    }

    /// Applies one fault of a [`FaultPlan`] to `group`. A fault that does
    /// not apply to the current state (restart a node that is up, kill in
    /// an empty group) is `Skipped`; only an ill-formed fault is an error.
    pub fn apply_fault(&self, fault: &Fault, group: &GroupName) -> Result<FaultOutcome, SimError> {
        match fault {
            Fault::Join { node } => {
                if !self
                    .lock()
                    .nodes
                    .get(node)
                    .ok_or(SimError::UnknownNode(*node))?
                    .up
                {
                    return Ok(FaultOutcome::Skipped);
                }
                let process = self.process(*node)?;
                match process.join(group) {
                    Ok(conn) => Ok(FaultOutcome::Joined(conn)),
                    Err(_) => Ok(FaultOutcome::Skipped),
                }
            }
            Fault::Leave { pick } => self.with_state(|state, wakers| {
                let Some(id) = state.pick_open(group, *pick) else {
                    return Ok(FaultOutcome::Skipped);
                };
                match state.leave(id, wakers) {
                    Ok(()) => Ok(FaultOutcome::Applied),
                    Err(_) => Ok(FaultOutcome::Skipped),
                }
            }),
            Fault::Kill { pick } => self.with_state(|state, wakers| {
                let Some(member) = state
                    .pick_open(group, *pick)
                    .and_then(|id| state.conns.get(&id))
                    .map(|c| c.member)
                else {
                    return Ok(FaultOutcome::Skipped);
                };
                state.kill(member, wakers)?;
                Ok(FaultOutcome::Applied)
            }),
            Fault::Crash { node } => match self.crash_node(*node) {
                Ok(()) => Ok(FaultOutcome::Applied),
                Err(SimError::NodeDown(_)) => Ok(FaultOutcome::Skipped),
                Err(err) => Err(err),
            },
            Fault::Restart { node } => match self.restart_node(*node) {
                Ok(()) => Ok(FaultOutcome::Applied),
                Err(SimError::NodeAlreadyUp(_)) => Ok(FaultOutcome::Skipped),
                Err(err) => Err(err),
            },
            Fault::Partition { sides } => {
                self.with_state(|state, wakers| state.partition(sides, wakers))?;
                Ok(FaultOutcome::Applied)
            }
            Fault::Heal => {
                self.heal();
                Ok(FaultOutcome::Applied)
            }
        }
    }
}

/// A process of the simulated cluster: joins groups like a program holding
/// CPG handles. Cloning gives another handle to the same process.
#[derive(Clone, Debug)]
pub struct SimProcess {
    cluster: SimCluster,
    member: Member,
}

impl SimProcess {
    /// This process as groups see it: `(node, pid)`.
    pub fn member(&self) -> Member {
        self.member
    }

    /// The node it runs on.
    pub fn node(&self) -> NodeId {
        self.member.node
    }

    /// Its pid (unique cluster-wide in the sim).
    pub fn pid(&self) -> u32 {
        self.member.pid
    }

    /// The cluster it runs in.
    pub fn cluster(&self) -> &SimCluster {
        &self.cluster
    }

    /// Whether it was neither killed nor crashed.
    pub fn is_alive(&self) -> bool {
        self.cluster.is_alive(self.member)
    }

    /// Kills it; see [`SimCluster::kill_process`].
    pub fn kill(&self) -> Result<(), SimError> {
        self.cluster.kill_process(self.member)
    }
}

impl Transport for SimProcess {
    type Connection = SimConnection;

    /// Joins `group` with a new connection. Errors: `Closed` if the process
    /// is dead, `Other` if it already holds an open connection to `group`
    /// (CPG's `CS_ERR_EXIST`); nothing was joined.
    fn join(&self, group: &GroupName) -> Result<SimConnection, TransportError> {
        let member = self.member;
        let (id, max_message_size) = self
            .cluster
            .with_state(|state, wakers| state.join(member, group, wakers))?;
        Ok(SimConnection {
            cluster: self.cluster.clone(),
            id,
            group: group.clone(),
            local: member,
            max_message_size,
        })
    }
}

/// One process's membership of one group in a [`SimCluster`]. Dropping it
/// without [`Connection::leave`] is `cpg_finalize`: the others see
/// `ProcDown`.
pub struct SimConnection {
    cluster: SimCluster,
    id: ConnId,
    group: GroupName,
    local: Member,
    max_message_size: usize,
}

impl fmt::Debug for SimConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConnection")
            .field("group", &self.group)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SimConnection {
    /// The next queued event without waiting: `Ok(None)` when nothing is
    /// queued (or the process is paused), `Err(Closed)` once the stream has
    /// ended.
    pub fn try_next_event(&mut self) -> Result<Option<TransportEvent>, TransportError> {
        let id = self.id;
        match self
            .cluster
            .with_state(|state, wakers| state.next_event(id, None, wakers))
        {
            Poll::Ready(Ok(event)) => Ok(Some(event)),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => Ok(None),
        }
    }

    /// How many of this connection's messages are outstanding under the
    /// cluster's [`FlowControlPolicy`].
    pub fn backlog(&self) -> usize {
        self.cluster
            .lock()
            .conns
            .get(&self.id)
            .map_or(0, |c| c.outstanding.len())
    }

    /// How many events wait in this connection's queue.
    pub fn queued(&self) -> usize {
        self.cluster
            .lock()
            .conns
            .get(&self.id)
            .map_or(0, |c| c.queue.len())
    }
}

impl Connection for SimConnection {
    /// [`SIM_EPOCH_US`] plus the time since the cluster was built, on
    /// tokio's clock (simulated when the runtime's time is paused), and
    /// never the same value twice in a cluster.
    fn wall_clock_us(&self) -> u64 {
        let mut state = self.cluster.lock();
        let elapsed = state.clock_start.elapsed().as_micros() as u64;
        let now = SIM_EPOCH_US
            .saturating_add(elapsed)
            .max(state.last_clock_us.saturating_add(1));
        state.last_clock_us = now;
        now
    }

    fn group(&self) -> &GroupName {
        &self.group
    }

    fn local(&self) -> Member {
        self.local
    }

    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let id = self.id;
        self.cluster
            .with_state(|state, wakers| state.mcast(id, bytes, wakers))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<TransportEvent, TransportError>> {
        let id = self.id;
        self.cluster
            .with_state(|state, wakers| state.next_event(id, Some(cx.waker()), wakers))
    }

    fn members(&self) -> Result<Vec<Member>, TransportError> {
        let state = self.cluster.lock();
        let conn = state.conns.get(&self.id).ok_or_else(released)?;
        match &conn.status {
            Status::Open => Ok(state.members_of(&conn.view)),
            other => Err(other.closed_error()),
        }
    }

    fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn flow_control(&self) -> FlowControl {
        let state = self.cluster.lock();
        match (state.max_backlog, state.conns.get(&self.id)) {
            (Some(max), Some(conn)) if conn.outstanding.len() >= max => FlowControl::Enabled,
            _ => FlowControl::Disabled,
        }
    }

    fn leave(&mut self) -> Result<(), TransportError> {
        let id = self.id;
        self.cluster
            .with_state(|state, wakers| state.leave(id, wakers))
    }
}

impl Drop for SimConnection {
    fn drop(&mut self) {
        let id = self.id;
        self.cluster
            .with_state(|state, wakers| state.release(id, wakers));
    }
}

/// One fault of a seeded schedule, applied with [`SimCluster::apply_fault`].
/// Members are picked at application time (`pick` modulo the open members
/// of the group, sorted), so a schedule stays valid whatever happened
/// before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A new process on `node` joins the group.
    Join {
        /// Where the process starts.
        node: NodeId,
    },
    /// An open member leaves cleanly (`Leave`).
    Leave {
        /// Index into the sorted open members, modulo their number.
        pick: u32,
    },
    /// The process of an open member is killed (`ProcDown`).
    Kill {
        /// Index into the sorted open members, modulo their number.
        pick: u32,
    },
    /// A node crashes (`NodeDown`).
    Crash {
        /// The node.
        node: NodeId,
    },
    /// A crashed node comes back, empty.
    Restart {
        /// The node.
        node: NodeId,
    },
    /// The network splits into these sides.
    Partition {
        /// Every configured node, each on exactly one side.
        sides: Vec<Vec<NodeId>>,
    },
    /// The network merges (`NodeUp`).
    Heal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Join { node } => write!(f, "join on {node}"),
            Fault::Leave { pick } => write!(f, "leave #{pick}"),
            Fault::Kill { pick } => write!(f, "kill #{pick}"),
            Fault::Crash { node } => write!(f, "crash {node}"),
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Partition { sides } => {
                f.write_str("partition")?;
                for side in sides {
                    let names: Vec<String> = side.iter().map(|n| n.0.to_string()).collect();
                    write!(f, " [{}]", names.join(","))?;
                }
                Ok(())
            }
            Fault::Heal => f.write_str("heal"),
        }
    }
}

/// What [`SimCluster::apply_fault`] did.
#[derive(Debug)]
pub enum FaultOutcome {
    /// A `Join` fault started a process; here is its connection.
    Joined(SimConnection),
    /// The fault changed the cluster.
    Applied,
    /// The fault did not apply to the current state; nothing changed.
    Skipped,
}

/// A tiny deterministic generator (splitmix64): the same seed gives the
/// same numbers on every platform, with no dependency.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator from `seed`; nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        SimRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is `0`), without modulo bias worth
    /// noticing (multiply-shift).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A reproducible schedule of faults for a cluster of `nodes` nodes: the
/// same seed always yields the same sequence. It is an endless iterator;
/// take as many faults as a test needs.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    seed: u64,
    nodes: u32,
    rng: SimRng,
}

impl FaultPlan {
    /// A plan for nodes `1..=nodes` drawn from `seed`.
    pub fn new(seed: u64, nodes: u32) -> Self {
        FaultPlan {
            seed,
            nodes,
            rng: SimRng::new(seed),
        }
    }

    /// The seed the plan was made from (print it when a schedule fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The first `len` faults of the plan for `seed`.
    pub fn schedule(seed: u64, nodes: u32, len: usize) -> Vec<Fault> {
        FaultPlan::new(seed, nodes).take(len).collect()
    }

    fn node(&mut self) -> NodeId {
        NodeId(1 + self.rng.below(u64::from(self.nodes)) as u32)
    }

    fn pick(&mut self) -> u32 {
        self.rng.below(u64::from(u32::MAX)) as u32
    }

    /// Draws the next fault. Weights favour joins and heals so that groups
    /// keep members and partitions do not last forever.
    pub fn next_fault(&mut self) -> Fault {
        if self.nodes == 0 {
            return Fault::Heal;
        }
        match self.rng.below(100) {
            0..=29 => Fault::Join { node: self.node() },
            30..=39 => Fault::Leave { pick: self.pick() },
            40..=51 => Fault::Kill { pick: self.pick() },
            52..=61 => Fault::Crash { node: self.node() },
            62..=73 => Fault::Restart { node: self.node() },
            74..=85 if self.nodes >= 2 => {
                let count = 2 + self.rng.below(u64::from(self.nodes.min(3) - 1)) as usize;
                let mut sides = vec![Vec::new(); count];
                for n in 1..=self.nodes {
                    let side = self.rng.below(count as u64) as usize;
                    if let Some(side) = sides.get_mut(side) {
                        side.push(NodeId(n));
                    }
                }
                sides.retain(|side| !side.is_empty());
                Fault::Partition { sides }
            }
            _ => Fault::Heal,
        }
    }
}

impl Iterator for FaultPlan {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        Some(self.next_fault())
    }
}

type ConnId = u64;

struct State {
    /// When the cluster was built, on tokio's clock: simulated when the
    /// runtime's time is paused, so a run replays exactly.
    clock_start: tokio::time::Instant,
    /// The last wall clock read: reads never repeat a value, as a real
    /// clock moves between two reads (simulated time stands still while
    /// the runtime is busy).
    last_clock_us: u64,
    max_backlog: Option<usize>,
    max_message_size: usize,
    policy: FlowControlPolicy,
    nodes: BTreeMap<NodeId, NodeState>,
    procs: BTreeMap<Member, ProcState>,
    conns: BTreeMap<ConnId, ConnState>,
    next_pid: u32,
    next_conn: ConnId,
    ring_seq: u64,
}

struct NodeState {
    up: bool,
    /// Index of the partition side; all zero when healed.
    side: usize,
    /// `None` while down.
    ring: Option<Ring>,
}

#[derive(Clone, PartialEq, Eq)]
struct Ring {
    id: RingId,
    nodes: Vec<NodeId>,
}

struct ProcState {
    alive: bool,
    paused: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Open,
    Left,
    /// Why, as `poll_event` reports it.
    Closed(TransportError),
}

impl Status {
    fn closed_error(&self) -> TransportError {
        match self {
            Status::Open => TransportError::Other("connection is open".into()),
            Status::Left => TransportError::Closed("left the group".into()),
            Status::Closed(error) => error.clone(),
        }
    }
}

fn released() -> TransportError {
    TransportError::Closed("connection released".into())
}

struct ConnState {
    member: Member,
    group: GroupName,
    status: Status,
    /// Whether the others have seen it join; until then a joiner counts as
    /// `Join`, afterwards reappearing counts as `NodeUp`.
    announced: bool,
    /// The current view, this connection included while open.
    view: BTreeSet<ConnId>,
    queue: VecDeque<Queued>,
    waker: Option<Waker>,
    /// Own message seq -> copies still unread (see `FlowControlPolicy`).
    outstanding: BTreeMap<u64, usize>,
    next_msg: u64,
}

enum Queued {
    Event(TransportEvent),
    Deliver {
        from: Member,
        // Shared between the copies of one mcast; copied out when read.
        bytes: Arc<[u8]>,
        track: Option<(ConnId, u64)>,
    },
}

impl State {
    fn side_of(&self, node: NodeId) -> Option<usize> {
        self.nodes.get(&node).filter(|ns| ns.up).map(|ns| ns.side)
    }

    fn quorum_of(&self, node: NodeId) -> Option<QuorumState> {
        let ring = self.nodes.get(&node)?.ring.as_ref()?;
        Some(QuorumState {
            quorate: ring.nodes.len() * 2 > self.nodes.len(),
            ring_id: ring.id,
            nodes: ring.nodes.clone(),
        })
    }

    fn members_of(&self, view: &BTreeSet<ConnId>) -> Vec<Member> {
        let mut members: Vec<Member> = view
            .iter()
            .filter_map(|id| self.conns.get(id).map(|c| c.member))
            .collect();
        members.sort();
        members
    }

    fn pick_open(&self, group: &GroupName, pick: u32) -> Option<ConnId> {
        let mut open: Vec<(Member, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.status == Status::Open && c.group == *group)
            .map(|(id, c)| (c.member, *id))
            .collect();
        if open.is_empty() {
            return None;
        }
        open.sort();
        open.get(pick as usize % open.len()).map(|(_, id)| *id)
    }

    /// Forms a new ring for every side whose set of up nodes changed and
    /// returns the nodes on those new rings.
    fn reform_rings(&mut self) -> BTreeSet<NodeId> {
        let mut sides: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for (id, ns) in &self.nodes {
            if ns.up {
                sides.entry(ns.side).or_default().push(*id);
            }
        }
        // Seqs are handed out in order of each ring's lowest node, so the
        // numbering does not depend on how sides were indexed.
        let mut rings: Vec<Vec<NodeId>> = sides.into_values().collect();
        rings.sort();
        let mut changed = BTreeSet::new();
        for nodes in rings {
            let Some(&lowest) = nodes.first() else {
                continue;
            };
            let unchanged = nodes.iter().all(|n| {
                self.nodes
                    .get(n)
                    .and_then(|ns| ns.ring.as_ref())
                    .is_some_and(|ring| ring.nodes == nodes)
            });
            if unchanged {
                continue;
            }
            self.ring_seq += 1;
            let ring = Ring {
                id: RingId {
                    nodeid: lowest,
                    seq: self.ring_seq,
                },
                nodes,
            };
            for n in &ring.nodes {
                if let Some(ns) = self.nodes.get_mut(n) {
                    ns.ring = Some(ring.clone());
                }
                changed.insert(*n);
            }
        }
        for ns in self.nodes.values_mut() {
            if !ns.up {
                ns.ring = None;
            }
        }
        changed
    }

    /// Recomputes rings and views after the caller changed nodes, sides or
    /// processes, and queues the resulting events. `departing` connections
    /// (still `Open`) are excluded from every new view with their reason;
    /// a `Leave` one gets its final confchg and becomes `Left`, the others
    /// are left to the caller to close.
    fn reconfigure(&mut self, departing: &BTreeMap<ConnId, Reason>, wakers: &mut Vec<Waker>) {
        let was_quorate: BTreeSet<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| self.quorum_of(*n).is_some_and(|q| q.quorate))
            .collect();
        let ring_changed = self.reform_rings();
        // A node that regains quorum reports it after the group confchgs.
        let mut regained: BTreeMap<ConnId, TransportEvent> = BTreeMap::new();
        let live: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| c.status == Status::Open && !departing.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        let mut out: BTreeMap<ConnId, Vec<TransportEvent>> = BTreeMap::new();

        for id in &live {
            if let Some(conn) = self.conns.get(id) {
                if ring_changed.contains(&conn.member.node) {
                    if let Some(q) = self.quorum_of(conn.member.node) {
                        if q.quorate && !was_quorate.contains(&conn.member.node) {
                            regained.insert(*id, TransportEvent::Quorum(q));
                        } else {
                            out.entry(*id).or_default().push(TransportEvent::Quorum(q));
                        }
                    }
                }
            }
        }

        let mut new_views = Vec::with_capacity(live.len());
        for id in &live {
            let Some(conn) = self.conns.get(id) else {
                continue;
            };
            let side = self.side_of(conn.member.node);
            let view: BTreeSet<ConnId> = live
                .iter()
                .copied()
                .filter(|other| {
                    self.conns.get(other).is_some_and(|o| {
                        o.group == conn.group && self.side_of(o.member.node) == side
                    })
                })
                .collect();
            let events = out.entry(*id).or_default();
            if !conn.announced {
                events.push(TransportEvent::ConfChg {
                    members: self.members_of(&view),
                    joined: vec![MemberChange {
                        member: conn.member,
                        reason: Reason::Join,
                    }],
                    left: Vec::new(),
                });
            } else {
                let mut left: Vec<MemberChange> = conn
                    .view
                    .difference(&view)
                    .filter_map(|gone| {
                        Some(MemberChange {
                            member: self.conns.get(gone)?.member,
                            reason: departing.get(gone).copied().unwrap_or(Reason::NodeDown),
                        })
                    })
                    .collect();
                left.sort_by_key(|change| change.member);
                let mut joined: Vec<MemberChange> = view
                    .difference(&conn.view)
                    .filter_map(|new| {
                        let c = self.conns.get(new)?;
                        Some(MemberChange {
                            member: c.member,
                            reason: if c.announced {
                                Reason::NodeUp
                            } else {
                                Reason::Join
                            },
                        })
                    })
                    .collect();
                joined.sort_by_key(|change| change.member);
                if !left.is_empty() {
                    let kept: BTreeSet<ConnId> = conn.view.intersection(&view).copied().collect();
                    events.push(TransportEvent::ConfChg {
                        members: self.members_of(&kept),
                        joined: Vec::new(),
                        left,
                    });
                }
                if !joined.is_empty() {
                    events.push(TransportEvent::ConfChg {
                        members: self.members_of(&view),
                        joined,
                        left: Vec::new(),
                    });
                }
            }
            new_views.push((*id, view));
        }

        for (id, reason) in departing {
            if *reason != Reason::Leave {
                continue;
            }
            let Some(conn) = self.conns.get(id) else {
                continue;
            };
            let rest: BTreeSet<ConnId> = conn
                .view
                .iter()
                .copied()
                .filter(|other| !departing.contains_key(other))
                .collect();
            let last = TransportEvent::ConfChg {
                members: self.members_of(&rest),
                joined: Vec::new(),
                left: vec![MemberChange {
                    member: conn.member,
                    reason: Reason::Leave,
                }],
            };
            out.entry(*id).or_default().push(last);
        }

        for (id, view) in new_views {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.view = view;
                conn.announced = true;
            }
        }
        for (id, reason) in departing {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.view.clear();
                if *reason == Reason::Leave {
                    conn.status = Status::Left;
                }
            }
        }
        for (id, quorum) in regained {
            out.entry(id).or_default().push(quorum);
        }
        for id in &live {
            let Some(node) = self.conns.get(id).map(|c| c.member.node) else {
                continue;
            };
            if let Some(ring) = self.nodes.get(&node).and_then(|ns| ns.ring.as_ref()) {
                if ring_changed.contains(&node) {
                    out.entry(*id)
                        .or_default()
                        .push(TransportEvent::TotemConfChg {
                            ring_id: ring.id,
                            nodes: ring.nodes.clone(),
                        });
                }
            }
        }
        for (id, events) in out {
            self.push_events(id, events, wakers);
        }
    }

    fn push_events(&mut self, id: ConnId, events: Vec<TransportEvent>, wakers: &mut Vec<Waker>) {
        if events.is_empty() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.queue.extend(events.into_iter().map(Queued::Event));
            wakers.extend(conn.waker.take());
        }
    }

    fn join(
        &mut self,
        member: Member,
        group: &GroupName,
        wakers: &mut Vec<Waker>,
    ) -> Result<(ConnId, usize), TransportError> {
        let ps = self
            .procs
            .get(&member)
            .ok_or_else(|| TransportError::Other(format!("no process {member}")))?;
        if !ps.alive {
            return Err(SimError::ProcessDead(member).into());
        }
        if self.side_of(member.node).is_none() {
            return Err(SimError::NodeDown(member.node).into());
        }
        if self
            .conns
            .values()
            .any(|c| c.member == member && c.group == *group && c.status == Status::Open)
        {
            return Err(TransportError::Other(format!(
                "process {member} already joined group {group}"
            )));
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            ConnState {
                member,
                group: group.clone(),
                status: Status::Open,
                announced: false,
                view: BTreeSet::new(),
                queue: VecDeque::new(),
                waker: None,
                outstanding: BTreeMap::new(),
                next_msg: 0,
            },
        );
        self.reconfigure(&BTreeMap::new(), wakers);
        let mut initial = Vec::new();
        if let Some(ring) = self.nodes.get(&member.node).and_then(|ns| ns.ring.as_ref()) {
            initial.push(TransportEvent::TotemConfChg {
                ring_id: ring.id,
                nodes: ring.nodes.clone(),
            });
        }
        if let Some(q) = self.quorum_of(member.node) {
            initial.push(TransportEvent::Quorum(q));
        }
        self.push_events(id, initial, wakers);
        Ok((id, self.max_message_size))
    }

    fn leave(&mut self, id: ConnId, wakers: &mut Vec<Waker>) -> Result<(), TransportError> {
        let conn = self.conns.get(&id).ok_or_else(released)?;
        if conn.status != Status::Open {
            return Err(conn.status.closed_error());
        }
        self.reconfigure(&BTreeMap::from([(id, Reason::Leave)]), wakers);
        // A leaver's unread copies no longer hold back the senders: it is
        // out of the group and may never read them.
        let mut untrack = Vec::new();
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.outstanding.clear();
            for queued in &mut conn.queue {
                if let Queued::Deliver { track, .. } = queued {
                    untrack.extend(track.take());
                }
            }
        }
        for track in untrack {
            self.untrack(track, wakers);
        }
        Ok(())
    }

    fn kill(&mut self, member: Member, wakers: &mut Vec<Waker>) -> Result<(), SimError> {
        let ps = self
            .procs
            .get_mut(&member)
            .ok_or(SimError::UnknownProcess(member))?;
        if !ps.alive {
            return Err(SimError::ProcessDead(member));
        }
        ps.alive = false;
        ps.paused = false;
        let departing: BTreeMap<ConnId, Reason> = self
            .conns
            .iter()
            .filter(|(_, c)| c.member == member && c.status == Status::Open)
            .map(|(id, _)| (*id, Reason::ProcDown))
            .collect();
        self.reconfigure(&departing, wakers);
        let doomed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.member == member)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            let why = TransportError::Killed(format!("process {member} was killed"));
            self.close(id, why, wakers);
        }
        Ok(())
    }

    fn crash(&mut self, node: NodeId, wakers: &mut Vec<Waker>) -> Result<(), SimError> {
        let ns = self
            .nodes
            .get_mut(&node)
            .ok_or(SimError::UnknownNode(node))?;
        if !ns.up {
            return Err(SimError::NodeDown(node));
        }
        ns.up = false;
        for (member, ps) in self.procs.iter_mut() {
            if member.node == node {
                ps.alive = false;
                ps.paused = false;
            }
        }
        let departing: BTreeMap<ConnId, Reason> = self
            .conns
            .iter()
            .filter(|(_, c)| c.member.node == node && c.status == Status::Open)
            .map(|(id, _)| (*id, Reason::NodeDown))
            .collect();
        self.reconfigure(&departing, wakers);
        let doomed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.member.node == node)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.close(
                id,
                TransportError::Killed(format!("{node} crashed")),
                wakers,
            );
        }
        Ok(())
    }

    fn partition(
        &mut self,
        sides: &[Vec<NodeId>],
        wakers: &mut Vec<Waker>,
    ) -> Result<(), SimError> {
        let mut assigned: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (index, side) in sides.iter().filter(|side| !side.is_empty()).enumerate() {
            for node in side {
                if !self.nodes.contains_key(node) {
                    return Err(SimError::UnknownNode(*node));
                }
                if assigned.insert(*node, index).is_some() {
                    return Err(SimError::InvalidPartition(format!(
                        "{node} is on more than one side"
                    )));
                }
            }
        }
        if let Some(missing) = self.nodes.keys().find(|n| !assigned.contains_key(n)) {
            return Err(SimError::InvalidPartition(format!(
                "{missing} is on no side"
            )));
        }
        for (node, side) in assigned {
            if let Some(ns) = self.nodes.get_mut(&node) {
                ns.side = side;
            }
        }
        self.reconfigure(&BTreeMap::new(), wakers);
        Ok(())
    }

    /// A dropped handle: `cpg_finalize` without `cpg_leave` if still open.
    fn release(&mut self, id: ConnId, wakers: &mut Vec<Waker>) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| c.status == Status::Open)
        {
            self.reconfigure(&BTreeMap::from([(id, Reason::ProcDown)]), wakers);
        }
        let why = TransportError::Closed("connection released".into());
        self.close(id, why, wakers);
        self.conns.remove(&id);
    }

    fn close(&mut self, id: ConnId, why: TransportError, wakers: &mut Vec<Waker>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(conn.status, Status::Closed(_)) {
            return;
        }
        conn.status = Status::Closed(why);
        conn.view.clear();
        conn.outstanding.clear();
        wakers.extend(conn.waker.take());
        let queue = std::mem::take(&mut conn.queue);
        for queued in queue {
            if let Queued::Deliver {
                track: Some(track), ..
            } = queued
            {
                self.untrack(track, wakers);
            }
        }
    }

    /// One copy of `sender`'s message `seq` is no longer outstanding.
    fn untrack(&mut self, (sender, seq): (ConnId, u64), wakers: &mut Vec<Waker>) {
        let max = self.max_backlog;
        let Some(conn) = self.conns.get_mut(&sender) else {
            return;
        };
        let before = conn.outstanding.len();
        if let Some(copies) = conn.outstanding.get_mut(&seq) {
            *copies = copies.saturating_sub(1);
            if *copies == 0 {
                conn.outstanding.remove(&seq);
            }
        }
        // A sender blocked by flow control may be parked in poll_event with
        // nothing to read; wake it so it can retry its send.
        if let Some(max) = max {
            if before >= max && conn.outstanding.len() < max {
                wakers.extend(conn.waker.take());
            }
        }
    }

    fn mcast(
        &mut self,
        id: ConnId,
        bytes: &[u8],
        wakers: &mut Vec<Waker>,
    ) -> Result<(), TransportError> {
        let conn = self.conns.get(&id).ok_or_else(released)?;
        if conn.status != Status::Open {
            return Err(conn.status.closed_error());
        }
        if bytes.len() > self.max_message_size {
            return Err(TransportError::MessageTooLarge {
                len: bytes.len(),
                max: self.max_message_size,
            });
        }
        if self
            .max_backlog
            .is_some_and(|max| conn.outstanding.len() >= max)
        {
            return Err(TransportError::TryAgain);
        }
        let from = conn.member;
        let seq = conn.next_msg;
        let view: Vec<ConnId> = conn.view.iter().copied().collect();
        let payload: Arc<[u8]> = Arc::from(bytes);
        let mut copies = 0;
        for reader in view {
            let tracked = match self.policy {
                FlowControlPolicy::OwnBacklog => reader == id,
                FlowControlPolicy::SlowestMember => true,
            };
            if let Some(rc) = self.conns.get_mut(&reader) {
                rc.queue.push_back(Queued::Deliver {
                    from,
                    bytes: Arc::clone(&payload),
                    track: tracked.then_some((id, seq)),
                });
                wakers.extend(rc.waker.take());
                if tracked {
                    copies += 1;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.next_msg += 1;
            if copies > 0 {
                conn.outstanding.insert(seq, copies);
            }
        }
        Ok(())
    }

    fn next_event(
        &mut self,
        id: ConnId,
        waker: Option<&Waker>,
        wakers: &mut Vec<Waker>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        let Some(conn) = self.conns.get(&id) else {
            return Poll::Ready(Err(released()));
        };
        if let Status::Closed(why) = &conn.status {
            return Poll::Ready(Err(why.clone()));
        }
        let paused = self.procs.get(&conn.member).is_some_and(|ps| ps.paused);
        let Some(conn) = self.conns.get_mut(&id) else {
            return Poll::Ready(Err(released()));
        };
        let popped = if paused { None } else { conn.queue.pop_front() };
        match popped {
            Some(Queued::Event(event)) => Poll::Ready(Ok(event)),
            Some(Queued::Deliver { from, bytes, track }) => {
                if let Some(track) = track {
                    self.untrack(track, wakers);
                }
                Poll::Ready(Ok(TransportEvent::Deliver {
                    from,
                    bytes: bytes.to_vec(),
                }))
            }
            None if conn.status == Status::Left && !paused => {
                Poll::Ready(Err(Status::Left.closed_error()))
            }
            None => {
                if let Some(waker) = waker {
                    match &mut conn.waker {
                        Some(old) if old.will_wake(waker) => {}
                        slot => *slot = Some(waker.clone()),
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::next_event;

    fn group(name: &str) -> GroupName {
        GroupName::new(name).expect("valid group name")
    }

    fn drain(conn: &mut SimConnection) -> Vec<TransportEvent> {
        let mut events = Vec::new();
        while let Ok(Some(event)) = conn.try_next_event() {
            events.push(event);
        }
        events
    }

    fn delivered(events: &[TransportEvent]) -> Vec<(Member, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                TransportEvent::Deliver { from, bytes } => Some((*from, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    fn confchgs(
        events: &[TransportEvent],
    ) -> Vec<(Vec<Member>, Vec<MemberChange>, Vec<MemberChange>)> {
        events
            .iter()
            .filter_map(|e| match e {
                TransportEvent::ConfChg {
                    members,
                    joined,
                    left,
                } => Some((members.clone(), joined.clone(), left.clone())),
                _ => None,
            })
            .collect()
    }

    fn join(cluster: &SimCluster, node: u32, g: &GroupName) -> SimConnection {
        cluster
            .process(NodeId(node))
            .expect("node is up")
            .join(g)
            .expect("join succeeds")
    }

    fn change(member: Member, reason: Reason) -> MemberChange {
        MemberChange { member, reason }
    }

    #[test]
    fn handles_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<SimCluster>();
        send_sync::<SimProcess>();
        send::<SimConnection>();
    }

    #[test]
    fn a_joiner_reads_its_confchg_then_the_ring_then_quorum() {
        let cluster = SimCluster::new(3);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let events = drain(&mut a);
        let me = a.local();
        assert_eq!(me, Member::new(1, FIRST_PID));
        let ring = RingId {
            nodeid: NodeId(1),
            seq: 1,
        };
        let nodes = vec![NodeId(1), NodeId(2), NodeId(3)];
        assert_eq!(
            events,
            vec![
                TransportEvent::ConfChg {
                    members: vec![me],
                    joined: vec![change(me, Reason::Join)],
                    left: vec![],
                },
                TransportEvent::TotemConfChg {
                    ring_id: ring,
                    nodes: nodes.clone(),
                },
                TransportEvent::Quorum(QuorumState {
                    quorate: true,
                    ring_id: ring,
                    nodes,
                }),
            ]
        );
    }

    #[test]
    fn existing_members_see_the_same_join_confchg_as_the_joiner() {
        let cluster = SimCluster::new(2);
        let g = group("g");
        let mut a = join(&cluster, 2, &g);
        drain(&mut a);
        let mut b = join(&cluster, 1, &g);
        let at_a = confchgs(&drain(&mut a));
        let at_b = confchgs(&drain(&mut b));
        assert_eq!(at_a.len(), 1);
        assert_eq!(at_a, at_b);
        let (members, joined, left) = &at_a[0];
        assert_eq!(
            members,
            &vec![b.local(), a.local()],
            "sorted by (node, pid)"
        );
        assert_eq!(joined, &vec![change(b.local(), Reason::Join)]);
        assert!(left.is_empty());
        assert_eq!(a.members(), Ok(vec![b.local(), a.local()]));
    }

    #[test]
    fn the_sender_receives_its_own_message() {
        let cluster = SimCluster::new(1);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        drain(&mut a);
        a.mcast(b"ping").expect("sent");
        assert_eq!(
            drain(&mut a),
            vec![TransportEvent::Deliver {
                from: a.local(),
                bytes: b"ping".to_vec()
            }]
        );
    }

    #[test]
    fn three_senders_produce_one_order_seen_by_every_member() {
        let cluster = SimCluster::new(3);
        let g = group("g");
        let mut conns: Vec<SimConnection> = (1..=3).map(|n| join(&cluster, n, &g)).collect();
        let mut streams: Vec<Vec<TransportEvent>> = vec![Vec::new(); 3];
        let mut rng = SimRng::new(7);
        for round in 0..60u32 {
            let sender = rng.below(3) as usize;
            conns[sender].mcast(&round.to_le_bytes()).expect("sent");
            // Readers drain at different paces; the order must not depend on it.
            let reader = rng.below(3) as usize;
            if let Ok(Some(event)) = conns[reader].try_next_event() {
                streams[reader].push(event);
            }
        }
        for (conn, stream) in conns.iter_mut().zip(&mut streams) {
            stream.extend(drain(conn));
        }
        let seen: Vec<Vec<(Member, Vec<u8>)>> = streams.iter().map(|s| delivered(s)).collect();
        assert_eq!(seen[0].len(), 60);
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[1], seen[2]);
        let senders: BTreeSet<Member> = seen[0].iter().map(|(from, _)| *from).collect();
        assert_eq!(senders.len(), 3);
    }

    #[test]
    fn leave_is_seen_as_leave_and_the_leaver_reads_its_own_leave_then_closed() {
        let cluster = SimCluster::new(2);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let mut b = join(&cluster, 2, &g);
        drain(&mut a);
        drain(&mut b);
        b.mcast(b"last").expect("sent");
        b.leave().expect("left");
        let expected = (
            vec![a.local()],
            vec![],
            vec![change(b.local(), Reason::Leave)],
        );
        let at_a = drain(&mut a);
        assert_eq!(delivered(&at_a), vec![(b.local(), b"last".to_vec())]);
        assert_eq!(confchgs(&at_a), vec![expected.clone()]);
        let at_b = drain(&mut b);
        assert_eq!(delivered(&at_b), vec![(b.local(), b"last".to_vec())]);
        assert_eq!(confchgs(&at_b), vec![expected]);
        assert!(matches!(b.try_next_event(), Err(TransportError::Closed(_))));
        assert!(matches!(b.mcast(b"x"), Err(TransportError::Closed(_))));
        assert!(matches!(b.leave(), Err(TransportError::Closed(_))));
        assert!(matches!(b.members(), Err(TransportError::Closed(_))));
    }

    #[test]
    fn kill_gives_procdown_and_closes_every_connection_of_the_process() {
        let cluster = SimCluster::new(2);
        let (g, h) = (group("g"), group("h"));
        let victim = cluster.process(NodeId(2)).expect("up");
        let mut vg = victim.join(&g).expect("joined g");
        let mut vh = victim.join(&h).expect("joined h");
        let mut a = join(&cluster, 1, &g);
        let mut b = join(&cluster, 1, &h);
        drain(&mut a);
        drain(&mut b);
        a.mcast(b"unread").expect("sent");
        victim.kill().expect("killed");
        assert_eq!(
            confchgs(&drain(&mut a)),
            vec![(
                vec![a.local()],
                vec![],
                vec![change(victim.member(), Reason::ProcDown)]
            )]
        );
        assert_eq!(
            confchgs(&drain(&mut b))[0].2,
            vec![change(victim.member(), Reason::ProcDown)]
        );
        for conn in [&mut vg, &mut vh] {
            assert!(matches!(
                conn.try_next_event(),
                Err(TransportError::Killed(_))
            ));
            assert!(matches!(conn.mcast(b"x"), Err(TransportError::Killed(_))));
        }
        assert!(matches!(victim.join(&g), Err(TransportError::Closed(_))));
        assert_eq!(victim.kill(), Err(SimError::ProcessDead(victim.member())));
    }

    #[test]
    fn dropping_a_connection_without_leaving_is_procdown() {
        let cluster = SimCluster::new(1);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let b = join(&cluster, 1, &g);
        let gone = b.local();
        drain(&mut a);
        drop(b);
        assert_eq!(
            confchgs(&drain(&mut a))[0].2,
            vec![change(gone, Reason::ProcDown)]
        );
    }

    #[test]
    fn crash_gives_nodedown_after_quorum_and_before_the_new_ring() {
        let cluster = SimCluster::new(3);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let mut c = join(&cluster, 3, &g);
        drain(&mut a);
        drain(&mut c);
        cluster.crash_node(NodeId(3)).expect("crashed");
        let ring = RingId {
            nodeid: NodeId(1),
            seq: 2,
        };
        let nodes = vec![NodeId(1), NodeId(2)];
        assert_eq!(
            drain(&mut a),
            vec![
                TransportEvent::Quorum(QuorumState {
                    quorate: true,
                    ring_id: ring,
                    nodes: nodes.clone()
                }),
                TransportEvent::ConfChg {
                    members: vec![a.local()],
                    joined: vec![],
                    left: vec![change(c.local(), Reason::NodeDown)],
                },
                TransportEvent::TotemConfChg {
                    ring_id: ring,
                    nodes
                },
            ]
        );
        assert!(matches!(c.try_next_event(), Err(TransportError::Killed(_))));
        assert_eq!(
            cluster.process(NodeId(3)).map(|_| ()),
            Err(SimError::NodeDown(NodeId(3)))
        );
        assert_eq!(
            cluster.crash_node(NodeId(3)),
            Err(SimError::NodeDown(NodeId(3)))
        );
    }

    #[test]
    fn a_restarted_node_is_empty_and_rejoins_the_ring() {
        let cluster = SimCluster::new(3);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        drain(&mut a);
        cluster.crash_node(NodeId(2)).expect("crashed");
        cluster.restart_node(NodeId(2)).expect("restarted");
        let events = drain(&mut a);
        assert!(
            confchgs(&events).is_empty(),
            "nobody of the group was on node 2"
        );
        let seqs: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                TransportEvent::TotemConfChg { ring_id, .. } => Some(ring_id.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![2, 3]);
        let mut b = join(&cluster, 2, &g);
        assert_eq!(confchgs(&drain(&mut b))[0].0, vec![a.local(), b.local()]);
        assert_eq!(
            cluster.restart_node(NodeId(2)),
            Err(SimError::NodeAlreadyUp(NodeId(2)))
        );
    }

    #[test]
    fn a_partition_isolates_each_side_and_heal_merges_with_nodeup() {
        let cluster = SimCluster::new(3);
        let g = group("g");
        let mut conns: Vec<SimConnection> = (1..=3).map(|n| join(&cluster, n, &g)).collect();
        for c in &mut conns {
            drain(c);
        }
        let m: Vec<Member> = conns.iter().map(|c| c.local()).collect();
        cluster
            .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
            .expect("partitioned");
        let majority = drain(&mut conns[0]);
        assert!(matches!(&majority[0], TransportEvent::Quorum(q) if q.quorate));
        assert_eq!(
            confchgs(&majority),
            vec![(
                vec![m[0], m[1]],
                vec![],
                vec![change(m[2], Reason::NodeDown)]
            )]
        );
        let minority = drain(&mut conns[2]);
        assert!(matches!(&minority[0], TransportEvent::Quorum(q) if !q.quorate));
        assert_eq!(
            confchgs(&minority),
            vec![(
                vec![m[2]],
                vec![],
                vec![
                    change(m[0], Reason::NodeDown),
                    change(m[1], Reason::NodeDown)
                ]
            )]
        );
        drain(&mut conns[1]);

        conns[0].mcast(b"left side").expect("sent");
        conns[2].mcast(b"right side").expect("sent");
        assert_eq!(
            delivered(&drain(&mut conns[1])),
            vec![(m[0], b"left side".to_vec())]
        );
        assert_eq!(
            delivered(&drain(&mut conns[2])),
            vec![(m[2], b"right side".to_vec())]
        );
        drain(&mut conns[0]);

        cluster.heal();
        for (i, conn) in conns.iter_mut().enumerate() {
            let events = drain(conn);
            let changes = confchgs(&events);
            assert_eq!(changes.len(), 1, "one confchg per group at heal");
            assert_eq!(changes[0].0, m);
            let others: Vec<Member> = if i == 2 { vec![m[0], m[1]] } else { vec![m[2]] };
            let expected: Vec<MemberChange> = others
                .into_iter()
                .map(|o| change(o, Reason::NodeUp))
                .collect();
            assert_eq!(changes[0].1, expected);
            // The minority regains quorum: it hears so after the confchg.
            let quorum_at = events
                .iter()
                .position(|e| matches!(e, TransportEvent::Quorum(q) if q.quorate))
                .expect("a quorate report");
            let confchg_at = events
                .iter()
                .position(|e| matches!(e, TransportEvent::ConfChg { .. }))
                .expect("the merge");
            assert_eq!(quorum_at > confchg_at, i == 2, "member {i}: {events:?}");
            assert!(
                matches!(events.last(), Some(TransportEvent::TotemConfChg { nodes, .. }) if nodes.len() == 3)
            );
        }
    }

    #[test]
    fn ring_seqs_only_grow_cluster_wide() {
        let cluster = SimCluster::new(4);
        let mut seen = Vec::new();
        let mut record = |cluster: &SimCluster| {
            for n in cluster.nodes() {
                if let Some((ring, _)) = cluster.ring(n) {
                    seen.push(ring.seq);
                }
            }
        };
        record(&cluster);
        cluster
            .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3), NodeId(4)]])
            .expect("split");
        let left = cluster.ring(NodeId(1)).expect("up").0;
        let right = cluster.ring(NodeId(3)).expect("up").0;
        assert_ne!(left.seq, right.seq);
        assert_eq!(right.nodeid, NodeId(3));
        record(&cluster);
        cluster.heal();
        let merged = cluster.ring(NodeId(4)).expect("up").0;
        assert!(merged.seq > left.seq.max(right.seq));
        record(&cluster);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn invalid_partitions_and_unknown_nodes_are_errors_not_panics() {
        let cluster = SimCluster::new(3);
        assert_eq!(
            cluster.partition(&[&[NodeId(1)], &[NodeId(2)]]),
            Err(SimError::InvalidPartition("node3 is on no side".into()))
        );
        assert!(matches!(
            cluster.partition(&[&[NodeId(1), NodeId(2)], &[NodeId(2), NodeId(3)]]),
            Err(SimError::InvalidPartition(_))
        ));
        assert_eq!(
            cluster.partition(&[&[NodeId(1), NodeId(2), NodeId(3), NodeId(9)]]),
            Err(SimError::UnknownNode(NodeId(9)))
        );
        assert_eq!(
            cluster.crash_node(NodeId(0)),
            Err(SimError::UnknownNode(NodeId(0)))
        );
        assert!(cluster.process(NodeId(4)).is_err());
        assert_eq!(
            cluster.kill_process(Member::new(1, 1)),
            Err(SimError::UnknownProcess(Member::new(1, 1)))
        );
        let empty = SimCluster::new(0);
        assert!(empty.process(NodeId(1)).is_err());
        empty.heal();
    }

    #[test]
    fn joining_the_same_group_twice_from_one_process_is_an_error() {
        let cluster = SimCluster::new(1);
        let (g, h) = (group("g"), group("h"));
        let p = cluster.process(NodeId(1)).expect("up");
        let mut first = p.join(&g).expect("joined");
        assert!(matches!(p.join(&g), Err(TransportError::Other(_))));
        let other = p.join(&h).expect("another group is fine");
        assert_eq!(other.local(), first.local());
        first.leave().expect("left");
        let again = p.join(&g).expect("may join again after leaving");
        assert_eq!(again.members(), Ok(vec![p.member()]));
    }

    #[test]
    fn oversized_messages_are_rejected() {
        let cluster = SimCluster::builder(1).max_message_size(8).build();
        let mut a = join(&cluster, 1, &group("g"));
        assert_eq!(a.max_message_size(), 8);
        assert_eq!(
            a.mcast(&[0; 9]),
            Err(TransportError::MessageTooLarge { len: 9, max: 8 })
        );
        a.mcast(&[0; 8]).expect("fits");
        let default = SimCluster::new(1);
        let mut b = join(&default, 1, &group("g"));
        assert_eq!(b.max_message_size(), DEFAULT_MAX_MESSAGE_SIZE);
        assert!(matches!(
            b.mcast(&vec![0; DEFAULT_MAX_MESSAGE_SIZE + 1]),
            Err(TransportError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn own_backlog_flow_control_asks_to_try_again_until_the_sender_reads() {
        let cluster = SimCluster::builder(2).max_backlog(2).build();
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let mut b = join(&cluster, 2, &g);
        drain(&mut a);
        a.mcast(b"1").expect("sent");
        assert_eq!(a.flow_control(), FlowControl::Disabled);
        a.mcast(b"2").expect("sent");
        assert_eq!(a.flow_control(), FlowControl::Enabled);
        assert_eq!(a.mcast(b"3"), Err(TransportError::TryAgain));
        // The other member's pace does not matter under this policy.
        assert_eq!(a.backlog(), 2);
        assert!(a.try_next_event().expect("open").is_some());
        assert_eq!(a.flow_control(), FlowControl::Disabled);
        a.mcast(b"3").expect("sent after reading");
        let got: Vec<Vec<u8>> = delivered(&drain(&mut b))
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn slowest_member_flow_control_waits_for_a_paused_member() {
        let cluster = SimCluster::builder(2)
            .max_backlog(1)
            .flow_control(FlowControlPolicy::SlowestMember)
            .build();
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let mut b = join(&cluster, 2, &g);
        drain(&mut a);
        drain(&mut b);
        cluster.pause_process(b.local()).expect("paused");
        a.mcast(b"1").expect("sent");
        drain(&mut a);
        assert_eq!(a.mcast(b"2"), Err(TransportError::TryAgain));
        assert_eq!(
            b.try_next_event(),
            Ok(None),
            "a paused member reads nothing"
        );
        cluster.resume_process(b.local()).expect("resumed");
        assert!(b.try_next_event().expect("open").is_some());
        a.mcast(b"2").expect("sent once the slow member caught up");
        // A member that leaves stops holding the senders back.
        cluster.pause_process(b.local()).expect("paused");
        drain(&mut a);
        assert_eq!(a.mcast(b"3"), Err(TransportError::TryAgain));
        cluster.resume_process(b.local()).expect("resumed");
        b.leave().expect("left");
        a.mcast(b"3").expect("sent");
    }

    #[test]
    fn a_parked_reader_is_woken_by_a_message() {
        let cluster = SimCluster::new(2);
        let g = group("g");
        let mut a = join(&cluster, 1, &g);
        let mut b = join(&cluster, 2, &g);
        drain(&mut a);
        drain(&mut b);
        let reader = std::thread::spawn(move || {
            let event = futures::executor::block_on(next_event(&mut a));
            (a, event)
        });
        // The reader may park before or after this send; either way it wakes.
        b.mcast(b"wake").expect("sent");
        let (_a, event) = reader.join().expect("reader thread");
        assert_eq!(
            event,
            Ok(TransportEvent::Deliver {
                from: b.local(),
                bytes: b"wake".to_vec()
            })
        );
    }

    #[test]
    fn a_poisoned_lock_does_not_stop_the_cluster() {
        let cluster = SimCluster::new(1);
        let state = Arc::clone(&cluster.state);
        let _ = std::thread::spawn(move || {
            let _guard = state.lock();
            panic!("poison the lock on purpose");
        })
        .join();
        assert!(cluster.state.is_poisoned());
        let mut a = join(&cluster, 1, &group("g"));
        a.mcast(b"still works").expect("sent");
        assert_eq!(delivered(&drain(&mut a)).len(), 1);
    }

    #[test]
    fn fault_plans_are_reproducible_from_their_seed() {
        let one = FaultPlan::schedule(42, 5, 200);
        assert_eq!(one, FaultPlan::schedule(42, 5, 200));
        assert_ne!(one, FaultPlan::schedule(43, 5, 200));
        for fault in &one {
            if let Fault::Partition { sides } = fault {
                let mut all: Vec<NodeId> = sides.iter().flatten().copied().collect();
                all.sort();
                assert_eq!(all, (1..=5).map(NodeId).collect::<Vec<_>>());
            }
        }
        assert!(FaultPlan::schedule(1, 0, 10)
            .iter()
            .all(|f| *f == Fault::Heal));
    }

    #[test]
    fn the_rng_is_stable_across_platforms() {
        let mut rng = SimRng::new(0);
        // splitmix64 reference outputs for seed 0.
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(SimRng::new(5).below(0), 0);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
