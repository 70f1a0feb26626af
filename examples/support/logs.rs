//! The log subscriber every example installs first thing in `main`: the
//! library's `tracing` output on stderr, filtered by `RUST_LOG` (default
//! `warn`), so an example prints what it always printed unless asked.
//!
//! `RUST_LOG=actix_cpg=info cargo run --example supervision` shows the
//! group and member spans (`acpg{protocol=.. group=.. member=..}`) and the
//! decisions the library takes at `info`, with their reasons: view
//! changes, placements, exits and restarts, elections, primaries,
//! refusals. The spans and their fields are listed in `actix_cpg::spans`.
//!
//! An example takes it in with `#[path = "support/logs.rs"] mod logs;`.
//! Stderr, not stdout: the member processes of the `--corosync` examples
//! speak a line protocol on their stdout.

/// Installs the subscriber (once; a second call changes nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already installed, which then stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
