#![allow(dead_code)]
//! A linearizability checker for key-value histories, per key.
//!
//! A history is every client operation with the time it was invoked, the
//! time its response came back (none if the outcome is unknown: a timeout,
//! an `uncertain` or `closed` error), and what it returned. A history is
//! linearizable if each operation can be given a point between its
//! invocation and its response such that, in that order, every response is
//! what a single register per key would have returned; an operation with an
//! unknown outcome may take effect at any point after its invocation, or
//! never. Keys are independent, so each key is checked on its own (the
//! store is linearizable iff every key is).
//!
//! The search is the classic one (Wing & Gong, with Lowe's memoisation of
//! visited `(linearized set, register value)` states): repeatedly pick an
//! operation that may go next (invoked before every pending response),
//! apply it, backtrack on a contradiction. The position in the total order
//! each response names is used only to try the likely candidate first.

use std::collections::{BTreeMap, HashSet};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String),
    Get,
    Del,
    Cas {
        expected: Option<String>,
        new: Option<String>,
    },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `put`/`del` done.
    Done,
    /// `get` returned this.
    Value(Option<String>),
    /// `cas` swapped, or not.
    Cas(bool),
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    /// When it was sent (any clock; only the order matters).
    pub invoked: u64,
    /// When its response arrived; `None` if the outcome is unknown.
    pub returned: Option<u64>,
    /// Its position in the total order, if the response named one.
    pub position: Option<u64>,
}

/// Checks every key; reports the first key that is not linearizable.
pub fn check(history: &[Event]) -> Result<usize, String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in history {
        // A read whose answer never came says nothing and changes nothing.
        if matches!((&e.op, &e.outcome), (Op::Get, Outcome::Unknown)) {
            continue;
        }
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut checked = 0;
    for (key, mut events) in by_key {
        events.sort_by_key(|e| (e.position.unwrap_or(u64::MAX), e.invoked));
        check_key(&events).map_err(|why| format!("key {key:?}: {why}"))?;
        checked += events.len();
    }
    Ok(checked)
}

/// Applies `e` to the register `value`: the new value, or `None` if the
/// response contradicts the register.
fn step(e: &Event, value: &Option<String>) -> Option<Option<String>> {
    match (&e.op, &e.outcome) {
        (Op::Put(v), Outcome::Done | Outcome::Unknown) => Some(Some(v.clone())),
        (Op::Del, Outcome::Done | Outcome::Unknown) => Some(None),
        (Op::Get, Outcome::Value(seen)) => (seen == value).then(|| value.clone()),
        (Op::Cas { expected, new }, outcome) => {
            let swaps = expected == value;
            match outcome {
                Outcome::Cas(ok) if *ok != swaps => None,
                Outcome::Cas(_) | Outcome::Unknown => {
                    Some(if swaps { new.clone() } else { value.clone() })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn check_key(events: &[&Event]) -> Result<(), String> {
    let n = events.len();
    let words = n.div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut budget: u64 = 5_000_000;
    // Depth-first search with an explicit stack: (linearized set, value,
    // next candidate index to try).
    let mut stack: Vec<(Vec<u64>, Option<String>, usize)> = vec![(vec![0; words], None, 0)];
    let is_set = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some((set, value, from)) = stack.pop() {
        budget = budget
            .checked_sub(1)
            .ok_or("search budget exhausted (history too concurrent to decide)")?;
        // Done when every operation with a response is placed.
        let pending_completed = (0..n).any(|i| !is_set(&set, i) && events[i].returned.is_some());
        if !pending_completed {
            return Ok(());
        }
        // An operation may go next only if it was invoked before every
        // pending response.
        let horizon = (0..n)
            .filter(|i| !is_set(&set, *i))
            .filter_map(|i| events[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        let mut next = None;
        for i in from..n {
            if is_set(&set, i) || events[i].invoked > horizon {
                continue;
            }
            if let Some(v) = step(events[i], &value) {
                let mut s = set.clone();
                s[i / 64] |= 1 << (i % 64);
                if seen.insert((s.clone(), v.clone())) {
                    next = Some((i, s, v));
                    break;
                }
            }
        }
        if let Some((i, s, v)) = next {
            // Come back to try the candidates after `i` if this fails.
            stack.push((set, value, i + 1));
            stack.push((s, v, 0));
        }
    }
    let first_unplaced = events
        .iter()
        .find(|e| e.returned.is_some())
        .map(|e| format!("{:?} -> {:?}", e.op, e.outcome))
        .unwrap_or_default();
    Err(format!(
        "no linearization of {n} operations (first: {first_unplaced})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, outcome: Outcome, invoked: u64, returned: Option<u64>) -> Event {
        Event {
            key: "k".into(),
            op,
            outcome,
            invoked,
            returned,
            position: None,
        }
    }

    fn put(v: &str) -> Op {
        Op::Put(v.into())
    }

    fn value(v: Option<&str>) -> Outcome {
        Outcome::Value(v.map(Into::into))
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            ev(put("1"), Outcome::Done, 0, Some(1)),
            ev(put("2"), Outcome::Done, 2, Some(3)),
            ev(Op::Get, value(Some("1")), 4, Some(5)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn overlapping_operations_may_go_either_way() {
        let h = vec![
            ev(put("1"), Outcome::Done, 0, Some(10)),
            ev(put("2"), Outcome::Done, 1, Some(9)),
            ev(Op::Get, value(Some("1")), 11, Some(12)),
            ev(Op::Get, value(Some("1")), 13, Some(14)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        let happened = vec![
            ev(put("1"), Outcome::Unknown, 0, None),
            ev(Op::Get, value(Some("1")), 5, Some(6)),
        ];
        assert!(check(&happened).is_ok());
        let not = vec![
            ev(put("1"), Outcome::Unknown, 0, None),
            ev(Op::Get, value(None), 5, Some(6)),
        ];
        assert!(check(&not).is_ok());
        // But it cannot happen before it was sent.
        let too_early = vec![
            ev(Op::Get, value(Some("1")), 0, Some(1)),
            ev(put("1"), Outcome::Unknown, 2, None),
        ];
        assert!(check(&too_early).is_err());
    }

    #[test]
    fn compare_and_set_outcomes_must_match_the_register() {
        let ok = vec![
            ev(put("a"), Outcome::Done, 0, Some(1)),
            ev(
                Op::Cas {
                    expected: Some("a".into()),
                    new: Some("b".into()),
                },
                Outcome::Cas(true),
                2,
                Some(3),
            ),
            ev(Op::Get, value(Some("b")), 4, Some(5)),
        ];
        assert!(check(&ok).is_ok());
        let lost_update = vec![
            ev(put("a"), Outcome::Done, 0, Some(1)),
            ev(
                Op::Cas {
                    expected: Some("a".into()),
                    new: Some("b".into()),
                },
                Outcome::Cas(true),
                2,
                Some(3),
            ),
            ev(
                Op::Cas {
                    expected: Some("a".into()),
                    new: Some("c".into()),
                },
                Outcome::Cas(true),
                4,
                Some(5),
            ),
        ];
        assert!(check(&lost_update).is_err());
    }
}
