//! `cargo bench --bench digest`: what one divergence check costs each
//! replica of the library's kv store (`KvStore`'s `StateMachine::digest`,
//! BLAKE3 over every key and value) by state size, on the replica's actor.
//! The check itself adds one small multicast per participant.

use std::hint::black_box;

use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::StateMachine;
use criterion::{BenchmarkId, Criterion, Throughput};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut bench = c.benchmark_group("digest");
    bench.sample_size(10);
    // (keys, value bytes): 1,000 small entries up to 800 of 64 KiB (52 MB).
    // `cargo test --benches` (no `--bench`) runs each once, unoptimized:
    // there the smallest state is enough to show the code runs.
    let sizes = [(1_000u32, 100u32), (10_000, 1_000), (800, 64 << 10)];
    let benching = std::env::args().any(|a| a == "--bench");
    for &(count, size) in &sizes[..if benching { sizes.len() } else { 1 }] {
        let mut kv = KvStore::default();
        kv.apply(KvCommand::Fill {
            prefix: "k".into(),
            count,
            size,
        });
        bench.throughput(Throughput::Bytes(u64::from(count) * u64::from(size)));
        bench.bench_function(BenchmarkId::new("kv", format!("{count}x{size}")), |b| {
            b.iter(|| black_box(StateMachine::digest(&kv)))
        });
    }
    bench.finish();
    c.final_summary();
}
