//! Stateright model checks of raft-lite, running the REAL core (`lb::cluster::core::Node`).
//!
//! (a) `real_core_model_*`: 3 nodes, a network that loses, duplicates and reorders (any
//!     in-flight message may be delivered, delivered-and-kept, or dropped), a crash and restart
//!     with hard state kept. Time advances to the next timer of any node.
//! (b) `drifting_clocks_model_*`: the same, with an explicit clock per node running at
//!     (1 ± ρ) × real time (every combination of fast/slow clocks is an initial state), and
//!     the lease check made at the same global time on every node's own clock.
//!
//! Always: at most one leader per term; a node holding a valid lease follows its term's
//! leader; never two nodes with a valid lease on one IP at the same global time.
//! Sometimes (so the checks are not vacuous): a leader is elected; a follower holds an IP;
//! an IP changes hands between hosts.
//!
//! Bigger runs: `LB_MODEL_DEPTH=24 cargo test --release --test pure cluster_model:: -- --nocapture`.

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

/// Node i can announce IPs i and i+1 (mod N): whoever leads, some IP must go to a follower,
/// and every IP has a second host to move to.
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
    leaders: BTreeMap<u64, usize>,
    two_leaders: bool,
    crashes: u8,
    duplicates: u8,
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
}

struct RaftModel {
    rates: Vec<[i64; N]>,
    /// Start from a warmed cluster (leader elected, a follower holding an IP) rather than cold.
    warm: bool,
    /// Offer per-message delivery (reordering); otherwise only `Flush` and `Drop`.
    reorder: bool,
    max_crashes: u8,
    max_duplicates: u8,
    max_time_us: u64,
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
                        && s.net.len() < MAX_IN_FLIGHT * 2
                    {
                        s.net.push((i, j, msg));
                    }
                }
                Output::RoleChanged { term, role, .. } => {
                    if role == Role::Leader && *s.leaders.entry(term).or_insert(i) != i {
                        s.two_leaders = true;
                    }
                }
                Output::Leases { .. }
                | Output::ShutdownComplete
                | Output::ElectionStarted { .. }
                | Output::Failover { .. } => {}
            }
        }
        s.net.sort();
        for (ip, h) in holders(s) {
            s.holders_seen.insert((ip, h));
        }
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
                    leaders: BTreeMap::new(),
                    two_leaders: false,
                    crashes: 0,
                    duplicates: 0,
                    holders_seen: BTreeSet::new(),
                };
                for i in 0..N {
                    self.start(&mut s, i);
                }
                if self.warm {
                    // Fault-free until a follower holds an IP.
                    for _ in 0..40 {
                        let follower_holds = holders(&s).iter().any(|(_, i)| {
                            s.nodes[*i]
                                .as_ref()
                                .is_some_and(|n| n.role() == Role::Follower)
                        });
                        if follower_holds {
                            break;
                        }
                        let a = if s.net.is_empty() {
                            Action::Advance
                        } else {
                            Action::Flush
                        };
                        s = self.next_state(&s, a).expect("warm-up step");
                    }
                    s.holders_seen.clear();
                    for (ip, h) in holders(&s) {
                        s.holders_seen.insert((ip, h));
                    }
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
            actions.push(Action::Drop(k));
            if s.duplicates < self.max_duplicates {
                actions.push(Action::DeliverKeep(k));
            }
        }
        if s.net.len() <= MAX_IN_FLIGHT {
            actions.push(Action::Advance);
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
                let from = NAMES[from].to_string();
                self.input(&mut s, to, Input::Received { from, msg });
            }
            Action::Drop(k) => {
                s.net.remove(k);
            }
            Action::Flush => {
                for (from, to, msg) in std::mem::take(&mut s.net) {
                    let from = NAMES[from].to_string();
                    self.input(&mut s, to, Input::Received { from, msg });
                }
            }
            Action::Advance => {
                let next = (0..N)
                    .filter_map(|i| {
                        s.nodes[i]
                            .as_ref()
                            .map(|n| real_time_of(&s, i, n.next_wakeup()))
                    })
                    .min()?;
                s.now = next.max(s.now + 1);
                if s.now > self.max_time_us {
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
            }
            Action::Shutdown(i) => {
                s.crashes += 1;
                self.input(&mut s, i, Input::Shutdown);
            }
            Action::Restart(i) => self.start(&mut s, i),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("at most one leader per term", |_, s: &State| !s.two_leaders),
            Property::always("never two valid leases on one IP", |_, s: &State| {
                !double_lease(s)
            }),
            Property::always(
                "a lease holder follows its term's leader",
                |_, s: &State| {
                    holders(s).iter().all(|(_, i)| {
                        let n = s.nodes[*i].as_ref().expect("holder is up");
                        let leader = n.leader().and_then(|l| NAMES.iter().position(|x| *x == l));
                        leader.is_some() && s.leaders.get(&n.term()).copied() == leader
                    })
                },
            ),
        ];
        if self.warm {
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
            p.push(Property::sometimes("an IP has a holder", |_, s: &State| {
                !holders(s).is_empty()
            }));
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

fn check(model: RaftModel, depth: usize) {
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    println!(
        "depth {depth}: {} states ({} unique)",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
}

#[test]
fn real_core_model_cold_start_keeps_one_leader_per_term_under_loss_duplication_crash() {
    check(
        RaftModel {
            rates: vec![[0; N]],
            warm: false,
            reorder: true,
            max_crashes: 1,
            max_duplicates: 1,
            max_time_us: 3_000_000,
        },
        depth(9),
    );
}

#[test]
fn real_core_model_failover_never_double_leases() {
    check(
        RaftModel {
            rates: vec![[0; N]],
            warm: true,
            reorder: false,
            max_crashes: 1,
            max_duplicates: 0,
            max_time_us: 3_000_000,
        },
        depth(12),
    );
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
    check(
        RaftModel {
            rates,
            warm: true,
            reorder: false,
            max_crashes: 1,
            max_duplicates: 0,
            max_time_us: 3_000_000,
        },
        depth(10),
    );
}
