//! Benchmark: lbd against the test API server.
//!
//! 1. 10,000 `type: LoadBalancer` Services created at once: time until every one has an IP
//!    in its status, lbd's peak RSS and CPU seconds.
//! 2. One Service at a time, 100 times: creation → IP in status, median and p99.
//!
//! Run:  cargo build --release --bin lbd && cargo run --release --example bench_kube
//! (`-- --services N --singles M` to change the sizes.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::apiserver::{ApiServer, Store, write_kubeconfig};
use lb_testkit::bench::{arg, cpu_seconds, ms, status_kib};
use serde_json::json;

fn service(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "bench"},
           // 10,000 node ports do not exist (30000-32767), as on a real cluster.
           "spec": {"type": "LoadBalancer", "selector": {"app": name},
                    "allocateLoadBalancerNodePorts": false,
                    "ports": [{"port": 80}]}})
}

fn has_ip(store: &Store, name: &str) -> bool {
    store
        .get("services", "bench", name)
        .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
}

#[tokio::main]
async fn main() {
    let n = arg("--services", 10_000);
    let singles = arg("--singles", 100);
    let lbd_bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("lbd");
    assert!(
        lbd_bin.exists(),
        "{} missing: cargo build --release --bin lbd",
        lbd_bin.display()
    );

    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), server.addr()).unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"bench\"\nstate_dir = \"{}\"\n[kubernetes]\nkubeconfig = \"{}\"\n\
             [[pool]]\nname = \"big\"\nprotocol = \"bgp\"\naddresses = [\"10.96.0.0/16\", \"10.97.0.0/16\"]\n\
             [log]\nlevel = \"warn\"\n",
            dir.path().join("state").display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let mut lbd = Command::new(&lbd_bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = lbd.id();
    // lbd has listed once its watch requests arrive.
    store
        .wait_for_request(|r| r.path().ends_with("/services") && r.is_watch())
        .await;

    // 1. Bulk.
    let start = Instant::now();
    for i in 0..n {
        store
            .create("services", service(&format!("svc-{i:05}")))
            .unwrap();
    }
    let created = start.elapsed();
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        pending.retain(|i| !has_ip(&store, &format!("svc-{i:05}")));
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bulk run took over 10 min"
        );
    }
    let all = start.elapsed();
    println!(
        "bulk: {n} services created in {:.2} s (test API server); all had an IP after {:.2} s",
        created.as_secs_f64(),
        all.as_secs_f64()
    );
    println!(
        "bulk: lbd peak RSS {} MiB, current RSS {} MiB, CPU {:.2} s",
        status_kib(&format!("/proc/{pid}/status"), "VmHWM:") / 1024,
        status_kib(&format!("/proc/{pid}/status"), "VmRSS:") / 1024,
        cpu_seconds(&format!("/proc/{pid}/stat"))
    );

    // 2. One at a time.
    let mut lat = Vec::with_capacity(singles);
    for i in 0..singles {
        let name = format!("one-{i:03}");
        let t = Instant::now();
        store.create("services", service(&name)).unwrap();
        while !has_ip(&store, &name) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "single: creation -> IP in status over {singles}: median {}, p99 {}, max {}",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(lat[lat.len() - 1])
    );
    let _ = lbd.kill();
    let _ = lbd.wait();
    server.stop().await;
}
