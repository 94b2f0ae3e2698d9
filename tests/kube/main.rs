//! The test Kubernetes API server (lb_testkit::apiserver) against kube-rs and the real
//! kubectl, and lbd against it end to end. Each test has its own server on a free loopback
//! port. One module per former test binary.

mod apiserver_kube_rs;
mod apiserver_kubectl;
mod apiserver_nodes;
mod kube_e2e;
mod member_nodes_e2e;
