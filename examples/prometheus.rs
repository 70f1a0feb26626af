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

/// Serves the metrics of a small simulated group over HTTP.
#[derive(Parser)]
struct Args {
    /// Where to serve the metrics: a loopback address; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long = "for")]
    for_secs: Option<u64>,
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

/// One member: the group, its replica and its election, on `node`.
struct Member {
    group: Group,
    replica: Replica<KvStore>,
    _election: Election,
}

async fn member(cluster: &SimCluster, node: u32) -> Result<Member, Box<dyn std::error::Error>> {
    let process = cluster.process(NodeId(node))?;
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let args = Args::parse();
    let addr = resolve(args.listen)?;
    // Outside the actix system: the exporter serves from a thread of its own.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)?
        .install()?;
    println!("{addr}");
    actix::System::new().block_on(run(args.for_secs.map(Duration::from_secs)))
}

async fn run(limit: Option<Duration>) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = SimCluster::new(3);
    let first = member(&cluster, 1).await?;
    let second = member(&cluster, 2).await?;
    first
        .group
        .register(
            "counter",
            Handlers::new(Counter::default().start()).with::<Add>(),
        )
        .await?;
    let counter = second.group.remote::<Add>("counter");
    let started = tokio::time::Instant::now();
    let mut third = None;
    let mut n = 0u64;
    loop {
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            return Ok(());
        }
        if third.is_none() && started.elapsed() >= Duration::from_secs(1) {
            third = Some(member(&cluster, 3).await?);
            println!("a third member joined");
        }
        n += 1;
        let total = counter.send(Add(1)).await?;
        second
            .replica
            .execute(KvCommand::Put {
                key: format!("k{}", n % 100),
                value: total.to_string(),
            })
            .await?;
        tokio::time::sleep(TICK).await;
    }
}
