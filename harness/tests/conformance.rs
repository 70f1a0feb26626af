//! One conformance suite, two backends.
//!
//! Every scenario is written once against [`Backend`] and runs twice: on the
//! in-process `sim` cluster (always), and on the real 3-node corosync
//! cluster (with `--features corosync` and `ACPG_CLUSTER=1`, which
//! `scripts/test.sh` sets after `scripts/cluster.sh up`). Members are
//! conformance agents (`actix_cpg_harness::conformance`) driven by text lines: tasks in
//! this process on `sim`, `cpg-agent` processes in the nodes' network
//! namespaces on corosync.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix_cpg_harness::Mode;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Long enough for NODEDOWN (token 1000 ms ⇒ about 3.5 s) and a merge.
const WAIT: Duration = Duration::from_secs(60);

/// One running member.
struct Agent {
    member: String,
    tx: UnboundedSender<String>,
    rx: UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// An agent whose start has not been waited for.
    fn unready(tx: UnboundedSender<String>, rx: UnboundedReceiver<String>) -> Agent {
        Agent {
            member: String::new(),
            tx,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the agent is a member.
    async fn ready(mut self) -> Agent {
        let ready = self.expect("READY ").await;
        self.member = ready["READY ".len()..].to_owned();
        self
    }

    /// The first line the agent prints, which must be an error: it was
    /// never admitted.
    async fn refused(mut self) -> String {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(line)) if line.starts_with("ERROR ") => line,
            Ok(other) => panic!("expected a refusal, the agent said {other:?}"),
            Err(_) => panic!("the agent said nothing within {WAIT:?}"),
        }
    }

    /// Moves every line already printed into `seen`, without waiting.
    fn pump(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            assert!(
                !line.starts_with("ERROR"),
                "agent {} reported {line:?}",
                self.member
            );
            self.seen.push(line);
        }
    }

    fn cmd(&self, line: &str) {
        self.tx
            .send(line.to_owned())
            .unwrap_or_else(|_| panic!("agent {} is gone", self.member));
    }

    /// The next line (after those already matched) that satisfies `pred`.
    async fn expect_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with("ERROR") {
                        panic!("agent {} reported {line:?}", self.member);
                    }
                    if pred(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "agent {} ended while waiting for {what}; it said {:?}",
                    self.member, self.seen
                ),
                Err(_) => panic!(
                    "agent {} did not say {what} within {WAIT:?}; it said {:?}",
                    self.member, self.seen
                ),
            }
        }
    }

    async fn expect(&mut self, prefix: &str) -> String {
        self.expect_where(prefix, |l| l.starts_with(prefix)).await
    }

    /// Waits for a confchg whose view has `n` members.
    async fn expect_view_of(&mut self, n: usize) -> String {
        self.expect_where(&format!("a view of {n}"), |l| {
            l.starts_with("CONFCHG") && view_size(l) == n
        })
        .await
    }

    /// Asks for the digest until `count` deliveries are in.
    async fn digest_at(&mut self, count: u64) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.cmd("digest");
            let line = self.expect("DIGEST").await;
            let got: u64 = line
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(got <= count, "{} delivered {got} > {count}", self.member);
            if got == count {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} stuck at {got} of {count} deliveries",
                self.member
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks `cmd` until its answer satisfies `pred`.
    async fn poll(&mut self, cmd: &str, prefix: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.cmd(cmd);
            let line = self.expect(prefix).await;
            if pred(&line) {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never satisfied {cmd:?}; last {line:?}",
                self.member
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn view_size(confchg: &str) -> usize {
    confchg
        .split(' ')
        .find_map(|w| w.strip_prefix("members="))
        .map(|m| m.split(',').filter(|s| !s.is_empty()).count())
        .unwrap_or(0)
}

fn metric(line: &str, key: &str) -> u64 {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Where the members run.
trait Backend {
    /// Whether this backend's flow control is tight enough that a burst
    /// must meet `TRY_AGAIN` (the sim is configured so; a real daemon rarely
    /// says it for small messages).
    const FORCES_TRY_AGAIN: bool;

    async fn spawn(&mut self, node: u32, group: &str, mode: Mode) -> Agent {
        self.spawn_unready(node, group, mode).await.ready().await
    }
    /// Starts an agent without waiting for it to become a member.
    async fn spawn_unready(&mut self, node: u32, group: &str, mode: Mode) -> Agent;
    async fn kill(&mut self, agent: &Agent);
    async fn cut(&mut self, node: u32);
    async fn restore(&mut self, node: u32);
    /// The node's daemon dies (NODEDOWN for the others).
    async fn crash_node(&mut self, node: u32);
    /// The node's daemon runs again.
    async fn revive_node(&mut self, node: u32);
}

fn unique_group(scenario: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "acpg-conf-{scenario}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts agents on `nodes` one by one, each waiting until every earlier
/// one sees it, so no message is sent before the whole view exists.
async fn spawn_all<B: Backend>(b: &mut B, group: &str, mode: Mode, nodes: &[u32]) -> Vec<Agent> {
    let mut agents: Vec<Agent> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut agent = b.spawn(*node, group, mode).await;
        agent.expect_view_of(i + 1).await;
        for a in &mut agents {
            a.expect_view_of(i + 1).await;
        }
        agents.push(agent);
    }
    agents
}

// ---- scenarios --------------------------------------------------------------

/// Three members each send 1,000 messages at once; all three record the
/// same delivery sequence.
async fn total_order<B: Backend>(b: &mut B) {
    let group = unique_group("order");
    let mut agents = spawn_all(b, &group, Mode::Raw, &[1, 2, 3]).await;
    for a in &agents {
        a.cmd("send 1000");
    }
    for a in &mut agents {
        a.expect("SENT 1000").await;
    }
    let mut digests = Vec::new();
    for a in &mut agents {
        digests.push(a.digest_at(3000).await);
    }
    assert_eq!(
        digests[0], digests[1],
        "members 1 and 2 saw different orders"
    );
    assert_eq!(
        digests[0], digests[2],
        "members 1 and 3 saw different orders"
    );
}

/// A lone member receives its own message, attributed to itself.
async fn self_delivery<B: Backend>(b: &mut B) {
    let group = unique_group("self");
    let mut a = b.spawn(1, &group, Mode::Raw).await;
    a.expect_view_of(1).await;
    a.cmd("send 1");
    a.expect("SENT 1").await;
    let line = a.digest_at(1).await;
    // FNV-1a of (node, pid, "<member>#0"), as the agent computes it.
    let (node, pid) = a.member.split_once('/').expect("node/pid");
    let node: u32 = node.trim_start_matches("node").parse().expect("node id");
    let pid: u32 = pid.parse().expect("pid");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let payload = format!("{}#0", a.member);
    for b in node
        .to_le_bytes()
        .iter()
        .chain(pid.to_le_bytes().iter())
        .chain(payload.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    assert_eq!(line, format!("DIGEST 1 {h:016x}"));
}

/// JOIN, LEAVE and PROCDOWN, each seen with its reason by the survivor.
async fn join_leave_procdown<B: Backend>(b: &mut B) {
    let group = unique_group("reasons");
    let mut a = b.spawn(1, &group, Mode::Raw).await;
    a.expect_view_of(1).await;

    let mut x = b.spawn(2, &group, Mode::Raw).await;
    a.expect(&format!(
        "CONFCHG members={},{} joined={}:Join",
        a.member, x.member, x.member
    ))
    .await;
    x.cmd("leave");
    x.expect("LEFT").await;
    a.expect(&format!(
        "CONFCHG members={} joined= left={}:Leave",
        a.member, x.member
    ))
    .await;

    let y = b.spawn(3, &group, Mode::Raw).await;
    a.expect(&format!(
        "CONFCHG members={},{} joined={}:Join",
        a.member, y.member, y.member
    ))
    .await;
    b.kill(&y).await;
    a.expect(&format!(
        "CONFCHG members={} joined= left={}:ProcDown",
        a.member, y.member
    ))
    .await;
}

/// A node cut off: NODEDOWN on both sides; restored: NODEUP.
async fn nodedown_nodeup<B: Backend>(b: &mut B) {
    let group = unique_group("node");
    let mut agents = spawn_all(b, &group, Mode::Raw, &[1, 3]).await;
    let (a_member, c_member) = (agents[0].member.clone(), agents[1].member.clone());
    b.cut(3).await;
    agents[0]
        .expect(&format!(
            "CONFCHG members={a_member} joined= left={c_member}:NodeDown"
        ))
        .await;
    agents[1]
        .expect(&format!(
            "CONFCHG members={c_member} joined= left={a_member}:NodeDown"
        ))
        .await;
    b.restore(3).await;
    agents[0]
        .expect(&format!(
            "CONFCHG members={a_member},{c_member} joined={c_member}:NodeUp"
        ))
        .await;
    agents[1]
        .expect(&format!(
            "CONFCHG members={a_member},{c_member} joined={a_member}:NodeUp"
        ))
        .await;
}

/// Three members register the same name at once: exactly one wins, and the
/// others are told who.
async fn registry_race<B: Backend>(b: &mut B) {
    let group = unique_group("race");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2, 3]).await;
    for a in &agents {
        a.cmd("register shared");
    }
    let mut winners = Vec::new();
    let mut owners = Vec::new();
    for a in &mut agents {
        let line = a.expect("REGISTER shared").await;
        if line == "REGISTER shared ok" {
            winners.push(a.member.clone());
        } else {
            let owner = line
                .strip_prefix("REGISTER shared taken ")
                .expect("ok or taken");
            owners.push(owner.to_owned());
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    assert!(
        owners.iter().all(|o| *o == winners[0]),
        "losers name the winner"
    );
}

/// The registry across a partition and a merge: each side drops the other
/// side's names; after the merge the side with the lowest member keeps its
/// names, the other side re-claims what does not conflict, and every member
/// ends with the same registry.
async fn registry_partition_merge<B: Backend>(b: &mut B) {
    let group = unique_group("merge");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 3]).await;
    let (one, three) = (agents[0].member.clone(), agents[1].member.clone());
    agents[0].cmd("register a");
    agents[0].expect("REGISTER a ok").await;
    agents[1].cmd("register c");
    agents[1].expect("REGISTER c ok").await;
    b.cut(3).await;
    agents[0].expect_view_of(1).await;
    agents[1].expect_view_of(1).await;
    // Both sides claim the same name while apart.
    for a in &agents {
        a.cmd("register x");
    }
    for a in &mut agents {
        a.expect("REGISTER x ok").await;
    }
    agents[0].cmd("names");
    assert_eq!(
        agents[0].expect("NAMES").await,
        format!("NAMES a={one},x={one}")
    );
    b.restore(3).await;
    agents[0].expect_view_of(2).await;
    agents[1].expect_view_of(2).await;
    let want = format!("NAMES a={one},c={three},x={one}");
    for a in &mut agents {
        a.poll("names", "NAMES", |l| l == want).await;
    }
}

/// A typed call and its reply; a late joiner knows the name (state
/// transfer); after the host leaves the name is gone.
async fn remote_call<B: Backend>(b: &mut B) {
    let group = unique_group("call");
    let mut host = b.spawn(1, &group, Mode::Group).await;
    host.cmd("register echo");
    host.expect("REGISTER echo ok").await;
    let mut caller = b.spawn(2, &group, Mode::Group).await;
    caller.cmd("call echo hello");
    caller.expect("CALL echo ok hello").await;
    host.cmd("leave");
    host.expect("LEFT").await;
    caller.expect_view_of(1).await;
    caller.cmd("call echo again");
    let line = caller.expect("CALL echo").await;
    assert!(
        line.starts_with("CALL echo err no actor registered"),
        "{line}"
    );
}

/// 100,000 messages from one member arrive completely and in order.
async fn burst<B: Backend>(b: &mut B) {
    let group = unique_group("burst");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2]).await;
    agents[0].cmd("register sink");
    agents[0].expect("REGISTER sink ok").await;
    agents[1].cmd("burst sink 100000");
    agents[1].expect("BURST sink 100000").await;
    agents[0]
        .poll("sink", "SINK", |l| l.starts_with("SINK 100000"))
        .await;
    agents[0].cmd("sink");
    assert_eq!(agents[0].expect("SINK").await, "SINK 100000 true");
    agents[1].cmd("metrics");
    let metrics = agents[1].expect("METRICS").await;
    println!("sender after the burst: {metrics}");
    if B::FORCES_TRY_AGAIN {
        assert!(
            metrics_try_again(&metrics) > 0,
            "TRY_AGAIN was exercised: {metrics}"
        );
    }
}

/// Messages of 4 MB (above the atomic size of about 1 MiB, so each goes
/// in four pieces) stream from one member to another while a third member
/// joins, leaves and is killed, again and again: every message arrives
/// whole, once, in order.
async fn large_messages_through_churn<B: Backend>(b: &mut B) {
    const COUNT: u64 = 30;
    const BYTES: usize = 4_000_000;
    let group = unique_group("large");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2]).await;
    agents[0].cmd("register sink");
    agents[0].expect("REGISTER sink ok").await;
    agents[1].cmd(&format!("bulk sink {COUNT} {BYTES}"));
    let done = format!("BULK sink {COUNT}");
    let mut rounds = 0;
    loop {
        let mut c = b.spawn(3, &group, Mode::Group).await;
        c.expect_view_of(3).await;
        if rounds % 2 == 0 {
            c.cmd("leave");
            c.expect("LEFT").await;
        } else {
            b.kill(&c).await;
        }
        rounds += 1;
        agents[1].pump();
        if (rounds >= 2 && agents[1].seen.contains(&done)) || rounds == 12 {
            break;
        }
    }
    if !agents[1].seen.contains(&done) {
        agents[1].expect(&done).await;
    }
    let want = format!("SINK {COUNT} ");
    agents[0]
        .poll("sink", "SINK", |l| l.starts_with(&want))
        .await;
    agents[0].cmd("sink");
    assert_eq!(agents[0].expect("SINK").await, format!("SINK {COUNT} true"));
    agents[1].cmd("metrics");
    let sender = agents[1].expect("METRICS").await;
    agents[0].cmd("metrics");
    let host = agents[0].expect("METRICS").await;
    println!("{rounds} membership rounds; sender: {sender}; host: {host}");
    assert_eq!(metric(&host, "dropped"), 0, "{host}");
}

fn metrics_try_again(line: &str) -> u64 {
    metric(line, "try_again")
}

/// A plain CPG client multicasts garbage into the group: every member drops
/// and counts it, and the group keeps working.
async fn garbage_is_dropped_and_counted<B: Backend>(b: &mut B) {
    let group = unique_group("garbage");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2]).await;
    agents[0].cmd("register echo");
    agents[0].expect("REGISTER echo ok").await;
    let mut raw = b.spawn(3, &group, Mode::Raw).await;
    raw.expect_view_of(3).await;
    raw.cmd("garbage 30");
    raw.expect("SENT 30").await;
    for a in &mut agents {
        a.poll("metrics", "METRICS", |l| metric(l, "dropped") >= 30)
            .await;
    }
    agents[1].cmd("call echo still-working");
    agents[1].expect("CALL echo ok still-working").await;
}

// ---- supervision -----------------------------------------------------------

use actix_cpg_harness::TEST_TREE_CHILDREN;
use std::collections::BTreeMap;

/// Where each test-tree child runs, read from the agents' CHILD-UP and
/// CHILD-DOWN lines (from outside the members); `dead` agents run nothing.
fn census(agents: &mut [Agent], dead: &[bool]) -> BTreeMap<String, Vec<usize>> {
    let mut live: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, a) in agents.iter_mut().enumerate() {
        a.pump();
        if dead[i] {
            continue;
        }
        let mut up: Vec<(String, String)> = Vec::new();
        for line in &a.seen {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["CHILD-UP", name, inc] => up.push(((*name).into(), (*inc).into())),
                ["CHILD-DOWN", name, inc] => up.retain(|(n, x)| !(n == name && x == inc)),
                _ => {}
            }
        }
        for (name, _) in up {
            live.entry(name).or_default().push(i);
        }
    }
    live
}

/// How many times each child was started so far, by any agent.
fn starts(agents: &[Agent]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for a in agents {
        for line in &a.seen {
            if let Some(rest) = line.strip_prefix("CHILD-UP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                *n.entry(name).or_insert(0) += 1;
            }
        }
    }
    n
}

/// Waits until the census satisfies `pred`.
async fn until_census(
    agents: &mut [Agent],
    dead: &[bool],
    what: &str,
    pred: impl Fn(&BTreeMap<String, Vec<usize>>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = census(agents, dead);
        if pred(&c) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached: {what}; census {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each of `names` runs exactly once, on one of `on`, and nothing runs twice.
fn once_on(c: &BTreeMap<String, Vec<usize>>, names: &[&str], on: &[usize]) -> bool {
    names.iter().all(|n| {
        c.get(*n)
            .is_some_and(|h| h.len() == 1 && on.contains(&h[0]))
    }) && c.values().all(|h| h.len() <= 1)
}

async fn start_tree_on_three<B: Backend>(b: &mut B, scenario: &str) -> Vec<Agent> {
    let group = unique_group(scenario);
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2, 3]).await;
    for a in &agents {
        a.cmd("tree");
    }
    for a in &mut agents {
        a.expect("TREE ok").await;
    }
    let dead = [false; 3];
    until_census(&mut agents, &dead, "every child runs once", |c| {
        once_on(c, &TEST_TREE_CHILDREN, &[0, 1, 2])
    })
    .await;
    agents
}

/// A member that never starts the tree (it only uses the group) hosts none
/// of it, also when a host dies and its children move; a misspelled kind
/// is refused by `start_tree` before anything is sent.
async fn supervision_hosts_only<B: Backend>(b: &mut B) {
    let group = unique_group("sup-hosts");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2, 3]).await;
    for a in &agents[..2] {
        a.cmd("tree");
    }
    for a in &mut agents[..2] {
        a.expect("TREE ok").await;
    }
    let mut dead = [false; 3];
    until_census(&mut agents, &dead, "every child runs once on a host", |c| {
        once_on(c, &TEST_TREE_CHILDREN, &[0, 1])
    })
    .await;
    agents[2].cmd("tree-typo");
    let refused = agents[2].expect("TREE").await;
    assert!(
        refused.starts_with("TREE err") && refused.contains("\"prboe\""),
        "{refused}"
    );
    b.kill(&agents[0]).await;
    dead[0] = true;
    until_census(
        &mut agents,
        &dead,
        "every child on the one host left",
        |c| once_on(c, &TEST_TREE_CHILDREN, &[1]),
    )
    .await;
    assert!(
        !agents[2].seen.iter().any(|l| l.starts_with("CHILD-UP")),
        "the member that never started the tree hosted a child"
    );
}

/// A member process hosting children is SIGKILLed: each of its children is
/// started again exactly once, on another member.
async fn supervision_process_kill<B: Backend>(b: &mut B) {
    let mut agents = start_tree_on_three(b, "sup-kill").await;
    let c = census(&mut agents, &[false; 3]);
    let victim = c["conformance/a"][0];
    let lost: Vec<String> = c
        .iter()
        .filter(|(_, h)| h[0] == victim)
        .map(|(n, _)| n.clone())
        .collect();
    let before = starts(&agents);
    b.kill(&agents[victim]).await;
    let mut dead = [false; 3];
    dead[victim] = true;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    until_census(&mut agents, &dead, "lost children run on survivors", |c| {
        once_on(c, &TEST_TREE_CHILDREN, &survivors)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    census(&mut agents, &dead);
    let after = starts(&agents);
    for name in &lost {
        let again = after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
        assert_eq!(again, 1, "{name} was started {again} times after the kill");
    }
    assert!(once_on(
        &census(&mut agents, &dead),
        &TEST_TREE_CHILDREN,
        &survivors
    ));
}

/// A node's daemon dies: every child of that node moves to the others.
async fn supervision_node_down<B: Backend>(b: &mut B) {
    let mut agents = start_tree_on_three(b, "sup-node").await;
    let c = census(&mut agents, &[false; 3]);
    let victim = c["conformance/a"][0];
    let node = victim as u32 + 1;
    b.crash_node(node).await;
    let mut dead = [false; 3];
    dead[victim] = true;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    until_census(
        &mut agents,
        &dead,
        "children of the dead node run elsewhere",
        |c| once_on(c, &TEST_TREE_CHILDREN, &survivors),
    )
    .await;
    b.revive_node(node).await;
}

/// One node cut off: the two-node side runs every child, the one-node side
/// (no quorum) stops its children; restored: no child runs twice.
async fn supervision_partition<B: Backend>(b: &mut B) {
    let mut agents = start_tree_on_three(b, "sup-cut").await;
    b.cut(3).await;
    // Both sides notice the partition before anything is judged.
    agents[2].expect_view_of(1).await;
    agents[0].expect_view_of(2).await;
    let dead = [false; 3];
    until_census(
        &mut agents,
        &dead,
        "the majority runs everything, node 3 nothing",
        |c| once_on(c, &TEST_TREE_CHILDREN, &[0, 1]),
    )
    .await;
    b.restore(3).await;
    agents[2].expect_view_of(3).await;
    until_census(
        &mut agents,
        &dead,
        "after the merge every child runs once",
        |c| once_on(c, &TEST_TREE_CHILDREN, &[0, 1, 2]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = census(&mut agents, &dead);
    assert!(
        once_on(&c, &TEST_TREE_CHILDREN, &[0, 1, 2]),
        "a child runs twice: {c:?}"
    );
}

/// A member leaves cleanly: its transient child stays down, its permanent
/// children move.
async fn supervision_leave<B: Backend>(b: &mut B) {
    let mut agents = start_tree_on_three(b, "sup-leave").await;
    let c = census(&mut agents, &[false; 3]);
    let leaver = c["conformance/t"][0];
    agents[leaver].cmd("leave");
    agents[leaver].expect("LEFT").await;
    let mut dead = [false; 3];
    dead[leaver] = true;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leaver).collect();
    let permanent: Vec<&str> = TEST_TREE_CHILDREN
        .iter()
        .copied()
        .filter(|n| *n != "conformance/t")
        .collect();
    until_census(&mut agents, &dead, "permanent children moved", |c| {
        once_on(c, &permanent, &survivors)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = census(&mut agents, &dead);
    assert!(
        !c.contains_key("conformance/t"),
        "the transient child stayed down: {c:?}"
    );
}

// ---- outsiders --------------------------------------------------------------

#[path = "../../tests/support/forgeries.rs"]
mod forgeries;

fn member_of(agent: &Agent) -> actix_cpg::Member {
    let (node, pid) = agent.member.split_once('/').expect("node/pid");
    actix_cpg::Member::new(
        node.trim_start_matches("node").parse().expect("node id"),
        pid.parse().expect("pid"),
    )
}

/// Every agent's `names` answer, once they agree. A registration's answer
/// on its own member says its place in the order is decided; the other
/// members may not have read that far yet, so this asks again until every
/// registry is the same (or fails after 20 s).
async fn agreed_names(agents: &mut [Agent]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for a in agents.iter_mut() {
            a.cmd("names");
            seen.push(a.expect("NAMES").await);
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return seen.swap_remove(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "registries differ: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain CPG client (no actix-cpg runtime) joins a group that serves a
/// registry and a supervision tree, multicasts well-formed forgeries of
/// every group message kind, then stays silent while a member joins, then
/// leaves. Nothing it sent changes anything: no name is squatted, no child
/// stops or restarts, no forged reply is taken, nobody multicasts the state
/// for it, and the group keeps serving and admitting members throughout.
async fn hostile_member<B: Backend>(b: &mut B) {
    let group = unique_group("hostile");
    let mut agents = spawn_all(b, &group, Mode::Group, &[1, 2, 3]).await;
    for a in &agents {
        a.cmd("tree");
    }
    for a in &mut agents {
        a.expect("TREE ok").await;
    }
    let all = [0, 1, 2];
    until_census(&mut agents, &[false; 3], "every child runs once", |c| {
        once_on(c, &TEST_TREE_CHILDREN, &all)
    })
    .await;
    agents[0].cmd("register svc");
    agents[0].expect("REGISTER svc ok").await;
    let names_before = agreed_names(&mut agents).await;
    let starts_before = starts(&agents);

    let mut outsider = b.spawn(2, &group, Mode::Raw).await;
    outsider.expect_view_of(4).await;
    let mut forged = vec![
        forgeries::deep_tree(5_000),
        forgeries::register("evil"),
        forgeries::quorum(false),
        forgeries::tick(u64::MAX),
        forgeries::sync_request(1),
        forgeries::child_exited(actix_cpg_harness::TEST_TREE, &["a"], 1),
        forgeries::quorum(true),
    ];
    let codec = actix_cpg::wire::Codec::new(1 << 20);
    let text = codec.encode_payload(&"forged".to_owned()).expect("payload");
    for a in &agents {
        for id in 0..8 {
            forged.push(forgeries::reply(id, member_of(a), text.clone()));
        }
    }
    for bytes in &forged {
        outsider.cmd(&format!("mcast {}", actix_cpg_harness::encode_hex(bytes)));
        outsider.expect("SENT 1").await;
    }
    // The deep spec went first: once every member has dropped it, the rest
    // is on its way; a second later it has been delivered everywhere.
    for a in &mut agents {
        a.poll("metrics", "METRICS", |l| metric(l, "dropped") >= 1)
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, a) in agents.iter_mut().enumerate() {
        a.cmd(&format!("call svc after-forgeries-{i}"));
        a.expect(&format!("CALL svc ok after-forgeries-{i}")).await;
        a.cmd("call evil hello");
        let line = a.expect("CALL evil").await;
        assert!(line.starts_with("CALL evil err"), "{line}");
    }
    assert_eq!(agreed_names(&mut agents).await, names_before);

    // Silent for a while: nothing moves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = census(&mut agents, &[false; 3]);
    assert!(
        once_on(&c, &TEST_TREE_CHILDREN, &all),
        "a forgery moved, stopped or doubled a child: {c:?}"
    );
    assert_eq!(
        starts(&agents),
        starts_before,
        "a forgery restarted a child"
    );
    assert_eq!(agreed_names(&mut agents).await, names_before);

    // A member joins while the outsider is there: it becomes ready and
    // serves; then the outsider leaves, and the four still agree.
    let mut joiner = b.spawn(3, &group, Mode::Group).await;
    // It can build the tree's children too (placement would choose it).
    joiner.cmd("tree");
    joiner.expect("TREE ok").await;
    joiner.cmd("call svc joined");
    joiner.expect("CALL svc ok joined").await;
    agents.push(joiner);
    outsider.cmd("leave");
    outsider.expect("LEFT").await;
    let four = [0, 1, 2, 3];
    until_census(
        &mut agents,
        &[false; 4],
        "every child runs once on the four",
        |c| once_on(c, &TEST_TREE_CHILDREN, &four),
    )
    .await;
    for (i, a) in agents.iter_mut().enumerate() {
        a.cmd(&format!("call svc after-leave-{i}"));
        a.expect(&format!("CALL svc ok after-leave-{i}")).await;
    }
    let names = agreed_names(&mut agents).await;
    assert!(!names.contains("evil"), "{names}");
}

/// Builds of two protocol versions in one group while calls flow: old
/// builds speak 2, new ones 2 and the test-only 3 (whose replies have
/// another layout). The group speaks 2 until the last old member leaves,
/// then 3 on every member at once; an old build is then refused, with the
/// reason on itself and on every member, and changes nothing.
async fn rolling_upgrade<B: Backend>(b: &mut B) {
    use actix_cpg::wire::{Versions, NEXT_PROTOCOL_VERSION as NEXT, PROTOCOL_VERSION as CUR};
    let old = Mode::GroupSpeaking(Versions { min: CUR, max: CUR });
    let new = Mode::GroupSpeaking(Versions {
        min: CUR,
        max: NEXT,
    });
    let group = unique_group("upgrade");
    let mut olds = spawn_all(b, &group, old, &[1, 2, 3]).await;
    for (i, a) in olds.iter_mut().enumerate() {
        a.cmd(&format!("register old{i}"));
        a.expect(&format!("REGISTER old{i} ok")).await;
    }
    let mut news = Vec::new();
    for (i, node) in [1u32, 2].into_iter().enumerate() {
        let mut n = b.spawn(node, &group, new).await;
        n.cmd(&format!("register new{i}"));
        n.expect(&format!("REGISTER new{i} ok")).await;
        news.push(n);
    }
    // Calls both ways, at version 2.
    for a in olds.iter_mut().chain(news.iter_mut()) {
        for name in ["old0", "new0", "new1"] {
            a.cmd(&format!("call {name} hi"));
            a.expect(&format!("CALL {name} ok hi")).await;
        }
        let m = a.poll("metrics", "METRICS", |_| true).await;
        assert_eq!(metric(&m, "version"), u64::from(CUR), "{m}");
    }
    // The old members leave one by one; calls go on; the version moves
    // only when the last one is gone.
    let total = olds.len();
    for (i, mut leaving) in olds.into_iter().enumerate() {
        leaving.cmd("leave");
        leaving.expect("LEFT").await;
        for n in news.iter_mut() {
            n.expect_view_of(total - i - 1 + 2).await;
            for name in ["new0", "new1"] {
                n.cmd(&format!("call {name} after{i}"));
                n.expect(&format!("CALL {name} ok after{i}")).await;
            }
        }
    }
    for n in news.iter_mut() {
        let moved = format!("VERSION {NEXT}");
        if !n.seen.contains(&moved) {
            n.expect(&moved).await;
        }
        let moves = n.seen.iter().filter(|l| l.starts_with("VERSION")).count();
        assert_eq!(moves, 1, "the version moved once: {:?}", n.seen);
        // It moved where the last old member left, before any later call.
        let at = n.seen.iter().position(|l| *l == moved);
        let last_leave = n.seen.iter().rposition(|l| l.contains(":Leave"));
        assert_eq!(at, last_leave.map(|i| i + 1), "{:?}", n.seen);
        let m = n.poll("metrics", "METRICS", |_| true).await;
        assert_eq!(metric(&m, "version"), u64::from(NEXT), "{m}");
        assert_eq!(metric(&m, "refused"), 0, "{m}");
        for name in ["new0", "new1"] {
            n.cmd(&format!("call {name} v3"));
            n.expect(&format!("CALL {name} ok v3")).await;
        }
    }
    // An old build now: refused on itself and on every member.
    let late = b.spawn_unready(3, &group, old).await;
    let error = late.refused().await;
    assert!(
        error.contains(&format!("the group speaks protocol v{NEXT}")),
        "{error}"
    );
    for n in news.iter_mut() {
        let line = n.expect("REFUSED").await;
        assert!(line.ends_with(&format!("v{CUR} v{NEXT}")), "{line}");
        n.cmd("names");
        let names = n.expect("NAMES").await;
        assert!(
            names.contains("new0=") && names.contains("new1="),
            "{names}"
        );
        assert!(!names.contains("old"), "{names}");
    }
    for mut n in news {
        n.cmd("leave");
        n.expect("LEFT").await;
    }
}

// ---- backends ---------------------------------------------------------------

mod sim_backend {
    use super::*;
    use actix_cpg::transport::sim::{SimCluster, SimProcess};
    use actix_cpg::{NodeId, Transport};

    pub struct Sim {
        cluster: SimCluster,
        processes: Vec<SimProcess>,
    }

    impl Sim {
        pub fn new() -> Sim {
            Sim {
                // Tighter than the group runtime's window, so a burst meets
                // TRY_AGAIN.
                cluster: SimCluster::builder(3).max_backlog(16).build(),
                processes: Vec::new(),
            }
        }
    }

    impl Backend for Sim {
        const FORCES_TRY_AGAIN: bool = true;

        async fn spawn_unready(&mut self, node: u32, group: &str, mode: Mode) -> Agent {
            let process = self.cluster.process(NodeId(node)).expect("node is up");
            let name = actix_cpg::GroupName::new(group).expect("valid name");
            let conn = process.join(&name).expect("join");
            self.processes.push(process);
            let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
            let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
            actix::spawn(actix_cpg_harness::run(conn, mode, in_rx, out_tx));
            Agent::unready(in_tx, out_rx)
        }

        async fn kill(&mut self, agent: &Agent) {
            let p = self
                .processes
                .iter()
                .find(|p| p.member().to_string() == agent.member)
                .expect("agent's process");
            p.kill().expect("kill");
        }

        async fn cut(&mut self, node: u32) {
            let others: Vec<NodeId> = (1..=3).filter(|n| *n != node).map(NodeId).collect();
            self.cluster
                .partition(&[&others, &[NodeId(node)]])
                .expect("partition");
        }

        async fn restore(&mut self, _node: u32) {
            self.cluster.heal();
        }

        async fn crash_node(&mut self, node: u32) {
            self.cluster.crash_node(NodeId(node)).expect("crash");
        }

        async fn revive_node(&mut self, node: u32) {
            self.cluster.restart_node(NodeId(node)).expect("restart");
        }
    }
}

#[cfg(feature = "corosync")]
mod corosync_backend {
    use super::*;
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// The real cluster is shared: one scenario at a time.
    static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub struct Real {
        children: Vec<(String, tokio::process::Child)>,
        cut: Vec<u32>,
        down: Vec<u32>,
        _exclusive: std::sync::MutexGuard<'static, ()>,
    }

    fn cluster_script() -> String {
        format!("{}/../scripts/cluster.sh", env!("CARGO_MANIFEST_DIR"))
    }

    impl Real {
        /// The real backend, or `None` (with a note) when no cluster is up.
        pub fn new() -> Option<Real> {
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
            Some(Real {
                children: Vec::new(),
                cut: Vec::new(),
                down: Vec::new(),
                _exclusive: guard,
            })
        }

        fn script(&self, args: &[&str]) {
            let status = std::process::Command::new("bash")
                .arg(cluster_script())
                .args(args)
                .status()
                .expect("run cluster.sh");
            assert!(status.success(), "cluster.sh {args:?} failed");
        }
    }

    impl Drop for Real {
        fn drop(&mut self) {
            for (_, child) in &mut self.children {
                let _ = child.start_kill();
            }
            for node in std::mem::take(&mut self.cut) {
                let _ = std::process::Command::new("bash")
                    .arg(cluster_script())
                    .args(["restore", &node.to_string()])
                    .status();
            }
            for node in std::mem::take(&mut self.down) {
                let _ = std::process::Command::new("bash")
                    .arg(cluster_script())
                    .args(["start-node", &node.to_string()])
                    .status();
            }
        }
    }

    impl Backend for Real {
        const FORCES_TRY_AGAIN: bool = false;

        async fn spawn_unready(&mut self, node: u32, group: &str, mode: Mode) -> Agent {
            let mode = match mode {
                Mode::Raw => "raw".to_owned(),
                Mode::Group => "group".to_owned(),
                Mode::GroupSpeaking(v) => format!("group@{}-{}", v.min, v.max),
            };
            let mut child = tokio::process::Command::new("ip")
                .args(["netns", "exec", &format!("acpg-n{node}")])
                .arg(env!("CARGO_BIN_EXE_cpg-agent"))
                .args([group, &mode])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start cpg-agent");
            let mut stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
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
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if out_tx.send(line).is_err() {
                        break;
                    }
                }
            });
            self.children.push((String::new(), child));
            Agent::unready(in_tx, out_rx)
        }

        async fn spawn(&mut self, node: u32, group: &str, mode: Mode) -> Agent {
            let agent = self.spawn_unready(node, group, mode).await.ready().await;
            if let Some((member, _)) = self.children.last_mut() {
                member.clone_from(&agent.member);
            }
            agent
        }

        async fn kill(&mut self, agent: &Agent) {
            let (_, child) = self
                .children
                .iter_mut()
                .find(|(m, _)| *m == agent.member)
                .expect("agent's process");
            child.start_kill().expect("SIGKILL the agent");
            let _ = child.wait().await;
        }

        async fn cut(&mut self, node: u32) {
            self.script(&["cut", &node.to_string()]);
            self.cut.push(node);
        }

        async fn restore(&mut self, node: u32) {
            self.script(&["restore", &node.to_string()]);
            self.cut.retain(|n| *n != node);
        }

        async fn crash_node(&mut self, node: u32) {
            self.script(&["kill-daemon", &node.to_string()]);
            self.down.push(node);
        }

        async fn revive_node(&mut self, node: u32) {
            self.script(&["start-node", &node.to_string()]);
            self.down.retain(|n| *n != node);
        }
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sim {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(&mut super::sim_backend::Sim::new()).await;
                }
            )*
        }

        #[cfg(feature = "corosync")]
        mod on_corosync {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    if let Some(mut real) = super::corosync_backend::Real::new() {
                        super::$scenario(&mut real).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    total_order,
    self_delivery,
    join_leave_procdown,
    nodedown_nodeup,
    registry_race,
    registry_partition_merge,
    remote_call,
    burst,
    garbage_is_dropped_and_counted,
    large_messages_through_churn,
    supervision_process_kill,
    supervision_node_down,
    supervision_partition,
    supervision_leave,
    supervision_hosts_only,
    hostile_member,
    rolling_upgrade,
);

/// An agent's `--record FILE` and `--show` (the `cpg-agent` flags, on the
/// sim): `show` answers one `SHOW` line holding its `inspect()`, `leave`
/// prints one before `LEFT`, and the recording replays to the agent's
/// registration.
#[actix_rt::test]
async fn an_agent_records_its_stream_and_shows_its_inspection() {
    use actix_cpg::group::GroupInspection;
    use actix_cpg::record::{Protocol, Recording};
    use actix_cpg::transport::sim::SimCluster;
    use actix_cpg::{NodeId, Transport};
    use actix_cpg_harness::Observe;

    let path = std::env::temp_dir().join(format!("acpg-agent-{}.rec", std::process::id()));
    let cluster = SimCluster::new(1);
    let name = actix_cpg::GroupName::new(unique_group("agent-flags")).unwrap();
    let conn = cluster.process(NodeId(1)).unwrap().join(&name).unwrap();
    let observe = Observe {
        record: Some(path.clone()),
        show: true,
    };
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    actix::spawn(actix_cpg_harness::run_observed(
        conn,
        Mode::Group,
        observe,
        in_rx,
        out_tx,
    ));
    let mut agent = Agent::unready(in_tx, out_rx).ready().await;
    agent.cmd("register flagged");
    agent.expect("REGISTER flagged ok").await;
    agent.cmd("show");
    let shown = agent.expect("SHOW ").await;
    let seen: GroupInspection = serde_json::from_str(&shown["SHOW ".len()..]).unwrap();
    assert!(seen.names.iter().any(|n| n.name == "flagged"), "{shown}");
    agent.cmd("leave");
    agent.expect("SHOW {").await;
    agent.expect("LEFT").await;
    actix_rt::time::sleep(Duration::from_millis(50)).await;

    let recording = Recording::open(&path).unwrap();
    assert_eq!(recording.protocol, Protocol::Registry);
    let decisions = actix_cpg::group::replay(&recording, 1 << 20);
    assert!(
        decisions
            .iter()
            .any(|d| d.decision == r#"name "flagged" now on "#.to_owned() + &seen.local.to_string()),
        "{decisions:#?}"
    );
    let _ = std::fs::remove_file(&path);
}

/// A replica's `show` line (the kv line protocol `rsm-agent kv` serves, on
/// the sim): one `SHOW` line holding its `inspect()` — the state id it
/// holds after a write, each member's announced state, and that the
/// replicas agree.
#[actix_rt::test]
async fn a_replica_shows_its_inspection_with_its_state_id_and_agreement() {
    use actix_cpg::kv::KvStore;
    use actix_cpg::replicated::ReplicaInspection;
    use actix_cpg::transport::sim::SimCluster;
    use actix_cpg::{NodeId, Replica, ReplicaConfig, Transport};

    let cluster = SimCluster::new(2);
    let name = actix_cpg::GroupName::new(unique_group("replica-show")).unwrap();
    let mut replicas = Vec::new();
    for node in 1..=2 {
        let conn = cluster.process(NodeId(node)).unwrap().join(&name).unwrap();
        let replica = Replica::<KvStore>::start(conn, ReplicaConfig::default())
            .await
            .expect("a replica starts");
        replicas.push(replica);
    }
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    actix::spawn(actix_cpg_harness::kv_lines::serve_lines(
        replicas[0].clone(),
        in_rx,
        out_tx,
    ));
    let mut agent = Agent::unready(in_tx, out_rx);
    agent.member = replicas[0].local().to_string();
    agent.cmd("wait-primary");
    agent.expect("PRIMARY ").await;
    agent.cmd("put k v");
    agent.expect("OK ").await;

    // The other replica announces its state at the next install round, so
    // ask until both are in and agree.
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        agent.cmd("show");
        let shown = agent.expect("SHOW ").await;
        let seen: ReplicaInspection = serde_json::from_str(&shown["SHOW ".len()..])
            .unwrap_or_else(|e| panic!("{e}: {shown}"));
        if seen.agreement.agree && seen.members.len() == 2 && seen.state.applied == 1 {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never two agreeing replicas with the write: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen.local, replicas[0].local());
    assert!(seen.primary && seen.holding, "{seen:#?}");
    assert_eq!(seen.state, replicas[0].status().state);
    let others = replicas[1].inspect().await.expect("inspect");
    assert_eq!(seen.state, others.state, "{seen:#?}\n{others:#?}");
    for r in &replicas {
        r.leave().await.expect("leave");
    }
}
