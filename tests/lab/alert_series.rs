//! Every metric name the shipped alert rules and Grafana dashboard query is one a running lbd
//! exports: two lbd hosts in the namespace lab (a raft-lite cluster), with a layer-2 pool and
//! one whose interface does not exist, a BGP pool and a BGP peer with BFD (the router
//! namespace runs no BGP nor BFD: the sessions are down, which still exports their series),
//! scraped from inside their namespaces. tests/ops/alert_rules.rs runs promtool on the files.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lb_testkit::alerts::{SCRAPE_SERIES, dashboard_exprs, family_of, metric_names, rule_exprs};
use lb_testkit::lab::{Host, Lab, Proc, wait_until};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};

const T: Duration = Duration::from_secs(30);
const VIP: &str = "10.10.100.200";
/// In a pool announced only on an interface no host has: no owner.
const ORPHAN: &str = "10.10.100.220";

fn config(name: &str, state: &str, key: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
state_dir = "{state}"

[cluster]
members = {{ n1 = "10.10.100.3:7946", n2 = "10.10.100.4:7946" }}
secret_file = "{key}"

[metrics]
listen = "127.0.0.1:7472"

[layer2]
gratuitous_count = 2
gratuitous_interval = "100ms"

[[pool]]
name = "web"
protocol = "layer2"
addresses = ["{VIP}/32"]

[[pool]]
name = "nowhere"
protocol = "layer2"
addresses = ["{ORPHAN}/32"]
interfaces = ["nosuch0"]

[[pool]]
name = "routed"
protocol = "bgp"
addresses = ["172.19.100.0/24"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "10.10.100.1"
hold_time = "9s"
[bgp_peer.bfd]
receive_interval = "300ms"
transmit_interval = "300ms"

[[service]]
name = "vip"
ip = "{VIP}"
assign = true

[[service]]
name = "orphan"
ip = "{ORPHAN}"

[[service]]
name = "dns"
ip = "172.19.100.0"
"#
    )
}

fn start(node: &Host, name: &str) -> Proc {
    let key = node
        .write_file("cluster.key", "alert-series-cluster-key-0123456789\n")
        .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = node.owned_dir("state", "root:root").unwrap();
    let cfg = node
        .write_file(
            "lb.toml",
            &config(
                name,
                &state.display().to_string(),
                &key.display().to_string(),
            ),
        )
        .unwrap();
    // `env` execs lbd (the PID is lbd's); never the machine's system bus.
    node.spawn_labeled(
        "lbd",
        &[
            "env",
            "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
            lbd_binary().to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
    )
    .unwrap()
}

/// The sample names (labels cut off) of both hosts' scrapes, and the samples themselves.
fn scrape(nodes: &[&Host]) -> (BTreeSet<String>, Vec<String>) {
    let mut names = BTreeSet::new();
    let mut samples = Vec::new();
    for n in nodes {
        for (sample, value) in scrape_metrics(n, "127.0.0.1:7472") {
            names.insert(sample.split('{').next().unwrap_or_default().to_string());
            samples.push(format!("{}: {sample} {value}", n.name()));
        }
    }
    (names, samples)
}

#[test]
fn every_metric_the_alert_rules_and_dashboard_query_is_exported_by_a_running_lbd() {
    let mut used = BTreeSet::new();
    for (_, expr) in rule_exprs().into_iter().chain(dashboard_exprs()) {
        used.extend(
            metric_names(&expr)
                .into_iter()
                .filter(|n| !SCRAPE_SERIES.contains(&n.as_str())),
        );
    }
    assert!(used.len() > 20, "too few names read: {used:?}");

    let lab = Lab::new("alrt");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let n1 = lab.node("n1", &["10.10.100.3/24"]);
    let n2 = lab.node("n2", &["10.10.100.4/24"]);
    let lbds = [start(&n1, "n1"), start(&n2, "n2")];

    // The VIP's owner answers ARP: its per-IP request counter exists from the first request.
    wait_until(T, "the VIP answers ping from the router", || {
        for l in &lbds {
            assert!(l.is_running(), "lbd exited:\n{}", l.log());
        }
        router.ping(VIP)
    });
    let mut last = (BTreeSet::new(), Vec::new());
    let missing = |names: &BTreeSet<String>| -> Vec<String> {
        used.iter()
            .filter(|n| family_of(n, names).is_none())
            .cloned()
            .collect()
    };
    let all_there = lb_testkit::lab::try_wait_until(T, "every queried series exported", || {
        last = scrape(&[&n1, &n2]);
        missing(&last.0).is_empty()
    });
    assert!(
        all_there.is_ok(),
        "series the rules or the dashboard use but lbd does not export: {:?}\nscrapes:\n{}\nlogs:\n{}\n{}",
        missing(&last.0),
        last.1.join("\n"),
        lbds[0].log(),
        lbds[1].log()
    );

    // The layer-2 owner series say what lbctl would: the VIP has an owner, the IP of the pool
    // on a missing interface has none (LbLayer2IpWithoutOwner's case).
    let has_owner =
        |ip: &str, pool: &str| format!("lb_layer2_ip_has_owner{{ip=\"{ip}\",pool=\"{pool}\"}} ");
    let samples = last.1.join("\n");
    assert!(
        samples.contains(&(has_owner(VIP, "web") + "1")),
        "{samples}"
    );
    assert!(
        samples.contains(&(has_owner(ORPHAN, "nowhere") + "0")),
        "{samples}"
    );
    // One host (the leader) exports them, not both.
    assert_eq!(
        samples.matches(&has_owner(VIP, "web")).count(),
        1,
        "{samples}"
    );
    assert!(
        samples.contains("lb_bfd_session_up{peer=\"10.10.100.1\"} 0"),
        "{samples}"
    );
}
