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
mod publish;
pub mod reload;
pub mod snapshot;
mod start;
pub mod systemd;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::alloc::PoolStats;
use crate::bgp::speaker::{PeerSnapshot, SpeakerHandle};
use crate::config::{self, Config, Context};
use crate::control::state::{ClusterRole, ReloadResult};
use crate::control::{self, ReloadReply, ReloadRequest, Snapshot, http, metrics::Metrics};
use crate::controller::{self, Controller};
use crate::kube::watch::KubeUpdate;
use crate::kube::writer::WriterHandle;
use crate::l2::responder;
use crate::net::InterfaceTable;
use crate::net::netlink::NetWatcher;
use crate::writes::{EventItem, Submission};
use announce::{Announcer, Changes, Me};
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

pub use start::main;

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
    /// The speaker has been told the announcements are complete.
    bgp_ready: bool,
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
    async fn run(mut self) -> ExitCode {
        let mut signals = match Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR2]) {
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
                    // SIGUSR2: "stopping to restart", for supervisors other than systemd.
                    SIGUSR2 => return self.shutdown(true).await,
                    _ => {
                        let restart = systemd::restart_pending(Duration::from_millis(500)).await;
                        return self.shutdown(restart).await;
                    }
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
        self.bgp_ready_if_synced();
        if me_changed {
            if let Some(bgp) = &self.bgp {
                bgp.set_node(announce::bgp_node(&me(&self.config, &self.ctl)));
            }
            self.eligibility_changed().await;
        }
    }

    /// Once the stores have synced, the announcements are complete: BGP sessions may get
    /// their initial UPDATEs and End-of-RIB.
    fn bgp_ready_if_synced(&mut self) {
        if !self.bgp_ready
            && self.ctl.synced()
            && let Some(bgp) = &self.bgp
        {
            bgp.set_ready();
            self.bgp_ready = true;
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
        self.export_members(&view);
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

    /// SIGTERM/SIGINT: hand owned IPs over, withdraw BGP routes with Cease, exit 0 — all
    /// within [`SHUTDOWN_BOUND`].
    /// `restart`: lbd comes back at once (systemd restarts the unit, or SIGUSR2): BGP
    /// sessions that negotiated graceful restart keep their routes at the peers, and static
    /// service IPs stay on `lo`.
    async fn shutdown(mut self, restart: bool) -> ExitCode {
        if restart {
            info!(
                "stopping for a restart: handing over owned IPs, BGP peers keep our routes (graceful restart)"
            );
        } else {
            info!("shutting down: handing over owned IPs, withdrawing BGP routes");
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BOUND;
        let handover = self.ownership.shutdown(deadline);
        let withdraw = async {
            if let Some(bgp) = &self.bgp {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let r = if restart {
                    bgp.shutdown_for_restart("lbd restarting", left).await
                } else {
                    bgp.shutdown("lbd shutting down", left).await
                };
                if r.is_err() {
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
        if let Some(nl) = &self.netlink
            && !restart
        {
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
