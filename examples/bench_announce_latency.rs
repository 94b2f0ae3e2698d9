//! Benchmark: from a Service being created to the first ARP answer for its IP at a client.
//!
//! The namespace lab: the test API server as a process on a control-plane host (10.10.100.10),
//! one or three lbd nodes (10.10.100.3…) reaching it over the lab LAN with a layer-2 pool, a
//! Node object per lbd node, and a client (10.10.100.9) sending an ARP request for the
//! Service's IP every 10 ms. Each trial creates one Service type LoadBalancer
//! (externalTrafficPolicy Cluster, with a ready endpoint applied just before it in the same
//! `kubectl apply`; its IP requested with `metallb.io/loadBalancerIPs` so the
//! probe knows what to ask for) with the real kubectl. A `kubectl get svc -w` started before
//! the trials timestamps every event as it arrives, which gives
//!   (a) created (the watch's ADDED event) → `status.loadBalancer.ingress` seen by the watch,
//!   (b) status seen → the first ARP frame claiming the IP at the client (reply or gratuitous).
//!
//! Run as root:
//!   cargo build --release --bin lbd --example lb-test-apiserver &&
//!   cargo run --release --example bench_announce_latency [-- --trials 10 --nodes 1,3]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_testkit::kubelab::KubeLab;
use lb_testkit::lab::{Host, Lab, Proc, probe, wait_for};
use lb_testkit::lbd::lbd_binary;

const T: Duration = Duration::from_secs(30);
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn config(i: usize, n: usize, state: &str, key: &str, kubeconfig: &str) -> String {
    let mut s = format!(
        r#"
[node]
name = "node{i}"
state_dir = "{state}"

[kubernetes]
kubeconfig = "{kubeconfig}"

[layer2]
gratuitous_count = 3
gratuitous_interval = "100ms"

[[pool]]
name = "l2"
protocol = "layer2"
addresses = ["10.10.100.200-10.10.100.250"]
"#
    );
    if n > 1 {
        let members: Vec<String> = (1..=n)
            .map(|j| format!("node{j} = \"10.10.100.{}:7946\"", j + 2))
            .collect();
        s += &format!(
            "\n[cluster]\nmembers = {{ {} }}\nsecret_file = \"{key}\"\n",
            members.join(", ")
        );
    }
    s
}

/// Timestamped lines of `kubectl get svc -w`: (epoch seconds when read, "name ip...").
type Events = Arc<Mutex<Vec<(f64, String)>>>;

/// `kubectl get svc -w` on the API server's host, each line timestamped when it arrives.
fn watch_services(k: &KubeLab) -> (std::process::Child, Events) {
    let mut c = k.host().command(&[
        "kubectl",
        "get",
        "services",
        "-w",
        "-o",
        "jsonpath={.metadata.name} {.status.loadBalancer.ingress[*].ip}{\"\\n\"}",
    ]);
    let home = k.kubeconfig().parent().expect("kube dir").to_path_buf();
    c.env("KUBECONFIG", k.kubeconfig())
        .env("KUBECACHEDIR", home.join("cache"))
        .env("HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("kubectl get -w");
    let out = child.stdout.take().expect("stdout");
    let events: Events = Arc::default();
    let e = events.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let t = now();
            e.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t, line.trim().to_string()));
        }
    });
    (child, events)
}

struct Trial {
    to_status: f64,
    to_arp: f64,
    /// From starting `kubectl apply` (a process start: includes kubectl's own start-up) to
    /// the first ARP frame.
    apply_to_arp: f64,
}

fn trial(k: &KubeLab, client: &Host, events: &Events, n: usize) -> Trial {
    let name = format!("web{n}");
    let ip = format!("10.10.100.{}", 200 + n);
    let p = probe::l2probe(client, ip.parse().unwrap(), T, PROBE_INTERVAL).expect("l2probe");
    let applied = now();
    // The Deployment's pods exist before the Service, as usual: a ready endpoint first (lbd,
    // like MetalLB, announces no Service without one), then the Service, in one apply.
    k.apply(&format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-pods
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
endpoints:
- addresses: ["10.244.1.{n}"]
  nodeName: node1
  conditions:
    ready: true
ports:
- name: http
  port: 80
  protocol: TCP
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations:
    metallb.io/loadBalancerIPs: {ip}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Cluster
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    protocol: TCP
"#
    ));
    let first_arp = wait_for(T, &format!("an ARP answer for {ip}"), || {
        p.snapshot()
            .iter()
            .filter(|r| r.ok && matches!(r.kind.as_str(), "reply" | "garp"))
            .map(|r| r.t)
            .next()
    });
    let (created, status) = wait_for(T, &format!("{name}'s status in the watch"), || {
        let ev = events.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<&(f64, String)> = ev
            .iter()
            .filter(|(_, l)| l.split_whitespace().next() == Some(name.as_str()))
            .collect();
        let created = mine.first()?.0;
        let status = mine
            .iter()
            .find(|(_, l)| l.split_whitespace().nth(1) == Some(ip.as_str()))?
            .0;
        Some((created, status))
    });
    drop(p);
    Trial {
        to_status: status - created,
        to_arp: first_arp - status,
        apply_to_arp: first_arp - applied,
    }
}

fn run(nodes: usize, trials: usize) -> Vec<Trial> {
    let lab = Lab::new(&format!("bann{nodes}"));
    let cp = lab.host("cp", &["10.10.100.10/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    let hosts: Vec<Host> = (1..=nodes)
        .map(|i| lab.node(&format!("node{i}"), &[&format!("10.10.100.{}/24", i + 2)]))
        .collect();
    let k = KubeLab::start(&cp);
    for i in 1..=nodes {
        k.add_node(&format!("node{i}"), &format!("10.10.100.{}", i + 2));
    }
    let kubeconfig = k.kubeconfig().display().to_string();
    let lbds: Vec<Proc> = hosts
        .iter()
        .enumerate()
        .map(|(j, h)| {
            let key = h
                .write_file("cluster.key", "lab-cluster-shared-secret-0123456789\n")
                .unwrap();
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let state = h.owned_dir("state", "root:root").unwrap();
            let cfg = h
                .write_file(
                    "lb.toml",
                    &config(
                        j + 1,
                        nodes,
                        &state.display().to_string(),
                        &key.display().to_string(),
                        &kubeconfig,
                    ),
                )
                .unwrap();
            let bin = lbd_binary();
            h.spawn(&[bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
                .unwrap()
        })
        .collect();
    for l in &lbds {
        l.wait_for_log(" ready ", T).expect("lbd ready");
    }
    // Only the raft-lite leader writes status: measure a settled cluster, not its election.
    if nodes > 1 {
        wait_for(T, "a raft-lite leader", || {
            lbds.iter()
                .any(|l| l.log().contains("became leader"))
                .then_some(())
        });
    }
    let (mut watcher, events) = watch_services(&k);
    // The watch is established once it lists what exists (nothing yet): give it a Service
    // of its own to see.
    k.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: warmup\nspec:\n  type: ClusterIP\n  ports:\n  - port: 80\n",
    );
    wait_for(T, "the watch to run", || {
        let ev = events.lock().unwrap_or_else(|p| p.into_inner());
        ev.iter()
            .any(|(_, l)| l.starts_with("warmup"))
            .then_some(())
    });
    let out: Vec<Trial> = (1..=trials)
        .map(|n| trial(&k, &client, &events, n))
        .collect();
    let _ = watcher.kill();
    let _ = watcher.wait();
    out
}

fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1e3)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        v.get(v.len() / 2).copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

fn main() {
    let trials: usize = arg("--trials").and_then(|v| v.parse().ok()).unwrap_or(10);
    let sizes: Vec<usize> = arg("--nodes")
        .unwrap_or_else(|| "1,3".into())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    let mut rows = BTreeMap::new();
    for n in sizes {
        let t = run(n, trials);
        for (i, x) in t.iter().enumerate() {
            eprintln!(
                "{n} node(s), trial {}: created → status {}, status → first ARP {}, \
                 kubectl apply → first ARP {}",
                i + 1,
                ms(x.to_status),
                ms(x.to_arp),
                ms(x.apply_to_arp)
            );
        }
        rows.insert(n, t);
    }
    println!(
        "| lbd nodes | created → status (median / max) | status → first ARP at the client (median / max) | created → first ARP (median / max) | `kubectl apply` started → first ARP (median / max) | trials |"
    );
    println!("|---|---|---|---|---|---|");
    for (n, t) in rows {
        let (a, am) = stats(t.iter().map(|x| x.to_status).collect());
        let (b, bm) = stats(t.iter().map(|x| x.to_arp).collect());
        let (c, cm) = stats(t.iter().map(|x| x.to_status + x.to_arp).collect());
        let (d, dm) = stats(t.iter().map(|x| x.apply_to_arp).collect());
        println!(
            "| {n} | {} / {} | {} / {} | {} / {} | {} / {} | {} |",
            ms(a),
            ms(am),
            ms(b),
            ms(bm),
            ms(c),
            ms(cm),
            ms(d),
            ms(dm),
            t.len()
        );
    }
}
