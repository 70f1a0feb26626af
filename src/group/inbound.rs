//! The receive pipeline of a group member, without I/O: what one delivered
//! multicast becomes on its way to the core. The runtime and the replay of
//! a recording both go through it, so a replay takes the decisions the
//! member took live, malformed input included.
//!
//! ```text
//!  delivered bytes ──receive──(a compressed frame opened first)
//!                          ├──► a piece (reassembly: pending | stray | whole)
//!                          └──► a whole message ──unpack──► envelopes, in order
//!                                                  (a batch split; one bad
//!                                                   envelope dropped alone)
//!  envelope ──handle_envelope──► the core's commands (a request read in
//!                                place, or skipped if the core has no use)
//! ```
//!
//! Rules, in the order they apply:
//!
//! 1. A delivery whose frame does not decode is dropped whole. A
//!    compressed frame (`wire::Kind::Compressed`) is opened first, within
//!    the size limit, and what it opens into is read as the delivery it
//!    stands for; one that does not open, that names a version before
//!    `wire::COMPRESSION_VERSION`, or that opens into another compressed
//!    frame, is dropped whole. A compressed frame anywhere but a whole
//!    delivery (in a batch, or put back together from pieces) is dropped
//!    like any malformed message.
//! 2. A piece goes to the reassembly (`super::chunks`); a message it
//!    completes is handled at the place of its last piece. A completed
//!    message that is itself a piece is dropped.
//! 3. A batch whose framing does not split is dropped whole; otherwise each
//!    envelope is decoded and handled on its own, in the batch's order, and
//!    an envelope that does not decode is dropped alone.
//! 4. A whole message is handled from the buffer it lies in, held as
//!    `Bytes` ([`whole_buffer`]) and made the thread's current delivery
//!    while it is handled, so a `wire::Payload` in the message the local
//!    actor gets shares that buffer: the transport's copy of the delivery
//!    is the only copy of its bytes up to the actor (for a compressed or
//!    pieced message, the opened or reassembled buffer is).

use std::borrow::Cow;

use bytes::Bytes;

use super::chunks::{Piece, Reassembly};
use super::core::{decode_inbound, Command, DropCause, GroupCore, Inbound};
use super::messages::RequestRef;
use crate::transport::Member;
use crate::wire::{ChunkHead, Codec, Frame, Kind, WireError, COMPRESSION_VERSION};

/// What one delivery is (rules 1 and 2).
pub(crate) enum Received<'a> {
    /// A piece of a larger message, and what the reassembly made of it.
    Piece { head: ChunkHead, outcome: Piece },
    /// A message that came whole (opened, if it came compressed).
    Whole(Cow<'a, [u8]>),
}

impl<'a> Received<'a> {
    /// The whole message this delivery completes, if any (borrowed when it
    /// came whole), and whether it was put back together from pieces: what
    /// [`unpack`] takes.
    pub(crate) fn into_whole(self) -> Option<(Cow<'a, [u8]>, bool)> {
        match self {
            Received::Whole(message) => Some((message, false)),
            Received::Piece {
                outcome: Piece::Whole(message),
                ..
            } => Some((Cow::Owned(message), true)),
            Received::Piece { .. } => None,
        }
    }
}

/// The buffer a whole message lies in, as `Bytes` the message's
/// `wire::Payload` fields can share (rule 4): the delivery itself when it
/// came whole and plain, the buffer a compressed one opened into, the one
/// a message in pieces was put back together in. No copy in any case.
pub(crate) fn whole_buffer(delivered: &Bytes, message: Cow<'_, [u8]>) -> Bytes {
    match message {
        Cow::Borrowed(_) => delivered.clone(),
        Cow::Owned(buffer) => Bytes::from(buffer),
    }
}

/// Reads one delivery from `from`; a piece goes into `pieces`. An error
/// drops the whole delivery.
pub(crate) fn receive<'a>(
    codec: &Codec,
    pieces: &mut Reassembly,
    from: Member,
    bytes: &'a [u8],
) -> Result<Received<'a>, WireError> {
    let frame = codec.decode_frame(bytes)?;
    if frame.kind != Kind::Compressed {
        return Ok(
            plain(codec, pieces, from, frame)?.unwrap_or(Received::Whole(Cow::Borrowed(bytes)))
        );
    }
    let opened = open(codec, frame)?;
    let inner = codec.decode_frame(&opened)?;
    Ok(plain(codec, pieces, from, inner)?.unwrap_or(Received::Whole(Cow::Owned(opened))))
}

/// A frame that is not itself compressed: a piece goes into `pieces`
/// (`Some`), a whole message is left to the caller (`None`); a compressed
/// frame here is one inside another (rule 1).
fn plain(
    codec: &Codec,
    pieces: &mut Reassembly,
    from: Member,
    frame: Frame<'_>,
) -> Result<Option<Received<'static>>, WireError> {
    match frame.kind {
        Kind::Chunk => {
            let (head, piece) = codec.decode_chunk(frame.body)?;
            let outcome = pieces.accept(from, head, piece)?;
            Ok(Some(Received::Piece { head, outcome }))
        }
        Kind::Compressed => Err(WireError::Malformed(
            "compressed frame inside a compressed frame".into(),
        )),
        _ => Ok(None),
    }
}

/// What a compressed frame opens into (rule 1).
fn open(codec: &Codec, frame: Frame<'_>) -> Result<Vec<u8>, WireError> {
    if frame.version < COMPRESSION_VERSION {
        return Err(WireError::Malformed(format!(
            "compressed frame at version {}, before compression ({COMPRESSION_VERSION})",
            frame.version
        )));
    }
    codec.decompress(frame.body)
}

/// The envelopes of one whole message (rule 3).
pub(crate) struct Unpacked<'a> {
    /// Whether the message was a batch.
    pub(crate) batch: bool,
    /// Each envelope, or its length and why it was dropped.
    pub(crate) envelopes: Vec<Result<Frame<'a>, (usize, WireError)>>,
}

/// Splits a whole message into its envelopes; `reassembled` if it was put
/// back together from pieces. An error drops the whole message.
pub(crate) fn unpack<'a>(
    codec: &Codec,
    message: &'a [u8],
    reassembled: bool,
) -> Result<Unpacked<'a>, WireError> {
    let frame = codec.decode_frame(message)?;
    match frame.kind {
        Kind::Chunk if reassembled => Err(WireError::Malformed(
            "chunk inside a chunked message".into(),
        )),
        Kind::Compressed => Err(WireError::Malformed(
            "compressed frame inside a message".into(),
        )),
        Kind::Batch => {
            let envelopes = codec
                .split_batch(frame.body)?
                .into_iter()
                .map(|part| codec.decode_frame(part).map_err(|e| (part.len(), e)))
                .collect();
            Ok(Unpacked {
                batch: true,
                envelopes,
            })
        }
        _ => Ok(Unpacked {
            batch: false,
            envelopes: vec![Ok(frame)],
        }),
    }
}

/// What the core made of one envelope.
pub(crate) enum Handled<'a> {
    /// A request the core has no use for: read in place and skipped.
    Skipped,
    /// A request, read in place: the core's commands, and whether the
    /// local actor gets it.
    Request {
        request: RequestRef<'a>,
        commands: Vec<Command>,
        deliver: bool,
    },
    /// Any other message: the core's commands.
    Core(Vec<Command>),
}

/// An envelope's body, read.
enum Decoded<'a> {
    /// A request, in place.
    Request(RequestRef<'a>),
    /// Anything else.
    Other(Inbound),
}

/// Hands one envelope from `from` to `core`. An error drops the envelope
/// (the core saw nothing).
pub(crate) fn handle_envelope<'a>(
    core: &mut GroupCore,
    codec: &Codec,
    from: Member,
    frame: Frame<'a>,
) -> Result<Handled<'a>, WireError> {
    // Decoded first: whether an envelope is malformed depends on its bytes
    // alone, never on what this member knows (a member still learning the
    // roster judges no version), so every member drops the same ones.
    let decoded = if frame.kind == Kind::Request {
        Decoded::Request(RequestRef::parse(frame.body)?)
    } else {
        Decoded::Other(decode_inbound(codec, frame)?)
    };
    // Rule 8 of the core: a message counts only in a version every member
    // speaks (what a process says before it knows the version is read in
    // any).
    if !frame.kind.is_shared() && !core.counts_version(frame.version) {
        return Ok(Handled::Core(vec![Command::Dropped {
            from,
            cause: DropCause::Version,
        }]));
    }
    // A member waiting for the state judges the version when it replays.
    let judged = (!frame.kind.is_shared()).then_some(frame.version);
    let request = match decoded {
        Decoded::Request(request) => request,
        Decoded::Other(inbound) => {
            return Ok(Handled::Core(core.handle_message_at(from, judged, inbound)))
        }
    };
    if !core.wants_request(from, request.target, request.want_reply) {
        return Ok(Handled::Skipped);
    }
    let (commands, deliver) = match core.handle_request_in_place(from, &request) {
        Some(handled) => handled,
        None => (
            core.handle_message_at(from, judged, Inbound::Request(request.to_request())),
            false,
        ),
    };
    Ok(Handled::Request {
        request,
        commands,
        deliver,
    })
}

#[cfg(test)]
mod tests;
