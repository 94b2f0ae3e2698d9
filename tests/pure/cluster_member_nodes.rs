//! raft-lite members taken from Kubernetes Nodes (`[cluster] member_nodes`, issue 14 item
//! 3), on the simulation harness (real core): the leader admits only hosts its
//! [`MemberFilter`] lists, at exactly the listed address (a Node matching the selectors, at
//! its InternalIP and the configured port), and evicts a member the filter stops listing:
//! its IPs move at once, then it is forgotten. Safety (never two valid leases on one IP) is
//! checked after every event.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use lb_core::cluster::{Input, MemberFilter};
use lb_testkit::cluster_sim::{Sim, SimConfig};

const MS: u64 = 1000;

/// The leader's member list.
fn roster(sim: &Sim) -> BTreeSet<String> {
    sim.leader()
        .and_then(|l| sim.hosts[l].node.as_ref())
        .map(|n| n.roster().into_keys().collect())
        .unwrap_or_default()
}

/// Three voters own every IP; then every voter gets `filter` (what its Node watch says).
fn voters_with_filter(seed: u64, filter: &MemberFilter) -> Sim {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            hosts: 3,
            members: 0,
            ips: 24,
            ..SimConfig::default()
        },
    );
    sim.run_until_cond(2_000 * MS, |s| s.all_owned_once() && s.leader().is_some())
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: no full ownership within 2s"));
    for v in 0..3 {
        sim.input(v, Input::AllowedMembers(filter.clone()))
            .expect("safety");
    }
    sim
}

fn only(hosts: &[(usize, SocketAddr)]) -> MemberFilter {
    MemberFilter::Only(
        hosts
            .iter()
            .map(|(h, a)| (format!("host-{h}"), *a))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn refused(sim: &Sim, h: usize, reason: &str) -> bool {
    let name = sim.hosts[h].name.clone();
    sim.refusals.iter().any(|(n, r)| *n == name && *r == reason)
}

#[test]
fn member_nodes_admit_only_a_listed_host_at_its_listed_address() {
    for seed in 1..=10 {
        // Hosts 3, 4 and 5 will join: 3 is a Node at its address, 4 is no Node, 5 is a
        // Node whose InternalIP is not the address it joins at.
        let elsewhere = SocketAddr::from(([127, 0, 0, 9], 7951));
        let filter = only(&[(3, Sim::addr(3)), (5, elsewhere)]);
        let mut sim = voters_with_filter(seed, &filter);
        let new: Vec<usize> = (0..3).map(|_| sim.add_member(false)).collect();
        assert_eq!(new, [3, 4, 5]);
        for h in &new {
            sim.start(*h).expect("safety");
        }
        let t0 = sim.now;
        sim.run_until_cond(t0 + 2_000 * MS, |s| {
            s.all_owned_once() && !s.owned_by(3).is_empty()
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: the listed host not given IPs within 2s"));
        sim.run_until(sim.now + 500 * MS).expect("safety");
        assert_eq!(
            roster(&sim),
            BTreeSet::from(["host-3".to_owned()]),
            "seed {seed}"
        );
        assert!(
            refused(&sim, 4, "not_a_node"),
            "seed {seed}: {:?}",
            sim.refusals
        );
        assert!(
            refused(&sim, 5, "address_not_node_ip"),
            "seed {seed}: {:?}",
            sim.refusals
        );
        for h in [4, 5] {
            assert!(sim.owned_by(h).is_empty(), "seed {seed}: host {h} owns");
            assert!(!sim.admitted.contains(&sim.hosts[h].name), "seed {seed}");
        }
    }
}

#[test]
fn a_member_whose_node_goes_is_evicted_its_ips_move_at_once_and_it_is_forgotten() {
    for seed in 1..=10 {
        let filter = only(&[(3, Sim::addr(3)), (4, Sim::addr(4))]);
        let mut sim = voters_with_filter(seed, &filter);
        for _ in 0..2 {
            let h = sim.add_member(false);
            sim.start(h).expect("safety");
        }
        let t0 = sim.now;
        sim.run_until_cond(t0 + 2_000 * MS, |s| {
            s.all_owned_once() && !s.owned_by(3).is_empty() && !s.owned_by(4).is_empty()
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: members not given IPs within 2s"));
        // Node host-3 deleted (or unlabelled): every voter's watch says so.
        let t1 = sim.now;
        for v in 0..3 {
            sim.input(v, Input::AllowedMembers(only(&[(4, Sim::addr(4))])))
                .expect("safety");
        }
        // Moved as planned moves, well within one lease + drift (200 ms).
        let moved = sim
            .run_until_cond(t1 + 200 * MS, |s| {
                s.all_owned_once() && s.owned_by(3).is_empty() && !roster(s).contains("host-3")
            })
            .expect("safety")
            .unwrap_or_else(|| panic!("seed {seed}: host-3 not evicted within 200ms"));
        assert!(
            roster(&sim).contains("host-4"),
            "seed {seed}: the other stays"
        );
        // Still running, it asks to join again and is refused; it never owns again.
        sim.run_until(moved + 1_000 * MS).expect("safety");
        assert!(sim.owned_by(3).is_empty(), "seed {seed}");
        assert!(!roster(&sim).contains("host-3"), "seed {seed}");
        assert!(refused(&sim, 3, "not_a_node"), "seed {seed}");
        assert!(sim.all_owned_once(), "seed {seed}");
    }
}

#[test]
fn pending_node_list_admits_nobody_and_evicts_nobody() {
    for seed in 1..=5 {
        let mut sim = voters_with_filter(seed, &MemberFilter::Anyone);
        let h = sim.add_member(false);
        sim.start(h).expect("safety");
        sim.run_until_cond(sim.now + 2_000 * MS, |s| !s.owned_by(h).is_empty())
            .expect("safety")
            .unwrap_or_else(|| panic!("seed {seed}: not admitted without a filter"));
        // A voter restarted with member_nodes: the Nodes are not listed yet.
        for v in 0..3 {
            sim.input(v, Input::AllowedMembers(MemberFilter::Pending))
                .expect("safety");
        }
        let late = sim.add_member(false);
        sim.start(late).expect("safety");
        sim.run_until(sim.now + 1_000 * MS).expect("safety");
        assert!(
            roster(&sim).contains(&sim.hosts[h].name),
            "seed {seed}: kept"
        );
        assert!(!sim.owned_by(h).is_empty(), "seed {seed}: keeps its IPs");
        assert!(!roster(&sim).contains(&sim.hosts[late].name), "seed {seed}");
        assert!(sim.owned_by(late).is_empty(), "seed {seed}");
        assert!(sim.refusals.is_empty(), "seed {seed}: {:?}", sim.refusals);
    }
}

#[test]
fn a_member_whose_node_lists_another_address_is_evicted_and_refused_at_its_old_one() {
    for seed in 1..=5 {
        let mut sim = voters_with_filter(seed, &only(&[(3, Sim::addr(3))]));
        let h = sim.add_member(false);
        sim.start(h).expect("safety");
        sim.run_until_cond(sim.now + 2_000 * MS, |s| {
            s.all_owned_once() && !s.owned_by(h).is_empty()
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: not admitted"));
        // Its Node's InternalIP changed; the host (in the simulation) still asks at the old
        // address, so it is out until it asks at the new one.
        let moved_to = SocketAddr::from(([127, 0, 0, 33], 7946));
        for v in 0..3 {
            sim.input(v, Input::AllowedMembers(only(&[(h, moved_to)])))
                .expect("safety");
        }
        let t1 = sim.now;
        sim.run_until_cond(t1 + 200 * MS, |s| {
            s.all_owned_once() && s.owned_by(h).is_empty() && !roster(s).contains("host-3")
        })
        .expect("safety")
        .unwrap_or_else(|| panic!("seed {seed}: not evicted within 200ms"));
        sim.run_until(sim.now + 1_000 * MS).expect("safety");
        assert!(
            refused(&sim, h, "address_not_node_ip"),
            "seed {seed}: {:?}",
            sim.refusals
        );
        assert!(sim.owned_by(h).is_empty(), "seed {seed}");
    }
}
