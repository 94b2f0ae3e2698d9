//! Replacing a voter by `systemctl reload` (SIGHUP, what the unit's ExecReload sends), with
//! real lbd in network namespaces: voters node1..node3 announce a layer-2 VIP; node4 starts
//! with the voters plus itself and node1..node3 are reloaded one at a time with that list
//! (version 1: four voters); then node1, node2 and node4 are reloaded without node3 (version
//! 2) and node3 stops for good. A client asks "who has the VIP?" every 10 ms throughout:
//! never two MACs at once, no gap longer than the bound, and no lbd restarted.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lb_testkit::lab::{Host, Lab, Proc, Signal, probe, try_wait_until};
use lb_testkit::lbd::lbd_binary;

const T: Duration = Duration::from_secs(20);
const VIP: &str = "10.10.100.200";
const INTERVAL: Duration = Duration::from_millis(10);
/// Longest the VIP may go unanswered (a planned move when node3 leaves, if it held it).
const GAP_BOUND: Duration = Duration::from_millis(500);

fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

fn config(i: usize, state: &str, key: &str, voters: &[usize]) -> String {
    let list: Vec<String> = voters
        .iter()
        .map(|k| format!("{} = \"10.10.100.{}:7946\"", name(*k), k + 3))
        .collect();
    format!(
        r#"
[node]
name = "{}"
state_dir = "{state}"

[cluster]
members = {{ {} }}
secret_file = "{key}"

[layer2]
gratuitous_count = 3
gratuitous_interval = "100ms"

[[pool]]
name = "ip-space-1"
protocol = "layer2"
addresses = ["{VIP}/32"]

[[service]]
name = "vip"
ip = "{VIP}"
assign = true
"#,
        name(i),
        list.join(", ")
    )
}

struct Node {
    host: Host,
    state: String,
    key: String,
    cfg: std::path::PathBuf,
    lbd: Option<Proc>,
}

impl Node {
    fn write(&mut self, i: usize, voters: &[usize]) {
        self.cfg = self
            .host
            .write_file("lb.toml", &config(i, &self.state, &self.key, voters))
            .unwrap();
    }

    fn start(&mut self) {
        // `env` execs lbd: the PID is lbd's. Never the machine's system bus.
        self.lbd = Some(
            self.host
                .spawn_labeled(
                    "lbd",
                    &[
                        "env",
                        "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                        lbd_binary().to_str().unwrap(),
                        "--config",
                        self.cfg.to_str().unwrap(),
                    ],
                )
                .unwrap(),
        );
    }

    fn log(&self) -> String {
        self.lbd.as_ref().map(Proc::log).unwrap_or_default()
    }
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("---- {} ----\n{}", name(i), n.log()))
        .collect()
}

fn wait_log(nodes: &[Node], i: usize, what: &str) {
    let ok = try_wait_until(T, what, || nodes[i].log().contains(what));
    assert!(
        ok.is_ok(),
        "{} never logged {what:?}\n{}",
        name(i),
        logs(nodes)
    );
}

/// SIGHUP, as `systemctl reload lbd` does, and waits for the reload's reply line (it says
/// the change was proposed, or nothing when an earlier voter's reload already made it).
fn reload(nodes: &[Node], i: usize) {
    let done = |n: &Node| n.log().matches("configuration reloaded").count();
    let before = done(&nodes[i]);
    nodes[i].lbd.as_ref().expect("running").kill(Signal::Hup);
    let ok = try_wait_until(T, "the reload", || done(&nodes[i]) > before);
    assert!(ok.is_ok(), "{} did not reload\n{}", name(i), logs(nodes));
}

#[test]
fn a_voter_is_replaced_by_reloads_while_the_vip_keeps_one_owner_and_answers() {
    let lab = Lab::new("vrepl");
    let mut nodes: Vec<Node> = (0..4)
        .map(|i| {
            let host = lab.node(&name(i), &[&format!("10.10.100.{}/24", i + 3)]);
            let key = host
                .write_file("cluster.key", "lab-cluster-shared-secret-0123456789\n")
                .unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            let state = host.owned_dir("state", "root:root").unwrap();
            Node {
                host,
                state: state.display().to_string(),
                key: key.display().to_string(),
                cfg: std::path::PathBuf::new(),
                lbd: None,
            }
        })
        .collect();
    let client = lab.host("client", &["10.10.100.9/24"]);
    for (i, n) in nodes.iter_mut().enumerate().take(3) {
        n.write(i, &[0, 1, 2]);
        n.start();
    }
    let probe = probe::l2probe(
        &client,
        VIP.parse().unwrap(),
        Duration::from_secs(120),
        INTERVAL,
    )
    .unwrap();
    let answers = |p: &probe::RunningProbe| p.snapshot().iter().filter(|r| r.is_answer()).count();
    let ok = try_wait_until(T, "the VIP answers", || answers(&probe) >= 20);
    assert!(ok.is_ok(), "nobody answered for {VIP}\n{}", logs(&nodes));
    let pids: Vec<u32> = nodes[..3]
        .iter()
        .map(|n| n.lbd.as_ref().expect("running").pid())
        .collect();

    // Add node4: it starts with the new list, then every voter is reloaded with it.
    nodes[3].write(3, &[0, 1, 2, 3]);
    nodes[3].start();
    for i in 0..3 {
        nodes[i].write(i, &[0, 1, 2, 3]);
        reload(&nodes, i);
    }
    for i in 0..4 {
        wait_log(
            &nodes,
            i,
            "voter set version 1 is now node1, node2, node3, node4",
        );
    }

    // Remove node3: the remaining voters are reloaded without it; it hears the change.
    for i in [0, 1, 3] {
        nodes[i].write(i, &[0, 1, 3]);
        reload(&nodes, i);
    }
    for i in 0..4 {
        wait_log(&nodes, i, "voter set version 2 is now node1, node2, node4");
    }
    wait_log(&nodes, 2, "no longer a voter");
    // node3 stops for good (`systemctl disable --now`).
    let n3 = nodes[2].lbd.as_ref().expect("running");
    n3.kill(Signal::Term);
    let status = n3.wait_timeout(T).expect("node3's lbd exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", nodes[2].log());
    // Another second of answers after it left.
    let before = answers(&probe);
    let ok = try_wait_until(T, "answers after node3 left", || {
        answers(&probe) >= before + 100
    });
    assert!(
        ok.is_ok(),
        "the VIP stopped answering after node3 left\n{}",
        logs(&nodes)
    );
    let run = probe.stop().unwrap();

    assert_eq!(
        run.split_brain(INTERVAL),
        None,
        "two MACs answered for {VIP} at once\n{}",
        logs(&nodes)
    );
    let gap = run
        .longest_gap_between_answers()
        .map_or(Duration::ZERO, |g| g.duration());
    assert!(
        gap <= GAP_BOUND,
        "{VIP} went unanswered for {gap:?}\n{}",
        logs(&nodes)
    );
    // Nothing restarted: the same lbd processes run on node1, node2 (and node4 since it
    // started).
    for (i, pid) in [0, 1].into_iter().zip(&pids) {
        let p = nodes[i].lbd.as_ref().expect("running");
        assert_eq!(p.pid(), *pid);
        assert!(p.is_running(), "{} exited\n{}", name(i), p.log());
    }
    println!("voter replaced by reloads: longest gap for {VIP} {gap:?}, no split brain");
}
