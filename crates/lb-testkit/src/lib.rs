//! lb's test kit, compiled once and shared by every test binary
//! (`tests/{pure,ops,kube,lab}/main.rs`) and the examples (benchmarks, the demo, the chaos
//! soak, the helper programs):
//!
//! - [`lab`]: the network-namespace lab (hosts on a bridge, or a bare veth pair), real peers
//!   (FRR, BIRD, GoBGP, exabgp, keepalived), probes and packet captures (docs/lab.md);
//! - [`apiserver`]: the test Kubernetes API server, [`kubelab`] runs it in a lab namespace;
//! - [`lbd`], [`dbus`], [`examples`]: lbd and the example programs as processes, a private
//!   D-Bus;
//! - [`l2cluster`], [`guide`], [`chaos`], [`upgrade`]: the layer-2 failover cluster, the
//!   MetalLB lab guide, the chaos soak and the measured rolling upgrade, each built from the
//!   above;
//! - [`cluster_sim`]: the deterministic simulation of raft-lite hosts; [`rng`] the seeded
//!   random numbers of the simulation and the soak;
//! - [`bench`], [`bgp_lab`]: helpers of the benchmark examples;
//! - [`alerts`]: the shipped alert rules and dashboard, and the metric names they query.
//!
//! Paths into the repository (fixtures, packaging files) are taken from [`repo_root`], the
//! probes from [`kit_dir`], never from the working directory. The kit's public items are its
//! API: what no test or example uses is deleted, not allowed as dead code.

pub mod alerts;
pub mod apiserver;
pub mod bench;
pub mod bgp_lab;
pub mod chaos;
pub mod cluster_sim;
pub mod dbus;
pub mod examples;
pub mod grow;
pub mod guide;
pub mod kubelab;
pub mod l2cluster;
pub mod lab;
pub mod lbd;
pub mod rng;
pub mod upgrade;

use std::path::{Path, PathBuf};

/// The repository's top directory (where lb's Cargo.toml is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository holds crates/lb-testkit")
}

/// The directory of the test kit's own files (`probe/`).
pub fn kit_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
