//! The real kubectl (the version dispatcher at /usr/bin/kubectl, and some versioned binaries)
//! against the test API server. Each test has its own server, kubeconfig and cache dir.

use lb_testkit::apiserver::{ApiServer, Handle, Kubectl, Store, proto};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SVC_YAML: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

fn start() -> (Arc<Store>, Handle, Kubectl) {
    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let kubectl = Kubectl::new(server.addr()).unwrap();
    (store, server, kubectl)
}

fn lb_service(name: &str, ns: &str) -> Value {
    json!({"apiVersion":"v1","kind":"Service",
           "metadata":{"name":name,"namespace":ns,"labels":{"app":name}},
           "spec":{"type":"LoadBalancer","selector":{"app":name},"ports":[{"port":80}]}})
}

/// Lines of the row for `name` in kubectl's table output, split on whitespace.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.contains(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_then_reports_unchanged_then_patches_changed_port() {
    let (store, _server, k) = start();
    let f = k.file("svc.yaml", SVC_YAML);
    let out = k.run(&["apply", "-f", &f]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("service/web created"), "{out:?}");
    let created = store.get("services", "default", "web").unwrap();
    let node_port = created["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port));

    let out = k.run(&["apply", "-f", &f]).await;
    assert!(out.stdout.contains("service/web unchanged"), "{out:?}");
    assert_eq!(
        store.get("services", "default", "web").unwrap()["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let f = k.file("svc.yaml", &SVC_YAML.replace("8080", "8081"));
    let out = k.run(&["apply", "-f", &f]).await;
    assert!(out.stdout.contains("service/web configured"), "{out:?}");
    let patched = store.get("services", "default", "web").unwrap();
    assert_eq!(patched["spec"]["ports"][0]["targetPort"], 8081);
    assert_eq!(patched["spec"]["ports"][0]["nodePort"], node_port);
    assert_eq!(patched["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    let smp = store
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("apply of a change sends a PATCH");
    assert!(
        smp.content_type
            .starts_with("application/strategic-merge-patch+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_then_updates() {
    let (store, _server, k) = start();
    let f = k.file("ssa.yaml", &SVC_YAML.replace("name: web", "name: web-ssa"));
    let out = k.run(&["apply", "--server-side", "-f", &f]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("service/web-ssa serverside-applied"),
        "{out:?}"
    );
    let f = k.file(
        "ssa.yaml",
        &SVC_YAML
            .replace("name: web", "name: web-ssa")
            .replace("8080", "9090"),
    );
    let out = k.run(&["apply", "--server-side", "-f", &f]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let svc = store.get("services", "default", "web-ssa").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 9090);
    let managers: Vec<&str> = svc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["kubectl"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_twice_fails_with_already_exists() {
    let (_store, _server, k) = start();
    let f = k.file("svc.yaml", SVC_YAML);
    let out = k.run(&["create", "-f", &f]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = k.run(&["create", "-f", &f]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("Error from server (AlreadyExists)")
            && out.stderr.contains("services \"web\" already exists"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_svc_shows_pending_then_the_ip_after_a_status_patch() {
    let (store, _server, k) = start();
    let out = k.run(&["get", "svc"]).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stderr
            .contains("No resources found in default namespace."),
        "{out:?}"
    );

    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let out = k.run(&["get", "svc"]).await;
    let header = out.stdout.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let cells = row(&out.stdout, "web");
    assert_eq!(cells[1], "LoadBalancer");
    assert_eq!(cells[3], "<pending>");
    assert!(
        cells[4].starts_with("80:") && cells[4].ends_with("/TCP"),
        "{cells:?}"
    );

    let out = k
        .run(&[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"},{"ip":"2001:db8::10"}]}}}"#,
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("service/web patched"), "{out:?}");
    let out = k.run(&["get", "svc", "web"]).await;
    assert_eq!(row(&out.stdout, "web")[3], "192.0.2.10,2001:db8::10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_svc_all_namespaces_wide_shows_namespace_and_selector() {
    let (store, _server, k) = start();
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    store.create("services", lb_service("db", "prod")).unwrap();
    let out = k.run(&["get", "svc", "-A", "-o", "wide"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert_eq!(row(&out.stdout, "db")[0], "prod");
    assert_eq!(row(&out.stdout, "web")[0], "default");
    assert_eq!(row(&out.stdout, "db")[7], "app=db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_svc_json_is_a_service_list_with_defaults() {
    let (store, _server, k) = start();
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let out = k.run(&["get", "svc", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let svc = &list["items"][0];
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(svc["status"], json!({"loadBalancer":{}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_svc_removes_it_and_a_second_delete_is_not_found() {
    let (store, _server, k) = start();
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let out = k.run(&["delete", "svc", "web"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("service \"web\" deleted"), "{out:?}");
    assert!(store.get("services", "default", "web").is_none());
    let out = k.run(&["delete", "svc", "web"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Error from server (NotFound): services \"web\" not found"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_svc_watch_prints_the_change_and_exits_when_the_server_stops() {
    let (store, server, k) = start();
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let mut child = k
        .command(&["get", "svc", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl prints a line")
            .unwrap()
            .expect("kubectl still running")
    };
    assert!(next(&mut lines).await.starts_with("NAME"));
    assert!(next(&mut lines).await.contains("<pending>"));
    // The watch request is open once the server saw it; then change the object.
    // Change the object once kubectl's watch request has arrived.
    tokio::time::timeout(
        Duration::from_secs(30),
        store.wait_for_request(|r| r.is_watch()),
    )
    .await
    .expect("kubectl opens a watch");
    store
        .patch_status(
            "services",
            "default",
            "web",
            json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.77"}]}}}),
        )
        .unwrap();
    let changed = next(&mut lines).await;
    assert!(changed.contains("192.0.2.77"), "{changed}");
    server.stop().await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("kubectl exits when the stream ends")
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_deploy_with_protobuf_then_expose_as_load_balancer() {
    let (store, _server, k) = start();
    let out = k
        .run(&[
            "create",
            "deploy",
            "nginx-metallb",
            "--image",
            "nginx:stable-alpine",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("deployment.apps/nginx-metallb created"),
        "{out:?}"
    );
    let post = store
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.content_type, "application/vnd.kubernetes.protobuf");
    let d = store
        .get("deployments", "default", "nginx-metallb")
        .unwrap();
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"app":"nginx-metallb"})
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:stable-alpine"
    );
    assert_eq!(d["metadata"]["labels"], json!({"app":"nginx-metallb"}));

    let out = k
        .run(&[
            "expose",
            "deploy",
            "nginx-metallb",
            "--port",
            "80",
            "--type=LoadBalancer",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let printed: Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(printed["spec"]["selector"], json!({"app":"nginx-metallb"}));
    assert_eq!(printed["spec"]["type"], "LoadBalancer");
    assert!(store.get("services", "default", "nginx-metallb").is_none());

    let out = k
        .run(&[
            "expose",
            "deploy",
            "nginx-metallb",
            "--port",
            "80",
            "--type=LoadBalancer",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("service/nginx-metallb exposed"),
        "{out:?}"
    );
    let svc = store.get("services", "default", "nginx-metallb").unwrap();
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert!(svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap() >= 30000);
    let out = k.run(&["get", "deploy", "-o", "wide"]).await;
    let cells = row(&out.stdout, "nginx-metallb");
    assert_eq!(
        &cells[1..],
        [
            "0/1",
            "0",
            "0",
            cells[4],
            "nginx",
            "nginx:stable-alpine",
            "app=nginx-metallb"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_31_sends_json_for_create_deploy() {
    let (store, _server, k) = start();
    store.set_server_minor("31");
    let out = k
        .run(&["create", "deploy", "web", "--image", "nginx:stable-alpine"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let post = store
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert!(
        post.content_type.starts_with("application/json"),
        "{post:?}"
    );
    assert!(post.user_agent.contains("v1.31"), "{post:?}");
    assert!(store.get("deployments", "default", "web").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_gets_v2beta1_discovery_and_legacy_discovery_works() {
    let (store, _server, k) = start();
    store.set_server_minor("27");
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let out = k.run(&["get", "svc"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(row(&out.stdout, "web")[3], "<pending>");

    let (store, _server, k) = start();
    store.set_aggregated_discovery(false);
    store
        .create("services", lb_service("web", "default"))
        .unwrap();
    let out = k.run(&["get", "svc"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(row(&out.stdout, "web")[3], "<pending>");
    assert!(
        store.request_count("/apis/apps/v1") >= 1,
        "legacy discovery fetches each group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_shows_an_event_posted_by_the_kube_rs_recorder() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (store, server, k) = start();
    store
        .create("services", lb_service("probe-svc", "default"))
        .unwrap();
    let client = lb_testkit::apiserver::kube_client(server.addr());
    let reporter = Reporter {
        controller: "lbd".into(),
        instance: Some("node-1".into()),
    };
    let recorder = Recorder::new(client, reporter);
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("probe-svc".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("Assigned IP [\"192.0.2.51\"]".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let out = k.run(&["get", "events", "-o", "wide"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("IPAllocated"))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(line.contains("service/probe-svc"), "{line}");
    assert!(line.contains("lbd, node-1"), "{line}");
    assert!(line.contains("Assigned IP"), "{line}");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert!(cells.contains(&"2"), "count 2 from the series: {line}");
}

#[test]
fn protobuf_body_shaped_like_kubectls_decodes_to_a_deployment() {
    let body = proto::encode::kubectl_create_deployment("nginx-metallb", "nginx:stable-alpine");
    let d = proto::decode_deployment(&body).unwrap();
    assert_eq!(d["metadata"]["name"], "nginx-metallb");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"],
        "nginx"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_and_endpointslices_print_their_columns() {
    let (store, _server, k) = start();
    store
        .create("nodes", json!({"metadata":{"name":"node-1","labels":{"node-role.kubernetes.io/control-plane":""}},
            "status":{"conditions":[{"type":"Ready","status":"True"}],
                      "addresses":[{"type":"InternalIP","address":"10.10.100.3"}],
                      "nodeInfo":{"kubeletVersion":"v1.32.0"}}}))
        .unwrap();
    store
        .create(
            "endpointslices",
            json!({"metadata":{"name":"web-abc","namespace":"default"},
            "addressType":"IPv4","ports":[{"port":8080}],
            "endpoints":[{"addresses":["10.244.1.5"]},{"addresses":["10.244.2.5"]}]}),
        )
        .unwrap();
    let out = k.run(&["get", "nodes", "-o", "wide"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let cells = row(&out.stdout, "node-1");
    assert_eq!(&cells[1..3], ["Ready", "control-plane"]);
    assert_eq!(cells[4..6], ["v1.32.0", "10.10.100.3"]);
    let out = k.run(&["get", "endpointslices"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        &row(&out.stdout, "web-abc")[1..4],
        ["IPv4", "8080", "10.244.1.5,10.244.2.5"]
    );
}
