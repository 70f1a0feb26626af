#!/usr/bin/env bash
# The whole test suite, on a fresh machine, as root:
#   - installs what it needs (corosync and its client libraries, protoc,
#     and for the etcd comparison's smoke etcd-server, by apt-get),
#   - starts the real 3-node corosync cluster (scripts/cluster.sh up),
#   - checks formatting, lints, the docs and the package, runs every test
#     of the workspace (the library and the harness; sim and real cluster),
#     a few seconds of each fuzz target, and the demo on both backends,
#   - stops the cluster and removes its namespaces, whatever happened.
#
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# One user of the shared test cluster at a time on this machine.
if [ -z "${ACPG_CLUSTER_LOCKED:-}" ]; then
    export ACPG_CLUSTER_LOCKED=1
    exec flock /tmp/acpg-cluster.lock bash "$0" "$@"
fi

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run as root (it creates network namespaces and starts corosync)" >&2
    exit 1
fi

step() { printf '\n=== %s\n' "$*"; }

cleanup() {
    step "stopping the test cluster"
    bash scripts/cluster.sh down || true
}
trap cleanup EXIT

step "starting the 3-node corosync test cluster (installs packages if missing)"
bash scripts/cluster.sh up

step "protoc for the harness's \`etcd\` feature (Debian protobuf-compiler; installed if missing)"
# `--all-features` builds the etcd client of `bench --vs-etcd`, whose build
# script runs protoc.
if ! command -v protoc >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler >/dev/null ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler >/dev/null; }
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "docs, warnings denied: default features, and all features as docs.rs builds them"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p actix-cpg
# docs.rs builds on nightly with `--cfg docsrs` (the `doc(cfg)` badges);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain do the same.
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="-D warnings --cfg docsrs" \
    cargo doc --no-deps -p actix-cpg --all-features --target-dir target/docsrs

step "the library and its derive macros package and build alone, as published (cargo publish --dry-run)"
# Together: the library's optional `actix-cpg-macros` resolves to the one
# packaged beside it, not to crates.io.
cargo publish --dry-run -p actix-cpg -p actix-cpg-macros --allow-dirty

step "tests of the library and of the harness: sim backend and the real cluster"
ACPG_CLUSTER=1 cargo test --workspace --all-features

step "fuzz targets, 5 s each from the committed seeds (installs cargo-fuzz if missing)"
bash scripts/fuzz.sh smoke 5

step "benches, once each with one message (cargo test --benches)"
cargo test --workspace --all-features --benches

step "bench smoke on both backends (seconds; the full run is in BENCHMARKS.md)"
cargo run -p actix-cpg-harness --features corosync --bin bench -- --smoke --corosync --nodes 1,3 --overload 3 --key

step "bench smoke: a large payload read as wire::Payload, and compression (fails if no JSON-like multicast went compressed)"
cargo run -p actix-cpg-harness --features corosync --bin bench -- --smoke --corosync --no-sim --nodes 3 --shared-payload
cargo run -p actix-cpg-harness --features corosync --bin bench -- --smoke --corosync --no-sim --nodes 3 --compression

step "kv service against etcd, smoke (a few hundred requests a side; installs etcd-server if missing)"
cargo run -p actix-cpg-harness --features corosync,etcd --bin bench -- --vs-etcd --smoke

step "loss window, one round each: node 1's daemon killed, then its link cut, under pipelined puts (fails if safe delivery lost an acknowledged put)"
cargo run -p actix-cpg-harness --features corosync --bin bench -- --loss-window --rounds 1

step "bench smoke with knet crypto off, then on (restarts the cluster; ends with the default)"
cargo run -p actix-cpg-harness --features corosync --bin bench -- --smoke --corosync --no-sim --nodes 1 --no-latency --crypto both

step "group size: bench smoke on a 5-node and a 7-node cluster, 2 failover kills each (restarts the cluster; ends with 3 nodes)"
# The failover example it runs is the debug build `cargo test` made above.
# The 7-node part adds about 20 s.
cargo run -p actix-cpg-harness --features corosync --bin bench -- --corosync --no-sim --nodes 5,7 --sizes 64 --scale 0.01 --no-latency --no-floor --failover 2

step "demo on the sim backend"
cargo run --example demo

step "demo on the real cluster"
cargo run --features corosync --example demo -- --corosync

step "supervision example on the sim backend"
cargo run --example supervision

step "supervision example on the real cluster"
cargo run --features corosync --example supervision -- --corosync

step "kv_store and leader_election examples on the sim backend"
cargo run --example kv_store
cargo run --example leader_election

step "the short examples on the sim backend"
cargo run --example own_state_machine
cargo run --example registry_calls
cargo run --example restart_elsewhere
cargo run --example elect_a_leader

step "kv_store and leader_election examples on the real cluster"
cargo run --features corosync --example kv_store -- --corosync
cargo run --features corosync --example leader_election -- --corosync

step "cluster still healthy after the suite"
bash scripts/cluster.sh status
