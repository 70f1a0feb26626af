//! Replays a recorded ordered stream and prints every decision the member
//! took, in order: the tool to reach for after an incident.
//!
//! Record with `GroupConfig { record_to: Some(path), .. }` on the member you
//! want to examine, then:
//!
//! ```text
//! cargo run --example replay -- /path/to/member.rec
//! ```
//!
//! Without an argument it records a short supervised scenario on the sim
//! backend (a member killed, a partition, a merge) into a temporary file
//! and replays that. `--record FILE` keeps every member's recording of it
//! (FILE.1, FILE.2, FILE.3; FILE.1 is replayed), `--show` prints each
//! member's metrics and `inspect()` snapshot before the end.
//!
//! An election's recording replays too (`ElectionConfig::record_to`); a
//! replica's needs its state machine (`actix_cpg::replicated::replay`).

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::group::replay;
use actix_cpg::record::{Protocol, Recording};
use actix_cpg::supervisor::{
    ChildSpec, QuorumPolicy, RestartType, Strategy, SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, ElectionConfig, Factories, Group, GroupConfig, GroupName, NodeId,
    Terminate, Transport,
};
use clap::Parser;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// Replays a recorded ordered stream and prints every decision the member
/// took, in order. Without FILE, records a short supervised scenario on
/// the sim backend and replays that.
#[derive(Parser)]
struct Cli {
    /// A recording (`GroupConfig::record_to`, `ElectionConfig::record_to`,
    /// `--record` of an example).
    file: Option<PathBuf>,
    #[command(flatten)]
    observe: observe::Observe,
}

struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

impl Handler<Terminate> for Idle {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

const TREE: &str = "conformance";

/// The sample's tree: three permanent workers, a transient one and a
/// nested `one_for_all` supervisor of two, with the `Stop` quorum policy.
fn tree() -> TreeSpec {
    let nested = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(100, 60_000)
        .child(ChildSpec::worker("s1", "probe"))
        .child(ChildSpec::worker("s2", "probe"));
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(100, 60_000)
            .child(ChildSpec::worker("a", "probe"))
            .child(ChildSpec::worker("b", "probe"))
            .child(ChildSpec::worker("c", "probe"))
            .child(ChildSpec::worker("t", "probe").restart(RestartType::Transient))
            .child(ChildSpec::supervisor("sub", nested)),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

fn factories() -> Factories {
    Factories::new().worker("probe", |_: &ChildContext| Child::new(Idle.start()))
}

/// Records a short scenario from node 1's member and returns the file.
async fn record_sample(observe: &observe::Observe) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = observe.record_to(1).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("actix-cpg-sample-{}.rec", std::process::id()))
    });
    let cluster = SimCluster::new(3);
    let name = GroupName::new("replay-sample")?;
    let config = GroupConfig {
        record_to: Some(path.clone()),
        ..GroupConfig::default()
    };
    let recorded = Group::start(cluster.process(NodeId(1))?.join(&name)?, config).await?;
    let mut others = Vec::new();
    for node in 2..=3 {
        let config = GroupConfig {
            record_to: observe.record_to(node),
            ..GroupConfig::default()
        };
        others.push(Group::start(cluster.process(NodeId(node))?.join(&name)?, config).await?);
    }
    for g in std::iter::once(&recorded).chain(others.iter()) {
        g.start_tree(TREE, tree(), factories()).await?;
    }
    let pause = || actix_rt::time::sleep(Duration::from_millis(100));
    pause().await;
    cluster.kill_process(others[1].local())?;
    pause().await;
    cluster.partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]])?;
    pause().await;
    cluster.heal();
    pause().await;
    observe
        .show(std::iter::once(&recorded).chain(others.iter()))
        .await;
    recorded.leave().await?;
    pause().await;
    Ok(path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let Cli { file, observe } = Cli::parse();
    let path = match file {
        Some(p) => p,
        None => {
            let p = actix::System::new().block_on(record_sample(&observe))?;
            println!("recorded a sample scenario to {}", p.display());
            p
        }
    };
    let recording = Recording::open(&path)?;
    println!(
        "{} events recorded by {}; replaying:",
        recording.entries.len(),
        recording.local
    );
    let decisions = match recording.protocol {
        Protocol::Registry => replay(&recording, GroupConfig::default().max_message_size),
        Protocol::Election => actix_cpg::election::replay(&recording, &ElectionConfig::default()),
        Protocol::Replica => {
            return Err("a replica's recording replays with its state machine: \
                        actix_cpg::replicated::replay::<YourState>"
                .into())
        }
    };
    for d in decisions {
        println!("  [{:>4}] {}", d.position, d.decision);
    }
    Ok(())
}
