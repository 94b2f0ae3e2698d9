//! The raft-lite state machine: election, promises, leader authority, leases and the
//! ownership map. Pure: `step(now, input) -> Vec<Output>`; `now` is the host's monotonic clock
//! (`Instant`), randomness comes from the seed given to [`Node::new`].
//!
//! Who owns an IP: on any host, [`Node::owned_ips`]`(now)` — the IPs this host may answer for at
//! `now` (valid lease); on the leader, [`Node::status`]`().owners` — the whole map.
//!
//! The safety argument (docs/raft-lite.md) in one paragraph: a node that heard its leader at
//! local time r (or voted, or restarted, or is leader) grants no vote and does not campaign
//! before r + E ("promise"). The leader knows, per voter, the send time of the latest heartbeat
//! (or vote request) that voter acknowledged; the majority-th latest of those plus E − drift is
//! its *authority*: no other leader can exist before it. Follower leases end before the
//! follower's own ack send time + lease − drift, which is before (the leader received that
//! ack) + lease; the leader renews only while authority ≥ now + lease + drift. Within a term an IP is
//! given to a new host only after the old holder acknowledged a map without it or its lease ran
//! out by the leader's bound.
//!
//! Ordering contract for the shell: process outputs in order; a `Persist` must be durable
//! (fsync) before any later `Send` of the same batch leaves the host. A batch's `Leases`
//! comes first, so a host stops answering for an IP before its acknowledgement of giving it
//! up can reach the leader.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::HardState;
use super::message::{Ack, Body, Heartbeat, Message, Report};
use super::placement;
use super::{Member, Timing};

/// Acks a follower remembers the send time of (the leader echoes the latest one it received).
const ACK_WINDOW: usize = 64;
/// Heartbeat send times a leader remembers (acks older than this no longer extend authority).
const HEARTBEAT_WINDOW: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// This host's name; must be one of `members`.
    pub me: String,
    /// All voters, this host included (the same `[cluster] members` on every host).
    pub members: Vec<Member>,
    /// `role = "witness"`: votes and acks, never campaigns, never owns an IP.
    pub witness: bool,
    pub timing: Timing,
    /// Seeds the election-timeout PRNG.
    pub seed: u64,
    /// Strictly increasing across restarts of this host (wall-clock nanoseconds at boot): ack
    /// and eligibility numbers start here so a leader never confuses them with ones sent
    /// before a restart.
    pub incarnation: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("this node {0:?} is not listed in [cluster] members")]
    NotAMember(String),
    #[error("[cluster] members lists {0:?} twice")]
    DuplicateMember(String),
    #[error("hard state votes for {0:?}, which is not a member")]
    UnknownVote(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Timers; call at least at [`Node::next_wakeup`].
    Tick,
    /// An authenticated message from member `from`.
    Received { from: String, msg: Message },
    /// The IPs this host can announce now (interface up, selectors, Local endpoints).
    LocalEligibility(BTreeSet<IpAddr>),
    /// The layer-2 IPs that need an owner, with a service name for logs (same on every host).
    DesiredIps(BTreeMap<IpAddr, String>),
    /// Changes to [`Input::DesiredIps`]: an IP now desired (with its service name), or no
    /// longer (`None`).
    DesiredChanges(Vec<(IpAddr, Option<String>)>),
    /// Changes to [`Input::LocalEligibility`]: an IP this host can now (`true`) or can no
    /// longer announce.
    EligibilityChanges(Vec<(IpAddr, bool)>),
    /// Planned leave: a leader revokes everything and hands over; a follower has its IPs moved.
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Send {
        to: String,
        msg: Message,
    },
    /// Make durable (fsync) before sending anything that follows in the same batch.
    Persist(HardState),
    /// The IPs this host may answer for changed, or their lease deadline moved. Answer for
    /// `ips` only while the local clock is before `valid_until`.
    Leases {
        ips: BTreeSet<IpAddr>,
        valid_until: Option<Instant>,
    },
    RoleChanged {
        term: u64,
        role: Role,
        leader: Option<String>,
    },
    /// After `Input::Shutdown`: nothing is held any more, the process may exit.
    ShutdownComplete,
    /// This host starts campaigning for `term` (voted for itself; pre-votes not counted).
    ElectionStarted {
        term: u64,
    },
    /// Leader: `ip` moved to `to` because its owner failed, and `to` acknowledged the grant.
    ///
    /// `took` runs from the last moment the leader knew the IP was served (the last ack it
    /// received from the lost owner; after a leader failover, the new leader's last contact
    /// with the old one) until the ack of the map granting it to `to` arrived. That interval
    /// contains the time the IP went unanswered, so `took` bounds the outage from above
    /// (by up to one heartbeat plus one network delay). Planned moves (a member's or the
    /// leader's shutdown, eligibility changes, rebalancing) are not reported.
    Failover {
        ip: IpAddr,
        to: String,
        took: Duration,
    },
}

/// For logs, lbctl and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub me: String,
    pub role: Role,
    pub term: u64,
    pub leader: Option<String>,
    pub members: Vec<MemberStatus>,
    /// The whole map (leader only; empty elsewhere).
    pub owners: BTreeMap<IpAddr, String>,
    /// What this host may answer for now.
    pub owned: BTreeSet<IpAddr>,
    pub lease_until: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    /// Time since the leader last received this member's ack (leader only).
    pub last_ack_age: Option<Duration>,
    /// The leader considers it alive (leader only; `true` for the leader itself).
    pub alive: bool,
    /// IPs this member reported it can announce (leader only).
    pub eligible: usize,
    pub owns: usize,
}

/// The leader's view of one voter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Peer {
    /// Leader-clock send time of the latest heartbeat/vote request this voter acknowledged:
    /// its promise lasts until at least this + E − drift.
    promised_from: Option<Instant>,
    latest_ack: Option<u64>,
    latest_ack_received: Option<Instant>,
    acked_epoch: u64,
    /// `None` until the voter reported.
    eligible: Option<BTreeSet<IpAddr>>,
    eligibility_version: u64,
    held_before: BTreeSet<IpAddr>,
    leaving: bool,
    /// Send a heartbeat at the next step (first ack of the term).
    heartbeat_now: bool,
}

/// A failover the leader is timing ([`Output::Failover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Failover {
    /// Leader clock: when the IP was last known to be served.
    since: Instant,
    /// The host it was granted to and the first epoch with the grant.
    granted: Option<(usize, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Leadership {
    elected_at: Instant,
    next_heartbeat: Instant,
    heartbeat_seq: u64,
    heartbeats_sent: VecDeque<(u64, Instant)>,
    peers: Vec<Peer>,
    epoch: u64,
    owners: BTreeMap<IpAddr, usize>,
    /// IP → (host it was revoked from, first epoch without it there).
    revoked: BTreeMap<IpAddr, Vec<(usize, u64)>>,
    /// Shutdown: everything revoked; hand over when nothing is pending.
    handing_over: bool,
    /// IPs moving because their owner (or the previous leader) failed.
    failovers: BTreeMap<IpAddr, Failover>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    me: usize,
    names: Vec<String>,
    witness: bool,
    timing: Timing,
    rng: u64,
    term: u64,
    voted_for: Option<usize>,
    role: Role,
    leader: Option<usize>,
    /// No vote granted and no campaign before this (local clock).
    promise_until: Instant,
    election_deadline: Instant,
    // Follower side.
    next_ack_seq: u64,
    acks_sent: VecDeque<(u64, Instant)>,
    applied_epoch: u64,
    held: BTreeSet<IpAddr>,
    held_until: Option<Instant>,
    held_before: BTreeSet<IpAddr>,
    eligible: BTreeSet<IpAddr>,
    eligibility_version: u64,
    /// Held IPs given up because this host became ineligible (link down): not answered again
    /// until the leader assigns them knowing this host is eligible again — `Some(v)`: eligible
    /// again since eligibility version `v`, waiting for a heartbeat that knows `v`.
    relinquished: BTreeMap<IpAddr, Option<u64>>,
    desired: BTreeMap<IpAddr, String>,
    // Candidate side.
    votes: BTreeSet<usize>,
    vote_sent_at: Instant,
    vote_reports: BTreeMap<usize, (u64, Option<Report>, Instant)>,
    lead: Option<Leadership>,
    leaving: bool,
    done: bool,
    /// `now` of the latest step.
    last_now: Instant,
    /// When this host last knew a leader to be working: a heartbeat accepted, or its own
    /// leadership ending. Starts the failover timing if it wins the next election.
    last_leader_contact: Option<Instant>,
    /// Set when campaigning after losing the leader (not for a transfer): `last_leader_contact`.
    leader_lost_since: Option<Instant>,
    last_leases: (BTreeSet<IpAddr>, Option<Instant>),
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Node {
    /// A node that just (re)started: it grants no vote and does not campaign for one election
    /// timeout (it may have forgotten a promise). A cluster of one is leader at once.
    pub fn new(
        cfg: Config,
        hard: HardState,
        now: Instant,
    ) -> Result<(Self, Vec<Output>), ConfigError> {
        let mut names: Vec<String> = cfg.members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        for w in names.windows(2) {
            if w[0] == w[1] {
                return Err(ConfigError::DuplicateMember(w[0].clone()));
            }
        }
        let me = names
            .iter()
            .position(|n| *n == cfg.me)
            .ok_or_else(|| ConfigError::NotAMember(cfg.me.clone()))?;
        let voted_for = match hard.voted_for {
            None => None,
            Some(v) => Some(
                names
                    .iter()
                    .position(|n| *n == v)
                    .ok_or(ConfigError::UnknownVote(v))?,
            ),
        };
        let e = cfg.timing.election_timeout;
        let mut node = Node {
            me,
            names,
            witness: cfg.witness,
            timing: cfg.timing,
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            term: hard.term,
            voted_for,
            role: Role::Follower,
            leader: None,
            promise_until: now + e,
            election_deadline: now + e,
            next_ack_seq: cfg.incarnation.max(1),
            acks_sent: VecDeque::new(),
            applied_epoch: 0,
            held: BTreeSet::new(),
            held_until: None,
            held_before: BTreeSet::new(),
            eligible: BTreeSet::new(),
            eligibility_version: cfg.incarnation.max(1),
            relinquished: BTreeMap::new(),
            desired: BTreeMap::new(),
            votes: BTreeSet::new(),
            vote_sent_at: now,
            vote_reports: BTreeMap::new(),
            lead: None,
            leaving: false,
            done: false,
            last_now: now,
            last_leases: (BTreeSet::new(), None),
            last_leader_contact: None,
            leader_lost_since: None,
        };
        node.election_deadline = now + node.random_timeout();
        let mut out = Vec::new();
        if node.names.len() == 1 && !node.witness {
            node.become_candidate(now, false, &mut out);
        }
        Ok((node, out))
    }

    // ---- queries -------------------------------------------------------------------------

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.map(|i| self.names[i].as_str())
    }

    pub fn name(&self) -> &str {
        &self.names[self.me]
    }

    /// The layer-2 IPs that need an owner, with their service names.
    pub fn desired(&self) -> &BTreeMap<IpAddr, String> {
        &self.desired
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for.map(|i| self.names[i].clone()),
        }
    }

    /// The IPs this host may answer for at `now` (valid lease, still locally eligible).
    pub fn owned_ips(&self, now: Instant) -> BTreeSet<IpAddr> {
        let (ips, until) = self.leases();
        match until {
            Some(u) if now < u => ips,
            _ => BTreeSet::new(),
        }
    }

    /// Current lease set and deadline (not filtered by time).
    fn leases(&self) -> (BTreeSet<IpAddr>, Option<Instant>) {
        if self.done || self.witness {
            return (BTreeSet::new(), None);
        }
        if let Some(l) = &self.lead {
            let ips: BTreeSet<IpAddr> = l
                .owners
                .iter()
                .filter(|(ip, o)| **o == self.me && self.eligible.contains(*ip))
                .map(|(ip, _)| *ip)
                .collect();
            return match self.authority() {
                Some(a) if !ips.is_empty() => (ips, Some(a)),
                _ => (BTreeSet::new(), None),
            };
        }
        let ips: BTreeSet<IpAddr> = self
            .held
            .intersection(&self.eligible)
            .filter(|ip| !self.relinquished.contains_key(*ip))
            .copied()
            .collect();
        if ips.is_empty() {
            (ips, None)
        } else {
            (ips, self.held_until)
        }
    }

    /// The latest instant by which `step(Tick)` must be called.
    pub fn next_wakeup(&self) -> Instant {
        let mut t = self.election_deadline;
        if let Some(l) = &self.lead {
            t = l.next_heartbeat;
            if let Some(a) = self.authority() {
                t = t.min(a);
            }
            // When a silent member counts as down (and its IPs may move).
            for i in 0..self.names.len() {
                if let Some(b) = self.lease_bound(i)
                    && b > self.last_now
                {
                    t = t.min(b);
                }
            }
        }
        if let Some(u) = self.last_leases.1 {
            t = t.min(u);
        }
        t
    }

    pub fn status(&self, now: Instant) -> Status {
        let mut members = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let mut m = MemberStatus {
                name: name.clone(),
                last_ack_age: None,
                alive: false,
                eligible: 0,
                owns: 0,
            };
            if let Some(l) = &self.lead {
                let p = &l.peers[i];
                m.last_ack_age = p
                    .latest_ack_received
                    .map(|t| now.saturating_duration_since(t));
                m.alive = self.alive(i, now);
                m.eligible = if i == self.me {
                    self.eligible.len()
                } else {
                    p.eligible.as_ref().map_or(0, |e| e.len())
                };
                m.owns = l.owners.values().filter(|o| **o == i).count();
            }
            members.push(m);
        }
        let (_, lease_until) = self.leases();
        Status {
            me: self.names[self.me].clone(),
            role: self.role,
            term: self.term,
            leader: self.leader().map(str::to_owned),
            members,
            owners: self.lead.as_ref().map_or_else(BTreeMap::new, |l| {
                l.owners
                    .iter()
                    .map(|(ip, o)| (*ip, self.names[*o].clone()))
                    .collect()
            }),
            owned: self.owned_ips(now),
            lease_until,
        }
    }

    // ---- step ----------------------------------------------------------------------------

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.last_now = self.last_now.max(now);
        if self.done {
            return out;
        }
        match input {
            Input::Tick => {}
            Input::Received { from, msg } => {
                if let Some(f) = self.names.iter().position(|n| *n == from)
                    && f != self.me
                {
                    self.receive(now, f, msg, &mut out);
                }
            }
            Input::LocalEligibility(ips) => {
                let gone = self.eligible.difference(&ips).map(|ip| (*ip, false));
                let new = ips.difference(&self.eligible).map(|ip| (*ip, true));
                let changes: Vec<(IpAddr, bool)> = gone.chain(new).collect();
                self.change_eligibility(changes);
            }
            Input::EligibilityChanges(changes) => self.change_eligibility(changes),
            Input::DesiredIps(d) => self.desired = d,
            Input::DesiredChanges(changes) => {
                for (ip, name) in changes {
                    match name {
                        Some(n) => self.desired.insert(ip, n),
                        None => self.desired.remove(&ip),
                    };
                }
            }
            Input::Shutdown => self.shutdown(now, &mut out),
        }
        self.on_timers(now, &mut out);
        self.settle_failovers(now, &mut out);
        self.emit_leases(&mut out);
        out
    }

    /// Applies eligibility changes. An IP given up (no longer eligible) while held is
    /// answered again only once the leader assigns it knowing this host is eligible again:
    /// the eligibility version it must have seen is recorded.
    fn change_eligibility(&mut self, changes: Vec<(IpAddr, bool)>) {
        if self.witness {
            return;
        }
        let version = self.eligibility_version + 1;
        let mut changed = false;
        for (ip, eligible) in changes {
            if eligible {
                if self.eligible.insert(ip) {
                    changed = true;
                    if let Some(back) = self.relinquished.get_mut(&ip) {
                        *back = Some(version);
                    }
                }
            } else if self.eligible.remove(&ip) {
                changed = true;
                if self.held.contains(&ip) {
                    self.relinquished.insert(ip, None);
                }
            }
        }
        if changed {
            self.eligibility_version = version;
        }
    }

    fn on_timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.done {
            return;
        }
        if self.role == Role::Leader {
            self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
            match self.authority() {
                Some(a) if a > now => {}
                _ => {
                    self.step_down(now, self.term, None, out);
                    return;
                }
            }
            self.reconcile(now);
            let due = self.lead.as_ref().is_some_and(|l| now >= l.next_heartbeat);
            if due {
                self.broadcast_heartbeats(now, out);
            } else {
                let eager: Vec<usize> = self
                    .lead
                    .as_ref()
                    .map(|l| {
                        (0..l.peers.len())
                            .filter(|i| l.peers[*i].heartbeat_now)
                            .collect()
                    })
                    .unwrap_or_default();
                if !eager.is_empty() {
                    self.send_heartbeats(now, &eager, out);
                }
            }
            self.maybe_hand_over(now, out);
            return;
        }
        // An expired lease keeps the map (a later heartbeat with a valid echo renews it).
        if self.held_until.is_some_and(|u| now >= u) {
            self.held_until = None;
        }
        if now >= self.election_deadline
            && now >= self.promise_until
            && !self.witness
            && !self.leaving
        {
            self.start_pre_vote(now, out);
        } else if now >= self.election_deadline {
            self.election_deadline = now.max(self.promise_until) + self.random_timeout() / 8;
        }
    }

    /// The step's lease change goes FIRST in the batch: the step may also send the `Ack`
    /// that tells the leader this host applied a map without an IP, and the leader may give
    /// that IP to another host as soon as the ack arrives (break-before-make,
    /// docs/raft-lite.md §4), so this host must have stopped answering before the ack
    /// leaves. A lease gained in the step is valid from `now` anyway.
    fn emit_leases(&mut self, out: &mut Vec<Output>) {
        let cur = self.leases();
        if cur != self.last_leases {
            self.last_leases = cur.clone();
            out.insert(
                0,
                Output::Leases {
                    ips: cur.0,
                    valid_until: cur.1,
                },
            );
        }
    }

    // ---- randomness ----------------------------------------------------------------------

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [E, 2E).
    fn random_timeout(&mut self) -> Duration {
        let e = self.timing.election_timeout;
        let nanos = e.as_nanos().max(1) as u64;
        e + Duration::from_nanos(self.next_random() % nanos)
    }

    // ---- elections -----------------------------------------------------------------------

    fn send(&self, out: &mut Vec<Output>, to: usize, term: u64, body: Body) {
        out.push(Output::Send {
            to: self.names[to].clone(),
            msg: Message { term, body },
        });
    }

    fn broadcast(&self, out: &mut Vec<Output>, term: u64, body: Body) {
        for i in 0..self.names.len() {
            if i != self.me {
                self.send(out, i, term, body.clone());
            }
        }
    }

    fn persist(&self, out: &mut Vec<Output>) {
        out.push(Output::Persist(self.hard_state()));
    }

    fn role_changed(&self, out: &mut Vec<Output>) {
        out.push(Output::RoleChanged {
            term: self.term,
            role: self.role,
            leader: self.leader().map(str::to_owned),
        });
    }

    fn start_pre_vote(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.me]);
        self.election_deadline = now + self.random_timeout();
        if self.votes.len() >= majority(self.names.len()) {
            self.become_candidate(now, false, out);
            return;
        }
        self.broadcast(out, self.term + 1, Body::PreVote);
    }

    /// `transfer`: the leader asked for it (TimeoutNow), a planned hand-over.
    fn become_candidate(&mut self, now: Instant, transfer: bool, out: &mut Vec<Output>) {
        self.term += 1;
        self.leader_lost_since = if transfer {
            None
        } else {
            self.last_leader_contact
        };
        self.voted_for = Some(self.me);
        self.role = Role::Candidate;
        self.leader = None;
        self.drop_leases();
        // Voting for oneself is a vote: it carries the same promise.
        self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
        self.votes = BTreeSet::from([self.me]);
        self.vote_reports.clear();
        self.vote_sent_at = now;
        self.election_deadline = now + self.random_timeout();
        self.persist(out);
        out.push(Output::ElectionStarted { term: self.term });
        if self.votes.len() >= majority(self.names.len()) {
            self.become_leader(now, out);
            return;
        }
        self.role_changed(out);
        self.broadcast(out, self.term, Body::Vote { transfer: false });
    }

    fn drop_leases(&mut self) {
        if !self.held.is_empty() {
            self.held_before = std::mem::take(&mut self.held);
        }
        self.held_until = None;
        self.applied_epoch = 0;
    }

    /// Adopt a higher term (or lose leadership in this one). Leases are dropped at once.
    fn step_down(&mut self, now: Instant, term: u64, leader: Option<usize>, out: &mut Vec<Output>) {
        let was = (self.role, self.leader, self.term);
        if self.role == Role::Leader {
            self.last_leader_contact = Some(now);
        }
        if let Some(l) = self.lead.take() {
            self.held_before = l
                .owners
                .iter()
                .filter(|(_, o)| **o == self.me)
                .map(|(ip, _)| *ip)
                .collect();
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.drop_leases();
            self.persist(out);
        }
        self.role = Role::Follower;
        self.leader = leader;
        if self.election_deadline <= now || was.0 != Role::Follower {
            self.election_deadline = now + self.random_timeout();
        }
        if was != (self.role, self.leader, self.term) {
            self.role_changed(out);
        }
    }

    fn in_promise(&self, now: Instant) -> bool {
        now < self.promise_until || self.role == Role::Leader
    }

    fn report(&self) -> Report {
        Report {
            eligibility_version: self.eligibility_version,
            eligible: self.eligible.iter().copied().collect(),
            held: self
                .held
                .union(&self.held_before)
                .copied()
                .collect::<Vec<_>>(),
        }
    }

    fn next_ack(&mut self, now: Instant) -> u64 {
        let seq = self.next_ack_seq;
        self.next_ack_seq += 1;
        self.acks_sent.push_back((seq, now));
        while self.acks_sent.len() > ACK_WINDOW {
            self.acks_sent.pop_front();
        }
        seq
    }

    fn receive(&mut self, now: Instant, from: usize, msg: Message, out: &mut Vec<Output>) {
        let term = msg.term;
        match msg.body {
            Body::PreVote => {
                let granted = !self.leaving && !self.in_promise(now) && term > self.term;
                let t = if granted { term } else { self.term };
                self.send(out, from, t, Body::PreVoteReply { granted });
            }
            Body::Vote { transfer } => self.on_vote_request(now, from, term, transfer, out),
            Body::PreVoteReply { granted } => {
                if term > self.term && !granted {
                    self.step_down(now, term, None, out);
                } else if self.role == Role::PreCandidate && granted && term == self.term + 1 {
                    self.votes.insert(from);
                    if self.votes.len() >= majority(self.names.len()) {
                        self.become_candidate(now, false, out);
                    }
                }
            }
            Body::VoteReply {
                granted,
                ack_seq,
                report,
            } => {
                if term > self.term {
                    self.step_down(now, term, None, out);
                } else if self.role == Role::Candidate && granted && term == self.term {
                    self.votes.insert(from);
                    self.vote_reports.insert(from, (ack_seq, report, now));
                    if self.votes.len() >= majority(self.names.len()) {
                        self.become_leader(now, out);
                    }
                }
            }
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, term, hb, out),
            Body::Ack(ack) => {
                if term > self.term {
                    self.step_down(now, term, None, out);
                } else if term == self.term && self.role == Role::Leader {
                    self.on_ack(now, from, ack);
                }
            }
            Body::TimeoutNow => {
                if term == self.term && self.leader == Some(from) && !self.witness && !self.leaving
                {
                    self.become_candidate(now, true, out);
                    // become_candidate broadcast a normal vote; replace with transfer votes.
                    out.retain(|o| {
                        !matches!(
                            o,
                            Output::Send {
                                msg: Message {
                                    body: Body::Vote { .. },
                                    ..
                                },
                                ..
                            }
                        )
                    });
                    if self.role == Role::Candidate {
                        self.broadcast(out, self.term, Body::Vote { transfer: true });
                    }
                }
            }
        }
    }

    fn on_vote_request(
        &mut self,
        now: Instant,
        from: usize,
        term: u64,
        transfer: bool,
        out: &mut Vec<Output>,
    ) {
        // Within a promise the request is ignored entirely, term included (thesis §4.2.3),
        // unless it is a handover the leader itself started.
        if term < self.term || (!transfer && self.in_promise(now)) || self.leaving {
            let t = self.term;
            self.send(
                out,
                from,
                t,
                Body::VoteReply {
                    granted: false,
                    ack_seq: 0,
                    report: None,
                },
            );
            return;
        }
        if term > self.term {
            self.step_down(now, term, None, out);
        }
        let granted = self.voted_for.is_none_or(|v| v == from);
        if granted {
            if self.voted_for.is_none() {
                self.voted_for = Some(from);
                self.persist(out);
            }
            self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
            self.election_deadline = now + self.random_timeout();
        }
        let ack_seq = if granted { self.next_ack(now) } else { 0 };
        let report = granted.then(|| self.report());
        self.send(
            out,
            from,
            self.term,
            Body::VoteReply {
                granted,
                ack_seq,
                report,
            },
        );
    }

    fn become_leader(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.role = Role::Leader;
        self.leader = Some(self.me);
        self.drop_leases();
        let mut peers = vec![Peer::default(); self.names.len()];
        for (v, (ack_seq, report, at)) in std::mem::take(&mut self.vote_reports) {
            let p = &mut peers[v];
            p.promised_from = Some(self.vote_sent_at);
            if ack_seq != 0 {
                p.latest_ack = Some(ack_seq);
                p.latest_ack_received = Some(at);
            }
            if let Some(r) = report {
                p.eligibility_version = r.eligibility_version;
                p.eligible = Some(r.eligible.into_iter().collect());
                p.held_before = r.held.into_iter().collect();
            }
        }
        self.lead = Some(Leadership {
            elected_at: now,
            next_heartbeat: now,
            heartbeat_seq: 0,
            heartbeats_sent: VecDeque::new(),
            peers,
            epoch: 1,
            owners: BTreeMap::new(),
            revoked: BTreeMap::new(),
            handing_over: false,
            // Every IP went unanswered once the lost leader's leases ran out.
            failovers: match self.leader_lost_since.take() {
                Some(since) => self
                    .desired
                    .keys()
                    .map(|ip| {
                        (
                            *ip,
                            Failover {
                                since,
                                granted: None,
                            },
                        )
                    })
                    .collect(),
                None => BTreeMap::new(),
            },
        });
        self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
        self.role_changed(out);
        self.reconcile(now);
        self.broadcast_heartbeats(now, out);
    }

    // ---- follower ------------------------------------------------------------------------

    fn on_heartbeat(
        &mut self,
        now: Instant,
        from: usize,
        term: u64,
        hb: Heartbeat,
        out: &mut Vec<Output>,
    ) {
        if term < self.term {
            // Tell the stale leader about the newer term.
            let t = self.term;
            let ack = Ack {
                heartbeat: hb.seq,
                ack_seq: 0,
                epoch: 0,
                eligibility_version: 0,
                leaving: false,
                report: None,
            };
            self.send(out, from, t, Body::Ack(ack));
            return;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            if self.role == Role::Leader && term == self.term {
                return; // cannot happen: one leader per term
            }
            self.step_down(now, term, Some(from), out);
        }
        self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
        self.election_deadline = now + self.random_timeout();
        self.last_leader_contact = Some(now);
        if hb.epoch >= self.applied_epoch {
            if hb.epoch > self.applied_epoch {
                self.applied_epoch = hb.epoch;
                self.held = hb.ips.iter().copied().collect();
            }
            // A relinquished IP is answered again once the leader still assigns it to us
            // knowing we are eligible again; one it moved away is forgotten.
            let held = &self.held;
            self.relinquished.retain(|ip, back| {
                held.contains(ip) && !back.is_some_and(|v| hb.eligibility_known >= v)
            });
            if let Some(k) = hb.echo
                && let Some((_, sent)) = self.acks_sent.iter().find(|(s, _)| *s == k)
            {
                // The lease starts when this host sent ack k: before the leader received it.
                let until = *sent + self.timing.lease.saturating_sub(self.timing.clock_drift);
                self.held_until = Some(self.held_until.map_or(until, |u| u.max(until)));
            }
            if self.held_until.is_some_and(|u| now >= u) {
                self.held_until = None;
            }
        }
        let finished = self.leaving && hb.leave_ok && self.held.is_empty();
        let ack_seq = self.next_ack(now);
        let report = (hb.eligibility_known != self.eligibility_version).then(|| self.report());
        let ack = Ack {
            heartbeat: hb.seq,
            ack_seq,
            epoch: self.applied_epoch,
            eligibility_version: self.eligibility_version,
            leaving: self.leaving,
            report,
        };
        self.send(out, from, term, Body::Ack(ack));
        if finished {
            self.done = true;
            out.push(Output::ShutdownComplete);
        }
    }

    fn shutdown(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        match self.role {
            Role::Leader => {
                if let Some(l) = &mut self.lead {
                    l.handing_over = true;
                }
                self.reconcile(now);
                self.broadcast_heartbeats(now, out);
                self.maybe_hand_over(now, out);
            }
            _ if self.leader.is_none() || self.held.is_empty() => {
                self.drop_leases();
                self.done = true;
                out.push(Output::ShutdownComplete);
            }
            _ => {} // the next ack says `leaving`; done once the leader confirms
        }
    }

    // ---- leader --------------------------------------------------------------------------

    /// Until when no other leader can exist (leader clock); `None` without a majority.
    fn authority(&self) -> Option<Instant> {
        let l = self.lead.as_ref()?;
        let e = self.timing.election_timeout;
        let mut ends: Vec<Instant> = l
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                if i == self.me {
                    Some(self.promise_until)
                } else {
                    p.promised_from.map(|s| s + e)
                }
            })
            .collect();
        let k = majority(self.names.len());
        if ends.len() < k {
            return None;
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends[k - 1].checked_sub(self.timing.clock_drift)
    }

    fn can_grant(&self, now: Instant) -> bool {
        self.authority()
            .is_some_and(|a| a >= now + self.timing.lease + self.timing.clock_drift)
    }

    /// Every lease host `i` may hold from this leader ends before this (leader clock).
    fn lease_bound(&self, i: usize) -> Option<Instant> {
        let l = self.lead.as_ref()?;
        l.peers[i]
            .latest_ack_received
            .map(|t| t + self.timing.lease + self.timing.clock_drift)
    }

    fn alive(&self, i: usize, now: Instant) -> bool {
        i == self.me || self.lease_bound(i).is_some_and(|b| now < b)
    }

    fn on_ack(&mut self, now: Instant, from: usize, ack: Ack) {
        let Some(l) = &mut self.lead else { return };
        if let Some((_, sent)) = l.heartbeats_sent.iter().find(|(s, _)| *s == ack.heartbeat) {
            let p = &mut l.peers[from];
            p.promised_from = Some(p.promised_from.map_or(*sent, |t| t.max(*sent)));
        }
        let p = &mut l.peers[from];
        if p.latest_ack.is_none_or(|k| ack.ack_seq > k) {
            if p.latest_ack.is_none() {
                p.heartbeat_now = true;
            }
            p.latest_ack = Some(ack.ack_seq);
            p.latest_ack_received = Some(now);
            p.leaving = ack.leaving;
        }
        p.acked_epoch = p.acked_epoch.max(ack.epoch);
        if let Some(r) = ack.report
            && r.eligibility_version >= p.eligibility_version
        {
            if p.eligible.is_none() {
                p.held_before = r.held.into_iter().collect();
            }
            p.eligibility_version = r.eligibility_version;
            p.eligible = Some(r.eligible.into_iter().collect());
        }
    }

    fn candidates(&self, now: Instant) -> Vec<bool> {
        let Some(l) = &self.lead else {
            return Vec::new();
        };
        (0..self.names.len())
            .map(|i| {
                if i == self.me {
                    !self.leaving && !self.witness
                } else {
                    let p = &l.peers[i];
                    !p.leaving && p.eligible.is_some() && self.alive(i, now)
                }
            })
            .collect()
    }

    fn eligible_for(&self, i: usize, ip: &IpAddr) -> bool {
        if i == self.me {
            return self.eligible.contains(ip);
        }
        self.lead
            .as_ref()
            .and_then(|l| l.peers[i].eligible.as_ref())
            .is_some_and(|e| e.contains(ip))
    }

    /// Bring the map towards placement: revoke first, grant only when no other host can
    /// still hold the IP (break-before-make within the term).
    fn reconcile(&mut self, now: Instant) {
        let Some(l) = &self.lead else { return };
        let can_grant = self.can_grant(now) && !l.handing_over;
        let cands = self.candidates(now);
        // Shortly after election, wait (one heartbeat) for members to report what they held.
        let all_reported = l
            .peers
            .iter()
            .enumerate()
            .all(|(i, p)| i == self.me || p.eligible.is_some());
        let settling = !all_reported && now < l.elected_at + self.timing.heartbeat;
        let held_before: Vec<&BTreeSet<IpAddr>> = (0..self.names.len())
            .map(|i| {
                if i == self.me {
                    &self.held_before
                } else {
                    &l.peers[i].held_before
                }
            })
            .collect();
        let ips: BTreeSet<IpAddr> = self
            .desired
            .keys()
            .chain(l.owners.keys())
            .chain(l.revoked.keys())
            .copied()
            .collect();
        let mut revoke: Vec<(IpAddr, usize)> = Vec::new();
        let mut grant: Vec<(IpAddr, usize)> = Vec::new();
        let mut cleared: Vec<IpAddr> = Vec::new();
        // IPs whose owner was lost (no ack within its lease bound): last ack received.
        let mut lost: Vec<(IpAddr, Instant)> = Vec::new();
        for ip in ips {
            let current = l.owners.get(&ip).copied();
            if let Some(c) = current
                && c != self.me
                && !self.alive(c, now)
                && let Some(at) = l.peers[c].latest_ack_received
            {
                lost.push((ip, at));
            }
            let mut names: Vec<&str> = (0..self.names.len())
                .filter(|i| cands[*i] && self.eligible_for(*i, &ip))
                .map(|i| self.names[i].as_str())
                .collect();
            // The leader takes an IP only when no other host can. Its failure already stops
            // every lease until an election (≥ election timeout); an IP it also answered for
            // would go dark for all of that, one on a follower only for what is left after
            // its lease (election timeout − lease). And an owner's link or process failing
            // then costs one lease (a follower's), never an election.
            if names.len() > 1 {
                let me = self.names[self.me].as_str();
                names.retain(|n| *n != me);
            }
            let target = if !self.desired.contains_key(&ip) || l.handing_over {
                None
            } else {
                let prefer = current.or_else(|| {
                    (0..self.names.len()).find(|i| cands[*i] && held_before[*i].contains(&ip))
                });
                placement::choose_owner(&ip, prefer.map(|i| self.names[i].as_str()), names)
                    .and_then(|n| self.names.iter().position(|m| m == n))
            };
            if let Some(c) = current
                && target != Some(c)
            {
                revoke.push((ip, c));
                continue;
            }
            let pending = l.revoked.get(&ip).is_some_and(|v| {
                v.iter().any(|(h, e)| {
                    let p = &l.peers[*h];
                    let acked = p.acked_epoch >= *e;
                    let expired = self.lease_bound(*h).is_none_or(|b| now >= b);
                    !(acked || expired)
                })
            });
            if !pending && l.revoked.contains_key(&ip) {
                cleared.push(ip);
            }
            if current.is_none()
                && !pending
                && can_grant
                && !settling
                && let Some(t) = target
            {
                grant.push((ip, t));
            }
        }
        let changed = !revoke.is_empty() || !grant.is_empty();
        let me = self.me;
        let desired = &self.desired;
        let Some(l) = &mut self.lead else { return };
        for ip in cleared {
            l.revoked.remove(&ip);
        }
        let next_epoch = l.epoch + 1;
        for (ip, since) in lost {
            // A failover already timed (its new owner failed too) keeps its start.
            l.failovers.entry(ip).or_insert(Failover {
                since,
                granted: None,
            });
        }
        l.failovers.retain(|ip, _| desired.contains_key(ip));
        for (ip, c) in revoke {
            l.owners.remove(&ip);
            if c != me {
                l.revoked.entry(ip).or_default().push((c, next_epoch));
            }
            if let Some(f) = l.failovers.get_mut(&ip) {
                f.granted = None;
            }
        }
        for (ip, t) in grant {
            l.owners.insert(ip, t);
            if let Some(f) = l.failovers.get_mut(&ip) {
                f.granted = Some((t, next_epoch));
            }
        }
        if changed {
            l.epoch = next_epoch;
            // Tell followers now rather than at the next heartbeat.
            l.next_heartbeat = now;
        }
    }

    /// Reports the failovers whose new owner has acknowledged its grant (the leader's own
    /// grants at once: it answers as soon as it owns an IP).
    fn settle_failovers(&mut self, now: Instant, out: &mut Vec<Output>) {
        let me = self.me;
        let Some(l) = &mut self.lead else { return };
        let done: Vec<(IpAddr, usize, Instant)> = l
            .failovers
            .iter()
            .filter_map(|(ip, f)| match f.granted {
                Some((h, e)) if h == me || l.peers[h].acked_epoch >= e => Some((*ip, h, f.since)),
                _ => None,
            })
            .collect();
        for (ip, h, since) in done {
            l.failovers.remove(&ip);
            out.push(Output::Failover {
                ip,
                to: self.names[h].clone(),
                took: now.saturating_duration_since(since),
            });
        }
    }

    fn broadcast_heartbeats(&mut self, now: Instant, out: &mut Vec<Output>) {
        let all: Vec<usize> = (0..self.names.len()).filter(|i| *i != self.me).collect();
        self.send_heartbeats(now, &all, out);
        if let Some(l) = &mut self.lead {
            l.next_heartbeat = now + self.timing.heartbeat;
        }
    }

    fn send_heartbeats(&mut self, now: Instant, to: &[usize], out: &mut Vec<Output>) {
        let can_grant = self.can_grant(now);
        let term = self.term;
        let Some(l) = &mut self.lead else { return };
        l.heartbeat_seq += 1;
        let seq = l.heartbeat_seq;
        l.heartbeats_sent.push_back((seq, now));
        while l.heartbeats_sent.len() > HEARTBEAT_WINDOW {
            l.heartbeats_sent.pop_front();
        }
        let mut msgs = Vec::new();
        for &i in to {
            let p = &mut l.peers[i];
            p.heartbeat_now = false;
            let ips: Vec<IpAddr> = l
                .owners
                .iter()
                .filter(|(_, o)| **o == i)
                .map(|(ip, _)| *ip)
                .collect();
            let leave_ok = p.leaving && ips.is_empty();
            msgs.push((
                i,
                Body::Heartbeat(Heartbeat {
                    seq,
                    epoch: l.epoch,
                    echo: if can_grant { p.latest_ack } else { None },
                    eligibility_known: p.eligibility_version,
                    leave_ok,
                    ips,
                }),
            ));
        }
        for (i, b) in msgs {
            self.send(out, i, term, b);
        }
    }

    /// Shutdown of a leader: once no follower can hold a lease, ask the most recently heard
    /// follower to campaign at once, then stop.
    fn maybe_hand_over(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(l) = &self.lead else { return };
        if !l.handing_over || !l.owners.is_empty() || !l.revoked.is_empty() {
            return;
        }
        let successor = (0..self.names.len())
            .filter(|i| *i != self.me && self.alive(*i, now) && !l.peers[*i].leaving)
            .max_by_key(|i| l.peers[*i].latest_ack_received);
        if let Some(s) = successor {
            self.send(out, s, self.term, Body::TimeoutNow);
        }
        self.lead = None;
        self.role = Role::Follower;
        self.done = true;
        out.push(Output::ShutdownComplete);
    }
}

impl crate::machine::Machine for Node {
    type Input = Input;
    type Output = Output;

    fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        Node::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_wakeup())
    }

    fn timer_input(&self) -> Input {
        Input::Tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn cfg(me: &str, names: &[&str]) -> Config {
        Config {
            me: me.into(),
            members: names
                .iter()
                .enumerate()
                .map(|(i, n)| Member {
                    name: (*n).into(),
                    addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                })
                .collect(),
            witness: false,
            timing: Timing::default(),
            seed: 1,
            incarnation: 1,
        }
    }

    fn ip() -> IpAddr {
        "10.10.100.200".parse().expect("ip")
    }

    const E: Duration = Duration::from_millis(300);

    #[test]
    fn campaigning_emits_election_started_after_the_vote_is_persisted() {
        let t0 = crate::test_origin();
        let (_, out) = Node::new(cfg("a", &["a"]), HardState::default(), t0).expect("node");
        let persist = out
            .iter()
            .position(|o| matches!(o, Output::Persist(h) if h.term == 1));
        let started = out
            .iter()
            .position(|o| *o == Output::ElectionStarted { term: 1 });
        assert!(persist.is_some() && started > persist, "{out:?}");
        // A follower of three campaigns only after its election timeout (pre-vote first).
        let (mut n, out) =
            Node::new(cfg("a", &["a", "b", "c"]), HardState::default(), t0).expect("node");
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::ElectionStarted { .. }))
        );
        let later = t0 + Timing::default().election_timeout * 3;
        let out = n.step(later, Input::Tick);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::ElectionStarted { .. }))
        );
        for from in ["b", "c"] {
            let out = n.step(
                later,
                Input::Received {
                    from: from.into(),
                    msg: Message {
                        term: 1,
                        body: Body::PreVoteReply { granted: true },
                    },
                },
            );
            if from == "b" {
                assert!(
                    out.contains(&Output::ElectionStarted { term: 1 }),
                    "{out:?}"
                );
            }
        }
    }

    #[test]
    fn single_member_is_leader_at_once_and_owns_eligible_ips() {
        let t0 = crate::test_origin();
        let (mut n, out) = Node::new(cfg("a", &["a"]), HardState::default(), t0).expect("node");
        assert_eq!(n.role(), Role::Leader);
        assert!(matches!(out.first(), Some(Output::Persist(h)) if h.term == 1));
        n.step(t0, Input::DesiredIps([(ip(), "default/web".into())].into()));
        n.step(t0, Input::LocalEligibility([ip()].into()));
        assert_eq!(n.owned_ips(t0), [ip()].into());
        n.step(t0, Input::LocalEligibility(BTreeSet::new()));
        assert!(
            n.owned_ips(t0).is_empty(),
            "ineligible: stop answering at once"
        );
    }

    #[test]
    fn restarted_node_grants_no_vote_for_one_election_timeout() {
        let t0 = crate::test_origin();
        let (mut n, _) =
            Node::new(cfg("b", &["a", "b", "c"]), HardState::default(), t0).expect("node");
        let vote = Input::Received {
            from: "a".into(),
            msg: Message {
                term: 1,
                body: Body::Vote { transfer: false },
            },
        };
        let out = n.step(t0 + E / 2, vote.clone());
        assert!(out.iter().all(|o| !matches!(o, Output::Persist(_))));
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Send {
                msg: Message {
                    body: Body::VoteReply { granted: false, .. },
                    ..
                },
                ..
            }
        )));
        assert_eq!(
            n.term(),
            0,
            "a vote request inside the promise does not bump the term"
        );
        let out = n.step(t0 + E, vote);
        let persist = out
            .iter()
            .position(|o| matches!(o, Output::Persist(h) if h.voted_for.as_deref() == Some("a")));
        let reply = out.iter().position(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message {
                        body: Body::VoteReply { granted: true, .. },
                        ..
                    },
                    ..
                }
            )
        });
        assert!(
            persist.is_some() && reply.is_some() && persist < reply,
            "persist before the vote reply: {out:?}"
        );
    }

    #[test]
    fn follower_that_heard_its_leader_rejects_pre_votes_until_promise_ends() {
        let t0 = crate::test_origin();
        let (mut n, _) = Node::new(
            cfg("b", &["a", "b", "c"]),
            HardState {
                term: 3,
                voted_for: None,
            },
            t0,
        )
        .expect("node");
        let hb_at = t0 + E + Duration::from_millis(10);
        let hb = Heartbeat {
            seq: 1,
            epoch: 1,
            echo: None,
            eligibility_known: 0,
            leave_ok: false,
            ips: vec![],
        };
        n.step(
            hb_at,
            Input::Received {
                from: "a".into(),
                msg: Message {
                    term: 3,
                    body: Body::Heartbeat(hb),
                },
            },
        );
        assert_eq!(n.leader(), Some("a"));
        let pre = Input::Received {
            from: "c".into(),
            msg: Message {
                term: 4,
                body: Body::PreVote,
            },
        };
        let granted = |out: &[Output]| {
            out.iter().any(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: Message {
                            body: Body::PreVoteReply { granted: true },
                            ..
                        },
                        ..
                    }
                )
            })
        };
        assert!(!granted(
            &n.step(hb_at + E - Duration::from_millis(1), pre.clone())
        ));
        assert!(granted(&n.step(hb_at + E, pre)));
    }

    #[test]
    fn higher_term_heartbeat_drops_leases_at_once() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, _) = Node::new(
            cfg("b", &["a", "b", "c"]),
            HardState {
                term: 1,
                voted_for: None,
            },
            t0 - E * 2,
        )
        .expect("node");
        n.step(t0, Input::LocalEligibility([ip()].into()));
        let hb = |seq, echo| Heartbeat {
            seq,
            epoch: 1,
            echo,
            eligibility_known: 0,
            leave_ok: false,
            ips: vec![ip()],
        };
        let out = n.step(
            t0,
            Input::Received {
                from: "a".into(),
                msg: Message {
                    term: 1,
                    body: Body::Heartbeat(hb(1, None)),
                },
            },
        );
        let ack = out
            .iter()
            .find_map(|o| match o {
                Output::Send {
                    msg:
                        Message {
                            body: Body::Ack(a), ..
                        },
                    ..
                } => Some(a.ack_seq),
                _ => None,
            })
            .expect("ack");
        assert!(n.owned_ips(t0).is_empty(), "no lease without an echoed ack");
        let t1 = t0 + Duration::from_millis(20);
        n.step(
            t1,
            Input::Received {
                from: "a".into(),
                msg: Message {
                    term: 1,
                    body: Body::Heartbeat(hb(2, Some(ack))),
                },
            },
        );
        assert_eq!(n.owned_ips(t1), [ip()].into());
        // Lease = ack send time + lease - drift = t0 + 125 ms.
        assert!(n.owned_ips(t0 + Duration::from_millis(124)).contains(&ip()));
        assert!(n.owned_ips(t0 + Duration::from_millis(125)).is_empty());
        let hb2 = Heartbeat {
            seq: 1,
            epoch: 1,
            echo: None,
            eligibility_known: 0,
            leave_ok: false,
            ips: vec![],
        };
        n.step(
            t1,
            Input::Received {
                from: "c".into(),
                msg: Message {
                    term: 2,
                    body: Body::Heartbeat(hb2),
                },
            },
        );
        assert!(n.owned_ips(t1).is_empty());
        assert_eq!(n.leader(), Some("c"));
    }

    #[test]
    fn an_ip_given_up_on_link_down_is_answered_again_only_once_the_leader_assigns_it_again() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, _) = Node::new(
            cfg("b", &["a", "b", "c"]),
            HardState {
                term: 1,
                voted_for: None,
            },
            t0 - E * 2,
        )
        .expect("node");
        n.step(t0, Input::LocalEligibility([ip()].into()));
        let hb = |seq, echo, known| Input::Received {
            from: "a".into(),
            msg: Message {
                term: 1,
                body: Body::Heartbeat(Heartbeat {
                    seq,
                    epoch: 1,
                    echo,
                    eligibility_known: known,
                    leave_ok: false,
                    ips: vec![ip()],
                }),
            },
        };
        let ack_of = |out: &[Output]| {
            out.iter()
                .find_map(|o| match o {
                    Output::Send {
                        msg:
                            Message {
                                body: Body::Ack(a), ..
                            },
                        ..
                    } => Some((a.ack_seq, a.eligibility_version)),
                    _ => None,
                })
                .expect("ack")
        };
        let (ack, v_up) = ack_of(&n.step(t0, hb(1, None, 0)));
        let t1 = t0 + Duration::from_millis(10);
        n.step(t1, hb(2, Some(ack), v_up));
        assert_eq!(n.owned_ips(t1), [ip()].into());
        // Link down: given up at once; link up again within the lease, before the leader
        // heard of either: still not answered (the lease alone is not an assignment).
        n.step(t1, Input::LocalEligibility(BTreeSet::new()));
        assert!(n.owned_ips(t1).is_empty());
        let t2 = t1 + Duration::from_millis(5);
        n.step(t2, Input::LocalEligibility([ip()].into()));
        assert!(
            n.owned_ips(t2).is_empty(),
            "answered again without a new assignment"
        );
        // A heartbeat from a leader that has not yet seen the new eligibility: still silent.
        let (ack, v_now) = ack_of(&n.step(t2, hb(3, Some(ack), v_up)));
        assert!(v_now > v_up + 1);
        assert!(n.owned_ips(t2).is_empty());
        // The leader knows this host is eligible again and still assigns it the IP: answer.
        let t3 = t2 + Duration::from_millis(5);
        n.step(t3, hb(4, Some(ack), v_now));
        assert_eq!(n.owned_ips(t3), [ip()].into());
    }

    #[test]
    fn a_revoked_lease_is_given_up_before_the_ack_that_lets_the_leader_move_it() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, _) = Node::new(
            cfg("b", &["a", "b", "c"]),
            HardState {
                term: 1,
                voted_for: None,
            },
            t0 - E * 2,
        )
        .expect("node");
        n.step(t0, Input::LocalEligibility([ip()].into()));
        let hb = |seq, echo, epoch, ips: Vec<IpAddr>| Input::Received {
            from: "a".into(),
            msg: Message {
                term: 1,
                body: Body::Heartbeat(Heartbeat {
                    seq,
                    epoch,
                    echo,
                    eligibility_known: 1,
                    leave_ok: false,
                    ips,
                }),
            },
        };
        let ack_seq = |out: &[Output]| {
            out.iter().find_map(|o| match o {
                Output::Send {
                    msg:
                        Message {
                            body: Body::Ack(a), ..
                        },
                    ..
                } => Some(a.ack_seq),
                _ => None,
            })
        };
        let ack = ack_seq(&n.step(t0, hb(1, None, 1, vec![ip()]))).expect("ack");
        let t1 = t0 + Duration::from_millis(10);
        n.step(t1, hb(2, Some(ack), 1, vec![ip()]));
        assert_eq!(n.owned_ips(t1), [ip()].into());
        // The map without the IP: the batch gives the lease up first, then acks.
        let out = n.step(t1, hb(3, Some(ack), 2, vec![]));
        let leases = out
            .iter()
            .position(|o| matches!(o, Output::Leases { ips, .. } if ips.is_empty()))
            .unwrap_or_else(|| panic!("lease given up: {out:?}"));
        let acked = out
            .iter()
            .position(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: Message {
                            body: Body::Ack(_),
                            ..
                        },
                        ..
                    }
                )
            })
            .expect("ack");
        assert!(leases < acked, "{out:?}");
    }
}
