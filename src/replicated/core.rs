//! The decision core of one replica: who counts, view installation, the
//! primary component, apply order, state transfer and safe delivery. No
//! I/O, no clock, no actix: events in, actions out.
//!
//! ```text
//!   transport events                ReplicaCore<S>                 actions
//!  ─────────────────────►  ┌─────────────────────────────┐  ───────────────────►
//!   handle_confchg         │ roster: raw view, announced │   Mcast(Info | Fact | Ack)
//!   handle_quorum (local)  │   members, pending ones     │   Purge      (round changed)
//!   handle_message         │ learning (joiner, merge)    │   SendSnapshot{state, capture}
//!    (from, version, msg)  │ phase: Installing{infos,    │   Reply{id, result}
//!    Mark Info NoRoster    │         held} | Installed   │   Event(ReplicaEvent)
//!    Fact Command Ack      │ sm: S, id: StateId          │   Fatal(why)
//!    Chunk                 │ known: last primary (L)     │   Refused(versions)
//!                          │ refused: counts by cause    │
//!                          │ announcement: our versions  │  writes_at(): the group's
//!                          └─────────────────────────────┘    version, to write at
//! ```
//!
//! # Who counts (DESIGN.md §6)
//!
//! The *view* below is the effective view of a [`Roster`]: the processes of
//! the CPG view that announced themselves. A process announces itself with
//! its [`Info`] — every process multicasts one after every confchg anyway,
//! so no separate message is needed, and the announcement carries what the
//! install needs from it (state, knowledge, quorum fact). Numbered rules,
//! identical on every member:
//!
//! 1. **Rounds.** Every raw confchg that keeps this process in the view
//!    starts install round 0 of that view. Every process multicasts a
//!    `Mark` (a number it never used before) and, once its mark comes back
//!    with no confchg in between, an `Info` tagged with the view (a hash of
//!    its sorted raw members), the round and that mark. An info counts only
//!    if its mark is the sender's latest delivered since the confchg:
//!    anything else is stale and ignored. The mark is what ties an info to
//!    one *incarnation* of a raw view: the same set of processes can form
//!    the view again while a lagging sender's info from the first time is
//!    still in flight, and only a message delivered after the latest
//!    confchg proves its sender had seen it ([`crate::incarnation`] holds
//!    the rule and its property test). A confchg that only removes
//!    members asks of the survivors one mark and one info each.
//! 2. **Install.** A round completes when every announced member's info
//!    for it is in (with no announced member: at the first announcement);
//!    pending processes are never waited for, so a silent client stalls
//!    nothing and never counts as a holder, winner, sender or towards a
//!    majority.
//! 3. **Admission.** An info (of the current view, any round) from a
//!    pending process is its announcement. During a round it is decided
//!    when the round completes, in delivery order, just before the install
//!    (rule 6), and an admitted process's info counts in that install.
//!    After the install it is decided at once; if admitted, it starts round
//!    `r + 1`, in which its info counts and every other member multicasts a
//!    new one (it needs a state, and its state may be newer). Until an
//!    install includes it, a process outside the view applies nothing: it
//!    keeps the state its announcement claims (an announcement may be
//!    counted long after it was sent, see the limits below). It learns the
//!    last primary of every install it computes, unless it knows a later
//!    one (a merger's own side's): its next info must not claim a state
//!    above its own knowledge, which rule 6 refuses once it is no merger.
//! 4. **Learning.** A process that joins a view holding others, and every
//!    process at a merge (a confchg with `NodeUp` joiners, where each side
//!    knows only its own members), decides nothing until the first info of
//!    the view that carries a roster (sent by a process that knew the
//!    roster at the confchg; at a merge, whichever side's comes first, for
//!    everyone — any narrower trust would differ between the sides, which
//!    know different members). It adopts that roster as of
//!    the confchg, and replays what it recorded since the confchg through
//!    the ordinary rules. Every process that knows the roster knows the
//!    same one (it followed the same stream), so every process learns the
//!    same set at a definite position, and a joiner's decisions equal the
//!    others'. A
//!    process whose first confchg brings in everybody in the view (a
//!    founding) knows nobody is announced; so do learners once every
//!    process of the view has sent an info without a roster (every member
//!    that knew one was gone). When silent clients keep that from
//!    happening, a learner's timer
//!    ([`super::ReplicaConfig::learn_timeout`]) multicasts a `NoRoster`
//!    (tagged with its mark, like an info); delivered before any roster of
//!    the view and before any install in it, and once every process whose
//!    mark of this incarnation was delivered has had its info delivered
//!    too, it makes every process — learners, and members whose own info
//!    has not come back yet — take the empty roster at that position;
//!    otherwise it is void (the learner's timer sends another). A process
//!    that marked answers with an info at once, and a member's carries the
//!    roster: so a `NoRoster` never overtakes the roster of a member whose
//!    mark came before it. That is what keeps a lone process of another
//!    build from founding a history of its own next to a running group:
//!    its own info is delivered before its `NoRoster`, so after an empty
//!    roster it would be the first admitted, set the group's version to
//!    its own, and the members' infos would be refused (rule 9).
//! 5. **Sender rules.** `Fact` and `Command` count only from announced
//!    members (a pending process's command is refused on every member, and
//!    its caller gets [`ReplicaError::NotMember`]) that are participants
//!    (rule 10); `Ack` only from a participant holding the state;
//!    a `Chunk` only from the sender the install chose, for the state id it
//!    chose, in order, and only until the transfer's last chunk; `Check`
//!    and `Digest` only from participants (rule 11).
//! 6. **Claims.** Every epoch a group mints is minted by an install or a
//!    fact in the stream, so every process that followed the stream knows
//!    it; only a merge brings histories the other side never saw. So:
//!    - an info that contradicts itself (a state epoch above its `known`
//!      primary epoch, or a state epoch without a known primary) is
//!      refused;
//!    - unless the sender is a *merger* (in the view at a confchg with
//!      `NodeUp` joiners, until an install includes it; a learner takes
//!      the list with the roster, except at a merge, where everybody in the
//!      view is one), an announcement may claim no epoch above the
//!      last primary this process knows of (the same on every process that
//!      knows the roster: a learner takes it with the roster) or claimed
//!      by an info of the round so far; a refused announcement admits
//!      nobody. In a keyed group ([`super::ReplicaConfig::key`]) every
//!      sender holds the key, so a claim is a replica's own knowledge
//!      (a durable replica's, from its disk, after a restart): it is not
//!      checked. From [`RECOVERY_VERSION`] on, an unkeyed group checks a
//!      claim only against a history some participant saw in the stream:
//!      one whose last known primary names itself (it was part of it). A
//!      replica back from its disk is never in its own record (its
//!      predecessor is gone), so when every participant came back from
//!      disk — a group restarted whole, in any order — nobody can refute a
//!      later component, and the claim is taken as the group's own
//!      founding members' would be. The price, without a key: an outsider
//!      that joins while no participant was part of the last primary (a
//!      whole-group restart, or a view whose members of the last primary
//!      all crashed) can claim a history of its own and win; with a key it
//!      cannot take part at all;
//!    - at the install, the members of the last install that answered
//!      this round (mergers aside) knew the same primary components when
//!      they answered, so one claiming an epoch above every other's is
//!      confirmed by nobody; it, and a member whose info contradicts
//!      itself, count as holding nothing (never a winner, it receives the
//!      winner's state), so a liar neither stalls the round nor wins it. A
//!      merger, a newcomer, or a member alone among the last install's
//!      cannot be checked: there the rules cannot tell a real newer
//!      primary from a forged one (the group key can);
//!    - a process whose own announcement is refused for its epoch learned
//!      that primary outside the view from members gone since; if its
//!      state is not above the members' last primary, it takes their
//!      knowledge and announces itself again (it would otherwise stay
//!      outside until the next confchg).
//! 7. **Last primary.** Of the `known` records naming the latest epoch,
//!    those sent by a member the record names decide the lineage; a record
//!    from a process outside it (a forger's `{itself}`) cannot shrink it.
//!    From [`RECOVERY_VERSION`] on, a durable replica's info names the
//!    replica whose data directory it took over (its predecessor, gone for
//!    sure: the directory is locked while a replica runs); a predecessor
//!    on the sender's own node counts as back, so it leaves the lineage
//!    like a member seen leaving with `ProcDown`. Without it, a member of
//!    the last primary that died before it learned of that component
//!    would be waited for forever by the others, who cannot tell that it
//!    came back under another process id. (Only the last predecessor is
//!    named: a replica started twice before the group is primary again
//!    stands in for the one before it only. Without a group key, a process
//!    on a member's node could name that member while it lives, and shrink
//!    the majority the rule asks for; the key is the defence.)
//! 8. **Bounds.** Commands held during a round are capped
//!    ([`super::ReplicaConfig::max_held`]): past it every member refuses
//!    the same commands ([`ReplicaError::Overloaded`]). What one member
//!    buffers alone — a learner's record, a receiver's replay list, the
//!    snapshot bytes — is capped too; past it this member gives up
//!    ([`ReplicaEvent::GaveUp`]) and leaves the group; its owner starts it
//!    again to rejoin.
//! 9. **Versions.** An info is its sender's announcement: it carries the
//!    protocol versions the sender speaks (a `crate::roster::Announcement`),
//!    and the roster an info carries names each member with its own, so a
//!    learner knows the ranges too. The group speaks the highest version
//!    every member speaks ([`Roster::group_version`]); it never moves on
//!    an admission, and moves up at the confchg where the last member
//!    that held it back leaves, on every process alike
//!    ([`ReplicaEvent::VersionChanged`]); from that point the runtime
//!    writes at it ([`ReplicaCore::writes_at`]).
//!    - An announcement whose range does not include the group's version
//!      (with no member: the first admitted sets it) admits nobody. It is
//!      judged where any announcement is (rule 3: at the end of the round,
//!      or at once after the install), before its claims (rule 6): every
//!      process that knows the members reports
//!      [`ReplicaEvent::MemberRefused`] at that position and counts it
//!      (`incompatible`). The refused process computes the same once it
//!      knows the members (a learner replays its own info like any
//!      other): it reports the event about itself and stops
//!      ([`Action::Refused`], [`ReplicaError::Incompatible`]). It is no
//!      member, so none of its messages changes any state (rule 5).
//!    - What a process sends before it knows the group's version — `Mark`,
//!      `Info`, `NoRoster` — has a layout every version shares (see
//!      [`super::messages`]) and counts in an envelope of any version. Any
//!      other message counts only in an envelope of a version every member
//!      speaks ([`Roster::counts_version`]); otherwise every member refuses
//!      it (`version`), and a command's sender gets
//!      [`ReplicaError::StaleVersion`]. (One in a version a member's build
//!      does not read at all is dropped before its core sees it; that
//!      member applies nothing of it either.)
//! 10. **Observers.** An info's announcement says the sender's role; the
//!     roster (and the roster an info carries to a learner) keeps it. An
//!     observer ([`Role::Observer`]) is a member for installs and takes
//!     part in no decision:
//!     - it is admitted like anyone (rules 3 and 9: it must speak the
//!       group's version, to read the stream), its info is waited for like
//!       any member's, and it applies every command the group applies;
//!     - of its info only the state id is read, and only for itself: an
//!       observer holding the winner's state keeps it, any other receives
//!       the winner's. It is never the winner nor the sender, whatever its
//!       info claims; its `known` record, `founder` flag and quorum fact
//!       are not read (nor judged: rule 6 checks no claim of an
//!       observer's), so they neither make a view primary nor keep one
//!       from being primary;
//!     - a primary record's membership (the lineage) lists participants
//!       only, and only participants count towards the majority of the
//!       last primary;
//!     - an observer's quorum fact is never recorded, so the quorum rule
//!       reads the participants' only: a view of observers only is never
//!       quorate, hence never primary (nobody can send a state either:
//!       every observer keeps its own);
//!     - safe delivery counts the acknowledgements of participants
//!       holding the state only;
//!     - it sends no command, fact or ack (its replica refuses a command
//!       locally, [`ReplicaError::Observer`]); one from an observer is
//!       refused on every member (`observer`), a command's sender getting
//!       [`ReplicaError::Observer`].
//!
//!     So, but for the install rounds an observer's coming and going
//!     starts (a primary view mints an epoch at each, as at any view
//!     change) and the versions it must speak, the participants decide
//!     what they would decide without the observers. An observer's copy
//!     carries no history forward: once every participant holding the
//!     state is gone, the group goes on as if the observers were not
//!     there (a newcomer may found it afresh), and the observers receive
//!     that state.
//!
//! 11. **Divergence checks** (from protocol version
//!     [`super::messages::DIGEST_VERSION`]). A state id names a history, not
//!     a content: a replica whose `apply` is not deterministic holds the
//!     same id as the others and another state. So replicas compare
//!     digests of their content ([`StateMachine::digest`]) at one point of
//!     the stream:
//!     - a `Check` from a participant opens a check where it is delivered,
//!       if the view is installed and primary, no transfer runs, no check
//!       is open and none opened at the same state in this round (so
//!       however many checks a member sends, each costs the others at most
//!       one digest per command applied); otherwise it is ignored. Every
//!       member then holds the same state id, the check's `at`;
//!     - at that point every participant multicasts a `Digest` of its
//!       state for `at` (`None` if its state machine has none: it
//!       abstains). A state machine that digests captures
//!       ([`StateMachine::DIGESTS_SNAPSHOTS`]) has it hashed on a blocking
//!       thread, so its digest lands later in the stream; that changes
//!       nothing, since a digest names its `at`. One counts only from a
//!       participant the check waits for, once;
//!     - once every participant's digest is in, the check is decided, on
//!       every member alike: a digest held by a strict majority of the
//!       participants that sent one is right; those that sent another
//!       diverged ([`ReplicaEvent::Diverged`]; each logs an error), and the
//!       lowest holder of the majority's digest sends its state to them,
//!       as at an install (a diverged replica announces no state until it
//!       restored it, so a view change meanwhile makes it a receiver).
//!       With no majority (two participants, one each) the divergence is
//!       reported and nothing is sent: nobody can tell which is right;
//!     - a view change closes an open check, undecided;
//!     - the lowest participant of an installed primary view sends a
//!       `Check` once [`super::ReplicaConfig::digest_every`] commands were
//!       applied since the last check opened; any participant may send one
//!       on demand ([`super::Replica::check`]).
//!
//!     Observers are neither compared nor resent a state (their commands
//!     are the participants', their divergence changes no decision).
//!
//! 12. **Linearizable reads** (from protocol version
//!     [`READ_VERSION`]). A member's reads wait for a `Barrier` it
//!     multicasts once they are asked (one for all asked in a turn of its
//!     runtime; only once it is a member and its group speaks that
//!     version). Only its sender acts on a barrier: every other process
//!     ignores it, so it changes no decision and needs no sender rule.
//!     Where it comes back:
//!     - if this member holds the state of an installed primary view (no
//!       transfer to it runs, its state is not found diverged), the reads
//!       are evaluated on that state, at that position `p`. A command whose
//!       reply anyone had before the read was asked was delivered before
//!       the barrier (total order; a reply follows its command's
//!       delivery), so the read sees it. The answers leave once `p` is
//!       stable (safe delivery: as a reply at `p` would), so no read shows
//!       a state a later primary may not hold; if the view changes first
//!       and this member's state does not survive into a primary view,
//!       they fail ([`ReplicaError::Uncertain`]: nothing was answered);
//!     - while a view is being installed or the state received, they are
//!       parked, and a new barrier goes out for them once this member
//!       holds the state of an installed primary view (any later point
//!       also follows the read's start);
//!     - in a view that is not primary they fail
//!       ([`ReplicaError::NotPrimary`]); once this member is no member,
//!       with [`ReplicaError::NotMember`];
//!     - reads evaluated but not yet answered on a replica a check finds
//!       diverged (rule 11) fail ([`ReplicaError::Uncertain`]): they read
//!       a state that is not the group's; the reads after it wait for the
//!       state it is sent.
//!
//!     Waiting reads are capped by [`super::ReplicaConfig::max_held`]
//!     (rule 8): past it a read fails at once ([`ReplicaError::Overloaded`]).
//!
//! 13. **Acknowledgements** (safe delivery; see "Safe delivery" below).
//!     A member counts itself for what it applied without waiting for its
//!     own `Ack` to come back: it holds that state (and a durable
//!     replica's reply still waits for its own sync). It sends no `Ack`
//!     that would release nothing anywhere: under [`Delivery::Safe`], one
//!     whose position a strict majority of the lineage has already
//!     acknowledged in the acknowledgements delivered here, which every
//!     member of the view delivers too, in the same order. In a group of
//!     three, the first acknowledgement of a position releases it on the
//!     two members that did not send it, the second on the first sender,
//!     and the third is not sent. Neither changes a group-level decision:
//!     when a reply or a read leaves is this member's alone.
//!
//! Every refusal is counted by cause ([`RefusedCounts`]) and logged.
//!
//! # View installation
//!
//! An install over the infos of the announced members of a round (every
//! member computes the same: it saw the same infos in the same order):
//!
//! - **winner**: the greatest state id of a participant in the view; the
//!   members holding it (equal ids mean equal states; observers too, rule
//!   10) keep their state, everyone else discards theirs and receives the
//!   winner's;
//! - **sender**: the lowest winner; it captures its state *at this point*
//!   (before the held commands), and its runtime encodes and multicasts it
//!   in chunks — or, from [`SUFFIX_VERSION`] on, the commands after the
//!   lowest receiver's state, if every receiver announced a state the
//!   sender's recent commands pass through ([`Recent`]) and they encode
//!   smaller; the transfer's last byte says which; receivers buffer every command applied after this point and
//!   replay it once the snapshot is restored;
//! - **primary** ⇔ every participant's latest quorum fact says quorate (at
//!   least one reported), and either no participant knows of any earlier
//!   primary component and one of them may found a group
//!   ([`super::ReplicaConfig::found_group`]), or the winner holds the state
//!   of the last primary component `L` and the view holds a strict
//!   majority of `L` (minus members seen leaving with `Leave`/`ProcDown`,
//!   which are gone for sure; if that leaves nobody, no majority is
//!   needed);
//! - if primary: a new [`PrimaryEpoch`] (`term + 1`, `ring_seq` = the
//!   highest ring seq reported), which becomes the winners' state epoch,
//!   and the held commands are applied; if not, they are refused
//!   ([`ReplicaError::NotPrimary`]: nobody applied them).
//!
//! A quorum fact delivered later re-evaluates the same rule in place: the
//! view can become primary (new epoch) or stop being primary. Commands are
//! applied only while the installed view is primary, in delivery order.
//!
//! Why a majority of the last primary as well as quorum: quorum alone lets
//! a partition holding only stale replicas (the up-to-date ones elsewhere)
//! become primary and lose acknowledged writes; a majority of the last
//! primary always contains a member of it, i.e. its state.
//!
//! # Safe delivery
//!
//! In [`Delivery::Safe`] commands are applied in delivery order as above,
//! but the caller's reply waits until a strict majority of the primary
//! component's participants (its lineage) have multicast an
//! [`ReplicaMessage::Ack`] at or past the command's position; in
//! [`Delivery::SafeAll`], until every participant that holds the state has.
//! A member counts itself for what it applied (rule 13).
//! Only a participant holding the state acknowledges (rule 10): one still
//! receiving a transfer counts in the majority's size, not towards it. A
//! durable replica acknowledges only what it synced (`keeper`, rule 1).
//! Replies still waiting when the view changes are released only if this
//! member's state survives into a primary view, and then by that view's
//! acknowledgements; otherwise the caller gets [`ReplicaError::Uncertain`].
//!
//! Why a majority is enough, as in Raft (the acknowledgements come from a
//! strict majority `M` of the lineage `L` of the primary that applied the
//! command `c`):
//!
//! - *A later primary holds `c`.* A view is primary only with a strict
//!   majority of `L` (members seen leaving with `Leave`/`ProcDown` aside),
//!   which meets `M`; the members that move from one view to the next
//!   together delivered the same messages (virtual synchrony), and each
//!   member of `M` delivered `c` before its acknowledgement, so the winner
//!   (the greatest state) holds `c`. A member of `L` seen leaving with
//!   `Leave`/`ProcDown` left a live daemon behind: what it delivered, the
//!   others in the ring deliver too.
//! - *A whole-group restart keeps `c`.* A durable replica acknowledges only
//!   what it synced, and writes a later primary's record to its disk only
//!   after syncing what it applied before (`keeper`, rules 1 and 2). A group
//!   restarted from disk is primary again only once every member of the
//!   latest record's component is back (or gone for sure, `keeper` rule 4),
//!   and the winner's state must be of that record's epoch: if that record
//!   is `L`'s, the members back include `M`; if it is a later one, its
//!   members wrote it after syncing `c`.
//!
//! So an acknowledged command survives the loss of any minority of the
//! primary's members, with their disks; [`Delivery::SafeAll`] survives any
//! number of disks but one, at the price of waiting for the slowest holder.
//!
//! # Limits of the rules
//!
//! - Without a group key, a process that *sends* can announce itself: a
//!   well-formed info within the ceiling makes it a member (it then
//!   receives the state). A forged roster info that reaches a learner
//!   before any real member's misleads that learner alone (it cannot tell
//!   members apart yet); the members' decisions do not change.
//! - A `NoRoster` from any process of the view counts: a forging client
//!   can send one in the short window after a confchg before any roster
//!   is delivered, and make everyone start that view with nobody
//!   announced (every member is then admitted again by its own info).
//! - A mark is only as unique as the sender makes it: a forger can send a
//!   mark and an info like anyone (rule 6 and the group key judge what
//!   the info claims). A process's own marks count up from one for every
//!   confchg it sees, so a new incarnation of a replica (a new process, or
//!   the same process joining again after its last messages were
//!   delivered) never repeats one that is still in flight.
//! - A member that has not multicast its mark of a view by the time a
//!   learner's `NoRoster` is delivered (it took longer than the learning
//!   timeout to see the confchg) can still be overtaken: every process
//!   then starts the view with nobody announced, and the first
//!   announcement delivered sets the group's version — possibly an older
//!   build's, and then the members that do not speak it are refused.
//! - A client that multicasts a mark and never an info keeps every
//!   `NoRoster` of that incarnation void: learners of a view where nobody
//!   knows the members wait (no group is founded) until it leaves; members
//!   are not held up.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, error, info, warn};

use super::durable::Entry;
use super::inspect::{
    Agreement, CheckReport, Checks, ReplicaInspection, ReplicaMemberInspection, SharedState,
};
use super::messages::{
    Chunk, CommandMsg, DigestMsg, Info, PrimaryEpoch, PrimaryRecord, ReplicaMessage, StateDigest,
    StateId, SuffixEntry, DIGEST_VERSION, READ_VERSION, RECOVERY_VERSION, SUFFIX_VERSION,
    TRANSFER_SNAPSHOT, TRANSFER_SUFFIX,
};
use super::reads::Reads;
use super::recent::Recent;
use super::{Delivery, Executed, RefusedCounts, ReplicaError, ReplicaEvent, StateMachine};
use crate::group::MetricsSnapshot;
use crate::incarnation::Incarnation;
use crate::quorum::QuorumFacts;
use crate::roster::{Admission, Announcement, Refusal, Role, Roster};
use crate::stable_hash::StableHasher;
use crate::transport::{Member, MemberChange, QuorumState, Reason};
use crate::wire::{Codec, Versions};

/// How many of its acknowledgements a member keeps in flight (safe
/// delivery): one more is asked for only while fewer are on their way, so
/// their number per round through the daemons stays bounded, and a
/// durable replica whose sync returns while an earlier acknowledgement is
/// still travelling need not wait for it to come back.
pub(crate) const ACKS_IN_FLIGHT: u32 = 4;

/// What reads whose barrier comes back get (rule 12).
enum ReadStanding {
    /// Evaluated on this member's state.
    Answer,
    /// Parked until this member holds an installed primary view's state.
    Wait,
    /// Failed with this error.
    Fail(ReplicaError),
}

/// The actions for a state machine `S`.
pub(crate) type Actions<S> =
    Vec<Action<<S as StateMachine>::Response, <S as StateMachine>::Snapshot>>;

/// What the runtime must do (`R`: responses, `C`: snapshot captures).
pub(crate) enum Action<R, C> {
    /// Multicast this protocol message (ahead of user commands).
    Mcast(ReplicaMessage),
    /// A new round began: drop protocol messages and snapshot chunks not
    /// yet multicast (they belong to the old install).
    Purge,
    /// Encode this capture of `state` and multicast it in chunks, or,
    /// if `suffix` is given and encodes smaller, those commands instead
    /// (every receiver holds a prefix of `state`; protocol version
    /// [`SUFFIX_VERSION`] on).
    SendSnapshot {
        state: StateId,
        snapshot: C,
        suffix: Option<Vec<SuffixEntry>>,
    },
    /// Hash this capture of the state at `at` off the actor
    /// ([`StateMachine::snapshot_digest`]) and multicast it as this
    /// member's `Digest` for the check open at `at` (rule 11), unless a new
    /// round began meanwhile (the check closed with it).
    Digest { at: StateId, snapshot: C },
    /// This member's command `id` finished.
    Reply {
        id: u64,
        result: Result<Executed<R>, ReplicaError>,
    },
    /// Evaluate these reads of this member against the state now (the
    /// point of the stream just handled, rule 12); their answers wait for
    /// [`Action::ReadDone`].
    Read { ids: Vec<u64> },
    /// These reads, evaluated at `at`, may be answered (a durable
    /// replica: once `at` is synced, as a reply).
    ReadDone { ids: Vec<u64>, at: StateId },
    /// These reads fail with `error`; nothing was answered.
    ReadFailed { ids: Vec<u64>, error: ReplicaError },
    /// Tell subscribers.
    Event(ReplicaEvent),
    /// This replica cannot go on (a snapshot did not restore, a buffer
    /// overflowed): leave.
    Fatal(String),
    /// The group refused this process: it cannot speak the version the
    /// group speaks (rule 9). Leave, and fail what waits with
    /// [`ReplicaError::Incompatible`].
    Refused(Refusal),
    /// (Durable replicas only.) The state's id changed by this entry:
    /// append it to the log before any reply or acknowledgement that
    /// follows it.
    Persist(Entry),
    /// (Durable replicas only.) The state was replaced by a received
    /// snapshot (`bytes`, as [`StateMachine::encode`] made them) at
    /// `state`: it becomes the durable snapshot, and the log starts
    /// afresh after it.
    Rebase { state: StateId, bytes: Vec<u8> },
}

/// Something to redo, in order, after a received snapshot is restored.
#[derive(Debug, Clone)]
enum Replay {
    Apply(Member, CommandMsg),
    /// The view became primary with this epoch (and, if it founded the
    /// group, this genesis).
    Promote(PrimaryEpoch, Option<u64>),
}

#[derive(Debug)]
struct Incoming {
    from: Member,
    /// The state the snapshot captures.
    expect: StateId,
    next: u32,
    bytes: Vec<u8>,
    replay: Vec<Replay>,
}

#[derive(Debug)]
struct Installed {
    primary: bool,
    /// The last primary component as of the install (re-evaluation uses it).
    latest: Option<PrimaryEpoch>,
    lineage: BTreeSet<Member>,
    /// Epoch of the winning state at install (after any promotion).
    winner_epoch: PrimaryEpoch,
    sender: Option<Member>,
    receivers: BTreeSet<Member>,
    /// The state id the install chose to transfer.
    snapshot_id: StateId,
    /// The sender's last chunk was delivered (or nobody needs one).
    transfer_done: bool,
    /// Whether a member of the view may found a group.
    founders: bool,
    /// Whether a member of the install knew of a primary component, and
    /// the greatest epoch claimed or minted there: what a late
    /// announcement is checked against (rule 6).
    history: bool,
    ceiling: PrimaryEpoch,
    /// Set while this member waits for the snapshot.
    incoming: Option<Incoming>,
}

#[derive(Debug)]
enum Phase {
    Unjoined,
    Installing {
        infos: BTreeMap<Member, Info>,
        /// Announcements of this round, decided at its end (rule 6).
        announcing: Vec<(Member, Info)>,
        held: Vec<(Member, CommandMsg)>,
    },
    Installed(Installed),
}

/// A divergence check opened by a delivered `Check` (rule 11).
#[derive(Debug)]
struct OpenCheck {
    /// The state every member held where the check was delivered.
    at: StateId,
    /// The participants whose digest it waits for.
    waiting: BTreeSet<Member>,
    /// The digests in, by participant.
    digests: BTreeMap<Member, Option<StateDigest>>,
}

/// A process that does not know the announced members yet (rule 4).
#[derive(Debug)]
struct Learning {
    /// Whether this process knew a roster before the confchg (a merge).
    knew: bool,
    /// Whether the confchg was a merge: then every process of the view
    /// is a merger, on every process alike, whatever a roster info says.
    merge: bool,
    /// Every message delivered since the confchg, with its envelope's
    /// version, to replay.
    record: Vec<(Member, u8, ReplicaMessage)>,
    /// The processes whose info of this incarnation said they do not know
    /// the members either.
    unknowing: BTreeSet<Member>,
}

/// One replica's pure state.
pub(crate) struct ReplicaCore<S: StateMachine> {
    local: Member,
    codec: Codec,
    delivery: Delivery,
    max_snapshot: usize,
    max_held: usize,
    founder: bool,
    /// What this process announces itself as (rule 9).
    announcement: Announcement,
    /// The group's version as this member last reported it (rule 9).
    version: Option<u8>,
    roster: Roster,
    /// The effective view (announced members), sorted.
    view: Vec<Member>,
    /// The raw CPG view, sorted.
    raw: Vec<Member>,
    /// Tag of the raw view and the round within it (rule 1).
    view_tag: u64,
    round: u32,
    /// The processes of the raw view at a merge (a confchg with `NodeUp`
    /// joiners), until an install compares their state with the others':
    /// the two sides' histories differ, so their claims are not checked
    /// (rule 6).
    merged: BTreeSet<Member>,
    /// The members of the last install this process computed.
    last_install: BTreeSet<Member>,
    learning: Option<Learning>,
    /// A roster of this view was delivered (a `NoRoster` is void then).
    taught: bool,
    /// The processes whose info of this incarnation of the view was
    /// delivered (a `NoRoster` waits for every process that marked, rule 4).
    answered: BTreeSet<Member>,
    /// The tag of the last info this member multicast (or will, once its
    /// mark is back).
    sent_info: Option<(u64, u32)>,
    /// Marks (rule 1, [`crate::incarnation`]); the info held until this
    /// process's mark is back carries the roster as of the confchg.
    incarnation: Incarnation<Option<Vec<(Member, Announcement)>>>,
    /// This process's announcement was just refused (rule 6).
    reannounce: bool,
    replaying: bool,
    joined: bool,
    sm: S,
    id: StateId,
    known: Option<PrimaryRecord>,
    facts: QuorumFacts,
    local_fact: Option<QuorumState>,
    sent_fact: Option<QuorumState>,
    phase: Phase,
    ready: bool,
    refused: RefusedCounts,
    // Safe delivery.
    holders: BTreeSet<Member>,
    acks: BTreeMap<Member, u64>,
    /// This member's acknowledgements asked for and not yet delivered
    /// back, at most [`ACKS_IN_FLIGHT`].
    acks_in_flight: u32,
    /// The primary epoch and founding of the state the last
    /// acknowledgement was asked for: one sent later may say every command
    /// applied since, as long as they are the same ([`Self::raise_ack`]).
    ack_basis: Option<(PrimaryEpoch, u64)>,
    acked: u64,
    /// Acknowledgements not sent because they would have released nothing
    /// (rule 13).
    acks_skipped: u64,
    /// This member's applied commands whose reply waits for stability, by
    /// position (`applied` after the command).
    unstable: BTreeMap<u64, (u64, Executed<S::Response>)>,
    /// This member's linearizable reads (rule 12).
    reads: Reads,
    /// The state each member announced in the latest round installed, and
    /// that round (for inspection only: no decision reads it).
    announced: (u32, BTreeMap<Member, StateId>),
    /// Whether every change of the state's id is reported as an action
    /// ([`Action::Persist`], [`Action::Rebase`]): a durable replica.
    journal: bool,
    /// Members gone for good — the replica whose data directory this one
    /// took over, and any an operator wrote off — each with the latest
    /// epoch it was part of: none counts in the membership of a primary
    /// component up to that epoch (like a member seen leaving with
    /// `ProcDown`). A later component's members are processes alive
    /// since, which may carry the same identity (a pid used again).
    gone: BTreeMap<Member, PrimaryEpoch>,
    /// Every sender holds the group key: an announcement's claims are a
    /// replica's own knowledge, never forged (rule 6 trusts them).
    keyed: bool,
    // Divergence checks (rule 11).
    /// Commands between two periodic checks (0: none).
    digest_every: u64,
    check: Option<OpenCheck>,
    /// `applied` where the last check opened (what the periodic request
    /// counts from; local, never part of a decision).
    last_check: u64,
    /// The state at which a check last opened in this install round: a
    /// check at the same state again is ignored (the same on every member:
    /// reset when a round begins).
    checked_at: Option<StateId>,
    /// This member's `Check` is on its way.
    check_in_flight: bool,
    /// Numbers this member's checks.
    checks_sent: u64,
    /// A check found this replica's state diverged: it announces no state
    /// until it restored the one it was sent.
    diverged: bool,
    checks: Checks,
    /// What this replica applied last, for transfers of only what the
    /// receivers lack.
    recent: Recent,
    /// The replica whose data directory this one took over, if another
    /// process: announced in every info (rule 7).
    predecessor: Option<Member>,
}

impl<S: StateMachine> ReplicaCore<S> {
    /// A replica that has not seen its first confchg, holding `S::default()`.
    /// `max_held` caps each buffer kept while waiting (rule 8).
    pub(crate) fn new(
        local: Member,
        codec: Codec,
        delivery: Delivery,
        max_snapshot: usize,
        max_held: usize,
        founder: bool,
    ) -> Self {
        ReplicaCore {
            local,
            codec,
            delivery,
            max_snapshot,
            max_held: max_held.max(1),
            founder,
            announcement: Announcement::this_build(),
            version: None,
            roster: Roster::new(),
            view: Vec::new(),
            raw: Vec::new(),
            view_tag: 0,
            round: 0,
            merged: BTreeSet::new(),
            last_install: BTreeSet::new(),
            learning: None,
            taught: false,
            answered: BTreeSet::new(),
            sent_info: None,
            incarnation: Incarnation::default(),
            reannounce: false,
            replaying: false,
            joined: false,
            sm: S::default(),
            id: StateId::default(),
            known: None,
            facts: QuorumFacts::default(),
            local_fact: None,
            sent_fact: None,
            phase: Phase::Unjoined,
            ready: false,
            refused: RefusedCounts::default(),
            holders: BTreeSet::new(),
            acks: BTreeMap::new(),
            acks_in_flight: 0,
            ack_basis: None,
            acked: 0,
            acks_skipped: 0,
            unstable: BTreeMap::new(),
            reads: Reads::default(),
            announced: (0, BTreeMap::new()),
            journal: false,
            gone: BTreeMap::new(),
            keyed: false,
            digest_every: 0,
            check: None,
            last_check: 0,
            checked_at: None,
            check_in_flight: false,
            checks_sent: 0,
            diverged: false,
            checks: Checks::default(),
            recent: Recent::new(super::ReplicaConfig::default().suffix_bytes),
            predecessor: None,
        }
    }

    /// This replica took over the data directory `predecessor` wrote (it is
    /// gone for sure): every info says so (rule 7).
    pub(crate) fn succeed(&mut self, predecessor: Member) {
        self.predecessor = (predecessor != self.local).then_some(predecessor);
    }

    /// The replica `config` describes (its versions, role, and whether
    /// the group is keyed), holding `S::default()`.
    pub(crate) fn from_config(local: Member, codec: Codec, config: &super::ReplicaConfig) -> Self {
        let mut core = ReplicaCore::new(
            local,
            codec,
            config.delivery,
            config.max_snapshot_size,
            config.max_held,
            config.found_group,
        )
        .with_versions(config.protocol_versions)
        .with_role(config.role);
        core.keyed = config.key.is_some();
        core.digest_every = config.digest_every;
        core.recent = Recent::new(config.suffix_bytes);
        core
    }

    /// The same replica, reporting every change of its state's id for a
    /// data directory to keep.
    pub(crate) fn journal_changes(&mut self) {
        self.journal = true;
    }

    /// Takes the state a data directory held (before the first confchg):
    /// the snapshot, then every entry after it applied again, each checked
    /// against the id it recorded, and the last primary component this
    /// replica knew. Fails, changing nothing, if an entry does not replay
    /// to the id it recorded (the state machine is not the one that wrote
    /// the log, or is not deterministic) or the state claims an epoch its
    /// knowledge does not hold.
    pub(crate) fn recover(
        &mut self,
        snapshot: Option<(StateId, S)>,
        entries: Vec<Entry>,
        known: Option<PrimaryRecord>,
        gone: impl IntoIterator<Item = (Member, PrimaryEpoch)>,
    ) -> Result<(), String> {
        let (mut id, mut sm) = match snapshot {
            Some((id, sm)) => (id, sm),
            None => (StateId::default(), S::default()),
        };
        let mut recent = Recent::new(self.recent.cap());
        recent.reset(id);
        for entry in entries {
            match entry {
                Entry::Applied {
                    from,
                    id: cmd,
                    payload,
                    after,
                } => {
                    let command = super::observer::decode_command::<S>(&self.codec, &payload)
                        .map_err(|e| format!("entry {} does not decode: {e}", after.applied))?;
                    sm.apply(command);
                    let next = StateId {
                        epoch: after.epoch,
                        genesis: id.genesis,
                        applied: id.applied + 1,
                        chain: chain(id.chain, from, cmd),
                    };
                    if next != after {
                        return Err(format!(
                            "entry {} replays to another state than it recorded",
                            after.applied
                        ));
                    }
                    id = next;
                    recent.push(SuffixEntry {
                        from,
                        id: cmd,
                        payload,
                        after,
                    });
                }
                Entry::Moved { after } => {
                    if after.applied != id.applied || after.chain != id.chain {
                        return Err(format!("a move at {} changes the history", after.applied));
                    }
                    id = after;
                }
            }
        }
        let consistent = match &known {
            Some(k) => id.epoch <= k.epoch,
            None => id.epoch == PrimaryEpoch::default(),
        };
        if !consistent {
            return Err(format!(
                "the state's epoch {} is above the last primary component recorded",
                id.epoch
            ));
        }
        self.id = id;
        self.sm = sm;
        self.recent = recent;
        // This process is never gone: with the identity of the replica it
        // follows (a pid used again), it counts as that replica, present.
        let local = self.local;
        self.gone = gone.into_iter().filter(|(m, _)| *m != local).collect();
        self.known = known.map(|k| self.without_gone(k));
        Ok(())
    }

    /// A record of a primary component without the members gone for good.
    fn without_gone(&self, mut record: PrimaryRecord) -> PrimaryRecord {
        let epoch = record.epoch;
        record
            .members
            .retain(|m| self.gone.get(m).is_none_or(|until| epoch > *until));
        record
    }

    /// This process.
    pub(crate) fn local(&self) -> Member {
        self.local
    }

    /// The last primary component this replica knows of.
    pub(crate) fn known(&self) -> Option<&PrimaryRecord> {
        self.known.as_ref()
    }

    /// Reports a change of the state's id that no command made (a new
    /// epoch, a founding), for a durable replica.
    fn moved(&self, before: StateId, out: &mut Actions<S>) {
        if self.journal && self.id != before {
            out.push(Action::Persist(Entry::Moved { after: self.id }));
        }
    }

    /// The same replica, speaking `versions` (rule 9).
    pub(crate) fn with_versions(mut self, versions: Versions) -> Self {
        self.announcement = self.announcement.with_versions(versions);
        self
    }

    /// The same replica, announcing itself in `role` (rule 10).
    pub(crate) fn with_role(mut self, role: Role) -> Self {
        self.announcement = self.announcement.with_role(role);
        self
    }

    /// Whether this replica is an observer (rule 10).
    fn observing(&self) -> bool {
        self.announcement.role == Role::Observer
    }

    /// Whether the member `m` is an observer (rule 10).
    fn is_observer(&self, m: Member) -> bool {
        self.roster.is_observer(m)
    }

    /// The participants of the effective view, sorted: the members that
    /// count for decisions (rule 10).
    fn participants(&self) -> Vec<Member> {
        self.view
            .iter()
            .filter(|m| !self.is_observer(**m))
            .copied()
            .collect()
    }

    /// The version the group speaks, as this process knows it (`None`
    /// before it knows a member).
    pub(crate) fn group_version(&self) -> Option<u8> {
        self.roster.group_version()
    }

    /// The version this process writes its messages at from this point of
    /// the stream (rule 9): the group's, once it knows it and speaks it.
    /// `None`: its own highest (what it says before it knows the group's is
    /// read at any version).
    pub(crate) fn writes_at(&self) -> Option<u8> {
        self.group_version()
            .filter(|v| self.announcement.speaks(*v))
    }

    /// The local state (as of the last delivered event).
    pub(crate) fn state(&self) -> &S {
        &self.sm
    }

    /// The local state's id.
    pub(crate) fn state_id(&self) -> StateId {
        self.id
    }

    /// The effective view (announced members), sorted.
    pub(crate) fn view(&self) -> &[Member] {
        &self.view
    }

    /// The observers of the effective view, sorted (rule 10).
    pub(crate) fn observers(&self) -> Vec<Member> {
        self.view
            .iter()
            .filter(|m| self.is_observer(**m))
            .copied()
            .collect()
    }

    /// The event for a change of the effective view.
    fn view_changed(&self, joined: Vec<MemberChange>, left: Vec<MemberChange>) -> ReplicaEvent {
        ReplicaEvent::ViewChanged {
            members: self.view.clone(),
            observers: self.observers(),
            joined,
            left,
        }
    }

    /// Messages refused so far, by cause.
    pub(crate) fn refused(&self) -> RefusedCounts {
        self.refused
    }

    /// Whether this member holds the view's state (not waiting for a
    /// snapshot, not between a confchg and the install).
    pub(crate) fn is_holding(&self) -> bool {
        matches!(&self.phase, Phase::Installed(i) if i.incoming.is_none())
            && self.roster.is_member(self.local)
    }

    /// Whether the installed view is a primary component.
    pub(crate) fn is_primary(&self) -> bool {
        matches!(&self.phase, Phase::Installed(i) if i.primary)
    }

    /// Whether the view is installed (every member's info delivered).
    pub(crate) fn is_installed(&self) -> bool {
        matches!(self.phase, Phase::Installed(_))
    }

    /// The epoch of the primary component, while primary.
    pub(crate) fn primary_epoch(&self) -> Option<PrimaryEpoch> {
        match &self.phase {
            Phase::Installed(i) if i.primary => self.known.as_ref().map(|k| k.epoch),
            _ => None,
        }
    }

    /// Whether this member has held the state at least once.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// What this replica holds, at this point of the stream (see
    /// [`ReplicaInspection`] for the rules), with `metrics` read at the
    /// same moment.
    pub(crate) fn inspect(&self, group: &str, metrics: MetricsSnapshot) -> ReplicaInspection {
        let (round, announced) = &self.announced;
        let mut pending: Vec<Member> = self.roster.pending().collect();
        pending.sort();
        let members: Vec<ReplicaMemberInspection> = self
            .roster
            .announcements()
            .into_iter()
            .map(|(member, a)| ReplicaMemberInspection {
                member,
                role: a.role,
                versions: a.versions(),
                announced: announced.get(&member).copied(),
            })
            .collect();
        let mut by_state: BTreeMap<StateId, Vec<Member>> = BTreeMap::new();
        let mut empty = Vec::new();
        let mut unknown = false;
        for m in members.iter().filter(|m| m.role == Role::Participant) {
            match m.announced {
                // No history at all (genesis 0): a joiner, not a rival.
                Some(state) if state.genesis == 0 => empty.push(m.member),
                Some(state) => by_state.entry(state).or_default().push(m.member),
                None => unknown = true,
            }
        }
        let (sender, receivers) = match &self.phase {
            Phase::Installed(i) => (i.sender, i.receivers.iter().copied().collect()),
            _ => (None, Vec::new()),
        };
        ReplicaInspection {
            group: group.to_owned(),
            local: self.local,
            role: self.announcement.role,
            versions: self.announcement.versions(),
            group_version: self.group_version(),
            installed: self.is_installed(),
            holding: self.is_holding(),
            primary: self.is_primary(),
            epoch: self.primary_epoch(),
            state: self.id,
            agreement: Agreement {
                agree: !unknown && by_state.len() <= 1,
                round: *round,
                states: by_state
                    .into_iter()
                    .rev()
                    .map(|(state, members)| SharedState { state, members })
                    .collect(),
                empty,
                sender,
                receivers,
            },
            members,
            pending,
            checks: self.checks.clone(),
            refused: self.refused,
            metrics,
        }
    }

    /// A configuration change, at its position in the stream.
    pub(crate) fn handle_confchg(
        &mut self,
        members: &[Member],
        joined: &[MemberChange],
        left: &[MemberChange],
    ) -> Actions<S> {
        let mut out = Vec::new();
        // A learner at a merge still knows its side's members.
        let knew = self.joined && self.learning.as_ref().is_none_or(|l| l.knew);
        if let Some(change) = self.roster.handle_confchg(members, joined, left) {
            self.view = change.members;
            out.push(Action::Event(self.view_changed(change.joined, change.left)));
        }
        if !self.roster.in_view(self.local) {
            // Not joined yet, or this is our own leave: no view to install.
            return out;
        }
        let mut raw = members.to_vec();
        raw.sort();
        raw.dedup();
        let first = !self.joined;
        self.joined = true;
        // Members that left on purpose or whose process died are gone for
        // good; `NodeDown` may be a partition, so those stay counted.
        if let Some(known) = &mut self.known {
            known.members.retain(|m| {
                !left
                    .iter()
                    .any(|c| c.member == *m && matches!(c.reason, Reason::Leave | Reason::ProcDown))
            });
        }
        let roster = &self.roster;
        self.facts.retain(|m, _| roster.is_member(*m));
        let merge = joined
            .iter()
            .any(|c| c.reason == Reason::NodeUp && raw.contains(&c.member));
        self.merged.retain(|m| raw.contains(m));
        if merge {
            self.merged.extend(raw.iter().copied());
        }
        let everyone_new = raw.iter().all(|m| joined.iter().any(|c| c.member == *m));
        self.learning = if first {
            (!everyone_new).then(|| Learning {
                knew: false,
                merge,
                record: Vec::new(),
                unknowing: BTreeSet::new(),
            })
        } else if let Some(learning) = self.learning.take() {
            // Still learning: what was recorded belongs to the old view.
            Some(Learning {
                knew: learning.knew,
                merge,
                record: Vec::new(),
                unknowing: BTreeSet::new(),
            })
        } else if merge {
            Some(Learning {
                knew: true,
                merge,
                record: Vec::new(),
                unknowing: BTreeSet::new(),
            })
        } else {
            None
        };
        self.view_tag = view_tag(&raw);
        self.taught = false;
        self.answered.clear();
        self.raw = raw;
        self.round = 0;
        self.begin_round(&mut out);
        let mark = self.incarnation.confchg();
        out.push(Action::Mcast(ReplicaMessage::Mark(mark)));
        let roster = knew.then(|| self.roster.announcements());
        self.send_info(roster, &mut out);
        // The last member that held the version back may have left.
        self.report_version(&mut out);
        out
    }

    /// Leaves the old phase (failing what waited on it) for a new round.
    fn begin_round(&mut self, out: &mut Actions<S>) {
        match std::mem::replace(
            &mut self.phase,
            Phase::Installing {
                infos: BTreeMap::new(),
                announcing: Vec::new(),
                held: Vec::new(),
            },
        ) {
            Phase::Installing { held, .. } => {
                // Never installed: whether another part of the old view
                // applied them is unknown.
                for (from, cmd) in held {
                    if from == self.local {
                        out.push(Action::Reply {
                            id: cmd.id,
                            result: Err(ReplicaError::Uncertain),
                        });
                    }
                }
            }
            Phase::Installed(installed) => {
                if let Some(incoming) = installed.incoming {
                    // The transfer is void: fail the commands that waited
                    // for it; the state stays the stale one until the next
                    // install designates a sender.
                    for step in incoming.replay {
                        if let Replay::Apply(from, cmd) = step {
                            if from == self.local {
                                out.push(Action::Reply {
                                    id: cmd.id,
                                    result: Err(ReplicaError::Uncertain),
                                });
                            }
                        }
                    }
                }
            }
            Phase::Unjoined => {}
        }
        self.holders.clear();
        self.acks.clear();
        // An ack still queued is purged below; one already sent comes back
        // before our info, so it cannot be mistaken for a later one.
        self.acks_in_flight = 0;
        // Rule 11: a view change closes the open check, undecided. A check
        // still queued is purged below; one already sent finds none open.
        if let Some(check) = self.check.take() {
            debug!(at = ?check.at, "divergence check closed by a view change");
        }
        self.checked_at = None;
        self.check_in_flight = false;
        if !self.replaying {
            out.push(Action::Purge);
            // A queued fact is dropped with the rest.
            self.sent_fact = None;
        }
    }

    fn send_info(&mut self, members: Option<Vec<(Member, Announcement)>>, out: &mut Actions<S>) {
        if self.replaying {
            return;
        }
        self.sent_info = Some((self.view_tag, self.round));
        self.sent_fact = self.local_fact.clone().filter(|_| !self.observing());
        // Held until the mark is back (rule 1).
        if let Some((mark, members)) = self.incarnation.answer(members) {
            self.push_info(mark, members, out);
        }
    }

    fn push_info(
        &mut self,
        mark: u64,
        members: Option<Vec<(Member, Announcement)>>,
        out: &mut Actions<S>,
    ) {
        // The fact in flight is the one this info carries. An observer
        // puts no fact into the stream and founds nothing (rule 10).
        let observing = self.observing();
        self.sent_fact = self.local_fact.clone().filter(|_| !observing);
        out.push(Action::Mcast(ReplicaMessage::Info(Info {
            announcement: self.announcement,
            fact: self.sent_fact.clone(),
            known: self.known.clone(),
            // Rule 11: a diverged replica holds no state the group had.
            state: if self.diverged {
                StateId::default()
            } else {
                self.id
            },
            founder: self.founder && !observing,
            view: self.view_tag,
            round: self.round,
            members,
            merged: self.merged.iter().copied().collect(),
            mark,
            succeeds: self.predecessor,
        })));
    }

    /// Whether `mark` is the latest mark `from` has had delivered since the
    /// confchg: only then does its info or `NoRoster` belong to this
    /// incarnation of the view (rule 1).
    fn marked(&self, from: Member, mark: u64) -> bool {
        self.incarnation.fresh(from, mark)
    }

    /// Whether every process whose mark of this incarnation was delivered
    /// has had its info delivered too (rule 4): until then a `NoRoster` is
    /// void, since that info may carry the roster.
    fn marks_answered(&self) -> bool {
        self.incarnation
            .marked()
            .all(|m| self.answered.contains(&m))
    }

    /// Whether a `NoRoster` of `view` with `mark` from `from`, delivered
    /// now, makes every process take the empty roster (rule 4).
    fn no_roster_counts(&self, from: Member, view: u64, mark: u64) -> bool {
        view == self.view_tag && self.marked(from, mark) && !self.taught && self.marks_answered()
    }

    /// The learning timer ran out (rule 4): while this process still
    /// knows no member, it asks the stream to decide that none exists
    /// (unless a process that marked has yet to answer: its info may
    /// teach the roster, and would void the `NoRoster` anyway).
    pub(crate) fn handle_tick(&mut self) -> Actions<S> {
        if self.learning.is_some()
            && !self.taught
            && self.incarnation.is_back()
            && self.marks_answered()
        {
            return vec![Action::Mcast(ReplicaMessage::NoRoster {
                view: self.view_tag,
                mark: self.incarnation.own(),
            })];
        }
        Vec::new()
    }

    /// This node's quorum service reported (a local fact: it is multicast,
    /// and used when it comes back in order).
    pub(crate) fn handle_quorum(&mut self, q: QuorumState) -> Actions<S> {
        self.local_fact = Some(q);
        let mut out = Vec::new();
        self.maybe_send_fact(&mut out);
        out
    }

    /// Multicasts this process's quorum fact when the stream does not carry
    /// it yet: when the fact the members counted for it (from its info or
    /// its last `Fact`) differs and none is in flight. Only a member's fact
    /// counts (rule 5): a pending process's info carries its fact, and a
    /// learner waits until it knows whether it is a member. A fact refused
    /// because it came while its sender was pending is sent again once the
    /// sender is admitted: a real daemon reports a regained quorum after
    /// the merge's confchg, and this is how the group learns it.
    fn maybe_send_fact(&mut self, out: &mut Actions<S>) {
        if self.replaying
            || !self.joined
            || self.learning.is_some()
            || !self.roster.is_member(self.local)
            || self.observing()
        {
            return;
        }
        let Some(q) = self.local_fact.clone() else {
            return;
        };
        if self.facts.get(&self.local) == Some(&q) || self.sent_fact.as_ref() == Some(&q) {
            return;
        }
        self.sent_fact = Some(q.clone());
        out.push(Action::Mcast(ReplicaMessage::Fact(q)));
    }

    /// This process's own info or fact came back: the fact it carried is
    /// no longer in flight (counted, or refused).
    fn own_fact_delivered(&mut self, from: Member, fact: Option<&QuorumState>) {
        if from == self.local && self.sent_fact.as_ref() == fact {
            self.sent_fact = None;
        }
    }

    /// A decoded message from `from`, at its position in the stream, in an
    /// envelope of protocol version `version`.
    pub(crate) fn handle_message(
        &mut self,
        from: Member,
        version: u8,
        msg: ReplicaMessage,
    ) -> Actions<S> {
        let mut out = Vec::new();
        if !self.joined {
            return out;
        }
        self.take_message(from, version, msg, &mut out);
        // An admission may have set the version (the first member's), or
        // this process learned the members.
        self.report_version(&mut out);
        self.serve_parked(&mut out);
        out
    }

    fn take_message(
        &mut self,
        from: Member,
        version: u8,
        msg: ReplicaMessage,
        out: &mut Actions<S>,
    ) {
        if let ReplicaMessage::Mark(mark) = msg {
            if let Some((mark, members)) = self.incarnation.delivered(self.local, from, mark) {
                self.push_info(mark, members, out);
            }
            if self.learning.is_some() {
                // Replayed with the rest, so that each info is judged
                // against the marks delivered before it.
                self.learn(from, version, msg, false, out);
            }
            return;
        }
        if let ReplicaMessage::Info(info) = &msg {
            if info.view == self.view_tag && self.marked(from, info.mark) {
                self.answered.insert(from);
                if info.members.is_some() {
                    self.taught = true;
                }
            }
        }
        if let ReplicaMessage::NoRoster { view, mark } = msg {
            if self.no_roster_counts(from, view, mark) {
                // Nobody who knows the members answered before this point,
                // and every process that marked answered: every process
                // decides here that none is announced.
                self.taught = true;
                if self.learning.is_some() {
                    self.learn(from, version, msg, true, out);
                } else {
                    self.forget_roster(out);
                    self.maybe_send_fact(out);
                }
                return;
            }
        }
        if self.learning.is_some() {
            self.learn(from, version, msg, false, out);
            return;
        }
        self.handle_known(from, version, msg, out);
    }

    /// Reports a move of the group's version (rule 9) on a member that
    /// knows the members.
    fn report_version(&mut self, out: &mut Actions<S>) {
        if self.learning.is_some() || !self.roster.is_member(self.local) {
            return;
        }
        let Some(now) = self.roster.group_version() else {
            return;
        };
        if self.version == Some(now) {
            return;
        }
        let from = self.version.replace(now);
        debug!(local = %self.local, ?from, to = now, "the group's protocol version moved");
        out.push(Action::Event(ReplicaEvent::VersionChanged {
            from,
            to: now,
        }));
    }

    /// A `NoRoster` reached a process that knew the members: no info of
    /// theirs came before it, so, like the learners, it starts the view
    /// with nobody announced (their infos will admit them).
    fn forget_roster(&mut self, out: &mut Actions<S>) {
        self.roster.adopt(Vec::<(Member, Announcement)>::new());
        if !self.view.is_empty() {
            self.view.clear();
            out.push(Action::Event(self.view_changed(Vec::new(), Vec::new())));
        }
        self.facts.clear();
        self.maybe_complete(out);
    }

    /// Rule 4: record, and learn the roster from the first info that can
    /// teach it (or from a `NoRoster` that counts: `no_roster`).
    fn learn(
        &mut self,
        from: Member,
        version: u8,
        msg: ReplicaMessage,
        no_roster: bool,
        out: &mut Actions<S>,
    ) {
        let counts = match &msg {
            ReplicaMessage::Info(info) => {
                info.view == self.view_tag && self.marked(from, info.mark)
            }
            ReplicaMessage::NoRoster { .. } => no_roster,
            _ => false,
        };
        let Some(learning) = &mut self.learning else {
            return;
        };
        if learning.record.len() >= self.max_held {
            self.give_up(
                format!(
                    "more than {} messages while learning the members",
                    self.max_held
                ),
                out,
            );
            return;
        }
        let roster = match &msg {
            ReplicaMessage::Info(info) if counts => info.members.clone(),
            ReplicaMessage::NoRoster { .. } if counts => Some(Vec::new()),
            _ => None,
        };
        if counts && matches!(&msg, ReplicaMessage::Info(i) if i.members.is_none()) {
            learning.unknowing.insert(from);
        }
        learning.record.push((from, version, msg));
        // Every process of the view said it does not know the members
        // either: nobody in it is announced (rule 4).
        let roster = roster.or_else(|| {
            let unknowing = &learning.unknowing;
            self.raw
                .iter()
                .all(|m| unknowing.contains(m))
                .then(Vec::new)
        });
        let Some(roster) = roster else {
            return;
        };
        let Some(learning) = self.learning.take() else {
            return;
        };
        // Who is in a merge comes with the roster: every process that knows
        // the roster knows the same (it computed the same installs). At a
        // merge everyone already computed it from the confchg (the whole
        // view).
        if let Some((_, _, ReplicaMessage::Info(info))) = learning.record.last() {
            if !learning.knew && !learning.merge {
                let raw = &self.raw;
                self.merged = info
                    .merged
                    .iter()
                    .filter(|m| raw.contains(m))
                    .copied()
                    .collect();
            }
        }
        debug!(local = %self.local, %from, ?roster, "learned the members");
        let before = self.view.clone();
        self.roster.adopt(roster);
        self.view = self.roster.members();
        if self.view != before {
            out.push(Action::Event(self.view_changed(Vec::new(), Vec::new())));
        }
        let roster = &self.roster;
        self.facts.retain(|m, _| roster.is_member(*m));
        self.replaying = true;
        // Rebuilt as the record is replayed: each info is judged against
        // the marks delivered before it, as it was live.
        self.incarnation.forget_marks();
        for (from, version, msg) in learning.record {
            self.handle_known(from, version, msg, out);
            if self.learning.is_some() {
                // Gave up meanwhile.
                break;
            }
        }
        self.replaying = false;
        self.maybe_send_fact(out);
        self.maybe_reannounce(out);
        // The rounds replayed could not be answered while they happened.
        if let Phase::Installing { infos, .. } = &self.phase {
            if self.roster.is_member(self.local)
                && !infos.contains_key(&self.local)
                && self.sent_info != Some((self.view_tag, self.round))
            {
                self.send_info(Some(self.roster.announcements()), out);
            }
        }
    }

    fn give_up(&mut self, why: String, out: &mut Actions<S>) {
        warn!(local = %self.local, "replica gives up: {why}");
        out.push(Action::Event(ReplicaEvent::GaveUp { why: why.clone() }));
        out.push(Action::Fatal(why));
    }

    fn handle_known(
        &mut self,
        from: Member,
        version: u8,
        msg: ReplicaMessage,
        out: &mut Actions<S>,
    ) {
        match msg {
            // Shared layout: counts in an envelope of any version.
            ReplicaMessage::Info(info) => {
                self.own_fact_delivered(from, info.fact.as_ref());
                self.handle_info(from, info, out);
            }
            ReplicaMessage::Fact(q) => {
                self.own_fact_delivered(from, Some(&q));
                if !self.roster.is_member(from) {
                    self.refused.not_member += 1;
                    debug!(%from, "fact from a process that is not a member; refused");
                } else if self.is_observer(from) {
                    // Rule 10: an observer puts no fact into the stream.
                    self.refused.observer += 1;
                    warn!(%from, "quorum fact from an observer; refused");
                } else if self.refuse_version(from, version) {
                    // Sent again at the group's version (`maybe_send_fact`).
                } else {
                    self.facts.record(from, q);
                    if matches!(self.phase, Phase::Installed(_)) {
                        self.reevaluate(out);
                    }
                }
            }
            ReplicaMessage::Command(cmd) => {
                let refusal = if !self.roster.is_member(from) {
                    // Refused alike everywhere: applied by none.
                    self.refused.not_member += 1;
                    debug!(%from, id = cmd.id, "command from a process that is not a member; refused");
                    Some(ReplicaError::NotMember)
                } else if self.is_observer(from) {
                    // Rule 10: its own replica sends none, so this one is
                    // forged; refused alike everywhere.
                    self.refused.observer += 1;
                    warn!(%from, id = cmd.id, "command from an observer; refused");
                    Some(ReplicaError::Observer)
                } else if self.refuse_version(from, version) {
                    Some(ReplicaError::StaleVersion { version })
                } else {
                    None
                };
                match refusal {
                    Some(error) if from == self.local => out.push(Action::Reply {
                        id: cmd.id,
                        result: Err(error),
                    }),
                    Some(_) => {}
                    None => self.handle_command(from, cmd, out),
                }
            }
            ReplicaMessage::Ack(upto) => {
                if from == self.local {
                    self.acks_in_flight = self.acks_in_flight.saturating_sub(1);
                }
                if !self.roster.is_member(from) {
                    self.refused.not_member += 1;
                } else if self.is_observer(from) {
                    // Rule 10: safe delivery waits for participants only.
                    self.refused.observer += 1;
                    warn!(%from, upto, "ack from an observer; refused");
                } else if self.refuse_version(from, version) {
                    // A later ack covers it.
                } else if matches!(self.phase, Phase::Installed(_)) && self.holders.contains(&from)
                {
                    let acked = self.acks.entry(from).or_default();
                    *acked = (*acked).max(upto);
                    self.release_stable(out);
                }
            }
            ReplicaMessage::Chunk(chunk) => {
                // Only a member can be the chosen sender (rule 5 refuses
                // the rest as chunks).
                if !self.roster.is_member(from) || !self.refuse_version(from, version) {
                    self.handle_chunk(from, version, chunk, out);
                }
            }
            ReplicaMessage::Check(number) => {
                if from == self.local {
                    self.check_in_flight = false;
                }
                if !self.roster.is_member(from) {
                    self.refused.not_member += 1;
                    debug!(%from, number, "divergence check from a process that is not a member; refused");
                } else if self.is_observer(from) {
                    self.refused.observer += 1;
                    warn!(%from, number, "divergence check from an observer; refused");
                } else if !self.refuse_version(from, version) {
                    self.open_check(from, number, version, out);
                }
            }
            ReplicaMessage::Digest(digest) => {
                if !self.roster.is_member(from) {
                    self.refused.not_member += 1;
                    debug!(%from, "state digest from a process that is not a member; refused");
                } else if self.is_observer(from) {
                    self.refused.observer += 1;
                    warn!(%from, "state digest from an observer; refused");
                } else if !self.refuse_version(from, version) {
                    self.take_digest(from, digest, version, out);
                }
            }
            // Rule 12: only its sender acts on it.
            ReplicaMessage::Barrier(number) => {
                if from == self.local {
                    let ids = self.reads.back(number);
                    self.answer_reads(ids, out);
                }
            }
            // Void once a roster of the view was delivered, or while a
            // process that marked has yet to answer.
            ReplicaMessage::NoRoster { .. } => {}
            // Live, `handle_message` takes marks.
            ReplicaMessage::Mark(mark) => {
                if self.replaying {
                    self.incarnation.replayed(from, mark);
                }
            }
        }
        self.maybe_send_fact(out);
        self.maybe_ack(out);
        self.maybe_check(out);
    }

    /// Rule 9: a member's message that is not of a shared layout counts
    /// only in an envelope of a version every member speaks. Counts and
    /// logs a refusal; returns whether it refused.
    fn refuse_version(&mut self, from: Member, version: u8) -> bool {
        if self.roster.counts_version(version) {
            return false;
        }
        self.refused.version += 1;
        warn!(%from, version, common = ?self.roster.common_versions(),
            "message at a protocol version some member does not speak; refused");
        true
    }

    fn handle_info(&mut self, from: Member, info: Info, out: &mut Actions<S>) {
        if !self.roster.in_view(from) {
            self.refused.not_member += 1;
            return;
        }
        if info.view != self.view_tag || !self.marked(from, info.mark) {
            // Of another view, or of an earlier incarnation of this one.
            self.refused.stale += 1;
            return;
        }
        if self.roster.is_member(from) {
            let Phase::Installing { infos, .. } = &self.phase else {
                // Once installed, a late info is a stale copy.
                return;
            };
            if info.round != self.round || infos.contains_key(&from) {
                self.refused.stale += 1;
                return;
            }
            // Its claims are judged at the install (rule 6).
            self.count_info(from, info, out);
            return;
        }
        // A pending process announces itself (rule 3). Nothing an observer
        // claims is read (rule 10): its claims are not judged.
        if !self.merged.contains(&from) && !observes(&info) && !consistent(&info) {
            self.refused.inconsistent += 1;
            warn!(%from, "announcement contradicts itself; refused");
            return;
        }
        match &mut self.phase {
            Phase::Installing { announcing, .. } => {
                // Decided when the round's members are all in (rules 6
                // and 9), as a learner that does not know the members yet
                // decides it once it does.
                if !announcing.iter().any(|(m, _)| *m == from) {
                    announcing.push((from, info));
                }
                self.maybe_complete(out);
            }
            Phase::Installed(installed) => {
                let (history, ceiling) = (installed.history, installed.ceiling);
                // What it speaks first (rule 9).
                if self.refuse_announcement(from, info.announcement, out) {
                    return;
                }
                if !self.admissible(from, &info, history, ceiling) {
                    self.maybe_reannounce(out);
                    return;
                }
                if !self.admit(from, info.announcement, out) {
                    return;
                }
                // A late announcement: a new round, where its info counts
                // and everyone else answers.
                self.round += 1;
                self.begin_round(out);
                if from != self.local && self.roster.is_member(self.local) {
                    self.send_info(Some(self.roster.announcements()), out);
                }
                self.count_info(from, info, out);
            }
            Phase::Unjoined => {}
        }
    }

    /// Rule 6 for an announcement: when the members it is compared with
    /// have a history, it may claim no epoch above `ceiling`, unless it is
    /// a merger or an observer (whose claims nobody reads, rule 10).
    /// Counts a refusal.
    fn admissible(
        &mut self,
        from: Member,
        info: &Info,
        history: bool,
        ceiling: PrimaryEpoch,
    ) -> bool {
        let claimed = claims(info);
        if history
            && !self.keyed
            && !self.merged.contains(&from)
            && !observes(info)
            && claimed > ceiling
        {
            self.refused.epoch += 1;
            if from == self.local {
                self.reannounce = true;
            }
            warn!(%from, %claimed, %ceiling, "announcement claims an epoch past the stream; refused");
            return false;
        }
        true
    }

    /// Rule 6: whether the participants' infos `counted` give a history to
    /// check an announcement's claims against. Before
    /// [`RECOVERY_VERSION`]: whenever one of them knows of a primary
    /// component. From it on: only if one of them was part of the last
    /// primary component it knows of (its record names it). A record
    /// naming none of its senders is not the stream's: every member came
    /// back from its disk (a replica there is never in its own record:
    /// its predecessor is gone) or joined after the last primary, so a
    /// claim of a later one is as good as theirs and nobody can refute it.
    fn checkable<'a>(
        roster: &Roster,
        counted: impl IntoIterator<Item = (&'a Member, &'a Info)>,
    ) -> bool {
        let recovery = roster
            .group_version()
            .is_some_and(|v| v >= RECOVERY_VERSION);
        counted.into_iter().any(|(m, i)| {
            i.known
                .as_ref()
                .is_some_and(|k| !recovery || k.members.contains(m))
        })
    }

    /// Rule 9 for an announcement, while the group speaks a version:
    /// refuses it if it does not speak that version. Returns whether it
    /// refused.
    fn refuse_announcement(&mut self, from: Member, a: Announcement, out: &mut Actions<S>) -> bool {
        match self.roster.group_version() {
            Some(group_version) if !a.speaks(group_version) => {
                self.refuse(
                    Refusal {
                        member: from,
                        versions: a.versions(),
                        group_version,
                    },
                    out,
                );
                true
            }
            _ => false,
        }
    }

    /// Admits `from` with its announcement `a` (rules 3 and 9). Returns
    /// whether it is a member now.
    fn admit(&mut self, from: Member, a: Announcement, out: &mut Actions<S>) -> bool {
        let change = match self.roster.handle_announce(from, a) {
            Admission::Admitted(change) => change,
            Admission::Refused(refusal) => {
                self.refuse(refusal, out);
                return false;
            }
            Admission::Nothing => return false,
        };
        self.view = change.members;
        out.push(Action::Event(self.view_changed(change.joined, change.left)));
        true
    }

    /// A process refused for its versions (rule 9): reported and counted
    /// by every process that knows the members; this process stops if it
    /// is the one.
    fn refuse(&mut self, refusal: Refusal, out: &mut Actions<S>) {
        self.refused.incompatible += 1;
        warn!(local = %self.local, member = %refusal.member, versions = %refusal.versions,
            group_version = refusal.group_version,
            "refused a process that cannot speak the group's protocol version");
        out.push(Action::Event(ReplicaEvent::MemberRefused {
            member: refusal.member,
            versions: refusal.versions,
            group_version: refusal.group_version,
        }));
        if refusal.member == self.local {
            out.push(Action::Refused(refusal));
        }
    }

    fn count_info(&mut self, from: Member, info: Info, out: &mut Actions<S>) {
        let Phase::Installing { infos, .. } = &mut self.phase else {
            return;
        };
        // An observer's fact counts for nothing (rule 10).
        if let (Some(f), false) = (&info.fact, self.roster.is_observer(from)) {
            self.facts.record(from, f.clone());
        }
        infos.insert(from, info);
        self.maybe_complete(out);
    }

    /// Rule 2: once every member's info is in (or, with no member, once
    /// someone announced itself), decide the announcements, then install.
    fn maybe_complete(&mut self, out: &mut Actions<S>) {
        let Phase::Installing {
            infos, announcing, ..
        } = &mut self.phase
        else {
            return;
        };
        let members_in = self.view.iter().all(|m| infos.contains_key(m));
        if !members_in || (self.view.is_empty() && announcing.is_empty()) {
            return;
        }
        let announcing = std::mem::take(announcing);
        // What the participants claim (rule 10: nothing an observer claims
        // is read).
        let roster = &self.roster;
        let counted = || {
            infos
                .iter()
                .filter(|(m, _)| !roster.is_observer(**m))
                .map(|(_, i)| i)
        };
        let history = Self::checkable(
            roster,
            infos.iter().filter(|(m, _)| !roster.is_observer(**m)),
        );
        let ceiling = counted().map(claims).max().unwrap_or_default();
        for (from, info) in announcing {
            // What it speaks first (rule 9): the first admitted of a group
            // with no member sets the version the others must speak.
            if !self.roster.in_view(from)
                || self.refuse_announcement(from, info.announcement, out)
                || !self.admissible(from, &info, history, ceiling)
                || !self.admit(from, info.announcement, out)
            {
                continue;
            }
            if let (Some(f), false) = (&info.fact, self.roster.is_observer(from)) {
                self.facts.record(from, f.clone());
            }
            if let Phase::Installing { infos, .. } = &mut self.phase {
                infos.insert(from, info);
            }
        }
        self.install(out);
        self.maybe_reannounce(out);
    }

    /// This process's announcement was refused for claiming a primary
    /// component the members never saw (rule 6). It learned that primary
    /// while it followed the stream outside the view, from members that
    /// are gone since (newcomers that never saw it founded or continued
    /// the group). Its claim is true but cannot be checked, and a refused
    /// process is never asked again: it would stay outside the view until
    /// the next confchg. If the state it holds is not above the members'
    /// last primary, it takes their knowledge, which its state does not
    /// contradict, and announces itself again; the members judge that
    /// info like any other. (It holds nothing the group lacks: the
    /// forgotten primary's state is not its own.)
    fn maybe_reannounce(&mut self, out: &mut Actions<S>) {
        if self.replaying {
            // Once the replay is over (`learn`).
            return;
        }
        if !std::mem::take(&mut self.reannounce) || self.roster.is_member(self.local) {
            return;
        }
        let Phase::Installed(installed) = &self.phase else {
            return;
        };
        let Some(latest) = installed.latest else {
            return;
        };
        if self.id.epoch > latest {
            warn!(local = %self.local, state = %self.id.epoch, %latest,
                "announcement refused: this process holds a state of a primary the members never saw");
            return;
        }
        let record = PrimaryRecord {
            epoch: latest,
            members: installed.lineage.iter().copied().collect(),
        };
        self.known = Some(self.without_gone(record));
        self.send_info(Some(self.roster.announcements()), out);
    }

    fn handle_command(&mut self, from: Member, cmd: CommandMsg, out: &mut Actions<S>) {
        let max_held = self.max_held;
        match &mut self.phase {
            Phase::Unjoined => {}
            Phase::Installing { held, .. } => {
                if held.len() >= max_held {
                    // Every member holds the same commands: every member
                    // refuses the same ones.
                    self.refused.overflow += 1;
                    if from == self.local {
                        out.push(Action::Reply {
                            id: cmd.id,
                            result: Err(ReplicaError::Overloaded),
                        });
                    }
                } else {
                    held.push((from, cmd));
                }
            }
            Phase::Installed(installed) => {
                if !installed.primary {
                    if from == self.local {
                        out.push(Action::Reply {
                            id: cmd.id,
                            result: Err(ReplicaError::NotPrimary),
                        });
                    }
                } else if let Some(incoming) = &mut installed.incoming {
                    if incoming.replay.len() >= max_held {
                        let why = format!(
                            "more than {max_held} commands to replay while waiting for the state"
                        );
                        self.give_up(why, out);
                        return;
                    }
                    incoming.replay.push(Replay::Apply(from, cmd));
                } else {
                    self.apply(from, cmd, out);
                }
            }
        }
    }

    /// The quorum rule (`crate::quorum`) over the view's facts: the
    /// participants' (an observer's are never recorded, rule 10).
    fn view_quorate(&self) -> bool {
        self.facts.quorate(&self.view)
    }

    fn highest_ring_seq(&self) -> u64 {
        self.facts.highest_ring_seq(&self.view)
    }

    /// The genesis of a group founded by the current view with `epoch`:
    /// every member of the view computes the same.
    /// Names a founding (the state id's `genesis`): its epoch and its
    /// founder. From version 3 on the founder is the lowest participant
    /// (observers found nothing, rule 10); version 2 named the lowest
    /// member, observers included, so two foundings in one ring (the same
    /// epoch) next to the same observer got the same genesis, and told two
    /// histories apart by their chain only. Which rule applies is the
    /// group's version, the same on every member.
    fn genesis_of(&self, epoch: PrimaryEpoch) -> u64 {
        let participant = self.group_version().is_some_and(|v| v >= DIGEST_VERSION);
        let founder = if participant {
            self.participants().first().copied()
        } else {
            self.view.first().copied()
        }
        .unwrap_or(self.local);
        chain(chain(0, founder, epoch.ring_seq), founder, epoch.term).max(1)
    }

    fn next_epoch(&self, base: Option<PrimaryEpoch>) -> PrimaryEpoch {
        let base = base.unwrap_or_default();
        PrimaryEpoch {
            ring_seq: base.ring_seq.max(self.highest_ring_seq()),
            term: base.term + 1,
        }
    }

    /// The rule for a primary component (see the module docs).
    fn eligible(
        &self,
        latest: Option<PrimaryEpoch>,
        lineage: &BTreeSet<Member>,
        winner: PrimaryEpoch,
        founders: bool,
    ) -> bool {
        match latest {
            None => founders,
            Some(latest) => {
                // The latest state must be here: going on from an older one
                // would silently drop what the last primary acknowledged.
                if winner < latest {
                    return false;
                }
                // Every member of the last primary is gone for sure: nobody
                // can be primary elsewhere, and its state is here.
                if lineage.is_empty() {
                    return true;
                }
                // Observers never count towards it (rule 10), even if a
                // forged record names one.
                let present = self
                    .participants()
                    .iter()
                    .filter(|m| lineage.contains(m))
                    .count();
                2 * present > lineage.len()
            }
        }
    }

    fn install(&mut self, out: &mut Actions<S>) {
        let Phase::Installing {
            mut infos, held, ..
        } = std::mem::replace(&mut self.phase, Phase::Unjoined)
        else {
            return;
        };
        // The members of the view are known from here on.
        self.taught = true;
        self.announced = (
            self.round,
            infos.iter().map(|(m, i)| (*m, i.state)).collect(),
        );
        // Rule 10: of an observer's info only its state is read, and only
        // to tell whether it already holds the winner's.
        let roster = &self.roster;
        let observed: BTreeMap<Member, StateId> = infos
            .iter()
            .filter(|(m, _)| roster.is_observer(**m))
            .map(|(m, i)| (*m, i.state))
            .collect();
        infos.retain(|m, _| !observed.contains_key(m));
        let discarded = self.discard_unconfirmed(&mut infos);
        let history = Self::checkable(&self.roster, infos.iter());
        let claimed = infos.values().map(claims).max().unwrap_or_default();
        // Its state was compared with the others': no longer a merger.
        let view = &self.view;
        self.merged.retain(|m| !view.contains(m));
        self.last_install = infos.keys().copied().collect();
        // The greatest state of a participant wins; ties (equal ids) are
        // the same state.
        let winner = infos.values().map(|i| i.state).max();
        let winners: BTreeSet<Member> = infos
            .iter()
            .filter(|(m, i)| Some(i.state) == winner && !discarded.contains(m))
            .map(|(m, _)| *m)
            .collect();
        // An observer that holds it keeps it; with no participant, nobody
        // can send one, and every observer keeps its own.
        let keepers: BTreeSet<Member> = observed
            .iter()
            .filter(|(_, state)| winner.is_none_or(|w| **state == w))
            .map(|(m, _)| *m)
            .collect();
        let winner = winner.unwrap_or_default();
        let receivers: BTreeSet<Member> = self
            .view
            .iter()
            .filter(|m| !winners.contains(m) && !keepers.contains(m))
            .copied()
            .collect();
        let latest = infos
            .values()
            .filter_map(|i| i.known.as_ref().map(|k| k.epoch))
            .max();
        // Rule 7: records of the latest epoch from members it names decide
        // the lineage; the others only if there is none of those.
        let named = infos.iter().any(|(m, i)| {
            i.known
                .as_ref()
                .is_some_and(|k| Some(k.epoch) == latest && k.members.contains(m))
        });
        let mut lineage: Option<BTreeSet<Member>> = None;
        for (sender, info) in infos.iter() {
            if let Some(k) = &info.known {
                if Some(k.epoch) == latest && (!named || k.members.contains(sender)) {
                    let set: BTreeSet<Member> = k.members.iter().copied().collect();
                    lineage = Some(match lineage {
                        None => set,
                        Some(l) => l.intersection(&set).copied().collect(),
                    });
                }
            }
        }
        let mut lineage = lineage.unwrap_or_default();
        // Rule 7: a member's predecessor on its node is back as it.
        if self.group_version().is_some_and(|v| v >= RECOVERY_VERSION) {
            let succeeded: BTreeSet<Member> = infos
                .iter()
                .filter_map(|(s, i)| i.succeeds.filter(|p| p.node == s.node && p != s))
                .collect();
            lineage.retain(|m| !succeeded.contains(m));
        }
        let founders = infos.values().any(|i| i.founder);
        let quorate = self.view_quorate();
        let primary = quorate && self.eligible(latest, &lineage, winner.epoch, founders);
        debug!(local = %self.local, round = self.round, ?latest, ?lineage, winner = ?winner,
            quorate, founders, primary, "install decided");
        let mut winner_epoch = winner.epoch;
        let mut genesis = winner.genesis;
        // A process outside the view computes the install and learns the
        // view's knowledge (it may be admitted later) unless it knows a
        // later primary, and keeps its state.
        let member = self.roster.is_member(self.local);
        let (latest, lineage) = if primary {
            let epoch = self.next_epoch(latest);
            if latest.is_none() {
                genesis = self.genesis_of(epoch);
            }
            winner_epoch = epoch;
            // Rule 10: observers are in no primary's membership.
            let participants = self.participants();
            self.learn_known(PrimaryRecord {
                epoch,
                members: participants.clone(),
            });
            (Some(epoch), participants.into_iter().collect())
        } else {
            if let Some(epoch) = latest {
                self.learn_known(PrimaryRecord {
                    epoch,
                    members: lineage.iter().copied().collect(),
                });
            }
            (latest, lineage)
        };
        let sender = if receivers.is_empty() {
            None
        } else {
            winners.iter().next().copied()
        };
        let snapshot_id = StateId {
            epoch: winner_epoch,
            genesis,
            ..winner
        };
        // A winner, or an observer that keeps its state.
        let am_winner = winners.contains(&self.local) || keepers.contains(&self.local);
        let mut incoming = None;
        if am_winner && self.diverged {
            // Rule 11: it announced no state, and won with it (nobody in
            // the view held one): what it holds is no state of the group's.
            self.diverged = false;
            self.sm = S::default();
            self.id = StateId::default();
            if self.journal {
                out.push(Action::Rebase {
                    state: self.id,
                    bytes: S::encode(self.sm.snapshot()),
                });
            }
        }
        if am_winner {
            let before = self.id;
            self.id.epoch = winner_epoch;
            self.id.genesis = genesis;
            self.moved(before, out);
            if sender == Some(self.local) {
                debug!(local = %self.local, to = ?receivers, "sending the state");
                out.push(Action::Event(ReplicaEvent::TransferStarted {
                    to: receivers.iter().copied().collect(),
                }));
                // What each receiver announced it holds: if every one holds
                // a prefix of this state, the commands it lacks may do.
                let suffix = if self.writes_at().is_some_and(|v| v >= SUFFIX_VERSION) {
                    let held = receivers.iter().map(|m| {
                        infos
                            .get(m)
                            .map(|i| i.state)
                            .or_else(|| observed.get(m).copied())
                            .unwrap_or_default()
                    });
                    self.recent.suffix_for(&self.id, held)
                } else {
                    None
                };
                out.push(Action::SendSnapshot {
                    state: self.id,
                    snapshot: self.sm.snapshot(),
                    suffix,
                });
            }
        } else if member {
            incoming = Some(Incoming {
                from: sender.unwrap_or(self.local),
                expect: snapshot_id,
                next: 0,
                bytes: Vec::new(),
                replay: Vec::new(),
            });
        }
        self.phase = Phase::Installed(Installed {
            primary,
            latest,
            lineage,
            winner_epoch,
            sender,
            snapshot_id,
            transfer_done: receivers.is_empty(),
            receivers: receivers.clone(),
            founders,
            history: history || primary,
            ceiling: claimed.max(winner_epoch),
            incoming,
        });
        self.holders = winners;
        self.acks.clear();
        self.acked = 0;
        self.ack_basis = None;
        // Replies waiting for stability survive only into a primary view
        // that keeps this member's state.
        let waiting = std::mem::take(&mut self.unstable);
        if am_winner && primary {
            self.unstable = waiting;
        } else {
            for (_, (id, _)) in waiting {
                out.push(Action::Reply {
                    id,
                    result: Err(ReplicaError::Uncertain),
                });
            }
            self.drop_evaluated_reads(out);
        }
        out.push(Action::Event(ReplicaEvent::Installed {
            primary,
            epoch: if primary { latest } else { None },
            sender,
            receivers: receivers.into_iter().collect(),
        }));
        for (from, cmd) in held {
            if !primary {
                if from == self.local {
                    out.push(Action::Reply {
                        id: cmd.id,
                        result: Err(ReplicaError::NotPrimary),
                    });
                }
            } else if let Phase::Installed(Installed {
                incoming: Some(incoming),
                ..
            }) = &mut self.phase
            {
                incoming.replay.push(Replay::Apply(from, cmd));
            } else {
                self.apply(from, cmd, out);
            }
        }
        if am_winner && !self.ready {
            self.ready = true;
            out.push(Action::Event(ReplicaEvent::Ready));
        }
    }

    /// The last primary an install (or a promotion) decided. A member
    /// takes it: its own info was counted, so it knows no later one. A
    /// process outside the view learns it too (it may be admitted later),
    /// but never for an older record than its own: it keeps the state its
    /// announcement claims (rule 3), and a `known` below that state's epoch
    /// would make its next info contradict itself (rule 6). A merger's
    /// claims go unchecked, so such an info could still win an install,
    /// leaving every member with a state above the last primary it knows,
    /// and refused as soon as nobody in the view was a merger any more.
    fn learn_known(&mut self, record: PrimaryRecord) {
        let newer_own = self
            .known
            .as_ref()
            .is_some_and(|own| own.epoch > record.epoch);
        if self.roster.is_member(self.local) || !newer_own {
            self.known = Some(self.without_gone(record));
        }
    }

    /// Rule 6 at the install: the members of the last install that
    /// answered this round (mergers aside) knew the same primary
    /// components, so one claiming more than every other is confirmed by
    /// nobody; it, and a member whose info contradicts itself, count as
    /// holding nothing: never a winner, they receive the winner's state.
    /// (Alone among them, a claim cannot be checked.)
    fn discard_unconfirmed(&mut self, infos: &mut BTreeMap<Member, Info>) -> BTreeSet<Member> {
        // Members of the last install that answered this round knew the
        // same primary components when they answered.
        let peers: BTreeMap<Member, PrimaryEpoch> = infos
            .iter()
            .filter(|(s, i)| {
                self.last_install.contains(s) && !self.merged.contains(s) && i.round == self.round
            })
            .map(|(s, i)| (*s, claims(i)))
            .collect();
        let unconfirmed: Vec<(Member, PrimaryEpoch, PrimaryEpoch)> = peers
            .iter()
            .filter_map(|(s, claimed)| {
                let confirmed = peers
                    .iter()
                    .filter(|(m, _)| *m != s)
                    .map(|(_, c)| *c)
                    .max()?;
                (*claimed > confirmed).then_some((*s, *claimed, confirmed))
            })
            .collect();
        let mut discarded = BTreeSet::new();
        for (s, claimed, confirmed) in unconfirmed {
            self.refused.epoch += 1;
            warn!(from = %s, %claimed, %confirmed, "an epoch no other member confirms; its state counts for nothing");
            discarded.insert(s);
        }
        for (s, info) in infos.iter() {
            if !self.merged.contains(s) && !consistent(info) {
                self.refused.inconsistent += 1;
                warn!(from = %s, "info contradicts itself; its state counts for nothing");
                discarded.insert(*s);
            }
        }
        for s in &discarded {
            if let Some(info) = infos.get_mut(s) {
                info.known = None;
                info.state = StateId::default();
                info.founder = false;
            }
        }
        discarded
    }

    /// A quorum fact changed the view's quorum: re-apply the primary rule.
    fn reevaluate(&mut self, out: &mut Actions<S>) {
        let quorate = self.view_quorate();
        let Phase::Installed(installed) = &self.phase else {
            return;
        };
        if installed.primary && !quorate {
            if let Phase::Installed(installed) = &mut self.phase {
                installed.primary = false;
            }
            for (_, (id, _)) in std::mem::take(&mut self.unstable) {
                out.push(Action::Reply {
                    id,
                    result: Err(ReplicaError::Uncertain),
                });
            }
            self.drop_evaluated_reads(out);
            out.push(Action::Event(ReplicaEvent::PrimaryChanged {
                primary: false,
                epoch: None,
            }));
        } else if !installed.primary
            && quorate
            && self.eligible(
                installed.latest,
                &installed.lineage,
                installed.winner_epoch,
                installed.founders,
            )
        {
            let epoch = self.next_epoch(installed.latest);
            let genesis = installed.latest.is_none().then(|| self.genesis_of(epoch));
            let member = self.roster.is_member(self.local);
            // Rule 10: observers are in no primary's membership.
            let participants = self.participants();
            self.learn_known(PrimaryRecord {
                epoch,
                members: participants.clone(),
            });
            let lineage: BTreeSet<Member> = participants.into_iter().collect();
            if let Phase::Installed(installed) = &mut self.phase {
                installed.primary = true;
                installed.history = true;
                installed.ceiling = installed.ceiling.max(epoch);
                installed.latest = Some(epoch);
                installed.lineage = lineage;
                installed.winner_epoch = epoch;
                match &mut installed.incoming {
                    Some(incoming) => incoming.replay.push(Replay::Promote(epoch, genesis)),
                    None if !member => {}
                    None => self.promote(epoch, genesis, out),
                }
            }
            out.push(Action::Event(ReplicaEvent::PrimaryChanged {
                primary: true,
                epoch: Some(epoch),
            }));
        }
    }

    /// Asks every participant for the digest of its state (rule 11): the
    /// `Check` to multicast, or why it cannot be sent.
    pub(crate) fn request_check(&mut self) -> Result<Actions<S>, ReplicaError> {
        if self.observing() {
            return Err(ReplicaError::Observer);
        }
        if !self.roster.is_member(self.local) {
            return Err(ReplicaError::NotMember);
        }
        match self.writes_at() {
            Some(version) if version >= DIGEST_VERSION => {}
            Some(version) => return Err(ReplicaError::ChecksUnsupported { version }),
            None => return Err(ReplicaError::NotMember),
        }
        self.checks_sent += 1;
        Ok(vec![Action::Mcast(ReplicaMessage::Check(self.checks_sent))])
    }

    /// Rule 12: this member's reads `ids` (numbered by the runtime, each
    /// once) wait for a barrier it multicasts now. Fails them all, sending
    /// nothing, before this replica is a member, while its group speaks a
    /// version before [`READ_VERSION`], or when more reads than
    /// `max_held` would wait (rule 8).
    pub(crate) fn request_read(&mut self, ids: Vec<u64>) -> Result<Actions<S>, ReplicaError> {
        if !self.roster.is_member(self.local) {
            return Err(ReplicaError::NotMember);
        }
        match self.writes_at() {
            Some(version) if version >= READ_VERSION => {}
            Some(version) => return Err(ReplicaError::ReadsUnsupported { version }),
            None => return Err(ReplicaError::NotMember),
        }
        if self.reads.waiting() + ids.len() > self.max_held {
            return Err(ReplicaError::Overloaded);
        }
        let number = self.reads.send(ids);
        Ok(vec![Action::Mcast(ReplicaMessage::Barrier(number))])
    }

    /// Rule 12: reads whose barrier came back are evaluated here if this
    /// replica holds the state of a primary view; wait for a view where it
    /// does while one is being installed or its state received; fail in a
    /// view that is not primary or once this replica is no member.
    fn answer_reads(&mut self, ids: Vec<u64>, out: &mut Actions<S>) {
        if ids.is_empty() {
            return;
        }
        match self.reads_standing() {
            ReadStanding::Fail(error) => return out.push(Action::ReadFailed { ids, error }),
            ReadStanding::Wait => return self.reads.park(ids),
            ReadStanding::Answer => {}
        }
        let at = self.id;
        out.push(Action::Read { ids: ids.clone() });
        if self.stable() >= at.applied {
            out.push(Action::ReadDone { ids, at });
        } else {
            self.reads.evaluated(at, ids);
        }
    }

    /// Rule 12: parked reads get a new barrier once this replica can
    /// answer (it holds the state of an installed primary view), and fail
    /// once it cannot (a view that is not primary).
    fn serve_parked(&mut self, out: &mut Actions<S>) {
        if !self.reads.any_parked() {
            return;
        }
        match self.reads_standing() {
            ReadStanding::Wait => {}
            ReadStanding::Fail(error) => out.push(Action::ReadFailed {
                ids: self.reads.unpark(),
                error,
            }),
            ReadStanding::Answer => {
                let ids = self.reads.unpark();
                let number = self.reads.send(ids);
                out.push(Action::Mcast(ReplicaMessage::Barrier(number)));
            }
        }
    }

    /// Rule 12: what a read whose barrier comes back now gets: answered
    /// if this member holds the state of an installed primary view, kept
    /// waiting while a view is being installed or the state received,
    /// failed in a view that is not primary or once this member is none.
    fn reads_standing(&self) -> ReadStanding {
        match &self.phase {
            _ if !self.roster.is_member(self.local) => ReadStanding::Fail(ReplicaError::NotMember),
            Phase::Unjoined => ReadStanding::Fail(ReplicaError::NotMember),
            Phase::Installed(i) if !i.primary => ReadStanding::Fail(ReplicaError::NotPrimary),
            Phase::Installed(i) if i.incoming.is_none() && !self.diverged => ReadStanding::Answer,
            Phase::Installing { .. } | Phase::Installed(_) => ReadStanding::Wait,
        }
    }

    /// Evaluated reads whose state did not survive a view change (rule
    /// 12): nothing was answered; the reader may read again.
    fn drop_evaluated_reads(&mut self, out: &mut Actions<S>) {
        let ids = self.reads.drop_evaluated();
        if !ids.is_empty() {
            out.push(Action::ReadFailed {
                ids,
                error: ReplicaError::Uncertain,
            });
        }
    }

    /// Rule 11: the lowest participant of an installed primary view asks
    /// for a check once `digest_every` commands were applied since the
    /// last one opened.
    fn maybe_check(&mut self, out: &mut Actions<S>) {
        let due = self.digest_every > 0
            && !self.replaying
            && !self.check_in_flight
            && self.check.is_none()
            && self.id.applied >= self.last_check.saturating_add(self.digest_every)
            && self.participants().first() == Some(&self.local)
            && self.quiet_primary();
        if !due {
            return;
        }
        if let Ok(actions) = self.request_check() {
            self.check_in_flight = true;
            out.extend(actions);
        }
    }

    /// Whether the view is installed and primary, and no transfer runs:
    /// every member holds the same state (rule 11).
    fn quiet_primary(&self) -> bool {
        matches!(&self.phase, Phase::Installed(i)
            if i.primary && i.transfer_done && i.incoming.is_none())
    }

    /// A `Check` from participant `from` was delivered (rule 11).
    fn open_check(&mut self, from: Member, number: u64, version: u8, out: &mut Actions<S>) {
        if !self.roster.is_member(self.local) {
            // Not admitted yet: an install including it closes any check.
            return;
        }
        if version < DIGEST_VERSION {
            self.refused.version += 1;
            warn!(%from, number, version, "divergence check in an envelope before its version; refused");
            return;
        }
        if !self.quiet_primary() || self.check.is_some() || self.checked_at == Some(self.id) {
            debug!(%from, number, "divergence check while another runs, with nothing applied since the last, or with no quiet primary view; ignored");
            return;
        }
        let at = self.id;
        self.last_check = at.applied;
        self.checked_at = Some(at);
        self.check = Some(OpenCheck {
            at,
            waiting: self.participants().into_iter().collect(),
            digests: BTreeMap::new(),
        });
        debug!(%from, number, ?at, "divergence check opened");
        if !self.observing() && !self.replaying {
            if S::DIGESTS_SNAPSHOTS {
                out.push(Action::Digest {
                    at,
                    snapshot: self.sm.snapshot(),
                });
            } else {
                out.push(Action::Mcast(ReplicaMessage::Digest(DigestMsg {
                    at,
                    digest: self.sm.digest(),
                })));
            }
        }
    }

    /// A `Digest` from participant `from` was delivered (rule 11).
    fn take_digest(&mut self, from: Member, msg: DigestMsg, version: u8, out: &mut Actions<S>) {
        if !self.roster.is_member(self.local) {
            return;
        }
        if version < DIGEST_VERSION {
            self.refused.version += 1;
            warn!(%from, version, "state digest in an envelope before its version; refused");
            return;
        }
        let Some(check) = self.check.as_mut().filter(|c| c.at == msg.at) else {
            // Its check was closed by a view change (or never opened here
            // for the same reason): a race.
            self.refused.stale += 1;
            debug!(%from, at = ?msg.at, "state digest for no open check; ignored");
            return;
        };
        if !check.waiting.contains(&from) || check.digests.contains_key(&from) {
            self.refused.digest += 1;
            warn!(%from, at = ?msg.at, "state digest the check does not wait for; refused");
            return;
        }
        check.digests.insert(from, msg.digest);
        if check.digests.len() < check.waiting.len() {
            return;
        }
        if let Some(check) = self.check.take() {
            self.decide_check(check, out);
        }
    }

    /// Every digest of `check` is in: the same decision on every member
    /// (rule 11).
    fn decide_check(&mut self, check: OpenCheck, out: &mut Actions<S>) {
        let at = check.at;
        let mut by_digest: BTreeMap<StateDigest, Vec<Member>> = BTreeMap::new();
        for (member, digest) in check.digests {
            if let Some(digest) = digest {
                // Members come in order: each list is sorted.
                by_digest.entry(digest).or_default().push(member);
            }
        }
        let mut compared: Vec<Member> = by_digest.values().flatten().copied().collect();
        compared.sort();
        if compared.is_empty() {
            debug!(?at, "divergence check: no participant has a digest");
            return;
        }
        self.checks.completed += 1;
        let majority = by_digest
            .values()
            .find(|holders| holders.len() * 2 > compared.len());
        let (diverged, resync_from): (Vec<Member>, _) = match majority {
            Some(holders) => {
                let diverged: Vec<Member> = compared
                    .iter()
                    .filter(|m| !holders.contains(m))
                    .copied()
                    .collect();
                let from = (!diverged.is_empty()).then(|| holders[0]);
                (diverged, from)
            }
            None => (compared.clone(), None),
        };
        self.checks.last = Some(CheckReport {
            at,
            compared: compared.clone(),
            diverged: diverged.clone(),
            resync_from,
        });
        if diverged.is_empty() {
            debug!(?at, participants = compared.len(), "state digests agree");
            out.push(Action::Event(ReplicaEvent::Checked {
                at,
                compared: compared.len(),
            }));
            return;
        }
        self.checks.diverged += 1;
        let me = diverged.contains(&self.local);
        match (resync_from, me) {
            (Some(from), true) => error!(
                local = %self.local, ?at, %from,
                "this replica's state differs from the group's at the same point of the stream (is apply deterministic?); receiving the state again"
            ),
            (None, true) => error!(
                local = %self.local, ?at, ?diverged,
                "the participants' states differ at the same point of the stream and no digest has a majority; nothing resent"
            ),
            (_, false) => warn!(
                ?at,
                ?diverged,
                ?resync_from,
                "replicas whose state diverged"
            ),
        }
        out.push(Action::Event(ReplicaEvent::Diverged {
            at,
            members: diverged.clone(),
            resync_from,
        }));
        if let Some(from) = resync_from {
            self.resync(from, diverged.into_iter().collect(), out);
        }
    }

    /// `sender` sends its state to the `diverged` participants, as at an
    /// install, from this point of the stream (rule 11).
    fn resync(&mut self, sender: Member, diverged: BTreeSet<Member>, out: &mut Actions<S>) {
        if diverged.contains(&self.local) {
            // Rule 12: what they read is not the group's state.
            self.drop_evaluated_reads(out);
        }
        let Phase::Installed(installed) = &mut self.phase else {
            return;
        };
        let id = self.id;
        installed.sender = Some(sender);
        installed.receivers = diverged.clone();
        installed.snapshot_id = id;
        installed.transfer_done = false;
        self.holders.retain(|m| !diverged.contains(m));
        self.acks.retain(|m, _| !diverged.contains(m));
        if diverged.contains(&self.local) {
            self.diverged = true;
            installed.incoming = Some(Incoming {
                from: sender,
                expect: id,
                next: 0,
                bytes: Vec::new(),
                replay: Vec::new(),
            });
        } else if sender == self.local && !self.replaying {
            info!(local = %self.local, to = ?diverged, "sending the state to diverged replicas");
            out.push(Action::Event(ReplicaEvent::TransferStarted {
                to: diverged.into_iter().collect(),
            }));
            out.push(Action::SendSnapshot {
                state: id,
                snapshot: self.sm.snapshot(),
                // The diverged hold the same id and another state: only a
                // snapshot replaces it.
                suffix: None,
            });
        }
    }

    fn apply(&mut self, from: Member, cmd: CommandMsg, out: &mut Actions<S>) {
        if !self.roster.is_member(self.local) {
            // A process outside the view keeps its state (rule 3): the
            // group's commands are not applied to another history, so the
            // state its announcement claims stays the one it holds.
            return;
        }
        let command = match super::observer::decode_command::<S>(&self.codec, &cmd.payload) {
            Ok(c) => c,
            Err(e) => {
                // Every replica fails alike on the same bytes, so skipping
                // keeps them equal.
                warn!(%from, id = cmd.id, "command does not decode; skipped: {e}");
                if from == self.local {
                    out.push(Action::Reply {
                        id: cmd.id,
                        result: Err(ReplicaError::Codec(e)),
                    });
                }
                return;
            }
        };
        let response = self.sm.apply(command);
        self.id.applied += 1;
        self.id.chain = chain(self.id.chain, from, cmd.id);
        if self.journal {
            out.push(Action::Persist(Entry::Applied {
                from,
                id: cmd.id,
                payload: cmd.payload.clone(),
                after: self.id,
            }));
        }
        self.recent.push(SuffixEntry {
            from,
            id: cmd.id,
            payload: cmd.payload,
            after: self.id,
        });
        if from == self.local {
            let executed = Executed {
                response,
                state: self.id,
            };
            match self.delivery {
                Delivery::Agreed => out.push(Action::Reply {
                    id: cmd.id,
                    result: Ok(executed),
                }),
                Delivery::Safe | Delivery::SafeAll => {
                    self.unstable.insert(self.id.applied, (cmd.id, executed));
                }
            }
        }
    }

    fn release_stable(&mut self, out: &mut Actions<S>) {
        if self.unstable.is_empty() && self.reads.waiting() == 0 {
            return;
        }
        let stable = self.stable();
        for (at, ids) in self.reads.stable(stable) {
            out.push(Action::ReadDone { ids, at });
        }
        while let Some(entry) = self.unstable.first_entry() {
            if *entry.key() > stable {
                break;
            }
            let (id, executed) = entry.remove();
            out.push(Action::Reply {
                id,
                result: Ok(executed),
            });
        }
    }

    /// The position every reply up to which may leave (safe delivery): the
    /// highest one acknowledged by a strict majority of the primary's
    /// lineage ([`Delivery::Safe`]), or by every participant holding the
    /// state ([`Delivery::SafeAll`]).
    fn stable(&self) -> u64 {
        self.acknowledged(true)
    }

    /// The position acknowledged as [`Self::stable`] says. With `itself`,
    /// this member counts for what it applied, its own acknowledgement not
    /// yet back: it holds that state (a durable replica's keeper still
    /// holds each reply until its own sync, `keeper` rule 1). Without, only
    /// the acknowledgements delivered count: those every member of the
    /// view delivers too, in this order.
    fn acknowledged(&self, itself: bool) -> u64 {
        let own = (itself && self.is_holding() && self.holders.contains(&self.local))
            .then_some(self.id.applied);
        let acked = |m: &Member| {
            let delivered = self.acks.get(m).copied().unwrap_or(0);
            match own {
                Some(applied) if *m == self.local => delivered.max(applied),
                _ => delivered,
            }
        };
        match self.delivery {
            Delivery::Agreed => u64::MAX,
            Delivery::SafeAll => self.holders.iter().map(acked).min().unwrap_or(0),
            Delivery::Safe => {
                let Phase::Installed(Installed {
                    primary: true,
                    lineage,
                    ..
                }) = &self.phase
                else {
                    return 0;
                };
                let mut counts: Vec<u64> = self
                    .holders
                    .iter()
                    .filter(|h| lineage.contains(h))
                    .map(acked)
                    .collect();
                counts.sort_unstable_by(|a, b| b.cmp(a));
                // The position a strict majority of the lineage reached.
                counts.get(lineage.len() / 2).copied().unwrap_or(0)
            }
        }
    }

    /// The runtime sent one acknowledgement for two the core asked for
    /// (the later one covers the earlier, runtime rule 3): one fewer is in
    /// flight.
    pub(crate) fn ack_absorbed(&mut self) {
        self.acks_in_flight = self.acks_in_flight.saturating_sub(1);
    }

    fn maybe_ack(&mut self, out: &mut Actions<S>) {
        if self.delivery == Delivery::Agreed
            || self.acks_in_flight >= ACKS_IN_FLIGHT
            || self.observing()
            || !self.is_holding()
            || self.id.applied <= self.acked
        {
            return;
        }
        self.acked = self.id.applied;
        if self.ack_serves_nobody(self.id.applied) {
            return;
        }
        self.acks_in_flight += 1;
        self.ack_basis = Some((self.id.epoch, self.id.genesis));
        out.push(Action::Mcast(ReplicaMessage::Ack(self.id.applied)));
    }

    /// An acknowledgement asked for with `upto` and sent later (after the
    /// rest of a batch, or a sync): it says every command applied since,
    /// if the state only grew by commands (same epoch and founding) and
    /// this replica still holds it; otherwise `upto`. With `durable` (a
    /// durable replica) it says no more than that state holds: a command
    /// applied but not yet synced is not acknowledged. Returns the count
    /// to send, and counts it as acknowledged; `None` if it would release
    /// nothing (rule 13): then it is no longer in flight.
    pub(crate) fn raise_ack(&mut self, upto: u64, durable: Option<StateId>) -> Option<u64> {
        let basis = (self.id.epoch, self.id.genesis);
        let same = self.ack_basis.is_some_and(|b| b == basis);
        let top = match durable {
            None => self.id.applied,
            Some(d) if (d.epoch, d.genesis) == basis => d.applied.min(self.id.applied),
            Some(_) => return Some(upto),
        };
        if !(same && top >= upto && self.is_holding()) {
            return Some(upto);
        }
        self.acked = self.acked.max(top);
        if self.ack_serves_nobody(top) {
            self.acks_in_flight = self.acks_in_flight.saturating_sub(1);
            return None;
        }
        Some(top)
    }

    /// Rule 13: whether an acknowledgement of `upto` would release nothing
    /// anywhere ([`Delivery::Safe`]): the acknowledgements delivered here
    /// already show a strict majority of the lineage at or past it, and
    /// every member of the view delivers them too, in this order, so every
    /// member's replies and reads up to `upto` leave without this one. (A
    /// view change drops every acknowledgement, and the next view's are
    /// asked for afresh.) Counts it as skipped.
    fn ack_serves_nobody(&mut self, upto: u64) -> bool {
        if self.delivery != Delivery::Safe || self.acknowledged(false) < upto {
            return false;
        }
        self.acks_skipped += 1;
        true
    }

    /// Acknowledgements this member did not send because they would have
    /// released nothing (rule 13).
    pub(crate) fn acks_skipped(&self) -> u64 {
        self.acks_skipped
    }

    /// The divergence checks this member saw complete (rule 11).
    pub(crate) fn checks(&self) -> &Checks {
        &self.checks
    }

    /// The receivers of a transfer hold the state now; safe delivery waits
    /// for the participants among them only (rule 10).
    fn hold(&mut self, receivers: BTreeSet<Member>) {
        let roster = &self.roster;
        self.holders
            .extend(receivers.into_iter().filter(|m| !roster.is_observer(*m)));
    }

    fn handle_chunk(&mut self, from: Member, version: u8, chunk: Chunk, out: &mut Actions<S>) {
        let Phase::Installed(installed) = &mut self.phase else {
            self.refused.chunk += 1;
            return;
        };
        // Rule 5: only the chosen sender, only the chosen state, only while
        // the transfer runs.
        if installed.sender != Some(from)
            || installed.transfer_done
            || chunk.state != installed.snapshot_id
        {
            self.refused.chunk += 1;
            warn!(%from, index = chunk.index, "snapshot chunk from no chosen transfer; refused");
            return;
        }
        let last = chunk.index.saturating_add(1) >= chunk.total;
        let Some(incoming) = &mut installed.incoming else {
            if last {
                // Every receiver restores at this same point.
                installed.transfer_done = true;
                let receivers = installed.receivers.clone();
                self.hold(receivers);
            }
            return;
        };
        if incoming.from != from || chunk.state != incoming.expect || chunk.index != incoming.next {
            self.refused.chunk += 1;
            warn!(%from, index = chunk.index, "unexpected snapshot chunk; refused");
            return;
        }
        incoming.bytes.extend_from_slice(&chunk.bytes);
        incoming.next += 1;
        if incoming.bytes.len() > self.max_snapshot {
            let why = format!(
                "snapshot from {from} exceeds the limit of {} bytes",
                self.max_snapshot
            );
            self.give_up(why, out);
            return;
        }
        if !last {
            return;
        }
        installed.transfer_done = true;
        let receivers = installed.receivers.clone();
        let Some(incoming) = installed.incoming.take() else {
            return;
        };
        self.hold(receivers);
        let mut bytes = incoming.bytes;
        let size = bytes.len() as u64;
        // From the suffix version on, the last byte says what was sent.
        let kind = if version >= SUFFIX_VERSION {
            bytes.pop()
        } else {
            Some(TRANSFER_SNAPSHOT)
        };
        let taken = match kind {
            Some(TRANSFER_SNAPSHOT) => match S::restore(&bytes) {
                Ok(sm) => {
                    self.sm = sm;
                    self.id = incoming.expect;
                    self.recent.reset(self.id);
                    if self.journal {
                        out.push(Action::Rebase {
                            state: self.id,
                            bytes,
                        });
                    }
                    Ok(None)
                }
                Err(e) => Err(format!("snapshot from {from} does not restore: {e}")),
            },
            Some(TRANSFER_SUFFIX) => {
                super::decode_snapshot::<Vec<SuffixEntry>>(&bytes, self.max_snapshot)
                    .and_then(|entries| self.take_suffix(entries, incoming.expect, out))
                    .map(Some)
                    .map_err(|e| format!("the commands sent by {from} do not apply: {e}"))
            }
            _ => Err(format!("the transfer from {from} names no kind of state")),
        };
        let suffix = match taken {
            Ok(suffix) => suffix,
            Err(why) => {
                out.push(Action::Fatal(why));
                return;
            }
        };
        self.diverged = false;
        let replayed = incoming.replay.len();
        for step in incoming.replay {
            match step {
                Replay::Apply(from, cmd) => self.apply(from, cmd, out),
                Replay::Promote(epoch, genesis) => self.promote(epoch, genesis, out),
            }
        }
        out.push(Action::Event(ReplicaEvent::Restored {
            from,
            bytes: size,
            suffix,
            replayed,
        }));
        if !self.ready {
            self.ready = true;
            out.push(Action::Event(ReplicaEvent::Ready));
        }
        self.release_stable(out);
    }

    /// The state becomes part of the primary component `epoch` (and of the
    /// founding `genesis`, if the view founded the group).
    fn promote(&mut self, epoch: PrimaryEpoch, genesis: Option<u64>, out: &mut Actions<S>) {
        let before = self.id;
        self.id.epoch = epoch;
        if let Some(genesis) = genesis {
            self.id.genesis = genesis;
        }
        self.moved(before, out);
    }

    /// Applies the commands a suffix transfer carries that this replica
    /// lacks, each checked to follow its state (the chain of command ids
    /// proves the histories agree up to there), then takes the epoch and
    /// genesis of the state the install chose, which it must now hold.
    /// Returns how many it applied. On an error this replica stops (as on
    /// a snapshot that does not restore): what it applied so far is a
    /// prefix of the sender's history.
    fn take_suffix(
        &mut self,
        entries: Vec<SuffixEntry>,
        expect: StateId,
        out: &mut Actions<S>,
    ) -> Result<u64, String> {
        let mut applied = 0;
        for e in entries {
            if e.after.applied <= self.id.applied {
                continue;
            }
            let next = chain(self.id.chain, e.from, e.id);
            if e.after.applied != self.id.applied + 1
                || e.after.chain != next
                || e.after.genesis != self.id.genesis
            {
                return Err(format!(
                    "command {} does not follow this replica's state {:?}",
                    e.after.applied, self.id
                ));
            }
            let command = super::observer::decode_command::<S>(&self.codec, &e.payload)
                .map_err(|err| format!("command {} does not decode: {err}", e.after.applied))?;
            self.sm.apply(command);
            self.id.applied += 1;
            self.id.chain = next;
            applied += 1;
            if self.journal {
                out.push(Action::Persist(Entry::Applied {
                    from: e.from,
                    id: e.id,
                    payload: e.payload.clone(),
                    after: self.id,
                }));
            }
            self.recent.push(SuffixEntry {
                after: self.id,
                ..e
            });
        }
        if (self.id.applied, self.id.chain) != (expect.applied, expect.chain) {
            return Err(format!(
                "they end at {:?}, the install chose {expect:?}",
                self.id
            ));
        }
        let before = self.id;
        self.id.epoch = expect.epoch;
        self.id.genesis = expect.genesis;
        self.moved(before, out);
        Ok(applied)
    }
}

/// The running hash of applied commands: the previous chain, then the
/// command's sender and id (see [`crate::stable_hash`]).
fn chain(prev: u64, from: Member, id: u64) -> u64 {
    StableHasher::chained(prev).member(from).u64(id).finish()
}

/// Whether an info agrees with itself (rule 6): a state is part of the
/// primary component its sender knows of, or of none.
fn consistent(info: &Info) -> bool {
    match &info.known {
        Some(known) => info.state.epoch <= known.epoch,
        None => info.state.epoch == PrimaryEpoch::default(),
    }
}

/// Whether an info is an observer's (rule 10).
fn observes(info: &Info) -> bool {
    info.announcement.role == Role::Observer
}

/// The greatest epoch an info claims.
fn claims(info: &Info) -> PrimaryEpoch {
    info.known
        .as_ref()
        .map(|k| k.epoch)
        .unwrap_or_default()
        .max(info.state.epoch)
}

/// Names a raw view (rule 1): a hash of its sorted members.
fn view_tag(raw: &[Member]) -> u64 {
    raw.iter().fold(0x9e37_79b9, |h, m| chain(h, *m, 0))
}

#[cfg(test)]
mod tests;
