//! The raft-lite task: the pure [`core::Node`] run by [`crate::driver::run`] with a shell
//! that feeds it datagrams and the daemon's inputs and carries its outputs out in order.
//!
//! ```text
//!  daemon ── desired / eligible changes (mpsc) ───▶ ┌──────────────────────┐ ── Send ──▶ Transport (UDP)
//!  daemon ── shutdown (mpsc) ─────────────────────▶ │ driver task          │ ── Persist ─▶ hard_state::store
//!  Transport::recv ───────────────────────────────▶ │  owns core::Node     │              (blocking thread, fsync)
//!  sleep_until(next_wakeup) ── Tick ──────────────▶ └──────────────────────┘ ── ClusterView (watch) ─▶ daemon
//! ```
//!
//! Clock: `now` is the tokio clock as a `std::time::Instant`
//! (`tokio::time::Instant::now().into_std()`, see [`now`]), which outside paused-time tests is
//! `std::time::Instant::now()`. Lease deadlines in [`ClusterView::owned`] are on that clock:
//! a responder checks `view.owns(ip, now())` when it answers, so it stops exactly when the
//! lease ends even if this task is late.
//!
//! Ordering (core shell contract): outputs are handled in the order the core gives them (its
//! lease change first); a `Persist` is durable before any later `Send` of the same batch goes
//! out. If a `Persist` fails, the rest of the batch's `Send`s are not sent (a vote must never
//! be answered before it is on disk).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::core::{self, ConfigError, Input, Node, Output, RemoveRefusal, Role};
use super::hard_state::{self, HardStateError};
use super::message::Message;
use super::transport::{self, KeyError, Transport, TransportError, TransportStats};
use super::{Member, Timing, TimingError};
use crate::config::{ClusterConfig, NodeConfig};
use crate::control::metrics::Metrics;
use crate::driver;

/// Default bound on a planned leave (the core's contract suggests about 1 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// Views that differ only in members' last-ack times are published at most this often; so
/// are the leader's per-member counts (alive, eligible) when nothing else changed.
const ACK_ONLY_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

pub use crate::driver::now;

/// What the driver needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This host's member name.
    pub name: String,
    pub witness: bool,
    /// Voter name → UDP address; contains `name` unless this host is a member that does
    /// not vote (then `address` is its own).
    pub members: BTreeMap<String, SocketAddr>,
    /// This host's own address when it is not a voter.
    pub address: Option<SocketAddr>,
    /// Bind a socket and admit members even with a single voter (`[cluster] voters`).
    pub members_may_join: bool,
    /// `[cluster] member_nodes`: members are the Nodes the daemon lists with
    /// [`ClusterHandle::set_allowed_members`]; until the first list nobody is admitted.
    pub member_nodes: bool,
    /// The cluster key; `None` only for a cluster of one (which never sends).
    pub key: Option<Vec<u8>>,
    pub timing: Timing,
    /// Hard state (term, vote) lives here; created if missing.
    pub state_dir: PathBuf,
    /// Bound on [`ClusterHandle::shutdown`].
    pub shutdown_timeout: Duration,
}

impl ClusterSettings {
    /// From the validated config; reads the key from `secret_file` (when there are peers).
    pub fn from_config(node: &NodeConfig, cluster: &ClusterConfig) -> Result<Self, DriverError> {
        let timing = Timing::new(
            cluster.heartbeat,
            cluster.election_timeout,
            cluster.clock_drift,
        )?;
        let key = match &cluster.secret_file {
            Some(path) => Some(transport::read_key(path)?),
            None if cluster.members.len() > 1 || cluster.address.is_some() => {
                return Err(DriverError::NoKey);
            }
            None => None,
        };
        Ok(Self {
            name: node.name.clone(),
            witness: node.role == crate::config::Role::Witness,
            members: cluster.members.clone(),
            address: cluster.address.or_else(|| member_nodes_bind(node, cluster)),
            members_may_join: cluster.members_may_join,
            member_nodes: cluster.member_nodes.is_some(),
            key,
            timing,
            state_dir: node.state_dir.clone(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        })
    }
}

/// A member under `member_nodes` has no `address`: it binds the port on every address (of
/// the voters' family) and joins at its Node's InternalIP, which the core learns from the
/// Node list ([`core::MemberFilter`]).
fn member_nodes_bind(node: &NodeConfig, cluster: &ClusterConfig) -> Option<SocketAddr> {
    let m = cluster.member_nodes.as_ref()?;
    if cluster.members.contains_key(&node.name) {
        return None;
    }
    let v6 = !cluster.members.is_empty() && cluster.members.values().all(|a| a.is_ipv6());
    let any: IpAddr = if v6 {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    Some(SocketAddr::new(any, m.port))
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("[cluster] lists several members but no secret_file")]
    NoKey,
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error("creating raft-lite state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    HardState(#[from] HardStateError),
    #[error(transparent)]
    Core(#[from] ConfigError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// One member as this host sees it (health only known on the leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub name: String,
    pub addr: SocketAddr,
    /// Votes; `false`: a member the leader admitted.
    pub voter: bool,
    /// The leader considers it alive (leader only; `true` for the leader itself).
    pub alive: bool,
    /// When the leader last received its ack (leader only; as of the view's publication).
    pub last_ack: Option<Instant>,
    /// IPs it reported it can announce (leader only).
    pub eligible: usize,
    /// IPs it owns in the leader's map (leader only).
    pub owns: usize,
}

/// What the driver publishes after each change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub me: String,
    pub role: Role,
    pub term: u64,
    pub leader: Option<String>,
    /// IP → lease deadline ([`now`]'s clock). Answer for an IP only while `now < deadline`:
    /// use [`ClusterView::owns`].
    pub owned: BTreeMap<IpAddr, Instant>,
    /// The whole ownership map (leader only; empty elsewhere).
    pub owners: BTreeMap<IpAddr, String>,
    pub members: Vec<MemberView>,
    /// A cluster of one (no socket).
    pub standalone: bool,
    /// The task has ended (planned leave done or timed out, handle dropped): owns nothing.
    pub stopped: bool,
    /// The committed voter set and its version (0: as configured; docs/raft-lite.md,
    /// "Changing the voter set").
    pub voters_version: u64,
    pub voters: BTreeMap<String, SocketAddr>,
}

impl ClusterView {
    /// May this host answer for `ip` at `now`?
    pub fn owns(&self, ip: &IpAddr, now: Instant) -> bool {
        self.owned.get(ip).is_some_and(|until| now < *until)
    }

    /// The IPs this host may answer for at `now`.
    pub fn owned_ips(&self, now: Instant) -> BTreeSet<IpAddr> {
        self.owned
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// The earliest lease deadline still ahead of `now` (when a responder must look again).
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.owned.values().filter(|u| now < **u).min().copied()
    }

    /// Equal apart from members' `last_ack` (those change with every ack on the leader).
    /// Compared field by field, without copies: the leader asks after every step (every
    /// datagram), so with many members a clone of both views was most of its idle CPU.
    fn same_apart_from_ack_times(&self, other: &ClusterView) -> bool {
        // Destructured so a new field cannot be forgotten here.
        let ClusterView {
            me,
            role,
            term,
            leader,
            owned,
            owners,
            members,
            standalone,
            stopped,
            voters_version,
            voters,
        } = self;
        let same_member = |a: &MemberView, b: &MemberView| {
            let MemberView {
                name,
                addr,
                voter,
                alive,
                last_ack: _,
                eligible,
                owns,
            } = a;
            *name == b.name
                && *addr == b.addr
                && *voter == b.voter
                && *alive == b.alive
                && *eligible == b.eligible
                && *owns == b.owns
        };
        *me == other.me
            && *role == other.role
            && *term == other.term
            && *leader == other.leader
            && *standalone == other.standalone
            && *stopped == other.stopped
            && members.len() == other.members.len()
            && members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| same_member(a, b))
            && *owned == other.owned
            && *owners == other.owners
            && *voters_version == other.voters_version
            && *voters == other.voters
    }
}

/// How the task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The core confirmed the planned leave (no IP held, leadership handed over).
    Complete,
    /// The bound passed first; the host stopped answering anyway.
    TimedOut,
    /// The handle was dropped without a shutdown.
    HandleDropped,
    /// The task panicked or was aborted.
    TaskFailed,
}

enum Command {
    Shutdown,
}

/// `lbctl cluster remove NAME`, on its way to the core ([`ClusterHandle::remove_member`]).
struct RemoveCommand {
    name: String,
    reply: oneshot::Sender<Result<(), RemoveRefusal>>,
}

/// Why [`ClusterHandle::remove_member`] did not remove the member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoveError {
    #[error(transparent)]
    Refused(#[from] RemoveRefusal),
    #[error("raft-lite has stopped (lbd is shutting down)")]
    Stopped,
}

/// What the daemon tells raft-lite about the layer-2 IPs.
enum Update {
    Desired(BTreeMap<IpAddr, String>),
    Eligible(BTreeSet<IpAddr>),
    DesiredChanges(Vec<(IpAddr, Option<String>)>),
    EligibleChanges(Vec<(IpAddr, bool)>),
    Voters(BTreeMap<String, SocketAddr>),
    AllowedMembers(core::MemberFilter),
}

impl Update {
    /// One core input for a run of queued updates: consecutive changes of one kind merge,
    /// so a burst costs one step.
    fn merge(self, next: Update) -> Result<Update, (Update, Update)> {
        match (self, next) {
            (Update::DesiredChanges(mut a), Update::DesiredChanges(b)) => {
                a.extend(b);
                Ok(Update::DesiredChanges(a))
            }
            (Update::EligibleChanges(mut a), Update::EligibleChanges(b)) => {
                a.extend(b);
                Ok(Update::EligibleChanges(a))
            }
            (a, b) => Err((a, b)),
        }
    }

    fn into_input(self) -> Input {
        match self {
            Update::Desired(d) => Input::DesiredIps(d),
            Update::Eligible(e) => Input::LocalEligibility(e),
            Update::DesiredChanges(c) => Input::DesiredChanges(c),
            Update::EligibleChanges(c) => Input::EligibilityChanges(c),
            Update::Voters(v) => Input::ProposeVoters(v),
            Update::AllowedMembers(f) => Input::AllowedMembers(f),
        }
    }
}

/// [`ClusterHandle::set_allowed_members`] from another task.
#[derive(Clone)]
pub struct AllowedMembersSender(mpsc::UnboundedSender<Update>);

impl AllowedMembersSender {
    /// See [`ClusterHandle::set_allowed_members`]. False once the driver has stopped.
    pub fn set(&self, allowed: BTreeMap<String, SocketAddr>) -> bool {
        self.0
            .send(Update::AllowedMembers(core::MemberFilter::Only(allowed)))
            .is_ok()
    }
}

/// The daemon's side of the driver task.
pub struct ClusterHandle {
    updates: mpsc::UnboundedSender<Update>,
    cmd: mpsc::Sender<Command>,
    remove: mpsc::Sender<RemoveCommand>,
    view: watch::Receiver<ClusterView>,
    stats: Option<watch::Receiver<TransportStats>>,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<ShutdownOutcome>,
}

impl ClusterHandle {
    /// The layer-2 IPs that need an owner, with a service name for logs.
    pub fn set_desired(&self, ips: BTreeMap<IpAddr, String>) {
        let _ = self.updates.send(Update::Desired(ips));
    }

    /// What this host can announce now (interface up, selectors, Local endpoints). Takes
    /// effect locally at once: an IP removed here is no longer owned in the next view.
    pub fn set_eligible(&self, ips: BTreeSet<IpAddr>) {
        let _ = self.updates.send(Update::Eligible(ips));
    }

    /// Changes to the desired IPs (`None`: no longer desired): work proportional to them.
    pub fn change_desired(&self, changes: Vec<(IpAddr, Option<String>)>) {
        if !changes.is_empty() {
            let _ = self.updates.send(Update::DesiredChanges(changes));
        }
    }

    /// Changes to what this host can announce.
    pub fn change_eligible(&self, changes: Vec<(IpAddr, bool)>) {
        if !changes.is_empty() {
            let _ = self.updates.send(Update::EligibleChanges(changes));
        }
    }

    /// This host's configured voter list after a reload: one voter added or removed is
    /// proposed (the leader makes it the next voter set once it is reloaded too); check it
    /// first with [`lb_core::cluster::voters::change`] against the view's `voters`.
    pub fn propose_voters(&self, voters: BTreeMap<String, SocketAddr>) {
        let _ = self.updates.send(Update::Voters(voters));
    }

    /// A sender of [`set_allowed_members`](Self::set_allowed_members) for another task
    /// (the Node watch).
    pub fn allowed_members_sender(&self) -> AllowedMembersSender {
        AllowedMembersSender(self.updates.clone())
    }

    /// `member_nodes`: the hosts that may be members (the matching Nodes, each at its
    /// InternalIP and the configured port). The leader admits and evicts by it; a member
    /// joins at the address it gives itself.
    pub fn set_allowed_members(&self, allowed: BTreeMap<String, SocketAddr>) {
        let _ = self
            .updates
            .send(Update::AllowedMembers(core::MemberFilter::Only(allowed)));
    }

    /// The published view; `changed()` on it wakes on every change.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Does this host own `ip` at `now` ([`now`]'s clock)? Checks the lease deadline.
    pub fn owns(&self, ip: &IpAddr, now: Instant) -> bool {
        self.view.borrow().owns(ip, now)
    }

    /// Transport counters (drops by reason, socket errors); `None` for a cluster of one.
    pub fn stats(&self) -> Option<watch::Receiver<TransportStats>> {
        self.stats.clone()
    }

    /// The bound UDP address; `None` for a cluster of one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Planned leave: resolves when the core reports it complete, or after the configured
    /// bound (the host has stopped answering either way).
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        // A full channel cannot happen (one command per handle); a closed one means the
        // task already ended, and its outcome is what the join reports.
        let _ = self.cmd.try_send(Command::Shutdown);
        match (&mut self.task).await {
            Ok(o) => o,
            Err(_) => ShutdownOutcome::TaskFailed,
        }
    }

    /// `lbctl cluster remove NAME`: on the leader, forgets the member `name` (a host that
    /// stopped for good) at once and moves its IPs; refused elsewhere and for voters, unknown
    /// names and members still alive ([`RemoveRefusal`]).
    pub async fn remove_member(&self, name: &str) -> Result<(), RemoveError> {
        let (reply, rx) = oneshot::channel();
        self.remove
            .send(RemoveCommand {
                name: name.to_owned(),
                reply,
            })
            .await
            .map_err(|_| RemoveError::Stopped)?;
        rx.await.map_err(|_| RemoveError::Stopped)??;
        Ok(())
    }

    /// Stops the task at once, without a planned leave (a crash, for tests and emergencies).
    /// Views already handed out keep their deadlines: leases lapse by themselves.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// [`abort`](Self::abort), then wait until the task is gone (its socket closed).
    pub async fn abort_and_wait(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the raft-lite task: [`ClusterDriver::spawn`].
pub struct ClusterDriver;

/// The task's I/O: the transport, the hard state on disk, the daemon's channels, the view.
struct Shell {
    transport: Option<Transport>,
    state_dir: PathBuf,
    members: BTreeMap<String, SocketAddr>,
    shutdown_timeout: Duration,
    view: watch::Sender<ClusterView>,
    updates: mpsc::UnboundedReceiver<Update>,
    updates_open: bool,
    /// An update received while merging a run, to be stepped next.
    held: Option<Update>,
    cmd: mpsc::Receiver<Command>,
    remove: mpsc::Receiver<RemoveCommand>,
    /// The reply to the `RemoveMember` input being stepped.
    remove_reply: Option<oneshot::Sender<Result<(), RemoveRefusal>>>,
    /// Set by a planned leave: the leave is given up (the host stops answering anyway) then.
    leaving_until: Option<Instant>,
    /// How the task ended, once it has.
    outcome: Option<ShutdownOutcome>,
    /// Latest `Output::Leases`: IP → lease deadline.
    leases: BTreeMap<IpAddr, Instant>,
    /// What the ownership log lines last said this host answers for.
    logged_owned: BTreeSet<IpAddr>,
    last_publish: Instant,
    /// What the last published view was built from, as far as it is cheap to tell: a step
    /// that changes none of it (most datagrams: renewals, grants, acks) builds no view.
    last_key: Option<ViewKey>,
    /// Bumped by every `Output::Leases` (part of [`ViewKey`]).
    leases_gen: u64,
    /// Elections started and failover durations go here.
    metrics: Option<Metrics>,
    /// The core's member list version the transport's peers were last set from.
    roster_version: (u64, u64),
    /// The core's voter-set versions (committed, accepted, proposed) likewise.
    peers_version: (u64, u64, u64),
    /// When a refused join was last logged, per host name (rate limit).
    refusals_logged: BTreeMap<String, Instant>,
}

fn boot_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(1)
        .max(1)
}

/// FNV-1a, to mix the member name into the PRNG seed (two hosts booting in the same
/// nanosecond still draw different election timeouts).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn create_state_dir(path: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DriverError::StateDir {
            path: path.to_path_buf(),
            source,
        })
}

impl ClusterDriver {
    /// Loads the hard state, binds the socket (not for a cluster of one), starts the task.
    /// Returns once the first outputs of the core are carried out.
    /// Must be called inside a tokio runtime.
    pub async fn spawn(settings: ClusterSettings) -> Result<ClusterHandle, DriverError> {
        Self::spawn_inner(settings, None).await
    }

    /// [`spawn`](Self::spawn), counting elections this host starts
    /// (`lb_cluster_elections_total`), the datagrams the transport drops
    /// (`lb_cluster_datagrams_dropped_total`) and the takeovers it makes as a successor
    /// (`lb_failover_duration_seconds`, see [`Output::Failover`]) in `metrics`.
    pub async fn spawn_with_metrics(
        settings: ClusterSettings,
        metrics: Metrics,
    ) -> Result<ClusterHandle, DriverError> {
        Self::spawn_inner(settings, Some(metrics)).await
    }

    async fn spawn_inner(
        settings: ClusterSettings,
        metrics: Option<Metrics>,
    ) -> Result<ClusterHandle, DriverError> {
        create_state_dir(&settings.state_dir)?;
        let hard = hard_state::load(&settings.state_dir)?;
        let boot = hard_state::next_boot(&settings.state_dir, boot_nanos())?;
        let networked =
            settings.members.len() > 1 || settings.address.is_some() || settings.members_may_join;
        let cfg = core::Config {
            me: settings.name.clone(),
            members: settings
                .members
                .iter()
                .map(|(name, addr)| Member {
                    name: name.clone(),
                    addr: *addr,
                })
                .collect(),
            address: settings.address,
            solo: !networked,
            witness: settings.witness,
            timing: settings.timing,
            seed: boot ^ fnv(&settings.name).rotate_left(17),
            incarnation: boot,
        };
        let start = now();
        let (mut node, mut first) = Node::new(cfg, hard, start)?;
        if settings.member_nodes {
            // Nobody is admitted before the Nodes are listed.
            first.extend(node.step(start, Input::AllowedMembers(core::MemberFilter::Pending)));
        }
        let (version, running) = node.voter_set();
        if *running != settings.members && settings.members.contains_key(&settings.name) {
            let list =
                |v: &BTreeMap<String, SocketAddr>| v.keys().cloned().collect::<Vec<_>>().join(", ");
            warn!(
                version,
                "raft-lite: lb.toml lists the voters {} but the running voter set (version {version}, kept in {}) is {}; `systemctl reload lbd` proposes the file's list when it differs by one voter",
                list(&settings.members),
                hard_state::VOTERS_FILE_NAME,
                list(running)
            );
        }
        let transport = if networked {
            let key = settings.key.as_deref().ok_or(DriverError::NoKey)?;
            let addr = settings
                .members
                .get(&settings.name)
                .copied()
                .or(settings.address)
                .ok_or_else(|| TransportError::NotAMember(settings.name.clone()))?;
            // A voter authenticates hosts it does not know yet (they ask to join); a member
            // talks to the voters only.
            Some(
                Transport::bind_at(
                    &settings.name,
                    addr,
                    &node.peers(),
                    key,
                    boot,
                    node.is_voter(),
                )
                .await?,
            )
        } else {
            None
        };
        let stats = transport.as_ref().map(Transport::stats);
        if let (Some(stats), Some(metrics)) = (&stats, &metrics) {
            tokio::spawn(count_drops(stats.clone(), metrics.clone()));
        }
        let local_addr = transport.as_ref().and_then(|t| t.local_addr().ok());
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (cmd_tx, cmd) = mpsc::channel(1);
        let (remove_tx, remove) = mpsc::channel(4);
        let view0 = ClusterView {
            me: settings.name.clone(),
            role: node.role(),
            term: node.term(),
            leader: node.leader().map(str::to_owned),
            owned: BTreeMap::new(),
            owners: BTreeMap::new(),
            members: Vec::new(),
            standalone: transport.is_none(),
            stopped: false,
            voters_version: node.voter_set().0,
            voters: node.voter_set().1.clone(),
        };
        let (view_tx, view) = watch::channel(view0);
        let mut shell = Shell {
            transport,
            state_dir: settings.state_dir,
            members: settings.members,
            shutdown_timeout: settings.shutdown_timeout,
            view: view_tx,
            updates,
            updates_open: true,
            held: None,
            cmd,
            remove,
            remove_reply: None,
            leaving_until: None,
            outcome: None,
            leases: BTreeMap::new(),
            logged_owned: BTreeSet::new(),
            last_publish: start,
            last_key: None,
            leases_gen: 0,
            metrics,
            roster_version: node.roster_version(),
            peers_version: node.peers_version(),
            refusals_logged: BTreeMap::new(),
        };
        match local_addr {
            Some(addr) => info!(
                member = %node.name(),
                term = node.term(),
                %addr,
                "raft-lite started"
            ),
            // No `addr` field at all: a cluster of one binds no socket.
            None => info!(
                member = %node.name(),
                term = node.term(),
                "raft-lite started: a cluster of one, no transport"
            ),
        }
        // A cluster of one is leader at once: its term is durable before spawn returns.
        let _ = driver::Shell::carry(&mut shell, start, &node, first).await;
        shell.publish(&node, start, false, true);
        let task = tokio::spawn(async move {
            let mut node = node;
            driver::run(&mut node, &mut shell).await;
            let now = now();
            let outcome = shell.outcome.unwrap_or(ShutdownOutcome::HandleDropped);
            shell.stop(&node, now);
            outcome
        });
        Ok(ClusterHandle {
            updates: updates_tx,
            cmd: cmd_tx,
            remove: remove_tx,
            view,
            stats,
            local_addr,
            task,
        })
    }
}

impl driver::Shell<Node> for Shell {
    async fn next_input(&mut self) -> Option<Input> {
        if let Some(u) = self.held.take() {
            return Some(self.merge_queued(u).into_input());
        }
        loop {
            let leave = self.leaving_until;
            tokio::select! {
                biased;
                c = self.cmd.recv(), if leave.is_none() => match c {
                    Some(Command::Shutdown) => {
                        info!("raft-lite: planned leave, handing over owned IPs");
                        self.leaving_until = Some(now() + self.shutdown_timeout);
                        return Some(Input::Shutdown);
                    }
                    None => {
                        info!("raft-lite: handle dropped, stopping");
                        self.outcome = Some(ShutdownOutcome::HandleDropped);
                        return None;
                    }
                },
                Some(r) = self.remove.recv(), if leave.is_none() => {
                    self.remove_reply = Some(r.reply);
                    return Some(Input::RemoveMember(r.name));
                }
                u = self.updates.recv(), if self.updates_open => match u {
                    Some(u) => return Some(self.merge_queued(u).into_input()),
                    None => self.updates_open = false,
                },
                (from, msg) = recv_opt(self.transport.as_mut()) => {
                    return Some(Input::Received { from, msg });
                }
                () = driver::sleep_until(leave), if leave.is_some() => {
                    warn!(
                        timeout = ?self.shutdown_timeout,
                        "raft-lite: planned leave not confirmed in time; stopping anyway"
                    );
                    self.outcome = Some(ShutdownOutcome::TimedOut);
                    return None;
                }
            }
        }
    }

    /// Carries a step's outputs out, in the core's order.
    async fn carry(&mut self, now: Instant, node: &Node, out: Vec<Output>) -> ControlFlow<()> {
        // The member list first: a heartbeat to a member admitted in this step, or a grant
        // to one the leader just listed, goes to the address the core has for it (never to
        // a datagram's source address).
        if node.roster_version() != self.roster_version
            || node.peers_version() != self.peers_version
        {
            self.roster_version = node.roster_version();
            self.peers_version = node.peers_version();
            if let Some(t) = &mut self.transport {
                t.set_open_to_unknown(node.is_voter());
                t.set_peers(&node.peers());
            }
        }
        let mut persist_failed = false;
        let mut complete = false;
        for o in out {
            match o {
                Output::Leases(leases) => {
                    self.leases = leases;
                    self.leases_gen += 1;
                    self.log_ownership(node, now);
                    self.publish(node, now, false, false);
                }
                Output::Persist(hs) => {
                    let dir = self.state_dir.clone();
                    let r = tokio::task::spawn_blocking(move || hard_state::store(&dir, &hs)).await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            error!("{e}; not sending this step's messages");
                            persist_failed = true;
                        }
                        Err(e) => {
                            error!(error = %e, "raft-lite state write task failed; not sending this step's messages");
                            persist_failed = true;
                        }
                    }
                }
                Output::Send { to, msg } => {
                    if persist_failed {
                        debug!(peer = %to, "raft-lite message held back: hard state not durable");
                        continue;
                    }
                    if let Some(t) = &mut self.transport {
                        // Failures are counted and logged by the transport; UDP is lossy anyway.
                        let _ = t.send(&to, &msg).await;
                    }
                }
                Output::RoleChanged { term, role, leader } => match (role, leader) {
                    (Role::Leader, _) => info!(term, "became leader for term {term}"),
                    (Role::Follower, Some(l)) => {
                        info!(term, leader = %l, "following {l} in term {term}")
                    }
                    (Role::Follower, None) => info!(term, "no leader known in term {term}"),
                    (Role::Candidate, _) => info!(term, "campaigning for term {term}"),
                    (Role::PreCandidate, _) => debug!(term, "pre-vote for term {}", term + 1),
                },
                Output::ShutdownComplete => {
                    info!("raft-lite: planned leave complete");
                    complete = true;
                }
                Output::ElectionStarted { .. } => {
                    if let Some(m) = &self.metrics {
                        m.election_started();
                    }
                }
                Output::Admitted { name, addr } => {
                    info!(member = %name, %addr, "raft-lite: admitted member {name} at {addr}");
                }
                Output::Forgotten { name } => {
                    info!(member = %name, "raft-lite: forgot member {name} (left, silent too long, removed, or no longer a member Node)");
                }
                Output::RemoveDone { name, result } => {
                    match &result {
                        Ok(()) => {
                            info!(member = %name, "raft-lite: removed member {name} (lbctl cluster remove); its IPs move")
                        }
                        Err(e) => warn!(member = %name, "raft-lite: not removing {name}: {e}"),
                    }
                    if let Some(reply) = self.remove_reply.take() {
                        let _ = reply.send(result);
                    }
                }
                Output::Refused { name, reason } => {
                    let due = self.refusals_logged.get(&name).is_none_or(|t| {
                        now.saturating_duration_since(*t) >= transport::LOG_INTERVAL
                    });
                    if due && self.refusals_logged.len() < 4096 {
                        warn!(host = %name, reason = reason.label(), "raft-lite: not admitting {name}: {reason}");
                        self.refusals_logged.insert(name, now);
                    }
                    if let Some(m) = &self.metrics {
                        m.cluster_join_refused(reason.label());
                    }
                }
                Output::VotersChanged {
                    version,
                    voters,
                    removed,
                } => {
                    let list = voters.keys().cloned().collect::<Vec<_>>().join(", ");
                    info!(version, voters = %list, "raft-lite: voter set version {version} is now {list}");
                    if removed {
                        warn!(
                            "raft-lite: this host is no longer a voter; it goes on as a member (set `address` and drop it from voters in lb.toml before the next restart)"
                        );
                    }
                }
                Output::VotersProposed { version, voters } => {
                    let list = voters.keys().cloned().collect::<Vec<_>>().join(", ");
                    info!(version, voters = %list, "raft-lite: proposing voter set version {version}: {list}");
                }
                Output::VoterProposal(r) => match r {
                    Ok(None) => {}
                    Ok(Some(change)) => info!(
                        "raft-lite: lb.toml asks to {change}; proposed (the leader makes the change; reload every voter with the same list)"
                    ),
                    Err(e) => error!(
                        "raft-lite: voter change refused, keeping the running voter set: {e}"
                    ),
                },
                Output::Failover { ip, to, took } => {
                    info!(%ip, to = %to, ?took, "failover: {ip} taken over by {to} after its holder went silent");
                    if let Some(m) = &self.metrics {
                        m.observe_failover(took);
                    }
                }
            }
        }
        if complete || node.is_done() {
            self.outcome = Some(ShutdownOutcome::Complete);
            return ControlFlow::Break(());
        }
        self.publish(node, now, false, false);
        ControlFlow::Continue(())
    }
}

impl Shell {
    /// `first` merged with the updates queued behind it, up to one of another kind (held
    /// for the next step).
    fn merge_queued(&mut self, first: Update) -> Update {
        let mut cur = first;
        while let Ok(next) = self.updates.try_recv() {
            match cur.merge(next) {
                Ok(merged) => cur = merged,
                Err((done, next)) => {
                    self.held = Some(next);
                    return done;
                }
            }
        }
        cur
    }

    /// Publishes a final view owning nothing.
    fn stop(&mut self, node: &Node, now: Instant) {
        self.leases = BTreeMap::new();
        self.log_ownership(node, now);
        self.publish(node, now, true, true);
    }

    fn log_ownership(&mut self, node: &Node, now: Instant) {
        let current: BTreeSet<IpAddr> = self
            .leases
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(ip, _)| *ip)
            .collect();
        if current == self.logged_owned {
            return;
        }
        let name = |ip: &IpAddr| node.desired().get(ip).cloned().unwrap_or_default();
        for ip in current.difference(&self.logged_owned) {
            info!(ip = %ip, service = %name(ip), "now owner of {ip} ({})", name(ip));
        }
        for ip in self.logged_owned.difference(&current) {
            info!(ip = %ip, service = %name(ip), "no longer owner of {ip} ({})", name(ip));
        }
        self.logged_owned = current;
    }

    fn build_view(&self, node: &Node, now: Instant, stopped: bool) -> ClusterView {
        let status = node.status(now);
        // A member under `member_nodes` has no address before its Node is listed: show the
        // port it listens on.
        let bound = self.transport.as_ref().and_then(|t| t.local_addr().ok());
        let me = status.me.clone();
        let owned = if stopped {
            BTreeMap::new()
        } else {
            self.leases.clone()
        };
        ClusterView {
            me: status.me,
            role: status.role,
            term: status.term,
            leader: status.leader,
            owned,
            owners: status.owners,
            members: status
                .members
                .into_iter()
                .map(|m| MemberView {
                    addr: m
                        .addr
                        .or_else(|| self.members.get(&m.name).copied())
                        .or(bound.filter(|_| m.name == me))
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    voter: m.voter,
                    name: m.name,
                    alive: m.alive,
                    last_ack: m.last_ack_age.and_then(|a| now.checked_sub(a)),
                    eligible: m.eligible,
                    owns: m.owns,
                })
                .collect(),
            standalone: self.transport.is_none(),
            stopped,
            voters_version: node.voter_set().0,
            voters: node.voter_set().1.clone(),
        }
    }

    /// Builds and publishes the view when something in it may have changed: the role, term,
    /// leader, map version (the leader's `owners`), member list or this host's leases, or
    /// else at most once per [`ACK_ONLY_PUBLISH_INTERVAL`] (members' health, ack times and
    /// counts). Building it costs the leader a copy of its whole map; with 10,000 IPs, doing
    /// that for every datagram was most of an idle cluster's CPU (issue 14).
    fn publish(&mut self, node: &Node, now: Instant, stopped: bool, force: bool) {
        let ack_refresh =
            now.saturating_duration_since(self.last_publish) >= ACK_ONLY_PUBLISH_INTERVAL;
        // Building the view clones the leader's whole map: per datagram that was most of an
        // idle leader's work (docs/bench/cluster-scale.md). Skip it when nothing it shows
        // can have changed but the per-member counts, which the refresh catches up.
        let key = ViewKey {
            role: node.role(),
            term: node.term(),
            leader: node.leader().map(str::to_string),
            map: node.map_version(),
            roster: node.roster_version(),
            desired: node.desired().len(),
            leases: self.leases_gen,
            stopped,
        };
        if !force && !ack_refresh && self.last_key.as_ref() == Some(&key) {
            return;
        }
        self.last_key = Some(key);
        let v = self.build_view(node, now, stopped);
        let published = self.view.send_if_modified(|cur| {
            let significant = !cur.same_apart_from_ack_times(&v);
            if force || significant || (ack_refresh && *cur != v) {
                *cur = v;
                true
            } else {
                false
            }
        });
        if published {
            self.last_publish = now;
        }
    }
}

/// What a published view was built from, as far as it is cheap to compare (see
/// `Shell::publish`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ViewKey {
    role: Role,
    term: u64,
    leader: Option<String>,
    map: (u64, u64),
    roster: (u64, u64),
    desired: usize,
    leases: u64,
    stopped: bool,
}

/// Carries the transport's drop counters into `lb_cluster_datagrams_dropped_total` as they
/// change, every reason present from the start (at 0), and the largest datagram sent and the
/// messages sent in fragments (`lb_cluster_largest_datagram_bytes`,
/// `lb_cluster_fragmented_messages_total`). Ends with the transport.
async fn count_drops(mut stats: watch::Receiver<TransportStats>, metrics: Metrics) {
    let mut counted: BTreeMap<super::wire::DropReason, u64> = BTreeMap::new();
    for reason in super::wire::DropReason::ALL {
        metrics.cluster_datagrams_dropped(reason, 0);
    }
    let (mut largest, mut fragmented) = (0, 0);
    loop {
        {
            let s = stats.borrow();
            if s.largest_sent > largest {
                largest = s.largest_sent;
                metrics.set_cluster_largest_datagram(largest as u64);
            }
            if s.fragmented_sent > fragmented {
                metrics.cluster_fragmented_messages(s.fragmented_sent - fragmented);
                fragmented = s.fragmented_sent;
            }
        }
        for (reason, now) in &stats.borrow_and_update().drops {
            let before = counted.entry(*reason).or_default();
            if now > before {
                metrics.cluster_datagrams_dropped(*reason, now - *before);
                *before = *now;
            }
        }
        if stats.changed().await.is_err() {
            return;
        }
    }
}

async fn recv_opt(t: Option<&mut Transport>) -> (String, Message) {
    match t {
        Some(t) => t.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(dir: &Path) -> ClusterSettings {
        ClusterSettings {
            name: "solo".into(),
            witness: false,
            members: [("solo".to_owned(), SocketAddr::from(([127, 0, 0, 1], 7946)))].into(),
            address: None,
            members_may_join: false,
            member_nodes: false,
            key: None,
            timing: Timing::default(),
            state_dir: dir.join("state"),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    async fn wait_view(
        rx: &mut watch::Receiver<ClusterView>,
        what: &str,
        f: impl Fn(&ClusterView) -> bool,
    ) -> ClusterView {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| f(v)))
            .await
            .map(|r| r.map(|v| v.clone()));
        match r {
            Ok(Ok(v)) => v,
            _ => panic!("timed out waiting for {what}: {:?}", *rx.borrow()),
        }
    }

    #[tokio::test]
    async fn single_member_leads_without_a_socket_and_owns_desired_eligible_ips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = ClusterDriver::spawn(single(dir.path()))
            .await
            .expect("spawn");
        assert!(h.local_addr().is_none(), "a cluster of one binds nothing");
        assert!(h.stats().is_none());
        let mut rx = h.view();
        let x = ip("10.0.0.1");
        h.set_desired([(x, "default/web".to_owned())].into());
        h.set_eligible([x].into());
        let v = wait_view(&mut rx, "owning x", |v| v.owns(&x, now())).await;
        assert_eq!(v.role, Role::Leader);
        assert!(v.standalone);
        assert!(v.term >= 1);
        assert_eq!(v.owners.get(&x).map(String::as_str), Some("solo"));
        assert!(
            dir.path()
                .join("state")
                .join(hard_state::FILE_NAME)
                .exists()
        );
        h.set_eligible(BTreeSet::new());
        wait_view(&mut rx, "x released", |v| !v.owns(&x, now())).await;
        assert_eq!(h.shutdown().await, ShutdownOutcome::Complete);
        let v = rx.borrow().clone();
        assert!(v.stopped && v.owned.is_empty());
    }

    #[tokio::test]
    async fn lease_deadline_is_checked_at_answer_time() {
        let t = now();
        let v = ClusterView {
            me: "a".into(),
            role: Role::Follower,
            term: 1,
            leader: Some("b".into()),
            owned: [(ip("10.0.0.1"), t + Duration::from_millis(100))].into(),
            owners: BTreeMap::new(),
            members: vec![],
            standalone: false,
            stopped: false,
            voters_version: 0,
            voters: BTreeMap::new(),
        };
        assert!(v.owns(&ip("10.0.0.1"), t));
        assert!(!v.owns(&ip("10.0.0.1"), t + Duration::from_millis(100)));
        assert!(!v.owns(&ip("10.0.0.2"), t));
        assert_eq!(v.next_expiry(t), Some(t + Duration::from_millis(100)));
        assert!(v.owned_ips(t + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn views_differing_only_in_ack_times_count_as_the_same_others_do_not() {
        let t = now();
        let member = |last_ack, owns| MemberView {
            name: "m".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            voter: false,
            alive: true,
            last_ack,
            eligible: 2,
            owns,
        };
        let view = |m: MemberView| ClusterView {
            me: "a".into(),
            role: Role::Leader,
            term: 1,
            leader: Some("a".into()),
            owned: BTreeMap::new(),
            owners: [(ip("10.0.0.1"), "m".to_owned())].into(),
            members: vec![m],
            standalone: false,
            stopped: false,
            voters_version: 0,
            voters: BTreeMap::new(),
        };
        let a = view(member(Some(t), 1));
        assert!(a.same_apart_from_ack_times(&view(member(None, 1))));
        assert!(!a.same_apart_from_ack_times(&view(member(Some(t), 0))));
        let mut b = a.clone();
        b.owners.clear();
        assert!(!a.same_apart_from_ack_times(&b));
        let mut c = a.clone();
        c.members.push(member(None, 0));
        assert!(!a.same_apart_from_ack_times(&c));
    }

    #[tokio::test]
    async fn restarted_single_member_keeps_a_term_not_lower() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = ClusterDriver::spawn(single(dir.path()))
            .await
            .expect("spawn");
        let mut rx = h.view();
        let t1 = wait_view(&mut rx, "leader", |v| v.role == Role::Leader)
            .await
            .term;
        h.abort();
        let h2 = ClusterDriver::spawn(single(dir.path()))
            .await
            .expect("respawn");
        let mut rx2 = h2.view();
        let v = wait_view(&mut rx2, "leader again", |v| v.role == Role::Leader).await;
        assert!(v.term > t1, "new term {} after {t1}", v.term);
        drop(h2);
    }

    #[tokio::test]
    async fn peers_without_a_key_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = single(dir.path());
        s.members
            .insert("other".into(), SocketAddr::from(([127, 0, 0, 1], 1)));
        assert!(matches!(
            ClusterDriver::spawn(s).await,
            Err(DriverError::NoKey)
        ));
    }

    #[test]
    fn settings_from_config_read_the_key_and_validate_timing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, b"s3cret\n").expect("write key");
        let node = NodeConfig {
            name: "a".into(),
            role: crate::config::Role::Witness,
            state_dir: dir.path().join("state"),
        };
        let mut cluster = ClusterConfig {
            members: [
                ("a".to_owned(), SocketAddr::from(([127, 0, 0, 1], 1))),
                ("b".to_owned(), SocketAddr::from(([127, 0, 0, 1], 2))),
            ]
            .into(),
            address: None,
            members_may_join: false,
            member_nodes: None,
            secret_file: Some(key),
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            clock_drift: Duration::from_millis(25),
            lease: Duration::from_millis(150),
        };
        let s = ClusterSettings::from_config(&node, &cluster).expect("settings");
        assert_eq!(s.key.as_deref(), Some(&b"s3cret"[..]));
        assert!(s.witness);
        cluster.secret_file = None;
        assert!(matches!(
            ClusterSettings::from_config(&node, &cluster),
            Err(DriverError::NoKey)
        ));
        cluster.secret_file = Some(dir.path().join("missing.key"));
        let err = ClusterSettings::from_config(&node, &cluster).expect_err("missing key");
        assert!(err.to_string().contains("missing.key"), "{err}");
    }
}
