//! The names, labels and values the runtimes hand the recorder, read back
//! from an in-memory one.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;
use crate::election::{ElectionStatus, Epoch, Leadership};
use crate::group::MetricsSnapshot;
use crate::replicated::RefusedCounts;
use crate::supervisor::{ChildPath, SlotKey};

/// Every series recorded, by `name{label=value,...}` (labels sorted).
fn recorded(run: impl FnOnce()) -> BTreeMap<String, DebugValue> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, run);
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn group() -> GroupName {
    GroupName::new("orders").expect("a valid name")
}

const ME: Member = Member::new(1, 42);

fn series(name: &str, protocol: &str, extra: &str) -> String {
    let mut labels = vec![
        "group=orders".to_owned(),
        "member=node1/42".to_owned(),
        format!("protocol={protocol}"),
    ];
    if !extra.is_empty() {
        labels.push(extra.to_owned());
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn histogram_len(values: &BTreeMap<String, DebugValue>, key: &str) -> usize {
    match values.get(key) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn a_group_publishes_each_counter_of_its_snapshot_under_its_name_and_cause() {
    let values = recorded(|| {
        let mut t = GroupTelemetry::new(&group(), ME);
        let snapshot = MetricsSnapshot {
            delivered: 7,
            refused_clock: 3,
            dropped_unauthenticated: 2,
            protocol_version: 4,
            calls_outstanding: 5,
            ..MetricsSnapshot::default()
        };
        t.publish(
            &snapshot,
            GroupGauges {
                members: 3,
                queued_bytes: 900,
                children_pending: 1,
                ..GroupGauges::default()
            },
        );
    });
    let r = "registry";
    assert_eq!(
        values[&series("acpg_delivered_total", r, "")],
        DebugValue::Counter(7)
    );
    assert_eq!(
        values[&series("acpg_refused_total", r, "cause=clock")],
        DebugValue::Counter(3)
    );
    assert_eq!(
        values[&series("acpg_refused_total", r, "cause=version")],
        DebugValue::Counter(0)
    );
    assert_eq!(
        values[&series("acpg_dropped_total", r, "cause=unauthenticated")],
        DebugValue::Counter(2)
    );
    let gauge = |name| match &values[&series(name, r, "")] {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("acpg_members"), 3.0);
    assert_eq!(gauge("acpg_send_queue_bytes"), 900.0);
    assert_eq!(gauge("acpg_children_pending"), 1.0);
    assert_eq!(gauge("acpg_protocol_version"), 4.0);
    assert_eq!(gauge("acpg_calls_outstanding"), 5.0);
}

#[test]
fn every_name_is_prefixed_and_counters_end_in_total() {
    let values = recorded(|| {
        GroupTelemetry::new(&group(), ME)
            .publish(&MetricsSnapshot::default(), GroupGauges::default());
        ReplicaTelemetry::new(&group(), ME).publish(
            &MetricsSnapshot::default(),
            &RefusedCounts::default(),
            ReplicaGauges::default(),
        );
        CallTimers::new(&group(), ME).start().done(true);
    });
    assert!(!values.is_empty());
    for (key, value) in &values {
        assert!(key.starts_with("acpg_"), "{key}");
        match value {
            DebugValue::Counter(_) => assert!(key.contains("_total{"), "{key}"),
            DebugValue::Histogram(_) => assert!(key.contains("_seconds{"), "{key}"),
            DebugValue::Gauge(_) => assert!(!key.contains("_total{"), "{key}"),
        }
    }
}

#[test]
fn a_view_settled_records_the_time_since_the_latest_confchg_once() {
    let values = recorded(|| {
        let mut t = GroupTelemetry::new(&group(), ME);
        t.view_settled(); // no confchg under way: nothing to measure
        t.confchg();
        t.confchg();
        t.view_settled();
        t.view_settled();
    });
    assert_eq!(
        histogram_len(
            &values,
            &series("acpg_confchg_decision_seconds", "registry", "")
        ),
        1
    );
}

#[test]
fn a_state_transfer_counts_from_the_first_ask_to_the_state_held() {
    let values = recorded(|| {
        let mut t = GroupTelemetry::new(&group(), ME);
        t.state_held(); // a founder never asked
        t.state_asked();
        t.state_asked();
        t.state_held();
        t.state_held();
    });
    assert_eq!(
        histogram_len(
            &values,
            &series("acpg_state_transfer_seconds", "registry", "")
        ),
        1
    );
}

#[test]
fn a_restart_is_measured_only_where_the_child_runs_again() {
    let here = (ChildPath::new("t", ["a"]), SlotKey::Single);
    let there = (ChildPath::new("t", ["b"]), SlotKey::Single);
    let values = recorded(|| {
        let mut t = GroupTelemetry::new(&group(), ME);
        t.exit_seen(&here);
        t.exit_seen(&here);
        t.exit_seen(&there);
        t.started_elsewhere(&there);
        t.running_here(&there); // its exit was forgotten: not a restart here
        t.running_here(&here);
        t.running_here(&here); // a first start, not a restart
    });
    assert_eq!(
        histogram_len(&values, &series("acpg_restart_seconds", "registry", "")),
        1
    );
}

#[test]
fn a_command_is_timed_from_its_multicast_to_its_application_here() {
    let values = recorded(|| {
        let mut t = ReplicaTelemetry::new(&group(), ME);
        t.multicast(1);
        t.multicast(2);
        t.multicast(3);
        t.outcome(1, true);
        t.outcome(2, false); // refused: not applied
        t.outcome(9, true); // never multicast here
        t.forget_commands();
        t.outcome(3, true);
        t.confchg();
        t.installed(true);
        t.restored();
    });
    let r = "replica";
    assert_eq!(
        histogram_len(&values, &series("acpg_apply_duration_seconds", r, "")),
        1
    );
    assert_eq!(
        histogram_len(&values, &series("acpg_confchg_decision_seconds", r, "")),
        1
    );
    assert_eq!(
        histogram_len(&values, &series("acpg_state_transfer_seconds", r, "")),
        1
    );
}

#[test]
fn a_call_is_recorded_under_its_outcome() {
    let values = recorded(|| {
        let timers = CallTimers::new(&group(), ME);
        timers.start().done(true);
        timers.start().done(true);
        timers.start().done(false);
    });
    let r = "registry";
    assert_eq!(
        histogram_len(
            &values,
            &series("acpg_call_duration_seconds", r, "outcome=ok")
        ),
        2
    );
    assert_eq!(
        histogram_len(
            &values,
            &series("acpg_call_duration_seconds", r, "outcome=error")
        ),
        1
    );
}

#[test]
fn an_election_that_loses_its_leader_keeps_its_gauges_at_zero() {
    let epoch = Epoch {
        ring_seq: 8,
        term: 1_000_003,
    };
    let mut status = ElectionStatus::default();
    status
        .leaders
        .insert("jobs".into(), Leadership { epoch, leader: ME });
    status.acting.insert("jobs".into(), epoch);
    let values = recorded(|| {
        let mut t = ElectionTelemetry::new(&group(), ME);
        let publish = |t: &mut ElectionTelemetry, status: &ElectionStatus| {
            t.publish(ElectionGauges {
                unauthenticated: 0,
                in_flight: 0,
                queued: 0,
                protocol_version: 1,
                status,
            })
        };
        publish(&mut t, &status);
        publish(&mut t, &ElectionStatus::default());
    });
    let gauge = |name: &str| match &values[&series(name, "election", "election=jobs")] {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("acpg_election_leading"), 0.0);
    assert_eq!(gauge("acpg_election_has_leader"), 0.0);
    assert_eq!(gauge("acpg_election_epoch_term"), 0.0);
}

#[test]
fn an_election_leader_shows_its_epoch() {
    let epoch = Epoch {
        ring_seq: 8,
        term: 1_000_003,
    };
    let mut status = ElectionStatus::default();
    status
        .leaders
        .insert("jobs".into(), Leadership { epoch, leader: ME });
    status.acting.insert("jobs".into(), epoch);
    let values = recorded(|| {
        ElectionTelemetry::new(&group(), ME).publish(ElectionGauges {
            unauthenticated: 0,
            in_flight: 0,
            queued: 0,
            protocol_version: 1,
            status: &status,
        });
    });
    let gauge = |name: &str| match &values[&series(name, "election", "election=jobs")] {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("acpg_election_leading"), 1.0);
    assert_eq!(gauge("acpg_election_has_leader"), 1.0);
    assert_eq!(gauge("acpg_election_epoch_term"), 1_000_003.0);
    assert_eq!(gauge("acpg_election_epoch_ring_seq"), 8.0);
}
