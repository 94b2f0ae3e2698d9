//! Self-tests of the network-namespace lab (run as root in plain `cargo test`).

mod support;

use std::time::Duration;
use support::lab::probe::{self, ReachMode};
use support::lab::{Lab, namespaces_with_prefix, pid_alive, wait_until};

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
                    from.ping(&ip.to_string()),
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
    assert!(client.ping("10.10.100.3"));
    assert!(client.ping("fd00:10::3"));
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
    assert!(client.ping("10.10.100.3") && client.ping("fd00:10::3"));
    a.isolate().unwrap();
    assert!(!client.ping_wait("10.10.100.3", "0.3"));
    assert!(!b.ping_wait("fd00:10::3", "0.3"));
    a.heal().unwrap();
    assert!(client.ping("10.10.100.3") && client.ping("fd00:10::3"));

    a.partition_from(&b).unwrap();
    assert!(!b.ping_wait("10.10.100.3", "0.3"));
    assert!(!a.ping_wait("fd00:10::4", "0.3"));
    assert!(
        client.ping("10.10.100.3"),
        "a partition from b must not cut the client"
    );
    a.heal().unwrap();
    assert!(b.ping("10.10.100.3"));

    // One way: a drops what b sends; b's pings fail, but a's traffic still reaches b
    // (seen in b's counters would need a capture; the ping reply is dropped by a).
    a.block_from(&b).unwrap();
    assert!(!b.ping_wait("10.10.100.3", "0.3"));
    a.heal().unwrap();
    a.block_to(&b).unwrap();
    assert!(!a.ping_wait("10.10.100.4", "0.3"));
    assert!(client.ping("10.10.100.3"));
    a.heal().unwrap();
    assert!(a.ping("10.10.100.4"));
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
    assert!(client.ping("10.10.100.3"));
    assert!(client.ping("fd00:10::3"));
    let frames = cap.stop().unwrap();
    use support::lab::capture::FrameKind;
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
