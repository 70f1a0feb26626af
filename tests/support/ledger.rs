//! An append-only log of `(writer, n)` as a replicated state machine, for
//! the replica tests: the response to a command is the log's length after it.

use actix_cpg::replicated::{decode_snapshot, encode_snapshot};
use actix_cpg::{Member, StateMachine};

/// The log, in apply order.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Ledger(pub Vec<(Member, u64)>);

impl StateMachine for Ledger {
    type Command = (Member, u64);
    type Response = u64;
    type Snapshot = Vec<(Member, u64)>;

    fn apply(&mut self, entry: (Member, u64)) -> u64 {
        self.0.push(entry);
        self.0.len() as u64
    }

    fn snapshot(&self) -> Vec<(Member, u64)> {
        self.0.clone()
    }

    fn encode(snapshot: Vec<(Member, u64)>) -> Vec<u8> {
        encode_snapshot(&snapshot)
    }

    fn restore(snapshot: &[u8]) -> Result<Self, String> {
        decode_snapshot(snapshot, 1 << 24).map(Ledger)
    }
}
