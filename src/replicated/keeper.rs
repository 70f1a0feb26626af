//! The runtime's side of a data directory: what reaches the disk, and when
//! replies may leave.
//!
//! The core reports every change of the state's id
//! ([`Action::Persist`], [`Action::Rebase`]); the keeper writes them to
//! the [`Store`]. Four rules:
//!
//! 1. **Nothing is acknowledged before it is durable.** While entries are
//!    appended but not yet committed (group commit, [`SyncPolicy::Batch`]),
//!    every reply and every safe-delivery `Ack` the core asks for is held;
//!    at the end of the pump's turn the keeper commits (one `fsync` for the
//!    turn) and releases them, in order. Under
//!    [`SyncPolicy::EveryCommand`] each append is synced at once and
//!    nothing waits; under [`SyncPolicy::Never`] nothing is synced and
//!    nothing waits.
//! 2. **The knowledge is never behind the state.** The meta file holds the
//!    last primary component this replica knows of. Before an entry or a
//!    snapshot moves the state into an epoch the meta does not cover, the
//!    meta is replaced (and synced): a restarted replica never announces a
//!    state above its own knowledge, which the group would refuse.
//! 3. **The log stays short.** After [`ReplicaConfig::snapshot_every`]
//!    entries the keeper writes the whole state as the snapshot, which
//!    restarts the log; a received snapshot becomes the durable one at once.
//! 4. **The previous replica is gone.** The directory is locked while a
//!    replica uses it, so the replica that wrote the meta file (named in
//!    it) has stopped for good when another opens it: like a member seen
//!    leaving with `ProcDown`, it no longer counts towards a majority of
//!    the last primary component (the core drops it from every record it
//!    holds or learns, so the infos it sends say so). A group restarted whole therefore becomes primary
//!    again once every member of the last primary component it knows of is
//!    back (or had left for sure): a component can shrink to any one of its
//!    members (members that die one by one leave a primary behind them), so
//!    fewer could miss the latest state. Never start a replica on a copy
//!    of another's directory: the copy would count as that replica gone.
//!
//! [`ReplicaConfig::snapshot_every`]: super::ReplicaConfig::snapshot_every

use std::path::Path;

use super::core::Action;
use super::durable::{Entry, Recovered, Store, StoreError, SyncPolicy};
use super::messages::{PrimaryEpoch, PrimaryRecord, StateId};
use crate::transport::Member;
use crate::wire::Codec;

/// What the meta file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    /// The process that wrote it: the replica this directory belonged to.
    pub member: Member,
    /// The last primary component that replica knew of.
    pub known: Option<PrimaryRecord>,
    /// Members an operator wrote off ([`bootstrap`]), each with the last
    /// primary component it was part of: gone for good, like the replica
    /// that wrote this record. Dropped once a later component is known.
    pub written_off: Vec<(Member, PrimaryEpoch)>,
}

/// A data directory in use by one runtime.
pub(crate) struct Keeper<R, C> {
    store: Store,
    /// This process: the writer of every meta record from now on.
    local: Member,
    codec: Codec,
    /// Entries appended since the last commit, not durable yet: replies
    /// and acknowledgements wait (rule 1).
    pending: bool,
    held: Vec<Action<R, C>>,
    /// The knowledge the meta file holds (rule 2).
    written: Option<PrimaryRecord>,
    /// Members an operator wrote off: kept in every meta record until a
    /// later primary component is known.
    written_off: Vec<(Member, PrimaryEpoch)>,
    since_snapshot: u64,
    snapshot_every: u64,
}

/// What a data directory gave back at start.
pub(crate) struct Opened<R, C> {
    pub keeper: Keeper<R, C>,
    pub recovered: Recovered,
    /// The last primary component the directory's previous replica knew
    /// of.
    pub known: Option<PrimaryRecord>,
    /// Members gone for sure, each with the last primary component it was
    /// part of: that replica (rule 4), and any an operator wrote off
    /// ([`bootstrap`]).
    pub gone: Vec<(Member, PrimaryEpoch)>,
    /// The replica that wrote the directory before (gone for sure).
    pub predecessor: Option<Member>,
}

impl<R, C> Keeper<R, C> {
    /// Opens `dir` and reads what it holds; `limit` bounds every record
    /// read and written.
    pub(crate) fn open(
        dir: &Path,
        local: Member,
        sync: SyncPolicy,
        snapshot_every: u64,
        limit: usize,
    ) -> Result<Opened<R, C>, StoreError> {
        let (store, recovered) = Store::open(dir, sync, limit)?;
        let codec = Codec::new(limit);
        let (known, written_off, gone, predecessor) = match &recovered.meta {
            Some(bytes) => {
                let meta: Meta = codec.decode_body(bytes).map_err(|e| StoreError::Damaged {
                    path: dir.join("meta"),
                    what: format!("meta does not decode: {e}"),
                })?;
                let mut gone = meta.written_off.clone();
                let until = meta.known.as_ref().map(|k| k.epoch).unwrap_or_default();
                gone.push((meta.member, until));
                (meta.known, meta.written_off, gone, Some(meta.member))
            }
            None => (None, Vec::new(), Vec::new(), None),
        };
        Ok(Opened {
            keeper: Keeper {
                store,
                local,
                codec,
                // The file still names the previous replica.
                written: None,
                written_off,
                pending: false,
                held: Vec::new(),
                since_snapshot: recovered.entries.len() as u64,
                snapshot_every: snapshot_every.max(1),
            },
            recovered,
            known,
            gone,
            predecessor,
        })
    }

    /// Rule 2: the meta covers `state`'s epoch (writes `known` if not).
    fn cover(&mut self, state: StateId, known: Option<&PrimaryRecord>) -> Result<(), StoreError> {
        let covered = self
            .written
            .as_ref()
            .is_some_and(|w| w.epoch >= state.epoch)
            || state.epoch == Default::default();
        if !covered {
            self.remember(known)?;
        }
        Ok(())
    }

    /// Writes `known` to the meta file if it differs from what is there.
    pub(crate) fn remember(&mut self, known: Option<&PrimaryRecord>) -> Result<(), StoreError> {
        if self.written.as_ref() == known {
            return Ok(());
        }
        let latest = known.map(|k| k.epoch).unwrap_or_default();
        self.written_off.retain(|(_, until)| *until >= latest);
        let meta = Meta {
            member: self.local,
            known: known.cloned(),
            written_off: self.written_off.clone(),
        };
        let bytes = self
            .codec
            .encode_payload(&meta)
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        self.store.set_meta(&bytes)?;
        self.written = known.cloned();
        Ok(())
    }

    /// Appends one entry (rules 1, 2).
    pub(crate) fn persist(
        &mut self,
        entry: &Entry,
        known: Option<&PrimaryRecord>,
    ) -> Result<(), StoreError> {
        self.cover(entry.after(), known)?;
        self.store.append(entry)?;
        self.since_snapshot += 1;
        self.pending = self.store.sync_policy() == SyncPolicy::Batch;
        Ok(())
    }

    /// A received snapshot replaces the state (rules 2, 3).
    pub(crate) fn rebase(
        &mut self,
        state: StateId,
        bytes: &[u8],
        known: Option<&PrimaryRecord>,
    ) -> Result<(), StoreError> {
        self.replace_snapshot(state, bytes, known, false)
    }

    /// Whether this action must wait for the commit (rule 1): a reply, or
    /// an acknowledgement, while appended entries are not durable.
    pub(crate) fn holds(&self, action: &Action<R, C>) -> bool {
        self.pending
            && matches!(
                action,
                Action::Reply { .. } | Action::Mcast(super::messages::ReplicaMessage::Ack(_))
            )
    }

    /// Keeps `action` until the next commit.
    pub(crate) fn hold(&mut self, action: Action<R, C>) {
        self.held.push(action);
    }

    /// Commits what was appended (rule 1) and gives back what waited.
    pub(crate) fn commit(&mut self) -> Result<Vec<Action<R, C>>, StoreError> {
        if self.pending {
            self.store.commit()?;
            self.pending = false;
        }
        Ok(std::mem::take(&mut self.held))
    }

    /// Whether the log is long enough for a snapshot (rule 3).
    pub(crate) fn wants_snapshot(&self) -> bool {
        self.since_snapshot >= self.snapshot_every
    }

    /// Writes the whole state at `state` as the snapshot (rule 3); it must
    /// be the state of the last entry appended.
    pub(crate) fn snapshot(
        &mut self,
        state: StateId,
        bytes: &[u8],
        known: Option<&PrimaryRecord>,
    ) -> Result<(), StoreError> {
        self.replace_snapshot(state, bytes, known, true)
    }

    /// Writes `bytes` as the snapshot at `state`, which must follow the
    /// log if `follows` (a snapshot of this replica's own state) and need
    /// not otherwise (a state received from the group).
    fn replace_snapshot(
        &mut self,
        state: StateId,
        bytes: &[u8],
        known: Option<&PrimaryRecord>,
        follows: bool,
    ) -> Result<(), StoreError> {
        self.cover(state, known)?;
        if follows {
            self.store.snapshot(state, bytes)?;
        } else {
            self.store.rebase(state, bytes)?;
        }
        self.since_snapshot = 0;
        // The snapshot is synced (as the policy says), and with it
        // everything appended before.
        self.pending = false;
        Ok(())
    }
}

/// What [`bootstrap`] did to a data directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrapped {
    /// The state the directory holds, which the group may now go on from.
    pub state: StateId,
    /// The last primary component the directory's replica knew of.
    pub epoch: Option<PrimaryEpoch>,
    /// Its members other than this directory's replica: written off. What
    /// any of them applied after `state` is lost if none of them comes
    /// back.
    pub written_off: Vec<Member>,
}

/// The operator's way out when a disk is lost for good (as Galera's
/// bootstrap): the group killed whole waits for every member of its last
/// primary component, and one will never come back. Run on the data
/// directory of a stopped replica, this writes off every other member of
/// the last primary component it knew, so once it is back it may make a
/// primary component with whoever is there (the greatest state among them
/// goes on). Logged at `warn` with what may be lost; never taken by the
/// library on its own.
///
/// Fails with [`StoreError::Busy`] if a replica runs on `dir`, and changes
/// nothing if the directory knows no primary component.
pub fn bootstrap(dir: &Path) -> Result<Bootstrapped, StoreError> {
    // Nothing is appended: the sync policy does not matter, and `Never`
    // leaves the meta write to the explicit sync below.
    let limit = 1 << 30;
    let (mut store, recovered) = Store::open(dir, SyncPolicy::EveryCommand, limit)?;
    let state = recovered.state().unwrap_or_default();
    let codec = Codec::new(limit);
    let Some(bytes) = &recovered.meta else {
        return Ok(Bootstrapped {
            state,
            epoch: None,
            written_off: Vec::new(),
        });
    };
    let meta: Meta = codec.decode_body(bytes).map_err(|e| StoreError::Damaged {
        path: dir.join("meta"),
        what: format!("meta does not decode: {e}"),
    })?;
    let Some(known) = meta.known.clone() else {
        return Ok(Bootstrapped {
            state,
            epoch: None,
            written_off: Vec::new(),
        });
    };
    let written_off: Vec<Member> = known
        .members
        .iter()
        .copied()
        .filter(|m| *m != meta.member)
        .collect();
    let mut all_off = meta.written_off.clone();
    all_off.extend(written_off.iter().map(|m| (*m, known.epoch)));
    all_off.sort();
    all_off.dedup();
    let bytes = codec
        .encode_payload(&Meta {
            member: meta.member,
            known: Some(known.clone()),
            written_off: all_off,
        })
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    store.set_meta(&bytes)?;
    tracing::warn!(
        dir = %dir.display(),
        applied = state.applied,
        epoch = %known.epoch,
        ?written_off,
        "bootstrap: the members of the last primary component are written off; \
         what they applied after this state is lost unless one of them comes back"
    );
    Ok(Bootstrapped {
        state,
        epoch: Some(known.epoch),
        written_off,
    })
}
