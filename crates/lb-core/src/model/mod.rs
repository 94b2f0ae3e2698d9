//! Domain types shared by the cores: what a Service asks for, what a pool offers, what a node
//! is. The Kubernetes watcher and `lb.toml` both translate into these; the allocator,
//! raft-lite placement and the announcers only ever see these.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub mod iface;
pub mod kube;
mod pools;

pub use pools::Pools;

/// Namespace under which `[[service]]` tables of lb.toml appear (`lb.toml/<name>`). Not a
/// valid Kubernetes namespace (a DNS-1123 label has no dot), so no Kubernetes Service can
/// share a key with a static one and take its address: with `static`, a Service `web` in a
/// namespace called `static` could.
pub const STATIC_NAMESPACE: &str = "lb.toml";

/// `namespace/name` of a Service (or `lb.toml/<name>` for a `[[service]]` from lb.toml).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A Service's `spec.selector`: label pairs sorted by key. A sorted vector rather than a
/// map: a one-entry `BTreeMap` allocates a whole B-tree node (over 500 bytes), and 10,000
/// Services each carry one.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector(Vec<(String, String)>);

impl Selector {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl FromIterator<(String, String)> for Selector {
    /// Sorted by key; a repeated key keeps its last value (as in a map).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter.into_iter().collect();
        Selector(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Selector {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Selector {
    fn from(map: BTreeMap<String, String>) -> Self {
        Selector(map.into_iter().collect())
    }
}

/// A `type: LoadBalancer` Service as the allocator and announcers see it. Built from the
/// Kubernetes object (annotations read under both `metallb.universe.tf/` and `metallb.io/`)
/// or from a `[[service]]` table of lb.toml.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    /// `metadata.uid` (none for static services): Events name their Service by it.
    pub uid: Option<String>,
    pub ports: Vec<ServicePort>,
    pub traffic_policy: TrafficPolicy,
    /// `spec.selector`; `Local` services share an IP only with identical selectors.
    pub selector: Selector,
    /// `allow-shared-ip` annotation; `None` when absent or empty.
    pub sharing_key: Option<String>,
    /// `spec.loadBalancerIP` and the `loadBalancerIPs` annotation (at most one per family).
    pub requested_ips: Vec<IpAddr>,
    /// `address-pool` annotation.
    pub pool: Option<String>,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `spec.ipFamilies`, in order; empty means "as the cluster defaults" (IPv4).
    pub ip_families: Vec<IpFamily>,
    pub ip_family_policy: IpFamilyPolicy,
    /// `status.loadBalancer.ingress[].ip`: what an earlier allocation wrote.
    pub current_ips: Vec<IpAddr>,
    /// The `lb.org/announcing` annotation: who the leader last said announces it (read back
    /// so that a new leader neither rewrites it nor repeats its Events).
    pub announcing: Option<String>,
    /// `metadata.labels`: what a pool's `service_selectors` match.
    pub labels: Selector,
    /// Set when the object could not be understood (a garbage annotation, an unparsable
    /// IP): the allocator answers `AllocationFailed` with this reason instead of guessing.
    pub spec_error: Option<String>,
}

/// An inclusive range of addresses of one family (`10.0.0.0/24` becomes `.0`–`.255`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl IpRange {
    /// Both ends must be of the same family and `first <= last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        (IpFamily::of(&first) == IpFamily::of(&last) && first <= last)
            .then_some(Self { first, last })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.first)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self.family() && self.first <= *ip && *ip <= self.last
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family() == other.family() && self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        ip_to_u128(&self.last)
            .saturating_sub(ip_to_u128(&self.first))
            .saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

pub fn ip_to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(*v4) as u128,
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolProtocol {
    Layer2,
    Bgp,
    /// Allocate-only (`protocol = "none"`, MetalLB's IPAddressPool without an
    /// advertisement): IPs go into Service status but no host announces them; the site
    /// routes them by other means (static routes, another speaker).
    None,
}

impl PoolProtocol {
    /// Whether lbd announces this pool's IPs at all (ARP/NDP or BGP).
    pub fn announced(self) -> bool {
        self != PoolProtocol::None
    }
}

impl fmt::Display for PoolProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolProtocol::Layer2 => "layer2",
            PoolProtocol::Bgp => "bgp",
            PoolProtocol::None => "none",
        })
    }
}

/// Kubernetes label selector (`matchLabels` and `matchExpressions`), as on MetalLB's
/// advertisements and peers. An empty selector matches every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelExpression>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelExpression {
    pub key: String,
    pub operator: LabelOperator,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// The same selector matches Namespaces and Services (a pool's `namespace_selectors` and
/// `service_selectors`): the name says what it is, not what it selects.
pub type LabelSelector = NodeSelector;

impl NodeSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Matches labels looked up by `get` (a map, or a [`Selector`]'s sorted pairs).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| {
                let value = get(&e.key);
                match e.operator {
                    LabelOperator::In => value.is_some_and(|v| e.values.iter().any(|x| x == v)),
                    LabelOperator::NotIn => !value.is_some_and(|v| e.values.iter().any(|x| x == v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A node matches a list of selectors when the list is empty or any selector matches.
pub fn selectors_match(selectors: &[NodeSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

/// RFC 1997 community, `asn:value` (well-known ones such as `no-export` resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl Community {
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    pub const NO_PEER: Community = Community(0xFFFF_FF04);
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// RFC 8092 large community, `global:local1:local2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

/// How a BGP pool's addresses are advertised (MetalLB's `bgp-advertisements`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvertisement {
    /// Prefix length advertised for IPv4 addresses (32 = each IP on its own).
    pub aggregation_length_v4: u8,
    /// Prefix length advertised for IPv6 addresses (128 = each IP on its own).
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF, sent to iBGP peers only.
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Only these nodes advertise (empty: all).
    pub node_selectors: Vec<NodeSelector>,
    /// Only to these peers, by address (empty: all).
    pub peers: Vec<IpAddr>,
}

impl Default for BgpAdvertisement {
    fn default() -> Self {
        Self {
            aggregation_length_v4: 32,
            aggregation_length_v6: 128,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            node_selectors: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// An address pool, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub protocol: PoolProtocol,
    pub ranges: Vec<IpRange>,
    /// Services get addresses from this pool without asking for it by name.
    pub auto_assign: bool,
    /// Skip addresses ending in `.0` and `.255` (IPv4 only).
    pub avoid_buggy_ips: bool,
    /// layer2: the interfaces to announce on; empty means the up interface whose subnet
    /// holds the IP.
    pub interfaces: Vec<String>,
    /// Only these nodes announce this pool's IPs (empty: all).
    pub node_selectors: Vec<NodeSelector>,
    /// bgp: how to advertise; empty means one default advertisement.
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// Which Services the pool is for (MetalLB's `serviceAllocation`); the default (nothing
    /// set) is a pool for every Service.
    pub service_allocation: ServiceAllocation,
}

/// MetalLB's `IPAddressPool.spec.serviceAllocation`: which Services a pool is for, and in
/// which order a Service tries the pools pinned to it. The rules are in
/// [`crate::alloc`]'s documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower is tried first; 0 is "no priority" (after every pool with one).
    pub priority: u32,
    pub namespaces: Vec<String>,
    /// Matched against the labels of the Service's Namespace.
    pub namespace_selectors: Vec<LabelSelector>,
    /// Matched against the Service's own labels.
    pub service_selectors: Vec<LabelSelector>,
}

impl ServiceAllocation {
    /// Anything set: the pool is then never an "any Service" pool (MetalLB's
    /// `ServiceAllocations != nil`).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// The pool restricts namespaces (by name or by labels).
    pub fn restricts_namespaces(&self) -> bool {
        !self.namespaces.is_empty() || !self.namespace_selectors.is_empty()
    }
}

impl Pool {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// A Kubernetes Node as the announcers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Carries `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub excluded_from_load_balancers: bool,
    /// Condition `NetworkUnavailable` is `True`.
    pub network_unavailable: bool,
}

/// Where a Service's ready endpoints are: node name → number of ready (or serving)
/// endpoints on it, from the EndpointSlices.
pub type EndpointsByNode = BTreeMap<String, usize>;

/// A `[[service]]`: announced without Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticService {
    pub name: String,
    /// The pool it draws from: as written, or the pool holding `ip`.
    pub pool: String,
    /// `None`: the allocator picks the lowest free address of `pool`.
    pub ip: Option<IpAddr>,
    /// Put the IP on `lo` (hosts without kube-proxy).
    pub assign: bool,
    pub ports: Vec<ServicePort>,
}
