//! BFD (RFC 5880) for the BGP sessions, single-hop over UDP (RFC 5881). The codec and the
//! session state machine are pure (`lb_core::bfd`, re-exported here); [`driver`] is the
//! tokio task owning every session and the UDP sockets (port 3784, TTL 255 both ways, GTSM).

pub use lb_core::bfd::*;

pub mod driver;
