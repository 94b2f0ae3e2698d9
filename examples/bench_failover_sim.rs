//! Failover times in the deterministic raft-lite simulation (5 hosts, default timings:
//! heartbeat 50 ms, election timeout 300 ms, drift 25 ms; one-way delay 0.1–2 ms).
//!
//! `cargo run --release --example bench_failover_sim [runs]` (default 2000).
//! Follower loss: a follower owning IPs crashes; time until each of its IPs is held (valid
//! lease) by another host. Leader loss: the leader crashes; time until a new leader exists and
//! every IP has exactly one holder.

use lb_testkit::cluster_sim::{Sim, SimConfig};

const MS: u64 = 1000;

fn follower_loss(seed: u64) -> Option<u64> {
    let mut sim = Sim::new(seed, SimConfig::default());
    let warm = 1_000 * MS + sim.rng.range(0, 50 * MS);
    sim.run_until(warm).ok()?;
    let leader = sim.leader()?;
    let victim = (0..sim.hosts.len()).find(|h| *h != leader && !sim.owned_by(*h).is_empty())?;
    let ips = sim.owned_by(victim);
    sim.crash(victim);
    let t0 = sim.now;
    let done = sim
        .run_until_cond(t0 + 5_000 * MS, |s| {
            ips.iter().all(|ip| {
                let o = s.owners(ip);
                o.len() == 1 && o[0] != victim
            })
        })
        .expect("safety holds");
    done.map(|t| t - t0)
}

fn leader_loss(seed: u64) -> Option<u64> {
    let mut sim = Sim::new(seed, SimConfig::default());
    let warm = 1_000 * MS + sim.rng.range(0, 50 * MS);
    sim.run_until(warm).ok()?;
    let leader = sim.leader()?;
    sim.crash(leader);
    let t0 = sim.now;
    let done = sim
        .run_until_cond(t0 + 5_000 * MS, |s| {
            s.leader().is_some() && s.all_owned_once()
        })
        .expect("safety holds");
    done.map(|t| t - t0)
}

fn report(name: &str, mut v: Vec<u64>, failed: usize) {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    println!(
        "{name:<14} runs {:>5}  min {:>6.1}ms  median {:>6.1}ms  p90 {:>6.1}ms  p99 {:>6.1}ms  max {:>6.1}ms  (no recovery in 5s: {failed})",
        v.len(),
        p(0.0),
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
}

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    for (name, f) in [
        ("follower loss", follower_loss as fn(u64) -> Option<u64>),
        ("leader loss", leader_loss),
    ] {
        let mut v = Vec::new();
        let mut failed = 0;
        for seed in 1..=runs {
            match f(seed) {
                Some(t) => v.push(t),
                None => failed += 1,
            }
        }
        report(name, v, failed);
    }
}
