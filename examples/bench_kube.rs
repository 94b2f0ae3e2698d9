//! Benchmark: lbd (release build, one host, a BGP pool, no peers) against the test API
//! server with a per-write latency (default 3 ms, what a genuine kube-apiserver with etcd
//! took per server-side apply on the development machine).
//!
//! 1. **Burst**: N `type: LoadBalancer` Services created at once while lbd runs: when the
//!    last has an IP in its status (from the first create and from the last), lbd's CPU per
//!    Service, peak and current RSS; a Service created right after the burst (when does it get
//!    its IP, against when the burst's backlog drained); then one Service at a time, M times
//!    (median, p99, max); lbd's CPU while idle with N Services.
//! 2. **Work per update**: the announcements recomputed per watch update (lbd's own
//!    counters, `lb_announcements_recomputed_total` / `lb_kube_updates_total`), for single
//!    Services created among 100 Services and among N. With `--check-work` the program exits 1
//!    when the work per update grows with N (what CI checks, by count, never by time).
//! 3. **Before start**: N Services exist before lbd starts: the first and the last IP after
//!    READY (lbd's sd_notify, read on a socket of ours); then lbd restarts: no IP changes and
//!    no write.
//!
//! Run:  cargo build --release --bin lbd && cargo run --release --example bench_kube
//! (`-- --services N --singles M --write-latency-ms L --writes-in-flight K --check-work
//! --skip-before-start`; K is lbd's `max_writes_in_flight`, default 16)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_testkit::apiserver::{ApiServer, Store, write_kubeconfig};
use lb_testkit::bench::{
    api_writes, arg, bench_service, cpu_seconds, flag, ms, status_ip, status_kib, wait_all,
    wait_quiet,
};
use lb_testkit::lbd::scrape_loopback;

struct Lbd {
    child: Child,
    metrics: SocketAddr,
    notify: Arc<UnixDatagram>,
}

impl Lbd {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }
    fn rss_mib(&self, field: &str) -> u64 {
        status_kib(&format!("/proc/{}/status", self.pid()), field) / 1024
    }
    /// Waits for READY=1 on the notify socket; the time it came. The socket is read on
    /// from then on, as systemd does: lbd's STATUS= and WATCHDOG=1 must not fill it (a full
    /// socket blocks the sender).
    fn wait_ready(&self) -> Instant {
        let mut buf = [0u8; 4096];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("READY=1") => {
                    let sock = self.notify.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        let _ = sock.set_read_timeout(None);
                        while sock.recv(&mut buf).is_ok() {}
                    });
                    return Instant::now();
                }
                Ok(_) => {}
                Err(e) => panic!("no READY from lbd: {e}"),
            }
        }
    }
    /// (watch updates processed, announcements recomputed) so far.
    fn work(&self) -> (f64, f64) {
        let m = scrape_loopback(self.metrics);
        (
            m.get("lb_kube_updates_total").copied().unwrap_or(0.0),
            m.get("lb_announcements_recomputed_total")
                .copied()
                .unwrap_or(0.0),
        )
    }
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_lbd(bin: &Path, dir: &Path, kubeconfig: &Path, run: &str) -> Lbd {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join(format!("lb-{run}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"bench\"\nstate_dir = \"{}\"\n[kubernetes]\nkubeconfig = \"{}\"\n\
             max_writes_in_flight = {}\n[metrics]\nlisten = \"{metrics}\"\n\
             [[pool]]\nname = \"big\"\nprotocol = \"bgp\"\naddresses = [\"10.96.0.0/16\", \"10.97.0.0/16\"]\n\
             [log]\nlevel = \"{}\"\n",
            dir.join("state").display(),
            kubeconfig.display(),
            arg("--writes-in-flight", 16),
            std::env::var("LB_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        ),
    )
    .unwrap();
    let sock = dir.join(format!("notify-{run}.sock"));
    let _ = std::fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock)
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Lbd {
        child,
        metrics,
        notify: Arc::new(notify),
    }
}

async fn wait_one(store: &Store, name: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(600);
    while status_ip(store, name).is_none() {
        assert!(Instant::now() < deadline, "{name}: no IP after 10 min");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Instant::now()
}

/// Creates `count` Services one at a time, each waited for; their latencies.
async fn singles(store: &Store, prefix: &str, count: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i:04}");
        let t = Instant::now();
        store.create("services", bench_service(&name)).unwrap();
        lat.push(wait_one(store, &name).await - t);
    }
    lat
}

fn pct(lat: &[Duration], p: f64) -> Duration {
    let mut l = lat.to_vec();
    l.sort();
    l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
}

/// Work per update for `count` single Services; (updates, recomputed, per update).
async fn work_per_update(lbd: &Lbd, store: &Store, prefix: &str, count: usize) -> (f64, f64, f64) {
    let (u0, w0) = lbd.work();
    singles(store, prefix, count).await;
    // The status echo of the last one is an update too: wait until lbd has counted it.
    let mut last = lbd.work();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = lbd.work();
        if now == last {
            break;
        }
        last = now;
    }
    let (u, w) = (last.0 - u0, last.1 - w0);
    (u, w, if u > 0.0 { w / u } else { 0.0 })
}

#[tokio::main]
async fn main() {
    let n = arg("--services", 10_000);
    let m = arg("--singles", 100);
    let latency = Duration::from_millis(arg("--write-latency-ms", 3) as u64);
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("lbd");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release --bin lbd",
        bin.display()
    );
    println!(
        "bench_kube: {n} Services, {m} singles, {} per write at the test API server, lbd's max_writes_in_flight {}",
        ms(latency),
        arg("--writes-in-flight", 16)
    );
    let mut failed = false;

    // ---- 1 and 2: a burst while lbd runs --------------------------------------------------
    {
        let store = Store::new();
        store.set_write_latency(latency);
        let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(dir.path(), server.addr()).unwrap();
        let lbd = start_lbd(&bin, dir.path(), &kubeconfig, "burst");
        lbd.wait_ready();

        // Work per update among 100 Services.
        let base: Vec<String> = (0..100).map(|i| format!("base-{i:03}")).collect();
        for name in &base {
            store.create("services", bench_service(name)).unwrap();
        }
        wait_all(&store, &base, "100 Services").await;
        let small = work_per_update(&lbd, &store, "small", 20).await;

        let names: Vec<String> = (0..n).map(|i| format!("svc-{i:05}")).collect();
        let cpu0 = lbd.cpu();
        let first_post = Instant::now();
        for name in &names {
            store.create("services", bench_service(name)).unwrap();
        }
        let last_post = Instant::now();
        // One more, right behind the burst.
        store
            .create("services", bench_service("after-burst"))
            .unwrap();
        let after_post = Instant::now();
        let all = wait_all(&store, &names, "burst").await;
        let after = wait_one(&store, "after-burst").await;
        let cpu = lbd.cpu() - cpu0;
        println!(
            "burst: {n} created in {:.2} s; every IP in status {:.2} s after the first create, {:.2} s after the last",
            (last_post - first_post).as_secs_f64(),
            (all - first_post).as_secs_f64(),
            (all - last_post).as_secs_f64(),
        );
        println!(
            "burst: lbd CPU {:.2} s ({:.3} ms per Service), peak RSS {} MiB, RSS now {} MiB",
            cpu,
            cpu * 1000.0 / n as f64,
            lbd.rss_mib("VmHWM:"),
            lbd.rss_mib("VmRSS:")
        );
        let vs_drain = after.checked_duration_since(all).unwrap_or_default();
        println!(
            "after the burst: a Service created right after the last had its IP {} after its create, {} after the backlog drained",
            ms(after - after_post),
            ms(vs_drain)
        );
        let lat = singles(&store, "one", m).await;
        println!(
            "settled: one Service at a time over {m}: median {}, p99 {}, max {}",
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(pct(&lat, 1.0))
        );
        let large = work_per_update(&lbd, &store, "large", 20).await;
        println!(
            "work: {:.2} announcements recomputed per watch update among 100 Services ({} updates), {:.2} among {} ({} updates)",
            small.2,
            small.0,
            large.2,
            n + 100,
            large.0
        );
        if large.2 > small.2 * 1.25 + 0.5 {
            println!("work: FAIL: the work per update grows with the number of Services");
            failed = true;
        }
        // Events go behind status writes: idle is once lbd has stopped writing.
        let quiet_from = wait_quiet(&store).await;
        let cpu0 = lbd.cpu();
        tokio::time::sleep(Duration::from_secs(10)).await;
        println!(
            "idle: lbd CPU {:.2} % of a core over 10 s with {} Services (its Events were all posted {:.1} s after the burst's last create)",
            (lbd.cpu() - cpu0) * 10.0,
            n + m + 141,
            (quiet_from - last_post).as_secs_f64()
        );
        lbd.stop();
        server.stop().await;
    }

    // ---- 3: Services that exist before lbd starts, then a restart -----------------------
    if !flag("--skip-before-start") {
        let store = Store::new();
        store.set_write_latency(latency);
        let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(dir.path(), server.addr()).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("pre-{i:05}")).collect();
        for name in &names {
            store.create("services", bench_service(name)).unwrap();
        }
        let started = Instant::now();
        let lbd = start_lbd(&bin, dir.path(), &kubeconfig, "pre");
        let ready = lbd.wait_ready();
        let first = {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                // The allocator goes in key order: the first IP is among the first names.
                if names
                    .iter()
                    .take(64)
                    .any(|n| status_ip(&store, n).is_some())
                {
                    break Instant::now();
                }
                assert!(Instant::now() < deadline, "no IP at all");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let last = wait_all(&store, &names, "before start").await;
        println!(
            "before start: READY {:.2} s after lbd started; first IP {} after READY, last {:.2} s after READY",
            (ready - started).as_secs_f64(),
            ms(first.checked_duration_since(ready).unwrap_or_default()),
            (last.checked_duration_since(ready).unwrap_or_default()).as_secs_f64()
        );
        let ips: BTreeMap<String, Option<String>> = names
            .iter()
            .map(|n| (n.clone(), status_ip(&store, n)))
            .collect();
        lbd.stop();
        let writes_before = api_writes(&store);
        let lbd = start_lbd(&bin, dir.path(), &kubeconfig, "restart");
        lbd.wait_ready();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let changed = names
            .iter()
            .filter(|n| status_ip(&store, n) != ips[*n])
            .count();
        let written = api_writes(&store) - writes_before;
        println!("restart: {changed} IPs changed, {written} writes to the API server");
        if changed > 0 || written > 0 {
            failed = true;
        }
        lbd.stop();
        server.stop().await;
    }
    if failed && flag("--check-work") {
        std::process::exit(1);
    }
}
