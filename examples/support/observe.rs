//! `--record FILE` and `--show`: the same two flags in every example, to see
//! afterwards what each member did.
//!
//! An example takes them in with
//! `#[path = "support/observe.rs"] mod observe;` and flattens [`Observe`]
//! into its command line (or parses it alone). Every member it starts gets
//! its recording path from [`Observe::record_to`] and, at the end,
//! [`Observe::show`] prints what each member holds. Without the flags
//! nothing changes: no file, no extra line.

// Each example uses the part for the runtimes it starts.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use actix_cpg::{Election, Group, Replica, ReplicaObserver, StateMachine};

/// What to keep of a run: flatten it into an example's command line
/// (`#[command(flatten)]`), or [`Observe::parse`] it alone.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Observe {
    /// Record each member's ordered stream, to replay its decisions with
    /// `acpg replay FILE` (registry groups and elections) or the replay API
    /// (`actix_cpg::{group, election, replicated}::replay`). One file per
    /// member: FILE.1, FILE.2, ... in the order the members start (on the
    /// real cluster, FILE.N for the member on node N).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// At the end, print each member's metrics and snapshot: `metrics()`
    /// and `inspect()` of a group or a replica, `inspect()` of an election
    /// (as indented JSON).
    #[arg(long)]
    pub show: bool,
}

impl Observe {
    /// The command line of an example that takes these flags only;
    /// `about` is what `--help` says the example does.
    pub fn parse(about: &'static str) -> Observe {
        use clap::{Args, FromArgMatches};
        let command = clap::Command::new(env!("CARGO_BIN_NAME")).about(about);
        let matches = Observe::augment_args(command).get_matches();
        Observe::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The recording of the `member`-th member this process starts
    /// (1-based): `FILE.member`.
    pub fn record_to(&self, member: u32) -> Option<PathBuf> {
        let file = self.record.as_ref()?;
        let mut name = file.as_os_str().to_owned();
        name.push(format!(".{member}"));
        Some(PathBuf::from(name))
    }

    /// The recording of the one member of a member process that its
    /// parent started with [`Observe::forward`]: `FILE` as given.
    pub fn record_alone(&self) -> Option<PathBuf> {
        self.record.clone()
    }

    /// The flags for the `member`-th member process a run starts (where
    /// one runs per node, its node): its own file (`FILE.member`) and
    /// `--show`.
    pub fn forward(&self, member: u32) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = self.record_to(member) {
            args.push("--record".to_owned());
            args.push(file.display().to_string());
        }
        if self.show {
            args.push("--show".to_owned());
        }
        args
    }

    /// With `--show`, prints what each of `members` holds now.
    pub async fn show<'a, T: Shown + 'a>(&self, members: impl IntoIterator<Item = &'a T>) {
        if let Some(text) = self.shown(members).await {
            println!("{text}");
        }
    }

    /// With `--show`, what each of `members` holds now, for a program
    /// whose stdout is a protocol (it prints it elsewhere).
    pub async fn shown<'a, T: Shown + 'a>(
        &self,
        members: impl IntoIterator<Item = &'a T>,
    ) -> Option<String> {
        if !self.show {
            return None;
        }
        let mut text = Vec::new();
        for member in members {
            text.push(member.describe().await);
        }
        Some(text.join("\n"))
    }
}

/// `--replay FILE` of an example running replicas of `S`: prints the
/// decisions of a replica recording, which need the state machine
/// (`acpg replay` reads only registry and election recordings).
pub fn replay_replica<S: StateMachine>(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let recording = actix_cpg::record::Recording::open(path)?;
    let decisions =
        actix_cpg::replicated::replay::<S>(&recording, &actix_cpg::ReplicaConfig::default());
    let mut out = std::io::stdout().lock();
    let printed = writeln!(
        out,
        "{} events recorded by {} (replica); {} decisions:",
        recording.entries.len(),
        recording.local,
        decisions.len()
    )
    .and_then(|()| {
        decisions
            .iter()
            .try_for_each(|d| writeln!(out, "  [{:>5}] {}", d.position, d.decision))
    });
    match printed {
        // The reader went away (`| head`): nothing to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A member whose metrics and snapshot `--show` prints.
pub trait Shown {
    /// Its metrics and snapshot, as text.
    fn describe(&self) -> impl Future<Output = String>;
}

impl Shown for Group {
    async fn describe(&self) -> String {
        let metrics = json(&self.metrics());
        let inspected = pretty(self.inspect().await);
        format!(
            "-- {}: metrics\n{metrics}\n-- {}: inspect()\n{inspected}",
            self.local(),
            self.local()
        )
    }
}

impl<S: StateMachine> Shown for Replica<S> {
    async fn describe(&self) -> String {
        replica_text(self.local(), &self.metrics(), self.inspect().await)
    }
}

impl Shown for ReplicaObserver {
    async fn describe(&self) -> String {
        replica_text(self.local(), &self.metrics(), self.inspect().await)
    }
}

impl Shown for Election {
    async fn describe(&self) -> String {
        // An election has no counters of its own beyond what `inspect()`
        // holds (its refusals and unauthenticated drops).
        format!(
            "-- {}: inspect()\n{}",
            self.local(),
            pretty(self.inspect().await)
        )
    }
}

/// A replica's (or a replica observer's) metrics, then its `inspect()`:
/// the state id it holds and whether the participants agree.
fn replica_text(
    local: actix_cpg::Member,
    metrics: &impl serde::Serialize,
    inspected: Result<actix_cpg::ReplicaInspection, actix_cpg::ReplicaError>,
) -> String {
    format!(
        "-- {local}: metrics\n{}\n-- {local}: inspect()\n{}",
        json(metrics),
        pretty(inspected)
    )
}

/// A snapshot as indented JSON, or why there is none.
fn pretty<T: serde::Serialize, E: std::fmt::Display>(inspected: Result<T, E>) -> String {
    match inspected {
        Ok(seen) => serde_json::to_string_pretty(&seen).unwrap_or_else(|e| e.to_string()),
        Err(e) => format!("not available: {e}"),
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| e.to_string())
}
