//! The lab guide's IP-sharing case: CoreDNS exposed as two LoadBalancer Services, TCP 53 and
//! UDP 53, sharing one IP through the `allow-shared-ip: gns3-ip` annotation; the UDP one asks
//! for 172.19.100.0. Whichever is processed first, both end up on 172.19.100.0.

use std::net::IpAddr;

use lb::alloc::{Allocator, Change};
use lb::model::{
    IpRange, Pool, PoolProtocol, Protocol, Service, ServiceKey, ServicePort, TrafficPolicy,
};

fn lab_ip() -> IpAddr {
    IpAddr::from([172, 19, 100, 0])
}

fn ip_pool_1() -> Pool {
    Pool {
        name: "ip-pool-1".into(),
        protocol: PoolProtocol::Bgp,
        ranges: vec![
            IpRange::new(
                IpAddr::from([172, 19, 100, 0]),
                IpAddr::from([172, 19, 100, 255]),
            )
            .expect("range"),
        ],
        auto_assign: true,
        avoid_buggy_ips: false,
        interfaces: Vec::new(),
        node_selectors: Vec::new(),
        bgp_advertisements: Vec::new(),
        service_allocation: Default::default(),
    }
}

fn coredns(name: &str, protocol: Protocol) -> Service {
    Service {
        key: ServiceKey::new("kube-system", name),
        ports: vec![ServicePort { protocol, port: 53 }],
        traffic_policy: TrafficPolicy::Cluster,
        selector: [("k8s-app".to_string(), "kube-dns".to_string())].into(),
        sharing_key: Some("gns3-ip".into()),
        ..Service::default()
    }
}

fn tcp_svc() -> Service {
    coredns("coredns-tcp-svc", Protocol::Tcp)
}

fn udp_svc() -> Service {
    let mut s = coredns("coredns-udp-svc", Protocol::Udp);
    s.requested_ips = vec![lab_ip()];
    s
}

fn assert_both_on_lab_ip(a: &Allocator) {
    for s in [tcp_svc(), udp_svc()] {
        let got = a.assignment(&s.key).map(|x| x.ips.clone());
        assert_eq!(got, Some(vec![lab_ip()]), "{}", s.key);
        assert_eq!(
            a.assignment(&s.key).map(|x| x.pool.as_str()),
            Some("ip-pool-1")
        );
    }
    assert_eq!(a.services_on(lab_ip()).len(), 2);
}

#[test]
fn coredns_tcp_then_udp_share_the_requested_ip() {
    let mut a = Allocator::new(vec![ip_pool_1()], None);
    let o = a.update(&tcp_svc());
    assert_eq!(o.events[0].message, r#"Assigned IP ["172.19.100.0"]"#);
    let o = a.update(&udp_svc());
    assert!(matches!(o.change, Change::Allocated { .. }), "{o:?}");
    assert_both_on_lab_ip(&a);
}

#[test]
fn coredns_udp_then_tcp_share_the_requested_ip() {
    let mut a = Allocator::new(vec![ip_pool_1()], None);
    a.update(&udp_svc());
    a.update(&tcp_svc());
    assert_both_on_lab_ip(&a);
}

#[test]
fn coredns_tcp_joins_udp_on_the_lowest_compatible_ip_after_an_unrelated_service() {
    // UDP takes .0, an unrelated Service takes .1, then TCP joins UDP on .0 (the lowest
    // address it may use) rather than the first free one.
    let mut a = Allocator::new(vec![ip_pool_1()], None);
    a.update(&udp_svc());
    let stranger = Service {
        key: ServiceKey::new("default", "web"),
        ports: vec![ServicePort {
            protocol: Protocol::Tcp,
            port: 80,
        }],
        ..Service::default()
    };
    a.update(&stranger);
    a.update(&tcp_svc());
    assert_both_on_lab_ip(&a);
    assert_eq!(
        a.assignment(&stranger.key).map(|x| x.ips.clone()),
        Some(vec![IpAddr::from([172, 19, 100, 1])])
    );
}

#[test]
fn coredns_pair_in_one_sync_shares_in_either_input_order() {
    for services in [vec![tcp_svc(), udp_svc()], vec![udp_svc(), tcp_svc()]] {
        let mut a = Allocator::new(vec![ip_pool_1()], None);
        let out = a.sync(&services);
        assert_eq!(out.len(), 2);
        assert_both_on_lab_ip(&a);
    }
}

#[test]
fn coredns_pair_survives_a_restart_from_status() {
    let mut a = Allocator::new(vec![ip_pool_1()], None);
    a.update(&tcp_svc());
    a.update(&udp_svc());
    let mut tcp = tcp_svc();
    let mut udp = udp_svc();
    tcp.current_ips = vec![lab_ip()];
    udp.current_ips = vec![lab_ip()];
    let mut restarted = Allocator::new(vec![ip_pool_1()], None);
    for o in restarted.sync(&[udp, tcp]) {
        assert_eq!(o.change, Change::Unchanged, "{o:?}");
    }
    assert_both_on_lab_ip(&restarted);
}
