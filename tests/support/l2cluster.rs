//! Three lbd nodes in the namespace lab joined by raft-lite, announcing one layer-2 VIP
//! (10.10.100.200, a static service held on every node's `lo`), and a client probing it.
//! Used by the layer-2 failover tests and benchmark.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::lab::{Host, Lab, Proc, probe};
use super::lbd::lbd_binary;

pub const T: Duration = Duration::from_secs(20);
pub const VIP: &str = "10.10.100.200";
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

pub struct Cluster {
    pub nodes: Vec<Host>,
    pub lbds: Vec<Option<Proc>>,
    pub client: Host,
    // Keeps the namespaces alive; dropped last.
    _lab: Lab,
}

fn config(name: &str, state: &str, key: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
state_dir = "{state}"

[cluster]
members = {{ node1 = "10.10.100.3:7946", node2 = "10.10.100.4:7946", node3 = "10.10.100.5:7946" }}
secret_file = "{key}"

[layer2]
gratuitous_count = 3
gratuitous_interval = "100ms"

[[pool]]
name = "ip-space-1"
protocol = "layer2"
addresses = ["10.10.100.200/32"]

[[service]]
name = "vip"
ip = "{VIP}"
assign = true
"#
    )
}

pub fn start_cluster(name: &str) -> Cluster {
    let lab = Lab::new(name);
    let addrs = ["10.10.100.3/24", "10.10.100.4/24", "10.10.100.5/24"];
    let nodes: Vec<Host> = (0..3)
        .map(|i| lab.node(&format!("node{}", i + 1), &[addrs[i]]))
        .collect();
    let client = lab.host("client", &["10.10.100.9/24"]);
    let mut lbds = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let key = node
            .write_file("cluster.key", "lab-cluster-shared-secret-0123456789\n")
            .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let state = node.owned_dir("state", "root:root").unwrap();
        let cfg = node
            .write_file(
                "lb.toml",
                &config(
                    &format!("node{}", i + 1),
                    &state.display().to_string(),
                    &key.display().to_string(),
                ),
            )
            .unwrap();
        let bin = lbd_binary();
        lbds.push(Some(
            node.spawn(&[bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
                .unwrap(),
        ));
    }
    Cluster {
        nodes,
        lbds,
        client,
        _lab: lab,
    }
}

impl Cluster {
    pub fn logs(&self) -> String {
        self.lbds
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "---- node{} ----\n{}",
                    i + 1,
                    p.as_ref().map(|p| p.log()).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn node_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.mac() == mac)
    }

    /// Starts a probe and waits until some node answers steadily; returns the probe and the
    /// owner's index.
    pub fn probe_until_owned(&self, duration: Duration) -> (probe::RunningProbe, usize) {
        let p =
            probe::l2probe(&self.client, VIP.parse().unwrap(), duration, PROBE_INTERVAL).unwrap();
        let deadline = Instant::now() + T;
        loop {
            let recs = p.snapshot();
            let answered: Vec<&str> = recs
                .iter()
                .filter(|r| r.kind == "reply")
                .filter_map(|r| r.mac.as_deref())
                .collect();
            if answered.len() >= 20 {
                let owner = answered[answered.len() - 1];
                return (
                    p,
                    self.node_of_mac(owner)
                        .unwrap_or_else(|| panic!("unknown MAC {owner} answered")),
                );
            }
            assert!(
                Instant::now() < deadline,
                "nobody answered ARP for {VIP}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Checks the run: one MAC at a time, the new owner answered, and returns the gap.
pub fn check_failover(c: &Cluster, run: &probe::ProbeRun, old: usize) -> Duration {
    assert_eq!(
        run.split_brain(PROBE_INTERVAL),
        None,
        "two MACs answered at once\n{}",
        c.logs()
    );
    let macs: BTreeMap<String, usize> =
        run.answers()
            .filter_map(|r| r.mac.clone())
            .fold(BTreeMap::new(), |mut m, mac| {
                *m.entry(mac).or_default() += 1;
                m
            });
    let new_owner = macs
        .keys()
        .filter_map(|m| c.node_of_mac(m))
        .find(|i| *i != old)
        .unwrap_or_else(|| panic!("no other node took over: {macs:?}\n{}", c.logs()));
    assert!(
        run.first_answer_from(c.nodes[new_owner].mac()).is_some(),
        "new owner never answered"
    );
    run.longest_gap_between_answers()
        .map(|g| g.duration())
        .unwrap_or_default()
}
