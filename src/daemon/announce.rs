//! From the controller's announcements to what each announcer needs (pure): the layer-2 IPs
//! raft-lite must place, which of them this host could answer for now (its eligibility,
//! decided here and nowhere else), the claims the ARP/NDP responder acts on, and the BGP
//! speaker's view.
//!
//! [`Announcer`] keeps that per IP, so an announcement change costs the IP it is about: it
//! hands raft-lite, the responder and the speaker changes, not whole sets. Only what
//! concerns every IP (an interface, this host's Node) recomputes all layer-2 IPs. The
//! whole-set functions below are the reference the tests compare it with.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::announcers::{Announcing, Protocol};
use crate::bgp::advertise::{AnnounceChange, AnnouncedIp, LocalNode, PeerPolicy, advertised_by};
use crate::config::Role;
use crate::controller::Announcement;
use crate::l2::iface::{self, Interface};
use crate::l2::responder::Claim;
use crate::model::{Node, Pool, PoolProtocol, Pools, selectors_match};

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

/// The pool of `a` when it is a layer-2 pool.
fn layer2_pool<'a>(a: &Announcement, pools: &'a Pools) -> Option<&'a Pool> {
    pools
        .get(&a.pool)
        .filter(|p| p.protocol == PoolProtocol::Layer2)
}

fn layer2<'a>(
    announcements: &'a [Announcement],
    pools: &'a Pools,
) -> impl Iterator<Item = (&'a Announcement, &'a Pool)> {
    announcements
        .iter()
        .filter_map(move |a| Some((a, layer2_pool(a, pools)?)))
}

/// The service names raft-lite logs for a layer-2 IP.
fn desired_name(a: &Announcement) -> String {
    let names: Vec<String> = a.services.iter().map(|s| s.to_string()).collect();
    names.join(",")
}

/// Whether this host could answer for the layer-2 IP of `a` (from `pool`) right now: it may
/// announce, the pool's node selectors match, a `Local` IP has a ready endpoint here, and
/// an interface for the IP is up.
pub fn eligible<'a>(
    a: &Announcement,
    pool: &Pool,
    me: &Me<'_>,
    labels: &BTreeMap<String, String>,
    interfaces: impl IntoIterator<Item = &'a Interface>,
) -> bool {
    me.may_announce()
        && selectors_match(&pool.node_selectors, labels)
        && has_ready_endpoint(a, me.name)
        && iface::eligible(&a.ip, &pool.interfaces, interfaces)
}

fn claim(a: &Announcement, pool: &Pool) -> Claim {
    Claim {
        ip: a.ip,
        interfaces: pool.interfaces.clone(),
        services: a.services.clone(),
    }
}

fn announced_ip(a: &Announcement) -> AnnouncedIp {
    AnnouncedIp {
        ip: a.ip,
        pool: a.pool.clone(),
        local_only: a.local_only,
        endpoints: a.endpoints.clone(),
        always_ready: a.always_ready,
    }
}

/// The layer-2 IPs that need an owner, each with a service name for logs.
pub fn l2_desired(announcements: &[Announcement], pools: &Pools) -> BTreeMap<IpAddr, String> {
    layer2(announcements, pools)
        .map(|(a, _)| (a.ip, desired_name(a)))
        .collect()
}

/// The layer-2 IPs this host could answer for right now (see [`eligible`]).
pub fn l2_eligible<'a>(
    announcements: &[Announcement],
    pools: &Pools,
    me: &Me<'_>,
    interfaces: impl IntoIterator<Item = &'a Interface>,
) -> BTreeSet<IpAddr> {
    let interfaces: Vec<&Interface> = interfaces.into_iter().collect();
    let labels = me.labels();
    layer2(announcements, pools)
        .filter(|(a, p)| eligible(a, p, me, &labels, interfaces.iter().copied()))
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
    pools: &Pools,
) -> Vec<Claim> {
    layer2(announcements, pools)
        .filter(|(a, _)| owned.contains(&a.ip))
        .map(|(a, p)| claim(a, p))
        .collect()
}

/// The BGP speaker's input: every announced IP of a bgp pool.
pub fn bgp_announced(announcements: &[Announcement], pools: &Pools) -> Vec<AnnouncedIp> {
    announcements
        .iter()
        .filter(|a| {
            pools
                .get(&a.pool)
                .is_some_and(|p| p.protocol == PoolProtocol::Bgp)
        })
        .map(announced_ip)
        .collect()
}

pub fn bgp_node(me: &Me<'_>) -> LocalNode {
    LocalNode {
        name: me.name.to_string(),
        labels: me.labels(),
        eligible: me.may_announce(),
    }
}

/// Who announces the Service whose IPs are `ips`, as the leader knows it: the layer-2
/// owner of each IP (raft-lite's map), or every node a BGP route for it comes from when its
/// sessions are up (`nodes`: the cluster's members as the advertiser sees them). `None`
/// when none of the IPs is announced.
pub fn announcing(
    ips: &[IpAddr],
    announced: &BTreeMap<IpAddr, Announcement>,
    pools: &Pools,
    owners: &BTreeMap<IpAddr, String>,
    nodes: &[LocalNode],
    peers: &[PeerPolicy],
) -> Option<Announcing> {
    let mut out: Option<Announcing> = None;
    for ip in ips {
        let Some(a) = announced.get(ip) else {
            continue;
        };
        let Some(p) = pools.get(&a.pool) else {
            continue;
        };
        let protocol = match p.protocol {
            PoolProtocol::Layer2 => Protocol::Layer2,
            PoolProtocol::Bgp => Protocol::Bgp,
            // Allocate-only: nobody announces it.
            PoolProtocol::None => continue,
        };
        let entry = out.get_or_insert_with(|| Announcing {
            protocol,
            nodes: BTreeSet::new(),
        });
        match protocol {
            Protocol::Layer2 => entry.nodes.extend(owners.get(ip).cloned()),
            Protocol::Bgp => {
                let ann = announced_ip(a);
                entry.nodes.extend(
                    nodes
                        .iter()
                        .filter(|n| advertised_by(n, peers, pools, &ann))
                        .map(|n| n.name.clone()),
                );
            }
        }
    }
    out
}

/// Pools whose protocol a new configuration changes (same name, other protocol). Their IPs'
/// announcements stay the same (they name the pool, not how it is announced), so the
/// announcers must be told about each again.
pub fn protocol_changed(old: &Pools, new: &Pools) -> BTreeSet<String> {
    new.iter()
        .filter(|n| old.get(&n.name).is_some_and(|o| o.protocol != n.protocol))
        .map(|n| n.name.clone())
        .collect()
}

/// What the announcers are to be told after a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// For raft-lite: layer-2 IPs now needing an owner (with a name), or no longer.
    pub desired: Vec<(IpAddr, Option<String>)>,
    /// For raft-lite: layer-2 IPs this host can now, or can no longer, announce.
    pub eligible: Vec<(IpAddr, bool)>,
    /// For the responder: owned IPs to answer for (new or changed) …
    pub claims: Vec<Claim>,
    /// … and owned IPs to stop answering for.
    pub released: Vec<IpAddr>,
    /// For the BGP speaker.
    pub bgp: Vec<AnnounceChange>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.desired.is_empty()
            && self.eligible.is_empty()
            && self.claims.is_empty()
            && self.released.is_empty()
            && self.bgp.is_empty()
    }
}

/// One announced layer-2 IP as the announcers were last told.
struct Layer2 {
    announcement: Announcement,
    eligible: bool,
}

/// The announcers' view, kept per IP.
#[derive(Default)]
pub struct Announcer {
    layer2: BTreeMap<IpAddr, Layer2>,
    bgp: BTreeSet<IpAddr>,
    /// The claims last given to the responder.
    claimed: BTreeMap<IpAddr, Claim>,
    /// IPs recomputed so far (the work the counting test measures).
    recomputed: u64,
}

impl Announcer {
    pub fn recomputed(&self) -> u64 {
        self.recomputed
    }

    /// The claims the responder has.
    pub fn claimed(&self) -> impl Iterator<Item = &Claim> {
        self.claimed.values()
    }

    /// `ip`'s announcement is now `a` (`None`: withdrawn).
    #[allow(clippy::too_many_arguments)]
    pub fn announcement<'a>(
        &mut self,
        ip: IpAddr,
        a: Option<&Announcement>,
        pools: &Pools,
        me: &Me<'_>,
        interfaces: impl IntoIterator<Item = &'a Interface>,
        owned: &BTreeSet<IpAddr>,
        ch: &mut Changes,
    ) {
        self.recomputed += 1;
        let l2 = a.and_then(|a| Some((a, layer2_pool(a, pools)?)));
        match l2 {
            Some((a, p)) => {
                let el = eligible(a, p, me, &me.labels(), interfaces);
                let old = self.layer2.insert(
                    ip,
                    Layer2 {
                        announcement: a.clone(),
                        eligible: el,
                    },
                );
                let name = desired_name(a);
                match &old {
                    Some(o) if desired_name(&o.announcement) == name => {}
                    _ => ch.desired.push((ip, Some(name))),
                }
                if old.as_ref().map(|o| o.eligible) != Some(el) {
                    ch.eligible.push((ip, el));
                }
            }
            None => {
                if let Some(old) = self.layer2.remove(&ip) {
                    ch.desired.push((ip, None));
                    if old.eligible {
                        ch.eligible.push((ip, false));
                    }
                }
            }
        }
        self.claim_ip(ip, pools, owned, ch);
        let bgp = a.filter(|a| {
            pools
                .get(&a.pool)
                .is_some_and(|p| p.protocol == PoolProtocol::Bgp)
        });
        match bgp {
            Some(a) => {
                self.bgp.insert(ip);
                ch.bgp.push(AnnounceChange::Announce(announced_ip(a)));
            }
            None => {
                if self.bgp.remove(&ip) {
                    ch.bgp.push(AnnounceChange::Withdraw(ip));
                }
            }
        }
    }

    /// Something every layer-2 IP depends on changed (an interface, this host's Node, the
    /// pools): recomputes the eligibility of all of them.
    pub fn all_eligibility<'a>(
        &mut self,
        pools: &Pools,
        me: &Me<'_>,
        interfaces: impl IntoIterator<Item = &'a Interface>,
        ch: &mut Changes,
    ) {
        let interfaces: Vec<&Interface> = interfaces.into_iter().collect();
        let labels = me.labels();
        for (ip, l) in self.layer2.iter_mut() {
            self.recomputed += 1;
            let el = layer2_pool(&l.announcement, pools).is_some_and(|p| {
                eligible(&l.announcement, p, me, &labels, interfaces.iter().copied())
            });
            if el != l.eligible {
                l.eligible = el;
                ch.eligible.push((*ip, el));
            }
        }
    }

    /// This host's owned IPs are now `owned`: claims for those it did not answer for, and
    /// releases for those it no longer owns.
    pub fn ownership(&mut self, pools: &Pools, owned: &BTreeSet<IpAddr>, ch: &mut Changes) {
        let gone: Vec<IpAddr> = self
            .claimed
            .keys()
            .filter(|ip| !owned.contains(ip))
            .copied()
            .collect();
        let new: Vec<IpAddr> = owned
            .iter()
            .filter(|ip| !self.claimed.contains_key(ip) && self.layer2.contains_key(ip))
            .copied()
            .collect();
        for ip in gone.into_iter().chain(new) {
            self.claim_ip(ip, pools, owned, ch);
        }
    }

    /// Brings the responder's claim for `ip` in line with the announcement and ownership.
    fn claim_ip(&mut self, ip: IpAddr, pools: &Pools, owned: &BTreeSet<IpAddr>, ch: &mut Changes) {
        let want = owned
            .contains(&ip)
            .then(|| self.layer2.get(&ip))
            .flatten()
            .and_then(|l| Some(claim(&l.announcement, layer2_pool(&l.announcement, pools)?)));
        match want {
            Some(c) => {
                if self.claimed.get(&ip) != Some(&c) {
                    self.claimed.insert(ip, c.clone());
                    ch.claims.push(c);
                }
            }
            None => {
                if self.claimed.remove(&ip).is_some() {
                    ch.released.push(ip);
                }
            }
        }
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
            service_allocation: Default::default(),
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

    fn pool_list() -> Vec<Pool> {
        vec![
            pool("l2", PoolProtocol::Layer2, "10.10.100.200", "10.10.100.210"),
            pool("bgp", PoolProtocol::Bgp, "172.19.100.0", "172.19.100.255"),
        ]
    }

    fn pools() -> Pools {
        pool_list().into()
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
    fn allocate_only_pool_is_never_announced_by_any_announcer() {
        let mut list = pool_list();
        list.push(pool(
            "quiet",
            PoolProtocol::None,
            "10.10.100.220",
            "10.10.100.230",
        ));
        let pools = Pools::from(list);
        // In the subnet of an up interface, with a ready endpoint here, on a member whose
        // Node allows announcing: a layer-2 IP in this position would be eligible.
        let a = ann("10.10.100.220", "quiet", false, &[("worker-1", 1)]);
        let n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        let all = [a.clone()];
        assert!(l2_desired(&all, &pools).is_empty());
        assert!(l2_eligible(&all, &pools, &me, &[eth0(true)]).is_empty());
        assert!(bgp_announced(&all, &pools).is_empty());
        // Even if raft-lite somehow said this host owned it, the responder gets no claim.
        let owned = BTreeSet::from([a.ip]);
        assert!(claims(&owned, &all, &pools).is_empty());
        let mut announcer = Announcer::default();
        let mut ch = Changes::default();
        announcer.announcement(a.ip, Some(&a), &pools, &me, &[eth0(true)], &owned, &mut ch);
        announcer.all_eligibility(&pools, &me, &[eth0(true)], &mut ch);
        announcer.ownership(&pools, &owned, &mut ch);
        assert!(ch.is_empty(), "{ch:?}");
        announcer.announcement(a.ip, None, &pools, &me, &[eth0(true)], &owned, &mut ch);
        assert!(ch.is_empty(), "{ch:?}");
        let announced = BTreeMap::from([(a.ip, a.clone())]);
        let owners = BTreeMap::from([(a.ip, "worker-1".to_string())]);
        let nodes = [bgp_node(&me)];
        assert_eq!(
            announcing(&[a.ip], &announced, &pools, &owners, &nodes, &[]),
            None
        );
    }

    #[test]
    fn a_layer2_pool_turned_allocate_only_leaves_every_announcer_when_told_again() {
        let mut before = pool_list();
        before.push(pool(
            "p",
            PoolProtocol::Layer2,
            "10.10.100.220",
            "10.10.100.230",
        ));
        let before = Pools::from(before);
        let mut after = pool_list();
        after.push(pool(
            "p",
            PoolProtocol::None,
            "10.10.100.220",
            "10.10.100.230",
        ));
        let after = Pools::from(after);
        assert_eq!(
            protocol_changed(&before, &after),
            BTreeSet::from(["p".to_string()])
        );
        assert!(protocol_changed(&before, &before).is_empty());
        let a = ann("10.10.100.220", "p", false, &[("worker-1", 1)]);
        let n = node("worker-1");
        let me = Me {
            name: "worker-1",
            role: Role::Member,
            node: Some(&n),
            kubernetes: true,
        };
        let owned = BTreeSet::from([a.ip]);
        let mut announcer = Announcer::default();
        let mut ch = Changes::default();
        announcer.announcement(a.ip, Some(&a), &before, &me, &[eth0(true)], &owned, &mut ch);
        assert_eq!(ch.desired, [(a.ip, Some("default/web".to_string()))]);
        assert_eq!(ch.claims.len(), 1);
        // The reload: the same announcement, the pool now allocate-only.
        let mut ch = Changes::default();
        announcer.announcement(a.ip, Some(&a), &after, &me, &[eth0(true)], &owned, &mut ch);
        assert_eq!(ch.desired, [(a.ip, None)]);
        assert_eq!(ch.eligible, [(a.ip, false)]);
        assert_eq!(ch.released, [a.ip]);
        assert!(ch.claims.is_empty() && ch.bgp.is_empty());
        assert_eq!(announcer.claimed().count(), 0);
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
        let mut list = pool_list();
        list[0].node_selectors = vec![crate::model::NodeSelector {
            match_labels: [("rack".to_string(), "a".to_string())].into(),
            match_expressions: vec![],
        }];
        let ps = Pools::from(list);
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
