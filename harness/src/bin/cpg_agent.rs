//! `cpg-agent`: one conformance-suite member on the real corosync backend.
//!
//! Reads commands on stdin and prints events on stdout, one per line (see
//! `actix_cpg_harness::conformance`). The conformance suite starts it
//! inside a node's network namespace of the test cluster:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/cpg-agent GROUP raw|group
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`).

use actix_cpg::transport::corosync::Corosync;
use actix_cpg::GroupName;
use actix_cpg_harness::{log_to_stderr, run_stdio, Mode};

fn main() {
    log_to_stderr();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(group), Some(mode)) = (args.first(), args.get(1)) else {
        eprintln!("usage: cpg-agent GROUP raw|group");
        std::process::exit(2);
    };
    let mode = match mode.as_str() {
        "raw" => Mode::Raw,
        "group" => Mode::Group,
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    match GroupName::new(group.clone()) {
        Ok(group) => run_stdio(Corosync::new(), &group, mode),
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    }
}
