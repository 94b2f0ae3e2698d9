//! What this node advertises to each BGP peer (pure), with MetalLB's semantics.
//!
//! Inputs: the announced IPs (what the controller decided must be announced, with the
//! Service traffic policy and where ready endpoints are), the pools, the peers, and this
//! node. Output: per peer, a [`RouteSet`] (prefix → attributes). The next hop is not part
//! of it: it is the session's local address, known only once the session is up
//! ([`to_advertisements`] fills it in).
//!
//! Rules, for one announced IP, one advertisement of its pool and one peer:
//! - the node must be eligible (a member, not excluded from load balancers, network
//!   available) and match the peer's, the pool's and the advertisement's `node_selectors`;
//! - the advertisement's `peers` list must be empty or name the peer;
//! - `Cluster` (`local_only == false`): advertised while at least one ready endpoint exists
//!   on any node; `Local`: only when this node has a ready endpoint;
//! - the prefix is the IP truncated to the advertisement's aggregation length, so IPs of one
//!   aggregate share one route, withdrawn only when none of them remains;
//! - only prefixes of the peer's address family are sent to it (an IPv4 session has no
//!   IPv6 next hop to offer, RFC 8950 is not implemented);
//! - when several advertisements yield the same prefix for one peer, their communities and
//!   large communities are merged and the highest LOCAL_PREF wins. LOCAL_PREF is kept for
//!   iBGP peers only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::build::{Advertisement, aggregate};
use crate::model::{
    BgpAdvertisement, Community, EndpointsByNode, LargeCommunity, NodeSelector, Pool, PoolProtocol,
    Pools, selectors_match,
};

/// One IP that must be announced, and why (the fields of the controller's `Announcement`
/// that the BGP advertiser needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncedIp {
    pub ip: IpAddr,
    /// Name of the pool the IP comes from.
    pub pool: String,
    /// Every Service of the IP has `externalTrafficPolicy: Local`.
    pub local_only: bool,
    /// Ready endpoints per node.
    pub endpoints: EndpointsByNode,
    /// A static service (lb.toml `[[service]]`): no endpoints to wait for.
    pub always_ready: bool,
}

/// This node as the advertiser sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// May announce at all: a member (not a witness), not excluded from external load
    /// balancers, network available.
    pub eligible: bool,
}

/// A BGP peer as the advertiser sees it (from a `[[bgp_peer]]`: only what decides routes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    pub address: IpAddr,
    /// iBGP (same AS both ends): LOCAL_PREF is sent.
    pub ibgp: bool,
    /// Only nodes matching these peer with it (empty: all).
    pub node_selectors: Vec<NodeSelector>,
}

/// Attributes of one advertised prefix (the next hop is the session's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    /// Sent to iBGP peers only (`None`: the default, 100).
    pub local_pref: Option<u32>,
    /// Sorted, without duplicates.
    pub communities: Vec<Community>,
    /// Sorted, without duplicates.
    pub large_communities: Vec<LargeCommunity>,
}

/// The routes for one peer.
pub type RouteSet = BTreeMap<IpNet, RouteAttrs>;

/// What to send to move a peer from one route set to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// New prefixes and prefixes whose attributes changed (an UPDATE replaces the route).
    pub announce: RouteSet,
    pub withdraw: Vec<IpNet>,
}

impl RouteDiff {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// The default advertisement (aggregation /32 and /128, no attributes) used by pools that
/// configure none.
fn pool_advertisements(pool: &Pool) -> &[BgpAdvertisement] {
    static DEFAULT: std::sync::LazyLock<[BgpAdvertisement; 1]> =
        std::sync::LazyLock::new(|| [BgpAdvertisement::default()]);
    if pool.bgp_advertisements.is_empty() {
        &*DEFAULT
    } else {
        &pool.bgp_advertisements
    }
}

/// Whether the node takes part in sessions with `peer` at all (peer `node_selectors`).
pub fn node_peers_with(node: &LocalNode, peer: &PeerPolicy) -> bool {
    selectors_match(&peer.node_selectors, &node.labels)
}

/// Whether this node should announce `ann` at all, by traffic policy and endpoints.
pub fn endpoints_allow(node: &LocalNode, ann: &AnnouncedIp) -> bool {
    if ann.always_ready {
        true
    } else if ann.local_only {
        ann.endpoints.get(&node.name).is_some_and(|n| *n > 0)
    } else {
        ann.endpoints.values().any(|n| *n > 0)
    }
}

fn node_matches(node: &LocalNode, selectors: &[NodeSelector]) -> bool {
    selectors_match(selectors, &node.labels)
}

/// The routes to advertise to `peer`.
pub fn routes_for_peer<'a>(
    node: &LocalNode,
    peer: &PeerPolicy,
    pools: &Pools,
    announced: impl IntoIterator<Item = &'a AnnouncedIp>,
) -> RouteSet {
    let mut out = RouteSet::new();
    for ann in announced {
        for (prefix, adv) in contributions(node, peer, pools, ann) {
            add(out.entry(prefix).or_default(), peer, adv);
        }
    }
    out
}

/// The route for `prefix` to `peer` given every announced IP (keyed by IP); `None`: the
/// prefix is not advertised. Looks only at the IPs inside `prefix`, so a change of one IP
/// costs the IPs of its aggregate, not all of them.
pub fn route_for_prefix(
    node: &LocalNode,
    peer: &PeerPolicy,
    pools: &Pools,
    announced: &BTreeMap<IpAddr, AnnouncedIp>,
    prefix: IpNet,
) -> Option<RouteAttrs> {
    let mut attrs: Option<RouteAttrs> = None;
    for ann in announced
        .range(prefix.network()..=prefix.broadcast())
        .map(|(_, a)| a)
    {
        for (p, adv) in contributions(node, peer, pools, ann) {
            if p == prefix {
                add(attrs.get_or_insert_with(RouteAttrs::default), peer, adv);
            }
        }
    }
    attrs
}

/// Whether `node` advertises a route for `ann` to any of `peers` (who announces a Service).
pub fn advertised_by(
    node: &LocalNode,
    peers: &[PeerPolicy],
    pools: &Pools,
    ann: &AnnouncedIp,
) -> bool {
    peers
        .iter()
        .any(|p| !contributions(node, p, pools, ann).is_empty())
}

/// The prefixes `ann` could contribute to for `peer` (a superset is harmless: each is
/// recomputed with [`route_for_prefix`]).
pub fn prefixes_of(ann: &AnnouncedIp, pools: &Pools) -> Vec<IpNet> {
    let Some(pool) = pools.get(&ann.pool) else {
        return Vec::new();
    };
    let mut out: Vec<IpNet> = pool_advertisements(pool)
        .iter()
        .filter_map(|adv| {
            let len = if ann.ip.is_ipv6() {
                adv.aggregation_length_v6
            } else {
                adv.aggregation_length_v4
            };
            aggregate(ann.ip, len)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// What one announced IP adds to `peer`'s routes: per advertisement that applies, the
/// prefix and the advertisement.
fn contributions<'a>(
    node: &LocalNode,
    peer: &PeerPolicy,
    pools: &'a Pools,
    ann: &AnnouncedIp,
) -> Vec<(IpNet, &'a BgpAdvertisement)> {
    let mut out = Vec::new();
    if !node.eligible || !node_peers_with(node, peer) {
        return out;
    }
    if ann.ip.is_ipv6() != peer.address.is_ipv6() || !endpoints_allow(node, ann) {
        return out;
    }
    let Some(pool) = pools.get(&ann.pool) else {
        return out;
    };
    if pool.protocol != PoolProtocol::Bgp || !node_matches(node, &pool.node_selectors) {
        return out;
    }
    for adv in pool_advertisements(pool) {
        if !node_matches(node, &adv.node_selectors)
            || !(adv.peers.is_empty() || adv.peers.contains(&peer.address))
        {
            continue;
        }
        let len = if ann.ip.is_ipv6() {
            adv.aggregation_length_v6
        } else {
            adv.aggregation_length_v4
        };
        if let Some(prefix) = aggregate(ann.ip, len) {
            out.push((prefix, adv));
        }
    }
    out
}

/// Merges one advertisement into a prefix's attributes: communities and large communities
/// united, the highest LOCAL_PREF (iBGP only).
fn add(attrs: &mut RouteAttrs, peer: &PeerPolicy, adv: &BgpAdvertisement) {
    if peer.ibgp {
        attrs.local_pref = attrs.local_pref.max(adv.local_pref);
    }
    attrs.communities = merge(&attrs.communities, &adv.communities);
    attrs.large_communities = merge(&attrs.large_communities, &adv.large_communities);
}

fn merge<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter()
        .chain(b)
        .copied()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .collect()
}

/// A change of one announced IP, as the speaker is told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnounceChange {
    Announce(AnnouncedIp),
    Withdraw(IpAddr),
}

impl AnnounceChange {
    pub fn ip(&self) -> IpAddr {
        match self {
            AnnounceChange::Announce(a) => a.ip,
            AnnounceChange::Withdraw(ip) => *ip,
        }
    }
}

/// The route sets of every peer this node has a session with, keyed by peer address.
pub fn routes_per_peer(
    node: &LocalNode,
    peers: &[PeerPolicy],
    pools: &Pools,
    announced: &[AnnouncedIp],
) -> BTreeMap<IpAddr, RouteSet> {
    peers
        .iter()
        .filter(|p| node_peers_with(node, p))
        .map(|p| (p.address, routes_for_peer(node, p, pools, announced)))
        .collect()
}

/// What to announce and withdraw to go from `old` to `new`.
pub fn diff(old: &RouteSet, new: &RouteSet) -> RouteDiff {
    RouteDiff {
        announce: new
            .iter()
            .filter(|(p, a)| old.get(p) != Some(a))
            .map(|(p, a)| (*p, a.clone()))
            .collect(),
        withdraw: old
            .keys()
            .filter(|p| !new.contains_key(p))
            .copied()
            .collect(),
    }
}

/// The builder's input for `routes`, with the session's local address as next hop. Routes of
/// the other family than `local` are left out.
pub fn to_advertisements(routes: &RouteSet, local: IpAddr) -> Vec<Advertisement> {
    routes
        .iter()
        .filter(|(p, _)| p.addr().is_ipv6() == local.is_ipv6())
        .map(|(p, a)| Advertisement {
            prefix: *p,
            next_hop: local,
            local_pref: a.local_pref,
            communities: a.communities.clone(),
            large_communities: a.large_communities.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{IpRange, LabelExpression, LabelOperator};

    fn peer(addr: &str, my_asn: u32, peer_asn: u32) -> PeerPolicy {
        PeerPolicy {
            address: addr.parse().unwrap(),
            ibgp: my_asn == peer_asn,
            node_selectors: Vec::new(),
        }
    }

    fn pool(name: &str, cidr_first: &str, cidr_last: &str, advs: Vec<BgpAdvertisement>) -> Pool {
        Pool {
            name: name.into(),
            protocol: PoolProtocol::Bgp,
            ranges: vec![
                IpRange::new(cidr_first.parse().unwrap(), cidr_last.parse().unwrap()).unwrap(),
            ],
            auto_assign: true,
            avoid_buggy_ips: false,
            interfaces: vec![],
            node_selectors: vec![],
            bgp_advertisements: advs,
            service_allocation: Default::default(),
        }
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> LocalNode {
        LocalNode {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            eligible: true,
        }
    }

    fn ann(ip: &str, local_only: bool, eps: &[(&str, usize)]) -> AnnouncedIp {
        AnnouncedIp {
            ip: ip.parse().unwrap(),
            pool: "p".into(),
            local_only,
            endpoints: eps.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            always_ready: false,
        }
    }

    #[test]
    fn static_service_ip_is_advertised_without_endpoints() {
        let mut a = ann("172.19.100.7", false, &[]);
        assert!(!endpoints_allow(&node("n1", &[]), &a));
        a.always_ready = true;
        assert!(endpoints_allow(&node("n1", &[]), &a));
    }

    fn sel(k: &str, v: &str) -> NodeSelector {
        NodeSelector {
            match_labels: [(k.to_string(), v.to_string())].into(),
            match_expressions: vec![],
        }
    }

    fn prefixes(rs: &RouteSet) -> Vec<String> {
        rs.keys().map(|p| p.to_string()).collect()
    }

    fn p4() -> Pool {
        pool("p", "172.19.100.0", "172.19.100.255", vec![])
    }

    #[test]
    fn cluster_service_is_advertised_by_a_node_without_local_endpoints() {
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p4()]),
            &[ann("172.19.100.1", false, &[("n2", 1)])],
        );
        assert_eq!(prefixes(&rs), vec!["172.19.100.1/32"]);
    }

    #[test]
    fn cluster_service_without_any_ready_endpoint_is_not_advertised() {
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p4()]),
            &[
                ann("172.19.100.1", false, &[("n2", 0)]),
                ann("172.19.100.2", false, &[]),
            ],
        );
        assert!(rs.is_empty());
    }

    #[test]
    fn local_service_is_advertised_only_by_nodes_with_a_ready_local_endpoint() {
        let a = [ann("172.19.100.1", true, &[("n2", 2), ("n3", 0)])];
        let pr = peer("10.0.0.1", 64500, 64500);
        for (n, expected) in [("n1", false), ("n2", true), ("n3", false)] {
            let rs = routes_for_peer(&node(n, &[]), &pr, &Pools::from(vec![p4()]), &a);
            assert_eq!(!rs.is_empty(), expected, "node {n}");
        }
    }

    #[test]
    fn ineligible_node_advertises_nothing() {
        let mut n = node("n1", &[]);
        n.eligible = false;
        let rs = routes_for_peer(
            &n,
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p4()]),
            &[ann("172.19.100.1", false, &[("n1", 1)])],
        );
        assert!(rs.is_empty());
    }

    #[test]
    fn layer2_pool_ips_are_not_advertised() {
        let mut p = p4();
        p.protocol = PoolProtocol::Layer2;
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p]),
            &[ann("172.19.100.1", false, &[("n1", 1)])],
        );
        assert!(rs.is_empty());
    }

    #[test]
    fn unknown_pool_is_not_advertised() {
        let mut a = ann("172.19.100.1", false, &[("n1", 1)]);
        a.pool = "gone".into();
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p4()]),
            &[a],
        );
        assert!(rs.is_empty());
    }

    #[test]
    fn pool_node_selectors_limit_the_advertising_nodes() {
        let mut p = p4();
        p.node_selectors = vec![sel("rack", "a")];
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let pr = peer("10.0.0.1", 64500, 64500);
        assert!(
            !routes_for_peer(
                &node("n1", &[("rack", "a")]),
                &pr,
                &Pools::from(vec![p.clone()]),
                &a
            )
            .is_empty()
        );
        assert!(
            routes_for_peer(
                &node("n1", &[("rack", "b")]),
                &pr,
                &Pools::from(vec![p]),
                &a
            )
            .is_empty()
        );
    }

    #[test]
    fn advertisement_node_selectors_limit_the_advertising_nodes() {
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![BgpAdvertisement {
                node_selectors: vec![NodeSelector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![LabelExpression {
                        key: "bgp".into(),
                        operator: LabelOperator::Exists,
                        values: vec![],
                    }],
                }],
                ..Default::default()
            }],
        );
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let pr = peer("10.0.0.1", 64500, 64500);
        assert!(
            !routes_for_peer(
                &node("n1", &[("bgp", "")]),
                &pr,
                &Pools::from(vec![p.clone()]),
                &a
            )
            .is_empty()
        );
        assert!(routes_for_peer(&node("n1", &[]), &pr, &Pools::from(vec![p]), &a).is_empty());
    }

    #[test]
    fn advertisement_peers_limit_which_peers_get_the_route() {
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![BgpAdvertisement {
                peers: vec!["10.0.0.2".parse().unwrap()],
                ..Default::default()
            }],
        );
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let n = node("n1", &[]);
        let peers = [
            peer("10.0.0.1", 64500, 64500),
            peer("10.0.0.2", 64500, 64500),
        ];
        let per = routes_per_peer(&n, &peers, &Pools::from(vec![p]), &a);
        assert!(per[&"10.0.0.1".parse::<IpAddr>().unwrap()].is_empty());
        assert_eq!(
            prefixes(&per[&"10.0.0.2".parse::<IpAddr>().unwrap()]),
            vec!["172.19.100.1/32"]
        );
    }

    #[test]
    fn peer_node_selectors_exclude_the_session_entirely() {
        let mut pr = peer("10.0.0.1", 64500, 64500);
        pr.node_selectors = vec![sel("rack", "a")];
        let n = node("n1", &[("rack", "b")]);
        assert!(!node_peers_with(&n, &pr));
        assert!(routes_per_peer(&n, &[pr], &Pools::from(vec![p4()]), &[]).is_empty());
    }

    #[test]
    fn aggregation_merges_ips_into_one_prefix() {
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![BgpAdvertisement {
                aggregation_length_v4: 24,
                ..Default::default()
            }],
        );
        let a = [
            ann("172.19.100.1", false, &[("n1", 1)]),
            ann("172.19.100.7", false, &[("n1", 1)]),
        ];
        let pr = peer("10.0.0.1", 64500, 64500);
        let both = routes_for_peer(&node("n1", &[]), &pr, &Pools::from(vec![p.clone()]), &a);
        assert_eq!(prefixes(&both), vec!["172.19.100.0/24"]);
        // One IP left: the aggregate stays; none left: it goes.
        let one = routes_for_peer(
            &node("n1", &[]),
            &pr,
            &Pools::from(vec![p.clone()]),
            &a[..1],
        );
        assert!(diff(&both, &one).is_empty());
        let none = routes_for_peer(&node("n1", &[]), &pr, &Pools::from(vec![p]), &[]);
        assert_eq!(
            diff(&one, &none).withdraw,
            vec!["172.19.100.0/24".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn ipv6_uses_the_v6_aggregation_length_and_only_ipv6_peers() {
        let p = pool(
            "p",
            "fd00:10::",
            "fd00:10::ff",
            vec![BgpAdvertisement {
                aggregation_length_v6: 124,
                ..Default::default()
            }],
        );
        let a = [ann("fd00:10::13", false, &[("n1", 1)])];
        let n = node("n1", &[]);
        let v6 = routes_for_peer(
            &n,
            &peer("fd00::1", 64500, 64500),
            &Pools::from(vec![p.clone()]),
            &a,
        );
        assert_eq!(prefixes(&v6), vec!["fd00:10::10/124"]);
        let v4 = routes_for_peer(
            &n,
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p]),
            &a,
        );
        assert!(v4.is_empty());
    }

    #[test]
    fn local_pref_goes_to_ibgp_peers_only_and_communities_to_all() {
        let lc = LargeCommunity {
            global: 64500,
            local1: 1,
            local2: 2,
        };
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![BgpAdvertisement {
                local_pref: Some(300),
                communities: vec![Community::NO_EXPORT, Community(64500 << 16 | 100)],
                large_communities: vec![lc],
                ..Default::default()
            }],
        );
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let n = node("n1", &[]);
        let ibgp = routes_for_peer(
            &n,
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p.clone()]),
            &a,
        );
        let ebgp = routes_for_peer(
            &n,
            &peer("10.0.0.2", 64500, 64501),
            &Pools::from(vec![p]),
            &a,
        );
        let i = ibgp.values().next().unwrap();
        let e = ebgp.values().next().unwrap();
        assert_eq!(i.local_pref, Some(300));
        assert_eq!(e.local_pref, None);
        for attrs in [i, e] {
            assert_eq!(
                attrs.communities,
                vec![Community(64500 << 16 | 100), Community::NO_EXPORT]
            );
            assert_eq!(attrs.large_communities, vec![lc]);
        }
    }

    #[test]
    fn two_advertisements_of_one_prefix_merge_communities_and_keep_the_highest_local_pref() {
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![
                BgpAdvertisement {
                    local_pref: Some(50),
                    communities: vec![Community(1)],
                    ..Default::default()
                },
                BgpAdvertisement {
                    local_pref: Some(200),
                    communities: vec![Community(2), Community(1)],
                    ..Default::default()
                },
            ],
        );
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p]),
            &a,
        );
        let attrs = rs.values().next().unwrap();
        assert_eq!(attrs.local_pref, Some(200));
        assert_eq!(attrs.communities, vec![Community(1), Community(2)]);
    }

    #[test]
    fn two_advertisements_with_different_lengths_give_two_prefixes() {
        let p = pool(
            "p",
            "172.19.100.0",
            "172.19.100.255",
            vec![
                BgpAdvertisement::default(),
                BgpAdvertisement {
                    aggregation_length_v4: 24,
                    communities: vec![Community::NO_ADVERTISE],
                    ..Default::default()
                },
            ],
        );
        let a = [ann("172.19.100.1", false, &[("n1", 1)])];
        let rs = routes_for_peer(
            &node("n1", &[]),
            &peer("10.0.0.1", 64500, 64500),
            &Pools::from(vec![p]),
            &a,
        );
        assert_eq!(prefixes(&rs), vec!["172.19.100.0/24", "172.19.100.1/32"]);
    }

    #[test]
    fn diff_announces_new_and_changed_and_withdraws_removed() {
        let a: IpNet = "10.1.0.1/32".parse().unwrap();
        let b: IpNet = "10.1.0.2/32".parse().unwrap();
        let c: IpNet = "10.1.0.3/32".parse().unwrap();
        let old: RouteSet = [(a, RouteAttrs::default()), (b, RouteAttrs::default())].into();
        let changed = RouteAttrs {
            local_pref: Some(5),
            ..Default::default()
        };
        let new: RouteSet = [(b, changed.clone()), (c, RouteAttrs::default())].into();
        let d = diff(&old, &new);
        assert_eq!(d.withdraw, vec![a]);
        assert_eq!(
            d.announce,
            [(b, changed), (c, RouteAttrs::default())].into()
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn advertisements_carry_the_session_address_as_next_hop_and_skip_other_families() {
        let rs: RouteSet = [
            ("10.1.0.1/32".parse().unwrap(), RouteAttrs::default()),
            ("fd00::1/128".parse().unwrap(), RouteAttrs::default()),
        ]
        .into();
        let adv = to_advertisements(&rs, "10.0.0.3".parse().unwrap());
        assert_eq!(adv.len(), 1);
        assert_eq!(adv[0].next_hop, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(adv[0].prefix, "10.1.0.1/32".parse::<IpNet>().unwrap());
    }

    proptest::proptest! {
        /// The per-prefix recomputation agrees with the full one, aggregates included.
        #[test]
        fn route_for_prefix_agrees_with_the_full_route_set(
            picks in proptest::collection::vec((0u8..40, proptest::bool::ANY, 0usize..3), 0..30),
            ibgp in proptest::bool::ANY,
        ) {
            let agg = BgpAdvertisement {
                aggregation_length_v4: 24,
                local_pref: Some(200),
                communities: vec![Community(1)],
                ..BgpAdvertisement::default()
            };
            let host = BgpAdvertisement {
                communities: vec![Community(2)],
                ..BgpAdvertisement::default()
            };
            let pools = Pools::new(vec![
                pool("a", "10.0.0.0", "10.0.0.255", vec![agg, host]),
                pool("b", "10.0.1.0", "10.0.1.255", vec![]),
            ]);
            let mut announced = BTreeMap::new();
            for (host, local, eps) in picks {
                let ip: IpAddr = format!("10.0.{}.{}", host % 2, host).parse().unwrap();
                announced.insert(ip, AnnouncedIp {
                    ip,
                    pool: if host % 2 == 0 { "a" } else { "b" }.into(),
                    local_only: local,
                    endpoints: (0..eps).map(|i| (format!("n{i}"), 1)).collect(),
                    always_ready: false,
                });
            }
            let peer = PeerPolicy {
                address: "10.0.9.1".parse().unwrap(),
                ibgp,
                node_selectors: vec![],
            };
            let n = node("n1", &[]);
            let list: Vec<AnnouncedIp> = announced.values().cloned().collect();
            let full = routes_for_peer(&n, &peer, &pools, &list);
            for ann in announced.values() {
                for prefix in prefixes_of(ann, &pools) {
                    proptest::prop_assert_eq!(
                        route_for_prefix(&n, &peer, &pools, &announced, prefix),
                        full.get(&prefix).cloned()
                    );
                }
            }
        }
    }
}
