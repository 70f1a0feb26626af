//! `cpg-agent`: one conformance-suite member on the real corosync backend.
//!
//! Reads commands on stdin and prints events on stdout, one per line (see
//! `actix_cpg_harness::conformance`). The conformance suite starts it
//! inside a node's network namespace of the test cluster:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/cpg-agent GROUP raw|group|group@MIN-MAX [--record FILE] [--show]
//! ```
//!
//! `group@MIN-MAX` plays a build speaking protocol versions MIN to MAX
//! (rolling-upgrade scenarios). `--record FILE` records the member's
//! stream (`acpg replay FILE`); `--show` prints a `SHOW` line (its
//! `inspect()` as JSON) before it ends, and the `show` command prints one
//! at any time (group modes; see `actix_cpg_harness::observe`).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`).

use actix_cpg::transport::corosync::Corosync;
use actix_cpg::wire::Versions;
use actix_cpg::GroupName;
use actix_cpg_harness::{log_to_stderr, run_stdio, Mode, Observe};

const USAGE: &str = "usage: cpg-agent GROUP raw|group|group@MIN-MAX [--record FILE] [--show]";

fn main() {
    log_to_stderr();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let observe = Observe::take_from(&mut args).unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let (Some(group), Some(mode)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let Some(mode) = parse_mode(mode) else {
        eprintln!("unknown mode {mode:?}");
        std::process::exit(2);
    };
    match GroupName::new(group.clone()) {
        Ok(group) => run_stdio(Corosync::new(), &group, mode, observe),
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
