//! `acpg`: look at a live actix-cpg group from the command line.
//!
//! ```text
//! acpg status GROUP [--json] [--wait SECS]   members, names, trees, quorum
//! acpg watch GROUP [--json] [--wait SECS]    every decision as it happens
//!   --election   GROUP is an election group: leaders, epochs, candidates
//!   --replica    GROUP is a replica group: state ids, primary, agreement
//! acpg replay FILE [--json]                  the decisions of a recording
//! acpg bootstrap DIR [--json]                write off the lost members of a
//!                                            stopped replica's last primary
//! ```
//!
//! `status` and `watch` join GROUP through the corosync daemon of this
//! network namespace, as an observer (see the `acpg` library for the
//! rules). Refusals print one line on stderr and exit with 2; output that
//! fails exits with 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use acpg::{Format, Kind, Options, ToolError};
use actix_cpg::transport::corosync::Corosync;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "acpg",
    version,
    about = "Look at a live actix-cpg group: its members, registry, supervision trees and decisions"
)]
struct Cli {
    /// Print JSON: one object for status, one per line for watch and replay.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join GROUP as an observer, print what it holds at one point of its
    /// stream, and leave.
    Status {
        /// The CPG group name.
        group: String,
        /// Seconds to wait for a member to hand over the group state.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        #[command(flatten)]
        kind: KindFlags,
    },
    /// Join GROUP as an observer and print every group and supervision
    /// event, timestamped, until interrupted (Ctrl-C) or the group closes.
    Watch {
        /// The CPG group name.
        group: String,
        /// Seconds to wait for a member to hand over the group state.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        #[command(flatten)]
        kind: KindFlags,
    },
    /// Print every decision a member took, from its recording
    /// (`GroupConfig::record_to`, `ElectionConfig::record_to`, or `--record
    /// FILE` of an example or agent). A replica's recording needs the
    /// program's state machine: acpg says so and exits with 2.
    Replay {
        /// The recording.
        file: PathBuf,
    },
    /// On the data directory of a stopped replica whose group waits for a
    /// member that lost its disk for good: write off the other members of
    /// the last primary component it knew, so the replicas back may be
    /// primary without them. Says what may be lost. Never done on its own.
    Bootstrap {
        /// The replica's data directory (`ReplicaConfig::data_dir`).
        dir: PathBuf,
    },
}

/// Which kind of group GROUP is (a registry group without a flag).
#[derive(clap::Args)]
#[group(multiple = false)]
struct KindFlags {
    /// GROUP is an election group (`Election`): show its members, each
    /// election's leader, epoch and candidates.
    #[arg(long)]
    election: bool,
    /// GROUP is a replica group (`Replica`, any state machine): show each
    /// member's state id, whether the view is primary, and whether the
    /// replicas agree.
    #[arg(long)]
    replica: bool,
}

impl KindFlags {
    fn kind(&self) -> Kind {
        match (self.election, self.replica) {
            (true, _) => Kind::Election,
            (_, true) => Kind::Replica,
            _ => Kind::Registry,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = if cli.json { Format::Json } else { Format::Text };
    let options = |wait: f64| Options {
        format,
        ready_within: Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(10)),
    };
    let mut out = std::io::stdout();
    let result = match cli.command {
        Command::Replay { file } => acpg::replay(&file, format, &mut out),
        Command::Bootstrap { dir } => acpg::bootstrap(&dir, format, &mut out),
        Command::Status { group, wait, kind } => actix::System::new().block_on(async {
            let (daemon, options) = (Corosync::new(), options(wait));
            match kind.kind() {
                Kind::Registry => acpg::status(&daemon, &group, options, &mut out)
                    .await
                    .map(drop),
                Kind::Election => acpg::election_status(&daemon, &group, options, &mut out)
                    .await
                    .map(drop),
                Kind::Replica => acpg::replica_status(&daemon, &group, options, &mut out)
                    .await
                    .map(drop),
            }
        }),
        Command::Watch { group, wait, kind } => actix::System::new().block_on(async {
            let interrupted = async {
                // Without a signal handler, Ctrl-C ends the process as usual.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let (daemon, options) = (Corosync::new(), options(wait));
            let (now, out) = (SystemTime::now, &mut out);
            match kind.kind() {
                Kind::Registry => {
                    acpg::watch(&daemon, &group, options, out, now, interrupted).await
                }
                Kind::Election => {
                    acpg::watch_election(&daemon, &group, options, out, now, interrupted).await
                }
                Kind::Replica => {
                    acpg::watch_replica(&daemon, &group, options, out, now, interrupted).await
                }
            }
            .map(drop)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`acpg replay FILE | head`): nothing to say.
        Err(ToolError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &ToolError) -> ExitCode {
    eprintln!("acpg: {e}");
    ExitCode::from(e.exit_code())
}
