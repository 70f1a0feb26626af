//! `cargo bench -p actix-cpg-harness --bench throughput`: ordered
//! throughput of the raw binding and of actix-cpg, measured in the same
//! run, on the sim backend and (with `--features corosync` and the test
//! cluster up) on the real 3-node cluster.
//!
//! Each criterion iteration is one message: a sample runs a case of that
//! many messages (members are processes of this bench executable, one per
//! node namespace on corosync) and counts only the time from the first send
//! to the last member's last delivery. After each group the ratio of the
//! actor paths to the raw binding is printed. Without a cluster the
//! corosync groups are skipped with a message saying why.
//!
//! `cargo test --workspace --benches` runs every case once with a single message, so
//! the benches cannot rot. The full table (sizes, latency, memory) comes
//! from the `bench` binary (`src/bin/bench.rs`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use actix_cpg_harness::bench::{self, Backend, Case, Load, Path};
use criterion::{BenchmarkId, Criterion, Throughput};

const PATHS: [Path; 4] = [
    Path::Raw,
    Path::Actor {
        batching: false,
        keyed: false,
    },
    Path::Actor {
        batching: true,
        keyed: false,
    },
    // What a group key costs on the actor path (BENCHMARKS.md, group keys).
    Path::Actor {
        batching: false,
        keyed: true,
    },
];

/// (backend, nodes, size, senders) of each measured group.
fn groups(backend: Backend) -> Vec<(usize, usize, usize)> {
    match backend {
        Backend::Sim => vec![(3, 64, 1), (3, 1024, 1), (3, 65536, 3)],
        Backend::Corosync => vec![(3, 64, 1), (3, 1024, 1), (3, 65536, 3)],
    }
}

fn human(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn run_group(c: &mut Criterion, backend: Backend, exe: &std::path::Path) {
    let label = match backend {
        Backend::Sim => "sim",
        Backend::Corosync => "corosync",
    };
    for (nodes, size, senders) in groups(backend) {
        let name = format!("{label}/{nodes}n/{}/x{senders}", human(size));
        // Messages and seconds per path, over every sample, for the ratio.
        let totals: RefCell<BTreeMap<String, (u64, f64)>> = RefCell::default();
        let mut group = c.benchmark_group(&name);
        group
            .throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for path in PATHS {
            group.bench_function(BenchmarkId::from_parameter(path), |b| {
                b.iter_custom(|iters| {
                    let per_sender = (iters / senders as u64).max(1);
                    let case = Case {
                        backend,
                        path,
                        load: Load::unpaced(size, per_sender, nodes, senders),
                    };
                    match bench::run_case(&case, exe, &mut |_, _| {}) {
                        Ok(out) => {
                            let mut t = totals.borrow_mut();
                            let e = t.entry(path.to_string()).or_default();
                            e.0 += per_sender * senders as u64;
                            e.1 += out.secs;
                            // Criterion divides by `iters`: scale to it.
                            Duration::from_secs_f64(
                                out.secs * iters as f64 / (per_sender * senders as u64) as f64,
                            )
                        }
                        Err(e) => panic!("{name} {path}: {e}"),
                    }
                })
            });
        }
        group.finish();
        let t = totals.borrow();
        let rate = |p: &str| t.get(p).map(|(n, s)| *n as f64 / s.max(1e-9));
        // `cargo test --benches` sends one message per case: no ratio then.
        let enough = t.values().all(|(n, _)| *n >= 1000);
        if let (true, Some(raw), Some(actor), Some(batch)) =
            (enough, rate("raw"), rate("actor"), rate("actor+batch"))
        {
            println!(
                "{name}: raw {raw:.0} msg/s; actor {actor:.0} msg/s ({:.2} x raw); \
                 actor+batch {batch:.0} msg/s ({:.2} x raw)\n",
                actor / raw,
                batch / raw
            );
        }
    }
}

fn main() {
    if let Some(code) = bench::child_main() {
        std::process::exit(code);
    }
    let exe = std::env::current_exe().expect("the bench executable's path");
    let mut c = Criterion::default().configure_from_args();
    run_group(&mut c, Backend::Sim, &exe);
    if !cfg!(feature = "corosync") {
        println!("skipping the real cluster: built without `--features corosync`");
    } else {
        match bench::cluster_up() {
            Ok(()) => run_group(&mut c, Backend::Corosync, &exe),
            Err(why) => println!("skipping the real cluster: {why}"),
        }
    }
    c.final_summary();
}
