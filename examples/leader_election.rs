//! Leader election with fencing epochs.
//!
//! What it shows, printed as it happens:
//! 1. three members (one per node) join an election group; the longest-lived
//!    one leads, with a fencing epoch;
//! 2. the leader does work stamped with its epoch; the resource it writes
//!    to (played by this program) accepts only epochs at least as great as
//!    the greatest it has seen;
//! 3. the leader is killed (SIGKILL semantics); the others see it leave
//!    (the bare confchg detection time), and a new leader takes over with a
//!    greater epoch (the hand-over time); a replacement member joins. This
//!    repeats for several rounds, then p50/p99 of both times are printed.
//!
//! Run it on the in-process `sim` backend (no daemon needed):
//!
//! ```text
//! cargo run --example leader_election [-- --rounds 5]
//! ```
//!
//! On the real 3-node corosync cluster (as root, `scripts/cluster.sh up`
//! first), one member process per node, each in its node's namespace:
//!
//! ```text
//! cargo run --features corosync --example leader_election -- --corosync [--rounds 20]
//! ```
//!
//! A member process prints one line per event (`READY`, `VIEW`, `ELECTED`,
//! `DEPOSED`, `WORK`); this program reads them, plays the fenced resource,
//! kills leaders and times the hand-overs.
//!
//! `--record FILE` records each member's stream (FILE.1, FILE.2, ... in the
//! order they start; `acpg replay FILE.1` prints its decisions); `--show`
//! prints each member's `inspect()` snapshot at the end (a member process of the real
//! cluster, which is killed rather than stopped: on stderr after every
//! view change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::{
    Election, ElectionConfig, ElectionError, ElectionEvent, GroupName, NodeId, Transport,
    GROUP_ELECTION,
};
use clap::Parser;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

mod support;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// Leader election with fencing epochs, and how long a hand-over takes.
///
/// Three members elect a leader, which works under its fencing epoch; the
/// resource it writes to refuses stale epochs. The leader is killed, the
/// others elect a new one with a greater epoch, and a newcomer replaces the
/// killed member, round after round; then p50/p99 of the confchg detection
/// and hand-over times are printed. It runs on the in-process sim backend
/// unless `--corosync` is given.
#[derive(Parser)]
struct Cli {
    /// How many times the leader is killed and replaced.
    #[arg(long, value_name = "N", default_value_t = 5)]
    rounds: usize,
    /// Run on the real 3-node corosync cluster, one member process per node
    /// in its namespace (as root, after `bash scripts/cluster.sh up`).
    #[arg(long)]
    corosync: bool,
    /// Be one member process, printing its events as lines: what the
    /// `--corosync` run starts in each node's namespace.
    #[arg(long, hide = true)]
    member: bool,
    #[command(flatten)]
    observe: observe::Observe,
}

const GROUP: &str = "leader-election";

/// How often an acting leader does a unit of work.
const WORK_EVERY: Duration = Duration::from_millis(20);

/// One member: reports events as lines, and works while it leads. With
/// `show_on_views` (a member process, whose stdout is those lines) it
/// prints what `--show` prints on stderr after every view change.
async fn member(
    election: Result<Election, ElectionError>,
    out: UnboundedSender<String>,
    show_on_views: Option<observe::Observe>,
) {
    let say = |line: String| {
        let _ = out.send(line);
    };
    let election = match election {
        Ok(e) => e,
        Err(e) => return say(format!("ERROR {e}")),
    };
    let mut events = election.subscribe();
    say(format!("READY {}", election.local()));
    if let Some(epoch) = election.is_leader(GROUP_ELECTION) {
        say(format!("ELECTED {epoch}"));
    }
    let mut tick = tokio::time::interval(WORK_EVERY);
    let mut done = 0u64;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(ElectionEvent::ViewChanged { members, left, .. }) => {
                    let left: Vec<String> =
                        left.iter().map(|c| format!("{}:{:?}", c.member, c.reason)).collect();
                    say(format!("VIEW members={} left={}", members.len(), left.join(",")));
                    if let Some(observe) = &show_on_views {
                        if let Some(text) = observe.shown([&election]).await {
                            eprintln!("{text}");
                        }
                    }
                }
                Ok(ElectionEvent::Elected { name, epoch }) if name == GROUP_ELECTION => {
                    say(format!("ELECTED {epoch}"));
                }
                Ok(ElectionEvent::Deposed { name, epoch }) if name == GROUP_ELECTION => {
                    say(format!("DEPOSED {epoch}"));
                }
                Ok(ElectionEvent::Closed { .. }) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tick.tick() => {
                // The fence: every unit of work carries the epoch it was
                // done under.
                if let Some(epoch) = election.is_leader(GROUP_ELECTION) {
                    done += 1;
                    say(format!("WORK {done} {epoch}"));
                }
            }
        }
    }
}

/// Lines from one member, with the time this program read them.
struct Handle {
    rx: UnboundedReceiver<String>,
    name: String,
}

trait Backend {
    async fn start(&mut self, node: u32) -> Handle;
    fn kill(&mut self, node: u32);
}

struct Sim {
    cluster: SimCluster,
    processes: BTreeMap<u32, SimProcess>,
    observe: observe::Observe,
    /// Every member started, in order (for `--record` and `--show`).
    elections: Vec<Election>,
}

impl Backend for Sim {
    async fn start(&mut self, node: u32) -> Handle {
        let process = self.cluster.process(NodeId(node)).expect("node is up");
        let conn = process
            .join(&GroupName::new(GROUP).expect("name"))
            .expect("join");
        self.processes.insert(node, process);
        let config = ElectionConfig {
            record_to: self.observe.record_to(self.elections.len() as u32 + 1),
            ..ElectionConfig::default()
        };
        let election = Election::start(conn, config).await;
        if let Ok(e) = &election {
            self.elections.push(e.clone());
        }
        let (tx, rx) = unbounded_channel();
        actix::spawn(member(election, tx, None));
        ready(rx).await
    }

    fn kill(&mut self, node: u32) {
        if let Some(p) = self.processes.get(&node) {
            let _ = p.kill();
        }
    }
}

async fn ready(mut rx: UnboundedReceiver<String>) -> Handle {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(line)) if line.starts_with("READY ") => {
                return Handle {
                    name: line["READY ".len()..].to_owned(),
                    rx,
                }
            }
            Ok(Some(line)) if line.starts_with("ERROR") => panic!("member failed: {line}"),
            Ok(Some(_)) => {}
            _ => panic!("a member did not start"),
        }
    }
}

/// Everything the members said, merged, with arrival times.
struct Board {
    tx: UnboundedSender<(u32, Instant, String)>,
    rx: UnboundedReceiver<(u32, Instant, String)>,
    /// The fenced resource: the greatest epoch it accepted work from.
    fence: Option<String>,
    accepted: u64,
    rejected: u64,
}

impl Board {
    fn attach(&self, node: u32, mut h: Handle) {
        let tx = self.tx.clone();
        actix::spawn(async move {
            while let Some(line) = h.rx.recv().await {
                if tx.send((node, Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
    }

    /// Reads lines until one satisfies `want`; plays the fenced resource for
    /// `WORK` lines on the way.
    async fn until(&mut self, mut want: impl FnMut(u32, &str) -> bool) -> (u32, Instant, String) {
        loop {
            let Ok(Some((node, at, line))) =
                tokio::time::timeout(Duration::from_secs(60), self.rx.recv()).await
            else {
                panic!("no member said what was expected within 60 s");
            };
            if let Some(rest) = line.strip_prefix("WORK ") {
                let epoch = rest.split(' ').nth(1).unwrap_or_default().to_owned();
                let fresh = self.fence.as_ref().is_none_or(|f| epoch_ge(&epoch, f));
                if fresh {
                    self.fence = Some(epoch);
                    self.accepted += 1;
                } else {
                    self.rejected += 1;
                    println!("  resource refused work from node{node} with stale epoch {epoch}");
                }
            }
            if want(node, &line) {
                return (node, at, line);
            }
        }
    }
}

/// Compares `ring_seq.term` epochs.
fn epoch_ge(a: &str, b: &str) -> bool {
    let parse = |e: &str| -> (u64, u64) {
        let (r, t) = e.split_once('.').unwrap_or(("0", "0"));
        (r.parse().unwrap_or(0), t.parse().unwrap_or(0))
    };
    parse(a) >= parse(b)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn tour<B: Backend>(b: &mut B, rounds: usize) -> Result<(), String> {
    let (tx, rx) = unbounded_channel();
    let mut board = Board {
        tx,
        rx,
        fence: None,
        accepted: 0,
        rejected: 0,
    };
    println!("-- 1. three members join, one per node");
    let mut names = BTreeMap::new();
    for node in 1..=3 {
        let h = b.start(node).await;
        println!("  node{node}: {}", h.name);
        names.insert(node, h.name.clone());
        board.attach(node, h);
    }
    let (mut leader, _, line) = board.until(|_, l| l.starts_with("ELECTED")).await;
    println!("  node{leader} leads: {line}");

    println!("\n-- 2. the leader works, every unit stamped with its epoch");
    let mut shown = 0;
    board
        .until(|n, l| {
            if l.starts_with("WORK") && n == leader {
                shown += 1;
                println!("  node{n}: {l}");
            }
            shown >= 3
        })
        .await;

    let mut detect = Vec::new();
    let mut handover = Vec::new();
    for round in 1..=rounds {
        if round == 1 {
            println!("\n-- 3. the leader is killed; a new one takes over");
        }
        let killed = names.get(&leader).cloned().unwrap_or_default();
        let t0 = Instant::now();
        b.kill(leader);
        let (_, seen, _) = board
            .until(|_, l| l.starts_with("VIEW") && l.contains(&killed))
            .await;
        let (next, elected, line) = board
            .until(|n, l| n != leader && l.starts_with("ELECTED"))
            .await;
        detect.push(seen - t0);
        handover.push(elected - t0);
        println!(
            "  round {round}: killed node{leader}; confchg seen after {:.1?}, node{next} {line} after {:.1?}",
            seen - t0,
            elected - t0
        );
        // Bring the killed node's member back, as a newcomer.
        let h = b.start(leader).await;
        names.insert(leader, h.name.clone());
        board.attach(leader, h);
        board.until(|n, l| n == next && l.starts_with("WORK")).await;
        leader = next;
    }
    detect.sort();
    handover.sort();
    println!(
        "\n  over {rounds} rounds: confchg detection p50 {:.1?} p99 {:.1?}; hand-over p50 {:.1?} p99 {:.1?}",
        percentile(&detect, 0.5),
        percentile(&detect, 0.99),
        percentile(&handover, 0.5),
        percentile(&handover, 0.99)
    );
    println!(
        "  the resource accepted {} units of work and refused {} stale ones",
        board.accepted, board.rejected
    );
    Ok(())
}

async fn sim_tour(rounds: usize, observe: observe::Observe) -> Result<(), String> {
    println!("== leader_election on the sim backend: 3 nodes ==\n");
    let mut sim = Sim {
        cluster: SimCluster::new(3),
        processes: BTreeMap::new(),
        observe,
        elections: Vec::new(),
    };
    tour(&mut sim, rounds).await?;
    sim.observe.show(&sim.elections).await;
    println!("\n== done ==");
    Ok(())
}

#[cfg(feature = "corosync")]
mod real {
    //! One member process per node, in the nodes' network namespaces.

    use super::*;
    use actix_cpg::transport::corosync::Corosync;
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    pub struct Real {
        children: BTreeMap<u32, tokio::process::Child>,
        observe: observe::Observe,
    }

    impl Backend for Real {
        async fn start(&mut self, node: u32) -> Handle {
            let mut child = tokio::process::Command::from(
                crate::support::member_command(node).expect("own path"),
            )
            .arg("--member")
            .args(self.observe.forward(node))
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start a member process");
            let stdout = child.stdout.take().expect("stdout");
            self.children.insert(node, child);
            let (tx, rx) = unbounded_channel();
            actix::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            ready(rx).await
        }

        fn kill(&mut self, node: u32) {
            if let Some(child) = self.children.get_mut(&node) {
                let _ = child.start_kill();
            }
        }
    }

    pub async fn tour(rounds: usize, observe: observe::Observe) -> Result<(), String> {
        println!("== leader_election on the real corosync cluster: 3 nodes, 1 process each ==\n");
        let mut real = Real {
            children: BTreeMap::new(),
            observe,
        };
        let result = super::tour(&mut real, rounds).await;
        for (_, mut child) in std::mem::take(&mut real.children) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        println!("\n== done ==");
        result
    }

    /// One member process: prints its events on stdout (and, with
    /// `--show`, its `inspect()` snapshot on stderr after every view
    /// change: the parent kills it rather than stopping it).
    pub async fn member_process(observe: observe::Observe) -> Result<(), String> {
        let name = GroupName::new(GROUP).map_err(|e| e.to_string())?;
        let conn = Corosync::new().join(&name).map_err(|e| e.to_string())?;
        let config = ElectionConfig {
            record_to: observe.record_alone(),
            ..ElectionConfig::default()
        };
        let election = Election::start(conn, config).await;
        let (tx, mut rx) = unbounded_channel();
        actix::spawn(super::member(election, tx, Some(observe)));
        while let Some(line) = rx.recv().await {
            use std::io::Write;
            // The parent closed the pipe: it is done with this member.
            if writeln!(std::io::stdout(), "{line}").is_err() {
                break;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), String> {
    logs::init();
    let Cli {
        rounds,
        corosync,
        member,
        observe,
    } = Cli::parse();
    #[cfg(feature = "corosync")]
    {
        if member {
            return actix::System::new().block_on(real::member_process(observe));
        }
        if corosync {
            return actix::System::new().block_on(real::tour(rounds, observe));
        }
    }
    #[cfg(not(feature = "corosync"))]
    if corosync || member {
        return Err("the real backend needs `--features corosync`".into());
    }
    actix::System::new().block_on(sim_tour(rounds, observe))
}
