//! Replicated state machines: one replica of a [`StateMachine`] on every
//! member of a CPG group, commands applied in the group's total order.
//!
//! [`Replica::start`] joins a replica to its group (one connection, its own
//! runtime actor) and resolves once it holds the group's state: at once
//! for the first member, after a state transfer for a late joiner.
//! [`Replica::execute`] multicasts a command; every replica applies it at
//! the same position of the order, and the caller gets *its own replica's*
//! response once the command has been applied there (read-your-writes).
//!
//! # The rules (all decided from the ordered stream)
//!
//! - **Who counts**: only processes of the CPG view that announced
//!   themselves (with their first state info after joining) are members; a
//!   silent or foreign client in the view stalls no install and counts for
//!   no majority, holder or sender, and what it forges is refused and
//!   counted ([`ReplicaStatus::refused`]). The numbered rules, and what
//!   they cannot tell apart without a group key, are in the core's module
//!   docs (`src/replicated/core.rs`).
//! - **Apply order** is delivery order, and only while the view is a
//!   *primary component*; a command delivered elsewhere is refused with
//!   [`ReplicaError::NotPrimary`] on every member (applied by none).
//! - **Primary component**: every member's quorum notification (each member
//!   multicasts its own, so they are facts *in the stream*) says quorate,
//!   and the view holds a strict majority of the last primary component
//!   (members seen leaving with `Leave`/`ProcDown` no longer count) and
//!   that component's state; a group where nobody ever was primary only
//!   needs quorum and a member allowed to found it
//!   ([`ReplicaConfig::found_group`]). Each primary component gets a
//!   growing [`PrimaryEpoch`].
//! - **Which state survives a view change**: after every confchg each
//!   member multicasts a mark and, once the mark is back, its [`StateId`]
//!   (so an answer a lagging member sent to an earlier view of the same
//!   members never counts); the greatest id wins (the latest
//!   primary epoch, then the most commands applied). A member that comes
//!   back from a minority partition holds an older epoch, so it discards
//!   its divergent state and receives the primary component's.
//! - **Snapshot sender**: the lowest member holding the winning state. It
//!   captures its state at the install point — right after the confchg,
//!   before any command delivered after it is applied — encodes it off the
//!   actor, and multicasts it in chunks ([`ReplicaConfig::chunk_size`]),
//!   at most [`ReplicaConfig::chunks_in_flight`] at a time, interleaved with
//!   other traffic.
//!   Receivers buffer what is applied after that point, restore, replay,
//!   and only then report ready. If the sender dies first, the confchg that
//!   says so starts a new install with a new sender.
//! - **Only what is missing** (protocol version [`SUFFIX_VERSION`] on):
//!   each replica keeps the last commands it applied
//!   ([`ReplicaConfig::suffix_bytes`]). When every receiver announced a
//!   state its sender passed through — a replica back from its disk, or
//!   back from a minority partition where it applied nothing — and those
//!   commands encode smaller than the snapshot, the sender multicasts them
//!   instead; each receiver applies those it lacks, checking that each
//!   follows its state (the ids of the commands chain), and must end at
//!   the state the install chose ([`ReplicaEvent::Restored`] says which
//!   was sent). A durable receiver appends them to its log rather than
//!   replacing its snapshot.
//! - **Safe delivery** ([`Delivery::Safe`]): CPG only offers agreed order,
//!   so a command applied and acknowledged on one node could be lost if
//!   that node's daemon died before the others received it. In safe mode a
//!   command is still applied in delivery order, but its reply waits until
//!   a strict majority of the primary component's members have
//!   acknowledged (with an ordered message) that they applied it — and, if
//!   durable, synced it — so an acknowledged command survives the crash of
//!   any minority, disks included. [`Delivery::SafeAll`] waits for every
//!   member holding the state instead.
//! - **Protocol versions**: each replica announces the versions its build
//!   speaks; the group speaks the highest every member speaks, decided in
//!   the stream, so identically everywhere. A replica that cannot speak it
//!   is refused on every member ([`ReplicaEvent::MemberRefused`]) and on
//!   itself ([`ReplicaError::Incompatible`]), and none of its messages
//!   changes anything. When the last member that held the group at an
//!   older version leaves, the group moves up at that point of the stream
//!   ([`ReplicaEvent::VersionChanged`]). To upgrade a running group: start
//!   replicas of the new build (they speak the old version too), then stop
//!   the old ones.
//! - **Observers** ([`ReplicaConfig::role`] = [`Role::Observer`]): a
//!   replica that receives the state and applies every command, so it can
//!   read the state and the group's status, but takes part in no decision.
//!   It is never the state a view goes on from nor its sender, it is in no
//!   primary component's membership and never counts towards a majority of
//!   one, its quorum facts and its founding flag count for nothing, safe
//!   delivery does not wait for it, and it sends no command
//!   ([`ReplicaError::Observer`]; one forged from its process is refused on
//!   every member, [`RefusedCounts::observer`]). A view of observers only
//!   is never primary. [`ReplicaStatus::observers`] and
//!   [`ReplicaEvent::ViewChanged`] say who observes.
//! - **Divergence checks** (protocol version [`DIGEST_VERSION`] on): a
//!   state id names the commands applied, not the state, so a replica whose
//!   `apply` is not deterministic keeps the others' id with another state.
//!   Every [`ReplicaConfig::digest_every`] commands, and on
//!   [`Replica::check`], every participant multicasts the
//!   [`StateMachine::digest`] of its state at the point of the stream
//!   where the check was delivered; a digest held by a strict majority is
//!   right, and every participant with another one is reported on every
//!   member ([`ReplicaEvent::Diverged`]) and receives the state of the
//!   lowest holder of the majority's, as a joiner would. With no majority
//!   it is reported and nothing is sent. Observers are not compared.
//! - **Linearizable reads** (protocol version [`READ_VERSION`] on):
//!   [`Replica::read`] answers from the local state at the point of the
//!   stream where a barrier the replica multicast comes back, so it sees
//!   every command replied to before the read began; under safe delivery
//!   the answer also waits until that state is safe. Nothing is logged or
//!   synced for it. ([`Replica::query`] reads the local state at once,
//!   possibly stale.)
//!
//! # Limits
//!
//! - An observer's copy of the state carries no history forward: once
//!   every participant that held it is gone, the group goes on as if the
//!   observers were not there (a participant that comes may found it
//!   afresh), and the observers receive that state.
//! - Without a data directory the state lives in memory only. Once every
//!   member that held the latest state is gone, the group never goes on
//!   from an older state (that would silently drop what was acknowledged):
//!   it stays non-primary, refusing commands, until the whole group is
//!   restarted (every replica stopped, founders started afresh).
//! - With a data directory ([`ReplicaConfig::data_dir`]) a replica comes
//!   back with what it applied: a command is on disk, under the
//!   [`SyncPolicy`], before its reply (and, in safe mode, before this
//!   replica's acknowledgement). The replica that wrote a directory is
//!   gone for sure once another opens it (the directory is locked), so it
//!   stops counting towards the last primary component, like a member that
//!   left with `ProcDown`. A group restarted whole is primary again once
//!   every member of the last primary component it knows of is back (the
//!   last one alive, alone, if members died one after another); the
//!   greatest state among them goes on. Loss window: with
//!   [`SyncPolicy::Never`], what the operating system had not written when
//!   its machine died; in agreed mode, a command applied and replied here
//!   that no other member received before this node died (as without a
//!   directory); in safe mode under [`SyncPolicy::Batch`] or
//!   [`SyncPolicy::EveryCommand`], nothing acknowledged.
//! - Order of restarts: after members died one after another, the later
//!   ones knew later primary components than the earlier ones. In a keyed
//!   group ([`ReplicaConfig::key`]) every sender holds the key, so a
//!   returning replica's claim is trusted and the replicas may come back
//!   in any order. Without a key a claim past what the members saw in the
//!   stream is refused (rule 6 of the core: it keeps an outsider from
//!   claiming a newer history), except while no member was part of the
//!   primary component it knows of — every member came back from its
//!   disk — where nobody can refute it: from protocol version
//!   [`RECOVERY_VERSION`] on, such a claim is admitted, so an unkeyed
//!   group restarted whole comes back in any order too, and an outsider
//!   joining at that moment could claim a history of its own (as it could
//!   at a founding). A group that still speaks version 3 refuses it: start
//!   the last one to die first there.
//! - A view holding a majority of the last primary component but not its
//!   state — its holders crashed with `NodeDown`, which cannot be told from
//!   a partition — stays non-primary rather than guess; so does a minority.
//! - A group founded afresh in a quorate partition while replicas of an
//!   older state live in a minority partition starts a second history.
//!   When the partitions merge, one history wins and the other side's
//!   acknowledged writes are lost. Which one is decided by the stream, not
//!   by age: every process learns the members at a merge from the first
//!   roster delivered, so if that roster's side holds a majority of its own
//!   last primary component (the cut-off side, when it was all of it), it
//!   installs alone, becomes primary with a new epoch, and wins when the
//!   other side is admitted; otherwise the founded side wins (newer epoch).
//!   Let only the first members found the group, and start every later or
//!   restarted member with [`ReplicaConfig::found_group`] set to `false`:
//!   then no second history can start.
//! - corosync delivers a quorum notification on its own channel, so around
//!   a partition a member's fact may lag the confchg by a few milliseconds;
//!   the majority-of-the-last-primary rule keeps a minority from becoming
//!   primary in that window — unless the minority side holds all of the
//!   last primary component (a group of one, or the members the others
//!   left with `Leave`/`ProcDown`): then it goes on applying until its
//!   fact says otherwise, and nothing else can be primary meanwhile
//!   (no other side holds a majority of that component).
//! - The install exchange takes one multicast round after each confchg. If
//!   the view splits again during that round so that some members complete
//!   the install and others do not (possible under extended virtual
//!   synchrony on a real cluster, not in the sim), each side applies the
//!   majority rule to a different last primary component, and a command
//!   acknowledged around that moment can be lost. Handling it fully needs
//!   the "ambiguous sessions" of dynamic voting (Yeger Lotem, Keidar,
//!   Dolev), which this implementation does not track.

mod core;
mod durable;
mod inspect;
mod keeper;
mod messages;
mod observer;
mod reads;
mod recent;
mod replay;
mod runtime;

/// What `crate::fuzzing` drives (see `crate::group::fuzz_access`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz_access {
    pub(crate) use super::core::{Action, Actions, ReplicaCore};
    pub(crate) use super::messages::{transfer_body, Chunk, CommandMsg, DigestMsg, ReplicaMessage};
    pub(crate) use super::runtime::unpack;
}

use std::future::Future;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use self::durable::{StoreError, SyncPolicy};
pub use self::inspect::{
    Agreement, CheckReport, Checks, ReplicaInspection, ReplicaMemberInspection, SharedState,
};
pub use self::keeper::{bootstrap, Bootstrapped, BOOTSTRAP_LOG};
pub use self::messages::{
    PrimaryEpoch, StateDigest, StateId, BATCH_VERSION, DIGEST_VERSION, READ_VERSION,
    RECOVERY_VERSION, SUFFIX_VERSION,
};
pub use self::observer::ReplicaObserver;
pub use self::replay::replay;
use self::runtime::{Op, ReplicaActor};
use crate::group::{GroupMetrics, MetricsSnapshot};
pub use crate::roster::Role;
use crate::transport::{
    write_view, Connection, GroupName, Member, MemberChange, MemberList, TransportError,
};
use crate::wire::{Codec, Versions};

/// A deterministic state machine: every replica starts from
/// `Self::default()` and applies the same commands in the same order, so
/// every replica holds the same state.
///
/// `apply` must depend only on the state and the command (no clock, no
/// randomness, no I/O), and `restore(&encode(snapshot()))` must give back
/// an equal state.
///
/// A snapshot for a joiner is taken in two steps: [`StateMachine::snapshot`]
/// captures the state at its exact place in the order, on the replica's
/// actor — while it runs, the replica handles nothing else, so it should be
/// cheap (clone `Arc`s, use a persistent map); [`StateMachine::encode`]
/// turns the capture into bytes on a blocking thread, off the actor.
pub trait StateMachine: Default + 'static {
    /// A command; it crosses the group (serde + bincode).
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the caller (never crosses the
    /// group: each caller gets its own replica's response).
    type Response: Send + 'static;
    /// A capture of the whole state, to be encoded off the actor.
    type Snapshot: Send + 'static;

    /// Applies `command` and returns the response.
    fn apply(&mut self, command: Self::Command) -> Self::Response;

    /// Captures the whole state, for members that need it.
    fn snapshot(&self) -> Self::Snapshot;

    /// Encodes a capture (runs on a blocking thread).
    fn encode(snapshot: Self::Snapshot) -> Vec<u8>;

    /// A state from bytes made by [`StateMachine::encode`].
    fn restore(snapshot: &[u8]) -> Result<Self, String>
    where
        Self: Sized;

    /// A digest of the state's content, for divergence checks: replicas
    /// compare their digests at the same point of the stream, and one whose
    /// digest differs from the majority's (typically after an `apply` that
    /// is not deterministic) is reported ([`ReplicaEvent::Diverged`]) and
    /// receives the state of one that holds the majority's. Equal states
    /// must give equal digests on every process: hash the content in a
    /// fixed order (a `BTreeMap`, not a `HashMap`, whose order differs
    /// between processes); [`digest_of`] hashes bytes. It runs on the
    /// replica's actor at each check ([`ReplicaConfig::digest_every`], and
    /// [`Replica::check`]), unless [`StateMachine::DIGESTS_SNAPSHOTS`]
    /// moves the hashing to a blocking thread.
    ///
    /// The default is `None`: this state machine has no digest, and its
    /// replicas abstain from every check.
    fn digest(&self) -> Option<StateDigest> {
        None
    }

    /// Whether [`StateMachine::snapshot_digest`] gives the digest: then a
    /// replica at a check takes a capture ([`StateMachine::snapshot`]) on
    /// its actor and hashes it on a blocking thread, instead of calling
    /// [`StateMachine::digest`] on the actor, which would hold every
    /// command back while a large state is hashed. The default is `false`.
    const DIGESTS_SNAPSHOTS: bool = false;

    /// The digest of the state `snapshot` was captured from, computed on a
    /// blocking thread; only called when
    /// [`StateMachine::DIGESTS_SNAPSHOTS`] is `true`. It must equal what
    /// [`StateMachine::digest`] gives for that state: replicas built with
    /// either path compare their digests. The default is `None` (no
    /// digest: the replica abstains).
    fn snapshot_digest(snapshot: &Self::Snapshot) -> Option<StateDigest> {
        let _ = snapshot;
        None
    }
}

/// A digest of `bytes` (BLAKE3, 32 bytes): for
/// [`StateMachine::digest`], over an encoding of the state that is the same
/// on every process for equal states.
pub fn digest_of(bytes: &[u8]) -> StateDigest {
    *blake3::hash(bytes).as_bytes()
}

/// When a command's reply is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// As soon as this replica applied it (CPG's agreed order). A command
    /// acknowledged here can be lost if this node's daemon dies before the
    /// others received it.
    #[default]
    Agreed,
    /// Once a strict majority of the primary component's participants have
    /// acknowledged applying it (a durable replica: applying and syncing
    /// it), as Raft commits. It survives the loss of any minority of them,
    /// disks included, and any number of whole-group restarts. Costs one
    /// more multicast round per batch of commands, and waits for the
    /// majority's slowest member, not the group's.
    Safe,
    /// Once every participant holding the state has acknowledged applying
    /// (and, durable, syncing) it: it survives the loss of every disk but
    /// one, and a reply means every holder applied it. Waits for the
    /// slowest holder.
    SafeAll,
}

/// Tuning of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// When replies are released.
    pub delivery: Delivery,
    /// Largest message this member sends or accepts, header included
    /// (capped by the transport's atomic limit).
    pub max_message_size: usize,
    /// Bytes of snapshot per chunk (capped to fit in one message).
    pub chunk_size: usize,
    /// Largest snapshot this member accepts.
    pub max_snapshot_size: usize,
    /// Messages multicast but not yet delivered back to this member.
    pub send_window: usize,
    /// Snapshot chunks in flight at once: a transfer never holds other
    /// traffic back by more than this many chunks.
    pub chunks_in_flight: usize,
    /// Capacity of the [`Replica::subscribe`] channel.
    pub event_capacity: usize,
    /// Whether this member may found the group: start a new, empty history
    /// when no member of its view knows of an earlier primary component.
    /// Set it to `false` on members that must only join an existing group
    /// (like a database's "join existing cluster" mode): a member started
    /// on a node cut off from every replica would otherwise found a second
    /// history, which replaces the first when the partitions merge.
    pub found_group: bool,
    /// The group's shared secret: every multicast carries a MAC, and a
    /// delivery without a valid one from its CPG sender is dropped before
    /// it is decoded (counted in
    /// [`MetricsSnapshot::dropped_unauthenticated`]). `None` (the default)
    /// keeps today's bytes. See [`crate::auth`].
    pub key: Option<crate::auth::GroupKey>,
    /// Most commands (or other messages) this replica buffers while it
    /// waits: commands held during an install round (past it every member
    /// refuses the same ones with [`ReplicaError::Overloaded`]), commands
    /// to replay after a snapshot and messages recorded while learning the
    /// members (past those this replica gives up and leaves, with
    /// [`ReplicaEvent::GaveUp`]).
    pub max_held: usize,
    /// How long a replica that does not know the group's members yet
    /// (joining, or at a merge) waits for a member's roster before it asks
    /// the group to decide that nobody is a member (the processes of the
    /// view are then all silent clients or other newcomers).
    pub learn_timeout: std::time::Duration,
    /// The protocol versions this replica speaks: this build's
    /// ([`Versions::this_build`]). Only tests of version negotiation set
    /// another range (with [`crate::wire::NEXT_PROTOCOL_VERSION`], whose
    /// commands have a changed layout), to play a newer build.
    #[doc(hidden)]
    pub protocol_versions: Versions,
    /// What this replica does in the group. [`Role::Participant`] (the
    /// default) takes part in everything; [`Role::Observer`] receives the
    /// state and applies every command, so it can read the state and the
    /// group's status, but takes part in no decision: it is never the
    /// state a view goes on from nor its sender, never counts towards a
    /// primary component, its quorum facts and acknowledgements do not
    /// count, and it sends no command ([`ReplicaError::Observer`]). For
    /// read replicas, monitoring tools and the library's own clients.
    pub role: Role,
    /// Record this replica's ordered stream to this file (see
    /// [`crate::record`]; in a keyed group the verified deliveries without
    /// their MAC), to replay its decisions offline with [`replay`] and the
    /// same state machine.
    pub record_to: Option<std::path::PathBuf>,
    /// Keep the state in this directory (created if needed), so a
    /// restarted replica comes back with it: a log of every command
    /// applied, a snapshot every [`ReplicaConfig::snapshot_every`]
    /// commands, and the last primary component it knew. One replica per
    /// directory: a second one started on it fails with
    /// [`ReplicaError::Storage`]; once the replica is closed
    /// ([`ReplicaStatus::closed`]) the directory is free again. `None` (the
    /// default): in memory only.
    ///
    /// The files are plain files, not an embedded database: the log is
    /// append-only and read once at start, a snapshot is one blob, and the
    /// [`SyncPolicy`] maps one-to-one onto `fdatasync` calls (group commit
    /// is one per batch of delivered commands); a B-tree store would add
    /// a log and a sync schedule of its own under ours for no query the
    /// replica makes. Every record carries a digest, and recovery cuts
    /// the log at the first record that does not verify.
    pub data_dir: Option<std::path::PathBuf>,
    /// When what a durable replica applied reaches the disk, relative to
    /// the replies it releases ([`SyncPolicy`]; only with a
    /// [`ReplicaConfig::data_dir`]).
    pub sync: SyncPolicy,
    /// Commands between two divergence checks: the lowest participant of
    /// the view asks for one once this many commands were applied since the
    /// last (0: only on demand, [`Replica::check`]). Each costs one
    /// multicast per participant and one [`StateMachine::digest`] on each;
    /// nothing with a state machine that has none.
    pub digest_every: u64,
    /// Commands between two snapshots of a durable replica: a restart
    /// replays at most this many from the log.
    pub snapshot_every: u64,
    /// Bytes of command payloads each replica keeps of what it applied
    /// last, so that a transfer to replicas holding a prefix of its state
    /// (one back from its disk, one cut off for a while) can carry only
    /// the commands they lack, when that is smaller than a snapshot
    /// (protocol version [`SUFFIX_VERSION`] on). 0: every transfer is a
    /// snapshot.
    pub suffix_bytes: usize,
    /// Most replica messages one multicast carries. 1 (the default): each
    /// goes alone. Above 1, what is queued when the replica sends
    /// (commands taken together, messages that piled up while
    /// [`ReplicaConfig::send_window`] was full) goes out as one batch, each
    /// message still handled at its own position; nothing is held back to
    /// wait for company. Only once the group speaks protocol version
    /// [`BATCH_VERSION`] (every build that speaks it reads a batch of
    /// replica messages, whatever its own setting); before, each message
    /// goes alone. Members may set it differently.
    pub batch_messages: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            delivery: Delivery::Agreed,
            max_message_size: 1 << 20,
            chunk_size: 256 * 1024,
            max_snapshot_size: 1 << 30,
            send_window: 64,
            chunks_in_flight: 1,
            event_capacity: 4096,
            found_group: true,
            key: None,
            max_held: 100_000,
            learn_timeout: std::time::Duration::from_secs(1),
            protocol_versions: Versions::this_build(),
            role: Role::Participant,
            record_to: None,
            data_dir: None,
            sync: SyncPolicy::default(),
            digest_every: 10_000,
            snapshot_every: 10_000,
            suffix_bytes: 8 << 20,
            batch_messages: 1,
        }
    }
}

/// Something that happened to this replica, in stream order. Serializable for tools
/// (`acpg watch --json`); never sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ReplicaEvent {
    /// The membership changed (the view is installing).
    ViewChanged {
        /// The view after the change, sorted.
        members: Vec<Member>,
        /// The observers among `members` ([`Role::Observer`]), sorted.
        observers: Vec<Member>,
        /// Who joined, and why.
        joined: Vec<MemberChange>,
        /// Who left, and why.
        left: Vec<MemberChange>,
    },
    /// Every member's state info is in: the view is installed.
    Installed {
        /// Whether the view is a primary component.
        primary: bool,
        /// Its epoch, if primary.
        epoch: Option<PrimaryEpoch>,
        /// Who sends the state to the others, if anyone needs it.
        sender: Option<Member>,
        /// Who receives it.
        receivers: Vec<Member>,
    },
    /// A quorum fact made the installed view primary, or not.
    PrimaryChanged {
        /// Whether it is primary now.
        primary: bool,
        /// The new epoch, if it became primary.
        epoch: Option<PrimaryEpoch>,
    },
    /// This member captured its state to send it.
    TransferStarted {
        /// The receivers.
        to: Vec<Member>,
    },
    /// The capture is encoded; its chunks go out now.
    TransferEncoded {
        /// Snapshot size.
        bytes: u64,
    },
    /// This member took the state it was sent, and replayed what it
    /// buffered meanwhile.
    Restored {
        /// The sender.
        from: Member,
        /// Size of what was sent.
        bytes: u64,
        /// `None`: a snapshot was sent. `Some(n)`: only the commands this
        /// member lacked, of which it applied `n` (the rest it had).
        suffix: Option<u64>,
        /// Commands (and epoch changes) replayed after it.
        replayed: usize,
    },
    /// This member holds the group state for the first time.
    Ready,
    /// A buffer this replica keeps while waiting (see
    /// [`ReplicaConfig::max_held`], [`ReplicaConfig::max_snapshot_size`])
    /// overflowed: it leaves the group ([`ReplicaEvent::Closed`] follows);
    /// start it again to rejoin.
    GaveUp {
        /// What overflowed.
        why: String,
    },
    /// A process announced protocol versions that do not include the one
    /// the group speaks: it is no member, and none of its messages changes
    /// anything. Every process that knows the members reports it at the
    /// same position of the stream; when `member` is this replica, it
    /// stops ([`ReplicaError::Incompatible`], then [`ReplicaEvent::Closed`]).
    MemberRefused {
        /// The refused process.
        member: Member,
        /// The versions it speaks.
        versions: Versions,
        /// The version the group speaks there.
        group_version: u8,
    },
    /// The group speaks another protocol version from this point of the
    /// stream on: the highest every member speaks changed, because the
    /// last member that held it back left (or this replica was admitted:
    /// `from` is then `None`). The replica writes at `to` from here on.
    VersionChanged {
        /// The version spoken before, as this member knew it; `None` when
        /// it knew none.
        from: Option<u8>,
        /// The version spoken from here on.
        to: u8,
    },
    /// A divergence check completed and every participant's digest agreed
    /// (rule 11).
    Checked {
        /// The state every participant held at the check's point.
        at: StateId,
        /// How many participants sent a digest.
        compared: usize,
    },
    /// A divergence check found participants whose state differs from the
    /// majority's at the same point of the stream (rule 11): their
    /// `apply` is not deterministic, or their memory was changed. Reported
    /// on every member; each diverged one logs an error and, if a digest
    /// was held by a majority, receives the state of `resync_from`.
    Diverged {
        /// The state every participant held at the check's point.
        at: StateId,
        /// The participants whose digest differed (with no majority: every
        /// participant compared), sorted.
        members: Vec<Member>,
        /// Who sends them its state (`None`: no digest was held by a
        /// majority, so nobody can tell which is right; nothing is sent).
        resync_from: Option<Member>,
    },
    /// The transport failed or the replica left; the runtime has stopped.
    Closed {
        /// Why.
        error: TransportError,
    },
}

/// One line: `installed, primary (epoch 3.1); node1/1007 sends the state
/// to [node3/1009]`, `no longer primary`.
impl std::fmt::Display for ReplicaEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaEvent::ViewChanged {
                members,
                observers,
                joined,
                left,
            } => {
                write_view(f, members, joined, left)?;
                if !observers.is_empty() {
                    write!(f, "; observers {}", MemberList(observers))?;
                }
                Ok(())
            }
            ReplicaEvent::Installed {
                primary,
                epoch,
                sender,
                receivers,
            } => {
                f.write_str("installed, ")?;
                write_primary(f, *primary, epoch)?;
                if let Some(sender) = sender {
                    write!(f, "; {sender} sends the state to {}", MemberList(receivers))?;
                }
                Ok(())
            }
            ReplicaEvent::PrimaryChanged {
                primary: true,
                epoch,
            } => {
                f.write_str("now ")?;
                write_primary(f, true, epoch)
            }
            ReplicaEvent::PrimaryChanged { primary: false, .. } => f.write_str("no longer primary"),
            ReplicaEvent::TransferStarted { to } => {
                write!(f, "sending the state to {}", MemberList(to))
            }
            ReplicaEvent::TransferEncoded { bytes } => {
                write!(f, "state encoded: {bytes} bytes")
            }
            ReplicaEvent::Restored {
                from,
                bytes,
                suffix: None,
                replayed,
            } => write!(
                f,
                "restored {bytes} bytes of state from {from}, replayed {replayed}"
            ),
            ReplicaEvent::Restored {
                from,
                bytes,
                suffix: Some(applied),
                replayed,
            } => write!(
                f,
                "caught up from {from} with {applied} commands it lacked ({bytes} bytes), replayed {replayed}"
            ),
            ReplicaEvent::Ready => f.write_str("ready: this member holds the group state"),
            ReplicaEvent::GaveUp { why } => write!(f, "gave up: {why}"),
            ReplicaEvent::MemberRefused {
                member,
                versions,
                group_version,
            } => write!(
                f,
                "{member} refused: it speaks {versions}, the group speaks v{group_version}"
            ),
            ReplicaEvent::VersionChanged { from: Some(v), to } => {
                write!(f, "protocol version v{v} -> v{to}")
            }
            ReplicaEvent::VersionChanged { from: None, to } => {
                write!(f, "protocol version v{to}")
            }
            ReplicaEvent::Checked { at, compared } => {
                write!(
                    f,
                    "state digests of {compared} participant(s) agree after command {}",
                    at.applied
                )
            }
            ReplicaEvent::Diverged {
                at,
                members,
                resync_from: Some(from),
            } => write!(
                f,
                "state of {} diverged after command {}; {from} sends its state",
                MemberList(members),
                at.applied
            ),
            ReplicaEvent::Diverged {
                at,
                members,
                resync_from: None,
            } => write!(
                f,
                "states of {} differ after command {} and no digest has a majority; nothing resent",
                MemberList(members),
                at.applied
            ),
            ReplicaEvent::Closed { error } => write!(f, "closed: {error}"),
        }
    }
}

fn write_primary(
    f: &mut std::fmt::Formatter<'_>,
    primary: bool,
    epoch: &Option<PrimaryEpoch>,
) -> std::fmt::Result {
    match (primary, epoch) {
        (true, Some(epoch)) => write!(f, "primary (epoch {epoch})"),
        (true, None) => f.write_str("primary"),
        (false, _) => f.write_str("not primary"),
    }
}

/// Why a command has no response (each variant says whether it was
/// applied), or a read ([`Replica::read`]) no answer: a read changes
/// nothing, so it may always be tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The command reached the order in a view that is not a primary
    /// component: no member applied it. Retry once the group is primary.
    #[error("not in a primary component; the command was not applied")]
    NotPrimary,
    /// The command reached the order before this replica was admitted as a
    /// member (it had not announced itself yet): every member refused it,
    /// none applied it. Retry once the replica is ready.
    #[error("not yet a member; the command was not applied")]
    NotMember,
    /// The command arrived while the group held more commands than
    /// [`ReplicaConfig::max_held`] during an install: every member refused
    /// it, none applied it. Retry later.
    #[error("too many commands waiting for an install; the command was not applied")]
    Overloaded,
    /// The command was written at protocol version `version`, which a
    /// member admitted while it was in flight does not speak: every member
    /// refused it, none applied it. Retry (the replica writes at the
    /// group's version).
    #[error("written at protocol v{version}, which some member does not speak; the command was not applied")]
    StaleVersion {
        /// The version the command was written at.
        version: u8,
    },
    /// The group speaks a protocol version this build does not: the
    /// members refused this replica where its announcement was delivered,
    /// and its runtime stopped. Nothing of it was applied anywhere.
    /// Upgrade (or downgrade) this build to one that speaks
    /// `group_version`, or wait until the members that hold the group
    /// there are upgraded, then start the replica again.
    #[error("the group speaks protocol v{group_version}; this build speaks {ours}")]
    Incompatible {
        /// What this build speaks.
        ours: Versions,
        /// What the group speaks.
        group_version: u8,
    },
    /// A divergence check ([`Replica::check`]) cannot run: the group speaks
    /// protocol version `version`, before [`DIGEST_VERSION`] (a member of
    /// an older build is in it). Nothing was sent.
    #[error("the group speaks protocol v{version}, before divergence checks; nothing was sent")]
    ChecksUnsupported {
        /// The version the group speaks.
        version: u8,
    },
    /// A linearizable read ([`Replica::read`]) cannot be answered without
    /// a command: the group speaks protocol version `version`, before
    /// [`READ_VERSION`] (a member of an older build is in it). Nothing was
    /// sent. Read through a command of the state machine instead, or
    /// once the older members are upgraded.
    #[error("the group speaks protocol v{version}, before read barriers; nothing was sent")]
    ReadsUnsupported {
        /// The version the group speaks.
        version: u8,
    },
    /// This replica is an observer ([`ReplicaConfig::role`]): it sends no
    /// command. Nothing was sent; no member applied it. Do not retry:
    /// write through a participant. (A command an observer's process
    /// forges anyway is refused alike on every member, counted in
    /// [`RefusedCounts::observer`].)
    #[error("an observer sends no command; nothing was sent")]
    Observer,
    /// The view changed before the outcome was known here: the command may
    /// or may not have been applied (like a timeout). Retry only if the
    /// command is idempotent, or read the state first. A read gets it when
    /// the view changed before the state it read was safe to show (rule 12
    /// of the replica's rules): read again.
    #[error("the view changed before the outcome was known; the command may have been applied")]
    Uncertain,
    /// The command could not be encoded or decoded; it was not applied.
    #[error("codec: {0}")]
    Codec(#[source] crate::wire::WireError),
    /// The transport refused the command (e.g. too large); not applied.
    #[error("transport: {0}")]
    Transport(TransportError),
    /// The replica's runtime has stopped (left, transport closed, or a
    /// snapshot that did not restore). Outcome unknown for commands in
    /// flight.
    #[error("replica closed")]
    Closed,
    /// The recording file ([`ReplicaConfig::record_to`]) could not be
    /// created: the replica did not start, nothing was applied. Retry once
    /// the path is writable.
    #[error("recording: {0}")]
    Record(String),
    /// The data directory ([`ReplicaConfig::data_dir`]) could not be used:
    /// at start (unreadable, damaged, held by another replica, or a log
    /// that does not replay with this state machine; the replica did not
    /// start), or while running (a write failed; the replica stopped, and
    /// what it acknowledged before is durable).
    #[error("data directory: {0}")]
    Storage(String),
}

/// A command's response, and where it landed in the group's history (or
/// a read's value, and the state it read: [`Replica::read_traced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed<R> {
    /// What this replica's state machine returned (a read: what the
    /// closure returned).
    pub response: R,
    /// The state id right after the command: `state.applied` is its
    /// position among all applied commands, `state.genesis` the history it
    /// belongs to. For a read, the state it read.
    pub state: StateId,
}

/// A replica's situation as of the last event it handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// This member.
    pub local: Option<Member>,
    /// The current view, sorted.
    pub members: Vec<Member>,
    /// The observers among `members` ([`Role::Observer`]), sorted: they
    /// hold the state but count for no decision, so a view of observers
    /// only is never primary.
    pub observers: Vec<Member>,
    /// Whether the view is installed (every member's info is in).
    pub installed: bool,
    /// Whether this replica holds the view's state (not waiting for it).
    pub holding: bool,
    /// Whether the view is a primary component.
    pub primary: bool,
    /// Its epoch, while primary.
    pub epoch: Option<PrimaryEpoch>,
    /// Whether this replica has held the state at least once.
    pub ready: bool,
    /// The id of the state this replica holds.
    pub state: StateId,
    /// Messages multicast and not yet delivered back, plus queued ones.
    pub outstanding: usize,
    /// Whether the runtime has stopped (left, or the transport closed).
    pub closed: bool,
    /// The last snapshot this replica restored: its sender and size.
    pub restored: Option<(Member, u64)>,
    /// Protocol messages this replica refused, by cause.
    pub refused: RefusedCounts,
    /// The protocol version the group speaks, as this replica knows it
    /// (`None` before it knows the members).
    pub protocol_version: Option<u8>,
}

/// Protocol messages a replica refused, by cause (DESIGN.md §6). Every
/// member refuses the same messages of the stream, so the counts agree
/// across members that saw the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
// Counters are added as the library grows: built only by the library.
#[non_exhaustive]
pub struct RefusedCounts {
    /// A fact, command, ack or info from a process that is not an
    /// announced member (or not in the view).
    pub not_member: u64,
    /// An info claiming an epoch past what the stream allows.
    pub epoch: u64,
    /// An info that contradicts itself (a state newer than the primary
    /// component its sender knows of).
    pub inconsistent: u64,
    /// A snapshot chunk not from the chosen sender, not of the chosen
    /// state, out of order, or after the transfer ended.
    pub chunk: u64,
    /// An info answering an older view or round (a race, not an attack).
    pub stale: u64,
    /// A command refused because the install's hold buffer was full.
    pub overflow: u64,
    /// A fact, command, ack or chunk in an envelope of a protocol version
    /// some member does not speak (written before a member that does not
    /// speak it was admitted).
    pub version: u64,
    /// An announcement whose protocol versions do not include the one the
    /// group speaks: its sender was refused (an older or newer build, not
    /// an attack).
    pub incompatible: u64,
    /// A command, quorum fact or ack from an observer, which takes part in
    /// no decision (its own replica sends none of them).
    pub observer: u64,
    /// A digest from a participant the open divergence check does not
    /// wait for (it already sent one, or the check opened before its
    /// admission). A digest for a check that a view change closed is
    /// `stale`.
    pub digest: u64,
}

impl RefusedCounts {
    /// Refusals of every cause but `stale`, `version` and `incompatible`,
    /// which honest races and builds of other versions produce.
    pub fn hostile(&self) -> u64 {
        self.not_member
            + self.epoch
            + self.inconsistent
            + self.chunk
            + self.overflow
            + self.observer
            + self.digest
    }
}

/// A handle to this process's replica. Clone freely; the runtime stops on
/// [`Replica::leave`] or when the transport closes.
pub struct Replica<S: StateMachine> {
    ops: mpsc::UnboundedSender<Op<S>>,
    local: Member,
    name: GroupName,
    metrics: Arc<GroupMetrics>,
    events: broadcast::Sender<ReplicaEvent>,
    status: watch::Receiver<ReplicaStatus>,
    /// Why the runtime stopped, when it stopped for a reason a call should
    /// report rather than [`ReplicaError::Closed`] (the group refused it).
    stopped: Stopped,
    /// What this replica does in the group.
    role: Role,
}

/// Why a replica's runtime stopped, set once by the runtime.
pub(crate) type Stopped = Arc<OnceLock<ReplicaError>>;

/// What a call gets once the runtime is gone.
fn gone(stopped: &Stopped) -> ReplicaError {
    stopped.get().cloned().unwrap_or(ReplicaError::Closed)
}

impl<S: StateMachine> Clone for Replica<S> {
    fn clone(&self) -> Self {
        Replica {
            ops: self.ops.clone(),
            local: self.local,
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
            status: self.status.clone(),
            stopped: self.stopped.clone(),
            role: self.role,
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish()
    }
}

impl<S: StateMachine> Replica<S> {
    /// Starts a replica on the current actix arbiter over `conn` and
    /// returns once it holds the group state (its first install, or the
    /// end of its state transfer). The view may or may not be primary
    /// then: see [`Replica::wait_primary`]. Fails with
    /// [`ReplicaError::Incompatible`] when the group speaks a protocol
    /// version this build does not.
    pub async fn start<C: Connection>(
        conn: C,
        config: ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        let local = conn.local();
        let name = conn.group().clone();
        let metrics = Arc::new(GroupMetrics::default());
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (status_tx, status) = watch::channel(ReplicaStatus {
            local: Some(local),
            ..ReplicaStatus::default()
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let recorder = crate::record::Recorder::for_config(
            config.record_to.as_deref(),
            local,
            crate::record::Protocol::Replica,
        )
        .map_err(ReplicaError::Record)?;
        let conn = crate::auth::boxed(conn, config.key.as_ref(), metrics.unauthenticated_counter());
        let stopped = Stopped::default();
        let role = config.role;
        ReplicaActor::<S>::start_with(
            conn,
            ops_rx,
            config,
            runtime::Outlets {
                metrics: metrics.clone(),
                events: events.clone(),
                status: status_tx,
                stopped: stopped.clone(),
                recorder,
            },
            ready_tx,
        )?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Replica {
                ops,
                local,
                name,
                metrics,
                events,
                status,
                stopped,
                role,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(gone(&stopped)),
        }
    }

    /// This member.
    pub fn local(&self) -> Member {
        self.local
    }

    /// What this replica does in the group ([`ReplicaConfig::role`]).
    pub fn role(&self) -> Role {
        self.role
    }

    /// The group's name.
    pub fn name(&self) -> &GroupName {
        &self.name
    }

    /// Counters of what this replica received, sent and dropped.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.events.subscribe()
    }

    /// The replica's situation as of the last event it handled.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Resolves once the view is a primary component (at once if it is).
    pub async fn wait_primary(&self) -> Result<PrimaryEpoch, ReplicaError> {
        let mut status = self.status.clone();
        loop {
            {
                let s = status.borrow_and_update();
                if let (true, Some(epoch)) = (s.primary && s.holding, s.epoch) {
                    return Ok(epoch);
                }
            }
            status.changed().await.map_err(|_| gone(&self.stopped))?;
        }
    }

    /// Multicasts `command` and resolves with this replica's response once
    /// it has applied it (and, in safe mode, once every participant holding
    /// the state has). The command is queued when this is called, so
    /// commands issued one after the other enter the total order in that
    /// order. An observer gets [`ReplicaError::Observer`] at once.
    pub fn execute(
        &self,
        command: S::Command,
    ) -> impl Future<Output = Result<S::Response, ReplicaError>> + 'static {
        let executed = self.execute_traced(command);
        async move { executed.await.map(|e| e.response) }
    }

    /// Like [`Replica::execute`], and also tells where in the group's
    /// history the command landed: the [`StateId`] right after it, whose
    /// `applied` is the command's position in the total order of applied
    /// commands (the same on every replica).
    pub fn execute_traced(
        &self,
        command: S::Command,
    ) -> impl Future<Output = Result<Executed<S::Response>, ReplicaError>> + 'static {
        let queued = self.queue(&command);
        let stopped = self.stopped.clone();
        async move { queued?.await.map_err(|_| gone(&stopped))? }
    }

    #[allow(clippy::type_complexity)]
    fn queue(
        &self,
        command: &S::Command,
    ) -> Result<oneshot::Receiver<Result<Executed<S::Response>, ReplicaError>>, ReplicaError> {
        if self.role == Role::Observer {
            return Err(ReplicaError::Observer);
        }
        let payload = Codec::new(self.metrics.limit())
            .encode_payload(command)
            .map_err(ReplicaError::Codec)?;
        let (done, rx) = oneshot::channel();
        self.ops
            .send(Op::Execute { payload, done })
            .map_err(|_| gone(&self.stopped))?;
        Ok(rx)
    }

    /// Reads the local replica's state (as of the last command it applied;
    /// it may lag the group — to read linearizably, use
    /// [`Replica::read`]).
    pub async fn query<R, F>(&self, read: F) -> Result<R, ReplicaError>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op = Op::Query(Box::new(move |s: &S| {
            let _ = tx.send(read(s));
        }));
        self.ops.send(op).map_err(|_| gone(&self.stopped))?;
        rx.await.map_err(|_| gone(&self.stopped))
    }

    /// Reads the state linearizably, without a command: the answer reflects
    /// every command whose reply anyone had before this call, as a command
    /// would, but nothing is logged, synced or applied anywhere. The
    /// replica multicasts a small barrier and runs `read` on its own state
    /// where the barrier comes back in the total order (rule 12 of the
    /// replica's rules); with [`Delivery::Safe`] or [`Delivery::SafeAll`]
    /// the answer waits, as a reply would, until the state it read is
    /// acknowledged by the majority (every holder), and a durable replica
    /// waits for its own sync as for a reply. The read is queued when this
    /// is called, behind the commands queued before it, so it sees them.
    /// Reads asked in one turn of the runtime share one barrier. Observers
    /// can read this way too.
    ///
    /// Errors (nothing was read; retrying is always safe):
    /// [`ReplicaError::NotMember`] before the replica is a member,
    /// [`ReplicaError::NotPrimary`] where the barrier came back in a view
    /// that is not primary, [`ReplicaError::Uncertain`] when the view
    /// changed before the state read was safe to show,
    /// [`ReplicaError::Overloaded`] past [`ReplicaConfig::max_held`] reads
    /// waiting, [`ReplicaError::ReadsUnsupported`] while a member of an
    /// older build holds the group's version back (read through a command
    /// then).
    pub fn read<R, F>(&self, read: F) -> impl Future<Output = Result<R, ReplicaError>> + 'static
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let read = self.read_traced(read);
        async move { read.await.map(|r| r.response) }
    }

    /// Like [`Replica::read`], and also tells which state was read: the
    /// [`StateId`] in `state` (its `applied`: how many commands of the
    /// group's history the read saw).
    pub fn read_traced<R, F>(
        &self,
        read: F,
    ) -> impl Future<Output = Result<Executed<R>, ReplicaError>> + 'static
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (value, answer) = oneshot::channel();
        let (done, verdict) = oneshot::channel();
        let op = Op::Read {
            read: Box::new(move |s: &S| {
                let _ = value.send(read(s));
            }),
            done,
        };
        let queued = self.ops.send(op).map_err(|_| gone(&self.stopped));
        let stopped = self.stopped.clone();
        async move {
            queued?;
            let state = verdict.await.map_err(|_| gone(&stopped))??;
            let response = answer.await.map_err(|_| gone(&stopped))?;
            Ok(Executed { response, state })
        }
    }

    /// What this replica holds at one point of the ordered stream: members
    /// with roles, versions and the state each announced, pending
    /// processes, primary or not, its own state id, whether the
    /// participants agree, refusals and counters (see
    /// [`ReplicaInspection`] for the rules). Observers can call it.
    pub async fn inspect(&self) -> Result<ReplicaInspection, ReplicaError> {
        let (done, rx) = oneshot::channel();
        self.ops
            .send(Op::Inspect { done })
            .map_err(|_| gone(&self.stopped))?;
        rx.await.map_err(|_| gone(&self.stopped))
    }

    /// Asks every participant for a digest of its state at one point of the
    /// stream (rule 11 of the replica's rules). The outcome comes as an
    /// event on every member, [`ReplicaEvent::Checked`] or
    /// [`ReplicaEvent::Diverged`], and in [`ReplicaInspection::checks`];
    /// none if the view changes first, or if the state machine has no
    /// [`StateMachine::digest`]. Returns once the request is queued.
    ///
    /// Errors: [`ReplicaError::Observer`] (an observer asks for none),
    /// [`ReplicaError::NotMember`] before the replica is a member,
    /// [`ReplicaError::ChecksUnsupported`] while a member of an older
    /// build holds the group's version back.
    pub async fn check(&self) -> Result<(), ReplicaError> {
        let (done, rx) = oneshot::channel();
        self.ops
            .send(Op::Check { done })
            .map_err(|_| gone(&self.stopped))?;
        rx.await.map_err(|_| gone(&self.stopped))?
    }

    /// Leaves the group cleanly (others see `Leave`) and stops the runtime.
    pub async fn leave(&self) -> Result<(), ReplicaError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Leave { done: tx })
            .map_err(|_| gone(&self.stopped))?;
        rx.await.map_err(|_| gone(&self.stopped))?
    }
}

/// Encodes a value as a snapshot with the crate's codec (bincode, fixed-width
/// integers): a convenience for [`StateMachine::encode`]. A value serde
/// cannot encode (which bincode reports only for sequences of unknown
/// length) gives an empty snapshot, which then fails to restore.
pub fn encode_snapshot<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // The limit only guards decoding; encoding a state in memory is bounded
    // by that memory.
    Codec::new(usize::MAX)
        .encode_payload(value)
        .unwrap_or_default()
}

/// Decodes a snapshot made by [`encode_snapshot`], refusing more than
/// `limit` bytes of claimed lengths.
pub fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, String> {
    Codec::new(limit)
        .decode_payload(bytes)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Reason;

    #[test]
    fn replica_events_read_as_short_lines() {
        let (a, b, c) = (
            Member::new(1, 1007),
            Member::new(2, 1008),
            Member::new(3, 1009),
        );
        let epoch = Some(PrimaryEpoch {
            ring_seq: 3,
            term: 1,
        });
        let installed = ReplicaEvent::Installed {
            primary: true,
            epoch,
            sender: Some(a),
            receivers: vec![c],
        };
        assert_eq!(
            installed.to_string(),
            "installed, primary (epoch 3.1); node1/1007 sends the state to [node3/1009]"
        );
        let minority = ReplicaEvent::Installed {
            primary: false,
            epoch: None,
            sender: None,
            receivers: vec![],
        };
        assert_eq!(minority.to_string(), "installed, not primary");
        let regained = ReplicaEvent::PrimaryChanged {
            primary: true,
            epoch,
        };
        assert_eq!(regained.to_string(), "now primary (epoch 3.1)");
        let lost = ReplicaEvent::PrimaryChanged {
            primary: false,
            epoch: None,
        };
        assert_eq!(lost.to_string(), "no longer primary");
        let restored = ReplicaEvent::Restored {
            from: a,
            bytes: 1234,
            suffix: None,
            replayed: 5,
        };
        assert_eq!(
            restored.to_string(),
            "restored 1234 bytes of state from node1/1007, replayed 5"
        );
        let caught_up = ReplicaEvent::Restored {
            from: a,
            bytes: 80,
            suffix: Some(3),
            replayed: 0,
        };
        assert_eq!(
            caught_up.to_string(),
            "caught up from node1/1007 with 3 commands it lacked (80 bytes), replayed 0"
        );
        let view = ReplicaEvent::ViewChanged {
            members: vec![a, b, c],
            observers: vec![],
            joined: vec![MemberChange {
                member: c,
                reason: Reason::Join,
            }],
            left: vec![],
        };
        assert_eq!(
            view.to_string(),
            "view [node1/1007, node2/1008, node3/1009]: node3/1009 joined"
        );
        let observed = ReplicaEvent::ViewChanged {
            members: vec![a, b, c],
            observers: vec![c],
            joined: vec![MemberChange {
                member: c,
                reason: Reason::Join,
            }],
            left: vec![],
        };
        assert_eq!(
            observed.to_string(),
            "view [node1/1007, node2/1008, node3/1009]: node3/1009 joined; observers [node3/1009]"
        );
        assert_eq!(
            ReplicaError::Observer.to_string(),
            "an observer sends no command; nothing was sent"
        );
        let gave_up = ReplicaEvent::GaveUp {
            why: "held commands over max_held".into(),
        };
        assert_eq!(gave_up.to_string(), "gave up: held commands over max_held");
        let refused = ReplicaEvent::MemberRefused {
            member: c,
            versions: Versions { min: 2, max: 2 },
            group_version: 3,
        };
        assert_eq!(
            refused.to_string(),
            "node3/1009 refused: it speaks v2, the group speaks v3"
        );
        let moved = ReplicaEvent::VersionChanged {
            from: Some(2),
            to: 3,
        };
        assert_eq!(moved.to_string(), "protocol version v2 -> v3");
        let error = ReplicaError::Incompatible {
            ours: Versions { min: 2, max: 2 },
            group_version: 3,
        };
        assert_eq!(
            error.to_string(),
            "the group speaks protocol v3; this build speaks v2"
        );
    }
}
