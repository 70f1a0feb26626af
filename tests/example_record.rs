//! A shipped example run with `--record FILE` writes one recording per
//! member, and replaying them reproduces what the example printed live;
//! `--show` prints each member's `inspect()` snapshot.

use std::path::PathBuf;
use std::process::Command;

use actix_cpg::election::{replay, ElectionInspection};
use actix_cpg::record::{Protocol, Recording};
use actix_cpg::{ElectionConfig, GROUP_ELECTION};

/// The path of example `name`, built with this test's features and
/// profile. `cargo test` builds the examples along with the tests; a run
/// of this test binary alone (`--test integration`) does not, so cargo is
/// asked (a no-op when it is up to date).
fn example(name: &str) -> PathBuf {
    let features: Vec<&str> = [
        ("corosync", cfg!(feature = "corosync")),
        ("fuzzing", cfg!(feature = "fuzzing")),
        ("derive", cfg!(feature = "derive")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name]);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build --example {name}: {status}");
    // target/<profile>/deps/integration-… → target/<profile>/examples/
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile.join("examples").join(name)
}

/// The text after `what` on the line of `out` that holds it, up to `)` or
/// the end of the line.
fn after<'a>(out: &'a str, what: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?} in {out}"));
    let rest = &line[line.find(what).unwrap_or(0) + what.len()..];
    rest.split(')').next().unwrap_or(rest).trim()
}

/// The `inspect()` snapshot `--show` printed for `member`: the indented
/// JSON after its `-- MEMBER: inspect()` line, up to the next `-- ` line.
fn inspection(out: &str, member: &str) -> ElectionInspection {
    let head = format!("-- {member}: inspect()");
    let json: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with("-- "))
        .collect();
    serde_json::from_str(&json.join("\n"))
        .unwrap_or_else(|e| panic!("no inspection of {member} ({e}) in {out}"))
}

#[test]
fn an_example_run_with_record_writes_recordings_that_replay_to_what_it_printed() {
    let dir = std::env::temp_dir().join(format!("acpg-example-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("elect");
    let run = Command::new(example("elect_a_leader"))
        .arg("--record")
        .arg(&file)
        .arg("--show")
        .output()
        .expect("the example runs");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // "node1/1000 leads with epoch E1" and
    // "node1/1000 killed: node2/1001 leads with epoch E2".
    let first_line = out.lines().next().unwrap_or_default();
    let first_leader = first_line.split(' ').next().unwrap_or_default().to_owned();
    let first_epoch = after(&out, " leads with epoch ").to_owned();
    let second_line = out
        .lines()
        .find(|l| l.contains(" killed: "))
        .unwrap_or_else(|| panic!("no hand-over in {out}"));
    let second_leader = after(second_line, " killed: ")
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let second_epoch = after(second_line, " leads with epoch ").to_owned();
    // `--show` printed each survivor's `inspect()`: the group's leader
    // and epoch there are the ones the example printed.
    let shown = inspection(&out, &second_leader);
    let group = shown
        .election(GROUP_ELECTION)
        .unwrap_or_else(|| panic!("no group election in {shown:#?}"));
    assert_eq!(
        group.leader.map(|m| m.to_string()).as_deref(),
        Some(second_leader.as_str()),
        "{shown:#?}"
    );
    assert_eq!(
        group.epoch.map(|e| e.to_string()).as_deref(),
        Some(second_epoch.as_str()),
        "{shown:#?}"
    );
    assert!(
        !shown
            .members
            .iter()
            .any(|m| m.member.to_string() == first_leader),
        "the killed leader is gone: {shown:#?}"
    );

    let mut replayed = Vec::new();
    for member in 1..=3 {
        let path = PathBuf::from(format!("{}.{member}", file.display()));
        let recording = Recording::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(recording.protocol, Protocol::Election);
        let decisions: Vec<String> = replay(&recording, &ElectionConfig::default())
            .into_iter()
            .map(|d| d.decision)
            .collect();
        replayed.push((recording.local.to_string(), decisions));
    }
    let leads = |leader: &str, epoch: &str| {
        format!("leader of the group election: {leader} (epoch {epoch})")
    };
    let acts = |epoch: &str| format!("this member leads the group election (epoch {epoch})");
    for (member, decisions) in &replayed {
        let has = |d: &str| decisions.iter().any(|x| x == d);
        if *member == first_leader {
            assert!(has(&leads(&first_leader, &first_epoch)), "{decisions:#?}");
            assert!(has(&acts(&first_epoch)), "{decisions:#?}");
        } else {
            assert!(
                has(&leads(&second_leader, &second_epoch)),
                "{member}: {decisions:#?}"
            );
        }
        if *member == second_leader {
            assert!(has(&acts(&second_epoch)), "{decisions:#?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
