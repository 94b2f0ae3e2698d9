//! `[cluster] member_nodes` (issue 14): the Kubernetes Nodes that may be raft-lite members.
//!
//! Started only when `member_nodes` is configured (every host: any voter may lead and admit).
//! It watches the Nodes and hands the cluster driver, after the first complete list and on
//! every change, the Nodes that match the selectors, each at its address: the first
//! InternalIP in `status.addresses` (the first IPv4 one if there is one) and the configured
//! port. The core decides with that list ([`crate::cluster::MemberFilter`]): the leader
//! admits and evicts by it, a member joins at the address it gives itself. This host, when
//! it is a member, logs why it waits for its own Node and sets
//! `lb_cluster_member_node_waiting` meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use kube::Client;
use kube::runtime::watcher::Event;
use tracing::{debug, info, warn};

use super::watch::watch_stream;
use crate::cluster::driver::AllowedMembersSender;
use crate::config::MemberNodes;
use crate::control::metrics::Metrics;
use crate::model::selectors_match;

/// Why a Node is not a member Node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAMemberNode {
    #[error("its labels match none of [cluster] member_nodes' node_selectors")]
    LabelsDoNotMatch,
    #[error("it has no InternalIP in status.addresses")]
    NoInternalIp,
}

/// The raft-lite address of `node` under `spec`, or why it is not a member Node.
pub fn member_address(node: &core::Node, spec: &MemberNodes) -> Result<SocketAddr, NotAMemberNode> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !selectors_match(&spec.node_selectors, &labels) {
        return Err(NotAMemberNode::LabelsDoNotMatch);
    }
    let internal: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse().ok())
        .collect();
    let ip = internal
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(internal.first())
        .ok_or(NotAMemberNode::NoInternalIp)?;
    Ok(SocketAddr::new(*ip, spec.port))
}

/// What this host, a member, knows of its own Node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Own {
    Missing,
    Not(NotAMemberNode),
    At(SocketAddr),
}

/// Runs until the driver stops. `me`: this host's Node name; `voter`: it is one of the
/// voters (its own Node does not matter then).
pub async fn watch_member_nodes(
    client: Client,
    spec: MemberNodes,
    me: String,
    voter: bool,
    sink: AllowedMembersSender,
    metrics: Metrics,
) {
    if !voter {
        metrics.set_member_node_waiting(true);
        info!(node = %me, port = spec.port, "member_nodes: waiting for Node {me} to be listed before asking to join");
    }
    // Node name → its address or why it is none; `listing` while a (re)list is under way.
    let mut nodes: BTreeMap<String, Result<SocketAddr, NotAMemberNode>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Result<SocketAddr, NotAMemberNode>>> = None;
    let mut listed = false;
    let mut sent: Option<BTreeMap<String, SocketAddr>> = None;
    let mut own: Option<Own> = None;
    let mut stream = std::pin::pin!(watch_stream::<core::Node>(client));
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "member_nodes: Kubernetes Node watch failed; retrying with backoff");
                continue;
            }
        };
        let entry = |n: &core::Node| {
            n.metadata
                .name
                .clone()
                .map(|name| (name, member_address(n, &spec)))
        };
        match ev {
            Event::Init => listing = Some(BTreeMap::new()),
            Event::InitApply(n) => {
                if let (Some(l), Some((name, a))) = (listing.as_mut(), entry(&n)) {
                    l.insert(name, a);
                }
            }
            Event::InitDone => {
                if let Some(l) = listing.take() {
                    nodes = l;
                }
                listed = true;
            }
            Event::Apply(n) => {
                if let Some((name, a)) = entry(&n) {
                    nodes.insert(name, a);
                }
            }
            Event::Delete(n) => {
                if let Some(name) = n.metadata.name {
                    nodes.remove(&name);
                }
            }
        }
        if !listed {
            continue;
        }
        let allowed: BTreeMap<String, SocketAddr> = nodes
            .iter()
            .filter_map(|(n, a)| a.as_ref().ok().map(|a| (n.clone(), *a)))
            .collect();
        if sent.as_ref() != Some(&allowed) {
            debug!(
                members = allowed.len(),
                "member_nodes: member Nodes changed"
            );
            if !sink.set(allowed.clone()) {
                return;
            }
            sent = Some(allowed);
        }
        if !voter {
            let now = match nodes.get(&me) {
                None => Own::Missing,
                Some(Err(why)) => Own::Not(why.clone()),
                Some(Ok(a)) => Own::At(*a),
            };
            if own.as_ref() != Some(&now) {
                match &now {
                    Own::Missing => {
                        warn!(node = %me, "member_nodes: there is no Node {me}; not asking to join until it exists")
                    }
                    Own::Not(why) => {
                        warn!(node = %me, reason = %why, "member_nodes: Node {me} is not a member Node: {why}; not asking to join")
                    }
                    Own::At(a) => {
                        info!(node = %me, addr = %a, "member_nodes: Node {me} is a member Node; asking to join at {a}")
                    }
                }
                metrics.set_member_node_waiting(!matches!(now, Own::At(_)));
                own = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeSelector;

    fn node(labels: &[(&str, &str)], addresses: &[(&str, &str)]) -> core::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "n1",
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
            "status": {
                "addresses": addresses.iter().map(|(t, a)| serde_json::json!({"type": t, "address": a})).collect::<Vec<_>>(),
            },
        }))
        .expect("a Node")
    }

    fn spec() -> MemberNodes {
        MemberNodes {
            node_selectors: vec![NodeSelector {
                match_labels: [("lb.example.org/member".to_owned(), "true".to_owned())].into(),
                match_expressions: Vec::new(),
            }],
            port: 7950,
        }
    }

    #[test]
    fn a_matching_node_is_a_member_at_its_first_ipv4_internal_ip_and_the_port() {
        let n = node(
            &[("lb.example.org/member", "true")],
            &[
                ("Hostname", "n1"),
                ("ExternalIP", "192.0.2.1"),
                ("InternalIP", "fd00::7"),
                ("InternalIP", "10.0.0.7"),
                ("InternalIP", "10.0.0.8"),
            ],
        );
        assert_eq!(
            member_address(&n, &spec()),
            Ok("10.0.0.7:7950".parse().unwrap())
        );
        let v6 = node(
            &[("lb.example.org/member", "true")],
            &[("InternalIP", "fd00::7")],
        );
        assert_eq!(
            member_address(&v6, &spec()),
            Ok("[fd00::7]:7950".parse().unwrap())
        );
    }

    #[test]
    fn an_unlabelled_node_or_one_without_an_internal_ip_is_no_member() {
        let n = node(
            &[("lb.example.org/member", "false")],
            &[("InternalIP", "10.0.0.7")],
        );
        assert_eq!(
            member_address(&n, &spec()),
            Err(NotAMemberNode::LabelsDoNotMatch)
        );
        let n = node(
            &[("lb.example.org/member", "true")],
            &[("ExternalIP", "192.0.2.1")],
        );
        assert_eq!(
            member_address(&n, &spec()),
            Err(NotAMemberNode::NoInternalIp)
        );
        let every = MemberNodes {
            node_selectors: Vec::new(),
            port: 7946,
        };
        let n = node(&[], &[("InternalIP", "10.0.0.9")]);
        assert_eq!(
            member_address(&n, &every),
            Ok("10.0.0.9:7946".parse().unwrap())
        );
    }
}
