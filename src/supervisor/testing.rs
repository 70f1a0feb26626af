//! Test helpers: members, confchgs, and a cluster of engines whose members
//! execute the commands addressed to them, so a test can count the actors
//! that really run.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::transport::{Member, MemberChange, Reason};

pub(crate) fn m(n: u32) -> Member {
    Member::new(n, 100 + n)
}

pub(crate) fn change(
    members: &[Member],
    epoch: u64,
    joined: &[(Member, Reason)],
    left: &[(Member, Reason)],
) -> Event {
    let ch = |l: &[(Member, Reason)]| {
        l.iter()
            .map(|(member, reason)| MemberChange {
                member: *member,
                reason: *reason,
            })
            .collect()
    };
    Event::ViewChanged(ViewChange {
        epoch,
        members: members.to_vec(),
        joined: ch(joined),
        left: ch(left),
    })
}

/// `by` starts (or joins) the tree, able to build every kind it names.
pub(crate) fn started(name: &str, spec: &TreeSpec, by: Member) -> Event {
    Event::TreeStarted {
        name: name.to_owned(),
        fingerprint: spec.fingerprint(),
        spec: spec.clone(),
        by,
        kinds: spec.worker_kinds().into_iter().collect(),
    }
}

/// An engine that saw `members` join, quorum, and the tree `t` started by
/// every member (each able to build every kind).
pub(crate) fn boot(members: &[Member], spec: &TreeSpec) -> (Engine, Output) {
    let mut e = Engine::new();
    let joined: Vec<_> = members.iter().map(|m| (*m, Reason::Join)).collect();
    let mut out = e.handle(change(members, 1, &joined, &[]));
    out.extend(e.handle(Event::QuorumChanged {
        quorate: true,
        nodes: vec![],
    }));
    for m in members {
        out.extend(e.handle(started("t", spec, *m)));
    }
    (e, out)
}

pub(crate) fn path(ids: &[&str]) -> ChildPath {
    ChildPath::new("t", ids.iter().copied())
}

/// The running incarnation of a single-slot worker.
pub(crate) fn running(e: &Engine, ids: &[&str]) -> Option<(Member, IncarnationId, FencingToken)> {
    let p = path(ids);
    e.children().into_iter().find_map(|c| match c.status {
        SlotStatus::Running {
            host,
            incarnation,
            token,
        } if c.path == p => Some((host, incarnation, token)),
        _ => None,
    })
}

pub(crate) fn status(e: &Engine, ids: &[&str]) -> Option<SlotStatus> {
    let p = path(ids);
    e.children()
        .into_iter()
        .find(|c| c.path == p)
        .map(|c| c.status)
}

/// Reports an exit of the running incarnation of `ids`.
pub(crate) fn exit(e: &mut Engine, ids: &[&str], normal: bool) -> Output {
    let (host, incarnation, _) = running(e, ids).expect("child runs");
    e.handle(Event::ChildExited {
        path: path(ids),
        incarnation,
        host,
        normal,
    })
}

/// `(verb, last id)` of each start/stop command, in order.
pub(crate) fn verbs(out: &Output) -> Vec<(&'static str, String)> {
    out.commands
        .iter()
        .filter_map(|c| match c {
            Command::StartChild { path, .. } => Some(("start", path.ids.join("/"))),
            Command::StopChild { path, .. } => Some(("stop", path.ids.join("/"))),
            _ => None,
        })
        .collect()
}

/// Members with their own engines; each executes only its own commands.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    pub(crate) engines: BTreeMap<Member, Engine>,
    /// The actors each member really runs. A set, so a second start of a
    /// slot on the same member shows up as a second actor.
    pub(crate) actors: BTreeMap<Member, BTreeSet<(ChildPath, SlotKey, IncarnationId)>>,
}

impl Cluster {
    pub(crate) fn execute(&mut self, member: Member, out: &Output) {
        let actors = self.actors.entry(member).or_default();
        for c in &out.commands {
            match c {
                Command::StartChild {
                    path,
                    slot,
                    host,
                    incarnation,
                    ..
                } if *host == member => {
                    actors.insert((path.clone(), *slot, *incarnation));
                }
                Command::StopChild {
                    path,
                    slot,
                    host,
                    incarnation,
                    ..
                } if *host == member => {
                    actors.remove(&(path.clone(), *slot, *incarnation));
                }
                _ => {}
            }
        }
    }

    /// Feeds `event` to the given members' engines, executing their outputs.
    pub(crate) fn feed(&mut self, members: &[Member], event: &Event) {
        for member in members {
            let out = self
                .engines
                .entry(*member)
                .or_default()
                .handle(event.clone());
            self.execute(*member, &out);
        }
    }

    /// How many actors run for each slot, across all members.
    pub(crate) fn instances(&self) -> BTreeMap<(ChildPath, SlotKey), usize> {
        let mut count = BTreeMap::new();
        for actors in self.actors.values() {
            for (path, slot, _) in actors {
                *count.entry((path.clone(), *slot)).or_insert(0) += 1;
            }
        }
        count
    }
}
