//! Benchmark: the client's ARP-answer gap for a layer-2 VIP when its owner fails, lbd (3 nodes,
//! raft-lite, default timings) beside keepalived (VRRPv3, advert_int 1 s and 0.1 s) in the
//! same namespace lab. The client probes every 10 ms. Owner faults: the owner is a node other
//! than the raft-lite leader. Leader faults (link down, SIGKILL, nft partition, SIGTERM): seven
//! IPv4 VIPs spread over the three nodes, the leader included; the gap of the VIPs other nodes
//! own (the worst per trial) and of the leader's own VIPs (taken over by their successors).
//!
//! Run as root:  cargo build --release --bin lbd && cargo run --release --example bench_l2_failover [-- --trials N] [--only link|kill|term|leader|keepalived]

use std::time::Duration;

use lb_testkit::l2cluster::{
    EXTRA_VIPS, LeaderFault, PROBE_INTERVAL, VIP, check_failover, leader_fault, start_cluster,
    start_cluster_with,
};
use lb_testkit::lab::peers::{Keepalived, VrrpConfig};
use lb_testkit::lab::{Lab, Signal, probe};

/// `--only link|kill|term|leader|keepalived`: run just those scenarios (default: all).
fn only() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn trials() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    LinkDown,
    Kill,
    Term,
}

/// One lbd trial: the client's gap for the VIP when its owner suffers `fault`. The owner is a
/// node other than the raft-lite leader (a leader's faults are measured by
/// [`leader_trial`]); a cluster whose leader owns the VIP is started again.
fn owner_trial(fault: Fault, n: usize) -> Duration {
    let mut attempt = 0;
    let (mut c, p, owner) = loop {
        attempt += 1;
        let c = start_cluster(&format!("bl2{n}{attempt}"));
        let (p, owner) = c.probe_until_owned(Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(500));
        let leader = c.leader().expect("a raft-lite leader");
        if leader != owner || attempt == 5 {
            break (c, p, owner);
        }
        drop(p);
    };
    match fault {
        Fault::LinkDown => c.nodes[owner].link_down().unwrap(),
        Fault::Kill => c.lbds[owner].as_ref().unwrap().kill(Signal::Kill),
        Fault::Term => c.lbds[owner].as_ref().unwrap().kill(Signal::Term),
    }
    let run = p.finish().unwrap();
    let gap = check_failover(&c, &run, owner).0;
    c.lbds[owner] = None;
    gap
}

/// One leader trial: (longest gap of a VIP another node owned, longest gap of the leader's own
/// VIPs if it had any).
fn leader_trial(fault: LeaderFault, n: usize) -> (Duration, Option<Duration>) {
    let mut c = start_cluster_with(&format!("bl2l{n}"), &EXTRA_VIPS);
    let run = leader_fault(&mut c, fault);
    eprintln!(
        "trial {n}: {fault:?} of the leader node{}: others {:?}, own {:?}",
        run.leader + 1,
        run.others,
        run.own
    );
    (run.worst_other().unwrap_or_default(), run.worst_own())
}

fn keepalived_trial(advert: f64, n: usize) -> Duration {
    let lab = Lab::new(&format!("bka{n}"));
    let a = lab.node("node1", &["10.10.100.3/24"]);
    let b = lab.node("node2", &["10.10.100.4/24"]);
    let client = lab.host("client", &["10.10.100.9/24"]);
    let vrrp = |prio| VrrpConfig {
        virtual_router_id: 51,
        priority: prio,
        advert_int: advert,
        vips: vec![format!("{VIP}/24")],
        preempt: false,
    };
    let ka = Keepalived::start(&a, &vrrp(150)).unwrap();
    let _kb = Keepalived::start(&b, &vrrp(100)).unwrap();
    lb_testkit::lab::wait_until(Duration::from_secs(30), "keepalived master", || {
        ka.holds_vips()
    });
    let duration = Duration::from_secs_f64(3.0 + advert * 5.0);
    let p = probe::l2probe(&client, VIP.parse().unwrap(), duration, PROBE_INTERVAL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    a.link_down().unwrap();
    let run = p.finish().unwrap();
    run.longest_gap_between_answers()
        .map(|g| g.duration())
        .unwrap_or(duration)
}

fn summary(name: &str, mut gaps: Vec<Duration>) {
    if gaps.is_empty() {
        println!("| {name} | – | – | 0 |");
        return;
    }
    gaps.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {name} | {:.0} ms | {:.0} ms | {} |",
        ms(gaps[gaps.len() / 2]),
        ms(*gaps.last().unwrap()),
        gaps.len()
    );
}

fn main() {
    let n = trials();
    let owner_rows = [
        ("lbd: owner's link down", Fault::LinkDown, "link"),
        ("lbd: owner SIGKILL", Fault::Kill, "kill"),
        (
            "lbd: owner SIGTERM (planned hand-over)",
            Fault::Term,
            "term",
        ),
    ];
    let leader_rows = [
        ("link down", LeaderFault::LinkDown),
        ("SIGKILL", LeaderFault::Kill),
        ("nft partition (every frame dropped)", LeaderFault::Isolate),
        ("SIGTERM (planned stop)", LeaderFault::Term),
    ];
    let only = only();
    let wanted = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut k = 0;
    for (name, fault, what) in owner_rows {
        if !wanted(what) {
            continue;
        }
        let gaps = (0..n)
            .map(|_| {
                k += 1;
                owner_trial(fault, k)
            })
            .collect();
        rows.push((name.to_string(), gaps));
    }
    if wanted("leader") {
        for (name, fault) in leader_rows {
            let (mut others, mut own) = (Vec::new(), Vec::new());
            for _ in 0..n {
                k += 1;
                let (o, m) = leader_trial(fault, k);
                others.push(o);
                own.extend(m);
            }
            rows.push((
                format!("lbd: leader's {name}: VIPs of the other nodes (worst per trial)"),
                others,
            ));
            rows.push((format!("lbd: leader's {name}: the leader's own VIPs"), own));
        }
    }
    if wanted("keepalived") {
        let (mut slow, mut fast) = (Vec::new(), Vec::new());
        for _ in 0..n {
            k += 1;
            slow.push(keepalived_trial(1.0, k));
            k += 1;
            fast.push(keepalived_trial(0.1, k));
        }
        rows.push((
            "keepalived VRRPv3 advert_int 1 s: master's link down".to_string(),
            slow,
        ));
        rows.push((
            "keepalived VRRPv3 advert_int 0.1 s: master's link down".to_string(),
            fast,
        ));
    }
    println!("| scenario (client ARP probe every 10 ms) | median gap | max gap | trials |");
    println!("|---|---|---|---|");
    for (name, gaps) in rows {
        summary(&name, gaps);
    }
}
