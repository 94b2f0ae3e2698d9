//! BFD (RFC 5880) for the BGP sessions, single-hop over UDP (RFC 5881).
//!
//! - [`codec`]: the Control packet to and from bytes, with the receive checks that need no
//!   session.
//! - [`session`]: one session's state machine, `step(now, input) -> outputs`, pure.
//! - [`driver`]: the tokio task owning every session and the UDP sockets (port 3784, TTL
//!   255 both ways, GTSM).

pub mod codec;
pub mod driver;
pub mod session;
