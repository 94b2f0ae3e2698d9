//! From the controller's announcements to what each announcer needs (pure): the layer-2 IPs
//! raft-lite must place, which of them this host could answer for now, the claims the ARP/NDP
//! responder acts on, and the BGP speaker's view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::bgp::advertise::{AnnouncedIp, LocalNode};
use crate::config::Role;
use crate::controller::Announcement;
use crate::l2::iface::{self, Interface};
use crate::l2::responder::Claim;
use crate::model::{Node, Pool, PoolProtocol, selectors_match};

/// This host as the announcers see it.
#[derive(Clone, Debug)]
pub struct Me<'a> {
    pub name: &'a str,
    pub role: Role,
    /// `None` with Kubernetes configured: the Node object is unknown (not listed yet, or the
    /// name does not match) — nothing is announced from here. Without Kubernetes there are
    /// no Node objects and the host announces as an unlabelled node.
    pub node: Option<&'a Node>,
    pub kubernetes: bool,
}

impl Me<'_> {
    /// A member whose Node allows external load balancing.
    pub fn may_announce(&self) -> bool {
        if self.role == Role::Witness {
            return false;
        }
        match self.node {
            Some(n) => !n.excluded_from_load_balancers && !n.network_unavailable,
            None => !self.kubernetes,
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.node.map(|n| n.labels.clone()).unwrap_or_default()
    }
}

fn pool<'a>(pools: &'a [Pool], name: &str) -> Option<&'a Pool> {
    pools.iter().find(|p| p.name == name)
}

fn layer2<'a>(
    announcements: &'a [Announcement],
    pools: &'a [Pool],
) -> impl Iterator<Item = (&'a Announcement, &'a Pool)> {
    announcements.iter().filter_map(move |a| {
        let p = pool(pools, &a.pool)?;
        (p.protocol == PoolProtocol::Layer2).then_some((a, p))
    })
}

/// The layer-2 IPs that need an owner, each with a service name for logs.
pub fn l2_desired(announcements: &[Announcement], pools: &[Pool]) -> BTreeMap<IpAddr, String> {
    layer2(announcements, pools)
        .map(|(a, _)| {
            let names: Vec<String> = a.services.iter().map(|s| s.to_string()).collect();
            (a.ip, names.join(","))
        })
        .collect()
}

/// The layer-2 IPs this host could answer for right now: it may announce, the pool's node
/// selectors match, a `Local` IP has a ready endpoint here, and an interface for the IP is up.
pub fn l2_eligible<'a>(
    announcements: &[Announcement],
    pools: &[Pool],
    me: &Me<'_>,
    interfaces: impl IntoIterator<Item = &'a Interface>,
) -> BTreeSet<IpAddr> {
    let interfaces: Vec<&Interface> = interfaces.into_iter().collect();
    if !me.may_announce() {
        return BTreeSet::new();
    }
    let labels = me.labels();
    layer2(announcements, pools)
        .filter(|(a, p)| {
            selectors_match(&p.node_selectors, &labels)
                && has_ready_endpoint(a, me.name)
                && iface::eligible(&a.ip, &p.interfaces, interfaces.iter().copied())
        })
        .map(|(a, _)| a.ip)
        .collect()
}

/// MetalLB's rule (layer2 `ShouldAnnounce`): nothing is announced for a Service without a
/// ready endpoint anywhere; with `Local`, only from nodes that have one. Static services have
/// no endpoints to wait for.
fn has_ready_endpoint(a: &Announcement, me: &str) -> bool {
    if a.always_ready {
        return true;
    }
    if a.local_only {
        a.endpoints.get(me).is_some_and(|n| *n > 0)
    } else {
        a.endpoints.values().any(|n| *n > 0)
    }
}

/// What the responder answers for: the IPs this host owns now, with their interfaces and
/// services.
pub fn claims(
    owned: &BTreeSet<IpAddr>,
    announcements: &[Announcement],
    pools: &[Pool],
) -> Vec<Claim> {
    layer2(announcements, pools)
        .filter(|(a, _)| owned.contains(&a.ip))
        .map(|(a, p)| Claim {
            ip: a.ip,
            interfaces: p.interfaces.clone(),
            services: a.services.clone(),
        })
        .collect()
}

/// The BGP speaker's input: every announced IP of a bgp pool.
pub fn bgp_announced(announcements: &[Announcement], pools: &[Pool]) -> Vec<AnnouncedIp> {
    announcements
        .iter()
        .filter(|a| pool(pools, &a.pool).is_some_and(|p| p.protocol == PoolProtocol::Bgp))
        .map(|a| AnnouncedIp {
            ip: a.ip,
            pool: a.pool.clone(),
            local_only: a.local_only,
            endpoints: a.endpoints.clone(),
            always_ready: a.always_ready,
        })
        .collect()
}

pub fn bgp_node(me: &Me<'_>) -> LocalNode {
    LocalNode {
        name: me.name.to_string(),
        labels: me.labels(),
        eligible: me.may_announce(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::MacAddr;
    use crate::model::{EndpointsByNode, IpRange, ServiceKey};

    fn pool(name: &str, protocol: PoolProtocol, cidr_first: &str, cidr_last: &str) -> Pool {
        Pool {
            name: name.into(),
            protocol,
            ranges: vec![
                IpRange::new(cidr_first.parse().unwrap(), cidr_last.parse().unwrap()).unwrap(),
            ],
            auto_assign: true,
            avoid_buggy_ips: false,
            interfaces: vec![],
            node_selectors: vec![],
            bgp_advertisements: vec![],
        }
    }

    fn ann(ip: &str, pool: &str, local_only: bool, eps: &[(&str, usize)]) -> Announcement {
        Announcement {
            ip: ip.parse().unwrap(),
            pool: pool.into(),
            services: vec![ServiceKey::new("default", "web")],
            local_only,
            endpoints: eps
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<EndpointsByNode>(),
            always_ready: false,
        }
    }

    fn eth0(up: bool) -> Interface {
        Interface {
            index: 2,
            name: "eth0".into(),
            mac: "02:00:00:00:00:01".parse::<MacAddr>().unwrap(),
            up,
            addresses: vec!["10.10.100.3/24".parse().unwrap()],
        }
    }

    fn pools() -> Vec<Pool> {
        vec![
            pool("l2", PoolProtocol::Layer2, "10.10.100.200", "10.10.100.210"),
            pool("bgp", PoolProtocol::Bgp, "172.19.100.0", "172.19.100.255"),
        ]
    }

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    #[test]
    fn only_layer2_ips_need_an_owner() {
        let a = vec![
            ann("10.10.100.200", "l2", false, &[]),
            ann("172.19.100.0", "bgp", false, &[]),
        ];
        let d = l2_desired(&a, &pools());
        assert_eq!(
            d.keys().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            ["10.10.100.200"]
        );
        assert_eq!(d.values().next().unwrap(), "default/web");
        assert_eq!(bgp_announced(&a, &pools()).len(), 1);
    }

    #[test]
    fn eligibility_needs_an_up_interface_in_the_subnet() {
        let a = vec![ann("10.10.100.200", "l2", false, &[("worker-2", 1)])];
        let n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        assert_eq!(l2_eligible(&a, &pools(), &me, &[eth0(true)]).len(), 1);
        assert!(l2_eligible(&a, &pools(), &me, &[eth0(false)]).is_empty());
    }

    #[test]
    fn witness_excluded_and_unknown_nodes_never_announce() {
        let a = vec![ann("10.10.100.200", "l2", false, &[("worker-2", 1)])];
        let n = node("worker-1");
        let witness = Me {
            name: "worker-1",
            role: Role::Witness,
            node: Some(&n),
            kubernetes: true,
        };
        assert!(l2_eligible(&a, &pools(), &witness, &[eth0(true)]).is_empty());
        let unknown = Me {
            name: "worker-1",
            role: Role::Member,
            node: None,
            kubernetes: true,
        };
        assert!(l2_eligible(&a, &pools(), &unknown, &[eth0(true)]).is_empty());
        let mut ex = node("worker-1");
        ex.excluded_from_load_balancers = true;
        let excluded = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&ex),
            kubernetes: true,
        };
        assert!(l2_eligible(&a, &pools(), &excluded, &[eth0(true)]).is_empty());
        assert!(!bgp_node(&excluded).eligible);
        let standalone = Me {
            name: "worker-1",
            role: Role::Member,
            node: None,
            kubernetes: false,
        };
        assert_eq!(
            l2_eligible(&a, &pools(), &standalone, &[eth0(true)]).len(),
            1
        );
    }

    #[test]
    fn local_ip_is_eligible_only_with_a_ready_endpoint_here() {
        let a = vec![ann("10.10.100.200", "l2", true, &[("worker-2", 1)])];
        let n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        assert!(l2_eligible(&a, &pools(), &me, &[eth0(true)]).is_empty());
        let a = vec![ann("10.10.100.200", "l2", true, &[("worker-1", 1)])];
        assert_eq!(l2_eligible(&a, &pools(), &me, &[eth0(true)]).len(), 1);
    }

    #[test]
    fn cluster_ip_without_any_ready_endpoint_is_not_announced_but_a_static_one_is() {
        let n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        let none = vec![ann("10.10.100.200", "l2", false, &[("worker-2", 0)])];
        assert!(l2_eligible(&none, &pools(), &me, &[eth0(true)]).is_empty());
        // A ready endpoint on another node is enough for `Cluster`.
        let elsewhere = vec![ann("10.10.100.200", "l2", false, &[("worker-2", 1)])];
        assert_eq!(
            l2_eligible(&elsewhere, &pools(), &me, &[eth0(true)]).len(),
            1
        );
        let mut stat = ann("10.10.100.200", "l2", false, &[]);
        stat.always_ready = true;
        assert_eq!(l2_eligible(&[stat], &pools(), &me, &[eth0(true)]).len(), 1);
    }

    #[test]
    fn pool_node_selectors_limit_eligibility() {
        let mut ps = pools();
        ps[0].node_selectors = vec![crate::model::NodeSelector {
            match_labels: [("rack".to_string(), "a".to_string())].into(),
            match_expressions: vec![],
        }];
        let a = vec![ann("10.10.100.200", "l2", false, &[("worker-2", 1)])];
        let mut n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        assert!(l2_eligible(&a, &ps, &me, &[eth0(true)]).is_empty());
        n.labels.insert("rack".into(), "a".into());
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        assert_eq!(l2_eligible(&a, &ps, &me, &[eth0(true)]).len(), 1);
    }

    #[test]
    fn claims_cover_only_owned_layer2_ips() {
        let a = vec![
            ann("10.10.100.200", "l2", false, &[]),
            ann("10.10.100.201", "l2", false, &[]),
        ];
        let owned: BTreeSet<IpAddr> = ["10.10.100.201".parse().unwrap()].into();
        let c = claims(&owned, &a, &pools());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].ip.to_string(), "10.10.100.201");
        assert_eq!(c[0].services, vec![ServiceKey::new("default", "web")]);
    }
}
