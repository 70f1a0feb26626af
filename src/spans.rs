//! The library's tracing spans: their names and fields, in one place.
//!
//! A process may run several groups, replicas and elections at once; every
//! line the library logs runs inside the span of the runtime it belongs to,
//! so a subscriber that prints span fields (`tracing_subscriber::fmt` does)
//! says which group and which member each line is about. Calls get a span
//! on each side, with the same `request` value, so one call can be
//! followed from its caller to its host and back by that value alone.
//!
//! | span | level | fields | where it is entered |
//! |---|---|---|---|
//! | `acpg` | info | `protocol` (`registry`, `replica`, `election`), `group`, `member` | every turn of a runtime (its event pump, timers, replies) |
//! | `acpg.call` | debug | `group`, `request`, `target`, `type` | on the caller, from [`RemoteAddr::send`] or [`RemoteAddr::tell`] to its outcome |
//! | `acpg.request` | debug | `request`, `target`, `type` | on the host, from the request's delivery to its reply being queued (inside `acpg`) |
//! | `supervision` | debug | `seq` | one supervision step (inside `acpg`) |
//!
//! **The trace context** of a call is its `request` value,
//! `CALLER#ID` (`node2/1007#17`): the caller's CPG identity, which corosync
//! attaches to every delivery, and the request id, which the request head
//! carries. Every member that sees the request (its host, and any member
//! logging a refusal of it) names it by the same value; ids never repeat
//! for one caller process. [`RemoteAddr::try_tell`] makes no caller span
//! (there is no future to follow), and the host span covers the library's
//! part of a request — the user's handler runs in its own actor, outside
//! any span of the library.
//!
//! Decisions are logged at `info` inside the runtime span, each with its
//! reason: confchgs (who joined or left, and why), supervision decisions
//! (placements, restarts, exits, stops, escalations, quorum), elections
//! (leaders elected, deposed) and replicas' primary components.
//!
//! [`RemoteAddr::send`]: crate::RemoteAddr::send
//! [`RemoteAddr::tell`]: crate::RemoteAddr::tell
//! [`RemoteAddr::try_tell`]: crate::RemoteAddr::try_tell

use std::fmt;

use tracing::Span;

use crate::transport::{GroupName, Member, MemberChange};

/// The protocol a runtime speaks, as the `protocol` field names it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    Registry,
    Replica,
    Election,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Registry => "registry",
            Protocol::Replica => "replica",
            Protocol::Election => "election",
        }
    }
}

/// The span of one runtime.
pub(crate) fn runtime(protocol: Protocol, group: &GroupName, member: Member) -> Span {
    tracing::info_span!(
        "acpg",
        protocol = %protocol.as_str(),
        group = %group,
        member = %member
    )
}

/// Logs a confchg at `info`, with who joined or left and why:
/// `confchg: node2/1007 joined, node3/1009 left (node down); 2 in the view`.
pub(crate) fn confchg(members: &[Member], joined: &[MemberChange], left: &[MemberChange]) {
    if tracing::enabled!(tracing::Level::INFO) {
        let changes: Vec<String> = joined.iter().chain(left).map(ToString::to_string).collect();
        tracing::info!(
            "confchg: {}; {} in the view",
            changes.join(", "),
            members.len()
        );
    }
}

/// Logs why a runtime's transport closed: at `error`, but at `info` for a
/// sim process that was killed (a real one would log nothing at all).
pub(crate) fn transport_closed(group: &GroupName, error: &crate::transport::TransportError) {
    if matches!(error, crate::transport::TransportError::Killed(_)) {
        tracing::info!(%group, "transport closed: {error}");
    } else {
        tracing::error!(%group, "transport closed: {error}");
    }
}

/// The trace context of a call: `CALLER#ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestKey {
    pub caller: Member,
    pub id: u64,
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.caller, self.id)
    }
}

/// The caller's span of one call.
pub(crate) fn call(group: &GroupName, request: RequestKey, target: &str, type_tag: &str) -> Span {
    tracing::debug_span!(
        "acpg.call",
        group = %group,
        request = %request,
        target,
        r#type = type_tag
    )
}

/// The host's span of one request; a child of the runtime's span.
pub(crate) fn request(parent: &Span, request: RequestKey, target: &str, type_tag: &[u8]) -> Span {
    tracing::debug_span!(
        parent: parent,
        "acpg.request",
        request = %request,
        target,
        r#type = %String::from_utf8_lossy(type_tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_key_names_the_caller_and_the_id() {
        let key = RequestKey {
            caller: Member::new(2, 1007),
            id: 17,
        };
        assert_eq!(key.to_string(), "node2/1007#17");
    }
}
