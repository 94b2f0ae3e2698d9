//! Operations surface: read-only views of the daemon's state and the `Reload` entry point.
//!
//! The daemon publishes a [`state::Snapshot`] on a `watch` channel; [`dbus::serve`] puts it on
//! the system bus for `lbctl` ([`client`] is lbctl's side, [`render`] its tables);
//! [`metrics::Metrics`] is updated by the other parts and served with `/live` and `/ready` by
//! [`http::serve`]. Nothing here decides anything.

pub mod client;
pub mod dbus;
pub mod http;
pub mod metrics;
pub mod render;
pub mod state;

pub use dbus::{ControlHandle, ReloadReply, ReloadRequest, serve};
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
