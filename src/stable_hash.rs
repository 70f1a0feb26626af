//! The one stable hash of the crate: FNV-1a (64 bit) over bytes written in a
//! fixed order, and a finaliser for values compared whole.
//!
//! `std`'s `DefaultHasher` is randomly keyed per process and may change
//! between releases, so members could disagree. Several of these hashes
//! are part of the protocol — a tree spec's fingerprint, placement scores,
//! a replica's view tag and command chain, an election's view tag — and
//! the golden values in the tests pin them: changing one is a protocol
//! break. Integers are written little-endian with fixed width, strings
//! with their length as a `u64` first.

use crate::transport::Member;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over bytes fed in order.
#[derive(Clone, Debug)]
pub(crate) struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher { state: FNV_OFFSET }
    }

    /// Goes on from an earlier hash `prev`, as a running chain does: the
    /// state starts at `prev` mixed with the offset basis.
    pub(crate) fn chained(prev: u64) -> Self {
        StableHasher {
            state: prev ^ FNV_OFFSET,
        }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.state ^= u64::from(*b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// A process: its node id, then its pid.
    pub(crate) fn member(&mut self, m: Member) -> &mut Self {
        self.u32(m.node.0).u32(m.pid)
    }

    pub(crate) fn finish(&self) -> u64 {
        self.state
    }
}

/// For hash maps whose keys only this process inserts (its own names):
/// short keys, no adversary, and cheaper than SipHash.
impl std::hash::Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        self.bytes(bytes);
    }
}

/// A 64-bit finaliser (from MurmurHash3). FNV-1a alone mixes its last bytes
/// poorly, and rendezvous hashing compares whole values, so placement hashes
/// go through this before they are compared.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(StableHasher::new().finish(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            StableHasher::new().bytes(b"a").finish(),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            StableHasher::new().bytes(b"foobar").finish(),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn a_chain_goes_on_from_its_previous_value() {
        let whole = StableHasher::new().bytes(b"foobar").finish();
        let start = StableHasher::new().bytes(b"foo").finish();
        // `chained` mixes the offset basis in again: not a plain resume.
        assert_ne!(StableHasher::chained(start).bytes(b"bar").finish(), whole);
        assert_eq!(
            StableHasher::chained(0).finish(),
            StableHasher::new().finish()
        );
    }

    #[test]
    fn the_finaliser_is_pinned() {
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
    }
}
