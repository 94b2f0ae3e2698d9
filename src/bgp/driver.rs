//! The TCP side of BGP sessions (tokio): one task per peer owning its [`fsm::Session`]s.
//!
//! ```text
//!  speaker ──PeerCommand──▶ peer task ──Output::Send──▶ writer task ──▶ TCP
//!  listener ─Incoming────▶    │  ▲
//!                             │  └──Bytes / Closed── reader task ◀── TCP
//!                             └──▶ watch<PeerStatus> (snapshot)
//! ```
//!
//! Each TCP connection has its own `Session`. The primary one dials (unless passive) and
//! retries with backoff; a connection the peer opens while the primary is past Active gets a
//! second `Session`, and [`fsm::resolve_collision`] picks the survivor (RFC 4271 §6.8) as
//! soon as one of them has the peer's OPEN. The writer task drains its queue before closing,
//! so a NOTIFICATION queued just before `CloseTcp` reaches the peer.
//!
//! Sockets: TTL 1 (or `ebgp_multihop`) for eBGP, 255 for iBGP; TCP-MD5 keys (RFC 2385) on
//! the active socket and, per peer, on the shared listeners ([`Listener`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::advertise::{RouteSet, diff, to_advertisements};
use super::build::{PeerParams, build_updates, build_withdrawals, end_of_rib};
use super::codec::Family;
use super::fsm::{
    self, ConnectionOrigin, DownReason, Input, Keep, Negotiated, Output, Session, SessionConfig,
    State,
};
use crate::bfd::driver::BfdStatus;
use crate::config::BgpPeer;
use crate::control::metrics::Metrics;
use crate::sys::tcp_md5::{self, Md5Error};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("BGP peer {peer}: {op}: {source}")]
    Socket {
        peer: IpAddr,
        op: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Md5(#[from] Md5Error),
    #[error("BGP peer {peer}: connect to {remote} timed out after {after:?}{hint}")]
    ConnectTimeout {
        peer: IpAddr,
        remote: SocketAddr,
        after: Duration,
        /// Why it may have happened (TCP-MD5 mismatches are silent).
        hint: String,
    },
    #[error("BGP peer {peer}: connect to {remote}: {source}{hint}")]
    Connect {
        peer: IpAddr,
        remote: SocketAddr,
        source: io::Error,
        hint: String,
    },
    #[error("BGP peer {peer}: reading password_file {path}: {source}")]
    PasswordFile {
        peer: IpAddr,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "BGP peer {peer}: no router_id: set router_id (required for IPv6 peers when the node has no IPv4 session source): {detail}"
    )]
    RouterIdRequired { peer: IpAddr, detail: String },
    #[error("BGP listener on {addr}: {op}: {source}")]
    Listen {
        addr: SocketAddr,
        op: &'static str,
        source: io::Error,
    },
}

/// The MD5 key of a peer from its `password_file` (trailing newline removed).
pub fn read_password(peer: &BgpPeer) -> Result<Option<Vec<u8>>, DriverError> {
    let Some(path) = &peer.password_file else {
        return Ok(None);
    };
    let text = std::fs::read(path).map_err(|source| DriverError::PasswordFile {
        peer: peer.address,
        path: path.clone(),
        source,
    })?;
    let end = text
        .iter()
        .rposition(|b| *b != b'\n' && *b != b'\r')
        .map_or(0, |i| i + 1);
    Ok(Some(text[..end].to_vec()))
}

/// RFC 4271 router ID for the sessions with `peer`: the configured one, else the IPv4
/// source address, else `fallback` (a node-wide one), else the local IPv4 address the
/// kernel would use towards an IPv4 peer (found with an unconnected-then-connected UDP
/// socket: no packet is sent). IPv6 peers without any of these are an error.
pub fn resolve_router_id(
    peer: &BgpPeer,
    fallback: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, DriverError> {
    if let Some(id) = peer.router_id {
        return Ok(id);
    }
    if let Some(IpAddr::V4(src)) = peer.source_address {
        return Ok(src);
    }
    if let Some(id) = fallback {
        return Ok(id);
    }
    let IpAddr::V4(_) = peer.address else {
        return Err(DriverError::RouterIdRequired {
            peer: peer.address,
            detail: "the session is IPv6".into(),
        });
    };
    let probe = || -> io::Result<SocketAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(SocketAddr::new(peer.address, peer.port))?;
        s.local_addr()
    };
    match probe() {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Ok(*a.ip()),
        Ok(other) => Err(DriverError::RouterIdRequired {
            peer: peer.address,
            detail: format!("local address {other} is not a usable IPv4 address"),
        }),
        Err(e) => Err(DriverError::RouterIdRequired {
            peer: peer.address,
            detail: format!("no route to the peer: {e}"),
        }),
    }
}

/// TTL for the session's packets: `ebgp_multihop` (default 1) for eBGP, 255 for iBGP.
pub fn session_ttl(peer: &BgpPeer) -> u32 {
    if peer.is_ibgp() {
        255
    } else {
        u32::from(peer.ebgp_multihop.max(1))
    }
}

fn set_ttl(sock: &SockRef<'_>, peer: IpAddr, ttl: u32) -> Result<(), DriverError> {
    let r = if peer.is_ipv6() {
        sock.set_unicast_hops_v6(ttl)
    } else {
        sock.set_ttl_v4(ttl)
    };
    r.map_err(|source| DriverError::Socket {
        peer,
        op: if peer.is_ipv6() {
            "setsockopt(IPV6_UNICAST_HOPS)"
        } else {
            "setsockopt(IP_TTL)"
        },
        source,
    })
}

/// The SessionConfig for `peer`.
pub fn session_config(peer: &BgpPeer, router_id: Ipv4Addr) -> SessionConfig {
    let mut c = SessionConfig::new(peer.my_asn, peer.peer_asn, router_id);
    c.hold_time = u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX);
    let ka = peer.keepalive_time.as_secs();
    c.keepalive_time = (ka > 0).then(|| u16::try_from(ka).unwrap_or(u16::MAX));
    c.passive = peer.passive;
    c.first_connect_delay = peer.connect_delay;
    c
}

/// Kernel counters of dropped TCP-MD5 segments in this network namespace, for the log line
/// that explains a session that never comes up.
fn md5_counters() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if !h.starts_with("TcpExt:") {
            continue;
        }
        let get = |name: &str| {
            let i = h.split_whitespace().position(|k| k == name)?;
            v.split_whitespace().nth(i)?.parse::<u64>().ok()
        };
        return Some((get("TCPMD5Failure")?, get("TCPMD5NotFound")?));
    }
    None
}

fn md5_hint(md5: bool) -> String {
    if !md5 {
        return String::new();
    }
    let counters = md5_counters()
        .map(|(f, n)| format!(" (kernel: TCPMD5Failure={f}, TCPMD5NotFound={n})"))
        .unwrap_or_default();
    format!(
        "; TCP-MD5 is configured: a password mismatch makes the kernels drop the segments silently{counters}"
    )
}

/// Dial `peer`: MD5 key, TTL and source address set before `connect`.
pub async fn dial(
    peer: &BgpPeer,
    key: Option<&[u8]>,
    timeout: Duration,
) -> Result<TcpStream, DriverError> {
    let remote = SocketAddr::new(peer.address, peer.port);
    let sock_err = |op, source| DriverError::Socket {
        peer: peer.address,
        op,
        source,
    };
    let sock = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| sock_err("socket", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| sock_err("set O_NONBLOCK", e))?;
    if let Some(k) = key {
        tcp_md5::set_key(&sock, peer.address, k)?;
    }
    set_ttl(&SockRef::from(&sock), peer.address, session_ttl(peer))?;
    if let Some(src) = peer.source_address {
        sock.bind(&SocketAddr::new(src, 0).into())
            .map_err(|e| sock_err("bind to source_address", e))?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(sock.into());
    match tokio::time::timeout(timeout, socket.connect(remote)).await {
        Err(_) => Err(DriverError::ConnectTimeout {
            peer: peer.address,
            remote,
            after: timeout,
            hint: md5_hint(key.is_some()),
        }),
        Ok(Err(source)) => Err(DriverError::Connect {
            peer: peer.address,
            remote,
            source,
            hint: md5_hint(key.is_some()),
        }),
        Ok(Ok(s)) => Ok(s),
    }
}

/// A shared passive listener (one per address family) on the BGP port.
pub struct Listener {
    pub addr: SocketAddr,
    listener: Arc<TcpListener>,
    accept_task: JoinHandle<()>,
}

impl Listener {
    /// Bind `addr` (IPv6 listeners are V6ONLY: IPv4 peers use the IPv4 listener) and
    /// forward every accepted connection to `to`.
    pub fn bind(
        addr: SocketAddr,
        to: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    ) -> Result<Listener, DriverError> {
        let err = |op, source| DriverError::Listen { addr, op, source };
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| err("socket", e))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)
                .map_err(|e| err("setsockopt(IPV6_V6ONLY)", e))?;
        }
        sock.set_reuse_address(true)
            .map_err(|e| err("setsockopt(SO_REUSEADDR)", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| err("set O_NONBLOCK", e))?;
        sock.bind(&addr.into()).map_err(|e| err("bind", e))?;
        sock.listen(128).map_err(|e| err("listen", e))?;
        let listener = Arc::new(
            TcpListener::from_std(sock.into()).map_err(|e| err("register with tokio", e))?,
        );
        let l = listener.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((stream, remote)) => {
                        if to.send((stream, remote)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(listen = %addr, error = %e, "BGP listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Listener {
            addr,
            listener,
            accept_task,
        })
    }

    /// Install (non-empty) or remove (empty) the TCP-MD5 key for `peer` on this listener.
    pub fn set_md5_key(&self, peer: IpAddr, key: &[u8]) -> Result<(), Md5Error> {
        tcp_md5::set_key(&*self.listener, peer, key)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Commands from the speaker to a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// The desired routes (the task diffs against what the session has been sent).
    SetRoutes(RouteSet),
    /// A connection the peer opened to our listener.
    Incoming(TcpStream),
    /// Withdraw everything, send Cease/Administrative Shutdown with this communication,
    /// close, then end the task and answer.
    Shutdown {
        communication: String,
        done: oneshot::Sender<()>,
    },
    /// The BFD session to watch (`None`: none). When it leaves Up for a path failure the
    /// BGP session is reset with Cease/BFD Down (RFC 5882 §4.3, RFC 9384).
    Bfd(Option<watch::Receiver<BfdStatus>>),
}

/// What a peer task publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub peer_asn: u32,
    pub state: State,
    pub router_id: Option<Ipv4Addr>,
    pub local: Option<SocketAddr>,
    pub established_since: Option<Instant>,
    /// Prefixes the current session has been sent.
    pub prefixes_advertised: usize,
    /// Over the task's lifetime.
    pub updates_received: u64,
    pub updates_sent: u64,
    pub established_count: u64,
    /// Why the session last went down or failed to come up.
    pub last_error: Option<String>,
}

impl PeerStatus {
    fn new(peer: &BgpPeer) -> Self {
        Self {
            address: peer.address,
            peer_asn: peer.peer_asn,
            state: State::Idle,
            router_id: None,
            local: None,
            established_since: None,
            prefixes_advertised: 0,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            last_error: None,
        }
    }
}

/// A peer task's handle on its `lb_bgp_*{peer="ip:port"}` series. The speaker
/// [`detach`](Self::detach)es it before it removes the series of a peer that left the
/// configuration, so the task, still sending its Cease, cannot bring them back.
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    peer: SocketAddr,
    metrics: Arc<std::sync::Mutex<Option<Metrics>>>,
}

impl PeerMetrics {
    pub fn new(metrics: Metrics, peer: SocketAddr) -> Self {
        Self {
            peer,
            metrics: Arc::new(std::sync::Mutex::new(Some(metrics))),
        }
    }

    /// No further updates from this handle (nor its clones).
    pub fn detach(&self) {
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Brings the series from `old` to `new`: the gauges to `new`'s values, the counters up
    /// by the UPDATEs sent and received in between (both only grow over a task's life).
    pub fn report(&self, old: &PeerStatus, new: &PeerStatus) {
        let guard = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = guard.as_ref() else { return };
        m.set_bgp_session_up(self.peer, new.state == State::Established);
        m.set_bgp_announced_prefixes(self.peer, new.prefixes_advertised as u64);
        m.bgp_updates_sent(self.peer, new.updates_sent.saturating_sub(old.updates_sent));
        m.bgp_updates_received(
            self.peer,
            new.updates_received.saturating_sub(old.updates_received),
        );
    }
}

/// Settings of the driver that are not per peer.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub connect_timeout: Duration,
    /// Router ID for peers without one (else from the session's local IPv4 address).
    pub router_id: Option<Ipv4Addr>,
    /// How long a shutdown waits for the NOTIFICATION to be written.
    pub flush_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            router_id: None,
            flush_timeout: Duration::from_secs(2),
        }
    }
}

/// Start the task for `peer`. It runs until `Shutdown` or until the command channel closes
/// (then it stops the same way with an empty communication).
/// Its status goes to `metrics` too (the series exist from the start, session down).
pub fn spawn_peer(
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    initial_routes: RouteSet,
    metrics: PeerMetrics,
) -> (
    mpsc::UnboundedSender<PeerCommand>,
    watch::Receiver<PeerStatus>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let initial = PeerStatus::new(&peer);
    metrics.report(&initial, &initial);
    let (status_tx, status_rx) = watch::channel(initial);
    let task = tokio::spawn(async move {
        run_peer(peer, key, options, initial_routes, rx, status_tx, metrics).await;
    });
    (tx, status_rx, task)
}

enum Event {
    Bytes(u64, Vec<u8>),
    Closed(u64),
    Dialed(u64, Result<TcpStream, DriverError>),
}

struct Conn {
    id: u64,
    session: Session,
    origin: ConnectionOrigin,
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    writer_task: Option<JoinHandle<()>>,
    reader_task: Option<JoinHandle<()>>,
}

impl Conn {
    fn has_connection(&self) -> bool {
        matches!(
            self.session.state(),
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    /// Stop reading; let the writer drain its queue and close.
    fn close(&mut self) {
        self.writer = None;
        if let Some(r) = self.reader_task.take() {
            r.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

struct PeerTask {
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    router_id: Ipv4Addr,
    primary: Conn,
    secondary: Option<Conn>,
    next_id: u64,
    dial: Option<(u64, Instant, JoinHandle<()>)>,
    events_tx: mpsc::UnboundedSender<Event>,
    desired: RouteSet,
    /// What the Established session has been sent.
    sent: RouteSet,
    established_since: Option<Instant>,
    updates_received: u64,
    updates_sent: u64,
    established_count: u64,
    last_error: Option<String>,
    /// Last dial error logged, to log a repeated failure once.
    last_dial_error: Option<String>,
    metrics: PeerMetrics,
}

fn describe(reason: &DownReason) -> String {
    match reason {
        DownReason::ManualStop => "stopped".into(),
        DownReason::HoldTimerExpired => "hold timer expired".into(),
        DownReason::TcpClosed => "TCP connection closed".into(),
        DownReason::CollisionLost => "connection collision resolution".into(),
        DownReason::NotificationReceived(n) => format!("NOTIFICATION received: {n}"),
        DownReason::NotificationSent(n) => format!("NOTIFICATION sent: {n}"),
        DownReason::Malformed(e) => format!("malformed message: {e}"),
    }
}

async fn run_peer(
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    initial_routes: RouteSet,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
    status: watch::Sender<PeerStatus>,
    metrics: PeerMetrics,
) {
    // Without a router ID there is no OPEN to send: retry, answering commands meanwhile.
    let mut desired = initial_routes;
    let mut bfd = BfdWatch::default();
    let router_id = loop {
        match resolve_router_id(&peer, options.router_id) {
            Ok(id) => break id,
            Err(e) => {
                warn!(peer = %peer.address, error = %e, "BGP session cannot start");
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                let wait = tokio::time::sleep(Duration::from_secs(5));
                tokio::select! {
                    _ = wait => {}
                    cmd = commands.recv() => match cmd {
                        Some(PeerCommand::SetRoutes(r)) => desired = r,
                        Some(PeerCommand::Incoming(_)) => {}
                        Some(PeerCommand::Bfd(w)) => bfd.set(w),
                        Some(PeerCommand::Shutdown { done, .. }) => {
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                }
            }
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let session = Session::new(session_config(&peer, router_id));
    let mut t = PeerTask {
        primary: Conn {
            id: 0,
            session,
            origin: ConnectionOrigin::Local,
            writer: None,
            writer_task: None,
            reader_task: None,
        },
        peer,
        key,
        options,
        router_id,
        secondary: None,
        next_id: 1,
        dial: None,
        events_tx,
        desired,
        sent: RouteSet::new(),
        established_since: None,
        updates_received: 0,
        updates_sent: 0,
        established_count: 0,
        last_error: None,
        last_dial_error: None,
        metrics,
    };
    let out = t.primary.session.step(Instant::now(), Input::ManualStart);
    t.apply(false, out);
    t.publish(&status);
    loop {
        let deadline = [
            t.primary.session.next_deadline(),
            t.secondary.as_ref().and_then(|c| c.session.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(PeerCommand::SetRoutes(r)) => {
                    t.desired = r;
                    t.sync_routes(false);
                }
                Some(PeerCommand::Incoming(stream)) => t.incoming(stream),
                Some(PeerCommand::Bfd(w)) => bfd.set(w),
                Some(PeerCommand::Shutdown { communication, done }) => {
                    t.shutdown(&communication).await;
                    t.publish(&status);
                    let _ = done.send(());
                    return;
                }
                None => {
                    t.shutdown("").await;
                    return;
                }
            },
            Some(ev) = events.recv() => t.event(ev),
            _ = timer => t.tick(),
            failed = bfd.failed() => if failed {
                warn!(peer = %t.peer.address, "BFD down: resetting the BGP session (Cease/BFD Down)");
                t.step(false, Input::BfdDown);
                t.step(true, Input::BfdDown);
            },
        }
        t.normalize();
        t.publish(&status);
    }
}

/// The peer's BFD session as the peer task sees it: the failure count already acted on.
#[derive(Default)]
struct BfdWatch {
    rx: Option<watch::Receiver<BfdStatus>>,
    failures: u64,
}

impl BfdWatch {
    fn set(&mut self, rx: Option<watch::Receiver<BfdStatus>>) {
        self.failures = rx.as_ref().map_or(0, |r| r.borrow().failures);
        self.rx = rx;
    }

    /// Resolves on a change: `true` when the session failed since the last call. Never
    /// resolves without a BFD session.
    async fn failed(&mut self) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_err() {
            self.rx = None; // the BFD session was removed
            return false;
        }
        let f = rx.borrow_and_update().failures;
        let failed = f > self.failures;
        self.failures = f;
        failed
    }
}

impl PeerTask {
    fn conn_mut(&mut self, id: u64) -> Option<(bool, &mut Conn)> {
        if self.primary.id == id {
            return Some((false, &mut self.primary));
        }
        match &mut self.secondary {
            Some(c) if c.id == id => Some((true, c)),
            _ => None,
        }
    }

    fn step(&mut self, secondary: bool, input: Input) {
        let now = Instant::now();
        let out = if secondary {
            match &mut self.secondary {
                Some(c) => c.session.step(now, input),
                None => return,
            }
        } else {
            self.primary.session.step(now, input)
        };
        self.apply(secondary, out);
    }

    fn tick(&mut self) {
        self.step(false, Input::Tick);
        self.step(true, Input::Tick);
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Bytes(id, bytes) => {
                if let Some((sec, _)) = self.conn_mut(id) {
                    self.step(sec, Input::Bytes(bytes));
                }
            }
            Event::Closed(id) => {
                if let Some((sec, _)) = self.conn_mut(id) {
                    self.step(sec, Input::TcpClosed);
                }
            }
            Event::Dialed(attempt, result) => {
                if self.dial.as_ref().map(|d| d.0) != Some(attempt) {
                    return; // abandoned attempt
                }
                self.dial = None;
                if self.primary.session.state() != State::Connect {
                    return;
                }
                match result {
                    Ok(stream) => {
                        self.last_dial_error = None;
                        self.attach(false, stream, ConnectionOrigin::Local);
                    }
                    Err(e) => {
                        self.dial_failed(&e);
                        self.step(false, Input::TcpConnectFailed);
                    }
                }
            }
        }
    }

    /// Log a failed dial (once while it keeps failing the same way).
    fn dial_failed(&mut self, e: &DriverError) {
        let text = e.to_string();
        // Compare without the kernel counters, which change every time.
        let key = text.split("; TCP-MD5").next().unwrap_or("").to_string();
        if self.last_dial_error.as_deref() != Some(key.as_str()) {
            info!(peer = %self.peer.address, error = %text, "BGP connect failed");
        } else {
            debug!(peer = %self.peer.address, error = %text, "BGP connect failed");
        }
        self.last_dial_error = Some(key);
        self.last_error = Some(text);
    }

    /// Give `stream` to a session: set socket options, start reader and writer, feed
    /// `TcpConnected`.
    fn attach(&mut self, secondary: bool, stream: TcpStream, origin: ConnectionOrigin) {
        let (local, remote) = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(l), Ok(r)) => (l, r),
            _ => {
                if !secondary {
                    self.step(false, Input::TcpConnectFailed);
                }
                return;
            }
        };
        if let Err(e) = set_ttl(
            &SockRef::from(&stream),
            self.peer.address,
            session_ttl(&self.peer),
        ) {
            warn!(peer = %self.peer.address, error = %e, "BGP: cannot set the session TTL");
        }
        let _ = stream.set_nodelay(true);
        let id = self.next_id;
        self.next_id += 1;
        let (mut rd, mut wr) = stream.into_split();
        let events = self.events_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = events.send(Event::Closed(id));
                        return;
                    }
                    Ok(n) => {
                        if events.send(Event::Bytes(id, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = wrx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let conn = if secondary {
            let mut s = Session::new(session_config(&self.peer, self.router_id));
            // Its own dial is never made: the connection is the peer's.
            let _ = s.step(Instant::now(), Input::ManualStart);
            self.secondary = Some(Conn {
                id,
                session: s,
                origin,
                writer: None,
                writer_task: None,
                reader_task: None,
            });
            match &mut self.secondary {
                Some(c) => c,
                None => return,
            }
        } else {
            &mut self.primary
        };
        conn.close();
        conn.id = id;
        conn.origin = origin;
        conn.writer = Some(wtx);
        conn.writer_task = Some(writer);
        conn.reader_task = Some(reader);
        self.step(secondary, Input::TcpConnected { local, remote });
    }

    fn incoming(&mut self, stream: TcpStream) {
        match self.primary.session.state() {
            State::Connect | State::Active => {
                if let Some((_, _, d)) = self.dial.take() {
                    d.abort();
                }
                self.attach(false, stream, ConnectionOrigin::Remote);
            }
            State::OpenSent | State::OpenConfirm if self.secondary.is_none() => {
                self.attach(true, stream, ConnectionOrigin::Remote);
            }
            // Idle (stopped or backing off), Established (RFC 4271 §6.8: the new connection
            // is closed), or already two connections: refuse.
            s => debug!(peer = %self.peer.address, state = ?s, "BGP: refusing incoming connection"),
        }
    }

    /// Carry out a session's outputs.
    fn apply(&mut self, secondary: bool, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Connect => {
                    if secondary {
                        continue;
                    }
                    self.start_dial();
                }
                Output::Send(bytes) => {
                    let c = if secondary {
                        self.secondary.as_mut()
                    } else {
                        Some(&mut self.primary)
                    };
                    if let Some(w) = c.and_then(|c| c.writer.as_ref()) {
                        let _ = w.send(bytes);
                    }
                }
                Output::CloseTcp => {
                    if secondary {
                        if let Some(c) = &mut self.secondary {
                            c.close();
                        }
                    } else {
                        if let Some((_, started, d)) = self.dial.take() {
                            d.abort();
                            // Still in Connect: the retry timer gave up on this dial.
                            if self.primary.session.state() == State::Connect {
                                let e = DriverError::ConnectTimeout {
                                    peer: self.peer.address,
                                    remote: SocketAddr::new(self.peer.address, self.peer.port),
                                    after: started.elapsed(),
                                    hint: md5_hint(self.key.is_some()),
                                };
                                self.dial_failed(&e);
                            }
                        }
                        self.primary.close();
                    }
                }
                Output::StateChanged { from, to } => {
                    debug!(peer = %self.peer.address, ?from, ?to, secondary, "BGP state");
                }
                Output::Established(n) => self.established(secondary, n),
                Output::Down { reason } => {
                    let why = describe(&reason);
                    warn!(peer = %self.peer.address, reason = %why, "BGP session down");
                    self.last_error = Some(why);
                    self.established_since = None;
                    self.sent.clear();
                }
                Output::ConnectionFailed { reason } => {
                    let why = describe(&reason);
                    if !matches!(reason, DownReason::CollisionLost) {
                        info!(peer = %self.peer.address, reason = %why, "BGP connection failed before Established");
                        self.last_error = Some(why);
                    }
                }
                Output::RouteRefreshRequested(family) => {
                    debug!(peer = %self.peer.address, ?family, "BGP route refresh requested");
                    let v6 = family == Family::IPV6_UNICAST;
                    self.sent.retain(|p, _| p.addr().is_ipv6() != v6);
                    self.sync_routes(false);
                }
            }
        }
    }

    fn start_dial(&mut self) {
        if let Some((_, _, d)) = self.dial.take() {
            d.abort();
        }
        let attempt = self.next_id;
        self.next_id += 1;
        let peer = self.peer.clone();
        let key = self.key.clone();
        let timeout = self.options.connect_timeout;
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            let r = dial(&peer, key.as_deref(), timeout).await;
            let _ = events.send(Event::Dialed(attempt, r));
        });
        self.dial = Some((attempt, Instant::now(), task));
    }

    fn established(&mut self, secondary: bool, n: Negotiated) {
        if secondary {
            // The second connection won (§6.8: an Established one stays): the first closes
            // with Cease/Connection Collision Resolution and the second becomes the session.
            self.step(false, Input::CollisionLost);
            if let Some(s) = self.secondary.take() {
                self.promote(s);
            }
        }
        info!(
            peer = %self.peer.address,
            local = %n.local,
            peer_asn = n.peer_asn,
            peer_id = %n.peer_id,
            hold_time = n.hold_time,
            "BGP session established"
        );
        self.established_since = Some(Instant::now());
        self.established_count += 1;
        self.last_error = None;
        self.sent.clear();
        self.sync_routes(true);
    }

    /// Send the difference between `sent` and `desired` on the Established session;
    /// `initial`: after the session came up, followed by End-of-RIB per family.
    fn sync_routes(&mut self, initial: bool) {
        if self.primary.session.state() != State::Established {
            return;
        }
        let Some(n) = self.primary.session.negotiated().cloned() else {
            return;
        };
        let local = n.local.ip();
        let wanted: RouteSet = self
            .desired
            .iter()
            .filter(|(p, _)| {
                p.addr().is_ipv6() == local.is_ipv6()
                    && n.family_enabled(if p.addr().is_ipv6() {
                        Family::IPV6_UNICAST
                    } else {
                        Family::IPV4_UNICAST
                    })
            })
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        let d = diff(&self.sent, &wanted);
        let params = PeerParams::from_negotiated(&n, self.peer.my_asn);
        let mut msgs = Vec::new();
        if !d.withdraw.is_empty() {
            msgs.extend(build_withdrawals(&params, &d.withdraw));
        }
        if !d.announce.is_empty() {
            match build_updates(&params, &to_advertisements(&d.announce, local)) {
                Ok(m) => msgs.extend(m),
                Err(e) => {
                    warn!(peer = %self.peer.address, error = %e, "BGP: cannot build UPDATEs");
                    return;
                }
            }
        }
        if initial {
            for (fam, on) in [
                (Family::IPV4_UNICAST, n.ipv4_unicast),
                (Family::IPV6_UNICAST, n.ipv6_unicast),
            ] {
                if on {
                    msgs.push(end_of_rib(fam));
                }
            }
        }
        if !d.is_empty() {
            let added: Vec<&IpNet> = d.announce.keys().collect();
            debug!(peer = %self.peer.address, announce = ?added, withdraw = ?d.withdraw, "BGP UPDATE");
        }
        self.sent = wanted;
        if !msgs.is_empty() {
            self.updates_sent += msgs.len() as u64;
            self.step(false, Input::SendUpdates(msgs));
        }
    }

    /// Keep at most one connection per state of affairs: drop a dead second one, promote a
    /// live second one over a dead primary, resolve collisions.
    fn normalize(&mut self) {
        let Some(sec) = &self.secondary else {
            return;
        };
        if !sec.has_connection() {
            self.secondary = None;
            return;
        }
        if !self.primary.has_connection() {
            if let Some((_, _, d)) = self.dial.take() {
                d.abort();
            }
            if let Some(s) = self.secondary.take() {
                self.promote(s);
            }
            return;
        }
        // Both connected: resolve once someone has the peer's BGP identifier.
        let remote_id = self
            .primary
            .session
            .peer_open()
            .or(sec.session.peer_open())
            .map(|o| o.bgp_id);
        // (An Established session always has the peer's OPEN.)
        let Some(remote_id) = remote_id else {
            return;
        };
        let keep = if sec.session.state() == State::Established {
            Keep::New
        } else {
            fsm::resolve_collision(
                self.router_id,
                remote_id,
                self.primary.origin,
                self.primary.session.state(),
            )
        };
        debug!(peer = %self.peer.address, ?keep, "BGP connection collision");
        match keep {
            Keep::Existing => {
                self.step(true, Input::CollisionLost);
                self.secondary = None;
            }
            Keep::New => {
                self.step(false, Input::CollisionLost);
                if let Some(s) = self.secondary.take() {
                    self.promote(s);
                }
            }
        }
    }

    /// Make `c` the primary connection; keep the counters of the one it replaces.
    fn promote(&mut self, c: Conn) {
        let old = std::mem::replace(&mut self.primary, c);
        self.updates_received += old.session.stats().updates_in;
    }

    async fn shutdown(&mut self, communication: &str) {
        if self.primary.session.state() == State::Established && !self.sent.is_empty() {
            if let Some(n) = self.primary.session.negotiated().cloned() {
                let params = PeerParams::from_negotiated(&n, self.peer.my_asn);
                let prefixes: Vec<IpNet> = self.sent.keys().copied().collect();
                let msgs = build_withdrawals(&params, &prefixes);
                self.updates_sent += msgs.len() as u64;
                self.step(false, Input::SendUpdates(msgs));
            }
            self.sent.clear();
        }
        let stop = Input::ManualStop {
            communication: communication.to_string(),
        };
        self.step(true, stop.clone());
        self.step(false, stop);
        if let Some((_, _, d)) = self.dial.take() {
            d.abort();
        }
        let mut writers: Vec<JoinHandle<()>> = Vec::new();
        for c in std::iter::once(&mut self.primary).chain(self.secondary.as_mut()) {
            c.close();
            writers.extend(c.writer_task.take());
        }
        let flush = async {
            for w in writers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(self.options.flush_timeout, flush)
            .await
            .is_err()
        {
            warn!(peer = %self.peer.address, "BGP: NOTIFICATION not flushed before the timeout");
        }
        info!(peer = %self.peer.address, communication, "BGP session shut down");
    }

    fn publish(&self, status: &watch::Sender<PeerStatus>) {
        let stats = self.primary.session.stats();
        let s = PeerStatus {
            address: self.peer.address,
            peer_asn: self.peer.peer_asn,
            state: self.primary.session.state(),
            router_id: Some(self.router_id),
            local: self.primary.session.negotiated().map(|n| n.local),
            established_since: self.established_since,
            prefixes_advertised: self.sent.len(),
            updates_received: self.updates_received + stats.updates_in,
            updates_sent: self.updates_sent,
            established_count: self.established_count,
            last_error: self.last_error.clone(),
        };
        status.send_if_modified(|old| {
            if *old != s {
                self.metrics.report(old, &s);
                *old = s;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, my: u32, their: u32) -> BgpPeer {
        BgpPeer {
            hold_time: Duration::from_secs(9),
            keepalive_time: Duration::from_secs(3),
            ..BgpPeer::new(my, their, addr.parse().unwrap())
        }
    }

    fn sample_value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn peer_metrics_follow_status_and_count_update_deltas() {
        let m = Metrics::new();
        let addr: SocketAddr = "10.0.0.1:179".parse().unwrap();
        let pm = PeerMetrics::new(m.clone(), addr);
        let idle = PeerStatus::new(&peer("10.0.0.1", 1, 2));
        pm.report(&idle, &idle);
        let text = m.encode();
        assert_eq!(
            sample_value(&text, "lb_bgp_session_up{peer=\"10.0.0.1:179\"}"),
            Some(0.0)
        );
        let up = PeerStatus {
            state: State::Established,
            prefixes_advertised: 2,
            updates_sent: 3,
            updates_received: 4,
            ..idle.clone()
        };
        pm.report(&idle, &up);
        let more = PeerStatus {
            updates_sent: 5,
            updates_received: 4,
            ..up.clone()
        };
        pm.report(&up, &more);
        let text = m.encode();
        let v = |n: &str| sample_value(&text, &format!("{n}{{peer=\"10.0.0.1:179\"}}"));
        assert_eq!(v("lb_bgp_session_up"), Some(1.0));
        assert_eq!(v("lb_bgp_announced_prefixes_total"), Some(2.0));
        assert_eq!(v("lb_bgp_updates_total"), Some(5.0));
        assert_eq!(v("lb_bgp_updates_received_total"), Some(4.0));
    }

    #[test]
    fn detached_peer_metrics_cannot_revive_removed_series() {
        let m = Metrics::new();
        let addr: SocketAddr = "10.0.0.1:179".parse().unwrap();
        let pm = PeerMetrics::new(m.clone(), addr);
        let idle = PeerStatus::new(&peer("10.0.0.1", 1, 2));
        pm.report(&idle, &idle);
        pm.detach();
        m.remove_bgp_peer(addr);
        // The task's last publication, after its Cease.
        pm.report(&idle, &idle);
        assert!(!m.encode().contains("10.0.0.1"));
    }

    #[test]
    fn ttl_is_one_for_ebgp_multihop_when_set_and_255_for_ibgp() {
        assert_eq!(session_ttl(&peer("10.0.0.1", 1, 2)), 1);
        let mut p = peer("10.0.0.1", 1, 2);
        p.ebgp_multihop = 3;
        assert_eq!(session_ttl(&p), 3);
        assert_eq!(session_ttl(&peer("10.0.0.1", 1, 1)), 255);
    }

    #[test]
    fn router_id_prefers_config_then_ipv4_source_then_fallback() {
        let mut p = peer("10.0.0.1", 1, 2);
        p.router_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        p.source_address = Some("10.0.0.3".parse().unwrap());
        assert_eq!(
            resolve_router_id(&p, None).unwrap(),
            Ipv4Addr::new(1, 1, 1, 1)
        );
        p.router_id = None;
        assert_eq!(
            resolve_router_id(&p, None).unwrap(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
        let v6 = peer("fd00::1", 1, 2);
        assert_eq!(
            resolve_router_id(&v6, Some(Ipv4Addr::new(2, 2, 2, 2))).unwrap(),
            Ipv4Addr::new(2, 2, 2, 2)
        );
    }

    #[test]
    fn ipv6_peer_without_any_router_id_is_an_error_naming_the_peer() {
        let err = resolve_router_id(&peer("fd00::1", 1, 2), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("fd00::1") && text.contains("router_id"),
            "{text}"
        );
    }

    #[test]
    fn ipv4_peer_router_id_is_the_local_address_towards_it() {
        // Loopback: the kernel picks 127.0.0.1 as the source towards 127.0.0.1.
        let id = resolve_router_id(&peer("127.0.0.1", 1, 2), None).unwrap();
        assert_eq!(id, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn session_config_carries_timers_and_passive_flag() {
        let mut p = peer("10.0.0.1", 64500, 64501);
        p.passive = true;
        p.connect_delay = Duration::from_secs(2);
        let c = session_config(&p, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(c.hold_time, 9);
        assert_eq!(c.keepalive_time, Some(3));
        assert!(c.passive);
        assert_eq!(c.first_connect_delay, Duration::from_secs(2));
        assert_eq!((c.local_asn, c.peer_asn), (64500, 64501));
    }

    #[test]
    fn password_file_is_read_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut p = peer("10.0.0.1", 1, 2);
        p.password_file = Some(f);
        assert_eq!(read_password(&p).unwrap(), Some(b"s3cret".to_vec()));
        p.password_file = Some(dir.path().join("missing"));
        let err = read_password(&p).unwrap_err().to_string();
        assert!(err.contains("10.0.0.1") && err.contains("missing"), "{err}");
    }

    #[test]
    fn md5_counters_are_read_from_proc() {
        // Present on every kernel with TCP-MD5 support (the lab's has it).
        assert!(md5_counters().is_some());
    }
}
