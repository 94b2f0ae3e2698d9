//! Kubernetes objects → the domain model (pure). Everything hostile or malformed in a Service
//! becomes `Service::spec_error` (an `AllocationFailed` Event later), never a panic.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{
    EndpointsByNode, IpFamily, IpFamilyPolicy, Node, Protocol, Selector, Service, ServiceKey,
    ServicePort, TrafficPolicy,
};

/// MetalLB reads its annotations under both prefixes; so do we (the newer one wins).
pub const ANNOTATION_PREFIXES: [&str; 2] = ["metallb.universe.tf/", "metallb.io/"];
pub const ADDRESS_POOL: &str = "address-pool";
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
pub const LOADBALANCER_IPS: &str = "loadBalancerIPs";
/// Written by the leader next to the status, as MetalLB's `ip-allocated-from-pool`.
pub const ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";
/// Written by the leader: who announces the Service (`layer2: node-a`, `bgp: a, b`), under its
/// own field manager ([`crate::kube::status::ANNOUNCERS_FIELD_MANAGER`]).
pub const ANNOUNCING: &str = "lb.org/announcing";
/// Nodes carrying this label are not used for external load balancers.
pub const EXCLUDE_FROM_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// EndpointSlices name their Service with this label.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The longest annotation value we look at; longer ones are reported, not parsed.
const MAX_ANNOTATION_LEN: usize = 4096;

fn annotation<'a>(annotations: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    ANNOTATION_PREFIXES
        .iter()
        .rev()
        .find_map(|p| annotations.get(&format!("{p}{name}")))
        .map(String::as_str)
}

/// `None` when the object is not a `type: LoadBalancer` Service (or has no name).
pub fn service_from_k8s(svc: &core::Service) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let key = ServiceKey::new(
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone()?,
    );
    let empty = BTreeMap::new();
    let annotations = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut errors: Vec<String> = Vec::new();

    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                errors.push(format!("unknown port protocol {other:?}"));
                continue;
            }
        };
        match u16::try_from(p.port) {
            Ok(port) if port != 0 => ports.push(ServicePort { protocol, port }),
            _ => errors.push(format!("port {} out of range", p.port)),
        }
    }
    ports.sort();
    ports.dedup();

    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };

    let sharing_key = annotation(annotations, ALLOW_SHARED_IP)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if sharing_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_ANNOTATION_LEN)
    {
        errors.push(format!(
            "{ALLOW_SHARED_IP} annotation longer than {MAX_ANNOTATION_LEN} bytes"
        ));
    }
    let pool = annotation(annotations, ADDRESS_POOL)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned);

    let mut requested_ips = Vec::new();
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        match ip.trim().parse::<IpAddr>() {
            Ok(ip) => requested_ips.push(ip),
            Err(_) => errors.push(format!("invalid spec.loadBalancerIP {ip:?}")),
        }
    }
    if let Some(list) = annotation(annotations, LOADBALANCER_IPS) {
        if list.len() > MAX_ANNOTATION_LEN {
            errors.push(format!(
                "{LOADBALANCER_IPS} annotation longer than {MAX_ANNOTATION_LEN} bytes"
            ));
        } else {
            for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match part.parse::<IpAddr>() {
                    Ok(ip) if !requested_ips.contains(&ip) => requested_ips.push(ip),
                    Ok(_) => {}
                    Err(_) => errors.push(format!(
                        "invalid {LOADBALANCER_IPS} annotation: {part:?} is not an IP address"
                    )),
                }
            }
        }
    }
    // MetalLB: at most one requested IP per family.
    for family in [IpFamily::V4, IpFamily::V6] {
        if requested_ips
            .iter()
            .filter(|ip| IpFamily::of(ip) == family)
            .count()
            > 1
        {
            errors.push(format!(
                "more than one {} address requested",
                if family == IpFamily::V4 {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ));
        }
    }

    let mut ip_families = Vec::new();
    for f in spec.ip_families.iter().flatten() {
        match f.as_str() {
            "IPv4" => ip_families.push(IpFamily::V4),
            "IPv6" => ip_families.push(IpFamily::V6),
            other => errors.push(format!("unknown IP family {other:?}")),
        }
    }
    let ip_family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };

    let current_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok())
        .collect();

    Some(Service {
        key,
        uid: svc.metadata.uid.clone(),
        ports,
        traffic_policy,
        selector: spec.selector.clone().unwrap_or_default().into(),
        sharing_key,
        requested_ips,
        pool,
        class: spec.load_balancer_class.clone(),
        ip_families,
        ip_family_policy,
        current_ips,
        announcing: annotations.get(ANNOUNCING).cloned(),
        labels: svc.metadata.labels.clone().unwrap_or_default().into(),
        spec_error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// A Namespace's name and labels (what pools' `namespace_selectors` match).
pub fn namespace_from_k8s(ns: &core::Namespace) -> Option<(String, Selector)> {
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    Some((ns.metadata.name.clone()?, labels.into()))
}

/// A Kubernetes Node. `ignore_exclude_label` is `[kubernetes] ignore_exclude_label`.
pub fn node_from_k8s(node: &core::Node, ignore_exclude_label: bool) -> Option<Node> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True");
    Some(Node {
        name: node.metadata.name.clone()?,
        excluded_from_load_balancers: !ignore_exclude_label
            && labels.contains_key(EXCLUDE_FROM_LB_LABEL),
        labels,
        network_unavailable,
    })
}

/// The Service an EndpointSlice belongs to, from its `kubernetes.io/service-name` label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ServiceKey::new(
        slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name.clone(),
    ))
}

/// Adds the ready endpoints of one slice to `by_node`. An endpoint counts when it is ready,
/// or serving while terminating (so a draining pod still attracts its traffic, as
/// kube-proxy does); a missing `ready` condition means ready (API convention).
pub fn add_ready_endpoints(slice: &EndpointSlice, by_node: &mut EndpointsByNode) {
    for ep in &slice.endpoints {
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        if !(ready || serving) {
            continue;
        }
        if let Some(node) = &ep.node_name {
            *by_node.entry(node.clone()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> core::Service {
        serde_json::from_value(v).expect("valid Service JSON")
    }

    fn lb(extra_meta: serde_json::Value, extra_spec: serde_json::Value) -> core::Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                     "selector": {"app": "web"}},
        });
        for (k, val) in extra_meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        for (k, val) in extra_spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        svc(v)
    }

    #[test]
    fn cluster_ip_service_is_not_ours_to_translate() {
        let s = svc(json!({"metadata": {"name": "x"}, "spec": {"type": "ClusterIP"}}));
        assert!(service_from_k8s(&s).is_none());
    }

    #[test]
    fn plain_load_balancer_service_translates_with_defaults() {
        let s = service_from_k8s(&lb(json!({}), json!({}))).unwrap();
        assert_eq!(s.key, ServiceKey::new("default", "web"));
        assert_eq!(
            s.ports,
            vec![ServicePort {
                protocol: Protocol::Tcp,
                port: 80
            }]
        );
        assert_eq!(s.traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(s.selector.get("app"), Some("web"));
        assert_eq!(s.spec_error, None);
        assert!(s.requested_ips.is_empty() && s.current_ips.is_empty());
    }

    #[test]
    fn annotations_are_read_under_both_prefixes() {
        let old = lb(
            json!({"annotations": {"metallb.universe.tf/address-pool": "ip-pool-2",
                                   "metallb.universe.tf/allow-shared-ip": "gns3-ip"}}),
            json!({}),
        );
        let s = service_from_k8s(&old).unwrap();
        assert_eq!(s.pool.as_deref(), Some("ip-pool-2"));
        assert_eq!(s.sharing_key.as_deref(), Some("gns3-ip"));
        let new = lb(
            json!({"annotations": {"metallb.io/address-pool": "p",
                                   "metallb.io/loadBalancerIPs": "10.0.0.1, fd00::1"}}),
            json!({}),
        );
        let s = service_from_k8s(&new).unwrap();
        assert_eq!(s.pool.as_deref(), Some("p"));
        assert_eq!(
            s.requested_ips,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn empty_sharing_key_means_no_sharing() {
        let s = lb(
            json!({"annotations": {"metallb.universe.tf/allow-shared-ip": "  "}}),
            json!({}),
        );
        assert_eq!(service_from_k8s(&s).unwrap().sharing_key, None);
    }

    #[test]
    fn garbage_requested_ip_becomes_spec_error() {
        let s = lb(
            json!({"annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1,not-an-ip"}}),
            json!({"loadBalancerIP": "999.1.1.1"}),
        );
        let s = service_from_k8s(&s).unwrap();
        let err = s.spec_error.unwrap();
        assert!(
            err.contains("999.1.1.1") && err.contains("not-an-ip"),
            "{err}"
        );
    }

    #[test]
    fn two_requested_ips_of_one_family_is_an_error() {
        let s = lb(
            json!({"annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1,10.0.0.2"}}),
            json!({}),
        );
        assert!(
            service_from_k8s(&s)
                .unwrap()
                .spec_error
                .unwrap()
                .contains("more than one IPv4")
        );
    }

    #[test]
    fn thousand_ports_translate_without_error() {
        let ports: Vec<_> = (1..=1000)
            .map(|p| json!({"port": p, "protocol": if p % 2 == 0 {"TCP"} else {"UDP"}}))
            .collect();
        let s = service_from_k8s(&lb(json!({}), json!({"ports": ports}))).unwrap();
        assert_eq!(s.ports.len(), 1000);
        assert_eq!(s.spec_error, None);
    }

    #[test]
    fn local_policy_families_class_and_status_are_read() {
        let mut k = lb(
            json!({}),
            json!({"externalTrafficPolicy": "Local", "ipFamilies": ["IPv6", "IPv4"],
                   "ipFamilyPolicy": "RequireDualStack", "loadBalancerClass": "example.com/lb"}),
        );
        k.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [
                {"ip": "172.19.100.0"}, {"hostname": "lb.example.com"}, {"ip": "fd00::5"}]}}))
            .unwrap(),
        );
        let s = service_from_k8s(&k).unwrap();
        assert_eq!(s.traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.ip_families, vec![IpFamily::V6, IpFamily::V4]);
        assert_eq!(s.ip_family_policy, IpFamilyPolicy::RequireDualStack);
        assert_eq!(s.class.as_deref(), Some("example.com/lb"));
        assert_eq!(
            s.current_ips,
            vec![
                "172.19.100.0".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn node_exclusion_label_and_network_unavailable_are_honoured() {
        let n: core::Node = serde_json::from_value(json!({
            "metadata": {"name": "worker-1", "labels": {EXCLUDE_FROM_LB_LABEL: ""}},
            "status": {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}
        }))
        .unwrap();
        let node = node_from_k8s(&n, false).unwrap();
        assert!(node.excluded_from_load_balancers && node.network_unavailable);
        assert!(
            !node_from_k8s(&n, true)
                .unwrap()
                .excluded_from_load_balancers
        );
    }

    #[test]
    fn ready_and_serving_endpoints_count_per_node() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.1"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.1.0.2"], "nodeName": "n1"},
                {"addresses": ["10.1.0.3"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["10.1.0.4"], "nodeName": "n3",
                 "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))
        .unwrap();
        assert_eq!(
            slice_service(&slice),
            Some(ServiceKey::new("default", "web"))
        );
        let mut by_node = EndpointsByNode::new();
        add_ready_endpoints(&slice, &mut by_node);
        assert_eq!(by_node.get("n1"), Some(&2));
        assert_eq!(by_node.get("n2"), None);
        assert_eq!(by_node.get("n3"), Some(&1));
    }
}
