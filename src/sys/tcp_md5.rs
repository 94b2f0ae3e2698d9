//! TCP-MD5 signatures (RFC 2385) with the Linux `TCP_MD5SIG` socket option.
//!
//! The key is bound to the peer's address. On an active socket set it before `connect`; on
//! a listener set one key per peer before the peer dials (the kernel then signs the SYN-ACK
//! and checks every segment of the accepted connection). Segments without a valid signature
//! are dropped by the kernel and counted (`TCPMD5Failure` / `TCPMD5NotFound` in `nstat`);
//! the application sees nothing but a connection that never comes up.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

/// `TCP_MD5SIG_MAXKEYLEN` (linux/tcp.h).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` (linux/tcp.h); with `TCP_MD5SIG` the flags, prefix length and
/// ifindex fields are ignored and must be zero.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

#[derive(Debug, thiserror::Error)]
pub enum Md5Error {
    #[error("TCP_MD5SIG key for peer {peer} is {len} octets long: expected at most {MAX_KEY_LEN}")]
    KeyTooLong { peer: IpAddr, len: usize },
    #[error("setsockopt(IPPROTO_TCP, TCP_MD5SIG) for peer {peer}: {source}")]
    Setsockopt { peer: IpAddr, source: io::Error },
}

/// Install (non-empty `key`) or remove (empty `key`) the MD5 key for `peer` on `socket`.
/// The socket's family must match the peer's (an IPv4 peer on an IPv6 dual-stack socket
/// must be given as `::ffff:a.b.c.d`; lb uses one listener per family instead).
pub fn set_key(socket: &impl AsFd, peer: IpAddr, key: &[u8]) -> Result<(), Md5Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(Md5Error::KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    let storage: socket2::SockAddr = SocketAddr::new(peer, 0).into();
    // SAFETY: all-zero is a valid value for this plain-data C struct.
    let mut sig: TcpMd5Sig = unsafe { mem::zeroed() };
    let addr_len = (storage.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `storage.as_ptr()` points to `storage.len()` valid bytes of a sockaddr; we copy
    // at most the size of the destination `sockaddr_storage`; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            storage.as_ptr() as *const u8,
            &mut sig.addr as *mut libc::sockaddr_storage as *mut u8,
            addr_len,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is a valid open descriptor borrowed for the call; `sig` is a properly
    // laid-out `struct tcp_md5sig` that lives across the call and whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Md5Error::Setsockopt {
            peer,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn struct_layout_matches_the_kernel() {
        // linux/tcp.h: 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn key_can_be_set_and_removed_on_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        set_key(&l, peer, b"secret").unwrap();
        set_key(&l, peer, b"").unwrap();
    }

    #[test]
    fn overlong_key_is_refused_naming_the_peer() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        let err = set_key(&l, peer, &[b'x'; 81]).unwrap_err();
        assert!(err.to_string().contains("127.0.0.2"), "{err}");
    }

    #[test]
    fn wrong_family_fails_with_the_option_and_peer_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "::1".parse().unwrap();
        let err = set_key(&l, peer, b"k").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("TCP_MD5SIG") && text.contains("::1"),
            "{text}"
        );
    }

    #[test]
    fn matching_keys_connect_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        set_key(&l, "127.0.0.1".parse().unwrap(), b"pw").unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_key(&s, "127.0.0.1".parse().unwrap(), b"pw").unwrap();
        s.connect(&addr.into()).unwrap();
        let (_c, _) = l.accept().unwrap();
    }

    #[test]
    fn mismatched_keys_never_connect() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        set_key(&l, "127.0.0.1".parse().unwrap(), b"right").unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_key(&s, "127.0.0.1".parse().unwrap(), b"wrong").unwrap();
        let r = s.connect_timeout(&addr.into(), std::time::Duration::from_millis(300));
        assert!(r.is_err(), "a SYN signed with the wrong key was accepted");
    }
}
