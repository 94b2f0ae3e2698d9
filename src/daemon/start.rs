//! Starting lbd: the tasks it runs (Kubernetes watch and writer, netlink, raft-lite, D-Bus,
//! metrics, the ARP/NDP responder and the BGP speaker) and the static services on `lo`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{Instrument, error, info, warn};

use super::announce::{self, Announcer};
use super::ownership::Ownership;
use super::{Daemon, logging, me, unix_now};
use crate::bgp::speaker::{Speaker, SpeakerOptions};
use crate::config::{self, Config, Context, Role};
use crate::control::{self, Snapshot, http, metrics::Metrics};
use crate::controller::{self, Controller};
use crate::kube::watch::KubeUpdate;
use crate::kube::writer;
use crate::l2::responder::{self, Responder};
use crate::l2::socket::AsyncPacketSocket;
use crate::model::PoolProtocol;
use crate::net::InterfaceTable;
use crate::net::netlink::NetWatcher;
use crate::writes::Limits;

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub fn main(config_path: &Path) -> ExitCode {
    crate::sys::single_malloc_arena();
    let ctx = Context::from_system();
    let checked = match config::load_file(config_path, &ctx) {
        Ok(c) => c,
        Err(diags) => {
            logging::early_error(&diags.to_string());
            logging::early_error(&format!(
                "lbd: {} is invalid; not starting",
                config_path.display()
            ));
            return ExitCode::from(super::EXIT_INVALID_CONFIG);
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

impl Daemon {
    pub(super) async fn start(
        config_path: PathBuf,
        ctx: Context,
        config: Config,
    ) -> Result<Self, String> {
        info!(
            node = %config.node.name,
            pools = config.pools.len(),
            peers = config.bgp_peers.len(),
            members = config.cluster.members.len(),
            "lbd {} starting",
            env!("CARGO_PKG_VERSION")
        );
        let metrics = Metrics::new();
        let loaded_at = unix_now();
        metrics.config_loaded(loaded_at);

        // Kubernetes: connecting only reads the kubeconfig; an unreachable API server is
        // retried by the watchers and never blocks start-up.
        let (kube_tx, kube_rx) = mpsc::channel::<KubeUpdate>(1024);
        let mut writer = None;
        let mut namespaces_later = None;
        let mut member_nodes_client = None;
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
            namespaces_later = Some((client.clone(), kube_tx.clone()));
            if config.cluster.member_nodes.is_some() {
                member_nodes_client = Some(client.clone());
            }
            writer = Some(writer::spawn(
                crate::kube::status::StatusWriter::new(client, &config.node.name),
                Limits {
                    max_in_flight: k.max_writes_in_flight,
                    ..Limits::default()
                },
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
        // `[cluster] member_nodes`: the Nodes say who may be a member (and where).
        if let (Some(client), Some(spec), Some(sink)) = (
            member_nodes_client,
            config.cluster.member_nodes.clone(),
            ownership.allowed_members_sender(),
        ) {
            info!("[cluster] member_nodes: watching Nodes for raft-lite members");
            tokio::spawn(crate::kube::members::watch_member_nodes(
                client,
                spec,
                config.node.name.clone(),
                config.cluster.members.contains_key(&config.node.name),
                sink,
                metrics.clone(),
            ));
        }

        let (snapshot, snap_rx) = watch::channel(Snapshot::starting(
            &config.node.name,
            config_path.display().to_string(),
            unix_now(),
        ));
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let (remove_tx, remove_rx) = mpsc::channel(4);
        let bus = match control::serve_with_remove(
            None,
            snap_rx.clone(),
            reload_tx.clone(),
            Some(remove_tx),
        )
        .await
        {
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
            reporter: super::announcing::Reporter::default(),
            ifaces,
            netlink,
            l2: None,
            bgp: None,
            ownership,
            writer,
            kube_rx,
            kube_open,
            namespaces_later,
            snapshot,
            reload_rx,
            _reload_tx: reload_tx,
            remove_rx,
            bus,
            metrics,
            liveness,
            _metrics_server: metrics_server,
            owned: BTreeSet::new(),
            on_lo: BTreeSet::new(),
            ready: false,
            loaded_at,
            last_reload: None,
            peers: Vec::new(),
            pool_stats: Vec::new(),
            stale: true,
            last_status: String::new(),
            signalled: BTreeMap::new(),
            bgp_ready: false,
            config,
        };
        d.watch_namespaces_if_needed();
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
    pub(super) fn start_announcers(&mut self) -> Result<(), String> {
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
                    wait_until_ready: true,
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
            self.bgp_ready = false;
            self.bgp_ready_if_synced();
        }
        Ok(())
    }

    /// Static services with `assign = true`: their IP goes on `lo` of every member.
    pub(super) async fn assign_static_ips(&mut self) {
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
}

/// Some pool chooses Services by namespace labels: the Namespaces must be watched.
fn needs_namespaces(config: &Config) -> bool {
    config
        .pools
        .iter()
        .any(|p| !p.service_allocation.namespace_selectors.is_empty())
}

impl Daemon {
    /// Starts the Namespaces watcher if the configuration needs it and it is not running.
    pub(super) fn watch_namespaces_if_needed(&mut self) {
        if needs_namespaces(&self.config)
            && let Some((client, tx)) = self.namespaces_later.take()
        {
            tracing::info!("a pool has namespace_selectors: watching Namespaces");
            tokio::spawn(crate::kube::watch::watch_namespaces(client, tx));
        }
    }
}
