//! Small helpers shared by the bench examples.

use std::time::{Duration, Instant};

use crate::apiserver::Store;

/// The number after `name` on the command line (`--rounds 100`), else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `d` in milliseconds, one decimal: `12.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A `kB` field (`VmHWM:`, `VmRSS:`) of a `/proc/.../status` file, in KiB; 0 if missing.
pub fn status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) from a `/proc/.../stat` file (a process's or a thread's).
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields 14 (utime) and 15 (stime) of proc(5), counted in clock ticks (100 a second);
    // what follows the command name's ")" starts at field 3.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// Is `name` (`--check`) on the command line?
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

// ---- the kube benches (`bench_kube`, `bench_kube_cluster`): Services in namespace "bench" ----

/// A `type: LoadBalancer` Service named `name` in namespace "bench".
pub fn bench_service(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "bench"},
           // 10,000 node ports do not exist (30000-32767), as on a real cluster.
           "spec": {"type": "LoadBalancer", "selector": {"app": name},
                    "allocateLoadBalancerNodePorts": false,
                    "ports": [{"port": 80}]}})
}

/// The IP in the status of Service `name` (namespace "bench"), if any.
pub fn status_ip(store: &Store, name: &str) -> Option<String> {
    let s = store.get("services", "bench", name)?;
    s["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until every name has an IP in status; the time the last one got it.
pub async fn wait_all(store: &Store, names: &[String], what: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut pending: Vec<&String> = names.iter().collect();
    loop {
        pending.retain(|n| status_ip(store, n).is_none());
        if pending.is_empty() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} still waiting after 15 min",
            pending.len()
        );
        // Not faster: on 2 cores the polling would take CPU from the lbds.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes the server received so far (Events included).
pub fn api_writes(store: &Store) -> usize {
    store
        .requests()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .count()
}

/// Waits until nothing has been written for 2 s; when the last write came.
pub async fn wait_quiet(store: &Store) -> Instant {
    let mut count = api_writes(store);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = api_writes(store);
        if now != count {
            count = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(2) {
            return since;
        }
    }
}
