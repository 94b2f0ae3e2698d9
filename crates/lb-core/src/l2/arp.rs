//! ARP over Ethernet for IPv4 (RFC 826), decode and build. Pure; never panics on input.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Ethernet destination MAC (6 octets)                |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  Ethernet source MAC (6)      +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     EtherType = 0x0806        |  HTYPE = 1 (Ethernet)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     PTYPE = 0x0800            | HLEN = 6      | PLEN = 4      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  OPER (1 request, 2 reply)    |  SHA: sender MAC (6) ...      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  SPA: sender IPv4 (4)                                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  THA: target MAC (6) ...                                      |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |  TPA: target IPv4 (4) ...     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                               |  (padding to 60 octets)       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Gratuitous ARP (RFC 5227 §3 "ARP Announcement") is a request with SPA = TPA = the IP,
//! broadcast; iputils `arping -U` and MetalLB put ff:ff:ff:ff:ff:ff in THA, which we copy.

use std::net::Ipv4Addr;

use super::{ETH_HEADER_LEN, ETHERTYPE_ARP, EthHeader, MacAddr};

/// Length of the ARP payload for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// Length of a built frame. Not padded to 60: the driver pads on transmit, as for the
/// kernel's own replies (`arp_create`).
pub const FRAME_LEN: usize = ETH_HEADER_LEN + ARP_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// A decoded Ethernet frame carrying ARP for IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth: EthHeader,
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    #[error("ARP frame truncated: {len} octets, need {need}")]
    Truncated { len: usize, need: usize },
    #[error("not an ARP frame: EtherType {0:#06x}")]
    NotArp(u16),
    #[error("ARP hardware type {htype} / length {hlen} is not Ethernet (1 / 6)")]
    NotEthernet { htype: u16, hlen: u8 },
    #[error("ARP protocol type {ptype:#06x} / length {plen} is not IPv4 (0x0800 / 4)")]
    NotIpv4 { ptype: u16, plen: u8 },
    #[error("ARP operation {0} is neither request (1) nor reply (2)")]
    UnknownOperation(u16),
}

fn be16(b: &[u8], at: usize) -> u16 {
    // Callers check the length first; the fallback keeps this total anyway.
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    match b.get(at..at + 4) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

/// Decodes an Ethernet frame holding an ARP packet. Trailing padding is ignored.
pub fn decode(frame: &[u8]) -> Result<ArpFrame, ArpError> {
    let need = FRAME_LEN;
    let eth = EthHeader::read(frame).ok_or(ArpError::Truncated {
        len: frame.len(),
        need,
    })?;
    if eth.ethertype != ETHERTYPE_ARP {
        return Err(ArpError::NotArp(eth.ethertype));
    }
    if frame.len() < need {
        return Err(ArpError::Truncated {
            len: frame.len(),
            need,
        });
    }
    let a = &frame[ETH_HEADER_LEN..];
    let htype = be16(a, 0);
    let ptype = be16(a, 2);
    let (hlen, plen) = (a[4], a[5]);
    if htype != 1 || hlen != 6 {
        return Err(ArpError::NotEthernet { htype, hlen });
    }
    if ptype != 0x0800 || plen != 4 {
        return Err(ArpError::NotIpv4 { ptype, plen });
    }
    let op = match be16(a, 6) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        other => return Err(ArpError::UnknownOperation(other)),
    };
    let short = || ArpError::Truncated {
        len: frame.len(),
        need,
    };
    Ok(ArpFrame {
        eth,
        op,
        sender_mac: MacAddr::read(a, 8).ok_or_else(short)?,
        sender_ip: ipv4_at(a, 14),
        target_mac: MacAddr::read(a, 18).ok_or_else(short)?,
        target_ip: ipv4_at(a, 24),
    })
}

impl ArpFrame {
    /// A gratuitous ARP (request or reply form): the sender announces its own address.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// An ARP probe (RFC 5227 §2.1.1): sender IP 0.0.0.0, asking whether anyone uses the target.
    pub fn is_probe(&self) -> bool {
        self.op == ArpOp::Request && self.sender_ip.is_unspecified()
    }

    /// Encodes the frame (42 octets, unpadded).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_LEN);
        self.eth.write(&mut out);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&0x0800u16.to_be_bytes());
        out.push(6);
        out.push(4);
        out.extend_from_slice(&self.op.code().to_be_bytes());
        out.extend_from_slice(&self.sender_mac.0);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac.0);
        out.extend_from_slice(&self.target_ip.octets());
        out
    }
}

/// The reply to `request` saying `request.target_ip` is at `our_mac` (RFC 826 "swap the
/// sender and target fields, put the local addresses in sender, set op to reply"), sent
/// unicast to the requester's hardware address, as the Linux kernel does.
pub fn build_reply(request: &ArpFrame, our_mac: MacAddr) -> Vec<u8> {
    ArpFrame {
        eth: EthHeader {
            dst: request.sender_mac,
            src: our_mac,
            ethertype: ETHERTYPE_ARP,
        },
        op: ArpOp::Reply,
        sender_mac: our_mac,
        sender_ip: request.target_ip,
        target_mac: request.sender_mac,
        target_ip: request.sender_ip,
    }
    .encode()
}

/// Gratuitous ARP in request form (as `arping -U` and MetalLB send): broadcast, SPA = TPA =
/// `ip`, THA = broadcast. Updates existing entries in neighbours' caches.
pub fn build_gratuitous(our_mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    ArpFrame {
        eth: EthHeader {
            dst: MacAddr::BROADCAST,
            src: our_mac,
            ethertype: ETHERTYPE_ARP,
        },
        op: ArpOp::Request,
        sender_mac: our_mac,
        sender_ip: ip,
        target_mac: MacAddr::BROADCAST,
        target_ip: ip,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn request() -> ArpFrame {
        ArpFrame {
            eth: EthHeader {
                dst: MacAddr::BROADCAST,
                src: MAC_A,
                ethertype: ETHERTYPE_ARP,
            },
            op: ArpOp::Request,
            sender_mac: MAC_A,
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 200),
        }
    }

    #[test]
    fn request_encodes_and_decodes_round_trip() {
        let bytes = request().encode();
        assert_eq!(bytes.len(), 42);
        assert_eq!(decode(&bytes), Ok(request()));
    }

    #[test]
    fn decode_ignores_ethernet_padding() {
        let mut bytes = request().encode();
        bytes.resize(60, 0);
        assert_eq!(decode(&bytes), Ok(request()));
    }

    #[test]
    fn reply_swaps_sender_and_target_and_goes_unicast() {
        let reply = decode(&build_reply(&request(), MAC_B)).unwrap();
        assert_eq!(reply.op, ArpOp::Reply);
        assert_eq!(reply.eth.dst, MAC_A);
        assert_eq!(reply.eth.src, MAC_B);
        assert_eq!(reply.sender_mac, MAC_B);
        assert_eq!(reply.sender_ip, Ipv4Addr::new(10, 0, 0, 200));
        assert_eq!(reply.target_mac, MAC_A);
        assert_eq!(reply.target_ip, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn gratuitous_is_broadcast_request_with_sender_equal_target() {
        let g = decode(&build_gratuitous(MAC_B, Ipv4Addr::new(10, 0, 0, 200))).unwrap();
        assert_eq!(g.op, ArpOp::Request);
        assert_eq!(g.eth.dst, MacAddr::BROADCAST);
        assert!(g.is_gratuitous());
        assert!(!request().is_gratuitous());
    }

    #[test]
    fn truncated_frame_is_an_error_at_every_length() {
        let bytes = request().encode();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn wrong_fields_are_named_in_errors() {
        let mut b = request().encode();
        b[12] = 0x08;
        b[13] = 0x00;
        assert_eq!(decode(&b), Err(ArpError::NotArp(0x0800)));
        let mut b = request().encode();
        b[15] = 6;
        assert!(matches!(
            decode(&b),
            Err(ArpError::NotEthernet { htype: 6, .. })
        ));
        let mut b = request().encode();
        b[19] = 16;
        assert!(matches!(
            decode(&b),
            Err(ArpError::NotIpv4 { plen: 16, .. })
        ));
        let mut b = request().encode();
        b[21] = 3;
        assert_eq!(decode(&b), Err(ArpError::UnknownOperation(3)));
    }

    #[test]
    fn probe_is_recognised_by_unspecified_sender() {
        let mut p = request();
        p.sender_ip = Ipv4Addr::UNSPECIFIED;
        assert!(p.is_probe());
        assert!(!request().is_probe());
    }
}
