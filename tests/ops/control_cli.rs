//! lbctl's command line: every subcommand is completed by packaging/bash-completion/lbctl.

use std::path::Path;
use std::process::Command;

fn subcommands() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let section = help.split("Commands:").nth(1).expect("a Commands section");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Run the completion function for `words` (the last one being completed).
fn complete(words: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/bash-completion/lbctl");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "shopt -s extglob; source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _lbctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" "),
            words.len() - 1
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn completion_offers_every_subcommand_of_lbctl() {
    let subs = subcommands();
    for want in [
        "status",
        "services",
        "pools",
        "peers",
        "cluster",
        "reload",
        "check-config",
        "import-metallb",
    ] {
        assert!(
            subs.iter().any(|s| s == want),
            "lbctl --help lacks {want}: {subs:?}"
        );
    }
    let offered = complete(&["lbctl", ""]);
    for s in &subs {
        assert!(offered.contains(s), "completion lacks {s}: {offered:?}");
    }
}

#[test]
fn completion_offers_json_after_a_status_subcommand_and_skips_bus_value() {
    assert_eq!(
        complete(&["lbctl", "--bus", "unix:path=/x", "peers", "--j"]),
        ["--json"]
    );
    assert_eq!(complete(&["lbctl", "cl"]), ["cluster"]);
}

#[test]
fn json_flag_is_accepted_by_every_status_subcommand() {
    for sub in ["status", "services", "pools", "peers", "cluster", "reload"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .args([sub, "--json", "--help"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sub}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--bus <ADDRESS>"),
            "{sub}"
        );
    }
}

#[test]
fn cluster_completes_its_remove_subcommand_and_lbctl_documents_it() {
    assert_eq!(complete(&["lbctl", "cluster", "re"]), ["remove"]);
    // A member's name: nothing offered (not `remove` again, no options).
    let after = complete(&["lbctl", "cluster", "remove", ""]);
    assert!(after.iter().all(String::is_empty), "{after:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["cluster", "remove", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("<NAME>"), "{help}");
    assert!(help.contains("Run it on the leader"), "{help}");
    // `lbctl cluster` alone still takes --json.
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["cluster", "--json", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
}
