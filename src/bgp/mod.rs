//! BGP-4 speaker: codec, session FSM (pure) and the TCP driver.

pub mod build;
pub mod codec;
pub mod fsm;
