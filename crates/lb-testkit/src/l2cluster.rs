//! Three lbd nodes in the namespace lab joined by raft-lite, announcing two layer-2 VIPs
//! (static services lbd puts on every node's `lo`: 10.10.100.200 and fd00:10::200, in two
//! pools), and a dual-stack client. Every node runs a tiny HTTP server on both VIPs that
//! answers with the node's name, so the client sees which node its traffic reached.
//! Used by the layer-2 failover tests and benchmarks.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::lab::{Host, Lab, Proc, capture, probe};
use crate::lbd::lbd_binary;

pub const T: Duration = Duration::from_secs(20);
pub const VIP: &str = "10.10.100.200";
pub const VIP6: &str = "fd00:10::200";
/// The port of the nodes' name servers (HTTP).
pub const HTTP_PORT: u16 = 80;
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

pub struct Cluster {
    pub nodes: Vec<Host>,
    pub lbds: Vec<Option<Proc>>,
    /// Each node's HTTP name server (on both VIPs).
    pub http: Vec<Proc>,
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

[[pool]]
name = "ip-space-6"
protocol = "layer2"
addresses = ["{VIP6}/128"]

[[service]]
name = "vip"
ip = "{VIP}"
assign = true

[[service]]
name = "vip6"
ip = "{VIP6}"
assign = true
"#
    )
}

pub fn start_cluster(name: &str) -> Cluster {
    let lab = Lab::new(name);
    let nodes: Vec<Host> = (0..3)
        .map(|i| {
            lab.node(
                &format!("node{}", i + 1),
                &[
                    &format!("10.10.100.{}/24", i + 3),
                    &format!("fd00:10::{}/64", i + 3),
                ],
            )
        })
        .collect();
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    let mut lbds = Vec::new();
    let mut http = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        // The name server binds the VIPs before lbd puts them on `lo`.
        node.sysctl(&["net.ipv4.ip_nonlocal_bind=1", "net.ipv6.ip_nonlocal_bind=1"])
            .unwrap();
        let port = HTTP_PORT.to_string();
        let name = format!("node{}", i + 1);
        http.push(
            node.spawn_labeled(
                "namesrv",
                &[
                    probe::PYTHON,
                    &probe::script("namesrv.py"),
                    "--name",
                    &name,
                    "--port",
                    &port,
                    "--bind",
                    VIP,
                    "--bind",
                    VIP6,
                ],
            )
            .unwrap(),
        );
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
        // `env` execs lbd: the PID is lbd's. Never the machine's system bus (tests of other
        // modules run lbd nodes at the same time).
        lbds.push(Some(
            node.spawn_labeled(
                "lbd",
                &[
                    "env",
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                    bin.to_str().unwrap(),
                    "--config",
                    cfg.to_str().unwrap(),
                ],
            )
            .unwrap(),
        ));
    }
    Cluster {
        nodes,
        lbds,
        http,
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

    /// The node's name (what its HTTP server answers).
    pub fn name(&self, i: usize) -> String {
        format!("node{}", i + 1)
    }

    /// One `curl http://VIP/` from the client (1 s timeout); the body, trimmed, if it worked.
    pub fn curl(&self, vip: &str) -> Option<String> {
        let host = if vip.contains(':') {
            format!("[{vip}]")
        } else {
            vip.to_string()
        };
        let url = format!("http://{host}:{HTTP_PORT}/");
        self.client
            .stdout(&["curl", "-s", "-g", "-m", "1", &url])
            .ok()
            .map(|b| b.trim().to_string())
    }

    /// Curls `vip` until node `i` answers; panics with the last answer after [`T`].
    pub fn wait_for_curl_from(&self, vip: &str, i: usize) {
        let want = self.name(i);
        let mut last = None;
        let done = crate::lab::try_wait_until(T, "curl", || {
            last = self.curl(vip);
            last.as_deref() == Some(want.as_str())
        });
        assert!(
            done.is_ok(),
            "curl http://{vip}/ never answered {want}; last answer {last:?}\n{}",
            self.logs()
        );
    }

    /// The client's neighbour entry for `ip`: its MAC (lower case), if it has one.
    pub fn neigh_mac(&self, ip: &str) -> Option<String> {
        let out = self
            .client
            .ip_json(&["neigh", "show", "to", ip, "dev", self.client.ifname()])
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?
            .iter()
            .find_map(|e| e["lladdr"].as_str())
            .map(str::to_ascii_lowercase)
    }

    /// Starts a capture of ARP and ICMPv6 on the client.
    pub fn capture(&self) -> capture::Capture {
        self.client.capture("arp or icmp6").unwrap()
    }

    /// Stops `cap` and asserts that no two MACs answered for `vip` at once in it; returns
    /// the MACs that answered, in order.
    pub fn check_capture(&self, cap: capture::Capture, vip: &str) -> Vec<String> {
        let frames = cap.stop().unwrap();
        let ip = vip.parse().unwrap();
        assert_eq!(
            capture::answer_conflict(&frames, ip),
            None,
            "the client's capture shows two MACs answering for {vip} at once\n{}",
            self.logs()
        );
        capture::answering_macs(&frames, ip)
    }

    pub fn node_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.mac() == mac)
    }

    /// Starts an ARP probe for [`VIP`] and waits until some node answers steadily; returns
    /// the probe and the owner's index.
    pub fn probe_until_owned(&self, duration: Duration) -> (probe::RunningProbe, usize) {
        self.probe_until_owned_ip(VIP, duration)
    }

    /// Like [`Cluster::probe_until_owned`] for `vip` (ARP or NDP by its family).
    pub fn probe_until_owned_ip(
        &self,
        vip: &str,
        duration: Duration,
    ) -> (probe::RunningProbe, usize) {
        let p =
            probe::l2probe(&self.client, vip.parse().unwrap(), duration, PROBE_INTERVAL).unwrap();
        let deadline = Instant::now() + T;
        loop {
            let recs = p.snapshot();
            let answered: Vec<&str> = recs
                .iter()
                .filter(|r| r.is_answer())
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
                "nobody answered ARP/NDP for {vip}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Checks the run: one MAC at a time, the new owner answered; returns the gap and the new
/// owner's index.
pub fn check_failover(c: &Cluster, run: &probe::ProbeRun, old: usize) -> (Duration, usize) {
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
    let gap = run
        .longest_gap_between_answers()
        .map(|g| g.duration())
        .unwrap_or_default();
    (gap, new_owner)
}
