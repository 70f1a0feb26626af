//! Bodies of the group protocol's envelopes (see [`crate::wire`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.

use serde::{Deserialize, Serialize};

use crate::supervisor::{
    ChildPath, FencingToken, Fingerprint, IncarnationId, MergeOffer, TreeSpec,
};
use crate::transport::{Member, NodeId};

/// `Kind::Registry`: a change to the name table, decided where it lands in
/// the total order. The sender is the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RegistryOp {
    /// Claim `name` for the sender; `token` matches the sender's pending call.
    Register { name: String, token: u64 },
    /// Release `name` if the sender holds it.
    Unregister { name: String },
}

/// `Kind::Request`: a message for the actor registered as `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    /// Unique per sender; the reply names it.
    pub id: u64,
    /// Registered name of the receiving actor.
    pub target: String,
    /// The message type's stable tag.
    pub type_tag: String,
    /// Whether the sender awaits a reply.
    pub want_reply: bool,
    /// Only for this incarnation of a supervised child (its fencing
    /// token); any other incarnation is stale and the request is refused.
    pub fence: Option<FencingToken>,
    /// The message, encoded by [`crate::wire::Codec::encode_payload`].
    #[serde(with = "crate::wire::bytes")]
    pub payload: Vec<u8>,
}

/// A [`Request`] read in place from the delivered bytes: nothing is
/// allocated until the core says it wants the request.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestRef<'a> {
    pub id: u64,
    pub target: &'a str,
    pub type_tag: &'a str,
    pub want_reply: bool,
    pub fence: Option<FencingToken>,
    pub payload: &'a [u8],
}

impl RequestRef<'_> {
    pub(crate) fn to_owned(&self) -> Request {
        Request {
            id: self.id,
            target: self.target.to_owned(),
            type_tag: self.type_tag.to_owned(),
            want_reply: self.want_reply,
            fence: self.fence,
            payload: self.payload.to_vec(),
        }
    }
}

/// The fields of a [`Request`] before its payload: with
/// [`crate::wire::Codec::encode_with_payload`] the sender writes the user's
/// message straight into the envelope, giving the bytes of the whole
/// `Request` without a copy of the payload.
#[derive(Debug, Serialize)]
pub(crate) struct RequestHead<'a> {
    pub id: u64,
    pub target: &'a str,
    pub type_tag: &'a str,
    pub want_reply: bool,
    pub fence: Option<FencingToken>,
}

/// `Kind::Reply`: the outcome of a request, for the member that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// The request's id.
    pub id: u64,
    /// The member that sent the request.
    pub to: Member,
    /// The encoded result, or why there is none.
    pub outcome: Result<Vec<u8>, RemoteFailure>,
}

/// Why a host could not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The host does not accept this message type under that name.
    UnknownType(String),
    /// The payload did not decode as the named type.
    BadPayload(String),
    /// The local actor is gone (stopped) or its mailbox is closed.
    ActorGone,
    /// The result could not be encoded.
    Encode(String),
}

/// `Kind::SyncRequest`: a member without the group state asks for it. The
/// state it gets is the state at this request's position in the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncRequest {
    /// Distinguishes this request from the same member's earlier ones.
    pub nonce: u64,
}

/// `Kind::Snapshot`: the group state as it stood where the request
/// `(for_member, nonce)` was delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The member that asked.
    pub for_member: Member,
    /// Its request's nonce.
    pub nonce: u64,
    /// Every registered name and its host.
    pub names: Vec<(String, Member)>,
    /// The supervision engine's whole state.
    pub supervision: crate::supervisor::Engine,
    /// Members of the view still waiting for state at that point, with the
    /// nonce of their latest request delivered since the last confchg.
    pub unsynced: Vec<(Member, Option<u64>)>,
}

/// `Kind::Supervision`: a fact for the supervision engine. The sender is
/// the member that asked, hosted or offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SupervisionMsg {
    /// Start (or revive) a tree with this spec.
    TreeStarted {
        name: String,
        fingerprint: Fingerprint,
        spec: TreeSpec,
    },
    /// An incarnation the sender hosted stopped on its own.
    ChildExited {
        path: ChildPath,
        incarnation: IncarnationId,
        normal: bool,
    },
    /// The sender's clock, in milliseconds.
    Tick { now_ms: u64 },
    /// The sender's partition gained or lost quorum; its nodes.
    Quorum { quorate: bool, nodes: Vec<NodeId> },
    /// After a merge, the sender's side's state.
    StateOffered { offer: MergeOffer },
}
