//! Leader election with fencing epochs, derived from the group's view.
//!
//! [`Election::start`] joins an election runtime to its CPG group (its own
//! connection and actor). Every member is a candidate of the group-wide
//! election [`GROUP_ELECTION`]; [`Election::stand`] enters a named election
//! within the group as well. Every member computes the same leader for each
//! election, at the same point of the ordered stream:
//!
//! - **who counts**: only *members* — processes of the CPG view that
//!   announced themselves in the stream (every election member does so by
//!   itself). A CPG client that joins the group and stays silent, or
//!   multicasts forged election messages, is never a candidate, never
//!   stalls a view install and never sways a quorum fact; what members
//!   refuse is counted in [`ElectionStatus::refused`]. The numbered rules
//!   are in the core's module doc (`src/election/core.rs`);
//! - **the leader** is the most senior candidate of the view — the one that
//!   joined (or stood) first in the total order — while the view is quorate
//!   (every member's quorum notification, multicast into the stream, says
//!   so); without quorum there is no leader;
//! - **the epoch** ([`Epoch`]) is minted each time an election gets a leader
//!   and only grows: `(ring_seq, term)` with `ring_seq` the highest totem
//!   ring sequence reported and `term` counting leaderships. The ring seq
//!   alone is not unique (two sides of a partition can form rings with the
//!   same seq), the pair is;
//! - **acting**: a member acts as leader ([`Election::is_leader`],
//!   [`ElectionEvent::Elected`] / [`ElectionEvent::Deposed`]) only while the
//!   group names it *and* its own node's latest quorum notification says
//!   quorate — no member acts as leader without quorum;
//! - **versions**: the group speaks the highest protocol version every
//!   member speaks, decided from the announcements in the stream. A process
//!   that cannot speak it is refused ([`ElectionEvent::MemberRefused`] on
//!   every member and on itself, whose start fails with
//!   [`ElectionError::Incompatible`]) and none of its messages counts; when
//!   the last member that held the group back leaves, the group moves up
//!   at that point of the stream ([`ElectionEvent::VersionChanged`]).
//!
//! # The guarantee and its limit
//!
//! Within one partition every member names the same leader and epoch, and a
//! new leader always gets a greater epoch than every earlier one it can
//! know of. Across partitions, an old leader cut off from the others keeps
//! believing it leads until its node learns it lost quorum: corosync
//! reports that when the node's ring re-forms, after the token timeout plus
//! the consensus timeout (about 3.5 s with `token: 1000`, as the test
//! cluster is configured). The majority elects the new leader after the
//! same delay on its side, so both may act for a few milliseconds (the
//! difference between the two sides' detection) — and longer if a node's
//! quorum notification comes late. Anything the leader writes to should
//! therefore check the epoch: accept a write only if its epoch is at least
//! the greatest it has seen (fencing).

mod core;
mod inspect;
mod messages;
mod replay;
mod runtime;

/// What `crate::fuzzing` drives (see `crate::group::fuzz_access`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz_access {
    pub(crate) use super::core::{view_tag, Action, CandidacyOp, ElectionCore};
    pub(crate) use super::messages::{decode_envelope, ElectionMessage};
}

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use self::inspect::{ElectionEntry, ElectionInspection, ElectionQuorum};
pub use self::messages::Epoch;
pub use self::replay::replay;
use self::runtime::{ElectionActor, Op, Outlets};
pub use crate::roster::Role;
use crate::transport::{
    write_view, Connection, GroupName, Member, MemberChange, MemberList, TransportError,
};
use crate::wire::Versions;

/// The election every member of the group is a candidate of.
pub const GROUP_ELECTION: &str = "";

/// Who leads an election, with which epoch. Ordered by epoch first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leadership {
    /// Its fencing epoch.
    pub epoch: Epoch,
    /// The leader.
    pub leader: Member,
}

/// Something that happened, in stream order. Serializable for tools
/// (`acpg watch --json`); never sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ElectionEvent {
    /// The membership changed.
    ViewChanged {
        /// The view after the change, sorted.
        members: Vec<Member>,
        /// Who joined, and why.
        joined: Vec<MemberChange>,
        /// Who left, and why.
        left: Vec<MemberChange>,
    },
    /// Every member's info is in: elections are decided again.
    Installed {
        /// The view.
        members: Vec<Member>,
    },
    /// The group's decision for an election changed.
    LeaderChanged {
        /// The election.
        name: String,
        /// The new leader, or `None` (no quorum, or no candidate).
        leader: Option<Member>,
        /// The new leader's epoch.
        epoch: Option<Epoch>,
    },
    /// This member now acts as leader of `name`.
    Elected {
        /// The election.
        name: String,
        /// The epoch to fence with.
        epoch: Epoch,
    },
    /// This member stopped acting as leader of `name`.
    Deposed {
        /// The election.
        name: String,
        /// The epoch it led with.
        epoch: Epoch,
    },
    /// More candidacy changes arrived while installing a view than
    /// [`ElectionConfig::max_buffered_ops`] allows: this member gave up its
    /// membership and leaves the group (a `Closed` event follows). Start a
    /// new [`Election`] to rejoin: a joiner gets the elections afresh.
    GaveUp {
        /// How many candidacy changes were buffered.
        buffered: usize,
    },
    /// A process announced protocol versions that do not include the one
    /// the group speaks: it is no member, and none of its messages changes
    /// anything. Every member reports it where the announcement lands in
    /// the stream (a joiner that did not know the members yet, when it
    /// learns them). When `member` is this process, the runtime stops
    /// (`Closed` follows, and a start in progress fails with
    /// [`ElectionError::Incompatible`]).
    MemberRefused {
        /// The refused process.
        member: Member,
        /// The versions it speaks.
        versions: Versions,
        /// The version the group speaks there.
        group_version: u8,
    },
    /// The group speaks another protocol version from this point of the
    /// stream on: the last member that held it back left (or this member
    /// learned the version: it founded the group, or joined it).
    VersionChanged {
        /// The version spoken before; `None` when this member did not know
        /// one.
        from: Option<u8>,
        /// The version spoken from here on.
        to: u8,
    },
    /// The transport failed or the member left; the runtime has stopped.
    Closed {
        /// Why.
        error: TransportError,
    },
}

/// One line: `leader of the group election: node1/1007 (epoch 5.2)`,
/// `this member leads "jobs" (epoch 5.2)`.
impl std::fmt::Display for ElectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElectionEvent::ViewChanged {
                members,
                joined,
                left,
            } => write_view(f, members, joined, left),
            ElectionEvent::Installed { members } => {
                write!(f, "installed view {}", MemberList(members))
            }
            ElectionEvent::LeaderChanged {
                name,
                leader,
                epoch,
            } => {
                write!(f, "leader of {}: ", Named(name))?;
                match (leader, epoch) {
                    (Some(leader), Some(epoch)) => write!(f, "{leader} (epoch {epoch})"),
                    (Some(leader), None) => write!(f, "{leader}"),
                    (None, _) => f.write_str("none"),
                }
            }
            ElectionEvent::Elected { name, epoch } => {
                write!(f, "this member leads {} (epoch {epoch})", Named(name))
            }
            ElectionEvent::Deposed { name, epoch } => write!(
                f,
                "this member no longer leads {} (epoch {epoch})",
                Named(name)
            ),
            ElectionEvent::GaveUp { buffered } => write!(
                f,
                "gave up: {buffered} candidacy changes buffered while installing a view"
            ),
            ElectionEvent::MemberRefused {
                member,
                versions,
                group_version,
            } => write!(
                f,
                "{member} refused: it speaks {versions}, the group speaks v{group_version}"
            ),
            ElectionEvent::VersionChanged { from: Some(v), to } => {
                write!(f, "protocol version v{v} -> v{to}")
            }
            ElectionEvent::VersionChanged { from: None, to } => {
                write!(f, "protocol version v{to}")
            }
            ElectionEvent::Closed { error } => write!(f, "closed: {error}"),
        }
    }
}

/// An election as a line names it: `the group election` or `"jobs"`.
struct Named<'a>(&'a str);

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == GROUP_ELECTION {
            f.write_str("the group election")
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Why an election operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// The transport failed or refused; nothing changed.
    #[error("transport: {0}")]
    Transport(TransportError),
    /// The runtime has stopped (left, or the transport closed). A candidacy
    /// change in flight may or may not have taken effect.
    #[error("election closed")]
    Closed,
    /// The message could not be encoded; nothing changed.
    #[error("codec: {0}")]
    Codec(#[source] crate::wire::WireError),
    /// This member is an observer ([`ElectionConfig::role`]): it stands in
    /// no election. Nothing was sent.
    #[error("an observer stands in no election")]
    Observer,
    /// The recording file ([`ElectionConfig::record_to`]) could not be
    /// created; nothing was joined. Retry once the path is writable.
    #[error("recording: {0}")]
    Record(String),
    /// The group speaks a protocol version this build does not: it refused
    /// this process where its announcement landed in the stream, and the
    /// runtime left the group and stopped. A retry fails the same way until
    /// this build speaks `group_version` or the members that hold the group
    /// there are gone.
    #[error("the group speaks protocol v{group_version}; this build speaks {ours}")]
    Incompatible {
        /// What this build speaks.
        ours: Versions,
        /// What the group speaks.
        group_version: u8,
    },
}

/// Tuning of one election member.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Largest message this member sends or accepts (capped by the
    /// transport's atomic limit).
    pub max_message_size: usize,
    /// Messages multicast but not yet delivered back.
    pub send_window: usize,
    /// Capacity of the [`Election::subscribe`] channel.
    pub event_capacity: usize,
    /// The group's shared secret: every multicast carries a MAC, and a
    /// delivery without a valid one from its CPG sender is dropped before
    /// it is decoded (counted in [`Election::dropped_unauthenticated`]).
    /// `None` (the default) keeps today's bytes. See [`crate::auth`].
    pub key: Option<crate::auth::GroupKey>,
    /// Most candidacy changes (stand, withdraw) held while a view is being
    /// installed; past it this member gives up and leaves
    /// ([`ElectionEvent::GaveUp`]) rather than grow. Only members' changes
    /// are held (an unannounced sender's are refused at once), so only a
    /// flood from members — or, for a joiner not yet knowing who the
    /// members are, from anyone — reaches it.
    pub max_buffered_ops: usize,
    /// What this member does in the group. An [`Role::Observer`] follows
    /// every election (status, leaders, epochs) but is never a candidate —
    /// not even of the group-wide election every participant stands in —
    /// and its quorum facts do not count; every member refuses its
    /// candidacies and facts ([`ElectionRefusals::observer`]).
    pub role: Role,
    /// Record this member's ordered stream to this file (see
    /// [`crate::record`]: deliveries, confchgs and this node's quorum
    /// notifications; in a keyed group the verified deliveries without
    /// their MAC), to replay its decisions offline with [`replay`] or
    /// `acpg replay FILE`.
    pub record_to: Option<std::path::PathBuf>,
    /// The protocol versions this member speaks: this build's
    /// ([`Versions::this_build`]). Only tests of version negotiation set
    /// another range, to play an older or a newer build.
    #[doc(hidden)]
    pub protocol_versions: Versions,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            max_message_size: 1 << 20,
            send_window: 16,
            event_capacity: 1024,
            key: None,
            max_buffered_ops: 4096,
            role: Role::Participant,
            record_to: None,
            protocol_versions: Versions::this_build(),
        }
    }
}

/// This member's view of the elections, as of the last event it handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElectionStatus {
    /// This member.
    pub local: Option<Member>,
    /// The current view (announced members only), sorted.
    pub members: Vec<Member>,
    /// Whether the view is installed.
    pub installed: bool,
    /// The group's decision for each election that has a leader.
    pub leaders: BTreeMap<String, Leadership>,
    /// Elections this member acts as leader of, with the epoch.
    pub acting: BTreeMap<String, Epoch>,
    /// Every election's candidates in the view, most senior first.
    pub candidates: BTreeMap<String, Vec<Member>>,
    /// Whether this node's latest quorum notification says quorate.
    pub locally_quorate: bool,
    /// Whether the runtime has stopped.
    pub closed: bool,
    /// Messages this member refused, by cause.
    pub refused: ElectionRefusals,
}

/// Messages an election member refused, by cause (each also logged). Every
/// member applies the same rules at the same point of the stream, so a
/// refusal changes no decision anywhere; the counts are this member's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
// Counters are added as the library grows: built only by the library.
#[non_exhaustive]
pub struct ElectionRefusals {
    /// An info, fact, stand or withdraw from a process that is not an
    /// announced member (a silent or foreign CPG client, or a process that
    /// has left).
    pub not_member: u64,
    /// An announcement whose protocol versions exclude the one the group
    /// speaks (its sender is refused, [`ElectionEvent::MemberRefused`]).
    pub incompatible: u64,
    /// A quorum fact whose ring sequence jumps past what the stream allows.
    pub ring_jump: u64,
    /// An info whose elections claim epochs or a founding time past what
    /// the stream allows (its state is ignored; the info still counts for
    /// the install).
    pub epoch_jump: u64,
    /// A message that could not be decoded.
    pub malformed: u64,
    /// A quorum fact or a candidacy from an observer, which takes part in
    /// no decision.
    pub observer: u64,
    /// A fact or a candidacy in an envelope of a protocol version some
    /// member does not speak (sent before the group moved up and delivered
    /// after, or from a process that does not follow the group's version),
    /// or of a version this build does not read.
    pub version: u64,
}

impl ElectionRefusals {
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.not_member
            + self.incompatible
            + self.ring_jump
            + self.epoch_jump
            + self.malformed
            + self.observer
            + self.version
    }
}

/// A handle to this process's membership of an election group. Clone
/// freely; the runtime stops on [`Election::leave`] or when the transport
/// closes.
#[derive(Clone)]
pub struct Election {
    ops: mpsc::UnboundedSender<Op>,
    local: Member,
    name: GroupName,
    events: broadcast::Sender<ElectionEvent>,
    status: watch::Receiver<ElectionStatus>,
    unauthenticated: Arc<AtomicU64>,
    role: Role,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish()
    }
}

impl Election {
    /// Starts the election runtime on the current actix arbiter over
    /// `conn`, and returns once this member's first view is installed.
    pub async fn start<C: Connection>(
        conn: C,
        config: ElectionConfig,
    ) -> Result<Election, ElectionError> {
        let local = conn.local();
        let name = conn.group().clone();
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (status_tx, status) = watch::channel(ElectionStatus {
            local: Some(local),
            ..ElectionStatus::default()
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let recorder = crate::record::Recorder::for_config(
            config.record_to.as_deref(),
            local,
            crate::record::Protocol::Election,
        )
        .map_err(ElectionError::Record)?;
        let unauthenticated = Arc::new(AtomicU64::new(0));
        let conn = crate::auth::boxed(conn, config.key.as_ref(), unauthenticated.clone());
        let role = config.role;
        ElectionActor::start_with(
            conn,
            ops_rx,
            config,
            Outlets {
                events: events.clone(),
                status: status_tx,
                unauthenticated: unauthenticated.clone(),
                recorder,
            },
            ready_tx,
        );
        match ready_rx.await {
            Ok(Ok(())) => Ok(Election {
                ops,
                local,
                name,
                events,
                status,
                unauthenticated,
                role,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ElectionError::Closed),
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

    /// Deliveries dropped before decoding because the election has a key
    /// and they carried no valid MAC from their CPG sender.
    pub fn dropped_unauthenticated(&self) -> u64 {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ElectionEvent> {
        self.events.subscribe()
    }

    /// The situation as of the last event handled.
    pub fn status(&self) -> ElectionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<ElectionStatus> {
        self.status.clone()
    }

    /// The group's current decision for `name` (which may name another
    /// member), or `None` while there is no leader.
    pub fn leader(&self, name: &str) -> Option<Leadership> {
        self.status.borrow().leaders.get(name).copied()
    }

    /// The epoch to fence with if this member acts as leader of `name` now.
    pub fn is_leader(&self, name: &str) -> Option<Epoch> {
        self.status.borrow().acting.get(name).copied()
    }

    /// Resolves once `name` has a leader (at once if it has one).
    pub async fn wait_leader(&self, name: &str) -> Result<Leadership, ElectionError> {
        let mut status = self.status.clone();
        loop {
            {
                let s = status.borrow_and_update();
                if s.closed {
                    return Err(ElectionError::Closed);
                }
                if let Some(l) = s.leaders.get(name) {
                    return Ok(*l);
                }
            }
            status.changed().await.map_err(|_| ElectionError::Closed)?;
        }
    }

    /// Stands in the election `name`; resolves once the candidacy took
    /// effect (at its place in the total order, which sets seniority).
    pub fn stand(&self, name: &str) -> impl Future<Output = Result<(), ElectionError>> + 'static {
        self.candidacy(name, true)
    }

    /// Withdraws from the election `name` (a leader steps down); resolves
    /// once it took effect.
    pub fn withdraw(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ElectionError>> + 'static {
        self.candidacy(name, false)
    }

    fn candidacy(
        &self,
        name: &str,
        stand: bool,
    ) -> impl Future<Output = Result<(), ElectionError>> + 'static {
        let observer = self.role == Role::Observer;
        let (done, rx) = oneshot::channel();
        let sent = if observer {
            Ok(())
        } else {
            self.ops.send(Op::Candidacy {
                name: name.to_owned(),
                stand,
                done,
            })
        };
        async move {
            if observer {
                return Err(ElectionError::Observer);
            }
            sent.map_err(|_| ElectionError::Closed)?;
            rx.await.map_err(|_| ElectionError::Closed)?
        }
    }

    /// What this member holds at one point of the ordered stream: members
    /// with roles and versions, pending processes, every election with its
    /// candidates, leader and epoch, quorum and refusals (see
    /// [`ElectionInspection`] for the rules). Observers can call it.
    pub async fn inspect(&self) -> Result<ElectionInspection, ElectionError> {
        let (done, rx) = oneshot::channel();
        self.ops
            .send(Op::Inspect { done })
            .map_err(|_| ElectionError::Closed)?;
        rx.await.map_err(|_| ElectionError::Closed)
    }

    /// Leaves the group cleanly (others see `Leave`) and stops the runtime.
    pub async fn leave(&self) -> Result<(), ElectionError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Leave { done: tx })
            .map_err(|_| ElectionError::Closed)?;
        rx.await.map_err(|_| ElectionError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Reason;

    #[test]
    fn election_events_read_as_short_lines() {
        let (a, b) = (Member::new(1, 1007), Member::new(2, 1008));
        let epoch = Epoch {
            ring_seq: 5,
            term: 2,
        };
        let changed = ElectionEvent::LeaderChanged {
            name: GROUP_ELECTION.into(),
            leader: Some(a),
            epoch: Some(epoch),
        };
        assert_eq!(
            changed.to_string(),
            "leader of the group election: node1/1007 (epoch 5.2)"
        );
        let none = ElectionEvent::LeaderChanged {
            name: "jobs".into(),
            leader: None,
            epoch: None,
        };
        assert_eq!(none.to_string(), r#"leader of "jobs": none"#);
        let elected = ElectionEvent::Elected {
            name: "jobs".into(),
            epoch,
        };
        assert_eq!(
            elected.to_string(),
            r#"this member leads "jobs" (epoch 5.2)"#
        );
        let deposed = ElectionEvent::Deposed {
            name: GROUP_ELECTION.into(),
            epoch,
        };
        assert_eq!(
            deposed.to_string(),
            "this member no longer leads the group election (epoch 5.2)"
        );
        let view = ElectionEvent::ViewChanged {
            members: vec![a],
            joined: vec![],
            left: vec![MemberChange {
                member: b,
                reason: Reason::ProcDown,
            }],
        };
        assert_eq!(
            view.to_string(),
            "view [node1/1007]: node2/1008 left (process down)"
        );
        let installed = ElectionEvent::Installed {
            members: vec![a, b],
        };
        assert_eq!(
            installed.to_string(),
            "installed view [node1/1007, node2/1008]"
        );
        let refused = ElectionEvent::MemberRefused {
            member: b,
            versions: Versions { min: 2, max: 2 },
            group_version: 3,
        };
        assert_eq!(
            refused.to_string(),
            "node2/1008 refused: it speaks v2, the group speaks v3"
        );
        let moved = ElectionEvent::VersionChanged {
            from: Some(2),
            to: 3,
        };
        assert_eq!(moved.to_string(), "protocol version v2 -> v3");
        let learned = ElectionEvent::VersionChanged { from: None, to: 2 };
        assert_eq!(learned.to_string(), "protocol version v2");
        let error = ElectionError::Incompatible {
            ours: Versions { min: 2, max: 2 },
            group_version: 3,
        };
        assert_eq!(
            error.to_string(),
            "the group speaks protocol v3; this build speaks v2"
        );
    }
}
