//! `bench --vs-etcd`: the kv service of actix-cpg and etcd under the same
//! client load, on the same three node namespaces, in one run.
//!
//! ```text
//!  for each mode:
//!    EtcdCluster::start(fsync)    ─► load process in acpg-n1 (target etcd) ─► CELL lines
//!    drop: etcd members killed, data removed
//!    3 × `acpg-kv serve --corosync` (this executable, role acpg-kv), one per node
//!                                 ─► load process in acpg-n1 (target acpg) ─► CELL lines
//!    drop: servers killed
//!  table: each cell's figures on both sides and the ratio actix-cpg / etcd
//! ```
//!
//! Rules:
//!
//! 1. A mode pairs an etcd configuration with a kv service configuration
//!    ([`Mode`]); both sides of a row run the same cells (see
//!    [`crate::kv_load`]) one after the other, each on a freshly started
//!    cluster, never both at once.
//! 2. Figures are reported as ratios of the two sides measured in the same
//!    run: throughput actix-cpg / etcd (higher favours actix-cpg), p99
//!    actix-cpg / etcd (lower favours actix-cpg).
//! 3. Every process started (etcd members, kv servers, load processes) is
//!    killed when its side ends, also on an error or a panic.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::{node_addr, EtcdCluster, Fsync, NODES};
use crate::kv_load::{Cell, CellResult, Op, ROLE_ENV};

/// Which configurations of the two systems a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// etcd as shipped (every commit fsynced) against the kv service with a
    /// data directory, safe delivery and group commit (`--sync batch`: one
    /// fsync per batch of commands, before any of their answers): both
    /// survive a whole-cluster power loss with every acknowledged write.
    Durable,
    /// As [`Mode::Durable`], the kv service's replies waiting for every
    /// replica's sync (`--safe-all`) instead of a majority's.
    DurableAll,
    /// etcd as shipped (every commit fsynced) against the kv service in
    /// memory with agreed delivery: what each system gives by default.
    /// Not a like-for-like durability comparison: etcd survives a
    /// whole-cluster power loss here, actix-cpg does not.
    EtcdDefault,
    /// etcd with `--unsafe-no-fsync` against the kv service in memory with
    /// agreed delivery: neither side waits for a disk.
    NoFsync,
}

impl Mode {
    /// The option value naming the mode (`--modes default,no-fsync`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::DurableAll => "durable-all",
            Mode::EtcdDefault => "default",
            Mode::NoFsync => "no-fsync",
        }
    }

    /// The mode named `name`.
    pub fn parse(name: &str) -> Result<Mode, String> {
        match name {
            "durable" => Ok(Mode::Durable),
            "durable-all" => Ok(Mode::DurableAll),
            "default" => Ok(Mode::EtcdDefault),
            "no-fsync" => Ok(Mode::NoFsync),
            other => Err(format!(
                "unknown mode {other:?} (durable, durable-all, default or no-fsync)"
            )),
        }
    }

    /// How etcd runs in this mode.
    pub fn etcd_fsync(self) -> Fsync {
        match self {
            Mode::Durable | Mode::DurableAll | Mode::EtcdDefault => Fsync::On,
            Mode::NoFsync => Fsync::Off,
        }
    }

    /// The two sides, as the table's first column says them.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Durable => {
                "etcd default (fsync) vs actix-cpg durable (data dir, group-commit fsync), safe (majority)"
            }
            Mode::DurableAll => {
                "etcd default (fsync) vs actix-cpg durable (data dir, group-commit fsync), safe (every holder)"
            }
            Mode::EtcdDefault => "etcd default (fsync) vs actix-cpg in memory, agreed",
            Mode::NoFsync => "etcd --unsafe-no-fsync vs actix-cpg in memory, agreed",
        }
    }

    /// The extra arguments of `acpg-kv serve` in this mode, for the server
    /// whose data directory (if any) is `dir`.
    pub(crate) fn serve_args(self, dir: &Path) -> Vec<String> {
        match self {
            Mode::Durable | Mode::DurableAll => vec![
                if self == Mode::Durable {
                    "--safe".into()
                } else {
                    "--safe-all".into()
                },
                "--data-dir".into(),
                dir.display().to_string(),
                "--sync".into(),
                "batch".into(),
            ],
            Mode::EtcdDefault | Mode::NoFsync => Vec::new(),
        }
    }
}

/// What `--vs-etcd` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The pairings, in order.
    pub modes: Vec<Mode>,
    /// The cells of each side.
    pub cells: Vec<Cell>,
}

impl Plan {
    /// Puts at 1, 16 and 64 in flight with 100 B and 4 KiB values, then
    /// reads at 1, 16 and 64 in flight; `scale` multiplies the counts.
    pub fn standard(modes: Vec<Mode>, scale: f64) -> Plan {
        let count = |in_flight: usize| {
            let base = match in_flight {
                1 => 2_000.0,
                16 => 10_000.0,
                _ => 20_000.0,
            };
            ((base * scale) as u64).max(in_flight as u64 * 2).max(50)
        };
        let mut cells = Vec::new();
        for size in [100, 4096] {
            for in_flight in [1, 16, 64] {
                cells.push(Cell {
                    op: Op::Put,
                    in_flight,
                    size,
                    count: count(in_flight),
                });
            }
        }
        for in_flight in [1, 16, 64] {
            cells.push(Cell {
                op: Op::Get,
                in_flight,
                size: 100,
                count: count(in_flight),
            });
        }
        Plan { modes, cells }
    }
}

/// One row of the table: a cell on both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// The pairing.
    pub mode: Mode,
    /// etcd's figures.
    pub etcd: CellResult,
    /// The kv service's figures.
    pub acpg: CellResult,
}

/// Processes killed when dropped (rule 3).
struct Killed(Vec<Child>, Vec<std::path::PathBuf>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The servers' data directories, once nothing holds them.
        for d in &self.1 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Where node `n`'s kv server listens.
pub(crate) fn kv_addr(n: u32) -> String {
    format!("{}:7379", node_addr(n))
}

/// Where node `n`'s kv server of `group` keeps its state (durable mode);
/// removed when its side ends.
pub(crate) fn data_dir(group: &str, n: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{group}-n{n}"))
}

/// Starts one kv server per node (this executable in role `acpg-kv`) and
/// waits until each listens.
fn start_kv(exe: &Path, mode: Mode) -> Result<Killed, String> {
    let group = format!("acpg-vs-etcd-{}-{}", std::process::id(), mode.name());
    let mut servers = Killed(Vec::new(), Vec::new());
    for n in 1..=NODES {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{n}")])
            .arg(exe)
            .args(["serve", &group, "--listen", &kv_addr(n), "--corosync"])
            .args(mode.serve_args(&data_dir(&group, n)))
            .env(ROLE_ENV, "acpg-kv")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the kv server on node {n}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        servers.0.push(child);
        servers.1.push(data_dir(&group, n));
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("SERVING ") => {}
            other => return Err(format!("kv server on node {n}: {other:?}")),
        }
        // Whatever it says later goes to our stderr.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("kv server {n}: {line}");
            }
        });
    }
    Ok(servers)
}

/// Runs the load process in node 1's namespace against `target` and
/// returns its cells.
fn run_load(
    exe: &Path,
    target: &str,
    endpoints: &[String],
    cells: &[Cell],
) -> Result<Vec<CellResult>, String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", "acpg-n1"])
        .arg(exe)
        .arg(target)
        .arg(endpoints.join(","))
        .args(cells.iter().map(Cell::to_spec))
        .env(ROLE_ENV, "kv-load")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the load: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let _load = Killed(vec![child], Vec::new());
    let mut results = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(r) = CellResult::parse(&line) {
            eprintln!(
                "vs-etcd: {target} {} {} in flight {} B: {:.0} ops/s p50 {:.0} µs p99 {:.0} µs{}",
                r.cell.op,
                r.cell.in_flight,
                r.cell.size,
                r.ops_per_s,
                r.p50_us,
                r.p99_us,
                if r.errors > 0 {
                    format!(" ({} errors)", r.errors)
                } else {
                    String::new()
                }
            );
            results.push(r);
        } else if let Some(e) = line.strip_prefix("ERROR ") {
            return Err(format!("{target} load: {e}"));
        }
    }
    if results.len() != cells.len() {
        return Err(format!(
            "{target} load ended after {} of {} cells",
            results.len(),
            cells.len()
        ));
    }
    Ok(results)
}

/// Runs `plan` on the test cluster with helper processes of the
/// executable `exe` (the `bench` binary, which dispatches on
/// [`ROLE_ENV`]).
pub fn run(exe: &Path, plan: &Plan) -> Result<Vec<Row>, String> {
    crate::bench::cluster_up()?;
    let mut rows = Vec::new();
    for &mode in &plan.modes {
        let started = Instant::now();
        eprintln!("vs-etcd: {}: etcd", mode.label());
        let etcd = {
            let cluster = EtcdCluster::start(mode.etcd_fsync())?;
            run_load(exe, "etcd", &cluster.endpoints(), &plan.cells)?
        };
        eprintln!("vs-etcd: {}: actix-cpg", mode.label());
        let acpg = {
            let _servers = start_kv(exe, mode)?;
            let addrs: Vec<String> = (1..=NODES).map(kv_addr).collect();
            run_load(exe, "acpg", &addrs, &plan.cells)?
        };
        // The servers' group leaves before the next mode's starts.
        std::thread::sleep(Duration::from_millis(200));
        rows.extend(
            etcd.into_iter()
                .zip(acpg)
                .map(|(etcd, acpg)| Row { mode, etcd, acpg }),
        );
        eprintln!("vs-etcd: {} done in {:?}", mode.name(), started.elapsed());
    }
    Ok(rows)
}

fn human(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The table of `rows` in Markdown (rule 2).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| pairing | op | in flight | value | etcd ops/s | etcd p50 ms | etcd p99 ms | actix-cpg ops/s | actix-cpg p50 ms | actix-cpg p99 ms | ops/s actix-cpg/etcd | p99 actix-cpg/etcd |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let errors = |c: &CellResult| {
            if c.errors > 0 {
                format!(" ({} err)", c.errors)
            } else {
                String::new()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0}{} | {:.2} | {:.2} | {:.0}{} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.mode.name(),
            r.etcd.cell.op,
            r.etcd.cell.in_flight,
            human(r.etcd.cell.size),
            r.etcd.ops_per_s,
            errors(&r.etcd),
            r.etcd.p50_us / 1000.0,
            r.etcd.p99_us / 1000.0,
            r.acpg.ops_per_s,
            errors(&r.acpg),
            r.acpg.p50_us / 1000.0,
            r.acpg.p99_us / 1000.0,
            r.acpg.ops_per_s / r.etcd.ops_per_s.max(1e-9),
            r.acpg.p99_us / r.etcd.p99_us.max(1e-9),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_plan_covers_every_load_of_the_comparison() {
        let plan = Plan::standard(vec![Mode::EtcdDefault], 1.0);
        let puts: Vec<(usize, usize)> = plan
            .cells
            .iter()
            .filter(|c| c.op == Op::Put)
            .map(|c| (c.size, c.in_flight))
            .collect();
        assert_eq!(
            puts,
            [
                (100, 1),
                (100, 16),
                (100, 64),
                (4096, 1),
                (4096, 16),
                (4096, 64)
            ]
        );
        let reads: Vec<usize> = plan
            .cells
            .iter()
            .filter(|c| c.op == Op::Get)
            .map(|c| c.in_flight)
            .collect();
        assert_eq!(reads, [1, 16, 64]);
        let smoke = Plan::standard(vec![Mode::NoFsync], 0.01);
        assert!(smoke.cells.iter().all(|c| c.count >= c.in_flight as u64));
    }

    #[test]
    fn modes_are_named_both_ways_and_durable_is_refused_until_it_exists() {
        for m in [
            Mode::Durable,
            Mode::DurableAll,
            Mode::EtcdDefault,
            Mode::NoFsync,
        ] {
            assert_eq!(Mode::parse(m.name()), Ok(m));
        }
        assert!(Mode::parse("fsync").is_err());
    }

    #[test]
    fn the_table_gives_actix_cpg_over_etcd() {
        let cell = Cell {
            op: Op::Put,
            in_flight: 64,
            size: 100,
            count: 10,
        };
        let side = |ops_per_s, p99_us| CellResult {
            cell,
            ops_per_s,
            p50_us: 500.0,
            p99_us,
            errors: 0,
        };
        let rows = [Row {
            mode: Mode::NoFsync,
            etcd: side(1000.0, 4000.0),
            acpg: side(5000.0, 1000.0),
        }];
        let text = table(&rows);
        assert!(text.contains("| 5.00 | 0.25 |"), "{text}");
    }
}
