//! Property tests of the allocator over random pools, Services and call sequences:
//! - no (IP, protocol, port) is given to two Services;
//! - every IP is inside the pool it is accounted to (and not an avoided .0/.255);
//! - sharing rules hold on every shared IP;
//! - the same input gives the same result;
//! - rebuilding from its own output (status written back, new Allocator, sync) changes
//!   nothing, also after namespace labels changed;
//! - pools chosen by namespace and Service (`serviceAllocation`): a fresh allocation is
//!   always from a compatible pool, and a plain Service gets exactly what a simple reference
//!   of the ordering rules (docs/configure.md) picks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb::alloc::{Allocator, Change, Outcome};
use lb::model::{
    IpFamily, IpFamilyPolicy, IpRange, LabelSelector, Pool, PoolProtocol, Protocol, Selector,
    Service, ServiceAllocation, ServiceKey, ServicePort, TrafficPolicy,
};
use proptest::prelude::*;

fn v4(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, c, d))
}

fn v6(c: u16, d: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, c, d))
}

/// Small ranges so that pools fill up, share and overflow; IPv4 ones may straddle .255/.0.
/// Pool `i` draws from its own block (10.0.2i.x and 10.0.2i+1.x, fd00::i:x), as validated
/// configs have no overlapping pools; a pool's own ranges may overlap.
fn range_strategy(i: usize) -> impl Strategy<Value = IpRange> {
    let c4 = 2 * i as u8;
    let c6 = i as u16;
    prop_oneof![
        (250u8..=255, 0u8..6).prop_map(move |(d, len)| {
            let first = u32::from(Ipv4Addr::new(10, 0, c4, d));
            let last = first + u32::from(len);
            IpRange::new(
                IpAddr::V4(Ipv4Addr::from(first)),
                IpAddr::V4(Ipv4Addr::from(last)),
            )
            .expect("ordered")
        }),
        (0u16..4, 0u16..4)
            .prop_map(move |(d, len)| IpRange::new(v6(c6, d), v6(c6, d + len)).expect("ordered")),
    ]
}

/// The namespaces Services live in (Service `i` in `NAMESPACES[i % 3]`).
const NAMESPACES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

fn sel(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [(k.to_string(), v.to_string())].into(),
        match_expressions: Vec::new(),
    }
}

/// Team labels of the three namespaces ("" = no label).
fn teams_strategy() -> impl Strategy<Value = [&'static str; 3]> {
    let team = || prop_oneof![Just("a"), Just("b"), Just("")];
    (team(), team(), team()).prop_map(|(a, b, c)| [a, b, c])
}

fn team_labels(team: &str) -> Selector {
    if team.is_empty() {
        Selector::default()
    } else {
        [("team".to_string(), team.to_string())].into()
    }
}

fn service_allocation_strategy() -> impl Strategy<Value = ServiceAllocation> {
    prop_oneof![
        3 => Just(ServiceAllocation::default()),
        2 => (
            prop_oneof![Just(0u32), 1u32..3],
            prop_oneof![2 => Just(vec![]), 1 => prop::sample::select(NAMESPACES.to_vec()).prop_map(|n| vec![n.to_string()])],
            // team "x" is nobody's: a selector that matches nothing.
            prop_oneof![2 => Just(vec![]), 1 => prop::sample::select(vec!["a", "b", "x"]).prop_map(|t| vec![sel("team", t)])],
            prop_oneof![2 => Just(vec![]), 1 => prop::sample::select(vec!["db", "web"]).prop_map(|t| vec![sel("tier", t)])],
        )
            .prop_map(|(priority, namespaces, namespace_selectors, service_selectors)| ServiceAllocation {
                priority,
                namespaces,
                namespace_selectors,
                service_selectors,
            }),
    ]
}

fn pool_strategy(i: usize) -> impl Strategy<Value = Pool> {
    (
        prop::collection::vec(range_strategy(i), 1..3),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.3),
        service_allocation_strategy(),
    )
        .prop_map(
            move |(ranges, auto_assign, avoid_buggy_ips, service_allocation)| Pool {
                name: format!("pool{i}"),
                protocol: PoolProtocol::Layer2,
                ranges,
                auto_assign,
                avoid_buggy_ips,
                interfaces: Vec::new(),
                node_selectors: Vec::new(),
                bgp_advertisements: Vec::new(),
                service_allocation,
            },
        )
}

/// One to three pools, in a random config order.
fn pools_strategy() -> impl Strategy<Value = Vec<Pool>> {
    (
        pool_strategy(0),
        pool_strategy(1),
        pool_strategy(2),
        1usize..4,
    )
        .prop_flat_map(|(a, b, c, n)| Just(vec![a, b, c][..n].to_vec()).prop_shuffle())
}

fn ip_strategy() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..6, prop_oneof![250u8..=255, 0u8..6]).prop_map(|(c, d)| v4(c, d)),
        (0u16..4, 0u16..8).prop_map(|(c, d)| v6(c, d)),
    ]
}

fn ports_strategy() -> impl Strategy<Value = Vec<ServicePort>> {
    prop::collection::vec(
        (
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
            prop_oneof![Just(53u16), Just(80), Just(443)],
        )
            .prop_map(|(protocol, port)| ServicePort { protocol, port }),
        1..3,
    )
}

/// A Service spec (its name is given by its index in the world).
fn spec_strategy() -> impl Strategy<Value = Service> {
    (
        ports_strategy(),
        prop::bool::ANY,
        prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))],
        prop_oneof![3 => Just(None), 2 => Just(Some("k1")), 1 => Just(Some("k2"))],
        prop_oneof![
            6 => Just(Vec::new()),
            2 => ip_strategy().prop_map(|ip| vec![ip]),
            1 => (ip_strategy(), ip_strategy()).prop_map(|(a, b)| vec![a, b]),
        ],
        prop_oneof![4 => Just(None), 1 => (0usize..4).prop_map(Some)],
        prop_oneof![8 => Just(None), 1 => Just(Some("other"))],
        prop_oneof![
            Just(vec![]),
            Just(vec![IpFamily::V4]),
            Just(vec![IpFamily::V6]),
            Just(vec![IpFamily::V4, IpFamily::V6]),
            Just(vec![IpFamily::V6, IpFamily::V4]),
        ],
        prop_oneof![
            3 => Just(IpFamilyPolicy::SingleStack),
            1 => Just(IpFamilyPolicy::PreferDualStack),
            1 => Just(IpFamilyPolicy::RequireDualStack),
        ],
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(ip_strategy(), 1..3)],
        (
            prop::bool::weighted(0.05),
            prop_oneof![Just(""), Just("db"), Just("web")],
        ),
    )
        .prop_map(
            |(
                ports,
                local,
                app,
                sharing,
                requested_ips,
                pool,
                class,
                ip_families,
                ip_family_policy,
                current_ips,
                (spec_error, tier),
            )| Service {
                key: ServiceKey::default(),
                uid: None,
                ports,
                traffic_policy: if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                },
                selector: app
                    .map(|a| [("app".to_string(), a.to_string())].into())
                    .unwrap_or_default(),
                sharing_key: sharing.map(str::to_string),
                requested_ips,
                pool: pool.map(|i| format!("pool{i}")), // pool3 may not exist
                class: class.map(str::to_string),
                ip_families,
                ip_family_policy,
                current_ips,
                announcing: None,
                labels: if tier.is_empty() {
                    Selector::default()
                } else {
                    [("tier".to_string(), tier.to_string())].into()
                },
                spec_error: spec_error.then(|| "garbage annotation".to_string()),
            },
        )
}

fn services_strategy() -> impl Strategy<Value = Vec<Service>> {
    prop::collection::vec(spec_strategy(), 0..14).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s.key = key_of(i);
                s
            })
            .collect()
    })
}

fn key_of(i: usize) -> ServiceKey {
    ServiceKey::new(NAMESPACES[i % 3], format!("s{i:02}"))
}

/// An allocator over `pools` that knows the namespaces' labels.
fn allocator(pools: &[Pool], teams: &[&str; 3]) -> Allocator {
    let mut a = Allocator::new(pools.to_vec(), None);
    for (ns, team) in NAMESPACES.iter().zip(teams) {
        a.set_namespace(ns, Some(team_labels(team)));
    }
    a
}

#[derive(Clone, Debug)]
enum Op {
    /// Replace Service i's spec (keeping its status) and update it.
    Update(usize, Box<Service>),
    Release(usize),
    Sync,
    SetPools(Vec<Pool>),
    /// Namespace `NAMESPACES[i]` gets another team label (held IPs stay).
    Relabel(usize, &'static str),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..14, spec_strategy()).prop_map(|(i, s)| Op::Update(i, Box::new(s))),
        2 => (0usize..14).prop_map(Op::Release),
        1 => Just(Op::Sync),
        1 => pools_strategy().prop_map(Op::SetPools),
        1 => (0usize..3, prop::sample::select(vec!["a", "b", ""])).prop_map(|(i, t)| Op::Relabel(i, t)),
    ]
}

fn is_buggy(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v) if matches!(v.octets()[3], 0 | 255))
}

/// The status writer: applies outcomes to the Services' `current_ips`.
fn write_back(world: &mut BTreeMap<ServiceKey, Service>, outcomes: &[Outcome]) {
    for o in outcomes {
        if let Some(s) = world.get_mut(&o.service) {
            match &o.change {
                Change::Allocated { ips, .. } => s.current_ips = ips.clone(),
                Change::Cleared { .. } => s.current_ips.clear(),
                _ => {}
            }
        }
    }
}

/// Checks every invariant of `a` against the specs in `world` and the `pools`.
fn check_invariants(
    a: &Allocator,
    world: &BTreeMap<ServiceKey, Service>,
    pools: &[Pool],
) -> Result<(), TestCaseError> {
    let mut port_owner: BTreeMap<(IpAddr, ServicePort), &ServiceKey> = BTreeMap::new();
    let mut users: BTreeMap<IpAddr, Vec<&Service>> = BTreeMap::new();
    for (key, asg) in a.assignments() {
        let svc = world.get(key);
        prop_assert!(svc.is_some(), "{key} is assigned but unknown");
        let svc = svc.expect("checked");
        prop_assert!(svc.class.is_none(), "{key} of another class holds IPs");
        prop_assert!(
            !asg.ips.is_empty() && asg.ips.len() <= 2,
            "{key}: {:?}",
            asg.ips
        );
        if let [x, y] = asg.ips[..] {
            prop_assert_ne!(IpFamily::of(&x), IpFamily::of(&y), "{}", key);
        }
        let pool = pools.iter().find(|p| p.name == asg.pool);
        prop_assert!(
            pool.is_some(),
            "{key} accounted to unknown pool {}",
            asg.pool
        );
        let pool = pool.expect("checked");
        for ip in &asg.ips {
            prop_assert!(pool.contains(ip), "{key}: {ip} not in {}", pool.name);
            prop_assert!(
                !(pool.avoid_buggy_ips && is_buggy(ip)),
                "{key}: avoided {ip} in {}",
                pool.name
            );
            for port in &svc.ports {
                if let Some(other) = port_owner.insert((*ip, *port), key) {
                    prop_assert_eq!(other, key, "{:?} on {} used twice", port, ip);
                }
            }
            users.entry(*ip).or_default().push(svc);
        }
        if svc.spec_error.is_none() {
            if !svc.requested_ips.is_empty() {
                let want: BTreeSet<_> = svc.requested_ips.iter().collect();
                let got: BTreeSet<_> = asg.ips.iter().collect();
                prop_assert_eq!(want, got, "{} ignores its requested IPs", key);
            }
            if let Some(p) = &svc.pool {
                prop_assert_eq!(p, &asg.pool, "{} ignores its address-pool", key);
            }
        }
    }
    for (ip, on) in &users {
        let mut listed: Vec<&ServiceKey> = on.iter().map(|s| &s.key).collect();
        listed.sort();
        listed.dedup();
        prop_assert_eq!(a.services_on(*ip), listed);
        if on.len() > 1 {
            let first = on[0];
            for s in &on[1..] {
                prop_assert!(
                    first.sharing_key.is_some() && s.sharing_key == first.sharing_key,
                    "{} and {} share {} without a common sharing key",
                    first.key,
                    s.key,
                    ip
                );
                prop_assert_eq!(s.traffic_policy, first.traffic_policy);
                if s.traffic_policy == TrafficPolicy::Local {
                    prop_assert_eq!(&s.selector, &first.selector);
                }
            }
        }
    }
    for st in a.pool_stats() {
        prop_assert!((st.used as u128) <= st.total, "{st:?}");
    }
    Ok(())
}

fn world_of(services: &[Service]) -> BTreeMap<ServiceKey, Service> {
    services
        .iter()
        .map(|s| (s.key.clone(), s.clone()))
        .collect()
}

/// Rebuilds a new allocator from the written-back world and checks nothing moves.
fn check_rebuild(
    a: &Allocator,
    world: &BTreeMap<ServiceKey, Service>,
    pools: &[Pool],
    teams: &[&str; 3],
) -> Result<(), TestCaseError> {
    let services: Vec<Service> = world.values().cloned().collect();
    let mut fresh = allocator(pools, teams);
    let out = fresh.sync(&services);
    for o in &out {
        prop_assert!(
            !matches!(o.change, Change::Allocated { .. } | Change::Cleared { .. }),
            "rebuild moved {o:?}"
        );
    }
    let before: Vec<_> = a.assignments().collect();
    let after: Vec<_> = fresh.assignments().collect();
    prop_assert_eq!(before, after);
    Ok(())
}

// ---- the reference of the pool ordering rules (docs/configure.md) ----

/// Whether `pool` may give `svc` a fresh address: the rule written plainly.
fn ref_compatible(pool: &Pool, svc: &Service, teams: &[&str; 3]) -> bool {
    let sa = &pool.service_allocation;
    let ns = svc.key.namespace.as_str();
    let team = NAMESPACES
        .iter()
        .position(|n| *n == ns)
        .map_or("", |i| teams[i]);
    let ns_labels: BTreeMap<String, String> = team_labels(team)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let svc_labels: BTreeMap<String, String> = svc
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns_ok = (sa.namespaces.is_empty() && sa.namespace_selectors.is_empty())
        || sa.namespaces.iter().any(|n| n == ns)
        || sa.namespace_selectors.iter().any(|s| s.matches(&ns_labels));
    let svc_ok = sa.service_selectors.is_empty()
        || sa.service_selectors.iter().any(|s| s.matches(&svc_labels));
    ns_ok && svc_ok
}

/// The pools auto allocation tries for `svc`, in order: for each priority 1, 2, … and then
/// 0 (none), the auto-assign pools pinned to `svc` with that priority in config order; then
/// the auto-assign pools without any serviceAllocation, in config order.
fn ref_auto_order<'a>(pools: &'a [Pool], svc: &Service, teams: &[&str; 3]) -> Vec<&'a Pool> {
    let pinned = |p: &&Pool| {
        let sa = &p.service_allocation;
        p.auto_assign
            && (!sa.namespaces.is_empty()
                || !sa.namespace_selectors.is_empty()
                || !sa.service_selectors.is_empty())
            && ref_compatible(p, svc, teams)
    };
    let mut priorities: Vec<u32> = pools
        .iter()
        .filter(pinned)
        .map(|p| p.service_allocation.priority)
        .filter(|p| *p > 0)
        .collect();
    priorities.sort();
    priorities.dedup();
    priorities.push(0);
    let mut order: Vec<&Pool> = Vec::new();
    for prio in priorities {
        order.extend(
            pools
                .iter()
                .filter(pinned)
                .filter(|p| p.service_allocation.priority == prio),
        );
    }
    order.extend(
        pools
            .iter()
            .filter(|p| p.auto_assign && p.service_allocation == ServiceAllocation::default()),
    );
    order
}

/// Every fresh allocation (an `Assigned IP` event) is from a pool compatible with its Service.
fn check_fresh_compatible(
    a: &Allocator,
    world: &BTreeMap<ServiceKey, Service>,
    out: &[Outcome],
    pools: &[Pool],
    teams: &[&str; 3],
) -> Result<(), TestCaseError> {
    for o in out {
        if !o
            .events
            .iter()
            .any(|e| e.message.starts_with("Assigned IP "))
        {
            continue;
        }
        let asg = a.assignment(&o.service);
        prop_assert!(asg.is_some(), "{o:?}");
        let pool = pools.iter().find(|p| p.name == asg.expect("checked").pool);
        prop_assert!(pool.is_some());
        prop_assert!(
            ref_compatible(pool.expect("checked"), &world[&o.service], teams),
            "{} got an address of incompatible pool {:?}",
            o.service,
            pool
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn sync_upholds_invariants_and_is_a_fixed_point(
        pools in pools_strategy(),
        services in services_strategy(),
        teams in teams_strategy(),
    ) {
        let mut a = allocator(&pools, &teams);
        let out = a.sync(&services);
        prop_assert_eq!(out.len(), services.len());
        let mut world = world_of(&services);
        check_invariants(&a, &world, &pools)?;
        check_fresh_compatible(&a, &world, &out, &pools, &teams)?;
        write_back(&mut world, &out);
        check_rebuild(&a, &world, &pools, &teams)?;
        // And the same allocator, synced again, changes nothing either.
        let again: Vec<Service> = world.values().cloned().collect();
        for o in a.sync(&again) {
            prop_assert!(
                !matches!(o.change, Change::Allocated { .. } | Change::Cleared { .. }),
                "resync moved {o:?}"
            );
        }
    }

    #[test]
    fn same_input_gives_the_same_result(
        pools in pools_strategy(),
        services in services_strategy(),
        teams in teams_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..20),
    ) {
        let run = || {
            let mut teams = teams;
            let mut a = allocator(&pools, &teams);
            let mut world = world_of(&services);
            let mut log = vec![a.sync(&services)];
            write_back(&mut world, &log[0]);
            for op in &ops {
                let out = apply(&mut a, &mut world, &mut teams, op);
                write_back(&mut world, &out);
                log.push(out);
            }
            let asg: Vec<_> = a.assignments().map(|(k, v)| (k.clone(), v.clone())).collect();
            (log, asg, a.pool_stats())
        };
        prop_assert_eq!(run(), run());
    }

    #[test]
    fn every_step_of_a_random_history_upholds_invariants(
        pools in pools_strategy(),
        services in services_strategy(),
        teams in teams_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..30),
    ) {
        let (mut pools, mut teams) = (pools, teams);
        let mut a = allocator(&pools, &teams);
        let mut world = world_of(&services);
        let out = a.sync(&services);
        check_fresh_compatible(&a, &world, &out, &pools, &teams)?;
        write_back(&mut world, &out);
        check_invariants(&a, &world, &pools)?;
        for op in &ops {
            if let Op::SetPools(p) = op {
                pools = p.clone();
            }
            let out = apply(&mut a, &mut world, &mut teams, op);
            if let (Op::Update(..), [o]) = (op, &out[..]) {
                check_auto_order(&a, &world[&o.service], o, &pools, &teams)?;
            }
            check_fresh_compatible(&a, &world, &out, &pools, &teams)?;
            // One outcome per Service touched.
            let keys: BTreeSet<_> = out.iter().map(|o| &o.service).collect();
            prop_assert_eq!(keys.len(), out.len());
            write_back(&mut world, &out);
            check_invariants(&a, &world, &pools)?;
        }
        // Stability: with statuses written back, a rebuild from scratch keeps every IP,
        // once the history is settled by one sync (the history may leave services waiting
        // for IPs that a release freed, or for a namespace relabel).
        let services: Vec<Service> = world.values().cloned().collect();
        let out = a.sync(&services);
        write_back(&mut world, &out);
        check_rebuild(&a, &world, &pools, &teams)?;
    }
}

/// The equivalence of docs/configure.md, for a plain Service (no requested IP, no pool, no
/// sharing, single stack) that was just allocated afresh or failed: it holds exactly the
/// first address MetalLB's brute-force scan finds over [`ref_auto_order`] — pools in that
/// order, ranges in config order, addresses ascending, the first one nobody else uses — and
/// nothing if there is none.
fn check_auto_order(
    a: &Allocator,
    svc: &Service,
    o: &Outcome,
    pools: &[Pool],
    teams: &[&str; 3],
) -> Result<(), TestCaseError> {
    let plain = svc.class.is_none()
        && svc.spec_error.is_none()
        && svc.requested_ips.is_empty()
        && svc.pool.is_none()
        && svc.sharing_key.is_none()
        && svc.ip_family_policy == IpFamilyPolicy::SingleStack;
    let fresh = o
        .events
        .iter()
        .any(|e| e.message.starts_with("Assigned IP "))
        || matches!(o.change, Change::Failed { .. } | Change::Cleared { .. });
    if !plain || !fresh {
        return Ok(());
    }
    let family = svc.ip_families.first().copied().unwrap_or(IpFamily::V4);
    let mut expected = None;
    'pools: for p in ref_auto_order(pools, svc, teams) {
        for r in p.ranges.iter().filter(|r| r.family() == family) {
            let (lo, hi) = (
                lb::model::ip_to_u128(&r.first),
                lb::model::ip_to_u128(&r.last),
            );
            for n in lo..=hi {
                let ip = match family {
                    IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
                    IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
                };
                if p.avoid_buggy_ips && is_buggy(&ip) {
                    continue;
                }
                if a.services_on(ip).iter().all(|k| **k == svc.key) {
                    expected = Some((vec![ip], p.name.clone()));
                    break 'pools;
                }
            }
        }
    }
    let got = a
        .assignment(&svc.key)
        .map(|x| (x.ips.clone(), x.pool.clone()));
    prop_assert_eq!(got, expected, "{:?}", o);
    Ok(())
}

fn apply(
    a: &mut Allocator,
    world: &mut BTreeMap<ServiceKey, Service>,
    teams: &mut [&'static str; 3],
    op: &Op,
) -> Vec<Outcome> {
    match op {
        Op::Update(i, spec) => {
            let key = key_of(*i);
            let mut s = Service::clone(spec);
            s.current_ips = world
                .get(&key)
                .map(|old| old.current_ips.clone())
                .unwrap_or_default();
            s.key = key.clone();
            world.insert(key, s.clone());
            vec![a.update(&s)]
        }
        Op::Release(i) => {
            let key = key_of(*i);
            world.remove(&key);
            a.release(&key).into_iter().collect()
        }
        Op::Sync => {
            let services: Vec<Service> = world.values().cloned().collect();
            a.sync(&services)
        }
        Op::SetPools(p) => {
            let services: Vec<Service> = world.values().cloned().collect();
            a.set_pools(p.clone(), &services)
        }
        Op::Relabel(i, team) => {
            teams[*i] = team;
            a.set_namespace(NAMESPACES[*i], Some(team_labels(team)));
            Vec::new()
        }
    }
}
