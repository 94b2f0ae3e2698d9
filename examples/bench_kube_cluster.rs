//! Benchmark (issue 14, "many Services too"): N `type: LoadBalancer` Services (default
//! 10,000) on a cluster of H lbd hosts (default 5, every one a raft-lite voter) announcing a
//! layer-2 pool, against the test API server with a per-write latency (default 3 ms, as
//! `bench_kube`). Each lbd runs in a network namespace of its own on one lab LAN; the API
//! server runs in this process, its socket in a control-plane namespace of the lab (so the
//! Services are created and read in-process, as in `bench_kube`).
//!
//! Prints, per host: lbd's peak RSS (VmHWM), its CPU while idle once settled (utime + stime
//! over `--idle-secs`, default 30, in % of one core), the largest raft-lite datagram it sent
//! (`lb_cluster_largest_datagram_bytes`) and the messages it sent in fragments; and the time
//! from the last create until every Service has its IP in status. Goals (issue 14): RSS ≤ 64
//! MiB per host, every IP in status ≤ 10 s after the last create, idle CPU ≤ 1 % per host, no
//! datagram over 60,000 bytes. `--check` exits 1 when a goal is missed.
//!
//! `LB_BENCH_LOG=info` sets lbd's log level (default warn); `LB_BENCH_KEEP_LOGS=DIR` keeps
//! each lbd's log there.
//!
//! Run (root: network namespaces):
//!   cargo build --release --bin lbd && cargo run --release --example bench_kube_cluster
//!   (`-- --services N --hosts H --write-latency-ms L --idle-secs S --announce-wait-secs W
//!   --check`; W bounds the wait for every layer-2 IP to be announced, default 300)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_testkit::apiserver::{ApiServer, Store, write_kubeconfig};
use lb_testkit::bench::{arg, bench_service, cpu_seconds, flag, status_kib, wait_all, wait_quiet};
use lb_testkit::lab::{Host, Lab, Proc};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};
use serde_json::json;

const API: &str = "10.10.0.2";
const POOL: &str = "10.10.128.0/17";
const RAFT_PORT: u16 = 7946;
const METRICS_PORT: u16 = 9100;

fn node_ip(i: usize) -> String {
    format!("10.10.0.{}", i + 3)
}

/// One ready endpoint on `node` (what the endpoints controller writes for a Service's pod):
/// a layer-2 IP is announced only while its Service has a ready endpoint.
fn endpoints(name: &str, node: usize) -> serde_json::Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{name}-bench"), "namespace": "bench",
                        "labels": {"kubernetes.io/service-name": name,
                                   "endpointslice.kubernetes.io/managed-by": "bench"}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": [format!("10.20.{}.{}", node / 250, node % 250 + 1)],
                          "nodeName": format!("node{}", node + 1),
                          "conditions": {"ready": true}}],
           "ports": [{"name": "", "port": 80, "protocol": "TCP"}]})
}

fn config(i: usize, hosts: usize, state: &str, kubeconfig: &str, key: &str) -> String {
    let members: Vec<String> = (0..hosts)
        .map(|k| format!("node{} = \"{}:{RAFT_PORT}\"", k + 1, node_ip(k)))
        .collect();
    format!(
        r#"[node]
name = "node{n}"
state_dir = "{state}"

[kubernetes]
kubeconfig = "{kubeconfig}"
max_writes_in_flight = 16

[metrics]
listen = "{ip}:{METRICS_PORT}"

[cluster]
members = {{ {members} }}
secret_file = "{key}"

[[pool]]
name = "big"
protocol = "layer2"
addresses = ["{POOL}"]

[log]
level = "{level}"
"#,
        n = i + 1,
        ip = node_ip(i),
        members = members.join(", "),
        level = std::env::var("LB_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    )
}

/// Starts the test API server with its listening socket in `host`'s namespace (a thread
/// of ours enters it to bind; the server runs on this runtime).
fn start_api_server(host: &Host, store: Arc<Store>) -> lb_testkit::apiserver::Handle {
    let ns = host.ns().to_owned();
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        lb::sys::netns::enter(&ns).expect("enter the API server's namespace");
        let _guard = rt.enter();
        ApiServer::start(format!("{API}:6443").parse().expect("addr"), store)
    })
    .join()
    .expect("API server thread")
    .expect("API server starts")
}

struct Node {
    host: Host,
    lbd: Proc,
}

impl Node {
    fn pid(&self) -> u32 {
        self.lbd.pid()
    }
    fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }
    fn rss_mib(&self, field: &str) -> f64 {
        status_kib(&format!("/proc/{}/status", self.pid()), field) as f64 / 1024.0
    }
    fn metrics(&self, i: usize) -> BTreeMap<String, f64> {
        scrape_metrics(&self.host, &format!("{}:{METRICS_PORT}", node_ip(i)))
    }
}

#[tokio::main]
async fn main() {
    let n = arg("--services", 10_000);
    let hosts = arg("--hosts", 5);
    let idle_secs = arg("--idle-secs", 30) as u64;
    let latency = Duration::from_millis(arg("--write-latency-ms", 3) as u64);
    let bin = lbd_binary();
    println!(
        "bench_kube_cluster: {n} Services, {hosts} lbd hosts (raft-lite voters, layer-2 pool {POOL}), {} ms per write at the test API server; lbd {}",
        latency.as_millis(),
        bin.display()
    );

    let lab = Lab::new("kubecluster");
    let cp = lab.host("cp", &[&format!("{API}/16")]);
    let hosts_v: Vec<Host> = (0..hosts)
        .map(|i| lab.node(&format!("node{}", i + 1), &[&format!("{}/16", node_ip(i))]))
        .collect();
    let store = Store::new();
    store.set_write_latency(latency);
    let server = start_api_server(&cp, store.clone());
    let kubeconfig = write_kubeconfig(lab.dir(), server.addr()).expect("kubeconfig");
    for i in 0..hosts {
        let name = format!("node{}", i + 1);
        store
            .create(
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                       "status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)}],
                                  "conditions": [{"type": "Ready", "status": "True"}]}}),
            )
            .expect("node");
    }
    let mut nodes = Vec::new();
    for (i, host) in hosts_v.into_iter().enumerate() {
        let key = host
            .write_file("cluster.key", "bench-kube-cluster-secret-0123456789\n")
            .expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("0600");
        let state = host.owned_dir("state", "root:root").expect("state dir");
        let cfg = host
            .write_file(
                "lb.toml",
                &config(
                    i,
                    hosts,
                    &state.display().to_string(),
                    &kubeconfig.display().to_string(),
                    &key.display().to_string(),
                ),
            )
            .expect("lb.toml");
        let lbd = host
            .spawn_labeled(
                "lbd",
                &[
                    "env",
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                    bin.to_str().expect("utf-8"),
                    "--config",
                    cfg.to_str().expect("utf-8"),
                ],
            )
            .expect("lbd starts");
        nodes.push(Node { host, lbd });
    }
    // A leader, known by its metric.
    let started = Instant::now();
    loop {
        let leaders: f64 = nodes
            .iter()
            .enumerate()
            .map(|(i, nd)| {
                nd.metrics(i)
                    .get("lb_cluster_is_leader")
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum();
        if leaders == 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no raft-lite leader after 60 s; logs:\n{}",
            nodes
                .iter()
                .map(|nd| nd.lbd.log())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "cluster: a leader {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    let names: Vec<String> = (0..n).map(|i| format!("svc-{i:05}")).collect();
    // The endpoints first (as if the pods were running), then the Services in one burst.
    for (i, name) in names.iter().enumerate() {
        store
            .create("endpointslices", endpoints(name, i % hosts))
            .expect("endpoints");
    }
    let cpu0: Vec<f64> = nodes.iter().map(Node::cpu).collect();
    let first_post = Instant::now();
    for name in &names {
        store
            .create("services", bench_service(name))
            .expect("create");
    }
    let last_post = Instant::now();
    let all = wait_all(&store, &names, "burst").await;
    let in_status = all - last_post;
    println!(
        "burst: {n} created in {:.2} s; every IP in status {:.2} s after the first create, {:.2} s after the last",
        (last_post - first_post).as_secs_f64(),
        (all - first_post).as_secs_f64(),
        in_status.as_secs_f64()
    );
    // Every layer-2 IP answered for by one host (the hosts' own gauges, summed).
    let announced_by = |nodes: &[Node]| -> f64 {
        nodes
            .iter()
            .enumerate()
            .map(|(i, nd)| {
                nd.metrics(i)
                    .get("lb_announced_ips{protocol=\"layer2\"}")
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(arg("--announce-wait-secs", 300) as u64);
    let mut announced = announced_by(&nodes);
    while announced < n as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        announced = announced_by(&nodes);
    }
    println!(
        "layer 2: {announced} IPs announced (summed over the hosts) {:.1} s after the last create (polled each second)",
        last_post.elapsed().as_secs_f64()
    );
    for (i, nd) in nodes.iter().enumerate() {
        println!("burst: node{} CPU {:.2} s", i + 1, nd.cpu() - cpu0[i]);
    }
    // Settled: no writes for 2 s, and every IP owned by one host (the leader's view).
    let quiet = wait_quiet(&store).await;
    println!(
        "settled: the last write {:.1} s after the last create",
        (quiet - last_post).as_secs_f64()
    );
    let cpu1: Vec<f64> = nodes.iter().map(Node::cpu).collect();
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let span = t1.elapsed().as_secs_f64();
    let mut failed = Vec::new();
    if in_status > Duration::from_secs(10) {
        failed.push(format!("in status {:.1} s > 10 s", in_status.as_secs_f64()));
    }
    let mut largest_all = 0.0f64;
    for (i, nd) in nodes.iter().enumerate() {
        let idle = (nd.cpu() - cpu1[i]) / span * 100.0;
        let m = nd.metrics(i);
        let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let dropped: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("lb_cluster_datagrams_dropped_total"))
            .map(|(_, v)| v)
            .sum();
        let peak = nd.rss_mib("VmHWM:");
        let largest = g("lb_cluster_largest_datagram_bytes");
        largest_all = largest_all.max(largest);
        println!(
            "node{}: peak RSS {:.1} MiB (now {:.1}), idle CPU {:.2} % of a core over {:.0} s, leader {}, largest datagram sent {} bytes, {} messages sent in fragments, {} datagrams dropped, {} IPs announced",
            i + 1,
            peak,
            nd.rss_mib("VmRSS:"),
            idle,
            span,
            g("lb_cluster_is_leader"),
            largest,
            g("lb_cluster_fragmented_messages_total"),
            dropped,
            g("lb_announced_ips{protocol=\"layer2\"}"),
        );
        if peak > 64.0 {
            failed.push(format!("node{} RSS {peak:.1} MiB > 64", i + 1));
        }
        if idle > 1.0 {
            failed.push(format!("node{} idle CPU {idle:.2} % > 1 %", i + 1));
        }
        if largest > 60_000.0 {
            failed.push(format!("node{} datagram {largest} > 60000", i + 1));
        }
    }
    println!("largest cluster datagram: {largest_all} bytes (limit 60000)");
    if failed.is_empty() {
        println!("goals: all met");
    } else {
        println!("goals missed: {}", failed.join("; "));
    }
    if let Ok(dir) = std::env::var("LB_BENCH_KEEP_LOGS") {
        std::fs::create_dir_all(&dir).expect("log dir");
        for (i, nd) in nodes.iter().enumerate() {
            let path = format!("{dir}/node{}.log", i + 1);
            std::fs::write(&path, nd.lbd.log()).expect("write log");
        }
        println!("lbd logs in {dir}");
    }
    drop(nodes);
    server.stop().await;
    drop(lab);
    if !failed.is_empty() && flag("--check") {
        std::process::exit(1);
    }
}
