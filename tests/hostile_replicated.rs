//! A replica group under hostile and silent CPG clients, on the sim
//! backend: a process in the view that never announces itself changes
//! nothing, and forged protocol messages from such a process are refused
//! and counted.

use std::time::{Duration, Instant};

use actix_cpg::kv::{KvCommand, KvResponse, KvStore};
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::{GroupName, NodeId, Replica, ReplicaConfig, Transport};

fn group() -> GroupName {
    GroupName::new("kv-hostile").expect("name")
}

fn join(cluster: &SimCluster, node: u32) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&group())
        .expect("join")
}

async fn start(cluster: &SimCluster, node: u32) -> Replica<KvStore> {
    tokio::time::timeout(
        Duration::from_secs(10),
        Replica::<KvStore>::start(join(cluster, node), ReplicaConfig::default()),
    )
    .await
    .expect("ready in time")
    .expect("started")
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// Kill a replica, time until the next write through a survivor is
/// acknowledged. Prints p50/max over the rounds; run with
/// `cargo test --test hostile_replicated -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore = "a measurement, not a check"]
async fn failover_figures() {
    let mut times = Vec::new();
    for round in 0..30 {
        let cluster = SimCluster::new(3);
        let a = start(&cluster, 1).await;
        let b = start(&cluster, 2).await;
        let c = start(&cluster, 3).await;
        a.wait_primary().await.expect("primary");
        a.execute(put("k", "v")).await.expect("write");
        let victim = c.local();
        let t0 = Instant::now();
        cluster.kill_process(victim).expect("kill");
        // A write caught by the view change may come back `Uncertain`:
        // the figure is until one is acknowledged.
        loop {
            match a.execute(put("k", &round.to_string())).await {
                Ok(KvResponse::Previous(_)) => break,
                Ok(other) => panic!("{other:?}"),
                Err(_) => {}
            }
        }
        times.push(t0.elapsed());
        drop((a, b, c));
    }
    times.sort();
    println!(
        "failover (kill -> next write acknowledged), sim, {} rounds: p50 {:?} max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
