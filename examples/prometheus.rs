//! The library's metrics, served to Prometheus (cargo feature `metrics`).
//!
//! What it shows: three members of a simulated cluster run a group (a
//! counter actor called over and over), a replicated key-value store (a
//! put every tick), an election and a supervision tree whose one worker
//! crashes every few seconds and is restarted; the third member joins a
//! second in, so the state transfer and confchg histograms have a value.
//! Every runtime publishes through the `metrics` facade, and this program
//! installs `metrics-exporter-prometheus` as the recorder, serving
//! `/metrics` (any path, in fact) over HTTP on a loopback port. The names
//! and what they mean: the module doc of `actix_cpg::telemetry`.
//!
//! ```text
//! cargo run --features metrics --example prometheus -- --listen 127.0.0.1:9464
//! curl -s 127.0.0.1:9464/metrics | grep acpg_
//! ```
//!
//! `--listen 127.0.0.1:0` picks a free port. Either way the first line on
//! stdout is the address served (`127.0.0.1:9464`), so a script or a test
//! can read it. It runs until killed, or for `--for SECS`.
//!
//! On the real 3-node corosync cluster (as root, after `bash
//! scripts/cluster.sh up`): one member process per node, each in its
//! node's network namespace and serving its own metrics on that
//! namespace's loopback (`--listen`, default a free port); the member on
//! node 3 joins a second after the others. The run prints where each one
//! serves, to be scraped from inside its namespace:
//!
//! ```text
//! cargo run --features metrics,corosync --example prometheus -- --corosync --listen 127.0.0.1:9464
//! ip netns exec acpg-n2 curl -s 127.0.0.1:9464/metrics | grep acpg_members
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::supervisor::{ChildSpec, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, Election, ElectionConfig, Factories, Group, GroupConfig, GroupName,
    Handlers, NodeId, RemoteMessage, Replica, ReplicaConfig, Transport,
};
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

#[path = "support/logs.rs"]
mod logs;
mod support;

/// Serves the metrics of a small group over HTTP: simulated, or on the
/// real cluster with `--corosync`.
#[derive(Parser)]
struct Args {
    /// Where to serve the metrics: a loopback address; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long = "for")]
    for_secs: Option<u64>,
    /// Run on the real 3-node corosync cluster, one member process per
    /// node in its namespace, each serving its own metrics (as root, after
    /// `bash scripts/cluster.sh up`).
    #[arg(long)]
    corosync: bool,
    /// Be the member on node N: what the `--corosync` run starts in each
    /// node's namespace.
    #[arg(long, value_name = "N", hide = true)]
    member: Option<u32>,
}

/// Histogram buckets (seconds): from a fast local call to a slow failover.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the load runs a call and a put.
const TICK: Duration = Duration::from_millis(100);

/// How long the worker lives before it crashes (and is restarted).
const WORKER_LIFE: Duration = Duration::from_secs(3);

#[derive(Message, Serialize, Deserialize, RemoteMessage)]
#[rtype(result = "u64")]
#[remote(tag = "prometheus.Add.v1")]
struct Add(u64);

#[derive(Default)]
struct Counter(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = u64;
    fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

/// A worker that crashes after a while (stops without saying it is a
/// normal exit), so the tree restarts it.
struct Flaky;

impl Actor for Flaky {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(WORKER_LIFE, |_, ctx| ctx.stop());
    }
}

/// The address to serve: the one asked for, or a free loopback port. The
/// exporter binds it itself and does not say which port it got, so port 0
/// is resolved here first (another process could take it in between; on a
/// test machine it does not).
fn resolve(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    std::net::TcpListener::bind(listen)?.local_addr()
}

/// One member: the group, its replica and its election.
struct Member {
    group: Group,
    replica: Replica<KvStore>,
    _election: Election,
}

/// A member joining through `process` (a sim process, or the corosync
/// daemon of the namespace it runs in).
async fn member<T: Transport>(process: &T) -> Result<Member, Box<dyn std::error::Error>> {
    let group = Group::start(
        process.join(&GroupName::new("metrics-demo")?)?,
        GroupConfig::default(),
    )
    .await?;
    let replica = Replica::<KvStore>::start(
        process.join(&GroupName::new("metrics-demo-kv")?)?,
        ReplicaConfig::default(),
    )
    .await?;
    let election = Election::start(
        process.join(&GroupName::new("metrics-demo-lead")?)?,
        ElectionConfig::default(),
    )
    .await?;
    election.stand("jobs").await?;
    let factories = Factories::new().worker("flaky", |_: &ChildContext| Child::start(Flaky));
    let root = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(100, 60_000)
        .child(ChildSpec::worker("flaky", "flaky"));
    group
        .start_tree("demo", TreeSpec::new(root), factories)
        .await?;
    Ok(Member {
        group,
        replica,
        _election: election,
    })
}

/// Serves the metrics of this process on `listen` (port 0: a free one)
/// and prints the address served.
fn serve(listen: SocketAddr) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let addr = resolve(listen)?;
    // Outside the actix system: the exporter serves from a thread of its own.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)?
        .install()?;
    println!("{addr}");
    Ok(addr)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let args = Args::parse();
    let limit = args.for_secs.map(Duration::from_secs);
    #[cfg(feature = "corosync")]
    {
        if let Some(node) = args.member {
            serve(args.listen)?;
            return actix::System::new().block_on(real::member(node, limit));
        }
        if args.corosync {
            return real::orchestrate(&args);
        }
    }
    #[cfg(not(feature = "corosync"))]
    if args.corosync || args.member.is_some() {
        return Err("the real backend needs `--features metrics,corosync`".into());
    }
    serve(args.listen)?;
    actix::System::new().block_on(run(limit))
}

/// The counter actor, registered by the first member.
async fn register_counter(group: &Group) -> Result<(), Box<dyn std::error::Error>> {
    group
        .register(
            "counter",
            Handlers::new(Counter::default().start()).with::<Add>(),
        )
        .await?;
    Ok(())
}

/// One tick of load from `member`: a call to the counter, and a put of
/// what it answered.
async fn tick(member: &Member, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let total = member.group.remote::<Add>("counter").send(Add(1)).await?;
    member
        .replica
        .execute(KvCommand::Put {
            key: format!("k{}", n % 100),
            value: total.to_string(),
        })
        .await?;
    Ok(())
}

async fn run(limit: Option<Duration>) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = SimCluster::new(3);
    let first = member(&cluster.process(NodeId(1))?).await?;
    let second = member(&cluster.process(NodeId(2))?).await?;
    register_counter(&first.group).await?;
    let started = tokio::time::Instant::now();
    let mut third = None;
    let mut n = 0u64;
    loop {
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            return Ok(());
        }
        if third.is_none() && started.elapsed() >= Duration::from_secs(1) {
            third = Some(member(&cluster.process(NodeId(3))?).await?);
            println!("a third member joined");
        }
        n += 1;
        tick(&second, n).await?;
        tokio::time::sleep(TICK).await;
    }
}

#[cfg(feature = "corosync")]
mod real {
    //! The same members, one OS process per node of the test cluster
    //! (`scripts/cluster.sh`), each serving its own metrics.

    use super::*;
    use actix_cpg::transport::corosync::Corosync;
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    /// Parent: start a member on each node (node 3 a second later), say
    /// where each serves, relay their output until `--for` ends or the
    /// parent is killed.
    pub fn orchestrate(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut children = Vec::new();
        for node in 1..=3u32 {
            if node == 3 {
                std::thread::sleep(Duration::from_secs(1));
            }
            let mut command = crate::support::member_command(node)?;
            command
                .args(["--member", &node.to_string()])
                .args(["--listen", &args.listen.to_string()]);
            if let Some(secs) = args.for_secs {
                command.args(["--for", &secs.to_string()]);
            }
            let mut child = command.stdout(Stdio::piped()).spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let mut lines = BufReader::new(out).lines().map_while(Result::ok);
            // A member's first line is the address it serves.
            let addr = lines.next().ok_or("a member ended before serving")?;
            println!(
                "node {node}: metrics on {addr} in namespace acpg-n{node} \
                 (ip netns exec acpg-n{node} curl -s {addr}/metrics)"
            );
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in lines {
                    let _ = tx.send(format!("node {node}: {line}"));
                }
            });
            children.push(child);
        }
        drop(tx);
        // Ends when every member has ended (`--for`), or never.
        for line in rx {
            println!("{line}");
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Child: the member on `node`; node 1 hosts the counter, every member
    /// calls it and puts what it answered.
    pub async fn member(
        node: u32,
        limit: Option<Duration>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let me = super::member(&Corosync::new()).await?;
        println!("{} joined", me.group.local());
        if node == 1 {
            register_counter(&me.group).await?;
        }
        let started = tokio::time::Instant::now();
        let mut n = 0u64;
        let mut paused: Option<String> = None;
        while limit.is_none_or(|limit| started.elapsed() < limit) {
            n += 1;
            // Until node 1 has registered the counter, and while a view
            // changes, a call or a put can fail; the load goes on.
            match tick(&me, n).await {
                Ok(()) => {
                    if paused.take().is_some() {
                        println!("load going again");
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if paused.as_ref() != Some(&e) {
                        println!("load paused: {e}");
                        paused = Some(e);
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
        // The others' calls fail from now on if this is node 1.
        println!("{} ends (--for)", me.group.local());
        Ok(())
    }
}
