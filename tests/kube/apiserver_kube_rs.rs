//! kube-rs 5 (watcher, Api, Recorder) against the test API server, unchanged, over plain HTTP.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use lb_testkit::apiserver::{ApiServer, Handle, Store, kube_client};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn start() -> (Arc<Store>, Handle, kube::Client) {
    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let client = kube_client(server.addr());
    (store, server, client)
}

fn lb_service(name: &str) -> Value {
    json!({"apiVersion":"v1","kind":"Service","metadata":{"name":name,"namespace":"default"},
           "spec":{"type":"LoadBalancer","selector":{"app":name},"ports":[{"port":80}]}})
}

fn endpoint_slice(name: &str, ip: &str) -> Value {
    json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
           "metadata":{"name":name,"namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
           "addressType":"IPv4","ports":[{"port":80,"protocol":"TCP"}],
           "endpoints":[{"addresses":[ip],"conditions":{"ready":true},"nodeName":"node-1"}]})
}

fn node(name: &str) -> Value {
    json!({"apiVersion":"v1","kind":"Node","metadata":{"name":name,"labels":{"kubernetes.io/hostname":name}},
           "status":{"addresses":[{"type":"InternalIP","address":"10.10.100.3"}],
                     "conditions":[{"type":"Ready","status":"True"}]}})
}

type Events<K> = tokio::sync::mpsc::UnboundedReceiver<Event<K>>;

/// Runs a kube-rs watcher (default config + default backoff) in its own task, forwarding its
/// events; errors are retried by the watcher itself and not forwarded.
fn spawn_watcher<K>(api: Api<K>) -> Events<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    tokio::spawn(async move {
        while let Some(e) = w.next().await {
            if let Ok(e) = e
                && tx.send(e).is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn next_event<K>(rx: &mut Events<K>) -> Event<K> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("watcher event within the timeout")
        .expect("watcher task running")
}

/// Skips the initial list (Init … InitDone), returning the names it listed.
async fn init_names<K: kube::Resource>(rx: &mut Events<K>) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match next_event(rx).await {
            Event::Init => names.clear(),
            Event::InitApply(o) => names.push(o.meta().name.clone().unwrap_or_default()),
            Event::InitDone => return names,
            Event::Apply(_) | Event::Delete(_) => panic!("change before InitDone"),
        }
    }
}

async fn watch_opened(store: &Store) {
    tokio::time::timeout(WAIT, store.wait_for_request(|r| r.is_watch()))
        .await
        .expect("the client opens a watch");
}

fn lists_of(store: &Store, path: &str) -> usize {
    store
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path() == path && !r.is_watch())
        .count()
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_for_services_endpointslices_and_nodes() {
    let (store, _server, client) = start();
    store.create("services", lb_service("existing")).unwrap();
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut sw = spawn_watcher(services);
    let mut ew = spawn_watcher(slices);
    let mut nw = spawn_watcher(nodes);
    assert_eq!(init_names(&mut sw).await, ["existing"]);
    assert!(init_names(&mut ew).await.is_empty());
    assert!(init_names(&mut nw).await.is_empty());

    store.create("services", lb_service("web")).unwrap();
    let Event::Apply(s) = next_event(&mut sw).await else {
        panic!("ADDED → Apply")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("web"));
    assert!(s.spec.unwrap().cluster_ip.is_some());
    store
        .patch_status(
            "services",
            "default",
            "web",
            json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.5"}]}}}),
        )
        .unwrap();
    let Event::Apply(s) = next_event(&mut sw).await else {
        panic!("MODIFIED → Apply")
    };
    let ingress = s.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.5"));
    store.delete("services", "default", "web").unwrap();
    let Event::Delete(s) = next_event(&mut sw).await else {
        panic!("DELETED → Delete")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("web"));

    store
        .create("endpointslices", endpoint_slice("web-abc", "10.244.1.5"))
        .unwrap();
    let Event::Apply(e) = next_event(&mut ew).await else {
        panic!("slice Apply")
    };
    assert_eq!(e.endpoints[0].addresses, ["10.244.1.5"]);
    store
        .delete("endpointslices", "default", "web-abc")
        .unwrap();
    assert!(matches!(next_event(&mut ew).await, Event::Delete(_)));

    store.create("nodes", node("node-1")).unwrap();
    let Event::Apply(n) = next_event(&mut nw).await else {
        panic!("node Apply")
    };
    let taints = n.spec.unwrap().taints.unwrap();
    assert_eq!(taints[0].key, "node.kubernetes.io/not-ready");
    store
        .patch(
            "nodes",
            "",
            "node-1",
            json!({"metadata":{"labels":{"rack":"a"}}}),
        )
        .unwrap();
    let Event::Apply(n) = next_event(&mut nw).await else {
        panic!("node MODIFIED")
    };
    assert_eq!(n.metadata.labels.unwrap()["rack"], "a");
    store.delete("nodes", "", "node-1").unwrap();
    assert!(matches!(next_event(&mut nw).await, Event::Delete(_)));
}

#[tokio::test]
async fn watcher_resumes_after_server_restart_without_relisting() {
    let (store, server, client) = start();
    let addr = server.addr();
    store.create("services", lb_service("a")).unwrap();
    let api: Api<Service> = Api::all(client);
    let mut w = spawn_watcher(api);
    assert_eq!(init_names(&mut w).await, ["a"]);
    watch_opened(&store).await;

    server.stop().await;
    store.create("services", lb_service("b")).unwrap();
    let server = ApiServer::start(addr, store.clone()).unwrap();
    let Event::Apply(s) = next_event(&mut w).await else {
        panic!("change made during the outage")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("b"));
    assert_eq!(
        lists_of(&store, "/api/v1/services"),
        1,
        "no relist: {:?}",
        store.request_log()
    );
    drop(server);
}

#[tokio::test]
async fn watcher_relists_after_compaction_makes_its_version_too_old() {
    let (store, server, client) = start();
    let addr = server.addr();
    store.create("services", lb_service("a")).unwrap();
    let api: Api<Service> = Api::all(client);
    let mut w = spawn_watcher(api);
    assert_eq!(init_names(&mut w).await, ["a"]);
    watch_opened(&store).await;

    server.stop().await;
    store.create("services", lb_service("b")).unwrap();
    store.compact();
    let _server = ApiServer::start(addr, store.clone()).unwrap();
    assert_eq!(init_names(&mut w).await, ["a", "b"]);
    assert_eq!(lists_of(&store, "/api/v1/services"), 2);
}

#[tokio::test]
async fn raw_watch_from_a_compacted_version_gets_an_error_event_410() {
    let (store, _server, client) = start();
    store.create("services", lb_service("a")).unwrap();
    store.create("services", lb_service("b")).unwrap();
    store.compact();
    let api: Api<Service> = Api::namespaced(client, "default");
    let mut s = api
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Error(e) = ev else {
        panic!("expected ERROR, got {ev:?}")
    };
    assert_eq!(e.code, 410);
    assert_eq!(e.reason, "Expired");
    assert!(
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .is_none(),
        "stream closes"
    );
}

#[tokio::test]
async fn raw_watch_replays_history_in_order_and_deleted_carries_a_new_version() {
    let (store, _server, client) = start();
    let created = store.create("services", lb_service("a")).unwrap();
    let rv0: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    store
        .patch(
            "services",
            "default",
            "a",
            json!({"metadata":{"labels":{"x":"1"}}}),
        )
        .unwrap();
    store.delete("services", "default", "a").unwrap();
    let api: Api<Service> = Api::namespaced(client, "default");
    let s = api
        .watch(&WatchParams::default(), &rv0.to_string())
        .await
        .unwrap();
    let evs: Vec<_> = s.take(2).collect().await;
    let rv = |s: &Service| {
        s.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    match (&evs[0], &evs[1]) {
        (Ok(WatchEvent::Modified(m)), Ok(WatchEvent::Deleted(d))) => {
            assert_eq!(rv(m), rv0 + 1);
            assert_eq!(rv(d), rv0 + 2, "DELETED carries the delete's own RV");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_with_label_selector_sees_objects_enter_and_leave_the_selection() {
    let (store, _server, client) = start();
    let api: Api<Service> = Api::namespaced(client, "default");
    let mut s = api
        .watch(&WatchParams::default().labels("tier=fe"), "0")
        .await
        .unwrap()
        .boxed();
    watch_opened(&store).await;
    store.create("services", lb_service("a")).unwrap();
    store
        .patch(
            "services",
            "default",
            "a",
            json!({"metadata":{"labels":{"tier":"fe"}}}),
        )
        .unwrap();
    store
        .patch(
            "services",
            "default",
            "a",
            json!({"metadata":{"labels":{"tier":"be"}}}),
        )
        .unwrap();
    let mut next = async || {
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, WatchEvent::Added(_)));
    assert!(matches!(next().await, WatchEvent::Deleted(_)));
}

#[tokio::test]
async fn bookmarks_carry_kind_and_api_version_and_timeout_ends_the_stream() {
    let (store, _server, client) = start();
    let api: Api<Node> = Api::all(client);
    let mut wp = WatchParams::default().timeout(2);
    wp.bookmarks = true;
    let mut s = api.watch(&wp, "0").await.unwrap().boxed();
    watch_opened(&store).await;
    store.bookmark_now();
    let ev = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Bookmark(b) = ev else {
        panic!("expected BOOKMARK, got {ev:?}")
    };
    assert_eq!(b.types.kind, "Node");
    assert_eq!(b.types.api_version, "v1");
    assert_eq!(b.metadata.resource_version, store.revision().to_string());
    assert!(
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .is_none(),
        "timeoutSeconds ends it"
    );
}

#[tokio::test]
async fn patch_status_with_merge_then_server_side_apply_needs_force() {
    let (store, _server, client) = start();
    store.create("services", lb_service("web")).unwrap();
    let api: Api<Service> = Api::namespaced(client, "default");
    let merged = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.50"}]}}})),
        )
        .await
        .unwrap();
    let rv1 = merged.metadata.resource_version.clone().unwrap();
    assert_eq!(
        merged.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );

    // The same merge again is a no-op: same RV.
    let again = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.50"}]}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version.unwrap(), rv1);

    let apply = json!({"apiVersion":"v1","kind":"Service",
        "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.51"}]}}});
    let err = api
        .patch_status("web", &PatchParams::apply("lbd"), &Patch::Apply(&apply))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status
            .message
            .contains("conflict with \"unknown\" with subresource \"status\""),
        "{}",
        status.message
    );

    let applied = api
        .patch_status(
            "web",
            &PatchParams::apply("lbd").force(),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    let ingress = applied
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.51"));
    // A spec change through /status is ignored.
    let sneaky = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec":{"type":"ClusterIP"}})),
        )
        .await
        .unwrap();
    assert_eq!(sneaky.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
    // And a main-resource patch keeps the status.
    let main = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status":{"loadBalancer":{}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()
            .len(),
        1
    );
    let svc = store.get("services", "default", "web").unwrap();
    let managers: Vec<(&str, &str)> = svc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(managers.contains(&("lbd", "Apply")), "{managers:?}");
}

#[tokio::test]
async fn recorder_publish_twice_creates_then_patches_with_a_series() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
    let (store, _server, client) = start();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "lbd".into(),
            instance: Some("node-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("web".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let ev = KEvent {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("Assigned IP".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events = store.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(events[0]["regarding"]["name"], "web");
    let methods: Vec<String> = store
        .requests()
        .iter()
        .filter(|r| {
            r.path()
                .starts_with("/apis/events.k8s.io/v1/namespaces/default/events")
        })
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["POST", "PATCH"]);
    let core = store.get(
        "events",
        "default",
        events[0]["metadata"]["name"].as_str().unwrap(),
    );
    assert!(core.is_some());
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(kube_client(_server.addr()), "default");
    let list = api.list(&Default::default()).await.unwrap();
    assert_eq!(list.items[0].message.as_deref(), Some("Assigned IP"));
    assert_eq!(list.items[0].reporting_component.as_deref(), Some("lbd"));
}

#[tokio::test]
async fn create_conflicts_and_delete_answers_follow_the_real_server() {
    let (_store, _server, client) = start();
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(lb_service("web")).unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap();
    let err = api.create(&PostParams::default(), &svc).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    let mut stale = api.get("web").await.unwrap();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata":{"labels":{"a":"b"}}})),
    )
    .await
    .unwrap();
    stale.metadata.labels = Some([("c".to_string(), "d".to_string())].into());
    let err = api
        .replace("web", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left(), "Service DELETE returns the object");
    let err = api.get("web").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );

    let nodes: Api<Node> = Api::all(client);
    let n: Node = serde_json::from_value(node("node-1")).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let deleted = nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "Node DELETE returns a Status");
}

#[tokio::test]
async fn persisted_store_reopens_with_objects_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.json");
    let store = Store::open(&path).unwrap();
    let created = store.create("services", lb_service("web")).unwrap();
    let rev = store.revision();
    drop(store);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.revision(), rev);
    let svc = reopened.get("services", "default", "web").unwrap();
    assert_eq!(svc["metadata"]["uid"], created["metadata"]["uid"]);
    let next = reopened.create("services", lb_service("db")).unwrap();
    assert_eq!(next["metadata"]["resourceVersion"], (rev + 1).to_string());
    assert_ne!(next["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let (store, _server, client) = start();
    store.create("services", lb_service("a")).unwrap();
    let api: Api<Service> = Api::all(client);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = watcher::watcher(api, watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    tokio::spawn(async move {
        while let Some(e) = w.next().await {
            if let Ok(e) = e
                && tx.send(e).is_err()
            {
                return;
            }
        }
    });
    assert_eq!(init_names(&mut rx).await, ["a"]);
    assert_eq!(
        lists_of(&store, "/api/v1/services"),
        0,
        "no LIST with streaming lists"
    );
    store.create("services", lb_service("b")).unwrap();
    let Event::Apply(s) = next_event(&mut rx).await else {
        panic!("ADDED after the initial events")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("b"));
}

#[tokio::test]
async fn field_selector_filters_lists_and_watch_from_zero_starts_with_synthetic_added() {
    use kube::api::ListParams;
    let (store, _server, client) = start();
    store.create("services", lb_service("web")).unwrap();
    store.create("services", lb_service("db")).unwrap();
    let api: Api<Service> = Api::all(client);
    let list = api
        .list(&ListParams::default().fields("metadata.name=web,metadata.namespace=default"))
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    assert_eq!(
        list.metadata.resource_version,
        Some(store.revision().to_string())
    );

    let mut s = api
        .watch(&WatchParams::default().fields("metadata.name=db"), "0")
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Added(svc) = ev else {
        panic!("synthetic ADDED, got {ev:?}")
    };
    assert_eq!(svc.metadata.name.as_deref(), Some("db"));
    store.delete("services", "default", "web").unwrap();
    store.delete("services", "default", "db").unwrap();
    let ev = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Deleted(svc) = ev else {
        panic!("only db's DELETED, got {ev:?}")
    };
    assert_eq!(svc.metadata.name.as_deref(), Some("db"));
}

#[test]
fn status_patch_keeps_unknown_fields_and_a_no_op_keeps_the_revision() {
    let store = Store::new();
    store.create("services", lb_service("web")).unwrap();
    let ingress = json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.9","ipMode":"VIP","x-future":1}]}}});
    let a = store
        .patch_status("services", "default", "web", ingress.clone())
        .unwrap();
    assert_eq!(a["status"]["loadBalancer"]["ingress"][0]["x-future"], 1);
    let rev = store.revision();
    let b = store
        .patch_status("services", "default", "web", ingress)
        .unwrap();
    assert_eq!(store.revision(), rev);
    assert_eq!(
        a["metadata"]["resourceVersion"],
        b["metadata"]["resourceVersion"]
    );
    let err = store
        .create("services", lb_service("Bad_Name"))
        .unwrap_err();
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    let err = store
        .patch("services", "default", "missing", json!({}))
        .unwrap_err();
    assert_eq!((err.code, err.reason), (404, "NotFound"));
}
