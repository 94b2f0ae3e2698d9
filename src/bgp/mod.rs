//! BGP-4 speaker. The pure parts (codec, session FSM, UPDATE building, advertisement) are in
//! `lb_core::bgp`, re-exported here; this module adds the TCP driver and the speaker task.

pub use lb_core::bgp::*;

pub mod driver;
pub mod session_config;
pub mod speaker;
pub mod tcp;
