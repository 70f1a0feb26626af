//! Inputs of the engine: facts of the ordered stream, in the past tense.
//!
//! The runtime turns each delivered message and each confchg into one
//! [`Event`], in delivery order. Anything local (a clock, an actor that
//! stopped, a quorum notification) is multicast first and becomes an event
//! only when it comes back in the agreed order.

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::ids::{ChildPath, IncarnationId};
use super::spec::TreeSpec;
use super::state::MergeOffer;
use crate::transport::{Member, MemberChange, NodeId};

/// A configuration change of the group, as CPG delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The fencing epoch of the new view: the totem ring `seq` (the same on
    /// every member of the ring, and only growing). An epoch lower than one
    /// already seen is raised to it, so tokens never go back.
    pub epoch: u64,
    /// The whole view after the change.
    pub members: Vec<Member>,
    /// Who joined, and why (`Join`, or `NodeUp` when partitions merge).
    pub joined: Vec<MemberChange>,
    /// Who left, and why (`Leave`, `ProcDown` or `NodeDown`).
    pub left: Vec<MemberChange>,
}

/// One entry of the ordered stream, as the engine consumes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The view changed (a CPG confchg).
    ViewChanged(ViewChange),
    /// A host reported that an incarnation it ran stopped or panicked.
    ChildExited {
        /// The child.
        path: ChildPath,
        /// The incarnation that exited.
        incarnation: IncarnationId,
        /// The member that ran it (the sender of the report).
        host: Member,
        /// `true` for a normal stop, `false` for a crash or panic.
        normal: bool,
    },
    /// A member multicast its clock; the stream's time becomes the largest
    /// value seen (a smaller value is ignored).
    Tick {
        /// Milliseconds on the sender's clock.
        now_ms: u64,
    },
    /// The quorum of this partition changed (put into the stream by the
    /// runtime from the quorum service).
    QuorumChanged {
        /// Whether the partition is quorate.
        quorate: bool,
        /// The nodes of the partition, as the quorum service listed them.
        /// After a view change with `NodeDown` departures, a report that
        /// still lists a departed node predates the change and is ignored.
        nodes: Vec<NodeId>,
    },
    /// A member asked to start a tree, or to take part in one already
    /// started. The first start of a name wins; a later one with another
    /// fingerprint is refused. Every start also says which of the tree's
    /// worker kinds its member can build: children are placed only on
    /// members that said they can build their kind.
    TreeStarted {
        /// The tree name.
        name: String,
        /// The fingerprint the sender computed for `spec`.
        fingerprint: Fingerprint,
        /// The spec itself, so every member builds the same tree from the
        /// stream alone.
        spec: TreeSpec,
        /// The member that asked.
        by: Member,
        /// The worker kinds `by` has factories for (kinds the spec does not
        /// name are ignored); empty for a member that takes part without
        /// hosting anything.
        kinds: Vec<String>,
    },
    /// After a merge, a member multicast its side's state as it was just
    /// before the merge (see [`Engine::merge_offer`](super::Engine::merge_offer)).
    StateOffered {
        /// The sender.
        from: Member,
        /// Its side's state.
        offer: MergeOffer,
    },
}
