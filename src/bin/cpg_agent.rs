//! `cpg-agent`: one conformance-suite member on the real corosync backend.
//!
//! Reads commands on stdin and prints events on stdout, one per line (see
//! `actix_cpg::testing`). The conformance suite starts it inside a node's
//! network namespace of the test cluster:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/cpg-agent GROUP raw|group
//! ```

use std::io::BufRead;

use actix_cpg::testing::{self, Mode};
use actix_cpg::transport::corosync::Corosync;
use actix_cpg::{GroupName, Transport};

fn main() {
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
    let group = match GroupName::new(group.clone()) {
        Ok(g) => g,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if in_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = std::thread::spawn(move || {
        while let Some(line) = out_rx.blocking_recv() {
            println!("{line}");
        }
    });
    actix::System::new().block_on(async move {
        match Corosync::new().join(&group) {
            Ok(conn) => testing::run(conn, mode, in_rx, out_tx).await,
            Err(e) => {
                let _ = out_tx.send(format!("ERROR {e}"));
            }
        }
    });
    let _ = printer.join();
}
