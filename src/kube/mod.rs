//! The Kubernetes side: connect with a kubeconfig, watch Services, EndpointSlices and Nodes,
//! and (on the leader only) write Service status and Events.

pub mod client;
pub mod events;
pub mod members;
pub mod status;
pub mod translate;
pub mod watch;
pub mod writer;
