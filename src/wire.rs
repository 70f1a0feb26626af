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
//! limit. This module is the only place that names bincode: swapping the
//! codec touches nothing else.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// First four bytes of every actix-cpg message.
pub const MAGIC: [u8; 4] = *b"ACPG";
/// Version of the envelope and body formats this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 8;

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
    /// A replicated state machine's message (see `crate::replicated`).
    Replicated = 16,
    /// A leader election's message (see `crate::election`).
    Election = 17,
    /// A fact for the supervision engine.
    Supervision = 32,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Registry,
            2 => Kind::Request,
            3 => Kind::Reply,
            4 => Kind::Snapshot,
            5 => Kind::SyncRequest,
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
pub enum WireError {
    /// Fewer bytes than a header.
    #[error("message of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The magic is not `ACPG`: not an actix-cpg message at all.
    #[error("foreign message (bad magic)")]
    BadMagic,
    /// An actix-cpg message of a protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
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
    /// The body bytes.
    pub body: &'a [u8],
}

/// Encoder/decoder with a size limit. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    limit: u64,
}

impl Codec {
    /// A codec that refuses messages (header included) above `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Codec {
            limit: limit as u64,
        }
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
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&[0, 0]);
        opts.serialize_into(&mut out, body)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Checks the header and splits off the body; never panics.
    pub fn decode_frame<'a>(&self, bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated(bytes.len()));
        }
        if bytes[..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(bytes[4]));
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
            body: &bytes[HEADER_LEN..],
        })
    }

    /// Decodes a body; never panics, never allocates past the limit.
    pub fn decode_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, WireError> {
        self.body_options()
            .deserialize(body)
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
            &[1, 2, 0, 0],
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
            c.decode_frame(b"ACPG\x01\xee\0\0"),
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

    proptest! {
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
            let mut bytes = b"ACPG\x01\x02\0\0".to_vec();
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
}
