//! Parsers for the scalar notations of lb.toml: durations, address ranges, BGP communities and
//! service ports. Pure functions; each error says what was expected. The MetalLB importer can
//! reuse them to check what it emits.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

use crate::model::{Community, IpFamily, IpRange, LargeCommunity, Protocol, ServicePort};

// ---------------------------------------------------------------------------------------------
// Durations

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error(
        "{0:?} is not a duration: expected whole numbers with units ms, s, m, h (e.g. \"50ms\", \"3s\", \"1m30s\")"
    )]
    Syntax(String),
    #[error(
        "{0:?} repeats or misorders units: expected units from largest to smallest, each once (e.g. \"1h30m\")"
    )]
    UnitOrder(String),
    #[error("{0:?} is too long: expected at most a few days")]
    Overflow(String),
}

/// Parses `"50ms"`, `"3s"`, `"1m30s"`, `"2h"`: one or more `<digits><unit>` parts, units
/// `h`, `m`, `s`, `ms` from largest to smallest, each at most once. No whitespace, no fractions.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    // Cap at 100 days: anything longer is a typo, and the cap keeps arithmetic far from overflow.
    const MAX_MS: u64 = 100 * 24 * 3_600_000;
    let syntax = || DurationError::Syntax(text.to_string());
    if text.is_empty() {
        return Err(syntax());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen; the next must come strictly after it.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(syntax());
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let index = UNITS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(syntax)?;
        if last_unit.is_some_and(|last| index <= last) {
            return Err(DurationError::UnitOrder(text.to_string()));
        }
        last_unit = Some(index);
        let value: u64 = number
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_string()))?;
        total = value
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .filter(|ms| *ms <= MAX_MS)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration in the notation [`parse_duration`] reads (`1m30s`, `150ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// `Display` adapter for [`format_duration`].
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// Address ranges

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RangeError {
    #[error(
        "{0:?} is not an address: expected a CIDR (10.0.0.0/24), an IP, or a range (10.0.0.10-10.0.0.20)"
    )]
    Syntax(String),
    #[error("prefix length /{len} of {text:?} is out of range: expected at most /{max}")]
    PrefixLength { text: String, len: u8, max: u8 },
    #[error("{text:?} has host bits set: expected the network address {network}")]
    HostBits { text: String, network: String },
    #[error("range {text:?} ends before it starts: expected the lower address first")]
    Reversed { text: String },
    #[error("range {text:?} mixes IPv4 and IPv6: expected both ends of one family")]
    MixedFamilies { text: String },
}

/// Parses a pool entry: a CIDR (`10.0.0.0/24`, `fd00::/120`), a single IP, or a range `a-b`
/// (whitespace around `-` allowed). A CIDR with host bits set is an error naming the network.
pub fn parse_ip_range(text: &str) -> Result<IpRange, RangeError> {
    let trimmed = text.trim();
    let syntax = || RangeError::Syntax(text.to_string());
    if let Some((a, b)) = trimmed.split_once('-') {
        let first: IpAddr = a.trim().parse().map_err(|_| syntax())?;
        let last: IpAddr = b.trim().parse().map_err(|_| syntax())?;
        if IpFamily::of(&first) != IpFamily::of(&last) {
            return Err(RangeError::MixedFamilies {
                text: text.to_string(),
            });
        }
        return IpRange::new(first, last).ok_or(RangeError::Reversed {
            text: text.to_string(),
        });
    }
    if let Some((addr, len)) = trimmed.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        let max = max_prefix(IpFamily::of(&ip));
        if len > max {
            return Err(RangeError::PrefixLength {
                text: text.to_string(),
                len,
                max,
            });
        }
        let (first, last) = cidr_bounds(&ip, len);
        if crate::model::ip_to_u128(&ip) != first {
            return Err(RangeError::HostBits {
                text: text.to_string(),
                network: format!("{}/{len}", u128_to_ip(first, IpFamily::of(&ip))),
            });
        }
        let family = IpFamily::of(&ip);
        return IpRange::new(u128_to_ip(first, family), u128_to_ip(last, family))
            .ok_or_else(syntax);
    }
    let ip: IpAddr = trimmed.parse().map_err(|_| syntax())?;
    Ok(IpRange {
        first: ip,
        last: ip,
    })
}

pub fn max_prefix(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

/// First and last address (as integers) of the prefix `ip/len`.
fn cidr_bounds(ip: &IpAddr, len: u8) -> (u128, u128) {
    let bits = max_prefix(IpFamily::of(ip));
    let value = crate::model::ip_to_u128(ip);
    let host_bits = u32::from(bits - len.min(bits));
    let host_mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (value & !host_mask, value | host_mask)
}

fn u128_to_ip(value: u128, family: IpFamily) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 values always fit in 32 bits here.
        IpFamily::V4 => IpAddr::from(std::net::Ipv4Addr::from(value as u32)),
        IpFamily::V6 => IpAddr::from(std::net::Ipv6Addr::from(value)),
    }
}

/// Length of the longest prefix that covers the whole range (for a CIDR, its own length).
pub fn covering_prefix_len(range: &IpRange) -> u8 {
    let bits = max_prefix(range.family());
    let diff = crate::model::ip_to_u128(&range.first) ^ crate::model::ip_to_u128(&range.last);
    // Leading zeros of the XOR, counted within the family's width.
    let common = diff.leading_zeros().saturating_sub(128 - u32::from(bits));
    // `common` is at most `bits` (<= 128), so it fits in u8.
    u8::try_from(common).unwrap_or(bits)
}

// ---------------------------------------------------------------------------------------------
// BGP communities

/// A community written in lb.toml: RFC 1997 or RFC 8092 large.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnyCommunity {
    Standard(Community),
    Large(LargeCommunity),
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CommunityError {
    #[error(
        "{0:?} is not a community: expected asn:value (two numbers up to 65535), global:local1:local2 (three numbers up to 4294967295), a well-known name (no-export, no-advertise, no-export-subconfed, local-as, no-peer, blackhole, graceful-shutdown) or an alias from [bgp_communities]"
    )]
    Syntax(String),
}

/// The RFC 1997 / RFC 7999 / RFC 8326 well-known communities by name.
pub fn well_known_community(name: &str) -> Option<Community> {
    Some(match name.to_ascii_lowercase().as_str() {
        "no-export" => Community::NO_EXPORT,
        "no-advertise" => Community::NO_ADVERTISE,
        "no-export-subconfed" | "local-as" => Community::NO_EXPORT_SUBCONFED,
        "no-peer" => Community::NO_PEER,
        "blackhole" => Community::BLACKHOLE,
        "graceful-shutdown" => Community::GRACEFUL_SHUTDOWN,
        _ => return None,
    })
}

/// Parses `asn:value`, `global:local1:local2` or a well-known name (aliases are resolved by
/// the caller).
pub fn parse_community(text: &str) -> Result<AnyCommunity, CommunityError> {
    if let Some(c) = well_known_community(text) {
        return Ok(AnyCommunity::Standard(c));
    }
    let err = || CommunityError::Syntax(text.to_string());
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| -> Result<u32, CommunityError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<u32>().map_err(|_| err())
    };
    match parts.as_slice() {
        [asn, value] => {
            let asn = u16::try_from(number(asn)?).map_err(|_| err())?;
            let value = u16::try_from(number(value)?).map_err(|_| err())?;
            Ok(AnyCommunity::Standard(Community(
                (u32::from(asn) << 16) | u32::from(value),
            )))
        }
        [global, local1, local2] => Ok(AnyCommunity::Large(LargeCommunity {
            global: number(global)?,
            local1: number(local1)?,
            local2: number(local2)?,
        })),
        _ => Err(err()),
    }
}

// ---------------------------------------------------------------------------------------------
// Service ports

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PortError {
    #[error(
        "{0:?} is not a port: expected PORT/PROTOCOL with PORT 1-65535 and PROTOCOL tcp, udp or sctp (e.g. \"6443/tcp\")"
    )]
    Syntax(String),
}

/// Parses `"6443/tcp"` (protocol case-insensitive: tcp, udp, sctp).
pub fn parse_service_port(text: &str) -> Result<ServicePort, PortError> {
    let err = || PortError::Syntax(text.to_string());
    let (port, proto) = text.split_once('/').ok_or_else(err)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let port: u16 = port.parse().map_err(|_| err())?;
    if port == 0 {
        return Err(err());
    }
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return Err(err()),
    };
    Ok(ServicePort { protocol, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn durations_in_every_unit_parse() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "", "5", "s", "1.5s", " 3s", "3 s", "3sec", "-1s", "3S", "1m1h", "1s1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn durations_format_back_to_their_notation() {
        for text in ["0s", "50ms", "3s", "1m30s", "2h", "1h2m3s4ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn cidr_becomes_inclusive_range() {
        let r = parse_ip_range("10.0.0.0/24").unwrap();
        assert_eq!((r.first, r.last), (ip("10.0.0.0"), ip("10.0.0.255")));
        let r = parse_ip_range("fd00:10::/120").unwrap();
        assert_eq!((r.first, r.last), (ip("fd00:10::"), ip("fd00:10::ff")));
        let r = parse_ip_range("0.0.0.0/0").unwrap();
        assert_eq!(r.last, ip("255.255.255.255"));
        let r = parse_ip_range("::/0").unwrap();
        assert_eq!(r.len(), u128::MAX);
    }

    #[test]
    fn single_ip_and_spaced_range_parse() {
        let r = parse_ip_range("10.0.0.7").unwrap();
        assert_eq!((r.first, r.last), (ip("10.0.0.7"), ip("10.0.0.7")));
        let r = parse_ip_range("10.0.0.10 - 10.0.0.20").unwrap();
        assert_eq!((r.first, r.last), (ip("10.0.0.10"), ip("10.0.0.20")));
    }

    #[test]
    fn cidr_with_host_bits_names_the_network() {
        let err = parse_ip_range("10.0.0.1/24").unwrap_err();
        assert_eq!(
            err,
            RangeError::HostBits {
                text: "10.0.0.1/24".into(),
                network: "10.0.0.0/24".into()
            }
        );
        assert!(
            err.to_string()
                .contains("expected the network address 10.0.0.0/24")
        );
    }

    #[test]
    fn reversed_and_mixed_ranges_are_rejected() {
        assert!(matches!(
            parse_ip_range("10.0.0.9-10.0.0.1"),
            Err(RangeError::Reversed { .. })
        ));
        assert!(matches!(
            parse_ip_range("10.0.0.1-fd00::1"),
            Err(RangeError::MixedFamilies { .. })
        ));
        assert!(matches!(
            parse_ip_range("10.0.0.0/33"),
            Err(RangeError::PrefixLength {
                len: 33,
                max: 32,
                ..
            })
        ));
        assert!(matches!(
            parse_ip_range("10.0.0/24"),
            Err(RangeError::Syntax(_))
        ));
        assert!(matches!(
            parse_ip_range("10.0.0.0/"),
            Err(RangeError::Syntax(_))
        ));
    }

    #[test]
    fn covering_prefix_of_ranges() {
        let len = |s: &str| covering_prefix_len(&parse_ip_range(s).unwrap());
        assert_eq!(len("10.0.0.0/24"), 24);
        assert_eq!(len("10.0.0.7"), 32);
        assert_eq!(len("10.0.0.1-10.0.0.6"), 29);
        assert_eq!(len("10.0.0.255-10.0.1.0"), 23);
        assert_eq!(len("fd00::/120"), 120);
        assert_eq!(len("::/0"), 0);
    }

    #[test]
    fn communities_parse_in_all_notations() {
        assert_eq!(
            parse_community("64500:100"),
            Ok(AnyCommunity::Standard(Community((64500 << 16) | 100)))
        );
        assert_eq!(
            parse_community("no-export"),
            Ok(AnyCommunity::Standard(Community::NO_EXPORT))
        );
        assert_eq!(
            parse_community("local-as"),
            Ok(AnyCommunity::Standard(Community::NO_EXPORT_SUBCONFED))
        );
        assert_eq!(
            parse_community("4200000000:1:2"),
            Ok(AnyCommunity::Large(LargeCommunity {
                global: 4_200_000_000,
                local1: 1,
                local2: 2
            }))
        );
        for bad in [
            "65536:1", "1:65536", "1", "a:b", "1:2:3:4", "1::2", "-1:2", "+1:2",
        ] {
            assert!(parse_community(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn service_ports_parse() {
        assert_eq!(
            parse_service_port("6443/tcp"),
            Ok(ServicePort {
                protocol: Protocol::Tcp,
                port: 6443
            })
        );
        assert_eq!(
            parse_service_port("53/UDP").map(|p| p.protocol),
            Ok(Protocol::Udp)
        );
        for bad in ["6443", "0/tcp", "70000/tcp", "80/http", "/tcp", "+80/tcp"] {
            assert!(parse_service_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
