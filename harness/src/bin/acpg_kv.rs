//! `acpg-kv`: the replicated key-value store of `actix_cpg::kv` as a
//! service, and its client.
//!
//! ```text
//! acpg-kv serve GROUP --listen ADDR [--safe] [--join-only] [--sim N | --corosync] [--digest-every N] [--record FILE]
//! acpg-kv client ADDR put K V | get K | del K | cas K OLD NEW | status
//! ```
//!
//! `serve` runs one replica of GROUP and serves the line protocol of
//! `actix_cpg_harness::kv_lines` to any number of TCP clients of ADDR at
//! once, pipelined (a request `#N put k v` is answered `#N OK POS`).
//! `--corosync` joins the corosync daemon of this network namespace (on the
//! test cluster: `ip netns exec acpg-n1 acpg-kv serve kv --listen
//! 10.213.57.1:7379 --corosync`, one per node); `--sim N` runs N replicas
//! in this process on the sim backend, replica `i` on ADDR's port + `i`, to
//! try it without a daemon. Each replica prints `SERVING ADDR MEMBER` once
//! it listens. `--safe`: a reply waits until every replica applied the
//! command; `--join-only`: never found a new, empty history.
//!
//! **Reads are linearizable**: `get` is answered from this replica's state
//! where a barrier it multicast comes back in the group's total order
//! (`Replica::read`), so it sees every write acknowledged before it was
//! sent, by any replica; nothing is logged or synced for it. (`read KEY`
//! on the protocol is the local, possibly stale read.)
//!
//! The state lives in memory: when every replica stops, it is gone. A data
//! directory comes with the library's durable replicas.
//!
//! `client` sends one request and prints the answer; it exits 1 on an
//! `ERR` answer or when it cannot reach ADDR. Logs go to stderr, filtered
//! by `RUST_LOG` (default `warn`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(actix_cpg_harness::kv_service::main_with(&args));
}
