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

/// The kernel's hostname (uname(2)'s nodename) — works where `/proc/sys` is hidden (the
/// unit's `ProcSubset=pid`). `None` if the call fails or the name is empty.
pub fn hostname() -> Option<String> {
    // SAFETY: `utsname` is plain old data; all-zero is a valid value for uname to fill.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u
        .nodename
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let name = String::from_utf8(bytes).ok()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_matches_the_kernels() {
        let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("procfs");
        assert_eq!(super::hostname().as_deref(), Some(expected.trim()));
    }
}
