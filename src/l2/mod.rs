//! Layer 2: who answers ARP / NDP for a layer-2 IP.
//!
//! The pure parts (codecs, the responder core, the choice of interface) are in `lb_core::l2`,
//! re-exported here; [`socket`] is the filtered packet socket that moves the bytes.

pub use lb_core::l2::*;

pub mod socket;
