//! /etc/lb.toml: schema, validation, and the MetalLB importer.

pub mod metallb;
