//! raft-lite with a few voters and many members that do not vote (issue 14), on the
//! simulation harness (real core): members join the leader by themselves, hold leases from
//! the voters' majority, talk to the voters only, and leave.
//!
//! Size: `LB_SIM_VOTERS`, `LB_SIM_MEMBERS`, `LB_SIM_IPS` (default 3, 10, 30); seeds as in
//! `cluster_simulation` (`LB_SIM_SEED`, `LB_SIM_RUNS`).

use lb_testkit::cluster_sim::{env_u64, seeds};
use std::collections::BTreeSet;

use lb_testkit::cluster_sim::{Sim, SimConfig, Violation};

const MS: u64 = 1000;
const LIVENESS_BOUND: u64 = 2_000 * MS;

fn sized() -> SimConfig {
    SimConfig {
        hosts: env_u64("LB_SIM_VOTERS", 3) as usize,
        members: env_u64("LB_SIM_MEMBERS", 10) as usize,
        ips: env_u64("LB_SIM_IPS", 30) as usize,
        ..SimConfig::default()
    }
}

fn fail(log: &[String], v: Violation) -> String {
    format!("{}\nevents:\n  {}", v.0, log.join("\n  "))
}

fn voters(sim: &Sim) -> Vec<usize> {
    (0..sim.hosts.len())
        .filter(|h| sim.hosts[*h].voter)
        .collect()
}

/// The leader's member list.
fn roster(sim: &Sim) -> BTreeSet<String> {
    sim.leader()
        .and_then(|l| sim.hosts[l].node.as_ref())
        .map(|n| n.roster().into_keys().collect())
        .unwrap_or_default()
}

/// Faults on voters and members alike, members joining (started late) and leaving for good
/// mid-run; then heal: every IP held exactly once within the bound, and it stays so.
/// Checked after every event: one leader per term, never two valid leases on one IP, a
/// witness holds nothing, a host no voter ever listed holds nothing.
fn run(seed: u64, cfg: SimConfig) -> Result<u64, String> {
    let voters = cfg.hosts;
    let total = cfg.hosts + cfg.members;
    let mut sim = Sim::new(seed, cfg);
    let mut log = Vec::new();
    // A third of the members start late: they join a running cluster.
    let late: Vec<usize> = (voters..total).filter(|h| h % 3 == 0).collect();
    for h in &late {
        sim.crash(*h);
    }
    sim.run_until(1_000 * MS).map_err(|v| fail(&log, v))?;
    let mut late = late.into_iter();
    let fault_end = 4_000 * MS;
    let mut retired = 0;
    while sim.now < fault_end {
        let next = sim.now + sim.rng.range(10 * MS, 300 * MS);
        sim.run_until(next).map_err(|v| fail(&log, v))?;
        let what = sim.rng.range(0, 9);
        let f = if what == 0
            && let Some(h) = late.next()
        {
            sim.start(h).map_err(|v| fail(&log, v))?;
            format!("member {h} joins")
        } else if what == 1 && retired < 2 && total > voters + 2 {
            let h = sim.rng.range(voters as u64, total as u64 - 1) as usize;
            if sim.is_up(h) && !sim.hosts[h].retired {
                retired += 1;
                sim.retire(h).map_err(|v| fail(&log, v))?;
                format!("member {h} leaves for good")
            } else {
                "nothing".into()
            }
        } else {
            sim.random_fault().map_err(|v| fail(&log, v))?
        };
        log.push(format!("t={}ms {f}", sim.now / MS));
    }
    for h in late {
        sim.start(h).map_err(|v| fail(&log, v))?;
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
                "liveness: {}ms after healing not every IP has one owner: {owners:?}, leader {:?}",
                LIVENESS_BOUND / MS,
                sim.leader(),
            )),
        ));
    };
    sim.run_until(t + 1_000 * MS).map_err(|v| fail(&log, v))?;
    if !sim.all_owned_once() {
        return Err(fail(
            &log,
            Violation("ownership did not stay stable after healing".into()),
        ));
    }
    // Members talk to voters only: cluster traffic linear in hosts.
    for ((from, to), n) in &sim.sent {
        if !sim.hosts[*from].voter && !sim.hosts[*to].voter {
            return Err(fail(
                &log,
                Violation(format!("member {from} sent {n} datagrams to member {to}")),
            ));
        }
    }
    Ok(t - healed)
}

#[test]
fn cluster_voters_and_members_never_double_own_and_recover_after_faults() {
    let cfg = sized();
    let mut worst = 0;
    let started = std::time::Instant::now();
    for seed in seeds(150) {
        match run(seed, cfg.clone()) {
            Ok(t) => worst = worst.max(t),
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreproduce: LB_SIM_SEED={seed} cargo test --test pure cluster_members:: -- --nocapture"
            ),
        }
    }
    println!(
        "{} voters + {} members, {} IPs: worst time to full ownership after healing {}ms ({:?})",
        cfg.hosts,
        cfg.members,
        cfg.ips,
        worst / MS,
        started.elapsed()
    );
}

fn settled(seed: u64, voters: usize, members: usize, ips: usize) -> Sim {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            hosts: voters,
            members,
            ips,
            ..SimConfig::default()
        },
    );
    sim.run_until_cond(2_000 * MS, |s| {
        s.all_owned_once() && s.leader().is_some() && roster(s).len() == members
    })
    .expect("safety")
    .unwrap_or_else(|| panic!("seed {seed}: no full ownership within 2s"));
    // Placement moves IPs to the members as they report.
    sim.run_until(sim.now + 500 * MS).expect("safety");
    assert!(sim.all_owned_once(), "seed {seed}");
    sim
}

#[test]
fn cluster_members_that_join_a_running_cluster_are_admitted_and_given_ips() {
    for seed in seeds(20) {
        let mut sim = settled(seed, 3, 2, 80);
        let before = roster(&sim);
        assert_eq!(before.len(), 2, "seed {seed}: {before:?}");
        let new: Vec<usize> = (0..3).map(|_| sim.add_member(false)).collect();
        let joined_at = sim.now;
        for h in &new {
            // Not admitted yet: holds nothing (also checked after every event).
            sim.start(*h).expect("safety");
            assert!(sim.owned_by(*h).is_empty());
        }
        let t = sim
            .run_until_cond(joined_at + 2_000 * MS, |s| {
                s.all_owned_once() && new.iter().all(|h| !s.owned_by(*h).is_empty())
            })
            .expect("safety")
            .unwrap_or_else(|| panic!("seed {seed}: new members not given IPs within 2s"));
        assert!(
            t - joined_at <= 1_000 * MS,
            "seed {seed}: took {}ms",
            (t - joined_at) / MS
        );
        let names: BTreeSet<String> = new.iter().map(|h| sim.hosts[*h].name.clone()).collect();
        assert!(roster(&sim).is_superset(&names), "seed {seed}");
        // Every voter learned them (it promises only to hosts it knows).
        for v in voters(&sim) {
            let r: BTreeSet<String> = sim.hosts[v]
                .node
                .as_ref()
                .expect("up")
                .roster()
                .into_keys()
                .collect();
            assert!(r.is_superset(&names), "seed {seed}: voter {v} knows {r:?}");
        }
    }
}

#[test]
fn cluster_a_member_that_leaves_has_its_ips_moved_and_is_forgotten_a_restart_keeps_it() {
    for seed in seeds(20) {
        let mut sim = settled(seed, 3, 4, 30);
        let members: Vec<usize> = (3..7).collect();
        let leaving = *members
            .iter()
            .find(|h| !sim.owned_by(**h).is_empty())
            .expect("a member holds IPs");
        let restarting = *members.iter().find(|h| **h != leaving).expect("another");
        let name = sim.hosts[leaving].name.clone();
        let t0 = sim.now;
        sim.retire(leaving).expect("safety");
        sim.crash(restarting);
        sim.run_until(t0 + 100 * MS).expect("safety");
        sim.start(restarting).expect("safety");
        // IPs moved (held by others), the leaver forgotten after about an election timeout.
        sim.run_until_cond(t0 + 2_000 * MS, |s| {
            s.all_owned_once() && !roster(s).contains(&name)
        })
        .expect("safety")
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: leaver still listed or IPs not all held: {:?}",
                roster(&sim)
            )
        });
        sim.run_until(sim.now + 1_000 * MS).expect("safety");
        assert!(
            roster(&sim).contains(&sim.hosts[restarting].name),
            "seed {seed}: a restart keeps the member"
        );
        assert!(sim.owned_by(leaving).is_empty());
    }
}

#[test]
fn cluster_a_silent_member_loses_its_ips_at_once_and_is_forgotten_after_the_bound() {
    for seed in seeds(10) {
        let mut sim = settled(seed, 3, 3, 30);
        let victim = (3..6)
            .find(|h| !sim.owned_by(*h).is_empty())
            .expect("a member holds IPs");
        let name = sim.hosts[victim].name.clone();
        let t0 = sim.now;
        sim.crash(victim);
        sim.run_until_cond(t0 + 2_000 * MS, |s| s.all_owned_once())
            .expect("safety")
            .unwrap_or_else(|| panic!("seed {seed}: IPs of the silent member not moved in 2s"));
        assert!(roster(&sim).contains(&name), "seed {seed}: still listed");
        // 100 election timeouts of 300 ms.
        sim.run_until(t0 + 31_000 * MS).expect("safety");
        assert!(!roster(&sim).contains(&name), "seed {seed}: forgotten");
        assert!(sim.all_owned_once());
    }
}

#[test]
fn cluster_a_host_with_another_voter_list_is_refused_and_holds_nothing() {
    for seed in seeds(10) {
        let mut sim = settled(seed, 3, 1, 12);
        let rogue = sim.add_member(true);
        sim.start(rogue).expect("safety");
        sim.run_until(sim.now + 2_000 * MS).expect("safety");
        let name = sim.hosts[rogue].name.clone();
        assert!(sim.owned_by(rogue).is_empty());
        assert!(!sim.admitted.contains(&name), "seed {seed}");
        assert!(
            sim.refusals
                .iter()
                .any(|(n, r)| *n == name && *r == "voter_list_differs"),
            "seed {seed}: {:?}",
            sim.refusals
        );
    }
}

#[test]
fn cluster_member_traffic_is_linear_members_talk_to_voters_only() {
    let mut sim = settled(1, 3, 20, 40);
    sim.sent.clear();
    let t0 = sim.now;
    sim.run_until(t0 + 1_000 * MS).expect("safety");
    let beats = 1_000 / sim.cfg.timing.heartbeat.as_millis() as u64;
    for h in 3..23 {
        let out: u64 = sim
            .sent
            .iter()
            .filter(|((f, _), _)| *f == h)
            .map(|(_, n)| n)
            .sum();
        let to_members = sim
            .sent
            .iter()
            .any(|((f, t), _)| *f == h && !sim.hosts[*t].voter);
        assert!(!to_members, "member {h} sent to a member");
        // A renewal to each voter and an ack to the leader per heartbeat, and a little.
        assert!(
            out <= beats * 5,
            "member {h} sent {out} datagrams in {beats} heartbeats"
        );
    }
}
