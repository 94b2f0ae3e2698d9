//! Server-side printing: `meta.k8s.io/v1` Table responses (notes §1.5), with the columns the
//! real server's printers use.

use super::resources::Resource;
use super::time::age;
use serde_json::{Value, json};
use std::time::SystemTime;

fn col(name: &str, priority: u8) -> Value {
    let mut c = json!({"name": name, "type": "string", "format": "", "description": "", "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

pub fn columns(r: &Resource) -> Vec<Value> {
    let cols: &[(&str, u8)] = match (r.group, r.plural) {
        ("", "services") => &[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ],
        (_, "events") => &[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ],
        ("", "nodes") => &[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ],
        ("", "namespaces") => &[("Name", 0), ("Status", 0), ("Age", 0)],
        ("apps", "deployments") => &[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        ("discovery.k8s.io", "endpointslices") => &[
            ("Name", 0),
            ("AddressType", 0),
            ("Ports", 0),
            ("Endpoints", 0),
            ("Age", 0),
        ],
        _ => &[("Name", 0), ("Age", 0)],
    };
    cols.iter().map(|(n, p)| col(n, *p)).collect()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or(v: String, dflt: &str) -> String {
    if v.is_empty() { dflt.to_string() } else { v }
}

fn labels_string(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".to_string(),
    }
}

fn arr(v: &Value, ptr: &str) -> Vec<Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn service_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let typ = or(s(o, "/spec/type").to_string(), "ClusterIP");
    let mut ext: Vec<String> = Vec::new();
    if typ == "LoadBalancer" {
        for ing in arr(o, "/status/loadBalancer/ingress") {
            for k in ["ip", "hostname"] {
                if let Some(x) = ing.get(k).and_then(Value::as_str).filter(|x| !x.is_empty()) {
                    ext.push(x.to_string());
                }
            }
        }
    }
    for ip in arr(o, "/spec/externalIPs") {
        if let Some(ip) = ip.as_str() {
            ext.push(ip.to_string());
        }
    }
    let external = if !ext.is_empty() {
        ext.join(",")
    } else if typ == "LoadBalancer" {
        "<pending>".to_string()
    } else if typ == "ExternalName" {
        s(o, "/spec/externalName").to_string()
    } else {
        "<none>".to_string()
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    let cluster_ip = or(s(o, "/spec/clusterIP").to_string(), "<none>");
    vec![
        json!(s(o, "/metadata/name")),
        json!(typ),
        json!(cluster_ip),
        json!(external),
        json!(or(ports.join(","), "<none>")),
        json!(age(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(labels_string(o.pointer("/spec/selector"))),
    ]
}

/// Row of a core/v1 Event (printEvent in the real server).
fn event_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let ts = |ptr: &str| o.pointer(ptr).and_then(Value::as_str);
    let first = match ts("/firstTimestamp") {
        Some(t) => age(Some(t), now),
        None => age(ts("/eventTime"), now),
    };
    let mut last = match ts("/lastTimestamp") {
        Some(t) => age(Some(t), now),
        None => first.clone(),
    };
    let mut count = o.get("count").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = o.get("series").filter(|s| s.is_object()) {
        last = age(series.get("lastObservedTime").and_then(Value::as_str), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(o, "/involvedObject/kind").to_lowercase();
    let name = s(o, "/involvedObject/name");
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let mut source = s(o, "/source/component").to_string();
    let mut host = s(o, "/source/host").to_string();
    if source.is_empty() {
        source = s(o, "/reportingComponent").to_string();
        host = s(o, "/reportingInstance").to_string();
    }
    let source = if host.is_empty() {
        source
    } else {
        format!("{source}, {host}")
    };
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(target),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(o, "/message")),
        json!(first),
        json!(count),
        json!(s(o, "/metadata/name")),
    ]
}

fn node_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let mut status = "Unknown".to_string();
    for c in arr(o, "/status/conditions") {
        if c.get("type").and_then(Value::as_str) == Some("Ready") {
            status = if c.get("status").and_then(Value::as_str) == Some("True") {
                "Ready".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |k: &str| {
        or(
            s(o, &format!("/status/nodeInfo/{k}")).to_string(),
            "<unknown>",
        )
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(status),
        json!(or(roles.join(","), "<none>")),
        json!(age(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn deployment_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let containers = arr(o, "/spec/template/spec/containers");
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or(""))
        .collect();
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!(
            "{}/{}",
            n("/status/readyReplicas"),
            n("/spec/replicas")
        )),
        json!(n("/status/updatedReplicas")),
        json!(n("/status/availableReplicas")),
        json!(age(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(labels_string(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn endpointslice_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let ports: Vec<String> = arr(o, "/ports")
        .iter()
        .filter_map(|p| p.get("port").and_then(Value::as_i64))
        .map(|p| p.to_string())
        .collect();
    let addrs: Vec<String> = arr(o, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses"))
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let endpoints = match addrs.len() {
        0 => "<none>".to_string(),
        1..=3 => addrs.join(","),
        n => format!("{} + {} more...", addrs[..3].join(","), n - 3),
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(s(o, "/addressType")),
        json!(or(ports.join(","), "<unset>")),
        json!(endpoints),
        json!(age(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
    ]
}

/// One Table row for `obj` (already in the resource's own form, e.g. core/v1 Event).
pub fn row(r: &Resource, obj: &Value, now: SystemTime) -> Value {
    let cells = match (r.group, r.plural) {
        ("", "services") => service_cells(obj, now),
        (_, "events") => event_cells(obj, now),
        ("", "nodes") => node_cells(obj, now),
        ("", "namespaces") => vec![
            json!(s(obj, "/metadata/name")),
            json!(or(s(obj, "/status/phase").to_string(), "Active")),
            json!(age(
                obj.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str),
                now
            )),
        ],
        ("apps", "deployments") => deployment_cells(obj, now),
        ("discovery.k8s.io", "endpointslices") => endpointslice_cells(obj, now),
        _ => vec![
            json!(s(obj, "/metadata/name")),
            json!(age(
                obj.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str),
                now
            )),
        ],
    };
    let mut meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"cells": cells,
           "object": {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": meta}})
}

pub fn table(r: &Resource, objs: &[Value], rv: u64, now: SystemTime) -> Value {
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(r),
        "rows": objs.iter().map(|o| row(r, o, now)).collect::<Vec<_>>(),
    })
}
