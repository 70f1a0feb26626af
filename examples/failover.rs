//! Failover time of a supervised child on the real cluster (3 nodes, or
//! `--nodes N` on a cluster of that size), next to the bare CPG detection
//! time, measured in the same run.
//!
//! Two measurements, each over `--rounds N` SIGKILLs (default 20):
//! - bare: plain CPG clients (no actix-cpg protocol), one per node; the
//!   one on the last node is killed; time until the first of the others
//!   gets the `ProcDown` confchg;
//! - supervised: one member per node runs a tree of six workers (the one the
//!   conformance suite runs); the process hosting child `a` is killed;
//!   times until a survivor sees the confchg, until `a` runs on a
//!   survivor, and until the group registry names its new host.
//!
//! Members are processes of this example (`--member GROUP raw|group`, in
//! `member` below), each in its node's network namespace, printing one line
//! per event on stdout.
//!
//! Times are taken by this parent process when the members' lines arrive,
//! from just before the kill. Run as root with the cluster up:
//!
//! ```text
//! bash scripts/cluster.sh up
//! cargo run --release --features corosync --example failover -- --rounds 20
//! bash scripts/cluster.sh down && bash scripts/cluster.sh up 5
//! cargo run --release --features corosync --example failover -- --rounds 20 --nodes 5
//! ```
//!
//! `--record FILE` records the stream of each member of the supervised run
//! (FILE.1, FILE.2, ... in the order they start; `acpg replay FILE.4`
//! prints the decisions of the first replacement); `--show` prints each
//! surviving member's metrics and `inspect()` snapshot at the end (on
//! stderr: the members' stdout is their line protocol).

use clap::Parser;

mod support;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// Failover time of a supervised child on the real cluster, next to the
/// bare CPG detection time, measured in the same run.
///
/// Over `--rounds` SIGKILLs each: plain CPG clients, one per node, the one
/// on the last node killed (time until a survivor sees the confchg); then
/// one member per node running a supervision tree, the host of child `a` killed
/// (times until a survivor sees the confchg, runs `a`, and registers it).
/// Needs `--features corosync`, root, and the cluster up (`bash
/// scripts/cluster.sh up`).
#[derive(Parser)]
struct Cli {
    /// How many processes are killed in each of the two measurements.
    #[arg(long, value_name = "N", default_value_t = 20)]
    rounds: usize,
    /// Nodes of the cluster, one member on each (`scripts/cluster.sh up N`).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=9))]
    nodes: u32,
    /// Be one member process of GROUP: `raw`, a plain CPG client, or
    /// `group` (the default, also for any other word), a group member that
    /// starts the tree when it reads `tree` on stdin. This run starts them
    /// in each node's namespace.
    #[arg(long, hide = true, num_args = 1..=2, value_names = ["GROUP", "MODE"])]
    member: Option<Vec<String>>,
    /// Also say where the survivor's time goes: each member reports when
    /// its corosync backend began the dispatch that carried the confchg,
    /// when the callback ran, when its runtime took the event and when the
    /// member's code got it; and a plain CPG client on every node joins
    /// the supervised group too (it announces nothing, so it changes no
    /// decision), seeing the very kills the members see.
    #[arg(long)]
    stages: bool,
    #[command(flatten)]
    observe: observe::Observe,
}

#[cfg(feature = "corosync")]
mod run {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, Stdio};
    use std::sync::mpsc::{channel, Receiver};
    use std::time::{Duration, Instant};

    use super::member::TREE_CHILDREN;
    use crate::observe::Observe;

    const WAIT: Duration = Duration::from_secs(30);

    /// One member process in a node namespace, driven by lines.
    struct Agent {
        node: u32,
        member: String,
        process: Child,
        stdin: ChildStdin,
        lines: Receiver<(Instant, String)>,
        seen: Vec<(Instant, String)>,
        dead: bool,
    }

    impl Agent {
        fn spawn(node: u32, group: &str, mode: &str, flags: &[String]) -> Result<Agent, String> {
            let mut process = crate::support::member_command(node)
                .map_err(|e| e.to_string())?
                .args(["--member", group, mode])
                .args(flags)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("start a member on node {node}: {e}"))?;
            let stdin = process.stdin.take().ok_or("no stdin")?;
            let stdout = process.stdout.take().ok_or("no stdout")?;
            let (tx, lines) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
            let mut agent = Agent {
                node,
                member: String::new(),
                process,
                stdin,
                lines,
                seen: Vec::new(),
                dead: false,
            };
            let (_, ready) = agent.wait_for(|l| l.starts_with("READY "))?;
            agent.member = ready["READY ".len()..].to_owned();
            Ok(agent)
        }

        fn cmd(&mut self, line: &str) -> Result<(), String> {
            writeln!(self.stdin, "{line}").map_err(|e| e.to_string())
        }

        fn pump(&mut self) {
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
        }

        fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> Result<(Instant, String), String> {
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok((at, line)) => {
                        self.seen.push((at, line.clone()));
                        if line.starts_with("ERROR") {
                            return Err(format!("member on node {} said {line}", self.node));
                        }
                        if pred(&line) {
                            return Ok((at, line));
                        }
                    }
                    Err(_) => return Err(format!("member on node {} went quiet", self.node)),
                }
            }
        }

        fn kill(&mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
            self.dead = true;
        }
    }

    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    /// Child name → agents running it, from CHILD-UP / CHILD-DOWN lines.
    fn census(agents: &mut [Agent]) -> BTreeMap<String, Vec<usize>> {
        let mut live: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, a) in agents.iter_mut().enumerate() {
            a.pump();
            if a.dead {
                continue;
            }
            let mut up: Vec<(String, String)> = Vec::new();
            for (_, line) in &a.seen {
                let w: Vec<&str> = line.split(' ').collect();
                match w.as_slice() {
                    ["CHILD-UP", n, inc] => up.push(((*n).into(), (*inc).into())),
                    ["CHILD-DOWN", n, inc] => up.retain(|(a, b)| !(a == n && b == inc)),
                    _ => {}
                }
            }
            for (n, _) in up {
                live.entry(n).or_default().push(i);
            }
        }
        live
    }

    fn settled(agents: &mut [Agent]) -> Result<BTreeMap<String, Vec<usize>>, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = census(agents);
            let ok = TREE_CHILDREN
                .iter()
                .all(|n| c.get(*n).is_some_and(|h| h.len() == 1));
            if ok {
                // Stable for a moment: placement may still be rebalancing.
                std::thread::sleep(Duration::from_millis(300));
                if census(agents) == c {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("tree never settled: {c:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    }

    fn row(label: &str, mut v: Vec<f64>) {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {label:<48} | {:>3} | {:>8.1} | {:>8.1} | {:>8.1} |",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// When a member's stages happened, from its `STAGES` line: offsets
    /// before the line was printed, in µs (`-` for a stage not seen).
    struct Stamps {
        /// dispatch began, callback ran, runtime took it, member's code got it.
        offsets: [Option<f64>; 4],
    }

    impl Agent {
        /// The `STAGES` line a member printed right after its confchg line
        /// naming `left`, as times from the kill.
        fn stages_after(&mut self, left: &str, t0: Instant) -> Result<Stamps, String> {
            let confchg_at = self
                .seen
                .iter()
                .position(|(at, l)| *at >= t0 && l.contains(left))
                .ok_or("no confchg line")?;
            let stages = match self.seen[confchg_at + 1..]
                .iter()
                .find(|(_, l)| l.starts_with("STAGES "))
            {
                Some((_, l)) => l.clone(),
                None => self.wait_for(|l| l.starts_with("STAGES "))?.1,
            };
            let mut offsets = [None; 4];
            for (slot, word) in offsets.iter_mut().zip(stages.split(' ').skip(1)) {
                *slot = word.parse::<f64>().ok();
            }
            Ok(Stamps { offsets })
        }
    }

    /// Where the time from the kill to a survivor's line goes, by stage.
    #[derive(Default)]
    struct Stages {
        /// The first survivor (member): each stage in ms from the kill.
        member: [Vec<f64>; 4],
        /// Plain clients in the same group: each stage, every client.
        beside: [Vec<f64>; 4],
        /// The plain client on the first survivor's node, callback: the
        /// member's callback minus it, ms.
        same_node: Vec<f64>,
        /// Member callback, for the same-node difference.
        last_member_callback: Option<f64>,
        /// Child running minus the first plain client's line, same kill, ms.
        running_after_plain: Vec<f64>,
    }

    const STAGE_NAMES: [&str; 4] = [
        "cpg_dispatch began",
        "confchg callback ran",
        "poll_event handed it over",
        "member's code got it",
    ];

    impl Stages {
        fn at(t0: Instant, line_at: Instant, offset_us: f64) -> f64 {
            ms(line_at - t0) - offset_us / 1000.0
        }

        fn add_member(&mut self, t0: Instant, line_at: Instant, stamps: &Stamps) {
            for (i, o) in stamps.offsets.iter().enumerate() {
                if let Some(o) = o {
                    self.member[i].push(Self::at(t0, line_at, *o));
                }
            }
            self.last_member_callback = stamps.offsets[1].map(|o| Self::at(t0, line_at, o));
        }

        fn add_beside(&mut self, t0: Instant, line_at: Instant, stamps: &Stamps, same_node: bool) {
            for (i, o) in stamps.offsets.iter().enumerate() {
                if let Some(o) = o {
                    self.beside[i].push(Self::at(t0, line_at, *o));
                }
            }
            if same_node {
                if let (Some(m), Some(b)) = (self.last_member_callback, stamps.offsets[1]) {
                    self.same_node.push(m - Self::at(t0, line_at, b));
                }
            }
        }

        fn print(self) {
            println!();
            println!("| where the survivor's time goes, ms from SIGKILL  |   n |      p50 |      p99 |      max |");
            println!("|--------------------------------------------------|-----|----------|----------|----------|");
            for (name, v) in STAGE_NAMES.iter().zip(self.beside) {
                row(&format!("plain client in the group: {name}"), v);
            }
            for (name, v) in STAGE_NAMES.iter().zip(self.member) {
                row(&format!("first survivor: {name}"), v);
            }
            row(
                "callback: survivor - plain client, same node",
                self.same_node,
            );
            row(
                "child running - first plain client, same kill",
                self.running_after_plain,
            );
        }
    }

    pub fn main(rounds: usize, nodes: u32, stages: bool, observe: &Observe) -> Result<(), String> {
        eprintln!("bare CPG detection: {rounds} kills, {nodes} nodes");
        let mut bare = Vec::new();
        for round in 0..rounds {
            // The same shape as the supervised run: one member per node;
            // the first survivor to see the confchg counts.
            let group = format!("failover-bare-{}-{round}", std::process::id());
            let observers: Result<Vec<Agent>, String> = (1..nodes)
                .map(|node| Agent::spawn(node, &group, "raw", &[]))
                .collect();
            let mut observers = observers?;
            let mut victim = Agent::spawn(nodes, &group, "raw", &[])?;
            for o in &mut observers {
                o.wait_for(|l| l.starts_with("CONFCHG") && l.contains(&victim.member))?;
            }
            let needle = format!("left={}:ProcDown", victim.member);
            let t0 = Instant::now();
            victim.kill();
            let mut first = None;
            for o in &mut observers {
                let (at, _) = o.wait_for(|l| l.contains(&needle))?;
                first = Some(first.map_or(at, |f: Instant| f.min(at)));
            }
            bare.push(ms(first.unwrap_or(t0) - t0));
        }

        eprintln!("supervised failover: {rounds} kills");
        let group = format!("failover-tree-{}", std::process::id());
        // Members of the supervised run, counted as they start (`--record`).
        let mut started = 0;
        let mut flags = || {
            started += 1;
            observe.forward(started)
        };
        let mut agents = Vec::new();
        for node in 1..=nodes {
            let mut a = Agent::spawn(node, &group, "group", &flags())?;
            a.cmd("tree")?;
            a.wait_for(|l| l.starts_with("TREE "))?;
            agents.push(a);
        }
        // With --stages: a plain client per node in the same group, after
        // the members (a process already there when the first member
        // joins would make it wait for a state nobody holds).
        let mut beside = Vec::new();
        if stages {
            for node in 1..=nodes {
                beside.push(Agent::spawn(node, &group, "raw", &[])?);
            }
        }
        let (mut confchg, mut running, mut registered) = (Vec::new(), Vec::new(), Vec::new());
        let mut split = Stages::default();
        for round in 0..rounds {
            let c = settled(&mut agents)?;
            let victim = c["conformance/a"][0];
            let victim_member = agents[victim].member.clone();
            let node = agents[victim].node;
            let left = format!("left={victim_member}:ProcDown");
            let t0 = Instant::now();
            agents[victim].kill();
            let mut seen_confchg = None;
            let mut first_survivor = 0;
            let mut seen_running = None;
            let mut seen_registered = None;
            let deadline = t0 + WAIT;
            while seen_confchg.is_none() || seen_running.is_none() || seen_registered.is_none() {
                if Instant::now() > deadline {
                    return Err(format!("round {round}: failover not seen"));
                }
                for (i, a) in agents.iter_mut().enumerate().filter(|(_, a)| !a.dead) {
                    a.pump();
                    for (at, line) in a.seen.iter().filter(|(at, _)| *at >= t0) {
                        if seen_confchg.is_none() && line.contains(&left) {
                            seen_confchg = Some(*at);
                            first_survivor = i;
                        }
                        if seen_running.is_none() && line.starts_with("CHILD-UP conformance/a ") {
                            seen_running = Some(*at);
                        }
                        if seen_registered.is_none()
                            && line.starts_with("NAME-UP conformance/a ")
                            && !line.ends_with(&victim_member)
                        {
                            seen_registered = Some(*at);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if stages {
                let at = seen_confchg.unwrap_or(t0);
                let survivor = &mut agents[first_survivor];
                let stamps = survivor.stages_after(&left, t0)?;
                split.add_member(t0, at, &stamps);
                let survivor_node = survivor.node;
                let mut first_plain: Option<Instant> = None;
                for b in &mut beside {
                    let (seen, _) = b.wait_for(|l| l.contains(&left))?;
                    first_plain = Some(first_plain.map_or(seen, |f| f.min(seen)));
                    let stamps = b.stages_after(&left, t0)?;
                    split.add_beside(t0, seen, &stamps, b.node == survivor_node);
                }
                if let (Some(run), Some(plain)) = (seen_running, first_plain) {
                    split.running_after_plain.push(
                        ms(run.saturating_duration_since(plain))
                            - ms(plain.saturating_duration_since(run)),
                    );
                }
            }
            confchg.push(ms(seen_confchg.unwrap_or(t0) - t0));
            running.push(ms(seen_running.unwrap_or(t0) - t0));
            registered.push(ms(seen_registered.unwrap_or(t0) - t0));
            eprintln!(
                "  round {:>2}: confchg {:>6.1} ms, running {:>6.1} ms, registered {:>6.1} ms",
                round + 1,
                confchg[round],
                running[round],
                registered[round]
            );
            // A fresh member takes the victim's place for the next round.
            let mut fresh = Agent::spawn(node, &group, "group", &flags())?;
            fresh.cmd("tree")?;
            fresh.wait_for(|l| l.starts_with("TREE "))?;
            agents[victim] = fresh;
        }

        println!("| measured from SIGKILL, ms                        |   n |      p50 |      p99 |      max |");
        println!("|--------------------------------------------------|-----|----------|----------|----------|");
        row("bare CPG: ProcDown confchg at a plain client", bare);
        row("actix-cpg: confchg seen by a survivor", confchg);
        row("actix-cpg: child `a` running on a survivor", running);
        row(
            "actix-cpg: child `a` registered at its new host",
            registered,
        );
        if stages {
            split.print();
        }
        if observe.show {
            for a in &mut agents {
                a.cmd("show")?;
                a.wait_for(|l| l == "SHOWN")?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "corosync")]
mod member {
    //! One member process: `raw`, a plain CPG client (the bare detection
    //! time), or `group`, a group member that starts the tree when it reads
    //! `tree` on stdin. It prints `READY member`, then `CONFCHG members=..
    //! left=member:Reason,..` per view change and, in group mode, `TREE ok`,
    //! `CHILD-UP name incarnation`, `CHILD-DOWN name incarnation` and
    //! `NAME-UP name host`; `show` on stdin prints what `--show` prints on
    //! stderr, then `SHOWN`. Ends when stdin closes.

    use std::io::BufRead;
    use std::time::Instant;

    use actix::prelude::*;
    use actix_cpg::supervisor::{
        ChildSpec, QuorumPolicy, RestartType, Strategy, SupervisorSpec, TreeSpec,
    };
    use actix_cpg::transport::corosync::{probe, Corosync, CorosyncConnection};
    use actix_cpg::transport::next_event;
    use actix_cpg::{
        BatchConfig, Child, ChildContext, Connection, Factories, Group, GroupConfig, GroupEvent,
        GroupName, Handlers, Member, MemberChange, Terminate, Transport, TransportEvent,
    };
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    const TREE: &str = "conformance";

    /// Group-wide names of the tree's workers.
    pub const TREE_CHILDREN: [&str; 6] = [
        "conformance/a",
        "conformance/b",
        "conformance/c",
        "conformance/t",
        "conformance/sub/s1",
        "conformance/sub/s2",
    ];

    /// Three permanent workers, a transient one and a nested `one_for_all`
    /// supervisor of two, with the `Stop` quorum policy. The intensity
    /// leaves room for the measurement itself: each kill restarts the two
    /// or three children its host ran, and 40 rounds can take under a
    /// minute, past 100 restarts.
    fn tree() -> TreeSpec {
        let nested = SupervisorSpec::new(Strategy::OneForAll)
            .intensity(1000, 60_000)
            .child(ChildSpec::worker("s1", "probe"))
            .child(ChildSpec::worker("s2", "probe"));
        TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne)
                .intensity(1000, 60_000)
                .child(ChildSpec::worker("a", "probe"))
                .child(ChildSpec::worker("b", "probe"))
                .child(ChildSpec::worker("c", "probe"))
                .child(ChildSpec::worker("t", "probe").restart(RestartType::Transient))
                .child(ChildSpec::supervisor("sub", nested)),
        )
        .quorum_policy(QuorumPolicy::Stop)
    }

    /// A worker that says when it starts and stops.
    struct Probe {
        name: String,
        incarnation: u64,
    }

    impl Actor for Probe {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            println!("CHILD-UP {} {}", self.name, self.incarnation);
        }
        fn stopped(&mut self, _: &mut Context<Self>) {
            println!("CHILD-DOWN {} {}", self.name, self.incarnation);
        }
    }

    impl Handler<Terminate> for Probe {
        type Result = ();
        fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    fn probes() -> Factories {
        Factories::new().worker("probe", |ctx: &ChildContext| {
            let probe = Probe {
                name: ctx.name.clone(),
                incarnation: ctx.incarnation.0,
            };
            // Served under its name: the registry names the new host.
            Child::serving(Handlers::new(probe.start()))
        })
    }

    fn confchg_line(members: &[Member], left: &[MemberChange]) -> String {
        let members: Vec<String> = members.iter().map(Member::to_string).collect();
        let left: Vec<String> = left
            .iter()
            .map(|c| format!("{}:{:?}", c.member, c.reason))
            .collect();
        format!(
            "CONFCHG members={} left={}",
            members.join(","),
            left.join(",")
        )
    }

    /// After a confchg line: when the backend's stages of that confchg
    /// happened (`probe`), and when the member's code got it, in µs before
    /// now; the parent turns them into times from its kill.
    fn stages_line(got: Instant) {
        let now = Instant::now();
        let before = |t: Option<Instant>| {
            t.map_or("-".to_owned(), |t| {
                format!(
                    "{:.1}",
                    now.saturating_duration_since(t).as_secs_f64() * 1e6
                )
            })
        };
        let last = probe::last_confchg();
        println!(
            "STAGES {} {} {} {}",
            before(last.and_then(|s| s.dispatch_began)),
            before(last.map(|s| s.callback)),
            before(last.and_then(|s| s.taken)),
            before(Some(got)),
        );
    }

    async fn raw(
        mut conn: CorosyncConnection,
        input: &mut UnboundedReceiver<String>,
    ) -> Result<(), String> {
        let local = conn.local();
        let mut ready = false;
        loop {
            tokio::select! {
                event = next_event(&mut conn) => {
                    let got = Instant::now();
                    if let TransportEvent::ConfChg { members, left, .. } =
                        event.map_err(|e| e.to_string())?
                    {
                        if !ready && members.contains(&local) {
                            ready = true;
                            println!("READY {local}");
                        }
                        println!("{}", confchg_line(&members, &left));
                        stages_line(got);
                    }
                }
                line = input.recv() => if line.is_none() {
                    return Ok(());
                },
            }
        }
    }

    async fn supervised(
        conn: CorosyncConnection,
        input: &mut UnboundedReceiver<String>,
        observe: &crate::observe::Observe,
    ) -> Result<(), String> {
        // Batching off: the configuration the figures in BENCHMARKS.md
        // were measured with.
        let config = GroupConfig {
            batch: BatchConfig::disabled(),
            record_to: observe.record_alone(),
            ..GroupConfig::default()
        };
        let group = Group::start(conn, config)
            .await
            .map_err(|e| e.to_string())?;
        let mut events = group.subscribe();
        println!("READY {}", group.local());
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(GroupEvent::ViewChanged { members, left, .. }) => {
                        let got = Instant::now();
                        println!("{}", confchg_line(&members, &left));
                        stages_line(got);
                    }
                    Ok(GroupEvent::NameRegistered { name, host }) => println!("NAME-UP {name} {host}"),
                    Ok(GroupEvent::Closed { error }) => return Err(error.to_string()),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                line = input.recv() => match line.as_deref().map(str::trim) {
                    Some("tree") => match group.start_tree(TREE, tree(), probes()).await {
                        Ok(()) => println!("TREE ok"),
                        Err(e) => println!("TREE err {e}"),
                    },
                    Some("show") => {
                        if let Some(text) = observe.shown([&group]).await {
                            eprintln!("{text}");
                        }
                        println!("SHOWN");
                    }
                    Some(other) => println!("ERROR unknown command {other:?}"),
                    None => return Ok(()),
                },
            }
        }
    }

    pub fn main(group: &str, mode: &str, observe: crate::observe::Observe) {
        let (tx, mut input) = unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        probe::enable();
        let result = actix::System::new().block_on(async move {
            let name = GroupName::new(group).map_err(|e| e.to_string())?;
            let conn = Corosync::new().join(&name).map_err(|e| e.to_string())?;
            match mode {
                "raw" => raw(conn, &mut input).await,
                _ => supervised(conn, &mut input, &observe).await,
            }
        });
        if let Err(e) = result {
            println!("ERROR {e}");
        }
    }
}

fn main() {
    logs::init();
    let Cli {
        rounds,
        nodes,
        member,
        stages,
        observe,
    } = Cli::parse();
    #[cfg(feature = "corosync")]
    {
        if let Some(values) = member {
            // clap takes one or two values: GROUP, then MODE if given.
            let mode = values.get(1).map_or("group", String::as_str);
            member::main(&values[0], mode, observe);
            return;
        }
        if let Err(e) = run::main(rounds, nodes, stages, &observe) {
            eprintln!("failover: {e}");
            std::process::exit(1);
        }
    }
    #[cfg(not(feature = "corosync"))]
    {
        let _ = (rounds, nodes, member, stages, observe);
        eprintln!(
            "failover measures the real cluster: run with --features corosync (see the header)"
        );
        std::process::exit(2);
    }
}
