//! The `acpg` commands on the sim backend: what `status`, `watch` and
//! `replay` print, as text and as JSON, and how they refuse.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acpg::{Format, Options, ToolError, WatchEnd, WatchLine, Watched};
use actix::prelude::*;
use actix_cpg::group::GroupInspection;
use actix_cpg::record::Replayed;
use actix_cpg::supervisor::{
    ChildSpec, QuorumPolicy, Strategy, SupervisionEvent, SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupEvent, GroupName, Handlers, Member,
    NodeId, Reason, Transport,
};

struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

fn spec() -> TreeSpec {
    let nested = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(20, 60_000)
        .child(ChildSpec::worker("s1", "idle"))
        .child(ChildSpec::worker("s2", "idle"));
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(20, 60_000)
            .child(ChildSpec::worker("a", "idle"))
            .child(ChildSpec::worker("b", "idle"))
            .child(ChildSpec::supervisor("sub", nested)),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

const SLOTS: [&str; 4] = ["jobs/a", "jobs/b", "jobs/sub/s1", "jobs/sub/s2"];

fn factories() -> Factories {
    Factories::new().worker("idle", |_: &ChildContext| Child::start(Idle))
}

/// Three participants running `jobs`, the first also hosting "journal".
struct Running {
    cluster: SimCluster,
    members: Vec<Group>,
}

async fn running(group: &str) -> Running {
    let cluster = SimCluster::new(3);
    let name = GroupName::new(group).unwrap();
    let mut members = Vec::new();
    for node in 1..=3 {
        let process = cluster.process(NodeId(node)).unwrap();
        let g = Group::start(process.join(&name).unwrap(), GroupConfig::default())
            .await
            .unwrap();
        g.start_tree("jobs", spec(), factories()).await.unwrap();
        members.push(g);
    }
    members[0]
        .register("journal", Handlers::new(Idle.start()))
        .await
        .unwrap();
    let all: Vec<Member> = members.iter().map(Group::local).collect();
    until_inspected(&members[0], "every slot runs and the name is in", |s| {
        runs_everything_on(s, &all) && s.names.len() == 1
    })
    .await;
    Running { cluster, members }
}

fn runs_everything_on(seen: &GroupInspection, hosts: &[Member]) -> bool {
    let slots: Vec<_> = seen.slots().collect();
    slots.len() == SLOTS.len()
        && slots
            .iter()
            .all(|s| s.host().is_some_and(|h| hosts.contains(&h)))
}

async fn until_inspected(
    group: &Group,
    what: &str,
    pred: impl Fn(&GroupInspection) -> bool,
) -> GroupInspection {
    for _ in 0..2000 {
        let seen = group.inspect().await.unwrap();
        if pred(&seen) {
            return seen;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {what}");
}

fn text_options() -> Options {
    Options::default()
}

fn json_options() -> Options {
    Options {
        format: Format::Json,
        ..Options::default()
    }
}

#[actix_rt::test]
async fn status_shows_members_with_roles_and_versions_names_and_where_each_child_runs() {
    let Running { cluster, members } = running("status-text").await;
    let tool = cluster.process(NodeId(2)).unwrap();
    let mut out = Vec::new();
    let seen = acpg::status(&tool, "status-text", text_options(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();

    assert_eq!(
        lines[0],
        format!("group status-text: protocol v{PROTOCOL_VERSION}, quorate")
    );
    assert!(
        lines[1].starts_with(&format!("seen by {} at supervision event ", tool.member())),
        "{}",
        lines[1]
    );
    let row = |member: Member| -> String {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("  {member} ")))
            .unwrap_or_else(|| panic!("a row for {member} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text.contains("\nmembers (4)\n"), "{text}");
    for m in &members {
        assert_eq!(
            row(m.local()),
            format!(
                "{} participant v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION}",
                m.local()
            )
        );
    }
    assert_eq!(
        row(tool.member()),
        format!(
            "{} observer v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION} this acpg",
            tool.member()
        )
    );
    assert!(text.contains("pending (in the CPG view, not announced): none"));
    assert!(text.contains("\nnames (1)\n"), "{text}");
    assert_eq!(
        lines
            .iter()
            .find(|l| l.trim_start().starts_with("journal"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["journal", &members[0].local().to_string()])
    );
    assert!(
        text.contains(&format!(
            "tree jobs: supervised, 4 of 4 slots running, spec {}, without quorum: stop",
            spec().fingerprint()
        )),
        "{text}"
    );
    let hosts: Vec<String> = members.iter().map(|m| m.local().to_string()).collect();
    assert!(
        text.contains(&format!("  hosts: {}\n", hosts.join(", "))),
        "{text}"
    );
    // One row per slot: where it runs, its incarnation and token, as the
    // inspection says.
    for slot in seen.slots() {
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{} ", slot.name)))
            .unwrap_or_else(|| panic!("a row for {} in\n{text}", slot.name));
        let actix_cpg::SlotStatus::Running {
            host,
            incarnation,
            token,
        } = slot.status
        else {
            panic!("{} runs", slot.name);
        };
        let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words,
            format!(
                "{} running on {host} incarnation {incarnation} token {token} permanent any member",
                slot.name
            )
        );
    }
    let names: Vec<&str> = seen.slots().map(|s| s.name.as_str()).collect();
    assert_eq!(names, SLOTS);
    // It left: the members see it go.
    until_inspected(&members[0], "the observer left", |s| {
        s.member(tool.member()).is_none()
    })
    .await;
}

#[actix_rt::test]
async fn status_json_is_one_object_that_reads_back_as_the_inspection() {
    // The members stay (dropping their handles would make them leave).
    let Running {
        cluster,
        members: _members,
    } = running("status-json").await;
    let tool = cluster.process(NodeId(1)).unwrap();
    let mut out = Vec::new();
    let seen = acpg::status(&tool, "status-json", json_options(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "one object on one line: {text}");
    let back: GroupInspection = serde_json::from_str(&text).unwrap();
    assert_eq!(back, seen);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["group"], "status-json");
    assert_eq!(value["role"], "Observer");
    assert_eq!(value["trees"][0]["children"][0]["name"], "jobs/a");
    assert!(value["trees"][0]["children"][0]["status"]["Running"]["host"].is_object());
    assert_eq!(value["quorum"]["quorate"], true);
}

#[actix_rt::test]
async fn status_of_a_group_nobody_is_in_refuses_with_exit_code_2() {
    let cluster = SimCluster::new(1);
    let tool = cluster.process(NodeId(1)).unwrap();
    let mut out = Vec::new();
    let err = acpg::status(&tool, "empty", text_options(), &mut out)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Nobody { .. }), "{err:?}");
    assert_eq!(err.to_string(), "nobody is in group empty");
    assert_eq!(err.exit_code(), 2);
    assert!(out.is_empty(), "nothing printed");
    // It left the group it founded.
    let name = GroupName::new("empty").unwrap();
    for _ in 0..2000 {
        if cluster.group_members(&name).is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cluster.group_members(&name), Vec::<Member>::new());
}

#[actix_rt::test]
async fn status_refuses_an_invalid_group_name_and_a_group_whose_processes_stay_silent() {
    let cluster = SimCluster::new(1);
    let tool = cluster.process(NodeId(1)).unwrap();
    let err = acpg::status(&tool, "", text_options(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidGroup(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);

    // Only a plain CPG client in the group: nobody hands the state over.
    let silent = cluster.process(NodeId(1)).unwrap();
    let _conn = silent.join(&GroupName::new("silent").unwrap()).unwrap();
    let options = Options {
        ready_within: Duration::from_millis(200),
        ..Options::default()
    };
    let err = acpg::status(&tool, "silent", options, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::NoState { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
}

/// A `Write` the test reads while a watch writes to it.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.borrow().clone()).unwrap()
    }
}

const AT: &str = "2025-06-01T09:30:00.125Z";

fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_748_770_200_125)
}

/// A watch running in a task of this arbiter: its output, the process it
/// joined through, how to stop it, and how it ended.
struct Watching {
    out: Shared,
    tool: SimProcess,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    end: tokio::sync::oneshot::Receiver<Result<WatchEnd, ToolError>>,
}

fn start_watch(cluster: &SimCluster, group: &str, options: Options) -> Watching {
    let out = Shared::default();
    let tool = cluster.process(NodeId(3)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, end) = tokio::sync::oneshot::channel();
    let (mut writer, transport, group) = (out.clone(), tool.clone(), group.to_owned());
    actix::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        let end = acpg::watch(
            &transport,
            &group,
            options,
            &mut writer,
            fixed_clock,
            stopped,
        )
        .await;
        let _ = done.send(end);
    });
    Watching {
        out,
        tool,
        stop: Some(stop),
        end,
    }
}

impl Watching {
    async fn until(&self, what: &str, pred: impl Fn(&str) -> bool) {
        for _ in 0..2000 {
            if pred(&self.out.text()) {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the watch never showed {what}:\n{}", self.out.text());
    }

    async fn stop(mut self) -> (Result<WatchEnd, ToolError>, String) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let end = (&mut self.end).await.expect("the watch ends");
        (end, self.out.text())
    }
}

/// Kills the member hosting `jobs/a` (never the first); returns it.
async fn kill_a_host(running: &Running) -> Member {
    let seen = running.members[0].inspect().await.unwrap();
    let host = seen
        .slots()
        .find(|s| s.name == "jobs/a")
        .and_then(|s| s.host())
        .unwrap();
    let victim = if host == running.members[0].local() {
        running.members[1].local()
    } else {
        host
    };
    running.cluster.kill_process(victim).unwrap();
    victim
}

#[actix_rt::test]
async fn watch_prints_a_member_leaving_and_its_children_restarting_with_a_timestamp() {
    let running = running("watch-text").await;
    let watching = start_watch(&running.cluster, "watch-text", text_options());
    watching
        .until("its first line", |t| t.contains("watching group"))
        .await;
    let victim = kill_a_host(&running).await;
    let left = format!("{victim} left (process down)");
    watching
        .until("the member leaving and a restart", |t| {
            t.contains(&left) && t.contains(" restarted on ")
        })
        .await;
    let (end, text) = watching.stop().await;
    println!("{text}");
    assert_eq!(end.unwrap(), WatchEnd::Stopped);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{AT} acpg         watching group watch-text as node3/{} (3 other members)",
            lines[0]
                .rsplit_once("node3/")
                .unwrap()
                .1
                .split(' ')
                .next()
                .unwrap()
        )
    );
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{AT} "))),
        "{text}"
    );
    let view = lines
        .iter()
        .find(|l| l.contains(&left))
        .expect("the view change");
    assert!(
        view.starts_with(&format!("{AT} group        view [")),
        "{view}"
    );
    let restart = lines
        .iter()
        .find(|l| l.contains(" restarted on "))
        .expect("a restart");
    assert!(
        restart.starts_with(&format!("{AT} supervision  ")),
        "{restart}"
    );
    assert!(!restart.contains(&victim.to_string()), "{restart}");
}

#[actix_rt::test]
async fn watch_json_prints_one_event_per_line_that_reads_back() {
    let running = running("watch-json").await;
    let watching = start_watch(&running.cluster, "watch-json", json_options());
    // No header in JSON: wait until the watcher is a member.
    until_inspected(&running.members[0], "the watcher joined", |s| {
        s.members.len() == 4
    })
    .await;
    let victim = kill_a_host(&running).await;
    watching
        .until("a restart", |t| t.contains("ChildRestarted"))
        .await;
    let (end, text) = watching.stop().await;
    assert_eq!(end.unwrap(), WatchEnd::Stopped);
    let lines: Vec<WatchLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l.at == AT));
    assert!(lines.iter().any(|l| matches!(
        &l.watched,
        Watched::Group(GroupEvent::ViewChanged { left, .. })
            if left.iter().any(|c| c.member == victim && c.reason == Reason::ProcDown)
    )));
    let restart = lines
        .iter()
        .find(|l| {
            matches!(
                l.watched,
                Watched::Supervision(SupervisionEvent::ChildRestarted { .. })
            )
        })
        .unwrap();
    assert!(restart.text.contains(" restarted on "), "{}", restart.text);
    let value: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(value["source"].is_string() && value["text"].is_string());
}

#[actix_rt::test]
async fn watch_ends_when_the_group_closes_under_it() {
    let running = running("watch-closed").await;
    let watching = start_watch(&running.cluster, "watch-closed", text_options());
    watching
        .until("its first line", |t| t.contains("watching group"))
        .await;
    running
        .cluster
        .kill_process(watching.tool.member())
        .unwrap();
    watching
        .until("the group closing", |t| t.contains("closed: "))
        .await;
    let (end, text) = watching.stop().await;
    assert_eq!(end.unwrap(), WatchEnd::Closed, "{text}");
}

#[actix_rt::test]
async fn watch_of_a_group_nobody_is_in_refuses_with_exit_code_2() {
    let cluster = SimCluster::new(3);
    let watching = start_watch(&cluster, "nobody", text_options());
    let (end, text) = watching.stop().await;
    let err = end.unwrap_err();
    assert!(matches!(err, ToolError::Nobody { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    assert!(text.is_empty());
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("acpg-{name}-{}.rec", std::process::id()))
}

/// Records a member of a group in which a tree runs and another member is
/// killed; returns the file.
async fn recording(name: &str) -> std::path::PathBuf {
    let path = temp_file(name);
    let cluster = SimCluster::new(2);
    let group = GroupName::new(name).unwrap();
    let config = GroupConfig {
        record_to: Some(path.clone()),
        ..GroupConfig::default()
    };
    let recorded = Group::start(
        cluster.process(NodeId(1)).unwrap().join(&group).unwrap(),
        config,
    )
    .await
    .unwrap();
    let other = Group::start(
        cluster.process(NodeId(2)).unwrap().join(&group).unwrap(),
        GroupConfig::default(),
    )
    .await
    .unwrap();
    for g in [&recorded, &other] {
        g.start_tree("jobs", spec(), factories()).await.unwrap();
    }
    let both = [recorded.local(), other.local()];
    until_inspected(&recorded, "every slot runs", |s| {
        runs_everything_on(s, &both)
    })
    .await;
    cluster.kill_process(other.local()).unwrap();
    until_inspected(&recorded, "every slot runs on the survivor", |s| {
        runs_everything_on(s, &[recorded.local()])
    })
    .await;
    recorded.leave().await.unwrap();
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    path
}

#[actix_rt::test]
async fn replay_prints_the_decisions_of_a_recording_as_text_and_as_json_lines() {
    let path = recording("replayed").await;
    let mut out = Vec::new();
    acpg::replay(&path, Format::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    let first = text.lines().next().unwrap();
    assert!(first.contains(" events recorded by node1/"), "{first}");
    assert!(text.contains("] view ["), "{text}");
    assert!(text.contains("] start jobs/a on "), "{text}");
    assert!(text.contains("left node2/"), "{text}");

    let mut out = Vec::new();
    acpg::replay(&path, Format::Json, &mut out).unwrap();
    let json = String::from_utf8(out).unwrap();
    let decisions: Vec<Replayed> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        decisions.len(),
        text.lines().count() - 1,
        "the same decisions"
    );
    assert!(decisions.windows(2).all(|w| w[0].position <= w[1].position));
    assert!(decisions
        .iter()
        .any(|d| d.decision.starts_with("start jobs/a on ")));
    let _ = std::fs::remove_file(&path);
}

#[actix_rt::test]
async fn replay_of_a_file_that_is_no_recording_refuses_with_exit_code_2() {
    let missing = temp_file("missing");
    let err = acpg::replay(&missing, Format::Text, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ToolError::Recording { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let junk = temp_file("junk");
    std::fs::write(&junk, b"not a recording at all").unwrap();
    let err = acpg::replay(&junk, Format::Json, &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("not an actix-cpg recording"),
        "{err}"
    );
    let _ = std::fs::remove_file(&junk);
}

// Election groups (`--election`) and replica groups (`--replica`).

mod kinds {
    use super::*;
    use actix_cpg::election::ElectionInspection;
    use actix_cpg::replicated::ReplicaInspection;
    use actix_cpg::{
        Election, ElectionConfig, Replica, ReplicaConfig, StateMachine, GROUP_ELECTION,
    };

    /// A counter: the replicated state of these tests (acpg never knows
    /// its type).
    #[derive(Default)]
    struct Count(u64);

    impl StateMachine for Count {
        type Command = u64;
        type Response = u64;
        type Snapshot = u64;
        fn apply(&mut self, n: u64) -> u64 {
            self.0 += n;
            self.0
        }
        fn snapshot(&self) -> u64 {
            self.0
        }
        fn encode(n: u64) -> Vec<u8> {
            actix_cpg::replicated::encode_snapshot(&n)
        }
        fn restore(bytes: &[u8]) -> Result<Self, String> {
            actix_cpg::replicated::decode_snapshot(bytes, 64).map(Count)
        }
    }

    fn join(
        cluster: &SimCluster,
        node: u32,
        group: &str,
    ) -> actix_cpg::transport::sim::SimConnection {
        cluster
            .process(NodeId(node))
            .unwrap()
            .join(&GroupName::new(group).unwrap())
            .unwrap()
    }

    /// Three election participants on nodes 1 to 3; the second stands in
    /// "jobs". Returns once every one sees both leaders.
    async fn electing(cluster: &SimCluster, group: &str) -> Vec<Election> {
        let mut members = Vec::new();
        for node in 1..=3 {
            members.push(
                Election::start(join(cluster, node, group), ElectionConfig::default())
                    .await
                    .unwrap(),
            );
        }
        members[1].stand("jobs").await.unwrap();
        for m in &members {
            m.wait_leader(GROUP_ELECTION).await.unwrap();
            m.wait_leader("jobs").await.unwrap();
        }
        members
    }

    /// Three replicas on nodes 1 to 3, with `writes` applied everywhere.
    async fn replicating(cluster: &SimCluster, group: &str, writes: u64) -> Vec<Replica<Count>> {
        let mut replicas = Vec::new();
        for node in 1..=3 {
            replicas.push(
                Replica::<Count>::start(join(cluster, node, group), ReplicaConfig::default())
                    .await
                    .unwrap(),
            );
        }
        for n in 0..writes {
            replicas[(n % 3) as usize].execute(n).await.unwrap();
        }
        for r in &replicas {
            for _ in 0..2000 {
                if r.status().state.applied == writes {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(r.status().state.applied, writes);
        }
        replicas
    }

    fn words(line: &str) -> String {
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[actix_rt::test]
    async fn status_of_an_election_group_shows_each_election_with_its_leader_and_epoch() {
        let cluster = SimCluster::new(3);
        let members = electing(&cluster, "status-elect").await;
        let tool = cluster.process(NodeId(2)).unwrap();
        let mut out = Vec::new();
        let seen = acpg::election_status(&tool, "status-elect", text_options(), &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!(
                "election group status-elect: protocol v{PROTOCOL_VERSION}, quorate (3 of 3 participants reported, ring "
            )),
            "{text}"
        );
        assert_eq!(lines[1], format!("seen by {}", tool.member()));
        assert!(text.contains("\nmembers (4)\n"), "{text}");
        for m in &members {
            assert!(
                lines.iter().any(|l| words(l)
                    == format!(
                        "{} participant v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION}",
                        m.local()
                    )),
                "{text}"
            );
        }
        assert!(
            lines.iter().any(|l| words(l)
                == format!(
                    "{} observer v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION} this acpg",
                    tool.member()
                )),
            "{text}"
        );
        let group = members[0].leader(GROUP_ELECTION).unwrap();
        let jobs = members[0].leader("jobs").unwrap();
        let ids: Vec<String> = members.iter().map(|m| m.local().to_string()).collect();
        assert!(text.contains("\nelections (2)\n"), "{text}");
        let row = |start: &str| {
            words(
                lines
                    .iter()
                    .find(|l| l.trim_start().starts_with(start))
                    .unwrap_or_else(|| panic!("a row {start} in\n{text}")),
            )
        };
        assert_eq!(
            row("(group)"),
            format!(
                "(group) leader {} epoch {} candidates {}",
                group.leader,
                group.epoch,
                ids.join(", ")
            )
        );
        assert_eq!(
            row("\"jobs\""),
            format!(
                "\"jobs\" leader {} epoch {} candidates {}",
                jobs.leader, jobs.epoch, ids[1]
            )
        );
        assert_eq!(
            seen.election("jobs").unwrap().leader,
            Some(members[1].local())
        );

        // JSON: one object that reads back.
        let mut out = Vec::new();
        let seen = acpg::election_status(&tool, "status-elect", json_options(), &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let back: ElectionInspection = serde_json::from_str(&text).unwrap();
        assert_eq!(back, seen);
    }

    #[actix_rt::test]
    async fn status_of_a_replica_group_shows_each_state_id_and_that_the_replicas_agree() {
        let cluster = SimCluster::new(3);
        let replicas = replicating(&cluster, "status-rsm", 5).await;
        let tool = cluster.process(NodeId(1)).unwrap();
        let mut out = Vec::new();
        let seen = acpg::replica_status(&tool, "status-rsm", text_options(), &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        // The epochs moved since (acpg's coming and going are installs).
        let state = replicas[0].status().state;
        assert_eq!(
            lines[0],
            format!(
                "replica group status-rsm: protocol v{PROTOCOL_VERSION}, primary (epoch {})",
                seen.epoch.unwrap()
            )
        );
        // acpg followed the stream to the participants' id, without their
        // type: the same commands in the same order.
        assert_eq!(seen.agreement.states.len(), 1);
        let announced = seen.agreement.states[0].state;
        assert_eq!(
            (seen.state.applied, seen.state.chain, seen.state.genesis),
            (5, state.chain, state.genesis)
        );
        assert_eq!(
            (announced.chain, announced.genesis),
            (state.chain, state.genesis)
        );
        let id = format!(
            "epoch {} applied 5 chain {:016x} genesis {:016x}",
            announced.epoch, state.chain, state.genesis
        );
        for r in &replicas {
            assert!(
                lines.iter().any(
                    |l| words(l) == format!("{} participant v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION} announced {id}", r.local())
                ),
                "{text}"
            );
        }
        assert!(
            lines.iter().any(|l| words(l)
                == format!(
                    "{} observer v{MIN_PROTOCOL_VERSION}..=v{PROTOCOL_VERSION} announced no state this acpg",
                    tool.member()
                )),
            "{text}"
        );
        assert!(
            text.contains("agreement at install round 1: agree (3 participants at the same state)"),
            "{text}"
        );
        // It joined with nothing and got the state from the lowest holder.
        assert!(
            text.contains(&format!(
                "  {} sent the state to {}",
                replicas[0].local(),
                tool.member()
            )),
            "{text}"
        );

        let mut out = Vec::new();
        let seen = acpg::replica_status(&tool, "status-rsm", json_options(), &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let back: ReplicaInspection = serde_json::from_str(&text).unwrap();
        assert_eq!(back, seen);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["agreement"]["agree"], true);
        assert_eq!(value["role"], "Observer");
    }

    #[actix_rt::test]
    async fn a_disagreement_prints_every_state_with_who_held_it_and_the_transfer() {
        let cluster = SimCluster::new(3);
        let replicas = replicating(&cluster, "split-rsm", 1).await;
        let ids: Vec<Member> = replicas.iter().map(Replica::local).collect();
        cluster
            .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
            .unwrap();
        // The majority goes on, the minority refuses.
        let mut applied = None;
        for _ in 0..2000 {
            if let Ok(r) = replicas[0].execute_traced(10).await {
                applied = Some(r.state);
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let applied = applied.expect("the majority applies");
        cluster.heal();
        let mut merged = None;
        for _ in 0..2000 {
            let seen = replicas[0].inspect().await.unwrap();
            if seen.installed && seen.members.len() == 3 && !seen.agreement.agree {
                merged = Some(seen);
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let merged = merged.expect("a merge round where the sides disagree");
        let mut out = Vec::new();
        acpg::write_replica_status(&merged, Format::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        println!("{text}");
        assert!(
            text.contains(&format!(
                "agreement at install round {}: DISAGREE (2 different states)",
                merged.agreement.round
            )),
            "{text}"
        );
        let row = |members: String| {
            text.lines()
                .find(|l| l.ends_with(&members))
                .map(words)
                .unwrap_or_else(|| panic!("a row for {members} in\n{text}"))
        };
        assert!(
            row(format!("{}, {}", ids[0], ids[1]))
                .contains(&format!(" applied 2 chain {:016x} ", applied.chain)),
            "{text}"
        );
        assert!(row(ids[2].to_string()).contains(" applied 1 "), "{text}");
        assert!(
            text.contains(&format!("  {} sent the state to {}", ids[0], ids[2])),
            "{text}"
        );
    }

    #[actix_rt::test]
    async fn watch_of_an_election_group_prints_the_new_leader_and_its_epoch() {
        let cluster = SimCluster::new(3);
        let members = electing(&cluster, "watch-elect").await;
        let out = Shared::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (mut writer, group) = (out.clone(), "watch-elect");
        let tool = cluster.process(NodeId(3)).unwrap();
        let watch = actix::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            acpg::watch_election(
                &tool,
                group,
                text_options(),
                &mut writer,
                fixed_clock,
                stopped,
            )
            .await
        });
        let watching = |what: &'static str, pred: Box<dyn Fn(&str) -> bool>| {
            let out = out.clone();
            async move {
                for _ in 0..2000 {
                    if pred(&out.text()) {
                        return;
                    }
                    actix_rt::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the watch never showed {what}:\n{}", out.text());
            }
        };
        watching("its first line", Box::new(|t| t.contains("watching group"))).await;
        let old = members[0].leader(GROUP_ELECTION).unwrap();
        cluster.kill_process(old.leader).unwrap();
        let next = members[1].local();
        let line = format!("leader of the group election: {next} (epoch ");
        watching("the new leader", Box::new(move |t| t.contains(&line))).await;
        stop.send(()).unwrap();
        assert_eq!(watch.await.unwrap().unwrap(), WatchEnd::Stopped);
        let text = out.text();
        println!("{text}");
        let changed = text
            .lines()
            .find(|l| l.contains("leader of the group election: "))
            .unwrap();
        assert!(
            changed.starts_with(&format!("{AT} election     ")),
            "{changed}"
        );
        let epoch = members[1].leader(GROUP_ELECTION).unwrap().epoch;
        assert!(epoch > old.epoch);
        assert!(
            changed.ends_with(&format!("{next} (epoch {epoch})")),
            "{changed}"
        );
        assert!(
            text.contains(&format!("{} left (process down)", old.leader)),
            "{text}"
        );
    }

    #[actix_rt::test]
    async fn watch_json_of_a_replica_group_prints_the_dead_replica_leaving_and_the_new_install() {
        let cluster = SimCluster::new(3);
        let replicas = replicating(&cluster, "watch-rsm", 2).await;
        let out = Shared::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut writer = out.clone();
        let tool = cluster.process(NodeId(3)).unwrap();
        let watch = actix::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            acpg::watch_replica(
                &tool,
                "watch-rsm",
                json_options(),
                &mut writer,
                fixed_clock,
                stopped,
            )
            .await
        });
        let lines = || -> Vec<WatchLine> {
            out.text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let until = |what: &'static str, pred: &dyn Fn(&[WatchLine]) -> bool| {
            let seen = lines();
            if pred(&seen) {
                return true;
            }
            let _ = what;
            false
        };
        // acpg subscribes once it holds the state, and prints nothing in
        // JSON before an event: replicas come and go on node 2 until it has
        // printed one, so it surely sees what follows.
        let mut extras = Vec::new();
        while out.text().is_empty() {
            assert!(extras.len() < 50, "the watch never printed an event");
            extras.push(
                Replica::<Count>::start(join(&cluster, 2, "watch-rsm"), ReplicaConfig::default())
                    .await
                    .unwrap(),
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = replicas[2].local();
        cluster.kill_process(victim).unwrap();
        let mut done = false;
        for _ in 0..2000 {
            done = until(
                "the victim leaving and an install",
                &|seen: &[WatchLine]| {
                    let Some(left) = seen.iter().position(|l| {
                    matches!(&l.watched, Watched::Replica(actix_cpg::ReplicaEvent::ViewChanged { left, .. })
                        if left.iter().any(|c| c.member == victim && c.reason == Reason::ProcDown))
                }) else {
                        return false;
                    };
                    let installed = seen[left..].iter().any(|l| {
                        matches!(
                            &l.watched,
                            Watched::Replica(actix_cpg::ReplicaEvent::Installed {
                                primary: true,
                                ..
                            })
                        )
                    });
                    installed
                },
            );
            if done {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(done, "{}", out.text());
        stop.send(()).unwrap();
        assert_eq!(watch.await.unwrap().unwrap(), WatchEnd::Stopped);
        for line in lines() {
            assert_eq!(line.at, AT);
            assert_eq!(
                line.text,
                match &line.watched {
                    Watched::Replica(e) => e.to_string(),
                    other => panic!("only replica events: {other:?}"),
                }
            );
        }
        let value: serde_json::Value =
            serde_json::from_str(out.text().lines().next().unwrap()).unwrap();
        assert_eq!(value["source"], "replica");
    }

    #[actix_rt::test]
    async fn election_and_replica_groups_nobody_is_in_refuse_with_exit_code_2() {
        let cluster = SimCluster::new(1);
        let tool = cluster.process(NodeId(1)).unwrap();
        let mut out = Vec::new();
        let err = acpg::election_status(&tool, "no-elect", text_options(), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Nobody { .. }), "{err:?}");
        assert_eq!(err.to_string(), "nobody is in group no-elect");
        assert_eq!(err.exit_code(), 2);
        let err = acpg::replica_status(&tool, "no-rsm", text_options(), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Nobody { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        assert!(out.is_empty(), "nothing printed");
    }

    #[actix_rt::test]
    async fn asked_for_the_wrong_kind_acpg_refuses_with_exit_code_2() {
        let cluster = SimCluster::new(3);
        let _members = electing(&cluster, "elect-not-rsm").await;
        let tool = cluster.process(NodeId(1)).unwrap();
        let options = Options {
            ready_within: Duration::from_secs(3),
            ..text_options()
        };
        let err = acpg::replica_status(&tool, "elect-not-rsm", options, &mut Vec::new())
            .await
            .unwrap_err();
        println!("{err}");
        assert!(
            matches!(err, ToolError::OtherKind { processes: 3, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "group elect-not-rsm has 3 other process(es) in its CPG view, but no replica member \
             (is it a group of another kind?)"
        );
        assert_eq!(err.exit_code(), 2);
        let _replicas = replicating(&cluster, "rsm-not-elect", 0).await;
        let err = acpg::election_status(&tool, "rsm-not-elect", options, &mut Vec::new())
            .await
            .unwrap_err();
        println!("{err}");
        assert!(matches!(err, ToolError::NoState { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[actix_rt::test]
async fn replay_prints_an_election_recording_and_refuses_a_replica_recording_with_exit_code_2() {
    use actix_cpg::kv::KvStore;
    use actix_cpg::{Election, ElectionConfig, Replica, ReplicaConfig, GROUP_ELECTION};

    let cluster = SimCluster::new(2);
    let elected = temp_file("elected");
    let group = GroupName::new("replayed-election").unwrap();
    let config = ElectionConfig {
        record_to: Some(elected.clone()),
        ..ElectionConfig::default()
    };
    let conn = cluster.process(NodeId(1)).unwrap().join(&group).unwrap();
    let election = Election::start(conn, config).await.unwrap();
    election.wait_leader(GROUP_ELECTION).await.unwrap();
    election.leave().await.unwrap();

    let replicated = temp_file("replicated");
    let group = GroupName::new("replayed-replica").unwrap();
    let config = ReplicaConfig {
        record_to: Some(replicated.clone()),
        ..ReplicaConfig::default()
    };
    let conn = cluster.process(NodeId(2)).unwrap().join(&group).unwrap();
    let replica = Replica::<KvStore>::start(conn, config).await.unwrap();
    replica.leave().await.unwrap();
    actix_rt::time::sleep(Duration::from_millis(50)).await;

    let mut out = Vec::new();
    acpg::replay(&elected, Format::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    let first = text.lines().next().unwrap();
    assert!(first.contains("recorded by node1/"), "{first}");
    assert!(first.contains("(election)"), "{first}");
    assert!(
        text.contains("] leader of the group election: node1/"),
        "{text}"
    );
    assert!(
        text.contains("] this member leads the group election"),
        "{text}"
    );

    let err = acpg::replay(&replicated, Format::Text, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, ToolError::NeedsStateMachine { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("actix_cpg::replicated::replay"),
        "{err}"
    );
    let _ = std::fs::remove_file(&elected);
    let _ = std::fs::remove_file(&replicated);
}

/// `acpg bootstrap DIR` on the directory of a stopped durable replica:
/// says which members of the last primary component it writes off and
/// what may be lost; refuses a directory a replica runs on, changing
/// nothing.
#[actix_rt::test]
async fn bootstrap_writes_off_the_lost_members_and_refuses_a_running_replica() {
    use actix_cpg::kv::{KvCommand, KvStore};
    use actix_cpg::{Replica, ReplicaConfig};
    let base = std::env::temp_dir().join(format!("acpg-bootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = |i: u32| base.join(format!("r{i}"));
    let cluster = SimCluster::new(3);
    let name = GroupName::new("acpg-bootstrap").expect("name");
    let mut processes = Vec::new();
    let mut replicas = Vec::new();
    for node in 1..=2 {
        let process = cluster.process(NodeId(node)).expect("up");
        let config = ReplicaConfig {
            data_dir: Some(dir(node)),
            ..ReplicaConfig::default()
        };
        let replica = Replica::<KvStore>::start(process.join(&name).expect("join"), config)
            .await
            .expect("start");
        replica.wait_primary().await.expect("primary");
        processes.push(process);
        replicas.push(replica);
    }
    let members: Vec<Member> = replicas.iter().map(|r| r.local()).collect();
    replicas[0]
        .execute(KvCommand::Put {
            key: "k".into(),
            value: "v".into(),
        })
        .await
        .expect("put");

    let mut out = Shared::default();
    let busy = acpg::bootstrap(&dir(1), Format::Text, &mut out);
    assert!(matches!(busy, Err(ToolError::Bootstrap { .. })), "{busy:?}");
    assert_eq!(busy.err().map(|e| e.exit_code()), Some(2));
    assert!(out.text().is_empty());

    for p in &processes {
        p.kill().expect("kill");
    }
    for r in &replicas {
        // Closed: its directory is free.
        while !r.status().closed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut out = Shared::default();
    acpg::bootstrap(&dir(1), Format::Text, &mut out).expect("bootstrap");
    let text = out.text();
    assert!(text.contains("state 1 applied"), "{text}");
    assert!(
        text.contains(&format!("written off: {}", members[1])),
        "{text}"
    );
    assert!(!text.contains(&members[0].to_string()), "{text}");
    assert!(
        text.contains("is lost unless one of them comes back"),
        "{text}"
    );

    let mut out = Shared::default();
    acpg::bootstrap(&dir(1), Format::Json, &mut out).expect("bootstrap again");
    let report: actix_cpg::replicated::Bootstrapped =
        serde_json::from_str(out.text().trim()).expect("one JSON object");
    assert_eq!(report.written_off, vec![members[1]]);
    let _ = std::fs::remove_dir_all(&base);
}
