//! What the examples share: starting a copy of this executable as a member
//! process on a node of the test cluster that `scripts/cluster.sh` builds.
//!
//! An example takes it in with `mod support;`. Cargo makes example targets
//! only of `examples/*.rs` and `examples/*/main.rs`, so this directory is
//! never built on its own.
//!
//! Only the real backend runs members as separate processes, so everything
//! here exists with the `corosync` feature alone: without it no example
//! would use it, and every build would warn of dead code.

/// The network namespace of test-cluster node `node`: each of
/// `acpg-n1`..`acpg-nN` (N = 3 unless the cluster was built with
/// more) holds that node's corosync daemon, and a process
/// started inside it talks to that daemon only.
#[cfg(feature = "corosync")]
fn netns(node: u32) -> String {
    format!("acpg-n{node}")
}

/// `ip netns exec acpg-nN <this executable>`: the start of the command line
/// of a member process on node `node`. The caller adds the flags that make
/// the executable a member, and the stdio it reads the member through
/// (`tokio::process::Command::from` turns it into a tokio command).
/// `ip netns exec` needs root, like the cluster itself.
#[cfg(feature = "corosync")]
pub fn member_command(node: u32) -> std::io::Result<std::process::Command> {
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", &netns(node)])
        .arg(std::env::current_exe()?);
    Ok(command)
}
