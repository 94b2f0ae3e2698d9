//! What the daemon tells the outside about itself: the snapshot lbctl, D-Bus and `/ready`
//! read, the gauges, and systemd's READY=, RELOADING= and STATUS=.

use std::time::Duration;

use tracing::info;

use super::{Daemon, notify, ownership, snapshot};
use crate::control::ReloadReply;
use crate::control::metrics::Metrics;
use crate::control::state::{AnnounceProtocol, ClusterRole, MemberStatus};

impl Daemon {
    /// A reload (SIGHUP or lbctl reload) framed by RELOADING=1 … READY=1 for systemd, with
    /// the result in STATUS= until the next status change.
    pub(super) async fn reload_notifying(&mut self) -> ReloadReply {
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
    pub(super) fn notify_status_if_changed(&mut self) {
        let status = self.status_line();
        if !self.last_status.ends_with(&status) || self.last_status.is_empty() {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            self.last_status = status;
        }
    }

    pub(super) fn set_ready(&mut self, started: tokio::time::Instant) {
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
    pub(super) async fn publish(&mut self) {
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
        // Every second, so that the time since a silent member was last heard keeps growing.
        set_member_gauges(&self.metrics, &view, &facts.members);
        if stale {
            self.export_layer2_owners(&view);
        }
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

    /// `lb_layer2_ip_has_owner`: after the announcements changed (a publish with `stale`)
    /// or the raft-lite view did (`after_ownership`), not every second.
    pub(super) fn export_layer2_owners(&self, view: &ownership::View) {
        self.metrics.set_layer2_owners(&snapshot::layer2_owners(
            view,
            &self.config.pools,
            self.ctl.announced().values(),
        ));
    }

    /// The member gauges at once when the raft-lite view changes (a member's health, a new
    /// leader), not only at the next publish.
    pub(super) fn export_members(&self, view: &ownership::View) {
        let members = self.ownership.members(&self.config);
        set_member_gauges(&self.metrics, view, &members);
    }
}

/// Each member's health and time since last heard, as `lbctl cluster` shows them, where this
/// host knows them: the leader (or a cluster of one) knows every member; a follower only
/// itself and the leader it hears, so the others get no series rather than a false 0.
fn set_member_gauges(metrics: &Metrics, view: &ownership::View, members: &[MemberStatus]) {
    let knows_all = matches!(view.role, ClusterRole::Leader | ClusterRole::Standalone);
    for m in members {
        let healthy = (knows_all || m.healthy).then_some(m.healthy);
        metrics.set_cluster_member(&m.name, healthy, m.last_seen_ms.map(Duration::from_millis));
    }
}
