//! Keyed groups on the sim backend: members that share a [`GroupKey`] work
//! as usual; a process without it — a plain CPG client multicasting
//! well-formed forgeries, a member under another key, a process sending a
//! member's captured message again as its own — changes nothing, and every
//! member counts each of its messages as unauthenticated.
//!
//! The registry and quorum forgeries are laid out as the protocol lays them
//! out (the same bodies, encoded by the same codec), and each is first
//! shown to take effect on an unkeyed group, so a keyed group refusing it
//! proves the key, not a malformed forgery.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::auth::Authenticated;
use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::supervisor::SupervisionEvent;
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::transport::{QuorumState, RingId};
use actix_cpg::wire::{Codec, Kind};
use actix_cpg::{
    Connection, Election, ElectionConfig, Group, GroupConfig, GroupKey, GroupName, Handlers,
    Member, NodeId, PrimaryEpoch, RemoteMessage, Replica, ReplicaConfig, StateId, Transport,
    GROUP_ELECTION,
};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Ping(u64);

impl RemoteMessage for Ping {
    const TYPE_TAG: &'static str = "test.group_key.Ping";
}

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, Ping(n): Ping, _: &mut Context<Self>) -> u64 {
        n + 1
    }
}

/// `Kind::Registry`'s body as the group protocol lays it out.
#[derive(Serialize)]
enum RegistryOp<'a> {
    Register { name: &'a str, token: u64 },
}

/// `Kind::Supervision`'s body: only the variant index of `Quorum` matters.
#[derive(Serialize)]
#[allow(dead_code)]
enum SupervisionFact {
    TreeStarted,
    ChildExited,
    Tick,
    Quorum { quorate: bool, nodes: Vec<NodeId> },
}

/// `Kind::Replicated`'s view-installation message.
#[derive(Serialize)]
enum ReplicaMessage {
    Info(Info),
}

/// Its leading fields: what it announces (versions, role), then its
/// claims. (Dropped before it is decoded, so the rest does not matter.)
#[derive(Serialize)]
struct Info {
    min_version: u8,
    max_version: u8,
    role: u32,
    fact: Option<QuorumState>,
    known: Option<PrimaryRecord>,
    state: StateId,
    founder: bool,
}

#[derive(Serialize)]
struct PrimaryRecord {
    epoch: PrimaryEpoch,
    members: Vec<Member>,
}

fn codec() -> Codec {
    Codec::new(1 << 20)
}

fn forged_register(name: &str) -> Vec<u8> {
    codec()
        .encode(Kind::Registry, &RegistryOp::Register { name, token: 1 })
        .expect("encode")
}

/// The announcement that makes a process a member of an unkeyed group:
/// the protocol versions it speaks, and that it holds no state.
fn forged_announce() -> Vec<u8> {
    #[derive(Serialize)]
    struct Announce {
        min_version: u8,
        max_version: u8,
        /// The role's variant index: 0, a participant.
        role: u32,
        synced: bool,
    }
    let version = actix_cpg::wire::PROTOCOL_VERSION;
    let body = Announce {
        min_version: version,
        max_version: version,
        role: 0,
        synced: false,
    };
    codec().encode(Kind::Announce, &body).expect("encode")
}

fn forged_quorum_loss() -> Vec<u8> {
    let fact = SupervisionFact::Quorum {
        quorate: false,
        nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
    };
    codec().encode(Kind::Supervision, &fact).expect("encode")
}

/// An `Info` claiming a state far ahead of anything real, from a member
/// that knows of a primary component made of itself alone.
fn forged_info(forger: Member) -> Vec<u8> {
    let epoch = PrimaryEpoch {
        ring_seq: u64::MAX / 2,
        term: u64::MAX / 2,
    };
    let version = actix_cpg::wire::PROTOCOL_VERSION;
    let info = Info {
        min_version: version,
        max_version: version,
        role: 0,
        fact: Some(QuorumState {
            quorate: true,
            ring_id: RingId {
                seq: u64::MAX / 2,
                nodeid: forger.node,
            },
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
        }),
        known: Some(PrimaryRecord {
            epoch,
            members: vec![forger],
        }),
        state: StateId {
            epoch,
            applied: 1 << 40,
            chain: 0xbad,
            genesis: 0xbad,
        },
        founder: true,
    };
    codec()
        .encode(Kind::Replicated, &ReplicaMessage::Info(info))
        .expect("encode")
}

fn key() -> GroupKey {
    GroupKey::from_passphrase("group-key test: the members' key")
}

fn keyed(key: &GroupKey) -> GroupConfig {
    GroupConfig {
        key: Some(key.clone()),
        ..GroupConfig::default()
    }
}

fn raw(cluster: &SimCluster, node: u32, group: &GroupName) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("up")
        .join(group)
        .expect("join")
}

async fn start_groups(
    cluster: &SimCluster,
    group: &GroupName,
    config: &GroupConfig,
    nodes: u32,
) -> Vec<Group> {
    let mut members = Vec::new();
    for node in 1..=nodes {
        let conn = raw(cluster, node, group);
        members.push(Group::start(conn, config.clone()).await.expect("start"));
    }
    members
}

/// Waits until `done` holds, polling; fails after 5 s with `what`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every member registers a name and calls another member's: each call
/// lands after everything multicast before it, so when this returns every
/// member has handled what came earlier in the order.
async fn serve_round(members: &[Group], round: &str) {
    for (i, g) in members.iter().enumerate() {
        g.register(
            &format!("{round}-{i}"),
            Handlers::new(Echo.start()).with::<Ping>(),
        )
        .await
        .expect("register");
    }
    for (i, g) in members.iter().enumerate() {
        let target = format!("{round}-{}", (i + 1) % members.len());
        assert_eq!(
            g.remote::<Ping>(&target).send(Ping(i as u64)).await,
            Ok(i as u64 + 1)
        );
    }
}

#[actix_rt::test]
async fn members_with_the_same_key_work_as_usual() {
    let cluster = SimCluster::new(3);
    let key = key();

    let name = GroupName::new("keyed-registry").expect("name");
    let members = start_groups(&cluster, &name, &keyed(&key), 3).await;
    serve_round(&members, "a").await;
    for g in &members {
        assert_eq!(g.names().await.expect("names").len(), 3);
        let m = g.metrics();
        assert_eq!(m.dropped(), 0, "{m:?}");
        assert!(m.delivered > 0);
    }

    let name = GroupName::new("keyed-kv").expect("name");
    let config = ReplicaConfig {
        key: Some(key.clone()),
        ..ReplicaConfig::default()
    };
    let mut replicas = Vec::new();
    for node in 1..=3 {
        let conn = raw(&cluster, node, &name);
        replicas.push(
            Replica::<KvStore>::start(conn, config.clone())
                .await
                .expect("replica"),
        );
    }
    replicas[0].wait_primary().await.expect("primary");
    for (i, r) in replicas.iter().enumerate() {
        r.execute(KvCommand::Put {
            key: format!("k{i}"),
            value: "v".into(),
        })
        .await
        .expect("write");
    }
    let digest = replicas[0]
        .query(|s| (s.len(), s.digest()))
        .await
        .expect("query");
    assert_eq!(digest.0, 3);
    for r in &replicas {
        eventually("replicas agree", || r.status().state.applied == 3).await;
        assert_eq!(
            r.query(|s| (s.len(), s.digest())).await.expect("query"),
            digest
        );
        assert_eq!(r.metrics().dropped(), 0);
    }

    let name = GroupName::new("keyed-election").expect("name");
    let config = ElectionConfig {
        key: Some(key.clone()),
        ..ElectionConfig::default()
    };
    let mut elections = Vec::new();
    for node in 1..=3 {
        let conn = raw(&cluster, node, &name);
        elections.push(
            Election::start(conn, config.clone())
                .await
                .expect("election"),
        );
    }
    let leader = elections[0]
        .wait_leader(GROUP_ELECTION)
        .await
        .expect("leader");
    for e in &elections {
        assert_eq!(e.wait_leader(GROUP_ELECTION).await.expect("leader"), leader);
        assert_eq!(e.dropped_unauthenticated(), 0);
    }
}

#[actix_rt::test]
async fn the_forgeries_take_effect_on_an_unkeyed_group_once_their_sender_announces() {
    // Without a key, a process that speaks the protocol and announces
    // itself is a member: only the key keeps such a process out.
    let cluster = SimCluster::new(3);
    let name = GroupName::new("unkeyed-forged").expect("name");
    let members = start_groups(&cluster, &name, &GroupConfig::default(), 3).await;
    let mut quorum = members[1].supervision_events();
    let mut forger = raw(&cluster, 2, &name);
    forger.mcast(&forged_announce()).expect("mcast");
    forger.mcast(&forged_register("victim")).expect("mcast");
    forger.mcast(&forged_quorum_loss()).expect("mcast");
    serve_round(&members, "a").await;
    for g in &members {
        assert_eq!(
            g.lookup("victim").await.expect("lookup"),
            Some(forger.local())
        );
    }
    let lost = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(SupervisionEvent::QuorumLost) = quorum.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(lost.is_ok(), "the forged fact stopped quorum");
}

#[actix_rt::test]
async fn a_plain_client_without_the_key_changes_nothing() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("keyed-forged").expect("name");
    let members = start_groups(&cluster, &name, &keyed(&key()), 3).await;
    let mut quorum: Vec<_> = members.iter().map(|g| g.supervision_events()).collect();
    let mut forger = raw(&cluster, 2, &name);
    let forgeries = [
        forged_announce(),
        forged_register("victim"),
        forged_quorum_loss(),
        forged_info(forger.local()),
        b"not even an envelope".to_vec(),
        Vec::new(),
    ];
    for f in &forgeries {
        forger.mcast(f).expect("mcast");
    }
    serve_round(&members, "a").await;
    for (g, events) in members.iter().zip(&mut quorum) {
        assert_eq!(g.lookup("victim").await.expect("lookup"), None);
        let m = g.metrics();
        assert_eq!(m.dropped_unauthenticated, forgeries.len() as u64, "{m:?}");
        assert_eq!(
            m.dropped(),
            m.dropped_unauthenticated,
            "nothing reached the decoder"
        );
        while let Ok(event) = events.try_recv() {
            assert_ne!(event, SupervisionEvent::QuorumLost);
        }
    }
}

#[actix_rt::test]
async fn a_replica_ignores_a_forged_info_and_keeps_taking_writes() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("keyed-kv-forged").expect("name");
    let config = ReplicaConfig {
        key: Some(key()),
        ..ReplicaConfig::default()
    };
    let mut replicas = Vec::new();
    for node in 1..=3 {
        let conn = raw(&cluster, node, &name);
        replicas.push(
            Replica::<KvStore>::start(conn, config.clone())
                .await
                .expect("replica"),
        );
    }
    replicas[0].wait_primary().await.expect("primary");
    let put = |k: &str| KvCommand::Put {
        key: k.into(),
        value: "v".into(),
    };
    replicas[0].execute(put("before")).await.expect("write");
    let before = replicas[0].status().state;

    // While the forger is in the view, the replicas wait for an info of
    // its that never verifies; once it leaves they install without it.
    let mut forger = raw(&cluster, 3, &name);
    forger.mcast(&forged_info(forger.local())).expect("mcast");
    forger.mcast(&forged_register("victim")).expect("mcast");
    eventually("the forgeries are counted", || {
        replicas
            .iter()
            .all(|r| r.metrics().dropped_unauthenticated == 2)
    })
    .await;
    forger.leave().expect("leave");

    replicas[1]
        .execute(put("after"))
        .await
        .expect("write after");
    for r in &replicas {
        eventually("replicas apply the write", || {
            r.status().state.applied == before.applied + 1
        })
        .await;
        let s = r.status().state;
        assert_eq!((s.genesis, s.chain != 0xbad), (before.genesis, true));
        assert_eq!(r.query(|s| s.len()).await.expect("query"), 2);
        let m = r.metrics();
        assert_eq!(m.dropped_unauthenticated, 2, "{m:?}");
        assert_eq!(m.dropped(), 2);
    }
}

#[actix_rt::test]
async fn a_member_with_another_key_is_nobody() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("two-keys").expect("name");
    let members = start_groups(&cluster, &name, &keyed(&key()), 2).await;
    let other = GroupKey::from_passphrase("group-key test: another key");

    // A whole runtime under the other key never gets the group state...
    let stranger = raw(&cluster, 3, &name);
    let started = tokio::time::timeout(
        Duration::from_millis(300),
        Group::start(stranger, keyed(&other)),
    )
    .await;
    assert!(started.is_err(), "a member under another key got the state");

    // ...and a well-formed, well-keyed registration under the other key
    // registers nothing.
    let dropped_before: Vec<u64> = members
        .iter()
        .map(|g| g.metrics().dropped_unauthenticated)
        .collect();
    assert!(
        dropped_before.iter().all(|&n| n >= 1),
        "its sync request was dropped"
    );
    let mut outsider =
        Authenticated::new(raw(&cluster, 3, &name), other, Arc::new(AtomicU64::new(0)));
    outsider.mcast(&forged_register("victim")).expect("mcast");
    serve_round(&members, "a").await;
    for (g, before) in members.iter().zip(&dropped_before) {
        assert_eq!(g.lookup("victim").await.expect("lookup"), None);
        assert!(g.metrics().dropped_unauthenticated > *before);
        assert_eq!(g.metrics().dropped(), g.metrics().dropped_unauthenticated);
    }
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let me = outsider.local();
    while let std::task::Poll::Ready(Ok(event)) = outsider.poll_event(&mut cx) {
        if let actix_cpg::TransportEvent::Deliver { from, .. } = event {
            assert_eq!(from, me, "a member's message verified under another key");
        }
    }
    assert!(
        outsider.dropped() > 0,
        "the members' messages are nothing to it either"
    );
}

#[actix_rt::test]
async fn a_captured_message_sent_again_by_another_process_is_refused() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("keyed-replay").expect("name");
    let members = start_groups(&cluster, &name, &keyed(&key()), 2).await;
    let mut spy = raw(&cluster, 3, &name);
    let mut unkeyed_spy_view = Vec::new();

    members[0]
        .register("real", Handlers::new(Echo.start()).with::<Ping>())
        .await
        .expect("register");
    members[0].unregister("real").await.expect("unregister");
    while let Ok(Some(event)) = spy.try_next_event() {
        if let actix_cpg::TransportEvent::Deliver { from, bytes } = event {
            if from == members[0].local() {
                unkeyed_spy_view.push(bytes);
            }
        }
    }
    let register = unkeyed_spy_view
        .first()
        .expect("the spy saw the keyed registration")
        .clone();
    assert!(register.starts_with(b"ACPK"));

    spy.mcast(&register).expect("mcast");
    serve_round(&members, "a").await;
    for g in &members {
        assert_eq!(g.lookup("real").await.expect("lookup"), None);
        assert_eq!(g.metrics().dropped_unauthenticated, 1);
    }
}

#[actix_rt::test]
async fn a_keyed_recording_holds_the_verified_envelopes_and_replays_without_the_key() {
    let dir = std::env::temp_dir().join(format!("acpg-keyed-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("member.rec");
    let cluster = SimCluster::new(3);
    let name = GroupName::new("keyed-recorded").expect("name");
    let config = GroupConfig {
        record_to: Some(path.clone()),
        ..keyed(&key())
    };
    let mut members = vec![Group::start(raw(&cluster, 1, &name), config)
        .await
        .expect("start")];
    members.push(
        Group::start(raw(&cluster, 2, &name), keyed(&key()))
            .await
            .expect("start"),
    );
    let mut forger = raw(&cluster, 3, &name);
    forger.mcast(&forged_register("victim")).expect("mcast");
    serve_round(&members, "a").await;
    assert_eq!(members[0].metrics().dropped_unauthenticated, 1);
    members[0].leave().await.expect("leave");

    let recording = actix_cpg::record::Recording::open(&path).expect("recording");
    let mut delivered = 0;
    for entry in &recording.entries {
        if let actix_cpg::record::Recorded::Deliver { from, bytes } = entry {
            delivered += 1;
            assert_ne!(*from, forger.local(), "a dropped message is not recorded");
            assert!(bytes.starts_with(b"ACPG"), "recorded without the MAC");
        }
    }
    assert!(delivered >= 4);
    let decisions: Vec<String> = actix_cpg::group::replay(&recording, 16 << 20)
        .into_iter()
        .map(|d| d.decision)
        .collect();
    for i in 0..2 {
        assert!(
            decisions.iter().any(|d| d.contains(&format!("\"a-{i}\""))),
            "{decisions:#?}"
        );
    }
    assert!(
        !decisions.iter().any(|d| d.contains("victim")),
        "{decisions:#?}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
