//! lb's daemons and tools on loopback: the BGP speaker against a scripted peer, raft-lite
//! drivers over UDP, lbd as a process with its D-Bus interface, lbctl and /metrics. Every
//! port is picked free (bind port 0) and every D-Bus is private, so tests run in parallel.
//! One module per former test binary.

mod alert_rules;
mod bgp_speaker;
mod cluster_big;
mod cluster_metrics;
mod cluster_udp;
mod control_cli;
mod control_dbus;
mod control_metrics;
mod import_check_config;
mod lbd_ops;
