//! Serde mirror of lb.toml, key for key (see `etc/lb.toml`). Values that a later check must
//! point at are `Spanned`; integers are `i64` and enumerations strings, so range and spelling
//! errors get our own messages (with what was expected) instead of serde's.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

/// Top-level sections, in the order `etc/lb.toml` shows them.
pub(crate) const SECTIONS: &[&str] = &[
    "node",
    "kubernetes",
    "cluster",
    "layer2",
    "bgp_communities",
    "pool",
    "bgp_peer",
    "service",
    "metrics",
    "log",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Option<S<String>>,
    pub role: Option<S<String>>,
    pub state_dir: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetes {
    pub kubeconfig: S<String>,
    pub load_balancer_class: Option<S<String>>,
    pub ignore_exclude_label: Option<bool>,
    pub max_writes_in_flight: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub members: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub voters: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub address: Option<S<String>>,
    pub member_nodes: Option<S<RawMemberNodes>>,
    pub secret_file: Option<S<String>>,
    pub heartbeat: Option<S<String>>,
    pub election_timeout: Option<S<String>>,
    pub clock_drift: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMemberNodes {
    pub node_selectors: Option<Vec<S<RawSelector>>>,
    pub port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLayer2 {
    pub gratuitous_count: Option<S<i64>>,
    pub gratuitous_interval: Option<S<String>>,
    pub refresh_interval: Option<S<String>>,
}

pub(crate) type RawCommunities = BTreeMap<S<String>, S<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub name: S<String>,
    pub protocol: S<String>,
    pub addresses: S<Vec<S<String>>>,
    pub auto_assign: Option<bool>,
    pub avoid_buggy_ips: Option<bool>,
    pub interfaces: Option<S<Vec<S<String>>>>,
    pub node_selectors: Option<Vec<S<RawSelector>>>,
    pub bgp_advertisement: Option<S<Vec<S<RawAdvertisement>>>>,
    pub priority: Option<S<i64>>,
    pub namespaces: Option<S<Vec<S<String>>>>,
    pub namespace_selectors: Option<Vec<S<RawSelector>>>,
    pub service_selectors: Option<Vec<S<RawSelector>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelector {
    pub match_labels: Option<BTreeMap<S<String>, S<String>>>,
    pub match_expressions: Option<Vec<S<RawExpression>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpression {
    pub key: S<String>,
    pub operator: S<String>,
    pub values: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdvertisement {
    pub aggregation_length: Option<S<i64>>,
    pub aggregation_length_v6: Option<S<i64>>,
    pub local_pref: Option<S<i64>>,
    pub communities: Option<Vec<S<String>>>,
    pub node_selectors: Option<Vec<S<RawSelector>>>,
    pub peers: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub my_asn: S<i64>,
    /// Required unless `dynamic_asn` is given.
    pub peer_asn: Option<S<i64>>,
    pub dynamic_asn: Option<S<String>>,
    pub address: S<String>,
    pub port: Option<S<i64>>,
    pub hold_time: Option<S<String>>,
    pub keepalive_time: Option<S<String>>,
    pub router_id: Option<S<String>>,
    pub source_address: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub ebgp_multihop: Option<S<i64>>,
    pub passive: Option<bool>,
    pub connect_delay: Option<S<String>>,
    pub connect_time: Option<S<String>>,
    pub node_selectors: Option<Vec<S<RawSelector>>>,
    pub bfd: Option<S<RawBfd>>,
    pub graceful_restart: Option<S<bool>>,
    pub restart_time: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBfd {
    pub receive_interval: Option<S<String>>,
    pub transmit_interval: Option<S<String>>,
    pub detect_multiplier: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: S<String>,
    pub pool: Option<S<String>>,
    pub ip: Option<S<String>>,
    pub assign: Option<bool>,
    pub ports: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<S<String>>,
    pub format: Option<S<String>>,
}
