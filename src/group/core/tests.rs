use super::*;
use crate::group::messages::RemoteFailure;
use proptest::prelude::*;

fn m(node: u32, pid: u32) -> Member {
    Member::new(node, pid)
}

fn ch(member: Member, reason: Reason) -> MemberChange {
    MemberChange { member, reason }
}

fn register(name: &str, token: u64) -> Inbound {
    Inbound::Registry(RegistryOp::Register {
        name: name.into(),
        token,
    })
}

fn events(cmds: &[Command]) -> Vec<GroupEvent> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn snapshot_of(cmds: &[Command]) -> Option<Snapshot> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::Snapshot(s)) => Some((**s).clone()),
        _ => None,
    })
}

fn request_of(cmds: &[Command]) -> Option<Inbound> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::SyncRequest(r)) => Some(Inbound::SyncRequest(r.clone())),
        _ => None,
    })
}

/// A core that joined alone, then saw `others` join fresh.
fn founded(local: Member) -> GroupCore {
    let mut core = GroupCore::new(local);
    let cmds = core.handle_confchg(&[local], &[ch(local, Reason::Join)], &[]);
    assert!(events(&cmds).contains(&GroupEvent::Ready));
    core
}

#[test]
fn first_member_is_ready_at_once() {
    let a = m(1, 10);
    let core = founded(a);
    assert!(core.is_synced());
    assert_eq!(core.view(), &[a]);
}

#[test]
fn members_that_join_together_into_an_empty_group_all_start_ready() {
    let all = [m(1, 1), m(2, 2), m(3, 3)];
    let joined: Vec<_> = all.iter().map(|x| ch(*x, Reason::Join)).collect();
    for local in all {
        let mut core = GroupCore::new(local);
        let cmds = core.handle_confchg(&all, &joined, &[]);
        assert!(events(&cmds).contains(&GroupEvent::Ready));
        assert!(snapshot_of(&cmds).is_none());
    }
}

#[test]
fn first_registration_in_the_order_wins_everywhere() {
    let (a, b) = (m(1, 1), m(2, 2));
    let joined = [ch(a, Reason::Join), ch(b, Reason::Join)];
    let mut cores = [GroupCore::new(a), GroupCore::new(b)];
    for core in &mut cores {
        core.handle_confchg(&[a, b], &joined, &[]);
    }
    for core in &mut cores {
        let first = core.handle_message(a, register("x", 7));
        let second = core.handle_message(b, register("x", 9));
        if core.local == a {
            assert!(first.contains(&Command::RegisterDone {
                token: 7,
                result: Ok(())
            }));
        } else {
            assert!(second.contains(&Command::RegisterDone {
                token: 9,
                result: Err(a)
            }));
        }
        assert_eq!(core.lookup("x"), Some(a));
    }
    assert_eq!(cores[0], {
        let mut c = cores[1].clone();
        c.local = a;
        c
    });
}

#[test]
fn names_of_a_member_that_leaves_drop_with_its_reason() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut core = GroupCore::new(a);
    core.handle_confchg(&[a, b], &[ch(a, Reason::Join), ch(b, Reason::Join)], &[]);
    core.handle_message(b, register("svc", 1));
    core.handle_message(a, register("mine", 2));
    let cmds = core.handle_confchg(&[a], &[], &[ch(b, Reason::ProcDown)]);
    assert!(events(&cmds).contains(&GroupEvent::NameDropped {
        name: "svc".into(),
        host: b,
        reason: NameDropReason::HostLeft(Reason::ProcDown),
    }));
    assert_eq!(core.lookup("svc"), None);
    assert_eq!(core.lookup("mine"), Some(a));
}

#[test]
fn a_joiner_gets_the_state_at_its_request_and_replays_what_followed() {
    let (a, j) = (m(1, 1), m(2, 2));
    let mut old = founded(a);
    old.handle_message(a, register("before", 1));

    let mut joiner = GroupCore::new(j);
    let view = [a, j];
    let join = [ch(j, Reason::Join)];
    assert!(request_of(&old.handle_confchg(&view, &join, &[])).is_none());
    let cmds = joiner.handle_confchg(&view, &join, &[]);
    assert!(!events(&cmds).contains(&GroupEvent::Ready));
    let ask = request_of(&cmds).expect("the joiner asks for the state");

    // Delivered before the request: covered by the snapshot.
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, register("early", 2));
    }
    joiner.handle_message(j, ask.clone());
    let snap = snapshot_of(&old.handle_message(j, ask)).expect("the only old member answers");
    // Delivered between the request and the snapshot: replayed.
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, register("late", 3));
    }
    assert!(
        joiner.lookup("before").is_none(),
        "waiting members answer nothing yet"
    );
    for core in [&mut old, &mut joiner] {
        let cmds = core.handle_message(a, Inbound::Snapshot(snap.clone()));
        if core.local == j {
            assert!(events(&cmds).contains(&GroupEvent::Ready));
        }
    }
    assert!(joiner.is_synced());
    assert_eq!(joiner.names(), old.names());
    assert_eq!(joiner.names().len(), 3);
    assert_eq!(joiner, {
        let mut c = old.clone();
        c.local = j;
        c.nonce = joiner.nonce;
        c
    });
}

#[test]
fn an_answer_overtaken_by_a_confchg_is_void_everywhere_and_the_joiner_asks_again() {
    let (a, b, j) = (m(1, 1), m(2, 2), m(3, 3));
    let start = [ch(a, Reason::Join), ch(b, Reason::Join)];
    let mut ca = GroupCore::new(a);
    let mut cb = GroupCore::new(b);
    ca.handle_confchg(&[a, b], &start, &[]);
    cb.handle_confchg(&[a, b], &start, &[]);
    for c in [&mut ca, &mut cb] {
        c.handle_message(b, register("n", 1));
    }
    let mut cj = GroupCore::new(j);
    let view = [a, b, j];
    let join = [ch(j, Reason::Join)];
    ca.handle_confchg(&view, &join, &[]);
    cb.handle_confchg(&view, &join, &[]);
    let ask1 = request_of(&cj.handle_confchg(&view, &join, &[])).unwrap();
    cj.handle_message(j, ask1.clone());
    assert!(snapshot_of(&cb.handle_message(j, ask1.clone())).is_none());
    let from_a = snapshot_of(&ca.handle_message(j, ask1)).expect("lowest synced member answers");

    // `a` dies before its answer is delivered.
    let view2 = [b, j];
    let gone = [ch(a, Reason::NodeDown)];
    cb.handle_confchg(&view2, &[], &gone);
    let ask2 = request_of(&cj.handle_confchg(&view2, &[], &gone)).expect("asks again");
    // The old answer (already in flight) lands first: void for both.
    assert!(cj
        .handle_message(a, Inbound::Snapshot(from_a.clone()))
        .is_empty());
    cb.handle_message(a, Inbound::Snapshot(from_a));
    assert!(!cj.is_synced());
    cj.handle_message(j, ask2.clone());
    let from_b = snapshot_of(&cb.handle_message(j, ask2)).expect("b takes over");
    cj.handle_message(b, Inbound::Snapshot(from_b.clone()));
    cb.handle_message(b, Inbound::Snapshot(from_b));
    assert!(cj.is_synced());
    assert_eq!(cj.names(), cb.names());
    assert_eq!(cj.sync, cb.sync);
}

#[test]
fn after_a_merge_the_side_with_the_lowest_member_keeps_the_names() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut ca = founded(a);
    let mut cb = founded(b);
    ca.handle_message(a, register("shared", 1));
    ca.handle_message(a, register("only-a", 2));
    cb.handle_message(b, register("shared", 3));
    cb.handle_message(b, register("only-b", 4));

    let view = [a, b];
    let sa = ca.handle_confchg(&view, &[ch(b, Reason::NodeUp)], &[]);
    assert!(request_of(&sa).is_none());
    let ask = request_of(&cb.handle_confchg(&view, &[ch(a, Reason::NodeUp)], &[]))
        .expect("the other side asks for the state");
    cb.handle_message(b, ask.clone());
    let snap = snapshot_of(&ca.handle_message(b, ask)).expect("primary side answers");
    ca.handle_message(a, Inbound::Snapshot(snap.clone()));
    let cmds = cb.handle_message(a, Inbound::Snapshot(snap));
    assert!(cmds.contains(&Command::Reclaim {
        name: "only-b".into()
    }));
    assert!(events(&cmds).contains(&GroupEvent::NameDropped {
        name: "shared".into(),
        host: b,
        reason: NameDropReason::LostInMerge,
    }));
    assert_eq!(ca.names(), cb.names());
    assert_eq!(cb.lookup("shared"), Some(a));
    assert_eq!(ca.sync, cb.sync);
}

#[test]
fn calls_end_with_a_reply_a_missing_name_or_a_departed_host() {
    let (a, h) = (m(1, 1), m(2, 2));
    let mut core = GroupCore::new(a);
    core.handle_confchg(&[a, h], &[ch(a, Reason::Join), ch(h, Reason::Join)], &[]);
    core.handle_message(h, register("svc", 1));
    let req = |id, target: &str| {
        Inbound::Request(Request {
            id,
            target: target.into(),
            type_tag: "t".into(),
            want_reply: true,
            fence: None,
            payload: vec![],
        })
    };
    assert_eq!(
        core.handle_message(a, req(1, "nobody")),
        vec![Command::CallDone {
            id: 1,
            outcome: Err(CallError::NoSuchName("nobody".into()))
        }]
    );
    assert!(core.handle_message(a, req(2, "svc")).is_empty());
    let reply = Inbound::Reply(Reply {
        id: 2,
        to: a,
        outcome: Ok(vec![42]),
    });
    // A reply from anyone but the host is ignored.
    assert!(core.handle_message(a, reply.clone()).is_empty());
    assert_eq!(
        core.handle_message(h, reply),
        vec![Command::CallDone {
            id: 2,
            outcome: Ok(vec![42])
        }]
    );
    core.handle_message(a, req(3, "svc"));
    let cmds = core.handle_confchg(&[a], &[], &[ch(h, Reason::ProcDown)]);
    assert!(cmds.contains(&Command::CallDone {
        id: 3,
        outcome: Err(CallError::HostLeft {
            host: h,
            reason: Reason::ProcDown
        })
    }));
}

#[test]
fn the_host_is_handed_requests_for_its_names_and_errors_travel_back() {
    let (a, h) = (m(1, 1), m(2, 2));
    let mut host = GroupCore::new(h);
    host.handle_confchg(&[a, h], &[ch(a, Reason::Join), ch(h, Reason::Join)], &[]);
    host.handle_message(h, register("svc", 1));
    let request = Request {
        id: 5,
        target: "svc".into(),
        type_tag: "t".into(),
        want_reply: true,
        fence: None,
        payload: vec![1],
    };
    assert_eq!(
        host.handle_message(a, Inbound::Request(request.clone())),
        vec![Command::Deliver { from: a, request }]
    );
    let mut caller = GroupCore::new(a);
    caller.handle_confchg(&[a, h], &[ch(a, Reason::Join), ch(h, Reason::Join)], &[]);
    caller.handle_message(h, register("svc", 1));
    caller.handle_message(
        a,
        Inbound::Request(Request {
            id: 6,
            target: "svc".into(),
            type_tag: "t".into(),
            want_reply: true,
            fence: None,
            payload: vec![],
        }),
    );
    let cmds = caller.handle_message(
        h,
        Inbound::Reply(Reply {
            id: 6,
            to: a,
            outcome: Err(RemoteFailure::UnknownType("t".into())),
        }),
    );
    assert_eq!(
        cmds,
        vec![Command::CallDone {
            id: 6,
            outcome: Err(CallError::Remote(RemoteFailure::UnknownType("t".into())))
        }]
    );
}

// ---- property: members fed the same ordered stream agree -------------------

#[derive(Debug, Clone)]
enum Step {
    Register { who: usize, name: u8 },
    Unregister { who: usize, name: u8 },
    Join,
    Leave { who: usize, reason: Reason },
    DeliverPending,
}

fn step() -> impl Strategy<Value = Step> {
    let reason = prop_oneof![
        Just(Reason::Leave),
        Just(Reason::ProcDown),
        Just(Reason::NodeDown)
    ];
    prop_oneof![
        4 => (0usize..8, 0u8..6).prop_map(|(who, name)| Step::Register { who, name }),
        1 => (0usize..8, 0u8..6).prop_map(|(who, name)| Step::Unregister { who, name }),
        2 => Just(Step::Join),
        2 => (0usize..8, reason).prop_map(|(who, reason)| Step::Leave { who, reason }),
        3 => Just(Step::DeliverPending),
    ]
}

fn outgoing(from: Member, cmds: Vec<Command>) -> Vec<(Member, Inbound)> {
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::Mcast(Outgoing::Snapshot(s)) => Some((from, Inbound::Snapshot(*s))),
            Command::Mcast(Outgoing::SyncRequest(r)) => Some((from, Inbound::SyncRequest(r))),
            _ => None,
        })
        .collect()
}

/// A tiny totally ordered group: every step is delivered to every member of
/// the view at once; snapshots the cores ask for are multicast later, so
/// confchgs can overtake them.
struct Harness {
    cores: Vec<GroupCore>,
    pending: Vec<(Member, Inbound)>,
    next_pid: u32,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            cores: Vec::new(),
            pending: Vec::new(),
            next_pid: 1,
        };
        h.join();
        h
    }

    fn view(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self.cores.iter().map(|c| c.local).collect();
        v.sort();
        v
    }

    fn join(&mut self) {
        let new = Member::new(self.next_pid % 3 + 1, self.next_pid);
        self.next_pid += 1;
        self.cores.push(GroupCore::new(new));
        let view = self.view();
        let joined = [ch(new, Reason::Join)];
        self.confchg(&view, &joined, &[]);
    }

    fn confchg(&mut self, view: &[Member], joined: &[MemberChange], left: &[MemberChange]) {
        let mut sends = Vec::new();
        for core in &mut self.cores {
            sends.extend(outgoing(
                core.local,
                core.handle_confchg(view, joined, left),
            ));
        }
        self.pending.extend(sends);
    }

    fn deliver(&mut self, from: Member, msg: Inbound) {
        let mut sends = Vec::new();
        for core in &mut self.cores {
            sends.extend(outgoing(core.local, core.handle_message(from, msg.clone())));
        }
        self.pending.extend(sends);
    }

    fn run(&mut self, step: Step) {
        let n = self.cores.len();
        match step {
            Step::Register { who, name } => {
                let from = self.cores[who % n].local;
                self.deliver(from, register(&format!("n{name}"), 0));
            }
            Step::Unregister { who, name } => {
                let from = self.cores[who % n].local;
                self.deliver(
                    from,
                    Inbound::Registry(RegistryOp::Unregister {
                        name: format!("n{name}"),
                    }),
                );
            }
            Step::Join => self.join(),
            Step::Leave { who, reason } => {
                if n > 1 {
                    let gone = self.cores.remove(who % n).local;
                    let view = self.view();
                    self.pending.retain(|(from, _)| *from != gone);
                    self.confchg(&view, &[], &[ch(gone, reason)]);
                }
            }
            Step::DeliverPending => {
                // Answers to requests delivered now go out in a later round.
                for (from, msg) in std::mem::take(&mut self.pending) {
                    self.deliver(from, msg);
                }
            }
        }
    }

    fn check_synced_agree(&self) -> Result<(), TestCaseError> {
        let synced: Vec<&GroupCore> = self.cores.iter().filter(|c| c.is_synced()).collect();
        prop_assert!(!synced.is_empty(), "some member always holds the state");
        for c in &synced {
            prop_assert_eq!(c.names(), synced[0].names());
            prop_assert_eq!(&c.sync, &synced[0].sync);
            for host in c.names().values() {
                prop_assert!(
                    c.view().contains(host),
                    "a name lives on a member of the view"
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn members_fed_the_same_stream_hold_the_same_registry(steps in proptest::collection::vec(step(), 1..60)) {
        let mut h = Harness::new();
        for s in steps {
            h.run(s);
            h.check_synced_agree()?;
        }
        // Once requests and answers land, every member holds the state.
        for _ in 0..3 {
            h.run(Step::DeliverPending);
        }
        prop_assert!(h.cores.iter().all(|c| c.is_synced()));
        h.check_synced_agree()?;
    }
}

proptest! {
    /// Skipping a request the core does not want changes nothing: the core
    /// would have returned no command and kept its state.
    #[test]
    fn an_unwanted_request_is_a_no_op(
        from_node in 1u32..4,
        target in prop::sample::select(vec!["svc", "other", "nobody"]),
        want_reply in any::<bool>(),
        synced in any::<bool>(),
    ) {
        let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
        let mut core = GroupCore::new(a);
        if synced {
            core.handle_confchg(&[a, b], &[ch(a, Reason::Join), ch(b, Reason::Join)], &[]);
            core.handle_message(a, register("svc", 1));
            core.handle_message(b, register("other", 2));
        } else {
            core.handle_confchg(&[b], &[ch(b, Reason::Join)], &[]);
            core.handle_confchg(&[a, b], &[ch(a, Reason::Join)], &[]);
        }
        core.handle_confchg(&[a, b, c], &[ch(c, Reason::Join)], &[]);
        let from = [a, b, c][from_node as usize - 1];
        let before = core.clone();
        let request = Inbound::Request(Request {
            id: 9,
            target: target.into(),
            type_tag: "t".into(),
            want_reply,
            fence: None,
            payload: vec![1, 2],
        });
        let wanted = core.wants_request(from, target, want_reply);
        let cmds = core.handle_message(from, request);
        if !wanted {
            prop_assert!(cmds.is_empty(), "{:?}", cmds);
            prop_assert_eq!(&core, &before);
        }
    }
}
