//! The whole lbd, one node, in the namespace lab: a static layer-2 service is answered by ARP
//! and NDP from the node's MAC and reached by the client; a static BGP service is in the
//! router's RIB; SIGTERM silences ARP, withdraws the route with a Cease, and exits 0.
//! Both scrape the node's `/metrics` and check the layer-2 and BGP series.

use std::time::Duration;

use lb_testkit::dbus::{Bus, OwnershipSignals};
use lb_testkit::lab::peers::{Frr, FrrConfig};
use lb_testkit::lab::{Lab, probe, wait_until};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};

const T: Duration = Duration::from_secs(20);

fn node_config(name: &str, state_dir: &str, extra: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
state_dir = "{state_dir}"

[metrics]
listen = "127.0.0.1:7472"

[layer2]
gratuitous_count = 2
gratuitous_interval = "200ms"

[[pool]]
name = "ip-space-1"
protocol = "layer2"
addresses = ["10.10.100.200/32", "10.10.100.201/32", "fd00:10::200/128"]

[[service]]
name = "vip4"
ip = "10.10.100.200"
assign = true

[[service]]
name = "vip6"
ip = "fd00:10::200"
{extra}
"#
    )
}

/// lbd in `node`'s namespace with `bus` as its system bus (a unix socket: reachable from
/// the namespace).
fn spawn_on_bus(
    node: &lb_testkit::lab::Host,
    bin: &std::path::Path,
    cfg: &std::path::Path,
    bus: &Bus,
) -> lb_testkit::lab::Proc {
    let bus_env = format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address);
    node.spawn(&[
        "env",
        &bus_env,
        bin.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ])
    .unwrap()
}

#[test]
fn standalone_lbd_answers_arp_and_ndp_for_static_services_and_falls_silent_on_sigterm() {
    let lab = Lab::new("lbdl2");
    let node = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    let state = node.owned_dir("state", "root:root").unwrap();
    let cfg = node
        .write_file(
            "lb.toml",
            &node_config("node1", &state.display().to_string(), ""),
        )
        .unwrap();
    let lbd_bin = lbd_binary();
    // A private bus (a unix socket: reachable from the namespace), to see the D-Bus
    // OwnershipChanged signals a running lbd sends.
    let bus = Bus::start();
    let signals = OwnershipSignals::collect(&bus);
    let lbd = spawn_on_bus(&node, &lbd_bin, &cfg, &bus);
    for ip in ["10.10.100.200", "fd00:10::200"] {
        lbd.wait_for_log(&format!("announcing {ip} on eth0"), T)
            .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    }

    let p4 = probe::l2probe(
        &client,
        "10.10.100.200".parse().unwrap(),
        Duration::from_secs(2),
        Duration::from_millis(20),
    )
    .unwrap();
    let p6 = probe::l2probe(
        &client,
        "fd00:10::200".parse().unwrap(),
        Duration::from_secs(2),
        Duration::from_millis(20),
    )
    .unwrap();
    let r4 = p4.finish().unwrap();
    let r6 = p6.finish().unwrap();
    assert_eq!(
        r4.macs().into_iter().collect::<Vec<_>>(),
        vec![node.mac().to_string()],
        "ARP answered by the node only"
    );
    assert_eq!(
        r6.macs().into_iter().collect::<Vec<_>>(),
        vec![node.mac().to_string()],
        "NDP answered by the node only"
    );
    assert!(
        r4.answers().count() > 50,
        "ARP answers: {}",
        r4.answers().count()
    );
    // The client reaches the VIP: the node holds it on lo (assign = true), arp_ignore=1.
    assert!(client.ping_within("10.10.100.200", T));
    // Nothing else was answered: .201 belongs to no service.
    let idle = probe::l2probe(
        &client,
        "10.10.100.201".parse().unwrap(),
        Duration::from_millis(500),
        Duration::from_millis(20),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(
        idle.answers().count(),
        0,
        "an unassigned IP is answered: {:?}",
        idle.macs()
    );

    // A reload that changes something else (a new pool) keeps answering the VIP: no gap
    // beyond the probe's own jitter while lbd re-reads and applies the file.
    let during = probe::l2probe(
        &client,
        "10.10.100.200".parse().unwrap(),
        Duration::from_secs(2),
        Duration::from_millis(10),
    )
    .unwrap();
    wait_until(T, "the probe gets answers", || {
        during.snapshot().iter().filter(|r| r.ok).count() >= 10
    });
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[[pool]]\nname = \"extra\"\nprotocol = \"layer2\"\naddresses = [\"10.10.100.210/32\"]\n"),
    )
    .unwrap();
    lbd.kill(lb_testkit::lab::Signal::Hup);
    lbd.wait_for_log("configuration reloaded: pools/services applied", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    let during = during.finish().unwrap();
    let gap = during
        .longest_gap_between_answers()
        .map(|g| g.duration())
        .unwrap_or_default();
    assert!(
        gap < Duration::from_millis(200),
        "the VIP went unanswered for {gap:?} across the reload\n{}",
        lbd.log()
    );
    assert_eq!(during.macs().len(), 1);

    // The probes' requests and our replies, per IP, on /metrics.
    let m = scrape_metrics(&node, "127.0.0.1:7472");
    for (ip, answers) in [
        ("10.10.100.200", r4.answers().count()),
        ("fd00:10::200", r6.answers().count()),
    ] {
        let get = |series: &str| m.get(&format!("{series}{{ip=\"{ip}\"}}")).copied();
        let requests = get("lb_layer2_requests_received_total").unwrap_or(0.0);
        let responses = get("lb_layer2_responses_sent_total").unwrap_or(0.0);
        assert!(
            requests >= answers as f64 && responses >= answers as f64,
            "{ip}: {requests} requests, {responses} responses, {answers} answers seen: {m:?}"
        );
        assert!(
            get("lb_layer2_gratuitous_sent_total").is_some_and(|g| g >= 2.0),
            "{ip}: gratuitous_count = 2: {m:?}"
        );
    }
    assert!(
        !m.keys().any(|k| k.contains("10.10.100.201")),
        "a series for an IP not owned: {m:?}"
    );
    assert_eq!(
        m.get("lb_announced_ips{protocol=\"layer2\"}"),
        Some(&2.0),
        "{m:?}"
    );
    assert_eq!(m.get("lb_cluster_is_leader"), Some(&1.0), "{m:?}");

    // Every gain was signalled on the bus, naming this host.
    wait_until(T, "OwnershipChanged for both VIPs", || {
        let seen = signals.seen();
        ["10.10.100.200", "fd00:10::200"]
            .iter()
            .all(|ip| seen.contains(&(ip.to_string(), "node1".to_string())))
    });

    lbd.kill(lb_testkit::lab::Signal::Term);
    let status = lbd.wait_timeout(T).expect("lbd exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", lbd.log());
    // ...and the loss (owner ""), before lbd left the bus.
    let seen = signals.seen();
    for ip in ["10.10.100.200", "fd00:10::200"] {
        assert!(
            seen.contains(&(ip.to_string(), String::new())),
            "no OwnershipChanged({ip}, \"\") at shutdown: {seen:?}"
        );
    }
    let after = probe::l2probe(
        &client,
        "10.10.100.200".parse().unwrap(),
        Duration::from_millis(500),
        Duration::from_millis(20),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(after.answers().count(), 0, "still answered after SIGTERM");
    let lo = node
        .stdout(&["ip", "-o", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(!lo.contains("10.10.100.200"), "static IP left on lo: {lo}");
}

#[test]
fn standalone_lbd_advertises_a_static_bgp_service_to_frr_and_withdraws_on_sigterm() {
    let lab = Lab::new("lbdbgp");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let frr = Frr::start(
        &router,
        &FrrConfig::new(64500, "10.10.100.1").neighbor("10.10.100.3", 64500),
    )
    .unwrap();
    let state = node.owned_dir("state", "root:root").unwrap();
    let state = state.display().to_string();
    let cfg = r#"
[node]
name = "node1"
state_dir = "STATE"

[metrics]
listen = "127.0.0.1:7472"

[[pool]]
name = "ip-pool-1"
protocol = "bgp"
addresses = ["172.19.100.0/24"]
[[pool.bgp_advertisement]]
local_pref = 200
communities = ["64500:100", "no-export"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "10.10.100.1"
hold_time = "9s"

[[service]]
name = "dns"
ip = "172.19.100.0"
"#;
    let cfg = node
        .write_file("lb.toml", &cfg.replace("STATE", &state))
        .unwrap();
    let lbd_bin = lbd_binary();
    let bus = Bus::start();
    let lbd = spawn_on_bus(&node, &lbd_bin, &cfg, &bus);
    frr.wait_established("10.10.100.3", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    wait_until(T, "172.19.100.0/32 in FRR's RIB", || {
        !frr.paths("172.19.100.0/32").is_empty()
    });

    // lbctl peers / cluster read the running lbd over D-Bus.
    let lbctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .arg("--bus")
            .arg(&bus.address)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "lbctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(T, "lbctl peers: Established, one prefix", || {
        let peers: serde_json::Value =
            serde_json::from_str(&lbctl(&["peers", "--json"])).unwrap_or_default();
        peers[0]["address"] == "10.10.100.1"
            && peers[0]["state"] == "Established"
            && peers[0]["prefixes_advertised"] == 1
    });
    let table = lbctl(&["peers"]);
    assert!(
        table.contains("10.10.100.1") && table.contains("Established"),
        "{table}"
    );
    let cluster: serde_json::Value = serde_json::from_str(&lbctl(&["cluster", "--json"])).unwrap();
    assert_eq!(cluster["role"], "standalone", "{cluster}");
    assert!(lbctl(&["cluster"]).contains("standalone"));
    let routes = frr.routes_json(Some("172.19.100.0/32")).unwrap();
    let text = routes.to_string();
    assert!(text.contains("10.10.100.3"), "next hop: {text}");
    assert!(text.contains("200"), "local pref: {text}");
    assert!(
        text.contains("64500:100") && text.contains("noExport"),
        "communities: {text}"
    );

    // The session and what it carries, on /metrics (lb_announced_ips is refreshed each second).
    let peer = "{peer=\"10.10.100.1:179\"}";
    let mut m = Default::default();
    wait_until(T, "BGP series on /metrics", || {
        m = scrape_metrics(&node, "127.0.0.1:7472");
        m.get(&format!("lb_bgp_session_up{peer}")) == Some(&1.0)
            && m.get("lb_announced_ips{protocol=\"bgp\"}") == Some(&1.0)
    });
    assert_eq!(
        m.get(&format!("lb_bgp_announced_prefixes_total{peer}")),
        Some(&1.0),
        "{m:?}"
    );
    // The route and an End-of-RIB at least.
    assert!(
        m.get(&format!("lb_bgp_updates_total{peer}"))
            .is_some_and(|n| *n >= 2.0),
        "{m:?}"
    );
    assert!(
        m.contains_key(&format!("lb_bgp_updates_received_total{peer}")),
        "{m:?}"
    );

    lbd.kill(lb_testkit::lab::Signal::Term);
    let status = lbd.wait_timeout(T).expect("lbd exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", lbd.log());
    wait_until(T, "route withdrawn", || {
        frr.paths("172.19.100.0/32").is_empty()
    });
    let neighbor = frr.vtysh(&["show bgp neighbor 10.10.100.3 json"]).unwrap();
    assert!(
        neighbor.contains("lbd shutting down"),
        "FRR saw the shutdown communication: {neighbor}"
    );
}
