//! Smoke tests of the corosync backend against a live 3-node cluster.
//!
//! ```text
//! scripts/cluster.sh up
//! ACPG_CLUSTER=1 cargo test --features corosync --test integration corosync_smoke::
//! scripts/cluster.sh down
//! ```
//!
//! A CPG client must run inside its node's network namespace (libqb IPC uses
//! abstract unix sockets, which belong to the namespace), so each test starts
//! member processes of this same test binary with
//! `ip netns exec acpg-nN <this exe> corosync_smoke::child_process_entry --exact`, tells them
//! their role through the environment, and reads what they see as `ACPG …`
//! lines on their stdout. Every process and namespace a test starts, it
//! stops (see the `Drop` impls).
#![cfg(feature = "corosync")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_cpg::transport::corosync::Corosync;
use actix_cpg::transport::{
    next_event, Connection, GroupName, Member, MemberChange, Transport, TransportError,
    TransportEvent,
};

const ROLE: &str = "ACPG_SMOKE_ROLE";
const GROUP: &str = "ACPG_SMOKE_GROUP";
const COUNT: &str = "ACPG_SMOKE_COUNT";
const PEERS: &str = "ACPG_SMOKE_PEERS";
const TAG: &str = "ACPG_SMOKE_TAG";
/// Own messages a member keeps in flight.
const WINDOW: usize = 4;

/// The cluster tests change shared state (they kill daemons), so they run
/// one at a time even though libtest runs tests on parallel threads.
static CLUSTER: Mutex<()> = Mutex::new(());

fn cluster_enabled() -> bool {
    if std::env::var("ACPG_CLUSTER").as_deref() == Ok("1") {
        true
    } else {
        println!("skipped: no cluster (set ACPG_CLUSTER=1 after scripts/cluster.sh up)");
        false
    }
}

fn cluster_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

fn cluster_sh(args: &[&str]) {
    let status = Command::new(cluster_script())
        .args(args)
        .status()
        .expect("run scripts/cluster.sh");
    assert!(
        status.success(),
        "scripts/cluster.sh {args:?} failed: {status}"
    );
}

fn group_name(test: &str) -> String {
    format!("acpg-smoke-{}-{test}", std::process::id())
}

// ---- the parent side: member processes ------------------------------------

/// A member process running `child_process_entry` in a network namespace.
/// Killed (and reaped) on drop.
struct Proc {
    name: String,
    child: std::process::Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &str, netns: &str, env: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(exe)
            .args([
                "corosync_smoke::child_process_entry",
                "--exact",
                "--nocapture",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ip netns exec");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test child_process_entry ... " in front.
                if let Some(at) = line.find("ACPG ") {
                    let rest = &line[at + "ACPG ".len()..];
                    eprintln!("[{tag}] {rest}");
                    if tx.send(rest.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `pred`; panics with what was seen on timeout.
    fn expect(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} within {timeout:?}; saw {:#?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited before {what}; saw {:#?}", self.name, self.seen)
                }
            }
        }
    }

    /// The member as CPG names it: `ip netns exec` execs, so the child's pid
    /// is the member's pid.
    fn member(&self, node: u32) -> String {
        format!("{node}:{}", self.child.id())
    }

    fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A scratch network namespace with nothing in it; deleted on drop.
struct EmptyNetns(String);

impl EmptyNetns {
    fn create() -> EmptyNetns {
        let name = format!("acpg-empty-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {name} failed (root needed)");
        EmptyNetns(name)
    }
}

impl Drop for EmptyNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Brings a node's daemon back on drop, so a failed fault test does not
/// leave the cluster degraded for the next one.
struct RestartNodeOnDrop(&'static str);

impl Drop for RestartNodeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(cluster_script())
            .args(["start-node", self.0])
            .status();
    }
}

fn member_env(group: &str, count: usize, peers: usize, tag: &str) -> Vec<(&'static str, String)> {
    vec![
        (ROLE, "member".into()),
        (GROUP, group.into()),
        (COUNT, count.to_string()),
        (PEERS, peers.to_string()),
        (TAG, tag.into()),
    ]
}

fn deliveries(p: &Proc) -> Vec<String> {
    p.seen
        .iter()
        .filter_map(|l| l.strip_prefix("DELIVER "))
        .map(str::to_string)
        .collect()
}

// ---- the tests -------------------------------------------------------------

#[test]
fn two_members_on_different_nodes_see_the_same_order() {
    if !cluster_enabled() {
        return;
    }
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let group = group_name("order");
    const N: usize = 200;
    let mut a = Proc::spawn("n1", "acpg-n1", &member_env(&group, N, 2, "a"));
    let mut b = Proc::spawn("n2", "acpg-n2", &member_env(&group, N, 2, "b"));
    let timeout = Duration::from_secs(60);
    a.expect("DONE", timeout, |l| l == "DONE");
    b.expect("DONE", timeout, |l| l == "DONE");
    a.wait_success(Duration::from_secs(10));
    b.wait_success(Duration::from_secs(10));

    let (ma, mb) = (a.member(1), b.member(2));
    let (da, db) = (deliveries(&a), deliveries(&b));
    assert_eq!(da.len(), 2 * N, "n1 got {} deliveries", da.len());
    assert_eq!(da, db, "the two members saw different orders");

    // Self-delivery, in sending order, under the sender's own member id.
    for (member, tag) in [(&ma, "a"), (&mb, "b")] {
        let own: Vec<&String> = da
            .iter()
            .filter(|d| d.starts_with(&format!("{member} {tag}-")))
            .collect();
        let expected: Vec<String> = (0..N).map(|i| format!("{member} {tag}-{i}")).collect();
        assert_eq!(
            own,
            expected.iter().collect::<Vec<_>>(),
            "{tag}'s own messages"
        );
    }
    // The two senders really interleaved (otherwise the order check is weak).
    let switches = da
        .windows(2)
        .filter(|w| w[0].split(' ').next() != w[1].split(' ').next())
        .count();
    eprintln!(
        "order: {} deliveries, sender switched {switches} times",
        da.len()
    );

    // Whoever left second saw the first leave cleanly.
    let saw_leave = |p: &Proc, other: &str| {
        p.seen
            .iter()
            .any(|l| l.starts_with("CONFCHG") && l.contains(&format!("left={other}:Leave")))
    };
    assert!(
        saw_leave(&a, &mb) || saw_leave(&b, &ma),
        "neither member saw the other leave with Reason::Leave"
    );
    // Each member's own leave ended its stream with Closed, twice, and
    // was the last event it saw.
    for p in [&a, &b] {
        assert!(p.seen.iter().any(|l| l == "TOOLARGE ok"), "{}", p.name);
        let closed = p
            .seen
            .iter()
            .position(|l| l.starts_with("CLOSED "))
            .unwrap();
        let own = p.member(if p.name == "n1" { 1 } else { 2 });
        assert!(
            p.seen[closed - 1].starts_with("CONFCHG")
                && p.seen[closed - 1].ends_with(&format!("left={own}:Leave")),
            "{}: the event before Closed was {:?}",
            p.name,
            p.seen[closed - 1]
        );
        assert!(
            p.seen.iter().any(|l| l.starts_with("CLOSED ")),
            "{}",
            p.name
        );
        assert!(
            p.seen.iter().any(|l| l.starts_with("CLOSED-AGAIN ")),
            "{}",
            p.name
        );
    }
}

#[test]
fn join_without_a_daemon_is_daemon_unavailable() {
    if !cluster_enabled() {
        return;
    }
    let netns = EmptyNetns::create();
    let mut p = Proc::spawn("empty", &netns.0, &[(ROLE, "unavailable".into())]);
    let line = p.expect("RESULT", Duration::from_secs(10), |l| {
        l.starts_with("RESULT ")
    });
    p.wait_success(Duration::from_secs(10));
    assert!(line.contains("DaemonUnavailable"), "{line}");
    let ms: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ms < 2000, "join took {ms} ms to fail");
}

#[test]
fn faults_give_procdown_nodedown_and_closed() {
    if !cluster_enabled() {
        return;
    }
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let group = group_name("faults");
    let mut observer = Proc::spawn("obs@n1", "acpg-n1", &member_env(&group, 0, 0, "o"));
    let mut doomed = Proc::spawn("doomed@n2", "acpg-n2", &member_env(&group, 0, 0, "d"));
    let mut victim = Proc::spawn("victim@n3", "acpg-n3", &member_env(&group, 0, 0, "v"));
    let three = Duration::from_secs(30);
    for p in [&mut observer, &mut doomed, &mut victim] {
        p.expect("a 3-member view", three, |l| {
            l.starts_with("CONFCHG members=")
                && l["CONFCHG members=".len()..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .split(',')
                    .count()
                    == 3
        });
    }
    let (doomed_id, victim_id) = (doomed.member(2), victim.member(3));

    // A killed client: PROCDOWN at the others, within milliseconds.
    let t = Instant::now();
    doomed.kill9();
    observer.expect("PROCDOWN", three, |l| {
        l.contains(&format!("left={doomed_id}:ProcDown"))
    });
    eprintln!(
        "kill -9 client -> PROCDOWN at another node: {:?}",
        t.elapsed()
    );

    // A killed daemon: NODEDOWN at the others, Closed at its own clients.
    let _restore = RestartNodeOnDrop("3");
    let t = Instant::now();
    cluster_sh(&["kill-daemon", "3"]);
    victim.expect("CLOSED", three, |l| l.starts_with("CLOSED "));
    eprintln!("kill -9 daemon -> Closed at its client: {:?}", t.elapsed());
    victim.expect("CLOSED-AGAIN", three, |l| l.starts_with("CLOSED-AGAIN "));
    observer.expect("NODEDOWN", three, |l| {
        l.contains(&format!("left={victim_id}:NodeDown"))
    });
    eprintln!(
        "kill -9 daemon -> NODEDOWN at another node: {:?}",
        t.elapsed()
    );
    victim.wait_success(Duration::from_secs(10));
}

#[test]
fn join_in_a_runtime_without_io_is_a_clear_error() {
    if !cluster_enabled() {
        return;
    }
    let mut p = Proc::spawn("noio@n1", "acpg-n1", &[(ROLE, "noio".into())]);
    let line = p.expect("RESULT", Duration::from_secs(10), |l| {
        l.starts_with("RESULT ")
    });
    p.wait_success(Duration::from_secs(10));
    assert!(line.contains("I/O disabled"), "{line}");
}

// ---- the child side --------------------------------------------------------

/// Not a test by itself: the entry point of the member processes the tests
/// above start. Without the role variable it returns at once.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    if role == "noio" {
        // tokio panics when asked to register an fd without its I/O driver;
        // the library catches that and returns an error, which is what this
        // role checks. The default hook would print the caught panic (and a
        // backtrace) into a green run.
        std::panic::set_hook(Box::new(|_| {}));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        let result = rt.block_on(async { Corosync::new().join(&GroupName::new("noio").unwrap()) });
        println!("ACPG RESULT {:?}", result.map(|_| "joined"));
        println!("ACPG DONE");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = rt.block_on(async {
        match role.as_str() {
            "member" => tokio::time::timeout(Duration::from_secs(120), member())
                .await
                .unwrap_or_else(|_| Err("member timed out".into())),
            "unavailable" => unavailable(),
            other => Err(format!("unknown role {other}")),
        }
    });
    if let Err(e) = outcome {
        println!("ACPG ERROR {e}");
        panic!("child failed: {e}");
    }
    println!("ACPG DONE");
}

fn env_usize(key: &str) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn id(m: &Member) -> String {
    format!("{}:{}", m.node.0, m.pid)
}

fn changes(list: &[MemberChange]) -> String {
    list.iter()
        .map(|c| format!("{}:{:?}", id(&c.member), c.reason))
        .collect::<Vec<_>>()
        .join(",")
}

/// Joins, sends `COUNT` messages once `PEERS` members are in the view, and
/// leaves once it has delivered `COUNT * PEERS`. With `COUNT` 0 it only
/// prints events until the stream closes (or it is killed).
///
/// It keeps [`WINDOW`] of its own messages in flight and sends the next one
/// when one of its own comes back, so the senders' messages interleave.
async fn member() -> Result<(), String> {
    let group = GroupName::new(std::env::var(GROUP).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (count, peers) = (env_usize(COUNT), env_usize(PEERS));
    let tag = std::env::var(TAG).unwrap_or_default();
    let mut conn = Corosync::new().join(&group).map_err(|e| e.to_string())?;
    let me = conn.local();
    println!(
        "ACPG JOINED {} max={} flow={:?}",
        id(&me),
        conn.max_message_size(),
        conn.flow_control()
    );
    let mut started = false;
    let mut next = 0;
    let mut delivered = 0;
    loop {
        match next_event(&mut conn).await {
            Ok(TransportEvent::Deliver { from, bytes }) => {
                println!(
                    "ACPG DELIVER {} {}",
                    id(&from),
                    String::from_utf8_lossy(&bytes)
                );
                delivered += 1;
                if from == me && next < count {
                    send(&mut conn, format!("{tag}-{next}").as_bytes()).await?;
                    next += 1;
                }
                if count > 0 && delivered == count * peers {
                    conn.leave().map_err(|e| format!("leave: {e}"))?;
                }
            }
            Ok(TransportEvent::ConfChg {
                members,
                joined,
                left,
            }) => {
                let ids: Vec<String> = members.iter().map(id).collect();
                println!(
                    "ACPG CONFCHG members={} joined={} left={}",
                    ids.join(","),
                    changes(&joined),
                    changes(&left)
                );
                if count > 0 && !started && members.len() >= peers {
                    started = true;
                    let too_big = vec![0u8; conn.max_message_size() + 1];
                    match conn.mcast(&too_big) {
                        Err(TransportError::MessageTooLarge { .. }) => println!("ACPG TOOLARGE ok"),
                        other => return Err(format!("oversized mcast gave {other:?}")),
                    }
                    let view = conn.members().map_err(|e| format!("members: {e}"))?;
                    println!(
                        "ACPG MEMBERS {}",
                        view.iter().map(id).collect::<Vec<_>>().join(",")
                    );
                    while next < count.min(WINDOW) {
                        send(&mut conn, format!("{tag}-{next}").as_bytes()).await?;
                        next += 1;
                    }
                }
            }
            Ok(TransportEvent::TotemConfChg { ring_id, nodes }) => {
                println!(
                    "ACPG TOTEM ring={}.{} nodes={nodes:?}",
                    ring_id.nodeid.0, ring_id.seq
                );
            }
            Ok(TransportEvent::Quorum(q)) => {
                println!(
                    "ACPG QUORUM quorate={} ring={}.{} nodes={:?}",
                    q.quorate, q.ring_id.nodeid.0, q.ring_id.seq, q.nodes
                );
            }
            Err(TransportError::Closed(why)) => {
                println!("ACPG CLOSED {why}");
                let again = next_event(&mut conn).await;
                println!("ACPG CLOSED-AGAIN {again:?}");
                return match again {
                    Err(TransportError::Closed(_)) => Ok(()),
                    other => Err(format!("after Closed, got {other:?}")),
                };
            }
            Err(e) => return Err(format!("poll_event: {e}")),
        }
    }
}

/// `mcast`, retrying under flow control (the smoke test sends little, so
/// a short sleep is enough; the library proper dispatches meanwhile).
async fn send(conn: &mut impl Connection, bytes: &[u8]) -> Result<(), String> {
    loop {
        match conn.mcast(bytes) {
            Ok(()) => return Ok(()),
            Err(TransportError::TryAgain) => {
                println!("ACPG TRYAGAIN");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(format!("mcast: {e}")),
        }
    }
}

fn unavailable() -> Result<(), String> {
    let t = Instant::now();
    let result = Corosync::new().join(&GroupName::new("nobody-home").unwrap());
    let ms = t.elapsed().as_millis();
    println!(
        "ACPG RESULT {:?} {ms}",
        result.as_ref().map(|_| "joined").map_err(|e| e.clone())
    );
    if let Err(e) = &result {
        println!("ACPG MESSAGE {e}");
    }
    Ok(())
}
