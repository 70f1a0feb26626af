//! Failover on the sim backend: the process hosting a supervised child is
//! killed, 30 times over; each time the child runs again on a survivor
//! (a liveness check with a generous deadline, never a timing assertion:
//! the machine is shared). It prints p50/p90/max of the time it took, the
//! figure compared before and after a change to the confchg path
//! (`cargo test --test integration failover_timing:: -- --nocapture`).
//!
//! And the order of the survivor's turn on the confchg (rule 2 of the
//! group runtime): the child a restart starts is running before the view
//! change reaches the new host's subscribers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_cpg::supervisor::{ChildSpec, QuorumPolicy, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::{SimCluster, SimProcess};
use actix_cpg::{
    Child, ChildContext, Factories, Group, GroupConfig, GroupName, Member, NodeId, Terminate,
    Transport,
};

#[derive(Clone, Default)]
struct Census(Arc<Mutex<BTreeMap<String, Vec<Member>>>>);

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
            .intensity(1_000, 60_000)
            .child(ChildSpec::worker("a", "worker")),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

async fn member(cluster: &SimCluster, node: u32, census: &Census) -> (SimProcess, Group) {
    let process = cluster.process(NodeId(node)).unwrap();
    let group = Group::start(
        process.join(&GroupName::new("failover").unwrap()).unwrap(),
        GroupConfig::default(),
    )
    .await
    .unwrap();
    let census = census.clone();
    let host = group.local();
    group
        .start_tree(
            "jobs",
            spec(),
            Factories::new().worker("worker", move |ctx: &ChildContext| {
                Child::new(
                    Worker {
                        name: ctx.name.clone(),
                        host,
                        census: census.clone(),
                    }
                    .start(),
                )
            }),
        )
        .await
        .unwrap();
    (process, group)
}

/// Runs `a` on `host`, as the census says.
fn runs_on(census: &Census, host: Member) -> bool {
    census
        .0
        .lock()
        .unwrap()
        .get("jobs/a")
        .is_some_and(|hosts| hosts.contains(&host))
}

fn host_of(census: &Census) -> Option<Member> {
    match census.0.lock().unwrap().get("jobs/a").map(Vec::as_slice) {
        Some([one]) => Some(*one),
        _ => None,
    }
}

/// Where `a` runs, once it runs on exactly one member; fails the test at
/// `deadline`.
async fn host_by(census: &Census, deadline: Instant) -> Member {
    loop {
        if let Some(h) = host_of(census) {
            return h;
        }
        assert!(Instant::now() < deadline, "the child never ran");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
}

#[actix_rt::test]
async fn a_child_runs_again_soon_after_its_host_is_killed() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let mut members = Vec::new();
    for node in 1..=3 {
        members.push(member(&cluster, node, &census).await);
    }
    let mut times = Vec::new();
    for _ in 0..30 {
        let host = host_by(&census, Instant::now() + Duration::from_secs(10)).await;
        let i = members.iter().position(|(_, g)| g.local() == host).unwrap();
        let (process, _) = members.remove(i);
        let node = process.node();
        let t0 = Instant::now();
        cluster.kill_process(process.member()).unwrap();
        loop {
            if host_of(&census).is_some_and(|h| h != host) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no failover");
            actix_rt::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(t0.elapsed());
        members.push(member(&cluster, node.0, &census).await);
        // Let the newcomer settle before the next kill.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "failover over {} kills: p50 {:?}, p90 {:?}, max {:?}",
        times.len(),
        at(0.5),
        at(0.9),
        times[times.len() - 1]
    );
}

/// What a member's subscriber saw: at `.0`, a view change took `.1` out,
/// and `a` ran at `.0` by then (`.2`).
type Heard = Arc<Mutex<Vec<(Member, Member, bool)>>>;

/// A member whose subscriber notes, at every view change that takes a
/// member out, whether `a` already runs on this member.
async fn watched_member(
    cluster: &SimCluster,
    node: u32,
    census: &Census,
    heard: &Heard,
) -> (SimProcess, Group) {
    let (process, group) = member(cluster, node, census).await;
    let mut events = group.subscribe();
    let (census, heard, local) = (census.clone(), heard.clone(), group.local());
    actix::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let actix_cpg::GroupEvent::ViewChanged { left, .. } = event {
                for change in left {
                    let running = runs_on(&census, local);
                    heard.lock().unwrap().push((local, change.member, running));
                }
            }
        }
    });
    (process, group)
}

#[actix_rt::test]
async fn a_child_restarted_at_a_view_change_runs_before_its_new_host_hears_of_the_view() {
    let cluster = SimCluster::new(3);
    let census = Census::default();
    let heard = Heard::default();
    let mut members = Vec::new();
    for node in 1..=3 {
        members.push(watched_member(&cluster, node, &census, &heard).await);
    }
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let host = host_by(&census, deadline).await;
        let i = members.iter().position(|(_, g)| g.local() == host).unwrap();
        let (process, _) = members.remove(i);
        let node = process.node();
        cluster.kill_process(process.member()).unwrap();
        let new_host = loop {
            if let Some(h) = host_of(&census).filter(|h| *h != host) {
                break h;
            }
            assert!(Instant::now() < deadline, "no failover");
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        };
        let running_first = loop {
            let seen = heard
                .lock()
                .unwrap()
                .iter()
                .find(|(at, gone, _)| *at == new_host && *gone == host)
                .map(|(_, _, running)| *running);
            if let Some(running) = seen {
                break running;
            }
            assert!(
                Instant::now() < deadline,
                "the new host never heard of the view"
            );
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(
            running_first,
            "{new_host} told its subscribers that {host} left before running `a`"
        );
        members.push(watched_member(&cluster, node.0, &census, &heard).await);
        // Let the newcomer settle before the next kill.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}
