//! Linearizable reads waiting in a replica's core (rule 12 of the core):
//! for the barrier their reader multicast to come back, for a view where
//! they can be answered, or for the acknowledgements that make the state
//! they read safe. Bookkeeping only: the core decides what happens to
//! them, and the runtime holds the reads themselves (by id).
//!
//! ```text
//!  ask ──► unsent ──barrier(n) sent──► sent[n] ──barrier back──► evaluated at p
//!                                         │                         │
//!             view not ready: parked ◄────┘        stable ≥ p: answered
//! ```

use std::collections::BTreeMap;

use super::messages::StateId;

/// Reads by what they wait for; every id is in at most one place.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Numbers this replica's barriers (its own, never repeated).
    barriers: u64,
    /// Reads whose barrier is on its way, by the barrier's number.
    sent: BTreeMap<u64, Vec<u64>>,
    /// Reads whose barrier came back while this replica could not answer
    /// (a view being installed, a state being received): a new barrier
    /// goes out for them once it can.
    parked: Vec<u64>,
    /// Reads evaluated at a state whose position is not yet stable (safe
    /// delivery), by that position.
    unstable: BTreeMap<u64, (StateId, Vec<u64>)>,
    /// How many reads wait in all.
    waiting: usize,
}

impl Reads {
    /// How many reads wait, wherever they are.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// `ids` wait for a barrier that goes out now: its number.
    pub(crate) fn send(&mut self, ids: Vec<u64>) -> u64 {
        self.barriers += 1;
        self.waiting += ids.len();
        self.sent.insert(self.barriers, ids);
        self.barriers
    }

    /// The barrier `number` came back: the reads that waited for it (none
    /// if it is not one of this replica's, or came back before).
    pub(crate) fn back(&mut self, number: u64) -> Vec<u64> {
        let ids = self.sent.remove(&number).unwrap_or_default();
        self.waiting -= ids.len();
        ids
    }

    /// `ids` wait for this replica to be able to answer.
    pub(crate) fn park(&mut self, ids: Vec<u64>) {
        self.waiting += ids.len();
        self.parked.extend(ids);
    }

    /// Whether reads are parked.
    pub(crate) fn any_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The parked reads, taken.
    pub(crate) fn unpark(&mut self) -> Vec<u64> {
        self.waiting -= self.parked.len();
        std::mem::take(&mut self.parked)
    }

    /// `ids` were evaluated at `at` and wait until its position is stable.
    pub(crate) fn evaluated(&mut self, at: StateId, ids: Vec<u64>) {
        self.waiting += ids.len();
        self.unstable
            .entry(at.applied)
            .or_insert_with(|| (at, Vec::new()))
            .1
            .extend(ids);
    }

    /// The evaluated reads whose position is at most `stable`, taken, in
    /// order of position.
    pub(crate) fn stable(&mut self, stable: u64) -> Vec<(StateId, Vec<u64>)> {
        let mut released = Vec::new();
        while let Some(entry) = self.unstable.first_entry() {
            if *entry.key() > stable {
                break;
            }
            let (at, ids) = entry.remove();
            self.waiting -= ids.len();
            released.push((at, ids));
        }
        released
    }

    /// Every evaluated read, taken (their state did not survive a view
    /// change).
    pub(crate) fn drop_evaluated(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = std::mem::take(&mut self.unstable)
            .into_values()
            .flat_map(|(_, ids)| ids)
            .collect();
        self.waiting -= ids.len();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(applied: u64) -> StateId {
        StateId {
            applied,
            ..StateId::default()
        }
    }

    #[test]
    fn a_barrier_releases_only_its_own_reads_once() {
        let mut reads = Reads::default();
        let one = reads.send(vec![1, 2]);
        let two = reads.send(vec![3]);
        assert_ne!(one, two);
        assert_eq!(reads.waiting(), 3);
        assert_eq!(reads.back(two), vec![3]);
        assert_eq!(reads.back(two), Vec::<u64>::new());
        assert_eq!(reads.back(99), Vec::<u64>::new());
        assert_eq!(reads.back(one), vec![1, 2]);
        assert_eq!(reads.waiting(), 0);
    }

    #[test]
    fn evaluated_reads_leave_in_order_of_position_up_to_the_stable_one() {
        let mut reads = Reads::default();
        reads.evaluated(at(5), vec![1]);
        reads.evaluated(at(3), vec![2]);
        reads.evaluated(at(5), vec![3]);
        assert_eq!(reads.stable(2), Vec::new());
        assert_eq!(reads.stable(5), vec![(at(3), vec![2]), (at(5), vec![1, 3])]);
        assert_eq!(reads.waiting(), 0);
    }

    #[test]
    fn parked_and_dropped_reads_are_counted_out() {
        let mut reads = Reads::default();
        reads.park(vec![1, 2]);
        reads.evaluated(at(1), vec![3]);
        assert!(reads.any_parked());
        assert_eq!(reads.waiting(), 3);
        assert_eq!(reads.unpark(), vec![1, 2]);
        assert!(!reads.any_parked());
        assert_eq!(reads.drop_evaluated(), vec![3]);
        assert_eq!(reads.waiting(), 0);
    }
}
