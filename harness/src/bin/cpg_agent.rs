//! `cpg-agent`: one conformance-suite member on the real corosync backend.
//!
//! Reads commands on stdin and prints events on stdout, one per line (see
//! `actix_cpg_harness::conformance`). The conformance suite starts it
//! inside a node's network namespace of the test cluster:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/cpg-agent GROUP raw|group|group@MIN-MAX
//! ```
//!
//! `group@MIN-MAX` plays a build speaking protocol versions MIN to MAX
//! (rolling-upgrade scenarios).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`).

use actix_cpg::transport::corosync::Corosync;
use actix_cpg::wire::Versions;
use actix_cpg::GroupName;
use actix_cpg_harness::{log_to_stderr, run_stdio, Mode};

fn main() {
    log_to_stderr();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(group), Some(mode)) = (args.first(), args.get(1)) else {
        eprintln!("usage: cpg-agent GROUP raw|group|group@MIN-MAX");
        std::process::exit(2);
    };
    let Some(mode) = parse_mode(mode) else {
        eprintln!("unknown mode {mode:?}");
        std::process::exit(2);
    };
    match GroupName::new(group.clone()) {
        Ok(group) => run_stdio(Corosync::new(), &group, mode),
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    }
}

/// `raw`, `group`, or `group@MIN-MAX`.
fn parse_mode(mode: &str) -> Option<Mode> {
    match mode {
        "raw" => Some(Mode::Raw),
        "group" => Some(Mode::Group),
        other => {
            let (min, max) = other.strip_prefix("group@")?.split_once('-')?;
            Some(Mode::GroupSpeaking(Versions {
                min: min.parse().ok()?,
                max: max.parse().ok()?,
            }))
        }
    }
}
