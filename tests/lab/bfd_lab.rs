//! BFD between lbd and FRR's bfdd in the namespace lab (RFC 5880/5881, single hop, IPv4).
//!
//! - FRR's `show bfd peers` shows the session with lbd Up; a packet captured from bfdd
//!   decodes with lb's codec.
//! - The node's link goes down: FRR's BFD notices within ~1 s (300 ms × 3) and its route to
//!   the service goes, far below the 9 s BGP hold timer.
//! - lbd stops hearing FRR's BFD (nft drops UDP 3784 on the node): lbd resets its BGP
//!   session with Cease/BFD Down before the hold timer; `lb_bfd_session_up` goes from 1 to 0
//!   and `lb_bfd_session_down_events_total` counts the failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb::bfd::codec::{State, decode};
use lb_testkit::lab::peers::{Frr, FrrConfig};
use lb_testkit::lab::{Host, Lab, Proc, wait_until};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};

const T: Duration = Duration::from_secs(20);
const ROUTER: &str = "10.10.100.1";
const NODE: &str = "10.10.100.3";
const SERVICE: &str = "172.19.100.0/32";

fn start(prefix: &str) -> (Lab, Host, Host, Frr, Proc, PathBuf) {
    let lab = Lab::new(prefix);
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    let mut cfg = FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500);
    cfg.bfd = Some((300, 300, 3));
    let frr = Frr::start(&router, &cfg).unwrap();
    let state = node.owned_dir("state", "root:root").unwrap();
    let text = lbd_config(&state);
    let conf = node.write_file("lb.toml", &text).unwrap();
    let bin = lbd_binary();
    // `env` execs lbd: the PID is lbd's. Never the machine's system bus.
    let lbd = node
        .spawn_labeled(
            "lbd",
            &[
                "env",
                "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                bin.to_str().unwrap(),
                "--config",
                conf.to_str().unwrap(),
            ],
        )
        .unwrap();
    frr.wait_established(NODE, T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    wait_until(T, "the service route in FRR's RIB", || {
        !frr.paths(SERVICE).is_empty()
    });
    (lab, router, node, frr, lbd, conf)
}

fn lbd_config(state: &Path) -> String {
    format!(
        r#"
[node]
name = "node1"
state_dir = "{}"

[[pool]]
name = "bgp-pool"
protocol = "bgp"
addresses = ["172.19.100.0/24"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "{ROUTER}"
hold_time = "9s"
bfd = {{ receive_interval = "300ms", transmit_interval = "300ms", detect_multiplier = 3 }}

[[service]]
name = "dns"
ip = "172.19.100.0"
"#,
        state.display()
    )
}

fn wait_bfd_up(frr: &Frr, lbd: &Proc) -> serde_json::Value {
    let mut last = None;
    let r = lb_testkit::lab::try_wait_until(T, "FRR's BFD peer with lbd Up", || {
        last = frr.bfd_peer(NODE);
        last.as_ref().and_then(|p| p["status"].as_str()) == Some("up")
    });
    if let Err(e) = r {
        panic!("{e}\nFRR: {last:?}\n{}\nlbd:\n{}", frr.log(), lbd.log());
    }
    last.unwrap_or_default()
}

#[test]
fn frr_shows_the_bfd_session_with_lbd_up_and_a_captured_bfdd_packet_decodes() {
    let (_lab, router, _node, frr, lbd, _) = start("bfdup");
    let peer = wait_bfd_up(&frr, &lbd);
    println!("FRR show bfd peers: {peer}");
    assert_eq!(peer["local"].as_str(), Some(ROUTER), "{peer}");
    // lbd's intervals as FRR sees them (FRR prints milliseconds).
    assert_eq!(
        peer["remote-receive-interval"].as_u64(),
        Some(300),
        "{peer}"
    );
    assert_eq!(
        peer["remote-transmit-interval"].as_u64(),
        Some(300),
        "{peer}"
    );
    assert_eq!(peer["remote-detect-multiplier"].as_u64(), Some(3), "{peer}");
    lbd.wait_for_log("BFD session up", T).unwrap();

    // A packet from bfdd, captured on the router's side, decodes: Up, addressed to lbd.
    let out = router
        .sh(&format!(
            "timeout 5 tcpdump -c 1 -i {} -nn -x 'udp and src host {ROUTER} and dst port 3784' 2>/dev/null",
            router.ifname()
        ))
        .unwrap();
    let hex: String = out
        .lines()
        .filter(|l| l.trim_start().starts_with("0x"))
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    // IPv4 header (IHL) then 8 octets of UDP: the BFD payload follows.
    assert!(bytes.len() > 28, "capture: {out}");
    let ihl = usize::from(bytes[0] & 0x0f) * 4;
    assert_eq!(bytes[8], 255, "bfdd sends with TTL 255");
    let p = decode(&bytes[ihl + 8..]).unwrap_or_else(|e| panic!("{e}: {out}"));
    println!("captured from bfdd: {}", hex_of(&bytes[ihl + 8..]));
    assert_eq!(p.state, State::Up);
    assert_eq!(p.detect_mult, 3);
    assert_eq!(p.required_min_rx, 300_000);
    assert_ne!(p.your_discriminator, 0);
}

fn hex_of(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn node_link_down_removes_the_route_at_frr_within_the_bfd_detection_time() {
    let (_lab, _router, node, frr, lbd, _) = start("bfdlink");
    wait_bfd_up(&frr, &lbd);
    let t0 = Instant::now();
    node.link_down().unwrap();
    wait_until(
        Duration::from_secs(15),
        "the service route gone at FRR",
        || frr.paths(SERVICE).is_empty(),
    );
    let took = t0.elapsed();
    println!("link down -> route gone at FRR with BFD 300 ms x 3: {took:?} (hold timer 9 s)");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}\n{}\nlbd:\n{}",
        frr.log(),
        lbd.log()
    );
    let peer = frr.bfd_peer(NODE).unwrap_or_default();
    assert_eq!(peer["status"].as_str(), Some("down"), "{peer}");
    // Back up: BFD and BGP recover by themselves.
    node.link_up().unwrap();
    frr.wait_established(NODE, T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    wait_bfd_up(&frr, &lbd);
}

#[test]
fn lbd_resets_bgp_with_cease_bfd_down_when_frr_bfd_packets_stop() {
    let (_lab, _router, node, frr, lbd, _) = start("bfdcease");
    wait_bfd_up(&frr, &lbd);
    lbd.wait_for_log("BFD session up", T).unwrap();
    // /metrics (the default 127.0.0.1:7472, in the node's namespace) says so too.
    let bfd_series = || {
        let m = scrape_metrics(&node, "127.0.0.1:7472");
        let v = |name: &str| m.get(&format!("{name}{{peer=\"{ROUTER}\"}}")).copied();
        (
            v("lb_bfd_session_up"),
            v("lb_bfd_session_down_events_total"),
        )
    };
    assert_eq!(bfd_series(), (Some(1.0), Some(0.0)), "{}", lbd.log());
    let t0 = Instant::now();
    node.sh("nft add table inet bfdtest && \
         nft add chain inet bfdtest in '{ type filter hook input priority 0; }' && \
         nft add rule inet bfdtest in udp dport 3784 drop")
        .unwrap();
    lbd.wait_for_log("cease: BfdDown (6/10)", Duration::from_secs(8))
        .unwrap_or_else(|e| panic!("{e}\n{}", frr.log()));
    let took = t0.elapsed();
    println!("BFD packets dropped -> lbd sent Cease/BFD Down after {took:?} (hold timer 9 s)");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let log = lbd.log();
    assert!(log.contains("BFD session down"), "{log}");
    // One path failure counted; the session stays down while its packets are dropped.
    assert_eq!(bfd_series(), (Some(0.0), Some(1.0)), "{log}");
    // FRR recorded the reason.
    let n = frr
        .vtysh(&[&format!("show bgp neighbor {NODE} json")])
        .unwrap();
    assert!(n.contains("BFD"), "FRR's last reset names BFD: {n}");
}

#[test]
fn reload_retimes_removes_and_re_adds_the_bfd_session() {
    let (_lab, _router, _node, frr, lbd, conf) = start("bfdhup");
    let t0 = Instant::now();
    wait_bfd_up(&frr, &lbd);
    println!("BGP established -> BFD Up at FRR: {:?}", t0.elapsed());
    let dropped = |frr: &Frr| {
        frr.vtysh_json(&format!("show bgp neighbor {NODE} json"))
            .ok()
            .and_then(|v| v[NODE]["connectionsDropped"].as_u64())
    };
    let before = dropped(&frr).expect("connectionsDropped");
    let text = std::fs::read_to_string(&conf).unwrap();
    let bfd_line = text
        .lines()
        .find(|l| l.starts_with("bfd = "))
        .unwrap()
        .to_string();
    // New timers: a Poll Sequence, FRR sees them, BGP stays up.
    let faster = text.replace(
        "transmit_interval = \"300ms\"",
        "transmit_interval = \"200ms\"",
    );
    std::fs::write(&conf, &faster).unwrap();
    lbd.kill(lb_testkit::lab::Signal::Hup);
    wait_until(T, "FRR sees lbd's 200 ms transmit interval", || {
        frr.bfd_peer(NODE).is_some_and(|p| {
            p["status"].as_str() == Some("up")
                && p["remote-transmit-interval"].as_u64() == Some(200)
        })
    });
    assert_eq!(
        dropped(&frr),
        Some(before),
        "BGP not reset by re-timing\n{}",
        lbd.log()
    );
    // Remove bfd: lbd's session goes AdminDown and FRR's goes down; lbd does not reset BGP
    // itself (FRR 8.4 does: it treats a peer's AdminDown as Down).
    std::fs::write(&conf, text.replace(&bfd_line, "")).unwrap();
    lbd.kill(lb_testkit::lab::Signal::Hup);
    wait_until(T, "FRR's BFD peer down (lbd sent AdminDown)", || {
        frr.bfd_peer(NODE)
            .is_some_and(|p| p["status"].as_str() == Some("down"))
    });
    lbd.wait_for_log("BFD session removed", T).unwrap();
    assert!(
        !lbd.log().contains("resetting the BGP session"),
        "{}",
        lbd.log()
    );
    // Re-add it: Up again, BGP Established.
    std::fs::write(&conf, &text).unwrap();
    lbd.kill(lb_testkit::lab::Signal::Hup);
    wait_bfd_up(&frr, &lbd);
    frr.wait_established(NODE, T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
}
