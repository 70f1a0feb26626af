//! The recording half, with the feature on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Label};

use super::{base_labels, ElectionGauges, GroupGauges, Protocol, ReplicaGauges};
use crate::election::ElectionRefusals;
use crate::group::MetricsSnapshot;
use crate::replicated::RefusedCounts;
use crate::supervisor::{ChildPath, SlotKey};
use crate::transport::{GroupName, Member};

/// Most exits remembered while their restart is awaited: a child that is
/// never started again (temporary, transient, or given up) must not grow
/// the map forever.
const MAX_EXITS_AWAITED: usize = 4096;

/// One counter of a runtime: its name, its `cause` label (`""`: none),
/// and its value now.
type CounterValue = (&'static str, &'static str, u64);

fn labels(base: &[(&'static str, String)], extra: &[(&'static str, &str)]) -> Vec<Label> {
    base.iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .chain(extra.iter().map(|(k, v)| Label::new(*k, v.to_string())))
        .collect()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "acpg_delivered_total",
        "Messages delivered to this member and decoded"
    );
    describe_counter!("acpg_sent_total", "Messages this member multicast");
    describe_counter!("acpg_multicasts_total", "Multicasts this member made");
    describe_counter!("acpg_requests_total", "Requests to named actors delivered");
    describe_counter!("acpg_batches_sent_total", "Multicasts that were batches");
    describe_counter!("acpg_batches_delivered_total", "Batches delivered");
    describe_counter!(
        "acpg_chunks_sent_total",
        "Pieces of large messages multicast"
    );
    describe_counter!(
        "acpg_chunked_delivered_total",
        "Messages in pieces delivered whole"
    );
    describe_counter!(
        "acpg_chunked_resent_total",
        "Messages in pieces sent again after a confchg cut them"
    );
    describe_counter!("acpg_chunks_stray_total", "Pieces of no message under way");
    describe_counter!("acpg_compressed_sent_total", "Multicasts sent compressed");
    describe_counter!(
        "acpg_compressed_saved_bytes_total",
        "Bytes compression kept off the ring"
    );
    describe_counter!(
        "acpg_compressed_delivered_total",
        "Compressed multicasts delivered and opened"
    );
    describe_counter!(
        "acpg_acks_skipped_total",
        "Safe-delivery acknowledgements not sent: a majority had acknowledged"
    );
    describe_counter!(
        "acpg_checks_total",
        "Divergence checks completed (every participant's digest came in)"
    );
    describe_counter!(
        "acpg_checks_diverged_total",
        "Divergence checks where some participant's digest differed"
    );
    describe_counter!(
        "acpg_try_again_total",
        "TRY_AGAIN answers of the transport (each retried)"
    );
    describe_counter!(
        "acpg_calls_abandoned_total",
        "Calls given up before their outcome"
    );
    describe_counter!(
        "acpg_dropped_total",
        "Messages dropped before any rule judged them, by cause"
    );
    describe_counter!(
        "acpg_refused_total",
        "Messages refused by a sender rule, by cause"
    );
    describe_gauge!("acpg_members", "Members in this member's view");
    describe_gauge!(
        "acpg_protocol_version",
        "Protocol version this member writes at"
    );
    describe_gauge!(
        "acpg_multicasts_in_flight",
        "Multicasts not yet delivered back"
    );
    describe_gauge!(
        "acpg_send_queue_messages",
        "Messages waiting to be multicast"
    );
    describe_gauge!(
        "acpg_send_queue_bytes",
        Unit::Bytes,
        "Bytes waiting to be multicast"
    );
    describe_gauge!("acpg_calls_outstanding", "Calls waiting for their outcome");
    describe_gauge!("acpg_replies_awaited", "Calls whose host owes the reply");
    describe_gauge!(
        "acpg_children_running",
        "Supervised children running on this member"
    );
    describe_gauge!("acpg_children_pending", "Child slots waiting for a host");
    describe_gauge!(
        "acpg_primary",
        "1 while the replica's view is a primary component"
    );
    describe_gauge!(
        "acpg_replica_applied",
        "Commands applied to the state this replica holds"
    );
    describe_gauge!(
        "acpg_election_leading",
        "1 while this member leads the election"
    );
    describe_gauge!(
        "acpg_election_has_leader",
        "1 while the election has a leader"
    );
    describe_gauge!(
        "acpg_election_epoch_term",
        "Term of the leader's fencing epoch"
    );
    describe_gauge!(
        "acpg_election_epoch_ring_seq",
        "Ring sequence of the leader's fencing epoch"
    );
    describe_histogram!(
        "acpg_call_duration_seconds",
        Unit::Seconds,
        "Call start to outcome, at the caller"
    );
    describe_histogram!(
        "acpg_apply_duration_seconds",
        Unit::Seconds,
        "Command multicast to applied, at its sender"
    );
    describe_histogram!(
        "acpg_confchg_decision_seconds",
        Unit::Seconds,
        "Confchg delivered to the view's decisions carried out"
    );
    describe_histogram!(
        "acpg_state_transfer_seconds",
        Unit::Seconds,
        "State asked for to state restored, at the joiner"
    );
    describe_histogram!(
        "acpg_restart_seconds",
        Unit::Seconds,
        "Child exit seen to the child running again here"
    );
}

/// Counters registered once, in the order of the values published.
struct Counters(Vec<Counter>);

impl Counters {
    fn register(base: &[(&'static str, String)], values: &[CounterValue]) -> Self {
        Counters(
            values
                .iter()
                .map(|(name, cause, _)| {
                    let extra: &[(&str, &str)] = if cause.is_empty() {
                        &[]
                    } else {
                        &[("cause", cause)]
                    };
                    metrics::counter!(*name, labels(base, extra))
                })
                .collect(),
        )
    }

    fn publish(&self, values: &[CounterValue]) {
        for (counter, (_, _, value)) in self.0.iter().zip(values) {
            counter.absolute(*value);
        }
    }
}

fn gauge(base: &[(&'static str, String)], name: &'static str) -> Gauge {
    metrics::gauge!(name, labels(base, &[]))
}

fn histogram(base: &[(&'static str, String)], name: &'static str) -> Histogram {
    metrics::histogram!(name, labels(base, &[]))
}

/// The wire counters a group and a replica share (both keep them in a
/// [`crate::group::GroupMetrics`]).
fn wire_counters(s: &MetricsSnapshot) -> [CounterValue; 9] {
    [
        ("acpg_delivered_total", "", s.delivered),
        ("acpg_sent_total", "", s.sent),
        ("acpg_multicasts_total", "", s.multicasts),
        ("acpg_try_again_total", "", s.try_again),
        ("acpg_dropped_total", "foreign", s.dropped_foreign),
        ("acpg_dropped_total", "version", s.dropped_version),
        ("acpg_dropped_total", "unknown_kind", s.dropped_unknown_kind),
        ("acpg_dropped_total", "malformed", s.dropped_malformed),
        (
            "acpg_dropped_total",
            "unauthenticated",
            s.dropped_unauthenticated,
        ),
    ]
}

fn group_counters(s: &MetricsSnapshot) -> Vec<CounterValue> {
    let mut out = wire_counters(s).to_vec();
    out.extend([
        ("acpg_requests_total", "", s.requests),
        ("acpg_batches_sent_total", "", s.batches_sent),
        ("acpg_batches_delivered_total", "", s.batches_delivered),
        ("acpg_chunks_sent_total", "", s.chunks_sent),
        ("acpg_chunked_delivered_total", "", s.chunked_delivered),
        ("acpg_chunked_resent_total", "", s.chunked_resent),
        ("acpg_chunks_stray_total", "", s.chunks_stray),
        ("acpg_compressed_sent_total", "", s.compressed_sent),
        ("acpg_compressed_saved_bytes_total", "", s.compressed_saved),
        (
            "acpg_compressed_delivered_total",
            "",
            s.compressed_delivered,
        ),
        ("acpg_calls_abandoned_total", "", s.calls_abandoned),
        ("acpg_dropped_total", "unknown_type", s.dropped_unknown_type),
        ("acpg_dropped_total", "bad_payload", s.dropped_bad_payload),
        ("acpg_refused_total", "unannounced", s.refused_unannounced),
        ("acpg_refused_total", "not_host", s.refused_not_host),
        ("acpg_refused_total", "unasked", s.refused_unasked),
        ("acpg_refused_total", "clock", s.refused_clock),
        ("acpg_refused_total", "invalid", s.refused_invalid),
        ("acpg_refused_total", "incompatible", s.refused_incompatible),
        ("acpg_refused_total", "observer", s.refused_observer),
        ("acpg_refused_total", "version", s.refused_version),
    ]);
    out
}

fn replica_counters(
    s: &MetricsSnapshot,
    r: &RefusedCounts,
    g: &ReplicaGauges,
) -> Vec<CounterValue> {
    let mut out = wire_counters(s).to_vec();
    out.extend([
        ("acpg_acks_skipped_total", "", g.acks_skipped),
        ("acpg_checks_total", "", g.checks),
        ("acpg_checks_diverged_total", "", g.checks_diverged),
        ("acpg_refused_total", "not_member", r.not_member),
        ("acpg_refused_total", "epoch", r.epoch),
        ("acpg_refused_total", "inconsistent", r.inconsistent),
        ("acpg_refused_total", "chunk", r.chunk),
        ("acpg_refused_total", "stale", r.stale),
        ("acpg_refused_total", "overflow", r.overflow),
        ("acpg_refused_total", "version", r.version),
        ("acpg_refused_total", "incompatible", r.incompatible),
        ("acpg_refused_total", "observer", r.observer),
    ]);
    out
}

fn election_counters(
    delivered: u64,
    r: &ElectionRefusals,
    unauthenticated: u64,
) -> [CounterValue; 9] {
    [
        ("acpg_delivered_total", "", delivered),
        ("acpg_dropped_total", "unauthenticated", unauthenticated),
        ("acpg_refused_total", "not_member", r.not_member),
        ("acpg_refused_total", "incompatible", r.incompatible),
        ("acpg_refused_total", "ring_jump", r.ring_jump),
        ("acpg_refused_total", "epoch_jump", r.epoch_jump),
        ("acpg_refused_total", "malformed", r.malformed),
        ("acpg_refused_total", "observer", r.observer),
        ("acpg_refused_total", "version", r.version),
    ]
}

/// An interval that starts at most once until it ends (the earliest start
/// wins), or restarts at every start (the latest wins).
#[derive(Default)]
struct Stopwatch(Option<Instant>);

impl Stopwatch {
    fn start_latest(&mut self) {
        self.0 = Some(Instant::now());
    }

    fn start_earliest(&mut self) {
        self.0.get_or_insert_with(Instant::now);
    }

    fn stop(&mut self, into: &Histogram) {
        if let Some(at) = self.0.take() {
            into.record(at.elapsed());
        }
    }
}

/// The caller side of calls: shared by a group's handles.
#[derive(Clone)]
pub(crate) struct CallTimers {
    ok: Histogram,
    error: Histogram,
}

/// One call under way.
pub(crate) struct CallTimer {
    timers: CallTimers,
    at: Instant,
}

impl CallTimers {
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        let base = base_labels(group, member, Protocol::Registry);
        let h = |outcome| {
            metrics::histogram!(
                "acpg_call_duration_seconds",
                labels(&base, &[("outcome", outcome)])
            )
        };
        CallTimers {
            ok: h("ok"),
            error: h("error"),
        }
    }

    pub(crate) fn start(&self) -> CallTimer {
        CallTimer {
            timers: self.clone(),
            at: Instant::now(),
        }
    }
}

impl CallTimer {
    pub(crate) fn done(self, ok: bool) {
        let into = if ok {
            &self.timers.ok
        } else {
            &self.timers.error
        };
        into.record(self.at.elapsed());
    }
}

/// The group runtime's series.
pub(crate) struct GroupTelemetry {
    counters: Counters,
    members: Gauge,
    version: Gauge,
    in_flight: Gauge,
    queued: Gauge,
    queued_bytes: Gauge,
    outstanding: Gauge,
    awaited: Gauge,
    running: Gauge,
    pending: Gauge,
    decision: Histogram,
    transfer: Histogram,
    restart: Histogram,
    confchg: Stopwatch,
    asked: Stopwatch,
    exits: BTreeMap<(ChildPath, SlotKey), Instant>,
}

impl GroupTelemetry {
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        describe();
        let base = base_labels(group, member, Protocol::Registry);
        GroupTelemetry {
            counters: Counters::register(&base, &group_counters(&MetricsSnapshot::default())),
            members: gauge(&base, "acpg_members"),
            version: gauge(&base, "acpg_protocol_version"),
            in_flight: gauge(&base, "acpg_multicasts_in_flight"),
            queued: gauge(&base, "acpg_send_queue_messages"),
            queued_bytes: gauge(&base, "acpg_send_queue_bytes"),
            outstanding: gauge(&base, "acpg_calls_outstanding"),
            awaited: gauge(&base, "acpg_replies_awaited"),
            running: gauge(&base, "acpg_children_running"),
            pending: gauge(&base, "acpg_children_pending"),
            decision: histogram(&base, "acpg_confchg_decision_seconds"),
            transfer: histogram(&base, "acpg_state_transfer_seconds"),
            restart: histogram(&base, "acpg_restart_seconds"),
            confchg: Stopwatch::default(),
            asked: Stopwatch::default(),
            exits: BTreeMap::new(),
        }
    }

    pub(crate) fn publish(&mut self, s: &MetricsSnapshot, g: GroupGauges) {
        self.counters.publish(&group_counters(s));
        self.members.set(g.members as f64);
        self.version.set(f64::from(s.protocol_version));
        self.in_flight.set(g.in_flight as f64);
        self.queued.set(g.queued as f64);
        self.queued_bytes.set(g.queued_bytes as f64);
        self.outstanding.set(s.calls_outstanding as f64);
        self.awaited.set(s.replies_awaited as f64);
        self.running.set(g.children_running as f64);
        self.pending.set(g.children_pending as f64);
    }

    /// The runtime stopped: it is in no view and runs no child.
    pub(crate) fn closed(&mut self) {
        self.members.set(0.0);
        self.running.set(0.0);
    }

    /// A confchg was delivered.
    pub(crate) fn confchg(&mut self) {
        self.confchg.start_latest();
    }

    /// The view change a confchg led to is reported and its decisions
    /// carried out.
    pub(crate) fn view_settled(&mut self) {
        self.confchg.stop(&self.decision);
    }

    /// This member asked for the group state (again: the first ask counts).
    pub(crate) fn state_asked(&mut self) {
        self.asked.start_earliest();
    }

    /// This member holds the group state.
    pub(crate) fn state_held(&mut self) {
        self.asked.stop(&self.transfer);
    }

    /// This member saw a child end: its own, or an exit in the stream.
    pub(crate) fn exit_seen(&mut self, key: &(ChildPath, SlotKey)) {
        if self.exits.len() >= MAX_EXITS_AWAITED && !self.exits.contains_key(key) {
            self.exits.clear();
        }
        self.exits.entry(key.clone()).or_insert_with(Instant::now);
    }

    /// The child was started again elsewhere: not this member's to measure.
    pub(crate) fn started_elsewhere(&mut self, key: &(ChildPath, SlotKey)) {
        self.exits.remove(key);
    }

    /// The child runs here now.
    pub(crate) fn running_here(&mut self, key: &(ChildPath, SlotKey)) {
        if let Some(at) = self.exits.remove(key) {
            self.restart.record(at.elapsed());
        }
    }
}

/// The replica runtime's series.
pub(crate) struct ReplicaTelemetry {
    counters: Counters,
    members: Gauge,
    version: Gauge,
    in_flight: Gauge,
    queued: Gauge,
    primary: Gauge,
    applied: Gauge,
    apply: Histogram,
    decision: Histogram,
    transfer: Histogram,
    confchg: Stopwatch,
    receiving: Stopwatch,
    /// Commands of this member multicast and not yet applied, by id.
    commands: HashMap<u64, Instant>,
}

impl ReplicaTelemetry {
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        describe();
        let base = base_labels(group, member, Protocol::Replica);
        ReplicaTelemetry {
            counters: Counters::register(
                &base,
                &replica_counters(
                    &MetricsSnapshot::default(),
                    &RefusedCounts::default(),
                    &ReplicaGauges::default(),
                ),
            ),
            members: gauge(&base, "acpg_members"),
            version: gauge(&base, "acpg_protocol_version"),
            in_flight: gauge(&base, "acpg_multicasts_in_flight"),
            queued: gauge(&base, "acpg_send_queue_messages"),
            primary: gauge(&base, "acpg_primary"),
            applied: gauge(&base, "acpg_replica_applied"),
            apply: histogram(&base, "acpg_apply_duration_seconds"),
            decision: histogram(&base, "acpg_confchg_decision_seconds"),
            transfer: histogram(&base, "acpg_state_transfer_seconds"),
            confchg: Stopwatch::default(),
            receiving: Stopwatch::default(),
            commands: HashMap::new(),
        }
    }

    pub(crate) fn publish(
        &mut self,
        s: &MetricsSnapshot,
        refused: &RefusedCounts,
        g: ReplicaGauges,
    ) {
        self.counters.publish(&replica_counters(s, refused, &g));
        self.members.set(g.members as f64);
        self.version.set(f64::from(g.protocol_version));
        self.in_flight.set(g.in_flight as f64);
        self.queued.set(g.queued as f64);
        self.primary.set(if g.primary { 1.0 } else { 0.0 });
        self.applied.set(g.applied as f64);
    }

    /// The runtime stopped: it is in no view, and no primary.
    pub(crate) fn closed(&mut self) {
        self.members.set(0.0);
        self.primary.set(0.0);
    }

    pub(crate) fn confchg(&mut self) {
        self.confchg.start_latest();
    }

    /// The view is installed (its primary decision taken); `receiving`:
    /// this member is to receive the state.
    pub(crate) fn installed(&mut self, receiving: bool) {
        self.confchg.stop(&self.decision);
        if receiving {
            self.receiving.start_earliest();
        }
    }

    /// This member restored the state it was sent.
    pub(crate) fn restored(&mut self) {
        self.receiving.stop(&self.transfer);
    }

    /// Command `id` of this member was multicast.
    pub(crate) fn multicast(&mut self, id: u64) {
        self.commands.insert(id, Instant::now());
    }

    /// Command `id` of this member has its outcome (`applied`: applied
    /// here, rather than refused or failed).
    pub(crate) fn outcome(&mut self, id: u64, applied: bool) {
        if let Some(at) = self.commands.remove(&id) {
            if applied {
                self.apply.record(at.elapsed());
            }
        }
    }

    /// Every command under way failed (the runtime stops).
    pub(crate) fn forget_commands(&mut self) {
        self.commands.clear();
    }
}

/// The election runtime's series.
pub(crate) struct ElectionTelemetry {
    base: Vec<(&'static str, String)>,
    counters: Counters,
    members: Gauge,
    version: Gauge,
    in_flight: Gauge,
    queued: Gauge,
    decision: Histogram,
    confchg: Stopwatch,
    /// Messages delivered and decoded (the election keeps no counter of
    /// its own: counted here, one add per delivery).
    delivered: u64,
    /// Elections with gauges, so they drop to 0 once gone.
    seen: BTreeSet<String>,
}

impl ElectionTelemetry {
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        describe();
        let base = base_labels(group, member, Protocol::Election);
        ElectionTelemetry {
            counters: Counters::register(
                &base,
                &election_counters(0, &ElectionRefusals::default(), 0),
            ),
            members: gauge(&base, "acpg_members"),
            version: gauge(&base, "acpg_protocol_version"),
            in_flight: gauge(&base, "acpg_multicasts_in_flight"),
            queued: gauge(&base, "acpg_send_queue_messages"),
            decision: histogram(&base, "acpg_confchg_decision_seconds"),
            confchg: Stopwatch::default(),
            delivered: 0,
            seen: BTreeSet::new(),
            base,
        }
    }

    pub(crate) fn publish(&mut self, g: ElectionGauges<'_>) {
        let status = g.status;
        self.counters.publish(&election_counters(
            self.delivered,
            &status.refused,
            g.unauthenticated,
        ));
        self.members.set(status.members.len() as f64);
        self.version.set(f64::from(g.protocol_version));
        self.in_flight.set(g.in_flight as f64);
        self.queued.set(g.queued as f64);
        self.seen.extend(status.leaders.keys().cloned());
        self.seen.extend(status.candidates.keys().cloned());
        for name in &self.seen {
            let l = labels(&self.base, &[("election", name)]);
            let leader = status.leaders.get(name);
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            metrics::gauge!("acpg_election_leading", l.clone())
                .set(flag(status.acting.contains_key(name)));
            metrics::gauge!("acpg_election_has_leader", l.clone()).set(flag(leader.is_some()));
            let (term, ring) = leader.map_or((0, 0), |l| (l.epoch.term, l.epoch.ring_seq));
            metrics::gauge!("acpg_election_epoch_term", l.clone()).set(term as f64);
            metrics::gauge!("acpg_election_epoch_ring_seq", l).set(ring as f64);
        }
    }

    /// The runtime stopped: it is in no view, and leads nothing.
    pub(crate) fn closed(&mut self) {
        self.members.set(0.0);
        for name in &self.seen {
            let l = labels(&self.base, &[("election", name)]);
            metrics::gauge!("acpg_election_leading", l).set(0.0);
        }
    }

    /// A message was delivered and decoded.
    pub(crate) fn delivered(&mut self) {
        self.delivered += 1;
    }

    pub(crate) fn confchg(&mut self) {
        self.confchg.start_latest();
    }

    /// The view is installed, its leaders decided.
    pub(crate) fn installed(&mut self) {
        self.confchg.stop(&self.decision);
    }
}
