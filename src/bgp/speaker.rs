//! The BGP speaker: the peers of this node, what each is told, reloads and shutdown.
//!
//! One tokio task owns the desired state (node, pools, announced IPs, peers) and the shared
//! listeners; it computes each peer's routes with [`advertise`](super::advertise) and hands
//! them to that peer's task ([`driver`](super::driver)), which diffs and sends UPDATEs on
//! its Established session. The handle is cheap to clone; every call is a message.
//!
//! Nothing here withdraws on a timer: routes change only when the caller says so (an API
//! server outage never reaches the speaker as a change).
//!
//! ```text
//! let bgp = Speaker::spawn(node, config.bgp_peers.clone(), config.pools.clone(), SpeakerOptions::default());
//! bgp.set_announcements(announced);            // whenever the controller's output changes
//! bgp.update_peers(new_config.bgp_peers);      // on SIGHUP
//! bgp.shutdown("node maintenance", Duration::from_secs(3)).await;   // on SIGTERM
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::advertise::{
    AnnounceChange, AnnouncedIp, LocalNode, RouteAttrs, RouteSet, node_peers_with, prefixes_of,
    route_for_prefix, routes_for_peer,
};
use super::driver::{self, DriverOptions, Listener, PeerCommand, PeerMetrics, PeerStatus};
use super::fsm::State;
use crate::bfd::driver::{BfdHandle, BfdOptions};
use crate::config::BgpPeer;
use crate::control::metrics::Metrics;
use crate::model::Pools;

/// Speaker-wide settings.
#[derive(Clone, Debug)]
pub struct SpeakerOptions {
    /// Port of the shared passive listeners (IPv4 and IPv6); `None`: do not listen (every
    /// peer must then be active).
    pub listen_port: Option<u16>,
    pub connect_timeout: Duration,
    /// Router ID for peers without `router_id` (else the session's local IPv4 address).
    pub router_id: Option<Ipv4Addr>,
    /// Where the `lb_bgp_*` series of each peer go (the default: a registry nobody reads).
    pub metrics: Metrics,
    /// Send nothing to a new session until [`SpeakerHandle::set_ready`]: the announcements
    /// are not complete yet (lbd has not synced with the API server). A graceful-restart
    /// helper drops our stale routes at the first End-of-RIB, so it must not come early.
    pub wait_until_ready: bool,
}

impl Default for SpeakerOptions {
    fn default() -> Self {
        Self {
            listen_port: Some(BgpPeer::DEFAULT_PORT),
            connect_timeout: Duration::from_secs(5),
            router_id: None,
            metrics: Metrics::new(),
            wait_until_ready: false,
        }
    }
}

/// One peer in a [`SpeakerHandle::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub status: PeerStatus,
    /// Time in Established, `None` when not Established.
    pub uptime: Option<Duration>,
}

impl PeerSnapshot {
    pub fn established(&self) -> bool {
        self.status.state == State::Established
    }
}

#[derive(Debug, thiserror::Error)]
#[error("BGP shutdown did not finish within {0:?}; sessions were closed without waiting")]
pub struct ShutdownTimeout(pub Duration);

enum Command {
    Announce(Vec<AnnouncedIp>),
    Changes(Vec<AnnounceChange>),
    Pools(Pools),
    Node(LocalNode),
    Peers(Vec<BgpPeer>),
    Ready,
    Snapshot(oneshot::Sender<Vec<PeerSnapshot>>),
    AdvertisedIps(oneshot::Sender<usize>),
    Shutdown {
        communication: String,
        /// Stopping to restart (graceful restart keeps the routes at the peers).
        restart: bool,
        done: oneshot::Sender<()>,
    },
}

/// Handle to the speaker task. Dropping every handle stops the task (sessions are closed
/// with an empty Cease communication); call [`shutdown`](Self::shutdown) to withdraw first.
#[derive(Clone)]
pub struct SpeakerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

pub struct Speaker;

impl Speaker {
    /// Start the speaker (inside a tokio runtime). Peers whose `node_selectors` do not match
    /// `node` are ignored.
    pub fn spawn(
        node: LocalNode,
        peers: Vec<BgpPeer>,
        pools: impl Into<Pools>,
        options: SpeakerOptions,
    ) -> SpeakerHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let mut task = SpeakerTask {
            node,
            pools: pools.into(),
            announced: BTreeMap::new(),
            configured: Vec::new(),
            peers: BTreeMap::new(),
            listeners: Vec::new(),
            metrics: options.metrics.clone(),
            ready: !options.wait_until_ready,
            bfd: None,
            driver: DriverOptions {
                connect_timeout: options.connect_timeout,
                router_id: options.router_id,
                ..DriverOptions::default()
            },
        };
        if let Some(port) = options.listen_port {
            for ip in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                let addr = SocketAddr::new(ip, port);
                match Listener::bind(addr, in_tx.clone()) {
                    Ok(l) => {
                        info!(listen = %addr, "BGP listening");
                        task.listeners.push(l);
                    }
                    Err(e) => warn!(error = %e, "BGP: passive peers of this family cannot connect"),
                }
            }
        }
        task.set_peers(peers);
        tokio::spawn(task.run(rx, in_rx));
        SpeakerHandle { tx }
    }
}

impl SpeakerHandle {
    /// The IPs to announce (desired state; replaces the previous set).
    pub fn set_announcements(&self, announced: Vec<AnnouncedIp>) {
        let _ = self.tx.send(Command::Announce(announced));
    }

    /// Changes to the IPs to announce: only the prefixes they touch are recomputed and
    /// sent.
    pub fn change_announcements(&self, changes: Vec<AnnounceChange>) {
        if !changes.is_empty() {
            let _ = self.tx.send(Command::Changes(changes));
        }
    }

    /// Pools after a reload (their advertisements decide prefixes and attributes).
    pub fn set_pools(&self, pools: impl Into<Pools>) {
        let _ = self.tx.send(Command::Pools(pools.into()));
    }

    /// This node's labels or eligibility changed.
    pub fn set_node(&self, node: LocalNode) {
        let _ = self.tx.send(Command::Node(node));
    }

    /// The announcements are complete: sessions may get their initial UPDATEs and
    /// End-of-RIB (see [`SpeakerOptions::wait_until_ready`]).
    pub fn set_ready(&self) {
        let _ = self.tx.send(Command::Ready);
    }

    /// Reload the peers: sessions of added peers start, of removed or changed peers stop
    /// (Cease), and unchanged peers' sessions stay up.
    pub fn update_peers(&self, peers: Vec<BgpPeer>) {
        let _ = self.tx.send(Command::Peers(peers));
    }

    /// The speaker task has ended (after [`shutdown`](Self::shutdown)).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Per peer: state, uptime, prefixes advertised, UPDATEs received.
    pub async fn snapshot(&self) -> Vec<PeerSnapshot> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Snapshot(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// How many of the announced IPs at least one Established peer has a route for.
    pub async fn advertised_ips(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::AdvertisedIps(tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Withdraw every route, send Cease/Administrative Shutdown carrying `communication`
    /// (RFC 8203; at most 255 octets, longer is cut), close; at most `timeout`. The speaker
    /// task ends.
    pub async fn shutdown(
        &self,
        communication: &str,
        timeout: Duration,
    ) -> Result<(), ShutdownTimeout> {
        self.stop(communication, false, timeout).await
    }

    /// Stopping to restart: on sessions that negotiated graceful restart (RFC 4724) the
    /// routes stay with the peer, which keeps forwarding to this host while lbd is gone;
    /// other sessions are shut down as by [`shutdown`](Self::shutdown).
    pub async fn shutdown_for_restart(
        &self,
        communication: &str,
        timeout: Duration,
    ) -> Result<(), ShutdownTimeout> {
        self.stop(communication, true, timeout).await
    }

    async fn stop(
        &self,
        communication: &str,
        restart: bool,
        timeout: Duration,
    ) -> Result<(), ShutdownTimeout> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Shutdown {
            communication: communication.to_string(),
            restart,
            done,
        };
        if self.tx.send(cmd).is_err() {
            return Ok(());
        }
        tokio::time::timeout(timeout, rx)
            .await
            .map(|_| ())
            .map_err(|_| ShutdownTimeout(timeout))
    }
}

struct PeerEntry {
    config: BgpPeer,
    tx: mpsc::UnboundedSender<PeerCommand>,
    status: watch::Receiver<PeerStatus>,
    routes: RouteSet,
    task: JoinHandle<()>,
    metrics: PeerMetrics,
}

struct SpeakerTask {
    node: LocalNode,
    /// The daemon's pools (the same shared value).
    pools: Pools,
    announced: BTreeMap<IpAddr, AnnouncedIp>,
    /// Peers as configured (also those this node does not peer with).
    configured: Vec<BgpPeer>,
    peers: BTreeMap<IpAddr, PeerEntry>,
    listeners: Vec<Listener>,
    /// Started with the first peer that has `bfd`.
    bfd: Option<BfdHandle>,
    driver: DriverOptions,
    metrics: Metrics,
    /// The announcements are complete (see `SpeakerOptions::wait_until_ready`).
    ready: bool,
}

impl SpeakerTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut incoming: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    ) {
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Announce(a)) => {
                        self.announced = a.into_iter().map(|a| (a.ip, a)).collect();
                        self.push_routes();
                    }
                    Some(Command::Changes(changes)) => self.apply_changes(changes),
                    Some(Command::Pools(p)) => {
                        // The very value held: nothing to recompute.
                        if !p.same(&self.pools) {
                            self.pools = p;
                            self.push_routes();
                        }
                    }
                    Some(Command::Node(n)) => {
                        self.node = n;
                        let peers = self.configured.clone();
                        self.set_peers(peers);
                    }
                    Some(Command::Peers(p)) => self.set_peers(p),
                    Some(Command::Ready) => {
                        if !self.ready {
                            self.ready = true;
                            for p in self.peers.values() {
                                let _ = p.tx.send(PeerCommand::Ready);
                            }
                        }
                    }
                    Some(Command::Snapshot(reply)) => {
                        let _ = reply.send(self.snapshot());
                    }
                    Some(Command::AdvertisedIps(reply)) => {
                        let sessions: Vec<(PeerStatus, &RouteSet)> = self
                            .peers
                            .values()
                            .map(|p| (p.status.borrow().clone(), &p.routes))
                            .collect();
                        let n = advertised_ips(
                            &self.announced,
                            sessions.iter().map(|(s, r)| (s, *r)),
                        );
                        let _ = reply.send(n);
                    }
                    Some(Command::Shutdown { communication, restart, done }) => {
                        self.shutdown(&communication, restart).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown("", false).await;
                        return;
                    }
                },
                Some((stream, remote)) = incoming.recv() => {
                    match self.peers.get(&remote.ip()) {
                        Some(p) => {
                            debug!(peer = %remote, "BGP: incoming connection");
                            let _ = p.tx.send(PeerCommand::Incoming(stream));
                        }
                        None => debug!(remote = %remote, "BGP: connection from an unknown address refused"),
                    }
                }
            }
        }
    }

    fn routes_for(&self, peer: &BgpPeer) -> RouteSet {
        routes_for_peer(
            &self.node,
            &peer.policy(),
            &self.pools,
            self.announced.values(),
        )
    }

    /// Applies announcement changes: every peer gets the changed routes of the prefixes
    /// they touch (an aggregate is recomputed from the IPs inside it).
    fn apply_changes(&mut self, changes: Vec<AnnounceChange>) {
        let mut prefixes = std::collections::BTreeSet::new();
        for c in changes {
            if let Some(old) = self.announced.remove(&c.ip()) {
                prefixes.extend(prefixes_of(&old, &self.pools));
            }
            if let AnnounceChange::Announce(a) = c {
                prefixes.extend(prefixes_of(&a, &self.pools));
                self.announced.insert(a.ip, a);
            }
        }
        for p in self.peers.values_mut() {
            let policy = p.config.policy();
            let mut changed: Vec<(ipnet::IpNet, Option<RouteAttrs>)> = Vec::new();
            for prefix in &prefixes {
                let r =
                    route_for_prefix(&self.node, &policy, &self.pools, &self.announced, *prefix);
                if p.routes.get(prefix) != r.as_ref() {
                    match &r {
                        Some(a) => p.routes.insert(*prefix, a.clone()),
                        None => p.routes.remove(prefix),
                    };
                    changed.push((*prefix, r));
                }
            }
            if !changed.is_empty() {
                let _ = p.tx.send(PeerCommand::RouteChanges(changed));
            }
        }
    }

    fn push_routes(&mut self) {
        let new: Vec<(IpAddr, RouteSet)> = self
            .peers
            .values()
            .map(|p| (p.config.address, self.routes_for(&p.config)))
            .collect();
        for (addr, routes) in new {
            if let Some(p) = self.peers.get_mut(&addr)
                && p.routes != routes
            {
                p.routes = routes.clone();
                let _ = p.tx.send(PeerCommand::SetRoutes(routes));
            }
        }
    }

    fn set_md5(&self, peer: IpAddr, key: &[u8]) {
        for l in &self.listeners {
            if l.addr.is_ipv6() == peer.is_ipv6()
                && let Err(e) = l.set_md5_key(peer, key)
            {
                error!(error = %e, "BGP: TCP-MD5 key not set on the listener");
            }
        }
    }

    fn set_peers(&mut self, peers: Vec<BgpPeer>) {
        self.configured = peers.clone();
        let mut wanted: BTreeMap<IpAddr, BgpPeer> = BTreeMap::new();
        for p in peers {
            if !node_peers_with(&self.node, &p.policy()) {
                continue;
            }
            if wanted.contains_key(&p.address) {
                error!(peer = %p.address, "BGP: peer configured twice, the first one is used");
                continue;
            }
            wanted.insert(p.address, p);
        }
        let gone: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(a, e)| !wanted.get(a).is_some_and(|w| same_but_bfd(w, &e.config)))
            .map(|(a, _)| *a)
            .collect();
        // Only `bfd` changed: the BGP session stays, the BFD session follows the config.
        for (addr, w) in &wanted {
            if gone.contains(addr) {
                continue;
            }
            if let Some(e) = self.peers.get(addr)
                && e.config.bfd != w.bfd
            {
                let (old, tx) = (e.config.clone(), e.tx.clone());
                self.sync_bfd(Some(&old), w, &tx);
                if let Some(e) = self.peers.get_mut(addr) {
                    e.config = w.clone();
                }
            }
        }
        for addr in gone {
            if let Some(e) = self.peers.remove(&addr) {
                if e.config.bfd.is_some()
                    && let Some(b) = &self.bfd
                {
                    b.remove(addr);
                }
                info!(peer = %addr, "BGP peer removed or changed: stopping its session");
                // A changed peer at the same ip:port keeps its series (the new task goes on
                // counting); a removed one loses them.
                e.metrics.detach();
                if wanted.get(&addr).is_none_or(|w| w.port != e.config.port) {
                    self.metrics
                        .remove_bgp_peer(SocketAddr::new(addr, e.config.port));
                }
                let (done, _) = oneshot::channel();
                let _ = e.tx.send(PeerCommand::Shutdown {
                    communication: "peer configuration changed".into(),
                    done,
                });
                if e.config.password_file.is_some() {
                    self.set_md5(addr, b"");
                }
                // The task ends by itself once the Cease is written.
                drop(e.task);
            }
        }
        // A node-wide router ID for peers without one whose own session cannot give one
        // (IPv6 sessions): the first IPv4 peer's.
        let mut driver_options = self.driver.clone();
        if driver_options.router_id.is_none() {
            driver_options.router_id = wanted
                .values()
                .filter(|p| p.address.is_ipv4() || p.router_id.is_some())
                .find_map(|p| driver::resolve_router_id(p, None).ok());
        }
        for (addr, cfg) in wanted {
            if self.peers.contains_key(&addr) {
                continue;
            }
            let key = match driver::read_password(&cfg) {
                Ok(k) => k,
                Err(e) => {
                    error!(error = %e, "BGP: peer not started");
                    continue;
                }
            };
            if let Some(k) = &key {
                self.set_md5(addr, k);
            }
            let routes = self.routes_for(&cfg);
            info!(peer = %addr, peer_asn = cfg.peer_asn, passive = cfg.passive, "BGP peer added");
            let metrics = PeerMetrics::new(self.metrics.clone(), SocketAddr::new(addr, cfg.port));
            let (tx, status, task) = driver::spawn_peer(
                cfg.clone(),
                key,
                driver_options.clone(),
                routes.clone(),
                self.ready,
                metrics.clone(),
            );
            self.sync_bfd(None, &cfg, &tx);
            self.peers.insert(
                addr,
                PeerEntry {
                    config: cfg,
                    tx,
                    status,
                    routes,
                    task,
                    metrics,
                },
            );
        }
    }

    /// Start, retime or stop the BFD session of `new` (whose BGP task is `tx`) given the
    /// config it had (`None`: a new peer).
    fn sync_bfd(
        &mut self,
        old: Option<&BgpPeer>,
        new: &BgpPeer,
        tx: &mpsc::UnboundedSender<PeerCommand>,
    ) {
        let had = old.and_then(|o| o.bfd.as_ref());
        match (had, &new.bfd) {
            (None, None) => {}
            (Some(_), None) => {
                if let Some(b) = &self.bfd {
                    b.remove(new.address);
                }
                let _ = tx.send(PeerCommand::Bfd(None));
            }
            (Some(_), Some(c)) => {
                if let Some(b) = &self.bfd {
                    b.set_timers(new.address, c.into());
                }
            }
            (None, Some(c)) => {
                if self.bfd.is_none() {
                    match BfdHandle::spawn(BfdOptions {
                        metrics: Some(self.metrics.clone()),
                        ..BfdOptions::default()
                    }) {
                        Ok(b) => self.bfd = Some(b),
                        Err(e) => {
                            error!(error = %e, "BFD not started: BGP peers rely on the hold timer");
                            return;
                        }
                    }
                }
                if let Some(b) = &self.bfd {
                    let rx = b.add(new.address, new.source_address, c.into());
                    let _ = tx.send(PeerCommand::Bfd(Some(rx)));
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<PeerSnapshot> {
        let now = Instant::now();
        self.peers
            .values()
            .map(|p| {
                let status = p.status.borrow().clone();
                let uptime = (status.state == State::Established)
                    .then(|| status.established_since.map(|t| now.duration_since(t)))
                    .flatten();
                PeerSnapshot { status, uptime }
            })
            .collect()
    }

    async fn shutdown(&mut self, communication: &str, restart: bool) {
        let mut waits = Vec::new();
        for (addr, p) in &self.peers {
            let (done, rx) = oneshot::channel();
            let communication = communication.to_string();
            let cmd = if restart {
                PeerCommand::StopForRestart {
                    communication,
                    done,
                }
            } else {
                PeerCommand::Shutdown {
                    communication,
                    done,
                }
            };
            if p.tx.send(cmd).is_ok() {
                waits.push((*addr, rx));
            }
        }
        for (addr, rx) in waits {
            if rx.await.is_err() {
                warn!(peer = %addr, "BGP: peer task ended before confirming shutdown");
            }
        }
        self.listeners.clear();
        if let Some(b) = self.bfd.take() {
            b.shutdown().await;
        }
        info!("BGP speaker stopped");
    }
}

/// How many of `announced` at least one Established session has a route for: a prefix of
/// the session's address family covering the IP (an aggregated route covers several IPs).
fn advertised_ips<'a>(
    announced: &BTreeMap<IpAddr, AnnouncedIp>,
    sessions: impl Iterator<Item = (&'a PeerStatus, &'a RouteSet)>,
) -> usize {
    let mut covered: std::collections::BTreeSet<IpAddr> = std::collections::BTreeSet::new();
    for (status, routes) in sessions {
        if status.state != State::Established {
            continue;
        }
        let v6 = status.local.is_some_and(|l| l.is_ipv6());
        for prefix in routes.keys().filter(|p| p.addr().is_ipv6() == v6) {
            covered.extend(
                announced
                    .range(prefix.network()..=prefix.broadcast())
                    .map(|(ip, _)| *ip),
            );
        }
    }
    covered.len()
}

/// The two configs differ at most in `bfd` (which is changed without resetting BGP).
fn same_but_bfd(a: &BgpPeer, b: &BgpPeer) -> bool {
    BgpPeer {
        bfd: None,
        ..a.clone()
    } == BgpPeer {
        bfd: None,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::advertise::RouteAttrs;

    fn announced(ip: &str) -> AnnouncedIp {
        AnnouncedIp {
            ip: ip.parse().unwrap(),
            pool: "p".into(),
            local_only: false,
            endpoints: Default::default(),
            always_ready: true,
        }
    }

    fn status(state: State, local: &str) -> PeerStatus {
        PeerStatus {
            address: "10.0.0.1".parse().unwrap(),
            peer_asn: 64500,
            state,
            router_id: None,
            local: Some(local.parse().unwrap()),
            established_since: None,
            prefixes_advertised: 0,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            last_error: None,
        }
    }

    fn routes(prefixes: &[&str]) -> RouteSet {
        prefixes
            .iter()
            .map(|p| (p.parse().unwrap(), RouteAttrs::default()))
            .collect()
    }

    #[test]
    fn advertised_ips_counts_ips_covered_on_established_sessions_once() {
        let ann: BTreeMap<IpAddr, AnnouncedIp> = [
            announced("172.19.0.1"),
            announced("172.19.0.2"),
            announced("172.19.1.9"),
            announced("fd00::1"),
        ]
        .into_iter()
        .map(|a| (a.ip, a))
        .collect();
        // Two sessions share 172.19.0.1; an aggregate covers 172.19.0.2; the v6 route
        // is not sent on an IPv4 session; a down session advertises nothing.
        let up_a = status(State::Established, "10.0.0.3:40000");
        let up_b = status(State::Established, "10.0.0.3:40001");
        let down = status(State::Active, "10.0.0.3:40002");
        let ra = routes(&["172.19.0.1/32", "fd00::1/128"]);
        let rb = routes(&["172.19.0.0/24"]);
        let rd = routes(&["172.19.1.9/32"]);
        let n = advertised_ips(&ann, [(&up_a, &ra), (&up_b, &rb), (&down, &rd)].into_iter());
        assert_eq!(n, 2);
        let v6 = status(State::Established, "[fd00::3]:40003");
        let n = advertised_ips(&ann, [(&v6, &ra)].into_iter());
        assert_eq!(n, 1);
    }
}
