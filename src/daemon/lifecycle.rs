//! The main loop's two life events: a reload (SIGHUP or D-Bus; the pure [`super::reload::Plan`]
//! says what changes, this carries it out) and the stop (SIGTERM/SIGINT, or a stop to
//! restart).

use std::collections::BTreeSet;
use std::process::ExitCode;

use tracing::{error, info, warn};

use super::announce::Changes;
use super::{Daemon, SHUTDOWN_BOUND, announce, announcing, me, notify, reload, unix_now};
use crate::config;
use crate::control::ReloadReply;
use crate::control::state::ReloadResult;
use crate::controller;
use crate::l2::responder;

impl Daemon {
    /// SIGHUP or D-Bus Reload: validate, then apply only the difference.
    pub(super) async fn reload(&mut self) -> ReloadReply {
        let reply = self.apply_reload().await;
        self.metrics.config_reloaded(reply.ok);
        if reply.ok {
            self.metrics.config_loaded(self.loaded_at);
        }
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
        let reprotocoled = announce::protocol_changed(&self.config.pools, &plan.adopted.pools);
        self.config = plan.adopted.clone();
        // Before the pools reach the controller, so that the Namespaces it will wait for
        // are on their way.
        self.watch_namespaces_if_needed();
        if plan.pools_changed {
            if let Some(bgp) = &self.bgp {
                bgp.set_pools(self.config.pools.clone());
            }
            let out = self.ctl.step(controller::Input::Config {
                pools: self.config.pools.clone(),
                statics: self.config.services.clone(),
            });
            self.dispatch(out).await;
            self.reannounce_pools(&reprotocoled).await;
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
        let out = self.reporter.refresh_all(&announcing::Context {
            ctl: &self.ctl,
            config: &self.config,
        });
        self.report(out);
        self.loaded_at = unix_now();
        self.stale = true;
        let mut message = plan.message();
        if let Some(voters) = &plan.voters {
            match self.ownership.propose_voters(voters) {
                Ok(None) => {}
                Ok(Some(change)) => message.push_str(&format!(
                    "; voters: {change} proposed (the leader makes the change; reload every voter with the same list)"
                )),
                Err(e) => {
                    error!("voter change refused, keeping the running voter set: {e}");
                    message.push_str(&format!("; voter change refused: {e}"));
                }
            }
        }
        info!(pools_version = self.config.pools.version(), "{message}");
        ReloadReply { ok: true, message }
    }

    /// SIGTERM/SIGINT: hand owned IPs over, withdraw BGP routes with Cease, exit 0 — all
    /// within [`SHUTDOWN_BOUND`].
    /// `restart`: lbd comes back at once (systemd restarts the unit, or SIGUSR2): BGP
    /// sessions that negotiated graceful restart keep their routes at the peers, and static
    /// service IPs stay on `lo`.
    pub(super) async fn shutdown(mut self, restart: bool) -> ExitCode {
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

impl Daemon {
    /// The announcers again for every IP of `pools` (whose protocol a reload changed): the
    /// controller re-emits nothing, its announcements being the same.
    pub(super) async fn reannounce_pools(&mut self, pools: &BTreeSet<String>) {
        if pools.is_empty() {
            return;
        }
        let mut ch = Changes::default();
        let me = me(&self.config, &self.ctl);
        for a in self.ctl.announced().values() {
            if pools.contains(&a.pool) {
                self.announcer.announcement(
                    a.ip,
                    Some(a),
                    &self.config.pools,
                    &me,
                    self.ifaces.iter(),
                    &self.owned,
                    &mut ch,
                );
            }
        }
        self.tell_announcers(ch).await;
    }
}
