//! raft-lite over UDP: one tokio socket per host, bound to this member's `[cluster] members`
//! address. Outgoing messages are sealed with [`wire::Sealer`], incoming ones opened with
//! [`wire::Authenticator`]; everything that is dropped is counted per reason
//! ([`TransportStats`]) and logged at most once per reason per peer address per
//! [`LOG_INTERVAL`].
//!
//! Keys: the datagram layout is exactly `wire`'s, but each direction uses its own MAC key,
//! `HMAC-SHA256(cluster key, "lb raft-lite pair v1" | len | sender | len | receiver)`
//! ([`pair_key`]). The wire format carries the sender and a per-sender sequence number but not
//! the receiver, so under one shared key a datagram A sent to C could be replayed to B (B has
//! not seen that sequence number). A per-direction key makes it fail B's MAC check instead.
//!
//! Socket errors (e.g. an ICMP port unreachable surfacing as `ECONNREFUSED`) are counted and
//! logged; they never end [`Transport::recv`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::fragment::ReassemblyStats;
use super::message::Message;
use super::wire::{self, Authenticator, DropReason, SealError, Sealer};

/// At most one warn line per (reason, peer address) per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on the rate limiter's memory (spoofed source addresses must not grow it forever).
const LOG_LIMITER_CAPACITY: usize = 4096;
/// Bound on the senders a voter authenticates without knowing them first (hosts asking to
/// join). Only a datagram that passed the MAC check adds one, so only key holders count.
const MAX_SENDERS: usize = 65_536;
/// Receive buffer asked for (the kernel may give less: `net.core.rmem_max` unless this
/// process may force it): a fragmented message from each of several peers arrives in one
/// burst of datagrams of up to 60 kB each, more than the usual 208 kB default holds.
pub const RECV_BUFFER: usize = 4 << 20;
/// Incomplete fragmented messages of senders that went quiet are dropped this often.
const REASSEMBLY_SWEEP: Duration = Duration::from_secs(1);
/// Pause after a receive error that is not a transient ICMP report, so a broken socket
/// cannot turn the task into a busy loop.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading cluster key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster key {path} is empty")]
    Empty { path: PathBuf },
}

/// Reads the shared cluster key from `secret_file`: the file's bytes minus one trailing
/// newline (`\n` or `\r\n`). An empty key is refused.
pub fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut key = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(key)
}

/// The MAC key for datagrams from `sender` to `receiver` (see the module comment).
pub fn pair_key(cluster_key: &[u8], sender: &str, receiver: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(cluster_key).expect("HMAC accepts any key length");
    mac.update(b"lb raft-lite pair v1");
    for name in [sender, receiver] {
        // Length-prefixed so ("ab", "c") and ("a", "bc") differ; names are <= 255 bytes.
        mac.update(&[name.len().min(255) as u8]);
        mac.update(name.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding the raft-lite UDP socket to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("this node {0:?} is not listed in [cluster] members")]
    NotAMember(String),
    #[error("raft-lite member {name:?}: {source}")]
    BadName { name: String, source: SealError },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("raft-lite message to {0:?}, which is not a member")]
    UnknownPeer(String),
    #[error("raft-lite message to {peer}: {source}")]
    Seal { peer: String, source: SealError },
    #[error("sending raft-lite datagram to {peer} ({addr}): {source}")]
    Io {
        peer: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Counters of one transport (for metrics and tests). Watchers are woken by drops and
/// errors; `received` and `sent` are read with `borrow()` (they change without a wake-up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Datagrams authenticated (whole messages and fragments).
    pub received: u64,
    /// Datagrams sent (whole messages and fragments).
    pub sent: u64,
    /// The largest datagram sent, in bytes (at most [`wire::MAX_DATAGRAM`]).
    pub largest_sent: usize,
    /// The largest datagram received and authenticated, in bytes.
    pub largest_received: usize,
    /// Messages sent in fragments (they did not fit one datagram), and their fragments.
    pub fragmented_sent: u64,
    pub fragments_sent: u64,
    /// Fragments received, messages reassembled, incomplete ones dropped.
    pub reassembly: ReassemblyStats,
    /// Datagrams dropped, by reason.
    pub drops: BTreeMap<DropReason, u64>,
    pub recv_errors: u64,
    pub send_errors: u64,
}

impl TransportStats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }
}

/// "Log this at most once per interval per key", with a count of what was suppressed. Pure.
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    capacity: usize,
    /// key → (last logged, suppressed since).
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Eq + Hash + Clone> LogLimiter<K> {
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            capacity,
            last: HashMap::new(),
        }
    }

    /// `Some(n)`: log now; `n` events with this key were suppressed since the last line.
    pub fn check(&mut self, key: &K, now: Instant) -> Option<u64> {
        if let Some((at, suppressed)) = self.last.get_mut(key) {
            if now.saturating_duration_since(*at) >= self.interval {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                return Some(n);
            }
            *suppressed += 1;
            return None;
        }
        if self.last.len() >= self.capacity {
            let interval = self.interval;
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
            if self.last.len() >= self.capacity {
                return None;
            }
        }
        self.last.insert(key.clone(), (now, 0));
        Some(0)
    }
}

/// What a log line is about: a drop reason or a socket error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LogKind {
    Drop(DropReason),
    RecvError,
    SendError,
}

struct Peer {
    /// `None`: no longer a peer (a forgotten member). Its sealer is kept so the sequence
    /// numbers keep increasing if it comes back.
    addr: Option<SocketAddr>,
    sealer: Sealer,
}

/// A bound raft-lite UDP socket with its sealers and authenticators.
pub struct Transport {
    socket: UdpSocket,
    me: String,
    key: Vec<u8>,
    first_seq: u64,
    /// Authenticate senders not known yet (a voter: hosts asking to join). The core decides
    /// whether they are admitted; replies go only to the addresses it lists ([`Transport::set_peers`]).
    open_to_unknown: bool,
    peers: BTreeMap<String, Peer>,
    /// One per sender (each knows only that sender, under that direction's key).
    auth: BTreeMap<String, Authenticator>,
    stats: watch::Sender<TransportStats>,
    limiter: LogLimiter<(LogKind, SocketAddr)>,
    buf: Vec<u8>,
    last_sweep: Instant,
}

impl Transport {
    /// Binds `members[me]`. `first_seq`: wall-clock nanoseconds at boot (the per-sender
    /// sequence numbers must keep increasing across restarts).
    pub async fn bind(
        me: &str,
        members: &BTreeMap<String, SocketAddr>,
        cluster_key: &[u8],
        first_seq: u64,
    ) -> Result<Self, TransportError> {
        let addr = *members
            .get(me)
            .ok_or_else(|| TransportError::NotAMember(me.to_owned()))?;
        Self::bind_at(me, addr, members, cluster_key, first_seq, false).await
    }

    /// Binds `addr`; `peers` (this host may be among them) are the hosts it knows now.
    /// `open_to_unknown`: also authenticate senders not among them (see the field).
    pub async fn bind_at(
        me: &str,
        addr: SocketAddr,
        peers: &BTreeMap<String, SocketAddr>,
        cluster_key: &[u8],
        first_seq: u64,
        open_to_unknown: bool,
    ) -> Result<Self, TransportError> {
        // Checked here so a bad own name fails at start, not at the first send.
        Sealer::new(me, b"", first_seq).map_err(|source| TransportError::BadName {
            name: me.to_owned(),
            source,
        })?;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })?;
        grow_recv_buffer(&socket);
        let mut t = Self {
            socket,
            me: me.to_owned(),
            key: cluster_key.to_vec(),
            first_seq,
            open_to_unknown,
            peers: BTreeMap::new(),
            auth: BTreeMap::new(),
            stats: watch::Sender::new(TransportStats::default()),
            limiter: LogLimiter::new(LOG_INTERVAL, LOG_LIMITER_CAPACITY),
            buf: vec![0; 65_536],
            last_sweep: Instant::now(),
        };
        t.set_peers(peers);
        Ok(t)
    }

    /// The hosts this one sends to, with their addresses (voters and admitted members, as
    /// the core lists them): new ones are added, missing ones no longer sent to.
    /// A host that became a voter (a voter-set change) hears hosts it does not know yet
    /// (they ask to join); one that stopped being a voter no longer does.
    pub fn set_open_to_unknown(&mut self, open: bool) {
        self.open_to_unknown = open;
    }

    pub fn set_peers(&mut self, peers: &BTreeMap<String, SocketAddr>) {
        for p in self.peers.values_mut() {
            p.addr = None;
        }
        for (name, addr) in peers {
            if *name == self.me {
                continue;
            }
            match self.peers.get_mut(name) {
                Some(p) => p.addr = Some(*addr),
                None => {
                    let key = pair_key(&self.key, &self.me, name);
                    // The own name was checked in bind_at; a sealer cannot fail otherwise.
                    let Ok(sealer) = Sealer::new(&self.me, &key, self.first_seq) else {
                        continue;
                    };
                    self.peers.insert(
                        name.clone(),
                        Peer {
                            addr: Some(*addr),
                            sealer,
                        },
                    );
                }
            }
            if !self.auth.contains_key(name) {
                self.auth.insert(name.clone(), self.authenticator(name));
            }
        }
    }

    fn authenticator(&self, sender: &str) -> Authenticator {
        Authenticator::new(&pair_key(&self.key, sender, &self.me), &self.me, [sender])
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters; the receiver sees every update (drops included).
    pub fn stats(&self) -> watch::Receiver<TransportStats> {
        self.stats.subscribe()
    }

    /// Seals and sends one message. Failures are counted and logged (rate-limited) here too.
    pub async fn send(&mut self, to: &str, msg: &Message) -> Result<(), SendError> {
        let Some((peer, Some(addr))) = self.peers.get_mut(to).map(|p| {
            let a = p.addr;
            (p, a)
        }) else {
            return Err(SendError::UnknownPeer(to.to_owned()));
        };
        let datagrams = match peer.sealer.seal_all(msg) {
            Ok(b) => b,
            Err(source) => {
                self.stats.send_modify(|s| s.send_errors += 1);
                if let Some(n) = self
                    .limiter
                    .check(&(LogKind::SendError, addr), Instant::now())
                {
                    error!(peer = to, %addr, suppressed = n, "raft-lite message not sent: {source}");
                }
                return Err(SendError::Seal {
                    peer: to.to_owned(),
                    source,
                });
            }
        };
        let mut result = Ok(());
        for bytes in &datagrams {
            result = self.socket.send_to(bytes, addr).await.map(drop);
            if result.is_err() {
                break;
            }
        }
        let largest = datagrams.iter().map(Vec::len).max().unwrap_or(0);
        let fragments = if datagrams.len() > 1 {
            datagrams.len() as u64
        } else {
            0
        };
        match result {
            Ok(_) => {
                // Counted without waking the stats' watchers unless the largest datagram grew
                // or a message went in fragments (rare): they wait for drops, errors and those,
                // and a wake-up per datagram cost an idle leader a task switch each.
                self.stats.send_if_modified(|s| {
                    s.sent += datagrams.len() as u64;
                    let grew = largest > s.largest_sent;
                    s.largest_sent = s.largest_sent.max(largest);
                    if fragments > 0 {
                        s.fragmented_sent += 1;
                        s.fragments_sent += fragments;
                    }
                    grew || fragments > 0
                });
                Ok(())
            }
            Err(source) => {
                self.stats.send_modify(|s| s.send_errors += 1);
                if let Some(n) = self
                    .limiter
                    .check(&(LogKind::SendError, addr), Instant::now())
                {
                    warn!(peer = to, %addr, suppressed = n, error = %source, "sending raft-lite datagram failed");
                }
                Err(SendError::Io {
                    peer: to.to_owned(),
                    addr,
                    source,
                })
            }
        }
    }

    /// The next authenticated message (sender name, message). Drops and socket errors are
    /// counted, logged and skipped. Cancel-safe: a datagram is either returned or not read.
    pub async fn recv(&mut self) -> (String, Message) {
        loop {
            match self.socket.recv_from(&mut self.buf).await {
                Ok((n, from)) => {
                    if let Some(m) = self.open(n, from) {
                        return m;
                    }
                }
                Err(e) => {
                    self.stats.send_modify(|s| s.recv_errors += 1);
                    let transient = is_transient(&e);
                    // The address is not known for a socket error; key on the local one.
                    let key = (
                        LogKind::RecvError,
                        self.local_addr().unwrap_or(([0; 4], 0).into()),
                    );
                    if let Some(n) = self.limiter.check(&key, Instant::now()) {
                        warn!(error = %e, suppressed = n, "raft-lite socket receive error");
                    }
                    if !transient {
                        tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                    }
                }
            }
        }
    }

    fn open(&mut self, n: usize, from: SocketAddr) -> Option<(String, Message)> {
        let d = &self.buf[..n.min(self.buf.len())];
        let now = Instant::now();
        if now.saturating_duration_since(self.last_sweep) >= REASSEMBLY_SWEEP {
            self.last_sweep = now;
            for a in self.auth.values_mut() {
                a.expire(now);
            }
        }
        let mut reassembly = None;
        let result = match wire::parse_header(d) {
            Err(r) => Err(r),
            Ok(h) if h.sender == self.me => Err(DropReason::UnknownSender),
            Ok(h) => {
                if let Some(a) = self.auth.get_mut(h.sender) {
                    let before = a.reassembly_stats();
                    let r = a.receive(now, d);
                    let after = a.reassembly_stats();
                    if after != before {
                        reassembly = Some(ReassemblyStats {
                            fragments: after.fragments - before.fragments,
                            reassembled: after.reassembled - before.reassembled,
                            expired: after.expired - before.expired,
                            evicted: after.evicted - before.evicted,
                        });
                    }
                    r
                } else if self.open_to_unknown && self.auth.len() < MAX_SENDERS {
                    // A host asking to join: kept only once its MAC checked (a forgery
                    // cannot grow the table), and the core admits it or not. (Its first
                    // datagram is a whole `Join`, never a fragment.)
                    let sender = h.sender.to_owned();
                    let mut a = self.authenticator(&sender);
                    let r = a.open(d).map(Some);
                    if r.is_ok() {
                        self.auth.insert(sender, a);
                    }
                    r
                } else {
                    Err(DropReason::UnknownSender)
                }
            }
        };
        match result {
            Ok(m) => {
                self.stats.send_if_modified(|s| {
                    s.received += 1;
                    let grew = n > s.largest_received;
                    s.largest_received = s.largest_received.max(n);
                    if let Some(r) = &reassembly {
                        s.reassembly.add(r);
                    }
                    grew || reassembly.is_some()
                });
                m
            }
            Err(reason) => {
                self.stats
                    .send_modify(|s| *s.drops.entry(reason).or_default() += 1);
                if let Some(n) = self
                    .limiter
                    .check(&(LogKind::Drop(reason), from), Instant::now())
                {
                    warn!(peer = %from, reason = ?reason, suppressed = n, "dropping raft-lite datagram from {from}: {reason}");
                } else {
                    debug!(peer = %from, reason = ?reason, "dropping raft-lite datagram");
                }
                None
            }
        }
    }
}

/// Asks for a [`RECV_BUFFER`]-byte receive buffer: forced past `net.core.rmem_max` when this
/// process may (`CAP_NET_ADMIN`), else as much as `rmem_max` allows.
fn grow_recv_buffer(socket: &UdpSocket) {
    let forced = crate::sys::force_recv_buffer(socket, RECV_BUFFER).is_ok();
    if !forced {
        let _ = socket2::SockRef::from(socket).set_recv_buffer_size(RECV_BUFFER);
    }
    if let Ok(got) = socket2::SockRef::from(socket).recv_buffer_size() {
        debug!(asked = RECV_BUFFER, got, forced, "raft-lite receive buffer");
    }
}

/// ICMP errors reported on a UDP socket: the next datagram may well be fine.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable | Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::Body;
    use std::io::Write;

    fn key_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        f.write_all(bytes).expect("write");
        f
    }

    #[test]
    fn key_file_trailing_newline_is_trimmed_once() {
        assert_eq!(
            read_key(key_file(b"secret\n").path()).expect("key"),
            b"secret"
        );
        assert_eq!(
            read_key(key_file(b"secret\r\n").path()).expect("key"),
            b"secret"
        );
        assert_eq!(
            read_key(key_file(b"secret").path()).expect("key"),
            b"secret"
        );
        assert_eq!(read_key(key_file(b"s \n\n").path()).expect("key"), b"s \n");
    }

    #[test]
    fn empty_key_file_is_refused_naming_the_file() {
        for content in [&b""[..], b"\n", b"\r\n"] {
            let f = key_file(content);
            let err = read_key(f.path()).expect_err("empty key");
            assert!(matches!(err, KeyError::Empty { .. }));
            assert!(
                err.to_string().contains(&f.path().display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_key_file_error_names_the_file() {
        let err = read_key(Path::new("/nonexistent/lb/cluster.key")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/lb/cluster.key"),
            "{err}"
        );
    }

    #[test]
    fn pair_keys_differ_per_direction_and_name_split() {
        let k = b"k";
        assert_ne!(pair_key(k, "a", "b"), pair_key(k, "b", "a"));
        assert_ne!(pair_key(k, "ab", "c"), pair_key(k, "a", "bc"));
        assert_eq!(pair_key(k, "a", "b"), pair_key(k, "a", "b"));
        assert_ne!(pair_key(k, "a", "b"), pair_key(b"other", "a", "b"));
    }

    #[test]
    fn limiter_logs_once_per_interval_and_counts_suppressed() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10), 16);
        assert_eq!(l.check(&1, t0), Some(0));
        assert_eq!(l.check(&1, t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check(&1, t0 + Duration::from_secs(9)), None);
        assert_eq!(l.check(&2, t0 + Duration::from_secs(9)), Some(0), "per key");
        assert_eq!(l.check(&1, t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.check(&1, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn limiter_memory_is_bounded_and_recovers_after_the_interval() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(l.check(&1, t0), Some(0));
        assert_eq!(l.check(&2, t0), Some(0));
        assert_eq!(l.check(&3, t0), None, "full: new keys are not logged");
        assert_eq!(l.last.len(), 2);
        assert_eq!(l.check(&3, t0 + Duration::from_secs(10)), Some(0));
        assert!(l.last.len() <= 2);
    }

    fn members(a: SocketAddr, b: SocketAddr) -> BTreeMap<String, SocketAddr> {
        [("a".to_owned(), a), ("b".to_owned(), b)].into()
    }

    async fn free_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn sealed_message_arrives_and_garbage_is_counted_not_fatal() {
        let (pa, pb) = (free_port().await, free_port().await);
        let m = members(pa, pb);
        let mut a = Transport::bind("a", &m, b"key", 1).await.expect("bind a");
        let mut b = Transport::bind("b", &m, b"key", 1).await.expect("bind b");
        let stats = b.stats();
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        junk.send_to(b"hello", pb).expect("send junk");
        let msg = Message {
            term: 3,
            body: Body::PreVote { version: 0 },
        };
        a.send("b", &msg).await.expect("send");
        assert_eq!(b.recv().await, ("a".to_owned(), msg));
        let s = stats.borrow().clone();
        assert_eq!(s.received, 1);
        assert_eq!(s.dropped(DropReason::Truncated), 1, "{s:?}");
    }

    #[tokio::test]
    async fn datagram_for_another_receiver_fails_the_mac() {
        let (pa, pb, pc) = (free_port().await, free_port().await, free_port().await);
        let m: BTreeMap<String, SocketAddr> = [
            ("a".to_owned(), pa),
            ("b".to_owned(), pb),
            ("c".to_owned(), pc),
        ]
        .into();
        let mut b = Transport::bind("b", &m, b"key", 1).await.expect("bind b");
        let stats = b.stats();
        // What a sends to c, resent to b: same sender, fresh sequence number for b.
        let mut to_c = Sealer::new("a", &pair_key(b"key", "a", "c"), 5).expect("sealer");
        let d = to_c
            .seal(&Message {
                term: 1,
                body: Body::TimeoutNow,
            })
            .expect("seal");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.send_to(&d, pb).expect("send");
        let mut to_b = Sealer::new("a", &pair_key(b"key", "a", "b"), 5).expect("sealer");
        let ok = Message {
            term: 1,
            body: Body::PreVote { version: 0 },
        };
        s.send_to(&to_b.seal(&ok).expect("seal"), pb).expect("send");
        assert_eq!(b.recv().await, ("a".to_owned(), ok));
        assert_eq!(stats.borrow().dropped(DropReason::BadMac), 1);
    }

    #[tokio::test]
    async fn sending_to_a_closed_port_does_not_stop_receiving() {
        let (pa, pb, pc) = (free_port().await, free_port().await, free_port().await);
        let m: BTreeMap<String, SocketAddr> = [
            ("a".to_owned(), pa),
            ("b".to_owned(), pb),
            ("c".to_owned(), pc),
        ]
        .into();
        let mut a = Transport::bind("a", &m, b"key", 1).await.expect("bind a");
        let mut c = Transport::bind("c", &m, b"key", 1).await.expect("bind c");
        // Nobody listens on b's port: ICMP port unreachable comes back to a.
        let msg = Message {
            term: 1,
            body: Body::PreVote { version: 0 },
        };
        for _ in 0..5 {
            let _ = a.send("b", &msg).await;
        }
        c.send("a", &msg).await.expect("send");
        assert_eq!(a.recv().await, ("c".to_owned(), msg));
    }

    #[tokio::test]
    async fn random_and_mutated_datagrams_are_dropped_not_fatal() {
        let (pa, pb) = (free_port().await, free_port().await);
        let m = members(pa, pb);
        let mut b = Transport::bind("b", &m, b"key", 1).await.expect("bind b");
        let stats = b.stats();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut sealer = Sealer::new("a", &pair_key(b"key", "a", "b"), 10).expect("sealer");
        let good = sealer
            .seal(&Message {
                term: 2,
                body: Body::TimeoutNow,
            })
            .expect("seal");
        // xorshift: deterministic garbage, plus single-byte mutations of a valid datagram.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Few enough to fit the default socket receive buffer (all are queued before recv).
        let n = 100;
        for i in 0..n {
            let d = if i % 2 == 0 {
                let len = (next() % 120) as usize;
                let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if i % 4 == 0 && d.len() >= 5 {
                    d[..5].copy_from_slice(b"LBRL\x01");
                }
                d
            } else {
                let mut d = good.clone();
                let at = (next() as usize) % d.len();
                d[at] ^= 1 << (next() % 8);
                d
            };
            s.send_to(&d, pb).expect("send");
        }
        s.send_to(&good, pb).expect("send good");
        let (from, msg) = b.recv().await;
        assert_eq!((from.as_str(), msg.body), ("a", Body::TimeoutNow));
        let st = stats.borrow().clone();
        assert_eq!(st.drops.values().sum::<u64>(), n, "{st:?}");
        assert_eq!(st.received, 1);
    }

    #[test]
    fn icmp_errors_are_transient() {
        assert!(is_transient(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(is_transient(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}
