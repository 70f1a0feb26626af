//! The library's integration tests, one test binary (linking one binary
//! instead of one per file is most of what a clean `cargo test` costs).
//!
//! Each module is one file of `tests/`; run one with
//! `cargo test --test integration MODULE::` (for example
//! `cargo test --test integration hostile_group::`). The real-cluster
//! tests need `ACPG_CLUSTER=1` and the `corosync` feature
//! (`bash scripts/cluster.sh up` first).

mod support;

mod calls;
mod corosync_smoke;
mod divergence;
mod durable_rsm;
mod election_observer;
mod election_schedules;
mod election_versions;
mod example_record;
mod failover_timing;
mod group_key;
mod group_versions;
mod hostile_decoding;
mod hostile_election;
mod hostile_group;
mod hostile_replicated;
mod inspect;
mod inspect_rsm;
mod kv_history_sim;
mod record_replay;
mod replicated_batching;
mod replicated_observer;
mod replicated_reads;
mod replicated_schedules;
mod replicated_versions;
mod scrape;
mod sim_batching;
mod sim_chunking;
mod sim_compression;
mod sim_determinism;
mod sim_flow_control;
mod sim_payload;
mod sim_schedules;
mod sim_semantics;
mod supervision_schedules;
mod supervision_sim;
mod supervisor_properties;
mod tracing_spans;
