//! The raft-lite state machine: election, the leader's ownership map, and quorum leases.
//! Pure: `step(now, input) -> Vec<Output>`; `now` is the host's monotonic clock (`Instant`),
//! randomness comes from the seed given to [`Node::new`].
//!
//! Who owns an IP: on any host, [`Node::owned_ips`]`(now)` — the IPs this host may answer for at
//! `now` (valid lease); on the leader, [`Node::status`]`().owners` — the map it made.
//!
//! Three roles, one node (docs/raft-lite.md):
//! - **leader** (elected, Raft §5.2 with pre-vote §9.6 and promises §4.2.3): decides only
//!   *who should hold* each IP (placement, with a successor per IP) and tells each host its
//!   part of the map; it grants nothing.
//! - **voter** ([`lease::Voter`]): promises an IP to at most one holder at a time, for one
//!   lease on its own clock; keeps no promise across a restart and so promises nothing for
//!   lease + drift after one.
//! - **holder** ([`lease::Holder`]): renews its IPs directly with every voter each heartbeat
//!   and answers for an IP while grants of a majority of voters last (Moraru et al., "Paxos
//!   Quorum Leases", SoCC 2014). A successor takes an IP over when the holder's promise at
//!   its own voter ends. Neither needs the leader: leases outlive it.
//!
//! Safety in one paragraph: a grant for request k counts until sent(k) + lease − drift on
//! the holder's clock, before the voter's promise ends in real time; a holder answers only
//! with a majority of counting grants; two majorities share a voter, which promised the IP
//! to one holder at a time (and after a restart to nobody until every old promise ended).
//!
//! Ordering contract for the shell: process outputs in order; a `Persist` must be durable
//! (fsync) before any later `Send` of the same batch leaves the host. A batch's `Leases`
//! comes first, so a host stops answering for an IP before its `Release` (which lets a voter
//! promise the IP to another holder) can leave.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::HardState;
use super::lease::{self, Attempt, Claim, Freed, Granted};
use super::message::{
    Ack, Body, Grant, Heartbeat, Join, Message, Release, Renew, Report, Roster, VoterAck, VoterSet,
};
use super::placement;
use super::voters::{self, Accepted, Change, VoterChangeError, VoterState, Voters};
use super::{Member, Memo, Timing};

/// Heartbeat send times a leader remembers (acks older than this no longer extend authority).
const HEARTBEAT_WINDOW: usize = 64;
/// The leader resends its member list to every voter at least this often (in heartbeats):
/// a voter that restarted, or lost the last one, learns the members within it.
const ROSTER_REFRESH: u64 = 10;
/// A member silent this many election timeouts is forgotten (its IPs moved long before,
/// after one lease). A member that stops with `leaving` is forgotten after one.
pub const FORGET_AFTER_ELECTION_TIMEOUTS: u32 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// This host's name: one of `members`, or a member that does not vote (`address`).
    pub me: String,
    /// The voters (the same list on every host): `[cluster] members`, or `voters`.
    pub members: Vec<Member>,
    /// This host's own raft-lite address when it is not one of `members`: it is then a
    /// member that holds leases but does not vote, and asks the leader to admit it.
    pub address: Option<SocketAddr>,
    /// No other host can ever take part (one voter and no transport): the restart
    /// quarantine is skipped.
    pub solo: bool,
    /// `role = "witness"`: votes, promises and acks, never campaigns, never owns an IP.
    pub witness: bool,
    pub timing: Timing,
    /// Seeds the election-timeout PRNG.
    pub seed: u64,
    /// Strictly increasing across restarts of this host (the boot number): ack, eligibility
    /// and lease-request numbers start here so no peer confuses them with ones sent before a
    /// restart.
    pub incarnation: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("this node {0:?} is not listed in [cluster] members and has no address of its own")]
    NotAMember(String),
    #[error("witness {0:?} must be one of the voters")]
    WitnessNotVoter(String),
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
    /// Planned leave: release every IP (successors take them over), a leader hands
    /// leadership over (`TimeoutNow`); nobody else's lease is touched.
    Shutdown,
    /// This host's configured voter list (a reload): when it differs from the running set
    /// by one voter, a proposal the leader (once it has it too) makes the next version.
    ProposeVoters(Voters),
    /// Which hosts may be members besides the voters (`[cluster] member_nodes`: the
    /// Kubernetes Nodes matching its selectors, at their InternalIP). Default
    /// [`MemberFilter::Anyone`].
    AllowedMembers(MemberFilter),
    /// `lbctl cluster remove NAME`: the leader forgets the member `NAME` (a host that stopped
    /// for good without a planned leave) at once, instead of after
    /// [`FORGET_AFTER_ELECTION_TIMEOUTS`]. Answered by [`Output::RemoveDone`].
    RemoveMember(String),
}

/// Which hosts may be admitted as members (the voters are fixed and always in).
///
/// The leader admits a `Join` only from a host the filter lists, at exactly the address it
/// lists, and evicts an admitted member the filter stops listing (or lists at another
/// address): its IPs move at once (it is no candidate any more), and it is forgotten once
/// it acknowledged that map holding nothing, or one lease + drift later at the latest. A
/// member asks to join only at the address the filter gives for itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemberFilter {
    /// Any host with the key at any address (no `member_nodes`).
    #[default]
    Anyone,
    /// Not known yet (the Nodes have not been listed): nobody is admitted, nobody evicted,
    /// and a member does not ask to join.
    Pending,
    /// Only these hosts, each at exactly this address.
    Only(BTreeMap<String, SocketAddr>),
}

/// Deliberately broken variants of the protocol, for the mutation checks only
/// (`tests/pure/cluster_model.rs`, `tests/pure/cluster_simulation.rs`): each test turns one
/// on with [`Node::set_mutation`] and asserts that the checker finds the violation it causes
/// (docs/raft-lite.md, "Mutation checks"). Never set by the daemon.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A restarted voter promises at once instead of waiting lease + drift: it may promise
    /// an IP that it had promised to another holder before the crash.
    ForgetPromisesOnRestart,
    /// A new leader makes its map at once, from placement alone, without waiting for (or
    /// keeping) the holders that the members report.
    MapBeforeLearningHolders,
    /// A holder counts a grant's lease from when the grant arrived instead of from when it
    /// sent the request (the voter's promise started earlier, so it ends earlier).
    LeaseFromReceipt,
    /// A leader proposes the next voter set as soon as the last one is committed, without
    /// waiting until a majority of the set before it adopted it and a lease + drift passed:
    /// a holder still counting S_{k-1} may overlap one counting S_{k+1}.
    NoVoterChangeFence,
    /// A voter grants requests whatever voter-set version they show.
    NoVersionGate,
}

/// Why `lbctl cluster remove NAME` ([`Input::RemoveMember`]) was not done.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RemoveRefusal {
    #[error("this host does not lead raft-lite; run `lbctl cluster remove` on the leader, {0}")]
    NotLeader(String),
    #[error("this host does not lead raft-lite and knows no leader now; try again in a moment")]
    NoLeader,
    #[error(
        "{0} is a voter: voters change by editing [cluster] voters on every host and reloading, one voter at a time"
    )]
    Voter(String),
    #[error("no member named {0} (`lbctl cluster` lists them)")]
    Unknown(String),
    #[error(
        "{name} is alive (its last ack arrived {ago_ms} ms ago): stop lbd on it first (`systemctl disable --now lbd`), which moves its IPs and has it forgotten"
    )]
    Alive { name: String, ago_ms: u64 },
}

/// Why the leader did not admit a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    #[error("its name is a voter's; a voter does not join")]
    VoterName,
    #[error("its voter list differs from the leader's")]
    VoterListDiffers,
    #[error("its address is already another host's")]
    DuplicateAddress,
    #[error("it is not a Kubernetes Node matching [cluster] member_nodes")]
    NotANode,
    #[error("its address is not its Node's InternalIP and the member_nodes port")]
    AddressNotNodeIp,
}

impl Refusal {
    /// The `reason` label of `lb_cluster_joins_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::VoterName => "voter_name",
            Refusal::VoterListDiffers => "voter_list_differs",
            Refusal::DuplicateAddress => "duplicate_address",
            Refusal::NotANode => "not_a_node",
            Refusal::AddressNotNodeIp => "address_not_node_ip",
        }
    }
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
    /// The IPs this host may answer for changed, or a lease deadline moved: answer for an IP
    /// only while the local clock is before its deadline.
    Leases(BTreeMap<IpAddr, Instant>),
    RoleChanged {
        term: u64,
        role: Role,
        leader: Option<String>,
    },
    /// After `Input::Shutdown`: nothing is held any more, the process may exit.
    ShutdownComplete,
    /// Leader: a member was admitted (or its address changed): the transport may now
    /// send to it at `addr`.
    Admitted {
        name: String,
        addr: SocketAddr,
    },
    /// Leader: a member was forgotten (it left, or was silent too long).
    Forgotten {
        name: String,
    },
    /// The answer to [`Input::RemoveMember`]: `Ok` when the leader forgot the member (an
    /// [`Output::Forgotten`] precedes it; its IPs move in the same step).
    RemoveDone {
        name: String,
        result: Result<(), RemoveRefusal>,
    },
    /// Leader: a host asked to join and was refused.
    Refused {
        name: String,
        reason: Refusal,
    },
    /// This host starts campaigning for `term` (voted for itself; pre-votes not counted).
    ElectionStarted {
        term: u64,
    },
    /// This host took `ip` over as its successor after the previous holder went silent (its
    /// promise at this host's voter ran out without renewal); `to` is this host.
    ///
    /// `took` runs from the previous holder's last renewal this host's voter received (the
    /// last moment it knew the IP was served) until this host had a majority of grants. The
    /// outage is inside that interval, so `took` bounds it from above (by up to one heartbeat
    /// plus one network delay). Planned moves (a release: shutdown, link down, a new map) are
    /// not reported.
    Failover {
        ip: IpAddr,
        to: String,
        took: Duration,
    },
    /// This host adopted voter set `version` (committed by the leader).
    VotersChanged {
        version: u64,
        voters: Voters,
        /// This host no longer votes (it was removed): it goes on as a member.
        removed: bool,
    },
    /// What a [`Input::ProposeVoters`] means: `Ok(None)` the running set, `Ok(Some)` a
    /// change this host now proposes, `Err` not a change the cluster can make (kept as
    /// running).
    VoterProposal(Result<Option<Change>, VoterChangeError>),
    /// Leader: it proposed voter set `version` to the voters (commit follows once a
    /// majority of the running set accepted it).
    VotersProposed {
        version: u64,
        voters: Voters,
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
    /// The earliest lease deadline of `owned`.
    pub lease_until: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    /// Votes (listed in the voters); `false`: a member admitted by the leader.
    pub voter: bool,
    /// Its raft-lite address (a voter's from the config, a member's from the leader).
    pub addr: Option<SocketAddr>,
    /// Time since the leader last received this member's ack (leader only).
    pub last_ack_age: Option<Duration>,
    /// The leader considers it alive (leader only; `true` for the leader itself).
    pub alive: bool,
    /// IPs this member reported it can announce (leader only).
    pub eligible: usize,
    pub owns: usize,
}

/// The leader's view of one member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Peer {
    /// Leader-clock send time of the latest heartbeat/vote request this voter acknowledged:
    /// its promise (no vote for another) lasts until at least this + E − drift.
    promised_from: Option<Instant>,
    latest_ack: Option<u64>,
    latest_ack_received: Option<Instant>,
    acked_epoch: u64,
    /// `None` until the member reported.
    eligible: Option<BTreeSet<IpAddr>>,
    eligibility_version: u64,
    /// What it reported holding (a valid lease) in its latest report.
    held: BTreeSet<IpAddr>,
    leaving: bool,
    /// Send a heartbeat at the next step (first ack of the term).
    heartbeat_now: bool,
    /// A member: when this leader admitted it (or inherited it with the member list).
    admitted_at: Option<Instant>,
    /// Its latest voter-set report, and when it first reported that committed version.
    voters: VoterAck,
    voters_since: Option<Instant>,
    /// A member the [`MemberFilter`] stopped listing: since when (forgotten once its IPs
    /// moved, lease + drift later at the latest).
    evicted_at: Option<Instant>,
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
    /// IP → the host that takes it over if its holder goes silent (the next placement
    /// choice, so the leader's own later choice agrees).
    successors: BTreeMap<IpAddr, usize>,
    /// Heartbeat rounds until the member list is sent to every voter again.
    roster_refresh_in: u64,
    /// Members just admitted: once they report, the IPs whose placement choice they are
    /// move to them (a planned move each), so a cluster that grows stays balanced. Kept
    /// until the member reported something it can announce and one election timeout passed.
    rebalance: BTreeSet<usize>,
    /// IPs this leader placed for the first time (no host held them) and when. Each host
    /// learns a new Service from its own watch and reports it eligible a moment later;
    /// for one election timeout such an IP follows placement as reports arrive, instead of
    /// staying with whichever host reported first (often the leader alone).
    young: BTreeMap<IpAddr, Instant>,
    /// The voter set this leader proposed (version committed + 1), not yet committed.
    change: Option<(u64, Voters)>,
    /// Since when this leader uses its committed voter set (its election, or its commit).
    version_since: Instant,
    /// The inputs of the last complete `reconcile` (`Node::map_inputs`, the candidates): a
    /// step that changes neither (most acks and renewals) leaves the map as it is, so it is
    /// not recomputed — O(IPs × hosts) per datagram was most of an idle leader's work.
    reconciled: Memo<Option<(u64, Vec<bool>)>>,
}

/// This host's part of the latest map it knows (from its leader, or its own as leader).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Assignment {
    version: Claim,
    /// IPs this host should hold.
    hold: BTreeSet<IpAddr>,
    /// IPs this host is the successor for.
    standby: BTreeSet<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    me: usize,
    /// Hosts by index: 0..voters are the voters (sorted), later ones members in the order
    /// this host learned them (an index is never reused while the process runs).
    names: Vec<String>,
    index: BTreeMap<String, usize>,
    /// The committed voter set (indices into `names`) with addresses: `vs.voters`.
    voters: BTreeMap<usize, SocketAddr>,
    /// The voter set, versioned, as persisted (docs/raft-lite.md, "Changing the voter set").
    vs: VoterState,
    /// This host's own configured voter list (lb.toml, at start or the latest reload): when
    /// it differs from the committed set by one voter, the leader proposes it (checked again
    /// after every change, so a file two changes ahead becomes a proposal after the first).
    proposal: Option<Voters>,
    /// Admitted members (not voters) and their addresses: the leader's list, learned from
    /// its `Roster` elsewhere. A voter promises only to voters and these.
    roster: BTreeMap<usize, SocketAddr>,
    /// (term, seq) of `roster`.
    roster_version: (u64, u64),
    /// [`voters::digest`] of the committed voters.
    digest: u64,
    /// A member's own address (sent in `Join`, unless `filter` gives another).
    my_addr: Option<SocketAddr>,
    /// Which hosts may be members ([`Input::AllowedMembers`]).
    filter: MemberFilter,
    next_join: Instant,
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
    next_ack_seq: u64,
    map: Assignment,
    voter: lease::Voter,
    holder: lease::Holder,
    next_renew: Instant,
    eligible: BTreeSet<IpAddr>,
    eligibility_version: u64,
    /// What the latest eligibility version said this host holds (a change bumps the
    /// version, so the leader hears of it).
    reported_held: BTreeSet<IpAddr>,
    /// IPs given up because this host became ineligible (link down): not asked for again
    /// until the leader assigns them knowing this host is eligible again — `Some(v)`: eligible
    /// again since eligibility version `v`, waiting for a heartbeat that knows `v`.
    relinquished: BTreeMap<IpAddr, Option<u64>>,
    desired: BTreeMap<IpAddr, String>,
    /// IPs whose holder went silent: its promise at this host's voter ran out without renewal,
    /// last renewed then. Reported as a failover if this host takes the IP.
    lost: BTreeMap<IpAddr, Instant>,
    // Candidate side.
    votes: BTreeSet<usize>,
    vote_sent_at: Instant,
    vote_reports: BTreeMap<usize, (u64, Option<Report>, Instant)>,
    lead: Option<Leadership>,
    leaving: bool,
    /// After `Shutdown`: the IPs released, and when to stop waiting for their successors
    /// (this host's voter promising each to another holder) and complete anyway.
    handover: BTreeSet<IpAddr>,
    leave_by: Option<Instant>,
    done: bool,
    /// `now` of the latest step.
    last_now: Instant,
    last_leases: BTreeMap<IpAddr, Instant>,
    /// A deliberately broken variant (mutation checks only).
    mutation: Option<Mutation>,
    /// Bumped whenever something the leader's map is computed from changes, apart from time
    /// (desired IPs, eligibility and holdings reported, the member list).
    map_inputs: Memo<u64>,
    /// [`Node::wants`] as last computed; `None` once one of its inputs changed.
    wants_cache: Memo<Option<WantsCache>>,
    /// Bumped when a recomputation of `wants` gave another result.
    wants_gen: Memo<u64>,
    /// The `wants_gen` that `tend_leases` last looked at (what to release, what is new).
    tended_gen: Memo<u64>,
    /// [`Node::leases`] as last computed; `None` once an input changed (a grant, a release,
    /// `wants`, the voter set). Valid until its earliest end.
    lease_cache: Memo<Option<LeaseCache>>,
    /// When `last_leases` was last emitted, and whether a map that only pushes ends later
    /// waits for its turn (`emit_leases`). State, not a memo: they decide when a `Leases`
    /// output goes out.
    last_emit: Option<Instant>,
    emit_pending: bool,
    /// The earliest end in `last_leases` (derived from it).
    emitted_until: Memo<Option<Instant>>,
    /// Bumped at every recomputation of the lease cache; the one `reported_held` was last
    /// compared with.
    lease_gen: Memo<u64>,
    held_gen: Memo<u64>,
    /// The `lease_gen` that `emit_leases` last compared with `last_leases`.
    emitted_gen: Memo<u64>,
}

/// What this host asks the voters for, computed at `at`; the same until `until` (a standby
/// IP's takeover attempt or lease ends) unless an input changes first.
#[derive(Clone, Debug)]
struct WantsCache {
    hold: Arc<BTreeSet<IpAddr>>,
    standby: Arc<BTreeSet<IpAddr>>,
    at: Instant,
    until: Instant,
}

impl WantsCache {
    fn valid(&self, now: Instant) -> bool {
        self.at <= now && now < self.until
    }
}

/// The leases this host has, computed at `at` (with `Node::last_now` = `at`); the same until
/// the earliest of them ends unless an input changes first.
#[derive(Clone, Debug)]
struct LeaseCache {
    leases: Arc<BTreeMap<IpAddr, Instant>>,
    at: Instant,
    until: Option<Instant>,
}

impl LeaseCache {
    fn valid(&self, now: Instant) -> bool {
        self.at <= now && self.until.is_none_or(|u| now < u)
    }
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Node {
    /// A node that just (re)started: it grants no vote and does not campaign for one election
    /// timeout, and promises no IP for lease + drift (it may have forgotten promises). A
    /// cluster of one is leader at once.
    pub fn new(
        cfg: Config,
        hard: HardState,
        now: Instant,
    ) -> Result<(Self, Vec<Output>), ConfigError> {
        let mut configured = Voters::new();
        for m in &cfg.members {
            if configured.insert(m.name.clone(), m.addr).is_some() {
                return Err(ConfigError::DuplicateMember(m.name.clone()));
            }
        }
        // The voter set a change committed (kept with term and vote) wins over the
        // configuration, which is then at most a proposal: a restarted host never falls back
        // to an older set.
        let vs = hard
            .voters
            .clone()
            .unwrap_or_else(|| VoterState::configured(configured.clone()));
        let mut names: Vec<String> = vs.voters.keys().cloned().collect();
        let nv = names.len();
        // A host the committed set no longer lists (a removed voter) goes on as a member at
        // the address it had.
        let own_addr = cfg.address.or_else(|| configured.get(&cfg.me).copied());
        let me = match names.iter().position(|n| *n == cfg.me) {
            Some(i) => i,
            None if own_addr.is_some() && !cfg.witness => {
                names.push(cfg.me.clone());
                nv
            }
            None if cfg.witness => return Err(ConfigError::WitnessNotVoter(cfg.me.clone())),
            None => return Err(ConfigError::NotAMember(cfg.me.clone())),
        };
        let voted_for = match hard.voted_for {
            None => None,
            Some(v) => Some(match names.iter().position(|n| *n == v) {
                Some(i) => i,
                // A vote for a host a change removed since.
                None if vs.version > 0 => {
                    names.push(v);
                    names.len() - 1
                }
                None => return Err(ConfigError::UnknownVote(v)),
            }),
        };
        let e = cfg.timing.election_timeout;
        let t = cfg.timing;
        // Restart quarantine: no promise before the end of every promise this voter may have
        // given before it (re)started and forgot: a lease (quorum leases), or an election
        // timeout (a version-1 voter's promise not to vote, on which a version-1 leader's
        // leases rest: a host upgraded from version 1 keeps it too; docs/operate.md), plus
        // the drift. A cluster of one for good has no other holder a forgotten promise could
        // let in; a single voter that members may join does.
        let quiet_until = if nv == 1 && cfg.solo {
            now
        } else {
            now + t.lease.max(e) + t.clock_drift
        };
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let voter_ix: BTreeMap<usize, SocketAddr> = vs
            .voters
            .values()
            .enumerate()
            .map(|(i, a)| (i, *a))
            .collect();
        let mut node = Node {
            me,
            names,
            index,
            voters: voter_ix.clone(),
            digest: voters::digest(&vs.voters),
            vs,
            proposal: None,
            roster: BTreeMap::new(),
            roster_version: (0, 0),
            my_addr: if me >= nv { own_addr } else { None },
            filter: MemberFilter::Anyone,
            next_join: now,
            witness: cfg.witness,
            timing: t,
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            term: hard.term,
            voted_for,
            role: Role::Follower,
            leader: None,
            promise_until: now + e,
            election_deadline: now + e,
            next_ack_seq: cfg.incarnation.max(1),
            map: Assignment::default(),
            voter: lease::Voter::new(t.lease, t.clock_drift, quiet_until),
            holder: lease::Holder::new(
                voter_ix.keys().copied().collect(),
                t.lease,
                t.clock_drift,
                cfg.incarnation,
            ),
            next_renew: now,
            eligible: BTreeSet::new(),
            eligibility_version: cfg.incarnation.max(1),
            reported_held: BTreeSet::new(),
            relinquished: BTreeMap::new(),
            desired: BTreeMap::new(),
            lost: BTreeMap::new(),
            votes: BTreeSet::new(),
            vote_sent_at: now,
            vote_reports: BTreeMap::new(),
            lead: None,
            leaving: false,
            handover: BTreeSet::new(),
            leave_by: None,
            done: false,
            last_now: now,
            last_leases: BTreeMap::new(),
            mutation: None,
            map_inputs: Memo(0),
            wants_cache: Memo(None),
            wants_gen: Memo(0),
            tended_gen: Memo(0),
            lease_cache: Memo(None),
            last_emit: None,
            emit_pending: false,
            emitted_until: Memo(None),
            lease_gen: Memo(0),
            held_gen: Memo(u64::MAX),
            emitted_gen: Memo(u64::MAX),
        };
        node.election_deadline = now + node.random_timeout();
        // A file that lists other voters than the recorded set proposes nothing by itself
        // (the shell says so): only a reload does, so a voter restarted with a file not yet
        // updated cannot undo a change.
        let mut out = Vec::new();
        if nv == 1 && me == 0 && !node.witness {
            node.become_candidate(now, false, &mut out);
        }
        if hard.voters.is_none() && !out.iter().any(|o| matches!(o, Output::Persist(_))) {
            // The set this host starts with is recorded before anything is sent: restarted
            // later with a file that lists a new set, it proposes that rather than taking it
            // for the running one.
            out.insert(0, Output::Persist(node.hard_state()));
        }
        Ok((node, out))
    }

    /// Mutation checks only: makes this node one of the broken variants of [`Mutation`]
    /// (call right after [`Node::new`]).
    #[doc(hidden)]
    pub fn set_mutation(&mut self, m: Mutation, now: Instant) {
        self.mutation = Some(m);
        if m == Mutation::ForgetPromisesOnRestart {
            self.voter.skip_quarantine(now);
        }
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

    /// Does this host vote (is it one of the committed voters)?
    pub fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.me)
    }

    fn votes_(&self, i: usize) -> bool {
        self.voters.contains_key(&i)
    }

    /// A majority of the committed voters is in `set`.
    fn majority_of_voters(&self, set: &BTreeSet<usize>) -> bool {
        set.iter().filter(|i| self.votes_(**i)).count() >= majority(self.voters.len())
    }

    /// The committed voter set: (version, name → address).
    pub fn voter_set(&self) -> (u64, &Voters) {
        (self.vs.version, &self.vs.voters)
    }

    /// The voter set as kept with term and vote (what `hard_state().voters` holds).
    pub fn voter_state(&self) -> &VoterState {
        &self.vs
    }

    /// The admitted members that do not vote, with their addresses (the leader's list;
    /// empty on a member, which talks to the voters only).
    pub fn roster(&self) -> BTreeMap<String, SocketAddr> {
        self.roster
            .iter()
            .map(|(i, a)| (self.names[*i].clone(), *a))
            .collect()
    }

    /// Changes whenever [`Node::peers`] may gain or lose a voter: (committed version,
    /// accepted version, proposed version).
    pub fn peers_version(&self) -> (u64, u64, u64) {
        (
            self.vs.version,
            self.vs.accepted.as_ref().map_or(0, |a| a.version),
            self.lead
                .as_ref()
                .and_then(|l| l.change.as_ref())
                .map_or(0, |(v, _)| *v),
        )
    }

    /// (term, seq) of [`Node::roster`].
    pub fn roster_version(&self) -> (u64, u64) {
        self.roster_version
    }

    /// Every host this one may send to, with its address: the voters and the admitted
    /// members (what the transport needs).
    pub fn peers(&self) -> BTreeMap<String, SocketAddr> {
        let mut p = self.roster();
        // A proposed set's new voter (the leader sends it the proposal), then the committed
        // voters (their addresses win).
        let proposed = self.lead.as_ref().and_then(|l| l.change.as_ref());
        for v in proposed
            .map(|(_, v)| v)
            .into_iter()
            .chain(self.vs.accepted.as_ref().map(|a| &a.voters))
        {
            for (n, a) in v {
                p.insert(n.clone(), *a);
            }
        }
        for (i, a) in &self.voters {
            p.insert(self.names[*i].clone(), *a);
        }
        p.remove(&self.names[self.me]);
        p
    }

    /// Voters, admitted members, and this host.
    fn hosts(&self) -> Vec<usize> {
        let mut h: Vec<usize> = self
            .voters
            .keys()
            .copied()
            .chain(self.roster.keys().copied().filter(|i| !self.votes_(*i)))
            .collect();
        if !self.is_voter() && !self.roster.contains_key(&self.me) {
            h.push(self.me);
        }
        h
    }

    fn admitted(&self, i: usize) -> bool {
        self.votes_(i) || i == self.me || self.roster.contains_key(&i)
    }

    /// The index of `name`, added to the table if new.
    fn index_of(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.names.len();
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        if let Some(l) = &mut self.lead {
            l.peers.resize(self.names.len(), Peer::default());
        }
        i
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for.map(|i| self.names[i].clone()),
            voters: Some(self.vs.clone()),
        }
    }

    /// The version (term, epoch) of the map this host follows.
    pub fn map_version(&self) -> (u64, u64) {
        self.map.version
    }

    /// This voter's promises: IP → (holder, deadline on this host's clock).
    pub fn promises(&self) -> BTreeMap<IpAddr, (String, Instant)> {
        self.voter
            .promises()
            .iter()
            .map(|(ip, p)| (*ip, (self.names[p.holder].clone(), p.until)))
            .collect()
    }

    /// The IPs this host may answer for at `now` (valid lease, still locally eligible).
    pub fn owned_ips(&self, now: Instant) -> BTreeSet<IpAddr> {
        // The leases as of the last step (what its `Output::Leases` said): between steps only
        // time passes, and it only ends leases.
        self.last_leases
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// IP → lease deadline (after `last_now`) for every IP this host wants and has a majority
    /// of grants for. From the cache while no input changed and none of them ended.
    fn leases(&self) -> Arc<BTreeMap<IpAddr, Instant>> {
        if let Some(c) = &self.lease_cache.0
            && c.valid(self.last_now)
        {
            debug_assert_eq!(*c.leases, self.compute_leases(), "stale lease cache");
            return c.leases.clone();
        }
        Arc::new(self.compute_leases())
    }

    fn compute_leases(&self) -> BTreeMap<IpAddr, Instant> {
        let (hold, standby) = self.wants(self.last_now);
        hold.iter()
            .chain(standby.iter())
            .filter_map(|ip| self.holder.lease_end(ip).map(|end| (*ip, end)))
            .filter(|(_, end)| self.last_now < *end)
            .collect()
    }

    /// Brings the lease cache up to date (at `last_now`).
    fn refresh_leases(&mut self) {
        let now = self.last_now;
        if self.lease_cache.0.as_ref().is_some_and(|c| c.valid(now)) {
            return;
        }
        self.refresh_wants(now);
        let leases = self.compute_leases();
        let until = leases.values().min().copied();
        self.lease_gen.0 += 1;
        self.lease_cache.0 = Some(LeaseCache {
            leases: Arc::new(leases),
            at: now,
            until,
        });
    }

    /// An input of `leases` other than `wants` changed (grants, the voter set).
    fn leases_changed(&mut self) {
        self.lease_cache.0 = None;
    }

    /// An input of `wants` changed: the map, eligibility, relinquished IPs, takeover
    /// attempts, released grants, the voter set, leaving.
    fn wants_changed(&mut self) {
        self.wants_cache.0 = None;
        self.lease_cache.0 = None;
    }

    /// What this host asks the voters for: (IPs the map gives it, IPs it takes over or holds
    /// as successor). Both only while eligible, not relinquished, not leaving. From the cache
    /// while no input changed (with thousands of IPs, recomputing it in every step was most
    /// of a host's work: docs/bench/kube-cluster.md).
    fn wants(&self, now: Instant) -> (Arc<BTreeSet<IpAddr>>, Arc<BTreeSet<IpAddr>>) {
        if let Some(c) = &self.wants_cache.0
            && c.valid(now)
        {
            debug_assert!(
                {
                    let (h, s, _) = self.compute_wants(now);
                    h == *c.hold && s == *c.standby
                },
                "stale wants cache"
            );
            return (c.hold.clone(), c.standby.clone());
        }
        let (h, s, _) = self.compute_wants(now);
        (Arc::new(h), Arc::new(s))
    }

    /// Brings the `wants` cache up to date at `now`.
    fn refresh_wants(&mut self, now: Instant) {
        if self.wants_cache.0.as_ref().is_some_and(|c| c.valid(now)) {
            return;
        }
        let (hold, standby, until) = self.compute_wants(now);
        let same = self
            .wants_cache
            .0
            .as_ref()
            .is_some_and(|c| *c.hold == hold && *c.standby == standby);
        if !same {
            self.wants_gen.0 += 1;
            self.lease_cache.0 = None;
        }
        self.wants_cache.0 = Some(WantsCache {
            hold: Arc::new(hold),
            standby: Arc::new(standby),
            at: now,
            until,
        });
    }

    /// `wants` at `now`, and until when it stays the same if no input changes (the first
    /// moment a wanted standby IP's attempt and lease have both ended).
    fn compute_wants(&self, now: Instant) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>, Instant) {
        let far = now + Duration::from_secs(3600);
        if self.done || self.witness || self.leaving {
            return (BTreeSet::new(), BTreeSet::new(), far);
        }
        let ok = |ip: &IpAddr| self.eligible.contains(ip) && !self.relinquished.contains_key(ip);
        let hold: BTreeSet<IpAddr> = self.map.hold.iter().filter(|ip| ok(ip)).copied().collect();
        let mut until = far;
        let standby: BTreeSet<IpAddr> = self
            .map
            .standby
            .iter()
            .filter(|ip| ok(ip) && !hold.contains(*ip))
            .filter(|ip| {
                let a = self.holder.attempts.get(*ip).map(|a| a.until);
                let l = self.holder.lease_end(ip);
                let end = a.max(l).filter(|e| now < *e);
                if let Some(e) = end {
                    until = until.min(e);
                }
                end.is_some()
            })
            .copied()
            .collect();
        (hold, standby, until)
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
            for i in self.hosts() {
                if let Some(b) = self.down_at(i)
                    && b > self.last_now
                {
                    t = t.min(b);
                }
            }
        }
        if let Some(v) = self.voter.next_deadline() {
            t = t.min(v);
        }
        if let Some(b) = self.leave_by {
            t = t.min(b);
        }
        if self.joining() {
            t = t.min(self.next_join);
        }
        let (hold, standby) = self.wants(self.last_now);
        if !hold.is_empty() || !standby.is_empty() {
            t = t.min(self.next_renew);
        }
        for a in self.holder.attempts.values() {
            if a.until > self.last_now {
                t = t.min(a.until);
            }
        }
        if let Some(until) = self.emitted_until.0
            && until > self.last_now
        {
            t = t.min(until);
        }
        if self.emit_pending
            && let Some(at) = self.last_emit
        {
            t = t.min(at + self.timing.heartbeat / 2);
        }
        t
    }

    pub fn status(&self, now: Instant) -> Status {
        let mut members = Vec::new();
        // IPs per host in the map, counted once (not once per host: this runs every step).
        let mut owns: BTreeMap<usize, usize> = BTreeMap::new();
        if let Some(l) = &self.lead {
            for o in l.owners.values() {
                *owns.entry(*o).or_default() += 1;
            }
        }
        for i in self.hosts() {
            let name = &self.names[i];
            let mut m = MemberStatus {
                name: name.clone(),
                voter: self.votes_(i),
                addr: if let Some(a) = self.voters.get(&i) {
                    Some(*a)
                } else if i == self.me {
                    self.join_addr()
                } else {
                    self.roster.get(&i).copied()
                },
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
                m.owns = owns.get(&i).copied().unwrap_or(0);
            }
            members.push(m);
        }
        let leases = self.leases();
        let owned: BTreeSet<IpAddr> = leases
            .iter()
            .filter(|(_, u)| now < **u)
            .map(|(ip, _)| *ip)
            .collect();
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
            lease_until: leases.values().filter(|u| now < **u).min().copied(),
            owned,
        }
    }

    // ---- step ----------------------------------------------------------------------------

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let before = self.last_now;
        self.last_now = self.last_now.max(now);
        if self.done {
            return out;
        }
        // Renewals, grants and releases change no placement input: the leader need not
        // recompute the map for them (they are most of the traffic), nor for routine acks.
        let lease_message = matches!(
            &input,
            Input::Received {
                msg: Message {
                    body: Body::Renew(_) | Body::Grant(_) | Body::Release(_),
                    ..
                },
                ..
            }
        ) || self.routine_ack(now, &input);
        // Unless a host counted as down since the previous step: the leader's wake-up for
        // that may come after this step, which takes its place.
        let lease_message = lease_message && !self.went_down(before, now);
        match input {
            Input::Tick => {}
            Input::Received {
                from,
                msg:
                    Message {
                        body: Body::Voters(v),
                        ..
                    },
            } => {
                // From any host with the key, admitted here or not: a new voter hears the
                // proposal before it is listed, a host left behind hears the commit from a
                // voter it does not know yet.
                if from != self.names[self.me] {
                    self.on_voters(now, &from, v, &mut out);
                }
            }
            Input::Received { from, msg }
                if self.stale_sender(&msg) && from != self.names[self.me] =>
            {
                // A host behind this one's voter set (a voter a change removed that still
                // campaigns, a holder that missed the commit): it learns the set here.
                let body = self.voter_set_body(true);
                let to = self.index_of(&from);
                self.send(&mut out, to, self.term, body);
            }
            Input::Received { from, msg } => match self.index.get(&from).copied() {
                Some(f) if f != self.me && self.admitted(f) => {
                    self.receive(now, f, msg, &mut out);
                }
                Some(f) if f == self.me => {}
                // Not (or no longer) admitted: only its request to join is heard.
                _ => {
                    if let Body::Join(j) = msg.body {
                        self.on_join(now, &from, j, &mut out);
                    }
                }
            },
            Input::LocalEligibility(ips) => {
                let gone = self.eligible.difference(&ips).map(|ip| (*ip, false));
                let new = ips.difference(&self.eligible).map(|ip| (*ip, true));
                let changes: Vec<(IpAddr, bool)> = gone.chain(new).collect();
                self.change_eligibility(changes);
            }
            Input::EligibilityChanges(changes) => self.change_eligibility(changes),
            Input::DesiredIps(d) => {
                self.desired = d;
                self.map_inputs_changed();
            }
            Input::DesiredChanges(changes) => {
                for (ip, name) in changes {
                    match name {
                        Some(n) => self.desired.insert(ip, n),
                        None => self.desired.remove(&ip),
                    };
                }
                self.map_inputs_changed();
            }
            Input::Shutdown => self.shutdown(now, &mut out),
            Input::ProposeVoters(v) => self.propose(v, &mut out),
            Input::AllowedMembers(f) => {
                self.filter = f;
                self.map_inputs_changed();
            }
            Input::RemoveMember(name) => {
                let result = self.remove_member(now, &name, &mut out);
                out.push(Output::RemoveDone { name, result });
            }
        }
        if !self.done {
            self.on_timers(now, lease_message, &mut out);
            self.tend_leases(now, &mut out);
            self.check_left(now, &mut out);
        }
        self.emit_leases(&mut out);
        out
    }

    /// Leader: an ack that changes no placement input either (most acks): from a host that
    /// was alive and had acked before, not newly leaving, with no report or one of the
    /// eligibility version the leader has. Its map would come out the same, so it is not
    /// recomputed (with many members that was most of an idle leader's CPU); other changes
    /// with time (a young IP's window) are looked at on the next tick, at the latest the next
    /// heartbeat. Not the same as the map-input memo of `reconcile_if_changed`: while young IPs
    /// or a rebalance are pending, that one recomputes the map on every step it is asked, so
    /// without this every ack of a Service burst would recompute it.
    fn routine_ack(&self, now: Instant, input: &Input) -> bool {
        let Input::Received {
            from,
            msg: Message {
                term,
                body: Body::Ack(a),
            },
        } = input
        else {
            return false;
        };
        let (Some(l), Some(i)) = (&self.lead, self.index.get(from).copied()) else {
            return false;
        };
        let p = &l.peers[i];
        *term == self.term
            && self.admitted(i)
            && p.latest_ack.is_some()
            && p.eligible.is_some()
            && self.alive(i, now)
            && a.leaving == p.leaving
            && a.report
                .as_ref()
                .is_none_or(|r| r.eligibility_version == p.eligibility_version)
    }

    /// Leader: some host counts as down (silent past lease + drift) at `now` but did not at
    /// `before`.
    fn went_down(&self, before: Instant, now: Instant) -> bool {
        self.lead.is_some()
            && self
                .hosts()
                .into_iter()
                .filter_map(|h| self.down_at(h))
                .any(|d| before < d && d <= now)
    }

    /// Applies eligibility changes. An IP given up (no longer eligible) while held or assigned
    /// is asked for again only once the leader assigns it knowing this host is eligible
    /// again: the eligibility version it must have seen is recorded.
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
                if self.map.hold.contains(&ip) || self.holder.lease_end(&ip).is_some() {
                    self.relinquished.insert(ip, None);
                }
            }
        }
        if changed {
            self.eligibility_version = version;
            self.map_inputs_changed();
            self.wants_changed();
        }
    }

    fn on_timers(&mut self, now: Instant, lease_message: bool, out: &mut Vec<Output>) {
        if self.role == Role::Leader {
            self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
            match self.authority() {
                Some(a) if a > now => {
                    if !lease_message {
                        self.forget_members(now, out);
                        self.tend_voters(now, out);
                        self.reconcile_if_changed(now);
                    }
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
                }
                _ => self.step_down(now, self.term, None, out),
            }
        } else if !self.is_voter() {
            // A member never campaigns: without a leader it asks the voters to admit it.
            if now >= self.election_deadline {
                if self.leader.is_some() {
                    self.leader = None;
                    self.role_changed(out);
                }
                self.election_deadline = now + self.random_timeout();
            }
            if self.joining() && now >= self.next_join {
                self.next_join = now + self.timing.heartbeat;
                if let Some(addr) = self.join_addr() {
                    let body = Body::Join(Join {
                        addr,
                        voters: self.digest,
                    });
                    self.broadcast(out, self.term, body);
                }
            }
        } else if now >= self.election_deadline
            && now >= self.promise_until
            && !self.witness
            && !self.leaving
        {
            self.start_pre_vote(now, out);
        } else if now >= self.election_deadline {
            self.election_deadline = now.max(self.promise_until) + self.random_timeout() / 8;
        }
    }

    // ---- leases (voter and holder) --------------------------------------------------------

    /// Voter: ends promises whose time is up, grants waiting requests, starts takeovers.
    /// Holder: releases what it no longer wants, renews (every heartbeat, and at once when it
    /// wants something new), reports takeovers.
    fn tend_leases(&mut self, now: Instant, out: &mut Vec<Output>) {
        let freed = self.voter.expire(now);
        self.on_freed(now, freed, out);
        // Takeovers that did not reach a majority in time give back what they got, so two
        // would-be holders never keep each other below a majority.
        let failed: Vec<IpAddr> = self
            .holder
            .attempts
            .iter()
            .filter(|(ip, a)| now >= a.until && self.holder.lease_end(ip).is_none_or(|e| now >= e))
            .map(|(ip, _)| *ip)
            .collect();
        if !failed.is_empty() {
            self.wants_changed();
        }
        for ip in failed {
            self.holder.attempts.remove(&ip);
        }
        self.refresh_wants(now);
        let (hold, standby) = self.wants(now);
        // What to release and what is new change only with `wants` (a grant for an IP not
        // wanted is released when it arrives): looked at once per change, not per step.
        let changed = self.wants_gen.0 != self.tended_gen.0;
        self.tended_gen.0 = self.wants_gen.0;
        let mut new = false;
        if changed {
            let unwanted: Vec<IpAddr> = self
                .holder
                .granted_ips()
                .filter(|ip| !hold.contains(*ip) && !standby.contains(*ip))
                .copied()
                .collect();
            if !unwanted.is_empty() {
                self.release(now, &unwanted, None, out);
            }
            new = hold
                .iter()
                .chain(standby.iter())
                .any(|ip| !self.holder.asked.contains(ip));
        }
        let none = hold.is_empty() && standby.is_empty();
        if !none && (now >= self.next_renew || new) {
            self.renew(now, &hold, &standby, out);
        } else if none {
            self.holder.asked.clear();
        }
        // Takeovers that reached a majority are done.
        let won: Vec<IpAddr> = self
            .holder
            .attempts
            .keys()
            .filter(|ip| self.holder.lease_end(ip).is_some_and(|e| now < e))
            .copied()
            .collect();
        if !won.is_empty() {
            self.wants_changed();
        }
        for ip in won {
            self.holder.attempts.remove(&ip);
        }
        self.holder.prune(now);
        // A change in what this host holds is reported to the leader like an eligibility
        // change (a new leader keeps current holders; docs/raft-lite.md §5).
        // (Leases end after `last_now` >= `now`; the set changes only when the cache does.)
        self.refresh_leases();
        let leases = self.leases();
        let same = self.held_gen.0 == self.lease_gen.0
            || (leases.len() == self.reported_held.len()
                && leases.keys().eq(self.reported_held.iter()));
        self.held_gen.0 = self.lease_gen.0;
        if !same {
            let held: BTreeSet<IpAddr> = leases.keys().copied().collect();
            // An IP this host now holds whose previous holder went silent: a failover (as a
            // successor, or by the leader's new map, whichever came first).
            for ip in held.difference(&self.reported_held) {
                // A majority may have freed the IP before this host's own voter did (its
                // clock, or the last renewal's arrival, a little later): that promise, not
                // yet ended, dates the holder's silence just as well.
                let silent = self.lost.remove(ip).or_else(|| {
                    self.voter
                        .promises()
                        .get(ip)
                        .filter(|p| p.holder != self.me)
                        .map(|p| p.renewed)
                });
                if let Some(since) = silent {
                    out.push(Output::Failover {
                        ip: *ip,
                        to: self.names[self.me].clone(),
                        took: now.saturating_duration_since(since),
                    });
                }
            }
            self.reported_held = held;
            self.eligibility_version += 1;
            self.map_inputs_changed();
        }
    }

    /// Sends one renewal request to every voter (this host's own voter answers at once).
    fn renew(
        &mut self,
        now: Instant,
        hold: &BTreeSet<IpAddr>,
        standby: &BTreeSet<IpAddr>,
        out: &mut Vec<Output>,
    ) {
        let seq = self.holder.next_request(now);
        let r = Renew {
            seq,
            claim: self.map.version,
            ips: hold.iter().copied().collect(),
            standby: standby.iter().copied().collect(),
            version: self.vs.version,
        };
        self.holder.asked = hold.union(standby).copied().collect();
        self.next_renew = now + self.timing.heartbeat;
        for i in self.voters.keys() {
            if *i != self.me {
                self.send(out, *i, self.term, Body::Renew(r.clone()));
            }
        }
        if self.is_voter()
            && let Some(ips) = self.voter.renew(now, self.me, &r)
        {
            self.on_grant(now, self.me, seq, &ips, out);
        }
    }

    /// Stops counting `ips` and tells the voters (all, or `only` one) to forget this host's
    /// promises on them. The caller has already stopped answering for them: this step's
    /// `Leases` goes first in the batch.
    fn release(
        &mut self,
        now: Instant,
        ips: &[IpAddr],
        only: Option<usize>,
        out: &mut Vec<Output>,
    ) {
        for ip in ips {
            self.holder.forget(ip);
        }
        self.wants_changed();
        let seq = self.holder.next_request(now);
        let body = Body::Release(Release {
            seq,
            ips: ips.to_vec(),
        });
        match only {
            Some(v) if v != self.me => self.send(out, v, self.term, body),
            Some(_) => {}
            None => {
                for i in self.voters.keys() {
                    if *i != self.me {
                        self.send(out, *i, self.term, body.clone());
                    }
                }
            }
        }
        if self.is_voter() && only.is_none_or(|v| v == self.me) {
            let freed = self.voter.release(self.me, seq, ips);
            self.on_freed(now, freed, out);
        }
    }

    /// Holder: voter `from` granted `ips` for request `seq`.
    fn on_grant(
        &mut self,
        now: Instant,
        from: usize,
        seq: u64,
        ips: &[IpAddr],
        out: &mut Vec<Output>,
    ) {
        self.refresh_wants(now);
        let (hold, standby) = self.wants(now);
        self.leases_changed();
        let received = (self.mutation == Some(Mutation::LeaseFromReceipt)).then_some(now);
        let unwanted = self.holder.on_grant(
            from,
            seq,
            ips,
            |ip| hold.contains(ip) || standby.contains(ip),
            received,
        );
        if !unwanted.is_empty() {
            // Granted after this host stopped wanting them: free them at that voter at once.
            let seq = self.holder.next_request(now);
            let body = Body::Release(Release {
                seq,
                ips: unwanted.clone(),
            });
            if from == self.me && self.is_voter() {
                let freed = self.voter.release(self.me, seq, &unwanted);
                self.on_freed(now, freed, out);
            } else {
                self.send(out, from, self.term, body);
            }
        }
    }

    /// Voter: promises ended. Grant waiting requests; a successor whose holder went silent
    /// (or released) starts taking the IP over.
    fn on_freed(&mut self, now: Instant, freed: Vec<Freed>, out: &mut Vec<Output>) {
        if freed.is_empty() {
            return;
        }
        let ips: Vec<IpAddr> = freed.iter().map(|f| f.ip).collect();
        for f in &freed {
            match f.expired_since {
                Some(since) if f.holder != self.me => {
                    self.lost.insert(f.ip, since);
                }
                _ => {
                    self.lost.remove(&f.ip);
                }
            }
            if f.holder != self.me
                && self.map.standby.contains(&f.ip)
                && !self.map.hold.contains(&f.ip)
                && self.eligible.contains(&f.ip)
                && !self.relinquished.contains_key(&f.ip)
                && !self.leaving
                && !self.witness
            {
                self.holder.attempts.insert(
                    f.ip,
                    Attempt {
                        until: now + self.timing.lease,
                    },
                );
                self.wants_changed();
            }
        }
        let grants = self.voter.grant_pending(now, &ips);
        for g in &grants {
            if g.holder != self.me {
                for ip in &g.ips {
                    self.lost.remove(ip); // another host takes it (and reports it)
                }
            }
        }
        self.send_grants(now, grants, out);
    }

    fn send_grants(&mut self, now: Instant, grants: Vec<Granted>, out: &mut Vec<Output>) {
        for g in grants {
            if g.holder == self.me {
                self.on_grant(now, self.me, g.seq, &g.ips, out);
            } else {
                self.send(
                    out,
                    g.holder,
                    self.term,
                    Body::Grant(Grant {
                        seq: g.seq,
                        ips: g.ips,
                    }),
                );
            }
        }
    }

    /// The step's lease change goes FIRST in the batch: the step may also send a `Release`
    /// (or, as a voter, a `Grant` to another holder of an IP this host just gave up), and a
    /// voter may promise that IP to another holder as soon as the release arrives, so this
    /// host must have stopped answering before it leaves. A lease gained in the step is valid
    /// from `now` anyway.
    ///
    /// A map that only pushes ends later (the renewals of every heartbeat, one grant from
    /// each voter) goes out at most every half heartbeat: each such map costs the shell work
    /// proportional to the IPs held, and an end emitted late is only earlier, never later,
    /// than the real one. A lease gained or lost, or an end moved earlier, goes out at once.
    fn emit_leases(&mut self, out: &mut Vec<Output>) {
        let now = self.last_now;
        if self.done {
            if !self.last_leases.is_empty() {
                self.emit(now, Arc::new(BTreeMap::new()), out);
            }
            return;
        }
        self.refresh_leases();
        let due = self
            .last_emit
            .is_none_or(|at| now >= at + self.timing.heartbeat / 2);
        let running_out = self
            .emitted_until
            .0
            .is_some_and(|u| u <= now + self.timing.heartbeat);
        // Compared once per new lease map (the memo), and when a held-back one may go.
        if self.lease_gen.0 == self.emitted_gen.0 && !(self.emit_pending && (due || running_out)) {
            return;
        }
        self.emitted_gen.0 = self.lease_gen.0;
        let cur = self.leases();
        if *cur == self.last_leases {
            self.emit_pending = false;
            return;
        }
        let only_later = cur.len() == self.last_leases.len()
            && cur
                .iter()
                .zip(self.last_leases.iter())
                .all(|((a, ea), (b, eb))| a == b && ea >= eb);
        if only_later && !due && !running_out {
            self.emit_pending = true;
        } else {
            self.emit(now, cur, out);
        }
    }

    fn emit(&mut self, now: Instant, cur: Arc<BTreeMap<IpAddr, Instant>>, out: &mut Vec<Output>) {
        self.emit_pending = false;
        self.last_emit = Some(now);
        self.emitted_until.0 = cur.values().min().copied();
        self.last_leases = (*cur).clone();
        out.insert(0, Output::Leases(self.last_leases.clone()));
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

    /// To every other voter.
    fn broadcast(&self, out: &mut Vec<Output>, term: u64, body: Body) {
        for i in self.voters.keys() {
            if *i != self.me {
                self.send(out, *i, term, body.clone());
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
        if self.majority_of_voters(&self.votes) {
            self.become_candidate(now, false, out);
            return;
        }
        let version = self.vs.version;
        self.broadcast(out, self.term + 1, Body::PreVote { version });
    }

    /// `transfer`: the leader asked for it (TimeoutNow), a planned hand-over.
    fn become_candidate(&mut self, now: Instant, transfer: bool, out: &mut Vec<Output>) {
        self.term += 1;
        self.voted_for = Some(self.me);
        self.role = Role::Candidate;
        self.leader = None;
        // Voting for oneself is a vote: it carries the same promise.
        self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
        self.votes = BTreeSet::from([self.me]);
        self.vote_reports.clear();
        self.vote_sent_at = now;
        self.election_deadline = now + self.random_timeout();
        self.persist(out);
        out.push(Output::ElectionStarted { term: self.term });
        if self.majority_of_voters(&self.votes) {
            self.become_leader(now, out);
            return;
        }
        self.role_changed(out);
        let version = self.vs.version;
        self.broadcast(out, self.term, Body::Vote { transfer, version });
    }

    /// Adopt a higher term (or lose leadership in this one). Leases are NOT touched: they
    /// come from the voters, not from the leader, and outlive it.
    fn step_down(&mut self, now: Instant, term: u64, leader: Option<usize>, out: &mut Vec<Output>) {
        let was = (self.role, self.leader, self.term);
        self.lead = None;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
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
            held: self.reported_held.iter().copied().collect(),
        }
    }

    fn next_ack(&mut self) -> u64 {
        let seq = self.next_ack_seq;
        self.next_ack_seq += 1;
        seq
    }

    fn receive(&mut self, now: Instant, from: usize, msg: Message, out: &mut Vec<Output>) {
        let term = msg.term;
        // Elections, leadership and grants come from voters only; a member neither votes
        // nor promises, and talks to the voters only.
        let from_voters_only = matches!(
            msg.body,
            Body::PreVote { .. }
                | Body::PreVoteReply { .. }
                | Body::Vote { .. }
                | Body::VoteReply { .. }
                | Body::Heartbeat(_)
                | Body::TimeoutNow
                | Body::Grant(_)
                | Body::Roster(_)
        );
        let to_voters_only = matches!(
            msg.body,
            Body::PreVote { .. }
                | Body::Vote { .. }
                | Body::Renew(_)
                | Body::Release(_)
                | Body::Join(_)
                | Body::Roster(_)
        );
        if (from_voters_only && !self.votes_(from)) || (to_voters_only && !self.is_voter()) {
            return;
        }
        match msg.body {
            Body::PreVote { version } => {
                // A candidate behind this voter's voter set is refused (like Raft's
                // up-to-date check: after a change is fenced, an older set has no majority).
                let granted = !self.leaving
                    && !self.in_promise(now)
                    && term > self.term
                    && version >= self.vs.version;
                let t = if granted { term } else { self.term };
                self.send(out, from, t, Body::PreVoteReply { granted });
            }
            Body::Vote { transfer, version } => {
                self.on_vote_request(now, from, term, transfer, version, out)
            }
            Body::PreVoteReply { granted } => {
                if term > self.term && !granted {
                    self.step_down(now, term, None, out);
                } else if self.role == Role::PreCandidate && granted && term == self.term + 1 {
                    self.votes.insert(from);
                    if self.majority_of_voters(&self.votes) {
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
                    if self.majority_of_voters(&self.votes) {
                        self.become_leader(now, out);
                    }
                } else if self.role == Role::Leader && granted && term == self.term {
                    // A vote that arrives after the majority: its report still tells this new
                    // leader what that host holds, a round trip before its first ack would.
                    self.on_late_vote(now, from, ack_seq, report);
                }
            }
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, term, hb, out),
            Body::Ack(ack) => {
                if term > self.term {
                    self.step_down(now, term, None, out);
                } else if term == self.term && self.role == Role::Leader {
                    self.on_ack(now, from, ack, out);
                }
            }
            Body::TimeoutNow => {
                if term == self.term && self.leader == Some(from) && !self.witness && !self.leaving
                {
                    self.become_candidate(now, true, out);
                }
            }
            // Lease messages are independent of terms: a voter's promise binds it whoever
            // leads (the term in their header is informational).
            // A voter at voter-set version v grants only requests showing v or v + 1: once a
            // majority of S_k is past k, no holder still counting S_k can gather a majority
            // of it (docs/raft-lite.md, "Changing the voter set").
            Body::Renew(r)
                if r.version != self.vs.version
                    && r.version != self.vs.version + 1
                    && self.mutation != Some(Mutation::NoVersionGate) => {}
            Body::Renew(r) => {
                if let Some(ips) = self.voter.renew(now, from, &r)
                    && !ips.is_empty()
                {
                    for ip in &ips {
                        self.lost.remove(ip); // another host holds it (and reports a failover)
                    }
                    self.send(out, from, self.term, Body::Grant(Grant { seq: r.seq, ips }));
                }
            }
            Body::Grant(g) => self.on_grant(now, from, g.seq, &g.ips, out),
            Body::Release(r) => {
                let freed = self.voter.release(from, r.seq, &r.ips);
                self.on_freed(now, freed, out);
            }
            Body::Join(j) => {
                let name = self.names[from].clone();
                self.on_join(now, &name, j, out);
            }
            Body::Roster(r) => self.on_roster(term, r),
            Body::Voters(_) => {} // handled in `step`, from any host
        }
    }

    fn on_vote_request(
        &mut self,
        now: Instant,
        from: usize,
        term: u64,
        transfer: bool,
        version: u64,
        out: &mut Vec<Output>,
    ) {
        // Within a promise the request is ignored entirely, term included (thesis §4.2.3),
        // unless it is a hand-over the leader itself started. A candidate behind this
        // voter's voter set is refused.
        if term < self.term
            || (!transfer && self.in_promise(now))
            || self.leaving
            || version < self.vs.version
        {
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
        let ack_seq = if granted { self.next_ack() } else { 0 };
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
                p.held = r.held.into_iter().collect();
                self.map_inputs.0 += 1;
            }
        }
        // Members the previous leader admitted (its last list this voter heard) stay
        // admitted; they count as heard from now on, for forgetting.
        for i in self.roster.keys() {
            peers[*i].admitted_at = Some(now);
        }
        self.roster_version = (self.term, 1);
        self.lead = Some(Leadership {
            elected_at: now,
            next_heartbeat: now,
            heartbeat_seq: 0,
            heartbeats_sent: VecDeque::new(),
            peers,
            epoch: 0,
            owners: BTreeMap::new(),
            successors: BTreeMap::new(),
            roster_refresh_in: 0,
            rebalance: BTreeSet::new(),
            young: BTreeMap::new(),
            change: None,
            version_since: now,
            reconciled: Memo(None),
        });
        self.promise_until = self.promise_until.max(now + self.timing.election_timeout);
        self.role_changed(out);
        self.reconcile(now);
        self.broadcast_heartbeats(now, out);
    }

    // ---- members (voters are fixed; members join and leave) -------------------------------

    /// A member without a leader asks to be admitted.
    fn joining(&self) -> bool {
        !self.is_voter() && self.leader.is_none() && !self.leaving && !self.done
    }

    /// Leader: `name` asks to be admitted at `j.addr`. Admitted members are sent
    /// heartbeats (and so a map) and listed to the voters, which then promise to them.
    fn on_join(&mut self, now: Instant, name: &str, j: Join, out: &mut Vec<Output>) {
        if self.role != Role::Leader {
            // Only the leader admits; the member retries until it hears one. A host joining
            // with a set this one used before missed a change: any voter teaches it.
            if j.voters != self.digest && self.vs.used_before(j.voters) && self.is_voter() {
                let body = self.voter_set_body(true);
                let to = self.index_of(name);
                self.send(out, to, self.term, body);
            }
            return;
        }
        // During a change a member may be configured with the set before or after it.
        let known_lists = [
            Some(self.digest),
            (self.vs.version > 0).then(|| voters::digest(&self.vs.previous)),
            self.lead
                .as_ref()
                .and_then(|l| l.change.as_ref())
                .map(|(_, v)| voters::digest(v)),
            self.proposal.as_ref().map(voters::digest),
        ];
        let refuse = if self.index.get(name).is_some_and(|i| self.votes_(*i)) {
            Some(Refusal::VoterName)
        } else if !known_lists.contains(&Some(j.voters)) {
            Some(Refusal::VoterListDiffers)
        } else if let Some(r) = match &self.filter {
            MemberFilter::Anyone => None,
            // The Nodes are not listed yet: no answer; the host asks again.
            MemberFilter::Pending => return,
            MemberFilter::Only(allowed) => match allowed.get(name) {
                None => Some(Refusal::NotANode),
                Some(a) if *a != j.addr => Some(Refusal::AddressNotNodeIp),
                Some(_) => None,
            },
        } {
            Some(r)
        } else if self.voters.values().any(|a| *a == j.addr)
            || self
                .roster
                .iter()
                .any(|(i, a)| *a == j.addr && self.names[*i] != name)
        {
            Some(Refusal::DuplicateAddress)
        } else {
            None
        };
        if refuse == Some(Refusal::VoterListDiffers) && self.vs.used_before(j.voters) {
            // Configured with a set this cluster used before (it missed a change while it
            // was down): it learns the current one and joins with it.
            let body = self.voter_set_body(true);
            let to = self.index_of(name);
            self.send(out, to, self.term, body);
            return;
        }
        if let Some(reason) = refuse {
            out.push(Output::Refused {
                name: name.to_owned(),
                reason,
            });
            return;
        }
        let i = self.index_of(name);
        let changed = self.roster.insert(i, j.addr) != Some(j.addr);
        if let Some(l) = &mut self.lead {
            let p = &mut l.peers[i];
            p.heartbeat_now = true;
            p.admitted_at = Some(now);
            if changed {
                // A new member, or one at a new address: nothing it said before counts.
                *p = Peer {
                    heartbeat_now: true,
                    admitted_at: Some(now),
                    ..Peer::default()
                };
                l.rebalance.insert(i);
            }
        }
        if changed {
            out.push(Output::Admitted {
                name: name.to_owned(),
                addr: j.addr,
            });
            self.roster_changed(out);
        }
    }

    /// Leader: a new version of the member list goes to every voter now.
    fn roster_changed(&mut self, out: &mut Vec<Output>) {
        self.roster_version.1 += 1;
        self.map_inputs_changed();
        self.send_roster(out);
    }

    fn send_roster(&mut self, out: &mut Vec<Output>) {
        let members: Vec<(String, SocketAddr)> = self.roster().into_iter().collect();
        if let Some(l) = &mut self.lead {
            l.roster_refresh_in = ROSTER_REFRESH;
        }
        let body = Body::Roster(Roster {
            seq: self.roster_version.1,
            members,
        });
        self.broadcast(out, self.term, body);
    }

    /// Voter: the leader's member list (newer versions only).
    fn on_roster(&mut self, term: u64, r: Roster) {
        if term < self.term || (term, r.seq) <= self.roster_version || self.role == Role::Leader {
            return;
        }
        self.roster_version = (term, r.seq);
        let mut roster = BTreeMap::new();
        for (name, addr) in r.members {
            let i = self.index_of(&name);
            if !self.votes_(i) && i != self.me {
                roster.insert(i, addr);
            }
        }
        self.roster = roster;
    }

    /// Leader: forgets members that left (one election timeout after they said so) or were
    /// silent for [`FORGET_AFTER_ELECTION_TIMEOUTS`]. Their IPs moved long before (a
    /// leaving or silent host is no candidate).
    fn forget_members(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.evict_unlisted(now);
        let Some(l) = &self.lead else { return };
        let e = self.timing.election_timeout;
        let evict_bound = self.timing.lease + self.timing.clock_drift;
        let gone: Vec<usize> = self
            .roster
            .keys()
            .copied()
            .filter(|i| {
                let p = &l.peers[*i];
                if let Some(since) = p.evicted_at {
                    // Its IPs moved in the map it acknowledged (it holds none), or its
                    // leases have lapsed anyway.
                    let moved = p.acked_epoch >= l.epoch && p.held.is_empty();
                    let moved = moved && !l.owners.values().any(|o| o == i);
                    if moved || now >= since + evict_bound {
                        return true;
                    }
                }
                let seen = p
                    .latest_ack_received
                    .max(p.admitted_at)
                    .unwrap_or(l.elected_at);
                let bound = if p.leaving {
                    e
                } else {
                    e * FORGET_AFTER_ELECTION_TIMEOUTS
                };
                now >= seen + bound
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        for i in gone {
            self.roster.remove(&i);
            out.push(Output::Forgotten {
                name: self.names[i].clone(),
            });
        }
        self.roster_changed(out);
    }

    // ---- the voter set (docs/raft-lite.md, "Changing the voter set") ----------------------

    /// A message showing a voter set older than this host's committed one (answered with
    /// the set, and otherwise ignored: a voter grants no request, and no vote, to a host
    /// behind its set).
    fn stale_sender(&self, msg: &Message) -> bool {
        let shown = match &msg.body {
            Body::PreVote { version } | Body::Vote { version, .. } => *version,
            Body::Renew(r) => r.version,
            _ => return false,
        };
        shown < self.vs.version && self.mutation != Some(Mutation::NoVersionGate)
    }

    fn voter_ack(&self) -> VoterAck {
        let (accepted, accepted_digest) = self
            .vs
            .accepted
            .as_ref()
            .map_or((0, 0), |a| (a.version, voters::digest(&a.voters)));
        VoterAck {
            committed: self.vs.version,
            accepted,
            accepted_digest,
        }
    }

    /// The committed set (`commit`), or this leader's proposal.
    fn voter_set_body(&self, commit: bool) -> Body {
        let list = |v: &Voters| -> Vec<(String, SocketAddr)> {
            v.iter().map(|(n, a)| (n.clone(), *a)).collect()
        };
        let proposal = self.lead.as_ref().and_then(|l| l.change.as_ref());
        match proposal {
            Some((version, set)) if !commit => Body::Voters(VoterSet {
                version: *version,
                commit: false,
                voters: list(set),
                previous: list(&self.vs.voters),
            }),
            _ => Body::Voters(VoterSet {
                version: self.vs.version,
                commit: true,
                voters: list(&self.vs.voters),
                previous: list(&self.vs.previous),
            }),
        }
    }

    /// A voter whose lb.toml asks for a change tells its leader (each heartbeat, until the
    /// change is made): the leader accepts it like its own proposal and makes it once the
    /// last change is fenced, so the reload order does not matter (the leader may be the
    /// voter being removed, whose file cannot drop itself).
    fn report_proposal(&mut self, leader: usize, out: &mut Vec<Output>) {
        if !self.is_voter() || self.vs.accepted.is_some() {
            return;
        }
        let Some(p) = &self.proposal else { return };
        if !matches!(voters::change(&self.vs.voters, p), Ok(Some(_))) {
            return;
        }
        let list = |v: &Voters| -> Vec<(String, SocketAddr)> {
            v.iter().map(|(n, a)| (n.clone(), *a)).collect()
        };
        let body = Body::Voters(VoterSet {
            version: self.vs.version + 1,
            commit: false,
            voters: list(p),
            previous: list(&self.vs.voters),
        });
        self.send(out, leader, self.term, body);
    }

    /// This host's configured voter list (start or reload).
    fn propose(&mut self, v: Voters, out: &mut Vec<Output>) {
        let r = voters::change(&self.vs.voters, &v);
        self.proposal = (!v.is_empty()).then_some(v);
        out.push(Output::VoterProposal(r));
    }

    /// A voter set from `from`: a commit any host adopts when newer, or a leader's proposal
    /// a voter of the running set accepts (the first value it hears for that version, made
    /// durable before its next ack says so).
    fn on_voters(&mut self, now: Instant, from: &str, v: VoterSet, out: &mut Vec<Output>) {
        let set: Voters = v.voters.into_iter().collect();
        if v.commit {
            if v.version > self.vs.version && !set.is_empty() {
                let previous = v.previous.into_iter().collect();
                self.adopt(now, v.version, set, previous, out);
            }
            return;
        }
        if v.version <= self.vs.version {
            // A leader behind this host: tell it what was committed.
            let body = self.voter_set_body(true);
            let to = self.index_of(from);
            self.send(out, to, self.term, body);
            return;
        }
        let previous: Voters = v.previous.into_iter().collect();
        if v.version != self.vs.version + 1 || !self.is_voter() || previous != self.vs.voters {
            return;
        }
        if self
            .vs
            .accepted
            .as_ref()
            .is_none_or(|a| a.version != v.version)
        {
            self.vs.accepted = Some(Accepted {
                version: v.version,
                voters: set,
            });
            self.persist(out);
        }
    }

    /// Uses voter set `version` from now on (committed by a leader; persisted before
    /// anything this step sends).
    fn adopt(
        &mut self,
        now: Instant,
        version: u64,
        set: Voters,
        previous: Voters,
        out: &mut Vec<Output>,
    ) {
        let was_voter = self.is_voter();
        let own_addr = self.voters.get(&self.me).copied();
        let accepted = self.vs.accepted.take().filter(|a| a.version > version);
        let mut history = std::mem::take(&mut self.vs.history);
        for d in [voters::digest(&self.vs.voters), voters::digest(&previous)] {
            if !history.contains(&d) && d != voters::digest(&set) {
                history.push(d);
            }
        }
        if history.len() > voters::HISTORY {
            history.drain(..history.len() - voters::HISTORY);
        }
        self.vs = VoterState {
            version,
            voters: set.clone(),
            previous,
            accepted,
            history,
        };
        let mut ix = BTreeMap::new();
        for (n, a) in &set {
            ix.insert(self.index_of(n), *a);
        }
        // A removed voter stays admitted, as a member at the address it had: it goes on
        // holding its IPs (its grants now come from the new set) until it leaves.
        let old = std::mem::take(&mut self.voters);
        for (i, a) in old {
            if !ix.contains_key(&i) && i != self.me {
                self.roster.insert(i, a);
            }
        }
        for i in ix.keys() {
            self.roster.remove(i);
        }
        if self.lead.is_none() {
            // The leader's next list is taken whatever its number: one heard before this
            // change skipped the hosts that were voters then (a removed voter now joins as
            // a member, and the list that admits it may already have been heard).
            self.roster_version = (0, 0);
        }
        self.voters = ix;
        self.digest = voters::digest(&set);
        self.holder
            .set_voters(self.voters.keys().copied().collect());
        self.wants_changed();
        // Who is a voter, and so who may be a candidate, changed: the map is recomputed.
        self.map_inputs_changed();
        self.persist(out);
        if let Some(l) = &mut self.lead {
            l.change = l.change.take().filter(|(v, _)| *v > version);
            l.version_since = now;
        }
        let removed = was_voter && !self.is_voter();
        if removed {
            // No longer a voter: it stops voting, campaigning and promising, and joins
            // the leader as a member at the address it had.
            self.my_addr = self.my_addr.or(own_addr);
            self.votes.clear();
            if self.lead.take().is_some() || self.role != Role::Follower {
                self.role = Role::Follower;
                self.leader = None;
                self.role_changed(out);
            }
        }
        out.push(Output::VotersChanged {
            version,
            voters: set,
            removed,
        });
    }

    /// Leader: commits its proposal once a majority of the running set accepted that very
    /// value; else proposes the next change (an accepted value left unfinished first, then
    /// this host's own) once the previous change is fenced.
    fn tend_voters(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(l) = &self.lead else { return };
        if let Some((v, set)) = l.change.clone() {
            let d = voters::digest(&set);
            let accepted: BTreeSet<usize> = self
                .voters
                .keys()
                .copied()
                .filter(|i| {
                    if *i == self.me {
                        self.vs
                            .accepted
                            .as_ref()
                            .is_some_and(|a| a.version == v && a.voters == set)
                    } else {
                        let p = &l.peers[*i].voters;
                        p.accepted == v && p.accepted_digest == d
                    }
                })
                .collect();
            if self.majority_of_voters(&accepted) {
                self.commit(now, v, set, out);
            }
            return;
        }
        let next = match &self.vs.accepted {
            Some(a) if a.version == self.vs.version + 1 => Some(a.voters.clone()),
            _ => self.proposal.clone(),
        };
        let Some(set) = next else { return };
        if !matches!(voters::change(&self.vs.voters, &set), Ok(Some(_))) || !self.fenced(now) {
            return;
        }
        let v = self.vs.version + 1;
        if self.vs.accepted.is_none() {
            self.vs.accepted = Some(Accepted {
                version: v,
                voters: set.clone(),
            });
            self.persist(out);
        }
        for n in set.keys() {
            self.index_of(n);
        }
        if let Some(l) = &mut self.lead {
            l.change = Some((v, set.clone()));
        }
        out.push(Output::VotersProposed {
            version: v,
            voters: set,
        });
        self.send_proposal(out);
    }

    /// Leader: its proposal to every voter of the running and the proposed set.
    fn send_proposal(&mut self, out: &mut Vec<Output>) {
        let Some((_, set)) = self.lead.as_ref().and_then(|l| l.change.clone()) else {
            return;
        };
        let body = self.voter_set_body(false);
        let mut to: BTreeSet<usize> = self.voters.keys().copied().collect();
        for n in set.keys() {
            to.insert(self.index_of(n));
        }
        to.remove(&self.me);
        for i in to {
            self.send(out, i, self.term, body.clone());
        }
    }

    /// The last change is fenced: a majority of the set before it (S_{k−1}) reported
    /// committing version k, and one lease + drift passed since: no holder can count a
    /// majority of S_{k−1} any more, so S_{k+1} may be made.
    fn fenced(&self, now: Instant) -> bool {
        if self.vs.version == 0 || self.mutation == Some(Mutation::NoVoterChangeFence) {
            return true;
        }
        let Some(l) = &self.lead else { return false };
        let mut since: Vec<Instant> = self
            .vs
            .previous
            .keys()
            .filter_map(|n| {
                let i = *self.index.get(n)?;
                if i == self.me {
                    return Some(l.version_since);
                }
                let p = &l.peers[i];
                if p.voters.committed >= self.vs.version {
                    p.voters_since
                } else {
                    None
                }
            })
            .collect();
        let k = majority(self.vs.previous.len());
        if since.len() < k {
            return false;
        }
        since.sort_unstable();
        now >= since[k - 1] + self.timing.lease + self.timing.clock_drift
    }

    /// Leader: makes version `v` the committed set and tells every host (the voters of
    /// both sets and the members).
    fn commit(&mut self, now: Instant, v: u64, set: Voters, out: &mut Vec<Output>) {
        let mut to: BTreeSet<usize> = self.voters.keys().copied().collect();
        to.extend(self.roster.keys().copied());
        let previous = self.vs.voters.clone();
        self.adopt(now, v, set, previous, out);
        to.extend(self.voters.keys().copied());
        to.remove(&self.me);
        let body = self.voter_set_body(true);
        for i in to {
            self.send(out, i, self.term, body.clone());
        }
        if self.lead.is_some() && !self.roster.is_empty() {
            // A new voter learns the members now, not at the next refresh.
            self.send_roster(out);
        }
    }

    /// Leader: marks the members the [`MemberFilter`] no longer lists at their address
    /// (their IPs move: they are no candidates), and unmarks those listed again.
    fn evict_unlisted(&mut self, now: Instant) {
        let unlisted: Vec<(usize, bool)> = self
            .roster
            .keys()
            .map(|i| (*i, !self.permitted(*i)))
            .collect();
        let Some(l) = &mut self.lead else { return };
        for (i, out) in unlisted {
            let p = &mut l.peers[i];
            match (out, p.evicted_at) {
                (true, None) => p.evicted_at = Some(now),
                (false, Some(_)) => p.evicted_at = None,
                _ => {}
            }
        }
    }

    /// May host `i` be a member under the [`MemberFilter`] (voters and this host always)?
    fn permitted(&self, i: usize) -> bool {
        if self.votes_(i) || i == self.me {
            return true;
        }
        match &self.filter {
            MemberFilter::Anyone | MemberFilter::Pending => true,
            MemberFilter::Only(allowed) => {
                allowed.get(&self.names[i]).is_some()
                    && allowed.get(&self.names[i]) == self.roster.get(&i)
            }
        }
    }

    /// The address this member asks to join at: its own, or the one the filter gives it
    /// (none while the filter is pending or does not list it).
    fn join_addr(&self) -> Option<SocketAddr> {
        match &self.filter {
            MemberFilter::Anyone => self.my_addr,
            MemberFilter::Pending => None,
            MemberFilter::Only(allowed) => allowed.get(&self.names[self.me]).copied(),
        }
    }

    /// Leader: forgets the member `name` at once (`lbctl cluster remove`): it leaves the
    /// member list (the voters hear the new list now and act on nothing more from it), is no
    /// candidate any more, so this step's map moves its IPs. Safe whatever the member does:
    /// its promises at the voters still run out as before, so no successor gets a majority of
    /// grants while they last. Refused for a voter, a name not in the list, a member still
    /// alive (it would only join again), and on any host but the leader.
    fn remove_member(
        &mut self,
        now: Instant,
        name: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), RemoveRefusal> {
        if self.role != Role::Leader {
            return Err(match self.leader() {
                Some(l) => RemoveRefusal::NotLeader(l.to_owned()),
                None => RemoveRefusal::NoLeader,
            });
        }
        let Some(i) = self.index.get(name).copied() else {
            return Err(RemoveRefusal::Unknown(name.to_owned()));
        };
        if self.votes_(i) {
            return Err(RemoveRefusal::Voter(name.to_owned()));
        }
        if !self.roster.contains_key(&i) {
            return Err(RemoveRefusal::Unknown(name.to_owned()));
        }
        if self.alive(i, now) {
            let ago_ms = self
                .lead
                .as_ref()
                .and_then(|l| l.peers[i].latest_ack_received)
                .map_or(0, |t| {
                    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
                });
            return Err(RemoveRefusal::Alive {
                name: name.to_owned(),
                ago_ms,
            });
        }
        self.roster.remove(&i);
        if let Some(l) = &mut self.lead {
            l.rebalance.remove(&i);
        }
        out.push(Output::Forgotten {
            name: name.to_owned(),
        });
        self.roster_changed(out);
        Ok(())
    }

    /// A granted vote received after this node became leader (same term).
    fn on_late_vote(&mut self, now: Instant, from: usize, ack_seq: u64, report: Option<Report>) {
        let sent = self.vote_sent_at;
        let Some(l) = &mut self.lead else { return };
        let p = &mut l.peers[from];
        p.promised_from = Some(p.promised_from.map_or(sent, |t| t.max(sent)));
        if ack_seq != 0 && p.latest_ack.is_none_or(|k| ack_seq > k) {
            p.latest_ack = Some(ack_seq);
            p.latest_ack_received = Some(now);
        }
        if let Some(r) = report
            && (p.eligible.is_none() || r.eligibility_version > p.eligibility_version)
        {
            p.eligibility_version = r.eligibility_version;
            p.eligible = Some(r.eligible.into_iter().collect());
            p.held = r.held.into_iter().collect();
            self.map_inputs.0 += 1;
        }
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
                voters: VoterAck::default(),
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
        // Epoch 0: a new leader that has no map yet (it waits for reports): keep ours.
        if hb.epoch > 0 && (term, hb.epoch) > self.map.version {
            self.map = Assignment {
                version: (term, hb.epoch),
                hold: hb.ips.iter().copied().collect(),
                standby: hb.standby.iter().copied().collect(),
            };
            self.wants_changed();
        }
        if (term, hb.epoch) == self.map.version && !self.relinquished.is_empty() {
            // A relinquished IP is asked for again once the leader still assigns it to us
            // knowing we are eligible again; one it moved away is forgotten.
            let hold = &self.map.hold;
            let standby = &self.map.standby;
            let before = self.relinquished.len();
            self.relinquished.retain(|ip, back| {
                (hold.contains(ip) || standby.contains(ip))
                    && !back.is_some_and(|v| hb.eligibility_known >= v)
            });
            if self.relinquished.len() != before {
                self.wants_changed();
            }
        }
        self.report_proposal(from, out);
        let ack_seq = self.next_ack();
        let report = (hb.eligibility_known != self.eligibility_version).then(|| self.report());
        let ack = Ack {
            heartbeat: hb.seq,
            ack_seq,
            epoch: self.map.version.1,
            eligibility_version: self.eligibility_version,
            leaving: self.leaving,
            report,
            voters: self.voter_ack(),
        };
        self.send(out, from, term, Body::Ack(ack));
    }

    /// Planned leave: stop answering and release every IP at once (the successors take them
    /// over, with or without a leader), tell the leader, and, as leader, hand leadership to
    /// the most recently heard follower. Nobody else's lease is touched. Completes once this
    /// host's voter has promised every released IP to another holder (its successor has
    /// asked: the hand-over is under way), or after one lease; meanwhile it still votes on
    /// leases.
    fn shutdown(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.wants_changed();
        let held: Vec<IpAddr> = self.holder.granted_ips().copied().collect();
        if !held.is_empty() {
            self.release(now, &held, None, out);
        }
        if self.names.len() > 1 && self.is_voter() {
            self.handover = held.iter().copied().collect();
            self.leave_by = Some(now + self.timing.lease);
        }
        match self.role {
            Role::Leader => {
                // The map without this host, so followers (and successors) hear it now.
                self.reconcile(now);
                self.broadcast_heartbeats(now, out);
                let successor = self.lead.as_ref().and_then(|l| {
                    self.voters
                        .keys()
                        .copied()
                        .filter(|i| *i != self.me && self.alive(*i, now) && !l.peers[*i].leaving)
                        .max_by_key(|i| l.peers[*i].latest_ack_received)
                });
                if let Some(s) = successor {
                    self.send(out, s, self.term, Body::TimeoutNow);
                }
                self.lead = None;
                self.role = Role::Follower;
            }
            _ => {
                if let Some(l) = self.leader {
                    let ack = Ack {
                        heartbeat: 0,
                        ack_seq: self.next_ack(),
                        epoch: self.map.version.1,
                        eligibility_version: self.eligibility_version,
                        leaving: true,
                        report: None,
                        voters: self.voter_ack(),
                    };
                    self.send(out, l, self.term, Body::Ack(ack));
                }
            }
        }
        self.check_left(now, out);
    }

    /// After `Shutdown`: done once every released IP that is still desired is promised by
    /// this host's voter to another holder, or at `leave_by`.
    fn check_left(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.leaving || self.done {
            return;
        }
        // A member has no voter to watch its successors through: its releases and its
        // leaving ack are out (this batch), and that is all it can do.
        let handed = !self.is_voter()
            || self.handover.iter().all(|ip| {
                !self.desired.contains_key(ip)
                    || self
                        .voter
                        .promises()
                        .get(ip)
                        .is_some_and(|p| p.holder != self.me)
            });
        if handed || self.leave_by.is_none_or(|b| now >= b) {
            self.done = true;
            self.wants_changed();
            self.leave_by = None;
            out.push(Output::ShutdownComplete);
        }
    }

    // ---- leader --------------------------------------------------------------------------

    /// Until when no other leader can exist (leader clock); `None` without a majority. The
    /// leader steps down then (it is the single writer of Service status); leases do not
    /// depend on it.
    fn authority(&self) -> Option<Instant> {
        let l = self.lead.as_ref()?;
        let e = self.timing.election_timeout;
        let mut ends: Vec<Instant> = self
            .voters
            .keys()
            .filter_map(|i| {
                if *i == self.me {
                    Some(self.promise_until)
                } else {
                    l.peers[*i].promised_from.map(|s| s + e)
                }
            })
            .collect();
        let k = majority(self.voters.len());
        if ends.len() < k {
            return None;
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends[k - 1].checked_sub(self.timing.clock_drift)
    }

    /// When member `i` counts as down if no ack arrives before (leader clock): its last ack
    /// + lease + drift, by which its own promises at the voters have ended too.
    fn down_at(&self, i: usize) -> Option<Instant> {
        let l = self.lead.as_ref()?;
        l.peers[i]
            .latest_ack_received
            .map(|t| t + self.timing.lease + self.timing.clock_drift)
    }

    fn alive(&self, i: usize, now: Instant) -> bool {
        i == self.me || self.down_at(i).is_some_and(|b| now < b)
    }

    fn on_ack(&mut self, now: Instant, from: usize, ack: Ack, out: &mut Vec<Output>) {
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
        if ack.voters.committed > p.voters.committed || p.voters_since.is_none() {
            p.voters_since = Some(now);
        }
        if ack.voters.committed >= p.voters.committed {
            p.voters = ack.voters;
        }
        let behind = ack.voters.committed < self.vs.version;
        if behind {
            // It missed the commit: send it again (every ack until it has it).
            let body = self.voter_set_body(true);
            self.send(out, from, self.term, body);
        }
        let Some(l) = &mut self.lead else { return };
        let p = &mut l.peers[from];
        if let Some(r) = ack.report
            && r.eligibility_version >= p.eligibility_version
        {
            p.eligibility_version = r.eligibility_version;
            p.eligible = Some(r.eligible.into_iter().collect());
            p.held = r.held.into_iter().collect();
            self.map_inputs.0 += 1;
        }
    }

    /// Hosts that may be given IPs: alive, reported, not leaving, not witnesses. The leader
    /// is one like any other (its failure costs its own IPs one takeover, no more).
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
                    self.admitted(i)
                        && self.permitted(i)
                        && !p.leaving
                        && p.eligible.is_some()
                        && self.alive(i, now)
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

    /// What host `i` last said it holds.
    fn reported_holds(&self, i: usize, ip: &IpAddr) -> bool {
        if i == self.me {
            return self.reported_held.contains(ip);
        }
        self.lead
            .as_ref()
            .is_some_and(|l| l.peers[i].held.contains(ip))
    }

    /// Brings the map towards placement. The leader grants nothing: a move is safe whatever
    /// the map says (voters promise an IP to one holder at a time). It only keeps moves
    /// rare and quick: keep the current holder while it is a candidate; else a candidate that
    /// reports holding the IP (a successor that took over; at the start of a term, whoever
    /// held it under the previous leader), else the announced successor, else the rendezvous
    /// choice. Each IP also gets a successor: the next rendezvous choice.
    /// [`Node::reconcile`] unless nothing it reads changed since it last ran to the end: no
    /// map input, no candidate, no young IP or newly admitted member pending. Skipping it
    /// then changes nothing: on the same inputs it keeps every holder and successor.
    fn reconcile_if_changed(&mut self, now: Instant) {
        let Some(l) = &self.lead else { return };
        let key = (self.map_inputs.0, self.candidates(now));
        if l.young.is_empty() && l.rebalance.is_empty() && l.reconciled.0.as_ref() == Some(&key) {
            return;
        }
        if self.reconcile(now)
            && let Some(l) = &mut self.lead
        {
            l.reconciled = Memo(Some(key));
        }
    }

    fn map_inputs_changed(&mut self) {
        self.map_inputs.0 += 1;
    }

    /// Returns whether it ran to the end (not: no leader, or waiting for reports).
    fn reconcile(&mut self, now: Instant) -> bool {
        let Some(l) = &self.lead else { return false };
        let cands = self.candidates(now);
        // Shortly after election, wait (one heartbeat) for members to report what they hold:
        // a new leader keeps current holders (docs/raft-lite.md §5).
        let all_reported = self
            .hosts()
            .into_iter()
            .all(|i| i == self.me || l.peers[i].eligible.is_some());
        let hasty = self.mutation == Some(Mutation::MapBeforeLearningHolders);
        if !all_reported && now < l.elected_at + self.timing.heartbeat && !hasty {
            // No map before then: heartbeats carry epoch 0 ("no map yet"), which followers
            // do not apply, so every holder keeps its IPs under the previous map meanwhile.
            return false;
        }
        let ips: BTreeSet<IpAddr> = self
            .desired
            .keys()
            .chain(l.owners.keys())
            .copied()
            .collect();
        let mut owners = l.owners.clone();
        let mut successors = l.successors.clone();
        let mut placed_new: Vec<IpAddr> = Vec::new();
        let rebalance: BTreeSet<usize> = l
            .rebalance
            .iter()
            .copied()
            .filter(|i| cands.get(*i).copied().unwrap_or(false))
            .collect();
        for ip in ips {
            if !self.desired.contains_key(&ip) {
                owners.remove(&ip);
                successors.remove(&ip);
                continue;
            }
            let elig: Vec<usize> = (0..self.names.len())
                .filter(|i| cands[*i] && self.eligible_for(*i, &ip))
                .collect();
            let name = |i: usize| self.names[i].as_str();
            let mut current = owners.get(&ip).copied().filter(|c| elig.contains(c));
            if !rebalance.is_empty() {
                // A member that just joined takes the IPs it is the placement choice for.
                let top = placement::choose_owner(&ip, None, elig.iter().map(|i| name(*i)))
                    .and_then(|n| self.index.get(n).copied());
                if let Some(t) = top.filter(|t| rebalance.contains(t)) {
                    current = Some(t);
                }
            }
            let young_until = l.young.get(&ip).map(|t| *t + self.timing.election_timeout);
            if young_until.is_some_and(|u| now < u) {
                let top = placement::choose_owner(&ip, None, elig.iter().map(|i| name(*i)))
                    .and_then(|n| self.index.get(n).copied());
                if top.is_some() {
                    current = top;
                }
            }
            let owner = match current {
                Some(c) => Some(c),
                None => {
                    let holding = elig
                        .iter()
                        .copied()
                        .find(|i| self.reported_holds(*i, &ip))
                        .filter(|_| !hasty);
                    let prefer = holding
                        .or_else(|| successors.get(&ip).copied().filter(|s| elig.contains(s)));
                    placement::choose_owner(&ip, prefer.map(name), elig.iter().map(|i| name(*i)))
                        .and_then(|n| self.names.iter().position(|m| m == n))
                }
            };
            let successor = placement::choose_owner(
                &ip,
                None,
                elig.iter().filter(|i| Some(**i) != owner).map(|i| name(*i)),
            )
            .and_then(|n| self.names.iter().position(|m| m == n));
            if owner.is_some()
                && !l.owners.contains_key(&ip)
                && !elig.iter().any(|i| self.reported_holds(*i, &ip))
            {
                placed_new.push(ip);
            }
            match owner {
                Some(o) => owners.insert(ip, o),
                None => owners.remove(&ip),
            };
            match successor {
                Some(s) => successors.insert(ip, s),
                None => successors.remove(&ip),
            };
        }
        let me = self.me;
        let term = self.term;
        let Some(l) = &mut self.lead else {
            return false;
        };
        let window = self.timing.election_timeout;
        for i in &rebalance {
            // Kept until the member has reported something it can announce (lbd learns its
            // Services just after it joined: its first report may be empty) and for one
            // election timeout after admission, so IPs it reports a moment later still move.
            let p = &l.peers[*i];
            let reported = p.eligible.as_ref().is_some_and(|e| !e.is_empty());
            if reported && p.admitted_at.is_none_or(|t| now >= t + window) {
                l.rebalance.remove(i);
            }
        }
        for ip in placed_new {
            l.young.insert(ip, now);
        }
        l.young
            .retain(|ip, t| now < *t + window && owners.contains_key(ip));
        if owners != l.owners || successors != l.successors || l.epoch == 0 {
            // (epoch 0 → 1: the term's first map, even if empty.)
            l.owners = owners;
            l.successors = successors;
            l.epoch += 1;
            // Tell followers now rather than at the next heartbeat.
            l.next_heartbeat = now;
            self.map = Assignment {
                version: (term, l.epoch),
                hold: l
                    .owners
                    .iter()
                    .filter(|(_, o)| **o == me)
                    .map(|(ip, _)| *ip)
                    .collect(),
                standby: l
                    .successors
                    .iter()
                    .filter(|(_, s)| **s == me)
                    .map(|(ip, _)| *ip)
                    .collect(),
            };
            // The leader's own relinquished IPs follow the same rule as a follower's.
            let v = self.eligibility_version;
            let (hold, standby) = (&self.map.hold, &self.map.standby);
            self.relinquished.retain(|ip, back| {
                (hold.contains(ip) || standby.contains(ip)) && !back.is_some_and(|b| v >= b)
            });
            self.wants_changed();
        }
        true
    }

    /// To every voter and admitted member.
    fn broadcast_heartbeats(&mut self, now: Instant, out: &mut Vec<Output>) {
        // A proposal in progress goes out again each round (before the heartbeats, so the
        // acks to them can already say it was accepted).
        self.send_proposal(out);
        let all: Vec<usize> = self.hosts().into_iter().filter(|i| *i != self.me).collect();
        self.send_heartbeats(now, &all, out);
        let refresh = self.lead.as_mut().is_some_and(|l| {
            l.next_heartbeat = now + self.timing.heartbeat;
            l.roster_refresh_in = l.roster_refresh_in.saturating_sub(1);
            l.roster_refresh_in == 0
        });
        // Only once there are members: a cluster of voters alone sends what it always did.
        if refresh && (!self.roster.is_empty() || self.roster_version.1 > 1) {
            self.send_roster(out);
        }
    }

    fn send_heartbeats(&mut self, now: Instant, to: &[usize], out: &mut Vec<Output>) {
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
            let of = |m: &BTreeMap<IpAddr, usize>| -> Vec<IpAddr> {
                m.iter()
                    .filter(|(_, o)| **o == i)
                    .map(|(ip, _)| *ip)
                    .collect()
            };
            msgs.push((
                i,
                Body::Heartbeat(Heartbeat {
                    seq,
                    epoch: l.epoch,
                    eligibility_known: p.eligibility_version,
                    ips: of(&l.owners),
                    standby: of(&l.successors),
                }),
            ));
        }
        for (i, b) in msgs {
            self.send(out, i, term, b);
        }
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
#[path = "core_members_tests.rs"]
mod members_tests;

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
            address: None,
            solo: names.len() == 1,
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
                body: Body::Vote {
                    transfer: false,
                    version: 0,
                },
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
                voters: None,
            },
            t0,
        )
        .expect("node");
        let hb_at = t0 + E + Duration::from_millis(10);
        let hb = Heartbeat {
            seq: 1,
            epoch: 1,
            eligibility_known: 0,
            ips: vec![],
            standby: vec![],
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
                body: Body::PreVote { version: 0 },
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

    fn ip2() -> IpAddr {
        "10.10.100.201".parse().expect("ip")
    }

    fn msg(from: &str, term: u64, body: Body) -> Input {
        Input::Received {
            from: from.into(),
            msg: Message { term, body },
        }
    }

    fn hb(seq: u64, epoch: u64, known: u64, ips: Vec<IpAddr>, standby: Vec<IpAddr>) -> Body {
        Body::Heartbeat(Heartbeat {
            seq,
            epoch,
            eligibility_known: known,
            ips,
            standby,
        })
    }

    /// Every message of one kind the batch sends, with its receiver.
    fn sent<T>(out: &[Output], f: impl Fn(&Body) -> Option<T>) -> Vec<(String, T)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } => f(&msg.body).map(|t| (to.clone(), t)),
                _ => None,
            })
            .collect()
    }

    fn renews(out: &[Output]) -> Vec<(String, Renew)> {
        sent(out, |b| match b {
            Body::Renew(r) => Some(r.clone()),
            _ => None,
        })
    }

    fn grants(out: &[Output]) -> Vec<(String, Grant)> {
        sent(out, |b| match b {
            Body::Grant(g) => Some(g.clone()),
            _ => None,
        })
    }

    /// Node `me` of a, b, c, started long enough ago that its restart quiet period is over,
    /// eligible for `ip()` and `ip2()`, following leader "a" in term 1.
    fn follower(me: &str, t0: Instant) -> Node {
        let (mut n, _) = Node::new(
            cfg(me, &["a", "b", "c"]),
            HardState {
                term: 1,
                voted_for: None,
                voters: None,
            },
            t0 - E * 2,
        )
        .expect("node");
        n.step(t0, Input::LocalEligibility([ip(), ip2()].into()));
        n
    }

    /// The addresses in the `Join`s among `out`.
    fn joins(out: &[Output]) -> Vec<SocketAddr> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send {
                    msg:
                        Message {
                            body: Body::Join(j),
                            ..
                        },
                    ..
                } => Some(j.addr),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_under_member_nodes_asks_to_join_only_at_its_nodes_address() {
        let t0 = crate::test_origin();
        let mut c = cfg("m", &["a", "b", "c"]);
        // Bound to the port only: its Node gives the IP.
        c.address = Some(SocketAddr::from(([0, 0, 0, 0], 7950)));
        let (mut n, _) = Node::new(c, HardState::default(), t0).expect("node");
        n.step(t0, Input::AllowedMembers(MemberFilter::Pending));
        let out = n.step(t0 + Duration::from_millis(1), Input::Tick);
        assert!(joins(&out).is_empty(), "no Node listed yet: no join");
        let other = SocketAddr::from(([10, 0, 0, 9], 7950));
        let out = n.step(
            t0 + Duration::from_millis(100),
            Input::AllowedMembers(MemberFilter::Only([("x".to_owned(), other)].into())),
        );
        assert!(joins(&out).is_empty(), "its Node is not listed: no join");
        let mine = SocketAddr::from(([10, 0, 0, 7], 7950));
        let out = n.step(
            t0 + Duration::from_millis(200),
            Input::AllowedMembers(MemberFilter::Only([("m".to_owned(), mine)].into())),
        );
        assert_eq!(
            joins(&out),
            vec![mine; 3],
            "one Join per voter, at its Node's IP"
        );
        assert_eq!(
            n.status(t0)
                .members
                .iter()
                .find(|m| m.name == "m")
                .and_then(|m| m.addr),
            Some(mine)
        );
    }

    fn renew_from(seq: u64, claim: (u64, u64), ips: Vec<IpAddr>, standby: Vec<IpAddr>) -> Body {
        Body::Renew(Renew {
            seq,
            claim,
            ips,
            standby,
            version: 0,
        })
    }

    #[test]
    fn a_voter_promises_an_ip_to_one_holder_until_its_promise_ends_or_is_released() {
        let t0 = crate::test_origin() + E * 2;
        let mut v = follower("c", t0);
        let out = v.step(t0, msg("a", 1, renew_from(10, (1, 1), vec![ip()], vec![])));
        assert_eq!(
            grants(&out),
            vec![(
                "a".to_string(),
                Grant {
                    seq: 10,
                    ips: vec![ip()]
                }
            )]
        );
        // Another holder, even with a newer map, waits while the promise lasts.
        let t1 = t0 + Duration::from_millis(100);
        let out = v.step(t1, msg("b", 1, renew_from(20, (1, 2), vec![ip()], vec![])));
        assert!(grants(&out).is_empty(), "{out:?}");
        // The promise to "a" is no longer renewed (a newer map moved the IP): at its end
        // the waiting request is granted.
        let out = v.step(
            t0 + Duration::from_millis(120),
            msg("a", 1, renew_from(11, (1, 1), vec![ip()], vec![])),
        );
        assert!(
            grants(&out).is_empty(),
            "an older map is not renewed: {out:?}"
        );
        let out = v.step(t0 + Timing::default().lease, Input::Tick);
        assert_eq!(
            grants(&out),
            vec![(
                "b".to_string(),
                Grant {
                    seq: 20,
                    ips: vec![ip()]
                }
            )]
        );
        // A release frees it at once for the next holder.
        let out = v.step(
            t1 + E,
            msg(
                "b",
                1,
                Body::Release(Release {
                    seq: 21,
                    ips: vec![ip()],
                }),
            ),
        );
        assert!(grants(&out).is_empty());
        let out = v.step(
            t1 + E,
            msg("a", 1, renew_from(12, (1, 3), vec![ip()], vec![])),
        );
        assert_eq!(grants(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn a_restarted_voter_promises_nothing_for_one_election_timeout_plus_drift() {
        let t0 = crate::test_origin() + E * 2;
        let (mut v, _) =
            Node::new(cfg("c", &["a", "b", "c"]), HardState::default(), t0).expect("node");
        let t = Timing::default();
        // At least lease + drift (forgotten promises); E + drift also covers a version-1
        // voter's promise not to vote (a rolling upgrade from version 1).
        let quiet = t.election_timeout + t.clock_drift;
        assert!(quiet >= t.lease + t.clock_drift);
        let out = v.step(
            t0 + quiet - Duration::from_millis(1),
            msg("a", 0, renew_from(1, (1, 1), vec![ip()], vec![])),
        );
        assert!(
            grants(&out).is_empty(),
            "granted inside the quiet period: {out:?}"
        );
        let out = v.step(
            t0 + quiet,
            msg("a", 0, renew_from(2, (1, 1), vec![ip()], vec![])),
        );
        assert_eq!(grants(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn a_voter_ignores_requests_older_than_one_it_acted_on() {
        let t0 = crate::test_origin() + E * 2;
        let mut v = follower("c", t0);
        v.step(
            t0,
            msg(
                "a",
                1,
                Body::Release(Release {
                    seq: 5,
                    ips: vec![ip()],
                }),
            ),
        );
        let out = v.step(t0, msg("a", 1, renew_from(4, (1, 1), vec![ip()], vec![])));
        assert!(
            grants(&out).is_empty(),
            "a renewal sent before the release: {out:?}"
        );
    }

    /// "b" holds `ip()` in map (1, 1): returns it with its first renewal request.
    fn holder_b(t0: Instant) -> (Node, Renew) {
        let mut n = follower("b", t0);
        let out = n.step(t0, msg("a", 1, hb(1, 1, 0, vec![ip()], vec![])));
        let r = renews(&out);
        assert_eq!(r.len(), 2, "one request per other voter: {out:?}");
        assert_eq!(r[0].1.ips, vec![ip()]);
        assert_eq!(r[0].1.claim, (1, 1));
        (n, r[0].1.clone())
    }

    #[test]
    fn a_holder_answers_with_a_majority_of_grants_counted_from_the_request_send_time() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, r) = holder_b(t0);
        // Its own voter granted at once: one of three is no majority.
        assert!(n.owned_ips(t0).is_empty());
        let t1 = t0 + Duration::from_millis(20);
        let out = n.step(
            t1,
            msg(
                "c",
                1,
                Body::Grant(Grant {
                    seq: r.seq,
                    ips: vec![ip()],
                }),
            ),
        );
        assert_eq!(n.owned_ips(t1), [ip()].into());
        assert!(matches!(out.first(), Some(Output::Leases(l)) if l.contains_key(&ip())));
        // lease − drift from the send (t0), not from the grant's arrival.
        let t = Timing::default();
        let end = t0 + t.lease - t.clock_drift;
        assert!(n.owned_ips(end - Duration::from_millis(1)).contains(&ip()));
        assert!(n.owned_ips(end).is_empty());
    }

    #[test]
    fn leases_outlive_the_leader_a_higher_term_keeps_them_and_renewals_go_on() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, r) = holder_b(t0);
        n.step(
            t0,
            msg(
                "c",
                1,
                Body::Grant(Grant {
                    seq: r.seq,
                    ips: vec![ip()],
                }),
            ),
        );
        // The leader is gone; "c" campaigns and wins term 2: no lease is dropped.
        let t1 = t0 + Duration::from_millis(30);
        n.step(t1, msg("c", 2, hb(1, 1, 0, vec![ip()], vec![])));
        assert_eq!(n.leader(), Some("c"));
        assert_eq!(n.owned_ips(t1), [ip()].into());
        // Renewals continue every heartbeat, with the new map's version.
        let t2 = t0 + Timing::default().heartbeat;
        let out = n.step(t2, Input::Tick);
        let r2 = renews(&out);
        assert!(!r2.is_empty(), "{out:?}");
        assert_eq!(r2[0].1.claim, (2, 1));
        n.step(
            t2,
            msg(
                "a",
                2,
                Body::Grant(Grant {
                    seq: r2[0].1.seq,
                    ips: vec![ip()],
                }),
            ),
        );
        let t = Timing::default();
        assert!(
            n.owned_ips(t2 + t.lease - t.clock_drift - Duration::from_millis(1))
                .contains(&ip())
        );
    }

    #[test]
    fn an_ip_given_up_on_link_down_is_asked_for_again_only_once_the_leader_assigns_it_again() {
        let t0 = crate::test_origin() + E * 2;
        let (mut n, r) = holder_b(t0);
        n.step(
            t0,
            msg(
                "c",
                1,
                Body::Grant(Grant {
                    seq: r.seq,
                    ips: vec![ip()],
                }),
            ),
        );
        assert_eq!(n.owned_ips(t0), [ip()].into());
        // Link down: given up at once and released (lease first in the batch).
        let out = n.step(t0, Input::LocalEligibility([ip2()].into()));
        assert!(n.owned_ips(t0).is_empty());
        let leases = out
            .iter()
            .position(|o| matches!(o, Output::Leases(l) if l.is_empty()));
        let release = out.iter().position(|o| {
            matches!(
                o,
                Output::Send {
                    msg: Message {
                        body: Body::Release(_),
                        ..
                    },
                    ..
                }
            )
        });
        assert!(
            leases.is_some() && release.is_some() && leases < release,
            "{out:?}"
        );
        // Link up within the lease, before the leader heard of either: not asked for.
        let t1 = t0 + Duration::from_millis(5);
        let out = n.step(t1, Input::LocalEligibility([ip(), ip2()].into()));
        assert!(renews(&out).is_empty(), "{out:?}");
        let t2 = t0 + Duration::from_millis(60);
        let out = n.step(t2, msg("a", 1, hb(2, 1, 0, vec![ip()], vec![])));
        assert!(
            renews(&out).is_empty(),
            "a heartbeat that has not seen it eligible: {out:?}"
        );
        let known = sent(&out, |b| match b {
            Body::Ack(a) => Some(a.eligibility_version),
            _ => None,
        })[0]
            .1;
        // The leader knows it is eligible again and still assigns it: asked for again.
        let out = n.step(t2, msg("a", 1, hb(3, 1, known, vec![ip()], vec![])));
        assert_eq!(
            renews(&out).first().map(|r| r.1.ips.clone()),
            Some(vec![ip()]),
            "{out:?}"
        );
    }

    #[test]
    fn a_successor_takes_over_when_the_holders_promise_at_its_voter_runs_out() {
        let t0 = crate::test_origin() + E * 2;
        let mut s = follower("c", t0);
        // "a" holds the IP, "c" is its successor.
        s.step(t0, msg("a", 1, hb(1, 1, 0, vec![], vec![ip()])));
        s.step(t0, msg("a", 1, renew_from(10, (1, 1), vec![ip()], vec![])));
        let t = Timing::default();
        // Nothing asked while the promise lasts.
        let out = s.step(t0 + t.lease - Duration::from_millis(1), Input::Tick);
        assert!(renews(&out).is_empty(), "{out:?}");
        // "a" went silent: at the promise's end "c" asks for it as successor.
        let out = s.step(t0 + t.lease, Input::Tick);
        let r = renews(&out);
        assert_eq!(
            r.first().map(|r| r.1.standby.clone()),
            Some(vec![ip()]),
            "{out:?}"
        );
        let t1 = t0 + t.lease + Duration::from_millis(2);
        let out = s.step(
            t1,
            msg(
                "b",
                1,
                Body::Grant(Grant {
                    seq: r[0].1.seq,
                    ips: vec![ip()],
                }),
            ),
        );
        assert_eq!(s.owned_ips(t1), [ip()].into());
        let failover = out.iter().find_map(|o| match o {
            Output::Failover { ip, to, took } => Some((*ip, to.clone(), *took)),
            _ => None,
        });
        assert_eq!(
            failover,
            Some((ip(), "c".to_string(), t.lease + Duration::from_millis(2)))
        );
    }

    #[test]
    fn the_leader_places_ips_on_itself_too_with_a_successor_for_each() {
        let t0 = crate::test_origin();
        let (mut n, _) = Node::new(cfg("a", &["a"]), HardState::default(), t0).expect("node");
        let many: BTreeMap<IpAddr, String> = (0..30u8)
            .map(|k| (IpAddr::from([10, 0, 0, k]), format!("s{k}")))
            .collect();
        n.step(t0, Input::DesiredIps(many.clone()));
        n.step(t0, Input::LocalEligibility(many.keys().copied().collect()));
        assert_eq!(n.owned_ips(t0).len(), 30, "a lone leader owns everything");
        assert_eq!(n.status(t0).owners.len(), 30);
    }
}
