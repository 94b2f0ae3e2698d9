//! raft-lite: leader election and layer-2 ownership among the hosts.
//!
//! The protocol is the pure core in `lb_core::cluster` (re-exported here: [`core`],
//! [`message`], [`placement`], [`wire`]); this module adds the I/O around it: the UDP
//! transport, term and vote on disk, and the task that drives the core.

pub use lb_core::cluster::*;

pub mod driver;
pub mod hard_state;
pub mod transport;
