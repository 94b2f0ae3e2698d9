//! Layer 2: who answers ARP / NDP for a layer-2 IP. Five steps, each in one place:
//!
//! 1. **Placement** — the raft-lite leader picks the owner among the hosts that can answer
//!    (eligible: an up interface for the IP, selectors, a `Local` endpoint):
//!    `lb_core::cluster::placement::choose_owner`, called from the core's `reconcile`. What
//!    makes this host eligible is decided in `crate::daemon::announce::eligible`.
//! 2. **Lease** — the owner may answer only while its lease from the leader is valid:
//!    `lb_core::cluster::core::Node` (`Output::Leases`), published by
//!    `crate::cluster::driver` as `ClusterView::owned` (IP → lease deadline).
//! 3. **Claims** — the owned IPs become claims for the responder (the IP, its pool's
//!    interfaces, its Services): `crate::daemon::announce::Announcer::ownership`.
//! 4. **Responder** — the pure core that answers requests for claimed IPs on the chosen
//!    interfaces and sends gratuitous ARP / unsolicited NA: [`responder::Responder`], run by
//!    [`socket::run`] on the filtered packet socket.
//! 5. **Gate at send time** — every frame is checked against the lease at the moment it
//!    leaves (`socket::Gate`, `crate::daemon::ownership::Ownership::gate`), so a host whose
//!    lease has just run out stays silent even before its responder hears of it.
//!
//! The pure parts (codecs, the responder core, the choice of interface) are in
//! `lb_core::l2`, re-exported here; [`socket`] moves the bytes.

pub use lb_core::l2::*;

pub mod socket;
