//! Stable fingerprints: FNV-1a (64 bit) over a canonical byte encoding that
//! this module writes by hand.
//!
//! `std`'s `DefaultHasher` is randomly keyed per process and its algorithm
//! may change between releases, so two members could disagree about the
//! same spec. The encoding here is fixed: integers little-endian with fixed
//! width, strings and sequences prefixed with their length as `u64`, every
//! enum variant preceded by a one-byte tag. Changing it is a protocol break,
//! which is why a golden-value test pins it.

use serde::{Deserialize, Serialize};

use super::placement::{Placement, PlacementPolicy};
use super::spec::{
    ChildKind, ChildSpec, QuorumPolicy, RestartType, Shutdown, Strategy, SupervisorSpec, TreeSpec,
};

/// The stable 64-bit fingerprint of a [`TreeSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub u64);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over bytes fed in order; the canonical writer for fingerprints and
/// placement hashes.
#[derive(Clone, Debug)]
pub(crate) struct StableHasher {
    state: u64,
}

impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher { state: FNV_OFFSET }
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

    pub(crate) fn finish(&self) -> u64 {
        self.state
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

/// Version prefix of the canonical encoding; bump it when the encoding changes.
const DOMAIN: &str = "actix-cpg/tree-spec/v1";

pub(crate) fn fingerprint(spec: &TreeSpec) -> Fingerprint {
    let mut h = StableHasher::new();
    h.str(DOMAIN);
    h.u8(match spec.quorum_policy {
        QuorumPolicy::Stop => 0,
        QuorumPolicy::Freeze => 1,
        QuorumPolicy::Ignore => 2,
    });
    write_supervisor(&mut h, &spec.root);
    Fingerprint(h.finish())
}

fn write_supervisor(h: &mut StableHasher, spec: &SupervisorSpec) {
    h.u8(match spec.strategy {
        Strategy::OneForOne => 0,
        Strategy::OneForAll => 1,
        Strategy::RestForOne => 2,
    });
    h.u32(spec.intensity.max_restarts);
    h.u64(spec.intensity.period_ms);
    h.u64(spec.children.len() as u64);
    for child in &spec.children {
        write_child(h, child);
    }
}

fn write_child(h: &mut StableHasher, child: &ChildSpec) {
    h.str(&child.id);
    h.u8(match child.restart {
        RestartType::Permanent => 0,
        RestartType::Transient => 1,
        RestartType::Temporary => 2,
    });
    match child.shutdown {
        Shutdown::BrutalKill => h.u8(0),
        Shutdown::Timeout { ms } => h.u8(1).u64(ms),
        Shutdown::Infinity => h.u8(2),
    };
    match &child.kind {
        ChildKind::Worker(w) => {
            h.u8(0).str(&w.kind);
            write_placement(h, &w.placement);
        }
        ChildKind::Supervisor(s) => {
            h.u8(1);
            write_supervisor(h, s);
        }
    }
}

fn write_placement(h: &mut StableHasher, p: &Placement) {
    match p.policy {
        PlacementPolicy::Any => h.u8(0),
        PlacementPolicy::Pinned(node) => h.u8(1).u32(node.0),
        PlacementPolicy::OnePerNode => h.u8(2),
        PlacementPolicy::OnEveryMember => h.u8(3),
        PlacementPolicy::Singleton => h.u8(4),
    };
    // Weights and exclusions are sets: hash them sorted so the order a spec
    // lists them in does not change its identity.
    let mut weights = p.weights.clone();
    weights.sort();
    weights.dedup_by_key(|(node, _)| *node);
    h.u64(weights.len() as u64);
    for (node, w) in weights {
        h.u32(node.0).u32(w);
    }
    let mut exclude = p.exclude.clone();
    exclude.sort();
    exclude.dedup();
    h.u64(exclude.len() as u64);
    for node in exclude {
        h.u32(node.0);
    }
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
}
