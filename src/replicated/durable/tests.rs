use super::*;
use crate::replicated::messages::PrimaryEpoch;
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "acpg-durable-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn epoch(term: u64) -> PrimaryEpoch {
    PrimaryEpoch {
        ring_seq: term,
        term,
    }
}

/// The entries of a history: `n` commands, with a move to a new epoch
/// before every third.
fn history(n: u64) -> Vec<Entry> {
    let mut id = StateId {
        epoch: epoch(1),
        applied: 0,
        chain: 1,
        genesis: 9,
    };
    let mut entries = Vec::new();
    for i in 1..=n {
        if i % 3 == 0 {
            id.epoch = epoch(id.epoch.term + 1);
            entries.push(Entry::Moved { after: id });
        }
        id.applied += 1;
        id.chain = id.chain.wrapping_mul(31).wrapping_add(i);
        entries.push(Entry::Applied {
            from: Member::new(1, 100),
            id: i,
            payload: vec![i as u8; (i % 7) as usize],
            after: id,
        });
    }
    entries
}

fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(dir, SyncPolicy::Batch, LIMIT).expect("opens")
}

#[test]
fn entries_a_snapshot_and_the_meta_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let entries = history(10);
    {
        let (mut store, recovered) = open(&dir.0);
        assert!(recovered.snapshot.is_none() && recovered.entries.is_empty());
        assert_eq!(recovered.state(), None);
        for e in &entries[..6] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        store.snapshot(entries[5].after(), b"state at 6").unwrap();
        for e in &entries[6..] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        store.set_meta(b"last primary").unwrap();
    }
    let (_, recovered) = open(&dir.0);
    assert_eq!(
        recovered.snapshot,
        Some((entries[5].after(), b"state at 6".to_vec()))
    );
    assert_eq!(recovered.entries, entries[6..].to_vec());
    assert_eq!(recovered.meta.as_deref(), Some(&b"last primary"[..]));
    assert_eq!(recovered.dropped_bytes, 0);
    assert_eq!(recovered.state(), Some(entries.last().unwrap().after()));
}

#[test]
fn a_record_cut_short_is_dropped_and_appends_follow_the_valid_prefix() {
    let dir = TempDir::new("torn");
    let entries = history(4);
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
    }
    let log = dir.0.join("log");
    let len = fs::metadata(&log).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (mut store, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, entries[..entries.len() - 1].to_vec());
    assert!(recovered.dropped_bytes > 0);
    // The dropped entry is written again after the valid prefix.
    store.append(entries.last().unwrap()).unwrap();
    store.commit().unwrap();
    drop(store);
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, entries);
    assert_eq!(recovered.dropped_bytes, 0);
}

#[test]
fn a_flipped_bit_ends_the_log_at_the_record_before_it() {
    let dir = TempDir::new("flip");
    let entries = history(5);
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
    }
    let log = dir.0.join("log");
    let mut bytes = fs::read(&log).unwrap();
    // Inside the third record's body.
    let mut at = LOG_MAGIC.len();
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += RECORD_HEAD + len;
    }
    bytes[at + RECORD_HEAD] ^= 0x40;
    fs::write(&log, &bytes).unwrap();
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, entries[..2].to_vec());
    assert!(recovered.dropped_bytes > 0);
}

#[test]
fn a_crash_between_a_snapshot_and_the_log_truncation_skips_the_old_entries() {
    let dir = TempDir::new("snapcrash");
    let entries = history(4);
    let log = dir.0.join("log");
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        let before = fs::read(&log).unwrap();
        store
            .snapshot(entries.last().unwrap().after(), b"s")
            .unwrap();
        // As if the process died after the rename, before the truncation.
        fs::write(&log, before).unwrap();
    }
    let (mut store, recovered) = open(&dir.0);
    assert_eq!(
        recovered.snapshot.as_ref().unwrap().0,
        entries.last().unwrap().after()
    );
    assert!(recovered.entries.is_empty());
    assert_eq!(recovered.dropped_bytes, 0);
    // And the history goes on from the snapshot.
    let next = history(6);
    for e in &next[entries.len()..] {
        store.append(e).unwrap();
    }
    store.commit().unwrap();
    drop(store);
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, next[entries.len()..].to_vec());
}

#[test]
fn a_damaged_snapshot_or_meta_is_an_error_not_a_guess() {
    for name in ["snapshot", "meta"] {
        let dir = TempDir::new("damaged");
        {
            let (mut store, _) = open(&dir.0);
            store.snapshot(StateId::default(), b"whole").unwrap();
            store.set_meta(b"meta").unwrap();
        }
        let path = dir.0.join(name);
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        fs::write(&path, bytes).unwrap();
        match Store::open(&dir.0, SyncPolicy::Batch, LIMIT) {
            Err(StoreError::Damaged { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{name}: {:?}", other.map(|(_, r)| r)),
        }
    }
}

#[test]
fn an_entry_that_does_not_follow_the_last_is_refused_and_nothing_is_written() {
    let dir = TempDir::new("follow");
    let entries = history(3);
    let (mut store, _) = open(&dir.0);
    store.append(&entries[0]).unwrap();
    // Skips one.
    assert!(store.append(&entries[2]).is_err());
    // Goes back.
    assert!(store.append(&entries[0]).is_err());
    store.commit().unwrap();
    drop(store);
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, entries[..1].to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever byte a crash cuts the log at, and whenever the snapshots
    /// were taken, recovery gives a prefix of the history, and every entry
    /// written whole before the cut.
    #[test]
    fn recovery_after_a_cut_anywhere_is_the_prefix_written_whole(
        n in 1u64..40,
        snapshot_every in 0usize..12,
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = TempDir::new("prop");
        let entries = history(n);
        let log = dir.0.join("log");
        let mut snapshot_at: Option<usize> = None;
        // The log length after each entry (since the last snapshot).
        let mut ends = Vec::new();
        {
            let (mut store, _) = open(&dir.0);
            for (i, e) in entries.iter().enumerate() {
                store.append(e).unwrap();
                store.commit().unwrap();
                ends.push((i, fs::metadata(&log).unwrap().len()));
                if snapshot_every > 0 && (i + 1) % snapshot_every == 0 {
                    store.snapshot(e.after(), &[i as u8]).unwrap();
                    snapshot_at = Some(i);
                    ends.clear();
                }
            }
        }
        let len = fs::metadata(&log).unwrap().len();
        let at = LOG_MAGIC.len() as u64 + cut.index((len - LOG_MAGIC.len() as u64 + 1) as usize) as u64;
        OpenOptions::new().write(true).open(&log).unwrap().set_len(at).unwrap();
        let (_, recovered) = open(&dir.0);
        let from = snapshot_at.map_or(0, |i| i + 1);
        let whole = ends.iter().filter(|(_, end)| *end <= at).count();
        prop_assert_eq!(
            recovered.snapshot.as_ref().map(|(id, _)| *id),
            snapshot_at.map(|i| entries[i].after())
        );
        prop_assert_eq!(&recovered.entries[..], &entries[from..from + whole]);
        prop_assert_eq!(recovered.dropped_bytes, at - ends.iter().filter(|(_, end)| *end <= at).map(|(_, e)| *e).max().unwrap_or(LOG_MAGIC.len() as u64));
    }
}

/// An applied entry as logs written before its payload was coded as
/// bytes laid it out.
#[derive(Serialize)]
enum SeqEntry {
    Applied {
        from: Member,
        id: u64,
        payload: Vec<u8>,
        after: StateId,
    },
}

#[test]
fn a_payload_coded_as_bytes_keeps_the_log_records_of_a_sequence() {
    let codec = Codec::new(1 << 20);
    let after = history(1)[0].after();
    let payload: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let now = Entry::Applied {
        from: Member::new(1, 2),
        id: 3,
        payload: payload.clone(),
        after,
    };
    let before = SeqEntry::Applied {
        from: Member::new(1, 2),
        id: 3,
        payload,
        after,
    };
    let bytes = codec.encode_payload(&now).expect("encodes");
    assert_eq!(bytes, codec.encode_payload(&before).expect("encodes"));
    assert_eq!(codec.decode_payload::<Entry>(&bytes), Ok(now));
}

#[test]
fn a_snapshot_written_off_the_appending_thread_keeps_what_was_appended_meanwhile() {
    let dir = TempDir::new("offthread");
    let entries = history(9);
    let at = entries[4].after();
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries[..5] {
            store.append(e).unwrap();
        }
        let write = store.begin_snapshot(at).unwrap();
        assert_eq!(write.state(), at);
        // Appends go on while the snapshot is written elsewhere.
        for e in &entries[5..] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        let writer = std::thread::spawn(move || write.run(b"state at 5"));
        assert!(writer.join().unwrap().unwrap(), "nothing replaced it");
    }
    assert!(!dir.0.join(PREV_LOG).exists(), "the old log is removed");
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.snapshot, Some((at, b"state at 5".to_vec())));
    assert_eq!(recovered.entries, entries[5..].to_vec());
    assert_eq!(recovered.dropped_bytes, 0);
}

#[test]
fn a_crash_while_a_snapshot_is_written_recovers_both_logs_as_one() {
    let dir = TempDir::new("rolledcrash");
    let entries = history(9);
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries[..5] {
            store.append(e).unwrap();
        }
        // The process dies before the write runs.
        let _never_run = store.begin_snapshot(entries[4].after()).unwrap();
        for e in &entries[5..] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
    }
    assert!(dir.0.join(PREV_LOG).exists());
    let next = history(12);
    {
        let (mut store, recovered) = open(&dir.0);
        assert!(recovered.snapshot.is_none());
        assert_eq!(recovered.entries, entries);
        assert!(!dir.0.join(PREV_LOG).exists(), "one log again");
        for e in &next[entries.len()..] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
    }
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.entries, next);
}

#[test]
fn a_crash_after_the_snapshot_before_the_old_log_is_removed_skips_what_it_covers() {
    let dir = TempDir::new("rolledsnap");
    let entries = history(9);
    let at = entries[4].after();
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries[..5] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        let prev = dir.0.join(PREV_LOG);
        let write = store.begin_snapshot(at).unwrap();
        let old = fs::read(&prev).unwrap();
        for e in &entries[5..] {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        assert!(write.run(b"s").unwrap());
        // As if the process died before the old log's removal.
        fs::write(&prev, old).unwrap();
    }
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.snapshot.as_ref().map(|(id, _)| *id), Some(at));
    assert_eq!(recovered.entries, entries[5..].to_vec());
}

#[test]
fn a_received_state_voids_a_snapshot_still_being_written() {
    let dir = TempDir::new("voided");
    let entries = history(5);
    let received = StateId {
        epoch: epoch(40),
        applied: 77,
        chain: 3,
        genesis: 9,
    };
    {
        let (mut store, _) = open(&dir.0);
        for e in &entries {
            store.append(e).unwrap();
        }
        let write = store
            .begin_snapshot(entries.last().unwrap().after())
            .unwrap();
        store.rebase(received, b"received").unwrap();
        assert!(!write.run(b"own").unwrap(), "void: a later state won");
    }
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.snapshot, Some((received, b"received".to_vec())));
    assert!(recovered.entries.is_empty());
}

#[test]
fn a_snapshot_still_being_written_when_the_store_closes_writes_nothing() {
    let dir = TempDir::new("closedwrite");
    let entries = history(5);
    let write = {
        let (mut store, _) = open(&dir.0);
        for e in &entries {
            store.append(e).unwrap();
        }
        store.commit().unwrap();
        store
            .begin_snapshot(entries.last().unwrap().after())
            .unwrap()
    };
    assert!(!write.run(b"late").unwrap());
    let (_, recovered) = open(&dir.0);
    assert!(recovered.snapshot.is_none());
    assert_eq!(recovered.entries, entries);
}
