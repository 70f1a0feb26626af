//! The group as an actor registry: a name registered on one member is
//! called from another with a typed request; of two members racing for one
//! name exactly one wins, the same everywhere; a host that leaves takes its
//! names with it on every member. Three members, `sim` backend, no daemon:
//!
//! ```text
//! cargo run --example registry_calls
//! cargo run --example registry_calls -- --record /tmp/calls --show   # /tmp/calls.1 ..3
//! ```

use actix::prelude::*;
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    CallError, Group, GroupConfig, GroupError, GroupEvent, GroupName, Handlers, Member,
    NameDropReason, NodeId, Reason, RemoteMessage, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::time::{timeout, Duration};

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// Asks an actor where it runs; the reply is its host.
#[derive(Message, Serialize, Deserialize, RemoteMessage)]
#[rtype(result = "Member")]
#[remote(tag = "registry_calls.WhereAreYou")]
struct WhereAreYou;

struct Locator(Member);

impl Actor for Locator {
    type Context = Context<Self>;
}

impl Handler<WhereAreYou> for Locator {
    type Result = MessageResult<WhereAreYou>;
    fn handle(&mut self, _: WhereAreYou, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.0)
    }
}

/// Registers a fresh `Locator` of `group`'s member under `name`.
async fn serve(group: &Group, name: &str) -> Result<(), GroupError> {
    let handlers = Handlers::new(Locator(group.local()).start()).with::<WhereAreYou>();
    group.register(name, handlers).await
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let observe = observe::Observe::parse("The group as an actor registry: calls by name, a race for a name, a host leaving (sim backend).");
    let cluster = SimCluster::new(3);
    let name = GroupName::new("registry-calls")?;
    let mut groups = Vec::new();
    for node in 1..=3 {
        let conn = cluster.process(NodeId(node))?.join(&name)?;
        let config = GroupConfig {
            record_to: observe.record_to(node),
            ..GroupConfig::default()
        };
        groups.push(Group::start(conn, config).await?);
    }
    let (a, b, c) = (&groups[0], &groups[1], &groups[2]);

    // Registered on a, called from b: the request finds its host by name.
    serve(a, "journal").await?;
    let host = b.remote::<WhereAreYou>("journal").send(WhereAreYou).await?;
    println!("{} called \"journal\": it runs on {host}", b.local());
    assert_eq!(host, a.local());
    assert_eq!(b.lookup("journal").await?, Some(a.local()));

    // b and c race for one name: the first in the total order wins.
    let (by_b, by_c) = futures::join!(serve(b, "scheduler"), serve(c, "scheduler"));
    println!("race for \"scheduler\": {by_b:?} / {by_c:?}");
    let (winner, lost) = match (by_b, by_c) {
        (Ok(()), lost) => (b.local(), lost),
        (lost, Ok(())) => (c.local(), lost),
        both => panic!("exactly one registration must win: {both:?}"),
    };
    assert!(matches!(lost, Err(GroupError::NameTaken { owner, .. }) if owner == winner));

    // a leaves: its names vanish from the registry on b and on c alike.
    let mut watchers = [b.subscribe(), c.subscribe()];
    a.leave().await?;
    for events in &mut watchers {
        let first_drop = async {
            while let Ok(event) = events.recv().await {
                if let GroupEvent::NameDropped { name, reason, .. } = event {
                    return Some((name, reason));
                }
            }
            None
        };
        let dropped = timeout(Duration::from_secs(10), first_drop).await;
        let left = NameDropReason::HostLeft(Reason::Leave);
        let journal = Some(("journal".to_owned(), left));
        assert_eq!(dropped, Ok(journal), "a drop within 10 s");
    }
    for g in [b, c] {
        let call = g.remote::<WhereAreYou>("journal").send(WhereAreYou).await;
        assert_eq!(call, Err(CallError::NoSuchName("journal".into())));
        assert_eq!(g.names().await?, vec![("scheduler".to_owned(), winner)]);
    }
    println!("{} left: \"journal\" is gone on b and c", a.local());
    observe.show(&groups).await;
    Ok(())
}
