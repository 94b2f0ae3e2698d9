//! IPv6 Neighbor Discovery over Ethernet: Neighbor Solicitation and Advertisement
//! (RFC 4861 §4.3, §4.4), decode with the §7.1 validity checks, and build. Pure; never
//! panics on input.
//!
//! ```text
//! Ethernet (14): dst MAC | src MAC | EtherType 0x86dd
//! IPv6 (40):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        | Next Hdr = 58 | Hop Limit=255 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Source Address (16)                           |
//! |                 Destination Address (16)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! Neighbor Solicitation (ICMPv6 type 135):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Type = 135  |   Code = 0    |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           Reserved                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Target Address (16)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options: Source Link-Layer Address (type 1) ...
//! Neighbor Advertisement (ICMPv6 type 136):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Type = 136  |   Code = 0    |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|S|O|                     Reserved                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Target Address (16)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options: Target Link-Layer Address (type 2) ...
//! Link-layer address option (RFC 4861 §4.6.1), Ethernet:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type (1 / 2) | Length = 1    |   MAC address (6) ...         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv6Addr;

use super::{ETH_HEADER_LEN, ETHERTYPE_IPV6, EthHeader, MacAddr};

pub const IPV6_HEADER_LEN: usize = 40;
pub const ICMPV6_NEXT_HEADER: u8 = 58;
pub const TYPE_NS: u8 = 135;
pub const TYPE_NA: u8 = 136;
/// RFC 4861 §7.1.1: NS and NA must arrive with hop limit 255 (proof they were not routed).
pub const HOP_LIMIT: u8 = 255;
/// Type, code, checksum, reserved/flags, target: the fixed part of NS and NA.
pub const MIN_ICMP_LEN: usize = 24;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// ff02::1, all-nodes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    pub target: Ipv6Addr,
    /// Source link-layer address option; absent in DAD probes (source `::`).
    pub source_ll: Option<MacAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    pub target_ll: Option<MacAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdpMessage {
    Solicitation(NeighborSolicitation),
    Advertisement(NeighborAdvertisement),
}

/// A decoded, validated Ethernet frame carrying NS or NA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpFrame {
    pub eth: EthHeader,
    pub src_ip: Ipv6Addr,
    pub dst_ip: Ipv6Addr,
    pub hop_limit: u8,
    pub message: NdpMessage,
}

impl NdpFrame {
    pub fn target(&self) -> Ipv6Addr {
        match self.message {
            NdpMessage::Solicitation(ns) => ns.target,
            NdpMessage::Advertisement(na) => na.target,
        }
    }

    /// A Duplicate Address Detection probe (RFC 4862 §5.4.2): NS from `::`.
    pub fn is_dad(&self) -> bool {
        matches!(self.message, NdpMessage::Solicitation(_)) && self.src_ip.is_unspecified()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdpError {
    #[error("NDP frame truncated: {len} octets, need {need}")]
    Truncated { len: usize, need: usize },
    #[error("not an IPv6 frame: EtherType {0:#06x}")]
    NotIpv6(u16),
    #[error("IPv6 version field is {0}, not 6")]
    BadVersion(u8),
    #[error("IPv6 payload length {payload} exceeds the {available} octets received")]
    PayloadLength { payload: usize, available: usize },
    #[error("IPv6 next header {0} is not ICMPv6 (58); extension headers are not followed")]
    NotIcmpv6(u8),
    #[error("ICMPv6 type {0} is not Neighbor Solicitation (135) or Advertisement (136)")]
    NotNeighborDiscovery(u8),
    #[error("hop limit {0} is not 255 (RFC 4861 §7.1.1): dropped as possibly routed")]
    HopLimit(u8),
    #[error("ICMPv6 code {0} is not 0")]
    Code(u8),
    #[error("ICMPv6 length {0} is below the 24-octet minimum")]
    TooShort(usize),
    #[error("ICMPv6 checksum {got:#06x} is wrong (expected {expected:#06x})")]
    Checksum { got: u16, expected: u16 },
    #[error("target address {0} is multicast")]
    MulticastTarget(Ipv6Addr),
    #[error("NDP option at offset {offset} has length 0 or runs past the message")]
    BadOption { offset: usize },
    #[error("DAD solicitation (source ::) must go to a solicited-node group, not {0}")]
    DadDestination(Ipv6Addr),
    #[error("DAD solicitation (source ::) carries a source link-layer address option")]
    DadWithSourceLinkLayer,
    #[error("advertisement to multicast {0} has the solicited flag set")]
    SolicitedToMulticast(Ipv6Addr),
}

fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// The solicited-node multicast group of `ip` (RFC 4291 §2.7.1): ff02::1:ff00:0/104 plus the
/// low 24 bits.
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn is_solicited_node(ip: &Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// ICMPv6 checksum (RFC 4443 §2.3): one's complement sum over the pseudo-header (RFC 8200
/// §8.1: source, destination, upper-layer length, next header 58) and the message with its
/// checksum field taken as zero.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u16::from_be_bytes([c[0], c[1]]) as u64;
        }
        if let [last] = chunks.remainder() {
            sum += (*last as u64) << 8;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6_NEXT_HEADER]);
    // The checksum field (octets 2..4) counts as zero.
    add(icmp.get(..2).unwrap_or(&[]));
    add(icmp.get(4..).unwrap_or(&[]));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Link-layer address options found in the options area.
struct LinkLayerOptions {
    source: Option<MacAddr>,
    target: Option<MacAddr>,
}

/// Walks the options (RFC 4861 §4.6): each has a non-zero length in units of 8 octets;
/// unknown types are skipped (§7.1.1/§7.1.2 "silently ignored").
fn parse_options(opts: &[u8], base: usize) -> Result<LinkLayerOptions, NdpError> {
    let mut found = LinkLayerOptions {
        source: None,
        target: None,
    };
    let mut at = 0usize;
    while at < opts.len() {
        let bad = NdpError::BadOption { offset: base + at };
        let kind = *opts.get(at).ok_or(bad.clone())?;
        let units = *opts.get(at + 1).ok_or(bad.clone())? as usize;
        let len = units * 8;
        if units == 0 || at + len > opts.len() {
            return Err(bad);
        }
        let body = &opts[at + 2..at + len];
        let mac = MacAddr::read(body, 0);
        match kind {
            OPT_SOURCE_LL if found.source.is_none() => found.source = mac,
            OPT_TARGET_LL if found.target.is_none() => found.target = mac,
            _ => {}
        }
        at += len;
    }
    Ok(found)
}

/// Decodes an Ethernet frame holding an IPv6 NS or NA and applies the validity checks of
/// RFC 4861 §7.1.1 (NS) and §7.1.2 (NA). Extension headers are not followed (an NDP
/// message behind one is reported as `NotIcmpv6`). Trailing Ethernet padding is ignored.
pub fn decode(frame: &[u8]) -> Result<NdpFrame, NdpError> {
    let min = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    let eth = EthHeader::read(frame).ok_or(NdpError::Truncated {
        len: frame.len(),
        need: min,
    })?;
    if eth.ethertype != ETHERTYPE_IPV6 {
        return Err(NdpError::NotIpv6(eth.ethertype));
    }
    let ip = frame.get(ETH_HEADER_LEN..).unwrap_or(&[]);
    if ip.len() < IPV6_HEADER_LEN {
        return Err(NdpError::Truncated {
            len: frame.len(),
            need: min,
        });
    }
    let version = ip[0] >> 4;
    if version != 6 {
        return Err(NdpError::BadVersion(version));
    }
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let next_header = ip[6];
    let hop_limit = ip[7];
    let src_ip = ipv6_at(ip, 8).ok_or(NdpError::Truncated {
        len: frame.len(),
        need: min,
    })?;
    let dst_ip = ipv6_at(ip, 24).ok_or(NdpError::Truncated {
        len: frame.len(),
        need: min,
    })?;
    let available = ip.len() - IPV6_HEADER_LEN;
    if payload > available {
        return Err(NdpError::PayloadLength { payload, available });
    }
    if next_header != ICMPV6_NEXT_HEADER {
        return Err(NdpError::NotIcmpv6(next_header));
    }
    // The payload length trims Ethernet padding off the ICMPv6 message.
    let icmp = &ip[IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload];
    let kind = *icmp.first().ok_or(NdpError::TooShort(icmp.len()))?;
    if kind != TYPE_NS && kind != TYPE_NA {
        return Err(NdpError::NotNeighborDiscovery(kind));
    }
    if hop_limit != HOP_LIMIT {
        return Err(NdpError::HopLimit(hop_limit));
    }
    if icmp.len() < MIN_ICMP_LEN {
        return Err(NdpError::TooShort(icmp.len()));
    }
    if icmp[1] != 0 {
        return Err(NdpError::Code(icmp[1]));
    }
    let got = u16::from_be_bytes([icmp[2], icmp[3]]);
    let expected = icmpv6_checksum(&src_ip, &dst_ip, icmp);
    if got != expected {
        return Err(NdpError::Checksum { got, expected });
    }
    let target = ipv6_at(icmp, 8).ok_or(NdpError::TooShort(icmp.len()))?;
    if target.is_multicast() {
        return Err(NdpError::MulticastTarget(target));
    }
    let opts = parse_options(&icmp[MIN_ICMP_LEN..], MIN_ICMP_LEN)?;
    let message = if kind == TYPE_NS {
        if src_ip.is_unspecified() {
            if !is_solicited_node(&dst_ip) {
                return Err(NdpError::DadDestination(dst_ip));
            }
            if opts.source.is_some() {
                return Err(NdpError::DadWithSourceLinkLayer);
            }
        }
        NdpMessage::Solicitation(NeighborSolicitation {
            target,
            source_ll: opts.source,
        })
    } else {
        let flags = icmp[4];
        let solicited = flags & 0x40 != 0;
        if solicited && dst_ip.is_multicast() {
            return Err(NdpError::SolicitedToMulticast(dst_ip));
        }
        NdpMessage::Advertisement(NeighborAdvertisement {
            router: flags & 0x80 != 0,
            solicited,
            override_flag: flags & 0x20 != 0,
            target,
            target_ll: opts.target,
        })
    };
    Ok(NdpFrame {
        eth,
        src_ip,
        dst_ip,
        hop_limit,
        message,
    })
}

/// Builds Ethernet + IPv6 (hop limit 255, traffic class and flow label 0, as the kernel
/// sends NDP) + the ICMPv6 message `icmp` whose checksum is filled in here.
fn encode(
    eth_dst: MacAddr,
    eth_src: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mut icmp: Vec<u8>,
) -> Vec<u8> {
    let ck = icmpv6_checksum(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut out = Vec::with_capacity(ETH_HEADER_LEN + IPV6_HEADER_LEN + icmp.len());
    EthHeader {
        dst: eth_dst,
        src: eth_src,
        ethertype: ETHERTYPE_IPV6,
    }
    .write(&mut out);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    out.push(ICMPV6_NEXT_HEADER);
    out.push(HOP_LIMIT);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&icmp);
    out
}

fn icmp_message(kind: u8, flags: u8, target: &Ipv6Addr, opt: Option<(u8, MacAddr)>) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    if let Some((t, mac)) = opt {
        m.push(t);
        m.push(1);
        m.extend_from_slice(&mac.0);
    }
    m
}

/// The Neighbor Advertisement answering `ns` for `target` at `our_mac` (RFC 4861 §7.2.4):
/// Solicited set and sent unicast to the solicitor, or — for a DAD probe from `::` —
/// Solicited clear and sent to all-nodes. Override set (we are not an anycast responder),
/// Router clear, Target Link-Layer Address option included, source = the target address.
pub fn build_na_reply(ns: &NdpFrame, target: Ipv6Addr, our_mac: MacAddr) -> Vec<u8> {
    let source_ll = match ns.message {
        NdpMessage::Solicitation(s) => s.source_ll,
        NdpMessage::Advertisement(_) => None,
    };
    let (dst, eth_dst, flags) = if ns.src_ip.is_unspecified() {
        (ALL_NODES, MacAddr::for_ipv6_multicast(&ALL_NODES), 0x20)
    } else {
        (ns.src_ip, source_ll.unwrap_or(ns.eth.src), 0x60)
    };
    let icmp = icmp_message(TYPE_NA, flags, &target, Some((OPT_TARGET_LL, our_mac)));
    encode(eth_dst, our_mac, target, dst, icmp)
}

/// Unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) to all-nodes: Override set,
/// Solicited and Router clear, with the Target Link-Layer Address option.
pub fn build_unsolicited_na(our_mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let icmp = icmp_message(TYPE_NA, 0x20, &ip, Some((OPT_TARGET_LL, our_mac)));
    encode(
        MacAddr::for_ipv6_multicast(&ALL_NODES),
        our_mac,
        ip,
        ALL_NODES,
        icmp,
    )
}

/// A multicast Neighbor Solicitation for `target` from `src` (with the Source Link-Layer
/// Address option unless `src` is `::`), as a host resolving `target` sends it.
pub fn build_ns(our_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(&target);
    let opt = (!src.is_unspecified()).then_some((OPT_SOURCE_LL, our_mac));
    let icmp = icmp_message(TYPE_NS, 0, &target, opt);
    encode(
        MacAddr::for_ipv6_multicast(&group),
        our_mac,
        src,
        group,
        icmp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn a() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }
    fn vip() -> Ipv6Addr {
        "fd00::10:200".parse().unwrap()
    }

    /// Recomputes the checksum after a test edits the ICMPv6 part of a frame.
    fn fix_checksum(frame: &mut [u8]) {
        let src = ipv6_at(frame, 22).unwrap();
        let dst = ipv6_at(frame, 38).unwrap();
        let ck = icmpv6_checksum(&src, &dst, &frame[54..]);
        frame[56..58].copy_from_slice(&ck.to_be_bytes());
    }

    #[test]
    fn ns_round_trips_with_source_link_layer_option() {
        let f = decode(&build_ns(MAC_A, a(), vip())).unwrap();
        assert_eq!(f.src_ip, a());
        assert_eq!(f.dst_ip, solicited_node(&vip()));
        assert_eq!(f.eth.dst.to_string(), "33:33:ff:10:02:00");
        assert_eq!(f.hop_limit, 255);
        assert_eq!(
            f.message,
            NdpMessage::Solicitation(NeighborSolicitation {
                target: vip(),
                source_ll: Some(MAC_A)
            })
        );
        assert!(!f.is_dad());
    }

    #[test]
    fn dad_ns_from_unspecified_has_no_source_option() {
        let f = decode(&build_ns(MAC_A, Ipv6Addr::UNSPECIFIED, vip())).unwrap();
        assert!(f.is_dad());
        assert_eq!(
            f.message,
            NdpMessage::Solicitation(NeighborSolicitation {
                target: vip(),
                source_ll: None
            })
        );
    }

    #[test]
    fn na_reply_is_unicast_solicited_override_not_router() {
        let ns = decode(&build_ns(MAC_A, a(), vip())).unwrap();
        let na = decode(&build_na_reply(&ns, vip(), MAC_B)).unwrap();
        assert_eq!(na.eth.dst, MAC_A);
        assert_eq!(na.eth.src, MAC_B);
        assert_eq!(na.src_ip, vip());
        assert_eq!(na.dst_ip, a());
        assert_eq!(na.hop_limit, 255);
        assert_eq!(
            na.message,
            NdpMessage::Advertisement(NeighborAdvertisement {
                router: false,
                solicited: true,
                override_flag: true,
                target: vip(),
                target_ll: Some(MAC_B),
            })
        );
    }

    #[test]
    fn na_reply_to_dad_goes_to_all_nodes_without_solicited_flag() {
        let ns = decode(&build_ns(MAC_A, Ipv6Addr::UNSPECIFIED, vip())).unwrap();
        let na = decode(&build_na_reply(&ns, vip(), MAC_B)).unwrap();
        assert_eq!(na.dst_ip, ALL_NODES);
        assert_eq!(na.eth.dst.to_string(), "33:33:00:00:00:01");
        let NdpMessage::Advertisement(adv) = na.message else {
            panic!("not an NA")
        };
        assert!(!adv.solicited && adv.override_flag && !adv.router);
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_override() {
        let na = decode(&build_unsolicited_na(MAC_B, vip())).unwrap();
        assert_eq!(na.dst_ip, ALL_NODES);
        let NdpMessage::Advertisement(adv) = na.message else {
            panic!("not an NA")
        };
        assert_eq!(
            adv,
            NeighborAdvertisement {
                router: false,
                solicited: false,
                override_flag: true,
                target: vip(),
                target_ll: Some(MAC_B)
            }
        );
    }

    #[test]
    fn hop_limit_other_than_255_is_dropped() {
        let mut f = build_ns(MAC_A, a(), vip());
        f[21] = 254; // hop limit is not in the checksum
        assert_eq!(decode(&f), Err(NdpError::HopLimit(254)));
    }

    #[test]
    fn bad_checksum_is_dropped() {
        let mut f = build_ns(MAC_A, a(), vip());
        f[56] ^= 0x01;
        assert!(matches!(decode(&f), Err(NdpError::Checksum { .. })));
    }

    #[test]
    fn nonzero_code_is_dropped() {
        let mut f = build_ns(MAC_A, a(), vip());
        f[55] = 1;
        fix_checksum(&mut f);
        assert_eq!(decode(&f), Err(NdpError::Code(1)));
    }

    #[test]
    fn multicast_target_is_dropped() {
        let f = build_ns(MAC_A, a(), "ff02::1".parse().unwrap());
        assert!(matches!(decode(&f), Err(NdpError::MulticastTarget(_))));
    }

    #[test]
    fn icmp_shorter_than_24_is_dropped() {
        let mut f = build_ns(MAC_A, a(), vip());
        f.truncate(54 + 20);
        f[18..20].copy_from_slice(&20u16.to_be_bytes());
        fix_checksum(&mut f);
        assert_eq!(decode(&f), Err(NdpError::TooShort(20)));
    }

    #[test]
    fn zero_length_option_is_dropped() {
        let mut f = build_ns(MAC_A, a(), vip());
        f[54 + 25] = 0;
        fix_checksum(&mut f);
        assert_eq!(decode(&f), Err(NdpError::BadOption { offset: 24 }));
    }

    #[test]
    fn dad_ns_to_unicast_destination_is_dropped() {
        let mut f = build_ns(MAC_A, Ipv6Addr::UNSPECIFIED, vip());
        f[38..54].copy_from_slice(&vip().octets());
        fix_checksum(&mut f);
        assert_eq!(decode(&f), Err(NdpError::DadDestination(vip())));
    }

    #[test]
    fn solicited_na_to_multicast_is_dropped() {
        let mut f = build_unsolicited_na(MAC_B, vip());
        f[54 + 4] = 0x60;
        fix_checksum(&mut f);
        assert!(matches!(decode(&f), Err(NdpError::SolicitedToMulticast(_))));
    }

    #[test]
    fn other_icmpv6_and_next_headers_are_not_ndp() {
        let mut f = build_ns(MAC_A, a(), vip());
        f[54] = 128; // echo request
        fix_checksum(&mut f);
        assert_eq!(decode(&f), Err(NdpError::NotNeighborDiscovery(128)));
        let mut f = build_ns(MAC_A, a(), vip());
        f[20] = 0; // hop-by-hop options header
        assert_eq!(decode(&f), Err(NdpError::NotIcmpv6(0)));
    }

    #[test]
    fn ethernet_padding_after_payload_is_ignored() {
        let mut f = build_unsolicited_na(MAC_B, vip());
        f.extend_from_slice(&[0xee; 10]);
        assert!(decode(&f).is_ok());
    }

    #[test]
    fn truncated_frame_is_an_error_at_every_length() {
        let f = build_ns(MAC_A, a(), vip());
        for len in 0..f.len() {
            assert!(decode(&f[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn solicited_node_group_keeps_low_24_bits() {
        let ip: Ipv6Addr = "2001:db8::abcd:1234:5678".parse().unwrap();
        assert_eq!(
            solicited_node(&ip),
            "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap()
        );
    }
}
