//! A running cluster of real lbd hosts grows and shrinks without a restart (issue 14, "Done
//! when"): three voters serve twelve layer-2 VIPs while a client ARP-probes every VIP every
//! 10 ms; a fourth and a fifth host join as members (lbd started with the voters' addresses
//! and an `address` of their own), are admitted and take the IPs placement gives them; then
//! the fourth stops for good (SIGTERM, as `systemctl disable --now` does) and its IPs move on.
//! Nothing restarts, no VIP ever answers with two MACs, the VIPs that do not move never stop
//! answering, and `lbctl cluster` on a voter and on a member shows the joined hosts.
//!
//! `lbctl cluster remove NAME` forgets a dead member at once (the leader moves its IPs) and
//! refuses voters, unknown names, live members, and any host but the leader.

use std::collections::BTreeMap;
use std::time::Duration;

use lb::cluster::placement::choose_owner;
use lb_testkit::grow::{GrowLab, PROBE_INTERVAL, T, epoch_secs, name, wait_for_owners};
use lb_testkit::lab::probe::{self, ProbeRun};
use lb_testkit::lab::{Signal, try_wait_until, wait_until};

/// A VIP whose owner does not change must never go unanswered longer than this (the probe
/// asks every 10 ms; generous for a loaded 2-core machine).
const STEADY_GAP: Duration = Duration::from_millis(150);
/// A VIP that moves (planned: released by its holder, then granted to the new one) is
/// answered again within this.
const MOVE_GAP: Duration = Duration::from_secs(1);
const N_VIPS: usize = 12;

/// The owners placement gives when the hosts `present` are candidates and `joined` just
/// joined (it takes the IPs whose rendezvous choice it is; the others stay where they are).
fn after_join(
    before: &BTreeMap<String, usize>,
    present: &[usize],
    joined: usize,
) -> BTreeMap<String, usize> {
    let names: Vec<String> = present.iter().map(|i| name(*i)).collect();
    before
        .iter()
        .map(|(vip, owner)| {
            let top = choose_owner(
                &vip.parse().unwrap(),
                None,
                names.iter().map(String::as_str),
            );
            let o = if top == Some(name(joined).as_str()) {
                joined
            } else {
                *owner
            };
            (vip.clone(), o)
        })
        .collect()
}

/// The owners once `left` is gone: its IPs go to the placement choice among `present`.
fn after_leave(
    before: &BTreeMap<String, usize>,
    present: &[usize],
    left: usize,
) -> BTreeMap<String, usize> {
    let names: Vec<String> = present.iter().map(|i| name(*i)).collect();
    before
        .iter()
        .map(|(vip, owner)| {
            let o = if *owner == left {
                let n = choose_owner(
                    &vip.parse().unwrap(),
                    None,
                    names.iter().map(String::as_str),
                )
                .expect("a candidate");
                present[names.iter().position(|m| m == n).unwrap()]
            } else {
                *owner
            };
            (vip.clone(), o)
        })
        .collect()
}

/// Longest gap between answers for `vip` from `from` to the end of the run, counting from
/// the last answer before `from`.
fn gap_after(run: &ProbeRun, from: f64) -> Duration {
    let mut last = run
        .answers()
        .filter(|r| r.t < from)
        .map(|r| r.t)
        .fold(from, |_, t| t);
    let mut worst = 0.0f64;
    for r in run.answers().filter(|r| r.t >= from) {
        worst = worst.max(r.t - last);
        last = r.t;
    }
    worst = worst.max(run.end - last);
    Duration::from_secs_f64(worst.max(0.0))
}

/// The part of `run` from `from` to `to` (seconds since the epoch).
fn between(run: &ProbeRun, from: f64, to: f64) -> ProbeRun {
    ProbeRun {
        start: from,
        end: to,
        sent: run.sent,
        records: run
            .records
            .iter()
            .filter(|r| r.t >= from && r.t < to)
            .cloned()
            .collect(),
    }
}

/// Waits until `host`'s lbctl lists `member` as an admitted member (role "joined"), and
/// healthy when `host` leads (a follower knows the health of itself and its leader only).
fn wait_listed(g: &GrowLab, host: usize, member: usize) {
    let mut last = None;
    let ok = try_wait_until(T, "listed", || {
        last = g.hosts[host].cluster();
        last.as_ref().is_some_and(|c| {
            let leads = c.role == "leader";
            c.get(&name(member))
                .is_some_and(|m| m.role == "joined" && (m.healthy || !leads))
        })
    });
    assert!(
        ok.is_ok(),
        "lbctl cluster on {} never listed {} as a joined member: {last:?}\n{}",
        name(host),
        name(member),
        g.logs()
    );
}

/// Waits until `host`'s lbctl no longer lists `member`.
fn wait_unlisted(g: &GrowLab, host: usize, member: usize) {
    let mut last = None;
    let ok = try_wait_until(T, "forgotten", || {
        last = g.hosts[host].cluster();
        last.as_ref()
            .is_some_and(|c| c.get(&name(member)).is_none())
    });
    assert!(
        ok.is_ok(),
        "lbctl cluster on {} still lists {}: {last:?}\n{}",
        name(host),
        name(member),
        g.logs()
    );
}

#[test]
fn hosts_join_and_leave_a_running_lbd_cluster_without_restarts_split_brain_or_gaps() {
    let mut g = GrowLab::start("grow", 3, N_VIPS, false);
    let cap = g.client.capture("arp").unwrap();
    let p = probe::l2probe_many(
        &g.client,
        &g.targets(),
        Duration::from_secs(240),
        PROBE_INTERVAL,
    )
    .unwrap();
    let leader = g.wait_for_leader();
    // Three voters, steady: every VIP answered by one host (placement among node1..3).
    let voters = [0, 1, 2];
    let t0 = epoch_secs();
    let mut owners0 = None;
    wait_until(T, "steady owners", || {
        owners0 = lb_testkit::grow::steady_owners(&g, &p.snapshot(), t0, 30);
        owners0.is_some()
    });
    let owners0 = owners0.unwrap();
    let pids: Vec<Option<u32>> = voters.iter().map(|i| g.hosts[*i].pid()).collect();
    eprintln!("leader {}, owners {owners0:?}", name(leader));

    // A fourth host joins: admitted, listed on the leader and on another voter, and the IPs
    // whose placement choice it is move to it.
    let t_join4 = epoch_secs();
    let n4 = g.add_host();
    let owners4 = after_join(&owners0, &[0, 1, 2, n4], n4);
    assert!(
        owners4.values().any(|o| *o == n4),
        "placement gives node4 nothing: pick other VIPs"
    );
    let follower = *voters.iter().find(|i| **i != leader).unwrap();
    wait_listed(&g, leader, n4);
    wait_listed(&g, follower, n4);
    wait_for_owners(&g, &p, &owners4, t_join4, 30);
    let t_joined4 = epoch_secs();

    // A fifth.
    let n5 = g.add_host();
    let owners5 = after_join(&owners4, &[0, 1, 2, n4, n5], n5);
    assert!(
        owners5.values().any(|o| *o == n5),
        "placement gives node5 nothing: pick other VIPs"
    );
    wait_listed(&g, leader, n5);
    wait_listed(&g, follower, n5);
    wait_for_owners(&g, &p, &owners5, t_joined4, 30);
    // On a member: it follows the leader and lists itself as a joined host with the voters
    // (lbctl reads the daemon's snapshot, refreshed within a second).
    let mut on5 = None;
    let ok = try_wait_until(T, "node5 follows", || {
        on5 = g.hosts[n5].cluster();
        on5.as_ref().is_some_and(|c| {
            c.leader.as_deref() == Some(name(leader).as_str())
                && c.get("node5").is_some_and(|m| m.role == "joined")
                && voters.iter().all(|v| c.get(&name(*v)).is_some())
        })
    });
    assert!(ok.is_ok(), "lbctl cluster on node5: {on5:?}\n{}", g.logs());
    let table = g.hosts[follower].lbctl(&["cluster"]).stdout;
    assert!(
        table.contains("node4") && table.contains("node5") && table.contains("no vote"),
        "lbctl cluster on a voter:\n{table}"
    );
    let t_joined5 = epoch_secs();

    // The fourth stops for good (SIGTERM: a planned stop); its IPs move; it is forgotten.
    g.hosts[n4].signal(Signal::Term);
    let status = g.hosts[n4].lbd.as_ref().unwrap().wait_timeout(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "node4's lbd after SIGTERM: {status:?}\n{}",
        g.logs()
    );
    let owners_left = after_leave(&owners5, &[0, 1, 2, n5], n4);
    wait_for_owners(&g, &p, &owners_left, t_joined5, 30);
    wait_unlisted(&g, leader, n4);
    wait_unlisted(&g, follower, n4);

    let run = p.stop().unwrap();
    let frames = cap.stop().unwrap();

    // Nothing restarted: the voters' lbd processes are the ones started first, still running.
    for (k, i) in voters.iter().enumerate() {
        let h = &g.hosts[*i];
        assert_eq!(h.pid(), pids[k]);
        assert!(
            h.lbd.as_ref().is_some_and(|p| p.is_running()),
            "{}'s lbd exited\n{}",
            h.name,
            g.logs()
        );
        assert_eq!(
            h.lbd
                .as_ref()
                .unwrap()
                .log()
                .matches("raft-lite started")
                .count(),
            1,
            "{} started raft-lite more than once",
            h.name
        );
    }
    let phases = [&owners0, &owners4, &owners5, &owners_left];
    // Within each phase an IP moves at most once (a VIP may go back to an earlier owner in
    // a later phase: that is no split brain, so each phase is checked on its own).
    let windows = [
        (t0, t_joined4),
        (t_joined4, t_joined5),
        (t_joined5, run.end),
    ];
    for vip in &g.vips {
        let r = run.for_target(vip);
        for (from, to) in windows {
            assert_eq!(
                between(&r, from, to).split_brain(PROBE_INTERVAL),
                None,
                "two MACs answered for {vip} at once\n{}",
                g.logs()
            );
            let part: Vec<_> = frames
                .iter()
                .filter(|f| f.time >= from && f.time < to)
                .cloned()
                .collect();
            assert_eq!(
                lb_testkit::lab::capture::answer_conflict(&part, vip.parse().unwrap()),
                None,
                "the client's capture shows two MACs answering for {vip} at once"
            );
        }
        let moved = phases.windows(2).any(|w| w[0][vip] != w[1][vip]);
        let gap = gap_after(&r, t0);
        eprintln!(
            "{vip}: owners {:?}, longest gap {gap:?}",
            phases.iter().map(|o| name(o[vip])).collect::<Vec<_>>()
        );
        let bound = if moved { MOVE_GAP } else { STEADY_GAP };
        assert!(
            gap <= bound,
            "{vip} (moved: {moved}) went unanswered for {gap:?} (bound {bound:?})\n{}",
            g.logs()
        );
    }
}

#[test]
fn lbctl_cluster_remove_forgets_a_killed_member_at_once_and_refuses_voters_unknown_names_and_non_leaders()
 {
    let g = GrowLab::start("growrm", 5, N_VIPS, false);
    let p = probe::l2probe_many(
        &g.client,
        &g.targets(),
        Duration::from_secs(120),
        PROBE_INTERVAL,
    )
    .unwrap();
    let leader = g.wait_for_leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let (n4, n5) = (3, 4);
    wait_listed(&g, leader, n4);
    wait_listed(&g, leader, n5);
    let all: Vec<usize> = (0..5).collect();
    // Placement over all five (each IP's first owner follows placement).
    let names: Vec<String> = all.iter().map(|i| name(*i)).collect();
    let owners: BTreeMap<String, usize> = g
        .vips
        .iter()
        .map(|v| {
            let n =
                choose_owner(&v.parse().unwrap(), None, names.iter().map(String::as_str)).unwrap();
            (v.clone(), names.iter().position(|m| m == n).unwrap())
        })
        .collect();
    assert!(owners.values().any(|o| *o == n5), "node5 owns nothing");
    let t0 = epoch_secs();
    wait_for_owners(&g, &p, &owners, t0, 30);

    // Refusals, each with its reason and exit status.
    let voter = g.hosts[leader].lbctl(&["cluster", "remove", "node1"]);
    assert_eq!(voter.code, Some(1), "{voter:?}");
    assert!(voter.stderr.contains("is a voter"), "{voter:?}");
    let unknown = g.hosts[leader].lbctl(&["cluster", "remove", "nosuch"]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("no member named nosuch"),
        "{unknown:?}"
    );
    let alive = g.hosts[leader].lbctl(&["cluster", "remove", "node5"]);
    assert_eq!(alive.code, Some(1), "{alive:?}");
    assert!(alive.stderr.contains("node5 is alive"), "{alive:?}");
    let elsewhere = g.hosts[follower].lbctl(&["cluster", "remove", "node5"]);
    assert_eq!(elsewhere.code, Some(4), "{elsewhere:?}");
    assert!(
        elsewhere
            .stderr
            .contains(&format!("on the leader, {}", name(leader))),
        "{elsewhere:?}"
    );

    // node5 dies (SIGKILL: no planned stop). Once the leader sees it silent, `lbctl cluster
    // remove` forgets it; it disappears from lbctl at once, its IPs are answered by others,
    // all well before the silent-forget bound (100 election timeouts, 30 s).
    let t_kill = epoch_secs();
    g.hosts[n5].signal(Signal::Kill);
    let mut last = None;
    let removed = try_wait_until(T, "lbctl cluster remove node5", || {
        let r = g.hosts[leader].lbctl(&["cluster", "remove", "node5"]);
        let done = r.code == Some(0);
        if !done {
            assert!(r.stderr.contains("is alive"), "{r:?}");
        }
        last = Some(r);
        done
    });
    assert!(removed.is_ok(), "{last:?}\n{}", g.logs());
    let removed_after = epoch_secs() - t_kill;
    wait_unlisted(&g, leader, n5);
    wait_unlisted(&g, follower, n5);
    let gone_after = epoch_secs() - t_kill;
    let moved = after_leave(&owners, &[0, 1, 2, n4], n5);
    wait_for_owners(&g, &p, &moved, t_kill, 30);
    let answered_after = epoch_secs() - t_kill;
    eprintln!(
        "SIGKILL of node5: removed after {removed_after:.3} s, unlisted after {gone_after:.3} s, \
         its IPs steady elsewhere after {answered_after:.3} s"
    );
    assert!(
        gone_after < 5.0 && answered_after < 5.0,
        "removal took {gone_after:.3} s, IPs {answered_after:.3} s"
    );
    let log = g.hosts[leader].lbd.as_ref().unwrap().log();
    assert!(
        log.contains("removed member node5 (lbctl cluster remove)"),
        "{log}"
    );
    let run = p.stop().unwrap();
    for vip in &g.vips {
        let r = between(&run.for_target(vip), t0, run.end);
        assert_eq!(
            r.split_brain(PROBE_INTERVAL),
            None,
            "two MACs answered for {vip} at once\n{}",
            g.logs()
        );
        if owners[vip] != n5 {
            let gap = gap_after(&r, t0);
            assert!(gap <= STEADY_GAP, "{vip}: {gap:?}\n{}", g.logs());
        }
    }
}
