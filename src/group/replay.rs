//! Re-running the group core over a recorded stream.

use super::core::{decode_inbound, Command, GroupCore, Outgoing};
use crate::record::{Recorded, Recording, Replayed};
use crate::wire::Codec;

/// Every decision the registry core takes over `recording`, in words.
pub(crate) fn replay_registry(recording: &Recording, max_message_size: usize) -> Vec<Replayed> {
    let codec = Codec::new(max_message_size);
    let mut core = GroupCore::new(recording.local);
    let mut out = Vec::new();
    for (position, entry) in recording.entries.iter().enumerate() {
        let commands = match entry {
            Recorded::ConfChg {
                members,
                joined,
                left,
            } => core.handle_confchg(members, joined, left),
            Recorded::Deliver { from, bytes } => match decode_inbound(&codec, bytes) {
                Ok(inbound) => core.handle_message(*from, inbound),
                Err(e) => {
                    out.push(Replayed {
                        position,
                        decision: format!("dropped a message from {from}: {e}"),
                    });
                    continue;
                }
            },
        };
        out.extend(commands.into_iter().map(|c| Replayed {
            position,
            decision: describe(c),
        }));
    }
    out
}

fn describe(command: Command) -> String {
    match command {
        Command::Mcast(Outgoing::SyncRequest(r)) => {
            format!("ask for the group state (nonce {})", r.nonce)
        }
        Command::Mcast(Outgoing::Snapshot(s)) => format!(
            "send the group state ({} names) to {} (nonce {})",
            s.names.len(),
            s.for_member,
            s.nonce
        ),
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
        Command::Mcast(Outgoing::Supervision(m)) => format!("multicast supervision fact {m:?}"),
        Command::Supervise(output) => {
            let mut parts: Vec<String> = output.commands.iter().map(|c| format!("{c:?}")).collect();
            parts.extend(output.events.iter().map(|e| format!("{e:?}")));
            format!("supervision: {}", parts.join("; "))
        }
        Command::Reconcile => "match local children to the transferred supervision state".into(),
        Command::Event(event) => format!("{event:?}"),
    }
}
