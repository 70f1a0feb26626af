//! Group authentication: only processes that hold the group's key count.
//!
//! A CPG group is not a trust boundary: any process corosync lets connect
//! can join a group and multicast anything. A [`GroupKey`] shared by the
//! members closes that gap. [`Authenticated`] wraps any [`Connection`]:
//! every multicast carries a MAC, and every delivery is verified — and the
//! MAC stripped — before anything above decodes a byte of it.
//!
//! ```text
//!   runtime (group / replica / election)       sees envelopes only, verified
//!        │ mcast(envelope)          ▲ Deliver { from, envelope }
//!        ▼                          │ (anything else: counted, dropped)
//!   Authenticated<C> ── mac(key; group, from, envelope) ──
//!        │ mcast(ACPK | tag | envelope)  ▲ Deliver { from, ACPK | tag | envelope }
//!        ▼                               │
//!   C: corosync | sim
//! ```
//!
//! On the wire a keyed multicast is
//!
//! ```text
//!  0      4                     36                              len
//!  +------+---------------------+--------------------------------+
//!  | ACPK | tag (32 bytes)      | envelope (ACPG ..., see wire)   |
//!  +------+---------------------+--------------------------------+
//! ```
//!
//! and `tag` is BLAKE3 in its keyed mode over
//!
//! ```text
//!  "ACPK" | group-name-len u8 | group name | node u32 LE | pid u32 LE | envelope
//! ```
//!
//! where `(node, pid)` is the **sender as CPG reports it** in the delivery.
//! corosync learns a client's pid from its IPC socket (the kernel's
//! credentials), not from the client, so a process that captures a
//! member's message and multicasts it again is reported with its own
//! `(node, pid)`, and the tag no longer matches. The group name is bound
//! too, so a message of one keyed group is refused by another group under
//! the same key. Every field before the envelope has a fixed length or a
//! length prefix, so no two inputs hash the same bytes.
//!
//! Why BLAKE3: its keyed mode is designed as a MAC (a PRF under a 256-bit
//! key, no length-extension), the `blake3` crate is maintained by the
//! algorithm's authors, is one small dependency, and hashes at several GB/s
//! — the cost per message is measured in `BENCHMARKS.md` (keyed rows).
//! Tags are compared in constant time (`blake3::Hash`'s `PartialEq`).
//!
//! What it does not do: it authenticates, it does not hide anything (use
//! corosync's knet crypto for that on the network), and it does not stop
//! replays by the *same* sender's process of a message that process once
//! sent (that process is a member; it can send anything anyway). A process
//! without the key can still join the CPG group and so appear in views;
//! what its presence in a view means is the runtimes' rule, not this
//! layer's.
//!
//! A recording made by a keyed member ([`crate::record`]) holds the
//! verified deliveries with the MAC stripped — exactly what the runtime
//! decided from — and none of the dropped ones, so it replays without the
//! key.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::transport::{
    Connection, FlowControl, GroupName, Member, TransportError, TransportEvent,
};

/// First four bytes of every keyed multicast: lets a keyed member tell a
/// message without a MAC (an unkeyed sender) from one with a wrong MAC, and
/// makes an unkeyed member drop keyed messages as foreign (bad magic).
pub const AUTH_MAGIC: [u8; 4] = *b"ACPK";
/// Length of the MAC tag.
pub const TAG_LEN: usize = 32;
/// Bytes a keyed multicast carries besides the envelope.
pub const AUTH_OVERHEAD: usize = AUTH_MAGIC.len() + TAG_LEN;

/// Context strings of the key derivations; changing one changes every key.
const PASSPHRASE_CONTEXT: &str = "actix-cpg 2026-12 group key from passphrase";
const FILE_CONTEXT: &str = "actix-cpg 2026-12 group key from key file";

/// Deliveries dropped in one poll before the wrapper yields to the
/// executor: a flood of forgeries cannot starve the rest of the arbiter.
const DROPS_PER_POLL: usize = 64;
/// At most one `warn!` per this interval per connection; every drop is
/// logged at `debug!`.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A group's shared secret: 32 bytes. Every member of a keyed group must
/// hold the same key; a process without it is nobody to the group.
///
/// `Debug` prints no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey([u8; 32]);

impl GroupKey {
    /// A key from 32 raw bytes (e.g. from a secret store). Use random bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        GroupKey(bytes)
    }

    /// A key derived from a passphrase with BLAKE3's key-derivation mode.
    /// That mode is fast on purpose and does not slow down guessing: give
    /// it a long random passphrase, not a password a person chose (for one
    /// of those, stretch it with a password hash such as Argon2 first and
    /// use [`GroupKey::from_bytes`]).
    pub fn from_passphrase(passphrase: &str) -> Self {
        GroupKey(blake3::derive_key(
            PASSPHRASE_CONTEXT,
            passphrase.as_bytes(),
        ))
    }

    /// A key derived from the whole contents of a key file (any length,
    /// e.g. one made with `dd if=/dev/urandom bs=64 count=1`), byte for
    /// byte: a trailing newline counts. Empty contents are refused, since
    /// every empty file would give the same key.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, KeyError> {
        if contents.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(GroupKey(blake3::derive_key(FILE_CONTEXT, contents)))
    }

    /// Reads `path` and derives the key from its contents
    /// ([`GroupKey::from_file_contents`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let contents =
            std::fs::read(path).map_err(|e| KeyError::Io(format!("{}: {e}", path.display())))?;
        Self::from_file_contents(&contents)
    }

    /// The MAC of `envelope` sent by `from` to `group`.
    pub(crate) fn tag(&self, group: &GroupName, from: Member, envelope: &[u8]) -> blake3::Hash {
        let name = group.as_str().as_bytes();
        // A GroupName is at most 127 bytes, so its length fits one byte.
        let name_len = u8::try_from(name.len()).unwrap_or(u8::MAX);
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&AUTH_MAGIC);
        hasher.update(&[name_len]);
        hasher.update(name);
        hasher.update(&from.node.0.to_le_bytes());
        hasher.update(&from.pid.to_le_bytes());
        hasher.update(envelope);
        hasher.finalize()
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupKey(<redacted>)")
    }
}

/// Why a key could not be made. Nothing was derived; fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file is empty.
    #[error("key file is empty")]
    Empty,
    /// The key file could not be read.
    #[error("key file: {0}")]
    Io(String),
}

/// Why a delivery failed verification. Each is dropped and counted alike;
/// the kinds only make the log useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// Shorter than the MAC header.
    Truncated,
    /// No `ACPK` marker: sent without a key (or not by actix-cpg).
    NoMac,
    /// The tag does not match: another key, another group, another sender
    /// than the one who computed it, or altered bytes.
    BadTag,
}

impl fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unauthenticated::Truncated => "shorter than a MAC header",
            Unauthenticated::NoMac => "no MAC (sent without the group key)",
            Unauthenticated::BadTag => "MAC does not match (other key, group or sender)",
        })
    }
}

/// Writes the keyed multicast of `envelope` sent by `from` into `out`
/// (cleared first).
pub fn seal(key: &GroupKey, group: &GroupName, from: Member, envelope: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(AUTH_OVERHEAD + envelope.len());
    out.extend_from_slice(&AUTH_MAGIC);
    out.extend_from_slice(key.tag(group, from, envelope).as_bytes());
    out.extend_from_slice(envelope);
}

/// Checks a keyed multicast delivered from `from`; on success `bytes` is
/// left holding the envelope alone. On failure `bytes` is untouched.
pub fn open(
    key: &GroupKey,
    group: &GroupName,
    from: Member,
    bytes: &mut Vec<u8>,
) -> Result<(), Unauthenticated> {
    if bytes.len() < AUTH_OVERHEAD {
        return Err(
            if bytes.starts_with(&AUTH_MAGIC) || bytes.len() < AUTH_MAGIC.len() {
                Unauthenticated::Truncated
            } else {
                Unauthenticated::NoMac
            },
        );
    }
    if bytes[..AUTH_MAGIC.len()] != AUTH_MAGIC {
        return Err(Unauthenticated::NoMac);
    }
    let mut claimed = [0u8; TAG_LEN];
    claimed.copy_from_slice(&bytes[AUTH_MAGIC.len()..AUTH_OVERHEAD]);
    // `Hash == Hash` compares in constant time.
    if key.tag(group, from, &bytes[AUTH_OVERHEAD..]) != blake3::Hash::from(claimed) {
        return Err(Unauthenticated::BadTag);
    }
    bytes.drain(..AUTH_OVERHEAD);
    Ok(())
}

/// A [`Connection`] that MACs what it sends and passes on only deliveries
/// that carry a valid MAC from their CPG sender, stripped of it. Confchgs,
/// totem and quorum events pass unchanged (they come from the local
/// daemon, not from a member).
///
/// Every runtime takes a keyed connection alike: the group, replica and
/// election runtimes wrap theirs when their config has a key.
pub struct Authenticated<C> {
    inner: C,
    key: GroupKey,
    group: GroupName,
    local: Member,
    sealed: Vec<u8>,
    dropped: Arc<AtomicU64>,
    last_warn: Option<Instant>,
    unwarned: u64,
}

impl<C: Connection> Authenticated<C> {
    /// Wraps `inner` under `key`; drops are counted in `dropped`.
    pub fn new(inner: C, key: GroupKey, dropped: Arc<AtomicU64>) -> Self {
        let group = inner.group().clone();
        let local = inner.local();
        Authenticated {
            inner,
            key,
            group,
            local,
            sealed: Vec::new(),
            dropped,
            last_warn: None,
            unwarned: 0,
        }
    }

    /// Deliveries dropped so far for failing verification.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn note_drop(&mut self, from: Member, len: usize, why: Unauthenticated) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.unwarned += 1;
        // The clock only paces the log; no decision depends on it.
        let now = Instant::now();
        let due = self
            .last_warn
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if due {
            warn!(
                group = %self.group, %from, len, dropped = self.unwarned,
                "dropped unauthenticated messages: {why} (next warning in {}s at the earliest)",
                WARN_EVERY.as_secs()
            );
            self.last_warn = Some(now);
            self.unwarned = 0;
        } else {
            debug!(group = %self.group, %from, len, "dropped an unauthenticated message: {why}");
        }
    }
}

impl<C: Connection> Connection for Authenticated<C> {
    fn group(&self) -> &GroupName {
        &self.group
    }

    fn local(&self) -> Member {
        self.local
    }

    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        // The runtimes size their multicasts by `max_message_size`, which
        // already leaves room for the MAC; this only guards direct callers.
        let max = self.max_message_size();
        if bytes.len() > max {
            return Err(TransportError::MessageTooLarge {
                len: bytes.len(),
                max,
            });
        }
        seal(&self.key, &self.group, self.local, bytes, &mut self.sealed);
        let result = self.inner.mcast(&self.sealed);
        // A large buffer is not kept for the next small message.
        if self.sealed.capacity() > 1 << 20 {
            self.sealed = Vec::new();
        }
        result
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<TransportEvent, TransportError>> {
        for _ in 0..DROPS_PER_POLL {
            match self.inner.poll_event(cx) {
                Poll::Ready(Ok(TransportEvent::Deliver { from, mut bytes })) => {
                    match open(&self.key, &self.group, from, &mut bytes) {
                        Ok(()) => return Poll::Ready(Ok(TransportEvent::Deliver { from, bytes })),
                        Err(why) => self.note_drop(from, bytes.len(), why),
                    }
                }
                other => return other,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn members(&self) -> Result<Vec<Member>, TransportError> {
        self.inner.members()
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size().saturating_sub(AUTH_OVERHEAD)
    }

    fn flow_control(&self) -> FlowControl {
        self.inner.flow_control()
    }

    fn leave(&mut self) -> Result<(), TransportError> {
        self.inner.leave()
    }

    fn wall_clock_us(&self) -> u64 {
        self.inner.wall_clock_us()
    }
}

/// `conn` as a boxed connection, wrapped under `key` if there is one.
pub(crate) fn boxed<C: Connection>(
    conn: C,
    key: Option<&GroupKey>,
    dropped: Arc<AtomicU64>,
) -> Box<dyn Connection> {
    match key {
        Some(key) => Box::new(Authenticated::new(conn, key.clone(), dropped)),
        None => Box::new(conn),
    }
}

#[cfg(test)]
mod tests;
