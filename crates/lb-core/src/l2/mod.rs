//! Layer 2, the pure parts: ARP (RFC 826) and NDP (RFC 4861) codecs, the responder core that
//! decides who answers for which IP, and the choice of interface for an IP. The packet socket
//! that moves the bytes is `lb::l2::socket`; `lb::l2`'s module comment walks the whole chain
//! of "who answers ARP for this IP".

pub mod arp;
pub mod iface;
pub mod ndp;
pub mod responder;

pub use crate::model::iface::{MacAddr, MacParseError};

/// Ethernet header length (no VLAN tag: AF_PACKET hands us frames with the tag stripped).
pub const ETH_HEADER_LEN: usize = 14;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

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
    fn parse_hex_skips_comments_and_whitespace() {
        assert_eq!(
            parse_hex("# x\n0a 0B\nff\n").unwrap(),
            vec![0x0a, 0x0b, 0xff]
        );
        assert_eq!(parse_hex("abc"), Err(HexError::OddLength(3)));
        assert!(parse_hex("zz").is_err());
    }
}
