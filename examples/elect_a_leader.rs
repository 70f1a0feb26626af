//! Leader election with a fencing epoch: three members agree on one leader
//! of the group-wide election (the longest-lived member); its process is
//! killed; the two left agree on a new leader whose epoch is greater, so a
//! resource that refuses older epochs refuses the old leader. In-process
//! `sim` backend, no daemon needed:
//!
//! ```text
//! cargo run --example elect_a_leader
//! cargo run --example elect_a_leader -- --record /tmp/elect --show   # /tmp/elect.1 ..3
//! ```

use std::error::Error;

use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Election, ElectionConfig, GroupName, Leadership, Member, NodeId, Transport, GROUP_ELECTION,
};
use tokio::time::{timeout, Duration};

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// The leader `election`'s member names once it has installed a view of
/// `size` members led by someone other than `gone` (and, if it is the
/// leader itself, acts as leader: that also needs its node's quorum).
async fn leader_seen(
    election: &Election,
    size: usize,
    gone: Option<Member>,
) -> Result<Leadership, Box<dyn Error>> {
    let mut status = election.watch_status();
    let settled = status.wait_for(|s| {
        let Some(l) = s.leaders.get(GROUP_ELECTION) else {
            return false;
        };
        let acting = s.local != Some(l.leader) || s.acting.get(GROUP_ELECTION) == Some(&l.epoch);
        s.installed && s.members.len() == size && Some(l.leader) != gone && acting
    });
    let status = timeout(Duration::from_secs(10), settled)
        .await
        .map_err(|_| "no leader within 10 s")??;
    let leader = status.leaders.get(GROUP_ELECTION).copied();
    Ok(leader.ok_or("no leader")?)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    logs::init();
    let observe = observe::Observe::parse("One leader of three; its process killed, another elected with a greater epoch (sim backend).");
    let cluster = SimCluster::new(3);
    let name = GroupName::new("elect-a-leader")?;
    let mut members = Vec::new();
    for node in 1..=3 {
        let conn = cluster.process(NodeId(node))?.join(&name)?;
        let config = ElectionConfig {
            record_to: observe.record_to(node),
            ..ElectionConfig::default()
        };
        members.push(Election::start(conn, config).await?);
    }
    let mut named = Vec::new();
    for member in &members {
        named.push(leader_seen(member, 3, None).await?);
    }
    let first = named[0];
    println!("{} leads with epoch {}", first.leader, first.epoch);
    assert!(named.iter().all(|l| *l == first), "one leader: {named:?}");
    assert_eq!(first.leader, members[0].local(), "the most senior leads");

    cluster.kill_process(first.leader)?;
    let mut named = Vec::new();
    for member in members.iter().filter(|m| m.local() != first.leader) {
        named.push(leader_seen(member, 2, Some(first.leader)).await?);
    }
    let second = named[0];
    println!(
        "{} killed: {} leads with epoch {}",
        first.leader, second.leader, second.epoch
    );
    assert!(named.iter().all(|l| *l == second), "one leader: {named:?}");
    assert!(second.epoch > first.epoch, "the new epoch fences the old");
    observe.show(&members).await;
    Ok(())
}
