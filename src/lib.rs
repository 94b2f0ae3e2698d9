//! lb: a load balancer for bare-metal Kubernetes clusters, run as a host daemon.
//!
//! Pure cores (no sockets, no tokio, no clock of their own) live apart from the I/O that
//! feeds them: `alloc`, `controller`, `cluster::core`, `bgp::fsm`, `l2::responder` decide;
//! `kube`, `net`, `l2::socket`, `bgp::driver`, `control` and `sys` move bytes.

#![deny(unsafe_code)]

pub use lb_config as config;
pub use lb_core::{alloc, announcers, controller, machine, model, writes};
pub use lb_metallb as metallb;

pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod control;
pub mod daemon;
pub mod driver;
pub mod kube;
pub mod l2;
pub mod net;
#[allow(unsafe_code)] // the one place: packet filters, TCP-MD5, uname, setns
pub mod sys;
