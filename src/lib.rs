//! lb: a load balancer for bare-metal Kubernetes clusters, run as a host daemon.
//!
//! Pure cores (no sockets, no tokio, no clock of their own) live apart from the I/O that
//! feeds them: `alloc`, `controller`, `cluster::core`, `bgp::fsm`, `l2::responder` decide;
//! `kube`, `net`, `l2::socket`, `bgp::driver`, `control` and `sys` move bytes.

pub mod alloc;
pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod config;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod kube;
pub mod l2;
pub mod model;
pub mod net;
pub mod sys;
