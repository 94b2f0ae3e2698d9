//! Stateright model checks of raft-lite, running the REAL core (`lb::cluster::core::Node`).
//!
//! 3 nodes, 3 layer-2 IPs; node i can announce IPs i and i+1 (mod 3), so every IP has a
//! holder and a successor and the leader holds one too. Time advances to the next timer of
//! any node.
//!
//! (a) `real_core_model_*`: a network that loses, duplicates and reorders (any in-flight
//!     message may be delivered, delivered-and-kept, or dropped), a crash and restart with
//!     hard state kept (promises forgotten), or a planned leave.
//! (b) `drifting_clocks_model_*`: the same with an explicit clock per node running at
//!     (1 ± ρ) × real time (every combination of fast/slow clocks is an initial state), and
//!     the lease check made at the same global time on every node's own clock.
//! (c) `leader_fault_model_*`: from a warmed cluster, the leader crashes, is cut off both ways,
//!     or leaves, at any moment while the holders renew; and (`..._in_the_middle_of_a_move`)
//!     a holder gives an IP up (link down) at any moment, before or after the leader's crash.
//!     The network is lossless with a short delay: everything in flight is delivered before
//!     time advances. There, also always: an IP that a live host other than the leader held at
//!     the start never goes dark (leases outlive the leader).
//!
//! Always: at most one leader per term; never two nodes with a valid lease on one IP at the
//! same global time. Sometimes (so the checks are not vacuous): a leader is elected; an IP has
//! a holder; a second leader after a failure; an IP changes hands.
//!
//! Bigger runs: `LB_MODEL_DEPTH=12 cargo test --release --test pure cluster_model:: -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lb::cluster::core::{Config, Input, Node, Output, Role};
use lb::cluster::{HardState, Member, Message, Timing};
use stateright::{Checker, Model, Property};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| Instant::now() + Duration::from_secs(3600))
}

const N: usize = 3;
const NAMES: [&str; N] = ["a", "b", "c"];
const MAX_IN_FLIGHT: usize = 4;

fn ips() -> BTreeMap<IpAddr, String> {
    (0..N as u8)
        .map(|k| (ip(k), format!("default/svc-{k}")))
        .collect()
}

fn ip(k: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, k + 1))
}

/// Node i can announce IPs i and i+1 (mod N).
fn eligible(i: usize) -> BTreeSet<IpAddr> {
    [ip(i as u8), ip(((i + 1) % N) as u8)].into()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// Global time, µs.
    now: u64,
    /// Clock rate of each node in ppm (local = global × (1 + ppm/10^6)).
    ppm: [i64; N],
    nodes: Vec<Option<Node>>,
    hard: Vec<HardState>,
    net: Vec<(usize, usize, Message)>,
    /// Directed links that drop everything (a cut-off leader).
    cut: BTreeSet<(usize, usize)>,
    leaders: BTreeMap<u64, usize>,
    two_leaders: bool,
    crashes: u8,
    duplicates: u8,
    /// Leader-fault models: the leader at the start, whether it has failed, whether a holder
    /// gave an IP up, and the IPs held at the start by other hosts (host, IP).
    first_leader: Option<usize>,
    /// Global time (µs) when the warm-up ended.
    warm_at: u64,
    leader_failed: bool,
    moved: bool,
    watched: BTreeSet<(usize, IpAddr)>,
    /// (IP, host) pairs seen holding a valid lease (to see an IP change hands).
    holders_seen: BTreeSet<(IpAddr, usize)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Deliver(usize),
    DeliverKeep(usize),
    Drop(usize),
    Advance,
    /// Deliver everything in flight, in order (the fault-free network, in one step).
    Flush,
    Crash(usize),
    /// Planned leave (`Input::Shutdown`); shares the crash budget.
    Shutdown(usize),
    Restart(usize),
    /// Cut every link to and from the node.
    Isolate(usize),
    /// The node loses its link for one IP it holds (eligibility withdrawn).
    GiveUp(usize, IpAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaderFault {
    Crash,
    Isolate,
    Shutdown,
}

struct RaftModel {
    rates: Vec<[i64; N]>,
    /// Start from a warmed cluster (every IP held, the leader holding one) rather than cold.
    warm: bool,
    /// Offer per-message delivery (reordering); otherwise only `Flush` and `Drop`.
    reorder: bool,
    /// Offer `Drop` (message loss).
    lossy: bool,
    max_crashes: u8,
    max_duplicates: u8,
    max_time_us: u64,
    /// Leader-fault models: the fault comes within this long (µs) after the warm-up (a few
    /// heartbeat and renewal rounds: every phase of them), and the run ends `max_time_us`
    /// after the warm-up.
    fault_window_us: u64,
    /// Leader-fault model: the one fault offered (to the first leader only), lossless
    /// network, time advances only when nothing is in flight.
    leader_fault: Option<LeaderFault>,
    /// Also offer one `GiveUp` (an IP moving) in the leader-fault model.
    move_too: bool,
    /// The search is deep enough for a cold start to reach a holder.
    expect_holder: bool,
}

fn local(s: &State, i: usize, t: u64) -> Instant {
    base() + Duration::from_nanos((t as i128 * (1_000_000 + s.ppm[i] as i128) / 1000) as u64)
}

fn real_time_of(s: &State, i: usize, at: Instant) -> u64 {
    let ns = at.saturating_duration_since(base()).as_nanos();
    (ns * 1000).div_ceil((1_000_000 + s.ppm[i]) as u128) as u64
}

fn config(i: usize, incarnation: u64) -> Config {
    Config {
        me: NAMES[i].into(),
        members: NAMES
            .iter()
            .enumerate()
            .map(|(k, n)| Member {
                name: (*n).into(),
                addr: SocketAddr::from(([127, 0, 0, 1], 7000 + k as u16)),
            })
            .collect(),
        address: None,
        solo: false,
        witness: false,
        timing: Timing::default(),
        seed: i as u64 * 7919 + incarnation,
        incarnation,
    }
}

impl RaftModel {
    fn start(&self, s: &mut State, i: usize) {
        let now = local(s, i, s.now);
        let (node, out) =
            Node::new(config(i, s.now * 1000 + 1), s.hard[i].clone(), now).expect("valid config");
        s.nodes[i] = Some(node);
        self.apply(s, i, out);
        self.input(s, i, Input::DesiredIps(ips()));
        self.input(s, i, Input::LocalEligibility(eligible(i)));
    }

    fn input(&self, s: &mut State, i: usize, input: Input) {
        let now = local(s, i, s.now);
        let Some(node) = s.nodes[i].as_mut() else {
            return;
        };
        let out = node.step(now, input);
        self.apply(s, i, out);
    }

    fn apply(&self, s: &mut State, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Persist(h) => s.hard[i] = h,
                Output::Send { to, msg } => {
                    if let Some(j) = NAMES.iter().position(|n| *n == to)
                        && !s.cut.contains(&(i, j))
                        && (self.leader_fault.is_some() || s.net.len() < MAX_IN_FLIGHT * 2)
                    {
                        s.net.push((i, j, msg));
                    }
                }
                Output::RoleChanged { term, role, .. } => {
                    if role == Role::Leader && *s.leaders.entry(term).or_insert(i) != i {
                        s.two_leaders = true;
                    }
                }
                Output::Leases(_)
                | Output::ShutdownComplete
                | Output::ElectionStarted { .. }
                | Output::Failover { .. }
                | Output::Admitted { .. }
                | Output::Forgotten { .. }
                | Output::VotersChanged { .. }
                | Output::VoterProposal(_)
                | Output::VotersProposed { .. }
                | Output::RemoveDone { .. }
                | Output::Refused { .. } => {}
            }
        }
        s.net.sort();
        for (ip, h) in holders(s) {
            s.holders_seen.insert((ip, h));
        }
    }

    fn deliver(&self, s: &mut State, from: usize, to: usize, msg: Message) {
        if s.cut.contains(&(from, to)) {
            return;
        }
        let from = NAMES[from].to_string();
        self.input(s, to, Input::Received { from, msg });
    }
}

/// (IP, node) for every valid lease at the current global time.
fn holders(s: &State) -> Vec<(IpAddr, usize)> {
    let mut v = Vec::new();
    for i in 0..N {
        if let Some(n) = &s.nodes[i] {
            v.extend(
                n.owned_ips(local(s, i, s.now))
                    .into_iter()
                    .map(|ip| (ip, i)),
            );
        }
    }
    v
}

fn double_lease(s: &State) -> bool {
    let h = holders(s);
    let ips: BTreeSet<IpAddr> = h.iter().map(|(ip, _)| *ip).collect();
    ips.len() != h.len()
}

fn changed_hands(s: &State) -> bool {
    let ips: BTreeSet<IpAddr> = s.holders_seen.iter().map(|(ip, _)| *ip).collect();
    ips.len() < s.holders_seen.len()
}

/// An IP that a host other than the first leader held at the start is dark although that
/// host is up, not cut off and has not given the IP up.
fn watched_ip_dark(s: &State) -> bool {
    let held: BTreeSet<IpAddr> = holders(s).into_iter().map(|(ip, _)| ip).collect();
    s.watched.iter().any(|(h, ip)| {
        let intact = s.nodes[*h].as_ref().is_some_and(|n| !n.is_done())
            && !s.cut.iter().any(|(a, b)| a == h || b == h);
        intact && !held.contains(ip)
    })
}

impl Model for RaftModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.rates
            .iter()
            .map(|ppm| {
                let mut s = State {
                    now: 0,
                    ppm: *ppm,
                    nodes: vec![None; N],
                    hard: vec![HardState::default(); N],
                    net: Vec::new(),
                    cut: BTreeSet::new(),
                    leaders: BTreeMap::new(),
                    two_leaders: false,
                    crashes: 0,
                    duplicates: 0,
                    first_leader: None,
                    warm_at: 0,
                    leader_failed: false,
                    moved: false,
                    watched: BTreeSet::new(),
                    holders_seen: BTreeSet::new(),
                };
                for i in 0..N {
                    self.start(&mut s, i);
                }
                if self.warm {
                    // Fault-free until every IP is held and the leader holds one of them.
                    for _ in 0..200 {
                        let h = holders(&s);
                        let leader_holds = h.iter().any(|(_, i)| {
                            s.nodes[*i]
                                .as_ref()
                                .is_some_and(|n| n.role() == Role::Leader)
                        });
                        if h.len() == N && leader_holds && s.net.is_empty() {
                            break;
                        }
                        let a = if s.net.is_empty() {
                            Action::Advance
                        } else {
                            Action::Flush
                        };
                        s = self.next_state(&s, a).expect("warm-up step");
                    }
                    let h = holders(&s);
                    assert_eq!(h.len(), N, "warm-up: every IP held: {h:?}");
                    s.first_leader = (0..N).find(|i| {
                        s.nodes[*i]
                            .as_ref()
                            .is_some_and(|n| n.role() == Role::Leader)
                    });
                    s.watched = h
                        .iter()
                        .filter(|(_, i)| Some(*i) != s.first_leader)
                        .map(|(ip, i)| (*i, *ip))
                        .collect();
                    s.holders_seen = h.into_iter().collect();
                    s.warm_at = s.now;
                }
                s
            })
            .collect()
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if !s.net.is_empty() {
            actions.push(Action::Flush);
        }
        for k in 0..s.net.len() {
            if k > 0 && s.net[k] == s.net[k - 1] {
                continue;
            }
            if self.reorder {
                actions.push(Action::Deliver(k));
            }
            if self.lossy {
                actions.push(Action::Drop(k));
            }
            if s.duplicates < self.max_duplicates {
                actions.push(Action::DeliverKeep(k));
            }
        }
        let may_advance = if self.leader_fault.is_some() {
            s.net.is_empty()
        } else {
            s.net.len() <= MAX_IN_FLIGHT
        };
        if may_advance {
            actions.push(Action::Advance);
        }
        if let Some(fault) = self.leader_fault {
            if let Some(l) = s.first_leader
                && !s.leader_failed
                && s.now <= s.warm_at + self.fault_window_us
            {
                actions.push(match fault {
                    LeaderFault::Crash => Action::Crash(l),
                    LeaderFault::Isolate => Action::Isolate(l),
                    LeaderFault::Shutdown => Action::Shutdown(l),
                });
            }
            if self.move_too && !s.moved && s.now <= s.warm_at + self.fault_window_us {
                for (h, ip) in &s.watched {
                    actions.push(Action::GiveUp(*h, *ip));
                }
            }
            return;
        }
        for i in 0..N {
            match &s.nodes[i] {
                Some(_) if s.crashes < self.max_crashes => {
                    actions.push(Action::Crash(i));
                    actions.push(Action::Shutdown(i));
                }
                None => actions.push(Action::Restart(i)),
                _ => {}
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Deliver(k) | Action::DeliverKeep(k) => {
                let (from, to, msg) = if matches!(action, Action::Deliver(_)) {
                    s.net.remove(k)
                } else {
                    s.duplicates += 1;
                    s.net[k].clone()
                };
                self.deliver(&mut s, from, to, msg);
            }
            Action::Drop(k) => {
                s.net.remove(k);
            }
            Action::Flush => {
                for (from, to, msg) in std::mem::take(&mut s.net) {
                    self.deliver(&mut s, from, to, msg);
                }
            }
            Action::Advance => {
                let next = (0..N)
                    .filter_map(|i| {
                        s.nodes[i]
                            .as_ref()
                            .filter(|n| !n.is_done())
                            .map(|n| real_time_of(&s, i, n.next_wakeup()))
                    })
                    .min()?;
                s.now = next.max(s.now + 1);
                if s.now > s.warm_at + self.max_time_us {
                    return None;
                }
                for i in 0..N {
                    let due = s.nodes[i]
                        .as_ref()
                        .is_some_and(|n| real_time_of(&s, i, n.next_wakeup()) <= s.now);
                    if due {
                        self.input(&mut s, i, Input::Tick);
                    }
                }
            }
            Action::Crash(i) => {
                s.nodes[i] = None;
                s.crashes += 1;
                s.leader_failed = true;
            }
            Action::Shutdown(i) => {
                s.crashes += 1;
                s.leader_failed = true;
                self.input(&mut s, i, Input::Shutdown);
            }
            Action::Restart(i) => self.start(&mut s, i),
            Action::Isolate(i) => {
                s.leader_failed = true;
                for j in 0..N {
                    s.cut.insert((i, j));
                    s.cut.insert((j, i));
                }
                s.net.retain(|(from, to, _)| *from != i && *to != i);
            }
            Action::GiveUp(h, ip) => {
                s.moved = true;
                s.watched.remove(&(h, ip));
                let mut e = eligible(h);
                e.remove(&ip);
                self.input(&mut s, h, Input::LocalEligibility(e));
            }
        }
        // The leader-fault models end once the fault is long past (bounded depth anyway).
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("at most one leader per term", |_, s: &State| !s.two_leaders),
            Property::always("never two valid leases on one IP", |_, s: &State| {
                !double_lease(s)
            }),
        ];
        if self.leader_fault.is_some() {
            p.push(Property::always(
                "a leader fault darkens no IP another live host held",
                |_, s: &State| !watched_ip_dark(s),
            ));
            p.push(Property::sometimes(
                "a new leader after the fault",
                |_, s: &State| s.leader_failed && s.leaders.len() >= 2,
            ));
            p.push(Property::sometimes(
                "the failed leader's IP is held by another host",
                |_, s: &State| {
                    s.leader_failed
                        && s.first_leader.is_some_and(|l| {
                            holders(s).len() == N && holders(s).iter().all(|(_, h)| *h != l)
                        })
                },
            ));
            if self.move_too {
                p.push(Property::sometimes(
                    "an IP moves while the leadership changes",
                    |_, s: &State| s.moved && s.leader_failed && changed_hands(s),
                ));
            }
        } else if self.warm {
            p.push(Property::sometimes(
                "a second leader is elected after a failure",
                |_, s: &State| s.leaders.len() >= 2,
            ));
            p.push(Property::sometimes(
                "an IP changes hands",
                |_, s: &State| changed_hands(s),
            ));
        } else {
            p.push(Property::sometimes(
                "a leader is elected",
                |_, s: &State| !s.leaders.is_empty(),
            ));
            p.push(Property::sometimes(
                "a leader's map reaches a follower",
                |_, s: &State| {
                    s.nodes
                        .iter()
                        .flatten()
                        .any(|n| n.role() == Role::Follower && n.map_version() > (0, 0))
                },
            ));
            // Nine steps from a cold start (election, reports, map, renewal, grants): only
            // deeper runs than CI's get there.
            if self.expect_holder {
                p.push(Property::sometimes("an IP has a holder", |_, s: &State| {
                    !holders(s).is_empty()
                }));
            }
        }
        p
    }
}

fn depth(default: usize) -> usize {
    std::env::var("LB_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default)
}

fn check(name: &str, model: RaftModel, depth: usize) {
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    println!(
        "{name}: depth {depth}: {} states ({} unique), {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker.assert_properties();
}

fn lossy(rates: Vec<[i64; N]>, warm: bool, reorder: bool, dups: u8) -> RaftModel {
    RaftModel {
        rates,
        warm,
        reorder,
        lossy: true,
        max_crashes: 1,
        max_duplicates: dups,
        max_time_us: 3_000_000,
        fault_window_us: 0,
        leader_fault: None,
        move_too: false,
        expect_holder: false,
    }
}

fn leader_fault(fault: LeaderFault, move_too: bool) -> RaftModel {
    RaftModel {
        rates: vec![[0; N]],
        warm: true,
        reorder: true,
        lossy: false,
        max_crashes: 1,
        max_duplicates: 0,
        // Every phase of the 50 ms heartbeat and renewal rounds.
        fault_window_us: 120_000,
        // Long enough for a new election (promise E, then a timeout in [E, 2E), then
        // pre-vote and vote) and the new leader's map after the latest fault.
        max_time_us: 1_300_000,
        leader_fault: Some(fault),
        move_too,
        expect_holder: false,
    }
}

#[test]
fn real_core_model_cold_start_keeps_one_leader_per_term_under_loss_duplication_crash() {
    let d = depth(8);
    check(
        "cold start",
        RaftModel {
            expect_holder: d >= 10,
            ..lossy(vec![[0; N]], false, true, 1)
        },
        d,
    );
}

#[test]
fn real_core_model_failover_never_double_leases() {
    check("failover", lossy(vec![[0; N]], true, false, 0), depth(9));
}

#[test]
fn drifting_clocks_model_never_has_two_valid_leases_at_one_time() {
    const R: i64 = 20_000; // ±2 %: two clocks differ by < 25 ms over 600 ms
    let mut rates = Vec::new();
    for a in [-R, R] {
        for b in [-R, R] {
            for c in [-R, R] {
                rates.push([a, b, c]);
            }
        }
    }
    check("drifting clocks", lossy(rates, true, false, 0), depth(7));
}

#[test]
fn leader_fault_model_the_leader_crashing_while_holders_renew_darkens_no_other_ip() {
    check(
        "leader crash",
        leader_fault(LeaderFault::Crash, false),
        depth(160),
    );
}

#[test]
fn leader_fault_model_a_partition_isolating_the_leader_darkens_no_other_ip() {
    check(
        "leader isolated",
        leader_fault(LeaderFault::Isolate, false),
        depth(160),
    );
}

#[test]
fn leader_fault_model_the_leaders_planned_stop_darkens_no_other_ip() {
    // In-order delivery: the leaving leader keeps voting until its successors asked, and
    // every reordering of that traffic is more states than fit in memory (over 14 GB after 3
    // minutes). Reordering and loss around a leader's planned stop are in the simulation
    // (`the_leaders_planned_stop_darkens_no_ip_it_did_not_hold_and_is_no_failover`, and the
    // random shutdowns of the 3,200 seeded runs).
    check(
        "leader stop",
        RaftModel {
            reorder: false,
            ..leader_fault(LeaderFault::Shutdown, false)
        },
        depth(160),
    );
}

#[test]
fn leader_fault_model_a_leader_change_in_the_middle_of_a_move_never_double_leases() {
    // The move (a holder's link down) and the crash each at any step of the first 30 ms, in
    // either order; until 1.1 s (the new leader's election and map, the move's end). A whole
    // heartbeat round (50 ms) is 470,255 states, ~2 min: recorded in docs/raft-lite.md.
    check(
        "leader crash during a move",
        RaftModel {
            fault_window_us: std::env::var("LB_MODEL_FAULT_WINDOW_US")
                .ok()
                .and_then(|w| w.parse().ok())
                .unwrap_or(30_000),
            max_time_us: 1_100_000,
            ..leader_fault(LeaderFault::Crash, true)
        },
        depth(120),
    );
}
