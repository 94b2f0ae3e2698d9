//! lb: a load balancer for bare-metal Kubernetes clusters, run as a host daemon.
//!
//! Pure cores (no sockets, no tokio, no clock of their own) live apart from the I/O that
//! feeds them; see `../DESIGN` notes in the README for the task diagram.

pub mod alloc;
pub mod bgp;
pub mod cluster;
pub mod config;
pub mod l2;
pub mod model;
