//! raft-lite drivers over real UDP on 127.0.0.1 (distinct ports, picked free by binding port 0).
//!
//! Every wait re-checks safety on each published view: never two drivers owning one IP at the
//! same instant (lease deadlines are compared at one `now`, on one clock: same process).
//! Waits await view changes (watch channels), with generous timeouts for a loaded machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb::cluster::driver::{
    self, ClusterDriver, ClusterHandle, ClusterSettings, ClusterView, DEFAULT_SHUTDOWN_TIMEOUT,
    ShutdownOutcome,
};
use lb::cluster::message::{Body, Grant, Heartbeat, Message};
use lb::cluster::transport::{TransportStats, pair_key};
use lb::cluster::wire::{self, Authenticator, DropReason, Sealer};
use lb::cluster::{Role, Timing, hard_state};
use tokio::net::UdpSocket;
use tokio::sync::watch;

const KEY: &[u8] = b"test cluster key, 32 bytes long!";
const WAIT: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn free_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind port 0");
    s.local_addr().expect("local addr")
}

fn ips() -> Vec<IpAddr> {
    [
        "10.10.100.200",
        "10.10.100.201",
        "10.10.100.202",
        "fd00:10::5",
    ]
    .iter()
    .map(|s| s.parse().expect("ip"))
    .collect()
}

fn desired() -> BTreeMap<IpAddr, String> {
    ips()
        .into_iter()
        .enumerate()
        .map(|(i, ip)| (ip, format!("default/svc-{i}")))
        .collect()
}

struct Member {
    name: String,
    settings: ClusterSettings,
    handle: Option<ClusterHandle>,
    view: watch::Receiver<ClusterView>,
    _dir: Arc<tempfile::TempDir>,
}

struct Cluster {
    members: Vec<Member>,
}

fn settings(
    name: &str,
    members: &BTreeMap<String, SocketAddr>,
    key: &[u8],
    dir: &tempfile::TempDir,
) -> ClusterSettings {
    ClusterSettings {
        name: name.to_owned(),
        witness: false,
        members: members.clone(),
        address: None,
        members_may_join: false,
        member_nodes: false,
        key: Some(key.to_vec()),
        timing: Timing::default(),
        state_dir: dir.path().join(name),
        shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
    }
}

async fn start(s: ClusterSettings) -> (ClusterHandle, watch::Receiver<ClusterView>) {
    let h = ClusterDriver::spawn(s).await.expect("spawn driver");
    h.set_desired(desired());
    h.set_eligible(ips().into_iter().collect());
    let v = h.view();
    (h, v)
}

impl Cluster {
    /// Three drivers; `addr_override(name)` lets a test give one member a different view of
    /// the addresses (e.g. a capturing proxy in front of a peer).
    async fn start_with(
        addr_override: impl Fn(&str, &BTreeMap<String, SocketAddr>) -> BTreeMap<String, SocketAddr>,
    ) -> (Cluster, BTreeMap<String, SocketAddr>) {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let addrs: BTreeMap<String, SocketAddr> = NAMES
            .iter()
            .map(|n| ((*n).to_owned(), free_addr()))
            .collect();
        let mut members = Vec::new();
        for n in NAMES {
            let s = settings(n, &addr_override(n, &addrs), KEY, &dir);
            let (h, view) = start(s.clone()).await;
            members.push(Member {
                name: n.to_owned(),
                settings: s,
                handle: Some(h),
                view,
                _dir: dir.clone(),
            });
        }
        (Cluster { members }, addrs)
    }

    async fn start() -> Cluster {
        Self::start_with(|_, a| a.clone()).await.0
    }

    fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .expect("member")
    }

    fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member")
    }

    fn stats(&self, name: &str) -> watch::Receiver<TransportStats> {
        self.member(name)
            .handle
            .as_ref()
            .and_then(ClusterHandle::stats)
            .expect("stats")
    }

    /// Waits until `cond` holds on a consistent snapshot of all views; checks safety on every
    /// snapshot. Returns the snapshot.
    async fn wait(
        &mut self,
        what: &str,
        cond: impl Fn(&[ClusterView], Instant) -> bool,
    ) -> Vec<ClusterView> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let snap: Vec<ClusterView> = self
                .members
                .iter_mut()
                .map(|m| m.view.borrow_and_update().clone())
                .collect();
            let now = driver::now();
            // Consistent: no view changed while the snapshot was taken.
            let consistent = self
                .members
                .iter()
                .all(|m| !m.view.has_changed().unwrap_or(false));
            if consistent {
                assert_safe(&snap, now);
                if cond(&snap, now) {
                    return snap;
                }
            }
            let live: Vec<_> = self
                .members
                .iter_mut()
                .filter(|m| m.view.has_changed().is_ok())
                .map(|m| Box::pin(m.view.changed()))
                .collect();
            assert!(
                !live.is_empty(),
                "no live driver left while waiting for {what}"
            );
            if tokio::time::timeout_at(deadline, futures::future::select_all(live))
                .await
                .is_err()
            {
                panic!("timed out waiting for {what}; views: {snap:#?}");
            }
        }
    }

    /// One leader known to every live member, and every desired IP owned by exactly one
    /// live member. Returns (leader name, term).
    async fn wait_stable(&mut self, what: &str) -> (String, u64) {
        let live: BTreeSet<String> = self
            .members
            .iter()
            .filter(|m| m.handle.is_some())
            .map(|m| m.name.clone())
            .collect();
        let snap = self
            .wait(what, |views, now| {
                let live_views: Vec<&ClusterView> =
                    views.iter().filter(|v| live.contains(&v.me)).collect();
                let leaders: Vec<&&ClusterView> = live_views
                    .iter()
                    .filter(|v| v.role == Role::Leader)
                    .collect();
                leaders.len() == 1
                    && live_views
                        .iter()
                        .all(|v| v.leader.as_deref() == Some(leaders[0].me.as_str()))
                    && ips()
                        .iter()
                        .all(|ip| live_views.iter().filter(|v| v.owns(ip, now)).count() == 1)
            })
            .await;
        let l = snap
            .iter()
            .find(|v| v.role == Role::Leader && live.contains(&v.me))
            .expect("leader");
        (l.me.clone(), l.term)
    }

    /// Crash: abort the task and wait until it is gone (its socket closed).
    async fn kill(&mut self, name: &str) {
        let h = self.member_mut(name).handle.take().expect("running");
        h.abort_and_wait().await;
    }
}

/// Never two views owning one IP at the same instant.
fn assert_safe(views: &[ClusterView], now: Instant) {
    for ip in ips() {
        let owners: Vec<&str> = views
            .iter()
            .filter(|v| v.owns(&ip, now))
            .map(|v| v.me.as_str())
            .collect();
        assert!(
            owners.len() <= 1,
            "split brain on {ip}: {owners:?}\n{views:#?}"
        );
    }
}

async fn wait_stats(
    rx: &mut watch::Receiver<TransportStats>,
    what: &str,
    f: impl Fn(&TransportStats) -> bool,
) -> TransportStats {
    let r = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}: {:?}", *rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_drivers_elect_one_leader_and_each_ip_gets_exactly_one_owner() {
    let mut c = Cluster::start().await;
    let (leader, term) = c.wait_stable("a leader and one owner per IP").await;
    assert!(term >= 1);
    let v = c.member(&leader).view.borrow().clone();
    assert_eq!(
        v.owners.keys().copied().collect::<Vec<_>>(),
        ips(),
        "the leader's map covers every desired IP"
    );
    assert!(v.members.iter().all(|m| m.alive), "{:?}", v.members);
    // Spread: rendezvous hashing over 3 eligible hosts rarely puts all four on one; at least
    // the map's owners are members.
    assert!(v.owners.values().all(|o| NAMES.contains(&o.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_reassigns_its_ips() {
    let mut c = Cluster::start().await;
    let (old, term) = c.wait_stable("initial leader").await;
    let killed_at = Instant::now();
    c.kill(&old).await;
    let (new, new_term) = c.wait_stable("a new leader owning everything").await;
    println!(
        "failover: new leader {new} (term {new_term}) after {:?}",
        killed_at.elapsed()
    );
    assert_ne!(new, old);
    assert!(new_term > term);
    let v = c.member(&new).view.borrow().clone();
    assert!(
        v.owners.values().all(|o| *o != old),
        "no IP left with the dead leader: {:?}",
        v.owners
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_with_the_wrong_key_is_ignored_and_counted_as_bad_mac() {
    let (mut c, addrs) = Cluster::start_with(|_, a| a.clone()).await;
    let (leader, term) = c.wait_stable("initial leader").await;
    // A rogue claiming to be a member, at its own port, with the wrong key.
    let victim = NAMES.iter().find(|n| **n != leader).expect("a follower");
    let mut rogue_members = addrs.clone();
    rogue_members.insert((*victim).to_owned(), free_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let (rogue, mut rogue_view) = start(settings(
        victim,
        &rogue_members,
        b"not the cluster key",
        &dir,
    ))
    .await;
    let mut rogue_stats = rogue.stats().expect("rogue stats");
    let others: Vec<&str> = NAMES.iter().copied().filter(|n| n != victim).collect();
    for n in &others {
        let mut st = c.stats(n);
        wait_stats(&mut st, "bad MAC drops from the rogue", |s| {
            s.dropped(DropReason::BadMac) >= 3
        })
        .await;
    }
    let rs = rogue_stats.borrow_and_update().clone();
    assert!(rs.sent >= 6, "the rogue did send: {rs:?}");
    assert_eq!(rs.received, 0, "nobody answered the rogue: {rs:?}");
    assert_eq!(rogue_view.borrow_and_update().leader, None);
    let (leader2, term2) = c.wait_stable("cluster unaffected").await;
    assert_eq!((leader2, term2), (leader, term));
    drop(rogue);
}

/// A UDP proxy in front of a peer that keeps a copy of everything it forwards.
async fn capturing_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = sock.local_addr().expect("proxy addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = sock.recv_from(&mut buf).await {
            keep.lock().expect("lock").push(buf[..n].to_vec());
            let _ = sock.send_to(&buf[..n], to).await;
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_datagram_is_dropped() {
    // node-b is reached through a proxy that records what node-b received.
    let b_real = free_addr();
    let (proxy, seen) = capturing_proxy(b_real).await;
    let (mut c, addrs) = Cluster::start_with(|me, a| {
        let mut a = a.clone();
        a.insert("node-b".into(), if me == "node-b" { b_real } else { proxy });
        a
    })
    .await;
    c.wait_stable("initial leader").await;
    let mut b_stats = c.stats("node-b");
    let before = b_stats.borrow_and_update().clone();
    assert_eq!(
        before.dropped(DropReason::Replayed) + before.dropped(DropReason::TooOld),
        0
    );
    let captured = seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("node-b received something");
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&captured, b_real)
        .await
        .expect("replay to node-b");
    let after = wait_stats(&mut b_stats, "replay drop at node-b", |s| {
        s.dropped(DropReason::Replayed) + s.dropped(DropReason::TooOld) >= 1
    })
    .await;
    assert_eq!(
        after.dropped(DropReason::Replayed) + after.dropped(DropReason::TooOld),
        1
    );
    // The same datagram sent to the third member (its sender's sequence numbers towards that
    // member are a separate stream) fails the MAC there: each direction has its own key.
    let sender = wire::parse_header(&captured)
        .expect("header")
        .sender
        .to_owned();
    let third = NAMES
        .iter()
        .find(|n| **n != "node-b" && **n != sender)
        .expect("third member");
    let mut third_stats = c.stats(third);
    let bad_before = third_stats.borrow_and_update().dropped(DropReason::BadMac);
    sock.send_to(&captured, addrs[*third])
        .await
        .expect("cross-replay");
    wait_stats(&mut third_stats, "cross-destination replay drop", |s| {
        s.dropped(DropReason::BadMac) > bad_before
    })
    .await;
    c.wait_stable("still stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_state_survives_a_driver_restart() {
    let mut c = Cluster::start().await;
    let (leader, term) = c.wait_stable("initial leader").await;
    let f = NAMES
        .iter()
        .find(|n| **n != leader)
        .expect("a follower")
        .to_string();
    let before = c.member(&f).view.borrow().term;
    assert_eq!(before, term);
    c.kill(&f).await;
    let on_disk = hard_state::load(&c.member(&f).settings.state_dir).expect("load");
    assert!(on_disk.term >= term, "{on_disk:?} vs term {term}");
    let s = c.member(&f).settings.clone();
    let (h, view) = start(s).await;
    assert!(
        view.borrow().term >= term,
        "restarted at term {} < {term}",
        view.borrow().term
    );
    let m = c.member_mut(&f);
    m.handle = Some(h);
    m.view = view;
    let (_, term2) = c.wait_stable("restarted follower rejoins").await;
    assert!(term2 >= term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_leave_of_the_leader_hands_over_and_completes() {
    let mut c = Cluster::start().await;
    let (leader, term) = c.wait_stable("initial leader").await;
    let h = c.member_mut(&leader).handle.take().expect("running");
    assert_eq!(h.shutdown().await, ShutdownOutcome::Complete);
    let v = c.member(&leader).view.borrow().clone();
    assert!(v.stopped && v.owned.is_empty(), "{v:?}");
    let (new, new_term) = c.wait_stable("successor owns everything").await;
    assert_ne!(new, leader);
    assert!(new_term > term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ineligible_owner_loses_the_ip_to_another_host() {
    let mut c = Cluster::start().await;
    c.wait_stable("initial leader").await;
    let ip = ips()[0];
    let now = driver::now();
    let owner = c
        .members
        .iter()
        .find(|m| m.view.borrow().owns(&ip, now))
        .map(|m| m.name.clone())
        .expect("an owner");
    let m = c.member(&owner);
    let h = m.handle.as_ref().expect("running");
    h.set_eligible(ips().into_iter().filter(|x| *x != ip).collect());
    // Local effect at once: the next view no longer owns it.
    let mut v = m.view.clone();
    tokio::time::timeout(WAIT, v.wait_for(|v| !v.owns(&ip, driver::now())))
        .await
        .expect("owner drops the IP")
        .expect("view open");
    let snap = c
        .wait("another host owns it", |views, now| {
            views.iter().any(|v| v.me != owner && v.owns(&ip, now))
        })
        .await;
    assert!(
        snap.iter()
            .all(|v| v.me != owner || !v.owns(&ip, driver::now()))
    );
}

/// The test plays the leader and the other voter of a 2-member cluster over a raw UDP socket
/// and moves an IP to and away from the driver many times, granting every renewal. Whenever
/// the driver releases the IP, its published view must already not own it (a voter may
/// promise the IP to another holder as soon as it reads that release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_view_drops_an_ip_before_releasing_it() {
    let leader = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let b_addr = free_addr();
    let members: BTreeMap<String, SocketAddr> = [
        ("a".to_owned(), leader.local_addr().expect("addr")),
        ("b".to_owned(), b_addr),
    ]
    .into();
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, view) = start(settings("b", &members, KEY, &dir)).await;
    let mut sealer = Sealer::new("a", &pair_key(KEY, "a", "b"), 1).expect("sealer");
    let mut auth = Authenticator::new(&pair_key(KEY, "b", "a"), "a", ["b"]);
    let x = ips()[0];
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0;
    let mut eligibility_known = 0;
    let mut releases_checked = 0;
    let term = 1;
    for round in 0..20u64 {
        for (epoch, ips) in [(2 * round + 1, vec![x]), (2 * round + 2, vec![])] {
            // Until b acks this epoch and holds x (or released it), send heartbeats and grant.
            let mut released = false;
            loop {
                seq += 1;
                let hb = Message {
                    term,
                    body: Body::Heartbeat(Heartbeat {
                        seq,
                        epoch,
                        eligibility_known,
                        ips: ips.clone(),
                        standby: vec![],
                    }),
                };
                leader
                    .send_to(&sealer.seal(&hb).expect("seal"), b_addr)
                    .await
                    .expect("send heartbeat");
                // Everything b sends until its ack of this heartbeat.
                let ack = loop {
                    let (n, _) = tokio::time::timeout(WAIT, leader.recv_from(&mut buf))
                        .await
                        .expect("b answers")
                        .expect("recv");
                    let Ok((_, m)) = auth.open(&buf[..n]) else {
                        continue;
                    };
                    match m.body {
                        Body::Ack(a) if a.heartbeat == seq => break a,
                        Body::Renew(r) => {
                            let g = Message {
                                term,
                                body: Body::Grant(Grant {
                                    seq: r.seq,
                                    ips: r.ips.iter().chain(&r.standby).copied().collect(),
                                }),
                            };
                            leader
                                .send_to(&sealer.seal(&g).expect("seal"), b_addr)
                                .await
                                .expect("send grant");
                        }
                        Body::Release(r) if r.ips.contains(&x) => {
                            // The check: the view no longer owns x when the release is read.
                            assert!(
                                !view.borrow().owns(&x, driver::now()),
                                "round {round}: b released {x} but its view still owns it"
                            );
                            released = true;
                            releases_checked += 1;
                        }
                        _ => {}
                    }
                };
                eligibility_known = ack.eligibility_version;
                let done = ack.epoch >= epoch
                    && if ips.is_empty() {
                        released
                    } else {
                        view.borrow().owns(&x, driver::now())
                    };
                if done {
                    break;
                }
                // Heartbeat interval of the default timing.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(releases_checked, 20);
    drop(h);
}

impl Cluster {
    /// Starts a host that does not vote: configured with the voters' addresses, the key
    /// `key` and its own address only.
    async fn add_member(&mut self, name: &str, voters: &BTreeMap<String, SocketAddr>, key: &[u8]) {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut s = settings(name, voters, key, &dir);
        s.address = Some(free_addr());
        let (h, view) = start(s.clone()).await;
        self.members.push(Member {
            name: name.to_owned(),
            settings: s,
            handle: Some(h),
            view,
            _dir: dir,
        });
    }

    /// The leader's member list: (name, votes).
    fn listed(views: &[ClusterView]) -> BTreeMap<String, bool> {
        views
            .iter()
            .find(|v| v.role == Role::Leader)
            .map(|l| {
                l.members
                    .iter()
                    .map(|m| (m.name.clone(), m.voter))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_over_udp_a_wrong_key_does_not_and_a_leaving_member_is_forgotten() {
    let (mut c, voters) = Cluster::start_with(|_, a| a.clone()).await;
    c.wait_stable("three voters settled").await;
    c.add_member("node-m", &voters, KEY).await;
    c.add_member("node-w", &voters, b"another key, so another cluster")
        .await;
    let snap = c
        .wait("node-m admitted and following", |views, _| {
            Cluster::listed(views).get("node-m") == Some(&false)
                && views.iter().any(|v| v.me == "node-m" && v.leader.is_some())
        })
        .await;
    assert!(
        !Cluster::listed(&snap).contains_key("node-w"),
        "a host with another key is never admitted"
    );
    // The wrong key is counted as bad_mac at a voter, and that host owns nothing.
    let mut stats = c.stats("node-a");
    wait_stats(&mut stats, "bad_mac from node-w", |s| {
        s.dropped(DropReason::BadMac) > 0
    })
    .await;
    let now = driver::now();
    assert!(c.member("node-w").view.borrow().owned_ips(now).is_empty());
    let w = c.member_mut("node-w").handle.take().expect("running");
    w.abort_and_wait().await;
    // One owner per IP among the four live hosts, the member counted like any other.
    c.wait_stable("one owner per IP with the member").await;
    // A member's planned stop completes and the leader forgets it.
    let h = c.member_mut("node-m").handle.take().expect("running");
    assert_eq!(h.shutdown().await, ShutdownOutcome::Complete);
    c.wait("node-m forgotten", |views, _| {
        let l = Cluster::listed(views);
        !l.is_empty() && !l.contains_key("node-m")
    })
    .await;
    c.wait_stable("three voters again").await;
}
