//! Benchmark: a layer-2 cluster of many real lbd hosts on one bridge (issue 14): 3 voters and
//! the rest members (`[cluster] voters` + their own `address`), ~2 static layer-2 VIPs per
//! host. Prints, per lbd: idle CPU (% of one core, from /proc/PID/stat over a settled
//! window with no client traffic), raft-lite datagrams per second in and out (nft counters on
//! UDP port 7946 in each host's namespace), RSS; then the owner-link-down failover: the
//! owner (never the raft-lite leader) of a VIP has its link set down while the client
//! ARP-probes that VIP every 10 ms; the gap until another host answers, over N trials.
//!
//! Run as root:
//!   cargo build --release --bin lbd && cargo build --example bench_cluster_scale --bin lbctl &&
//!   LB_LBD_BINARY=target/release/lbd target/debug/examples/bench_cluster_scale \
//!     [--hosts 20] [--vips 40] [--trials 10] [--settle 30]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_testkit::bench::{arg, cpu_seconds, ms, status_kib};
use lb_testkit::grow::{GrowLab, PROBE_INTERVAL, T, epoch_secs, name, steady_owners};
use lb_testkit::lab::{Host, probe, try_wait_until};

const COUNTERS: &str = "table inet lbscale {
  chain input { type filter hook input priority 0; udp dport 7946 counter; }
  chain output { type filter hook output priority 0; udp sport 7946 counter; }
}
";

/// (datagrams in, datagrams out) on UDP port 7946 so far.
fn datagrams(h: &Host) -> (u64, u64) {
    let text = h
        .stdout(&["nft", "list", "table", "inet", "lbscale"])
        .unwrap_or_default();
    let counts: Vec<u64> = text
        .split("packets ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    (
        counts.first().copied().unwrap_or(0),
        counts.get(1).copied().unwrap_or(0),
    )
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let hosts = arg("--hosts", 20);
    let n_vips = arg("--vips", 40);
    let trials = arg("--trials", 10);
    let settle = Duration::from_secs(arg("--settle", 30) as u64);
    let started = Instant::now();
    let g = GrowLab::start("bscale", hosts, n_vips, false);
    for h in &g.hosts {
        h.host.run_stdin(&["nft", "-f", "-"], COUNTERS).unwrap();
    }
    let leader = g.wait_for_leader();
    // Every member admitted (the leader lists it healthy).
    let mut last = None;
    let ok = try_wait_until(T * 2, "all admitted", || {
        last = g.hosts[leader].cluster();
        last.as_ref().is_some_and(|c| {
            (0..hosts).all(|i| c.get(&name(i)).is_some_and(|m| m.healthy || i == leader))
        })
    });
    assert!(ok.is_ok(), "not all admitted: {last:?}\n{}", g.logs());
    println!(
        "{hosts} lbd hosts (3 voters + {} members), {n_vips} layer-2 VIPs: all admitted {:.1} s after the first start; leader {}",
        hosts - 3,
        started.elapsed().as_secs_f64(),
        name(leader)
    );
    // Every VIP answered steadily (probe for a moment, then stop: the idle window has no
    // client traffic, which every host would see as broadcast ARP).
    let p = probe::l2probe_many(
        &g.client,
        &g.targets(),
        Duration::from_secs(60),
        PROBE_INTERVAL,
    )
    .unwrap();
    let t0 = epoch_secs();
    let mut owners = None;
    let ok = try_wait_until(T, "steady owners", || {
        owners = steady_owners(&g, &p.snapshot(), t0, 20);
        owners.is_some()
    });
    assert!(ok.is_ok(), "VIPs not answered steadily\n{}", g.logs());
    drop(p.stop());
    let owners = owners.unwrap();
    let mut per_host: BTreeMap<usize, usize> = BTreeMap::new();
    for o in owners.values() {
        *per_host.entry(*o).or_default() += 1;
    }
    println!(
        "VIPs per host: {:?}",
        per_host
            .iter()
            .map(|(h, n)| format!("{}={n}", name(*h)))
            .collect::<Vec<_>>()
    );

    // Idle window.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<u32> = g.hosts.iter().map(|h| h.pid().unwrap()).collect();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(&format!("/proc/{p}/stat")))
        .collect();
    let dg0: Vec<(u64, u64)> = g.hosts.iter().map(|h| datagrams(&h.host)).collect();
    let w0 = Instant::now();
    std::thread::sleep(settle);
    let secs = w0.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(&format!("/proc/{p}/stat")))
        .collect();
    let dg1: Vec<(u64, u64)> = g.hosts.iter().map(|h| datagrams(&h.host)).collect();
    println!(
        "\nidle, {secs:.0} s settled, no client traffic\nHOST     ROLE      CPU %  DGRAMS/S IN  OUT   RSS MiB"
    );
    let mut member_cpu = Vec::new();
    let mut member_dg = Vec::new();
    let mut rss = Vec::new();
    for i in 0..hosts {
        let cpu = (cpu1[i] - cpu0[i]) / secs * 100.0;
        let din = (dg1[i].0 - dg0[i].0) as f64 / secs;
        let dout = (dg1[i].1 - dg0[i].1) as f64 / secs;
        let r = status_kib(&format!("/proc/{}/status", pids[i]), "VmRSS:") as f64 / 1024.0;
        rss.push(r);
        let role = if i == leader {
            "leader"
        } else if i < 3 {
            "voter"
        } else {
            "member"
        };
        if i >= 3 {
            member_cpu.push(cpu);
            member_dg.push(din + dout);
        }
        println!(
            "{:<8} {role:<8} {cpu:>6.2}  {din:>11.1} {dout:>5.1}  {r:>7.1}",
            name(i)
        );
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let lcpu = (cpu1[leader] - cpu0[leader]) / secs * 100.0;
    let ldg = ((dg1[leader].0 - dg0[leader].0) + (dg1[leader].1 - dg0[leader].1)) as f64 / secs;
    let total: f64 = (0..hosts)
        .map(|i| (dg1[i].1 - dg0[i].1) as f64 / secs)
        .sum();
    println!(
        "members: CPU mean {:.2} % max {:.2} % of a core; datagrams/s (in+out) mean {:.1} max {:.1}",
        mean(&member_cpu),
        max(&member_cpu),
        mean(&member_dg),
        max(&member_dg)
    );
    println!("leader: CPU {lcpu:.2} % of a core; datagrams/s (in+out) {ldg:.1}");
    println!(
        "cluster: {total:.0} datagrams/s sent in all; RSS per lbd mean {:.1} MiB max {:.1} MiB",
        mean(&rss),
        max(&rss)
    );

    // Owner link down: a VIP owned by a host other than the leader, a different host each
    // trial where possible.
    let mut candidates: Vec<(String, usize)> = owners
        .iter()
        .filter(|(_, o)| **o != leader)
        .map(|(v, o)| (v.clone(), *o))
        .collect();
    candidates.sort_by_key(|(v, o)| (*o, v.clone()));
    let mut seen = std::collections::BTreeSet::new();
    candidates.retain(|(_, o)| seen.insert(*o));
    let mut gaps = Vec::new();
    println!("\nowner link down (client ARP every 10 ms):");
    for k in 0..trials {
        let (vip, owner) = candidates[k % candidates.len()].clone();
        let p = probe::l2probe(
            &g.client,
            vip.parse().unwrap(),
            Duration::from_secs(30),
            PROBE_INTERVAL,
        )
        .unwrap();
        // The owner answers steadily (it may have changed since: ask the probe).
        let mut owner_now = owner;
        let ok = try_wait_until(T, "steady", || {
            let recs = p.snapshot();
            let macs: Vec<&str> = recs
                .iter()
                .filter(|r| r.is_answer())
                .filter_map(|r| r.mac.as_deref())
                .collect();
            let tail = &macs[macs.len().saturating_sub(20)..];
            if tail.len() == 20 && tail.iter().all(|m| *m == tail[0]) {
                owner_now = g.host_of_mac(tail[0]).unwrap();
                true
            } else {
                false
            }
        });
        assert!(ok.is_ok(), "{vip} not answered steadily");
        let h = &g.hosts[owner_now].host;
        let t_down = epoch_secs();
        h.link_down().unwrap();
        let ok = try_wait_until(T, "taken over", || {
            let recs = p.snapshot();
            recs.iter()
                .filter(|r| r.is_answer() && r.t > t_down)
                .filter(|r| r.mac.as_deref() != Some(h.mac()))
                .count()
                >= 20
        });
        assert!(ok.is_ok(), "{vip} not taken over\n{}", g.logs());
        let run = p.stop().unwrap();
        assert_eq!(run.split_brain(PROBE_INTERVAL), None, "{vip}: two MACs");
        let gap = run
            .longest_gap_between_answers()
            .map(|g| g.duration())
            .unwrap_or_default();
        println!(
            "  trial {k}: {vip} owner {} link down: {}",
            name(owner_now),
            ms(gap)
        );
        gaps.push(gap);
        h.link_up().unwrap();
        // Back in the cluster before the next trial: the leader lists it healthy again.
        let back = try_wait_until(T, "back", || {
            g.hosts[leader]
                .cluster()
                .and_then(|c| c.get(&name(owner_now)).map(|m| m.healthy))
                .unwrap_or(false)
        });
        assert!(back.is_ok(), "{} not back", name(owner_now));
    }
    if gaps.is_empty() {
        return;
    }
    let worst = gaps.iter().max().copied().unwrap_or_default();
    println!(
        "owner link down -> another host answers: median {} max {} over {} trials",
        ms(median(&mut gaps)),
        ms(worst),
        trials
    );
}
