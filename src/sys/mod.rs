//! The only place `unsafe` is allowed: socket options and filters libc has no safe API for.
//!
//! - `packet`: the AF_PACKET socket that receives only ARP and NS/NA frames (classic BPF).
//! - `netns`: entering a network namespace on the current thread (tests and the lab).
//! - `tcp_md5`: TCP-MD5 signature keys (RFC 2385) on BGP sockets.
//! - `udp_ttl`: UDP receive with the TTL / hop limit (GTSM for single-hop BFD).

pub mod netns;
pub mod packet;
pub mod tcp_md5;
pub mod udp_ttl;

use std::ffi::CString;

/// The index of interface `name`, or `None` when there is none (in the calling thread's
/// network namespace).
pub fn if_nametoindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
