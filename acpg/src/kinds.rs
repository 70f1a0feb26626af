//! `acpg status` and `acpg watch` for election groups and replica groups
//! (`--election`, `--replica`): the same rules as for registry groups
//! (the crate's doc), with the kind's own observer and inspection.
//!
//! ```text
//!  --election  Election::start(Role::Observer) ─► Election::inspect()
//!              members, each election's candidates, leader and epoch
//!  --replica   ReplicaObserver::start ─► ReplicaObserver::inspect()
//!              members, the state id each announced, primary, agreement
//! ```
//!
//! A replica group's state machine is the users' type, which acpg does not
//! have: it joins with [`ReplicaObserver`], which follows the state ids of
//! the stream without decoding a command (its snapshot is received and
//! dropped), so it shows where every replica stands in the history, not
//! what the state holds.

use std::future::Future;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use actix_cpg::election::{ElectionEntry, ElectionInspection};
use actix_cpg::replicated::{Checks, ReplicaInspection, StateId};
use actix_cpg::{
    Election, ElectionConfig, ElectionEvent, GroupName, Member, ReplicaConfig, ReplicaEvent,
    ReplicaObserver, Role, Transport, GROUP_ELECTION,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::render::{list, role, write_rows};
use crate::{ended_by_output, utc, write_watched, Format, Options, ToolError, WatchEnd, Watched};

/// Which kind of group a command looks at: the kind decides which
/// observer acpg joins as, and there is no way to tell one from the
/// outside without joining (see the crate's doc, rule 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A [`actix_cpg::Group`]: registry and supervision trees.
    #[default]
    Registry,
    /// An [`Election`] group.
    Election,
    /// A [`actix_cpg::Replica`] group, of any state machine.
    Replica,
}

fn join<T: Transport>(transport: &T, group: &str) -> Result<T::Connection, ToolError> {
    let name = GroupName::new(group).map_err(ToolError::InvalidGroup)?;
    transport.join(&name).map_err(|error| ToolError::Join {
        group: group.to_owned(),
        error,
    })
}

/// acpg is the only member: nobody is there, or only processes that never
/// announced themselves in this kind's protocol (rule 7).
fn alone(group: &str, kind: &str, pending: usize) -> ToolError {
    if pending == 0 {
        ToolError::Nobody {
            group: group.to_owned(),
        }
    } else {
        ToolError::OtherKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
            processes: pending,
        }
    }
}

fn no_state(group: &str, waited: Duration) -> ToolError {
    ToolError::NoState {
        group: group.to_owned(),
        waited,
    }
}

/// Joins the election group `group` as an observer and returns once it
/// is a member of an installed view with someone else in it, with what it
/// saw then (rules 1 to 3 of the crate's doc).
pub async fn observe_election<T: Transport>(
    transport: &T,
    group: &str,
    ready_within: Duration,
) -> Result<(Election, ElectionInspection), ToolError> {
    let conn = join(transport, group)?;
    let config = ElectionConfig {
        role: Role::Observer,
        ..ElectionConfig::default()
    };
    let refused = |error| ToolError::StartElection {
        group: group.to_owned(),
        error,
    };
    let joined = async {
        let observer = Election::start(conn, config).await.map_err(refused)?;
        // Started means a view is installed; wait until acpg is in one.
        let local = observer.local();
        let mut status = observer.watch_status();
        let installed = status
            .wait_for(|s| s.closed || (s.installed && s.members.contains(&local)))
            .await
            .map(|s| !s.closed)
            .unwrap_or(false);
        if !installed {
            return Err(refused(actix_cpg::ElectionError::Closed));
        }
        Ok(observer)
    };
    let observer = match tokio::time::timeout(ready_within, joined).await {
        Ok(joined) => joined?,
        // Dropping the start drops the last handle: the runtime leaves.
        Err(_) => return Err(no_state(group, ready_within)),
    };
    let seen = observer.inspect().await.map_err(refused)?;
    if seen.members.iter().all(|m| m.member == seen.local) {
        let _ = observer.leave().await;
        return Err(alone(group, "election", seen.pending.len()));
    }
    Ok((observer, seen))
}

/// Joins the replica group `group` with a [`ReplicaObserver`] and returns
/// once it holds the group's state id with someone else in the group, with
/// what it saw then (rules 1 to 3 of the crate's doc).
pub async fn observe_replica<T: Transport>(
    transport: &T,
    group: &str,
    ready_within: Duration,
) -> Result<(ReplicaObserver, ReplicaInspection), ToolError> {
    let conn = join(transport, group)?;
    let refused = |error| ToolError::StartReplica {
        group: group.to_owned(),
        error,
    };
    let started = ReplicaObserver::start(conn, ReplicaConfig::default());
    let observer = match tokio::time::timeout(ready_within, started).await {
        Ok(started) => started.map_err(refused)?,
        Err(_) => return Err(no_state(group, ready_within)),
    };
    let seen = observer.inspect().await.map_err(refused)?;
    if seen.members.iter().all(|m| m.member == seen.local) {
        let _ = observer.leave().await;
        return Err(alone(group, "replica", seen.pending.len()));
    }
    Ok((observer, seen))
}

/// `acpg status --election GROUP`: joins as an observer, prints what it
/// sees at one point of the stream ([`write_election_status`]) and leaves.
pub async fn election_status<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
) -> Result<ElectionInspection, ToolError> {
    let (observer, seen) = observe_election(transport, group, options.ready_within).await?;
    let _ = observer.leave().await;
    write_election_status(&seen, options.format, out)?;
    out.flush()?;
    Ok(seen)
}

/// `acpg status --replica GROUP`: joins with a [`ReplicaObserver`], prints
/// what it sees at one point of the stream ([`write_replica_status`]) and
/// leaves.
pub async fn replica_status<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
) -> Result<ReplicaInspection, ToolError> {
    let (observer, seen) = observe_replica(transport, group, options.ready_within).await?;
    let _ = observer.leave().await;
    write_replica_status(&seen, options.format, out)?;
    out.flush()?;
    Ok(seen)
}

/// `acpg watch --election GROUP`: joins as an observer and prints every
/// election event with the time `clock` gives when it is read, until
/// `stop` resolves or the group closes.
pub async fn watch_election<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
    clock: impl FnMut() -> SystemTime,
    stop: impl Future<Output = ()>,
) -> Result<WatchEnd, ToolError> {
    let (observer, seen) = observe_election(transport, group, options.ready_within).await?;
    let events = observer.subscribe();
    let others = seen.members.len().saturating_sub(1);
    let end = watch_events(
        events,
        Watched::Election,
        |e| matches!(e, ElectionEvent::Closed { .. }),
        Header {
            group,
            local: seen.local,
            others,
        },
        options.format,
        out,
        clock,
        stop,
    )
    .await;
    if matches!(end, Ok(WatchEnd::Stopped | WatchEnd::OutputClosed)) {
        let _ = observer.leave().await;
    }
    end
}

/// `acpg watch --replica GROUP`: joins with a [`ReplicaObserver`] and
/// prints every replica event (views, installs, primary components, state
/// transfers) with the time `clock` gives when it is read, until `stop`
/// resolves or the group closes.
pub async fn watch_replica<T: Transport>(
    transport: &T,
    group: &str,
    options: Options,
    out: &mut dyn Write,
    clock: impl FnMut() -> SystemTime,
    stop: impl Future<Output = ()>,
) -> Result<WatchEnd, ToolError> {
    let (observer, seen) = observe_replica(transport, group, options.ready_within).await?;
    let events = observer.subscribe();
    let others = seen.members.len().saturating_sub(1);
    let end = watch_events(
        events,
        Watched::Replica,
        |e| matches!(e, ReplicaEvent::Closed { .. }),
        Header {
            group,
            local: seen.local,
            others,
        },
        options.format,
        out,
        clock,
        stop,
    )
    .await;
    if matches!(end, Ok(WatchEnd::Stopped | WatchEnd::OutputClosed)) {
        let _ = observer.leave().await;
    }
    end
}

/// What the first line of a text watch says.
struct Header<'a> {
    group: &'a str,
    local: Member,
    others: usize,
}

#[allow(clippy::too_many_arguments)]
async fn watch_events<E: Clone>(
    mut events: Receiver<E>,
    wrap: fn(E) -> Watched,
    closes: fn(&E) -> bool,
    header: Header<'_>,
    format: Format,
    out: &mut dyn Write,
    mut clock: impl FnMut() -> SystemTime,
    stop: impl Future<Output = ()>,
) -> Result<WatchEnd, ToolError> {
    if format == Format::Text {
        let Header {
            group,
            local,
            others,
        } = header;
        let line = format!(
            "{} acpg         watching group {group} as {local} ({others} other member{})",
            utc(clock()),
            if others == 1 { "" } else { "s" },
        );
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return ended_by_output(e);
        }
    }
    tokio::pin!(stop);
    loop {
        let (watched, closed) = tokio::select! {
            () = &mut stop => return Ok(WatchEnd::Stopped),
            event = events.recv() => match event {
                Ok(event) => {
                    let closed = closes(&event);
                    (wrap(event), closed)
                }
                Err(RecvError::Lagged(n)) => (Watched::Missed(n), false),
                Err(RecvError::Closed) => return Ok(WatchEnd::Closed),
            },
        };
        if let Err(e) = write_watched(out, format, utc(clock()), watched) {
            return ended_by_output(e);
        }
        if closed {
            return Ok(WatchEnd::Closed);
        }
    }
}

/// Prints `seen` in `format`: for text, a header (group, protocol, quorum),
/// the members with role and versions (the inspecting one marked as this
/// acpg), the pending processes, and each election with its leader, epoch
/// and candidates; for JSON, the inspection as one object on one line.
pub fn write_election_status(
    seen: &ElectionInspection,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    if format == Format::Json {
        serde_json::to_writer(&mut *out, seen)?;
        return writeln!(out);
    }
    let participants = seen
        .members
        .iter()
        .filter(|m| m.role == Role::Participant)
        .count();
    let quorum = if seen.quorum.quorate {
        format!(
            "quorate ({} of {participants} participants reported, ring {})",
            seen.quorum.reported.len(),
            seen.quorum.ring_seq
        )
    } else if seen.quorum.reported.is_empty() {
        "quorum unknown (no participant reported since the last view change)".to_owned()
    } else {
        "not quorate".to_owned()
    };
    writeln!(
        out,
        "election group {}: {}, {quorum}",
        seen.group,
        protocol(seen.group_version)
    )?;
    writeln!(
        out,
        "seen by {}{}",
        seen.local,
        if seen.installed {
            ""
        } else {
            "; the view is being installed"
        }
    )?;
    writeln!(out)?;
    writeln!(out, "members ({})", seen.members.len())?;
    let rows: Vec<[String; 4]> = seen
        .members
        .iter()
        .map(|m| {
            [
                m.member.to_string(),
                role(m.role).to_owned(),
                m.versions.to_string(),
                this(m.member, seen.local, seen.role),
            ]
        })
        .collect();
    write_rows(out, &rows)?;
    write_pending(&seen.pending, out)?;
    writeln!(out)?;
    writeln!(out, "elections ({})", seen.elections.len())?;
    let rows: Vec<[String; 4]> = seen.elections.iter().map(election_row).collect();
    write_rows(out, &rows)?;
    let refused = seen.refused.total();
    if refused > 0 || seen.dropped_unauthenticated > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "refused by this acpg: {refused} ({:?}); dropped without a valid MAC: {}",
            seen.refused, seen.dropped_unauthenticated
        )?;
    }
    Ok(())
}

fn election_row(e: &ElectionEntry) -> [String; 4] {
    let name = if e.name == GROUP_ELECTION {
        "(group)".to_owned()
    } else {
        format!("{:?}", e.name)
    };
    let leader = match e.leader {
        Some(l) => format!("leader {l}"),
        None => "no leader".to_owned(),
    };
    let epoch = match e.epoch {
        Some(epoch) => format!("epoch {epoch}"),
        None => String::new(),
    };
    [
        name,
        leader,
        epoch,
        format!("candidates {}", or_none(&e.candidates)),
    ]
}

/// Prints `seen` in `format`: for text, a header (group, protocol, primary
/// or not), the state this acpg holds, the members with role, versions and
/// the state each announced at the latest round, the pending processes,
/// and whether the participants agreed there (each distinct state with who
/// held it, and the transfer that followed); for JSON, the inspection as
/// one object on one line.
pub fn write_replica_status(
    seen: &ReplicaInspection,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    if format == Format::Json {
        serde_json::to_writer(&mut *out, seen)?;
        return writeln!(out);
    }
    let primary = match (seen.primary, seen.epoch) {
        (true, Some(epoch)) => format!("primary (epoch {epoch})"),
        (true, None) => "primary".to_owned(),
        (false, _) => "NOT primary (commands are refused)".to_owned(),
    };
    writeln!(
        out,
        "replica group {}: {}, {primary}",
        seen.group,
        protocol(seen.group_version)
    )?;
    writeln!(
        out,
        "seen by {} holding {}{}",
        seen.local,
        state(&seen.state),
        if seen.holding {
            ""
        } else {
            "; waiting for the state"
        }
    )?;
    writeln!(out)?;
    writeln!(out, "members ({})", seen.members.len())?;
    let rows: Vec<[String; 5]> = seen
        .members
        .iter()
        .map(|m| {
            [
                m.member.to_string(),
                role(m.role).to_owned(),
                m.versions.to_string(),
                match m.announced {
                    Some(s) if s.genesis == 0 => "announced no state".to_owned(),
                    Some(s) => format!("announced {}", state(&s)),
                    None => "announced nothing yet".to_owned(),
                },
                this(m.member, seen.local, seen.role),
            ]
        })
        .collect();
    write_rows(out, &rows)?;
    write_pending(&seen.pending, out)?;
    writeln!(out)?;
    let a = &seen.agreement;
    let participants: usize = a.states.iter().map(|s| s.members.len()).sum();
    if a.agree {
        writeln!(
            out,
            "agreement at install round {}: agree ({participants} participant{} at the same state{})",
            a.round,
            if participants == 1 { "" } else { "s" },
            if a.empty.is_empty() {
                String::new()
            } else {
                format!(", {} with none yet", a.empty.len())
            }
        )?;
    } else {
        writeln!(
            out,
            "agreement at install round {}: DISAGREE ({} different states)",
            a.round,
            a.states.len()
        )?;
    }
    let rows: Vec<[String; 2]> = a
        .states
        .iter()
        .map(|s| [state(&s.state), list(&s.members)])
        .collect();
    write_rows(out, &rows)?;
    if !a.empty.is_empty() {
        writeln!(out, "  no state yet: {}", list(&a.empty))?;
    }
    if let Some(sender) = a.sender {
        writeln!(
            out,
            "  {sender} sent the state to {}",
            or_none(&a.receivers)
        )?;
    }
    write_checks(&seen.checks, out)?;
    if seen.refused.hostile() > 0 {
        writeln!(out)?;
        writeln!(out, "refused by this acpg: {:?}", seen.refused)?;
    }
    Ok(())
}

/// The divergence checks this acpg saw complete (digests of the state
/// compared at one point of the stream).
fn write_checks(checks: &Checks, out: &mut dyn Write) -> io::Result<()> {
    let Some(last) = &checks.last else {
        return writeln!(
            out,
            "state digests: no check completed while this acpg watched"
        );
    };
    writeln!(
        out,
        "state digests: {} check{} completed, {} found a divergence",
        checks.completed,
        if checks.completed == 1 { "" } else { "s" },
        checks.diverged
    )?;
    let outcome = match (last.diverged.is_empty(), last.resync_from) {
        (true, _) => format!("{} agree", list(&last.compared)),
        (false, Some(from)) => format!("{} DIVERGED; {from} sent its state", list(&last.diverged)),
        (false, None) => format!(
            "{} DIFFER, no digest has a majority; nothing sent",
            list(&last.diverged)
        ),
    };
    writeln!(out, "  last after command {}: {outcome}", last.at.applied)
}

/// A state id in one line: `epoch 12.3 applied 40 chain 5c1e2f0a9b3d4e11
/// genesis 1f2e…` (the genesis names the founding of its history).
fn state(s: &StateId) -> String {
    format!(
        "epoch {} applied {} chain {:016x} genesis {:016x}",
        s.epoch, s.applied, s.chain, s.genesis
    )
}

fn protocol(version: Option<u8>) -> String {
    match version {
        Some(v) => format!("protocol v{v}"),
        None => "no protocol yet".to_owned(),
    }
}

/// The mark of the inspecting member's row: acpg itself is an observer;
/// a participant's own inspection, printed by a program, is marked as
/// such.
fn this(member: Member, local: Member, role: Role) -> String {
    match (member == local, role) {
        (false, _) => String::new(),
        (true, Role::Observer) => "this acpg".to_owned(),
        (true, Role::Participant) => "inspected here".to_owned(),
    }
}

fn or_none(members: &[Member]) -> String {
    if members.is_empty() {
        "none".to_owned()
    } else {
        list(members)
    }
}

fn write_pending(pending: &[Member], out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "pending (in the CPG view, not announced): {}",
        or_none(pending)
    )
}
