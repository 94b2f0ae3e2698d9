//! Layer 2: ARP (RFC 826) and NDP (RFC 4861) codecs, the responder core that decides who
//! answers for which IP, the choice of interface for an IP, and the tokio wrapper around the
//! filtered packet socket.
//!
//! `arp`, `ndp`, `iface` and `responder` are pure (no sockets, no clock); `socket` moves bytes.

pub mod arp;
pub mod iface;
pub mod ndp;
pub mod responder;
pub mod socket;

use std::fmt;

/// Ethernet header length (no VLAN tag: AF_PACKET hands us frames with the tag stripped).
pub const ETH_HEADER_LEN: usize = 14;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit (I/G) set: broadcast or multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Reads 6 bytes at `at`; `None` when `bytes` is too short.
    pub(crate) fn read(bytes: &[u8], at: usize) -> Option<MacAddr> {
        let s = bytes.get(at..at.checked_add(6)?)?;
        let mut m = [0u8; 6];
        m.copy_from_slice(s);
        Some(MacAddr(m))
    }

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464 §7):
    /// 33:33 followed by the group's last 32 bits.
    pub fn for_ipv6_multicast(group: &std::net::Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in m.iter_mut() {
            let p = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if p.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(m))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex pairs separated by ':'")]
pub struct MacParseError(pub String);

/// The Ethernet header of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl EthHeader {
    pub(crate) fn read(frame: &[u8]) -> Option<EthHeader> {
        let dst = MacAddr::read(frame, 0)?;
        let src = MacAddr::read(frame, 6)?;
        let et = frame.get(12..14)?;
        Some(EthHeader {
            dst,
            src,
            ethertype: u16::from_be_bytes([et[0], et[1]]),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst.0);
        out.extend_from_slice(&self.src.0);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
    }
}

/// Parses a hex dump (whitespace, newlines and `#` comment lines ignored), as the fixtures
/// in `tests/fixtures/l2/` are stored.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::OddLength(digits.len()));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let s = std::str::from_utf8(pair).map_err(|_| HexError::NotHex(i * 2))?;
            u8::from_str_radix(s, 16).map_err(|_| HexError::NotHex(i * 2))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("hex dump has an odd number of digits ({0})")]
    OddLength(usize),
    #[error("hex dump has a non-hex digit near digit {0}")]
    NotHex(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints_round_trip() {
        let m: MacAddr = "02:00:5e:0a:0B:ff".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x5e, 0x0a, 0x0b, 0xff]);
        assert_eq!(m.to_string(), "02:00:5e:0a:0b:ff");
        assert!("02:00:5e:0a:0b".parse::<MacAddr>().is_err());
        assert!("02:00:5e:0a:0b:ff:00".parse::<MacAddr>().is_err());
        assert!("02:00:5e:0a:0b:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn solicited_node_group_maps_to_33_33_ff_mac() {
        let g: std::net::Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
        assert_eq!(
            MacAddr::for_ipv6_multicast(&g).to_string(),
            "33:33:ff:00:00:10"
        );
    }

    #[test]
    fn parse_hex_skips_comments_and_whitespace() {
        assert_eq!(
            parse_hex("# x\n0a 0B\nff\n").unwrap(),
            vec![0x0a, 0x0b, 0xff]
        );
        assert_eq!(parse_hex("abc"), Err(HexError::OddLength(3)));
        assert!(parse_hex("zz").is_err());
    }
}
