//! Single-hop BFD over UDP (RFC 5881): one tokio task running the pure [`Sessions`] (every
//! session's state machine, demultiplexing, discriminators) with [`crate::driver::run`];
//! this module owns the sockets.
//!
//! ```text
//!  BfdHandle ──Command──▶ task ──Send──▶ per-session UDP socket (src port 49152–65535,
//!                          │  ▲                                     TTL/hop limit 255) ──▶ peer:3784
//!  UDP :3784 (v4, v6) ─────┘  └── reader tasks: (source, TTL, bytes), GTSM check
//!                          └──▶ watch<BfdStatus> per peer (the BGP peer task watches it)
//! ```
//!
//! Demultiplexing, the GTSM check and discriminators: see `lb_core::bfd::sessions`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::codec::State;
use super::session::Timers;
use super::sessions::{Event, Input, Output, Sessions};
use crate::control::metrics::Metrics;
use crate::driver;
use crate::sys::udp_ttl;

/// RFC 5881 §4: Control packets go to this UDP port.
pub const CONTROL_PORT: u16 = 3784;
pub use super::sessions::{BfdStatus, SOURCE_PORTS, TTL};

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("BFD: no UDP port {port} socket could be bound (IPv4: {v4}; IPv6: {v6})")]
    NoListener { port: u16, v4: String, v6: String },
    #[error("BFD peer {peer}: {op}: {source}")]
    Socket {
        peer: IpAddr,
        op: &'static str,
        source: io::Error,
    },
    #[error("BFD peer {peer}: no free UDP source port in 49152-65535")]
    NoSourcePort { peer: IpAddr },
}

#[derive(Clone, Debug)]
pub struct BfdOptions {
    /// Port to receive on (3784; tests use others).
    pub listen_port: u16,
    /// Port the peers receive on (3784).
    pub peer_port: u16,
    /// Seed of the jitter and discriminator PRNG; `None`: from the clock.
    pub seed: Option<u64>,
    /// Where each session's state goes (`lb_bfd_*{peer}`); `None`: nowhere.
    pub metrics: Option<Metrics>,
}

impl Default for BfdOptions {
    fn default() -> Self {
        Self {
            listen_port: CONTROL_PORT,
            peer_port: CONTROL_PORT,
            seed: None,
            metrics: None,
        }
    }
}

enum Command {
    Add {
        peer: IpAddr,
        source: Option<IpAddr>,
        timers: Timers,
        status: watch::Sender<BfdStatus>,
    },
    SetTimers(IpAddr, Timers),
    Remove(IpAddr),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the BFD task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone)]
pub struct BfdHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl BfdHandle {
    /// Start the task (inside a tokio runtime): binds the receive sockets (IPv4 and IPv6;
    /// an error only when neither binds).
    pub fn spawn(options: BfdOptions) -> Result<BfdHandle, BfdError> {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        let mut errors = Vec::new();
        for ip in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            let addr = SocketAddr::new(ip, options.listen_port);
            match bind_listener(addr) {
                Ok(sock) => {
                    debug!(listen = %addr, "BFD listening");
                    readers.push(tokio::spawn(read_loop(sock, in_tx.clone())));
                    errors.push(String::new());
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if readers.is_empty() {
            return Err(BfdError::NoListener {
                port: options.listen_port,
                v4: errors[0].clone(),
                v6: errors[1].clone(),
            });
        }
        for (fam, e) in ["IPv4", "IPv6"].iter().zip(&errors) {
            if !e.is_empty() {
                warn!(family = fam, error = %e, "BFD: cannot receive on this address family");
            }
        }
        let seed = options.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()) << 32
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shell = Shell {
            peer_port: options.peer_port,
            commands: rx,
            incoming: in_rx,
            sockets: BTreeMap::new(),
            statuses: BTreeMap::new(),
            pending_status: None,
            metrics: options.metrics,
            done: None,
            _readers: readers.into_iter().map(AbortOnDrop).collect(),
        };
        tokio::spawn(async move {
            let mut sessions = Sessions::new(seed);
            driver::run(&mut sessions, &mut shell).await;
        });
        Ok(BfdHandle { tx })
    }

    /// Start a session to `peer` from `source` (`None`: the address the kernel picks
    /// towards the peer). Replaces an existing session to the same peer.
    pub fn add(
        &self,
        peer: IpAddr,
        source: Option<IpAddr>,
        timers: Timers,
    ) -> watch::Receiver<BfdStatus> {
        let (status, rx) = watch::channel(BfdStatus::initial(peer));
        let _ = self.tx.send(Command::Add {
            peer,
            source,
            timers,
            status,
        });
        rx
    }

    /// New intervals for `peer`'s session (a Poll Sequence while Up).
    pub fn set_timers(&self, peer: IpAddr, timers: Timers) {
        let _ = self.tx.send(Command::SetTimers(peer, timers));
    }

    /// Stop `peer`'s session: it goes AdminDown (diag 7, RFC 5880 §6.8.16), keeps telling the
    /// peer for a detection time, then ends.
    pub fn remove(&self, peer: IpAddr) {
        let _ = self.tx.send(Command::Remove(peer));
    }

    /// Every session sends AdminDown once; the task ends.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    udp_ttl::set_recv_ttl(&sock, addr.is_ipv6())?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

struct Datagram {
    from: SocketAddr,
    ttl: Option<u8>,
    bytes: Vec<u8>,
}

async fn read_loop(sock: UdpSocket, to: mpsc::UnboundedSender<Datagram>) {
    let mut buf = [0u8; 512];
    loop {
        let r = sock
            .async_io(Interest::READABLE, || {
                udp_ttl::recv_with_ttl(&sock, &mut buf)
            })
            .await;
        match r {
            Ok((n, from, ttl)) => {
                let d = Datagram {
                    from,
                    ttl,
                    bytes: buf[..n].to_vec(),
                };
                if to.send(d).is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "BFD: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The per-session send socket: bound to a source port in 49152–65535 (the same for the
/// session's life, RFC 5881 §4) and TTL / hop limit 255.
fn bind_sender(
    peer: IpAddr,
    source: Option<IpAddr>,
    start: u16,
) -> Result<std::net::UdpSocket, BfdError> {
    let err = |op, source| BfdError::Socket { peer, op, source };
    let sock = Socket::new(
        if peer.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        },
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| err("socket", e))?;
    if peer.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(|e| err("setsockopt(IPV6_V6ONLY)", e))?;
        sock.set_unicast_hops_v6(u32::from(TTL))
            .map_err(|e| err("setsockopt(IPV6_UNICAST_HOPS)", e))?;
    } else {
        sock.set_ttl_v4(u32::from(TTL))
            .map_err(|e| err("setsockopt(IP_TTL)", e))?;
    }
    sock.set_nonblocking(true)
        .map_err(|e| err("set O_NONBLOCK", e))?;
    let ip = source.unwrap_or(if peer.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let (lo, hi) = (*SOURCE_PORTS.start(), *SOURCE_PORTS.end());
    let span = u32::from(hi - lo) + 1;
    for i in 0..span {
        let port = lo + ((u32::from(start.wrapping_sub(lo)) + i) % span) as u16;
        match sock.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(err("bind", e)),
        }
    }
    Err(BfdError::NoSourcePort { peer })
}

/// A session's send socket, and the last send error logged for it (logged once per kind).
struct SendSocket {
    socket: std::net::UdpSocket,
    peer: IpAddr,
    last_error: Option<io::ErrorKind>,
}

/// The BFD task's I/O: the commands from the handles, the datagrams from the readers, one
/// send socket per session, and each session's status watch.
struct Shell {
    peer_port: u16,
    commands: mpsc::UnboundedReceiver<Command>,
    incoming: mpsc::UnboundedReceiver<Datagram>,
    /// By local discriminator.
    sockets: BTreeMap<u32, SendSocket>,
    statuses: BTreeMap<u32, watch::Sender<BfdStatus>>,
    /// The watch of the `Add` being stepped: it belongs to the session that step opens.
    pending_status: Option<watch::Sender<BfdStatus>>,
    metrics: Option<Metrics>,
    /// The shutdown caller, told once every session has said AdminDown.
    done: Option<oneshot::Sender<()>>,
    _readers: Vec<AbortOnDrop>,
}

impl driver::Shell<Sessions> for Shell {
    async fn next_input(&mut self) -> Option<Input> {
        tokio::select! {
            cmd = self.commands.recv() => Some(match cmd? {
                Command::Add { peer, source, timers, status } => {
                    self.pending_status = Some(status);
                    Input::Add { peer, source, timers }
                }
                Command::SetTimers(peer, timers) => Input::SetTimers { peer, timers },
                Command::Remove(peer) => Input::Remove { peer },
                Command::Shutdown(done) => {
                    self.done = Some(done);
                    Input::Shutdown
                }
            }),
            Some(d) = self.incoming.recv() => Some(Input::Datagram {
                from: d.from.ip(),
                ttl: d.ttl,
                bytes: d.bytes,
            }),
        }
    }

    async fn carry(&mut self, _: Instant, _: &Sessions, out: Vec<Output>) -> ControlFlow<()> {
        for o in out {
            match o {
                Output::Open {
                    discr,
                    peer,
                    source,
                    port_hint,
                } => {
                    match bind_sender(peer, source, port_hint) {
                        Ok(socket) => {
                            self.sockets.insert(
                                discr,
                                SendSocket {
                                    socket,
                                    peer,
                                    last_error: None,
                                },
                            );
                        }
                        Err(e) => warn!(error = %e, "BFD: session cannot send"),
                    }
                    if let Some(status) = self.pending_status.take() {
                        self.statuses.insert(discr, status);
                    }
                    if let Some(m) = &self.metrics {
                        m.set_bfd_session(peer, false, 0);
                    }
                }
                Output::Close { discr } => {
                    self.sockets.remove(&discr);
                    if let Some(w) = self.statuses.remove(&discr) {
                        let peer = w.borrow().peer;
                        // A session replaced by a new one to the same peer keeps the series.
                        if let Some(m) = &self.metrics
                            && !self.statuses.values().any(|o| o.borrow().peer == peer)
                        {
                            m.remove_bfd_session(peer);
                        }
                        // `w` drops only now: its watchers see the end after the series.
                    }
                }
                Output::Send { discr, packet, .. } => {
                    let Some(s) = self.sockets.get_mut(&discr) else {
                        continue;
                    };
                    let to = SocketAddr::new(s.peer, self.peer_port);
                    match s.socket.send_to(&packet.encode(), to) {
                        Ok(_) => s.last_error = None,
                        Err(err) => {
                            if s.last_error != Some(err.kind()) {
                                info!(peer = %s.peer, error = %err, "BFD: send failed");
                            }
                            s.last_error = Some(err.kind());
                        }
                    }
                }
                Output::Status { discr, status } => {
                    if let Some(w) = self.statuses.get(&discr) {
                        let new_failures = status.failures.saturating_sub(w.borrow().failures);
                        if let Some(m) = &self.metrics {
                            m.set_bfd_session(status.peer, status.state == State::Up, new_failures);
                        }
                        w.send_if_modified(|old| {
                            let changed = *old != status;
                            *old = status;
                            changed
                        });
                    }
                }
                Output::Log(ev) => log_event(&ev),
                Output::Stopped => {
                    if let Some(done) = self.done.take() {
                        let _ = done.send(());
                    }
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }
}

fn log_event(ev: &Event) {
    match ev {
        Event::Added {
            peer,
            discr,
            timers,
        } => info!(
            peer = %peer,
            discriminator = discr,
            tx_ms = timers.desired_min_tx.as_millis() as u64,
            rx_ms = timers.required_min_rx.as_millis() as u64,
            detect_mult = timers.detect_mult,
            "BFD session added"
        ),
        Event::Removed { peer } => info!(peer = %peer, "BFD session removed (AdminDown sent)"),
        Event::Up { peer, source } => info!(peer = %peer, source = ?source, "BFD session up"),
        Event::Failed { peer, diag } => warn!(peer = %peer, diag = %diag, "BFD session down"),
        Event::AdminDown {
            peer,
            state,
            diag,
            remote,
        } => {
            info!(peer = %peer, state = %state, diag = %diag, remote = %remote, "BFD session down (administratively)")
        }
        Event::State {
            peer,
            from,
            to,
            diag,
        } => debug!(peer = %peer, %from, %to, %diag, "BFD state"),
        Event::Dropped { from, why } => debug!(from = %from, "BFD: packet dropped: {why}"),
    }
}

/// One peer's BFD session as its BGP task sees it: the failure count already acted on.
#[derive(Default)]
pub struct FailureWatch {
    rx: Option<watch::Receiver<BfdStatus>>,
    failures: u64,
}

impl FailureWatch {
    pub fn set(&mut self, rx: Option<watch::Receiver<BfdStatus>>) {
        self.failures = rx.as_ref().map_or(0, |r| r.borrow().failures);
        self.rx = rx;
    }

    /// Resolves on a change: `true` when the session failed since the last call. Never
    /// resolves without a BFD session.
    pub async fn failed(&mut self) -> bool {
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
    use crate::bfd::codec::{Diag, State};

    fn timers() -> Timers {
        Timers {
            desired_min_tx: Duration::from_millis(50),
            required_min_rx: Duration::from_millis(50),
            detect_mult: 3,
        }
    }

    async fn wait_state(rx: &mut watch::Receiver<BfdStatus>, want: State) -> BfdStatus {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.state == want))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(r) => r.expect("BFD task ended"),
            Err(_) => panic!("BFD state {want} not reached: {:?}", rx.borrow()),
        }
    }

    /// Two drivers on loopback (different ports stand in for two hosts) come Up; when one
    /// side's session is removed the other sees AdminDown (not a failure); when one driver
    /// goes silent the other detects it.
    async fn pair(ip: IpAddr, a_port: u16, b_port: u16) {
        let metrics = Metrics::new();
        // a's `lb_bfd_*{peer}` samples: (up, down events); set before a's watch moves.
        let series = || {
            let text = metrics.encode();
            let value = |name: &str| {
                text.lines().find_map(|l| {
                    l.strip_prefix(&format!("{name}{{peer=\"{ip}\"}} "))?
                        .parse::<f64>()
                        .ok()
                })
            };
            (
                value("lb_bfd_session_up"),
                value("lb_bfd_session_down_events_total"),
            )
        };
        let a = BfdHandle::spawn(BfdOptions {
            listen_port: a_port,
            peer_port: b_port,
            seed: Some(1),
            metrics: Some(metrics.clone()),
        })
        .unwrap();
        let b = BfdHandle::spawn(BfdOptions {
            listen_port: b_port,
            peer_port: a_port,
            seed: Some(2),
            metrics: None,
        })
        .unwrap();
        let mut ra = a.add(ip, Some(ip), timers());
        let mut rb = b.add(ip, Some(ip), timers());
        let sa = wait_state(&mut ra, State::Up).await;
        let sb = wait_state(&mut rb, State::Up).await;
        assert_eq!(sa.remote_discriminator, sb.local_discriminator);
        assert_ne!(sa.local_discriminator, 0);
        assert_eq!(series(), (Some(1.0), Some(0.0)));
        // b stops administratively: a goes Down without counting a failure.
        b.remove(ip);
        let s = wait_state(&mut ra, State::Down).await;
        assert_eq!(
            (s.remote_state, s.diag, s.failures),
            (State::AdminDown, Diag::NeighborSignaledSessionDown, 0)
        );
        assert_eq!(series(), (Some(0.0), Some(0.0)));
        // A new session on b brings both back Up.
        let mut rb = b.add(ip, Some(ip), timers());
        wait_state(&mut ra, State::Up).await;
        wait_state(&mut rb, State::Up).await;
        // b's task ends without a word: a detects it (diag 1) and counts a failure.
        drop(rb);
        drop(b);
        let s = wait_state(&mut ra, State::Down).await;
        assert_eq!((s.diag, s.failures), (Diag::ControlDetectionTimeExpired, 1));
        assert_eq!(series(), (Some(0.0), Some(1.0)));
        // Removed from the configuration: the series go with the session.
        a.remove(ip);
        tokio::time::timeout(Duration::from_secs(10), async {
            while ra.changed().await.is_ok() {}
        })
        .await
        .expect("session closed after its AdminDown");
        assert_eq!(series(), (None, None));
    }

    #[tokio::test]
    async fn two_drivers_on_ipv4_loopback_come_up_and_detect_admin_down_and_silence() {
        pair("127.0.0.1".parse().unwrap(), 23784, 23785).await;
    }

    #[tokio::test]
    async fn two_drivers_on_ipv6_loopback_come_up_and_detect_admin_down_and_silence() {
        pair("::1".parse().unwrap(), 23786, 23787).await;
    }

    #[tokio::test]
    async fn packets_with_ttl_below_255_are_dropped() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = BfdHandle::spawn(BfdOptions {
            listen_port: 23788,
            peer_port: 23789,
            seed: Some(3),
            metrics: None,
        })
        .unwrap();
        let mut ra = a.add(ip, Some(ip), timers());
        wait_state(&mut ra, State::Down).await;
        // Down packets from the "peer" with TTL 254 would move the session to Init...
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_ttl(254).unwrap();
        let mut p = super::super::codec::ControlPacket {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 5,
            your_discriminator: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 50_000,
            required_min_echo_rx: 0,
        };
        for _ in 0..3 {
            tx.send_to(&p.encode(), "127.0.0.1:23788").unwrap();
        }
        // ...and then an AdminDown with TTL 255 would take it back Down with diag 3. Handled
        // in order after them, it finds the session still Down: nothing changes but the
        // remote discriminator.
        tx.set_ttl(255).unwrap();
        p.state = State::AdminDown;
        p.my_discriminator = 6;
        tx.send_to(&p.encode(), "127.0.0.1:23788").unwrap();
        let s = tokio::time::timeout(
            Duration::from_secs(10),
            ra.wait_for(|s| s.remote_discriminator == 6),
        )
        .await
        .expect("TTL-255 packet not seen")
        .expect("BFD task ended")
        .clone();
        assert_eq!((s.state, s.diag), (State::Down, Diag::None));
    }
}
