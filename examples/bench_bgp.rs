//! BGP speaker benchmarks in the namespace lab (root). Prints numbers; see docs/bench/bgp.md.
//!
//! `cargo run --release --example bench_bgp [-- --rounds 100 --scale 10000 --link-rounds 3]`
//!
//! The speaker runs in this process, on a thread moved into the node's namespace with a
//! current-thread tokio runtime, so its CPU time is that thread's. FRR (zebra + bgpd) is the
//! router; `ip monitor route` in the router's namespace timestamps kernel route changes.
//!
//! 1. announce → route in FRR's kernel FIB: one more IP per round (median, p99).
//! 2. N prefixes → all in FRR's BGP RIB: time, speaker CPU seconds, peak RSS of this process.
//! 3. graceful shutdown (withdraw + Cease, what SIGTERM does) → route gone from the FIB.
//! 4. node link down → route gone from the FIB (FRR timers 3 s / 9 s, no BFD).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use lb::bgp::advertise::{AnnouncedIp, LocalNode};
use lb::bgp::speaker::{Speaker, SpeakerHandle, SpeakerOptions};
use lb::config::BgpPeer;
use lb::model::{IpRange, Pool, PoolProtocol};
use support::lab::peers::{Frr, FrrConfig};
use support::lab::{Host, Lab, wait_until};

const ROUTER: &str = "10.10.100.1";
const NODE: &str = "10.10.100.3";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pool() -> Pool {
    Pool {
        name: "bench".into(),
        protocol: PoolProtocol::Bgp,
        ranges: vec![
            IpRange::new(
                IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)),
                IpAddr::V4(Ipv4Addr::new(172, 31, 255, 255)),
            )
            .unwrap_or_else(|| unreachable!()),
        ],
        auto_assign: true,
        avoid_buggy_ips: false,
        interfaces: vec![],
        node_selectors: vec![],
        bgp_advertisements: vec![],
    }
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i))
}

fn announced(range: std::ops::Range<u32>) -> Vec<AnnouncedIp> {
    range
        .map(|i| AnnouncedIp {
            ip: ip(i),
            pool: "bench".into(),
            local_only: false,
            endpoints: BTreeMap::from([("node1".to_string(), 1)]),
            always_ready: false,
        })
        .collect()
}

fn peer(hold: u64) -> BgpPeer {
    BgpPeer {
        my_asn: 64500,
        peer_asn: 64500,
        address: ROUTER.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port: 179,
        hold_time: Duration::from_secs(hold),
        keepalive_time: Duration::from_secs(hold / 3),
        router_id: None,
        source_address: None,
        password_file: None,
        ebgp_multihop: 1,
        passive: false,
        connect_delay: Duration::ZERO,
        node_selectors: vec![],
        bfd: None,
    }
}

/// The speaker on its own thread inside `ns`; returns its handle and the thread's id.
fn start_speaker(ns: &str, hold: u64) -> (SpeakerHandle, u32) {
    let (tx, rx) = std_mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        if let Err(e) = lb::sys::netns::enter(&ns) {
            panic!("{e}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let tid: u32 = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .unwrap_or(0);
        rt.block_on(async move {
            let node = LocalNode {
                name: "node1".into(),
                labels: BTreeMap::new(),
                eligible: true,
            };
            let h = Speaker::spawn(
                node,
                vec![peer(hold)],
                vec![pool()],
                SpeakerOptions::default(),
            );
            let _ = tx.send((h.clone(), tid));
            // Run until the speaker has been shut down.
            while !h.is_closed() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    rx.recv().expect("speaker thread started")
}

/// CPU seconds (user + system) of thread `tid` of this process.
fn thread_cpu(tid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `ip monitor route` in the router's namespace: (arrival time, line).
fn monitor(router: &Host) -> std_mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = std_mpsc::channel();
    let mut child = Command::new("ip")
        .args(["-n", router.ns(), "monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip monitor");
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    });
    rx
}

/// Wait for a route line about `prefix` (`deleted`: a "Deleted" line).
fn wait_route(
    rx: &std_mpsc::Receiver<(Instant, String)>,
    prefix: &str,
    deleted: bool,
    timeout: Duration,
) -> Option<Instant> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let (t, line) = rx.recv_timeout(left).ok()?;
        let is_del = line.starts_with("Deleted");
        if line.contains(prefix) && is_del == deleted {
            return Some(t);
        }
    }
}

fn drain(rx: &std_mpsc::Receiver<(Instant, String)>) {
    while rx.try_recv().is_ok() {}
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn frr_prefixes(frr: &Frr) -> u64 {
    frr.bgp_summary_json()
        .ok()
        .and_then(|v| v["ipv4Unicast"]["peers"][NODE]["pfxRcd"].as_u64())
        .unwrap_or(0)
}

fn main() {
    let rounds = arg("--rounds", 100) as u32;
    let scale = arg("--scale", 10_000) as u32;
    let link_rounds = arg("--link-rounds", 3);
    let lab = Lab::new("bgpbench");
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    let frr = Frr::start(
        &router,
        &FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500),
    )
    .expect("FRR");
    let mon = monitor(&router);

    // 1. announce → FIB latency.
    let (h, tid) = start_speaker(node.ns(), 9);
    wait_until(Duration::from_secs(20), "session up", || {
        frr.neighbor_state(NODE).as_deref() == Some("Established")
    });
    let mut lat = Vec::new();
    for i in 0..rounds {
        drain(&mon);
        let t0 = Instant::now();
        h.set_announcements(announced(0..i + 1));
        let p = format!("{}", ip(i));
        match wait_route(&mon, &p, false, Duration::from_secs(10)) {
            Some(t) => lat.push(t - t0),
            None => eprintln!("round {i}: {p} never reached the FIB"),
        }
    }
    lat.sort();
    println!(
        "announce -> FRR kernel FIB: n={} median {} p99 {} max {}",
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(lat[lat.len() - 1])
    );

    // 2. scale.
    let cpu0 = thread_cpu(tid);
    let t0 = Instant::now();
    h.set_announcements(announced(0..scale));
    wait_until(
        Duration::from_secs(300),
        "all prefixes in FRR's RIB",
        || frr_prefixes(&frr) >= u64::from(scale),
    );
    let took = t0.elapsed();
    println!(
        "{scale} prefixes -> FRR RIB: {} ; speaker CPU {:.2} s ; peak RSS of the bench process {} MiB",
        ms(took),
        thread_cpu(tid) - cpu0,
        peak_rss_kib() / 1024
    );
    // Back to one prefix for the shutdown rounds.
    h.set_announcements(announced(0..1));
    wait_until(Duration::from_secs(120), "RIB shrinks", || {
        frr_prefixes(&frr) == 1
    });

    // 3. graceful shutdown → route gone.
    let mut gone = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let p0 = format!("{}", ip(0));
    let mut handle = h;
    for r in 0..5 {
        if r > 0 {
            let (h2, _) = start_speaker(node.ns(), 9);
            drain(&mon);
            h2.set_announcements(announced(0..1));
            wait_route(&mon, &p0, false, Duration::from_secs(20)).expect("route back");
            handle = h2;
        }
        drain(&mon);
        let t0 = Instant::now();
        let _ = rt.block_on(handle.shutdown("bench", Duration::from_secs(5)));
        match wait_route(&mon, &p0, true, Duration::from_secs(20)) {
            Some(t) => gone.push(t - t0),
            None => eprintln!("shutdown round {r}: route never left the FIB"),
        }
    }
    gone.sort();
    println!(
        "shutdown (withdraw + Cease) -> route gone from FIB: n={} median {} max {}",
        gone.len(),
        ms(pct(&gone, 0.5)),
        ms(gone[gone.len() - 1])
    );

    // 4. link down → route gone (hold 9 s at FRR, 3 s keepalives).
    let (h, _) = start_speaker(node.ns(), 9);
    h.set_announcements(announced(0..1));
    let mut down = Vec::new();
    for r in 0..link_rounds {
        wait_until(Duration::from_secs(30), "route in FIB", || {
            support::lab::peers::kernel_nexthops(&router, &p0)
                .map(|n| !n.is_empty())
                .unwrap_or(false)
        });
        drain(&mon);
        let t0 = Instant::now();
        node.link_down().expect("link down");
        match wait_route(&mon, &p0, true, Duration::from_secs(30)) {
            Some(t) => down.push(t - t0),
            None => eprintln!("link round {r}: route never left the FIB"),
        }
        node.link_up().expect("link up");
    }
    down.sort();
    if !down.is_empty() {
        println!(
            "link down -> route gone from FIB (hold 9 s): n={} median {} max {}",
            down.len(),
            ms(pct(&down, 0.5)),
            ms(down[down.len() - 1])
        );
    }
    let _ = rt.block_on(h.shutdown("bench done", Duration::from_secs(2)));
    drop(frr);
    drop(lab);
}
