//! What `lbctl import-metallb` prints is a valid lb.toml: every fixture that imports is run
//! through the real validator.

use std::path::Path;

use lb::config::{Context, parse_str};
use lb::metallb;

fn ctx() -> Context {
    Context {
        hostname: "worker-1".into(),
        check_files: false,
    }
}

fn import_and_validate(fixture: &str) -> lb::config::Checked {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metallb")
        .join(fixture);
    let yaml = std::fs::read_to_string(&path).unwrap();
    let imported = metallb::import(&yaml).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    parse_str(&imported.toml, Path::new("imported.toml"), &ctx()).unwrap_or_else(|d| {
        panic!(
            "{fixture}: imported lb.toml does not validate:\n{d}\n---\n{}",
            imported.toml
        )
    })
}

#[test]
fn every_importable_fixture_yields_a_valid_lb_toml() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metallb");
    let mut validated = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let yaml = std::fs::read_to_string(dir.join(&name)).unwrap();
        if metallb::import(&yaml).is_ok() {
            import_and_validate(&name);
            validated += 1;
        }
    }
    assert!(validated >= 5, "only {validated} fixtures imported");
}

#[test]
fn lab_guide_layer2_configmap_validates_as_the_guide_means() {
    let c = import_and_validate("lab-guide-layer2.yaml").config;
    assert_eq!(c.pools.len(), 1);
    let pool = &c.pools[0];
    assert_eq!(pool.name, "ip-space-1");
    assert_eq!(pool.protocol, lb::model::PoolProtocol::Layer2);
    let ips: Vec<String> = pool.ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(ips, ["10.10.100.200", "10.10.100.201"]);
    assert!(c.bgp_peers.is_empty());
}

#[test]
fn lab_guide_bgp_configmaps_validate_with_an_ibgp_peer() {
    for fixture in ["lab-guide-bgp.yaml", "lab-guide-bgp-two-pools.yaml"] {
        let c = import_and_validate(fixture).config;
        assert_eq!(c.bgp_peers.len(), 1, "{fixture}");
        let peer = &c.bgp_peers[0];
        assert_eq!(peer.address.to_string(), "10.10.100.1");
        assert!(peer.is_ibgp() && peer.my_asn == 64500);
        assert_eq!(c.pools[0].name, "ip-pool-1");
        assert_eq!(
            c.pools[0].ranges[0].to_string(),
            "172.19.100.0-172.19.100.255"
        );
        assert!(
            c.pools
                .iter()
                .all(|p| p.protocol == lb::model::PoolProtocol::Bgp)
        );
    }
    let two = import_and_validate("lab-guide-bgp-two-pools.yaml").config;
    assert_eq!(two.pools[1].name, "ip-pool-2");
}

#[test]
fn imported_service_allocation_validates_into_the_pools_rules() {
    let checked = import_and_validate("crds-service-allocation.yaml");
    let pools = &checked.config.pools;
    let a = &pools.get("team-a").expect("team-a").service_allocation;
    assert_eq!(a.priority, 10);
    assert_eq!(a.namespaces, ["shop", "shop-staging"]);
    assert_eq!(a.namespace_selectors.len(), 1);
    assert_eq!(a.service_selectors.len(), 1);
    assert!(
        !pools
            .get("shared")
            .expect("shared")
            .service_allocation
            .is_set()
    );
}
