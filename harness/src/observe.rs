//! `--record FILE` and `--show` of the agents (`cpg-agent`, `rsm-agent`),
//! the same two flags the examples take (`examples/support/observe.rs`).
//!
//! - `--record FILE`: the agent's member records its ordered stream to
//!   FILE (`GroupConfig`, `ReplicaConfig` or `ElectionConfig::record_to`);
//!   `acpg replay FILE` prints the decisions of a group's or an election's
//!   recording.
//! - `--show`: the agent prints one `SHOW ...` line just before it ends
//!   (`leave`, or the end of its input). The `show` command prints the
//!   same line at any time, flag or not.
//!
//! A `SHOW` line is one line, as every protocol line: `SHOW {json}`, the
//! member's `inspect()` as one JSON object — `Group::inspect()` of a group
//! member, `Replica::inspect()` of a replica (its state id, each member's
//! announced state and whether the participants agree),
//! `Election::inspect()` of an election member — each holding the
//! member's counters; or `SHOW error REASON` when the runtime cannot
//! answer (it has stopped).

use std::path::PathBuf;

use actix_cpg::{Election, Group, Replica, StateMachine};

/// What the agent keeps of its run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observe {
    /// Where the member records its stream.
    pub record: Option<PathBuf>,
    /// Whether the agent prints a `SHOW` line before it ends.
    pub show: bool,
}

impl Observe {
    /// Takes `--record FILE` and `--show` out of `args` (the rest stays
    /// for the agent's own parsing).
    pub fn take_from(args: &mut Vec<String>) -> Result<Observe, String> {
        let mut observe = Observe::default();
        if let Some(i) = args.iter().position(|a| a == "--show") {
            args.remove(i);
            observe.show = true;
        }
        if let Some(i) = args.iter().position(|a| a == "--record") {
            args.remove(i);
            if i >= args.len() || args[i].starts_with("--") {
                return Err("--record takes a FILE".into());
            }
            observe.record = Some(PathBuf::from(args.remove(i)));
        }
        Ok(observe)
    }
}

/// A group member's `SHOW` line: its `inspect()` as JSON, or why not.
pub async fn group_line(group: &Group) -> String {
    line(group.inspect().await)
}

/// A replica's `SHOW` line: its `inspect()` as JSON, or why not.
pub async fn replica_line<S: StateMachine>(replica: &Replica<S>) -> String {
    line(replica.inspect().await)
}

/// An election member's `SHOW` line: its `inspect()` as JSON, or why not.
pub async fn election_line(election: &Election) -> String {
    line(election.inspect().await)
}

fn line<T: serde::Serialize, E: std::fmt::Display>(inspected: Result<T, E>) -> String {
    match inspected.map(|seen| serde_json::to_string(&seen)) {
        Ok(Ok(json)) => format!("SHOW {json}"),
        Ok(Err(e)) => format!("SHOW error {e}"),
        Err(e) => format!("SHOW error {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_flags_come_out_of_the_arguments_and_the_rest_stays() {
        let mut a = args(&["kv", "g", "--record", "/tmp/f", "--safe", "--show"]);
        let observe = Observe::take_from(&mut a).unwrap();
        assert_eq!(a, args(&["kv", "g", "--safe"]));
        assert_eq!(observe.record, Some(PathBuf::from("/tmp/f")));
        assert!(observe.show);

        let mut none = args(&["g", "group"]);
        assert_eq!(Observe::take_from(&mut none).unwrap(), Observe::default());
        assert_eq!(none, args(&["g", "group"]));

        assert!(Observe::take_from(&mut args(&["g", "--record"])).is_err());
        assert!(Observe::take_from(&mut args(&["g", "--record", "--show"])).is_err());
    }
}
