//! Three lbd nodes in the namespace lab, joined by raft-lite, announcing one layer-2 VIP:
//! exactly one node answers ARP for it; when the owner's link goes down, it is SIGKILLed or
//! SIGTERMed, another node answers — and a client probing every 10 ms never sees two MACs
//! answering at once. A node cut off by nft stops owning before another takes over.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::lab::{Host, Lab, Proc, Signal, probe};
use support::lbd::lbd_binary;

const T: Duration = Duration::from_secs(20);
const VIP: &str = "10.10.100.200";
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

struct Cluster {
    nodes: Vec<Host>,
    lbds: Vec<Option<Proc>>,
    client: Host,
    // Keeps the namespaces alive; dropped last.
    _lab: Lab,
}

fn config(name: &str, state: &str, key: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
state_dir = "{state}"

[cluster]
members = {{ node1 = "10.10.100.3:7946", node2 = "10.10.100.4:7946", node3 = "10.10.100.5:7946" }}
secret_file = "{key}"

[layer2]
gratuitous_count = 3
gratuitous_interval = "100ms"

[[pool]]
name = "ip-space-1"
protocol = "layer2"
addresses = ["10.10.100.200/32"]

[[service]]
name = "vip"
ip = "{VIP}"
assign = true
"#
    )
}

fn start_cluster(name: &str) -> Cluster {
    let lab = Lab::new(name);
    let addrs = ["10.10.100.3/24", "10.10.100.4/24", "10.10.100.5/24"];
    let nodes: Vec<Host> = (0..3)
        .map(|i| lab.node(&format!("node{}", i + 1), &[addrs[i]]))
        .collect();
    let client = lab.host("client", &["10.10.100.9/24"]);
    let mut lbds = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let key = node
            .write_file("cluster.key", "lab-cluster-shared-secret-0123456789\n")
            .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let state = node.owned_dir("state", "root:root").unwrap();
        let cfg = node
            .write_file(
                "lb.toml",
                &config(
                    &format!("node{}", i + 1),
                    &state.display().to_string(),
                    &key.display().to_string(),
                ),
            )
            .unwrap();
        let bin = lbd_binary();
        lbds.push(Some(
            node.spawn(&[bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
                .unwrap(),
        ));
    }
    Cluster {
        nodes,
        lbds,
        client,
        _lab: lab,
    }
}

impl Cluster {
    fn logs(&self) -> String {
        self.lbds
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "---- node{} ----\n{}",
                    i + 1,
                    p.as_ref().map(|p| p.log()).unwrap_or_default()
                )
            })
            .collect()
    }

    fn node_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.mac() == mac)
    }

    /// Starts a probe and waits until some node answers steadily; returns the probe and the
    /// owner's index.
    fn probe_until_owned(&self, duration: Duration) -> (probe::RunningProbe, usize) {
        let p =
            probe::l2probe(&self.client, VIP.parse().unwrap(), duration, PROBE_INTERVAL).unwrap();
        let deadline = Instant::now() + T;
        loop {
            let recs = p.snapshot();
            let answered: Vec<&str> = recs
                .iter()
                .filter(|r| r.kind == "reply")
                .filter_map(|r| r.mac.as_deref())
                .collect();
            if answered.len() >= 20 {
                let owner = answered[answered.len() - 1];
                return (
                    p,
                    self.node_of_mac(owner)
                        .unwrap_or_else(|| panic!("unknown MAC {owner} answered")),
                );
            }
            assert!(
                Instant::now() < deadline,
                "nobody answered ARP for {VIP}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Checks the run: one MAC at a time, the new owner answered, and returns the gap.
fn check_failover(c: &Cluster, run: &probe::ProbeRun, old: usize) -> Duration {
    assert_eq!(
        run.split_brain(PROBE_INTERVAL),
        None,
        "two MACs answered at once\n{}",
        c.logs()
    );
    let macs: BTreeMap<String, usize> =
        run.answers()
            .filter_map(|r| r.mac.clone())
            .fold(BTreeMap::new(), |mut m, mac| {
                *m.entry(mac).or_default() += 1;
                m
            });
    let new_owner = macs
        .keys()
        .filter_map(|m| c.node_of_mac(m))
        .find(|i| *i != old)
        .unwrap_or_else(|| panic!("no other node took over: {macs:?}\n{}", c.logs()));
    assert!(
        run.first_answer_from(c.nodes[new_owner].mac()).is_some(),
        "new owner never answered"
    );
    run.longest_gap_between_answers()
        .map(|g| g.duration())
        .unwrap_or_default()
}

#[test]
fn exactly_one_node_answers_and_the_vip_moves_when_the_owners_link_goes_down() {
    let c = start_cluster("l2link");
    let (p, owner) = c.probe_until_owned(Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(500)); // steady state before the fault
    c.nodes[owner].link_down().unwrap();
    let run = p.finish().unwrap();
    let gap = check_failover(&c, &run, owner);
    eprintln!("link down: gap {gap:?}");
    assert!(gap < Duration::from_secs(3), "gap {gap:?}\n{}", c.logs());
}

#[test]
fn the_vip_moves_when_the_owner_is_killed() {
    let mut c = start_cluster("l2kill");
    let (p, owner) = c.probe_until_owned(Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(500));
    c.lbds[owner].as_ref().unwrap().kill(Signal::Kill);
    let run = p.finish().unwrap();
    let gap = check_failover(&c, &run, owner);
    eprintln!("SIGKILL: gap {gap:?}");
    assert!(gap < Duration::from_secs(3), "gap {gap:?}\n{}", c.logs());
    c.lbds[owner] = None;
}

#[test]
fn sigterm_hands_the_vip_over_before_exit() {
    let c = start_cluster("l2term");
    let (p, owner) = c.probe_until_owned(Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(500));
    let lbd = c.lbds[owner].as_ref().unwrap();
    lbd.kill(Signal::Term);
    let status = lbd.wait_timeout(T).expect("lbd exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", lbd.log());
    let run = p.finish().unwrap();
    let gap = check_failover(&c, &run, owner);
    eprintln!("SIGTERM: gap {gap:?}");
    assert!(gap < Duration::from_secs(2), "gap {gap:?}\n{}", c.logs());
}

/// Seconds since the epoch of the first log line containing `needle` (tracing's RFC 3339
/// timestamp at the start of each line).
fn log_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let ts = line.split_whitespace().next()?;
    let out = std::process::Command::new("date")
        .args(["-d", ts, "+%s.%N"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn an_isolated_owner_stops_answering_before_another_node_starts() {
    let c = start_cluster("l2iso");
    let (p, owner) = c.probe_until_owned(Duration::from_secs(4));
    drop(p);
    let mark = format!("no longer announcing {VIP}");
    c.nodes[owner].isolate().unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // Another node takes over...
    let deadline = Instant::now() + T;
    let (new_owner, took) = loop {
        if let Some((i, t)) = others.iter().find_map(|i| {
            log_time(
                &c.lbds[*i].as_ref().unwrap().log(),
                &format!("announcing {VIP}"),
            )
            .map(|t| (*i, t))
        }) {
            break (i, t);
        }
        assert!(Instant::now() < deadline, "nobody took over\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // ...and the isolated owner had already stopped answering by then.
    let old_log = c.lbds[owner].as_ref().unwrap().log();
    let silent = log_time(&old_log, &mark)
        .unwrap_or_else(|| panic!("isolated owner never withdrew\n{}", c.logs()));
    assert!(
        silent < took,
        "node{} withdrew at {silent}, node{} announced at {took}\n{}",
        owner + 1,
        new_owner + 1,
        c.logs()
    );
    eprintln!(
        "isolation: old owner silent {:.3} s before the new one announced",
        took - silent
    );
}
