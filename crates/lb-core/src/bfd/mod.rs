//! BFD (RFC 5880) for the BGP sessions, single-hop over UDP (RFC 5881): the pure parts.
//!
//! - [`codec`]: the Control packet to and from bytes, with the receive checks that need no
//!   session.
//! - [`session`]: one session's state machine, `step(now, input) -> outputs`.
//!
//! The tokio task owning every session and the UDP sockets is `lb::bfd::driver`.

pub mod codec;
pub mod session;
pub mod sessions;
