//! Durable replicas on the sim backend (`ReplicaConfig::data_dir`): what a
//! replica acknowledged survives the death of its process, and of every
//! process of the group. A restarted replica comes back with its state; a
//! group restarted whole becomes primary again once every member of the
//! last primary component is back, and not before; a directory serves one
//! replica at a time, and a damaged one stops the start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_cpg::auth::GroupKey;
use actix_cpg::replicated::{Delivery, ReplicaError, SyncPolicy, RECOVERY_VERSION};
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::wire::{Versions, MIN_PROTOCOL_VERSION};
use actix_cpg::{GroupName, Member, NodeId, Replica, ReplicaConfig, Transport};

use crate::support::ledger::Ledger;
use crate::support::scratch::Scratch;

const GROUP: &str = "durable";

/// The data directories of one test.
struct Dirs(Scratch);

impl Dirs {
    fn new(name: &str) -> Dirs {
        Dirs(Scratch::new(&format!("durable-{name}")))
    }

    fn replica(&self, i: usize) -> PathBuf {
        self.0.path().join(format!("r{i}"))
    }
}

fn config(dir: &Path, delivery: Delivery, sync: SyncPolicy) -> ReplicaConfig {
    ReplicaConfig {
        delivery,
        data_dir: Some(dir.to_owned()),
        sync,
        // Small, so that restarts read a snapshot and a log after it.
        snapshot_every: 7,
        ..ReplicaConfig::default()
    }
}

/// A replica process on `node`, with its data directory.
struct Running {
    process: SimProcess,
    replica: Replica<Ledger>,
}

async fn start(
    cluster: &SimCluster,
    node: u32,
    config: ReplicaConfig,
) -> Result<Running, ReplicaError> {
    let process = cluster.process(NodeId(node)).expect("node up");
    let conn = process
        .join(&GroupName::new(GROUP).expect("name"))
        .expect("join");
    let replica = tokio::time::timeout(Duration::from_secs(20), Replica::start(conn, config))
        .await
        .expect("started in time")?;
    Ok(Running { process, replica })
}

/// SIGKILL semantics: the process is gone at once; waits until its runtime
/// has stopped (and let go of its directory).
async fn kill(r: Running) {
    kill_all(vec![r]).await;
}

/// Every process killed at the same moment (a power loss): no survivor
/// sees another leave, so all of them knew the same last primary.
async fn kill_all(all: Vec<Running>) {
    for r in &all {
        r.process.kill().expect("kill");
    }
    for r in &all {
        // Closed: its directory is free.
        for _ in 0..2000 {
            if r.replica.status().closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            r.replica.status().closed,
            "the killed replica's runtime never stopped"
        );
    }
}

/// One replica per node 1..=3, each on its directory, all primary.
async fn start_three(cluster: &SimCluster, cfg: impl Fn(usize) -> ReplicaConfig) -> Vec<Running> {
    let mut running = Vec::new();
    for i in 0..3 {
        running.push(start(cluster, i as u32 + 1, cfg(i)).await.expect("start"));
    }
    for r in &running {
        r.replica.wait_primary().await.expect("primary");
    }
    running
}

/// Writes, then the replicas die one after another, the one on node 3
/// last, after it took more writes alone. Returns what was acknowledged.
async fn cascade(mut running: Vec<Running>) -> Vec<(Member, u64)> {
    let mut acknowledged = write(&running[0].replica, 0, 4).await;
    let last = running.pop().expect("three");
    for r in running {
        kill(r).await;
    }
    last.replica
        .wait_primary()
        .await
        .expect("alone, still primary");
    acknowledged.extend(write(&last.replica, 10, 5).await);
    kill(last).await;
    acknowledged
}

/// Every one of `back` is primary in time and holds every write of
/// `acknowledged`, in order.
async fn primary_with(back: &[Running], acknowledged: &[(Member, u64)]) {
    for r in back {
        tokio::time::timeout(Duration::from_secs(20), r.replica.wait_primary())
            .await
            .expect("primary in time")
            .expect("primary");
        assert!(is_subsequence(acknowledged, &ledger(&r.replica).await));
    }
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..4000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never reached: {what}");
}

async fn ledger(r: &Replica<Ledger>) -> Vec<(Member, u64)> {
    r.query(|l: &Ledger| l.0.clone()).await.expect("query")
}

/// Writes `n` entries through `r`, each acknowledged before the next.
async fn write(r: &Replica<Ledger>, from: u64, n: u64) -> Vec<(Member, u64)> {
    let mut written = Vec::new();
    for i in from..from + n {
        let entry = (r.local(), i);
        r.execute(entry).await.expect("acknowledged");
        written.push(entry);
    }
    written
}

fn is_subsequence(part: &[(Member, u64)], whole: &[(Member, u64)]) -> bool {
    let mut it = whole.iter();
    part.iter().all(|p| it.any(|w| w == p))
}

async fn whole_group_comes_back(
    delivery: Delivery,
    sync: SyncPolicy,
    order: [usize; 3],
    name: &str,
) {
    let dirs = Dirs::new(name);
    let cluster = SimCluster::new(3);
    let mut running = Vec::new();
    for i in 0..3 {
        let r = start(
            &cluster,
            i as u32 + 1,
            config(&dirs.replica(i), delivery, sync),
        )
        .await
        .expect("start");
        running.push(r);
    }
    for r in &running {
        r.replica.wait_primary().await.expect("primary");
    }
    let mut acknowledged = Vec::new();
    for (i, r) in running.iter().enumerate() {
        acknowledged.extend(write(&r.replica, 100 * i as u64, 9).await);
    }
    let before = ledger(&running[0].replica).await;
    kill_all(running).await;

    // Every process is new; they come back in another order.
    let mut back = Vec::new();
    for i in order {
        let r = start(
            &cluster,
            i as u32 + 1,
            config(&dirs.replica(i), delivery, sync),
        )
        .await
        .expect("restart");
        back.push(r);
    }
    primary_with(&back, &acknowledged).await;
    for r in &back {
        assert_eq!(
            ledger(&r.replica).await,
            before,
            "the state from before the restart"
        );
    }
    // And it goes on.
    let more = write(&back[0].replica, 1000, 3).await;
    let now = ledger(&back[0].replica).await;
    assert!(is_subsequence(&more, &now));
}

#[actix_rt::test]
async fn a_group_killed_whole_comes_back_from_its_directories_with_group_commit() {
    whole_group_comes_back(
        Delivery::Agreed,
        SyncPolicy::Batch,
        [2, 0, 1],
        "whole-batch",
    )
    .await;
}

#[actix_rt::test]
async fn a_group_killed_whole_comes_back_with_every_safe_write_synced() {
    whole_group_comes_back(
        Delivery::Safe,
        SyncPolicy::EveryCommand,
        [1, 2, 0],
        "whole-safe",
    )
    .await;
}

/// Members that die one after another leave a primary component behind
/// each death; the last one alive held the last one, alone. Back first, it
/// is primary on its own (nobody else can hold a later state), and the
/// others rejoin it.
#[actix_rt::test]
async fn after_a_cascade_the_last_to_die_comes_back_primary_and_the_others_rejoin() {
    let dirs = Dirs::new("cascade");
    let cluster = SimCluster::new(3);
    let cfg = |i| config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
    let acknowledged = cascade(start_three(&cluster, cfg).await).await;
    let mut back = vec![start(&cluster, 3, cfg(2)).await.expect("the last back")];
    back[0].replica.wait_primary().await.expect("primary alone");
    for i in [0usize, 1] {
        back.push(
            start(&cluster, i as u32 + 1, cfg(i))
                .await
                .expect("restart"),
        );
    }
    for r in &back {
        r.replica.wait_primary().await.expect("primary");
        assert!(is_subsequence(&acknowledged, &ledger(&r.replica).await));
    }
}

/// The same cascade, the last one to die back last: in a keyed group its
/// claim of a later primary component is trusted (every sender holds the
/// key), so it is admitted, and the group is primary again with its state.
#[actix_rt::test]
async fn in_a_keyed_group_the_last_to_die_may_come_back_last() {
    let key = GroupKey::from_passphrase("durable replicas");
    last_to_die_back_last("cascade-keyed", Some(key)).await;
}

/// The same cascade without a key, the last one to die back last: the two
/// back first came from their disks, so neither was part of the last
/// primary component it knows of, and nobody can refute the last one's
/// claim of a later one; it is admitted and the group goes on with its
/// state (rule 6 of the core, from protocol version 4 on).
#[actix_rt::test]
async fn in_an_unkeyed_group_the_last_to_die_may_come_back_last() {
    last_to_die_back_last("cascade-unkeyed", None).await;
}

/// The cascade, then the two that died first back first, the last one
/// last; the group is primary again with every acknowledged write.
async fn last_to_die_back_last(name: &str, key: Option<GroupKey>) {
    let dirs = Dirs::new(name);
    let cluster = SimCluster::new(3);
    let cfg = |i| ReplicaConfig {
        key: key.clone(),
        ..config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch)
    };
    let acknowledged = cascade(start_three(&cluster, cfg).await).await;
    let mut back = Vec::new();
    for i in [0usize, 1] {
        back.push(
            start(&cluster, i as u32 + 1, cfg(i))
                .await
                .expect("restart"),
        );
    }
    // Both knew earlier components only: not primary without the last.
    for r in &back {
        assert!(!r.replica.status().primary);
    }
    back.push(
        start(&cluster, 3, cfg(2))
            .await
            .expect("the last, back last"),
    );
    primary_with(&back, &acknowledged).await;
}

/// Before protocol version 4 such a claim was refused: a group that speaks
/// version 3 keeps that rule on every member, whatever its build, so
/// builds of both versions in one group decide alike. The first one to
/// die, back first, refuses the second one's claim of the component it
/// never saw, and stays without a primary.
#[actix_rt::test]
async fn a_group_speaking_version_3_refuses_the_unkeyed_claim_of_a_later_death() {
    let dirs = Dirs::new("cascade-v3");
    let cluster = SimCluster::new(3);
    let v3 = Versions {
        min: MIN_PROTOCOL_VERSION,
        max: RECOVERY_VERSION - 1,
    };
    let cfg = |i| ReplicaConfig {
        protocol_versions: v3,
        ..config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch)
    };
    cascade(start_three(&cluster, cfg).await).await;
    let first = start(&cluster, 1, cfg(0)).await.expect("restart");
    let later = cluster.process(NodeId(2)).expect("node up");
    let conn = later
        .join(&GroupName::new(GROUP).expect("name"))
        .expect("join");
    let starting = actix_rt::spawn(Replica::<Ledger>::start(conn, cfg(1)));
    until("the claim refused", async || {
        first.replica.status().refused.epoch >= 1
    })
    .await;
    let status = first.replica.status();
    assert!(!status.primary);
    assert_eq!(status.protocol_version, Some(RECOVERY_VERSION - 1));
    later.kill().expect("kill");
    starting.abort();
}

#[actix_rt::test]
async fn two_of_three_back_wait_for_the_third_before_they_are_primary() {
    let dirs = Dirs::new("two-of-three");
    let cluster = SimCluster::new(3);
    let cfg = |i| config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
    let running = start_three(&cluster, cfg).await;
    let acknowledged = write(&running[1].replica, 0, 5).await;
    kill_all(running).await;
    let mut back = Vec::new();
    for i in [0usize, 1] {
        let cfg = config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
        back.push(start(&cluster, i as u32 + 1, cfg).await.expect("restart"));
    }
    // Both are installed together, and that view is not primary: the
    // third member of the last primary component may have gone on alone.
    until("both installed in one view", async || {
        let s = back[0].replica.inspect().await.expect("inspect");
        s.installed && s.members.len() == 2
    })
    .await;
    for r in &back {
        let s = r.replica.inspect().await.expect("inspect");
        assert!(s.installed && !s.primary, "{s:#?}");
    }
    assert!(matches!(
        back[0].replica.execute((back[0].replica.local(), 7)).await,
        Err(ReplicaError::NotPrimary)
    ));
    let cfg = config(&dirs.replica(2), Delivery::Safe, SyncPolicy::Batch);
    back.push(start(&cluster, 3, cfg).await.expect("third back"));
    primary_with(&back, &acknowledged).await;
}

#[actix_rt::test]
async fn a_group_of_one_comes_back_primary_with_its_state() {
    let dirs = Dirs::new("one");
    let cluster = SimCluster::new(3);
    let cfg = || config(&dirs.replica(0), Delivery::Agreed, SyncPolicy::EveryCommand);
    let r = start(&cluster, 1, cfg()).await.expect("start");
    r.replica.wait_primary().await.expect("primary");
    let acknowledged = write(&r.replica, 0, 20).await;
    kill(r).await;
    let r = start(&cluster, 2, cfg()).await.expect("restart");
    r.replica.wait_primary().await.expect("primary again");
    assert_eq!(ledger(&r.replica).await, acknowledged);
}

#[actix_rt::test]
async fn a_restarted_replica_catches_up_with_a_group_that_went_on() {
    let dirs = Dirs::new("catch-up");
    let cluster = SimCluster::new(3);
    let cfg = |i| config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
    let mut running = start_three(&cluster, cfg).await;
    write(&running[0].replica, 0, 4).await;
    let gone = running.remove(2);
    kill(gone).await;
    write(&running[0].replica, 10, 12).await;
    let back = start(&cluster, 3, cfg(2)).await.expect("restart");
    let want = ledger(&running[0].replica).await;
    until(
        "the restarted replica holds the group's state",
        async || ledger(&back.replica).await == want,
    )
    .await;
    back.replica.wait_primary().await.expect("primary");
}

/// Back from its disk with a prefix of the group's history, a replica is
/// sent only the commands it lacks (far fewer bytes than the state), and
/// keeps them in its log: the whole group killed and started again comes
/// back with them.
#[actix_rt::test]
async fn a_replica_back_from_its_disk_is_sent_only_the_commands_it_lacks() {
    let dirs = Dirs::new("suffix");
    let cluster = SimCluster::new(3);
    let cfg = |i| ReplicaConfig {
        snapshot_every: 1000,
        ..config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch)
    };
    let mut running = start_three(&cluster, cfg).await;
    write(&running[0].replica, 0, 150).await;
    let gone = running.remove(2);
    kill(gone).await;
    write(&running[0].replica, 1000, 3).await;
    running.push(start(&cluster, 3, cfg(2)).await.expect("restart"));
    let want = ledger(&running[0].replica).await;
    until(
        "the restarted replica holds the group's state",
        async || ledger(&running[2].replica).await == want,
    )
    .await;
    let (from, bytes) = running[2]
        .replica
        .status()
        .restored
        .expect("sent the state");
    assert_eq!(from, running[0].replica.local());
    // The state is 153 entries of 16 bytes; three commands are far less.
    assert!(bytes < 1000, "{bytes} bytes sent");
    kill_all(running).await;
    let mut back = Vec::new();
    for i in 0..3 {
        back.push(
            start(&cluster, i as u32 + 1, cfg(i))
                .await
                .expect("restart"),
        );
    }
    primary_with(&back, &want).await;
    for r in &back {
        assert_eq!(ledger(&r.replica).await, want);
    }
}

#[actix_rt::test]
async fn a_directory_serves_one_replica_at_a_time() {
    let dirs = Dirs::new("busy");
    let cluster = SimCluster::new(3);
    let cfg = || config(&dirs.replica(0), Delivery::Agreed, SyncPolicy::Batch);
    let first = start(&cluster, 1, cfg()).await.expect("start");
    let second = start(&cluster, 2, cfg()).await;
    assert!(
        matches!(&second, Err(ReplicaError::Storage(why)) if why.contains("held by another replica")),
        "{:?}",
        second.err()
    );
    first
        .replica
        .wait_primary()
        .await
        .expect("the first goes on");
}

#[actix_rt::test]
async fn a_damaged_snapshot_stops_the_start() {
    let dirs = Dirs::new("damaged");
    let cluster = SimCluster::new(3);
    let cfg = || config(&dirs.replica(0), Delivery::Agreed, SyncPolicy::Batch);
    let r = start(&cluster, 1, cfg()).await.expect("start");
    r.replica.wait_primary().await.expect("primary");
    // Past `snapshot_every`: a snapshot is on disk (written off the
    // replica's thread).
    write(&r.replica, 0, 10).await;
    let snapshot = dirs.replica(0).join("snapshot");
    until("a snapshot is written", async || snapshot.exists()).await;
    kill(r).await;
    let mut bytes = std::fs::read(&snapshot).expect("a snapshot was written");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&snapshot, bytes).expect("damage it");
    let again = start(&cluster, 2, cfg()).await;
    assert!(
        matches!(&again, Err(ReplicaError::Storage(_))),
        "{:?}",
        again.err()
    );
}

/// A disk lost for good: the two replicas back wait for the third forever,
/// until the operator bootstraps one of them (never done by the library):
/// then they are primary again with what they held, and the report says
/// which members were written off.
#[actix_rt::test]
async fn after_a_disk_is_lost_the_operator_bootstraps_the_survivors() {
    let dirs = Dirs::new("bootstrap");
    let cluster = SimCluster::new(3);
    let cfg = |i| config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
    let running = start_three(&cluster, cfg).await;
    let acknowledged = write(&running[0].replica, 0, 6).await;
    let old: Vec<Member> = running.iter().map(|r| r.replica.local()).collect();
    kill_all(running).await;
    std::fs::remove_dir_all(dirs.replica(2)).expect("the disk is lost");

    let mut back = Vec::new();
    for i in [0usize, 1] {
        back.push(
            start(&cluster, i as u32 + 1, cfg(i))
                .await
                .expect("restart"),
        );
    }
    until("both installed in one view", async || {
        let s = back[0].replica.inspect().await.expect("inspect");
        s.installed && s.members.len() == 2
    })
    .await;
    assert!(back.iter().all(|r| !r.replica.status().primary));
    kill_all(back).await;

    // A running replica's directory is refused.
    let busy = start(&cluster, 1, cfg(0)).await.expect("restart");
    assert!(matches!(
        actix_cpg::replicated::bootstrap(&dirs.replica(0)),
        Err(actix_cpg::replicated::StoreError::Busy { .. })
    ));
    kill(busy).await;

    let report = actix_cpg::replicated::bootstrap(&dirs.replica(0)).expect("bootstrap");
    assert!(report.epoch.is_some());
    assert!(report.written_off.contains(&old[2]), "{report:?}");
    assert!(report.state.applied >= acknowledged.len() as u64);
    // The operator's record of what may be lost stays in the directory.
    let record =
        std::fs::read_to_string(dirs.replica(0).join(actix_cpg::replicated::BOOTSTRAP_LOG))
            .expect("a bootstrap record");
    assert_eq!(record.lines().count(), 1, "{record}");
    assert!(record.contains(&old[2].to_string()), "{record}");
    assert!(record.contains("lost unless"), "{record}");
    let mut back = Vec::new();
    for i in [1usize, 0] {
        back.push(
            start(&cluster, i as u32 + 1, cfg(i))
                .await
                .expect("restart"),
        );
    }
    primary_with(&back, &acknowledged).await;
}

/// A replica back with the very identity of the one it follows (a fresh
/// cluster hands out the same pids again, as a container does) counts as
/// that replica, present: after the group is back, a partition leaves the
/// two-member side primary and the lone member not, as before the restart.
#[actix_rt::test]
async fn replicas_back_with_the_same_identities_keep_the_majority_rule() {
    let dirs = Dirs::new("same-ids");
    let cfg = |i| config(&dirs.replica(i), Delivery::Safe, SyncPolicy::Batch);
    let first = SimCluster::new(3);
    let running = start_three(&first, cfg).await;
    let before: Vec<Member> = running.iter().map(|r| r.replica.local()).collect();
    let acknowledged = write(&running[0].replica, 0, 5).await;
    kill_all(running).await;

    let cluster = SimCluster::new(3);
    let back = start_three(&cluster, cfg).await;
    let after: Vec<Member> = back.iter().map(|r| r.replica.local()).collect();
    assert_eq!(before, after, "the same identities again");
    assert!(is_subsequence(
        &acknowledged,
        &ledger(&back[2].replica).await
    ));
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .expect("partition");
    until("the lone member is not primary", async || {
        let s = back[2].replica.inspect().await.expect("inspect");
        s.installed && s.members.len() == 1 && !s.primary
    })
    .await;
    for r in &back[..2] {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let s = r.replica.inspect().await.expect("inspect");
                if s.installed && s.members.len() == 2 && s.primary {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the majority side is primary");
    }
    write(&back[0].replica, 100, 2).await;
}
