//! The metrics as an operator gets them: `examples/prometheus.rs` runs as
//! its own process, and this test scrapes it over loopback with an HTTP
//! client, as Prometheus would. Every documented name is there with its
//! labels, counters and histogram counts grow between two scrapes, and the
//! gauges hold sane values. Nothing is timed: each wait polls until a
//! generous deadline, and the child is killed whatever happens.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine; the example's own loop runs
/// every 100 ms and its worker crashes every 3 s.
const DEADLINE: Duration = Duration::from_secs(90);

/// The example, killed (and reaped) when dropped, also when a check fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The features this test binary was built with: the example built with
/// the same ones reuses the library built for it.
fn features() -> String {
    let mut on = vec!["metrics"];
    if cfg!(feature = "corosync") {
        on.push("corosync");
    }
    if cfg!(feature = "fuzzing") {
        on.push("fuzzing");
    }
    if cfg!(feature = "derive") {
        on.push("derive");
    }
    on.join(",")
}

/// `target/<profile>/examples/prometheus`, beside the directory of this
/// test binary (`target/<profile>/deps/`). `cargo test` builds examples;
/// a run of this test binary alone may not have, so it is built then.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("prometheus{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--example",
                "prometheus",
                "--features",
                &features(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the example builds");
    }
    path
}

/// Starts the example on a port it picks, and reads the address it serves.
fn start() -> (Running, String) {
    let child = Command::new(example())
        // A cap of its own, so it cannot outlive a test killed hard.
        .args(["--listen", "127.0.0.1:0", "--for", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let _ = tx.send(first);
        // Read on: the example's later lines must not meet a closed pipe.
        for _ in stdout.lines().map_while(Result::ok) {}
    });
    let first = rx
        .recv_timeout(DEADLINE)
        .expect("the example prints its address");
    let addr = first.trim().to_owned();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "first line is the address: {first:?}"
    );
    (running, addr)
}

/// One scrape: `name{labels}` → value, comments left out.
type Scrape = BTreeMap<String, f64>;

fn scrape(agent: &ureq::Agent, addr: &str) -> Option<Scrape> {
    let mut response = agent
        .get(&format!("http://{addr}/metrics"))
        .call()
        .map_err(|e| eprintln!("scrape: {e}"))
        .ok()?;
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| eprintln!("scrape body: {e}"))
        .ok()?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// The sum of every series of `name` whose labels include all of `with`
/// (`key="value"` each); `None` if there is none.
fn total(s: &Scrape, name: &str, with: &[&str]) -> Option<f64> {
    let matching: Vec<f64> = s
        .iter()
        .filter(|(series, _)| {
            series
                .split_once('{')
                .is_some_and(|(n, labels)| n == name && with.iter().all(|w| labels.contains(w)))
        })
        .map(|(_, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Scrapes until `ready` holds of a scrape.
fn scrape_until(
    agent: &ureq::Agent,
    addr: &str,
    what: &str,
    ready: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = scrape(agent, addr) {
            if ready(&s) {
                return s;
            }
        }
        assert!(Instant::now() < until, "never saw {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const REGISTRY: &str = r#"protocol="registry""#;
const REPLICA: &str = r#"protocol="replica""#;
const ELECTION: &str = r#"protocol="election""#;

#[test]
fn a_scrape_over_loopback_shows_every_name_with_its_labels_and_values_that_move() {
    let (_running, addr) = start();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let count = |s: &Scrape, name: &str, protocol: &str| total(s, name, &[protocol]).unwrap_or(0.0);

    // Once the third member is in, a call has been made and the worker
    // has been restarted, every histogram has a value.
    let first = scrape_until(&agent, &addr, "every histogram recorded", |s| {
        count(s, "acpg_call_duration_seconds_count", REGISTRY) > 0.0
            && count(s, "acpg_apply_duration_seconds_count", REPLICA) > 0.0
            && count(s, "acpg_state_transfer_seconds_count", REGISTRY) > 0.0
            && count(s, "acpg_state_transfer_seconds_count", REPLICA) > 0.0
            && count(s, "acpg_restart_seconds_count", REGISTRY) > 0.0
            && count(s, "acpg_members", REGISTRY) >= 9.0
    });

    let every = [
        ("acpg_delivered_total", REGISTRY),
        ("acpg_delivered_total", REPLICA),
        ("acpg_delivered_total", ELECTION),
        ("acpg_sent_total", REGISTRY),
        ("acpg_multicasts_total", REPLICA),
        ("acpg_requests_total", REGISTRY),
        ("acpg_batches_sent_total", REGISTRY),
        ("acpg_batches_delivered_total", REGISTRY),
        ("acpg_chunks_sent_total", REGISTRY),
        ("acpg_chunked_delivered_total", REGISTRY),
        ("acpg_chunked_resent_total", REGISTRY),
        ("acpg_chunks_stray_total", REGISTRY),
        ("acpg_compressed_sent_total", REGISTRY),
        ("acpg_compressed_saved_bytes_total", REGISTRY),
        ("acpg_compressed_delivered_total", REGISTRY),
        ("acpg_try_again_total", REPLICA),
        ("acpg_acks_skipped_total", REPLICA),
        ("acpg_checks_total", REPLICA),
        ("acpg_checks_diverged_total", REPLICA),
        ("acpg_calls_abandoned_total", REGISTRY),
        ("acpg_dropped_total", REGISTRY),
        ("acpg_refused_total", REGISTRY),
        ("acpg_refused_total", REPLICA),
        ("acpg_refused_total", ELECTION),
        ("acpg_members", ELECTION),
        ("acpg_protocol_version", REPLICA),
        ("acpg_multicasts_in_flight", REGISTRY),
        ("acpg_send_queue_messages", ELECTION),
        ("acpg_send_queue_bytes", REGISTRY),
        ("acpg_calls_outstanding", REGISTRY),
        ("acpg_replies_awaited", REGISTRY),
        ("acpg_children_running", REGISTRY),
        ("acpg_children_pending", REGISTRY),
        ("acpg_primary", REPLICA),
        ("acpg_replica_applied", REPLICA),
        ("acpg_election_leading", ELECTION),
        ("acpg_election_has_leader", ELECTION),
        ("acpg_election_epoch_term", ELECTION),
        ("acpg_election_epoch_ring_seq", ELECTION),
        ("acpg_confchg_decision_seconds_count", REGISTRY),
        ("acpg_confchg_decision_seconds_count", REPLICA),
        ("acpg_confchg_decision_seconds_count", ELECTION),
        ("acpg_confchg_decision_seconds_bucket", REGISTRY),
        ("acpg_call_duration_seconds_sum", REGISTRY),
    ];
    for (name, protocol) in every {
        assert!(
            total(&first, name, &[protocol]).is_some(),
            "{name}{{{protocol}}} is served"
        );
    }
    for (group, protocol) in [
        ("metrics-demo", REGISTRY),
        ("metrics-demo-kv", REPLICA),
        ("metrics-demo-lead", ELECTION),
    ] {
        let group = format!(r#"group="{group}""#);
        for node in 1..=3 {
            let member = format!(r#"member="node{node}/"#);
            assert!(
                total(&first, "acpg_members", &[&group, protocol, &member]).is_some(),
                "{group} {protocol} {member}"
            );
        }
    }
    assert!(total(
        &first,
        "acpg_dropped_total",
        &[REGISTRY, r#"cause="unauthenticated""#]
    )
    .is_some());
    assert!(total(
        &first,
        "acpg_refused_total",
        &[REGISTRY, r#"cause="clock""#]
    )
    .is_some());
    assert!(total(
        &first,
        "acpg_call_duration_seconds_count",
        &[r#"outcome="ok""#]
    )
    .is_some());
    assert!(
        total(&first, "acpg_election_leading", &[r#"election="jobs""#]).is_some(),
        "a gauge per election name"
    );

    // Gauges: within what three members with one worker allow.
    for (series, value) in &first {
        let name = series.split('{').next().unwrap_or_default();
        match name {
            "acpg_members" => assert!((1.0..=3.0).contains(value), "{series} {value}"),
            "acpg_primary" | "acpg_election_leading" | "acpg_election_has_leader" => {
                assert!(*value == 0.0 || *value == 1.0, "{series} {value}")
            }
            "acpg_protocol_version" => assert!(*value >= 1.0, "{series} {value}"),
            _ => assert!(*value >= 0.0, "{series} {value}"),
        }
    }
    let jobs = r#"election="jobs""#;
    assert!(
        count(&first, "acpg_children_running", REGISTRY) <= 1.0,
        "one worker, at most one host"
    );
    assert!(
        total(&first, "acpg_election_leading", &[jobs]).unwrap_or(0.0) <= 1.0,
        "at most one member leads"
    );

    // Values move: the load goes on between the two scrapes.
    let moved = |s: &Scrape, name: &str, protocol: &str| {
        count(s, name, protocol) > count(&first, name, protocol)
    };
    let second = scrape_until(&agent, &addr, "counters and histograms grow", |s| {
        moved(s, "acpg_delivered_total", REGISTRY)
            && moved(s, "acpg_delivered_total", REPLICA)
            && moved(s, "acpg_call_duration_seconds_count", REGISTRY)
            && moved(s, "acpg_apply_duration_seconds_count", REPLICA)
            && moved(s, "acpg_replica_applied", REPLICA)
    });
    assert!(
        count(&second, "acpg_call_duration_seconds_sum", REGISTRY)
            >= count(&first, "acpg_call_duration_seconds_sum", REGISTRY)
    );
    assert_eq!(
        total(&second, "acpg_primary", &[REPLICA]),
        Some(3.0),
        "three replicas of one primary component"
    );
    assert_eq!(
        total(&second, "acpg_election_has_leader", &[jobs]),
        Some(3.0),
        "every member sees a leader"
    );
}
