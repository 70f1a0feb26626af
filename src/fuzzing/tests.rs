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

/// The target function a fuzz target's directory name stands for.
fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "wire" => wire,
        "bodies" => bodies,
        "group" => |d| {
            group(d);
        },
        "supervisor" => |d| {
            supervisor(d);
        },
        "replicated" => |d| {
            replicated(d);
        },
        "election" => |d| {
            election(d);
        },
        _ => return None,
    })
}

/// Every committed seed (`fuzz/corpus/<target>/seed-*`) and every crash a
/// fuzzer found (`fuzz/regressions/<target>/*`) runs through its target:
/// the seeds stay valid inputs of the stream format, and fixed crashes
/// stay fixed.
#[test]
fn committed_seeds_and_regressions_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    let mut failed = Vec::new();
    for (dir, only_seeds) in [("corpus", true), ("regressions", false)] {
        let Ok(targets) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for t in targets.flatten() {
            let name = t.file_name().to_string_lossy().into_owned();
            let run = target(&name).unwrap_or_else(|| panic!("{dir}/{name}: no such target"));
            for file in std::fs::read_dir(t.path()).expect("target dir").flatten() {
                let file_name = file.file_name().to_string_lossy().into_owned();
                if only_seeds && !file_name.starts_with("seed-") {
                    continue;
                }
                let data = std::fs::read(file.path()).expect("readable");
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    failed.push(format!("{dir}/{name}/{file_name}"));
                }
                ran += 1;
            }
        }
    }
    assert!(failed.is_empty(), "failing inputs: {failed:?}");
    assert!(ran >= 30, "only {ran} committed inputs found");
}

/// Seeds from real runs reach the cores' held states (they are worth
/// seeding with), not just the decoders' error paths. (An election's info
/// names its raw view, which the made-up second driven member changes: the
/// converter re-tags recorded infos, or no election seed would install.)
#[test]
fn seeds_from_recordings_reach_held_states() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (seed, run) in [
        ("group/seed-registry-1", group as fn(&[u8]) -> Outcome),
        ("supervisor/seed-supervision-1", supervisor),
        ("replicated/seed-replicated-1", replicated),
        ("election/seed-election-1", election),
        ("election/seed-election-3", election),
    ] {
        let outcome = run(&std::fs::read(dir.join(seed)).expect("seed committed"));
        assert!(outcome.accepted > 5, "{seed}: {outcome:?}");
        assert!(outcome.holding, "{seed}: {outcome:?}");
    }
}

/// The stream of a two-member replica group that becomes primary, then
/// one delivery of `command` from member 0.
fn primary_then_command(command: &crate::kv::KvCommand) -> Vec<u8> {
    use crate::replicated::fuzz_access::{CommandMsg, ReplicaMessage};
    let codec = Codec::new(LIMIT);
    let payload = codec.encode_payload(command).expect("encodes");
    let msg = ReplicaMessage::Command(CommandMsg { id: 1, payload });
    let bytes = codec.encode(Kind::Replicated, &msg).expect("encodes");
    let mut ops = vec![Op::Quorum {
        quorate: true,
        ring_step: 1,
        nodes: 0b11,
    }];
    ops.extend((0..8).map(|i| Op::Echo { core: i, index: 0 }));
    ops.push(Op::Deliver {
        sender: 0,
        wrap: 0,
        bytes,
    });
    Stream {
        pool: pool(),
        first: 0,
        flags: 0,
        ops,
    }
    .encode()
}

#[test]
fn a_command_from_a_member_reaches_a_primary_replica() {
    let put = crate::kv::KvCommand::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let outcome = replicated(&primary_then_command(&put));
    assert!(outcome.holding && outcome.accepted == 1, "{outcome:?}");
}

/// Found by the harness: one `Fill` command of 60 bytes from any member
/// made every replica write `count × size` bytes (`u32::MAX` squared at
/// most), exhausting every member's memory at once. A fill is now capped
/// (`kv::MAX_FILL_BYTES`); the harness counts what capped fills may write
/// into its memory bound.
#[test]
fn a_huge_fill_from_a_member_writes_nothing() {
    let fill = |count, size| crate::kv::KvCommand::Fill {
        prefix: "x".into(),
        count,
        size,
    };
    for (count, size) in [(u32::MAX, u32::MAX), (u32::MAX, 0), (100_000, 1_000)] {
        let outcome = replicated(&primary_then_command(&fill(count, size)));
        assert!(outcome.holding && outcome.accepted == 1, "{outcome:?}");
    }
    // Within the cap a fill writes, and the bound allows for it.
    replicated(&primary_then_command(&fill(100_000, 100)));
}

/// With flag bit 3 the replicas ask for reads as the stream goes: in a
/// quiet stream they are answered, in agreed and in safe delivery, and
/// the subject checks each read's bookkeeping (asked, evaluated once,
/// answered once) on the way.
#[test]
fn reads_asked_along_a_quiet_stream_are_answered() {
    for flags in [8, 8 | 2] {
        let mut ops = vec![Op::Quorum {
            quorate: true,
            ring_step: 1,
            nodes: 0b11,
        }];
        ops.extend((0..64).map(|i| Op::Echo { core: i, index: 0 }));
        let data = Stream {
            pool: pool(),
            first: 0,
            flags,
            ops,
        }
        .encode();
        let outcome = replicated(&data);
        assert!(
            outcome.holding && outcome.reads_answered > 0,
            "flags {flags}: {outcome:?}"
        );
    }
}
