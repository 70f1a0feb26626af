//! The distributed supervision tree end to end on the sim backend: real
//! actix actors started, restarted and stopped across three members as
//! confchgs, exits and quorum arrive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{
    ChildSpec, QuorumPolicy, Refusal, RestartType, SlotStatus, Strategy, SupervisionEvent,
    SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupError, GroupName, Handlers, Member,
    NodeId, Role, Terminate, Transport,
};

/// Which live actor runs which child, seen from outside every member.
#[derive(Clone, Default)]
struct Census(Arc<Mutex<BTreeMap<String, Vec<Member>>>>);

impl Census {
    fn add(&self, name: &str, host: Member) {
        self.0
            .lock()
            .unwrap()
            .entry(name.into())
            .or_default()
            .push(host);
    }
    fn remove(&self, name: &str, host: Member) {
        let mut m = self.0.lock().unwrap();
        if let Some(v) = m.get_mut(name) {
            if let Some(i) = v.iter().position(|h| *h == host) {
                v.remove(i);
            }
            if v.is_empty() {
                m.remove(name);
            }
        }
    }
    fn snapshot(&self) -> BTreeMap<String, Vec<Member>> {
        self.0.lock().unwrap().clone()
    }
}

struct Worker {
    name: String,
    host: Member,
    census: Census,
    ctx: ChildContext,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.census.add(&self.name, self.host);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.census.remove(&self.name, self.host);
    }
}

impl Handler<Terminate> for Worker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Stops the worker, normally or not.
#[derive(Message)]
#[rtype(result = "()")]
struct Exit {
    normal: bool,
}

impl Handler<Exit> for Worker {
    type Result = ();
    fn handle(&mut self, exit: Exit, ctx: &mut Context<Self>) {
        if exit.normal {
            self.ctx.exit.normal();
        }
        ctx.stop();
    }
}

fn spec() -> TreeSpec {
    let nested = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(10, 60_000)
        .child(ChildSpec::worker("n1", "worker"))
        .child(ChildSpec::worker("n2", "worker"));
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(20, 60_000)
            .child(ChildSpec::worker("perm", "worker"))
            .child(ChildSpec::worker("trans", "worker").restart(RestartType::Transient))
            .child(ChildSpec::worker("temp", "worker").restart(RestartType::Temporary))
            .child(ChildSpec::supervisor("sub", nested)),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

const NAMES: [&str; 5] = [
    "jobs/perm",
    "jobs/trans",
    "jobs/temp",
    "jobs/sub/n1",
    "jobs/sub/n2",
];

type Addrs = Arc<Mutex<BTreeMap<String, Addr<Worker>>>>;

fn factories(host: Member, census: &Census, addrs: &Addrs) -> Factories {
    let census = census.clone();
    let addrs = addrs.clone();
    Factories::new().worker("worker", move |ctx: &ChildContext| {
        let addr = Worker {
            name: ctx.name.clone(),
            host,
            census: census.clone(),
            ctx: ctx.clone(),
        }
        .start();
        addrs.lock().unwrap().insert(ctx.name.clone(), addr.clone());
        Child::new(addr)
    })
}

struct Member3 {
    process: SimProcess,
    group: Group,
}

async fn start(cluster: &SimCluster, node: u32, census: &Census, addrs: &Addrs) -> Member3 {
    let process = cluster.process(NodeId(node)).unwrap();
    let name = GroupName::new("supervised").unwrap();
    let group = Group::start(process.join(&name).unwrap(), GroupConfig::default())
        .await
        .unwrap();
    group
        .start_tree("jobs", spec(), factories(group.local(), census, addrs))
        .await
        .unwrap();
    Member3 { process, group }
}

/// Waits until the census satisfies `pred` (the runtimes act asynchronously).
async fn until(census: &Census, what: &str, pred: impl Fn(&BTreeMap<String, Vec<Member>>) -> bool) {
    for _ in 0..500 {
        if pred(&census.snapshot()) {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {what}; census {:?}", census.snapshot());
}

fn each_once(m: &BTreeMap<String, Vec<Member>>, names: &[&str], alive: &[Member]) -> bool {
    names.iter().all(|n| {
        m.get(*n)
            .is_some_and(|hosts| hosts.len() == 1 && alive.contains(&hosts[0]))
    }) && m.values().all(|h| h.len() <= 1)
}

/// Three members, one per node, running the tree with every child once.
struct Three {
    cluster: SimCluster,
    census: Census,
    addrs: Addrs,
    members: Vec<Member3>,
    all: Vec<Member>,
}

async fn three() -> Three {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let addrs = Addrs::default();
    let mut members = Vec::new();
    for node in 1..=3 {
        members.push(start(&cluster, node, &census, &addrs).await);
    }
    let all: Vec<Member> = members.iter().map(|m| m.group.local()).collect();
    until(&census, "every child runs once", |m| {
        each_once(m, &NAMES, &all)
    })
    .await;
    Three {
        cluster,
        census,
        addrs,
        members,
        all,
    }
}

#[actix_rt::test]
async fn children_run_once_and_move_when_their_host_is_killed() {
    let Three {
        cluster,
        census,
        members,
        all,
        ..
    } = three().await;

    // Every member agrees where each child runs, and the registry says so.
    let a = members[0].group.children().await.unwrap();
    let b = members[2].group.children().await.unwrap();
    assert_eq!(a, b);
    let perm_host = census.snapshot()["jobs/perm"][0];
    assert_eq!(
        members[1].group.lookup("jobs/perm").await.unwrap(),
        None,
        "workers without handlers are not registered"
    );

    // Kill the process hosting `perm`: each of its children restarts once,
    // elsewhere.
    let victim = members
        .iter()
        .position(|m| m.group.local() == perm_host)
        .unwrap();
    let lost: Vec<String> = census
        .snapshot()
        .iter()
        .filter(|(_, h)| h[0] == perm_host)
        .map(|(n, _)| n.clone())
        .collect();
    let restarts = Arc::new(Mutex::new(Vec::new()));
    let mut events = members[(victim + 1) % 3].group.supervision_events();
    // The victim's runtime sees its connection close and stops its actors
    // (they live in this test process too).
    cluster
        .kill_process(members[victim].process.member())
        .unwrap();
    let survivors: Vec<Member> = all.iter().copied().filter(|m| *m != perm_host).collect();
    until(&census, "lost children run again on survivors", |m| {
        each_once(m, &NAMES, &survivors)
    })
    .await;
    while let Ok(e) = events.try_recv() {
        if let actix_cpg::supervisor::SupervisionEvent::ChildRestarted { path, .. } = e {
            restarts.lock().unwrap().push(path.to_string());
        }
    }
    let restarts = restarts.lock().unwrap().clone();
    for n in &lost {
        assert_eq!(
            restarts.iter().filter(|r| *r == n).count(),
            1,
            "{n} restarted exactly once: {restarts:?}"
        );
    }
}

#[actix_rt::test]
async fn exits_follow_restart_types() {
    let Three {
        census,
        addrs,
        members,
        ..
    } = three().await;

    let send = |name: &str, normal: bool| {
        addrs.lock().unwrap()[name].do_send(Exit { normal });
    };
    // A transient child that exits normally stays down.
    send("jobs/trans", true);
    until(&census, "trans stays down", |m| {
        !m.contains_key("jobs/trans")
    })
    .await;
    // A temporary child that crashes stays down.
    send("jobs/temp", false);
    until(&census, "temp stays down", |m| !m.contains_key("jobs/temp")).await;
    // A permanent child that exits normally comes back.
    send("jobs/perm", true);
    until(&census, "perm is back", |m| {
        m.get("jobs/perm").is_some_and(|h| h.len() == 1)
    })
    .await;
    // one_for_all in the nested supervisor: n1 crashing restarts n2 too.
    let before = members[0].group.children().await.unwrap();
    send("jobs/sub/n1", false);
    until(&census, "n1 and n2 run again", |m| {
        ["jobs/sub/n1", "jobs/sub/n2"]
            .iter()
            .all(|n| m.get(*n).is_some_and(|h| h.len() == 1))
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let after = members[0].group.children().await.unwrap();
    let inc = |list: &[actix_cpg::supervisor::ChildStatus], id: &str| {
        list.iter()
            .find(|c| c.path.ids.last().map(String::as_str) == Some(id))
            .map(|c| format!("{:?}", c.status))
    };
    assert_ne!(
        inc(&before, "n2"),
        inc(&after, "n2"),
        "n2 got a new incarnation"
    );
    assert!(inc(&before, "perm").is_some());
}

#[actix_rt::test]
async fn a_minority_stops_its_children_and_a_merge_leaves_no_duplicate() {
    let Three {
        cluster,
        census,
        members,
        all,
        ..
    } = three().await;

    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .unwrap();
    let majority = &all[..2];
    until(
        &census,
        "the majority runs everything; node 3 runs nothing",
        |m| each_once(m, &NAMES, majority),
    )
    .await;

    cluster.heal();
    until(
        &census,
        "after the merge every child runs exactly once",
        |m| each_once(m, &NAMES, &all),
    )
    .await;
    // And it stays that way.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert!(
        each_once(&census.snapshot(), &NAMES, &all),
        "{:?}",
        census.snapshot()
    );
    let views: Vec<_> = futures::future::join_all(members.iter().map(|m| m.group.children())).await;
    assert_eq!(views[0].as_ref().unwrap(), views[1].as_ref().unwrap());
    assert_eq!(views[0].as_ref().unwrap(), views[2].as_ref().unwrap());
}

#[actix_rt::test]
async fn a_graceful_leave_keeps_transient_children_down_and_moves_permanent_ones() {
    let Three {
        census,
        members,
        all,
        ..
    } = three().await;
    let trans_host = census.snapshot()["jobs/trans"][0];
    let leaver = members
        .iter()
        .position(|m| m.group.local() == trans_host)
        .unwrap();
    let moved: Vec<String> = census
        .snapshot()
        .iter()
        .filter(|(_, h)| h[0] == trans_host)
        .map(|(n, _)| n.clone())
        .collect();
    members[leaver].group.leave().await.unwrap();
    let survivors: Vec<Member> = all.iter().copied().filter(|m| *m != trans_host).collect();
    let expected: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| *n != "jobs/trans" && !(*n == "jobs/temp" && moved.iter().any(|m| m == n)))
        .collect();
    until(
        &census,
        "permanent children moved, transient stays down",
        |m| each_once(m, &expected, &survivors) && !m.contains_key("jobs/trans"),
    )
    .await;
}

#[actix_rt::test]
async fn a_different_spec_under_the_same_name_is_refused() {
    let cluster = SimCluster::new(2);
    let census = Census::default();
    let addrs = Addrs::default();
    let first = start(&cluster, 1, &census, &addrs).await;
    let name = GroupName::new("supervised").unwrap();
    let second = Group::start(
        cluster.process(NodeId(2)).unwrap().join(&name).unwrap(),
        GroupConfig::default(),
    )
    .await
    .unwrap();
    let other = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("x", "worker")),
    );
    let refused = second
        .start_tree("jobs", other, factories(second.local(), &census, &addrs))
        .await;
    // The cause is typed, and chained for error reporters.
    let Err(error @ actix_cpg::GroupError::TreeRefused(Refusal::SpecMismatch { .. })) = &refused
    else {
        panic!("{refused:?}");
    };
    let cause = std::error::Error::source(error).expect("a source");
    assert!(cause.to_string().contains("another spec"), "{cause}");
    // The first spec keeps running, and the refused member can still join
    // the tree with the right one.
    second
        .start_tree("jobs", spec(), factories(second.local(), &census, &addrs))
        .await
        .unwrap();
    let all = [first.group.local(), second.local()];
    until(&census, "every child runs once", |m| {
        each_once(m, &NAMES, &all)
    })
    .await;
}

/// Panics in a handler.
#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("worker failure on purpose");
    }
}

#[actix_rt::test]
async fn a_child_that_panics_is_restarted() {
    let Three {
        census,
        addrs,
        members,
        all,
        ..
    } = three().await;
    let before = format!("{:?}", members[0].group.children().await.unwrap());
    let victim = addrs.lock().unwrap()["jobs/perm"].clone();
    victim.do_send(Boom);
    for _ in 0..500 {
        let now = format!("{:?}", members[0].group.children().await.unwrap());
        if now != before && !victim.connected() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!victim.connected(), "the panicking actor is gone");
    until(&census, "perm runs again", |m| each_once(m, &NAMES, &all)).await;
    let fresh = addrs.lock().unwrap()["jobs/perm"].clone();
    assert!(fresh.connected(), "a new incarnation was built");
}

/// Asks an echo actor to answer with the same text.
#[derive(Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "String")]
struct Echo(String);

impl actix_cpg::RemoteMessage for Echo {
    const TYPE_TAG: &'static str = "actix-cpg.testing.Echo";
}

struct EchoWorker;

impl Actor for EchoWorker {
    type Context = Context<Self>;
}

impl Handler<Terminate> for EchoWorker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Echo> for EchoWorker {
    type Result = String;
    fn handle(&mut self, Echo(s): Echo, _: &mut Context<Self>) -> String {
        s
    }
}

fn running_token(
    children: &[actix_cpg::supervisor::ChildStatus],
    id: &str,
) -> Option<actix_cpg::supervisor::FencingToken> {
    children.iter().find_map(|c| match c.status {
        actix_cpg::supervisor::SlotStatus::Running { token, .. }
            if c.path.ids.last().map(String::as_str) == Some(id) =>
        {
            Some(token)
        }
        _ => None,
    })
}

#[actix_rt::test]
async fn a_request_fenced_to_a_stale_incarnation_is_refused() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("fenced").unwrap();
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("svc", "echo")),
    );
    let mut groups = Vec::new();
    let mut processes = Vec::new();
    for node in 1..=3 {
        let process = cluster.process(NodeId(node)).unwrap();
        let g = Group::start(process.join(&name).unwrap(), GroupConfig::default())
            .await
            .unwrap();
        let factories = Factories::new().worker("echo", |_: &ChildContext| {
            Child::serving(actix_cpg::Handlers::new(EchoWorker.start()).with::<Echo>())
        });
        g.start_tree("jobs", spec.clone(), factories).await.unwrap();
        groups.push(g);
        processes.push(process);
    }
    let mut token = None;
    for _ in 0..200 {
        token = running_token(&groups[0].children().await.unwrap(), "svc");
        if token.is_some() && groups[0].lookup("jobs/svc").await.unwrap().is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let old = token.expect("svc runs");
    let host = groups[0]
        .lookup("jobs/svc")
        .await
        .unwrap()
        .expect("svc registered");
    let caller = groups.iter().find(|g| g.local() != host).unwrap().clone();
    let fenced = caller.remote::<Echo>("jobs/svc").fenced(old);
    assert_eq!(fenced.send(Echo("one".into())).await.unwrap(), "one");

    // The host dies; the child restarts elsewhere with a larger token.
    let victim = processes.iter().find(|p| p.member() == host).unwrap();
    cluster.kill_process(victim.member()).unwrap();
    let mut new = None;
    for _ in 0..200 {
        let t = running_token(&caller.children().await.unwrap(), "svc");
        let registered = caller.lookup("jobs/svc").await.unwrap();
        if t.is_some_and(|t| t != old) && registered.is_some_and(|h| h != host) {
            new = t;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let new = new.expect("svc restarted");
    assert!(new > old, "tokens grow: {old} then {new}");
    match fenced.send(Echo("two".into())).await {
        Err(actix_cpg::CallError::StaleIncarnation { fence, .. }) => assert_eq!(fence, old),
        other => panic!("a stale incarnation must be refused, got {other:?}"),
    }
    let current = caller.remote::<Echo>("jobs/svc").fenced(new);
    assert_eq!(current.send(Echo("three".into())).await.unwrap(), "three");
}

async fn member(cluster: &SimCluster, node: u32) -> (SimProcess, Group) {
    let process = cluster.process(NodeId(node)).unwrap();
    let name = GroupName::new("supervised").unwrap();
    let group = Group::start(process.join(&name).unwrap(), GroupConfig::default())
        .await
        .unwrap();
    (process, group)
}

fn one_child(kind: &str) -> TreeSpec {
    TreeSpec::new(SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("w", kind)))
        .quorum_policy(QuorumPolicy::Ignore)
}

/// A member that only uses the registry (a client, a tool) and never
/// starts a tree hosts none of it: with 24 single-child trees started by
/// two members, every child runs on one of those two, and the client's
/// view of the trees agrees.
#[actix_rt::test]
async fn a_member_that_never_starts_a_tree_hosts_none_of_it() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let addrs = Addrs::default();
    let (_p1, g1) = member(&cluster, 1).await;
    let (_p2, g2) = member(&cluster, 2).await;
    let (_p3, client) = member(&cluster, 3).await;
    let names: Vec<String> = (0..24).map(|i| format!("t{i}/w")).collect();
    for i in 0..24 {
        for g in [&g1, &g2] {
            g.start_tree(
                &format!("t{i}"),
                one_child("worker"),
                factories(g.local(), &census, &addrs),
            )
            .await
            .unwrap();
        }
    }
    let hosts = [g1.local(), g2.local()];
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    until(&census, "every child runs once on a host", |m| {
        each_once(m, &wanted, &hosts)
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen = client.children().await.unwrap();
        if seen.len() == 24 && seen.iter().all(|c| c.status != SlotStatus::Pending) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.len(), 24);
    for c in &seen {
        match c.status {
            SlotStatus::Running { host, .. } => {
                assert!(hosts.contains(&host), "{} runs on {host}", c.path)
            }
            s => panic!("{} is {s:?}", c.path),
        }
    }
}

/// A typo in a child's kind is refused by `start_tree` before anything is
/// sent; started without hosting, the child waits, says why, and starts as
/// soon as a member that can build it starts the tree.
#[actix_rt::test]
async fn a_kind_without_a_factory_is_refused_or_waits_and_says_so() {
    let cluster = SimCluster::new(2);
    let census = Census::default();
    let addrs = Addrs::default();
    let (_p1, g1) = member(&cluster, 1).await;
    let (_p2, g2) = member(&cluster, 2).await;
    let refused = g1
        .start_tree(
            "typo",
            one_child("wrker"),
            factories(g1.local(), &census, &addrs),
        )
        .await;
    match refused {
        Err(GroupError::NoFactory { tree, kind }) => {
            assert_eq!((tree.as_str(), kind.as_str()), ("typo", "wrker"))
        }
        other => panic!("expected NoFactory, got {other:?}"),
    }
    assert!(g1.children().await.unwrap().is_empty(), "nothing was sent");

    let mut events = g1.supervision_events();
    g1.start_tree_without_hosting("idle", one_child("worker"))
        .await
        .unwrap();
    let waits = loop {
        match events.recv().await.unwrap() {
            SupervisionEvent::ChildWaitsForHost { path, kind } => break (path, kind),
            _ => continue,
        }
    };
    assert_eq!(waits.0.to_string(), "idle/w");
    assert_eq!(waits.1, "worker");
    let status = g1.children().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].status, SlotStatus::Pending);
    assert!(census.snapshot().is_empty());

    g2.start_tree(
        "idle",
        one_child("worker"),
        factories(g2.local(), &census, &addrs),
    )
    .await
    .unwrap();
    until(
        &census,
        "the child runs on the member that can build it",
        |m| each_once(m, &["idle/w"], &[g2.local()]),
    )
    .await;
}

/// Stops the actor that receives it, as a crash.
#[derive(Message, serde::Serialize, serde::Deserialize, actix_cpg::RemoteMessage)]
#[rtype(result = "()")]
#[remote(tag = "actix-cpg.testing.Crash")]
struct Crash;

/// Answers `Echo` and stops on `Crash`; it has no `Terminate` handler, and
/// counts its stops.
struct Plain(Arc<Mutex<u32>>);

impl Actor for Plain {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        *self.0.lock().unwrap() += 1;
    }
}

impl Handler<Echo> for Plain {
    type Result = String;
    fn handle(&mut self, Echo(s): Echo, _: &mut Context<Self>) -> String {
        s
    }
}

impl Handler<Crash> for Plain {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[actix_rt::test]
async fn children_started_by_the_library_are_stopped_by_the_engine_without_a_terminate_handler() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("started").unwrap();
    // one_for_all: `b` crashing makes the engine stop `a` and start both.
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForAll)
            .intensity(10, 60_000)
            .child(ChildSpec::worker("a", "plain"))
            .child(ChildSpec::worker("b", "plain")),
    );
    let stops = Arc::new(Mutex::new(0));
    let mut groups = Vec::new();
    for node in 1..=3 {
        let process = cluster.process(NodeId(node)).unwrap();
        let g = Group::start(process.join(&name).unwrap(), GroupConfig::default())
            .await
            .unwrap();
        let stops = stops.clone();
        let factories = Factories::new().worker("plain", move |_: &ChildContext| {
            Child::start_serving(Plain(stops.clone()), |h| h.with::<Echo>().with::<Crash>())
        });
        g.start_tree("jobs", spec.clone(), factories).await.unwrap();
        groups.push(g);
    }
    let caller = &groups[0];
    let mut old = None;
    for _ in 0..200 {
        let children = caller.children().await.unwrap();
        let both = running_token(&children, "a").zip(running_token(&children, "b"));
        if both.is_some() && caller.lookup("jobs/b").await.unwrap().is_some() {
            old = both;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let (old_a, old_b) = old.expect("a and b run");
    let echo = caller.remote::<Echo>("jobs/a");
    assert_eq!(echo.send(Echo("one".into())).await.unwrap(), "one");

    // Placement may have moved a child while the members announced
    // themselves: count from here.
    let stops_before = *stops.lock().unwrap();
    caller.remote::<Crash>("jobs/b").tell(Crash).await.unwrap();
    let mut new = None;
    for _ in 0..300 {
        let children = caller.children().await.unwrap();
        let both = running_token(&children, "a").zip(running_token(&children, "b"));
        if both.is_some_and(|(a, b)| a > old_a && b > old_b) {
            new = both;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    new.expect("a and b restarted");
    // The engine starts the new incarnations without waiting for the old
    // `a` to finish stopping.
    let stopped = || *stops.lock().unwrap() - stops_before;
    for _ in 0..200 {
        if stopped() >= 2 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stopped(), 2, "b crashed, the engine stopped a");
    let mut answer = echo.send(Echo("two".into())).await;
    for _ in 0..200 {
        if answer.is_ok() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
        answer = echo.send(Echo("two".into())).await;
    }
    assert_eq!(answer.unwrap(), "two", "the new `a` answers by name");
}

/// An observer sees the registry and the trees of a group and can look
/// names up, but registers nothing, starts no tree and hosts nothing.
#[actix_rt::test]
async fn an_observer_sees_the_trees_and_takes_no_part() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let addrs = Addrs::default();
    let (_p1, g1) = member(&cluster, 1).await;
    let (_p2, g2) = member(&cluster, 2).await;
    let process = cluster.process(NodeId(3)).unwrap();
    let observer = Group::start(
        process
            .join(&GroupName::new("supervised").unwrap())
            .unwrap(),
        GroupConfig {
            role: Role::Observer,
            ..GroupConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(observer.role(), Role::Observer);
    for g in [&g1, &g2] {
        g.start_tree("jobs", spec(), factories(g.local(), &census, &addrs))
            .await
            .unwrap();
    }
    let hosts = [g1.local(), g2.local()];
    until(&census, "every child runs once on a participant", |m| {
        each_once(m, &NAMES, &hosts)
    })
    .await;
    // The observer's view of the tree: every child running, on a
    // participant.
    let mut running = Vec::new();
    for _ in 0..500 {
        running = observer
            .children()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| match c.status {
                SlotStatus::Running { host, .. } => Some(host),
                _ => None,
            })
            .collect();
        if running.len() == NAMES.len() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running.len(), NAMES.len());
    assert!(running.iter().all(|h| hosts.contains(h)), "{running:?}");
    assert!(matches!(
        observer
            .start_tree("jobs", spec(), factories(observer.local(), &census, &addrs))
            .await,
        Err(GroupError::Observer)
    ));
    assert!(matches!(
        observer.start_tree_without_hosting("other", spec()).await,
        Err(GroupError::Observer)
    ));
    let handlers = Handlers::new(Plain(Arc::default()).start()).with::<Echo>();
    assert!(matches!(
        observer.register("mine", handlers).await,
        Err(GroupError::Observer)
    ));
    assert_eq!(observer.metrics().refused(), 0, "it sent nothing to refuse");
    assert_eq!(g1.metrics().refused_observer, 0);
}

/// `start_tree` resolves once this member's own start is in: the engine
/// places children here from then on, so a per-member child has a slot
/// for it in the state the member reads right after.
#[actix_rt::test]
async fn a_start_resolves_once_this_member_hosts_the_tree() {
    let cluster = SimCluster::new(2);
    let census = Census::default();
    let addrs = Addrs::default();
    let (_p1, g1) = member(&cluster, 1).await;
    let (_p2, g2) = member(&cluster, 2).await;
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne).child(
            ChildSpec::worker("agent", "worker")
                .placement(actix_cpg::supervisor::Placement::on_every_member()),
        ),
    )
    .quorum_policy(QuorumPolicy::Ignore);
    g1.start_tree(
        "every",
        spec.clone(),
        factories(g1.local(), &census, &addrs),
    )
    .await
    .unwrap();
    until(&census, "the first host runs its instance", |m| {
        !m.is_empty()
    })
    .await;
    // The second member's own start cannot come back while its process
    // delivers nothing, though the tree runs already.
    cluster.pause_process(g2.local()).unwrap();
    let start = {
        let (g2, factories) = (g2.clone(), factories(g2.local(), &census, &addrs));
        actix::spawn(async move { g2.start_tree("every", spec, factories).await })
    };
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert!(!start.is_finished(), "resolved before its own start was in");
    cluster.resume_process(g2.local()).unwrap();
    start.await.unwrap().unwrap();
    let slots: Vec<_> = g2
        .children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.slot)
        .collect();
    assert!(
        slots.contains(&actix_cpg::supervisor::SlotKey::Member(g2.local())),
        "{slots:?}"
    );
}
