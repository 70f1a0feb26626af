//! Helpers shared by the test crates that include them (`mod support;`).
pub mod forgeries;
pub mod history;
