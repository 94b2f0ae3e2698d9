//! Allocator benchmark: prints wall times and peak memory; asserts nothing.
//!
//!     cargo run --release --example bench_alloc [-- <services>]
//!
//! Scenarios (each on a fresh `Allocator` with one /16 pool):
//! - plain: N Services without sharing;
//! - shared: N Services in groups of 2, 3, 4 (cycling), each group with its own sharing key
//!   and different ports, so a group lands on one IP.
//!
//! For each: N incremental `update`s of new Services (and the RSS they add), N no-op
//! `update`s of allocated ones, N `release` + re-`update` pairs (churn), then on fresh
//! allocators `sync` of all N with empty status (first start) and with the status written
//! back (restart). Each scenario runs in its own
//! process (the binary re-runs itself) so that its peak RSS (VmHWM) is its own.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lb::alloc::{Allocator, Change};
use lb::model::{IpRange, Pool, PoolProtocol, Protocol, Service, ServiceKey, ServicePort};

fn pool() -> Pool {
    Pool {
        name: "bench".into(),
        protocol: PoolProtocol::Layer2,
        ranges: vec![
            IpRange::new(IpAddr::from([10, 1, 0, 0]), IpAddr::from([10, 1, 255, 255]))
                .expect("range"),
        ],
        auto_assign: true,
        avoid_buggy_ips: true,
        interfaces: Vec::new(),
        node_selectors: Vec::new(),
        bgp_advertisements: Vec::new(),
        service_allocation: Default::default(),
    }
}

fn plain(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| Service {
            key: ServiceKey::new(format!("ns{}", i % 50), format!("svc-{i:05}")),
            ports: vec![ServicePort {
                protocol: Protocol::Tcp,
                port: 80,
            }],
            ..Service::default()
        })
        .collect()
}

/// Groups of 2, 3, 4 Services (cycling) sharing one key, on ports 8000, 8001, ...
fn shared(n: usize) -> Vec<Service> {
    let mut out = Vec::with_capacity(n);
    let mut group = 0;
    while out.len() < n {
        let size = 2 + group % 3;
        for member in 0..size {
            if out.len() == n {
                break;
            }
            out.push(Service {
                key: ServiceKey::new(
                    format!("ns{}", group % 50),
                    format!("grp-{group:05}-{member}"),
                ),
                ports: vec![ServicePort {
                    protocol: Protocol::Tcp,
                    port: 8000 + member as u16,
                }],
                sharing_key: Some(format!("share-{group}")),
                ..Service::default()
            });
        }
        group += 1;
    }
    out
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

fn vm_rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn report(label: &str, n: usize, d: Duration) {
    println!(
        "  {label:<34} {:>9.2} ms  {:>7.2} µs/service",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e6 / n as f64
    );
}

fn written_back(a: &Allocator, services: &[Service]) -> Vec<Service> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.current_ips = a
                .assignment(&s.key)
                .map(|x| x.ips.clone())
                .unwrap_or_default();
            s
        })
        .collect()
}

fn scenario(name: &str, services: &[Service]) {
    let base = vm_hwm_kib().unwrap_or(0);
    let n = services.len();
    println!("{name}: {n} services, pool 10.1.0.0/16 (avoid_buggy_ips)");

    // Incremental first, in a fresh process: the RSS growth is the allocator's footprint.
    let rss_before = vm_rss_kib().unwrap_or(0);
    let mut inc = Allocator::new(vec![pool()], None);
    let (_, d) = time(|| {
        for s in services {
            inc.update(s);
        }
    });
    report("update x N, new services", n, d);
    let grown = vm_rss_kib().unwrap_or(0).saturating_sub(rss_before);
    println!(
        "    -> RSS grew {grown} KiB while the allocator took them ({} B/service)",
        grown * 1024 / n.max(1) as u64
    );
    let stats = inc.pool_stats()[0].clone();
    println!(
        "    -> {} distinct IPs for {} services",
        stats.used, stats.services
    );
    assert_eq!(stats.services, n, "every service fits");

    let back = written_back(&inc, services);
    let (_, d) = time(|| {
        for s in &back {
            inc.update(s);
        }
    });
    report("update x N, already allocated", n, d);

    let (_, d) = time(|| {
        for s in services {
            inc.release(&s.key);
            inc.update(s);
        }
    });
    report("release + update x N (churn)", n, d);
    drop(inc);

    let mut a = Allocator::new(vec![pool()], None);
    let (out, d) = time(|| a.sync(services));
    report("sync, empty status", n, d);
    assert!(
        out.iter()
            .all(|o| matches!(o.change, Change::Allocated { .. }))
    );
    // Same packing as the updates (the order differs: sync goes in key order).
    assert_eq!(a.pool_stats()[0], stats);
    drop((a, out));

    let mut restarted = Allocator::new(vec![pool()], None);
    let (out, d) = time(|| restarted.sync(&back));
    report("sync, status written back", n, d);
    assert!(out.iter().all(|o| o.change == Change::Unchanged));

    let hwm = vm_hwm_kib().unwrap_or(0);
    println!("  peak RSS (VmHWM) {hwm} KiB (with the input built: {base} KiB)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    match args.get(2).map(String::as_str) {
        Some("plain") => scenario("plain", &plain(n)),
        Some("shared") => scenario("shared (groups of 2-4)", &shared(n)),
        _ => {
            for which in ["plain", "shared"] {
                let me = std::env::current_exe().expect("own path");
                let status = std::process::Command::new(me)
                    .args([n.to_string(), which.to_string()])
                    .status()
                    .expect("run scenario");
                assert!(status.success(), "scenario {which} failed");
            }
        }
    }
}
