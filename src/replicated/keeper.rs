//! The runtime's side of a data directory: what reaches the disk, and when
//! replies may leave.
//!
//! The core reports every change of the state's id
//! ([`Action::Persist`], [`Action::Rebase`]); the keeper writes them to
//! the [`Store`]. Four rules:
//!
//! 1. **Nothing is acknowledged before it is durable; the sync is a
//!    pipeline.** Under [`SyncPolicy::Batch`] every entry appended takes
//!    the next position in the log ([`Ticket`]); a reply or safe-delivery
//!    `Ack` the core asks for while appended entries are not durable is
//!    held with the position appended so far. At the end of a pump turn
//!    the runtime starts one sync of everything appended (on a blocking
//!    thread, through a [`LogSync`]) and keeps delivering; at most one
//!    sync runs, and what is appended meanwhile waits for the next, started
//!    as soon as the first returns: the batch grows with the load, no
//!    timer. A finished sync releases, in the order the core asked for
//!    them, exactly the held actions whose position it covers
//!    ([`Commits`], pure), and its state becomes the durable mark: an
//!    `Ack` is raised no higher than it, and a reply whose command it
//!    covers is not held. A meta write, a snapshot and a received state
//!    stay synchronous and make everything appended before them durable
//!    (they release what waited; a sync of an older position that returns
//!    later releases nothing more). A failed sync stops the replica.
//!    Under [`SyncPolicy::EveryCommand`] each append is synced at once and
//!    nothing waits; under [`SyncPolicy::Never`] nothing is synced and
//!    nothing waits.
//! 2. **The knowledge is never behind the state.** The meta file holds the
//!    last primary component this replica knows of. Before an entry or a
//!    snapshot moves the state into an epoch the meta does not cover, the
//!    meta is replaced (and synced): a restarted replica never announces a
//!    state above its own knowledge, which the group would refuse.
//! 3. **The log stays short.** After [`ReplicaConfig::snapshot_every`]
//!    entries the keeper begins a snapshot of the whole state: the capture
//!    is taken on the runtime's thread, its encoding and writing run on a
//!    blocking thread while delivery goes on, and the log restarts at the
//!    snapshot's state (entries appended meanwhile stay in the new log;
//!    see `durable` rule 2). One snapshot at a time. A received snapshot
//!    becomes the durable one at once, on the runtime's thread.
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

use std::collections::VecDeque;
use std::path::Path;

use super::core::Action;
pub(crate) use super::durable::LogSync;
pub(crate) use super::durable::SnapshotWrite;
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

/// A position in the log: how many entries this runtime appended up to
/// it, and the state's id there. A sync covers a position; a held action
/// waits for one (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ticket {
    /// Entries appended by this runtime up to this position.
    pub seq: u64,
    /// The state's id at this position.
    pub state: StateId,
}

/// Which held actions may leave, as syncs start and finish (rule 1): no
/// I/O, so it is tested alone. `A` is what is held (the runtime's
/// actions).
#[derive(Debug)]
pub(crate) struct Commits<A> {
    /// The last position appended.
    appended: Ticket,
    /// The last position known durable.
    synced: Ticket,
    /// The position the sync in flight covers.
    in_flight: Option<Ticket>,
    /// Held actions, each with the position it waits for, in the order
    /// they were held (their positions never go down).
    held: VecDeque<(u64, A)>,
}

impl<A> Commits<A> {
    /// Starts at `state`, durable (what a data directory held at start).
    pub(crate) fn new(state: StateId) -> Self {
        let at = Ticket { seq: 0, state };
        Commits {
            appended: at,
            synced: at,
            in_flight: None,
            held: VecDeque::new(),
        }
    }

    /// An entry moving the state to `state` was appended (not durable).
    pub(crate) fn appended(&mut self, state: StateId) {
        self.appended = Ticket {
            seq: self.appended.seq + 1,
            state,
        };
    }

    /// Whether appended entries are not durable yet: replies and
    /// acknowledgements are held meanwhile.
    pub(crate) fn waiting(&self) -> bool {
        self.appended.seq > self.synced.seq
    }

    /// Holds `action` until what is appended now is durable.
    pub(crate) fn hold(&mut self, action: A) {
        self.held.push_back((self.appended.seq, action));
    }

    /// The position a new sync should cover, if one should start: none is
    /// in flight and something appended is not durable.
    pub(crate) fn start(&mut self) -> Option<Ticket> {
        if self.in_flight.is_some() || !self.waiting() {
            return None;
        }
        self.in_flight = Some(self.appended);
        self.in_flight
    }

    /// Whether a sync is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The sync started for `ticket` returned successfully: releases, in
    /// order, what it covers.
    pub(crate) fn finished(&mut self, ticket: Ticket) -> Vec<A> {
        if self.in_flight == Some(ticket) {
            self.in_flight = None;
        }
        self.covered(ticket)
    }

    /// Everything appended is durable (a synchronous sync, a snapshot, or
    /// a policy that does not wait): releases all that is held.
    pub(crate) fn all_durable(&mut self) -> Vec<A> {
        self.covered(self.appended)
    }

    /// The state was replaced whole at `state` (a snapshot received, or
    /// written), durable: everything before it is covered too.
    pub(crate) fn rebased(&mut self, state: StateId) -> Vec<A> {
        self.appended.state = state;
        self.all_durable()
    }

    /// The state the last durable position holds.
    pub(crate) fn durable(&self) -> StateId {
        self.synced.state
    }

    /// Everything up to `ticket` is durable. A position at or below the
    /// durable one (a sync that returns after a snapshot covered more)
    /// changes nothing.
    fn covered(&mut self, ticket: Ticket) -> Vec<A> {
        if ticket.seq > self.synced.seq
            || (ticket.seq == self.synced.seq && ticket == self.appended)
        {
            self.synced = ticket;
        }
        let mut released = Vec::new();
        while let Some((seq, _)) = self.held.front() {
            if *seq > self.synced.seq {
                break;
            }
            if let Some((_, action)) = self.held.pop_front() {
                released.push(action);
            }
        }
        released
    }
}

/// A data directory in use by one runtime.
pub(crate) struct Keeper<R, C> {
    store: Store,
    /// This process: the writer of every meta record from now on.
    local: Member,
    codec: Codec,
    /// What is durable, and what waits for it (rule 1).
    commits: Commits<Action<R, C>>,
    /// Actions a synchronous write released, for the runtime to carry
    /// out next (in order, before anything asked later).
    released: Vec<Action<R, C>>,
    /// The knowledge the meta file holds (rule 2).
    written: Option<PrimaryRecord>,
    /// Members an operator wrote off: kept in every meta record until a
    /// later primary component is known.
    written_off: Vec<(Member, PrimaryEpoch)>,
    since_snapshot: u64,
    snapshot_every: u64,
    /// A snapshot of this replica's own state is being written (rule 3).
    snapshotting: bool,
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
                if !meta.written_off.is_empty() {
                    tracing::warn!(
                        dir = %dir.display(),
                        written_off = ?meta.written_off,
                        "this directory was bootstrapped: the members written off do not count \
                         for the last primary component, and what they applied after this \
                         replica's state is lost unless one of them comes back (see {BOOTSTRAP_LOG})"
                    );
                }
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
                commits: Commits::new(recovered.state().unwrap_or_default()),
                released: Vec::new(),
                since_snapshot: recovered.entries.len() as u64,
                snapshot_every: snapshot_every.max(1),
                snapshotting: false,
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

    /// Writes `known` to the meta file if it differs from what is there;
    /// what was appended before is made durable first (rule 1).
    pub(crate) fn remember(&mut self, known: Option<&PrimaryRecord>) -> Result<(), StoreError> {
        if self.written.as_ref() == known {
            return Ok(());
        }
        self.commit_now()?;
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
        self.commits.appended(entry.after());
        if self.store.sync_policy() != SyncPolicy::Batch {
            // Synced already (`EveryCommand`), or never waited for.
            let released = self.commits.all_durable();
            self.released.extend(released);
        }
        Ok(())
    }

    /// A received snapshot replaces the state (rules 2, 3).
    pub(crate) fn rebase(
        &mut self,
        state: StateId,
        bytes: &[u8],
        known: Option<&PrimaryRecord>,
    ) -> Result<(), StoreError> {
        self.replace_snapshot(state, bytes, known)
    }

    /// Whether this action must wait for a sync (rule 1): a reply, a
    /// read's answer, or an acknowledgement, while appended entries are
    /// not durable.
    pub(crate) fn holds(&self, action: &Action<R, C>) -> bool {
        self.commits.waiting()
            && matches!(
                action,
                Action::Reply { .. }
                    | Action::ReadDone { .. }
                    | Action::Mcast(super::messages::ReplicaMessage::Ack(_))
            )
    }

    /// Keeps `action` until what is appended now is durable.
    pub(crate) fn hold(&mut self, action: Action<R, C>) {
        self.commits.hold(action);
    }

    /// What synchronous writes released since the last call, in order:
    /// the runtime carries them out before anything the core asks later.
    pub(crate) fn take_released(&mut self) -> Vec<Action<R, C>> {
        std::mem::take(&mut self.released)
    }

    /// The state the last sync made durable: an acknowledgement says no
    /// more, and a reply at or below it needs no wait (rule 1).
    pub(crate) fn durable(&self) -> StateId {
        self.commits.durable()
    }

    /// Starts a sync of everything appended, if one is due and none is in
    /// flight: the position it covers and the handle to run off the actor
    /// (rule 1). `Finished` it with [`Self::synced`].
    pub(crate) fn start_sync(&mut self) -> Result<Option<(Ticket, LogSync)>, StoreError> {
        if self.commits.in_flight() || !self.commits.waiting() {
            return Ok(None);
        }
        let handle = self.store.log_sync()?;
        Ok(self.commits.start().map(|ticket| (ticket, handle)))
    }

    /// The sync of `ticket` returned: what it releases, in order.
    pub(crate) fn synced(&mut self, ticket: Ticket) -> Vec<Action<R, C>> {
        self.commits.finished(ticket)
    }

    /// Makes everything appended durable now, on this thread (a meta
    /// write, the last commit when the runtime stops); what it releases
    /// joins [`Self::take_released`].
    pub(crate) fn commit_now(&mut self) -> Result<(), StoreError> {
        if self.commits.waiting() {
            self.store.commit()?;
            let released = self.commits.all_durable();
            self.released.extend(released);
        }
        Ok(())
    }

    /// Whether the log is long enough for a snapshot, and none is being
    /// written (rule 3).
    pub(crate) fn wants_snapshot(&self) -> bool {
        !self.snapshotting && self.since_snapshot >= self.snapshot_every
    }

    /// Begins a snapshot of the state at `state`, the last entry appended
    /// (rule 3): the write to run off the runtime's thread, then
    /// [`Self::snapshot_written`].
    pub(crate) fn begin_snapshot(
        &mut self,
        state: StateId,
        known: Option<&PrimaryRecord>,
    ) -> Result<SnapshotWrite, StoreError> {
        self.cover(state, known)?;
        let write = self.store.begin_snapshot(state)?;
        self.since_snapshot = 0;
        self.snapshotting = true;
        Ok(write)
    }

    /// The snapshot begun last is written (or void): another may begin.
    pub(crate) fn snapshot_written(&mut self) {
        self.snapshotting = false;
    }

    /// Writes `bytes`, a state received from the group, as the snapshot
    /// at `state` (it need not follow the log).
    fn replace_snapshot(
        &mut self,
        state: StateId,
        bytes: &[u8],
        known: Option<&PrimaryRecord>,
    ) -> Result<(), StoreError> {
        self.cover(state, known)?;
        self.store.rebase(state, bytes)?;
        self.since_snapshot = 0;
        // The snapshot is synced (as the policy says), and with it
        // everything appended before; a sync in flight of the log it
        // restarted covers nothing more.
        let released = self.commits.rebased(state);
        self.released.extend(released);
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
    record_bootstrap(dir, state, known.epoch, &written_off)?;
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

/// The file of a data directory where every [`bootstrap`] appends one
/// line: when, from which state, and whom it wrote off. Nothing reads it
/// back; it is the operator's record of what may have been lost.
pub const BOOTSTRAP_LOG: &str = "bootstrap.log";

/// Appends the bootstrap's line to [`BOOTSTRAP_LOG`] and syncs it.
fn record_bootstrap(
    dir: &Path,
    state: StateId,
    epoch: PrimaryEpoch,
    written_off: &[Member],
) -> Result<(), StoreError> {
    use std::io::Write;
    let path = dir.join(BOOTSTRAP_LOG);
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let off: Vec<String> = written_off.iter().map(|m| m.to_string()).collect();
    let line = format!(
        "unix time {since_epoch}: bootstrapped at state {state:?} (applied {}); \
         written off, of the last primary component {epoch}: [{}]; \
         what they applied after this state is lost unless one of them comes back\n",
        state.applied,
        off.join(", ")
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| StoreError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(applied: u64) -> StateId {
        StateId {
            applied,
            genesis: 1,
            ..StateId::default()
        }
    }

    /// Appends the entries up to `applied`, one by one.
    fn append_to(commits: &mut Commits<&'static str>, applied: u64) {
        let from = commits.appended.state.applied;
        for n in from + 1..=applied {
            commits.appended(at(n));
        }
    }

    #[test]
    fn a_reply_never_leaves_before_the_sync_of_its_entry_returns() {
        let mut commits = Commits::new(at(0));
        append_to(&mut commits, 1);
        assert!(commits.waiting());
        commits.hold("reply 1");
        let first = commits.start().expect("a sync is due");
        // The sync is held back: more is appended and asked meanwhile.
        append_to(&mut commits, 3);
        commits.hold("ack 3");
        assert!(commits.start().is_none(), "one sync at a time");
        assert_eq!(commits.durable(), at(0));
        assert_eq!(commits.finished(first), vec!["reply 1"]);
        assert_eq!(
            commits.durable(),
            at(1),
            "the synced state, not the applied"
        );
        assert!(commits.waiting());
        let second = commits
            .start()
            .expect("the next covers what came meanwhile");
        assert_eq!(second.state, at(3));
        assert_eq!(commits.finished(second), vec!["ack 3"]);
        assert!(!commits.waiting());
        assert!(commits.start().is_none(), "nothing left to sync");
    }

    #[test]
    fn held_actions_leave_in_the_order_they_were_asked_for() {
        let mut commits = Commits::new(at(0));
        append_to(&mut commits, 2);
        commits.hold("reply 1");
        commits.hold("reply 2");
        commits.hold("ack 2");
        let sync = commits.start().expect("due");
        append_to(&mut commits, 3);
        commits.hold("reply 3");
        assert_eq!(commits.finished(sync), vec!["reply 1", "reply 2", "ack 2"]);
        let sync = commits.start().expect("due");
        assert_eq!(commits.finished(sync), vec!["reply 3"]);
    }

    #[test]
    fn a_snapshot_during_a_sync_releases_everything_once_and_the_late_sync_nothing() {
        let mut commits = Commits::new(at(0));
        append_to(&mut commits, 1);
        commits.hold("reply 1");
        let stale = commits.start().expect("due");
        append_to(&mut commits, 2);
        commits.hold("reply 2");
        // The snapshot restarts the log while the sync of the old one runs.
        assert_eq!(commits.rebased(at(2)), vec!["reply 1", "reply 2"]);
        assert_eq!(commits.durable(), at(2));
        assert!(commits.start().is_none(), "the old sync is still in flight");
        append_to(&mut commits, 3);
        commits.hold("reply 3");
        assert_eq!(commits.finished(stale), Vec::<&str>::new());
        assert_eq!(commits.durable(), at(2), "the durable mark never goes back");
        let next = commits.start().expect("the new entry is due");
        assert_eq!(commits.finished(next), vec!["reply 3"]);
        assert_eq!(commits.durable(), at(3));
    }

    #[test]
    fn a_received_state_with_no_append_since_the_sync_started_still_moves_the_mark() {
        let mut commits = Commits::new(at(0));
        append_to(&mut commits, 1);
        let stale = commits.start().expect("due");
        let elsewhere = StateId {
            applied: 40,
            genesis: 1,
            epoch: crate::replicated::messages::PrimaryEpoch {
                ring_seq: 1,
                term: 2,
            },
            ..StateId::default()
        };
        assert!(commits.rebased(elsewhere).is_empty());
        assert!(commits.finished(stale).is_empty());
        assert_eq!(commits.durable(), elsewhere);
    }

    #[test]
    fn a_synchronous_sync_releases_what_waits_behind_one_in_flight() {
        let mut commits = Commits::new(at(0));
        append_to(&mut commits, 1);
        commits.hold("ack 1");
        let sync = commits.start().expect("due");
        append_to(&mut commits, 2);
        commits.hold("ack 2");
        // A meta write, or the last commit as the runtime stops.
        assert_eq!(commits.all_durable(), vec!["ack 1", "ack 2"]);
        assert!(!commits.waiting());
        assert!(commits.finished(sync).is_empty());
        assert_eq!(commits.durable(), at(2));
    }

    #[test]
    fn nothing_is_due_before_anything_is_appended() {
        let mut commits: Commits<&str> = Commits::new(at(7));
        assert!(!commits.waiting());
        assert!(commits.start().is_none());
        assert_eq!(commits.durable(), at(7));
    }
}
