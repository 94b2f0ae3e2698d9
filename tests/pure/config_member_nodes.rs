//! lb.toml `[cluster] member_nodes` (issue 14 item 3): the members are the Kubernetes Nodes
//! matching its selectors, at their InternalIP and its port. Each rule's message and where
//! it points (file:line:column).

use std::path::Path;

use lb::config::*;

const FILE: &str = "/etc/lb.toml";
const KUBE: &str = "[kubernetes]\nkubeconfig = \"/etc/lb/kubeconfig\"\n";
const VOTERS: &str = "voters = { worker-1 = \"10.0.0.3:7946\", worker-2 = \"10.0.0.4:7946\", worker-3 = \"10.0.0.5:7946\" }";
const POOL: &str = "[[pool]]\nname = \"p\"\nprotocol = \"layer2\"\naddresses = [\"10.0.0.0/24\"]\n";

fn host(name: &str) -> Context {
    Context {
        hostname: name.into(),
        check_files: false,
    }
}

fn config(kube: &str, cluster: &str) -> String {
    format!("{kube}[cluster]\n{cluster}\nsecret_file = \"/etc/lb/cluster.key\"\n{POOL}")
}

const MEMBER_NODES: &str = "member_nodes = { node_selectors = [{ match_labels = { \"lb.example.org/member\" = \"true\" } }], port = 7950 }";

/// The one error of `text` on host `worker-21`: its 1-based line and column, and message.
fn one_error(text: &str) -> (usize, usize, String) {
    let d = parse_str(text, Path::new(FILE), &host("worker-21"))
        .err()
        .unwrap_or_else(|| panic!("expected an error:\n{text}"));
    let errors: Vec<Diagnostic> = d.errors().cloned().collect();
    assert_eq!(errors.len(), 1, "expected one error, got:\n{d}");
    let e = &errors[0];
    assert_eq!(e.file, Path::new(FILE));
    assert!(e.message.contains("expected"), "{}", e.message);
    (e.line, e.column, e.message.clone())
}

fn at(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).expect("needle in text");
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

#[test]
fn a_member_with_member_nodes_needs_no_address_and_gets_the_selectors_and_port() {
    let text = config(KUBE, &format!("{VOTERS}\n{MEMBER_NODES}"));
    let c = parse_str(&text, Path::new(FILE), &host("worker-21")).expect("valid");
    let m = c.config.cluster.member_nodes.expect("member_nodes");
    assert_eq!(m.port, 7950);
    assert_eq!(m.node_selectors.len(), 1);
    assert_eq!(
        m.node_selectors[0]
            .match_labels
            .get("lb.example.org/member"),
        Some(&"true".to_owned())
    );
    assert_eq!(c.config.cluster.address, None);
    // A voter's file is the same.
    let v = parse_str(&text, Path::new(FILE), &host("worker-1")).expect("valid on a voter");
    assert!(v.config.cluster.member_nodes.is_some());
}

#[test]
fn member_nodes_port_defaults_to_7946_and_no_selectors_means_every_node() {
    let text = config(KUBE, &format!("{VOTERS}\nmember_nodes = {{}}"));
    let c = parse_str(&text, Path::new(FILE), &host("worker-21")).expect("valid");
    let m = c.config.cluster.member_nodes.expect("member_nodes");
    assert_eq!(m.port, 7946);
    assert!(m.node_selectors.is_empty());
}

#[test]
fn member_nodes_without_kubernetes_is_an_error_at_the_key() {
    let text = config("", &format!("{VOTERS}\n{MEMBER_NODES}"));
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), at(&text, "{ node_selectors"));
    assert!(msg.contains("no [kubernetes]"), "{msg}");
}

#[test]
fn member_nodes_with_members_instead_of_voters_is_an_error() {
    let text = config(
        KUBE,
        &format!(
            "{}\n{MEMBER_NODES}",
            VOTERS.replacen("voters", "members", 1)
        )
        .replace("worker-3", "worker-21"),
    );
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), at(&text, "{ node_selectors"));
    assert!(msg.contains("needs voters"), "{msg}");
}

#[test]
fn member_nodes_and_an_address_exclude_each_other() {
    let text = config(
        KUBE,
        &format!("{VOTERS}\naddress = \"10.0.0.21:7946\"\n{MEMBER_NODES}"),
    );
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), at(&text, "\"10.0.0.21:7946\""));
    assert!(msg.contains("exclude each other"), "{msg}");
}

#[test]
fn member_nodes_port_out_of_range_is_an_error_at_the_port() {
    for bad in ["0", "65536"] {
        let text = config(
            KUBE,
            &format!("{VOTERS}\nmember_nodes = {{ port = {bad} }}"),
        );
        let (line, col, msg) = one_error(&text);
        let (l, c) = at(&text, &format!("= {bad} }}"));
        assert_eq!((line, col), (l, c + 2), "at the number");
        assert!(
            msg.contains("out of range") && msg.contains("65535"),
            "{msg}"
        );
    }
}

#[test]
fn member_nodes_selector_syntax_is_checked_like_a_pools() {
    let text = config(
        KUBE,
        &format!(
            "{VOTERS}\nmember_nodes = {{ node_selectors = [{{ match_expressions = [{{ key = \"role\", operator = \"Has\" }}] }}] }}"
        ),
    );
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), at(&text, "\"Has\""));
    assert!(msg.contains("not a label selector operator"), "{msg}");
    let text = config(
        KUBE,
        &format!(
            "{VOTERS}\nmember_nodes = {{ node_selectors = [{{ match_labels = {{ \"bad key!\" = \"x\" }} }}] }}"
        ),
    );
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), at(&text, "\"bad key!\""));
    assert!(msg.contains("label key"), "{msg}");
}

#[test]
fn without_member_nodes_a_host_outside_the_voters_still_needs_an_address() {
    let text = config(KUBE, VOTERS);
    let (_, _, msg) = one_error(&text);
    assert!(msg.contains("not among the cluster voters"), "{msg}");
}
