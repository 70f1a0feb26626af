//! Names of children and of their incarnations.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::placement::SlotKey;

/// A child's place in a tree: the tree name, then the ids from the root
/// supervisor down to the child.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChildPath {
    /// The tree, as named in [`Event::TreeStarted`](super::Event::TreeStarted).
    pub tree: String,
    /// Child ids from the root down (never empty for a child).
    pub ids: Vec<String>,
}

impl ChildPath {
    /// A path from a tree name and ids.
    pub fn new<I, S>(tree: impl Into<String>, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ChildPath {
            tree: tree.into(),
            ids: ids.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for ChildPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tree)?;
        for id in &self.ids {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

/// The group-wide name of a child instance, where the format lives: the
/// path (`jobs/pipeline/parse`), then `@node2` for a per-node instance or
/// `@node2/1007` for a per-member one. [`crate::child_name`] and the
/// supervision events print it.
pub(crate) struct ChildName<'a>(pub(crate) &'a ChildPath, pub(crate) &'a SlotKey);

impl fmt::Display for ChildName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            SlotKey::Single => write!(f, "{}", self.0),
            SlotKey::Node(node) => write!(f, "{}@{node}", self.0),
            SlotKey::Member(member) => write!(f, "{}@{member}", self.0),
        }
    }
}

/// Names one start of one child: unique within the history of a tree's
/// state (a merge keeps the numbers of both sides apart by their hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IncarnationId(pub u64);

impl fmt::Display for IncarnationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A fencing token, ordered lexicographically: `epoch` (the ring or view
/// epoch fed in [`ViewChange::epoch`](super::ViewChange::epoch)), then
/// `seq` (the position in the ordered stream, counted by the engine).
/// Successive incarnations of a child get strictly growing tokens, so a
/// resource guarded by the token can refuse a stale incarnation.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FencingToken {
    /// Ring or view epoch.
    pub epoch: u64,
    /// Stream position.
    pub seq: u64,
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_order_by_epoch_then_seq() {
        let t = |epoch, seq| FencingToken { epoch, seq };
        assert!(t(1, 100) < t(2, 0));
        assert!(t(2, 1) < t(2, 2));
    }

    #[test]
    fn paths_display_as_slash_separated_ids() {
        assert_eq!(
            ChildPath::new("app", ["db", "pool"]).to_string(),
            "app/db/pool"
        );
    }
}
