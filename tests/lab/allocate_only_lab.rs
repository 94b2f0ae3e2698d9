//! An allocate-only pool (`protocol = "none"`) end to end: lbd on a lab node, the test API
//! server on a control-plane host, the real kubectl. A Service from the allocate-only pool
//! gets its IP in status like any other, but no host answers ARP for it, lbd counts it as
//! announced nowhere and writes no announcer annotation; a Service from a layer-2 pool on the
//! same node, in the same subnet, is answered (the control: the node could answer) — until a
//! reload makes its pool allocate-only too.

use std::time::Duration;

use lb_testkit::kubelab::KubeLab;
use lb_testkit::lab::{Lab, Signal, probe, try_wait_until};
use lb_testkit::lbd::{lbd_binary, scrape_metrics};

const T: Duration = Duration::from_secs(40);
const LOUD: &str = "10.10.100.200";
const QUIET: &str = "10.10.100.210";

fn service(name: &str, pool: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations:
    metallb.io/address-pool: {pool}
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, protocol: TCP}}
"
    )
}

#[test]
fn service_from_an_allocate_only_pool_gets_an_ip_that_no_host_answers_for() {
    let lab = Lab::new("alloconly");
    let node = lab.node("node1", &["10.10.100.3/24"]);
    let cp = lab.host("cp", &["10.10.100.10/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    let kube = KubeLab::start(&cp);
    kube.add_node("node1", "10.10.100.3");
    let state = node.owned_dir("state", "root:root").unwrap();
    let cfg = node
        .write_file(
            "lb.toml",
            &format!(
                r#"
[node]
name = "node1"
state_dir = "{}"

[kubernetes]
kubeconfig = "{}"

[[pool]]
name = "announced"
protocol = "layer2"
addresses = ["{LOUD}/32"]

[[pool]]
name = "quiet"
protocol = "none"
addresses = ["{QUIET}/32"]
"#,
                state.display(),
                kube.kubeconfig().display()
            ),
        )
        .unwrap();
    let bin = lbd_binary();
    let lbd = node
        .spawn_labeled(
            "lbd",
            &[
                "env",
                "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                "NO_COLOR=1",
                bin.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
        )
        .unwrap();
    lbd.wait_for_log("ready", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));

    for (name, pool) in [("loud", "announced"), ("silent", "quiet")] {
        kube.apply(&service(name, pool));
        // A ready endpoint on the node: nothing else keeps an IP from being announced.
        kube.set_endpoints(
            "default",
            name,
            &[("node1", "10.244.0.5")],
            &[("http", 80, "TCP")],
        );
    }
    assert_eq!(kube.wait_for_ingress("default", "loud", T), [LOUD]);
    assert_eq!(kube.wait_for_ingress("default", "silent", T), [QUIET]);
    let pool_of = |svc: &str| {
        kube.ok(&[
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.metadata.annotations.metallb\\.io/ip-allocated-from-pool}",
        ])
    };
    assert_eq!(pool_of("silent").trim(), "quiet");
    lbd.wait_for_log(&format!("announcing {LOUD} on eth0"), T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));

    // The same client, the same node, the same subnet: one IP answered, the other not.
    let loud = probe::l2probe(
        &client,
        LOUD.parse().unwrap(),
        Duration::from_secs(1),
        Duration::from_millis(20),
    )
    .unwrap();
    let quiet = probe::l2probe(
        &client,
        QUIET.parse().unwrap(),
        Duration::from_secs(1),
        Duration::from_millis(20),
    )
    .unwrap();
    let (loud, quiet) = (loud.finish().unwrap(), quiet.finish().unwrap());
    assert_eq!(
        loud.macs().into_iter().collect::<Vec<_>>(),
        [node.mac().to_string()],
        "the layer-2 IP is answered by the node"
    );
    assert_eq!(
        quiet.answers().count(),
        0,
        "the allocate-only IP was answered: {:?}",
        quiet.macs()
    );
    assert!(
        !lbd.log().contains(&format!("announcing {QUIET}")),
        "{}",
        lbd.log()
    );

    // What lbd reports: one layer-2 IP announced, the announcer annotation only on the
    // layer-2 Service.
    try_wait_until(T, "lbd's /metrics", &mut || {
        scrape_metrics(&node, "127.0.0.1:7472")
            .get("lb_announced_ips{protocol=\"layer2\"}")
            .is_some_and(|v| *v == 1.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    let announcing = |svc: &str| {
        kube.ok(&[
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.metadata.annotations.lb\\.org/announcing}",
        ])
    };
    try_wait_until(T, "the announcer annotation on loud", &mut || {
        announcing("loud").contains("layer2: node1")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    assert_eq!(announcing("silent").trim(), "", "silent has an announcer");

    // A reload turns the layer-2 pool allocate-only: the IP stays in status, and the node
    // stops answering for it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("protocol = \"layer2\"", "protocol = \"none\""),
    )
    .unwrap();
    lbd.kill(Signal::Hup);
    lbd.wait_for_log(&format!("no longer announcing {LOUD}"), T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    let after = probe::l2probe(
        &client,
        LOUD.parse().unwrap(),
        Duration::from_secs(1),
        Duration::from_millis(20),
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(
        after.answers().count(),
        0,
        "still answered after the reload"
    );
    assert_eq!(kube.ingress_ips("default", "loud"), [LOUD]);
    try_wait_until(T, "no layer-2 IP counted", &mut || {
        scrape_metrics(&node, "127.0.0.1:7472")
            .get("lb_announced_ips{protocol=\"layer2\"}")
            .is_some_and(|v| *v == 0.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
}
