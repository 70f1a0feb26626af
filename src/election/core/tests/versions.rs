//! Rule 9: the group speaks the highest version every member speaks,
//! refuses who cannot speak it, and moves up where the last member that
//! held it back leaves.

use super::*;
use crate::wire::{Versions, NEXT_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// An older build: the default version only.
const OLD: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: PROTOCOL_VERSION,
};
/// A newer build: the default version and the next.
const NEW: Versions = Versions {
    min: PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};
/// A build that speaks only the next version.
const NEXT_ONLY: Versions = Versions {
    min: NEXT_PROTOCOL_VERSION,
    max: NEXT_PROTOCOL_VERSION,
};

/// Peers that join one after the other, speaking `versions` each.
fn group_speaking(cluster: &SimCluster, members: &[(u32, Versions)]) -> Vec<Peer> {
    let mut peers = Vec::new();
    for (node, versions) in members {
        peers.push(Peer::speaking(cluster, *node, *versions));
        settle(&mut peers);
    }
    peers
}

/// The events `p` reported from its `mark`th on, but whether it acts as
/// leader (its own).
fn group_events(p: &Peer, mark: usize) -> Vec<ElectionEvent> {
    p.events[mark..]
        .iter()
        .filter(|e| {
            !matches!(
                e,
                ElectionEvent::Elected { .. } | ElectionEvent::Deposed { .. }
            )
        })
        .cloned()
        .collect()
}

fn refused(member: Member, versions: Versions, group_version: u8) -> ElectionEvent {
    ElectionEvent::MemberRefused {
        member,
        versions,
        group_version,
    }
}

#[test]
fn a_process_that_cannot_speak_the_group_version_is_refused_by_every_member_alike() {
    let cluster = SimCluster::new(3);
    let mut peers = group_speaking(&cluster, &[(1, NEW), (2, NEW)]);
    for p in &peers {
        assert_eq!(p.core.write_version(), Some(NEXT_PROTOCOL_VERSION));
    }
    let leader = peers[0].leader(GROUP_ELECTION).expect("a leader");
    let marks: Vec<usize> = peers.iter().map(|p| p.events.len()).collect();
    peers.push(Peer::speaking(&cluster, 3, OLD));
    settle(&mut peers);
    let old = peers[2].member();
    let seen = group_events(&peers[0], marks[0]);
    assert_eq!(
        seen,
        group_events(&peers[1], marks[1]),
        "same events, same order"
    );
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, ElectionEvent::MemberRefused { .. }))
            .collect::<Vec<_>>(),
        vec![&refused(old, OLD, NEXT_PROTOCOL_VERSION)]
    );
    for p in &peers[..2] {
        assert_eq!(p.core.view(), [peers[0].member(), peers[1].member()]);
        assert_eq!(p.leader(GROUP_ELECTION), Some(leader), "nothing moved");
        assert!(!p.core.candidates()[GROUP_ELECTION].contains(&old));
        assert_eq!(p.core.refused().incompatible, 1);
        assert_eq!(p.core.write_version(), Some(NEXT_PROTOCOL_VERSION));
    }
}

#[test]
fn a_refused_joiner_learns_it_reports_it_about_itself_and_stops() {
    let cluster = SimCluster::new(3);
    let mut peers = group_speaking(&cluster, &[(1, NEW), (2, NEW)]);
    peers.push(Peer::speaking(&cluster, 3, OLD));
    settle(&mut peers);
    let old = &peers[2];
    assert_eq!(old.refused, Some((OLD, NEXT_PROTOCOL_VERSION)));
    assert!(old
        .events
        .contains(&refused(old.member(), OLD, NEXT_PROTOCOL_VERSION)));
    assert!(!old.core.is_installed());
    assert!(old.acting(GROUP_ELECTION).is_none());
    assert!(
        !old.events
            .iter()
            .any(|e| matches!(e, ElectionEvent::Installed { .. })),
        "a start would never have succeeded"
    );
    // It left: the members carry on without it.
    for p in &peers[..2] {
        assert!(p.core.is_installed());
        assert_eq!(p.core.view(), [peers[0].member(), peers[1].member()]);
    }
}

#[test]
fn the_group_never_moves_down_for_a_joiner() {
    let cluster = SimCluster::new(3);
    let mut peers = group_speaking(&cluster, &[(1, OLD), (2, NEW)]);
    peers.push(Peer::speaking(&cluster, 3, NEXT_ONLY));
    settle(&mut peers);
    assert_eq!(peers[2].refused, Some((NEXT_ONLY, PROTOCOL_VERSION)));
    for p in &peers[..2] {
        assert!(p
            .events
            .contains(&refused(peers[2].member(), NEXT_ONLY, PROTOCOL_VERSION)));
        assert_eq!(p.core.write_version(), Some(PROTOCOL_VERSION));
    }
}

#[test]
fn the_group_moves_up_where_the_last_old_member_leaves() {
    let cluster = SimCluster::new(3);
    let mut peers = group_speaking(&cluster, &[(1, OLD), (2, NEW), (3, NEW)]);
    for p in &peers {
        assert_eq!(p.core.write_version(), Some(PROTOCOL_VERSION));
        assert!(p.events.contains(&ElectionEvent::VersionChanged {
            from: None,
            to: PROTOCOL_VERSION
        }));
    }
    let before = peers[1].leader(GROUP_ELECTION).expect("a leader");
    assert_eq!(before.leader, peers[0].member());
    let marks: Vec<usize> = peers.iter().map(|p| p.events.len()).collect();
    peers[0].process.kill().expect("kill");
    settle(&mut peers);
    let seen = group_events(&peers[1], marks[1]);
    assert_eq!(
        seen,
        group_events(&peers[2], marks[2]),
        "same events, same order"
    );
    // At the confchg itself, before the round it starts.
    let moved = ElectionEvent::VersionChanged {
        from: Some(PROTOCOL_VERSION),
        to: NEXT_PROTOCOL_VERSION,
    };
    assert!(
        matches!(&seen[..2], [ElectionEvent::ViewChanged { .. }, e] if *e == moved),
        "{seen:?}"
    );
    let after = peers[1].leader(GROUP_ELECTION).expect("a leader");
    assert_eq!(after.leader, peers[1].member());
    assert!(after.epoch > before.epoch);
    assert_eq!(peers[2].leader(GROUP_ELECTION), Some(after));
    // Candidacies go out at the new version and count everywhere.
    peers[2].stand("jobs");
    settle(&mut peers);
    for p in &peers[1..] {
        assert_eq!(p.core.write_version(), Some(NEXT_PROTOCOL_VERSION));
        assert_eq!(p.leader("jobs").map(|l| l.leader), Some(peers[2].member()));
        assert_eq!(p.core.refused().version, 0);
    }
}

#[test]
fn a_message_at_a_version_not_every_member_speaks_is_refused_by_all() {
    let cluster = SimCluster::new(3);
    let mut peers = group_speaking(&cluster, &[(1, OLD), (2, NEW), (3, NEW)]);
    // A newer member writes at a version the group does not speak.
    let ahead = Codec::new(1 << 20)
        .reading(NEW)
        .at_version(NEXT_PROTOCOL_VERSION);
    for msg in [
        ElectionMessage::Stand("jobs".into()),
        ElectionMessage::Fact(crate::transport::QuorumState {
            quorate: false,
            ring_id: crate::transport::RingId {
                seq: 1,
                nodeid: NodeId(1),
            },
            nodes: vec![],
        }),
    ] {
        let bytes = ahead.encode(Kind::Election, &msg).expect("encodes");
        peers[1].conn.mcast(&bytes).expect("mcast");
    }
    let leaders: Vec<_> = peers.iter().map(|p| p.core.leaders()).collect();
    settle(&mut peers);
    for (p, before) in peers.iter().zip(leaders) {
        // The old member cannot read it, the others will not count it.
        assert_eq!(p.core.refused().version, 2, "{:?}", p.member());
        assert!(!p.core.candidates().contains_key("jobs"));
        assert_eq!(p.core.leaders(), before, "the fact changed nothing");
    }
    // At the group's version it counts.
    peers[1].stand("jobs");
    settle(&mut peers);
    for p in &peers {
        assert_eq!(p.leader("jobs").map(|l| l.leader), Some(peers[1].member()));
    }
}

/// Builds of every kind join, stand, are killed, and messages land at
/// random points: at every quiet point, each installed view agrees on its
/// leader and its version, every member speaks that version, and each
/// refused process could not speak the version it was refused at.
fn run_version_schedule(seed: u64) -> Result<(), String> {
    let mut rng = SimRng::new(seed);
    let cluster = SimCluster::new(3);
    let builds = [OLD, NEW, NEW, NEXT_ONLY];
    let mut peers = vec![Peer::speaking(&cluster, 1, builds[rng.below(3) as usize])];
    let mut speaks: BTreeMap<Member, Versions> = BTreeMap::new();
    for _ in 0..30 {
        match rng.below(8) {
            0..=2 => {
                let node = 1 + rng.below(3) as u32;
                let versions = builds[rng.below(builds.len() as u64) as usize];
                peers.push(Peer::speaking(&cluster, node, versions));
            }
            3 => {
                let i = rng.below(peers.len() as u64) as usize;
                let _ = peers[i].process.kill();
            }
            4 | 5 => {
                let i = rng.below(peers.len() as u64) as usize;
                if peers[i].alive() {
                    peers[i].stand("jobs");
                }
            }
            _ => {}
        }
        for p in &peers {
            speaks.insert(p.member(), p.core.announcement.versions());
        }
        for p in peers.iter_mut() {
            for _ in 0..rng.below(10) {
                p.step();
            }
        }
        if rng.chance(40) {
            settle(&mut peers);
            check_views(&cluster, &peers)?;
            check_versions(&peers, &speaks)?;
        }
    }
    settle(&mut peers);
    check_views(&cluster, &peers)?;
    check_versions(&peers, &speaks)
}

fn check_versions(peers: &[Peer], speaks: &BTreeMap<Member, Versions>) -> Result<(), String> {
    let mut views: BTreeMap<Vec<Member>, BTreeSet<Option<u8>>> = BTreeMap::new();
    for p in peers.iter().filter(|p| p.alive() && p.core.is_installed()) {
        let version = p.core.write_version();
        views
            .entry(p.core.view().to_vec())
            .or_default()
            .insert(version);
        let Some(v) = version else {
            return Err(format!("{} installed without a version", p.member()));
        };
        if let Some(m) = p.core.view().iter().find(|m| !speaks[m].contains(v)) {
            return Err(format!(
                "{m} counts at {} and does not speak v{v}",
                p.member()
            ));
        }
        if (p.core.leaders(), p.core.view()) != (p.twin.leaders(), p.twin.view()) {
            return Err(format!(
                "{}: the twin fed the same stream differs",
                p.member()
            ));
        }
    }
    if let Some((view, versions)) = views.iter().find(|(_, v)| v.len() > 1) {
        return Err(format!("view {view:?} speaks {versions:?}"));
    }
    for p in peers {
        if let Some((ours, group_version)) = p.refused {
            if ours.contains(group_version) {
                return Err(format!(
                    "{} refused at v{group_version} it speaks",
                    p.member()
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn builds_of_every_version_agree_on_leaders_and_versions(seed in any::<u64>()) {
        if let Err(why) = run_version_schedule(seed) {
            prop_assert!(false, "seed {seed}: {why}");
        }
    }
}

/// The messages a joiner's core hears from the members, driven by hand.
struct Joiner {
    core: ElectionCore,
    out: Vec<Action>,
}

impl Joiner {
    fn new(me: Member, versions: Versions) -> Joiner {
        Joiner {
            core: ElectionCore::new(me).with_versions(versions),
            out: Vec::new(),
        }
    }

    fn confchg(&mut self, members: &[Member], joined: &[Member], left: &[Member]) {
        let change = |reason| move |m: &Member| MemberChange { member: *m, reason };
        let joined: Vec<_> = joined.iter().map(change(Reason::Join)).collect();
        let left: Vec<_> = left.iter().map(change(Reason::Leave)).collect();
        let out = self.core.handle_confchg(members, &joined, &left, 1);
        self.out.extend(out);
    }

    fn hear(&mut self, from: Member, msg: ElectionMessage) {
        let out = self.core.handle_message(from, msg);
        self.out.extend(out);
    }

    /// Its own announcement, as it sent it.
    fn own_announcement(&self) -> ElectionMessage {
        self.out
            .iter()
            .find_map(|a| match a {
                Action::Mcast(m @ ElectionMessage::Announce(_)) => Some(m.clone()),
                _ => None,
            })
            .expect("announced")
    }

    fn events(&self) -> Vec<&ElectionEvent> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn refused(&self) -> Option<(Versions, u8)> {
        self.out.iter().find_map(|a| match a {
            Action::Refused {
                ours,
                group_version,
            } => Some((*ours, *group_version)),
            _ => None,
        })
    }
}

/// An info from a member that knows the members, for the raw view `raw`.
fn info_listing(raw: &[Member], listed: &[(Member, Versions)], mark: u64) -> ElectionMessage {
    let mut raw = raw.to_vec();
    raw.sort();
    ElectionMessage::Info(Info {
        tag: view_tag(&raw),
        clock: 1,
        fact: None,
        state: None,
        announced: Some(
            listed
                .iter()
                .map(|(m, v)| (*m, Announcement::speaking(*v)))
                .collect(),
        ),
        unannounced: vec![],
        merging: vec![],
        mark,
    })
}

/// A joiner that heard itself before an older member cannot tell the
/// group's version from that: had it judged the member's announcement
/// against itself, it would have refused a member everyone else holds.
#[test]
fn a_joiner_judges_no_version_before_it_knows_the_members() {
    let (old, me) = (Member::new(1, 1), Member::new(2, 2));
    let mut j = Joiner::new(me, NEW);
    j.confchg(&[old, me], &[me], &[]);
    let mine = j.own_announcement();
    j.hear(me, mine);
    j.hear(old, ElectionMessage::Announce(Announcement::speaking(OLD)));
    assert_eq!(j.core.refused().incompatible, 0);
    assert_eq!(j.core.write_version(), None, "it does not know yet");
    j.hear(old, ElectionMessage::Mark(1));
    j.hear(old, info_listing(&[old, me], &[(old, OLD)], 1));
    assert!(j.core.knows_roster());
    assert_eq!(j.core.view(), [old, me]);
    assert_eq!(j.core.refused().incompatible, 0);
    assert_eq!(j.core.write_version(), Some(PROTOCOL_VERSION));
    assert!(j.events().contains(&&ElectionEvent::VersionChanged {
        from: None,
        to: PROTOCOL_VERSION
    }));
}

/// The joiner's quorum change waits until it knows the version to write
/// it at.
#[test]
fn a_joiner_sends_its_facts_once_it_knows_the_version() {
    let (old, me) = (Member::new(1, 1), Member::new(2, 2));
    let mut j = Joiner::new(me, NEW);
    j.confchg(&[old, me], &[me], &[]);
    let mine = j.own_announcement();
    j.hear(me, mine);
    j.out.clear();
    let fact = crate::transport::QuorumState {
        quorate: true,
        ring_id: crate::transport::RingId {
            seq: 4,
            nodeid: NodeId(1),
        },
        nodes: vec![NodeId(1), NodeId(2)],
    };
    let out = j.core.handle_quorum(fact.clone());
    assert!(mcasts(out).is_empty(), "held");
    j.hear(old, ElectionMessage::Announce(Announcement::speaking(OLD)));
    j.hear(old, ElectionMessage::Mark(1));
    j.hear(old, info_listing(&[old, me], &[(old, OLD)], 1));
    assert_eq!(j.core.write_version(), Some(PROTOCOL_VERSION));
    assert!(mcasts(std::mem::take(&mut j.out)).contains(&ElectionMessage::Fact(fact)));
}

/// The joiner's announcement landed, was refused, and a confchg came
/// before any member told it who counts: the list, which lacks it, says
/// it was refused.
#[test]
fn a_joiner_refused_before_a_confchg_learns_it_from_the_list() {
    let (new, me, silent) = (Member::new(1, 1), Member::new(2, 2), Member::new(3, 3));
    let mut j = Joiner::new(me, OLD);
    j.confchg(&[new, me, silent], &[me], &[]);
    let mine = j.own_announcement();
    j.hear(me, mine);
    j.hear(
        new,
        ElectionMessage::Announce(Announcement::speaking(NEXT_ONLY)),
    );
    assert_eq!(j.refused(), None, "it does not know yet");
    // A silent process leaves: nobody announces again.
    j.confchg(&[new, me], &[], &[silent]);
    j.hear(new, ElectionMessage::Mark(1));
    j.hear(new, ElectionMessage::Mark(2));
    j.hear(new, info_listing(&[new, me], &[(new, NEXT_ONLY)], 2));
    assert_eq!(j.refused(), Some((OLD, NEXT_PROTOCOL_VERSION)));
    assert!(j
        .events()
        .contains(&&refused(me, OLD, NEXT_PROTOCOL_VERSION)));
    // It handles nothing more.
    assert!(j
        .core
        .handle_message(new, ElectionMessage::Stand("jobs".into()))
        .is_empty());
}

/// An info whose list of members no roster could hold is refused by
/// every member alike.
#[test]
fn an_info_listing_members_of_no_common_version_is_refused() {
    let (a, me) = (Member::new(1, 1), Member::new(2, 2));
    let mut j = Joiner::new(me, NEW);
    j.confchg(&[a, me], &[me], &[]);
    let mine = j.own_announcement();
    j.hear(me, mine);
    j.hear(a, ElectionMessage::Announce(Announcement::speaking(OLD)));
    j.hear(a, ElectionMessage::Mark(1));
    j.hear(a, info_listing(&[a, me], &[(a, OLD), (me, NEXT_ONLY)], 1));
    assert!(!j.core.knows_roster());
    assert_eq!(j.core.refused().malformed, 1);
}

/// Two processes of one build join together a group that speaks a
/// version they cannot: each is refused where its own announcement is
/// judged. The one whose announcement landed first is refused when a
/// member's info tells both who counts; the other follows the group from
/// then on without counting it (the view is installed for it, it is not
/// in it), and is refused when its own announcement lands. So two
/// processes fed one stream may stand differently for a while: one
/// refused and stopped, the other following.
#[test]
fn two_joiners_of_one_build_are_refused_each_where_its_announcement_is_judged() {
    let (member, first, second) = (Member::new(1, 1), Member::new(2, 2), Member::new(3, 3));
    let raw = [member, first, second];
    let mut joiners = [Joiner::new(first, OLD), Joiner::new(second, OLD)];
    for j in &mut joiners {
        j.confchg(&raw, &[first, second], &[]);
    }
    let first_announcement = joiners[0].own_announcement();
    let second_announcement = joiners[1].own_announcement();
    let stream = [
        (first, first_announcement),
        (
            member,
            ElectionMessage::Announce(Announcement::speaking(NEXT_ONLY)),
        ),
        (member, ElectionMessage::Mark(1)),
        (member, info_listing(&raw, &[(member, NEXT_ONLY)], 1)),
    ];
    for (from, msg) in stream {
        for j in &mut joiners {
            j.hear(from, msg.clone());
        }
    }
    let [early, late] = &joiners;
    assert_eq!(early.refused(), Some((OLD, NEXT_PROTOCOL_VERSION)));
    assert!(!early.core.round_done(), "it stopped");
    assert_eq!(late.refused(), None, "its announcement is still on its way");
    assert!(late.core.round_done(), "it follows the group");
    assert!(!late.core.is_installed(), "without being in it");
    assert_eq!(late.core.view(), [member], "the refused one never counts");
    assert!(late
        .events()
        .contains(&&refused(first, OLD, NEXT_PROTOCOL_VERSION)));

    for j in &mut joiners {
        j.hear(second, second_announcement.clone());
    }
    let [early, late] = &joiners;
    assert_eq!(late.refused(), Some((OLD, NEXT_PROTOCOL_VERSION)));
    assert!(late
        .events()
        .contains(&&refused(second, OLD, NEXT_PROTOCOL_VERSION)));
    assert!(
        !early
            .events()
            .contains(&&refused(second, OLD, NEXT_PROTOCOL_VERSION)),
        "a stopped process judges nothing"
    );
}
