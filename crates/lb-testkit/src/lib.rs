//! Test support shared by the integration tests: the test Kubernetes API server and the
//! network-namespace lab. Each test crate uses only part of it.
#![allow(dead_code)]

pub mod apiserver;
pub mod chaos;
pub mod dbus;
pub mod examples;
pub mod guide;
pub mod kubelab;
pub mod l2cluster;
pub mod lab;
pub mod lbd;
