//! A registry group with a supervision tree, on the sim backend, next to a
//! process that joins the CPG group without being a member: it stays
//! silent, or multicasts well-formed forgeries of every message a member
//! acts on.
//!
//! Invariants: a silent process changes nothing (no stall, no child placed
//! on it, no view change, calls work); every forgery from it is refused on
//! every member and counted there by cause (`refused_unannounced`); an
//! announced member whose clock jumps is refused too (`refused_clock`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::supervisor::{
    ChildPath, ChildSpec, IncarnationId, QuorumPolicy, SlotStatus, Strategy, SupervisionEvent,
    SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::wire::{Codec, Kind, HEADER_LEN};
use actix_cpg::{
    Child, ChildContext, Connection, Factories, Group, GroupConfig, GroupEvent, GroupName,
    Handlers, Member, NodeId, RemoteMessage, Terminate, Transport, TransportEvent,
};
use serde::{Deserialize, Serialize};

// ---- the wire layout of the group's private message types -----------------
// The same serde shapes (field order, variant order) as `src/group/messages.rs`:
// bincode writes only the variant index and the fields, so a variant that is
// never sent may stand in with any content.

#[derive(Serialize)]
enum RegistryOp {
    Register { name: String, token: u64 },
}

#[derive(Serialize)]
struct Reply {
    id: u64,
    to: Member,
    outcome: Result<Vec<u8>, ()>,
}

#[derive(Serialize)]
struct SyncRequest {
    nonce: u64,
}

#[derive(Serialize)]
struct Announcement {
    min_version: u8,
    max_version: u8,
    /// The role's variant index: 0, a participant.
    role: u32,
}

#[derive(Serialize)]
struct Announce {
    announcement: Announcement,
    synced: bool,
}

#[derive(Serialize)]
enum SupervisionMsg {
    #[allow(dead_code)]
    TreeStarted(()),
    ChildExited {
        path: ChildPath,
        incarnation: IncarnationId,
        normal: bool,
    },
    Tick {
        now_ms: u64,
    },
    Quorum {
        quorate: bool,
        nodes: Vec<NodeId>,
    },
}

// ---- a slow service and a supervised worker --------------------------------

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Ping;

impl RemoteMessage for Ping {
    const TYPE_TAG: &'static str = "test.hostile.Ping";
}

/// Answers 42, slowly: long enough for a forged reply to arrive first.
struct Slow;

impl Actor for Slow {
    type Context = Context<Self>;
}

impl Handler<Ping> for Slow {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async {
            actix_rt::time::sleep(Duration::from_millis(300)).await;
            42
        })
    }
}

/// Which live actor runs which child, seen from outside every member.
#[derive(Clone, Default)]
struct Census(Arc<Mutex<BTreeMap<String, Vec<Member>>>>);

impl Census {
    fn snapshot(&self) -> BTreeMap<String, Vec<Member>> {
        self.0.lock().unwrap().clone()
    }
}

struct Worker {
    name: String,
    host: Member,
    census: Census,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        let mut m = self.census.0.lock().unwrap();
        m.entry(self.name.clone()).or_default().push(self.host);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        let mut m = self.census.0.lock().unwrap();
        if let Some(v) = m.get_mut(&self.name) {
            v.retain(|h| *h != self.host);
            if v.is_empty() {
                m.remove(&self.name);
            }
        }
    }
}

impl Handler<Terminate> for Worker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn spec() -> TreeSpec {
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(20, 60_000)
            .child(ChildSpec::worker("a", "worker"))
            .child(ChildSpec::worker("b", "worker"))
            .child(ChildSpec::worker("c", "worker")),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

const CHILDREN: [&str; 3] = ["jobs/a", "jobs/b", "jobs/c"];

fn factories(host: Member, census: &Census) -> Factories {
    let census = census.clone();
    Factories::new().worker("worker", move |ctx: &ChildContext| {
        Child::new(
            Worker {
                name: ctx.name.clone(),
                host,
                census: census.clone(),
            }
            .start(),
        )
    })
}

fn group_name() -> GroupName {
    GroupName::new("hostile").unwrap()
}

fn each_once(m: &BTreeMap<String, Vec<Member>>, on: &[Member]) -> bool {
    CHILDREN.iter().all(|n| {
        m.get(*n)
            .is_some_and(|hosts| hosts.len() == 1 && on.contains(&hosts[0]))
    }) && m.values().all(|h| h.len() <= 1)
}

async fn until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred() {
        assert!(Instant::now() < deadline, "never reached: {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three members (one per node) running the tree, member 0 hosting `svc`.
async fn three(cluster: &SimCluster, census: &Census) -> Vec<Group> {
    let mut groups = Vec::new();
    for node in 1..=3 {
        let conn = cluster
            .process(NodeId(node))
            .unwrap()
            .join(&group_name())
            .unwrap();
        let group = actix_rt::time::timeout(
            Duration::from_secs(5),
            Group::start(conn, GroupConfig::default()),
        )
        .await
        .expect("a member becomes ready")
        .unwrap();
        group
            .start_tree("jobs", spec(), factories(group.local(), census))
            .await
            .unwrap();
        groups.push(group);
    }
    groups[0]
        .register("svc", Handlers::new(Slow.start()).with::<Ping>())
        .await
        .unwrap();
    let all: Vec<Member> = groups.iter().map(Group::local).collect();
    until("every child runs once on a member", || {
        each_once(&census.snapshot(), &all)
    })
    .await;
    for g in &groups {
        let g = g.clone();
        let name_known = async move { g.lookup("svc").await.unwrap().is_some() };
        assert!(name_known.await);
    }
    groups
}

/// The outsider: a plain CPG client in the same group.
struct Outsider {
    conn: SimConnection,
    codec: Codec,
    /// Kinds of every message delivered to it, in order.
    kinds: Vec<u8>,
    /// Request ids it saw from each sender.
    requests: Vec<(Member, u64)>,
}

impl Outsider {
    fn join(cluster: &SimCluster, node: u32) -> Self {
        let conn = cluster
            .process(NodeId(node))
            .unwrap()
            .join(&group_name())
            .unwrap();
        Outsider {
            conn,
            codec: Codec::new(1 << 20),
            kinds: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn member(&self) -> Member {
        self.conn.local()
    }

    /// Reads everything delivered so far (it must keep reading, as any
    /// CPG client must).
    fn drain(&mut self) {
        while let Ok(Some(event)) = self.conn.try_next_event() {
            if let TransportEvent::Deliver { from, bytes } = event {
                let Ok(frame) = self.codec.decode_frame(&bytes) else {
                    continue;
                };
                let mut parts = vec![(frame.kind, frame.body)];
                if frame.kind == Kind::Batch {
                    parts = self
                        .codec
                        .split_batch(frame.body)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| self.codec.decode_frame(p).ok())
                        .map(|f| (f.kind, f.body))
                        .collect();
                }
                for (kind, body) in parts {
                    self.kinds.push(kind as u8);
                    if kind == Kind::Request && body.len() >= 8 {
                        let id = u64::from_le_bytes(body[..8].try_into().unwrap());
                        self.requests.push((from, id));
                    }
                }
            }
        }
    }

    fn send<T: Serialize>(&mut self, kind: Kind, body: &T) {
        let bytes = self.codec.encode(kind, body).unwrap();
        assert!(bytes.len() > HEADER_LEN);
        self.conn.mcast(&bytes).unwrap();
    }
}

async fn settle(outsider: &mut Outsider) {
    for _ in 0..40 {
        outsider.drain();
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    outsider.drain();
}

#[actix_rt::test]
async fn a_silent_process_changes_nothing() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let groups = three(&cluster, &census).await;
    let all: Vec<Member> = groups.iter().map(Group::local).collect();
    let placed = groups[0].children().await.unwrap();
    let mut events = groups[1].subscribe();

    // It comes (on node 1, whose quorum vote it does not change) and stays.
    let mut outsider = Outsider::join(&cluster, 1);
    settle(&mut outsider).await;
    for g in &groups {
        assert_eq!(g.members().await.unwrap(), all, "no member more");
    }
    // A new member becomes ready while it is there, and gets nothing from
    // it: the state comes from a member.
    let conn = cluster
        .process(NodeId(2))
        .unwrap()
        .join(&group_name())
        .unwrap();
    let joiner = actix_rt::time::timeout(
        Duration::from_secs(5),
        Group::start(conn, GroupConfig::default()),
    )
    .await
    .expect("a joiner becomes ready next to a silent process")
    .unwrap();
    joiner
        .start_tree("jobs", spec(), factories(joiner.local(), &census))
        .await
        .unwrap();
    let mut with_joiner = all.clone();
    with_joiner.push(joiner.local());
    with_joiner.sort();
    assert_eq!(joiner.members().await.unwrap(), with_joiner);
    settle(&mut outsider).await;
    // Nothing is placed on it, calls work, everyone agrees.
    let children = groups[0].children().await.unwrap();
    for c in &children {
        if let SlotStatus::Running { host, .. } = c.status {
            assert_ne!(host, outsider.member(), "a child placed on the outsider");
            assert!(with_joiner.contains(&host));
        }
    }
    assert_eq!(children, joiner.children().await.unwrap());
    assert!(each_once(&census.snapshot(), &with_joiner));
    let answer = joiner.remote::<Ping>("svc").send(Ping).await.unwrap();
    assert_eq!(answer, 42);

    // It goes: nothing changes at all.
    let before = groups[0].children().await.unwrap();
    outsider.conn.leave().unwrap();
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(groups[0].children().await.unwrap(), before);
    for g in &groups {
        assert_eq!(g.members().await.unwrap(), with_joiner);
        assert_eq!(g.metrics().refused(), 0);
    }
    // The only view changes the members saw: the joiner's admission.
    let mut views = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let GroupEvent::ViewChanged { members, .. } = e {
            views.push(members);
        }
    }
    assert_eq!(views, vec![with_joiner.clone()]);
    let _ = placed;
}

#[actix_rt::test]
async fn forgeries_from_a_process_that_never_announced_itself_are_refused_everywhere() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let groups = three(&cluster, &census).await;
    let all: Vec<Member> = groups.iter().map(Group::local).collect();
    let mut outsider = Outsider::join(&cluster, 1);
    settle(&mut outsider).await;
    let before: Vec<_> = groups.iter().map(Group::metrics).collect();
    let mut restarts = groups[2].supervision_events();
    let children = groups[0].children().await.unwrap();
    let mut forged = 0u64;

    // A name for itself.
    outsider.send(
        Kind::Registry,
        &RegistryOp::Register {
            name: "evil".into(),
            token: 1,
        },
    );
    forged += 1;

    // An answer to a call under way, before the real one.
    let caller = groups[1].clone();
    let call = actix_rt::spawn(async move { caller.remote::<Ping>("svc").send(Ping).await });
    let to = groups[1].local();
    until("the outsider reads the call's request", || {
        outsider.drain();
        outsider.requests.iter().any(|(from, _)| *from == to)
    })
    .await;
    let id = outsider
        .requests
        .iter()
        .rev()
        .find(|(f, _)| *f == to)
        .unwrap()
        .1;
    let fake = Codec::new(1 << 20).encode_payload(&7u64).unwrap();
    outsider.send(
        Kind::Reply,
        &Reply {
            id,
            to,
            outcome: Ok(fake),
        },
    );
    forged += 1;

    // Quorum lost (the tree's policy would stop every child), a clock
    // pinned at the end of time, the state for itself, and the exit of a
    // running child.
    outsider.send(
        Kind::Supervision,
        &SupervisionMsg::Quorum {
            quorate: false,
            nodes: vec![],
        },
    );
    outsider.send(
        Kind::Supervision,
        &SupervisionMsg::Tick { now_ms: u64::MAX },
    );
    let kinds_before = outsider.kinds.len();
    outsider.send(Kind::SyncRequest, &SyncRequest { nonce: 1 });
    let running = children
        .iter()
        .find_map(|c| match c.status {
            SlotStatus::Running { incarnation, .. } => Some((c.path.clone(), incarnation)),
            _ => None,
        })
        .unwrap();
    outsider.send(
        Kind::Supervision,
        &SupervisionMsg::ChildExited {
            path: running.0,
            incarnation: running.1,
            normal: false,
        },
    );
    forged += 4;

    // The real answer wins.
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer, 42, "the forged reply was taken");
    settle(&mut outsider).await;

    for (g, b) in groups.iter().zip(&before) {
        assert_eq!(g.lookup("evil").await.unwrap(), None);
        let now = g.metrics();
        assert_eq!(
            now.refused_unannounced - b.refused_unannounced,
            forged,
            "{}: every forgery counted once",
            g.local()
        );
        assert_eq!(now.refused() - b.refused(), forged);
        assert_eq!(g.members().await.unwrap(), all);
    }
    // Nobody sent the state, nothing stopped or restarted.
    let snapshots = outsider.kinds[kinds_before..]
        .iter()
        .filter(|k| **k == Kind::Snapshot as u8 || **k == Kind::Chunk as u8)
        .count();
    assert_eq!(snapshots, 0, "a member sent the state to the outsider");
    assert!(each_once(&census.snapshot(), &all));
    assert_eq!(groups[0].children().await.unwrap(), children);
    while let Ok(e) = restarts.try_recv() {
        assert!(
            !matches!(
                e,
                SupervisionEvent::ChildRestarted { .. }
                    | SupervisionEvent::QuorumLost
                    | SupervisionEvent::ChildStopped { .. }
            ),
            "the forgeries moved the tree: {e:?}"
        );
    }
    // The group goes on.
    assert_eq!(
        groups[2].remote::<Ping>("svc").send(Ping).await.unwrap(),
        42
    );
}

#[actix_rt::test]
async fn an_announced_process_whose_clock_jumps_is_refused() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let groups = three(&cluster, &census).await;
    // The lowest member ticks every half second while children exist:
    // wait for the stream time to start.
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    let mut liar = Outsider::join(&cluster, 1);
    settle(&mut liar).await;
    liar.send(
        Kind::Announce,
        &Announce {
            announcement: Announcement {
                min_version: actix_cpg::wire::PROTOCOL_VERSION,
                max_version: actix_cpg::wire::PROTOCOL_VERSION,
                role: 0,
            },
            synced: true,
        },
    );
    settle(&mut liar).await;
    for g in &groups {
        assert!(g.members().await.unwrap().contains(&liar.member()));
    }
    let before: Vec<_> = groups.iter().map(Group::metrics).collect();
    liar.send(
        Kind::Supervision,
        &SupervisionMsg::Tick { now_ms: u64::MAX },
    );
    settle(&mut liar).await;
    for (g, b) in groups.iter().zip(&before) {
        assert_eq!(
            g.metrics().refused_clock - b.refused_clock,
            1,
            "{}",
            g.local()
        );
        assert_eq!(g.metrics().refused() - b.refused(), 1);
    }
}

#[actix_rt::test]
async fn a_silent_process_on_either_side_of_a_partition_is_never_placed_on() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let groups = three(&cluster, &census).await;
    let all: Vec<Member> = groups.iter().map(Group::local).collect();
    // A worker on every member: a process counted as one would get one.
    let every = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne).child(
            ChildSpec::worker("e", "worker")
                .placement(actix_cpg::supervisor::Placement::on_every_member()),
        ),
    )
    .quorum_policy(QuorumPolicy::Stop);
    for g in &groups {
        g.start_tree("every", every.clone(), factories(g.local(), &census))
            .await
            .unwrap();
    }
    // Silent processes on the majority's node and on the node cut off.
    let mut quiet = [Outsider::join(&cluster, 1), Outsider::join(&cluster, 3)];
    for o in &mut quiet {
        settle(o).await;
    }
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .unwrap();
    until("the majority runs everything", || {
        quiet.iter_mut().for_each(Outsider::drain);
        each_once(&census.snapshot(), &all[..2])
    })
    .await;
    cluster.heal();
    let outsiders: Vec<Member> = quiet.iter().map(Outsider::member).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        quiet.iter_mut().for_each(Outsider::drain);
        let mut agreed = true;
        let first = groups[0].children().await.unwrap();
        for g in &groups {
            agreed &= g.members().await.unwrap() == all;
            agreed &= g.children().await.unwrap() == first;
        }
        for c in &first {
            if let SlotStatus::Running { host, .. } = c.status {
                assert!(
                    !outsiders.contains(&host),
                    "a child placed on a silent process"
                );
            }
        }
        if agreed && each_once(&census.snapshot(), &all) {
            break;
        }
        assert!(Instant::now() < deadline, "the merge never settled");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // What the member cut off said in the moment before its runtime read
    // the merging confchg (its quorum fact) arrives ahead of its
    // announcement and is refused; nothing else is.
    for g in &groups {
        let m = g.metrics();
        assert_eq!(m.refused(), m.refused_unannounced, "{} {m:?}", g.local());
        assert!(m.refused_unannounced <= 2, "{} {m:?}", g.local());
    }
}
