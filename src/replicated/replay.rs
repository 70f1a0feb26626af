//! Re-running a replica's core over a recorded stream.
//!
//! A replica's decisions depend on its state machine: the commands it
//! applies are the user's type, a joiner restores the user's snapshot,
//! and a command that does not decode is skipped (so the applied count,
//! the state id and what the installs compare follow it). So the replay is
//! generic over `S`, and only the program that knows `S` can run it;
//! `acpg replay FILE` says so for a replica recording.
//!
//! The replay drives the core as the runtime does (`super::runtime`): each
//! delivery decoded at any version, each confchg, the write version
//! followed after every input. Not in the file, and deciding nothing: the
//! quorum notifications and the learning timer (both only make this
//! member multicast, and what it multicast is in the stream where it
//! landed), the snapshot this member encoded for others, and the calls of
//! its handles (their commands are in the stream).
//!
//! Limit: a durable replica ([`super::ReplicaConfig::data_dir`]) starts
//! from the state its directory held, which the recording does not hold.
//! The replay starts from `S::default()`, so for a replica that recovered
//! a state its decisions differ from the live ones from the first install
//! on; a recording made from an empty directory replays as any other.

use super::core::{Action, ReplicaCore};
use super::{RefusedCounts, ReplicaConfig, StateId, StateMachine};
use crate::record::{Recorded, Recording, Replayed};
use crate::wire::Codec;

/// Feeds a replica recording ([`crate::record::Protocol::Replica`]) to a
/// fresh core of `S` configured as `config` (the recording replica's
/// delivery, founding flag, role, buffer caps, message size and protocol
/// versions; its key and path do not matter) and returns every decision
/// it takes, in order and in words:
///
/// - each [`super::ReplicaEvent`] the core emitted, in its `Display`
///   wording (views, installs, primary changes, transfers, restores);
/// - each change of the state this replica holds:
///   `state 12 (epoch 5.1, genesis 3f..)` once a command (or a restore)
///   moved it;
/// - the outcome of this replica's own commands (`own command 4 applied
///   at state 12`, or refused with why);
/// - each message refused or dropped, with the cause, and a stop (`stop:
///   ...`) where the runtime stopped.
///
/// What the runtime adds around the core is not here: `TransferEncoded`
/// (the encoding of a capture) and `Closed`.
pub fn replay<S: StateMachine>(recording: &Recording, config: &ReplicaConfig) -> Vec<Replayed> {
    let mut codec = Codec::new(config.max_message_size).reading(config.protocol_versions);
    let mut core = ReplicaCore::<S>::from_config(recording.local, codec, config);
    let mut out = Vec::new();
    let mut state = core.state_id();
    for (position, entry) in recording.entries.iter().enumerate() {
        let mut say = |decision: String| out.push(Replayed { position, decision });
        let actions = match entry {
            Recorded::ConfChg {
                members,
                joined,
                left,
            } => core.handle_confchg(members, joined, left),
            // A replica records none (see the module docs).
            Recorded::Quorum(_) => Vec::new(),
            Recorded::Deliver { from, bytes } => match super::runtime::unpack(&codec, bytes) {
                Ok(pieces) => {
                    let mut actions = Vec::new();
                    for piece in pieces {
                        match piece {
                            Ok((version, msg)) => {
                                let before = core.refused();
                                actions.extend(core.handle_message(*from, version, msg));
                                for cause in refusal_causes(&before, &core.refused()) {
                                    say(format!("refused a message from {from} ({cause})"));
                                }
                            }
                            Err(e) => say(format!("dropped a message from {from}: {e}")),
                        }
                    }
                    actions
                }
                Err(e) => {
                    say(format!("dropped a message from {from}: {e}"));
                    Vec::new()
                }
            },
        };
        if let Some(v) = core.writes_at() {
            if v != codec.version() {
                codec = codec.at_version(v);
            }
        }
        let mut stop = false;
        for action in actions {
            let decision = match action {
                // Protocol traffic, not decisions: what it carries is in
                // the stream where it lands. A capture to send is
                // announced by the core's `TransferStarted`.
                Action::Mcast(_)
                | Action::Purge
                | Action::SendSnapshot { .. }
                | Action::Digest { .. }
                | Action::Persist(_)
                | Action::Rebase { .. } => continue,
                Action::Event(event) => event.to_string(),
                Action::Reply { id, result } => match result {
                    Ok(executed) => format!(
                        "own command {id} applied at state {}",
                        executed.state.applied
                    ),
                    Err(e) => format!("own command {id} not applied: {e}"),
                },
                Action::Read { ids } => format!("own reads {ids:?} evaluated"),
                Action::ReadDone { ids, at } => {
                    format!("own reads {ids:?} answered at state {}", at.applied)
                }
                Action::ReadFailed { ids, error } => format!("own reads {ids:?} failed: {error}"),
                Action::Fatal(why) => {
                    stop = true;
                    format!("stop: {why}")
                }
                Action::Refused(r) => {
                    stop = true;
                    format!(
                        "stop: this replica is refused: it speaks {}, the group v{}",
                        r.versions, r.group_version
                    )
                }
            };
            say(decision);
            if stop {
                break;
            }
        }
        if core.state_id() != state {
            state = core.state_id();
            say(describe_state(&state));
        }
        if stop {
            break;
        }
    }
    out
}

/// `state 12 (epoch 5.1, genesis 3f2a..)`.
fn describe_state(id: &StateId) -> String {
    format!(
        "state {} (epoch {}, genesis {:x})",
        id.applied, id.epoch, id.genesis
    )
}

/// The causes whose count grew from `before` to `after`.
fn refusal_causes(before: &RefusedCounts, after: &RefusedCounts) -> Vec<&'static str> {
    [
        ("not a member", before.not_member, after.not_member),
        ("epoch past the stream", before.epoch, after.epoch),
        ("inconsistent info", before.inconsistent, after.inconsistent),
        ("snapshot chunk", before.chunk, after.chunk),
        ("stale info", before.stale, after.stale),
        ("hold buffer full", before.overflow, after.overflow),
        ("protocol version", before.version, after.version),
        (
            "incompatible versions",
            before.incompatible,
            after.incompatible,
        ),
        ("from an observer", before.observer, after.observer),
    ]
    .into_iter()
    .filter(|(_, b, a)| a > b)
    .map(|(cause, _, _)| cause)
    .collect()
}
