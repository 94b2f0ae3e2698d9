//! HTTP/1.1 front end (hyper 1): routing, discovery, Table negotiation, list/watch streams.

use super::error::ApiError;
use super::proto;
use super::resources::{self, Resource};
use super::select::Selector;
use super::store::{PatchKind, RequestRecord, Store, Target, WatchFilter};
use super::table;
use bytes::Bytes;
use futures::Stream;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Response body: a whole buffer, or a stream of watch lines (sent chunked).
pub enum RespBody {
    Full(Option<Bytes>),
    Stream(Pin<Box<dyn Stream<Item = Bytes> + Send>>),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Stream(s) => s
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RespBody::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            RespBody::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => hyper::body::SizeHint::with_exact(0),
            RespBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

type Resp = Response<RespBody>;

fn respond(code: u16, content_type: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(RespBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(code: u16, v: &Value) -> Resp {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_resp(e: &ApiError) -> Resp {
    json_resp(e.code, &e.to_status())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs; empty pairs (`?&limit=500`, a bare `?`) are skipped (notes §0.6).
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|m| m.contains("as=Table"))
}

/// The aggregated discovery version asked for, if it comes before plain JSON in Accept.
fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for m in accept.split(',') {
        let m = m.trim();
        if m.contains("as=APIGroupDiscoveryList") {
            if m.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if m.contains("v=v2") {
                return Some("v2");
            }
        } else if m.starts_with("application/json") || m.starts_with("*/*") {
            return None;
        }
    }
    None
}

fn field_manager(q: &Query, user_agent: &str) -> String {
    match q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => match user_agent.split('/').next() {
            Some(ua) if !ua.is_empty() => ua.to_string(),
            _ => "unknown".to_string(),
        },
    }
}

/// Everything a handler needs from the request.
struct Req {
    method: Method,
    segs: Vec<String>,
    query: Query,
    accept: String,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

pub async fn handle(store: Arc<Store>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let header = |k: hyper::header::HeaderName| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (accept, content_type, user_agent) = (
        header(hyper::header::ACCEPT),
        header(hyper::header::CONTENT_TYPE),
        header(hyper::header::USER_AGENT),
    );
    let method = req.method().clone();
    store.record_request(RequestRecord {
        method: method.to_string(),
        path_and_query: pq,
        content_type: content_type.clone(),
        accept: accept.clone(),
        user_agent: user_agent.clone(),
    });
    let query = Query(parse_query(req.uri().query()));
    let is_write = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let latency = store.write_latency();
    if is_write && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let r = Req {
        method,
        segs: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect(),
        query,
        accept,
        content_type,
        user_agent,
        body,
    };
    Ok(route(&store, r))
}

fn route(store: &Arc<Store>, r: Req) -> Resp {
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    let get = r.method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => json_resp(
            200,
            &json!({"major":"1","minor": store.server_minor(),
                    "gitVersion": format!("v1.{}.0-lb-test", store.server_minor()),
                    "gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean",
                    "buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.23","compiler":"gc",
                    "platform":"linux/amd64"}),
        ),
        ["openapi", "v2"] if get => respond(200, "application/octet-stream", Vec::new()),
        ["openapi", "v3", ..] => error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        ["api"] if get => discovery(store, &r, true),
        ["apis"] if get => discovery(store, &r, false),
        ["api", "v1"] if get => legacy_resources("", "v1"),
        ["apis", g, v] if get => legacy_resources(g, v),
        ["api", "v1", rest @ ..] => resource_route(store, &r, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource_route(store, &r, g, v, rest),
        ["healthz" | "livez" | "readyz"] => respond(200, "text/plain", b"ok".to_vec()),
        _ => error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn discovery(store: &Store, r: &Req, core: bool) -> Resp {
    if store.aggregated_discovery()
        && let Some(v) = wants_aggregated(&r.accept)
    {
        let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
        let body = resources::aggregated(core, v);
        return respond(200, &ct, serde_json::to_vec(&body).unwrap_or_default());
    }
    if core {
        json_resp(200, &resources::api_versions())
    } else {
        json_resp(200, &resources::api_group_list())
    }
}

fn legacy_resources(g: &str, v: &str) -> Resp {
    match resources::api_resource_list(g, v) {
        Some(l) => json_resp(200, &l),
        None => error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn resource_route(store: &Arc<Store>, r: &Req, g: &str, v: &str, rest: &[&str]) -> Resp {
    // [namespaces, ns, plural, name?, sub?] or [plural, name?, sub?]
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail),
        _ => (None, rest),
    };
    let Some((plural, rest)) = rest.split_first() else {
        return error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let Some(res) = Resource::lookup(g, v, plural) else {
        return error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    if ns.is_some() && !res.namespaced {
        return error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let ns_str = ns.unwrap_or("");
    match rest {
        [] => collection(store, r, res, ns),
        [name] => item(store, r, res, ns_str, name, false),
        [name, "status"] if res.has_status => item(store, r, res, ns_str, name, true),
        _ => error_resp(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn method_not_allowed() -> Resp {
    error_resp(&ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    ))
}

fn parse_body(r: &Req) -> Result<Value, ApiError> {
    let ct = r.content_type.to_ascii_lowercase();
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return proto::decode_deployment(&r.body).map_err(|e| {
            ApiError::new(415, "UnsupportedMediaType", format!("protobuf body: {e}"))
        });
    }
    if ct.contains("yaml") {
        return serde_yaml::from_slice::<Value>(&r.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice::<Value>(&r.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
}

fn strip_for_list(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

fn collection(store: &Arc<Store>, r: &Req, res: &'static Resource, ns: Option<&str>) -> Resp {
    let status = false;
    match r.method {
        Method::GET => {
            let sel =
                match Selector::parse(r.query.get("labelSelector"), r.query.get("fieldSelector")) {
                    Ok(s) => s,
                    Err(e) => return error_resp(&ApiError::bad_request(e)),
                };
            if r.query.flag("watch") {
                return watch(store, r, res, ns, sel);
            }
            let (items, rv) = store.list_objs(res, ns, &sel);
            if wants_table(&r.accept) {
                return json_resp(200, &table::table(res, &items, rv, SystemTime::now()));
            }
            json_resp(
                200,
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()},
                        "items": items.iter().map(strip_for_list).collect::<Vec<_>>()}),
            )
        }
        Method::POST => {
            if res.namespaced && ns.is_none() {
                return method_not_allowed();
            }
            let body = match parse_body(r) {
                Ok(b) => b,
                Err(e) => return error_resp(&e),
            };
            let manager = field_manager(&r.query, &r.user_agent);
            let t = Target {
                res,
                ns: ns.unwrap_or(""),
                manager: &manager,
                status,
            };
            if r.query.get("dryRun").is_some() {
                return json_resp(201, &body);
            }
            match store.create_obj(&t, body) {
                Ok(o) => object_resp(201, r, res, &o),
                Err(e) => error_resp(&e),
            }
        }
        _ => method_not_allowed(),
    }
}

fn object_resp(code: u16, r: &Req, res: &Resource, o: &Value) -> Resp {
    if wants_table(&r.accept) {
        let rv = o
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return json_resp(
            code,
            &table::table(res, std::slice::from_ref(o), rv, SystemTime::now()),
        );
    }
    json_resp(code, o)
}

fn item(
    store: &Arc<Store>,
    r: &Req,
    res: &'static Resource,
    ns: &str,
    name: &str,
    status: bool,
) -> Resp {
    let manager = field_manager(&r.query, &r.user_agent);
    let t = Target {
        res,
        ns,
        manager: &manager,
        status,
    };
    let result = match r.method {
        Method::GET => {
            return match store.get_obj(res, ns, name) {
                Some(o) => object_resp(200, r, res, &o),
                None => error_resp(&ApiError::not_found(res, name)),
            };
        }
        Method::PUT => parse_body(r).and_then(|b| store.replace_obj(&t, name, b).map(|o| (200, o))),
        Method::PATCH => {
            let ct = r.content_type.to_ascii_lowercase();
            let kind = if ct.starts_with("application/merge-patch+json") {
                PatchKind::Merge
            } else if ct.starts_with("application/strategic-merge-patch+json") {
                PatchKind::Strategic
            } else if ct.starts_with("application/apply-patch") {
                let manager = r.query.get("fieldManager").unwrap_or("");
                let t = Target {
                    manager,
                    ..t.clone()
                };
                let force = r.query.flag("force");
                let res = parse_body(r)
                    .and_then(|b| store.patch_obj(&t, name, PatchKind::Apply { force }, b));
                return match res {
                    Ok((code, o)) => object_resp(code, r, t.res, &o),
                    Err(e) => error_resp(&e),
                };
            } else if ct.starts_with("application/json-patch+json") {
                return json_patch(store, r, &t, name);
            } else {
                return error_resp(&ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct:?}"
                    ),
                ));
            };
            parse_body(r).and_then(|b| store.patch_obj(&t, name, kind, b))
        }
        Method::DELETE if !status => {
            return match store.delete_obj(res, ns, name) {
                Ok(o) if res.plural == "services" && res.group.is_empty() => json_resp(200, &o),
                Ok(o) => {
                    let mut details = json!({"name": name, "kind": res.plural,
                        "uid": o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)});
                    if !res.group.is_empty() {
                        details["group"] = json!(res.group);
                    }
                    json_resp(
                        200,
                        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":details}),
                    )
                }
                Err(e) => error_resp(&e),
            };
        }
        _ => return method_not_allowed(),
    };
    match result {
        Ok((code, o)) => object_resp(code, r, res, &o),
        Err(e) => error_resp(&e),
    }
}

/// RFC 6902 JSON patch (kube-rs `Patch::Json`): add/remove/replace/test on JSON pointers.
fn json_patch(store: &Arc<Store>, r: &Req, t: &Target<'_>, name: &str) -> Resp {
    let ops: Vec<Value> = match serde_json::from_slice(&r.body) {
        Ok(Value::Array(ops)) => ops,
        _ => {
            return error_resp(&ApiError::bad_request(
                "a JSON patch must be an array of operations",
            ));
        }
    };
    let Some(mut o) = store.get_obj(t.res, t.ns, name) else {
        return error_resp(&ApiError::not_found(t.res, name));
    };
    for op in &ops {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let (parent, last) = match path.rsplit_once('/') {
            Some((p, l)) => (p.to_string(), l.replace("~1", "/").replace("~0", "~")),
            None => {
                return error_resp(&ApiError::bad_request(format!(
                    "bad JSON patch path {path:?}"
                )));
            }
        };
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        if kind == "test" {
            if o.pointer(path) != Some(&value) {
                return error_resp(&ApiError::new(
                    422,
                    "Invalid",
                    format!("JSON patch test failed at {path}"),
                ));
            }
            continue;
        }
        let Some(target) = o.pointer_mut(&parent) else {
            return error_resp(&ApiError::new(
                422,
                "Invalid",
                format!("JSON patch: missing parent of {path}"),
            ));
        };
        match (kind, target) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last, value);
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last);
            }
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            (k, Value::Array(a)) => match last.parse::<usize>() {
                Ok(i) if k == "add" && i <= a.len() => a.insert(i, value),
                Ok(i) if k == "replace" && i < a.len() => a[i] = value,
                Ok(i) if k == "remove" && i < a.len() => {
                    a.remove(i);
                }
                _ => {
                    return error_resp(&ApiError::new(
                        422,
                        "Invalid",
                        format!("JSON patch: bad index in {path}"),
                    ));
                }
            },
            _ => {
                return error_resp(&ApiError::new(
                    422,
                    "Invalid",
                    format!("JSON patch: unsupported op {kind:?} at {path}"),
                ));
            }
        }
    }
    match store.replace_obj(t, name, o) {
        Ok(o) => object_resp(200, r, t.res, &o),
        Err(e) => error_resp(&e),
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

struct WatchState {
    store: Arc<Store>,
    filter: WatchFilter,
    cursor: u64,
    pending: VecDeque<Bytes>,
    done: bool,
    deadline: Option<Instant>,
    bookmarks: bool,
    next_bookmark: Instant,
    ticks: tokio::sync::watch::Receiver<u64>,
    bookmark_requests: tokio::sync::watch::Receiver<u64>,
    table: bool,
    first_table_event: bool,
}

impl WatchState {
    fn event(&mut self, typ: &str, obj: &Value) -> Bytes {
        if self.table {
            let mut t = table::table(
                self.filter.res,
                std::slice::from_ref(obj),
                0,
                SystemTime::now(),
            );
            if let Some(m) = t.as_object_mut() {
                m.remove("metadata");
                if !self.first_table_event {
                    m.insert("columnDefinitions".into(), json!([]));
                }
            }
            t["metadata"] = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
            self.first_table_event = false;
            return line(&json!({"type": typ, "object": t}));
        }
        line(&json!({"type": typ, "object": obj}))
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.cursor.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type":"BOOKMARK","object":{"kind": self.filter.res.kind,
            "apiVersion": self.filter.res.api_version(), "metadata": meta}}),
        )
    }

    fn gone(&mut self, e: &ApiError) {
        self.pending
            .push_back(line(&json!({"type":"ERROR","object": e.to_status()})));
        self.done = true;
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            self.ticks.borrow_and_update();
            match self.store.watch_next(&self.filter, &mut self.cursor) {
                Ok(events) => {
                    for (typ, obj) in events {
                        let b = self.event(typ, &obj);
                        self.pending.push_back(b);
                    }
                }
                Err(e) => self.gone(&e),
            }
            if !self.pending.is_empty() || self.done {
                continue;
            }
            let deadline = self.deadline;
            let bookmarks = self.bookmarks;
            let next_bookmark = self.next_bookmark;
            tokio::select! {
                changed = self.ticks.changed() => {
                    if changed.is_err() { self.done = true; }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    self.done = true;
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    self.next_bookmark = Instant::now() + self.store.bookmark_interval();
                    let b = self.bookmark(false);
                    self.pending.push_back(b);
                }
                _ = self.bookmark_requests.changed(), if bookmarks => {
                    let b = self.bookmark(false);
                    self.pending.push_back(b);
                }
            }
        }
    }
}

fn watch(
    store: &Arc<Store>,
    r: &Req,
    res: &'static Resource,
    ns: Option<&str>,
    selector: Selector,
) -> Resp {
    let filter = WatchFilter {
        res,
        ns: ns.map(str::to_string),
        selector,
    };
    let rv = match r.query.get("resourceVersion") {
        None | Some("") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error_resp(&ApiError::bad_request(format!(
                    "invalid resource version {s:?}"
                )));
            }
        },
    };
    let send_initial = r.query.flag("sendInitialEvents");
    let bookmarks = r.query.flag("allowWatchBookmarks");
    let timeout = r
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0);
    let mut st = WatchState {
        store: store.clone(),
        filter,
        cursor: 0,
        pending: VecDeque::new(),
        done: false,
        deadline: timeout.map(|s| Instant::now() + Duration::from_secs(s)),
        bookmarks,
        next_bookmark: Instant::now() + store.bookmark_interval(),
        ticks: store.subscribe(),
        bookmark_requests: store.subscribe_bookmarks(),
        table: wants_table(&r.accept),
        first_table_event: true,
    };
    st.bookmark_requests.borrow_and_update();
    let start_rv = if send_initial { None } else { rv };
    match store.watch_start(&st.filter, start_rv) {
        Ok((initial, cursor)) => {
            st.cursor = cursor;
            for o in initial {
                let b = st.event("ADDED", &o);
                st.pending.push_back(b);
            }
            if send_initial && bookmarks {
                let b = st.bookmark(true);
                st.pending.push_back(b);
            }
        }
        Err(e) => st.gone(&e),
    }
    let stream = futures::stream::unfold(st, |mut st| async move {
        let b = st.next().await?;
        Some((b, st))
    });
    let mut resp = Response::new(RespBody::Stream(Box::pin(stream)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
