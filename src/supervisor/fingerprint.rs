//! The identity of a tree spec: a stable 64-bit fingerprint of its
//! canonical encoding (written in `super::spec`'s `canonical` module with
//! [`crate::stable_hash`]). Two members compare fingerprints to tell
//! whether they run the same spec.

use serde::{Deserialize, Serialize};

/// The stable 64-bit fingerprint of a [`super::TreeSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub u64);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
