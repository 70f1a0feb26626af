//! Metrics export (cargo feature `metrics`): the names every runtime
//! publishes through the [`metrics`](https://docs.rs/metrics) facade, and
//! what they mean. This module is the operator's reference; it does one
//! thing — name and record — and every runtime (group, replica, election)
//! calls it. The library installs no recorder: the application installs
//! one (`metrics-exporter-prometheus`, say; see `examples/prometheus.rs`),
//! and without one every record is dropped by the facade. Without the
//! feature every call here is an empty function and nothing is measured.
//!
//! # Labels
//!
//! Every series carries `group` (the CPG group name), `member` (this
//! process, `node/pid`: several members of one group can share a process,
//! as in tests and the simulated cluster, and their series must not
//! overwrite each other) and `protocol`: `registry` for a [`crate::Group`],
//! `replica` for a [`crate::Replica`], `election` for an
//! [`crate::Election`]. Some series add `cause`, `election` or `outcome`.
//!
//! # How values reach the recorder
//!
//! 1. **Counters and gauges are published, not incremented here.** Each
//!    runtime already keeps its counters ([`crate::group::MetricsSnapshot`],
//!    [`crate::replicated::RefusedCounts`],
//!    [`crate::election::ElectionRefusals`]) as plain atomics or fields on
//!    its hot path; every quarter second it copies them into the facade
//!    (`Counter::absolute`, `Gauge::set`), from a timer of its own. So the
//!    hot path pays nothing for the export, the exported counters can never
//!    disagree with `Group::metrics()`, and an idle group's gauges still
//!    move. A scrape sees values at most that old.
//! 2. **Histograms are recorded where the interval ends**, once per
//!    measured thing (a call, a command, a confchg, a transfer, a
//!    restart): they are not hot-path counters, and an interval cannot be
//!    published after the fact. Handles are registered once per runtime.
//! 3. **Nothing here decides anything.** The clock read for a histogram
//!    is local and only measured (DESIGN.md §1).
//!
//! # Counters
//!
//! | name | labels | meaning |
//! |---|---|---|
//! | `acpg_delivered_total` | all | messages delivered to this member and decoded (a batch's messages count one each) |
//! | `acpg_sent_total` | registry, replica | messages this member multicast |
//! | `acpg_multicasts_total` | registry, replica | multicasts this member made (a batch or a piece counts once) |
//! | `acpg_requests_total` | registry | requests to named actors delivered (for any host) |
//! | `acpg_batches_sent_total` | registry | multicasts that were batches of two or more |
//! | `acpg_batches_delivered_total` | registry | batches delivered |
//! | `acpg_chunks_sent_total` | registry | pieces of large messages multicast |
//! | `acpg_chunked_delivered_total` | registry | messages in pieces delivered whole |
//! | `acpg_chunked_resent_total` | registry | messages in pieces sent again because a confchg cut them |
//! | `acpg_chunks_stray_total` | registry | pieces that belonged to no message under way (not lost) |
//! | `acpg_compressed_sent_total` | registry | multicasts sent compressed (`GroupConfig::compress_above`) |
//! | `acpg_compressed_saved_bytes_total` | registry | bytes compression kept off the ring |
//! | `acpg_compressed_delivered_total` | registry | compressed multicasts delivered and opened |
//! | `acpg_acks_skipped_total` | replica | safe-delivery acknowledgements not multicast because a majority had already acknowledged their position (they would have released nothing anywhere) |
//! | `acpg_checks_total` | replica | divergence checks completed: every participant's digest of the state at the check's position came in |
//! | `acpg_checks_diverged_total` | replica | of those, checks where a participant's digest differed (that replica resyncs; `Replica::inspect` names it) |
//! | `acpg_try_again_total` | registry, replica | `TRY_AGAIN` answers of the transport (each retried) |
//! | `acpg_calls_abandoned_total` | registry | calls given up (timeout, dropped future) before their outcome |
//! | `acpg_dropped_total` | `cause` | messages dropped before any rule judged them: `foreign`, `version`, `unknown_kind`, `malformed`, `unknown_type`, `bad_payload`, `unauthenticated` |
//! | `acpg_refused_total` | `cause` | messages that decoded but broke a sender rule (DESIGN.md §6), refused alike on every member; causes per protocol below |
//!
//! `acpg_refused_total` causes — registry: `unannounced`, `not_host`,
//! `unasked`, `clock`, `invalid`, `incompatible`, `observer`, `version`;
//! replica: `not_member`, `epoch`, `inconsistent`, `chunk`, `stale`,
//! `overflow`, `version`, `incompatible`, `observer`; election:
//! `not_member`, `incompatible`, `ring_jump`, `epoch_jump`, `malformed`,
//! `observer`, `version`. Each cause is documented on the counter struct
//! of its protocol.
//!
//! # Gauges
//!
//! | name | labels | meaning |
//! |---|---|---|
//! | `acpg_members` | all | members in this member's view (announced processes; observers included) |
//! | `acpg_protocol_version` | all | protocol version this member writes at (the group's, once known; 0 before, for replicas and elections) |
//! | `acpg_multicasts_in_flight` | all | multicasts sent and not yet delivered back (the send window in use) |
//! | `acpg_send_queue_messages` | all | messages waiting to be multicast |
//! | `acpg_send_queue_bytes` | registry | bytes of those messages |
//! | `acpg_calls_outstanding` | registry | calls of this member waiting for their outcome |
//! | `acpg_replies_awaited` | registry | of those, calls whose host owes the reply |
//! | `acpg_children_running` | registry | supervised children running on this member |
//! | `acpg_children_pending` | registry | child slots of the group that want to run and have no host (no quorum, or no eligible member) |
//! | `acpg_primary` | replica | 1 while the replica's view is a primary component, else 0 |
//! | `acpg_replica_applied` | replica | commands applied to the state this replica holds (`StateId::applied`) |
//! | `acpg_election_leading` | election, `election` | 1 while this member acts as leader of that election, else 0 |
//! | `acpg_election_has_leader` | election, `election` | 1 while the group decided a leader for it, else 0 |
//! | `acpg_election_epoch_term` | election, `election` | term of the current leader's fencing epoch (the founding time plus the leaderships so far) |
//! | `acpg_election_epoch_ring_seq` | election, `election` | totem ring sequence of the current leader's fencing epoch |
//!
//! When a runtime stops (it left, was refused, or its transport closed) it
//! publishes its last counts and sets `acpg_members` (and `acpg_primary`,
//! `acpg_children_running`, `acpg_election_leading`) to 0: its series stay
//! in the recorder, so a stopped member reads as out of every view.
//!
//! An election's gauges appear once it has had a leader or candidates,
//! and stay (at 0) once it has none. The election named `""` is the
//! group-wide one ([`crate::GROUP_ELECTION`]).
//!
//! # Histograms (seconds)
//!
//! | name | labels | from | to |
//! |---|---|---|---|
//! | `acpg_call_duration_seconds` | registry, `outcome` = `ok` \| `error` | `RemoteAddr::send` called (the caller's task) | its outcome: the reply decoded, or an error (timeout, host left, ...) |
//! | `acpg_apply_duration_seconds` | replica | a command handed to the transport (multicast) | the same command applied by this replica |
//! | `acpg_confchg_decision_seconds` | all | a confchg delivered | registry: the view change it leads to reported and the supervision decisions for it carried out; replica: the view installed with its primary decision; election: the view installed with its leaders |
//! | `acpg_state_transfer_seconds` | registry, replica | registry: this member asked for the group state; replica: the install named this member a receiver | the state restored here (and what was buffered replayed) |
//! | `acpg_restart_seconds` | registry | this member saw a child end (its own child stopping, or the exit's place in the stream) | the new incarnation running on this member |
//!
//! What these cannot measure, said rather than faked:
//!
//! - **Each figure is one member's.** An interval is measured where it both
//!   starts and ends; no clock of another member is read. So apply latency
//!   exists only on the member that sent the command (the others do not
//!   know when it was multicast), and a restart on another host than the
//!   one that saw the exit is measured from its place in the stream there,
//!   not from the exit itself.
//! - **Failure detection is not included.** A crash is seen by the others
//!   only at the confchg corosync delivers (token timeout, DESIGN.md §3);
//!   `acpg_confchg_decision_seconds` and `acpg_restart_seconds` start at
//!   that confchg. A child that stops on its own host is seen by the child
//!   watch, at most 20 ms late.
//! - **The latest confchg counts.** If several confchgs arrive before the
//!   view they lead to is settled, the interval starts at the latest (a
//!   silent process joining changes nothing and settles nothing; the next
//!   real change replaces its start).
//! - **A call's time includes its wait for the send queue** (the caller
//!   waits there too); a call dropped by its caller before any outcome is
//!   not recorded (see `acpg_calls_abandoned_total`).

use std::time::Duration;

use crate::transport::{GroupName, Member};

/// How often each runtime copies its counters and gauges into the
/// recorder; `None` without the feature (no timer at all then). A quarter
/// second keeps a scrape (every few seconds at least) current and costs a
/// few hundred atomic stores per second per runtime.
pub(crate) const PUBLISH_EVERY: Option<Duration> = if cfg!(feature = "metrics") {
    Some(Duration::from_millis(250))
} else {
    None
};

/// Which runtime a series belongs to (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Protocol {
    Registry,
    Replica,
    Election,
}

impl Protocol {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Protocol::Registry => "registry",
            Protocol::Replica => "replica",
            Protocol::Election => "election",
        }
    }
}

#[cfg(feature = "metrics")]
mod on;
#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// What the group runtime publishes besides its counters.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct GroupGauges {
    pub(crate) members: usize,
    pub(crate) queued: usize,
    pub(crate) queued_bytes: usize,
    pub(crate) in_flight: usize,
    pub(crate) children_running: usize,
    pub(crate) children_pending: usize,
}

/// What the replica runtime publishes besides its counters.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct ReplicaGauges {
    pub(crate) members: usize,
    pub(crate) queued: usize,
    pub(crate) in_flight: usize,
    pub(crate) primary: bool,
    pub(crate) applied: u64,
    pub(crate) protocol_version: u8,
    /// Acknowledgements not sent because they would release nothing
    /// (a counter, published with the gauges).
    pub(crate) acks_skipped: u64,
    /// Divergence checks completed, and those that found a difference
    /// (counters, published with the gauges).
    pub(crate) checks: u64,
    pub(crate) checks_diverged: u64,
}

/// What the election runtime publishes.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct ElectionGauges<'a> {
    pub(crate) unauthenticated: u64,
    pub(crate) in_flight: usize,
    pub(crate) queued: usize,
    pub(crate) protocol_version: u8,
    pub(crate) status: &'a crate::election::ElectionStatus,
}

/// The labels every series of one runtime carries.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn base_labels(
    group: &GroupName,
    member: Member,
    protocol: Protocol,
) -> Vec<(&'static str, String)> {
    vec![
        ("group", group.as_str().to_owned()),
        ("member", member.to_string()),
        ("protocol", protocol.label().to_owned()),
    ]
}

#[cfg(all(test, feature = "metrics"))]
mod tests;
