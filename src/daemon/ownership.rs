//! Who owns each layer-2 IP, as the main loop sees it: the raft-lite driver's published
//! view (a cluster of one runs the same driver without a socket). Every answer about
//! ownership checks the lease deadline at the moment it is asked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::core::Role as CoreRole;
use crate::cluster::driver::{
    self, ClusterDriver, ClusterHandle, ClusterSettings, ClusterView, DriverError, RemoveError,
    ShutdownOutcome,
};
use crate::config::{Config, Role};
use crate::control::metrics::Metrics;
use crate::control::state::{ClusterRole, MemberStatus, NodeRole};

/// The cluster as this host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: ClusterRole,
    pub term: u64,
    pub leader: Option<String>,
    /// IP → owner, where this host knows it (the leader knows all; others know their own).
    pub owners: BTreeMap<IpAddr, String>,
}

pub struct Ownership {
    handle: Option<ClusterHandle>,
    view: watch::Receiver<ClusterView>,
}

impl Ownership {
    pub async fn start(config: &Config, metrics: Metrics) -> Result<Self, DriverError> {
        let settings = ClusterSettings::from_config(&config.node, &config.cluster)?;
        let handle = ClusterDriver::spawn_with_metrics(settings, metrics).await?;
        if let Some(addr) = handle.local_addr() {
            info!(%addr, members = config.cluster.members.len(), "raft-lite transport up");
        }
        let view = handle.view();
        Ok(Self {
            handle: Some(handle),
            view,
        })
    }

    /// For the Node watch of `[cluster] member_nodes` (none after a shutdown).
    pub fn allowed_members_sender(&self) -> Option<driver::AllowedMembersSender> {
        self.handle.as_ref().map(|h| h.allowed_members_sender())
    }

    pub fn set_desired(&self, desired: BTreeMap<IpAddr, String>) {
        if let Some(h) = &self.handle {
            h.set_desired(desired);
        }
    }

    pub fn set_eligible(&self, eligible: BTreeSet<IpAddr>) {
        if let Some(h) = &self.handle {
            h.set_eligible(eligible);
        }
    }

    pub fn change_desired(&self, changes: Vec<(IpAddr, Option<String>)>) {
        if let Some(h) = &self.handle {
            h.change_desired(changes);
        }
    }

    pub fn change_eligible(&self, changes: Vec<(IpAddr, bool)>) {
        if let Some(h) = &self.handle {
            h.change_eligible(changes);
        }
    }

    /// Resolves when the driver publishes a new view (false once the driver is gone).
    pub async fn changed(&mut self) -> bool {
        self.view.changed().await.is_ok()
    }

    /// The IPs this host may answer for at this instant (lease deadlines checked now).
    pub fn owned_now(&self) -> BTreeSet<IpAddr> {
        self.view.borrow().owned_ips(driver::now())
    }

    /// For the ARP/NDP socket: may this host answer for `ip` at this very instant?
    pub fn gate(&self) -> crate::l2::socket::Gate {
        let view = self.view.clone();
        std::sync::Arc::new(move |ip| view.borrow().owns(&ip, driver::now()))
    }

    /// When the earliest lease still held runs out: the responder must drop that IP then,
    /// even if no new view arrives.
    pub fn next_expiry(&self) -> Option<std::time::Instant> {
        self.view.borrow().next_expiry(driver::now())
    }

    pub fn view(&self) -> View {
        let v = self.view.borrow();
        let role = if v.standalone {
            ClusterRole::Standalone
        } else {
            match v.role {
                CoreRole::Leader => ClusterRole::Leader,
                CoreRole::Candidate | CoreRole::PreCandidate => ClusterRole::Candidate,
                CoreRole::Follower => ClusterRole::Follower,
            }
        };
        let now = driver::now();
        let owners = if v.owners.is_empty() {
            v.owned_ips(now)
                .into_iter()
                .map(|ip| (ip, v.me.clone()))
                .collect()
        } else {
            v.owners.clone()
        };
        View {
            role,
            term: v.term,
            leader: v.leader.clone(),
            owners,
        }
    }

    pub fn members(&self, config: &Config) -> Vec<MemberStatus> {
        let v = self.view.borrow();
        let now = driver::now();
        let leader_view = v.role == CoreRole::Leader;
        // The committed voter set (a reload may have changed it since the start).
        let voters = if v.voters.is_empty() {
            config.cluster.members.clone()
        } else {
            v.voters.clone()
        };
        voters
            .iter()
            .map(|(name, addr)| {
                let m = v.members.iter().find(|m| &m.name == name);
                MemberStatus {
                    name: name.clone(),
                    // A cluster of one binds no socket: the configured (or default)
                    // address is not listened on, so none is reported.
                    address: (!v.standalone).then_some(*addr),
                    role: if *name == config.node.name && config.node.role == Role::Witness {
                        NodeRole::Witness
                    } else {
                        NodeRole::Member
                    },
                    healthy: if leader_view {
                        m.is_some_and(|m| m.alive)
                    } else {
                        // A follower knows only itself and whether it hears a leader.
                        *name == v.me || v.leader.as_ref() == Some(name)
                    },
                    last_seen_ms: m
                        .and_then(|m| m.last_ack)
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                }
            })
            // Hosts that joined without voting: the leader lists every one it admitted,
            // another host itself (when it is one).
            .chain(v.members.iter().filter(|m| !m.voter).map(|m| {
                MemberStatus {
                    name: m.name.clone(),
                    address: Some(m.addr),
                    role: NodeRole::Joined,
                    healthy: if leader_view { m.alive } else { m.name == v.me },
                    last_seen_ms: m
                        .last_ack
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                }
            }))
            .collect()
    }

    /// `lbctl cluster remove NAME` ([`ClusterHandle::remove_member`]).
    pub async fn remove_member(&self, name: &str) -> Result<(), RemoveError> {
        match &self.handle {
            Some(h) => h.remove_member(name).await,
            None => Err(RemoveError::Stopped),
        }
    }

    /// A reload's `[cluster] voters`: nothing when it is the running set, one voter added or
    /// removed is proposed to raft-lite, anything else is refused (the running set stays).
    pub fn propose_voters(
        &self,
        voters: &BTreeMap<String, std::net::SocketAddr>,
    ) -> Result<Option<crate::cluster::voters::Change>, crate::cluster::voters::VoterChangeError>
    {
        let running = self.view.borrow().voters.clone();
        let r = crate::cluster::voters::change(&running, voters);
        if let (Ok(Some(_)), Some(h)) = (&r, &self.handle) {
            h.propose_voters(voters.clone());
        }
        r
    }

    /// Planned leave: hand leadership and owned IPs over (bounded by the driver's own
    /// timeout and by `deadline`).
    pub async fn shutdown(&mut self, deadline: tokio::time::Instant) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        match tokio::time::timeout_at(deadline, handle.shutdown()).await {
            Ok(ShutdownOutcome::Complete) => info!("raft-lite: left the cluster, IPs handed over"),
            Ok(other) => warn!(?other, "raft-lite: planned leave did not complete"),
            Err(_) => warn!("raft-lite: planned leave timed out"),
        }
    }
}
