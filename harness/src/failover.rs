//! `bench --vs-etcd-failover`: leader failover of actix-cpg's election
//! against etcd's election API, on the same three node namespaces, in one
//! run.
//!
//! ```text
//!  per system (actix-cpg, then etcd), per fault, R rounds:
//!    one member process per node ── ELECTED <monotonic ns> lines ──► orchestrator
//!      actix-cpg: this executable, role elect-member (Election on the node's daemon)
//!      etcd:      this executable, role etcd-campaign (lease + keepalive + campaign,
//!                 on the node's own etcd member)
//!    t0 = CLOCK_MONOTONIC ─► fault on the leader's node ─► first ELECTED of another node
//!    sample = that line's time − t0;  then the node is repaired and a fresh member starts there
//!  table: p50 / p99 per (fault, system), and the ratio etcd / actix-cpg
//! ```
//!
//! Rules:
//!
//! 1. A round's sample runs from just before the fault (the orchestrator
//!    reads `CLOCK_MONOTONIC` right before it acts) to the moment a member
//!    on another node *observes* that it leads (it reads the same clock
//!    and prints it): `CLOCK_MONOTONIC` is one clock for every network
//!    namespace of the machine, so no pipe or scheduling delay of the
//!    orchestrator counts.
//! 2. The new leader is the first member on a node other than the faulted
//!    one that reports being elected at or after the fault
//!    ([`handover`]); the faulted node's own lines are ignored (a member
//!    cut off alone may still believe it leads).
//! 3. Faults ([`Fault`]): the leader's process SIGKILLed; the leader node's
//!    daemon SIGKILLed (corosync for actix-cpg, the node's etcd member for
//!    etcd); the leader node's link cut (its veth down: both corosync and
//!    etcd lose the node). After each round the node is repaired (daemon
//!    or member restarted, link restored and the membership whole again),
//!    its old member process killed and a fresh one started there, and,
//!    after a node loss, 3 s pass, so every round starts from three
//!    members, a leader and (etcd) a settled Raft leader.
//! 4. etcd's campaigners ask for a lease TTL of 1 s; etcd raises it to its
//!    minimum (`ceil(1.5 × election timeout)`, 2 s with the defaults),
//!    which the table states as granted. A campaigner sends a keepalive
//!    every TTL/3 (as etcd's own `concurrency.Session`).
//! 5. For a node loss on etcd, the table also counts the rounds where the
//!    lost node's member was the Raft leader (a Raft election comes first,
//!    and the new Raft leader extends every lease by an election timeout).
//! 6. Before each etcd round the two campaigners that do not lead are
//!    replaced by fresh ones (their campaign issued on a settled
//!    cluster). Without it a waiting campaign once stayed pending through
//!    a later round although its key was the only one left (after a link
//!    cut that took the Raft leader, with an earlier campaigner whose
//!    keepalive could stop for good: not shown to be etcd's doing), and
//!    the round never ended.
//! 7. Every process started is killed when its system's run ends, also on
//!    an error.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::etcd::{client_url, EtcdCluster, Fsync, NODES};
use crate::kv_load::{quantile, ROLE_ENV};

/// The helper role of an actix-cpg election member.
pub const ROLE_ELECT: &str = "elect-member";
/// The helper role of an etcd campaigner.
pub const ROLE_CAMPAIGN: &str = "etcd-campaign";

/// The lease TTL the campaigners ask for (rule 4): below etcd's minimum,
/// so etcd grants its smallest legal TTL.
pub const ASKED_TTL_S: i64 = 1;

/// The election name on etcd.
const ETCD_ELECTION: &str = "acpg-bench-leader";

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
/// machine, whatever its network namespace (rule 1).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Which system a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// actix-cpg's `Election`, one member per node.
    Acpg,
    /// etcd's election API, one campaigner per node on its own member.
    Etcd,
}

/// What happens to the leader's node (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the leader's process.
    ProcessKill,
    /// SIGKILL of the leader node's daemon: corosync, or the etcd member.
    DaemonKill,
    /// The leader node's link cut.
    LinkCut,
}

impl Fault {
    /// The option value naming the fault.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ProcessKill => "process",
            Fault::DaemonKill => "daemon",
            Fault::LinkCut => "link",
        }
    }

    /// The fault named `name`.
    pub fn parse(name: &str) -> Result<Fault, String> {
        match name {
            "process" => Ok(Fault::ProcessKill),
            "daemon" => Ok(Fault::DaemonKill),
            "link" => Ok(Fault::LinkCut),
            other => Err(format!("unknown fault {other:?} (process, daemon or link)")),
        }
    }

    /// What the fault is on each side, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Fault::ProcessKill => "leader process SIGKILLed",
            Fault::DaemonKill => {
                "leader node's daemon SIGKILLed (corosync / the node's etcd member)"
            }
            Fault::LinkCut => "leader node's link cut (veth down)",
        }
    }
}

/// An `ELECTED` line of a member process: `ELECTED <monotonic ns>`.
pub fn parse_elected(line: &str) -> Option<u64> {
    line.strip_prefix("ELECTED ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Rule 2: the hand-over time in ns, from a fault on `faulted` at
/// `fault_at` and the `(node, elected at)` reports seen since; `None`
/// while no other node leads.
pub fn handover(fault_at: u64, faulted: u32, elected: &[(u32, u64)]) -> Option<u64> {
    elected
        .iter()
        .filter(|(node, at)| *node != faulted && *at >= fault_at)
        .map(|(_, at)| at - fault_at)
        .min()
}

/// One (fault, system) series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The fault.
    pub fault: Fault,
    /// The system.
    pub system: System,
    /// Hand-over times, ns, one per round.
    pub samples: Vec<u64>,
    /// Rounds whose lost node held etcd's Raft leader (rule 5).
    pub raft_leader_lost: usize,
}

impl Series {
    /// The `q` quantile of the samples, ms.
    pub fn ms(&self, q: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort_unstable();
        quantile(&s, q) / 1e6
    }
}

/// What `--vs-etcd-failover` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Rounds per fault and system.
    pub rounds: usize,
}

/// One member process (rule 7: killed when dropped).
struct Member {
    id: u64,
    child: Child,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of a member process.
struct Said {
    id: u64,
    node: u32,
    line: String,
}

/// The member processes of one system, one per node, and their lines.
struct Fleet<'a> {
    exe: &'a Path,
    system: System,
    group: String,
    members: Vec<Option<Member>>,
    next_id: u64,
    tx: Sender<Said>,
    rx: Receiver<Said>,
    /// The node whose member reported `ELECTED` last.
    leader: Option<u32>,
    /// The lease TTL etcd granted (rule 4).
    granted_ttl: Option<i64>,
}

const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// The pause after repairing a lost node (rule 3).
const SETTLE: Duration = Duration::from_secs(3);

impl<'a> Fleet<'a> {
    fn new(exe: &'a Path, system: System) -> Fleet<'a> {
        let (tx, rx) = channel();
        Fleet {
            exe,
            system,
            group: format!("acpg-failover-{}", std::process::id()),
            members: (0..NODES).map(|_| None).collect(),
            next_id: 0,
            tx,
            rx,
            leader: None,
            granted_ttl: None,
        }
    }

    /// Starts a fresh member on `node` and waits until it is ready.
    fn spawn(&mut self, node: u32) -> Result<(), String> {
        self.kill(node);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("acpg-n{node}")])
            .arg(self.exe);
        match self.system {
            System::Acpg => cmd.arg(&self.group).env(ROLE_ENV, ROLE_ELECT),
            System::Etcd => cmd
                .arg(client_url(node))
                .arg(ASKED_TTL_S.to_string())
                .env(ROLE_ENV, ROLE_CAMPAIGN),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a member on node {node}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        self.next_id += 1;
        let id = self.next_id;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(Said { id, node, line }).is_err() {
                    break;
                }
            }
        });
        self.members[node as usize - 1] = Some(Member { id, child });
        let deadline = Instant::now() + ROUND_LIMIT;
        loop {
            let said = self.next(deadline)?;
            if said.id != id {
                continue;
            }
            if let Some(e) = said.line.strip_prefix("ERROR ") {
                return Err(format!("member on node {node}: {e}"));
            }
            if let Some(ttl) = said.line.strip_prefix("LEASE ") {
                self.granted_ttl = ttl.split_whitespace().nth(1).and_then(|t| t.parse().ok());
            }
            if said.line.starts_with("READY") {
                break;
            }
        }
        // The newcomer's view info (actix-cpg) or campaign key (etcd)
        // reaches the others before the next fault.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn kill(&mut self, node: u32) {
        self.members[node as usize - 1] = None;
        if self.leader == Some(node) {
            self.leader = None;
        }
    }

    /// The next line of a live member, keeping track of the leader.
    fn next(&mut self, deadline: Instant) -> Result<Said, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let said = match self.rx.recv_timeout(left) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => return Err("no answer in time".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("members gone".into()),
            };
            let live = self.members[said.node as usize - 1]
                .as_ref()
                .is_some_and(|m| m.id == said.id);
            if !live {
                continue;
            }
            if parse_elected(&said.line).is_some() {
                self.leader = Some(said.node);
            } else if said.line.starts_with("ERROR") {
                // It ends: no more a contender, nor the leader.
                eprintln!("failover: member on node {}: {}", said.node, said.line);
                self.kill(said.node);
            } else if said.line.starts_with("RETRY") {
                eprintln!("failover: member on node {}: {}", said.node, said.line);
            }
            return Ok(said);
        }
    }

    /// Waits until some member leads; its node.
    fn wait_leader(&mut self) -> Result<u32, String> {
        let deadline = Instant::now() + ROUND_LIMIT;
        while self.leader.is_none() {
            self.next(deadline)?;
        }
        self.leader.ok_or_else(|| "no leader".into())
    }
}

pub(crate) fn cluster_sh(args: &[&str]) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cluster.sh {}` failed", args.join(" ")))
    }
}

/// The pid of node `n`'s corosync daemon, from the pid file
/// `scripts/cluster.sh` keeps.
fn corosync_pid(n: u32) -> Result<i32, String> {
    let dir = std::env::var("ACPG_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/actix-cpg-cluster".into());
    let file = format!("{dir}/n{n}/corosync.pid");
    std::fs::read_to_string(&file)
        .map_err(|e| format!("{file}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{file}: {e}"))
}

/// SIGKILLs node `n`'s corosync daemon.
pub fn kill_corosync(n: u32) -> Result<(), String> {
    let pid = corosync_pid(n)?;
    // SAFETY: kill(2) with a pid read from the cluster's pid file and a
    // valid signal number; it touches no memory of this process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!("cannot kill corosync {pid} of node {n}"));
    }
    Ok(())
}

/// Waits until every node's corosync sees all three nodes.
pub fn wait_whole() -> Result<(), String> {
    for n in 1..=NODES {
        cluster_sh(&["wait-members", "3", &n.to_string()])?;
    }
    Ok(())
}

pub(crate) fn link(node: u32, up: bool) -> Result<(), String> {
    let status = Command::new("ip")
        .args(["-n", "acpg-hub", "link", "set", &format!("acpg-v{node}")])
        .arg(if up { "up" } else { "down" })
        .status()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cannot set node {node}'s link"))
    }
}

/// One round: the fault on the leader's node, the hand-over time (ns),
/// then the repair (rule 3); and whether etcd's Raft leader was lost.
fn round(
    fleet: &mut Fleet,
    mut etcd: Option<&mut EtcdCluster>,
    fault: Fault,
) -> Result<(u64, bool), String> {
    let mut faulted = fleet.wait_leader()?;
    if fleet.system == System::Etcd {
        // Rule 6: fresh contenders.
        for node in (1..=NODES).filter(|n| *n != faulted) {
            fleet.spawn(node)?;
        }
        faulted = fleet.wait_leader()?;
    }
    let raft_lost = match (etcd.as_deref(), fault) {
        (Some(e), Fault::DaemonKill | Fault::LinkCut) => e.raft_leader() == Some(faulted),
        _ => false,
    };
    let t0 = mono_ns();
    match fault {
        Fault::ProcessKill => fleet.kill(faulted),
        Fault::DaemonKill => match etcd.as_deref_mut() {
            None => kill_corosync(faulted)?,
            Some(e) => e.kill(faulted),
        },
        Fault::LinkCut => link(faulted, false)?,
    }
    let deadline = Instant::now() + ROUND_LIMIT;
    let mut elected = Vec::new();
    let (took, new_leader) = loop {
        let said = fleet.next(deadline).map_err(|e| {
            let state = etcd
                .as_deref()
                .map(|c| c.diagnose(faulted, ETCD_ELECTION))
                .unwrap_or_default();
            format!(
                "no new leader after the {} fault of node {faulted}: {e}\n{state}",
                fault.name()
            )
        })?;
        if let Some(at) = parse_elected(&said.line) {
            elected.push((said.node, at));
            if let Some(took) = handover(t0, faulted, &elected) {
                break (took, said.node);
            }
        }
    };
    // Repair (rule 3). The faulted node's member may have said it leads
    // alone meanwhile; the leader is the one that took over.
    fleet.kill(faulted);
    fleet.leader = Some(new_leader);
    match fault {
        Fault::ProcessKill => {}
        Fault::DaemonKill => match etcd.as_deref_mut() {
            None => cluster_sh(&["start-node", &faulted.to_string()])?,
            Some(e) => {
                e.restart(faulted)?;
                e.wait_healthy(ROUND_LIMIT)?;
            }
        },
        Fault::LinkCut => {
            link(faulted, true)?;
            wait_whole()?;
            if let Some(e) = etcd {
                e.wait_healthy(ROUND_LIMIT)?;
            }
        }
    }
    fleet.spawn(faulted)?;
    if fault != Fault::ProcessKill {
        // A member back from a cut or a restart may still start an
        // election (etcd 3.4 runs without pre-vote by default): let it
        // happen before the next round's fault.
        std::thread::sleep(SETTLE);
    }
    Ok((took, raft_lost))
}

/// Runs `plan` for one system: members on the three nodes, then every
/// fault's rounds.
fn run_system(
    exe: &Path,
    system: System,
    plan: &Plan,
) -> Result<(Vec<Series>, Option<i64>), String> {
    let mut etcd = match system {
        System::Acpg => None,
        System::Etcd => Some(EtcdCluster::start(Fsync::On)?),
    };
    let mut fleet = Fleet::new(exe, system);
    for node in 1..=NODES {
        fleet.spawn(node)?;
    }
    let mut out = Vec::new();
    for &fault in &plan.faults {
        let mut series = Series {
            fault,
            system,
            samples: Vec::new(),
            raft_leader_lost: 0,
        };
        for r in 0..plan.rounds {
            let (took, raft_lost) = round(&mut fleet, etcd.as_mut(), fault)?;
            eprintln!(
                "failover: {system:?} {} round {}: {:.1} ms{}",
                fault.name(),
                r + 1,
                took as f64 / 1e6,
                if raft_lost { " (Raft leader lost)" } else { "" }
            );
            series.samples.push(took);
            series.raft_leader_lost += usize::from(raft_lost);
        }
        out.push(series);
    }
    Ok((out, fleet.granted_ttl))
}

/// What a run measured: every series, and the lease TTL etcd granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// actix-cpg's series then etcd's, each in the plan's fault order.
    pub series: Vec<Series>,
    /// The TTL etcd granted for [`ASKED_TTL_S`] (rule 4), s.
    pub granted_ttl: Option<i64>,
}

/// Runs `plan` on the test cluster: actix-cpg first, then etcd (never
/// both at once), with helper processes of the executable `exe`.
pub fn run(exe: &Path, plan: &Plan) -> Result<Outcome, String> {
    crate::bench::cluster_up()?;
    let (mut series, _) = run_system(exe, System::Acpg, plan)?;
    let (etcd, granted_ttl) = run_system(exe, System::Etcd, plan)?;
    series.extend(etcd);
    Ok(Outcome {
        series,
        granted_ttl,
    })
}

/// The table of `outcome` in Markdown: per fault, both systems' p50 / p99
/// and the ratio etcd / actix-cpg (above 1: actix-cpg is faster).
pub fn table(outcome: &Outcome) -> String {
    let mut out = String::new();
    out.push_str("| fault | rounds | actix-cpg p50 ms | p99 ms | etcd p50 ms | p99 ms | etcd / actix-cpg p50 | p99 | etcd rounds that lost the Raft leader |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let acpg = outcome.series.iter().filter(|s| s.system == System::Acpg);
    for a in acpg {
        let Some(e) = outcome
            .series
            .iter()
            .find(|s| s.system == System::Etcd && s.fault == a.fault)
        else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {} |\n",
            a.fault.label(),
            a.samples.len(),
            a.ms(0.5),
            a.ms(0.99),
            e.ms(0.5),
            e.ms(0.99),
            e.ms(0.5) / a.ms(0.5).max(1e-9),
            e.ms(0.99) / a.ms(0.99).max(1e-9),
            if a.fault == Fault::ProcessKill {
                "-".to_string()
            } else {
                format!("{} of {}", e.raft_leader_lost, e.samples.len())
            },
        ));
    }
    out
}

/// The actix-cpg member (role `elect-member`): `GROUP`. Prints `READY
/// member`, then `ELECTED epoch <monotonic ns>` whenever it is elected.
#[cfg(feature = "corosync")]
pub fn elect_main(args: &[String]) -> i32 {
    use actix_cpg::transport::corosync::Corosync;
    use actix_cpg::{
        Election, ElectionConfig, ElectionEvent, GroupName, Transport, GROUP_ELECTION,
    };
    let run = async {
        let group = GroupName::new(args.first().ok_or("usage: elect-member GROUP")?.clone())
            .map_err(|e| e.to_string())?;
        let conn = Corosync::new().join(&group).map_err(|e| e.to_string())?;
        let election = Election::start(conn, ElectionConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut events = election.subscribe();
        println!("READY {}", election.local());
        // Elected before the subscription: the event is gone, the state is not.
        if let Some(epoch) = election.is_leader(GROUP_ELECTION) {
            println!("ELECTED {} {epoch}", mono_ns());
        }
        loop {
            match events.recv().await {
                Ok(ElectionEvent::Elected { name, epoch }) if name == GROUP_ELECTION => {
                    println!("ELECTED {} {epoch}", mono_ns());
                }
                Ok(ElectionEvent::Closed { error }) => return Err(format!("closed: {error}")),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return Err("election gone".to_string()),
            }
        }
    };
    match actix::System::new().block_on(run) {
        Ok(()) => 0,
        Err(e) => {
            println!("ERROR {e}");
            1
        }
    }
}

/// Without the `corosync` feature there is no member to be.
#[cfg(not(feature = "corosync"))]
pub fn elect_main(_args: &[String]) -> i32 {
    println!("ERROR elect-member needs a build with the `corosync` feature");
    1
}

/// The etcd campaigner (role `etcd-campaign`): `ENDPOINT TTL`. Grants a
/// lease, keeps it alive, prints `LEASE id ttl` and `READY`, campaigns
/// (again after a failed campaign, saying `RETRY why`), and prints
/// `ELECTED <monotonic ns>` when its campaign returns (rule 4).
#[cfg(feature = "etcd")]
pub fn campaign_main(args: &[String]) -> i32 {
    let run = async {
        let [endpoint, ttl] = args else {
            return Err("usage: etcd-campaign ENDPOINT TTL".to_string());
        };
        let ttl: i64 = ttl.parse().map_err(|_| format!("bad TTL {ttl:?}"))?;
        let options =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let mut client = etcd_client::Client::connect([endpoint], Some(options))
            .await
            .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        let (id, granted) = (lease.id(), lease.ttl());
        let period = Duration::from_millis((granted.max(1) * 1000 / 3) as u64);
        let mut keeping = client.clone();
        tokio::spawn(async move {
            // As etcd's `concurrency.Session`: keep the lease alive, opening
            // the stream again after an error, until etcd says it is gone.
            loop {
                let Ok((mut keeper, mut stream)) = keeping.lease_keep_alive(id).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                loop {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    // An answer that does not come (a member without a
                    // Raft leader holds it) must not stop the keepalives:
                    // after one period the stream is opened again.
                    match tokio::time::timeout(period, stream.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() <= 0 => {
                            println!("ERROR lease {id} expired");
                            std::process::exit(1);
                        }
                        Ok(Ok(Some(_))) => tokio::time::sleep(period).await,
                        Ok(Ok(None) | Err(_)) | Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        println!("LEASE {id} {granted}");
        println!("READY");
        // A campaign cut short (its member lost the Raft leader, say) is
        // made again, as a user's election loop would.
        while let Err(e) = client
            .campaign(ETCD_ELECTION, endpoint.as_bytes(), id)
            .await
        {
            println!("RETRY campaign: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("ELECTED {}", mono_ns());
        std::future::pending::<()>().await;
        Ok(())
    };
    let runtime = match crate::agent_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run) {
        Ok(()) => 0,
        Err(e) => {
            println!("ERROR {e}");
            1
        }
    }
}

/// Without the `etcd` feature there is no campaigner to be.
#[cfg(not(feature = "etcd"))]
pub fn campaign_main(_args: &[String]) -> i32 {
    println!("ERROR etcd-campaign needs a build with the `etcd` feature");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_leader_is_the_first_other_node_elected_after_the_fault() {
        // Node 1 led and was faulted at t = 1000; node 1 cut off alone
        // still says it leads; node 3 leads first.
        let seen = [(1, 900), (1, 1500), (3, 4000), (2, 5000)];
        assert_eq!(handover(1000, 1, &seen), Some(3000));
        assert_eq!(handover(1000, 1, &seen[..2]), None);
        // A line from before the fault is not a hand-over.
        assert_eq!(handover(1000, 1, &[(2, 999)]), None);
    }

    #[test]
    fn elected_lines_carry_the_monotonic_time_first() {
        assert_eq!(parse_elected("ELECTED 123456 7"), Some(123456));
        assert_eq!(parse_elected("ELECTED 99"), Some(99));
        assert_eq!(parse_elected("ELECTED"), None);
        assert_eq!(parse_elected("READY n1"), None);
    }

    #[test]
    fn faults_are_named_both_ways() {
        for f in [Fault::ProcessKill, Fault::DaemonKill, Fault::LinkCut] {
            assert_eq!(Fault::parse(f.name()), Ok(f));
        }
        assert!(Fault::parse("power").is_err());
    }

    #[test]
    fn the_table_gives_etcd_over_actix_cpg() {
        let series = |system, ms: u64| Series {
            fault: Fault::ProcessKill,
            system,
            samples: vec![ms * 1_000_000; 20],
            raft_leader_lost: 0,
        };
        let outcome = Outcome {
            series: vec![series(System::Acpg, 2), series(System::Etcd, 2000)],
            granted_ttl: Some(2),
        };
        let text = table(&outcome);
        assert!(
            text.contains("| 2.00 | 2.00 | 2000 | 2000 | 1000.00 | 1000.00 | - |"),
            "{text}"
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
    }
}
