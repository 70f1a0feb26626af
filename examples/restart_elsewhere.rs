//! A supervised worker outlives its host: its process is killed, it restarts
//! on another of three members with a greater fencing token, and a call by
//! name reaches it there. In-process `sim` backend, no daemon needed:
//!
//! ```text
//! cargo run --example restart_elsewhere
//! cargo run --example restart_elsewhere -- --record /tmp/restart --show   # /tmp/restart.1 ..3
//! ```

use actix::prelude::*;
use actix_cpg::supervisor::{ChildSpec, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Child, ChildContext, Factories, FencingToken, Group, GroupConfig, GroupEvent, GroupName,
    Member, NodeId, RemoteMessage, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::Receiver;
use tokio::time::{timeout, Duration};

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// The worker's group-wide name ([`actix_cpg::child_name`]): its tree, then
/// its id (a per-node child adds `@node2`, a per-member one `@node2/1007`).
const WORKER: &str = "jobs/ingest";

/// Asks the worker which incarnation answers: its host and fencing token.
#[derive(Message, Serialize, Deserialize, RemoteMessage)]
#[rtype(result = "(Member, FencingToken)")]
#[remote(tag = "restart_elsewhere.WhoAnswers")]
struct WhoAnswers;

struct Worker(Member, FencingToken);

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<WhoAnswers> for Worker {
    type Result = MessageResult<WhoAnswers>;
    fn handle(&mut self, _: WhoAnswers, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.0, self.1))
    }
}

/// The host of the next registration of `WORKER` a member sees.
async fn next_host(events: &mut Receiver<GroupEvent>) -> Result<Member, &'static str> {
    let registered = async {
        while let Ok(event) = events.recv().await {
            match event {
                GroupEvent::NameRegistered { name, host } if name == WORKER => return Some(host),
                _ => {}
            }
        }
        None
    };
    let host = timeout(Duration::from_secs(10), registered).await;
    host.ok().flatten().ok_or("no registration within 10 s")
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let observe = observe::Observe::parse(
        "A supervised worker restarted on another member when its host is killed (sim backend).",
    );
    let cluster = SimCluster::new(3);
    let name = GroupName::new("restart-elsewhere")?;
    let mut members = Vec::new();
    for node in 1..=3 {
        let conn = cluster.process(NodeId(node))?.join(&name)?;
        let config = GroupConfig {
            record_to: observe.record_to(node),
            ..GroupConfig::default()
        };
        let group = Group::start(conn, config).await?;
        members.push((group.subscribe(), group));
    }
    for (_, group) in &members {
        let host = group.local();
        let factories = Factories::new().worker("worker", move |ctx: &ChildContext| {
            // Started by the group, which also stops it: no `Terminate`
            // handler to write.
            Child::start_serving(Worker(host, ctx.token), |h| h.with::<WhoAnswers>())
        });
        let root = SupervisorSpec::new(Strategy::OneForOne);
        let spec = TreeSpec::new(root.child(ChildSpec::worker("ingest", "worker")));
        group.start_tree("jobs", spec, factories).await?;
    }
    let first = next_host(&mut members[0].0).await?;
    let survivor = if members[0].1.local() == first { 1 } else { 0 };
    let (events, caller) = &mut members[survivor];
    assert_eq!(next_host(events).await?, first, "one placement everywhere");
    let (host, token) = caller.remote(WORKER).send(WhoAnswers).await?;
    println!("{WORKER} runs on {host} with fencing token {token}");
    assert_eq!(host, first);
    cluster.kill_process(first)?;
    let second = next_host(events).await?;
    let (host, new_token) = caller.remote(WORKER).send(WhoAnswers).await?;
    println!("{first} killed: {WORKER} runs on {host} with fencing token {new_token}");
    assert_eq!(host, second, "the call reaches the new incarnation");
    assert!(new_token > token, "a new incarnation has a greater token");
    observe.show(members.iter().map(|(_, group)| group)).await;
    Ok(())
}
