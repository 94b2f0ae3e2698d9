//! Who uses which IP: the bookkeeping of MetalLB's `Allocator` (`allocated`,
//! `sharingKeyForIP`, `portsInUse`, `servicesOnIP`, `poolIPsInUse` in
//! `internal/allocator/allocator.go`), in ordered maps so that every answer is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Assignment, msg};
use crate::model::{Selector, ServiceKey, ServicePort};

/// What a Service may share an IP with (MetalLB's `key{sharing, backend}`).
///
/// MetalLB's backend key is `""` for `Cluster` and the selector string for `Local`
/// (`k8salloc.BackendKey`), which lets a `Local` service with an empty selector share with a
/// `Cluster` one. We keep the two apart: `Local` never shares with `Cluster`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ShareKey {
    pub sharing: Option<String>,
    pub backend: Backend,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Backend {
    Cluster,
    Local(Selector),
}

impl ShareKey {
    /// MetalLB's `sharingOK`: both keys set and equal, and the same backends.
    pub fn compatible(&self, other: &ShareKey) -> bool {
        self.sharing.is_some() && self.sharing == other.sharing && self.backend == other.backend
    }
}

#[derive(Clone, Debug)]
pub(super) struct Alloc {
    pub assignment: Assignment,
    pub ports: Vec<ServicePort>,
    pub key: ShareKey,
}

/// The users of one IP. Few per IP (usually one), so sorted vectors rather than maps.
#[derive(Clone, Debug)]
pub(super) struct IpUse {
    /// Sorted, no duplicates.
    pub services: Vec<ServiceKey>,
    /// Who uses each (protocol, port); unordered, no duplicate ports.
    pub ports: Vec<(ServicePort, ServiceKey)>,
    /// The key of the users; all users of one IP carry compatible (so equal) keys.
    pub key: ShareKey,
}

impl IpUse {
    fn port_owner(&self, port: &ServicePort) -> Option<&ServiceKey> {
        self.ports.iter().find(|(p, _)| p == port).map(|(_, k)| k)
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Table {
    pub allocs: BTreeMap<ServiceKey, Alloc>,
    pub ips: BTreeMap<IpAddr, IpUse>,
    /// Sharable IPs (their users' key has a sharing key) by key: where a sharing Service
    /// can look for a partner without scanning the pool.
    pub shared: BTreeMap<ShareKey, BTreeSet<IpAddr>>,
    /// pool name → IP → number of users.
    pub pool_use: BTreeMap<String, BTreeMap<IpAddr, usize>>,
}

impl Table {
    /// MetalLB's `checkSharing`: may `svc` (with these ports and key) use `ip`, given the
    /// other services on it? The service's own current use never conflicts.
    pub fn check(
        &self,
        svc: &ServiceKey,
        ip: IpAddr,
        ports: &[ServicePort],
        key: &ShareKey,
    ) -> Result<(), String> {
        let Some(used) = self.ips.get(&ip) else {
            return Ok(());
        };
        let others: Vec<&ServiceKey> = used.services.iter().filter(|s| *s != svc).collect();
        if !others.is_empty() && !used.key.compatible(key) {
            return Err(msg::sharing_conflict(svc, &others));
        }
        for port in ports {
            if used.port_owner(port).is_some_and(|owner| owner != svc) {
                return Err(msg::port_in_use(port, ip));
            }
        }
        Ok(())
    }

    /// Records `alloc` for `svc`, replacing what it held. The caller has checked it with
    /// [`Table::check`]. Returns the IPs that no longer have any user.
    pub fn assign(&mut self, svc: ServiceKey, alloc: Alloc) -> Vec<IpAddr> {
        let old = self.remove(&svc);
        for ip in &alloc.assignment.ips {
            let used = self.ips.entry(*ip).or_insert_with(|| IpUse {
                services: Vec::new(),
                ports: Vec::new(),
                key: alloc.key.clone(),
            });
            if used.services.is_empty() && alloc.key.sharing.is_some() {
                self.shared
                    .entry(alloc.key.clone())
                    .or_default()
                    .insert(*ip);
            }
            if let Err(at) = used.services.binary_search(&svc) {
                used.services.insert(at, svc.clone());
            }
            for port in &alloc.ports {
                // The caller checked that no other service uses the port here.
                used.ports.retain(|(p, _)| p != port);
                used.ports.push((*port, svc.clone()));
            }
            *self
                .pool_use
                .entry(alloc.assignment.pool.clone())
                .or_default()
                .entry(*ip)
                .or_default() += 1;
        }
        self.allocs.insert(svc, alloc);
        old.into_iter()
            .filter(|ip| !self.ips.contains_key(ip))
            .collect()
    }

    /// Frees what `svc` holds. Returns the IPs that no longer have any user.
    pub fn unassign(&mut self, svc: &ServiceKey) -> Vec<IpAddr> {
        self.remove(svc)
            .into_iter()
            .filter(|ip| !self.ips.contains_key(ip))
            .collect()
    }

    /// Removes `svc`'s use; returns the IPs it held.
    fn remove(&mut self, svc: &ServiceKey) -> Vec<IpAddr> {
        let Some(alloc) = self.allocs.remove(svc) else {
            return Vec::new();
        };
        for ip in &alloc.assignment.ips {
            if let Some(used) = self.ips.get_mut(ip) {
                used.services.retain(|s| s != svc);
                used.ports.retain(|(_, owner)| owner != svc);
                if used.services.is_empty() {
                    let key = used.key.clone();
                    self.ips.remove(ip);
                    if let Some(set) = self.shared.get_mut(&key) {
                        set.remove(ip);
                        if set.is_empty() {
                            self.shared.remove(&key);
                        }
                    }
                }
            }
            if let Some(per_pool) = self.pool_use.get_mut(&alloc.assignment.pool) {
                if let Some(n) = per_pool.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        per_pool.remove(ip);
                    }
                }
                if per_pool.is_empty() {
                    self.pool_use.remove(&alloc.assignment.pool);
                }
            }
        }
        alloc.assignment.ips
    }
}
