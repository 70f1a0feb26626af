//! Calls that end, on the sim backend and simulated time: a call to a host
//! that never answers times out and leaves nothing behind, a late reply is
//! ignored, waiting for a name resolves when the registry holds it (or
//! fails when the member leaves), supervised children are reachable under
//! the names their status gives, and a message evolves under a new type
//! tag beside old builds with every mismatch a clear `CallError`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{
    ChildSpec, Placement, PlacementPolicy, QuorumPolicy, SlotStatus, Strategy, SupervisorSpec,
    TreeSpec,
};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    CallError, Child, ChildContext, Factories, Group, GroupConfig, GroupError, GroupName, Handlers,
    NodeId, RemoteFailure, RemoteMessage, Terminate, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::support::simulated;
use simulated::simulated;

// ---- messages and actors ---------------------------------------------------

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Ask;

impl RemoteMessage for Ask {
    const TYPE_TAG: &'static str = "test.calls.Ask";
}

/// Answers each `Ask` with 7 once it gets a permit: none given, it never
/// answers; given after the caller gave up, its reply comes late.
struct Gated(Arc<Semaphore>);

impl Actor for Gated {
    type Context = Context<Self>;
}

impl Handler<Ask> for Gated {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, _: Ask, _: &mut Context<Self>) -> Self::Result {
        let permits = self.0.clone();
        Box::pin(async move {
            permits.acquire().await.expect("never closed").forget();
            7
        })
    }
}

/// Answers at once, with where it runs; a supervised child too.
struct Echo(u64);

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ask> for Echo {
    type Result = u64;
    fn handle(&mut self, _: Ask, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

impl Handler<Terminate> for Echo {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The first shape of `Add`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct AddV1(u64);

impl RemoteMessage for AddV1 {
    const TYPE_TAG: &'static str = "app.Add.v1";
}

/// Its next shape, under a tag of its own.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct AddV2 {
    n: u64,
    times: u64,
}

impl RemoteMessage for AddV2 {
    const TYPE_TAG: &'static str = "app.Add.v2";
}

/// The mistake the guide warns of: a field added under the old tag.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct AddV1Changed {
    n: u64,
    note: String,
}

impl RemoteMessage for AddV1Changed {
    const TYPE_TAG: &'static str = "app.Add.v1";
}

/// A type no build hosts.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Unknown;

impl RemoteMessage for Unknown {
    const TYPE_TAG: &'static str = "app.Unknown.v1";
}

/// An old build's counter: v1 only.
#[derive(Default)]
struct OldCounter(u64);

impl Actor for OldCounter {
    type Context = Context<Self>;
}

impl Handler<AddV1> for OldCounter {
    type Result = u64;
    fn handle(&mut self, AddV1(n): AddV1, _: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

/// An upgraded build's counter: v2, and v1 as the v2 it means.
#[derive(Default)]
struct Counter(u64);

impl Counter {
    fn add(&mut self, n: u64, times: u64) -> u64 {
        self.0 += n * times;
        self.0
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<AddV1> for Counter {
    type Result = u64;
    fn handle(&mut self, AddV1(n): AddV1, _: &mut Context<Self>) -> u64 {
        self.add(n, 1)
    }
}

impl Handler<AddV2> for Counter {
    type Result = u64;
    fn handle(&mut self, AddV2 { n, times }: AddV2, _: &mut Context<Self>) -> u64 {
        self.add(n, times)
    }
}

// ---- set-up ------------------------------------------------------------------

const LIMIT: Duration = Duration::from_secs(2);

fn group_name() -> GroupName {
    GroupName::new("calls").expect("valid group name")
}

/// One member per node of `cluster`, in node order.
async fn members(cluster: &SimCluster, nodes: u32, config: &GroupConfig) -> Vec<Group> {
    let mut groups = Vec::new();
    for node in 1..=nodes {
        let conn = cluster
            .process(NodeId(node))
            .expect("node is up")
            .join(&group_name())
            .expect("joined");
        groups.push(
            Group::start(conn, config.clone())
                .await
                .expect("a member becomes ready"),
        );
    }
    groups
}

/// `host` registers `silent`, which never answers, and `echo`; `caller`
/// sees both.
async fn silent_and_echo(host: &Group, caller: &Group) {
    host.register(
        "silent",
        Handlers::new(Gated(Arc::new(Semaphore::new(0))).start()).with::<Ask>(),
    )
    .await
    .unwrap();
    host.register("echo", Handlers::new(Echo(3).start()).with::<Ask>())
        .await
        .unwrap();
    caller.wait_for_name("echo").await.unwrap();
    caller.wait_for_name("silent").await.unwrap();
}

/// Waits until `group`'s runtime has taken every operation asked before
/// (operations are taken in order, and this one answers).
async fn settled(group: &Group) {
    group.members().await.expect("open");
}

// ---- timeouts ----------------------------------------------------------------

#[test]
fn a_call_to_a_host_that_never_replies_times_out_and_is_forgotten() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let (host, caller) = (&groups[0], &groups[1]);
        let never = Arc::new(Semaphore::new(0));
        host.register("silent", Handlers::new(Gated(never).start()).with::<Ask>())
            .await
            .unwrap();
        caller.wait_for_name("silent").await.unwrap();

        let addr = caller.remote::<Ask>("silent").timeout(LIMIT);
        let call = actix::spawn(addr.send(Ask));
        actix_rt::time::sleep(LIMIT / 2).await;
        let during = caller.metrics();
        assert_eq!((during.calls_outstanding, during.replies_awaited), (1, 1));

        assert_eq!(call.await.unwrap(), Err(CallError::Timeout(LIMIT)));
        settled(caller).await;
        let after = caller.metrics();
        assert_eq!(after.calls_outstanding, 0, "{after:?}");
        assert_eq!(after.replies_awaited, 0, "{after:?}");
        assert_eq!(after.calls_abandoned, 1, "{after:?}");

        // The per-call bound, on an address without one.
        let once = caller
            .remote::<Ask>("silent")
            .send_timeout(Ask, LIMIT * 2)
            .await;
        assert_eq!(once, Err(CallError::Timeout(LIMIT * 2)));
        settled(caller).await;
        let after = caller.metrics();
        assert_eq!((after.replies_awaited, after.calls_abandoned), (0, 2));
    });
}

#[test]
fn the_configured_call_timeout_bounds_every_send() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let config = GroupConfig {
            call_timeout: Some(LIMIT),
            ..GroupConfig::default()
        };
        let groups = members(&cluster, 2, &config).await;
        let (host, caller) = (&groups[0], &groups[1]);
        silent_and_echo(host, caller).await;

        let silent = caller.remote::<Ask>("silent");
        assert_eq!(silent.send(Ask).await, Err(CallError::Timeout(LIMIT)));
        // An address's own bound wins over the configured one.
        let longer = silent.clone().timeout(LIMIT * 3);
        assert_eq!(longer.send(Ask).await, Err(CallError::Timeout(LIMIT * 3)));
        // A call that is answered is not affected.
        assert_eq!(caller.remote::<Ask>("echo").send(Ask).await, Ok(3));
        settled(caller).await;
        assert_eq!(caller.metrics().replies_awaited, 0);
    });
}

#[test]
fn a_reply_after_the_timeout_is_ignored_quietly() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let (host, caller) = (&groups[0], &groups[1]);
        let permits = Arc::new(Semaphore::new(0));
        host.register(
            "gated",
            Handlers::new(Gated(permits.clone()).start()).with::<Ask>(),
        )
        .await
        .unwrap();
        caller.wait_for_name("gated").await.unwrap();
        let addr = caller.remote::<Ask>("gated");

        assert_eq!(
            addr.send_timeout(Ask, LIMIT).await,
            Err(CallError::Timeout(LIMIT))
        );
        // The late reply goes out first (the permits go in order), then the
        // second call's: once that is back, the late one was delivered.
        permits.add_permits(2);
        assert_eq!(addr.send(Ask).await, Ok(7));

        settled(caller).await;
        let m = caller.metrics();
        assert_eq!(m.refused(), 0, "a late reply is no forgery: {m:?}");
        assert_eq!(m.dropped(), 0, "{m:?}");
        assert_eq!((m.calls_outstanding, m.replies_awaited), (0, 0), "{m:?}");
        assert_eq!(m.calls_abandoned, 1);
    });
}

#[test]
fn a_call_given_up_before_its_request_came_back_leaves_nothing_behind() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let (host, caller) = (&groups[0], &groups[1]);
        silent_and_echo(host, caller).await;
        let silent = caller.remote::<Ask>("silent");

        // The caller's process delivers nothing while paused: its requests
        // reach the host but not its own core until the calls have long
        // been given up. Had they started a wait then, nothing would ever
        // end it.
        cluster.pause_process(caller.local()).unwrap();
        assert_eq!(
            silent.send_timeout(Ask, LIMIT).await,
            Err(CallError::Timeout(LIMIT))
        );
        // Dropped before it is ever polled: given up as well.
        drop(silent.send(Ask));
        settled(caller).await;
        cluster.resume_process(caller.local()).unwrap();

        // Once this is answered, both requests have come back.
        assert_eq!(caller.remote::<Ask>("echo").send(Ask).await, Ok(3));
        settled(caller).await;
        let m = caller.metrics();
        assert_eq!(m.refused(), 0, "{m:?}");
        assert_eq!((m.calls_outstanding, m.replies_awaited), (0, 0), "{m:?}");
        assert_eq!(m.calls_abandoned, 2);
    });
}

// ---- waiting for a name --------------------------------------------------------

#[test]
fn waiting_for_a_name_already_there_resolves_at_once() {
    simulated().block_on(async {
        let cluster = SimCluster::new(1);
        let groups = members(&cluster, 1, &GroupConfig::default()).await;
        let a = &groups[0];
        a.register("here", Handlers::new(Echo(1).start()).with::<Ask>())
            .await
            .unwrap();
        assert_eq!(a.wait_for_name("here").await, Ok(a.local()));
    });
}

#[test]
fn waiting_for_a_name_resolves_when_another_member_registers_it() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let (a, b) = (groups[0].clone(), groups[1].clone());
        let waiting = {
            let b = b.clone();
            actix::spawn(async move { b.wait_for_name("later").await })
        };
        // Let the wait start and find nothing first.
        actix_rt::time::sleep(LIMIT).await;
        assert!(!waiting.is_finished());

        a.register("later", Handlers::new(Echo(1).start()).with::<Ask>())
            .await
            .unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(a.local()));
        assert_eq!(b.lookup("later").await, Ok(Some(a.local())));
    });
}

#[test]
fn waiting_for_a_name_fails_with_closed_when_the_member_leaves() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let b = groups[1].clone();
        let waiting = {
            let b = b.clone();
            actix::spawn(async move { b.wait_for_name("never").await })
        };
        actix_rt::time::sleep(LIMIT).await;
        b.leave().await.unwrap();
        assert_eq!(waiting.await.unwrap(), Err(GroupError::Closed));
        assert_eq!(b.wait_for_name("never").await, Err(GroupError::Closed));
    });
}

#[test]
fn a_running_childs_status_names_it_in_the_registry() {
    simulated().block_on(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, 2, &GroupConfig::default()).await;
        let spec = TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::worker("single", "echo"))
                .child(
                    ChildSpec::worker("agent", "echo")
                        .placement(Placement::new(PlacementPolicy::OnePerNode)),
                )
                .child(
                    ChildSpec::worker("probe", "echo")
                        .placement(Placement::new(PlacementPolicy::OnEveryMember)),
                )
                .child(ChildSpec::supervisor(
                    "pool",
                    SupervisorSpec::new(Strategy::OneForOne)
                        .child(ChildSpec::worker("indexer", "echo")),
                )),
        )
        .quorum_policy(QuorumPolicy::Ignore);
        for (i, group) in groups.iter().enumerate() {
            let node = i as u64 + 1;
            let factories = Factories::new().worker("echo", move |_: &ChildContext| {
                Child::serving(Handlers::new(Echo(node).start()).with::<Ask>())
            });
            group
                .start_tree("jobs", spec.clone(), factories)
                .await
                .unwrap();
        }

        let caller = &groups[1];
        let mut running = Vec::new();
        while running.len() < 6 {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            running = caller
                .children()
                .await
                .unwrap()
                .into_iter()
                .filter(|c| matches!(c.status, SlotStatus::Running { .. }))
                .collect();
        }
        let mut names = Vec::new();
        for child in &running {
            let SlotStatus::Running { host, .. } = child.status else {
                unreachable!("filtered")
            };
            let name = child.name();
            assert_eq!(caller.wait_for_name(&name).await, Ok(host), "{name}");
            let answer = caller.remote::<Ask>(&name).send(Ask).await;
            assert_eq!(answer, Ok(u64::from(host.node.0)), "{name}");
            names.push(name);
        }
        names.sort();
        let members: Vec<_> = groups.iter().map(Group::local).collect();
        let mut expected = vec![
            "jobs/agent@node1".to_owned(),
            "jobs/agent@node2".to_owned(),
            "jobs/pool/indexer".to_owned(),
            format!("jobs/probe@{}", members[0]),
            format!("jobs/probe@{}", members[1]),
            "jobs/single".to_owned(),
        ];
        expected.sort();
        assert_eq!(names, expected);
    });
}

// ---- evolving a message --------------------------------------------------------

#[test]
fn a_new_shape_under_a_new_tag_lives_beside_old_builds() {
    simulated().block_on(async {
        let cluster = SimCluster::new(3);
        let groups = members(&cluster, 3, &GroupConfig::default()).await;
        let (old, new, caller) = (&groups[0], &groups[1], &groups[2]);
        old.register(
            "old-counter",
            Handlers::new(OldCounter::default().start()).with::<AddV1>(),
        )
        .await
        .unwrap();
        new.register(
            "counter",
            Handlers::new(Counter::default().start())
                .with::<AddV1>()
                .with::<AddV2>(),
        )
        .await
        .unwrap();
        caller.wait_for_name("old-counter").await.unwrap();
        caller.wait_for_name("counter").await.unwrap();

        // A v1 caller reaches every build.
        assert_eq!(
            caller.remote::<AddV1>("old-counter").send(AddV1(1)).await,
            Ok(1)
        );
        assert_eq!(
            caller.remote::<AddV1>("counter").send(AddV1(1)).await,
            Ok(1)
        );
        // A v2 caller reaches upgraded builds, and is told plainly by an old
        // one, which handled nothing.
        assert_eq!(
            caller
                .remote::<AddV2>("counter")
                .send(AddV2 { n: 2, times: 3 })
                .await,
            Ok(7)
        );
        assert_eq!(
            caller
                .remote::<AddV2>("old-counter")
                .send(AddV2 { n: 2, times: 3 })
                .await,
            Err(CallError::Remote(RemoteFailure::UnknownType(
                "app.Add.v2".into()
            )))
        );
        // A tag nobody accepts under the name.
        assert_eq!(
            caller.remote::<Unknown>("counter").send(Unknown).await,
            Err(CallError::Remote(RemoteFailure::UnknownType(
                "app.Unknown.v1".into()
            )))
        );
        // A shape changed under the old tag does not decode, on either build.
        for name in ["counter", "old-counter"] {
            let changed = caller
                .remote::<AddV1Changed>(name)
                .send(AddV1Changed {
                    n: 100,
                    note: "changed".into(),
                })
                .await;
            assert!(
                matches!(
                    changed,
                    Err(CallError::Remote(RemoteFailure::BadPayload(_)))
                ),
                "{name}: {changed:?}"
            );
        }

        // Tells of either kind end once multicast; the host drops them,
        // counts the unknown tags, and keeps serving.
        let unknown = caller.remote::<Unknown>("counter");
        let changed = caller.remote::<AddV1Changed>("counter");
        let note = || AddV1Changed {
            n: 100,
            note: "changed".into(),
        };
        assert_eq!(unknown.tell(Unknown).await, Ok(()));
        assert_eq!(unknown.try_tell(&Unknown), Ok(()));
        assert_eq!(changed.tell(note()).await, Ok(()));
        assert_eq!(changed.try_tell(&note()), Ok(()));
        assert_eq!(
            caller.remote::<AddV1>("counter").send(AddV1(1)).await,
            Ok(8),
            "nothing dropped reached the counter"
        );
        // The host took the tells before this call, in the order.
        assert_eq!(
            new.metrics().dropped_unknown_type,
            3,
            "one call and two tells of an unknown tag"
        );
        assert_eq!(
            new.metrics().dropped_bad_payload,
            3,
            "one call and two tells of a changed shape"
        );
    });
}

// ---- many operations at once -------------------------------------------------

#[test]
fn more_operations_at_once_than_one_turn_takes_are_all_answered() {
    simulated().block_on(async {
        let cluster = SimCluster::new(1);
        let groups = members(&cluster, 1, &GroupConfig::default()).await;
        let group = &groups[0];
        // Each is answered by the runtime itself: no delivery comes back
        // to wake it, so a turn that left operations queued must take
        // them later on its own.
        let asks: Vec<_> = (0..10_000).map(|_| group.members()).collect();
        let started = actix_rt::time::Instant::now();
        let answers = actix_rt::time::timeout(LIMIT, futures::future::join_all(asks))
            .await
            .expect("every operation answered");
        assert!(answers.iter().all(|a| a.is_ok()));
        // Not at the next tick of some timer: at once.
        assert_eq!(started.elapsed(), Duration::ZERO);
    });
}
