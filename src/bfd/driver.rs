//! Single-hop BFD over UDP (RFC 5881): one tokio task owning every [`Session`].
//!
//! ```text
//!  BfdHandle ──Command──▶ task ──Send──▶ per-session UDP socket (src port 49152–65535,
//!                          │  ▲                                     TTL/hop limit 255) ──▶ peer:3784
//!  UDP :3784 (v4, v6) ─────┘  └── reader tasks: (source, TTL, bytes), GTSM check
//!                          └──▶ watch<BfdStatus> per peer (the BGP peer task watches it)
//! ```
//!
//! Demultiplexing (RFC 5880 §6.8.6): by Your Discriminator when non-zero, else by the
//! source address (the peer's address); a packet whose source is not the session's peer is
//! dropped. Discriminators are allocated per session from a random non-zero start.
//! Received packets whose TTL / hop limit is not 255 are dropped (RFC 5881 §5, GTSM).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::codec::{Diag, State, decode};
use super::session::{Input, Jitter, Output, Session, Timers};
use crate::sys::udp_ttl;

/// RFC 5881 §4: Control packets go to this UDP port.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 §4: source ports are in this range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: the TTL / hop limit sent and required on receipt.
pub const TTL: u8 = 255;

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
}

impl Default for BfdOptions {
    fn default() -> Self {
        Self {
            listen_port: CONTROL_PORT,
            peer_port: CONTROL_PORT,
            seed: None,
        }
    }
}

/// What the task publishes about one peer's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdStatus {
    pub peer: IpAddr,
    pub state: State,
    pub diag: Diag,
    pub remote_state: State,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// Times the session left Up for a path failure (detection timeout or the peer
    /// signalling Down); a peer's AdminDown does not count (RFC 5882 §3.2). The BGP peer
    /// task resets its session when this grows.
    pub failures: u64,
    pub up_since: Option<Instant>,
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
        let mut rng = Jitter::new(seed);
        let next_discr = (rng.next_u64() as u32).max(1);
        let task = Task {
            options,
            sessions: BTreeMap::new(),
            rng,
            next_discr,
            _readers: readers.into_iter().map(AbortOnDrop).collect(),
        };
        tokio::spawn(task.run(rx, in_rx));
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
        let (status, rx) = watch::channel(BfdStatus {
            peer,
            state: State::AdminDown,
            diag: Diag::None,
            remote_state: State::Down,
            local_discriminator: 0,
            remote_discriminator: 0,
            failures: 0,
            up_since: None,
        });
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

struct Entry {
    session: Session,
    peer: IpAddr,
    source: Option<IpAddr>,
    socket: Option<std::net::UdpSocket>,
    status: watch::Sender<BfdStatus>,
    failures: u64,
    up_since: Option<Instant>,
    /// Removed: AdminDown is being sent until then.
    remove_at: Option<Instant>,
    last_send_error: Option<io::ErrorKind>,
}

struct Task {
    options: BfdOptions,
    /// By local discriminator.
    sessions: BTreeMap<u32, Entry>,
    rng: Jitter,
    next_discr: u32,
    _readers: Vec<AbortOnDrop>,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut incoming: mpsc::UnboundedReceiver<Datagram>,
    ) {
        loop {
            let deadline = self
                .sessions
                .values()
                .flat_map(|e| [e.session.next_deadline(), e.remove_at])
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
                    Some(Command::Add { peer, source, timers, status }) => {
                        self.add(peer, source, timers, status)
                    }
                    Some(Command::SetTimers(peer, t)) => {
                        if let Some(d) = self.find_peer(peer) {
                            self.step(d, Input::SetTimers(t));
                        }
                    }
                    Some(Command::Remove(peer)) => self.remove(peer),
                    Some(Command::Shutdown(done)) => {
                        let all: Vec<IpAddr> = self.sessions.values().map(|e| e.peer).collect();
                        for p in all {
                            self.remove(p);
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some(d) = incoming.recv() => self.datagram(d),
                _ = timer => self.tick(),
            }
        }
    }

    fn find_peer(&self, peer: IpAddr) -> Option<u32> {
        self.sessions
            .iter()
            .find(|(_, e)| e.peer == peer && e.remove_at.is_none())
            .map(|(d, _)| *d)
    }

    fn alloc_discr(&mut self) -> u32 {
        loop {
            let d = self.next_discr;
            self.next_discr = self.next_discr.wrapping_add(1);
            if d != 0 && !self.sessions.contains_key(&d) {
                return d;
            }
        }
    }

    fn add(
        &mut self,
        peer: IpAddr,
        source: Option<IpAddr>,
        timers: Timers,
        status: watch::Sender<BfdStatus>,
    ) {
        // A session being removed stops its AdminDown packets: they would take the peer's
        // side of the new session down.
        self.sessions
            .retain(|_, e| e.peer != peer || e.remove_at.is_none());
        if self.find_peer(peer).is_some() {
            self.remove(peer);
            self.sessions
                .retain(|_, e| e.peer != peer || e.remove_at.is_none());
        }
        let discr = self.alloc_discr();
        let start = *SOURCE_PORTS.start() + (self.rng.next_u64() % 16384) as u16;
        let socket = match bind_sender(peer, source, start) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "BFD: session cannot send");
                None
            }
        };
        let session = Session::new(discr, timers, Jitter::new(self.rng.next_u64()));
        info!(
            peer = %peer,
            discriminator = discr,
            tx_ms = timers.desired_min_tx.as_millis() as u64,
            rx_ms = timers.required_min_rx.as_millis() as u64,
            detect_mult = timers.detect_mult,
            "BFD session added"
        );
        self.sessions.insert(
            discr,
            Entry {
                session,
                peer,
                source,
                socket,
                status,
                failures: 0,
                up_since: None,
                remove_at: None,
                last_send_error: None,
            },
        );
        self.step(discr, Input::Start);
    }

    fn remove(&mut self, peer: IpAddr) {
        let Some(d) = self.find_peer(peer) else {
            return;
        };
        self.step(d, Input::AdminDown);
        if let Some(e) = self.sessions.get_mut(&d) {
            // Keep telling the peer for its detection time (at least 1 s, at most 5 s).
            let keep = e
                .session
                .detection_time()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_secs(1), Duration::from_secs(5));
            e.remove_at = Some(Instant::now() + keep);
            info!(peer = %peer, "BFD session removed (AdminDown sent)");
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.sessions
            .retain(|_, e| e.remove_at.is_none_or(|at| now < at));
        let due: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.next_deadline().is_some_and(|d| d <= now))
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            self.step(d, Input::Tick);
        }
    }

    fn datagram(&mut self, d: Datagram) {
        // RFC 5881 §5: single-hop packets must arrive with TTL / hop limit 255.
        if d.ttl != Some(TTL) {
            debug!(from = %d.from, ttl = ?d.ttl, "BFD: packet dropped (TTL is not 255)");
            return;
        }
        let p = match decode(&d.bytes) {
            Ok(p) => p,
            Err(e) => {
                debug!(from = %d.from, error = %e, "BFD: packet discarded");
                return;
            }
        };
        let src = canonical(d.from.ip());
        let discr = if p.your_discriminator != 0 {
            Some(p.your_discriminator).filter(|x| self.sessions.contains_key(x))
        } else {
            self.find_peer(src)
        };
        let Some(discr) = discr else {
            debug!(from = %d.from, your = p.your_discriminator, "BFD: packet for no session");
            return;
        };
        if self.sessions.get(&discr).map(|e| e.peer) != Some(src) {
            debug!(from = %d.from, "BFD: packet from an address that is not the session's peer");
            return;
        }
        self.step(discr, Input::Received(p));
    }

    fn step(&mut self, discr: u32, input: Input) {
        let peer_port = self.options.peer_port;
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        let now = Instant::now();
        for o in e.session.step(now, input) {
            match o {
                Output::Send(p) => {
                    let Some(s) = &e.socket else { continue };
                    let to = SocketAddr::new(e.peer, peer_port);
                    match s.send_to(&p.encode(), to) {
                        Ok(_) => e.last_send_error = None,
                        Err(err) => {
                            if e.last_send_error != Some(err.kind()) {
                                info!(peer = %e.peer, error = %err, "BFD: send failed");
                            }
                            e.last_send_error = Some(err.kind());
                        }
                    }
                }
                Output::StateChanged {
                    from,
                    to,
                    diag,
                    remote,
                } => {
                    if to == State::Up {
                        e.up_since = Some(now);
                        info!(peer = %e.peer, source = ?e.source, "BFD session up");
                    } else if from == State::Up {
                        e.up_since = None;
                        if to == State::Down && remote != State::AdminDown {
                            e.failures += 1;
                            warn!(peer = %e.peer, diag = %diag, "BFD session down");
                        } else {
                            info!(peer = %e.peer, state = %to, diag = %diag, remote = %remote, "BFD session down (administratively)");
                        }
                    } else {
                        debug!(peer = %e.peer, %from, %to, %diag, "BFD state");
                    }
                }
            }
        }
        let s = BfdStatus {
            peer: e.peer,
            state: e.session.state(),
            diag: e.session.local_diag(),
            remote_state: e.session.remote_state(),
            local_discriminator: discr,
            remote_discriminator: e.session.remote_discr(),
            failures: e.failures,
            up_since: e.up_since,
        };
        e.status.send_if_modified(|old| {
            if *old != s {
                *old = s;
                true
            } else {
                false
            }
        });
    }
}

/// IPv4-mapped IPv6 sources (never expected: the IPv6 socket is V6ONLY) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = BfdHandle::spawn(BfdOptions {
            listen_port: a_port,
            peer_port: b_port,
            seed: Some(1),
        })
        .unwrap();
        let b = BfdHandle::spawn(BfdOptions {
            listen_port: b_port,
            peer_port: a_port,
            seed: Some(2),
        })
        .unwrap();
        let mut ra = a.add(ip, Some(ip), timers());
        let mut rb = b.add(ip, Some(ip), timers());
        let sa = wait_state(&mut ra, State::Up).await;
        let sb = wait_state(&mut rb, State::Up).await;
        assert_eq!(sa.remote_discriminator, sb.local_discriminator);
        assert_ne!(sa.local_discriminator, 0);
        // b stops administratively: a goes Down without counting a failure.
        b.remove(ip);
        let s = wait_state(&mut ra, State::Down).await;
        assert_eq!(
            (s.remote_state, s.diag, s.failures),
            (State::AdminDown, Diag::NeighborSignaledSessionDown, 0)
        );
        // A new session on b brings both back Up.
        let mut rb = b.add(ip, Some(ip), timers());
        wait_state(&mut ra, State::Up).await;
        wait_state(&mut rb, State::Up).await;
        // b's task ends without a word: a detects it (diag 1) and counts a failure.
        drop(rb);
        drop(b);
        let s = wait_state(&mut ra, State::Down).await;
        assert_eq!((s.diag, s.failures), (Diag::ControlDetectionTimeExpired, 1));
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
