use super::*;
use crate::group::messages::RegistryOp;
use crate::transport::MemberChange;
use crate::transport::Reason;
use crate::wire::{push_to_batch, HEADER_LEN, NEXT_PROTOCOL_VERSION};

fn codec() -> Codec {
    Codec::new(1 << 16)
}

fn register(name: &str, token: u64) -> Vec<u8> {
    codec()
        .encode(
            Kind::Registry,
            &RegistryOp::Register {
                name: name.into(),
                token,
            },
        )
        .expect("encode")
}

/// A batch of `envelopes`, framed as the runtime frames one.
fn batch(envelopes: &[&[u8]]) -> Vec<u8> {
    let mut out = codec().begin_batch(1024);
    for envelope in envelopes {
        push_to_batch(&mut out, envelope);
    }
    out
}

/// An envelope whose header is right and whose body does not decode.
fn garbage() -> Vec<u8> {
    let mut bad = register("x", 1);
    bad.truncate(HEADER_LEN + 3);
    bad
}

#[test]
fn a_batch_with_one_bad_envelope_keeps_the_others_in_order() {
    let (a, bad, b) = (register("a", 1), garbage(), register("b", 2));
    let message = batch(&[&a, &bad, &b]);
    let unpacked = unpack(&codec(), &message, false).expect("the framing splits");
    assert!(unpacked.batch);
    assert_eq!(unpacked.envelopes.len(), 3);
    assert!(unpacked.envelopes[0].is_ok());
    assert!(unpacked.envelopes[2].is_ok());
    // The bad one decodes as a frame (its header is right) and fails in the
    // core's decode, alone.
    let mut core = GroupCore::new(Member::new(1, 1));
    let frame = unpacked.envelopes[1].clone().expect("a frame");
    assert!(handle_envelope(&mut core, &codec(), Member::new(2, 2), frame).is_err());
}

#[test]
fn a_batch_whose_framing_does_not_split_is_dropped_whole() {
    let a = register("a", 1);
    let mut message = batch(&[&a, &a]);
    message.truncate(message.len() - 2);
    assert!(unpack(&codec(), &message, false).is_err());
}

#[test]
fn an_envelope_with_a_bad_header_inside_a_batch_is_dropped_alone() {
    let a = register("a", 1);
    let message = batch(&[&a, b"not a frame", &a]);
    let unpacked = unpack(&codec(), &message, false).expect("the framing splits");
    let lens: Vec<Option<usize>> = unpacked
        .envelopes
        .iter()
        .map(|e| e.as_ref().err().map(|(len, _)| *len))
        .collect();
    assert_eq!(lens, vec![None, Some(11), None]);
}

#[test]
fn a_message_put_back_together_that_is_a_piece_is_dropped() {
    let piece = codec().encode_chunk(
        ChunkHead {
            id: 1,
            index: 0,
            count: 1,
            total: 1,
        },
        b"x",
    );
    assert!(unpack(&codec(), &piece, true).is_err());
}

#[test]
fn a_single_envelope_is_not_a_batch() {
    let a = register("a", 1);
    let unpacked = unpack(&codec(), &a, false).expect("one envelope");
    assert!(!unpacked.batch);
    assert_eq!(unpacked.envelopes.len(), 1);
}

#[test]
fn pieces_complete_a_message_at_the_place_of_the_last() {
    let codec = codec();
    let whole = register("long", 3);
    let (first, second) = whole.split_at(whole.len() / 2);
    let from = Member::new(2, 2);
    let mut pieces = Reassembly::default();
    let head = |index| ChunkHead {
        id: 9,
        index,
        count: 2,
        total: whole.len() as u64,
    };
    let one = codec.encode_chunk(head(0), first);
    let two = codec.encode_chunk(head(1), second);
    assert!(matches!(
        receive(&codec, &mut pieces, from, &one),
        Ok(Received::Piece {
            outcome: Piece::Pending,
            ..
        })
    ));
    match receive(&codec, &mut pieces, from, &two) {
        Ok(Received::Piece {
            outcome: Piece::Whole(message),
            ..
        }) => assert_eq!(message, whole),
        _ => panic!("the last piece completes the message"),
    }
}

#[test]
fn a_request_nobody_here_hosts_is_skipped_without_the_core() {
    let codec = codec();
    let local = Member::new(1, 1);
    let mut core = GroupCore::new(local);
    let change = |member| MemberChange {
        member,
        reason: Reason::Join,
    };
    let other = Member::new(2, 2);
    // Both found the group and announce themselves.
    let announce = core
        .handle_confchg(&[local, other], &[change(local), change(other)], &[])
        .into_iter()
        .find_map(|c| match c {
            Command::Mcast(crate::group::core::Outgoing::Announce(a)) => Some(a),
            _ => None,
        })
        .expect("an announcement");
    for member in [local, other] {
        core.handle_message(member, Inbound::Announce(announce));
    }
    let request = crate::group::messages::Request {
        id: 5,
        target: "nobody".into(),
        type_tag: "t".into(),
        want_reply: false,
        fence: None,
        payload: vec![1, 2, 3],
    };
    let bytes = codec.encode(Kind::Request, &request).expect("encode");
    let frame = codec.decode_frame(&bytes).expect("frame");
    assert!(matches!(
        handle_envelope(&mut core, &codec, other, frame),
        Ok(Handled::Skipped)
    ));
}

#[test]
fn a_message_at_a_version_some_member_does_not_speak_is_refused_before_the_core() {
    use crate::group::messages::Announce;
    use crate::roster::Announcement;
    use crate::wire::Versions;
    let (a, b) = (Member::new(1, 1), Member::new(2, 2));
    let new = Versions {
        min: 2,
        max: NEXT_PROTOCOL_VERSION,
    };
    let mut core = GroupCore::new(b).with_versions(new);
    let joined = [
        MemberChange {
            member: a,
            reason: Reason::Join,
        },
        MemberChange {
            member: b,
            reason: Reason::Join,
        },
    ];
    core.handle_confchg(&[a, b], &joined, &[]);
    for (from, versions) in [(a, Versions::this_build()), (b, new)] {
        core.handle_message(
            from,
            Inbound::Announce(Announce {
                announcement: Announcement::speaking(versions),
                synced: true,
            }),
        );
    }
    let reads_new = codec().reading(new);
    let at_next = reads_new
        .at_version(NEXT_PROTOCOL_VERSION)
        .encode(
            Kind::Registry,
            &RegistryOp::Register {
                name: "x".into(),
                token: 1,
            },
        )
        .expect("encode");
    let frame = reads_new
        .decode_frame(&at_next)
        .expect("this build reads it");
    let before = core.clone();
    match handle_envelope(&mut core, &reads_new, b, frame) {
        Ok(Handled::Core(cmds)) => assert_eq!(
            cmds,
            vec![Command::Dropped {
                from: b,
                cause: DropCause::Version
            }]
        ),
        _ => panic!("not refused"),
    }
    assert_eq!(core, before, "nothing changed");
    // The old member cannot even read it.
    assert_eq!(
        codec().decode_frame(&at_next),
        Err(WireError::UnsupportedVersion(NEXT_PROTOCOL_VERSION))
    );
}

fn compressed(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(codec().compress_into(frame, &mut out), "compresses");
    out
}

/// A registration with a long, repetitive name: compresses well.
fn long_register(token: u64) -> Vec<u8> {
    register(&"n".repeat(600), token)
}

#[test]
fn a_compressed_delivery_is_read_as_the_multicast_it_stands_for() {
    let mut pieces = Reassembly::default();
    let from = Member::new(2, 2);
    let plain = batch(&[&long_register(1), &long_register(2)]);
    let packed = compressed(&plain);
    let received = receive(&codec(), &mut pieces, from, &packed).expect("opens");
    let (whole, reassembled) = received.into_whole().expect("whole");
    assert!(!reassembled);
    assert_eq!(&whole[..], &plain[..]);
    let unpacked = unpack(&codec(), &whole, false).expect("splits");
    assert!(unpacked.batch && unpacked.envelopes.iter().all(Result::is_ok));

    // A compressed piece goes to the reassembly like any piece.
    let message = long_register(3);
    let head = ChunkHead {
        id: 1,
        index: 0,
        count: 1,
        total: message.len() as u64,
    };
    let piece = compressed(&codec().encode_chunk(head, &message));
    match receive(&codec(), &mut pieces, from, &piece).expect("opens") {
        Received::Piece {
            outcome: super::Piece::Whole(m),
            ..
        } => assert_eq!(m, message),
        _ => panic!("not taken as a whole piece"),
    }
}

#[test]
fn a_compressed_frame_that_does_not_open_or_nests_is_dropped_whole() {
    let mut pieces = Reassembly::default();
    let from = Member::new(2, 2);
    let packed = compressed(&long_register(1));
    // Opens past this member's limit: refused on the claim.
    let small = Codec::new(256);
    let refused = receive(&small, &mut pieces, from, &packed)
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("above the limit"), "{refused}");
    // A block cut short.
    let cut = &packed[..packed.len() - 4];
    assert!(receive(&codec(), &mut pieces, from, cut).is_err());
    // Compressed in compressed (written by hand: it would not shrink).
    let mut nested = packed[..HEADER_LEN].to_vec();
    nested.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    nested.extend_from_slice(&lz4_flex::block::compress(&packed));
    let refused = receive(&codec(), &mut pieces, from, &nested)
        .err()
        .expect("refused");
    assert!(
        refused.to_string().contains("inside a compressed"),
        "{refused}"
    );
    // Named at a version before compression.
    let mut old = packed.clone();
    old[4] = crate::wire::COMPRESSION_VERSION - 1;
    let older_reader = codec().reading(crate::wire::Versions {
        min: 2,
        max: crate::wire::PROTOCOL_VERSION,
    });
    assert!(receive(&older_reader, &mut pieces, from, &old).is_err());
    // Inside a batch, or as a message put back together from pieces.
    assert!(unpack(&codec(), &packed, true).is_err());
    assert!(unpack(&codec(), &packed, false).is_err());
}

/// Whether `inner` lies inside `outer`'s memory.
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let start = outer.as_ptr() as usize;
    let at = inner.as_ptr() as usize;
    start <= at && at + inner.len() <= start + outer.len()
}

/// An envelope whose body is one `wire::Payload` of `len` bytes.
fn payload_envelope(len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i / 7) as u8).collect();
    codec()
        .encode(Kind::Request, &crate::wire::Payload::from(data))
        .expect("encode")
}

/// The payload of a whole message's only envelope, decoded as the runtime
/// decodes an actor's message: with the message's buffer current.
fn payload_in(buffer: &Bytes) -> crate::wire::Payload {
    let _current = crate::wire::Delivery::enter(buffer);
    let unpacked = unpack(&codec(), buffer, false).expect("splits");
    let frame = unpacked.envelopes[0].clone().expect("a frame");
    codec().decode_payload(frame.body).expect("decodes")
}

#[test]
fn a_payload_delivered_alone_shares_the_delivered_buffer() {
    let delivered = Bytes::from(payload_envelope(16 << 10));
    let mut pieces = Reassembly::default();
    let received = receive(&codec(), &mut pieces, Member::new(2, 2), &delivered).expect("reads");
    let (message, _) = received.into_whole().expect("whole");
    let buffer = whole_buffer(&delivered, message);
    assert_eq!(buffer.as_ptr(), delivered.as_ptr());
    let payload = payload_in(&buffer);
    assert_eq!(payload.len(), 16 << 10);
    assert!(within(&payload, &delivered));
}

#[test]
fn a_payload_put_back_together_from_pieces_shares_the_reassembled_buffer() {
    let codec = codec();
    let whole = payload_envelope(40 << 10);
    let from = Member::new(2, 2);
    let mut pieces = Reassembly::default();
    let parts: Vec<&[u8]> = whole.chunks(16 << 10).collect();
    let mut last = None;
    for (index, part) in parts.iter().enumerate() {
        let head = ChunkHead {
            id: 4,
            index: index as u32,
            count: parts.len() as u32,
            total: whole.len() as u64,
        };
        let delivered = Bytes::from(codec.encode_chunk(head, part));
        if let Received::Piece {
            outcome: Piece::Whole(message),
            ..
        } = receive(&codec, &mut pieces, from, &delivered).expect("reads")
        {
            last = Some((message, delivered));
        }
    }
    let (message, delivered) = last.expect("the last piece completes the message");
    let reassembled = message.as_ptr();
    let buffer = whole_buffer(&delivered, Cow::Owned(message));
    assert_eq!(
        buffer.as_ptr(),
        reassembled,
        "the reassembled buffer, not a copy"
    );
    let payload = payload_in(&buffer);
    assert_eq!(&payload[..], &whole[whole.len() - payload.len()..]);
    assert!(within(&payload, &buffer));
}

#[test]
fn a_payload_delivered_compressed_shares_the_opened_buffer() {
    let plain = payload_envelope(32 << 10);
    let delivered = Bytes::from(compressed(&plain));
    let mut pieces = Reassembly::default();
    let received = receive(&codec(), &mut pieces, Member::new(2, 2), &delivered).expect("opens");
    let (message, _) = received.into_whole().expect("whole");
    let Cow::Owned(opened) = message else {
        panic!("a compressed delivery opens into a buffer of its own");
    };
    let at = opened.as_ptr();
    let buffer = whole_buffer(&delivered, Cow::Owned(opened));
    assert_eq!(buffer.as_ptr(), at, "the opened buffer, not a copy");
    let payload = payload_in(&buffer);
    assert_eq!(&payload[..], &plain[plain.len() - payload.len()..]);
    assert!(within(&payload, &buffer));
}
