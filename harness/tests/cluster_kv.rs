//! The kv service on the real 3-node corosync cluster: one `acpg-kv serve
//! --corosync` per node namespace, on the node's address; a put through
//! node 1's replica is read through node 3's.
//!
//! Runs with `--features corosync` and `ACPG_CLUSTER=1` (which
//! `scripts/test.sh` sets after `scripts/cluster.sh up`); otherwise it
//! prints why it skipped. Every process it starts is killed when the test
//! ends (a drop guard, also when it fails).

#![cfg(feature = "corosync")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KV: &str = env!("CARGO_BIN_EXE_acpg-kv");

/// Node `n`'s address on the test cluster (`scripts/cluster.sh`).
fn node_addr(n: u32) -> String {
    format!("10.213.57.{n}")
}

/// The service processes; killed when dropped.
struct Services(Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `acpg-kv client ADDR WORDS...` in node `node`'s namespace: its exit
/// code and its answer.
fn client(node: u32, addr: &str, words: &str) -> (i32, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("acpg-n{node}"),
            KV,
            "client",
            addr,
        ])
        .args(words.split_whitespace())
        .output()
        .expect("run acpg-kv client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn a_put_on_node_one_is_read_on_node_three() {
    if std::env::var("ACPG_CLUSTER").as_deref() != Ok("1") {
        println!("skipped: no cluster (set ACPG_CLUSTER=1 after scripts/cluster.sh up)");
        return;
    }
    let group = format!("acpg-kv-test-{}", std::process::id());
    // A port of this run, the same in each namespace.
    let port = 20_000 + std::process::id() % 20_000;
    let mut services = Services(Vec::new());
    for n in 1..=3 {
        let addr = format!("{}:{port}", node_addr(n));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &format!("acpg-n{n}"), KV, "serve", &group])
            .args(["--listen", &addr, "--corosync"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start acpg-kv serve");
        let stdout = child.stdout.take().expect("stdout");
        services.0.push(child);
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("acpg-kv serve ended before it served")
            .expect("read its output");
        assert!(line.starts_with("SERVING "), "node {n}: {line}");
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("node {n}: {line}");
            }
        });
    }
    let (one, three) = (
        format!("{}:{port}", node_addr(1)),
        format!("{}:{port}", node_addr(3)),
    );
    // The three replicas form one primary component.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = client(3, &three, "status");
        if status.contains("primary=true") && status.contains("members=3") {
            break;
        }
        assert!(Instant::now() < deadline, "no 3-member primary: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, answer) = client(1, &one, "put greeting hello from node one");
    assert_eq!(code, 0, "{answer}");
    assert!(answer.starts_with("OK "), "{answer}");
    let (code, answer) = client(3, &three, "get greeting");
    assert_eq!(code, 0, "{answer}");
    assert!(
        answer.starts_with("VALUE ") && answer.ends_with(" hello from node one"),
        "{answer}"
    );
    let (code, answer) = client(3, &three, "cas greeting - other");
    assert_eq!(code, 0, "{answer}");
    assert!(answer.contains(" fail "), "{answer}");
}
