//! Self-tests of the network-namespace lab (run as root in plain `cargo test`).

use lb_testkit::lab::probe::{self, ReachMode};
use lb_testkit::lab::{Lab, namespaces_with_prefix, pid_alive, wait_until};
use std::time::Duration;

/// Answers every datagram on port 5353 with "node1".
const UDP_SERVER: &str = "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', 5353))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(b'node1\\n', a)
";

const S: Duration = Duration::from_secs(1);

fn assert_torn_down(lab: Lab) {
    let prefix = lab.prefix().to_string();
    let (namespaces, pids) = lab.teardown();
    assert!(!namespaces.is_empty());
    let left = namespaces_with_prefix(&format!("{prefix}-"));
    assert!(left.is_empty(), "namespaces left after teardown: {left:?}");
    let alive: Vec<u32> = pids.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "processes left after teardown: {alive:?}");
}

#[test]
fn hosts_on_the_bridge_ping_each_other_v4_and_v6() {
    let lab = Lab::new("ping");
    let router = lab.router("router", &["10.10.100.1/24", "fd00:10::1/64"]);
    let nodes: Vec<_> = (3..6)
        .map(|i| {
            lab.node(
                &format!("node{}", i - 2),
                &[&format!("10.10.100.{i}/24"), &format!("fd00:10::{i}/64")],
            )
        })
        .collect();
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    let mut all = vec![router.clone(), client.clone()];
    all.extend(nodes.iter().cloned());
    for from in &all {
        for to in &all {
            for ip in to.ips() {
                assert!(
                    from.ping_within(&ip.to_string(), 5 * S),
                    "{} cannot ping {ip}",
                    from.name()
                );
            }
        }
    }
    assert_torn_down(lab);
}

#[test]
fn link_down_stops_ping_and_link_up_restores_it() {
    let lab = Lab::new("linkflap");
    let node = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    assert!(client.ping_within("10.10.100.3", 5 * S));
    assert!(client.ping_within("fd00:10::3", 5 * S));
    node.link_down().unwrap();
    assert!(!client.ping_wait("10.10.100.3", "0.3"));
    assert!(!client.ping_wait("fd00:10::3", "0.3"));
    node.link_up().unwrap();
    // IPv6 addresses survive the flap only thanks to keep_addr_on_down.
    wait_until(5 * S, "v4 ping after link up", || {
        client.ping_wait("10.10.100.3", "0.2")
    });
    wait_until(5 * S, "v6 ping after link up", || {
        client.ping_wait("fd00:10::3", "0.2")
    });
    assert_torn_down(lab);
}

#[test]
fn nft_isolate_and_partition_stop_ping_and_heal_restores_it() {
    let lab = Lab::new("nft");
    let a = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let b = lab.node("node2", &["10.10.100.4/24", "fd00:10::4/64"]);
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    assert!(client.ping_within("10.10.100.3", 5 * S) && client.ping_within("fd00:10::3", 5 * S));
    a.isolate().unwrap();
    assert!(!client.ping_wait("10.10.100.3", "0.3"));
    assert!(!b.ping_wait("fd00:10::3", "0.3"));
    a.heal().unwrap();
    assert!(client.ping_within("10.10.100.3", 5 * S) && client.ping_within("fd00:10::3", 5 * S));

    a.partition_from(&b).unwrap();
    assert!(!b.ping_wait("10.10.100.3", "0.3"));
    assert!(!a.ping_wait("fd00:10::4", "0.3"));
    assert!(
        client.ping_within("10.10.100.3", 5 * S),
        "a partition from b must not cut the client"
    );
    a.heal().unwrap();
    assert!(b.ping_within("10.10.100.3", 5 * S));

    // One way: a drops what b sends; b's pings fail, but a's traffic still reaches b
    // (seen in b's counters would need a capture; the ping reply is dropped by a).
    a.block_from(&b).unwrap();
    assert!(!b.ping_wait("10.10.100.3", "0.3"));
    a.heal().unwrap();
    a.block_to(&b).unwrap();
    assert!(!a.ping_wait("10.10.100.4", "0.3"));
    assert!(client.ping_within("10.10.100.3", 5 * S));
    a.heal().unwrap();
    assert!(a.ping_within("10.10.100.4", 5 * S));
    assert_torn_down(lab);
}

#[test]
fn arp_probe_sees_exactly_one_mac_for_an_ip_one_node_holds() {
    let lab = Lab::new("arp1");
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let _other = lab.node("node2", &["10.10.100.4/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    node.add_ip("10.10.100.200/32").unwrap();
    let run = probe::l2probe(
        &client,
        "10.10.100.200".parse().unwrap(),
        S,
        Duration::from_millis(10),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert!(run.sent >= 50, "sent only {}", run.sent);
    assert_eq!(
        run.macs().into_iter().collect::<Vec<_>>(),
        vec![node.mac().to_string()]
    );
    assert!(
        run.answers().count() as u64 >= run.sent * 9 / 10,
        "{} answers to {}",
        run.answers().count(),
        run.sent
    );
    assert_eq!(run.split_brain(Duration::from_millis(10)), None);
    assert!(
        run.longest_gap().duration() < Duration::from_millis(200),
        "{:?}",
        run.longest_gap()
    );
    assert_torn_down(lab);
}

#[test]
fn arp_probe_detects_split_brain_when_two_nodes_hold_the_ip() {
    let lab = Lab::new("arp2");
    let a = lab.node("node1", &["10.10.100.3/24"]);
    let b = lab.node("node2", &["10.10.100.4/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    a.add_ip("10.10.100.200/32").unwrap();
    b.add_ip("10.10.100.200/32").unwrap();
    let run = probe::l2probe(
        &client,
        "10.10.100.200".parse().unwrap(),
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .unwrap()
    .finish()
    .unwrap();
    let macs = run.macs();
    assert!(macs.contains(a.mac()) && macs.contains(b.mac()), "{macs:?}");
    let sb = run
        .split_brain(Duration::from_millis(10))
        .expect("split brain not detected");
    assert_ne!(sb.first, sb.second);
    assert_torn_down(lab);
}

#[test]
fn ns_probe_sees_the_node_holding_an_ipv6_address() {
    let lab = Lab::new("ndp");
    let a = lab.node("node1", &["fd00:10::3/64"]);
    let b = lab.node("node2", &["fd00:10::4/64"]);
    let client = lab.host("client", &["fd00:10::9/64"]);
    a.add_ip("fd00:10::200/128").unwrap();
    let one = probe::l2probe(
        &client,
        "fd00:10::200".parse().unwrap(),
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(
        one.macs().into_iter().collect::<Vec<_>>(),
        vec![a.mac().to_string()]
    );
    assert!(one.answers().all(|r| r.kind == "na"));
    b.add_ip("fd00:10::200/128").unwrap();
    let two = probe::l2probe(
        &client,
        "fd00:10::200".parse().unwrap(),
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert!(
        two.split_brain(Duration::from_millis(10)).is_some(),
        "{:?}",
        two.macs()
    );
    assert_torn_down(lab);
}

#[test]
fn reach_probe_counts_icmp_tcp_and_udp_answers() {
    let lab = Lab::new("reach");
    let server = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    let _tcp = server
        .spawn(&[
            "socat",
            "TCP-LISTEN:8080,reuseaddr,fork",
            "SYSTEM:echo node1",
        ])
        .unwrap();
    let _udp = server
        .spawn(&["/usr/bin/python3", "-c", UDP_SERVER])
        .unwrap();
    wait_until(5 * S, "socat listening", || {
        server.sh("ss -ltn | grep -q :8080").is_ok()
    });
    for (mode, target) in [
        (ReachMode::Icmp, "10.10.100.3"),
        (ReachMode::Icmp, "fd00:10::3"),
        (ReachMode::Tcp(8080), "10.10.100.3"),
        (ReachMode::Udp(5353), "10.10.100.3"),
    ] {
        let run = probe::reach(
            &client,
            mode,
            target.parse().unwrap(),
            Duration::from_millis(400),
            Duration::from_millis(20),
        )
        .unwrap()
        .finish()
        .unwrap();
        assert!(run.sent >= 5, "{mode:?}: sent {}", run.sent);
        assert_eq!(
            run.answers().count() as u64,
            run.sent,
            "{mode:?} to {target}: {:?}",
            run.records
        );
        if !matches!(mode, ReachMode::Icmp) {
            assert_eq!(
                run.data().into_iter().collect::<Vec<_>>(),
                vec!["node1".to_string()]
            );
        }
    }
    // Nothing listens on 8081: every attempt fails and the gap is the whole run.
    let run = probe::reach(
        &client,
        ReachMode::Tcp(8081),
        "10.10.100.3".parse().unwrap(),
        Duration::from_millis(300),
        Duration::from_millis(20),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(run.answers().count(), 0);
    assert!(run.longest_gap().duration() >= Duration::from_millis(250));
    assert_torn_down(lab);
}

#[test]
fn capture_records_arp_and_neighbor_discovery() {
    let lab = Lab::new("capture");
    let node = lab.node("node1", &["10.10.100.3/24", "fd00:10::3/64"]);
    let client = lab.host("client", &["10.10.100.9/24", "fd00:10::9/64"]);
    let cap = client.capture("arp or icmp6").unwrap();
    assert!(client.ping_within("10.10.100.3", 5 * S));
    assert!(client.ping_within("fd00:10::3", 5 * S));
    let frames = cap.stop().unwrap();
    use lb_testkit::lab::capture::FrameKind;
    let arp_reply = frames.iter().find(|f| matches!(&f.kind, FrameKind::ArpReply { sender_ip: Some(ip), .. } if ip.to_string() == "10.10.100.3"));
    let arp_reply = arp_reply.unwrap_or_else(|| panic!("no ARP reply in {frames:#?}"));
    assert_eq!(arp_reply.src_mac, node.mac());
    match &arp_reply.kind {
        FrameKind::ArpReply { sender_mac, .. } => assert_eq!(sender_mac, node.mac()),
        _ => unreachable!(),
    }
    let na = frames.iter().find(|f| matches!(&f.kind, FrameKind::NeighborAdvertisement { target: Some(t), .. } if t.to_string() == "fd00:10::3"));
    let na = na.unwrap_or_else(|| panic!("no NA in {frames:#?}"));
    match &na.kind {
        FrameKind::NeighborAdvertisement {
            target_mac,
            solicited,
            ..
        } => {
            assert_eq!(target_mac.as_deref(), Some(node.mac()));
            assert!(*solicited);
        }
        _ => unreachable!(),
    }
    assert!(
        frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::ArpRequest { .. }))
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::NeighborSolicitation { .. }))
    );
    assert_torn_down(lab);
}

#[test]
fn frr_and_bird_establish_ebgp_and_exchange_routes() {
    use lb_testkit::lab::peers::{Bird, BirdConfig, Frr, FrrConfig, kernel_nexthops};
    let lab = Lab::new("frrbird");
    let r1 = lab.router("r1", &["10.10.100.1/24"]);
    let r2 = lab.router("r2", &["10.10.100.2/24"]);
    let frr = Frr::start(
        &r1,
        &FrrConfig::new(64501, "10.10.100.1")
            .neighbor("10.10.100.2", 64502)
            .network("192.0.2.0/24"),
    )
    .unwrap();
    let bird = Bird::start(
        &r2,
        &BirdConfig::new(64502, "10.10.100.2")
            .neighbor("10.10.100.1", 64501)
            .network("198.51.100.0/24"),
    )
    .unwrap();
    frr.wait_established("10.10.100.2", 20 * S).unwrap();
    bird.wait_established(&BirdConfig::protocol_name(0), 20 * S)
        .unwrap();
    wait_until(10 * S, "FRR learns BIRD's route", || {
        !frr.paths("198.51.100.0/24").is_empty()
    });
    let paths = frr.paths("198.51.100.0/24");
    assert_eq!(paths[0]["nexthops"][0]["ip"], "10.10.100.2", "{paths:?}");
    wait_until(10 * S, "zebra installs it in r1's kernel", || {
        kernel_nexthops(&r1, "198.51.100.0/24").unwrap() == vec!["10.10.100.2".to_string()]
    });
    wait_until(10 * S, "BIRD learns FRR's route", || {
        bird.has_route("192.0.2.0/24")
    });
    assert!(
        bird.show_route_all()
            .unwrap()
            .contains("BGP.as_path: 64501")
    );
    wait_until(10 * S, "BIRD installs it in r2's kernel", || {
        kernel_nexthops(&r2, "192.0.2.0/24").unwrap() == vec!["10.10.100.1".to_string()]
    });
    let summary = frr.bgp_summary_json().unwrap();
    assert_eq!(
        summary["ipv4Unicast"]["peers"]["10.10.100.2"]["state"],
        "Established"
    );
    drop((frr, bird));
    assert_torn_down(lab);
}

#[test]
fn gobgp_and_exabgp_start_peer_and_are_queryable() {
    use lb_testkit::lab::peers::{Exabgp, ExabgpConfig, Gobgp, GobgpConfig};
    let lab = Lab::new("gobgpexa");
    let r1 = lab.router("r1", &["10.10.100.1/24"]);
    let n1 = lab.node("node1", &["10.10.100.3/24"]);
    let gobgp = Gobgp::start(
        &r1,
        &GobgpConfig::new(64500, "10.10.100.1").neighbor("10.10.100.3", 64500),
    )
    .unwrap();
    gobgp.announce("10.99.0.0/24").unwrap();
    // exabgp dials (gobgpd is passive: its own first dial would take 5-9 s).
    let exa = Exabgp::start(
        &n1,
        &ExabgpConfig {
            local_as: 64500,
            router_id: "10.10.100.3".into(),
            local_address: "10.10.100.3".into(),
            peer_address: "10.10.100.1".into(),
            peer_as: 64500,
            hold_time: 9,
            routes: vec!["203.0.113.0/24".into()],
            passive: false,
        },
    )
    .unwrap();
    wait_until(20 * S, "gobgp sees the session established", || {
        gobgp.neighbor_state("10.10.100.3").as_deref() == Some("established")
    });
    wait_until(10 * S, "exabgp reports the session up", || {
        exa.state().as_deref() == Some("up")
    });
    wait_until(10 * S, "gobgp learns exabgp's route", || {
        gobgp
            .rib_json(false)
            .unwrap()
            .get("203.0.113.0/24")
            .is_some()
    });
    wait_until(10 * S, "exabgp receives gobgp's route", || {
        exa.routes().contains("10.99.0.0/24")
    });
    drop((gobgp, exa));
    assert_torn_down(lab);
}

#[test]
fn keepalived_elects_a_master_and_the_vip_fails_over_on_link_down() {
    use lb_testkit::lab::peers::{Keepalived, VrrpConfig};
    let lab = Lab::new("vrrp");
    let n1 = lab.node("node1", &["10.10.100.3/24"]);
    let n2 = lab.node("node2", &["10.10.100.4/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    let cfg = |priority| VrrpConfig {
        virtual_router_id: 51,
        priority,
        advert_int: 0.1,
        vips: vec!["10.10.100.200/24".into()],
        preempt: true,
    };
    let k1 = Keepalived::start(&n1, &cfg(150)).unwrap();
    let k2 = Keepalived::start(&n2, &cfg(100)).unwrap();
    wait_until(10 * S, "node1 becomes VRRP master", || {
        k1.holds_vips() && k1.is_master()
    });
    wait_until(5 * S, "node2 stays backup without the VIP", || {
        !k2.holds_vips()
    });

    let vip = "10.10.100.200".parse().unwrap();
    let probe = probe::l2probe(&client, vip, 5 * S, Duration::from_millis(10)).unwrap();
    wait_until(5 * S, "answers from the master", || {
        probe.snapshot().len() >= 10
    });
    n1.link_down().unwrap();
    let run = probe.finish().unwrap();
    assert!(k2.holds_vips(), "node2 took no VIP: {}", k2.log());
    let gap = run
        .longest_gap_between_answers()
        .expect("no answers at all");
    let first_n2 = run
        .first_answer_from(n2.mac())
        .expect("node2 never answered");
    assert!(
        first_n2 >= gap.to - 1e-6,
        "node2 answered before the gap ended"
    );
    assert!(
        gap.duration() > Duration::from_millis(100),
        "gap {:?} impossibly short",
        gap.duration()
    );
    assert!(gap.duration() < 4 * S, "gap {:?}", gap.duration());
    assert_eq!(run.split_brain(Duration::from_millis(10)), None);
    println!(
        "keepalived advert_int 0.1, master link down: ARP gap {:?}",
        gap.duration()
    );
    drop((k1, k2));
    assert_torn_down(lab);
}

#[test]
fn isolate_also_drops_frames_sent_by_packet_sockets() {
    let lab = Lab::new("isopkt");
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    let target = "10.10.100.3".parse().unwrap();
    let ms = Duration::from_millis(10);
    client.isolate().unwrap();
    let cut = probe::l2probe(&client, target, Duration::from_millis(300), ms)
        .unwrap()
        .finish()
        .unwrap();
    assert!(cut.sent > 10);
    assert_eq!(cut.answers().count(), 0, "{:?}", cut.records);
    client.heal().unwrap();
    let healed = probe::l2probe(&client, target, Duration::from_millis(300), ms)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(
        healed.macs().into_iter().collect::<Vec<_>>(),
        vec![node.mac().to_string()]
    );
    assert_torn_down(lab);
}

#[test]
fn client_behind_a_router_reaches_nodes_through_a_second_segment() {
    let lab = Lab::new("segments");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let wan = lab.segment().unwrap();
    router.attach(&wan, "eth1", &["192.168.50.1/24"]).unwrap();
    let node = lab.node("node1", &["10.10.100.3/24"]);
    node.run(&["ip", "route", "add", "default", "via", "10.10.100.1"])
        .unwrap();
    let client = lab.host("client", &[]);
    client.attach(&wan, "eth1", &["192.168.50.9/24"]).unwrap();
    client
        .run(&["ip", "route", "add", "default", "via", "192.168.50.1"])
        .unwrap();
    assert!(client.ping_within("10.10.100.3", 5 * S));
    let hops = client
        .stdout(&["ip", "-j", "route", "get", "10.10.100.3"])
        .unwrap();
    assert!(hops.contains("192.168.50.1"), "{hops}");
    assert_torn_down(lab);
}

#[test]
fn dropping_a_proc_kills_its_whole_process_group() {
    let lab = Lab::new("procgrp");
    let h = lab.host("h", &["10.10.100.9/24"]);
    let p = h
        .spawn(&["sh", "-c", "sleep 100 & echo child $!; sleep 100"])
        .unwrap();
    let child: u32 = wait_for_child_pid(&p);
    assert!(pid_alive(p.pid()) && pid_alive(child));
    assert!(p.wait_timeout(Duration::from_millis(50)).is_none());
    let leader = p.pid();
    drop(p);
    assert!(!pid_alive(leader), "group leader survived");
    assert!(!pid_alive(child), "background child survived");
    let q = h
        .spawn(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .unwrap();
    let status = q.wait_timeout(5 * S).expect("did not exit");
    assert_eq!(status.code(), Some(3));
    assert_eq!(q.log(), "out\nerr\n");
    let e = h.run(&["sh", "-c", "echo boom >&2; exit 1"]).unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    assert_torn_down(lab);
}

fn wait_for_child_pid(p: &lb_testkit::lab::Proc) -> u32 {
    lb_testkit::lab::wait_for(5 * S, "the shell to print its child's pid", || {
        p.stdout().strip_prefix("child ")?.trim().parse().ok()
    })
}

#[test]
fn a_panicking_test_still_tears_down_namespaces_and_processes() {
    let (prefix, pids, dir) = std::panic::catch_unwind(|| {
        let lab = Lab::new("panic");
        let h = lab.host("h", &["10.10.100.9/24"]);
        let p = h.spawn(&["sleep", "100"]).unwrap();
        // Leak the Proc: only the Lab's teardown can stop it now.
        let pid = p.pid();
        std::mem::forget(p);
        let detached = h.spawn(&["setsid", "-f", "sleep", "100"]).unwrap();
        detached.wait_timeout(5 * S);
        let pids = lab.pids();
        assert!(pids.contains(&pid) && pids.len() >= 2, "{pids:?}");
        let info = (lab.prefix().to_string(), pids, lab.dir().to_path_buf());
        std::panic::panic_any(info);
    })
    .expect_err("the closure panics")
    .downcast::<(String, Vec<u32>, std::path::PathBuf)>()
    .map(|b| *b)
    .expect("panic payload");
    assert!(namespaces_with_prefix(&format!("{prefix}-")).is_empty());
    let alive: Vec<u32> = pids.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "{alive:?}");
    // The logs were kept for the post-mortem; this test does not need them.
    assert!(dir.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn new_lab_removes_leftovers_of_dead_owners_only() {
    use std::process::Command;
    // A dead PID: a child that already exited (and was reaped).
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    // A live PID that is not ours: a sleeping child.
    let mut live = Command::new("sleep").arg("100").spawn().unwrap();
    let stale = format!("lbl-{dead}-999-stale-h");
    let kept = format!("lbl-{}-999-live-h", live.id());
    for ns in [&stale, &kept] {
        assert!(
            Command::new("ip")
                .args(["netns", "add", ns])
                .status()
                .unwrap()
                .success()
        );
    }
    let mut inside = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "100"])
        .spawn()
        .unwrap();
    wait_until(5 * S, "the process to enter the stale namespace", || {
        !lb_testkit::lab::ns_pids(&stale).is_empty()
    });
    let lab = Lab::new("cleanup");
    let stale_gone = namespaces_with_prefix(&stale).is_empty();
    let kept_there = !namespaces_with_prefix(&kept).is_empty();
    let inside_status = inside.wait().unwrap();
    let _ = Command::new("ip").args(["netns", "del", &kept]).status();
    let _ = live.kill();
    let _ = live.wait();
    assert!(stale_gone, "namespace of a dead owner was left");
    assert!(kept_there, "namespace of a live owner was removed");
    assert!(
        !inside_status.success(),
        "the stale namespace's process was not killed"
    );
    assert_torn_down(lab);
}

#[test]
fn frr_listen_range_installs_ecmp_routes_from_two_ibgp_nodes() {
    use lb_testkit::lab::peers::{Exabgp, ExabgpConfig, Frr, FrrConfig, kernel_nexthops};
    let lab = Lab::new("ecmp");
    let router = lab.router("router", &["10.10.100.1/24"]);
    let mut cfg = FrrConfig::new(64500, "10.10.100.1").listen_range("10.10.100.0/24", 64500);
    cfg.maximum_paths_ibgp = Some(4);
    let frr = Frr::start(&router, &cfg).unwrap();
    let nodes: Vec<_> = [3, 4]
        .iter()
        .map(|i| {
            let ip = format!("10.10.100.{i}");
            let node = lab.node(&format!("node{}", i - 2), &[&format!("{ip}/24")]);
            let exa = Exabgp::start(
                &node,
                &ExabgpConfig {
                    local_as: 64500,
                    router_id: ip.clone(),
                    local_address: ip.clone(),
                    peer_address: "10.10.100.1".into(),
                    peer_as: 64500,
                    hold_time: 9,
                    routes: vec!["172.19.100.5/32".into()],
                    passive: false,
                },
            )
            .unwrap();
            (node, exa)
        })
        .collect();
    wait_until(20 * S, "both dynamic sessions established", || {
        frr.established_count() == 2
    });
    wait_until(
        10 * S,
        "an ECMP route over both nodes in the router's kernel",
        || {
            kernel_nexthops(&router, "172.19.100.5").unwrap()
                == vec!["10.10.100.3".to_string(), "10.10.100.4".to_string()]
        },
    );
    assert_eq!(frr.paths("172.19.100.5/32").len(), 2);
    drop(nodes);
    drop(frr);
    assert_torn_down(lab);
}

#[test]
fn api_server_on_a_lab_host_serves_kubectl_from_the_host_and_keeps_objects_across_a_restart() {
    use lb_testkit::kubelab::KubeLab;
    let lab = Lab::new("kube");
    let cp = lab.host("cp", &["10.10.100.10/24"]);
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let mut k = KubeLab::start(&cp);
    k.add_node("node1", "10.10.100.3");
    k.ok(&["create", "deploy", "web", "--image", "nginx:stable-alpine"]);
    k.ok(&[
        "expose",
        "deploy",
        "web",
        "--port",
        "80",
        "--type=LoadBalancer",
    ]);
    k.set_endpoints(
        "default",
        "web",
        &[("node1", "10.244.1.5")],
        &[("", 80, "TCP")],
    );
    // Another namespace reaches the server over the LAN (as lbd does).
    let version = node
        .stdout(&["curl", "-sf", "http://10.10.100.10:6443/version"])
        .unwrap();
    assert!(version.contains("gitVersion"), "{version}");
    k.restart();
    let nodes = k.ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/node1");
    let slices = k.ok(&["get", "endpointslices", "-o", "name"]);
    assert!(slices.contains("web-lab"), "{slices}");
    assert!(k.ingress_ips("default", "web").is_empty());
    k.stop();
    assert!(!k.is_running());
    assert_torn_down(lab);
}
