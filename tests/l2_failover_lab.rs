//! Three lbd nodes in the namespace lab, joined by raft-lite, announcing one layer-2 VIP:
//! exactly one node answers ARP for it; when the owner's link goes down, it is SIGKILLed or
//! SIGTERMed, another node answers — and a client probing every 10 ms never sees two MACs
//! answering at once. A node cut off by nft stops owning before another takes over.

mod support;

use std::time::{Duration, Instant};

use support::l2cluster::{T, VIP, check_failover, start_cluster};
use support::lab::Signal;

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
