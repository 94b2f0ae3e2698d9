//! Who owns each layer-2 IP, as the main loop sees it: raft-lite between the `[cluster]`
//! members, or this host alone for a cluster of one (it then owns every IP it can announce,
//! and is the status writer).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::config::{Config, Role};
use crate::control::state::{ClusterRole, MemberStatus, NodeRole};

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "[cluster] has {0} members, but this build of lbd runs raft-lite only for a cluster of one"
    )]
    ClusterUnsupported(usize),
}

/// The cluster as this host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: ClusterRole,
    pub term: u64,
    pub leader: Option<String>,
    /// IP → owner, where this host knows it (the leader knows all).
    pub owners: BTreeMap<IpAddr, String>,
}

pub struct Ownership {
    me: String,
    desired: BTreeMap<IpAddr, String>,
    eligible: BTreeSet<IpAddr>,
}

impl Ownership {
    pub async fn start(config: &Config) -> Result<Self, OwnershipError> {
        let n = config.cluster.members.len();
        if n > 1 {
            return Err(OwnershipError::ClusterUnsupported(n));
        }
        Ok(Self {
            me: config.node.name.clone(),
            desired: BTreeMap::new(),
            eligible: BTreeSet::new(),
        })
    }

    pub fn set_desired(&mut self, desired: BTreeMap<IpAddr, String>) {
        self.desired = desired;
    }

    pub fn set_eligible(&mut self, eligible: BTreeSet<IpAddr>) {
        self.eligible = eligible;
    }

    /// Resolves when the view changed by itself (a standalone host's never does: it changes
    /// only through `set_*`, after which the caller recomputes anyway).
    pub async fn changed(&mut self) -> bool {
        std::future::pending().await
    }

    /// The IPs this host may answer for at this instant.
    pub fn owned_now(&self) -> BTreeSet<IpAddr> {
        self.desired
            .keys()
            .filter(|ip| self.eligible.contains(ip))
            .copied()
            .collect()
    }

    /// When the earliest lease runs out (standalone: none expire).
    pub fn next_expiry(&self) -> Option<Instant> {
        None
    }

    pub fn view(&self) -> View {
        View {
            role: ClusterRole::Standalone,
            term: 0,
            leader: Some(self.me.clone()),
            owners: self
                .owned_now()
                .into_iter()
                .map(|ip| (ip, self.me.clone()))
                .collect(),
        }
    }

    pub fn members(&self, config: &Config) -> Vec<MemberStatus> {
        config
            .cluster
            .members
            .iter()
            .map(|(name, addr)| MemberStatus {
                name: name.clone(),
                address: *addr,
                role: if *name == config.node.name && config.node.role == Role::Witness {
                    NodeRole::Witness
                } else {
                    NodeRole::Member
                },
                healthy: true,
                last_seen_ms: None,
            })
            .collect()
    }

    /// Planned leave. Standalone: nothing to hand over.
    pub async fn shutdown(&mut self, _deadline: tokio::time::Instant) {}
}
