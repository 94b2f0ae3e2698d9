//! The MetalLB lab guide (`/work/shared/seed/metallb-lab-guide.txt`) as scenarios in the
//! namespace lab, with the guide's own addresses: nodes 10.10.100.3/.4/.5, the router
//! 10.10.100.1 (FRR in the role of the guide's VyOS, AS 64500, iBGP, `maximum-paths ibgp`),
//! the test API server on a "control plane" host 10.10.100.10, a client on the LAN
//! (10.10.100.9, the guide's Alpine container) and a client behind the router
//! (192.168.50.9) for layer 3.
//!
//! Each node's lb.toml is what a user gets from `lbctl import-metallb <the guide's
//! ConfigMap>` with the site's `[node]`, `[kubernetes]` and `[cluster]` tables appended (the
//! importer's header asks for exactly that). The guide's kubectl commands and manifests run
//! verbatim against the API server. There are no kubelets or controllers: the scenario
//! writes the Deployments' endpoints (EndpointSlices) and stands in for kube-proxy by putting
//! each Service IP on every node's `lo` (nodes have `arp_ignore=1`, so only lbd answers ARP)
//! behind a tiny HTTP server that answers with the node's name, or dnsmasq for the coredns
//! Services. Used by `tests/guide_lab.rs` and `examples/demo.rs`; each scenario narrates on
//! stdout and returns a [`Report`].

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kubelab::KubeLab;
use crate::lab::peers::{Frr, FrrConfig, kernel_nexthops};
use crate::lab::probe::{self, ReachMode};
use crate::lab::{Host, Lab, Proc, Signal, wait_for};
use crate::lbd::lbd_binary;

/// Generous: a loaded 2-core machine runs several labs at once.
pub const T: Duration = Duration::from_secs(40);
pub const NODES: [(&str, &str); 3] = [
    ("node1", "10.10.100.3"),
    ("node2", "10.10.100.4"),
    ("node3", "10.10.100.5"),
];
pub const ROUTER: &str = "10.10.100.1";
pub const CONTROL_PLANE: &str = "10.10.100.10";
pub const LAN_CLIENT: &str = "10.10.100.9";
pub const REMOTE_CLIENT: &str = "192.168.50.9";
pub const ASN: u32 = 64500;

/// The guide's three ConfigMaps (verbatim in `tests/fixtures/metallb/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuideConfig {
    /// Lab 1: `ip-space-1`, layer 2, 10.10.100.200/32 and .201/32.
    Layer2,
    /// Layer 3: the peer 10.10.100.1 and `ip-pool-1` 172.19.100.0/24 over BGP.
    Bgp,
    /// Multiple pools: `ip-pool-1` and `ip-pool-2` 172.19.101.0/24.
    BgpTwoPools,
}

impl GuideConfig {
    /// The ConfigMap's file name in `tests/fixtures/metallb/`.
    pub fn file_name(self) -> &'static str {
        match self {
            GuideConfig::Layer2 => "lab-guide-layer2.yaml",
            GuideConfig::Bgp => "lab-guide-bgp.yaml",
            GuideConfig::BgpTwoPools => "lab-guide-bgp-two-pools.yaml",
        }
    }

    pub fn fixture(self) -> PathBuf {
        crate::repo_root()
            .join("tests/fixtures/metallb")
            .join(self.file_name())
    }

    fn has_bgp(self) -> bool {
        self != GuideConfig::Layer2
    }
}

/// What a scenario saw, for the demo to print and the tests to assert on.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub lab: String,
    /// `namespace/name` → ingress IPs from the Service's status.
    pub services: Vec<(String, Vec<String>)>,
    /// `kubectl get svc` output after the IPs were assigned.
    pub kubectl_get_svc: String,
    /// Layer 2: the node whose lbd logged "announcing IP on eth0 for SERVICE".
    pub arp_node: Option<String>,
    /// The lbd log line that said so.
    pub arp_log_line: Option<String>,
    /// Layer 2: nodes whose MAC answered the client's ARP requests.
    pub arp_answered_by: BTreeSet<String>,
    /// Nodes whose HTTP server answered the client.
    pub http_answered_by: BTreeSet<String>,
    /// Failover: the node whose link went down, the one that took over, and the client's
    /// traffic gap (longest time between answered pings, one every 10 ms).
    pub failed_node: Option<String>,
    pub new_arp_node: Option<String>,
    pub gap: Option<Duration>,
    /// Failover: from the link going down to the new owner's "announcing" log line.
    pub takeover: Option<Duration>,
    /// Failover: the longest gap between TCP connects answered (coarser: 200 ms timeouts).
    pub tcp_gap: Option<Duration>,
    /// Failover: TCP connects tried / succeeded during the probe.
    pub probe_attempts: usize,
    pub probe_ok: usize,
    /// Layer 3: `vtysh -c "show ip route PREFIX"` on the router, and its kernel next hops.
    pub router_route: Option<String>,
    pub nexthops: Vec<String>,
    /// IP sharing: (command, answer) of each dig from the client.
    pub dig: Vec<(String, String)>,
    /// IP sharing: the ClusterIPs the DNS server answers with.
    pub expected_dns: Vec<String>,
    /// Where the guide's text did not work as printed.
    pub notes: Vec<String>,
}

/// The whole lab: hosts, router, API server, the three lbds and the kube-proxy stand-ins.
pub struct Guide {
    pub config: GuideConfig,
    pub nodes: Vec<Host>,
    pub lbds: Vec<Proc>,
    pub router: Host,
    pub frr: Option<Frr>,
    pub client: Host,
    pub remote: Host,
    pub kube: KubeLab,
    /// The nodes' web servers, running as long as the guide (stopped on drop).
    _web: Vec<Proc>,
    dns: Vec<Proc>,
    on_lo: BTreeSet<String>,
    configs: Vec<PathBuf>,
    // Dropped last: kills every process and deletes the namespaces.
    lab: Lab,
}

/// Prints one narration line (the demo shows these; tests show them with --nocapture).
pub fn say(text: &str) {
    println!("{text}");
}

fn step(text: &str) {
    println!("\n--- {text}");
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

/// The lbctl binary, beside lbd (see [`lbd_binary`]).
pub fn lbctl_binary() -> PathBuf {
    lbd_binary().with_file_name("lbctl")
}

/// `lbctl import-metallb FILE`, as a user runs it; the TOML on stdout.
pub fn import_metallb(configmap: &Path) -> String {
    let out = std::process::Command::new(lbctl_binary())
        .arg("import-metallb")
        .arg(configmap)
        .output()
        .unwrap_or_else(|e| panic!("run lbctl import-metallb: {e}"));
    assert!(
        out.status.success(),
        "lbctl import-metallb {} failed: {}",
        configmap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The site tables a user appends to the imported file on each host.
fn site_tables(node: &str, state: &Path, kubeconfig: &Path, key: &Path) -> String {
    let members: Vec<String> = NODES
        .iter()
        .map(|(n, ip)| format!("{n} = \"{ip}:7946\""))
        .collect();
    format!(
        r#"
# Added for this site (lb.toml(5)): who this host is, the API server, the cluster.
[node]
name = "{node}"
state_dir = "{}"

[kubernetes]
kubeconfig = "{}"

[cluster]
members = {{ {} }}
secret_file = "{}"
"#,
        state.display(),
        kubeconfig.display(),
        members.join(", "),
        key.display()
    )
}

/// An HTTP server answering every request with the node's name. A client that connects and
/// sends nothing within 50 ms (the reach probe) gets the bare name as the first line.
const WEB_PY: &str = r#"
import socket, sys, threading
name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(256)
print("listening on %s:%d" % (addr, port), flush=True)
def handle(c):
    try:
        c.settimeout(0.05)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        body = (name + "\n").encode()
        if data:
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body) + body)
        else:
            c.sendall(body)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

impl Guide {
    /// Builds the topology, starts the API server, FRR (for the BGP configs), the three lbds
    /// on `lbctl import-metallb <config's ConfigMap>` + site tables, and the HTTP servers.
    pub fn start(name: &str, config: GuideConfig) -> Guide {
        let lab = Lab::new(name);
        let router = lab.router("router", &["10.10.100.1/24"]);
        let nodes: Vec<Host> = NODES
            .iter()
            .map(|(n, ip)| lab.node(n, &[&format!("{ip}/24")]))
            .collect();
        let cp = lab.host("cp", &[&format!("{CONTROL_PLANE}/24")]);
        let client = lab.host("client", &[&format!("{LAN_CLIENT}/24")]);
        // The layer-3 client's own segment behind the router.
        let seg = lab.segment().expect("client segment");
        router
            .attach(&seg, "eth1", &["192.168.50.1/24"])
            .expect("router eth1");
        let remote = lab.add_host("remote", crate::lab::HostKind::Client, &[]);
        // add_host plugs eth0 into the LAN: move the remote client to its segment instead.
        remote.run(&["ip", "link", "del", "eth0"]).expect("unplug");
        remote
            .attach(&seg, "eth1", &[&format!("{REMOTE_CLIENT}/24")])
            .expect("remote eth1");
        remote
            .run(&["ip", "route", "add", "default", "via", "192.168.50.1"])
            .expect("remote default route");
        for n in &nodes {
            n.run(&["ip", "route", "add", "default", "via", ROUTER])
                .expect("node default route");
        }
        say(&format!(
            "lab: router {ROUTER}{}, nodes {}, API server {CONTROL_PLANE}:6443, client \
             {LAN_CLIENT} on the LAN, client {REMOTE_CLIENT} behind the router",
            if config.has_bgp() {
                format!(" (FRR, AS {ASN}, iBGP to the nodes, maximum-paths ibgp)")
            } else {
                String::new()
            },
            NODES.map(|(n, ip)| format!("{n} {ip}")).join(", ")
        ));

        let kube = KubeLab::start(&cp);
        for (n, ip) in NODES {
            kube.add_node(n, ip);
        }
        let frr = config.has_bgp().then(|| {
            let mut cfg = FrrConfig::new(ASN, ROUTER);
            for (_, ip) in NODES {
                cfg = cfg.neighbor(ip, ASN);
            }
            cfg.maximum_paths_ibgp = Some(8);
            Frr::start(&router, &cfg).expect("FRR starts")
        });

        let imported = import_metallb(&config.fixture());
        let bin = lbd_binary();
        let mut lbds = Vec::new();
        let mut configs = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let key = node
                .write_file("cluster.key", "guide-lab-cluster-secret-0123456789\n")
                .expect("key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("0600");
            let state = node.owned_dir("state", "root:root").expect("state dir");
            let site = site_tables(NODES[i].0, &state, kube.kubeconfig(), &key);
            let cfg = node
                .write_file("lb.toml", &format!("{imported}{site}"))
                .expect("lb.toml");
            if i == 0 {
                say(&format!(
                    "lb.toml on node1 = `lbctl import-metallb {}` + site tables:\n{}",
                    config.file_name(),
                    indent(&std::fs::read_to_string(&cfg).unwrap_or_default())
                ));
            }
            // Never the machine's system bus; plain text logs.
            let p = node
                .spawn_labeled(
                    "lbd",
                    &[
                        "env",
                        "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                        "NO_COLOR=1",
                        bin.to_str().expect("utf-8 path"),
                        "--config",
                        cfg.to_str().expect("utf-8 path"),
                    ],
                )
                .expect("lbd starts");
            lbds.push(p);
            configs.push(cfg);
        }
        let py = lab.dir().join("web.py");
        std::fs::write(&py, WEB_PY).expect("web.py");
        let web = nodes
            .iter()
            .map(|n| {
                let p = n
                    .spawn_labeled(
                        "web",
                        &[
                            "/usr/bin/python3",
                            py.to_str().expect("utf-8"),
                            n.name(),
                            "0.0.0.0",
                            "80",
                        ],
                    )
                    .expect("web server");
                p.wait_for_log("listening", T).expect("web server listens");
                p
            })
            .collect();
        let g = Guide {
            config,
            nodes,
            lbds,
            router,
            frr,
            client,
            remote,
            kube,
            _web: web,
            dns: Vec::new(),
            on_lo: BTreeSet::new(),
            configs,
            lab,
        };
        for (i, p) in g.lbds.iter().enumerate() {
            p.wait_for_log("ready", T)
                .unwrap_or_else(|e| panic!("lbd on node{} not ready: {e}\n{}", i + 1, g.logs()));
        }
        if let Some(frr) = &g.frr {
            for (_, ip) in NODES {
                frr.wait_established(ip, T)
                    .unwrap_or_else(|e| panic!("{e}\n{}", g.logs()));
            }
            say("router: BGP sessions with node1, node2, node3 established");
        }
        say("lbd running on node1, node2, node3 (raft-lite cluster, Kubernetes watch)");
        g
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Every lbd's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.lbds.iter().enumerate() {
            s.push_str(&format!("---- lbd node{} ----\n{}", i + 1, p.log()));
        }
        if let Some(f) = &self.frr {
            s.push_str(&format!("---- FRR ----\n{}", f.log()));
        }
        s
    }

    fn node_index(&self, name: &str) -> usize {
        NODES
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_of_mac(&self, mac: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.mac() == mac)
            .map(|n| n.name().to_string())
    }

    /// Runs a guide kubectl command (printed as `$ kubectl ...`) and prints its output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        say(&format!("$ kubectl {}", args.join(" ")));
        let out = self.kube.ok(args);
        print!("{}", indent(&out));
        out
    }

    /// The guide's `kubectl create deploy NAME --image nginx:stable-alpine`, `extra` appended.
    fn create_nginx(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["create", "deploy", name, "--image", "nginx:stable-alpine"];
        args.extend_from_slice(extra);
        self.kubectl(&args);
    }

    /// The guide's `kubectl expose deploy NAME --port 80 --type=LoadBalancer`.
    fn expose(&self, name: &str) {
        self.kubectl(&[
            "expose",
            "deploy",
            name,
            "--port",
            "80",
            "--type=LoadBalancer",
        ]);
    }

    /// `kubectl apply -f -` with a guide manifest.
    pub fn apply(&self, what: &str, yaml: &str) {
        say(&format!("$ kubectl apply -f {what}"));
        print!("{}", indent(&self.kube.apply(yaml)));
    }

    /// The Deployment's pods, as the endpoints controller would publish them: `replicas`
    /// endpoints spread round-robin over the nodes starting at `first`.
    pub fn endpoints(&self, ns: &str, svc: &str, replicas: usize, first: usize, port: (u16, &str)) {
        let eps: Vec<(String, String)> = (0..replicas)
            .map(|r| {
                let n = (first + r) % NODES.len();
                (
                    NODES[n].0.to_string(),
                    format!("10.244.{}.{}", n + 1, 10 + r),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = eps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        self.kube
            .set_endpoints(ns, svc, &refs, &[("", port.0, port.1)]);
    }

    /// Waits for the Service's IP and puts it on every node's `lo` (kube-proxy's part).
    pub fn wait_ip(&mut self, ns: &str, svc: &str) -> Vec<String> {
        let ips = self.kube.wait_for_ingress(ns, svc, T);
        for ip in &ips {
            if self.on_lo.insert(ip.clone()) {
                for n in &self.nodes {
                    n.add_lo_ip(&format!("{ip}/32")).expect("VIP on lo");
                }
            }
        }
        say(&format!("{ns}/{svc} got EXTERNAL-IP {}", ips.join(",")));
        ips
    }

    /// The node whose lbd logged "announcing IP on eth0 for NS/SVC" (last such line), and
    /// the line, waiting for one; `except` skips a node (after a failover).
    pub fn arp_owner(&self, ip: &str, svc: &str, except: Option<&str>) -> (String, String) {
        let needle = format!("announcing {ip} on eth0 for");
        wait_for(T, &format!("an lbd announcing {ip}"), || {
            for (i, p) in self.lbds.iter().enumerate() {
                if Some(NODES[i].0) == except {
                    continue;
                }
                let log = p.log();
                // The newest announce/withdraw line for the IP decides.
                let last = log.lines().rev().find(|l| {
                    l.contains(&needle) || l.contains(&format!("no longer announcing {ip} "))
                });
                if let Some(l) = last.filter(|l| l.contains(&needle) && l.contains(svc)) {
                    return Some((NODES[i].0.to_string(), l.trim().to_string()));
                }
            }
            None
        })
    }

    /// `kubectl describe svc NAME` once it shows every one of `needles` (the announcers
    /// annotation, a `nodeAssigned` Event): the output.
    pub fn describe_showing(&self, svc: &str, needles: &[&str]) -> String {
        let deadline = Instant::now() + T;
        loop {
            let out = self.kube.ok(&["describe", "svc", svc]);
            if needles.iter().all(|n| out.contains(n)) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl describe svc {svc} did not show {needles:?} within {T:?}:\n{out}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl http://IP/` from `from` until it answers; the node name in the body.
    pub fn curl(&self, from: &Host, ip: &str) -> String {
        let url = format!("http://{ip}/");
        wait_for(T, &format!("curl {url} from {}", from.name()), || {
            from.stdout(&["curl", "-s", "--max-time", "2", &url])
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }

    /// `kubectl delete svc NAMES` and kube-proxy's part: the freed IPs leave every `lo`.
    pub fn delete_services(&mut self, ns: &str, names: &[&str]) {
        let mut freed = Vec::new();
        for n in names {
            freed.extend(self.kube.ingress_ips(ns, n));
        }
        let mut args = vec!["delete", "svc", "-n", ns];
        args.extend_from_slice(names);
        self.kubectl(&args);
        for ip in freed {
            if self.on_lo.remove(&ip) {
                for n in &self.nodes {
                    n.del_lo_ip(&format!("{ip}/32")).expect("VIP off lo");
                }
            }
        }
    }

    fn svc_entry(&self, ns: &str, svc: &str) -> (String, Vec<String>) {
        (format!("{ns}/{svc}"), self.kube.ingress_ips(ns, svc))
    }

    /// Rewrites every node's lb.toml from another guide ConfigMap and reloads lbd (SIGHUP:
    /// what `systemctl reload lbd` does) — the lb form of applying the new ConfigMap.
    pub fn switch_config(&mut self, config: GuideConfig) {
        let imported = import_metallb(&config.fixture());
        for (i, cfg) in self.configs.iter().enumerate() {
            let old = std::fs::read_to_string(cfg).expect("lb.toml");
            let site = old
                .find("\n# Added for this site")
                .map(|at| old[at..].to_string())
                .expect("site tables in lb.toml");
            std::fs::write(cfg, format!("{imported}{site}")).expect("write lb.toml");
            let before = self.lbds[i].log().matches("configuration reloaded").count();
            self.lbds[i].kill(Signal::Hup);
            let p = &self.lbds[i];
            wait_for(T, "lbd reloads", || {
                (p.log().matches("configuration reloaded").count() > before).then_some(())
            });
        }
        let line = self.lbds[0]
            .log()
            .lines()
            .rev()
            .find(|l| l.contains("configuration reloaded"))
            .unwrap_or_default()
            .to_string();
        say(&format!(
            "lb.toml on every node = `lbctl import-metallb {}` + site tables; `systemctl reload \
             lbd` (SIGHUP):\n    node1: {}",
            config.file_name(),
            line.trim()
        ));
        self.config = config;
    }

    /// Waits until the router's kernel routes `ip/32` over every node (ECMP) and returns
    /// FRR's `show ip route` for it.
    fn router_ecmp(&self, ip: &str, report: &mut Report) {
        let frr = self.frr.as_ref().expect("a BGP lab");
        let prefix = format!("{ip}/32");
        let all: Vec<String> = NODES.iter().map(|(_, a)| a.to_string()).collect();
        let found = wait_for(T, &format!("ECMP route {prefix} over all nodes"), || {
            let nh = kernel_nexthops(&self.router, &prefix).unwrap_or_default();
            (nh == all).then_some(nh)
        });
        let cmd = format!("show ip route {prefix}");
        let text = frr.vtysh(&[&cmd]).expect("vtysh");
        say(&format!(
            "router$ vtysh -c \"{cmd}\"\n{}",
            indent(text.trim_end())
        ));
        report.router_route = Some(text);
        report.nexthops = found;
    }

    // ---------------------------------------------------------------- the labs

    /// Lab 2 - Layer 2: `nginx-metallb` exposed, EXTERNAL-IP shown, the node answering ARP
    /// from lbd's log, the client reaches it.
    pub fn layer2(&mut self) -> Report {
        let mut r = Report {
            lab: "Lab 2 - Layer 2".into(),
            ..Report::default()
        };
        step("Lab 2 - Layer 2: create deployment and expose it as a LB type service");
        self.create_nginx("nginx-metallb", &[]);
        self.expose("nginx-metallb");
        self.endpoints("default", "nginx-metallb", 1, 1, (80, "TCP"));
        let ips = self.wait_ip("default", "nginx-metallb");
        r.services.push(self.svc_entry("default", "nginx-metallb"));
        r.kubectl_get_svc = self.kubectl(&["get", "svc", "nginx-metallb"]);
        let ip = ips[0].clone();

        step("Check lbd's logs to see which node will be responding to ARP");
        let (node, line) = self.arp_owner(&ip, "default/nginx-metallb", None);
        say(&format!("{node}: {line}"));
        r.arp_node = Some(node);
        r.arp_log_line = Some(line);

        step("Check connectivity from the client (the guide's Alpine container)");
        let run = probe::l2probe(
            &self.client,
            ip.parse().expect("IP"),
            Duration::from_millis(500),
            Duration::from_millis(20),
        )
        .expect("l2probe")
        .finish()
        .expect("l2probe run");
        r.arp_answered_by = run
            .macs()
            .iter()
            .map(|m| self.node_of_mac(m).unwrap_or_else(|| m.clone()))
            .collect();
        say(&format!(
            "client: ARP who-has {ip} answered by {:?} ({} answers in 0.5 s)",
            r.arp_answered_by,
            run.answers().count()
        ));
        let body = self.curl(&self.client, &ip);
        say(&format!("client$ curl http://{ip}/\n    {body}"));
        r.http_answered_by.insert(body);
        r
    }

    /// Test for Failover: `nginx-metallb-failover` with 4 replicas; the interface of the node
    /// answering ARP set down; the client's TCP traffic gap measured.
    pub fn failover(&mut self) -> Report {
        let mut r = Report {
            lab: "Lab 2 - Layer 2: failover".into(),
            ..Report::default()
        };
        step("Test for Failover: 4 replicas spread across the nodes");
        say(
            "(the guide first scales MetalLB's controller to 2 replicas; lb has no controller \
             pod: lbd runs on every node and raft-lite elects who answers, so nothing to scale)",
        );
        self.create_nginx("nginx-metallb-failover", &["--replicas=4"]);
        self.expose("nginx-metallb-failover");
        self.endpoints("default", "nginx-metallb-failover", 4, 0, (80, "TCP"));
        let ips = self.wait_ip("default", "nginx-metallb-failover");
        r.services
            .push(self.svc_entry("default", "nginx-metallb-failover"));
        r.kubectl_get_svc = self.kubectl(&["get", "svc"]);
        let ip = ips[0].clone();
        let svc = "default/nginx-metallb-failover";
        let (owner, line) = self.arp_owner(&ip, svc, None);
        say(&format!("{owner}: {line}"));
        r.arp_node = Some(owner.clone());
        r.arp_log_line = Some(line);

        // The client's traffic: a ping every 10 ms (the gap, to 10 ms) and a TCP connect to
        // port 80 every 20 ms (which node's server answers; each failed connect costs its
        // 200 ms timeout, so its gap is coarser).
        let duration = Duration::from_secs(6);
        let target = ip.parse().expect("IP");
        let ping = probe::reach(
            &self.client,
            ReachMode::Icmp,
            target,
            duration,
            Duration::from_millis(10),
        )
        .expect("ping probe");
        let tcp = probe::reach(
            &self.client,
            ReachMode::Tcp(80),
            target,
            duration,
            Duration::from_millis(20),
        )
        .expect("TCP probe");
        let started = Instant::now();
        wait_for(T, "the client's traffic flows", || {
            (tcp.snapshot().iter().filter(|x| x.ok).count() >= 10
                && ping.snapshot().iter().filter(|x| x.ok).count() >= 10)
                .then_some(())
        });
        step(&format!(
            "Shutdown the interface of the node that is responding to ARP ({owner})"
        ));
        say(&format!("{owner}$ ip link set dev eth0 down"));
        let failed = &self.nodes[self.node_index(&owner)];
        let down_at = std::time::SystemTime::now();
        failed.link_down().expect("link down");
        r.failed_node = Some(owner.clone());
        let (new_owner, line) = self.arp_owner(&ip, svc, Some(&owner));
        r.takeover = log_time_after(&line, down_at);
        say(&format!(
            "{new_owner}: {line}\n    ({} after the link went down)",
            r.takeover
                .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "?".into())
        ));
        r.new_arp_node = Some(new_owner);
        assert!(
            started.elapsed() < duration,
            "the probes ended before the takeover"
        );
        let ping = ping.finish().expect("ping run");
        let tcp = tcp.finish().expect("TCP run");
        r.gap = ping.longest_gap_between_answers().map(|g| g.duration());
        r.tcp_gap = tcp.longest_gap_between_answers().map(|g| g.duration());
        r.probe_attempts = tcp.records.len();
        r.probe_ok = tcp.answers().count();
        r.http_answered_by = tcp.data();
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "none".into())
        };
        say(&format!(
            "client: ping {ip} every 10 ms: longest gap {}; TCP connects to {ip}:80 every 20 ms: \
             {} of {} answered, by {:?}, longest gap {}",
            ms(r.gap),
            r.probe_ok,
            r.probe_attempts,
            r.http_answered_by,
            ms(r.tcp_gap)
        ));
        failed.link_up().expect("link up");
        r
    }

    /// Layer 3 - LAB: `nginx-metallb-13` from 172.19.100.0/24 over BGP, the router's /32 with
    /// ECMP next hops, the client behind the router reaches it.
    pub fn layer3(&mut self) -> Report {
        let mut r = Report {
            lab: "Layer 3 - LAB".into(),
            ..Report::default()
        };
        step("Layer 3 - LAB: create deployment and expose it via LB service type");
        self.create_nginx("nginx-metallb-13", &[]);
        self.expose("nginx-metallb-13");
        self.endpoints("default", "nginx-metallb-13", 1, 0, (80, "TCP"));
        let ip = self.wait_ip("default", "nginx-metallb-13")[0].clone();
        r.services
            .push(self.svc_entry("default", "nginx-metallb-13"));
        r.kubectl_get_svc = self.kubectl(&["get", "svc", "nginx-metallb-13"]);
        step("The router's routes");
        self.router_ecmp(&ip, &mut r);
        step("Reach it from the client behind the router");
        self.reach_through_router(&ip, &mut r);
        r
    }

    /// curls from the remote client (new connections: the router's L4 hash spreads them).
    fn reach_through_router(&self, ip: &str, r: &mut Report) {
        for _ in 0..12 {
            let body = self.curl(&self.remote, ip);
            r.http_answered_by.insert(body);
        }
        say(&format!(
            "{REMOTE_CLIENT}$ curl http://{ip}/   (12 times)\n    answered by {:?}",
            r.http_answered_by
        ));
    }

    /// Layer 3 - Multiple IP Pools LAB: the two-pool ConfigMap, then a Service with the
    /// `metallb.universe.tf/address-pool: ip-pool-2` annotation added to the dry-run YAML.
    pub fn multiple_pools(&mut self) -> Report {
        let mut r = Report {
            lab: "Layer 3 - Multiple IP Pools LAB".into(),
            ..Report::default()
        };
        step("Layer 3 - Multiple IP Pools LAB: the ConfigMap with ip-pool-1 and ip-pool-2");
        if self.config != GuideConfig::BgpTwoPools {
            self.switch_config(GuideConfig::BgpTwoPools);
        }
        self.create_nginx("nginx-metallb-13-ip-pool", &[]);
        say(
            "$ kubectl expose deploy nginx-metallb-13-ip-pool --port 80 --type=LoadBalancer \
             --dry-run=client -o yaml > metallb-ip-pool-demo.yaml",
        );
        let yaml = self.kube.ok(&[
            "expose",
            "deploy",
            "nginx-metallb-13-ip-pool",
            "--port",
            "80",
            "--type=LoadBalancer",
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        // "Add IP pool annotations to the service manifest and create it."
        let yaml = yaml.replacen(
            "metadata:\n",
            "metadata:\n  annotations:\n    metallb.universe.tf/address-pool: ip-pool-2\n",
            1,
        );
        assert!(yaml.contains("address-pool: ip-pool-2"), "{yaml}");
        let file = self
            .kube
            .host()
            .write_file("metallb-ip-pool-demo.yaml", &yaml)
            .expect("manifest");
        say(&format!(
            "metallb-ip-pool-demo.yaml, with the annotation added:\n{}",
            indent(&yaml)
        ));
        self.kubectl(&["create", "-f", file.to_str().expect("utf-8")]);
        self.endpoints("default", "nginx-metallb-13-ip-pool", 1, 2, (80, "TCP"));
        let ip = self.wait_ip("default", "nginx-metallb-13-ip-pool")[0].clone();
        r.services
            .push(self.svc_entry("default", "nginx-metallb-13-ip-pool"));
        r.kubectl_get_svc = self.kubectl(&["get", "svc"]);
        self.router_ecmp(&ip, &mut r);
        self.reach_through_router(&ip, &mut r);
        r
    }

    /// Layer 3 - IP Sharing LAB: the coredns TCP and UDP Services (the guide's manifests)
    /// share 172.19.100.0; a DNS server on the nodes answers `dig` and `dig +tcp`.
    pub fn ip_sharing(&mut self) -> Report {
        let mut r = Report {
            lab: "Layer 3 - IP Sharing LAB".into(),
            ..Report::default()
        };
        step("Layer 3 - IP Sharing LAB: coreDNS TCP and UDP services on one LB IP");
        // The guide's TCP template as printed has `ports:` one space in and the rest two:
        // not valid YAML. Show what kubectl says, then apply it with that line fixed.
        say("$ kubectl apply -f coredns-tcp-svc.yaml   (the template exactly as printed)");
        let bad = self
            .kube
            .kubectl_stdin(&["apply", "-f", "-"], Some(COREDNS_TCP_AS_PRINTED));
        if bad.code != 0 {
            print!("{}", indent(bad.stderr.trim_end()));
            say("    (` ports:` is indented by one space, `selector:` by two: re-indented)");
            r.notes.push(format!(
                "the guide's coredns-tcp-svc template is not valid YAML: {}",
                bad.stderr.trim()
            ));
        }
        self.apply("coredns-tcp-svc.yaml", &coredns_tcp());
        self.apply("coredns-udp-svc.yaml", COREDNS_UDP);
        // The existing coreDNS deployment's two pods.
        self.endpoints("kube-system", "coredns-tcp-svc", 2, 0, (53, "TCP"));
        self.endpoints("kube-system", "coredns-udp-svc", 2, 0, (53, "UDP"));
        let tcp = self.wait_ip("kube-system", "coredns-tcp-svc");
        let udp = self.wait_ip("kube-system", "coredns-udp-svc");
        r.services
            .push(self.svc_entry("kube-system", "coredns-tcp-svc"));
        r.services
            .push(self.svc_entry("kube-system", "coredns-udp-svc"));
        r.kubectl_get_svc = self.kubectl(&["get", "svc", "-n", "kube-system"]);
        let ip = udp[0].clone();
        if tcp != udp {
            say(&format!(
                "the two Services got different IPs: {tcp:?} {udp:?}"
            ));
            return r;
        }
        self.router_ecmp(&ip, &mut r);
        // CoreDNS answers a Service name with its ClusterIP.
        let mut records = Vec::new();
        for svc in ["coredns-tcp-svc", "coredns-udp-svc"] {
            let cip = self.kube.ok(&[
                "get",
                "svc",
                "-n",
                "kube-system",
                svc,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ]);
            records.push(format!(
                "--host-record={svc}.kube-system.svc.cluster.local,{}",
                cip.trim()
            ));
            r.expected_dns.push(cip.trim().to_string());
        }
        for n in &self.nodes {
            let mut args = vec![
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
                "--log-queries",
                "--port=53",
            ];
            let listen = format!("--listen-address={ip}");
            args.push(&listen);
            args.extend(records.iter().map(String::as_str));
            let p = n.spawn_labeled("dnsmasq", &args).expect("dnsmasq");
            p.wait_for_log("started", T)
                .unwrap_or_else(|e| panic!("dnsmasq on {}: {e}\n{}", n.name(), p.log()));
            self.dns.push(p);
        }
        say(&format!(
            "nodes: dnsmasq on {ip} UDP and TCP 53 (the coredns stand-in)"
        ));
        step("Test DNS resolution via the load balancer using both UDP and TCP");
        for (proto, name) in [
            ("", "coredns-tcp-svc.kube-system.svc.cluster.local"),
            ("+tcp", "coredns-udp-svc.kube-system.svc.cluster.local"),
        ] {
            let at = format!("@{ip}");
            let mut args = vec!["dig", "+short", "+time=2", "+tries=3"];
            if !proto.is_empty() {
                args.push(proto);
            }
            args.extend([name, at.as_str()]);
            let answer = wait_for(T, &format!("dig {proto} {name}"), || {
                self.remote
                    .stdout(&args)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            });
            let shown = if proto.is_empty() {
                format!("dig +short {name} {at}")
            } else {
                format!("dig +short {proto} {name} {at}")
            };
            say(&format!("{REMOTE_CLIENT}$ {shown}\n    {answer}"));
            r.dig.push((shown, answer));
        }
        r
    }
}

/// How long after `t` an lbd log line (`2026-01-02T03:04:05.678901Z  INFO ...`, UTC) was
/// written; `None` if the line has no timestamp. Compares the time of day (the line and `t`
/// are seconds apart), so midnight is handled by wrapping.
fn log_time_after(line: &str, t: std::time::SystemTime) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    let line_day = h * 3600.0 + m * 60.0 + sec;
    let t_day = t
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64()
        .rem_euclid(86400.0);
    let d = (line_day - t_day).rem_euclid(86400.0);
    // More than an hour "after" is a line from before `t`.
    (d < 3600.0).then(|| Duration::from_secs_f64(d))
}

/// The guide's coreDNS TCP service template, verbatim (` ports:` one space in: invalid YAML).
pub const COREDNS_TCP_AS_PRINTED: &str = "apiVersion: v1
kind: Service
metadata:
  name: coredns-tcp-svc
  namespace: kube-system
  annotations:
    metallb.universe.tf/allow-shared-ip: gns3-ip
spec:
 ports:
  - port: 53
    protocol: TCP
    targetPort: 53
  selector:
    k8s-app: kube-dns
  type: LoadBalancer
";

/// The guide's coreDNS TCP service template with `ports:` indented like its siblings.
pub fn coredns_tcp() -> String {
    COREDNS_TCP_AS_PRINTED.replacen("\n ports:", "\n  ports:", 1)
}

/// The guide's coreDNS UDP service template, verbatim.
pub const COREDNS_UDP: &str = "apiVersion: v1
kind: Service
metadata:
  name: coredns-udp-svc
  namespace: kube-system
  annotations:
    metallb.universe.tf/allow-shared-ip: gns3-ip
spec:
  ports:
  - port: 53
    protocol: UDP
    targetPort: 53
  selector:
    k8s-app: kube-dns
  type: LoadBalancer
  loadBalancerIP: 172.19.100.0
";
