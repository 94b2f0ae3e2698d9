//! The network-namespace lab (lb_testkit::lab, docs/lab.md): lbd, lb's speaker and raft-lite
//! nodes against real routers, clients and each other. Run as root; every test builds its own
//! namespaces (named after the test process, so tests run in parallel) and tears them down,
//! also when it fails. One module per former test binary; e.g.
//! `cargo test --test lab lab_selftest::` runs the lab's self-tests.

mod alert_series;
mod allocate_only_lab;
mod bfd_lab;
mod bgp_graceful_restart;
mod bgp_interop;
mod chaos_soak;
mod cluster_grow_lab;
mod cluster_netns;
mod guide_lab;
mod l2_failover_lab;
mod l2_netlink;
mod l2_socket;
mod lab_selftest;
mod lbd_lab;
mod rolling_upgrade;
mod voter_replace_lab;
