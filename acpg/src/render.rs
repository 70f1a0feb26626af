//! `acpg status` output: a [`GroupInspection`] as aligned text, or as one
//! JSON object.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use actix_cpg::group::{GroupInspection, SlotInspection, TreeInspection};
use actix_cpg::supervisor::{PlacementPolicy, QuorumPolicy, RestartType, SlotStatus};
use actix_cpg::{Member, Role};

use crate::{utc, Format};

/// Prints `seen` in `format`: for text, a header (group, protocol, quorum,
/// where the supervision engine stands), the members with role and
/// versions (the inspecting one marked as this acpg), the pending
/// processes, the registry, and each tree with its hosts and where each
/// child runs; for JSON, the inspection as one object on one line.
pub fn write_status(seen: &GroupInspection, format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, seen)?;
            writeln!(out)
        }
        Format::Text => write_text(seen, out),
    }
}

fn write_text(seen: &GroupInspection, out: &mut dyn Write) -> io::Result<()> {
    let protocol = match seen.group_version {
        Some(v) => format!("protocol v{v}"),
        None => "no protocol yet".to_owned(),
    };
    writeln!(
        out,
        "group {}: {protocol}, {}{}",
        seen.group,
        quorum(seen),
        if seen.supervision.merging {
            ", merging partitions"
        } else {
            ""
        }
    )?;
    let stream_time = match seen.supervision.now_ms {
        0 => String::new(),
        ms => format!(
            ", stream time {}",
            utc(UNIX_EPOCH + Duration::from_millis(ms))
        ),
    };
    writeln!(
        out,
        "seen by {} at supervision event {} (epoch {}{stream_time}){}",
        seen.local,
        seen.supervision.seq,
        seen.supervision.epoch,
        if seen.holds_state {
            ""
        } else {
            "; waiting for the group state"
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
                if m.member == seen.local {
                    "this acpg".to_owned()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    write_rows(out, &rows)?;
    if seen.pending.is_empty() {
        writeln!(out, "pending (in the CPG view, not announced): none")?;
    } else {
        writeln!(
            out,
            "pending (in the CPG view, not announced): {}",
            list(&seen.pending)
        )?;
    }

    writeln!(out)?;
    writeln!(out, "names ({})", seen.names.len())?;
    let rows: Vec<[String; 2]> = seen
        .names
        .iter()
        .map(|n| [n.name.clone(), n.host.to_string()])
        .collect();
    write_rows(out, &rows)?;

    if seen.trees.is_empty() {
        writeln!(out)?;
        writeln!(out, "trees: none")?;
    }
    for tree in &seen.trees {
        writeln!(out)?;
        write_tree(tree, out)?;
    }
    Ok(())
}

fn write_tree(tree: &TreeInspection, out: &mut dyn Write) -> io::Result<()> {
    let running = tree.children.iter().filter(|s| s.host().is_some()).count();
    writeln!(
        out,
        "tree {}: {}, {running} of {} slots running, spec {}, without quorum: {}",
        tree.name,
        if tree.alive {
            "supervised"
        } else {
            "gave up (escalated)"
        },
        tree.children.len(),
        tree.fingerprint,
        match tree.quorum_policy {
            QuorumPolicy::Stop => "stop",
            QuorumPolicy::Freeze => "freeze",
            QuorumPolicy::Ignore => "ignore",
        }
    )?;
    if tree.hosts.is_empty() {
        writeln!(out, "  hosts: none (no member started it with factories)")?;
    } else {
        writeln!(out, "  hosts: {}", list(&tree.hosts))?;
    }
    let rows: Vec<[String; 5]> = tree.children.iter().map(slot_row).collect();
    write_rows(out, &rows)
}

fn slot_row(slot: &SlotInspection) -> [String; 5] {
    let (status, incarnation, token) = match slot.status {
        SlotStatus::Running {
            host,
            incarnation,
            token,
        } => (
            format!("running on {host}"),
            format!("incarnation {incarnation}"),
            format!("token {token}"),
        ),
        SlotStatus::Pending => ("pending".to_owned(), String::new(), String::new()),
        SlotStatus::Stopped => ("stopped".to_owned(), String::new(), String::new()),
        SlotStatus::Removed => ("removed".to_owned(), String::new(), String::new()),
    };
    let mut kind = format!("{} {}", restart(slot.restart), policy(slot.policy));
    if !slot.supervised {
        kind += ", supervisor down";
    }
    [slot.name.clone(), status, incarnation, token, kind]
}

/// Rows of cells, two spaces in and between, columns aligned (an empty
/// column takes no room), trailing blanks cut.
pub(crate) fn write_rows<const N: usize>(
    out: &mut dyn Write,
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            if w > 0 {
                line.push_str(&format!("  {cell:<w$}"));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn quorum(seen: &GroupInspection) -> &'static str {
    match (seen.quorum.quorate, seen.quorum.fenced) {
        (_, true) => "quorum unknown (a node went down since the last report)",
        (true, false) => "quorate",
        (false, false) => "not quorate",
    }
}

pub(crate) fn role(role: Role) -> &'static str {
    match role {
        Role::Participant => "participant",
        Role::Observer => "observer",
    }
}

fn restart(restart: RestartType) -> &'static str {
    match restart {
        RestartType::Permanent => "permanent",
        RestartType::Transient => "transient",
        RestartType::Temporary => "temporary",
    }
}

fn policy(policy: PlacementPolicy) -> String {
    match policy {
        PlacementPolicy::Any => "any member".to_owned(),
        PlacementPolicy::Pinned(node) => format!("pinned to {node}"),
        PlacementPolicy::OnePerNode => "one per node".to_owned(),
        PlacementPolicy::OnEveryMember => "on every member".to_owned(),
        PlacementPolicy::Singleton => "singleton".to_owned(),
    }
}

pub(crate) fn list(members: &[Member]) -> String {
    members
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
