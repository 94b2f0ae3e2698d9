//! BGP-4: codec, session FSM and UPDATE building, all pure. The TCP driver and the speaker
//! that owns the sessions are in the `lb` crate (`lb::bgp::{driver, speaker}`).
//!
//! - [`codec`]: messages to and from bytes, the streaming [`codec::Framer`], and the
//!   NOTIFICATION / RFC 7606 action each decode error calls for.
//! - [`fsm`]: one session's RFC 4271 §8 state machine, `step(now, input) -> outputs`, plus
//!   [`fsm::resolve_collision`] for the driver.
//! - [`build`]: UPDATEs (announce, withdraw, End-of-RIB) from advertisement intents.
//! - [`advertise`]: which prefixes go to which peer.
//!
//! Byte vectors captured from GoBGP and FRR are in `tests/fixtures/bgp/`.

pub mod advertise;
pub mod build;
pub mod codec;
pub mod fsm;
pub mod peer;
