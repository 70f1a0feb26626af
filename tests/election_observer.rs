//! An observer of an election group on the sim backend: it follows every
//! election but is never a candidate, even when it is the most senior
//! process of the group, and it can stand in none.

use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    Election, ElectionConfig, ElectionError, ElectionStatus, GroupName, Member, NodeId, Role,
    Transport, GROUP_ELECTION,
};
use tokio::time::{timeout, Duration};

/// Waits until `election` sees an installed view of `size` members led by
/// someone other than `gone`.
async fn led(election: &Election, size: usize, gone: Option<Member>) -> ElectionStatus {
    let mut status = election.watch_status();
    let settled = status.wait_for(|s| {
        s.installed
            && s.members.len() == size
            && s.leaders
                .get(GROUP_ELECTION)
                .is_some_and(|l| Some(l.leader) != gone)
    });
    let seen = timeout(Duration::from_secs(10), settled)
        .await
        .expect("a leader within 10 s")
        .expect("open");
    seen.clone()
}

#[actix_rt::test]
async fn an_observer_follows_the_elections_and_is_never_a_candidate() {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("observed").unwrap();
    // The observer joins first: as a participant it would be the most
    // senior, hence the leader.
    let observer = Election::start(
        cluster.process(NodeId(1)).unwrap().join(&name).unwrap(),
        ElectionConfig {
            role: Role::Observer,
            ..ElectionConfig::default()
        },
    )
    .await
    .unwrap();
    let mut members = Vec::new();
    for node in 2..=3 {
        let conn = cluster.process(NodeId(node)).unwrap().join(&name).unwrap();
        members.push(
            Election::start(conn, ElectionConfig::default())
                .await
                .unwrap(),
        );
    }
    let seen = led(&observer, 3, None).await;
    let first = seen.leaders[GROUP_ELECTION];
    assert_ne!(first.leader, observer.local(), "an observer never leads");
    assert_eq!(
        first.leader,
        members[0].local(),
        "the most senior participant leads"
    );
    assert!(!seen.candidates[GROUP_ELECTION].contains(&observer.local()));
    for m in &members {
        assert_eq!(led(m, 3, None).await.leaders[GROUP_ELECTION], first);
    }
    assert!(matches!(
        observer.stand("jobs").await,
        Err(ElectionError::Observer)
    ));

    // The leader goes: the other participant leads, never the observer.
    cluster.kill_process(first.leader).unwrap();
    let seen = led(&observer, 2, Some(first.leader)).await;
    let second = seen.leaders[GROUP_ELECTION];
    assert_eq!(second.leader, members[1].local());
    assert!(second.epoch > first.epoch);
    assert!(seen.acting.is_empty(), "the observer acts as no leader");

    // The last participant goes too: nobody leads.
    cluster.kill_process(second.leader).unwrap();
    let mut status = observer.watch_status();
    let alone = timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.installed && s.members.len() == 1),
    )
    .await
    .expect("installed alone")
    .expect("open")
    .clone();
    assert!(!alone.leaders.contains_key(GROUP_ELECTION), "{alone:?}");
}
