//! Replicated state and elections on the real 3-node corosync cluster.
//!
//! Runs with `--features corosync` and `ACPG_CLUSTER=1` (which
//! `scripts/test.sh` sets after `scripts/cluster.sh up`); otherwise every
//! test prints why it skipped. Members are `rsm-agent` processes in the
//! nodes' network namespaces, driven by lines (see `src/bin/rsm_agent.rs`
//! and `actix_cpg_harness::kv_lines`). Each test stops the processes it
//! started, and restores any link it cut and any daemon it killed.
//!
//! - a client streams operations through the kv store (safe delivery) while
//!   a member is SIGKILLed, a node's daemon is killed and a node's link is
//!   cut and restored: at the end every replica agrees, no acknowledged
//!   write is lost, and the recorded history is linearizable per key;
//! - a late joiner receives a 50 MB state while the others keep serving;
//! - a kv group with data directories is killed whole (its agents, then
//!   its daemons) with puts in flight on every replica, and comes back
//!   from disk each time, its history linearizable across the restarts
//!   and every acknowledged put there;
//! - the leader is killed 20 times: hand-over and bare confchg detection
//!   times (p50/p99) are printed;
//! - safe delivery's cost against agreed delivery, in latency and
//!   throughput, is printed;
//! - a plain CPG client (`cpg-agent GROUP raw`, no actix-cpg runtime) in a
//!   kv group taking writes multicasts a forged current-view `Info`
//!   claiming epoch 2^40, a snapshot `Chunk` of that state and a `Command`,
//!   stays silent while a fourth replica joins, then leaves: writes keep
//!   being acknowledged, no forged value or epoch ever shows, every replica
//!   agrees, and each forgery is refused and counted;
//! - the same client in an election group forges candidacies, a
//!   withdrawal, an info claiming the leadership with epoch 2^40 and a
//!   "no quorum" fact: no leader or epoch changes, each is refused, and
//!   killing the leader afterwards hands over with the next term.

#![cfg(feature = "corosync")]

// The library's test helpers; this suite uses the history checker.
#[path = "../../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::{Epoch, Member, StateMachine};
use support::forgeries;
use support::history::{check, Event, Op, Outcome};
use support::scratch::Scratch;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The real cluster is shared: one test at a time.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cluster_script() -> String {
    format!("{}/../scripts/cluster.sh", env!("CARGO_MANIFEST_DIR"))
}

fn unique_group(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "acpg-rsm-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Exclusive use of the cluster; undoes the faults it caused when dropped.
struct Cluster {
    cut: BTreeSet<u32>,
    daemons_down: BTreeSet<u32>,
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    fn get() -> Option<Cluster> {
        if std::env::var("ACPG_CLUSTER").as_deref() != Ok("1") {
            println!("skipped: no cluster (set ACPG_CLUSTER=1 after scripts/cluster.sh up)");
            return None;
        }
        let guard = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let status = std::process::Command::new("bash")
            .arg(cluster_script())
            .arg("status")
            .stdout(Stdio::null())
            .status()
            .expect("run cluster.sh status");
        assert!(
            status.success(),
            "ACPG_CLUSTER=1 but the cluster is not healthy"
        );
        Some(Cluster {
            cut: BTreeSet::new(),
            daemons_down: BTreeSet::new(),
            _exclusive: guard,
        })
    }

    fn script(&self, args: &[&str]) {
        let status = std::process::Command::new("bash")
            .arg(cluster_script())
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run cluster.sh");
        assert!(status.success(), "cluster.sh {args:?} failed");
    }

    fn cut(&mut self, node: u32) {
        self.script(&["cut", &node.to_string()]);
        self.cut.insert(node);
    }

    fn restore(&mut self, node: u32) {
        self.script(&["restore", &node.to_string()]);
        self.cut.remove(&node);
    }

    fn kill_daemon(&mut self, node: u32) {
        self.script(&["kill-daemon", &node.to_string()]);
        self.daemons_down.insert(node);
    }

    fn start_node(&mut self, node: u32) {
        self.script(&["start-node", &node.to_string()]);
        self.daemons_down.remove(&node);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in std::mem::take(&mut self.cut) {
            let _ = std::process::Command::new("bash")
                .arg(cluster_script())
                .args(["restore", &node.to_string()])
                .status();
        }
        for node in std::mem::take(&mut self.daemons_down) {
            let _ = std::process::Command::new("bash")
                .arg(cluster_script())
                .args(["start-node", &node.to_string()])
                .status();
        }
        let _ = std::process::Command::new("bash")
            .arg(cluster_script())
            .args(["wait-members", "3"])
            .stdout(Stdio::null())
            .status();
    }
}

/// One `rsm-agent` process; its lines arrive, time-stamped, on `lines`.
struct Agent {
    node: u32,
    member: String,
    child: tokio::process::Child,
    tx: UnboundedSender<String>,
}

impl Agent {
    /// Starts an agent on `node`; its output goes to `sink` tagged with
    /// `id`. Returns once it said READY.
    async fn spawn(
        node: u32,
        args: &[&str],
        id: usize,
        sink: &UnboundedSender<(usize, Instant, String)>,
    ) -> Agent {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{node}")])
            .arg(env!("CARGO_BIN_EXE_rsm-agent"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start rsm-agent");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, mut rx) = unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        // Until READY, lines come here; afterwards to the shared sink.
        let (first_tx, mut first_rx) = unbounded_channel::<String>();
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut ready = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if !ready {
                    ready = line.starts_with("READY");
                    let _ = first_tx.send(line);
                    continue;
                }
                if sink.send((id, Instant::now(), line)).is_err() {
                    break;
                }
            }
            let _ = sink.send((id, Instant::now(), "EOF".into()));
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, first_rx.recv()).await {
                Ok(Some(line)) if line.starts_with("READY ") => {
                    return Agent {
                        node,
                        member: line["READY ".len()..].to_owned(),
                        child,
                        tx,
                    };
                }
                Ok(Some(line)) if line.starts_with("ERROR") => {
                    panic!("agent on node{node} failed: {line}")
                }
                Ok(Some(_)) => {}
                _ => panic!("agent on node{node} did not become ready"),
            }
        }
    }

    fn send(&self, line: String) {
        let _ = self.tx.send(line);
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads the merged lines until one from `id` satisfies `pred`.
async fn expect_from(
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    id: usize,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> (Instant, String) {
    match expect_within(rx, id, Duration::from_secs(90), pred).await {
        Some(found) => found,
        None => panic!("agent {id} did not say {what} in time"),
    }
}

/// Like [`expect_from`], giving up after `wait`; `None` also when the
/// agent's output ended.
async fn expect_within(
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    id: usize,
    wait: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<(Instant, String)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((from, at, line))) if from == id && pred(&line) => return Some((at, line)),
            Ok(Some((from, _, line))) if from == id && line == "EOF" => return None,
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

/// Waits until agent `id` holds the state in a primary view; if it does
/// not within 90 s, fails with what every agent in `live` reports about
/// itself (its status and the protocol messages it refused).
async fn wait_primary_or_report(
    agents: &[Agent],
    live: &[usize],
    id: usize,
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
) {
    static TAG: AtomicU32 = AtomicU32::new(2_000_000_000);
    let tag = TAG.fetch_add(1, Ordering::Relaxed);
    agents[id].send(format!("#{tag} wait-primary"));
    let prefix = format!("#{tag} ");
    if expect_within(rx, id, Duration::from_secs(90), |l| l.starts_with(&prefix))
        .await
        .is_some()
    {
        return;
    }
    let mut report = Vec::new();
    for &i in live {
        for question in ["status", "refused"] {
            let tag = TAG.fetch_add(1, Ordering::Relaxed);
            agents[i].send(format!("#{tag} {question}"));
            let prefix = format!("#{tag} ");
            let answer = expect_within(rx, i, Duration::from_secs(10), |l| l.starts_with(&prefix))
                .await
                .map(|(_, l)| l[prefix.len()..].to_owned())
                .unwrap_or_else(|| "(no answer)".into());
            report.push(format!(
                "agent {i} ({} on node{}): {answer}",
                agents[i].member, agents[i].node
            ));
        }
    }
    panic!(
        "agent {id} did not hold the state in a primary view within 90 s:\n{}",
        report.join("\n")
    );
}

/// Asks agent `id` one tagged question and waits for the answer.
async fn ask(
    agent: &Agent,
    id: usize,
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    question: &str,
) -> String {
    static TAG: AtomicU32 = AtomicU32::new(1_000_000_000);
    let tag = TAG.fetch_add(1, Ordering::Relaxed);
    agent.send(format!("#{tag} {question}"));
    let prefix = format!("#{tag} ");
    let (_, line) = expect_from(rx, id, question, |l| l.starts_with(&prefix)).await;
    line[prefix.len()..].to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn parse_outcome(op: &Op, answer: &str) -> (Outcome, Option<u64>) {
    let words: Vec<&str> = answer.split(' ').collect();
    let pos = words.get(1).and_then(|p| p.parse().ok());
    let outcome = match (op, words.as_slice()) {
        (Op::Put(_) | Op::Del, ["OK" | "NONE", ..]) => Outcome::Done,
        (Op::Get, ["VALUE", _, value @ ..]) => Outcome::Value(Some(value.join(" "))),
        (Op::Get, ["NONE", _]) => Outcome::Value(None),
        (Op::Cas { .. }, ["CAS", _, "ok"]) => Outcome::Cas(true),
        (Op::Cas { .. }, ["CAS", _, "fail", ..]) => Outcome::Cas(false),
        _ => Outcome::Unknown,
    };
    (outcome, pos)
}

fn op_line(key: &str, op: &Op) -> String {
    let word = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match op {
        Op::Put(v) => format!("put {key} {v}"),
        Op::Get => format!("get {key}"),
        Op::Del => format!("del {key}"),
        Op::Cas { expected, new } => format!("cas {key} {} {}", word(expected), word(new)),
    }
}

struct Pending {
    agent: usize,
    key: String,
    op: Op,
    invoked: Instant,
}

#[tokio::test(flavor = "current_thread")]
async fn kv_stream_survives_kills_a_daemon_kill_and_a_cut() {
    let Some(mut cluster) = Cluster::get() else {
        return;
    };
    let group = unique_group("faults");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        let a = Agent::spawn(node, &["kv", &group, "--safe"], id, &sink).await;
        agents.push(a);
    }
    for (id, agent) in agents.iter().enumerate() {
        ask(agent, id, &mut rx, "wait-primary").await;
    }
    let join_only = ["kv", group.as_str(), "--safe", "--join-only"];

    let t0 = Instant::now();
    let ms = |d: Duration| d.as_millis();
    let mut dead: BTreeSet<usize> = BTreeSet::new();
    let mut current = 0usize;
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut history: Vec<Event> = Vec::new();
    let mut acked_unique: BTreeMap<String, String> = BTreeMap::new();
    let mut next = 0u64;
    let mut step = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut refused, mut unknown) = (0u64, 0u64);
    // (at, what) — the schedule of faults, in seconds from the start.
    let schedule: &[(u64, &str)] = &[
        (2, "kill agent on node3"),
        (3, "new agent on node3"),
        (6, "kill daemon on node2"),
        (12, "restart node2, new agent on node2"),
        (18, "cut node1"),
        (26, "restore node1"),
        (34, "stop"),
    ];
    let in_flight_limit = 8;
    let started = |t: Instant| (t - t0).as_nanos() as u64;
    loop {
        if step < schedule.len() && t0.elapsed() >= Duration::from_secs(schedule[step].0) {
            let what = schedule[step].1;
            println!("{:>6} ms  {what}", ms(t0.elapsed()));
            match what {
                "kill agent on node3" => {
                    agents[2].kill();
                    dead.insert(2);
                }
                "new agent on node3" => {
                    let id = agents.len();
                    let a = Agent::spawn(3, &join_only, id, &sink).await;
                    agents.push(a);
                }
                "kill daemon on node2" => {
                    cluster.kill_daemon(2);
                    agents[1].kill();
                    dead.insert(1);
                }
                "restart node2, new agent on node2" => {
                    cluster.start_node(2);
                    let id = agents.len();
                    let a = Agent::spawn(2, &join_only, id, &sink).await;
                    agents.push(a);
                }
                "cut node1" => cluster.cut(1),
                "restore node1" => cluster.restore(1),
                _ => {}
            }
            step += 1;
            if what == "stop" {
                break;
            }
            continue;
        }
        // Keep the pipeline full through the current agent.
        let mine = pending.values().filter(|p| p.agent == current).count();
        if !dead.contains(&current) && mine < in_flight_limit {
            next += 1;
            let (key, op) = if rand(10) < 7 {
                (format!("u{next}"), Op::Put(format!("v{next}")))
            } else {
                let key = format!("s{}", rand(10));
                let op = match rand(8) {
                    0..=2 => Op::Put(format!("v{next}")),
                    3..=5 => Op::Get,
                    6 => Op::Del,
                    _ => Op::Cas {
                        expected: Some(format!("v{}", next.saturating_sub(rand(20)))),
                        new: Some(format!("v{next}")),
                    },
                };
                (key, op)
            };
            agents[current].send(format!("#{next} {}", op_line(&key, &op)));
            pending.insert(
                next,
                Pending {
                    agent: current,
                    key,
                    op,
                    invoked: Instant::now(),
                },
            );
            continue;
        }
        let msg = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
        let Ok(Some((from, at, line))) = msg else {
            // Nothing back for a while through this agent: try another.
            if pending
                .values()
                .any(|p| p.agent == current && p.invoked.elapsed() > Duration::from_secs(1))
                || dead.contains(&current)
            {
                current = (0..agents.len())
                    .map(|i| (current + 1 + i) % agents.len())
                    .find(|i| !dead.contains(i))
                    .unwrap_or(current);
            }
            continue;
        };
        if line == "EOF" {
            dead.insert(from);
            continue;
        }
        let Some(tag) = line
            .strip_prefix('#')
            .and_then(|l| l.split(' ').next())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(p) = pending.remove(&tag) else {
            continue;
        };
        let answer = line.split_once(' ').map_or("", |(_, a)| a);
        if answer == "ERR not-primary" {
            refused += 1;
            if from == current {
                current = (0..agents.len())
                    .map(|i| (current + 1 + i) % agents.len())
                    .find(|i| !dead.contains(i))
                    .unwrap_or(current);
            }
            continue;
        }
        let (outcome, position) = parse_outcome(&p.op, answer);
        let returned = (outcome != Outcome::Unknown).then(|| started(at));
        if outcome == Outcome::Unknown {
            unknown += 1;
        } else if let (Op::Put(v), true) = (&p.op, p.key.starts_with('u')) {
            acked_unique.insert(p.key.clone(), v.clone());
        }
        history.push(Event {
            key: p.key,
            op: p.op,
            outcome,
            invoked: started(p.invoked),
            returned,
            position,
        });
    }
    // Let what is in flight finish (or time out as unknown).
    let drain = Instant::now() + Duration::from_secs(15);
    while !pending.is_empty() && Instant::now() < drain {
        let Ok(Some((_, at, line))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        else {
            continue;
        };
        let Some(tag) = line
            .strip_prefix('#')
            .and_then(|l| l.split(' ').next())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(p) = pending.remove(&tag) else {
            continue;
        };
        let answer = line.split_once(' ').map_or("", |(_, a)| a);
        if answer == "ERR not-primary" {
            refused += 1;
            continue;
        }
        let (outcome, position) = parse_outcome(&p.op, answer);
        let returned = (outcome != Outcome::Unknown).then(|| started(at));
        if let (Op::Put(v), true, false) =
            (&p.op, p.key.starts_with('u'), outcome == Outcome::Unknown)
        {
            acked_unique.insert(p.key.clone(), v.clone());
        }
        history.push(Event {
            key: p.key,
            op: p.op,
            outcome,
            invoked: started(p.invoked),
            returned,
            position,
        });
    }
    for (_, p) in std::mem::take(&mut pending) {
        unknown += 1;
        history.push(Event {
            key: p.key,
            op: p.op,
            outcome: Outcome::Unknown,
            invoked: started(p.invoked),
            returned: None,
            position: None,
        });
    }

    // Every live replica converges to one state.
    let live: Vec<usize> = (0..agents.len()).filter(|i| !dead.contains(i)).collect();
    let mut digests = BTreeSet::new();
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        digests.clear();
        for &i in &live {
            wait_primary_or_report(&agents, &live, i, &mut rx).await;
            digests.insert(ask(&agents[i], i, &mut rx, "digest").await);
        }
        if digests.len() == 1 || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(digests.len(), 1, "replicas disagree: {digests:?}");
    // Final reads of the shared keys, through the order, join the history.
    let reader = live[0];
    for k in 0..10 {
        let key = format!("s{k}");
        let invoked = started(Instant::now());
        let answer = ask(&agents[reader], reader, &mut rx, &format!("get {key}")).await;
        let (outcome, position) = parse_outcome(&Op::Get, &answer);
        history.push(Event {
            key,
            op: Op::Get,
            outcome,
            invoked,
            returned: Some(started(Instant::now())),
            position,
        });
    }
    // No acknowledged write is lost, on any replica.
    for &i in &live {
        let mut missing = Vec::new();
        for (key, value) in &acked_unique {
            let answer = ask(&agents[i], i, &mut rx, &format!("read {key}")).await;
            if answer != format!("LOCAL {value}") {
                missing.push(key.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "replica {} on node{} lost {} acknowledged writes, e.g. {:?}",
            agents[i].member,
            agents[i].node,
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let checked = check(&history).expect("the history is linearizable per key");
    println!(
        "{} operations: {} acknowledged unique writes all present on {} replicas, {refused} refused, {unknown} unknown; {checked} checked for linearizability; {}",
        history.len(),
        acked_unique.len(),
        live.len(),
        digests.iter().next().cloned().unwrap_or_default()
    );
    for a in &mut agents {
        a.kill();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn late_joiner_with_a_50_mb_state_catches_up_while_the_others_serve() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let group = unique_group("big");
    let (sink, mut rx) = unbounded_channel();
    let mut agents = Vec::new();
    for node in 1..=2 {
        let id = agents.len();
        agents.push(Agent::spawn(node, &["kv", &group], id, &sink).await);
    }
    ask(&agents[0], 0, &mut rx, "wait-primary").await;
    // 800 values of 64 KiB: 52 MB of state.
    let filled = ask(&agents[0], 0, &mut rx, "fill big 800 65536").await;
    assert!(filled.starts_with("FILLED"), "{filled}");
    let _ = ask(&agents[1], 1, &mut rx, "digest").await;

    // A client keeps writing through node1 while node3 joins.
    let mut latencies_before = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let a = ask(&agents[0], 0, &mut rx, &format!("put before-{i} x")).await;
        assert!(a.starts_with("OK"), "{a}");
        latencies_before.push(t.elapsed());
    }
    let join_started = Instant::now();
    let join_args = ["kv", group.as_str(), "--join-only"];
    let mut joiner = tokio::process::Command::new("ip")
        .args(["netns", "exec", "acpg-n3"])
        .arg(env!("CARGO_BIN_EXE_rsm-agent"))
        .args(join_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the joiner");
    let joiner_out = joiner.stdout.take().expect("stdout");
    let (jtx, mut jrx) = unbounded_channel::<(Instant, String)>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(joiner_out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = jtx.send((Instant::now(), line));
        }
    });
    let mut during = Vec::new();
    let mut ready_at = None;
    let mut restored = None;
    let mut i = 0;
    while ready_at.is_none() || restored.is_none() {
        let t = Instant::now();
        let a = ask(&agents[0], 0, &mut rx, &format!("put during-{i} x")).await;
        assert!(
            a.starts_with("OK"),
            "the group stopped serving during the transfer: {a}"
        );
        during.push(t.elapsed());
        i += 1;
        while let Ok((at, line)) = jrx.try_recv() {
            if line.starts_with("READY") {
                ready_at = Some(at);
            }
            if line.starts_with("RESTORED") {
                restored = Some(line);
            }
        }
        assert!(
            join_started.elapsed() < Duration::from_secs(120),
            "the joiner never caught up"
        );
    }
    let took = ready_at.map(|t| t - join_started).unwrap_or_default();
    let restored = restored.unwrap_or_default();
    let bytes: u64 = restored
        .split(' ')
        .nth(2)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(bytes >= 50_000_000, "the snapshot was only {bytes} bytes");
    let mut joiner_stdin = joiner.stdin.take().expect("stdin");
    joiner_stdin
        .write_all(b"#1 digest\n")
        .await
        .expect("ask the joiner");
    let mut joiner_digest = String::new();
    while let Some((_, line)) = jrx.recv().await {
        if let Some(d) = line.strip_prefix("#1 ") {
            joiner_digest = d.to_owned();
            break;
        }
    }
    // The others applied more since; compare once the writes stopped.
    let d0 = ask(&agents[0], 0, &mut rx, "digest").await;
    let d1 = ask(&agents[1], 1, &mut rx, "digest").await;
    let mut settle = 0;
    while joiner_digest != d0 && settle < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        joiner_stdin
            .write_all(b"#2 digest\n")
            .await
            .expect("ask the joiner");
        while let Some((_, line)) = jrx.recv().await {
            if let Some(d) = line.strip_prefix("#2 ") {
                joiner_digest = d.to_owned();
                break;
            }
        }
        settle += 1;
    }
    assert_eq!(d0, d1);
    assert_eq!(
        joiner_digest, d0,
        "the joiner does not hold the group's state"
    );
    latencies_before.sort();
    during.sort();
    println!(
        "late joiner: {bytes} bytes restored ({restored}); ready {took:.0?} after it started; \
         the others served {} puts meanwhile, latency p50 {:.1?} p99 {:.1?} max {:.1?} (before: p50 {:.1?} p99 {:.1?})",
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().copied().unwrap_or_default(),
        percentile(&latencies_before, 0.5),
        percentile(&latencies_before, 0.99)
    );
    assert!(
        during.len() >= 10,
        "too few puts served during the transfer"
    );
    let _ = joiner.start_kill();
    let _ = joiner.wait().await;
    for a in &mut agents {
        a.kill();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn leader_hand_over_and_confchg_detection_over_20_rounds() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let group = unique_group("leader");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        agents.push(Agent::spawn(node, &["elect", &group], id, &sink).await);
    }
    // Who leads: the first member, once everyone's view is installed.
    let mut leader = 0usize;
    let mut epoch = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while epoch.is_empty() && Instant::now() < deadline {
        if let Ok(Some((id, _, line))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            if let Some(e) = line.strip_prefix("ELECTED ") {
                leader = id;
                epoch = e.to_owned();
            }
        }
    }
    assert!(!epoch.is_empty(), "nobody was elected");
    let mut detect = Vec::new();
    let mut handover = Vec::new();
    let parse = |e: &str| -> (u64, u64) {
        let (r, t) = e.split_once('.').unwrap_or(("0", "0"));
        (r.parse().unwrap_or(0), t.parse().unwrap_or(0))
    };
    for round in 0..20 {
        let killed = agents[leader].member.clone();
        let node = agents[leader].node;
        let t0 = Instant::now();
        agents[leader].kill();
        let mut seen = None;
        let mut elected = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while (seen.is_none() || elected.is_none()) && Instant::now() < deadline {
            let Ok(Some((id, at, line))) =
                tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
            else {
                continue;
            };
            if id == leader {
                continue;
            }
            if line.starts_with("VIEW")
                && line.contains(&format!("{killed}:ProcDown"))
                && seen.is_none()
            {
                seen = Some(at - t0);
            }
            if let Some(e) = line.strip_prefix("ELECTED ") {
                assert!(parse(e) > parse(&epoch), "epoch {e} after {epoch}");
                epoch = e.to_owned();
                elected = Some((id, at - t0));
            }
        }
        let (Some(seen), Some((next, took))) = (seen, elected) else {
            panic!("round {round}: no hand-over within 30 s");
        };
        detect.push(seen);
        handover.push(took);
        // A newcomer replaces the killed member on its node.
        let id = agents.len();
        agents.push(Agent::spawn(node, &["elect", &group], id, &sink).await);
        leader = next;
    }
    detect.sort();
    handover.sort();
    println!(
        "leader killed 20 times: bare confchg detection p50 {:.1?} p99 {:.1?}; hand-over (kill -> new leader elected) p50 {:.1?} p99 {:.1?}; last epoch {epoch}",
        percentile(&detect, 0.5),
        percentile(&detect, 0.99),
        percentile(&handover, 0.5),
        percentile(&handover, 0.99)
    );
    for a in &mut agents {
        a.kill();
    }
}

/// The `epoch=` field of a `STATUS` line.
fn status_epoch(status: &str) -> String {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epoch="))
        .unwrap_or("-")
        .to_owned()
}

/// A replica's process is SIGKILLed: how long until a survivor holds the
/// state in a primary view again, under a new epoch (the survivors' view
/// installed: each one's mark and then its info back in order), and until
/// it has served a write. 20 rounds; a newcomer replaces the killed replica
/// on its node after each, and every replica is primary again before the
/// next kill.
/// Puts the next key `k<n>` through the next live replica in turn; the key
/// and value if the put was acknowledged.
async fn put_next(
    agents: &[Agent],
    live: &[usize],
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    n: &mut usize,
) -> Option<(String, String)> {
    let id = live[*n % live.len()];
    *n += 1;
    let (key, value) = (format!("k{n}"), format!("v{n}"));
    let answer = quick(&agents[id], id, rx, &format!("put {key} {value}")).await;
    answer.starts_with("OK").then_some((key, value))
}

/// Starts an agent on `node` that must be refused: returns its `ERROR` line.
async fn refused_agent(node: u32, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{node}")])
            .arg(env!("CARGO_BIN_EXE_rsm-agent"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a refused agent stops")
    .expect("run rsm-agent");
    assert!(
        !output.status.success(),
        "an incompatible agent was admitted"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line: {stdout}"))
        .to_owned()
}

/// A kv group of builds speaking version 2 only (the previous release)
/// takes writes while builds speaking 2 and 3 (this release: 3 adds the
/// replicas' divergence checks) join and the old ones are killed one by
/// one: the group moves to 3 once the last old replica is gone (and a
/// divergence check, refused before, runs through the daemons and finds
/// the replicas agree), an old build is then refused with the reason, and
/// every acknowledged write is on every replica, whose states are equal.
#[tokio::test(flavor = "current_thread")]
async fn a_rolling_upgrade_of_a_kv_group_loses_no_acknowledged_write() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let group = unique_group("upgrade");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        let mut args = vec!["kv", group.as_str(), "--versions", "2-2"];
        if node > 1 {
            args.push("--join-only");
        }
        agents.push(Agent::spawn(node, &args, id, &sink).await);
    }
    let mut live: Vec<usize> = vec![0, 1, 2];
    for &i in &live {
        wait_primary_or_report(&agents, &live, i, &mut rx).await;
    }
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        acked.extend(put_next(&agents, &live, &mut rx, &mut n).await);
    }
    // The new builds join.
    for node in [1, 2] {
        let id = agents.len();
        let args = ["kv", group.as_str(), "--versions", "2-3", "--join-only"];
        agents.push(Agent::spawn(node, &args, id, &sink).await);
        live.push(id);
        for &i in &live {
            wait_primary_or_report(&agents, &live, i, &mut rx).await;
        }
        for _ in 0..20 {
            acked.extend(put_next(&agents, &live, &mut rx, &mut n).await);
        }
    }
    for &i in &live {
        let status = quick(&agents[i], i, &mut rx, "status").await;
        assert!(status.contains("version=2"), "{status}");
    }
    // Divergence checks need version 3: not while an old build is in.
    let newest = *live.last().expect("live replicas");
    let check = quick(&agents[newest], newest, &mut rx, "check").await;
    assert!(check.starts_with("ERR"), "{check}");
    // The old ones go, one by one, with writes in between.
    for old in [0, 1, 2] {
        agents[old].kill();
        live.retain(|&i| i != old);
        for &i in &live {
            wait_primary_or_report(&agents, &live, i, &mut rx).await;
        }
        for _ in 0..20 {
            acked.extend(put_next(&agents, &live, &mut rx, &mut n).await);
        }
    }
    for &i in &live {
        let status = quick(&agents[i], i, &mut rx, "status").await;
        assert!(status.contains("version=3"), "moved up: {status}");
    }
    // Now the replicas compare digests of their states, through the daemons.
    let check = quick(&agents[newest], newest, &mut rx, "check").await;
    assert!(
        check.starts_with("CHECKED ") && check.ends_with(&format!(" {}", live.len())),
        "{check}"
    );
    // An old build is refused now, with the reason.
    let error = refused_agent(3, &["kv", &group, "--versions", "2-2", "--join-only"]).await;
    assert!(error.contains("the group speaks protocol v3"), "{error}");
    // Nothing acknowledged was lost, and the replicas agree.
    assert!(acked.len() >= 100, "writes were served: {}", acked.len());
    let mut digests = Vec::new();
    for &i in &live {
        for (key, value) in &acked {
            let got = quick(&agents[i], i, &mut rx, &format!("get {key}")).await;
            assert!(
                got.starts_with("VALUE") && got.ends_with(&format!(" {value}")),
                "{key} on replica {i}: {got}"
            );
        }
        let digest = quick(&agents[i], i, &mut rx, "digest").await;
        digests.push(digest.split(' ').skip(2).collect::<Vec<_>>().join(" "));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    println!(
        "rolling upgrade: {} writes acknowledged, all on both new replicas",
        acked.len()
    );
    for a in &mut agents {
        a.kill();
    }
}

/// A kv group with a data directory per replica (safe delivery, one
/// `fsync` per batch, a group key) is killed whole, round after round —
/// every agent SIGKILLed in even rounds, every corosync daemon killed (and
/// the agents with it) in odd ones — and comes back from its directories,
/// in a rotating order. Each round ends with writes in flight: every
/// replica is sent four puts at once (one overwrites a shared key, three
/// write keys of their own), and the group dies once `round % 4` of them
/// are answered; an answer read before its agent's output ended was
/// acknowledged, the others stay unknown (applied or not). Each time the
/// group is primary again, and the history of every operation across all
/// rounds (puts and reads through the order, then reads of every key after
/// each restart) is linearizable per key: no acknowledged write is lost.
/// Prints how many puts were in flight at the kills and how many of those
/// turned out applied, and the time from the first agent started to the
/// first write accepted. `ACPG_RESTART_ROUNDS` rounds (default 3).
#[tokio::test(flavor = "current_thread")]
async fn a_kv_group_killed_whole_comes_back_from_its_disks_and_loses_no_acknowledged_write() {
    let Some(mut cluster) = Cluster::get() else {
        return;
    };
    let rounds: usize = std::env::var("ACPG_RESTART_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let group = unique_group("restart");
    let scratch = Scratch::new(&group);
    let dirs: Vec<String> = (1..=3)
        .map(|n| scratch.path().join(format!("n{n}")).display().to_string())
        .collect();
    let args = |node: usize| -> Vec<String> {
        [
            "kv",
            &group,
            "--safe",
            "--data-dir",
            &dirs[node - 1],
            "--sync",
            "batch",
            "--key",
            "restart test",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (sink, mut rx) = unbounded_channel();
    let spawn_all = |order: [usize; 3], agents: &mut Vec<Agent>, sink| {
        let jobs: Vec<(usize, Vec<String>)> = order.iter().map(|&n| (n, args(n))).collect();
        let base = agents.len();
        async move {
            let mut out = Vec::new();
            for (i, (node, a)) in jobs.into_iter().enumerate() {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                out.push(Agent::spawn(node as u32, &a, base + i, sink).await);
            }
            out
        }
    };
    let mut agents: Vec<Agent> = Vec::new();
    let first = spawn_all([1, 2, 3], &mut agents, &sink).await;
    agents.extend(first);
    let t0 = Instant::now();
    let started = |t: Instant| (t - t0).as_nanos() as u64;
    let mut history = Vec::new();
    let mut back_to_writes = Vec::new();
    let keys = 4;
    let mut n = 0usize;
    let mut last_flight: Vec<InFlight> = Vec::new();
    let mut lost: Vec<String> = Vec::new();
    let (mut in_flight_at_kills, mut acknowledged_in_flight) = (0usize, 0usize);
    let (mut unknown_applied, mut unknown_not_applied) = (0usize, 0usize);
    for round in 0..=rounds {
        let live: Vec<usize> = (agents.len() - 3..agents.len()).collect();
        for &i in &live {
            wait_primary_or_report(&agents, &live, i, &mut rx).await;
        }
        if round > 0 {
            // Every key, read through the order right after the restart:
            // the shared ones and those of the last round's puts in flight.
            let own = last_flight.iter().map(|f| f.key.clone());
            let read: Vec<String> = (0..keys)
                .map(|k| format!("k{k}"))
                .chain(own.filter(|k| k.starts_with('f')))
                .collect();
            for (r, key) in read.iter().enumerate() {
                let id = live[r % 3];
                let invoked = started(Instant::now());
                let answer = quick(&agents[id], id, &mut rx, &format!("get {key}")).await;
                let (outcome, position) = parse_outcome(&Op::Get, &answer);
                history.push(Event {
                    key: key.clone(),
                    op: Op::Get,
                    outcome: outcome.clone(),
                    invoked,
                    returned: Some(started(Instant::now())),
                    position,
                });
                // No later write touched these keys before this read, so
                // it tells whether a put in flight took effect.
                for f in last_flight.iter().filter(|f| &f.key == key) {
                    let applied = outcome == Outcome::Value(Some(f.value.clone()));
                    match (f.acknowledged, applied) {
                        (true, false) => lost.push(format!(
                            "round {}: {} = {} acknowledged by agent {}, read after the restart: {answer}",
                            round - 1,
                            f.key,
                            f.value,
                            f.agent
                        )),
                        (false, true) => unknown_applied += 1,
                        (false, false) => unknown_not_applied += 1,
                        (true, true) => {}
                    }
                }
            }
        }
        if round == rounds {
            break;
        }
        for step in 0..12 {
            let id = live[step % 3];
            n += 1;
            let key = format!("k{}", n % keys);
            let op = if step % 3 == 2 {
                Op::Get
            } else {
                Op::Put(format!("v{n}"))
            };
            let invoked = started(Instant::now());
            let answer = quick(&agents[id], id, &mut rx, &op_line(&key, &op)).await;
            let (outcome, position) = parse_outcome(&op, &answer);
            assert!(
                !matches!(outcome, Outcome::Unknown),
                "round {round}: {answer}"
            );
            history.push(Event {
                key,
                op,
                outcome,
                invoked,
                returned: Some(started(Instant::now())),
                position,
            });
        }
        // Writes in flight: four puts through each replica at once (the
        // first overwrites a shared key, each replica a different one; the
        // others write keys of their own), and the group dies once
        // `round % 4` answers came back — 0: as soon as the lines are
        // written to the agents.
        let mut flight: BTreeMap<String, InFlight> = BTreeMap::new();
        for (a, &id) in live.iter().enumerate() {
            for j in 0..4 {
                n += 1;
                let key = if j == 0 {
                    format!("k{}", (a + round) % keys)
                } else {
                    format!("f{round}.{a}.{j}")
                };
                let value = format!("v{n}");
                let tag = format!("f{n}");
                agents[id].send(format!("#{tag} put {key} {value}"));
                flight.insert(
                    tag,
                    InFlight {
                        agent: id,
                        key,
                        value,
                        invoked: started(Instant::now()),
                        answer: None,
                        acknowledged: false,
                    },
                );
            }
        }
        let wanted = round % 4;
        let give_up = Instant::now() + Duration::from_secs(15);
        tokio::time::sleep(Duration::from_millis(1)).await;
        while flight.values().filter(|f| f.answer.is_some()).count() < wanted
            && Instant::now() < give_up
        {
            if let Ok(Some((from, at, line))) =
                tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
            {
                answer_in_flight(&mut flight, from, at, &line, &started);
            }
        }
        let answered_before_kill = flight.values().filter(|f| f.answer.is_some()).count();
        // The whole group dies.
        if round % 2 == 0 {
            for &i in &live {
                agents[i].kill();
            }
        } else {
            for node in 1..=3 {
                cluster.kill_daemon(node);
            }
            for &i in &live {
                agents[i].kill();
            }
            for node in 1..=3 {
                cluster.start_node(node);
            }
            cluster.script(&["wait-members", "3"]);
        }
        for &i in &live {
            let _ = agents[i].child.wait().await;
        }
        // Every answer an agent wrote before it died is read, up to its
        // EOF, before the next agents start (whose lines `quick` would
        // otherwise skip these among).
        let mut ended: BTreeSet<usize> = BTreeSet::new();
        let drain = Instant::now() + Duration::from_secs(30);
        while ended.len() < live.len() && Instant::now() < drain {
            let Ok(Some((from, at, line))) =
                tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            else {
                continue;
            };
            if line == "EOF" && live.contains(&from) {
                ended.insert(from);
            } else {
                answer_in_flight(&mut flight, from, at, &line, &started);
            }
        }
        assert_eq!(
            ended.len(),
            live.len(),
            "round {round}: an agent's output did not end"
        );
        in_flight_at_kills += flight.len() - answered_before_kill;
        for f in flight.values_mut() {
            let (outcome, returned, position) = match &f.answer {
                Some((answer, at)) => {
                    let (outcome, position) = parse_outcome(&Op::Put(f.value.clone()), answer);
                    let returned = (outcome != Outcome::Unknown).then_some(*at);
                    (outcome, returned, position)
                }
                None => (Outcome::Unknown, None, None),
            };
            f.acknowledged = outcome == Outcome::Done;
            if f.acknowledged {
                acknowledged_in_flight += 1;
            }
            history.push(Event {
                key: f.key.clone(),
                op: Op::Put(f.value.clone()),
                outcome,
                invoked: f.invoked,
                returned,
                position,
            });
        }
        last_flight = flight.into_values().collect();
        // And comes back from its disks, the first back in turn.
        let order = [1 + round % 3, 1 + (round + 1) % 3, 1 + (round + 2) % 3];
        let back_at = Instant::now();
        let back = spawn_all(order, &mut agents, &sink).await;
        agents.extend(back);
        let id = agents.len() - 1;
        wait_primary_or_report(&agents, &[id], id, &mut rx).await;
        let answer = quick(&agents[id], id, &mut rx, &format!("put back-{round} x")).await;
        assert!(answer.starts_with("OK"), "round {round}: {answer}");
        back_to_writes.push(back_at.elapsed());
    }
    let verdict = check(&history);
    if !lost.is_empty() || verdict.is_err() {
        // Kept for the post-mortem: the scratch directory goes with the test.
        let file = std::env::temp_dir().join(format!("{group}.history"));
        let dump: String = history.iter().map(|e| format!("{e:?}\n")).collect();
        let _ = std::fs::write(&file, dump);
        panic!(
            "acknowledged writes lost: {lost:#?}; linearizable: {verdict:?}; the history is in {}",
            file.display()
        );
    }
    let checked = verdict.unwrap_or_default();
    back_to_writes.sort();
    println!(
        "kv group killed whole {rounds} times (agents, then daemons, in turn): {checked} operations checked; {in_flight_at_kills} puts in flight at the kills ({} more answered before), {acknowledged_in_flight} of all {} acknowledged; of those without an answer {unknown_applied} applied, {unknown_not_applied} not; acknowledged writes lost 0; first agent started -> first write accepted p50 {:.1?} max {:.1?}",
        12 * rounds - in_flight_at_kills,
        12 * rounds,
        percentile(&back_to_writes, 0.5),
        back_to_writes.last().copied().unwrap_or_default()
    );
    for a in &mut agents {
        a.kill();
    }
}

/// A put sent just before its group is killed.
struct InFlight {
    agent: usize,
    key: String,
    value: String,
    invoked: u64,
    /// Its answer and when it was read, if its agent wrote one.
    answer: Option<(String, u64)>,
    /// Answered `OK`: it must survive the restart.
    acknowledged: bool,
}

/// Records `line` from agent `from` if it answers one of `flight`'s puts
/// (tagged `#f<n>`, sent to that agent).
fn answer_in_flight(
    flight: &mut BTreeMap<String, InFlight>,
    from: usize,
    at: Instant,
    line: &str,
    started: &impl Fn(Instant) -> u64,
) {
    let Some((tag, answer)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
        return;
    };
    if let Some(f) = flight.get_mut(tag).filter(|f| f.agent == from) {
        f.answer = Some((answer.to_owned(), started(at)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn replica_failover_over_20_rounds() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let group = unique_group("failover");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        let args: &[&str] = if node == 1 {
            &["kv", &group]
        } else {
            &["kv", &group, "--join-only"]
        };
        agents.push(Agent::spawn(node, args, id, &sink).await);
    }
    let mut live: Vec<usize> = vec![0, 1, 2];
    for &i in &live {
        wait_primary_or_report(&agents, &live, i, &mut rx).await;
    }
    let mut primary_again = Vec::new();
    let mut served = Vec::new();
    for round in 0..20 {
        let victim = live[round % live.len()];
        let survivor = live
            .iter()
            .copied()
            .find(|&i| i != victim)
            .expect("a survivor");
        let before = status_epoch(&ask(&agents[survivor], survivor, &mut rx, "status").await);
        let node = agents[victim].node;
        let t0 = Instant::now();
        agents[victim].kill();
        loop {
            let status = ask(&agents[survivor], survivor, &mut rx, "status").await;
            if status.contains("primary=true")
                && status.contains("holding=true")
                && status_epoch(&status) != before
            {
                primary_again.push(t0.elapsed());
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "round {round}: no new primary view within 30 s: {status}"
            );
        }
        let put = ask(
            &agents[survivor],
            survivor,
            &mut rx,
            &format!("put failover-{round} x"),
        )
        .await;
        assert!(put.starts_with("OK"), "round {round}: {put}");
        served.push(t0.elapsed());
        live.retain(|&i| i != victim);
        let id = agents.len();
        agents.push(Agent::spawn(node, &["kv", &group, "--join-only"], id, &sink).await);
        live.push(id);
        for &i in &live {
            wait_primary_or_report(&agents, &live, i, &mut rx).await;
        }
    }
    primary_again.sort();
    served.sort();
    println!(
        "replica killed 20 times: primary again (kill -> new epoch at a survivor) p50 {:.1?} p99 {:.1?}; first write served p50 {:.1?} p99 {:.1?}",
        percentile(&primary_again, 0.5),
        percentile(&primary_again, 0.99),
        percentile(&served, 0.5),
        percentile(&served, 0.99)
    );
    for a in &mut agents {
        a.kill();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn safe_delivery_cost_against_agreed_delivery() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    for safe in [false, true] {
        let mode = if safe { "safe" } else { "agreed" };
        let group = unique_group(mode);
        let (sink, mut rx) = unbounded_channel();
        let mut args = vec!["kv", group.as_str()];
        if safe {
            args.push("--safe");
        }
        let mut agents = Vec::new();
        for node in 1..=3 {
            let id = agents.len();
            agents.push(Agent::spawn(node, &args, id, &sink).await);
        }
        ask(&agents[0], 0, &mut rx, "wait-primary").await;
        // Latency: one put at a time.
        let mut lat = Vec::new();
        for i in 0..500 {
            let t = Instant::now();
            let a = ask(&agents[0], 0, &mut rx, &format!("put lat-{i} x")).await;
            assert!(a.starts_with("OK"), "{a}");
            lat.push(t.elapsed());
        }
        lat.sort();
        // Throughput: 64 in flight from one client, then from all three.
        let mut rates = Vec::new();
        for writers in [1usize, 3] {
            let total = 6000u64;
            let t = Instant::now();
            let mut sent = 0u64;
            let mut done = 0u64;
            let mut in_flight = vec![0usize; writers];
            while done < total {
                for (w, n) in in_flight.iter_mut().enumerate() {
                    while *n < 64 && sent < total {
                        agents[w].send(format!("#{sent} put tp-{sent} x"));
                        sent += 1;
                        *n += 1;
                    }
                }
                let Some((id, _, line)) = rx.recv().await else {
                    break;
                };
                if line.starts_with('#') {
                    assert!(line.contains(" OK "), "{line}");
                    in_flight[id] -= 1;
                    done += 1;
                }
            }
            rates.push(total as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "{mode} delivery: 1 put at a time p50 {:.2?} p99 {:.2?}; 64 in flight: 1 writer {:.0} puts/s, 3 writers {:.0} puts/s",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            rates[0],
            rates[1]
        );
        for a in &mut agents {
            a.kill();
        }
    }
}

/// A plain CPG client: `cpg-agent GROUP raw` in a node's namespace. It runs
/// no actix-cpg runtime; it joins, prints its confchgs and multicasts the
/// bytes it is given.
struct RawClient {
    member: Member,
    child: tokio::process::Child,
    tx: UnboundedSender<String>,
    lines: UnboundedReceiver<String>,
}

impl RawClient {
    async fn spawn(node: u32, group: &str) -> RawClient {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{node}")])
            .arg(env!("CARGO_BIN_EXE_cpg-agent"))
            .args([group, "raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start cpg-agent");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, mut in_rx) = unbounded_channel::<String>();
        tokio::spawn(async move {
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
        let (out_tx, lines) = unbounded_channel();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut raw = RawClient {
            member: Member::new(0, 0),
            child,
            tx,
            lines,
        };
        let ready = raw.expect("READY", |l| l.starts_with("READY ")).await;
        raw.member = forgeries::member(&ready["READY ".len()..]);
        raw
    }

    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(line)) if line.starts_with("ERROR") => {
                    panic!("raw client: {line} (waiting for {what})")
                }
                Ok(Some(_)) => {}
                _ => panic!("the raw client did not say {what} in time"),
            }
        }
    }

    /// The raw view, once it holds `n` processes.
    async fn view_of(&mut self, n: usize) -> Vec<Member> {
        let line = self
            .expect(&format!("a view of {n}"), |l| {
                l.starts_with("CONFCHG") && forgeries::confchg_members(l).len() == n
            })
            .await;
        forgeries::confchg_members(&line)
    }

    /// Multicasts `bytes` as they are.
    async fn mcast(&mut self, bytes: &[u8]) {
        let _ = self
            .tx
            .send(format!("mcast {}", actix_cpg_harness::encode_hex(bytes)));
        self.expect("SENT 1", |l| l == "SENT 1").await;
    }

    async fn leave(mut self) {
        let _ = self.tx.send("leave".into());
        self.expect("LEFT", |l| l == "LEFT").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.start_kill();
    }
}

/// A `ring.term` epoch as the agents print it.
fn parse_epoch(text: &str) -> (u64, u64) {
    let (r, t) = text.split_once('.').expect("ring.term");
    (r.parse().expect("ring"), t.parse().expect("term"))
}

/// `key=N` of a counters line.
fn counter(line: &str, key: &str) -> u64 {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// `ask`, but a replica that does not answer within 15 s fails the test
/// at once: in the hostile scenarios that means the group stalled.
async fn quick(
    agent: &Agent,
    id: usize,
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    question: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(15), ask(agent, id, rx, question))
        .await
        .unwrap_or_else(|_| panic!("replica {id} did not answer {question:?} within 15 s"))
}

const FORGED_RING: u64 = 1 << 40;

#[tokio::test(flavor = "current_thread")]
async fn hostile_client_changes_nothing_in_a_kv_group_taking_writes() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let t0 = Instant::now();
    let group = unique_group("hostile-kv");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        agents.push(Agent::spawn(node, &["kv", &group, "--safe"], id, &sink).await);
    }
    for (id, a) in agents.iter().enumerate() {
        quick(a, id, &mut rx, "wait-primary").await;
    }
    let mut balance = 100u64;
    for line in [
        "put owner alice".to_owned(),
        format!("put balance {balance}"),
    ] {
        let a = quick(&agents[0], 0, &mut rx, &line).await;
        assert!(a.starts_with("OK "), "{line}: {a}");
    }

    let mut raw = RawClient::spawn(2, &group).await;
    let view = raw.view_of(4).await;
    let me = raw.member;
    // Written after the client's confchg: once every replica is a primary
    // of three holding the state again, the install of its view is over.
    let a = quick(&agents[1], 1, &mut rx, "put after-join yes").await;
    assert!(a.starts_with("OK "), "{a}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut epoch_before = None;
    for (id, agent) in agents.iter().enumerate() {
        loop {
            let s = quick(agent, id, &mut rx, "status").await;
            if s.contains("primary=true") && s.contains("members=3") && s.contains("holding=true") {
                let e = s
                    .split(' ')
                    .find_map(|w| w.strip_prefix("epoch="))
                    .map(parse_epoch)
                    .expect("epoch");
                assert!(epoch_before.is_none_or(|b| b == e), "epochs differ: {s}");
                epoch_before = Some(e);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not settled with the client in the view: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let epoch_before = epoch_before.expect("an epoch");
    let mut baseline = Vec::new();
    for (id, agent) in agents.iter().enumerate() {
        baseline.push(quick(agent, id, &mut rx, "refused").await);
    }

    // The forgeries: a current-view info claiming a state of epoch 2^40 held
    // by a primary of {itself}, that state's snapshot (owner mallory, a
    // million), and a command.
    let state = forgeries::huge_state();
    let mut evil = KvStore::default();
    for (key, value) in [("owner", "mallory"), ("balance", "1000000")] {
        evil.apply(KvCommand::Put {
            key: key.into(),
            value: value.into(),
        });
    }
    let codec = actix_cpg::wire::Codec::new(1 << 20);
    let command = KvCommand::Put {
        key: "balance".into(),
        value: "1000000".into(),
    };
    let forged_at = Instant::now();
    raw.mcast(&forgeries::replicated_mark(1)).await;
    raw.mcast(&forgeries::replicated_info(&view, me, state, 1))
        .await;
    raw.mcast(&forgeries::replicated_chunk(
        state,
        KvStore::encode(evil.snapshot()),
    ))
    .await;
    raw.mcast(&forgeries::replicated_command(
        1,
        codec.encode_payload(&command).expect("payload"),
    ))
    .await;
    // Each is refused, once, by its rule, on every replica.
    for (id, agent) in agents.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = quick(agent, id, &mut rx, "refused").await;
            let b = &baseline[id];
            let diff = |k: &str| counter(&r, k) - counter(b, k);
            if diff("epoch") + diff("chunk") + diff("not_member") >= 3 {
                assert_eq!(
                    (diff("epoch"), diff("chunk"), diff("not_member")),
                    (1, 1, 1),
                    "replica {id}: {b} -> {r}"
                );
                assert_eq!(diff("inconsistent") + diff("overflow"), 0, "{b} -> {r}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} did not refuse the three forgeries: {b} -> {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Delivered everywhere and refused: nothing changed.
    for (id, agent) in agents.iter().enumerate() {
        for (key, value) in [("owner", "alice"), ("balance", "100")] {
            let got = quick(agent, id, &mut rx, &format!("get {key}")).await;
            assert!(
                got.starts_with("VALUE ") && got.ends_with(&format!(" {value}")),
                "replica {id}, {key} after the forgeries: {got}"
            );
        }
    }

    // The client stays silent; writes keep flowing through every replica
    // while a fourth replica joins and becomes ready.
    let joined = std::cell::Cell::new(false);
    let join = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let a = Agent::spawn(3, &["kv", &group, "--safe", "--join-only"], 3, &sink).await;
        joined.set(true);
        (a, started.elapsed())
    };
    let mut acked = 0u64;
    let write = async {
        let mut i = 0usize;
        while !joined.get() || forged_at.elapsed() < Duration::from_secs(4) {
            let id = i % 3;
            i += 1;
            // A compare-and-swap: a forged write in between makes it fail.
            let line = format!("cas balance {balance} {}", balance + 1);
            balance += 1;
            let a = quick(&agents[id], id, &mut rx, &line).await;
            assert!(
                a.starts_with("CAS ") && a.ends_with(" ok"),
                "{line} through replica {id}: {a}"
            );
            acked += 1;
            let a = quick(&agents[id], id, &mut rx, "get owner").await;
            assert!(
                a.starts_with("VALUE ") && a.ends_with(" alice"),
                "owner through replica {id}: {a}"
            );
        }
        rx
    };
    let ((fourth, join_took), returned) = tokio::join!(join, write);
    rx = returned;
    agents.push(fourth);
    let a = quick(&agents[3], 3, &mut rx, "put joined yes").await;
    assert!(a.starts_with("OK "), "{a}");
    raw.leave().await;
    for (id, agent) in agents.iter().enumerate() {
        let line = format!("cas balance {balance} {}", balance + 1);
        balance += 1;
        let a = quick(agent, id, &mut rx, &line).await;
        assert!(
            a.starts_with("CAS ") && a.ends_with(" ok"),
            "after the client left, {line} through replica {id}: {a}"
        );
        acked += 1;
    }

    // Every replica agrees, holds only what the client wrote, and its
    // epoch descends from the real ones.
    let mut digests = BTreeSet::new();
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        digests.clear();
        for (id, agent) in agents.iter().enumerate() {
            digests.insert(quick(agent, id, &mut rx, "digest").await);
        }
        if digests.len() == 1 || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(digests.len(), 1, "replicas disagree: {digests:?}");
    let mut epochs = BTreeSet::new();
    for (id, agent) in agents.iter().enumerate() {
        let p = quick(agent, id, &mut rx, "wait-primary").await;
        let e = parse_epoch(p.strip_prefix("PRIMARY ").expect("PRIMARY"));
        assert!(
            e.0 < FORGED_RING
                && e.1 < FORGED_RING
                && e >= epoch_before
                && e.1 <= epoch_before.1 + 4,
            "replica {id}: epoch {e:?} (before the forgeries {epoch_before:?})"
        );
        epochs.insert(e);
        for (key, value) in [
            ("owner", "alice".to_owned()),
            ("balance", balance.to_string()),
        ] {
            let got = quick(agent, id, &mut rx, &format!("read {key}")).await;
            assert_eq!(got, format!("LOCAL {value}"), "replica {id}, {key}");
            let got = quick(agent, id, &mut rx, &format!("get {key}")).await;
            assert!(
                got.ends_with(&format!(" {value}")),
                "replica {id}, {key}: {got}"
            );
        }
        let r = quick(agent, id, &mut rx, "refused").await;
        if id == 3 {
            // It joined after the forgeries.
            for k in ["not_member", "epoch", "inconsistent", "chunk", "overflow"] {
                assert_eq!(counter(&r, k), 0, "the joiner: {r}");
            }
        }
    }
    assert_eq!(epochs.len(), 1, "replicas in different epochs: {epochs:?}");
    println!(
        "hostile kv client: {acked} compare-and-swap writes acknowledged, none uncertain or failed; the fourth replica ready in {join_took:.1?}; \
         epoch {epoch_before:?} -> {epochs:?}; state {}; took {:.1?}",
        digests.iter().next().cloned().unwrap_or_default(),
        t0.elapsed()
    );
    for a in &mut agents {
        a.kill();
    }
}

/// Reads the merged lines for `wait`, keeping them.
async fn collect(
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    wait: Duration,
    log: &mut Vec<(usize, String)>,
) {
    let until = Instant::now() + wait;
    while let Ok(Some((id, _, line))) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
    {
        log.push((id, line));
    }
}

/// Asks agent `id` one tagged question; keeps every other line in `log`.
async fn ask_logged(
    agent: &Agent,
    id: usize,
    rx: &mut UnboundedReceiver<(usize, Instant, String)>,
    question: &str,
    log: &mut Vec<(usize, String)>,
) -> String {
    static TAG: AtomicU32 = AtomicU32::new(2_000_000_000);
    let tag = TAG.fetch_add(1, Ordering::Relaxed);
    agent.send(format!("#{tag} {question}"));
    let prefix = format!("#{tag} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((from, _, line))) if from == id && line.starts_with(&prefix) => {
                return line[prefix.len()..].to_owned()
            }
            Ok(Some((from, _, line))) => log.push((from, line)),
            _ => panic!("agent {id} did not answer {question} in time"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_client_changes_no_leader_or_epoch() {
    let Some(_cluster) = Cluster::get() else {
        return;
    };
    let t0 = Instant::now();
    let group = unique_group("hostile-elect");
    let (sink, mut rx) = unbounded_channel();
    let mut agents: Vec<Agent> = Vec::new();
    for node in 1..=3 {
        let id = agents.len();
        agents.push(Agent::spawn(node, &["elect", &group], id, &sink).await);
    }
    // Settled: all three name the same leader, which acts.
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let mut seen = BTreeSet::new();
        for (id, a) in agents.iter().enumerate() {
            seen.insert(ask_logged(a, id, &mut rx, "leader", &mut log).await);
        }
        let elected = log.iter().any(|(_, l)| l.starts_with("ELECTED "));
        if seen.len() == 1 && elected && !seen.contains("LEADER - -") {
            break seen.pop_first().expect("one");
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let words: Vec<&str> = before.split(' ').collect();
    let (leader, epoch) = (words[1].to_owned(), parse_epoch(words[2]));
    let leader_id = agents
        .iter()
        .position(|a| a.member == leader)
        .expect("the leader is an agent");

    let mut raw = RawClient::spawn(3, &group).await;
    let view = raw.view_of(4).await;
    let me = raw.member;
    collect(&mut rx, Duration::from_millis(500), &mut log).await;
    let mut baseline = Vec::new();
    for (id, a) in agents.iter().enumerate() {
        baseline.push(ask_logged(a, id, &mut rx, "refused", &mut log).await);
    }
    let from = log.len();
    let forged = [
        forgeries::election_stand(actix_cpg::GROUP_ELECTION),
        forgeries::election_stand("jobs"),
        // The leader's candidacy is what a withdrawal would have to end.
        forgeries::election_withdraw(actix_cpg::GROUP_ELECTION),
        forgeries::election_info(
            &view,
            me,
            actix_cpg::GROUP_ELECTION,
            Epoch {
                ring_seq: FORGED_RING,
                term: FORGED_RING,
            },
            u64::MAX,
        ),
        // A plausible ring seq (the current one): only the sender rule
        // stands between this fact and a deposed leader.
        forgeries::election_fact(epoch.0, false),
    ];
    for bytes in &forged {
        raw.mcast(bytes).await;
    }
    for (id, a) in agents.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ask_logged(a, id, &mut rx, "refused", &mut log).await;
            let b = &baseline[id];
            let diff = |k: &str| counter(&r, k) - counter(b, k);
            if diff("not_member") >= forged.len() as u64 {
                assert_eq!(diff("not_member"), forged.len() as u64, "{b} -> {r}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {id} did not refuse the forgeries: {b} -> {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Silent for a while, then gone.
    collect(&mut rx, Duration::from_secs(3), &mut log).await;
    raw.leave().await;
    collect(&mut rx, Duration::from_secs(1), &mut log).await;
    let changes: Vec<&(usize, String)> = log[from..]
        .iter()
        .filter(|(_, l)| {
            l.starts_with("LEADER") || l.starts_with("ELECTED") || l.starts_with("DEPOSED")
        })
        .collect();
    assert!(changes.is_empty(), "the leadership moved: {changes:?}");
    for (id, a) in agents.iter().enumerate() {
        let now = ask_logged(a, id, &mut rx, "leader", &mut log).await;
        assert_eq!(now, before, "member {id}");
    }

    // The leader dies: the next senior member takes over with the next term.
    let killed_at = Instant::now();
    agents[leader_id].kill();
    let next_id = (0..agents.len())
        .find(|&i| i != leader_id)
        .expect("a survivor");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut elected = None;
    let mut named = BTreeMap::new();
    let settled = |elected: &Option<_>, named: &BTreeMap<usize, String>| {
        elected.is_some() && named.len() == 2 && named.values().all(|l| !l.starts_with('-'))
    };
    while !settled(&elected, &named) && Instant::now() < deadline {
        let Ok(Some((id, _, line))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        else {
            continue;
        };
        if id == leader_id {
            continue;
        }
        if let Some(e) = line.strip_prefix("ELECTED ") {
            elected = Some((id, parse_epoch(e), killed_at.elapsed()));
        }
        if let Some(rest) = line.strip_prefix("LEADER ") {
            named.insert(id, rest.to_owned());
        }
    }
    let Some((new_id, new_epoch, took)) = elected else {
        panic!("no hand-over within 30 s: {named:?}");
    };
    assert_eq!(new_id, next_id, "the next senior member leads");
    assert_eq!(new_epoch.1, epoch.1 + 1, "{new_epoch:?} after {epoch:?}");
    assert!(
        new_epoch > epoch && new_epoch.0 < FORGED_RING,
        "{new_epoch:?}"
    );
    let expected = format!("{} {}.{}", agents[new_id].member, new_epoch.0, new_epoch.1);
    assert_eq!(named.len(), 2, "{named:?}");
    for (id, l) in &named {
        assert_eq!(l, &expected, "member {id}");
    }
    println!(
        "hostile election client: 5 forgeries refused by each member, leader {leader} {}.{} kept; \
         after its kill {} {}.{} in {took:.1?}; took {:.1?}",
        epoch.0,
        epoch.1,
        agents[new_id].member,
        new_epoch.0,
        new_epoch.1,
        t0.elapsed()
    );
    for a in &mut agents {
        a.kill();
    }
}
