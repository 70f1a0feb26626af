//! Re-running the election core over a recorded stream.
//!
//! The core needs no user type, so any election recording replays here
//! (and in `acpg replay FILE`). The replay drives the core as the runtime
//! does (`super::runtime`): each delivery decoded at any version, each
//! confchg, each quorum notification of the recording node, the write
//! version followed after every input. Two inputs are not in the file and
//! change no decision: the local clock at a confchg (it only enters the
//! info this member multicasts, which the recording holds as delivered)
//! and the stand and withdraw calls (their messages are in the stream).

use super::core::{Action, CandidacyOp, ElectionCore};
use super::messages::decode_envelope;
use super::{ElectionConfig, ElectionRefusals, Named};
use crate::record::{Recorded, Recording, Replayed};
use crate::wire::Codec;

/// Feeds an election recording ([`crate::record::Protocol::Election`]) to
/// a fresh decision core configured as `config` (the recording member's
/// role, buffering cap, message size and protocol versions; its key and
/// path do not matter) and returns every decision it takes, in order and
/// in words: each [`super::ElectionEvent`] the member emitted, in its
/// `Display` wording, what it did with its own candidacy changes, and each
/// message it refused or dropped, with the cause.
pub fn replay(recording: &Recording, config: &ElectionConfig) -> Vec<Replayed> {
    let mut codec = Codec::new(config.max_message_size).reading(config.protocol_versions);
    let mut core = ElectionCore::with_cap(recording.local, config.max_buffered_ops)
        .with_role(config.role)
        .with_versions(config.protocol_versions);
    let mut out = Vec::new();
    for (position, entry) in recording.entries.iter().enumerate() {
        let mut say = |decision: String| out.push(Replayed { position, decision });
        let actions = match entry {
            Recorded::ConfChg {
                members,
                joined,
                left,
            } => core.handle_confchg(members, joined, left, 0),
            Recorded::Quorum(q) => core.handle_quorum(q.clone()),
            Recorded::Deliver { from, bytes } => match decode_envelope(&codec, bytes) {
                Ok((version, msg)) => {
                    let before = core.refused();
                    let actions = core.handle_envelope(*from, version, msg);
                    for cause in refusal_causes(&before, &core.refused()) {
                        say(format!("refused a message from {from} ({cause})"));
                    }
                    actions
                }
                Err(e) => {
                    say(format!("dropped a message from {from}: {e}"));
                    core.count_undecodable(&e);
                    Vec::new()
                }
            },
        };
        if let Some(v) = core.write_version() {
            if v != codec.version() {
                codec = codec.at_version(v);
            }
        }
        for action in actions {
            let decision = match action {
                // Protocol traffic, not decisions: what it carries is in
                // the stream where it lands.
                Action::Mcast(_) | Action::Purge => continue,
                Action::Event(event) => event.to_string(),
                Action::Applied(op) => format!("own {} took effect", candidacy(&op)),
                Action::Resend(op) => format!("send own {} again", candidacy(&op)),
                Action::GiveUp => "leave the group (too many candidacy changes held)".into(),
                Action::Refused {
                    ours,
                    group_version,
                } => {
                    say(format!(
                        "this member is refused: it speaks {ours}, the group v{group_version}; stop"
                    ));
                    // The runtime stops here.
                    return out;
                }
            };
            say(decision);
        }
    }
    out
}

fn candidacy(op: &CandidacyOp) -> String {
    match op {
        CandidacyOp::Stand(name) => format!("candidacy in {}", Named(name)),
        CandidacyOp::Withdraw(name) => format!("withdrawal from {}", Named(name)),
    }
}

/// The causes whose count grew from `before` to `after`.
fn refusal_causes(before: &ElectionRefusals, after: &ElectionRefusals) -> Vec<&'static str> {
    [
        ("not a member", before.not_member, after.not_member),
        (
            "incompatible versions",
            before.incompatible,
            after.incompatible,
        ),
        ("ring sequence jump", before.ring_jump, after.ring_jump),
        ("epoch jump", before.epoch_jump, after.epoch_jump),
        ("malformed", before.malformed, after.malformed),
        ("from an observer", before.observer, after.observer),
        ("protocol version", before.version, after.version),
    ]
    .into_iter()
    .filter(|(_, b, a)| a > b)
    .map(|(cause, _, _)| cause)
    .collect()
}
