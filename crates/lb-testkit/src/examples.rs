//! Example programs the tests run as processes (`lb-bgp-speaker`, `lb-cluster-node`,
//! `lb-test-apiserver`), built on first use with the same cargo and profile as the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Builds `examples/<name>.rs` once per test process and returns the binary's path.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    // target/<profile>/deps/<test>-… (a test) or target/<profile>/examples/<x> (a benchmark
    // or the demo, which include this file): build into the same profile.
    let profile_dir = std::env::current_exe()
        .expect("current exe")
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .expect("target/<profile>");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // The test's CARGO_PKG_* etc. would make build scripts (ring) rerun: drop them.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
    assert!(status.success(), "building example {name} failed");
    let path = profile_dir.join("examples").join(name);
    built.insert(name.to_string(), path.clone());
    path
}
