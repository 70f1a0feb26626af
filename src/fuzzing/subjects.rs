//! One [`Subject`] per core: the receive path the runtime runs in front of
//! it, its outbox, what "the same group-level state" means for it, and its
//! memory bounds. The only code of the harness that knows a core's API.

use std::collections::BTreeSet;

use crate::election::fuzz_access::{decode_envelope, ElectionMessage};
use crate::election::fuzz_access::{Action as ElectionAction, CandidacyOp, ElectionCore};
use crate::group::fuzz_access::{
    handle_envelope, receive, unpack, Command, GroupCore, Handled, Outgoing, Reassembly,
    SupervisionMsg,
};
use crate::kv::{KvCommand, KvStore, FILL_KEY_COST, MAX_FILL_BYTES};
use crate::replicated::fuzz_access::{
    transfer_body, unpack as replica_unpack, Action as ReplicaAction, Chunk, CommandMsg, DigestMsg,
    ReplicaCore, ReplicaMessage,
};
use crate::transport::{Member, MemberChange, QuorumState};
use crate::wire::{Codec, Kind};
use crate::{Delivery, StateMachine};

use super::{LIMIT, MAX_HELD};

/// Most messages a core's outbox keeps: a core multicasts a bounded
/// number per event, and an input that never echoes them must not grow
/// memory.
const OUTBOX: usize = 64;

/// Pieces of a replica snapshot (the runtime's default is larger; small
/// pieces make a transfer take several deliveries).
const SNAPSHOT_PIECE: usize = 4 << 10;

/// A core as the harness drives it.
pub(super) trait Subject {
    /// A core for `local`; `flags` from the stream, `skew_ms` added to this
    /// member's clock.
    fn new(local: Member, flags: u8, skew_ms: u64) -> Self;
    fn confchg(
        &mut self,
        view: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
        now_ms: u64,
    );
    /// Whether a driven member's own runtime may multicast `bytes` without
    /// its core asking (a registration, a call, a command, a candidacy):
    /// anything else from a driven member can only be its core's own
    /// message, so the harness delivers that instead (CPG names the sender;
    /// nobody can send as another process).
    fn self_may_send(bytes: &[u8]) -> bool;
    /// Returns whether the bytes decoded into something the core took.
    fn deliver(&mut self, from: Member, bytes: &[u8]) -> bool;
    fn quorum(&mut self, q: &QuorumState);
    /// Removes and returns pending own multicast `index % len`.
    fn take_outgoing(&mut self, index: u8) -> Option<Vec<u8>>;
    /// The core cannot go on (and says so); the stream stops.
    fn stopped(&self) -> bool {
        false
    }
    /// Whether the core holds the group's state.
    fn holding(&self) -> bool;
    /// Linearizable reads answered (replicated, flag bit 3).
    fn reads_answered(&self) -> usize {
        0
    }
    /// Panics unless the two cores hold the same group-level state.
    fn agree(a: &Self, b: &Self);
    /// Panics if a buffer is past its cap (checked after every op: cheap).
    fn check_bounds(&self, fed: usize);
    /// Panics if the whole state is out of proportion to the `fed` bytes
    /// (checked once, at the end).
    fn check_final_bounds(&self, fed: usize) {
        self.check_bounds(fed);
    }
}

fn push_bounded(outbox: &mut Vec<(Vec<u8>, bool)>, bytes: Vec<u8>, sticky: bool) {
    if outbox.len() == OUTBOX {
        outbox.remove(0);
    }
    outbox.push((bytes, sticky));
}

fn take(outbox: &mut Vec<(Vec<u8>, bool)>, index: u8) -> Option<Vec<u8>> {
    if outbox.is_empty() {
        return None;
    }
    let i = usize::from(index) % outbox.len();
    Some(outbox.remove(i).0)
}

/// The group core behind the receive pipeline replay uses (frame, pieces,
/// batch, body).
pub(super) struct GroupSubject {
    core: GroupCore,
    pieces: Reassembly,
    codec: Codec,
    outbox: Vec<(Vec<u8>, bool)>,
    senders: std::collections::BTreeSet<Member>,
}

impl GroupSubject {
    fn absorb(&mut self, commands: Vec<Command>) {
        // As the runtime (`follow_version`): a member writes at the
        // version its group speaks once it knows it.
        if let Some(v) = self.core.group_version() {
            self.codec = self.codec.at_version(v);
        }
        for command in commands {
            if let Command::Mcast(outgoing) = command {
                let encoded = match &outgoing {
                    Outgoing::Announce(a) => self.codec.encode(Kind::Announce, a),
                    Outgoing::Refusal(r) => self.codec.encode(Kind::Refusal, r),
                    Outgoing::SyncRequest(r) => self.codec.encode(Kind::SyncRequest, r),
                    Outgoing::Snapshot(s) => self.codec.encode(Kind::Snapshot, s),
                    Outgoing::Supervision(m) => self.codec.encode(Kind::Supervision, m),
                };
                // A state too large for one message goes nowhere, as in the
                // runtime (which logs it).
                if let Ok(bytes) = encoded {
                    push_bounded(&mut self.outbox, bytes, false);
                }
            }
        }
    }
}

impl Subject for GroupSubject {
    fn self_may_send(bytes: &[u8]) -> bool {
        let codec = Codec::new(LIMIT);
        let user = |frame: crate::wire::Frame<'_>| match frame.kind {
            Kind::Registry | Kind::Request | Kind::Reply => true,
            // Facts the runtime multicasts (ticks, quorum, exits, trees);
            // a merge offer is the core's.
            Kind::Supervision => !matches!(
                codec.decode_body::<SupervisionMsg>(frame.body),
                Ok(SupervisionMsg::StateOffered { .. })
            ),
            _ => false,
        };
        let Ok(frame) = codec.decode_frame(bytes) else {
            return true;
        };
        match frame.kind {
            Kind::Batch => codec.split_batch(frame.body).is_ok_and(|parts| {
                parts
                    .iter()
                    .all(|p| codec.decode_frame(p).map_or(true, user))
            }),
            _ => user(frame),
        }
    }

    fn new(local: Member, _flags: u8, _skew_ms: u64) -> Self {
        GroupSubject {
            core: GroupCore::new(local),
            pieces: Reassembly::default(),
            codec: Codec::new(LIMIT),
            outbox: Vec::new(),
            senders: Default::default(),
        }
    }

    fn confchg(&mut self, view: &[Member], joined: &[MemberChange], left: &[MemberChange], _: u64) {
        let gone: Vec<Member> = left.iter().map(|c| c.member).collect();
        self.pieces.confchg(!joined.is_empty(), &gone);
        let commands = self.core.handle_confchg(view, joined, left);
        self.absorb(commands);
    }

    fn deliver(&mut self, from: Member, bytes: &[u8]) -> bool {
        self.senders.insert(from);
        // As the runtime's receive pipeline (`group::inbound`).
        let Some((message, reassembled)) = receive(&self.codec, &mut self.pieces, from, bytes)
            .ok()
            .and_then(|received| received.into_whole())
        else {
            return false;
        };
        let Ok(unpacked) = unpack(&self.codec, &message, reassembled) else {
            return false;
        };
        let mut took = false;
        for frame in unpacked.envelopes.into_iter().flatten() {
            match handle_envelope(&mut self.core, &self.codec, from, frame) {
                Ok(Handled::Skipped) => took = true,
                Ok(Handled::Request { commands, .. } | Handled::Core(commands)) => {
                    took = true;
                    self.absorb(commands);
                }
                Err(_) => {}
            }
        }
        took
    }

    fn quorum(&mut self, _: &QuorumState) {
        // The group runtime puts quorum into the stream as a supervision
        // fact; the core itself takes no notification.
    }

    fn take_outgoing(&mut self, index: u8) -> Option<Vec<u8>> {
        take(&mut self.outbox, index)
    }

    fn holding(&self) -> bool {
        self.core.is_synced()
    }

    fn agree(a: &Self, b: &Self) {
        // A member waiting for the state knows only the members it heard
        // since it joined (rule 4) and decides nothing; the two get their
        // snapshots at different positions.
        if !(a.core.is_synced() && b.core.is_synced()) {
            return;
        }
        assert_eq!(a.core.view(), b.core.view(), "views differ");
        assert_eq!(a.core.names(), b.core.names(), "registries differ");
        assert!(
            a.core.engine() == b.core.engine(),
            "supervision engines differ:\n{:?}\n{:?}",
            a.core.engine(),
            b.core.engine()
        );
        for (name, host) in a.core.names() {
            assert!(
                a.core.view().contains(host),
                "name {name:?} lives on {host}, outside the view"
            );
        }
    }

    fn check_bounds(&self, _fed: usize) {
        let (under_way, held) = self.pieces.buffered();
        assert!(
            under_way <= self.senders.len(),
            "one message in pieces per sender"
        );
        assert!(
            held <= under_way * LIMIT,
            "{held} bytes held for {under_way} messages in pieces"
        );
    }

    fn check_final_bounds(&self, fed: usize) {
        self.check_bounds(fed);
        // The core's whole state, measured by its debug form (several
        // characters per byte it holds): a small input must not build a
        // large state.
        let size = format!("{:?}", self.core).len();
        assert!(
            size <= 64 * fed + (1 << 20),
            "{size} characters of state from {fed} bytes of input"
        );
    }
}

/// A replica of the key-value map behind the replicated runtime's decode.
pub(super) struct ReplicaSubject {
    core: ReplicaCore<KvStore>,
    codec: Codec,
    outbox: Vec<(Vec<u8>, bool)>,
    fatal: Option<String>,
    /// Keys and bytes that the fills delivered may write (each within
    /// `kv::MAX_FILL_BYTES`): the amplification a fill is for, allowed
    /// for in the bounds.
    fill_keys: usize,
    fill_bytes: usize,
    /// With flag bit 3, every fourth delivery asks for a linearizable
    /// read (rule 12), so hostile streams meet reads waiting in every
    /// phase.
    reads: bool,
    deliveries: u64,
    next_read: u64,
    /// Reads asked and not yet answered or failed.
    reads_open: BTreeSet<u64>,
    /// Reads evaluated (each at most once, before its answer).
    reads_evaluated: BTreeSet<u64>,
    reads_answered: usize,
}

impl ReplicaSubject {
    /// Asks for one read, as a handle would.
    fn ask_read(&mut self) {
        self.next_read += 1;
        let id = self.next_read;
        if let Ok(actions) = self.core.request_read(vec![id]) {
            self.reads_open.insert(id);
            self.absorb(actions);
        }
    }

    fn absorb(&mut self, actions: crate::replicated::fuzz_access::Actions<KvStore>) {
        // As the runtime (`follow_version`): at the group's version once
        // this replica knows it and speaks it.
        if let Some(v) = self.core.writes_at() {
            self.codec = self.codec.at_version(v);
        }
        for action in actions {
            match action {
                ReplicaAction::Mcast(msg) => {
                    let sticky = matches!(
                        msg,
                        ReplicaMessage::Info(_)
                            | ReplicaMessage::Mark(_)
                            | ReplicaMessage::Barrier(_)
                    );
                    if let Ok(bytes) = msg.encode(&self.codec) {
                        push_bounded(&mut self.outbox, bytes, sticky);
                    }
                }
                // As the runtime's outbox: an info survives a view change.
                ReplicaAction::Purge => self.outbox.retain(|(_, sticky)| *sticky),
                // The subject keeps no data directory.
                ReplicaAction::Persist(_) | ReplicaAction::Rebase { .. } => {}
                // Its reads are only numbers: the core's bookkeeping of
                // them is what is checked.
                ReplicaAction::Read { ids } => {
                    for id in ids {
                        assert!(self.reads_open.contains(&id), "read {id} evaluated unasked");
                        assert!(self.reads_evaluated.insert(id), "read {id} evaluated twice");
                    }
                }
                ReplicaAction::ReadDone { ids, .. } => {
                    for id in ids {
                        assert!(
                            self.reads_evaluated.contains(&id),
                            "read {id} answered unevaluated"
                        );
                        assert!(self.reads_open.remove(&id), "read {id} answered twice");
                        self.reads_answered += 1;
                    }
                }
                ReplicaAction::ReadFailed { ids, .. } => {
                    for id in ids {
                        assert!(self.reads_open.remove(&id), "read {id} failed when done");
                    }
                }
                ReplicaAction::SendSnapshot {
                    state,
                    snapshot,
                    suffix,
                } => {
                    let bytes = transfer_body(
                        self.codec.version(),
                        KvStore::encode(snapshot),
                        suffix.as_deref(),
                    );
                    let total = bytes.len().div_ceil(SNAPSHOT_PIECE).max(1);
                    for (index, piece) in bytes.chunks(SNAPSHOT_PIECE).enumerate() {
                        let chunk = Chunk {
                            state,
                            index: index as u32,
                            total: total as u32,
                            bytes: piece.to_vec(),
                        };
                        if let Ok(b) = ReplicaMessage::Chunk(chunk).encode(&self.codec) {
                            push_bounded(&mut self.outbox, b, false);
                        }
                    }
                }
                // As the runtime, minus the blocking thread: the digest
                // of the capture, multicast.
                ReplicaAction::Digest { at, snapshot } => {
                    let msg = ReplicaMessage::Digest(DigestMsg {
                        at,
                        digest: KvStore::snapshot_digest(&snapshot),
                    });
                    if let Ok(bytes) = msg.encode(&self.codec) {
                        push_bounded(&mut self.outbox, bytes, false);
                    }
                }
                ReplicaAction::Fatal(why) => self.fatal = Some(why),
                ReplicaAction::Refused(refusal) => {
                    self.fatal = Some(format!("refused: {refusal:?}"));
                }
                ReplicaAction::Reply { .. } | ReplicaAction::Event(_) => {}
            }
        }
    }
}

impl Subject for ReplicaSubject {
    fn self_may_send(bytes: &[u8]) -> bool {
        let codec = Codec::new(LIMIT);
        codec.decode_frame_any_version(bytes).is_ok_and(|frame| {
            frame.kind != Kind::Replicated
                || matches!(
                    ReplicaMessage::decode(&codec, frame),
                    Ok(ReplicaMessage::Command(_)) | Err(_)
                )
        })
    }

    fn new(local: Member, flags: u8, _skew_ms: u64) -> Self {
        let delivery = match (flags & 2 != 0, flags & 4 != 0) {
            (false, _) => Delivery::Agreed,
            (true, false) => Delivery::Safe,
            (true, true) => Delivery::SafeAll,
        };
        let codec = Codec::new(LIMIT);
        ReplicaSubject {
            core: ReplicaCore::new(local, codec, delivery, LIMIT, MAX_HELD, true),
            codec,
            outbox: Vec::new(),
            fatal: None,
            fill_keys: 0,
            fill_bytes: 0,
            reads: flags & 8 != 0,
            deliveries: 0,
            next_read: 0,
            reads_open: BTreeSet::new(),
            reads_evaluated: BTreeSet::new(),
            reads_answered: 0,
        }
    }

    fn confchg(&mut self, view: &[Member], joined: &[MemberChange], left: &[MemberChange], _: u64) {
        let actions = self.core.handle_confchg(view, joined, left);
        self.absorb(actions);
    }

    fn deliver(&mut self, from: Member, bytes: &[u8]) -> bool {
        let Ok(pieces) = replica_unpack(&self.codec, bytes) else {
            return false;
        };
        let mut any = false;
        for (version, msg) in pieces.into_iter().flatten() {
            any = true;
            if let ReplicaMessage::Command(CommandMsg { payload, .. }) = &msg {
                if let Ok(KvCommand::Fill { count, size, .. }) = self.codec.decode_payload(payload)
                {
                    let cost = u64::from(count).saturating_mul(u64::from(size) + FILL_KEY_COST);
                    if cost <= MAX_FILL_BYTES {
                        self.fill_keys += count as usize;
                        self.fill_bytes += cost as usize;
                    }
                }
            }
            let actions = self.core.handle_message(from, version, msg);
            self.absorb(actions);
        }
        if any && self.reads {
            self.deliveries += 1;
            if self.deliveries.is_multiple_of(4) {
                self.ask_read();
            }
        }
        any
    }

    fn quorum(&mut self, q: &QuorumState) {
        let actions = self.core.handle_quorum(q.clone());
        self.absorb(actions);
    }

    fn take_outgoing(&mut self, index: u8) -> Option<Vec<u8>> {
        take(&mut self.outbox, index)
    }

    fn stopped(&self) -> bool {
        self.fatal.is_some()
    }

    fn holding(&self) -> bool {
        self.core.is_holding()
    }

    fn reads_answered(&self) -> usize {
        self.reads_answered
    }

    fn agree(a: &Self, b: &Self) {
        assert_eq!(a.core.view(), b.core.view(), "views differ");
        assert_eq!(
            a.core.is_installed(),
            b.core.is_installed(),
            "one installed"
        );
        if !(a.core.is_holding() && b.core.is_holding()) {
            return;
        }
        assert_eq!(a.core.state_id(), b.core.state_id(), "state ids differ");
        assert_eq!(a.core.is_primary(), b.core.is_primary(), "primary differs");
        assert_eq!(
            a.core.primary_epoch(),
            b.core.primary_epoch(),
            "epochs differ"
        );
        assert!(a.core.state() == b.core.state(), "states differ");
    }

    fn check_bounds(&self, fed: usize) {
        // Every key costs a command: a few bytes of input must not make
        // many keys.
        let keys = self.core.state().len();
        assert!(
            keys <= fed + 16 + self.fill_keys,
            "{keys} keys from {fed} bytes of input"
        );
        // Waiting reads are capped (rule 8).
        assert!(
            self.reads_open.len() <= MAX_HELD,
            "{} reads waiting",
            self.reads_open.len()
        );
    }

    fn check_final_bounds(&self, fed: usize) {
        self.check_bounds(fed);
        let size = format!("{:?}", self.core.state()).len();
        assert!(
            size <= 64 * fed + 4 * self.fill_bytes + (1 << 20),
            "{size} characters of map from {fed} bytes of input"
        );
    }
}

/// The election core behind the election runtime's decode.
pub(super) struct ElectionSubject {
    core: ElectionCore,
    local: Member,
    codec: Codec,
    outbox: Vec<(Vec<u8>, bool)>,
    skew_ms: u64,
    /// The group refused this process (rule 9 of the core): as the
    /// runtime, it has left and stopped.
    refused: bool,
}

impl ElectionSubject {
    fn absorb(&mut self, actions: Vec<ElectionAction>) {
        for action in actions {
            // As the runtime's outbox: an announcement is never purged (a
            // joiner learns this member only from it), and a resent
            // candidacy goes on the user lane, which a purge keeps.
            let (msg, sticky) = match action {
                ElectionAction::Mcast(msg) => {
                    let sticky =
                        matches!(msg, ElectionMessage::Announce(_) | ElectionMessage::Mark(_));
                    (msg, sticky)
                }
                ElectionAction::Resend(CandidacyOp::Stand(name)) => {
                    (ElectionMessage::Stand(name), true)
                }
                ElectionAction::Resend(CandidacyOp::Withdraw(name)) => {
                    (ElectionMessage::Withdraw(name), true)
                }
                ElectionAction::Purge => {
                    self.outbox.retain(|(_, sticky)| *sticky);
                    continue;
                }
                ElectionAction::Applied(_) | ElectionAction::Event(_) => continue,
                // Past its cap, or refused, the member leaves; what it held
                // is gone.
                ElectionAction::GiveUp => {
                    self.outbox.clear();
                    continue;
                }
                ElectionAction::Refused { .. } => {
                    self.outbox.clear();
                    self.refused = true;
                    continue;
                }
            };
            // As the runtime: at the group's version once it is known.
            if let Some(v) = self.core.write_version() {
                self.codec = self.codec.at_version(v);
            }
            if let Ok(bytes) = self.codec.encode(Kind::Election, &msg) {
                push_bounded(&mut self.outbox, bytes, sticky);
            }
        }
    }
}

/// Microseconds since the Unix epoch at the start of every stream: the
/// election's founding term is a wall clock.
const EPOCH_US: u64 = 1_700_000_000_000_000;

impl Subject for ElectionSubject {
    fn self_may_send(bytes: &[u8]) -> bool {
        let codec = Codec::new(LIMIT);
        codec.decode_frame(bytes).is_ok_and(|frame| {
            frame.kind != Kind::Election
                || matches!(
                    codec.decode_body::<ElectionMessage>(frame.body),
                    Ok(ElectionMessage::Stand(_) | ElectionMessage::Withdraw(_)) | Err(_)
                )
        })
    }

    fn new(local: Member, _flags: u8, skew_ms: u64) -> Self {
        ElectionSubject {
            core: ElectionCore::with_cap(local, MAX_HELD),
            local,
            codec: Codec::new(LIMIT),
            outbox: Vec::new(),
            skew_ms,
            refused: false,
        }
    }

    fn confchg(
        &mut self,
        view: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
        now_ms: u64,
    ) {
        let now = EPOCH_US + (now_ms + self.skew_ms) * 1_000;
        let actions = self.core.handle_confchg(view, joined, left, now);
        self.absorb(actions);
    }

    fn deliver(&mut self, from: Member, bytes: &[u8]) -> bool {
        let Ok((version, msg)) = decode_envelope(&self.codec, bytes) else {
            return false;
        };
        let actions = self.core.handle_envelope(from, version, msg);
        self.absorb(actions);
        true
    }

    fn quorum(&mut self, q: &QuorumState) {
        let actions = self.core.handle_quorum(q.clone());
        self.absorb(actions);
    }

    fn take_outgoing(&mut self, index: u8) -> Option<Vec<u8>> {
        take(&mut self.outbox, index)
    }

    fn holding(&self) -> bool {
        self.core.is_installed()
    }

    fn agree(a: &Self, b: &Self) {
        // Both founders, or both joiners of one confchg that learn the
        // roster from the same info (rule 4).
        assert_eq!(
            a.core.knows_roster(),
            b.core.knows_roster(),
            "one knows the roster"
        );
        if !a.core.knows_roster() {
            // A joiner that has not learned the roster decides nothing.
            return;
        }
        // A refusal is judged where the process's own announcement lands
        // (or, for a joiner, where it learns the members), so the two
        // driven processes, announcing at different positions, are refused
        // at different positions. A refused process has left and holds
        // nothing; what must hold is that the other never counts it.
        // (Giving up is not like this: the held changes that cause it are
        // the same on both, so both give up alike.)
        if a.refused || b.refused {
            for (gone, other) in [(a, b), (b, a)] {
                assert!(
                    !gone.refused || !other.core.view().contains(&gone.local),
                    "a refused process counts on the other"
                );
            }
            return;
        }
        assert_eq!(a.core.view(), b.core.view(), "views differ");
        assert_eq!(a.core.round_done(), b.core.round_done(), "one installed");
        // A member whose announcement has not come in follows the install
        // without being in it: only members of the view must both say so.
        let view = a.core.view();
        if view.contains(&a.local) && view.contains(&b.local) {
            assert_eq!(
                a.core.is_installed(),
                b.core.is_installed(),
                "one member installed"
            );
        }
        assert_eq!(a.core.leaders(), b.core.leaders(), "leaders differ");
        assert_eq!(
            a.core.candidates(),
            b.core.candidates(),
            "candidates differ"
        );
    }

    fn check_bounds(&self, fed: usize) {
        let names: usize = self.core.candidates().keys().map(|k| k.len() + 64).sum();
        assert!(
            names <= 64 * fed + (1 << 16),
            "{names} bytes of elections from {fed} bytes of input"
        );
    }
}
