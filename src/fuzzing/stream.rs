//! The byte format of a fuzz input: a small, stable decoder that turns any
//! bytes into an ordered stream of group events, so a mutation of one byte
//! changes one event and the corpora stay valid across library changes.
//!
//! ```text
//!  input  := pool first flags op*
//!  pool   := 6 × (node u32 LE, pid u32 LE)      members 0 and 1 are driven
//!  first  := u8   bit i: pool member 2+i is in the first view too
//!  flags  := u8   bit 0: the others were there before (only 0 and 1 join)
//!                 bit 1: safe delivery (replicated); with bit 2 too,
//!                        every holder's acknowledgement (`SafeAll`)
//!                 bit 3: the replicas ask for a linearizable read at
//!                        every fourth delivery (replicated)
//!                 bits 2..8: clock skew of member 1 (election), in ms
//!  op     := tag u8, then by tag % 5:
//!    0 deliver  sender u8 · wrap u8 · len u16 LE · len bytes (fewer if the
//!               input ends)
//!    1 confchg  4 × u8, one per other member (pool 2..6), by value % 8:
//!               3 join (Join) · 4 join (NodeUp) · 5 leave (Leave) ·
//!               6 leave (ProcDown) · 7 leave (NodeDown) · else nothing
//!    2 quorum   quorate u8 · ring step u8 · node mask u8
//!    3 tick     ms u16 LE
//!    4 echo     core u8 · index u8: multicast the driven core's pending
//!               message `index` (mod their number), delivered to both
//! ```
//!
//! A sender is `pool[sender % 6]` if it is in the view, else the view's
//! member `sender % len`. `wrap % 16` in `1..=11` puts the bytes behind a
//! header of [`WRAP_KINDS`]`[wrap - 1]`, so a mutation reaches a body
//! without rediscovering the magic; anything else delivers them as they are.
//! A confchg that changes nothing, or an op cut short, is skipped.

use crate::transport::{Member, MemberChange, NodeId, Reason};
use crate::wire::Kind;

/// Members in a stream: two driven cores and four others.
pub const POOL: usize = 6;

/// Header kinds a delivery can be wrapped in (see the module docs).
pub const WRAP_KINDS: [Kind; 11] = [
    Kind::Registry,
    Kind::Request,
    Kind::Reply,
    Kind::Snapshot,
    Kind::SyncRequest,
    Kind::Batch,
    Kind::Chunk,
    Kind::Replicated,
    Kind::Election,
    Kind::Supervision,
    Kind::Announce,
];

/// One event of a fuzz stream, before the membership rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Bytes multicast by a member of the view.
    Deliver {
        /// Picks the sender (see the module docs).
        sender: u8,
        /// Picks a header to put in front, or none.
        wrap: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A membership change: one action per other member.
    ConfChg {
        /// `value % 8` per other member, as in the module docs.
        actions: [u8; POOL - 2],
    },
    /// A quorum notification, the same at both driven members.
    Quorum {
        /// Whether the partition is quorate.
        quorate: bool,
        /// Added to the ring sequence, which only grows.
        ring_step: u8,
        /// Bit i: the node of pool member i is in the partition.
        nodes: u8,
    },
    /// Time passes.
    Tick {
        /// Milliseconds.
        ms: u16,
    },
    /// A driven core's own pending message goes out.
    Echo {
        /// Which driven core (`% 2`).
        core: u8,
        /// Which of its pending messages.
        index: u8,
    },
}

/// A decoded fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Distinct members; 0 and 1 are the driven cores.
    pub pool: [Member; POOL],
    /// Bit i: pool member 2+i is in the first view.
    pub first: u8,
    /// See the module docs.
    pub flags: u8,
    /// The events.
    pub ops: Vec<Op>,
}

/// Confchg action values (see the module docs).
pub const JOIN: u8 = 3;
/// A merge: the member comes back with `NodeUp`.
pub const JOIN_NODE_UP: u8 = 4;
/// A clean leave.
pub const LEAVE: u8 = 5;
/// The process died.
pub const LEAVE_PROC_DOWN: u8 = 6;
/// The node died.
pub const LEAVE_NODE_DOWN: u8 = 7;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }
}

impl Stream {
    /// Reads any bytes as a stream; never fails (missing header bytes are
    /// zeros, a last op cut short is dropped).
    pub fn decode(data: &[u8]) -> Stream {
        let mut r = Reader(data);
        let mut pool = [Member::new(0, 0); POOL];
        for (i, slot) in pool.iter_mut().enumerate() {
            let node = r.u32().unwrap_or(i as u32 + 1);
            let pid = r.u32().unwrap_or(0);
            *slot = Member::new(node, pid);
        }
        // Members must be distinct: bump a duplicate's pid until it is.
        for i in 1..POOL {
            while pool[..i].contains(&pool[i]) {
                pool[i].pid = pool[i].pid.wrapping_add(1);
            }
        }
        let first = r.u8().unwrap_or(0);
        let flags = r.u8().unwrap_or(0);
        let mut ops = Vec::new();
        while let Some(op) = Self::op(&mut r) {
            ops.push(op);
        }
        Stream {
            pool,
            first,
            flags,
            ops,
        }
    }

    fn op(r: &mut Reader<'_>) -> Option<Op> {
        Some(match r.u8()? % 5 {
            0 => {
                let (sender, wrap, len) = (r.u8()?, r.u8()?, r.u16()?);
                Op::Deliver {
                    sender,
                    wrap,
                    bytes: r.bytes(len as usize).to_vec(),
                }
            }
            1 => Op::ConfChg { actions: r.take()? },
            2 => Op::Quorum {
                quorate: r.u8()? & 1 == 1,
                ring_step: r.u8()?,
                nodes: r.u8()?,
            },
            3 => Op::Tick { ms: r.u16()? },
            _ => Op::Echo {
                core: r.u8()?,
                index: r.u8()?,
            },
        })
    }

    /// The bytes [`Stream::decode`] reads back as this stream (deliveries
    /// longer than 65,535 bytes are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for m in &self.pool {
            out.extend_from_slice(&m.node.0.to_le_bytes());
            out.extend_from_slice(&m.pid.to_le_bytes());
        }
        out.push(self.first);
        out.push(self.flags);
        for op in &self.ops {
            match op {
                Op::Deliver {
                    sender,
                    wrap,
                    bytes,
                } => {
                    let len = bytes.len().min(u16::MAX as usize);
                    out.extend_from_slice(&[0, *sender, *wrap]);
                    out.extend_from_slice(&(len as u16).to_le_bytes());
                    out.extend_from_slice(&bytes[..len]);
                }
                Op::ConfChg { actions } => {
                    out.push(1);
                    out.extend_from_slice(actions);
                }
                Op::Quorum {
                    quorate,
                    ring_step,
                    nodes,
                } => out.extend_from_slice(&[2, u8::from(*quorate), *ring_step, *nodes]),
                Op::Tick { ms } => {
                    out.push(3);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
                Op::Echo { core, index } => out.extend_from_slice(&[4, *core, *index]),
            }
        }
        out
    }
}

/// The membership a stream has reached; applies ops under CPG's rules (the
/// driven members never leave, a member joins only from outside the view
/// and leaves only from inside it).
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub pool: [Member; POOL],
    pub in_view: [bool; POOL],
}

/// A membership change ready for the cores.
pub(crate) struct Change {
    pub view: Vec<Member>,
    pub joined: Vec<MemberChange>,
    pub left: Vec<MemberChange>,
}

impl Membership {
    /// The first view and its confchg.
    pub fn first(stream: &Stream) -> (Membership, Change) {
        let mut in_view = [false; POOL];
        in_view[0] = true;
        in_view[1] = true;
        for (i, slot) in in_view.iter_mut().enumerate().skip(2) {
            *slot = stream.first & (1 << (i - 2)) != 0;
        }
        let m = Membership {
            pool: stream.pool,
            in_view,
        };
        let only_driven = stream.flags & 1 == 1;
        let joined = (0..POOL)
            .filter(|&i| in_view[i] && (i < 2 || !only_driven))
            .map(|i| MemberChange {
                member: m.pool[i],
                reason: Reason::Join,
            })
            .collect();
        let change = Change {
            view: m.view(),
            joined,
            left: Vec::new(),
        };
        (m, change)
    }

    /// The view, sorted.
    pub fn view(&self) -> Vec<Member> {
        let mut v: Vec<Member> = (0..POOL)
            .filter(|&i| self.in_view[i])
            .map(|i| self.pool[i])
            .collect();
        v.sort();
        v
    }

    /// The sender a deliver op names.
    pub fn sender(&self, pick: u8) -> Member {
        let i = pick as usize % POOL;
        if self.in_view[i] {
            return self.pool[i];
        }
        let view = self.view();
        view[pick as usize % view.len()]
    }

    /// Applies a confchg op; `None` if it changes nothing.
    pub fn confchg(&mut self, actions: &[u8; POOL - 2]) -> Option<Change> {
        let mut joined = Vec::new();
        let mut left = Vec::new();
        for (k, action) in actions.iter().enumerate() {
            let i = k + 2;
            let member = self.pool[i];
            let reason = match action % 8 {
                JOIN => Reason::Join,
                JOIN_NODE_UP => Reason::NodeUp,
                LEAVE => Reason::Leave,
                LEAVE_PROC_DOWN => Reason::ProcDown,
                LEAVE_NODE_DOWN => Reason::NodeDown,
                _ => continue,
            };
            let joining = matches!(reason, Reason::Join | Reason::NodeUp);
            if joining == self.in_view[i] {
                continue;
            }
            self.in_view[i] = joining;
            let change = MemberChange { member, reason };
            if joining {
                joined.push(change);
            } else {
                left.push(change);
            }
        }
        if joined.is_empty() && left.is_empty() {
            return None;
        }
        Some(Change {
            view: self.view(),
            joined,
            left,
        })
    }

    /// The nodes a quorum op's mask names, sorted and distinct.
    pub fn nodes(&self, mask: u8) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = (0..POOL)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| self.pool[i].node)
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}
