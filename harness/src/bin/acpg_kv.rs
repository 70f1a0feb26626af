//! `acpg-kv`: the replicated key-value store of `actix_cpg::kv` as a
//! service, and its client.
//!
//! ```text
//! acpg-kv serve GROUP --listen ADDR [--safe | --safe-all] [--join-only] [--sim N | --corosync]
//!               [--data-dir DIR] [--sync every|batch|never] [--batch N] [--window N]
//!               [--chunks N] [--digest-every N] [--record FILE]
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
//! it listens. A reply leaves once this replica applied the command
//! (agreed order) unless `--safe` makes it wait until a majority of the
//! replicas in the primary component applied it (and, with a data
//! directory, synced it), or `--safe-all` until every replica holding the
//! state did; `--join-only`: never found a new, empty history.
//!
//! **Reads are linearizable**: `get` is answered from this replica's state
//! where a barrier it multicast comes back in the group's total order
//! (`Replica::read`), so it sees every write acknowledged before it was
//! sent, by any replica; nothing is logged or synced for it. (`read KEY`
//! on the protocol is the local, possibly stale read.)
//!
//! Without `--data-dir` the state lives in memory: when every replica
//! stops, it is gone. With `--data-dir DIR` each replica keeps its state
//! there (with `--sim N`: `DIR/1` .. `DIR/N`), and `--sync` says when its
//! commands reach the disk before their replies: `batch` (the default, one
//! `fsync` per batch delivered together), `every` (one per command) or
//! `never` (left to the operating system). A replica killed, or the whole
//! group killed, and served again on the same directories comes back with
//! its state; with `--safe` (or `--safe-all`) and `batch` or `every`, no
//! acknowledged write is lost. `--batch`, `--window`, `--chunks`, `--digest-every` tune the
//! replica (see `actix_cpg_harness::kv_service`); `--record FILE` records
//! each replica's stream; `ACPG_PROBE` set in the environment prints
//! where requests' time went every 5 s on stderr.
//!
//! `client` sends one request and prints the answer; it exits 1 on an
//! `ERR` answer or when it cannot reach ADDR. Logs go to stderr, filtered
//! by `RUST_LOG` (default `warn`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(actix_cpg_harness::kv_service::main_with(&args));
}
