//! Deterministic simulation of 5 raft-lite hosts (real core) under loss, duplication, delay,
//! partitions (also one-way), crashes/restarts, shutdowns and clock drift.
//!
//! Reproduce one run: `LB_SIM_SEED=<seed> cargo test --test pure cluster_simulation:: -- --nocapture`.
//! More runs: `LB_SIM_RUNS=20000 cargo test --release --test pure cluster_simulation::`.

use lb_testkit::cluster_sim::{Sim, SimConfig, Violation};
use std::time::Duration;

const MS: u64 = 1000;
/// After the last fault heals, every desired IP must have exactly one owner within this.
const LIVENESS_BOUND: u64 = 2_000 * MS;

/// One run: faults for 3 s, heal, then the liveness bound. Returns the fault log on failure.
fn run(seed: u64, cfg: SimConfig) -> Result<u64, String> {
    let mut sim = Sim::new(seed, cfg);
    let mut log = Vec::new();
    let fail =
        |log: &Vec<String>, v: Violation| format!("{}\nfaults:\n  {}", v.0, log.join("\n  "));
    // Settle first: a leader and full ownership from a clean start.
    sim.run_until(1_000 * MS).map_err(|v| fail(&log, v))?;
    let fault_end = 4_000 * MS;
    while sim.now < fault_end {
        let next = sim.now + sim.rng.range(10 * MS, 300 * MS);
        sim.run_until(next).map_err(|v| fail(&log, v))?;
        let f = sim.random_fault().map_err(|v| fail(&log, v))?;
        log.push(format!("t={}ms {f}", sim.now / MS));
    }
    sim.heal().map_err(|v| fail(&log, v))?;
    log.push(format!("t={}ms heal", sim.now / MS));
    let healed = sim.now;
    let owned_at = sim
        .run_until_cond(healed + LIVENESS_BOUND, |s| {
            s.all_owned_once() && s.leader().is_some()
        })
        .map_err(|v| fail(&log, v))?;
    let Some(t) = owned_at else {
        let owners: Vec<_> = sim.ips.iter().map(|ip| (ip, sim.owners(ip))).collect();
        return Err(fail(
            &log,
            Violation(format!(
                "liveness: {}ms after healing not every IP has one owner: {owners:?}, leader {:?}\n{}",
                LIVENESS_BOUND / MS,
                sim.leader(),
                sim.describe()
            )),
        ));
    };
    // And it stays that way.
    sim.run_until(t + 1_000 * MS).map_err(|v| fail(&log, v))?;
    if !sim.all_owned_once() {
        return Err(fail(
            &log,
            Violation("ownership did not stay stable after healing".into()),
        ));
    }
    Ok(t - healed)
}

fn seeds(default_runs: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("LB_SIM_SEED") {
        return vec![s.parse().expect("LB_SIM_SEED is a u64")];
    }
    let runs = std::env::var("LB_SIM_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default_runs);
    (1..=runs).collect()
}

fn run_many(name: &str, default_runs: u64, cfg: SimConfig) {
    let mut worst = 0;
    for seed in seeds(default_runs) {
        match run(seed, cfg.clone()) {
            Ok(t) => worst = worst.max(t),
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreproduce: LB_SIM_SEED={seed} cargo test --test pure cluster_simulation::{name} -- --nocapture"
            ),
        }
    }
    println!(
        "{name}: worst time to full ownership after healing: {}ms",
        worst / MS
    );
}

#[test]
fn five_hosts_never_double_own_and_recover_after_faults() {
    run_many("five_hosts_never_double_own", 2000, SimConfig::default());
}

#[test]
fn four_hosts_and_a_witness_never_double_own_and_recover() {
    run_many(
        "four_hosts_and_a_witness",
        600,
        SimConfig {
            witnesses: 1,
            ..SimConfig::default()
        },
    );
}

#[test]
fn three_hosts_under_heavy_duplication_never_double_own() {
    run_many(
        "three_hosts_heavy_duplication",
        600,
        SimConfig {
            hosts: 3,
            duplicate: 0.3,
            loss: 0.1,
            ..SimConfig::default()
        },
    );
}

#[test]
fn clean_start_elects_one_leader_and_assigns_every_ip_quickly() {
    for seed in seeds(50) {
        let mut sim = Sim::new(seed, SimConfig::default());
        let t = sim
            .run_until_cond(2_000 * MS, |s| s.all_owned_once() && s.leader().is_some())
            .expect("safety");
        let t = t.unwrap_or_else(|| panic!("seed {seed}: no full ownership within 2s"));
        // Restarted nodes wait E before voting, then [E, 2E) before campaigning.
        assert!(t <= 1_000 * MS, "seed {seed}: took {}ms", t / MS);
        // Placement spreads: no host owns everything.
        let max = (0..5).map(|h| sim.owned_by(h).len()).max().unwrap_or(0);
        assert!(max < sim.ips.len(), "seed {seed}: one host owns all IPs");
    }
}

/// A clean start with every IP placed, then 200 ms more so every grant is acknowledged.
fn settled(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, SimConfig::default());
    sim.run_until_cond(2_000 * MS, |s| s.all_owned_once() && s.leader().is_some())
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: no full ownership within 2s"));
    sim.run_until(sim.now + 200 * MS).expect("safety");
    assert!(
        sim.failovers.is_empty(),
        "seed {seed}: a clean start is no failover: {:?}",
        sim.failovers
    );
    let leader = sim.leader().expect("a leader");
    assert!(
        sim.elections.iter().any(|(h, _)| *h == leader),
        "seed {seed}: the leader started an election"
    );
    sim
}

/// Leader-clock bound on a failover's duration: real time from the crash to the report,
/// plus the heartbeat interval and network delay before the crash, at the fastest clock.
fn failover_upper_bound(sim: &Sim, crashed_at: u64, reported_at: u64) -> Duration {
    let real = Duration::from_micros(reported_at - crashed_at)
        + sim.cfg.timing.heartbeat
        + Duration::from_micros(2 * sim.cfg.max_delay_us);
    real.mul_f64(1.0 + sim.cfg.max_ppm as f64 / 1e6)
}

#[test]
fn leader_reports_failover_of_a_crashed_followers_ips_once_each() {
    for seed in seeds(30) {
        let mut sim = settled(seed);
        let leader = sim.leader().expect("a leader");
        let victim = (0..sim.hosts.len())
            .find(|h| *h != leader && !sim.owned_by(*h).is_empty())
            .expect("a follower owns an IP");
        let lost = sim.owned_by(victim);
        let crashed_at = sim.now;
        sim.crash(victim);
        sim.run_until_cond(crashed_at + 2_000 * MS, |s| {
            lost.iter()
                .all(|ip| s.failovers.iter().any(|f| f.ip == *ip))
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: failovers not reported within 2s"));
        sim.run_until(sim.now + 200 * MS).expect("safety");
        assert_eq!(
            sim.failovers.len(),
            lost.len(),
            "seed {seed}: one report per lost IP: {:?}",
            sim.failovers
        );
        let t = sim.cfg.timing;
        for f in &sim.failovers {
            assert_eq!(f.by, leader, "seed {seed}: {f:?}");
            assert!(lost.contains(&f.ip), "seed {seed}: {f:?}");
            assert_ne!(f.to, sim.hosts[victim].name, "seed {seed}: {f:?}");
            // The owner counts as lost only once its lease bound after the last ack passed.
            assert!(f.took >= t.lease + t.clock_drift, "seed {seed}: {f:?}");
            assert!(
                f.took <= failover_upper_bound(&sim, crashed_at, f.at),
                "seed {seed}: {f:?} crashed at {crashed_at}"
            );
        }
    }
}

#[test]
fn new_leader_reports_failover_of_every_ip_after_the_leader_crashed() {
    for seed in seeds(30) {
        let mut sim = settled(seed);
        let old = sim.leader().expect("a leader");
        let elections_before = sim.elections.len();
        let crashed_at = sim.now;
        sim.crash(old);
        sim.run_until_cond(crashed_at + 3_000 * MS, |s| {
            s.failovers.len() >= s.ips.len() && s.all_owned_once()
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: failovers not reported within 3s"));
        let new = sim.leader().expect("a new leader");
        assert_ne!(new, old);
        assert!(
            sim.elections[elections_before..]
                .iter()
                .any(|(h, _)| *h == new),
            "seed {seed}: the new leader started an election: {:?}",
            sim.elections
        );
        let ips: std::collections::BTreeSet<_> = sim.failovers.iter().map(|f| f.ip).collect();
        assert_eq!(ips.len(), sim.ips.len(), "seed {seed}: {:?}", sim.failovers);
        let t = sim.cfg.timing;
        for f in &sim.failovers {
            assert_eq!(f.by, new, "seed {seed}: {f:?}");
            // No campaign before an election timeout without the leader's heartbeat.
            assert!(f.took >= t.election_timeout, "seed {seed}: {f:?}");
            assert!(
                f.took <= failover_upper_bound(&sim, crashed_at, f.at),
                "seed {seed}: {f:?} crashed at {crashed_at}"
            );
        }
    }
}

#[test]
fn planned_leader_hand_over_is_not_reported_as_failover() {
    for seed in seeds(30) {
        let mut sim = settled(seed);
        let old = sim.leader().expect("a leader");
        sim.input(old, lb::cluster::Input::Shutdown)
            .expect("safety");
        sim.run_until_cond(sim.now + 2_000 * MS, |s| {
            s.leader().is_some_and(|l| l != old) && s.all_owned_once()
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: no hand-over within 2s"));
        sim.run_until(sim.now + 300 * MS).expect("safety");
        assert!(sim.failovers.is_empty(), "seed {seed}: {:?}", sim.failovers);
    }
}
