//! The BGP bench lab shared by bench_bgp and bench_bfd: FRR on the router 10.10.100.1, this process's
//! speaker on a thread moved into the node's namespace (10.10.100.3), and `ip monitor
//! route` in the router's namespace to timestamp kernel route changes.

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

use crate::lab::Host;

pub const ROUTER: &str = "10.10.100.1";
pub const NODE: &str = "10.10.100.3";

/// The `i`-th bench IP: 172.16.0.1 + i.
pub fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i))
}

/// Announcements of the bench IPs `range`, each with a ready endpoint on node1.
pub fn announced(range: std::ops::Range<u32>) -> Vec<AnnouncedIp> {
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

/// The BGP pool the bench IPs come from: 172.16.0.0 - 172.31.255.255.
pub fn pool() -> Pool {
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
        service_allocation: Default::default(),
    }
}

/// The router as an iBGP peer (AS 64500): hold time `hold` s, keepalives every third.
pub fn peer(hold: u64, bfd: Option<BfdConfig>) -> BgpPeer {
    let router = ROUTER.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    BgpPeer {
        hold_time: Duration::from_secs(hold),
        keepalive_time: Duration::from_secs(hold / 3),
        bfd,
        ..BgpPeer::new(64500, 64500, router)
    }
}

/// The speaker (node1, peering with `peer`) on its own thread inside `ns`, with a
/// current-thread tokio runtime so its CPU time is that thread's; returns its handle and
/// the thread's id. The thread ends when the speaker has been shut down.
pub fn start_speaker(ns: &str, peer: BgpPeer) -> (SpeakerHandle, u32) {
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
            let h = Speaker::spawn(node, vec![peer], vec![pool()], SpeakerOptions::default());
            let _ = tx.send((h.clone(), tid));
            while !h.is_closed() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    rx.recv().expect("speaker thread started")
}

/// `ip monitor route` in the router's namespace: (arrival time, line).
pub fn monitor(router: &Host) -> std_mpsc::Receiver<(Instant, String)> {
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

/// Wait for a route line about `prefix` (`deleted`: a "Deleted" line); its arrival time.
pub fn wait_route(
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

/// Forget the route lines seen so far.
pub fn drain(rx: &std_mpsc::Receiver<(Instant, String)>) {
    while rx.try_recv().is_ok() {}
}
