//! A supervision tree spread over a three-member group, and what it does
//! when members fail.
//!
//! The tree `jobs` (one_for_one) has a permanent `ingest` worker, a
//! transient `report` worker, a `cache` worker on every node, and a nested
//! one_for_all supervisor `pipeline` of `parse` and `store`. Every member
//! starts the same tree; the engine places each child on one member and
//! every member computes the same placement from the same ordered stream.
//!
//! It shows, printed as it happens:
//! 1. where each child runs, and that every member agrees;
//! 2. the process on node 3 is killed: its children restart elsewhere;
//! 3. node 2 crashes: its children move to node 1 (nodes 1 and 3 still
//!    make a quorum: node 3's daemon runs, only its process died);
//! 4. node 3 crashes too: node 1 is alone, without quorum, so it stops
//!    every child (the `Stop` quorum policy: no split-brain duplicates);
//! 5. node 2 comes back: quorum returns and the children start again.
//!
//! Run it on the in-process `sim` backend (no daemon needed):
//!
//! ```text
//! cargo run --example supervision
//! ```
//!
//! On the real 3-node corosync cluster (as root): one process per node,
//! SIGKILL of the third, SIGKILL of node 2's and node 3's daemons, then
//! their restart:
//!
//! ```text
//! bash scripts/cluster.sh up
//! cargo run --features corosync --example supervision -- --corosync
//! ```
//!
//! `--record FILE` records each member's stream (FILE.1, FILE.2, ...; replay
//! with `acpg replay FILE.1`); `--show` prints each member's metrics and
//! `inspect()` snapshot at the end (on the real cluster, whose members are
//! killed rather than stopped, after each membership change).

use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{
    ChildSpec, Placement, PlacementPolicy, QuorumPolicy, RestartType, SlotStatus, Strategy,
    SupervisionEvent, SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupName, Member, NodeId, Transport,
};
use clap::Parser;

mod support;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// A supervision tree spread over a three-member group, and what it does
/// when members fail.
///
/// Every member starts the same tree and computes the same placement; then
/// a member process is killed, two nodes crash one after the other (the
/// last survivor loses quorum and stops every child), and a node comes back.
/// It runs on the in-process sim backend unless `--corosync` is given.
#[derive(Parser)]
struct Cli {
    /// Run on the real 3-node corosync cluster, one process per node in its
    /// namespace, killing processes and daemons (as root, after `bash
    /// scripts/cluster.sh up`). Setting ACPG_BACKEND=corosync does the same.
    #[arg(long)]
    corosync: bool,
    /// Be the member on node N: what the `--corosync` run starts in each
    /// node's namespace.
    #[arg(long, value_name = "N", hide = true)]
    member: Option<u32>,
    #[command(flatten)]
    observe: observe::Observe,
}

/// A worker that only says when it starts and stops.
struct Worker {
    name: String,
    host: Member,
    token: String,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        println!(
            "    {} starts {} (fencing token {})",
            self.host, self.name, self.token
        );
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        println!("    {} stops {}", self.host, self.name);
    }
}

fn spec() -> TreeSpec {
    let pipeline = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(10, 60_000)
        .child(ChildSpec::worker("parse", "worker"))
        .child(ChildSpec::worker("store", "worker"));
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(20, 60_000)
            .child(ChildSpec::worker("ingest", "worker"))
            .child(ChildSpec::worker("report", "worker").restart(RestartType::Transient))
            .child(
                ChildSpec::worker("cache", "worker")
                    .placement(Placement::new(PlacementPolicy::OnePerNode)),
            )
            .child(ChildSpec::supervisor("pipeline", pipeline)),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

fn factories(host: Member) -> Factories {
    // The group starts each child, and stops it when the engine says so.
    Factories::new().worker("worker", move |ctx: &ChildContext| {
        Child::start(Worker {
            name: ctx.name.clone(),
            host,
            token: ctx.token.to_string(),
        })
    })
}

/// Prints the decisions one member sees.
fn watch(group: &Group) {
    let mut events = group.supervision_events();
    actix::spawn(async move {
        while let Ok(event) = events.recv().await {
            if matches!(
                event,
                SupervisionEvent::ChildRestarted { .. }
                    | SupervisionEvent::ChildExited { .. }
                    | SupervisionEvent::ChildStopped { .. }
                    | SupervisionEvent::QuorumLost
                    | SupervisionEvent::QuorumRegained
                    | SupervisionEvent::SupervisorEscalated { .. }
            ) {
                println!("  decision: {event}");
            }
        }
    });
}

async fn placement(group: &Group) {
    println!("  placement as {} sees it:", group.local());
    let Ok(children) = group.children().await else {
        return;
    };
    for c in children {
        let name = actix_cpg::child_name(&c.path, &c.slot);
        let status = match c.status {
            SlotStatus::Running {
                host, incarnation, ..
            } => format!("on {host} (incarnation {incarnation})"),
            other => format!("{other:?}"),
        };
        println!("    {name:<24} {status}");
    }
}

async fn settle() {
    actix_rt::time::sleep(Duration::from_millis(200)).await;
}

async fn sim_tour(observe: observe::Observe) -> Result<(), Box<dyn std::error::Error>> {
    println!("== actix-cpg supervision on the sim backend: 3 nodes, 1 process each ==");
    let cluster = SimCluster::new(3);
    let name = GroupName::new("supervision-demo")?;
    let config = |member| GroupConfig {
        record_to: observe.record_to(member),
        ..GroupConfig::default()
    };
    let mut groups = Vec::new();
    for node in 1..=3 {
        let group = Group::start(cluster.process(NodeId(node))?.join(&name)?, config(node)).await?;
        groups.push(group);
    }
    watch(&groups[0]);
    println!("\n-- 1. every member starts the tree `jobs`");
    for g in &groups {
        g.start_tree("jobs", spec(), factories(g.local())).await?;
    }
    settle().await;
    placement(&groups[0]).await;
    let same = groups[0].children().await? == groups[1].children().await?;
    println!(
        "  node1 and node2 agree on the placement: {}",
        if same { "yes" } else { "NO" }
    );

    println!("\n-- 2. the process on node 3 is killed");
    cluster.kill_process(groups[2].local())?;
    settle().await;
    placement(&groups[0]).await;

    println!("\n-- 3. node 2 crashes (nodes 1 and 3 still make a quorum)");
    cluster.crash_node(NodeId(2))?;
    settle().await;
    placement(&groups[0]).await;

    println!("\n-- 4. node 3 crashes too: node 1 is alone, without quorum");
    cluster.crash_node(NodeId(3))?;
    settle().await;
    placement(&groups[0]).await;

    println!("\n-- 5. node 2 comes back with a new process: quorum returns");
    cluster.restart_node(NodeId(2))?;
    let g2 = Group::start(cluster.process(NodeId(2))?.join(&name)?, config(4)).await?;
    g2.start_tree("jobs", spec(), factories(g2.local())).await?;
    settle().await;
    placement(&groups[0]).await;
    observe.show(groups.iter().chain([&g2])).await;
    println!("\n== done ==");
    Ok(())
}

#[cfg(feature = "corosync")]
mod real {
    //! The same tour with one OS process per member in the test cluster's
    //! node namespaces (`scripts/cluster.sh`).

    use super::*;
    use actix_cpg::transport::corosync::Corosync;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    fn cluster(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
        let status = Command::new("bash").arg(script).args(args).status()?;
        if !status.success() {
            return Err(format!("cluster.sh {args:?} failed").into());
        }
        Ok(())
    }

    /// Parent: start three members, inject the faults, relay the output.
    pub fn orchestrate(observe: &observe::Observe) -> Result<(), Box<dyn std::error::Error>> {
        println!("== actix-cpg supervision on the real corosync cluster ==");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut children = Vec::new();
        for node in 1..=3u32 {
            let mut child = crate::support::member_command(node)?
                .args(["--member", &node.to_string()])
                .args(observe.forward(node))
                .stdout(Stdio::piped())
                .spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            children.push(child);
            std::thread::sleep(Duration::from_millis(300));
        }
        drop(tx);
        let relay = |for_how_long: Duration| {
            let until = std::time::Instant::now() + for_how_long;
            while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(line) => println!("{line}"),
                    Err(_) => break,
                }
            }
        };
        println!("\n-- 1. every member starts the tree `jobs`");
        relay(Duration::from_secs(3));
        println!("\n-- 2. SIGKILL the member process on node 3");
        children[2].kill()?;
        relay(Duration::from_secs(2));
        println!("\n-- 3. SIGKILL node 2's corosync daemon (nodes 1 and 3 still make a quorum)");
        cluster(&["kill-daemon", "2"])?;
        relay(Duration::from_secs(6));
        println!("\n-- 4. SIGKILL node 3's daemon too: node 1 is alone, without quorum");
        cluster(&["kill-daemon", "3"])?;
        relay(Duration::from_secs(6));
        println!("\n-- 5. both daemons restart: quorum returns, node 1 runs every child");
        cluster(&["start-node", "2"])?;
        cluster(&["start-node", "3"])?;
        relay(Duration::from_secs(5));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        println!("\n== done ==");
        Ok(())
    }

    /// Child: one member.
    pub async fn member(
        node: u32,
        observe: observe::Observe,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let name = GroupName::new("supervision-demo")?;
        let config = GroupConfig {
            record_to: observe.record_alone(),
            ..GroupConfig::default()
        };
        let group = Group::start(Corosync::new().join(&name)?, config).await?;
        if node == 1 {
            watch(&group);
        }
        group
            .start_tree("jobs", spec(), factories(group.local()))
            .await?;
        let mut views = group.subscribe();
        loop {
            settle().await;
            if node == 1 {
                placement(&group).await;
            }
            observe.show([&group]).await;
            // Print again after every membership change.
            loop {
                match views.recv().await {
                    Ok(actix_cpg::GroupEvent::ViewChanged { .. }) => break,
                    Ok(actix_cpg::GroupEvent::Closed { .. }) | Err(_) => return Ok(()),
                    Ok(_) => {}
                }
            }
            actix_rt::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let Cli {
        corosync,
        member,
        observe,
    } = Cli::parse();
    let corosync = corosync || std::env::var("ACPG_BACKEND").is_ok_and(|b| b == "corosync");
    #[cfg(feature = "corosync")]
    {
        if let Some(node) = member {
            return actix::System::new().block_on(real::member(node, observe));
        }
        if corosync {
            return real::orchestrate(&observe);
        }
    }
    #[cfg(not(feature = "corosync"))]
    if corosync || member.is_some() {
        return Err("the real backend needs `--features corosync`".into());
    }
    actix::System::new().block_on(sim_tour(observe))
}
