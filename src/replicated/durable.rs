//! A replica's data directory: what it applied, kept across restarts.
//!
//! ```text
//!   data dir/
//!     snapshot   "ACPGSNP" 1 | state id | len u64 | bytes | digest(all before) 32
//!     log        "ACPGLOG" 1 | record*
//!                   record := len u32 | digest(body)[..8] | body = bincode(Entry)
//!     meta       "ACPGMET" 1 | len u64 | bytes | digest(all before) 32
//! ```
//!
//! The store keeps three things, each with one rule:
//!
//! 1. **The log** holds every change of the state's id after the
//!    snapshot's, in order: each command applied (with its sender, id and
//!    payload, so it can be applied again) and each move to a new primary
//!    epoch. Appends are written at once; [`Store::commit`] makes them
//!    durable according to the [`SyncPolicy`] before the runtime
//!    acknowledges them to callers, or a [`LogSync`] does on another
//!    thread while appends go on (group commit as a pipeline): it syncs
//!    whatever was appended by the time it runs.
//! 2. **The snapshot** is a whole state at one id, replaced atomically
//!    (written beside, synced, renamed over, directory synced). A replica's
//!    own snapshot is written off the thread that appends
//!    ([`Store::begin_snapshot`]): the log ends at the snapshot's state and
//!    is renamed aside (`log.prev`), a new `log` takes what follows, and
//!    once the snapshot is durable the old log is removed. Recovery reads
//!    the snapshot, then `log.prev` if it is still there, then `log`,
//!    skipping entries at or below the snapshot (a crash at any step
//!    leaves either the old snapshot with both logs, or the new one with
//!    entries it covers), and makes them one log again before anything is
//!    appended. A state received from the group replaces the snapshot on
//!    the appending thread and restarts the log empty; a snapshot of the
//!    replica's own still being written is then void (a lock and a
//!    generation decide which comes last), and so is one still being
//!    written when the store closes.
//! 3. **The meta** is a small opaque record the replica keeps beside its
//!    state (the last primary component it knew), replaced atomically.
//!
//! **Recovery reads the longest valid prefix.** A record that is cut short
//! (the process died mid-write), whose digest does not match (a torn or
//! corrupted sector) or that does not follow from the one before (a gap,
//! a state id that goes back) ends the log there: recovery keeps what came
//! before, truncates the rest, and says how many bytes it dropped. A
//! snapshot or meta file that does not verify is an error: they are
//! written whole or not at all, so a bad one is damage, not a crash, and
//! guessing would risk presenting a wrong state as durable.
//!
//! Plain files, not an embedded database: the log is append-only and read
//! once at start, the snapshot is one blob, and the sync policy must map
//! one-to-one onto `fsync` calls (group commit is one `fsync` per batch of
//! delivered commands). A B-tree store (redb, fjall) would add a second log
//! and its own sync schedule under ours for no query we make.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::messages::StateId;
use crate::transport::Member;
use crate::wire::Codec;

const LOG_MAGIC: &[u8; 8] = b"ACPGLOG\x01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"ACPGSNP\x01";
const META_MAGIC: &[u8; 8] = b"ACPGMET\x01";
/// The log a snapshot under way ended (rule 2).
const PREV_LOG: &str = "log.prev";
/// Bytes before a record's body: its length and the first 8 bytes of its
/// digest.
const RECORD_HEAD: usize = 4 + 8;

/// When appended entries reach the disk (`fsync`), relative to the replies
/// they release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// One `fsync` per command, before its reply: nothing acknowledged is
    /// ever lost to a crash of the machine.
    EveryCommand,
    /// One `fsync` per batch of commands delivered together, before any of
    /// their replies (group commit): the same guarantee, fewer syncs.
    #[default]
    Batch,
    /// Never `fsync`: written to the operating system, which loses what
    /// it had not written back if the machine (not the process) dies.
    Never,
}

/// One change of the state's id, in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Entry {
    /// A command was applied; `after` is the state's id once it was.
    Applied {
        /// Who sent it.
        from: Member,
        /// Its id among its sender's commands.
        id: u64,
        /// The command as it was delivered; one block of bytes, which
        /// bincode lays out as it did a sequence of `u8`.
        #[serde(with = "crate::wire::bytes")]
        payload: Vec<u8>,
        /// The state's id after it.
        after: StateId,
    },
    /// The state joined a new primary component without a command.
    Moved {
        /// The state's id after the move.
        after: StateId,
    },
}

impl Entry {
    /// The state's id after this entry.
    pub(crate) fn after(&self) -> StateId {
        match self {
            Entry::Applied { after, .. } | Entry::Moved { after } => *after,
        }
    }

    /// Whether this entry can follow a state whose id is `before`.
    fn follows(&self, before: StateId) -> bool {
        let after = self.after();
        match self {
            Entry::Applied { .. } => {
                after.applied == before.applied + 1
                    && after.epoch >= before.epoch
                    && after.genesis == before.genesis
            }
            Entry::Moved { .. } => after.applied == before.applied && after.epoch > before.epoch,
        }
    }
}

/// What a data directory held when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The latest durable snapshot: its state's id and bytes.
    pub snapshot: Option<(StateId, Vec<u8>)>,
    /// The log entries after the snapshot, in order.
    pub entries: Vec<Entry>,
    /// The meta record.
    pub meta: Option<Vec<u8>>,
    /// Bytes at the end of the log that did not form valid entries (a
    /// write cut short by a crash, or damage), dropped.
    pub dropped_bytes: u64,
}

impl Recovered {
    /// The id of the state these hold: the last entry's, else the
    /// snapshot's.
    pub(crate) fn state(&self) -> Option<StateId> {
        self.entries
            .last()
            .map(Entry::after)
            .or(self.snapshot.as_ref().map(|(id, _)| *id))
    }
}

/// Why a data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed; what was durable before still is.
    #[error("data directory {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A snapshot or meta file does not verify: it was written whole or
    /// not at all, so this is damage. Nothing was changed; the directory
    /// needs an operator.
    #[error("data directory {path}: {what}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// Another replica (in this process or another) holds the directory.
    /// Nothing was read or changed.
    #[error("data directory {path}: held by another replica")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// An entry could not be encoded (larger than the store's limit).
    /// Nothing was written.
    #[error("entry not encoded: {0}")]
    Encode(String),
}

/// Syncs a data directory's log off the thread that appends to it
/// ([`Store::log_sync`]).
#[derive(Debug)]
pub(crate) struct LogSync {
    /// The log, and a log a snapshot under way ended, if not synced yet.
    files: Vec<(File, PathBuf)>,
    /// The directory, when the log was started afresh since.
    dir: Option<PathBuf>,
}

impl LogSync {
    /// Makes every entry appended before this call durable (`fdatasync`).
    pub(crate) fn run(self) -> Result<(), StoreError> {
        for (file, path) in &self.files {
            file.sync_data().map_err(io_error(path))?;
        }
        match &self.dir {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// A snapshot of the store's own state, written off the thread that
/// appends ([`Store::begin_snapshot`], rule 2).
#[derive(Debug)]
pub(crate) struct SnapshotWrite {
    dir: PathBuf,
    id: StateId,
    codec: Codec,
    sync: bool,
    /// Bumped by every snapshot the store writes itself: a write begun
    /// before one is void.
    generation: u64,
    snapshots: Arc<Mutex<u64>>,
}

impl SnapshotWrite {
    /// The state this snapshot holds.
    #[cfg(test)]
    pub(crate) fn state(&self) -> StateId {
        self.id
    }

    /// Writes `bytes` (the whole state at [`Self::state`]) as the snapshot,
    /// then drops the log it ends. Returns false, writing nothing, if a
    /// state received since replaced the snapshot.
    pub(crate) fn run(self, bytes: &[u8]) -> Result<bool, StoreError> {
        let body = snapshot_body(&self.codec, self.id, bytes)?;
        // A poisoned lock only means a write panicked: the generation is
        // still right.
        let generation = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if *generation != self.generation {
            return Ok(false);
        }
        write_blob(&self.dir, "snapshot", SNAPSHOT_MAGIC, &body, self.sync)?;
        // Entries at or below the snapshot are not needed; a crash before
        // this leaves them to recovery, which skips them.
        let prev = self.dir.join(PREV_LOG);
        match fs::remove_file(&prev) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&prev)(e)),
        }
        Ok(true)
    }
}

/// An open data directory.
pub(crate) struct Store {
    dir: PathBuf,
    /// Holds the directory's lock for as long as the store lives.
    _lock: File,
    log: File,
    sync: SyncPolicy,
    codec: Codec,
    /// Appended since the last commit, not yet synced.
    unsynced: bool,
    /// The id of the last entry appended (or of the snapshot).
    last: Option<StateId>,
    scratch: Vec<u8>,
    /// The log a snapshot under way ended, while it holds entries not
    /// synced yet.
    rolled: Vec<(File, PathBuf)>,
    /// The log was started afresh under a new name since the last sync.
    dir_unsynced: bool,
    /// The generation of snapshots written: a snapshot under way checks
    /// it, holding the lock, before it replaces the file.
    snapshots: Arc<Mutex<u64>>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn damaged(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_owned(),
        what: what.into(),
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

impl Store {
    /// Opens (creating if needed) the data directory `dir` and recovers
    /// what it holds. Entries and snapshots up to `limit` bytes are read.
    pub(crate) fn open(
        dir: &Path,
        sync: SyncPolicy,
        limit: usize,
    ) -> Result<(Store, Recovered), StoreError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock(dir)?;
        let codec = Codec::new(limit);
        let snapshot = read_blob(&dir.join("snapshot"), SNAPSHOT_MAGIC, limit)?
            .map(|bytes| split_snapshot(&dir.join("snapshot"), &bytes, &codec))
            .transpose()?;
        let meta = read_blob(&dir.join("meta"), META_MAGIC, limit)?
            .map(|body| split_meta(&dir.join("meta"), body))
            .transpose()?;
        let log_path = dir.join("log");
        let prev_path = dir.join(PREV_LOG);
        let base = snapshot.as_ref().map(|(id, _)| *id);
        let rolled = prev_path.exists();
        // Rule 2: a snapshot was being written when the process stopped;
        // the log it was to end precedes the current one.
        let (mut entries, _, mut dropped_bytes) = if rolled {
            read_log(&prev_path, &codec, limit, base, base)?
        } else {
            (Vec::new(), 0, 0)
        };
        let after = entries.last().map(Entry::after).or(base);
        let (tail, mut valid_len, dropped) = read_log(&log_path, &codec, limit, base, after)?;
        entries.extend(tail);
        dropped_bytes += dropped;
        if rolled {
            // One log again, before anything is appended.
            valid_len = rewrite_log(dir, &codec, &entries)?;
            fs::remove_file(&prev_path).map_err(io_error(&prev_path))?;
            sync_dir(dir)?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        if valid_len == 0 {
            log.set_len(0).map_err(io_error(&log_path))?;
            log.write_all(LOG_MAGIC).map_err(io_error(&log_path))?;
            log.sync_all().map_err(io_error(&log_path))?;
            sync_dir(dir)?;
        } else if dropped_bytes > 0 && !rolled {
            log.set_len(valid_len).map_err(io_error(&log_path))?;
            log.sync_all().map_err(io_error(&log_path))?;
        }
        // Appends go after the valid prefix.
        use std::io::Seek;
        log.seek(io::SeekFrom::End(0))
            .map_err(io_error(&log_path))?;
        let recovered = Recovered {
            snapshot,
            entries,
            meta,
            dropped_bytes,
        };
        let store = Store {
            dir: dir.to_owned(),
            _lock: lock,
            log,
            sync,
            codec,
            unsynced: false,
            last: recovered.state(),
            scratch: Vec::new(),
            rolled: Vec::new(),
            dir_unsynced: false,
            snapshots: Arc::new(Mutex::new(0)),
        };
        Ok((store, recovered))
    }

    /// Appends `entry`, which must follow the last one (a runtime that
    /// breaks this has a bug: refused, nothing written). Under
    /// [`SyncPolicy::EveryCommand`] it is durable when this returns.
    pub(crate) fn append(&mut self, entry: &Entry) -> Result<(), StoreError> {
        if let Some(last) = self.last {
            if !entry.follows(last) {
                return Err(StoreError::Encode(format!(
                    "entry to {} does not follow {}",
                    entry.after().applied,
                    last.applied
                )));
            }
        }
        self.scratch.clear();
        encode_record(&self.codec, entry, &mut self.scratch)?;
        let path = self.dir.join("log");
        self.log.write_all(&self.scratch).map_err(io_error(&path))?;
        self.last = Some(entry.after());
        self.unsynced = true;
        if self.sync == SyncPolicy::EveryCommand {
            self.sync_log()?;
        }
        Ok(())
    }

    /// A handle that syncs what is appended to the log by the time it runs,
    /// on any thread (rule 1: the runtime's pipelined group commit). It
    /// stays valid after the log restarts: it then syncs a file whose
    /// entries a durable snapshot already covers.
    pub(crate) fn log_sync(&mut self) -> Result<LogSync, StoreError> {
        let path = self.dir.join("log");
        let file = self.log.try_clone().map_err(io_error(&path))?;
        // A log ended by a snapshot under way holds entries the snapshot
        // does not cover yet; and the new log's name must be durable too.
        let mut files = std::mem::take(&mut self.rolled);
        files.push((file, path));
        let dir = std::mem::take(&mut self.dir_unsynced).then(|| self.dir.clone());
        Ok(LogSync { files, dir })
    }

    /// Makes what was appended durable as the policy says; call it before
    /// releasing the replies of the entries appended since the last call.
    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        if self.unsynced && self.sync == SyncPolicy::Batch {
            self.sync_log()?;
        }
        self.unsynced = self.unsynced && self.sync == SyncPolicy::Never;
        Ok(())
    }

    fn sync_log(&mut self) -> Result<(), StoreError> {
        self.log_sync()?.run()?;
        self.unsynced = false;
        Ok(())
    }

    /// The sync policy this store applies.
    pub(crate) fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Begins a snapshot of the state at `id` (which must be the last
    /// entry's id): the log ends here, renamed aside, and a new one starts
    /// for what follows; the returned write, run on any thread, replaces
    /// the snapshot and drops the old log (rule 2). One at a time: a
    /// runtime that begins a second before the first returned has a bug.
    pub(crate) fn begin_snapshot(&mut self, id: StateId) -> Result<SnapshotWrite, StoreError> {
        if self.last.is_some_and(|last| last != id) {
            return Err(StoreError::Encode(format!(
                "snapshot at {} while the log is at {}",
                id.applied,
                self.last.map_or(0, |l| l.applied)
            )));
        }
        let prev = self.dir.join(PREV_LOG);
        if prev.exists() {
            return Err(StoreError::Encode("a snapshot is already under way".into()));
        }
        let path = self.dir.join("log");
        fs::rename(&path, &prev).map_err(io_error(&path))?;
        let mut log = File::create(&path).map_err(io_error(&path))?;
        log.write_all(LOG_MAGIC).map_err(io_error(&path))?;
        let old = std::mem::replace(&mut self.log, log);
        if self.unsynced && self.syncs() {
            self.rolled.push((old, prev));
        }
        self.dir_unsynced = self.syncs();
        let generation = *self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(SnapshotWrite {
            dir: self.dir.clone(),
            id,
            codec: self.codec,
            sync: self.syncs(),
            generation,
            snapshots: self.snapshots.clone(),
        })
    }

    /// Replaces the snapshot with `bytes`, the whole state at `id` (which
    /// must be the last entry's id), then starts the log afresh, on this
    /// thread.
    #[cfg(test)]
    pub(crate) fn snapshot(&mut self, id: StateId, bytes: &[u8]) -> Result<(), StoreError> {
        if self.last.is_some_and(|last| last != id) {
            return Err(StoreError::Encode(format!(
                "snapshot at {} while the log is at {}",
                id.applied,
                self.last.map_or(0, |l| l.applied)
            )));
        }
        self.rebase(id, bytes)
    }

    /// Replaces the snapshot with `bytes`, a whole state at `id` that need
    /// not follow the log (a state received from the group), then starts
    /// the log afresh. A snapshot under way is void.
    pub(crate) fn rebase(&mut self, id: StateId, bytes: &[u8]) -> Result<(), StoreError> {
        let body = snapshot_body(&self.codec, id, bytes)?;
        let snapshots = self.snapshots.clone();
        // Waits for a snapshot being written (rare: a state received
        // while the replica wrote its own), which then finds itself void.
        let mut generation = snapshots.lock().unwrap_or_else(|e| e.into_inner());
        *generation += 1;
        write_blob(&self.dir, "snapshot", SNAPSHOT_MAGIC, &body, self.syncs())?;
        // The snapshot is durable: the log before it is not needed. A crash
        // before this truncation leaves entries at or below the snapshot,
        // which recovery skips.
        let prev = self.dir.join(PREV_LOG);
        match fs::remove_file(&prev) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&prev)(e)),
        }
        self.rolled.clear();
        let path = self.dir.join("log");
        self.log
            .set_len(LOG_MAGIC.len() as u64)
            .map_err(io_error(&path))?;
        use std::io::Seek;
        self.log
            .seek(io::SeekFrom::End(0))
            .map_err(io_error(&path))?;
        if self.syncs() {
            self.log.sync_all().map_err(io_error(&path))?;
            if std::mem::take(&mut self.dir_unsynced) {
                sync_dir(&self.dir)?;
            }
        }
        self.last = Some(id);
        self.unsynced = false;
        Ok(())
    }

    /// Replaces the meta record.
    pub(crate) fn set_meta(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut body = Vec::with_capacity(8 + bytes.len());
        body.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        body.extend_from_slice(bytes);
        write_blob(&self.dir, "meta", META_MAGIC, &body, self.syncs())
    }

    /// Whether this store calls `fsync` at all ([`SyncPolicy::Never`]
    /// does not: snapshots and meta are still replaced atomically).
    fn syncs(&self) -> bool {
        self.sync != SyncPolicy::Never
    }
}

/// The body of a snapshot file: the state's id, the length, the bytes.
fn snapshot_body(codec: &Codec, id: StateId, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let head = codec
        .encode_payload(&id)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut body = Vec::with_capacity(head.len() + 8 + bytes.len());
    body.extend_from_slice(&head);
    body.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    body.extend_from_slice(bytes);
    Ok(body)
}

/// Appends the record of `entry` to `out`.
fn encode_record(codec: &Codec, entry: &Entry, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let body = codec
        .encode_payload(entry)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|e| StoreError::Encode(e.to_string()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&digest(&body)[..8]);
    out.extend_from_slice(&body);
    Ok(())
}

/// Replaces the log of `dir` with one holding `entries`, durably; returns
/// its length.
fn rewrite_log(dir: &Path, codec: &Codec, entries: &[Entry]) -> Result<u64, StoreError> {
    let mut all = LOG_MAGIC.to_vec();
    for entry in entries {
        encode_record(codec, entry, &mut all)?;
    }
    let tmp = dir.join("log.tmp");
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&all).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    let path = dir.join("log");
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    Ok(all.len() as u64)
}

impl Drop for Store {
    /// A snapshot still being written is void: the directory may belong to
    /// another replica as soon as this store is gone.
    fn drop(&mut self) {
        *self.snapshots.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
}

/// Takes the exclusive lock of `dir` (the file `lock` in it): one store
/// per directory at a time, released by the kernel when the process dies.
fn lock(dir: &Path) -> Result<File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: `flock` only reads the descriptor, which `file` owns and
    // keeps open for this call; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = io::Error::last_os_error();
        if source.kind() == io::ErrorKind::WouldBlock {
            return Err(StoreError::Busy { path });
        }
        return Err(StoreError::Io { path, source });
    }
    Ok(file)
}

/// Writes `magic | body | digest` to `dir/name` atomically.
/// With `sync` it is durable on return; without, the rename still makes
/// it whole or absent to any reader, but a machine crash may lose it.
fn write_blob(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    body: &[u8],
    sync: bool,
) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut all = Vec::with_capacity(magic.len() + body.len() + 32);
    all.extend_from_slice(magic);
    all.extend_from_slice(body);
    let sum = digest(&all);
    all.extend_from_slice(&sum);
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&all).map_err(io_error(&tmp))?;
    if sync {
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The body of `path` (between its magic and its digest), if it exists.
fn read_blob(path: &Path, magic: &[u8; 8], limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let len = file.metadata().map_err(io_error(path))?.len();
    if len > (limit as u64).saturating_add(128) {
        return Err(damaged(
            path,
            format!("{len} bytes, past the limit of {limit}"),
        ));
    }
    let mut all = Vec::with_capacity(len as usize);
    file.read_to_end(&mut all).map_err(io_error(path))?;
    if all.len() < magic.len() + 32 || !all.starts_with(magic) {
        return Err(damaged(path, "not a file of this format and version"));
    }
    let (content, sum) = all.split_at(all.len() - 32);
    if digest(content) != sum {
        return Err(damaged(path, "digest does not match"));
    }
    Ok(Some(content[magic.len()..].to_vec()))
}

fn split_snapshot(
    path: &Path,
    body: &[u8],
    codec: &Codec,
) -> Result<(StateId, Vec<u8>), StoreError> {
    // A state id is fixed-size in fixint bincode.
    let id_len = codec
        .encode_payload(&StateId::default())
        .map_err(|e| StoreError::Encode(e.to_string()))?
        .len();
    if body.len() < id_len + 8 {
        return Err(damaged(path, "shorter than its head"));
    }
    let id: StateId = codec
        .decode_payload(&body[..id_len])
        .map_err(|e| damaged(path, e.to_string()))?;
    let len = u64::from_le_bytes(body[id_len..id_len + 8].try_into().expect("8 bytes"));
    let bytes = &body[id_len + 8..];
    if len != bytes.len() as u64 {
        return Err(damaged(path, "length does not match"));
    }
    Ok((id, bytes.to_vec()))
}

fn split_meta(path: &Path, body: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let Some((len, bytes)) = body.split_first_chunk::<8>() else {
        return Err(damaged(path, "shorter than its head"));
    };
    if u64::from_le_bytes(*len) != bytes.len() as u64 {
        return Err(damaged(path, "length does not match"));
    }
    Ok(bytes.to_vec())
}

/// The valid entries of the log at `path` after `base` (the snapshot),
/// the first following `after` (the state before this file), the length
/// of the valid prefix (0: no valid header), and the bytes past it.
fn read_log(
    path: &Path,
    codec: &Codec,
    limit: usize,
    base: Option<StateId>,
    after: Option<StateId>,
) -> Result<(Vec<Entry>, u64, u64), StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(io_error(path)(e)),
    };
    let total = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic != LOG_MAGIC {
        return Ok((Vec::new(), 0, total));
    }
    let mut valid = LOG_MAGIC.len() as u64;
    let mut entries = Vec::new();
    let mut last = after;
    let mut head = [0u8; RECORD_HEAD];
    let mut body = Vec::new();
    loop {
        if reader.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > limit || valid + (RECORD_HEAD + len) as u64 > total {
            break;
        }
        body.resize(len, 0);
        if reader.read_exact(&mut body).is_err() || digest(&body)[..8] != head[4..] {
            break;
        }
        let Ok(entry) = codec.decode_payload::<Entry>(&body) else {
            break;
        };
        let at_or_below_base = base.is_some_and(|b| entry.after() <= b);
        if !at_or_below_base {
            if last.is_some_and(|l| !entry.follows(l)) {
                break;
            }
            last = Some(entry.after());
            entries.push(entry);
        }
        valid += (RECORD_HEAD + len) as u64;
    }
    Ok((entries, valid, total - valid))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests;
