//! The daemon's state as the operations surface sees it: a plain, serializable snapshot.
//!
//! The daemon builds a fresh [`Snapshot`] whenever something it reports changes and publishes
//! it through a `tokio::sync::watch::Sender<Snapshot>`; D-Bus, `lbctl` and `/ready` only read
//! it. The JSON form of these types is what `GetStatus` & co. return and what
//! `lbctl … --json` prints, so field names are part of the interface: add, don't rename.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{IpRange, PoolProtocol};

/// Everything `lbctl status` shows, at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Version of the running `lbd`.
    pub version: String,
    /// This host's node name.
    pub node: String,
    pub role: NodeRole,
    /// READY=1 has been sent (config loaded, transport up, stores synced or given up on).
    pub ready: bool,
    /// The one-line state also sent as sd_notify `STATUS=`.
    pub status_line: String,
    pub config: ConfigStatus,
    pub cluster: ClusterStatus,
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

impl Snapshot {
    /// What the daemon publishes before it knows anything: not ready, nothing announced.
    pub fn starting(
        node: impl Into<String>,
        config_path: impl Into<String>,
        loaded_at: u64,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: node.into(),
            role: NodeRole::Member,
            ready: false,
            status_line: "starting".to_string(),
            config: ConfigStatus {
                path: config_path.into(),
                loaded_at,
                last_reload: None,
            },
            cluster: ClusterStatus {
                term: 0,
                leader: None,
                role: ClusterRole::Follower,
                members: Vec::new(),
            },
            services: Vec::new(),
            pools: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// `[node] role` of lb.toml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Member,
    /// Votes in raft-lite, never announces.
    Witness,
    /// Announces, does not vote: not among `[cluster] voters`, admitted by the leader.
    Joined,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Member => "member",
            NodeRole::Witness => "witness",
            NodeRole::Joined => "member (no vote)",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    /// When the configuration in effect was loaded, Unix seconds.
    pub loaded_at: u64,
    /// The last reload attempt (SIGHUP or `Reload()`); `None` if there was none.
    pub last_reload: Option<ReloadResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub ok: bool,
    /// Unix seconds.
    pub at: u64,
    /// What changed, or why the new configuration was refused.
    pub message: String,
}

/// This node's view of raft-lite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub term: u64,
    pub leader: Option<String>,
    pub role: ClusterRole,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

/// This node's raft-lite role; `standalone` for a cluster of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    Leader,
    Follower,
    Candidate,
    Standalone,
}

impl fmt::Display for ClusterRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterRole::Leader => "leader",
            ClusterRole::Follower => "follower",
            ClusterRole::Candidate => "candidate",
            ClusterRole::Standalone => "standalone",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    /// raft-lite UDP address; `None` (JSON `null`) on a cluster of one, which binds none.
    pub address: Option<SocketAddr>,
    pub role: NodeRole,
    /// Heard from recently enough to hold IPs (the leader's view; a follower's own view
    /// otherwise).
    pub healthy: bool,
    /// Milliseconds since this node last heard from it; `None`: never, or this node itself.
    pub last_seen_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub pool: String,
    pub protocol: AnnounceProtocol,
    /// Layer 2: the owner (at most one). BGP: the nodes advertising it.
    #[serde(default)]
    pub announced_by: Vec<String>,
    pub state: ServiceState,
}

/// How a pool's addresses are announced (`PoolProtocol`, serializable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceProtocol {
    Layer2,
    Bgp,
    /// An allocate-only pool: never announced by lbd.
    None,
}

impl From<PoolProtocol> for AnnounceProtocol {
    fn from(p: PoolProtocol) -> Self {
        match p {
            PoolProtocol::Layer2 => AnnounceProtocol::Layer2,
            PoolProtocol::Bgp => AnnounceProtocol::Bgp,
            PoolProtocol::None => AnnounceProtocol::None,
        }
    }
}

impl fmt::Display for AnnounceProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnnounceProtocol::Layer2 => "layer2",
            AnnounceProtocol::Bgp => "bgp",
            AnnounceProtocol::None => "none",
        })
    }
}

/// Serialized as `"announced"`, `"pending"`, `"elsewhere"`, `"not announced"` or
/// `"failed: <reason>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Announced,
    /// Allocated but not (yet) announced by anyone, e.g. no eligible node.
    Pending,
    /// A layer-2 IP this follower does not own: only the raft-lite leader knows which host
    /// does (ask it), so a follower doesn't claim "pending".
    Elsewhere,
    /// From an allocate-only pool (`protocol = "none"`): in Service status, announced by
    /// no host on purpose.
    NotAnnounced,
    Failed(String),
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Announced => f.write_str("announced"),
            ServiceState::Pending => f.write_str("pending"),
            ServiceState::Elsewhere => f.write_str("elsewhere"),
            ServiceState::NotAnnounced => f.write_str("not announced"),
            ServiceState::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

impl std::str::FromStr for ServiceState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "announced" => Ok(ServiceState::Announced),
            "pending" => Ok(ServiceState::Pending),
            "elsewhere" => Ok(ServiceState::Elsewhere),
            "not announced" => Ok(ServiceState::NotAnnounced),
            _ => match s.strip_prefix("failed") {
                Some(rest) => Ok(ServiceState::Failed(
                    rest.strip_prefix(':').unwrap_or(rest).trim().to_string(),
                )),
                None => Err(format!(
                    "unknown service state {s:?} (expected announced, pending, elsewhere, not announced or failed: …)"
                )),
            },
        }
    }
}

impl Serialize for ServiceState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub protocol: AnnounceProtocol,
    pub total: AddressCount,
    pub used: AddressCount,
    pub free: AddressCount,
}

impl PoolStatus {
    /// `free` is derived: `total - used`, never below zero.
    pub fn new(
        name: impl Into<String>,
        protocol: AnnounceProtocol,
        total: AddressCount,
        used: AddressCount,
    ) -> Self {
        Self {
            name: name.into(),
            protocol,
            total,
            used,
            free: AddressCount(total.0.saturating_sub(used.0)),
        }
    }
}

/// A number of addresses. IPv6 pools hold up to 2^128 addresses, which neither `u64` nor a
/// JSON number read as a double (jq, JavaScript) can carry exactly, so it is serialized as a
/// decimal string, e.g. `"18446744073709551616"`. Saturates at `u128::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressCount(pub u128);

impl AddressCount {
    /// Total size of a pool's ranges (ranges of a valid pool do not overlap).
    pub fn of_ranges(ranges: &[IpRange]) -> Self {
        AddressCount(
            ranges
                .iter()
                .fold(0u128, |acc, r| acc.saturating_add(r.len())),
        )
    }

    /// As a float for a Prometheus gauge (exact up to 2^53, close enough beyond).
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
}

impl fmt::Display for AddressCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for AddressCount {
    fn from(n: u64) -> Self {
        AddressCount(n.into())
    }
}

impl Serialize for AddressCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept a plain number as well, for hand-written JSON.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Number(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(AddressCount(n.into())),
            Repr::Text(s) => s.parse::<u128>().map(AddressCount).map_err(|e| {
                serde::de::Error::custom(format!("address count {s:?} is not a number: {e}"))
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub my_asn: u32,
    /// 0 for a `dynamic_asn = "external"` peer until its OPEN is in.
    pub peer_asn: u32,
    pub state: BgpState,
    /// Seconds in Established; 0 when not established.
    pub uptime_s: u64,
    pub prefixes_advertised: u64,
    pub updates_received: u64,
}

/// RFC 4271 §8.2.2 session states (the FSM's own type).
pub use crate::bgp::fsm::State as BgpState;

/// A snapshot with one of everything: the fixture of the render and D-Bus unit tests and of
/// `tests/ops/control_dbus.rs` (one copy, so the lbctl tests and the unit tests agree).
#[doc(hidden)]
pub fn sample() -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        node: "worker-1".into(),
        role: NodeRole::Member,
        ready: true,
        status_line: "leader of term 7; 2 of 3 services announced".into(),
        config: ConfigStatus {
            path: "/etc/lb.toml".into(),
            loaded_at: 1_767_225_600,
            last_reload: Some(ReloadResult {
                ok: false,
                at: 1_767_229_200,
                message: "pool web: 10.0.0.0/33 is not a CIDR".into(),
            }),
        },
        cluster: ClusterStatus {
            term: 7,
            leader: Some("worker-1".into()),
            role: ClusterRole::Leader,
            members: vec![
                MemberStatus {
                    name: "worker-1".into(),
                    address: Some(SocketAddr::from(([10, 10, 100, 3], 7946))),
                    role: NodeRole::Member,
                    healthy: true,
                    last_seen_ms: None,
                },
                MemberStatus {
                    name: "worker-2".into(),
                    address: Some(SocketAddr::from(([10, 10, 100, 4], 7946))),
                    role: NodeRole::Witness,
                    healthy: false,
                    last_seen_ms: Some(4200),
                },
            ],
        },
        services: vec![
            ServiceStatus {
                namespace: "default".into(),
                name: "nginx".into(),
                ips: vec![
                    IpAddr::from([10, 10, 100, 200]),
                    IpAddr::from([0xfd00, 0x10, 0, 0, 0, 0, 0, 1]),
                ],
                pool: "ip-space-1".into(),
                protocol: AnnounceProtocol::Layer2,
                announced_by: vec!["worker-1".into()],
                state: ServiceState::Announced,
            },
            ServiceStatus {
                namespace: "shop".into(),
                name: "checkout".into(),
                ips: vec![],
                pool: "ip-pool-1".into(),
                protocol: AnnounceProtocol::Bgp,
                announced_by: vec![],
                state: ServiceState::Failed("no available IPs in pool ip-pool-1".into()),
            },
        ],
        pools: vec![
            PoolStatus::new(
                "ip-space-1",
                AnnounceProtocol::Layer2,
                AddressCount(258),
                AddressCount(1),
            ),
            PoolStatus::new(
                "v6-big",
                AnnounceProtocol::Bgp,
                AddressCount(1u128 << 64),
                AddressCount(0),
            ),
        ],
        peers: vec![PeerStatus {
            address: IpAddr::from([10, 10, 100, 1]),
            my_asn: 64500,
            peer_asn: 64501,
            state: BgpState::Established,
            uptime_s: 3725,
            prefixes_advertised: 2,
            updates_received: 5,
        }],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn snapshot_json_round_trips() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn service_state_serializes_as_documented_strings() {
        let v = serde_json::to_value(sample().services).unwrap();
        assert_eq!(v[0]["state"], "announced");
        assert_eq!(v[1]["state"], "failed: no available IPs in pool ip-pool-1");
        assert_eq!(v[1]["protocol"], "bgp");
        assert_eq!("pending".parse::<ServiceState>(), Ok(ServiceState::Pending));
        assert_eq!(
            "elsewhere".parse::<ServiceState>(),
            Ok(ServiceState::Elsewhere)
        );
        assert_eq!(ServiceState::Elsewhere.to_string(), "elsewhere");
        assert!("exploded".parse::<ServiceState>().is_err());
    }

    #[test]
    fn huge_ipv6_pool_count_is_exact_decimal_string() {
        let v = serde_json::to_value(&sample().pools[1]).unwrap();
        assert_eq!(v["total"], "18446744073709551616");
        assert_eq!(v["free"], "18446744073709551616");
        let whole_v6 = IpRange::new(
            "::".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            AddressCount::of_ranges(&[whole_v6, whole_v6]),
            AddressCount(u128::MAX)
        );
    }

    #[test]
    fn address_count_accepts_number_and_rejects_garbage() {
        let n: AddressCount = serde_json::from_str("12").unwrap();
        assert_eq!(n, AddressCount(12));
        assert!(serde_json::from_str::<AddressCount>("\"twelve\"").is_err());
        assert!(serde_json::from_str::<AddressCount>("-1").is_err());
    }

    #[test]
    fn pool_free_never_goes_below_zero() {
        let p = PoolStatus::new(
            "p",
            AnnounceProtocol::Layer2,
            AddressCount(2),
            AddressCount(5),
        );
        assert_eq!(p.free, AddressCount(0));
    }

    #[test]
    fn roles_serialize_lowercase() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["role"], "member");
        assert_eq!(v["cluster"]["role"], "leader");
        assert_eq!(v["cluster"]["members"][1]["role"], "witness");
        assert_eq!(v["peers"][0]["state"], "Established");
    }
}
