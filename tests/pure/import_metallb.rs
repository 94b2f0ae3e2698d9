//! `lbctl import-metallb`: MetalLB ConfigMaps and CRDs to lb.toml. The output is checked by
//! parsing it as TOML and asserting on the values (the lb.toml validator lives elsewhere).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lb::control::offline::import_metallb_main as import_main;
use lb::metallb::{ImportError, Imported, import};
use proptest::prelude::*;
use toml::Value;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metallb")
        .join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).expect("fixture readable")
}

const FIXTURES: [&str; 10] = [
    "crds-deprecated-addresspool.yaml",
    "lab-guide-layer2.yaml",
    "lab-guide-bgp.yaml",
    "lab-guide-bgp-two-pools.yaml",
    "v0.12-configmap-all-keys.yaml",
    "bare-config.yaml",
    "crds-all-kinds.yaml",
    "crds-list.yaml",
    "notes-every-kind.yaml",
    "configmap-aliases.yaml",
];

fn imported(yaml: &str) -> (Value, Imported) {
    let imp = import(yaml).unwrap_or_else(|e| panic!("import failed: {e}"));
    let v: Value = toml::from_str(&imp.toml)
        .unwrap_or_else(|e| panic!("output is not TOML: {e}\n{}", imp.toml));
    (v, imp)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_integer)
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    arr(v, key)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn pool<'a>(v: &'a Value, name: &str) -> &'a Value {
    arr(v, "pool")
        .iter()
        .find(|p| s(p, "name") == Some(name))
        .unwrap_or_else(|| panic!("no pool {name}"))
}

fn has_note(imp: &Imported, parts: &[&str]) -> bool {
    imp.notes
        .iter()
        .any(|n| parts.iter().all(|p| n.contains(p)))
}

fn assert_note(imp: &Imported, parts: &[&str]) {
    assert!(
        has_note(imp, parts),
        "no note containing {parts:?}; notes:\n{}",
        imp.notes.join("\n")
    );
}

// ---- The lab guide's three ConfigMaps ---------------------------------------------------

#[test]
fn lab_guide_layer2_configmap_becomes_one_layer2_pool_with_both_addresses() {
    let (v, imp) = imported(&fixture("lab-guide-layer2.yaml"));
    let pools = arr(&v, "pool");
    assert_eq!(pools.len(), 1);
    let p = &pools[0];
    assert_eq!(s(p, "name"), Some("ip-space-1"));
    assert_eq!(s(p, "protocol"), Some("layer2"));
    assert_eq!(
        strs(p, "addresses"),
        ["10.10.100.200/32", "10.10.100.201/32"]
    );
    assert!(arr(&v, "bgp_peer").is_empty());
    assert!(imp.notes.is_empty(), "{:?}", imp.notes);
}

fn assert_lab_ibgp_peer(v: &Value) {
    let peers = arr(v, "bgp_peer");
    assert_eq!(peers.len(), 1);
    let peer = &peers[0];
    assert_eq!(s(peer, "address"), Some("10.10.100.1"));
    assert_eq!(int(peer, "my_asn"), Some(64500));
    assert_eq!(
        int(peer, "peer_asn"),
        Some(64500),
        "iBGP: same AS both ends"
    );
    assert_eq!(
        peer.as_table().map(|t| t.len()),
        Some(3),
        "only the keys given"
    );
}

#[test]
fn lab_guide_bgp_configmap_becomes_a_bgp_pool_and_an_ibgp_peer() {
    let (v, imp) = imported(&fixture("lab-guide-bgp.yaml"));
    let pools = arr(&v, "pool");
    assert_eq!(pools.len(), 1);
    assert_eq!(s(&pools[0], "name"), Some("ip-pool-1"));
    assert_eq!(s(&pools[0], "protocol"), Some("bgp"));
    assert_eq!(strs(&pools[0], "addresses"), ["172.19.100.0/24"]);
    assert!(
        arr(&pools[0], "bgp_advertisement").is_empty(),
        "MetalLB's default advertisement is lb's default too"
    );
    assert_lab_ibgp_peer(&v);
    assert!(imp.notes.is_empty(), "{:?}", imp.notes);
}

#[test]
fn lab_guide_two_pools_configmap_keeps_both_bgp_pools_in_order() {
    let (v, imp) = imported(&fixture("lab-guide-bgp-two-pools.yaml"));
    let names: Vec<_> = arr(&v, "pool")
        .iter()
        .filter_map(|p| s(p, "name"))
        .collect();
    assert_eq!(names, ["ip-pool-1", "ip-pool-2"]);
    assert_eq!(s(pool(&v, "ip-pool-2"), "protocol"), Some("bgp"));
    assert_eq!(
        strs(pool(&v, "ip-pool-2"), "addresses"),
        ["172.19.101.0/24"]
    );
    assert_lab_ibgp_peer(&v);
    assert!(imp.notes.is_empty(), "{:?}", imp.notes);
}

// ---- ConfigMap forms ----------------------------------------------------------------------

#[test]
fn v012_configmap_maps_every_key() {
    let (v, imp) = imported(&fixture("v0.12-configmap-all-keys.yaml"));
    let l2 = pool(&v, "l2-space");
    assert_eq!(s(l2, "protocol"), Some("layer2"));
    assert_eq!(
        strs(l2, "addresses"),
        [
            "10.10.100.200/32",
            "10.10.100.210-10.10.100.220",
            "fd00:10::/120"
        ]
    );
    assert_eq!(l2.get("auto_assign").and_then(Value::as_bool), Some(false));
    assert_eq!(
        l2.get("avoid_buggy_ips").and_then(Value::as_bool),
        Some(true)
    );

    let bgp = pool(&v, "bgp-space");
    let ads = arr(bgp, "bgp_advertisement");
    assert_eq!(ads.len(), 2);
    assert_eq!(int(&ads[0], "aggregation_length"), Some(32));
    assert_eq!(int(&ads[0], "aggregation_length_v6"), Some(128));
    assert_eq!(int(&ads[0], "local_pref"), Some(100));
    assert_eq!(
        strs(&ads[0], "communities"),
        ["vpn-only", "64500:100", "big"]
    );
    assert_eq!(int(&ads[1], "aggregation_length"), Some(24));

    let comm = v.get("bgp_communities").expect("aliases kept");
    assert_eq!(s(comm, "vpn-only"), Some("1234:1"));
    assert_eq!(s(comm, "big"), Some("64500:1:2"), "large: prefix dropped");

    let peers = arr(&v, "bgp_peer");
    assert_eq!(peers.len(), 2);
    let p = &peers[0];
    assert_eq!(int(p, "my_asn"), Some(64500));
    assert_eq!(int(p, "peer_asn"), Some(64501));
    assert_eq!(s(p, "address"), Some("10.10.100.1"));
    assert_eq!(int(p, "port"), Some(1179));
    assert_eq!(s(p, "hold_time"), Some("90s"));
    assert_eq!(s(p, "keepalive_time"), Some("30s"));
    assert_eq!(s(p, "router_id"), Some("10.10.100.3"));
    assert_eq!(s(p, "source_address"), Some("10.10.100.3"));
    assert_eq!(
        s(p, "password_file"),
        Some("/etc/lb/bgp-peer-10.10.100.1.key")
    );
    assert_eq!(int(p, "ebgp_multihop"), Some(255));
    let sel = &arr(p, "node_selectors")[0];
    assert_eq!(s(&sel["match_labels"], "rack"), Some("a"));
    let expr = &arr(sel, "match_expressions")[0];
    assert_eq!(s(expr, "key"), Some("kubernetes.io/hostname"));
    assert_eq!(s(expr, "operator"), Some("In"));
    assert_eq!(strs(expr, "values"), ["worker-1", "worker-2"]);
    let bfd = p.get("bfd").expect("bfd table from the profile");
    assert_eq!(s(bfd, "receive_interval"), Some("100ms"));
    assert_eq!(s(bfd, "transmit_interval"), Some("150ms"));
    assert_eq!(int(bfd, "detect_multiplier"), Some(5));
    assert_note(&imp, &["bfd-profile", "fast", "echo-mode"]);

    assert_eq!(s(&peers[1], "address"), Some("fd00:10::1"));
    assert_eq!(s(&peers[1], "hold_time"), Some("1m30s"));
}

#[test]
fn bare_config_string_imports_like_the_configmap_holding_it() {
    let (bare, _) = imported(&fixture("bare-config.yaml"));
    let (wrapped, _) = imported(&fixture("lab-guide-bgp.yaml"));
    assert_eq!(bare, wrapped);
}

#[test]
fn community_aliases_stay_aliases_and_values_are_normalized() {
    let (v, imp) = imported(&fixture("configmap-aliases.yaml"));
    let comm = v.get("bgp_communities").expect("aliases");
    assert_eq!(s(comm, "vpn-only"), Some("1234:1"));
    assert_eq!(s(comm, "no-transit"), Some("64500:666"));
    assert_eq!(s(comm, "big"), Some("64500:1:2"));
    let ad = &arr(pool(&v, "ip-pool-1"), "bgp_advertisement")[0];
    assert_eq!(
        strs(ad, "communities"),
        ["vpn-only", "big", "64500:100", "65535:65281"],
        "aliases kept, well-known no-export written numerically"
    );
    assert_eq!(int(ad, "local_pref"), Some(200));
    assert!(imp.notes.is_empty(), "{:?}", imp.notes);
}

#[test]
fn yaml_1_1_booleans_of_old_configmaps_are_understood() {
    let yaml = "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [10.0.0.0/30]\n  auto-assign: no\n  avoid-buggy-ips: yes\n";
    let (v, _) = imported(yaml);
    assert_eq!(
        pool(&v, "p").get("auto_assign").and_then(Value::as_bool),
        Some(false)
    );
    assert_eq!(
        pool(&v, "p")
            .get("avoid_buggy_ips")
            .and_then(Value::as_bool),
        Some(true)
    );
}

// ---- CRDs ---------------------------------------------------------------------------------

#[test]
fn crd_documents_of_all_kinds_import_with_advertisements_resolved() {
    let (v, imp) = imported(&fixture("crds-all-kinds.yaml"));
    let l2 = pool(&v, "l2-pool");
    assert_eq!(
        s(l2, "protocol"),
        Some("layer2"),
        "from the L2Advertisement"
    );
    assert_eq!(strs(l2, "addresses"), ["10.10.100.200-10.10.100.220"]);
    assert_eq!(l2.get("auto_assign").and_then(Value::as_bool), Some(false));
    assert_eq!(strs(l2, "interfaces"), ["enp0s8"]);
    assert_eq!(
        s(
            &arr(l2, "node_selectors")[0]["match_labels"],
            "kubernetes.io/hostname"
        ),
        Some("worker-1")
    );

    let bgp = pool(&v, "bgp-pool");
    assert_eq!(s(bgp, "protocol"), Some("bgp"));
    assert_eq!(
        bgp.get("avoid_buggy_ips").and_then(Value::as_bool),
        Some(true)
    );
    let ads = arr(bgp, "bgp_advertisement");
    assert_eq!(ads.len(), 1);
    let ad = &ads[0];
    assert_eq!(int(ad, "local_pref"), Some(100));
    assert_eq!(
        strs(ad, "communities"),
        ["vpn-only", "64500:100", "64500:1:2"],
        "alias defined by a later Community document still resolves"
    );
    assert_eq!(strs(ad, "peers"), ["10.10.100.1"], "BGPPeer name → address");
    let expr = &arr(&arr(ad, "node_selectors")[0], "match_expressions")[0];
    assert_eq!(s(expr, "operator"), Some("NotIn"));

    let comm = v.get("bgp_communities").expect("Community aliases");
    assert_eq!(s(comm, "big"), Some("64500:7:8"));

    let peers = arr(&v, "bgp_peer");
    assert_eq!(peers.len(), 1);
    assert_eq!(int(&peers[0], "peer_asn"), Some(64501));
    assert_eq!(int(&peers[0], "port"), Some(179));
    assert_eq!(s(&peers[0], "router_id"), Some("10.10.100.3"));
    assert_eq!(int(&peers[0], "ebgp_multihop"), Some(255));
    assert_note(&imp, &["ebgpMultiHop", "255"]);
}

#[test]
fn kind_list_is_unwrapped_and_an_empty_l2advertisement_covers_every_pool() {
    let (v, imp) = imported(&fixture("crds-list.yaml"));
    let p = pool(&v, "first-pool");
    assert_eq!(s(p, "protocol"), Some("layer2"));
    assert_eq!(strs(p, "addresses"), ["192.168.10.0/24"]);
    assert!(
        imp.notes.is_empty(),
        "metadata and status are not noted: {:?}",
        imp.notes
    );
}

#[test]
fn deprecated_addresspool_resource_imports_with_its_protocol() {
    let (v, imp) = imported(&fixture("crds-deprecated-addresspool.yaml"));
    let p = pool(&v, "legacy");
    assert_eq!(s(p, "protocol"), Some("bgp"));
    assert_eq!(p.get("auto_assign").and_then(Value::as_bool), Some(false));
    let ad = &arr(p, "bgp_advertisement")[0];
    assert_eq!(int(ad, "local_pref"), Some(50));
    assert_eq!(strs(ad, "communities"), ["64500:7"]);
    let l2 = pool(&v, "legacy-l2");
    assert_eq!(s(l2, "protocol"), Some("layer2"));
    assert_eq!(strs(l2, "addresses"), ["198.51.101.10-198.51.101.20"]);
    // The one note is lb's validator warning about the bgp pool without a peer.
    assert_eq!(imp.notes.len(), 1, "{:?}", imp.notes);
    assert_note(
        &imp,
        &[
            "AddressPool metallb-system/legacy",
            "check warns",
            "no [[bgp_peer]]",
        ],
    );
}

// ---- Notes --------------------------------------------------------------------------------

fn notes_fixture() -> (Value, Imported) {
    imported(&fixture("notes-every-kind.yaml"))
}

#[test]
fn inline_password_becomes_password_file_and_a_note_without_the_secret() {
    let (v, imp) = notes_fixture();
    let tor = arr(&v, "bgp_peer")
        .iter()
        .find(|p| s(p, "address") == Some("10.20.0.1"))
        .expect("peer tor");
    assert_eq!(
        s(tor, "password_file"),
        Some("/etc/lb/bgp-peer-10.20.0.1.key")
    );
    assert_note(
        &imp,
        &["spec.password", "/etc/lb/bgp-peer-10.20.0.1.key", "0600"],
    );
    assert!(
        !imp.toml.contains("hunter2"),
        "password leaked into lb.toml"
    );
    assert!(
        !imp.notes.iter().any(|n| n.contains("hunter2")),
        "password leaked into notes"
    );
}

#[test]
fn password_secret_becomes_password_file_and_names_the_secret() {
    let (v, imp) = notes_fixture();
    let tor2 = arr(&v, "bgp_peer")
        .iter()
        .find(|p| s(p, "address") == Some("10.20.0.2"))
        .expect("peer tor2");
    assert_eq!(
        s(tor2, "password_file"),
        Some("/etc/lb/bgp-peer-10.20.0.2.key")
    );
    assert_note(&imp, &["passwordSecret", "metallb-system/tor2-secret"]);
}

#[test]
fn pool_without_advertisement_becomes_an_allocate_only_pool() {
    let (v, imp) = notes_fixture();
    let p = pool(&v, "unannounced");
    assert_eq!(s(p, "protocol"), Some("none"));
    assert!(p.get("interfaces").is_none() && p.get("bgp_advertisement").is_none());
    assert!(!has_note(&imp, &["\"unannounced\""]), "{:?}", imp.notes);
}

#[test]
fn pool_with_l2_and_bgp_advertisements_becomes_bgp_with_a_note() {
    let (v, imp) = notes_fixture();
    assert_eq!(s(pool(&v, "both"), "protocol"), Some("bgp"));
    assert_eq!(arr(pool(&v, "both"), "bgp_advertisement").len(), 1);
    assert_note(&imp, &["\"both\"", "bgp pool", "l2-both"]);
}

#[test]
fn bfd_profile_missing_from_input_gets_metallb_defaults_and_a_note() {
    let (v, imp) = notes_fixture();
    let tor = &arr(&v, "bgp_peer")[0];
    let bfd = tor.get("bfd").expect("bfd table");
    assert_eq!(s(bfd, "receive_interval"), Some("300ms"));
    assert_eq!(s(bfd, "transmit_interval"), Some("300ms"));
    assert_eq!(int(bfd, "detect_multiplier"), Some(3));
    assert_note(&imp, &["missing-profile", "MetalLB's defaults"]);
}

#[test]
fn connect_time_becomes_connect_time() {
    let (v, _) = notes_fixture();
    let with: Vec<&Value> = arr(&v, "bgp_peer")
        .iter()
        .filter(|p| s(p, "connect_time").is_some())
        .collect();
    assert_eq!(with.len(), 1);
    assert_eq!(s(with[0], "connect_time"), Some("10s"));
}

#[test]
fn vrf_is_noted_and_connect_time_is_not() {
    let (_, imp) = notes_fixture();
    assert_note(&imp, &["spec.vrf", "red", "no VRF support"]);
    assert!(!has_note(&imp, &["spec.connectTime"]), "{:?}", imp.notes);
}

#[test]
fn service_allocation_becomes_the_pools_priority_namespaces_and_selectors() {
    let (v, imp) = imported(&fixture("crds-service-allocation.yaml"));
    let a = pool(&v, "team-a");
    assert_eq!(int(a, "priority"), Some(10));
    assert_eq!(strs(a, "namespaces"), ["shop", "shop-staging"]);
    let ns_sel = &arr(a, "namespace_selectors")[0];
    assert_eq!(
        ns_sel.get("match_labels").and_then(|m| s(m, "team")),
        Some("a")
    );
    let expr = &arr(&arr(a, "service_selectors")[0], "match_expressions")[0];
    assert_eq!(s(expr, "key"), Some("tier"));
    assert_eq!(s(expr, "operator"), Some("In"));
    assert_eq!(strs(expr, "values"), ["web", "api"]);
    // priority 0 is MetalLB's "none": not written.
    let b = pool(&v, "team-b");
    assert_eq!(int(b, "priority"), None);
    assert_eq!(arr(b, "namespace_selectors").len(), 1);
    let shared = pool(&v, "shared");
    for key in [
        "priority",
        "namespaces",
        "namespace_selectors",
        "service_selectors",
    ] {
        assert!(
            shared.get(key).is_none(),
            "{key} on a pool without serviceAllocation"
        );
    }
    assert!(!has_note(&imp, &["serviceAllocation"]), "{:?}", imp.notes);
}

#[test]
fn l2advertisement_interfaces_over_several_pools_are_copied_with_a_note() {
    let (v, imp) = notes_fixture();
    assert_eq!(strs(pool(&v, "selected-a"), "interfaces"), ["eth1"]);
    assert_eq!(strs(pool(&v, "selected-b"), "interfaces"), ["eth1"]);
    assert_note(
        &imp,
        &["spec.interfaces", "several pools", "selected-a, selected-b"],
    );
}

#[test]
fn ip_address_pool_selectors_are_resolved_against_input_labels_with_a_note() {
    let (v, imp) = notes_fixture();
    assert_eq!(s(pool(&v, "selected-a"), "protocol"), Some("layer2"));
    assert_note(&imp, &["ipAddressPoolSelectors", "selected-a, selected-b"]);
}

#[test]
fn unknown_keys_other_kinds_rewritten_values_are_noted() {
    let (_, imp) = notes_fixture();
    assert_note(&imp, &["spec.futureField", "unknown key"]);
    assert_note(&imp, &["document 10", "Deployment", "ignored"]);
    assert_note(&imp, &["spec.holdTime", "\"1.5m\"", "\"1m30s\""]);
    assert_note(&imp, &["10.21.0.5/24", "host bits", "10.21.0.0/24"]);
}

#[test]
fn unnumbered_peers_are_left_out_with_notes_and_advertisements_stay_narrow() {
    let yaml = r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: unnumbered}
spec: {myASN: 64500, peerASN: 64501, interface: eth0}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: dynamic-ext}
spec: {myASN: 64500, dynamicASN: external, peerAddress: 10.0.0.1}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: dynamic-int}
spec: {myASN: 64500, dynamicASN: internal, peerAddress: 10.0.0.2}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p}
spec: {addresses: [10.9.0.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: only-unnumbered}
spec: {peers: [unnumbered]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: mixed}
spec: {peers: [dynamic-ext, dynamic-int], localPref: 7}
"#;
    let (v, imp) = imported(yaml);
    let peers = arr(&v, "bgp_peer");
    assert_eq!(peers.len(), 2, "both dynamic peers are expressible");
    assert_eq!(s(&peers[0], "address"), Some("10.0.0.1"));
    assert_eq!(s(&peers[0], "dynamic_asn"), Some("external"));
    assert_eq!(int(&peers[0], "peer_asn"), None);
    assert_eq!(s(&peers[1], "address"), Some("10.0.0.2"));
    assert_eq!(s(&peers[1], "dynamic_asn"), Some("internal"));
    assert_note(&imp, &["spec.interface", "unnumbered", "left out"]);
    assert!(!has_note(&imp, &["dynamicASN"]), "{:?}", imp.notes);
    assert_note(&imp, &["only-unnumbered", "advertisement was dropped"]);
    assert!(
        !has_note(&imp, &["unknown key"]),
        "keys of left-out peers are not noted: {:?}",
        imp.notes
    );
    let ads = arr(pool(&v, "p"), "bgp_advertisement");
    assert_eq!(
        ads.len(),
        1,
        "the dropped advertisement must not become 'all peers'"
    );
    assert_eq!(strs(&ads[0], "peers"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(int(&ads[0], "local_pref"), Some(7));
}

#[test]
fn unknown_configmap_keys_are_noted_with_their_path() {
    let yaml = "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [10.0.0.0/30]\n  arp-network: 10.0.0.0/24\npeer-autodiscovery: {}\n";
    let (_, imp) = imported(yaml);
    assert_note(&imp, &["address-pools[0].arp-network", "unknown key"]);
    assert_note(&imp, &["peer-autodiscovery", "unknown key"]);
}

#[test]
fn every_note_is_repeated_as_a_comment_in_the_header() {
    let (_, imp) = notes_fixture();
    assert!(
        imp.toml
            .starts_with("# lb.toml imported from a MetalLB configuration")
    );
    assert!(imp.notes.len() >= 10);
    for n in &imp.notes {
        assert!(
            imp.toml.contains(&format!("# - {n}\n")),
            "note not in header: {n}"
        );
    }
}

#[test]
fn a_newline_in_an_input_value_cannot_escape_its_comment() {
    // The key name becomes part of a note; a newline in it must not start a TOML line.
    let yaml = "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [10.0.0.0/30]\n  \"x\\n[[bgp_peer]]\": 1\n";
    let (v, imp) = imported(yaml);
    assert!(arr(&v, "bgp_peer").is_empty());
    assert_note(&imp, &["[[bgp_peer]]", "unknown key"]);
}

// ---- Errors -------------------------------------------------------------------------------

#[test]
fn text_that_is_not_yaml_is_an_error() {
    let err = import("peers: [\n  - {my-asn: 1\n").unwrap_err();
    assert!(matches!(err, ImportError::Yaml { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("document 1: not valid YAML"), "{msg}");
    assert!(msg.contains("line "), "position given: {msg}");
}

#[test]
fn yaml_that_is_not_metallb_is_an_error() {
    for yaml in [
        "foo: bar\n",
        "just a sentence\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "",
        "---\n---\n",
    ] {
        let err = import(yaml).unwrap_err();
        assert!(
            matches!(err, ImportError::NotMetalLb { .. }),
            "{yaml:?}: {err:?}"
        );
        assert!(
            err.to_string().contains("no MetalLB configuration found"),
            "{err}"
        );
    }
}

#[test]
fn invalid_asn_is_an_error_naming_the_key_path() {
    let base = fixture("lab-guide-bgp.yaml");
    for bad in ["4294967296", "-1", "abc", "0"] {
        let yaml = base.replace("peer-asn: 64500", &format!("peer-asn: {bad}"));
        let err = import(&yaml).unwrap_err();
        assert!(matches!(err, ImportError::Asn { .. }), "{bad}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(
                "document 1 (ConfigMap metallb-system/config): data.config.peers[0].peer-asn"
            ),
            "{msg}"
        );
    }
}

#[test]
fn invalid_peer_address_is_an_error() {
    let yaml = fixture("lab-guide-bgp.yaml").replace("10.10.100.1", "10.10.100.300");
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Address { .. }), "{err:?}");
    assert!(err.to_string().contains("peers[0].peer-address"), "{err}");
    assert!(err.to_string().contains("10.10.100.300"), "{err}");
}

#[test]
fn invalid_pool_address_is_an_error() {
    for bad in ["172.19.100.0/33", "172.19.100.9-172.19.100.1", "banana"] {
        let yaml = fixture("lab-guide-bgp.yaml").replace("172.19.100.0/24", bad);
        let err = import(&yaml).unwrap_err();
        assert!(matches!(err, ImportError::Range { .. }), "{bad}: {err:?}");
        assert!(
            err.to_string().contains("address-pools[0].addresses[0]"),
            "{err}"
        );
    }
}

#[test]
fn unknown_community_alias_is_an_error() {
    let yaml = fixture("configmap-aliases.yaml").replace("[vpn-only,", "[vpn-typo,");
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Community { .. }), "{err:?}");
    assert!(err.to_string().contains("vpn-typo"), "{err}");
}

#[test]
fn bgp_advertisement_naming_an_unknown_peer_is_left_to_do() {
    let yaml = fixture("crds-all-kinds.yaml").replace("  - router\n", "  - nowhere\n");
    let err = import(&yaml).unwrap_err();
    let ImportError::Unfinished { problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 1, "{err}");
    assert!(problems[0].contains("spec.peers[0]"), "{err}");
    assert!(
        problems[0].contains("BGPPeer \"nowhere\" is not in the input"),
        "{err}"
    );
}

#[test]
fn missing_pool_and_missing_peer_follow_one_rule_and_are_listed_together() {
    let yaml = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p}
spec: {addresses: [10.9.0.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2}
spec: {ipAddressPools: [gone-pool]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bgp}
spec: {ipAddressPools: [p], peers: [gone-peer]}
"#;
    let err = import(yaml).unwrap_err();
    let ImportError::Unfinished { problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert!(
        problems[0].contains("L2Advertisement")
            && problems[0].contains("spec.ipAddressPools[0]")
            && problems[0].contains("IPAddressPool \"gone-pool\" is not in the input"),
        "{err}"
    );
    assert!(
        problems[1].contains("spec.peers[0]")
            && problems[1].contains("BGPPeer \"gone-peer\" is not in the input"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("left to do:\n  - "), "{text}");
}

#[test]
fn duplicate_pool_names_are_an_error() {
    let yaml = fixture("lab-guide-bgp-two-pools.yaml").replace("ip-pool-2", "ip-pool-1");
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Duplicate { .. }), "{err:?}");
}

#[test]
fn layer2_pool_with_bgp_advertisements_is_an_error() {
    let yaml = "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [10.0.0.0/30]\n  bgp-advertisements: [{localpref: 1}]\n";
    let err = import(yaml).unwrap_err();
    assert!(err.to_string().contains("bgp-advertisements"), "{err}");
}

#[test]
fn hold_time_below_three_seconds_is_an_error() {
    let yaml = fixture("lab-guide-bgp.yaml").replace(
        "peer-address: 10.10.100.1",
        "peer-address: 10.10.100.1\n      hold-time: 2s",
    );
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Duration { .. }), "{err:?}");
}

#[test]
fn broken_embedded_config_is_an_error_naming_data_config() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata:\n  config: \"peers: [\"\n";
    let err = import(yaml).unwrap_err();
    assert!(matches!(err, ImportError::EmbeddedYaml { .. }), "{err:?}");
    assert!(err.to_string().contains("data.config"), "{err}");
}

#[test]
fn missing_required_key_is_an_error() {
    let yaml = fixture("lab-guide-layer2.yaml").replace("      protocol: layer2\n", "");
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Missing { .. }), "{err:?}");
    assert!(
        err.to_string().contains("address-pools[0].protocol"),
        "{err}"
    );
}

// ---- Whole-output properties -------------------------------------------------------------

#[test]
fn every_fixture_imports_to_toml_deterministically() {
    for name in FIXTURES {
        let text = fixture(name);
        let a = import(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = import(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a, b, "{name}: not deterministic");
        toml::from_str::<Value>(&a.toml).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn import_main_exits_zero_on_a_good_file_and_one_on_errors() {
    assert_eq!(
        import_main(&fixture_path("lab-guide-layer2.yaml")),
        ExitCode::SUCCESS
    );
    assert_eq!(
        import_main(&fixture_path("no-such-file.yaml")),
        ExitCode::FAILURE
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "foo: bar\n").expect("write");
    assert_eq!(import_main(&bad), ExitCode::FAILURE);
}

/// Replaces, deletes or inserts characters of `text` at the given positions.
fn mutate(text: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(pos, op, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let i = pos % chars.len();
        match op % 3 {
            0 => chars[i] = c,
            1 => {
                chars.remove(i);
            }
            _ => chars.insert(i, c),
        }
    }
    chars.into_iter().collect()
}

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just(':'),
        Just('-'),
        Just(' '),
        Just('\n'),
        Just('"'),
        Just('['),
        Just('{'),
        Just('&'),
        Just('*'),
        Just('!'),
        Just('0'),
        Just('9'),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn import_never_panics_on_arbitrary_text(text in ".{0,400}") {
        if let Ok(imp) = import(&text) {
            prop_assert!(toml::from_str::<Value>(&imp.toml).is_ok());
        }
    }

    #[test]
    fn import_never_panics_on_mutated_fixtures(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), interesting_char()), 1..8),
    ) {
        let text = mutate(&fixture(FIXTURES[which]), &edits);
        if let Ok(imp) = import(&text) {
            // Whatever is accepted must come out as TOML that parses.
            prop_assert!(toml::from_str::<Value>(&imp.toml).is_ok(), "{}", imp.toml);
        }
    }

    #[test]
    fn arbitrary_names_round_trip_through_the_toml(
        pool_name in "\\PC{1,20}",
        alias in "[^\\s:]{1,12}",
        iface in "[a-z0-9_@.+-]{1,15}",
    ) {
        // Names lb's validator rejects are the next test's subject.
        prop_assume!(!pool_name.trim().is_empty() && iface != "." && iface != "..");
        // Names may hold quotes, backslashes, brackets, unicode: the TOML writer escapes them.
        let docs = [
            serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": pool_name}, "spec": {"addresses": ["10.0.0.0/30"]}}),
            serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "a"}, "spec": {"interfaces": [iface]}}),
            serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "Community",
                "metadata": {"name": "c"}, "spec": {"communities": [{"name": alias, "value": "1:2"}]}}),
        ];
        let yaml = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        let imp = import(&yaml).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let v: Value = toml::from_str(&imp.toml).map_err(|e| TestCaseError::fail(format!("{e}\n{}", imp.toml)))?;
        let p = &arr(&v, "pool")[0];
        prop_assert_eq!(s(p, "name"), Some(pool_name.as_str()));
        prop_assert_eq!(strs(p, "interfaces"), vec![iface.clone()]);
        prop_assert_eq!(s(&v["bgp_communities"], &alias), Some("1:2"));
    }
}

#[test]
fn interface_name_lb_rejects_is_left_to_do_at_the_l2advertisement() {
    let yaml = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: metallb-system}
spec: {addresses: [10.0.0.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a, namespace: metallb-system}
spec: {interfaces: ["a/very/long/interface/name"]}
"#;
    let err = import(yaml).unwrap_err();
    let ImportError::Unfinished { problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 1, "{err}");
    assert!(
        problems[0].contains("(L2Advertisement metallb-system/a): spec.interfaces")
            && problems[0].contains("is not an interface name"),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let yaml = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(import(&yaml).is_err());
    let yaml = format!("peers:\n{}", "- ".repeat(50_000));
    assert!(import(&yaml).is_err());
}

#[test]
fn alias_expansion_bomb_is_an_error() {
    // Each level refers to the previous one ten times: 10^9 nodes if expanded.
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    yaml.push_str("peers: *a9\n");
    let err = import(&yaml).unwrap_err();
    assert!(matches!(err, ImportError::Yaml { .. }), "{err:?}");
}
