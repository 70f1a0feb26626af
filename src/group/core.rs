//! The group's decision core: who is a member, the registry, state
//! hand-over to joiners, and the bookkeeping of this member's outstanding
//! calls. No I/O, no clock, no actix: events in, commands out.
//!
//! ```text
//!   transport events            GroupCore                     commands
//!  ────────────────────►  ┌──────────────────────┐  ──────────────────────►
//!   handle_confchg        │ roster: raw view,    │   Mcast(Outgoing)
//!   handle_message        │   announced members  │   RegisterDone{token,..}
//!    (decoded Announce,   │ names: name -> host  │   Deliver{request}   (to a
//!     Registry, Request,  │ sync: Synced{..} |   │     local actor)
//!     Reply, SyncRequest, │       Waiting{..}    │   CallDone{id,..}
//!     Snapshot,           │ awaiting calls       │   Reclaim{name}
//!     Supervision)        │ engine (supervision) │   Event(GroupEvent)
//!          │              └──────────────────────┘   Dropped{from, cause}
//!          └─ sender rules first: a refused message changes nothing and
//!             is counted by cause
//! ```
//!
//! Every group-level decision here (who owns a name, which names drop when
//! a member leaves, which snapshot a joiner accepts, where children run) is
//! a function of the ordered stream alone, so every member reaches it at
//! the same position.
//!
//! # Who counts (DESIGN.md §6)
//!
//! A CPG group is not a trust boundary: any process corosync lets connect
//! can join it, stay silent, or multicast anything. The core keeps a
//! [`Roster`] in front of its view logic, and every decision counts the
//! *members*: processes of the CPG view that announced themselves
//! ([`Announce`]) in the ordered stream. The rules, identical on every
//! member:
//!
//! 1. **Effective view.** A confchg changes the view only through members
//!    that leave; a process that joins is pending and changes nothing
//!    until its announcement is delivered, which admits it. So a silent
//!    client that comes and goes changes nothing, and a confchg that only
//!    removes members asks nothing new of the survivors (failover is as
//!    fast as before announcements). [`GroupEvent::ViewChanged`] reports
//!    these effective changes; [`GroupCore::view`] is the member list.
//! 2. **Who announces, when.** Every process announces itself after every
//!    confchg that brings anyone in (a joiner, or the sides of a merge,
//!    knows none of the members already there), and says whether it holds
//!    the group state (`synced`). A process that then needs the state
//!    sends its [`SyncRequest`] *after* its announcement (one sender's
//!    messages keep their order), so it is a member when its request
//!    arrives. The announcement goes ahead of any user message. A member
//!    waiting for the state announces itself again with every request it
//!    makes (on every confchg), so a member that has just fallen back on
//!    its own state (every holder gone) admits it before its request.
//! 3. **Founders.** A process whose first view holds nobody but processes
//!    joining with it founds the group: the (empty) state is agreed, it is
//!    ready at once, and founders become members of one another as their
//!    announcements arrive, all from the same stream.
//! 4. **Joiners learn the members from the state.** A joiner cannot tell
//!    which processes of its view are members; it makes no decision until
//!    it has the state, which is taken where its request was delivered and
//!    carries the member list of that point ([`Snapshot::announced`]); it
//!    adopts it ([`Roster::adopt`]) and replays what it delivered after its
//!    request. The member that answers is the lowest member that holds the
//!    state there; if there is none yet (a founder whose announcement is
//!    still on its way), the first holder admitted after the request
//!    answers with the state at its own admission ([`Snapshot::at`]).
//!    The joiner accepts a snapshot only from a process it has heard
//!    announce itself as a holder since it joined (every holder does,
//!    rule 2, and a member announces itself as a holder again the moment
//!    it gets the state) and only if the snapshot names its sender as the
//!    member the rules chose; anything else is counted and refused. The
//!    members it learns are reported as one view change, at the snapshot.
//! 5. **Merges.** Both sides see the other as `NodeUp` joiners. The side
//!    holding the lowest process of the merged view that did not join
//!    fresh keeps its state (every side computes the same, from the
//!    confchg alone); every other side announces itself as not synced,
//!    asks for that state and re-claims its names. The supervision engines
//!    merge through their own round of offers (see
//!    [`crate::supervisor`]); an offer carries its side's whole CPG view so
//!    silent processes of a side that offers hold nothing up, and admits
//!    the members it lists where they have not announced themselves yet.
//!    A side made only of silent processes cannot be told from a slow one
//!    without a clock: the round waits until they leave. An offer answers
//!    one incarnation of the view ([`crate::incarnation`]): after every
//!    confchg that leaves a round open, each process multicasts a mark
//!    ([`SupervisionMsg::Mark`]); it offers only once its mark is back, and
//!    an offer counts only with its sender's latest mark since the latest
//!    confchg. Marks and offers are judged where they are delivered, also
//!    by a member still waiting for the state, so a buffered offer is not
//!    judged again when it is replayed.
//! 6. **Sender rules**, checked before anything else on a member that holds
//!    the state (a joiner checks what it buffered when it replays it). An
//!    observer ([`Role::Observer`], said in its announcement and carried in
//!    snapshots) is a member for the registry — it gets the state and may
//!    call — but its registrations, tree starts, child exits, ticks and
//!    quorum facts are refused ([`DropCause::Observer`]), so it never hosts
//!    nor moves a decision. The rest:
//!    registry changes, requests, replies, quorum facts, ticks, tree starts
//!    and merge offers only from members (requests also from a process of
//!    another side of a merge not yet announced here: a member's requests
//!    sent just before its runtime read the merging confchg arrive ahead
//!    of its announcement, and a request decides nothing for the group);
//!    a reply only from the member that
//!    hosted the callee where the request was delivered; a child's exit
//!    only from the host of that incarnation; a tick no more than
//!    [`MAX_TICK_STEP_MS`] past the stream time (once there is one), so a
//!    forged `u64::MAX` cannot pin the stream clock — a tick behind the
//!    stream time changes nothing (stream time only grows) and is not
//!    refused, so members whose clocks differ a little are not counted as
//!    hostile; a sync request only from a member that is waiting for the
//!    state (an outsider's request makes nobody send the state); a snapshot
//!    only from the member chosen for that request; a tree spec only if it
//!    validates, a snapshot only if it is sane. Each refusal is a
//!    [`Command::Dropped`] with its [`DropCause`].
//! 7. **Bounds.** What a joiner buffers while it waits, and the calls this
//!    member awaits, are capped ([`Limits`]). Past the buffer cap the
//!    joiner drops what it buffered, says so
//!    ([`GroupEvent::StateTransferRestarted`]) and asks again; past the
//!    call cap a call fails at once with [`CallError::WouldBlock`].
//! 8. **Versions.** An announcement carries the protocol versions its
//!    sender speaks; the group speaks the highest version every member
//!    speaks ([`Roster::group_version`]), so it is the same everywhere at
//!    every point of the stream. An announcement that does not include it
//!    is refused ([`DropCause::Incompatible`], and
//!    [`GroupEvent::MemberRefused`] on every member): the process stays
//!    outside, and none of its messages changes anything. It cannot read
//!    the group's messages, so the member that would answer its state
//!    request multicasts a [`RefusalNotice`] (a kind every version reads);
//!    the refused process takes it only from a holder it heard, reports it
//!    and stops ([`Command::Refused`]); a founder refused at its own
//!    announcement stops there. The group never moves down; it moves up
//!    where the last member that held it back leaves
//!    ([`GroupEvent::VersionChanged`]), and from there every member writes
//!    at the new version. A message counts only in a version every member
//!    speaks ([`DropCause::Version`], checked before the core): a message
//!    written at the old version before the move still counts after it,
//!    unless a process speaking only the new one has come in by then. What
//!    a process sends before it knows the version (its announcement, its
//!    state request) and the notice have one layout in every version.
//!    Peers that fall back together on their own state (rule 4) take in a
//!    peer whose announcement is still on its way as speaking every version
//!    until it arrives.
//!
//!    A member waiting for the state cannot judge a version (it learns the
//!    members with the state): it keeps each buffered message's version
//!    and judges it when it replays it, with the roster of that position,
//!    as the members that held the state judged it. Whether an envelope is
//!    malformed is decided before the version, from its bytes alone, so
//!    every member drops the same malformed ones.
//!
//!    Limits: a snapshot a waiting member takes is not judged by version
//!    (it comes from a holder it heard, for its own request); and two
//!    sides of a merge that speak different versions each
//!    judge the other's announcements by their own version until the state
//!    hand-over, where the side that keeps its state decides.
//!
//! This member's own calls are its bookkeeping, not a group decision, kept
//! from the same stream: a call is awaited from where its request comes
//! back (the host there owes the reply) until the reply, the host's
//! departure, or its caller giving up ([`GroupCore::abandon_call`]: a
//! timeout or a dropped future), after which a late reply answers no call
//! and is ignored. A request of this member that goes by while it waits
//! for the state is replayed after the snapshot, or, if the wait dropped
//! it, ends with [`CallError::OutcomeUnknown`] once the state arrives.
//!
//! Limits, each because a silent process cannot be told from a slow member
//! without a clock (a timeout that enters the stream would lift them): a
//! joiner whose view holds no member that holds the state, only silent
//! processes (and other joiners), waits until they leave or a holder
//! comes; and a merge round waits for a side made only of silent
//! processes (rule 5). An announced process that lies (claims to hold the
//! state, answers for another, ticks within the step) is a member: telling
//! a member from an impostor is the group key's job (a MAC on every
//! message), not the core's.
//!
//! The merge rule of rule 5 used to skip processes still waiting for the
//! state; each side knew only its own, so two sides could each find the
//! other primary. It now reads the confchg alone, the same on every side.
//!
//! Apart from the merge offers, this core collects no round of answers
//! after a confchg, so nothing else needs marks: an announcement admits a
//! process of the current raw view at its position and says only what the
//! sender holds there, and a state request is answered where it is
//! delivered, by the member the rules choose at that point, with a
//! snapshot that names its position. The offers need them: a member
//! lagging behind a partition and a heal would otherwise have the offer it
//! made for the first merge counted in the second, where its side may have
//! moved on (and its fresh offer would be refused as a second one from the
//! same sender); `a_merge_offer_made_for_an_earlier_merge_is_not_counted_in_a_later_one`
//! is that case.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, warn};

use super::messages::{
    Announce, RefusalNotice, RegistryOp, Reply, Request, RequestRef, Snapshot, SupervisionMsg,
    SyncRequest, Unsynced,
};
use super::{CallError, GroupEvent, NameDropReason};
use crate::incarnation::Incarnation;
use crate::roster::{Admission, Announcement, Refusal, Role, Roster};
use crate::supervisor::{self, Engine, ViewChange};
use crate::transport::{Member, MemberChange, Reason};
use crate::wire::{Codec, Frame, Kind, Versions, WireError};

/// How far past the stream time a tick may go. The lowest member ticks
/// every half second, so this is twenty periods: room for a new lowest
/// member whose clock runs ahead, and for a stalled one catching up (the
/// runtime clamps its own ticks to it), while a liar can move the stream
/// clock only this far per tick.
pub(crate) const MAX_TICK_STEP_MS: u64 = 10_000;

/// A decoded group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Announce(Announce),
    Refusal(RefusalNotice),
    Registry(RegistryOp),
    Request(Request),
    Reply(Reply),
    SyncRequest(SyncRequest),
    Snapshot(Snapshot),
    Supervision(SupervisionMsg),
}

/// Decodes one (non-batch) envelope into the message the core takes.
pub(crate) fn decode_inbound(codec: &Codec, frame: Frame<'_>) -> Result<Inbound, WireError> {
    Ok(match frame.kind {
        Kind::Announce => Inbound::Announce(decode_shared(codec, frame)?),
        Kind::Refusal => Inbound::Refusal(decode_shared(codec, frame)?),
        Kind::SyncRequest => Inbound::SyncRequest(decode_shared(codec, frame)?),
        Kind::Registry => Inbound::Registry(codec.decode_body(frame.body)?),
        Kind::Request => Inbound::Request(codec.decode_body(frame.body)?),
        Kind::Reply => Inbound::Reply(Reply::decode(codec, frame.version, frame.body)?),
        Kind::Snapshot => Inbound::Snapshot(codec.decode_body(frame.body)?),
        Kind::Supervision => Inbound::Supervision(codec.decode_body(frame.body)?),
        Kind::Batch => return Err(WireError::Malformed("batch nested in a batch".into())),
        // Kinds of other protocols (replicated state, elections) never
        // belong in a registry group: counted and dropped like any unknown
        // kind.
        other => return Err(WireError::UnknownKind(other as u8)),
    })
}

/// The body of a kind whose layout every version shares: exactly, at a
/// version this build reads; its leading value, at another (which may have
/// extended it at its end).
fn decode_shared<T: serde::de::DeserializeOwned>(
    codec: &Codec,
    frame: Frame<'_>,
) -> Result<T, WireError> {
    if codec.reads().contains(frame.version) {
        codec.decode_body(frame.body)
    } else {
        codec.decode_body_prefix(frame.body)
    }
}

/// A message the core asks the runtime to multicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    Announce(Announce),
    Refusal(RefusalNotice),
    SyncRequest(SyncRequest),
    Snapshot(Box<Snapshot>),
    Supervision(SupervisionMsg),
}

/// Why the core refused a message (rule 6 of the module doc). Nothing
/// changed; the runtime counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// The sender is not a member (never announced itself, or left).
    Unannounced,
    /// A reply or a child's exit from a member that does not host the
    /// callee or the incarnation.
    NotHost,
    /// A sync request from a member that is not waiting for the state, or
    /// a snapshot that answers no request or comes from another member
    /// than the one chosen.
    Unasked,
    /// A tick further past the stream time than [`MAX_TICK_STEP_MS`].
    Clock,
    /// A body that does not validate (a tree spec, a snapshot).
    Invalid,
    /// An announcement of protocol versions that do not include the one
    /// the group speaks.
    Incompatible,
    /// A message in an envelope of a protocol version some member does not
    /// speak (sent before the group moved up, delivered after a member
    /// that speaks only the new version came in).
    Version,
    /// A registration, a tree start, a child's exit, a clock or a quorum
    /// fact from an observer, which takes part in no decision.
    Observer,
}

/// Bounds on what the core holds for the network (rule 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages a joiner buffers while it waits for the state.
    pub max_buffered: usize,
    /// Calls of this member awaiting a reply.
    pub max_awaiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered: 65_536,
            max_awaiting: 65_536,
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Multicast this message.
    Mcast(Outgoing),
    /// This member's registration with `token` was decided.
    RegisterDone {
        token: u64,
        result: Result<(), Member>,
    },
    /// A request for a name this member hosts: hand it to the local actor.
    Deliver { from: Member, request: Request },
    /// This member's call `id` ended.
    CallDone {
        id: u64,
        outcome: Result<Vec<u8>, CallError>,
    },
    /// After a merge this member hosts `name` locally but the group lost it:
    /// register it again (an ordinary ordered registration).
    Reclaim { name: String },
    /// Tell subscribers.
    Event(GroupEvent),
    /// What the supervision engine decided; the runtime executes the
    /// commands addressed to this member.
    Supervise(supervisor::Output),
    /// The supervision state was replaced (state hand-over): start and stop
    /// local children so that exactly the engine's incarnations for this
    /// member run here.
    Reconcile,
    /// A message from `from` was refused (counted and logged).
    Dropped { from: Member, cause: DropCause },
    /// This process cannot speak the version the group speaks (rule 8):
    /// it is no member, and the runtime stops.
    Refused(Refusal),
}

/// A waiting member's latest request since the last confchg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ask {
    nonce: Option<u64>,
    /// The member chosen to answer it, where it was delivered.
    responder: Option<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SyncState {
    /// This member holds the group's state; `unsynced` are members still
    /// waiting for it, each with its latest request delivered since the
    /// last confchg (a snapshot answers only that one).
    Synced { unsynced: BTreeMap<Member, Ask> },
    /// Waiting for a snapshot.
    Waiting(Waiting),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    /// Processes that may hold the state: those already in the view when
    /// this member started waiting, plus any seen receiving a valid
    /// snapshot since. When none is left, nobody can answer (see
    /// `handle_confchg`).
    holders: BTreeSet<Member>,
    /// Members that started waiting at the same confchg for the same reason:
    /// if every holder dies, they fall back together, in agreement.
    peers: BTreeSet<Member>,
    /// Processes heard announcing themselves as holders while this member
    /// waits: a snapshot is accepted only from one of them (rule 4).
    heard: BTreeSet<Member>,
    /// What each process announced while this member waits (the latest):
    /// the versions and role of peers it falls back with.
    announcements: BTreeMap<Member, Announcement>,
    /// Nonce of this member's latest request delivered since the last
    /// confchg; `buffered` is everything delivered after it.
    asked: Option<u64>,
    /// With the envelope's version of each message whose layout is not
    /// shared (judged when replayed, rule 8).
    buffered: Vec<(Member, Option<u8>, Inbound)>,
    /// Every process's latest request since the last confchg, to tell which
    /// snapshots are valid.
    requests: BTreeMap<Member, u64>,
    /// Names this member hosted before it lost the state (after a merge).
    hosted_before: BTreeSet<String>,
}

impl Waiting {
    fn new(
        holders: BTreeSet<Member>,
        peers: BTreeSet<Member>,
        hosted_before: BTreeSet<String>,
    ) -> Self {
        Waiting {
            holders,
            peers,
            heard: BTreeSet::new(),
            announcements: BTreeMap::new(),
            asked: None,
            buffered: Vec::new(),
            requests: BTreeMap::new(),
            hosted_before,
        }
    }
}

/// The pure state of one member of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupCore {
    local: Member,
    /// Who counts (rule 1).
    roster: Roster,
    /// The roster's members, kept for [`GroupCore::view`].
    view: Vec<Member>,
    joined: bool,
    names: BTreeMap<String, Member>,
    sync: SyncState,
    /// This member's calls whose request was delivered, by id, with the host
    /// that owes the reply.
    awaiting: BTreeMap<u64, Member>,
    /// This member's calls given up before their request came back
    /// ([`GroupCore::abandon_call`]): when it does, nothing awaits a reply.
    /// An id leaves when its request is routed, found lost (`limbo`), or
    /// never sent.
    abandoned: BTreeSet<u64>,
    /// This member's own requests (wanting a reply) delivered while it
    /// waited for the state, not routed yet: replayed after the snapshot,
    /// or lost with what the wait dropped (ended when the state arrives).
    limbo: BTreeSet<u64>,
    /// Last sync request nonce this member used.
    nonce: u64,
    /// The supervision trees of the group.
    engine: Engine,
    /// Whether this member sent its side's state in the current merge round.
    offered: bool,
    /// This member's side of the CPG view at the last merge, for its offer.
    side: Vec<Member>,
    /// Which incarnation of the view a merge offer answers (rule 5).
    marks: Incarnation<()>,
    /// What this member announces itself as: its role and versions.
    announcement: Announcement,
    /// The version the group speaks, as last reported.
    version: Option<u8>,
    limits: Limits,
}

impl GroupCore {
    /// A member that has not yet seen its first confchg, with the default
    /// [`Limits`].
    pub(crate) fn new(local: Member) -> Self {
        GroupCore::with_limits(local, Limits::default())
    }

    /// A member that has not yet seen its first confchg, holding at most
    /// what `limits` allow.
    pub(crate) fn with_limits(local: Member, limits: Limits) -> Self {
        GroupCore {
            local,
            roster: Roster::new(),
            view: Vec::new(),
            joined: false,
            names: BTreeMap::new(),
            sync: SyncState::Waiting(Waiting::new(
                BTreeSet::new(),
                BTreeSet::new(),
                BTreeSet::new(),
            )),
            awaiting: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            limbo: BTreeSet::new(),
            nonce: 0,
            engine: Engine::new(),
            offered: false,
            side: Vec::new(),
            marks: Incarnation::default(),
            announcement: Announcement::this_build(),
            version: None,
            limits,
        }
    }

    /// The same member, announcing itself in `role`.
    pub(crate) fn with_role(mut self, role: Role) -> Self {
        self.announcement = self.announcement.with_role(role);
        self
    }

    /// The same member, speaking `versions`.
    pub(crate) fn with_versions(mut self, versions: Versions) -> Self {
        self.announcement = self.announcement.with_versions(versions);
        self
    }

    /// What this member announces itself as.
    pub(crate) fn role(&self) -> Role {
        self.announcement.role
    }

    /// The version the group speaks, as this member knows it: what it
    /// writes its messages at. `None` before anyone is a member.
    pub(crate) fn group_version(&self) -> Option<u8> {
        self.roster.group_version()
    }

    /// Whether a message in an envelope of version `v` counts here (rule
    /// 8). A member waiting for the state knows the members only once it
    /// has it: until then it takes every version its build reads.
    pub(crate) fn counts_version(&self, v: u8) -> bool {
        match self.sync {
            SyncState::Waiting(_) => true,
            SyncState::Synced { .. } => self.roster.counts_version(v),
        }
    }

    /// Whether the member `m` announced itself as an observer.
    pub(crate) fn is_observer(&self, m: Member) -> bool {
        self.roster.is_observer(m)
    }

    /// Whether this member holds the group state (and may answer lookups).
    pub(crate) fn is_synced(&self) -> bool {
        matches!(self.sync, SyncState::Synced { .. })
    }

    /// This member.
    pub(crate) fn local(&self) -> Member {
        self.local
    }

    /// The versions this member announces itself as speaking.
    pub(crate) fn versions(&self) -> Versions {
        self.announcement.versions()
    }

    /// Who counts: the members with their announcements, and the pending
    /// processes of the view.
    pub(crate) fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The members (announced processes of the view), sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// Where `name` lives, as of the last delivered message.
    pub(crate) fn lookup(&self, name: &str) -> Option<Member> {
        self.names.get(name).copied()
    }

    /// The supervision engine, as of the last delivered message.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Every registered name and its host.
    pub(crate) fn names(&self) -> &BTreeMap<String, Member> {
        &self.names
    }

    fn refresh_view(&mut self) {
        self.view = self.roster.members();
    }

    fn unsynced(&mut self) -> Option<&mut BTreeMap<Member, Ask>> {
        match &mut self.sync {
            SyncState::Synced { unsynced } => Some(unsynced),
            SyncState::Waiting(_) => None,
        }
    }

    /// A configuration change, at its position in the stream.
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Vec<Command> {
        // Before anything decides: an offer made from here on answers this
        // confchg, and waits for the mark that says so.
        let mark = self.marks.confchg();
        let mut out = self.apply_confchg(members, joined, left);
        self.report_version(&mut out);
        if self.joined && members.contains(&self.local) && self.engine.is_merging() {
            out.push(Command::Mcast(Outgoing::Supervision(
                SupervisionMsg::Mark { mark },
            )));
        }
        out
    }

    fn apply_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Vec<Command> {
        let mut out = Vec::new();
        let change = self.roster.handle_confchg(members, joined, left);
        self.refresh_view();
        let effective_left = change.map(|c| c.left).unwrap_or_default();
        if !effective_left.is_empty() {
            out.push(Command::Event(GroupEvent::ViewChanged {
                members: self.view.clone(),
                joined: Vec::new(),
                left: effective_left.clone(),
            }));
        }

        // Hosts are members (a name is registered by a member only), so a
        // raw leave fails exactly the calls an effective one would.
        for change in left {
            let failed: Vec<u64> = self
                .awaiting
                .iter()
                .filter(|(_, host)| **host == change.member)
                .map(|(id, _)| *id)
                .collect();
            for id in failed {
                self.awaiting.remove(&id);
                out.push(Command::CallDone {
                    id,
                    outcome: Err(CallError::HostLeft {
                        host: change.member,
                        reason: change.reason,
                    }),
                });
            }
        }

        let in_view: BTreeSet<Member> = members.iter().copied().collect();
        let joined_set: BTreeSet<Member> = joined
            .iter()
            .map(|c| c.member)
            .filter(|m| in_view.contains(m))
            .collect();
        let fresh: BTreeSet<Member> = joined
            .iter()
            .filter(|c| c.reason == Reason::Join && in_view.contains(&c.member))
            .map(|c| c.member)
            .collect();

        if !self.joined {
            if !in_view.contains(&self.local) {
                return out;
            }
            self.joined = true;
            let expected: BTreeSet<Member> = in_view.difference(&joined_set).copied().collect();
            if expected.is_empty() {
                // Rule 3: everyone in the view is new, the (empty) state is
                // agreed.
                self.sync = SyncState::Synced {
                    unsynced: BTreeMap::new(),
                };
                self.announce(true, &mut out);
                out.push(Command::Event(GroupEvent::Ready));
            } else {
                self.announce(false, &mut out);
                self.wait_for_state(Waiting::new(expected, fresh, BTreeSet::new()), &mut out);
            }
            return out;
        }

        let should_announce = self.roster.should_announce();
        if let SyncState::Waiting(waiting) = &self.sync {
            let mut waiting = waiting.clone();
            waiting.holders.retain(|m| in_view.contains(m));
            waiting.peers.retain(|m| in_view.contains(m));
            waiting.heard.retain(|m| in_view.contains(m));
            // Processes merging in may hold state too.
            waiting
                .holders
                .extend(joined_set.difference(&fresh).copied());
            if waiting.holders.is_empty() {
                // Nobody can hold the state any more. Every peer reaches
                // this at this same confchg (same holders, same stream),
                // so they fall back together on their own state, members
                // of one another.
                warn!(local = %self.local, "every process that could hold the group state is gone; continuing with local state");
                out.extend(self.drop_names_of(left));
                // Only the peers: every peer computed the same set at the
                // same confchg. This member is one of them unless its
                // announcement had not come in by then; it then stays
                // pending here as everywhere, and the announcement below
                // admits it on every peer at the same position.
                // What each announced, where it has arrived; a peer whose
                // announcement is still on its way is taken in all the
                // same and learns its versions when it arrives.
                let members: Vec<(Member, Option<Announcement>)> = waiting
                    .peers
                    .iter()
                    .map(|m| {
                        let a = self
                            .roster
                            .announcement(*m)
                            .or_else(|| waiting.announcements.get(m).copied());
                        (*m, a)
                    })
                    .collect();
                let before = std::mem::take(&mut self.view);
                self.roster.adopt_peers(members);
                self.refresh_view();
                out.extend(self.view_changed_from(&before).map(Command::Event));
                // A name on a process of the view that is no peer (it had
                // said it would ask for the state) would live on a
                // non-member and never drop: it drops here, alike on every
                // peer, and its host re-claims it once admitted.
                out.extend(self.drop_names_off_view());
                self.sync = SyncState::Synced {
                    unsynced: BTreeMap::new(),
                };
                self.settle_limbo(&mut out);
                self.announce(true, &mut out);
                let engine_view = self.engine.view();
                let admitted: Vec<MemberChange> = self
                    .view
                    .iter()
                    .filter(|m| !engine_view.contains(m))
                    .map(|m| MemberChange {
                        member: *m,
                        reason: Reason::Join,
                    })
                    .collect();
                self.supervise_view(&admitted, left, &mut out);
                out.extend(self.reclaim(waiting.hosted_before));
                out.push(Command::Reconcile);
                out.push(Command::Event(GroupEvent::Ready));
            } else {
                // Announced again on every confchg, not only one that
                // brings someone in: a waiting peer may just have fallen
                // back on its own state, knowing no member but its peers,
                // and must admit this member before its request.
                self.announce(false, &mut out);
                // The registry kept while waiting is the fallback if every
                // holder dies before answering: it must lose the names of
                // members leaving meanwhile, or they would never drop.
                out.extend(self.drop_names_of(left));
                // This side's offer may still be owed to a merge round, and
                // one in flight no longer counts after this confchg: the
                // round hears of the change and this member offers again
                // if it is its side's representative.
                if self.engine.is_merging() {
                    let merging: Vec<MemberChange> = joined
                        .iter()
                        .filter(|c| c.reason == Reason::NodeUp)
                        .copied()
                        .collect();
                    self.supervise_view(&merging, left, &mut out);
                }
                // Whoever was to answer may be gone: ask again.
                waiting.asked = None;
                waiting.buffered.clear();
                waiting.requests.clear();
                self.wait_for_state(waiting, &mut out);
            }
            return out;
        }

        let merged = joined
            .iter()
            .any(|c| c.reason == Reason::NodeUp && in_view.contains(&c.member));
        out.extend(self.drop_names_of(&effective_left));
        if merged {
            let my_side: BTreeSet<Member> = in_view.difference(&joined_set).copied().collect();
            self.side = my_side.iter().copied().collect();
            // Rule 5: the same on every side, from the confchg alone.
            let primary = in_view
                .difference(&fresh)
                .next()
                .is_none_or(|m| my_side.contains(m));
            if !primary {
                let hosted_before = self
                    .names
                    .iter()
                    .filter(|(_, h)| **h == self.local)
                    .map(|(n, _)| n.clone())
                    .collect();
                let holders = joined_set.difference(&fresh).copied().collect();
                let unsynced: BTreeSet<Member> = self
                    .unsynced()
                    .map(|u| u.keys().copied().collect())
                    .unwrap_or_default();
                let peers = my_side
                    .iter()
                    .filter(|m| self.roster.is_member(**m) && !unsynced.contains(m))
                    .copied()
                    .collect();
                // The announcement goes first, so this member is a member
                // on the other side when its offer arrives there; the
                // offer leaves now, from the state held before the merge.
                self.announce(false, &mut out);
                self.supervise_merge(joined, left, &mut out);
                debug!(local = %self.local, "merged into a component that holds the group state; asking for it");
                self.wait_for_state(Waiting::new(holders, peers, hosted_before), &mut out);
                return out;
            }
        }
        // A confchg voids every outstanding request: members still waiting
        // ask again.
        let roster = &self.roster;
        if let SyncState::Synced { unsynced } = &mut self.sync {
            unsynced.retain(|m, _| roster.is_member(*m));
            for ask in unsynced.values_mut() {
                *ask = Ask::default();
            }
        }
        if should_announce {
            self.announce(true, &mut out);
        }
        if merged {
            self.supervise_merge(joined, left, &mut out);
        } else if self.engine.is_merging() && !left.is_empty() {
            // A merge round waits on processes that may not be members
            // here yet: it must hear of every leave.
            self.supervise_view(&[], left, &mut out);
        } else if !effective_left.is_empty() {
            self.supervise_view(&[], &effective_left, &mut out);
        }
        out
    }

    fn announce(&mut self, synced: bool, out: &mut Vec<Command>) {
        out.push(Command::Mcast(Outgoing::Announce(Announce {
            announcement: self.announcement,
            synced,
        })));
    }

    /// Reports a move of the group's protocol version (rule 8), on a member
    /// that holds the state.
    fn report_version(&mut self, out: &mut Vec<Command>) {
        let now = self.roster.group_version();
        if now == self.version || matches!(self.sync, SyncState::Waiting(_)) {
            return;
        }
        let from = std::mem::replace(&mut self.version, now);
        if let Some(to) = now {
            out.push(Command::Event(GroupEvent::VersionChanged { from, to }));
        }
    }

    /// Feeds a merging confchg to the supervision engine: the members of
    /// this side, and every process of the other sides as `NodeUp`, which
    /// starts the engine's round of offers.
    fn supervise_merge(
        &mut self,
        joined: &[MemberChange],
        left: &[MemberChange],
        out: &mut Vec<Command>,
    ) {
        let merging: Vec<MemberChange> = joined
            .iter()
            .filter(|c| c.reason == Reason::NodeUp)
            .copied()
            .collect();
        self.supervise_view(&merging, left, out);
    }

    /// Feeds a change of the members to the supervision engine.
    fn supervise_view(
        &mut self,
        joined: &[MemberChange],
        left: &[MemberChange],
        out: &mut Vec<Command>,
    ) {
        // The epoch counts view changes in the engine's own (transferred)
        // state, so every member computes the same one; starts after a
        // partition carry a larger epoch than anything started before it.
        let change = ViewChange {
            epoch: self.engine.epoch() + 1,
            members: self.view.clone(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        };
        self.offered = false;
        let output = self.engine.handle_view_change(change);
        self.push_supervision(output, out);
    }

    fn push_supervision(&mut self, output: supervisor::Output, out: &mut Vec<Command>) {
        if !output.commands.is_empty() || !output.events.is_empty() {
            out.push(Command::Supervise(output));
        }
        self.offer_if_due(out);
    }

    /// Multicasts this side's state if the merge round wants it from this
    /// member and this member's mark of the latest confchg is back (rule
    /// 5: an offer sent before would not say which incarnation it answers).
    fn offer_if_due(&mut self, out: &mut Vec<Command>) {
        if !self.engine.is_merging() {
            self.offered = false;
        } else if !self.offered && self.marks.is_back() && self.engine.should_offer(self.local) {
            if let Some(mut offer) = self.engine.merge_offer() {
                self.offered = true;
                offer.side = self.side.clone();
                out.push(Command::Mcast(Outgoing::Supervision(
                    SupervisionMsg::StateOffered {
                        offer,
                        mark: self.marks.own(),
                        announced: self.roster.announcements(),
                    },
                )));
            }
        }
    }

    fn wait_for_state(&mut self, waiting: Waiting, out: &mut Vec<Command>) {
        self.nonce += 1;
        self.sync = SyncState::Waiting(waiting);
        out.push(Command::Mcast(Outgoing::SyncRequest(SyncRequest {
            nonce: self.nonce,
        })));
    }

    /// Drops the names whose host is not a member.
    fn drop_names_off_view(&mut self) -> Vec<Command> {
        let strays: Vec<(String, Member)> = self
            .names
            .iter()
            .filter(|(_, h)| !self.view.contains(h))
            .map(|(n, h)| (n.clone(), *h))
            .collect();
        strays
            .into_iter()
            .map(|(name, host)| {
                self.names.remove(&name);
                Command::Event(GroupEvent::NameDropped {
                    name,
                    host,
                    reason: NameDropReason::LostInMerge,
                })
            })
            .collect()
    }

    fn drop_names_of(&mut self, left: &[MemberChange]) -> Vec<Command> {
        let mut out = Vec::new();
        for change in left {
            let gone: Vec<String> = self
                .names
                .iter()
                .filter(|(_, h)| **h == change.member)
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                self.names.remove(&name);
                out.push(Command::Event(GroupEvent::NameDropped {
                    name,
                    host: change.member,
                    reason: NameDropReason::HostLeft(change.reason),
                }));
            }
        }
        out
    }

    /// Whether a request from `from` for `target` can matter to this
    /// member. `false` only where [`GroupCore::handle_message`] would return
    /// no command and change nothing: a synced member that neither hosts
    /// the target nor awaits the reply, for a request from a member. The
    /// runtime then skips building the request (its strings and payload)
    /// at all, which is most requests on most members.
    pub(crate) fn wants_request(&self, from: Member, target: &str, want_reply: bool) -> bool {
        if !self.joined {
            return false;
        }
        match self.sync {
            // Buffered for replay after the snapshot.
            SyncState::Waiting(_) => true,
            SyncState::Synced { .. } => {
                // A request from a process that is not a member is counted.
                !self.may_request(from)
                    || (from == self.local && want_reply)
                    || self.names.get(target) == Some(&self.local)
            }
        }
    }

    /// A decoded message from `from`, at its position in the stream, of a
    /// version that counts (tests hand messages in directly).
    #[cfg(test)]
    pub(crate) fn handle_message(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        self.handle_message_at(from, None, msg)
    }

    /// A decoded message from `from`, at its position in the stream;
    /// `version`: its envelope's, if its kind's layout is not shared by
    /// every version (rule 8). A synced member judged it before (it did
    /// not come here unless it counts); a member waiting for the state
    /// cannot, and judges it when it replays it, with the roster of that
    /// position, as the members that held the state did.
    pub(crate) fn handle_message_at(
        &mut self,
        from: Member,
        version: Option<u8>,
        msg: Inbound,
    ) -> Vec<Command> {
        let mut out = self.take_message(from, version, msg);
        self.report_version(&mut out);
        out
    }

    fn take_message(&mut self, from: Member, version: Option<u8>, msg: Inbound) -> Vec<Command> {
        if !self.joined {
            return Vec::new();
        }
        // Marks and the freshness of offers are judged where they are
        // delivered, whether this member holds the state or waits for it:
        // every process of the view saw the same confchg and the same marks
        // since, so all judge alike, and a buffered offer is not judged
        // again against later marks when it is replayed.
        match msg {
            Inbound::Supervision(SupervisionMsg::Mark { mark }) => {
                self.marks.delivered(self.local, from, mark);
                let mut out = Vec::new();
                if from == self.local && mark == self.marks.own() {
                    self.offer_if_due(&mut out);
                }
                return out;
            }
            Inbound::Supervision(SupervisionMsg::StateOffered { mark, .. })
                if !self.marks.fresh(from, mark) =>
            {
                debug!(local = %self.local, %from, "an offer made before the latest confchg; not counted");
                return Vec::new();
            }
            _ => {}
        }
        self.dispatch(from, version, msg)
    }

    /// A delivered message, by this member's sync state.
    fn dispatch(&mut self, from: Member, version: Option<u8>, msg: Inbound) -> Vec<Command> {
        match self.sync {
            SyncState::Waiting(_) => self.handle_waiting(from, version, msg),
            SyncState::Synced { .. } => self.handle_synced(from, msg),
        }
    }

    /// A message delivered while this member waits for the state: buffered
    /// after its own request, checked when replayed (rule 4).
    fn handle_waiting(&mut self, from: Member, version: Option<u8>, msg: Inbound) -> Vec<Command> {
        let local = self.local;
        if let Inbound::Request(request) = &msg {
            if from == local && request.want_reply {
                self.limbo.insert(request.id);
            }
        }
        let in_view = self.roster.in_view(from);
        let SyncState::Waiting(w) = &mut self.sync else {
            return Vec::new();
        };
        let msg = match msg {
            Inbound::Announce(a) => {
                if in_view {
                    w.announcements.insert(from, a.announcement);
                    if a.synced {
                        w.heard.insert(from);
                    }
                }
                Inbound::Announce(a)
            }
            Inbound::Refusal(notice) => {
                if notice.member == local && w.heard.contains(&from) {
                    let refusal = Refusal {
                        member: local,
                        versions: self.announcement.versions(),
                        group_version: notice.group_version,
                    };
                    return vec![
                        Command::Event(GroupEvent::MemberRefused {
                            member: local,
                            versions: refusal.versions,
                            group_version: refusal.group_version,
                        }),
                        Command::Refused(refusal),
                    ];
                }
                return Vec::new();
            }
            Inbound::SyncRequest(req) => {
                w.requests.insert(from, req.nonce);
                if from == local {
                    // Only the state at our latest request counts.
                    w.asked = Some(req.nonce);
                    w.buffered.clear();
                    return Vec::new();
                }
                Inbound::SyncRequest(req)
            }
            Inbound::Snapshot(snap) if snap.for_member == local && w.asked == Some(snap.nonce) => {
                if !w.heard.contains(&from) {
                    return vec![Command::Dropped {
                        from,
                        cause: DropCause::Unasked,
                    }];
                }
                if !snap.is_sane(from) {
                    return vec![Command::Dropped {
                        from,
                        cause: DropCause::Invalid,
                    }];
                }
                return self.install(snap);
            }
            Inbound::Snapshot(snap) => {
                if w.requests.get(&snap.for_member) == Some(&snap.nonce) && w.heard.contains(&from)
                {
                    w.holders.insert(snap.for_member);
                }
                Inbound::Snapshot(snap)
            }
            other => other,
        };
        // Before our own request, the snapshot will include it.
        if w.asked.is_none() {
            return Vec::new();
        }
        if w.buffered.len() >= self.limits.max_buffered {
            let buffered = w.buffered.len();
            warn!(local = %local, buffered, "too much delivered while waiting for the group state; asking again");
            let mut waiting = w.clone();
            waiting.asked = None;
            waiting.buffered = Vec::new();
            waiting.requests.clear();
            let mut out = vec![Command::Event(GroupEvent::StateTransferRestarted {
                buffered,
            })];
            self.wait_for_state(waiting, &mut out);
            return out;
        }
        w.buffered.push((from, version, msg));
        Vec::new()
    }

    /// Installs the snapshot that answers this member's request.
    fn install(&mut self, snap: Snapshot) -> Vec<Command> {
        self.engine = snap.supervision;
        self.offered = false;
        let before = std::mem::take(&mut self.view);
        self.roster.adopt(snap.announced.iter().copied());
        self.refresh_view();
        // Every name of a true snapshot lives on a member (names drop when
        // their host leaves). One that does not is forged and could never
        // drop, since no confchg will name its host: it is not installed.
        let roster = &self.roster;
        self.names = snap
            .names
            .into_iter()
            .filter(|(_, host)| roster.is_member(*host))
            .collect();
        let mut view_changed = self.view_changed_from(&before);
        let unsynced = snap
            .unsynced
            .iter()
            .map(|u| {
                (
                    u.member,
                    Ask {
                        nonce: u.asked,
                        responder: u.responder,
                    },
                )
            })
            .collect();
        let mut out = self.finish_sync(unsynced, snap.at);
        // The members learnt with the state, reported where they were
        // learnt (a member that waited made no decision with another view).
        if let Some(event) = view_changed.take() {
            out.insert(0, Command::Event(event));
        }
        out
    }

    /// The view change from `before` to the current members, if any: the
    /// newcomers as joined (`Join` for a member that knew none before,
    /// `NodeUp` after a merge), the rest as left.
    fn view_changed_from(&self, before: &[Member]) -> Option<GroupEvent> {
        if before == self.view.as_slice() {
            return None;
        }
        let reason = if before.is_empty() {
            Reason::Join
        } else {
            Reason::NodeUp
        };
        Some(GroupEvent::ViewChanged {
            members: self.view.clone(),
            joined: self
                .view
                .iter()
                .filter(|m| !before.contains(m))
                .map(|m| MemberChange { member: *m, reason })
                .collect(),
            left: before
                .iter()
                .filter(|m| !self.view.contains(m))
                .map(|m| MemberChange {
                    member: *m,
                    reason: Reason::NodeDown,
                })
                .collect(),
        })
    }

    fn finish_sync(&mut self, unsynced: BTreeMap<Member, Ask>, at: Option<Member>) -> Vec<Command> {
        let previous = std::mem::replace(&mut self.sync, SyncState::Synced { unsynced });
        // Says it holds the state now, before anything it may answer: a
        // joiner that came after this member's own join has heard it only
        // as one that asked, and takes a snapshot only from a holder it
        // heard (rule 4).
        let mut out = Vec::new();
        self.announce(true, &mut out);
        if let SyncState::Waiting(Waiting {
            buffered,
            hosted_before,
            ..
        }) = previous
        {
            // State taken at a holder's admission rather than at the
            // request: what came before that admission is in it.
            let skip = match at {
                Some(holder) => buffered
                    .iter()
                    .position(|(from, _, msg)| {
                        *from == holder && matches!(msg, Inbound::Announce(_))
                    })
                    .map_or(0, |i| i + 1),
                None => 0,
            };
            for (from, version, msg) in buffered.into_iter().skip(skip) {
                // Rule 8 at this position: what the holders dropped.
                if version.is_some_and(|v| !self.roster.counts_version(v)) {
                    out.push(Command::Dropped {
                        from,
                        cause: DropCause::Version,
                    });
                    continue;
                }
                out.extend(self.dispatch(from, None, msg));
            }
            self.settle_limbo(&mut out);
            let local = self.local;
            if let Some(unsynced) = self.unsynced() {
                unsynced.remove(&local);
            }
            out.extend(self.reclaim(hosted_before));
        }
        out.push(Command::Reconcile);
        out.push(Command::Event(GroupEvent::Ready));
        out
    }

    /// Ends this member's calls whose request went by while it waited for
    /// the state and was not replayed (delivered before its own request, or
    /// dropped with the buffer at a confchg or past the cap): it has no
    /// registry of that position to learn the host from, so it cannot
    /// match a reply. Without this they would wait forever.
    fn settle_limbo(&mut self, out: &mut Vec<Command>) {
        for id in std::mem::take(&mut self.limbo) {
            if !self.abandoned.remove(&id) {
                out.push(Command::CallDone {
                    id,
                    outcome: Err(CallError::OutcomeUnknown),
                });
            }
        }
    }

    /// Names this member hosted before it lost the group state: claim the
    /// ones nobody holds, and report the ones another member holds now.
    fn reclaim(&mut self, hosted_before: BTreeSet<String>) -> Vec<Command> {
        let mut out = Vec::new();
        for name in hosted_before {
            match self.names.get(&name) {
                None => out.push(Command::Reclaim { name }),
                Some(host) if *host != self.local => {
                    out.push(Command::Event(GroupEvent::NameDropped {
                        name,
                        host: self.local,
                        reason: NameDropReason::LostInMerge,
                    }))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// A message on a member that holds the state: sender rules, then its
    /// effect.
    fn handle_synced(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        let dropped = |cause| vec![Command::Dropped { from, cause }];
        match msg {
            Inbound::Announce(a) => return self.admit(from, a),
            // Read by the process it names, while it waits.
            Inbound::Refusal(_) => return Vec::new(),
            Inbound::Request(_) if self.may_request(from) => {}
            _ if !self.roster.is_member(from) => return dropped(DropCause::Unannounced),
            Inbound::Registry(_)
            | Inbound::Supervision(
                SupervisionMsg::TreeStarted { .. }
                | SupervisionMsg::ChildExited { .. }
                | SupervisionMsg::Tick { .. }
                | SupervisionMsg::Quorum { .. },
            ) if self.roster.is_observer(from) => return dropped(DropCause::Observer),
            Inbound::SyncRequest(req) => {
                let local = self.local;
                let view = &self.view;
                let SyncState::Synced { unsynced } = &mut self.sync else {
                    return Vec::new();
                };
                if !unsynced.contains_key(&from) {
                    return dropped(DropCause::Unasked);
                }
                let responder = view.iter().find(|m| !unsynced.contains_key(m)).copied();
                unsynced.insert(
                    from,
                    Ask {
                        nonce: Some(req.nonce),
                        responder,
                    },
                );
                if responder == Some(local) {
                    return vec![self.snapshot_for(from, req.nonce, None)];
                }
                return Vec::new();
            }
            Inbound::Snapshot(snap) => {
                let Some(unsynced) = self.unsynced() else {
                    return Vec::new();
                };
                let ask = unsynced.get(&snap.for_member).copied();
                if ask.is_some_and(|a| a.nonce == Some(snap.nonce) && a.responder == Some(from)) {
                    unsynced.remove(&snap.for_member);
                    return Vec::new();
                }
                return dropped(DropCause::Unasked);
            }
            _ => {}
        }
        self.apply(from, msg)
    }

    fn snapshot_for(&self, member: Member, nonce: u64, at: Option<Member>) -> Command {
        let unsynced = match &self.sync {
            SyncState::Synced { unsynced } => unsynced
                .iter()
                .map(|(m, a)| Unsynced {
                    member: *m,
                    asked: a.nonce,
                    responder: a.responder,
                })
                .collect(),
            SyncState::Waiting(_) => Vec::new(),
        };
        Command::Mcast(Outgoing::Snapshot(Box::new(Snapshot {
            for_member: member,
            nonce,
            at,
            names: self.names.iter().map(|(n, h)| (n.clone(), *h)).collect(),
            supervision: self.engine.clone(),
            unsynced,
            announced: self.roster.announcements(),
        })))
    }

    /// An announcement (rules 1 and 2).
    fn admit(&mut self, from: Member, a: Announce) -> Vec<Command> {
        let change = match self.roster.handle_announce(from, a.announcement) {
            Admission::Admitted(change) => change,
            Admission::Nothing => return Vec::new(),
            Admission::Refused(refusal) => return self.refuse(refusal),
        };
        self.refresh_view();
        let mut out = vec![Command::Event(GroupEvent::ViewChanged {
            members: change.members,
            joined: change.joined.clone(),
            left: Vec::new(),
        })];
        if !a.synced {
            if let Some(unsynced) = self.unsynced() {
                unsynced.insert(from, Ask::default());
            }
        }
        // A merge round is started by the merging confchg, the same on
        // every side; an admission is a plain join for the engine.
        let joined: Vec<MemberChange> = change
            .joined
            .iter()
            .map(|c| MemberChange {
                member: c.member,
                reason: Reason::Join,
            })
            .collect();
        self.supervise_view(&joined, &[], &mut out);
        if a.synced {
            self.answer_orphans(from, &mut out);
        }
        out
    }

    /// A process refused for its versions (rule 8): reported on every
    /// member; this process stops if it is the one.
    fn refuse(&mut self, refusal: Refusal) -> Vec<Command> {
        warn!(local = %self.local, member = %refusal.member, versions = %refusal.versions, group_version = refusal.group_version, "refused a process that cannot speak the group's protocol version");
        let mut out = vec![
            Command::Event(GroupEvent::MemberRefused {
                member: refusal.member,
                versions: refusal.versions,
                group_version: refusal.group_version,
            }),
            Command::Dropped {
                from: refusal.member,
                cause: DropCause::Incompatible,
            },
        ];
        if refusal.member == self.local {
            out.push(Command::Refused(refusal));
        } else if self.view.iter().find(|m| !self.is_unsynced(**m)) == Some(&self.local) {
            // The member that would answer its state request tells it.
            out.push(Command::Mcast(Outgoing::Refusal(RefusalNotice {
                member: refusal.member,
                group_version: refusal.group_version,
            })));
        }
        out
    }

    fn is_unsynced(&self, m: Member) -> bool {
        match &self.sync {
            SyncState::Synced { unsynced } => unsynced.contains_key(&m),
            SyncState::Waiting(_) => true,
        }
    }

    /// Requests that found no member to answer them get one now that the
    /// holder `admitted` counts, with the state at its admission.
    fn answer_orphans(&mut self, admitted: Member, out: &mut Vec<Command>) {
        let local = self.local;
        let view = self.view.clone();
        let Some(unsynced) = self.unsynced() else {
            return;
        };
        let responder = view.iter().find(|m| !unsynced.contains_key(m)).copied();
        let mut answer = Vec::new();
        for (member, ask) in unsynced.iter_mut() {
            if let (Some(nonce), None) = (ask.nonce, ask.responder) {
                ask.responder = responder;
                if responder == Some(local) {
                    answer.push((*member, nonce));
                }
            }
        }
        for (member, nonce) in answer {
            out.push(self.snapshot_for(member, nonce, Some(admitted)));
        }
    }

    /// Admits the members a merge offer lists that have not announced
    /// themselves here yet: their side vouches for them (rule 5).
    fn admit_offered(
        &mut self,
        offer: &supervisor::MergeOffer,
        announced: &[(Member, Announcement)],
        out: &mut Vec<Command>,
    ) {
        for v in &offer.core.view {
            if !self.roster.in_view(v.member) || self.roster.is_member(v.member) {
                continue;
            }
            // Vouched for with what it announced on its side; without that
            // it stays pending until it announces itself here.
            let Some((_, a)) = announced.iter().find(|(m, _)| *m == v.member) else {
                continue;
            };
            let change = match self.roster.handle_announce(v.member, *a) {
                Admission::Admitted(change) => change,
                Admission::Nothing => continue,
                Admission::Refused(refusal) => {
                    out.extend(self.refuse(refusal));
                    continue;
                }
            };
            {
                self.refresh_view();
                out.push(Command::Event(GroupEvent::ViewChanged {
                    members: change.members,
                    joined: change.joined,
                    left: Vec::new(),
                }));
                if let Some(unsynced) = self.unsynced() {
                    unsynced.insert(v.member, Ask::default());
                }
            }
        }
    }

    fn apply(&mut self, from: Member, msg: Inbound) -> Vec<Command> {
        let mut out = Vec::new();
        match msg {
            Inbound::Registry(RegistryOp::Register { name, token }) => {
                match self.names.get(&name) {
                    Some(owner) if *owner != from => {
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Err(*owner),
                            });
                        }
                    }
                    Some(_) => {
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Ok(()),
                            });
                        }
                    }
                    None => {
                        self.names.insert(name.clone(), from);
                        if from == self.local {
                            out.push(Command::RegisterDone {
                                token,
                                result: Ok(()),
                            });
                        }
                        out.push(Command::Event(GroupEvent::NameRegistered {
                            name,
                            host: from,
                        }));
                    }
                }
            }
            Inbound::Registry(RegistryOp::Unregister { name }) => {
                if self.names.get(&name) == Some(&from) {
                    self.names.remove(&name);
                    out.push(Command::Event(GroupEvent::NameUnregistered {
                        name,
                        host: from,
                    }));
                }
            }
            Inbound::Request(request) => {
                if self.route_request(from, &RequestRef::from(&request), &mut out) {
                    out.push(Command::Deliver { from, request });
                }
            }
            Inbound::Reply(reply) => {
                if reply.to == self.local {
                    match self.awaiting.get(&reply.id) {
                        Some(host) if *host == from => {
                            self.awaiting.remove(&reply.id);
                            out.push(Command::CallDone {
                                id: reply.id,
                                outcome: reply.outcome.map_err(CallError::Remote),
                            });
                        }
                        Some(_) => out.push(Command::Dropped {
                            from,
                            cause: DropCause::NotHost,
                        }),
                        // A call that already ended (its host left, or
                        // its caller gave up on it): a late reply.
                        None => {}
                    }
                }
            }
            Inbound::Supervision(msg) => {
                let event = match msg {
                    SupervisionMsg::TreeStarted {
                        name,
                        fingerprint,
                        spec,
                        kinds,
                    } => {
                        let invalid = if name.is_empty() {
                            Some(supervisor::SpecError::EmptyTreeName)
                        } else {
                            spec.validate().err()
                        };
                        if let Some(e) = invalid {
                            // Refused before the engine sees it; the
                            // starter still learns why.
                            out.push(Command::Dropped {
                                from,
                                cause: DropCause::Invalid,
                            });
                            let why = supervisor::Refusal::InvalidSpec(e);
                            out.push(Command::Supervise(supervisor::Output {
                                commands: vec![supervisor::Command::RefuseTree {
                                    name: name.clone(),
                                    by: from,
                                    why: why.clone(),
                                }],
                                events: vec![supervisor::SupervisionEvent::TreeRefused {
                                    name,
                                    by: from,
                                    why,
                                }],
                            }));
                            return out;
                        }
                        supervisor::Event::TreeStarted {
                            name,
                            fingerprint,
                            spec,
                            by: from,
                            kinds,
                        }
                    }
                    SupervisionMsg::ChildExited {
                        path,
                        incarnation,
                        normal,
                    } => {
                        // Only the host of a running incarnation may end
                        // it; a report for an incarnation that runs no more
                        // is stale and changes nothing in the engine.
                        let hosted_elsewhere = !self.engine.is_merging()
                            && self.engine.children().iter().any(|c| {
                                c.path == path
                                    && matches!(c.status, supervisor::SlotStatus::Running { host, incarnation: i, .. } if i == incarnation && host != from)
                            });
                        if hosted_elsewhere {
                            out.push(Command::Dropped {
                                from,
                                cause: DropCause::NotHost,
                            });
                            return out;
                        }
                        supervisor::Event::ChildExited {
                            path,
                            incarnation,
                            host: from,
                            normal,
                        }
                    }
                    SupervisionMsg::Tick { now_ms } => {
                        let stream = self.engine.now_ms();
                        if stream != 0 && now_ms > stream.saturating_add(MAX_TICK_STEP_MS) {
                            out.push(Command::Dropped {
                                from,
                                cause: DropCause::Clock,
                            });
                            return out;
                        }
                        supervisor::Event::Tick { now_ms }
                    }
                    SupervisionMsg::Quorum { quorate, nodes } => {
                        supervisor::Event::QuorumChanged { quorate, nodes }
                    }
                    SupervisionMsg::StateOffered {
                        offer, announced, ..
                    } => {
                        self.admit_offered(&offer, &announced, &mut out);
                        supervisor::Event::StateOffered { from, offer }
                    }
                    // Taken where delivered (`handle_message`).
                    SupervisionMsg::Mark { .. } => return out,
                };
                let output = self.engine.handle(event);
                self.push_supervision(output, &mut out);
            }
            Inbound::Announce(_)
            | Inbound::Refusal(_)
            | Inbound::SyncRequest(_)
            | Inbound::Snapshot(_) => {}
        }
        out
    }

    /// Whether a request from `from` is taken: from a member, or from a
    /// process of another side of a merge that has not announced itself
    /// here yet. A member's requests sent in the moment before its runtime
    /// read the merging confchg arrive ahead of its announcement, and a
    /// request decides nothing for the group (the registry says who hosts
    /// the target; only that host acts on it).
    fn may_request(&self, from: Member) -> bool {
        self.roster.is_member(from) || self.roster.pending_after_merge(from)
    }

    /// A request at its place in the order, read in place, on a member that
    /// holds the group state: the commands it gives (a call of this
    /// member's that ended), and whether it goes to the local actor (which
    /// the runtime then hands it straight from the delivered bytes, instead
    /// of the core building an owned [`Request`] for [`Command::Deliver`]).
    /// `None` when the core must keep the request (this member is not
    /// synced): give it to [`GroupCore::handle_message`] instead.
    pub(crate) fn handle_request_in_place(
        &mut self,
        from: Member,
        request: &RequestRef<'_>,
    ) -> Option<(Vec<Command>, bool)> {
        if !self.joined || !matches!(self.sync, SyncState::Synced { .. }) {
            return None;
        }
        if !self.may_request(from) {
            return Some((
                vec![Command::Dropped {
                    from,
                    cause: DropCause::Unannounced,
                }],
                false,
            ));
        }
        let mut out = Vec::new();
        let deliver = self.route_request(from, request, &mut out);
        Some((out, deliver))
    }

    /// What a request means here, as of its place in the order: fencing,
    /// the call it answers on the sender, and whether this member hosts its
    /// target (the return value).
    fn route_request(
        &mut self,
        from: Member,
        request: &RequestRef<'_>,
        out: &mut Vec<Command>,
    ) -> bool {
        let ours = from == self.local && request.want_reply && self.still_awaited(request.id);
        if let Some(fence) = request.fence {
            if !self.runs_incarnation(request.target, fence) {
                if ours {
                    out.push(Command::CallDone {
                        id: request.id,
                        outcome: Err(CallError::StaleIncarnation {
                            name: request.target.to_owned(),
                            fence,
                        }),
                    });
                }
                return false;
            }
        }
        let host = self.names.get(request.target).copied();
        if ours {
            match host {
                Some(_) if self.awaiting.len() >= self.limits.max_awaiting => {
                    // Its host still gets the request; the reply finds no
                    // call and is ignored.
                    out.push(Command::CallDone {
                        id: request.id,
                        outcome: Err(CallError::WouldBlock),
                    });
                }
                Some(h) => {
                    self.awaiting.insert(request.id, h);
                }
                None => out.push(Command::CallDone {
                    id: request.id,
                    outcome: Err(CallError::NoSuchName(request.target.to_owned())),
                }),
            }
        }
        host == Some(self.local)
    }

    /// Whether one of this member's calls waits on its request `id`, now at
    /// its place in the order. A call given up before its request came back
    /// waits no more (its host still gets the request).
    fn still_awaited(&mut self, id: u64) -> bool {
        self.limbo.remove(&id);
        !self.abandoned.remove(&id)
    }

    /// Whether the supervised child registered as `name` runs the
    /// incarnation with token `fence`, as of this point in the stream.
    fn runs_incarnation(&self, name: &str, fence: supervisor::FencingToken) -> bool {
        self.engine.running().iter().any(|c| {
            matches!(c.status, supervisor::SlotStatus::Running { token, .. } if token == fence)
                && super::children::child_name(&c.path, &c.slot) == name
        })
    }

    /// Forgets call `id`: its caller gave up on it (a timeout, or a
    /// dropped future). If its request has come back, the reply it awaited
    /// will be ignored as one for no call; if not, the request will be
    /// passed on to its host as usual but start no wait here.
    pub(crate) fn abandon_call(&mut self, id: u64) {
        if self.awaiting.remove(&id).is_none() {
            self.abandoned.insert(id);
        }
    }

    /// The request of call `id` was never multicast: it will not come
    /// back to settle the call's abandonment.
    pub(crate) fn call_unsent(&mut self, id: u64) {
        self.abandoned.remove(&id);
    }

    /// Calls of this member whose host owes a reply.
    pub(crate) fn awaiting_replies(&self) -> usize {
        self.awaiting.len()
    }

    /// Fails every call still awaiting a reply (the group is closing).
    pub(crate) fn fail_all_calls(&mut self) -> Vec<u64> {
        self.abandoned.clear();
        let mut ids: Vec<u64> = std::mem::take(&mut self.awaiting).into_keys().collect();
        ids.extend(std::mem::take(&mut self.limbo));
        ids
    }
}

#[cfg(test)]
mod tests;
