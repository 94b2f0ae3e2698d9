//! lbd as a process against the test API server, driven by the real kubectl: Services get
//! IPs that `kubectl get svc` shows, annotations and requests are honoured, sharing works as
//! in the MetalLB lab guide, failures become Events, and neither an API outage nor an lbd
//! restart changes any IP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_testkit::apiserver::{ApiServer, Handle, Kubectl, Store, write_kubeconfig};
use lb_testkit::guide::{COREDNS_UDP, coredns_tcp};
use lb_testkit::lbd::Lbd;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Env {
    store: Arc<Store>,
    server: Option<Handle>,
    kubectl: Kubectl,
    lbd: Lbd,
}

/// The lab guide's two BGP pools (its multiple-pools ConfigMap), plus a small IPv4 pool
/// that is not auto-assigned.
fn config(kubeconfig: &std::path::Path) -> String {
    format!(
        r#"
[node]
name = "worker-1"

[kubernetes]
kubeconfig = "{}"

[[pool]]
name = "ip-pool-1"
protocol = "bgp"
addresses = ["172.19.100.0/24"]

[[pool]]
name = "ip-pool-2"
protocol = "bgp"
addresses = ["172.19.101.0/24"]

[[pool]]
name = "tiny"
protocol = "layer2"
addresses = ["10.10.100.200/32"]
auto_assign = false
"#,
        kubeconfig.display()
    )
}

async fn start() -> Env {
    start_with(config).await
}

/// As [`start`], lbd running on `config(kubeconfig path)`.
async fn start_with(config: fn(&std::path::Path) -> String) -> Env {
    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let kubectl = Kubectl::new(server.addr()).unwrap();
    let kdir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(kdir.path(), server.addr()).unwrap();
    // lbd's own copy of the kubeconfig lives in its temp dir.
    let lbd_dir = tempfile::tempdir().unwrap();
    let lbd_kubeconfig = lbd_dir.path().join("kubeconfig");
    std::fs::copy(&kubeconfig, &lbd_kubeconfig).unwrap();
    let lbd = Lbd::start(&config(&lbd_kubeconfig));
    // Keep the kubeconfig's directory alive as long as lbd.
    std::mem::forget(lbd_dir);
    Env {
        store,
        server: Some(server),
        kubectl,
        lbd,
    }
}

impl Env {
    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr()
    }

    async fn apply(&self, name: &str, yaml: &str) {
        let file = self.kubectl.file(&format!("{name}.yaml"), yaml);
        let out = self.kubectl.run(&["apply", "-f", &file]).await;
        assert_eq!(out.code, 0, "kubectl apply failed: {}", out.stderr);
    }

    fn ingress(&self, ns: &str, name: &str) -> Vec<String> {
        self.store
            .get("services", ns, name)
            .and_then(|s| s["status"]["loadBalancer"]["ingress"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the Service has ingress IPs in its status and returns them.
    async fn wait_ip(&mut self, ns: &str, name: &str) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ips = self.ingress(ns, name);
            if !ips.is_empty() {
                return ips;
            }
            assert!(self.lbd.alive(), "lbd exited:\n{}", self.lbd.log());
            assert!(
                Instant::now() < deadline,
                "{ns}/{name} got no IP within {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn events_for(&self, name: &str) -> Vec<Value> {
        self.store
            .events()
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .collect()
    }

    /// Waits until an Event with `reason` exists on the Service and returns its note.
    async fn wait_event(&mut self, name: &str, reason: &str) -> String {
        self.wait_event_saying(name, reason, "").await
    }

    /// Waits until an Event with `reason` whose note contains `text` exists on the Service
    /// and returns its note.
    async fn wait_event_saying(&mut self, name: &str, reason: &str, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(e) = self.events_for(name).into_iter().find(|e| {
                e["reason"] == reason && e["note"].as_str().is_some_and(|n| n.contains(text))
            }) {
                return e["note"].as_str().unwrap_or_default().to_owned();
            }
            assert!(self.lbd.alive(), "lbd exited:\n{}", self.lbd.log());
            assert!(
                Instant::now() < deadline,
                "no {reason} event saying {text:?} on {name}; events: {:?}",
                self.events_for(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn lb_svc(name: &str, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
{extra_meta}spec:
  type: LoadBalancer
  selector:
    app: {name}
  ports:
  - port: 80
{extra_spec}"
    )
}

#[tokio::test]
async fn service_created_with_kubectl_gets_an_ip_that_get_svc_shows() {
    let mut env = start().await;
    env.apply("web", &lb_svc("web", "", "")).await;
    let ips = env.wait_ip("default", "web").await;
    assert_eq!(
        ips,
        ["172.19.100.0"],
        "lowest address of the first auto pool"
    );
    let out = env.kubectl.run(&["get", "svc", "web"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[3], "172.19.100.0", "EXTERNAL-IP column: {}", out.stdout);
    let note = env.wait_event("web", "IPAllocated").await;
    assert!(note.contains("172.19.100.0"), "{note}");
    let svc = env.store.get("services", "default", "web").unwrap();
    assert_eq!(
        svc["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"],
        "ip-pool-1"
    );
}

impl Env {
    /// Waits until lbd's log contains `needle`.
    async fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.lbd.log().contains(needle) {
            assert!(self.lbd.alive(), "lbd exited:\n{}", self.lbd.log());
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in lbd's log:\n{}",
                self.lbd.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_reload_that_would_take_a_services_ip_is_refused_and_a_compatible_one_applies() {
    let mut env = start().await;
    env.apply("web", &lb_svc("web", "", "")).await;
    assert_eq!(env.wait_ip("default", "web").await, ["172.19.100.0"]);
    // The guide's next ConfigMap replaces the pool the Service's IP came from.
    let good = std::fs::read_to_string(env.lbd.config_path()).unwrap();
    let orphaning = good.replacen("172.19.100.0/24", "172.19.102.0/24", 1);
    assert_ne!(orphaning, good);
    std::fs::write(env.lbd.config_path(), &orphaning).unwrap();
    env.lbd.signal("HUP");
    env.wait_log("reload refused").await;
    let log = env.lbd.log();
    assert!(
        log.contains("would take the IP of default/web (172.19.100.0)"),
        "{log}"
    );
    assert_eq!(env.ingress("default", "web"), ["172.19.100.0"]);
    // A compatible change (one more pool) applies, and the Service keeps its IP.
    std::fs::write(
        env.lbd.config_path(),
        format!("{good}\n[[pool]]\nname = \"more\"\nprotocol = \"bgp\"\naddresses = [\"172.19.103.0/24\"]\n"),
    )
    .unwrap();
    env.lbd.signal("HUP");
    env.wait_log("configuration reloaded: pools/services applied")
        .await;
    assert_eq!(env.ingress("default", "web"), ["172.19.100.0"]);
}

#[tokio::test]
async fn address_pool_annotation_and_load_balancer_ip_are_honoured() {
    let mut env = start().await;
    env.apply(
        "pool2",
        &lb_svc(
            "pool2",
            "  annotations:\n    metallb.universe.tf/address-pool: ip-pool-2\n",
            "",
        ),
    )
    .await;
    env.apply(
        "fixed",
        &lb_svc("fixed", "", "  loadBalancerIP: 172.19.100.77\n"),
    )
    .await;
    env.apply(
        "tiny",
        &lb_svc(
            "tiny",
            "  annotations:\n    metallb.io/address-pool: tiny\n",
            "",
        ),
    )
    .await;
    assert_eq!(env.wait_ip("default", "pool2").await, ["172.19.101.0"]);
    assert_eq!(env.wait_ip("default", "fixed").await, ["172.19.100.77"]);
    assert_eq!(env.wait_ip("default", "tiny").await, ["10.10.100.200"]);
}

#[tokio::test]
async fn lab_guide_coredns_tcp_and_udp_services_share_172_19_100_0() {
    let mut env = start().await;
    // The lab guide's IP-sharing manifests (the TCP one re-indented: as printed it is not YAML).
    env.apply("coredns-tcp", &coredns_tcp()).await;
    env.apply("coredns-udp", COREDNS_UDP).await;
    assert_eq!(
        env.wait_ip("kube-system", "coredns-tcp-svc").await,
        ["172.19.100.0"]
    );
    assert_eq!(
        env.wait_ip("kube-system", "coredns-udp-svc").await,
        ["172.19.100.0"]
    );
    let out = env.kubectl.run(&["get", "svc", "-A"]).await;
    assert_eq!(
        out.stdout.matches("172.19.100.0").count(),
        2,
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn impossible_request_gives_allocation_failed_and_a_freed_ip_goes_to_the_next() {
    let mut env = start().await;
    // Outside every pool: an Event, no IP, no crash.
    env.apply(
        "outside",
        &lb_svc("outside", "", "  loadBalancerIP: 192.0.2.1\n"),
    )
    .await;
    let note = env.wait_event("outside", "AllocationFailed").await;
    assert!(note.contains("192.0.2.1"), "{note}");
    assert!(env.ingress("default", "outside").is_empty());

    // The one-address pool: first come, first served; deleting frees it for the next.
    let tiny = "  annotations:\n    metallb.io/address-pool: tiny\n";
    env.apply("first", &lb_svc("first", tiny, "")).await;
    assert_eq!(env.wait_ip("default", "first").await, ["10.10.100.200"]);
    env.apply("second", &lb_svc("second", tiny, "")).await;
    let note = env.wait_event("second", "AllocationFailed").await;
    assert!(note.contains("no available IPs"), "{note}");
    let out = env.kubectl.run(&["delete", "svc", "first"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.wait_ip("default", "second").await, ["10.10.100.200"]);
}

/// One layer-2 pool with two IPv4 addresses and a single IPv6 one.
fn dual_stack_config(kubeconfig: &std::path::Path) -> String {
    format!(
        r#"
[node]
name = "worker-1"

[kubernetes]
kubeconfig = "{}"

[[pool]]
name = "ip-space-1"
protocol = "bgp"
addresses = ["10.10.100.200-10.10.100.201", "fd00:10::5/128"]
"#,
        kubeconfig.display()
    )
}

impl Env {
    /// The EXTERNAL-IP column of `kubectl get svc NAME`.
    async fn external_ip(&self, name: &str) -> String {
        let out = self.kubectl.run(&["get", "svc", name]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {}", out.stdout));
        row.split_whitespace().nth(3).unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn prefer_dual_stack_gets_the_ipv6_freed_by_a_deletion_within_a_second() {
    let mut env = start_with(dual_stack_config).await;
    // The only IPv6 address goes to an IPv6-only Service.
    let v6_only = "  ipFamilyPolicy: SingleStack\n  ipFamilies:\n  - IPv6\n";
    env.apply("holder", &lb_svc("holder", "", v6_only)).await;
    assert_eq!(env.wait_ip("default", "holder").await, ["fd00:10::5"]);

    // A PreferDualStack Service then gets IPv4 only, and its Events say why.
    let prefer = "  ipFamilyPolicy: PreferDualStack\n  ipFamilies:\n  - IPv4\n  - IPv6\n";
    env.apply("web", &lb_svc("web", "", prefer)).await;
    assert_eq!(env.wait_ip("default", "web").await, ["10.10.100.200"]);
    let note = env.wait_event("web", "AdditionalAssignFailed").await;
    assert_eq!(
        note,
        "cannot assign additional IP in PreferDualStack: no available IPs in pool ip-space-1 for ipv6 IPFamily"
    );
    assert_eq!(env.external_ip("web").await, "10.10.100.200");

    // The IPv6 freed: the waiting Service gets it within a second.
    let out = env.kubectl.run(&["delete", "svc", "holder"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deleted = Instant::now();
    let both = ["10.10.100.200", "fd00:10::5"];
    loop {
        if env.ingress("default", "web") == both {
            break;
        }
        assert!(env.lbd.alive(), "lbd exited:\n{}", env.lbd.log());
        assert!(
            deleted.elapsed() < TIMEOUT,
            "web never got its IPv6: {:?}\n{}",
            env.ingress("default", "web"),
            env.lbd.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the freed IPv6 reached web's status after {took:?}"
    );
    let note = env
        .wait_event_saying("web", "IPAllocated", "additional")
        .await;
    assert_eq!(note, r#"Assigned additional IP "fd00:10::5""#);
    assert_eq!(env.external_ip("web").await, "10.10.100.200,fd00:10::5");
    let out = env.kubectl.run(&["get", "events"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.contains("service/web")
            && l.contains("IPAllocated")
            && l.contains(r#"Assigned additional IP "fd00:10::5""#)),
        "kubectl get events:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_repeated_event_raises_its_count_and_another_message_is_another_event() {
    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let writer = lb::kube::status::StatusWriter::new(
        lb_testkit::apiserver::kube_client(server.addr()),
        "worker-1",
    );
    let web = lb::model::ServiceKey::new("default", "web");
    let first = r#"Assigned IP ["10.10.100.200"]"#;
    let second = r#"Assigned additional IP "fd00:10::5""#;
    for message in [first, first, second] {
        writer
            .event(&lb::writes::EventItem {
                service: web.clone(),
                uid: Some("0b7e8a52-0000-4000-8000-000000000001".into()),
                warning: false,
                reason: "IPAllocated",
                message: message.into(),
            })
            .await
            .unwrap();
    }
    let mut events: Vec<(String, i64)> = store
        .events()
        .iter()
        .map(|e| {
            let count = e["series"]["count"].as_i64().unwrap_or(1);
            (e["note"].as_str().unwrap_or_default().to_owned(), count)
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [(first.to_owned(), 2), (second.to_owned(), 1)],
        "{:?}",
        store.events()
    );
    let e = &store.events()[0];
    assert_eq!(e["reportingController"], "lbd");
    assert_eq!(e["reportingInstance"], "worker-1");
    assert_eq!(e["regarding"]["name"], "web");
    // `kubectl describe` selects a Service's Events by its uid.
    assert_eq!(
        e["regarding"]["uid"],
        "0b7e8a52-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn hostile_services_get_events_not_crashes() {
    let mut env = start().await;
    env.apply(
        "garbage",
        &lb_svc(
            "garbage",
            "  annotations:\n    metallb.io/loadBalancerIPs: \"not-an-ip,,999.1.2.3\"\n    metallb.universe.tf/address-pool: \"\\u0000\\u00ff\"\n",
            "",
        ),
    )
    .await;
    env.apply(
        "v6inv4",
        &lb_svc("v6inv4", "", "  loadBalancerIP: \"fd00::1\"\n"),
    )
    .await;
    let ports: String = (1..=1000)
        .map(|p| format!("  - port: {p}\n    name: p{p}\n"))
        .collect();
    let many = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: many\nspec:\n  type: LoadBalancer\n  ports:\n{ports}"
    );
    env.apply("many", &many).await;
    let note = env.wait_event("garbage", "AllocationFailed").await;
    assert!(note.contains("not-an-ip"), "{note}");
    let note = env.wait_event("v6inv4", "AllocationFailed").await;
    assert!(note.contains("fd00::1"), "{note}");
    assert_eq!(env.wait_ip("default", "many").await.len(), 1);
    assert!(env.lbd.alive());
}

#[tokio::test]
async fn api_server_outage_of_30s_changes_no_ip_and_lbd_reconnects() {
    let mut env = start().await;
    for name in ["a", "b", "c"] {
        env.apply(name, &lb_svc(name, "", "")).await;
    }
    let before: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for name in ["a", "b", "c"] {
            v.push(env.wait_ip("default", name).await);
        }
        v
    };
    let addr = env.addr();
    env.server.take().unwrap().stop().await;
    // The outage itself: lbd must ride it out (this sleep is the fault, not a wait for lbd).
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        env.lbd.alive(),
        "lbd died during the outage:\n{}",
        env.lbd.log()
    );
    env.server = Some(ApiServer::start(addr, env.store.clone()).unwrap());
    // A new Service after the outage gets an IP: lbd has reconnected.
    env.apply("d", &lb_svc("d", "", "")).await;
    assert_eq!(env.wait_ip("default", "d").await, ["172.19.100.3"]);
    let after: Vec<Vec<String>> = ["a", "b", "c"]
        .iter()
        .map(|n| env.ingress("default", n))
        .collect();
    assert_eq!(before, after, "no IP may change across an API outage");
}

#[tokio::test]
async fn lbd_restart_keeps_every_ip_and_rewrites_nothing() {
    let mut env = start().await;
    for name in ["a", "b", "c"] {
        env.apply(name, &lb_svc(name, "", "")).await;
    }
    let mut before = Vec::new();
    for name in ["a", "b", "c"] {
        before.push(env.wait_ip("default", name).await);
    }
    // Free the lowest address, so a restart that allocated from scratch would move b and c.
    let out = env.kubectl.run(&["delete", "svc", "a"]).await;
    assert_eq!(out.code, 0);
    env.lbd.restart();
    env.apply("e", &lb_svc("e", "", "")).await;
    // The restarted lbd has listed (e got an IP) — and reused the freed address for it.
    assert_eq!(env.wait_ip("default", "e").await, before[0]);
    assert_eq!(env.ingress("default", "b"), before[1]);
    assert_eq!(env.ingress("default", "c"), before[2]);
    let status_writes = env
        .store
        .request_log()
        .iter()
        .filter(|l| {
            l.contains("PATCH") && (l.contains("/services/b/") || l.contains("/services/c/"))
        })
        .count();
    assert_eq!(
        status_writes,
        2,
        "b and c were written once each (status at first allocation), never again: {:?}",
        env.store.request_log()
    );
}

/// One pool per team (chosen by the Namespace's `team` label), a pool whose selector
/// matches no Namespace (with the best priority), and a pool for everyone.
fn teams_config(kubeconfig: &std::path::Path) -> String {
    format!(
        r#"
[node]
name = "worker-1"

[kubernetes]
kubeconfig = "{}"

[[pool]]
name = "shared"
protocol = "bgp"
addresses = ["172.19.113.0/24"]

[[pool]]
name = "nobody"
protocol = "bgp"
addresses = ["172.19.112.0/24"]
priority = 1
namespace_selectors = [{{ match_labels = {{ team = "nobody" }} }}]

[[pool]]
name = "team-a"
protocol = "bgp"
addresses = ["172.19.110.0/24"]
namespace_selectors = [{{ match_labels = {{ team = "a" }} }}]

[[pool]]
name = "team-b"
protocol = "bgp"
addresses = ["172.19.111.0/24"]
namespace_selectors = [{{ match_expressions = [{{ key = "team", operator = "In", values = ["b"] }}] }}]
"#,
        kubeconfig.display()
    )
}

fn in_namespace(ns: &str, svc: &str) -> String {
    svc.replacen("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"), 1)
}

#[tokio::test]
async fn services_in_labelled_namespaces_get_their_teams_pool_with_kubectl() {
    let mut env = start_with(teams_config).await;
    env.apply(
        "namespaces",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-a\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-b\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-c\n",
    )
    .await;
    for (ns, team) in [("ns-a", "a"), ("ns-b", "b")] {
        let out = env
            .kubectl
            .run(&["label", "namespace", ns, &format!("team={team}")])
            .await;
        assert_eq!(out.code, 0, "kubectl label: {}", out.stderr);
    }
    // A requested IP of the team's pool is refused until lbd has seen the label and served
    // once it has: waiting for it orders what follows after the labels.
    for (ns, ip) in [("ns-a", "172.19.110.100"), ("ns-b", "172.19.111.100")] {
        let spec = format!("  loadBalancerIP: {ip}\n");
        env.apply(
            &format!("{ns}-pinned"),
            &in_namespace(ns, &lb_svc("pinned", "", &spec)),
        )
        .await;
        assert_eq!(env.wait_ip(ns, "pinned").await, [ip]);
    }
    for ns in ["ns-a", "ns-b", "default"] {
        env.apply(
            &format!("{ns}-web"),
            &in_namespace(ns, &lb_svc("web", "", "")),
        )
        .await;
    }
    assert_eq!(env.wait_ip("ns-a", "web").await, ["172.19.110.0"]);
    assert_eq!(env.wait_ip("ns-b", "web").await, ["172.19.111.0"]);
    // Not from "nobody" despite its priority: its selector matches no Namespace.
    assert_eq!(env.wait_ip("default", "web").await, ["172.19.113.0"]);
    let out = env.kubectl.run(&["get", "svc", "-A"]).await;
    for ip in ["172.19.110.0", "172.19.111.0", "172.19.113.0"] {
        assert!(out.stdout.contains(ip), "{}", out.stdout);
    }
    assert!(!out.stdout.contains("172.19.112."), "{}", out.stdout);

    // Another team's address: a failure Event saying why.
    env.apply(
        "steal",
        &in_namespace(
            "ns-c",
            &lb_svc("steal", "", "  loadBalancerIP: 172.19.110.7\n"),
        ),
    )
    .await;
    let note = env.wait_event("steal", "AllocationFailed").await;
    assert!(
        note.contains("pool team-a not compatible for ip assignment")
            && note.contains(r#"namespace "ns-c""#),
        "{note}"
    );
    assert!(env.ingress("ns-c", "steal").is_empty());

    // ns-a moves to team b, then ns-c joins team a (one watch stream: in that order). The
    // waiting Service is served; ns-a's Service keeps its IP; a new one there gets team b's.
    let out = env
        .kubectl
        .run(&["label", "namespace", "ns-a", "team=b", "--overwrite"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env
        .kubectl
        .run(&["label", "namespace", "ns-c", "team=a"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.wait_ip("ns-c", "steal").await, ["172.19.110.7"]);
    assert_eq!(env.ingress("ns-a", "web"), ["172.19.110.0"]);
    env.apply("ns-a-new", &in_namespace("ns-a", &lb_svc("new", "", "")))
        .await;
    assert_eq!(env.wait_ip("ns-a", "new").await, ["172.19.111.1"]);
    assert!(
        env.lbd.log().contains("watching Namespaces"),
        "{}",
        env.lbd.log()
    );
}

#[tokio::test]
async fn a_reload_with_a_bad_selector_changes_nothing_and_a_good_one_starts_watching_namespaces() {
    let mut env = start().await;
    env.apply(
        "ns-a",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-a\n  labels:\n    team: a\n",
    )
    .await;
    // SIGHUP before lbd installed its handlers would end it (the default action).
    env.wait_log("publish: ready").await;
    let good = std::fs::read_to_string(env.lbd.config_path()).unwrap();
    let team_pool = |operator: &str| {
        format!(
            "{good}\n[[pool]]\nname = \"team-a\"\nprotocol = \"bgp\"\naddresses = [\"172.19.110.0/24\"]\nnamespace_selectors = [{{ match_expressions = [{{ key = \"team\", operator = \"{operator}\", values = [\"a\"] }}] }}]\n"
        )
    };
    let bad = team_pool("Equals");
    std::fs::write(env.lbd.config_path(), &bad).unwrap();
    env.lbd.signal("HUP");
    env.wait_log("reload failed").await;
    let line = bad[..bad.find("\"Equals\"").unwrap()].matches('\n').count() + 1;
    let log = env.lbd.log();
    assert!(
        log.contains(&format!("lb.toml:{line}:")) && log.contains("\"Equals\""),
        "{log}"
    );
    assert!(!log.contains("watching Namespaces"), "{log}");
    // The running rules still apply: the pool for everyone.
    env.apply("before", &in_namespace("ns-a", &lb_svc("before", "", "")))
        .await;
    assert_eq!(env.wait_ip("ns-a", "before").await, ["172.19.100.0"]);

    std::fs::write(env.lbd.config_path(), team_pool("In")).unwrap();
    env.lbd.signal("HUP");
    env.wait_log("configuration reloaded").await;
    env.wait_log("watching Namespaces").await;
    env.apply("after", &in_namespace("ns-a", &lb_svc("after", "", "")))
        .await;
    assert_eq!(env.wait_ip("ns-a", "after").await, ["172.19.110.0"]);
    assert_eq!(env.ingress("ns-a", "before"), ["172.19.100.0"]);
}
