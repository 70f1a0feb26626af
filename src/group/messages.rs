//! Bodies of the group protocol's envelopes (see [`crate::wire`]).
//!
//! Plain structs and enums only: no `flatten`, `tag`, `untagged` or `skip`,
//! which bincode cannot round-trip.

use serde::{Deserialize, Serialize};

pub use crate::remote::RemoteFailure;

use crate::supervisor::{
    ChildPath, FencingToken, Fingerprint, IncarnationId, MergeOffer, TreeSpec,
};
use crate::transport::{Member, NodeId};
use crate::wire::{Codec, Kind, WireError, NEXT_PROTOCOL_VERSION};

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
/// allocated until the core says it wants the request, and the host hands
/// the payload to its actor straight from the delivered buffer.
///
/// `type_tag` stays bytes: it is checked to be UTF-8 like the rest (so
/// every member accepts or drops the same messages), but only ever compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestRef<'a> {
    pub id: u64,
    pub target: &'a str,
    pub type_tag: &'a [u8],
    pub want_reply: bool,
    pub fence: Option<FencingToken>,
    pub payload: &'a [u8],
}

impl<'a> RequestRef<'a> {
    /// Reads the body of a `Kind::Request` envelope: exactly what the codec
    /// would make of it as a [`Request`] (fixint bincode: `u64` lengths,
    /// `0`/`1` for bools and option tags, no trailing bytes), without
    /// serde's machinery, which costs more than the rest of a small
    /// message's trip through a receiver. Never panics; nothing it returns
    /// outlives `body`, so a forged length cannot make it allocate.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader(body);
        let (id, target, type_tag, want_reply) =
            (|| Some((r.u64()?, r.bytes()?, r.bytes()?, r.flag()?)))()
                .ok_or_else(|| malformed("a request head cut short or invalid"))?;
        let target = std::str::from_utf8(target)
            .map_err(|e| WireError::Malformed(format!("request target: {e}")))?;
        // Short tags are ASCII; `is_ascii` reads them a word at a time.
        if !type_tag.is_ascii() {
            std::str::from_utf8(type_tag)
                .map_err(|e| WireError::Malformed(format!("request type tag: {e}")))?;
        }
        let (fence, payload) = (|| {
            let fence = match r.flag()? {
                true => Some(FencingToken {
                    epoch: r.u64()?,
                    seq: r.u64()?,
                }),
                false => None,
            };
            Some((fence, r.bytes()?))
        })()
        .ok_or_else(|| malformed("a request fence or payload cut short or invalid"))?;
        if !r.0.is_empty() {
            return Err(malformed("trailing bytes after a request"));
        }
        Ok(RequestRef {
            id,
            target,
            type_tag,
            want_reply,
            fence,
            payload,
        })
    }

    pub(crate) fn to_request(self) -> Request {
        Request {
            id: self.id,
            target: self.target.to_owned(),
            // Checked to be UTF-8 by `parse` (or taken from a `String`), so
            // nothing is replaced.
            type_tag: String::from_utf8_lossy(self.type_tag).into_owned(),
            want_reply: self.want_reply,
            fence: self.fence,
            payload: self.payload.to_vec(),
        }
    }
}

impl<'a> From<&'a Request> for RequestRef<'a> {
    fn from(r: &'a Request) -> Self {
        RequestRef {
            id: r.id,
            target: &r.target,
            type_tag: r.type_tag.as_bytes(),
            want_reply: r.want_reply,
            fence: r.fence,
            payload: &r.payload,
        }
    }
}

#[cold]
fn malformed(what: &str) -> WireError {
    WireError::Malformed(what.to_owned())
}

/// The rest of a fixint bincode body; `None` when it ends too soon or holds
/// a value bincode would refuse.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Option<u64> {
        let (le, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*le))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u64()?;
        // A length past what is left fails here, whatever its size.
        if len > self.0.len() as u64 {
            return None;
        }
        let (bytes, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        Some(bytes)
    }

    /// A bool or an option tag: bincode accepts 0 and 1 only.
    fn flag(&mut self) -> Option<bool> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
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

impl RequestHead<'_> {
    /// Bytes of [`RequestHead::write`].
    pub(crate) fn encoded_len(&self) -> usize {
        8 + 8 + self.target.len() + 8 + self.type_tag.len() + 1 + self.fence.map_or(1, |_| 17)
    }

    /// The head as the codec would serialize it (fixint bincode; pinned by
    /// a test against the serde path), written by hand: it goes out with
    /// every request.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&(self.target.len() as u64).to_le_bytes());
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(&(self.type_tag.len() as u64).to_le_bytes());
        out.extend_from_slice(self.type_tag.as_bytes());
        out.push(u8::from(self.want_reply));
        match self.fence {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                out.extend_from_slice(&f.epoch.to_le_bytes());
                out.extend_from_slice(&f.seq.to_le_bytes());
            }
        }
    }
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

/// `Kind::Reply` at [`NEXT_PROTOCOL_VERSION`], a version only tests speak:
/// the same reply laid out anew (fields in another order, one more), so a
/// test shows that members read each version's shape and write the one the
/// group speaks. A decoder of the other shape would misread it.
#[derive(Serialize, Deserialize)]
struct NextReply<O> {
    to: Member,
    id: u64,
    outcome: O,
    /// Always 0: room a newer version would use.
    flags: u8,
}

impl Reply {
    /// The envelope of this reply, in the shape of the version `codec`
    /// writes.
    pub(crate) fn encode(&self, codec: &Codec) -> Result<Vec<u8>, WireError> {
        if codec.version() >= NEXT_PROTOCOL_VERSION {
            let next = NextReply {
                to: self.to,
                id: self.id,
                outcome: &self.outcome,
                flags: 0,
            };
            codec.encode(Kind::Reply, &next)
        } else {
            codec.encode(Kind::Reply, self)
        }
    }

    /// A reply body, in the shape of the version its envelope names.
    pub(crate) fn decode(codec: &Codec, version: u8, body: &[u8]) -> Result<Reply, WireError> {
        if version >= NEXT_PROTOCOL_VERSION {
            let next: NextReply<Result<Vec<u8>, RemoteFailure>> = codec.decode_body(body)?;
            Ok(Reply {
                id: next.id,
                to: next.to,
                outcome: next.outcome,
            })
        } else {
            codec.decode_body(body)
        }
    }
}

/// `Kind::SyncRequest`: a member without the group state asks for it. The
/// state it gets is the state at this request's position in the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncRequest {
    /// Distinguishes this request from the same member's earlier ones.
    pub nonce: u64,
}

/// `Kind::Announce`: the sender says who it is. Delivered while the sender
/// is in the CPG view and not yet a member, it makes it a member for
/// decisions (see the rules in the group core's module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Announce {
    /// The protocol versions the sender speaks.
    pub announcement: crate::roster::Announcement,
    /// Whether the sender holds the group state (a founder, or a member of
    /// the side of a merge that keeps its state); `false` for a member that
    /// is about to ask for it.
    pub synced: bool,
}

/// `Kind::Refusal`: the members refused `member`, which cannot speak the
/// version the group speaks (`group_version`). Sent by the member that
/// would answer its state request, so a refused process, which cannot read
/// the group's other messages, learns why it is no member. Its layout is
/// the same in every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefusalNotice {
    /// The refused process.
    pub member: Member,
    /// The version the group speaks where it was refused.
    pub group_version: u8,
}

/// A member still waiting for the group state, as a snapshot carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unsynced {
    /// The waiting member.
    pub member: Member,
    /// Its latest request delivered since the last confchg, if any.
    pub asked: Option<u64>,
    /// The member chosen to answer that request; `None` when no member
    /// could answer it where it was delivered.
    pub responder: Option<Member>,
}

/// `Kind::Snapshot`: the group state as it stood where the request
/// `(for_member, nonce)` was delivered, or, when no member could answer it
/// there, where the member `at` was admitted (see [`Snapshot::at`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The member that asked.
    pub for_member: Member,
    /// Its request's nonce.
    pub nonce: u64,
    /// `None`: the state at the request. `Some(holder)`: the state at the
    /// first announcement of `holder` delivered after the request (nobody
    /// could answer before it was admitted).
    pub at: Option<Member>,
    /// Every registered name and its host.
    pub names: Vec<(String, Member)>,
    /// The supervision engine's whole state.
    pub supervision: crate::supervisor::Engine,
    /// Members still waiting for state at that point, sorted.
    pub unsynced: Vec<Unsynced>,
    /// The members for decisions at that point, with what each announced
    /// (versions and role), sorted.
    pub announced: Vec<(Member, crate::roster::Announcement)>,
}

impl Snapshot {
    /// Whether the snapshot is well formed: lists sorted without
    /// duplicates, every waiting member announced, the sender the member
    /// the rules choose, and a sane supervision state. A snapshot that is
    /// not is refused whole: it came from a broken or lying sender.
    pub(crate) fn is_sane(&self, from: Member) -> bool {
        let strictly_sorted = |v: &[Member]| v.windows(2).all(|w| w[0] < w[1]);
        let waiting: Vec<Member> = self.unsynced.iter().map(|u| u.member).collect();
        let announced: Vec<Member> = self.announced.iter().map(|(m, _)| *m).collect();
        let names_sorted = self.names.windows(2).all(|w| w[0].0 < w[1].0);
        let responder = announced
            .iter()
            .find(|m| waiting.binary_search(m).is_err())
            .copied();
        // Every member speaks the version the members speak: a roster no
        // stream could have produced is forged.
        let group_version = self.announced.iter().map(|(_, a)| a.max_version).min();
        let consistent = self
            .announced
            .iter()
            .all(|(_, a)| group_version.is_some_and(|v| a.speaks(v)));
        strictly_sorted(&announced)
            && consistent
            && strictly_sorted(&waiting)
            && names_sorted
            && waiting.iter().all(|m| announced.binary_search(m).is_ok())
            && waiting.binary_search(&self.for_member).is_ok()
            && responder == Some(from)
            && self.supervision.is_sane()
    }
}

/// `Kind::Supervision`: a fact for the supervision engine. The sender is
/// the member that asked, hosted or offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SupervisionMsg {
    /// Start (or revive, or take part in) a tree with this spec; the
    /// sender hosts the worker kinds it lists.
    TreeStarted {
        name: String,
        fingerprint: Fingerprint,
        spec: TreeSpec,
        kinds: Vec<String>,
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
    /// After a merge, the sender's side's state, with the sender's mark
    /// of the confchg it answers ([`crate::incarnation`]) and what the
    /// members of its side announced (their versions and roles), sorted.
    StateOffered {
        offer: MergeOffer,
        mark: u64,
        announced: Vec<(Member, crate::roster::Announcement)>,
    },
    /// The sender's mark after a confchg during a merge: its next offer
    /// carries it.
    Mark { mark: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Codec, Kind};
    use proptest::prelude::*;

    /// What the codec's serde path reads; `RequestRef::parse` must agree
    /// with it on every input.
    #[derive(Debug, Deserialize)]
    struct ViaSerde<'a> {
        id: u64,
        target: &'a str,
        type_tag: &'a str,
        want_reply: bool,
        fence: Option<FencingToken>,
        payload: &'a [u8],
    }

    fn agree(body: &[u8]) -> Result<(), TestCaseError> {
        let serde: Result<ViaSerde<'_>, _> = Codec::new(1 << 20).decode_body_borrowed(body);
        let parsed = RequestRef::parse(body);
        match (serde, parsed) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.id, b.id);
                prop_assert_eq!(a.target, b.target);
                prop_assert_eq!(a.type_tag.as_bytes(), b.type_tag);
                prop_assert_eq!(a.want_reply, b.want_reply);
                prop_assert_eq!(a.fence, b.fence);
                prop_assert_eq!(a.payload, b.payload);
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "serde {:?}, parse {:?}", a, b),
        }
        Ok(())
    }

    fn encoded(r: &Request) -> Vec<u8> {
        let bytes = Codec::new(1 << 20).encode(Kind::Request, r).unwrap();
        bytes[crate::wire::HEADER_LEN..].to_vec()
    }

    #[test]
    fn parse_reads_what_the_codec_wrote() {
        let r = Request {
            id: 42,
            target: "sink-0".into(),
            type_tag: "a.Tag".into(),
            want_reply: true,
            fence: Some(FencingToken { epoch: 3, seq: 9 }),
            payload: vec![1, 2, 3],
        };
        let body = encoded(&r);
        assert_eq!(RequestRef::parse(&body).unwrap().to_request(), r);
        assert_eq!(RequestRef::from(&r), RequestRef::parse(&body).unwrap());
    }

    proptest! {
        #[test]
        fn the_hand_written_head_is_the_serde_head(
            id in any::<u64>(),
            target in ".{0,12}",
            want_reply in any::<bool>(),
            fence in any::<Option<(u64, u64)>>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let c = Codec::new(1 << 20);
            let head = RequestHead {
                id,
                target: &target,
                type_tag: "x.T",
                want_reply,
                fence: fence.map(|(epoch, seq)| FencingToken { epoch, seq }),
            };
            let by_hand = c
                .encode_with_written_head(Kind::Request, head.encoded_len(), |out| head.write(out), &payload)
                .unwrap();
            prop_assert_eq!(&by_hand, &c.encode_with_payload(Kind::Request, &head, &payload).unwrap());
        }

        #[test]
        fn parse_agrees_with_serde_on_requests(
            id in any::<u64>(),
            target in ".{0,12}",
            type_tag in ".{0,12}",
            want_reply in any::<bool>(),
            fence in any::<Option<(u64, u64)>>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let r = Request {
                id,
                target,
                type_tag,
                want_reply,
                fence: fence.map(|(epoch, seq)| FencingToken { epoch, seq }),
                payload,
            };
            let body = encoded(&r);
            agree(&body)?;
            prop_assert_eq!(RequestRef::parse(&body).unwrap().to_request(), r);
            // Cut short, with a trailing byte, and with one byte changed.
            agree(&body[..cut.index(body.len())])?;
            let mut longer = body.clone();
            longer.push(0);
            agree(&longer)?;
            let mut changed = body;
            let at = flip.0.index(changed.len());
            changed[at] = flip.1;
            agree(&changed)?;
        }

        #[test]
        fn parse_agrees_with_serde_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..96)) {
            agree(&body)?;
        }
    }
}
