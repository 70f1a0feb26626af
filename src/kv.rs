//! A replicated key-value map, and a line protocol to drive it: the
//! service behind `examples/kv_store.rs` and the real-cluster tests.
//!
//! [`KvStore`] is a [`StateMachine`]; run it with [`Replica`]. Each line of
//! the protocol is one request; a request may start with a tag `#N` that the
//! response repeats (so a client can pipeline and match answers), and the
//! response names the command's position in the group's total order:
//!
//! ```text
//!  put KEY VALUE...        OK POS                 (value: rest of the line)
//!  get KEY                 VALUE POS VALUE  |  NONE POS
//!  del KEY                 OK POS  |  NONE POS    (whether it existed)
//!  cas KEY OLD NEW         CAS POS ok  |  CAS POS fail CURRENT
//!                          (OLD, NEW, CURRENT: a word, or - for absent)
//!  fill PREFIX COUNT SIZE  FILLED POS COUNT       (COUNT keys of SIZE bytes)
//!  read KEY                LOCAL VALUE  |  LOCAL -   (this replica, no order)
//!  status                  STATUS primary=B epoch=E members=N applied=A holding=B
//!  refused                 REFUSED not_member=N epoch=N inconsistent=N chunk=N stale=N overflow=N
//!                          (protocol messages this replica refused, by cause)
//!  digest                  DIGEST APPLIED KEYS HASH
//!  wait-primary            PRIMARY EPOCH
//!  any failed request      ERR REASON             (not-primary, uncertain, ...)
//! ```
//!
//! `get` and `cas` are commands like `put`: they take their place in the
//! total order, so reads are linearizable; `read` is a local, possibly
//! stale, read.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::replicated::{decode_snapshot, encode_snapshot, Replica, ReplicaError, StateMachine};

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

/// One parsed line of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A command for the total order.
    Command(KvCommand),
    /// `read KEY`: this replica's value, without ordering.
    LocalRead(String),
    /// `status`.
    Status,
    /// `refused`.
    Refused,
    /// `digest`.
    Digest,
    /// `wait-primary`.
    WaitPrimary,
}

fn word_or_absent(w: &str) -> Option<String> {
    (w != "-").then(|| w.to_owned())
}

/// Parses one line (without its tag).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let line = line.trim();
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    Ok(match (verb, words.as_slice()) {
        ("put", [key, ..]) => {
            let value = rest.trim_start()[key.len()..].trim_start().to_owned();
            Request::Command(KvCommand::Put {
                key: (*key).to_owned(),
                value,
            })
        }
        ("get", [key]) => Request::Command(KvCommand::Get {
            key: (*key).to_owned(),
        }),
        ("del", [key]) => Request::Command(KvCommand::Delete {
            key: (*key).to_owned(),
        }),
        ("cas", [key, old, new]) => Request::Command(KvCommand::Cas {
            key: (*key).to_owned(),
            expected: word_or_absent(old),
            new: word_or_absent(new),
        }),
        ("fill", [prefix, count, size]) => Request::Command(KvCommand::Fill {
            prefix: (*prefix).to_owned(),
            count: count.parse().map_err(|_| format!("bad count {count:?}"))?,
            size: size.parse().map_err(|_| format!("bad size {size:?}"))?,
        }),
        ("read", [key]) => Request::LocalRead((*key).to_owned()),
        ("status", []) => Request::Status,
        ("refused", []) => Request::Refused,
        ("digest", []) => Request::Digest,
        ("wait-primary", []) => Request::WaitPrimary,
        _ => return Err(format!("cannot parse {line:?}")),
    })
}

/// The response line for a command's outcome at position `pos`.
pub fn format_response(response: &KvResponse, pos: u64) -> String {
    let or_absent = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match response {
        KvResponse::Previous(Some(_)) => format!("OK {pos}"),
        KvResponse::Previous(None) => format!("OK {pos}"),
        KvResponse::Value(Some(v)) => format!("VALUE {pos} {v}"),
        KvResponse::Value(None) => format!("NONE {pos}"),
        KvResponse::Cas {
            swapped: true,
            current: _,
        } => format!("CAS {pos} ok"),
        KvResponse::Cas {
            swapped: false,
            current,
        } => format!("CAS {pos} fail {}", or_absent(current)),
        KvResponse::Filled(n) => format!("FILLED {pos} {n}"),
    }
}

/// The error line for a failed request.
pub fn format_error(error: &ReplicaError) -> String {
    let reason = match error {
        ReplicaError::NotPrimary => "not-primary".to_owned(),
        ReplicaError::Uncertain => "uncertain".to_owned(),
        ReplicaError::NotMember => "not-member".to_owned(),
        ReplicaError::Overloaded => "overloaded".to_owned(),
        ReplicaError::Closed => "closed".to_owned(),
        ReplicaError::Codec(e) => format!("codec {e}"),
        ReplicaError::Transport(e) => format!("transport {e}"),
    };
    format!("ERR {reason}")
}

/// Serves the line protocol: one request per input line, one response per
/// request on `output` (tagged like the request). Requests are queued in
/// line order, so pipelined commands enter the total order in that order;
/// responses may come out of order (use tags). Ends when `input` closes.
/// Must run inside an actix system.
pub async fn serve_lines(
    replica: Replica<KvStore>,
    mut input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) {
    let output = Rc::new(output);
    while let Some(line) = input.recv().await {
        let (tag, body) = match line.strip_prefix('#') {
            Some(rest) => {
                let (tag, body) = rest.split_once(' ').unwrap_or((rest, ""));
                (format!("#{tag} "), body.to_owned())
            }
            None => (String::new(), line),
        };
        if body.trim().is_empty() {
            continue;
        }
        let say = {
            let output = output.clone();
            move |text: String| {
                let _ = output.send(format!("{tag}{text}"));
            }
        };
        match parse_request(&body) {
            Err(e) => say(format!("ERR {e}")),
            Ok(Request::Command(cmd)) => {
                let executed = replica.execute_traced(cmd);
                actix::spawn(async move {
                    say(match executed.await {
                        Ok(e) => format_response(&e.response, e.state.applied),
                        Err(e) => format_error(&e),
                    });
                });
            }
            Ok(Request::LocalRead(key)) => {
                let value = replica
                    .query(move |s: &KvStore| s.get(&key).map(str::to_owned))
                    .await;
                say(match value {
                    Ok(v) => format!("LOCAL {}", v.unwrap_or_else(|| "-".into())),
                    Err(e) => format_error(&e),
                });
            }
            Ok(Request::Status) => {
                let s = replica.status();
                say(format!(
                    "STATUS primary={} epoch={} members={} applied={} holding={}",
                    s.primary,
                    s.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                    s.members.len(),
                    s.state.applied,
                    s.holding
                ));
            }
            Ok(Request::Refused) => {
                let r = replica.status().refused;
                say(format!(
                    "REFUSED not_member={} epoch={} inconsistent={} chunk={} stale={} overflow={}",
                    r.not_member, r.epoch, r.inconsistent, r.chunk, r.stale, r.overflow
                ));
            }
            Ok(Request::Digest) => {
                let digest = replica.query(|s: &KvStore| (s.len(), s.digest())).await;
                let applied = replica.status().state.applied;
                say(match digest {
                    Ok((keys, hash)) => format!("DIGEST {applied} {keys} {hash:016x}"),
                    Err(e) => format_error(&e),
                });
            }
            Ok(Request::WaitPrimary) => {
                let replica = replica.clone();
                actix::spawn(async move {
                    say(match replica.wait_primary().await {
                        Ok(epoch) => format!("PRIMARY {epoch}"),
                        Err(e) => format_error(&e),
                    });
                });
            }
        }
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
    fn lines_parse_into_commands() {
        assert_eq!(
            parse_request("put k hello world"),
            Ok(Request::Command(KvCommand::Put {
                key: "k".into(),
                value: "hello world".into()
            }))
        );
        assert_eq!(
            parse_request("cas k - v2"),
            Ok(Request::Command(KvCommand::Cas {
                key: "k".into(),
                expected: None,
                new: Some("v2".into())
            }))
        );
        assert!(parse_request("get").is_err());
        assert!(parse_request("fill p x 3").is_err());
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

    #[test]
    fn responses_name_their_position() {
        assert_eq!(format_response(&KvResponse::Value(None), 4), "NONE 4");
        assert_eq!(
            format_response(
                &KvResponse::Cas {
                    swapped: false,
                    current: None
                },
                9
            ),
            "CAS 9 fail -"
        );
        assert_eq!(format_error(&ReplicaError::NotPrimary), "ERR not-primary");
    }
}
