use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn member(n: u32) -> Member {
    Member::new(n, 100 + n)
}

fn head(id: u64, index: u32, count: u32, total: u64) -> ChunkHead {
    ChunkHead {
        id,
        index,
        count,
        total,
    }
}

#[test]
fn pieces_in_order_make_the_message() {
    let mut r = Reassembly::default();
    let a = member(1);
    assert_eq!(r.accept(a, head(1, 0, 3, 5), b"ab"), Ok(Piece::Pending));
    assert_eq!(r.accept(a, head(1, 1, 3, 5), b"cd"), Ok(Piece::Pending));
    assert_eq!(
        r.accept(a, head(1, 2, 3, 5), b"e"),
        Ok(Piece::Whole(b"abcde".to_vec()))
    );
    assert_eq!(r.accept(a, head(1, 2, 3, 5), b"e"), Ok(Piece::Stray));
}

#[test]
fn senders_assemble_side_by_side() {
    let mut r = Reassembly::default();
    let (a, b) = (member(1), member(2));
    assert_eq!(r.accept(a, head(1, 0, 2, 2), b"a"), Ok(Piece::Pending));
    assert_eq!(r.accept(b, head(1, 0, 2, 2), b"x"), Ok(Piece::Pending));
    assert_eq!(
        r.accept(b, head(1, 1, 2, 2), b"y"),
        Ok(Piece::Whole(b"xy".to_vec()))
    );
    assert_eq!(
        r.accept(a, head(1, 1, 2, 2), b"b"),
        Ok(Piece::Whole(b"ab".to_vec()))
    );
}

#[test]
fn a_confchg_turns_the_rest_of_a_message_into_strays() {
    let mut r = Reassembly::default();
    let a = member(1);
    assert_eq!(r.accept(a, head(1, 0, 2, 2), b"a"), Ok(Piece::Pending));
    assert_eq!(r.confchg(true, &[]), 1);
    assert_eq!(r.accept(a, head(1, 1, 2, 2), b"b"), Ok(Piece::Stray));
    // Sent again under a new id, it assembles.
    assert_eq!(r.accept(a, head(2, 0, 2, 2), b"a"), Ok(Piece::Pending));
    assert_eq!(
        r.accept(a, head(2, 1, 2, 2), b"b"),
        Ok(Piece::Whole(b"ab".to_vec()))
    );
}

#[test]
fn a_confchg_that_only_takes_members_out_keeps_the_others_assemblies() {
    let mut r = Reassembly::default();
    let (a, b) = (member(1), member(2));
    assert_eq!(r.accept(a, head(1, 0, 2, 2), b"a"), Ok(Piece::Pending));
    assert_eq!(r.accept(b, head(1, 0, 2, 2), b"x"), Ok(Piece::Pending));
    assert_eq!(r.confchg(false, &[b, member(3)]), 1);
    assert_eq!(
        r.accept(a, head(1, 1, 2, 2), b"b"),
        Ok(Piece::Whole(b"ab".to_vec()))
    );
    assert_eq!(r.accept(b, head(1, 1, 2, 2), b"y"), Ok(Piece::Stray));
}

#[test]
fn a_first_piece_claiming_a_huge_message_reserves_a_few_pieces_only() {
    let mut r = Reassembly::default();
    // One byte, claiming 16 MiB in 16 Mi pieces: consistent, and forged.
    let total = 16 << 20;
    assert_eq!(
        r.accept(member(1), head(1, 0, total as u32, total), b"x"),
        Ok(Piece::Pending)
    );
    assert!(r.buffered().1 <= 4, "reserved {:?}", r.buffered());
    // An honest large message still assembles whole.
    let piece = vec![7u8; 1000];
    for i in 0..10 {
        let got = r.accept(member(2), head(2, i, 10, 10_000), &piece);
        let expected = if i == 9 {
            Piece::Whole(vec![7u8; 10_000])
        } else {
            Piece::Pending
        };
        assert_eq!(got, Ok(expected));
    }
    assert_eq!(r.buffered(), (1, 4));
}

#[test]
fn pieces_that_do_not_add_up_are_refused() {
    let mut r = Reassembly::default();
    let a = member(1);
    assert_eq!(r.accept(a, head(1, 0, 2, 3), b"ab"), Ok(Piece::Pending));
    assert!(r.accept(a, head(1, 1, 2, 3), b"cd").is_err());
    assert_eq!(r.accept(a, head(1, 1, 2, 3), b"c"), Ok(Piece::Stray));
    assert_eq!(r.accept(a, head(2, 0, 2, 4), b"ab"), Ok(Piece::Pending));
    assert!(r.accept(a, head(2, 1, 2, 4), b"c").is_err());
    assert_eq!(r.accept(a, head(3, 0, 2, 4), b"ab"), Ok(Piece::Pending));
    assert!(r.accept(a, head(3, 1, 3, 4), b"cd").is_err());
}

#[test]
fn the_sender_plans_pieces_and_starts_over_only_when_cut() {
    let message = b"abcdefg";
    let mut out = Outgoing::new(1, message.len(), 3).unwrap();
    let (h0, p0) = out.next_piece(message).unwrap();
    assert_eq!((h0, p0), (head(1, 0, 3, 7), &b"abc"[..]));
    out.piece_sent();
    assert!(!out.interrupted(|| 9), "nothing came back yet: not cut");
    assert!(!out.piece_delivered(&h0), "one piece of three back");
    assert!(out.interrupted(|| 9));
    assert_eq!(
        out.next_piece(message).unwrap(),
        (head(9, 0, 3, 7), &b"abc"[..])
    );
    for (index, piece) in [(0, &b"abc"[..]), (1, b"def"), (2, b"g")] {
        assert_eq!(out.next_piece(message), Some((head(9, index, 3, 7), piece)));
        out.piece_sent();
    }
    assert!(
        out.next_piece(message).is_none(),
        "all sent: wait for the last"
    );
    assert!(
        !out.piece_delivered(&head(1, 1, 3, 7)),
        "a piece of the cut attempt"
    );
    assert!(!out.piece_delivered(&head(9, 0, 3, 7)));
    assert!(!out.piece_delivered(&head(9, 1, 3, 7)));
    assert!(out.piece_delivered(&head(9, 2, 3, 7)));
}

/// One step of a schedule over a model of the ordered stream.
#[derive(Debug, Clone)]
enum Step {
    /// A sender multicasts its next piece, if its plan and window allow.
    Send(usize),
    /// The oldest multicast is delivered to every member.
    Deliver,
    /// A confchg that only takes a member out (one that sends nothing).
    ConfChg,
    /// A member joins (a confchg) and starts seeing the stream.
    Join,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize).prop_map(Step::Send),
        4 => Just(Step::Deliver),
        1 => Just(Step::ConfChg),
        1 => Just(Step::Join),
    ]
}

struct Sender {
    member: Member,
    queue: VecDeque<Vec<u8>>,
    current: Option<Outgoing>,
    next_id: u64,
    in_flight: usize,
}

struct Observer {
    reassembly: Reassembly,
    delivered: Vec<(Member, Vec<u8>)>,
    /// How much of the first observer's list was delivered before this one
    /// joined.
    joined_after: usize,
}

const WINDOW: usize = 2;
const PIECE: usize = 4;

struct Model {
    senders: Vec<Sender>,
    observers: Vec<Observer>,
    network: VecDeque<(Member, ChunkHead, Vec<u8>)>,
}

impl Model {
    fn send(&mut self, s: usize) {
        let sender = &mut self.senders[s];
        if sender.current.is_none() {
            let Some(message) = sender.queue.front() else {
                return;
            };
            sender.next_id += 1;
            sender.current = Outgoing::new(sender.next_id, message.len(), PIECE);
        }
        let (Some(out), Some(message)) = (&mut sender.current, sender.queue.front()) else {
            return;
        };
        if sender.in_flight >= WINDOW {
            return;
        }
        if let Some((head, piece)) = out.next_piece(message) {
            self.network
                .push_back((sender.member, head, piece.to_vec()));
            out.piece_sent();
            sender.in_flight += 1;
        }
    }

    fn deliver(&mut self) {
        let Some((from, head, piece)) = self.network.pop_front() else {
            return;
        };
        for o in &mut self.observers {
            if let Piece::Whole(m) = o.reassembly.accept(from, head, &piece).unwrap() {
                o.delivered.push((from, m));
            }
        }
        let sender = self.senders.iter_mut().find(|s| s.member == from).unwrap();
        sender.in_flight -= 1;
        if let Some(out) = &mut sender.current {
            if out.piece_delivered(&head) {
                sender.current = None;
                sender.queue.pop_front();
            }
        }
    }

    /// A confchg; `joined` if it brings a member in (a member that only
    /// watches leaving is one that does not).
    fn confchg(&mut self, joined: bool) {
        for o in &mut self.observers {
            o.reassembly.confchg(joined, &[member(99)]);
        }
        for s in &mut self.senders {
            if let (Some(out), true) = (&mut s.current, joined) {
                let next = &mut s.next_id;
                out.interrupted(|| {
                    *next += 1;
                    *next
                });
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Members that see the same stream deliver the same messages, each
    /// sender's whole and in its order, exactly once, however confchgs cut
    /// through them; a member that joins late delivers exactly what the
    /// others deliver after it joined.
    #[test]
    fn confchgs_anywhere_lose_and_reorder_nothing(
        sizes in proptest::collection::vec(proptest::collection::vec(1..20usize, 0..5), 3),
        steps in proptest::collection::vec(step(), 0..200),
    ) {
        let sent: Vec<Vec<Vec<u8>>> = sizes
            .iter()
            .enumerate()
            .map(|(s, lens)| {
                lens.iter()
                    .enumerate()
                    .map(|(i, &len)| (0..len).map(|b| (s * 64 + i * 8 + b) as u8).collect())
                    .collect()
            })
            .collect();
        let mut model = Model {
            senders: sent
                .iter()
                .enumerate()
                .map(|(s, queue)| Sender {
                    member: member(s as u32 + 1),
                    queue: queue.iter().cloned().collect(),
                    current: None,
                    next_id: 0,
                    in_flight: 0,
                })
                .collect(),
            observers: vec![Observer {
                reassembly: Reassembly::default(),
                delivered: Vec::new(),
                joined_after: 0,
            }],
            network: VecDeque::new(),
        };
        for step in steps {
            match step {
                Step::Send(s) => model.send(s),
                Step::Deliver => model.deliver(),
                Step::ConfChg => model.confchg(false),
                Step::Join => {
                    model.confchg(true);
                    let joined_after = model.observers[0].delivered.len();
                    model.observers.push(Observer {
                        reassembly: Reassembly::default(),
                        delivered: Vec::new(),
                        joined_after,
                    });
                }
            }
        }
        // Then quiet: no confchg until everything is through.
        for _ in 0..10_000 {
            if model.network.is_empty() && model.senders.iter().all(|s| s.queue.is_empty()) {
                break;
            }
            for s in 0..3 {
                model.send(s);
            }
            model.deliver();
        }
        prop_assert!(model.network.is_empty());
        let first = &model.observers[0].delivered;
        for (s, messages) in sent.iter().enumerate() {
            let got: Vec<&Vec<u8>> = first
                .iter()
                .filter(|(from, _)| *from == member(s as u32 + 1))
                .map(|(_, m)| m)
                .collect();
            prop_assert_eq!(got, messages.iter().collect::<Vec<_>>());
        }
        for o in &model.observers[1..] {
            prop_assert_eq!(&o.delivered[..], &first[o.joined_after..]);
        }
    }
}
