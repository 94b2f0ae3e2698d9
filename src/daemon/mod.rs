//! `lbd`: wiring of the tasks, signals and sd_notify.
//!
//! ```text
//!  kube::watch ──KubeUpdate──┐                         ┌─▶ writer task ─▶ API server (writer only)
//!  net::netlink ──NetEvent───┼─▶ main loop ────────────┼─▶ ownership ─▶ l2 responder task ─▶ ARP/NDP
//!  signals, D-Bus reload ────┘   (Controller: pure;    ├─▶ bgp::Speaker ─▶ BGP sessions
//!                                 announce: pure)      └─▶ Snapshot (D-Bus, lbctl), metrics, sd_notify
//! ```
//! The main loop owns the controller and the interface table and only carries messages:
//! allocation, placement, ARP/NDP and BGP decisions are made in their pure cores.
//!
//! Who owns a layer-2 IP comes from [`ownership`]: raft-lite between the `[cluster]`
//! members, or this host alone for a cluster of one.

pub mod announce;
pub mod logging;
pub mod ownership;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, error, info, warn};

use crate::bgp::speaker::{Speaker, SpeakerHandle, SpeakerOptions};
use crate::config::{self, Config, Context, Role};
use crate::control::state::{
    AddressCount, AnnounceProtocol, ClusterRole, NodeRole, PoolStatus, ReloadResult, ServiceState,
    ServiceStatus,
};
use crate::control::{self, ReloadReply, ReloadRequest, Snapshot, http, metrics::Metrics};
use crate::controller::{self, Announcement, Controller};
use crate::kube::watch::KubeUpdate;
use crate::l2::responder::{self, Responder};
use crate::l2::socket::AsyncPacketSocket;
use crate::model::PoolProtocol;
use crate::net::InterfaceTable;
use crate::net::netlink::NetWatcher;
use ownership::Ownership;

/// Exit status of `lbd` (and `lbd --check-config`) when the configuration is invalid: LSB's
/// "program is not configured". The unit's `RestartPreventExitStatus=` names it, so systemd
/// does not retry a start that only an edit of the file can fix.
pub const EXIT_INVALID_CONFIG: u8 = 6;

/// How long start-up waits for the Kubernetes stores before saying READY anyway (with a
/// STATUS saying what it still waits for): an unreachable API server must not hang boot.
const READY_BOUND: Duration = Duration::from_secs(10);
/// Bound on the whole SIGTERM sequence (hand-over, withdraw, Cease).
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

fn notify(states: &[sd_notify::NotifyState]) {
    // Not running under systemd (no NOTIFY_SOCKET) is fine; a broken socket is worth a line.
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "sd_notify failed");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let ctx = Context::from_system();
    let checked = match config::load_file(config_path, &ctx) {
        Ok(c) => c,
        Err(diags) => {
            logging::early_error(&diags.to_string());
            logging::early_error(&format!(
                "lbd: {} is invalid; not starting",
                config_path.display()
            ));
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    logging::init(&checked.config.log);
    for w in &checked.warnings {
        warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        match Daemon::start(config_path.to_owned(), ctx, checked.config).await {
            Ok(d) => d.run().await,
            Err(msg) => {
                error!("{msg}");
                ExitCode::from(1)
            }
        }
    });
    // Tasks still blocked on sockets must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

struct Daemon {
    config_path: PathBuf,
    ctx: Context,
    config: Config,
    ctl: Controller,
    ifaces: InterfaceTable,
    netlink: Option<NetWatcher>,
    l2: Option<mpsc::Sender<responder::Input>>,
    l2_events: mpsc::Receiver<responder::Output>,
    l2_events_tx: mpsc::Sender<responder::Output>,
    bgp: Option<SpeakerHandle>,
    ownership: Ownership,
    writer: Option<writer::WriterHandle>,
    kube_rx: mpsc::Receiver<KubeUpdate>,
    kube_open: bool,
    snapshot: watch::Sender<Snapshot>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    _reload_tx: mpsc::Sender<ReloadRequest>,
    bus: Option<control::ControlHandle>,
    metrics: Metrics,
    liveness: http::Liveness,
    _metrics_server: Option<http::MetricsServer>,
    announcements: Vec<Announcement>,
    /// The claims last given to the responder (to send only changes).
    claimed: Vec<responder::Claim>,
    /// IPs put on `lo` for static services with `assign = true`.
    on_lo: BTreeSet<IpAddr>,
    ready: bool,
    loaded_at: u64,
    last_reload: Option<ReloadResult>,
    /// BGP sessions (Established, configured) as of the last publish, for STATUS=.
    bgp_sessions: (usize, usize),
    /// The last STATUS= sent, so it is re-sent only when it changes.
    last_status: String,
    /// Layer-2 owners last signalled on D-Bus (`OwnershipChanged`).
    signalled: BTreeMap<IpAddr, String>,
}

impl Daemon {
    async fn start(config_path: PathBuf, ctx: Context, config: Config) -> Result<Self, String> {
        info!(
            node = %config.node.name,
            pools = config.pools.len(),
            peers = config.bgp_peers.len(),
            members = config.cluster.members.len(),
            "lbd {} starting",
            env!("CARGO_PKG_VERSION")
        );

        // Kubernetes: connecting only reads the kubeconfig; an unreachable API server is
        // retried by the watchers and never blocks start-up.
        let (kube_tx, kube_rx) = mpsc::channel::<KubeUpdate>(1024);
        let mut writer = None;
        if let Some(k) = &config.kubernetes {
            let (client, id) = crate::kube::client::connect(&k.kubeconfig)
                .await
                .map_err(|e| e.to_string())?;
            info!(server = %id.server, user = %id.user, auth = id.auth, "Kubernetes API");
            tokio::spawn(crate::kube::watch::run(
                client.clone(),
                k.ignore_exclude_label,
                kube_tx.clone(),
            ));
            writer = Some(writer::spawn(crate::kube::status::StatusWriter::new(
                client,
                &config.node.name,
            )));
        }
        let kube_open = writer.is_some();
        drop(kube_tx);

        // Interfaces and addresses, as events.
        let (netlink, ifaces) = match NetWatcher::start().await {
            Ok((w, t)) => (Some(w), t),
            Err(e)
                if config
                    .pools
                    .iter()
                    .any(|p| p.protocol == PoolProtocol::Layer2) =>
            {
                return Err(format!("netlink: {e}"));
            }
            Err(e) => {
                warn!(error = %e, "netlink unavailable; no layer-2 pools, continuing");
                (None, InterfaceTable::default())
            }
        };

        let metrics = Metrics::new();
        let ownership = Ownership::start(&config, metrics.clone())
            .await
            .map_err(|e| e.to_string())?;

        let (snapshot, snap_rx) = watch::channel(Snapshot::starting(
            &config.node.name,
            config_path.display().to_string(),
            unix_now(),
        ));
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let bus = match control::serve(None, snap_rx.clone(), reload_tx.clone()).await {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(error = %e, "D-Bus unavailable: lbctl status will not reach this lbd");
                None
            }
        };
        let liveness = http::Liveness::new(Duration::from_secs(10));
        let metrics_server = match http::serve(
            config.metrics.listen,
            metrics.clone(),
            liveness.clone(),
            snap_rx,
        )
        .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "metrics endpoint unavailable");
                None
            }
        };

        let ctl = Controller::new(
            config.pools.clone(),
            config.services.clone(),
            config
                .kubernetes
                .as_ref()
                .and_then(|k| k.load_balancer_class.clone()),
            config.kubernetes.is_some(),
        );
        let (l2_events_tx, l2_events) = mpsc::channel(256);
        let mut d = Daemon {
            config_path,
            ctx,
            ctl,
            ifaces,
            netlink,
            l2: None,
            l2_events,
            l2_events_tx,
            bgp: None,
            ownership,
            writer,
            kube_rx,
            kube_open,
            snapshot,
            reload_rx,
            _reload_tx: reload_tx,
            bus,
            metrics,
            liveness,
            _metrics_server: metrics_server,
            announcements: Vec::new(),
            claimed: Vec::new(),
            on_lo: BTreeSet::new(),
            ready: false,
            loaded_at: unix_now(),
            last_reload: None,
            bgp_sessions: (0, 0),
            last_status: String::new(),
            signalled: BTreeMap::new(),
            config,
        };
        d.start_announcers()?;
        d.assign_static_ips().await;
        Ok(d)
    }

    /// Starts the responder and the speaker when the configuration has pools for them.
    fn start_announcers(&mut self) -> Result<(), String> {
        let member = self.config.node.role == Role::Member;
        let wants_l2 = self
            .config
            .pools
            .iter()
            .any(|p| p.protocol == PoolProtocol::Layer2);
        if member && wants_l2 && self.l2.is_none() {
            let socket = AsyncPacketSocket::open(0, "all interfaces")
                .map_err(|e| format!("ARP/NDP socket: {e}"))?;
            let l = &self.config.layer2;
            let mut responder = Responder::new(responder::Params {
                gratuitous_count: l.gratuitous_count,
                gratuitous_interval: l.gratuitous_interval,
                refresh_interval: l.refresh_interval.unwrap_or(Duration::ZERO),
            });
            let now = std::time::Instant::now();
            for iface in self.ifaces.iter() {
                responder.step(now, responder::Input::LinkChanged(iface.clone()));
            }
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(
                crate::l2::socket::run(
                    responder,
                    socket,
                    rx,
                    self.l2_events_tx.clone(),
                    self.ownership.gate(),
                    self.metrics.clone(),
                )
                .instrument(tracing::info_span!("l2", node = %self.config.node.name)),
            );
            self.l2 = Some(tx);
        }
        let wants_bgp = !self.config.bgp_peers.is_empty();
        if member && wants_bgp && self.bgp.is_none() {
            let me = self.me_node();
            self.bgp = Some(Speaker::spawn(
                me,
                self.config.bgp_peers.clone(),
                self.config.pools.clone(),
                SpeakerOptions {
                    metrics: self.metrics.clone(),
                    ..SpeakerOptions::default()
                },
            ));
        }
        Ok(())
    }

    fn me_node(&self) -> crate::bgp::advertise::LocalNode {
        announce::bgp_node(&announce::Me {
            name: &self.config.node.name,
            role: self.config.node.role,
            node: self.ctl.nodes().get(&self.config.node.name),
            kubernetes: self.config.kubernetes.is_some(),
        })
    }

    /// Static services with `assign = true`: their IP goes on `lo` of every member.
    async fn assign_static_ips(&mut self) {
        if self.config.node.role != Role::Member {
            return;
        }
        let Some(nl) = &self.netlink else { return };
        let wanted: BTreeSet<IpAddr> = self
            .config
            .services
            .iter()
            .filter(|s| s.assign)
            .filter_map(|s| {
                let key = crate::model::ServiceKey::new(controller::STATIC_NAMESPACE, &s.name);
                self.ctl.allocator().assignment(&key).map(|a| a.ips.clone())
            })
            .flatten()
            .collect();
        for ip in wanted.difference(&self.on_lo) {
            match nl.add_address_to_lo(*ip).await {
                Ok(()) => info!(%ip, "added to lo for a static service"),
                Err(e) => error!(%ip, error = %e, "cannot add static service IP to lo"),
            }
        }
        for ip in self.on_lo.difference(&wanted) {
            if let Err(e) = nl.remove_address_from_lo(*ip).await {
                warn!(%ip, error = %e, "cannot remove IP from lo");
            }
        }
        self.on_lo = wanted;
    }

    async fn run(mut self) -> ExitCode {
        let mut signals = match Signals::new([SIGHUP, SIGINT, SIGTERM]) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers");
                return ExitCode::from(1);
            }
        };
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ready_timer = Box::pin(tokio::time::sleep(READY_BOUND));
        self.after_change().await;
        loop {
            let lease_end = self
                .ownership
                .next_expiry()
                .map(tokio::time::Instant::from_std);
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                update = self.kube_rx.recv(), if self.kube_open => match update {
                    Some(u) => {
                        let out = self.ctl.step(controller::Input::Kube(u));
                        self.submit(out);
                        self.after_change().await;
                    }
                    None => self.kube_open = false,
                },
                ev = next_net_event(&mut self.netlink) => {
                    if let Some(ev) = ev
                        && let Some(change) = self.ifaces.apply(&ev) {
                        if let Some(l2) = &self.l2 {
                            let _ = l2.send(change.into()).await;
                        }
                        self.after_change().await;
                    }
                }
                changed = self.ownership.changed() => {
                    if changed {
                        self.after_ownership().await;
                    }
                }
                _ = tokio::time::sleep_until(lease_end.unwrap_or(far)), if lease_end.is_some() => {
                    // A lease ran out without renewal: stop answering for it now.
                    self.after_ownership().await;
                }
                Some(ev) = self.l2_events.recv() => {
                    if let responder::Output::Eligibility { .. } = ev {
                        self.after_change().await;
                    }
                }
                Some(req) = self.reload_rx.recv() => {
                    let reply = self.reload_notifying().await;
                    let _ = req.reply.send(reply);
                }
                Some(sig) = signals.next() => match sig {
                    SIGHUP => {
                        self.reload_notifying().await;
                    }
                    _ => return self.shutdown().await,
                },
                _ = &mut ready_timer, if !self.ready => {
                    self.set_ready(started);
                }
                _ = tick.tick() => {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    self.liveness.touch();
                    self.publish().await;
                    self.notify_status_if_changed();
                }
            }
            if !self.ready && self.ctl.synced() && self.cluster_joined() {
                self.set_ready(started);
            }
        }
    }

    /// Joined: a cluster of one, or a leader is known (this host heard from a majority's
    /// leader, or is it). READY waits for it, at most [`READY_BOUND`].
    fn cluster_joined(&self) -> bool {
        let v = self.ownership.view();
        v.role == ClusterRole::Standalone || v.leader.is_some()
    }

    /// A reload (SIGHUP or lbctl reload) framed by RELOADING=1 … READY=1 for systemd, with
    /// the result in STATUS= until the next status change.
    async fn reload_notifying(&mut self) -> ReloadReply {
        notify(&[sd_notify::NotifyState::Reloading]);
        let reply = self.reload().await;
        let status = format!("{}; {}", reply.message, self.status_line());
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        self.last_status = status;
        reply
    }

    /// STATUS= follows the daemon's state (role, leader, IPs owned, BGP sessions, a refused
    /// reload); sent only when the line changes.
    fn notify_status_if_changed(&mut self) {
        let status = self.status_line();
        if !self.last_status.ends_with(&status) || self.last_status.is_empty() {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            self.last_status = status;
        }
    }

    fn set_ready(&mut self, started: tokio::time::Instant) {
        self.ready = true;
        let status = self.status_line();
        self.last_status = status.clone();
        info!(%status, after = ?started.elapsed(), "ready");
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        self.snapshot.send_modify(|s| {
            s.ready = true;
            s.status_line = status.clone();
        });
    }

    fn status_line(&self) -> String {
        let v = self.ownership.view();
        let owned = self.ownership.owned_now().len();
        let sync = if self.ctl.synced() {
            ""
        } else {
            "; waiting for the API server"
        };
        let joined = if self.cluster_joined() {
            ""
        } else {
            "; waiting for a raft-lite leader"
        };
        let bgp = match self.bgp_sessions {
            (_, 0) => String::new(),
            (up, all) => format!("; BGP {up}/{all} sessions up"),
        };
        let stale = match &self.last_reload {
            Some(r) if !r.ok => "; last reload FAILED, running the previous configuration",
            _ => "",
        };
        format!(
            "{} term {}{}; {} services; owning {} layer-2 IPs{}{}{}{}",
            v.role,
            v.term,
            v.leader
                .as_ref()
                .map(|l| format!(", leader {l}"))
                .unwrap_or_default(),
            // Kubernetes Services and the static [[service]] entries.
            self.ctl.services().len() + self.config.services.len(),
            owned,
            bgp,
            sync,
            joined,
            stale
        )
    }

    fn submit(&self, outputs: Vec<controller::Output>) {
        if let Some(w) = &self.writer {
            for o in outputs {
                w.submit(o);
            }
        }
    }

    fn me(&self) -> announce::Me<'_> {
        announce::Me {
            name: &self.config.node.name,
            role: self.config.node.role,
            node: self.ctl.nodes().get(&self.config.node.name),
            kubernetes: self.config.kubernetes.is_some(),
        }
    }

    /// Something the announcements depend on changed: recompute and tell the announcers.
    async fn after_change(&mut self) {
        // Nothing is withdrawn before the stores are synced: until then keep what we have.
        if !self.ctl.synced() {
            self.after_ownership().await;
            return;
        }
        let announcements = self.ctl.announcements();
        let pools = &self.config.pools;
        let desired = announce::l2_desired(&announcements, pools);
        let eligible = announce::l2_eligible(&announcements, pools, &self.me(), self.ifaces.iter());
        self.ownership.set_desired(desired);
        self.ownership.set_eligible(eligible);
        if let Some(bgp) = &self.bgp {
            bgp.set_node(self.me_node());
            bgp.set_announcements(announce::bgp_announced(&announcements, pools));
        }
        self.announcements = announcements;
        self.after_ownership().await;
    }

    /// Ownership (or the announcements) changed: tell the responder, the writer flag and D-Bus.
    async fn after_ownership(&mut self) {
        let view = self.ownership.view();
        let writer = matches!(view.role, ClusterRole::Leader | ClusterRole::Standalone);
        if writer != self.ctl.is_writer() {
            info!(writer, term = view.term, "status writer role changed");
            let out = self.ctl.step(controller::Input::Writer(writer));
            self.submit(out);
        }
        self.metrics.set_cluster_term(view.term);
        self.metrics.set_is_leader(writer);
        let owned = self.ownership.owned_now();
        let claims = announce::claims(&owned, &self.announcements, &self.config.pools);
        if claims != self.claimed {
            if let Some(l2) = &self.l2 {
                let _ = l2
                    .send(responder::Input::OwnershipChanged(claims.clone()))
                    .await;
            }
            self.claimed = claims;
            self.metrics
                .set_announced_ips(AnnounceProtocol::Layer2, self.claimed.len() as u64);
        }
        self.signal_ownership(&view).await;
    }

    /// D-Bus `OwnershipChanged(ip, owner)` for every change of who owns a layer-2 IP, as far
    /// as this host knows: the leader knows the whole map, any other host its own IPs. A lost
    /// IP is signalled with owner "".
    async fn signal_ownership(&mut self, view: &ownership::View) {
        let known: BTreeMap<IpAddr, String> = if view.role == ClusterRole::Leader {
            view.owners.clone()
        } else {
            self.claimed
                .iter()
                .map(|c| (c.ip, self.config.node.name.clone()))
                .collect()
        };
        if known == self.signalled {
            return;
        }
        if let Some(bus) = &self.bus {
            for (ip, owner) in &known {
                if self.signalled.get(ip) != Some(owner) {
                    let _ = bus.ownership_changed(*ip, Some(owner)).await;
                }
            }
            for ip in self.signalled.keys().filter(|ip| !known.contains_key(ip)) {
                let _ = bus.ownership_changed(*ip, None).await;
            }
        }
        self.signalled = known;
    }

    /// SIGHUP or D-Bus Reload: validate, then apply only the difference.
    async fn reload(&mut self) -> ReloadReply {
        let reply = self.apply_reload().await;
        self.last_reload = Some(ReloadResult {
            ok: reply.ok,
            at: unix_now(),
            message: reply.message.clone(),
        });
        self.publish().await;
        reply
    }

    /// Validates the file and applies it, or says why not.
    async fn apply_reload(&mut self) -> ReloadReply {
        match config::load_file(&self.config_path, &self.ctx) {
            Err(diags) => {
                error!("reload failed; keeping the running configuration:\n{diags}");
                self.metrics.config_reloaded(false);
                ReloadReply {
                    ok: false,
                    message: format!(
                        "reload failed, running the previous configuration: {}",
                        diags.0.first().map(|d| d.to_string()).unwrap_or_default()
                    ),
                }
            }
            Ok(checked) => {
                for w in &checked.warnings {
                    warn!("{w}");
                }
                let new = checked.config;
                let orphaned = self.ctl.orphaned_by(&new.pools, &new.services);
                if !orphaned.is_empty() {
                    return self.refused_reload(&orphaned);
                }
                let mut changed = Vec::new();
                if new.pools != self.config.pools || new.services != self.config.services {
                    let out = self.ctl.step(controller::Input::Config {
                        pools: new.pools.clone(),
                        statics: new.services.clone(),
                    });
                    self.submit(out);
                    if let Some(bgp) = &self.bgp {
                        bgp.set_pools(new.pools.clone());
                    }
                    changed.push("pools/services");
                }
                if new.bgp_peers != self.config.bgp_peers {
                    if let Some(bgp) = &self.bgp {
                        bgp.update_peers(new.bgp_peers.clone());
                    }
                    changed.push("BGP peers");
                }
                for gone in self
                    .config
                    .pools
                    .iter()
                    .filter(|p| !new.pools.iter().any(|n| n.name == p.name))
                {
                    self.metrics.remove_pool(&gone.name);
                }
                let restart_needed = new.cluster != self.config.cluster
                    || new.node != self.config.node
                    || new.kubernetes != self.config.kubernetes
                    || new.metrics != self.config.metrics
                    || new.layer2 != self.config.layer2
                    || new.log != self.config.log;
                // Adopt only what was applied: the running tasks (raft-lite, kube watch,
                // responder, metrics server, logging) still use the old sections, and the rest
                // of lbd must agree with them — e.g. a new [node] name would make the
                // announcers look up another Node than raft-lite speaks for.
                self.config = reloadable_part(new, &self.config);
                if let Err(e) = self.start_announcers() {
                    error!("{e}");
                }
                self.assign_static_ips().await;
                self.after_change().await;
                self.metrics.config_reloaded(true);
                self.loaded_at = unix_now();
                let mut message = if changed.is_empty() {
                    "configuration reloaded: no changes applied".to_string()
                } else {
                    format!("configuration reloaded: {} applied", changed.join(", "))
                };
                if restart_needed {
                    message.push_str(
                        "; [node], [cluster], [kubernetes], [layer2], [metrics] and [log] changes take effect at the next restart",
                    );
                }
                info!("{message}");
                ReloadReply { ok: true, message }
            }
        }
    }

    /// A reload that would take IPs from Kubernetes Services: nothing changes (MetalLB
    /// refuses such a configuration too); the user moves or deletes those Services first.
    fn refused_reload(&self, orphaned: &[(crate::model::ServiceKey, Vec<IpAddr>)]) -> ReloadReply {
        let list: Vec<String> = orphaned
            .iter()
            .take(5)
            .map(|(key, ips)| {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                format!("{key} ({})", ips.join(", "))
            })
            .collect();
        let more = orphaned.len().saturating_sub(list.len());
        let message = format!(
            "reload refused, running the previous configuration: the new pools would take the IP of {}{}; delete those Services or give them addresses in the new pools first",
            list.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        error!("{message}");
        self.metrics.config_reloaded(false);
        ReloadReply { ok: false, message }
    }

    /// Rebuilds the snapshot lbctl and /ready read.
    async fn publish(&mut self) {
        let view = self.ownership.view();
        let owned = self.ownership.owned_now();
        let (peers, bgp_advertised) = match &self.bgp {
            Some(b) => (b.snapshot().await, b.advertised_ips().await),
            None => (Vec::new(), 0),
        };
        let established = peers
            .iter()
            .filter(|p| p.status.state == crate::bgp::fsm::State::Established)
            .count();
        self.bgp_sessions = (established, peers.len());
        let bgp_up = established > 0;
        let mut services = Vec::new();
        for a in &self.announcements {
            let Some(pool) = self.config.pools.iter().find(|p| p.name == a.pool) else {
                continue;
            };
            let (announced_by, state) = match pool.protocol {
                PoolProtocol::Layer2 => match view.owners.get(&a.ip) {
                    Some(owner) => (vec![owner.clone()], ServiceState::Announced),
                    None if owned.contains(&a.ip) => {
                        (vec![self.config.node.name.clone()], ServiceState::Announced)
                    }
                    None if matches!(view.role, ClusterRole::Follower | ClusterRole::Candidate) => {
                        (Vec::new(), ServiceState::Elsewhere)
                    }
                    None => (Vec::new(), ServiceState::Pending),
                },
                PoolProtocol::Bgp if bgp_up => {
                    (vec![self.config.node.name.clone()], ServiceState::Announced)
                }
                PoolProtocol::Bgp => (Vec::new(), ServiceState::Pending),
            };
            for key in &a.services {
                services.push(ServiceStatus {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    ips: vec![a.ip],
                    pool: a.pool.clone(),
                    protocol: pool.protocol.into(),
                    announced_by: announced_by.clone(),
                    state: state.clone(),
                });
            }
        }
        for key in self.ctl.allocator().failed() {
            services.push(ServiceStatus {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                ips: Vec::new(),
                pool: String::new(),
                protocol: AnnounceProtocol::Layer2,
                announced_by: Vec::new(),
                state: ServiceState::Failed("no IP allocated".into()),
            });
        }
        let stats = self.ctl.allocator().pool_stats();
        let pools: Vec<PoolStatus> = self
            .config
            .pools
            .iter()
            .map(|p| {
                let used = stats
                    .iter()
                    .find(|s| s.name == p.name)
                    .map(|s| s.used)
                    .unwrap_or(0);
                let total = AddressCount::of_ranges(&p.ranges);
                self.metrics.set_pool(
                    &p.name,
                    total,
                    AddressCount(used as u128),
                    stats
                        .iter()
                        .find(|s| s.name == p.name)
                        .map(|s| s.services as u64)
                        .unwrap_or(0),
                );
                PoolStatus::new(
                    &p.name,
                    p.protocol.into(),
                    total,
                    AddressCount(used as u128),
                )
            })
            .collect();
        let peer_status = peers
            .iter()
            .filter_map(|p| {
                let cfg = self
                    .config
                    .bgp_peers
                    .iter()
                    .find(|c| c.address == p.status.address)?;
                Some(crate::control::state::PeerStatus {
                    address: p.status.address,
                    my_asn: cfg.my_asn,
                    peer_asn: cfg.peer_asn,
                    state: bgp_state(p.status.state),
                    uptime_s: p.uptime.map(|u| u.as_secs()).unwrap_or(0),
                    prefixes_advertised: p.status.prefixes_advertised as u64,
                    updates_received: p.status.updates_received,
                })
            })
            .collect();
        let status_line = self.status_line();
        let role = match self.config.node.role {
            Role::Member => NodeRole::Member,
            Role::Witness => NodeRole::Witness,
        };
        let ready = self.ready;
        let loaded_at = self.loaded_at;
        let last_reload = self.last_reload.clone();
        let members = self.ownership.members(&self.config);
        self.metrics
            .set_announced_ips(AnnounceProtocol::Layer2, self.claimed.len() as u64);
        self.metrics
            .set_announced_ips(AnnounceProtocol::Bgp, bgp_advertised as u64);
        self.snapshot.send_if_modified(|s| {
            let new = Snapshot {
                version: s.version.clone(),
                node: s.node.clone(),
                role,
                ready,
                status_line,
                config: crate::control::state::ConfigStatus {
                    path: s.config.path.clone(),
                    loaded_at,
                    last_reload,
                },
                cluster: crate::control::state::ClusterStatus {
                    term: view.term,
                    leader: view.leader.clone(),
                    role: view.role,
                    members,
                },
                services,
                pools,
                peers: peer_status,
            };
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    /// SIGTERM/SIGINT: hand owned IPs over, withdraw BGP routes with Cease, exit 0 — all
    /// within [`SHUTDOWN_BOUND`].
    async fn shutdown(mut self) -> ExitCode {
        info!("shutting down: handing over owned IPs, withdrawing BGP routes");
        notify(&[sd_notify::NotifyState::Stopping]);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BOUND;
        let handover = self.ownership.shutdown(deadline);
        let withdraw = async {
            if let Some(bgp) = &self.bgp {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if bgp.shutdown("lbd shutting down", left).await.is_err() {
                    warn!("BGP shutdown did not finish in time");
                }
            }
        };
        tokio::join!(handover, withdraw);
        // Stop answering whatever is left.
        if let Some(l2) = &self.l2 {
            let _ = l2
                .send(responder::Input::OwnershipChanged(Vec::new()))
                .await;
        }
        if let Some(nl) = &self.netlink {
            for ip in &self.on_lo {
                let _ = nl.remove_address_from_lo(*ip).await;
            }
        }
        self.on_lo.clear();
        if let Some(bus) = self.bus.take() {
            // Nothing is owned here any more.
            for (ip, owner) in &self.signalled {
                if *owner == self.config.node.name {
                    let _ = bus.ownership_changed(*ip, None).await;
                }
            }
            bus.shutdown().await;
        }
        info!("stopped");
        ExitCode::SUCCESS
    }
}

/// `new` with the sections a reload does not apply ([node], [cluster], [kubernetes],
/// [layer2], [metrics], [log]) kept as they run.
fn reloadable_part(new: Config, running: &Config) -> Config {
    Config {
        node: running.node.clone(),
        kubernetes: running.kubernetes.clone(),
        cluster: running.cluster.clone(),
        layer2: running.layer2.clone(),
        metrics: running.metrics.clone(),
        log: running.log.clone(),
        ..new
    }
}

fn bgp_state(s: crate::bgp::fsm::State) -> crate::control::state::BgpState {
    use crate::bgp::fsm::State as F;
    use crate::control::state::BgpState as B;
    match s {
        F::Idle => B::Idle,
        F::Connect => B::Connect,
        F::Active => B::Active,
        F::OpenSent => B::OpenSent,
        F::OpenConfirm => B::OpenConfirm,
        F::Established => B::Established,
    }
}

async fn next_net_event(w: &mut Option<NetWatcher>) -> Option<crate::net::NetEvent> {
    match w {
        Some(w) => w.next_event().await,
        None => std::future::pending().await,
    }
}
