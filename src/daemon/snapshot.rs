//! What `lbctl`, D-Bus and `/ready` read, and the one-line state systemd shows (pure): built
//! from the facts the main loop gathers. Also the gauges that follow the same facts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::alloc::PoolStats;
use crate::bgp::fsm::State as BgpState;
use crate::bgp::speaker::PeerSnapshot;
use crate::config::{BgpPeer, Role};
use crate::control::metrics::Metrics;
use crate::control::state::{
    AddressCount, AnnounceProtocol, ClusterRole, ClusterStatus, ConfigStatus, MemberStatus,
    NodeRole, PeerStatus, PoolStatus, ReloadResult, ServiceState, ServiceStatus, Snapshot,
};
use crate::controller::Announcement;
use crate::model::{Pool, PoolProtocol, Pools, ServiceKey};

use super::ownership::View;

/// Everything the snapshot is made of, as of one moment.
pub struct Facts<'a> {
    pub node: &'a str,
    pub role: Role,
    pub ready: bool,
    pub loaded_at: u64,
    pub last_reload: Option<ReloadResult>,
    pub view: &'a View,
    /// The layer-2 IPs this host may answer for now.
    pub owned: &'a BTreeSet<IpAddr>,
    pub members: Vec<MemberStatus>,
    pub pools: &'a Pools,
    pub pool_stats: &'a [PoolStats],
    pub bgp_peers: &'a [BgpPeer],
    pub peers: &'a [PeerSnapshot],
    /// The Services that got no IP.
    pub failed: Vec<&'a ServiceKey>,
    /// Services counted in the status line (Kubernetes and static).
    pub services: usize,
    pub synced: bool,
}

/// The Services part of the snapshot: one row per Service of each announced IP, then the
/// Services that got no IP. Rebuilt only when announcements or ownership changed.
pub fn services<'a>(
    facts: &Facts<'_>,
    announcements: impl Iterator<Item = &'a Announcement>,
) -> Vec<ServiceStatus> {
    let bgp_up = facts.peers.iter().any(|p| p.established());
    let mut services = Vec::new();
    for a in announcements {
        let Some(pool) = facts.pools.get(&a.pool) else {
            continue;
        };
        let (announced_by, state) = match pool.protocol {
            PoolProtocol::Layer2 => match facts.view.owners.get(&a.ip) {
                Some(owner) => (vec![owner.clone()], ServiceState::Announced),
                None if facts.owned.contains(&a.ip) => {
                    (vec![facts.node.to_owned()], ServiceState::Announced)
                }
                None if matches!(
                    facts.view.role,
                    ClusterRole::Follower | ClusterRole::Candidate
                ) =>
                {
                    (Vec::new(), ServiceState::Elsewhere)
                }
                None => (Vec::new(), ServiceState::Pending),
            },
            PoolProtocol::Bgp if bgp_up => (vec![facts.node.to_owned()], ServiceState::Announced),
            PoolProtocol::Bgp => (Vec::new(), ServiceState::Pending),
            PoolProtocol::None => (Vec::new(), ServiceState::NotAnnounced),
        };
        for key in &a.services {
            services.push(ServiceStatus {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                ips: vec![a.ip],
                pool: a.pool.clone(),
                protocol: pool.protocol.into(),
                announced_by: announced_by.clone(),
                state: state.clone(),
            });
        }
    }
    for key in &facts.failed {
        services.push(ServiceStatus {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            ips: Vec::new(),
            pool: String::new(),
            protocol: AnnounceProtocol::Layer2,
            announced_by: Vec::new(),
            state: ServiceState::Failed("no IP allocated".into()),
        });
    }
    services
}

/// Each layer-2 IP in use → (its pool, whether it has an owner), where this host knows: the
/// leader (or a cluster of one) knows every owner; any other host knows nothing (empty).
pub fn layer2_owners<'a>(
    view: &View,
    pools: &Pools,
    announcements: impl Iterator<Item = &'a Announcement>,
) -> BTreeMap<IpAddr, (String, bool)> {
    if !matches!(view.role, ClusterRole::Leader | ClusterRole::Standalone) {
        return BTreeMap::new();
    }
    announcements
        .filter(|a| {
            pools
                .get(&a.pool)
                .is_some_and(|p| p.protocol == PoolProtocol::Layer2)
        })
        .map(|a| (a.ip, (a.pool.clone(), view.owners.contains_key(&a.ip))))
        .collect()
}

/// Brings `snapshot` up to date with `facts` (and `services`, when rebuilt); says whether
/// anything changed. Version, node and config path stay as they are.
pub fn update(
    snapshot: &mut Snapshot,
    facts: &Facts<'_>,
    services: Option<Vec<ServiceStatus>>,
) -> bool {
    let pools: Vec<PoolStatus> = facts
        .pools
        .iter()
        .map(|p| {
            let used = used(facts.pool_stats, &p.name);
            PoolStatus::new(
                &p.name,
                p.protocol.into(),
                AddressCount::of_ranges(&p.ranges),
                AddressCount(used as u128),
            )
        })
        .collect();
    let peers: Vec<PeerStatus> = facts
        .peers
        .iter()
        .filter_map(|p| {
            let cfg = facts
                .bgp_peers
                .iter()
                .find(|c| c.address == p.status.address)?;
            Some(PeerStatus {
                address: p.status.address,
                my_asn: cfg.my_asn,
                // The session's: a dynamic ASN is known once the peer's OPEN is in (0 before).
                peer_asn: p.status.peer_asn,
                state: p.status.state,
                uptime_s: p.uptime.map(|u| u.as_secs()).unwrap_or(0),
                prefixes_advertised: p.status.prefixes_advertised as u64,
                updates_received: p.status.updates_received,
            })
        })
        .collect();
    let role = match facts.role {
        Role::Member => NodeRole::Member,
        Role::Witness => NodeRole::Witness,
    };
    let config = ConfigStatus {
        path: snapshot.config.path.clone(),
        loaded_at: facts.loaded_at,
        last_reload: facts.last_reload.clone(),
    };
    let cluster = ClusterStatus {
        term: facts.view.term,
        leader: facts.view.leader.clone(),
        role: facts.view.role,
        members: facts.members.clone(),
    };
    let line = status_line(facts);
    let mut changed = snapshot.role != role
        || snapshot.ready != facts.ready
        || snapshot.status_line != line
        || snapshot.config != config
        || snapshot.cluster != cluster
        || snapshot.pools != pools
        || snapshot.peers != peers;
    snapshot.role = role;
    snapshot.ready = facts.ready;
    snapshot.status_line = line;
    snapshot.config = config;
    snapshot.cluster = cluster;
    snapshot.pools = pools;
    snapshot.peers = peers;
    if let Some(services) = services {
        changed |= snapshot.services != services;
        snapshot.services = services;
    }
    changed
}

fn used(stats: &[PoolStats], pool: &str) -> usize {
    stats.iter().find(|s| s.name == pool).map_or(0, |s| s.used)
}

/// Joined: a cluster of one, or a leader is known (this host heard from a majority's
/// leader, or is it).
pub fn cluster_joined(view: &View) -> bool {
    view.role == ClusterRole::Standalone || view.leader.is_some()
}

/// STATUS=: role, term, leader, Services, layer-2 IPs owned, BGP sessions, and what start-up
/// still waits for or a refused reload.
pub fn status_line(facts: &Facts<'_>) -> String {
    let v = facts.view;
    let sync = if facts.synced {
        ""
    } else {
        "; waiting for the API server"
    };
    let joined = if cluster_joined(v) {
        ""
    } else {
        "; waiting for a raft-lite leader"
    };
    let established = facts
        .peers
        .iter()
        .filter(|p| p.status.state == BgpState::Established)
        .count();
    let bgp = match (established, facts.peers.len()) {
        (_, 0) => String::new(),
        (up, all) => format!("; BGP {up}/{all} sessions up"),
    };
    let stale = match &facts.last_reload {
        Some(r) if !r.ok => "; last reload FAILED, running the previous configuration",
        _ => "",
    };
    format!(
        "{} term {}{}; {} services; owning {} layer-2 IPs{}{}{}{}",
        v.role,
        v.term,
        v.leader
            .as_ref()
            .map(|l| format!(", leader {l}"))
            .unwrap_or_default(),
        facts.services,
        facts.owned.len(),
        bgp,
        sync,
        joined,
        stale
    )
}

/// The pool and announcement gauges (`lb_address_pool_*`, `lb_announced_ips`).
pub fn set_gauges(
    metrics: &Metrics,
    pools: &[Pool],
    stats: &[PoolStats],
    layer2_claimed: usize,
    bgp_advertised: usize,
) {
    for p in pools {
        let s = stats.iter().find(|s| s.name == p.name);
        metrics.set_pool(
            &p.name,
            AddressCount::of_ranges(&p.ranges),
            AddressCount(s.map_or(0, |s| s.used) as u128),
            s.map_or(0, |s| s.services as u64),
        );
    }
    metrics.set_announced_ips(AnnounceProtocol::Layer2, layer2_claimed as u64);
    metrics.set_announced_ips(AnnounceProtocol::Bgp, bgp_advertised as u64);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::IpRange;

    fn pool(name: &str, protocol: PoolProtocol, ip: &str) -> Pool {
        let ip: IpAddr = ip.parse().unwrap();
        Pool {
            name: name.into(),
            protocol,
            ranges: vec![IpRange::new(ip, ip).unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            interfaces: vec![],
            node_selectors: vec![],
            bgp_advertisements: vec![],
            service_allocation: Default::default(),
        }
    }

    fn announcement(ip: &str, pool: &str, svc: &str) -> Announcement {
        Announcement {
            ip: ip.parse().unwrap(),
            pool: pool.into(),
            services: vec![ServiceKey::new("default", svc)],
            local_only: false,
            endpoints: Default::default(),
            always_ready: false,
        }
    }

    #[test]
    fn allocate_only_service_is_shown_as_not_announced_by_anyone() {
        let pools = [
            pool("l2", PoolProtocol::Layer2, "10.0.0.1"),
            pool("quiet", PoolProtocol::None, "10.0.0.2"),
        ];
        let loud = announcement("10.0.0.1", "l2", "loud");
        let silent = announcement("10.0.0.2", "quiet", "silent");
        // The leader's map names an owner for the layer-2 IP only.
        let view = View {
            role: ClusterRole::Leader,
            term: 1,
            leader: Some("worker-1".into()),
            owners: BTreeMap::from([(loud.ip, "worker-1".to_string())]),
        };
        let owned = BTreeSet::new();
        let facts = Facts {
            node: "worker-1",
            role: Role::Member,
            ready: true,
            loaded_at: 0,
            last_reload: None,
            view: &view,
            owned: &owned,
            members: vec![],
            pools: &Pools::from(pools.to_vec()),
            pool_stats: &[],
            bgp_peers: &[],
            peers: &[],
            failed: vec![],
            services: 2,
            synced: true,
        };
        let rows = services(&facts, [&loud, &silent].into_iter());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, ServiceState::Announced);
        assert_eq!(rows[1].name, "silent");
        assert_eq!(rows[1].protocol, AnnounceProtocol::None);
        assert_eq!(rows[1].state, ServiceState::NotAnnounced);
        assert!(rows[1].announced_by.is_empty());
        // What `lbctl services` prints, and what --json carries.
        let table = crate::control::render::services(&rows);
        let line = table
            .lines()
            .find(|l| l.contains("default/silent"))
            .unwrap();
        assert!(line.contains("quiet") && line.contains(" none "), "{line}");
        assert!(line.ends_with("not announced"), "{line}");
        let json = serde_json::to_string(&rows[1]).unwrap();
        assert!(json.contains("\"protocol\":\"none\""), "{json}");
        assert!(json.contains("\"state\":\"not announced\""), "{json}");
        let back: crate::control::state::ServiceStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rows[1]);
    }
}
