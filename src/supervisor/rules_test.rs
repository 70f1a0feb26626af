//! One test per rule of the engine.

use std::collections::BTreeSet;

use super::testing::*;
use super::*;
use crate::transport::{Member, NodeId, Reason};

fn sup(strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new(strategy).intensity(100, 1_000)
}

fn three_workers(strategy: Strategy) -> TreeSpec {
    TreeSpec::new(
        sup(strategy)
            .child(ChildSpec::worker("a", "k"))
            .child(ChildSpec::worker("b", "k"))
            .child(ChildSpec::worker("c", "k")),
    )
}

fn members(n: u32) -> Vec<Member> {
    (1..=n).map(m).collect()
}

// ---- restart types × reasons ------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Exit {
    HostLeft(Reason),
    Reported { normal: bool },
}

fn exit_once(restart: RestartType, how: Exit) -> (Engine, Output, Member) {
    let spec =
        TreeSpec::new(sup(Strategy::OneForOne).child(ChildSpec::worker("w", "k").restart(restart)));
    let all = members(3);
    let (mut e, _) = boot(&all, &spec);
    let (host, _, _) = running(&e, &["w"]).unwrap();
    let out = match how {
        Exit::HostLeft(reason) => {
            let rest: Vec<_> = all.iter().copied().filter(|x| *x != host).collect();
            let mut out = e.handle(change(&rest, 2, &[], &[(host, reason)]));
            if reason == Reason::NodeDown {
                // Quorum is unknown until a report without the lost node.
                let starts = verbs(&out).iter().filter(|(v, _)| *v == "start").count();
                assert_eq!(starts, 0, "nothing starts before a fresh quorum report");
                let stale = Event::QuorumChanged {
                    quorate: true,
                    nodes: all.iter().map(|m| m.node).collect(),
                };
                assert!(
                    verbs(&e.handle(stale)).is_empty(),
                    "a report naming the lost node is stale"
                );
                out.extend(e.handle(Event::QuorumChanged {
                    quorate: true,
                    nodes: rest.iter().map(|m| m.node).collect(),
                }));
            }
            out
        }
        Exit::Reported { normal } => exit(&mut e, &["w"], normal),
    };
    (e, out, host)
}

#[test]
fn each_restart_type_follows_each_exit_reason() {
    use RestartType::*;
    let cases = [
        (Exit::HostLeft(Reason::Leave), [true, false, false]),
        (Exit::HostLeft(Reason::ProcDown), [true, true, false]),
        (Exit::HostLeft(Reason::NodeDown), [true, true, false]),
        (Exit::Reported { normal: true }, [true, false, false]),
        (Exit::Reported { normal: false }, [true, true, false]),
    ];
    for (how, expected) in cases {
        for (restart, restarted) in [Permanent, Transient, Temporary].into_iter().zip(expected) {
            let (e, out, old_host) = exit_once(restart, how);
            let starts = verbs(&out).iter().filter(|(v, _)| *v == "start").count();
            assert_eq!(starts, usize::from(restarted), "{restart:?} after {how:?}");
            match (restarted, status(&e, &["w"]).unwrap()) {
                (true, SlotStatus::Running { host, .. }) => {
                    if let Exit::HostLeft(_) = how {
                        assert_ne!(
                            host, old_host,
                            "{restart:?} after {how:?} restarted on the departed host"
                        );
                    }
                }
                (false, SlotStatus::Stopped) => assert_eq!(restart, Transient),
                (false, SlotStatus::Removed) => assert_eq!(restart, Temporary),
                (_, s) => panic!("{restart:?} after {how:?}: unexpected {s:?}"),
            }
        }
    }
}

// ---- strategies ----------------------------------------------------------

#[test]
fn one_for_one_restarts_only_the_failed_child() {
    let (mut e, _) = boot(&members(3), &three_workers(Strategy::OneForOne));
    let out = exit(&mut e, &["b"], false);
    assert_eq!(verbs(&out), vec![("start", "b".to_owned())]);
}

#[test]
fn one_for_all_stops_all_in_reverse_and_starts_all_in_order() {
    let (mut e, _) = boot(&members(3), &three_workers(Strategy::OneForAll));
    let out = exit(&mut e, &["b"], false);
    let expected: Vec<(&str, String)> = vec![
        ("stop", "c".into()),
        ("stop", "a".into()),
        ("start", "a".into()),
        ("start", "b".into()),
        ("start", "c".into()),
    ];
    assert_eq!(verbs(&out), expected);
    assert!(out.commands.iter().all(
        |c| !matches!(c, Command::StopChild { reason, .. } if *reason != StopReason::SiblingRestart)
    ));
}

#[test]
fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let (mut e, _) = boot(&members(3), &three_workers(Strategy::RestForOne));
    let out = exit(&mut e, &["b"], false);
    let expected: Vec<(&str, String)> = vec![
        ("stop", "c".into()),
        ("start", "b".into()),
        ("start", "c".into()),
    ];
    assert_eq!(verbs(&out), expected);
}

#[test]
fn a_temporary_sibling_stopped_by_one_for_all_is_removed() {
    let spec = TreeSpec::new(
        sup(Strategy::OneForAll)
            .child(ChildSpec::worker("a", "k"))
            .child(ChildSpec::worker("tmp", "k").restart(RestartType::Temporary)),
    );
    let (mut e, _) = boot(&members(2), &spec);
    let out = exit(&mut e, &["a"], false);
    assert_eq!(
        verbs(&out),
        vec![("stop", "tmp".to_owned()), ("start", "a".to_owned())]
    );
    assert_eq!(status(&e, &["tmp"]), Some(SlotStatus::Removed));
}

#[test]
fn a_transient_child_down_after_a_normal_exit_restarts_with_its_siblings() {
    // OTP: one_for_all starts every child of the list again, including a
    // transient one that had exited normally.
    let spec = TreeSpec::new(
        sup(Strategy::OneForAll)
            .child(ChildSpec::worker("a", "k"))
            .child(ChildSpec::worker("tr", "k").restart(RestartType::Transient)),
    );
    let (mut e, _) = boot(&members(2), &spec);
    exit(&mut e, &["tr"], true);
    assert_eq!(status(&e, &["tr"]), Some(SlotStatus::Stopped));
    let out = exit(&mut e, &["a"], false);
    assert_eq!(
        verbs(&out),
        vec![("start", "a".to_owned()), ("start", "tr".to_owned())]
    );
}

// ---- intensity and escalation --------------------------------------------

#[test]
fn more_than_max_restarts_in_the_window_escalates_and_fewer_do_not() {
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(2, 1_000)
            .child(ChildSpec::worker("w", "k")),
    );
    // Spread out: never more than 2 in any 1000 ms window.
    let (mut e, _) = boot(&members(2), &spec);
    for t in [100, 700, 1_300, 1_900, 2_500] {
        e.handle(Event::Tick { now_ms: t });
        let out = exit(&mut e, &["w"], false);
        assert!(
            !out.commands
                .iter()
                .any(|c| matches!(c, Command::Escalated { .. })),
            "at {t}"
        );
    }
    // Three within the window: the third gives up.
    let (mut e, _) = boot(&members(2), &spec);
    e.handle(Event::Tick { now_ms: 10 });
    exit(&mut e, &["w"], false);
    exit(&mut e, &["w"], false);
    let out = exit(&mut e, &["w"], false);
    assert!(matches!(out.commands.as_slice(), [Command::Escalated { tree, .. }] if tree == "t"));
    assert_eq!(e.tree_alive("t"), Some(false));
    assert_eq!(status(&e, &["w"]), Some(SlotStatus::Pending));
    assert!(e.running().is_empty());
}

fn nested(root_intensity: u32) -> TreeSpec {
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForAll)
            .intensity(root_intensity, 10_000)
            .child(ChildSpec::worker("x", "k"))
            .child(ChildSpec::supervisor(
                "sub",
                SupervisorSpec::new(Strategy::OneForOne)
                    .intensity(0, 10_000)
                    .child(ChildSpec::worker("y", "k"))
                    .child(ChildSpec::worker("z", "k")),
            )),
    )
}

#[test]
fn a_nested_supervisor_that_gives_up_is_restarted_by_its_parent_strategy() {
    let (mut e, _) = boot(&members(3), &nested(5));
    let out = exit(&mut e, &["sub", "y"], false);
    // sub gives up (stops z), then the root's one_for_all restarts x and sub.
    let expected: Vec<(&str, String)> = vec![
        ("stop", "sub/z".into()),
        ("stop", "x".into()),
        ("start", "x".into()),
        ("start", "sub/y".into()),
        ("start", "sub/z".into()),
    ];
    assert_eq!(verbs(&out), expected);
    assert!(out.events.contains(&SupervisionEvent::SupervisorEscalated {
        supervisor: path(&["sub"]),
        at: FencingToken {
            epoch: 1,
            seq: e.seq()
        },
    }));
    assert!(!out
        .commands
        .iter()
        .any(|c| matches!(c, Command::Escalated { .. })));
    assert_eq!(e.running().len(), 3);
}

#[test]
fn escalation_through_every_level_reaches_the_application_and_a_new_start_revives() {
    let (mut e, _) = boot(&members(3), &nested(0));
    let out = exit(&mut e, &["sub", "y"], false);
    let escalated: Vec<_> = out
        .events
        .iter()
        .filter_map(|ev| match ev {
            SupervisionEvent::SupervisorEscalated { supervisor, .. } => {
                Some(supervisor.ids.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(escalated, vec![vec!["sub".to_owned()], vec![]]);
    assert!(matches!(out.commands.last(), Some(Command::Escalated { tree, .. }) if tree == "t"));
    assert!(e.running().is_empty());
    assert_eq!(e.tree_alive("t"), Some(false));
    let out = e.handle(started("t", &nested(0), m(2)));
    assert_eq!(verbs(&out).len(), 3);
    assert_eq!(e.tree_alive("t"), Some(true));
}

// ---- placement through the engine ---------------------------------------

#[test]
fn adding_a_sixth_member_moves_about_a_sixth_of_600_children() {
    let mut root = SupervisorSpec::new(Strategy::OneForOne);
    for i in 0..600 {
        root = root.child(ChildSpec::worker(format!("w{i}"), "k"));
    }
    let five = members(5);
    let spec = TreeSpec::new(root);
    let (mut e, _) = boot(&five, &spec);
    assert_eq!(e.running().len(), 600);
    let six = members(6);
    let out = e.handle(change(&six, 2, &[(m(6), Reason::Join)], &[]));
    assert!(
        out.commands.is_empty(),
        "a member that joins hosts nothing yet"
    );
    let out = e.handle(started("t", &spec, m(6)));
    let moved = out
        .commands
        .iter()
        .filter(|c| {
            matches!(
                c,
                Command::StopChild {
                    reason: StopReason::Rebalanced,
                    ..
                }
            )
        })
        .count();
    assert!((70..=130).contains(&moved), "moved {moved} of 600");
    assert!(out.commands.iter().all(|c| match c {
        Command::StartChild { host, .. } => *host == m(6),
        _ => true,
    }));
}

#[test]
fn pinned_singleton_one_per_node_and_every_member_placements() {
    let a = Member::new(1, 10);
    let b = Member::new(1, 11);
    let c = Member::new(2, 10);
    let spec = TreeSpec::new(
        sup(Strategy::OneForOne)
            .child(ChildSpec::worker("pin", "k").placement(Placement::pinned(NodeId(2))))
            .child(ChildSpec::worker("one", "k").placement(Placement::singleton()))
            .child(ChildSpec::worker("node", "k").placement(Placement::one_per_node()))
            .child(ChildSpec::worker("all", "k").placement(Placement::on_every_member())),
    );
    let (mut e, _) = boot(&[a, b, c], &spec);
    assert_eq!(running(&e, &["pin"]).map(|r| r.0), Some(c));
    let one_host = running(&e, &["one"]).unwrap().0;
    let hosts = |e: &Engine, id: &str| -> Vec<Member> {
        e.running()
            .into_iter()
            .filter(|s| s.path.ids == [id])
            .filter_map(|s| match s.status {
                SlotStatus::Running { host, .. } => Some(host),
                _ => None,
            })
            .collect()
    };
    assert_eq!(hosts(&e, "node").len(), 2);
    assert_eq!(hosts(&e, "all"), vec![a, b, c]);

    // A new host gets its own instance and moves neither the singleton nor
    // the pin.
    let d = Member::new(3, 10);
    e.handle(change(&[a, b, c, d], 2, &[(d, Reason::Join)], &[]));
    let out = e.handle(started("t", &spec, d));
    assert_eq!(
        verbs(&out),
        vec![("start", "node".to_owned()), ("start", "all".to_owned())]
    );
    assert_eq!(running(&e, &["one"]).unwrap().0, one_host);

    // The pinned node leaves: the pinned child waits; the member's instance
    // ends with it and is not restarted elsewhere.
    let out = e.handle(change(&[a, b, d], 3, &[], &[(c, Reason::ProcDown)]));
    assert_eq!(status(&e, &["pin"]), Some(SlotStatus::Pending));
    assert_eq!(hosts(&e, "all"), vec![a, b, d]);
    assert_eq!(hosts(&e, "node").len(), 2);
    assert!(verbs(&out)
        .iter()
        .all(|(_, id)| id != "all" && id != "node"));
}

// ---- quorum ---------------------------------------------------------------

fn quorum_tree(policy: QuorumPolicy) -> TreeSpec {
    three_workers(Strategy::OneForOne).quorum_policy(policy)
}

#[test]
fn under_stop_losing_quorum_stops_everything_and_starts_nothing_until_it_returns() {
    let (mut e, _) = boot(&members(3), &quorum_tree(QuorumPolicy::Stop));
    let out = e.handle(Event::QuorumChanged {
        quorate: false,
        nodes: vec![],
    });
    assert_eq!(verbs(&out).iter().filter(|(v, _)| *v == "stop").count(), 3);
    assert!(out.commands.iter().all(|c| matches!(
        c,
        Command::StopChild {
            reason: StopReason::QuorumLost,
            ..
        }
    )));
    assert!(e.running().is_empty());
    let out = e.handle(change(&members(2), 2, &[], &[(m(3), Reason::NodeDown)]));
    assert!(out.commands.is_empty());
    let out = e.handle(Event::QuorumChanged {
        quorate: true,
        nodes: vec![],
    });
    assert_eq!(verbs(&out).iter().filter(|(v, _)| *v == "start").count(), 3);
}

#[test]
fn under_freeze_running_children_stay_but_nothing_restarts_until_quorum_returns() {
    let (mut e, _) = boot(&members(3), &quorum_tree(QuorumPolicy::Freeze));
    let out = e.handle(Event::QuorumChanged {
        quorate: false,
        nodes: vec![],
    });
    assert!(out.commands.is_empty());
    assert_eq!(e.running().len(), 3);
    let out = exit(&mut e, &["a"], false);
    assert!(out.commands.is_empty());
    assert_eq!(status(&e, &["a"]), Some(SlotStatus::Pending));
    let out = e.handle(Event::QuorumChanged {
        quorate: true,
        nodes: vec![],
    });
    assert_eq!(verbs(&out), vec![("start", "a".to_owned())]);
}

#[test]
fn under_ignore_quorum_changes_nothing() {
    let (mut e, _) = boot(&members(3), &quorum_tree(QuorumPolicy::Ignore));
    assert!(e
        .handle(Event::QuorumChanged {
            quorate: false,
            nodes: vec![]
        })
        .commands
        .is_empty());
    let out = exit(&mut e, &["a"], false);
    assert_eq!(verbs(&out), vec![("start", "a".to_owned())]);
}

#[test]
fn an_engine_starts_nothing_before_it_hears_of_quorum() {
    let mut e = Engine::new();
    e.handle(change(&[m(1)], 1, &[(m(1), Reason::Join)], &[]));
    let spec = three_workers(Strategy::OneForOne);
    assert!(e.handle(started("t", &spec, m(1))).commands.is_empty());
    assert_eq!(
        e.handle(Event::QuorumChanged {
            quorate: true,
            nodes: vec![]
        })
        .commands
        .len(),
        3
    );
}

// ---- incarnations, fencing, specs ----------------------------------------

#[test]
fn reports_about_a_stale_incarnation_or_another_host_are_ignored() {
    let (mut e, _) = boot(&members(3), &three_workers(Strategy::OneForAll));
    let (host, old, _) = running(&e, &["a"]).unwrap();
    exit(&mut e, &["a"], false);
    let before = e.clone();
    let out = e.handle(Event::ChildExited {
        path: path(&["a"]),
        incarnation: old,
        host,
        normal: false,
    });
    assert!(out.commands.is_empty());
    assert!(out.events.contains(&SupervisionEvent::Ignored {
        why: IgnoreReason::StaleIncarnation
    }));
    let (host, current, _) = running(&e, &["a"]).unwrap();
    let other = members(3).into_iter().find(|x| *x != host).unwrap();
    let out = e.handle(Event::ChildExited {
        path: path(&["a"]),
        incarnation: current,
        host: other,
        normal: false,
    });
    assert!(out.commands.is_empty());
    assert!(!e.is_current(&path(&["a"]), old, host));
    assert!(e.is_current(&path(&["a"]), current, host));
    // Only the stream position moved.
    assert_eq!(e.seq(), before.seq() + 2);
    let unknown = e.handle(Event::ChildExited {
        path: path(&["nope"]),
        incarnation: current,
        host,
        normal: false,
    });
    assert_eq!(
        unknown.events,
        vec![SupervisionEvent::Ignored {
            why: IgnoreReason::UnknownChild
        }]
    );
}

#[test]
fn successive_incarnations_get_strictly_growing_tokens() {
    let (mut e, _) = boot(&members(3), &three_workers(Strategy::OneForOne));
    let mut last = running(&e, &["b"]).unwrap().2;
    for epoch in 2..6 {
        let (host, _, _) = running(&e, &["b"]).unwrap();
        let rest: Vec<_> = members(3).into_iter().filter(|x| *x != host).collect();
        e.handle(change(&rest, epoch, &[], &[(host, Reason::ProcDown)]));
        e.handle(change(&members(3), epoch, &[(host, Reason::Join)], &[]));
        e.handle(started("t", &three_workers(Strategy::OneForOne), host));
        exit(&mut e, &["b"], false);
        let now = running(&e, &["b"]).unwrap().2;
        assert!(now > last, "{now} after {last}");
        last = now;
    }
    // An epoch that goes back is raised: tokens keep growing.
    e.handle(change(&members(3), 1, &[], &[]));
    exit(&mut e, &["b"], false);
    assert!(running(&e, &["b"]).unwrap().2 > last);
}

#[test]
fn a_later_start_with_another_spec_is_refused_and_the_same_spec_is_idempotent() {
    let spec = three_workers(Strategy::OneForOne);
    let (mut e, _) = boot(&members(2), &spec);
    let other = three_workers(Strategy::OneForAll);
    let out = e.handle(started("t", &other, m(2)));
    assert_eq!(
        out.commands,
        vec![Command::RefuseTree {
            name: "t".into(),
            by: m(2),
            why: Refusal::SpecMismatch {
                expected: spec.fingerprint(),
                got: other.fingerprint()
            }
        }]
    );
    assert_eq!(e.tree_fingerprint("t"), Some(spec.fingerprint()));
    let out = e.handle(started("t", &spec, m(2)));
    assert!(out.commands.is_empty());
    let mut forged = started("u", &spec, m(2));
    if let Event::TreeStarted { fingerprint, .. } = &mut forged {
        *fingerprint = Fingerprint(1);
    }
    assert!(matches!(
        e.handle(forged).commands.as_slice(),
        [Command::RefuseTree {
            why: Refusal::FingerprintMismatch { .. },
            ..
        }]
    ));
    let bad =
        TreeSpec::new(SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("", "k")));
    assert!(matches!(
        e.handle(started("v", &bad, m(2))).commands.as_slice(),
        [Command::RefuseTree {
            why: Refusal::InvalidSpec(_),
            ..
        }]
    ));
    assert_eq!(e.tree_fingerprint("u"), None);
}

#[test]
fn stream_time_never_goes_back() {
    let mut e = Engine::new();
    e.handle(Event::Tick { now_ms: 500 });
    e.handle(Event::Tick { now_ms: 100 });
    assert_eq!(e.now_ms(), 500);
}

#[test]
fn state_and_events_round_trip_through_the_wire_codec() {
    use bincode::Options;
    let codec = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(1 << 20);
    let (mut e, _) = boot(&members(3), &nested(3));
    exit(&mut e, &["sub", "y"], false);
    let bytes = codec.serialize(&e).unwrap();
    let back: Engine = codec.deserialize(&bytes).unwrap();
    assert_eq!(back, e);
    let ev = started("t", &nested(3), m(1));
    let back: Event = codec.deserialize(&codec.serialize(&ev).unwrap()).unwrap();
    assert_eq!(back, ev);
}

// ---- merge ------------------------------------------------------------------

/// `all` joined, quorate, every one of them a host of the tree `t`.
fn quorate_cluster(all: &[Member], spec: &TreeSpec) -> Cluster {
    let mut cl = Cluster::default();
    let joined: Vec<_> = all.iter().map(|x| (*x, Reason::Join)).collect();
    cl.feed(all, &change(all, 1, &joined, &[]));
    cl.feed(all, &e_quorum());
    for x in all {
        cl.feed(all, &started("t", spec, *x));
    }
    cl
}

/// Every member of `side`, with `reason`.
fn changes(side: &[Member], reason: Reason) -> Vec<(Member, Reason)> {
    side.iter().map(|x| (*x, reason)).collect()
}

/// Four members split 2/2 under `Ignore` (so both halves run everything),
/// then merge. Returns the cluster after the merge.
fn split_and_merge(spec: &TreeSpec) -> Cluster {
    let all = members(4);
    let (left_side, right_side) = (vec![m(1), m(2)], vec![m(3), m(4)]);
    let mut cl = quorate_cluster(&all, spec);

    let down = |side: &[Member]| changes(side, Reason::NodeDown);
    let up = |side: &[Member]| changes(side, Reason::NodeUp);
    cl.feed(&left_side, &change(&left_side, 2, &[], &down(&right_side)));
    cl.feed(&right_side, &change(&right_side, 2, &[], &down(&left_side)));
    // Both halves now run every child: the split brain the merge must end.
    assert!(cl.instances().values().all(|n| *n == 2));

    cl.feed(&left_side, &change(&all, 3, &up(&right_side), &[]));
    cl.feed(&right_side, &change(&all, 3, &up(&left_side), &[]));
    assert!(cl.engines.values().all(Engine::is_merging));
    let reps: Vec<Member> = all
        .iter()
        .copied()
        .filter(|x| cl.engines[x].should_offer(*x))
        .collect();
    assert_eq!(reps, vec![m(1), m(3)]);
    let offers: Vec<Event> = reps
        .iter()
        .map(|r| Event::StateOffered {
            from: *r,
            offer: cl.engines[r].merge_offer().unwrap(),
        })
        .collect();
    // A tick arrives during the round: buffered, then replayed.
    cl.feed(&all, &Event::Tick { now_ms: 50 });
    for offer in &offers {
        cl.feed(&all, offer);
    }
    cl
}

#[test]
fn a_merge_leaves_every_child_running_once_and_every_engine_equal() {
    let spec = three_workers(Strategy::OneForOne).quorum_policy(QuorumPolicy::Ignore);
    let cl = split_and_merge(&spec);
    let first = &cl.engines[&m(1)];
    assert!(!first.is_merging());
    assert!(cl.engines.values().all(|e| e == first));
    assert_eq!(first.now_ms(), 50);
    let instances = cl.instances();
    assert_eq!(instances.len(), 3);
    assert!(instances.values().all(|n| *n == 1), "{instances:?}");
    // What runs is exactly what the engines believe runs.
    for c in first.running() {
        let SlotStatus::Running {
            host, incarnation, ..
        } = c.status
        else {
            unreachable!()
        };
        assert!(cl.actors[&host].contains(&(c.path.clone(), c.slot, incarnation)));
    }
}

#[test]
fn a_merge_keeps_the_first_started_spec_and_stops_the_other_tree() {
    let all = members(2);
    let mut cl = Cluster::default();
    cl.feed(
        &all,
        &change(&all, 1, &[(m(1), Reason::Join), (m(2), Reason::Join)], &[]),
    );
    cl.feed(
        &all,
        &Event::QuorumChanged {
            quorate: true,
            nodes: vec![],
        },
    );
    cl.feed(
        &[m(1)],
        &change(&[m(1)], 2, &[], &[(m(2), Reason::NodeDown)]),
    );
    cl.feed(
        &[m(2)],
        &change(&[m(2)], 2, &[], &[(m(1), Reason::NodeDown)]),
    );
    let a = three_workers(Strategy::OneForOne).quorum_policy(QuorumPolicy::Ignore);
    let b = three_workers(Strategy::RestForOne).quorum_policy(QuorumPolicy::Ignore);
    cl.feed(&[m(1)], &started("t", &a, m(1)));
    cl.feed(&[m(2)], &started("t", &b, m(2)));
    cl.feed(&[m(1)], &change(&all, 3, &[(m(2), Reason::NodeUp)], &[]));
    cl.feed(&[m(2)], &change(&all, 3, &[(m(1), Reason::NodeUp)], &[]));
    for r in all.clone() {
        let offer = cl.engines[&r].merge_offer().unwrap();
        cl.feed(&all, &Event::StateOffered { from: r, offer });
    }
    // Both trees were started at the same stream position; the smaller
    // starter (m(1)) wins.
    let e = &cl.engines[&m(1)];
    assert_eq!(e, &cl.engines[&m(2)]);
    assert_eq!(e.tree_fingerprint("t"), Some(a.fingerprint()));
    assert!(cl.instances().values().all(|n| *n == 1));
    assert_eq!(cl.instances().len(), 3);
}

#[test]
fn an_offer_outside_a_merge_is_ignored() {
    let (mut e, _) = boot(&members(2), &three_workers(Strategy::OneForOne));
    let offer = {
        let mut other = e.clone();
        other.handle(change(&members(3), 2, &[(m(3), Reason::NodeUp)], &[]));
        other.merge_offer().unwrap()
    };
    let out = e.handle(Event::StateOffered { from: m(1), offer });
    assert_eq!(
        out.events,
        vec![SupervisionEvent::Ignored {
            why: IgnoreReason::UnexpectedOffer
        }]
    );
}

/// Three members split `{m1} | {m2, m3}`, merge, and the two-member side
/// offers at once while `m1`'s offer is still on its way. Returns the
/// cluster and `m1`'s offer, not yet delivered.
fn merge_with_one_offer_in(spec: &TreeSpec) -> (Cluster, Event) {
    let all = members(3);
    let (one, two) = (vec![m(1)], vec![m(2), m(3)]);
    let mut cl = quorate_cluster(&all, spec);
    let down = |side: &[Member]| changes(side, Reason::NodeDown);
    let up = |side: &[Member]| changes(side, Reason::NodeUp);
    cl.feed(&one, &change(&one, 2, &[], &down(&two)));
    cl.feed(&two, &change(&two, 2, &[], &down(&one)));
    cl.feed(&one, &change(&all, 3, &up(&two), &[]));
    cl.feed(&two, &change(&all, 3, &up(&one), &[]));
    let late = Event::StateOffered {
        from: m(1),
        offer: cl.engines[&m(1)].merge_offer().unwrap(),
    };
    let early = Event::StateOffered {
        from: m(2),
        offer: cl.engines[&m(2)].merge_offer().unwrap(),
    };
    cl.feed(&all, &early);
    (cl, late)
}

/// A side that leaves during a merge round and comes back within it may
/// have moved on while it was away: the offer it made before it left no
/// longer speaks for it. Here `m1`'s round stays open across a second
/// partition and its heal (its own offer is late), while the other side
/// settles its round alone and starts a tree. The stale offer used to
/// cover that side, its fresh one was refused (one offer per sender), and
/// the tree was lost on `m1` — the member whose state the group keeps.
#[test]
fn an_offer_made_before_its_side_left_and_came_back_speaks_for_it_no_more() {
    let spec = three_workers(Strategy::OneForOne).quorum_policy(QuorumPolicy::Ignore);
    let (mut cl, late) = merge_with_one_offer_in(&spec);
    let all = members(3);
    let (one, two) = (vec![m(1)], vec![m(2), m(3)]);
    cl.feed(
        &one,
        &change(
            &one,
            4,
            &[],
            &[(m(2), Reason::NodeDown), (m(3), Reason::NodeDown)],
        ),
    );
    cl.feed(&two, &change(&two, 4, &[], &[(m(1), Reason::NodeDown)]));
    assert!(cl.engines[&m(1)].is_merging(), "m1 still waits for itself");
    assert!(!cl.engines[&m(2)].is_merging(), "the other side settled");
    cl.feed(&two, &started("u", &spec, m(2)));
    cl.feed(
        &one,
        &change(
            &all,
            5,
            &[(m(2), Reason::NodeUp), (m(3), Reason::NodeUp)],
            &[],
        ),
    );
    cl.feed(&two, &change(&all, 5, &[(m(1), Reason::NodeUp)], &[]));
    cl.feed(&all, &late);
    assert!(
        cl.engines[&m(1)].is_merging(),
        "m1's round waits for the returning side's fresh offer"
    );
    assert!(cl.engines[&m(2)].should_offer(m(2)));
    let fresh = Event::StateOffered {
        from: m(2),
        offer: cl.engines[&m(2)].merge_offer().unwrap(),
    };
    cl.feed(&all, &fresh);
    // The two sides settled different rounds (`m1`'s spans more of the
    // stream, so its positions run ahead); the group keeps one side's
    // engine and hands it to the other. What runs where agrees.
    let placed = |e: &Engine| -> Vec<(ChildPath, SlotStatus)> {
        e.children()
            .into_iter()
            .map(|c| match c.status {
                SlotStatus::Running {
                    host, incarnation, ..
                } => (
                    c.path,
                    SlotStatus::Running {
                        host,
                        incarnation,
                        token: FencingToken::default(),
                    },
                ),
                other => (c.path, other),
            })
            .collect()
    };
    for x in &all {
        let e = &cl.engines[x];
        assert!(!e.is_merging(), "{x} settled");
        assert_eq!(e.tree_fingerprint("u"), Some(spec.fingerprint()), "on {x}");
        assert_eq!(placed(e), placed(&cl.engines[&m(1)]), "on {x}");
    }
    assert!(
        cl.instances().values().all(|n| *n == 1),
        "{:?}",
        cl.instances()
    );
}

/// The same when only part of a side goes away and comes back: the
/// member that stayed offers again, but its offer, made before the other
/// left, cannot speak for the one that returns; only an offer from the
/// returning side can.
#[test]
fn a_member_that_came_back_during_a_merge_is_covered_only_by_its_new_side() {
    let spec = three_workers(Strategy::OneForOne).quorum_policy(QuorumPolicy::Ignore);
    let (mut cl, late) = merge_with_one_offer_in(&spec);
    let all = members(3);
    let (stay, away) = (vec![m(1), m(2)], vec![m(3)]);
    cl.feed(&stay, &change(&stay, 4, &[], &[(m(3), Reason::NodeDown)]));
    cl.feed(
        &away,
        &change(
            &away,
            4,
            &[],
            &[(m(1), Reason::NodeDown), (m(2), Reason::NodeDown)],
        ),
    );
    assert!(!cl.engines[&m(3)].is_merging(), "m3 settled alone");
    cl.feed(&away, &started("u", &spec, m(3)));
    cl.feed(&stay, &change(&all, 5, &[(m(3), Reason::NodeUp)], &[]));
    cl.feed(
        &away,
        &change(
            &all,
            5,
            &[(m(1), Reason::NodeUp), (m(2), Reason::NodeUp)],
            &[],
        ),
    );
    // The offers start over: `m3`'s side begins a round that needs them.
    assert!(cl.engines[&m(2)].should_offer(m(2)));
    let again = Event::StateOffered {
        from: m(2),
        offer: cl.engines[&m(2)].merge_offer().unwrap(),
    };
    cl.feed(&all, &late);
    cl.feed(&all, &again);
    assert!(
        cl.engines.values().all(Engine::is_merging),
        "m2's offer lists m3 but cannot speak for it"
    );
    assert!(cl.engines[&m(3)].should_offer(m(3)));
    let fresh = Event::StateOffered {
        from: m(3),
        offer: cl.engines[&m(3)].merge_offer().unwrap(),
    };
    cl.feed(&all, &fresh);
    for x in &all {
        let e = &cl.engines[x];
        assert!(!e.is_merging(), "{x} settled");
        assert_eq!(e.tree_fingerprint("u"), Some(spec.fingerprint()), "on {x}");
    }
    assert!(
        cl.instances().values().all(|n| *n == 1),
        "{:?}",
        cl.instances()
    );
}

// ---- hosts: who said it can build what ----------------------------------

fn waits_for_host(out: &Output) -> Vec<(String, String)> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SupervisionEvent::ChildWaitsForHost { path, kind } => {
                Some((path.ids.join("/"), kind.clone()))
            }
            _ => None,
        })
        .collect()
}

/// A member in the view that never started the tree (a client, a tool)
/// hosts none of it, whatever placement would give it; when the hosts are
/// gone the children wait, and a member that starts the tree takes them.
#[test]
fn only_members_that_started_the_tree_host_it() {
    let all = members(3);
    let mut root = sup(Strategy::OneForOne);
    for i in 0..24 {
        root = root.child(ChildSpec::worker(format!("w{i}"), "k"));
    }
    let spec = TreeSpec::new(root).quorum_policy(QuorumPolicy::Ignore);
    let mut e = Engine::new();
    let joined: Vec<_> = all.iter().map(|x| (*x, Reason::Join)).collect();
    e.handle(change(&all, 1, &joined, &[]));
    e.handle(started("t", &spec, m(1)));
    e.handle(started("t", &spec, m(2)));
    let hosts: BTreeSet<Member> = e
        .running()
        .iter()
        .filter_map(|c| match c.status {
            SlotStatus::Running { host, .. } => Some(host),
            _ => None,
        })
        .collect();
    assert_eq!(e.running().len(), 24);
    assert_eq!(hosts, BTreeSet::from([m(1), m(2)]), "m(3) never started it");

    let out = e.handle(change(
        &[m(3)],
        2,
        &[],
        &[(m(1), Reason::ProcDown), (m(2), Reason::ProcDown)],
    ));
    assert!(verbs(&out).iter().all(|(v, _)| *v != "start"));
    assert!(e.running().is_empty());
    assert_eq!(
        waits_for_host(&out).len(),
        24,
        "each waiting child is reported"
    );
    assert_eq!(status(&e, &["w0"]), Some(SlotStatus::Pending));
    // Reported once: a later pass says nothing new.
    let out = e.handle(Event::Tick { now_ms: 1 });
    assert!(waits_for_host(&out).is_empty());
    let out = e.handle(e_quorum());
    assert!(waits_for_host(&out).is_empty());

    let out = e.handle(started("t", &spec, m(3)));
    assert_eq!(verbs(&out).len(), 24);
    assert_eq!(e.running().len(), 24);
}

/// An engine that saw `all` join and quorum, and no tree yet.
fn quorate_engine(all: &[Member]) -> Engine {
    let mut e = Engine::new();
    let joined: Vec<_> = all.iter().map(|x| (*x, Reason::Join)).collect();
    e.handle(change(all, 1, &joined, &[]));
    e.handle(e_quorum());
    e
}

fn e_quorum() -> Event {
    Event::QuorumChanged {
        quorate: true,
        nodes: vec![],
    }
}

/// A kind nobody can build (a typo in the spec, or members that only
/// take part) leaves the child waiting, reported, and never `Running`.
#[test]
fn a_kind_nobody_can_build_waits_and_says_so() {
    let all = members(2);
    let spec = TreeSpec::new(
        sup(Strategy::OneForOne)
            .child(ChildSpec::worker("ok", "w"))
            .child(ChildSpec::worker("typo", "wrker")),
    );
    let mut e = quorate_engine(&all);
    let start = |by: Member, kinds: &[&str]| Event::TreeStarted {
        name: "t".into(),
        fingerprint: spec.fingerprint(),
        spec: spec.clone(),
        by,
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
    };
    let out = e.handle(start(m(1), &["w", "worker"]));
    assert_eq!(verbs(&out), vec![("start", "ok".to_owned())]);
    assert_eq!(
        waits_for_host(&out),
        vec![("typo".to_owned(), "wrker".to_owned())]
    );
    assert_eq!(status(&e, &["typo"]), Some(SlotStatus::Pending));
    // A member that takes part without hosting changes nothing.
    let out = e.handle(start(m(2), &[]));
    assert!(verbs(&out).is_empty() && waits_for_host(&out).is_empty());
    // A member that can build it: it starts there.
    let out = e.handle(start(m(2), &["wrker"]));
    assert_eq!(verbs(&out), vec![("start", "typo".to_owned())]);
    assert_eq!(running(&e, &["typo"]).map(|r| r.0), Some(m(2)));
}

/// A member that starts the tree after the others is its newest host: it
/// takes its share of `Any` children, and no singleton moves to it even
/// if it has been in the view longest.
#[test]
fn a_late_host_moves_no_singleton() {
    let all = members(3);
    let spec = TreeSpec::new(
        sup(Strategy::OneForOne)
            .child(ChildSpec::worker("one", "k").placement(Placement::singleton())),
    );
    let mut e = quorate_engine(&all);
    e.handle(started("t", &spec, m(3)));
    e.handle(started("t", &spec, m(2)));
    let out = e.handle(started("t", &spec, m(1)));
    assert!(verbs(&out).is_empty(), "{:?}", verbs(&out));
    assert_eq!(running(&e, &["one"]).map(|r| r.0), Some(m(3)));
}
