//! `lbctl import-metallb` then `lbd --check-config`, the binaries a migrating user runs, over
//! the importer corpus (tests/fixtures/metallb-corpus): what the importer accepts, the daemon's
//! own check accepts as it stands (once the key files the notes name exist); what it refuses
//! exits non-zero with nothing on stdout and everything left to do on stderr.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn imported_corpus_passes_lbd_check_config_or_the_import_exits_non_zero() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metallb-corpus");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut ok, mut refused) = (0, 0);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    for input in inputs {
        let name = input.file_stem().unwrap().to_string_lossy().to_string();
        let expected = std::fs::read_to_string(input.with_extension("expected")).expect("pinned");
        let import = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .arg("import-metallb")
            .arg(&input)
            .output()
            .expect("lbctl runs");
        let stderr = String::from_utf8_lossy(&import.stderr);
        if !expected.starts_with("ok") {
            assert!(!import.status.success(), "{name}: import succeeded");
            assert!(import.stdout.is_empty(), "{name}: output on failure");
            assert!(stderr.contains("left to do:"), "{name}: {stderr}");
            refused += 1;
            continue;
        }
        assert!(import.status.success(), "{name}: {stderr}");
        let mut toml = String::from_utf8(import.stdout).expect("UTF-8");
        // The files the notes say to create, created (under the test's directory).
        for line in stderr
            .lines()
            .filter(|l| l.contains("lb reads TCP-MD5 keys"))
        {
            let file = line
                .split_whitespace()
                .find(|w| w.starts_with("/etc/lb/bgp-peer-"))
                .expect("the note names the key file");
            let here = tmp.path().join(file.trim_start_matches("/etc/lb/"));
            std::fs::write(&here, "key\n").expect("write key");
            std::fs::set_permissions(&here, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            toml = toml.replace(file, here.to_str().unwrap());
        }
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, &toml).expect("write");
        let check = Command::new(env!("CARGO_BIN_EXE_lbd"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .expect("lbd runs");
        assert!(
            check.status.success(),
            "{name}: lbd --check-config rejects the import:\n{}\n---\n{toml}",
            String::from_utf8_lossy(&check.stderr)
        );
        ok += 1;
    }
    assert!(ok >= 10 && refused >= 4, "ok {ok}, refused {refused}");
}
