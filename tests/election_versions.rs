//! Version negotiation of an election group on the sim backend: a group of
//! an older build is upgraded member by member. Newer members join and
//! follow the old version; the old members leave one by one while the
//! leadership passes on, one leader at a time; when the last old member
//! leaves the group moves up; and a process of the old build that joins
//! after that is refused, with an event on every member and an error on
//! itself.

use actix_cpg::transport::sim::SimCluster;
use actix_cpg::transport::Connection as _;
use actix_cpg::wire::{Versions, NEXT_PROTOCOL_VERSION, PROTOCOL_VERSION};
use actix_cpg::{
    Election, ElectionConfig, ElectionError, ElectionEvent, ElectionStatus, GroupName, Leadership,
    Member, NodeId, Transport, GROUP_ELECTION,
};
use tokio::sync::broadcast;
use tokio::time::{timeout, Duration};

/// The older build: the default version only.
const OLD: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: PROTOCOL_VERSION,
};
/// The newer build: the default version and the next.
const NEW: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};

/// A member that subscribed to its events as soon as it started.
struct Running {
    election: Election,
    events: broadcast::Receiver<ElectionEvent>,
}

fn config(versions: Versions) -> ElectionConfig {
    ElectionConfig {
        protocol_versions: versions,
        ..ElectionConfig::default()
    }
}

async fn start(cluster: &SimCluster, node: u32, versions: Versions) -> Running {
    let conn = cluster
        .process(NodeId(node))
        .expect("node up")
        .join(&GroupName::new("upgraded").expect("name"))
        .expect("join");
    let election = Election::start(conn, config(versions))
        .await
        .expect("started");
    let events = election.subscribe();
    Running { election, events }
}

/// Waits until `election`'s status satisfies `done` (10 s at most, a guard
/// against a hang, not a measure).
async fn until(
    election: &Election,
    what: &str,
    done: impl FnMut(&ElectionStatus) -> bool,
) -> ElectionStatus {
    let mut status = election.watch_status();
    let seen = timeout(Duration::from_secs(10), status.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", election.status()))
        .expect("open");
    seen.clone()
}

/// Waits until `member` sees an installed view of exactly `members` led
/// by `leader`.
async fn settled(member: &Running, members: &[Member], leader: Member) -> Leadership {
    let status = until(&member.election, "settled", |s| {
        s.installed
            && s.members == members
            && s.leaders
                .get(GROUP_ELECTION)
                .is_some_and(|l| l.leader == leader)
    })
    .await;
    status.leaders[GROUP_ELECTION]
}

/// The next event of `member` that `pick` accepts (10 s at most).
async fn next_event(
    member: &mut Running,
    what: &str,
    pick: impl Fn(&ElectionEvent) -> bool,
) -> ElectionEvent {
    let wait = async {
        loop {
            match member.events.recv().await {
                Ok(e) if pick(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("{what}: events ended: {e}"),
            }
        }
    };
    timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: no such event"))
}

/// Every member agrees on the leader, and only that one acts as leader.
fn one_leader(members: &[&Running]) -> Leadership {
    let statuses: Vec<ElectionStatus> = members.iter().map(|m| m.election.status()).collect();
    let leader = statuses[0].leaders[GROUP_ELECTION];
    for s in &statuses {
        assert_eq!(s.leaders.get(GROUP_ELECTION), Some(&leader), "{s:?}");
    }
    let acting: Vec<Member> = statuses
        .iter()
        .filter(|s| s.acting.contains_key(GROUP_ELECTION))
        .filter_map(|s| s.local)
        .collect();
    assert_eq!(acting, vec![leader.leader], "one leader at a time");
    leader
}

fn sorted(members: &[&Running]) -> Vec<Member> {
    let mut v: Vec<Member> = members.iter().map(|m| m.election.local()).collect();
    v.sort();
    v
}

#[actix_rt::test]
async fn an_election_group_moves_up_as_its_old_members_leave_and_refuses_a_build_left_behind() {
    let cluster = SimCluster::new(3);
    // A group of the old build, led by its first member.
    let old_a = start(&cluster, 1, OLD).await;
    let old_b = start(&cluster, 2, OLD).await;
    let all = sorted(&[&old_a, &old_b]);
    for m in [&old_a, &old_b] {
        settled(m, &all, old_a.election.local()).await;
    }
    let first = one_leader(&[&old_a, &old_b]);

    // Newer members join: the group keeps the old version and its leader.
    let mut new_a = start(&cluster, 3, NEW).await;
    let mut new_b = start(&cluster, 1, NEW).await;
    let all = sorted(&[&old_a, &old_b, &new_a, &new_b]);
    for m in [&old_a, &old_b, &new_a, &new_b] {
        assert_eq!(settled(m, &all, first.leader).await, first);
    }
    one_leader(&[&old_a, &old_b, &new_a, &new_b]);
    for m in [&new_a, &new_b] {
        assert_eq!(m.election.status().refused.total(), 0);
    }

    // The old leader leaves: the next most senior, the other old member,
    // leads with a greater epoch.
    old_a.election.leave().await.expect("left");
    let all = sorted(&[&old_b, &new_a, &new_b]);
    for m in [&old_b, &new_a, &new_b] {
        settled(m, &all, old_b.election.local()).await;
    }
    let second = one_leader(&[&old_b, &new_a, &new_b]);
    assert!(second.epoch > first.epoch);

    // The last old member leaves: the group moves up, at the same point of
    // the stream on every member, and leadership goes on.
    old_b.election.leave().await.expect("left");
    let all = sorted(&[&new_a, &new_b]);
    for m in [&mut new_a, &mut new_b] {
        let moved = next_event(m, "the move up", |e| {
            matches!(e, ElectionEvent::VersionChanged { from: Some(_), .. })
        })
        .await;
        assert_eq!(
            moved,
            ElectionEvent::VersionChanged {
                from: Some(PROTOCOL_VERSION),
                to: NEXT_PROTOCOL_VERSION
            }
        );
    }
    for m in [&new_a, &new_b] {
        settled(m, &all, new_a.election.local()).await;
    }
    let third = one_leader(&[&new_a, &new_b]);
    assert!(third.epoch > second.epoch);
    // Candidacies, sent at the new version, count.
    new_b.election.stand("jobs").await.expect("stood");
    for m in [&new_a, &new_b] {
        until(&m.election, "jobs led", |s| {
            s.leaders
                .get("jobs")
                .is_some_and(|l| l.leader == new_b.election.local())
        })
        .await;
        assert_eq!(m.election.status().refused.version, 0);
    }

    // A process of the old build cannot speak the group's version: it is
    // refused, and its start fails.
    let conn = cluster
        .process(NodeId(2))
        .expect("node up")
        .join(&GroupName::new("upgraded").expect("name"))
        .expect("join");
    let left_behind = conn.local();
    let refused = timeout(Duration::from_secs(10), Election::start(conn, config(OLD)))
        .await
        .expect("the start ends");
    assert_eq!(
        refused.map(|_| ()),
        Err(ElectionError::Incompatible {
            ours: OLD,
            group_version: NEXT_PROTOCOL_VERSION
        })
    );
    for m in [&mut new_a, &mut new_b] {
        let seen = next_event(m, "the refusal", |e| {
            matches!(e, ElectionEvent::MemberRefused { .. })
        })
        .await;
        assert_eq!(
            seen,
            ElectionEvent::MemberRefused {
                member: left_behind,
                versions: OLD,
                group_version: NEXT_PROTOCOL_VERSION
            }
        );
    }
    // Nothing it sent moved anything.
    for m in [&new_a, &new_b] {
        let s = settled(m, &all, new_a.election.local()).await;
        assert_eq!(s, third);
        let status = m.election.status();
        assert!(!status.candidates[GROUP_ELECTION].contains(&left_behind));
        assert_eq!(status.refused.incompatible, 1, "{:?}", status.refused);
    }
    one_leader(&[&new_a, &new_b]);
}
