//! The chaos soak: five lbd nodes (10.10.100.3–.7) in one raft-lite cluster, the test API
//! server on a control-plane host (10.10.100.2), an FRR router (10.10.100.1, AS 64500, iBGP to
//! every node, ECMP) and a client (10.10.100.9) on one LAN. Layer-2 and BGP Services (one
//! pair sharing an IP) are created with the real kubectl; the runner writes Nodes and
//! EndpointSlices (no controllers run here) and stands in for kube-proxy by putting every
//! Service IP on each node's `lo`.
//!
//! The client asks for every layer-2 IP by ARP and pings every BGP IP through the router,
//! both every 20 ms; tcpdump records ARP on the client and BGP on the router. Then one fault at
//! a time, chosen by a seeded RNG — link flap, SIGKILL + restart of lbd, an nft partition of
//! one node from its peers (often the raft-lite leader), an API server outage — is injected,
//! healed, and the runner waits until every IP answers again and records how long that took.
//!
//! [`run`] returns a [`SoakReport`]: per fault the heal → all-served time, plus the run-wide
//! checks (one MAC per IP at a time from the probe and the capture, sharing rules, no IP
//! churn, flat lbd memory). [`SoakReport::failures`] lists every failed check and
//! [`SoakReport::markdown`] renders it. Times are seconds since the Unix epoch (probe and pcap
//! clock); the report shows them relative to the start of the fault loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::kubelab::KubeLab;
use crate::lab::capture::{Capture, Frame, FrameKind};
use crate::lab::peers::{Frr, FrrConfig};
use crate::lab::probe::{self, ProbeRun, ReachMode, Record, RunningProbe, SplitBrain};
use crate::lab::{Host, Lab, Proc, Signal};
use crate::lbd::lbd_binary;
use crate::rng::Rng;

/// What the soak runs. [`SoakConfig::new`] gives the issue's numbers.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Lab name prefix (namespaces `lbl-<pid>-<n>-<name>-*`).
    pub name: String,
    /// How long faults are injected (the fault loop; setup and analysis come on top).
    pub duration: Duration,
    pub seed: u64,
    /// Probe interval for ARP and ping (the issue asks for ≤ 20 ms).
    pub probe_interval: Duration,
    /// A gap between answers longer than this is an outage (shorter ones are probe jitter).
    pub outage_threshold: Duration,
    /// Give up waiting for all IPs to answer after a heal after this long (a failed check).
    pub recovery_timeout: Duration,
    /// After all IPs answer again, keep watching this long before the next fault (an outage
    /// that starts here, e.g. a move back, still counts against the heal).
    pub settle: Duration,
    /// "Memory flat": RSS of a process alive at least `rss_min_span` after `rss_warmup`
    /// grows by at most this fraction from its first post-warm-up sample to its last.
    pub rss_tolerance: f64,
    pub rss_warmup: Duration,
    pub rss_min_span: Duration,
}

impl SoakConfig {
    pub fn new(name: &str, duration: Duration, seed: u64) -> SoakConfig {
        SoakConfig {
            name: name.to_string(),
            duration,
            seed,
            probe_interval: Duration::from_millis(20),
            outage_threshold: Duration::from_millis(200),
            recovery_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(2),
            rss_tolerance: 0.20,
            rss_warmup: Duration::from_secs(20),
            rss_min_span: Duration::from_secs(45),
        }
    }
}

/// The faults the loop picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `ip link set eth0 down` on a node for 1–3 s.
    LinkFlap,
    /// SIGKILL lbd on a node, start it again after 1–3 s.
    KillRestart,
    /// nft: drop everything between one node and the other four for 2–5 s.
    Partition,
    /// Stop the API server for 2–5 s (its store survives).
    ApiStop,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LinkFlap => "link flap",
            FaultKind::KillRestart => "SIGKILL + restart",
            FaultKind::Partition => "nft partition",
            FaultKind::ApiStop => "API server stop",
        }
    }
}

/// One injected fault and what the client saw.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub n: usize,
    pub kind: FaultKind,
    /// Node name, or "apiserver".
    pub target: String,
    /// The target was the raft-lite leader when the fault began (per the lbd logs).
    pub target_was_leader: bool,
    pub start: f64,
    pub heal: f64,
    /// The end of its observation (after the recovery wait and the settle time).
    pub end: f64,
    /// Longest outage of any IP between the fault and the heal, and that IP.
    pub outage_during: Option<(Duration, String)>,
    /// Heal → every IP served again (`None`: not within `recovery_timeout`), and the IP
    /// that took longest.
    pub recovered: Option<(Duration, String)>,
    /// A fault of the raft-lite leader: the longest gap between two ARP answers, from the last
    /// one before the fault to the heal, of the layer-2 IPs another node answered for when
    /// the fault began (quorum leases: those should see nothing but probe jitter), and that
    /// IP. `None` for other faults, or when the leader owned every layer-2 IP.
    pub leader_others_gap: Option<(Duration, String)>,
}

/// One lbd process's RSS samples (seconds since its start, kB).
#[derive(Debug, Clone)]
pub struct RssLife {
    pub node: String,
    pub pid: u32,
    pub started: f64,
    pub samples: Vec<(f64, u64)>,
}

impl RssLife {
    /// (warm-up sample, last sample) if the process lived long enough to judge.
    pub fn judged(&self, warmup: Duration, min_span: Duration) -> Option<((f64, u64), (f64, u64))> {
        let warm = *self
            .samples
            .iter()
            .find(|(t, _)| *t >= warmup.as_secs_f64())?;
        let last = *self.samples.last()?;
        (last.0 - warm.0 >= min_span.as_secs_f64()).then_some((warm, last))
    }
}

/// A Service as kubectl shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SvcView {
    pub key: String,
    pub ips: Vec<String>,
    pub sharing_key: Option<String>,
    /// (protocol, port)
    pub ports: Vec<(String, u64)>,
    pub local: bool,
    pub selector: String,
}

/// A gap longer than the outage threshold in one IP's answers.
#[derive(Debug, Clone)]
pub struct Outage {
    pub ip: String,
    pub from: f64,
    pub to: f64,
    /// The fault whose window (start to heal + recovery + settle) it falls in.
    pub fault: Option<usize>,
}

/// Everything the soak found.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub seed: u64,
    pub duration: Duration,
    pub date: String,
    pub lbd_binary: String,
    pub probe_interval: Duration,
    pub outage_threshold: Duration,
    pub rss_tolerance: f64,
    pub rss_warmup: Duration,
    pub rss_min_span: Duration,
    /// Start of the fault loop (epoch seconds).
    pub t0: f64,
    /// Service → IPs at the start.
    pub services: BTreeMap<String, Vec<String>>,
    pub l2_ips: Vec<String>,
    pub bgp_ips: Vec<String>,
    pub faults: Vec<FaultRecord>,
    /// Per layer-2 IP: split brain seen by the probe.
    pub split_brain_probe: Vec<(String, SplitBrain)>,
    /// Per layer-2 IP: split brain in the client's capture.
    pub split_brain_pcap: Vec<(String, SplitBrain)>,
    /// Per layer-2 IP: a clean move back within 2 s (the probe's flap heuristic; not a
    /// failure: with quorum leases an IP can move and come back quickly).
    pub move_backs: Vec<(String, SplitBrain)>,
    pub arp_replies_captured: usize,
    pub sharing_violations: Vec<String>,
    pub churn: Vec<String>,
    pub ip_checks: usize,
    pub rss: Vec<RssLife>,
    /// BGP message counts in the router's capture (OPEN, UPDATE, NOTIFICATION, KEEPALIVE).
    pub bgp_messages: BTreeMap<String, usize>,
    /// lbd processes that exited by themselves (a crash), with their log tail.
    pub crashes: Vec<String>,
    /// Probe answers per IP over the whole run.
    pub answers: BTreeMap<String, usize>,
    pub probe_requests: u64,
    /// Every outage of every IP during the fault loop.
    pub outages: Vec<Outage>,
    /// For each split brain: the answers around it (probe and capture), for the report.
    pub split_brain_context: Vec<String>,
    /// Where the lab's logs (lbd, FRR, probes, pcaps) were copied when a check failed.
    pub logs_kept: Option<PathBuf>,
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

const NODE_IPS: [&str; 5] = [
    "10.10.100.3",
    "10.10.100.4",
    "10.10.100.5",
    "10.10.100.6",
    "10.10.100.7",
];
const ROUTER: &str = "10.10.100.1";
const ASN: u32 = 64500;

/// A Service of the soak: (name, pool, sharing key, ports as (port, protocol)).
type SvcSpec = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [(u16, &'static str)],
);

const SERVICES: &[SvcSpec] = &[
    ("web-a", "l2", None, &[(80, "TCP")]),
    ("web-b", "l2", None, &[(80, "TCP")]),
    ("web-c", "l2", None, &[(8080, "TCP")]),
    ("dns-tcp", "l2", Some("dns"), &[(53, "TCP")]),
    ("dns-udp", "l2", Some("dns"), &[(53, "UDP")]),
    ("bgp-a", "bgp", None, &[(80, "TCP")]),
    ("bgp-b", "bgp", None, &[(443, "TCP")]),
    ("bgp-c", "bgp", None, &[(80, "TCP")]),
];
const NAMESPACE: &str = "default";

/// The lb.toml of node `name` in a cluster of `node_ips` (node1, node2, … in order), with
/// the test API server, a layer-2 and a BGP pool and the router as iBGP peer; the chaos soak
/// and the rolling upgrade share it (only keys every previous release knows).
pub(crate) fn lbd_config(
    name: &str,
    node_ips: &[&str],
    state: &Path,
    key: &Path,
    kubeconfig: &Path,
) -> String {
    let members: Vec<String> = node_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("node{} = \"{ip}:7946\"", i + 1))
        .collect();
    format!(
        r#"
[node]
name = "{name}"
state_dir = "{state}"

[kubernetes]
kubeconfig = "{kube}"

[cluster]
members = {{ {members} }}
secret_file = "{key}"

[layer2]
gratuitous_count = 3
gratuitous_interval = "100ms"

[[pool]]
name = "l2"
protocol = "layer2"
addresses = ["10.10.100.200-10.10.100.220"]

[[pool]]
name = "bgp"
protocol = "bgp"
addresses = ["172.19.100.0/24"]
avoid_buggy_ips = true

[[bgp_peer]]
my_asn = {ASN}
peer_asn = {ASN}
address = "{ROUTER}"
hold_time = "9s"
"#,
        state = state.display(),
        kube = kubeconfig.display(),
        members = members.join(", "),
        key = key.display(),
    )
}

fn service_yaml(name: &str, pool: &str, share: Option<&str>, ports: &[(u16, &str)]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  \
         annotations:\n    metallb.universe.tf/address-pool: {pool}\n"
    );
    if let Some(k) = share {
        let _ = writeln!(y, "    metallb.universe.tf/allow-shared-ip: {k}");
    }
    let app = share.unwrap_or(name);
    let _ = write!(
        y,
        "spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Cluster\n  selector:\n    app: {app}\n  ports:\n"
    );
    for (port, proto) in ports {
        let _ = writeln!(
            y,
            "  - name: p{port}\n    port: {port}\n    protocol: {proto}"
        );
    }
    y
}

/// One lbd node of the soak.
struct Node {
    name: String,
    host: Host,
    config: PathBuf,
    proc: Option<Proc>,
    life: usize,
}

/// Reads a probe's JSON lines as they are written.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// The complete lines written since the last call, parsed (unparsable ones skipped).
    pub fn read(&mut self) -> Vec<Value> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                out.push(v);
            }
        }
        out
    }
}

/// Answer times per IP, fed from the probes' output while they run.
struct Watch {
    l2: Tail,
    bgp: Vec<(String, Tail)>,
    answers: BTreeMap<String, Vec<f64>>,
    /// Layer-2 IP → (answer time, MAC), in order.
    l2_macs: BTreeMap<String, Vec<(f64, String)>>,
}

impl Watch {
    fn poll(&mut self) {
        for v in self.l2.read() {
            if v["ev"] == "reply"
                && v["kind"] == "reply"
                && let (Some(ip), Some(t)) = (v["target"].as_str(), v["t"].as_f64())
            {
                self.answers.entry(ip.to_string()).or_default().push(t);
                if let Some(mac) = v["mac"].as_str() {
                    self.l2_macs
                        .entry(ip.to_string())
                        .or_default()
                        .push((t, mac.to_string()));
                }
            }
        }
        for (ip, tail) in &mut self.bgp {
            for v in tail.read() {
                if v["ev"] == "result"
                    && v["ok"] == true
                    && let Some(t) = v["t"].as_f64()
                {
                    let a = self.answers.entry(ip.clone()).or_default();
                    a.push(t);
                    // ICMP replies can come back out of order.
                    let n = a.len();
                    if n >= 2 && a[n - 2] > a[n - 1] {
                        a.sort_by(f64::total_cmp);
                    }
                }
            }
        }
    }

    /// Every IP answered after `since` and recently (within `fresh` of now).
    fn all_served(&self, ips: &[String], since: f64, fresh: Duration) -> bool {
        let now = epoch();
        ips.iter().all(|ip| {
            self.answers
                .get(ip)
                .and_then(|a| a.last())
                .is_some_and(|&t| t >= since && now - t <= fresh.as_secs_f64())
        })
    }

    fn longest_outage(&self, ip: &str, from: f64, to: f64, threshold: f64) -> f64 {
        longest_outage(self.answers.get(ip).map_or(&[], |a| a), from, to, threshold)
    }

    /// The MAC that last answered for layer-2 `ip` before `t`.
    fn owner_before(&self, ip: &str, t: f64) -> Option<&str> {
        self.l2_macs
            .get(ip)?
            .iter()
            .rev()
            .find(|(at, _)| *at < t)
            .map(|(_, m)| m.as_str())
    }

    /// Longest gap between consecutive answers for `ip` from the last answer before `from`
    /// to `to` (silence at `to` counts up to `to`).
    fn longest_gap(&self, ip: &str, from: f64, to: f64) -> f64 {
        let a = self.answers.get(ip).map_or(&[][..], |a| &a[..]);
        let mut last = a.iter().rev().find(|t| **t < from).copied().unwrap_or(from);
        let mut worst = 0.0f64;
        for t in a.iter().filter(|t| **t >= from && **t <= to) {
            worst = worst.max(t - last);
            last = *t;
        }
        worst.max(to - last)
    }

    fn served_again(&self, ip: &str, heal: f64, until: f64, threshold: f64) -> Option<f64> {
        served_again(self.answers.get(ip)?, heal, until, threshold)
    }
}

/// Longest gap above `threshold` in sorted answer times `a` overlapping `[from, to]` (still
/// silent at `to` counts up to `to`; no answer at all is the whole window).
pub fn longest_outage(a: &[f64], from: f64, to: f64, threshold: f64) -> f64 {
    let before = a.iter().rev().find(|&&t| t <= from).copied();
    let mut times: Vec<f64> = before.into_iter().collect();
    times.extend(a.iter().copied().filter(|&t| t > from && t <= to));
    if times.is_empty() {
        return to - from;
    }
    let mut longest: f64 = 0.0;
    for w in times.windows(2) {
        let g = w[1] - w[0];
        if g > threshold {
            longest = longest.max(g);
        }
    }
    if let Some(&last) = times.last()
        && to - last > threshold
    {
        longest = longest.max(to - last);
    }
    longest
}

/// Heal → served again, from sorted answer times `a`: the end of the last outage (gap >
/// `threshold`) that ends after `heal` (and by `until`), minus `heal`; 0 if none. `None`: no
/// answer after the heal at all.
pub fn served_again(a: &[f64], heal: f64, until: f64, threshold: f64) -> Option<f64> {
    a.iter().find(|&&t| t >= heal)?;
    let mut result = 0.0;
    let mut prev: Option<f64> = None;
    for &t in a.iter().filter(|&&t| t <= until) {
        if let Some(p) = prev
            && t > heal
            && t - p > threshold
        {
            result = t - heal;
        }
        prev = Some(t);
    }
    Some(result)
}

/// The lab, the cluster and the probes, alive for one run.
struct Soak {
    cfg: SoakConfig,
    rng: Rng,
    nodes: Vec<Node>,
    kube: KubeLab,
    client: Host,
    router: Host,
    /// The router's FRR, running for the whole soak (stopped on drop).
    _frr: Frr,
    report: SoakReport,
    ips: Vec<String>,
    rss: BTreeMap<u32, RssLife>,
    // Dropped last: keeps the namespaces alive.
    lab: Lab,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Soak {
    fn start(cfg: SoakConfig) -> Soak {
        let lab = Lab::new(&cfg.name);
        let router = lab.router("router", &[&format!("{ROUTER}/24")]);
        let cp = lab.host("cp", &["10.10.100.2/24"]);
        let client = lab.host("client", &["10.10.100.9/24"]);
        // The router forwards client → node on the same LAN: without this it would send the
        // client ICMP redirects and the client would bypass the router (and BGP) altogether.
        router
            .sysctl(&[
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.eth0.send_redirects=0",
            ])
            .expect("router sysctls");
        client
            .sysctl(&[
                "net.ipv4.conf.all.accept_redirects=0",
                "net.ipv4.conf.eth0.accept_redirects=0",
            ])
            .expect("client sysctls");
        client
            .run(&["ip", "route", "add", "172.19.100.0/24", "via", ROUTER])
            .expect("client route to the BGP pool");

        let kube = KubeLab::start(&cp);
        let mut frr_cfg = FrrConfig::new(ASN, ROUTER);
        for ip in NODE_IPS {
            frr_cfg = frr_cfg.neighbor(ip, ASN);
        }
        frr_cfg.maximum_paths_ibgp = Some(8);
        let frr = Frr::start(&router, &frr_cfg).expect("FRR starts");

        let mut nodes = Vec::new();
        for (i, ip) in NODE_IPS.iter().enumerate() {
            let name = format!("node{}", i + 1);
            let host = lab.node(&name, &[&format!("{ip}/24")]);
            kube.add_node(&name, ip);
            let key = host
                .write_file("cluster.key", "soak-cluster-shared-secret-0123456789\n")
                .expect("cluster key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
            let state = host.owned_dir("state", "root:root").expect("state dir");
            let config = host
                .write_file(
                    "lb.toml",
                    &lbd_config(&name, &NODE_IPS, &state, &key, kube.kubeconfig()),
                )
                .expect("lb.toml");
            nodes.push(Node {
                name,
                host,
                config,
                proc: None,
                life: 0,
            });
        }
        let report = SoakReport {
            seed: cfg.seed,
            duration: cfg.duration,
            lbd_binary: lbd_binary().display().to_string(),
            probe_interval: cfg.probe_interval,
            outage_threshold: cfg.outage_threshold,
            rss_tolerance: cfg.rss_tolerance,
            rss_warmup: cfg.rss_warmup,
            rss_min_span: cfg.rss_min_span,
            date: std::process::Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
            ..SoakReport::default()
        };
        let mut s = Soak {
            rng: Rng::new(cfg.seed),
            cfg,
            nodes,
            kube,
            client,
            router,
            _frr: frr,
            report,
            ips: Vec::new(),
            rss: BTreeMap::new(),
            lab,
        };
        for i in 0..s.nodes.len() {
            s.spawn_lbd(i);
        }
        s
    }

    fn spawn_lbd(&mut self, i: usize) {
        let bin = lbd_binary();
        let n = &mut self.nodes[i];
        let label = format!("lbd{}", n.life);
        n.life += 1;
        // `env` execs lbd: the PID is lbd's. Never the machine's system bus.
        let p = n
            .host
            .spawn_labeled(
                &label,
                &[
                    "env",
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                    "NO_COLOR=1",
                    bin.to_str().expect("utf-8 path"),
                    "--config",
                    n.config.to_str().expect("utf-8 path"),
                ],
            )
            .expect("lbd starts");
        self.rss.insert(
            p.pid(),
            RssLife {
                node: n.name.clone(),
                pid: p.pid(),
                started: epoch(),
                samples: Vec::new(),
            },
        );
        n.proc = Some(p);
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.proc.as_ref().map(|p| p.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("---- {} ----\n{}\n", n.name, tail.join("\n"))
            })
            .collect()
    }

    fn sample_rss(&mut self) {
        for n in &self.nodes {
            if let Some(p) = &n.proc
                && let Some(kb) = rss_kb(p.pid())
                && let Some(life) = self.rss.get_mut(&p.pid())
            {
                life.samples.push((epoch() - life.started, kb));
            }
        }
    }

    /// lbd processes that died without being killed: record, and start them again.
    fn check_alive(&mut self) {
        for i in 0..self.nodes.len() {
            let dead = self.nodes[i]
                .proc
                .as_ref()
                .and_then(|p| p.exit_status().map(|s| (s, p.log())));
            if let Some((status, log)) = dead {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                self.report.crashes.push(format!(
                    "{} exited by itself ({status}):\n{}",
                    self.nodes[i].name,
                    tail.join("\n")
                ));
                self.spawn_lbd(i);
            }
        }
    }

    /// The raft-lite leader per the lbd logs: the node whose latest cluster line is "became
    /// leader for term T" with the highest such T.
    fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(p) = &n.proc else { continue };
            let log = p.log();
            let last = log.lines().rev().find(|l| {
                l.contains("became leader for term ")
                    || l.contains("following ")
                    || l.contains("no leader known in term")
            });
            let Some(line) = last else { continue };
            let Some(rest) = line.split("became leader for term ").nth(1) else {
                continue;
            };
            let term: u64 = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn services(&self) -> Option<Vec<SvcView>> {
        let r = self.kube.kubectl(&["get", "services", "-A", "-o", "json"]);
        if r.code != 0 {
            return None;
        }
        let v: Value = serde_json::from_str(&r.stdout).ok()?;
        let items = v["items"].as_array()?;
        Some(
            items
                .iter()
                .filter(|s| s["spec"]["type"] == "LoadBalancer")
                .map(|s| {
                    let ann = &s["metadata"]["annotations"];
                    SvcView {
                        key: format!(
                            "{}/{}",
                            s["metadata"]["namespace"].as_str().unwrap_or(""),
                            s["metadata"]["name"].as_str().unwrap_or("")
                        ),
                        ips: s["status"]["loadBalancer"]["ingress"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|i| i["ip"].as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        sharing_key: ann["metallb.universe.tf/allow-shared-ip"]
                            .as_str()
                            .or(ann["metallb.io/allow-shared-ip"].as_str())
                            .map(str::to_string),
                        ports: s["spec"]["ports"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|p| {
                                        (
                                            p["protocol"].as_str().unwrap_or("TCP").to_string(),
                                            p["port"].as_u64().unwrap_or(0),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        local: s["spec"]["externalTrafficPolicy"] == "Local",
                        selector: s["spec"]["selector"].to_string(),
                    }
                })
                .collect(),
        )
    }

    /// Sharing rules and churn against the IPs at the start; `when` names the sample.
    fn check_ips(&mut self, when: &str) {
        let Some(svcs) = self.services() else {
            self.report
                .churn
                .push(format!("{when}: kubectl get services failed"));
            return;
        };
        self.report.ip_checks += 1;
        self.report.sharing_violations.extend(
            sharing_violations(&svcs)
                .into_iter()
                .map(|v| format!("{when}: {v}")),
        );
        for s in &svcs {
            match self.report.services.get(&s.key) {
                Some(first) if *first != s.ips => self.report.churn.push(format!(
                    "{when}: {} has {:?}, had {:?}",
                    s.key, s.ips, first
                )),
                None => self
                    .report
                    .churn
                    .push(format!("{when}: unknown Service {}", s.key)),
                _ => {}
            }
        }
    }

    fn setup_services(&mut self) {
        let yaml: Vec<String> = SERVICES
            .iter()
            .map(|(name, pool, share, ports)| service_yaml(name, pool, *share, ports))
            .collect();
        self.kube.apply(&yaml.join("---\n"));
        let nodes: Vec<(String, String)> = NODE_IPS
            .iter()
            .enumerate()
            .map(|(i, _)| (format!("node{}", i + 1), format!("10.244.{}.10", i + 1)))
            .collect();
        let nodes: Vec<(&str, &str)> = nodes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        for (name, _, _, ports) in SERVICES {
            let ports: Vec<(String, u16, &str)> = ports
                .iter()
                .map(|(p, proto)| (format!("p{p}"), *p, *proto))
                .collect();
            let ports: Vec<(&str, u16, &str)> = ports
                .iter()
                .map(|(n, p, pr)| (n.as_str(), *p, *pr))
                .collect();
            self.kube.set_endpoints(NAMESPACE, name, &nodes, &ports);
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let svcs = loop {
            if let Some(s) = self.services()
                && s.len() == SERVICES.len()
                && s.iter().all(|s| !s.ips.is_empty())
            {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "not every Service got an IP: {:?}\n{}",
                self.services(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        for s in &svcs {
            self.report.services.insert(s.key.clone(), s.ips.clone());
            let pool = SERVICES
                .iter()
                .find(|(n, ..)| s.key.ends_with(&format!("/{n}")))
                .map(|(_, p, ..)| *p)
                .unwrap_or("");
            for ip in &s.ips {
                let list = if pool == "l2" {
                    &mut self.report.l2_ips
                } else {
                    &mut self.report.bgp_ips
                };
                if !list.contains(ip) {
                    list.push(ip.clone());
                }
            }
        }
        self.report.l2_ips.sort();
        self.report.bgp_ips.sort();
        self.ips = self
            .report
            .l2_ips
            .iter()
            .chain(&self.report.bgp_ips)
            .cloned()
            .collect();
        // kube-proxy's stand-in: every Service IP on every node's lo (arp_ignore=1 keeps the
        // kernel from answering ARP for them; only lbd does).
        for n in &self.nodes {
            for ip in &self.ips {
                n.host.add_lo_ip(&format!("{ip}/32")).expect("IP on lo");
            }
        }
    }

    fn wait_served(&self, watch: &mut Watch, since: f64, timeout: Duration) -> bool {
        let fresh = self.cfg.outage_threshold + self.cfg.probe_interval * 2;
        let deadline = Instant::now() + timeout;
        loop {
            watch.poll();
            if watch.all_served(&self.ips, since, fresh) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Watch for `d` (keeps the probe data flowing into `watch`).
    fn observe(&self, watch: &mut Watch, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            watch.poll();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Inject one fault, heal it; returns (kind, target, was leader, start, heal).
    fn inject(&mut self, watch: &mut Watch) -> (FaultKind, String, bool, f64, f64) {
        let kind = match self.rng.below(4) {
            0 => FaultKind::LinkFlap,
            1 => FaultKind::KillRestart,
            2 => FaultKind::Partition,
            _ => FaultKind::ApiStop,
        };
        let leader = self.leader();
        let random = self.rng.below(self.nodes.len() as u64) as usize;
        let aim_leader = self.rng.below(2) == 0;
        match kind {
            FaultKind::LinkFlap => {
                let hold = self.rng.millis(1000, 3000);
                let n = &self.nodes[random];
                let start = epoch();
                n.host.link_down().expect("link down");
                self.observe(watch, hold);
                n.host.link_up().expect("link up");
                (kind, n.name.clone(), leader == Some(random), start, epoch())
            }
            FaultKind::KillRestart => {
                let hold = self.rng.millis(1000, 3000);
                self.sample_rss();
                let start = epoch();
                if let Some(p) = self.nodes[random].proc.take() {
                    p.kill(Signal::Kill);
                    p.wait_timeout(Duration::from_secs(5));
                }
                self.observe(watch, hold);
                self.spawn_lbd(random);
                (
                    kind,
                    self.nodes[random].name.clone(),
                    leader == Some(random),
                    start,
                    epoch(),
                )
            }
            FaultKind::Partition => {
                let hold = self.rng.millis(2000, 5000);
                let i = match leader {
                    Some(l) if aim_leader => l,
                    _ => random,
                };
                let start = epoch();
                let target = self.nodes[i].host.clone();
                for (j, other) in self.nodes.iter().enumerate() {
                    if j != i {
                        target.partition_from(&other.host).expect("nft partition");
                    }
                }
                self.observe(watch, hold);
                target.heal().expect("nft heal");
                (
                    kind,
                    self.nodes[i].name.clone(),
                    leader == Some(i),
                    start,
                    epoch(),
                )
            }
            FaultKind::ApiStop => {
                let hold = self.rng.millis(2000, 5000);
                let start = epoch();
                self.kube.stop();
                self.observe(watch, hold);
                self.kube.restart();
                (kind, "apiserver".into(), false, start, epoch())
            }
        }
    }
}

/// MetalLB's sharing rules over what kubectl shows: Services on one IP all carry the same
/// non-empty key, no (protocol, port) twice, and `Local` ones only with identical selectors
/// and never with `Cluster` ones.
pub fn sharing_violations(svcs: &[SvcView]) -> Vec<String> {
    let mut by_ip: BTreeMap<&str, Vec<&SvcView>> = BTreeMap::new();
    for s in svcs {
        for ip in &s.ips {
            by_ip.entry(ip).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for (ip, group) in by_ip.into_iter().filter(|(_, g)| g.len() > 1) {
        let names: Vec<&str> = group.iter().map(|s| s.key.as_str()).collect();
        let keys: BTreeSet<Option<&str>> = group.iter().map(|s| s.sharing_key.as_deref()).collect();
        if keys.len() != 1 || keys.contains(&None) || keys.contains(&Some("")) {
            out.push(format!(
                "{ip} given to {names:?} without one common sharing key"
            ));
        }
        let mut seen = BTreeSet::new();
        for s in &group {
            for p in &s.ports {
                if !seen.insert(p.clone()) {
                    out.push(format!("{ip}: {}/{} used twice among {names:?}", p.0, p.1));
                }
            }
        }
        let locals: Vec<&&SvcView> = group.iter().filter(|s| s.local).collect();
        if !locals.is_empty()
            && (locals.len() != group.len()
                || locals.iter().any(|s| s.selector != locals[0].selector))
        {
            out.push(format!(
                "{ip}: Local Services share with different selectors or Cluster ones: {names:?}"
            ));
        }
    }
    out
}

/// The capture's ARP answers for `ip` as probe records (request number = the client's
/// requests for `ip` so far), so [`ProbeRun::split_brain`] can judge them.
pub fn pcap_run(frames: &[Frame], ip: IpAddr, client_mac: &str) -> ProbeRun {
    let mut run = ProbeRun {
        start: frames.first().map(|f| f.time).unwrap_or(0.0),
        end: frames.last().map(|f| f.time).unwrap_or(0.0),
        ..ProbeRun::default()
    };
    let mut seq = 0;
    for f in frames {
        let (kind, mac) = match &f.kind {
            FrameKind::ArpRequest {
                sender_ip,
                target_ip,
                ..
            } if f.src_mac == client_mac && *target_ip == Some(ip) && *sender_ip != Some(ip) => {
                seq += 1;
                continue;
            }
            FrameKind::ArpRequest {
                sender_ip,
                target_ip,
                sender_mac,
            } if *sender_ip == Some(ip) && *target_ip == Some(ip) => ("garp", sender_mac),
            FrameKind::ArpReply {
                sender_ip,
                sender_mac,
                ..
            } if *sender_ip == Some(ip) => ("reply", sender_mac),
            _ => continue,
        };
        run.records.push(Record {
            t: f.time,
            seq,
            kind: kind.to_string(),
            ok: true,
            mac: Some(if mac.is_empty() {
                f.src_mac.clone()
            } else {
                mac.clone()
            }),
            data: None,
            rtt: None,
            target: Some(ip.to_string()),
        });
    }
    run.sent = seq;
    run
}

/// The answers for `ip` within a second of `t`, one line each (t relative to `t0`).
fn context(source: &str, ip: &str, run: &ProbeRun, t: f64, t0: f64) -> String {
    let mut out = format!("{source}, {ip}, split brain at t={:.3}:", t - t0);
    for r in run.records.iter().filter(|r| (r.t - t).abs() <= 1.0) {
        let _ = write!(
            out,
            "\n    t={:.3} seq={} {} {}",
            r.t - t0,
            r.seq,
            r.kind,
            r.mac.as_deref().unwrap_or("-")
        );
    }
    out
}

/// BGP message types in a pcap (tshark's `bgp.type`).
fn bgp_messages(file: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(o) = std::process::Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", "bgp", "-T", "fields", "-e", "bgp.type"])
        .output()
    else {
        return out;
    };
    for t in String::from_utf8_lossy(&o.stdout)
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        let name = match t {
            "1" => "OPEN",
            "2" => "UPDATE",
            "3" => "NOTIFICATION",
            "4" => "KEEPALIVE",
            "5" => "ROUTE-REFRESH",
            other => other,
        };
        *out.entry(name.to_string()).or_default() += 1;
    }
    out
}

/// Runs the whole soak; panics only if the lab cannot be set up.
pub fn run(cfg: SoakConfig) -> SoakReport {
    let mut s = Soak::start(cfg);
    s.setup_services();
    let interval = s.cfg.probe_interval;
    // Probes run "forever" and are stopped by SIGTERM at the end.
    let probe_for = s.cfg.duration + Duration::from_secs(3600);
    let arp_cap: Capture = s.client.capture("arp").expect("client capture");
    let bgp_cap: Capture = s.router.capture("tcp port 179").expect("router capture");
    let l2_targets: Vec<IpAddr> = s
        .report
        .l2_ips
        .iter()
        .map(|i| i.parse().expect("IP"))
        .collect();
    let l2 = probe::l2probe_many(&s.client, &l2_targets, probe_for, interval).expect("l2probe");
    let mut bgp_probes: Vec<(String, RunningProbe)> = Vec::new();
    for ip in &s.report.bgp_ips {
        let p = probe::reach(
            &s.client,
            ReachMode::Icmp,
            ip.parse().expect("IP"),
            probe_for,
            interval,
        )
        .expect("reach probe");
        bgp_probes.push((ip.clone(), p));
    }
    let mut watch = Watch {
        l2: Tail::new(l2.stdout_path()),
        bgp: bgp_probes
            .iter()
            .map(|(ip, p)| (ip.clone(), Tail::new(p.stdout_path())))
            .collect(),
        answers: BTreeMap::new(),
        l2_macs: BTreeMap::new(),
    };
    let t_setup = epoch();
    if !s.wait_served(&mut watch, t_setup, Duration::from_secs(90)) {
        let missing: Vec<&String> = s
            .ips
            .iter()
            .filter(|ip| watch.answers.get(*ip).is_none_or(|a| a.is_empty()))
            .collect();
        panic!(
            "not every IP answered before the faults; never answered: {missing:?}\n{}",
            s.logs()
        );
    }
    s.observe(&mut watch, s.cfg.settle);
    s.check_ips("start");
    s.sample_rss();
    s.report.t0 = epoch();
    let loop_start = Instant::now();
    let mut n = 0;
    while loop_start.elapsed() < s.cfg.duration {
        n += 1;
        let (kind, target, was_leader, start, heal) = s.inject(&mut watch);
        let ok = s.wait_served(&mut watch, heal, s.cfg.recovery_timeout);
        s.observe(&mut watch, s.cfg.settle);
        watch.poll();
        let until = epoch();
        let th = s.cfg.outage_threshold.as_secs_f64();
        let during = s
            .ips
            .iter()
            .map(|ip| (watch.longest_outage(ip, start, heal, th), ip.clone()))
            .filter(|(g, _)| *g > 0.0)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(g, ip)| (Duration::from_secs_f64(g), ip));
        let recovered = if ok {
            let per_ip: Option<Vec<(f64, String)>> = s
                .ips
                .iter()
                .map(|ip| Some((watch.served_again(ip, heal, until, th)?, ip.clone())))
                .collect();
            per_ip
                .and_then(|v| v.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)))
                .map(|(r, ip)| (Duration::from_secs_f64(r), ip))
        } else {
            None
        };
        let target_mac = s
            .nodes
            .iter()
            .find(|n| n.name == target)
            .map(|n| n.host.mac().to_string());
        let leader_others_gap = if was_leader && let Some(tm) = target_mac {
            s.report
                .l2_ips
                .iter()
                .filter(|ip| watch.owner_before(ip, start).is_some_and(|m| m != tm))
                .map(|ip| (watch.longest_gap(ip, start, heal), ip.clone()))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(g, ip)| (Duration::from_secs_f64(g), ip))
        } else {
            None
        };
        s.report.faults.push(FaultRecord {
            n,
            kind,
            target,
            target_was_leader: was_leader,
            start,
            heal,
            end: until,
            outage_during: during,
            recovered,
            leader_others_gap,
        });
        s.check_alive();
        s.sample_rss();
        s.check_ips(&format!("after fault {n}"));
    }
    s.observe(&mut watch, s.cfg.settle);
    s.check_alive();
    s.sample_rss();
    s.check_ips("end");

    let l2_run = l2.stop().expect("l2probe output");
    s.report.probe_requests = l2_run.sent;
    for ip in &s.report.l2_ips {
        let run = l2_run.for_target(ip);
        s.report.answers.insert(ip.clone(), run.answers().count());
        // Two MACs at once: one request answered by two, or interleaved answers. A quick
        // move back (another MAC, then the first again, cleanly) is legitimate with quorum
        // leases and only reported.
        if let Some(sb) = run.two_macs_at_once(interval * 5) {
            s.report
                .split_brain_context
                .push(context("probe", ip, &run, sb.t, s.report.t0));
            s.report.split_brain_probe.push((ip.clone(), sb));
        } else if let Some(sb) = run.split_brain(interval) {
            s.report.move_backs.push((ip.clone(), sb));
        }
    }
    for (ip, p) in bgp_probes {
        let run = p.stop().expect("reach output");
        s.report.answers.insert(ip, run.answers().count());
    }
    let bgp_file = bgp_cap.file().to_path_buf();
    let frames = arp_cap.stop().expect("client capture");
    let _ = bgp_cap.stop();
    s.report.bgp_messages = bgp_messages(&bgp_file);
    let client_mac = s.client.mac().to_string();
    for ip in &s.report.l2_ips {
        let run = pcap_run(&frames, ip.parse().expect("IP"), &client_mac);
        s.report.arp_replies_captured += run.answers().count();
        if let Some(sb) = run.two_macs_at_once(interval * 5) {
            s.report
                .split_brain_context
                .push(context("capture", ip, &run, sb.t, s.report.t0));
            s.report.split_brain_pcap.push((ip.clone(), sb));
        }
    }
    watch.poll();
    let th = s.cfg.outage_threshold.as_secs_f64();
    let t0 = s.report.t0;
    for ip in &s.ips {
        let Some(a) = watch.answers.get(ip) else {
            continue;
        };
        let from = a.iter().rev().find(|&&t| t <= t0).copied().unwrap_or(t0);
        let mut times = vec![from];
        times.extend(a.iter().copied().filter(|&t| t > t0));
        for w in times.windows(2).filter(|w| w[1] - w[0] > th) {
            let fault = s
                .report
                .faults
                .iter()
                .find(|f| w[1] >= f.start && w[0] <= f.end)
                .map(|f| f.n);
            s.report.outages.push(Outage {
                ip: ip.clone(),
                from: w[0],
                to: w[1],
                fault,
            });
        }
    }
    s.report.outages.sort_by(|a, b| a.from.total_cmp(&b.from));
    s.report.rss = s.rss.values().cloned().collect();
    if !s.report.failures(Duration::from_secs(1)).is_empty() {
        // The lab deletes its directory on drop: keep a copy to look into.
        let keep =
            std::env::temp_dir().join(format!("lb-soak-{}-{}", std::process::id(), s.cfg.seed));
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(s.lab.dir())
            .arg(&keep)
            .status()
            .is_ok_and(|st| st.success());
        if copied {
            eprintln!("soak: lab logs kept in {}", keep.display());
            s.report.logs_kept = Some(keep);
        }
    }
    let report = s.report.clone();
    drop(s);
    report
}

impl SoakReport {
    fn rel(&self, t: f64) -> f64 {
        t - self.t0
    }

    /// Processes judged for memory: (life, warm kB, last kB, growth fraction).
    pub fn memory(&self) -> Vec<(&RssLife, u64, u64, f64)> {
        self.rss
            .iter()
            .filter_map(|l| {
                let ((_, warm), (_, last)) = l.judged(self.rss_warmup, self.rss_min_span)?;
                let growth = (last as f64 - warm as f64) / warm.max(1) as f64;
                Some((l, warm, last, growth))
            })
            .collect()
    }

    /// Every failed check; `recovery_bound` is the heal → all-served limit asserted.
    pub fn failures(&self, recovery_bound: Duration) -> Vec<String> {
        let mut f = Vec::new();
        if self.faults.is_empty() {
            f.push("no fault was injected".to_string());
        }
        for r in &self.faults {
            match &r.recovered {
                None => f.push(format!(
                    "fault {} ({} of {}): not every IP served again",
                    r.n,
                    r.kind.name(),
                    r.target
                )),
                Some((d, ip)) if *d > recovery_bound => f.push(format!(
                    "fault {} ({} of {}): {ip} served again {:.3} s after the heal (> {:.3} s)",
                    r.n,
                    r.kind.name(),
                    r.target,
                    d.as_secs_f64(),
                    recovery_bound.as_secs_f64()
                )),
                _ => {}
            }
        }
        for (ip, sb) in &self.split_brain_probe {
            f.push(format!("probe: two MACs for {ip}: {sb:?}"));
        }
        for (ip, sb) in &self.split_brain_pcap {
            f.push(format!("capture: two MACs for {ip}: {sb:?}"));
        }
        if self.arp_replies_captured == 0 {
            f.push("the client capture holds no ARP reply".into());
        }
        f.extend(self.sharing_violations.iter().cloned());
        f.extend(self.churn.iter().map(|c| format!("IP churn: {c}")));
        f.extend(self.crashes.iter().map(|c| format!("crash: {c}")));
        let mem = self.memory();
        if mem.is_empty() {
            f.push("no lbd process lived long enough to judge its memory".into());
        }
        for (l, warm, last, g) in mem {
            if g > self.rss_tolerance {
                f.push(format!(
                    "memory: lbd on {} (pid {}) grew {:.0}% ({warm} kB -> {last} kB)",
                    l.node,
                    l.pid,
                    g * 100.0
                ));
            }
        }
        f
    }

    /// Heal → all-served times of the faults that recovered, sorted.
    pub fn recovery_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .faults
            .iter()
            .filter_map(|r| r.recovered.as_ref().map(|(d, _)| *d))
            .collect();
        v.sort();
        v
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "## Run\n");
        let _ = writeln!(m, "- date: {}", self.date);
        let _ = writeln!(
            m,
            "- fault loop: {:.0} s, seed {}, {} faults",
            self.duration.as_secs_f64(),
            self.seed,
            self.faults.len()
        );
        let _ = writeln!(m, "- lbd: `{}`", self.lbd_binary);
        let _ = writeln!(
            m,
            "- probes: ARP every {} s for {} layer-2 IPs (one l2probe), ping every {} s through \
             the router for {} BGP IPs; an outage is a gap > {} s between answers",
            secs(self.probe_interval),
            self.l2_ips.len(),
            secs(self.probe_interval),
            self.bgp_ips.len(),
            secs(self.outage_threshold)
        );
        let total: usize = self.answers.values().sum();
        let _ = writeln!(
            m,
            "- answers: {total} in all, ARP rounds sent: {}",
            self.probe_requests
        );
        let _ = writeln!(m, "\n## Services\n\n| Service | IP |\n|---|---|");
        for (k, ips) in &self.services {
            let _ = writeln!(m, "| {k} | {} |", ips.join(", "));
        }
        let failures_strict = self.failures(Duration::from_secs(1));
        let _ = writeln!(m, "\n## Checks\n");
        let rec = self.recovery_times();
        let pct = |p: f64| -> String {
            if rec.is_empty() {
                return "-".into();
            }
            let i = ((rec.len() - 1) as f64 * p).round() as usize;
            secs(rec[i])
        };
        let over = rec.iter().filter(|d| **d > Duration::from_secs(1)).count();
        let unrec = self.faults.iter().filter(|r| r.recovered.is_none()).count();
        let _ = writeln!(
            m,
            "| check | result |\n|---|---|\n\
             | heal → every IP served again ≤ 1 s | {} (median {} s, p95 {} s, max {} s; {over} over 1 s, {unrec} never) |\n\
             | never two MACs for one IP (probe) | {} |\n\
             | never two MACs for one IP (client capture, {} ARP answers) | {} |\n\
             | sharing rules ({} kubectl samples) | {} |\n\
             | no IP churn | {} |\n\
             | lbd memory flat (≤ {:.0}% after {} s warm-up, lifetimes ≥ {} s) | {} |\n\
             | no lbd crash | {} |",
            if over == 0 && unrec == 0 {
                "pass"
            } else {
                "FAIL"
            },
            pct(0.5),
            pct(0.95),
            rec.last().map(|d| secs(*d)).unwrap_or("-".into()),
            if self.split_brain_probe.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL {:?}", self.split_brain_probe)
            },
            self.arp_replies_captured,
            if self.split_brain_pcap.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL {:?}", self.split_brain_pcap)
            },
            self.ip_checks,
            if self.sharing_violations.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL {:?}", self.sharing_violations)
            },
            if self.churn.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL {:?}", self.churn)
            },
            self.rss_tolerance * 100.0,
            self.rss_warmup.as_secs(),
            self.rss_min_span.as_secs() + self.rss_warmup.as_secs(),
            if self
                .failures(Duration::MAX)
                .iter()
                .any(|f| f.starts_with("memory") || f.starts_with("no lbd process"))
            {
                "FAIL"
            } else {
                "pass"
            },
            if self.crashes.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL ({})", self.crashes.len())
            },
        );
        let leader_faults: Vec<&FaultRecord> = self
            .faults
            .iter()
            .filter(|r| r.leader_others_gap.is_some())
            .collect();
        if !self.move_backs.is_empty() {
            let _ = writeln!(
                m,
                "\nQuick move backs (another MAC took over, then the first again within 2 s, \
                 cleanly: not two MACs at once): {:?}",
                self.move_backs
            );
        }
        let _ = writeln!(m, "\n## Faults of the raft-lite leader\n");
        match leader_faults
            .iter()
            .filter_map(|r| r.leader_others_gap.as_ref().map(|g| (g, r)))
            .max_by_key(|(g, _)| g.0)
        {
            Some(((g, ip), r)) => {
                let _ = writeln!(
                    m,
                    "{} faults hit the leader (with a layer-2 IP on another node). Longest gap \
                     between two ARP answers of a layer-2 IP another node answered for, from \
                     the last answer before the fault to the heal: **{:.0} ms** ({ip}, fault \
                     {} — {} of {}); the probe asks every {:.0} ms, so a gap of one interval \
                     is no loss at all.",
                    leader_faults.len(),
                    g.as_secs_f64() * 1e3,
                    r.n,
                    r.kind.name(),
                    r.target,
                    self.probe_interval.as_secs_f64() * 1e3
                );
            }
            None => {
                let _ = writeln!(
                    m,
                    "No fault hit the leader while another node held a layer-2 IP."
                );
            }
        }
        let _ = writeln!(m, "\n## Faults\n");
        let _ = writeln!(
            m,
            "t = seconds since the fault loop began; outage = longest gap of any IP while the \
             fault lasted; served again = heal → every IP answering (the last outage ending \
             after the heal).\n"
        );
        let _ = writeln!(
            m,
            "| # | t | fault | target | hold s | outage during s (IP) | heal → served s (IP) |\n|---|---|---|---|---|---|---|"
        );
        for r in &self.faults {
            let _ = writeln!(
                m,
                "| {} | {:.1} | {} | {}{} | {:.2} | {} | {} |",
                r.n,
                self.rel(r.start),
                r.kind.name(),
                r.target,
                if r.target_was_leader { " (leader)" } else { "" },
                r.heal - r.start,
                r.outage_during
                    .as_ref()
                    .map(|(d, ip)| format!("{} ({ip})", secs(*d)))
                    .unwrap_or("0".into()),
                r.recovered
                    .as_ref()
                    .map(|(d, ip)| if d.is_zero() {
                        "0".to_string()
                    } else {
                        format!("{} ({ip})", secs(*d))
                    })
                    .unwrap_or("**never**".into()),
            );
        }
        let mut by_kind: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
        for r in &self.faults {
            if let Some((d, _)) = &r.recovered {
                by_kind.entry(r.kind).or_default().push(d.as_secs_f64());
            }
        }
        let _ = writeln!(
            m,
            "\n| fault | count | heal → served max s | outage during max s |\n|---|---|---|---|"
        );
        for (k, v) in &by_kind {
            let during = self
                .faults
                .iter()
                .filter(|r| r.kind == *k)
                .filter_map(|r| r.outage_during.as_ref().map(|(d, _)| d.as_secs_f64()))
                .fold(0.0, f64::max);
            let _ = writeln!(
                m,
                "| {} | {} | {:.3} | {:.3} |",
                k.name(),
                self.faults.iter().filter(|r| r.kind == *k).count(),
                v.iter().copied().fold(0.0, f64::max),
                during
            );
        }
        let _ = writeln!(
            m,
            "\n## lbd memory (VmRSS)\n\n| node | pid | lived s | first kB | warm kB | last kB | growth after warm-up |\n|---|---|---|---|---|---|---|"
        );
        for l in &self.rss {
            let judged = l.judged(self.rss_warmup, self.rss_min_span);
            let first = l.samples.first().map(|s| s.1).unwrap_or(0);
            let last = l.samples.last().copied().unwrap_or((0.0, 0));
            let _ = writeln!(
                m,
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                l.node,
                l.pid,
                last.0,
                first,
                judged.map(|(w, _)| w.1.to_string()).unwrap_or("-".into()),
                last.1,
                judged
                    .map(|(w, e)| format!(
                        "{:+.1}%",
                        (e.1 as f64 - w.1 as f64) / w.1.max(1) as f64 * 100.0
                    ))
                    .unwrap_or("(too short)".into())
            );
        }
        let _ = writeln!(m, "\n## BGP messages at the router\n");
        let msgs: Vec<String> = self
            .bgp_messages
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(m, "{}", msgs.join(", "));
        let _ = writeln!(
            m,
            "\n## Every outage (gap > {} s between answers)\n\n| IP | from t | to t | s | during fault |\n|---|---|---|---|---|",
            secs(self.outage_threshold)
        );
        for o in &self.outages {
            let _ = writeln!(
                m,
                "| {} | {:.2} | {:.2} | {:.3} | {} |",
                o.ip,
                self.rel(o.from),
                self.rel(o.to),
                o.to - o.from,
                o.fault
                    .and_then(|n| self.faults.iter().find(|f| f.n == n))
                    .map(|f| format!("{} {} ({})", f.n, f.kind.name(), f.target))
                    .unwrap_or("**none**".into())
            );
        }
        if !self.split_brain_context.is_empty() {
            let _ = writeln!(m, "\n## Split brain: the answers around it\n\n```");
            for c in &self.split_brain_context {
                let _ = writeln!(m, "{c}");
            }
            let _ = writeln!(m, "```");
        }
        if let Some(k) = &self.logs_kept {
            let _ = writeln!(m, "\nLab logs kept in `{}`.", k.display());
        }
        let _ = writeln!(m, "\n## Failed checks (1 s recovery target)\n");
        if failures_strict.is_empty() {
            let _ = writeln!(m, "none");
        }
        for f in failures_strict {
            let _ = writeln!(m, "- {}", f.replace('\n', " / "));
        }
        m
    }
}
