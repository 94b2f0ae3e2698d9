//! Event reasons and message wording. Where MetalLB has a message for the same reason the
//! wording is MetalLB's, so that `kubectl describe svc` reads as it did under MetalLB (and
//! alerts matching it keep working); [`NO_DUAL_STACK_POOL`] is ours. Go's `%q` is reproduced
//! by [`q`] (a quoted string) and [`q_ips`] (`%q` of a `[]net.IP`: `["10.0.0.1" "fd00::1"]`).
//! docs/troubleshoot.md quotes these; a test checks every quote against what lbd produces.

use std::fmt::Display;
use std::net::IpAddr;

use super::{Event, EventType};
use crate::model::ServiceKey;

/// Normal: `Assigned IP ["…"]`, or `Assigned additional IP "…"` (PreferDualStack).
pub const IP_ALLOCATED: &str = "IPAllocated";
/// Warning: `Failed to allocate IP for "ns/name": <reason>`.
pub const ALLOCATION_FAILED: &str = "AllocationFailed";
/// Normal: the held IP is no longer allowed by the config; a new one is sought.
pub const CLEAR_ASSIGNMENT: &str = "ClearAssignment";
/// Normal: a PreferDualStack Service got one family; the other's pool range is full.
pub const ADDITIONAL_ASSIGN_FAILED: &str = "AdditionalAssignFailed";

/// Go's `%q` of a string (close enough: Rust's `{:?}` escapes the same characters that
/// can appear in Kubernetes names and IP addresses).
pub fn q(s: impl Display) -> String {
    format!("{:?}", s.to_string())
}

/// Go's `%q` of a `[]net.IP`.
pub fn q_ips(ips: &[IpAddr]) -> String {
    let inner: Vec<String> = ips.iter().map(q).collect();
    format!("[{}]", inner.join(" "))
}

pub fn ip_allocated(ips: &[IpAddr]) -> Event {
    Event {
        kind: EventType::Normal,
        reason: IP_ALLOCATED,
        message: format!("Assigned IP {}", q_ips(ips)),
    }
}

pub fn additional_ip_allocated(ip: IpAddr) -> Event {
    Event {
        kind: EventType::Normal,
        reason: IP_ALLOCATED,
        message: format!("Assigned additional IP {}", q(ip)),
    }
}

pub fn allocation_failed(key: &ServiceKey, err: &str) -> Event {
    Event {
        kind: EventType::Warning,
        reason: ALLOCATION_FAILED,
        message: format!("Failed to allocate IP for {}: {}", q(key), err),
    }
}

pub fn clear_assignment(key: &ServiceKey, err: &str) -> Event {
    Event {
        kind: EventType::Normal,
        reason: CLEAR_ASSIGNMENT,
        message: format!(
            "current IP for {} not allowed by config, will attempt for new IP assignment: {}",
            q(key),
            err
        ),
    }
}

pub fn additional_assign_failed(err: &str) -> Event {
    Event {
        kind: EventType::Normal,
        reason: ADDITIONAL_ASSIGN_FAILED,
        message: format!("cannot assign additional IP in PreferDualStack: {err}"),
    }
}

// Allocation error texts (the reasons above), worded as MetalLB's allocator words them.

pub fn not_allowed_in_config(ips: &[IpAddr]) -> String {
    format!("{} is not allowed in config", q_ips(ips))
}

pub fn more_than_two(ips: &[IpAddr]) -> String {
    format!("more than two addresses {}", q_ips(ips))
}

pub fn same_family(a: IpAddr, b: IpAddr) -> String {
    format!("{} {} has the same family", q(a), q(b))
}

pub fn sharing_conflict(key: &ServiceKey, others: &[&ServiceKey]) -> String {
    let others: Vec<String> = others.iter().map(|k| k.to_string()).collect();
    format!(
        "can't change sharing key for {}, address also in use by {}",
        q(key),
        others.join(",")
    )
}

pub fn port_in_use(port: &crate::model::ServicePort, ip: IpAddr) -> String {
    format!(
        "port {}/{} is already in use on {}",
        port.protocol,
        port.port,
        q(ip)
    )
}

pub fn unknown_pool(name: &str) -> String {
    format!("unknown pool {}", q(name))
}

pub fn no_ips_in_pool(pool: &str, family: impl Display) -> String {
    format!("no available IPs in pool {pool} for {family} IPFamily")
}

/// No auto-assign pool has an address of the Service's family free (MetalLB's text).
pub const NO_AVAILABLE_IPS: &str = "no available IPs";

/// A RequireDualStack Service and no auto-assign pool with both families free. Ours: MetalLB
/// says only "no available IPs", which hides that addresses of one family may be plenty.
pub const NO_DUAL_STACK_POOL: &str = "no available IPs: no auto-assign pool has both an IPv4 and an IPv6 address free for a RequireDualStack Service";

pub fn requested_family_mismatch(ips: &[IpAddr]) -> String {
    format!(
        "requested loadBalancer IP(s) {} does not match the ipFamily of the service",
        q_ips(ips)
    )
}

pub fn requested_pool_mismatch(ips: &[IpAddr], pool: &str) -> String {
    format!(
        "requested loadBalancer IP(s) {} is not compatible with requested address pool {}",
        q_ips(ips),
        pool
    )
}

pub fn same_address_family(ips: &[IpAddr]) -> String {
    format!("IPFamilyForAddresses: same address family {}", q_ips(ips))
}

pub fn invalid_ips_length(ips: &[IpAddr]) -> String {
    format!(
        "IPFamilyForAddresses: invalid ips length {} {}",
        ips.len(),
        q_ips(ips)
    )
}

/// MetalLB's `Assign` error for a pool whose `serviceAllocation` does not admit the Service,
/// followed by why.
pub fn pool_not_compatible(pool: &str, why: &str) -> String {
    format!("pool {pool} not compatible for ip assignment: {why}")
}

pub fn namespace_not_admitted(ns: &str) -> String {
    format!(
        "namespace {} is not among its namespaces and its Namespace's labels match none of its namespace_selectors",
        q(ns)
    )
}

pub const SERVICE_LABELS_NOT_ADMITTED: &str =
    "the Service's labels match none of its service_selectors";

/// Ours: a pool chooses by namespace labels and the Namespaces have not been listed yet
/// (right after a reload introduced `namespace_selectors`). Tried again once they are.
pub const NAMESPACES_NOT_LISTED: &str =
    "waiting for the list of Namespaces: a pool chooses Services by namespace labels";

/// `Change::Cleared` reason of [`super::Allocator::release`].
pub const RELEASED: &str = "service deleted or no longer of type LoadBalancer";
