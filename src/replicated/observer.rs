//! A replica observer that needs no state machine type: it follows a group
//! of any [`StateMachine`] from its ordered stream, for tools (`acpg`)
//! that cannot know the users' types.
//!
//! ```text
//!   Command { id, payload } ──► ReplicaCore::apply ──► decode_command::<Untyped>
//!        (in the stream)          (same rules,            = no decoding
//!                                  same StateId chain)
//!                                      │
//!                                      ▼
//!                    StateId { epoch, applied + 1, chain(sender, id) }
//! ```
//!
//! Why this is enough: a replica's [`StateId`] is a position in the
//! group's history — the primary epoch, the commands applied, and a chain
//! hashed over each command's (sender, command id) in order — never
//! anything computed from the commands' contents or from the state. So an
//! observer that applies every command the group applies, without
//! decoding it, holds the same ids as the participants, takes part in the
//! same install rounds (as an observer: it counts for no decision, rule 10
//! of the core), and can be inspected like any replica.
//!
//! Rules:
//!
//! 1. **An observer, always.** [`ReplicaObserver::start`] joins with
//!    [`Role::Observer`] whatever the configuration says: its state is
//!    empty, so it must never be what a view goes on from nor its sender —
//!    which the observer rule already guarantees.
//! 2. **Snapshots are received and dropped.** Joining, it is sent the
//!    group's state like any joiner: it buffers the chunks (up to
//!    [`super::ReplicaConfig::max_snapshot_size`]) and keeps only the id.
//! 3. **Limit:** a command that the members' state machine cannot decode
//!    is skipped by every member (its chain does not move); this observer
//!    cannot tell, and counts it. Its own id then differs from theirs —
//!    which its inspection shows, and which the next install repairs (an
//!    observer that does not hold the winning state receives it).

use std::any::Any;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::inspect::ReplicaInspection;
use super::{Replica, ReplicaConfig, ReplicaError, ReplicaEvent, ReplicaStatus, StateMachine};
use crate::group::MetricsSnapshot;
use crate::roster::Role;
use crate::transport::{Connection, GroupName, Member};
use crate::wire::{Codec, WireError};

/// A state machine of no type: it holds nothing and applies nothing (see
/// the module doc). Private: only [`ReplicaObserver`] runs it, as an
/// observer.
#[derive(Default)]
pub(crate) struct Untyped;

/// The command of [`Untyped`]: never decoded (see [`decode_command`]).
#[derive(Serialize, Deserialize)]
pub(crate) struct UntypedCommand;

impl StateMachine for Untyped {
    type Command = UntypedCommand;
    type Response = ();
    type Snapshot = ();

    fn apply(&mut self, _: UntypedCommand) {}

    fn snapshot(&self) {}

    fn encode(_: ()) -> Vec<u8> {
        Vec::new()
    }

    fn restore(_: &[u8]) -> Result<Self, String> {
        Ok(Untyped)
    }
}

/// Decodes a command's payload for `S`; for [`Untyped`], whose commands
/// carry no meaning here, reads nothing (rule 3 of the module doc).
pub(crate) fn decode_command<S: StateMachine>(
    codec: &Codec,
    payload: &[u8],
) -> Result<S::Command, WireError> {
    let untyped: Box<dyn Any> = Box::new(UntypedCommand);
    match untyped.downcast::<S::Command>() {
        Ok(command) => Ok(*command),
        Err(_) => codec.decode_payload(payload),
    }
}

/// A replica observer of a group of any state machine: it follows the
/// group's installs, primary components and state ids without the users'
/// types (see the module doc), for tools. Clone freely; the runtime stops
/// on [`ReplicaObserver::leave`] or when the transport closes.
#[derive(Clone, Debug)]
pub struct ReplicaObserver {
    replica: Replica<Untyped>,
}

impl ReplicaObserver {
    /// Joins the group over `conn` as an observer ([`Role::Observer`],
    /// whatever `config.role` says) and returns once it holds the group's
    /// state id (after the snapshot, which it drops). Fails as
    /// [`Replica::start`] does.
    pub async fn start<C: Connection>(
        conn: C,
        config: ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        let config = ReplicaConfig {
            role: Role::Observer,
            ..config
        };
        Ok(ReplicaObserver {
            replica: Replica::start(conn, config).await?,
        })
    }

    /// This member.
    pub fn local(&self) -> Member {
        self.replica.local()
    }

    /// The group's name.
    pub fn name(&self) -> &GroupName {
        self.replica.name()
    }

    /// Its counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.replica.metrics()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.replica.subscribe()
    }

    /// The situation as of the last event handled.
    pub fn status(&self) -> ReplicaStatus {
        self.replica.status()
    }

    /// What it holds at one point of the stream ([`ReplicaInspection`]).
    pub async fn inspect(&self) -> Result<ReplicaInspection, ReplicaError> {
        self.replica.inspect().await
    }

    /// Leaves the group cleanly (others see `Leave`) and stops the runtime.
    pub async fn leave(&self) -> Result<(), ReplicaError> {
        self.replica.leave().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter;

    impl StateMachine for Counter {
        type Command = u32;
        type Response = ();
        type Snapshot = ();
        fn apply(&mut self, _: u32) {}
        fn snapshot(&self) {}
        fn encode(_: ()) -> Vec<u8> {
            Vec::new()
        }
        fn restore(_: &[u8]) -> Result<Self, String> {
            Ok(Counter)
        }
    }

    #[test]
    fn an_untyped_replica_reads_no_command_and_a_typed_one_decodes_its_own() {
        let codec = Codec::new(1 << 16);
        let bytes = codec.encode_payload(&7u32).unwrap();
        assert_eq!(decode_command::<Counter>(&codec, &bytes).unwrap(), 7);
        assert!(decode_command::<Counter>(&codec, b"not a u32 at all").is_err());
        // Any bytes, even none: the observer never looks.
        assert!(decode_command::<Untyped>(&codec, b"not a u32 at all").is_ok());
        assert!(decode_command::<Untyped>(&codec, &[]).is_ok());
    }
}
