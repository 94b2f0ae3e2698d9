//! The sockets of a BGP session: dialing a peer (TCP-MD5, TTL, source address), the shared
//! passive listeners, the router ID when none is configured, and the errors they give.
//!
//! Sockets: TTL 1 (or `ebgp_multihop`) for eBGP, 255 for iBGP; TCP-MD5 keys (RFC 2385) on
//! the active socket and, per peer, on the shared listeners ([`Listener`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::config::BgpPeer;
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

pub(super) fn set_ttl(sock: &SockRef<'_>, peer: IpAddr, ttl: u32) -> Result<(), DriverError> {
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

/// Kernel counters of dropped TCP-MD5 segments in this network namespace, for the log line
/// that explains a session that never comes up.
pub(super) fn md5_counters() -> Option<(u64, u64)> {
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

/// What a connection's reader saw.
pub enum Read {
    Bytes(Vec<u8>),
    Closed,
}

/// One TCP connection: the writer drains its queue before closing, so a NOTIFICATION queued
/// just before `Close` reaches the peer.
pub struct Connection {
    pub writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pub writer_task: Option<JoinHandle<()>>,
    reader_task: JoinHandle<()>,
}

impl Connection {
    /// Stop reading; let the writer drain its queue and close.
    pub fn close(&mut self) {
        self.writer = None;
        self.reader_task.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl Connection {
    /// Takes `stream` as connection `id` to `peer`: TTL `ttl`, no Nagle, a reader task
    /// handing what it reads to `report` (it stops when `report` says so) and a writer task.
    pub fn spawn(
        id: u64,
        stream: TcpStream,
        peer: IpAddr,
        ttl: u32,
        report: impl Fn(Read) -> bool + Send + 'static,
    ) -> Connection {
        if let Err(e) = set_ttl(&SockRef::from(&stream), peer, ttl) {
            warn!(peer = %peer, conn = id, error = %e, "BGP: cannot set the session TTL");
        }
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let reader_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        report(Read::Closed);
                        return;
                    }
                    Ok(n) => {
                        if !report(Read::Bytes(buf[..n].to_vec())) {
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
        Connection {
            writer: Some(wtx),
            writer_task: Some(writer_task),
            reader_task,
        }
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
