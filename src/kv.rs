//! A replicated key-value map: the state machine behind
//! `examples/kv_store.rs` and the real-cluster tests.
//!
//! [`KvStore`] is a [`StateMachine`]; run it with
//! [`Replica`](crate::Replica). [`KvCommand::Get`] and [`KvCommand::Cas`]
//! are commands like [`KvCommand::Put`]: they take their place in the total
//! order, so reads through them are linearizable;
//! [`Replica::query`](crate::Replica::query) reads one replica's map
//! without ordering, possibly stale.
//!
//! The live map is a `HashMap` (std's SipHash with a per-process key: keys
//! come from the network, and a flood of colliding keys must stay
//! expensive to make). Wherever order is seen outside the process — the
//! digests replicas compare, the snapshot bytes a joiner and a durable
//! replica's files read — the pairs are sorted by key first, so they are
//! byte for byte what a map kept in key order gives.

use std::collections::HashMap;
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

/// What a [`KvCommand`] returns. It stays in the process (a caller gets
/// its own replica's response), so its values are the map's own, shared:
/// no response copies a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResponse {
    /// `Put` and `Delete`: the previous value.
    Previous(Option<Arc<str>>),
    /// `Get`: the value.
    Value(Option<Arc<str>>),
    /// `Cas`: whether it swapped, and the value the key holds now.
    Cas {
        /// Whether the key held the expected value.
        swapped: bool,
        /// The key's value after the command.
        current: Option<Arc<str>>,
    },
    /// `Fill`: how many keys were written.
    Filled(u32),
}

/// The replicated map. Keys and values are shared (`Arc<str>`), so the
/// capture for a joiner copies no byte; the capture is sorted and encoded
/// off the replica's actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    map: HashMap<Arc<str>, Arc<str>>,
}

/// A capture of a [`KvStore`] ([`StateMachine::snapshot`]): its pairs, in
/// no particular order, sharing the map's keys and values.
/// [`StateMachine::encode`] and [`StateMachine::snapshot_digest`] put
/// them in key order.
#[derive(Debug, Clone, Default)]
pub struct KvSnapshot {
    pairs: Vec<(Arc<str>, Arc<str>)>,
}

/// The pairs of `pairs` in key order (keys are unique, so an unstable
/// sort gives one order).
fn in_key_order<'a>(
    pairs: impl Iterator<Item = (&'a Arc<str>, &'a Arc<str>)>,
) -> Vec<(&'a str, &'a str)> {
    let mut sorted: Vec<(&str, &str)> = pairs.map(|(k, v)| (&**k, &**v)).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// BLAKE3 over every key and value of `pairs` (in key order), each with
/// its length.
fn blake3_of(pairs: &[(&str, &str)]) -> StateDigest {
    let mut hasher = blake3::Hasher::new();
    for (k, v) in pairs {
        for part in [k, v] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    *hasher.finalize().as_bytes()
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
    /// digests. It sorts the keys: O(n log n), on the caller's thread.
    pub fn digest(&self) -> u64 {
        let mut h = crate::stable_hash::StableHasher::new();
        for (k, v) in in_key_order(self.map.iter()) {
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
    /// Sets `key`, returning the value it replaced. A key already present
    /// keeps its `Arc`: an overwrite allocates only the value.
    fn put(&mut self, key: String, value: String) -> Option<Arc<str>> {
        let value = Arc::from(value);
        match self.map.get_mut(key.as_str()) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => self.map.insert(key.into(), value),
        }
    }

    fn value(&self, key: &str) -> Option<Arc<str>> {
        self.map.get(key).cloned()
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => KvResponse::Previous(self.put(key, value)),
            KvCommand::Get { key } => KvResponse::Value(self.value(&key)),
            KvCommand::Delete { key } => KvResponse::Previous(self.map.remove(key.as_str())),
            KvCommand::Cas { key, expected, new } => {
                let swapped = self.get(&key) == expected.as_deref();
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
        // Shares every key and value: no byte is copied, nothing sorted
        // here, on the replica's actor.
        KvSnapshot {
            pairs: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The pairs in key order, as a map kept in key order gave them: an
    /// older member reads these bytes.
    fn encode(snapshot: Self::Snapshot) -> Vec<u8> {
        encode_snapshot(&in_key_order(snapshot.pairs.iter().map(|(k, v)| (k, v))))
    }

    /// BLAKE3 over every key and value, in key order, each with its length.
    fn digest(&self) -> Option<StateDigest> {
        Some(blake3_of(&in_key_order(self.map.iter())))
    }

    /// The capture shares the map's keys and values: a check hashes a
    /// large store on a blocking thread, not on the replica's actor.
    const DIGESTS_SNAPSHOTS: bool = true;

    fn snapshot_digest(snapshot: &Self::Snapshot) -> Option<StateDigest> {
        Some(blake3_of(&in_key_order(
            snapshot.pairs.iter().map(|(k, v)| (k, v)),
        )))
    }

    fn restore(snapshot: &[u8]) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = decode_snapshot(snapshot, MAX_SNAPSHOT)?;
        // A key given twice keeps its last value, as it always did.
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            map.insert(Arc::from(k), Arc::from(v));
        }
        Ok(KvStore { map })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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

    /// A few hundred keys whose byte order is no insertion order: ASCII of
    /// both cases, digits, multi-byte UTF-8, prefixes of each other, an
    /// empty key and an empty value.
    fn mixed_pairs() -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = (0..300u32)
            .map(|i| {
                let key = match i % 5 {
                    0 => format!("k{i}"),
                    1 => format!("K-{}", 1000 - i),
                    2 => format!("\u{e9}{i}\u{fc}"),
                    3 => format!("{}", i * 7919 % 1000),
                    _ => "z".repeat(1 + (i % 13) as usize) + &i.to_string(),
                };
                (key, format!("v{}", i * 31))
            })
            .collect();
        pairs.push((String::new(), "empty key".into()));
        pairs.push(("no value".into(), String::new()));
        pairs
    }

    /// An older member compares these digests and reads these snapshot
    /// bytes (and a durable replica's files): both are made in key order,
    /// whatever order the map keeps its keys in, and pinned.
    #[test]
    fn digests_and_snapshot_bytes_follow_key_order_and_are_pinned() {
        let pairs = mixed_pairs();
        let ordered: BTreeMap<&str, &str> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut fnv = crate::stable_hash::StableHasher::new();
        let mut blake = blake3::Hasher::new();
        for (k, v) in &ordered {
            fnv.bytes(k.as_bytes()).u8(0).bytes(v.as_bytes()).u8(0xff);
            for part in [k, v] {
                blake.update(&(part.len() as u64).to_le_bytes());
                blake.update(part.as_bytes());
            }
        }
        let in_order: Vec<(&str, &str)> = ordered.iter().map(|(k, v)| (*k, *v)).collect();
        let bytes = encode_snapshot(&in_order);
        let (fnv, blake) = (fnv.finish(), *blake.finalize().as_bytes());
        // Inserted forwards, backwards and interleaved: one state.
        let n = pairs.len();
        let orders: [Vec<usize>; 3] = [
            (0..n).collect(),
            (0..n).rev().collect(),
            (0..n).map(|i| i * 7 % n).collect(),
        ];
        for order in orders {
            let mut kv = KvStore::default();
            for i in order {
                let (key, value) = pairs[i].clone();
                kv.apply(KvCommand::Put { key, value });
            }
            assert_eq!(kv.len(), ordered.len());
            assert_eq!(kv.digest(), fnv);
            assert_eq!(StateMachine::digest(&kv), Some(blake));
            assert_eq!(KvStore::snapshot_digest(&kv.snapshot()), Some(blake));
            let encoded = KvStore::encode(kv.snapshot());
            assert!(encoded == bytes, "the snapshot bytes are in key order");
            let back = KvStore::restore(&encoded).expect("restores");
            assert_eq!(back, kv);
        }
        // What the map kept in key order gave (its last commit's code).
        assert_eq!(fnv, 0xa142_3fdc_240d_8637);
        assert_eq!(
            blake3::Hash::from(blake).to_hex().as_str(),
            "a6293bfa0712bf7e33dccd23f51df7a5cb8555449b722f33d5ce412d175fefc7"
        );
        assert_eq!(bytes.len(), 7982);
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            "bbffd14e3a6a82bcbe715fa0c54f818ea512463b5c048cc407e6e14c7a917d62"
        );
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
