//! lb's BGP speaker (`examples/lb-bgp-speaker`) against real routers in the namespace lab:
//! FRR (iBGP with ECMP over three nodes, IPv4 and IPv6; eBGP with TCP-MD5), BIRD (dynamic
//! `neighbor range`), GoBGP and exabgp. Run as root in plain `cargo test`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_testkit::lab::peers::{
    Bird, BirdConfig, Exabgp, ExabgpConfig, Frr, FrrConfig, Gobgp, GobgpConfig, kernel_nexthops,
};
use lb_testkit::lab::probe::{self, ReachMode};
use lb_testkit::lab::{Host, Lab, Proc, Signal, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);
const VIP4: &str = "172.19.100.10";
const VIP6: &str = "fd00:172::10";

/// The speaker example, built on first use.
fn speaker_bin() -> PathBuf {
    lb_testkit::examples::example_binary("lb-bgp-speaker")
}

/// One `[[bgp_peer]]` of the speaker's lb.toml.
struct PeerSpec {
    address: &'static str,
    my_asn: u32,
    peer_asn: u32,
    extra: Vec<String>,
}

impl PeerSpec {
    fn new(address: &'static str, my_asn: u32, peer_asn: u32) -> Self {
        PeerSpec {
            address,
            my_asn,
            peer_asn,
            extra: Vec::new(),
        }
    }
    fn with(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }
}

const POOL: &str = r#"
[[pool]]
name = "bgp-pool"
protocol = "bgp"
addresses = ["172.19.100.0/24", "fd00:172::/120"]
[[pool.bgp_advertisement]]
aggregation_length = 32
aggregation_length_v6 = 128
local_pref = 300
communities = ["64500:100", "no-export", "64500:1:2"]
"#;

fn config_text(node: &str, peers: &[PeerSpec]) -> String {
    let mut s = format!("[node]\nname = \"{node}\"\n{POOL}\n");
    for p in peers {
        s += &format!("[[bgp_peer]]\nmy_asn = {}\n", p.my_asn);
        // 0: the spec says `dynamic_asn` instead.
        if p.peer_asn != 0 {
            s += &format!("peer_asn = {}\n", p.peer_asn);
        }
        s += &format!("address = \"{}\"\n", p.address);
        if !p.extra.iter().any(|l| l.starts_with("hold_time")) {
            s += "hold_time = \"9s\"\n";
        }
        for l in &p.extra {
            s += l;
            s += "\n";
        }
    }
    s
}

/// The speaker running in a lab node.
struct Speaker {
    proc: Proc,
    prefixes: PathBuf,
}

impl Speaker {
    fn start(host: &Host, peers: &[PeerSpec], ips: &[&str]) -> Speaker {
        let config = host
            .write_file("lb.toml", &config_text(host.name(), peers))
            .unwrap();
        let prefixes = host
            .write_file("prefixes", &(ips.join("\n") + "\n"))
            .unwrap();
        let bin = speaker_bin().to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let pf = prefixes.to_string_lossy().into_owned();
        let proc = host
            .spawn(&[
                "env",
                "RUST_LOG=info,lb::bgp=debug",
                &bin,
                "--config",
                &config,
                "--prefixes",
                &pf,
            ])
            .unwrap();
        Speaker { proc, prefixes }
    }

    /// Replace the announced IPs and SIGHUP.
    fn announce(&self, ips: &[&str]) {
        std::fs::write(&self.prefixes, ips.join("\n") + "\n").unwrap();
        self.proc.kill(Signal::Hup);
    }

    fn log(&self) -> String {
        self.proc.log()
    }
}

fn nexthops_of(paths: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = paths
        .iter()
        .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Router `10.10.100.1` (+ `fd00:10::1`) with a client network `10.10.200.0/24` behind it,
/// three nodes `.3/.4/.5` that hold the VIPs on `lo` and answer TCP 8080 with their name.
fn ecmp_lab(name: &str) -> (Lab, Host, Host, Vec<Host>) {
    let lab = Lab::new(name);
    let router = lab.router("router", &["10.10.100.1/24", "fd00:10::1/64"]);
    let seg = lab.segment().unwrap();
    router
        .attach(&seg, "eth1", &["10.10.200.1/24", "fd00:200::1/64"])
        .unwrap();
    let client = lab.host("client", &[]);
    client
        .attach(&seg, "eth1", &["10.10.200.9/24", "fd00:200::9/64"])
        .unwrap();
    client
        .run(&["ip", "route", "add", "default", "via", "10.10.200.1"])
        .unwrap();
    client
        .run(&["ip", "-6", "route", "add", "default", "via", "fd00:200::1"])
        .unwrap();
    let nodes: Vec<Host> = (3..6)
        .map(|i| {
            let n = lab.node(
                &format!("node{}", i - 2),
                &[&format!("10.10.100.{i}/24"), &format!("fd00:10::{i}/64")],
            );
            n.add_lo_ip(&format!("{VIP4}/32")).unwrap();
            n.add_lo_ip(&format!("{VIP6}/128")).unwrap();
            n.run(&["ip", "route", "add", "10.10.200.0/24", "via", "10.10.100.1"])
                .unwrap();
            n.run(&[
                "ip",
                "-6",
                "route",
                "add",
                "fd00:200::/64",
                "via",
                "fd00:10::1",
            ])
            .unwrap();
            n
        })
        .collect();
    (lab, router, client, nodes)
}

#[test]
fn frr_ibgp_ecmp_over_three_nodes_then_withdraw_and_sigterm() {
    let (lab, router, client, nodes) = ecmp_lab("bgpfrr");
    let mut cfg = FrrConfig::new(64500, "10.10.100.1");
    for i in 3..6 {
        cfg = cfg
            .neighbor(&format!("10.10.100.{i}"), 64500)
            .neighbor(&format!("fd00:10::{i}"), 64500);
    }
    cfg.maximum_paths_ibgp = Some(4);
    let frr = Frr::start(&router, &cfg).unwrap();
    let _responders: Vec<Proc> = nodes
        .iter()
        .map(|n| {
            let socat = format!("SYSTEM:echo {}", n.name());
            n.spawn(&["socat", "TCP-LISTEN:8080,reuseaddr,fork", &socat])
                .unwrap()
        })
        .collect();
    let speakers: Vec<Speaker> = nodes
        .iter()
        .map(|n| {
            Speaker::start(
                n,
                &[
                    PeerSpec::new("10.10.100.1", 64500, 64500),
                    PeerSpec::new("fd00:10::1", 64500, 64500),
                ],
                &[VIP4, VIP6],
            )
        })
        .collect();
    for i in 3..6 {
        for a in [format!("10.10.100.{i}"), format!("fd00:10::{i}")] {
            frr.wait_established(&a, 20 * S)
                .unwrap_or_else(|e| panic!("{e}\nspeaker log:\n{}", speakers[i - 3].log()));
        }
    }
    wait_until(10 * S, "three IPv4 paths at FRR", || {
        frr.paths(&format!("{VIP4}/32")).len() == 3
    });
    let paths = frr.paths(&format!("{VIP4}/32"));
    assert_eq!(
        nexthops_of(&paths),
        vec!["10.10.100.3", "10.10.100.4", "10.10.100.5"]
    );
    for p in &paths {
        assert_eq!(p["locPrf"], 300, "{p}");
        assert_eq!(p["origin"], "IGP", "{p}");
    }
    // Attributes in detail (communities, large community).
    let detail = frr
        .vtysh(&[&format!("show bgp ipv4 unicast {VIP4}/32")])
        .unwrap();
    assert!(
        detail.contains("Community: 64500:100 no-export"),
        "{detail}"
    );
    assert!(detail.contains("Large Community: 64500:1:2"), "{detail}");
    assert!(detail.contains("localpref 300"), "{detail}");
    wait_until(10 * S, "3-way ECMP in the router's kernel (IPv4)", || {
        kernel_nexthops(&router, &format!("{VIP4}/32"))
            .unwrap()
            .len()
            == 3
    });
    // IPv6: /128 over the IPv6 sessions, next hop the node's IPv6 address.
    wait_until(10 * S, "three IPv6 paths at FRR", || {
        frr.paths(&format!("{VIP6}/128")).len() == 3
    });
    let p6 = frr.paths(&format!("{VIP6}/128"));
    let mut nh6: Vec<String> = p6
        .iter()
        .filter_map(|p| {
            p["nexthops"]
                .as_array()?
                .iter()
                .find(|n| n["scope"] == "global")?["ip"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    nh6.sort();
    assert_eq!(
        nh6,
        vec!["fd00:10::3", "fd00:10::4", "fd00:10::5"],
        "{p6:?}"
    );
    wait_until(10 * S, "3-way ECMP in the router's kernel (IPv6)", || {
        kernel_nexthops(&router, &format!("{VIP6}/128"))
            .unwrap()
            .len()
            == 3
    });
    // A client's TCP connections spread over the nodes.
    let run = probe::reach(
        &client,
        ReachMode::Tcp(8080),
        VIP4.parse().unwrap(),
        2 * S,
        Duration::from_millis(20),
    )
    .unwrap()
    .finish()
    .unwrap();
    let served = run.data();
    assert_eq!(
        served.len(),
        3,
        "connections reached {served:?} ({} answers)",
        run.answers().count()
    );

    // Withdrawal: node1 stops announcing the IPv4 VIP.
    speakers[0].announce(&[VIP6]);
    wait_until(10 * S, "node1's IPv4 path withdrawn", || {
        nexthops_of(&frr.paths(&format!("{VIP4}/32")))
            == vec!["10.10.100.4".to_string(), "10.10.100.5".to_string()]
    });
    assert_eq!(frr.paths(&format!("{VIP6}/128")).len(), 3);

    // SIGTERM on node2: routes gone at once, Cease with the shutdown communication.
    let t0 = Instant::now();
    speakers[1].proc.kill(Signal::Term);
    wait_until(5 * S, "node2's paths gone", || {
        nexthops_of(&frr.paths(&format!("{VIP4}/32"))) == vec!["10.10.100.5".to_string()]
    });
    let gone_after = t0.elapsed();
    assert!(gone_after < 3 * S, "routes took {gone_after:?} to go");
    let status = speakers[1].proc.wait_timeout(5 * S);
    assert!(
        status.is_some_and(|s| s.success()),
        "speaker exit {status:?}: {}",
        speakers[1].log()
    );
    let n = frr.vtysh(&["show bgp neighbors 10.10.100.4 json"]).unwrap();
    assert!(
        n.contains("lb-bgp-speaker shutting down"),
        "FRR does not show the shutdown communication: {n}"
    );
    println!("SIGTERM to routes gone at FRR: {gone_after:?}");
    drop(speakers);
    drop(lab);
}

/// Writes a password file (mode 0600) on `host` and returns its path.
fn password_file(host: &Host, name: &str, password: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = host.write_file(name, &format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn frr_ebgp_with_tcp_md5_right_password_establishes_wrong_one_does_not() {
    let lab = Lab::new("bgpmd5");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let n1 = lab.node("node1", &["10.10.100.3/24"]);
    let n2 = lab.node("node2", &["10.10.100.4/24"]);
    let mut cfg = FrrConfig::new(64501, "10.10.100.1")
        .neighbor("10.10.100.3", 64500)
        .neighbor("10.10.100.4", 64500);
    for n in &mut cfg.neighbors {
        n.password = Some("s3cret".into());
    }
    let frr = Frr::start(&router, &cfg).unwrap();
    let right = password_file(&n1, "peer.key", "s3cret");
    let wrong = password_file(&n2, "peer.key", "wrong");
    let s1 =
        Speaker::start(
            &n1,
            &[PeerSpec::new("10.10.100.1", 64500, 64501)
                .with(&format!("password_file = \"{right}\""))],
            &[VIP4],
        );
    let s2 =
        Speaker::start(
            &n2,
            &[PeerSpec::new("10.10.100.1", 64500, 64501)
                .with(&format!("password_file = \"{wrong}\""))],
            &[VIP4],
        );
    frr.wait_established("10.10.100.3", 20 * S)
        .unwrap_or_else(|e| panic!("{e}\nspeaker:\n{}", s1.log()));
    wait_until(10 * S, "eBGP route at FRR", || {
        !frr.paths(&format!("{VIP4}/32")).is_empty()
    });
    let paths = frr.paths(&format!("{VIP4}/32"));
    assert_eq!(nexthops_of(&paths), vec!["10.10.100.3"]);
    assert_eq!(paths[0]["aspath"]["string"], "64500", "{paths:?}");
    // Both sides dial every second: give the wrong key time to fail visibly.
    wait_until(
        10 * S,
        "the speaker with the wrong key explains the failure",
        || s2.log().contains("TCP-MD5 is configured"),
    );
    assert_ne!(
        frr.neighbor_state("10.10.100.4").as_deref(),
        Some("Established")
    );
    assert_eq!(frr.paths(&format!("{VIP4}/32")).len(), 1);
    drop((s1, s2));
    drop(lab);
}

/// `dynamic_asn = "external"` (MetalLB's dynamicASN): a session comes up with whatever AS
/// the router has, except our own, which is refused with Bad Peer AS.
#[test]
fn dynamic_external_asn_peers_with_any_other_as_and_refuses_our_own() {
    let lab = Lab::new("bgpdynasn");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let n1 = lab.node("node1", &["10.10.100.3/24"]);
    let n2 = lab.node("node2", &["10.10.100.4/24"]);
    // The router is AS 64501: eBGP to node1 (AS 64500), iBGP to node2 (AS 64501).
    let cfg = FrrConfig::new(64501, "10.10.100.1")
        .neighbor("10.10.100.3", 64500)
        .neighbor("10.10.100.4", 64501);
    let frr = Frr::start(&router, &cfg).unwrap();
    let dynamic = |my_asn| {
        PeerSpec::new("10.10.100.1", my_asn, 0)
            .with("dynamic_asn = \"external\"")
            .with("connect_time = \"1s\"")
    };
    let s1 = Speaker::start(&n1, &[dynamic(64500)], &[VIP4]);
    let s2 = Speaker::start(&n2, &[dynamic(64501)], &[VIP4]);
    frr.wait_established("10.10.100.3", 20 * S)
        .unwrap_or_else(|e| panic!("{e}\nspeaker:\n{}", s1.log()));
    wait_until(10 * S, "eBGP route at FRR", || {
        !frr.paths(&format!("{VIP4}/32")).is_empty()
    });
    let paths = frr.paths(&format!("{VIP4}/32"));
    assert_eq!(nexthops_of(&paths), vec!["10.10.100.3"]);
    // eBGP: our AS in the path, no LOCAL_PREF from the advertisement (iBGP only).
    assert_eq!(paths[0]["aspath"]["string"], "64500", "{paths:?}");
    assert_ne!(paths[0]["locPrf"], 300, "{paths:?}");
    // node2 shares the router's AS: its OPEN is refused, every attempt, and the attempts
    // come every connect_time (1 s): five within 8 s, where the default backoff (1 s
    // doubling) would take 15 s.
    let refusals = || s2.log().matches("OPEN message error: BadPeerAs").count();
    wait_until(20 * S, "node2 refuses the router's OPEN", || {
        refusals() >= 1
    });
    wait_until(8 * S, "four more attempts, one per connect_time", || {
        refusals() >= 5
    });
    assert_ne!(
        frr.neighbor_state("10.10.100.4").as_deref(),
        Some("Established")
    );
    assert_eq!(frr.paths(&format!("{VIP4}/32")).len(), 1);
    drop((s1, s2));
    drop(lab);
}

#[test]
fn hold_timer_expiry_when_the_router_vanishes_then_router_restart_brings_routes_back() {
    let lab = Lab::new("bgphold");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let cfg = FrrConfig::new(64500, "10.10.100.1").neighbor("10.10.100.3", 64500);
    let frr = Frr::start(&router, &cfg).unwrap();
    let s = Speaker::start(
        &node,
        &[PeerSpec::new("10.10.100.1", 64500, 64500).with("hold_time = \"3s\"")],
        &[VIP4],
    );
    frr.wait_established("10.10.100.3", 20 * S).unwrap();
    wait_until(10 * S, "route at FRR", || {
        !frr.paths(&format!("{VIP4}/32")).is_empty()
    });
    // The router vanishes (every frame dropped): our hold timer (3 s) fires.
    let t0 = Instant::now();
    router.isolate().unwrap();
    wait_until(10 * S, "hold timer expiry logged", || {
        s.log().contains("hold timer expired")
    });
    let expired_after = t0.elapsed();
    assert!(
        expired_after >= 2 * S && expired_after < 6 * S,
        "expired after {expired_after:?}"
    );
    router.heal().unwrap();
    frr.wait_established("10.10.100.3", 20 * S).unwrap();
    wait_until(10 * S, "route back after the partition", || {
        !frr.paths(&format!("{VIP4}/32")).is_empty()
    });
    // Router restart: FRR goes away and comes back; the speaker re-sends everything.
    drop(frr);
    let frr = Frr::start(&router, &cfg).unwrap();
    frr.wait_established("10.10.100.3", 20 * S)
        .unwrap_or_else(|e| panic!("{e}\nspeaker:\n{}", s.log()));
    wait_until(10 * S, "route back after the router restart", || {
        nexthops_of(&frr.paths(&format!("{VIP4}/32"))) == vec!["10.10.100.3"]
    });
    drop(s);
    drop(lab);
}

#[test]
fn bird_neighbor_range_learns_routes_with_attributes_and_merges_paths() {
    let lab = Lab::new("bgpbird");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let nodes: Vec<Host> = [3, 4]
        .iter()
        .map(|i| lab.node(&format!("node{}", i - 2), &[&format!("10.10.100.{i}/24")]))
        .collect();
    let mut cfg = BirdConfig::new(64500, "10.10.100.1").neighbor_range("10.10.100.0/24", 64500);
    // iBGP next hops resolve recursively: BIRD needs the connected route to the nodes.
    cfg.extra.push("protocol direct { ipv4; }".into());
    let bird = Bird::start(&router, &cfg).unwrap();
    let speakers: Vec<Speaker> = nodes
        .iter()
        .map(|n| Speaker::start(n, &[PeerSpec::new("10.10.100.1", 64500, 64500)], &[VIP4]))
        .collect();
    wait_until(20 * S, "BIRD learns the route", || {
        bird.has_route(&format!("{VIP4}/32"))
    });
    wait_until(10 * S, "BIRD merges both paths into the kernel", || {
        kernel_nexthops(&router, &format!("{VIP4}/32")).unwrap()
            == vec!["10.10.100.3".to_string(), "10.10.100.4".to_string()]
    });
    let all = bird.show_route_all().unwrap();
    assert!(all.contains("BGP.local_pref: 300"), "{all}");
    assert!(
        all.contains("(64500,100)") && all.contains("(65535,65281)"),
        "{all}"
    );
    assert!(all.contains("BGP.large_community: (64500, 1, 2)"), "{all}");
    assert!(all.contains("BGP.origin: IGP"), "{all}");
    // Withdrawal from one node leaves one path.
    speakers[0].announce(&[]);
    wait_until(10 * S, "node1's path withdrawn at BIRD", || {
        kernel_nexthops(&router, &format!("{VIP4}/32")).unwrap() == vec!["10.10.100.4".to_string()]
    });
    drop(speakers);
    drop(lab);
}

#[test]
fn gobgp_learns_and_unlearns_the_route() {
    let lab = Lab::new("bgpgobgp");
    let router = lab.router("router", &["10.10.100.1/24", "fd00:10::1/64"]);
    let node = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let gobgp = Gobgp::start(
        &router,
        &GobgpConfig::new(64501, "10.10.100.1").neighbor("10.10.100.3", 64500),
    )
    .unwrap();
    let s = Speaker::start(
        &node,
        &[PeerSpec::new("10.10.100.1", 64500, 64501)],
        &[VIP4],
    );
    wait_until(20 * S, "GoBGP session established", || {
        gobgp.neighbor_state("10.10.100.3").as_deref() == Some("established")
    });
    let has_route = || {
        let rib = gobgp.rib_json(false).unwrap_or_default();
        rib.get(format!("{VIP4}/32")).cloned()
    };
    wait_until(10 * S, "GoBGP has the route", || has_route().is_some());
    let text = has_route().unwrap().to_string();
    assert!(text.contains("10.10.100.3"), "next hop: {text}");
    assert!(text.contains("64500"), "AS path: {text}");
    s.announce(&[]);
    wait_until(10 * S, "GoBGP lost the route", || has_route().is_none());
    drop(s);
    drop(lab);
}

#[test]
fn exabgp_receives_the_update_and_the_shutdown_notification() {
    let lab = Lab::new("bgpexa");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let node = lab.node("node1", &["10.10.100.3/24"]);
    // Build the speaker before exabgp starts: a build can outlast exabgp's wait for a peer.
    speaker_bin();
    let exa = Exabgp::start(
        &router,
        &ExabgpConfig {
            local_as: 64501,
            router_id: "10.10.100.1".into(),
            local_address: "10.10.100.1".into(),
            peer_address: "10.10.100.3".into(),
            peer_as: 64500,
            hold_time: 9,
            routes: vec![],
            // exabgp dials: our listener accepts (exabgp does not listen by default).
            passive: false,
        },
    )
    .unwrap();
    let s = Speaker::start(
        &node,
        &[PeerSpec::new("10.10.100.1", 64500, 64501)],
        &[VIP4],
    );
    wait_until(20 * S, "exabgp receives the route", || {
        exa.routes().contains(&format!("{VIP4}/32"))
    });
    let update = exa
        .messages()
        .into_iter()
        .find(|m| m["type"] == "update" && m.to_string().contains(VIP4))
        .unwrap();
    let attrs = &update["neighbor"]["message"]["update"]["attribute"];
    assert_eq!(attrs["origin"], "igp", "{update}");
    assert_eq!(attrs["as-path"][0], 64500, "{update}");
    assert!(
        attrs["local-preference"].is_null(),
        "eBGP must not carry LOCAL_PREF: {update}"
    );
    assert_eq!(attrs["community"][0][0], 64500, "{update}");
    s.proc.kill(Signal::Term);
    wait_until(10 * S, "exabgp sees the route withdrawn", || {
        !exa.routes().contains(&format!("{VIP4}/32"))
    });
    wait_until(10 * S, "exabgp reports the session down", || {
        exa.state().as_deref() == Some("down")
    });
    // exabgp 4.2.21 cannot print an RFC 8203 communication (it formats a str into bytes
    // and fails, reporting "can not decode ... message of type 3"), so only check that the
    // session ended on our NOTIFICATION; FRR's test checks the communication itself.
    let down = exa
        .messages()
        .into_iter()
        .rev()
        .find(|m| m["type"] == "state" && m["neighbor"]["state"] == "down")
        .unwrap();
    assert!(down.to_string().contains("type \\\"3\\\""), "{down}");
    drop(s);
    drop(lab);
}
