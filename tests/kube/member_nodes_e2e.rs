//! `[cluster] member_nodes` end to end (issue 14 item 3): a voter and two member hosts run
//! lbd in network namespaces of a lab, the test API server on a control-plane host, the
//! real kubectl. A member has no `address`: it joins at its Node's InternalIP once its Node
//! matches the selector (`kubectl label node`), the leader lists it (`lbctl cluster`), and
//! forgets it when the label goes or the Node is deleted; a host whose Node does not match
//! the leader's selector is refused (`not_a_node`, counted).

use std::path::Path;
use std::time::Duration;

use lb_testkit::dbus::Bus;
use lb_testkit::kubelab::KubeLab;
use lb_testkit::lab::{Host, Lab, Proc, wait_for, wait_until};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);
const LABEL: &str = "lb.example.org/member";
const VOTER_IP: &str = "10.10.100.3";
const METRICS: &str = "10.10.100.3:9473";

fn node_yaml(name: &str, ip: &str, member: bool) -> String {
    let label = if member {
        format!("\n    {LABEL}: \"true\"")
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}{label}
status:
  addresses:
  - type: Hostname
    address: {name}
  - type: InternalIP
    address: {ip}
"
    )
}

/// `member_nodes` as on the voter and on m1; m2 is misconfigured to take every Node.
fn config(
    host: &Host,
    me: &str,
    kubeconfig: &Path,
    key: &Path,
    member_nodes: &str,
    extra: &str,
) -> String {
    let state = host.owned_dir("state", "root:root").expect("state dir");
    format!(
        r#"
[node]
name = "{me}"
state_dir = "{}"

[kubernetes]
kubeconfig = "{}"

[cluster]
voters = {{ v1 = "{VOTER_IP}:7946" }}
member_nodes = {member_nodes}
secret_file = "{}"

[[pool]]
name = "l2"
protocol = "layer2"
addresses = ["10.10.100.200-10.10.100.210"]
{extra}"#,
        state.display(),
        kubeconfig.display(),
        key.display()
    )
}

fn start_lbd(host: &Host, config: &str, bus: &str) -> Proc {
    let cfg = host.write_file("lb.toml", config).expect("lb.toml");
    let bin = lbd_binary();
    let bus = format!("DBUS_SYSTEM_BUS_ADDRESS={bus}");
    host.spawn_labeled(
        "lbd",
        &[
            "env",
            &bus,
            "NO_COLOR=1",
            bin.to_str().expect("utf-8"),
            "--config",
            cfg.to_str().expect("utf-8"),
        ],
    )
    .expect("lbd starts")
}

/// `lbctl cluster --json` against the voter's bus: the members the leader lists.
fn cluster_members(bus: &Bus) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["--bus", &bus.address, "cluster", "--json"])
        .output()
        .expect("lbctl runs");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["members"].as_array().cloned().unwrap_or_default()
}

/// `lbctl services --json` against `bus`: Service name → the hosts announcing it.
fn announcers(bus: &Bus) -> Vec<(String, Vec<String>)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["--bus", &bus.address, "services", "--json"])
        .output()
        .expect("lbctl runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let by = s["announced_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            (s["name"].as_str().unwrap_or_default().to_owned(), by)
        })
        .collect()
}

const SERVICES: usize = 6;

/// Every Service announced by exactly one host, and `pred` holds for the set of them.
fn all_announced(bus: &Bus, pred: impl Fn(&[String]) -> bool) -> bool {
    let a = announcers(bus);
    let hosts: Vec<String> = a.iter().flat_map(|(_, by)| by.clone()).collect();
    a.len() == SERVICES && a.iter().all(|(_, by)| by.len() == 1) && pred(&hosts)
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, protocol: TCP}}
"
    )
}

fn listed(bus: &Bus, name: &str) -> Option<Value> {
    cluster_members(bus).into_iter().find(|m| m["name"] == name)
}

fn refused_not_a_node(voter: &Host) -> f64 {
    scrape_metrics(voter, METRICS)
        .get("lb_cluster_joins_refused_total{reason=\"not_a_node\"}")
        .copied()
        .unwrap_or(0.0)
}

fn waiting_gauge(host: &Host, addr: &str) -> Option<f64> {
    scrape_metrics(host, addr)
        .get("lb_cluster_member_node_waiting")
        .copied()
}

#[test]
fn members_come_from_labelled_nodes_at_their_internal_ip_and_go_with_the_label_or_the_node() {
    let lab = Lab::new("memnodes");
    let cp = lab.host("cp", &["10.10.100.10/24"]);
    let v1 = lab.node("v1", &[&format!("{VOTER_IP}/24")]);
    let m1 = lab.node("m1", &["10.10.100.21/24"]);
    let m2 = lab.node("m2", &["10.10.100.22/24"]);
    let kube = KubeLab::start(&cp);
    let key = lab.dir().join("cluster.key");
    std::fs::write(&key, "member nodes lab key\n").expect("key");
    std::fs::set_permissions(
        &key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod key");

    // The Nodes, with the real kubectl: m1 not labelled yet, m2 never.
    for (name, ip) in [
        ("v1", VOTER_IP),
        ("m1", "10.10.100.21"),
        ("m2", "10.10.100.22"),
    ] {
        let file = cp
            .write_file(&format!("node-{name}.yaml"), &node_yaml(name, ip, false))
            .expect("node yaml");
        kube.ok(&["create", "-f", file.to_str().expect("utf-8")]);
    }

    let selector =
        format!("{{ node_selectors = [{{ match_labels = {{ \"{LABEL}\" = \"true\" }} }}] }}");
    // One private bus per lbd: each owns org.lb.Daemon1 on its own.
    let bus = Bus::start();
    let m1_bus = Bus::start();
    let m2_bus = Bus::start();
    let voter = start_lbd(
        &v1,
        &config(
            &v1,
            "v1",
            kube.kubeconfig(),
            &key,
            &selector,
            &format!("\n[metrics]\nlisten = \"{METRICS}\"\n"),
        ),
        &bus.address,
    );
    voter
        .wait_for_log("became leader", T)
        .unwrap_or_else(|e| panic!("{e}"));
    let m1_metrics = "10.10.100.21:9473";
    let member1 = start_lbd(
        &m1,
        &config(
            &m1,
            "m1",
            kube.kubeconfig(),
            &key,
            &selector,
            &format!("\n[metrics]\nlisten = \"{m1_metrics}\"\n"),
        ),
        &m1_bus.address,
    );
    // m2 takes every Node as a member Node; the leader does not.
    let member2 = start_lbd(
        &m2,
        &config(&m2, "m2", kube.kubeconfig(), &key, "{}", ""),
        &m2_bus.address,
    );

    // Layer-2 Services, each with a ready endpoint: the voter alone announces them.
    for i in 0..SERVICES {
        let name = format!("web-{i}");
        kube.apply(&service(&name));
        kube.set_endpoints(
            "default",
            &name,
            &[("v1", "10.244.0.5")],
            &[("http", 80, "TCP")],
        );
    }
    wait_until(T, "every Service announced by v1", || {
        all_announced(&bus, |hosts| hosts.iter().all(|h| h == "v1"))
    });

    // m1's Node does not match yet: it waits, says why, and is not listed.
    member1
        .wait_for_log("Node m1 is not a member Node", T)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(T, "m1's waiting gauge at 1", || {
        waiting_gauge(&m1, m1_metrics) == Some(1.0)
    });
    // Its own lbctl shows it at the port it listens on, with no IP yet.
    let own = wait_for(T, "m1 in its own lbctl cluster", || listed(&m1_bus, "m1"));
    assert_eq!(own["address"], "0.0.0.0:7946", "{own}");
    // m2 asks at its Node's InternalIP and is refused, with a log line and the counter.
    member2
        .wait_for_log("asking to join at 10.10.100.22:7946", T)
        .unwrap_or_else(|e| panic!("{e}"));
    voter
        .wait_for_log("not admitting m2", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", voter.log()));
    wait_until(
        T,
        "lb_cluster_joins_refused_total{reason=not_a_node}",
        || refused_not_a_node(&v1) >= 1.0,
    );
    assert!(listed(&bus, "m1").is_none() && listed(&bus, "m2").is_none());

    // Labelled: m1 joins at its InternalIP and the port, and `lbctl cluster` shows it.
    kube.ok(&["label", "node", "m1", &format!("{LABEL}=true")]);
    let m = wait_for(T, "m1 listed by lbctl cluster on the leader", || {
        listed(&bus, "m1")
    });
    assert_eq!(m["address"], "10.10.100.21:7946", "{m}");
    assert_eq!(m["role"], "joined", "{m}");
    voter
        .wait_for_log("admitted member m1 at 10.10.100.21:7946", T)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(T, "m1's waiting gauge at 0", || {
        waiting_gauge(&m1, m1_metrics) == Some(0.0)
    });
    wait_until(T, "m1 shows itself at its Node's address", || {
        listed(&m1_bus, "m1").is_some_and(|m| m["address"] == "10.10.100.21:7946")
    });
    assert!(listed(&bus, "m2").is_none(), "m2 is never admitted");
    // Admitted, it takes the IPs whose placement choice it now is.
    wait_until(T, "some Services announced by m1", || {
        all_announced(&bus, |hosts| hosts.iter().any(|h| h == "m1"))
    });

    // The label goes: the leader forgets m1 at once (no restart anywhere).
    kube.ok(&["label", "node", "m1", &format!("{LABEL}-")]);
    wait_until(T, "m1 no longer listed", || listed(&bus, "m1").is_none());
    // Its IPs moved to the voter: every Service still announced, none by m1 or m2.
    wait_until(T, "every Service announced by v1 again", || {
        all_announced(&bus, |hosts| hosts.iter().all(|h| h == "v1"))
    });
    voter
        .wait_for_log("forgot member m1", T)
        .unwrap_or_else(|e| panic!("{e}"));

    // Labelled again it is back; deleting its Node removes it again.
    kube.ok(&["label", "node", "m1", &format!("{LABEL}=true")]);
    wait_for(T, "m1 listed again", || listed(&bus, "m1"));
    kube.ok(&["delete", "node", "m1"]);
    wait_until(T, "m1 no longer listed after its Node is deleted", || {
        listed(&bus, "m1").is_none()
    });
    member1
        .wait_for_log("there is no Node m1", T)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(voter.is_running() && member1.is_running() && member2.is_running());
}
