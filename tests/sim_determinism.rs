//! A sim run is a function of its inputs: the same scenario, run twice on
//! simulated time, gives every member a byte-identical recording of its
//! ordered stream (facts that read a clock read the sim's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{ChildSpec, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupName, Handlers, NodeId, Terminate,
    Transport,
};

struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Terminate> for Worker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[derive(Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "u64")]
struct Add(u64);

impl actix_cpg::RemoteMessage for Add {
    const TYPE_TAG: &'static str = "determinism/add";
}

struct Adder(u64);

impl Actor for Adder {
    type Context = Context<Self>;
}

impl Handler<Add> for Adder {
    type Result = u64;
    fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

fn spec() -> TreeSpec {
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::worker("a", "worker"))
            .child(ChildSpec::worker("b", "worker"))
            .child(ChildSpec::worker("c", "worker")),
    )
}

fn factories() -> Factories {
    Factories::new().worker("worker", |_: &ChildContext| Child::new(Worker.start()))
}

/// Three members record; names, calls, a tree, a killed process, a
/// partition and its heal, on simulated time.
async fn scenario(dir: &Path) {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("determinism").unwrap();
    let mut groups = Vec::new();
    for node in 1..=3 {
        let config = GroupConfig {
            record_to: Some(dir.join(format!("member{node}.rec"))),
            ..GroupConfig::default()
        };
        let process = cluster.process(NodeId(node)).unwrap();
        let group = Group::start(process.join(&name).unwrap(), config)
            .await
            .unwrap();
        groups.push((process, group));
    }
    for (i, (_, group)) in groups.iter().enumerate() {
        group
            .register(
                &format!("adder{i}"),
                Handlers::new(Adder(0).start()).with::<Add>(),
            )
            .await
            .unwrap();
        group.start_tree("jobs", spec(), factories()).await.unwrap();
    }
    for round in 0..5u64 {
        for (i, (_, group)) in groups.iter().enumerate() {
            let target = format!("adder{}", (i + 1) % 3);
            group.remote::<Add>(&target).send(Add(round)).await.unwrap();
        }
    }
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    cluster.kill_process(groups[2].0.member()).unwrap();
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    cluster
        .partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]])
        .unwrap();
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    cluster.heal();
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    for (_, group) in groups.iter().take(2) {
        group.remote::<Add>("adder0").send(Add(1)).await.unwrap();
    }
    for (_, group) in groups.into_iter().take(2) {
        group.leave().await.unwrap();
    }
}

/// Runs the scenario in a fresh system on paused (simulated) time and
/// returns each member's recording.
fn run(dir: &PathBuf) -> Vec<Vec<u8>> {
    std::fs::create_dir_all(dir).unwrap();
    simulated().block_on(scenario(dir));
    (1..=3)
        .map(|node| std::fs::read(dir.join(format!("member{node}.rec"))).unwrap())
        .collect()
}

#[test]
fn the_same_scenario_twice_records_the_same_streams() {
    let base = std::env::temp_dir().join(format!("acpg-determinism-{}", std::process::id()));
    let first = run(&base.join("first"));
    let second = run(&base.join("second"));
    std::fs::remove_dir_all(&base).unwrap();
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert!(a.len() > 100, "member {} recorded almost nothing", i + 1);
        assert!(
            a == b,
            "member {}'s recordings differ ({} and {} bytes)",
            i + 1,
            a.len(),
            b.len()
        );
    }
}

use crate::support::simulated;
use simulated::simulated;
