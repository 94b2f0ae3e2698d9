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
//! announcers. Rooms: [`announce`] (who may announce what), [`announcing`] (who announces
//! each Service, told to Kubernetes by the leader), [`snapshot`] (what lbctl and
//! `/ready` read, the gauges), [`reload`] (what a reload changes), `lifecycle` (carrying out
//! a reload, the stop), [`ownership`] (the
//! raft-lite view).

pub mod announce;
pub mod announcing;
mod lifecycle;
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
use crate::config::{Config, Context};
use crate::control::state::{ClusterRole, ReloadResult};
use crate::control::{self, ReloadRequest, RemoveRequest, Snapshot, http, metrics::Metrics};
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

/// What `lbctl cluster remove` is told.
fn remove_reply(r: Result<(), crate::cluster::driver::RemoveError>) -> control::RemoveReply {
    use crate::cluster::core::RemoveRefusal;
    use crate::cluster::driver::RemoveError;
    let outcome = match &r {
        Ok(()) => control::RemoveOutcome::Removed,
        Err(RemoveError::Refused(RemoveRefusal::NotLeader(_) | RemoveRefusal::NoLeader)) => {
            control::RemoveOutcome::NotLeader
        }
        Err(_) => control::RemoveOutcome::Refused,
    };
    control::RemoveReply {
        outcome,
        message: match r {
            Ok(()) => "forgotten; its IPs move to other hosts".to_owned(),
            Err(e) => e.to_string(),
        },
    }
}

struct Daemon {
    config_path: PathBuf,
    ctx: Context,
    config: Config,
    ctl: Controller,
    announcer: Announcer,
    /// Who announces each Service, as the leader tells Kubernetes.
    reporter: announcing::Reporter,
    ifaces: InterfaceTable,
    netlink: Option<NetWatcher>,
    l2: Option<mpsc::Sender<responder::Input>>,
    bgp: Option<SpeakerHandle>,
    ownership: Ownership,
    writer: Option<WriterHandle>,
    kube_rx: mpsc::Receiver<KubeUpdate>,
    kube_open: bool,
    /// What starts the Namespaces watcher, kept until a pool has `namespace_selectors`
    /// (then taken: it runs for good).
    namespaces_later: Option<(kube::Client, mpsc::Sender<KubeUpdate>)>,
    snapshot: watch::Sender<Snapshot>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    _reload_tx: mpsc::Sender<ReloadRequest>,
    /// `lbctl cluster remove NAME` calls (D-Bus `RemoveMember`).
    remove_rx: mpsc::Receiver<RemoveRequest>,
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
                Some(req) = self.remove_rx.recv() => {
                    let reply = remove_reply(self.ownership.remove_member(&req.name).await);
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
                    let out = self.reporter.tick();
                    self.report(out);
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
        let before = self.work();
        let reported = match &u {
            KubeUpdate::Service(s) => self.reporter.observed(s),
            KubeUpdate::ServiceGone(k) => self.reporter.gone(k),
            _ => Vec::new(),
        };
        let nodes_changed = matches!(u, KubeUpdate::Node(_) | KubeUpdate::NodeGone(_));
        let out = self.ctl.step(controller::Input::Kube(u));
        self.report(reported);
        self.dispatch(out).await;
        if nodes_changed {
            let out = self.reporter.refresh_all(&announcing::Context {
                ctl: &self.ctl,
                config: &self.config,
            });
            self.report(out);
        }
        self.bgp_ready_if_synced();
        if me_changed {
            if let Some(bgp) = &self.bgp {
                bgp.set_node(announce::bgp_node(&me(&self.config, &self.ctl)));
            }
            self.eligibility_changed().await;
        }
        self.metrics.kube_update(self.work() - before);
    }

    /// Announcements recomputed so far (controller and announcer).
    fn work(&self) -> u64 {
        self.ctl.recomputed() + self.announcer.recomputed()
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
        let mut touched = Vec::new();
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
                            uid: self.uid(&service),
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
                    touched.extend(self.reporter.announcement(a.ip, Some(&a)));
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
                    touched.extend(self.reporter.announcement(ip, None));
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
        if !touched.is_empty() {
            let out = self.reporter.refresh(
                touched,
                &announcing::Context {
                    ctl: &self.ctl,
                    config: &self.config,
                },
            );
            self.report(out);
        }
    }

    /// The Service's `metadata.uid`, which its Events carry.
    fn uid(&self, service: &crate::model::ServiceKey) -> Option<String> {
        self.ctl.services().get(service).and_then(|s| s.uid.clone())
    }

    /// Hands the writer what the reporter decided to tell Kubernetes.
    fn report(&self, out: Vec<crate::announcers::Output>) {
        let Some(w) = &self.writer else {
            return;
        };
        for o in out {
            w.submit(match o {
                crate::announcers::Output::Annotate { service, value } => {
                    Submission::Announcing { service, value }
                }
                crate::announcers::Output::Event(e) => Submission::Event(EventItem {
                    uid: self.uid(&e.service),
                    ..e
                }),
            });
        }
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
        let moved = self.reporter.owners(&view.owners);
        let active = writer && self.writer.is_some();
        let mut out = self.reporter.set_active(
            active,
            &announcing::Context {
                ctl: &self.ctl,
                config: &self.config,
            },
        );
        out.extend(self.reporter.refresh(
            moved,
            &announcing::Context {
                ctl: &self.ctl,
                config: &self.config,
            },
        ));
        self.report(out);
        self.metrics.set_cluster_term(view.term);
        self.metrics.set_is_leader(writer);
        self.export_members(&view);
        self.export_layer2_owners(&view);
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
}

async fn next_net_event(w: &mut Option<NetWatcher>) -> Option<crate::net::NetEvent> {
    match w {
        Some(w) => w.next_event().await,
        None => std::future::pending().await,
    }
}
