//! Re-running the group core over a recorded stream.

use super::children::child_name;
use super::chunks::Reassembly;
use super::core::{Command, GroupCore, Outgoing};
use super::inbound::{self, Handled};
use super::GroupEvent;
use crate::record::{Recorded, Recording, Replayed};
use crate::supervisor::{Command as SupCommand, SupervisionEvent};
use crate::wire::Codec;

/// Feeds a recording to a fresh decision core and returns every decision it
/// takes, in order and in words: the same ones the recording member took
/// (its deliveries go through the member's own receive pipeline,
/// `super::inbound`). For a registry recording
/// ([`Protocol::Registry`](crate::record::Protocol)); an election's or a
/// replica's replays through [`crate::election::replay`] or
/// [`crate::replicated::replay`].
pub fn replay(recording: &Recording, max_message_size: usize) -> Vec<Replayed> {
    let codec = Codec::new(max_message_size);
    let mut core = GroupCore::new(recording.local);
    let mut pieces = Reassembly::default();
    let mut out = Vec::new();
    for (position, entry) in recording.entries.iter().enumerate() {
        let commands = match entry {
            Recorded::ConfChg {
                members,
                joined,
                left,
            } => {
                let gone: Vec<_> = left.iter().map(|c| c.member).collect();
                pieces.confchg(!joined.is_empty(), &gone);
                core.handle_confchg(members, joined, left)
            }
            // Only elections record them; they take no registry decision.
            Recorded::Quorum(_) => Vec::new(),
            Recorded::Deliver { from, bytes } => {
                let mut commands = Vec::new();
                let mut dropped = |e: &crate::wire::WireError| {
                    out.push(Replayed {
                        position,
                        decision: format!("dropped a message from {from}: {e}"),
                    })
                };
                let whole = match inbound::receive(&codec, &mut pieces, *from, bytes) {
                    Ok(received) => received.into_whole(),
                    Err(e) => {
                        dropped(&e);
                        None
                    }
                };
                if let Some((message, reassembled)) = whole {
                    match inbound::unpack(&codec, &message, reassembled) {
                        Ok(unpacked) => {
                            for envelope in unpacked.envelopes {
                                let handled = envelope.map_err(|(_, e)| e).and_then(|frame| {
                                    inbound::handle_envelope(&mut core, &codec, *from, frame)
                                });
                                match handled {
                                    Ok(Handled::Skipped) => {}
                                    Ok(Handled::Request {
                                        request,
                                        commands: more,
                                        deliver,
                                    }) => {
                                        if deliver {
                                            commands.push(Command::Deliver {
                                                from: *from,
                                                request: request.to_request(),
                                            });
                                        }
                                        commands.extend(more);
                                    }
                                    Ok(Handled::Core(more)) => commands.extend(more),
                                    Err(e) => dropped(&e),
                                }
                            }
                        }
                        Err(e) => dropped(&e),
                    }
                }
                commands
            }
        };
        for command in commands {
            out.extend(
                describe(command)
                    .into_iter()
                    .map(|decision| Replayed { position, decision }),
            );
        }
    }
    out
}

fn members(list: &[crate::transport::Member]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn changes(list: &[crate::transport::MemberChange]) -> String {
    list.iter()
        .map(|c| format!("{} ({:?})", c.member, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(command: Command) -> Vec<String> {
    let one = match command {
        Command::Mcast(Outgoing::Announce(a)) => format!(
            "announce this member ({})",
            if a.synced {
                "holds the group state"
            } else {
                "about to ask for the group state"
            }
        ),
        Command::Mcast(Outgoing::Refusal(r)) => format!(
            "tell {} that the group speaks v{} and refused it",
            r.member, r.group_version
        ),
        Command::Refused(r) => format!(
            "this member is refused: it speaks {}, the group v{}; stop",
            r.versions, r.group_version
        ),
        Command::Mcast(Outgoing::SyncRequest(r)) => {
            format!("ask for the group state (nonce {})", r.nonce)
        }
        Command::Mcast(Outgoing::Snapshot(s)) => format!(
            "send the group state ({} names) to {} (nonce {})",
            s.names.len(),
            s.for_member,
            s.nonce
        ),
        Command::Mcast(Outgoing::Supervision(_)) => {
            "offer this side's supervision state for the merge".to_owned()
        }
        Command::RegisterDone { token, result } => match result {
            Ok(()) => format!("own registration {token} won"),
            Err(owner) => format!("own registration {token} lost to {owner}"),
        },
        Command::Deliver { from, request } => format!(
            "hand request {} from {from} ({}) to the local actor {:?}",
            request.id, request.type_tag, request.target
        ),
        Command::CallDone { id, outcome } => match outcome {
            Ok(_) => format!("own call {id} answered"),
            Err(e) => format!("own call {id} failed: {e}"),
        },
        Command::Reclaim { name } => format!("claim {name:?} again after a merge"),
        Command::Supervise(output) => {
            let mut lines: Vec<String> = output.commands.iter().map(describe_command).collect();
            lines.extend(output.events.iter().filter_map(describe_event));
            return lines;
        }
        Command::Dropped { from, cause } => format!("refuse a message from {from} ({cause:?})"),
        Command::Reconcile => "match local children to the transferred supervision state".into(),
        Command::Event(GroupEvent::ViewChanged {
            members: view,
            joined,
            left,
        }) => {
            let mut s = format!("view [{}]", members(&view));
            if !joined.is_empty() {
                s += &format!("; joined {}", changes(&joined));
            }
            if !left.is_empty() {
                s += &format!("; left {}", changes(&left));
            }
            s
        }
        Command::Event(GroupEvent::NameRegistered { name, host }) => {
            format!("name {name:?} now on {host}")
        }
        Command::Event(
            event @ (GroupEvent::MemberRefused { .. } | GroupEvent::VersionChanged { .. }),
        ) => event.to_string(),
        Command::Event(GroupEvent::NameUnregistered { name, host }) => {
            format!("name {name:?} released by {host}")
        }
        Command::Event(GroupEvent::NameDropped { name, host, reason }) => {
            format!("name {name:?} of {host} dropped ({reason:?})")
        }
        Command::Event(GroupEvent::Ready) => "holds the group state".into(),
        Command::Event(GroupEvent::StateTransferRestarted { buffered }) => {
            format!("gave up waiting after {buffered} buffered messages; asks again")
        }
        Command::Event(GroupEvent::Closed { error }) => format!("closed: {error}"),
    };
    vec![one]
}

fn describe_command(command: &SupCommand) -> String {
    match command {
        SupCommand::StartChild {
            path,
            slot,
            host,
            incarnation,
            token,
            ..
        } => format!(
            "start {} on {host} ({incarnation}, token {token})",
            child_name(path, slot)
        ),
        SupCommand::StopChild {
            path,
            slot,
            host,
            incarnation,
            reason,
            ..
        } => format!(
            "stop {} on {host} ({incarnation}): {reason:?}",
            child_name(path, slot)
        ),
        SupCommand::Escalated { tree, at } => format!("tree {tree} gave up (at {at})"),
        SupCommand::RefuseTree { name, by, why } => {
            format!("refuse tree {name} from {by}: {why:?}")
        }
    }
}

fn describe_event(event: &SupervisionEvent) -> Option<String> {
    match event {
        SupervisionEvent::TreeStarted { .. }
        | SupervisionEvent::ChildExited { .. }
        | SupervisionEvent::ChildWaitsForHost { .. }
        | SupervisionEvent::SupervisorEscalated { .. }
        | SupervisionEvent::QuorumLost
        | SupervisionEvent::QuorumRegained
        | SupervisionEvent::MergeStarted
        | SupervisionEvent::MergeResolved { .. } => Some(event.to_string()),
        // Starts, stops and refusals already appear as commands; ignored
        // events changed nothing.
        _ => None,
    }
}
