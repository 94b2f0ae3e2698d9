//! The importer has no loose ends: every MetalLB input in `tests/fixtures/metallb-corpus/`
//! (ConfigMaps of v0.9–v0.12, CRDs of every kind in v1beta1 and v1beta2) either imports to an
//! lb.toml that lb's validator — the one `lbd --check-config` runs — accepts, or fails with
//! an error that lists what is left to do. What each file gives is pinned in `NAME.expected`
//! next to it (`LB_BLESS=1` rewrites them; review the diff).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lb::config::{Context, parse_str};
use lb::metallb::import;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metallb-corpus")
}

/// What importing `yaml` gives, as pinned: `ok` with the validated config's pools, peers
/// and the notes, or `error` with the importer's message.
fn outcome(name: &str, yaml: &str) -> String {
    let imported = match import(yaml) {
        Ok(i) => i,
        Err(e) => return format!("error: {e}\n"),
    };
    let ctx = Context {
        hostname: "worker-1".into(),
        // Password files are named in the notes, not written by the importer.
        check_files: false,
    };
    let checked = parse_str(&imported.toml, Path::new("imported.toml"), &ctx).unwrap_or_else(|d| {
        panic!(
            "{name}: the importer succeeded but check-config rejects its output:\n{d}\n---\n{}",
            imported.toml
        )
    });
    let c = checked.config;
    let mut out = String::from("ok\n");
    for p in &c.pools {
        let ranges: Vec<String> = p.ranges.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(
            out,
            "pool {} {} {} ({} advertisement(s))",
            p.name,
            p.protocol,
            ranges.join(","),
            p.bgp_advertisements.len()
        );
    }
    for p in &c.bgp_peers {
        let asn = match p.dynamic_asn {
            Some(d) => format!("dynamic {d}"),
            None => p.peer_asn.to_string(),
        };
        let _ = writeln!(
            out,
            "peer {} my_asn {} peer_asn {asn} connect_time {:?} password_file {}",
            p.address,
            p.my_asn,
            p.connect_time,
            p.password_file
                .as_ref()
                .map_or("-".into(), |f| f.display().to_string())
        );
    }
    for n in &imported.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

#[test]
fn every_corpus_input_imports_to_a_valid_lb_toml_or_says_what_is_left() {
    let dir = corpus_dir();
    let bless = std::env::var_os("LB_BLESS").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 15,
        "corpus has only {} inputs",
        inputs.len()
    );
    let mut mismatches = Vec::new();
    for path in &inputs {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let yaml = std::fs::read_to_string(path).expect("readable");
        let got = outcome(&name, &yaml);
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with LB_BLESS=1)", expected_path.display()));
        if got != expected {
            mismatches.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn corpus_covers_every_kind_and_version() {
    let mut all = String::new();
    for e in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml") {
            all.push_str(&std::fs::read_to_string(p).expect("readable"));
        }
    }
    for kind in [
        "IPAddressPool",
        "L2Advertisement",
        "BGPAdvertisement",
        "BGPPeer",
        "Community",
        "BFDProfile",
        "AddressPool",
        "ConfigMap",
    ] {
        assert!(
            all.contains(&format!("kind: {kind}")),
            "no {kind} in the corpus"
        );
    }
    for version in ["metallb.io/v1beta1", "metallb.io/v1beta2"] {
        assert!(all.contains(version), "no {version} in the corpus");
    }
    for configmap in ["v0.9", "v0.10", "v0.11", "v0.12"] {
        assert!(all.contains(&format!("MetalLB {configmap} ConfigMap")));
    }
}
