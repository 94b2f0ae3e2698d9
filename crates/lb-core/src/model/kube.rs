//! What the Kubernetes watchers report, as the controller consumes it.

use super::{EndpointsByNode, Node, Selector, Service, ServiceKey};

/// What the watchers tell the controller.
#[derive(Clone, Debug, PartialEq)]
// One per watch event, moved once into the controller: boxing the Service would cost an
// allocation per update for nothing.
#[allow(clippy::large_enum_variant)]
pub enum KubeUpdate {
    /// A `type: LoadBalancer` Service appeared or changed.
    Service(Service),
    /// A Service was deleted or stopped being `type: LoadBalancer`.
    ServiceGone(ServiceKey),
    /// The ready endpoints of a Service changed (empty map: none left).
    Endpoints(ServiceKey, EndpointsByNode),
    Node(Node),
    NodeGone(String),
    /// A Namespace and its labels (watched only while a pool has `namespace_selectors`).
    Namespace {
        name: String,
        labels: Selector,
    },
    NamespaceGone(String),
    /// The first complete list of this kind has been delivered.
    Synced(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Services,
    EndpointSlices,
    Nodes,
    Namespaces,
}
