//! Stateright model of changing the voter set (issue 14), on the REAL core.
//!
//! Voters a, b, c warmed up (IP y held by a or b, x by c; x can also be announced by d).
//! Then the operator's procedure, as `systemctl reload` would feed it: d starts configured
//! with voters {a, b, c, d} and a, b, c are reloaded with that list (a proposal each); once
//! some host has committed version 1, every host is reloaded with {a, c, d} (b leaves the
//! voters: {a, b} and {c, d} are majorities of S_0 and S_2 that share no voter, so the fence
//! between the changes is what keeps two holders apart). Faults, at any step: one message lost anywhere, and one crash (the host restarts
//! at once from its hard state, with the list its lb.toml has then). Messages are delivered a
//! round at a time in order (`Flush`); time advances to the next timer once nothing is in
//! flight.
//!
//! Always: one leader per term; never two valid leases on one IP at the same global time; no
//! host uses a voter set older than the one it made durable. Sometimes (not vacuous): version
//! 1 is committed; the new voter d grants a lease; every running host reaches version 2 with
//! d a voter and b not.
//!
//! Bigger runs: `LB_MODEL_DEPTH=60 cargo test --release --test pure cluster_model_voters:: --
//! --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lb::cluster::core::{Config, Input, Mutation, Node, Output, Role};
use lb::cluster::message::Body;
use lb::cluster::{HardState, Member, Message, Timing};
use stateright::{Checker, Model, Property};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| Instant::now() + Duration::from_secs(3600))
}

const N: usize = 4;
const D: usize = 3;
const NAMES: [&str; N] = ["a", "b", "c", "d"];

fn x() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))
}

fn y() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))
}

fn eligible(i: usize) -> BTreeSet<IpAddr> {
    match i {
        // y can move between the voters that stay and the ones that come and go.
        0 | 3 => [y()].into(),
        _ => [x(), y()].into(),
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// The voter list of lb.toml in each phase of the procedure.
fn file(phase: u8) -> Vec<usize> {
    match phase {
        0 => vec![0, 1, 2],
        1 => vec![0, 1, 2, 3],
        // b leaves: a majority of {a, b, c} ({a, b}) and one of {a, c, d} ({c, d}) can be
        // disjoint, so only the fence between the two changes keeps holders apart.
        _ => vec![0, 2, 3],
    }
}

fn voters_map(phase: u8) -> BTreeMap<String, SocketAddr> {
    file(phase)
        .into_iter()
        .map(|k| (NAMES[k].to_owned(), addr(k)))
        .collect()
}

fn config(i: usize, phase: u8, incarnation: u64) -> Config {
    Config {
        me: NAMES[i].into(),
        members: file(phase)
            .into_iter()
            .map(|k| Member {
                name: NAMES[k].into(),
                addr: addr(k),
            })
            .collect(),
        // c, once removed from the file, goes on as a member at its address.
        address: (!file(phase).contains(&i)).then(|| addr(i)),
        solo: false,
        witness: false,
        timing: Timing::default(),
        seed: i as u64 * 7919 + incarnation,
        incarnation,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    now: u64,
    nodes: Vec<Option<Node>>,
    hard: Vec<HardState>,
    net: Vec<(usize, usize, Message)>,
    leaders: BTreeMap<u64, usize>,
    two_leaders: bool,
    /// The procedure's phase: 1 (adding d), 2 (removing c).
    phase: u8,
    drops: u8,
    crashed: bool,
    /// A host used an older voter set than it had made durable.
    regressed: bool,
    d_granted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Flush,
    Drop(usize),
    Advance,
    Crash(usize),
}

struct VotersModel {
    mutation: Option<Mutation>,
    max_time_us: u64,
    max_drops: u8,
    crashes: bool,
}

fn local(t: u64) -> Instant {
    base() + Duration::from_micros(t)
}

fn version(s: &State, i: usize) -> Option<u64> {
    s.nodes[i].as_ref().map(|n| n.voter_set().0)
}

impl VotersModel {
    fn start(&self, s: &mut State, i: usize) {
        let now = local(s.now);
        let phase = if i == D { s.phase.max(1) } else { s.phase };
        let (mut node, out) =
            Node::new(config(i, phase, s.now * 1000 + 1), s.hard[i].clone(), now).expect("config");
        if let Some(m) = self.mutation {
            node.set_mutation(m, now);
        }
        s.nodes[i] = Some(node);
        self.apply(s, i, out);
        let desired: BTreeMap<IpAddr, String> =
            [(x(), "default/x".to_owned()), (y(), "default/y".to_owned())].into();
        self.input(s, i, Input::DesiredIps(desired));
        self.input(s, i, Input::LocalEligibility(eligible(i)));
    }

    fn input(&self, s: &mut State, i: usize, input: Input) {
        let now = local(s.now);
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
                    if i == D && matches!(msg.body, Body::Grant(_)) {
                        s.d_granted = true;
                    }
                    if let Some(j) = NAMES.iter().position(|n| *n == to) {
                        s.net.push((i, j, msg));
                    }
                }
                Output::RoleChanged {
                    term,
                    role: Role::Leader,
                    ..
                } => s.two_leaders |= *s.leaders.entry(term).or_insert(i) != i,
                _ => {}
            }
        }
        if let (Some(n), Some(h)) = (&s.nodes[i], &s.hard[i].voters)
            && n.voter_set().0 < h.version
        {
            s.regressed = true;
        }
        s.net.sort();
    }

    /// The operator: once version 1 is committed somewhere, every lb.toml says {a, b, d}
    /// and every host is reloaded.
    fn operate(&self, s: &mut State) {
        if s.phase == 1 && (0..N).any(|i| version(s, i).is_some_and(|v| v >= 1)) {
            s.phase = 2;
            for i in 0..N {
                self.input(s, i, Input::ProposeVoters(voters_map(2)));
            }
        }
    }
}

fn holders(s: &State) -> Vec<(IpAddr, usize)> {
    let mut v = Vec::new();
    for i in 0..N {
        if let Some(n) = &s.nodes[i] {
            v.extend(n.owned_ips(local(s.now)).into_iter().map(|ip| (ip, i)));
        }
    }
    v
}

fn double_lease(s: &State) -> bool {
    let h = holders(s);
    let ips: BTreeSet<IpAddr> = h.iter().map(|(ip, _)| *ip).collect();
    ips.len() != h.len()
}

fn done(s: &State) -> bool {
    (0..N).all(|i| s.nodes[i].as_ref().is_none_or(|n| n.voter_set().0 == 2))
        && s.nodes[D].as_ref().is_some_and(Node::is_voter)
        && s.nodes[1].as_ref().is_none_or(|n| !n.is_voter())
}

impl Model for VotersModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut s = State {
            now: 0,
            nodes: vec![None; N],
            hard: vec![HardState::default(); N],
            net: Vec::new(),
            leaders: BTreeMap::new(),
            two_leaders: false,
            phase: 0,
            drops: 0,
            crashed: false,
            regressed: false,
            d_granted: false,
        };
        for i in 0..D {
            self.start(&mut s, i);
        }
        for _ in 0..200 {
            if holders(&s).len() == 2 && s.net.is_empty() {
                break;
            }
            s = if s.net.is_empty() {
                self.next_state(&s, Action::Advance)
            } else {
                self.next_state(&s, Action::Flush)
            }
            .expect("warm-up step");
        }
        assert_eq!(holders(&s).len(), 2, "warm-up: {:?}", holders(&s));
        // The procedure starts: d with the new list, then a, b, c reloaded with it.
        s.phase = 1;
        self.start(&mut s, D);
        for i in 0..D {
            self.input(&mut s, i, Input::ProposeVoters(voters_map(1)));
        }
        s.now += 1;
        vec![s]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if !s.net.is_empty() {
            actions.push(Action::Flush);
        }
        if s.drops < self.max_drops {
            for k in 0..s.net.len() {
                if k == 0 || s.net[k] != s.net[k - 1] {
                    actions.push(Action::Drop(k));
                }
            }
        }
        if s.net.is_empty() {
            actions.push(Action::Advance);
        }
        if self.crashes && !s.crashed {
            for i in 0..N {
                actions.push(Action::Crash(i));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Flush => {
                for (from, to, msg) in std::mem::take(&mut s.net) {
                    let from = NAMES[from].to_string();
                    self.input(&mut s, to, Input::Received { from, msg });
                }
            }
            Action::Drop(k) => {
                s.net.remove(k);
                s.drops += 1;
            }
            Action::Advance => {
                let next = (0..N)
                    .filter_map(|i| {
                        s.nodes[i]
                            .as_ref()
                            .map(|n| n.next_wakeup().saturating_duration_since(base()))
                    })
                    .min()?;
                s.now = (next.as_micros() as u64).max(s.now + 1);
                if s.phase > 0 && s.now > self.max_time_us {
                    return None;
                }
                for i in 0..N {
                    let due = s.nodes[i]
                        .as_ref()
                        .is_some_and(|n| n.next_wakeup() <= local(s.now));
                    if due {
                        self.input(&mut s, i, Input::Tick);
                    }
                }
            }
            Action::Crash(i) => {
                s.crashed = true;
                s.nodes[i] = None;
                self.start(&mut s, i);
            }
        }
        if s.phase > 0 {
            self.operate(&mut s);
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one leader per term", |_, s: &State| !s.two_leaders),
            Property::always("never two valid leases on one IP", |_, s: &State| {
                !double_lease(s)
            }),
            Property::always(
                "no host falls back to an older voter set",
                |_, s: &State| !s.regressed,
            ),
            Property::sometimes("version 1 (d added) is committed", |_, s: &State| {
                (0..N).any(|i| version(s, i).is_some_and(|v| v >= 1))
            }),
            Property::sometimes("the new voter d grants a lease", |_, s: &State| s.d_granted),
            Property::sometimes("every host has version 2: d votes, b does not", |_, s| {
                done(s)
            }),
        ]
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default)
}

#[test]
fn cluster_model_voters_add_then_remove_a_voter_keeps_one_holder_per_ip() {
    let model = VotersModel {
        mutation: None,
        max_time_us: env("LB_MODEL_TIME_US", 3_000_000),
        max_drops: env("LB_MODEL_DROPS", 1) as u8,
        crashes: env("LB_MODEL_CRASH", 1) == 1,
    };
    let depth = env("LB_MODEL_DEPTH", 40) as usize;
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    println!(
        "voter change: depth {depth}: {} states ({} unique), {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker.assert_properties();
}
