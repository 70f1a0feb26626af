//! The engine's state: one side's deterministic [`core`] state, the OTP
//! rules over one [`tree`], the [`merge`] of partitions, and the public
//! [`engine`] that ties them together.

mod core;
mod engine;
mod merge;
mod tree;

pub use engine::{ChildStatus, Engine, SlotStatus};
pub use merge::MergeOffer;
