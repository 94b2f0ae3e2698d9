//! The example programs the tests run as processes (`lb-bgp-speaker`, `lb-cluster-node`,
//! `lb-test-apiserver`), built on first use with the same cargo and profile as the test.

use std::path::PathBuf;
use std::sync::Mutex;

/// The examples the tests run as processes. The first [`example_binary`] call of a process
/// builds all of them in one `cargo build`: one cargo start-up instead of three, and no test
/// waits for a build after it has started a peer that only waits so long (exabgp backs off its
/// reconnects; docs/ci.md).
pub const HELPERS: [&str; 3] = ["lb-bgp-speaker", "lb-cluster-node", "lb-test-apiserver"];

/// Builds the [`HELPERS`] once per test process and returns the path of `name`'s binary.
pub fn example_binary(name: &str) -> PathBuf {
    assert!(
        HELPERS.contains(&name),
        "example {name} is not one of the helpers {HELPERS:?}"
    );
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = match &*built {
        Some(dir) => dir.clone(),
        None => {
            let dir = build_helpers();
            *built = Some(dir.clone());
            dir
        }
    };
    dir.join(name)
}

/// `cargo build --workspace --example …` of every helper into the running binary's profile;
/// returns `target/<profile>/examples`.
fn build_helpers() -> PathBuf {
    // target/<profile>/deps/<test>-… (a test) or target/<profile>/examples/<x> (a benchmark
    // or the demo): build into the same profile.
    let profile_dir = std::env::current_exe()
        .expect("current exe")
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .expect("target/<profile>");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    // `--workspace` resolves features as `cargo test --workspace` (scripts/test) does, so
    // this build reuses every compiled crate and only links the examples.
    cmd.args(["build", "--quiet", "--workspace"])
        .current_dir(crate::repo_root());
    for name in HELPERS {
        cmd.args(["--example", name]);
    }
    // The test's CARGO_PKG_* etc. would make build scripts (ring) rerun: drop them.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
    profile_dir.join("examples")
}
