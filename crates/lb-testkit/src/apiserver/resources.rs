//! The resources this server knows, and the discovery documents kubectl reads (notes §1.2).

use serde_json::{Value, json};

/// One served resource. Core/v1 `events` is a read-only view over the events.k8s.io store.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource (status writes keep spec; main writes keep status).
    pub has_status: bool,
    /// Key of the object store this resource reads and writes.
    pub storage: &'static str,
    /// Read-only view mapped from another group's objects (core/v1 events).
    pub view_of_events: bool,
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        has_status: true,
        storage: "services",
        view_of_events: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        has_status: false,
        storage: "events.k8s.io/events",
        view_of_events: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        has_status: true,
        storage: "nodes",
        view_of_events: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        has_status: false,
        storage: "namespaces",
        view_of_events: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        has_status: true,
        storage: "apps/deployments",
        view_of_events: false,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        has_status: false,
        storage: "discovery.k8s.io/endpointslices",
        view_of_events: false,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        has_status: false,
        storage: "events.k8s.io/events",
        view_of_events: false,
    },
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `details.kind` of Status errors: the plural, as the real server reports it.
    pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Resource used by the store hooks: `services`, `nodes`, `deployments`, `endpointslices`,
    /// `events` (events.k8s.io), or `<group>/<plural>`.
    pub fn by_name(name: &str) -> Option<&'static Resource> {
        let (group, plural) = match name.split_once('/') {
            Some((g, p)) => (Some(g), p),
            None => (None, name),
        };
        RESOURCES.iter().find(|r| {
            r.plural == plural
                && !r.view_of_events
                && group.is_none_or(|g| g == r.group || (g == "core" && r.group.is_empty()))
        })
    }
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn api_versions() -> Value {
    json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups})
}

/// Legacy `APIResourceList` for one group/version; `None` when not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names,
        }));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get","patch","update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(
        json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":gv,"resources":resources}),
    )
}

/// Aggregated discovery (`apidiscovery.k8s.io/<disc_version>`) for `/api` (core) or `/apis`.
pub fn aggregated(core: bool, disc_version: &str) -> Value {
    let gvs: Vec<(&str, &str)> = if core {
        vec![("", "v1")]
    } else {
        group_versions()
    };
    let items: Vec<Value> = gvs
        .into_iter()
        .map(|(g, v)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == g && r.version == v)
                .map(|r| {
                    let kind = json!({"group": g, "version": v, "kind": r.kind});
                    let mut res = json!({
                        "resource": r.plural, "responseKind": kind,
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular, "verbs": VERBS,
                        "shortNames": r.short_names,
                    });
                    if r.has_status {
                        res["subresources"] = json!([{"subresource":"status","responseKind":kind,
                            "verbs":["get","patch","update"]}]);
                    }
                    res
                })
                .collect();
            let metadata = if g.is_empty() {
                json!({})
            } else {
                json!({"name": g})
            };
            json!({"metadata": metadata,
                   "versions":[{"version": v, "freshness":"Current", "resources": resources}]})
        })
        .collect();
    json!({"kind":"APIGroupDiscoveryList",
           "apiVersion": format!("apidiscovery.k8s.io/{disc_version}"),
           "metadata":{}, "items": items})
}
