//! `rsm-agent`: one member of a replicated key-value store or of an
//! election group on the real corosync backend, driven by stdin lines and
//! reporting on stdout. The real-cluster tests start it inside a node's
//! network namespace of the test cluster:
//!
//! ```text
//! ip netns exec acpg-n1 target/debug/rsm-agent kv GROUP [--safe] [--join-only] [--versions MIN-MAX] [--data-dir DIR] [--sync every|batch|never] [--key PASSPHRASE] [--record FILE] [--show]
//! ip netns exec acpg-n1 target/debug/rsm-agent elect GROUP [--record FILE] [--show]
//! ```
//!
//! `--record FILE` records the member's stream (an election's replays with
//! `acpg replay FILE`, a kv replica's with
//! `actix_cpg::replicated::replay::<KvStore>`); `--show` prints a `SHOW`
//! line before the agent ends, and the `show` line asks for one at any
//! time (see `actix_cpg_harness::observe`).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`).
//!
//! `--data-dir DIR` keeps the kv replica's state in DIR (a restarted agent
//! comes back with it), written to disk as `--sync` says (default `batch`:
//! one `fsync` per batch, before the replies); `--key PASSPHRASE` keys the
//! group (every member needs the same one).
//!
//! `--versions MIN-MAX` plays a build speaking those protocol versions
//! (rolling-upgrade tests); refused by the group, the agent prints
//! `ERROR` with the reason and exits 1.
//!
//! `kv` serves the line protocol of `actix_cpg_harness::kv_lines` after a `READY member`
//! line (once the replica holds the state) and, if it received the state
//! by snapshot, a `RESTORED from bytes ms-since-start` line. `elect` prints `READY member`,
//! then `VIEW members=N left=a:Reason,...`, `ELECTED epoch`,
//! `DEPOSED epoch` and `LEADER member epoch` lines as they happen, and
//! answers these input lines (an optional `#N ` tag is repeated):
//!
//! ```text
//!  leader     LEADER member epoch  |  LEADER - -
//!  refused    REFUSED not_member=N incompatible=N ring_jump=N epoch_jump=N malformed=N
//!             (election messages this member refused, by cause)
//!  show       SHOW {inspect() as JSON}
//! ```

use std::io::BufRead;
use std::time::Instant;

use actix_cpg::auth::GroupKey;
use actix_cpg::kv::KvStore;
use actix_cpg::replicated::SyncPolicy;
use actix_cpg::transport::corosync::Corosync;
use actix_cpg::wire::Versions;
use actix_cpg::{
    Delivery, Election, ElectionConfig, ElectionEvent, GroupName, Replica, ReplicaConfig,
    Transport, GROUP_ELECTION,
};
use actix_cpg_harness::kv_lines::serve_lines;
use actix_cpg_harness::observe::{election_line, replica_line};
use actix_cpg_harness::{log_to_stderr, Observe};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Where and how a kv replica keeps its state (`--data-dir`, `--sync`,
/// `--key`).
struct Durability {
    data_dir: Option<std::path::PathBuf>,
    sync: SyncPolicy,
    key: Option<GroupKey>,
}

async fn kv(
    group: GroupName,
    (safe, founder, versions): (bool, bool, Versions),
    durability: Durability,
    observe: Observe,
    input: UnboundedReceiver<String>,
    out: UnboundedSender<String>,
) -> Result<(), String> {
    let started = Instant::now();
    let conn = Corosync::new().join(&group).map_err(|e| e.to_string())?;
    let config = ReplicaConfig {
        delivery: if safe {
            Delivery::Safe
        } else {
            Delivery::Agreed
        },
        found_group: founder,
        protocol_versions: versions,
        record_to: observe.record,
        data_dir: durability.data_dir,
        sync: durability.sync,
        key: durability.key,
        ..ReplicaConfig::default()
    };
    let replica = Replica::<KvStore>::start(conn, config)
        .await
        .map_err(|e| e.to_string())?;
    let _ = out.send(format!("READY {}", replica.local()));
    // A joiner holds the state only once its snapshot is restored, so the
    // restore (if any) happened before READY.
    if let Some((from, bytes)) = replica.status().restored {
        let _ = out.send(format!(
            "RESTORED {from} {bytes} {}",
            started.elapsed().as_millis()
        ));
    }
    serve_lines(replica.clone(), input, out.clone()).await;
    if observe.show {
        let _ = out.send(replica_line(&replica).await);
    }
    Ok(())
}

/// The answer of an `elect` member to one input line.
async fn answer(election: &Election, line: &str) -> String {
    match line.trim() {
        "leader" => match election.leader(GROUP_ELECTION) {
            Some(l) => format!("LEADER {} {}", l.leader, l.epoch),
            None => "LEADER - -".into(),
        },
        "refused" => {
            let r = election.status().refused;
            format!(
                "REFUSED not_member={} incompatible={} ring_jump={} epoch_jump={} malformed={}",
                r.not_member, r.incompatible, r.ring_jump, r.epoch_jump, r.malformed
            )
        }
        "show" => election_line(election).await,
        other => format!("ERR cannot parse {other:?}"),
    }
}

async fn elect(
    group: GroupName,
    observe: Observe,
    mut input: UnboundedReceiver<String>,
    out: UnboundedSender<String>,
) -> Result<(), String> {
    let conn = Corosync::new().join(&group).map_err(|e| e.to_string())?;
    let config = ElectionConfig {
        record_to: observe.record,
        ..ElectionConfig::default()
    };
    let election = Election::start(conn, config)
        .await
        .map_err(|e| e.to_string())?;
    let mut events = election.subscribe();
    let say = |line: String| {
        let _ = out.send(line);
    };
    say(format!("READY {}", election.local()));
    if let Some(l) = election.leader(GROUP_ELECTION) {
        say(format!("LEADER {} {}", l.leader, l.epoch));
    }
    if let Some(epoch) = election.is_leader(GROUP_ELECTION) {
        say(format!("ELECTED {epoch}"));
    }
    let mut input_open = true;
    loop {
        let event = tokio::select! {
            line = input.recv(), if input_open => {
                match line {
                    Some(line) => {
                        let (tag, body) = match line.strip_prefix('#') {
                            Some(rest) => {
                                let (tag, body) = rest.split_once(' ').unwrap_or((rest, ""));
                                (format!("#{tag} "), body.to_owned())
                            }
                            None => (String::new(), line),
                        };
                        say(format!("{tag}{}", answer(&election, &body).await));
                    }
                    None => {
                        input_open = false;
                        if observe.show {
                            say(election_line(&election).await);
                        }
                    }
                }
                continue;
            }
            event = events.recv() => match event {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            ElectionEvent::ViewChanged { members, left, .. } => {
                let left: Vec<String> = left
                    .iter()
                    .map(|c| format!("{}:{:?}", c.member, c.reason))
                    .collect();
                say(format!(
                    "VIEW members={} left={}",
                    members.len(),
                    left.join(",")
                ));
            }
            ElectionEvent::LeaderChanged {
                name,
                leader,
                epoch,
            } if name == GROUP_ELECTION => match (leader, epoch) {
                (Some(l), Some(e)) => say(format!("LEADER {l} {e}")),
                _ => say("LEADER - -".into()),
            },
            ElectionEvent::Elected { name, epoch } if name == GROUP_ELECTION => {
                say(format!("ELECTED {epoch}"))
            }
            ElectionEvent::Deposed { name, epoch } if name == GROUP_ELECTION => {
                say(format!("DEPOSED {epoch}"))
            }
            ElectionEvent::Closed { error } => {
                if observe.show && input_open {
                    say(election_line(&election).await);
                }
                say(format!("CLOSED {error}"));
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

fn main() {
    log_to_stderr();
    const USAGE: &str =
        "usage: rsm-agent kv|elect GROUP [--safe] [--join-only] [--versions MIN-MAX] [--data-dir DIR] [--sync every|batch|never] [--key PASSPHRASE] [--record FILE] [--show]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let observe = Observe::take_from(&mut args).unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let (Some(mode), Some(group)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let group = match GroupName::new(group.clone()) {
        Ok(g) => g,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
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
        use std::io::Write;
        let stdout = std::io::stdout();
        while let Some(line) = out_rx.blocking_recv() {
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
            let _ = lock.flush();
        }
    });
    let mode = mode.clone();
    let (safe, founder) = (flag("--safe"), !flag("--join-only"));
    let versions = match args.iter().position(|a| a == "--versions") {
        None => Versions::this_build(),
        Some(i) => {
            let parsed = args.get(i + 1).and_then(|v| {
                let (min, max) = v.split_once('-')?;
                Some(Versions {
                    min: min.parse().ok()?,
                    max: max.parse().ok()?,
                })
            });
            match parsed {
                Some(v) => v,
                None => {
                    eprintln!("--versions takes MIN-MAX, e.g. 2-3");
                    std::process::exit(2);
                }
            }
        }
    };
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .map(|i| match args.get(i + 1) {
                Some(v) => v.clone(),
                None => {
                    eprintln!("{f} takes a value\n{USAGE}");
                    std::process::exit(2);
                }
            })
    };
    let durability = Durability {
        data_dir: value("--data-dir").map(Into::into),
        sync: match value("--sync").as_deref() {
            None | Some("batch") => SyncPolicy::Batch,
            Some("every") => SyncPolicy::EveryCommand,
            Some("never") => SyncPolicy::Never,
            Some(other) => {
                eprintln!("--sync takes every, batch or never, not {other:?}");
                std::process::exit(2);
            }
        },
        key: value("--key").map(|p| GroupKey::from_passphrase(&p)),
    };
    let result = actix::System::new().block_on(async move {
        match mode.as_str() {
            "kv" => {
                let replica = (safe, founder, versions);
                kv(group, replica, durability, observe, in_rx, out_tx.clone()).await
            }
            "elect" => elect(group, observe, in_rx, out_tx.clone()).await,
            other => Err(format!("unknown mode {other:?}")),
        }
        .map_err(|e| {
            let _ = out_tx.send(format!("ERROR {e}"));
            e
        })
    });
    let _ = printer.join();
    if result.is_err() {
        std::process::exit(1);
    }
}
