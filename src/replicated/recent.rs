//! The commands a replica applied lately, so that a transfer can send a
//! receiver only what it lacks (protocol version
//! [`super::messages::SUFFIX_VERSION`] on).
//!
//! A state id names a history: `applied` commands whose ids hash to
//! `chain` since the founding `genesis`. A receiver whose id matches a
//! point this replica passed — the start of what it keeps, or the id after
//! one of the commands it keeps — holds a prefix of this replica's state,
//! and the commands after that point take it to this replica's state. Its
//! epoch does not matter: an epoch moves with the primary components, not
//! with the commands.
//!
//! Rules:
//!
//! 1. **Bounded.** At most `cap` bytes are kept, each command counted as
//!    its payload plus [`ENTRY_COST`] (so empty commands cannot grow the
//!    run without bound); the oldest go first. `cap == 0` keeps nothing.
//! 2. **Continuous.** Every kept command follows the one before it; the
//!    kept run starts at `base`, the id before its first command. Anything
//!    that replaces the state without commands (a snapshot restored, a
//!    state dropped) starts the run afresh at the new state.
//! 3. **All or nothing.** A suffix is offered only if every receiver holds
//!    a prefix within the run; it starts at the lowest receiver's point, so
//!    each receiver skips what it already applied.

use std::collections::VecDeque;

use super::messages::{StateId, SuffixEntry};

/// What one kept command costs beyond its payload (its sender, id and
/// state id, and the queue's slot), counted against the cap.
pub(crate) const ENTRY_COST: usize = 96;

/// The run of commands applied since `base`, bounded (rule 1).
#[derive(Debug)]
pub(crate) struct Recent {
    base: StateId,
    entries: VecDeque<SuffixEntry>,
    bytes: usize,
    cap: usize,
}

impl Recent {
    /// Keeps at most `cap` bytes of payloads.
    pub(crate) fn new(cap: usize) -> Recent {
        Recent {
            base: StateId::default(),
            entries: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    /// Bytes of payloads it keeps at most.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The state was replaced without commands: the run starts afresh at
    /// `at` (rule 2).
    pub(crate) fn reset(&mut self, at: StateId) {
        self.base = at;
        self.entries.clear();
        self.bytes = 0;
    }

    /// A command was applied. An entry that does not follow the last one
    /// (rule 2) starts the run afresh after it.
    pub(crate) fn push(&mut self, entry: SuffixEntry) {
        if self.cap == 0 {
            self.base = entry.after;
            return;
        }
        let last = self.entries.back().map_or(self.base, |e| e.after);
        let follows =
            entry.after.genesis == last.genesis && entry.after.applied == last.applied + 1;
        if !follows {
            self.reset(entry.after);
            return;
        }
        self.bytes += cost(&entry);
        self.entries.push_back(entry);
        while self.bytes > self.cap {
            let Some(first) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= cost(&first);
            self.base = first.after;
        }
    }

    /// Where `id` is in the run (its history is a prefix of the run's
    /// head): how many kept commands it applied.
    fn passed(&self, id: &StateId) -> Option<usize> {
        let same = |a: &StateId| same_history(a, id);
        if same(&self.base) {
            return Some(0);
        }
        let first = self.base.applied.checked_add(1)?;
        let index = usize::try_from(id.applied.checked_sub(first)?).ok()?;
        self.entries
            .get(index)
            .filter(|e| same(&e.after))
            .map(|_| index + 1)
    }

    /// The commands that take every one of `receivers` to `head` (rule
    /// 3), or `None` if the run does not end at `head` or one of them holds
    /// no prefix within it.
    pub(crate) fn suffix_for(
        &self,
        head: &StateId,
        receivers: impl IntoIterator<Item = StateId>,
    ) -> Option<Vec<SuffixEntry>> {
        let last = self.entries.back().map_or(&self.base, |e| &e.after);
        if !same_history(last, head) {
            return None;
        }
        let mut from = None::<usize>;
        for r in receivers {
            let at = self.passed(&r)?;
            from = Some(from.map_or(at, |f| f.min(at)));
        }
        let from = from?;
        Some(self.entries.iter().skip(from).cloned().collect())
    }
}

/// What a kept command counts against the cap.
fn cost(entry: &SuffixEntry) -> usize {
    entry.payload.len() + ENTRY_COST
}

/// Whether two ids name the same history (whatever their epochs).
fn same_history(a: &StateId, b: &StateId) -> bool {
    a.genesis == b.genesis && a.applied == b.applied && a.chain == b.chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::messages::PrimaryEpoch;
    use crate::transport::Member;

    fn id(applied: u64) -> StateId {
        StateId {
            epoch: PrimaryEpoch::default(),
            applied,
            chain: applied * 7 + 1,
            genesis: 9,
        }
    }

    fn entry(applied: u64, len: usize) -> SuffixEntry {
        SuffixEntry {
            from: Member::new(1, 1),
            id: applied,
            payload: vec![0; len],
            after: id(applied),
        }
    }

    fn run(from: u64, to: u64, cap: usize) -> Recent {
        let mut r = Recent::new(cap);
        r.reset(id(from));
        for a in from + 1..=to {
            r.push(entry(a, 10));
        }
        r
    }

    fn applied(s: &[SuffixEntry]) -> Vec<u64> {
        s.iter().map(|e| e.after.applied).collect()
    }

    #[test]
    fn a_receiver_at_a_point_of_the_run_gets_the_commands_after_it() {
        let r = run(5, 10, 1 << 20);
        assert_eq!(
            applied(&r.suffix_for(&id(10), [id(7)]).unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            applied(&r.suffix_for(&id(10), [id(5)]).unwrap()),
            [6, 7, 8, 9, 10]
        );
        assert!(r.suffix_for(&id(10), [id(10)]).unwrap().is_empty());
    }

    #[test]
    fn the_suffix_starts_at_the_lowest_receiver() {
        let r = run(0, 10, 1 << 20);
        assert_eq!(
            applied(&r.suffix_for(&id(10), [id(8), id(6)]).unwrap()),
            [7, 8, 9, 10]
        );
    }

    #[test]
    fn one_receiver_outside_the_run_means_a_snapshot_for_all() {
        let r = run(5, 10, 1 << 20);
        assert!(
            r.suffix_for(&id(10), [id(7), id(4)]).is_none(),
            "before the run"
        );
        assert!(r.suffix_for(&id(10), [id(11)]).is_none(), "past its head");
        let mut other = id(7);
        other.chain ^= 1;
        assert!(r.suffix_for(&id(10), [other]).is_none(), "another history");
        let mut founded_elsewhere = id(7);
        founded_elsewhere.genesis = 3;
        assert!(r.suffix_for(&id(10), [founded_elsewhere]).is_none());
        assert!(r.suffix_for(&id(10), []).is_none(), "nobody to send to");
    }

    #[test]
    fn the_oldest_commands_go_first_past_the_cap() {
        let r = run(0, 10, 3 * (10 + ENTRY_COST) + 5);
        // Three commands with payloads of 10 bytes fit.
        assert_eq!(
            applied(&r.suffix_for(&id(10), [id(7)]).unwrap()),
            [8, 9, 10]
        );
        assert!(r.suffix_for(&id(10), [id(6)]).is_none());
    }

    #[test]
    fn empty_commands_count_against_the_cap_too() {
        let mut r = Recent::new(10 * ENTRY_COST);
        r.reset(id(0));
        for a in 1..=1000 {
            r.push(entry(a, 0));
        }
        assert_eq!(r.entries.len(), 10);
        assert_eq!(
            applied(&r.suffix_for(&id(1000), [id(990)]).unwrap()).len(),
            10
        );
    }

    #[test]
    fn a_gap_starts_the_run_afresh_and_a_zero_cap_keeps_nothing() {
        let mut r = run(0, 5, 1 << 20);
        r.push(entry(9, 10));
        assert!(r.suffix_for(&id(9), [id(5)]).is_none());
        assert!(r.suffix_for(&id(9), [id(9)]).unwrap().is_empty());
        assert!(r.suffix_for(&id(10), [id(9)]).is_none(), "not the head");
        let none = run(0, 5, 0);
        assert!(none.suffix_for(&id(5), [id(3)]).is_none());
        assert!(none.suffix_for(&id(5), [id(0)]).is_none());
    }
}
