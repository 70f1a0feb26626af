//! The one wire envelope every actix-cpg message travels in.
//!
//! ```text
//!  0      4        5       6       8                         len
//!  +------+--------+-------+-------+--------------------------+
//!  | ACPG | version| kind  | 0 0   | bincode body (fixint LE)  |
//!  +------+--------+-------+-------+--------------------------+
//! ```
//!
//! The body is serde + bincode 1.3 with
//! `DefaultOptions::new().with_fixint_encoding().with_limit(max)`: fixed-width
//! little-endian integers (the classic bincode format, which `wincode` also
//! reads), trailing bytes rejected, and no length prefix may claim more than
//! `max` bytes, so a forged prefix cannot make the decoder allocate past the
//! limit. Values nest at most [`MAX_NESTING`] levels, counted while decoding
//! (bincode bounds bytes, not depth, and serde decodes by recursion). This
//! module is the only place that names bincode: swapping the codec touches
//! nothing else.
//!
//! A [`Kind::Batch`] envelope packs several whole envelopes into one
//! multicast, so small messages sent close together cost one trip round the
//! ring. Its body is the inner envelopes, each behind a little-endian `u32`
//! length:
//!
//! ```text
//!  +-- header (kind 6) --+-- len u32 --+-- envelope --+-- len u32 --+-- envelope --+ ...
//! ```
//!
//! A batch is one CPG message, so every member delivers all of it or none
//! of it, between the same two confchgs. Its framing is checked whole before
//! any inner envelope is handed on: a batch whose lengths do not add up is
//! dropped as one malformed message, on every member alike.
//!
//! A [`Kind::Chunk`] envelope carries one piece of a message too large for
//! one multicast. Its body is a fixed 24-byte head, then the piece:
//!
//! ```text
//!  +-- header (kind 7) --+-- id u64 --+-- index u32 --+-- count u32 --+-- total u64 --+-- bytes --+
//! ```
//!
//! `id` names the message among its sender's, `index` counts from 0 up to
//! `count - 1`, and `total` is the length of the whole message, itself one
//! envelope (never a chunk). How pieces are put back together, and what a
//! membership change does to a message in pieces, is `group::chunks`'s.
//!
//! A [`Kind::Compressed`] envelope (from [`COMPRESSION_VERSION`] on) carries
//! one whole multicast — a lone envelope, a batch or a chunk — compressed
//! as one LZ4 block, behind the length of what it opens into:
//!
//! ```text
//!  +-- header (kind 10) --+-- len u32 --+-- LZ4 block --+
//! ```
//!
//! It is a whole multicast only: never in a batch, never in pieces, never
//! inside another. Opening one is bounded like any decoding: `len` is
//! checked against the size limit before anything is allocated, the block
//! must open into exactly `len` bytes, and what it opens into is read as
//! the delivery it stands for (see `group::inbound`). Who may send one, and
//! when, is `group::send_queue`'s (rule 6).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

mod depth;
mod payload;

pub use depth::MAX_NESTING;
pub(crate) use payload::Delivery;
pub use payload::Payload;

/// First four bytes of every actix-cpg message.
pub const MAGIC: [u8; 4] = *b"ACPG";
/// The highest version of the envelope and body formats this build speaks
/// by default. 2: members announce themselves (`Kind::Announce`), and
/// snapshots, replica infos, election infos and merge offers carry who is a
/// member. 3: replicas compare digests of their state (two new replica
/// messages, `Check` and `Digest`; every other layout is version 2's, so a
/// build of version 3 takes part in a group of version 2 and only checks
/// nothing there). 4: an unkeyed replica group takes a returning
/// replica's claim of a newer primary component when no member can check
/// it, as after a restart of the whole group from disk
/// (`crate::replicated::RECOVERY_VERSION`), a replica's info names the
/// replica whose data directory its sender took over (after the shared
/// fields), and a replica state transfer
/// may carry only the commands its receivers lack, its last byte saying
/// which (`crate::replicated::SUFFIX_VERSION`); no other layout changes.
/// 5: a registry group's multicast may travel compressed
/// ([`Kind::Compressed`], [`COMPRESSION_VERSION`]); no other layout
/// changes. 6: a replica answers a linearizable read at a barrier of its
/// own in the stream (`crate::replicated::READ_VERSION`, one replica
/// message more); no other layout changes.
///
/// A group speaks the highest version every member speaks, decided from the
/// members' announcements in the ordered stream (see `crate::roster`): a
/// process that cannot speak it is refused, and the group moves up when
/// the last member that held it back leaves. The header, the announcement,
/// and the framing of batches and chunks keep one layout in every version,
/// so any build reads them whatever version an envelope names.
pub const PROTOCOL_VERSION: u8 = 6;
/// The lowest version this build reads and speaks. Version 1 had no
/// announcements and cannot take part in a group of this build: its
/// messages are dropped as [`WireError::UnsupportedVersion`].
pub const MIN_PROTOCOL_VERSION: u8 = 2;
/// A version no release speaks, for tests of version negotiation only: a
/// build configured to speak it (`GroupConfig::protocol_versions`) encodes
/// replies in a changed shape at this version. Never used by default.
#[doc(hidden)]
pub const NEXT_PROTOCOL_VERSION: u8 = 7;
/// The first version in which a multicast may travel compressed
/// ([`Kind::Compressed`]): a member compresses only once the group speaks
/// it, so a process of an older build is never sent a compressed frame it
/// could otherwise have read.
pub const COMPRESSION_VERSION: u8 = 5;

/// A range of protocol versions, both ends included. Serializable for
/// inspection ([`crate::group::GroupInspection`]); announcements carry
/// the two ends as fields of their own, so no wire body holds this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Versions {
    /// The lowest version in the range.
    pub min: u8,
    /// The highest version in the range.
    pub max: u8,
}

impl Versions {
    /// What this build speaks by default: [`MIN_PROTOCOL_VERSION`] to
    /// [`PROTOCOL_VERSION`].
    pub const fn this_build() -> Self {
        Versions {
            min: MIN_PROTOCOL_VERSION,
            max: PROTOCOL_VERSION,
        }
    }

    /// Whether `v` is in the range.
    pub const fn contains(&self, v: u8) -> bool {
        self.min <= v && v <= self.max
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "v{}", self.min)
        } else {
            write!(f, "v{}..=v{}", self.min, self.max)
        }
    }
}

/// Bytes before the body.
pub const HEADER_LEN: usize = 8;
/// Bytes a batch spends on each inner envelope besides the envelope itself.
pub const BATCH_ENTRY_OVERHEAD: usize = 4;
/// Bytes a chunk envelope spends besides its piece: header and chunk head.
pub const CHUNK_OVERHEAD: usize = HEADER_LEN + 24;
/// Bytes a compressed envelope spends besides its LZ4 block: header and
/// the length of what it opens into.
pub const COMPRESSED_OVERHEAD: usize = HEADER_LEN + 4;
/// How much of a large frame [`Codec::compress_into`] tries first.
pub const COMPRESSION_PROBE: usize = 4096;

/// What the body of an envelope holds. The byte values are part of the
/// format; never reuse a retired one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A registry operation (register / unregister a name).
    Registry = 1,
    /// A message addressed to a named actor.
    Request = 2,
    /// The reply to a request.
    Reply = 3,
    /// Group state handed to a member that asked for it.
    Snapshot = 4,
    /// A member without the group state asks for it.
    SyncRequest = 5,
    /// Several whole envelopes (never batches) in one multicast; see the
    /// module docs.
    Batch = 6,
    /// One piece of a message too large for one multicast; see the module
    /// docs.
    Chunk = 7,
    /// A process of a registry group says who it is; from then on it is a
    /// member for decisions (see `crate::group` core, DESIGN.md §6).
    Announce = 8,
    /// A registry group tells a process it refused that the group speaks
    /// a protocol version the process does not.
    Refusal = 9,
    /// One whole multicast, compressed (from [`COMPRESSION_VERSION`]); see
    /// the module docs.
    Compressed = 10,
    /// A replicated state machine's message (see `crate::replicated`).
    Replicated = 16,
    /// A leader election's message (see `crate::election`).
    Election = 17,
    /// A fact for the supervision engine.
    Supervision = 32,
}

impl Kind {
    /// Whether every version lays this kind out alike, so any build reads
    /// it whatever version its envelope names: what a process says before
    /// it knows the group's version (its announcement, its state request),
    /// the refusal it may get back, and the framing of batches and chunks
    /// (each inner message is judged on its own). A newer version may
    /// extend such a body at its end only.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            Kind::Announce | Kind::SyncRequest | Kind::Refusal | Kind::Batch | Kind::Chunk
        )
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Registry,
            2 => Kind::Request,
            3 => Kind::Reply,
            4 => Kind::Snapshot,
            5 => Kind::SyncRequest,
            6 => Kind::Batch,
            7 => Kind::Chunk,
            8 => Kind::Announce,
            9 => Kind::Refusal,
            10 => Kind::Compressed,
            16 => Kind::Replicated,
            17 => Kind::Election,
            32 => Kind::Supervision,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded. The input is left untouched; nothing is
/// retried: the message is counted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a header.
    #[error("message of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The magic is not `ACPG`: not an actix-cpg message at all.
    #[error("foreign message (bad magic)")]
    BadMagic,
    /// An actix-cpg message of a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A kind byte this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body does not decode, or claims more than the size limit.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// Encoding would exceed the size limit; nothing was produced.
    #[error("encoded message exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
}

/// A decoded header and the still-encoded body it announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the body holds.
    pub kind: Kind,
    /// The protocol version the envelope names.
    pub version: u8,
    /// The body bytes.
    pub body: &'a [u8],
}

/// The head of a [`Kind::Chunk`] envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHead {
    /// The message this piece belongs to, among its sender's.
    pub id: u64,
    /// Position of the piece, from 0.
    pub index: u32,
    /// Pieces in the message.
    pub count: u32,
    /// Length of the whole message in bytes.
    pub total: u64,
}

/// Encoder/decoder with a size limit and protocol versions. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    limit: u64,
    /// The version envelopes are written at.
    version: u8,
    /// The versions envelopes are read at.
    reads: Versions,
}

impl Codec {
    /// A codec that refuses messages (header included) above `limit` bytes,
    /// reads the versions this build speaks and writes
    /// [`PROTOCOL_VERSION`].
    pub fn new(limit: usize) -> Self {
        Codec {
            limit: limit as u64,
            version: PROTOCOL_VERSION,
            reads: Versions::this_build(),
        }
    }

    /// The same codec reading `reads` (and writing its highest version):
    /// a build that speaks other versions than the default.
    pub fn reading(self, reads: Versions) -> Self {
        Codec {
            reads,
            version: reads.max,
            ..self
        }
    }

    /// The same codec writing envelopes at version `version` (which the
    /// group speaks).
    pub fn at_version(self, version: u8) -> Self {
        Codec { version, ..self }
    }

    /// The version envelopes are written at.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The versions envelopes are read at.
    pub fn reads(&self) -> Versions {
        self.reads
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    fn body_options(&self) -> impl Options + Copy {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(self.limit.saturating_sub(HEADER_LEN as u64))
    }

    /// The same format without a limit, for writing a value whose size was
    /// already checked: bincode's `serialize_into` under a limit walks the
    /// value once more just to measure it.
    fn checked_write_options() -> impl Options + Copy {
        bincode::DefaultOptions::new().with_fixint_encoding()
    }

    /// Header plus the bincode body of `body`.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        kind: Kind,
        body: &T,
    ) -> Result<Vec<u8>, WireError> {
        let opts = self.body_options();
        let size = opts.serialized_size(body).map_err(|e| match *e {
            bincode::ErrorKind::SizeLimit => WireError::TooLarge { limit: self.limit },
            other => WireError::Malformed(other.to_string()),
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + size as usize);
        push_header(&mut out, self.version, kind);
        Self::checked_write_options()
            .serialize_into(&mut out, body)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Header plus the body `(head, payload as bytes)`, where `payload` is
    /// serialized straight into the envelope instead of into a buffer of its
    /// own first: the same bytes as [`Codec::encode`] of a struct whose
    /// fields are those of `head` followed by a `payload: Vec<u8>` field
    /// holding [`Codec::encode_payload`] of `payload` (bincode lays a struct
    /// out as its fields one after the other, and a byte vector as a `u64`
    /// length then the bytes). Saves the copy of a payload on the send path.
    pub fn encode_with_payload<H: Serialize + ?Sized, P: Serialize + ?Sized>(
        &self,
        kind: Kind,
        head: &H,
        payload: &P,
    ) -> Result<Vec<u8>, WireError> {
        let head_size = self
            .body_options()
            .serialized_size(head)
            .map_err(self.too_large())?;
        self.encode_with_written_head(
            kind,
            head_size as usize,
            |out| {
                // Cannot fail: the size was just taken, and a Vec grows.
                let _ = Self::checked_write_options().serialize_into(out, head);
            },
            payload,
        )
    }

    /// [`Codec::encode_with_payload`] for a head the caller writes itself
    /// (`head_len` bytes, in this codec's format): a hot head of fixed
    /// layout then costs neither of serde's two walks (measure, write).
    pub(crate) fn encode_with_written_head<P: Serialize + ?Sized>(
        &self,
        kind: Kind,
        head_len: usize,
        write_head: impl FnOnce(&mut Vec<u8>),
        payload: &P,
    ) -> Result<Vec<u8>, WireError> {
        self.encode_with_written_head_in(kind, head_len, write_head, payload, Vec::with_capacity)
    }

    /// [`Codec::encode_with_written_head`] into a buffer `buffer(len)`
    /// hands out (empty, with room for at least `len` bytes), so a caller
    /// can reuse envelope buffers; the bytes are the same.
    pub(crate) fn encode_with_written_head_in<P: Serialize + ?Sized>(
        &self,
        kind: Kind,
        head_len: usize,
        write_head: impl FnOnce(&mut Vec<u8>),
        payload: &P,
        buffer: impl FnOnce(usize) -> Vec<u8>,
    ) -> Result<Vec<u8>, WireError> {
        let payload_size = self
            .body_options()
            .serialized_size(payload)
            .map_err(self.too_large())?;
        let total = (HEADER_LEN + head_len) as u64 + 8 + payload_size;
        if total > self.limit {
            return Err(WireError::TooLarge { limit: self.limit });
        }
        let mut out = buffer(total as usize);
        debug_assert!(out.is_empty(), "an envelope starts in an empty buffer");
        push_header(&mut out, self.version, kind);
        write_head(&mut out);
        debug_assert_eq!(out.len(), HEADER_LEN + head_len, "head length as announced");
        out.extend_from_slice(&payload_size.to_le_bytes());
        Self::checked_write_options()
            .serialize_into(&mut out, payload)
            .map_err(self.too_large())?;
        Ok(out)
    }

    /// The chunk envelope of `piece`, one part of a message of `head.total`
    /// bytes. The caller keeps it within one multicast.
    pub fn encode_chunk(&self, head: ChunkHead, piece: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_OVERHEAD + piece.len());
        push_header(&mut out, self.version, Kind::Chunk);
        out.extend_from_slice(&head.id.to_le_bytes());
        out.extend_from_slice(&head.index.to_le_bytes());
        out.extend_from_slice(&head.count.to_le_bytes());
        out.extend_from_slice(&head.total.to_le_bytes());
        out.extend_from_slice(piece);
        out
    }

    /// The head and piece of a chunk body. Refuses a head that cannot
    /// describe a message this codec accepts: no pieces, an index past the
    /// count, a total above the limit, a piece longer than the total.
    pub fn decode_chunk<'a>(&self, body: &'a [u8]) -> Result<(ChunkHead, &'a [u8]), WireError> {
        let malformed = |why: &str| WireError::Malformed(format!("chunk: {why}"));
        let (id, rest) = body
            .split_first_chunk::<8>()
            .ok_or_else(|| malformed("head cut short"))?;
        let (index, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("head cut short"))?;
        let (count, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("head cut short"))?;
        let (total, piece) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| malformed("head cut short"))?;
        let head = ChunkHead {
            id: u64::from_le_bytes(*id),
            index: u32::from_le_bytes(*index),
            count: u32::from_le_bytes(*count),
            total: u64::from_le_bytes(*total),
        };
        if head.count == 0 || head.index >= head.count {
            return Err(malformed("index past the count"));
        }
        if head.total > self.limit {
            return Err(WireError::Malformed(format!(
                "chunked message of {} bytes exceeds the limit of {}",
                head.total, self.limit
            )));
        }
        if piece.len() as u64 > head.total {
            return Err(malformed("piece longer than the message"));
        }
        Ok((head, piece))
    }

    /// Writes into `out` the [`Kind::Compressed`] envelope of `frame` (one
    /// whole multicast) and returns `true`, if that envelope is smaller
    /// than `frame`; otherwise returns `false` and `out` holds nothing of
    /// use. `out` is the caller's, reused from one multicast to the next.
    ///
    /// A frame of more than twice [`COMPRESSION_PROBE`] bytes is tried on
    /// its first [`COMPRESSION_PROBE`] bytes first, and goes as it is if
    /// they do not shrink by an eighth: random or already compressed data
    /// then costs a pass over 4 KiB instead of over the whole frame (a
    /// frame whose head does not compress and whose tail does goes as it
    /// is).
    pub fn compress_into(&self, frame: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(len) = u32::try_from(frame.len()) else {
            return false;
        };
        if frame.len() > 2 * COMPRESSION_PROBE {
            let probe = &frame[..COMPRESSION_PROBE];
            out.clear();
            out.resize(lz4_flex::block::get_maximum_output_size(probe.len()), 0);
            match lz4_flex::block::compress_into(probe, out) {
                Ok(written) if written < probe.len() - probe.len() / 8 => {}
                _ => return false,
            }
        }
        out.clear();
        push_header(out, self.version, Kind::Compressed);
        out.extend_from_slice(&len.to_le_bytes());
        // The block is written into a buffer sized for the worst case (LZ4
        // refuses a smaller one), then cut to what it took.
        out.resize(
            COMPRESSED_OVERHEAD + lz4_flex::block::get_maximum_output_size(frame.len()),
            0,
        );
        match lz4_flex::block::compress_into(frame, &mut out[COMPRESSED_OVERHEAD..]) {
            Ok(written) if COMPRESSED_OVERHEAD + written < frame.len() => {
                out.truncate(COMPRESSED_OVERHEAD + written);
                true
            }
            _ => false,
        }
    }

    /// What the body of a [`Kind::Compressed`] envelope opens into: the
    /// multicast it stands for, not yet decoded. The length it claims is
    /// checked against the size limit before anything is allocated, and the
    /// block must open into exactly that many bytes; anything else is
    /// [`WireError::Malformed`], with nothing allocated past the limit.
    pub fn decompress(&self, body: &[u8]) -> Result<Vec<u8>, WireError> {
        let malformed = |why: String| WireError::Malformed(format!("compressed frame: {why}"));
        let (len, block) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("length cut short".into()))?;
        let len = u32::from_le_bytes(*len) as u64;
        if len > self.limit {
            return Err(malformed(format!(
                "opens into {len} bytes, above the limit of {}",
                self.limit
            )));
        }
        if len < HEADER_LEN as u64 {
            return Err(malformed(format!(
                "opens into {len} bytes, less than a header"
            )));
        }
        let mut out = vec![0; len as usize];
        match lz4_flex::block::decompress_into(block, &mut out) {
            Ok(n) if n as u64 == len => Ok(out),
            Ok(n) => Err(malformed(format!(
                "opens into {n} bytes, not the {len} it claims"
            ))),
            Err(e) => Err(malformed(format!("{e}"))),
        }
    }

    fn too_large(&self) -> impl Fn(bincode::Error) -> WireError {
        let limit = self.limit;
        move |e| match *e {
            bincode::ErrorKind::SizeLimit => WireError::TooLarge { limit },
            other => WireError::Malformed(other.to_string()),
        }
    }

    /// An empty batch envelope with room for `capacity` bytes in all; add
    /// envelopes with [`push_to_batch`].
    pub fn begin_batch(&self, capacity: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.begin_batch_in(&mut out, capacity);
        out
    }

    /// [`Codec::begin_batch`] in `out`, a buffer reused from batch to
    /// batch (cleared first, grown to `capacity` if it is smaller).
    pub fn begin_batch_in(&self, out: &mut Vec<u8>, capacity: usize) {
        out.clear();
        out.reserve(capacity.max(HEADER_LEN));
        push_header(out, self.version, Kind::Batch);
    }

    /// The inner envelopes of a batch body, in order. Checks the framing of
    /// the whole batch first: any inconsistency rejects all of it. Inner
    /// envelopes are not decoded here (each goes through
    /// [`Codec::decode_frame`] like a message of its own), but a batch
    /// nested in a batch is refused.
    pub fn split_batch<'a>(&self, body: &'a [u8]) -> Result<Vec<&'a [u8]>, WireError> {
        let mut parts = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<BATCH_ENTRY_OVERHEAD>() else {
                return Err(WireError::Malformed(format!(
                    "batch entry length cut short ({} bytes left)",
                    rest.len()
                )));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Err(WireError::Malformed(format!(
                    "batch entry of {len} bytes, only {} left",
                    tail.len()
                )));
            }
            let (part, tail) = tail.split_at(len);
            if part.get(5) == Some(&(Kind::Batch as u8)) {
                return Err(WireError::Malformed("batch nested in a batch".into()));
            }
            if part.get(5) == Some(&(Kind::Chunk as u8)) {
                return Err(WireError::Malformed("chunk inside a batch".into()));
            }
            if part.get(5) == Some(&(Kind::Compressed as u8)) {
                return Err(WireError::Malformed(
                    "compressed frame inside a batch".into(),
                ));
            }
            parts.push(part);
            rest = tail;
        }
        if parts.is_empty() {
            return Err(WireError::Malformed("empty batch".into()));
        }
        Ok(parts)
    }

    /// Checks the header and splits off the body; never panics. A version
    /// this codec does not read is refused, except for the kinds whose
    /// layout every version shares ([`Kind::is_shared`]), which are read at
    /// any version from [`MIN_PROTOCOL_VERSION`] up.
    pub fn decode_frame<'a>(&self, bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let frame = self.decode_frame_any_version(bytes)?;
        if !frame.kind.is_shared() && !self.reads.contains(frame.version) {
            return Err(WireError::UnsupportedVersion(frame.version));
        }
        Ok(frame)
    }

    /// [`Codec::decode_frame`] for any version from
    /// [`MIN_PROTOCOL_VERSION`] up: for a protocol whose announcement is one
    /// of its kind's messages, which it must read at every version.
    pub fn decode_frame_any_version<'a>(&self, bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated(bytes.len()));
        }
        if bytes[..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = bytes[4];
        if version < MIN_PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let kind = Kind::from_byte(bytes[5]).ok_or(WireError::UnknownKind(bytes[5]))?;
        if bytes.len() as u64 > self.limit {
            return Err(WireError::Malformed(format!(
                "{} bytes exceed the limit of {}",
                bytes.len(),
                self.limit
            )));
        }
        Ok(Frame {
            kind,
            version,
            body: &bytes[HEADER_LEN..],
        })
    }

    /// Decodes the leading value of a body and ignores what follows it: an
    /// announcement in an envelope of a version this codec does not read,
    /// which that version may have extended at its end. Never panics, never
    /// allocates past the limit.
    pub fn decode_body_prefix<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, WireError> {
        self.body_options()
            .allow_trailing_bytes()
            .deserialize_seed(depth::Seed::<T>::new(MAX_NESTING), body)
            .map_err(|e| WireError::Malformed(e.to_string()))
    }

    /// Decodes a body; never panics, never allocates past the limit.
    /// Values may nest at most [`MAX_NESTING`] levels, counted while
    /// decoding, so a deeply nested forgery is an error, not a stack
    /// overflow.
    pub fn decode_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, WireError> {
        self.decode_body_borrowed(body)
    }

    /// Decodes a body that borrows from `body` (strings and byte slices
    /// point into it); never panics, never allocates past the limit.
    pub fn decode_body_borrowed<'a, T: serde::Deserialize<'a>>(
        &self,
        body: &'a [u8],
    ) -> Result<T, WireError> {
        self.body_options()
            .deserialize_seed(depth::Seed::<T>::new(MAX_NESTING), body)
            .map_err(|e| WireError::Malformed(e.to_string()))
    }

    /// Encodes a value without a header: the payload of a user message
    /// carried inside a request or reply.
    pub fn encode_payload<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, WireError> {
        self.body_options().serialize(value).map_err(|e| match *e {
            bincode::ErrorKind::SizeLimit => WireError::TooLarge { limit: self.limit },
            other => WireError::Malformed(other.to_string()),
        })
    }

    /// Decodes a payload written by [`Codec::encode_payload`].
    pub fn decode_payload<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, WireError> {
        self.decode_body(bytes)
    }
}

fn push_header(out: &mut Vec<u8>, version: u8, kind: Kind) {
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0]);
}

/// Appends one whole envelope to a batch from [`Codec::begin_batch`]. The
/// caller keeps the batch within its size cap: each entry costs
/// [`BATCH_ENTRY_OVERHEAD`] bytes more than the envelope.
pub fn push_to_batch(batch: &mut Vec<u8>, envelope: &[u8]) {
    // Envelopes are capped by the transport's atomic size (about 1 MiB), far
    // below u32::MAX; the cast cannot truncate for anything a codec made.
    batch.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
    batch.extend_from_slice(envelope);
}

/// Whether an envelope may travel inside a [`Kind::Compressed`] one: it is
/// written at [`COMPRESSION_VERSION`] or later and its kind is not one that
/// every version reads ([`Kind::is_shared`]). A process of an older build
/// drops such an envelope anyway, compressed or not, so compressing it
/// never takes from that process anything it could have read (an
/// announcement, a refusal notice).
pub fn compressible(envelope: &[u8]) -> bool {
    envelope.len() >= HEADER_LEN
        && envelope[..4] == MAGIC
        && envelope[4] >= COMPRESSION_VERSION
        && Kind::from_byte(envelope[5]).is_some_and(|k| !k.is_shared() && k != Kind::Compressed)
}

/// `#[serde(with = "actix_cpg::wire::bytes")]` for a `Vec<u8>` field: the
/// same bytes on the wire as the default (a `u64` length then the bytes,
/// with the fixint options), but written and read as one block instead of
/// one element at a time, which matters for payloads of kilobytes. Use it
/// in remote messages that carry blobs.
pub mod bytes {
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as one block.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads the bytes as one block (or, from a self-describing format
    /// that wrote a sequence, element by element).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        data: Vec<u8>,
        flag: Option<bool>,
    }

    fn codec() -> Codec {
        Codec::new(1 << 20)
    }

    #[test]
    fn golden_bytes_pin_the_format() {
        let s = Sample {
            id: 7,
            name: "ab".into(),
            data: vec![1, 2],
            flag: Some(true),
        };
        let bytes = codec().encode(Kind::Request, &s).unwrap();
        let expected: Vec<u8> = [
            &b"ACPG"[..],
            &[6, 2, 0, 0],
            &[7, 0, 0, 0, 0, 0, 0, 0],
            &[2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b'],
            &[2, 0, 0, 0, 0, 0, 0, 0, 1, 2],
            &[1, 1],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip() {
        let c = codec();
        let s = Sample {
            id: u64::MAX,
            name: "naïve".into(),
            data: vec![0; 300],
            flag: None,
        };
        let bytes = c.encode(Kind::Reply, &s).unwrap();
        let frame = c.decode_frame(&bytes).unwrap();
        assert_eq!(frame.kind, Kind::Reply);
        assert_eq!(c.decode_body::<Sample>(frame.body).unwrap(), s);
    }

    #[test]
    fn foreign_and_broken_headers_are_named() {
        let c = codec();
        assert_eq!(c.decode_frame(b"ACP"), Err(WireError::Truncated(3)));
        assert_eq!(c.decode_frame(b"XXXXXXXXXX"), Err(WireError::BadMagic));
        assert_eq!(
            c.decode_frame(b"ACPG\x09\x01\0\0"),
            Err(WireError::UnsupportedVersion(9))
        );
        assert_eq!(
            c.decode_frame(b"ACPG\x02\xee\0\0"),
            Err(WireError::UnknownKind(0xee))
        );
    }

    #[test]
    fn forged_length_prefix_cannot_allocate_past_the_limit() {
        let c = Codec::new(1024);
        // A Vec<u8> claiming u64::MAX / 2 elements, then 4 bytes.
        let mut body = (u64::MAX / 2).to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            c.decode_body::<Vec<u8>>(&body),
            Err(WireError::Malformed(_))
        ));
        // Within u32 but past the limit.
        let mut body = 4096u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 64]);
        assert!(matches!(
            c.decode_body::<String>(&body),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn encoding_past_the_limit_is_refused() {
        let c = Codec::new(64);
        assert_eq!(
            c.encode(Kind::Request, &vec![0u8; 100]),
            Err(WireError::TooLarge { limit: 64 })
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let c = codec();
        let mut bytes = c.encode(Kind::Request, &5u32).unwrap();
        bytes.push(0);
        let frame = c.decode_frame(&bytes).unwrap();
        assert!(c.decode_body::<u32>(frame.body).is_err());
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Head {
        id: u64,
        name: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct WithPayload {
        id: u64,
        name: String,
        #[serde(with = "crate::wire::bytes")]
        payload: Vec<u8>,
    }

    #[test]
    fn a_payload_serialized_in_place_gives_the_bytes_of_the_whole_struct() {
        let c = codec();
        let inner = Sample {
            id: 3,
            name: "x".into(),
            data: vec![9; 40],
            flag: None,
        };
        let in_place = c
            .encode_with_payload(
                Kind::Request,
                &Head {
                    id: 11,
                    name: "sink".into(),
                },
                &inner,
            )
            .unwrap();
        let whole = WithPayload {
            id: 11,
            name: "sink".into(),
            payload: c.encode_payload(&inner).unwrap(),
        };
        assert_eq!(in_place, c.encode(Kind::Request, &whole).unwrap());
        let frame = c.decode_frame(&in_place).unwrap();
        let back: WithPayload = c.decode_body(frame.body).unwrap();
        assert_eq!(back, whole);
        assert_eq!(c.decode_payload::<Sample>(&back.payload).unwrap(), inner);
    }

    #[test]
    fn the_bytes_helper_keeps_the_default_wire_format() {
        #[derive(Serialize)]
        struct Plain {
            id: u64,
            name: String,
            payload: Vec<u8>,
        }
        let c = codec();
        let plain = Plain {
            id: 1,
            name: "n".into(),
            payload: vec![1, 2, 3],
        };
        let fast = WithPayload {
            id: 1,
            name: "n".into(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(
            c.encode(Kind::Request, &plain).unwrap(),
            c.encode(Kind::Request, &fast).unwrap()
        );
        // A forged length behind the helper is refused too.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        body.extend_from_slice(&[0; 16]);
        assert!(Codec::new(1024).decode_body::<WithPayload>(&body).is_err());
    }

    #[test]
    fn payload_in_place_respects_the_limit() {
        let c = Codec::new(64);
        assert_eq!(
            c.encode_with_payload(Kind::Request, &1u64, &vec![0u8; 100]),
            Err(WireError::TooLarge { limit: 64 })
        );
    }

    #[test]
    fn a_batch_begun_in_a_used_buffer_has_the_bytes_of_a_new_one() {
        let c = codec();
        let a = c.encode(Kind::Request, &1u32).unwrap();
        let mut fresh = c.begin_batch(64);
        push_to_batch(&mut fresh, &a);
        let mut reused = vec![9u8; 300];
        c.begin_batch_in(&mut reused, 64);
        push_to_batch(&mut reused, &a);
        assert_eq!(fresh, reused);
    }

    #[test]
    fn an_envelope_written_into_a_reused_buffer_has_the_bytes_of_a_new_one() {
        let c = codec();
        let payload = vec![5u8; 2000];
        let fresh = c
            .encode_with_payload(Kind::Request, &(1u64, "t"), &payload)
            .unwrap();
        let head_len = c.body_options().serialized_size(&(1u64, "t")).unwrap() as usize;
        let mut asked = 0;
        let reused = c
            .encode_with_written_head_in(
                Kind::Request,
                head_len,
                |out| {
                    let _ = Codec::checked_write_options().serialize_into(out, &(1u64, "t"));
                },
                &payload,
                |len| {
                    asked = len;
                    Vec::with_capacity(len * 2)
                },
            )
            .unwrap();
        assert_eq!(asked, fresh.len());
        assert_eq!(fresh, reused);
    }

    #[test]
    fn a_batch_splits_into_its_envelopes_in_order() {
        let c = codec();
        let a = c.encode(Kind::Request, &1u32).unwrap();
        let b = c.encode(Kind::Reply, &"two").unwrap();
        let mut batch = c.begin_batch(64);
        push_to_batch(&mut batch, &a);
        push_to_batch(&mut batch, &b);
        assert_eq!(
            batch.len(),
            HEADER_LEN + 2 * BATCH_ENTRY_OVERHEAD + a.len() + b.len()
        );
        let frame = c.decode_frame(&batch).unwrap();
        assert_eq!(frame.kind, Kind::Batch);
        assert_eq!(c.split_batch(frame.body).unwrap(), vec![&a[..], &b[..]]);
    }

    #[test]
    fn a_chunk_round_trips_and_pins_its_layout() {
        let head = ChunkHead {
            id: 9,
            index: 1,
            count: 3,
            total: 10,
        };
        let bytes = codec().encode_chunk(head, b"abcd");
        let expected: Vec<u8> = [
            &b"ACPG"[..],
            &[6, 7, 0, 0],
            &[9, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0],
            &[3, 0, 0, 0],
            &[10, 0, 0, 0, 0, 0, 0, 0],
            &b"abcd"[..],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), CHUNK_OVERHEAD + 4);
        let frame = codec().decode_frame(&bytes).unwrap();
        assert_eq!(frame.kind, Kind::Chunk);
        assert_eq!(
            codec().decode_chunk(frame.body).unwrap(),
            (head, &b"abcd"[..])
        );
    }

    #[test]
    fn impossible_chunk_heads_are_refused() {
        let c = Codec::new(100);
        let head = |index, count, total| ChunkHead {
            id: 1,
            index,
            count,
            total,
        };
        let body = |h: ChunkHead, piece: &[u8]| c.encode_chunk(h, piece)[HEADER_LEN..].to_vec();
        for (h, piece) in [
            (head(0, 0, 4), &b"ab"[..]),
            (head(2, 2, 4), &b"ab"[..]),
            (head(0, 2, 101), &b"ab"[..]),
            (head(0, 2, 1), &b"ab"[..]),
        ] {
            assert!(
                matches!(
                    c.decode_chunk(&body(h, piece)),
                    Err(WireError::Malformed(_))
                ),
                "{h:?}"
            );
        }
        assert!(c.decode_chunk(&[0; 23]).is_err());
        assert!(c.decode_chunk(&body(head(1, 2, 4), b"ab")).is_ok());
    }

    #[test]
    fn a_chunk_inside_a_batch_is_refused() {
        let c = codec();
        let chunk = c.encode_chunk(
            ChunkHead {
                id: 1,
                index: 0,
                count: 2,
                total: 4,
            },
            b"ab",
        );
        let mut batch = c.begin_batch(64);
        push_to_batch(&mut batch, &chunk);
        let frame = c.decode_frame(&batch).unwrap();
        assert!(c.split_batch(frame.body).is_err());
    }

    #[test]
    fn a_batch_with_broken_framing_is_refused_whole() {
        let c = codec();
        let a = c.encode(Kind::Request, &1u32).unwrap();
        let mut body = Vec::new();
        push_to_batch(&mut body, &a);
        // Second entry claims more than is left.
        body.extend_from_slice(&100u32.to_le_bytes());
        body.extend_from_slice(&a);
        assert!(matches!(c.split_batch(&body), Err(WireError::Malformed(_))));
        // A length cut short.
        let mut short = Vec::new();
        push_to_batch(&mut short, &a);
        short.extend_from_slice(&[1, 0]);
        assert!(matches!(
            c.split_batch(&short),
            Err(WireError::Malformed(_))
        ));
        // Empty, and nested.
        assert!(c.split_batch(&[]).is_err());
        let mut nested = Vec::new();
        push_to_batch(&mut nested, &c.begin_batch(8));
        assert!(c.split_batch(&nested).is_err());
    }

    /// A JSON-like message: repetitive, as real payloads are.
    fn json_like(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!(r#"{{"id":{i},"name":"item-{i}","tags":["a","b"],"ok":true}},"#).as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn a_compressed_frame_opens_into_the_multicast_it_stands_for_and_pins_its_layout() {
        let c = codec();
        let envelope = c.encode(Kind::Request, &json_like(4096)).unwrap();
        let mut packed = Vec::new();
        assert!(c.compress_into(&envelope, &mut packed));
        assert!(packed.len() < envelope.len() / 2, "{}", packed.len());
        assert_eq!(&packed[..8], b"ACPG\x06\x0a\0\0");
        assert_eq!(packed[8..12], (envelope.len() as u32).to_le_bytes());
        let frame = c.decode_frame(&packed).unwrap();
        assert_eq!(frame.kind, Kind::Compressed);
        assert_eq!(c.decompress(frame.body).unwrap(), envelope);
    }

    #[test]
    fn a_frame_that_compression_would_not_shrink_goes_as_it_is() {
        let c = codec();
        let envelope = c.encode(Kind::Request, &random_bytes(4096, 7)).unwrap();
        assert!(!c.compress_into(&envelope, &mut Vec::new()));
        assert!(!c.compress_into(b"ACPG\x05\x02\0\0", &mut Vec::new()));
    }

    #[test]
    fn a_large_frame_whose_head_does_not_compress_is_not_tried_whole() {
        let c = codec();
        let mut body = random_bytes(COMPRESSION_PROBE, 3);
        body.extend(json_like(64 << 10));
        let mixed = c.encode(Kind::Request, &body).unwrap();
        assert!(!c.compress_into(&mixed, &mut Vec::new()));
        // The same tail with a compressible head goes compressed.
        let mut body = json_like(COMPRESSION_PROBE);
        body.extend(random_bytes(COMPRESSION_PROBE, 3));
        body.extend(json_like(64 << 10));
        let headed = c.encode(Kind::Request, &body).unwrap();
        assert!(c.compress_into(&headed, &mut Vec::new()));
    }

    #[test]
    fn a_compressed_frame_claiming_more_than_the_limit_is_refused_before_allocating() {
        let c = Codec::new(1024);
        let big = Codec::new(1 << 20);
        let mut packed = Vec::new();
        assert!(big.compress_into(
            &big.encode(Kind::Request, &vec![0u8; 4000]).unwrap(),
            &mut packed
        ));
        // Small enough to be delivered under the limit, opens past it.
        assert!(packed.len() < 1024);
        let frame = c.decode_frame(&packed).unwrap();
        let refused = c.decompress(frame.body).unwrap_err();
        assert!(
            refused.to_string().contains("above the limit of 1024"),
            "{refused}"
        );
        // A claim of 4 GiB from a few bytes: refused on the claim alone.
        let mut body = u32::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[0x1f, 0]);
        assert!(matches!(c.decompress(&body), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_block_that_opens_into_other_than_its_claim_is_refused() {
        let c = codec();
        let envelope = c.encode(Kind::Request, &json_like(2048)).unwrap();
        let mut packed = Vec::new();
        assert!(c.compress_into(&envelope, &mut packed));
        let body = &packed[HEADER_LEN..];
        let with_claim = |claim: u32| {
            let mut b = claim.to_le_bytes().to_vec();
            b.extend_from_slice(&body[4..]);
            b
        };
        let claim = envelope.len() as u32;
        assert!(
            c.decompress(&with_claim(claim + 1)).is_err(),
            "opens shorter"
        );
        assert!(
            c.decompress(&with_claim(claim - 1)).is_err(),
            "opens longer"
        );
        assert!(c.decompress(&with_claim(4)).is_err(), "less than a header");
        assert!(
            c.decompress(&body[..body.len() - 3]).is_err(),
            "block cut short"
        );
        assert!(c.decompress(&body[..3]).is_err(), "length cut short");
        assert_eq!(c.decompress(body).unwrap(), envelope);
    }

    #[test]
    fn only_envelopes_an_older_build_cannot_read_anyway_may_travel_compressed() {
        let c = codec();
        assert!(compressible(&c.encode(Kind::Request, &1u8).unwrap()));
        assert!(compressible(&c.encode(Kind::Reply, &1u8).unwrap()));
        for shared in [
            Kind::Announce,
            Kind::Refusal,
            Kind::SyncRequest,
            Kind::Batch,
            Kind::Chunk,
        ] {
            assert!(
                !compressible(&c.encode(shared, &1u8).unwrap()),
                "{shared:?}"
            );
        }
        assert!(!compressible(&c.encode(Kind::Compressed, &1u8).unwrap()));
        let older = c.at_version(COMPRESSION_VERSION - 1);
        assert!(!compressible(&older.encode(Kind::Request, &1u8).unwrap()));
        assert!(!compressible(b"ACPG"));
    }

    #[test]
    fn a_compressed_frame_inside_a_batch_is_refused() {
        let c = codec();
        let mut packed = Vec::new();
        assert!(c.compress_into(
            &c.encode(Kind::Request, &vec![0u8; 512]).unwrap(),
            &mut packed
        ));
        let mut batch = c.begin_batch(64);
        push_to_batch(&mut batch, &packed);
        let frame = c.decode_frame(&batch).unwrap();
        assert!(c.split_batch(frame.body).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_batch_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let c = Codec::new(512);
            if let Ok(parts) = c.split_batch(&body) {
                let total: usize = parts.iter().map(|p| p.len() + BATCH_ENTRY_OVERHEAD).sum();
                prop_assert_eq!(total, body.len());
            }
        }

        #[test]
        fn arbitrary_chunk_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let c = Codec::new(512);
            if let Ok((head, piece)) = c.decode_chunk(&body) {
                prop_assert!(head.index < head.count);
                prop_assert!(piece.len() as u64 <= head.total && head.total <= 512);
            }
        }

        #[test]
        fn arbitrary_compressed_bodies_never_panic_nor_open_past_the_limit(body in proptest::collection::vec(any::<u8>(), 0..256), claim in 0u32..2048) {
            let c = Codec::new(1024);
            let mut claimed = claim.to_le_bytes().to_vec();
            claimed.extend_from_slice(&body);
            for input in [&body, &claimed] {
                if let Ok(opened) = c.decompress(input) {
                    prop_assert!(opened.len() <= 1024 && opened.len() >= HEADER_LEN);
                }
            }
        }

        #[test]
        fn compression_round_trips_any_frame(data in proptest::collection::vec(0u8..4, 0..2048)) {
            let c = codec();
            let envelope = c.encode(Kind::Request, &data).unwrap();
            let mut packed = Vec::new();
            if c.compress_into(&envelope, &mut packed) {
                prop_assert!(packed.len() < envelope.len());
                let frame = c.decode_frame(&packed).unwrap();
                prop_assert_eq!(c.decompress(frame.body).unwrap(), envelope);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let c = Codec::new(512);
            if let Ok(frame) = c.decode_frame(&bytes) {
                let _ = c.decode_body::<Sample>(frame.body);
                let _ = c.decode_body::<Vec<String>>(frame.body);
            }
            let _ = c.decode_body::<Sample>(&bytes);
        }

        #[test]
        fn valid_header_then_arbitrary_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let c = Codec::new(512);
            let mut bytes = b"ACPG\x02\x02\0\0".to_vec();
            bytes.extend_from_slice(&body);
            let frame = c.decode_frame(&bytes).unwrap();
            let _ = c.decode_body::<Sample>(frame.body);
        }

        #[test]
        fn round_trip_any_sample(id in any::<u64>(), name in ".{0,40}", data in proptest::collection::vec(any::<u8>(), 0..100), flag in any::<Option<bool>>()) {
            let c = codec();
            let s = Sample { id, name, data, flag };
            let bytes = c.encode(Kind::Registry, &s).unwrap();
            let frame = c.decode_frame(&bytes).unwrap();
            prop_assert_eq!(frame.kind, Kind::Registry);
            prop_assert_eq!(c.decode_body::<Sample>(frame.body).unwrap(), s);
        }
    }

    #[test]
    fn envelopes_name_the_version_they_are_written_at_and_only_shared_kinds_cross_versions() {
        let old = Codec::new(1 << 16);
        let next = NEXT_PROTOCOL_VERSION;
        let new = old.reading(Versions { min: 2, max: next });
        assert_eq!(new.version(), next, "a build writes its highest until told");
        let body = (7u64, 9u32);
        let at_next = new.encode(Kind::Registry, &body).unwrap();
        assert_eq!(at_next[4], next);
        assert_eq!(new.decode_frame(&at_next).unwrap().version, next);
        assert_eq!(
            old.decode_frame(&at_next),
            Err(WireError::UnsupportedVersion(next))
        );
        assert_eq!(
            old.decode_frame_any_version(&at_next).unwrap().version,
            next
        );
        // A shared kind is read whatever version it names, and a newer
        // version may have appended to it.
        for kind in [Kind::Announce, Kind::SyncRequest, Kind::Refusal] {
            assert!(kind.is_shared());
            let longer = new.encode(kind, &(body, 1u8)).unwrap();
            let frame = old.decode_frame(&longer).expect("read at any version");
            assert_eq!(old.decode_body_prefix::<(u64, u32)>(frame.body), Ok(body));
            assert!(old.decode_body::<(u64, u32)>(frame.body).is_err());
        }
        assert!(!Kind::Request.is_shared() && !Kind::Reply.is_shared());
        // Below the oldest version any build of this format speaks: refused,
        // shared or not.
        let mut v1 = old.encode(Kind::Announce, &body).unwrap();
        v1[4] = 1;
        assert_eq!(old.decode_frame(&v1), Err(WireError::UnsupportedVersion(1)));
        assert_eq!(new.at_version(2).encode(Kind::Reply, &body).unwrap()[4], 2);
    }
}
