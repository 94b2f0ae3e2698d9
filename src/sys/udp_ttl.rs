//! Receiving UDP datagrams with their IP TTL / IPv6 hop limit, for the GTSM check of
//! single-hop BFD (RFC 5881 §5: received TTL/hop limit must be 255).
//!
//! `IP_RECVTTL` / `IPV6_RECVHOPLIMIT` make the kernel attach the value as ancillary data,
//! which only `recvmsg(2)` returns; neither std, tokio nor socket2 read it.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

fn setsockopt_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is valid for the borrow; the option value is a c_int whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask for the TTL (IPv4, `IP_RECVTTL`) or hop limit (IPv6, `IPV6_RECVHOPLIMIT`) of every
/// received datagram.
pub fn set_recv_ttl(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        setsockopt_int(socket, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// One datagram: payload length, source, and the TTL / hop limit when the kernel gave one.
pub fn recv_with_ttl(
    socket: &impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: all-zero is valid for these plain-data C structs.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut addr as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated length.
    let n = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen
    // and CMSG_DATA points inside the current header's data, which holds a c_int for these
    // two types (read unaligned to be safe).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let is_ttl = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
            if is_ttl
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into the storage.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into the storage.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        f => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("recvmsg: unexpected address family {f}"),
            ));
        }
    };
    Ok((n as usize, from, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn ttl_of_a_loopback_datagram_is_reported() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_recv_ttl(&rx, false).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_ttl(255).unwrap();
        tx.send_to(b"hi", rx.local_addr().unwrap()).unwrap();
        tx.set_ttl(7).unwrap();
        tx.send_to(b"there", rx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 16];
        // MSG_DONTWAIT: loopback delivery is synchronous, the datagrams are queued already.
        let (n, from, ttl) = recv_with_ttl(&rx, &mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from, ttl),
            (&b"hi"[..], tx.local_addr().unwrap(), Some(255))
        );
        let (n, _, ttl) = recv_with_ttl(&rx, &mut buf).unwrap();
        assert_eq!((&buf[..n], ttl), (&b"there"[..], Some(7)));
    }

    #[test]
    fn hop_limit_of_an_ipv6_loopback_datagram_is_reported() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            panic!("IPv6 loopback is needed");
        };
        set_recv_ttl(&rx, true).unwrap();
        let tx = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
        tx.set_unicast_hops_v6(255).unwrap();
        tx.send_to(b"v6", &rx.local_addr().unwrap().into()).unwrap();
        let mut buf = [0u8; 16];
        let (n, _, ttl) = recv_with_ttl(&rx, &mut buf).unwrap();
        assert_eq!((&buf[..n], ttl), (&b"v6"[..], Some(255)));
    }
}
