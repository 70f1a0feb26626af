//! What the library logs, read back through a `tracing` subscriber on the
//! sim backend: every line of a runtime names its group and member, a
//! call is one `request` value on its caller and on its host, and the
//! decisions (confchgs, supervision restarts) are at `info` with their
//! reason.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::supervisor::{
    ChildSpec, QuorumPolicy, SlotStatus, Strategy, SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupName, Handlers, NodeId, RemoteMessage,
    Terminate, Transport,
};
use serde::{Deserialize, Serialize};

use crate::support::simulated;
use simulated::simulated;

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
struct Ping;

impl RemoteMessage for Ping {
    const TYPE_TAG: &'static str = "test.spans.Ping";
}

/// Stops the actor that gets it (a child's failure).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Fail;

impl RemoteMessage for Fail {
    const TYPE_TAG: &'static str = "test.spans.Fail";
}

struct Pong;

impl Actor for Pong {
    type Context = Context<Self>;
}

impl Handler<Ping> for Pong {
    type Result = u32;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 {
        7
    }
}

impl Handler<Fail> for Pong {
    type Result = ();
    fn handle(&mut self, _: Fail, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Terminate> for Pong {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Everything logged, as the `fmt` subscriber writes it (no colours).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("not poisoned").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `scenario` on simulated time with a subscriber at `debug` for the
/// library, and returns what it logged.
fn logged(scenario: impl std::future::Future<Output = ()>) -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // The sim runtime runs on this thread: every actor logs through it.
    tracing::subscriber::with_default(subscriber, || simulated().block_on(scenario));
    captured.lines()
}

async fn members(cluster: &SimCluster, name: &str, nodes: u32) -> Vec<Group> {
    let group = GroupName::new(name).expect("valid group name");
    let mut groups = Vec::new();
    for node in 1..=nodes {
        let conn = cluster
            .process(NodeId(node))
            .expect("node is up")
            .join(&group)
            .expect("joined");
        groups.push(
            Group::start(conn, GroupConfig::default())
                .await
                .expect("a member becomes ready"),
        );
    }
    groups
}

/// The value of `field=` in `line`, up to the next space, `}` or `:`.
fn field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let rest = &line[start..];
    let end = rest.find([' ', '}', ':']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn a_call_is_one_request_value_on_its_caller_and_on_its_host() {
    let mut members_seen = Vec::new();
    let lines = logged(async {
        let cluster = SimCluster::new(2);
        let groups = members(&cluster, "spans", 2).await;
        let (host, caller) = (&groups[0], &groups[1]);
        host.register("pong", Handlers::new(Pong.start()).with::<Ping>())
            .await
            .unwrap();
        caller.wait_for_name("pong").await.unwrap();
        assert_eq!(caller.remote::<Ping>("pong").send(Ping).await, Ok(7));
        members_seen = vec![host.local(), caller.local()];
    });
    let (host, caller) = (members_seen[0], members_seen[1]);

    let done = lines
        .iter()
        .find(|l| l.contains("acpg.call{") && l.contains("call done"))
        .unwrap_or_else(|| panic!("no caller line in {lines:#?}"));
    let request = field(done, "request").expect("the caller's span names the request");
    assert!(
        request.starts_with(&format!("{caller}#")),
        "{request} is the caller's"
    );
    assert!(
        done.contains("target=\"pong\"") || done.contains("target=pong"),
        "{done}"
    );
    assert!(done.contains("test.spans.Ping"), "{done}");

    let replying = lines
        .iter()
        .find(|l| l.contains("acpg.request{") && l.contains("replying"))
        .unwrap_or_else(|| panic!("no host line in {lines:#?}"));
    assert_eq!(field(replying, "request"), Some(request), "{replying}");
    assert!(replying.contains("protocol"), "{replying}");
    assert!(replying.contains("group=spans"), "{replying}");
    assert_eq!(
        field(replying, "member"),
        Some(host.to_string().as_str()),
        "the host's runtime span: {replying}"
    );
}

#[test]
fn every_runtime_line_names_its_group_and_member_and_confchgs_are_info() {
    let lines = logged(async {
        let cluster = SimCluster::new(2);
        let _groups = members(&cluster, "lines", 2).await;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    });
    let confchgs: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("confchg: ") && l.contains("joined"))
        .collect();
    assert!(!confchgs.is_empty(), "{lines:#?}");
    for line in &confchgs {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("group=lines"), "{line}");
        assert!(field(line, "member").is_some(), "{line}");
    }
    // Every line the library logs inside a runtime carries the runtime span.
    for line in lines
        .iter()
        .filter(|l| l.contains("actix_cpg::group::runtime"))
    {
        assert!(
            line.contains("acpg{"),
            "a runtime line outside its span: {line}"
        );
    }
}

#[test]
fn a_restart_is_logged_at_info_after_the_exit_that_caused_it() {
    let lines = logged(async {
        let cluster = SimCluster::new(1);
        let groups = members(&cluster, "restarts", 1).await;
        let group = &groups[0];
        let spec = TreeSpec::new(
            SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("pong", "pong")),
        )
        .quorum_policy(QuorumPolicy::Ignore);
        let factories = Factories::new().worker("pong", |_: &ChildContext| {
            Child::serving(Handlers::new(Pong.start()).with::<Ping>().with::<Fail>())
        });
        group.start_tree("jobs", spec, factories).await.unwrap();
        let running = |group: &Group| {
            let group = group.clone();
            async move {
                loop {
                    let children = group.children().await.unwrap();
                    if let Some(SlotStatus::Running { incarnation, .. }) =
                        children.first().map(|c| c.status)
                    {
                        return incarnation;
                    }
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let first = running(group).await;
        group.wait_for_name("jobs/pong").await.unwrap();
        group.remote::<Fail>("jobs/pong").tell(Fail).await.unwrap();
        loop {
            if running(group).await != first {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // The new incarnation can show in the status before the restart's
        // event is published and logged: let the runtime finish its turn
        // (the clock is paused, so this costs no time).
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    });
    let exited = lines
        .iter()
        .position(|l| {
            l.contains(" INFO ") && l.contains("jobs/pong #0") && l.contains("ended: crash")
        })
        .unwrap_or_else(|| panic!("no exit line in {lines:#?}"));
    let restarted = lines
        .iter()
        .position(|l| l.contains(" INFO ") && l.contains("jobs/pong") && l.contains("restarted"))
        .unwrap_or_else(|| panic!("no restart line in {lines:#?}"));
    assert!(exited < restarted, "{lines:#?}");
    assert!(
        lines[restarted].contains("group=restarts"),
        "{}",
        lines[restarted]
    );
}

#[test]
fn an_election_logs_its_leader_at_info_in_its_own_span() {
    use actix_cpg::{Election, ElectionConfig, GROUP_ELECTION};
    let lines = logged(async {
        let cluster = SimCluster::new(2);
        let name = GroupName::new("chosen").unwrap();
        let mut elections = Vec::new();
        for node in 1..=2 {
            let conn = cluster.process(NodeId(node)).unwrap().join(&name).unwrap();
            elections.push(
                Election::start(conn, ElectionConfig::default())
                    .await
                    .unwrap(),
            );
        }
        for election in &elections {
            election.wait_leader(GROUP_ELECTION).await.unwrap();
        }
    });
    let elected: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" INFO ") && l.contains("protocol=election"))
        .filter(|l| l.to_lowercase().contains("leader") || l.contains("elected"))
        .collect();
    assert!(!elected.is_empty(), "{lines:#?}");
    for line in elected {
        assert!(line.contains("group=chosen"), "{line}");
    }
}
