//! Members joining a leader, step by step (issue 14): what the leader does with a member's
//! reports, and `Input::RemoveMember` (`lbctl cluster remove`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
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
            }),
        ),
    )
}

fn owners(n: &Node, now: Instant) -> BTreeMap<IpAddr, String> {
    n.status(now).owners
}

#[test]
fn a_member_whose_first_report_is_empty_still_takes_the_ips_placement_gives_it() {
    let t0 = Instant::now();
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
