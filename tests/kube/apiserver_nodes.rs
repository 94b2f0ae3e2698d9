//! Nodes on the test API server with the real kubectl, as `[cluster] member_nodes` needs
//! them: `create -f` keeps labels and `status.addresses`, `label` adds and removes a label
//! (`get -l` selects the Node only while it has it), `delete` removes it.

use std::sync::Arc;

use lb_testkit::apiserver::{ApiServer, Handle, Kubectl, Store};

fn start() -> (Arc<Store>, Handle, Kubectl) {
    let store = Store::new();
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap(), store.clone()).unwrap();
    let kubectl = Kubectl::new(server.addr()).unwrap();
    (store, server, kubectl)
}

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: worker-21
  labels:
    kubernetes.io/hostname: worker-21
status:
  addresses:
  - type: Hostname
    address: worker-21
  - type: InternalIP
    address: 10.10.100.21
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_labels_unlabels_and_deletes_a_node_with_its_addresses() {
    let (store, _server, k) = start();
    let file = k.file("node.yaml", NODE);
    let out = k.run(&["create", "-f", &file]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let n = store.get("nodes", "", "worker-21").expect("created");
    assert_eq!(
        n["status"]["addresses"][1]["address"], "10.10.100.21",
        "{n}"
    );

    let selected = |out: &str| out.lines().any(|l| l.starts_with("worker-21 "));
    let get = ["get", "nodes", "-l", "lb.example.org/member=true"];
    let out = k.run(&get).await;
    assert!(out.code == 0 && !selected(&out.stdout), "{out:?}");

    let out = k
        .run(&["label", "node", "worker-21", "lb.example.org/member=true"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let n = store.get("nodes", "", "worker-21").expect("still there");
    assert_eq!(n["metadata"]["labels"]["lb.example.org/member"], "true");
    assert_eq!(
        n["status"]["addresses"][1]["address"], "10.10.100.21",
        "status kept"
    );
    let out = k.run(&get).await;
    assert!(out.code == 0 && selected(&out.stdout), "{out:?}");

    let out = k
        .run(&["label", "node", "worker-21", "lb.example.org/member-"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let n = store.get("nodes", "", "worker-21").expect("still there");
    assert!(
        n["metadata"]["labels"]
            .get("lb.example.org/member")
            .is_none(),
        "{n}"
    );
    let out = k.run(&get).await;
    assert!(out.code == 0 && !selected(&out.stdout), "{out:?}");

    let out = k.run(&["delete", "node", "worker-21"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(store.get("nodes", "", "worker-21").is_none());
    let out = k.run(&["get", "node", "worker-21"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("NotFound"), "{out:?}");
}
