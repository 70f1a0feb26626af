//! `bench --loss-window [--rounds N]`: what the loss of one node takes
//! with it, agreed delivery against safe delivery, on the durable kv
//! service of the real cluster (the loss window the `replicated` module
//! docs state, measured), for two faults: node 1's corosync daemon
//! SIGKILLed, and node 1's link cut.
//!
//! ```text
//!  per delivery (agreed, safe), R rounds, on one group:
//!    three servers up (acpg-kv serve --data-dir --sync batch [--safe])
//!    writer (node 1's namespace): WINDOW puts in flight to node 1's server,
//!      a key each; `ACKED <key> <monotonic ns>` per acknowledged put
//!    WRITING + 400 ms, at t_kill: node 1's corosync daemon SIGKILLed (its
//!      server loses the group), or node 1's link cut (node 1 alone: not
//!      primary, its server refuses puts); for the others node 1 is down
//!    checker (node 2's namespace): once node 2's server serves a read,
//!      reads every key node 1 acknowledged; `MISSING <key>` per absent one
//!    node 1's daemon started again or its link restored, its server
//!      started again on its directory
//!  table: acknowledged puts, of those acknowledged in the last 20 ms
//!    before t_kill, and lost (acknowledged, absent after the loss)
//! ```
//!
//! Rules:
//!
//! 1. Both deliveries run with a data directory per server and group
//!    commit (`--sync batch`): a reply leaves once the command is on this
//!    server's disk. Safe delivery also waits for a majority's
//!    acknowledgement; agreed delivery does not, so a put node 1 applied
//!    and answered that no other node received before node 1's daemon
//!    died is gone from the group that goes on (node 1's disk has it, but
//!    its history lost: it comes back to the group's state).
//! 2. A put counts as acknowledged when its `OK` reached the writer; it is
//!    lost when the checker, reading through node 2 after node 1 left
//!    the view, finds its key absent. Keys are never written twice.
//! 3. Every process started is killed when its round or run ends; node 1's
//!    daemon is started again (its link restored) before the next round.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::children::{spawn_lines, Procs, Said};
use crate::failover::{cluster_sh, kill_corosync, link, mono_ns, wait_whole};
use crate::kv_load::ROLE_ENV;
use crate::kv_service::LineClient;
use crate::vs_etcd::{data_dir, kv_addr};

/// The helper role of the writer.
pub const ROLE_WRITER: &str = "loss-writer";
/// The helper role of the checker.
pub const ROLE_CHECKER: &str = "loss-checker";

/// Puts in flight from the writer.
const WINDOW: usize = 32;
/// How long the writer writes before node 1's daemon is killed.
const BEFORE_KILL: Duration = Duration::from_millis(400);
/// Acknowledged this close before the kill: at risk under agreed delivery.
const AT_RISK: u64 = 20_000_000;
const LIMIT: Duration = Duration::from_secs(60);
/// How long the writer may take to stop once node 1's daemon died.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// What takes node 1 away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// Its corosync daemon SIGKILLed.
    #[default]
    Daemon,
    /// Its link to the others cut (the daemon and the server live on).
    Link,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Daemon => "node 1's daemon SIGKILLed",
            Fault::Link => "node 1's link cut",
        }
    }

    /// Takes node 1 away.
    fn apply(self) -> Result<(), String> {
        match self {
            Fault::Daemon => kill_corosync(1),
            Fault::Link => link(1, false),
        }
    }

    /// Brings node 1 back into the membership of every node.
    fn repair(self) -> Result<(), String> {
        match self {
            Fault::Daemon => cluster_sh(&["start-node", "1"])?,
            Fault::Link => link(1, true)?,
        }
        wait_whole()
    }
}

/// What one (fault, delivery) series of rounds found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// What took node 1 away.
    pub fault: Fault,
    /// `--safe` or not.
    pub safe: bool,
    /// Rounds run.
    pub rounds: usize,
    /// Puts node 1 acknowledged.
    pub acked: usize,
    /// Of those, acknowledged within 20 ms before node 1's daemon died.
    pub at_risk: usize,
    /// Acknowledged, and absent once the group went on without node 1.
    pub lost: usize,
}

/// The helpers' lines.
struct Lines {
    rx: Receiver<Said>,
}

impl Lines {
    /// Reads lines until one is `want`ed (each line is shown to `want`
    /// once), for at most `limit`.
    fn wait_for(
        &mut self,
        limit: Duration,
        mut want: impl FnMut(&Said) -> bool,
    ) -> Result<Said, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(said) if want(&said) => return Ok(said),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err("no answer in time".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("helpers gone".into()),
            }
        }
    }
}

fn in_node(n: u32, exe: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &format!("acpg-n{n}")]).arg(exe);
    cmd
}

fn start_server(
    exe: &Path,
    group: &str,
    n: u32,
    safe: bool,
    tx: &Sender<Said>,
) -> Result<std::process::Child, String> {
    let dir = data_dir(group, n);
    let mut cmd = in_node(n, exe);
    cmd.args(["serve", group, "--listen", &kv_addr(n), "--corosync"])
        .args(["--data-dir", &dir.display().to_string(), "--sync", "batch"])
        .env(ROLE_ENV, "acpg-kv");
    if safe {
        cmd.arg("--safe");
    }
    spawn_lines(cmd, n as usize, tx)
}

fn serving(lines: &mut Lines, n: u32) -> Result<(), String> {
    lines
        .wait_for(LIMIT, |(i, l)| *i == n as usize && l.starts_with("SERVING"))
        .map(|_| ())
        .map_err(|e| format!("node {n}'s kv server not serving: {e}"))
}

/// Runs `rounds` rounds of one fault and delivery (module docs).
fn series(exe: &Path, fault: Fault, safe: bool, rounds: usize) -> Result<Tally, String> {
    let group = format!(
        "acpg-loss-{}-{}-{}",
        std::process::id(),
        match fault {
            Fault::Daemon => "daemon",
            Fault::Link => "link",
        },
        if safe { "safe" } else { "agreed" }
    );
    let wipe = || {
        for n in 1..=3 {
            let _ = std::fs::remove_dir_all(data_dir(&group, n));
        }
    };
    wipe();
    let (tx, rx) = channel();
    let mut lines = Lines { rx };
    let mut servers = Vec::new();
    for n in 1..=3 {
        servers.push(Procs(vec![start_server(exe, &group, n, safe, &tx)?]));
        serving(&mut lines, n)?;
    }
    let mut tally = Tally {
        fault,
        safe,
        ..Tally::default()
    };
    for round in 0..rounds {
        let prefix = format!("r{round}");
        let writer = Procs(vec![spawn_lines(
            {
                let mut cmd = in_node(1, exe);
                cmd.args([kv_addr(1), prefix.clone()])
                    .env(ROLE_ENV, ROLE_WRITER);
                cmd
            },
            10,
            &tx,
        )?]);
        let (_, started) = lines.wait_for(LIMIT, |(i, l)| {
            *i == 10 && (l == "WRITING" || l.starts_with("ERROR"))
        })?;
        if started != "WRITING" {
            return Err(format!("round {round}: the writer: {started}"));
        }
        std::thread::sleep(BEFORE_KILL);
        fault.apply()?;
        let killed = mono_ns();
        // Node 1 comes back whatever the round found, so that a failed
        // round leaves the cluster whole.
        let node1 = std::mem::replace(&mut servers[0], Procs(Vec::new()));
        let observed = observe(exe, &group, &prefix, &mut lines, &tx, [writer, node1]);
        fault.repair()?;
        let (acked, missing) = observed.map_err(|e| format!("round {round}: {e}"))?;
        let at_risk = acked
            .iter()
            .filter(|(_, at)| killed.saturating_sub(*at) <= AT_RISK)
            .count();
        eprintln!(
            "loss-window: {}, {} round {}: {} acknowledged, {at_risk} in the last 20 ms, {missing} lost",
            fault.label(),
            if safe { "safe" } else { "agreed" },
            round + 1,
            acked.len()
        );
        tally.rounds += 1;
        tally.acked += acked.len();
        tally.at_risk += at_risk;
        tally.lost += missing;
        servers[0] = Procs(vec![start_server(exe, &group, 1, safe, &tx)?]);
        serving(&mut lines, 1)?;
    }
    drop(servers);
    wipe();
    Ok(tally)
}

/// One round from the fault on: the writer's last acknowledgements, then
/// (the writer and node 1's server stopped) the check of every
/// acknowledged key through node 2. Gives the acknowledged keys (with
/// when) and how many of them are missing.
fn observe(
    exe: &Path,
    group: &str,
    prefix: &str,
    lines: &mut Lines,
    tx: &Sender<Said>,
    [writer, node1]: [Procs; 2],
) -> Result<(Vec<(String, u64)>, usize), String> {
    let mut acked: Vec<(String, u64)> = Vec::new();
    // The writer stops at its first failed put; a put still waiting
    // for node 1's server after that has no known outcome.
    let _ = lines.wait_for(STOP_LIMIT, |(i, l)| {
        if *i == 10 {
            if let Some((key, at)) = parse_acked(l) {
                acked.push((key, at));
            }
        }
        *i == 10 && l.starts_with("STOPPED")
    });
    drop(writer);
    drop(node1);
    let keys = std::env::temp_dir().join(format!("{group}-{prefix}.keys"));
    let listed: Vec<&str> = acked.iter().map(|(k, _)| k.as_str()).collect();
    std::fs::write(&keys, listed.join("\n")).map_err(|e| format!("{}: {e}", keys.display()))?;
    let checker = Procs(vec![spawn_lines(
        {
            let mut cmd = in_node(2, exe);
            cmd.args([kv_addr(2), keys.display().to_string()])
                .env(ROLE_ENV, ROLE_CHECKER);
            cmd
        },
        11,
        tx,
    )?]);
    let mut missing = 0;
    let (_, done) = lines.wait_for(LIMIT, |(i, l)| {
        if *i == 11 && l.starts_with("MISSING ") {
            missing += 1;
        }
        *i == 11 && (l.starts_with("CHECKED") || l.starts_with("ERROR"))
    })?;
    drop(checker);
    let _ = std::fs::remove_file(&keys);
    if done.starts_with("ERROR") {
        return Err(done);
    }
    Ok((acked, missing))
}

/// Both faults, both deliveries, `rounds` rounds each.
pub fn run(exe: &Path, rounds: usize) -> Result<Vec<Tally>, String> {
    let mut tallies = Vec::new();
    for fault in [Fault::Daemon, Fault::Link] {
        for safe in [false, true] {
            tallies.push(series(exe, fault, safe, rounds)?);
        }
    }
    Ok(tallies)
}

/// The Markdown table of a run.
pub fn table(tallies: &[Tally]) -> String {
    let mut out = String::from(
        "| fault | delivery | rounds | puts acknowledged by node 1 | of those in the last 20 ms before the fault | lost |\n|---|---|---|---|---|---|\n",
    );
    for t in tallies {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            t.fault.label(),
            if t.safe { "safe (majority)" } else { "agreed" },
            t.rounds,
            t.acked,
            t.at_risk,
            t.lost
        ));
    }
    out
}

fn parse_acked(line: &str) -> Option<(String, u64)> {
    let mut words = line.strip_prefix("ACKED ")?.split(' ');
    let key = words.next()?.to_owned();
    let at = words.next()?.parse().ok()?;
    Some((key, at))
}

/// A client of the server at `addr` once it answers `line` as `wanted`
/// (it may be starting, joining or not primary yet), trying every 20 ms
/// for up to a minute.
async fn answering(addr: &str, line: &str, wanted: impl Fn(&str) -> bool) -> Option<LineClient> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(c) = LineClient::connect(addr).await {
            if c.call(line).await.is_ok_and(|a| wanted(&a)) {
                return Some(c);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writer (role `loss-writer`): `ADDR PREFIX`. Retries one put until
/// the server takes it (it may still be joining), says `WRITING`, then
/// keeps [`WINDOW`] puts in flight on keys `PREFIX-<i>`, printing `ACKED
/// <key> <monotonic ns>` for each, until a put fails: `STOPPED`.
pub fn writer_main(args: &[String]) -> i32 {
    let [addr, prefix] = args else {
        println!("ERROR usage: loss-writer ADDR PREFIX");
        return 2;
    };
    let runtime = match crate::agent_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let first = format!("put {prefix}-first x");
        let Some(client) = answering(addr, &first, |a| a.starts_with("OK ")).await else {
            println!("ERROR no put taken by {addr}");
            return;
        };
        println!("WRITING");
        let mut next = 0u64;
        let mut flying = futures::stream::FuturesUnordered::new();
        let put = |i: u64| {
            let key = format!("{prefix}-{i}");
            let client = &client;
            async move {
                let answer = client.call(&format!("put {key} v")).await;
                (key, answer)
            }
        };
        while flying.len() < WINDOW {
            flying.push(put(next));
            next += 1;
        }
        while let Some((key, answer)) = flying.next().await {
            match answer {
                Ok(a) if a.starts_with("OK ") => {
                    println!("ACKED {key} {}", mono_ns());
                    flying.push(put(next));
                    next += 1;
                }
                _ => break,
            }
        }
        // What is still in flight has no known outcome.
        println!("STOPPED");
    });
    0
}

/// The checker (role `loss-checker`): `ADDR KEYS_FILE`. Waits until the
/// server answers a read, then reads every key of the file (one a line):
/// `MISSING <key>` for each absent one, then `CHECKED <present> <missing>`.
pub fn checker_main(args: &[String]) -> i32 {
    let [addr, file] = args else {
        println!("ERROR usage: loss-checker ADDR KEYS_FILE");
        return 2;
    };
    let keys = match std::fs::read_to_string(file) {
        Ok(k) => k,
        Err(e) => {
            println!("ERROR {file}: {e}");
            return 1;
        }
    };
    let runtime = match crate::agent_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let read = |a: &str| a.starts_with("NONE") || a.starts_with("VALUE");
        let Some(client) = answering(addr, "get loss-window-probe", read).await else {
            println!("ERROR {addr} serves no read");
            return;
        };
        let (mut present, mut missing) = (0, 0);
        for key in keys.lines().filter(|k| !k.is_empty()) {
            match client.call(&format!("get {key}")).await {
                Ok(a) if a.starts_with("VALUE") => present += 1,
                Ok(a) if a.starts_with("NONE") => {
                    missing += 1;
                    println!("MISSING {key}");
                }
                other => {
                    println!("ERROR get {key}: {other:?}");
                    return;
                }
            }
        }
        println!("CHECKED {present} {missing}");
    });
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_read_back_with_their_time() {
        assert_eq!(parse_acked("ACKED r0-7 42"), Some(("r0-7".into(), 42)));
        assert_eq!(parse_acked("ACKED r0-7"), None);
        assert_eq!(parse_acked("STOPPED"), None);
    }

    #[test]
    fn the_table_has_a_row_per_delivery() {
        let t = |safe, lost| Tally {
            fault: Fault::Link,
            safe,
            rounds: 10,
            acked: 900,
            at_risk: 40,
            lost,
        };
        let text = table(&[t(false, 3), t(true, 0)]);
        assert!(
            text.contains("| node 1's link cut | agreed | 10 | 900 | 40 | 3 |"),
            "{text}"
        );
        assert!(
            text.contains("| node 1's link cut | safe (majority) | 10 | 900 | 40 | 0 |"),
            "{text}"
        );
    }
}
