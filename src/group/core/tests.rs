use super::*;
use crate::group::messages::RemoteFailure;
use crate::wire::{NEXT_PROTOCOL_VERSION, PROTOCOL_VERSION};
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

fn announce_of(cmds: &[Command]) -> Option<Inbound> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::Announce(a)) => Some(Inbound::Announce(*a)),
        _ => None,
    })
}

fn dropped(cmds: &[Command]) -> Vec<DropCause> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dropped { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect()
}

/// The announcement of a member that holds the state (`synced`) or is
/// about to ask for it.
fn ann(synced: bool) -> Inbound {
    Inbound::Announce(Announce {
        announcement: Announcement::this_build(),
        synced,
    })
}

/// Delivers the holders' announcements of `members`, in order, to `cores`.
fn announce(cores: &mut [&mut GroupCore], members: &[Member]) {
    for from in members {
        for core in cores.iter_mut() {
            core.handle_message(*from, ann(true));
        }
    }
}

/// A core that founded a group alone and whose announcement came back.
fn founded(local: Member) -> GroupCore {
    let mut core = GroupCore::new(local);
    let cmds = core.handle_confchg(&[local], &[ch(local, Reason::Join)], &[]);
    assert!(events(&cmds).contains(&GroupEvent::Ready));
    assert_eq!(announce_of(&cmds), Some(ann(true)));
    core.handle_message(local, ann(true));
    core
}

/// Cores of `all`, founders of one group, every announcement delivered.
fn founders(all: &[Member]) -> Vec<GroupCore> {
    let joined: Vec<_> = all.iter().map(|x| ch(*x, Reason::Join)).collect();
    let mut cores: Vec<GroupCore> = all.iter().map(|x| GroupCore::new(*x)).collect();
    for core in &mut cores {
        core.handle_confchg(all, &joined, &[]);
    }
    let mut refs: Vec<&mut GroupCore> = cores.iter_mut().collect();
    announce(&mut refs, all);
    cores
}

#[test]
fn first_member_is_ready_at_once() {
    let a = m(1, 10);
    let mut core = GroupCore::new(a);
    let cmds = core.handle_confchg(&[a], &[ch(a, Reason::Join)], &[]);
    assert!(events(&cmds).contains(&GroupEvent::Ready));
    assert!(core.is_synced());
    assert!(
        core.view().is_empty(),
        "a member once its announcement is back"
    );
    core.handle_message(a, ann(true));
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
        assert!(request_of(&cmds).is_none());
        assert_eq!(announce_of(&cmds), Some(ann(true)));
    }
    let cores = founders(&all);
    for core in &cores {
        assert_eq!(core.view(), &all);
        assert_eq!(core.sync, cores[0].sync);
        assert_eq!(core.engine(), cores[0].engine());
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
    let [ca, cb] = &mut cores;
    announce(&mut [ca, cb], &[a, b]);
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
    announce(&mut [&mut core], &[a, b]);
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
    let cmds = old.handle_confchg(&view, &join, &[]);
    assert!(request_of(&cmds).is_none());
    let holder = announce_of(&cmds).expect("a member announces itself to the joiner");
    let cmds = joiner.handle_confchg(&view, &join, &[]);
    assert!(!events(&cmds).contains(&GroupEvent::Ready));
    assert_eq!(announce_of(&cmds), Some(ann(false)));
    let ask = request_of(&cmds).expect("the joiner asks for the state");

    // Delivered before the request: covered by the snapshot.
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, holder.clone());
        core.handle_message(a, register("early", 2));
        core.handle_message(j, ann(false));
    }
    assert_eq!(old.view(), &[a, j], "admitted by its announcement");
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
        // Marks are per process, like the nonce.
        c.marks = joiner.marks.clone();
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
    announce(&mut [&mut ca, &mut cb], &[a, b]);
    for c in [&mut ca, &mut cb] {
        c.handle_message(b, register("n", 1));
    }
    let mut cj = GroupCore::new(j);
    let view = [a, b, j];
    let join = [ch(j, Reason::Join)];
    ca.handle_confchg(&view, &join, &[]);
    cb.handle_confchg(&view, &join, &[]);
    let ask1 = request_of(&cj.handle_confchg(&view, &join, &[])).unwrap();
    announce(&mut [&mut ca, &mut cb, &mut cj], &[a, b]);
    for c in [&mut ca, &mut cb, &mut cj] {
        c.handle_message(j, ann(false));
    }
    cj.handle_message(j, ask1.clone());
    assert!(snapshot_of(&cb.handle_message(j, ask1.clone())).is_none());
    let from_a = snapshot_of(&ca.handle_message(j, ask1)).expect("lowest synced member answers");

    // `a` dies before its answer is delivered.
    let view2 = [b, j];
    let gone = [ch(a, Reason::NodeDown)];
    cb.handle_confchg(&view2, &[], &gone);
    let ask2 = request_of(&cj.handle_confchg(&view2, &[], &gone)).expect("asks again");
    // The old answer (already in flight) lands first: void for both
    // (`a` is no member any more: refused as such).
    assert!(cj
        .handle_message(a, Inbound::Snapshot(from_a.clone()))
        .is_empty());
    assert_eq!(
        dropped(&cb.handle_message(a, Inbound::Snapshot(from_a))),
        vec![DropCause::Unannounced]
    );
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
    assert_eq!(announce_of(&sa), Some(ann(true)));
    let sb = cb.handle_confchg(&view, &[ch(a, Reason::NodeUp)], &[]);
    assert_eq!(announce_of(&sb), Some(ann(false)));
    let ask = request_of(&sb).expect("the other side asks for the state");
    for c in [&mut ca, &mut cb] {
        c.handle_message(a, ann(true));
        c.handle_message(b, ann(false));
    }
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
    announce(&mut [&mut core], &[a, h]);
    core.handle_message(h, register("svc", 1));
    let req = call_to;
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
    // A reply from anyone but the host is refused.
    assert_eq!(
        core.handle_message(a, reply.clone()),
        vec![Command::Dropped {
            from: a,
            cause: DropCause::NotHost
        }]
    );
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
    announce(&mut [&mut host], &[a, h]);
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
    announce(&mut [&mut caller], &[a, h]);
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
    Register {
        who: usize,
        name: u8,
    },
    Unregister {
        who: usize,
        name: u8,
    },
    Join,
    Leave {
        who: usize,
        reason: Reason,
    },
    DeliverPending,
    /// A process that is no member joins the view and stays silent.
    OutsiderJoins,
    /// The outsider leaves again.
    OutsiderLeaves,
    /// The outsider multicasts a forgery of this kind.
    Forge {
        kind: u8,
        nonce: u64,
    },
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
        1 => Just(Step::OutsiderJoins),
        1 => Just(Step::OutsiderLeaves),
        2 => (0u8..7, 0u64..4).prop_map(|(kind, nonce)| Step::Forge { kind, nonce }),
    ]
}

/// The outsider of the harness: never announces itself.
const OUTSIDER: Member = Member::new(9, 9);

/// A well-formed forgery from the outsider: each kind a member would act on.
fn forgery(kind: u8, nonce: u64, target: Member) -> Inbound {
    match kind {
        0 => register("evil", 1),
        1 => Inbound::SyncRequest(SyncRequest { nonce }),
        2 => Inbound::Snapshot(Snapshot {
            for_member: target,
            nonce,
            at: None,
            names: vec![("evil".into(), OUTSIDER)],
            supervision: Engine::new(),
            unsynced: vec![Unsynced {
                member: target,
                asked: Some(nonce),
                responder: Some(OUTSIDER),
            }],
            announced: vec![
                (target, Announcement::this_build()),
                (OUTSIDER, Announcement::this_build()),
            ],
        }),
        3 => Inbound::Reply(Reply {
            id: nonce,
            to: target,
            outcome: Ok(vec![6]),
        }),
        4 => Inbound::Supervision(SupervisionMsg::Tick { now_ms: u64::MAX }),
        5 => Inbound::Supervision(SupervisionMsg::Quorum {
            quorate: false,
            nodes: vec![],
        }),
        _ => Inbound::Registry(RegistryOp::Unregister { name: "n1".into() }),
    }
}

fn outgoing(from: Member, cmds: Vec<Command>) -> Vec<(Member, Inbound)> {
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::Mcast(Outgoing::Snapshot(s)) => Some((from, Inbound::Snapshot(*s))),
            Command::Mcast(Outgoing::SyncRequest(r)) => Some((from, Inbound::SyncRequest(r))),
            Command::Mcast(Outgoing::Announce(a)) => Some((from, Inbound::Announce(a))),
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
    outsider: bool,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            cores: Vec::new(),
            pending: Vec::new(),
            next_pid: 1,
            outsider: false,
        };
        h.join();
        h
    }

    fn view(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self.cores.iter().map(|c| c.local).collect();
        if self.outsider {
            v.push(OUTSIDER);
        }
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
            let cmds = core.handle_message(from, msg.clone());
            if from == OUTSIDER {
                for c in &cmds {
                    assert!(
                        !matches!(c, Command::Mcast(Outgoing::Snapshot(_))),
                        "an outsider's message made {} send the state",
                        core.local
                    );
                }
            }
            sends.extend(outgoing(core.local, cmds));
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
            Step::OutsiderJoins => {
                if !self.outsider {
                    self.outsider = true;
                    let view = self.view();
                    self.confchg(&view, &[ch(OUTSIDER, Reason::Join)], &[]);
                }
            }
            Step::OutsiderLeaves => {
                if self.outsider {
                    self.outsider = false;
                    let view = self.view();
                    self.confchg(&view, &[], &[ch(OUTSIDER, Reason::ProcDown)]);
                }
            }
            Step::Forge { kind, nonce } => {
                if self.outsider {
                    // Straight into the order, aimed at the newest process
                    // (the likeliest to be waiting for the state).
                    let target = self.cores[n - 1].local;
                    self.deliver(OUTSIDER, forgery(kind, nonce, target));
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
        // The one exception: joiners whose view holds nobody but a silent
        // process once the last holder is gone cannot tell it from a slow
        // holder; they wait until it leaves (see the module doc, rule 5).
        prop_assert!(
            !synced.is_empty() || self.outsider,
            "some member always holds the state"
        );
        for c in &synced {
            prop_assert_eq!(c.names(), synced[0].names());
            prop_assert_eq!(&c.sync, &synced[0].sync);
            prop_assert_eq!(c.view(), synced[0].view());
            prop_assert_eq!(&c.roster, &synced[0].roster);
            prop_assert_eq!(c.engine(), synced[0].engine());
            prop_assert!(
                !c.view().contains(&OUTSIDER),
                "an outsider is never a member"
            );
            prop_assert_eq!(c.engine().now_ms(), 0, "no tick but the outsider's");
            prop_assert!(c.engine().view().iter().all(|m| c.view().contains(m)));
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
        h.run(Step::OutsiderLeaves);
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
            announce(&mut [&mut core], &[a, b]);
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

// ---- who counts, sender rules, bounds --------------------------------------

/// `a` founded the group; `j` joined and announced itself; returns both
/// with `j`'s request delivered nowhere yet.
fn joined_pair() -> (GroupCore, GroupCore, Inbound) {
    let (a, j) = (m(1, 1), m(2, 2));
    let mut old = founded(a);
    let mut joiner = GroupCore::new(j);
    let view = [a, j];
    let join = [ch(j, Reason::Join)];
    old.handle_confchg(&view, &join, &[]);
    let ask = request_of(&joiner.handle_confchg(&view, &join, &[])).unwrap();
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, ann(true));
        core.handle_message(j, ann(false));
    }
    (old, joiner, ask)
}

#[test]
fn a_silent_process_that_comes_and_goes_changes_nothing() {
    let (a, b, x) = (m(1, 1), m(2, 2), m(3, 3));
    let mut cores = founders(&[a, b]);
    cores[0].handle_message(a, register("svc", 1));
    cores[1].handle_message(a, register("svc", 1));
    let before = cores.clone();
    for core in &mut cores {
        let cmds = core.handle_confchg(&[a, b, x], &[ch(x, Reason::Join)], &[]);
        // Members announce themselves to the newcomer; nothing else.
        assert_eq!(
            cmds,
            vec![Command::Mcast(Outgoing::Announce(Announce {
                announcement: Announcement::this_build(),
                synced: true,
            }))]
        );
        assert_eq!(core.view(), &[a, b]);
        let cmds = core.handle_confchg(&[a, b], &[], &[ch(x, Reason::ProcDown)]);
        assert!(cmds.is_empty(), "{cmds:?}");
    }
    for (now, then) in cores.iter().zip(&before) {
        assert_eq!(now.view(), then.view());
        assert_eq!(now.names(), then.names());
        assert_eq!(now.engine(), then.engine());
        assert_eq!(now.sync, then.sync);
    }
}

#[test]
fn an_unannounced_process_is_refused_for_every_kind_and_gets_no_state() {
    let (a, b, x) = (m(1, 1), m(2, 2), m(3, 3));
    let mut cores = founders(&[a, b]);
    for core in &mut cores {
        core.handle_confchg(&[a, b, x], &[ch(x, Reason::Join)], &[]);
    }
    for core in &mut cores {
        let before = core.clone();
        for kind in 0..7 {
            let cmds = core.handle_message(x, forgery(kind, 1, a));
            assert_eq!(
                cmds,
                vec![Command::Dropped {
                    from: x,
                    cause: DropCause::Unannounced
                }],
                "kind {kind}"
            );
        }
        assert_eq!(*core, before);
    }
}

#[test]
fn a_member_that_is_not_waiting_asks_for_nothing() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut cores = founders(&[a, b]);
    let cmds = cores[0].handle_message(b, Inbound::SyncRequest(SyncRequest { nonce: 5 }));
    assert_eq!(dropped(&cmds), vec![DropCause::Unasked]);
    assert!(snapshot_of(&cmds).is_none());
}

#[test]
fn a_tick_too_far_past_the_stream_time_is_refused() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut core = founders(&[a, b]).remove(0);
    let tick = |now_ms| Inbound::Supervision(SupervisionMsg::Tick { now_ms });
    assert!(dropped(&core.handle_message(b, tick(1_000_000))).is_empty());
    assert_eq!(core.engine().now_ms(), 1_000_000);
    assert!(dropped(&core.handle_message(b, tick(1_000_000 + MAX_TICK_STEP_MS))).is_empty());
    assert_eq!(
        dropped(&core.handle_message(b, tick(u64::MAX))),
        vec![DropCause::Clock]
    );
    // Behind the stream time: harmless, not refused.
    assert!(dropped(&core.handle_message(a, tick(5))).is_empty());
    assert_eq!(core.engine().now_ms(), 1_000_000 + MAX_TICK_STEP_MS);
}

#[test]
fn an_invalid_tree_spec_never_reaches_the_engine() {
    use crate::supervisor::{ChildSpec, Strategy, SupervisorSpec, TreeSpec};
    let (a, b) = (m(1, 1), m(2, 2));
    let mut core = founders(&[a, b]).remove(0);
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::worker("w", "k"))
            .child(ChildSpec::worker("w", "k")),
    );
    let seq = core.engine().seq();
    let cmds = core.handle_message(
        b,
        Inbound::Supervision(SupervisionMsg::TreeStarted {
            name: "t".into(),
            fingerprint: spec.fingerprint(),
            spec,
            kinds: vec!["k".into()],
        }),
    );
    assert_eq!(dropped(&cmds), vec![DropCause::Invalid]);
    assert!(cmds.iter().any(|c| matches!(c, Command::Supervise(o)
        if matches!(o.commands.as_slice(), [supervisor::Command::RefuseTree { by, .. }] if *by == b))));
    assert_eq!(core.engine().seq(), seq, "the engine saw nothing");
}

#[test]
fn a_joiner_takes_the_state_only_from_a_holder_it_heard() {
    let (mut old, mut joiner, ask) = joined_pair();
    let (a, j, x) = (m(1, 1), m(2, 2), m(3, 3));
    joiner.handle_message(j, ask.clone());
    let snap = snapshot_of(&old.handle_message(j, ask)).expect("a answers");
    // The same snapshot from a process the joiner never heard announce
    // itself as a holder: refused.
    assert_eq!(
        dropped(&joiner.handle_message(x, Inbound::Snapshot(snap.clone()))),
        vec![DropCause::Unasked]
    );
    assert!(!joiner.is_synced());
    // A snapshot that names another responder than its sender: refused.
    let mut lying = snap.clone();
    lying
        .announced
        .insert(0, (m(0, 1), Announcement::this_build()));
    assert_eq!(
        dropped(&joiner.handle_message(a, Inbound::Snapshot(lying))),
        vec![DropCause::Invalid]
    );
    assert!(!joiner.is_synced());
    let cmds = joiner.handle_message(a, Inbound::Snapshot(snap));
    assert!(events(&cmds).contains(&GroupEvent::Ready));
    assert_eq!(joiner.view(), &[a, j]);
}

#[test]
fn a_request_no_holder_could_answer_is_answered_at_the_first_holders_admission() {
    // `a` founded alone; its announcement is still on its way when `j`
    // joins and asks.
    let (a, j) = (m(1, 1), m(2, 2));
    let mut old = GroupCore::new(a);
    old.handle_confchg(&[a], &[ch(a, Reason::Join)], &[]);
    let mut joiner = GroupCore::new(j);
    let view = [a, j];
    let join = [ch(j, Reason::Join)];
    old.handle_confchg(&view, &join, &[]);
    let ask = request_of(&joiner.handle_confchg(&view, &join, &[])).unwrap();
    for core in [&mut old, &mut joiner] {
        core.handle_message(j, ann(false));
    }
    joiner.handle_message(j, ask.clone());
    assert!(
        snapshot_of(&old.handle_message(j, ask)).is_none(),
        "nobody counts yet"
    );
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, register("early", 1));
    }
    // `a`'s announcement admits it, and it answers with the state there.
    let cmds = old.handle_message(a, ann(true));
    joiner.handle_message(a, ann(true));
    let snap = snapshot_of(&cmds).expect("the first holder answers");
    assert_eq!(snap.at, Some(a));
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, register("late", 2));
    }
    for core in [&mut old, &mut joiner] {
        core.handle_message(a, Inbound::Snapshot(snap.clone()));
    }
    assert!(joiner.is_synced());
    assert_eq!(joiner.names(), old.names());
    assert_eq!(joiner.view(), old.view());
    assert_eq!(joiner.sync, old.sync);
    assert_eq!(joiner.engine(), old.engine());
}

#[test]
fn a_joiner_that_buffers_past_its_cap_asks_again() {
    let (a, j) = (m(1, 1), m(2, 2));
    let mut joiner = GroupCore::with_limits(
        j,
        Limits {
            max_buffered: 3,
            max_awaiting: 10,
        },
    );
    let view = [a, j];
    let join = [ch(j, Reason::Join)];
    let ask = request_of(&joiner.handle_confchg(&view, &join, &[])).unwrap();
    joiner.handle_message(j, ask);
    for i in 0..3 {
        assert!(joiner
            .handle_message(a, register(&format!("n{i}"), i))
            .is_empty());
    }
    let cmds = joiner.handle_message(a, register("n3", 3));
    assert!(events(&cmds).contains(&GroupEvent::StateTransferRestarted { buffered: 3 }));
    let again = request_of(&cmds).expect("asks again");
    assert_ne!(again, Inbound::SyncRequest(SyncRequest { nonce: 1 }));
    let SyncState::Waiting(w) = &joiner.sync else {
        panic!("still waiting")
    };
    assert!(w.buffered.is_empty() && w.asked.is_none());
}

#[test]
fn calls_past_the_cap_fail_at_once() {
    let (a, h) = (m(1, 1), m(2, 2));
    let joined = [ch(a, Reason::Join), ch(h, Reason::Join)];
    let mut core = GroupCore::with_limits(
        a,
        Limits {
            max_buffered: 10,
            max_awaiting: 1,
        },
    );
    core.handle_confchg(&[a, h], &joined, &[]);
    announce(&mut [&mut core], &[a, h]);
    core.handle_message(h, register("svc", 1));
    let call = |id| call_to(id, "svc");
    assert!(core.handle_message(a, call(1)).is_empty());
    assert_eq!(
        core.handle_message(a, call(2)),
        vec![Command::CallDone {
            id: 2,
            outcome: Err(CallError::WouldBlock)
        }]
    );
    assert_eq!(core.awaiting.len(), 1);
}

/// A request of a call wanting a reply.
fn call_to(id: u64, target: &str) -> Inbound {
    Inbound::Request(Request {
        id,
        target: target.into(),
        type_tag: "t".into(),
        want_reply: true,
        fence: None,
        payload: vec![],
    })
}

fn reply_to(id: u64, to: Member) -> Inbound {
    Inbound::Reply(Reply {
        id,
        to,
        outcome: Ok(vec![1]),
    })
}

#[test]
fn a_call_given_up_is_forgotten_whether_its_request_came_back_or_not() {
    let (a, h) = (m(1, 1), m(2, 2));
    let mut core = GroupCore::new(a);
    core.handle_confchg(&[a, h], &[ch(a, Reason::Join), ch(h, Reason::Join)], &[]);
    announce(&mut [&mut core], &[a, h]);
    core.handle_message(h, register("svc", 1));

    // Given up after its request came back: the host's late reply answers
    // no call, and is not refused either.
    assert!(core.handle_message(a, call_to(1, "svc")).is_empty());
    assert_eq!(core.awaiting_replies(), 1);
    core.abandon_call(1);
    assert_eq!(core.awaiting_replies(), 0);
    assert!(core.handle_message(h, reply_to(1, a)).is_empty());

    // Given up before: the request still goes to its host, but starts no
    // wait here, and nothing is left behind.
    core.abandon_call(2);
    assert!(core.handle_message(a, call_to(2, "svc")).is_empty());
    assert_eq!(core.awaiting_replies(), 0);
    assert!(core.abandoned.is_empty());
    assert!(core.handle_message(h, reply_to(2, a)).is_empty());

    // Given up before its request found no name: no outcome to report.
    core.abandon_call(3);
    assert!(core.handle_message(a, call_to(3, "nobody")).is_empty());
    assert!(core.abandoned.is_empty());

    // Never sent: its abandonment is forgotten too.
    core.abandon_call(4);
    core.call_unsent(4);
    assert!(core.abandoned.is_empty());
}

/// A member on the side of a merge that loses its state waits for the
/// other side's: its own requests that go by before its state request are
/// in nobody's replay. They used to wait forever for a reply this member
/// could no longer match; they now end when the state arrives.
#[test]
fn own_calls_that_went_by_while_waiting_end_when_the_state_arrives() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut ca = founded(a);
    let mut cb = founded(b);
    ca.handle_message(a, register("svc", 1));

    let view = [a, b];
    ca.handle_confchg(&view, &[ch(b, Reason::NodeUp)], &[]);
    let ask = request_of(&cb.handle_confchg(&view, &[ch(a, Reason::NodeUp)], &[]))
        .expect("the other side asks for the state");
    for c in [&mut ca, &mut cb] {
        c.handle_message(a, ann(true));
        c.handle_message(b, ann(false));
    }
    // Before b's request: in the state, not in the replay.
    cb.handle_message(b, call_to(6, "svc"));
    cb.handle_message(b, call_to(7, "svc"));
    cb.abandon_call(6);
    cb.handle_message(b, ask.clone());
    // After it: replayed once the state is in.
    cb.handle_message(b, call_to(8, "svc"));
    cb.handle_message(b, call_to(9, "svc"));
    cb.abandon_call(9);

    let snap = snapshot_of(&ca.handle_message(b, ask)).expect("the primary side answers");
    let cmds = cb.handle_message(a, Inbound::Snapshot(snap));
    let ended: Vec<(u64, Result<Vec<u8>, CallError>)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::CallDone { id, outcome } => Some((*id, outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![(7, Err(CallError::OutcomeUnknown))]);
    assert_eq!(cb.awaiting, BTreeMap::from([(8, a)]));
    assert!(cb.abandoned.is_empty() && cb.limbo.is_empty());
    assert_eq!(
        cb.handle_message(a, reply_to(8, b)),
        vec![Command::CallDone {
            id: 8,
            outcome: Ok(vec![1])
        }]
    );
}

/// Found by fuzzing: two founders whose announcements had not come in yet
/// merged into a side that held the state, and that side died before
/// answering. Each founder fell back on its own state with itself as a
/// member, so each took its own registrations and refused the other's:
/// the registries parted for good. They now fall back on the peers of the
/// merge (here none) and admit each other as their announcements arrive.
#[test]
fn founders_unannounced_at_a_merge_fall_back_on_the_same_members() {
    let (a, b, o) = (m(2, 1), m(3, 1), m(1, 1));
    let mut cores = [GroupCore::new(a), GroupCore::new(b)];
    let first = [ch(a, Reason::Join), ch(b, Reason::Join)];
    for core in &mut cores {
        core.handle_confchg(&[a, b], &first, &[]);
        // `o` is the lowest old process: its side keeps the state.
        core.handle_confchg(&[o, a, b], &[ch(o, Reason::NodeUp)], &[]);
        assert!(!core.is_synced());
        core.handle_confchg(&[a, b], &[], &[ch(o, Reason::NodeDown)]);
        assert!(core.is_synced());
    }
    let [ca, cb] = &cores;
    assert_eq!(ca.view(), cb.view(), "fell back on different members");
    // `b` registers before its announcement is in: refused alike.
    for core in &mut cores {
        core.handle_message(b, register("svc", 1));
    }
    let [ca, cb] = &cores;
    assert_eq!(ca.names(), cb.names());
    assert!(ca.names().is_empty());
    // Once announced, both take it.
    for core in &mut cores {
        core.handle_message(a, ann(true));
        core.handle_message(b, ann(true));
        core.handle_message(b, register("svc", 2));
    }
    let [ca, cb] = &cores;
    assert_eq!(ca.view(), &[a, b]);
    assert_eq!(ca.view(), cb.view());
    assert_eq!(ca.names(), cb.names());
    assert_eq!(ca.lookup("svc"), Some(b));
}

/// Found by fuzzing: after a fallback, a member whose late announcement
/// said it would ask for the state registered a name; at the next merge it
/// was no peer (peers are members that hold the state), so when that
/// merge's holders died too the peers fell back without it and its name
/// lived on a non-member, never to drop. The name now drops at the
/// fallback, alike on every peer, and its host re-claims it.
#[test]
fn a_fallback_drops_names_of_processes_that_are_no_peers() {
    let (a, b, o, p) = (m(2, 1), m(3, 1), m(1, 1), m(1, 2));
    let mut cores = [GroupCore::new(a), GroupCore::new(b)];
    let first = [ch(a, Reason::Join), ch(b, Reason::Join)];
    for core in &mut cores {
        core.handle_confchg(&[a, b], &first, &[]);
        core.handle_confchg(&[o, a, b], &[ch(o, Reason::NodeUp)], &[]);
        core.handle_confchg(&[a, b], &[], &[ch(o, Reason::Leave)]);
        // `a`'s announcement from the merge comes in only now.
        core.handle_message(a, ann(false));
        core.handle_message(a, register("svc", 1));
        assert_eq!(core.lookup("svc"), Some(a));
    }
    let mut reclaims = Vec::new();
    for core in &mut cores {
        core.handle_confchg(&[p, a, b], &[ch(p, Reason::NodeUp)], &[]);
        let cmds = core.handle_confchg(&[a, b], &[], &[ch(p, Reason::NodeDown)]);
        assert!(core.is_synced());
        assert!(core.names().is_empty(), "{:?}", core.names());
        reclaims.push(
            cmds.iter()
                .any(|c| matches!(c, Command::Reclaim { name } if name == "svc")),
        );
    }
    assert_eq!(reclaims, [true, false], "only the host re-claims it");
    let [ca, cb] = &cores;
    assert_eq!(ca.view(), cb.view());
}

fn mark_of(cmds: &[Command]) -> Option<Inbound> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::Supervision(m @ SupervisionMsg::Mark { .. })) => {
            Some(Inbound::Supervision(m.clone()))
        }
        _ => None,
    })
}

fn offer_of(cmds: &[Command]) -> Option<Inbound> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::Supervision(o @ SupervisionMsg::StateOffered { .. })) => {
            Some(Inbound::Supervision(o.clone()))
        }
        _ => None,
    })
}

/// A merge offer is sent only once its sender's mark of the latest confchg
/// is back, and counts only with its sender's latest mark since that
/// confchg: an offer that a lagging member made for one merge and that
/// reaches the stream after a second partition and heal is not counted in
/// the second merge (its sender's side may have moved on, and its fresh
/// offer would be refused as a second one from the same sender).
#[test]
fn a_merge_offer_made_for_an_earlier_merge_is_not_counted_in_a_later_one() {
    let (a, b) = (m(1, 1), m(2, 2));
    let [mut ca, mut cb]: [GroupCore; 2] = founders(&[a, b]).try_into().unwrap();
    let split = |ca: &mut GroupCore, cb: &mut GroupCore| {
        ca.handle_confchg(&[a], &[], &[ch(b, Reason::NodeDown)]);
        cb.handle_confchg(&[b], &[], &[ch(a, Reason::NodeDown)]);
    };
    let heal = |ca: &mut GroupCore, cb: &mut GroupCore| {
        let at_a = ca.handle_confchg(&[a, b], &[ch(b, Reason::NodeUp)], &[]);
        let at_b = cb.handle_confchg(&[a, b], &[ch(a, Reason::NodeUp)], &[]);
        assert!(ca.engine().is_merging() && cb.engine().is_merging());
        assert!(
            offer_of(&at_a).is_none(),
            "no offer before the mark is back"
        );
        (at_a, at_b)
    };
    split(&mut ca, &mut cb);
    let (_, at_b) = heal(&mut ca, &mut cb);
    // `b` reads its own mark back and offers; the offer is slow to reach
    // the stream.
    let stale = offer_of(&cb.handle_message(b, mark_of(&at_b).unwrap())).expect("b offers");
    split(&mut ca, &mut cb);
    let (at_a, at_b) = heal(&mut ca, &mut cb);
    let a_offer = offer_of(&ca.handle_message(a, mark_of(&at_a).unwrap())).expect("a offers");
    ca.handle_message(a, a_offer);
    ca.handle_message(b, announce_of(&at_b).unwrap());
    ca.handle_message(b, stale);
    assert!(
        ca.engine().is_merging(),
        "the offer of the first merge does not cover b in the second"
    );
    let mark = mark_of(&at_b).unwrap();
    ca.handle_message(b, mark.clone());
    let fresh = offer_of(&cb.handle_message(b, mark)).expect("b offers again");
    ca.handle_message(b, fresh);
    assert!(!ca.engine().is_merging(), "b's fresh offer settles it");
}

/// An observer is a member for the registry (it is in the view, gets the
/// state, may call), but every member refuses what would make it take
/// part in a decision: a registration, a tree start, a child's exit, a
/// clock or a quorum fact. Joiners learn who observes from the snapshot.
#[test]
fn an_observer_sees_the_group_and_decides_nothing() {
    use crate::supervisor::{ChildSpec, Strategy, SupervisorSpec, TreeSpec};
    let (a, o) = (m(1, 1), m(2, 2));
    let mut core = founded(a);
    let mut observer = GroupCore::new(o).with_role(Role::Observer);
    let view = [a, o];
    let join = [ch(o, Reason::Join)];
    core.handle_confchg(&view, &join, &[]);
    let cmds = observer.handle_confchg(&view, &join, &[]);
    let Some(Inbound::Announce(announce)) = announce_of(&cmds) else {
        panic!("the observer announces itself");
    };
    assert_eq!(announce.announcement.role, Role::Observer);
    core.handle_message(o, Inbound::Announce(announce));
    assert_eq!(core.view(), &[a, o], "a member of the view");
    assert!(core.is_observer(o) && !core.is_observer(a));

    let spec =
        TreeSpec::new(SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("w", "k")));
    for msg in [
        register("svc", 1),
        Inbound::Supervision(SupervisionMsg::TreeStarted {
            name: "t".into(),
            fingerprint: spec.fingerprint(),
            spec: spec.clone(),
            kinds: vec!["k".into()],
        }),
        Inbound::Supervision(SupervisionMsg::Tick { now_ms: 5 }),
        Inbound::Supervision(SupervisionMsg::Quorum {
            quorate: false,
            nodes: vec![],
        }),
    ] {
        let cmds = core.handle_message(o, msg);
        assert_eq!(dropped(&cmds), vec![DropCause::Observer]);
    }
    assert!(core.names().is_empty());
    assert!(core.engine().tree_fingerprint("t").is_none());
    assert_eq!(core.engine().now_ms(), 0);

    // The participant's tree runs on the participant only.
    core.handle_message(
        a,
        Inbound::Supervision(SupervisionMsg::TreeStarted {
            name: "t".into(),
            fingerprint: spec.fingerprint(),
            spec: spec.clone(),
            kinds: vec!["k".into()],
        }),
    );
    assert_eq!(core.engine().tree_hosts("t"), vec![a]);

    // A joiner learns the observer from the snapshot.
    let j = m(3, 3);
    let mut joiner = GroupCore::new(j);
    let view = [a, o, j];
    let join = [ch(j, Reason::Join)];
    core.handle_confchg(&view, &join, &[]);
    let cmds = joiner.handle_confchg(&view, &join, &[]);
    let ask = request_of(&cmds).expect("the joiner asks");
    core.handle_message(a, ann(true));
    joiner.handle_message(a, ann(true));
    for c in [&mut core, &mut joiner] {
        c.handle_message(j, ann(false));
    }
    joiner.handle_message(j, ask.clone());
    let snap = snapshot_of(&core.handle_message(j, ask)).expect("a answers");
    assert!(snap
        .announced
        .iter()
        .any(|(m, a)| *m == o && a.role == Role::Observer));
    joiner.handle_message(a, Inbound::Snapshot(snap));
    assert!(joiner.is_synced());
    assert!(joiner.is_observer(o));
    assert_eq!(
        dropped(&joiner.handle_message(o, register("svc", 2))),
        vec![DropCause::Observer]
    );
}

// ---- protocol versions (rule 8) ---------------------------------------------

fn speaking(min: u8, max: u8) -> Announcement {
    Announcement::speaking(Versions { min, max })
}

fn ann_speaking(versions: Announcement, synced: bool) -> Inbound {
    Inbound::Announce(Announce {
        announcement: versions,
        synced,
    })
}

fn refusal_notice_of(cmds: &[Command]) -> Option<RefusalNotice> {
    cmds.iter().find_map(|c| match c {
        Command::Mcast(Outgoing::Refusal(n)) => Some(*n),
        _ => None,
    })
}

#[test]
fn a_joiner_that_cannot_speak_the_group_version_is_refused_everywhere_and_told_by_one_member() {
    let (a, b, j) = (m(1, 1), m(2, 2), m(3, 3));
    let mut cores = founders(&[a, b]);
    let mut joiner = GroupCore::new(j).with_versions(Versions {
        min: NEXT_PROTOCOL_VERSION,
        max: NEXT_PROTOCOL_VERSION,
    });
    let view = [a, b, j];
    let join = [ch(j, Reason::Join)];
    for core in cores.iter_mut() {
        core.handle_confchg(&view, &join, &[]);
    }
    let cmds = joiner.handle_confchg(&view, &join, &[]);
    let own = announce_of(&cmds).expect("the joiner announces itself");
    // The holders' announcements reach the joiner: it heard them.
    for from in [a, b] {
        joiner.handle_message(from, ann(true));
    }
    let mut notices = Vec::new();
    for core in cores.iter_mut() {
        let cmds = core.handle_message(j, own.clone());
        assert_eq!(
            events(&cmds),
            vec![GroupEvent::MemberRefused {
                member: j,
                versions: Versions {
                    min: NEXT_PROTOCOL_VERSION,
                    max: NEXT_PROTOCOL_VERSION,
                },
                group_version: PROTOCOL_VERSION,
            }],
            "on {}",
            core.local
        );
        assert_eq!(dropped(&cmds), vec![DropCause::Incompatible]);
        notices.extend(refusal_notice_of(&cmds).map(|n| (core.local, n)));
        assert_eq!(core.view(), &[a, b], "never a member");
    }
    // Exactly one member tells it: the one that would answer its request.
    assert_eq!(
        notices,
        vec![(
            a,
            RefusalNotice {
                member: j,
                group_version: PROTOCOL_VERSION
            }
        )]
    );
    // Its messages change nothing.
    for core in cores.iter_mut() {
        let before = core.clone();
        assert_eq!(
            dropped(&core.handle_message(j, register("mine", 1))),
            vec![DropCause::Unannounced]
        );
        assert_eq!(*core, before);
    }
    // A notice from a process it never heard as a holder is ignored; the
    // one from a holder ends it.
    let notice = Inbound::Refusal(notices[0].1);
    joiner.handle_message(j, own.clone());
    assert!(joiner.handle_message(m(9, 9), notice.clone()).is_empty());
    let cmds = joiner.handle_message(a, notice);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Refused(Refusal {
            group_version: PROTOCOL_VERSION,
            ..
        })
    )));
    assert!(events(&cmds)
        .iter()
        .any(|e| matches!(e, GroupEvent::MemberRefused { member, .. } if *member == j)));
}

#[test]
fn the_group_moves_up_where_the_last_member_that_held_it_back_leaves() {
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    let all = [a, b, c];
    let joined: Vec<_> = all.iter().map(|x| ch(*x, Reason::Join)).collect();
    let versions = [speaking(2, 2), speaking(2, 3), speaking(2, 3)];
    let mut cores: Vec<GroupCore> = all
        .iter()
        .zip(versions)
        .map(|(x, v)| GroupCore::new(*x).with_versions(v.versions()))
        .collect();
    for core in cores.iter_mut() {
        core.handle_confchg(&all, &joined, &[]);
    }
    for (from, v) in all.iter().zip(versions) {
        for core in cores.iter_mut() {
            core.handle_message(*from, ann_speaking(v, true));
        }
    }
    for core in &cores {
        assert_eq!(core.group_version(), Some(2));
        assert!(core.counts_version(2) && !core.counts_version(3));
    }
    // A message at 3 while the old member is there counts nowhere (the
    // runtime checks before the core: `counts_version`).
    let mut moved = Vec::new();
    for core in cores.iter_mut().skip(1) {
        let cmds = core.handle_confchg(&[b, c], &[], &[ch(a, Reason::Leave)]);
        moved.push(
            events(&cmds)
                .into_iter()
                .filter(|e| matches!(e, GroupEvent::VersionChanged { .. }))
                .collect::<Vec<_>>(),
        );
        assert_eq!(core.group_version(), Some(3));
        assert!(
            core.counts_version(2) && core.counts_version(3),
            "messages sent at 2 before the move still count"
        );
    }
    let up = vec![GroupEvent::VersionChanged {
        from: Some(2),
        to: 3,
    }];
    assert_eq!(moved, vec![up.clone(), up]);
}

/// Rule 8 for a member waiting for the state: it cannot judge a version
/// where a message is delivered, so it judges each buffered message's
/// when it replays it, with the roster of that position, and drops what
/// the holders dropped.
#[test]
fn a_joiner_judges_the_versions_of_what_it_buffered_when_it_replays_it() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut ca = founded(a);
    let mut cb = founded(b);
    let view = [a, b];
    ca.handle_confchg(&view, &[ch(b, Reason::NodeUp)], &[]);
    let ask = request_of(&cb.handle_confchg(&view, &[ch(a, Reason::NodeUp)], &[]))
        .expect("the other side asks for the state");
    for c in [&mut ca, &mut cb] {
        c.handle_message(a, ann(true));
        c.handle_message(b, ann(false));
    }
    cb.handle_message(b, ask.clone());
    let snap = snapshot_of(&ca.handle_message(b, ask)).expect("the primary side answers");
    // After the request, in the stream: a registration at a version no
    // member speaks, then one at the group's.
    let next = NEXT_PROTOCOL_VERSION;
    assert!(!ca.counts_version(next), "the holder drops it unread");
    ca.handle_message(a, register("kept", 2));
    cb.handle_message_at(a, Some(next), register("late", 1));
    cb.handle_message_at(a, Some(PROTOCOL_VERSION), register("kept", 2));
    let cmds = cb.handle_message(a, Inbound::Snapshot(snap));
    assert!(cmds.contains(&Command::Dropped {
        from: a,
        cause: DropCause::Version
    }));
    assert_eq!(cb.names(), ca.names());
    assert!(cb.names().contains_key("kept") && !cb.names().contains_key("late"));
}
