//! Replicas that pack several messages into one multicast
//! (`ReplicaConfig::batch_messages`), on the sim backend: commands sent
//! together travel in few multicasts, every replica applies them one by
//! one in the same order, a replica that sends each alone takes part
//! alike, and a malformed piece of a member's batch is dropped alone.

use std::task::{Context, Poll};
use std::time::Duration;

use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::replicated::SyncPolicy;
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::transport::FlowControl;
use actix_cpg::wire::{self, Codec, Kind};
use actix_cpg::{
    Connection, Delivery, GroupName, Member, NodeId, Replica, ReplicaConfig, Transport,
    TransportError, TransportEvent,
};

fn group() -> GroupName {
    GroupName::new("kv-batching").expect("name")
}

fn config(batch_messages: usize, delivery: Delivery) -> ReplicaConfig {
    ReplicaConfig {
        batch_messages,
        delivery,
        ..ReplicaConfig::default()
    }
}

async fn start<C: Connection>(conn: C, config: ReplicaConfig) -> Replica<KvStore> {
    let replica = started(conn, config).await;
    tokio::time::timeout(Duration::from_secs(10), replica.wait_primary())
        .await
        .expect("primary in time")
        .expect("primary");
    replica
}

/// Started, not yet primary (a restarted replica waits for the others).
async fn started<C: Connection>(conn: C, config: ReplicaConfig) -> Replica<KvStore> {
    tokio::time::timeout(
        Duration::from_secs(10),
        Replica::<KvStore>::start(conn, config),
    )
    .await
    .expect("ready in time")
    .expect("started")
}

fn join(cluster: &SimCluster, node: u32) -> actix_cpg::transport::sim::SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&group())
        .expect("join")
}

/// `per_replica` puts from each replica at once; every one must be applied.
async fn burst(replicas: &[Replica<KvStore>], per_replica: usize) {
    let mut pending = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for i in 0..per_replica {
            pending.push(replica.execute(KvCommand::Put {
                key: format!("k{}", i % 17),
                value: format!("{r}-{i}"),
            }));
        }
    }
    let results = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(pending))
        .await
        .expect("answered in time");
    for result in results {
        result.expect("applied");
    }
}

/// Every replica holds the same state, at the same count.
async fn agree(replicas: &[Replica<KvStore>], applied_at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<_> = replicas.iter().map(|r| r.status().state).collect();
        if ids.iter().all(|id| *id == ids[0]) && ids[0].applied >= applied_at_least {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ids:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut digests = Vec::new();
    for r in replicas {
        digests.push(r.query(|s: &KvStore| s.digest()).await.expect("query"));
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

#[actix_rt::test]
async fn commands_sent_together_go_out_in_few_multicasts_and_apply_alike_everywhere() {
    for delivery in [Delivery::Agreed, Delivery::Safe] {
        let cluster = SimCluster::new(3);
        let mut replicas = Vec::new();
        for node in 1..=3 {
            replicas.push(start(join(&cluster, node), config(64, delivery)).await);
        }
        burst(&replicas, 200).await;
        agree(&replicas, 600).await;
        for r in &replicas {
            let m = r.metrics();
            assert_eq!(m.sent, 200, "{delivery:?}: {m:?}");
            assert!(m.batches_sent > 0, "{delivery:?}: {m:?}");
            assert!(m.multicasts < m.sent, "{delivery:?}: {m:?}");
            assert!(m.batches_delivered > 0, "{delivery:?}: {m:?}");
            assert_eq!(m.dropped(), 0, "{delivery:?}: {m:?}");
        }
    }
}

#[actix_rt::test]
async fn durable_safe_replicas_that_batch_answer_every_command_and_keep_it_on_disk() {
    let scratch = crate::support::scratch::Scratch::new("batching-durable");
    let durable = |node: u32| ReplicaConfig {
        data_dir: Some(scratch.path().join(node.to_string())),
        sync: SyncPolicy::Batch,
        ..config(64, Delivery::Safe)
    };
    let cluster = SimCluster::new(3);
    let mut replicas = Vec::new();
    for node in 1..=3 {
        replicas.push(start(join(&cluster, node), durable(node)).await);
    }
    burst(&replicas, 150).await;
    agree(&replicas, 450).await;
    let before = replicas[0]
        .query(|s: &KvStore| s.digest())
        .await
        .expect("query");
    for r in &replicas {
        assert!(r.metrics().batches_sent > 0);
    }
    // Every process stops; they come back from their directories alone.
    for r in &replicas {
        cluster.kill_process(r.local()).expect("kill");
    }
    for r in &replicas {
        // Closed: its directory is free.
        for _ in 0..2000 {
            if r.status().closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            r.status().closed,
            "the killed replica's runtime never stopped"
        );
    }
    drop(replicas);
    let mut again = Vec::new();
    for node in 1..=3 {
        again.push(started(join(&cluster, node), durable(node)).await);
    }
    agree(&again, 450).await;
    let after = again[0]
        .query(|s: &KvStore| s.digest())
        .await
        .expect("query");
    assert_eq!(after, before);
}

#[actix_rt::test]
async fn a_replica_that_sends_each_message_alone_takes_part_in_a_batching_group() {
    let cluster = SimCluster::new(3);
    let replicas = vec![
        start(join(&cluster, 1), config(64, Delivery::Safe)).await,
        start(join(&cluster, 2), config(1, Delivery::Safe)).await,
        start(join(&cluster, 3), config(64, Delivery::Safe)).await,
    ];
    burst(&replicas, 100).await;
    agree(&replicas, 300).await;
    let alone = replicas[1].metrics();
    assert_eq!(alone.batches_sent, 0, "{alone:?}");
    assert_eq!(alone.multicasts, 100, "{alone:?}");
    assert!(alone.batches_delivered > 0, "{alone:?}");
}

/// A member's connection that slips a malformed piece (a replica
/// envelope whose body is not a replica message) into every batch its
/// replica multicasts, after the batch's first piece.
struct Tampering {
    inner: actix_cpg::transport::sim::SimConnection,
    codec: Codec,
}

impl Connection for Tampering {
    fn group(&self) -> &GroupName {
        self.inner.group()
    }
    fn local(&self) -> Member {
        self.inner.local()
    }
    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let batch = self
            .codec
            .decode_frame(bytes)
            .ok()
            .filter(|f| f.kind == Kind::Batch)
            .and_then(|f| self.codec.split_batch(f.body).ok());
        let Some(pieces) = batch else {
            return self.inner.mcast(bytes);
        };
        let bad = self
            .codec
            .encode(Kind::Replicated, &(999u32, 1u8))
            .expect("encodes");
        let mut forged = self.codec.begin_batch(bytes.len() + bad.len() + 8);
        for (i, piece) in pieces.iter().enumerate() {
            wire::push_to_batch(&mut forged, piece);
            if i == 0 {
                wire::push_to_batch(&mut forged, &bad);
            }
        }
        self.inner.mcast(&forged)
    }
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<TransportEvent, TransportError>> {
        self.inner.poll_event(cx)
    }
    fn members(&self) -> Result<Vec<Member>, TransportError> {
        self.inner.members()
    }
    fn max_message_size(&self) -> usize {
        // Room for the forged piece.
        self.inner.max_message_size() - 64
    }
    fn flow_control(&self) -> FlowControl {
        self.inner.flow_control()
    }
    fn leave(&mut self) -> Result<(), TransportError> {
        self.inner.leave()
    }
}

#[actix_rt::test]
async fn a_malformed_piece_of_a_members_batch_is_dropped_alone_and_counted() {
    let cluster = SimCluster::new(3);
    let tampering = Tampering {
        inner: join(&cluster, 1),
        codec: Codec::new(1 << 20),
    };
    let replicas = vec![
        start(tampering, config(64, Delivery::Agreed)).await,
        start(join(&cluster, 2), config(64, Delivery::Agreed)).await,
        start(join(&cluster, 3), config(64, Delivery::Agreed)).await,
    ];
    burst(&replicas[..1], 100).await;
    agree(&replicas, 100).await;
    let batches = replicas[0].metrics().batches_sent;
    assert!(batches > 0);
    for r in &replicas {
        let m = r.metrics();
        // Every replica dropped the forged piece of each of those batches
        // (and of any batch of protocol messages), nothing else.
        assert!(m.dropped_malformed >= batches, "{m:?}");
        assert_eq!(m.dropped(), m.dropped_malformed, "{m:?}");
        assert!(r.status().primary);
    }
}
