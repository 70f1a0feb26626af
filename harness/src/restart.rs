//! `bench --vs-etcd-restart`: how long a whole cluster killed at once
//! takes to accept writes again, the durable kv service against etcd, on
//! the same three node namespaces, in one run.
//!
//! ```text
//!  per system, per variant, R rounds:
//!    three servers up (acpg-kv serve --safe --data-dir --sync batch | etcd members)
//!    SIGKILL every server [variant daemons: and every corosync daemon]
//!    probe process (node 1) starts, retrying a put on every member
//!    t0 = CLOCK_MONOTONIC ─► [daemons started again] ─► the three servers started again
//!    probe: ACK <monotonic ns> at its first acknowledged put;  sample = ACK − t0
//!  table: p50 / max per (variant, system), and the ratio etcd / actix-cpg
//! ```
//!
//! Rules:
//!
//! 1. The kv service runs durable and safe, as in the `durable` pairing of
//!    `--vs-etcd` (`--data-dir`, `--sync batch`, `--safe`): no
//!    acknowledged write is lost across the restart. etcd runs with its
//!    defaults (every commit fsynced).
//! 2. A sample runs from just before the first restart action (daemons in
//!    the `daemons` variant, servers otherwise) to the probe's first
//!    acknowledged put, both read on `CLOCK_MONOTONIC` (one clock for
//!    every namespace). The probe starts before `t0`, so its own start
//!    does not count; it tries each member in turn every 2 ms, and a put
//!    that is waiting for an answer is not cut short (up to 3 s).
//! 3. Variant `processes`: every server process SIGKILLed (the etcd
//!    members; the kv servers). Variant `daemons`: for actix-cpg the three
//!    corosync daemons too, started again (all three at once) before the
//!    servers; for etcd the same as `processes` (its members are its
//!    daemons), measured again.
//! 4. Before the kill every member is up and a put is acknowledged, so
//!    every round restarts a working cluster with data on its disks.
//! 5. Every process started is killed when its system's run ends.
//! 6. A kv service that accepts no write within [`STUCK`] after a restart
//!    is counted as stuck (a column of the table) and the run goes on
//!    with a new group on fresh directories; its servers' logs (stderr)
//!    say why.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::children::{spawn_lines, Procs, Said};
use crate::etcd::{client_url, EtcdCluster, Fsync, NODES};
use crate::failover::{kill_corosync, mono_ns};
use crate::kv_load::{quantile, ROLE_ENV};
use crate::vs_etcd::{data_dir, kv_addr, Mode};

/// The helper role of the probe.
pub const ROLE_PROBE: &str = "restart-probe";

/// What is killed (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Every server process.
    Processes,
    /// Every server process and every corosync daemon.
    Daemons,
}

impl Variant {
    /// The option value naming the variant.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Processes => "processes",
            Variant::Daemons => "daemons",
        }
    }

    /// The variant named `name`.
    pub fn parse(name: &str) -> Result<Variant, String> {
        match name {
            "processes" => Ok(Variant::Processes),
            "daemons" => Ok(Variant::Daemons),
            other => Err(format!(
                "unknown restart variant {other:?} (processes or daemons)"
            )),
        }
    }

    /// What the variant kills, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Processes => "every server SIGKILLed (acpg-kv serve / etcd member)",
            Variant::Daemons => {
                "every server and every corosync daemon SIGKILLed (etcd: every member, again)"
            }
        }
    }
}

/// The probe's line: `ACK <monotonic ns>`.
pub fn parse_ack(line: &str) -> Option<u64> {
    line.strip_prefix("ACK ")?.trim().parse().ok()
}

/// One (variant, system) series: times to the first acknowledged put, ns.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The variant.
    pub variant: Variant,
    /// actix-cpg (`true`) or etcd.
    pub acpg: bool,
    /// One sample per round that accepted a write again, ns.
    pub samples: Vec<u64>,
    /// Variant `daemons`, actix-cpg: per round, from `t0` to the daemons'
    /// membership formed again, as `scripts/cluster.sh start-node` sees it
    /// (it polls every 0.2 s), ns.
    pub membership: Vec<u64>,
    /// Rounds that accepted no write within [`STUCK`] (rule 6).
    pub stuck: usize,
}

impl Series {
    fn ms(&self, q: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort_unstable();
        quantile(&s, q) / 1e6
    }

    /// p50 of [`Series::membership`] in ms, if there is one.
    fn membership_p50(&self) -> Option<f64> {
        let mut s = self.membership.clone();
        s.sort_unstable();
        (!s.is_empty()).then(|| quantile(&s, 0.5) / 1e6)
    }
}

const LIMIT: Duration = Duration::from_secs(120);

/// How long a restarted kv service may take to accept a write before the
/// round counts as stuck (rule 6).
pub const STUCK: Duration = Duration::from_secs(60);

/// The helpers' lines, with those read while waiting for another kept
/// for a later wait.
struct Lines {
    rx: Receiver<Said>,
    kept: Vec<Said>,
}

impl Lines {
    fn wait(&mut self, deadline: Instant, want: impl Fn(&Said) -> bool) -> Result<Said, String> {
        if let Some(i) = self.kept.iter().position(&want) {
            return Ok(self.kept.remove(i));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(said) if want(&said) => return Ok(said),
                Ok((_, line)) if line.starts_with("ERROR") => eprintln!("restart: {line}"),
                Ok(said) => {
                    if said.1.starts_with("SERVING") {
                        self.kept.push(said);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err("no answer in time".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("helpers gone".into()),
            }
        }
    }

    /// Forgets what the killed servers said.
    fn forget(&mut self) {
        while self.rx.try_recv().is_ok() {}
        self.kept.clear();
    }
}

/// Starts the probe in node 1's namespace against `target`'s members.
fn probe(exe: &Path, target: &str, tx: &Sender<Said>, index: usize) -> Result<Child, String> {
    let endpoints: Vec<String> = match target {
        "acpg" => (1..=NODES).map(kv_addr).collect(),
        _ => (1..=NODES).map(client_url).collect(),
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", "acpg-n1"])
        .arg(exe)
        .arg(target)
        .arg(endpoints.join(","))
        .env(ROLE_ENV, ROLE_PROBE);
    spawn_lines(cmd, index, tx)
}

/// Starts the three kv servers of `group` on their data directories
/// (rule 1), without waiting for them.
fn start_servers(exe: &Path, group: &str, tx: &Sender<Said>) -> Result<Procs, String> {
    let mut servers = Procs(Vec::new());
    for n in 1..=NODES {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("acpg-n{n}")])
            .arg(exe)
            .args(["serve", group, "--listen", &kv_addr(n), "--corosync"])
            .args(Mode::Durable.serve_args(&data_dir(group, n)))
            .env(ROLE_ENV, "acpg-kv");
        servers.0.push(spawn_lines(cmd, n as usize, tx)?);
    }
    Ok(servers)
}

fn wait_serving(lines: &mut Lines) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT;
    let mut serving = [false; NODES as usize];
    while serving.iter().any(|s| !s) {
        let (n, _) = lines
            .wait(deadline, |(n, l)| {
                (1..=NODES as usize).contains(n) && l.starts_with("SERVING")
            })
            .map_err(|e| format!("kv servers not serving: {e}"))?;
        serving[n - 1] = true;
    }
    Ok(())
}

fn start_daemons() -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    let starts: Vec<Child> = (1..=NODES)
        .map(|n| {
            Command::new("bash")
                .args([script, "start-node", &n.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {script}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut failed = None;
    for (n, s) in (1..=NODES).zip(starts) {
        match s.wait_with_output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = said.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                failed.get_or_insert(format!(
                    "node {n}'s corosync daemon did not start again:\n{}",
                    tail.join("\n")
                ));
            }
            Err(e) => {
                failed.get_or_insert(format!("node {n}: start-node: {e}"));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// One round's put through the probe, before the kill (rule 4) or as the
/// measurement after the restart; the ACK's time.
fn probed(exe: &Path, target: &str, tx: &Sender<Said>, lines: &mut Lines) -> Result<u64, String> {
    let _probe = Procs(vec![probe(exe, target, tx, 0)?]);
    let (_, line) = lines
        .wait(Instant::now() + LIMIT, |(i, l)| {
            *i == 0 && l.starts_with("ACK ")
        })
        .map_err(|e| format!("{target}: no put acknowledged: {e}"))?;
    parse_ack(&line).ok_or_else(|| format!("bad probe line {line:?}"))
}

fn acpg_series(exe: &Path, variant: Variant, rounds: usize) -> Result<Series, String> {
    let (tx, rx) = channel();
    let mut lines = Lines {
        rx,
        kept: Vec::new(),
    };
    let mut generation = 0;
    let group = |generation: u32| {
        format!(
            "acpg-restart-{}-{}-{generation}",
            std::process::id(),
            variant.name()
        )
    };
    let wipe = |group: &str| {
        for n in 1..=NODES {
            let _ = std::fs::remove_dir_all(data_dir(group, n));
        }
    };
    wipe(&group(generation));
    let mut servers = start_servers(exe, &group(generation), &tx)?;
    wait_serving(&mut lines)?;
    let mut samples = Vec::new();
    let mut membership = Vec::new();
    let mut stuck = 0;
    for r in 0..rounds {
        probed(exe, "acpg", &tx, &mut lines)?;
        drop(servers);
        lines.forget();
        if variant == Variant::Daemons {
            for n in 1..=NODES {
                kill_corosync(n)?;
            }
        }
        // The probe is waiting before t0 (rule 2).
        let probe_proc = Procs(vec![probe(exe, "acpg", &tx, 0)?]);
        std::thread::sleep(Duration::from_millis(200));
        let t0 = mono_ns();
        if variant == Variant::Daemons {
            start_daemons()?;
            membership.push(mono_ns().saturating_sub(t0));
        }
        servers = start_servers(exe, &group(generation), &tx)?;
        let acked = lines.wait(Instant::now() + STUCK, |(i, l)| {
            *i == 0 && l.starts_with("ACK ")
        });
        drop(probe_proc);
        let Ok((_, line)) = acked else {
            // Rule 6: counted, and the run goes on with a new group.
            eprintln!(
                "restart: actix-cpg {} round {}: no write accepted within {STUCK:?}",
                variant.name(),
                r + 1
            );
            stuck += 1;
            drop(servers);
            lines.forget();
            wipe(&group(generation));
            generation += 1;
            servers = start_servers(exe, &group(generation), &tx)?;
            wait_serving(&mut lines)?;
            continue;
        };
        let took = parse_ack(&line).ok_or("bad probe line")?.saturating_sub(t0);
        eprintln!(
            "restart: actix-cpg {} round {}: {:.1} ms",
            variant.name(),
            r + 1,
            took as f64 / 1e6
        );
        samples.push(took);
        wait_serving(&mut lines)?;
    }
    drop(servers);
    wipe(&group(generation));
    Ok(Series {
        variant,
        acpg: true,
        samples,
        membership,
        stuck,
    })
}

fn etcd_series(exe: &Path, variant: Variant, rounds: usize) -> Result<Series, String> {
    let mut cluster = EtcdCluster::start(Fsync::On)?;
    let (tx, rx) = channel();
    let mut lines = Lines {
        rx,
        kept: Vec::new(),
    };
    let mut samples = Vec::new();
    for r in 0..rounds {
        probed(exe, "etcd", &tx, &mut lines)?;
        for n in 1..=NODES {
            cluster.kill(n);
        }
        let probe_proc = Procs(vec![probe(exe, "etcd", &tx, 0)?]);
        std::thread::sleep(Duration::from_millis(200));
        let t0 = mono_ns();
        for n in 1..=NODES {
            cluster.restart(n)?;
        }
        let (_, line) = lines
            .wait(Instant::now() + LIMIT, |(i, l)| {
                *i == 0 && l.starts_with("ACK ")
            })
            .map_err(|e| format!("etcd: no put acknowledged after the restart: {e}"))?;
        drop(probe_proc);
        let took = parse_ack(&line).ok_or("bad probe line")?.saturating_sub(t0);
        eprintln!(
            "restart: etcd {} round {}: {:.1} ms",
            variant.name(),
            r + 1,
            took as f64 / 1e6
        );
        samples.push(took);
        cluster.wait_healthy(LIMIT)?;
    }
    Ok(Series {
        variant,
        acpg: false,
        samples,
        membership: Vec::new(),
        stuck: 0,
    })
}

/// Runs `rounds` rounds of every variant on both systems (actix-cpg
/// first, never both at once), with helpers of the executable `exe`.
pub fn run(exe: &Path, variants: &[Variant], rounds: usize) -> Result<Vec<Series>, String> {
    crate::bench::cluster_up()?;
    let mut out = Vec::new();
    for &v in variants {
        out.push(acpg_series(exe, v, rounds)?);
        out.push(etcd_series(exe, v, rounds)?);
    }
    Ok(out)
}

/// The table in Markdown: per variant, both systems' p50 / max and the
/// ratio etcd / actix-cpg (above 1: actix-cpg is back sooner).
pub fn table(series: &[Series]) -> String {
    let mut out = String::new();
    out.push_str("| killed | rounds | actix-cpg p50 ms | max ms | of which the daemons' membership, p50 ms | actix-cpg rounds stuck (no write in 60 s) | etcd p50 ms | max ms | etcd / actix-cpg p50 | max |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for a in series.iter().filter(|s| s.acpg) {
        let Some(e) = series.iter().find(|s| !s.acpg && s.variant == a.variant) else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            a.variant.label(),
            a.samples.len() + a.stuck,
            a.ms(0.5),
            a.ms(1.0),
            a.membership_p50()
                .map_or("-".to_string(), |m| format!("{m:.0}")),
            a.stuck,
            e.ms(0.5),
            e.ms(1.0),
            e.ms(0.5) / a.ms(0.5).max(1e-9),
            e.ms(1.0) / a.ms(1.0).max(1e-9),
        ));
    }
    out
}

/// The probe (role `restart-probe`): `acpg|etcd ADDR,...`. Tries a put
/// on each member in turn every 2 ms until one is acknowledged, prints
/// `ACK <monotonic ns>` and exits (rule 2).
pub fn probe_main(args: &[String]) -> i32 {
    let [target, endpoints] = args else {
        println!("ERROR usage: restart-probe acpg|etcd ADDR,...");
        return 2;
    };
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let runtime = match crate::agent_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let acpg = target == "acpg";
    runtime.block_on(async {
        let tries = endpoints.iter().map(|e| async move {
            loop {
                let acked = if acpg {
                    put_acpg(e).await
                } else {
                    put_etcd(e).await
                };
                if acked {
                    return mono_ns();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let tries: Vec<_> = tries.map(Box::pin).collect();
        let (at, _, _) = futures::future::select_all(tries).await;
        println!("ACK {at}");
    });
    0
}

const PUT_LIMIT: Duration = Duration::from_secs(3);

async fn put_acpg(addr: &str) -> bool {
    let Ok(client) = crate::kv_service::LineClient::connect(addr).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(PUT_LIMIT, client.call("put restart-probe x")).await,
        Ok(Ok(a)) if a.starts_with("OK ")
    )
}

#[cfg(feature = "etcd")]
async fn put_etcd(url: &str) -> bool {
    // A member that does not listen yet refuses at once; the gRPC client
    // would wait for it instead.
    let addr = url.trim_start_matches("http://");
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return false;
    }
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(PUT_LIMIT);
    let Ok(mut client) = etcd_client::Client::connect([url], Some(options)).await else {
        return false;
    };
    client.put("restart-probe", "x", None).await.is_ok()
}

#[cfg(not(feature = "etcd"))]
async fn put_etcd(_url: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_named_both_ways() {
        for v in [Variant::Processes, Variant::Daemons] {
            assert_eq!(Variant::parse(v.name()), Ok(v));
        }
        assert!(Variant::parse("power").is_err());
    }

    #[test]
    fn the_probe_says_when_a_put_was_acknowledged() {
        assert_eq!(parse_ack("ACK 42"), Some(42));
        assert_eq!(parse_ack("ACK"), None);
        assert_eq!(parse_ack("ERROR x"), None);
    }

    #[test]
    fn the_table_gives_etcd_over_actix_cpg() {
        let s = |acpg, ms: u64| Series {
            variant: Variant::Processes,
            acpg,
            samples: vec![ms * 1_000_000; 5],
            membership: Vec::new(),
            stuck: 0,
        };
        let text = table(&[s(true, 200), s(false, 1000)]);
        assert!(
            text.contains("| 5 | 200 | 200 | - | 0 | 1000 | 1000 | 5.00 | 5.00 |"),
            "{text}"
        );
        let mut daemons = s(true, 3000);
        daemons.variant = Variant::Daemons;
        daemons.membership = vec![2_500_000_000, 2_700_000_000, 2_600_000_000];
        let mut etcd = s(false, 500);
        etcd.variant = Variant::Daemons;
        let text = table(&[daemons, etcd]);
        assert!(
            text.contains("| 5 | 3000 | 3000 | 2600 | 0 | 500 | 500 | 0.17 | 0.17 |"),
            "{text}"
        );
    }
}
