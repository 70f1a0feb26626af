//! [`Payload`]: a block of bytes a remote message can carry that, on the
//! host, shares the delivered buffer instead of being copied out of it.
//!
//! Rules:
//!
//! 1. On the wire a `Payload` is exactly what `actix_cpg::wire::bytes`
//!    writes for a `Vec<u8>`: one length-prefixed block. Either side of a
//!    message may use either type.
//! 2. While the runtime decodes messages out of a delivered multicast, that
//!    multicast's buffer is the *current delivery* of the thread (set by
//!    [`Delivery::enter`], put back as it was when its guard drops, on a
//!    panic or an early return too). A multicast put back together from
//!    pieces, and one that came compressed, are held the same way: the
//!    reassembled or opened buffer is the current delivery.
//! 3. A `Payload` decoded from bytes that lie inside the current delivery
//!    shares that buffer (a reference count, no copy). Anything else —
//!    no current delivery, bytes from elsewhere, a format that hands the
//!    bytes over only for the call — is copied once.
//! 4. Decoding never trusts a length: bincode checks the prefix against the
//!    bytes left and the codec's size limit before anything is read, so a
//!    forged prefix is an error, not a panic or an allocation.

use std::cell::RefCell;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A block of bytes for remote messages: `bytes::Bytes` with the wire
/// layout of `#[serde(with = "actix_cpg::wire::bytes")] Vec<u8>`.
///
/// Decoded by the runtime for the actor that hosts the message's target,
/// a `Payload` points into the buffer the multicast was delivered in: the
/// bytes are not copied between the transport's delivery and the actor's
/// handler (see BENCHMARKS.md, "Copies of a payload that remain").
///
/// **Memory:** a shared `Payload` keeps the whole delivered buffer alive as
/// long as it (or any clone or slice of it) lives — for a batch, every
/// message of the batch; for a message put together from pieces, the
/// whole message. To keep a small part of a large message for long, copy
/// it out with [`Payload::detach`].
///
/// ```
/// use actix_cpg::wire::Payload;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Upload {
///     name: String,
///     data: Payload,
/// }
///
/// let up = Upload { name: "a".into(), data: Payload::from(vec![1, 2, 3]) };
/// assert_eq!(&up.data[..], &[1, 2, 3]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// A payload of `bytes`, shared (no copy).
    pub fn new(bytes: Bytes) -> Self {
        Payload(bytes)
    }

    /// A payload holding a copy of `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Payload(Bytes::copy_from_slice(bytes))
    }

    /// The bytes, as `bytes::Bytes` (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes, as `bytes::Bytes`.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// A copy of the bytes in a buffer of their own, so the delivered
    /// buffer this payload may share can be freed.
    pub fn detach(&self) -> Payload {
        Payload::copy_from_slice(&self.0)
    }

    /// The bytes in a `Vec<u8>` (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    /// Takes the vector's buffer (no copy).
    fn from(bytes: Vec<u8>) -> Self {
        Payload(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(bytes: &'static [u8]) -> Self {
        Payload(Bytes::from_static(bytes))
    }
}

impl From<Payload> for Bytes {
    fn from(p: Payload) -> Bytes {
        p.0
    }
}

impl Serialize for Payload {
    /// One block, as `actix_cpg::wire::bytes` writes a `Vec<u8>` (rule 1).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// Shares the current delivery when the bytes lie in it, copies them
    /// otherwise (rule 3).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
                Ok(Payload(
                    Delivery::share(v).unwrap_or_else(|| Bytes::copy_from_slice(v)),
                ))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::copy_from_slice(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::from(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Payload, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Payload::from(out))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// The current delivery of this thread (rule 2).
pub(crate) struct Delivery;

impl Delivery {
    /// Makes `buffer` the current delivery until the guard drops; the one
    /// before it, if any, comes back then.
    pub(crate) fn enter(buffer: &Bytes) -> DeliveryGuard {
        let previous = CURRENT.with(|c| c.replace(Some(buffer.clone())));
        DeliveryGuard {
            previous,
            _not_send: PhantomData,
        }
    }

    /// `bytes` as a slice of the current delivery, if it lies inside it.
    fn share(bytes: &[u8]) -> Option<Bytes> {
        CURRENT.with(|c| {
            let current = c.borrow();
            let buffer = current.as_ref()?;
            let start = buffer.as_ptr() as usize;
            let end = start + buffer.len();
            let at = bytes.as_ptr() as usize;
            (start <= at && at + bytes.len() <= end).then(|| buffer.slice_ref(bytes))
        })
    }
}

/// Puts the previous current delivery back when dropped.
pub(crate) struct DeliveryGuard {
    previous: Option<Bytes>,
    // The delivery is the thread's: the guard stays on it.
    _not_send: PhantomData<*const ()>,
}

impl Drop for DeliveryGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct WithPayload {
        n: u32,
        data: Payload,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct WithVec {
        n: u32,
        #[serde(with = "crate::wire::bytes")]
        data: Vec<u8>,
    }

    fn codec() -> Codec {
        Codec::new(4 << 20)
    }

    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let (s, e) = (
            outer.as_ptr() as usize,
            outer.as_ptr() as usize + outer.len(),
        );
        let at = inner.as_ptr() as usize;
        s <= at && at + inner.len() <= e
    }

    #[test]
    fn a_payload_is_written_exactly_as_a_vec_with_wire_bytes() {
        let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let p = codec()
            .encode_payload(&WithPayload {
                n: 7,
                data: Payload::from(data.clone()),
            })
            .unwrap();
        let v = codec()
            .encode_payload(&WithVec {
                n: 7,
                data: data.clone(),
            })
            .unwrap();
        assert_eq!(p, v);
        let back: WithVec = codec().decode_payload(&p).unwrap();
        assert_eq!(back.data, data);
        let back: WithPayload = codec().decode_payload(&v).unwrap();
        assert_eq!(&back.data[..], &data[..]);
    }

    #[test]
    fn a_payload_decoded_inside_a_delivery_shares_its_buffer() {
        let data = vec![5u8; 1 << 20];
        let bytes = Bytes::from(
            codec()
                .encode_payload(&WithPayload {
                    n: 1,
                    data: Payload::from(data.clone()),
                })
                .unwrap(),
        );
        let got: WithPayload = {
            let _current = Delivery::enter(&bytes);
            codec().decode_payload(&bytes).unwrap()
        };
        assert_eq!(&got.data[..], &data[..]);
        assert!(within(&got.data, &bytes));
    }

    #[test]
    fn a_payload_decoded_outside_a_delivery_is_a_copy_of_its_own() {
        let bytes = Bytes::from(
            codec()
                .encode_payload(&WithPayload {
                    n: 1,
                    data: Payload::from(vec![9u8; 4096]),
                })
                .unwrap(),
        );
        let got: WithPayload = codec().decode_payload(&bytes).unwrap();
        assert_eq!(&got.data[..], &[9u8; 4096][..]);
        assert!(!within(&got.data, &bytes));
        // Bytes from another buffer than the current delivery: a copy too.
        let other = Bytes::from(vec![0u8; 64]);
        let got: WithPayload = {
            let _current = Delivery::enter(&other);
            codec().decode_payload(&bytes).unwrap()
        };
        assert!(!within(&got.data, &bytes));
    }

    #[test]
    fn the_previous_delivery_comes_back_when_a_guard_drops_even_on_panic() {
        let outer = Bytes::from(vec![1u8; 16]);
        let inner = Bytes::from(vec![2u8; 16]);
        let _o = Delivery::enter(&outer);
        let caught = std::panic::catch_unwind(|| {
            let _i = Delivery::enter(&inner);
            panic!("while decoding");
        });
        assert!(caught.is_err());
        assert!(Delivery::share(&outer[2..5]).is_some());
        assert!(Delivery::share(&inner[2..5]).is_none());
        drop(_o);
        assert!(Delivery::share(&outer[2..5]).is_none());
    }

    #[test]
    fn a_detached_payload_no_longer_shares_the_delivery() {
        let bytes = Bytes::from(
            codec()
                .encode_payload(&Payload::from(vec![3u8; 1000]))
                .unwrap(),
        );
        let _current = Delivery::enter(&bytes);
        let got: Payload = codec().decode_payload(&bytes).unwrap();
        assert!(within(&got, &bytes));
        let kept = got.detach();
        assert_eq!(kept, got);
        assert!(!within(&kept, &bytes));
    }

    #[test]
    fn a_length_prefix_beyond_the_buffer_is_an_error() {
        let mut forged = 7u32.to_le_bytes().to_vec();
        forged.extend_from_slice(&u64::MAX.to_le_bytes());
        forged.extend_from_slice(&[1, 2, 3]);
        let bytes = Bytes::from(forged);
        let _current = Delivery::enter(&bytes);
        assert!(codec().decode_payload::<WithPayload>(&bytes).is_err());
        let mut short = 7u32.to_le_bytes().to_vec();
        short.extend_from_slice(&100u64.to_le_bytes());
        short.extend_from_slice(&[1, 2, 3]);
        assert!(codec().decode_payload::<WithPayload>(&short).is_err());
    }
}
