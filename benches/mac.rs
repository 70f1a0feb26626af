//! `cargo bench --bench mac`: the CPU cost of a group key alone — sealing
//! an envelope (MAC computed, copied behind the MAC header) and opening it
//! (MAC checked, header stripped) — per message size, without a transport.
//! What it adds to a whole path is measured by the harness's `bench
//! --key` (`harness/src/bin/bench.rs`).

use std::hint::black_box;

use actix_cpg::auth::{open, seal, GroupKey};
use actix_cpg::{GroupName, Member};
use criterion::{BenchmarkId, Criterion, Throughput};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let key = GroupKey::from_passphrase("mac bench");
    let group = GroupName::new("mac-bench").expect("name");
    let from = Member::new(1, 4242);
    let mut bench = c.benchmark_group("mac");
    for size in [64usize, 1024, 16 << 10, 64 << 10, 256 << 10] {
        let envelope = vec![0x5a; size];
        bench.throughput(Throughput::Bytes(size as u64));
        let mut sealed = Vec::new();
        bench.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| seal(&key, &group, from, black_box(&envelope), &mut sealed))
        });
        seal(&key, &group, from, &envelope, &mut sealed);
        bench.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |bytes| open(&key, &group, from, bytes).expect("verifies"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    bench.finish();
    c.final_summary();
}
