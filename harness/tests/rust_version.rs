//! The declared `rust-version` is true of the lockfile: no locked package
//! the workspace builds declares a newer one. Only one toolchain can be
//! installed where the suite runs, so this (with clippy's
//! `incompatible_msrv` lint, which reads `rust-version` for std APIs) is
//! how the minimum supported Rust version is kept honest.

use std::process::Command;

fn version(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn no_locked_dependency_needs_a_newer_rust_than_the_workspace_declares() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let packages = meta["packages"].as_array().expect("packages");
    let declared = |p: &serde_json::Value| p["rust_version"].as_str().map(version);
    let ours = packages
        .iter()
        .find(|p| p["name"] == "actix-cpg")
        .and_then(declared)
        .expect("actix-cpg declares a rust-version");
    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        let Some(needs) = declared(p) else { continue };
        if members.contains(&p["id"].as_str().unwrap_or("")) {
            assert_eq!(needs, ours, "{name} declares another rust-version");
            continue;
        }
        assert!(
            needs <= ours,
            "{name} {} needs Rust {:?}, above the declared {:?}",
            p["version"],
            needs,
            ours
        );
    }
}
