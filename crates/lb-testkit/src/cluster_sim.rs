//! Deterministic simulation of raft-lite hosts running the real core (used by
//! `tests/pure/cluster_simulation.rs` and `examples/bench_failover_sim.rs`).
//!
//! Global (real) time is in microseconds. Each host has its own clock running at
//! (1 + ppm/10^6) × real time, |ppm| ≤ `max_ppm`; with the default 20 000 ppm two hosts
//! disagree by at most 4 % of an interval, i.e. 24 ms over 2 × 300 ms: inside the 25 ms
//! `clock_drift` bound. The network loses, duplicates, delays (so reorders) and partitions
//! (also one way). Crashed hosts keep their hard state and lose everything else.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb::cluster::core::{Config, Input, Mutation, Node, Output, Role};
use lb::cluster::{HardState, Member, Message, Timing};

use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Voters (the last `witnesses` of them witnesses).
    pub hosts: usize,
    /// Hosts that do not vote (after the voters): they join the leader by themselves.
    pub members: usize,
    pub witnesses: usize,
    pub ips: usize,
    pub timing: Timing,
    pub max_ppm: i64,
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    pub loss: f64,
    pub duplicate: f64,
    /// A deliberately broken core on every host (mutation checks only).
    pub mutation: Option<Mutation>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            hosts: 5,
            members: 0,
            witnesses: 0,
            ips: 8,
            timing: Timing::default(),
            max_ppm: 20_000,
            min_delay_us: 100,
            max_delay_us: 2_000,
            loss: 0.0,
            duplicate: 0.0,
            mutation: None,
        }
    }
}

pub struct Host {
    pub name: String,
    pub node: Option<Node>,
    pub hard: HardState,
    pub ppm: i64,
    pub witness: bool,
    pub voter: bool,
    /// Configured with a voter list that is not the cluster's: must never be admitted.
    pub rogue: bool,
    /// Left for good: `heal` does not start it again.
    pub retired: bool,
    pub eligible: BTreeSet<IpAddr>,
}

#[derive(Debug)]
pub struct Violation(pub String);

pub struct Sim {
    pub cfg: SimConfig,
    pub rng: Rng,
    pub base: Instant,
    /// Real time, µs.
    pub now: u64,
    pub hosts: Vec<Host>,
    net: BinaryHeap<Reverse<InFlight>>,
    msg_seq: u64,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(usize, usize)>,
    pub leaders_by_term: BTreeMap<u64, usize>,
    pub ips: Vec<IpAddr>,
    pub desired: BTreeMap<IpAddr, String>,
    pub delivered: u64,
    pub events: u64,
    /// `Output::ElectionStarted`: (host, term).
    pub elections: Vec<(usize, u64)>,
    /// `Output::Failover`: reported by host, with the real time (µs) it was reported.
    pub failovers: Vec<FailoverReport>,
    /// Non-voters some voter has listed as admitted (ever).
    pub admitted: BTreeSet<String>,
    /// `Output::Refused` seen: (host name, reason label).
    pub refusals: Vec<(String, &'static str)>,
    roster_seen: Vec<(u64, u64)>,
    /// Datagrams sent (before loss), per (from, to).
    pub sent: BTreeMap<(usize, usize), u64>,
    /// The voters every lb.toml lists now, when a test changes them (`None`: hosts
    /// `0..cfg.hosts`); a host started or restarted is configured with this list.
    pub voter_file: Option<Vec<usize>>,
}

/// One `Output::Failover` as the simulation saw it.
#[derive(Clone, Debug)]
pub struct FailoverReport {
    pub by: usize,
    pub ip: IpAddr,
    pub to: String,
    pub took: Duration,
    pub at: u64,
}

/// (deliver at µs, sequence, from, to, message).
type InFlight = (u64, u64, usize, usize, MsgBox);

/// Messages ordered only by the (time, seq) in front of them.
#[derive(Debug)]
struct MsgBox(Message);
impl PartialEq for MsgBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for MsgBox {}
impl PartialOrd for MsgBox {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MsgBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Sim {
    pub fn new(seed: u64, cfg: SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let ips: Vec<IpAddr> = (0..cfg.ips)
            .map(|i| {
                if cfg.ips <= 50 {
                    IpAddr::V4(Ipv4Addr::new(10, 10, 100, 200 + i as u8))
                } else {
                    IpAddr::V4(Ipv4Addr::new(
                        10,
                        10,
                        100 + (i / 250) as u8,
                        (i % 250) as u8,
                    ))
                }
            })
            .collect();
        let desired = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (*ip, format!("default/svc-{i}")))
            .collect();
        let hosts: Vec<Host> = (0..cfg.hosts + cfg.members)
            .map(|i| Host {
                name: format!("host-{i}"),
                node: None,
                hard: HardState::default(),
                ppm: rng.range(0, 2 * cfg.max_ppm as u64) as i64 - cfg.max_ppm,
                witness: i < cfg.hosts && i >= cfg.hosts - cfg.witnesses,
                voter: i < cfg.hosts,
                rogue: false,
                retired: false,
                eligible: ips.iter().copied().collect(),
            })
            .collect();
        let n = hosts.len();
        let mut sim = Sim {
            cfg,
            rng,
            // Far enough from the process start that no Instant arithmetic underflows.
            base: Instant::now() + Duration::from_secs(3600),
            now: 0,
            hosts,
            net: BinaryHeap::new(),
            msg_seq: 0,
            blocked: BTreeSet::new(),
            leaders_by_term: BTreeMap::new(),
            ips,
            desired,
            delivered: 0,
            events: 0,
            elections: Vec::new(),
            failovers: Vec::new(),
            admitted: BTreeSet::new(),
            refusals: Vec::new(),
            roster_seen: vec![(0, 0); n],
            sent: BTreeMap::new(),
            voter_file: None,
        };
        for h in 0..sim.hosts.len() {
            sim.start(h).expect("start");
        }
        sim
    }

    /// Host `i`'s raft-lite address (a member joins at it).
    pub fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7946 + i as u16))
    }

    /// The voters (what every host is configured with).
    pub fn members(&self) -> Vec<Member> {
        let file: Vec<usize> = match &self.voter_file {
            Some(f) => f.clone(),
            None => (0..self.cfg.hosts).collect(),
        };
        file.into_iter()
            .map(|i| Member {
                name: self.hosts[i].name.clone(),
                addr: Self::addr(i),
            })
            .collect()
    }

    /// Adds a host that does not vote, not started yet ([`Sim::start`] makes it join).
    /// `rogue`: configured with a voter list that is not the cluster's.
    pub fn add_member(&mut self, rogue: bool) -> usize {
        let i = self.hosts.len();
        let ppm = self.rng.range(0, 2 * self.cfg.max_ppm as u64) as i64 - self.cfg.max_ppm;
        self.hosts.push(Host {
            name: format!("host-{i}"),
            node: None,
            hard: HardState::default(),
            ppm,
            witness: false,
            voter: false,
            rogue,
            retired: false,
            eligible: self.ips.iter().copied().collect(),
        });
        self.roster_seen.push((0, 0));
        i
    }

    /// Local clock of host `h` at real time `t` (µs).
    pub fn local(&self, h: usize, t: u64) -> Instant {
        let ns = (t as i128 * (1_000_000 + self.hosts[h].ppm as i128) / 1000) as u64;
        self.base + Duration::from_nanos(ns)
    }

    /// Earliest real time (µs) at which host `h`'s clock reads `at` or later.
    fn real_time_of(&self, h: usize, at: Instant) -> u64 {
        let ns = at.saturating_duration_since(self.base).as_nanos();
        let k = (1_000_000 + self.hosts[h].ppm) as u128;
        (ns * 1000).div_ceil(k) as u64
    }

    pub fn is_up(&self, h: usize) -> bool {
        self.hosts[h].node.as_ref().is_some_and(|n| !n.is_done())
    }

    pub fn start(&mut self, h: usize) -> Result<(), Violation> {
        let mut voters = self.members();
        if self.hosts[h].rogue {
            voters.push(Member {
                name: "rogue-voter".into(),
                addr: SocketAddr::from(([127, 0, 0, 2], 1)),
            });
        }
        let cfg = Config {
            me: self.hosts[h].name.clone(),
            members: voters,
            // A host its lb.toml does not list among the voters has its own address (a
            // member, or a voter a change removed).
            address: (!self.hosts[h].voter
                || self.voter_file.as_ref().is_some_and(|f| !f.contains(&h)))
            .then(|| Self::addr(h)),
            solo: self.hosts.len() == 1,
            witness: self.hosts[h].witness,
            timing: self.cfg.timing,
            seed: self.rng.next_u64(),
            // Strictly increasing across restarts, like wall-clock nanoseconds at boot.
            incarnation: self.now * 1000 + 1,
        };
        let now = self.local(h, self.now);
        let (mut node, out) =
            Node::new(cfg, self.hosts[h].hard.clone(), now).expect("valid config");
        if let Some(m) = self.cfg.mutation {
            node.set_mutation(m, now);
        }
        self.hosts[h].node = Some(node);
        self.handle(h, out)?;
        let elig = self.hosts[h].eligible.clone();
        let desired = self.desired.clone();
        self.input(h, Input::DesiredIps(desired))?;
        self.input(h, Input::LocalEligibility(elig))
    }

    pub fn crash(&mut self, h: usize) {
        self.hosts[h].node = None;
    }

    pub fn set_eligible(&mut self, h: usize, ips: BTreeSet<IpAddr>) -> Result<(), Violation> {
        self.hosts[h].eligible = ips.clone();
        if self.hosts[h].node.is_some() {
            self.input(h, Input::LocalEligibility(ips))?;
        }
        Ok(())
    }

    pub fn input(&mut self, h: usize, input: Input) -> Result<(), Violation> {
        let now = self.local(h, self.now);
        let Some(node) = self.hosts[h].node.as_mut() else {
            return Ok(());
        };
        let out = node.step(now, input);
        let version = node.is_voter().then(|| node.roster_version());
        if let Some(v) = version
            && v != self.roster_seen[h]
        {
            self.roster_seen[h] = v;
            let names: Vec<String> = node.roster().into_keys().collect();
            self.admitted.extend(names);
        }
        self.events += 1;
        self.handle(h, out)?;
        self.check_safety()
    }

    fn handle(&mut self, h: usize, out: Vec<Output>) -> Result<(), Violation> {
        for o in out {
            match o {
                Output::Persist(hs) => self.hosts[h].hard = hs,
                Output::Send { to, msg } => {
                    let Some(to) = self.hosts.iter().position(|x| x.name == to) else {
                        if self.hosts[h].rogue {
                            continue; // its made-up voter does not exist
                        }
                        return Err(Violation(format!("send to unknown {to}")));
                    };
                    self.transmit(h, to, msg);
                }
                Output::RoleChanged { term, role, .. } => {
                    if role == Role::Leader {
                        if let Some(prev) = self.leaders_by_term.get(&term)
                            && *prev != h
                        {
                            return Err(Violation(format!(
                                "two leaders in term {term}: {} and {}",
                                self.hosts[*prev].name, self.hosts[h].name
                            )));
                        }
                        self.leaders_by_term.insert(term, h);
                    }
                }
                Output::ElectionStarted { term } => self.elections.push((h, term)),
                Output::Failover { ip, to, took } => self.failovers.push(FailoverReport {
                    by: h,
                    ip,
                    to,
                    took,
                    at: self.now,
                }),
                Output::Refused { name, reason } => self.refusals.push((name, reason.label())),
                Output::Leases(_)
                | Output::ShutdownComplete
                | Output::Admitted { .. }
                | Output::Forgotten { .. }
                | Output::VotersChanged { .. }
                | Output::VoterProposal(_)
                | Output::VotersProposed { .. }
                | Output::RemoveDone { .. } => {}
            }
        }
        Ok(())
    }

    fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        *self.sent.entry((from, to)).or_default() += 1;
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.range(self.cfg.min_delay_us, self.cfg.max_delay_us);
            self.msg_seq += 1;
            self.net
                .push(Reverse((at, self.msg_seq, from, to, MsgBox(msg.clone()))));
        }
    }

    /// Real time of the next event (message or timer).
    fn next_event(&self) -> Option<u64> {
        let mut t = self.net.peek().map(|Reverse((at, ..))| *at);
        for h in 0..self.hosts.len() {
            if let Some(n) = &self.hosts[h].node
                && !n.is_done()
            {
                let w = self.real_time_of(h, n.next_wakeup()).max(self.now + 1);
                t = Some(t.map_or(w, |x| x.min(w)));
            }
        }
        t
    }

    /// Process events up to real time `until` (µs).
    pub fn run_until(&mut self, until: u64) -> Result<(), Violation> {
        self.run_until_cond(until, |_| false).map(|_| ())
    }

    /// Process events until `cond` holds (checked after every event) or `until`; returns the
    /// time `cond` first held.
    pub fn run_until_cond(
        &mut self,
        until: u64,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Result<Option<u64>, Violation> {
        loop {
            if cond(self) {
                return Ok(Some(self.now));
            }
            let Some(t) = self.next_event().filter(|t| *t <= until) else {
                self.now = self.now.max(until);
                return Ok(None);
            };
            self.now = t;
            while let Some(Reverse((at, ..))) = self.net.peek() {
                if *at > t {
                    break;
                }
                let Some(Reverse((_, _, from, to, MsgBox(msg)))) = self.net.pop() else {
                    break;
                };
                if self.hosts[to].node.is_some() {
                    self.delivered += 1;
                    let from = self.hosts[from].name.clone();
                    self.input(to, Input::Received { from, msg })?;
                }
            }
            for h in 0..self.hosts.len() {
                let due = self.hosts[h]
                    .node
                    .as_ref()
                    .is_some_and(|n| !n.is_done() && self.real_time_of(h, n.next_wakeup()) <= t);
                if due {
                    self.input(h, Input::Tick)?;
                }
            }
            if cond(self) {
                return Ok(Some(self.now));
            }
        }
    }

    /// Hosts holding a valid lease on `ip` right now.
    pub fn owners(&self, ip: &IpAddr) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|h| {
                self.hosts[*h]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.owned_ips(self.local(*h, self.now)).contains(ip))
            })
            .collect()
    }

    pub fn owned_by(&self, h: usize) -> BTreeSet<IpAddr> {
        self.hosts[h]
            .node
            .as_ref()
            .map_or_else(BTreeSet::new, |n| n.owned_ips(self.local(h, self.now)))
    }

    pub fn leader(&self) -> Option<usize> {
        (0..self.hosts.len()).find(|h| {
            self.hosts[*h]
                .node
                .as_ref()
                .is_some_and(|n| !n.is_done() && n.role() == Role::Leader)
        })
    }

    /// Every host's status, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for h in 0..self.hosts.len() {
            match &self.hosts[h].node {
                None => s.push_str(&format!("  {}: down\n", self.hosts[h].name)),
                Some(n) => s.push_str(&format!(
                    "  {}: {:?}\n",
                    self.hosts[h].name,
                    n.status(self.local(h, self.now))
                )),
            }
        }
        s
    }

    /// Planned leave for good: shutdown, and `heal` leaves it down.
    pub fn retire(&mut self, h: usize) -> Result<(), Violation> {
        self.hosts[h].retired = true;
        self.input(h, Input::Shutdown)
    }

    /// Every desired IP has exactly one owner.
    pub fn all_owned_once(&self) -> bool {
        let mut count: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for h in 0..self.hosts.len() {
            for ip in self.owned_by(h) {
                *count.entry(ip).or_default() += 1;
            }
        }
        self.ips.iter().all(|ip| count.get(ip) == Some(&1))
    }

    /// Never two valid leases for one IP at the same real time; a witness holds nothing.
    /// (A lease does not depend on the holder's leader: leases outlive leaders.)
    pub fn check_safety(&self) -> Result<(), Violation> {
        let mut holder: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for h in 0..self.hosts.len() {
            let Some(n) = &self.hosts[h].node else {
                continue;
            };
            let owned = n.owned_ips(self.local(h, self.now));
            if owned.is_empty() {
                continue;
            }
            if self.hosts[h].witness {
                return Err(Violation(format!(
                    "witness {} holds {owned:?}",
                    self.hosts[h].name
                )));
            }
            if !self.hosts[h].voter && !self.admitted.contains(&self.hosts[h].name) {
                return Err(Violation(format!(
                    "t={}us {} holds {owned:?} but no voter ever listed it as admitted",
                    self.now, self.hosts[h].name
                )));
            }
            for ip in owned {
                if let Some(other) = holder.insert(ip, h) {
                    return Err(Violation(format!(
                        "t={}us {ip} held by both {} and {}",
                        self.now, self.hosts[other].name, self.hosts[h].name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Heal every fault: links, loss, crashed hosts, eligibility.
    pub fn heal(&mut self) -> Result<(), Violation> {
        self.blocked.clear();
        self.cfg.loss = 0.0;
        self.cfg.duplicate = 0.0;
        self.cfg.max_delay_us = 2_000;
        let all: BTreeSet<IpAddr> = self.ips.iter().copied().collect();
        for h in 0..self.hosts.len() {
            if self.hosts[h].retired {
                continue;
            }
            if !self.is_up(h) {
                self.start(h)?;
            }
            if self.hosts[h].eligible != all {
                self.set_eligible(h, all.clone())?;
            }
        }
        Ok(())
    }

    /// One random fault (or a repair).
    pub fn random_fault(&mut self) -> Result<String, Violation> {
        let n = self.hosts.len();
        let h = self.rng.range(0, n as u64 - 1) as usize;
        let what = self.rng.range(0, 9);
        if self.hosts[h].retired {
            return Ok("nothing".into());
        }
        Ok(match what {
            0 | 1 => {
                if self.hosts[h].node.is_some() {
                    self.crash(h);
                    format!("crash {h}")
                } else {
                    self.start(h)?;
                    format!("restart {h}")
                }
            }
            2 => {
                // Split into two random sides.
                self.blocked.clear();
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                format!("partition {side:?}")
            }
            3 => {
                let b = self.rng.range(0, n as u64 - 1) as usize;
                self.blocked.insert((h, b));
                format!("one-way {h}->{b}")
            }
            4 => {
                // Isolate one host completely.
                for b in 0..n {
                    self.blocked.insert((h, b));
                    self.blocked.insert((b, h));
                }
                format!("isolate {h}")
            }
            5 => {
                self.blocked.clear();
                "heal links".into()
            }
            6 => {
                self.cfg.loss = [0.0, 0.05, 0.2, 0.5][self.rng.range(0, 3) as usize];
                self.cfg.duplicate = [0.0, 0.05, 0.3][self.rng.range(0, 2) as usize];
                format!("loss {} dup {}", self.cfg.loss, self.cfg.duplicate)
            }
            7 => {
                let ip = self.ips[self.rng.range(0, self.ips.len() as u64 - 1) as usize];
                let mut e = self.hosts[h].eligible.clone();
                if !e.remove(&ip) {
                    e.insert(ip);
                }
                self.set_eligible(h, e)?;
                format!("toggle eligibility {h} {ip}")
            }
            8 => {
                self.cfg.max_delay_us = [2_000, 20_000, 80_000][self.rng.range(0, 2) as usize];
                format!("max delay {}us", self.cfg.max_delay_us)
            }
            _ => {
                if self.is_up(h) {
                    self.input(h, Input::Shutdown)?;
                    format!("shutdown {h}")
                } else {
                    "nothing".into()
                }
            }
        })
    }
}

/// A numeric setting from the environment (`LB_SIM_RUNS`, `LB_MODEL_DEPTH`, …), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds of a seeded run: `LB_SIM_SEED` alone, else 1..=`LB_SIM_RUNS` (default
/// `default_runs`).
pub fn seeds(default_runs: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("LB_SIM_SEED") {
        return vec![s.parse().expect("LB_SIM_SEED is a u64")];
    }
    (1..=env_u64("LB_SIM_RUNS", default_runs)).collect()
}
