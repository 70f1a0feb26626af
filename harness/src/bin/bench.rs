//! Ordered message throughput, latency and memory: the raw binding and
//! actix-cpg measured in the same run, printed as Markdown tables.
//!
//! ```sh
//! cargo run -p actix-cpg-harness --release --bin bench                      # sim backend only
//! cargo run -p actix-cpg-harness --release --features corosync --bin bench -- --corosync   # and the real cluster
//! cargo run -p actix-cpg-harness --release --features corosync --bin bench -- --corosync --no-sim --overload 60
//! cargo run -p actix-cpg-harness --bin bench -- --smoke                      # seconds: CI keeps it from rotting
//! cargo run -p actix-cpg-harness --release --bin bench -- --key --sizes 64,1024,16384,65536   # what a group key costs
//! flock /tmp/acpg-cluster.lock cargo run -p actix-cpg-harness --release --features corosync --bin bench -- \
//!     --corosync --no-sim --crypto both --key    # knet crypto off, then on (restarts the cluster)
//! ```
//!
//! Options: `--corosync` (also the real cluster of `scripts/cluster.sh`;
//! skipped with a message when it is not up), `--no-sim`, `--sizes
//! 64,1024,16384,65536,1048576,4194304`, `--nodes 1,3`, `--scale F` (message counts ×F),
//! `--no-latency`, `--no-throughput`, `--overload SECS` (a producer
//! outrunning the daemon; RSS sampled every second), `--repeat N` (each
//! latency pair N times: the table gives the run with the median p99 ratio,
//! and the spread), `--no-floor` (skip the floor: the binding plus a
//! bincode decode and a `do_send` into an actor on every member, unbatched
//! and batched, run beside raw by default and printed with the library's
//! ratio to it), `--smoke`, `--key` (also the actor path of a keyed
//! group: every multicast MACed and verified, [`actix_cpg::GroupKey`];
//! printed as a ratio to the unkeyed actor path and to raw), `--crypto
//! on|off|both` (restart the real cluster with knet's crypto on —
//! aes256 + sha256 — or off, or one pass off then one on, ending with the
//! default; each pass has its own raw runs, and a table sets the two side
//! by side). `--crypto` stops and starts the shared cluster: run the bench
//! under `flock /tmp/acpg-cluster.lock`.
//!
//! Group sizes: on the real cluster a `--nodes` value above 3 runs on a
//! cluster of that many nodes, and 1 to 3 on one of 3 (the default): the
//! bench stops and starts the shared cluster between sizes
//! (`scripts/cluster.sh` with `ACPG_NODES`), and leaves it at 3 nodes if it
//! changed it. `--failover ROUNDS` also runs the library's `failover`
//! example (built beside the bench: `cargo build --release --features
//! corosync --example failover`) on each corosync size of 2 nodes or more,
//! and a table sets throughput, p99 latency and failover of every size side
//! by side. Run it under `flock /tmp/acpg-cluster.lock`:
//!
//! ```sh
//! flock /tmp/acpg-cluster.lock bash -c 'bash scripts/cluster.sh up && target/release/bench \
//!     --corosync --no-sim --nodes 3,5,7 --failover 20; bash scripts/cluster.sh down'
//! ```
//!
//! `--vs-etcd` measures the kv service (`acpg-kv serve --corosync`, one
//! replica per node namespace) against a three-member etcd in the same
//! namespaces, under the same client load, in one run, and prints only
//! that table (see `actix_cpg_harness::vs_etcd`); it needs the real
//! cluster, `--features corosync,etcd` (the `etcd` feature needs `protoc`:
//! Debian `protobuf-compiler`) and installs Debian's `etcd-server` if it is
//! missing. `--modes durable,durable-all,default,no-fsync` picks the
//! pairings (by default all but `durable-all`, whose replies wait for every
//! replica's sync instead of a majority's); `--scale` and `--smoke` set
//! the request counts.
//!
//! ```sh
//! flock /tmp/acpg-cluster.lock cargo run -p actix-cpg-harness --release --features corosync,etcd \
//!     --bin bench -- --vs-etcd
//! ```
//!
//! Three more comparisons with etcd, each runnable alone, each printing
//! only its table (same needs as `--vs-etcd`):
//!
//! - `--vs-etcd-failover [--faults process,daemon,link] [--rounds N]`:
//!   leader failover of the election (`actix_cpg::Election`, one member
//!   per node) against etcd's election API (campaign on a lease), after a
//!   SIGKILL of the leader's process, of its node's daemon, and a cut of
//!   its node's link; 20 rounds each by default
//!   (`actix_cpg_harness::failover`);
//! - `--vs-etcd-restart [--variants processes,daemons] [--rounds N]`: every
//!   durable kv server (and, with `daemons`, every corosync daemon) or
//!   every etcd member SIGKILLed at once, and the time from the restart to
//!   the first acknowledged put; 5 rounds each by default
//!   (`actix_cpg_harness::restart`);
//! - `--vs-etcd-joiner [--chunks N,M]`: a member joining empty while two
//!   hold 50 MB and a writer keeps putting, until it caught up, and the
//!   writer's latency meanwhile, the kv service once with each count of
//!   snapshot chunks in flight (the library's default unless given)
//!   (`actix_cpg_harness::late_joiner`).
//!
//! `--loss-window [--rounds N]` (needs `--features corosync`) measures
//! what the loss of one node takes with it on the durable kv service:
//! puts pipelined to node 1, node 1's corosync daemon SIGKILLed (then its
//! link cut instead), every put node 1 acknowledged read back through node
//! 2; agreed delivery, then safe; 10 rounds each by default
//! (`actix_cpg_harness::loss_window`). It fails if safe delivery lost an
//! acknowledged put.
//!
//! `--compression` measures only compression (`GroupConfig::compress_above`):
//! for 16 and 64 KiB unbatched and 1 KiB batched (sizes from `--sizes`
//! if given), one sender, the raw binding, then the actor path with
//! JSON-like and with random payloads, compression off and on, all in one
//! run on each `--nodes` value, printed as one table of ratios to raw.
//! Every other table's actor path sends random payloads, which compression
//! tries and leaves as they are.
//!
//! ```sh
//! flock /tmp/acpg-cluster.lock bash -c 'bash scripts/cluster.sh up && target/release/bench \
//!     --corosync --no-sim --nodes 3 --compression; bash scripts/cluster.sh down'
//! ```
//!
//! `--shared-payload` measures only what reading a large payload as a
//! `wire::Payload` (sharing the delivered buffer) instead of a `Vec<u8>`
//! gains: for 16 KiB, 64 KiB and 1 MiB unbatched (sizes from `--sizes` if
//! given), one sender, the raw binding, then the actor path with the
//! sink's blob a `Vec<u8>` and a `Payload` (the same bytes on the wire),
//! in one run on each `--nodes` value, printed as one table of ratios to
//! raw.
//!
//! The stage profile: with the throughput runs (or alone with `--stages`;
//! `--no-stages` skips it), on the first group size of two or more, for
//! every size up to 64 KiB: the raw binding, then the actor path
//! unbatched (and batched up to 1 KiB), one sender, each member timing
//! the library's stages (`actix_cpg::stages`), printed as one table per
//! size: each stage's time per message on the sender and on each
//! receiver, beside the process's user and system CPU time and page faults
//! and the raw binding's. It fails if a stage of the send or receive path
//! was never timed.
//!
//! Sizes above the atomic multicast size (about 1 MiB: the default list
//! ends with 1 MiB and 4 MiB) go in pieces on the actor path, and through
//! libcpg's own fragmentation on the raw path.
//!
//! Every member is a process of this executable (one per node namespace on
//! corosync); see `actix_cpg_harness::bench`. Tables go to stdout,
//! progress to stderr.

use std::io::Write;
use std::time::Duration;

use actix_cpg_harness::bench::{self, Backend, Case, Crypto, Load, Outcome, Path, Payload};
use actix_cpg_harness::vs_etcd::{self, Mode};
use actix_cpg_harness::{failover, late_joiner, loss_window, restart};

struct Options {
    sim: bool,
    corosync: bool,
    sizes: Vec<usize>,
    nodes: Vec<usize>,
    scale: f64,
    latency: bool,
    throughput: bool,
    overload: Option<u64>,
    repeat: usize,
    smoke: bool,
    key: bool,
    /// The floor paths beside raw (`--no-floor` turns them off).
    floor: bool,
    /// `--failover ROUNDS`: kills of the `failover` example per corosync
    /// size; 0: not run.
    failover: usize,
    /// knet crypto settings to restart the real cluster with, one pass
    /// each; `None`: measure the cluster as it runs.
    crypto: Option<Vec<Crypto>>,
    /// `--vs-etcd`: only the etcd comparison, with these pairings.
    vs_etcd: Option<Vec<Mode>>,
    /// `--vs-etcd-failover`: only the failover comparison, these faults.
    etcd_failover: Option<Vec<failover::Fault>>,
    /// `--vs-etcd-restart`: only the whole-cluster restart comparison,
    /// these variants.
    restart: Option<Vec<restart::Variant>>,
    /// `--vs-etcd-joiner`: only the late-joiner comparison.
    joiner: bool,
    /// `--loss-window`: only the loss-window table.
    loss_window: bool,
    /// `--chunks N,M`: the late joiner's kv service sides, once with each
    /// count of snapshot chunks in flight.
    chunks: Vec<usize>,
    /// `--rounds N`: rounds per fault (or variant) and system.
    rounds: Option<usize>,
    /// `--compression`: only the compression table.
    compression: bool,
    /// `--shared-payload`: only the `Vec<u8>` / `Payload` table.
    shared_payload: bool,
    /// Whether `--sizes` was given.
    sizes_given: bool,
    /// The stage profile: `--stages` runs it, `--no-stages` does not; by
    /// default it runs with the throughput runs.
    stages: Option<bool>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        sim: true,
        corosync: false,
        sizes: vec![64, 1024, 16384, 65536, 1 << 20, 4 << 20],
        nodes: vec![1, 3],
        scale: 1.0,
        latency: true,
        throughput: true,
        overload: None,
        repeat: 1,
        smoke: false,
        key: false,
        floor: true,
        failover: 0,
        crypto: None,
        vs_etcd: None,
        etcd_failover: None,
        restart: None,
        joiner: false,
        loss_window: false,
        chunks: vec![actix_cpg::ReplicaConfig::default().chunks_in_flight],
        rounds: None,
        compression: false,
        shared_payload: false,
        sizes_given: false,
        stages: None,
    };
    let mut variants = vec![restart::Variant::Processes, restart::Variant::Daemons];
    let mut faults = vec![
        failover::Fault::ProcessKill,
        failover::Fault::DaemonKill,
        failover::Fault::LinkCut,
    ];
    let mut modes = vec![Mode::Durable, Mode::EtcdDefault, Mode::NoFsync];
    let mut args = std::env::args().skip(1);
    let list = |v: Option<String>| -> Result<Vec<usize>, String> {
        v.ok_or("missing value")?
            .split(',')
            .map(|x| x.parse::<usize>().map_err(|e| format!("{x:?}: {e}")))
            .collect()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--corosync" => o.corosync = true,
            "--no-sim" => o.sim = false,
            "--sizes" => {
                o.sizes = list(args.next())?;
                o.sizes_given = true;
            }
            "--compression" => o.compression = true,
            "--shared-payload" => o.shared_payload = true,
            "--nodes" => o.nodes = list(args.next())?,
            "--scale" => {
                o.scale = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--scale needs a number")?
            }
            "--no-latency" => o.latency = false,
            "--no-throughput" => o.throughput = false,
            "--overload" => {
                o.overload = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--overload needs seconds")?,
                )
            }
            "--repeat" => {
                o.repeat = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--repeat needs a count of at least 1")?
            }
            "--smoke" => o.smoke = true,
            "--key" => o.key = true,
            "--no-floor" => o.floor = false,
            "--no-stages" => o.stages = Some(false),
            "--stages" => o.stages = Some(true),
            "--failover" => {
                o.failover = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--failover needs a number of kills")?
            }
            "--crypto" => {
                o.crypto = Some(match args.next().as_deref() {
                    Some("on" | "aes256") => vec![Crypto::Aes256],
                    Some("off" | "none") => vec![Crypto::None],
                    // Off first, so the cluster ends with the default.
                    Some("both") => vec![Crypto::None, Crypto::Aes256],
                    _ => return Err("--crypto takes on, off or both".into()),
                })
            }
            "--vs-etcd" => o.vs_etcd = Some(Vec::new()),
            "--vs-etcd-failover" => o.etcd_failover = Some(Vec::new()),
            "--faults" => {
                faults = args
                    .next()
                    .ok_or("--faults takes process,daemon,link")?
                    .split(',')
                    .map(failover::Fault::parse)
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => {
                o.rounds = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--rounds needs a count of at least 1")?,
                )
            }
            "--vs-etcd-restart" => o.restart = Some(Vec::new()),
            "--vs-etcd-joiner" => o.joiner = true,
            "--loss-window" => o.loss_window = true,
            "--chunks" => {
                o.chunks = list(args.next())?;
                if o.chunks.contains(&0) {
                    return Err("--chunks takes counts from 1".into());
                }
            }
            "--variants" => {
                variants = args
                    .next()
                    .ok_or("--variants takes processes,daemons")?
                    .split(',')
                    .map(restart::Variant::parse)
                    .collect::<Result<_, _>>()?
            }
            "--modes" => {
                modes = args
                    .next()
                    .ok_or("--modes takes durable,durable-all,default,no-fsync")?
                    .split(',')
                    .map(Mode::parse)
                    .collect::<Result<_, _>>()?
            }
            // `cargo bench` passes this to every target.
            "--bench" => {}
            other => return Err(format!("unknown option {other:?} (see the file's docs)")),
        }
    }
    if o.vs_etcd.is_some() {
        o.vs_etcd = Some(modes);
    }
    if o.etcd_failover.is_some() {
        o.etcd_failover = Some(faults);
    }
    if o.restart.is_some() {
        o.restart = Some(variants);
    }
    if o.smoke {
        o.sizes = vec![64, 16384, 1 << 20];
        o.scale = 0.01;
        o.overload = o.overload.map(|_| 3);
    }
    if o.nodes.iter().any(|n| !(1..=MAX_NODES).contains(n)) {
        return Err(format!("--nodes takes 1 to {MAX_NODES}"));
    }
    Ok(o)
}

const WINDOW: usize = 64;
/// The test cluster's default size, and the largest `scripts/cluster.sh`
/// builds.
const CLUSTER_NODES: usize = 3;
const MAX_NODES: usize = 9;

/// The cluster size a corosync case of `nodes` members runs on.
fn cluster_size_for(nodes: usize) -> usize {
    nodes.max(CLUSTER_NODES)
}

const ACTOR: Path = Path::Actor {
    batching: false,
    keyed: false,
};
const BATCHED: Path = Path::Actor {
    batching: true,
    keyed: false,
};
const KEYED: Path = Path::Actor {
    batching: false,
    keyed: true,
};
const BATCHED_KEYED: Path = Path::Actor {
    batching: true,
    keyed: true,
};
const FLOOR: Path = Path::Floor { batching: false };
const FLOOR_BATCHED: Path = Path::Floor { batching: true };

/// Messages per sender: about 64 MiB per member at full scale.
fn count_for(size: usize, senders: usize, path: Path, scale: f64) -> u64 {
    let base = if size > 65536 {
        // Large messages: 64 MiB's worth, at least 16.
        ((64 << 20) / size).max(16) as f64
    } else {
        ((64 << 20) / size).clamp(1000, 100_000) as f64
    };
    // Batching carries small messages many times faster: give it more, so
    // its run lasts about as long.
    let batched = matches!(
        path,
        Path::Actor { batching: true, .. } | Path::Floor { batching: true }
    );
    let boost = if batched && size <= 1024 { 4.0 } else { 1.0 };
    ((base * boost * scale) / senders as f64).max(20.0) as u64
}

fn label(backend: Backend, crypto: Option<Crypto>) -> String {
    match (backend, crypto) {
        (Backend::Sim, _) => "sim (in-process)".into(),
        (Backend::Corosync, Some(c)) => format!("corosync, {c}"),
        (Backend::Corosync, None) => "corosync".into(),
    }
}

fn human(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn run(
    case: &Case,
    crypto: Option<Crypto>,
    exe: &std::path::Path,
    n: &mut usize,
) -> Result<Outcome, String> {
    *n += 1;
    let what = format!(
        "[{}] {} {}n {} x{} {}{}",
        n,
        label(case.backend, crypto),
        case.load.members,
        human(case.load.size),
        case.load.senders,
        case.path,
        match (case.load.rate, case.load.duration) {
            (_, Some(d)) => format!(" overload {}s", d.as_secs()),
            (Some(r), _) => format!(" @{r:.0}/s"),
            _ => String::new(),
        }
    );
    let mut last = std::time::Instant::now();
    let mut progress = |done: u64, of: u64| {
        if last.elapsed() >= Duration::from_millis(500) {
            last = std::time::Instant::now();
            let pct = (done * 100).checked_div(of).unwrap_or(0);
            eprint!("\r{what}: {done}/{of} ({pct}%)   ");
            let _ = std::io::stderr().flush();
        }
    };
    eprint!("\r{what} ...");
    let result = bench::run_case(case, exe, &mut progress);
    match &result {
        Ok(o) => eprintln!(
            "\r{what}: {:.0} msg/s, {:.1} MB/s, {:.2}s{}",
            o.msgs_per_s,
            o.mb_per_s,
            o.secs,
            " ".repeat(20)
        ),
        Err(e) => eprintln!("\r{what}: FAILED: {e}"),
    }
    result
}

/// The largest size the stage profile runs (larger ones are pieces and
/// the copies of "Copies of a payload that remain").
const STAGES_UP_TO: usize = 65536;
/// The largest size the stage profile also runs batched.
const STAGES_BATCHED_UP_TO: usize = 1024;

/// One stage profile: the raw binding (its CPU only) and the actor path,
/// unbatched and (small sizes) batched, one sender, stages timed.
struct StageRow {
    backend: Backend,
    crypto: Option<Crypto>,
    nodes: usize,
    size: usize,
    raw: Outcome,
    actor: Outcome,
    batched: Option<Outcome>,
}

fn stage_profile(
    backend: Backend,
    crypto: Option<Crypto>,
    nodes: usize,
    size: usize,
    scale: f64,
    exe: &std::path::Path,
    n: &mut usize,
) -> Result<StageRow, String> {
    let case = |path: Path| Case {
        backend,
        path,
        load: Load {
            window: WINDOW,
            stages: true,
            ..Load::unpaced(size, count_for(size, 1, path, scale), nodes, 1)
        },
    };
    let row = StageRow {
        backend,
        crypto,
        nodes,
        size,
        raw: run(&case(Path::Raw), crypto, exe, n)?,
        actor: run(&case(ACTOR), crypto, exe, n)?,
        batched: (size <= STAGES_BATCHED_UP_TO)
            .then(|| run(&case(BATCHED), crypto, exe, n))
            .transpose()?,
    };
    // Every stage of a message's way must have been timed on the sender:
    // a profile of zeros would say the library costs nothing.
    use actix_cpg::stages::Stage;
    for outcome in std::iter::once(&row.actor).chain(&row.batched) {
        let sender = outcome.reports.iter().find(|r| r.index == 0);
        let untimed: Vec<&str> = [Stage::Encode, Stage::Admit, Stage::TakeOp, Stage::SendQueue]
            .into_iter()
            .chain([
                Stage::Multicast,
                Stage::Event,
                Stage::Decode,
                Stage::Deliver,
            ])
            .chain([Stage::Pump, Stage::Handler])
            .filter(|&s| sender.is_none_or(|r| !r.run.ran(s)))
            .map(|s| s.name())
            .collect();
        if !untimed.is_empty() {
            let e = format!("stage profile: the sender timed nothing in {untimed:?}");
            eprintln!("bench: {e}");
            return Err(e);
        }
    }
    Ok(row)
}

/// The stage profile's tables: one per backend, group size and message
/// size, a column per path and side.
fn print_stages(rows: &[StageRow]) {
    use actix_cpg::stages::Stage;
    use bench::stages::StageReport;
    if rows.is_empty() {
        return;
    }
    println!("\n### Where a message's time goes: the library's stages (µs per message delivered, one sender)\n");
    println!("Per message delivered to the member, µs, from the moment the member was ready to its end. A stage's figure is its own time (its nested stages left out), the lower of two bounds from above on its CPU time: its wall time, and the mean CPU time of one interval in {} drawn at random and timed on the thread's CPU clock too, times its count (`actix_cpg::stages`). Both overstate on this machine: a wall time counts the time a thread was descheduled inside the stage (two cores shared with the daemons), a sampled interval runs after a system call with colder caches; so the stages add up to more than the process's CPU time, measured beside them (`getrusage`) with the raw binding's for the same load. The sender is member 0 (it also delivers every message to its own actor); a receiver is the mean of the other members. On the sim one process holds every member.\n", actix_cpg::stages::SAMPLE_EVERY);
    for r in rows {
        // (column title, the reports it averages)
        let mut columns: Vec<(String, Vec<&StageReport>)> = Vec::new();
        fn sides(sim: bool, o: &Outcome) -> Vec<(&'static str, Vec<&StageReport>)> {
            let of = |sender: bool| -> Vec<&StageReport> {
                o.reports
                    .iter()
                    .filter(|x| (x.index == 0) == sender)
                    .map(|x| &x.run)
                    .collect()
            };
            if sim {
                vec![("process", of(true))]
            } else {
                vec![("sender", of(true)), ("each receiver", of(false))]
            }
        }
        let mut paths = vec![("raw", &r.raw), ("actor", &r.actor)];
        if let Some(b) = &r.batched {
            paths.push(("actor+batch", b));
        }
        for (name, outcome) in &paths {
            for (side, reports) in sides(r.backend == Backend::Sim, outcome) {
                columns.push((format!("{name}: {side}"), reports));
            }
        }
        let mean = |reports: &[&StageReport], f: &dyn Fn(&StageReport) -> f64| -> f64 {
            if reports.is_empty() {
                return f64::NAN;
            }
            reports.iter().map(|x| f(x)).sum::<f64>() / reports.len() as f64
        };
        println!(
            "#### {}, {} node(s), {}\n",
            label(r.backend, r.crypto),
            r.nodes,
            human(r.size)
        );
        let titles: Vec<&str> = columns.iter().map(|(t, _)| t.as_str()).collect();
        println!("| stage | what | {} |", titles.join(" | "));
        println!("|---|---|{}", "---|".repeat(columns.len()));
        // The raw binding has no stages: only its CPU is shown.
        let timed = |reports: &[&StageReport]| {
            reports
                .iter()
                .any(|x| x.totals.iter().any(|(_, t)| t.nanos > 0))
        };
        let line = |stage: &str, what: &str, f: &dyn Fn(&StageReport) -> f64, always: bool| {
            let cells: Vec<String> = columns
                .iter()
                .map(|(_, reports)| match always || timed(reports) {
                    true => format!("{:.3}", mean(reports, f)),
                    false => "-".into(),
                })
                .collect();
            println!("| {stage} | {what} | {} |", cells.join(" | "));
        };
        for stage in Stage::ALL {
            line(
                stage.name(),
                stage_what(stage),
                &|x| x.us_per_msg(stage),
                false,
            );
        }
        let library = |x: &StageReport| {
            Stage::ALL
                .iter()
                .filter(|s| !matches!(s, Stage::Multicast | Stage::Dispatch | Stage::Handler))
                .map(|&s| x.us_per_msg(s))
                .sum::<f64>()
        };
        line(
            "**library**",
            "the library's own stages in user space (all but multicast, dispatch, handler)",
            &library,
            false,
        );
        line(
            "waiting",
            "wall time in every stage beyond its CPU time: the daemon's answers, a descheduled thread (not CPU)",
            &|x| {
                Stage::ALL
                    .iter()
                    .map(|&s| x.wall_us_per_msg(s) - x.us_per_msg(s))
                    .sum::<f64>()
            },
            false,
        );
        line(
            "timers",
            "the timers' own cost, in the stages above (timed stages per message × one timer's cost)",
            &|x| x.timers_per_msg() * x.timer_ns / 1000.0,
            false,
        );
        line(
            "**user CPU**",
            "user-space CPU time of the process, ready to end",
            &|x| x.user_us_per_msg(),
            true,
        );
        line(
            "**system CPU**",
            "kernel CPU time of the process: IPC with the daemon, polls, wake-ups, page faults",
            &|x| x.sys_us_per_msg(),
            true,
        );
        line("**CPU**", "user + system", &|x| x.cpu_us_per_msg(), true);
        line(
            "page faults",
            "minor page faults of the process per message (not µs)",
            &|x| x.minflt_per_msg(),
            true,
        );
        println!();
    }
}

/// What a stage holds, for the stage profile's tables.
fn stage_what(stage: actix_cpg::stages::Stage) -> &'static str {
    use actix_cpg::stages::Stage;
    match stage {
        Stage::Encode => "send: request head and message serialized into the envelope",
        Stage::Admit => "send: send gate and the runtime's operation queue",
        Stage::TakeOp => "send: the runtime takes the operation",
        Stage::SendQueue => "send: window, batcher, callers told (multicast left out)",
        Stage::Multicast => "send: `cpg_mcast_joined`, a round trip to the daemon (raw pays it too; user and kernel CPU)",
        Stage::PollEvent => "receive: the runtime asks the transport for an event (dispatch left out)",
        Stage::Dispatch => "receive: `cpg_dispatch`: read, the callback's copy, routing (user and kernel CPU)",
        Stage::Event => "receive: the runtime's handling of the event (decode, hand-off left out)",
        Stage::Decode => "receive: frame, batch, request head; the core's decision",
        Stage::Deliver => "receive: user type decoded, `do_send` (host of the target only)",
        Stage::Pump => "the pump's turn: loop, budgets, wake-ups",
        Stage::Handler => "the bench's actor handling the message",
    }
}

/// One throughput row: the same load on the three paths.
struct Row {
    backend: Backend,
    crypto: Option<Crypto>,
    nodes: usize,
    senders: usize,
    size: usize,
    raw: Outcome,
    actor: Outcome,
    batched: Outcome,
    /// The actor path of a keyed group (`--key`).
    keyed: Option<Outcome>,
    /// The floor, unbatched and batched (unless `--no-floor`).
    floor: Option<(Outcome, Outcome)>,
}

struct LatencyRow {
    backend: Backend,
    crypto: Option<Crypto>,
    nodes: usize,
    size: usize,
    rate: f64,
    /// The run with the median p99 ratio.
    raw: Outcome,
    actor: Outcome,
    /// The keyed actor path of the same run (`--key`).
    keyed: Option<Outcome>,
    /// The batched floor of the same run (unless `--no-floor`).
    floor: Option<Outcome>,
    /// The p99 ratio of every run, sorted.
    ratios: Vec<f64>,
}

/// One latency run: raw, actor, the keyed actor path and the batched floor
/// if measured.
type LatencyRun = (Outcome, Outcome, Option<Outcome>, Option<Outcome>);

impl LatencyRow {
    /// Of `runs` (raw, actor) pairs, the one with the median p99 ratio, and
    /// every ratio.
    fn of(
        (backend, crypto): (Backend, Option<Crypto>),
        nodes: usize,
        size: usize,
        rate: f64,
        runs: Vec<LatencyRun>,
    ) -> Option<LatencyRow> {
        let ratio =
            |(raw, actor, _, _): &LatencyRun| Some(actor.latency?.p99_us / raw.latency?.p99_us);
        let mut runs: Vec<(f64, LatencyRun)> = runs
            .into_iter()
            .filter_map(|run| Some((ratio(&run)?, run)))
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios = runs.iter().map(|(r, _)| *r).collect();
        let mid = runs.len().checked_sub(1)? / 2;
        let (_, (raw, actor, keyed, floor)) = runs.into_iter().nth(mid)?;
        Some(LatencyRow {
            backend,
            crypto,
            nodes,
            size,
            rate,
            raw,
            actor,
            keyed,
            floor,
            ratios,
        })
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    if let Some(code) = bench::child_main() {
        std::process::exit(code);
    }
    // A helper process of `--vs-etcd`.
    if let Ok(role) = std::env::var(actix_cpg_harness::kv_load::ROLE_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(match role.as_str() {
            "acpg-kv" => actix_cpg_harness::kv_service::main_with(&args),
            "kv-load" => actix_cpg_harness::kv_load::load_main(&args),
            failover::ROLE_ELECT => failover::elect_main(&args),
            failover::ROLE_CAMPAIGN => failover::campaign_main(&args),
            restart::ROLE_PROBE => restart::probe_main(&args),
            late_joiner::ROLE_WRITER => late_joiner::writer_main(&args),
            loss_window::ROLE_WRITER => loss_window::writer_main(&args),
            loss_window::ROLE_CHECKER => loss_window::checker_main(&args),
            other => {
                eprintln!("bench: unknown helper role {other:?}");
                2
            }
        });
    }
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bench: cannot find this executable: {e}");
            std::process::exit(1);
        }
    };
    if let Some(modes) = o.vs_etcd {
        std::process::exit(against_etcd(&exe, modes, o.scale));
    }
    if let Some(faults) = o.etcd_failover {
        std::process::exit(failover_against_etcd(&exe, faults, o.rounds.unwrap_or(20)));
    }
    if o.joiner {
        std::process::exit(joiner_against_etcd(&exe, &o.chunks));
    }
    if o.loss_window {
        std::process::exit(loss_window_table(&exe, o.rounds.unwrap_or(10)));
    }
    if let Some(variants) = o.restart {
        std::process::exit(restart_against_etcd(&exe, &variants, o.rounds.unwrap_or(5)));
    }
    let mut passes = Vec::new();
    if o.sim {
        passes.push((Backend::Sim, None));
    }
    if o.corosync {
        if !cfg!(feature = "corosync") {
            eprintln!("bench: --corosync needs `--features corosync`; skipping the real cluster");
        } else if let Some(settings) = &o.crypto {
            passes.extend(settings.iter().map(|&c| (Backend::Corosync, Some(c))));
        } else {
            match bench::cluster_up() {
                Ok(()) => passes.push((Backend::Corosync, bench::cluster_crypto())),
                Err(why) => eprintln!("bench: skipping the real cluster: {why}"),
            }
        }
    }
    if o.compression {
        std::process::exit(compression(&o, &passes, &exe));
    }
    if o.shared_payload {
        std::process::exit(shared_payload(&o, &passes, &exe));
    }
    let mut failures = 0;
    let mut n = 0;
    let mut rows = Vec::new();
    let mut lat_rows = Vec::new();
    let mut overloads = Vec::new();
    let mut failovers = Vec::new();
    let mut stage_rows = Vec::new();
    // The stage profile runs on one group size per pass: the first with
    // receivers besides the sender.
    let profiled = o.nodes.iter().copied().find(|&n| n >= 2);
    for &(backend, crypto) in &passes {
        if let (Backend::Corosync, Some(c), Some(_)) = (backend, crypto, &o.crypto) {
            eprintln!("bench: (re)starting the real cluster with {c}");
            if let Err(why) = bench::restart_cluster(c, cluster_size_for(o.nodes[0])) {
                eprintln!("bench: skipping the pass with {c}: {why}");
                failures += 1;
                continue;
            }
        }
        let mut resized = false;
        for &nodes in &o.nodes {
            if backend == Backend::Corosync
                && bench::cluster_nodes() != Some(cluster_size_for(nodes))
            {
                let size = cluster_size_for(nodes);
                let c = crypto.unwrap_or(Crypto::Aes256);
                eprintln!("bench: (re)starting the real cluster with {size} nodes");
                if let Err(why) = bench::restart_cluster(c, size) {
                    eprintln!("bench: skipping {nodes} nodes: {why}");
                    failures += 1;
                    continue;
                }
                resized = true;
            }
            for &size in &o.sizes {
                let sender_counts: Vec<usize> = if nodes == 1 { vec![1] } else { vec![1, nodes] };
                let mut raw_one: Option<Outcome> = None;
                if o.throughput || o.latency {
                    for &senders in &sender_counts {
                        if !o.throughput && senders != 1 {
                            continue;
                        }
                        let case = |path: Path| Case {
                            backend,
                            path,
                            load: Load {
                                size,
                                count: count_for(size, senders, path, o.scale),
                                members: nodes,
                                senders,
                                rate: None,
                                window: WINDOW,
                                duration: None,
                                payload: Payload::Random,
                                compress: true,
                                shared: false,
                                stages: false,
                            },
                        };
                        let raw = run(&case(Path::Raw), crypto, &exe, &mut n);
                        if !o.throughput {
                            raw_one = raw.ok();
                            continue;
                        }
                        let actor = run(&case(ACTOR), crypto, &exe, &mut n);
                        let batched = run(&case(BATCHED), crypto, &exe, &mut n);
                        let keyed = o
                            .key
                            .then(|| run(&case(KEYED), crypto, &exe, &mut n))
                            .transpose();
                        let floor = o
                            .floor
                            .then(|| {
                                Ok::<_, String>((
                                    run(&case(FLOOR), crypto, &exe, &mut n)?,
                                    run(&case(FLOOR_BATCHED), crypto, &exe, &mut n)?,
                                ))
                            })
                            .transpose();
                        match (raw, actor, batched, keyed, floor) {
                            (Ok(raw), Ok(actor), Ok(batched), Ok(keyed), Ok(floor)) => {
                                if senders == 1 {
                                    raw_one = Some(raw.clone());
                                }
                                rows.push(Row {
                                    backend,
                                    crypto,
                                    nodes,
                                    senders,
                                    size,
                                    raw,
                                    actor,
                                    batched,
                                    keyed,
                                    floor,
                                });
                            }
                            _ => failures += 1,
                        }
                    }
                }
                if o.latency {
                    let Some(raw_sat) = raw_one else { continue };
                    // Half of the raw binding's saturation, one sender.
                    let rate = (raw_sat.msgs_per_s / 2.0).max(10.0);
                    let count = ((rate * 3.0 * o.scale.min(1.0)) as u64).clamp(50, 200_000);
                    let case = |path: Path| Case {
                        backend,
                        path,
                        load: Load {
                            size,
                            count,
                            members: nodes,
                            senders: 1,
                            rate: Some(rate),
                            window: WINDOW,
                            duration: None,
                            payload: Payload::Random,
                            compress: true,
                            shared: false,
                            stages: false,
                        },
                    };
                    let mut runs = Vec::new();
                    for _ in 0..o.repeat {
                        let raw = run(&case(Path::Raw), crypto, &exe, &mut n);
                        let actor = run(&case(BATCHED), crypto, &exe, &mut n);
                        let keyed = o
                            .key
                            .then(|| run(&case(BATCHED_KEYED), crypto, &exe, &mut n))
                            .transpose();
                        let floor = o
                            .floor
                            .then(|| run(&case(FLOOR_BATCHED), crypto, &exe, &mut n))
                            .transpose();
                        match (raw, actor, keyed, floor) {
                            (Ok(raw), Ok(actor), Ok(keyed), Ok(floor)) => {
                                runs.push((raw, actor, keyed, floor))
                            }
                            _ => failures += 1,
                        }
                    }
                    lat_rows.extend(LatencyRow::of((backend, crypto), nodes, size, rate, runs));
                }
            }
            if o.stages.unwrap_or(o.throughput) && Some(nodes) == profiled {
                for &size in o.sizes.iter().filter(|&&s| s <= STAGES_UP_TO) {
                    match stage_profile(backend, crypto, nodes, size, o.scale, &exe, &mut n) {
                        Ok(row) => stage_rows.push(row),
                        Err(_) => failures += 1,
                    }
                }
            }
            if backend == Backend::Corosync && o.failover > 0 && nodes >= 2 {
                eprintln!("bench: failover, {nodes} nodes, {} kills", o.failover);
                match bench::sizes::run_failover(&exe, nodes, o.failover) {
                    Ok(f) => failovers.push(f),
                    Err(why) => {
                        eprintln!("bench: failover on {nodes} nodes: {why}");
                        failures += 1;
                    }
                }
            }
        }
        if let Some(secs) = o.overload {
            let nodes = *o.nodes.iter().max().unwrap_or(&1);
            for path in [ACTOR, BATCHED] {
                let case = Case {
                    backend,
                    path,
                    load: Load {
                        size: 1024,
                        count: u64::MAX,
                        members: nodes,
                        senders: nodes,
                        rate: None,
                        window: WINDOW,
                        duration: Some(Duration::from_secs(secs)),
                        payload: Payload::Random,
                        compress: true,
                        shared: false,
                        stages: false,
                    },
                };
                match run(&case, crypto, &exe, &mut n) {
                    Ok(out) => overloads.push((label(backend, crypto), nodes, path, out)),
                    Err(_) => failures += 1,
                }
            }
        }
        if resized {
            let c = crypto.unwrap_or(Crypto::Aes256);
            eprintln!("bench: back to a {CLUSTER_NODES}-node cluster");
            if let Err(why) = bench::restart_cluster(c, CLUSTER_NODES) {
                eprintln!("bench: {why}");
                failures += 1;
            }
        }
    }
    print_tables(&rows, &lat_rows, &overloads);
    print_group_sizes(&rows, &lat_rows, &failovers);
    print_goals(&rows, &lat_rows, &failovers);
    print_stages(&stage_rows);
    if failures > 0 {
        eprintln!("bench: {failures} case(s) failed");
        std::process::exit(1);
    }
}

/// `--compression`: raw, then the actor path with each payload,
/// compression off and on, in one run per backend and group size; one
/// table on stdout; the exit code.
fn compression(o: &Options, passes: &[(Backend, Option<Crypto>)], exe: &std::path::Path) -> i32 {
    // (size, batching): large messages alone, and small ones batched.
    let cases: Vec<(usize, bool)> = if o.sizes_given {
        o.sizes.iter().map(|&s| (s, s <= 1024)).collect()
    } else {
        vec![(16384, false), (65536, false), (1024, true)]
    };
    let (mut failures, mut n) = (0, 0);
    let mut lines = Vec::new();
    for (backend, crypto, nodes) in table_runs(o, passes, "--compression") {
        for &(size, batching) in &cases {
            let actor = Path::Actor {
                batching,
                keyed: false,
            };
            let case = |path: Path, payload: Payload, compress: bool| Case {
                backend,
                path,
                load: Load {
                    size,
                    count: count_for(size, 1, path, o.scale),
                    members: nodes,
                    senders: 1,
                    rate: None,
                    window: WINDOW,
                    duration: None,
                    payload,
                    compress,
                    shared: false,
                    stages: false,
                },
            };
            let raw = match run(
                &case(Path::Raw, Payload::Random, false),
                crypto,
                exe,
                &mut n,
            ) {
                Ok(raw) => raw,
                Err(_) => {
                    failures += 1;
                    continue;
                }
            };
            for payload in [Payload::Json, Payload::Random] {
                let off = run(&case(actor, payload, false), crypto, exe, &mut n);
                let on = run(&case(actor, payload, true), crypto, exe, &mut n);
                let (Ok(off), Ok(on)) = (off, on) else {
                    failures += 1;
                    continue;
                };
                let multicasts: u64 = on.reports.iter().map(|r| r.multicasts).sum();
                // A JSON-like multicast above the threshold must go
                // compressed, or this table (and the smoke that runs it)
                // measured nothing.
                let above = actix_cpg::GroupConfig::default()
                    .compress_above
                    .is_some_and(|t| size as f64 * on.per_multicast > t as f64);
                if payload == Payload::Json && above && on.compressed == 0 {
                    eprintln!(
                        "bench: {} JSON-like, compression on: none of {multicasts} multicasts went compressed",
                        human(size)
                    );
                    failures += 1;
                }
                lines.push(format!(
                        "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} / {:.1} | {} / {} of {multicasts} |",
                        label(backend, crypto),
                        nodes,
                        human(size),
                        if batching { "batched" } else { "alone" },
                        match payload {
                            Payload::Json => "JSON-like",
                            Payload::Random => "random",
                        },
                        wire_ratio(payload, size),
                        raw.msgs_per_s,
                        off.msgs_per_s,
                        off.msgs_per_s / raw.msgs_per_s,
                        on.msgs_per_s,
                        on.msgs_per_s / raw.msgs_per_s,
                        on.msgs_per_s / off.msgs_per_s,
                        off.mb_per_s,
                        on.mb_per_s,
                        off.compressed,
                        on.compressed,
                    ));
            }
        }
    }
    print_table(
        "Compression (LZ4 above `compress_above`), throughput, one sender",
        "| backend | nodes | size | messages | payload | LZ4 size/raw | raw msg/s | off msg/s | off/raw | on msg/s | on/raw | on/off | MB/s off / on | compressed multicasts off / on |",
        &lines,
        failures,
    )
}

/// `--shared-payload`: raw, then the actor path with the sink reading the
/// blob's data as a `Vec<u8>` and as a `wire::Payload`, in one run per
/// backend and group size; one table on stdout; the exit code.
fn shared_payload(o: &Options, passes: &[(Backend, Option<Crypto>)], exe: &std::path::Path) -> i32 {
    let sizes: Vec<usize> = if o.sizes_given {
        o.sizes.clone()
    } else {
        vec![16384, 65536, 1 << 20]
    };
    let (mut failures, mut n) = (0, 0);
    let mut lines = Vec::new();
    for (backend, crypto, nodes) in table_runs(o, passes, "--shared-payload") {
        for &size in &sizes {
            let actor = Path::Actor {
                batching: false,
                keyed: false,
            };
            let case = |path: Path, shared: bool| Case {
                backend,
                path,
                load: Load {
                    window: WINDOW,
                    shared,
                    ..Load::unpaced(size, count_for(size, 1, path, o.scale), nodes, 1)
                },
            };
            let raw = run(&case(Path::Raw, false), crypto, exe, &mut n);
            let owned = run(&case(actor, false), crypto, exe, &mut n);
            let shared = run(&case(actor, true), crypto, exe, &mut n);
            let (Ok(raw), Ok(owned), Ok(shared)) = (raw, owned, shared) else {
                failures += 1;
                continue;
            };
            lines.push(format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} / {:.0} |",
                label(backend, crypto),
                nodes,
                human(size),
                raw.msgs_per_s,
                owned.msgs_per_s,
                owned.msgs_per_s / raw.msgs_per_s,
                shared.msgs_per_s,
                shared.msgs_per_s / raw.msgs_per_s,
                shared.msgs_per_s / owned.msgs_per_s,
                owned.mb_per_s,
                shared.mb_per_s,
            ));
        }
    }
    print_table(
        "A large payload as `Vec<u8>` and as `wire::Payload`, throughput, one sender, unbatched",
        "| backend | nodes | size | raw msg/s | Vec msg/s | Vec/raw | Payload msg/s | Payload/raw | Payload/Vec | MB/s Vec / Payload |",
        &lines,
        failures,
    )
}

/// Each pass at each group size of `--nodes`, but for a corosync pass
/// whose cluster has another size (`flag`'s tables run on the cluster as
/// it is; the skip is said on stderr).
fn table_runs(
    o: &Options,
    passes: &[(Backend, Option<Crypto>)],
    flag: &str,
) -> Vec<(Backend, Option<Crypto>, usize)> {
    let mut runs = Vec::new();
    for &(backend, crypto) in passes {
        for &nodes in &o.nodes {
            if backend == Backend::Corosync
                && bench::cluster_nodes() != Some(cluster_size_for(nodes))
            {
                eprintln!("bench: {flag} runs on the cluster as it is; skipping {nodes} nodes");
                continue;
            }
            runs.push((backend, crypto, nodes));
        }
    }
    runs
}

/// Prints a table (its title, its header row `columns` and `rows`) and
/// returns the exit code: 1 if any of its `failures` cases failed.
fn print_table(title: &str, columns: &str, rows: &[String], failures: usize) -> i32 {
    println!("\n#### {title}\n");
    println!("{columns}");
    println!("{}|", "|---".repeat(columns.matches('|').count() - 1));
    for row in rows {
        println!("{row}");
    }
    if failures > 0 {
        eprintln!("bench: {failures} case(s) failed");
        return 1;
    }
    0
}

/// How much smaller one message of `payload` gets compressed on the wire:
/// the compressed envelope over the plain one (1.00: sent as it is).
fn wire_ratio(payload: Payload, size: usize) -> f64 {
    let codec = actix_cpg::wire::Codec::new(16 << 20);
    let Ok(envelope) = codec.encode(actix_cpg::wire::Kind::Request, &payload.bytes(size)) else {
        return 1.0;
    };
    let mut packed = Vec::new();
    if codec.compress_into(&envelope, &mut packed) {
        packed.len() as f64 / envelope.len() as f64
    } else {
        1.0
    }
}

/// `--vs-etcd`: the comparison's table on stdout; the exit code.
fn against_etcd(exe: &std::path::Path, modes: Vec<Mode>, scale: f64) -> i32 {
    if !cfg!(all(feature = "corosync", feature = "etcd")) {
        eprintln!("bench: --vs-etcd needs `--features corosync,etcd`");
        return 2;
    }
    let plan = vs_etcd::Plan::standard(modes, scale);
    match vs_etcd::run(exe, &plan) {
        Ok(rows) => {
            println!(
                "\n### Against etcd (3 members each, one per node namespace; client in node 1)\n"
            );
            for m in plan.modes {
                println!("- {}: {}", m.name(), m.label());
            }
            println!();
            print!("{}", vs_etcd::table(&rows));
            0
        }
        Err(e) => {
            eprintln!("bench: --vs-etcd: {e}");
            1
        }
    }
}

/// `--vs-etcd-failover`: the failover table on stdout; the exit code.
fn failover_against_etcd(
    exe: &std::path::Path,
    faults: Vec<failover::Fault>,
    rounds: usize,
) -> i32 {
    if !cfg!(all(feature = "corosync", feature = "etcd")) {
        eprintln!("bench: --vs-etcd-failover needs `--features corosync,etcd`");
        return 2;
    }
    let plan = failover::Plan { faults, rounds };
    match failover::run(exe, &plan) {
        Ok(outcome) => {
            println!("\n### Leader failover against etcd (one member per node namespace; kill → new leader acts)\n");
            println!(
                "- etcd lease TTL: asked {} s, granted {} s (etcd's minimum); keepalive every TTL/3",
                failover::ASKED_TTL_S,
                outcome
                    .granted_ttl
                    .map_or("?".to_string(), |t| t.to_string())
            );
            println!();
            print!("{}", failover::table(&outcome));
            0
        }
        Err(e) => {
            eprintln!("bench: --vs-etcd-failover: {e}");
            1
        }
    }
}

/// `--vs-etcd-restart`: the whole-cluster restart table on stdout; the
/// exit code.
fn restart_against_etcd(
    exe: &std::path::Path,
    variants: &[restart::Variant],
    rounds: usize,
) -> i32 {
    if !cfg!(all(feature = "corosync", feature = "etcd")) {
        eprintln!("bench: --vs-etcd-restart needs `--features corosync,etcd`");
        return 2;
    }
    match restart::run(exe, variants, rounds) {
        Ok(series) => {
            println!(
                "\n### Whole-cluster restart against etcd (restart → first acknowledged put)\n"
            );
            println!(
                "- actix-cpg: acpg-kv serve --safe --data-dir --sync batch; etcd: defaults (fsync)"
            );
            println!();
            print!("{}", restart::table(&series));
            0
        }
        Err(e) => {
            eprintln!("bench: --vs-etcd-restart: {e}");
            1
        }
    }
}

/// `--loss-window`: the loss-window table on stdout; the exit code.
fn loss_window_table(exe: &std::path::Path, rounds: usize) -> i32 {
    if !cfg!(feature = "corosync") {
        eprintln!("bench: --loss-window needs `--features corosync`");
        return 2;
    }
    match loss_window::run(exe, rounds) {
        Ok(tallies) => {
            println!(
                "\n### Loss window: node 1 lost under pipelined puts (acpg-kv serve --data-dir --sync batch)\n"
            );
            print!("{}", loss_window::table(&tallies));
            // Safe delivery promises it: a loss there is a failure.
            let lost: usize = tallies.iter().filter(|t| t.safe).map(|t| t.lost).sum();
            if lost > 0 {
                eprintln!(
                    "bench: --loss-window: {lost} acknowledged puts lost under safe delivery"
                );
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("bench: --loss-window: {e}");
            1
        }
    }
}

/// `--vs-etcd-joiner`: the late-joiner table on stdout; the exit code.
fn joiner_against_etcd(exe: &std::path::Path, chunks: &[usize]) -> i32 {
    if !cfg!(all(feature = "corosync", feature = "etcd")) {
        eprintln!("bench: --vs-etcd-joiner needs `--features corosync,etcd`");
        return 2;
    }
    match late_joiner::run(exe, chunks) {
        Ok(rows) => {
            println!(
                "\n### Late joiner against etcd ({} values of {} B; one writer through node 1, one put at a time)\n",
                late_joiner::VALUES,
                late_joiner::VALUE_SIZE
            );
            print!("{}", late_joiner::table(&rows));
            0
        }
        Err(e) => {
            eprintln!("bench: --vs-etcd-joiner: {e}");
            1
        }
    }
}

fn print_tables(
    rows: &[Row],
    lat_rows: &[LatencyRow],
    overloads: &[(String, usize, Path, Outcome)],
) {
    if !rows.is_empty() {
        println!("\n### Throughput (messages delivered to every member; window {WINDOW})\n");
        println!("| backend | nodes | senders | size | raw msg/s | raw MB/s | actor msg/s | actor/raw | actor+batch msg/s | batch/raw | batch MB/s | msgs/mcast | peak RSS raw/actor/batch MiB |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0}/{:.0}/{:.0} |",
                label(r.backend, r.crypto),
                r.nodes,
                r.senders,
                human(r.size),
                r.raw.msgs_per_s,
                r.raw.mb_per_s,
                r.actor.msgs_per_s,
                r.actor.msgs_per_s / r.raw.msgs_per_s,
                r.batched.msgs_per_s,
                r.batched.msgs_per_s / r.raw.msgs_per_s,
                r.batched.mb_per_s,
                r.batched.per_multicast,
                mib(r.raw.peak_rss_kib),
                mib(r.actor.peak_rss_kib),
                mib(r.batched.peak_rss_kib),
            );
        }
    }
    if !lat_rows.is_empty() {
        println!("\n### Latency, send to self-delivery, one sender at half the raw saturation rate (µs)\n");
        println!("Each pair ran {} time(s); shown: the run with the median p99 ratio, and the ratio of every run.\n", lat_rows.iter().map(|r| r.ratios.len()).max().unwrap_or(0));
        println!("| backend | nodes | size | offered msg/s | raw p50 | raw p99 | raw p99.9 | actor p50 | actor p99 | actor p99.9 | p99 actor/raw | every run |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in lat_rows {
            let (Some(a), Some(b)) = (r.raw.latency, r.actor.latency) else {
                continue;
            };
            let every: Vec<String> = r.ratios.iter().map(|x| format!("{x:.2}")).collect();
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
                label(r.backend, r.crypto),
                r.nodes,
                human(r.size),
                r.rate,
                a.p50_us,
                a.p99_us,
                a.p999_us,
                b.p50_us,
                b.p99_us,
                b.p999_us,
                b.p99_us / a.p99_us,
                every.join(" ")
            );
        }
    }
    print_floor(rows, lat_rows);
    print_key_cost(rows, lat_rows);
    print_crypto_cost(rows, lat_rows);
    for (backend, nodes, path, out) in overloads {
        println!(
            "\n### Overload: {} on {nodes} node(s), every member sending 1 KiB as fast as it can\n",
            backend
        );
        println!(
            "{:.0} msg/s, {} TRY_AGAIN; RSS of member 0 (MiB) each second:\n",
            out.msgs_per_s, out.try_again
        );
        if let Some(r) = out.reports.iter().find(|r| r.index == 0) {
            let line: Vec<String> = r
                .rss_samples
                .iter()
                .map(|(s, k)| format!("{s}s:{:.1}", mib(*k)))
                .collect();
            println!("{}", line.join(" "));
            let first: u64 = r
                .rss_samples
                .iter()
                .filter(|(s, _)| *s < 10)
                .map(|(_, k)| *k)
                .max()
                .unwrap_or(0);
            let rest: u64 = r
                .rss_samples
                .iter()
                .filter(|(s, _)| *s >= 10)
                .map(|(_, k)| *k)
                .max()
                .unwrap_or(0);
            if first > 0 && rest > 0 {
                println!(
                    "\npath {path}: peak after 10 s / peak in the first 10 s = {:.3}",
                    rest as f64 / first as f64
                );
            }
        }
    }
}

/// The library against the floor (the binding, a bincode decode and a
/// `do_send` on every member), beside raw, from the same runs.
fn print_floor(rows: &[Row], lat_rows: &[LatencyRow]) {
    let floored: Vec<(&Row, &Outcome, &Outcome)> = rows
        .iter()
        .filter_map(|r| r.floor.as_ref().map(|(f, fb)| (r, f, fb)))
        .collect();
    if !floored.is_empty() {
        println!("\n### The floor: raw binding + bincode decode + `do_send` on every member, throughput (msg/s)\n");
        println!("| backend | nodes | senders | size | raw | floor | floor+batch | msgs/mcast | actor | actor+batch | msgs/mcast | floor/raw | actor/raw | actor/floor | floor+batch/raw | batch/raw | batch/floor+batch |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (r, f, fb) in floored {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                label(r.backend, r.crypto),
                r.nodes,
                r.senders,
                human(r.size),
                r.raw.msgs_per_s,
                f.msgs_per_s,
                fb.msgs_per_s,
                fb.per_multicast,
                r.actor.msgs_per_s,
                r.batched.msgs_per_s,
                r.batched.per_multicast,
                f.msgs_per_s / r.raw.msgs_per_s,
                r.actor.msgs_per_s / r.raw.msgs_per_s,
                r.actor.msgs_per_s / f.msgs_per_s,
                fb.msgs_per_s / r.raw.msgs_per_s,
                r.batched.msgs_per_s / r.raw.msgs_per_s,
                r.batched.msgs_per_s / fb.msgs_per_s,
            );
        }
    }
    if !rows.is_empty() {
        println!("\n### CPU time per message: every member process, user + system, per message sent (µs; daemons not counted)\n");
        println!("| backend | nodes | senders | size | raw | floor | floor+batch | actor | actor+batch | actor - raw | actor - floor | actor+batch - floor+batch |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            let (f, fb) = match &r.floor {
                Some((f, fb)) => (f.cpu_us_per_msg, fb.cpu_us_per_msg),
                None => (f64::NAN, f64::NAN),
            };
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                label(r.backend, r.crypto),
                r.nodes,
                r.senders,
                human(r.size),
                r.raw.cpu_us_per_msg,
                f,
                fb,
                r.actor.cpu_us_per_msg,
                r.batched.cpu_us_per_msg,
                r.actor.cpu_us_per_msg - r.raw.cpu_us_per_msg,
                r.actor.cpu_us_per_msg - f,
                r.batched.cpu_us_per_msg - fb,
            );
        }
    }
    let floored: Vec<_> = lat_rows
        .iter()
        .filter_map(|r| {
            Some((
                r,
                r.raw.latency?,
                r.floor.as_ref()?.latency?,
                r.actor.latency?,
            ))
        })
        .collect();
    if !floored.is_empty() {
        println!(
            "\n### The floor, latency (µs), the same runs as the latency table (both batched)\n"
        );
        println!("| backend | nodes | size | raw p50 | raw p99 | floor+batch p50 | floor+batch p99 | actor+batch p50 | actor+batch p99 | p99 floor/raw | p99 actor/raw | p99 actor/floor |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (r, raw, floor, actor) in floored {
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                label(r.backend, r.crypto),
                r.nodes,
                human(r.size),
                raw.p50_us,
                raw.p99_us,
                floor.p50_us,
                floor.p99_us,
                actor.p50_us,
                actor.p99_us,
                floor.p99_us / raw.p99_us,
                actor.p99_us / raw.p99_us,
                actor.p99_us / floor.p99_us,
            );
        }
    }
}

/// Every corosync group size of the run side by side: throughput, p99
/// latency at half raw saturation and failover, each against the raw
/// binding (and the floor) of the same size.
fn print_group_sizes(rows: &[Row], lat_rows: &[LatencyRow], failovers: &[bench::sizes::Failover]) {
    let mut sizes: Vec<usize> = rows
        .iter()
        .filter(|r| r.backend == Backend::Corosync && r.nodes >= 2)
        .map(|r| r.nodes)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() < 2 && failovers.is_empty() {
        return;
    }
    println!("\n### Group size (corosync; every figure against the raw binding of the same size, same run)\n");
    println!("| nodes | senders | size | raw msg/s | actor/raw | batch/raw | actor/floor | batch/floor+batch | raw p99 µs | actor p99 µs | p99 actor/raw |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    for r in rows
        .iter()
        .filter(|r| r.backend == Backend::Corosync && sizes.contains(&r.nodes))
    {
        let (floor, floor_batch) = match &r.floor {
            Some((f, fb)) => (
                ratio(r.actor.msgs_per_s, f.msgs_per_s),
                ratio(r.batched.msgs_per_s, fb.msgs_per_s),
            ),
            None => ("-".into(), "-".into()),
        };
        let lat = lat_rows
            .iter()
            .find(|l| {
                r.senders == 1
                    && l.backend == r.backend
                    && l.crypto == r.crypto
                    && (l.nodes, l.size) == (r.nodes, r.size)
            })
            .and_then(|l| Some((l.raw.latency?, l.actor.latency?)));
        let (raw_p99, actor_p99, p99) = match lat {
            Some((a, b)) => (
                format!("{:.0}", a.p99_us),
                format!("{:.0}", b.p99_us),
                ratio(b.p99_us, a.p99_us),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {floor} | {floor_batch} | {raw_p99} | {actor_p99} | {p99} |",
            r.nodes,
            r.senders,
            human(r.size),
            r.raw.msgs_per_s,
            ratio(r.actor.msgs_per_s, r.raw.msgs_per_s),
            ratio(r.batched.msgs_per_s, r.raw.msgs_per_s),
        );
    }
    if !failovers.is_empty() {
        println!("\n### Supervision failover by group size (ms from SIGKILL, p50 / p99; `failover` example)\n");
        println!("| nodes | kills | bare CPG: ProcDown at a plain client | actix-cpg: confchg at a survivor | child `a` running again | child `a` registered at its new host | running - bare (p50) | running - first plain client in the group, same kill |");
        println!("|---|---|---|---|---|---|---|---|");
        for f in failovers {
            let same_kill = match f.same_kill {
                Some(d) => format!("{:.1} / {:.1}", d.p50, d.p99),
                None => "-".into(),
            };
            println!(
                "| {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {same_kill} |",
                f.nodes,
                f.running.n,
                f.bare.p50,
                f.bare.p99,
                f.confchg.p50,
                f.confchg.p99,
                f.running.p50,
                f.running.p99,
                f.registered.p50,
                f.registered.p99,
                f.running.p50 - f.bare.p50,
            );
        }
    }
}

/// What a group key costs: the keyed actor path beside the unkeyed one and
/// raw, measured in the same run (`--key`).
fn print_key_cost(rows: &[Row], lat_rows: &[LatencyRow]) {
    let keyed: Vec<(&Row, &Outcome)> = rows
        .iter()
        .filter_map(|r| Some((r, r.keyed.as_ref()?)))
        .collect();
    if !keyed.is_empty() {
        println!("\n### Group key (BLAKE3 MAC on every multicast), throughput, no batching\n");
        println!("| backend | nodes | senders | size | raw msg/s | actor msg/s | actor+key msg/s | key/actor | key/raw | actor/raw |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (r, k) in keyed {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                label(r.backend, r.crypto),
                r.nodes,
                r.senders,
                human(r.size),
                r.raw.msgs_per_s,
                r.actor.msgs_per_s,
                k.msgs_per_s,
                k.msgs_per_s / r.actor.msgs_per_s,
                k.msgs_per_s / r.raw.msgs_per_s,
                r.actor.msgs_per_s / r.raw.msgs_per_s,
            );
        }
    }
    let keyed: Vec<_> = lat_rows
        .iter()
        .filter_map(|r| {
            Some((
                r,
                r.raw.latency?,
                r.actor.latency?,
                r.keyed.as_ref()?.latency?,
            ))
        })
        .collect();
    if !keyed.is_empty() {
        println!(
            "\n### Group key, latency (µs), the same runs as the latency table (batching on)\n"
        );
        println!("| backend | nodes | size | raw p50 | raw p99 | actor p50 | actor p99 | actor+key p50 | actor+key p99 | p99 key/actor | p99 key/raw |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (r, raw, actor, key) in keyed {
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
                label(r.backend, r.crypto),
                r.nodes,
                human(r.size),
                raw.p50_us,
                raw.p99_us,
                actor.p50_us,
                actor.p99_us,
                key.p50_us,
                key.p99_us,
                key.p99_us / actor.p99_us,
                key.p99_us / raw.p99_us,
            );
        }
    }
}

/// knet crypto on against off, where both passes ran (`--crypto both`):
/// each figure of a pass is a ratio to the raw binding of that pass.
fn print_crypto_cost(rows: &[Row], lat_rows: &[LatencyRow]) {
    let with = |c: Crypto| {
        rows.iter()
            .filter(move |r| r.backend == Backend::Corosync && r.crypto == Some(c))
    };
    let pairs: Vec<(&Row, &Row)> = with(Crypto::Aes256)
        .filter_map(|on| {
            let off = with(Crypto::None).find(|off| {
                (off.nodes, off.senders, off.size) == (on.nodes, on.senders, on.size)
            })?;
            Some((off, on))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\n### knet crypto (aes256 + sha256) on vs off, throughput (msg/s; each pass against its own raw)\n");
        println!("| nodes | senders | size | raw off | raw on | raw on/off | actor off | actor on | actor on/off | actor/raw off | actor/raw on | batch on/off | batch/raw on |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (off, on) in pairs {
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                on.nodes,
                on.senders,
                human(on.size),
                off.raw.msgs_per_s,
                on.raw.msgs_per_s,
                on.raw.msgs_per_s / off.raw.msgs_per_s,
                off.actor.msgs_per_s,
                on.actor.msgs_per_s,
                on.actor.msgs_per_s / off.actor.msgs_per_s,
                off.actor.msgs_per_s / off.raw.msgs_per_s,
                on.actor.msgs_per_s / on.raw.msgs_per_s,
                on.batched.msgs_per_s / off.batched.msgs_per_s,
                on.batched.msgs_per_s / on.raw.msgs_per_s,
            );
        }
    }
    let lat = |c: Crypto| {
        lat_rows
            .iter()
            .filter(move |r| r.backend == Backend::Corosync && r.crypto == Some(c))
    };
    let pairs: Vec<_> = lat(Crypto::Aes256)
        .filter_map(|on| {
            let off = lat(Crypto::None).find(|off| (off.nodes, off.size) == (on.nodes, on.size))?;
            Some((
                on,
                off.raw.latency?,
                on.raw.latency?,
                off.actor.latency?,
                on.actor.latency?,
            ))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\n### knet crypto on vs off, latency p99 (µs; each pass at half its own raw saturation rate)\n");
        println!("| nodes | size | raw off | raw on | raw on/off | actor off | actor on | actor on/off | actor/raw off | actor/raw on |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (on, raw_off, raw_on, actor_off, actor_on) in pairs {
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                on.nodes,
                human(on.size),
                raw_off.p99_us,
                raw_on.p99_us,
                raw_on.p99_us / raw_off.p99_us,
                actor_off.p99_us,
                actor_on.p99_us,
                actor_on.p99_us / actor_off.p99_us,
                actor_off.p99_us / raw_off.p99_us,
                actor_on.p99_us / raw_on.p99_us,
            );
        }
    }
}

/// The sizes the latency goal names; a size run beside them is shown too.
const GOAL_SIZES: [usize; 4] = [64, 1024, 16384, 65536];

/// The issue's goals, one block per corosync group size of the run (2
/// nodes or more), each row this run's figure and whether it met the goal;
/// a row whose cases did not run says so. With several crypto passes, the
/// last one (the cluster's default).
fn print_goals(rows: &[Row], lat_rows: &[LatencyRow], failovers: &[bench::sizes::Failover]) {
    let crypto = match rows.iter().rev().find(|r| r.backend == Backend::Corosync) {
        Some(r) => r.crypto,
        None => match lat_rows
            .iter()
            .rev()
            .find(|r| r.backend == Backend::Corosync)
        {
            Some(r) => r.crypto,
            None if !failovers.is_empty() => bench::cluster_crypto(),
            None => return,
        },
    };
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.backend == Backend::Corosync && r.crypto == crypto)
        .collect();
    let lat_rows: Vec<&LatencyRow> = lat_rows
        .iter()
        .filter(|r| r.backend == Backend::Corosync && r.crypto == crypto)
        .collect();
    let mut sizes: Vec<usize> = rows
        .iter()
        .map(|r| r.nodes)
        .chain(lat_rows.iter().map(|r| r.nodes))
        .chain(failovers.iter().map(|f| f.nodes))
        .filter(|&n| n >= 2)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let row = |nodes: usize, size: usize, senders: usize| {
        rows.iter()
            .find(|r| (r.nodes, r.size, r.senders) == (nodes, size, senders))
    };
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let not_run = |goal: &str| println!("| {goal} | not run | not run |");
    for nodes in sizes {
        println!(
            "\n### Goals ({}, {nodes} nodes, this run)\n",
            label(Backend::Corosync, crypto)
        );
        println!("| goal | this run | met |");
        println!("|---|---|---|");
        let goal = "64 B, batching, one sender: msg/s >= 20 x raw unbatched";
        match row(nodes, 64, 1) {
            Some(r) => {
                let x = r.batched.msgs_per_s / r.raw.msgs_per_s;
                println!(
                    "| {goal} | {x:.1} x ({:.0} vs {:.0} msg/s) | {} |",
                    r.batched.msgs_per_s,
                    r.raw.msgs_per_s,
                    verdict(x >= 20.0)
                );
            }
            None => not_run(goal),
        }
        let goal = "64 B, batching, one sender: msg/s >= 0.5 x the floor's batched";
        match row(nodes, 64, 1).and_then(|r| Some((r, &r.floor.as_ref()?.1))) {
            Some((r, fb)) => {
                let x = r.batched.msgs_per_s / fb.msgs_per_s;
                println!(
                    "| {goal} | {x:.2} x ({:.0} vs {:.0} msg/s) | {} |",
                    r.batched.msgs_per_s,
                    fb.msgs_per_s,
                    verdict(x >= 0.5)
                );
            }
            None => not_run(goal),
        }
        for (size, target) in [(1024, 0.9), (16384, 0.95), (65536, 0.95)] {
            let goal = format!(
                "{}, no batching, one sender: msg/s >= {target} x raw",
                human(size)
            );
            match row(nodes, size, 1) {
                Some(r) => {
                    let x = r.actor.msgs_per_s / r.raw.msgs_per_s;
                    println!(
                        "| {goal} | {x:.2} x ({:.0} vs {:.0} msg/s) | {} |",
                        r.actor.msgs_per_s,
                        r.raw.msgs_per_s,
                        verdict(x >= target)
                    );
                }
                None => not_run(&goal),
            }
        }
        let mut lat_sizes: Vec<usize> = lat_rows
            .iter()
            .filter(|l| l.nodes == nodes)
            .map(|l| l.size)
            .chain(GOAL_SIZES)
            .collect();
        lat_sizes.sort_unstable();
        lat_sizes.dedup();
        for size in lat_sizes {
            let lat = lat_rows
                .iter()
                .find(|l| (l.nodes, l.size) == (nodes, size))
                .and_then(|l| Some((l, l.raw.latency?, l.actor.latency?)));
            match lat {
                Some((l, a, b)) => {
                    let x = b.p99_us / a.p99_us;
                    println!(
                        "| {}: p99 at half raw saturation <= 1.5 x raw (median ratio of {} run(s)) | {x:.2} x ({:.0} vs {:.0} µs) | {} |",
                        human(size),
                        l.ratios.len(),
                        b.p99_us,
                        a.p99_us,
                        verdict(x <= 1.5)
                    );
                }
                None => not_run(&format!(
                    "{}: p99 at half raw saturation <= 1.5 x raw",
                    human(size)
                )),
            }
        }
        if nodes != CLUSTER_NODES {
            let mut run_sizes: Vec<usize> = rows
                .iter()
                .filter(|r| r.nodes == nodes)
                .map(|r| r.size)
                .collect();
            run_sizes.sort_unstable();
            run_sizes.dedup();
            if run_sizes.is_empty() {
                not_run(&format!(
                    "actor/raw and batch/raw at {nodes} nodes no worse than at {CLUSTER_NODES}"
                ));
            }
            for size in run_sizes {
                for (senders, three) in [(1, 1), (nodes, CLUSTER_NODES)] {
                    let goal = format!(
                        "{}, {}: actor/raw and batch/raw no worse than at {CLUSTER_NODES} nodes{}",
                        human(size),
                        if senders == 1 {
                            "one sender".to_string()
                        } else {
                            format!("{senders} senders")
                        },
                        if senders == 1 {
                            String::new()
                        } else {
                            format!(" ({three} senders)")
                        }
                    );
                    match (row(nodes, size, senders), row(CLUSTER_NODES, size, three)) {
                        (Some(r), Some(t)) => {
                            let ratios = |r: &Row| {
                                (
                                    r.actor.msgs_per_s / r.raw.msgs_per_s,
                                    r.batched.msgs_per_s / r.raw.msgs_per_s,
                                )
                            };
                            let ((a, b), (ta, tb)) = (ratios(r), ratios(t));
                            println!(
                                "| {goal} | actor {a:.2} vs {ta:.2}, batch {b:.2} vs {tb:.2} | {} |",
                                verdict(a >= ta && b >= tb)
                            );
                        }
                        _ => not_run(&goal),
                    }
                }
            }
        }
        match failovers.iter().find(|f| f.nodes == nodes) {
            Some(f) => match f.same_kill {
                Some(d) => println!(
                    "| failover: child running again <= 1 ms (p50) after the first plain CPG client in the group sees the confchg, same kill ({} kills) | {:.1} ms (p99 {:.1}) | {} |",
                    d.n,
                    d.p50,
                    d.p99,
                    verdict(d.p50 <= 1.0)
                ),
                None => println!(
                    "| failover: child running again (p50 from SIGKILL) minus the bare CPG client's confchg (p50 from SIGKILL, a separate run of kills), <= 1 ms | {:.1} ms ({:.1} - {:.1}) | {} |",
                    f.running.p50 - f.bare.p50,
                    f.running.p50,
                    f.bare.p50,
                    verdict(f.running.p50 - f.bare.p50 <= 1.0)
                ),
            },
            None => not_run("failover: child running again <= 1 ms (p50) after a bare client sees the confchg"),
        }
    }
}
