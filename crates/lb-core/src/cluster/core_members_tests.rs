//! Members joining a leader, step by step (issue 14): what the leader does with a member's
//! reports, and `Input::RemoveMember` (`lbctl cluster remove`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::cluster::message::voters_digest;
use crate::cluster::placement::choose_owner;

const E: Duration = Duration::from_millis(300);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ips(n: u8) -> Vec<IpAddr> {
    (0..n)
        .map(|k| IpAddr::from([10, 10, 100, 200 + k]))
        .collect()
}

/// "a", the only voter (members may join), leading with `ips` desired and eligible.
fn leader(t0: Instant, ips: &[IpAddr]) -> Node {
    let cfg = Config {
        me: "a".into(),
        members: vec![Member {
            name: "a".into(),
            addr: addr(7000),
        }],
        address: None,
        solo: false,
        witness: false,
        timing: Timing::default(),
        seed: 1,
        incarnation: 1,
    };
    let (mut n, _) = Node::new(cfg, HardState::default(), t0).expect("node");
    let desired: BTreeMap<IpAddr, String> = ips.iter().map(|ip| (*ip, "svc".into())).collect();
    n.step(t0, Input::DesiredIps(desired));
    n.step(t0, Input::LocalEligibility(ips.iter().copied().collect()));
    n.step(t0, Input::Tick);
    assert_eq!(n.role(), Role::Leader);
    n
}

fn digest() -> u64 {
    voters_digest([("a", addr(7000))])
}

fn from(name: &str, term: u64, body: Body) -> Input {
    Input::Received {
        from: name.into(),
        msg: Message { term, body },
    }
}

/// The heartbeats in `out` to `to`: their sequence numbers.
fn heartbeats_to(out: &[Output], to: &str) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msg } if t == to => match &msg.body {
                Body::Heartbeat(h) => Some(h.seq),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `name` joins `n` at `now` and acks its first heartbeat with `eligible` (version `v`).
/// Returns the outputs of the ack.
fn join_and_ack(
    n: &mut Node,
    now: Instant,
    name: &str,
    port: u16,
    v: u64,
    eligible: &[IpAddr],
) -> Vec<Output> {
    let out = n.step(
        now,
        from(
            name,
            0,
            Body::Join(Join {
                addr: addr(port),
                voters: digest(),
            }),
        ),
    );
    assert!(
        out.contains(&Output::Admitted {
            name: name.into(),
            addr: addr(port),
        }),
        "{out:?}"
    );
    let hb = heartbeats_to(&out, name)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no heartbeat to {name}: {out:?}"));
    ack(n, now, name, hb, v, v, eligible)
}

fn ack(
    n: &mut Node,
    now: Instant,
    name: &str,
    heartbeat: u64,
    ack_seq: u64,
    v: u64,
    eligible: &[IpAddr],
) -> Vec<Output> {
    let term = n.term();
    n.step(
        now,
        from(
            name,
            term,
            Body::Ack(Ack {
                heartbeat,
                ack_seq,
                epoch: 0,
                eligibility_version: v,
                leaving: false,
                report: Some(Report {
                    eligibility_version: v,
                    eligible: eligible.to_vec(),
                    held: Vec::new(),
                }),
                voters: VoterAck::default(),
            }),
        ),
    )
}

fn owners(n: &Node, now: Instant) -> BTreeMap<IpAddr, String> {
    n.status(now).owners
}

#[test]
fn a_member_whose_first_report_is_empty_still_takes_the_ips_placement_gives_it() {
    let t0 = crate::test_origin();
    let all = ips(12);
    let mut n = leader(t0, &all);
    assert!(owners(&n, t0).values().all(|o| o == "a"));
    let expected: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| choose_owner(ip, None, ["a", "m"]) == Some("m"))
        .collect();
    assert!(!expected.is_empty(), "placement gives m nothing");
    // lbd joins before it has learned its Services: its first report is empty.
    let t1 = t0 + E;
    join_and_ack(&mut n, t1, "m", 7100, 1, &[]);
    n.step(t1 + Duration::from_millis(10), Input::Tick);
    assert!(owners(&n, t1).values().all(|o| o == "a"));
    // A moment later it reports them: the IPs whose placement choice it is move to it.
    let t2 = t1 + Duration::from_millis(50);
    let hb = n.lead.as_ref().expect("leads").heartbeat_seq;
    ack(&mut n, t2, "m", hb, 2, 2, &all);
    n.step(t2 + Duration::from_millis(1), Input::Tick);
    let got: Vec<IpAddr> = owners(&n, t2)
        .into_iter()
        .filter(|(_, o)| o == "m")
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(got, expected);
}

fn remove(n: &mut Node, now: Instant, name: &str) -> (Vec<Output>, Result<(), RemoveRefusal>) {
    let out = n.step(now, Input::RemoveMember(name.into()));
    let result = out
        .iter()
        .find_map(|o| match o {
            Output::RemoveDone { name: m, result } if m == name => Some(result.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer to RemoveMember({name}): {out:?}"));
    (out, result)
}

#[test]
fn the_leader_forgets_a_dead_member_at_once_when_told_and_moves_its_ips() {
    let t0 = crate::test_origin();
    let all = ips(12);
    let mut n = leader(t0, &all);
    let t1 = t0 + E;
    join_and_ack(&mut n, t1, "m", 7100, 1, &all);
    n.step(t1 + Duration::from_millis(1), Input::Tick);
    let given: Vec<IpAddr> = owners(&n, t1)
        .into_iter()
        .filter(|(_, o)| o == "m")
        .map(|(ip, _)| ip)
        .collect();
    assert!(!given.is_empty());
    // Still acking: removing it would only make it join again.
    let (_, r) = remove(&mut n, t1 + Duration::from_millis(20), "m");
    assert!(matches!(r, Err(RemoveRefusal::Alive { .. })), "{r:?}");
    assert!(n.roster().contains_key("m"));
    // Silent (a SIGKILL, a dead machine) past lease + drift: forgotten at once, long before
    // the silent-forget bound, and none of its IPs stays with it.
    let t = Timing::default();
    let dead = t1 + t.lease + t.clock_drift + Duration::from_millis(1);
    assert!(dead < t1 + E * FORGET_AFTER_ELECTION_TIMEOUTS / 10);
    let (out, r) = remove(&mut n, dead, "m");
    assert_eq!(r, Ok(()));
    assert!(
        out.contains(&Output::Forgotten { name: "m".into() }),
        "{out:?}"
    );
    assert!(!n.roster().contains_key("m"));
    assert!(n.status(dead).members.iter().all(|s| s.name != "m"));
    assert!(
        owners(&n, dead).values().all(|o| o == "a"),
        "{:?}",
        owners(&n, dead)
    );
    assert_eq!(owners(&n, dead).len(), all.len());
    // Removing it again: unknown. A later restart of the host joins afresh.
    let (_, r) = remove(&mut n, dead, "m");
    assert_eq!(r, Err(RemoveRefusal::Unknown("m".into())));
    join_and_ack(&mut n, dead + E, "m", 7100, 5, &all);
    assert!(n.roster().contains_key("m"));
}

#[test]
fn removing_a_voter_an_unknown_name_or_on_a_non_leader_is_refused_with_the_reason() {
    let t0 = crate::test_origin();
    let mut n = leader(t0, &ips(2));
    assert_eq!(
        remove(&mut n, t0, "a").1,
        Err(RemoveRefusal::Voter("a".into()))
    );
    assert_eq!(
        remove(&mut n, t0, "nosuch").1,
        Err(RemoveRefusal::Unknown("nosuch".into()))
    );
    // A follower names its leader; a host that knows none says so.
    let voters: Vec<Member> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Member {
            name: (*name).into(),
            addr: addr(7000 + i as u16),
        })
        .collect();
    let cfg = Config {
        me: "b".into(),
        members: voters,
        address: None,
        solo: false,
        witness: false,
        timing: Timing::default(),
        seed: 1,
        incarnation: 1,
    };
    let (mut b, _) = Node::new(cfg, HardState::default(), t0).expect("node");
    assert_eq!(remove(&mut b, t0, "m").1, Err(RemoveRefusal::NoLeader));
    let hb = Body::Heartbeat(Heartbeat {
        seq: 1,
        epoch: 0,
        eligibility_known: 0,
        ips: Vec::new(),
        standby: Vec::new(),
    });
    b.step(t0, from("a", 1, hb));
    assert_eq!(b.leader(), Some("a"));
    let r = remove(&mut b, t0, "m").1;
    assert_eq!(r, Err(RemoveRefusal::NotLeader("a".into())));
    assert!(r.unwrap_err().to_string().contains("on the leader, a"));
}

#[test]
fn the_first_step_after_a_member_went_silent_moves_its_ips_even_if_it_is_a_routine_ack() {
    let t0 = crate::test_origin();
    let all = ips(12);
    let mut n = leader(t0, &all);
    let t1 = t0 + E;
    join_and_ack(&mut n, t1, "m", 7100, 1, &all);
    join_and_ack(&mut n, t1, "s", 7200, 1, &all);
    n.step(t1 + Duration::from_millis(1), Input::Tick);
    assert!(owners(&n, t1).values().any(|o| o == "m"));
    // m falls silent; s acks on, routinely (no report). The first step after m counts as
    // down is one of s's acks, not the leader's wake-up for m: it still moves m's IPs.
    let t = Timing::default();
    let down = t1 + t.lease + t.clock_drift;
    let mut seq = 10;
    let mut at = t1 + Duration::from_millis(20);
    while at < down {
        ack(&mut n, at, "s", 0, seq, 1, &[]);
        seq += 1;
        at += Duration::from_millis(20);
    }
    let routine = Input::Received {
        from: "s".into(),
        msg: Message {
            term: n.term(),
            body: Body::Ack(Ack {
                heartbeat: 0,
                ack_seq: seq,
                epoch: 0,
                eligibility_version: 1,
                leaving: false,
                report: None,
                voters: VoterAck::default(),
            }),
        },
    };
    n.step(down + Duration::from_millis(1), routine);
    let o = owners(&n, down);
    assert!(o.values().all(|o| o != "m"), "{o:?}");
}
