//! A replicated key-value service: every member holds the whole map, every
//! command (put, get, delete, compare-and-set) takes its place in the
//! group's total order, and a caller's reply comes from its own replica.
//!
//! What it shows, printed as it happens:
//! 1. two replicas found the group and become a primary component;
//! 2. a client streams puts through one replica over a line protocol
//!    (`serve` below), pipelined;
//! 3. mid-stream a late joiner starts: it receives a snapshot taken at the
//!    confchg that admitted it, replays what followed, and serves reads;
//! 4. mid-stream the replica the client writes through is killed (SIGKILL
//!    semantics): its in-flight puts come back `uncertain`, the client goes
//!    on through another replica;
//! 5. every acknowledged put is in every surviving replica, whose digests
//!    agree; then compare-and-set, get and delete.
//!
//! Run it on the in-process `sim` backend (no daemon needed):
//!
//! ```text
//! cargo run --example kv_store                      # the scripted tour
//! cargo run --example kv_store -- --safe            # same, safe delivery
//! cargo run --example kv_store -- --stdin           # type commands yourself
//! cargo run --example kv_store -- --listen 127.0.0.1:7878   # line protocol over TCP
//! ```
//!
//! On the real 3-node corosync cluster (as root, `scripts/cluster.sh up`
//! first), the tour runs one replica process per node, each in its node's
//! network namespace:
//!
//! ```text
//! cargo run --features corosync --example kv_store -- --corosync [--safe]
//! ```
//!
//! or one replica by hand, serving the line protocol on stdin or on a
//! loopback port inside the node's namespace:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/examples/kv_store --member --listen 127.0.0.1:7878
//! ip netns exec acpg-n1 nc 127.0.0.1 7878      # put k v / get k / cas k v w / del k
//! ```
//!
//! `--record FILE` records each replica's stream (FILE.1, FILE.2, ... in
//! the order they start); a replica's recording replays with its state
//! machine, which this example has: `kv_store --replay FILE.3`. `--show`
//! prints each replica's metrics and `inspect()` snapshot (its state id,
//! and whether the replicas agree) at the end (a `--member` replica: on
//! stderr, once its stdin closes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_cpg::kv::{KvCommand, KvResponse, KvStore};
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::{Delivery, GroupName, NodeId, Replica, ReplicaConfig, ReplicaError, Transport};
use clap::Parser;
use futures::future::{ready, FutureExt, LocalBoxFuture};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

mod support;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// A replicated key-value service: every member holds the whole map and
/// every command takes its place in the group's total order.
///
/// Without options it runs a scripted tour on the in-process sim backend: a
/// client streams puts through one replica while a late joiner starts and
/// the replica it writes through is killed; then every acknowledged put is
/// checked in every survivor. `--stdin` or `--listen` serve the line
/// protocol (put k v / get k / cas k old new / del k / read k / status /
/// digest) instead.
#[derive(Parser)]
struct Cli {
    /// Safe delivery: a command's reply waits until every replica holding
    /// the state has applied it (agreed otherwise: until this one has).
    #[arg(long)]
    safe: bool,
    /// Serve the line protocol on stdin/stdout instead of the tour: three
    /// sim replicas, commands go to node1's.
    #[arg(long)]
    stdin: bool,
    /// Serve the line protocol to TCP clients of ADDR instead of stdin (with
    /// the sim replicas of `--stdin`, or as the `--member` replica).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Run the tour on the real 3-node corosync cluster, one replica process
    /// per node in its namespace (as root, after `bash scripts/cluster.sh
    /// up`).
    #[arg(long)]
    corosync: bool,
    /// Be one replica of the real cluster, serving the line protocol on
    /// stdin or `--listen` (start it in a node's namespace: `ip netns exec
    /// acpg-n1 kv_store --member`); the `--corosync` tour starts these.
    #[arg(long)]
    member: bool,
    /// With `--member`: only join an existing group, never found a new
    /// history (wait for a replica that holds the state to send it).
    #[arg(long)]
    join_only: bool,
    #[command(flatten)]
    observe: observe::Observe,
    /// Print the decisions of a replica recording this example made
    /// (`--record`), and exit.
    #[arg(long, value_name = "FILE")]
    replay: Option<std::path::PathBuf>,
}

const GROUP: &str = "kv-store";
const PUTS: u64 = 3000;
const LATE_JOINER_AT: u64 = 800;
const KILL_AT: u64 = 1800;
const PIPELINE: usize = 64;

/// A line-protocol connection to one replica.
struct Client {
    tx: UnboundedSender<String>,
    rx: UnboundedReceiver<String>,
}

impl Client {
    fn send(&self, line: String) -> bool {
        self.tx.send(line).is_ok()
    }

    async fn recv(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// One untagged request and its answer.
    async fn ask(&mut self, line: &str) -> String {
        if !self.send(line.to_owned()) {
            return "ERR closed".into();
        }
        self.recv().await.unwrap_or_else(|| "ERR closed".into())
    }
}

/// Where replicas run: in this process (sim) or as processes (corosync).
trait Backend {
    async fn start(&mut self, node: u32, founder: bool) -> Client;
    fn kill(&mut self, node: u32);
}

fn config(safe: bool, founder: bool, record_to: Option<std::path::PathBuf>) -> ReplicaConfig {
    ReplicaConfig {
        record_to,
        delivery: if safe {
            Delivery::Safe
        } else {
            Delivery::Agreed
        },
        found_group: founder,
        ..ReplicaConfig::default()
    }
}

struct Sim {
    cluster: SimCluster,
    safe: bool,
    processes: BTreeMap<u32, SimProcess>,
    observe: observe::Observe,
    /// Every replica started, in order (for `--record` and `--show`).
    replicas: Vec<Replica<KvStore>>,
}

impl Backend for Sim {
    async fn start(&mut self, node: u32, founder: bool) -> Client {
        let process = self.cluster.process(NodeId(node)).expect("node is up");
        let conn = process
            .join(&GroupName::new(GROUP).expect("name"))
            .expect("join");
        self.processes.insert(node, process);
        let record_to = self.observe.record_to(self.replicas.len() as u32 + 1);
        let replica = Replica::<KvStore>::start(conn, config(self.safe, founder, record_to))
            .await
            .expect("replica starts");
        self.replicas.push(replica.clone());
        serve(replica)
    }

    fn kill(&mut self, node: u32) {
        if let Some(p) = self.processes.get(&node) {
            let _ = p.kill();
        }
    }
}

/// Serves a line protocol for `replica` over in-process channels. Each line
/// is one request; an optional tag `#N ` is repeated in its answer, so a
/// client can pipeline and match answers, and a command's answer names its
/// position in the group's total order:
///
/// ```text
///  put KEY VALUE...    OK POS                 (value: rest of the line)
///  get KEY             VALUE POS VALUE  |  NONE POS
///  del KEY             OK POS
///  cas KEY OLD NEW     CAS POS ok  |  CAS POS fail CURRENT   (- for absent)
///  read KEY            LOCAL VALUE  |  LOCAL -   (this replica, no order)
///  status              STATUS primary=B epoch=E members=N applied=A holding=B
///  digest              DIGEST APPLIED KEYS HASH
///  wait-primary        PRIMARY EPOCH
///  a failed request    ERR REASON             (not-primary, uncertain, ...)
/// ```
///
/// `get` and `cas` are commands like `put`: they take their place in the
/// total order, so reads are linearizable; `read` may be stale.
fn serve(replica: Replica<KvStore>) -> Client {
    let (in_tx, mut in_rx) = unbounded_channel::<String>();
    let (out_tx, out_rx) = unbounded_channel();
    actix::spawn(async move {
        while let Some(line) = in_rx.recv().await {
            let (tag, body) = match line.strip_prefix('#') {
                Some(rest) => {
                    let (tag, body) = rest.split_once(' ').unwrap_or((rest, ""));
                    (format!("#{tag} "), body.trim().to_owned())
                }
                None => (String::new(), line.trim().to_owned()),
            };
            if body.is_empty() {
                continue;
            }
            let (answer, waits) = answer(&replica, &body);
            if waits {
                // Its answer goes out when it comes: use tags to match them.
                let out = out_tx.clone();
                actix::spawn(async move {
                    let _ = out.send(format!("{tag}{}", answer.await));
                });
            } else {
                let _ = out_tx.send(format!("{tag}{}", answer.await));
            }
        }
    });
    Client {
        tx: in_tx,
        rx: out_rx,
    }
}

/// The answer to one request, and whether it waits for the group (a
/// command, or `wait-primary`) rather than for this replica alone. A
/// command enters the total order before this returns, so pipelined
/// commands keep their line order.
fn answer(replica: &Replica<KvStore>, line: &str) -> (LocalBoxFuture<'static, String>, bool) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let word = |w: &str| (w != "-").then(|| w.to_owned());
    let command = match (verb, words.as_slice()) {
        ("put", [key, ..]) => KvCommand::Put {
            key: key.to_string(),
            value: rest.trim_start()[key.len()..].trim_start().to_owned(),
        },
        ("get", [key]) => KvCommand::Get {
            key: key.to_string(),
        },
        ("del", [key]) => KvCommand::Delete {
            key: key.to_string(),
        },
        ("cas", [key, old, new]) => KvCommand::Cas {
            key: key.to_string(),
            expected: word(old),
            new: word(new),
        },
        ("read", [key]) => {
            let (replica, key) = (replica.clone(), key.to_string());
            let read = async move {
                match replica
                    .query(move |s: &KvStore| s.get(&key).map(str::to_owned))
                    .await
                {
                    Ok(value) => format!("LOCAL {}", value.as_deref().unwrap_or("-")),
                    Err(e) => error_line(&e),
                }
            };
            return (read.boxed_local(), false);
        }
        ("status", []) => {
            let s = replica.status();
            let epoch = s.epoch.map_or_else(|| "-".to_owned(), |e| e.to_string());
            let status = format!(
                "STATUS primary={} epoch={epoch} members={} applied={} holding={}",
                s.primary,
                s.members.len(),
                s.state.applied,
                s.holding
            );
            return (ready(status).boxed_local(), false);
        }
        ("digest", []) => {
            let replica = replica.clone();
            let digest = async move {
                let digest = replica.query(|s: &KvStore| (s.len(), s.digest())).await;
                let applied = replica.status().state.applied;
                match digest {
                    Ok((keys, hash)) => format!("DIGEST {applied} {keys} {hash:016x}"),
                    Err(e) => error_line(&e),
                }
            };
            return (digest.boxed_local(), false);
        }
        ("wait-primary", []) => {
            let replica = replica.clone();
            let primary = async move {
                match replica.wait_primary().await {
                    Ok(epoch) => format!("PRIMARY {epoch}"),
                    Err(e) => error_line(&e),
                }
            };
            return (primary.boxed_local(), true);
        }
        _ => {
            return (
                ready(format!("ERR cannot parse {line:?}")).boxed_local(),
                false,
            )
        }
    };
    let executed = replica.execute_traced(command);
    let outcome = async move {
        let executed = match executed.await {
            Ok(executed) => executed,
            Err(e) => return error_line(&e),
        };
        let pos = executed.state.applied;
        match executed.response {
            KvResponse::Previous(_) => format!("OK {pos}"),
            KvResponse::Value(Some(v)) => format!("VALUE {pos} {v}"),
            KvResponse::Value(None) => format!("NONE {pos}"),
            KvResponse::Cas { swapped: true, .. } => format!("CAS {pos} ok"),
            KvResponse::Cas { current, .. } => {
                format!("CAS {pos} fail {}", current.as_deref().unwrap_or("-"))
            }
            KvResponse::Filled(n) => format!("FILLED {pos} {n}"),
        }
    };
    (outcome.boxed_local(), true)
}

fn error_line(error: &ReplicaError) -> String {
    let reason = match error {
        ReplicaError::NotPrimary => "not-primary",
        ReplicaError::Uncertain => "uncertain",
        ReplicaError::NotMember => "not-member",
        ReplicaError::Overloaded => "overloaded",
        ReplicaError::Closed => "closed",
        other => return format!("ERR {other}"),
    };
    format!("ERR {reason}")
}

fn tag_of(line: &str) -> Option<u64> {
    line.strip_prefix('#')?.split(' ').next()?.parse().ok()
}

fn body_of(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, b)| b)
}

/// The scripted tour, on any backend.
async fn tour<B: Backend>(b: &mut B) -> Result<(), String> {
    println!("-- 1. replicas on node1 and node2 found the group");
    let mut writer = b.start(1, true).await;
    let mut other = b.start(2, true).await;
    println!("  node1: {}", writer.ask("wait-primary").await);
    println!("  node2: {}", other.ask("wait-primary").await);

    println!("\n-- 2. a client streams {PUTS} puts through node1 ({PIPELINE} in flight)");
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut uncertain, mut refused) = (0u64, 0u64);
    let mut in_flight = 0usize;
    let mut next = 0u64;
    let mut joiner: Option<Client> = None;
    let mut switched = false;
    let started = Instant::now();
    while next < PUTS || in_flight > 0 {
        while next < PUTS && in_flight < PIPELINE {
            writer.send(format!("#{next} put key-{next} value-{next}"));
            next += 1;
            in_flight += 1;
            if next == LATE_JOINER_AT {
                println!("\n-- 3. put {next}: a late joiner starts on node3");
                let t = Instant::now();
                let mut c = b.start(3, false).await;
                let status = c.ask("status").await;
                println!(
                    "  node3 holds the state {:.0?} after it joined: {status}",
                    t.elapsed()
                );
                joiner = Some(c);
            }
            if next == KILL_AT && !switched {
                println!("\n-- 4. put {next}: the replica on node1, which the client writes through, is killed");
                b.kill(1);
            }
        }
        let line = writer.recv().await;
        let closed = match &line {
            None => true,
            Some(l) => body_of(l) == "ERR closed",
        };
        if closed {
            // node1 is gone: whatever was in flight there is uncertain.
            println!("  node1 is gone with {in_flight} puts in flight: uncertain");
            uncertain += in_flight as u64;
            in_flight = 0;
            writer = std::mem::replace(&mut other, joiner.take().ok_or("no third replica")?);
            switched = true;
            println!("  the client goes on through node2");
            continue;
        }
        let Some(line) = line else { continue };
        let Some(tag) = tag_of(&line) else { continue };
        in_flight -= 1;
        match body_of(&line).split(' ').collect::<Vec<_>>().as_slice() {
            ["OK", pos] => {
                acked.insert(tag, pos.parse().unwrap_or(0));
            }
            ["ERR", "uncertain"] => uncertain += 1,
            ["ERR", "not-primary"] => refused += 1,
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    let took = started.elapsed();
    println!(
        "  {} acknowledged, {uncertain} uncertain, {refused} refused in {took:.0?} ({:.0} puts/s)",
        acked.len(),
        acked.len() as f64 / took.as_secs_f64()
    );

    println!("\n-- 5. every acknowledged put is in every surviving replica");
    let survivors: Vec<&mut Client> = [&mut writer, &mut other].into_iter().collect();
    let mut digests = Vec::new();
    for c in survivors {
        let mut missing = 0;
        for tag in acked.keys() {
            let answer = c.ask(&format!("read key-{tag}")).await;
            if answer != format!("LOCAL value-{tag}") {
                missing += 1;
            }
        }
        let digest = c.ask("digest").await;
        println!("  {digest}  (missing acknowledged puts: {missing})");
        if missing > 0 {
            return Err(format!("{missing} acknowledged puts are missing"));
        }
        digests.push(digest);
    }
    if digests.windows(2).any(|w| w[0] != w[1]) {
        return Err("the surviving replicas differ".into());
    }
    println!("  the surviving replicas agree");

    println!("\n-- 6. compare-and-set, get, delete (linearizable: they are commands too)");
    for line in [
        "cas counter - 1",
        "cas counter 1 2",
        "cas counter 1 3",
        "get counter",
        "del counter",
        "get counter",
    ] {
        println!("  {line:<18} -> {}", writer.ask(line).await);
    }
    Ok(())
}

async fn sim_tour(safe: bool, observe: observe::Observe) -> Result<(), String> {
    println!(
        "== kv_store on the sim backend: 3 nodes, {} delivery ==\n",
        if safe { "safe" } else { "agreed" }
    );
    let mut sim = Sim {
        cluster: SimCluster::new(3),
        safe,
        processes: BTreeMap::new(),
        observe,
        replicas: Vec::new(),
    };
    tour(&mut sim).await?;
    sim.observe.show(&sim.replicas).await;
    println!("\n== done ==");
    Ok(())
}

/// Serves the line protocol of `replica` on stdin/stdout until EOF.
async fn serve_stdin(replica: Replica<KvStore>) {
    let Client { tx, mut rx } = serve(replica);
    let printer = actix::spawn(async move {
        while let Some(line) = rx.recv().await {
            use std::io::Write;
            if writeln!(std::io::stdout(), "{line}").is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).is_err() {
            break;
        }
    }
    // Let the last answers out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tx);
    printer.abort();
}

/// Serves the line protocol of `replica` to every TCP client of `addr`.
async fn serve_tcp(replica: Replica<KvStore>, addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "kv_store: serving the line protocol on {}",
        listener.local_addr()?
    );
    loop {
        let (socket, peer) = listener.accept().await?;
        eprintln!("kv_store: client {peer}");
        let Client { tx, mut rx } = serve(replica.clone());
        let (read, mut write) = socket.into_split();
        actix::spawn(async move {
            while let Some(line) = rx.recv().await {
                if write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        actix::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
}

/// Interactive use on the sim: three replicas in this process; the line
/// protocol talks to node1's.
async fn sim_interactive(
    safe: bool,
    listen: Option<String>,
    observe: observe::Observe,
) -> Result<(), String> {
    let cluster = SimCluster::new(3);
    let name = GroupName::new(GROUP).map_err(|e| e.to_string())?;
    let mut replicas = Vec::new();
    for node in 1..=3 {
        let conn = cluster
            .process(NodeId(node))
            .and_then(|p| {
                p.join(&name)
                    .map_err(|_| actix_cpg::transport::sim::SimError::NodeDown(NodeId(node)))
            })
            .map_err(|e| e.to_string())?;
        replicas.push(
            Replica::<KvStore>::start(conn, config(safe, true, observe.record_to(node)))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    replicas[0]
        .wait_primary()
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "kv_store: 3 replicas on the sim; commands go to node1's (put/get/del/cas/status/digest)"
    );
    match listen {
        Some(addr) => serve_tcp(replicas[0].clone(), &addr)
            .await
            .map_err(|e| e.to_string()),
        None => {
            serve_stdin(replicas[0].clone()).await;
            if let Some(text) = observe.shown(&replicas).await {
                eprintln!("{text}");
            }
            Ok(())
        }
    }
}

#[cfg(feature = "corosync")]
mod real {
    //! One replica process per node, each in its node's network namespace of
    //! the test cluster (`scripts/cluster.sh`).

    use super::*;
    use actix_cpg::transport::corosync::Corosync;
    use std::process::Stdio;

    pub struct Real {
        safe: bool,
        children: BTreeMap<u32, tokio::process::Child>,
        observe: observe::Observe,
    }

    impl Backend for Real {
        async fn start(&mut self, node: u32, founder: bool) -> Client {
            let mut cmd = tokio::process::Command::from(
                crate::support::member_command(node).expect("own path"),
            );
            cmd.arg("--member");
            if self.safe {
                cmd.arg("--safe");
            }
            if !founder {
                cmd.arg("--join-only");
            }
            cmd.args(self.observe.forward(node));
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start a replica process");
            let mut stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            self.children.insert(node, child);
            let (in_tx, mut in_rx) = unbounded_channel::<String>();
            let (out_tx, out_rx) = unbounded_channel();
            actix::spawn(async move {
                while let Some(line) = in_rx.recv().await {
                    if stdin
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            actix::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if out_tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let mut client = Client {
                tx: in_tx,
                rx: out_rx,
            };
            // The child says READY once its replica holds the state.
            let ready = client.recv().await.unwrap_or_default();
            assert!(ready.starts_with("READY"), "replica on node{node}: {ready}");
            client
        }

        fn kill(&mut self, node: u32) {
            if let Some(child) = self.children.get_mut(&node) {
                let _ = child.start_kill();
            }
        }
    }

    pub async fn tour(safe: bool, observe: observe::Observe) -> Result<(), String> {
        println!(
            "== kv_store on the real corosync cluster: 3 nodes, 1 replica process each, {} delivery ==\n",
            if safe { "safe" } else { "agreed" }
        );
        let show = observe.show;
        let mut real = Real {
            safe,
            children: BTreeMap::new(),
            observe,
        };
        let result = super::tour(&mut real).await;
        for (_, mut child) in std::mem::take(&mut real.children) {
            if show {
                // Its stdin closed with the tour's clients: it prints what
                // it holds (on stderr) and exits.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        println!("\n== done ==");
        result
    }

    /// One replica of the real cluster serving stdin (or `listen`).
    pub async fn member(
        safe: bool,
        founder: bool,
        listen: Option<String>,
        observe: observe::Observe,
    ) -> Result<(), String> {
        let name = GroupName::new(GROUP).map_err(|e| e.to_string())?;
        let conn = Corosync::new().join(&name).map_err(|e| e.to_string())?;
        let config = config(safe, founder, observe.record_alone());
        let replica = Replica::<KvStore>::start(conn, config)
            .await
            .map_err(|e| e.to_string())?;
        println!("READY {}", replica.local());
        match listen {
            Some(addr) => serve_tcp(replica, &addr).await.map_err(|e| e.to_string()),
            None => {
                serve_stdin(replica.clone()).await;
                // Stdout is the line protocol.
                if let Some(text) = observe.shown([&replica]).await {
                    eprintln!("{text}");
                }
                Ok(())
            }
        }
    }
}

fn main() -> Result<(), String> {
    logs::init();
    let cli = Cli::parse();
    let (safe, listen, observe) = (cli.safe, cli.listen, cli.observe);
    if let Some(path) = cli.replay {
        return observe::replay_replica::<KvStore>(&path).map_err(|e| e.to_string());
    }
    #[cfg(feature = "corosync")]
    {
        if cli.member {
            let founder = !cli.join_only;
            return actix::System::new().block_on(real::member(safe, founder, listen, observe));
        }
        if cli.corosync {
            return actix::System::new().block_on(real::tour(safe, observe));
        }
    }
    #[cfg(not(feature = "corosync"))]
    if cli.corosync || cli.member {
        return Err("the real backend needs `--features corosync`".into());
    }
    if cli.stdin || listen.is_some() {
        return actix::System::new().block_on(sim_interactive(safe, listen, observe));
    }
    actix::System::new().block_on(sim_tour(safe, observe))
}
