//! The object store: one global revision counter, every change kept in a history so a watch
//! from any resourceVersion since the last `compact()` can be replayed, and the write
//! semantics of the real API server (defaults, `/status`, merge/strategic/apply patches,
//! managedFields, no-op writes). Optionally saved to a JSON file after every write.

use super::error::ApiError;
use super::patch::{self, FieldPath};
use super::resources::Resource;
use super::select::Selector;
use super::time::{rfc3339, rfc3339_micros};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeType {
    #[serde(rename = "ADDED")]
    Added,
    #[serde(rename = "MODIFIED")]
    Modified,
    #[serde(rename = "DELETED")]
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One write, as watchers replay it. For `Deleted`, `object` is the last state with the new RV.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    pub rv: u64,
    pub storage: String,
    pub change: ChangeType,
    pub object: Value,
    pub prev: Option<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Inner {
    rev: u64,
    compacted: u64,
    /// storage → "namespace/name" (namespace empty for cluster-scoped) → object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    history: Vec<Change>,
    next_ip: u32,
    next_node_port: u32,
    uid_seq: u64,
}

#[derive(Clone, Debug)]
struct Settings {
    minor: String,
    aggregated_discovery: bool,
    bookmark_interval: Duration,
    /// Added to every write (create, update, patch, delete): what a real API server spends
    /// on one (admission, etcd); reads stay immediate.
    write_latency: Duration,
}

/// One request as received (for tests asserting what a client sent).
#[derive(Clone, Debug, Default)]
pub struct RequestRecord {
    pub method: String,
    pub path_and_query: String,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
}

impl RequestRecord {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }

    /// Is this a watch request (`watch=true` in the query)?
    pub fn is_watch(&self) -> bool {
        self.path_and_query.contains("watch=true") || self.path_and_query.contains("watch=1")
    }
}

/// How a patch body is to be applied (from the request Content-Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Apply { force: bool },
}

/// Who writes and where: the resource, the namespace (`""` for cluster-scoped), the field
/// manager, and whether the `/status` subresource is addressed.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub res: &'static Resource,
    pub ns: &'a str,
    pub manager: &'a str,
    pub status: bool,
}

pub struct Store {
    inner: Mutex<Inner>,
    tick: watch::Sender<u64>,
    bookmarks: watch::Sender<u64>,
    request_tick: watch::Sender<u64>,
    persist: Option<PathBuf>,
    requests: Mutex<Vec<RequestRecord>>,
    settings: Mutex<Settings>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn meta_str<'a>(o: &'a Value, field: &str) -> &'a str {
    o.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    match o.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A managedFields entry, with its field set decoded.
#[derive(Clone, Debug, PartialEq)]
struct Managed {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: BTreeSet<FieldPath>,
}

impl Managed {
    fn same_owner(&self, manager: &str, op: &str, sub: &str) -> bool {
        self.manager == manager && self.operation == op && self.subresource == sub
    }
}

fn read_managed(o: &Value) -> Vec<Managed> {
    let Some(list) = o
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Managed {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields: e
                    .get("fieldsV1")
                    .map(patch::parse_fields_v1)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn write_managed(o: &mut Value, mfs: &[Managed]) {
    let list: Vec<Value> = mfs
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
                "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": patch::fields_v1(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    let meta = meta_mut(o);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Can a field manager own `path` when writing through `status` (or the main resource)?
fn ownable(path: &FieldPath, res: &Resource, status: bool) -> bool {
    let first = path.first().map(String::as_str).unwrap_or("");
    if matches!(first, "apiVersion" | "kind") {
        return false;
    }
    if first == "metadata" {
        let second = path.get(1).map(String::as_str).unwrap_or("");
        return matches!(
            second,
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        );
    }
    if !res.has_status {
        return true;
    }
    (first == "status") == status
}

/// `/status` writes keep everything but status and labels/annotations; main writes keep status.
fn enforce_subresource(res: &Resource, status: bool, old: &Value, new: &mut Value) {
    if !res.has_status {
        return;
    }
    if status {
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        for k in ["labels", "annotations"] {
            let v = new.pointer(&format!("/metadata/{k}")).cloned();
            let m = meta_mut(&mut out);
            match v {
                Some(v) => m.insert(k.into(), v),
                None => m.remove(k),
            };
        }
        *new = out;
    } else if let Some(m) = new.as_object_mut() {
        match old.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
}

/// Maps an events.k8s.io/v1 Event to the core/v1 form the real server serves (notes §2.1).
pub fn core_event(e: &Value) -> Value {
    let mut o = json!({"kind":"Event","apiVersion":"v1","metadata": e.get("metadata").cloned().unwrap_or(json!({}))});
    let copy = |o: &mut Value, from: &str, to: &str| {
        if let Some(v) = e.get(from).filter(|v| !v.is_null()) {
            o[to] = v.clone();
        }
    };
    copy(&mut o, "regarding", "involvedObject");
    copy(&mut o, "related", "related");
    copy(&mut o, "reason", "reason");
    copy(&mut o, "note", "message");
    copy(&mut o, "type", "type");
    copy(&mut o, "action", "action");
    copy(&mut o, "eventTime", "eventTime");
    copy(&mut o, "series", "series");
    copy(&mut o, "reportingController", "reportingComponent");
    copy(&mut o, "reportingInstance", "reportingInstance");
    copy(&mut o, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut o, "deprecatedLastTimestamp", "lastTimestamp");
    copy(&mut o, "deprecatedCount", "count");
    o["source"] = e.get("deprecatedSource").cloned().unwrap_or(json!({}));
    if o.get("involvedObject").is_none() {
        o["involvedObject"] = json!({});
    }
    for k in ["firstTimestamp", "lastTimestamp"] {
        if o.get(k).is_none() {
            o[k] = Value::Null;
        }
    }
    o
}

/// The object as served for `res` (core/v1 events are a view).
pub fn view(res: &Resource, o: &Value) -> Value {
    if res.view_of_events {
        core_event(o)
    } else {
        o.clone()
    }
}

/// A watch's position and filter.
#[derive(Clone, Debug)]
pub struct WatchFilter {
    pub res: &'static Resource,
    /// `None`: all namespaces.
    pub ns: Option<String>,
    pub selector: Selector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        if let Some(ns) = &self.ns
            && meta_str(o, "namespace") != ns
        {
            return false;
        }
        self.selector.matches(&view(self.res, o))
    }
}

impl Store {
    pub fn new() -> Arc<Store> {
        Arc::new(Self::with_inner(Inner::default(), None))
    }

    /// A store saved to `path` (JSON) after each write, loaded from it if it exists. A reloaded
    /// store keeps its objects and revision; its history does not survive (old RVs give 410).
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Arc<Store>> {
        let path = path.into();
        let mut inner = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Inner>(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Inner::default(),
            Err(e) => return Err(e),
        };
        inner.history.clear();
        inner.compacted = inner.rev;
        Ok(Arc::new(Self::with_inner(inner, Some(path))))
    }

    fn with_inner(inner: Inner, persist: Option<PathBuf>) -> Self {
        Self {
            inner: Mutex::new(inner),
            tick: watch::Sender::new(0),
            bookmarks: watch::Sender::new(0),
            request_tick: watch::Sender::new(0),
            persist,
            requests: Mutex::new(Vec::new()),
            settings: Mutex::new(Settings {
                minor: "32".into(),
                aggregated_discovery: true,
                bookmark_interval: Duration::from_secs(5),
                write_latency: Duration::ZERO,
            }),
        }
    }

    // ----- settings and test hooks -----

    /// The `minor` answered on `/version` (the kubectl dispatcher picks that kubectl).
    pub fn set_server_minor(&self, minor: &str) {
        lock(&self.settings).minor = minor.to_string();
    }

    pub fn server_minor(&self) -> String {
        lock(&self.settings).minor.clone()
    }

    /// Every write from now on takes `d` longer (concurrent writes overlap, as on a real
    /// server). A genuine kube-apiserver with etcd on the development machine took ~3 ms
    /// per server-side apply; the default is 0.
    pub fn set_write_latency(&self, d: Duration) {
        lock(&self.settings).write_latency = d;
    }

    pub fn write_latency(&self) -> Duration {
        lock(&self.settings).write_latency
    }

    /// Serve aggregated discovery when asked for it (default), or only the legacy documents.
    pub fn set_aggregated_discovery(&self, on: bool) {
        lock(&self.settings).aggregated_discovery = on;
    }

    pub fn aggregated_discovery(&self) -> bool {
        lock(&self.settings).aggregated_discovery
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 5 s).
    pub fn set_bookmark_interval(&self, d: Duration) {
        lock(&self.settings).bookmark_interval = d;
    }

    pub fn bookmark_interval(&self) -> Duration {
        lock(&self.settings).bookmark_interval
    }

    /// Makes every bookmark-enabled watch send a BOOKMARK now.
    pub fn bookmark_now(&self) {
        self.bookmarks.send_modify(|t| *t = t.wrapping_add(1));
    }

    /// Ticks on every change; watch streams wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Ticks on every `bookmark_now()`.
    pub fn subscribe_bookmarks(&self) -> watch::Receiver<u64> {
        self.bookmarks.subscribe()
    }

    pub fn record_request(&self, r: RequestRecord) {
        lock(&self.requests).push(r);
        self.request_tick.send_modify(|t| *t = t.wrapping_add(1));
    }

    /// Waits until a request matching `pred` has been received (including earlier ones).
    pub async fn wait_for_request(&self, pred: impl Fn(&RequestRecord) -> bool) -> RequestRecord {
        let mut rx = self.request_tick.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(r) = lock(&self.requests).iter().find(|r| pred(r)) {
                return r.clone();
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Every request seen, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).clone()
    }

    /// Every request seen, as `METHOD path?query`.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.requests)
            .iter()
            .map(|r| format!("{} {}", r.method, r.path_and_query))
            .collect()
    }

    /// Number of requests whose path (without query) equals `path`, any method.
    pub fn request_count(&self, path: &str) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }

    pub fn revision(&self) -> u64 {
        lock(&self.inner).rev
    }

    /// Drops the change history: watches from any RV older than now get 410 Expired.
    pub fn compact(&self) {
        let mut inner = lock(&self.inner);
        inner.compacted = inner.rev;
        inner.history.clear();
        self.save(&inner);
    }

    fn hook_target(resource: &str, ns: &str) -> Result<Target<'static>, ApiError> {
        let res = Resource::by_name(resource)
            .ok_or_else(|| ApiError::bad_request(format!("unknown resource {resource:?}")))?;
        let _ = ns;
        Ok(Target {
            res,
            ns: "",
            manager: "test-hook",
            status: false,
        })
    }

    /// Creates `obj` (namespace from its metadata, `default` if absent and namespaced).
    pub fn create(&self, resource: &str, obj: Value) -> Result<Value, ApiError> {
        let t = Self::hook_target(resource, "")?;
        let ns = if t.res.namespaced {
            let ns = meta_str(&obj, "namespace");
            if ns.is_empty() { "default" } else { ns }.to_string()
        } else {
            String::new()
        };
        self.create_obj(&Target { ns: &ns, ..t }, obj)
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let res = Resource::by_name(resource)?;
        self.get_obj(res, ns, name)
    }

    pub fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        match Resource::by_name(resource) {
            Some(res) => self.list_objs(res, ns, &Selector::default()).0,
            None => Vec::new(),
        }
    }

    /// JSON merge patch on the main resource.
    pub fn patch(&self, resource: &str, ns: &str, name: &str, p: Value) -> Result<Value, ApiError> {
        let t = Self::hook_target(resource, ns)?;
        self.patch_obj(&Target { ns, ..t }, name, PatchKind::Merge, p)
            .map(|(_, v)| v)
    }

    /// JSON merge patch on `/status`.
    pub fn patch_status(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        p: Value,
    ) -> Result<Value, ApiError> {
        let t = Self::hook_target(resource, ns)?;
        let t = Target {
            ns,
            status: true,
            ..t
        };
        self.patch_obj(&t, name, PatchKind::Merge, p)
            .map(|(_, v)| v)
    }

    pub fn delete(&self, resource: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
        let t = Self::hook_target(resource, ns)?;
        self.delete_obj(t.res, ns, name)
    }

    /// All events.k8s.io/v1 events (what `Recorder` wrote).
    pub fn events(&self) -> Vec<Value> {
        self.list("events", None)
    }

    // ----- reads -----

    pub fn get_obj(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        let inner = lock(&self.inner);
        inner
            .objects
            .get(res.storage)
            .and_then(|m| m.get(&key(ns, name)))
            .map(|o| view(res, o))
    }

    /// Objects (served form) sorted by namespace/name, and the current revision.
    pub fn list_objs(&self, res: &Resource, ns: Option<&str>, sel: &Selector) -> (Vec<Value>, u64) {
        let inner = lock(&self.inner);
        let items = inner
            .objects
            .get(res.storage)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| ns.is_none_or(|ns| meta_str(o, "namespace") == ns))
            .map(|o| view(res, o))
            .filter(|o| sel.matches(o))
            .collect();
        (items, inner.rev)
    }

    // ----- watch -----

    /// Starts a watch: with `rv` `None` (or 0) the current matching objects (to send as
    /// synthetic ADDED) and the cursor; with `Some(n)` an empty list and cursor `n`, or 410.
    pub fn watch_start(
        &self,
        f: &WatchFilter,
        rv: Option<u64>,
    ) -> Result<(Vec<Value>, u64), ApiError> {
        let inner = lock(&self.inner);
        match rv {
            None | Some(0) => {
                let items = inner
                    .objects
                    .get(f.res.storage)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|o| f.matches(o))
                    .map(|o| view(f.res, o))
                    .collect();
                Ok((items, inner.rev))
            }
            Some(n) if n < inner.compacted => Err(Self::too_old(n, inner.compacted)),
            Some(n) => Ok((Vec::new(), n)),
        }
    }

    fn too_old(n: u64, compacted: u64) -> ApiError {
        ApiError::gone(format!("too old resource version: {n} ({compacted})"))
    }

    /// Changes after `*cursor` that the filter sees, as (type, object); advances the cursor.
    pub fn watch_next(
        &self,
        f: &WatchFilter,
        cursor: &mut u64,
    ) -> Result<Vec<(&'static str, Value)>, ApiError> {
        let inner = lock(&self.inner);
        if *cursor < inner.compacted {
            return Err(Self::too_old(*cursor, inner.compacted));
        }
        let start = inner.history.partition_point(|c| c.rv <= *cursor);
        let mut out = Vec::new();
        for c in &inner.history[start..] {
            if c.storage != f.res.storage {
                continue;
            }
            let now = f.matches(&c.object);
            let before = c.prev.as_ref().is_some_and(|p| f.matches(p));
            let typ = match (c.change, before, now) {
                (ChangeType::Deleted, true, _) => "DELETED",
                (ChangeType::Deleted, false, _) => continue,
                (_, true, true) => "MODIFIED",
                (_, false, true) => "ADDED",
                (_, true, false) => "DELETED",
                (_, false, false) => continue,
            };
            out.push((typ, view(f.res, &c.object)));
        }
        *cursor = (*cursor).max(inner.rev);
        Ok(out)
    }

    // ----- writes -----

    fn save(&self, inner: &Inner) {
        let Some(path) = &self.persist else { return };
        let Ok(bytes) = serde_json::to_vec(inner) else {
            return;
        };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// Stores `obj` (or deletes the key) under a new revision and wakes the watchers.
    fn commit(
        &self,
        inner: &mut Inner,
        res: &Resource,
        k: String,
        change: ChangeType,
        mut obj: Value,
    ) -> Value {
        inner.rev += 1;
        let rv = inner.rev;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let objects = inner.objects.entry(res.storage.to_string()).or_default();
        let prev = if change == ChangeType::Deleted {
            objects.remove(&k)
        } else {
            objects.insert(k, obj.clone())
        };
        inner.history.push(Change {
            rv,
            storage: res.storage.to_string(),
            change,
            object: obj.clone(),
            prev,
        });
        self.save(inner);
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
        obj
    }

    fn new_uid(inner: &mut Inner) -> String {
        inner.uid_seq += 1;
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let mut x = t ^ inner.uid_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (a, b) = (next(), next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn alloc_ip(inner: &mut Inner, v6: bool) -> String {
        inner.next_ip += 1;
        let n = inner.next_ip + 9;
        if v6 {
            format!("fd00:10:96::{:x}", n)
        } else {
            format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
        }
    }

    fn used_node_ports(inner: &Inner) -> BTreeSet<i64> {
        inner
            .objects
            .get("services")
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|s| {
                s.pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect()
    }

    fn alloc_node_port(inner: &mut Inner, taken: &mut BTreeSet<i64>) -> i64 {
        for _ in 0..2768 {
            let p = 30000 + i64::from(inner.next_node_port % 2768);
            inner.next_node_port = inner.next_node_port.wrapping_add(1);
            if taken.insert(p) {
                return p;
            }
        }
        0
    }

    /// Service defaulting (notes §3 "Service create"); on update keeps allocated values.
    fn service_defaults(inner: &mut Inner, o: &mut Value, old: Option<&Value>) {
        if !o.get("spec").is_some_and(Value::is_object) {
            o["spec"] = json!({});
        }
        let old_spec = old
            .and_then(|o| o.get("spec"))
            .cloned()
            .unwrap_or(json!({}));
        // Computed only when a port needs one: it scans every Service.
        let mut taken: Option<BTreeSet<i64>> = None;
        let spec = &mut o["spec"];
        let typ = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec["type"] = json!(typ);
        let set_default = |spec: &mut Value, k: &str, v: Value| {
            if spec.get(k).is_none_or(Value::is_null) {
                spec[k] = v;
            }
        };
        if typ != "ExternalName" {
            if spec.get("ipFamilies").is_none_or(Value::is_null) {
                let fams = match old_spec.get("ipFamilies") {
                    Some(f) if !f.is_null() => f.clone(),
                    _ => match spec.get("ipFamilyPolicy").and_then(Value::as_str) {
                        Some("PreferDualStack" | "RequireDualStack") => json!(["IPv4", "IPv6"]),
                        _ => json!(["IPv4"]),
                    },
                };
                spec["ipFamilies"] = fams;
            }
            let nfam = spec["ipFamilies"].as_array().map_or(1, Vec::len);
            set_default(
                spec,
                "ipFamilyPolicy",
                json!(if nfam > 1 {
                    "RequireDualStack"
                } else {
                    "SingleStack"
                }),
            );
            for k in ["clusterIP", "clusterIPs"] {
                if spec.get(k).is_none_or(|v| v.is_null() || v == "")
                    && let Some(v) = old_spec.get(k)
                {
                    spec[k] = v.clone();
                }
            }
            let cip = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if cip == "None" {
                spec["clusterIPs"] = json!(["None"]);
            } else if spec.get("clusterIPs").is_none_or(Value::is_null) || cip.is_empty() {
                let fams: Vec<String> = spec["ipFamilies"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let ips: Vec<String> = fams
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        if i == 0 && !cip.is_empty() {
                            cip.clone()
                        } else {
                            Self::alloc_ip(inner, f == "IPv6")
                        }
                    })
                    .collect();
                spec["clusterIP"] = json!(ips.first().cloned().unwrap_or_default());
                spec["clusterIPs"] = json!(ips);
            }
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        set_default(spec, "sessionAffinity", json!("None"));
        let lb = typ == "LoadBalancer";
        let node_ports = typ == "NodePort"
            || (lb && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)));
        if lb {
            set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        if lb || typ == "NodePort" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut() {
                if !p.is_object() {
                    continue;
                }
                set_default(p, "protocol", json!("TCP"));
                if p.get("targetPort").is_none_or(Value::is_null) {
                    p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
                }
                if node_ports && p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                    let same = old_ports.iter().find(|op| {
                        op.get("port") == p.get("port") && op.get("protocol") == p.get("protocol")
                    });
                    let np = match same
                        .and_then(|op| op.get("nodePort"))
                        .and_then(Value::as_i64)
                    {
                        Some(np) if np > 0 => np,
                        _ => {
                            let used = match taken.take() {
                                Some(t) => t,
                                None => Self::used_node_ports(inner),
                            };
                            let used = taken.insert(used);
                            Self::alloc_node_port(inner, used)
                        }
                    };
                    p["nodePort"] = json!(np);
                }
            }
        }
    }

    /// Server-set fields on create, per kind.
    fn create_defaults(inner: &mut Inner, res: &Resource, o: &mut Value) {
        match (res.group, res.plural) {
            ("", "namespaces") => {
                // What the real server adds: the immutable name label (1.21+), the
                // `kubernetes` finalizer and phase Active.
                let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
                if !o["metadata"].get("labels").is_some_and(Value::is_object) {
                    o["metadata"]["labels"] = json!({});
                }
                o["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                o["spec"] = json!({"finalizers": ["kubernetes"]});
                o["status"] = json!({"phase": "Active"});
            }
            ("", "services") => {
                Self::service_defaults(inner, o, None);
                o["status"] = json!({"loadBalancer": {}});
            }
            ("", "nodes") => {
                let taint = json!({"key":"node.kubernetes.io/not-ready","effect":"NoSchedule"});
                if !o.get("spec").is_some_and(Value::is_object) {
                    o["spec"] = json!({});
                }
                match o["spec"].get_mut("taints") {
                    Some(Value::Array(t)) => {
                        if !t.iter().any(|x| x.get("key") == taint.get("key")) {
                            t.push(taint);
                        }
                    }
                    _ => o["spec"]["taints"] = json!([taint]),
                }
                if !o.get("status").is_some_and(Value::is_object) {
                    o["status"] = json!({});
                }
                if o["status"].get("nodeInfo").is_none() {
                    o["status"]["nodeInfo"] = json!({
                        "machineID":"","systemUUID":"","bootID":"","kernelVersion":"","osImage":"",
                        "containerRuntimeVersion":"","kubeletVersion":"","kubeProxyVersion":"",
                        "operatingSystem":"","architecture":""});
                }
                if o["status"].get("daemonEndpoints").is_none() {
                    o["status"]["daemonEndpoints"] = json!({"kubeletEndpoint":{"Port":0}});
                }
            }
            ("apps", "deployments") => {
                if !o.get("spec").is_some_and(Value::is_object) {
                    o["spec"] = json!({});
                }
                let spec = &mut o["spec"];
                if spec.get("replicas").is_none_or(Value::is_null) {
                    spec["replicas"] = json!(1);
                }
                for (k, v) in [
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                    (
                        "strategy",
                        json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}}),
                    ),
                ] {
                    if spec.get(k).is_none() {
                        spec[k] = v;
                    }
                }
                o["status"] = json!({});
            }
            _ => {}
        }
    }

    fn uses_generation(res: &Resource) -> bool {
        matches!(res.plural, "deployments" | "endpointslices")
    }

    fn spec_part(o: &Value) -> Value {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        o
    }

    fn now_time() -> String {
        rfc3339(SystemTime::now())
    }

    /// Marks `changed` paths as owned by (manager, Update, sub), taking them from others.
    fn record_update(
        mfs: &mut Vec<Managed>,
        t: &Target<'_>,
        changed: &BTreeSet<FieldPath>,
        present: &BTreeSet<FieldPath>,
    ) {
        let sub = if t.status { "status" } else { "" };
        let changed: BTreeSet<FieldPath> = changed
            .iter()
            .filter(|p| ownable(p, t.res, t.status))
            .cloned()
            .collect();
        if changed.is_empty() {
            return;
        }
        for m in mfs.iter_mut() {
            if !m.same_owner(t.manager, "Update", sub) {
                m.fields.retain(|p| !changed.contains(p));
            }
        }
        let mine: BTreeSet<FieldPath> = changed.intersection(present).cloned().collect();
        match mfs
            .iter_mut()
            .find(|m| m.same_owner(t.manager, "Update", sub))
        {
            Some(m) => {
                m.fields.extend(mine);
                m.time = Self::now_time();
            }
            None => mfs.push(Managed {
                manager: t.manager.to_string(),
                operation: "Update".into(),
                api_version: t.res.api_version(),
                time: Self::now_time(),
                subresource: sub.into(),
                fields: mine,
            }),
        }
        mfs.retain(|m| !m.fields.is_empty());
    }

    fn check_name(res: &Resource, name: &str) -> Result<(), ApiError> {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(())
        } else {
            Err(ApiError::invalid(
                res,
                name,
                format!(
                    "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                    res.kind
                ),
            ))
        }
    }

    /// POST: validates, fills server fields and defaults, stores. Returns the new object.
    pub fn create_obj(&self, t: &Target<'_>, body: Value) -> Result<Value, ApiError> {
        if t.res.view_of_events {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "core/v1 events are read-only here; write events.k8s.io/v1 events",
            ));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        let mut inner = lock(&self.inner);
        self.create_locked(&mut inner, t, body, None)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        t: &Target<'_>,
        body: Value,
        apply_fields: Option<BTreeSet<FieldPath>>,
    ) -> Result<Value, ApiError> {
        let mut o = body;
        let res = t.res;
        if !meta_str(&o, "resourceVersion").is_empty() {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let body_ns = meta_str(&o, "namespace").to_string();
        if res.namespaced && !body_ns.is_empty() && body_ns != t.ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object does not match the namespace sent on the request ({body_ns} != {})",
                t.ns
            )));
        }
        let mut name = meta_str(&o, "name").to_string();
        if name.is_empty() {
            let gen_name = meta_str(&o, "generateName").to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    res,
                    "",
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        res.kind
                    ),
                ));
            }
            let uid = Self::new_uid(inner);
            name = format!("{gen_name}{}", &uid[..5]);
        }
        Self::check_name(res, &name)?;
        let k = key(t.ns, &name);
        if inner
            .objects
            .get(res.storage)
            .is_some_and(|m| m.contains_key(&k))
        {
            return Err(ApiError::already_exists(res, &name));
        }
        let sent = patch::leaves(&o);
        o["apiVersion"] = json!(res.api_version());
        o["kind"] = json!(res.kind);
        let uid = Self::new_uid(inner);
        {
            let m = meta_mut(&mut o);
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(t.ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(Self::now_time()));
            m.remove("managedFields");
            m.remove("selfLink");
            m.remove("deletionTimestamp");
            if Self::uses_generation(res) {
                m.insert("generation".into(), json!(1));
            }
        }
        if res.group == "events.k8s.io" && o.get("eventTime").is_none_or(Value::is_null) {
            o["eventTime"] = json!(rfc3339_micros(SystemTime::now()));
        }
        Self::create_defaults(inner, res, &mut o);
        let mut mfs = Vec::new();
        let present = patch::leaves(&o);
        match apply_fields {
            Some(fields) => mfs.push(Managed {
                manager: t.manager.to_string(),
                operation: "Apply".into(),
                api_version: res.api_version(),
                time: Self::now_time(),
                subresource: String::new(),
                fields,
            }),
            None => {
                let owned: BTreeSet<FieldPath> = sent.intersection(&present).cloned().collect();
                Self::record_update(&mut mfs, t, &owned, &present);
            }
        }
        write_managed(&mut o, &mfs);
        Ok(self.commit(inner, res, k, ChangeType::Added, o))
    }

    fn existing(inner: &Inner, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        inner
            .objects
            .get(res.storage)
            .and_then(|m| m.get(&key(ns, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Finishes an update: subresource rule, server fields, defaults, generation, no-op check.
    fn finish_update(
        &self,
        inner: &mut Inner,
        t: &Target<'_>,
        old: &Value,
        mut new: Value,
        mfs: Option<Vec<Managed>>,
    ) -> Value {
        let res = t.res;
        enforce_subresource(res, t.status, old, &mut new);
        new["apiVersion"] = json!(res.api_version());
        new["kind"] = json!(res.kind);
        {
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
            ] {
                match old.pointer(&format!("/metadata/{k}")) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        if res.plural == "services" && res.group.is_empty() {
            Self::service_defaults(inner, &mut new, Some(old));
        }
        if Self::uses_generation(res) && Self::spec_part(old) != Self::spec_part(&new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let mfs = match mfs {
            Some(m) => m,
            None => {
                let mut m = read_managed(old);
                let changed = patch::changed_leaves(old, &new);
                Self::record_update(&mut m, t, &changed, &patch::leaves(&new));
                m
            }
        };
        write_managed(&mut new, &mfs);
        let strip = |o: &Value| {
            let mut o = o.clone();
            meta_mut(&mut o).remove("managedFields");
            o
        };
        let fields_of = |m: &[Managed]| -> Vec<(String, String, String, BTreeSet<FieldPath>)> {
            m.iter()
                .map(|m| {
                    (
                        m.manager.clone(),
                        m.operation.clone(),
                        m.subresource.clone(),
                        m.fields.clone(),
                    )
                })
                .collect()
        };
        if strip(old) == strip(&new) && fields_of(&read_managed(old)) == fields_of(&mfs) {
            return old.clone();
        }
        let k = key(t.ns, meta_str(old, "name"));
        self.commit(inner, res, k, ChangeType::Modified, new)
    }

    fn check_rv(res: &Resource, name: &str, body: &Value, old: &Value) -> Result<(), ApiError> {
        let want = meta_str(body, "resourceVersion");
        if !want.is_empty() && want != meta_str(old, "resourceVersion") {
            return Err(ApiError::conflict(res, name));
        }
        Ok(())
    }

    /// PUT on the object or its `/status`.
    pub fn replace_obj(&self, t: &Target<'_>, name: &str, body: Value) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut inner = lock(&self.inner);
        let old = Self::existing(&inner, t.res, t.ns, name)?;
        Self::check_rv(t.res, name, &body, &old)?;
        Ok(self.finish_update(&mut inner, t, &old, body, None))
    }

    /// PATCH. Returns (HTTP status, object): 201 when server-side apply created it.
    pub fn patch_obj(
        &self,
        t: &Target<'_>,
        name: &str,
        kind: PatchKind,
        body: Value,
    ) -> Result<(u16, Value), ApiError> {
        let res = t.res;
        if res.view_of_events {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "core/v1 events are read-only here; write events.k8s.io/v1 events",
            ));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        let mut inner = lock(&self.inner);
        match kind {
            PatchKind::Merge | PatchKind::Strategic => {
                let old = Self::existing(&inner, res, t.ns, name)?;
                Self::check_rv(res, name, &body, &old)?;
                let new = if kind == PatchKind::Merge {
                    patch::merge_patch(&old, &body)
                } else {
                    patch::strategic_merge(&old, &body)
                };
                Ok((200, self.finish_update(&mut inner, t, &old, new, None)))
            }
            PatchKind::Apply { force } => self.apply_locked(&mut inner, t, name, body, force),
        }
    }

    fn apply_locked(
        &self,
        inner: &mut Inner,
        t: &Target<'_>,
        name: &str,
        body: Value,
        force: bool,
    ) -> Result<(u16, Value), ApiError> {
        let res = t.res;
        if t.manager.is_empty() {
            return Err(ApiError::invalid(
                res,
                name,
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&body, "name")
            )));
        }
        let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if api_version.is_empty() {
            return Err(ApiError::bad_request(
                "invalid object type: /, Kind=: apiVersion must be set in the applied configuration",
            ));
        }
        if api_version != res.api_version()
            || body.get("kind").and_then(Value::as_str) != Some(res.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the applied configuration is for {api_version} {}, not {} {}",
                body.get("kind").and_then(Value::as_str).unwrap_or(""),
                res.api_version(),
                res.kind
            )));
        }
        let applied: BTreeSet<FieldPath> = patch::leaves(&body)
            .into_iter()
            .filter(|p| ownable(p, res, t.status))
            .collect();
        let old = match Self::existing(inner, res, t.ns, name) {
            Ok(o) => o,
            Err(e) if t.status => {
                return Err(ApiError {
                    code: 422,
                    reason: "Invalid",
                    ..e
                });
            }
            Err(_) => {
                let mut b = body;
                meta_mut(&mut b).insert("name".into(), json!(name));
                return self
                    .create_locked(inner, t, b, Some(applied))
                    .map(|o| (201, o));
            }
        };
        let sub = if t.status { "status" } else { "" };
        let mut mfs = read_managed(&old);
        let mut merged = patch::strategic_merge(&old, &body);
        let previously: BTreeSet<FieldPath> = mfs
            .iter()
            .filter(|m| m.same_owner(t.manager, "Apply", sub))
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        for p in previously.difference(&applied) {
            let others = mfs
                .iter()
                .any(|m| !m.same_owner(t.manager, "Apply", sub) && m.fields.contains(p));
            if !others {
                patch::remove_path(&mut merged, p);
            }
        }
        // Conflicts: another manager owns a field whose value this apply changes.
        let mut conflicts = Vec::new();
        for p in &applied {
            if patch::get_path(&old, p) == patch::get_path(&merged, p) {
                continue;
            }
            for m in mfs.iter().filter(|m| m.manager != t.manager) {
                if m.fields.contains(p) {
                    conflicts.push((m.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| {
                    let sub = if m.subresource.is_empty() {
                        String::new()
                    } else {
                        format!(" with subresource \"{}\"", m.subresource)
                    };
                    json!({"reason":"FieldManagerConflict",
                           "message": format!("conflict with \"{}\"{sub} using {}", m.manager, m.api_version),
                           "field": patch::dotted(p)})
                })
                .collect();
            let n = causes.len();
            let list: Vec<String> = causes
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["message"].as_str().unwrap_or(""),
                        c["field"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join("\n")
                ),
            );
            e.details = json!({"name": name, "kind": res.plural, "causes": causes});
            return Err(e);
        }
        for (c, p) in &conflicts {
            for m in mfs.iter_mut() {
                if m.same_owner(&c.manager, &c.operation, &c.subresource) {
                    m.fields.remove(p);
                }
            }
        }
        match mfs
            .iter_mut()
            .find(|m| m.same_owner(t.manager, "Apply", sub))
        {
            Some(m) => {
                if m.fields != applied {
                    m.time = Self::now_time();
                }
                m.fields = applied;
            }
            None => mfs.push(Managed {
                manager: t.manager.to_string(),
                operation: "Apply".into(),
                api_version: res.api_version(),
                time: Self::now_time(),
                subresource: sub.into(),
                fields: applied,
            }),
        }
        mfs.retain(|m| !m.fields.is_empty());
        Ok((200, self.finish_update(inner, t, &old, merged, Some(mfs))))
    }

    /// DELETE: returns the deleted object (with its last resourceVersion).
    pub fn delete_obj(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        if res.view_of_events {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "core/v1 events are read-only here; write events.k8s.io/v1 events",
            ));
        }
        let mut inner = lock(&self.inner);
        let old = Self::existing(&inner, res, ns, name)?;
        self.commit(
            &mut inner,
            res,
            key(ns, name),
            ChangeType::Deleted,
            old.clone(),
        );
        Ok(old)
    }
}
