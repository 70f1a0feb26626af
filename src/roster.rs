//! Who counts for decisions: the members of a CPG view that have announced
//! themselves in the ordered stream.
//!
//! A CPG group is not a trust boundary (DESIGN.md §6): any process corosync
//! lets connect can join it, stay silent, or multicast anything. So the raw
//! view CPG reports is not the set of members a decision may count. A
//! process becomes a *member* only when its [`Announcement`] is delivered
//! while it is in the view, and stops being one when it leaves the view.
//! Every member sees the same confchgs and announcements at the same
//! positions, so every member holding the same roster reaches the same
//! effective view at the same point of the stream.
//!
//! ```text
//!   raw CPG events                  Roster                  effective events
//!  ───────────────────►  ┌─────────────────────────┐  ──────────────────────►
//!   handle_confchg        │ view: raw CPG view      │   Change { members,
//!    (members, joined,    │ announced ⊆ view        │            joined,
//!     left)               │ pending: in view, not   │            left }
//!   handle_announce(from) │   announced (+ reason   │   or nothing: an
//!                         │   they joined with)     │   outsider came or went
//!                         └─────────────────────────┘
//! ```
//!
//! Rules, identical on every member:
//!
//! 1. A confchg changes the effective view only through announced members
//!    that left; a process that joins is *pending* and changes nothing, so
//!    a silent or foreign client can neither stall nor sway a decision.
//!    A confchg that only removes members therefore asks nothing new of the
//!    survivors: failover costs what it cost before announcements existed.
//! 2. An announcement from a pending process admits it: the effective view
//!    gains it, with the reason it joined the CPG view (`Join`, or `NodeUp`
//!    after a merge). An announcement from a process not in the view (it
//!    left before its announcement was delivered) or from one already
//!    announced changes nothing.
//! 3. A member announces itself after every confchg that brings anyone in
//!    ([`Roster::should_announce`]): a joiner, or the other side of a merge,
//!    knows none of the members already there until it hears from them.
//! 4. A member that gets the group state from another (a snapshot) adopts
//!    the roster that came with it ([`Roster::adopt`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::transport::{Member, MemberChange, Reason};

/// What a member does in a group, as its announcement says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Takes part: registers names, hosts the children of the trees it
    /// starts, counts for decisions.
    #[default]
    Participant,
    /// Sees what a participant sees (the registry, the trees and where
    /// their children run) and can call any name, but takes part in no
    /// decision: it registers no name, starts and hosts no tree, and puts
    /// no clock or quorum fact into the stream. For the library's own
    /// clients and tools (`GroupConfig::role`).
    Observer,
}

/// What a process says of itself to become a member. The wire type of the
/// announcement every protocol carries; its layout is frozen (see
/// [`crate::wire`]): every build since version 2 reads it in an envelope of
/// any version, so members of different builds judge the same announcement
/// alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Announcement {
    /// The lowest protocol version the sender speaks.
    pub min_version: u8,
    /// The highest protocol version the sender speaks.
    pub max_version: u8,
    /// What the sender does in the group.
    pub role: Role,
}

impl Announcement {
    /// What this build says of itself by default, as a participant.
    pub(crate) fn this_build() -> Self {
        Announcement::speaking(crate::wire::Versions::this_build())
    }

    /// A participant speaking `versions`.
    pub(crate) fn speaking(versions: crate::wire::Versions) -> Self {
        Announcement {
            min_version: versions.min,
            max_version: versions.max,
            role: Role::Participant,
        }
    }

    /// The same, speaking `versions`.
    pub(crate) fn with_versions(self, versions: crate::wire::Versions) -> Self {
        Announcement {
            min_version: versions.min,
            max_version: versions.max,
            ..self
        }
    }

    /// The same, in `role`.
    pub(crate) fn with_role(self, role: Role) -> Self {
        Announcement { role, ..self }
    }

    /// The versions it names.
    pub(crate) fn versions(&self) -> crate::wire::Versions {
        crate::wire::Versions {
            min: self.min_version,
            max: self.max_version,
        }
    }

    /// Whether the sender speaks protocol version `v`.
    pub(crate) fn speaks(&self, v: u8) -> bool {
        self.min_version <= v && v <= self.max_version
    }
}

/// A change of the effective view (announced members only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// The effective view after the change, sorted.
    pub members: Vec<Member>,
    /// Members admitted by this change, with how they joined the CPG view.
    pub joined: Vec<MemberChange>,
    /// Announced members that left the CPG view, with the reason.
    pub left: Vec<MemberChange>,
}

/// A process refused because it cannot speak the group's protocol
/// version (rule 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The refused process.
    pub member: Member,
    /// The versions it announced.
    pub versions: crate::wire::Versions,
    /// The version the group speaks where it was refused.
    pub group_version: u8,
}

/// What an announcement did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It admitted its sender.
    Admitted(Change),
    /// Its sender cannot speak the group's version: it stays outside.
    Refused(Refusal),
    /// Nothing: the sender is not in the view, or already a member.
    Nothing,
}

/// The raw view and who in it has announced itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Roster {
    view: BTreeSet<Member>,
    /// The members, with what each announced (versions and role).
    announced: BTreeMap<Member, Announcement>,
    /// In the view, not yet announced, with the reason they joined it.
    pending: BTreeMap<Member, Reason>,
    /// Members taken in before their announcement arrived (peers that fall
    /// back together on their own state, see the group core): they count
    /// for no decision about versions until it does.
    unconfirmed: BTreeSet<Member>,
    /// Whether the last confchg brought anyone in.
    joined_last: bool,
    /// The versions every member that announced itself speaks, kept with
    /// the members: read for every delivered message (rule 5).
    common: Option<crate::wire::Versions>,
}

impl Roster {
    /// A roster that has seen no confchg.
    pub(crate) fn new() -> Self {
        Roster::default()
    }

    /// The effective view: announced members, sorted.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.announced.keys().copied().collect()
    }

    /// The members with their announcements, sorted: what a snapshot
    /// carries for [`Roster::adopt`].
    pub(crate) fn announcements(&self) -> Vec<(Member, Announcement)> {
        self.announced.iter().map(|(m, a)| (*m, *a)).collect()
    }

    /// What the member `m` announced, if it is one.
    pub(crate) fn announcement(&self, m: Member) -> Option<Announcement> {
        self.announced.get(&m).copied()
    }

    /// Whether `m` counts for decisions.
    pub(crate) fn is_member(&self, m: Member) -> bool {
        self.announced.contains_key(&m)
    }

    /// Whether `m` is in the raw CPG view (announced or not).
    pub(crate) fn in_view(&self, m: Member) -> bool {
        self.view.contains(&m)
    }

    /// Processes in the view that have not announced themselves.
    pub(crate) fn pending(&self) -> impl Iterator<Item = Member> + '_ {
        self.pending.keys().copied()
    }

    /// The protocol version the group speaks (rule 5): the highest every
    /// member speaks. `None` while nobody is a member.
    pub(crate) fn group_version(&self) -> Option<u8> {
        self.common.map(|c| c.max)
    }

    /// The members' announcements, but those not arrived yet.
    fn known(&self) -> impl Iterator<Item = &Announcement> {
        self.announced
            .iter()
            .filter(|(m, _)| !self.unconfirmed.contains(m))
            .map(|(_, a)| a)
    }

    /// The envelope versions a message may carry to count (rule 5): those
    /// every member speaks. `None` while nobody is a member.
    pub(crate) fn common_versions(&self) -> Option<crate::wire::Versions> {
        self.common
    }

    /// Recomputes [`Roster::common_versions`] after the members or what
    /// they announced changed.
    fn settle_versions(&mut self) {
        let max = self.known().map(|a| a.max_version).min();
        let min = self.known().map(|a| a.min_version).max();
        self.common = min
            .zip(max)
            .map(|(min, max)| crate::wire::Versions { min, max });
    }

    /// Whether a message in an envelope of version `v` counts (rule 5):
    /// every member speaks `v` (any version does while nobody is a member).
    pub(crate) fn counts_version(&self, v: u8) -> bool {
        self.common_versions()
            .is_none_or(|c| c.min <= v && v <= c.max)
    }

    /// Whether this member should announce itself now: the last confchg
    /// brought in processes that may not know it (rule 3).
    pub(crate) fn should_announce(&self) -> bool {
        self.joined_last
    }

    /// A raw confchg (rule 1). `None` when the effective view is unchanged.
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Option<Change> {
        self.view = members.iter().copied().collect();
        self.joined_last = !joined.is_empty();
        for change in joined {
            if self.view.contains(&change.member) && !self.announced.contains_key(&change.member) {
                self.pending.insert(change.member, change.reason);
            }
        }
        let gone: Vec<MemberChange> = left
            .iter()
            .filter(|c| self.announced.contains_key(&c.member) && !self.view.contains(&c.member))
            .copied()
            .collect();
        let view = &self.view;
        self.announced.retain(|m, _| view.contains(m));
        self.pending.retain(|m, _| view.contains(m));
        self.unconfirmed.retain(|m| view.contains(m));
        self.settle_versions();
        if gone.is_empty() {
            return None;
        }
        Some(Change {
            members: self.members(),
            joined: Vec::new(),
            left: gone,
        })
    }

    /// An announcement `a` delivered from `from` (rules 2 and 5).
    pub(crate) fn handle_announce(&mut self, from: Member, a: Announcement) -> Admission {
        if let Some(known) = self.announced.get_mut(&from) {
            // A member taken in before its announcement arrived learns what
            // it speaks now, at the same position everywhere.
            if self.unconfirmed.remove(&from) {
                *known = a;
                self.settle_versions();
            }
            return Admission::Nothing;
        }
        if !self.view.contains(&from) {
            return Admission::Nothing;
        }
        if let Some(group_version) = self.group_version() {
            if !a.speaks(group_version) {
                return Admission::Refused(Refusal {
                    member: from,
                    versions: a.versions(),
                    group_version,
                });
            }
        } else if a.min_version > a.max_version {
            // Speaks nothing: no version could ever be the group's.
            return Admission::Refused(Refusal {
                member: from,
                versions: a.versions(),
                group_version: a.max_version,
            });
        }
        let reason = self.pending.remove(&from).unwrap_or(Reason::Join);
        self.announced.insert(from, a);
        self.settle_versions();
        Admission::Admitted(Change {
            members: self.members(),
            joined: vec![MemberChange {
                member: from,
                reason,
            }],
            left: Vec::new(),
        })
    }

    /// Takes the members, with their announcements, from transferred state
    /// (rule 4): members not in the raw view are ignored; everyone else in
    /// the view stays pending.
    pub(crate) fn adopt(&mut self, announced: impl IntoIterator<Item = (Member, Announcement)>) {
        let view = &self.view;
        self.announced = announced
            .into_iter()
            .filter(|(m, _)| view.contains(m))
            .collect();
        for m in &self.view {
            if !self.announced.contains_key(m) {
                self.pending.entry(*m).or_insert(Reason::Join);
            }
        }
        let announced = &self.announced;
        self.pending.retain(|m, _| !announced.contains_key(m));
        self.unconfirmed.clear();
        self.settle_versions();
    }

    /// Takes `peers` as the members, each with its announcement where it
    /// arrived; one still on its way is taken in all the same, counts for
    /// no decision about versions, and is learnt when it arrives (a
    /// participant until then). The rest as [`Roster::adopt`].
    pub(crate) fn adopt_peers(
        &mut self,
        peers: impl IntoIterator<Item = (Member, Option<Announcement>)>,
    ) {
        let mut unconfirmed = BTreeSet::new();
        let announced: Vec<(Member, Announcement)> = peers
            .into_iter()
            .map(|(m, a)| {
                let a = a.unwrap_or_else(|| {
                    unconfirmed.insert(m);
                    Announcement::this_build()
                });
                (m, a)
            })
            .collect();
        self.adopt(announced);
        let view = &self.view;
        self.unconfirmed = unconfirmed
            .into_iter()
            .filter(|m| view.contains(m))
            .collect();
        self.settle_versions();
    }

    /// Whether the member `m` is an observer.
    pub(crate) fn is_observer(&self, m: Member) -> bool {
        self.announced
            .get(&m)
            .is_some_and(|a| a.role == Role::Observer)
    }

    /// The observers among the members, sorted (the roles travel in the
    /// announcements now: only tests ask).
    #[cfg(test)]
    pub(crate) fn observers(&self) -> Vec<Member> {
        self.announced
            .iter()
            .filter(|(_, a)| a.role == Role::Observer)
            .map(|(m, _)| *m)
            .collect()
    }

    /// Whether `m` is pending after a merge (it joined the view with
    /// `NodeUp`): a member of another side, whose messages sent just before
    /// it processed the merging confchg arrive ahead of its announcement.
    pub(crate) fn pending_after_merge(&self, m: Member) -> bool {
        self.pending.get(&m) == Some(&Reason::NodeUp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(n: u32) -> Member {
        Member::new(n, 100 + n)
    }

    fn a() -> Announcement {
        Announcement::this_build()
    }

    fn speaking(min: u8, max: u8) -> Announcement {
        Announcement::speaking(crate::wire::Versions { min, max })
    }

    fn admitted(x: Admission) -> Option<Change> {
        match x {
            Admission::Admitted(c) => Some(c),
            _ => None,
        }
    }

    fn ch(n: u32, reason: Reason) -> MemberChange {
        MemberChange {
            member: m(n),
            reason,
        }
    }

    #[test]
    fn an_outsider_that_comes_and_goes_changes_nothing() {
        let mut r = Roster::new();
        assert_eq!(r.handle_confchg(&[m(1)], &[ch(1, Reason::Join)], &[]), None);
        assert!(admitted(r.handle_announce(m(1), a())).is_some());
        // A silent client joins, stays, leaves.
        assert_eq!(
            r.handle_confchg(&[m(1), m(9)], &[ch(9, Reason::Join)], &[]),
            None
        );
        assert!(r.should_announce());
        assert_eq!(r.members(), vec![m(1)]);
        assert_eq!(r.pending().collect::<Vec<_>>(), vec![m(9)]);
        assert_eq!(
            r.handle_confchg(&[m(1)], &[], &[ch(9, Reason::ProcDown)]),
            None
        );
        assert!(!r.should_announce());
        assert_eq!(r.members(), vec![m(1)]);
    }

    #[test]
    fn announcements_admit_with_the_reason_they_joined_with() {
        let mut r = Roster::new();
        r.handle_confchg(
            &[m(1), m(2)],
            &[ch(1, Reason::Join), ch(2, Reason::NodeUp)],
            &[],
        );
        let c = admitted(r.handle_announce(m(2), a())).expect("admitted");
        assert_eq!(c.joined, vec![ch(2, Reason::NodeUp)]);
        assert_eq!(c.members, vec![m(2)]);
        assert_eq!(
            r.handle_announce(m(2), a()),
            Admission::Nothing,
            "twice admits nobody"
        );
        assert_eq!(
            r.handle_announce(m(7), a()),
            Admission::Nothing,
            "not in the view"
        );
        let c = admitted(r.handle_announce(m(1), a())).expect("admitted");
        assert_eq!(c.members, vec![m(1), m(2)]);
    }

    #[test]
    fn a_member_that_leaves_is_an_effective_leave_and_its_late_announcement_is_void() {
        let mut r = Roster::new();
        r.handle_confchg(&[m(1), m(2), m(3)], &[], &[]);
        r.adopt([(m(1), a()), (m(2), a())]);
        let c = r
            .handle_confchg(
                &[m(1)],
                &[],
                &[ch(2, Reason::NodeDown), ch(3, Reason::Leave)],
            )
            .expect("changed");
        assert_eq!(c.left, vec![ch(2, Reason::NodeDown)]);
        assert_eq!(c.members, vec![m(1)]);
        assert_eq!(r.handle_announce(m(3), a()), Admission::Nothing);
    }

    #[test]
    fn a_process_that_merged_in_is_pending_after_a_merge_until_it_announces() {
        let mut r = Roster::new();
        r.handle_confchg(
            &[m(1), m(2), m(3)],
            &[ch(2, Reason::NodeUp), ch(3, Reason::Join)],
            &[],
        );
        assert!(r.pending_after_merge(m(2)));
        assert!(!r.pending_after_merge(m(3)));
        assert!(!r.pending_after_merge(m(1)), "not pending at all");
        r.handle_announce(m(2), a());
        assert!(!r.pending_after_merge(m(2)));
    }

    #[test]
    fn adopting_keeps_only_the_view_and_leaves_the_rest_pending() {
        let mut r = Roster::new();
        r.handle_confchg(&[m(1), m(2), m(3)], &[ch(3, Reason::Join)], &[]);
        r.adopt([(m(1), a()), (m(5), a())]);
        assert_eq!(r.members(), vec![m(1)]);
        assert_eq!(r.pending().collect::<Vec<_>>(), vec![m(2), m(3)]);
        assert!(admitted(r.handle_announce(m(2), a())).is_some());
    }

    #[test]
    fn the_group_speaks_the_highest_version_every_member_speaks_and_refuses_who_cannot() {
        let mut r = Roster::new();
        r.handle_confchg(
            &[m(1), m(2)],
            &[ch(1, Reason::Join), ch(2, Reason::Join)],
            &[],
        );
        assert_eq!(r.group_version(), None);
        assert!(r.counts_version(9), "nobody yet: any version counts");
        // The first member sets it: the highest it speaks.
        assert!(admitted(r.handle_announce(m(1), speaking(2, 2))).is_some());
        assert_eq!(r.group_version(), Some(2));
        // A newer build that also speaks 2 comes in; the group stays at 2.
        assert!(admitted(r.handle_announce(m(2), speaking(2, 3))).is_some());
        assert_eq!(r.group_version(), Some(2));
        assert_eq!(
            r.common_versions(),
            Some(crate::wire::Versions { min: 2, max: 2 })
        );
        assert!(!r.counts_version(3), "the old member cannot read 3");
        // One that speaks only 3 is refused, and stays outside.
        r.handle_confchg(&[m(1), m(2), m(3)], &[ch(3, Reason::Join)], &[]);
        assert_eq!(
            r.handle_announce(m(3), speaking(3, 3)),
            Admission::Refused(Refusal {
                member: m(3),
                versions: crate::wire::Versions { min: 3, max: 3 },
                group_version: 2,
            })
        );
        assert!(!r.is_member(m(3)));
        // The old member leaves: the group moves up, and the process that
        // was refused is admitted when it announces again.
        r.handle_confchg(&[m(2), m(3)], &[], &[ch(1, Reason::Leave)]);
        assert_eq!(r.group_version(), Some(3));
        assert!(
            r.counts_version(2) && r.counts_version(3),
            "both still readable"
        );
        assert!(admitted(r.handle_announce(m(3), speaking(3, 3))).is_some());
        assert_eq!(
            r.common_versions(),
            Some(crate::wire::Versions { min: 3, max: 3 })
        );
        // It never moves down: an old build is refused now.
        r.handle_confchg(&[m(2), m(3), m(4)], &[ch(4, Reason::Join)], &[]);
        assert!(matches!(
            r.handle_announce(m(4), speaking(2, 2)),
            Admission::Refused(Refusal {
                group_version: 3,
                ..
            })
        ));
    }

    #[test]
    fn an_announcement_of_no_version_at_all_is_refused_even_by_an_empty_group() {
        let mut r = Roster::new();
        r.handle_confchg(&[m(1)], &[ch(1, Reason::Join)], &[]);
        assert!(matches!(
            r.handle_announce(m(1), speaking(4, 3)),
            Admission::Refused(_)
        ));
        assert_eq!(r.group_version(), None);
    }

    #[test]
    fn roles_come_with_the_announcement_and_with_adoption() {
        let mut r = Roster::new();
        r.handle_confchg(&[m(1), m(2)], &[], &[]);
        r.adopt([(m(1), a()), (m(2), a().with_role(Role::Observer))]);
        assert!(r.is_observer(m(2)) && !r.is_observer(m(1)));
        assert_eq!(r.observers(), vec![m(2)]);
    }

    proptest! {
        /// Two rosters fed the same stream end equal, and the effective
        /// view is always within the raw view.
        #[test]
        fn same_stream_same_roster(ops in proptest::collection::vec((0u8..3, 1u32..6, any::<bool>()), 0..80)) {
            let mut a = Roster::new();
            let mut b = Roster::new();
            let mut view: BTreeSet<Member> = BTreeSet::new();
            for (op, n, flag) in ops {
                match op {
                    0 if !view.contains(&m(n)) => {
                        view.insert(m(n));
                        let members: Vec<_> = view.iter().copied().collect();
                        let reason = if flag { Reason::Join } else { Reason::NodeUp };
                        prop_assert_eq!(
                            a.handle_confchg(&members, &[ch(n, reason)], &[]),
                            b.handle_confchg(&members, &[ch(n, reason)], &[])
                        );
                    }
                    1 if view.remove(&m(n)) => {
                        let members: Vec<_> = view.iter().copied().collect();
                        let reason = if flag { Reason::Leave } else { Reason::ProcDown };
                        prop_assert_eq!(
                            a.handle_confchg(&members, &[], &[ch(n, reason)]),
                            b.handle_confchg(&members, &[], &[ch(n, reason)])
                        );
                    }
                    _ => {
                        // Ranges drawn around the versions so some are
                        // refused once the group speaks a higher one.
                        let x = speaking(2 + (n % 2) as u8, 3 + flag as u8);
                        prop_assert_eq!(a.handle_announce(m(n), x), b.handle_announce(m(n), x));
                    }
                }
                prop_assert_eq!(&a, &b);
                prop_assert!(a.members().iter().all(|x| view.contains(x)));
                // Every member speaks the group's version.
                if let Some(v) = a.group_version() {
                    prop_assert!(a.announcements().iter().all(|(_, x)| x.speaks(v)));
                }
            }
        }
    }
}
