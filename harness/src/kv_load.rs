//! The client load of the etcd comparison (`bench --vs-etcd`): the same
//! closed-loop load against etcd and against the kv service, measured on
//! the client.
//!
//! ```text
//!  bench (orchestrator) ── ip netns exec acpg-n1 <bench> (role kv-load) ──► one load process
//!        ▲                                                                    │ per cell: N workers,
//!        └──────────── CELL op=put in_flight=16 size=100 ops=... lines ◄──────┘ each one request at a time
//! ```
//!
//! Rules:
//!
//! 1. A cell is (operation, requests in flight, value size, count): that
//!    many workers each send one request, wait for its answer, and send
//!    the next, until the cell's count is used up (a closed loop: the
//!    offered load is what the system can answer).
//! 2. Latency is from the request's send to its answer, on the client;
//!    throughput is answered requests over the cell's wall time.
//! 3. Requests spread over the three members: the etcd client is given
//!    the three endpoints (it balances between them, a follower forwards
//!    to the leader); on the kv service worker `w` uses the connection to
//!    member `w mod 3`.
//! 4. A `put` writes `size` bytes to one of 256 keys of its worker; a `get`
//!    reads one of 1,000 keys of 100 bytes written before the first read
//!    cell. etcd's `get` is its default, linearizable (`serializable =
//!    false`); the kv service's `get` takes its place in the total order.
//! 5. A failed request is counted, never retried, and its latency kept.
//! 6. Each target first gets a warm-up (200 puts, 16 in flight) that is
//!    not measured: connections open, the leader is known.

use std::cell::Cell as Counter;
use std::fmt;
use std::future::Future;
use std::time::Instant;

/// The environment variable naming a role of the `bench` executable when
/// the orchestrator starts it as a helper process (`kv-load`, `acpg-kv`).
pub const ROLE_ENV: &str = "ACPG_BENCH_ROLE";

/// What a cell's requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Writes a value.
    Put,
    /// A linearizable read.
    Get,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Put => "put",
            Op::Get => "get",
        })
    }
}

/// One measured load (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The operation.
    pub op: Op,
    /// Requests in flight (workers).
    pub in_flight: usize,
    /// Bytes of each value.
    pub size: usize,
    /// Requests in all.
    pub count: u64,
}

impl Cell {
    /// `put:16:100:5000`.
    pub fn to_spec(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.op, self.in_flight, self.size, self.count
        )
    }

    /// The inverse of [`Cell::to_spec`].
    pub fn parse(spec: &str) -> Result<Cell, String> {
        let bad = || format!("bad cell {spec:?} (want OP:IN_FLIGHT:SIZE:COUNT)");
        let parts: Vec<&str> = spec.split(':').collect();
        let [op, in_flight, size, count] = parts.as_slice() else {
            return Err(bad());
        };
        Ok(Cell {
            op: match *op {
                "put" => Op::Put,
                "get" => Op::Get,
                _ => return Err(bad()),
            },
            in_flight: in_flight.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            size: size.parse().map_err(|_| bad())?,
            count: count.parse().map_err(|_| bad())?,
        })
    }
}

/// What one cell measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// Answered requests per second.
    pub ops_per_s: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Failed requests (rule 5).
    pub errors: u64,
}

impl CellResult {
    /// The `CELL ...` line the load process prints.
    pub fn to_line(&self) -> String {
        format!(
            "CELL {} ops_per_s={:.1} p50_us={:.1} p99_us={:.1} errors={}",
            self.cell.to_spec(),
            self.ops_per_s,
            self.p50_us,
            self.p99_us,
            self.errors
        )
    }

    /// The inverse of [`CellResult::to_line`].
    pub fn parse(line: &str) -> Option<CellResult> {
        let mut words = line.strip_prefix("CELL ")?.split_whitespace();
        let cell = Cell::parse(words.next()?).ok()?;
        let mut field = |name: &str| -> Option<f64> {
            words
                .next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        Some(CellResult {
            cell,
            ops_per_s: field("ops_per_s")?,
            p50_us: field("p50_us")?,
            p99_us: field("p99_us")?,
            errors: field("errors")? as u64,
        })
    }
}

/// The value at quantile `q` (0..=1) of sorted samples; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// Runs `cell` (rules 1, 2, 5): `request(worker, n)` sends request `n`
/// as worker `worker` and tells whether it succeeded.
pub async fn drive<F, Fut>(cell: Cell, request: F) -> CellResult
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = bool>,
{
    let next = Counter::new(0u64);
    let started = Instant::now();
    let workers = (0..cell.in_flight).map(|w| {
        let (next, request) = (&next, &request);
        async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            loop {
                let n = next.get();
                if n >= cell.count {
                    break;
                }
                next.set(n + 1);
                let sent = Instant::now();
                if !request(w, n).await {
                    errors += 1;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            (latencies, errors)
        }
    });
    let done = futures::future::join_all(workers).await;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut latencies: Vec<u64> = Vec::with_capacity(cell.count as usize);
    let mut errors = 0;
    for (l, e) in done {
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    CellResult {
        cell,
        ops_per_s: (latencies.len() as u64 - errors) as f64 / secs,
        p50_us: quantile(&latencies, 0.5),
        p99_us: quantile(&latencies, 0.99),
        errors,
    }
}

/// The key of put `n` of worker `w` (rule 4).
pub fn put_key(w: usize, n: u64) -> String {
    format!("b{w}-{}", n % 256)
}

/// The key of read `n` of worker `w` (rule 4).
pub fn read_key(w: usize, n: u64) -> String {
    format!("r{}", (w as u64 * 7919 + n) % READ_KEYS)
}

/// Keys written before the first read cell.
pub const READ_KEYS: u64 = 1000;

/// Why a cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Rule 6, not measured.
    WarmUp,
    /// Writes the keys of the reads (rule 4), not measured.
    Fill,
    /// A cell asked for.
    Measure,
}

/// The cells to run, in order, with the warm-up and the reads' keys.
fn with_setup(cells: &[Cell]) -> Vec<(Cell, Stage)> {
    let warm_up = Cell {
        op: Op::Put,
        in_flight: 16,
        size: 100,
        count: 200,
    };
    let fill = Cell {
        op: Op::Put,
        in_flight: 64,
        size: 100,
        count: READ_KEYS,
    };
    let mut plan = vec![(warm_up, Stage::WarmUp)];
    let mut filled = false;
    for c in cells {
        if c.op == Op::Get && !filled {
            plan.push((fill, Stage::Fill));
            filled = true;
        }
        plan.push((*c, Stage::Measure));
    }
    plan
}

/// The kv service's side: `addrs` are the three members' line-protocol
/// addresses. Prints a `CELL` line per measured cell.
pub async fn acpg_cells(addrs: &[String], cells: &[Cell]) -> Result<(), String> {
    use crate::kv_service::LineClient;
    let mut conns = Vec::new();
    for a in addrs {
        let c = LineClient::connect(a)
            .await
            .map_err(|e| format!("cannot connect to {a}: {e}"))?;
        let primary = c.call("wait-primary").await?;
        if !primary.starts_with("PRIMARY") {
            return Err(format!("{a}: {primary}"));
        }
        conns.push(c);
    }
    let conns = &conns;
    for (cell, stage) in with_setup(cells) {
        let value = "x".repeat(cell.size);
        let fill = stage == Stage::Fill;
        let value = &value;
        let result = drive(cell, |w, n| async move {
            let conn = &conns[w % conns.len()];
            match cell.op {
                Op::Put => {
                    let key = if fill { format!("r{n}") } else { put_key(w, n) };
                    conn.call(&format!("put {key} {value}"))
                        .await
                        .is_ok_and(|a| a.starts_with("OK "))
                }
                Op::Get => conn
                    .call(&format!("get {}", read_key(w, n)))
                    .await
                    .is_ok_and(|a| a.starts_with("VALUE ")),
            }
        })
        .await;
        if stage == Stage::Measure {
            println!("{}", result.to_line());
        }
    }
    Ok(())
}

/// etcd's side: `endpoints` are the three members' client URLs. Prints a
/// `CELL` line per measured cell.
#[cfg(feature = "etcd")]
pub async fn etcd_cells(endpoints: &[String], cells: &[Cell]) -> Result<(), String> {
    let client = etcd_client::Client::connect(endpoints, None)
        .await
        .map_err(|e| format!("cannot connect to etcd: {e}"))?;
    let kv = client.kv_client();
    for (cell, stage) in with_setup(cells) {
        let value = "x".repeat(cell.size);
        let fill = stage == Stage::Fill;
        let (value, kv) = (&value, &kv);
        let result = drive(cell, |w, n| async move {
            let mut kv = kv.clone();
            match cell.op {
                Op::Put => {
                    let key = if fill { format!("r{n}") } else { put_key(w, n) };
                    kv.put(key, value.as_bytes(), None).await.is_ok()
                }
                Op::Get => kv
                    .get(read_key(w, n), None)
                    .await
                    .is_ok_and(|r| r.kvs().len() == 1),
            }
        })
        .await;
        if stage == Stage::Measure {
            println!("{}", result.to_line());
        }
    }
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn etcd_cells(_endpoints: &[String], _cells: &[Cell]) -> Result<(), String> {
    Err("the etcd side needs a build with the `etcd` feature".into())
}

/// The load process (role `kv-load`): `acpg|etcd ENDPOINT,... CELL...`.
/// Prints one `CELL` line per cell, or `ERROR ...`; returns the exit code.
pub fn load_main(args: &[String]) -> i32 {
    let run = || -> Result<(), String> {
        let [target, endpoints, cells @ ..] = args else {
            return Err("usage: kv-load acpg|etcd ENDPOINT,... CELL...".into());
        };
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
        let cells = cells
            .iter()
            .map(|c| Cell::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            match target.as_str() {
                "acpg" => acpg_cells(&endpoints, &cells).await,
                "etcd" => etcd_cells(&endpoints, &cells).await,
                other => Err(format!("unknown target {other:?}")),
            }
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            println!("ERROR {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_results_survive_their_lines() {
        let cell = Cell {
            op: Op::Get,
            in_flight: 64,
            size: 4096,
            count: 500,
        };
        assert_eq!(Cell::parse(&cell.to_spec()), Ok(cell));
        let result = CellResult {
            cell,
            ops_per_s: 1234.5,
            p50_us: 100.0,
            p99_us: 900.5,
            errors: 2,
        };
        assert_eq!(CellResult::parse(&result.to_line()), Some(result));
        assert!(Cell::parse("put:0:100:10").is_err());
        assert!(Cell::parse("scan:1:100:10").is_err());
        assert_eq!(CellResult::parse("CELL nonsense"), None);
    }

    #[test]
    fn quantiles_are_ranks_of_the_sorted_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), 50.0);
        assert_eq!(quantile(&samples, 0.99), 99.0);
        assert_eq!(quantile(&[7], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn reads_come_after_their_keys_are_written() {
        let cell = |op, in_flight| Cell {
            op,
            in_flight,
            size: 100,
            count: 10,
        };
        let plan = with_setup(&[cell(Op::Put, 1), cell(Op::Get, 1), cell(Op::Get, 16)]);
        let stages: Vec<Stage> = plan.iter().map(|(_, s)| *s).collect();
        use Stage::*;
        assert_eq!(stages, [WarmUp, Measure, Fill, Measure, Measure]);
        assert_eq!(plan[2].0.count, READ_KEYS);
    }

    #[test]
    fn every_request_of_a_cell_is_sent_once() {
        let seen = std::cell::RefCell::new(Vec::new());
        let cell = Cell {
            op: Op::Put,
            in_flight: 4,
            size: 1,
            count: 50,
        };
        let result = futures::executor::block_on(drive(cell, |_, n| {
            seen.borrow_mut().push(n);
            async move { n % 10 != 0 }
        }));
        let mut seen = seen.into_inner();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(result.errors, 5);
    }
}
