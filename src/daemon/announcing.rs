//! Who announces each Service, told to Kubernetes by the status writer (the raft-lite
//! leader): the `lb.org/announcing` annotation and MetalLB's `nodeAssigned` Events. The
//! pure core `lb_core::announcers` decides what to write and when (rate limits, what was
//! already reported); this room finds the Services a change touches and who announces them
//! ([`announce::announcing`]), so a change costs the Services it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::announcers::{Announcers, Announcing, Input, Limits, Output, Protocol};
use crate::bgp::advertise::{LocalNode, PeerPolicy};
use crate::config::{Config, Role};
use crate::controller::{Announcement, Controller, STATIC_NAMESPACE};
use crate::model::{Service, ServiceKey};

use super::announce;

pub struct Reporter {
    core: Announcers,
    /// This host writes (it is the leader, with Kubernetes configured).
    active: bool,
    /// IP → the Services announced with it, from the controller's outputs.
    ip_services: BTreeMap<IpAddr, Vec<ServiceKey>>,
    /// The layer-2 owners last looked at.
    owners: BTreeMap<IpAddr, String>,
}

/// What [`announce::announcing`] needs, borrowed from the daemon.
pub struct Context<'a> {
    pub ctl: &'a Controller,
    pub config: &'a Config,
}

impl Context<'_> {
    /// The cluster's members as the BGP advertiser sees them (a cluster of one: this host).
    fn nodes(&self) -> Vec<LocalNode> {
        let me = &self.config.node.name;
        let names: Vec<&String> = if self.config.cluster.members.is_empty() {
            vec![me]
        } else {
            self.config.cluster.members.keys().collect()
        };
        names
            .into_iter()
            .map(|name| {
                let node = self.ctl.nodes().get(name);
                LocalNode {
                    name: name.clone(),
                    labels: node.map(|n| n.labels.clone()).unwrap_or_default(),
                    // Only this host's own role is known here; another member's witness
                    // role is in its own lb.toml.
                    eligible: node
                        .is_some_and(|n| !n.excluded_from_load_balancers && !n.network_unavailable)
                        && !(name == me && self.config.node.role == Role::Witness),
                }
            })
            .collect()
    }

    fn peers(&self) -> Vec<PeerPolicy> {
        self.config.bgp_peers.iter().map(|p| p.policy()).collect()
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            core: Announcers::new(Limits::default()),
            active: false,
            ip_services: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }
}

impl Reporter {
    /// The watch delivered `svc`: what its annotation says now.
    pub fn observed(&mut self, svc: &Service) -> Vec<Output> {
        if svc.key.namespace == STATIC_NAMESPACE {
            return Vec::new();
        }
        self.core.step(
            Instant::now(),
            Input::Observed {
                service: svc.key.clone(),
                annotation: svc.announcing.clone(),
            },
        )
    }

    pub fn gone(&mut self, key: &ServiceKey) -> Vec<Output> {
        self.core.step(Instant::now(), Input::Gone(key.clone()))
    }

    /// The controller's announcement of `ip` is now `a` (`None`: withdrawn); the Services
    /// it touches, before and after.
    pub fn announcement(&mut self, ip: IpAddr, a: Option<&Announcement>) -> Vec<ServiceKey> {
        let mut touched = match a {
            Some(a) => self.ip_services.insert(ip, a.services.clone()),
            None => self.ip_services.remove(&ip),
        }
        .unwrap_or_default();
        touched.extend(a.into_iter().flat_map(|a| a.services.iter().cloned()));
        touched
    }

    /// raft-lite's owners are now `owners`: the Services of the IPs that moved.
    pub fn owners(&mut self, owners: &BTreeMap<IpAddr, String>) -> Vec<ServiceKey> {
        if *owners == self.owners {
            return Vec::new();
        }
        let moved: BTreeSet<IpAddr> = owners
            .iter()
            .filter(|(ip, o)| self.owners.get(ip) != Some(o))
            .map(|(ip, _)| *ip)
            .chain(
                self.owners
                    .keys()
                    .filter(|ip| !owners.contains_key(ip))
                    .copied(),
            )
            .collect();
        self.owners = owners.clone();
        moved
            .iter()
            .filter_map(|ip| self.ip_services.get(ip))
            .flatten()
            .cloned()
            .collect()
    }

    /// Starts or stops writing. Starting looks at every Service once.
    pub fn set_active(&mut self, active: bool, cx: &Context<'_>) -> Vec<Output> {
        if active == self.active {
            return Vec::new();
        }
        self.active = active;
        if active {
            self.refresh_all(cx)
        } else {
            self.core.stand_down();
            Vec::new()
        }
    }

    /// Something every Service may depend on changed (a Node, the peers, the pools).
    pub fn refresh_all(&mut self, cx: &Context<'_>) -> Vec<Output> {
        let all: Vec<ServiceKey> = cx.ctl.services().keys().cloned().collect();
        self.refresh(all, cx)
    }

    /// Recomputes who announces `services` and hands the core what changed.
    pub fn refresh(
        &mut self,
        services: impl IntoIterator<Item = ServiceKey>,
        cx: &Context<'_>,
    ) -> Vec<Output> {
        if !self.active {
            return Vec::new();
        }
        // The members matter only to BGP pools (with peers to announce to).
        let bgp = !cx.config.bgp_peers.is_empty()
            && cx
                .config
                .pools
                .iter()
                .any(|p| p.protocol == crate::model::PoolProtocol::Bgp);
        let (nodes, peers) = if bgp {
            (cx.nodes(), cx.peers())
        } else {
            (Vec::new(), Vec::new())
        };
        let now = Instant::now();
        let mut out = Vec::new();
        let services: BTreeSet<ServiceKey> = services.into_iter().collect();
        for key in services {
            if key.namespace == STATIC_NAMESPACE {
                continue;
            }
            let Some(svc) = cx.ctl.services().get(&key) else {
                continue;
            };
            let announcing = announce::announcing(
                &svc.current_ips,
                cx.ctl.announced(),
                &cx.config.pools,
                &self.owners,
                &nodes,
                &peers,
            )
            .unwrap_or(Announcing {
                protocol: Protocol::Layer2,
                nodes: BTreeSet::new(),
            });
            out.extend(self.core.step(
                now,
                Input::Set {
                    service: key,
                    announcing,
                },
            ));
        }
        out
    }

    /// Reports what was held back and is now due.
    pub fn tick(&mut self) -> Vec<Output> {
        if !self.active || self.core.next_deadline().is_none_or(|d| d > Instant::now()) {
            return Vec::new();
        }
        self.core.step(Instant::now(), Input::Tick)
    }
}
