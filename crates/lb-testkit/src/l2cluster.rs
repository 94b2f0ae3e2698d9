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
    /// Each node's lb.toml.
    pub configs: Vec<std::path::PathBuf>,
    pub client: Host,
    // Keeps the namespaces alive; dropped last.
    _lab: Lab,
}

/// More IPv4 VIPs for the leader-fault scenarios ([`start_cluster_with`]): placement spreads
/// them over the three nodes, the raft-lite leader included, so a leader fault can be
/// measured on VIPs the leader owns and on VIPs other nodes own.
pub const EXTRA_VIPS: [&str; 6] = [
    "10.10.100.201",
    "10.10.100.202",
    "10.10.100.203",
    "10.10.100.204",
    "10.10.100.205",
    "10.10.100.206",
];

fn config(name: &str, state: &str, key: &str, extra: &[&str]) -> String {
    let pool: String = extra.iter().map(|ip| format!(", \"{ip}/32\"")).collect();
    let services: String = extra
        .iter()
        .enumerate()
        .map(|(k, ip)| format!("\n[[service]]\nname = \"vip-{k}\"\nip = \"{ip}\"\nassign = true\n"))
        .collect();
    let base = format!(
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
addresses = ["10.10.100.200/32"{{pool}}]

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
    );
    base.replace("{pool}", &pool) + &services
}

pub fn start_cluster(name: &str) -> Cluster {
    start_cluster_with(name, &[])
}

/// [`start_cluster`] with `extra` IPv4 VIPs (e.g. [`EXTRA_VIPS`]) in the first pool, each a
/// static service of its own.
pub fn start_cluster_with(name: &str, extra: &[&str]) -> Cluster {
    start_cluster_bin(name, extra, &lbd_binary())
}

/// [`start_cluster_with`] running the lbd binary `bin` (e.g. a previous release's).
pub fn start_cluster_bin(name: &str, extra: &[&str], bin: &std::path::Path) -> Cluster {
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
    let mut configs = Vec::new();
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
                    extra,
                ),
            )
            .unwrap();
        lbds.push(Some(spawn_lbd(node, bin, &cfg)));
        configs.push(cfg);
    }
    Cluster {
        nodes,
        lbds,
        http,
        configs,
        client,
        _lab: lab,
    }
}

fn spawn_lbd(node: &Host, bin: &std::path::Path, cfg: &std::path::Path) -> Proc {
    // `env` execs lbd: the PID is lbd's. Never the machine's system bus (tests of other
    // modules run lbd nodes at the same time).
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
    .unwrap()
}

impl Cluster {
    /// Stops node `i`'s lbd (SIGTERM, waits for its exit) and starts `bin` in its place with
    /// the same configuration and state directory: one step of a rolling upgrade. Returns the
    /// old process (its log).
    pub fn replace_lbd(&mut self, i: usize, bin: &std::path::Path) -> Option<Proc> {
        let old = self.lbds[i].take();
        if let Some(p) = &old {
            p.kill(crate::lab::Signal::Term);
            let status = p.wait_timeout(T).expect("lbd exits after SIGTERM");
            assert!(status.success(), "{status:?}\n{}", p.log());
        }
        self.lbds[i] = Some(spawn_lbd(&self.nodes[i], bin, &self.configs[i]));
        old
    }

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

/// A fault of the raft-lite leader's host ([`leader_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderFault {
    /// SIGKILL of its lbd.
    Kill,
    /// Its `eth0` set down.
    LinkDown,
    /// nft drops every frame in and out of its `eth0` (the link stays up).
    Isolate,
    /// SIGTERM of its lbd (planned stop: hands leadership over).
    Term,
}

/// What a leader fault did to the IPv4 VIPs ([`VIP`] and [`EXTRA_VIPS`]), as the client's ARP
/// probe saw it.
#[derive(Debug, Clone)]
pub struct LeaderFaultRun {
    pub leader: usize,
    /// VIP → the node answering for it just before the fault.
    pub owners: BTreeMap<String, usize>,
    /// Per VIP owned by another node than the leader: the longest gap between answers from
    /// the fault to the end of the run.
    pub others: BTreeMap<String, Duration>,
    /// Per VIP the leader owned: the longest gap (its successor took it over).
    pub own: BTreeMap<String, Duration>,
}

impl LeaderFaultRun {
    pub fn worst_other(&self) -> Option<Duration> {
        self.others.values().max().copied()
    }
    pub fn worst_own(&self) -> Option<Duration> {
        self.own.values().max().copied()
    }
}

/// Count of "became leader" lines in node `i`'s log.
fn leader_lines(c: &Cluster, i: usize) -> usize {
    c.lbds[i]
        .as_ref()
        .map(|p| p.log().matches("became leader").count())
        .unwrap_or(0)
}

impl Cluster {
    /// The node whose lbd most recently logged "became leader" (tracing's RFC 3339 timestamp
    /// starts each line, so the text order is time order).
    pub fn leader(&self) -> Option<usize> {
        (0..self.lbds.len())
            .filter_map(|i| {
                let log = self.lbds[i].as_ref()?.log();
                let line = log.lines().rev().find(|l| l.contains("became leader"))?;
                Some((line.split_whitespace().next()?.to_string(), i))
            })
            .max()
            .map(|(_, i)| i)
    }
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Longest gap between consecutive answers from the last answer before `from` (seconds since
/// the epoch) to the end of the run.
fn gap_after(run: &probe::ProbeRun, from: f64) -> Duration {
    let mut last = run
        .answers()
        .filter(|r| r.t < from)
        .map(|r| r.t)
        .fold(from, |_, t| t);
    let mut worst = 0.0f64;
    for r in run.answers().filter(|r| r.t >= from) {
        worst = worst.max(r.t - last);
        last = r.t;
    }
    worst = worst.max(run.end - last);
    Duration::from_secs_f64(worst.max(0.0))
}

/// Probes every IPv4 VIP of a cluster started with [`start_cluster_with`]`(…, &EXTRA_VIPS)`,
/// waits until each is answered steadily by one node, applies `fault` to the raft-lite
/// leader's host and probes until another node leads and answers for each of the leader's
/// VIPs, then 50 probe rounds more. Asserts that no VIP was ever answered by two MACs at once.
pub fn leader_fault(c: &mut Cluster, fault: LeaderFault) -> LeaderFaultRun {
    let vips: Vec<&str> = std::iter::once(VIP).chain(EXTRA_VIPS).collect();
    let targets: Vec<std::net::IpAddr> = vips.iter().map(|v| v.parse().unwrap()).collect();
    let p = probe::l2probe_many(
        &c.client,
        &targets,
        Duration::from_secs(120),
        PROBE_INTERVAL,
    )
    .unwrap();
    // Steady: the last 30 answers for every VIP from one MAC, and a leader known.
    let deadline = Instant::now() + T;
    let owners: BTreeMap<String, usize> = loop {
        let recs = p.snapshot();
        let last_macs: Option<BTreeMap<String, String>> = vips
            .iter()
            .map(|v| {
                let answers: Vec<&str> = recs
                    .iter()
                    .filter(|r| r.is_answer() && r.target.as_deref() == Some(*v))
                    .filter_map(|r| r.mac.as_deref())
                    .collect();
                let tail = &answers[answers.len().saturating_sub(30)..];
                (tail.len() == 30 && tail.iter().all(|m| *m == tail[0]))
                    .then(|| (v.to_string(), tail[0].to_string()))
            })
            .collect();
        if let Some(m) = last_macs
            && c.leader().is_some()
        {
            break m
                .into_iter()
                .map(|(v, mac)| {
                    let i = c
                        .node_of_mac(&mac)
                        .unwrap_or_else(|| panic!("unknown MAC {mac} answered for {v}"));
                    (v, i)
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the VIPs were never answered steadily\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let leader = c.leader().expect("a leader");
    let before: Vec<usize> = (0..c.lbds.len()).map(|i| leader_lines(c, i)).collect();
    let t_fault = epoch_secs();
    match fault {
        LeaderFault::Kill => c.lbds[leader]
            .as_ref()
            .unwrap()
            .kill(crate::lab::Signal::Kill),
        LeaderFault::LinkDown => c.nodes[leader].link_down().unwrap(),
        LeaderFault::Isolate => c.nodes[leader].isolate().unwrap(),
        LeaderFault::Term => c.lbds[leader]
            .as_ref()
            .unwrap()
            .kill(crate::lab::Signal::Term),
    }
    // Until another node leads and answers for each of the leader's VIPs; then 50 rounds.
    let mine: Vec<&String> = owners
        .iter()
        .filter(|(_, o)| **o == leader)
        .map(|(v, _)| v)
        .collect();
    let deadline = Instant::now() + T;
    let settled_at = loop {
        let recs = p.snapshot();
        let new_leader = (0..c.lbds.len()).any(|i| i != leader && leader_lines(c, i) > before[i]);
        let taken = mine.iter().all(|v| {
            recs.iter().any(|r| {
                r.is_answer()
                    && r.t > t_fault
                    && r.target.as_deref() == Some(v.as_str())
                    && r.mac.as_deref() != Some(c.nodes[leader].mac())
            })
        });
        if new_leader && taken {
            break recs.last().map_or(0, |r| r.seq);
        }
        assert!(
            Instant::now() < deadline,
            "no new leader or the leader's VIPs {mine:?} not taken over\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + T;
    while p.snapshot().last().map_or(0, |r| r.seq) < settled_at + 50 {
        assert!(Instant::now() < deadline, "the probe stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = p.stop().unwrap();
    if fault == LeaderFault::Term {
        let status = c.lbds[leader]
            .as_ref()
            .unwrap()
            .wait_timeout(T)
            .expect("lbd exits after SIGTERM");
        assert!(status.success(), "{status:?}\n{}", c.logs());
    }
    let mut others = BTreeMap::new();
    let mut own = BTreeMap::new();
    for v in &vips {
        let r = run.for_target(v);
        assert_eq!(
            r.split_brain(PROBE_INTERVAL),
            None,
            "two MACs answered for {v} at once\n{}",
            c.logs()
        );
        let gap = gap_after(&r, t_fault);
        if owners[*v] == leader {
            own.insert(v.to_string(), gap);
        } else {
            others.insert(v.to_string(), gap);
        }
    }
    LeaderFaultRun {
        leader,
        owners,
        others,
        own,
    }
}
