//! An AF_PACKET socket that receives only ARP and ICMPv6 Neighbor Solicitation /
//! Advertisement frames, so the daemon's CPU does not grow with the data traffic crossing
//! the host (packet(7), "Linux Socket Filtering" in the kernel's networking docs).
//!
//! Opening order matters: the socket is created with protocol 0, which delivers nothing;
//! the filter is attached; only then `bind` sets protocol ETH_P_ALL and the interface. So no
//! unfiltered frame is ever queued — and the queue is drained after attaching anyway.
//! Not promiscuous: only frames for our MACs, broadcast, and multicast groups joined.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::l2::MacAddr;

// From <linux/if_packet.h>; not all are exported by the libc crate for every target.
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_DROP_MEMBERSHIP: libc::c_int = 2;
const PACKET_MR_MULTICAST: libc::c_ushort = 0;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SO_ATTACH_FILTER: libc::c_int = 26;

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [libc::c_uchar; 8],
}

// Classic BPF opcodes (<linux/filter.h>).
const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Accept ARP, or IPv6 whose next header is ICMPv6 (no extension headers) with type 135/136.
/// Jump offsets count from the next instruction.
pub const FILTER: [libc::sock_filter; 10] = [
    insn(LD_H_ABS, 0, 0, 12),       // 0: A = EtherType
    insn(JEQ_K, 6, 0, 0x0806),      // 1: ARP -> 8 accept
    insn(JEQ_K, 0, 6, 0x86dd),      // 2: not IPv6 -> 9 reject
    insn(LD_B_ABS, 0, 0, 14 + 6),   // 3: A = IPv6 next header
    insn(JEQ_K, 0, 4, 58),          // 4: not ICMPv6 -> 9 reject
    insn(LD_B_ABS, 0, 0, 14 + 40),  // 5: A = ICMPv6 type
    insn(JEQ_K, 1, 0, 135),         // 6: NS -> 8 accept
    insn(JEQ_K, 0, 1, 136),         // 7: NA -> 8 accept, else 9 reject
    insn(RET_K, 0, 0, 0x0004_0000), // 8: accept the whole frame
    insn(RET_K, 0, 0, 0),           // 9: reject
];

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("creating the AF_PACKET socket for {interface}: {source}")]
    Socket {
        interface: String,
        source: io::Error,
    },
    #[error("setsockopt {option} on the packet socket for {interface}: {source}")]
    SetOption {
        option: &'static str,
        interface: String,
        source: io::Error,
    },
    #[error("binding the packet socket to {interface}: {source}")]
    Bind {
        interface: String,
        source: io::Error,
    },
    #[error("draining the packet socket for {interface}: {source}")]
    Drain {
        interface: String,
        source: io::Error,
    },
}

/// A non-blocking, filtered AF_PACKET/SOCK_RAW socket.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    /// For error messages: the interface name, or "all interfaces".
    interface: String,
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr_ll(ifindex: u32, protocol: u16, dst: Option<MacAddr>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as libc::c_ushort;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as libc::c_int;
    if let Some(mac) = dst {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac.0);
    }
    sa
}

impl PacketSocket {
    /// Opens the socket on interface `ifindex` (`0`: all interfaces). `name` is only used in
    /// error messages.
    pub fn open(ifindex: u32, name: &str) -> Result<Self, PacketError> {
        let interface = if ifindex == 0 {
            "all interfaces".to_string()
        } else {
            name.to_string()
        };
        // SAFETY: plain syscall; the returned fd is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(PacketError::Socket {
                interface,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = PacketSocket { fd, interface };
        let opt = |option: &'static str, r: io::Result<()>| {
            r.map_err(|source| PacketError::SetOption {
                option,
                interface: sock.interface.clone(),
                source,
            })
        };

        let prog = libc::sock_fprog {
            len: FILTER.len() as libc::c_ushort,
            filter: FILTER.as_ptr() as *mut libc::sock_filter,
        };
        opt(
            "SO_ATTACH_FILTER",
            setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                &prog,
            ),
        )?;
        // Our own transmissions would otherwise be looped back to us (Linux >= 4.20).
        let one: libc::c_int = 1;
        opt(
            "PACKET_IGNORE_OUTGOING",
            setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                &one,
            ),
        )?;

        let sa = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16, None);
        // SAFETY: `sa` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(PacketError::Bind {
                interface: sock.interface.clone(),
                source: io::Error::last_os_error(),
            });
        }
        sock.drain()?;
        Ok(sock)
    }

    /// Discards whatever is queued (frames that may have arrived before the filter).
    fn drain(&self) -> Result<(), PacketError> {
        let mut buf = [0u8; 2048];
        loop {
            match self.recv(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(PacketError::Drain {
                        interface: self.interface.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn membership(
        &self,
        option: libc::c_int,
        option_name: &'static str,
        ifindex: u32,
        mac: MacAddr,
    ) -> Result<(), PacketError> {
        let mut mr_address = [0u8; 8];
        mr_address[..6].copy_from_slice(&mac.0);
        let mreq = PacketMreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: PACKET_MR_MULTICAST,
            mr_alen: 6,
            mr_address,
        };
        setsockopt(self.fd.as_raw_fd(), libc::SOL_PACKET, option, &mreq).map_err(|source| {
            PacketError::SetOption {
                option: option_name,
                interface: format!("ifindex {ifindex} ({mac})"),
                source,
            }
        })
    }

    /// Receives frames sent to Ethernet multicast `mac` (e.g. a solicited-node group's
    /// 33:33:ff:xx:xx:xx) on `ifindex`. The kernel counts joins; each needs a leave.
    pub fn join_multicast(&self, ifindex: u32, mac: MacAddr) -> Result<(), PacketError> {
        self.membership(PACKET_ADD_MEMBERSHIP, "PACKET_ADD_MEMBERSHIP", ifindex, mac)
    }

    pub fn leave_multicast(&self, ifindex: u32, mac: MacAddr) -> Result<(), PacketError> {
        self.membership(
            PACKET_DROP_MEMBERSHIP,
            "PACKET_DROP_MEMBERSHIP",
            ifindex,
            mac,
        )
    }

    /// Receives one frame into `buf`: its length and the interface it arrived on.
    /// `WouldBlock` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        let mut sa = sockaddr_ll(0, 0, None);
        let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sa` are valid for writes of the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, sa.sll_ifindex as u32))
    }

    /// Sends a complete Ethernet frame out of `ifindex`.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<usize> {
        let dst = crate::l2::MacAddr::read(frame, 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame shorter than 6"))?;
        let sa = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16, Some(dst));
        // SAFETY: `frame` and `sa` are valid for reads of the sizes passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Registers the socket with the current tokio runtime (must be called inside one).
pub fn register_async(sock: PacketSocket) -> io::Result<tokio::io::unix::AsyncFd<PacketSocket>> {
    // SAFETY: PacketSocket owns its fd (OwnedFd), never replaces it, and `as_raw_fd` always
    // returns that same fd until the AsyncFd drops it.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(io::Error::from)
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::{arp, ndp};

    /// A classic BPF interpreter for the subset FILTER uses, to test the program's logic
    /// without a kernel. Out-of-range loads reject, as the kernel does.
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        while let Some(i) = prog.get(pc) {
            let k = i.k as usize;
            match i.code {
                LD_H_ABS => match pkt.get(k..k + 2) {
                    Some(b) => a = u16::from_be_bytes([b[0], b[1]]) as u32,
                    None => return 0,
                },
                LD_B_ABS => match pkt.get(k) {
                    Some(b) => a = *b as u32,
                    None => return 0,
                },
                JEQ_K => {
                    pc += if a == i.k { i.jt } else { i.jf } as usize;
                }
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not in the interpreter"),
            }
            pc += 1;
        }
        panic!("fell off the end of the program")
    }

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn filter_accepts_arp_ns_and_na() {
        let ip6 = "fd00::1".parse().unwrap();
        for f in [
            arp::build_gratuitous(MAC, "10.0.0.1".parse().unwrap()),
            ndp::build_ns(MAC, ip6, "fd00::2".parse().unwrap()),
            ndp::build_unsolicited_na(MAC, ip6),
        ] {
            assert_ne!(run(&FILTER, &f), 0);
        }
    }

    #[test]
    fn filter_rejects_echo_request_ipv4_and_short_frames() {
        let mut echo6 = ndp::build_ns(MAC, "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        echo6[54] = 128;
        let mut ipv4 = arp::build_gratuitous(MAC, "10.0.0.1".parse().unwrap());
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut udp6 = ndp::build_unsolicited_na(MAC, "fd00::1".parse().unwrap());
        udp6[20] = 17;
        for f in [echo6, ipv4, udp6, vec![0x86, 0xdd], vec![]] {
            assert_eq!(run(&FILTER, &f), 0);
        }
    }
}
