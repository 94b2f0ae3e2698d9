//! Benchmark: the client's ARP-answer gap for a layer-2 VIP when its owner fails, lbd (3 nodes,
//! raft-lite, default timings) beside keepalived (VRRPv3, advert_int 1 s and 0.1 s) in the
//! same namespace lab. The client probes every 10 ms. The leader owns no IP while another host
//! can answer, so the owner is a follower; the leader's own failures are measured too.
//!
//! Run as root:  cargo build --release --bin lbd && cargo run --release --example bench_l2_failover [-- --trials N] [--only link|kill|term|leader|keepalived]

use std::time::Duration;

use lb_testkit::l2cluster::{PROBE_INTERVAL, VIP, check_failover, start_cluster};
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// The host answering for the VIP (a follower: the leader owns no IP while another host
    /// can answer).
    Owner,
    /// The raft-lite leader (which does not own the VIP).
    Leader,
}

/// The node whose lbd most recently logged "became leader" (tracing's RFC 3339 timestamp
/// starts each line, so the text order is time order).
fn leader_of(c: &lb_testkit::l2cluster::Cluster) -> Option<usize> {
    (0..c.lbds.len())
        .filter_map(|i| {
            let log = c.lbds[i].as_ref()?.log();
            let line = log.lines().rev().find(|l| l.contains("became leader"))?;
            Some((line.split_whitespace().next()?.to_string(), i))
        })
        .max()
        .map(|(_, i)| i)
}

/// One lbd trial: the client's gap when `target` suffers `fault`.
fn lbd_trial(fault: Fault, target: Target, n: usize) -> Duration {
    let mut c = start_cluster(&format!("bl2{n}"));
    let (p, owner) = c.probe_until_owned(Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(500));
    let leader = leader_of(&c).expect("a raft-lite leader");
    assert_ne!(leader, owner, "the leader owns the VIP\n{}", c.logs());
    let victim = match target {
        Target::Owner => owner,
        Target::Leader => leader,
    };
    match fault {
        Fault::LinkDown => c.nodes[victim].link_down().unwrap(),
        Fault::Kill => c.lbds[victim].as_ref().unwrap().kill(Signal::Kill),
        Fault::Term => c.lbds[victim].as_ref().unwrap().kill(Signal::Term),
    }
    let run = p.finish().unwrap();
    let gap = match target {
        Target::Owner => check_failover(&c, &run, owner).0,
        Target::Leader => {
            // The owner keeps the IP (or another follower takes it): one MAC at a time,
            // and the gap until a new leader renewed or re-granted it.
            assert_eq!(
                run.split_brain(PROBE_INTERVAL),
                None,
                "two MACs answered at once\n{}",
                c.logs()
            );
            run.longest_gap_between_answers()
                .map(|g| g.duration())
                .unwrap_or_default()
        }
    };
    c.lbds[victim] = None;
    gap
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
    let lbd_rows = [
        (
            "lbd: owner's link down",
            Fault::LinkDown,
            Target::Owner,
            "link",
        ),
        ("lbd: owner SIGKILL", Fault::Kill, Target::Owner, "kill"),
        (
            "lbd: owner SIGTERM (planned hand-over)",
            Fault::Term,
            Target::Owner,
            "term",
        ),
        (
            "lbd: leader's link down (owner a follower)",
            Fault::LinkDown,
            Target::Leader,
            "leader",
        ),
        (
            "lbd: leader SIGKILL (owner a follower)",
            Fault::Kill,
            Target::Leader,
            "leader",
        ),
        (
            "lbd: leader SIGTERM (owner a follower)",
            Fault::Term,
            Target::Leader,
            "leader",
        ),
    ];
    let only = only();
    let wanted = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut k = 0;
    for (name, fault, target, what) in lbd_rows {
        if !wanted(what) {
            continue;
        }
        let gaps = (0..n)
            .map(|_| {
                k += 1;
                lbd_trial(fault, target, k)
            })
            .collect();
        rows.push((name, gaps));
    }
    if wanted("keepalived") {
        let (mut slow, mut fast) = (Vec::new(), Vec::new());
        for _ in 0..n {
            k += 1;
            slow.push(keepalived_trial(1.0, k));
            k += 1;
            fast.push(keepalived_trial(0.1, k));
        }
        rows.push(("keepalived VRRPv3 advert_int 1 s: master's link down", slow));
        rows.push((
            "keepalived VRRPv3 advert_int 0.1 s: master's link down",
            fast,
        ));
    }
    println!("| scenario (client ARP probe every 10 ms) | median gap | max gap | trials |");
    println!("|---|---|---|---|");
    for (name, gaps) in rows {
        summary(name, gaps);
    }
}
