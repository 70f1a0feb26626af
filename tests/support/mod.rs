//! Helpers shared by the integration tests (`crate::support::…`).
pub mod forgeries;
pub mod history;
pub mod ledger;
pub mod scratch;
pub mod simulated;
