//! Patch semantics: JSON merge patch (RFC 7386), strategic merge patch (the subset kubectl's
//! client-side apply sends), and the field sets server-side apply tracks in `managedFields`.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// RFC 7386 §2: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The merge key of a list under `path` (the list's own key last), as the Kubernetes types
/// declare with `patchMergeKey`. Lists without one are replaced whole.
fn merge_key(path: &[String]) -> Option<&'static str> {
    let last = path.last()?.as_str();
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match last {
        "ports" if in_container => Some("containerPort"),
        "ports" if path.len() == 2 && path[0] == "spec" => Some("port"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "addresses" if path.first().is_some_and(|p| p == "status") => Some("type"),
        "taints" => Some("key"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Removes every `$…` directive key, recursively (values inserted as new).
pub fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| !is_list_replace_marker(e))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn is_list_replace_marker(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && directive(v) == Some("replace"))
}

/// Strategic merge patch of `patch` onto `target`. Handles `$patch` (`replace`/`delete`),
/// `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
pub fn strategic_merge(target: &Value, patch: &Value) -> Value {
    smp(target, patch, &mut Vec::new())
}

fn smp(target: &Value, patch: &Value, path: &mut Vec<String>) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    if directive(patch) == Some("replace") {
        return strip_directives(patch);
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    let mut orders = Vec::new();
    for (k, v) in p {
        if let Some(list) = k.strip_prefix("$setElementOrder/") {
            orders.push((list.to_string(), v.clone()));
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(del)) = (out.get_mut(list), v) {
                items.retain(|e| !del.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) if directive(v) == Some("delete") => {
                out.remove(k);
            }
            Value::Object(_) => {
                let merged = smp(out.get(k).unwrap_or(&Value::Null), v, path);
                out.insert(k.clone(), merged);
            }
            Value::Array(items) => {
                let merged = merge_list(out.get(k), items, path);
                out.insert(k.clone(), merged);
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
    for (list, order) in orders {
        path.push(list.clone());
        let key = merge_key(path);
        path.pop();
        if let (Some(Value::Array(items)), Value::Array(order)) = (out.get_mut(&list), order) {
            reorder(items, &order, key);
        }
    }
    if let Some(Value::Array(retain)) = p.get("$retainKeys") {
        out.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Value::Object(out)
}

fn merge_list(target: Option<&Value>, patch: &[Value], path: &mut Vec<String>) -> Value {
    let key = merge_key(path);
    let replace = patch.iter().any(is_list_replace_marker);
    let (Some(key), false) = (key, replace) else {
        return strip_directives(&Value::Array(patch.to_vec()));
    };
    let mut out: Vec<Value> = match target {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    for elem in patch {
        let Some(kv) = elem.get(key) else {
            out.push(strip_directives(elem));
            continue;
        };
        let pos = out.iter().position(|e| e.get(key) == Some(kv));
        match (pos, directive(elem)) {
            (Some(i), Some("delete")) => {
                out.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => out[i] = smp(&out[i], elem, path),
            (None, _) => out.push(strip_directives(elem)),
        }
    }
    Value::Array(out)
}

/// `$setElementOrder`: listed elements first, in the given order; the rest after them.
fn reorder(items: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |e: &Value| -> Value {
        match key {
            Some(k) => e.get(k).cloned().unwrap_or(Value::Null),
            None => e.clone(),
        }
    };
    let mut rest = std::mem::take(items);
    for o in order {
        let want = ident(o);
        if let Some(i) = rest.iter().position(|e| ident(e) == want) {
            items.push(rest.remove(i));
        }
    }
    items.extend(rest);
}

/// A field path such as `["status","loadBalancer","ingress"]`.
pub type FieldPath = Vec<String>;

/// Leaf field paths of `v` (scalars and lists; lists are atomic; empty objects and nulls skipped).
pub fn leaves(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect_leaves(v, &mut Vec::new(), &mut out);
    out
}

fn collect_leaves(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(k.clone());
                collect_leaves(v, path, out);
                path.pop();
            }
        }
        Value::Null => {}
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Removes the field at `path`, and any parent objects it leaves empty.
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Value::Object(m) = v else { return };
    if rest.is_empty() {
        m.remove(first);
        return;
    }
    if let Some(child) = m.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            m.remove(first);
        }
    }
}

/// Leaf paths whose values differ between `a` and `b` (either side missing counts).
pub fn changed_leaves(a: &Value, b: &Value) -> BTreeSet<FieldPath> {
    let mut all = leaves(a);
    all.extend(leaves(b));
    all.into_iter()
        .filter(|p| get_path(a, p) != get_path(b, p))
        .collect()
}

/// `fieldsV1` form of a set of paths: `{"f:spec":{"f:type":{}}}`.
pub fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for k in p {
            let entry = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// Paths of a `fieldsV1` document (only `f:` keys; a node without `f:` children is a leaf).
pub fn parse_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let mut had_child = false;
        if let Value::Object(m) = v {
            for (k, child) in m {
                if let Some(name) = k.strip_prefix("f:") {
                    had_child = true;
                    path.push(name.to_string());
                    walk(child, path, out);
                    path.pop();
                }
            }
        }
        if !had_child && !path.is_empty() {
            out.insert(path.clone());
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

pub fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}
