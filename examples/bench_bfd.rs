//! BFD benchmark in the namespace lab (root): node link down → route gone at the router,
//! without BFD (BGP hold timer 9 s) and with BFD 300 ms × 3. Prints numbers; see
//! docs/bench/bfd.md.
//!
//! `cargo run --release --example bench_bfd [-- --trials 5]`
//!
//! The speaker (with its BFD task) runs in this process on a thread moved into the node's
//! namespace, as in bench_bgp. FRR (zebra + bgpd, + bfdd with profile 300 ms / 300 ms / 3 for
//! the BFD run) is the router; `ip monitor route` in the router's namespace timestamps the
//! kernel route's deletion. Each trial: route in the FIB (and BFD Up), `ip link set down`
//! on the node's veth, time until the route is deleted, link up, wait for recovery.

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
use lb::config::{BfdConfig, BgpPeer};
use lb::model::{IpRange, Pool, PoolProtocol};
use support::lab::peers::{Frr, FrrConfig, kernel_nexthops};
use support::lab::{Host, Lab, wait_until};

const ROUTER: &str = "10.10.100.1";
const NODE: &str = "10.10.100.3";
const VIP: &str = "172.16.0.1";

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
                IpAddr::V4(Ipv4Addr::new(172, 16, 0, 255)),
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

fn peer(bfd: Option<BfdConfig>) -> BgpPeer {
    BgpPeer {
        my_asn: 64500,
        peer_asn: 64500,
        address: IpAddr::V4(Ipv4Addr::new(10, 10, 100, 1)),
        port: 179,
        hold_time: Duration::from_secs(9),
        keepalive_time: Duration::from_secs(3),
        router_id: None,
        source_address: None,
        password_file: None,
        ebgp_multihop: 1,
        passive: false,
        connect_delay: Duration::ZERO,
        node_selectors: vec![],
        bfd,
    }
}

/// The speaker on its own thread inside `ns`, announcing VIP.
fn start_speaker(ns: &str, bfd: Option<BfdConfig>) -> SpeakerHandle {
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
        rt.block_on(async move {
            let node = LocalNode {
                name: "node1".into(),
                labels: BTreeMap::new(),
                eligible: true,
            };
            let h = Speaker::spawn(
                node,
                vec![peer(bfd)],
                vec![pool()],
                SpeakerOptions::default(),
            );
            h.set_announcements(vec![AnnouncedIp {
                ip: VIP.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                pool: "bench".into(),
                local_only: false,
                endpoints: BTreeMap::from([("node1".to_string(), 1)]),
                always_ready: false,
            }]);
            let _ = tx.send(h.clone());
            while !h.is_closed() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    rx.recv().expect("speaker thread started")
}

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

fn wait_deleted(rx: &std_mpsc::Receiver<(Instant, String)>, timeout: Duration) -> Option<Instant> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let (t, line) = rx.recv_timeout(left).ok()?;
        if line.starts_with("Deleted") && line.contains(VIP) {
            return Some(t);
        }
    }
}

fn run(bfd: bool, trials: usize) -> Vec<Duration> {
    let lab = Lab::new(if bfd { "bfdbench" } else { "bfdbnone" });
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    let mut cfg = FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500);
    if bfd {
        cfg.bfd = Some((300, 300, 3));
    }
    let frr = Frr::start(&router, &cfg).expect("FRR");
    let mon = monitor(&router);
    let h = start_speaker(
        node.ns(),
        bfd.then(|| BfdConfig {
            receive_interval: Duration::from_millis(300),
            transmit_interval: Duration::from_millis(300),
            detect_multiplier: 3,
        }),
    );
    let mut took = Vec::new();
    for r in 0..trials {
        wait_until(Duration::from_secs(60), "route in FRR's FIB", || {
            kernel_nexthops(&router, &format!("{VIP}/32"))
                .map(|n| !n.is_empty())
                .unwrap_or(false)
        });
        if bfd {
            wait_until(Duration::from_secs(30), "BFD Up at FRR", || {
                frr.bfd_peer(NODE)
                    .is_some_and(|p| p["status"].as_str() == Some("up"))
            });
        }
        while mon.try_recv().is_ok() {}
        let t0 = Instant::now();
        node.link_down().expect("link down");
        match wait_deleted(&mon, Duration::from_secs(30)) {
            Some(t) => took.push(t - t0),
            None => eprintln!("trial {r}: route never left the FIB"),
        }
        node.link_up().expect("link up");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(h.shutdown("bench done", Duration::from_secs(2)));
    drop(frr);
    drop(lab);
    took.sort();
    took
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let trials = arg("--trials", 5);
    for bfd in [true, false] {
        let t = run(bfd, trials);
        let what = if bfd {
            "BFD 300 ms x 3"
        } else {
            "no BFD, hold 9 s"
        };
        if t.is_empty() {
            println!("link down -> route gone from FRR's FIB ({what}): no successful trial");
            continue;
        }
        println!(
            "link down -> route gone from FRR's FIB ({what}): n={} min {} median {} max {}",
            t.len(),
            ms(t[0]),
            ms(t[t.len() / 2]),
            ms(t[t.len() - 1])
        );
    }
}
