//! Supervision failover for the group-size table of `bench --failover`:
//! the library's `failover` example run on the cluster as it is, one member
//! per node, and its table read back. It runs with `--stages`: a plain
//! CPG client on every node joins the supervised group (it announces
//! nothing, so it decides nothing), which gives the child's start against
//! the first plain client to see the confchg of the same kill.
//!
//! The example is another package's target: it is looked for beside the
//! bench executable (`target/<profile>/examples/failover`, built with
//! `cargo build [--release] --features corosync --example failover`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Percentiles of one line of the failover table, in ms from the SIGKILL.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// Kills measured.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What one failover run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Failover {
    /// Nodes of the cluster, one member on each.
    pub nodes: usize,
    /// A plain CPG client sees the `ProcDown` confchg.
    pub bare: Spread,
    /// A survivor's actix-cpg runtime sees the same confchg.
    pub confchg: Spread,
    /// The killed host's child runs on a survivor.
    pub running: Spread,
    /// The group registry names the child's new host.
    pub registered: Spread,
    /// The child running, minus the first plain client in the group seeing
    /// the confchg, same kill (`--stages`); `None` if the table lacks it.
    pub same_kill: Option<Spread>,
}

impl Failover {
    /// Reads the example's stdout (its Markdown table); `None` if a line is
    /// missing.
    pub fn parse(nodes: usize, table: &str) -> Option<Failover> {
        let line = |starts: &str| -> Option<Spread> {
            let row = table
                .lines()
                .find(|l| l.trim_start_matches(['|', ' ']).starts_with(starts))?;
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // "", label, n, p50, p99, max, ""
            Some(Spread {
                n: cells.get(2)?.parse().ok()?,
                p50: cells.get(3)?.parse().ok()?,
                p99: cells.get(4)?.parse().ok()?,
            })
        };
        Some(Failover {
            nodes,
            bare: line("bare CPG")?,
            confchg: line("actix-cpg: confchg")?,
            running: line("actix-cpg: child `a` running")?,
            registered: line("actix-cpg: child `a` registered")?,
            same_kill: line("child running - first plain client"),
        })
    }
}

/// Where the `failover` example of the build beside `bench_exe` is.
pub fn failover_exe(bench_exe: &Path) -> PathBuf {
    bench_exe
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("examples/failover")
}

/// Runs the `failover` example with `rounds` kills on the cluster as it
/// runs, which has `nodes` nodes; its progress goes to stderr.
pub fn run_failover(bench_exe: &Path, nodes: usize, rounds: usize) -> Result<Failover, String> {
    let exe = failover_exe(bench_exe);
    if !exe.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --features corosync --example failover` (the same profile as the bench)",
            exe.display()
        ));
    }
    let out = Command::new(&exe)
        .args([
            "--rounds",
            &rounds.to_string(),
            "--nodes",
            &nodes.to_string(),
            "--stages",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{} failed ({})", exe.display(), out.status));
    }
    Failover::parse(nodes, &stdout)
        .ok_or_else(|| format!("cannot read the failover table from:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failover_table_reads_back() {
        let table = "\
| measured from SIGKILL, ms                        |   n |      p50 |      p99 |      max |
|--------------------------------------------------|-----|----------|----------|----------|
| bare CPG: ProcDown confchg at a plain client     |  20 |      3.9 |      6.0 |      6.1 |
| actix-cpg: confchg seen by a survivor            |  20 |      5.6 |      8.2 |      8.3 |
| actix-cpg: child `a` running on a survivor       |  20 |      5.7 |      8.4 |      8.4 |
| actix-cpg: child `a` registered at its new host  |  20 |      6.0 |      9.0 |      9.1 |

| where the survivor's time goes, ms from SIGKILL  |   n |      p50 |      p99 |      max |
|--------------------------------------------------|-----|----------|----------|----------|
| child running - first plain client, same kill    |  20 |      0.9 |      3.3 |      3.4 |
";
        let f = Failover::parse(5, table).unwrap();
        assert_eq!(f.nodes, 5);
        assert_eq!((f.bare.n, f.bare.p50, f.bare.p99), (20, 3.9, 6.0));
        assert_eq!(f.confchg.p50, 5.6);
        assert_eq!(f.running.p99, 8.4);
        assert_eq!(f.registered.p50, 6.0);
        let same = f.same_kill.unwrap();
        assert_eq!((same.n, same.p50, same.p99), (20, 0.9, 3.3));
        let without = table.split("\n\n").next().unwrap();
        assert_eq!(Failover::parse(5, without).unwrap().same_kill, None);
        assert_eq!(Failover::parse(5, "| bare CPG: x | 1 | 2 | 3 | 4 |"), None);
    }
}
