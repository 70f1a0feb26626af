//! The canonical encoding of a tree spec, hashed into its fingerprint:
//! every field in a fixed order, every enum variant preceded by a one-byte
//! tag, sets sorted. Changing it is a protocol break, which is why a
//! golden-value test in `super` pins it.

use super::{
    ChildKind, ChildSpec, QuorumPolicy, RestartType, Shutdown, Strategy, SupervisorSpec, TreeSpec,
};
use crate::stable_hash::StableHasher;
use crate::supervisor::fingerprint::Fingerprint;
use crate::supervisor::placement::{Placement, PlacementPolicy};

/// Version prefix of the canonical encoding; bump it when the encoding changes.
const DOMAIN: &str = "actix-cpg/tree-spec/v1";

pub(super) fn fingerprint(spec: &TreeSpec) -> Fingerprint {
    let mut h = StableHasher::new();
    h.str(DOMAIN);
    h.u8(match spec.quorum_policy {
        QuorumPolicy::Stop => 0,
        QuorumPolicy::Freeze => 1,
        QuorumPolicy::Ignore => 2,
    });
    write_supervisor(&mut h, &spec.root);
    Fingerprint(h.finish())
}

fn write_supervisor(h: &mut StableHasher, spec: &SupervisorSpec) {
    h.u8(match spec.strategy {
        Strategy::OneForOne => 0,
        Strategy::OneForAll => 1,
        Strategy::RestForOne => 2,
    });
    h.u32(spec.intensity.max_restarts);
    h.u64(spec.intensity.period_ms);
    h.u64(spec.children.len() as u64);
    for child in &spec.children {
        write_child(h, child);
    }
}

fn write_child(h: &mut StableHasher, child: &ChildSpec) {
    h.str(&child.id);
    h.u8(match child.restart {
        RestartType::Permanent => 0,
        RestartType::Transient => 1,
        RestartType::Temporary => 2,
    });
    match child.shutdown {
        Shutdown::BrutalKill => h.u8(0),
        Shutdown::Timeout { ms } => h.u8(1).u64(ms),
        Shutdown::Infinity => h.u8(2),
    };
    match &child.kind {
        ChildKind::Worker(w) => {
            h.u8(0).str(&w.kind);
            write_placement(h, &w.placement);
        }
        ChildKind::Supervisor(s) => {
            h.u8(1);
            write_supervisor(h, s);
        }
    }
}

fn write_placement(h: &mut StableHasher, p: &Placement) {
    match p.policy {
        PlacementPolicy::Any => h.u8(0),
        PlacementPolicy::Pinned(node) => h.u8(1).u32(node.0),
        PlacementPolicy::OnePerNode => h.u8(2),
        PlacementPolicy::OnEveryMember => h.u8(3),
        PlacementPolicy::Singleton => h.u8(4),
    };
    // Weights and exclusions are sets: hash them sorted so the order a spec
    // lists them in does not change its identity.
    let mut weights = p.weights.clone();
    weights.sort();
    weights.dedup_by_key(|(node, _)| *node);
    h.u64(weights.len() as u64);
    for (node, w) in weights {
        h.u32(node.0).u32(w);
    }
    let mut exclude = p.exclude.clone();
    exclude.sort();
    exclude.dedup();
    h.u64(exclude.len() as u64);
    for node in exclude {
        h.u32(node.0);
    }
}
