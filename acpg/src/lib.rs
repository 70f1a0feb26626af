//! `acpg`: look at a live actix-cpg group from the command line, next to
//! `corosync-cpgtool` (which shows the CPG layer; this shows the actor
//! layer on top of it).
//!
//! ```text
//!  acpg status GROUP   join as an observer ─► Group::inspect() ─► print ─► leave
//!  acpg watch GROUP    join as an observer ─► GroupEvent + SupervisionEvent
//!                                             ─► one timestamped line each,
//!                                                until interrupted or closed
//!  --election, --replica: the same for election and replica groups (rule 7)
//!  acpg replay FILE    Recording::open ─► group::replay | election::replay
//!                                             ─► one line per decision
//!  --json              one JSON object (status), one per line (watch, replay)
//! ```
//!
//! The commands are functions generic over [`Transport`] that print to a
//! [`Write`]: the binary hands them the node's corosync daemon and stdout,
//! tests hand them a process of the sim cluster and a buffer.
//!
//! # Rules
//!
//! 1. **acpg takes no part.** It joins as an observer
//!    ([`Role::Observer`]): it registers no name, starts and hosts no tree,
//!    puts no clock or quorum fact into the stream; every member refuses
//!    such a message from it anyway. It still shows in the group's members
//!    while it looks, marked as itself.
//! 2. **It waits for the state, not forever.** Joining a group means
//!    getting its state from a member ([`Group::start`]); after
//!    [`Options::ready_within`] without it (the view holds only processes
//!    that never announce themselves) it gives up: [`ToolError::NoState`].
//! 3. **Nobody there, nothing shown.** A group where, once acpg holds the
//!    state, no member but acpg itself is — its first view held only
//!    itself, so it founded an empty group — is refused with
//!    [`ToolError::Nobody`] ("nobody is in group X"), and acpg leaves at
//!    once.
//! 4. **Refusals are one line and exit code 2**: no daemon (the
//!    transport's error on join: [`ToolError::Join`]), nobody there, no
//!    state in time, an invalid group name, a recording that does not read,
//!    a replica's recording ([`ToolError::NeedsStateMachine`]: its
//!    decisions replay only with the program's state machine).
//!    Output that fails exits with 1 ([`ToolError::exit_code`]); a closed
//!    pipe ends a command quietly. A group that closes under `watch` ends
//!    it normally ([`WatchEnd::Closed`]), after its last line.
//! 5. **JSON is the library's own serde**: `status --json` prints one
//!    [`GroupInspection`]; `watch --json` one [`WatchLine`] per line;
//!    `replay --json` one [`Replayed`](actix_cpg::record::Replayed) per
//!    line. Each reads back with `serde_json`.
//! 6. **Watch merges two streams as they arrive.** Group events and
//!    supervision events each come in stream order, but acpg reads them
//!    from two channels: a line of one kind may print before a line of the
//!    other that the group decided first. A slow reader that misses events
//!    is told how many ([`Watched::Missed`]).
//! 7. **The user says the kind.** A registry group ([`Group`]) is the
//!    default; `--election` looks at an [`actix_cpg::Election`] group and
//!    `--replica` at a [`actix_cpg::Replica`] group ([`Kind`]). Each kind
//!    has its own observer, so acpg must join as the right one: told the
//!    wrong kind, it hears no member it can read and refuses: with
//!    [`ToolError::OtherKind`] when it holds a state of its own with only
//!    unannounced processes around it (a replica observer founds an empty
//!    view after its learning timeout), else with [`ToolError::NoState`]
//!    after `--wait`; the members drop its messages, and nothing of
//!    theirs changes. It does not
//!    guess from the first announcements it reads: that would take a join
//!    as some kind first, and the guess would still need the members of
//!    that kind to answer. A replica group is looked at with
//!    [`actix_cpg::ReplicaObserver`], which needs no state machine type:
//!    it follows the state ids of the ordered stream without decoding a
//!    command, so acpg shows where each replica stands in the history
//!    (and whether they agree), not what the state holds. `status --json`
//!    prints an [`actix_cpg::ElectionInspection`] or an
//!    [`actix_cpg::ReplicaInspection`]; `watch --json` the events of the
//!    kind ([`Watched::Election`], [`Watched::Replica`]).

#![deny(missing_docs)]

use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use actix_cpg::group::GroupInspection;
use actix_cpg::record::{Protocol, Recording};
use actix_cpg::supervisor::SupervisionEvent;
use actix_cpg::{
    ElectionConfig, ElectionError, ElectionEvent, Group, GroupConfig, GroupError, GroupEvent,
    GroupName, ReplicaError, ReplicaEvent, Role, Transport, TransportError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

mod clock;
mod kinds;
mod render;

pub use clock::utc;
pub use kinds::{
    election_status, observe_election, observe_replica, replica_status, watch_election,
    watch_replica, write_election_status, write_replica_status, Kind,
};
pub use render::write_status;

/// How a command prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// For people: aligned columns, one line per event.
    #[default]
    Text,
    /// For programs: JSON (rule 5).
    Json,
}

/// How `status` and `watch` join.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How they print.
    pub format: Format,
    /// How long to wait for the group state (rule 2).
    pub ready_within: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::Text,
            ready_within: Duration::from_secs(10),
        }
    }
}

/// Why a command failed. [`ToolError::exit_code`] says what the process
/// exits with (rule 4).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The group name is empty or too long; nothing was joined.
    #[error("invalid group name: {0}")]
    InvalidGroup(TransportError),
    /// The transport refused to join: usually no daemon runs in this
    /// network namespace. Nothing was joined.
    #[error("cannot join group {group}: {error}")]
    Join {
        /// The group.
        group: String,
        /// What the transport said.
        error: TransportError,
    },
    /// Joined, but no member is in the group but acpg (rule 3); acpg left.
    #[error("nobody is in group {group}")]
    Nobody {
        /// The group.
        group: String,
    },
    /// Joined, and no member but acpg is in the group, but other processes
    /// are in its CPG view without ever announcing themselves in the
    /// protocol of the kind asked for: likely a group of another kind
    /// (rule 7); acpg left.
    #[error(
        "group {group} has {processes} other process(es) in its CPG view, but no {kind} \
         member (is it a group of another kind?)"
    )]
    OtherKind {
        /// The group.
        group: String,
        /// The kind asked for: `election` or `replica`.
        kind: String,
        /// The processes of the view that did not announce themselves.
        processes: usize,
    },
    /// No member handed the group state over in time (rule 2); acpg left.
    #[error(
        "no member of group {group} handed over the group state within {waited:?} \
         (is anything but silent processes in it? is it a group of the kind asked for?)"
    )]
    NoState {
        /// The group.
        group: String,
        /// How long acpg waited.
        waited: Duration,
    },
    /// The group runtime refused or failed while acpg joined (another
    /// protocol version, the transport closed).
    #[error("cannot observe group {group}: {error}")]
    Start {
        /// The group.
        group: String,
        /// What the group said.
        error: GroupError,
    },
    /// The election runtime refused or failed while acpg joined (another
    /// protocol version, the transport closed).
    #[error("cannot observe election group {group}: {error}")]
    StartElection {
        /// The group.
        group: String,
        /// What the election runtime said.
        error: ElectionError,
    },
    /// The replica runtime refused or failed while acpg joined (another
    /// protocol version, a snapshot over the size limit, the transport
    /// closed).
    #[error("cannot observe replica group {group}: {error}")]
    StartReplica {
        /// The group.
        group: String,
        /// What the replica runtime said.
        error: ReplicaError,
    },
    /// The recording could not be read.
    #[error("cannot read recording {path}: {error}")]
    Recording {
        /// The file.
        path: String,
        /// Why.
        error: io::Error,
    },
    /// The recording is a replica's: its decisions depend on the state
    /// machine of the program that recorded it (the commands it applies,
    /// the snapshots it restores), which acpg does not have. Nothing was
    /// printed.
    #[error(
        "{path} is a replica recording by {local}: its decisions need the program's state \
         machine; replay it with actix_cpg::replicated::replay::<YourState> \
         (the examples: `--replay FILE`)"
    )]
    NeedsStateMachine {
        /// The file.
        path: String,
        /// The replica that recorded it.
        local: actix_cpg::Member,
    },
    /// The data directory could not be bootstrapped (a replica runs on it,
    /// or it is damaged); nothing was changed.
    #[error("cannot bootstrap {path}: {error}")]
    Bootstrap {
        /// The directory.
        path: String,
        /// Why.
        error: actix_cpg::replicated::StoreError,
    },
    /// Printing failed.
    #[error("output: {0}")]
    Output(#[from] io::Error),
}

impl ToolError {
    /// 2 for a refusal before anything was shown, 1 for output that
    /// failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ToolError::Output(_) => 1,
            _ => 2,
        }
    }
}

/// Joins `group` through `transport` as an observer, and returns once it
/// holds the group state with someone else in it (rules 1 to 3), with what
/// it saw then.
pub async fn observe<T: Transport>(
    transport: &T,
    group: &str,
    ready_within: Duration,
) -> Result<(Group, GroupInspection), ToolError> {
    let name = GroupName::new(group).map_err(ToolError::InvalidGroup)?;
    let conn = transport.join(&name).map_err(|error| ToolError::Join {
        group: group.to_owned(),
        error,
    })?;
    let config = GroupConfig {
        role: Role::Observer,
        ..GroupConfig::default()
    };
    let observer = match tokio::time::timeout(ready_within, Group::start(conn, config)).await {
        Ok(Ok(observer)) => observer,
        Ok(Err(error)) => {
            return Err(ToolError::Start {
                group: group.to_owned(),
                error,
            })
        }
        // Dropping the start drops the last handle: the runtime leaves.
        Err(_) => {
            return Err(ToolError::NoState {
                group: group.to_owned(),
                waited: ready_within,
            })
        }
    };
    let seen = observer.inspect().await.map_err(|error| ToolError::Start {
        group: group.to_owned(),
        error,
    })?;
    if nobody_else(&seen) {
        // Leaving is a courtesy: the process ends either way.
        let _ = observer.leave().await;
        return Err(ToolError::Nobody {
            group: group.to_owned(),
        });
    }
    Ok((observer, seen))
}

/// Whether no member but the inspecting one is in the group (rule 3).
pub fn nobody_else(seen: &GroupInspection) -> bool {
    seen.members.iter().all(|m| m.member == seen.local)
}

/// `acpg status GROUP`: joins as an observer, prints what it sees at one
/// point of the stream ([`write_status`]) and leaves.
pub async fn status<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
) -> Result<GroupInspection, ToolError> {
    let (observer, seen) = observe(transport, group, options.ready_within).await?;
    let _ = observer.leave().await;
    write_status(&seen, options.format, out)?;
    out.flush()?;
    Ok(seen)
}

/// One line of `acpg watch --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLine {
    /// When acpg read it (UTC, RFC 3339 with milliseconds): local time of
    /// the watching process, not a position in the stream.
    pub at: String,
    /// What happened.
    #[serde(flatten)]
    pub watched: Watched,
    /// The same in words (the event's `Display`).
    pub text: String,
}

/// What `acpg watch` saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", content = "event", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Watched {
    /// A group event: views, names, versions, readiness, closing.
    Group(GroupEvent),
    /// A supervision decision: starts, exits, restarts, quorum, merges.
    Supervision(SupervisionEvent),
    /// An event of an election group: views, leaders and epochs.
    Election(ElectionEvent),
    /// An event of a replica group: views, installs, primary components,
    /// state transfers.
    Replica(ReplicaEvent),
    /// acpg read too slowly and missed this many events of one stream.
    Missed(u64),
}

impl Watched {
    fn source(&self) -> &'static str {
        match self {
            Watched::Group(_) => "group",
            Watched::Supervision(_) => "supervision",
            Watched::Election(_) => "election",
            Watched::Replica(_) => "replica",
            Watched::Missed(_) => "acpg",
        }
    }

    fn text(&self) -> String {
        match self {
            Watched::Group(e) => e.to_string(),
            Watched::Supervision(e) => e.to_string(),
            Watched::Election(e) => e.to_string(),
            Watched::Replica(e) => e.to_string(),
            Watched::Missed(n) => format!("missed {n} events (acpg read too slowly)"),
        }
    }
}

/// How a watch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// `stop` resolved (Ctrl-C); acpg left the group.
    Stopped,
    /// The group closed (the transport failed or the daemon went away).
    Closed,
    /// The reader of the output went away (a closed pipe); acpg left.
    OutputClosed,
}

/// `acpg watch GROUP`: joins as an observer and prints every group and
/// supervision event with the time `clock` gives when it is read, until
/// `stop` resolves or the group closes (rule 6).
pub async fn watch<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
    mut clock: impl FnMut() -> SystemTime,
    stop: impl Future<Output = ()>,
) -> Result<WatchEnd, ToolError> {
    let (observer, seen) = observe(transport, group, options.ready_within).await?;
    let mut events = observer.subscribe();
    let mut supervision = observer.supervision_events();
    if options.format == Format::Text {
        let others = seen.members.len().saturating_sub(1);
        let line = format!(
            "{} acpg         watching group {group} as {} ({others} other member{})",
            utc(clock()),
            seen.local,
            if others == 1 { "" } else { "s" },
        );
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            let _ = observer.leave().await;
            return ended_by_output(e);
        }
    }
    tokio::pin!(stop);
    let end = loop {
        let watched = tokio::select! {
            () = &mut stop => break WatchEnd::Stopped,
            event = events.recv() => match event {
                Ok(event) => Watched::Group(event),
                Err(RecvError::Lagged(n)) => Watched::Missed(n),
                Err(RecvError::Closed) => break WatchEnd::Closed,
            },
            event = supervision.recv() => match event {
                Ok(event) => Watched::Supervision(event),
                Err(RecvError::Lagged(n)) => Watched::Missed(n),
                Err(RecvError::Closed) => break WatchEnd::Closed,
            },
        };
        let closed = matches!(watched, Watched::Group(GroupEvent::Closed { .. }));
        if let Err(e) = write_watched(out, options.format, utc(clock()), watched) {
            let _ = observer.leave().await;
            return ended_by_output(e);
        }
        if closed {
            break WatchEnd::Closed;
        }
    };
    if end == WatchEnd::Stopped {
        let _ = observer.leave().await;
    }
    Ok(end)
}

pub(crate) fn ended_by_output(e: io::Error) -> Result<WatchEnd, ToolError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(WatchEnd::OutputClosed)
    } else {
        Err(ToolError::Output(e))
    }
}

pub(crate) fn write_watched(
    out: &mut dyn Write,
    format: Format,
    at: String,
    watched: Watched,
) -> io::Result<()> {
    match format {
        Format::Text => writeln!(out, "{at} {:<12} {}", watched.source(), watched.text())?,
        Format::Json => {
            let line = WatchLine {
                at,
                text: watched.text(),
                watched,
            };
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        }
    }
    out.flush()
}

/// Bootstraps the data directory `dir` of a stopped replica
/// ([`actix_cpg::replicated::bootstrap`]): the operator's action when a
/// member of the last primary component lost its disk for good. Prints
/// what it did and what may be lost.
pub fn bootstrap(dir: &Path, format: Format, out: &mut dyn Write) -> Result<(), ToolError> {
    let report = actix_cpg::replicated::bootstrap(dir).map_err(|error| ToolError::Bootstrap {
        path: dir.display().to_string(),
        error,
    })?;
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, &report).map_err(io::Error::other)?;
            writeln!(out)?;
        }
        Format::Text => match report.epoch {
            None => writeln!(
                out,
                "{}: knows no primary component; nothing to write off (state: {} applied)",
                dir.display(),
                report.state.applied
            )?,
            Some(epoch) => {
                let off: Vec<String> = report.written_off.iter().map(|m| m.to_string()).collect();
                writeln!(
                    out,
                    "{}: state {} applied at epoch {}; last primary component {}",
                    dir.display(),
                    report.state.applied,
                    report.state.epoch,
                    epoch
                )?;
                writeln!(
                    out,
                    "written off: {}",
                    if off.is_empty() {
                        "nobody".to_owned()
                    } else {
                        off.join(", ")
                    }
                )?;
                writeln!(
                    out,
                    "once this replica is back, the group may be primary without them: \
                     whatever they applied after this state is lost unless one of them comes back \
                     (recorded in {})",
                    dir.join(actix_cpg::replicated::BOOTSTRAP_LOG).display()
                )?;
            }
        },
    }
    Ok(())
}

/// `acpg replay FILE`: prints every decision the recording member took, in
/// order, for the default configuration: a registry group's
/// ([`actix_cpg::group::replay`]) or an election's
/// ([`actix_cpg::election::replay`]), as the file's header says. A
/// replica's recording is refused ([`ToolError::NeedsStateMachine`]).
pub fn replay(path: &Path, format: Format, out: &mut dyn Write) -> Result<(), ToolError> {
    let recording = Recording::open(path).map_err(|error| ToolError::Recording {
        path: path.display().to_string(),
        error,
    })?;
    let (decisions, kind) = match recording.protocol {
        Protocol::Registry => (
            actix_cpg::group::replay(&recording, GroupConfig::default().max_message_size),
            "",
        ),
        Protocol::Election => (
            actix_cpg::election::replay(&recording, &ElectionConfig::default()),
            " (election)",
        ),
        Protocol::Replica => {
            return Err(ToolError::NeedsStateMachine {
                path: path.display().to_string(),
                local: recording.local,
            })
        }
    };
    match format {
        Format::Text => {
            writeln!(
                out,
                "{} events recorded by {}{kind}; {} decisions:",
                recording.entries.len(),
                recording.local,
                decisions.len()
            )?;
            for d in &decisions {
                writeln!(out, "  [{:>5}] {}", d.position, d.decision)?;
            }
        }
        Format::Json => {
            for d in &decisions {
                serde_json::to_writer(&mut *out, d).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
