//! `acpg` on the real 3-node corosync cluster (`scripts/cluster.sh up`,
//! then `ACPG_CLUSTER=1`, as `scripts/test.sh` runs the workspace's tests;
//! skipped otherwise): three `cpg-agent` members run the conformance test
//! tree in the nodes' network namespaces; `acpg status` shows them and where
//! each child runs; one agent is SIGKILLed while `acpg watch` looks on, and
//! `acpg status` shows the children moved with larger fencing tokens; a
//! group nobody is in, and a namespace with no daemon, are refused.
//!
//! Election groups and replica groups the same way: three `rsm-agent elect`
//! members, `acpg status --election` shows the leader and its epoch, the
//! leader is SIGKILLed while `acpg watch --election` looks on, and the next
//! one leads with a greater epoch; three `rsm-agent kv` replicas take
//! writes, `acpg status --replica` shows each one's state id and that they
//! agree, one is SIGKILLed and leaves, and the two others still agree.
//!
//! `cpg-agent` and `rsm-agent` are the harness's binaries: `cargo test
//! --workspace --all-features` builds them next to `acpg` before any test
//! runs.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use actix_cpg::election::ElectionInspection;
use actix_cpg::group::GroupInspection;
use actix_cpg::replicated::ReplicaInspection;
use actix_cpg::{Member, Role, SlotStatus, GROUP_ELECTION};
use serde::de::DeserializeOwned;

/// Long enough for a member to be seen gone and its children restarted
/// (PROCDOWN comes within milliseconds); a bound, not a measurement.
const WAIT: Duration = Duration::from_secs(30);

/// The conformance test tree's worker slots (`actix_cpg_harness::TEST_TREE_CHILDREN`).
const SLOTS: usize = 6;

fn acpg() -> &'static str {
    env!("CARGO_BIN_EXE_acpg")
}

fn cpg_agent() -> PathBuf {
    let path = PathBuf::from(acpg()).with_file_name("cpg-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p actix-cpg-harness --features corosync \
         --bin cpg-agent` (`cargo test --workspace --all-features` does)",
        path.display()
    );
    path
}

fn rsm_agent() -> PathBuf {
    let path = PathBuf::from(acpg()).with_file_name("rsm-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p actix-cpg-harness --features corosync \
         --bin rsm-agent` (`cargo test --workspace --all-features` does)",
        path.display()
    );
    path
}

fn cluster_script() -> String {
    format!("{}/../scripts/cluster.sh", env!("CARGO_MANIFEST_DIR"))
}

/// Whether the test cluster is up and this run asked for it.
fn cluster_up() -> bool {
    if std::env::var("ACPG_CLUSTER").as_deref() != Ok("1") {
        println!("skipped: no cluster (set ACPG_CLUSTER=1 after scripts/cluster.sh up)");
        return false;
    }
    let status = Command::new("bash")
        .arg(cluster_script())
        .arg("status")
        .stdout(Stdio::null())
        .status()
        .expect("run cluster.sh status");
    assert!(
        status.success(),
        "ACPG_CLUSTER=1 but the cluster is not healthy"
    );
    true
}

/// A process started in a node's namespace, killed when dropped.
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    fn start(node: u32, program: &str, args: &[&str]) -> Spawned {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{node}"), program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn cmd(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the agent");
    }

    /// The next line that satisfies `pred` (earlier ones are kept in
    /// `seen`).
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    assert!(!line.starts_with("ERROR"), "it reported {line:?}");
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {WAIT:?}; it said {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("it ended before {what}; it said {:?}", self.seen)
                }
            }
        }
    }

    /// Reads lines until those read so far satisfy `pred`.
    fn until(&mut self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("never {what}; it said {:?}", self.seen),
            }
        }
    }

    /// SIGKILL, and wait for it to go.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent of the conformance suite, a member running the test tree.
fn agent(node: u32, group: &str) -> (Spawned, Member) {
    let agent_path = cpg_agent();
    let mut agent = Spawned::start(
        node,
        agent_path.to_str().expect("utf-8 path"),
        &[group, "group"],
    );
    let ready = agent.expect("READY", |l| l.starts_with("READY "));
    let member = parse_member(&ready["READY ".len()..]);
    agent.cmd("tree");
    agent.expect("TREE ok", |l| l == "TREE ok");
    (agent, member)
}

fn parse_member(s: &str) -> Member {
    let (node, pid) = s.split_once('/').expect("node/pid");
    let node = node
        .strip_prefix("node")
        .expect("nodeN")
        .parse()
        .expect("node id");
    Member::new(node, pid.parse().expect("pid"))
}

/// `acpg ARGS` in node `node`'s namespace, to its end.
fn run_acpg(node: u32, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &format!("acpg-n{node}"), acpg()])
        .args(args)
        .output()
        .expect("run acpg")
}

/// `acpg status --json GROUP` from `node` until `pred` holds.
fn status_until(
    node: u32,
    group: &str,
    what: &str,
    pred: impl Fn(&GroupInspection) -> bool,
) -> GroupInspection {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run_acpg(node, &["status", "--json", group]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "acpg status failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: GroupInspection =
            serde_json::from_str(&stdout).expect("status --json reads back");
        if pred(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "never {what}; last {seen:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `acpg status GROUP` as text, printed for the record.
fn show_status(node: u32, group: &str) -> String {
    let out = run_acpg(node, &["status", group]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    println!("$ acpg status {group}\n{text}");
    text
}

fn participants(seen: &GroupInspection) -> Vec<Member> {
    seen.members
        .iter()
        .filter(|m| m.role == Role::Participant)
        .map(|m| m.member)
        .collect()
}

fn all_running_on(seen: &GroupInspection, hosts: &[Member]) -> bool {
    let slots: Vec<_> = seen.slots().collect();
    slots.len() == SLOTS
        && slots
            .iter()
            .all(|s| s.host().is_some_and(|h| hosts.contains(&h)))
}

#[test]
fn status_shows_the_members_and_the_children_moving_when_a_member_is_killed() {
    if !cluster_up() {
        return;
    }
    let group = format!("acpg-status-{}", std::process::id());
    let mut agents = Vec::new();
    for node in 1..=3 {
        agents.push(agent(node, &group));
    }
    let all: Vec<Member> = agents.iter().map(|(_, m)| *m).collect();
    let before = status_until(1, &group, "every slot running on the agents", |s| {
        participants(s) == all && all_running_on(s, &all)
    });
    assert!(before.quorum.quorate, "a quorate 3-node cluster");
    assert_eq!(before.trees[0].hosts, all);
    let text = show_status(1, &group);
    for m in &all {
        assert!(text.contains(&format!("  {m}  participant")), "{text}");
    }
    assert!(
        text.contains("tree conformance: supervised, 6 of 6 slots running"),
        "{text}"
    );

    // Kill the agent on node 3 while a watch looks on from node 2.
    let mut watch = Spawned::start(2, acpg(), &["watch", &group]);
    watch.expect("the watch's first line", |l| l.contains("watching group"));
    let victim = all[2];
    let moved: Vec<String> = before
        .slots()
        .filter(|s| s.host() == Some(victim))
        .map(|s| s.name.clone())
        .collect();
    agents[2].0.kill();
    let left = format!("{victim} left (process down)");
    watch.until("the victim leaving and its children restarting", |seen| {
        seen.iter().any(|l| l.contains(&left))
            && moved.iter().all(|name| {
                let restarted = format!(" {name} restarted on ");
                seen.iter().any(|l| l.contains(&restarted))
            })
    });
    let survivors = &all[..2];
    let after = status_until(1, &group, "every slot running on the survivors", |s| {
        participants(s) == survivors && all_running_on(s, survivors)
    });
    show_status(2, &group);
    let token = |status: &SlotStatus| match status {
        SlotStatus::Running { token, .. } => Some(*token),
        _ => None,
    };
    for (old, new) in before.slots().zip(after.slots()) {
        if old.host() == Some(victim) {
            assert!(
                token(&new.status) > token(&old.status),
                "{} moved with a larger fencing token: {:?} -> {:?}",
                old.name,
                old.status,
                new.status
            );
        }
    }
    // Ctrl-C ends the watch cleanly.
    let pid = watch.child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let status = watch.child.wait().expect("the watch ends");
    assert!(status.success(), "the watch exits 0 on Ctrl-C: {status}");
    println!(
        "$ acpg watch {group}\n{}",
        watch_lines(&mut watch).join("\n")
    );
}

fn watch_lines(watch: &mut Spawned) -> Vec<String> {
    while let Ok(line) = watch.lines.recv_timeout(Duration::from_millis(200)) {
        watch.seen.push(line);
    }
    watch.seen.clone()
}

#[test]
fn status_refuses_a_group_nobody_is_in_and_a_namespace_without_a_daemon() {
    if !cluster_up() {
        return;
    }
    let group = format!("acpg-nobody-{}", std::process::id());
    let out = run_acpg(1, &["status", &group]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("acpg: nobody is in group {group}\n")
    );

    // A network namespace of its own: no daemon's socket is reachable.
    let out = Command::new("unshare")
        .args(["--net", acpg(), "status", &group])
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "acpg: cannot join group {group}: corosync daemon not reachable"
        )),
        "{stderr}"
    );
}

/// An `rsm-agent` (`elect GROUP` or `kv GROUP`) on `node`, once ready.
fn rsm(node: u32, mode: &str, group: &str) -> (Spawned, Member) {
    let path = rsm_agent();
    let mut agent = Spawned::start(node, path.to_str().expect("utf-8 path"), &[mode, group]);
    let ready = agent.expect("READY", |l| l.starts_with("READY "));
    (agent, parse_member(&ready["READY ".len()..]))
}

/// `acpg status --json KIND GROUP` from `node` until `pred` holds.
fn kind_status_until<T: DeserializeOwned + std::fmt::Debug>(
    node: u32,
    kind: &str,
    group: &str,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run_acpg(node, &["status", "--json", kind, group]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "acpg status {kind} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: T = serde_json::from_str(&stdout).expect("status --json reads back");
        if pred(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "never {what}; last {seen:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `acpg status KIND GROUP` as text, printed for the record.
fn show_kind_status(node: u32, kind: &str, group: &str) -> String {
    let out = run_acpg(node, &["status", kind, group]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    println!("$ acpg status {kind} {group}\n{text}");
    text
}

fn interrupt(watch: &mut Spawned) {
    let pid = watch.child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let status = watch.child.wait().expect("the watch ends");
    assert!(status.success(), "the watch exits 0 on Ctrl-C: {status}");
}

#[test]
fn status_shows_the_election_leader_and_a_new_epoch_when_the_leader_is_killed() {
    if !cluster_up() {
        return;
    }
    let group = format!("acpg-elect-{}", std::process::id());
    let mut agents = Vec::new();
    for node in 1..=3 {
        agents.push(rsm(node, "elect", &group));
    }
    let all: Vec<Member> = agents.iter().map(|(_, m)| *m).collect();
    let participants = |s: &ElectionInspection| -> Vec<Member> {
        s.members
            .iter()
            .filter(|m| m.role == Role::Participant)
            .map(|m| m.member)
            .collect()
    };
    let before: ElectionInspection =
        kind_status_until(1, "--election", &group, "three members and a leader", |s| {
            let s: &ElectionInspection = s;
            participants(s) == all
                && s.election(GROUP_ELECTION)
                    .is_some_and(|e| e.leader.is_some())
        });
    let led = before.election(GROUP_ELECTION).expect("the group election");
    // The first to join is the most senior.
    assert_eq!(led.leader, Some(all[0]));
    assert_eq!(led.candidates, all);
    let text = show_kind_status(2, "--election", &group);
    assert!(
        text.contains(&format!("(group)  leader {}", all[0])),
        "{text}"
    );

    let mut watch = Spawned::start(3, acpg(), &["watch", "--election", &group]);
    watch.expect("the watch's first line", |l| l.contains("watching group"));
    agents[0].0.kill();
    let left = format!("{} left (process down)", all[0]);
    let next = format!("leader of the group election: {} (epoch ", all[1]);
    watch.until("the leader leaving and the next one leading", |seen| {
        seen.iter().any(|l| l.contains(&left)) && seen.iter().any(|l| l.contains(&next))
    });
    let after: ElectionInspection =
        kind_status_until(2, "--election", &group, "the next leader", |s| {
            let s: &ElectionInspection = s;
            participants(s) == all[1..]
                && s.election(GROUP_ELECTION)
                    .is_some_and(|e| e.leader == Some(all[1]))
        });
    let old = led.epoch.expect("an epoch");
    let new = after
        .election(GROUP_ELECTION)
        .unwrap()
        .epoch
        .expect("an epoch");
    assert!(new > old, "a greater epoch: {old} -> {new}");
    show_kind_status(2, "--election", &group);
    interrupt(&mut watch);
    println!(
        "$ acpg watch --election {group}\n{}",
        watch_lines(&mut watch).join("\n")
    );
}

#[test]
fn status_shows_the_replicas_agreeing_and_a_killed_replica_leaving() {
    if !cluster_up() {
        return;
    }
    let group = format!("acpg-kv-{}", std::process::id());
    let mut agents = Vec::new();
    for node in 1..=3 {
        agents.push(rsm(node, "kv", &group));
    }
    let all: Vec<Member> = agents.iter().map(|(_, m)| *m).collect();
    for (i, (agent, _)) in agents.iter_mut().enumerate() {
        agent.cmd(&format!("put key{i} value{i}"));
        agent.expect("OK", |l| l.starts_with("OK "));
    }
    let participants = |s: &ReplicaInspection| -> Vec<Member> {
        s.members
            .iter()
            .filter(|m| m.role == Role::Participant)
            .map(|m| m.member)
            .collect()
    };
    let before: ReplicaInspection = kind_status_until(
        1,
        "--replica",
        &group,
        "three replicas agreeing on three writes",
        |s| {
            let s: &ReplicaInspection = s;
            participants(s) == all
                && s.primary
                && s.agreement.agree
                && s.agreement
                    .states
                    .first()
                    .is_some_and(|x| x.state.applied == 3)
        },
    );
    assert_eq!(before.agreement.states.len(), 1);
    assert_eq!(before.agreement.states[0].members, all);
    assert_eq!(before.state.applied, 3, "acpg followed the history");
    let text = show_kind_status(2, "--replica", &group);
    assert!(
        text.contains("agree (3 participants at the same state)"),
        "{text}"
    );

    // The replica on node 3 is killed: it leaves, the others still agree
    // and take writes.
    agents[2].0.kill();
    agents[0].0.cmd("put after kill");
    agents[0].0.expect("OK", |l| l.starts_with("OK "));
    let after: ReplicaInspection =
        kind_status_until(1, "--replica", &group, "two replicas agreeing", |s| {
            let s: &ReplicaInspection = s;
            participants(s) == all[..2]
                && s.primary
                && s.agreement.agree
                && s.agreement
                    .states
                    .first()
                    .is_some_and(|x| x.state.applied == 4)
        });
    assert!(after.member(all[2]).is_none(), "the dead replica left");
    assert_eq!(after.state.applied, 4);
    let text = show_kind_status(2, "--replica", &group);
    assert!(!text.contains(&all[2].to_string()), "{text}");
}
