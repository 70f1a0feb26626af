//! `bench --vs-etcd-joiner`: a member joining empty while two others
//! hold a 50 MB state and keep serving, the kv service against etcd, on
//! the same three node namespaces, in one run.
//!
//! ```text
//!  per side (etcd; actix-cpg in memory; actix-cpg durable):
//!    two members hold the state (etcd: 3 members, then node 3's removed, its data wiped)
//!    writer (node 1's namespace): FILL 800 × 64 KiB, then one put at a time, each timed
//!    t0 = CLOCK_MONOTONIC ─► node 3 starts empty (etcd: `member add`, empty data dir;
//!                            actix-cpg: acpg-kv serve --join-only)
//!    t1 = caught up: etcd: node 3's own status revision ≥ the leader's, read just before;
//!                    actix-cpg: node 3's server says SERVING (state restored)
//!    writer: latency of the puts sent in [t0, t1], and of those before t0
//! ```
//!
//! Rules:
//!
//! 1. The state is 800 values of 64 KiB (52.4 MB) under distinct keys,
//!    written through node 1 before the join; etcd keeps them with its
//!    defaults (fsync), the kv service in memory (agreed delivery) or
//!    durable (`--data-dir`, `--sync batch`, `--safe`).
//! 2. During the join one writer puts a small value through node 1, one
//!    put at a time; a put's latency is from its send to its answer, on
//!    `CLOCK_MONOTONIC`, and it counts as *during* the catch-up when it
//!    was sent in `[t0, t1]`.
//! 3. etcd's member is caught up once the revision of its own endpoint's
//!    status is at least the leader's, read just before (polled every
//!    20 ms): it holds every write the leader had applied by then.
//!    actix-cpg's joiner is caught up once it serves: its replica holds
//!    the state (snapshot restored, suffix replayed) before it listens.
//! 4. Every process started is killed when its side ends.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::children::{forward_lines, Procs, Said};
use crate::etcd::{client_url, EtcdCluster, Fsync};
use crate::failover::mono_ns;
use crate::kv_load::{quantile, ROLE_ENV};
use crate::vs_etcd::{data_dir, kv_addr, Mode};

/// The helper role of the writer.
pub const ROLE_WRITER: &str = "catchup-writer";

/// Values in the state (rule 1).
pub const VALUES: u64 = 800;
/// Bytes of each value (rule 1).
pub const VALUE_SIZE: usize = 65536;

/// Which side a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// etcd with its defaults.
    Etcd,
    /// The kv service in memory, agreed delivery.
    AcpgMemory,
    /// The kv service with data directories, safe delivery.
    AcpgDurable,
}

impl Side {
    /// The side, as the table says it.
    pub fn label(self) -> &'static str {
        match self {
            Side::Etcd => "etcd (fsync)",
            Side::AcpgMemory => "actix-cpg in memory",
            Side::AcpgDurable => "actix-cpg durable (data dir, batch fsync, safe)",
        }
    }
}

/// What one side measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The side.
    pub side: Side,
    /// Snapshot chunks the kv service's sender keeps in flight (`None`
    /// for etcd).
    pub chunks: Option<usize>,
    /// From the joiner's start to caught up, ms.
    pub caught_up_ms: f64,
    /// Latency statistics of the puts during and before (rule 2).
    pub stats: PutStats,
}

/// The writer's figures (rule 2), ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PutStats {
    /// Puts sent during the catch-up.
    pub during: usize,
    /// Their p50, p99 and max.
    pub p50: f64,
    /// p99 during.
    pub p99: f64,
    /// Max during.
    pub max: f64,
    /// p50 of the puts before.
    pub before_p50: f64,
    /// p99 of the puts before.
    pub before_p99: f64,
}

impl PutStats {
    /// Rule 2 over `(sent, latency)` pairs in ns.
    pub fn of(samples: &[(u64, u64)], t0: u64, t1: u64) -> PutStats {
        let pick = |during: bool| {
            let mut v: Vec<u64> = samples
                .iter()
                .filter(|(sent, _)| {
                    (t0 <= *sent && *sent <= t1) == during && (during || *sent < t0)
                })
                .map(|(_, l)| *l)
                .collect();
            v.sort_unstable();
            v
        };
        let (during, before) = (pick(true), pick(false));
        let ms = |v: &[u64], q| quantile(v, q) / 1e6;
        PutStats {
            during: during.len(),
            p50: ms(&during, 0.5),
            p99: ms(&during, 0.99),
            max: ms(&during, 1.0),
            before_p50: ms(&before, 0.5),
            before_p99: ms(&before, 0.99),
        }
    }

    /// The `STATS ...` line of the writer.
    pub fn to_line(&self) -> String {
        format!(
            "STATS {} {} {} {} {} {}",
            self.during, self.p50, self.p99, self.max, self.before_p50, self.before_p99
        )
    }

    /// The inverse of [`PutStats::to_line`].
    pub fn parse(line: &str) -> Option<PutStats> {
        let w: Vec<&str> = line.strip_prefix("STATS ")?.split_whitespace().collect();
        let [during, p50, p99, max, bp50, bp99] = w.as_slice() else {
            return None;
        };
        Some(PutStats {
            during: during.parse().ok()?,
            p50: p50.parse().ok()?,
            p99: p99.parse().ok()?,
            max: max.parse().ok()?,
            before_p50: bp50.parse().ok()?,
            before_p99: bp99.parse().ok()?,
        })
    }
}

const LIMIT: Duration = Duration::from_secs(300);

/// The writer process, its input, and the lines of every helper.
struct Writer {
    input: ChildStdin,
    rx: Receiver<Said>,
    tx: Sender<Said>,
    procs: Procs,
}

impl Writer {
    fn start(exe: &Path, target: &str, endpoint: &str) -> Result<Writer, String> {
        let (tx, rx) = channel();
        Writer::start_with(exe, target, endpoint, (tx, rx), Procs(Vec::new()))
    }

    /// The writer, on lines already carrying those of `procs`.
    fn start_with(
        exe: &Path,
        target: &str,
        endpoint: &str,
        (tx, rx): (Sender<Said>, Receiver<Said>),
        mut procs: Procs,
    ) -> Result<Writer, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", "acpg-n1"])
            .arg(exe)
            .args([target, endpoint])
            .env(ROLE_ENV, ROLE_WRITER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the writer: {e}"))?;
        let input = child.stdin.take().ok_or("no stdin")?;
        forward_lines(&mut child, 0, &tx)?;
        procs.0.push(child);
        Ok(Writer {
            input,
            rx,
            tx,
            procs,
        })
    }

    fn ask(&mut self, line: &str, answer: &str) -> Result<String, String> {
        writeln!(self.input, "{line}").map_err(|e| format!("writer: {e}"))?;
        self.wait(|i, l| i == 0 && l.starts_with(answer))
    }

    fn wait(&mut self, want: impl Fn(usize, &str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, l)) if want(i, &l) => return Ok(l),
                Ok((i, l)) if l.starts_with("ERROR") => {
                    return Err(format!("helper {i}: {l}"));
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err("no answer in time".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("helpers gone".into()),
            }
        }
    }
}

/// Fills, starts writing, lets the writer run a second before the join.
fn prepare(w: &mut Writer) -> Result<(), String> {
    let filled = w.ask(&format!("FILL {VALUES} {VALUE_SIZE}"), "FILLED")?;
    eprintln!("joiner: {filled}");
    w.ask("WRITE", "WRITING")?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

fn finish(
    w: &mut Writer,
    side: Side,
    chunks: Option<usize>,
    t0: u64,
    t1: u64,
) -> Result<Joined, String> {
    let line = w.ask(&format!("STOP {t0} {t1}"), "STATS")?;
    let stats = PutStats::parse(&line).ok_or_else(|| format!("bad line {line:?}"))?;
    let joined = Joined {
        side,
        chunks,
        caught_up_ms: t1.saturating_sub(t0) as f64 / 1e6,
        stats,
    };
    eprintln!("joiner: {joined:?}");
    Ok(joined)
}

fn etcd_side(exe: &Path) -> Result<Joined, String> {
    let mut cluster = EtcdCluster::start(Fsync::On)?;
    let mut w = Writer::start(exe, "etcd", &client_url(1))?;
    prepare(&mut w)?;
    cluster.remove_member(3)?;
    std::thread::sleep(Duration::from_millis(500));
    let t0 = mono_ns();
    cluster.add_member_empty(3)?;
    let caught = w.ask(&format!("WATCH {}", client_url(3)), "CAUGHT")?;
    eprintln!("joiner: etcd {caught}");
    let t1: u64 = caught
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .ok_or("bad CAUGHT line")?;
    finish(&mut w, Side::Etcd, None, t0, t1)
}

fn acpg_side(exe: &Path, side: Side, chunks: usize) -> Result<Joined, String> {
    let mode = if side == Side::AcpgDurable {
        Mode::Durable
    } else {
        Mode::EtcdDefault
    };
    let group = format!("acpg-joiner-{}-{}", std::process::id(), mode.name());
    let server = |n: u32, join_only: bool| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("acpg-n{n}")])
            .arg(exe)
            .args(["serve", &group, "--listen", &kv_addr(n), "--corosync"])
            .args(mode.serve_args(&data_dir(&group, n)))
            .args(["--chunks".to_string(), chunks.to_string()])
            .env(ROLE_ENV, "acpg-kv")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if join_only {
            cmd.arg("--join-only");
        }
        cmd
    };
    let (tx, rx) = channel();
    let mut servers = Procs(Vec::new());
    for n in 1..=2 {
        let mut child = server(n, false)
            .spawn()
            .map_err(|e| format!("cannot start kv server {n}: {e}"))?;
        forward_lines(&mut child, n as usize, &tx)?;
        servers.0.push(child);
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, l)) if i == n as usize && l.starts_with("SERVING") => break,
                Ok(_) => {}
                Err(e) => return Err(format!("kv server {n} not serving: {e}")),
            }
        }
    }
    let mut w = Writer::start_with(exe, "acpg", &kv_addr(1), (tx, rx), servers)?;
    let tx = w.tx.clone();
    prepare(&mut w)?;
    let t0 = mono_ns();
    let mut child = server(3, true)
        .spawn()
        .map_err(|e| format!("cannot start kv server 3: {e}"))?;
    forward_lines(&mut child, 3, &tx)?;
    w.procs.0.push(child);
    w.wait(|i, l| i == 3 && l.starts_with("SERVING"))?;
    let t1 = mono_ns();
    let joined = finish(&mut w, side, Some(chunks), t0, t1);
    drop(w);
    for n in 1..=3 {
        let _ = std::fs::remove_dir_all(data_dir(&group, n));
    }
    joined
}

/// Runs the sides on the test cluster, one after the other, with helpers
/// of the executable `exe`: etcd, then the kv service in memory and
/// durable with each count of snapshot chunks in flight in `chunks`.
pub fn run(exe: &Path, chunks: &[usize]) -> Result<Vec<Joined>, String> {
    crate::bench::cluster_up()?;
    let mut rows = vec![etcd_side(exe)?];
    for &c in chunks {
        rows.push(acpg_side(exe, Side::AcpgMemory, c)?);
        rows.push(acpg_side(exe, Side::AcpgDurable, c)?);
    }
    Ok(rows)
}

/// The table in Markdown; ratios are etcd / this row (above 1: this row
/// is faster or lower).
pub fn table(rows: &[Joined]) -> String {
    let etcd = rows.iter().find(|r| r.side == Side::Etcd);
    let mut out = String::new();
    out.push_str("| side | chunks in flight | caught up after start | puts during | put p50 / p99 / max ms during | before p50 / p99 ms | caught-up time etcd / this | p99 during etcd / this |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (ratio_t, ratio_p99) = match etcd {
            Some(e) => (
                format!("{:.2}", e.caught_up_ms / r.caught_up_ms.max(1e-9)),
                format!("{:.2}", e.stats.p99 / r.stats.p99.max(1e-9)),
            ),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} s | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {ratio_t} | {ratio_p99} |\n",
            r.side.label(),
            r.chunks.map_or("-".to_string(), |c| c.to_string()),
            r.caught_up_ms / 1000.0,
            r.stats.during,
            r.stats.p50,
            r.stats.p99,
            r.stats.max,
            r.stats.before_p50,
            r.stats.before_p99,
        ));
    }
    out
}

/// The writer (role `catchup-writer`): `acpg|etcd ENDPOINT`, driven by
/// stdin lines: `FILL COUNT SIZE` (answers `FILLED ...`), `WRITE` (one
/// put at a time from then on; answers `WRITING`), `WATCH URL` (etcd:
/// answers `CAUGHT <monotonic ns> REVISION` once URL's member caught up,
/// rule 3), `STOP T0 T1` (answers `STATS ...` and exits).
pub fn writer_main(args: &[String]) -> i32 {
    let [target, endpoint] = args else {
        println!("ERROR usage: catchup-writer acpg|etcd ENDPOINT");
        return 2;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let runtime = match crate::agent_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = Store::connect(target, endpoint).await?;
        let samples = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(u64, u64)>::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                while let Some(line) = rx.recv().await {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["FILL", count, size] => {
                            let count: u64 = count.parse().map_err(|_| "bad count")?;
                            let size: usize = size.parse().map_err(|_| "bad size")?;
                            let started = Instant::now();
                            store.fill(count, size).await?;
                            println!(
                                "FILLED {count} x {size} B in {:.1} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                        ["WRITE"] => {
                            let (store, samples) = (store.clone(), samples.clone());
                            let first = std::rc::Rc::new(std::cell::Cell::new(false));
                            let said = first.clone();
                            tokio::task::spawn_local(async move {
                                for i in 0u64.. {
                                    let sent = mono_ns();
                                    let ok = store.put(&format!("during-{i}"), "x").await;
                                    let took = mono_ns() - sent;
                                    if !ok {
                                        println!("ERROR put {i} failed");
                                        return;
                                    }
                                    samples.borrow_mut().push((sent, took));
                                    if !said.get() {
                                        said.set(true);
                                        println!("WRITING");
                                    }
                                }
                            });
                        }
                        ["WATCH", url] => {
                            let (at, rev) = store.watch(url).await?;
                            println!("CAUGHT {at} {rev}");
                        }
                        ["STOP", t0, t1] => {
                            let t0: u64 = t0.parse().map_err(|_| "bad t0")?;
                            let t1: u64 = t1.parse().map_err(|_| "bad t1")?;
                            println!("{}", PutStats::of(&samples.borrow(), t0, t1).to_line());
                            return Ok(());
                        }
                        _ => println!("ERROR cannot parse {line:?}"),
                    }
                }
                Ok::<(), String>(())
            })
            .await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            println!("ERROR {e}");
            1
        }
    }
}

/// The writer's connection to one member of either system.
#[derive(Clone)]
enum Store {
    Acpg(crate::kv_service::LineClient),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>),
}

impl Store {
    async fn connect(target: &str, endpoint: &str) -> Result<Store, String> {
        match target {
            "acpg" => {
                let c = crate::kv_service::LineClient::connect(endpoint)
                    .await
                    .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
                let p = c.call("wait-primary").await?;
                if !p.starts_with("PRIMARY") {
                    return Err(format!("{endpoint}: {p}"));
                }
                Ok(Store::Acpg(c))
            }
            #[cfg(feature = "etcd")]
            "etcd" => Ok(Store::Etcd(Box::new(
                etcd_client::Client::connect([endpoint], None)
                    .await
                    .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?,
            ))),
            other => Err(format!("unknown target {other:?}")),
        }
    }

    async fn put(&self, key: &str, value: &str) -> bool {
        match self {
            Store::Acpg(c) => c
                .call(&format!("put {key} {value}"))
                .await
                .is_ok_and(|a| a.starts_with("OK ")),
            #[cfg(feature = "etcd")]
            Store::Etcd(c) => c.kv_client().put(key, value, None).await.is_ok(),
        }
    }

    async fn fill(&self, count: u64, size: usize) -> Result<(), String> {
        match self {
            Store::Acpg(c) => {
                let a = c.call(&format!("fill big {count} {size}")).await?;
                if a.starts_with("FILLED") {
                    Ok(())
                } else {
                    Err(format!("fill: {a}"))
                }
            }
            #[cfg(feature = "etcd")]
            Store::Etcd(c) => {
                let value = vec![b'x'; size];
                // Four in flight: the fill is not measured.
                let next = std::cell::Cell::new(0u64);
                let workers = (0..4).map(|_| async {
                    let mut kv = c.kv_client();
                    loop {
                        let i = next.get();
                        if i >= count {
                            return Ok::<(), String>(());
                        }
                        next.set(i + 1);
                        kv.put(format!("big{i}"), value.clone(), None)
                            .await
                            .map_err(|e| format!("fill: {e}"))?;
                    }
                });
                for r in futures::future::join_all(workers).await {
                    r?;
                }
                Ok(())
            }
        }
    }

    /// Rule 3; the moment and the revision reached.
    async fn watch(&self, url: &str) -> Result<(u64, i64), String> {
        match self {
            Store::Acpg(_) => Err(format!("{url}: WATCH is for etcd")),
            #[cfg(feature = "etcd")]
            Store::Etcd(c) => {
                let deadline = Instant::now() + LIMIT;
                let mut joiner: Option<etcd_client::Client> = None;
                loop {
                    if Instant::now() > deadline {
                        return Err(format!("{url} never caught up"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let Ok(leader_rev) = leader_revision(c).await else {
                        continue;
                    };
                    if joiner.is_none() {
                        let addr = url.trim_start_matches("http://");
                        if tokio::net::TcpStream::connect(addr).await.is_err() {
                            continue;
                        }
                        joiner = etcd_client::Client::connect([url], None).await.ok();
                    }
                    let Some(j) = joiner.as_mut() else { continue };
                    let Ok(status) = j.status().await else {
                        continue;
                    };
                    let rev = status.header().map_or(0, |h| h.revision());
                    if rev >= leader_rev {
                        return Ok((mono_ns(), rev));
                    }
                }
            }
        }
    }
}

/// The revision of the Raft leader, from the status of node 1's member
/// (which names the leader) and of the leader itself.
#[cfg(feature = "etcd")]
async fn leader_revision(c: &etcd_client::Client) -> Result<i64, String> {
    let mut c = c.clone();
    let status = c.status().await.map_err(|e| e.to_string())?;
    let me = status.header().map_or(0, |h| h.member_id());
    if status.leader() == me {
        return Ok(status.header().map_or(0, |h| h.revision()));
    }
    let members = c.member_list().await.map_err(|e| e.to_string())?;
    let leader = members
        .members()
        .iter()
        .find(|m| m.id() == status.leader())
        .and_then(|m| m.client_urls().first().cloned())
        .ok_or("no leader")?;
    let mut l = etcd_client::Client::connect([leader], None)
        .await
        .map_err(|e| e.to_string())?;
    let s = l.status().await.map_err(|e| e.to_string())?;
    Ok(s.header().map_or(0, |h| h.revision()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_count_as_during_the_catch_up_by_their_send_time() {
        let ms = 1_000_000;
        let samples = [
            (10, ms),
            (20, 2 * ms),
            (100, 5 * ms),
            (150, 40 * ms),
            (200, 7 * ms),
            (201, ms),
        ];
        let s = PutStats::of(&samples, 100, 200);
        assert_eq!(s.during, 3);
        assert_eq!(s.max, 40.0);
        assert_eq!(s.p50, 7.0);
        assert_eq!(s.before_p99, 2.0);
        assert_eq!(PutStats::parse(&s.to_line()), Some(s));
    }
}
