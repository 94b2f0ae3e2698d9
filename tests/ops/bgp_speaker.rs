//! The speaker against a scripted BGP peer on loopback (no lab, no root): what it sends
//! after Established, on changes, on reload and on shutdown.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use lb::bgp::advertise::{AnnouncedIp, LocalNode};
use lb::bgp::codec::CeaseSubcode;
use lb::bgp::codec::{
    Capability, CodecOptions, ErrorCode, Family, Framer, MAX_MESSAGE_LEN, Message, Notification,
    Open, decode,
};
use lb::bgp::fsm::State;
use lb::bgp::speaker::{Speaker, SpeakerHandle, SpeakerOptions};
use lb::config::BgpPeer;
use lb::control::metrics::Metrics;
use lb::model::{BgpAdvertisement, Community, IpRange, Pool, PoolProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

/// What the scripted peer saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    Announce(Vec<IpNet>, Vec<Community>),
    Withdraw(Vec<IpNet>),
    EndOfRib(Family),
    Notification(Notification),
    Closed,
}

/// A BGP peer on `addr` that accepts connections, answers OPEN + KEEPALIVE, and reports
/// every message it receives.
struct FakePeer {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakePeer {
    async fn start(ip: Ipv4Addr, asn: u32) -> FakePeer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(serve(stream, ip, asn, tx));
            }
        });
        FakePeer { addr, seen }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(T, self.seen.recv())
            .await
            .expect("the peer saw nothing in time")
            .expect("channel open")
    }

    /// Skip keepalive-only noise until something matching `f` arrives.
    async fn until(&mut self, mut f: impl FnMut(&Seen) -> bool) -> Seen {
        loop {
            let s = self.next().await;
            if f(&s) {
                return s;
            }
        }
    }

    fn peer_config(&self, my_asn: u32, peer_asn: u32) -> BgpPeer {
        BgpPeer {
            port: self.addr.port(),
            router_id: Some(Ipv4Addr::new(10, 0, 0, 3)),
            ..BgpPeer::new(my_asn, peer_asn, self.addr.ip())
        }
    }
}

async fn serve(mut stream: TcpStream, id: Ipv4Addr, asn: u32, tx: mpsc::UnboundedSender<Seen>) {
    let opts = CodecOptions {
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
    };
    let open = Open::new(
        asn,
        90,
        id,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::FourOctetAs(asn),
        ],
    );
    let _ = tx.send(Seen::Connected);
    for m in [Message::Open(open), Message::Keepalive] {
        if stream.write_all(&m.encode(&opts).unwrap()).await.is_err() {
            return;
        }
    }
    let mut framer = Framer::new(MAX_MESSAGE_LEN);
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Seen::Closed);
                return;
            }
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_message() {
            let seen = match decode(&frame, &opts) {
                Ok(Message::Update(u)) => {
                    if let Some(f) = u.end_of_rib() {
                        Seen::EndOfRib(f)
                    } else if !u.announced().is_empty() {
                        Seen::Announce(u.announced(), u.communities().to_vec())
                    } else {
                        Seen::Withdraw(u.withdrawn_prefixes())
                    }
                }
                Ok(Message::Notification(n)) => Seen::Notification(n),
                _ => continue,
            };
            let _ = tx.send(seen);
        }
    }
}

fn pool() -> Pool {
    Pool {
        name: "p".into(),
        protocol: PoolProtocol::Bgp,
        ranges: vec![
            IpRange::new(
                "172.19.100.0".parse().unwrap(),
                "172.19.100.255".parse().unwrap(),
            )
            .unwrap(),
        ],
        auto_assign: true,
        avoid_buggy_ips: false,
        interfaces: vec![],
        node_selectors: vec![],
        bgp_advertisements: vec![BgpAdvertisement {
            communities: vec![Community::NO_EXPORT],
            ..Default::default()
        }],
        service_allocation: Default::default(),
    }
}

fn ann(ips: &[&str]) -> Vec<AnnouncedIp> {
    ips.iter()
        .map(|ip| AnnouncedIp {
            ip: ip.parse().unwrap(),
            pool: "p".into(),
            local_only: false,
            endpoints: BTreeMap::from([("n1".to_string(), 1)]),
            always_ready: false,
        })
        .collect()
}

fn node() -> LocalNode {
    LocalNode {
        name: "n1".into(),
        labels: BTreeMap::new(),
        eligible: true,
    }
}

fn spawn(peers: Vec<BgpPeer>) -> SpeakerHandle {
    Speaker::spawn(
        node(),
        peers,
        vec![pool()],
        SpeakerOptions {
            listen_port: None,
            ..SpeakerOptions::default()
        },
    )
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[tokio::test]
async fn routes_set_before_the_session_are_sent_once_up_then_end_of_rib() {
    let mut peer = FakePeer::start(Ipv4Addr::new(127, 0, 0, 2), 64501).await;
    let h = spawn(vec![peer.peer_config(64500, 64501)]);
    h.set_announcements(ann(&["172.19.100.1"]));
    assert_eq!(peer.next().await, Seen::Connected);
    assert_eq!(
        peer.next().await,
        Seen::Announce(vec![net("172.19.100.1/32")], vec![Community::NO_EXPORT])
    );
    assert_eq!(peer.next().await, Seen::EndOfRib(Family::IPV4_UNICAST));
    assert_eq!(peer.next().await, Seen::EndOfRib(Family::IPV6_UNICAST));
}

#[tokio::test]
async fn changing_the_announcements_sends_only_the_difference() {
    let mut peer = FakePeer::start(Ipv4Addr::new(127, 0, 0, 3), 64501).await;
    let h = spawn(vec![peer.peer_config(64500, 64501)]);
    h.set_announcements(ann(&["172.19.100.1", "172.19.100.2"]));
    peer.until(|s| *s == Seen::EndOfRib(Family::IPV6_UNICAST))
        .await;
    h.set_announcements(ann(&["172.19.100.2", "172.19.100.3"]));
    let mut got = vec![peer.next().await, peer.next().await];
    got.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        got,
        vec![
            Seen::Announce(vec![net("172.19.100.3/32")], vec![Community::NO_EXPORT]),
            Seen::Withdraw(vec![net("172.19.100.1/32")]),
        ]
    );
}

#[tokio::test]
async fn shutdown_withdraws_everything_then_sends_cease_with_the_communication() {
    let mut peer = FakePeer::start(Ipv4Addr::new(127, 0, 0, 4), 64501).await;
    let h = spawn(vec![peer.peer_config(64500, 64501)]);
    h.set_announcements(ann(&["172.19.100.1", "172.19.100.9"]));
    peer.until(|s| *s == Seen::EndOfRib(Family::IPV6_UNICAST))
        .await;
    h.shutdown("maintenance: back at 10:00", T).await.unwrap();
    assert_eq!(
        peer.next().await,
        Seen::Withdraw(vec![net("172.19.100.1/32"), net("172.19.100.9/32")])
    );
    let Seen::Notification(n) = peer.next().await else {
        panic!("no NOTIFICATION after the withdrawal");
    };
    assert_eq!(
        n.code,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(
        n.shutdown_communication(),
        Some("maintenance: back at 10:00")
    );
    assert_eq!(peer.next().await, Seen::Closed);
    assert!(h.is_closed());
}

#[tokio::test]
async fn reload_stops_removed_peers_and_leaves_unchanged_sessions_up() {
    let mut a = FakePeer::start(Ipv4Addr::new(127, 0, 0, 5), 64501).await;
    let mut b = FakePeer::start(Ipv4Addr::new(127, 0, 0, 6), 64502).await;
    let pa = a.peer_config(64500, 64501);
    let pb = b.peer_config(64500, 64502);
    let h = spawn(vec![pa.clone(), pb.clone()]);
    h.set_announcements(ann(&["172.19.100.1"]));
    a.until(|s| *s == Seen::EndOfRib(Family::IPV6_UNICAST))
        .await;
    b.until(|s| *s == Seen::EndOfRib(Family::IPV6_UNICAST))
        .await;
    h.update_peers(vec![pa.clone()]);
    let Seen::Notification(n) = b.until(|s| matches!(s, Seen::Notification(_))).await else {
        unreachable!()
    };
    assert_eq!(
        n.code,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    // A's session is the same one: no new connection, no NOTIFICATION, still Established.
    let snap = h.snapshot().await;
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].status.address, pa.address);
    assert_eq!(snap[0].status.state, State::Established);
    assert_eq!(snap[0].status.established_count, 1);
    assert_eq!(snap[0].status.prefixes_advertised, 1);
    assert!(snap[0].uptime.is_some());
    assert!(a.seen.try_recv().is_err(), "peer A saw something on reload");
    // A changed peer (new hold time) is restarted.
    let mut pa2 = pa.clone();
    pa2.hold_time = Duration::from_secs(30);
    pa2.keepalive_time = Duration::from_secs(10);
    h.update_peers(vec![pa2]);
    a.until(|s| matches!(s, Seen::Notification(_))).await;
    a.until(|s| *s == Seen::Connected).await;
    a.until(|s| matches!(s, Seen::Announce(..))).await;
}

#[tokio::test]
async fn snapshot_of_a_peer_that_cannot_be_reached_shows_why() {
    // Nothing listens on this port of 127.0.0.7.
    let probe = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut cfg = FakePeer {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), port),
        seen: mpsc::unbounded_channel().1,
    }
    .peer_config(64500, 64501);
    cfg.connect_delay = Duration::ZERO;
    let h = spawn(vec![cfg]);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let snap = h.snapshot().await;
        if let Some(e) = snap.first().and_then(|p| p.status.last_error.clone()) {
            assert!(e.contains("127.0.0.7") && e.contains("refused"), "{e}");
            assert_ne!(snap[0].status.state, State::Established);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn passive_peer_is_never_dialled() {
    let mut peer = FakePeer::start(Ipv4Addr::new(127, 0, 0, 8), 64501).await;
    let mut cfg = peer.peer_config(64500, 64501);
    cfg.passive = true;
    let h = spawn(vec![cfg]);
    // Nothing to await: the absence of a connection is checked over a bounded window.
    let r = tokio::time::timeout(Duration::from_millis(1500), peer.seen.recv()).await;
    assert!(r.is_err(), "a passive peer was dialled: {r:?}");
    assert_eq!(h.snapshot().await[0].status.state, State::Active);
}

/// Read one whole message from `stream`.
async fn read_message(stream: &mut TcpStream, framer: &mut Framer) -> Option<Message> {
    let opts = CodecOptions {
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
    };
    let mut buf = vec![0u8; 4096];
    loop {
        if let Ok(Some(frame)) = framer.next_message() {
            return decode(&frame, &opts).ok();
        }
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        framer.push(&buf[..n]);
    }
}

#[tokio::test]
async fn connection_collision_keeps_the_connection_opened_by_the_higher_router_id() {
    let opts = CodecOptions {
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
    };
    // The speaker listens on a free port of its own.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let speaker_port = probe.local_addr().unwrap().port();
    drop(probe);
    let peer_ip = Ipv4Addr::new(127, 0, 0, 9);
    let listener = TcpListener::bind((peer_ip, 0)).await.unwrap();
    let mut cfg = FakePeer {
        addr: listener.local_addr().unwrap(),
        seen: mpsc::unbounded_channel().1,
    }
    .peer_config(64500, 64501);
    cfg.router_id = Some(Ipv4Addr::new(10, 0, 0, 3));
    let h = Speaker::spawn(
        node(),
        vec![cfg],
        vec![pool()],
        SpeakerOptions {
            listen_port: Some(speaker_port),
            ..SpeakerOptions::default()
        },
    );
    h.set_announcements(ann(&["172.19.100.1"]));
    // Connection A: the speaker dials us; we read its OPEN and do not answer yet.
    let (mut a, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut fa = Framer::new(MAX_MESSAGE_LEN);
    assert!(matches!(
        read_message(&mut a, &mut fa).await,
        Some(Message::Open(_))
    ));
    // Connection B: we dial the speaker with a higher BGP identifier (10.0.0.9 > 10.0.0.3).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(peer_ip), 0)).unwrap();
    let mut b = sock
        .connect(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            speaker_port,
        ))
        .await
        .unwrap();
    let open = Open::new(
        64501,
        90,
        Ipv4Addr::new(10, 0, 0, 9),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(64501),
        ],
    );
    for m in [Message::Open(open), Message::Keepalive] {
        b.write_all(&m.encode(&opts).unwrap()).await.unwrap();
    }
    // RFC 4271 §6.8: the connection opened by the higher identifier (ours, B) stays; the
    // speaker closes its own (A) with Cease/Connection Collision Resolution.
    let mut got_cease = false;
    while let Some(m) = read_message(&mut a, &mut fa).await {
        if let Message::Notification(n) = m {
            assert_eq!(
                n.code,
                ErrorCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
            );
            got_cease = true;
        }
    }
    assert!(got_cease, "connection A closed without Cease");
    let mut fb = Framer::new(MAX_MESSAGE_LEN);
    let mut announced = Vec::new();
    while let Some(m) = read_message(&mut b, &mut fb).await {
        if let Message::Update(u) = m {
            announced.extend(u.announced());
            if u.end_of_rib().is_some() {
                break;
            }
        }
    }
    assert_eq!(announced, vec![net("172.19.100.1/32")]);
    let snap = h.snapshot().await;
    assert_eq!(snap[0].status.state, State::Established);
}

/// The value of `name{peer="ip:port"}` in the metrics text.
fn peer_sample(m: &Metrics, name: &str, peer: SocketAddr) -> Option<f64> {
    let prefix = format!("{name}{{peer=\"{peer}\"}} ");
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

#[tokio::test]
async fn peer_series_follow_the_session_and_vanish_when_the_peer_is_removed() {
    let mut peer = FakePeer::start(Ipv4Addr::new(127, 0, 0, 20), 64501).await;
    let metrics = Metrics::new();
    let h = Speaker::spawn(
        node(),
        vec![peer.peer_config(64500, 64501)],
        vec![pool()],
        SpeakerOptions {
            listen_port: None,
            metrics: metrics.clone(),
            ..SpeakerOptions::default()
        },
    );
    assert_eq!(
        peer_sample(&metrics, "lb_bgp_session_up", peer.addr),
        Some(0.0),
        "a configured peer has its series from the start"
    );
    h.set_announcements(ann(&["172.19.100.1"]));
    peer.until(|s| *s == Seen::EndOfRib(Family::IPV6_UNICAST))
        .await;
    // The peer task publishes right after sending; poll until it has.
    let deadline = tokio::time::Instant::now() + T;
    while peer_sample(&metrics, "lb_bgp_updates_total", peer.addr) != Some(3.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One route, then End-of-RIB for IPv4 and IPv6.
    assert_eq!(
        peer_sample(&metrics, "lb_bgp_session_up", peer.addr),
        Some(1.0)
    );
    assert_eq!(
        peer_sample(&metrics, "lb_bgp_announced_prefixes_total", peer.addr),
        Some(1.0)
    );
    assert_eq!(h.advertised_ips().await, 1);

    h.update_peers(vec![]);
    // Commands are handled in order: once the snapshot answers, the peer is gone.
    assert!(h.snapshot().await.is_empty());
    assert!(!metrics.encode().contains("127.0.0.20"));
    // The stopping task publishes once more after its Cease; its handle is detached, so
    // that cannot bring the series back (deterministically: the driver's unit test
    // `detached_peer_metrics_cannot_revive_removed_series`).
    peer.until(|s| *s == Seen::Closed).await;
    assert!(
        !metrics.encode().contains("127.0.0.20"),
        "{}",
        metrics.encode()
    );
    assert_eq!(h.advertised_ips().await, 0);
}
