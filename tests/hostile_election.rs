//! Elections against hostile CPG clients on the sim backend: a process that
//! joins the group and stays silent, an outsider that multicasts forged
//! election messages, and an announced member that lies about epochs.
//!
//! The forged bytes are built here with the same serde layout as the
//! library's private election messages (variant order and field order
//! matter to bincode), as a foreign client would.

use std::time::Duration;

use actix_cpg::election::ElectionRefusals;
use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::transport::QuorumState;
use actix_cpg::{
    Connection, Election, ElectionConfig, Epoch, GroupName, Leadership, Member, NodeId, Transport,
    TransportEvent, GROUP_ELECTION,
};

fn group() -> GroupName {
    GroupName::new("hostile-election").expect("name")
}

// Well-formed forgeries, shared with the other hostile-input tests.
use crate::support::forgeries;

/// The tag members put on infos for a raw view.
fn view_tag(members: &[Member]) -> u64 {
    forgeries::election_view_tag(members)
}

use forgeries::{
    election_listed, Announcement, ElectionInfo as Info, ElectionMessage as Msg, ElectionState,
    GroupState,
};

fn send(raw: &mut SimConnection, msg: &Msg) {
    raw.mcast(&forgeries::election(msg)).expect("sent");
}

/// Reads what the raw client was sent; returns the latest view it saw.
fn drain(raw: &mut SimConnection, view: &mut Vec<Member>) {
    while let Ok(Some(event)) = raw.try_next_event() {
        if let TransportEvent::ConfChg { members, .. } = event {
            *view = members;
        }
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn three(cluster: &SimCluster) -> Vec<Election> {
    let mut members = Vec::new();
    for node in 1..=3 {
        let conn = cluster
            .process(NodeId(node))
            .expect("up")
            .join(&group())
            .expect("join");
        members.push(
            Election::start(conn, ElectionConfig::default())
                .await
                .expect("started"),
        );
    }
    let ids: Vec<Member> = members.iter().map(|e| e.local()).collect();
    until("three members installed", || {
        members
            .iter()
            .all(|e| e.status().installed && e.status().members == ids)
    })
    .await;
    members
}

fn leader(members: &[Election]) -> Leadership {
    members[0].leader(GROUP_ELECTION).expect("a leader")
}

fn quorate(seq: u64, quorate: bool) -> QuorumState {
    forgeries::quorum_state(seq, quorate)
}

#[actix_rt::test]
async fn a_silent_client_neither_stalls_nor_sways_the_election() {
    let cluster = SimCluster::new(3);
    let members = three(&cluster).await;
    let before = leader(&members);
    assert_eq!(before.leader, members[0].local());
    // A monitoring client joins the group and never says a word.
    let mut silent = cluster
        .process(NodeId(2))
        .expect("up")
        .join(&group())
        .expect("join");
    let mut raw_view = Vec::new();
    let ids: Vec<Member> = members.iter().map(|e| e.local()).collect();
    // A candidacy multicast now is delivered after the client's confchg, so
    // it takes effect only once the view that followed is installed.
    tokio::time::timeout(Duration::from_secs(5), members[2].stand("jobs"))
        .await
        .expect("the install after the silent client's join did not stall")
        .expect("stood");
    drain(&mut silent, &mut raw_view);
    assert_eq!(raw_view.len(), 4);
    for e in &members {
        let s = e.status();
        assert!(s.installed);
        assert_eq!(s.members, ids, "the silent client is no member");
        assert_eq!(
            s.leaders.get(GROUP_ELECTION),
            Some(&before),
            "same leader, same epoch"
        );
        assert!(!s.candidates[GROUP_ELECTION].contains(&silent.local()));
    }
    assert_eq!(members[0].is_leader(GROUP_ELECTION), Some(before.epoch));
    let jobs = members[0].wait_leader("jobs").await.expect("jobs leader");
    assert_eq!(jobs.leader, members[2].local());
    // The leader leaves: the next senior member takes over, the client
    // still counts for nothing.
    members[0].leave().await.expect("left");
    until("the next leader", || {
        drain(&mut silent, &mut raw_view);
        members[1..].iter().all(|e| {
            e.status().installed
                && e.leader(GROUP_ELECTION).map(|l| l.leader) == Some(members[1].local())
        })
    })
    .await;
    let after = members[1].leader(GROUP_ELECTION).expect("leader");
    assert!(after.epoch > before.epoch);
    assert_eq!(members[1].is_leader(GROUP_ELECTION), Some(after.epoch));
    assert_eq!(members[2].status().members, ids[1..].to_vec());
    assert_eq!(members[1].status().refused, ElectionRefusals::default());
}

#[actix_rt::test]
async fn forged_messages_from_an_outsider_change_nothing_and_are_counted() {
    let cluster = SimCluster::new(3);
    let members = three(&cluster).await;
    members[1].stand("jobs").await.expect("stood");
    let jobs = members[0].wait_leader("jobs").await.expect("jobs leader");
    let before = leader(&members);
    let mut raw = cluster
        .process(NodeId(3))
        .expect("up")
        .join(&group())
        .expect("join");
    let me = raw.local();
    let mut raw_view = Vec::new();
    until("the outsider's view installed", || {
        drain(&mut raw, &mut raw_view);
        raw_view.len() == 4 && members.iter().all(|e| e.status().installed)
    })
    .await;
    let tag = view_tag(&raw_view);
    // Everything a member could say, from a process that never announced:
    // a candidacy in both elections, a withdrawal, a view info claiming the
    // leadership with a huge epoch, and a quorum fact saying "no quorum".
    send(&mut raw, &Msg::Stand(GROUP_ELECTION.into()));
    send(&mut raw, &Msg::Stand("jobs".into()));
    send(&mut raw, &Msg::Withdraw("jobs".into()));
    send(
        &mut raw,
        &Msg::Info(Info {
            tag,
            clock: u64::MAX,
            fact: Some(quorate(1 << 40, true)),
            state: Some(GroupState {
                next_stamp: 0,
                founded: u64::MAX - 1,
                elections: vec![(
                    GROUP_ELECTION.into(),
                    ElectionState {
                        candidates: vec![(me, 0)],
                        leader: Some(me),
                        epoch: Some(Epoch {
                            ring_seq: 1 << 40,
                            term: 1 << 40,
                        }),
                    },
                )],
            }),
            announced: Some(election_listed([me])),
            unannounced: vec![],
            merging: vec![],
            mark: 1,
        }),
    );
    send(&mut raw, &Msg::Fact(quorate(1 << 40, false)));
    until("five refusals everywhere", || {
        drain(&mut raw, &mut raw_view);
        members.iter().all(|e| e.status().refused.not_member == 5)
    })
    .await;
    for e in &members {
        let s = e.status();
        assert_eq!(s.leaders.get(GROUP_ELECTION), Some(&before));
        assert_eq!(s.leaders.get("jobs"), Some(&jobs));
        assert_eq!(s.candidates["jobs"], vec![members[1].local()]);
        assert!(!s.members.contains(&me));
        assert_eq!(s.refused.total(), 5, "{:?}", s.refused);
    }
    assert_eq!(members[0].is_leader(GROUP_ELECTION), Some(before.epoch));
    assert_eq!(members[1].is_leader("jobs"), Some(jobs.epoch));
}

/// An info from `liar` for `view` with a fact and elections far beyond
/// anything the stream reported.
fn lie(liar: &mut SimConnection, view: &[Member], announced: Vec<Member>) {
    let me = liar.local();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    // Its mark first, as every member's, so the info is judged on what it
    // claims.
    send(liar, &Msg::Mark(1));
    send(
        liar,
        &Msg::Info(Info {
            tag: view_tag(view),
            clock: now,
            fact: Some(quorate(1 << 40, true)),
            state: Some(GroupState {
                next_stamp: 0,
                founded: now,
                elections: vec![(
                    GROUP_ELECTION.into(),
                    ElectionState {
                        candidates: vec![(me, 0)],
                        leader: Some(me),
                        epoch: Some(Epoch {
                            ring_seq: 1 << 40,
                            term: now + 5,
                        }),
                    },
                )],
            }),
            announced: Some(election_listed(announced)),
            unannounced: vec![],
            merging: vec![],
            mark: 1,
        }),
    );
}

#[actix_rt::test]
async fn a_lying_member_cannot_push_the_epoch_past_the_bound() {
    let cluster = SimCluster::new(3);
    let members = three(&cluster).await;
    let before = leader(&members);
    let real_seq = cluster.quorum(NodeId(1)).expect("quorum").ring_id.seq;
    let mut liar = cluster
        .process(NodeId(3))
        .expect("up")
        .join(&group())
        .expect("join");
    let me = liar.local();
    let mut raw_view = Vec::new();
    until("the liar's confchg", || {
        drain(&mut liar, &mut raw_view);
        raw_view.len() == 4
    })
    .await;
    // It announces itself properly, then answers the round with a fact and
    // elections far beyond anything the stream reported.
    send(&mut liar, &Msg::Announce(Announcement::participant()));
    lie(
        &mut liar,
        &raw_view,
        members.iter().map(|e| e.local()).collect(),
    );
    until("the liar admitted", || {
        drain(&mut liar, &mut raw_view);
        members
            .iter()
            .all(|e| e.status().installed && e.status().members.contains(&me))
    })
    .await;
    for e in &members {
        let s = e.status();
        assert_eq!(s.leaders.get(GROUP_ELECTION), Some(&before), "no new epoch");
        assert_eq!(s.refused.epoch_jump, 1, "{:?}", s.refused);
        assert_eq!(s.refused.ring_jump, 1, "{:?}", s.refused);
        assert_eq!(
            s.candidates[GROUP_ELECTION].last(),
            Some(&me),
            "least senior"
        );
    }
    // A later fact from it is refused too.
    send(&mut liar, &Msg::Fact(quorate(1 << 40, true)));
    until("the fact refused", || {
        drain(&mut liar, &mut raw_view);
        members.iter().all(|e| e.status().refused.ring_jump == 2)
    })
    .await;
    // The leader dies; the liar answers the new round with the same lies.
    // The epoch minted for the next leader stays within the ring seqs the
    // honest members reported.
    cluster.kill_process(members[0].local()).expect("kill");
    until("the liar's next confchg", || {
        drain(&mut liar, &mut raw_view);
        raw_view.len() == 3
    })
    .await;
    lie(&mut liar, &raw_view, raw_view.clone());
    until("the next leader", || {
        drain(&mut liar, &mut raw_view);
        members[1..]
            .iter()
            .all(|e| e.leader(GROUP_ELECTION).map(|l| l.leader) == Some(members[1].local()))
    })
    .await;
    let after = members[1].leader(GROUP_ELECTION).expect("leader");
    assert!(after.epoch > before.epoch);
    let seq_now = cluster.quorum(NodeId(2)).expect("quorum").ring_id.seq;
    assert!(
        after.epoch.ring_seq <= seq_now.max(real_seq),
        "{} beyond the ring seq {seq_now}",
        after.epoch
    );
    assert_eq!(after.epoch.term, before.epoch.term + 1);
    for e in &members[1..] {
        let r = e.status().refused;
        assert_eq!((r.epoch_jump, r.ring_jump), (2, 3), "{r:?}");
    }
}
