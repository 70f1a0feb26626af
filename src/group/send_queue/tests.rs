use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::wire::Kind;

const LIMIT: usize = 1 << 20;

fn limits(window: usize, max_messages: usize, linger: Duration) -> QueueLimits {
    QueueLimits {
        window,
        window_bytes: 1 << 20,
        frame_limit: 4096,
        batch: BatchConfig {
            max_bytes: 4096,
            max_messages,
            linger,
        },
        compress_above: None,
    }
}

/// An envelope whose body is `n` (8 bytes), so the tests can tell
/// messages apart after batching.
fn msg(n: u64) -> Vec<u8> {
    Codec::new(LIMIT)
        .encode(Kind::Registry, &n)
        .expect("encodes")
}

/// What one multicast carried: the numbers of its messages, or a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Messages(Vec<u64>),
    Piece(ChunkHead),
}

fn read(bytes: &[u8]) -> Sent {
    let codec = Codec::new(LIMIT);
    let frame = codec.decode_frame(bytes).expect("frame");
    match frame.kind {
        Kind::Compressed => read(&codec.decompress(frame.body).expect("opens")),
        Kind::Batch => Sent::Messages(
            codec
                .split_batch(frame.body)
                .expect("batch")
                .into_iter()
                .map(|env| {
                    let f = codec.decode_frame(env).expect("entry");
                    codec.decode_body(f.body).expect("number")
                })
                .collect(),
        ),
        Kind::Chunk => Sent::Piece(codec.decode_chunk(frame.body).expect("piece").0),
        _ => Sent::Messages(vec![codec.decode_body(frame.body).expect("number")]),
    }
}

/// How the test transport answers a multicast.
type Answer = Box<dyn FnMut(&[u8]) -> Result<(), TransportError>>;

/// A transport that takes every multicast, or answers as `answer` says.
struct Wire {
    sent: Vec<Vec<u8>>,
    answer: Answer,
}

impl Wire {
    fn ok() -> Wire {
        Wire {
            sent: Vec::new(),
            answer: Box::new(|_| Ok(())),
        }
    }

    fn flush(&mut self, q: &mut SendQueue<u64>, now: Instant) -> (Flushed, Vec<Finished<u64>>) {
        let mut finished = Vec::new();
        let (sent, answer) = (&mut self.sent, &mut self.answer);
        let flushed = q
            .flush(
                now,
                &Codec::new(LIMIT),
                &mut |bytes| {
                    answer(bytes)?;
                    sent.push(bytes.to_vec());
                    Ok(())
                },
                &mut finished,
            )
            .expect("no fatal error");
        (flushed, finished)
    }

    fn take(&mut self) -> Vec<Sent> {
        self.sent.drain(..).map(|b| read(&b)).collect()
    }
}

fn tokens(finished: &[Finished<u64>]) -> Vec<u64> {
    finished.iter().map(|f| f.token).collect()
}

#[test]
fn the_window_holds_back_what_does_not_fit_until_own_messages_come_back() {
    let mut q = SendQueue::new(limits(2, 1, Duration::ZERO));
    let mut wire = Wire::ok();
    for n in 1..=3 {
        q.push(msg(n), n, false).expect("queued");
    }
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(flushed.multicasts, 2);
    assert_eq!(tokens(&finished), [1, 2]);
    assert_eq!(
        wire.take(),
        [Sent::Messages(vec![1]), Sent::Messages(vec![2])]
    );
    assert!(!q.is_empty() && !q.half_free());
    q.own_delivered(msg(1).len());
    assert!(q.half_free());
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [3]);
    assert!(q.is_empty());
}

#[test]
fn buffers_of_messages_multicast_whole_are_kept_for_reuse_and_others_are_not() {
    let mut q = SendQueue::new(limits(2, 2, Duration::ZERO));
    let mut wire = Wire::ok();
    let first = msg(1);
    let ptr = first.as_ptr();
    q.push(first, 1, false).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1]);
    let spent = std::mem::take(q.spent());
    assert_eq!(spent.len(), 1);
    assert_eq!(spent[0].as_ptr(), ptr, "the message's own buffer");
    // A batch: both buffers come back; a refused one does not.
    for n in 2..=3 {
        q.push(msg(n), n, false).expect("queued");
    }
    q.own_delivered(msg(1).len());
    wire.flush(&mut q, Instant::now());
    assert_eq!(q.spent().len(), 2);
    let mut q = SendQueue::new(limits(2, 1, Duration::ZERO));
    let mut refusing = Wire {
        sent: Vec::new(),
        answer: Box::new(|b| {
            Err(TransportError::MessageTooLarge {
                len: b.len(),
                max: 0,
            })
        }),
    };
    q.push(msg(4), 4, false).expect("queued");
    let (_, finished) = refusing.flush(&mut q, Instant::now());
    assert!(finished[0].result.is_err());
    assert!(q.spent().is_empty());
}

#[test]
fn one_multicast_goes_when_nothing_is_in_flight_however_large() {
    let mut q = SendQueue::new(QueueLimits {
        window_bytes: 10,
        ..limits(4, 1, Duration::ZERO)
    });
    let mut wire = Wire::ok();
    q.push(msg(1), 1, false).expect("queued");
    q.push(msg(2), 2, false).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    // The first exceeds the byte window alone; the second waits for it.
    assert_eq!(tokens(&finished), [1]);
    q.own_delivered(msg(1).len());
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [2]);
}

#[test]
fn batches_fill_to_their_caps_in_queue_order() {
    let mut q = SendQueue::new(limits(64, 3, Duration::ZERO));
    let mut wire = Wire::ok();
    for n in 1..=7 {
        q.push(msg(n), n, true).expect("queued");
    }
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(
        wire.take(),
        [
            Sent::Messages(vec![1, 2, 3]),
            Sent::Messages(vec![4, 5, 6]),
            Sent::Messages(vec![7])
        ]
    );
    assert_eq!(
        (flushed.multicasts, flushed.messages, flushed.batches),
        (3, 7, 2)
    );
    assert_eq!(tokens(&finished), [1, 2, 3, 4, 5, 6, 7]);
    assert!(finished.iter().all(|f| f.gated == Some(msg(0).len())));
}

#[test]
fn a_batch_below_its_caps_waits_while_a_quarter_of_the_window_is_in_flight() {
    let mut q = SendQueue::new(limits(8, 3, Duration::ZERO));
    let mut wire = Wire::ok();
    for n in 1..=7 {
        q.push(msg(n), n, true).expect("queued");
    }
    let (_, finished) = wire.flush(&mut q, Instant::now());
    // Two full batches in flight are a quarter of the window: the third,
    // below its caps, waits for company.
    assert_eq!(tokens(&finished), [1, 2, 3, 4, 5, 6]);
    q.push(msg(8), 8, true).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert!(finished.is_empty());
    assert!(
        q.linger_deadline().is_none(),
        "no clock: a delivery back ends the wait"
    );
    q.push(msg(9), 9, true).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [7, 8, 9], "a full batch goes while busy");
    q.push(msg(10), 10, true).expect("queued");
    wire.flush(&mut q, Instant::now());
    q.own_delivered(msg(0).len());
    q.own_delivered(msg(0).len());
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(
        tokens(&finished),
        [10],
        "below a quarter in flight it goes at once"
    );
    assert_eq!(
        wire.take(),
        [
            Sent::Messages(vec![1, 2, 3]),
            Sent::Messages(vec![4, 5, 6]),
            Sent::Messages(vec![7, 8, 9]),
            Sent::Messages(vec![10])
        ]
    );
}

#[test]
fn a_flush_request_sends_a_waiting_batch_while_the_window_is_busy() {
    let mut q = SendQueue::new(limits(4, 3, Duration::ZERO));
    let mut wire = Wire::ok();
    for n in 1..=4 {
        q.push(msg(n), n, false).expect("queued");
    }
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1, 2, 3]);
    assert_eq!(q.flush_all(), Some(4));
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [4]);
}

#[test]
fn without_batching_a_busy_window_holds_nothing_back() {
    let mut q = SendQueue::new(limits(4, 1, Duration::ZERO));
    let mut wire = Wire::ok();
    for n in 1..=4 {
        q.push(msg(n), n, false).expect("queued");
    }
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1, 2, 3, 4]);
}

#[test]
fn a_batch_stops_below_its_byte_cap() {
    let one = HEADER_LEN + BATCH_ENTRY_OVERHEAD + msg(0).len();
    let mut q = SendQueue::new(QueueLimits {
        batch: BatchConfig {
            max_bytes: one + 2 * (BATCH_ENTRY_OVERHEAD + msg(0).len()),
            max_messages: 100,
            linger: Duration::ZERO,
        },
        ..limits(8, 100, Duration::ZERO)
    });
    let mut wire = Wire::ok();
    for n in 1..=4 {
        q.push(msg(n), n, false).expect("queued");
    }
    wire.flush(&mut q, Instant::now());
    assert_eq!(
        wire.take(),
        [Sent::Messages(vec![1, 2, 3]), Sent::Messages(vec![4])]
    );
}

#[test]
fn a_lone_message_lingers_for_company_until_its_deadline_or_a_flush() {
    let linger = Duration::from_millis(10);
    let mut q = SendQueue::new(limits(8, 4, linger));
    let mut wire = Wire::ok();
    let start = Instant::now();
    q.push(msg(1), 1, false).expect("queued");
    let (flushed, _) = wire.flush(&mut q, start);
    assert_eq!(flushed.multicasts, 0);
    let deadline = q.linger_deadline().expect("lingers");
    assert!(deadline > start && deadline <= Instant::now() + linger);
    q.push(msg(2), 2, false).expect("queued");
    wire.flush(&mut q, start);
    assert!(wire.take().is_empty(), "still below its caps");
    let (_, finished) = wire.flush(&mut q, deadline);
    assert_eq!(tokens(&finished), [1, 2]);
    assert_eq!(wire.take(), [Sent::Messages(vec![1, 2])]);
    // A flush request makes what is queued go at once.
    q.push(msg(3), 3, false).expect("queued");
    assert_eq!(q.flush_all(), Some(3));
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [3]);
    assert_eq!(q.flush_all(), None);
}

#[test]
fn a_full_batch_does_not_linger() {
    let mut q = SendQueue::new(limits(8, 2, Duration::from_secs(3600)));
    let mut wire = Wire::ok();
    for n in 1..=3 {
        q.push(msg(n), n, false).expect("queued");
    }
    wire.flush(&mut q, Instant::now());
    assert_eq!(wire.take(), [Sent::Messages(vec![1, 2])]);
    assert!(q.linger_deadline().is_some(), "the rest lingers");
}

#[test]
fn control_messages_go_ahead_of_traffic_in_their_own_order() {
    let mut q = SendQueue::new(limits(8, 1, Duration::ZERO));
    let mut wire = Wire::ok();
    q.push(msg(1), 1, false).expect("queued");
    q.push(msg(2), 2, false).expect("queued");
    q.push_control(msg(10), 10).expect("queued");
    q.push_control(msg(11), 11).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [10, 11, 1, 2]);
    assert_eq!(finished[0].seq, 0);
}

#[test]
fn a_large_message_goes_in_pieces_and_holds_back_what_follows_until_it_is_back() {
    let mut q = SendQueue::new(QueueLimits {
        frame_limit: 64,
        ..limits(8, 1, Duration::ZERO)
    });
    let mut wire = Wire::ok();
    let big = Codec::new(LIMIT)
        .encode(Kind::Registry, &vec![7u8; 150])
        .expect("encodes");
    q.push(big.clone(), 1, true).expect("queued");
    q.push(msg(2), 2, false).expect("queued");
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert!(finished.is_empty(), "a message in pieces leaves once back");
    let pieces: Vec<ChunkHead> = wire
        .take()
        .into_iter()
        .map(|s| match s {
            Sent::Piece(head) => head,
            other => panic!("{other:?} before the last piece came back"),
        })
        .collect();
    assert_eq!(flushed.pieces as usize, pieces.len());
    assert!(pieces.len() >= 3);
    assert!(pieces
        .iter()
        .enumerate()
        .all(|(i, h)| h.index as usize == i));
    // A control message does not cut in between the pieces under way.
    q.push_control(msg(10), 10).expect("queued");
    for head in &pieces[..pieces.len() - 1] {
        q.own_delivered(64);
        assert!(q.own_piece_delivered(head).is_none());
    }
    q.own_delivered(64);
    let done = q
        .own_piece_delivered(&pieces[pieces.len() - 1])
        .expect("whole");
    assert_eq!((done.token, done.gated), (1, Some(big.len())));
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [10, 2]);
}

#[test]
fn a_join_restarts_a_message_in_pieces_under_a_new_id() {
    let mut q = SendQueue::new(QueueLimits {
        frame_limit: 64,
        ..limits(1, 1, Duration::ZERO)
    });
    let mut wire = Wire::ok();
    let big = Codec::new(LIMIT)
        .encode(Kind::Registry, &vec![7u8; 150])
        .expect("encodes");
    q.push(big, 1, false).expect("queued");
    wire.flush(&mut q, Instant::now());
    let [Sent::Piece(first)] = wire.take()[..] else {
        panic!("one piece in a window of one")
    };
    // Its first piece is not back: the join falls before it.
    assert!(!q.confchg(true));
    q.own_delivered(64);
    assert!(q.own_piece_delivered(&first).is_none());
    assert!(!q.confchg(false), "a leave cuts nothing");
    assert!(q.confchg(true), "a join after its first piece cuts it");
    wire.flush(&mut q, Instant::now());
    let [Sent::Piece(again)] = wire.take()[..] else {
        panic!("the first piece again")
    };
    assert_eq!(again.index, 0);
    assert_ne!(again.id, first.id);
}

#[test]
fn try_again_leaves_the_head_queued_and_the_queue_blocked() {
    let mut q = SendQueue::new(limits(8, 1, Duration::ZERO));
    let refuse = std::rc::Rc::new(std::cell::Cell::new(true));
    let r = refuse.clone();
    let mut wire = Wire {
        sent: Vec::new(),
        answer: Box::new(move |_| {
            if r.get() {
                Err(TransportError::TryAgain)
            } else {
                Ok(())
            }
        }),
    };
    q.push(msg(1), 1, false).expect("queued");
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(flushed.try_again, 1);
    assert!(finished.is_empty() && q.blocked());
    refuse.set(false);
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1]);
    assert!(!q.blocked());
}

#[test]
fn a_batch_the_transport_finds_too_large_goes_one_by_one() {
    let mut q = SendQueue::new(limits(8, 4, Duration::ZERO));
    let mut wire = Wire {
        sent: Vec::new(),
        answer: Box::new(|bytes| {
            if bytes.len() > 40 {
                Err(TransportError::MessageTooLarge {
                    len: bytes.len(),
                    max: 40,
                })
            } else {
                Ok(())
            }
        }),
    };
    for n in 1..=2 {
        q.push(msg(n), n, false).expect("queued");
    }
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert!(flushed.batch_refused);
    assert_eq!(tokens(&finished), [1, 2]);
    assert_eq!(
        wire.take(),
        [Sent::Messages(vec![1]), Sent::Messages(vec![2])]
    );
}

#[test]
fn a_message_the_transport_refuses_is_finished_with_the_error() {
    let mut q = SendQueue::new(limits(8, 1, Duration::ZERO));
    let mut wire = Wire {
        sent: Vec::new(),
        answer: Box::new(|bytes| {
            Err(TransportError::MessageTooLarge {
                len: bytes.len(),
                max: 1,
            })
        }),
    };
    q.push(msg(1), 1, true).expect("queued");
    let (_, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1]);
    assert!(finished[0].result.is_err());
    assert!(q.is_empty());
}

#[test]
fn a_message_too_large_even_for_pieces_is_refused_at_once() {
    let mut q: SendQueue<u64> = SendQueue::new(QueueLimits {
        frame_limit: CHUNK_OVERHEAD,
        ..limits(8, 1, Duration::ZERO)
    });
    let big = Codec::new(LIMIT)
        .encode(Kind::Registry, &vec![7u8; 150])
        .expect("encodes");
    let refused = q.push(big.clone(), 1, true).expect_err("refused");
    assert_eq!((refused.token, refused.gated), (1, Some(big.len())));
    assert!(refused.result.is_err() && q.is_empty());
}

#[test]
fn draining_hands_back_every_message_unsent() {
    let mut q = SendQueue::new(limits(8, 1, Duration::ZERO));
    q.push(msg(1), 1, true).expect("queued");
    q.push_control(msg(2), 2).expect("queued");
    let drained: Vec<Finished<u64>> = q.drain().collect();
    assert_eq!(tokens(&drained), [2, 1]);
    assert!(drained.iter().all(|f| f.result.is_err()));
    assert!(q.is_empty());
}

/// A request-kind envelope (one an older build cannot read anyway) of
/// about `len` bytes that compresses well.
fn compressible_msg(len: usize) -> Vec<u8> {
    Codec::new(LIMIT)
        .encode(Kind::Request, &vec![b'x'; len])
        .expect("encodes")
}

fn compressing(above: usize) -> SendQueue<u64> {
    let mut q = SendQueue::new(QueueLimits {
        compress_above: Some(above),
        ..limits(8, 16, Duration::ZERO)
    });
    q.set_compression(true);
    q
}

fn kind_of(bytes: &[u8]) -> u8 {
    bytes[5]
}

#[test]
fn a_large_multicast_goes_compressed_once_the_group_reads_it_and_the_window_counts_what_went() {
    let big = compressible_msg(2000);
    // Not before the group speaks a version that reads it.
    let mut q = compressing(1024);
    q.set_compression(false);
    let mut wire = Wire::ok();
    q.push(big.clone(), 1, false).expect("queued");
    let (flushed, _) = wire.flush(&mut q, Instant::now());
    assert_eq!((flushed.multicasts, flushed.compressed), (1, 0));
    assert_eq!(wire.sent[0], big);

    let mut q = SendQueue::new(QueueLimits {
        // Room for one raw message and a compressed one, not two raw.
        window_bytes: big.len() + 200,
        compress_above: Some(1024),
        ..limits(8, 1, Duration::ZERO)
    });
    q.set_compression(true);
    let mut wire = Wire::ok();
    q.push(big.clone(), 1, false).expect("queued");
    q.push(big.clone(), 2, false).expect("queued");
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(
        tokens(&finished),
        [1, 2],
        "the window counts the compressed bytes that went"
    );
    assert_eq!(flushed.compressed, 2);
    let sent = wire.sent.clone();
    assert!(sent
        .iter()
        .all(|b| kind_of(b) == Kind::Compressed as u8 && b.len() < 200));
    assert_eq!(
        flushed.compressed_saved,
        2 * (big.len() - sent[0].len()) as u64
    );
    let codec = Codec::new(LIMIT);
    let opened = codec
        .decompress(codec.decode_frame(&sent[0]).expect("frame").body)
        .expect("opens");
    assert_eq!(opened, big);
    // Delivered back at the length that went, the window is free again.
    for b in &sent {
        q.own_delivered(b.len());
    }
    assert_eq!(q.in_flight(), 0);
    assert!(q.half_free());
}

#[test]
fn a_batch_of_small_messages_is_compressed_whole() {
    let mut q = compressing(1024);
    let mut wire = Wire::ok();
    for n in 1..=8 {
        q.push(compressible_msg(200), n, false).expect("queued");
    }
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        (flushed.multicasts, flushed.batches, flushed.compressed),
        (1, 1, 1)
    );
    let codec = Codec::new(LIMIT);
    let opened = codec
        .decompress(codec.decode_frame(&wire.sent[0]).expect("frame").body)
        .expect("opens");
    let inner = codec.decode_frame(&opened).expect("batch");
    assert_eq!(inner.kind, Kind::Batch);
    assert_eq!(codec.split_batch(inner.body).expect("splits").len(), 8);
}

#[test]
fn below_the_threshold_or_incompressible_a_multicast_goes_as_it_is() {
    let mut q = compressing(4096);
    let mut wire = Wire::ok();
    let small = compressible_msg(2000);
    q.push(small.clone(), 1, false).expect("queued");
    let (flushed, _) = wire.flush(&mut q, Instant::now());
    assert_eq!(flushed.compressed, 0);
    assert_eq!(wire.sent.pop(), Some(small));

    let mut q = compressing(64);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let noisy = Codec::new(LIMIT)
        .encode(Kind::Request, &noise)
        .expect("encodes");
    q.push(noisy.clone(), 1, false).expect("queued");
    let (flushed, _) = wire.flush(&mut q, Instant::now());
    assert_eq!(flushed.compressed, 0);
    assert_eq!(wire.sent.pop(), Some(noisy));
}

#[test]
fn what_an_older_build_could_read_never_goes_compressed() {
    let codec = Codec::new(LIMIT);
    let padding = vec![b'x'; 2000];
    // A refusal notice (read by every version) with traffic, in one batch.
    let mut q = compressing(64);
    let mut wire = Wire::ok();
    q.push_control(codec.encode(Kind::Refusal, &padding).expect("encodes"), 1)
        .expect("queued");
    q.push(compressible_msg(2000), 2, false).expect("queued");
    let (flushed, finished) = wire.flush(&mut q, Instant::now());
    assert_eq!(tokens(&finished), [1, 2]);
    assert_eq!((flushed.batches, flushed.compressed), (1, 0));
    // Traffic written before the group moved up to the version.
    let older = codec.at_version(crate::wire::COMPRESSION_VERSION - 1);
    let mut q = compressing(64);
    q.push(
        older.encode(Kind::Request, &padding).expect("encodes"),
        1,
        false,
    )
    .expect("queued");
    let (flushed, _) = wire.flush(&mut q, Instant::now());
    assert_eq!(flushed.compressed, 0);
    assert_eq!(
        kind_of(&wire.sent[wire.sent.len() - 1]),
        Kind::Request as u8
    );
}

#[test]
fn the_pieces_of_a_large_message_go_compressed_each_and_put_back_the_message() {
    let mut q: SendQueue<u64> = SendQueue::new(QueueLimits {
        frame_limit: 1024,
        compress_above: Some(512),
        ..limits(64, 1, Duration::ZERO)
    });
    q.set_compression(true);
    let mut wire = Wire::ok();
    let big = compressible_msg(10_000);
    q.push(big.clone(), 1, false).expect("queued");
    let (flushed, _) = wire.flush(&mut q, Instant::now());
    assert!(flushed.pieces >= 10);
    // All but the last, shorter than the threshold.
    assert_eq!(flushed.compressed, flushed.pieces - 1);
    let codec = Codec::new(LIMIT);
    let mut pieces = super::super::chunks::Reassembly::default();
    let from = crate::transport::Member::new(1, 1);
    let mut whole = None;
    for b in wire.sent.clone() {
        let opened = match codec.decode_frame(&b).expect("frame") {
            f if f.kind == Kind::Compressed => codec.decompress(f.body).expect("opens"),
            _ => b.clone(),
        };
        let frame = codec.decode_frame(&opened).expect("piece");
        let (head, piece) = codec.decode_chunk(frame.body).expect("head");
        if let super::super::chunks::Piece::Whole(m) =
            pieces.accept(from, head, piece).expect("accepted")
        {
            whole = Some(m);
        }
        q.own_delivered(b.len());
        let _ = q.own_piece_delivered(&head);
    }
    assert_eq!(whole, Some(big));
    assert!(q.is_empty() && q.in_flight() == 0);
}

/// One step of a random run against the queue.
#[derive(Debug, Clone)]
enum Step {
    Push(bool),
    Control,
    Flush,
    Deliver,
    Join,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(Step::Push),
        1 => Just(Step::Control),
        3 => Just(Step::Flush),
        3 => Just(Step::Deliver),
        1 => Just(Step::Join),
    ]
}

proptest! {
    /// Whatever the interleaving of messages (some in pieces), flushes,
    /// deliveries back and joins: the window is never exceeded, traffic
    /// leaves in the order it was queued, every message leaves exactly
    /// once, and a message in pieces leaves only after all its pieces.
    #[test]
    fn traffic_leaves_once_in_order_within_the_window(
        steps in proptest::collection::vec(step(), 1..120),
        window in 1usize..5,
        max_messages in 1usize..5,
        compress in any::<bool>(),
    ) {
        let mut q = SendQueue::new(QueueLimits { frame_limit: 64, compress_above: Some(32), ..limits(window, max_messages, Duration::ZERO) });
        q.set_compression(compress);
        let mut wire = Wire::ok();
        let mut in_flight: std::collections::VecDeque<Vec<u8>> = Default::default();
        let mut next = 1u64;
        let mut left = Vec::new();
        let mut pushed_traffic = Vec::new();
        let big = |n: u64| Codec::new(LIMIT).encode(Kind::Registry, &(n, vec![0u8; 120])).expect("encodes");
        let mut all = std::collections::BTreeSet::new();
        for step in steps.into_iter().chain(std::iter::repeat_n(Step::Deliver, 1000).flat_map(|d| [d, Step::Flush])) {
            match step {
                Step::Push(large) => {
                    let bytes = if large { big(next) } else { msg(next) };
                    q.push(bytes, next, true).expect("fits in pieces");
                    pushed_traffic.push(next);
                    all.insert(next);
                    next += 1;
                }
                Step::Control => {
                    q.push_control(msg(next), next).expect("queued");
                    all.insert(next);
                    next += 1;
                }
                Step::Flush => {
                    let (_, finished) = wire.flush(&mut q, Instant::now());
                    left.extend(tokens(&finished));
                    in_flight.extend(wire.sent.drain(..));
                    prop_assert!(in_flight.len() <= window);
                }
                Step::Deliver => {
                    if let Some(bytes) = in_flight.pop_front() {
                        q.own_delivered(bytes.len());
                        if let Sent::Piece(head) = read(&bytes) {
                            if let Some(done) = q.own_piece_delivered(&head) {
                                left.push(done.token);
                            }
                        }
                    }
                }
                Step::Join => {
                    q.confchg(true);
                }
            }
        }
        prop_assert!(q.is_empty(), "everything left in the end");
        let mut sorted = left.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), left.len(), "a message left twice");
        prop_assert_eq!(sorted.into_iter().collect::<std::collections::BTreeSet<_>>(), all);
        let traffic: Vec<u64> = left.iter().copied().filter(|t| pushed_traffic.contains(t)).collect();
        prop_assert_eq!(traffic, pushed_traffic);
    }
}
