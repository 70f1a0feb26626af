//! Failover time of a supervised child on the real 3-node cluster, next to
//! the bare CPG detection time, measured in the same run.
//!
//! Two measurements, each over `--rounds N` SIGKILLs (default 20):
//! - bare: three plain CPG clients (no actix-cpg protocol), one per node;
//!   the one on node 3 is killed; time until the first of the others gets
//!   the `ProcDown` confchg;
//! - supervised: three members run the test tree
//!   (`actix_cpg::testing::test_tree`); the process hosting child `a` is
//!   killed; times until a survivor sees the confchg, until `a` runs on a
//!   survivor, and until the group registry names its new host.
//!
//! Times are taken by this parent process when the members' lines arrive,
//! from just before the kill. Run as root with the cluster up:
//!
//! ```text
//! bash scripts/cluster.sh up
//! cargo run --release --features corosync --example failover -- --rounds 20
//! ```

#[cfg(feature = "corosync")]
mod run {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::mpsc::{channel, Receiver};
    use std::time::{Duration, Instant};

    use actix_cpg::testing::{self, Mode, TEST_TREE_CHILDREN};
    use actix_cpg::transport::corosync::Corosync;
    use actix_cpg::GroupName;

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
        fn spawn(node: u32, group: &str, mode: &str) -> Result<Agent, String> {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut process = Command::new("ip")
                .args(["netns", "exec", &format!("acpg-n{node}")])
                .arg(exe)
                .args(["--agent", group, mode])
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
            let ok = TEST_TREE_CHILDREN
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

    pub fn main(rounds: usize) -> Result<(), String> {
        eprintln!("bare CPG detection: {rounds} kills");
        let mut bare = Vec::new();
        for round in 0..rounds {
            // The same shape as the supervised run: three members, one per
            // node; the first survivor to see the confchg counts.
            let group = format!("failover-bare-{}-{round}", std::process::id());
            let mut observers = vec![
                Agent::spawn(1, &group, "raw")?,
                Agent::spawn(2, &group, "raw")?,
            ];
            let mut victim = Agent::spawn(3, &group, "raw")?;
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
        let mut agents = Vec::new();
        for node in 1..=3 {
            let mut a = Agent::spawn(node, &group, "group")?;
            a.cmd("tree")?;
            a.wait_for(|l| l.starts_with("TREE "))?;
            agents.push(a);
        }
        let (mut confchg, mut running, mut registered) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let c = settled(&mut agents)?;
            let victim = c["conformance/a"][0];
            let victim_member = agents[victim].member.clone();
            let node = agents[victim].node;
            let left = format!("left={victim_member}:ProcDown");
            let t0 = Instant::now();
            agents[victim].kill();
            let mut seen_confchg = None;
            let mut seen_running = None;
            let mut seen_registered = None;
            let deadline = t0 + WAIT;
            while seen_confchg.is_none() || seen_running.is_none() || seen_registered.is_none() {
                if Instant::now() > deadline {
                    return Err(format!("round {round}: failover not seen"));
                }
                for a in agents.iter_mut().filter(|a| !a.dead) {
                    a.pump();
                    for (at, line) in a.seen.iter().filter(|(at, _)| *at >= t0) {
                        if seen_confchg.is_none() && line.contains(&left) {
                            seen_confchg = Some(*at);
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
            let mut fresh = Agent::spawn(node, &group, "group")?;
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
        Ok(())
    }

    /// Member mode: the conformance agent over the real backend.
    pub fn agent(group: &str, mode: &str) {
        let mode = if mode == "raw" {
            Mode::Raw
        } else {
            Mode::Group
        };
        match GroupName::new(group) {
            Ok(group) => testing::run_stdio(Corosync::new(), &group, mode),
            Err(e) => println!("ERROR {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    #[cfg(feature = "corosync")]
    {
        if let Some(i) = args.iter().position(|a| a == "--agent") {
            let group = args.get(i + 1).map(String::as_str).unwrap_or("");
            let mode = args.get(i + 2).map(String::as_str).unwrap_or("group");
            run::agent(group, mode);
            return;
        }
        let rounds = args
            .iter()
            .position(|a| a == "--rounds")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(20);
        if let Err(e) = run::main(rounds) {
            eprintln!("failover: {e}");
            std::process::exit(1);
        }
    }
    #[cfg(not(feature = "corosync"))]
    {
        let _ = args;
        eprintln!(
            "failover measures the real cluster: run with --features corosync (see the header)"
        );
        std::process::exit(2);
    }
}
