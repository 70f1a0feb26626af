//! Which incarnation of a view an answer belongs to.
//!
//! After a confchg the decision cores collect one answer (an info) from
//! every member of the new view. The raw view is named by a hash of its
//! members, but the same set of processes can form the view again — a
//! member leaves and comes back, a partition heals twice — while an answer
//! a lagging member sent for the first time is still in flight. Counted in
//! the second, it claims a state its sender may have left since, and the
//! members (or a joiner taught by it) decide on something nobody holds.
//!
//! The rule, the same in every core that uses it:
//!
//! 1. After every confchg that keeps it in the view, a process multicasts a
//!    *mark*: a number it never used before ([`Incarnation::confchg`]).
//! 2. It answers only once its own mark has come back with no confchg in
//!    between ([`Incarnation::answer`] holds the answer until
//!    [`Incarnation::delivered`] sees the mark), and the answer carries the
//!    mark.
//! 3. An answer counts only if its mark is the latest mark of its sender
//!    delivered since the latest confchg ([`Incarnation::fresh`]).
//!
//! A mark delivered after the latest confchg was sent after its sender saw
//! that confchg (it is delivered after the confchg, and a process sends
//! only from its own position in the stream), so an answer that carries it
//! answers this incarnation and no earlier one. Every process applies rule
//! 3 to the same marks in the same order, so all agree on which answers
//! count, including a joiner that knows nothing of the group yet: the rule
//! needs no history from before the confchg. The cost is one ordered
//! round after each confchg.
//!
//! # Users, and what they do not share
//!
//! Three rounds use this rule: the replicated core's infos, the election
//! core's infos and the supervision merge offers of a registry group
//! ([`crate::group`], rule 5). With the quorum rule ([`crate::quorum`]),
//! that is everything their view installs have in common. What completes a
//! round is each core's own, and differs for reasons of substance, so no
//! shared install-round type holds them:
//!
//! - the **replicated** core waits for an info from every member, then
//!   admits announcing processes only if their claims fit what the members
//!   hold (a process with a state of a primary the members never saw is
//!   refused), and the install picks the holders of the latest state;
//! - the **election** core waits for every member's info and for every
//!   process of a merging side to be settled (a member, excused by an info
//!   that says it never announced itself, or refused), then rebuilds every
//!   election from the infos and clears the quorum facts;
//! - the **supervision** merge round needs one offer per *side*, not per
//!   member (a side's members hold the same state, which can be large), an
//!   offer speaking only for processes that arrived with its sender.
//!
//! A shared type would be the intersection (a tag, a set of answers, a
//! completion predicate passed in), which is this module plus a map.

use std::collections::BTreeMap;

use crate::transport::Member;

/// One process's side of the rule (module doc): its own marks, and the
/// marks delivered since the latest confchg. `A` is an answer held until
/// the process's own mark is back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incarnation<A> {
    own: u64,
    back: bool,
    held: Option<A>,
    marks: BTreeMap<Member, u64>,
}

impl<A> Default for Incarnation<A> {
    fn default() -> Self {
        Incarnation {
            own: 0,
            back: false,
            held: None,
            marks: BTreeMap::new(),
        }
    }
}

impl<A> Incarnation<A> {
    /// A confchg that keeps this process in the view: forgets the marks
    /// and any held answer, and returns the mark to multicast (rule 1).
    pub(crate) fn confchg(&mut self) -> u64 {
        self.own += 1;
        self.back = false;
        self.held = None;
        self.marks.clear();
        self.own
    }

    /// A mark delivered from `from` (`local` is this process). Returns the
    /// answer held for it if it is this process's own current mark, just
    /// back (rule 2), with the mark it must carry.
    pub(crate) fn delivered(&mut self, local: Member, from: Member, mark: u64) -> Option<(u64, A)> {
        self.marks.insert(from, mark);
        if from != local || mark != self.own || self.back {
            return None;
        }
        self.back = true;
        self.held.take().map(|answer| (self.own, answer))
    }

    /// Records a delivered mark without acting on it: for replaying what a
    /// process recorded before it could decide (after [`Self::forget_marks`]).
    pub(crate) fn replayed(&mut self, from: Member, mark: u64) {
        self.marks.insert(from, mark);
    }

    /// Forgets the marks delivered since the confchg (a replay rebuilds
    /// them, so each answer is judged against the marks before it).
    pub(crate) fn forget_marks(&mut self) {
        self.marks.clear();
    }

    /// This process's answer: `Some((mark, answer))` to multicast now, or
    /// `None` if it is held until the mark is back (a later answer replaces
    /// a held one).
    pub(crate) fn answer(&mut self, answer: A) -> Option<(u64, A)> {
        if self.back {
            Some((self.own, answer))
        } else {
            self.held = Some(answer);
            None
        }
    }

    /// Whether an answer from `from` carrying `mark` counts (rule 3).
    pub(crate) fn fresh(&self, from: Member, mark: u64) -> bool {
        self.marks.get(&from) == Some(&mark)
    }

    /// The processes whose mark was delivered since the latest confchg.
    pub(crate) fn marked(&self) -> impl Iterator<Item = Member> + '_ {
        self.marks.keys().copied()
    }

    /// Whether this process's own mark of this incarnation is back.
    pub(crate) fn is_back(&self) -> bool {
        self.back
    }

    /// This process's current mark.
    pub(crate) fn own(&self) -> u64 {
        self.own
    }
}

#[cfg(test)]
mod tests;
