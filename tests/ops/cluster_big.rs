//! raft-lite with many IPs per host over real UDP on 127.0.0.1 (issue 14): 30,000 IPs (half
//! IPv4, half IPv6), every one eligible on each of three hosts. A report of them is ~330 kB,
//! a heartbeat, renewal or grant of one host's share ~100 kB: far over the 60,000-byte
//! datagram limit, so they travel in fragments (`lb_core::cluster::fragment`). Every
//! published view is checked for safety (never two hosts owning one IP at one instant).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb::cluster::driver::{
    self, ClusterDriver, ClusterHandle, ClusterSettings, ClusterView, DEFAULT_SHUTDOWN_TIMEOUT,
};
use lb::cluster::transport::TransportStats;
use lb::cluster::wire::{DropReason, MAX_DATAGRAM};
use lb::cluster::{Role, Timing};
use tokio::sync::watch;

const KEY: &[u8] = b"test cluster key, 32 bytes long!";
/// Generous: the debug build recomputes a 30,000-IP map on a machine shared with builds.
const WAIT: Duration = Duration::from_secs(120);
const NAMES: [&str; 3] = ["big-a", "big-b", "big-c"];
const IPS: u32 = 30_000;

fn ips() -> Vec<IpAddr> {
    (0..IPS)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    0xfd00_0000_0000_0000_0000_0000_0001_0000 + u128::from(i),
                ))
            }
        })
        .collect()
}

fn free_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind port 0");
    s.local_addr().expect("local addr")
}

struct Host {
    handle: ClusterHandle,
    view: watch::Receiver<ClusterView>,
    stats: watch::Receiver<TransportStats>,
}

/// Never two views owning one IP at `now`; every IP owned by exactly one: `true`.
fn check(views: &[ClusterView], all: &[IpAddr], now: Instant) -> bool {
    let mut owned: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for v in views {
        for ip in v.owned_ips(now) {
            if let Some(other) = owned.insert(ip, &v.me) {
                panic!("split brain on {ip}: {other} and {}", v.me);
            }
        }
    }
    owned.len() == all.len() && all.iter().all(|ip| owned.contains_key(ip))
}

async fn wait_all_owned(hosts: &mut [Host], all: &[IpAddr], what: &str) -> Vec<ClusterView> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap: Vec<ClusterView> = hosts
            .iter_mut()
            .map(|h| h.view.borrow_and_update().clone())
            .collect();
        let now = driver::now();
        let consistent = hosts.iter().all(|h| !h.view.has_changed().unwrap_or(false));
        if consistent {
            let leaders = snap.iter().filter(|v| v.role == Role::Leader).count();
            if check(&snap, all, now) && leaders == 1 {
                return snap;
            }
        }
        let changed: Vec<_> = hosts
            .iter_mut()
            .map(|h| Box::pin(h.view.changed()))
            .collect();
        if tokio::time::timeout_at(deadline, futures::future::select_all(changed))
            .await
            .is_err()
        {
            let owned: Vec<(String, usize, Role)> = snap
                .iter()
                .map(|v| (v.me.clone(), v.owned_ips(now).len(), v.role))
                .collect();
            let stats: Vec<TransportStats> =
                hosts.iter().map(|h| h.stats.borrow().clone()).collect();
            panic!("timed out waiting for {what}: owned per host {owned:?}; transport {stats:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_ips_per_host_travel_in_fragments_and_each_gets_one_owner() {
    let all = ips();
    let desired: BTreeMap<IpAddr, String> = all
        .iter()
        .enumerate()
        .map(|(i, ip)| (*ip, format!("big/svc-{i}")))
        .collect();
    let eligible: BTreeSet<IpAddr> = all.iter().copied().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: BTreeMap<String, SocketAddr> = NAMES
        .iter()
        .map(|n| ((*n).to_owned(), free_addr()))
        .collect();
    // Slower than the default (50 ms): the debug build takes tens of milliseconds per
    // 30,000-IP message on a machine shared with builds.
    let timing = Timing::new(
        Duration::from_millis(1000),
        Duration::from_millis(5000),
        Duration::from_millis(100),
    )
    .expect("timing");
    let mut hosts = Vec::new();
    for n in NAMES {
        let s = ClusterSettings {
            name: n.to_owned(),
            witness: false,
            members: addrs.clone(),
            address: None,
            members_may_join: false,
            key: Some(KEY.to_vec()),
            member_nodes: false,
            timing,
            state_dir: dir.path().join(n),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        };
        let handle = ClusterDriver::spawn(s).await.expect("spawn driver");
        handle.set_desired(desired.clone());
        handle.set_eligible(eligible.clone());
        let view = handle.view();
        let stats = handle.stats().expect("stats");
        hosts.push(Host {
            handle,
            view,
            stats,
        });
    }
    let started = Instant::now();
    let snap = wait_all_owned(&mut hosts, &all, "every IP owned by one host").await;
    println!(
        "30,000 IPs owned once after {:?}: {:?}",
        started.elapsed(),
        snap.iter()
            .map(|v| (v.me.clone(), v.owned.len()))
            .collect::<Vec<_>>()
    );
    // The leader's map is over every IP and spreads them (each host an owner of some).
    let leader = snap
        .iter()
        .find(|v| v.role == Role::Leader)
        .expect("leader");
    assert_eq!(leader.owners.len(), all.len());
    assert!(
        snap.iter().all(|v| v.owned.len() > 5_000),
        "placement spreads the IPs over the hosts"
    );
    for (n, h) in NAMES.iter().zip(&hosts) {
        let s = h.stats.borrow().clone();
        println!(
            "{n}: sent {} datagrams (largest {} bytes), {} messages in {} fragments; received {} (largest {}), reassembled {}, expired {}, evicted {}; drops {:?}",
            s.sent,
            s.largest_sent,
            s.fragmented_sent,
            s.fragments_sent,
            s.received,
            s.largest_received,
            s.reassembly.reassembled,
            s.reassembly.expired,
            s.reassembly.evicted,
            s.drops
        );
        assert!(s.largest_sent <= MAX_DATAGRAM, "{n}: {s:?}");
        assert!(s.largest_received <= MAX_DATAGRAM, "{n}: {s:?}");
        assert!(s.fragmented_sent > 0, "{n} sent fragments: {s:?}");
        assert!(s.reassembly.reassembled > 0, "{n} reassembled: {s:?}");
        assert_eq!(s.dropped(DropReason::Malformed), 0, "{n}: {s:?}");
        assert_eq!(s.dropped(DropReason::BadMac), 0, "{n}: {s:?}");
    }
    // A crash: the other two take the dead host's IPs over (large renewals and grants again).
    let victim = hosts
        .iter()
        .position(|h| h.view.borrow().role != Role::Leader)
        .expect("a follower");
    let h = hosts.remove(victim);
    h.handle.abort_and_wait().await;
    let killed = Instant::now();
    wait_all_owned(&mut hosts, &all, "every IP owned by the two left").await;
    println!(
        "after a crash, every IP owned again after {:?}",
        killed.elapsed()
    );
    for h in hosts {
        h.handle.abort_and_wait().await;
    }
}
