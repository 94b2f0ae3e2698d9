//! Prometheus metrics. [`Metrics`] is cheap to clone and to update from any task: each
//! update is an atomic operation on a counter or gauge (labelled series are looked up in a
//! read-locked map, created on first use).
//!
//! Where MetalLB has an equivalent series ours has the same meaning and labels, with `lb_`
//! for `metallb_` (see [`SERIES`]). MetalLB's Go client names a counter without `_total`
//! (`metallb_layer2_requests_received`); the OpenMetrics encoder used here always appends
//! `_total` to counters, so ours is `lb_layer2_requests_received_total`.
//!
//! Who feeds what: the daemon's main loop (pools, announced IPs, term, leadership,
//! reloads), the ARP/NDP socket task (`l2::socket::run`: per-IP layer-2 counters), each BGP
//! peer task (`bgp::driver::PeerMetrics`: per-peer series; the speaker removes a removed
//! peer's), the raft-lite driver (elections started, failover durations: the core's
//! `Output::ElectionStarted` / `Output::Failover`; datagrams dropped, from the transport's
//! counters) and the daemon's once-a-second publish step (member health, as `lbctl cluster`
//! shows it).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::state::{AddressCount, AnnounceProtocol};
use crate::cluster::wire::DropReason;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series exposed: (sample name, OpenMetrics type, labels, MetalLB equivalent).
pub const SERIES: &[(&str, &str, &[&str], Option<&str>)] = &[
    ("lb_build_info", "info", &["version"], None),
    (
        "lb_allocator_addresses_total",
        "gauge",
        &["pool"],
        Some("metallb_allocator_addresses_total"),
    ),
    (
        "lb_allocator_addresses_in_use_total",
        "gauge",
        &["pool"],
        Some("metallb_allocator_addresses_in_use_total"),
    ),
    ("lb_allocator_services_allocated", "gauge", &["pool"], None),
    ("lb_announced_ips", "gauge", &["protocol"], None),
    ("lb_layer2_ip_has_owner", "gauge", &["ip", "pool"], None),
    (
        "lb_layer2_requests_received_total",
        "counter",
        &["ip"],
        Some("metallb_layer2_requests_received"),
    ),
    (
        "lb_layer2_responses_sent_total",
        "counter",
        &["ip"],
        Some("metallb_layer2_responses_sent"),
    ),
    (
        "lb_layer2_gratuitous_sent_total",
        "counter",
        &["ip"],
        Some("metallb_layer2_gratuitous_sent"),
    ),
    (
        "lb_bgp_session_up",
        "gauge",
        &["peer"],
        Some("metallb_bgp_session_up"),
    ),
    (
        "lb_bgp_updates_total",
        "counter",
        &["peer"],
        Some("metallb_bgp_updates_total"),
    ),
    (
        "lb_bgp_updates_received_total",
        "counter",
        &["peer"],
        Some("metallb_bgp_updates_total_received"),
    ),
    (
        "lb_bgp_announced_prefixes_total",
        "gauge",
        &["peer"],
        Some("metallb_bgp_announced_prefixes_total"),
    ),
    (
        "lb_bfd_session_up",
        "gauge",
        &["peer"],
        Some("metallb_bfd_session_up"),
    ),
    (
        "lb_bfd_session_down_events_total",
        "counter",
        &["peer"],
        Some("metallb_bfd_session_down_events"),
    ),
    ("lb_cluster_term", "gauge", &[], None),
    ("lb_cluster_is_leader", "gauge", &[], None),
    ("lb_cluster_elections_total", "counter", &[], None),
    (
        "lb_cluster_datagrams_dropped_total",
        "counter",
        &["reason"],
        None,
    ),
    (
        "lb_cluster_joins_refused_total",
        "counter",
        &["reason"],
        None,
    ),
    ("lb_cluster_member_healthy", "gauge", &["member"], None),
    ("lb_cluster_member_node_waiting", "gauge", &[], None),
    (
        "lb_cluster_member_last_seen_seconds",
        "gauge",
        &["member"],
        None,
    ),
    ("lb_failover_duration_seconds", "histogram", &[], None),
    ("lb_config_reloads_total", "counter", &[], None),
    ("lb_config_reload_failures_total", "counter", &[], None),
    (
        "lb_config_stale_bool",
        "gauge",
        &[],
        Some("metallb_k8s_client_config_stale_bool"),
    ),
    (
        "lb_config_last_reload_success_timestamp_seconds",
        "gauge",
        &[],
        None,
    ),
    ("lb_kube_events_dropped_total", "counter", &[], None),
    ("lb_kube_updates_total", "counter", &[], None),
    ("lb_announcements_recomputed_total", "counter", &[], None),
    ("lb_kube_status_write_retries_total", "counter", &[], None),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpLabel {
    ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpPoolLabel {
    ip: String,
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabel {
    member: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Failover buckets: raft-lite aims at sub-second, keepalived-like setups take seconds.
const FAILOVER_BUCKETS: [f64; 12] = [
    0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
];

struct Inner {
    registry: Registry,
    pool_total: Family<PoolLabel, FloatGauge>,
    pool_in_use: Family<PoolLabel, FloatGauge>,
    pool_services: Family<PoolLabel, Gauge>,
    announced: Family<ProtocolLabel, Gauge>,
    l2_requests: Family<IpLabel, Counter>,
    l2_responses: Family<IpLabel, Counter>,
    l2_gratuitous: Family<IpLabel, Counter>,
    l2_has_owner: Family<IpPoolLabel, Gauge>,
    /// The `l2_has_owner` series exported now, so that a new set can remove the rest.
    l2_has_owner_exported: std::sync::Mutex<BTreeMap<IpAddr, (String, bool)>>,
    bfd_up: Family<PeerLabel, Gauge>,
    bfd_down_events: Family<PeerLabel, Counter>,
    bgp_up: Family<PeerLabel, Gauge>,
    bgp_updates_sent: Family<PeerLabel, Counter>,
    bgp_updates_received: Family<PeerLabel, Counter>,
    bgp_prefixes: Family<PeerLabel, Gauge>,
    term: Gauge,
    is_leader: Gauge,
    elections: Counter,
    datagrams_dropped: Family<ReasonLabel, Counter>,
    joins_refused: Family<ReasonLabel, Counter>,
    member_healthy: Family<MemberLabel, Gauge>,
    member_node_waiting: Gauge,
    member_last_seen: Family<MemberLabel, FloatGauge>,
    failover: Histogram,
    reloads: Counter,
    reload_failures: Counter,
    config_stale: Gauge,
    config_loaded_at: Gauge,
    events_dropped: Counter,
    status_retries: Counter,
    kube_updates: Counter,
    recomputed: Counter,
}

/// The daemon's metrics; clone it into every task that counts something.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn peer_label(peer: SocketAddr) -> PeerLabel {
    // MetalLB labels a session `ip:port`.
    PeerLabel {
        peer: peer.to_string(),
    }
}

fn ip_label(ip: IpAddr) -> IpLabel {
    IpLabel { ip: ip.to_string() }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let i = Inner {
            pool_total: Family::default(),
            pool_in_use: Family::default(),
            pool_services: Family::default(),
            announced: Family::default(),
            l2_requests: Family::default(),
            l2_responses: Family::default(),
            l2_gratuitous: Family::default(),
            l2_has_owner: Family::default(),
            l2_has_owner_exported: std::sync::Mutex::default(),
            bfd_up: Family::default(),
            bfd_down_events: Family::default(),
            bgp_up: Family::default(),
            bgp_updates_sent: Family::default(),
            bgp_updates_received: Family::default(),
            bgp_prefixes: Family::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            elections: Counter::default(),
            datagrams_dropped: Family::default(),
            joins_refused: Family::default(),
            member_healthy: Family::default(),
            member_node_waiting: Gauge::default(),
            member_last_seen: Family::default(),
            failover: Histogram::new(FAILOVER_BUCKETS),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            config_stale: Gauge::default(),
            config_loaded_at: Gauge::default(),
            events_dropped: Counter::default(),
            status_retries: Counter::default(),
            kube_updates: Counter::default(),
            recomputed: Counter::default(),
            registry: Registry::default(),
        };
        r.register(
            "lb_build",
            "Version of the running lbd",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        r.register(
            "lb_allocator_addresses_total",
            "Number of usable IP addresses, per pool",
            i.pool_total.clone(),
        );
        r.register(
            "lb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, per pool",
            i.pool_in_use.clone(),
        );
        r.register(
            "lb_allocator_services_allocated",
            "Number of services with an IP from the pool",
            i.pool_services.clone(),
        );
        r.register(
            "lb_announced_ips",
            "Number of IPs this node announces, per protocol (layer2, bgp)",
            i.announced.clone(),
        );
        r.register(
            "lb_layer2_requests_received",
            "Number of layer2 requests (ARP, NDP NS) received for owned IPs",
            i.l2_requests.clone(),
        );
        r.register(
            "lb_layer2_responses_sent",
            "Number of layer2 responses sent for owned IPs in response to requests",
            i.l2_responses.clone(),
        );
        r.register(
            "lb_layer2_gratuitous_sent",
            "Number of gratuitous layer2 packets (ARP, unsolicited NA) sent for owned IPs",
            i.l2_gratuitous.clone(),
        );
        r.register(
            "lb_layer2_ip_has_owner",
            "1 if the layer-2 IP (allocated from the pool) has an owner, 0 if no host announces it; exported by the raft-lite leader (or a cluster of one) only, for every layer-2 IP in use",
            i.l2_has_owner.clone(),
        );
        r.register(
            "lb_bgp_session_up",
            "BGP session state (1 is up, 0 is down)",
            i.bgp_up.clone(),
        );
        r.register(
            "lb_bgp_updates",
            "Number of BGP UPDATE messages sent",
            i.bgp_updates_sent.clone(),
        );
        r.register(
            "lb_bgp_updates_received",
            "Number of BGP UPDATE messages received",
            i.bgp_updates_received.clone(),
        );
        r.register(
            "lb_bgp_announced_prefixes_total",
            "Number of prefixes currently being advertised on the BGP session",
            i.bgp_prefixes.clone(),
        );
        r.register(
            "lb_bfd_session_up",
            "BFD session state (1 is Up, 0 is not), per BGP peer with bfd",
            i.bfd_up.clone(),
        );
        r.register(
            "lb_bfd_session_down_events",
            "Number of times the BFD session left Up for a path failure (not AdminDown)",
            i.bfd_down_events.clone(),
        );
        r.register("lb_cluster_term", "Current raft-lite term", i.term.clone());
        r.register(
            "lb_cluster_is_leader",
            "1 if this node is the raft-lite leader",
            i.is_leader.clone(),
        );
        r.register(
            "lb_cluster_elections",
            "Number of raft-lite elections this node started",
            i.elections.clone(),
        );
        r.register(
            "lb_cluster_datagrams_dropped",
            "Number of raft-lite datagrams received and dropped, by reason (bad_mac: wrong cluster key or forged; unknown_sender: not in this host's members; replayed, too_old; truncated, bad_magic, unsupported_version, malformed)",
            i.datagrams_dropped.clone(),
        );
        r.register(
            "lb_cluster_joins_refused",
            "Number of requests to join that this host, as leader, refused, by reason (voter_name, voter_list_differs, duplicate_address, not_a_node, address_not_node_ip)",
            i.joins_refused.clone(),
        );
        r.register(
            "lb_cluster_member_node_waiting",
            "1 while this host, a member under [cluster] member_nodes, waits for its Kubernetes Node to exist, match the node_selectors and have an InternalIP (it does not ask to join meanwhile)",
            i.member_node_waiting.clone(),
        );
        r.register(
            "lb_cluster_member_healthy",
            "1 if the member is healthy, 0 if not, as this host knows it: the leader knows every member (its acknowledgements keep its lease); another host knows only itself and the leader it hears, and has no series for the rest",
            i.member_healthy.clone(),
        );
        r.register_with_unit(
            "lb_cluster_member_last_seen",
            "Time since the leader last received the member's acknowledgement (on the leader only, for the other members)",
            Unit::Seconds,
            i.member_last_seen.clone(),
        );
        r.register_with_unit(
            "lb_failover_duration",
            "On the host that took an IP over as its successor after its owner went silent: from the owner's last renewal this host's voter received to this host holding a majority of grants",
            Unit::Seconds,
            i.failover.clone(),
        );
        r.register(
            "lb_config_reloads",
            "Number of configuration reloads attempted",
            i.reloads.clone(),
        );
        r.register(
            "lb_config_reload_failures",
            "Number of configuration reloads refused",
            i.reload_failures.clone(),
        );
        r.register(
            "lb_config_stale_bool",
            "1 if running on a stale configuration, because the latest reload failed",
            i.config_stale.clone(),
        );
        r.register(
            "lb_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (at start or by the last successful reload), in seconds since the Unix epoch",
            i.config_loaded_at.clone(),
        );
        r.register(
            "lb_kube_events_dropped",
            "Number of Kubernetes Events not posted (queue full or the API server refused them); Events are best effort, status writes are never dropped",
            i.events_dropped.clone(),
        );
        r.register(
            "lb_kube_updates",
            "Number of watch updates (Services, EndpointSlices, Nodes) lbd processed",
            i.kube_updates.clone(),
        );
        r.register(
            "lb_announcements_recomputed",
            "Number of per-IP announcements recomputed (controller and announcers): the work the updates caused, which stays proportional to what they changed",
            i.recomputed.clone(),
        );
        r.register(
            "lb_kube_status_write_retries",
            "Number of Service status writes that failed and were retried",
            i.status_retries.clone(),
        );
        Metrics {
            inner: Arc::new(Inner { registry: r, ..i }),
        }
    }

    /// Pool size and addresses in use (IPv6 pools are approximated as floats beyond 2^53).
    pub fn set_pool(&self, pool: &str, total: AddressCount, in_use: AddressCount, services: u64) {
        let l = PoolLabel {
            pool: pool.to_string(),
        };
        self.inner.pool_total.get_or_create(&l).set(total.as_f64());
        self.inner
            .pool_in_use
            .get_or_create(&l)
            .set(in_use.as_f64());
        self.inner
            .pool_services
            .get_or_create(&l)
            .set(i64::try_from(services).unwrap_or(i64::MAX));
    }

    /// A pool left the configuration.
    pub fn remove_pool(&self, pool: &str) {
        let l = PoolLabel {
            pool: pool.to_string(),
        };
        self.inner.pool_total.remove(&l);
        self.inner.pool_in_use.remove(&l);
        self.inner.pool_services.remove(&l);
    }

    pub fn set_announced_ips(&self, protocol: AnnounceProtocol, count: u64) {
        self.inner
            .announced
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn layer2_request_received(&self, ip: IpAddr) {
        self.inner.l2_requests.get_or_create(&ip_label(ip)).inc();
    }

    pub fn layer2_response_sent(&self, ip: IpAddr) {
        self.inner.l2_responses.get_or_create(&ip_label(ip)).inc();
    }

    pub fn layer2_gratuitous_sent(&self, ip: IpAddr) {
        self.inner.l2_gratuitous.get_or_create(&ip_label(ip)).inc();
    }

    /// The IP is no longer ours to announce: drop its layer-2 series (keeps cardinality
    /// bounded by the IPs in use; Prometheus treats a reappearing counter as a reset).
    pub fn forget_layer2_ip(&self, ip: IpAddr) {
        let l = ip_label(ip);
        self.inner.l2_requests.remove(&l);
        self.inner.l2_responses.remove(&l);
        self.inner.l2_gratuitous.remove(&l);
    }

    /// The layer-2 IPs in use and whether each has an owner, as the raft-lite leader (or a
    /// cluster of one) knows it; any other host passes an empty map (it does not know). IPs
    /// no longer in the map lose their series.
    pub fn set_layer2_owners(&self, ips: &BTreeMap<IpAddr, (String, bool)>) {
        let mut exported = self
            .inner
            .l2_has_owner_exported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *exported == *ips {
            return;
        }
        let label = |ip: &IpAddr, pool: &str| IpPoolLabel {
            ip: ip.to_string(),
            pool: pool.to_string(),
        };
        for (ip, (pool, _)) in exported.iter() {
            if ips.get(ip).is_none_or(|(p, _)| p != pool) {
                self.inner.l2_has_owner.remove(&label(ip, pool));
            }
        }
        for (ip, (pool, owned)) in ips {
            self.inner
                .l2_has_owner
                .get_or_create(&label(ip, pool))
                .set(i64::from(*owned));
        }
        *exported = ips.clone();
    }

    /// A BFD session to `peer` exists (Up or not); a path failure counts a down event.
    pub fn set_bfd_session(&self, peer: IpAddr, up: bool, new_failures: u64) {
        // MetalLB labels a BFD session by the peer's address alone (no port).
        let l = PeerLabel {
            peer: peer.to_string(),
        };
        self.inner.bfd_up.get_or_create(&l).set(i64::from(up));
        self.inner
            .bfd_down_events
            .get_or_create(&l)
            .inc_by(new_failures);
    }

    /// The BFD session to `peer` was removed.
    pub fn remove_bfd_session(&self, peer: IpAddr) {
        let l = PeerLabel {
            peer: peer.to_string(),
        };
        self.inner.bfd_up.remove(&l);
        self.inner.bfd_down_events.remove(&l);
    }

    pub fn set_bgp_session_up(&self, peer: SocketAddr, up: bool) {
        self.inner
            .bgp_up
            .get_or_create(&peer_label(peer))
            .set(i64::from(up));
    }

    /// `count` more UPDATE messages were sent to `peer`.
    pub fn bgp_updates_sent(&self, peer: SocketAddr, count: u64) {
        self.inner
            .bgp_updates_sent
            .get_or_create(&peer_label(peer))
            .inc_by(count);
    }

    /// `count` more UPDATE messages were received from `peer`.
    pub fn bgp_updates_received(&self, peer: SocketAddr, count: u64) {
        self.inner
            .bgp_updates_received
            .get_or_create(&peer_label(peer))
            .inc_by(count);
    }

    pub fn set_bgp_announced_prefixes(&self, peer: SocketAddr, count: u64) {
        self.inner
            .bgp_prefixes
            .get_or_create(&peer_label(peer))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The peer left the configuration.
    pub fn remove_bgp_peer(&self, peer: SocketAddr) {
        let l = peer_label(peer);
        self.inner.bgp_up.remove(&l);
        self.inner.bgp_updates_sent.remove(&l);
        self.inner.bgp_updates_received.remove(&l);
        self.inner.bgp_prefixes.remove(&l);
    }

    pub fn set_cluster_term(&self, term: u64) {
        self.inner.term.set(i64::try_from(term).unwrap_or(i64::MAX));
    }

    pub fn set_is_leader(&self, leader: bool) {
        self.inner.is_leader.set(i64::from(leader));
    }

    pub fn election_started(&self) {
        self.inner.elections.inc();
    }

    /// A host asking to join was refused (leader only).
    /// `[cluster] member_nodes`: this member waits for its Node (`true`) or has it.
    pub fn set_member_node_waiting(&self, waiting: bool) {
        self.inner.member_node_waiting.set(i64::from(waiting));
    }

    pub fn cluster_join_refused(&self, reason: &'static str) {
        self.inner
            .joins_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn observe_failover(&self, took: Duration) {
        self.inner.failover.observe(took.as_secs_f64());
    }

    /// `count` more raft-lite datagrams dropped for `reason` (0 creates the series, so a
    /// rate sees the first drop).
    pub fn cluster_datagrams_dropped(&self, reason: DropReason, count: u64) {
        self.inner
            .datagrams_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc_by(count);
    }

    /// A member's health and time since last heard; `None` removes the series (this host
    /// does not know).
    pub fn set_cluster_member(
        &self,
        member: &str,
        healthy: Option<bool>,
        last_seen: Option<Duration>,
    ) {
        let l = MemberLabel {
            member: member.to_string(),
        };
        match healthy {
            Some(h) => {
                self.inner
                    .member_healthy
                    .get_or_create(&l)
                    .set(i64::from(h));
            }
            None => {
                self.inner.member_healthy.remove(&l);
            }
        }
        match last_seen {
            Some(t) => {
                self.inner
                    .member_last_seen
                    .get_or_create(&l)
                    .set(t.as_secs_f64());
            }
            None => {
                self.inner.member_last_seen.remove(&l);
            }
        }
    }

    /// One watch update processed, which recomputed `recomputed` announcements.
    pub fn kube_update(&self, recomputed: u64) {
        self.inner.kube_updates.inc();
        self.inner.recomputed.inc_by(recomputed);
    }

    pub fn kube_event_dropped(&self) {
        self.inner.events_dropped.inc();
    }

    pub fn kube_status_write_retried(&self) {
        self.inner.status_retries.inc();
    }

    /// A reload was attempted; `ok = false` when the new configuration was refused (the
    /// daemon keeps the previous one, so the running configuration is now stale).
    pub fn config_reloaded(&self, ok: bool) {
        self.inner.reloads.inc();
        if !ok {
            self.inner.reload_failures.inc();
        }
        self.inner.config_stale.set(i64::from(!ok));
    }

    /// The running configuration was loaded at `unix_seconds` (start, or a reload that
    /// succeeded).
    pub fn config_loaded(&self, unix_seconds: u64) {
        self.inner
            .config_loaded_at
            .set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition, ending in `# EOF`. A labelled family appears once it
    /// has a series (no pools configured: no `lb_allocator_*` lines at all).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an Err would only come from a metric's own
        // encoder, none of which fail for these types.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// A BGP peer task's handle on its `lb_bgp_*{peer="ip:port"}` series. The speaker
/// [`detach`](Self::detach)es it before it removes the series of a peer that left the
/// configuration, so the task, still sending its Cease, cannot bring them back.
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    peer: SocketAddr,
    metrics: Arc<std::sync::Mutex<Option<Metrics>>>,
}

impl PeerMetrics {
    pub fn new(metrics: Metrics, peer: SocketAddr) -> Self {
        Self {
            peer,
            metrics: Arc::new(std::sync::Mutex::new(Some(metrics))),
        }
    }

    /// No further updates from this handle (nor its clones).
    pub fn detach(&self) {
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Brings the series from `old` to `new`: the gauges to `new`'s values, the counters up
    /// by the UPDATEs sent and received in between (both only grow over a task's life).
    pub fn report(&self, old: &crate::bgp::peer::PeerStatus, new: &crate::bgp::peer::PeerStatus) {
        use crate::bgp::fsm::State;
        let guard = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = guard.as_ref() else { return };
        m.set_bgp_session_up(self.peer, new.state == State::Established);
        m.set_bgp_announced_prefixes(self.peer, new.prefixes_advertised as u64);
        m.bgp_updates_sent(self.peer, new.updates_sent.saturating_sub(old.updates_sent));
        m.bgp_updates_received(
            self.peer,
            new.updates_received.saturating_sub(old.updates_received),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_documented_series_has_a_type_line_once_used() {
        let m = Metrics::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let peer: SocketAddr = "10.0.0.254:179".parse().unwrap();
        m.set_pool("p", AddressCount(4), AddressCount(1), 1);
        m.set_announced_ips(AnnounceProtocol::Layer2, 1);
        m.layer2_request_received(ip);
        m.layer2_response_sent(ip);
        m.layer2_gratuitous_sent(ip);
        m.set_bgp_session_up(peer, true);
        m.bgp_updates_sent(peer, 1);
        m.bgp_updates_received(peer, 1);
        m.set_bgp_announced_prefixes(peer, 1);
        m.cluster_datagrams_dropped(DropReason::BadMac, 1);
        m.cluster_join_refused("voter_list_differs");
        m.set_cluster_member("n2", Some(true), Some(Duration::from_millis(20)));
        m.set_layer2_owners(&BTreeMap::from([(ip, ("p".to_string(), true))]));
        m.set_bfd_session(peer.ip(), true, 0);
        let text = m.encode();
        for (name, kind, _, _) in SERIES {
            let family = name
                .strip_suffix("_total")
                .filter(|_| *kind == "counter")
                .or_else(|| name.strip_suffix("_info").filter(|_| *kind == "info"))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "no TYPE line for {name} ({kind}) in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn layer2_counters_are_labelled_by_ip() {
        let m = Metrics::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        m.layer2_request_received(ip);
        m.layer2_request_received(ip);
        m.layer2_response_sent(ip);
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_layer2_requests_received_total{ip=\"10.0.0.1\"}"),
            Some(2.0)
        );
        assert_eq!(
            line_value(&text, "lb_layer2_responses_sent_total{ip=\"10.0.0.1\"}"),
            Some(1.0)
        );
        m.forget_layer2_ip(ip);
        assert!(!m.encode().contains("10.0.0.1"));
    }

    #[test]
    fn bgp_series_use_metallb_peer_label_format() {
        let m = Metrics::new();
        let peer: SocketAddr = "[fd00::1]:179".parse().unwrap();
        m.set_bgp_session_up(peer, true);
        m.bgp_updates_sent(peer, 1);
        m.set_bgp_announced_prefixes(peer, 3);
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_bgp_session_up{peer=\"[fd00::1]:179\"}"),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "lb_bgp_updates_total{peer=\"[fd00::1]:179\"}"),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                "lb_bgp_announced_prefixes_total{peer=\"[fd00::1]:179\"}"
            ),
            Some(3.0)
        );
        m.set_bgp_session_up(peer, false);
        assert_eq!(
            line_value(&m.encode(), "lb_bgp_session_up{peer=\"[fd00::1]:179\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn failed_reload_marks_config_stale_until_a_good_one() {
        let m = Metrics::new();
        m.config_reloaded(false);
        let text = m.encode();
        assert_eq!(line_value(&text, "lb_config_stale_bool"), Some(1.0));
        assert_eq!(
            line_value(&text, "lb_config_reload_failures_total"),
            Some(1.0)
        );
        m.config_reloaded(true);
        let text = m.encode();
        assert_eq!(line_value(&text, "lb_config_stale_bool"), Some(0.0));
        assert_eq!(line_value(&text, "lb_config_reloads_total"), Some(2.0));
    }

    #[test]
    fn config_load_time_is_kept_by_a_refused_reload() {
        let m = Metrics::new();
        m.config_loaded(1_700_000_000);
        m.config_reloaded(false);
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_config_last_reload_success_timestamp_seconds"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn layer2_owner_series_follow_the_latest_set_and_drop_the_rest() {
        let m = Metrics::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        m.set_layer2_owners(&BTreeMap::from([
            (a, ("p".to_string(), true)),
            (b, ("p".to_string(), false)),
        ]));
        let text = m.encode();
        let has_owner = |text: &str, ip: &str, pool: &str| {
            line_value(
                text,
                &format!("lb_layer2_ip_has_owner{{ip=\"{ip}\",pool=\"{pool}\"}}"),
            )
        };
        assert_eq!(has_owner(&text, "10.0.0.1", "p"), Some(1.0));
        assert_eq!(has_owner(&text, "10.0.0.2", "p"), Some(0.0));
        // b got an owner and moved to pool q; a is no longer in use.
        m.set_layer2_owners(&BTreeMap::from([(b, ("q".to_string(), true))]));
        let text = m.encode();
        assert_eq!(has_owner(&text, "10.0.0.1", "p"), None);
        assert_eq!(has_owner(&text, "10.0.0.2", "p"), None);
        assert_eq!(has_owner(&text, "10.0.0.2", "q"), Some(1.0));
        // A host that is no longer the leader knows nothing.
        m.set_layer2_owners(&BTreeMap::new());
        assert!(!m.encode().contains("lb_layer2_ip_has_owner{"));
    }

    #[test]
    fn bfd_series_count_path_failures_and_leave_with_the_session() {
        let m = Metrics::new();
        let peer: IpAddr = "10.0.0.254".parse().unwrap();
        m.set_bfd_session(peer, false, 0);
        m.set_bfd_session(peer, true, 0);
        m.set_bfd_session(peer, false, 1);
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_bfd_session_up{peer=\"10.0.0.254\"}"),
            Some(0.0)
        );
        assert_eq!(
            line_value(
                &text,
                "lb_bfd_session_down_events_total{peer=\"10.0.0.254\"}"
            ),
            Some(1.0)
        );
        m.remove_bfd_session(peer);
        assert!(!m.encode().contains("10.0.0.254"));
    }

    #[test]
    fn pool_gauges_hold_huge_ipv6_sizes() {
        let m = Metrics::new();
        m.set_pool("v6", AddressCount(1u128 << 64), AddressCount(2), 2);
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_allocator_addresses_total{pool=\"v6\"}"),
            Some(18446744073709551616.0)
        );
        assert_eq!(
            line_value(&text, "lb_allocator_addresses_in_use_total{pool=\"v6\"}"),
            Some(2.0)
        );
        m.remove_pool("v6");
        assert!(!m.encode().contains("pool=\"v6\""));
    }

    #[test]
    fn failover_histogram_counts_observations() {
        let m = Metrics::new();
        m.observe_failover(Duration::from_millis(180));
        let text = m.encode();
        assert_eq!(
            line_value(&text, "lb_failover_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "lb_failover_duration_seconds_bucket{le=\"0.2\"}"),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "lb_failover_duration_seconds_bucket{le=\"0.1\"}"),
            Some(0.0)
        );
    }

    mod bgp_peer {
        use super::super::*;
        use crate::bgp::fsm::State;
        use crate::bgp::peer::PeerStatus;

        fn sample_value(text: &str, name: &str) -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        }

        #[test]
        fn peer_metrics_follow_status_and_count_update_deltas() {
            let m = Metrics::new();
            let addr: SocketAddr = "10.0.0.1:179".parse().unwrap();
            let pm = PeerMetrics::new(m.clone(), addr);
            let idle = PeerStatus::new("10.0.0.1".parse().unwrap(), 2);
            pm.report(&idle, &idle);
            let text = m.encode();
            assert_eq!(
                sample_value(&text, "lb_bgp_session_up{peer=\"10.0.0.1:179\"}"),
                Some(0.0)
            );
            let up = PeerStatus {
                state: State::Established,
                prefixes_advertised: 2,
                updates_sent: 3,
                updates_received: 4,
                ..idle.clone()
            };
            pm.report(&idle, &up);
            let more = PeerStatus {
                updates_sent: 5,
                updates_received: 4,
                ..up.clone()
            };
            pm.report(&up, &more);
            let text = m.encode();
            let v = |n: &str| sample_value(&text, &format!("{n}{{peer=\"10.0.0.1:179\"}}"));
            assert_eq!(v("lb_bgp_session_up"), Some(1.0));
            assert_eq!(v("lb_bgp_announced_prefixes_total"), Some(2.0));
            assert_eq!(v("lb_bgp_updates_total"), Some(5.0));
            assert_eq!(v("lb_bgp_updates_received_total"), Some(4.0));
        }

        #[test]
        fn detached_peer_metrics_cannot_revive_removed_series() {
            let m = Metrics::new();
            let addr: SocketAddr = "10.0.0.1:179".parse().unwrap();
            let pm = PeerMetrics::new(m.clone(), addr);
            let idle = PeerStatus::new("10.0.0.1".parse().unwrap(), 2);
            pm.report(&idle, &idle);
            pm.detach();
            m.remove_bgp_peer(addr);
            // The task's last publication, after its Cease.
            pm.report(&idle, &idle);
            assert!(!m.encode().contains("10.0.0.1"));
        }
    }
}
