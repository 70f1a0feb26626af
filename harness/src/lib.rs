//! The test and bench harness of actix-cpg, kept out of the library.
//!
//! Nothing here is for users of the library; the package is never
//! published.
//!
//! - [`bench`]: the bench orchestrator behind the `bench` binary and
//!   `benches/throughput.rs` (the raw binding and actix-cpg in the same run).
#![deny(missing_docs)]

pub mod bench;
