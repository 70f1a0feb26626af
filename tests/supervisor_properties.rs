//! Property tests of the supervision engine over random histories.
//!
//! A small cluster of six members (three nodes) lives through a random
//! history: joins (with state transfer), leaves with every reason,
//! partitions and merges, child exits (current and stale), ticks, quorum
//! flaps and tree starts. Every member owns an engine and executes only
//! the commands addressed to it, so the test sees which actors really run.
//! After every step it checks:
//!
//! - every member of a partition holds an equal engine, and each event
//!   gave every member an equal output (so an escalation happens at the
//!   same stream position everywhere);
//! - the actors that really run in a partition are exactly the ones its
//!   engine believes run, so no child runs twice, merges included;
//! - in a view that may start children and holds a member that started
//!   the tree (its hosts), every supervised permanent child placed by `Any`
//!   or `Singleton` runs on exactly one member of the view;
//! - a transient child that exits normally stays down;
//! - on every member, successive starts of a slot carry strictly growing
//!   fencing tokens.

use std::collections::{BTreeMap, BTreeSet};

use actix_cpg::supervisor::{
    ChildPath, ChildSpec, Command, Engine, Event, FencingToken, IncarnationId, Output, Placement,
    PlacementPolicy, QuorumPolicy, RestartType, SlotKey, SlotStatus, Strategy as Restarts,
    SupervisorSpec, TreeSpec, ViewChange,
};
use actix_cpg::transport::{Member, MemberChange, NodeId, Reason};
use proptest::prelude::*;

const UNIVERSE: u32 = 6;

fn member(i: u32) -> Member {
    Member::new(1 + i / 2, 1000 + i)
}

fn spec_t(variant: u8) -> TreeSpec {
    let strategy = if variant == 0 {
        Restarts::OneForOne
    } else {
        Restarts::RestForOne
    };
    TreeSpec::new(
        SupervisorSpec::new(strategy)
            .intensity(3, 2_000)
            .child(ChildSpec::worker("p1", "k"))
            .child(ChildSpec::worker("t1", "k").restart(RestartType::Transient))
            .child(ChildSpec::worker("tmp", "k").restart(RestartType::Temporary))
            .child(ChildSpec::worker("single", "k").placement(Placement::singleton()))
            .child(ChildSpec::supervisor(
                "sub",
                SupervisorSpec::new(Restarts::OneForAll)
                    .intensity(2, 1_000)
                    .child(ChildSpec::worker("p2", "k"))
                    .child(ChildSpec::worker("t2", "k").restart(RestartType::Transient))
                    .child(ChildSpec::worker("every", "k").placement(Placement::on_every_member()))
                    .child(ChildSpec::worker("pernode", "k").placement(Placement::one_per_node())),
            ))
            .child(ChildSpec::supervisor(
                "pinned",
                SupervisorSpec::new(Restarts::RestForOne)
                    .intensity(1, 500)
                    .child(ChildSpec::worker("pin", "k").placement(Placement::pinned(NodeId(2))))
                    .child(ChildSpec::worker("p3", "k")),
            )),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

fn spec_u() -> TreeSpec {
    TreeSpec::new(
        SupervisorSpec::new(Restarts::OneForAll)
            .intensity(2, 1_000)
            .child(ChildSpec::worker("a", "k"))
            .child(ChildSpec::worker("b", "k").restart(RestartType::Transient))
            .child(ChildSpec::worker("c", "k")),
    )
    .quorum_policy(QuorumPolicy::Ignore)
}

#[derive(Clone, Debug)]
enum Op {
    Join(u8, u8),
    Leave(u8, u8),
    Split(u8, u8),
    Merge(u8, u8),
    Exit {
        part: u8,
        pick: u8,
        normal: bool,
        stale: bool,
    },
    Tick(u8, u16),
    Quorum(u8, bool),
    Start {
        part: u8,
        tree: u8,
        by: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Join(a, b)),
        2 => (any::<u8>(), 0u8..3).prop_map(|(a, b)| Op::Leave(a, b)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Split(a, b)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Merge(a, b)),
        6 => (any::<u8>(), any::<u8>(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(part, pick, normal, stale)| Op::Exit { part, pick, normal, stale }),
        3 => (any::<u8>(), 0u16..1500).prop_map(|(a, b)| Op::Tick(a, b)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Op::Quorum(a, b)),
        2 => (any::<u8>(), 0u8..3, any::<u8>()).prop_map(|(part, tree, by)| Op::Start { part, tree, by }),
    ]
}

/// What a member really runs. A set, so a second start of a slot on the
/// same member shows up as a second actor.
type Actors = BTreeSet<(ChildPath, SlotKey, IncarnationId)>;

#[derive(Default)]
struct World {
    /// Each partition's members, sorted.
    parts: Vec<Vec<Member>>,
    engines: BTreeMap<Member, Engine>,
    actors: BTreeMap<Member, Actors>,
    /// Last start token per slot, per member (fencing must grow).
    tokens: BTreeMap<Member, BTreeMap<(ChildPath, SlotKey), FencingToken>>,
    /// Past incarnations per partition, for stale reports.
    history: Vec<(ChildPath, IncarnationId, Member)>,
    epoch: u64,
    clock: u64,
}

fn changes(list: &[Member], reason: Reason) -> Vec<MemberChange> {
    list.iter()
        .map(|m| MemberChange { member: *m, reason })
        .collect()
}

impl World {
    fn view_change(
        &mut self,
        members: &[Member],
        joined: Vec<MemberChange>,
        left: Vec<MemberChange>,
    ) -> Event {
        self.epoch += 1;
        Event::ViewChanged(ViewChange {
            epoch: self.epoch,
            members: members.to_vec(),
            joined,
            left,
        })
    }

    fn execute(&mut self, m: Member, out: &Output) -> Result<(), TestCaseError> {
        let actors = self.actors.entry(m).or_default();
        let tokens = self.tokens.entry(m).or_default();
        for c in &out.commands {
            match c {
                Command::StartChild {
                    path,
                    slot,
                    host,
                    incarnation,
                    token,
                    ..
                } => {
                    let key = (path.clone(), *slot);
                    if let Some(last) = tokens.get(&key) {
                        prop_assert!(token > last, "token {token} after {last} for {path}");
                    }
                    tokens.insert(key.clone(), *token);
                    if *host == m {
                        actors.insert((path.clone(), *slot, *incarnation));
                    }
                }
                Command::StopChild {
                    path,
                    slot,
                    host,
                    incarnation,
                    ..
                } if *host == m => {
                    actors.remove(&(path.clone(), *slot, *incarnation));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Delivers `ev` to every member of `members`; with `same`, checks that
    /// all of them produce the same output and end in the same state.
    fn deliver(
        &mut self,
        members: &[Member],
        ev: &Event,
        same: bool,
    ) -> Result<Output, TestCaseError> {
        let mut first: Option<(Output, Engine)> = None;
        for m in members {
            let engine = self.engines.entry(*m).or_default();
            let out = engine.handle(ev.clone());
            for c in &out.commands {
                if let Command::Escalated { at, .. } = c {
                    // Equal outputs make the position equal everywhere; it is
                    // never ahead of the stream (replays after a merge may
                    // decide at an earlier buffered position).
                    prop_assert!(at.seq <= engine.seq(), "escalation ahead of the stream");
                }
                if let Command::StartChild {
                    path,
                    incarnation,
                    host,
                    ..
                } = c
                {
                    self.history.push((path.clone(), *incarnation, *host));
                }
            }
            let engine = engine.clone();
            self.execute(*m, &out)?;
            match &first {
                None => first = Some((out, engine)),
                Some((o, e)) if same => {
                    prop_assert_eq!(o, &out, "outputs differ at {}", m);
                    prop_assert_eq!(e, &engine, "states differ at {}", m);
                }
                Some(_) => {}
            }
        }
        Ok(first.map(|(o, _)| o).unwrap_or_default())
    }

    fn alive(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// A partition is quorate when it holds more than half of the live
    /// members, so at most one partition is.
    fn update_quorum(&mut self) -> Result<(), TestCaseError> {
        let alive = self.alive();
        for p in self.parts.clone() {
            let quorate = p.len() * 2 > alive;
            let e = &self.engines[&p[0]];
            if e.quorate() != quorate || e.quorum_fenced() {
                let nodes = self.nodes_of(&p);
                self.deliver(&p, &Event::QuorumChanged { quorate, nodes }, true)?;
            }
        }
        Ok(())
    }

    /// The nodes a quorum report of partition `p` lists: those whose live
    /// members are all in `p`.
    fn nodes_of(&self, p: &[Member]) -> Vec<NodeId> {
        let others: Vec<NodeId> = self
            .parts
            .iter()
            .filter(|q| q.as_slice() != p)
            .flatten()
            .map(|m| m.node)
            .collect();
        let mut nodes: Vec<NodeId> = p
            .iter()
            .map(|m| m.node)
            .filter(|n| !others.contains(n))
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    fn drop_member(&mut self, m: Member) {
        self.engines.remove(&m);
        self.actors.remove(&m);
        self.tokens.remove(&m);
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let np = self.parts.len();
        match *op {
            Op::Join(who, into) => {
                let down: Vec<Member> = (0..UNIVERSE)
                    .map(member)
                    .filter(|m| !self.parts.iter().any(|p| p.contains(m)))
                    .collect();
                if down.is_empty() {
                    return Ok(());
                }
                let m = down[who as usize % down.len()];
                let joined = changes(&[m], Reason::Join);
                if np == 0 {
                    let ev = self.view_change(&[m], joined, vec![]);
                    self.parts.push(vec![m]);
                    self.deliver(&[m], &ev, true)?;
                } else {
                    let i = into as usize % np;
                    let mut members = self.parts[i].clone();
                    members.push(m);
                    members.sort();
                    let ev = self.view_change(&members, joined, vec![]);
                    let old = self.parts[i].clone();
                    let tokens = self.tokens.get(&old[0]).cloned().unwrap_or_default();
                    let out = self.deliver(&old, &ev, true)?;
                    // State transfer: the joiner gets the state as of the
                    // confchg that admitted it, and the commands of that step.
                    let source = self.engines[&old[0]].clone();
                    self.engines.insert(m, source);
                    self.tokens.insert(m, tokens);
                    self.execute(m, &out)?;
                    self.parts[i] = members;
                }
                self.update_quorum()
            }
            Op::Leave(who, why) => {
                let all: Vec<Member> = self.parts.concat();
                if all.is_empty() {
                    return Ok(());
                }
                let m = all[who as usize % all.len()];
                let reason = [Reason::Leave, Reason::ProcDown, Reason::NodeDown][why as usize % 3];
                let i = self.parts.iter().position(|p| p.contains(&m)).unwrap_or(0);
                self.parts[i].retain(|x| *x != m);
                self.drop_member(m);
                let rest = self.parts[i].clone();
                if rest.is_empty() {
                    self.parts.remove(i);
                } else {
                    let ev = self.view_change(&rest, vec![], changes(&[m], reason));
                    self.deliver(&rest, &ev, true)?;
                }
                self.update_quorum()
            }
            Op::Split(which, mask) => {
                if np == 0 {
                    return Ok(());
                }
                let i = which as usize % np;
                let p = self.parts[i].clone();
                let a: Vec<Member> = p
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| mask & (1 << k) != 0)
                    .map(|(_, m)| *m)
                    .collect();
                let b: Vec<Member> = p.iter().copied().filter(|m| !a.contains(m)).collect();
                if a.is_empty() || b.is_empty() {
                    return Ok(());
                }
                let ev_a = self.view_change(&a, vec![], changes(&b, Reason::NodeDown));
                let ev_b = self.view_change(&b, vec![], changes(&a, Reason::NodeDown));
                self.deliver(&a, &ev_a, true)?;
                self.deliver(&b, &ev_b, true)?;
                self.parts[i] = a;
                self.parts.push(b);
                self.update_quorum()
            }
            Op::Merge(x, y) => {
                if np < 2 {
                    return Ok(());
                }
                let i = x as usize % np;
                let j = (i + 1 + y as usize % (np - 1)) % np;
                let (a, b) = (self.parts[i].clone(), self.parts[j].clone());
                let mut all = [a.clone(), b.clone()].concat();
                all.sort();
                let ev_a = self.view_change(&all, changes(&b, Reason::NodeUp), vec![]);
                let ev_b = self.view_change(&all, changes(&a, Reason::NodeUp), vec![]);
                self.deliver(&a, &ev_a, true)?;
                self.deliver(&b, &ev_b, true)?;
                let mut offers = Vec::new();
                for side in [&a, &b] {
                    let reps: Vec<Member> = side
                        .iter()
                        .copied()
                        .filter(|m| self.engines[m].should_offer(*m))
                        .collect();
                    prop_assert_eq!(reps.len(), 1, "one representative per side");
                    let offer = self.engines[&reps[0]].merge_offer();
                    prop_assert!(offer.is_some());
                    offers.push(Event::StateOffered {
                        from: reps[0],
                        offer: offer.unwrap_or_else(|| unreachable!()),
                    });
                }
                let (hi, lo) = (i.max(j), i.min(j));
                self.parts.remove(hi);
                self.parts[lo] = all.clone();
                // Something happens while the sides exchange their states.
                self.clock += 10;
                let tick = Event::Tick { now_ms: self.clock };
                self.deliver(&all, &tick, false)?;
                // The sides differ until the last offer; from it on they agree.
                let (last, rest) = offers.split_last().unwrap_or_else(|| unreachable!());
                for offer in rest {
                    self.deliver(&all, offer, false)?;
                }
                self.deliver(&all, last, true)?;
                let first = &self.engines[&all[0]];
                prop_assert!(!first.is_merging());
                for m in &all {
                    prop_assert_eq!(&self.engines[m], first, "merged states differ");
                }
                self.update_quorum()
            }
            Op::Exit {
                part,
                pick,
                normal,
                stale,
            } => {
                if np == 0 {
                    return Ok(());
                }
                let p = self.parts[part as usize % np].clone();
                let engine = &self.engines[&p[0]];
                let (path, incarnation, host) = if stale {
                    if self.history.is_empty() {
                        return Ok(());
                    }
                    self.history[pick as usize % self.history.len()].clone()
                } else {
                    let running = engine.running();
                    if running.is_empty() {
                        return Ok(());
                    }
                    let c = &running[pick as usize % running.len()];
                    let SlotStatus::Running {
                        host, incarnation, ..
                    } = c.status
                    else {
                        return Ok(());
                    };
                    (c.path.clone(), incarnation, host)
                };
                let current = engine.is_current(&path, incarnation, host);
                let transient = engine
                    .children()
                    .into_iter()
                    .any(|c| c.path == path && c.restart == RestartType::Transient);
                let merging = engine.is_merging();
                // The host's actor really ended.
                // The host's actor really ended (a stale report names an
                // actor that is already gone, or one in another partition).
                if p.contains(&host) {
                    if let Some(actors) = self.actors.get_mut(&host) {
                        actors.retain(|(pa, _, inc)| !(*pa == path && *inc == incarnation));
                    }
                }
                let ev = Event::ChildExited {
                    path: path.clone(),
                    incarnation,
                    host,
                    normal,
                };
                self.deliver(&p, &ev, true)?;
                if current && transient && normal && !merging {
                    let after = self.engines[&p[0]]
                        .children()
                        .into_iter()
                        .find(|c| c.path == path)
                        .map(|c| c.status);
                    prop_assert_eq!(
                        after,
                        Some(SlotStatus::Stopped),
                        "transient {} came back",
                        path
                    );
                }
                Ok(())
            }
            Op::Tick(part, delta) => {
                if np == 0 {
                    return Ok(());
                }
                self.clock += u64::from(delta);
                let p = self.parts[part as usize % np].clone();
                self.deliver(&p, &Event::Tick { now_ms: self.clock }, true)
                    .map(drop)
            }
            Op::Quorum(part, quorate) => {
                if np == 0 {
                    return Ok(());
                }
                let p = self.parts[part as usize % np].clone();
                let nodes = self.nodes_of(&p);
                self.deliver(&p, &Event::QuorumChanged { quorate, nodes }, true)
                    .map(drop)
            }
            Op::Start { part, tree, by } => {
                if np == 0 {
                    return Ok(());
                }
                let p = self.parts[part as usize % np].clone();
                let (name, spec) = match tree {
                    0 => ("t", spec_t(0)),
                    1 => ("t", spec_t(1)),
                    _ => ("u", spec_u()),
                };
                let ev = Event::TreeStarted {
                    name: name.into(),
                    fingerprint: spec.fingerprint(),
                    kinds: spec.worker_kinds().into_iter().collect(),
                    spec,
                    by: p[by as usize % p.len()],
                };
                self.deliver(&p, &ev, true).map(drop)
            }
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for p in &self.parts {
            let e = &self.engines[&p[0]];
            for m in p {
                prop_assert_eq!(&self.engines[m], e, "members of one partition disagree");
            }
            if e.is_merging() {
                continue;
            }
            let believed: BTreeMap<(ChildPath, SlotKey), (Member, IncarnationId)> = e
                .running()
                .into_iter()
                .filter_map(|c| match c.status {
                    SlotStatus::Running {
                        host, incarnation, ..
                    } => Some(((c.path, c.slot), (host, incarnation))),
                    _ => None,
                })
                .collect();
            let mut real = BTreeMap::new();
            for m in p {
                for (path, slot, inc) in self.actors.get(m).into_iter().flatten() {
                    let key = (path.clone(), *slot);
                    prop_assert!(
                        real.insert(key.clone(), (*m, *inc)).is_none(),
                        "{:?} runs twice",
                        key
                    );
                }
            }
            prop_assert_eq!(&real, &believed, "actors differ from the engine's belief");

            for c in e.children() {
                // Every start here says it can build every kind: a view
                // holding any host of the tree can run all of it.
                let hosted = e.tree_hosts(&c.path.tree).iter().any(|h| p.contains(h));
                let may_start =
                    hosted && ((e.quorate() && !e.quorum_fenced()) || c.path.tree == "u");
                let placed_anywhere =
                    matches!(c.policy, PlacementPolicy::Any | PlacementPolicy::Singleton);
                if c.supervised
                    && c.restart == RestartType::Permanent
                    && placed_anywhere
                    && may_start
                {
                    match c.status {
                        SlotStatus::Running { host, .. } => {
                            prop_assert!(p.contains(&host), "{} on a non-member", c.path)
                        }
                        s => prop_assert!(
                            false,
                            "permanent {} is {:?} in a view that may start it",
                            c.path,
                            s
                        ),
                    }
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(ops in prop::collection::vec(op(), 1..80)) {
        let mut world = World::default();
        // Start from one partition of three members running both trees.
        for k in 0..3u8 {
            world.step(&Op::Join(k, 0))?;
        }
        world.step(&Op::Start { part: 0, tree: 0, by: 0 })?;
        world.step(&Op::Start { part: 0, tree: 2, by: 1 })?;
        world.check()?;
        for op in &ops {
            world.step(op)?;
            world.check()?;
        }
    }
}

/// A raw event; an exit names a running slot by index, resolved against
/// the engines' state when it is fed.
#[derive(Clone, Debug)]
enum Raw {
    Event(Event),
    Exit {
        pick: usize,
        normal: bool,
        skew: u64,
    },
}

fn raw() -> impl Strategy<Value = Raw> {
    let m = (0..UNIVERSE).prop_map(member);
    let reason = prop::sample::select(vec![
        Reason::Join,
        Reason::Leave,
        Reason::NodeDown,
        Reason::NodeUp,
        Reason::ProcDown,
    ]);
    let change = (m.clone(), reason).prop_map(|(member, reason)| MemberChange { member, reason });
    prop_oneof![
        3 => (
            0u64..20,
            prop::collection::vec(m.clone(), 0..6),
            prop::collection::vec(change.clone(), 0..3),
            prop::collection::vec(change, 0..3)
        )
            .prop_map(|(epoch, members, joined, left)| Raw::Event(Event::ViewChanged(ViewChange {
                epoch,
                members,
                joined,
                left
            }))),
        5 => (any::<usize>(), any::<bool>(), 0u64..3).prop_map(|(pick, normal, skew)| Raw::Exit { pick, normal, skew }),
        2 => (0u64..10_000).prop_map(|now_ms| Raw::Event(Event::Tick { now_ms })),
        1 => (any::<bool>(), proptest::collection::vec(1u32..4, 0..3)).prop_map(|(quorate, nodes)| {
            Raw::Event(Event::QuorumChanged {
                quorate,
                nodes: nodes.into_iter().map(NodeId).collect(),
            })
        }),
        1 => (0u8..3, m).prop_map(|(t, by)| {
            let spec = if t == 2 { spec_u() } else { spec_t(t) };
            let name = if t == 2 { "u" } else { "t" };
            Raw::Event(Event::TreeStarted {
                name: name.into(),
                fingerprint: spec.fingerprint(),
                kinds: spec.worker_kinds().into_iter().collect(),
                spec,
                by,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Three engines fed one random stream of raw events (including
    /// nonsense: confchgs that contradict themselves, merges nobody
    /// answers, unknown or stale incarnations, time and epochs going back)
    /// stay equal, return equal outputs, and never panic.
    #[test]
    fn engines_fed_one_stream_agree_on_every_step(stream in prop::collection::vec(raw(), 1..150)) {
        let mut engines = [Engine::new(), Engine::new(), Engine::new()];
        for r in stream {
            let ev = match r {
                Raw::Event(ev) => ev,
                Raw::Exit { pick, normal, skew } => {
                    let running = engines[0].running();
                    if running.is_empty() {
                        continue;
                    }
                    let c = &running[pick % running.len()];
                    let SlotStatus::Running { host, incarnation, .. } = c.status else { continue };
                    Event::ChildExited {
                        path: c.path.clone(),
                        incarnation: IncarnationId(incarnation.0.saturating_sub(skew)),
                        host,
                        normal,
                    }
                }
            };
            let outs: Vec<Output> = engines.iter_mut().map(|e| e.handle(ev.clone())).collect();
            prop_assert_eq!(&outs[0], &outs[1]);
            prop_assert_eq!(&outs[0], &outs[2]);
            prop_assert_eq!(&engines[0], &engines[1]);
            prop_assert_eq!(&engines[0], &engines[2]);
        }
    }
}
