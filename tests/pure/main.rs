//! Pure tests: lb's cores, codecs, config and importer, and the test kit's own computations,
//! run in memory (no root, no network, no processes). One module per former test binary;
//! `cargo test --test pure cluster_model::` runs one of them.

mod alloc_lab_sharing;
mod alloc_properties;
mod apiserver_units;
mod bfd_proptest;
mod bgp_fixtures;
mod bgp_proptest;
mod cluster_member_nodes;
mod cluster_members;
mod cluster_model;
mod cluster_model_members;
mod cluster_model_voters;
mod cluster_simulation;
mod cluster_voter_changes;
mod config_fuzz;
mod config_member_nodes;
mod config_validation;
mod import_corpus;
mod import_metallb;
mod import_validates;
mod l2_fixtures;
mod l2_proptest;
mod lab_probe_analysis;
mod troubleshoot_events;
