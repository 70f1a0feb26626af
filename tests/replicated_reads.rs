//! Linearizable reads at a barrier (`Replica::read`), through the actix
//! runtime on the sim backend: a read on any replica sees every write
//! acknowledged before it began, in memory and durable with safe delivery,
//! with many reads in flight at once; nothing is logged or applied for a
//! read; a group held back by a member of an older build refuses them,
//! and reads work again once that member is gone.

use std::time::Duration;

use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::replicated::{Delivery, ReplicaError, SyncPolicy, READ_VERSION};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::wire::{Versions, MIN_PROTOCOL_VERSION};
use actix_cpg::{GroupName, NodeId, Replica, ReplicaConfig, Transport};

use crate::support::scratch::Scratch;

async fn start(cluster: &SimCluster, node: u32, config: ReplicaConfig) -> Replica<KvStore> {
    let conn = cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new("reads").expect("name"))
        .expect("join");
    let replica = tokio::time::timeout(Duration::from_secs(20), Replica::start(conn, config))
        .await
        .expect("started in time")
        .expect("started");
    tokio::time::timeout(Duration::from_secs(20), replica.wait_primary())
        .await
        .expect("primary in time")
        .expect("primary");
    replica
}

fn put(key: &str, value: String) -> KvCommand {
    KvCommand::Put {
        key: key.to_owned(),
        value,
    }
}

async fn read(
    replica: &Replica<KvStore>,
    key: &'static str,
) -> Result<Option<String>, ReplicaError> {
    replica
        .read(move |s: &KvStore| s.get(key).map(str::to_owned))
        .await
}

/// Three replicas with `config(i)`; each write through one of them is
/// read back at once through every one, then 300 reads in flight at once
/// all answer the last value.
async fn reads_follow_writes(config: impl Fn(usize) -> ReplicaConfig) {
    let cluster = SimCluster::new(3);
    let mut replicas = Vec::new();
    for node in 1..=3 {
        replicas.push(start(&cluster, node, config(node as usize)).await);
    }
    let mut last = 0;
    for round in 0..30 {
        let writer = &replicas[round % 3];
        last = writer
            .execute_traced(put("k", format!("v{round}")))
            .await
            .expect("put")
            .state
            .applied;
        for r in &replicas {
            // A stale local query may miss it; a read may not.
            assert_eq!(
                read(r, "k").await.expect("read"),
                Some(format!("v{round}")),
                "round {round}, replica {}",
                r.local()
            );
        }
    }
    let reads: Vec<_> = (0..300)
        .map(|i| {
            let r = replicas[i % 3].clone();
            async move { read(&r, "k").await }
        })
        .collect();
    for answer in futures::future::join_all(reads).await {
        assert_eq!(answer.expect("read"), Some("v29".to_owned()));
    }
    // No read was applied: the next command lands right after the last.
    let next = replicas[1]
        .execute_traced(put("k", "after".into()))
        .await
        .expect("put");
    assert_eq!(next.state.applied, last + 1);
    for r in replicas {
        r.leave().await.expect("leave");
    }
}

#[actix::test]
async fn reads_see_every_acknowledged_write_in_memory() {
    reads_follow_writes(|_| ReplicaConfig::default()).await;
}

#[actix::test]
async fn reads_see_every_acknowledged_write_durable_and_safe() {
    let dirs = Scratch::new("reads-durable");
    let root = dirs.path().to_owned();
    reads_follow_writes(|i| ReplicaConfig {
        delivery: Delivery::Safe,
        data_dir: Some(root.join(format!("r{i}"))),
        sync: SyncPolicy::Batch,
        ..ReplicaConfig::default()
    })
    .await;
}

#[actix::test]
async fn a_member_of_an_older_build_holds_reads_back_until_it_leaves() {
    let cluster = SimCluster::new(3);
    let older = ReplicaConfig {
        protocol_versions: Versions {
            min: MIN_PROTOCOL_VERSION,
            max: READ_VERSION - 1,
        },
        ..ReplicaConfig::default()
    };
    let old = start(&cluster, 1, older).await;
    let new = start(&cluster, 2, ReplicaConfig::default()).await;
    new.execute(put("k", "a".into())).await.expect("put");
    assert_eq!(
        read(&new, "k").await,
        Err(ReplicaError::ReadsUnsupported {
            version: READ_VERSION - 1
        })
    );
    old.leave().await.expect("leave");
    // The group moves up where the older member leaves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match read(&new, "k").await {
            Ok(value) => {
                assert_eq!(value, Some("a".to_owned()));
                break;
            }
            Err(ReplicaError::ReadsUnsupported { .. }) | Err(ReplicaError::NotPrimary)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("read after the older member left: {e}"),
        }
    }
    new.leave().await.expect("leave");
}

#[actix::test]
async fn ten_thousand_reads_at_once_are_all_answered() {
    let cluster = SimCluster::new(1);
    let replica = start(&cluster, 1, ReplicaConfig::default()).await;
    replica.execute(put("k", "v".into())).await.expect("put");
    let reads: Vec<_> = (0..10_000).map(|_| read(&replica, "k")).collect();
    let answers = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(reads))
        .await
        .expect("every read answered");
    assert!(answers.iter().all(|a| *a == Ok(Some("v".to_owned()))));
    replica.leave().await.expect("leave");
}
