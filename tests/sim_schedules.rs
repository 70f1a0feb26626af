//! Seeded fault schedules against the sim backend. Each run draws a cluster
//! shape, traffic and a `FaultPlan` from one seed, drives it, drains every
//! connection and then checks one invariant per test over the recorded event
//! streams. A failure names the seed; `SIM_SEED=<seed>` replays only that
//! run, `SIM_SEEDS=<n>` changes how many seeds run (default 300).

use std::collections::{BTreeMap, BTreeSet};

use actix_cpg::transport::sim::{
    FaultOutcome, FaultPlan, FlowControlPolicy, SimCluster, SimConnection, SimRng,
};
use actix_cpg::transport::{
    Connection, GroupName, Member, MemberChange, NodeId, Reason, Transport, TransportError,
    TransportEvent,
};

const STEPS: usize = 40;

/// Everything one connection read, and what it managed to send.
struct History {
    member: Member,
    events: Vec<TransportEvent>,
    sent: Vec<Vec<u8>>,
    closed: bool,
    /// How often a send was refused with `TryAgain` (and later retried).
    try_agains: usize,
}

struct Peer {
    conn: SimConnection,
    history: History,
    /// Messages refused with `TryAgain`, retried in order before new ones.
    pending: Vec<Vec<u8>>,
    next: u32,
}

impl Peer {
    fn new(conn: SimConnection) -> Self {
        let member = conn.local();
        Peer {
            conn,
            history: History {
                member,
                events: Vec::new(),
                sent: Vec::new(),
                closed: false,
                try_agains: 0,
            },
            pending: Vec::new(),
            next: 0,
        }
    }

    fn read(&mut self, max: usize) {
        for _ in 0..max {
            if self.history.closed {
                return;
            }
            match self.conn.try_next_event() {
                Ok(Some(event)) => self.history.events.push(event),
                Ok(None) => return,
                Err(TransportError::Closed(_) | TransportError::Killed(_)) => {
                    self.history.closed = true
                }
                Err(other) => panic!("unexpected error while reading: {other}"),
            }
        }
    }

    fn queue_message(&mut self) {
        let payload = format!("{}#{}", self.history.member, self.next).into_bytes();
        self.next += 1;
        self.pending.push(payload);
    }

    /// Sends pending messages in order; stops at the first `TryAgain`.
    fn flush(&mut self) -> bool {
        let mut progressed = false;
        while let Some(first) = self.pending.first() {
            match self.conn.mcast(first) {
                Ok(()) => {
                    let sent = self.pending.remove(0);
                    self.history.sent.push(sent);
                    progressed = true;
                }
                Err(TransportError::TryAgain) => {
                    self.history.try_agains += 1;
                    break;
                }
                Err(TransportError::Closed(_) | TransportError::Killed(_)) => {
                    self.pending.clear();
                    break;
                }
                Err(other) => panic!("unexpected error while sending: {other}"),
            }
        }
        progressed
    }
}

struct Run {
    seed: u64,
    nodes: u32,
    log: Vec<String>,
    histories: Vec<History>,
    /// Members still open at the end, with `members()` after heal+restart.
    final_views: Vec<(Member, Vec<Member>)>,
    cluster_members: Vec<Member>,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "seed {} ({} nodes); replay with SIM_SEED={}\nschedule:\n  {}",
            self.seed,
            self.nodes,
            self.seed,
            self.log.join("\n  ")
        )
    }
}

fn run(seed: u64) -> Run {
    let mut rng = SimRng::new(seed ^ 0x5EED_5EED_5EED_5EED);
    let nodes = 3 + rng.below(3) as u32;
    let policy = if rng.chance(50) {
        FlowControlPolicy::OwnBacklog
    } else {
        FlowControlPolicy::SlowestMember
    };
    let cluster = SimCluster::builder(nodes)
        .max_backlog(1 + rng.below(6) as usize)
        .flow_control(policy)
        .build();
    let group = GroupName::new("schedule").expect("valid name");
    let mut log = vec![format!("{policy:?}")];
    let mut peers: Vec<Peer> = (1..=nodes)
        .map(|n| {
            let process = cluster.process(NodeId(n)).expect("node up");
            Peer::new(process.join(&group).expect("joined"))
        })
        .collect();
    let mut plan = FaultPlan::new(seed, nodes);
    for _ in 0..STEPS {
        for peer in &mut peers {
            if !peer.history.closed && rng.chance(60) {
                for _ in 0..1 + rng.below(3) {
                    peer.queue_message();
                }
            }
            peer.flush();
        }
        for peer in &mut peers {
            let n = rng.below(6) as usize;
            peer.read(n);
        }
        if !peers.is_empty() && rng.chance(15) {
            let slow = rng.below(peers.len() as u64) as usize;
            let member = peers[slow].history.member;
            if cluster.pause_process(member).is_ok() {
                log.push(format!("pause {member}"));
            }
        }
        if !peers.is_empty() && rng.chance(25) {
            let member = peers[rng.below(peers.len() as u64) as usize].history.member;
            let _ = cluster.resume_process(member);
        }
        let fault = plan.next_fault();
        match cluster.apply_fault(&fault, &group) {
            Ok(FaultOutcome::Joined(conn)) => {
                log.push(format!("{fault} -> {}", conn.local()));
                peers.push(Peer::new(conn));
            }
            Ok(FaultOutcome::Applied) => log.push(fault.to_string()),
            Ok(FaultOutcome::Skipped) => log.push(format!("({fault}: skipped)")),
            Err(err) => panic!("seed {seed}: fault {fault} rejected: {err}"),
        }
    }
    for peer in &peers {
        let _ = cluster.resume_process(peer.history.member);
    }
    drain_and_flush(&mut peers);

    // Converge: with the network whole and every node up, every open member
    // must end in the same view.
    cluster.heal();
    for node in cluster.nodes() {
        let _ = cluster.restart_node(node);
    }
    drain_and_flush(&mut peers);
    let final_views = peers
        .iter()
        .filter_map(|p| Some((p.history.member, p.conn.members().ok()?)))
        .collect();
    let cluster_members = cluster.group_members(&group);
    Run {
        seed,
        nodes,
        log,
        histories: peers.into_iter().map(|p| p.history).collect(),
        final_views,
        cluster_members,
    }
}

fn drain_and_flush(peers: &mut [Peer]) {
    loop {
        for peer in peers.iter_mut() {
            peer.read(usize::MAX);
        }
        let mut progressed = false;
        for peer in peers.iter_mut() {
            progressed |= peer.flush();
        }
        if !progressed {
            break;
        }
    }
    for peer in peers.iter() {
        assert!(peer.pending.is_empty(), "a retried send never went through");
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    (0..count).collect()
}

/// Runs every seed and checks `invariant`; reports the first failing seed.
fn check(invariant: impl Fn(&Run) -> Result<(), String>) {
    for seed in seeds() {
        let run = run(seed);
        if let Err(why) = invariant(&run) {
            panic!("{why}\n{}", run.describe());
        }
    }
}

fn is_confchg(event: &TransportEvent) -> bool {
    matches!(event, TransportEvent::ConfChg { .. })
}

fn own_leave(history: &History, left: &[MemberChange]) -> bool {
    left.iter()
        .any(|c| c.member == history.member && c.reason == Reason::Leave)
}

/// Whether the history ended because its process died (not left, not open).
fn was_cut(history: &History) -> bool {
    history.closed
        && !history.events.iter().any(|e| match e {
            TransportEvent::ConfChg { left, .. } => own_leave(history, left),
            _ => false,
        })
}

type Message = (Member, Vec<u8>);

/// Messages delivered in one view instance.
struct Segment {
    key: (Vec<Member>, usize),
    messages: Vec<Message>,
    finished: bool,
}

/// Splits a history into view instances, keyed by (membership, how many
/// times this membership was installed before). A view holding both A and B
/// is installed by both, so the k-th instance at A is the k-th at B.
fn segments(history: &History) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut seen: BTreeMap<Vec<Member>, usize> = BTreeMap::new();
    for event in &history.events {
        match event {
            TransportEvent::ConfChg { members, left, .. } => {
                if let Some(last) = out.last_mut() {
                    last.finished = true;
                }
                if own_leave(history, left) {
                    break;
                }
                let count = seen.entry(members.clone()).or_default();
                out.push(Segment {
                    key: (members.clone(), *count),
                    messages: Vec::new(),
                    finished: false,
                });
                *count += 1;
            }
            TransportEvent::Deliver { from, bytes } => {
                if let Some(last) = out.last_mut() {
                    last.messages.push((*from, bytes.clone()));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_stream_is_a_well_formed_sequence_of_views() {
    check(|run| {
        for h in &run.histories {
            if h.events.is_empty() && was_cut(h) {
                // Killed before it read anything: its queue was dropped.
                continue;
            }
            let first = h.events.iter().find(|e| is_confchg(e));
            match first {
                Some(TransportEvent::ConfChg {
                    members, joined, ..
                }) if *joined
                    == vec![MemberChange {
                        member: h.member,
                        reason: Reason::Join,
                    }]
                    && members.contains(&h.member) => {}
                other => return Err(format!("{}: first confchg is {other:?}", h.member)),
            }
            if !matches!(h.events.first(), Some(e) if is_confchg(e)) {
                return Err(format!("{}: first event is not a confchg", h.member));
            }
            let mut view: Option<BTreeSet<Member>> = None;
            let mut gone = false;
            for event in &h.events {
                if gone {
                    return Err(format!(
                        "{}: event after its own leave: {event:?}",
                        h.member
                    ));
                }
                let TransportEvent::ConfChg {
                    members,
                    joined,
                    left,
                } = event
                else {
                    continue;
                };
                if members.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("{}: members not sorted: {members:?}", h.member));
                }
                // The first view is given whole; later ones follow by difference.
                let view = view.get_or_insert_with(|| {
                    members.iter().copied().filter(|m| *m != h.member).collect()
                });
                for change in left {
                    if !view.remove(&change.member) {
                        return Err(format!(
                            "{}: {change:?} left but was not in the view",
                            h.member
                        ));
                    }
                    if matches!(change.reason, Reason::Join | Reason::NodeUp) {
                        return Err(format!("{}: left with {change:?}", h.member));
                    }
                }
                for change in joined {
                    if !view.insert(change.member) {
                        return Err(format!("{}: {change:?} joined twice", h.member));
                    }
                    if !matches!(change.reason, Reason::Join | Reason::NodeUp) {
                        return Err(format!("{}: joined with {change:?}", h.member));
                    }
                }
                if view.iter().copied().collect::<Vec<_>>() != *members {
                    return Err(format!(
                        "{}: members {members:?} do not follow from the previous view",
                        h.member
                    ));
                }
                gone = own_leave(h, left);
                if !gone && !members.contains(&h.member) {
                    return Err(format!("{}: not in its own view {members:?}", h.member));
                }
            }
        }
        Ok(())
    });
}

#[test]
fn survivors_deliver_the_same_messages_between_the_same_two_confchgs() {
    check(|run| {
        let all: Vec<(&History, Vec<Segment>)> =
            run.histories.iter().map(|h| (h, segments(h))).collect();
        for (i, (a, sa)) in all.iter().enumerate() {
            for (b, sb) in all.iter().skip(i + 1) {
                for x in sa {
                    let Some(y) = sb.iter().find(|y| y.key == x.key) else {
                        continue;
                    };
                    // A killed member's last view stops early: a prefix.
                    let cut_x = !x.finished && was_cut(a);
                    let cut_y = !y.finished && was_cut(b);
                    let ok = match (cut_x, cut_y) {
                        (false, false) => x.messages == y.messages,
                        (true, false) => y.messages.starts_with(&x.messages),
                        (false, true) => x.messages.starts_with(&y.messages),
                        (true, true) => {
                            x.messages.starts_with(&y.messages)
                                || y.messages.starts_with(&x.messages)
                        }
                    };
                    if !ok {
                        return Err(format!(
                            "{} and {} differ in view {:?}: {:?} vs {:?}",
                            a.member, b.member, x.key, x.messages, y.messages
                        ));
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn common_messages_are_delivered_in_one_total_order() {
    check(|run| {
        let orders: Vec<(Member, BTreeMap<Message, usize>)> = run
            .histories
            .iter()
            .map(|h| {
                let mut at = BTreeMap::new();
                for (i, e) in h.events.iter().enumerate() {
                    if let TransportEvent::Deliver { from, bytes } = e {
                        if at.insert((*from, bytes.clone()), i).is_some() {
                            return (h.member, BTreeMap::new());
                        }
                    }
                }
                (h.member, at)
            })
            .collect();
        for (a, at_a) in &orders {
            for (b, at_b) in &orders {
                let mut common: Vec<(&usize, &usize)> = at_a
                    .iter()
                    .filter_map(|(m, i)| Some((i, at_b.get(m)?)))
                    .collect();
                common.sort();
                if common.windows(2).any(|w| w[0].1 > w[1].1) {
                    return Err(format!(
                        "{a} and {b} deliver common messages in different orders"
                    ));
                }
            }
        }
        Ok(())
    });
}

#[test]
fn every_sent_message_comes_back_to_its_sender_in_send_order_exactly_once() {
    check(|run| {
        for h in &run.histories {
            let own: Vec<&Vec<u8>> = h
                .events
                .iter()
                .filter_map(|e| match e {
                    TransportEvent::Deliver { from, bytes } if *from == h.member => Some(bytes),
                    _ => None,
                })
                .collect();
            let sent: Vec<&Vec<u8>> = h.sent.iter().collect();
            let ok = if was_cut(h) {
                sent.starts_with(&own)
            } else {
                own == sent
            };
            if !ok {
                return Err(format!(
                    "{}: sent {} messages, read back {} (cut: {})",
                    h.member,
                    sent.len(),
                    own.len(),
                    was_cut(h)
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn a_message_is_delivered_only_to_the_view_it_was_sent_in() {
    check(|run| {
        for h in &run.histories {
            let mut view: Vec<Member> = Vec::new();
            for e in &h.events {
                match e {
                    TransportEvent::ConfChg { members, .. } => view = members.clone(),
                    TransportEvent::Deliver { from, .. } if !view.contains(from) => {
                        return Err(format!(
                            "{}: got a message from {from} outside its view",
                            h.member
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    });
}

#[test]
fn reasons_match_what_happened_to_the_member() {
    check(|run| {
        let by_member: BTreeMap<Member, &History> =
            run.histories.iter().map(|h| (h.member, h)).collect();
        for h in &run.histories {
            // Once a member left for good, it never comes back.
            let mut finished: BTreeSet<Member> = BTreeSet::new();
            for e in &h.events {
                let TransportEvent::ConfChg {
                    members,
                    joined,
                    left,
                } = e
                else {
                    continue;
                };
                for c in joined {
                    if finished.contains(&c.member) {
                        return Err(format!(
                            "{}: {} returned after leaving for good",
                            h.member, c.member
                        ));
                    }
                    let Some(other) = by_member.get(&c.member) else {
                        return Err(format!("{}: unknown member {}", h.member, c.member));
                    };
                    if c.reason == Reason::Join {
                        // Seen at the moment the member itself joined (unless
                        // it was killed before reading that far).
                        let first = other.events.iter().find(|e| is_confchg(e));
                        let same = match first {
                            Some(TransportEvent::ConfChg { members: m, .. }) => m == members,
                            _ => was_cut(other),
                        };
                        if !same {
                            return Err(format!(
                                "{}: saw {} Join but that is not its first view",
                                h.member, c.member
                            ));
                        }
                    }
                }
                for c in left {
                    let Some(other) = by_member.get(&c.member) else {
                        return Err(format!("{}: unknown member {}", h.member, c.member));
                    };
                    let left_itself = other.events.iter().any(|e| match e {
                        TransportEvent::ConfChg { left, .. } => own_leave(other, left),
                        _ => false,
                    });
                    match c.reason {
                        // A leaver killed before reading its own leave lost it.
                        Reason::Leave if !left_itself && !was_cut(other) => {
                            return Err(format!(
                                "{}: {} Leave without leaving",
                                h.member, c.member
                            ));
                        }
                        Reason::ProcDown if !was_cut(other) => {
                            return Err(format!(
                                "{}: {} ProcDown but not killed",
                                h.member, c.member
                            ));
                        }
                        Reason::Leave | Reason::ProcDown => {
                            finished.insert(c.member);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn rings_only_grow_and_quorum_is_a_strict_majority() {
    check(|run| {
        for h in &run.histories {
            let mut last_ring = 0;
            for e in &h.events {
                match e {
                    TransportEvent::TotemConfChg { ring_id, nodes } => {
                        if ring_id.seq <= last_ring {
                            return Err(format!(
                                "{}: ring seq {} after {last_ring}",
                                h.member, ring_id.seq
                            ));
                        }
                        if !nodes.contains(&h.member.node) || nodes.first() != Some(&ring_id.nodeid)
                        {
                            return Err(format!("{}: odd ring {ring_id:?} {nodes:?}", h.member));
                        }
                        last_ring = ring_id.seq;
                    }
                    TransportEvent::Quorum(q) => {
                        let majority = q.nodes.len() * 2 > run.nodes as usize;
                        if q.quorate != majority || q.ring_id.seq < last_ring {
                            return Err(format!(
                                "{}: quorum {q:?} with {} nodes",
                                h.member, run.nodes
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    });
}

#[test]
fn after_heal_every_open_member_converges_on_one_view() {
    check(|run| {
        for (member, view) in &run.final_views {
            if *view != run.cluster_members {
                return Err(format!(
                    "{member} ends with {view:?}, the group is {:?}",
                    run.cluster_members
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 77, 1234] {
        let (one, two) = (run(seed), run(seed));
        assert_eq!(one.log, two.log);
        let events = |r: &Run| -> Vec<Vec<TransportEvent>> {
            r.histories.iter().map(|h| h.events.clone()).collect()
        };
        assert_eq!(events(&one), events(&two), "seed {seed}");
    }
}

#[test]
fn the_schedules_exercise_every_reason_and_flow_control() {
    if std::env::var("SIM_SEED").is_ok() {
        return;
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut try_agains = 0;
    let mut quorum_lost = 0;
    for seed in seeds() {
        let run = run(seed);
        for h in &run.histories {
            try_agains += h.try_agains;
            for e in &h.events {
                match e {
                    TransportEvent::ConfChg { joined, left, .. } => {
                        for c in joined.iter().chain(left) {
                            *reasons.entry(format!("{:?}", c.reason)).or_default() += 1;
                        }
                    }
                    TransportEvent::Quorum(q) if !q.quorate => quorum_lost += 1,
                    _ => {}
                }
            }
        }
    }
    for reason in ["Join", "Leave", "NodeDown", "NodeUp", "ProcDown"] {
        assert!(
            reasons.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} in {reasons:?}"
        );
    }
    assert!(try_agains > 0, "no send was ever refused");
    assert!(quorum_lost > 0, "no member ever lost quorum");
    println!("reasons {reasons:?}, TryAgain {try_agains}, non-quorate notifications {quorum_lost}");
}
