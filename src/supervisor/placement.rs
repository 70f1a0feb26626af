//! Placement: which member hosts a child, as a pure function of the view.
//!
//! Every member computes the same answer from the same view, so no message
//! is needed to agree where a child runs.
//!
//! - [`PlacementPolicy::Any`] uses rendezvous (highest-random-weight)
//!   hashing of the child's path over the eligible members: when a member
//!   joins, only the children that now score highest on it move (about
//!   `1/(n+1)` of them); when one leaves, only its own children move.
//!   Weights are integer "virtual points": a member of weight `w` draws `w`
//!   scores and keeps the best, so it wins with probability `w / Σw`
//!   without any floating point (whose `ln` may differ between platforms).
//! - [`PlacementPolicy::Singleton`], [`PlacementPolicy::Pinned`] and the
//!   per-node slots of [`PlacementPolicy::OnePerNode`] go to the
//!   longest-present eligible member (ties broken by member order), so a
//!   join never moves them.
//! - [`PlacementPolicy::OnEveryMember`] has one slot per eligible member.

use serde::{Deserialize, Serialize};

use crate::stable_hash::{mix64, StableHasher};
use crate::transport::{Member, NodeId};

/// Largest weight honoured; larger weights count as this (each unit of
/// weight costs one hash per placement decision).
pub const MAX_WEIGHT: u32 = 1024;

/// Where a worker may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementPolicy {
    /// One instance on any eligible member, chosen by rendezvous hashing.
    Any,
    /// One instance on a member of this node.
    Pinned(NodeId),
    /// One instance on every node that has an eligible member.
    OnePerNode,
    /// One instance on every eligible member.
    OnEveryMember,
    /// One instance in the whole group, on the longest-present eligible
    /// member.
    Singleton,
}

/// A placement policy with optional per-node weights and excluded nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// The policy.
    pub policy: PlacementPolicy,
    /// Per-node weights for [`PlacementPolicy::Any`] (default 1; 0 makes a
    /// node ineligible for every policy).
    pub weights: Vec<(NodeId, u32)>,
    /// Nodes that never host this child.
    pub exclude: Vec<NodeId>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement::any()
    }
}

impl Placement {
    /// A placement with `policy`, no weights and no exclusions.
    pub fn new(policy: PlacementPolicy) -> Self {
        Placement {
            policy,
            weights: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// [`PlacementPolicy::Any`].
    pub fn any() -> Self {
        Placement::new(PlacementPolicy::Any)
    }

    /// [`PlacementPolicy::Pinned`] to `node`.
    pub fn pinned(node: NodeId) -> Self {
        Placement::new(PlacementPolicy::Pinned(node))
    }

    /// [`PlacementPolicy::Singleton`].
    pub fn singleton() -> Self {
        Placement::new(PlacementPolicy::Singleton)
    }

    /// [`PlacementPolicy::OnePerNode`].
    pub fn one_per_node() -> Self {
        Placement::new(PlacementPolicy::OnePerNode)
    }

    /// [`PlacementPolicy::OnEveryMember`].
    pub fn on_every_member() -> Self {
        Placement::new(PlacementPolicy::OnEveryMember)
    }

    /// Adds a weight for `node`.
    pub fn weight(mut self, node: NodeId, weight: u32) -> Self {
        self.weights.push((node, weight));
        self
    }

    /// Excludes `node`.
    pub fn exclude(mut self, node: NodeId) -> Self {
        self.exclude.push(node);
        self
    }

    /// The weight of `node`: 0 if excluded, else its listed weight
    /// (clamped to [`MAX_WEIGHT`]), else 1.
    pub fn weight_of(&self, node: NodeId) -> u32 {
        if self.exclude.contains(&node) {
            return 0;
        }
        self.weights
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(1, |(_, w)| (*w).min(MAX_WEIGHT))
    }

    fn eligible<'a>(&'a self, view: &'a [ViewMember]) -> impl Iterator<Item = &'a ViewMember> + 'a {
        view.iter()
            .filter(move |v| self.weight_of(v.member.node) > 0)
    }

    /// The slots this placement asks for in `view`: one [`SlotKey::Single`]
    /// for single-instance policies, one per node or per member otherwise.
    pub fn slot_keys(&self, view: &[ViewMember]) -> Vec<SlotKey> {
        match self.policy {
            PlacementPolicy::Any | PlacementPolicy::Pinned(_) | PlacementPolicy::Singleton => {
                vec![SlotKey::Single]
            }
            PlacementPolicy::OnePerNode => {
                let mut nodes: Vec<SlotKey> = self
                    .eligible(view)
                    .map(|v| SlotKey::Node(v.member.node))
                    .collect();
                nodes.sort();
                nodes.dedup();
                nodes
            }
            PlacementPolicy::OnEveryMember => self
                .eligible(view)
                .map(|v| SlotKey::Member(v.member))
                .collect(),
        }
    }

    /// The member that should host `slot` of the child whose path hashes to
    /// `child_key`, or `None` if no eligible member fits (the child waits).
    pub fn host(&self, child_key: u64, slot: &SlotKey, view: &[ViewMember]) -> Option<Member> {
        match (self.policy, slot) {
            (PlacementPolicy::Any, SlotKey::Single) => rendezvous(
                child_key,
                self.eligible(view)
                    .map(|v| (v.member, self.weight_of(v.member.node))),
            ),
            (PlacementPolicy::Singleton, SlotKey::Single) => oldest(self.eligible(view)),
            (PlacementPolicy::Pinned(node), SlotKey::Single) => {
                oldest(self.eligible(view).filter(|v| v.member.node == node))
            }
            (PlacementPolicy::OnePerNode, SlotKey::Node(node)) => {
                oldest(self.eligible(view).filter(|v| v.member.node == *node))
            }
            (PlacementPolicy::OnEveryMember, SlotKey::Member(m)) => self
                .eligible(view)
                .find(|v| v.member == *m)
                .map(|v| v.member),
            _ => None,
        }
    }
}

/// One instance position of a worker: the whole child for single-instance
/// policies, or its instance for one node or one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SlotKey {
    /// The only instance of an `Any`, `Pinned` or `Singleton` child.
    Single,
    /// The instance of a `OnePerNode` child on this node.
    Node(NodeId),
    /// The instance of an `OnEveryMember` child on this member.
    Member(Member),
}

/// A member of the current view and the stream position at which it
/// entered the view (smaller is older).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewMember {
    /// The member.
    pub member: Member,
    /// Stream position of the view change that admitted it.
    pub since: u64,
}

fn oldest<'a>(members: impl Iterator<Item = &'a ViewMember>) -> Option<Member> {
    members
        .min_by_key(|v| (v.since, v.member))
        .map(|v| v.member)
}

/// Weighted rendezvous hashing: the candidate with the highest score for
/// `key` wins; a candidate of weight `w` draws `w` scores.
pub fn rendezvous(key: u64, candidates: impl Iterator<Item = (Member, u32)>) -> Option<Member> {
    let mut best: Option<(u64, Member)> = None;
    for (member, weight) in candidates {
        for point in 0..weight.min(MAX_WEIGHT) {
            let h = StableHasher::new()
                .u64(key)
                .u32(member.node.0)
                .u32(member.pid)
                .u32(point)
                .finish();
            let score = (mix64(h), member);
            if best.is_none_or(|b| score > b) {
                best = Some(score);
            }
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[(u32, u32)]) -> Vec<ViewMember> {
        members
            .iter()
            .enumerate()
            .map(|(i, (n, p))| ViewMember {
                member: Member::new(*n, *p),
                since: i as u64,
            })
            .collect()
    }

    fn hosts(p: &Placement, view: &[ViewMember], n: u64) -> Vec<Option<Member>> {
        (0..n)
            .map(|k| p.host(mix64(k), &SlotKey::Single, view))
            .collect()
    }

    #[test]
    fn registry_names_are_the_path_then_the_slot() {
        let nested = crate::supervisor::ChildPath::new("jobs", ["pool", "indexer"]);
        assert_eq!(
            crate::supervisor::ChildName(&nested, &SlotKey::Single).to_string(),
            "jobs/pool/indexer"
        );
        let agent = crate::supervisor::ChildPath::new("jobs", ["agent"]);
        assert_eq!(
            crate::supervisor::ChildName(&agent, &SlotKey::Node(NodeId(2))).to_string(),
            "jobs/agent@node2"
        );
        assert_eq!(
            crate::supervisor::ChildName(&agent, &SlotKey::Member(Member::new(2, 4242)))
                .to_string(),
            "jobs/agent@node2/4242"
        );
    }

    #[test]
    fn adding_one_member_to_five_moves_about_a_sixth_of_the_children() {
        let five = view(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        let six = view(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
        let p = Placement::any();
        let before = hosts(&p, &five, 600);
        let after = hosts(&p, &six, 600);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        // Expected 100; every move must go to the new member.
        assert!((70..=130).contains(&moved.len()), "moved {}", moved.len());
        assert!(moved.iter().all(|(_, b)| **b == Some(Member::new(6, 1))));
    }

    #[test]
    fn removing_a_member_moves_only_its_children() {
        let five = view(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        let four = view(&[(1, 1), (2, 1), (3, 1), (5, 1)]);
        let p = Placement::any();
        for (a, b) in hosts(&p, &five, 600).iter().zip(hosts(&p, &four, 600)) {
            if *a != Some(Member::new(4, 1)) {
                assert_eq!(*a, b);
            }
        }
    }

    #[test]
    fn weights_skew_the_share_and_zero_or_exclusion_makes_a_node_ineligible() {
        let v = view(&[(1, 1), (2, 1)]);
        let p = Placement::any().weight(NodeId(1), 3);
        let on_one = hosts(&p, &v, 2000)
            .iter()
            .filter(|h| **h == Some(Member::new(1, 1)))
            .count();
        assert!(
            (1350..=1650).contains(&on_one),
            "node 1 got {on_one} of 2000"
        );
        let p = Placement::any().weight(NodeId(1), 0);
        assert!(hosts(&p, &v, 100)
            .iter()
            .all(|h| *h == Some(Member::new(2, 1))));
        let p = Placement::any().exclude(NodeId(2));
        assert!(hosts(&p, &v, 100)
            .iter()
            .all(|h| *h == Some(Member::new(1, 1))));
        let p = Placement::any().exclude(NodeId(1)).exclude(NodeId(2));
        assert!(hosts(&p, &v, 10).iter().all(Option::is_none));
    }

    #[test]
    fn singleton_goes_to_the_longest_present_member_and_stays_on_joins() {
        let mut v = view(&[(3, 1), (1, 1)]);
        assert_eq!(
            Placement::singleton().host(0, &SlotKey::Single, &v),
            Some(Member::new(3, 1))
        );
        v.push(ViewMember {
            member: Member::new(0, 1),
            since: 10,
        });
        assert_eq!(
            Placement::singleton().host(0, &SlotKey::Single, &v),
            Some(Member::new(3, 1))
        );
        let p = Placement::singleton().exclude(NodeId(3));
        assert_eq!(p.host(0, &SlotKey::Single, &v), Some(Member::new(1, 1)));
    }

    #[test]
    fn pinned_stays_on_its_node_or_nowhere() {
        let v = view(&[(1, 1), (2, 7), (2, 3)]);
        let p = Placement::pinned(NodeId(2));
        assert_eq!(p.host(0, &SlotKey::Single, &v), Some(Member::new(2, 7)));
        assert_eq!(
            Placement::pinned(NodeId(9)).host(0, &SlotKey::Single, &v),
            None
        );
    }

    #[test]
    fn one_per_node_and_on_every_member_have_one_slot_each() {
        let v = view(&[(1, 1), (1, 2), (2, 1)]);
        let p = Placement::one_per_node();
        assert_eq!(
            p.slot_keys(&v),
            vec![SlotKey::Node(NodeId(1)), SlotKey::Node(NodeId(2))]
        );
        assert_eq!(
            p.host(0, &SlotKey::Node(NodeId(1)), &v),
            Some(Member::new(1, 1))
        );
        let p = Placement::on_every_member().exclude(NodeId(2));
        assert_eq!(
            p.slot_keys(&v),
            vec![
                SlotKey::Member(Member::new(1, 1)),
                SlotKey::Member(Member::new(1, 2))
            ]
        );
        assert_eq!(p.host(0, &SlotKey::Member(Member::new(2, 1)), &v), None);
        assert_eq!(p.host(0, &SlotKey::Single, &v), None);
    }
}
