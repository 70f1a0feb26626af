//! The fuzz harness on stable, without libFuzzer: random streams through
//! every target, so `cargo test` runs the same properties the fuzzers
//! check, and crashes the fuzzers found stay fixed.

use super::*;
use proptest::prelude::*;

/// A member of the default pool, for hand-built streams.
fn member(i: usize) -> Member {
    Member::new(i as u32 + 1, 100 + i as u32)
}

fn pool() -> [Member; POOL] {
    std::array::from_fn(member)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..96))
            .prop_map(|(sender, wrap, bytes)| Op::Deliver { sender, wrap, bytes }),
        1 => any::<[u8; POOL - 2]>().prop_map(|actions| Op::ConfChg { actions }),
        1 => (any::<bool>(), 0u8..3, any::<u8>())
            .prop_map(|(quorate, ring_step, nodes)| Op::Quorum { quorate, ring_step, nodes }),
        1 => any::<u16>().prop_map(|ms| Op::Tick { ms }),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(core, index)| Op::Echo { core, index }),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(op(), 0..80),
    )
        .prop_map(|(first, flags, ops)| {
            Stream {
                pool: pool(),
                first,
                flags,
                ops,
            }
            .encode()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streams_read_back_as_written(ops in proptest::collection::vec(op(), 0..40), first: u8, flags: u8) {
        let s = Stream { pool: pool(), first, flags, ops };
        prop_assert_eq!(Stream::decode(&s.encode()), s);
    }

    #[test]
    fn decoders_hold_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        wire(&data);
        bodies(&data);
    }

    #[test]
    fn group_cores_fed_one_hostile_stream_agree(data in stream()) {
        group(&data);
        supervisor(&data);
    }

    #[test]
    fn replicas_fed_one_hostile_stream_agree(data in stream()) {
        replicated(&data);
    }

    #[test]
    fn election_cores_fed_one_hostile_stream_agree(data in stream()) {
        election(&data);
    }
}

/// A quiet stream (only the cores' own messages going round) reaches the
/// state every core is built to reach: the harness can see a held state,
/// so the agreement checks above are not vacuous.
#[test]
fn echoes_alone_bring_every_core_to_its_state() {
    let mut ops = vec![Op::Quorum {
        quorate: true,
        ring_step: 1,
        nodes: 0b11,
    }];
    ops.extend((0..16).map(|i| Op::Echo { core: i, index: 0 }));
    let data = Stream {
        pool: pool(),
        first: 0,
        flags: 0,
        ops,
    }
    .encode();
    assert!(group(&data).holding, "group");
    assert!(replicated(&data).holding, "replicated");
    assert!(election(&data).holding, "election");
}
