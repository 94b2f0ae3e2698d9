//! Benchmark: a rolling upgrade of three lbd hosts (`lb_testkit::upgrade`), one host at a time,
//! the raft-lite leader included, while a client probes six layer-2 Service IPs every 10 ms by
//! ARP, the router's FIB is sampled every 10 ms for two BGP Service IPs and a client behind the
//! router opens a TCP connection to each BGP IP every 10 ms. Prints, per restart and worst over
//! the trials: the longest ARP gap of any layer-2 IP (goal ≤ 20 ms), BGP routes leaving the
//! router's FIB (goal 0), failed TCP connections (goal 0) and Service IP changes (goal 0).
//!
//! Run as root:
//!   cargo build --bin lbd --example lb-test-apiserver --example bench_rolling_upgrade
//!   target/debug/examples/bench_rolling_upgrade [--from LBD] [--to LBD] [--trials N] \
//!     [--stop usr2|term]
//!
//! `--from`/`--to` default to this build's lbd (`scripts/prev-lbd 04e2cb8` prints the previous
//! release's). `--stop term` stops each old lbd with SIGTERM, as systemd does for an lbd
//! that predates graceful restart (da6889c and older: SIGUSR2 would kill it outright).

use std::path::PathBuf;
use std::time::Duration;

use lb_testkit::bench::{arg, ms};
use lb_testkit::lbd::lbd_binary;
use lb_testkit::upgrade::{Stop, UpgradeLab, UpgradeRun};

fn path_arg(name: &str) -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
}

fn main() {
    let from = path_arg("--from").unwrap_or_else(lbd_binary);
    let to = path_arg("--to").unwrap_or_else(lbd_binary);
    let trials = arg("--trials", 3);
    let stop = match path_arg("--stop") {
        None => Stop::Restart,
        Some(s) => Stop::parse(&s.to_string_lossy()).unwrap_or_else(|| {
            eprintln!("--stop takes usr2 or term");
            std::process::exit(2)
        }),
    };
    for (what, p) in [("--from", &from), ("--to", &to)] {
        if !p.is_file() {
            eprintln!("{what} {}: no such lbd binary", p.display());
            std::process::exit(2);
        }
    }
    println!(
        "rolling upgrade of 3 hosts: from {} to {}, each stopped with {}; {trials} trials",
        from.display(),
        to.display(),
        match stop {
            Stop::Restart => "SIGUSR2 (a stop for a restart)",
            Stop::Term => "SIGTERM (a plain stop)",
        }
    );
    let mut runs: Vec<UpgradeRun> = Vec::new();
    for n in 0..trials {
        let mut u = UpgradeLab::start(&format!("bru{n}"), &from);
        let run = u.rolling_upgrade(&to, stop);
        println!(
            "trial {}: layer-2 IPs {:?} (held by {:?}), BGP IPs {:?}",
            n + 1,
            run.l2_ips,
            run.owners.values().collect::<Vec<_>>(),
            run.bgp_ips
        );
        for r in &run.restarts {
            println!("  {}", r.line());
            for c in &r.ip_changes {
                println!("    IP change: {c}");
            }
        }
        if !run.two_macs.is_empty() {
            println!("  TWO MACS AT ONCE: {:?}", run.two_macs);
        }
        println!(
            "  FIB probe: longest time between two samples {}; ARP requests sent {}",
            ms(run.fib_longest_interval),
            run.arp_requests
        );
        runs.push(run);
    }
    let restarts: Vec<_> = runs.iter().flat_map(|r| &r.restarts).collect();
    let mut gaps: Vec<Duration> = restarts.iter().map(|r| r.worst_l2_gap()).collect();
    gaps.sort();
    let leader_gaps: Vec<Duration> = restarts
        .iter()
        .filter(|r| r.was_leader)
        .map(|r| r.worst_l2_gap())
        .collect();
    let back: Vec<f64> = restarts.iter().map(|r| r.back - r.started).collect();
    println!(
        "\nworst over {trials} trials ({} restarts, {} of the leader):",
        restarts.len(),
        leader_gaps.len()
    );
    println!(
        "  longest layer-2 gap per restart: median {}, max {} (leader's restarts: max {}); goal <= 20 ms",
        ms(gaps.get(gaps.len() / 2).copied().unwrap_or_default()),
        ms(gaps.last().copied().unwrap_or_default()),
        ms(leader_gaps.iter().max().copied().unwrap_or_default()),
    );
    let of = |moved: bool| {
        restarts
            .iter()
            .filter_map(|r| r.worst_l2_gap_of(moved))
            .max()
            .unwrap_or_default()
    };
    println!(
        "  of the IPs that moved to another host: max {}; of those that stayed (probe and machine noise): max {}",
        ms(of(true)),
        ms(of(false)),
    );
    let mut missed: Vec<u64> = restarts.iter().map(|r| r.worst_l2_missed()).collect();
    missed.sort();
    println!(
        "  most ARP rounds (every 10 ms) unanswered in a row, per restart: median {}, max {} (1 = a 20 ms gap at the probe's pace)",
        missed.get(missed.len() / 2).copied().unwrap_or_default(),
        missed.last().copied().unwrap_or_default(),
    );
    println!(
        "  BGP routes leaving the router's FIB: {} (FIB samples missing a next hop: {}); goal 0",
        runs.iter().map(UpgradeRun::routes_left).sum::<usize>(),
        runs.iter().map(UpgradeRun::nexthop_missing).sum::<usize>(),
    );
    println!(
        "  TCP connections through the router: {} failed of {}; goal 0",
        runs.iter().map(UpgradeRun::tcp_failed).sum::<usize>(),
        runs.iter()
            .map(|r| r.tcp_ok() + r.tcp_failed())
            .sum::<usize>(),
    );
    println!(
        "  Service IP changes: {}; goal 0",
        runs.iter().map(|r| r.ip_changes().len()).sum::<usize>()
    );
    println!(
        "  layer-2 IPs answered by two MACs at once: {}",
        runs.iter().map(|r| r.two_macs.len()).sum::<usize>()
    );
    println!(
        "  new lbd start to back (in the cluster, BGP Established + End-of-RIB): max {:.2} s",
        back.iter().copied().fold(0.0, f64::max)
    );
}
