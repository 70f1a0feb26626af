//! A replicated key-value map: the state machine behind
//! `examples/kv_store.rs` and the real-cluster tests.
//!
//! [`KvStore`] is a [`StateMachine`]; run it with
//! [`Replica`](crate::Replica). [`KvCommand::Get`] and [`KvCommand::Cas`]
//! are commands like [`KvCommand::Put`]: they take their place in the total
//! order, so reads through them are linearizable;
//! [`Replica::query`](crate::Replica::query) reads one replica's map
//! without ordering, possibly stale.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::replicated::{decode_snapshot, encode_snapshot, StateDigest, StateMachine};

/// A command of the key-value map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Reads `key` (in the total order: linearizable).
    Get {
        /// The key.
        key: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `new` (or removes it if `None`) if it holds
    /// `expected` (`None`: absent).
    Cas {
        /// The key.
        key: String,
        /// What the key must hold.
        expected: Option<String>,
        /// What it gets.
        new: Option<String>,
    },
    /// Creates `count` keys `PREFIX-i` with `size`-byte values (made up
    /// deterministically), to build a large state quickly. A fill of more
    /// than [`MAX_FILL_BYTES`] (each key counted with its value plus
    /// [`FILL_KEY_COST`]) writes nothing and returns `Filled(0)`.
    Fill {
        /// Key prefix.
        prefix: String,
        /// How many keys.
        count: u32,
        /// Bytes per value.
        size: u32,
    },
}

/// What a [`KvCommand`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResponse {
    /// `Put` and `Delete`: the previous value.
    Previous(Option<String>),
    /// `Get`: the value.
    Value(Option<String>),
    /// `Cas`: whether it swapped, and the value the key holds now.
    Cas {
        /// Whether the key held the expected value.
        swapped: bool,
        /// The key's value after the command.
        current: Option<String>,
    },
    /// `Fill`: how many keys were written.
    Filled(u32),
}

/// The replicated map. Keys and values are shared (`Arc<str>`), so the
/// capture for a joiner is a cheap copy of the tree; the bytes are made off
/// the replica's actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<Arc<str>, Arc<str>>,
}

/// Most bytes one [`KvCommand::Fill`] may write: one command of a few
/// bytes from any member is applied by every replica, so without a cap one
/// message (`u32::MAX` keys of `u32::MAX` bytes) would exhaust every
/// replica's memory at once.
pub const MAX_FILL_BYTES: u64 = 64 << 20;

/// What a key of a fill counts for besides its value, against
/// [`MAX_FILL_BYTES`] (so empty values do not make a fill free).
pub const FILL_KEY_COST: u64 = 32;

/// Largest snapshot [`KvStore::restore`] accepts.
pub const MAX_SNAPSHOT: usize = 1 << 31;

impl KvStore {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|v| &**v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A hash of every key and value, in key order: equal maps, equal
    /// digests.
    pub fn digest(&self) -> u64 {
        let mut h = crate::stable_hash::StableHasher::new();
        for (k, v) in &self.map {
            h.bytes(k.as_bytes()).u8(0).bytes(v.as_bytes()).u8(0xff);
        }
        h.finish()
    }
}

fn filler(prefix: &str, i: u32, size: u32) -> String {
    // Deterministic and cheap: every replica makes the same bytes.
    let seed = format!("{prefix}-{i}:");
    seed.chars().cycle().take(size as usize).collect()
}

impl KvStore {
    fn put(&mut self, key: String, value: String) -> Option<String> {
        self.map
            .insert(key.into(), value.into())
            .map(|v| v.to_string())
    }

    fn value(&self, key: &str) -> Option<String> {
        self.map.get(key).map(|v| v.to_string())
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Snapshot = BTreeMap<Arc<str>, Arc<str>>;

    fn apply(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => KvResponse::Previous(self.put(key, value)),
            KvCommand::Get { key } => KvResponse::Value(self.value(&key)),
            KvCommand::Delete { key } => {
                KvResponse::Previous(self.map.remove(key.as_str()).map(|v| v.to_string()))
            }
            KvCommand::Cas { key, expected, new } => {
                let swapped = self.value(&key) == expected;
                if swapped {
                    match new {
                        Some(v) => {
                            self.put(key.clone(), v);
                        }
                        None => {
                            self.map.remove(key.as_str());
                        }
                    }
                }
                KvResponse::Cas {
                    swapped,
                    current: self.value(&key),
                }
            }
            KvCommand::Fill {
                prefix,
                count,
                size,
            } => {
                let cost = u64::from(count).saturating_mul(u64::from(size) + FILL_KEY_COST);
                if cost > MAX_FILL_BYTES {
                    return KvResponse::Filled(0);
                }
                for i in 0..count {
                    self.put(format!("{prefix}-{i}"), filler(&prefix, i, size));
                }
                KvResponse::Filled(count)
            }
        }
    }

    fn snapshot(&self) -> Self::Snapshot {
        // Shares every key and value: no byte is copied here.
        self.map.clone()
    }

    fn encode(snapshot: Self::Snapshot) -> Vec<u8> {
        let pairs: Vec<(&str, &str)> = snapshot.iter().map(|(k, v)| (&**k, &**v)).collect();
        encode_snapshot(&pairs)
    }

    /// BLAKE3 over every key and value, in key order, each with its length.
    fn digest(&self) -> Option<StateDigest> {
        Self::snapshot_digest(&self.map)
    }

    /// The capture shares the map's keys and values: a check hashes a
    /// large store on a blocking thread, not on the replica's actor.
    const DIGESTS_SNAPSHOTS: bool = true;

    fn snapshot_digest(snapshot: &Self::Snapshot) -> Option<StateDigest> {
        let mut hasher = blake3::Hasher::new();
        for (k, v) in snapshot {
            for part in [k, v] {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
        }
        Some(*hasher.finalize().as_bytes())
    }

    fn restore(snapshot: &[u8]) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = decode_snapshot(snapshot, MAX_SNAPSHOT)?;
        Ok(KvStore {
            map: pairs
                .into_iter()
                .map(|(k, v)| (Arc::from(k), Arc::from(v)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas compare digests (and a test harness compares them across
    /// builds): pinned.
    #[test]
    fn the_digest_is_pinned() {
        let mut store = KvStore::default();
        store.apply(KvCommand::Put {
            key: "a".into(),
            value: "b".into(),
        });
        assert_eq!(store.digest(), 0xab40_7282_0d3f_d4d7);
    }

    #[test]
    fn the_map_applies_every_command() {
        let mut kv = KvStore::default();
        let put = |k: &str, v: &str| KvCommand::Put {
            key: k.into(),
            value: v.into(),
        };
        assert_eq!(kv.apply(put("a", "1")), KvResponse::Previous(None));
        assert_eq!(
            kv.apply(put("a", "2")),
            KvResponse::Previous(Some("1".into()))
        );
        let cas = |e: Option<&str>, n: Option<&str>| KvCommand::Cas {
            key: "a".into(),
            expected: e.map(Into::into),
            new: n.map(Into::into),
        };
        assert!(matches!(
            kv.apply(cas(Some("1"), Some("3"))),
            KvResponse::Cas { swapped: false, .. }
        ));
        assert!(matches!(
            kv.apply(cas(Some("2"), None)),
            KvResponse::Cas {
                swapped: true,
                current: None
            }
        ));
        assert_eq!(
            kv.apply(KvCommand::Get { key: "a".into() }),
            KvResponse::Value(None)
        );
        kv.apply(KvCommand::Fill {
            prefix: "f".into(),
            count: 3,
            size: 10,
        });
        assert_eq!(kv.len(), 3);
        assert_eq!(kv.get("f-1").map(str::len), Some(10));
        // A fill past the cap writes nothing, on every replica alike.
        for (count, size) in [(u32::MAX, u32::MAX), (u32::MAX, 0), (2, 40 << 20)] {
            let fill = KvCommand::Fill {
                prefix: "g".into(),
                count,
                size,
            };
            assert_eq!(kv.apply(fill), KvResponse::Filled(0));
        }
        assert_eq!(kv.len(), 3);
        let copy = KvStore::restore(&KvStore::encode(kv.snapshot())).expect("restores");
        assert_eq!(copy, kv);
        assert_eq!(copy.digest(), kv.digest());
    }
}
