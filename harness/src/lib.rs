//! The test and bench harness of actix-cpg, kept out of the library.
//!
//! Nothing here is for users of the library; the package is never
//! published.
//!
//! - [`conformance`]: the conformance agent, one group member driven by
//!   text lines (tasks of `tests/conformance.rs` on the sim backend, the
//!   `cpg-agent` binary on the real cluster), with its test messages and
//!   test tree;
//! - [`kv_lines`]: the line protocol of the kv store, which the
//!   `rsm-agent` binary serves to `tests/cluster_replicated.rs`;
//! - [`kv_service`]: the kv store as a TCP service (`acpg-kv serve`) and
//!   its pipelined client;
//! - [`etcd`], [`kv_load`], [`vs_etcd`]: three etcd members on the test
//!   cluster, the client load, and `bench --vs-etcd` (the kv service and
//!   etcd under the same load in one run);
//! - [`failover`]: `bench --vs-etcd-failover` (leader failover of the
//!   election against etcd's election API);
//! - [`restart`]: `bench --vs-etcd-restart` (a whole cluster killed at
//!   once, until it accepts writes again, against etcd);
//! - [`late_joiner`]: `bench --vs-etcd-joiner` (a member joining empty
//!   while two others hold 50 MB and serve, against etcd);
//! - [`observe`]: the agents' `--record FILE` and `--show`;
//! - [`bench`]: the bench orchestrator behind the `bench` binary and
//!   `benches/throughput.rs` (the raw binding and actix-cpg in the same run).
#![deny(missing_docs)]

pub mod bench;
pub mod children;
pub mod conformance;
pub mod etcd;
pub mod failover;
pub mod kv_lines;
pub mod kv_load;
pub mod kv_service;
pub mod late_joiner;
pub mod loss_window;
pub mod observe;
pub mod restart;
pub mod vs_etcd;

pub use conformance::{
    decode_hex, encode_hex, run, run_observed, run_stdio, test_tree, Echo, Mode, TEST_TREE,
    TEST_TREE_CHILDREN,
};
pub use observe::Observe;

/// Sends this process's logs (the library's `tracing` events) to stderr,
/// filtered by `RUST_LOG` (`warn` when unset). An agent's stdout carries its
/// protocol lines; its stderr is the test's, so a failing real-cluster test
/// shows what its agents logged.
pub fn log_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A subscriber already installed (a second call) keeps its place.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The single-threaded runtime a bench helper process (a campaigner, a
/// probe, a writer) runs on. If it cannot be built, the helper prints
/// `ERROR` and the reason on stdout, which the bench reads, and the `Err`
/// holds the exit code to return: 1.
pub fn agent_runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            println!("ERROR {e}");
            1
        })
}
