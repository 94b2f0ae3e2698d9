//! The only place `unsafe` is allowed: socket options and filters libc has no safe API for.
//!
//! - `packet`: the AF_PACKET socket that receives only ARP and NS/NA frames (classic BPF).
//! - `netns`: entering a network namespace on the current thread (tests and the lab).
//! - `tcp_md5`: TCP-MD5 signature keys (RFC 2385) on BGP sockets.
//! - `udp_ttl`: UDP receive with the TTL / hop limit (GTSM for single-hop BFD).
//! - [`single_malloc_arena`]: glibc's allocator tuned for a small daemon.

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

/// One malloc arena for the whole process. glibc gives each thread that allocates its own
/// arena (up to 8 per core), and each keeps freed memory of its own: with 10,000 Services
/// that cost lbd ~8 MiB of RSS for nothing, and lbd allocates far too little for arena
/// contention to matter. Call before any thread starts.
pub fn single_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive value.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if ok != 1 {
        // Not fatal: only memory use is at stake.
        eprintln!("lbd: mallopt(M_ARENA_MAX, 1) failed; continuing with glibc's default arenas");
    }
}

/// `SO_RCVBUFFORCE`: a receive buffer of `size` bytes even past `net.core.rmem_max` (needs
/// `CAP_NET_ADMIN`; the raft-lite transport falls back to `SO_RCVBUF` without it).
pub fn force_recv_buffer(socket: &impl std::os::fd::AsFd, size: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is valid for the borrow; the option value is a c_int whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
