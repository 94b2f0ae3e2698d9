//! Operations surface: read-only views of the daemon's state and the `Reload` entry point.
//!
//! The daemon publishes a [`state::Snapshot`] on a `watch` channel; [`dbus::serve`] puts it on
//! the system bus for `lbctl` ([`client`] is lbctl's side, [`render`] its tables);
//! [`metrics::Metrics`] is updated by the other parts and served with `/live` and `/ready` by
//! [`http::serve`]. Nothing here decides anything.
//!
//! Wiring in the daemon (sketch):
//!
//! ```no_run
//! # async fn wire(cfg: lb::config::Config) -> Result<(), lb::control::ControlError> {
//! use std::time::Duration;
//! use lb::control::{self, Snapshot, http, metrics::Metrics};
//! use tokio::sync::{mpsc, watch};
//!
//! let (snap_tx, snap_rx) = watch::channel(Snapshot::starting(&cfg.node.name, "/etc/lb.toml", 0));
//! let (reload_tx, mut reload_rx) = mpsc::channel::<control::ReloadRequest>(4);
//! let bus = control::serve(None, snap_rx.clone(), reload_tx).await?;
//! let metrics = Metrics::new();
//! let liveness = http::Liveness::new(Duration::from_secs(10));
//! let _http = http::serve(cfg.metrics.listen, metrics.clone(), liveness.clone(), snap_rx).await?;
//! loop {
//!     tokio::select! {
//!         Some(req) = reload_rx.recv() => {
//!             // validate + apply, then:
//!             metrics.config_reloaded(true);
//!             let _ = req.reply.send(control::ReloadReply { ok: true, message: "no changes".into() });
//!         }
//!         // … the other inputs; after each step:
//!         // snap_tx.send_if_modified(|s| { … }); liveness.touch();
//!         // bus.ownership_changed(ip, Some("worker-2")).await?;
//!     }
//! #   break;
//! }
//! # drop((snap_tx, bus)); Ok(()) }
//! ```

pub mod client;
pub mod dbus;
pub mod http;
pub mod metrics;
pub mod offline;
pub mod render;
pub mod state;

pub use dbus::{
    ControlHandle, ReloadReply, ReloadRequest, RemoveOutcome, RemoveReply, RemoveRequest, serve,
    serve_with_remove,
};
pub use state::Snapshot;

/// Failures of the daemon-side control surface.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot put {name} on the {bus}: {source}", name = dbus::BUS_NAME)]
    Bus {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("{name} is already owned on the {bus}: is another lbd running?", name = dbus::BUS_NAME)]
    NameTaken { bus: String },
    #[error("cannot emit D-Bus signal {signal}: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
