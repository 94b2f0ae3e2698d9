//! The MetalLB lab guide end to end (`lb_testkit::guide`): each lab of the guide with
//! its own addresses, its ConfigMaps imported by `lbctl import-metallb`, its kubectl commands
//! and manifests against the test API server, three lbd nodes and an FRR router.

use std::time::Duration;

use lb_testkit::guide::{Guide, GuideConfig, NODES};

fn all_nodes() -> Vec<String> {
    NODES.iter().map(|(_, ip)| ip.to_string()).collect()
}

#[test]
fn guide_layer2_service_gets_the_first_pool_ip_one_node_answers_arp_and_the_client_reaches_it() {
    let mut g = Guide::start("gl2", GuideConfig::Layer2);
    let r = g.layer2();
    assert_eq!(
        r.services,
        vec![(
            "default/nginx-metallb".to_string(),
            vec!["10.10.100.200".to_string()]
        )]
    );
    assert!(
        r.kubectl_get_svc.contains("10.10.100.200"),
        "EXTERNAL-IP in kubectl get svc:\n{}",
        r.kubectl_get_svc
    );
    let owner = r.arp_node.clone().expect("an lbd logged the announcement");
    // The node the log names is the only one whose MAC answers the client's ARP.
    assert_eq!(
        r.arp_answered_by.iter().cloned().collect::<Vec<_>>(),
        vec![owner.clone()],
        "{}",
        g.logs()
    );
    assert!(
        r.arp_log_line
            .as_deref()
            .is_some_and(|l| l.contains("for default/nginx-metallb")),
        "{:?}",
        r.arp_log_line
    );
    // Traffic enters through the ARP owner (kube-proxy would forward it to the pod).
    assert_eq!(
        r.http_answered_by.into_iter().collect::<Vec<_>>(),
        vec![owner.clone()]
    );
    // kubectl says who announces: the annotation and MetalLB's nodeAssigned Event.
    let described = g.describe_showing(
        "nginx-metallb",
        &[
            &format!("lb.org/announcing: layer2: {owner}"),
            &format!("announcing from node \"{owner}\" with protocol \"layer2\""),
        ],
    );
    assert!(
        described.contains(&format!(
            "Annotations:              lb.org/announcing: layer2: {owner}\n"
        )),
        "exactly the owner:\n{described}"
    );
}

#[test]
fn guide_failover_link_down_on_the_arp_owner_moves_the_ip_and_the_client_gap_is_under_3s() {
    let mut g = Guide::start("gfail", GuideConfig::Layer2);
    let r = g.failover();
    let ip = &r.services[0].1;
    assert_eq!(ip, &vec!["10.10.100.200".to_string()]);
    let old = r.failed_node.clone().expect("a node failed");
    let new = r.new_arp_node.clone().expect("another node took over");
    assert_ne!(old, new);
    let gap = r.gap.expect("pings answered before and after the failover");
    let tcp_gap = r
        .tcp_gap
        .expect("TCP answered before and after the failover");
    let takeover = r.takeover.expect("the new owner's log line has a time");
    println!(
        "failover: {old} -> {new} announced {takeover:?} after link down; client gap: ping \
         {gap:?}, TCP {tcp_gap:?}"
    );
    assert!(takeover < Duration::from_secs(3), "takeover {takeover:?}");
    assert!(gap < Duration::from_secs(3), "gap {gap:?}\n{}", g.logs());
    assert!(
        tcp_gap < Duration::from_secs(3),
        "TCP gap {tcp_gap:?}\n{}",
        g.logs()
    );
    // Before: the old owner answered; after: the new one.
    assert!(
        r.http_answered_by.contains(&old),
        "{:?}",
        r.http_answered_by
    );
    assert!(
        r.http_answered_by.contains(&new),
        "{:?}",
        r.http_answered_by
    );
    assert!(
        r.probe_ok * 2 > r.probe_attempts,
        "{} of {}",
        r.probe_ok,
        r.probe_attempts
    );
    // The leader tells Kubernetes about the new owner: annotation and a second Event.
    let described = g.describe_showing(
        "nginx-metallb-failover",
        &[
            &format!("lb.org/announcing: layer2: {new}"),
            &format!("announcing from node \"{old}\" with protocol \"layer2\""),
            &format!("announcing from node \"{new}\" with protocol \"layer2\""),
        ],
    );
    assert!(
        !described.contains(&format!("layer2: {old}")),
        "{described}"
    );
}

#[test]
fn guide_layer3_service_ip_is_routed_by_the_router_over_all_three_nodes_and_reached_through_it() {
    let mut g = Guide::start("gl3", GuideConfig::Bgp);
    let r = g.layer3();
    assert_eq!(
        r.services,
        vec![(
            "default/nginx-metallb-13".to_string(),
            vec!["172.19.100.0".to_string()]
        )]
    );
    assert_eq!(r.nexthops, all_nodes());
    let route = r.router_route.clone().unwrap_or_default();
    for (_, ip) in NODES {
        assert!(route.contains(&format!("* {ip}, via eth0")), "{route}");
    }
    assert!(route.contains("172.19.100.0/32"), "{route}");
    // Every node announces it over BGP: kubectl says so.
    let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    g.describe_showing(
        "nginx-metallb-13",
        &[
            &format!("lb.org/announcing: bgp: {}", sorted.join(", ")),
            "with protocol \"bgp\"",
        ],
    );
    // 12 new connections hashed by L4 ports over 3 next hops: all on one node has p < 1e-5.
    assert!(r.http_answered_by.len() >= 2, "{:?}", r.http_answered_by);
    assert!(
        r.http_answered_by
            .iter()
            .all(|n| NODES.iter().any(|(name, _)| name == n)),
        "{:?}",
        r.http_answered_by
    );
}

#[test]
fn guide_multiple_pools_address_pool_annotation_takes_the_ip_from_ip_pool_2() {
    let mut g = Guide::start("gpools", GuideConfig::Bgp);
    let r = g.multiple_pools();
    let (svc, ips) = &r.services[0];
    assert_eq!(svc, "default/nginx-metallb-13-ip-pool");
    assert_eq!(ips, &vec!["172.19.101.0".to_string()], "{}", g.logs());
    // Written with the status by the raft-lite leader, as MetalLB does.
    let pool = g.kube.ok(&[
        "get",
        "svc",
        "nginx-metallb-13-ip-pool",
        "-o",
        "jsonpath={.metadata.annotations.metallb\\.io/ip-allocated-from-pool}",
    ]);
    assert_eq!(pool.trim(), "ip-pool-2");
    assert_eq!(r.nexthops, all_nodes());
    assert!(!r.http_answered_by.is_empty());
}

#[test]
fn guide_ip_sharing_coredns_tcp_and_udp_services_share_172_19_100_0_and_dig_answers_both_ways() {
    let mut g = Guide::start("gshare", GuideConfig::BgpTwoPools);
    let r = g.ip_sharing();
    let shared = vec!["172.19.100.0".to_string()];
    assert_eq!(
        r.services,
        vec![
            ("kube-system/coredns-tcp-svc".to_string(), shared.clone()),
            ("kube-system/coredns-udp-svc".to_string(), shared),
        ],
        "{}",
        g.logs()
    );
    assert_eq!(r.nexthops, all_nodes());
    assert_eq!(r.dig.len(), 2);
    // UDP asks for the TCP Service's name, TCP for the UDP one's (as the guide does).
    assert!(!r.dig[0].0.contains("+tcp") && r.dig[1].0.contains("+tcp"));
    assert_eq!(r.dig[0].1, r.expected_dns[0]);
    assert_eq!(r.dig[1].1, r.expected_dns[1]);
    // The guide's TCP template as printed does not parse (kubectl says so); re-indented it does.
    assert!(
        r.notes.iter().any(|n| n.contains("not valid YAML")),
        "{:?}",
        r.notes
    );
}
