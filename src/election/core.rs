//! The decision core of elections: who leads each election of a group, and
//! with which fencing epoch. No I/O, no clock, no actix: events in,
//! actions out.
//!
//! ```text
//!   transport events              ElectionCore                 actions
//!  ────────────────────►  ┌──────────────────────────┐  ─────────────────────►
//!   handle_confchg        │ view, facts (quorum, in  │   Mcast(Announce | Info | Fact)
//!   handle_quorum (local) │   the stream)            │   Purge     (view changed)
//!   handle_envelope       │ roster (who announced,   │   Applied(op) (own
//!    (version, message)   │   what they speak)       │     stand/withdraw done)
//!    Announce Info Fact   │ phase: Installing{infos, │   Resend(op)
//!    Stand Withdraw Mark  │   buffered ops} |        │   GiveUp (leave)
//!                         │   Installed | GaveUp |   │   Refused (stop)
//!                         │   Refused                │
//!                         │ refusal counters         │   Event(ElectionEvent)
//!                         │ elections: candidates    │
//!                         │   (seniority), leader,   │   write_version() (what
//!                         │   epoch                  │     the runtime writes at)
//!                         └──────────────────────────┘
//! ```
//!
//! # The rule
//!
//! An election's leader is its most senior candidate in the view — the one
//! that stood first in the total order (every member is a candidate of the
//! group-wide election `""`, with seniority from when it joined) — but only
//! while the view is quorate: every quorum fact delivered since the last
//! confchg says quorate, at least one member having reported (each member
//! multicasts its node's quorum notifications, so they are facts in the
//! stream). Each time an election gets a leader (another one, or one after
//! a time without) a new [`Epoch`] is minted: `term + 1`, and `ring_seq` =
//! the highest ring sequence the view reported (never lower than before).
//! The first term of a group is its founding time (the founders' clocks,
//! carried in their infos) plus one, so a group that dies out and is
//! founded again in the same ring (the ring seq did not move) still mints
//! greater epochs.
//!
//! # View changes
//!
//! After a confchg every member multicasts an info — its quorum fact and
//! the elections as it holds them — tagged with a hash of the raw view and
//! with a mark that ties it to this incarnation of that view (rule 5), so
//! an info sent for an earlier view is never counted. Until
//! every member's info is in (rule 5 below), candidacy changes are buffered, no epoch is minted, and a
//! leader continues only if it is still in the view and nothing merged in
//! (after a merge two leaders may meet: leadership pauses). Once the infos
//! are in, every member rebuilds the same elections from them (candidates
//! of every side, the highest epoch of each election), replays the buffered
//! candidacies, and applies the rule.
//!
//! # Acting
//!
//! The group decides who leads; a member *acts* as leader only while that
//! decision names it and its own node's latest quorum notification says
//! quorate (a local guard, deliberately not a group decision: it can only
//! make a leader stop earlier). `Elected`/`Deposed` events follow acting.
//!
//! # Who counts (DESIGN.md §6)
//!
//! A CPG group is not a trust boundary, so the view this core decides on
//! is the *effective* view of a [`Roster`]: the processes of the raw CPG
//! view that announced themselves in the stream. Rules, identical on every
//! member, with why:
//!
//! 1. **Announcing.** After every confchg that brings anyone in, every
//!    member multicasts an `Announce` (protocol version range and role),
//!    then its info. An `Announce` from a process in the view that is not
//!    yet a member admits it (if it speaks the group's version, rule 9);
//!    from a member it changes nothing. A separate message rather than "an
//!    info from a pending process is its announcement": an info is the
//!    answer to one round, a forged or stale one must be refusable on its
//!    own, and a joiner must hear *every* member of the view (rule 4) even
//!    in rounds whose infos it cannot yet judge. Announcements are never
//!    purged from the send queue.
//! 2. **Sender rules.** `Info`, `Fact`, `Stand` and `Withdraw` count only
//!    from members (announced, in the view); anything else is refused and
//!    counted ([`ElectionRefusals::not_member`]). A `Withdraw` only ever
//!    removes its sender's own candidacy. An `Announce` whose version range
//!    excludes the group's version is refused (`incompatible`, rule 9).
//!    During a round, candidacy changes are held; one from a process of the
//!    other side of a merge (a member there, not yet here) is held too and
//!    applied at the install only if its sender is a member by then, so both
//!    sides judge it alike.
//! 3. **Failover asks no announcement.** A confchg that only removes
//!    members asks the surviving members for a mark and an info each;
//!    nobody announces.
//! 4. **The joiner.** A process whose first view holds only itself and
//!    processes that joined with it founds the group. Any other joiner does
//!    not know who is announced: it admits whoever announces after its
//!    confchg (every member does, rule 1) and, at the first info from a
//!    sender that knows (`Info::announced` is `Some`: the members with their
//!    announcements), adopts that list ([`Roster::adopt`]) and judges the
//!    announcements delivered since (rule 9) — the same set the others hold
//!    at that position. Until then it decides nothing: it completes no
//!    round, and the candidacy changes it holds are judged when it learns.
//!    Every round needs at least one such info to complete, so a joiner and
//!    the members complete it at the same position. Limit: a joiner whose
//!    view holds only silent older processes waits until one of them speaks
//!    or leaves (it cannot tell a silent client from a member whose info is
//!    on its way); and a joiner trusts the first member that tells it, so an
//!    announced member that lies about the list can mislead a joiner (only
//!    that joiner) — the group key closes that.
//! 5. **Rounds.** After each confchg every member sends an info tagged
//!    with the raw view; an admission after the install starts a new round
//!    (the newcomer needs the elections). A round completes once every
//!    member's info is in and every process that came in by `NodeUp` (the
//!    other side of a merge) has announced itself, been named unannounced
//!    by a member of its side (`Info::unannounced`), or had its
//!    announcement refused — a condition every side evaluates alike, so
//!    two sides of a merge install at the same position. After every
//!    confchg a process multicasts a mark and sends its info only once
//!    the mark is back; an info counts only if it carries its sender's
//!    latest mark delivered since the confchg ([`crate::incarnation`]):
//!    an info sent before the sender saw the confchg may carry the same
//!    tag (the same processes formed the view before), and the two sides
//!    of a merge, or a joiner and the members, would judge it
//!    differently. Limit: a merge side holding no member at all (only
//!    silent clients) is waited for until they leave.
//! 6. **Quorum facts** count only from members; a fact that arrives before
//!    its sender's info in a round is ignored (the info, sent later, holds a
//!    fact at least as new). An **observer** (its announcement says
//!    [`Role::Observer`]; infos that teach a joiner the members carry each
//!    one's announcement, role included) is a member of the view, sends
//!    infos and is waited for like any member, but its facts never count and
//!    it is never a candidate: not of the group-wide election, and its
//!    stands and withdrawals are refused (`refused.observer`).
//! 7. **Bounds** ("what the stream allows"). Let `seq` be the lower median
//!    of the ring seqs the round's infos report and `clock` the lower
//!    median of their clocks (a minority of liars cannot move a lower
//!    median). An info's fact with a ring seq above `seq + RING_SLACK`
//!    (2^16, some 16,000 ring changes) is dropped; its elections are
//!    ignored (`epoch_jump`) if the founding time exceeds
//!    `clock + CLOCK_SLACK` (one hour) or an epoch's ring seq exceeds
//!    `seq + RING_SLACK` or its term exceeds the founding time plus
//!    `TERM_SLACK` (2^32 leaderships). A later `Fact` is refused
//!    (`ring_jump`) above the lower median of the other members' facts
//!    plus `RING_SLACK`. Why: epochs are ordered by ring seq first, so one
//!    epoch with a huge ring seq would fence out every later leader
//!    forever; ring seqs only grow by a few per ring change, and clocks of
//!    one cluster agree to far better than an hour.
//! 8. **Bounded buffering.** Candidacy changes held during a round are
//!    capped ([`super::ElectionConfig::max_buffered_ops`]); past the cap
//!    the member gives up: it emits [`ElectionEvent::GaveUp`] and the
//!    runtime *leaves* the group (then `Closed`). It does not resync in
//!    place: the held changes are part of the ordered stream every member
//!    applies, so a member that dropped them can only come back as a
//!    joiner, which gets the elections afresh. Only members' changes are
//!    held, so an outsider cannot fill it.
//! 9. **Versions.** The group speaks the highest protocol version every
//!    member speaks ([`Roster::group_version`]); an `Announce` that does not
//!    speak it is refused: every member reports
//!    [`ElectionEvent::MemberRefused`] where it lands, its sender stays
//!    outside (none of its messages counts: it is never a candidate, its
//!    facts and infos are a non-member's), and the sender itself, once it
//!    knows the members, reports it about itself and stops
//!    ([`Action::Refused`]). The version never moves down (a member must
//!    speak it to come in) and moves up only where the last member that held
//!    it back leaves ([`ElectionEvent::VersionChanged`] there, on every
//!    member). What a process sends before it knows the version (`Announce`,
//!    `Mark`, `Info`) is laid out alike in every version and read at any
//!    (see `messages`); `Fact`, `Stand` and `Withdraw` are sent only once
//!    the sender knows the members, at the group's version
//!    ([`ElectionCore::write_version`]; a quorum change seen before waits
//!    until then), and count only in an envelope of a version every member
//!    speaks (else refused as `version`; a member that cannot read it drops
//!    it, counted alike). A joiner that does not know the members yet judges
//!    no announcement (it cannot know the group's version): it takes the
//!    announcers in as rule 4 says and judges their announcements, in their
//!    order, against the list it learns. Admissions never move the version,
//!    so that is what every member decided where each landed. An
//!    announcement from before the latest confchg is judged by the list
//!    itself: a process that announced then is a member only if listed, so a
//!    joiner whose own announcement landed then and that the list lacks was
//!    refused — at a version it may speak now, if the group moved up since:
//!    then it announces again (judged where that lands), else it is refused
//!    at the version the list speaks. The candidacy changes it holds are
//!    judged by the version of their envelope against that list too. Limit:
//!    a joiner that cannot read an older version, arriving while the group
//!    moves up, drops a candidacy change still in flight at that older
//!    version, which the members count if they all read it. Limit: two sides
//!    of a partition that moved to different versions judge each other's
//!    members at the merge against their own version; a member of one side
//!    that the other side's version excludes counts on its side only, so the
//!    two sides may disagree on who counts.

use std::collections::{BTreeMap, BTreeSet};

use super::inspect::{ElectionEntry, ElectionInspection, ElectionQuorum};
use super::messages::{ElectionMessage, ElectionState, Epoch, GroupState, Info};
use super::{ElectionEvent, ElectionRefusals, Leadership, GROUP_ELECTION};
use crate::group::MemberInspection;
use crate::incarnation::Incarnation;
use crate::quorum::QuorumFacts;
use crate::roster::{Admission, Announcement, Refusal, Role, Roster};
use crate::stable_hash::StableHasher;
use crate::transport::{Member, MemberChange, QuorumState, Reason};
use crate::wire::{Versions, WireError};

/// How far above the lower median of the ring sequences reported in the
/// stream a reported ring sequence or a claimed epoch may be (rule 7).
/// Corosync moves the ring seq by 4 per ring it forms, so this is some
/// 16,000 ring changes that one member saw and the others did not.
pub(crate) const RING_SLACK: u64 = 1 << 16;
/// How far above the lower median of the round's clocks a founding time
/// may be (rule 7): clocks of one cluster disagree by far less than this
/// (one hour, in microseconds).
pub(crate) const CLOCK_SLACK: u64 = 3_600 * 1_000_000;
/// How many leaderships an election may claim above its group's founding
/// time (rule 7).
pub(crate) const TERM_SLACK: u64 = 1 << 32;

/// A candidacy change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CandidacyOp {
    Stand(String),
    Withdraw(String),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Multicast this protocol message.
    Mcast(ElectionMessage),
    /// The view changed: drop protocol messages not yet multicast.
    Purge,
    /// This member's candidacy change took effect.
    Applied(CandidacyOp),
    /// This member's candidacy change was dropped by a view change before it
    /// took effect: multicast it again.
    Resend(CandidacyOp),
    /// Tell subscribers.
    Event(ElectionEvent),
    /// The buffer of candidacy changes held while installing reached its
    /// cap (rule 8): this member stops taking part and must leave; the core
    /// ignores everything from now on.
    GiveUp,
    /// The group refused this process (rule 9): it speaks `ours`, the
    /// group speaks `group_version`. It must leave and stop; the core
    /// ignores everything from now on.
    Refused {
        /// What this process speaks.
        ours: Versions,
        /// What the group speaks.
        group_version: u8,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    candidates: BTreeMap<Member, u64>,
    leader: Option<Member>,
    epoch: Option<Epoch>,
}

/// A candidacy change delivered while installing, with whether its sender
/// was known to be a member when it was delivered and the version of its
/// envelope (judged when a joiner learns the members, rule 9).
type Buffered = (Member, CandidacyOp, bool, u8);

#[derive(Debug)]
enum Phase {
    Unjoined,
    Installing {
        tag: u64,
        infos: BTreeMap<Member, Info>,
        buffered: Vec<Buffered>,
        /// Processes whose announcement was refused in this round.
        refused: BTreeSet<Member>,
    },
    Installed,
    /// Gave up (rule 8): nothing is handled any more.
    GaveUp,
    /// Refused by the group (rule 9): nothing is handled any more.
    Refused,
}

/// One member's pure election state.
pub(crate) struct ElectionCore {
    local: Member,
    max_buffered: usize,
    roster: Roster,
    /// Whether this member knows who is announced (rule 4).
    synced: bool,
    /// Installed a view it is not in yet (its announcement is on its way):
    /// it follows every decision, and is admitted with a round of its own.
    outside: bool,
    /// Processes that came in by `NodeUp` (another side of a merge) and
    /// are neither members nor known to be unannounced yet: a round waits
    /// for them (rule 5).
    merging: BTreeSet<Member>,
    /// Marks ([`crate::incarnation`]): an info counts only if it carries
    /// its sender's latest mark delivered since the raw confchg (rule 5);
    /// this member's own info is held until its mark is back.
    incarnation: Incarnation<Info>,
    /// The local clock at the latest raw confchg (for the infos of rounds
    /// that an admission begins).
    clock: u64,
    /// Joined in the latest raw confchg (not old processes for the claim of
    /// unannounced ones).
    last_joined: BTreeSet<Member>,
    /// The effective view: announced members, sorted.
    view: Vec<Member>,
    tag: u64,
    facts: QuorumFacts,
    local_fact: Option<QuorumState>,
    sent_fact: Option<QuorumState>,
    phase: Phase,
    installed_once: bool,
    next_stamp: u64,
    founded: u64,
    elections: BTreeMap<String, Entry>,
    /// Elections this member acts as leader of, with the epoch.
    acting: BTreeMap<String, Epoch>,
    refused: ElectionRefusals,
    /// What this member announces itself as: its role and versions.
    announcement: Announcement,
    /// The version the group speaks, as last reported (rule 9).
    version: Option<u8>,
    /// Announcements delivered since the latest confchg while this member
    /// does not know who is announced, in order: judged when it learns
    /// (rule 9).
    heard: Vec<(Member, Announcement)>,
    /// This member does not know who is announced, and its own
    /// announcement landed before the latest confchg (none since): the
    /// list it learns says whether the members admitted it (rule 9).
    announced_before: bool,
}

impl ElectionCore {
    /// A member that has not seen its first confchg, with the default cap
    /// on buffered candidacy changes.
    #[cfg(test)]
    pub(crate) fn new(local: Member) -> Self {
        Self::with_cap(local, super::ElectionConfig::default().max_buffered_ops)
    }

    /// A member that has not seen its first confchg; it gives up past
    /// `max_buffered` candidacy changes held while installing.
    pub(crate) fn with_cap(local: Member, max_buffered: usize) -> Self {
        ElectionCore {
            local,
            max_buffered: max_buffered.max(1),
            roster: Roster::new(),
            synced: false,
            outside: false,
            merging: BTreeSet::new(),
            incarnation: Incarnation::default(),
            clock: 0,
            last_joined: BTreeSet::new(),
            view: Vec::new(),
            tag: 0,
            facts: QuorumFacts::default(),
            local_fact: None,
            sent_fact: None,
            phase: Phase::Unjoined,
            installed_once: false,
            next_stamp: 0,
            founded: 0,
            elections: BTreeMap::new(),
            acting: BTreeMap::new(),
            refused: ElectionRefusals::default(),
            announcement: Announcement::this_build(),
            version: None,
            heard: Vec::new(),
            announced_before: false,
        }
    }

    /// The same member, announcing itself in `role`: an observer is never
    /// a candidate and its quorum facts do not count.
    pub(crate) fn with_role(mut self, role: Role) -> Self {
        self.announcement = self.announcement.with_role(role);
        self
    }

    /// The same member, speaking `versions` (rule 9).
    pub(crate) fn with_versions(mut self, versions: Versions) -> Self {
        self.announcement = self.announcement.with_versions(versions);
        self
    }

    /// The version the group speaks, once this member knows the members
    /// and speaks it: what it writes its messages at (rule 9). `None`
    /// until then: it sends only what every version shares.
    pub(crate) fn write_version(&self) -> Option<u8> {
        if !self.synced || matches!(self.phase, Phase::GaveUp | Phase::Refused) {
            return None;
        }
        self.roster
            .group_version()
            .filter(|v| self.announcement.speaks(*v))
    }

    /// Whether the member `m` announced itself as an observer.
    fn observer(&self, m: Member) -> bool {
        self.roster.is_observer(m)
    }

    /// The effective view (announced members), sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// Whether the view is installed and this member is in it.
    pub(crate) fn is_installed(&self) -> bool {
        self.round_done() && !self.outside
    }

    /// Whether this member knows who is announced (a founder, or a joiner
    /// that learned the list, rule 4); until then it decides nothing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn knows_roster(&self) -> bool {
        self.synced
    }

    /// Whether the current round is complete (this member may be outside
    /// the view it installed: a joiner whose announcement is on its way).
    pub(crate) fn round_done(&self) -> bool {
        matches!(self.phase, Phase::Installed)
    }

    /// Messages refused so far, by cause.
    pub(crate) fn refused(&self) -> ElectionRefusals {
        self.refused
    }

    /// Counts a message that could not be decoded (the runtime decodes):
    /// one of a version this build does not read as `version` (rule 9), any
    /// other as `malformed`.
    pub(crate) fn count_undecodable(&mut self, error: &WireError) {
        match error {
            WireError::UnsupportedVersion(_) => self.refused.version += 1,
            _ => self.refused.malformed += 1,
        }
    }

    /// Every election's decided leader (as this member knows it).
    pub(crate) fn leaders(&self) -> BTreeMap<String, Leadership> {
        self.elections
            .iter()
            .filter_map(|(name, e)| {
                Some((
                    name.clone(),
                    Leadership {
                        leader: e.leader?,
                        epoch: e.epoch?,
                    },
                ))
            })
            .collect()
    }

    /// Elections this member acts as leader of.
    pub(crate) fn acting(&self) -> &BTreeMap<String, Epoch> {
        &self.acting
    }

    /// Whether this node's latest quorum notification says quorate.
    pub(crate) fn locally_quorate(&self) -> bool {
        self.local_fact.as_ref().is_some_and(|q| q.quorate)
    }

    /// Every election's candidates, most senior first.
    pub(crate) fn candidates(&self) -> BTreeMap<String, Vec<Member>> {
        self.elections
            .iter()
            .map(|(name, e)| {
                let mut c: Vec<(u64, Member)> =
                    e.candidates.iter().map(|(m, s)| (*s, *m)).collect();
                c.sort();
                (name.clone(), c.into_iter().map(|(_, m)| m).collect())
            })
            .collect()
    }

    /// What this member holds, at this point of the stream (see
    /// [`ElectionInspection`] for the rules); `dropped_unauthenticated`
    /// comes from the runtime's MAC check.
    pub(crate) fn inspect(&self, group: &str, dropped_unauthenticated: u64) -> ElectionInspection {
        let mut pending: Vec<Member> = self.roster.pending().collect();
        pending.sort();
        let candidates = self.candidates();
        let elections = self
            .elections
            .iter()
            .map(|(name, e)| ElectionEntry {
                name: name.clone(),
                candidates: candidates.get(name).cloned().unwrap_or_default(),
                leader: e.leader,
                epoch: e.epoch,
                acting: self.acting.contains_key(name),
            })
            .collect();
        let reported: Vec<Member> = self
            .facts
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| self.view.contains(m))
            .collect();
        ElectionInspection {
            group: group.to_owned(),
            local: self.local,
            role: self.announcement.role,
            versions: self.announcement.versions(),
            group_version: if self.synced {
                self.roster.group_version()
            } else {
                None
            },
            knows_members: self.synced,
            installed: self.is_installed(),
            members: self
                .roster
                .announcements()
                .into_iter()
                .map(|(member, a)| MemberInspection {
                    member,
                    role: a.role,
                    versions: a.versions(),
                })
                .collect(),
            pending,
            elections,
            quorum: ElectionQuorum {
                quorate: self.view_quorate(),
                ring_seq: self.facts.highest_ring_seq(&self.view),
                reported,
                locally_quorate: self.locally_quorate(),
            },
            refused: self.refused,
            dropped_unauthenticated,
        }
    }

    /// A raw configuration change, at its position in the stream; `now` is
    /// the local wall clock in microseconds (it enters the stream in the
    /// info, and counts only if this view founds the group).
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
        now: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.quiet() {
            return out;
        }
        self.take_confchg(members, joined, left, now, &mut out);
        self.settle(&mut out);
        out
    }

    /// Gave up or refused: nothing is handled any more.
    fn quiet(&self) -> bool {
        matches!(self.phase, Phase::GaveUp | Phase::Refused)
    }

    /// What every input ends with (rule 9): the version move it caused,
    /// and a quorum change held until this member knows the version.
    fn settle(&mut self, out: &mut Vec<Action>) {
        if self.quiet() {
            return;
        }
        if self.synced {
            let now = self.roster.group_version();
            if now != self.version {
                let from = std::mem::replace(&mut self.version, now);
                if let Some(to) = now {
                    out.push(Action::Event(ElectionEvent::VersionChanged { from, to }));
                }
            }
        }
        if !matches!(self.phase, Phase::Unjoined)
            && self.write_version().is_some()
            && self.sent_fact != self.local_fact
        {
            self.sent_fact = self.local_fact.clone();
            if let Some(q) = self.local_fact.clone() {
                out.push(Action::Mcast(ElectionMessage::Fact(q)));
            }
        }
    }

    fn take_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let change = self.roster.handle_confchg(members, joined, left);
        self.last_joined = joined.iter().map(|c| c.member).collect();
        self.clock = now;
        if !self.roster.in_view(self.local) {
            // Not joined yet, or our own leave.
            self.view_changed(change.map(|c| c.left).unwrap_or_default(), out);
            return;
        }
        if !self.synced {
            // Rule 9: what was heard before this confchg is judged by the
            // list this member learns; only our own announcement matters
            // (unless we announce again now).
            let own = self.heard.iter().any(|(m, _)| *m == self.local);
            self.heard.clear();
            self.announced_before =
                (self.announced_before || own) && !self.roster.should_announce();
            // Rule 4: nobody was here before us (or only who came with us),
            // so nobody can tell us more: we found the group.
            let fresh: BTreeSet<Member> = joined
                .iter()
                .filter(|c| c.reason == Reason::Join)
                .map(|c| c.member)
                .collect();
            if members
                .iter()
                .all(|m| *m == self.local || fresh.contains(m))
            {
                // Whoever it took in before (itself at most) it takes in
                // as a founder would: nobody else can judge them.
                self.synced = true;
                self.announced_before = false;
            }
        }
        let left_members = change.map(|c| c.left).unwrap_or_default();
        self.view_changed(left_members, out);
        let mut raw: Vec<Member> = members.to_vec();
        raw.sort();
        raw.dedup();
        self.tag = view_tag(&raw);
        let merged: BTreeSet<Member> = joined
            .iter()
            .filter(|c| c.reason == Reason::NodeUp)
            .map(|c| c.member)
            .collect();
        let merging = !merged.is_empty();
        self.merging.extend(merged);
        let roster = &self.roster;
        self.merging
            .retain(|m| roster.in_view(*m) && !roster.is_member(*m));
        let view = &self.view;
        for entry in self.elections.values_mut() {
            entry.candidates.retain(|m, _| view.contains(m));
            if merging || entry.leader.is_some_and(|l| !view.contains(&l)) {
                entry.leader = None;
            }
        }
        // The info this round begins is held until the mark is back
        // (rule 5).
        let mark = self.incarnation.confchg();
        if self.roster.should_announce() {
            // Rule 3; before the info, so a receiver admits us first.
            out.push(Action::Purge);
            out.push(Action::Mcast(ElectionMessage::Announce(self.announcement)));
            self.begin_round(now, false, out);
        } else {
            self.begin_round(now, true, out);
        }
        // After the purge, which drops what the last view queued.
        out.push(Action::Mcast(ElectionMessage::Mark(mark)));
        self.update_acting(out);
    }

    /// Starts a round of infos (rules 1, 5): drops what the last one
    /// buffered, sends this member's info.
    fn begin_round(&mut self, now: u64, purge: bool, out: &mut Vec<Action>) {
        // Facts from before may describe another ring: every member
        // reports afresh in its info.
        self.facts.clear();
        if let Phase::Installing { buffered, .. } = &mut self.phase {
            // Never installed: every member drops them alike.
            for (from, op, _, _) in std::mem::take(buffered) {
                if from == self.local {
                    out.push(Action::Resend(op));
                }
            }
        }
        self.phase = Phase::Installing {
            tag: self.tag,
            infos: BTreeMap::new(),
            buffered: Vec::new(),
            refused: BTreeSet::new(),
        };
        if purge {
            out.push(Action::Purge);
        }
        self.sent_fact = self.local_fact.clone();
        let unannounced = self
            .roster
            .pending()
            .filter(|m| !self.last_joined.contains(m) && !self.merging.contains(m))
            .collect();
        let info = Info {
            tag: self.tag,
            clock: now,
            fact: self.local_fact.clone(),
            state: self.installed_once.then(|| self.export()),
            announced: self.synced.then(|| self.roster.announcements()),
            unannounced: if self.synced { unannounced } else { Vec::new() },
            merging: if self.synced {
                self.merging.iter().copied().collect()
            } else {
                Vec::new()
            },
            mark: 0,
        };
        if let Some((mark, info)) = self.incarnation.answer(info) {
            self.send_info(mark, info, out);
        }
    }

    /// Multicasts this member's info of the round with its mark. Its fact
    /// is this node's latest: a `Fact` sent while the info was held is
    /// ignored by the others (rule 6), so the info must carry it.
    fn send_info(&mut self, mark: u64, mut info: Info, out: &mut Vec<Action>) {
        info.mark = mark;
        info.fact = self.local_fact.clone();
        self.sent_fact = self.local_fact.clone();
        out.push(Action::Mcast(ElectionMessage::Info(info)));
    }

    /// Recomputes the effective view from the roster; reports a change.
    fn view_changed(&mut self, left: Vec<MemberChange>, out: &mut Vec<Action>) {
        self.view_changed_with(Vec::new(), left, out);
    }

    fn view_changed_with(
        &mut self,
        joined: Vec<MemberChange>,
        left: Vec<MemberChange>,
        out: &mut Vec<Action>,
    ) {
        let members = self.roster.members();
        if members == self.view && joined.is_empty() && left.is_empty() {
            return;
        }
        self.view = members;
        out.push(Action::Event(ElectionEvent::ViewChanged {
            members: self.view.clone(),
            joined,
            left,
        }));
    }

    /// This node's quorum service reported (a local fact: multicast, and
    /// used for group decisions when it comes back in order; used at once
    /// only to stop acting as leader).
    pub(crate) fn handle_quorum(&mut self, q: QuorumState) -> Vec<Action> {
        let mut out = Vec::new();
        if self.quiet() {
            return out;
        }
        self.local_fact = Some(q);
        // Multicast by `settle` (once this member knows the version).
        self.settle(&mut out);
        self.update_acting(&mut out);
        out
    }

    /// A message from `from` in an envelope of this build's default
    /// version, at its position in the stream.
    #[cfg(test)]
    pub(crate) fn handle_message(&mut self, from: Member, msg: ElectionMessage) -> Vec<Action> {
        self.handle_envelope(from, crate::wire::PROTOCOL_VERSION, msg)
    }

    /// A decoded message from `from` in an envelope of protocol version
    /// `version`, at its position in the stream.
    pub(crate) fn handle_envelope(
        &mut self,
        from: Member,
        version: u8,
        msg: ElectionMessage,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Unjoined) || self.quiet() {
            return out;
        }
        if !self.roster.in_view(from) {
            // Sent before it left, or from a process this view never had.
            self.refused.not_member += 1;
            return out;
        }
        // Rule 9. A joiner that does not know the members judges the
        // candidacy changes it holds once it learns them.
        let held = !self.synced
            && matches!(
                msg,
                ElectionMessage::Stand(_) | ElectionMessage::Withdraw(_)
            );
        if !msg.is_shared() && !held && !self.roster.counts_version(version) {
            self.refused.version += 1;
            return out;
        }
        match msg {
            ElectionMessage::Mark(mark) => {
                if let Some((mark, info)) = self.incarnation.delivered(self.local, from, mark) {
                    self.send_info(mark, info, &mut out);
                }
            }
            ElectionMessage::Announce(a) => self.announce(from, a, &mut out),
            ElectionMessage::Info(info) => self.info(from, info, &mut out),
            ElectionMessage::Fact(q) => self.fact(from, q, &mut out),
            ElectionMessage::Stand(name) => {
                self.candidacy(from, CandidacyOp::Stand(name), version, &mut out)
            }
            ElectionMessage::Withdraw(name) => {
                self.candidacy(from, CandidacyOp::Withdraw(name), version, &mut out)
            }
        }
        if self.quiet() {
            return out;
        }
        self.update_acting(&mut out);
        self.settle(&mut out);
        out
    }

    /// Rule 2: an announcement admits a pending process; rule 9: unless
    /// it does not speak the group's version.
    fn announce(&mut self, from: Member, a: Announcement, out: &mut Vec<Action>) {
        if !self.synced {
            // Every one, even from a process taken in already: where the
            // members refused it, a later one may admit it (rule 9).
            self.heard.push((from, a));
        }
        if self.roster.is_member(from) {
            return;
        }
        let change = if self.synced {
            match self.roster.handle_announce(from, a) {
                Admission::Admitted(change) => change,
                Admission::Refused(refusal) => {
                    self.refuse(refusal, out);
                    return;
                }
                Admission::Nothing => return,
            }
        } else {
            // Rule 4: taken in until the list says otherwise; rule 9: the
            // version is judged then.
            let reason = if self.roster.pending_after_merge(from) {
                Reason::NodeUp
            } else {
                Reason::Join
            };
            let mut announced = self.roster.announcements();
            announced.push((from, a));
            self.roster.adopt(announced);
            crate::roster::Change {
                members: self.roster.members(),
                joined: vec![MemberChange {
                    member: from,
                    reason,
                }],
                left: Vec::new(),
            }
        };
        self.view_changed_with(change.joined, Vec::new(), out);
        if self.round_done() {
            // Rule 5: admitted after the install, it needs the elections
            // and every member's fact: a round of its own (nothing merged,
            // leaders continue).
            // No purge: our own announcement may still be queued.
            self.begin_round(self.clock, false, out);
        } else {
            self.try_install(out);
        }
    }

    fn info(&mut self, from: Member, info: Info, out: &mut Vec<Action>) {
        if !self.roster.is_member(from) {
            self.refused.not_member += 1;
            return;
        }
        if !info.announced_is_sane() {
            // A list no roster could hold (rule 9): forged, on every member
            // alike.
            self.refused.malformed += 1;
            return;
        }
        let Phase::Installing { tag, .. } = &self.phase else {
            // An info of a round already installed: nothing to do.
            return;
        };
        if info.tag != *tag || !self.incarnation.fresh(from, info.mark) {
            // An info for another confchg, or an earlier incarnation of
            // this raw view: not this one's.
            return;
        }
        if let (false, Some(claim)) = (self.synced, &info.announced) {
            // Rule 4: the first member that knows tells us who counts, and
            // what each speaks; rule 9: the announcements heard since the
            // confchg are judged against that, in their order.
            self.roster.adopt(claim.iter().copied());
            let mut refusals = Vec::new();
            for (m, a) in std::mem::take(&mut self.heard) {
                if let Admission::Refused(refusal) = self.roster.handle_announce(m, a) {
                    refusals.push(refusal);
                }
            }
            if std::mem::take(&mut self.announced_before) && !self.roster.is_member(self.local) {
                // Our announcement landed before the latest confchg, and
                // the members did not take us in: they refused it.
                match self.roster.group_version() {
                    // At a version it does not speak, before the group
                    // moved up to one it does: it asks again, judged
                    // where that lands.
                    Some(v) if self.announcement.speaks(v) => {
                        out.push(Action::Mcast(ElectionMessage::Announce(self.announcement)));
                    }
                    Some(group_version) => refusals.push(Refusal {
                        member: self.local,
                        versions: self.announcement.versions(),
                        group_version,
                    }),
                    None => {}
                }
            }
            let announced: BTreeSet<Member> = self.roster.members().into_iter().collect();
            // Facts recorded before it knew who observes.
            let roster = &self.roster;
            self.facts
                .retain(|m, _| roster.is_member(*m) && !roster.is_observer(*m));
            self.synced = true;
            let roster = &self.roster;
            self.merging = info
                .merging
                .iter()
                .copied()
                .filter(|m| roster.in_view(*m) && !roster.is_member(*m))
                .collect();
            if let Phase::Installing { buffered, .. } = &mut self.phase {
                // Held while it did not know: a change counts if its sender
                // was a member where it landed, or of another side, and its
                // envelope's version is one every member speaks. A member
                // where it landed is one the list names (it counts the
                // members where this round began, at the confchg, and every
                // held change landed after it: a confchg drops what was
                // held), or one taken in after the confchg by an
                // announcement heard before the change and not refused
                // since. A sender the list names need not have announced
                // where this joiner could hear it.
                let from_list: BTreeSet<Member> = claim.iter().map(|(m, _)| *m).collect();
                let roster = &self.roster;
                let merging = &self.merging;
                let (mut not_member, mut version) = (0, 0);
                buffered.retain(|(m, _, known, v)| {
                    let member = from_list.contains(m) || *known && announced.contains(m);
                    if !(member || merging.contains(m)) {
                        not_member += 1;
                        false
                    } else if !roster.counts_version(*v) {
                        version += 1;
                        false
                    } else {
                        true
                    }
                });
                self.refused.not_member += not_member;
                self.refused.version += version;
            }
            self.view_changed(Vec::new(), out);
            for refusal in refusals {
                self.refuse(refusal, out);
                if self.quiet() {
                    return;
                }
            }
        }
        if let (Some(f), false) = (&info.fact, self.observer(from)) {
            self.facts.record(from, f.clone());
        }
        if let Phase::Installing { infos, .. } = &mut self.phase {
            infos.insert(from, info);
        }
        self.try_install(out);
    }

    fn fact(&mut self, from: Member, q: QuorumState, out: &mut Vec<Action>) {
        if !self.roster.is_member(from) {
            self.refused.not_member += 1;
            return;
        }
        if self.observer(from) {
            self.refused.observer += 1;
            return;
        }
        match &self.phase {
            Phase::Installed => {}
            Phase::Installing { infos, .. } if infos.contains_key(&from) => {}
            // Before its info: the info that follows (FIFO) carries a fact
            // at least as new, so this one would be replaced anyway.
            _ => return,
        }
        if let Some(bound) = self.ring_bound(from) {
            if q.ring_id.seq > bound {
                self.refused.ring_jump += 1;
                return;
            }
        }
        self.facts.record(from, q);
        if self.round_done() {
            self.decide_all(out);
        }
    }

    /// Rule 7 for facts: the highest ring seq a fact from `from` may report,
    /// from the others' facts (`None`: nobody else reported).
    fn ring_bound(&self, from: Member) -> Option<u64> {
        let seqs: Vec<u64> = self
            .facts
            .iter()
            .filter(|(m, _)| **m != from)
            .map(|(_, f)| f.ring_id.seq)
            .collect();
        lower_median(seqs).map(|s| s.saturating_add(RING_SLACK))
    }

    fn candidacy(&mut self, from: Member, op: CandidacyOp, version: u8, out: &mut Vec<Action>) {
        // A process of the other side of a merge is a member there and not
        // yet here: held like a member's, counted at the install only if
        // it is a member by then (both sides judge it alike).
        let member = self.roster.is_member(from) || self.merging.contains(&from);
        if !member && self.synced {
            self.refused.not_member += 1;
            return;
        }
        if self.observer(from) {
            self.refused.observer += 1;
            return;
        }
        match &mut self.phase {
            Phase::Installing { buffered, .. } => {
                if buffered.len() >= self.max_buffered {
                    self.give_up(out);
                    return;
                }
                // Unsynced: whether it counts is known once we learn who
                // was announced (rule 4).
                buffered.push((from, op, member, version));
            }
            Phase::Installed => {
                let name = self.apply_op(from, &op);
                if from == self.local {
                    out.push(Action::Applied(op));
                }
                self.decide(&name, out);
            }
            Phase::Unjoined | Phase::GaveUp | Phase::Refused => {}
        }
    }

    /// A process refused for its versions (rule 9): reported on every
    /// member; this process stops if it is the one.
    fn refuse(&mut self, refusal: Refusal, out: &mut Vec<Action>) {
        self.refused.incompatible += 1;
        if let Phase::Installing { refused, .. } = &mut self.phase {
            refused.insert(refusal.member);
        }
        out.push(Action::Event(ElectionEvent::MemberRefused {
            member: refusal.member,
            versions: refusal.versions,
            group_version: refusal.group_version,
        }));
        if refusal.member == self.local {
            self.phase = Phase::Refused;
            out.push(Action::Refused {
                ours: refusal.versions,
                group_version: refusal.group_version,
            });
        }
    }

    fn give_up(&mut self, out: &mut Vec<Action>) {
        let buffered = match &self.phase {
            Phase::Installing { buffered, .. } => buffered.len(),
            _ => 0,
        };
        self.phase = Phase::GaveUp;
        self.elections.clear();
        out.push(Action::Event(ElectionEvent::GaveUp { buffered }));
        out.push(Action::GiveUp);
    }

    /// Applies a candidacy change; returns the election's name.
    fn apply_op(&mut self, from: Member, op: &CandidacyOp) -> String {
        match op {
            CandidacyOp::Stand(name) => {
                let entry = self.elections.entry(name.clone()).or_default();
                if let std::collections::btree_map::Entry::Vacant(v) = entry.candidates.entry(from)
                {
                    v.insert(self.next_stamp);
                    self.next_stamp = self.next_stamp.saturating_add(1);
                }
                name.clone()
            }
            CandidacyOp::Withdraw(name) => {
                if let Some(entry) = self.elections.get_mut(name) {
                    entry.candidates.remove(&from);
                }
                name.clone()
            }
        }
    }

    fn export(&self) -> GroupState {
        GroupState {
            next_stamp: self.next_stamp,
            founded: self.founded,
            elections: self
                .elections
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        ElectionState {
                            candidates: e.candidates.iter().map(|(m, s)| (*m, *s)).collect(),
                            leader: e.leader,
                            epoch: e.epoch,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Rule 5: the round is complete once every member's info is in, and
    /// every process that came in by `NodeUp` has either become a member
    /// (then its info is needed) or been named unannounced by a member of
    /// its side, or had its announcement refused.
    fn round_complete(&self) -> bool {
        let Phase::Installing { infos, refused, .. } = &self.phase else {
            return false;
        };
        // An info from a member that knows who is announced: the point
        // where a joiner learns it too, so every member completes alike.
        if !self.synced || !infos.values().any(|i| i.announced.is_some()) {
            return false;
        }
        let excused: BTreeSet<Member> = infos
            .values()
            .filter(|i| i.announced.is_some())
            .flat_map(|i| i.unannounced.iter().copied())
            .collect();
        self.view.iter().all(|m| infos.contains_key(m))
            && self.merging.iter().all(|m| {
                !self.roster.in_view(*m)
                    || self.roster.is_member(*m)
                    || excused.contains(m)
                    || refused.contains(m)
            })
    }

    fn try_install(&mut self, out: &mut Vec<Action>) {
        if self.round_complete() {
            self.install(out);
        }
    }

    fn install(&mut self, out: &mut Vec<Action>) {
        let Phase::Installing {
            infos, buffered, ..
        } = std::mem::replace(&mut self.phase, Phase::Installed)
        else {
            return;
        };
        let in_view: BTreeSet<Member> = self.view.iter().copied().collect();
        // Every process of another side is settled now (rule 5).
        self.merging.clear();
        let infos: BTreeMap<Member, Info> = infos
            .into_iter()
            .filter(|(m, _)| in_view.contains(m))
            .collect();
        // Rule 7: what the stream allows, from the lower medians of what
        // the members report (a minority of liars cannot move them).
        let clock_bound = lower_median(infos.values().map(|i| i.clock).collect())
            .unwrap_or(0)
            .saturating_add(CLOCK_SLACK);
        let fact_seqs: Vec<u64> = infos
            .values()
            .filter_map(|i| i.fact.as_ref().map(|f| f.ring_id.seq))
            .collect();
        let seq_bound = lower_median(fact_seqs)
            .or_else(|| {
                lower_median(
                    infos
                        .values()
                        .filter_map(|i| i.state.as_ref().map(highest_ring_seq))
                        .collect(),
                )
            })
            .unwrap_or(0)
            .saturating_add(RING_SLACK);
        // Facts came with the infos or after them (the latest counts);
        // an observer's never count.
        let roster = &self.roster;
        self.facts
            .retain(|m, _| in_view.contains(m) && !roster.is_observer(*m));
        let before = self.facts.len();
        self.facts.retain(|_, f| f.ring_id.seq <= seq_bound);
        self.refused.ring_jump += (before - self.facts.len()) as u64;
        let mut states: Vec<&GroupState> = Vec::new();
        for i in infos.values() {
            if let Some(state) = &i.state {
                if within_bounds(state, clock_bound, seq_bound) {
                    states.push(state);
                } else {
                    self.refused.epoch_jump += 1;
                }
            }
        }
        // Every member rebuilds the elections from the same infos, so all
        // agree whatever each held before.
        let mut next_stamp: u64 = 0;
        // A group founded here starts its terms above its founders' clocks.
        let founded = if states.is_empty() {
            infos
                .values()
                .map(|i| i.clock)
                .filter(|c| *c <= clock_bound)
                .max()
                .unwrap_or(0)
        } else {
            states.iter().map(|s| s.founded).max().unwrap_or(0)
        };
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        // Leaders as each side saw them: kept only where every side agrees.
        let mut leaders: BTreeMap<String, BTreeSet<Option<Member>>> = BTreeMap::new();
        for state in states {
            next_stamp = next_stamp.max(state.next_stamp);
            for (name, e) in &state.elections {
                let entry = merged.entry(name.clone()).or_default();
                for (m, stamp) in &e.candidates {
                    if in_view.contains(m) && !self.roster.is_observer(*m) {
                        let s = entry.candidates.entry(*m).or_insert(*stamp);
                        *s = (*s).min(*stamp);
                    }
                }
                entry.epoch = entry.epoch.max(e.epoch);
                leaders.entry(name.clone()).or_default().insert(e.leader);
            }
        }
        for (name, seen) in leaders {
            if let (Some(entry), 1) = (merged.get_mut(&name), seen.len()) {
                entry.leader = seen
                    .into_iter()
                    .next()
                    .flatten()
                    .filter(|l| in_view.contains(l));
            }
        }
        let group = merged.entry(GROUP_ELECTION.to_owned()).or_default();
        for m in &self.view {
            if !group.candidates.contains_key(m) && !self.roster.is_observer(*m) {
                group.candidates.insert(*m, next_stamp);
                next_stamp = next_stamp.saturating_add(1);
            }
        }
        self.next_stamp = next_stamp;
        self.founded = founded;
        self.elections = merged;
        self.installed_once = true;
        for (from, op, _, _) in buffered {
            if !in_view.contains(&from) {
                self.refused.not_member += 1;
                continue;
            }
            if self.roster.is_observer(from) {
                self.refused.observer += 1;
                continue;
            }
            self.apply_op(from, &op);
            if from == self.local {
                out.push(Action::Applied(op));
            }
        }
        // A joiner whose announcement is still on its way holds the
        // elections as everyone does, and is admitted with a round of its
        // own.
        self.outside = !in_view.contains(&self.local);
        if self.outside {
            self.decide_all(out);
            return;
        }
        out.push(Action::Event(ElectionEvent::Installed {
            members: self.view.clone(),
        }));
        self.decide_all(out);
    }

    /// Quorate by the facts delivered since the last confchg.
    fn view_quorate(&self) -> bool {
        self.facts.quorate(&self.view)
    }

    fn decide_all(&mut self, out: &mut Vec<Action>) {
        let names: Vec<String> = self.elections.keys().cloned().collect();
        for name in names {
            self.decide(&name, out);
        }
    }

    /// Applies the rule to one election (installed views only).
    fn decide(&mut self, name: &str, out: &mut Vec<Action>) {
        if !self.round_done() {
            return;
        }
        let quorate = self.view_quorate();
        let ring_seq = self.facts.highest_ring_seq(&self.view);
        let founded = self.founded;
        let Some(entry) = self.elections.get_mut(name) else {
            return;
        };
        let next = if quorate {
            entry
                .candidates
                .iter()
                .map(|(m, s)| (*s, *m))
                .min()
                .map(|(_, m)| m)
        } else {
            None
        };
        if next == entry.leader {
            return;
        }
        if next.is_some() {
            let prev = entry.epoch.unwrap_or(Epoch {
                ring_seq: 0,
                term: founded,
            });
            entry.epoch = Some(Epoch {
                ring_seq: prev.ring_seq.max(ring_seq),
                term: prev.term.saturating_add(1),
            });
        }
        entry.leader = next;
        out.push(Action::Event(ElectionEvent::LeaderChanged {
            name: name.to_owned(),
            leader: next,
            epoch: next.and(entry.epoch),
        }));
    }

    /// Recomputes where this member acts as leader and reports changes.
    fn update_acting(&mut self, out: &mut Vec<Action>) {
        let quorate = self.locally_quorate();
        let mut now = BTreeMap::new();
        if quorate {
            for (name, e) in &self.elections {
                if let (Some(l), Some(epoch)) = (e.leader, e.epoch) {
                    if l == self.local {
                        now.insert(name.clone(), epoch);
                    }
                }
            }
        }
        for (name, epoch) in &self.acting {
            if now.get(name) != Some(epoch) {
                out.push(Action::Event(ElectionEvent::Deposed {
                    name: name.clone(),
                    epoch: *epoch,
                }));
            }
        }
        for (name, epoch) in &now {
            if self.acting.get(name) != Some(epoch) {
                out.push(Action::Event(ElectionEvent::Elected {
                    name: name.clone(),
                    epoch: *epoch,
                }));
            }
        }
        self.acting = now;
    }
}

/// The lower median (a minority of high values cannot move it).
fn lower_median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

fn highest_ring_seq(state: &GroupState) -> u64 {
    state
        .elections
        .iter()
        .filter_map(|(_, e)| e.epoch.map(|x| x.ring_seq))
        .max()
        .unwrap_or(0)
}

/// Rule 7 for a state carried in an info.
fn within_bounds(state: &GroupState, clock_bound: u64, seq_bound: u64) -> bool {
    state.founded <= clock_bound
        && state.elections.iter().all(|(_, e)| {
            e.epoch.is_none_or(|x| {
                x.ring_seq <= seq_bound && x.term <= state.founded.saturating_add(TERM_SLACK)
            })
        })
}

/// Identifies a view for infos: a hash of its sorted member list, the one
/// thing every member of the view sees alike (at a merge each side sees the
/// other side in its joined list).
pub(crate) fn view_tag(members: &[Member]) -> u64 {
    let mut h = StableHasher::new();
    for m in members {
        h.member(*m);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
