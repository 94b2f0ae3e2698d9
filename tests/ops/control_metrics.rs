//! /metrics, /live and /ready over loopback, spoken to with a raw HTTP/1.1 client.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb::cluster::wire::DropReason;
use lb::control::http::{self, Liveness};
use lb::control::metrics::{CONTENT_TYPE, Metrics, SERIES};
use lb::control::state::{AddressCount, AnnounceProtocol, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("server closes the connection")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
}

/// Metric families of an OpenMetrics text: family name → (type, sample lines).
fn parse_exposition(text: &str) -> BTreeMap<String, (String, Vec<(String, f64)>)> {
    let mut families: BTreeMap<String, (String, Vec<(String, f64)>)> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            current = name.to_string();
            families.insert(current.clone(), (kind.to_string(), Vec::new()));
        } else if line.starts_with('#') {
            continue;
        } else {
            let (sample, value) = line.rsplit_once(' ').expect("sample value");
            let name = sample.split('{').next().unwrap();
            assert!(
                name.starts_with(&current),
                "sample {name} outside its family {current}"
            );
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            families
                .get_mut(&current)
                .unwrap()
                .1
                .push((sample.to_string(), v));
        }
    }
    families
}

fn family_of(name: &str, kind: &str) -> String {
    let suffix = match kind {
        "counter" => "_total",
        "info" => "_info",
        _ => "",
    };
    name.strip_suffix(suffix)
        .filter(|_| !suffix.is_empty())
        .unwrap_or(name)
        .to_string()
}

fn populated() -> Metrics {
    let m = Metrics::new();
    let ip: IpAddr = "10.10.100.200".parse().unwrap();
    let peer: SocketAddr = "10.10.100.1:179".parse().unwrap();
    m.set_pool("ip-space-1", AddressCount(13), AddressCount(1), 1);
    m.set_announced_ips(AnnounceProtocol::Layer2, 1);
    m.set_announced_ips(AnnounceProtocol::Bgp, 0);
    m.layer2_request_received(ip);
    m.layer2_response_sent(ip);
    m.layer2_gratuitous_sent(ip);
    m.layer2_gratuitous_sent(ip);
    m.set_bgp_session_up(peer, true);
    m.bgp_updates_sent(peer, 1);
    m.bgp_updates_received(peer, 1);
    m.set_bgp_announced_prefixes(peer, 1);
    m.set_cluster_term(7);
    m.set_is_leader(true);
    m.election_started();
    m.cluster_datagrams_dropped(DropReason::BadMac, 3);
    m.set_cluster_member("worker-1", Some(true), None);
    m.set_cluster_member("worker-2", Some(false), Some(Duration::from_millis(2500)));
    m.observe_failover(Duration::from_millis(240));
    m.cluster_join_refused("voter_list_differs");
    m.config_reloaded(true);
    m.config_loaded(1_700_000_000);
    m.set_layer2_owners(&BTreeMap::from([(ip, ("ip-space-1".to_string(), true))]));
    m.set_bfd_session(peer.ip(), true, 0);
    m
}

async fn start(
    metrics: Metrics,
    liveness: Liveness,
    ready: bool,
) -> (http::MetricsServer, watch::Sender<Snapshot>) {
    let mut snap = Snapshot::starting("worker-1", "/etc/lb.toml", 0);
    snap.ready = ready;
    let (tx, rx) = watch::channel(snap);
    let server = http::serve("127.0.0.1:0".parse().unwrap(), metrics, liveness, rx)
        .await
        .unwrap();
    (server, tx)
}

#[tokio::test]
async fn scrape_has_every_documented_series_with_its_type() {
    let (server, _tx) = start(populated(), Liveness::new(Duration::from_secs(5)), true).await;
    let r = get(server.local_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], CONTENT_TYPE);
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    assert!(r.body.ends_with("# EOF\n"));
    let families = parse_exposition(&r.body);
    for (name, kind, labels, _) in SERIES {
        let family = family_of(name, kind);
        let (got_kind, samples) = families
            .get(&family)
            .unwrap_or_else(|| panic!("{name}: family {family} missing from:\n{}", r.body));
        assert_eq!(got_kind, kind, "{name}");
        assert!(!samples.is_empty(), "{name} has no samples");
        for label in *labels {
            assert!(
                samples
                    .iter()
                    .any(|(s, _)| s.contains(&format!("{label}=\""))),
                "{name} lacks label {label}"
            );
        }
    }
    let value = |sample: &str| {
        families
            .values()
            .flat_map(|(_, s)| s)
            .find(|(n, _)| n == sample)
            .map(|(_, v)| *v)
    };
    assert_eq!(
        value("lb_layer2_gratuitous_sent_total{ip=\"10.10.100.200\"}"),
        Some(2.0)
    );
    assert_eq!(
        value("lb_allocator_addresses_total{pool=\"ip-space-1\"}"),
        Some(13.0)
    );
    assert_eq!(
        value("lb_bgp_session_up{peer=\"10.10.100.1:179\"}"),
        Some(1.0)
    );
    assert_eq!(value("lb_cluster_term"), Some(7.0));
    assert_eq!(
        value("lb_cluster_datagrams_dropped_total{reason=\"bad_mac\"}"),
        Some(3.0)
    );
    assert_eq!(
        value("lb_cluster_member_healthy{member=\"worker-2\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("lb_cluster_member_last_seen_seconds{member=\"worker-2\"}"),
        Some(2.5)
    );
    assert_eq!(
        value("lb_cluster_member_last_seen_seconds{member=\"worker-1\"}"),
        None,
        "no last-seen time for a member not heard from"
    );
    assert_eq!(
        value("lb_failover_duration_seconds_bucket{le=\"0.3\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_member_this_host_knows_nothing_about_has_no_series() {
    let m = Metrics::new();
    m.set_cluster_member("worker-2", Some(true), Some(Duration::from_millis(40)));
    m.set_cluster_member("worker-2", None, None);
    let (server, _tx) = start(m, Liveness::new(Duration::from_secs(5)), true).await;
    let body = get(server.local_addr(), "/metrics").await.body;
    assert!(!body.contains("member=\"worker-2\""), "{body}");
}

#[tokio::test]
async fn counters_move_between_scrapes() {
    let m = Metrics::new();
    let (server, _tx) = start(m.clone(), Liveness::new(Duration::from_secs(5)), true).await;
    m.election_started();
    let first = parse_exposition(&get(server.local_addr(), "/metrics").await.body);
    m.election_started();
    let second = parse_exposition(&get(server.local_addr(), "/metrics").await.body);
    assert_eq!(
        first["lb_cluster_elections"].1,
        [("lb_cluster_elections_total".to_string(), 1.0)]
    );
    assert_eq!(
        second["lb_cluster_elections"].1,
        [("lb_cluster_elections_total".to_string(), 2.0)]
    );
}

#[tokio::test]
async fn ready_is_503_until_the_snapshot_says_ready() {
    let (server, tx) = start(Metrics::new(), Liveness::new(Duration::from_secs(5)), false).await;
    let r = get(server.local_addr(), "/ready").await;
    assert_eq!(r.status, 503);
    tx.send_modify(|s| s.ready = true);
    let r = get(server.local_addr(), "/ready").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn live_is_503_when_the_main_loop_stops_touching() {
    let long_ago = Instant::now().checked_sub(Duration::from_secs(30)).unwrap();
    let liveness = Liveness::new_at(long_ago, Duration::from_secs(10));
    let (server, _tx) = start(Metrics::new(), liveness.clone(), true).await;
    assert_eq!(get(server.local_addr(), "/live").await.status, 503);
    liveness.touch();
    assert_eq!(get(server.local_addr(), "/live").await.status, 200);
}

#[tokio::test]
async fn other_methods_paths_and_garbage_get_http_errors() {
    let (server, _tx) = start(Metrics::new(), Liveness::new(Duration::from_secs(5)), true).await;
    let a = server.local_addr();
    let r = raw(a, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!((r.status, r.headers["allow"].as_str()), (405, "GET, HEAD"));
    assert_eq!(get(a, "/").await.status, 404);
    assert_eq!(
        raw(a, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
            .await
            .status,
        400
    );
    assert_eq!(raw(a, b"GET /metrics HTTP/3\r\n\r\n").await.status, 505);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(raw(a, huge.as_bytes()).await.status, 431);
    // HEAD: the GET headers, no body.
    let r = raw(a, b"HEAD /ready HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (
            r.status,
            r.headers["content-length"].as_str(),
            r.body.as_str()
        ),
        (200, "6", "")
    );
    // Still serving after all that.
    assert_eq!(get(a, "/metrics").await.status, 200);
}

#[tokio::test]
async fn listening_on_a_taken_port_names_the_address() {
    let (server, _tx) = start(Metrics::new(), Liveness::new(Duration::from_secs(5)), true).await;
    let (_tx2, rx) = watch::channel(Snapshot::starting("n", "/etc/lb.toml", 0));
    let err = http::serve(
        server.local_addr(),
        Metrics::new(),
        Liveness::new(Duration::from_secs(5)),
        rx,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&server.local_addr().to_string()),
        "{err}"
    );
}
