use proptest::prelude::*;

use super::*;

/// What the ordered stream carries in the model: confchgs that keep both
/// processes in the view, and the marks and answers of a sender `s` that
/// reads the stream behind everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    ConfChg,
    Mark(u64),
    /// An answer with its mark, and which confchg (counting from 1) the
    /// sender had last seen when it sent it.
    Answer {
        mark: u64,
        answers: usize,
    },
}

const S: Member = Member::new(1, 1);
const R: Member = Member::new(2, 2);

/// Runs the model: `steps` either append a confchg to the stream (true) or
/// let the lagging sender read one more event (false); afterwards the
/// sender catches up. Returns the stream, for the receiver to read.
fn run(steps: &[bool]) -> Vec<Event> {
    let mut stream = Vec::new();
    let mut s: Incarnation<usize> = Incarnation::default();
    let mut read = 0;
    let mut seen = 0;
    let mut sender_reads = |stream: &mut Vec<Event>, read: &mut usize| {
        let event = stream[*read];
        *read += 1;
        match event {
            Event::ConfChg => {
                seen += 1;
                let mark = s.confchg();
                stream.push(Event::Mark(mark));
                if let Some((mark, answers)) = s.answer(seen) {
                    stream.push(Event::Answer { mark, answers });
                }
            }
            Event::Mark(m) => {
                if let Some((mark, answers)) = s.delivered(S, S, m) {
                    stream.push(Event::Answer { mark, answers });
                }
            }
            Event::Answer { .. } => {}
        }
    };
    for &confchg in steps {
        if confchg {
            stream.push(Event::ConfChg);
        } else if read < stream.len() {
            sender_reads(&mut stream, &mut read);
        }
    }
    while read < stream.len() {
        sender_reads(&mut stream, &mut read);
    }
    stream
}

proptest! {
    /// Whatever the sender's lag: every answer the receiver counts was
    /// sent for the confchg the receiver last saw (never for an earlier
    /// incarnation of the same view), and once the stream goes quiet the
    /// sender's answer to the latest confchg counts.
    #[test]
    fn only_answers_to_the_latest_confchg_count_and_the_latest_is_answered(
        steps in proptest::collection::vec(prop_oneof![1 => Just(true), 2 => Just(false)], 1..80),
    ) {
        let stream = run(&steps);
        let mut r: Incarnation<()> = Incarnation::default();
        let mut confchgs = 0;
        let mut counted = Vec::new();
        for event in stream {
            match event {
                Event::ConfChg => {
                    confchgs += 1;
                    r.confchg();
                }
                Event::Mark(m) => {
                    r.delivered(R, S, m);
                }
                Event::Answer { mark, answers } => {
                    if r.fresh(S, mark) {
                        prop_assert_eq!(answers, confchgs, "an answer to an earlier confchg counted");
                        counted.push(answers);
                    }
                }
            }
        }
        if confchgs > 0 {
            prop_assert_eq!(counted.last(), Some(&confchgs), "the latest confchg was never answered");
        }
    }
}

#[test]
fn an_answer_waits_for_its_own_mark_and_a_later_confchg_drops_it() {
    let mut s: Incarnation<&str> = Incarnation::default();
    let first = s.confchg();
    assert_eq!(s.answer("first"), None, "held until the mark is back");
    let second = s.confchg();
    assert!(second > first);
    // The first mark comes back after the second confchg: nothing is sent.
    assert_eq!(s.delivered(S, S, first), None);
    assert_eq!(s.answer("second"), None);
    assert_eq!(s.delivered(S, S, second), Some((second, "second")));
    assert!(s.is_back());
    // Once back, answers go at once (later rounds of the same view).
    assert_eq!(s.answer("again"), Some((second, "again")));
    assert_eq!(s.own(), second);
}

#[test]
fn only_the_senders_latest_mark_since_the_confchg_makes_an_answer_fresh() {
    let mut r: Incarnation<()> = Incarnation::default();
    r.confchg();
    assert!(!r.fresh(S, 1), "no mark delivered yet");
    r.delivered(R, S, 1);
    assert!(r.fresh(S, 1));
    r.delivered(R, S, 2);
    assert!(!r.fresh(S, 1) && r.fresh(S, 2));
    assert!(!r.fresh(R, 2), "marks are per sender");
    r.confchg();
    assert!(!r.fresh(S, 2), "a confchg forgets every mark");
    r.replayed(S, 3);
    assert!(r.fresh(S, 3));
    r.forget_marks();
    assert!(!r.fresh(S, 3));
}
