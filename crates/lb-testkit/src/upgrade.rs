//! A rolling upgrade of three lbd hosts, measured (issue 15 items 3 and 4): the hosts
//! (10.10.100.3/.4/.5) run one binary, then each in turn is stopped for a restart (SIGUSR2:
//! what lbd is told by a systemd restart job, as `apt upgrade` does it) and started again on
//! another binary with the same lb.toml and state directory, the raft-lite leader included; the
//! next host waits until this one is back in the cluster (the leader reports it healthy, it
//! hears the leader) and the router has its BGP session Established, its End-of-RIB and a fresh
//! path for every BGP Service.
//!
//! The lab: an FRR router (10.10.100.1, AS 64500, iBGP to every host, ECMP, a graceful-restart
//! helper by default), the test API server (10.10.100.2) with LoadBalancer Services — six in a
//! layer-2 pool, two in a BGP pool — whose IPs lbd allocates (so an IP change is possible, and
//! measured), a client on the LAN (10.10.100.9) and one behind the router (192.168.50.9).
//! Each host stands in for kube-proxy: the BGP Service IPs on `lo` and a TCP server on port 80
//! that sends the host's name and closes.
//!
//! While the hosts are upgraded: the LAN client asks for every layer-2 IP by ARP every 10 ms
//! (`l2probe.py`), the router's FIB is sampled for every BGP IP every 10 ms (`fibprobe.py`),
//! the remote client opens a TCP connection to every BGP IP every 10 ms through the router
//! (`reach.py`), and a Kubernetes watch timestamps every change of a Service (`svcwatch.py`).
//! [`UpgradeLab::rolling_upgrade`] returns, per restart: the longest gap between ARP answers of
//! each layer-2 IP, the FIB samples without a BGP route (or without one of its three next
//! hops) and the kernel's route removals, the TCP connections that failed, and the Services
//! whose IPs changed; and over the run, any layer-2 IP answered by two MACs at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::chaos::Tail;
use crate::kubelab::KubeLab;
use crate::lab::peers::{Frr, FrrConfig, kernel_nexthops};
use crate::lab::probe::{self, FibRun, ProbeRun, ReachMode, RunningProbe, SplitBrain};
use crate::lab::{Host, Lab, Proc, Signal};
use crate::lbd::scrape_metrics;

/// Generous: a loaded 2-core machine runs several labs at once.
pub const T: Duration = Duration::from_secs(60);
/// ARP, FIB and TCP probes: one round every 10 ms.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// The probes run until stopped; this only bounds a forgotten one.
const PROBE_MAX: Duration = Duration::from_secs(900);
pub const NODE_IPS: [&str; 3] = ["10.10.100.3", "10.10.100.4", "10.10.100.5"];
const ROUTER: &str = "10.10.100.1";
const CONTROL_PLANE: &str = "10.10.100.2";
const ASN: u32 = 64500;
const NAMESPACE: &str = "default";
/// Each host's /metrics, on its own namespace's loopback.
const METRICS: &str = "127.0.0.1:7472";
const L2_SERVICES: [&str; 6] = ["l2-a", "l2-b", "l2-c", "l2-d", "l2-e", "l2-f"];
const BGP_SERVICES: [&str; 2] = ["bgp-a", "bgp-b"];
/// After a host is back: every layer-2 IP answered this many more times (half a second at
/// 10 ms) before the next host is stopped, so each restart's window holds what follows it.
const SETTLE_ANSWERS: usize = 50;

/// The kube-proxy stand-in's service: accepts on port 80, sends the host's name, closes.
const TCP_NAME_PY: &str = r#"
import socket, sys
name = (sys.argv[1] + "\n").encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(1024)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(name)
    except OSError:
        pass
    c.close()
"#;

/// How each running lbd is stopped before the next binary starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGUSR2: a stop for a restart (lbd's planned restart; a systemd restart job is told
    /// apart the same way): BGP sessions close without withdrawing.
    Restart,
    /// SIGTERM: a plain stop, as systemd stops an lbd that predates graceful restart (and
    /// SIGUSR2, which would kill it outright): it withdraws its routes first.
    Term,
}

impl Stop {
    pub fn parse(s: &str) -> Option<Stop> {
        match s {
            "usr2" | "restart" => Some(Stop::Restart),
            "term" => Some(Stop::Term),
            _ => None,
        }
    }

    fn signal(self) -> Signal {
        match self {
            Stop::Restart => Signal::Usr2,
            Stop::Term => Signal::Term,
        }
    }
}

/// What one host's upgrade cost, from its stop to the next host's (the last: to the end).
#[derive(Debug, Clone, Default)]
pub struct RestartRecord {
    pub node: String,
    /// It was the raft-lite leader when stopped.
    pub was_leader: bool,
    /// Epoch seconds: signal sent, old lbd exited, new lbd started, back (cluster and BGP),
    /// end of the window.
    pub stopped: f64,
    pub exited: f64,
    pub started: f64,
    pub back: f64,
    pub end: f64,
    /// Layer-2 IP → the longest time between two ARP answers in the window (from the last
    /// answer before the stop).
    pub l2_gaps: BTreeMap<String, Duration>,
    /// Layer-2 IP → the longest run of ARP probe rounds (one request every 10 ms) without an
    /// answer in the window. Unlike the gap, a probe that was itself descheduled (a loaded
    /// machine) sends no rounds meanwhile, so this counts only requests the hosts left
    /// unanswered: 1 is a 20 ms gap at the probe's pace.
    pub l2_missed: BTreeMap<String, u64>,
    /// Layer-2 IPs answered by another host at the end of the window than before it.
    pub l2_moved: Vec<String>,
    /// BGP IPs whose route left the router's FIB (a sample without it, or a kernel removal).
    pub routes_left: Vec<String>,
    /// FIB samples (all BGP IPs) in the window; those without the route; those with another
    /// set of next hops than the three hosts.
    pub fib_samples: usize,
    pub fib_absent: usize,
    pub fib_nexthop_missing: usize,
    /// TCP connections through the router in the window.
    pub tcp_ok: usize,
    pub tcp_failed: usize,
    /// Service IP changes seen by the watch in the window, one line each.
    pub ip_changes: Vec<String>,
}

impl RestartRecord {
    pub fn worst_l2_gap(&self) -> Duration {
        self.l2_gaps.values().max().copied().unwrap_or_default()
    }

    pub fn worst_l2_missed(&self) -> u64 {
        self.l2_missed.values().max().copied().unwrap_or_default()
    }

    /// The longest gap of the IPs that moved (`moved`) or stayed (`!moved`) in this window:
    /// a moved IP's gap is the handover's, a staying IP's is the probe's and the machine's
    /// noise.
    pub fn worst_l2_gap_of(&self, moved: bool) -> Option<Duration> {
        self.l2_gaps
            .iter()
            .filter(|(ip, _)| self.l2_moved.contains(ip) == moved)
            .map(|(_, g)| *g)
            .max()
    }

    /// One line for the bench and the test output.
    pub fn line(&self) -> String {
        let (ip, gap) = self
            .l2_gaps
            .iter()
            .max_by_key(|(_, g)| **g)
            .map(|(ip, g)| (ip.as_str(), *g))
            .unwrap_or(("-", Duration::ZERO));
        format!(
            "{}{}: longest layer-2 gap {:.0} ms ({ip}; {} IPs moved: {}, the others: {}; most \
             ARP rounds unanswered in a row {}), BGP \
             routes leaving the FIB {} (samples without a route {}, missing a next hop {}, of \
             {}), TCP connections {} ok / {} failed, Service IP changes {}; stop to exit {:.0} \
             ms, start to back {:.2} s",
            self.node,
            if self.was_leader { " (leader)" } else { "" },
            gap.as_secs_f64() * 1e3,
            self.l2_moved.len(),
            ms_or_dash(self.worst_l2_gap_of(true)),
            ms_or_dash(self.worst_l2_gap_of(false)),
            self.worst_l2_missed(),
            self.routes_left.len(),
            self.fib_absent,
            self.fib_nexthop_missing,
            self.fib_samples,
            self.tcp_ok,
            self.tcp_failed,
            self.ip_changes.len(),
            (self.exited - self.stopped) * 1e3,
            self.back - self.started,
        )
    }
}

/// The whole rolling upgrade.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRun {
    pub restarts: Vec<RestartRecord>,
    /// Layer-2 IPs answered by two MACs at once (one request, or interleaved within 50 ms).
    pub two_macs: Vec<(String, SplitBrain)>,
    pub l2_ips: Vec<String>,
    pub bgp_ips: Vec<String>,
    /// Service → IPs before the first stop.
    pub services: BTreeMap<String, Vec<String>>,
    /// Layer-2 IP → the host answering for it before the first stop.
    pub owners: BTreeMap<String, String>,
    /// How well the FIB probes kept their 10 ms (the longest time between two samples).
    pub fib_longest_interval: Duration,
    /// ARP requests sent (all IPs).
    pub arp_requests: u64,
}

impl UpgradeRun {
    pub fn worst_l2_gap(&self) -> Duration {
        self.restarts
            .iter()
            .map(RestartRecord::worst_l2_gap)
            .max()
            .unwrap_or_default()
    }
    pub fn routes_left(&self) -> usize {
        self.restarts.iter().map(|r| r.routes_left.len()).sum()
    }
    pub fn nexthop_missing(&self) -> usize {
        self.restarts.iter().map(|r| r.fib_nexthop_missing).sum()
    }
    pub fn tcp_failed(&self) -> usize {
        self.restarts.iter().map(|r| r.tcp_failed).sum()
    }
    pub fn tcp_ok(&self) -> usize {
        self.restarts.iter().map(|r| r.tcp_ok).sum()
    }
    pub fn ip_changes(&self) -> Vec<String> {
        self.restarts
            .iter()
            .flat_map(|r| r.ip_changes.iter().cloned())
            .collect()
    }
}

fn ms_or_dash(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn node_name(i: usize) -> String {
    format!("node{}", i + 1)
}

/// The chaos soak's lb.toml (the same pools and peer) plus a fixed metrics address.
fn lbd_config(i: usize, state: &Path, key: &Path, kubeconfig: &Path) -> String {
    let mut c = crate::chaos::lbd_config(&node_name(i), &NODE_IPS, state, key, kubeconfig);
    let _ = write!(c, "\n[metrics]\nlisten = \"{METRICS}\"\n");
    c
}

fn service_yaml(name: &str, pool: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  \
         annotations:\n    metallb.universe.tf/address-pool: {pool}\nspec:\n  type: \
         LoadBalancer\n  externalTrafficPolicy: Cluster\n  selector:\n    app: {name}\n  \
         ports:\n  - name: http\n    port: 80\n    protocol: TCP\n"
    )
}

/// A metric sample from a scrape (`name{labels}` as printed), if present.
fn sample(m: &BTreeMap<String, f64>, key: &str) -> Option<f64> {
    m.get(key).copied()
}

/// The lab, the three hosts and their lbds; dropping it stops everything.
pub struct UpgradeLab {
    pub nodes: Vec<Host>,
    lbds: Vec<Option<Proc>>,
    /// lbd processes already stopped (their logs, for failure messages).
    old: Vec<(String, Proc)>,
    configs: Vec<PathBuf>,
    lives: usize,
    pub router: Host,
    pub frr: Frr,
    pub client: Host,
    pub remote: Host,
    pub kube: KubeLab,
    /// Service → IPs once every Service had one.
    pub services: BTreeMap<String, Vec<String>>,
    pub l2_ips: Vec<String>,
    pub bgp_ips: Vec<String>,
    _tcp: Vec<Proc>,
    // Dropped last: kills every process and deletes the namespaces.
    _lab: Lab,
}

impl UpgradeLab {
    /// Builds the lab, starts `from` on the three hosts, creates the Services and waits until
    /// each has an IP, every host is in the cluster and every BGP IP is routed to all three.
    pub fn start(name: &str, from: &Path) -> UpgradeLab {
        let lab = Lab::new(name);
        let router = lab.router("router", &[&format!("{ROUTER}/24")]);
        let cp = lab.host("cp", &[&format!("{CONTROL_PLANE}/24")]);
        let client = lab.host("client", &["10.10.100.9/24"]);
        // The remote client's own segment behind the router.
        let seg = lab.segment().expect("client segment");
        router
            .attach(&seg, "eth1", &["192.168.50.1/24"])
            .expect("router eth1");
        let remote = lab.host("remote", &[]);
        remote
            .attach(&seg, "eth1", &["192.168.50.9/24"])
            .expect("remote eth1");
        remote
            .run(&["ip", "route", "add", "default", "via", "192.168.50.1"])
            .expect("remote default route");

        let kube = KubeLab::start(&cp);
        let mut frr_cfg = FrrConfig::new(ASN, ROUTER);
        for ip in NODE_IPS {
            frr_cfg = frr_cfg.neighbor(ip, ASN);
        }
        frr_cfg.maximum_paths_ibgp = Some(8);
        let frr = Frr::start(&router, &frr_cfg).expect("FRR starts");

        let py = lab.dir().join("tcpname.py");
        std::fs::write(&py, TCP_NAME_PY).expect("tcpname.py");
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        let mut tcp = Vec::new();
        for (i, ip) in NODE_IPS.iter().enumerate() {
            let name = node_name(i);
            let host = lab.node(&name, &[&format!("{ip}/24")]);
            host.run(&["ip", "route", "add", "default", "via", ROUTER])
                .expect("node default route");
            kube.add_node(&name, ip);
            let key = host
                .write_file("cluster.key", "upgrade-cluster-shared-secret-0123456789\n")
                .expect("cluster key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
            let state = host.owned_dir("state", "root:root").expect("state dir");
            configs.push(
                host.write_file("lb.toml", &lbd_config(i, &state, &key, kube.kubeconfig()))
                    .expect("lb.toml"),
            );
            let p = host
                .spawn_labeled(
                    "tcpname",
                    &[probe::PYTHON, py.to_str().expect("utf-8"), &name],
                )
                .expect("TCP server");
            p.wait_for_log("listening", T).expect("TCP server listens");
            tcp.push(p);
            nodes.push(host);
        }
        let mut u = UpgradeLab {
            nodes,
            lbds: vec![None, None, None],
            old: Vec::new(),
            configs,
            lives: 0,
            router,
            frr,
            client,
            remote,
            kube,
            services: BTreeMap::new(),
            l2_ips: Vec::new(),
            bgp_ips: Vec::new(),
            _tcp: tcp,
            _lab: lab,
        };
        for i in 0..3 {
            u.spawn_lbd(i, from);
        }
        // The cluster first, so placement spreads the layer-2 IPs over the three hosts (an IP
        // stays with its holder while that can hold it).
        let deadline = Instant::now() + T;
        while let Some(why) = (0..3).find_map(|i| u.not_in_cluster(i)) {
            assert!(Instant::now() < deadline, "no cluster: {why}\n{}", u.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        u.create_services();
        for i in 0..3 {
            u.wait_back(i, Instant::now() + T);
        }
        u
    }

    fn spawn_lbd(&mut self, i: usize, bin: &Path) {
        self.lives += 1;
        // `env` execs lbd: the PID is lbd's. Never the machine's system bus.
        let p = self.nodes[i]
            .spawn_labeled(
                &format!("lbd{}", self.lives),
                &[
                    "env",
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                    "NO_COLOR=1",
                    bin.to_str().expect("utf-8 path"),
                    "--config",
                    self.configs[i].to_str().expect("utf-8 path"),
                ],
            )
            .expect("lbd starts");
        self.lbds[i] = Some(p);
    }

    /// Every lbd's log (the stopped ones first), for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (node, p) in &self.old {
            let _ = write!(s, "---- {node} (stopped) ----\n{}", p.log());
        }
        for (i, p) in self.lbds.iter().enumerate() {
            if let Some(p) = p {
                let _ = write!(s, "---- {} ----\n{}", node_name(i), p.log());
            }
        }
        s
    }

    /// LoadBalancer Service → ingress IPs, as the API server has them.
    fn service_ips(&self) -> Option<BTreeMap<String, Vec<String>>> {
        let r = self
            .kube
            .kubectl(&["get", "services", "-n", NAMESPACE, "-o", "json"]);
        if r.code != 0 {
            return None;
        }
        let v: Value = serde_json::from_str(&r.stdout).ok()?;
        Some(
            v["items"]
                .as_array()?
                .iter()
                .filter(|s| s["spec"]["type"] == "LoadBalancer")
                .map(|s| {
                    let ips = s["status"]["loadBalancer"]["ingress"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        format!(
                            "{NAMESPACE}/{}",
                            s["metadata"]["name"].as_str().unwrap_or("")
                        ),
                        ips,
                    )
                })
                .collect(),
        )
    }

    fn create_services(&mut self) {
        let yaml: Vec<String> = L2_SERVICES
            .iter()
            .map(|n| service_yaml(n, "l2"))
            .chain(BGP_SERVICES.iter().map(|n| service_yaml(n, "bgp")))
            .collect();
        self.kube.apply(&yaml.join("---\n"));
        let eps: Vec<(String, String)> = (0..3)
            .map(|i| (node_name(i), format!("10.244.{}.10", i + 1)))
            .collect();
        let eps: Vec<(&str, &str)> = eps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        for name in L2_SERVICES.iter().chain(&BGP_SERVICES) {
            self.kube
                .set_endpoints(NAMESPACE, name, &eps, &[("http", 80, "TCP")]);
        }
        let want = L2_SERVICES.len() + BGP_SERVICES.len();
        let deadline = Instant::now() + T;
        self.services = loop {
            if let Some(s) = self.service_ips()
                && s.len() == want
                && s.values().all(|ips| !ips.is_empty())
            {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "not every Service got an IP: {:?}\n{}",
                self.service_ips(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let ips_of = |names: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = names
                .iter()
                .flat_map(|n| self.services[&format!("{NAMESPACE}/{n}")].clone())
                .collect();
            v.sort();
            v
        };
        self.l2_ips = ips_of(&L2_SERVICES);
        self.bgp_ips = ips_of(&BGP_SERVICES);
        // kube-proxy's part for the BGP IPs: on every host's lo (arp_ignore=1 keeps the
        // kernel from answering ARP for them).
        for n in &self.nodes {
            for ip in &self.bgp_ips {
                n.add_lo_ip(&format!("{ip}/32")).expect("IP on lo");
            }
        }
    }

    /// `lb_cluster_is_leader` of every host that answers /metrics.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            sample(
                &scrape_metrics(&self.nodes[i], METRICS),
                "lb_cluster_is_leader",
            ) == Some(1.0)
        })
    }

    /// What still keeps host `i` from being back: `None` once it is in the cluster (the
    /// leader reports every member healthy and `i` hears the leader) and the router has its
    /// session Established, its End-of-RIB (when graceful restart was negotiated), a fresh
    /// path from it for every BGP IP and all three next hops in the FIB.
    fn not_back(&self, i: usize) -> Option<String> {
        if let Some(why) = self.not_in_cluster(i) {
            return Some(why);
        }
        self.not_back_at_the_router(i)
    }

    /// What keeps host `i` from being in the cluster: `None` once the leader reports every
    /// member healthy and `i` hears the leader.
    fn not_in_cluster(&self, i: usize) -> Option<String> {
        let scrapes: Vec<BTreeMap<String, f64>> = self
            .nodes
            .iter()
            .map(|n| scrape_metrics(n, METRICS))
            .collect();
        let leaders: Vec<usize> = (0..scrapes.len())
            .filter(|&k| sample(&scrapes[k], "lb_cluster_is_leader") == Some(1.0))
            .collect();
        let [leader] = leaders[..] else {
            return Some(format!("leaders {leaders:?}"));
        };
        let healthy = |m: &BTreeMap<String, f64>, k: usize| {
            sample(
                m,
                &format!("lb_cluster_member_healthy{{member=\"{}\"}}", node_name(k)),
            ) == Some(1.0)
        };
        if let Some(k) = (0..3).find(|&k| !healthy(&scrapes[leader], k)) {
            return Some(format!(
                "the leader {} does not report {} healthy",
                node_name(leader),
                node_name(k)
            ));
        }
        if !healthy(&scrapes[i], leader) {
            return Some(format!(
                "{} does not hear the leader {}",
                node_name(i),
                node_name(leader)
            ));
        }
        None
    }

    /// What keeps the router from having host `i` back: `None` once its session is
    /// Established, with End-of-RIB (when graceful restart was negotiated), a fresh path from
    /// it for every BGP IP and all three next hops in the FIB.
    fn not_back_at_the_router(&self, i: usize) -> Option<String> {
        let ip = NODE_IPS[i];
        let n = self
            .frr
            .vtysh_json(&format!("show bgp neighbors {ip} json"))
            .map(|v| v[ip].clone())
            .unwrap_or_default();
        if n["bgpState"] != "Established" {
            return Some(format!("BGP session with {ip}: {}", n["bgpState"]));
        }
        let gr = &n["gracefulRestartInfo"];
        if gr["remoteGrMode"] == "Restart"
            && gr["ipv4Unicast"]["endOfRibStatus"]["endOfRibRecv"] != true
        {
            return Some(format!("no End-of-RIB from {ip} yet"));
        }
        let mut all: Vec<String> = NODE_IPS.iter().map(|s| s.to_string()).collect();
        all.sort();
        for vip in &self.bgp_ips {
            let prefix = format!("{vip}/32");
            let paths = self.frr.paths(&prefix);
            if paths.iter().any(|p| p["stale"] == true) {
                return Some(format!("a stale path for {prefix}"));
            }
            if !paths.iter().any(|p| p["nexthops"][0]["ip"] == ip) {
                return Some(format!("no path for {prefix} from {ip}"));
            }
            let nh = kernel_nexthops(&self.router, &prefix).unwrap_or_default();
            if nh != all {
                return Some(format!("{prefix} in the FIB via {nh:?}"));
            }
        }
        None
    }

    fn wait_back(&self, i: usize, deadline: Instant) {
        loop {
            let Some(why) = self.not_back(i) else { return };
            assert!(
                Instant::now() < deadline,
                "{} not back: {why}\n{}\n{}",
                node_name(i),
                self.logs(),
                self.frr.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Upgrades node1, node2, node3 in turn to `to`, each stopped the `stop` way, while the
    /// probes run; returns what each restart cost. Panics if a host does not come back.
    pub fn rolling_upgrade(&mut self, to: &Path, stop: Stop) -> UpgradeRun {
        let l2: Vec<std::net::IpAddr> = self.l2_ips.iter().map(|v| v.parse().unwrap()).collect();
        let arp =
            probe::l2probe_many(&self.client, &l2, PROBE_MAX, PROBE_INTERVAL).expect("ARP probe");
        let fibs: Vec<RunningProbe> = self
            .bgp_ips
            .iter()
            .map(|ip| {
                probe::fib(&self.router, &format!("{ip}/32"), PROBE_MAX, PROBE_INTERVAL)
                    .expect("FIB probe")
            })
            .collect();
        // 1 s per attempt: without a route the router refuses at once (ICMP unreachable);
        // the longer timeout only keeps a busy machine from failing a connection that works.
        let reach: Vec<RunningProbe> = self
            .bgp_ips
            .iter()
            .map(|ip| {
                probe::reach_with_timeout(
                    &self.remote,
                    ReachMode::Tcp(80),
                    ip.parse().unwrap(),
                    PROBE_MAX,
                    PROBE_INTERVAL,
                    Duration::from_secs(1),
                )
                .expect("TCP probe")
            })
            .collect();
        let url = format!("http://{}/api/v1/services", self.kube.addr());
        let watch = self
            .kube
            .host()
            .spawn_labeled(
                "svcwatch",
                &[probe::PYTHON, &probe::script("svcwatch.py"), "--url", &url],
            )
            .expect("Service watch");

        let mut arp_tail = Tail::new(arp.stdout_path());
        let mut reach_tails: Vec<Tail> = reach.iter().map(|r| Tail::new(r.stdout_path())).collect();
        // Steady before the first stop: every layer-2 IP and every TCP probe answered, the
        // watch listed every Service.
        let mut counts = Counts::default();
        let deadline = Instant::now() + T;
        loop {
            counts.poll(&mut arp_tail, &mut reach_tails, 0.0);
            let listed = watch.stdout().matches("\"ev\": \"svc\"").count();
            if counts.l2_at_least(&self.l2_ips, 30)
                && counts.tcp_at_least(reach.len(), 20)
                && listed >= self.services.len()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not steady before the upgrade: ARP answers {:?}, TCP {:?}, watch events \
                 {listed}\n{}",
                counts.l2,
                counts.tcp,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut restarts = Vec::new();
        for i in 0..self.nodes.len() {
            let was_leader = self.leader() == Some(i);
            let old = self.lbds[i].take().expect("an lbd runs");
            let stopped = epoch();
            old.kill(stop.signal());
            let status = old.wait_timeout(T);
            let exited = epoch();
            assert!(
                status.is_some_and(|s| s.success()),
                "{} exit status {status:?}\n{}",
                node_name(i),
                old.log()
            );
            self.old.push((node_name(i), old));
            let started = epoch();
            self.spawn_lbd(i, to);
            self.wait_back(i, Instant::now() + T);
            let back = epoch();
            let mut counts = Counts::default();
            let deadline = Instant::now() + T;
            while !(counts.l2_at_least(&self.l2_ips, SETTLE_ANSWERS)
                && counts.tcp_at_least(reach.len(), 5))
            {
                assert!(
                    Instant::now() < deadline,
                    "after {} came back, not every IP answered: ARP {:?}, TCP {:?}\n{}",
                    node_name(i),
                    counts.l2,
                    counts.tcp,
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
                counts.poll(&mut arp_tail, &mut reach_tails, back);
            }
            restarts.push(RestartRecord {
                node: node_name(i),
                was_leader,
                stopped,
                exited,
                started,
                back,
                end: epoch(),
                ..RestartRecord::default()
            });
        }

        let arp = arp.stop().expect("ARP probe output");
        let fibs: Vec<FibRun> = fibs
            .into_iter()
            .map(|f| f.stop_fib().expect("FIB probe output"))
            .collect();
        let reach: Vec<ProbeRun> = reach
            .into_iter()
            .map(|r| r.stop().expect("TCP probe output"))
            .collect();
        watch.kill(Signal::Term);
        watch.wait_timeout(Duration::from_secs(10));
        let events = watch_events(&watch.stdout());
        self.analyse(restarts, &arp, &fibs, &reach, &events)
    }

    fn analyse(
        &self,
        mut restarts: Vec<RestartRecord>,
        arp: &ProbeRun,
        fibs: &[FibRun],
        reach: &[ProbeRun],
        events: &[SvcEvent],
    ) -> UpgradeRun {
        let mut all: Vec<String> = NODE_IPS.iter().map(|s| s.to_string()).collect();
        all.sort();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let first_stop = restarts.first().map_or(f64::MAX, |r| r.stopped);
        // Service IPs as the watch saw them just before the first stop.
        let services = ips_before(events, first_stop);
        let mut ips = services.clone();
        let starts: Vec<f64> = restarts.iter().map(|r| r.stopped).collect();
        let per_ip: BTreeMap<&str, ProbeRun> = self
            .l2_ips
            .iter()
            .map(|ip| (ip.as_str(), arp.for_target(ip)))
            .collect();
        for (k, r) in restarts.iter_mut().enumerate() {
            let from = r.stopped;
            let to = starts.get(k + 1).copied().unwrap_or(arp.end);
            r.end = to;
            // The probe's round at `to` (any IP's last answer before it).
            let round_at_to = arp
                .records
                .iter()
                .filter(|a| a.t < to)
                .map(|a| a.seq)
                .max()
                .unwrap_or(0);
            for (ip, run) in &per_ip {
                let answers: Vec<(f64, Option<&str>)> =
                    run.answers().map(|a| (a.t, a.mac.as_deref())).collect();
                let rounds: Vec<u64> = run
                    .answers()
                    .filter(|a| a.t >= from && a.t < to)
                    .map(|a| a.seq)
                    .collect();
                let mut prev = run
                    .answers()
                    .filter(|a| a.t < from)
                    .last()
                    .map_or(rounds.first().copied().unwrap_or(0), |a| a.seq);
                let mut missed = 0u64;
                for s in rounds.iter().copied().chain([round_at_to]) {
                    missed = missed.max(s.saturating_sub(prev).saturating_sub(1));
                    prev = prev.max(s);
                }
                r.l2_missed.insert(ip.to_string(), missed);
                let before = answers.iter().rev().find(|(t, _)| *t < from);
                let mut last = before.map_or(from, |(t, _)| *t);
                let mut worst = 0.0f64;
                for (t, _) in answers.iter().filter(|(t, _)| *t >= from && *t < to) {
                    worst = worst.max(t - last);
                    last = *t;
                }
                worst = worst.max(to - last);
                r.l2_gaps
                    .insert(ip.to_string(), Duration::from_secs_f64(worst.max(0.0)));
                let after = answers.iter().rev().find(|(t, _)| *t < to);
                if before.map(|b| b.1) != after.map(|a| a.1) {
                    r.l2_moved.push(ip.to_string());
                }
            }
            for (ip, fib) in self.bgp_ips.iter().zip(fibs) {
                let samples: Vec<&probe::FibState> = fib
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < to)
                    .map(|(_, s)| s)
                    .collect();
                let absent = samples.iter().filter(|s| s.nexthops.is_empty()).count();
                let removed = fib
                    .changes
                    .iter()
                    .any(|c| c.t >= from && c.t < to && c.deleted);
                r.fib_samples += samples.len();
                r.fib_absent += absent;
                r.fib_nexthop_missing += samples.iter().filter(|s| s.nexthops != all).count();
                if absent > 0 || removed {
                    r.routes_left.push(ip.clone());
                }
            }
            for run in reach {
                for rec in run.records.iter().filter(|x| x.t >= from && x.t < to) {
                    if rec.ok {
                        r.tcp_ok += 1;
                    } else {
                        r.tcp_failed += 1;
                    }
                }
            }
            for e in events.iter().filter(|e| e.t >= from && e.t < to) {
                let prev = ips.insert(e.key.clone(), e.ips.clone());
                if prev.as_ref() != Some(&e.ips) {
                    r.ip_changes.push(format!(
                        "{} {:?} -> {:?} ({} {:.3} s after the stop)",
                        e.key,
                        prev.unwrap_or_default(),
                        e.ips,
                        e.kind,
                        e.t - from
                    ));
                }
            }
        }
        let owners = per_ip
            .iter()
            .filter_map(|(ip, run)| {
                let mac = run
                    .answers()
                    .filter(|a| a.t < first_stop)
                    .last()?
                    .mac
                    .clone()?;
                let node = self.nodes.iter().position(|n| n.mac() == mac)?;
                Some((ip.to_string(), node_name(node)))
            })
            .collect();
        let two_macs = per_ip
            .iter()
            .filter_map(|(ip, run)| {
                run.two_macs_at_once(PROBE_INTERVAL * 5)
                    .map(|s| (ip.to_string(), s))
            })
            .collect();
        UpgradeRun {
            restarts,
            two_macs,
            l2_ips: self.l2_ips.clone(),
            bgp_ips: self.bgp_ips.clone(),
            services,
            owners,
            fib_longest_interval: fibs
                .iter()
                .map(FibRun::longest_sample_interval)
                .max()
                .unwrap_or_default(),
            arp_requests: arp.sent,
        }
    }
}

/// Answers counted from the probes' output as it is written.
#[derive(Default)]
struct Counts {
    /// Layer-2 IP → ARP answers since `since`.
    l2: BTreeMap<String, usize>,
    /// TCP probe → successful connections since `since`.
    tcp: BTreeMap<usize, usize>,
}

impl Counts {
    fn poll(&mut self, arp: &mut Tail, reach: &mut [Tail], since: f64) {
        for v in arp.read() {
            if v["ev"] == "reply"
                && v["kind"] == "reply"
                && v["t"].as_f64().is_some_and(|t| t >= since)
                && let Some(ip) = v["target"].as_str()
            {
                *self.l2.entry(ip.to_string()).or_default() += 1;
            }
        }
        for (k, tail) in reach.iter_mut().enumerate() {
            let n = tail
                .read()
                .iter()
                .filter(|v| v["ok"] == true && v["t"].as_f64().is_some_and(|t| t >= since))
                .count();
            *self.tcp.entry(k).or_default() += n;
        }
    }

    fn l2_at_least(&self, ips: &[String], n: usize) -> bool {
        ips.iter()
            .all(|ip| self.l2.get(ip).is_some_and(|c| *c >= n))
    }

    fn tcp_at_least(&self, probes: usize, n: usize) -> bool {
        (0..probes).all(|k| self.tcp.get(&k).is_some_and(|c| *c >= n))
    }
}

/// One event of `svcwatch.py`.
#[derive(Debug, Clone)]
struct SvcEvent {
    t: f64,
    kind: String,
    key: String,
    ips: Vec<String>,
}

fn watch_events(text: &str) -> Vec<SvcEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["ev"] == "svc")
        .map(|v| SvcEvent {
            t: v["t"].as_f64().unwrap_or(0.0),
            kind: v["type"].as_str().unwrap_or("").to_string(),
            key: v["key"].as_str().unwrap_or("").to_string(),
            ips: v["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
        })
        .collect()
}

fn ips_before(events: &[SvcEvent], t: f64) -> BTreeMap<String, Vec<String>> {
    let mut ips = BTreeMap::new();
    for e in events.iter().filter(|e| e.t < t) {
        ips.insert(e.key.clone(), e.ips.clone());
    }
    ips
}
