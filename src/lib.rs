//! actix-cpg: an actix actor registry, supervision tree and replicated state
//! spread across every process of a Corosync CPG (closed process group).
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod transport;
