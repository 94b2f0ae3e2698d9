//! Stateright model of a member joining and leaving (issue 14), on the REAL core.
//!
//! Voters a, b, c and a member m that does not vote (configured with the voters and its own
//! address). IP x can be announced by c and m, and m is its placement choice; IP y by a and b.
//! From a warmed cluster of the three voters (x held by c, y by a or b, m not started), m
//! starts at any moment (it asks to join; the leader admits it, lists it to the voters and
//! moves x to it), and later leaves (planned stop) or crashes at any moment. Messages are
//! delivered a round at a time in order (`Flush`; `LB_MODEL_REORDER=1` also any one message
//! at a time, reordering) or lost (`Drop`, budgeted); time advances to the next timer once
//! nothing is in flight.
//!
//! With `remove`, the operator also runs `lbctl cluster remove m` (`Input::RemoveMember` at
//! every voter; only the leader acts, and only once m is silent) at any moment after m
//! started: alive, crashed, or cut off by dropped messages.
//!
//! Always: one leader per term; never two valid leases on one IP at the same global time; m
//! holds nothing before some voter lists it as admitted. Sometimes: m is admitted; m holds x;
//! after m left, c holds x again.
//!
//! Bigger runs: `LB_MODEL_DEPTH=40 LB_MODEL_WINDOW_US=200000 cargo test --release --test pure
//! cluster_model_members:: -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lb::cluster::core::{Config, Input, Node, Output, Role};
use lb::cluster::placement::choose_owner;
use lb::cluster::{HardState, Member, Message, Timing};
use stateright::{Checker, Model, Property};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| Instant::now() + Duration::from_secs(3600))
}

const N: usize = 4;
const VOTERS: usize = 3;
const M: usize = 3;
const C: usize = 2;
const NAMES: [&str; N] = ["a", "b", "c", "m"];

/// An IP whose placement choice between c and m is m (so m's admission moves it).
fn x() -> IpAddr {
    static X: OnceLock<IpAddr> = OnceLock::new();
    *X.get_or_init(|| {
        (1..=250u8)
            .map(|k| IpAddr::V4(Ipv4Addr::new(10, 0, 1, k)))
            .find(|ip| choose_owner(ip, None, ["c", "m"]) == Some("m"))
            .expect("some IP prefers m")
    })
}

fn y() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))
}

fn eligible(i: usize) -> BTreeSet<IpAddr> {
    match i {
        0 | 1 => [y()].into(),
        _ => [x()].into(),
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn config(i: usize, incarnation: u64) -> Config {
    Config {
        me: NAMES[i].into(),
        members: (0..VOTERS)
            .map(|k| Member {
                name: NAMES[k].into(),
                addr: addr(k),
            })
            .collect(),
        address: (i >= VOTERS).then(|| addr(i)),
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
    warm_at: u64,
    joined: bool,
    left: bool,
    drops: u8,
    /// Some voter listed m as admitted (ever).
    admitted: bool,
    m_held_x: bool,
    x_back_at_c: bool,
    /// `lbctl cluster remove m` was run / the leader did it.
    remove_tried: bool,
    removed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Deliver(usize),
    /// Deliver everything in flight, in order (one network round).
    Flush,
    Drop(usize),
    Advance,
    Join,
    Leave,
    Crash,
    /// `lbctl cluster remove m`, run at every voter (the leader acts, the others refuse).
    Remove,
}

struct MembersModel {
    /// m joins within this long after the warm-up; it may leave any time after.
    window_us: u64,
    max_time_us: u64,
    max_drops: u8,
    /// Offer per-message delivery (reordering) besides `Flush`.
    reorder: bool,
    /// Offer [`Action::Remove`].
    remove: bool,
}

impl MembersModel {
    fn start(&self, s: &mut State, i: usize) {
        let now = local(s.now);
        let (node, out) =
            Node::new(config(i, s.now * 1000 + 1), s.hard[i].clone(), now).expect("config");
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
        if i < VOTERS && node.roster().contains_key("m") {
            s.admitted = true;
        }
        self.apply(s, i, out);
    }

    fn apply(&self, s: &mut State, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Persist(h) => s.hard[i] = h,
                Output::Send { to, msg } => {
                    if let Some(j) = NAMES.iter().position(|n| *n == to) {
                        s.net.push((i, j, msg));
                    }
                }
                Output::RoleChanged {
                    term,
                    role: Role::Leader,
                    ..
                } => s.two_leaders |= *s.leaders.entry(term).or_insert(i) != i,
                Output::RemoveDone { result: Ok(()), .. } => {
                    s.removed = true;
                    s.left = true;
                }
                _ => {}
            }
        }
        s.net.sort();
        let h = holders(s);
        if h.contains(&(x(), M)) {
            s.m_held_x = true;
        }
        if s.left && s.m_held_x && h.contains(&(x(), C)) {
            s.x_back_at_c = true;
        }
    }
}

/// One clock for all: the drifting-clock models cover rates; this one covers membership.
fn local(t: u64) -> Instant {
    base() + Duration::from_micros(t)
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

impl Model for MembersModel {
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
            warm_at: 0,
            joined: false,
            left: false,
            drops: 0,
            admitted: false,
            m_held_x: false,
            x_back_at_c: false,
            remove_tried: false,
            removed: false,
        };
        for i in 0..VOTERS {
            self.start(&mut s, i);
        }
        // Fault-free warm-up of the voters: x held by c, y by a or b.
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
        assert!(
            holders(&s).contains(&(x(), C)),
            "warm-up: {:?}",
            holders(&s)
        );
        s.warm_at = s.now;
        vec![s]
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
            if s.drops < self.max_drops {
                actions.push(Action::Drop(k));
            }
        }
        // Time moves on once the network is quiet (delays shorter than any timer).
        if s.net.is_empty() {
            actions.push(Action::Advance);
        }
        if !s.joined && s.now <= s.warm_at + self.window_us {
            actions.push(Action::Join);
        }
        if s.joined && !s.left && s.m_held_x {
            actions.push(Action::Leave);
            actions.push(Action::Crash);
        }
        if self.remove && s.joined && !s.remove_tried {
            actions.push(Action::Remove);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Deliver(k) => {
                let (from, to, msg) = s.net.remove(k);
                let from = NAMES[from].to_string();
                self.input(&mut s, to, Input::Received { from, msg });
            }
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
                            .filter(|n| !n.is_done())
                            .map(|n| n.next_wakeup().saturating_duration_since(base()))
                    })
                    .min()?;
                s.now = (next.as_micros() as u64).max(s.now + 1);
                if s.warm_at > 0 && s.now > s.warm_at + self.max_time_us {
                    return None;
                }
                for i in 0..N {
                    let due = s.nodes[i]
                        .as_ref()
                        .is_some_and(|n| !n.is_done() && n.next_wakeup() <= local(s.now));
                    if due {
                        self.input(&mut s, i, Input::Tick);
                    }
                }
            }
            Action::Join => {
                s.joined = true;
                self.start(&mut s, M);
            }
            Action::Leave => {
                s.left = true;
                self.input(&mut s, M, Input::Shutdown);
            }
            Action::Crash => {
                s.left = true;
                s.nodes[M] = None;
                s.net.retain(|(_, to, _)| *to != M);
            }
            Action::Remove => {
                // Tried once; a refusal (m alive, no leader yet) may be retried later.
                for i in 0..VOTERS {
                    self.input(&mut s, i, Input::RemoveMember("m".into()));
                }
                s.remove_tried = s.removed;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one leader per term", |_, s: &State| !s.two_leaders),
            Property::always("never two valid leases on one IP", |_, s: &State| {
                !double_lease(s)
            }),
            Property::always("a host not admitted holds nothing", |_, s: &State| {
                s.admitted || !holders(s).iter().any(|(_, h)| *h == M)
            }),
            Property::sometimes("the member is admitted", |_, s: &State| s.admitted),
            Property::sometimes("the member holds its IP", |_, s: &State| s.m_held_x),
            Property::sometimes("after the member left, c holds x again", |_, s: &State| {
                s.x_back_at_c
            }),
        ]
        .into_iter()
        .chain(self.remove.then(|| {
            Property::sometimes("the leader removed the member", |_, s: &State| s.removed)
        }))
        .collect()
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default)
}

#[test]
fn cluster_model_members_join_and_leave_keep_one_holder_per_ip() {
    let model = MembersModel {
        window_us: env("LB_MODEL_WINDOW_US", 60_000),
        max_time_us: 2_000_000,
        max_drops: env("LB_MODEL_DROPS", 1) as u8,
        reorder: env("LB_MODEL_REORDER", 0) == 1,
        remove: false,
    };
    let depth = env("LB_MODEL_DEPTH", 40) as usize;
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    println!(
        "members join/leave: depth {depth}: {} states ({} unique), {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker.assert_properties();
}

#[test]
fn cluster_model_members_removing_the_member_at_any_moment_keeps_one_holder_per_ip() {
    let model = MembersModel {
        window_us: env("LB_MODEL_WINDOW_US", 60_000),
        max_time_us: 2_000_000,
        max_drops: env("LB_MODEL_DROPS", 1) as u8,
        reorder: env("LB_MODEL_REORDER", 0) == 1,
        remove: true,
    };
    let depth = env("LB_MODEL_DEPTH", 40) as usize;
    let started = Instant::now();
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    println!(
        "members join/remove: depth {depth}: {} states ({} unique), {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker.assert_properties();
}
