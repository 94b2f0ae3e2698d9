//! The desired state (pure): what every Service should have and what must be announced.
//!
//! Every host runs the same controller on the same inputs (the API server's objects and
//! lb.toml), and the allocator is deterministic, so every host computes the same
//! assignments. Only the writer (the raft-lite leader; the only host until a cluster is
//! configured) turns them into status writes and Events. Announcements follow what the
//! Service status says — the one thing all hosts see alike — so an API outage changes
//! nothing that is announced.
//!
//! Work is proportional to the change: the controller keeps an index of which Services
//! hold each IP and the announcement of every IP; an update recomputes only the IPs it
//! touches and reports the announcements that changed ([`Output::Announce`],
//! [`Output::Withdraw`]). [`Controller::announcements`] recomputes everything from scratch:
//! the reference the incremental path is tested against. When an update frees addresses,
//! only the Services the allocator lists as incomplete are tried again
//! ([`crate::alloc::Allocator::incomplete`]), never every Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::alloc::{Allocator, Change, EventType, Outcome};
use crate::model::StaticService;
use crate::model::kube::{Kind, KubeUpdate};
use crate::model::{EndpointsByNode, Node, Pools, Service, ServiceKey, TrafficPolicy};

pub use crate::model::STATIC_NAMESPACE;

// Inputs are moved once into `step`; boxing the common case would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Kube(KubeUpdate),
    /// This host became (true) or stopped being (false) the writer of status and Events.
    Writer(bool),
    /// A reloaded configuration's pools and static services.
    Config {
        pools: Pools,
        statics: Vec<StaticService>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make the Service's `status.loadBalancer.ingress` exactly `ips` (empty: clear).
    WriteStatus {
        service: ServiceKey,
        ips: Vec<IpAddr>,
        pool: Option<String>,
    },
    Event {
        service: ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    },
    /// A static service (lb.toml `[[service]]`) got no address: there is no Service object
    /// to post an Event on, so the daemon logs it as an error.
    StaticUnallocated { service: ServiceKey, reason: String },
    /// The announcement of `ip` is new or changed (only once the stores are synced).
    Announce(Announcement),
    /// `ip` is no longer announced.
    Withdraw(IpAddr),
}

/// One announced IP and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub ip: IpAddr,
    pub pool: String,
    pub services: Vec<ServiceKey>,
    /// `Local` on every service of the IP: only nodes with a ready endpoint may announce.
    pub local_only: bool,
    /// Nodes with ready endpoints (summed over the services of the IP).
    pub endpoints: EndpointsByNode,
    /// A static service's IP: there are no endpoints to wait for; every eligible node may
    /// announce it.
    pub always_ready: bool,
}

pub struct Controller {
    /// Also the holder of the pools (`alloc.pools()`).
    alloc: Allocator,
    statics: Vec<StaticService>,
    services: BTreeMap<ServiceKey, Service>,
    endpoints: BTreeMap<ServiceKey, EndpointsByNode>,
    nodes: BTreeMap<String, Node>,
    synced: BTreeSet<Kind>,
    writer: bool,
    /// IP → the Services (static ones included) whose status holds it: sorted, usually
    /// one (a vector, not a set: 10,000 one-element B-tree nodes cost megabytes).
    users: BTreeMap<IpAddr, Vec<ServiceKey>>,
    /// The static services' IPs as last indexed.
    static_ips: BTreeMap<ServiceKey, Vec<IpAddr>>,
    /// What is announced, as last reported.
    announced: BTreeMap<IpAddr, Announcement>,
    /// IPs whose announcement may have changed since the last report.
    dirty: BTreeSet<IpAddr>,
    /// Announcements recomputed so far (the work the counting test measures).
    recomputed: u64,
    /// Services tried again because addresses were freed (counted likewise).
    retried: u64,
    /// The first allocation over every Service has been made: Services are listed and, if a
    /// pool chooses by namespace labels, Namespaces too.
    started: bool,
}

/// The model Service for a `[[service]]` table.
pub fn static_service(s: &StaticService) -> Service {
    Service {
        key: ServiceKey::new(STATIC_NAMESPACE, s.name.clone()),
        ports: s.ports.clone(),
        requested_ips: s.ip.into_iter().collect(),
        // A static IPv6 address makes an IPv6 service (the default family is IPv4).
        ip_families: s.ip.iter().map(crate::model::IpFamily::of).collect(),
        pool: Some(s.pool.clone()),
        ..Service::default()
    }
}

impl Controller {
    /// `kubernetes`: whether Services come from an API server (else the stores count as
    /// synced at once: only static services exist).
    pub fn new(
        pools: impl Into<Pools>,
        statics: Vec<StaticService>,
        class: Option<String>,
        kubernetes: bool,
    ) -> Self {
        let mut c = Self {
            alloc: Allocator::new(pools, class),
            statics,
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            nodes: BTreeMap::new(),
            synced: BTreeSet::new(),
            writer: false,
            users: BTreeMap::new(),
            static_ips: BTreeMap::new(),
            announced: BTreeMap::new(),
            dirty: BTreeSet::new(),
            recomputed: 0,
            retried: 0,
            started: false,
        };
        if !kubernetes {
            c.synced.extend([
                Kind::Services,
                Kind::EndpointSlices,
                Kind::Nodes,
                Kind::Namespaces,
            ]);
        }
        c.alloc
            .set_namespaces_listed(c.synced.contains(&Kind::Namespaces));
        // Static services first, so no Kubernetes Service can take their addresses.
        let statics: Vec<Service> = c.statics.iter().map(static_service).collect();
        c.alloc.sync(&statics);
        c.index_statics();
        // Without Kubernetes the stores count as synced: the static services' announcements
        // exist from the start (read them with `announced`).
        c.report(&mut Vec::new());
        c
    }

    /// What is announced now (as reported by the outputs so far), by IP.
    pub fn announced(&self) -> &BTreeMap<IpAddr, Announcement> {
        &self.announced
    }

    /// How many announcements have been recomputed so far: the work done for the updates
    /// seen, which stays proportional to what they changed.
    pub fn recomputed(&self) -> u64 {
        self.recomputed
    }

    /// How many Services have been tried again because addresses were freed: as many per
    /// freeing update as Services were incomplete, whatever the number of Services.
    pub fn retried(&self) -> u64 {
        self.retried
    }

    /// Services, EndpointSlices and Nodes have been listed: withdrawing is safe from now on.
    pub fn synced(&self) -> bool {
        [Kind::Services, Kind::EndpointSlices, Kind::Nodes]
            .iter()
            .all(|k| self.synced.contains(k))
    }

    /// Allocation may begin: the Services are listed and, when a pool chooses by namespace
    /// labels, the Namespaces too (else a Service would take a pool for everyone before its
    /// team's pool is known, and keep it).
    fn ready_to_allocate(&self) -> bool {
        self.synced.contains(&Kind::Services)
            && (self.synced.contains(&Kind::Namespaces) || !self.alloc.needs_namespaces())
    }

    pub fn is_writer(&self) -> bool {
        self.writer
    }

    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    pub fn services(&self) -> &BTreeMap<ServiceKey, Service> {
        &self.services
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The Kubernetes Services that would lose or change their IP if `pools` and `statics`
    /// replaced the running configuration, with the IPs they hold now. A reload that would
    /// orphan one is refused, as MetalLB refuses it ("new config not compatible with assigned
    /// IPs"): an address change is the user's decision, made on the Service.
    pub fn orphaned_by(
        &self,
        pools: &Pools,
        statics: &[StaticService],
    ) -> Vec<(ServiceKey, Vec<IpAddr>)> {
        let mut trial = self.alloc.clone();
        let mut all: Vec<Service> = statics.iter().map(static_service).collect();
        all.extend(self.services.values().cloned());
        trial
            .set_pools(pools.clone(), &all)
            .into_iter()
            .filter(|o| o.service.namespace != STATIC_NAMESPACE)
            .filter_map(|o| {
                let before = self.alloc.assignment(&o.service)?.ips.clone();
                let kept = match &o.change {
                    Change::Unchanged | Change::NotOurs => true,
                    Change::Allocated { ips, .. } => *ips == before,
                    Change::Failed { .. } | Change::Cleared { .. } => false,
                };
                (!kept).then_some((o.service, before))
            })
            .collect()
    }

    pub fn step(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Kube(update) => self.on_kube(update, &mut out),
            Input::Writer(w) => {
                let became = w && !self.writer;
                self.writer = w;
                if became {
                    // The previous writer may have left work undone.
                    self.reconcile_all(&mut out);
                }
            }
            Input::Config { pools, statics } => {
                self.statics = statics;
                let mut all: Vec<Service> = self.statics.iter().map(static_service).collect();
                all.extend(self.services.values().cloned());
                let outcomes = self.alloc.set_pools(pools, &all);
                // `set_pools` allocated over every Service: if that may happen now, it was
                // the first allocation.
                self.started |= self.ready_to_allocate();
                self.handle(outcomes, &mut out);
                self.reconcile_all(&mut out);
                // Any IP may now belong to another pool, or to none.
                self.index_statics();
                self.dirty.extend(self.users.keys().copied());
                self.dirty.extend(self.announced.keys().copied());
            }
        }
        self.report(&mut out);
        out
    }

    /// Re-indexes the static services' IPs (they change only with the configuration).
    fn index_statics(&mut self) {
        let now: BTreeMap<ServiceKey, Vec<IpAddr>> = self
            .statics
            .iter()
            .filter_map(|s| {
                let key = ServiceKey::new(STATIC_NAMESPACE, s.name.clone());
                let ips = self.alloc.assignment(&key)?.ips.clone();
                Some((key, ips))
            })
            .collect();
        let old = std::mem::take(&mut self.static_ips);
        for (key, ips) in &old {
            self.unindex(key, ips);
        }
        for (key, ips) in &now {
            self.index(key, ips);
        }
        self.static_ips = now;
    }

    fn index(&mut self, key: &ServiceKey, ips: &[IpAddr]) {
        for ip in ips {
            let keys = self.users.entry(*ip).or_default();
            if let Err(at) = keys.binary_search(key) {
                keys.insert(at, key.clone());
            }
            self.dirty.insert(*ip);
        }
    }

    fn unindex(&mut self, key: &ServiceKey, ips: &[IpAddr]) {
        for ip in ips {
            if let Some(keys) = self.users.get_mut(ip) {
                if let Ok(at) = keys.binary_search(key) {
                    keys.remove(at);
                }
                if keys.is_empty() {
                    self.users.remove(ip);
                }
            }
            self.dirty.insert(*ip);
        }
    }

    /// Once the stores are synced: recomputes the dirty IPs and reports what changed.
    fn report(&mut self, out: &mut Vec<Output>) {
        if !self.synced() {
            return;
        }
        for ip in std::mem::take(&mut self.dirty) {
            self.recomputed += 1;
            match self.announcement_of(ip) {
                Some(a) => {
                    if self.announced.get(&ip) != Some(&a) {
                        self.announced.insert(ip, a.clone());
                        out.push(Output::Announce(a));
                    }
                }
                None => {
                    if self.announced.remove(&ip).is_some() {
                        out.push(Output::Withdraw(ip));
                    }
                }
            }
        }
    }

    /// The announcement of one IP, from the index: its Services (static ones first, in
    /// configuration order), their policies and endpoints.
    fn announcement_of(&self, ip: IpAddr) -> Option<Announcement> {
        let keys = self.users.get(&ip)?;
        let pool = self.alloc.pools().containing(&ip)?;
        let mut a = Announcement {
            ip,
            pool: pool.name.clone(),
            services: Vec::new(),
            local_only: true,
            endpoints: EndpointsByNode::new(),
            always_ready: false,
        };
        let statics = self
            .statics
            .iter()
            .map(|s| ServiceKey::new(STATIC_NAMESPACE, s.name.clone()))
            .filter(|k| keys.binary_search(k).is_ok() && self.static_ips.contains_key(k));
        let statics: Vec<ServiceKey> = statics.collect();
        for key in &statics {
            a.services.push(key.clone());
            a.always_ready = true;
            a.local_only = false;
            self.add_endpoints(&mut a, key);
        }
        for key in keys.iter().filter(|k| !statics.contains(k)) {
            let Some(svc) = self.services.get(key) else {
                continue;
            };
            a.services.push(key.clone());
            a.local_only &= svc.traffic_policy == TrafficPolicy::Local;
            self.add_endpoints(&mut a, key);
        }
        (!a.services.is_empty()).then_some(a)
    }

    fn add_endpoints(&self, a: &mut Announcement, key: &ServiceKey) {
        if let Some(eps) = self.endpoints.get(key) {
            for (node, n) in eps {
                *a.endpoints.entry(node.clone()).or_default() += n;
            }
        }
    }

    fn on_kube(&mut self, update: KubeUpdate, out: &mut Vec<Output>) {
        match update {
            KubeUpdate::Service(svc) => {
                let key = svc.key.clone();
                let old = self.services.get(&key).map(|s| s.current_ips.clone());
                if let Some(old) = &old {
                    self.unindex(&key, old);
                }
                self.index(&key, &svc.current_ips);
                self.services.insert(key.clone(), svc.clone());
                if self.started {
                    let before = self.alloc.assignment(&key).map(|a| a.ips.clone());
                    let outcome = self.alloc.update(&svc);
                    self.handle(vec![outcome], out);
                    self.reconcile_status(&key, out);
                    // A Service that let an address go (another one requested, another
                    // family or pool, no longer ours) may have freed it for a waiting one.
                    let after = self.alloc.assignment(&key).map(|a| &a.ips);
                    let freed = before
                        .iter()
                        .flatten()
                        .any(|ip| !after.is_some_and(|a| a.contains(ip)));
                    if freed {
                        self.retry_incomplete(Some(&key), out);
                    }
                }
            }
            KubeUpdate::ServiceGone(key) => {
                if let Some(old) = self.services.remove(&key) {
                    self.unindex(&key, &old.current_ips);
                }
                self.endpoints.remove(&key);
                // The object is gone: nothing to write, its addresses are free again —
                // and a Service waiting for one may now get it.
                if self.alloc.release(&key).is_some() {
                    self.retry_incomplete(None, out);
                }
            }
            KubeUpdate::Endpoints(key, by_node) => {
                if let Some(svc) = self.services.get(&key) {
                    self.dirty.extend(svc.current_ips.iter().copied());
                }
                if by_node.is_empty() {
                    self.endpoints.remove(&key);
                } else {
                    self.endpoints.insert(key, by_node);
                }
            }
            KubeUpdate::Node(node) => {
                self.nodes.insert(node.name.clone(), node);
            }
            KubeUpdate::NodeGone(name) => {
                self.nodes.remove(&name);
            }
            KubeUpdate::Namespace { name, labels } => {
                // Held IPs stay (see the allocator's rules): only the namespace's waiting
                // Services may gain, so only they are tried again.
                if self.alloc.set_namespace(&name, Some(labels)) && self.started {
                    let waiting: Vec<ServiceKey> =
                        self.alloc.incomplete_in(&name).cloned().collect();
                    self.retry(waiting, out);
                }
            }
            KubeUpdate::NamespaceGone(name) => {
                self.alloc.set_namespace(&name, None);
            }
            KubeUpdate::Synced(kind) => {
                let first = self.synced.insert(kind);
                if kind == Kind::Namespaces {
                    self.alloc.set_namespaces_listed(true);
                    if first && self.started {
                        // A reload introduced namespace selectors: Services that waited
                        // for the list may be served now.
                        self.retry_incomplete(None, out);
                    }
                }
                if !self.started && self.ready_to_allocate() {
                    self.started = true;
                    // Rebuild from status before anything new is allocated (the allocator
                    // keeps valid existing assignments first), so IPs never churn.
                    let mut all: Vec<Service> = self.statics.iter().map(static_service).collect();
                    all.extend(self.services.values().cloned());
                    let outcomes = self.alloc.sync(&all);
                    self.handle(outcomes, out);
                    self.reconcile_all(out);
                    // A Service's status may have kept a static service's address.
                    self.index_statics();
                }
            }
        }
    }

    /// Addresses were freed: every Service the allocator lists as incomplete (nothing held,
    /// or PreferDualStack missing a family) is tried again, in key order — the same order on
    /// every host. Complete Services are not touched. A retry that changes nothing posts no
    /// Event: the Service already carries the one saying why it waits, and one deletion
    /// must not repeat it on every waiting Service.
    fn retry_incomplete(&mut self, except: Option<&ServiceKey>, out: &mut Vec<Output>) {
        let waiting: Vec<ServiceKey> = self
            .alloc
            .incomplete()
            .filter(|k| Some(*k) != except)
            .cloned()
            .collect();
        self.retry(waiting, out);
    }

    /// Tries `waiting` again, in order (see [`Controller::retry_incomplete`]).
    fn retry(&mut self, waiting: Vec<ServiceKey>, out: &mut Vec<Output>) {
        for key in waiting {
            // Static services are not retried here: they change only with the config.
            let Some(svc) = self.services.get(&key) else {
                continue;
            };
            self.retried += 1;
            let mut outcome = self.alloc.update(svc);
            if matches!(outcome.change, Change::Unchanged | Change::Failed { .. }) {
                outcome.events.clear();
            }
            self.handle(vec![outcome], out);
            self.reconcile_status(&key, out);
        }
    }

    fn handle(&mut self, outcomes: Vec<Outcome>, out: &mut Vec<Output>) {
        for o in outcomes {
            if o.service.namespace == STATIC_NAMESPACE && !self.services.contains_key(&o.service) {
                if let Change::Failed { reason } = o.change {
                    out.push(Output::StaticUnallocated {
                        service: o.service,
                        reason,
                    });
                }
                continue;
            }
            if !self.writer {
                continue;
            }
            for ev in o.events {
                out.push(Output::Event {
                    service: o.service.clone(),
                    warning: ev.kind == EventType::Warning,
                    reason: ev.reason,
                    message: ev.message,
                });
            }
        }
    }

    fn reconcile_all(&self, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        for key in self.services.keys() {
            self.reconcile_status(key, out);
        }
    }

    /// Emits a status write when what the API server shows differs from the assignment.
    fn reconcile_status(&self, key: &ServiceKey, out: &mut Vec<Output>) {
        if !self.writer {
            return;
        }
        let Some(svc) = self.services.get(key) else {
            return;
        };
        let (ips, pool) = match self.alloc.assignment(key) {
            Some(a) => (a.ips.clone(), Some(a.pool.clone())),
            None => (Vec::new(), None),
        };
        if svc.current_ips != ips {
            // A Service that is not ours and carries no IP of our pools is left alone.
            if pool.is_none() && !svc.current_ips.iter().any(|ip| self.in_pools(ip)) {
                return;
            }
            out.push(Output::WriteStatus {
                service: key.clone(),
                ips,
                pool,
            });
        }
    }

    fn in_pools(&self, ip: &IpAddr) -> bool {
        self.alloc.pools().containing(ip).is_some()
    }

    /// What must be announced: every IP in a Service's status that lies in one of our
    /// pools (plus static services' IPs). Follows the status, not the allocator, so it is
    /// the same on every host and survives API outages.
    pub fn announcements(&self) -> Vec<Announcement> {
        let mut by_ip: BTreeMap<IpAddr, Announcement> = BTreeMap::new();
        let mut all_local: BTreeMap<IpAddr, bool> = BTreeMap::new();
        let statics = self.statics.iter().filter_map(|s| {
            let key = ServiceKey::new(STATIC_NAMESPACE, s.name.clone());
            let a = self.alloc.assignment(&key)?;
            Some((key, a.ips.clone(), TrafficPolicy::Cluster, true))
        });
        let kube = self.services.values().map(|s| {
            (
                s.key.clone(),
                s.current_ips.clone(),
                s.traffic_policy,
                false,
            )
        });
        for (key, ips, policy, is_static) in statics.chain(kube) {
            for ip in ips {
                let Some(pool) = self.alloc.pools().containing(&ip) else {
                    continue;
                };
                let a = by_ip.entry(ip).or_insert_with(|| Announcement {
                    ip,
                    pool: pool.name.clone(),
                    services: Vec::new(),
                    local_only: false,
                    endpoints: EndpointsByNode::new(),
                    always_ready: false,
                });
                a.services.push(key.clone());
                a.always_ready |= is_static;
                if let Some(eps) = self.endpoints.get(&key) {
                    for (node, n) in eps {
                        *a.endpoints.entry(node.clone()).or_default() += n;
                    }
                }
                let local = all_local.entry(ip).or_insert(true);
                *local &= policy == TrafficPolicy::Local;
            }
        }
        for (ip, a) in by_ip.iter_mut() {
            a.local_only = all_local.get(ip).copied().unwrap_or(false);
        }
        by_ip.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        IpFamily, IpFamilyPolicy, IpRange, Pool, PoolProtocol, Protocol, ServicePort,
    };

    fn pool(name: &str, first: &str, last: &str) -> Pool {
        Pool {
            name: name.into(),
            protocol: PoolProtocol::Layer2,
            ranges: vec![IpRange::new(first.parse().unwrap(), last.parse().unwrap()).unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            interfaces: vec![],
            node_selectors: vec![],
            bgp_advertisements: vec![],
            service_allocation: Default::default(),
        }
    }

    fn svc(name: &str) -> Service {
        Service {
            key: ServiceKey::new("default", name),
            ports: vec![ServicePort {
                protocol: Protocol::Tcp,
                port: 80,
            }],
            ..Service::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn writer_ctl(pools: Vec<Pool>) -> Controller {
        let mut c = Controller::new(pools, vec![], None, true);
        assert!(c.step(Input::Writer(true)).is_empty());
        c
    }

    fn sync_all(c: &mut Controller) -> Vec<Output> {
        let mut out = c.step(Input::Kube(KubeUpdate::Synced(Kind::Services)));
        out.extend(c.step(Input::Kube(KubeUpdate::Synced(Kind::EndpointSlices))));
        out.extend(c.step(Input::Kube(KubeUpdate::Synced(Kind::Nodes))));
        out
    }

    fn writes(out: &[Output]) -> Vec<(String, Vec<IpAddr>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::WriteStatus { service, ips, .. } => {
                    Some((service.to_string(), ips.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_written_before_the_services_have_synced() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.2")]);
        let out = c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        assert!(out.is_empty());
        assert!(!c.synced());
        let out = sync_all(&mut c);
        assert_eq!(
            writes(&out),
            vec![("default/a".into(), vec![ip("10.0.0.1")])]
        );
        assert!(c.synced());
    }

    #[test]
    fn new_service_after_sync_gets_an_ip_and_an_ipallocated_event() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.2")]);
        sync_all(&mut c);
        let out = c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        assert_eq!(
            writes(&out),
            vec![("default/a".into(), vec![ip("10.0.0.1")])]
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Event {
                reason: "IPAllocated",
                warning: false,
                ..
            }
        )));
    }

    #[test]
    fn the_status_echo_from_the_watch_is_a_no_op() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.2")]);
        sync_all(&mut c);
        c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        let mut written = svc("a");
        written.current_ips = vec![ip("10.0.0.1")];
        // No write and no Event; the status now holds the IP, so it is announced.
        let out = c.step(Input::Kube(KubeUpdate::Service(written)));
        assert!(
            out.iter()
                .all(|o| matches!(o, Output::Announce(a) if a.ip == ip("10.0.0.1"))),
            "{out:?}"
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn existing_status_is_kept_across_a_restart() {
        // Restart: the API server says b holds .2 and a holds nothing yet.
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.3")]);
        let mut b = svc("b");
        b.current_ips = vec![ip("10.0.0.2")];
        c.step(Input::Kube(KubeUpdate::Service(b)));
        c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        let out = sync_all(&mut c);
        // b keeps .2 (no write); a gets the lowest free, .1.
        assert_eq!(
            writes(&out),
            vec![("default/a".into(), vec![ip("10.0.0.1")])]
        );
    }

    #[test]
    fn a_non_writer_computes_but_writes_nothing_until_it_becomes_writer() {
        let mut c = Controller::new(vec![pool("p", "10.0.0.1", "10.0.0.2")], vec![], None, true);
        c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        assert!(sync_all(&mut c).is_empty());
        assert_eq!(
            c.allocator()
                .assignment(&ServiceKey::new("default", "a"))
                .unwrap()
                .ips,
            vec![ip("10.0.0.1")]
        );
        let out = c.step(Input::Writer(true));
        assert_eq!(
            writes(&out),
            vec![("default/a".into(), vec![ip("10.0.0.1")])]
        );
    }

    #[test]
    fn exhausted_pool_yields_allocation_failed_and_a_deleted_service_frees_its_ip() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.1")]);
        sync_all(&mut c);
        c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        let out = c.step(Input::Kube(KubeUpdate::Service(svc("b"))));
        assert!(writes(&out).is_empty());
        assert!(out.iter().any(|o| matches!(o,
            Output::Event { reason: "AllocationFailed", warning: true, message, .. }
                if message.contains("no available IPs"))));
        let out = c.step(Input::Kube(KubeUpdate::ServiceGone(ServiceKey::new(
            "default", "a",
        ))));
        assert_eq!(
            writes(&out),
            vec![("default/b".into(), vec![ip("10.0.0.1")])]
        );
    }

    #[test]
    fn without_kubernetes_static_services_are_announced_from_the_start() {
        let statics = vec![StaticService {
            name: "vip".into(),
            pool: "p".into(),
            ip: Some(ip("10.0.0.2")),
            assign: false,
            ports: vec![],
        }];
        let c = Controller::new(
            vec![pool("p", "10.0.0.1", "10.0.0.4")],
            statics,
            None,
            false,
        );
        let full: BTreeMap<IpAddr, Announcement> =
            c.announcements().into_iter().map(|a| (a.ip, a)).collect();
        assert_eq!(
            c.announced().keys().copied().collect::<Vec<_>>(),
            [ip("10.0.0.2")]
        );
        assert_eq!(c.announced(), &full);
    }

    #[test]
    fn static_services_reserve_their_address_before_kubernetes_services() {
        let statics = vec![StaticService {
            name: "apiserver".into(),
            pool: "p".into(),
            ip: Some(ip("10.0.0.1")),
            assign: false,
            ports: vec![],
        }];
        let mut c = Controller::new(vec![pool("p", "10.0.0.1", "10.0.0.2")], statics, None, true);
        c.step(Input::Writer(true));
        c.step(Input::Kube(KubeUpdate::Service(svc("a"))));
        let out = sync_all(&mut c);
        assert_eq!(
            writes(&out),
            vec![("default/a".into(), vec![ip("10.0.0.2")])]
        );
        let ann = c.announcements();
        assert_eq!(
            ann.len(),
            1,
            "only the static IP is in a status yet: {ann:?}"
        );
        assert_eq!(
            ann[0].services,
            vec![ServiceKey::new(STATIC_NAMESPACE, "apiserver")]
        );
    }

    #[test]
    fn a_kubernetes_service_named_like_a_static_one_leaves_its_address_alone() {
        let statics = vec![StaticService {
            name: "web".into(),
            pool: "p".into(),
            ip: Some(ip("10.0.0.1")),
            assign: false,
            ports: vec![],
        }];
        let mut c = Controller::new(vec![pool("p", "10.0.0.1", "10.0.0.2")], statics, None, true);
        c.step(Input::Writer(true));
        // The namespace a static service's key would have had before: any user may create it.
        let mut hostile = svc("web");
        hostile.key = ServiceKey::new("static", "web");
        hostile.requested_ips = vec![ip("10.0.0.1")];
        c.step(Input::Kube(KubeUpdate::Service(hostile)));
        let out = sync_all(&mut c);
        assert!(
            writes(&out)
                .iter()
                .all(|(_, ips)| !ips.contains(&ip("10.0.0.1"))),
            "the Kubernetes Service must not get the static address: {out:?}"
        );
        let ann = c.announcements();
        assert_eq!(ann.len(), 1, "{ann:?}");
        assert_eq!(ann[0].ip, ip("10.0.0.1"));
        assert_eq!(
            ann[0].services,
            vec![ServiceKey::new(STATIC_NAMESPACE, "web")]
        );
        assert_eq!(ann[0].services[0].to_string(), "lb.toml/web");
    }

    #[test]
    fn a_static_ipv6_service_gets_its_ipv6_address() {
        let statics = vec![StaticService {
            name: "vip6".into(),
            pool: "p6".into(),
            ip: Some(ip("fd00:10::200")),
            assign: false,
            ports: vec![],
        }];
        let c = Controller::new(
            vec![pool("p6", "fd00:10::200", "fd00:10::2ff")],
            statics,
            None,
            false,
        );
        let ann = c.announcements();
        assert_eq!(ann.len(), 1, "{ann:?}");
        assert_eq!(ann[0].ip, ip("fd00:10::200"));
        assert!(ann[0].always_ready);
    }

    #[test]
    fn announcements_follow_the_status_and_mark_local_only_ips() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.9")]);
        let mut a = svc("a");
        a.current_ips = vec![ip("10.0.0.5")];
        a.traffic_policy = TrafficPolicy::Local;
        let mut foreign = svc("foreign");
        foreign.current_ips = vec![ip("192.0.2.1")];
        c.step(Input::Kube(KubeUpdate::Service(a)));
        c.step(Input::Kube(KubeUpdate::Service(foreign)));
        c.step(Input::Kube(KubeUpdate::Endpoints(
            ServiceKey::new("default", "a"),
            [("node-1".to_string(), 2)].into(),
        )));
        let ann = c.announcements();
        assert_eq!(ann.len(), 1, "an IP outside our pools is not announced");
        assert_eq!(ann[0].ip, ip("10.0.0.5"));
        assert!(ann[0].local_only);
        assert_eq!(ann[0].endpoints.get("node-1"), Some(&2));
    }

    #[test]
    fn reload_with_a_shrunk_pool_moves_only_the_service_that_left_it() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.9")]);
        sync_all(&mut c);
        for (name, addr) in [("a", "10.0.0.1"), ("b", "10.0.0.9")] {
            let mut s = svc(name);
            s.current_ips = vec![ip(addr)];
            c.step(Input::Kube(KubeUpdate::Service(s)));
        }
        let out = c.step(Input::Config {
            pools: vec![pool("p", "10.0.0.1", "10.0.0.5")].into(),
            statics: vec![],
        });
        assert_eq!(
            writes(&out),
            vec![("default/b".into(), vec![ip("10.0.0.2")])]
        );
    }

    #[test]
    fn a_config_that_would_take_a_services_ip_is_reported_and_a_compatible_one_is_not() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.9")]);
        sync_all(&mut c);
        for (name, addr) in [("a", "10.0.0.1"), ("b", "10.0.0.9")] {
            let mut s = svc(name);
            s.current_ips = vec![ip(addr)];
            c.step(Input::Kube(KubeUpdate::Service(s)));
        }
        // Shrunk: b's 10.0.0.9 would move.
        let orphaned = c.orphaned_by(&Pools::from(vec![pool("p", "10.0.0.1", "10.0.0.5")]), &[]);
        assert_eq!(
            orphaned,
            vec![(ServiceKey::new("default", "b"), vec![ip("10.0.0.9")])]
        );
        // Replaced by another range entirely (the guide's layer-2 → BGP ConfigMap): both.
        assert_eq!(
            c.orphaned_by(
                &Pools::from(vec![pool("q", "172.19.100.0", "172.19.100.255")]),
                &[]
            )
            .len(),
            2
        );
        // Renamed, or grown: nothing moves.
        assert!(
            c.orphaned_by(
                &Pools::from(vec![pool("renamed", "10.0.0.1", "10.0.0.9")]),
                &[]
            )
            .is_empty()
        );
        assert!(
            c.orphaned_by(&Pools::from(vec![pool("p", "10.0.0.1", "10.0.0.99")]), &[])
                .is_empty()
        );
        // The check changed nothing.
        assert_eq!(
            c.allocator()
                .assignment(&ServiceKey::new("default", "b"))
                .map(|a| a.ips.clone()),
            Some(vec![ip("10.0.0.9")])
        );
    }

    fn pool_of(name: &str, ranges: &[(&str, &str)]) -> Pool {
        let mut p = pool(name, ranges[0].0, ranges[0].1);
        p.ranges = ranges
            .iter()
            .map(|(a, b)| IpRange::new(ip(a), ip(b)).unwrap())
            .collect();
        p
    }

    fn family_svc(name: &str, policy: IpFamilyPolicy, families: &[IpFamily]) -> Service {
        let mut s = svc(name);
        s.ip_family_policy = policy;
        s.ip_families = families.to_vec();
        s
    }

    /// Steps `input`, then plays the API server: every status write comes back as a watch
    /// update of the Service carrying it, until nothing more is written. All outputs.
    fn step_echoed(c: &mut Controller, input: Input) -> Vec<Output> {
        let mut all = c.step(input);
        let mut pending = writes(&all);
        for _ in 0..8 {
            if pending.is_empty() {
                return all;
            }
            let mut next = Vec::new();
            for (key, ips) in pending {
                let (ns, name) = key.split_once('/').unwrap();
                let Some(mut s) = c.services().get(&ServiceKey::new(ns, name)).cloned() else {
                    continue;
                };
                s.current_ips = ips;
                let out = c.step(Input::Kube(KubeUpdate::Service(s)));
                next.extend(writes(&out));
                all.extend(out);
            }
            pending = next;
        }
        panic!("status writes did not settle: {all:?}");
    }

    fn events_of<'a>(out: &'a [Output], name: &str) -> Vec<(&'static str, &'a str)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event {
                    service,
                    reason,
                    message,
                    ..
                } if service.name == name => Some((*reason, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// One dual pool whose single IPv6 address is held by `v6-holder`, and a PreferDualStack
    /// `web` that therefore got IPv4 only.
    fn ipv6_range_full() -> Controller {
        let mut c = writer_ctl(vec![pool_of(
            "dual",
            &[("10.0.0.1", "10.0.0.9"), ("fd00::1", "fd00::1")],
        )]);
        sync_all(&mut c);
        let holder = family_svc("v6-holder", IpFamilyPolicy::SingleStack, &[IpFamily::V6]);
        step_echoed(&mut c, Input::Kube(KubeUpdate::Service(holder)));
        let web = family_svc(
            "web",
            IpFamilyPolicy::PreferDualStack,
            &[IpFamily::V4, IpFamily::V6],
        );
        let out = step_echoed(&mut c, Input::Kube(KubeUpdate::Service(web)));
        assert_eq!(
            writes(&out),
            vec![("default/web".into(), vec![ip("10.0.0.1")])]
        );
        assert!(
            events_of(&out, "web").contains(&(
                "AdditionalAssignFailed",
                "cannot assign additional IP in PreferDualStack: no available IPs in pool dual for ipv6 IPFamily"
            )),
            "{out:?}"
        );
        c
    }

    #[test]
    fn prefer_dual_stack_gets_its_missing_family_when_the_holder_is_deleted() {
        let mut c = ipv6_range_full();
        let out = step_echoed(
            &mut c,
            Input::Kube(KubeUpdate::ServiceGone(ServiceKey::new(
                "default",
                "v6-holder",
            ))),
        );
        assert_eq!(
            writes(&out),
            vec![("default/web".into(), vec![ip("10.0.0.1"), ip("fd00::1")])]
        );
        assert_eq!(
            events_of(&out, "web"),
            vec![("IPAllocated", r#"Assigned additional IP "fd00::1""#)]
        );
        assert_eq!(c.allocator().incomplete().count(), 0);
    }

    #[test]
    fn prefer_dual_stack_gets_its_missing_family_when_the_holder_changes_family() {
        let mut c = ipv6_range_full();
        let mut holder = c.services()[&ServiceKey::new("default", "v6-holder")].clone();
        holder.ip_families = vec![IpFamily::V4];
        let out = step_echoed(&mut c, Input::Kube(KubeUpdate::Service(holder)));
        assert_eq!(
            writes(&out),
            vec![
                ("default/v6-holder".into(), vec![ip("10.0.0.2")]),
                ("default/web".into(), vec![ip("10.0.0.1"), ip("fd00::1")]),
            ]
        );
    }

    #[test]
    fn prefer_dual_stack_gets_its_missing_family_when_a_reload_grows_the_pool() {
        let mut c = ipv6_range_full();
        let out = step_echoed(
            &mut c,
            Input::Config {
                pools: vec![pool_of(
                    "dual",
                    &[("10.0.0.1", "10.0.0.9"), ("fd00::1", "fd00::2")],
                )]
                .into(),
                statics: vec![],
            },
        );
        assert_eq!(
            writes(&out),
            vec![("default/web".into(), vec![ip("10.0.0.1"), ip("fd00::2")])]
        );
        assert_eq!(
            events_of(&out, "web"),
            vec![("IPAllocated", r#"Assigned additional IP "fd00::2""#)]
        );
    }

    #[test]
    fn a_freed_address_goes_to_the_first_waiting_service_in_key_order_and_no_other_moves() {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.1", "10.0.0.2")]);
        sync_all(&mut c);
        for name in ["a", "b", "d", "c"] {
            step_echoed(&mut c, Input::Kube(KubeUpdate::Service(svc(name))));
        }
        assert_eq!(
            c.allocator().incomplete().collect::<Vec<_>>(),
            [
                &ServiceKey::new("default", "c"),
                &ServiceKey::new("default", "d")
            ]
        );
        let out = step_echoed(
            &mut c,
            Input::Kube(KubeUpdate::ServiceGone(ServiceKey::new("default", "a"))),
        );
        // c (created after d) comes first by key; b keeps its IP; d, still waiting, is not
        // told again why.
        assert_eq!(
            writes(&out),
            vec![("default/c".into(), vec![ip("10.0.0.1")])]
        );
        assert!(events_of(&out, "d").is_empty(), "{out:?}");
        assert!(events_of(&out, "b").is_empty(), "{out:?}");
        assert_eq!(
            c.allocator().incomplete().collect::<Vec<_>>(),
            [&ServiceKey::new("default", "d")]
        );
    }

    #[test]
    fn a_require_dual_stack_service_no_pool_can_serve_gets_an_event_saying_so() {
        let mut c = ipv6_range_full();
        let out = c.step(Input::Kube(KubeUpdate::Service(family_svc(
            "both",
            IpFamilyPolicy::RequireDualStack,
            &[IpFamily::V4, IpFamily::V6],
        ))));
        assert_eq!(
            events_of(&out, "both"),
            vec![(
                "AllocationFailed",
                r#"Failed to allocate IP for "default/both": no available IPs: no auto-assign pool has both an IPv4 and an IPv6 address free for a RequireDualStack Service"#
            )]
        );
    }

    /// `n` Services holding their IPs and three waiting (two for an IPv4, one for its IPv6);
    /// then one holder deleted: how many Services that retried.
    fn retries_when_one_address_is_freed_among(n: usize) -> u64 {
        let mut c = writer_ctl(vec![
            pool("p", "10.0.0.0", "10.0.255.255"),
            pool_of("small", &[("10.1.0.1", "10.1.0.1"), ("fd01::1", "fd01::1")]),
        ]);
        sync_all(&mut c);
        for i in 0..n {
            let mut s = svc(&format!("s{i}"));
            s.current_ips = vec![ip(&format!("10.0.{}.{}", i / 256, i % 256))];
            c.step(Input::Kube(KubeUpdate::Service(s)));
        }
        let small = |mut s: Service| {
            s.pool = Some("small".into());
            s
        };
        step_echoed(
            &mut c,
            Input::Kube(KubeUpdate::Service(small(svc("holder")))),
        );
        let v6 = family_svc("v6", IpFamilyPolicy::SingleStack, &[IpFamily::V6]);
        step_echoed(&mut c, Input::Kube(KubeUpdate::Service(small(v6))));
        for name in ["wait-1", "wait-2"] {
            step_echoed(&mut c, Input::Kube(KubeUpdate::Service(small(svc(name)))));
        }
        let prefer = family_svc(
            "wait-3",
            IpFamilyPolicy::PreferDualStack,
            &[IpFamily::V4, IpFamily::V6],
        );
        step_echoed(&mut c, Input::Kube(KubeUpdate::Service(small(prefer))));
        assert_eq!(c.allocator().incomplete().count(), 3);
        let before = c.retried();
        let out = step_echoed(
            &mut c,
            Input::Kube(KubeUpdate::ServiceGone(ServiceKey::new(
                "default", "holder",
            ))),
        );
        assert_eq!(
            writes(&out),
            vec![("default/wait-1".into(), vec![ip("10.1.0.1")])]
        );
        c.retried() - before
    }

    #[test]
    fn work_per_freed_address_is_the_number_of_waiting_services_not_of_all() {
        let small = retries_when_one_address_is_freed_among(100);
        let large = retries_when_one_address_is_freed_among(10_000);
        assert_eq!(small, 3, "each waiting Service tried once");
        assert_eq!(large, small);
    }

    /// A cluster of `n` Services that hold their IPs, synced; then one Service created,
    /// its status echoed back, its endpoints reported and it deleted: the work those four
    /// updates take.
    fn work_of_one_service_among(n: usize) -> u64 {
        let mut c = writer_ctl(vec![pool("p", "10.0.0.0", "10.0.255.255")]);
        sync_all(&mut c);
        for i in 0..n {
            let mut s = svc(&format!("s{i}"));
            s.current_ips = vec![ip(&format!("10.0.{}.{}", i / 256, i % 256))];
            c.step(Input::Kube(KubeUpdate::Service(s)));
        }
        let before = c.recomputed();
        let out = c.step(Input::Kube(KubeUpdate::Service(svc("new"))));
        let (_, ips) = writes(&out).pop().expect("an IP for the new Service");
        let mut echoed = svc("new");
        echoed.current_ips = ips.clone();
        let out = c.step(Input::Kube(KubeUpdate::Service(echoed)));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Announce(a) if a.ip == ips[0]))
        );
        c.step(Input::Kube(KubeUpdate::Endpoints(
            ServiceKey::new("default", "new"),
            [("n1".to_string(), 1)].into(),
        )));
        let out = c.step(Input::Kube(KubeUpdate::ServiceGone(ServiceKey::new(
            "default", "new",
        ))));
        assert!(out.contains(&Output::Withdraw(ips[0])));
        c.recomputed() - before
    }

    #[test]
    fn work_per_update_does_not_grow_with_the_number_of_services() {
        let small = work_of_one_service_among(100);
        let large = work_of_one_service_among(10_000);
        assert_eq!(
            small, large,
            "announcements recomputed for the same four updates"
        );
        assert!(
            small <= 4,
            "{small} announcements recomputed for four updates of one IP"
        );
    }

    fn team_pool(name: &str, first: &str, last: &str, team: &str) -> Pool {
        let mut p = pool(name, first, last);
        p.service_allocation.namespace_selectors = vec![crate::model::LabelSelector {
            match_labels: [("team".to_string(), team.to_string())].into(),
            match_expressions: vec![],
        }];
        p
    }

    fn namespace(name: &str, team: &str) -> Input {
        Input::Kube(KubeUpdate::Namespace {
            name: name.into(),
            labels: [("team".to_string(), team.to_string())].into(),
        })
    }

    fn svc_in(ns: &str, name: &str) -> Service {
        let mut s = svc(name);
        s.key = ServiceKey::new(ns, name);
        s
    }

    #[test]
    fn with_namespace_selectors_nothing_is_allocated_before_the_namespaces_are_listed() {
        let mut c = writer_ctl(vec![
            pool("any", "10.0.0.1", "10.0.0.9"),
            team_pool("a", "10.0.1.1", "10.0.1.9", "a"),
        ]);
        c.step(Input::Kube(KubeUpdate::Service(svc_in("ns-a", "web"))));
        assert!(sync_all(&mut c).is_empty(), "waits for the Namespaces");
        c.step(namespace("ns-a", "a"));
        let out = c.step(Input::Kube(KubeUpdate::Synced(Kind::Namespaces)));
        assert_eq!(
            writes(&out),
            vec![("ns-a/web".into(), vec![ip("10.0.1.1")])]
        );
    }

    #[test]
    fn without_namespace_selectors_allocation_does_not_wait_for_namespaces() {
        let mut c = writer_ctl(vec![pool("any", "10.0.0.1", "10.0.0.9")]);
        c.step(Input::Kube(KubeUpdate::Service(svc_in("ns-a", "web"))));
        assert_eq!(writes(&sync_all(&mut c)).len(), 1);
    }

    /// `n` Services holding IPs in namespace "busy", and one waiting in "ns" (which is in no
    /// team yet, and requests an IP of team a's pool); then "ns" joins team a: how many
    /// Services that retried, and what was written.
    fn relabel_among(n: usize) -> (u64, Vec<(String, Vec<IpAddr>)>) {
        let mut c = writer_ctl(vec![
            pool("any", "10.0.0.0", "10.0.255.255"),
            team_pool("a", "10.1.0.1", "10.1.0.9", "a"),
        ]);
        c.step(namespace("ns", "none"));
        c.step(namespace("busy", "none"));
        c.step(Input::Kube(KubeUpdate::Synced(Kind::Namespaces)));
        sync_all(&mut c);
        for i in 0..n {
            let mut s = svc_in("busy", &format!("s{i}"));
            s.current_ips = vec![ip(&format!("10.0.{}.{}", i / 256, i % 256))];
            c.step(Input::Kube(KubeUpdate::Service(s)));
        }
        let mut asks = svc_in("ns", "asks");
        asks.requested_ips = vec![ip("10.1.0.5")];
        let out = step_echoed(&mut c, Input::Kube(KubeUpdate::Service(asks)));
        assert!(writes(&out).is_empty());
        assert_eq!(
            events_of(&out, "asks"),
            vec![(
                "AllocationFailed",
                r#"Failed to allocate IP for "ns/asks": pool a not compatible for ip assignment: namespace "ns" is not among its namespaces and its Namespace's labels match none of its namespace_selectors"#
            )]
        );
        let before = c.retried();
        // Relabelling a namespace with only served Services retries nothing.
        c.step(namespace("busy", "a"));
        assert_eq!(c.retried(), before);
        let out = step_echoed(&mut c, namespace("ns", "a"));
        (c.retried() - before, writes(&out))
    }

    #[test]
    fn a_namespace_relabel_retries_only_that_namespaces_waiting_services() {
        let (small, written) = relabel_among(10);
        assert_eq!(written, vec![("ns/asks".into(), vec![ip("10.1.0.5")])]);
        let (large, _) = relabel_among(5_000);
        assert_eq!((small, large), (1, 1));
    }

    #[test]
    fn a_namespace_leaving_its_team_keeps_its_services_ips() {
        let mut c = writer_ctl(vec![
            pool("any", "10.0.0.1", "10.0.0.9"),
            team_pool("a", "10.0.1.1", "10.0.1.9", "a"),
        ]);
        c.step(namespace("ns", "a"));
        c.step(Input::Kube(KubeUpdate::Synced(Kind::Namespaces)));
        sync_all(&mut c);
        step_echoed(
            &mut c,
            Input::Kube(KubeUpdate::Service(svc_in("ns", "web"))),
        );
        let out = step_echoed(&mut c, namespace("ns", "b"));
        assert!(writes(&out).is_empty(), "{out:?}");
        // Not on a restart either (the status is rebuilt, not re-chosen).
        let mut fresh = writer_ctl(vec![
            pool("any", "10.0.0.1", "10.0.0.9"),
            team_pool("a", "10.0.1.1", "10.0.1.9", "a"),
        ]);
        fresh.step(Input::Kube(KubeUpdate::Service(
            c.services()[&ServiceKey::new("ns", "web")].clone(),
        )));
        fresh.step(namespace("ns", "b"));
        fresh.step(Input::Kube(KubeUpdate::Synced(Kind::Namespaces)));
        assert!(writes(&sync_all(&mut fresh)).is_empty());
        assert_eq!(
            fresh
                .allocator()
                .assignment(&ServiceKey::new("ns", "web"))
                .map(|a| a.ips.clone()),
            Some(vec![ip("10.0.1.1")])
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the order of creations, changes, deletions and reloads, no Service is
        /// left waiting while an address it could take is free — what reprocessing every
        /// Service (MetalLB's way) would find — and Services that were complete before a
        /// deletion are not moved by it.
        #[test]
        fn no_service_waits_while_an_address_it_could_take_is_free(
            ops in proptest::collection::vec((0u8..4, 0usize..6, 0usize..6), 1..30)
        ) {
            let pools = |grown: bool| {
                let mut dual = vec![("10.0.0.1", "10.0.0.3"), ("fd00::1", "fd00::2")];
                if grown {
                    dual.push(("fd00::10", "fd00::10"));
                }
                vec![pool_of("dual", &dual), pool_of("v4", &[("10.0.1.1", "10.0.1.1")])]
            };
            let mut c = writer_ctl(pools(false));
            sync_all(&mut c);
            let kinds = |k: usize, name: &str| -> Service {
                use IpFamily::{V4, V6};
                use IpFamilyPolicy::*;
                match k {
                    0 => family_svc(name, SingleStack, &[V4]),
                    1 => family_svc(name, SingleStack, &[V6]),
                    2 => family_svc(name, PreferDualStack, &[V4, V6]),
                    3 => family_svc(name, PreferDualStack, &[V6, V4]),
                    4 => family_svc(name, RequireDualStack, &[V4, V6]),
                    _ => {
                        let mut s = family_svc(name, PreferDualStack, &[V4, V6]);
                        s.pool = Some("v4".into());
                        s
                    }
                }
            };
            for (op, a, k) in ops {
                let name = format!("s{a}");
                let key = ServiceKey::new("default", name.as_str());
                let complete_before: Vec<ServiceKey> = c
                    .allocator()
                    .assignments()
                    .map(|(k, _)| k.clone())
                    .filter(|k| !c.allocator().incomplete().any(|i| i == k))
                    .collect();
                let input = match op {
                    0 | 1 => Input::Kube(KubeUpdate::Service(kinds(k, &name))),
                    2 => Input::Kube(KubeUpdate::ServiceGone(key.clone())),
                    _ => Input::Config { pools: Pools::from(pools(k % 2 == 0)), statics: vec![] },
                };
                let out = step_echoed(&mut c, input);
                if op == 2 {
                    for (written, _) in writes(&out) {
                        proptest::prop_assert!(
                            !complete_before.iter().any(|k| k.to_string() == written),
                            "{written} was complete and moved: {out:?}"
                        );
                    }
                }
                let mut reprocessed = c.allocator().clone();
                for svc in c.services().values() {
                    let held = c.allocator().assignment(&svc.key).cloned();
                    reprocessed.update(svc);
                    proptest::prop_assert_eq!(
                        reprocessed.assignment(&svc.key),
                        held.as_ref(),
                        "{} could have been served: {:?}",
                        svc.key,
                        c.allocator().assignments().collect::<Vec<_>>()
                    );
                }
            }
        }

        /// Whatever the order of updates, what the outputs announced equals the full
        /// recomputation.
        #[test]
        fn incremental_announcements_equal_the_full_recomputation(
            ops in proptest::collection::vec((0u8..6, 0usize..6, 0usize..4, 0usize..3), 1..40)
        ) {
            let mut c = Controller::new(
                vec![pool("p", "10.0.0.1", "10.0.0.4"), pool("q", "10.0.1.1", "10.0.1.2")],
                vec![StaticService {
                    name: "api".into(),
                    pool: "q".into(),
                    ip: Some(ip("10.0.1.1")),
                    assign: false,
                    ports: vec![],
                }],
                None,
                true,
            );
            let mut announced: BTreeMap<IpAddr, Announcement> = BTreeMap::new();
            let apply = |c: &mut Controller, announced: &mut BTreeMap<IpAddr, Announcement>, input| {
                for o in c.step(input) {
                    match o {
                        Output::Announce(a) => { announced.insert(a.ip, a); }
                        Output::Withdraw(ip) => { announced.remove(&ip); }
                        _ => {}
                    }
                }
            };
            let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2", "192.0.2.1"];
            for (op, a, b, n) in ops {
                let key = ServiceKey::new("default", format!("s{a}"));
                let input = match op {
                    0 | 1 => {
                        let mut s = svc(&format!("s{a}"));
                        s.current_ips = vec![ip(ips[b])];
                        if op == 1 {
                            s.traffic_policy = TrafficPolicy::Local;
                        }
                        Input::Kube(KubeUpdate::Service(s))
                    }
                    2 => Input::Kube(KubeUpdate::ServiceGone(key)),
                    3 => Input::Kube(KubeUpdate::Endpoints(
                        key,
                        (0..n).map(|i| (format!("n{i}"), i + 1)).collect(),
                    )),
                    4 => Input::Kube(KubeUpdate::Synced([Kind::Services, Kind::EndpointSlices, Kind::Nodes][n])),
                    _ => Input::Config {
                        pools: vec![pool("p", "10.0.0.1", "10.0.0.4"), pool("q", "10.0.1.1", "10.0.1.2")]
                            .into_iter()
                            .take(1 + n % 2)
                            .collect(),
                        statics: vec![],
                    },
                };
                apply(&mut c, &mut announced, input);
                if c.synced() {
                    let full: BTreeMap<IpAddr, Announcement> =
                        c.announcements().into_iter().map(|a| (a.ip, a)).collect();
                    proptest::prop_assert_eq!(&announced, &full);
                    proptest::prop_assert_eq!(c.announced(), &full);
                }
            }
        }
    }
}
