//! The election core driven synchronously over the sim transport (no actix).

use super::*;
use crate::election::messages::decode_envelope;
use crate::roster::Announcement;
use crate::transport::sim::{SimCluster, SimConnection, SimProcess, SimRng};
use crate::transport::{Connection, GroupName, NodeId, Transport, TransportEvent};
use crate::wire::{Codec, Kind};

mod versions;
use proptest::prelude::*;

/// A fake wall clock in microseconds: every reading is later than the last.
fn clock() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NOW: AtomicU64 = AtomicU64::new(1_000_000);
    NOW.fetch_add(1000, Ordering::Relaxed)
}

struct Peer {
    process: SimProcess,
    conn: SimConnection,
    core: ElectionCore,
    /// Fed exactly what `core` is fed: must end in the same state.
    twin: ElectionCore,
    codec: Codec,
    events: Vec<ElectionEvent>,
    applied: Vec<CandidacyOp>,
    closed: bool,
    gave_up: bool,
    /// What the core said when the group refused it.
    refused: Option<(Versions, u8)>,
}

impl Peer {
    fn new(cluster: &SimCluster, node: u32) -> Peer {
        Peer::speaking(cluster, node, Versions::this_build())
    }

    /// A member of a build that speaks `versions`.
    fn speaking(cluster: &SimCluster, node: u32, versions: Versions) -> Peer {
        let process = cluster.process(NodeId(node)).expect("node up");
        let conn = process
            .join(&GroupName::new("election").expect("name"))
            .expect("join");
        Peer {
            core: ElectionCore::new(process.member()).with_versions(versions),
            twin: ElectionCore::new(process.member()).with_versions(versions),
            process,
            conn,
            codec: Codec::new(1 << 20).reading(versions),
            events: Vec::new(),
            applied: Vec::new(),
            closed: false,
            gave_up: false,
            refused: None,
        }
    }

    fn member(&self) -> Member {
        self.process.member()
    }

    fn alive(&self) -> bool {
        !self.closed && self.process.is_alive()
    }

    fn mcast(&mut self, msg: &ElectionMessage) {
        let bytes = self.codec.encode(Kind::Election, msg).expect("encode");
        let _ = self.conn.mcast(&bytes);
    }

    fn stand(&mut self, name: &str) {
        self.mcast(&ElectionMessage::Stand(name.into()));
    }

    fn step(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let event = match self.conn.try_next_event() {
            Ok(Some(event)) => event,
            Ok(None) => return false,
            Err(_) => {
                self.closed = true;
                return false;
            }
        };
        let actions = match event {
            TransportEvent::Deliver { from, bytes } => match decode_envelope(&self.codec, &bytes) {
                Ok((version, msg)) => {
                    self.twin.handle_envelope(from, version, msg.clone());
                    self.core.handle_envelope(from, version, msg)
                }
                Err(e) => {
                    assert_eq!(
                        e,
                        crate::wire::WireError::UnsupportedVersion(bytes[4]),
                        "only a version this build does not read fails"
                    );
                    self.twin.count_undecodable(&e);
                    self.core.count_undecodable(&e);
                    Vec::new()
                }
            },
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => {
                let now = clock();
                self.twin.handle_confchg(&members, &joined, &left, now);
                self.core.handle_confchg(&members, &joined, &left, now)
            }
            TransportEvent::Quorum(q) => {
                self.twin.handle_quorum(q.clone());
                self.core.handle_quorum(q)
            }
            TransportEvent::TotemConfChg { .. } => Vec::new(),
        };
        // As the runtime: at the group's version once it is known.
        if let Some(v) = self.core.write_version() {
            self.codec = self.codec.at_version(v);
        }
        for action in actions {
            match action {
                Action::Mcast(msg) => self.mcast(&msg),
                Action::Purge => {}
                Action::Applied(op) => self.applied.push(op),
                Action::Resend(op) => match op {
                    CandidacyOp::Stand(n) => self.mcast(&ElectionMessage::Stand(n)),
                    CandidacyOp::Withdraw(n) => self.mcast(&ElectionMessage::Withdraw(n)),
                },
                Action::Event(e) => self.events.push(e),
                Action::GiveUp => self.gave_up = true,
                Action::Refused {
                    ours,
                    group_version,
                } => {
                    // As the runtime: it leaves and stops.
                    self.refused = Some((ours, group_version));
                    let _ = self.conn.leave();
                    self.closed = true;
                    return true;
                }
            }
        }
        true
    }

    fn leader(&self, name: &str) -> Option<Leadership> {
        self.core.leaders().get(name).copied()
    }

    fn acting(&self, name: &str) -> Option<Epoch> {
        self.core.acting().get(name).copied()
    }
}

fn settle(peers: &mut [Peer]) {
    loop {
        let mut moved = false;
        for p in peers.iter_mut() {
            while p.step() {
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

fn group_of(cluster: &SimCluster, nodes: &[u32]) -> Vec<Peer> {
    let mut peers = Vec::new();
    for node in nodes {
        peers.push(Peer::new(cluster, *node));
        settle(&mut peers);
    }
    peers
}

#[test]
fn the_first_member_leads_once_its_quorum_fact_is_back() {
    let cluster = SimCluster::new(3);
    let peers = group_of(&cluster, &[1]);
    let l = peers[0].leader(GROUP_ELECTION).expect("a leader");
    assert_eq!(l.leader, peers[0].member());
    assert!(
        l.epoch.term > 1_000_000,
        "terms start above the founding time"
    );
    assert_eq!(peers[0].acting(GROUP_ELECTION), Some(l.epoch));
    assert!(peers[0].events.contains(&ElectionEvent::Elected {
        name: GROUP_ELECTION.into(),
        epoch: l.epoch
    }));
}

#[test]
fn the_longest_lived_member_keeps_leading_as_others_join() {
    let cluster = SimCluster::new(3);
    // Node 3 joins first: seniority, not node order, decides.
    let peers = group_of(&cluster, &[3, 1, 2]);
    let first = peers[0].leader(GROUP_ELECTION).expect("a leader");
    for p in &peers {
        assert_eq!(p.leader(GROUP_ELECTION), Some(first), "joins mint no epoch");
    }
    assert_eq!(first.leader, peers[0].member());
    assert!(peers[1].acting(GROUP_ELECTION).is_none());
}

#[test]
fn a_killed_leader_is_replaced_by_the_next_senior_with_a_greater_epoch() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, &[1, 2, 3]);
    let before = peers[1].leader(GROUP_ELECTION).expect("leader");
    peers[0].process.kill().expect("kill");
    settle(&mut peers);
    let after = peers[1].leader(GROUP_ELECTION).expect("leader");
    assert_eq!(after.leader, peers[1].member());
    assert!(after.epoch > before.epoch);
    assert_eq!(peers[2].leader(GROUP_ELECTION), Some(after));
    assert_eq!(peers[1].acting(GROUP_ELECTION), Some(after.epoch));
}

#[test]
fn a_minority_has_no_leader_and_the_merge_keeps_one() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, &[1, 2, 3]);
    let first = peers[0].leader(GROUP_ELECTION).expect("leader");
    // The leader ends up alone.
    cluster
        .partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]])
        .expect("partition");
    settle(&mut peers);
    assert_eq!(peers[0].leader(GROUP_ELECTION), None);
    assert_eq!(peers[0].acting(GROUP_ELECTION), None);
    assert!(peers[0].events.contains(&ElectionEvent::Deposed {
        name: GROUP_ELECTION.into(),
        epoch: first.epoch
    }));
    let majority = peers[1].leader(GROUP_ELECTION).expect("leader");
    assert_eq!(majority.leader, peers[1].member());
    assert!(majority.epoch > first.epoch);
    cluster.heal();
    settle(&mut peers);
    let merged = peers[2].leader(GROUP_ELECTION).expect("leader");
    assert!(merged.epoch > majority.epoch);
    // The most senior of both sides leads again.
    assert_eq!(merged.leader, peers[0].member());
    for p in &peers {
        assert_eq!(p.leader(GROUP_ELECTION), Some(merged));
    }
}

#[test]
fn named_elections_follow_the_order_of_standing() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, &[1, 2, 3]);
    peers[2].stand("jobs");
    settle(&mut peers);
    peers[0].stand("jobs");
    settle(&mut peers);
    for p in &peers {
        assert_eq!(p.leader("jobs").map(|l| l.leader), Some(peers[2].member()));
    }
    assert_eq!(peers[2].applied, vec![CandidacyOp::Stand("jobs".into())]);
    let first = peers[0].leader("jobs").expect("leader");
    peers[2].mcast(&ElectionMessage::Withdraw("jobs".into()));
    settle(&mut peers);
    let next = peers[1].leader("jobs").expect("leader");
    assert_eq!(next.leader, peers[0].member());
    assert!(next.epoch > first.epoch);
    // A late joiner learns the candidates of every election.
    peers.push(Peer::new(&cluster, 2));
    settle(&mut peers);
    assert_eq!(peers[3].leader("jobs"), Some(next));
    assert_eq!(
        peers[3].leader(GROUP_ELECTION),
        peers[0].leader(GROUP_ELECTION)
    );
}

#[test]
fn infos_of_another_confchg_are_not_counted() {
    let local = Member::new(1, 1);
    let other = Member::new(2, 2);
    let mut core = ElectionCore::new(local);
    let joined = [MemberChange {
        member: local,
        reason: Reason::Join,
    }];
    core.handle_confchg(&[local, other], &joined, &[], 0);
    let stale = ElectionMessage::Info(Info {
        tag: 12345,
        clock: 0,
        fact: None,
        state: None,
        announced: Some(listed(&[local, other])),
        unannounced: vec![],
        merging: vec![],
        mark: 1,
    });
    core.handle_message(other, ElectionMessage::Mark(1));
    core.handle_message(other, stale);
    let mine = ElectionMessage::Info(Info {
        tag: view_tag(&[local, other]),
        clock: 0,
        fact: None,
        state: None,
        announced: Some(listed(&[local, other])),
        unannounced: vec![],
        merging: vec![],
        mark: 1,
    });
    core.handle_message(local, ElectionMessage::Mark(1));
    core.handle_message(local, mine);
    assert!(
        !core.is_installed(),
        "the other member's info is still missing"
    );
}

/// Checks, at a quiet point, that every installed view agrees on its
/// leaders, that a quorate view (by the cluster's own quorum) has exactly
/// one group leader and only it acts, and that a non-quorate one has no
/// member acting.
fn check_views(cluster: &SimCluster, peers: &[Peer]) -> Result<(), String> {
    let mut views: BTreeMap<Vec<Member>, Vec<&Peer>> = BTreeMap::new();
    for p in peers.iter().filter(|p| p.alive()) {
        if p.core.is_installed() {
            views.entry(p.core.view().to_vec()).or_default().push(p);
        }
    }
    for (view, members) in views {
        let leaders: BTreeSet<Option<Leadership>> =
            members.iter().map(|p| p.leader(GROUP_ELECTION)).collect();
        if leaders.len() != 1 {
            return Err(format!("view {view:?} disagrees: {leaders:?}"));
        }
        let quorate = cluster.quorum(view[0].node).is_some_and(|q| q.quorate);
        let acting: Vec<Member> = members
            .iter()
            .filter(|p| p.acting(GROUP_ELECTION).is_some())
            .map(|p| p.member())
            .collect();
        if quorate {
            let Some(Some(l)) = leaders.into_iter().next() else {
                return Err(format!("quorate view {view:?} has no leader"));
            };
            if acting != vec![l.leader] {
                return Err(format!(
                    "quorate view {view:?}: {acting:?} act, {l:?} leads"
                ));
            }
        } else if !acting.is_empty() {
            return Err(format!("{acting:?} act without quorum in {view:?}"));
        }
    }
    Ok(())
}

fn run_schedule(seed: u64) -> Result<(), String> {
    let mut rng = SimRng::new(seed);
    let cluster = SimCluster::new(3 + rng.below(3) as u32);
    let nodes = cluster.nodes().len() as u64;
    let mut peers = vec![Peer::new(&cluster, 1)];
    // Raw clients that never announce: they join, forge, leave.
    let mut outsiders: Vec<SimConnection> = Vec::new();
    let codec = Codec::new(1 << 20);
    // Every epoch ever decided, with its leader: one leader per epoch.
    let mut minted: BTreeMap<(String, Epoch), Member> = BTreeMap::new();
    let mut seen = 0;
    for _ in 0..40 {
        match rng.below(14) {
            0..=2 => {
                let node = 1 + rng.below(nodes) as u32;
                if cluster.is_up(NodeId(node)) {
                    peers.push(Peer::new(&cluster, node));
                }
            }
            3 => {
                let i = rng.below(peers.len() as u64) as usize;
                let _ = peers[i].process.kill();
            }
            4 => {
                let _ = cluster.crash_node(NodeId(1 + rng.below(nodes) as u32));
            }
            5 => {
                let _ = cluster.restart_node(NodeId(1 + rng.below(nodes) as u32));
            }
            6 | 7 => {
                let cut = 1 + rng.below(nodes) as u32;
                let mut a = Vec::new();
                let mut b = Vec::new();
                for n in 1..=nodes as u32 {
                    if n == cut || rng.chance(30) {
                        b.push(NodeId(n));
                    } else {
                        a.push(NodeId(n));
                    }
                }
                let _ = cluster.partition(&[&a, &b]);
            }
            8 => cluster.heal(),
            10 => {
                let node = 1 + rng.below(nodes) as u32;
                if let Ok(p) = cluster.process(NodeId(node)) {
                    if let Ok(c) = p.join(&GroupName::new("election").expect("name")) {
                        outsiders.push(c);
                    }
                }
            }
            11 if !outsiders.is_empty() => {
                let i = rng.below(outsiders.len() as u64) as usize;
                let o = &mut outsiders[i];
                let me = o.local();
                let victim = peers[rng.below(peers.len() as u64) as usize].member();
                let n = rng.below(1 << 20);
                let msg = match rng.below(6) {
                    0 => ElectionMessage::Stand(GROUP_ELECTION.into()),
                    1 => ElectionMessage::Stand("jobs".into()),
                    2 => ElectionMessage::Withdraw("jobs".into()),
                    3 => ElectionMessage::Fact(QuorumState {
                        quorate: rng.chance(50),
                        ring_id: crate::transport::RingId {
                            seq: n,
                            nodeid: NodeId(1),
                        },
                        nodes: vec![],
                    }),
                    4 => ElectionMessage::Info(Info {
                        tag: n,
                        clock: n,
                        fact: None,
                        state: Some(GroupState {
                            next_stamp: 0,
                            founded: n,
                            elections: vec![(
                                GROUP_ELECTION.into(),
                                ElectionState {
                                    candidates: vec![(me, 0), (victim, u64::MAX)],
                                    leader: Some(me),
                                    epoch: Some(Epoch {
                                        ring_seq: n,
                                        term: n,
                                    }),
                                },
                            )],
                        }),
                        announced: Some(listed(&[me, victim])),
                        unannounced: vec![victim],
                        merging: vec![],
                        mark: n % 3,
                    }),
                    _ => {
                        let _ = o.leave();
                        ElectionMessage::Stand("left".into())
                    }
                };
                // A client that left sends nothing more.
                let bytes = codec.encode(Kind::Election, &msg).expect("encode");
                let _ = o.mcast(&bytes);
            }
            9 => {
                let i = rng.below(peers.len() as u64) as usize;
                if peers[i].alive() {
                    peers[i].stand("jobs");
                }
            }
            _ => {}
        }
        for o in outsiders.iter_mut() {
            while let Ok(Some(_)) = o.try_next_event() {}
        }
        // Partial progress, then sometimes a quiet point to check.
        for p in peers.iter_mut() {
            for _ in 0..rng.below(10) {
                p.step();
            }
        }
        if rng.chance(40) {
            settle(&mut peers);
            check_views(&cluster, &peers)?;
        }
        for p in &peers {
            for e in &p.events[..] {
                if let ElectionEvent::LeaderChanged {
                    name,
                    leader: Some(l),
                    epoch: Some(epoch),
                } = e
                {
                    if let Some(other) = minted.insert((name.clone(), *epoch), *l) {
                        if other != *l {
                            return Err(format!("{name:?} epoch {epoch} named {other} and {l}"));
                        }
                    }
                }
            }
        }
        seen += 1;
    }
    let _ = seen;
    // Epochs each member saw only grow.
    for p in &peers {
        let mut last: Option<Epoch> = None;
        for e in &p.events {
            if let ElectionEvent::LeaderChanged {
                name,
                epoch: Some(epoch),
                ..
            } = e
            {
                if name == GROUP_ELECTION {
                    if last.is_some_and(|l| l >= *epoch) {
                        return Err(format!("{} saw epoch {epoch} after {last:?}", p.member()));
                    }
                    last = Some(*epoch);
                }
            }
        }
    }
    cluster.heal();
    for n in 1..=nodes as u32 {
        let _ = cluster.restart_node(NodeId(n));
    }
    for o in outsiders.iter_mut() {
        while let Ok(Some(_)) = o.try_next_event() {}
    }
    settle(&mut peers);
    check_views(&cluster, &peers)?;
    let strangers: BTreeSet<Member> = outsiders.iter().map(|o| o.local()).collect();
    for p in &peers {
        let (a, b) = (&p.core, &p.twin);
        if a.leaders() != b.leaders()
            || a.candidates() != b.candidates()
            || a.view() != b.view()
            || a.acting() != b.acting()
            || a.refused() != b.refused()
            || a.is_installed() != b.is_installed()
        {
            return Err(format!(
                "{}: the twin fed the same stream differs",
                p.member()
            ));
        }
        if let Some(s) = a.view().iter().find(|m| strangers.contains(m)) {
            return Err(format!("outsider {s} counts in {}'s view", p.member()));
        }
        if a.candidates()
            .values()
            .flatten()
            .any(|m| strangers.contains(m))
        {
            return Err(format!("an outsider is a candidate at {}", p.member()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_leader_per_quorate_view_and_one_leader_per_epoch(seed in any::<u64>()) {
        if let Err(why) = run_schedule(seed) {
            prop_assert!(false, "seed {seed}: {why}");
        }
    }

    #[test]
    fn arbitrary_messages_never_panic(msgs in proptest::collection::vec(any::<(u8, u64, String)>(), 0..40)) {
        let local = Member::new(1, 1);
        let other = Member::new(2, 2);
        let mut core = ElectionCore::new(local);
        core.handle_confchg(&[local, other], &[MemberChange { member: local, reason: Reason::Join }], &[], 0);
        for (kind, n, name) in msgs {
            let from = if n % 2 == 0 { local } else { other };
            let msg = match kind % 5 {
                4 => ElectionMessage::Mark(n % 3),
                0 => ElectionMessage::Stand(name),
                1 => ElectionMessage::Withdraw(name),
                2 => ElectionMessage::Info(Info { tag: n, clock: n, fact: None, state: Some(GroupState { next_stamp: n, founded: n, elections: vec![(name, ElectionState { candidates: vec![(other, n)], leader: Some(local), epoch: None })] }), announced: Some(listed(&[other])), unannounced: vec![], merging: vec![], mark: n % 3 }),
                _ => ElectionMessage::Fact(QuorumState { quorate: n % 3 == 0, ring_id: crate::transport::RingId { seq: n, nodeid: NodeId(1) }, nodes: vec![] }),
            };
            let _ = core.handle_message(from, msg);
        }
    }
}

#[test]
fn past_the_cap_of_held_candidacies_a_member_gives_up_and_goes_quiet() {
    let local = Member::new(1, 1);
    let other = Member::new(2, 2);
    let mut core = ElectionCore::with_cap(local, 2);
    let joined = [MemberChange {
        member: local,
        reason: Reason::Join,
    }];
    core.handle_confchg(&[local], &joined, &[], 10);
    core.handle_message(local, ElectionMessage::Announce(Announcement::this_build()));
    core.handle_confchg(
        &[local, other],
        &[MemberChange {
            member: other,
            reason: Reason::Join,
        }],
        &[],
        20,
    );
    // Installing (nobody's info is in): the member's own changes are held.
    assert!(!core.is_installed());
    assert!(core
        .handle_message(local, ElectionMessage::Stand("a".into()))
        .is_empty());
    // An outsider's are refused at once, so it cannot fill the buffer.
    for _ in 0..10 {
        core.handle_message(other, ElectionMessage::Stand("x".into()));
    }
    assert_eq!(core.refused().not_member, 10);
    assert!(core
        .handle_message(local, ElectionMessage::Stand("b".into()))
        .is_empty());
    let out = core.handle_message(local, ElectionMessage::Stand("c".into()));
    assert_eq!(
        out,
        vec![
            Action::Event(ElectionEvent::GaveUp { buffered: 2 }),
            Action::GiveUp
        ]
    );
    assert!(core.leaders().is_empty());
    assert!(core
        .handle_message(local, ElectionMessage::Stand("d".into()))
        .is_empty());
    assert!(core.handle_confchg(&[local], &[], &[], 30).is_empty());
}

/// The view tag is compared between members (and builds): pinned.
#[test]
fn the_view_tag_is_pinned() {
    let raw = [
        Member::new(1, 1000),
        Member::new(2, 2000),
        Member::new(3, 3000),
    ];
    assert_eq!(view_tag(&raw), 1_198_570_819_762_012_172);
}

/// `members`, each announced as this build, as an info lists them.
fn listed(members: &[Member]) -> Vec<(Member, Announcement)> {
    members
        .iter()
        .map(|m| (*m, Announcement::this_build()))
        .collect()
}

/// What a batch of actions multicasts.
fn mcasts(out: Vec<Action>) -> Vec<ElectionMessage> {
    out.into_iter()
        .filter_map(|a| match a {
            Action::Mcast(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Delivers `core`'s own messages back to it (and what they cause), in
/// order: a member that keeps up with the stream.
fn own(core: &mut ElectionCore, me: Member, out: Vec<Action>) {
    let mut queue: std::collections::VecDeque<ElectionMessage> = mcasts(out).into();
    while let Some(msg) = queue.pop_front() {
        queue.extend(mcasts(core.handle_message(me, msg)));
    }
}

/// Rule 5: an info of an earlier incarnation of the same raw view does not
/// count. `b` lags behind the stream: its info for the second time `{a, b}`
/// formed arrives after the view formed a third time (a silent `c` came
/// and went twice). Without marks `a` would install on it; with them it
/// waits for `b`'s info of this incarnation.
#[test]
fn an_info_of_an_earlier_incarnation_of_the_same_view_does_not_count() {
    let (a, b, c) = (Member::new(1, 1), Member::new(2, 2), Member::new(3, 3));
    let mut ca = ElectionCore::new(a);
    let join = |m| MemberChange {
        member: m,
        reason: Reason::Join,
    };
    let leave = |m| MemberChange {
        member: m,
        reason: Reason::Leave,
    };
    let ab = view_tag(&[a, b]);
    let info = |tag, mark| {
        ElectionMessage::Info(Info {
            tag,
            clock: 1,
            fact: None,
            state: None,
            announced: Some(listed(&[a, b])),
            unannounced: vec![],
            merging: vec![],
            mark,
        })
    };
    let announce = || ElectionMessage::Announce(Announcement::this_build());
    // `a` and `b` found the group together.
    let out = ca.handle_confchg(&[a, b], &[join(a), join(b)], &[], 1);
    own(&mut ca, a, out);
    for msg in [announce(), ElectionMessage::Mark(1), info(ab, 1)] {
        let out = ca.handle_message(b, msg);
        own(&mut ca, a, out);
    }
    assert!(ca.is_installed() && ca.view() == [a, b]);
    // `c` joins and leaves: {a, b} forms again; `b`'s mark comes back in
    // it, its info is still on its way.
    let out = ca.handle_confchg(&[a, b, c], &[join(c)], &[], 2);
    own(&mut ca, a, out);
    for msg in [
        announce(),
        ElectionMessage::Mark(2),
        info(view_tag(&[a, b, c]), 2),
    ] {
        let out = ca.handle_message(b, msg);
        own(&mut ca, a, out);
    }
    let out = ca.handle_confchg(&[a, b], &[], &[leave(c)], 3);
    own(&mut ca, a, out);
    let out = ca.handle_message(b, ElectionMessage::Mark(3));
    own(&mut ca, a, out);
    // And once more, before `b` reads on.
    let out = ca.handle_confchg(&[a, b, c], &[join(c)], &[], 4);
    own(&mut ca, a, out);
    let out = ca.handle_confchg(&[a, b], &[], &[leave(c)], 5);
    own(&mut ca, a, out);
    let out = ca.handle_message(b, info(ab, 3));
    own(&mut ca, a, out);
    assert!(
        !ca.is_installed(),
        "installed with an info of an earlier incarnation"
    );
    // `b` read both confchgs before its fourth mark came back: no info
    // answers that one; its fifth does.
    for msg in [
        announce(),
        ElectionMessage::Mark(4),
        ElectionMessage::Mark(5),
    ] {
        let out = ca.handle_message(b, msg);
        own(&mut ca, a, out);
    }
    assert!(!ca.is_installed());
    let out = ca.handle_message(b, info(ab, 5));
    own(&mut ca, a, out);
    assert!(ca.is_installed() && ca.view() == [a, b]);
}

/// Rule 4: a joiner judges the candidacy changes it held against the list
/// it learns. A member's `Stand`, sent just before it saw the joiner's
/// confchg, lands after that confchg and before the member's announcement
/// of this round: the joiner never heard that member announce before the
/// change, yet the member counted where it landed (it did on every other
/// member). Dropping it left the joiner with other candidates than the
/// group, so it named another leader at an epoch already minted.
#[test]
fn a_joiner_counts_a_stand_from_a_listed_member_it_has_not_heard_announce() {
    let (a, j) = (Member::new(1, 1), Member::new(2, 2));
    let join = |m| MemberChange {
        member: m,
        reason: Reason::Join,
    };
    let quorate = QuorumState {
        quorate: true,
        ring_id: crate::transport::RingId {
            seq: 1,
            nodeid: NodeId(1),
        },
        nodes: vec![NodeId(1), NodeId(2)],
    };
    // `a` founds the group alone.
    let mut ca = ElectionCore::new(a);
    ca.handle_quorum(quorate.clone());
    let out = ca.handle_confchg(&[a], &[join(a)], &[], 1_000);
    own(&mut ca, a, out);
    assert!(ca.is_installed());
    // `j` joins; both see the confchg, then the same stream.
    let mut cj = ElectionCore::new(j);
    cj.handle_quorum(quorate);
    let from_a = mcasts(ca.handle_confchg(&[a, j], &[join(j)], &[], 2_000));
    let from_j = mcasts(cj.handle_confchg(&[a, j], &[join(j)], &[], 2_000));
    let mut stream: std::collections::VecDeque<(Member, ElectionMessage)> =
        std::collections::VecDeque::new();
    // Sent by `a` before it read the confchg: lands first.
    stream.push_back((a, ElectionMessage::Stand("jobs".into())));
    stream.extend(from_j.into_iter().map(|m| (j, m)));
    stream.extend(from_a.into_iter().map(|m| (a, m)));
    while let Some((from, msg)) = stream.pop_front() {
        let out_a = mcasts(ca.handle_message(from, msg.clone()));
        let out_j = mcasts(cj.handle_message(from, msg));
        stream.extend(out_a.into_iter().map(|m| (a, m)));
        stream.extend(out_j.into_iter().map(|m| (j, m)));
    }
    assert!(ca.is_installed() && cj.is_installed());
    assert_eq!(cj.candidates().get("jobs"), Some(&vec![a]));
    assert_eq!(cj.candidates(), ca.candidates());
    assert_eq!(cj.leaders(), ca.leaders());
    assert_eq!(cj.refused().not_member, 0);
}

/// The schedule that found it: two leaders named for one epoch of "jobs".
#[test]
fn schedule_3409759313808876996_names_one_leader_per_epoch() {
    run_schedule(3409759313808876996).unwrap();
}
