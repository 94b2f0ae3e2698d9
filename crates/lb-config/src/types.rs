//! The validated configuration. Everything here has passed the checks in `validate`; defaults
//! are filled in. All types are `Clone + PartialEq` so a reload can compare old and new.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::model::StaticService;
use crate::model::{NodeSelector, Pool, Pools};
pub use lb_core::bgp::fsm::DynamicAsn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node: NodeConfig,
    /// `None`: run standalone, announcing only the static services.
    pub kubernetes: Option<KubernetesConfig>,
    pub cluster: ClusterConfig,
    pub layer2: Layer2Config,
    /// Shared with the controller, the allocator and the BGP speaker (one value, versioned).
    pub pools: Pools,
    pub bgp_peers: Vec<BgpPeer>,
    pub services: Vec<StaticService>,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This host's name among the cluster members; equals its Kubernetes Node name.
    pub name: String,
    pub role: Role,
    /// Where raft-lite keeps its hard state (term, vote).
    pub state_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    #[default]
    Member,
    /// Votes in raft-lite but never announces (the third voter of a 2-host cluster).
    Witness,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub kubeconfig: PathBuf,
    /// Serve only Services with this `spec.loadBalancerClass`; `None`: only those with none.
    pub load_balancer_class: Option<String>,
    /// Ignore `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_label: bool,
    /// Service status writes the leader has in flight at once (each is two requests: the
    /// status and the pool annotation).
    pub max_writes_in_flight: usize,
}

impl KubernetesConfig {
    /// Chosen by measurement (docs/bench/kube.md): beyond it the API server, not lbd, is
    /// the limit.
    pub const DEFAULT_MAX_WRITES_IN_FLIGHT: usize = 16;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The voters: name → raft-lite UDP address (`members`, or `voters`). Contains this
    /// host (`node.name`) unless `address` is set. Without a `[cluster]` table: this host
    /// alone at `127.0.0.1:7946` (a cluster of one never sends).
    pub members: BTreeMap<String, SocketAddr>,
    /// This host's own address when it is not among the voters: a member that holds
    /// leases but does not vote, admitted by the leader when it starts.
    pub address: Option<SocketAddr>,
    /// Written as `voters`: members may join even a single voter (it binds its socket).
    pub members_may_join: bool,
    /// `member_nodes`: the members are the Kubernetes Nodes matching its selectors, each at
    /// its InternalIP and `port` (a member then has no `address` of its own).
    pub member_nodes: Option<MemberNodes>,
    /// Shared HMAC key; required whenever `[cluster]` is given.
    pub secret_file: Option<PathBuf>,
    pub heartbeat: Duration,
    /// Minimum election timeout; the timeout is drawn from `[t, 2t)`.
    pub election_timeout: Duration,
    /// Bound on clock-rate drift between hosts over one lease.
    pub clock_drift: Duration,
    /// Derived: 3 × heartbeat. Validated: lease + heartbeat + clock_drift < election_timeout.
    pub lease: Duration,
}

/// `[cluster] member_nodes`: which Kubernetes Nodes may be members, and their port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberNodes {
    /// A Node qualifies when any selector matches its labels (none: every Node).
    pub node_selectors: Vec<NodeSelector>,
    /// Every member's raft-lite UDP port; its IP is its Node's InternalIP.
    pub port: u16,
}

impl ClusterConfig {
    pub const DEFAULT_PORT: u16 = 7946;
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(50);
    pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(300);
    pub const DEFAULT_CLOCK_DRIFT: Duration = Duration::from_millis(25);
    pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer2Config {
    /// Gratuitous ARPs / unsolicited NAs sent on taking an IP.
    pub gratuitous_count: u32,
    pub gratuitous_interval: Duration,
    /// Periodic refresh while owning; `None` = off (`"0s"` in the file).
    pub refresh_interval: Option<Duration>,
}

impl Default for Layer2Config {
    fn default() -> Self {
        Self {
            gratuitous_count: 3,
            gratuitous_interval: Duration::from_secs(1),
            refresh_interval: Some(Duration::from_secs(30)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    pub my_asn: u32,
    /// With `dynamic_asn`: `my_asn` when internal, 0 when external (the peer's OPEN says).
    pub peer_asn: u32,
    /// The peer's AS is not fixed (MetalLB's `dynamicASN`).
    pub dynamic_asn: Option<DynamicAsn>,
    pub address: IpAddr,
    pub port: u16,
    /// Whole seconds; zero means no keepalives and no hold timer (RFC 4271 §4.2).
    pub hold_time: Duration,
    /// Whole seconds, `<= hold_time`; defaults to a third of it.
    pub keepalive_time: Duration,
    /// `None`: the session's local IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    /// Same family as `address`.
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 key file (RFC 2385).
    pub password_file: Option<PathBuf>,
    /// TTL for eBGP; 1 = directly connected.
    pub ebgp_multihop: u8,
    /// Only accept the peer's connection, never dial.
    pub passive: bool,
    pub connect_delay: Duration,
    /// The interval between connection attempts (MetalLB's `connectTime`, the RFC 4271
    /// ConnectRetryTimer), whole seconds; `None`: 1 s doubling after each failure up to 2 min.
    pub connect_time: Option<Duration>,
    /// Only these nodes peer (empty: all).
    pub node_selectors: Vec<NodeSelector>,
    pub bfd: Option<BfdConfig>,
    /// BGP graceful restart (RFC 4724), restarting-speaker side: the restart time offered
    /// (whole seconds, 1 to 4095); `None` when off.
    pub graceful_restart: Option<Duration>,
}

impl BgpPeer {
    pub const DEFAULT_PORT: u16 = 179;
    pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
    /// How long a router keeps this host's routes while lbd restarts (RFC 4724 restart
    /// time): lbd is back within seconds; the margin covers a slow API server after it.
    pub const DEFAULT_RESTART_TIME: Duration = Duration::from_secs(120);

    /// A peer as a `[[bgp_peer]]` with only `my_asn`, `peer_asn` and `address` set gets it:
    /// every other key at its lb.toml(5) default (hold 90 s, keepalive a third of it).
    pub fn new(my_asn: u32, peer_asn: u32, address: IpAddr) -> BgpPeer {
        BgpPeer {
            my_asn,
            peer_asn,
            dynamic_asn: None,
            address,
            port: Self::DEFAULT_PORT,
            hold_time: Self::DEFAULT_HOLD_TIME,
            keepalive_time: Self::DEFAULT_HOLD_TIME / 3,
            router_id: None,
            source_address: None,
            password_file: None,
            ebgp_multihop: 1,
            passive: false,
            connect_delay: Duration::ZERO,
            connect_time: None,
            node_selectors: vec![],
            bfd: None,
            graceful_restart: Some(Self::DEFAULT_RESTART_TIME),
        }
    }

    pub fn is_ibgp(&self) -> bool {
        match self.dynamic_asn {
            Some(DynamicAsn::Internal) => true,
            Some(DynamicAsn::External) => false,
            None => self.my_asn == self.peer_asn,
        }
    }

    /// What the route advertiser needs of this peer.
    pub fn policy(&self) -> lb_core::bgp::advertise::PeerPolicy {
        lb_core::bgp::advertise::PeerPolicy {
            address: self.address,
            ibgp: self.is_ibgp(),
            node_selectors: self.node_selectors.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdConfig {
    pub receive_interval: Duration,
    pub transmit_interval: Duration,
    pub detect_multiplier: u8,
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            receive_interval: Duration::from_millis(300),
            transmit_interval: Duration::from_millis(300),
            detect_multiplier: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7472)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// journald when stderr is the journal (`JOURNAL_STREAM`), text otherwise.
    #[default]
    Auto,
    Text,
    Journald,
}

impl From<&BfdConfig> for lb_core::bfd::session::Timers {
    fn from(c: &BfdConfig) -> Self {
        lb_core::bfd::session::Timers {
            desired_min_tx: c.transmit_interval,
            required_min_rx: c.receive_interval,
            detect_mult: c.detect_multiplier.max(1),
        }
    }
}
