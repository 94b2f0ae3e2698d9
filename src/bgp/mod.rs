//! BGP-4 speaker: codec, session FSM (pure) and the TCP driver.
//!
//! - [`codec`]: messages to and from bytes, the streaming [`codec::Framer`], and the
//!   NOTIFICATION / RFC 7606 action each decode error calls for.
//! - [`fsm`]: one session's RFC 4271 §8 state machine, `step(now, input) -> outputs`, plus
//!   [`fsm::resolve_collision`] for the driver.
//! - [`build`]: UPDATEs (announce, withdraw, End-of-RIB) from advertisement intents.
//!
//! Byte vectors captured from GoBGP and FRR are in `tests/fixtures/bgp/`.

pub mod advertise;
pub mod build;
pub mod codec;
pub mod driver;
pub mod fsm;
pub mod speaker;
