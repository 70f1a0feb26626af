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
//! - [`bench`]: the bench orchestrator behind the `bench` binary and
//!   `benches/throughput.rs` (the raw binding and actix-cpg in the same run).
#![deny(missing_docs)]

pub mod bench;
pub mod conformance;
pub mod kv_lines;

pub use conformance::{
    decode_hex, encode_hex, run, run_stdio, test_tree, Echo, Mode, TEST_TREE, TEST_TREE_CHILDREN,
};
