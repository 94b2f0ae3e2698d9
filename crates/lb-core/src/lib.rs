//! lb-core: the pure cores of lb and the domain model they share.
//!
//! Nothing here does I/O or reads a clock: no sockets, no files, no tokio, no
//! `Instant::now()`. Time is an `Instant` passed in by the caller; randomness comes from a
//! seed. The build keeps it so: this crate depends on no I/O crate (see its Cargo.toml) and
//! its `clippy.toml` forbids the std APIs that touch the outside world (clocks, files,
//! sockets, threads, processes, the environment), which CI's clippy run turns into errors.
//!
//! - [`model`]: Services, pools, nodes, interfaces: the types every part shares.
//! - [`alloc`]: the MetalLB-compatible IP allocator.
//! - [`controller`]: the desired state: allocation outcomes, status writes, announcements.
//! - [`announcers`]: who announces each Service, as Kubernetes is told it (annotation, Events).
//! - [`writes`]: the queue of API writes: status first, Events behind.
//! - [`cluster`]: raft-lite (election, ownership, leases) and its wire format.
//! - [`bgp`], [`bfd`]: codecs and session state machines.
//! - [`l2`]: ARP/NDP codecs and the responder core.
//! - [`machine`]: the `Machine` trait every stepped core implements, which the `lb` crate's
//!   one driver loop runs.

#![forbid(unsafe_code)]

pub mod alloc;
pub mod announcers;
pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod controller;
pub mod l2;
pub mod machine;
pub mod model;
pub mod writes;

/// Tests need some `Instant` to start from; the cores themselves never read the clock.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
