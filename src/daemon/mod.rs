//! `lbd`: wiring of the tasks, signals and sd_notify.
//!
//! ```text
//!  kube::watch ──KubeUpdate──┐                       ┌─▶ kube::writer ─▶ API server (writer only)
//!  net::netlink ──NetEvent───┼─▶ main loop ──────────┼─▶ raft-lite (desired / eligible changes)
//!  signals, D-Bus reload ────┘   Controller: pure    ├─▶ l2 responder (claims) ─▶ ARP/NDP
//!                                Announcer: pure     ├─▶ bgp::Speaker (announcement changes)
//!                                                    └─▶ Snapshot (D-Bus, lbctl), metrics, sd_notify
//! ```
//! The main loop owns the controller, the announcer and the interface table and only
//! carries messages: allocation, placement, ARP/NDP and BGP decisions are made in their
//! pure cores. A watch update costs what it changes: the controller reports the
//! announcements that changed, the [`announce::Announcer`] turns each into changes for the
//! announcers. Rooms: [`announce`] (who may announce what), [`snapshot`] (what lbctl and
//! `/ready` read, the gauges), [`reload`] (what a reload changes), [`ownership`] (the
//! raft-lite view).

pub mod announce;
pub mod logging;
pub mod ownership;
pub mod reload;
pub mod snapshot;

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

use crate::alloc::PoolStats;
use crate::bgp::speaker::{PeerSnapshot, Speaker, SpeakerHandle, SpeakerOptions};
use crate::config::{self, Config, Context, Role};
use crate::control::state::{AnnounceProtocol, ClusterRole, ReloadResult};
use crate::control::{self, ReloadReply, ReloadRequest, Snapshot, http, metrics::Metrics};
use crate::controller::{self, Controller};
use crate::kube::watch::KubeUpdate;
use crate::kube::writer::{self, WriterHandle};
use crate::l2::responder::{self, Responder};
use crate::l2::socket::AsyncPacketSocket;
use crate::model::PoolProtocol;
use crate::net::InterfaceTable;
use crate::net::netlink::NetWatcher;
use crate::writes::{EventItem, Limits, Submission};
use announce::{Announcer, Changes, Me};
use ownership::Ownership;

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
            return ExitCode::from(1);
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
    announcer: Announcer,
    ifaces: InterfaceTable,
    netlink: Option<NetWatcher>,
    l2: Option<mpsc::Sender<responder::Input>>,
    bgp: Option<SpeakerHandle>,
    ownership: Ownership,
    writer: Option<WriterHandle>,
    kube_rx: mpsc::Receiver<KubeUpdate>,
    kube_open: bool,
    snapshot: watch::Sender<Snapshot>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    _reload_tx: mpsc::Sender<ReloadRequest>,
    bus: Option<control::ControlHandle>,
    metrics: Metrics,
    liveness: http::Liveness,
    _metrics_server: Option<http::MetricsServer>,
    /// The layer-2 IPs this host owned at the last look (leases checked then).
    owned: BTreeSet<IpAddr>,
    /// IPs put on `lo` for static services with `assign = true`.
    on_lo: BTreeSet<IpAddr>,
    ready: bool,
    loaded_at: u64,
    last_reload: Option<ReloadResult>,
    /// BGP peers as of the last publish (for STATUS= and the snapshot).
    peers: Vec<PeerSnapshot>,
    /// Pool usage as of the last rebuild.
    pool_stats: Vec<PoolStats>,
    /// Announcements or ownership changed since the snapshot's Service list was built.
    stale: bool,
    /// The last STATUS= sent, so it is re-sent only when it changes.
    last_status: String,
    /// Layer-2 owners last signalled on D-Bus (`OwnershipChanged`).
    signalled: BTreeMap<IpAddr, String>,
}

/// This host as the announcers see it (the fields it is made of, borrowed apart so the
/// announcer can be changed meanwhile).
fn me<'a>(config: &'a Config, ctl: &'a Controller) -> Me<'a> {
    Me {
        name: &config.node.name,
        role: config.node.role,
        node: ctl.nodes().get(&config.node.name),
        kubernetes: config.kubernetes.is_some(),
    }
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
        let metrics = Metrics::new();

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
            writer = Some(writer::spawn(
                crate::kube::status::StatusWriter::new(client, &config.node.name),
                Limits::default(),
                metrics.clone(),
            ));
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
        let mut d = Daemon {
            config_path,
            ctx,
            ctl,
            announcer: Announcer::default(),
            ifaces,
            netlink,
            l2: None,
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
            owned: BTreeSet::new(),
            on_lo: BTreeSet::new(),
            ready: false,
            loaded_at: unix_now(),
            last_reload: None,
            peers: Vec::new(),
            pool_stats: Vec::new(),
            stale: true,
            last_status: String::new(),
            signalled: BTreeMap::new(),
            config,
        };
        d.start_announcers()?;
        d.assign_static_ips().await;
        // Without Kubernetes the stores count as synced at once: announce the statics.
        let announced: Vec<controller::Announcement> =
            d.ctl.announced().values().cloned().collect();
        d.dispatch(
            announced
                .into_iter()
                .map(controller::Output::Announce)
                .collect(),
        )
        .await;
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
            let now = crate::driver::now();
            for iface in self.ifaces.iter() {
                responder.step(now, responder::Input::LinkChanged(iface.clone()));
            }
            let claims: Vec<responder::Claim> = self.announcer.claimed().cloned().collect();
            responder.step(now, responder::Input::OwnershipChanged(claims));
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(
                crate::l2::socket::run(
                    responder,
                    socket,
                    rx,
                    self.ownership.gate(),
                    self.metrics.clone(),
                )
                .instrument(tracing::info_span!("l2", node = %self.config.node.name)),
            );
            self.l2 = Some(tx);
        }
        let wants_bgp = !self.config.bgp_peers.is_empty();
        if member && wants_bgp && self.bgp.is_none() {
            let bgp = Speaker::spawn(
                announce::bgp_node(&me(&self.config, &self.ctl)),
                self.config.bgp_peers.clone(),
                self.config.pools.clone(),
                SpeakerOptions {
                    metrics: self.metrics.clone(),
                    ..SpeakerOptions::default()
                },
            );
            // What is announced already (a speaker started by a reload).
            let announced = announce::bgp_announced(
                &self.ctl.announced().values().cloned().collect::<Vec<_>>(),
                &self.config.pools,
            );
            if !announced.is_empty() {
                bgp.set_announcements(announced);
            }
            self.bgp = Some(bgp);
        }
        Ok(())
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
        self.after_ownership().await;
        loop {
            let lease_end = self.ownership.next_expiry();
            tokio::select! {
                update = self.kube_rx.recv(), if self.kube_open => match update {
                    Some(u) => self.kube_update(u).await,
                    None => self.kube_open = false,
                },
                ev = next_net_event(&mut self.netlink) => {
                    if let Some(ev) = ev
                        && let Some(change) = self.ifaces.apply(&ev) {
                        if let Some(l2) = &self.l2 {
                            let _ = l2.send(change.into()).await;
                        }
                        self.eligibility_changed().await;
                    }
                }
                changed = self.ownership.changed() => {
                    if changed {
                        self.after_ownership().await;
                    }
                }
                () = crate::driver::sleep_until(lease_end) => {
                    // A lease ran out without renewal: stop answering for it now.
                    self.after_ownership().await;
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
            if !self.ready && self.ctl.synced() && snapshot::cluster_joined(&self.ownership.view())
            {
                self.set_ready(started);
            }
        }
    }

    /// One watch update: the controller's outputs go to the writer and the announcers; a
    /// change of this host's own Node changes what it may announce at all.
    async fn kube_update(&mut self, u: KubeUpdate) {
        let me_changed = match &u {
            KubeUpdate::Node(n) => n.name == self.config.node.name,
            KubeUpdate::NodeGone(n) => *n == self.config.node.name,
            _ => false,
        };
        let out = self.ctl.step(controller::Input::Kube(u));
        self.dispatch(out).await;
        if me_changed {
            if let Some(bgp) = &self.bgp {
                bgp.set_node(announce::bgp_node(&me(&self.config, &self.ctl)));
            }
            self.eligibility_changed().await;
        }
    }

    /// Carries the controller's outputs: writes and Events to the writer, announcement
    /// changes through the announcer to raft-lite, the responder and the speaker.
    async fn dispatch(&mut self, out: Vec<controller::Output>) {
        let mut ch = Changes::default();
        for o in out {
            match o {
                controller::Output::WriteStatus { service, ips, pool } => {
                    if let Some(w) = &self.writer {
                        w.submit(Submission::Status { service, ips, pool });
                    }
                }
                controller::Output::Event {
                    service,
                    warning,
                    reason,
                    message,
                } => {
                    if let Some(w) = &self.writer {
                        w.submit(Submission::Event(EventItem {
                            service,
                            warning,
                            reason,
                            message,
                        }));
                    }
                }
                controller::Output::StaticUnallocated { service, reason } => {
                    error!(service = %service, %reason, "static service has no address");
                }
                controller::Output::Announce(a) => {
                    let me = me(&self.config, &self.ctl);
                    self.announcer.announcement(
                        a.ip,
                        Some(&a),
                        &self.config.pools,
                        &me,
                        self.ifaces.iter(),
                        &self.owned,
                        &mut ch,
                    );
                }
                controller::Output::Withdraw(ip) => {
                    let me = me(&self.config, &self.ctl);
                    self.announcer.announcement(
                        ip,
                        None,
                        &self.config.pools,
                        &me,
                        self.ifaces.iter(),
                        &self.owned,
                        &mut ch,
                    );
                }
            }
        }
        self.tell_announcers(ch).await;
    }

    /// Something every layer-2 IP depends on changed (an interface, this host's Node).
    async fn eligibility_changed(&mut self) {
        let mut ch = Changes::default();
        let me = me(&self.config, &self.ctl);
        self.announcer
            .all_eligibility(&self.config.pools, &me, self.ifaces.iter(), &mut ch);
        self.tell_announcers(ch).await;
    }

    async fn tell_announcers(&mut self, ch: Changes) {
        if ch.is_empty() {
            return;
        }
        self.stale = true;
        self.ownership.change_desired(ch.desired);
        self.ownership.change_eligible(ch.eligible);
        if (!ch.claims.is_empty() || !ch.released.is_empty())
            && let Some(l2) = &self.l2
        {
            let _ = l2
                .send(responder::Input::ClaimsChanged {
                    claims: ch.claims,
                    released: ch.released,
                })
                .await;
        }
        if let Some(bgp) = &self.bgp {
            bgp.change_announcements(ch.bgp);
        }
    }

    /// Ownership changed (or a lease ran out): the writer role, the responder's claims,
    /// D-Bus.
    async fn after_ownership(&mut self) {
        let view = self.ownership.view();
        let writer = matches!(view.role, ClusterRole::Leader | ClusterRole::Standalone);
        if writer != self.ctl.is_writer() {
            info!(writer, term = view.term, "status writer role changed");
            let out = self.ctl.step(controller::Input::Writer(writer));
            self.dispatch(out).await;
        }
        self.metrics.set_cluster_term(view.term);
        self.metrics.set_is_leader(writer);
        let owned = self.ownership.owned_now();
        if owned != self.owned {
            self.owned = owned;
            let mut ch = Changes::default();
            self.announcer
                .ownership(&self.config.pools, &self.owned, &mut ch);
            self.tell_announcers(ch).await;
            self.stale = true;
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
            self.announcer
                .claimed()
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

    /// SIGHUP or D-Bus Reload: validate, then apply only the difference.
    async fn reload(&mut self) -> ReloadReply {
        let reply = self.apply_reload().await;
        self.metrics.config_reloaded(reply.ok);
        self.last_reload = Some(ReloadResult {
            ok: reply.ok,
            at: unix_now(),
            message: reply.message.clone(),
        });
        self.publish().await;
        reply
    }

    /// Validates the file and carries out its [`reload::Plan`], or says why not.
    async fn apply_reload(&mut self) -> ReloadReply {
        let checked = match config::load_file(&self.config_path, &self.ctx) {
            Ok(c) => c,
            Err(diags) => {
                error!("reload failed; keeping the running configuration:\n{diags}");
                return ReloadReply {
                    ok: false,
                    message: format!(
                        "reload failed, running the previous configuration: {}",
                        diags.0.first().map(|d| d.to_string()).unwrap_or_default()
                    ),
                };
            }
        };
        for w in &checked.warnings {
            warn!("{w}");
        }
        let orphaned = self
            .ctl
            .orphaned_by(&checked.config.pools, &checked.config.services);
        if !orphaned.is_empty() {
            let message = reload::refusal(&orphaned);
            error!("{message}");
            return ReloadReply { ok: false, message };
        }
        let plan = reload::Plan::new(&self.config, checked.config);
        self.config = plan.adopted.clone();
        if plan.pools_changed {
            if let Some(bgp) = &self.bgp {
                bgp.set_pools(self.config.pools.clone());
            }
            let out = self.ctl.step(controller::Input::Config {
                pools: self.config.pools.clone(),
                statics: self.config.services.clone(),
            });
            self.dispatch(out).await;
        }
        if plan.peers_changed
            && let Some(bgp) = &self.bgp
        {
            bgp.update_peers(self.config.bgp_peers.clone());
        }
        for gone in &plan.removed_pools {
            self.metrics.remove_pool(gone);
        }
        if let Err(e) = self.start_announcers() {
            error!("{e}");
        }
        self.assign_static_ips().await;
        self.eligibility_changed().await;
        self.loaded_at = unix_now();
        self.stale = true;
        let message = plan.message();
        info!("{message}");
        ReloadReply { ok: true, message }
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
        let view = self.ownership.view();
        snapshot::status_line(&self.facts(&view))
    }

    /// The facts the snapshot and STATUS= are made of.
    fn facts<'a>(&'a self, view: &'a ownership::View) -> snapshot::Facts<'a> {
        snapshot::Facts {
            node: &self.config.node.name,
            role: self.config.node.role,
            ready: self.ready,
            loaded_at: self.loaded_at,
            last_reload: self.last_reload.clone(),
            view,
            owned: &self.owned,
            members: self.ownership.members(&self.config),
            pools: &self.config.pools,
            pool_stats: &self.pool_stats,
            bgp_peers: &self.config.bgp_peers,
            peers: &self.peers,
            failed: self.ctl.allocator().failed().collect(),
            services: self.ctl.services().len() + self.config.services.len(),
            synced: self.ctl.synced(),
        }
    }

    /// Brings the snapshot lbctl and /ready read up to date; the Service list, pool usage
    /// and gauges only when something they show changed.
    async fn publish(&mut self) {
        let bgp_advertised = match &self.bgp {
            Some(b) => {
                self.peers = b.snapshot().await;
                Some(b.advertised_ips().await)
            }
            None => None,
        };
        let stale = std::mem::take(&mut self.stale);
        if stale {
            self.pool_stats = self.ctl.allocator().pool_stats();
        }
        let view = self.ownership.view();
        let facts = self.facts(&view);
        let services = stale.then(|| snapshot::services(&facts, self.ctl.announced().values()));
        if stale {
            snapshot::set_gauges(
                &self.metrics,
                &self.config.pools,
                &self.pool_stats,
                self.announcer.claimed().count(),
                bgp_advertised.unwrap_or(0),
            );
        } else if let Some(n) = bgp_advertised {
            self.metrics
                .set_announced_ips(AnnounceProtocol::Bgp, n as u64);
        }
        self.snapshot
            .send_if_modified(|s| snapshot::update(s, &facts, services));
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

async fn next_net_event(w: &mut Option<NetWatcher>) -> Option<crate::net::NetEvent> {
    match w {
        Some(w) => w.next_event().await,
        None => std::future::pending().await,
    }
}
