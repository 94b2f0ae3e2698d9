//! The MetalLB-compatible IP allocator (pure).
//!
//! [`Allocator`] decides which IPs each `type: LoadBalancer` [`Service`] gets from the
//! configured [`Pool`]s. It has no I/O, no clock and no randomness, and iterates only ordered
//! maps: the same calls give the same answers on every host.
//!
//! It follows MetalLB's controller (`controller/service.go`, `convergeBalancer` and
//! `allocateIPs`) and allocator (`internal/allocator/allocator.go`):
//!
//! 1. An IP the Service already has (`status.loadBalancer.ingress`, i.e.
//!    [`Service::current_ips`]) is kept while it is still valid: of the Service's IP family,
//!    inside a pool, sharable with the other users of the IP, from the `address-pool` the
//!    Service names (if any), equal to the IPs it requests (if any). Otherwise it is cleared
//!    (a `ClearAssignment` event when the config no longer allows it) and allocation starts
//!    afresh.
//! 2. Fresh allocation: requested IPs (`loadBalancerIPs` / `spec.loadBalancerIP`, from any
//!    pool, `auto_assign` or not), else the first free address of the named pool, else the
//!    auto-assign pools in the order below. "First free" is the lowest address, ranges in
//!    config order, that is unused or that the Service may share. A pool that is not
//!    *compatible* with the Service (below) is never used by a fresh allocation: requested
//!    IPs or a named pool in it fail with the reason.
//! 3. Sharing: both Services carry the same non-empty sharing key, the same backend key
//!    (`Cluster`, or `Local` with the same selector), and no (protocol, port) is used twice.
//! 4. Pools chosen by namespace and Service (MetalLB's `serviceAllocation`, PR 1693). A pool
//!    is *compatible* with a Service when (a) it names no namespaces and has no
//!    `namespace_selectors`, or the Service's namespace is one of its `namespaces` or its
//!    Namespace's labels match one of its `namespace_selectors`; and (b) it has no
//!    `service_selectors`, or the Service's labels match one of them. A pool is *pinned* to a
//!    Service when it is auto-assign, compatible, and restricts namespaces or Services (a
//!    or b non-trivially). Auto allocation tries, in this order:
//!    - the pinned pools, those with a `priority` > 0 first by ascending priority, then those
//!      without one; ties in config order (MetalLB's sort is unstable);
//!    - then, only if none of them has a free address, the auto-assign pools with no
//!      `serviceAllocation` at all, in config order.
//!
//!    A pool with a `serviceAllocation` that is pinned to nobody (its selectors match nothing,
//!    or it has only a priority) is never auto-assigned.
//!
//!    Compatibility is a rule for *choosing* an address, not for keeping one: rule 1 does not
//!    check it, so a Service keeps its IP when its Namespace's or its own labels change, or a
//!    reload changes a pool's selectors (MetalLB's `Assign` checks it for held IPs too, and
//!    clears them on the re-convergence those changes trigger; lb never moves a held IP for a
//!    label). To move a Service to its new pool, name the pool (`address-pool`) or recreate
//!    the Service.
//!
//! Every call returns one [`Outcome`] per Service it was given, with the Events MetalLB would
//! record. The status of a Service should then be [`Allocator::assignment`] (no assignment:
//! empty `status.loadBalancer`); [`Change`] says whether that differs from
//! `Service::current_ips`.
//!
//! Deviations from MetalLB, on purpose: auto-assign pools are tried in config order (MetalLB
//! walks a Go map, so in random order); a pool whose `namespace_selectors` match no
//! Namespace (and that names none) is compatible with no Service (MetalLB then lets any
//! namespace request its IPs); a `Local` Service with an empty selector does not
//! share with a `Cluster` one; `AdditionalAssignFailed` is not raised for a pool that has no
//! range of the missing family at all (MetalLB raises it on every reconcile); the Service's
//! IP family comes from `ip_family_policy`/`ip_families` (MetalLB uses the cluster IPs).

mod msg;
mod pools;
mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use crate::model::{
    IpFamily, IpFamilyPolicy, Pool, Pools, Selector, Service, ServiceKey, TrafficPolicy,
};
use pools::PoolSet;
use table::{Alloc, Backend, ShareKey, Table};

pub use msg::{ADDITIONAL_ASSIGN_FAILED, ALLOCATION_FAILED, CLEAR_ASSIGNMENT, IP_ALLOCATED};

/// The IPs a Service holds and the pool they belong to (MetalLB's
/// `metallb.io/ip-allocated-from-pool` annotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// One IP, or one of each family (in MetalLB's order: as requested or kept, else IPv4
    /// first).
    pub ips: Vec<IpAddr>,
    pub pool: String,
}

/// Kubernetes Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes Event to record on the Service (MetalLB's reasons and wording).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// What happened to one Service in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub service: ServiceKey,
    pub change: Change,
    /// In the order MetalLB records them (e.g. `ClearAssignment` then `IPAllocated`).
    pub events: Vec<Event>,
}

/// How the Service's status must change. `current` below is `Service::current_ips`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The Service now holds `ips` (≠ `current`): write them to its status.
    Allocated { ips: Vec<IpAddr>, pool: String },
    /// It holds exactly `current`: nothing to write.
    Unchanged,
    /// No new IP could be given (`reason`: MetalLB's error text). Nothing to write: it holds
    /// nothing and `current` is empty, or (on `spec_error`) it keeps `current`.
    Failed { reason: String },
    /// It held `current` and now holds nothing: empty its status.
    Cleared { reason: String },
    /// Its `loadBalancerClass` is not ours: leave it alone. Anything it held is freed.
    NotOurs,
}

/// Usage of one pool (for metrics and `lbctl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub name: String,
    /// Addresses the pool can hand out (net of avoided `.0`/`.255`), saturating.
    pub total: u128,
    pub total_v4: u128,
    pub total_v6: u128,
    /// Distinct IPs in use.
    pub used: usize,
    pub used_v4: usize,
    pub used_v6: usize,
    /// Services holding IPs of this pool.
    pub services: usize,
}

/// A Service's IP family: MetalLB's `ipfamily.Family` (`ipv4`, `ipv6`, `dual`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    Single(IpFamily),
    Dual,
}

impl fmt::Display for Fam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fam::Single(IpFamily::V4) => "ipv4",
            Fam::Single(IpFamily::V6) => "ipv6",
            Fam::Dual => "dual",
        })
    }
}

fn other_family(f: IpFamily) -> IpFamily {
    match f {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

/// The family a Service asks for. SingleStack: its first family (IPv4 when none is given).
/// RequireDualStack: dual. PreferDualStack: dual unless exactly one family is listed (a
/// single-stack cluster gives such a Service one family only).
fn service_family(svc: &Service) -> Fam {
    let first = svc.ip_families.first().copied().unwrap_or(IpFamily::V4);
    match svc.ip_family_policy {
        IpFamilyPolicy::SingleStack => Fam::Single(first),
        IpFamilyPolicy::RequireDualStack => Fam::Dual,
        IpFamilyPolicy::PreferDualStack if svc.ip_families.len() == 1 => Fam::Single(first),
        IpFamilyPolicy::PreferDualStack => Fam::Dual,
    }
}

/// MetalLB's `ipfamily.ForAddressesIPs`, with its error texts.
fn family_for_addresses(ips: &[IpAddr]) -> Result<Fam, String> {
    match ips {
        [ip] => Ok(Fam::Single(IpFamily::of(ip))),
        [a, b] if IpFamily::of(a) != IpFamily::of(b) => Ok(Fam::Dual),
        [_, _] => Err(msg::same_address_family(ips)),
        _ => Err(msg::invalid_ips_length(ips)),
    }
}

/// MetalLB's `serviceFamilyChanged`.
fn family_changed(held: &[IpAddr], svc: &Service) -> bool {
    let Ok(held) = family_for_addresses(held) else {
        return true;
    };
    let wanted = service_family(svc);
    !(held == wanted
        || (wanted == Fam::Dual && svc.ip_family_policy == IpFamilyPolicy::PreferDualStack))
}

fn share_key(svc: &Service) -> ShareKey {
    ShareKey {
        sharing: svc.sharing_key.clone().filter(|k| !k.is_empty()),
        backend: match svc.traffic_policy {
            TrafficPolicy::Cluster => Backend::Cluster,
            TrafficPolicy::Local => Backend::Local(svc.selector.clone()),
        },
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// The free IPs of one pool for a Service: MetalLB's `Allocation`.
#[derive(Clone, Copy, Debug, Default)]
struct FreePair {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl FreePair {
    fn get(&self, f: IpFamily) -> Option<IpAddr> {
        match f {
            IpFamily::V4 => self.v4,
            IpFamily::V6 => self.v6,
        }
    }

    /// MetalLB's `selectIPsForFamilyAndPolicy`.
    fn select(&self, fam: Fam, policy: IpFamilyPolicy, pool: &str) -> Result<Vec<IpAddr>, String> {
        let picked = match (fam, policy) {
            (Fam::Single(f), _) => self.get(f).map(|ip| vec![ip]),
            (Fam::Dual, IpFamilyPolicy::PreferDualStack) => match (self.v4, self.v6) {
                (Some(a), Some(b)) => Some(vec![a, b]),
                (Some(a), None) | (None, Some(a)) => Some(vec![a]),
                (None, None) => None,
            },
            (Fam::Dual, _) => self.v4.zip(self.v6).map(|(a, b)| vec![a, b]),
        };
        picked.ok_or_else(|| msg::no_ips_in_pool(pool, fam))
    }
}

/// The allocator. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct Allocator {
    pools: PoolSet,
    class: Option<String>,
    table: Table,
    /// Services whose last outcome was `Failed` or `Cleared` (what lbctl lists as failed).
    failed: BTreeSet<ServiceKey>,
    /// Services not fully served for want of a free address: holding nothing (without a
    /// spec error), or PreferDualStack holding one family of a pool that has ranges of the
    /// other. Worth another `update` once addresses are freed; kept as a set so that the
    /// retry costs what is waiting, not a pass over every Service.
    incomplete: BTreeSet<ServiceKey>,
    /// Namespace name → its labels, for pools' `namespace_selectors`.
    namespaces: BTreeMap<String, Selector>,
    /// Whether `namespaces` holds every Namespace (the first list has arrived). Until then a
    /// choice that depends on namespace labels waits.
    namespaces_listed: bool,
}

impl Allocator {
    /// `class`: our `loadBalancerClass`; `None` handles only Services without a class.
    pub fn new(pools: impl Into<Pools>, class: Option<String>) -> Self {
        Self {
            pools: PoolSet::new(pools.into()),
            class,
            table: Table::default(),
            failed: BTreeSet::new(),
            incomplete: BTreeSet::new(),
            namespaces: BTreeMap::new(),
            namespaces_listed: true,
        }
    }

    /// Some pool has `namespace_selectors`: the Namespaces' labels matter.
    pub fn needs_namespaces(&self) -> bool {
        self.pools
            .shared()
            .iter()
            .any(|p| !p.service_allocation.namespace_selectors.is_empty())
    }

    /// A Namespace's labels (`None`: it is gone). True if that changed anything. Held IPs
    /// never move for it; retry the Services of that namespace that hold nothing
    /// ([`Allocator::incomplete_in`]).
    pub fn set_namespace(&mut self, namespace: &str, labels: Option<Selector>) -> bool {
        match labels {
            Some(l) => self.namespaces.insert(namespace.to_string(), l.clone()) != Some(l),
            None => self.namespaces.remove(namespace).is_some(),
        }
    }

    /// Whether every Namespace has been given ([`Allocator::set_namespace`]). While not,
    /// a fresh allocation that depends on namespace labels fails (and waits, in
    /// [`Allocator::incomplete`]). True from the start: only a watcher of Namespaces that
    /// has not listed yet makes it false.
    pub fn set_namespaces_listed(&mut self, listed: bool) {
        self.namespaces_listed = listed;
    }

    /// The Services of `namespace` in [`Allocator::incomplete`], in key order.
    pub fn incomplete_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a ServiceKey> {
        let from = ServiceKey::new(namespace, "");
        self.incomplete
            .range(from..)
            .take_while(move |k| k.namespace == namespace)
    }

    /// Whether `pool` may give `svc` a fresh address; `Err` says why not (MetalLB's
    /// `isPoolCompatibleWithService`, with the reason).
    pub fn compatible(&self, pool: &Pool, svc: &Service) -> Result<(), String> {
        let sa = &pool.service_allocation;
        let ns = &svc.key.namespace;
        if sa.restricts_namespaces() {
            let named = sa.namespaces.iter().any(|n| n == ns);
            let labelled = !named && !sa.namespace_selectors.is_empty() && {
                let empty = Selector::default();
                let labels = self.namespaces.get(ns).unwrap_or(&empty);
                sa.namespace_selectors
                    .iter()
                    .any(|s| s.matches_with(|k| labels.get(k)))
            };
            if !named && !labelled {
                return Err(msg::pool_not_compatible(
                    &pool.name,
                    &msg::namespace_not_admitted(ns),
                ));
            }
        }
        if !sa.service_selectors.is_empty()
            && !sa
                .service_selectors
                .iter()
                .any(|s| s.matches_with(|k| svc.labels.get(k)))
        {
            return Err(msg::pool_not_compatible(
                &pool.name,
                msg::SERVICE_LABELS_NOT_ADMITTED,
            ));
        }
        Ok(())
    }

    /// Compatibility of pool `pi`, or why it cannot be decided yet (namespace labels not
    /// listed).
    fn check_compatible(&self, pi: usize, svc: &Service) -> Result<(), String> {
        // A `[[service]]` of lb.toml is the admin's own choice of pool, in no namespace (an
        // API Service always has a uid).
        if svc.uid.is_none() && svc.key.namespace == crate::model::STATIC_NAMESPACE {
            return Ok(());
        }
        let pool = self.pools.pool(pi);
        if !self.namespaces_listed && !pool.service_allocation.namespace_selectors.is_empty() {
            return Err(msg::NAMESPACES_NOT_LISTED.to_string());
        }
        self.compatible(pool, svc)
    }

    /// The pools auto allocation tries for `svc`, in order, in two tiers: the pinned pools
    /// (by priority, then config order), and the pools for any Service (config order).
    /// See the module documentation.
    pub fn auto_pools(&self, svc: &Service) -> (Vec<usize>, Vec<usize>) {
        let mut pinned: Vec<usize> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for pi in 0..self.pools.len() {
            let pool = self.pools.pool(pi);
            let sa = &pool.service_allocation;
            if !pool.auto_assign {
                continue;
            }
            if !sa.is_set() {
                open.push(pi);
            } else if (sa.restricts_namespaces() || !sa.service_selectors.is_empty())
                && self.compatible(pool, svc).is_ok()
            {
                pinned.push(pi);
            }
        }
        // Stable: equal priorities stay in config order.
        pinned.sort_by_key(|&pi| {
            let p = self.pools.pool(pi).service_allocation.priority;
            (p == 0, p)
        });
        (pinned, open)
    }

    /// Rebuilds everything from a full snapshot of the LoadBalancer Services: first every
    /// valid existing assignment is kept, in key order; then the others are allocated, in
    /// key order. Services not in `services` are forgotten (no outcome). A key given twice
    /// counts once (the last one). One outcome per Service, in key order.
    pub fn sync(&mut self, services: &[Service]) -> Vec<Outcome> {
        let snapshot: BTreeMap<&ServiceKey, &Service> =
            services.iter().map(|s| (&s.key, s)).collect();
        let previous: BTreeMap<ServiceKey, Vec<IpAddr>> = std::mem::take(&mut self.table.allocs)
            .into_iter()
            .map(|(k, a)| (k, a.assignment.ips))
            .collect();
        self.table = Table::default();
        self.pools.reset_cursors();
        self.failed.clear();
        self.incomplete.clear();

        // Phase 1: keep what is valid. A status not yet written back falls back on what we
        // held before the snapshot.
        let mut pending: BTreeMap<&ServiceKey, (bool, Vec<Event>)> = BTreeMap::new();
        for (key, svc) in &snapshot {
            if !self.is_ours(svc) {
                continue;
            }
            let held = if svc.current_ips.is_empty() {
                previous.get(*key).cloned().unwrap_or_default()
            } else {
                svc.current_ips.clone()
            };
            let mut events = Vec::new();
            let kept = self.keep_existing(svc, &held, &mut events);
            pending.insert(*key, (kept, events));
        }

        // Phase 2: allocate for the rest.
        snapshot
            .into_iter()
            .map(|(key, svc)| match pending.remove(key) {
                Some((kept, events)) => self.finish(svc, kept, events),
                None => self.not_ours(svc),
            })
            .collect()
    }

    /// One Service added or changed.
    pub fn update(&mut self, svc: &Service) -> Outcome {
        if !self.is_ours(svc) {
            return self.not_ours(svc);
        }
        // The status may lag behind what we allocated (not yet written back): then what we
        // hold is the truth, so that a pending write never moves a Service.
        let held = if svc.current_ips.is_empty() {
            let tracked = self.table.allocs.get(&svc.key);
            tracked
                .map(|a| a.assignment.ips.clone())
                .unwrap_or_default()
        } else {
            svc.current_ips.clone()
        };
        let mut events = Vec::new();
        let kept = self.keep_existing(svc, &held, &mut events);
        self.finish(svc, kept, events)
    }

    /// One Service deleted (or no longer of type LoadBalancer): frees its IPs. `Some`
    /// (`Change::Cleared`) if it held any. Services in [`Allocator::incomplete`] may fit now.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Outcome> {
        self.failed.remove(key);
        self.incomplete.remove(key);
        let held = self.table.allocs.contains_key(key);
        self.unassign(key);
        held.then(|| Outcome {
            service: key.clone(),
            change: Change::Cleared {
                reason: msg::RELEASED.to_string(),
            },
            events: Vec::new(),
        })
    }

    /// New pools from a config reload, then [`Allocator::sync`] over `services` (the full
    /// snapshot): a Service whose IP left every pool (or whose pool is gone) is cleared and
    /// allocated again; nothing else moves. Services that failed before may now succeed.
    pub fn set_pools(&mut self, pools: impl Into<Pools>, services: &[Service]) -> Vec<Outcome> {
        self.pools = PoolSet::new(pools.into());
        self.sync(services)
    }

    /// The pools allocated from (the shared value given to `new` or `set_pools`).
    pub fn pools(&self) -> &Pools {
        self.pools.shared()
    }

    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.table.allocs.get(key).map(|a| &a.assignment)
    }

    /// Every assignment, in key order.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.table.allocs.iter().map(|(k, a)| (k, &a.assignment))
    }

    /// The Services using `ip`, in key order.
    pub fn services_on(&self, ip: IpAddr) -> Vec<&ServiceKey> {
        self.table
            .ips
            .get(&ip)
            .map(|u| u.services.iter().collect())
            .unwrap_or_default()
    }

    /// Services whose last outcome was `Failed` or `Cleared`, in key order.
    pub fn failed(&self) -> impl Iterator<Item = &ServiceKey> {
        self.failed.iter()
    }

    /// Services not fully served for want of a free address, in key order: those holding
    /// nothing (unless their spec is in error) and PreferDualStack ones missing a family
    /// their pool has. `update` them again, in this order, whenever addresses are freed;
    /// the others cannot gain from it.
    pub fn incomplete(&self) -> impl Iterator<Item = &ServiceKey> {
        self.incomplete.iter()
    }

    /// Usage per pool, in config order.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut services: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.table.allocs.values() {
            *services.entry(a.assignment.pool.as_str()).or_default() += 1;
        }
        (0..self.pools.len())
            .map(|i| {
                let pool = self.pools.pool(i);
                let (total_v4, total_v6) = self.pools.capacity(i);
                let used = self.table.pool_use.get(&pool.name);
                let used_v4 = used.map_or(0, |m| m.keys().filter(|ip| ip.is_ipv4()).count());
                let used_v6 = used.map_or(0, |m| m.keys().filter(|ip| ip.is_ipv6()).count());
                PoolStats {
                    name: pool.name.clone(),
                    total: total_v4.saturating_add(total_v6),
                    total_v4,
                    total_v6,
                    used: used_v4 + used_v6,
                    used_v4,
                    used_v6,
                    services: services.get(pool.name.as_str()).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    fn is_ours(&self, svc: &Service) -> bool {
        svc.class == self.class
    }

    fn not_ours(&mut self, svc: &Service) -> Outcome {
        self.failed.remove(&svc.key);
        self.incomplete.remove(&svc.key);
        self.unassign(&svc.key);
        Outcome {
            service: svc.key.clone(),
            change: Change::NotOurs,
            events: Vec::new(),
        }
    }

    fn unassign(&mut self, key: &ServiceKey) {
        let freed = self.table.unassign(key);
        self.pools.note_freed(&freed);
    }

    /// The first half of MetalLB's `convergeBalancer`: keeps `held` for `svc` if still
    /// valid. Returns false (and holds nothing for `svc`) otherwise.
    fn keep_existing(&mut self, svc: &Service, held: &[IpAddr], events: &mut Vec<Event>) -> bool {
        let kept = self.still_valid(svc, held, events);
        if !kept {
            self.unassign(&svc.key);
        }
        kept
    }

    fn still_valid(&mut self, svc: &Service, held: &[IpAddr], events: &mut Vec<Event>) -> bool {
        // Nothing held, or of another family than the Service now asks for: silently start
        // afresh (MetalLB's `serviceFamilyChanged`).
        if held.is_empty() || family_changed(held, svc) {
            return false;
        }
        // Taking the held IPs again changes nothing while the config still allows them;
        // otherwise the error names what no longer fits.
        if let Err(err) = self.assign_ips(svc, held, self.preferred_pool(svc)) {
            events.push(msg::clear_assignment(&svc.key, &err));
            return false;
        }
        // The address-pool annotation may now name another pool than the IPs came from.
        if let Some(pool) = &svc.pool {
            let held_in = self.table.allocs.get(&svc.key).map(|a| &a.assignment.pool);
            if held_in != Some(pool) {
                return false;
            }
        }
        // Requested IPs other than the held ones win. (On a spec error the request is
        // unknown: keep.)
        svc.spec_error.is_some()
            || svc.requested_ips.is_empty()
            || same_set(&svc.requested_ips, held)
    }

    /// The second half of `convergeBalancer`: the extra family for PreferDualStack, or a
    /// fresh allocation; then the outcome.
    fn finish(&mut self, svc: &Service, kept: bool, mut events: Vec<Event>) -> Outcome {
        let mut failure = None;
        if let Some(err) = &svc.spec_error {
            events.push(msg::allocation_failed(&svc.key, err));
            failure = Some(err.clone());
        } else if kept {
            self.add_missing_family(svc, &mut events);
        } else {
            match self.allocate(svc) {
                Ok(ips) => events.push(msg::ip_allocated(&ips)),
                Err(err) => {
                    events.push(msg::allocation_failed(&svc.key, &err));
                    failure = Some(err);
                }
            }
        }
        let holds = self.table.allocs.get(&svc.key).map(|a| &a.assignment);
        let change = match (holds, failure) {
            (Some(a), _) if a.ips != svc.current_ips => Change::Allocated {
                ips: a.ips.clone(),
                pool: a.pool.clone(),
            },
            (Some(_), None) => Change::Unchanged,
            (Some(_), Some(reason)) => Change::Failed { reason },
            (None, reason) => {
                let reason = reason.unwrap_or_else(|| msg::NO_AVAILABLE_IPS.to_string());
                if svc.current_ips.is_empty() {
                    Change::Failed { reason }
                } else {
                    Change::Cleared { reason }
                }
            }
        };
        if matches!(change, Change::Failed { .. } | Change::Cleared { .. }) {
            self.failed.insert(svc.key.clone());
        } else {
            self.failed.remove(&svc.key);
        }
        let waiting = match self.table.allocs.get(&svc.key) {
            None => svc.spec_error.is_none(),
            Some(a) => self.misses_a_family(svc, &a.assignment),
        };
        if waiting {
            self.incomplete.insert(svc.key.clone());
        } else {
            self.incomplete.remove(&svc.key);
        }
        Outcome {
            service: svc.key.clone(),
            change,
            events,
        }
    }

    /// A PreferDualStack Service holding one IP of a pool that has ranges of the other family
    /// (what [`Allocator::add_missing_family`] could still add).
    fn misses_a_family(&self, svc: &Service, held: &Assignment) -> bool {
        let [ip] = held.ips[..] else {
            return false;
        };
        svc.ip_family_policy == IpFamilyPolicy::PreferDualStack
            && service_family(svc) == Fam::Dual
            && self
                .pools
                .index(&held.pool)
                .is_some_and(|pi| self.pools.has_family(pi, other_family(IpFamily::of(&ip))))
    }

    /// MetalLB's `AllocateFromPoolForAdditionalFamily`: a PreferDualStack Service holding one
    /// IP gets one of the other family from the same pool when there is one.
    fn add_missing_family(&mut self, svc: &Service, events: &mut Vec<Event>) {
        // Requested IPs are the whole allocation (MetalLB assigns exactly those): a Service
        // that asks for one IP gets no second family added.
        if svc.ip_family_policy != IpFamilyPolicy::PreferDualStack
            || service_family(svc) != Fam::Dual
            || !svc.requested_ips.is_empty()
        {
            return;
        }
        let Some(alloc) = self.table.allocs.get(&svc.key) else {
            return;
        };
        let [existing] = alloc.assignment.ips[..] else {
            return;
        };
        let pool_name = alloc.assignment.pool.clone();
        let Some(pi) = self.pools.index(&pool_name) else {
            return;
        };
        let missing = other_family(IpFamily::of(&existing));
        if !self.pools.has_family(pi, missing) {
            return;
        }
        let key = share_key(svc);
        let found = self
            .pools
            .first_free(pi, missing, &self.table, &svc.key, &svc.ports, &key);
        let result = match found {
            Some(ip) => self.assign_ips(svc, &[existing, ip], Some(pi)).map(|()| ip),
            None => Err(msg::no_ips_in_pool(&pool_name, Fam::Single(missing))),
        };
        events.push(match result {
            Ok(ip) => msg::additional_ip_allocated(ip),
            Err(err) => msg::additional_assign_failed(&err),
        });
    }

    /// The pool to account kept IPs to when several hold them: the annotated one, else the
    /// one they were held in.
    fn preferred_pool(&self, svc: &Service) -> Option<usize> {
        match &svc.pool {
            Some(p) => self.pools.index(p),
            None => self
                .table
                .allocs
                .get(&svc.key)
                .and_then(|a| self.pools.index(&a.assignment.pool)),
        }
    }

    /// MetalLB's `Allocator.Assign`: `svc` takes exactly `ips` if the config and the other
    /// users of the IPs allow it.
    fn assign_ips(
        &mut self,
        svc: &Service,
        ips: &[IpAddr],
        preferred: Option<usize>,
    ) -> Result<(), String> {
        let pi = self
            .pools
            .pool_for(ips, preferred)
            .ok_or_else(|| msg::not_allowed_in_config(ips))?;
        if ips.len() > 2 {
            return Err(msg::more_than_two(ips));
        }
        if let [a, b] = ips
            && IpFamily::of(a) == IpFamily::of(b)
        {
            return Err(msg::same_family(*a, *b));
        }
        let key = share_key(svc);
        for ip in ips {
            self.table.check(&svc.key, *ip, &svc.ports, &key)?;
        }
        let alloc = Alloc {
            assignment: Assignment {
                ips: ips.to_vec(),
                pool: self.pools.pool(pi).name.clone(),
            },
            ports: svc.ports.clone(),
            key,
        };
        let freed = self.table.assign(svc.key.clone(), alloc);
        self.pools.note_freed(&freed);
        Ok(())
    }

    /// MetalLB's `allocateIPs`: requested IPs, else the named pool, else the auto-assign
    /// pools. `svc` holds nothing when this is called.
    fn allocate(&mut self, svc: &Service) -> Result<Vec<IpAddr>, String> {
        let fam = service_family(svc);
        if !svc.requested_ips.is_empty() {
            let requested = &svc.requested_ips;
            if family_for_addresses(requested)? != fam {
                return Err(msg::requested_family_mismatch(requested));
            }
            let annotated = svc.pool.as_deref().and_then(|p| self.pools.index(p));
            if let Some(pi) = self.pools.pool_for(requested, annotated) {
                self.check_compatible(pi, svc)?;
            }
            self.assign_ips(svc, requested, annotated)?;
            if let Some(pool) = &svc.pool
                && self.assignment(&svc.key).is_none_or(|a| &a.pool != pool)
            {
                self.unassign(&svc.key);
                return Err(msg::requested_pool_mismatch(requested, pool));
            }
            return Ok(requested.clone());
        }

        if let Some(pool) = &svc.pool {
            let pi = self
                .pools
                .index(pool)
                .ok_or_else(|| msg::unknown_pool(pool))?;
            self.check_compatible(pi, svc)?;
            let ips = self
                .free_pair(pi, svc, fam)
                .select(fam, svc.ip_family_policy, pool)?;
            self.assign_ips(svc, &ips, Some(pi))?;
            return Ok(ips);
        }

        // No request and no pool named: the pinned pools, then the pools for any Service. A
        // dual-stack request fails for its own reason (one pool must have both families
        // free), which the Event says; every other shortage is MetalLB's "no available IPs".
        if !self.namespaces_listed
            && self
                .pools
                .shared()
                .iter()
                .any(|p| p.auto_assign && !p.service_allocation.namespace_selectors.is_empty())
        {
            return Err(msg::NAMESPACES_NOT_LISTED.to_string());
        }
        let (pinned, open) = self.auto_pools(svc);
        let found = self
            .best_pool(svc, fam, &pinned)
            .or_else(|| self.best_pool(svc, fam, &open));
        let (pi, pair) = found.ok_or_else(|| {
            if fam == Fam::Dual && svc.ip_family_policy != IpFamilyPolicy::PreferDualStack {
                msg::NO_DUAL_STACK_POOL.to_string()
            } else {
                msg::NO_AVAILABLE_IPS.to_string()
            }
        })?;
        let pool = self.pools.pool(pi).name.clone();
        let ips = pair
            .select(fam, svc.ip_family_policy, &pool)
            .map_err(|_| msg::NO_AVAILABLE_IPS.to_string())?;
        self.assign_ips(svc, &ips, Some(pi))
            .map_err(|_| msg::NO_AVAILABLE_IPS.to_string())?;
        Ok(ips)
    }

    /// MetalLB's `getFreeIPsFromPool`, computing only the families `fam` needs.
    fn free_pair(&mut self, pi: usize, svc: &Service, fam: Fam) -> FreePair {
        let key = share_key(svc);
        let mut find = |f: IpFamily| {
            let wanted = match fam {
                Fam::Single(s) => s == f,
                Fam::Dual => true,
            };
            if wanted {
                self.pools
                    .first_free(pi, f, &self.table, &svc.key, &svc.ports, &key)
            } else {
                None
            }
        };
        FreePair {
            v4: find(IpFamily::V4),
            v6: find(IpFamily::V6),
        }
    }

    /// MetalLB's `findBestPoolForService` over `candidates`, in that order.
    fn best_pool(
        &mut self,
        svc: &Service,
        fam: Fam,
        candidates: &[usize],
    ) -> Option<(usize, FreePair)> {
        let primary = svc.ip_families.first().copied().unwrap_or(IpFamily::V4);
        let secondary = other_family(primary);
        let prefer = svc.ip_family_policy == IpFamilyPolicy::PreferDualStack;
        let (mut first_primary, mut first_secondary) = (None, None);
        for &pi in candidates {
            let pair = self.free_pair(pi, svc, fam);
            let (p, s) = (pair.get(primary), pair.get(secondary));
            match fam {
                Fam::Single(f) if pair.get(f).is_some() => return Some((pi, pair)),
                Fam::Single(_) => continue,
                Fam::Dual if p.is_some() && s.is_some() => return Some((pi, pair)),
                Fam::Dual => {}
            }
            if !prefer {
                continue;
            }
            if p.is_some() && first_primary.is_none() {
                first_primary = Some((pi, pair));
            }
            if s.is_some() && first_secondary.is_none() {
                first_secondary = Some((pi, pair));
            }
        }
        first_primary.or(first_secondary)
    }
}

#[cfg(test)]
mod tests;
