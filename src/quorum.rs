//! Quorum facts: each member's latest quorum notification, as delivered in
//! the ordered stream, and the one rule that reads them. The replicated and
//! election cores keep their facts here.
//!
//! A node's quorum service notifies only the processes on that node, so
//! every member multicasts what its node said; the multicast is the *fact*,
//! and every member reads the same facts at the same positions. The rule:
//!
//! - **Quorate** ⇔ at least one member of the view reported, and every
//!   report present says quorate. A member that has not reported yet (a
//!   joiner reads its first notification after its first confchg) shares
//!   the others' ring, hence their quorum; one report of no quorum is
//!   enough to stop, since that member's node sees a partition the others
//!   may not see yet.
//! - **Ring sequence** of the view: the highest any member reported.
//!
//! Which facts are kept across a confchg is each core's decision: a replica
//! keeps the facts of members still announced (its re-evaluation after an
//! install needs them), an election clears them (every member sends a new
//! one with its info). The supervision engine inside a registry group
//! works differently on purpose: its quorum fact is one per node, sent by
//! one member on behalf of the group, and the last one delivered wins,
//! because it decides where children run from the *nodes* a partition
//! holds (a list only the quorum service gives), not from which members
//! agree.

use std::collections::BTreeMap;

use crate::transport::{Member, QuorumState};

/// Each member's latest quorum fact.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuorumFacts {
    facts: BTreeMap<Member, QuorumState>,
}

impl QuorumFacts {
    /// `member`'s latest fact is `fact`.
    pub(crate) fn record(&mut self, member: Member, fact: QuorumState) {
        self.facts.insert(member, fact);
    }

    /// `member`'s latest fact, if any.
    pub(crate) fn get(&self, member: &Member) -> Option<&QuorumState> {
        self.facts.get(member)
    }

    /// Keeps the facts of the members `keep` says.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Member, &QuorumState) -> bool) {
        self.facts.retain(|m, f| keep(m, f));
    }

    /// Forgets every fact.
    pub(crate) fn clear(&mut self) {
        self.facts.clear();
    }

    /// How many members have a fact.
    pub(crate) fn len(&self) -> usize {
        self.facts.len()
    }

    /// Every fact, by member.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Member, &QuorumState)> {
        self.facts.iter()
    }

    /// The rule: at least one member of `view` reported, and every report
    /// of a member of `view` says quorate.
    pub(crate) fn quorate(&self, view: &[Member]) -> bool {
        let mut reported = view.iter().filter_map(|m| self.facts.get(m)).peekable();
        reported.peek().is_some() && reported.all(|f| f.quorate)
    }

    /// The highest ring sequence a member of `view` reported (0: none).
    pub(crate) fn highest_ring_seq(&self, view: &[Member]) -> u64 {
        view.iter()
            .filter_map(|m| self.facts.get(m))
            .map(|f| f.ring_id.seq)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{NodeId, RingId};
    use proptest::prelude::*;

    fn fact(quorate: bool, seq: u64) -> QuorumState {
        QuorumState {
            quorate,
            ring_id: RingId {
                seq,
                nodeid: NodeId(1),
            },
            nodes: vec![NodeId(1)],
        }
    }

    fn facts(reports: &[(u32, bool, u64)]) -> QuorumFacts {
        let mut f = QuorumFacts::default();
        for (pid, quorate, seq) in reports {
            f.record(Member::new(1, *pid), fact(*quorate, *seq));
        }
        f
    }

    fn view(pids: &[u32]) -> Vec<Member> {
        pids.iter().map(|p| Member::new(1, *p)).collect()
    }

    #[test]
    fn nobody_reported_is_not_quorate() {
        assert!(!QuorumFacts::default().quorate(&view(&[1, 2])));
        assert!(!facts(&[(3, true, 1)]).quorate(&view(&[1, 2])));
    }

    #[test]
    fn one_report_of_no_quorum_is_enough_to_stop() {
        let f = facts(&[(1, true, 5), (2, false, 5)]);
        assert!(!f.quorate(&view(&[1, 2])));
        assert!(f.quorate(&view(&[1])));
    }

    #[test]
    fn a_member_that_has_not_reported_shares_the_others_quorum() {
        assert!(facts(&[(1, true, 5)]).quorate(&view(&[1, 2])));
    }

    #[test]
    fn the_ring_sequence_is_the_highest_reported_in_the_view() {
        let f = facts(&[(1, true, 5), (2, true, 9), (3, true, 12)]);
        assert_eq!(f.highest_ring_seq(&view(&[1, 2])), 9);
        assert_eq!(f.highest_ring_seq(&view(&[4])), 0);
    }

    proptest! {
        /// The rule reads facts, not the order they came in: members fed
        /// the same facts decide alike whatever the order.
        #[test]
        fn the_order_of_facts_does_not_matter(
            reports in proptest::collection::vec((0u32..6, any::<bool>(), 0u64..20), 0..12),
            members in proptest::collection::btree_set(0u32..6, 0..6),
        ) {
            let view: Vec<Member> = members.iter().map(|p| Member::new(1, *p)).collect();
            // The latest fact of each member, whatever came before it.
            let mut latest = BTreeMap::new();
            for (pid, quorate, seq) in &reports {
                latest.insert(*pid, (*quorate, *seq));
            }
            let forward = facts(&reports);
            let mut reordered = QuorumFacts::default();
            for (pid, (quorate, seq)) in latest.iter().rev() {
                reordered.record(Member::new(1, *pid), fact(*quorate, *seq));
            }
            prop_assert_eq!(forward.quorate(&view), reordered.quorate(&view));
            prop_assert_eq!(forward.highest_ring_seq(&view), reordered.highest_ring_seq(&view));
        }

        /// Losing quorum anywhere stops the view; more members reporting
        /// quorate never turn a stop into a go.
        #[test]
        fn a_report_of_no_quorum_always_stops_the_view(
            reports in proptest::collection::vec((0u32..6, any::<bool>(), 0u64..20), 1..12),
            extra in proptest::collection::vec((0u32..6, 0u64..20), 0..6),
        ) {
            let all: Vec<Member> = (0..6).map(|p| Member::new(1, p)).collect();
            let mut f = facts(&reports);
            let stopped = !f.quorate(&all);
            for (pid, seq) in extra {
                if f.get(&Member::new(1, pid)).is_none() {
                    f.record(Member::new(1, pid), fact(true, seq));
                }
            }
            if stopped {
                prop_assert!(!f.quorate(&all));
            }
        }
    }
}
