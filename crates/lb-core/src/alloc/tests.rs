//! One test per allocation rule; expected texts are MetalLB's.

use super::*;
use crate::model::{IpRange, Pool, PoolProtocol, Protocol, ServicePort};
use std::str::FromStr;

fn ip(s: &str) -> IpAddr {
    IpAddr::from_str(s).expect("test IP")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// `10.0.0.0/30`, `10.0.0.5-10.0.0.7` or `10.0.0.9`.
fn range(s: &str) -> IpRange {
    if let Some((a, b)) = s.split_once('-') {
        return IpRange::new(ip(a), ip(b)).expect("test range");
    }
    if s.contains('/') {
        let net = ipnet::IpNet::from_str(s).expect("test CIDR");
        return IpRange::new(net.network(), net.broadcast()).expect("test range");
    }
    IpRange::new(ip(s), ip(s)).expect("test range")
}

fn pool(name: &str, ranges: &[&str]) -> Pool {
    Pool {
        name: name.to_string(),
        protocol: PoolProtocol::Layer2,
        ranges: ranges.iter().map(|r| range(r)).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        interfaces: Vec::new(),
        node_selectors: Vec::new(),
        bgp_advertisements: Vec::new(),
        service_allocation: Default::default(),
    }
}

fn manual(mut p: Pool) -> Pool {
    p.auto_assign = false;
    p
}

fn svc(name: &str) -> Service {
    Service {
        key: ServiceKey::new("default", name),
        ports: vec![tcp(80)],
        ..Service::default()
    }
}

fn tcp(port: u16) -> ServicePort {
    ServicePort {
        protocol: Protocol::Tcp,
        port,
    }
}

fn udp(port: u16) -> ServicePort {
    ServicePort {
        protocol: Protocol::Udp,
        port,
    }
}

fn shared(mut s: Service, key: &str, ports: Vec<ServicePort>) -> Service {
    s.sharing_key = Some(key.to_string());
    s.ports = ports;
    s
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn held(a: &Allocator, name: &str) -> Option<Vec<IpAddr>> {
    a.assignment(&key(name)).map(|x| x.ips.clone())
}

fn failed_reason(o: &Outcome) -> &str {
    match &o.change {
        Change::Failed { reason } | Change::Cleared { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Writes what the allocator holds into `current_ips`, as the status writer would.
fn written_back(a: &Allocator, services: &[Service]) -> Vec<Service> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.current_ips = a
                .assignment(&s.key)
                .map(|x| x.ips.clone())
                .unwrap_or_default();
            s
        })
        .collect()
}

// ---- auto-assign ----

#[test]
fn auto_assign_gives_lowest_free_address_and_metallb_event() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/30"])], None);
    let o = a.update(&svc("x"));
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.0"]),
            pool: "p".into()
        }
    );
    assert_eq!(
        o.events,
        vec![Event {
            kind: EventType::Normal,
            reason: "IPAllocated",
            message: r#"Assigned IP ["10.0.0.0"]"#.into(),
        }]
    );
    a.update(&svc("y"));
    assert_eq!(held(&a, "y"), Some(ips(&["10.0.0.1"])));
}

#[test]
fn auto_assign_skips_pools_without_auto_assign() {
    let mut a = Allocator::new(
        vec![
            manual(pool("m", &["10.0.0.1"])),
            pool("auto", &["10.0.1.1"]),
        ],
        None,
    );
    a.update(&svc("x"));
    assert_eq!(
        a.assignment(&key("x")),
        Some(&Assignment {
            ips: ips(&["10.0.1.1"]),
            pool: "auto".into()
        })
    );
}

#[test]
fn auto_assign_tries_pools_in_config_order_and_moves_on_when_full() {
    let mut a = Allocator::new(
        vec![
            pool("z-first", &["10.0.9.1"]),
            pool("a-second", &["10.0.0.1"]),
        ],
        None,
    );
    a.update(&svc("x"));
    a.update(&svc("y"));
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.9.1"])));
    assert_eq!(held(&a, "y"), Some(ips(&["10.0.0.1"])));
    let o = a.update(&svc("z"));
    assert_eq!(failed_reason(&o), "no available IPs");
    assert_eq!(
        o.events[0].message,
        r#"Failed to allocate IP for "default/z": no available IPs"#
    );
    assert_eq!(o.events[0].kind, EventType::Warning);
    assert_eq!(o.events[0].reason, "AllocationFailed");
}

#[test]
fn auto_assign_follows_range_order_within_a_pool() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.9", "10.0.0.1"])], None);
    a.update(&svc("x"));
    a.update(&svc("y"));
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.0.9"])));
    assert_eq!(held(&a, "y"), Some(ips(&["10.0.0.1"])));
}

#[test]
fn avoid_buggy_ips_skips_addresses_ending_in_0_and_255() {
    let mut p = pool("p", &["10.0.0.255-10.0.1.1"]);
    p.avoid_buggy_ips = true;
    let mut a = Allocator::new(vec![p], None);
    a.update(&svc("x"));
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.1.1"])));
    assert_eq!(failed_reason(&a.update(&svc("y"))), "no available IPs");
    // Asking for one explicitly fails too: MetalLB's poolFor ignores them.
    let mut s = svc("z");
    s.requested_ips = ips(&["10.0.1.0"]);
    assert_eq!(
        failed_reason(&a.update(&s)),
        r#"["10.0.1.0"] is not allowed in config"#
    );
}

#[test]
fn released_address_is_handed_out_again_lowest_first() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/29"])], None);
    for n in ["a", "b", "c"] {
        a.update(&svc(n));
    }
    let o = a.release(&key("a")).expect("a held an IP");
    assert!(matches!(o.change, Change::Cleared { .. }));
    assert_eq!(a.release(&key("a")), None);
    a.update(&svc("d"));
    assert_eq!(held(&a, "d"), Some(ips(&["10.0.0.0"])));
    a.update(&svc("e"));
    assert_eq!(held(&a, "e"), Some(ips(&["10.0.0.3"])));
}

// ---- address-pool annotation ----

#[test]
fn pool_annotation_takes_first_free_address_of_that_pool_even_if_not_auto_assign() {
    let mut a = Allocator::new(
        vec![
            pool("a", &["10.0.0.1"]),
            manual(pool("b", &["10.0.1.0/30"])),
        ],
        None,
    );
    let mut s = svc("x");
    s.pool = Some("b".into());
    a.update(&s);
    assert_eq!(
        a.assignment(&key("x")),
        Some(&Assignment {
            ips: ips(&["10.0.1.0"]),
            pool: "b".into()
        })
    );
}

#[test]
fn unknown_pool_annotation_fails() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1"])], None);
    let mut s = svc("x");
    s.pool = Some("nope".into());
    let o = a.update(&s);
    assert_eq!(failed_reason(&o), r#"unknown pool "nope""#);
    assert_eq!(
        o.events[0].message,
        r#"Failed to allocate IP for "default/x": unknown pool "nope""#
    );
}

#[test]
fn exhausted_named_pool_fails_with_family_in_reason() {
    let mut a = Allocator::new(vec![pool("b", &["10.0.1.1"])], None);
    let mut s = svc("x");
    s.pool = Some("b".into());
    a.update(&s);
    s.key = key("y");
    assert_eq!(
        failed_reason(&a.update(&s)),
        "no available IPs in pool b for ipv4 IPFamily"
    );
}

#[test]
fn pool_annotation_change_moves_service_to_the_named_pool() {
    let mut a = Allocator::new(
        vec![pool("a", &["10.0.0.1"]), pool("b", &["10.0.1.1"])],
        None,
    );
    let mut s = svc("x");
    a.update(&s);
    s.current_ips = ips(&["10.0.0.1"]);
    s.pool = Some("b".into());
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.1.1"]),
            pool: "b".into()
        }
    );
    assert!(a.services_on(ip("10.0.0.1")).is_empty());
}

// ---- requested IPs ----

#[test]
fn requested_ip_is_honoured_from_a_non_auto_assign_pool() {
    let mut a = Allocator::new(
        vec![
            pool("a", &["10.0.0.0/24"]),
            manual(pool("m", &["10.0.1.0/24"])),
        ],
        None,
    );
    let mut s = svc("x");
    s.requested_ips = ips(&["10.0.1.7"]);
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.1.7"]),
            pool: "m".into()
        }
    );
}

#[test]
fn requested_ip_in_no_pool_fails() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    s.requested_ips = ips(&["192.0.2.1"]);
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Failed {
            reason: r#"["192.0.2.1"] is not allowed in config"#.into()
        }
    );
    assert_eq!(
        o.events[0].message,
        r#"Failed to allocate IP for "default/x": ["192.0.2.1"] is not allowed in config"#
    );
    assert_eq!(a.assignment(&key("x")), None);
}

#[test]
fn requested_ip_from_another_pool_than_the_annotated_one_fails() {
    let mut a = Allocator::new(
        vec![pool("a", &["10.0.0.0/24"]), pool("b", &["10.0.1.0/24"])],
        None,
    );
    let mut s = svc("x");
    s.requested_ips = ips(&["10.0.0.5"]);
    s.pool = Some("b".into());
    assert_eq!(
        failed_reason(&a.update(&s)),
        r#"requested loadBalancer IP(s) ["10.0.0.5"] is not compatible with requested address pool b"#
    );
    assert!(a.services_on(ip("10.0.0.5")).is_empty());
}

#[test]
fn requested_ip_held_by_an_incompatible_service_is_not_stolen() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&svc("owner"));
    let mut s = svc("thief");
    s.requested_ips = ips(&["10.0.0.1"]);
    let o = a.update(&s);
    assert_eq!(
        failed_reason(&o),
        r#"can't change sharing key for "default/thief", address also in use by default/owner"#
    );
    assert_eq!(a.services_on(ip("10.0.0.1")), vec![&key("owner")]);
}

#[test]
fn requested_ip_on_a_port_already_used_there_fails() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("one"), "k", vec![tcp(80)]));
    let mut s = shared(svc("two"), "k", vec![tcp(80)]);
    s.requested_ips = ips(&["10.0.0.1"]);
    assert_eq!(
        failed_reason(&a.update(&s)),
        r#"port TCP/80 is already in use on "10.0.0.1""#
    );
}

#[test]
fn requested_ip_change_moves_the_service() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    a.update(&s);
    s.current_ips = ips(&["10.0.0.0"]);
    s.requested_ips = ips(&["10.0.0.42"]);
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.42"]),
            pool: "a".into()
        }
    );
    assert_eq!(o.events.len(), 1, "MetalLB clears silently here: {o:?}");
}

#[test]
fn requested_ips_of_one_family_twice_fail() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    s.requested_ips = ips(&["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        failed_reason(&a.update(&s)),
        r#"IPFamilyForAddresses: same address family ["10.0.0.1" "10.0.0.2"]"#
    );
}

#[test]
fn requested_ip_of_the_wrong_family_fails() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24", "fd00::/120"])], None);
    let mut s = svc("x");
    s.requested_ips = ips(&["fd00::5"]);
    assert_eq!(
        failed_reason(&a.update(&s)),
        r#"requested loadBalancer IP(s) ["fd00::5"] does not match the ipFamily of the service"#
    );
    s.ip_families = vec![IpFamily::V6];
    assert!(matches!(a.update(&s).change, Change::Allocated { .. }));
}

// ---- sharing ----

#[test]
fn same_sharing_key_and_different_ports_share_one_ip() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("web"), "k", vec![tcp(80)]));
    a.update(&shared(svc("tls"), "k", vec![tcp(443)]));
    assert_eq!(held(&a, "tls"), Some(ips(&["10.0.0.1"])));
    assert_eq!(
        a.services_on(ip("10.0.0.1")),
        vec![&key("tls"), &key("web")]
    );
    assert_eq!(a.pool_stats()[0].used, 1);
    assert_eq!(a.pool_stats()[0].services, 2);
}

#[test]
fn sharer_joins_the_lowest_compatible_ip_rather_than_the_first_free_one() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&svc("plain"));
    a.update(&shared(svc("s1"), "k", vec![tcp(80)]));
    a.release(&key("plain"));
    // .1 is free again, but MetalLB's scan would take .1 first: lowest acceptable wins.
    a.update(&shared(svc("s2"), "k", vec![tcp(81)]));
    assert_eq!(held(&a, "s2"), Some(ips(&["10.0.0.1"])));
    // With .1 taken, a third sharer joins s1 on .2.
    a.update(&svc("plain2"));
    a.update(&shared(svc("s3"), "k", vec![tcp(82)]));
    assert_eq!(held(&a, "s1"), Some(ips(&["10.0.0.2"])));
    assert_eq!(held(&a, "s3"), Some(ips(&["10.0.0.1"])));
}

#[test]
fn same_port_on_a_shared_key_gets_its_own_ip() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("one"), "k", vec![tcp(80)]));
    a.update(&shared(svc("two"), "k", vec![tcp(80)]));
    assert_eq!(held(&a, "two"), Some(ips(&["10.0.0.2"])));
    // Same port number, other protocol: shares.
    a.update(&shared(svc("three"), "k", vec![udp(80)]));
    assert_eq!(held(&a, "three"), Some(ips(&["10.0.0.1"])));
}

#[test]
fn different_sharing_keys_do_not_share() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("one"), "k1", vec![tcp(80)]));
    a.update(&shared(svc("two"), "k2", vec![tcp(443)]));
    assert_eq!(held(&a, "two"), Some(ips(&["10.0.0.2"])));
}

#[test]
fn a_service_without_sharing_key_never_shares() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("one"), "k", vec![tcp(80)]));
    let mut s = svc("two");
    s.ports = vec![tcp(443)];
    s.requested_ips = ips(&["10.0.0.1"]);
    assert!(matches!(a.update(&s).change, Change::Failed { .. }));
    s.requested_ips.clear();
    a.update(&s);
    assert_eq!(held(&a, "two"), Some(ips(&["10.0.0.2"])));
}

fn local(mut s: Service, app: &str) -> Service {
    s.traffic_policy = TrafficPolicy::Local;
    s.selector = [("app".to_string(), app.to_string())].into();
    s
}

#[test]
fn local_services_share_only_with_local_services_of_the_same_selector() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&local(shared(svc("l1"), "k", vec![tcp(80)]), "web"));
    a.update(&local(shared(svc("l2"), "k", vec![tcp(81)]), "web"));
    a.update(&local(shared(svc("l3"), "k", vec![tcp(82)]), "db"));
    assert_eq!(held(&a, "l2"), Some(ips(&["10.0.0.1"])));
    assert_eq!(held(&a, "l3"), Some(ips(&["10.0.0.2"])));
}

#[test]
fn local_services_never_share_with_cluster_services() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    a.update(&shared(svc("c"), "k", vec![tcp(80)]));
    let mut l = shared(svc("l"), "k", vec![tcp(81)]);
    l.traffic_policy = TrafficPolicy::Local; // even with an empty selector
    a.update(&l);
    assert_eq!(held(&a, "l"), Some(ips(&["10.0.0.2"])));
}

#[test]
fn changing_the_sharing_key_of_a_shared_ip_moves_the_changed_service() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    let one = shared(svc("one"), "k", vec![tcp(80)]);
    let mut two = shared(svc("two"), "k", vec![tcp(81)]);
    a.update(&one);
    a.update(&two);
    two.current_ips = ips(&["10.0.0.1"]);
    two.sharing_key = Some("other".into());
    let o = a.update(&two);
    assert_eq!(o.events[0].reason, "ClearAssignment");
    assert_eq!(
        o.events[0].message,
        r#"current IP for "default/two" not allowed by config, will attempt for new IP assignment: can't change sharing key for "default/two", address also in use by default/one"#
    );
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.2"]),
            pool: "a".into()
        }
    );
    assert_eq!(held(&a, "one"), Some(ips(&["10.0.0.1"])));
}

// ---- IP families ----

fn dual_pool() -> Pool {
    pool("d", &["10.0.0.1-10.0.0.9", "fd00::1-fd00::9"])
}

#[test]
fn single_stack_defaults_to_ipv4() {
    let mut a = Allocator::new(vec![pool("v6", &["fd00::/120"]), dual_pool()], None);
    a.update(&svc("x"));
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.0.1"])));
}

#[test]
fn single_stack_takes_its_first_listed_family() {
    let mut a = Allocator::new(vec![dual_pool()], None);
    let mut s = svc("x");
    s.ip_families = vec![IpFamily::V6, IpFamily::V4];
    a.update(&s);
    assert_eq!(held(&a, "x"), Some(ips(&["fd00::1"])));
}

#[test]
fn require_dual_stack_gets_one_of_each_family_from_one_pool() {
    let mut a = Allocator::new(
        vec![
            pool("v4", &["10.0.9.1"]),
            pool("v6", &["fd09::1"]),
            dual_pool(),
        ],
        None,
    );
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.1", "fd00::1"]),
            pool: "d".into()
        }
    );
    assert_eq!(o.events[0].message, r#"Assigned IP ["10.0.0.1" "fd00::1"]"#);
}

#[test]
fn require_dual_stack_fails_without_a_pool_of_both_families() {
    let mut a = Allocator::new(
        vec![pool("v4", &["10.0.9.1"]), pool("v6", &["fd09::1"])],
        None,
    );
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    assert_eq!(
        failed_reason(&a.update(&s)),
        "no available IPs: no auto-assign pool has both an IPv4 and an IPv6 address free for a RequireDualStack Service"
    );
    s.pool = Some("v4".into());
    assert_eq!(
        failed_reason(&a.update(&s)),
        "no available IPs in pool v4 for dual IPFamily"
    );
}

#[test]
fn prefer_dual_stack_takes_both_families_when_a_pool_has_both() {
    let mut a = Allocator::new(vec![pool("v4", &["10.0.9.1"]), dual_pool()], None);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    a.update(&s);
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.0.1", "fd00::1"])));
}

#[test]
fn prefer_dual_stack_takes_the_one_family_available() {
    let mut a = Allocator::new(
        vec![pool("v6", &["fd09::1"]), pool("v4", &["10.0.9.1"])],
        None,
    );
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    a.update(&s);
    // The primary family (IPv4 unless listed otherwise) wins among single-family pools.
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.9.1"])));
    s.key = key("y");
    s.ip_families = vec![IpFamily::V6, IpFamily::V4];
    a.update(&s);
    assert_eq!(held(&a, "y"), Some(ips(&["fd09::1"])));
}

#[test]
fn prefer_dual_stack_that_requests_one_ip_gets_only_that_ip() {
    // Found by alloc_properties: a Service holding its requested IPv6 address that turns
    // PreferDualStack was given an IPv4 address it never asked for.
    let mut a = Allocator::new(vec![dual_pool()], None);
    let mut s = svc("x");
    s.requested_ips = ips(&["fd00::1"]);
    s.ip_families = vec![IpFamily::V6];
    a.update(&s);
    assert_eq!(held(&a, "x"), Some(ips(&["fd00::1"])));
    s.current_ips = ips(&["fd00::1"]);
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    s.ip_families = vec![IpFamily::V6, IpFamily::V4];
    a.update(&s);
    assert_eq!(held(&a, "x"), Some(ips(&["fd00::1"])));
}

#[test]
fn prefer_dual_stack_holding_one_ip_gets_the_other_family_from_its_pool() {
    let mut a = Allocator::new(vec![dual_pool()], None);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    s.current_ips = ips(&["10.0.0.5"]);
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.5", "fd00::1"]),
            pool: "d".into()
        }
    );
    assert_eq!(
        o.events,
        vec![Event {
            kind: EventType::Normal,
            reason: "IPAllocated",
            message: r#"Assigned additional IP "fd00::1""#.into(),
        }]
    );
}

#[test]
fn prefer_dual_stack_reports_an_exhausted_other_family() {
    let mut a = Allocator::new(vec![pool("d", &["10.0.0.1-10.0.0.9", "fd00::1"])], None);
    let mut taker = svc("a-taker");
    taker.ip_families = vec![IpFamily::V6];
    a.update(&taker);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    s.current_ips = ips(&["10.0.0.5"]);
    let o = a.update(&s);
    assert_eq!(o.change, Change::Unchanged);
    assert_eq!(o.events[0].reason, "AdditionalAssignFailed");
    assert_eq!(
        o.events[0].message,
        "cannot assign additional IP in PreferDualStack: no available IPs in pool d for ipv6 IPFamily"
    );
}

#[test]
fn require_dual_stack_with_one_family_full_says_so_and_single_stack_shortage_does_not() {
    let mut a = Allocator::new(vec![pool("d", &["10.0.0.1-10.0.0.9", "fd00::1"])], None);
    let mut taker = svc("a-taker");
    taker.ip_families = vec![IpFamily::V6];
    a.update(&taker);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    assert_eq!(failed_reason(&a.update(&s)), msg::NO_DUAL_STACK_POOL);
    let mut v6 = svc("y");
    v6.ip_families = vec![IpFamily::V6];
    assert_eq!(failed_reason(&a.update(&v6)), "no available IPs");
}

#[test]
fn prefer_dual_stack_with_no_address_of_either_family_fails_with_no_available_ips() {
    let mut a = Allocator::new(vec![pool("d", &["10.0.0.1", "fd00::1"])], None);
    let mut both = svc("a-both");
    both.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    a.update(&both);
    let mut s = svc("x");
    s.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    assert_eq!(failed_reason(&a.update(&s)), "no available IPs");
}

#[test]
fn incomplete_lists_services_waiting_for_an_address_and_prefer_dual_stack_missing_a_family() {
    let mut a = Allocator::new(
        vec![
            pool("d", &["10.0.0.1-10.0.0.9", "fd00::1"]),
            manual(pool("v4only", &["10.0.9.1-10.0.9.2"])),
        ],
        None,
    );
    let mut taker = svc("a-taker");
    taker.ip_families = vec![IpFamily::V6];
    a.update(&taker);
    // PreferDualStack with the IPv6 range full: one family, waiting for the other.
    let mut partial = svc("partial");
    partial.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    a.update(&partial);
    assert_eq!(held(&a, "partial"), Some(ips(&["10.0.0.1"])));
    partial.current_ips = ips(&["10.0.0.1"]);
    // IPv6 single stack: nothing.
    let mut nothing = svc("nothing");
    nothing.ip_families = vec![IpFamily::V6];
    a.update(&nothing);
    // PreferDualStack in a pool without IPv6 ranges: as complete as it can be.
    let mut v4only = svc("v4only");
    v4only.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    v4only.pool = Some("v4only".into());
    a.update(&v4only);
    assert_eq!(held(&a, "v4only"), Some(ips(&["10.0.9.1"])));
    // A malformed spec: no free address can help it.
    let mut broken = svc("broken");
    broken.spec_error = Some("invalid spec.loadBalancerIP \"x\"".into());
    a.update(&broken);
    assert_eq!(
        a.incomplete().collect::<Vec<_>>(),
        vec![&key("nothing"), &key("partial")]
    );
    assert_eq!(
        a.failed().collect::<Vec<_>>(),
        vec![&key("broken"), &key("nothing")]
    );
    // The IPv6 freed: each retry completes one, and it leaves the set.
    a.release(&key("a-taker"));
    let o = a.update(&nothing);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["fd00::1"]),
            pool: "d".into()
        }
    );
    let o = a.update(&partial);
    assert_eq!(o.change, Change::Unchanged, "its IPv6 went to `nothing`");
    assert_eq!(a.incomplete().collect::<Vec<_>>(), vec![&key("partial")]);
    a.release(&key("nothing"));
    let o = a.update(&partial);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.1", "fd00::1"]),
            pool: "d".into()
        }
    );
    assert_eq!(a.incomplete().count(), 0);
}

#[test]
fn single_stack_service_holding_an_ip_of_the_other_family_is_reallocated() {
    let mut a = Allocator::new(vec![dual_pool()], None);
    let mut s = svc("x");
    s.current_ips = ips(&["fd00::3"]);
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.1"]),
            pool: "d".into()
        }
    );
}

// ---- class ----

#[test]
fn service_of_another_class_is_not_ours_and_its_ip_is_released() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1"])], None);
    let mut s = svc("x");
    a.update(&s);
    s.class = Some("other.example/lb".into());
    s.current_ips = ips(&["10.0.0.1"]);
    let o = a.update(&s);
    assert_eq!(o.change, Change::NotOurs);
    assert!(o.events.is_empty());
    assert_eq!(a.assignment(&key("x")), None);
    assert!(matches!(
        a.update(&svc("y")).change,
        Change::Allocated { .. }
    ));
}

#[test]
fn with_a_class_configured_only_services_of_that_class_are_ours() {
    let class = Some("example.com/lb".to_string());
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], class.clone());
    assert_eq!(a.update(&svc("plain")).change, Change::NotOurs);
    let mut s = svc("mine");
    s.class = class;
    assert!(matches!(a.update(&s).change, Change::Allocated { .. }));
}

// ---- spec errors ----

#[test]
fn spec_error_fails_and_keeps_the_existing_valid_ip() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    s.current_ips = ips(&["10.0.0.7"]);
    s.spec_error = Some(r#"invalid metallb.io/loadBalancerIPs: "banana""#.into());
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Failed {
            reason: r#"invalid metallb.io/loadBalancerIPs: "banana""#.into()
        }
    );
    assert_eq!(o.events[0].kind, EventType::Warning);
    assert_eq!(held(&a, "x"), Some(ips(&["10.0.0.7"])));
    // Still held: nobody else gets it.
    let mut t = svc("y");
    t.requested_ips = ips(&["10.0.0.7"]);
    assert!(matches!(a.update(&t).change, Change::Failed { .. }));
}

#[test]
fn spec_error_without_an_ip_allocates_nothing() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    s.spec_error = Some("bad".into());
    let o = a.update(&s);
    assert_eq!(
        o.change,
        Change::Failed {
            reason: "bad".into()
        }
    );
    assert_eq!(
        o.events[0].message,
        r#"Failed to allocate IP for "default/x": bad"#
    );
    assert_eq!(a.assignment(&key("x")), None);
    assert_eq!(a.failed().collect::<Vec<_>>(), vec![&key("x")]);
}

// ---- stability ----

#[test]
fn existing_assignment_is_kept_even_when_a_lower_address_is_free() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    let mut s = svc("x");
    s.current_ips = ips(&["10.0.0.200"]);
    let o = a.update(&s);
    assert_eq!(o.change, Change::Unchanged);
    assert!(o.events.is_empty());
    assert_eq!(
        a.sync(std::slice::from_ref(&s))[0].change,
        Change::Unchanged
    );
}

#[test]
fn update_with_a_status_not_yet_written_keeps_the_held_ip() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.0/24"])], None);
    a.update(&svc("x"));
    a.update(&svc("y"));
    a.release(&key("x"));
    // y's status still empty: it must stay on .1, not move down to the freed .0.
    let o = a.update(&svc("y"));
    assert_eq!(
        o.change,
        Change::Allocated {
            ips: ips(&["10.0.0.1"]),
            pool: "a".into()
        }
    );
    assert!(o.events.is_empty(), "already announced: {o:?}");
}

#[test]
fn sync_keeps_existing_assignments_before_allocating_new_ones() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.2"])], None);
    let new = svc("a-new"); // sorts first
    let mut old = svc("z-old");
    old.current_ips = ips(&["10.0.0.1"]);
    let out = a.sync(&[old.clone(), new.clone()]);
    assert_eq!(out[0].service, key("a-new"));
    assert_eq!(
        out[0].change,
        Change::Allocated {
            ips: ips(&["10.0.0.2"]),
            pool: "a".into()
        }
    );
    assert_eq!(out[1].change, Change::Unchanged);
}

#[test]
fn sync_resolves_conflicting_statuses_in_key_order() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.2"])], None);
    let mut first = svc("a");
    first.current_ips = ips(&["10.0.0.1"]);
    let mut second = svc("b");
    second.current_ips = ips(&["10.0.0.1"]);
    let out = a.sync(&[second, first]);
    assert_eq!(out[0].change, Change::Unchanged);
    assert_eq!(out[1].events[0].reason, "ClearAssignment");
    assert_eq!(
        out[1].change,
        Change::Allocated {
            ips: ips(&["10.0.0.2"]),
            pool: "a".into()
        }
    );
}

#[test]
fn resync_of_written_back_output_changes_nothing() {
    let pools = vec![dual_pool(), manual(pool("m", &["10.0.5.0/29"]))];
    let mut a = Allocator::new(pools.clone(), None);
    let mut services = vec![
        svc("a"),
        shared(svc("b"), "k", vec![tcp(1)]),
        shared(svc("c"), "k", vec![tcp(2)]),
        svc("d"),
    ];
    services[3].ip_family_policy = IpFamilyPolicy::PreferDualStack;
    services.push({
        let mut s = svc("e");
        s.requested_ips = ips(&["10.0.5.3"]);
        s
    });
    a.sync(&services);
    let back = written_back(&a, &services);
    for o in a.sync(&back) {
        assert_eq!(o.change, Change::Unchanged, "{o:?}");
        assert!(o.events.is_empty(), "{o:?}");
    }
    let mut fresh = Allocator::new(pools, None);
    for o in fresh.sync(&back) {
        assert_eq!(o.change, Change::Unchanged, "{o:?}");
    }
    assert!(fresh.assignments().eq(a.assignments()));
}

// ---- config reload ----

#[test]
fn shrinking_a_pool_moves_only_services_whose_ip_left_it() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.9"])], None);
    let services: Vec<Service> = ["x", "y", "z"].iter().map(|n| svc(n)).collect();
    a.sync(&services);
    let services = written_back(&a, &services); // .1 .2 .3
    let out = a.set_pools(vec![pool("a", &["10.0.0.2-10.0.0.9"])], &services);
    assert_eq!(out[0].service, key("x"));
    assert_eq!(
        out[0].change,
        Change::Allocated {
            ips: ips(&["10.0.0.4"]),
            pool: "a".into()
        }
    );
    assert_eq!(
        out[0].events[0].message,
        r#"current IP for "default/x" not allowed by config, will attempt for new IP assignment: ["10.0.0.1"] is not allowed in config"#
    );
    assert_eq!(out[0].events[1].message, r#"Assigned IP ["10.0.0.4"]"#);
    assert_eq!(out[1].change, Change::Unchanged);
    assert_eq!(out[2].change, Change::Unchanged);
}

#[test]
fn removing_a_pool_clears_its_services_when_nothing_else_fits() {
    let mut a = Allocator::new(
        vec![pool("a", &["10.0.0.1"]), manual(pool("b", &["10.0.1.1"]))],
        None,
    );
    let services = vec![svc("x")];
    a.sync(&services);
    let services = written_back(&a, &services);
    let out = a.set_pools(vec![manual(pool("b", &["10.0.1.1"]))], &services);
    assert_eq!(
        out[0].change,
        Change::Cleared {
            reason: "no available IPs".into()
        }
    );
    assert_eq!(out[0].events.len(), 2);
    assert_eq!(a.assignment(&key("x")), None);
}

#[test]
fn a_failed_service_is_listed_until_it_gets_an_ip() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1"])], None);
    a.update(&svc("x"));
    a.update(&svc("y"));
    assert_eq!(a.failed().collect::<Vec<_>>(), vec![&key("y")]);
    a.release(&key("x"));
    a.update(&svc("y"));
    assert_eq!(a.failed().count(), 0);
    assert_eq!(held(&a, "y"), Some(ips(&["10.0.0.1"])));
}

// ---- stats ----

#[test]
fn pool_stats_count_capacity_net_of_buggy_ips_and_distinct_used_ips() {
    let mut p = pool("a", &["10.0.0.0/23", "fd00::/126"]);
    p.avoid_buggy_ips = true;
    let mut a = Allocator::new(vec![p, pool("huge", &["fd01::/64"])], None);
    a.update(&shared(svc("x"), "k", vec![tcp(1)]));
    a.update(&shared(svc("y"), "k", vec![tcp(2)]));
    let mut v6 = svc("z");
    v6.ip_families = vec![IpFamily::V6];
    a.update(&v6);
    let stats = a.pool_stats();
    assert_eq!(
        stats[0],
        PoolStats {
            name: "a".into(),
            total: 512 - 4 + 4,
            total_v4: 508,
            total_v6: 4,
            used: 2,
            used_v4: 1,
            used_v6: 1,
            services: 3,
        }
    );
    assert_eq!(stats[1].total, 1u128 << 64);
    assert_eq!(stats[1].used, 0);
}

#[test]
fn a_new_pool_on_reload_places_services_that_were_waiting() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1"])], None);
    let services = vec![svc("x"), svc("y")];
    let out = a.sync(&services);
    assert!(matches!(out[1].change, Change::Failed { .. }));
    let services = written_back(&a, &services);
    let out = a.set_pools(
        vec![pool("a", &["10.0.0.1"]), pool("b", &["10.0.1.1"])],
        &services,
    );
    assert_eq!(out[0].change, Change::Unchanged);
    assert_eq!(
        out[1].change,
        Change::Allocated {
            ips: ips(&["10.0.1.1"]),
            pool: "b".into()
        }
    );
    assert_eq!(a.failed().count(), 0);
}

#[test]
fn sync_forgets_services_missing_from_the_snapshot_and_reports_foreign_ones() {
    let mut a = Allocator::new(vec![pool("a", &["10.0.0.1-10.0.0.2"])], None);
    a.sync(&[svc("gone"), svc("stays")]);
    let mut foreign = svc("foreign");
    foreign.class = Some("other".into());
    let out = a.sync(&[svc("stays"), foreign]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].service, key("foreign"));
    assert_eq!(out[0].change, Change::NotOurs);
    assert_eq!(a.assignment(&key("gone")), None);
    assert_eq!(a.assignments().count(), 1);
}

// ---- pools chosen by namespace and Service (serviceAllocation) ----

mod service_allocation {
    use super::*;
    use crate::model::{LabelSelector, Selector, ServiceAllocation};

    fn sel(k: &str, v: &str) -> LabelSelector {
        LabelSelector {
            match_labels: [(k.to_string(), v.to_string())].into(),
            match_expressions: Vec::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Selector {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with(mut p: Pool, sa: ServiceAllocation) -> Pool {
        p.service_allocation = sa;
        p
    }

    fn in_ns(ns: &str, name: &str) -> Service {
        let mut s = svc(name);
        s.key = ServiceKey::new(ns, name);
        s
    }

    fn pool_of(a: &Allocator, ns: &str, name: &str) -> Option<String> {
        a.assignment(&ServiceKey::new(ns, name))
            .map(|x| x.pool.clone())
    }

    fn team(name: &str, range: &str, team: &str) -> Pool {
        with(
            pool(name, &[range]),
            ServiceAllocation {
                namespace_selectors: vec![sel("team", team)],
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_namespace_pool_serves_its_namespace_before_the_pools_for_everyone() {
        let mut a = Allocator::new(
            vec![
                pool("any", &["10.0.0.1"]),
                with(
                    pool("a-only", &["10.0.1.1"]),
                    ServiceAllocation {
                        namespaces: vec!["team-a".into()],
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        a.update(&in_ns("team-a", "web"));
        a.update(&in_ns("other", "web"));
        assert_eq!(pool_of(&a, "team-a", "web").as_deref(), Some("a-only"));
        assert_eq!(pool_of(&a, "other", "web").as_deref(), Some("any"));
    }

    #[test]
    fn namespace_selectors_match_the_namespaces_labels() {
        let mut a = Allocator::new(
            vec![
                pool("any", &["10.0.0.1-10.0.0.9"]),
                team("a", "10.0.1.1-10.0.1.9", "a"),
                team("b", "10.0.2.1-10.0.2.9", "b"),
            ],
            None,
        );
        a.set_namespace("ns-a", Some(labels(&[("team", "a")])));
        a.set_namespace("ns-b", Some(labels(&[("team", "b")])));
        for ns in ["ns-a", "ns-b", "ns-c"] {
            a.update(&in_ns(ns, "web"));
        }
        assert_eq!(pool_of(&a, "ns-a", "web").as_deref(), Some("a"));
        assert_eq!(pool_of(&a, "ns-b", "web").as_deref(), Some("b"));
        assert_eq!(pool_of(&a, "ns-c", "web").as_deref(), Some("any"));
    }

    #[test]
    fn service_selectors_match_the_services_labels() {
        let mut a = Allocator::new(
            vec![
                pool("any", &["10.0.0.1"]),
                with(
                    pool("db", &["10.0.1.1"]),
                    ServiceAllocation {
                        service_selectors: vec![sel("tier", "db")],
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        let mut db = svc("db");
        db.labels = labels(&[("tier", "db")]);
        a.update(&db);
        a.update(&svc("web"));
        assert_eq!(pool_of(&a, "default", "db").as_deref(), Some("db"));
        assert_eq!(pool_of(&a, "default", "web").as_deref(), Some("any"));
    }

    #[test]
    fn pinned_pools_go_by_ascending_priority_then_those_without_then_config_order() {
        let pinned = |name: &str, range: &str, priority: u32| {
            with(
                pool(name, &[range]),
                ServiceAllocation {
                    priority,
                    namespaces: vec!["default".into()],
                    ..Default::default()
                },
            )
        };
        let pools = vec![
            pool("any", &["10.0.9.1"]),
            pinned("none-1", "10.0.5.1", 0),
            pinned("p20", "10.0.2.1", 20),
            pinned("none-2", "10.0.6.1", 0),
            pinned("p10", "10.0.1.1", 10),
            pinned("p10-later", "10.0.3.1", 10),
        ];
        let a = Allocator::new(pools.clone(), None);
        let (pinned_order, open) = a.auto_pools(&svc("x"));
        let names: Vec<&str> = pinned_order
            .iter()
            .map(|&i| pools[i].name.as_str())
            .collect();
        assert_eq!(names, ["p10", "p10-later", "p20", "none-1", "none-2"]);
        assert_eq!(open, [0]);
        // Each Service takes the next pool as the earlier ones fill up; "any" comes last.
        let mut a = Allocator::new(pools, None);
        let got: Vec<Option<String>> = (0..7)
            .map(|i| {
                a.update(&svc(&format!("s{i}")));
                pool_of(&a, "default", &format!("s{i}"))
            })
            .collect();
        let want = ["p10", "p10-later", "p20", "none-1", "none-2", "any"];
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.as_deref(), Some(w));
        }
        assert_eq!(got[6], None, "all full");
    }

    #[test]
    fn a_pool_whose_selectors_match_nothing_is_never_auto_assigned() {
        let mut a = Allocator::new(vec![team("nobody", "10.0.1.1-10.0.1.9", "x")], None);
        a.set_namespace("default", Some(labels(&[("team", "a")])));
        let o = a.update(&svc("web"));
        assert_eq!(failed_reason(&o), msg::NO_AVAILABLE_IPS);
        // Nor a pool that has only a priority: pinned to no Service, out of auto-assignment.
        let only_priority = with(
            pool("prio", &["10.0.2.1"]),
            ServiceAllocation {
                priority: 1,
                ..Default::default()
            },
        );
        let mut a = Allocator::new(vec![only_priority], None);
        assert_eq!(failed_reason(&a.update(&svc("web"))), msg::NO_AVAILABLE_IPS);
    }

    #[test]
    fn an_incompatible_pool_is_refused_for_a_requested_ip_and_for_a_named_pool() {
        let mut a = Allocator::new(
            vec![
                team("b", "10.0.2.1-10.0.2.9", "b"),
                pool("any", &["10.0.0.1-10.0.0.9"]),
            ],
            None,
        );
        a.set_namespace("ns-a", Some(labels(&[("team", "a")])));
        let mut asks_ip = in_ns("ns-a", "web");
        asks_ip.requested_ips = ips(&["10.0.2.5"]);
        let o = a.update(&asks_ip);
        assert_eq!(
            failed_reason(&o),
            r#"pool b not compatible for ip assignment: namespace "ns-a" is not among its namespaces and its Namespace's labels match none of its namespace_selectors"#
        );
        assert_eq!(o.events[0].reason, ALLOCATION_FAILED);
        let mut names_pool = in_ns("ns-a", "api");
        names_pool.pool = Some("b".into());
        assert!(failed_reason(&a.update(&names_pool)).starts_with("pool b not compatible"));
        // Both wait in `incomplete`, and are served once their namespace joins team b.
        assert_eq!(a.incomplete_in("ns-a").count(), 2);
        a.set_namespace("ns-a", Some(labels(&[("team", "b")])));
        a.update(&asks_ip);
        assert_eq!(held(&a, "x"), None);
        assert_eq!(pool_of(&a, "ns-a", "web").as_deref(), Some("b"));
    }

    #[test]
    fn a_held_ip_is_kept_when_labels_change_in_sync_as_in_update() {
        let pools = vec![
            team("a", "10.0.1.1-10.0.1.9", "a"),
            pool("any", &["10.0.0.1-10.0.0.9"]),
        ];
        let mut a = Allocator::new(pools.clone(), None);
        a.set_namespace("ns", Some(labels(&[("team", "a")])));
        let web = in_ns("ns", "web");
        a.update(&web);
        let before = a.assignment(&web.key).cloned().expect("allocated");
        assert_eq!(before.pool, "a");
        // The namespace leaves team a: nothing moves, whether updated or rebuilt.
        a.set_namespace("ns", Some(labels(&[("team", "z")])));
        let mut echoed = web.clone();
        echoed.current_ips = before.ips.clone();
        assert_eq!(a.update(&echoed).change, Change::Unchanged);
        assert_eq!(
            a.sync(std::slice::from_ref(&echoed))[0].change,
            Change::Unchanged
        );
        let mut fresh = Allocator::new(pools, None);
        fresh.set_namespace("ns", Some(labels(&[("team", "z")])));
        assert_eq!(
            fresh.sync(std::slice::from_ref(&echoed))[0].change,
            Change::Unchanged
        );
        assert_eq!(fresh.assignment(&web.key), Some(&before));
        // A new Service there now gets the pool for everyone.
        a.update(&in_ns("ns", "new"));
        assert_eq!(pool_of(&a, "ns", "new").as_deref(), Some("any"));
    }

    #[test]
    fn until_namespaces_are_listed_a_choice_by_namespace_labels_waits() {
        let mut a = Allocator::new(
            vec![
                team("a", "10.0.1.1-10.0.1.9", "a"),
                pool("any", &["10.0.0.1-10.0.0.9"]),
            ],
            None,
        );
        a.set_namespaces_listed(false);
        let o = a.update(&in_ns("ns", "web"));
        assert_eq!(failed_reason(&o), msg::NAMESPACES_NOT_LISTED);
        assert_eq!(a.incomplete_in("ns").count(), 1);
        // A requested IP of a pool that does not choose by namespace labels goes ahead.
        let mut asks = in_ns("ns", "fixed");
        asks.requested_ips = ips(&["10.0.0.5"]);
        assert!(matches!(a.update(&asks).change, Change::Allocated { .. }));
        a.set_namespace("ns", Some(labels(&[("team", "a")])));
        a.set_namespaces_listed(true);
        a.update(&in_ns("ns", "web"));
        assert_eq!(pool_of(&a, "ns", "web").as_deref(), Some("a"));
    }

    #[test]
    fn a_static_service_of_lb_toml_may_use_a_pool_that_chooses_by_namespace() {
        let mut a = Allocator::new(vec![team("a", "10.0.1.1-10.0.1.9", "a")], None);
        let mut vip = in_ns(crate::model::STATIC_NAMESPACE, "vip");
        vip.pool = Some("a".into());
        assert!(matches!(a.update(&vip).change, Change::Allocated { .. }));
        // A Kubernetes Service in a namespace of that name is not exempt.
        let mut k8s = in_ns(crate::model::STATIC_NAMESPACE, "web");
        k8s.uid = Some("1234".into());
        k8s.pool = Some("a".into());
        assert!(failed_reason(&a.update(&k8s)).starts_with("pool a not compatible"));
    }

    #[test]
    fn incomplete_in_lists_only_that_namespace() {
        let mut a = Allocator::new(vec![pool("p", &["10.0.0.1"])], None);
        for (ns, n) in [("a", "1"), ("b", "1"), ("b", "2"), ("bb", "1"), ("c", "1")] {
            a.update(&in_ns(ns, n));
        }
        let b: Vec<String> = a.incomplete_in("b").map(|k| k.to_string()).collect();
        assert_eq!(b, ["b/1", "b/2"]);
    }
}
