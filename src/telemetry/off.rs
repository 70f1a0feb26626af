//! The recording half without the feature: the same calls, doing nothing
//! (each is empty and inlined away; the runtimes start no publish timer).

#![allow(unused_variables, clippy::unused_self)]

use super::{ElectionGauges, GroupGauges, ReplicaGauges};
use crate::group::MetricsSnapshot;
use crate::replicated::RefusedCounts;
use crate::supervisor::{ChildPath, SlotKey};
use crate::transport::{GroupName, Member};

/// The caller side of calls.
#[derive(Clone, Copy)]
pub(crate) struct CallTimers;

/// One call under way.
pub(crate) struct CallTimer;

impl CallTimers {
    #[inline(always)]
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        CallTimers
    }

    #[inline(always)]
    pub(crate) fn start(&self) -> CallTimer {
        CallTimer
    }
}

impl CallTimer {
    #[inline(always)]
    pub(crate) fn done(self, ok: bool) {}
}

/// The group runtime's series.
pub(crate) struct GroupTelemetry;

impl GroupTelemetry {
    #[inline(always)]
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        GroupTelemetry
    }
    #[inline(always)]
    pub(crate) fn publish(&mut self, s: &MetricsSnapshot, g: GroupGauges) {}
    #[inline(always)]
    pub(crate) fn closed(&mut self) {}
    #[inline(always)]
    pub(crate) fn confchg(&mut self) {}
    #[inline(always)]
    pub(crate) fn view_settled(&mut self) {}
    #[inline(always)]
    pub(crate) fn state_asked(&mut self) {}
    #[inline(always)]
    pub(crate) fn state_held(&mut self) {}
    #[inline(always)]
    pub(crate) fn exit_seen(&mut self, key: &(ChildPath, SlotKey)) {}
    #[inline(always)]
    pub(crate) fn started_elsewhere(&mut self, key: &(ChildPath, SlotKey)) {}
    #[inline(always)]
    pub(crate) fn running_here(&mut self, key: &(ChildPath, SlotKey)) {}
}

/// The replica runtime's series.
pub(crate) struct ReplicaTelemetry;

impl ReplicaTelemetry {
    #[inline(always)]
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        ReplicaTelemetry
    }
    #[inline(always)]
    pub(crate) fn publish(
        &mut self,
        s: &MetricsSnapshot,
        refused: &RefusedCounts,
        g: ReplicaGauges,
    ) {
    }
    #[inline(always)]
    pub(crate) fn closed(&mut self) {}
    #[inline(always)]
    pub(crate) fn confchg(&mut self) {}
    #[inline(always)]
    pub(crate) fn installed(&mut self, receiving: bool) {}
    #[inline(always)]
    pub(crate) fn restored(&mut self) {}
    #[inline(always)]
    pub(crate) fn multicast(&mut self, id: u64) {}
    #[inline(always)]
    pub(crate) fn outcome(&mut self, id: u64, applied: bool) {}
    #[inline(always)]
    pub(crate) fn forget_commands(&mut self) {}
}

/// The election runtime's series.
pub(crate) struct ElectionTelemetry;

impl ElectionTelemetry {
    #[inline(always)]
    pub(crate) fn new(group: &GroupName, member: Member) -> Self {
        ElectionTelemetry
    }
    #[inline(always)]
    pub(crate) fn publish(&mut self, g: ElectionGauges<'_>) {}
    #[inline(always)]
    pub(crate) fn delivered(&mut self) {}
    #[inline(always)]
    pub(crate) fn closed(&mut self) {}
    #[inline(always)]
    pub(crate) fn confchg(&mut self) {}
    #[inline(always)]
    pub(crate) fn installed(&mut self) {}
}
