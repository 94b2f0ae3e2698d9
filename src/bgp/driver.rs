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

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::advertise::RouteSet;
use super::fsm::{SessionConfig, State};
use super::peer::{Event as PeerEvent, Input as PeerInput, Output as PeerOutput, Peer, PeerConfig};
use crate::bfd::driver::BfdStatus;
use crate::config::BgpPeer;
use crate::control::metrics::Metrics;
use crate::driver;
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
    format!("{}{counters}", super::peer::MD5_HINT)
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
    /// Changes to them (`None`: the prefix is withdrawn).
    RouteChanges(Vec<(ipnet::IpNet, Option<super::advertise::RouteAttrs>)>),
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

pub use super::peer::PeerStatus;

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
    let initial = PeerStatus::new(peer.address, peer.peer_asn);
    metrics.report(&initial, &initial);
    let (status_tx, status_rx) = watch::channel(initial);
    let task = tokio::spawn(async move {
        run_peer(peer, key, options, initial_routes, rx, status_tx, metrics).await;
    });
    (tx, status_rx, task)
}

/// Reader, writer and dial tasks report here.
enum Event {
    Bytes(u64, Vec<u8>),
    Closed(u64),
    Dialed(u64, Result<TcpStream, DriverError>),
}

/// One TCP connection: the writer drains its queue before closing, so a NOTIFICATION queued
/// just before `Close` reaches the peer.
struct Connection {
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    writer_task: Option<JoinHandle<()>>,
    reader_task: JoinHandle<()>,
}

impl Connection {
    /// Stop reading; let the writer drain its queue and close.
    fn close(&mut self) {
        self.writer = None;
        self.reader_task.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// The peer task's I/O: commands from the speaker, the BFD watch, the connections and the
/// pending dial; the status watch and metrics it publishes to.
struct Shell {
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    commands: mpsc::UnboundedReceiver<PeerCommand>,
    bfd: BfdWatch,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    conns: BTreeMap<u64, Connection>,
    dial: Option<(u64, JoinHandle<()>)>,
    /// The stream of the `Incoming` / `Dialed` input being stepped.
    pending: Option<TcpStream>,
    /// The shutdown being carried out: its communication and who waits for it.
    stopping: Option<(String, Option<oneshot::Sender<()>>)>,
    status: watch::Sender<PeerStatus>,
    metrics: PeerMetrics,
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
                        Some(PeerCommand::RouteChanges(changes)) => {
                            for (prefix, attrs) in changes {
                                match attrs {
                                    Some(a) => desired.insert(prefix, a),
                                    None => desired.remove(&prefix),
                                };
                            }
                        }
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
    let config = PeerConfig {
        address: peer.address,
        port: peer.port,
        my_asn: peer.my_asn,
        router_id,
        md5: key.is_some(),
        session: session_config(&peer, router_id),
    };
    let mut machine = Peer::new(config, desired);
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut shell = Shell {
        peer,
        key,
        options,
        commands,
        bfd,
        events_tx,
        events,
        conns: BTreeMap::new(),
        dial: None,
        pending: None,
        stopping: None,
        status,
        metrics,
    };
    let now = driver::now();
    let out = machine.step(now, PeerInput::Start);
    let _ = driver::Shell::carry(&mut shell, now, &machine, out).await;
    driver::run(&mut machine, &mut shell).await;
}

impl driver::Shell<Peer> for Shell {
    async fn next_input(&mut self) -> Option<PeerInput> {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(PeerCommand::SetRoutes(r)) => return Some(PeerInput::SetRoutes(r)),
                    Some(PeerCommand::RouteChanges(c)) => return Some(PeerInput::RouteChanges(c)),
                    Some(PeerCommand::Incoming(stream)) => {
                        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
                            continue; // already gone
                        };
                        self.pending = Some(stream);
                        return Some(PeerInput::Incoming { local, remote });
                    }
                    Some(PeerCommand::Bfd(w)) => self.bfd.set(w),
                    Some(PeerCommand::Shutdown { communication, done }) => {
                        self.stopping = Some((communication.clone(), Some(done)));
                        return Some(PeerInput::Shutdown { communication });
                    }
                    // The speaker is gone: stop the same way, without a communication.
                    None => {
                        self.stopping = Some((String::new(), None));
                        return Some(PeerInput::Shutdown { communication: String::new() });
                    }
                },
                Some(ev) = self.events.recv() => return Some(match ev {
                    Event::Bytes(conn, bytes) => PeerInput::Bytes { conn, bytes },
                    Event::Closed(conn) => PeerInput::Closed { conn },
                    Event::Dialed(attempt, Ok(stream)) => {
                        match (stream.local_addr(), stream.peer_addr()) {
                            (Ok(local), Ok(remote)) => {
                                self.pending = Some(stream);
                                PeerInput::Dialed { attempt, local, remote }
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                let error = format!("BGP peer {}: connection lost at once: {e}", self.peer.address);
                                PeerInput::DialFailed { attempt, key: error.clone(), error }
                            }
                        }
                    }
                    Event::Dialed(attempt, Err(e)) => {
                        let error = e.to_string();
                        // Compare without the kernel counters, which change every time.
                        let key = error.split("; TCP-MD5").next().unwrap_or("").to_string();
                        PeerInput::DialFailed { attempt, error, key }
                    }
                }),
                failed = self.bfd.failed() => if failed {
                    return Some(PeerInput::BfdDown);
                },
            }
        }
    }

    async fn carry(&mut self, _: Instant, machine: &Peer, out: Vec<PeerOutput>) -> ControlFlow<()> {
        for o in out {
            match o {
                PeerOutput::Dial { attempt } => self.start_dial(attempt),
                PeerOutput::AbortDial { attempt } => {
                    if let Some((a, task)) = self.dial.take() {
                        if a == attempt {
                            task.abort();
                        } else {
                            self.dial = Some((a, task));
                        }
                    }
                }
                PeerOutput::Attach { conn } => {
                    if let Some(stream) = self.pending.take() {
                        self.attach(conn, stream);
                    }
                }
                PeerOutput::Refuse => self.pending = None,
                PeerOutput::Send { conn, bytes } => {
                    if let Some(w) = self.conns.get(&conn).and_then(|c| c.writer.as_ref()) {
                        let _ = w.send(bytes);
                    }
                }
                PeerOutput::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        c.close();
                        // The writer finishes on its own; only a shutdown waits for it.
                        if self.stopping.is_some() {
                            self.conns.insert(conn, c);
                        }
                    }
                }
                PeerOutput::Log(ev) => self.log(&ev),
                PeerOutput::Stopped => {
                    self.flush().await;
                    self.publish(machine);
                    if let Some((communication, done)) = self.stopping.take() {
                        info!(peer = %self.peer.address, communication, "BGP session shut down");
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    return ControlFlow::Break(());
                }
            }
        }
        self.pending = None;
        self.publish(machine);
        ControlFlow::Continue(())
    }
}

impl Shell {
    fn start_dial(&mut self, attempt: u64) {
        if let Some((_, d)) = self.dial.take() {
            d.abort();
        }
        let peer = self.peer.clone();
        let key = self.key.clone();
        let timeout = self.options.connect_timeout;
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            let r = dial(&peer, key.as_deref(), timeout).await;
            let _ = events.send(Event::Dialed(attempt, r));
        });
        self.dial = Some((attempt, task));
    }

    /// Connection `id` on `stream`: session TTL, reader and writer tasks.
    fn attach(&mut self, id: u64, stream: TcpStream) {
        if let Err(e) = set_ttl(
            &SockRef::from(&stream),
            self.peer.address,
            session_ttl(&self.peer),
        ) {
            warn!(peer = %self.peer.address, error = %e, "BGP: cannot set the session TTL");
        }
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let events = self.events_tx.clone();
        let reader_task = tokio::spawn(async move {
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
        let writer_task = tokio::spawn(async move {
            while let Some(bytes) = wrx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        self.conns.insert(
            id,
            Connection {
                writer: Some(wtx),
                writer_task: Some(writer_task),
                reader_task,
            },
        );
    }

    /// Waits (bounded) for every closing connection's writer to drain its queue.
    async fn flush(&mut self) {
        if let Some((_, d)) = self.dial.take() {
            d.abort();
        }
        let mut writers: Vec<JoinHandle<()>> = Vec::new();
        for c in self.conns.values_mut() {
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
        self.conns.clear();
    }

    fn log(&self, ev: &PeerEvent) {
        let peer = self.peer.address;
        match ev {
            PeerEvent::StateChanged {
                from,
                to,
                secondary,
            } => {
                debug!(peer = %peer, ?from, ?to, secondary, "BGP state")
            }
            PeerEvent::Established(n) => info!(
                peer = %peer,
                local = %n.local,
                peer_asn = n.peer_asn,
                peer_id = %n.peer_id,
                hold_time = n.hold_time,
                "BGP session established"
            ),
            PeerEvent::Down { reason } => warn!(peer = %peer, reason = %reason, "BGP session down"),
            PeerEvent::ConnectionFailed { reason } => {
                info!(peer = %peer, reason = %reason, "BGP connection failed before Established")
            }
            PeerEvent::DialFailed { error, repeated } => {
                if *repeated {
                    debug!(peer = %peer, error = %error, "BGP connect failed");
                } else {
                    info!(peer = %peer, error = %error, "BGP connect failed");
                }
            }
            PeerEvent::DialTimedOut { error, repeated } => {
                // The machine's text ends with the TCP-MD5 hint when a key is set; the
                // kernel's counters of dropped segments complete it here.
                let error = match (self.key.is_some(), md5_counters()) {
                    (true, Some((f, n))) => {
                        format!("{error} (kernel: TCPMD5Failure={f}, TCPMD5NotFound={n})")
                    }
                    _ => error.clone(),
                };
                if *repeated {
                    debug!(peer = %peer, error = %error, "BGP connect failed");
                } else {
                    info!(peer = %peer, error = %error, "BGP connect failed");
                }
            }
            PeerEvent::RefusedIncoming { state } => {
                debug!(peer = %peer, state = ?state, "BGP: refusing incoming connection")
            }
            PeerEvent::Collision { keep } => {
                debug!(peer = %peer, ?keep, "BGP connection collision")
            }
            PeerEvent::RouteRefreshRequested(family) => {
                debug!(peer = %peer, ?family, "BGP route refresh requested")
            }
            PeerEvent::Updates { announce, withdraw } => {
                debug!(peer = %peer, announce = ?announce, withdraw = ?withdraw, "BGP UPDATE")
            }
            PeerEvent::BuildFailed { error } => {
                warn!(peer = %peer, error = %error, "BGP: cannot build UPDATEs")
            }
            PeerEvent::BfdDown => {
                warn!(peer = %peer, "BFD down: resetting the BGP session (Cease/BFD Down)")
            }
        }
    }

    fn publish(&self, machine: &Peer) {
        let s = machine.status();
        self.status.send_if_modified(|old| {
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
        let idle = PeerStatus::new("10.0.0.1".parse().unwrap(), 2);
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
        let idle = PeerStatus::new("10.0.0.1".parse().unwrap(), 2);
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
