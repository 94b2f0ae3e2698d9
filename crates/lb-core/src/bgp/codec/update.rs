//! UPDATE (RFC 4271 §4.3) with path attributes, multiprotocol NLRI (RFC 4760) and the
//! revised error handling of RFC 7606.
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//!
//! Prefix (withdrawn routes, NLRI)    Path attribute
//! +---------------------------+      0                   1
//! |   Length (1 octet, bits)  |      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +---------------------------+     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Prefix (ceil(len/8))    |     |O|T|P|E|  0000 |  Type Code    |
//! +---------------------------+     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!                                   | Length (1 octet, 2 if E)      |
//!                                   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!                                   | Value (variable)              |
//!                                   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! MP_REACH_NLRI (type 14)                  MP_UNREACH_NLRI (type 15)
//! +-------------------------------------+  +-----------------------------------+
//! | AFI (2) | SAFI (1)                  |  | AFI (2) | SAFI (1)                |
//! | Length of Next Hop (1)              |  | Withdrawn Routes (variable)       |
//! | Next Hop (IPv6: global [+ link-local])  +-----------------------------------+
//! | Reserved (1)                        |
//! | NLRI (variable)                     |
//! +-------------------------------------+
//!
//! AS_PATH / AS4_PATH segment: type (1: AS_SET, 2: AS_SEQUENCE, 3/4: confederation),
//! count (1), then count ASNs of 2 octets, or 4 octets with the 4-octet AS capability.
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use thiserror::Error;

use super::notification::{ErrorCode, Notification, UpdateSubcode};
use super::{CodecOptions, EncodeError, Family, Reader};
use crate::model::{Community, LargeCommunity};

/// RFC 6793 §9: the 2-octet stand-in for a 4-octet ASN.
pub const AS_TRANS: u16 = 23456;

/// Path attribute type codes (IANA).
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}
use attr_type as t;

/// Attribute flags octet (RFC 4271 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrFlags(pub u8);

impl AttrFlags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
    pub const WELL_KNOWN: AttrFlags = AttrFlags(Self::TRANSITIVE);
    pub const OPTIONAL_TRANSITIVE: AttrFlags = AttrFlags(Self::OPTIONAL | Self::TRANSITIVE);
    pub const OPTIONAL_NON_TRANSITIVE: AttrFlags = AttrFlags(Self::OPTIONAL);

    pub fn optional(self) -> bool {
        self.0 & Self::OPTIONAL != 0
    }
    pub fn transitive(self) -> bool {
        self.0 & Self::TRANSITIVE != 0
    }
    pub fn partial(self) -> bool {
        self.0 & Self::PARTIAL != 0
    }
    pub fn extended_length(self) -> bool {
        self.0 & Self::EXTENDED_LENGTH != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AsSegmentType {
    Set,
    Sequence,
    ConfedSequence,
    ConfedSet,
}

impl AsSegmentType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => AsSegmentType::Set,
            2 => AsSegmentType::Sequence,
            3 => AsSegmentType::ConfedSequence,
            4 => AsSegmentType::ConfedSet,
            _ => return None,
        })
    }
    fn to_u8(self) -> u8 {
        match self {
            AsSegmentType::Set => 1,
            AsSegmentType::Sequence => 2,
            AsSegmentType::ConfedSequence => 3,
            AsSegmentType::ConfedSet => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: AsSegmentType,
    pub asns: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// An AS_SEQUENCE of `asns` (empty path if `asns` is empty).
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Any ASN that does not fit 2 octets (and so needs AS4_PATH on a 2-octet session).
    pub fn has_4_octet_asn(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    fn decode(value: &[u8], four_octet: bool) -> Result<Self, &'static str> {
        let size = if four_octet { 4 } else { 2 };
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = r.u8().ok_or("segment header truncated")?;
            let kind = AsSegmentType::from_u8(kind).ok_or("unknown segment type")?;
            let count = r.u8().ok_or("segment header truncated")?;
            // RFC 7606 §7.2: a zero-length segment is malformed.
            if count == 0 {
                return Err("empty segment");
            }
            let raw = r
                .take(count as usize * size)
                .ok_or("segment overruns attribute")?;
            let asns = raw
                .chunks_exact(size)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => 0,
                })
                .collect();
            segments.push(AsSegment { kind, asns });
        }
        Ok(Self { segments })
    }

    fn encode(&self, out: &mut Vec<u8>, four_octet: bool) {
        for seg in &self.segments {
            // A segment holds at most 255 ASNs: longer ones are split.
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind.to_u8());
                out.push(chunk.len() as u8);
                for asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }
}

/// Next hop of MP_REACH_NLRI (RFC 4760 §3, RFC 2545 §3 for IPv6's link-local).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
    /// Next hop of a family we do not interpret, kept as sent.
    Other(Vec<u8>),
}

/// NLRI of a multiprotocol attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Nlri {
    /// IPv4 or IPv6 unicast prefixes.
    Prefixes(Vec<IpNet>),
    /// A family we do not interpret, kept as sent.
    Opaque(Vec<u8>),
}

impl Nlri {
    pub fn prefixes(&self) -> &[IpNet] {
        match self {
            Nlri::Prefixes(p) => p,
            Nlri::Opaque(_) => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: MpNextHop,
    pub nlri: Nlri,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Nlri,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    AtomicAggregate,
    /// ASN is 2 or 4 octets on the wire depending on the session.
    Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    Communities(Vec<Community>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    As4Path(AsPath),
    As4Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    LargeCommunities(Vec<LargeCommunity>),
    /// Unrecognized optional attribute, kept with its flags (RFC 4271 §5).
    Unknown {
        type_code: u8,
        value: Vec<u8>,
    },
}

impl Attr {
    pub fn type_code(&self) -> u8 {
        match self {
            Attr::Origin(_) => t::ORIGIN,
            Attr::AsPath(_) => t::AS_PATH,
            Attr::NextHop(_) => t::NEXT_HOP,
            Attr::Med(_) => t::MULTI_EXIT_DISC,
            Attr::LocalPref(_) => t::LOCAL_PREF,
            Attr::AtomicAggregate => t::ATOMIC_AGGREGATE,
            Attr::Aggregator { .. } => t::AGGREGATOR,
            Attr::Communities(_) => t::COMMUNITIES,
            Attr::OriginatorId(_) => t::ORIGINATOR_ID,
            Attr::ClusterList(_) => t::CLUSTER_LIST,
            Attr::MpReach(_) => t::MP_REACH_NLRI,
            Attr::MpUnreach(_) => t::MP_UNREACH_NLRI,
            Attr::As4Path(_) => t::AS4_PATH,
            Attr::As4Aggregator { .. } => t::AS4_AGGREGATOR,
            Attr::LargeCommunities(_) => t::LARGE_COMMUNITIES,
            Attr::Unknown { type_code, .. } => *type_code,
        }
    }
}

/// The optional and transitive bits each known attribute must carry, `None` if unknown.
fn canonical_flags(type_code: u8) -> Option<AttrFlags> {
    Some(match type_code {
        t::ORIGIN | t::AS_PATH | t::NEXT_HOP | t::LOCAL_PREF | t::ATOMIC_AGGREGATE => {
            AttrFlags::WELL_KNOWN
        }
        t::MULTI_EXIT_DISC
        | t::ORIGINATOR_ID
        | t::CLUSTER_LIST
        | t::MP_REACH_NLRI
        | t::MP_UNREACH_NLRI => AttrFlags::OPTIONAL_NON_TRANSITIVE,
        t::AGGREGATOR | t::COMMUNITIES | t::AS4_PATH | t::AS4_AGGREGATOR | t::LARGE_COMMUNITIES => {
            AttrFlags::OPTIONAL_TRANSITIVE
        }
        _ => return None,
    })
}

/// What RFC 7606 prescribes when an attribute of this type is malformed.
fn malformed_action(type_code: u8) -> ErrorAction {
    match type_code {
        // §7.3 (MP_*): the NLRI cannot be trusted to be located.
        t::MP_REACH_NLRI | t::MP_UNREACH_NLRI => ErrorAction::SessionReset,
        // §7.6, §7.7, RFC 6793 §6: these do not affect route selection.
        t::ATOMIC_AGGREGATE | t::AGGREGATOR | t::AS4_PATH | t::AS4_AGGREGATOR => {
            ErrorAction::AttributeDiscard
        }
        _ => ErrorAction::TreatAsWithdraw,
    }
}

/// A path attribute as it travels: its flags (so unknown attributes, the Partial bit and a
/// peer's choice of extended length survive re-encoding) and its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathAttribute {
    pub flags: AttrFlags,
    pub attr: Attr,
}

impl PathAttribute {
    /// With the flags RFC 4271 gives the attribute (extended length only when needed).
    pub fn new(attr: Attr) -> Self {
        let flags = canonical_flags(attr.type_code()).unwrap_or(AttrFlags::OPTIONAL_TRANSITIVE);
        Self { flags, attr }
    }

    fn encode(&self, out: &mut Vec<u8>, opts: &CodecOptions) -> Result<(), EncodeError> {
        let mut value = Vec::new();
        match &self.attr {
            Attr::Origin(o) => value.push(match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            }),
            Attr::AsPath(p) => p.encode(&mut value, opts.four_octet_as),
            Attr::NextHop(a) | Attr::OriginatorId(a) => value.extend_from_slice(&a.octets()),
            Attr::Med(v) | Attr::LocalPref(v) => value.extend_from_slice(&v.to_be_bytes()),
            Attr::AtomicAggregate => {}
            Attr::Aggregator { asn, address } => {
                if opts.four_octet_as {
                    value.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                    value.extend_from_slice(&two.to_be_bytes());
                }
                value.extend_from_slice(&address.octets());
            }
            Attr::Communities(cs) => {
                for c in cs {
                    value.extend_from_slice(&c.0.to_be_bytes());
                }
            }
            Attr::ClusterList(ids) => {
                for id in ids {
                    value.extend_from_slice(&id.octets());
                }
            }
            Attr::MpReach(mp) => {
                value.extend_from_slice(&mp.family.afi.to_be_bytes());
                value.push(mp.family.safi);
                let mut nh = Vec::new();
                match &mp.next_hop {
                    MpNextHop::V4(a) => nh.extend_from_slice(&a.octets()),
                    MpNextHop::V6 { global, link_local } => {
                        nh.extend_from_slice(&global.octets());
                        if let Some(ll) = link_local {
                            nh.extend_from_slice(&ll.octets());
                        }
                    }
                    MpNextHop::Other(b) => nh.extend_from_slice(b),
                }
                value.push(
                    u8::try_from(nh.len()).map_err(|_| EncodeError::FieldTooLong {
                        what: "MP_REACH_NLRI next hop",
                        len: nh.len(),
                    })?,
                );
                value.extend_from_slice(&nh);
                value.push(0);
                encode_nlri(&mp.nlri, &mut value);
            }
            Attr::MpUnreach(mp) => {
                value.extend_from_slice(&mp.family.afi.to_be_bytes());
                value.push(mp.family.safi);
                encode_nlri(&mp.withdrawn, &mut value);
            }
            Attr::As4Path(p) => p.encode(&mut value, true),
            Attr::As4Aggregator { asn, address } => {
                value.extend_from_slice(&asn.to_be_bytes());
                value.extend_from_slice(&address.octets());
            }
            Attr::LargeCommunities(lcs) => {
                for lc in lcs {
                    value.extend_from_slice(&lc.global.to_be_bytes());
                    value.extend_from_slice(&lc.local1.to_be_bytes());
                    value.extend_from_slice(&lc.local2.to_be_bytes());
                }
            }
            Attr::Unknown { value: v, .. } => value.extend_from_slice(v),
        }
        let len = value.len();
        let extended = self.flags.extended_length() || len > 255;
        let len16 = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "path attribute",
            len,
        })?;
        let mut flags = self.flags.0 & !AttrFlags::EXTENDED_LENGTH & 0xf0;
        if extended {
            flags |= AttrFlags::EXTENDED_LENGTH;
        }
        out.push(flags);
        out.push(self.attr.type_code());
        if extended {
            out.extend_from_slice(&len16.to_be_bytes());
        } else {
            out.push(len as u8);
        }
        out.extend_from_slice(&value);
        Ok(())
    }
}

/// How a problem in an UPDATE is handled (RFC 7606 §2), from mildest to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorAction {
    /// Drop the attribute, keep the route.
    AttributeDiscard,
    /// Keep the session; handle the UPDATE's NLRI as withdrawn.
    TreatAsWithdraw,
    /// Send the NOTIFICATION and reset the session.
    SessionReset,
}

/// A problem the session survives (RFC 7606), kept with the UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeIssue {
    pub type_code: u8,
    pub action: ErrorAction,
    /// The RFC 4271 error it would have been; its NOTIFICATION is logged, not sent.
    pub error: UpdateError,
}

/// UPDATE errors (RFC 4271 §6.3). `data` is the offending attribute (flags, type, length,
/// value) when the RFC wants it in the NOTIFICATION.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UpdateError {
    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(&'static str),
    #[error("attribute {type_code} appears more than once")]
    DuplicateAttribute { type_code: u8 },
    #[error("unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown { type_code: u8, data: Vec<u8> },
    #[error("missing well-known attribute {0}")]
    MissingWellKnown(u8),
    #[error("attribute {type_code} has wrong flags {flags:#04x}")]
    AttributeFlags {
        type_code: u8,
        flags: u8,
        data: Vec<u8>,
    },
    #[error("attribute {type_code} has wrong length {len}")]
    AttributeLength {
        type_code: u8,
        len: usize,
        data: Vec<u8>,
    },
    #[error("invalid ORIGIN {value}")]
    InvalidOrigin { value: u8, data: Vec<u8> },
    #[error("malformed AS_PATH: {reason}")]
    MalformedAsPath { reason: &'static str },
    #[error("malformed optional attribute {type_code}: {reason}")]
    OptionalAttribute {
        type_code: u8,
        reason: &'static str,
        data: Vec<u8>,
    },
    #[error("invalid network field ({field}): {reason}")]
    InvalidNetworkField {
        field: &'static str,
        reason: &'static str,
    },
}

impl UpdateError {
    pub fn notification(&self) -> Notification {
        let (sub, data) = match self {
            UpdateError::MalformedAttributeList(_) | UpdateError::DuplicateAttribute { .. } => {
                (UpdateSubcode::MalformedAttributeList, Vec::new())
            }
            UpdateError::UnrecognizedWellKnown { data, .. } => {
                (UpdateSubcode::UnrecognizedWellKnownAttribute, data.clone())
            }
            UpdateError::MissingWellKnown(tc) => {
                (UpdateSubcode::MissingWellKnownAttribute, vec![*tc])
            }
            UpdateError::AttributeFlags { data, .. } => {
                (UpdateSubcode::AttributeFlagsError, data.clone())
            }
            UpdateError::AttributeLength { data, .. } => {
                (UpdateSubcode::AttributeLengthError, data.clone())
            }
            UpdateError::InvalidOrigin { data, .. } => {
                (UpdateSubcode::InvalidOriginAttribute, data.clone())
            }
            UpdateError::MalformedAsPath { .. } => (UpdateSubcode::MalformedAsPath, Vec::new()),
            UpdateError::OptionalAttribute { data, .. } => {
                (UpdateSubcode::OptionalAttributeError, data.clone())
            }
            UpdateError::InvalidNetworkField { .. } => {
                (UpdateSubcode::InvalidNetworkField, Vec::new())
            }
        };
        Notification::with_data(ErrorCode::Update(sub), data)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
    /// Problems RFC 7606 lets the session survive; empty for a clean UPDATE.
    pub issues: Vec<AttributeIssue>,
}

impl Update {
    /// The most severe action the issues call for; `None` for a clean UPDATE.
    pub fn error_action(&self) -> Option<ErrorAction> {
        self.issues.iter().map(|i| i.action).max()
    }

    pub fn attr(&self, type_code: u8) -> Option<&Attr> {
        self.attributes
            .iter()
            .map(|a| &a.attr)
            .find(|a| a.type_code() == type_code)
    }

    pub fn origin(&self) -> Option<Origin> {
        match self.attr(t::ORIGIN)? {
            Attr::Origin(o) => Some(*o),
            _ => None,
        }
    }

    pub fn as_path(&self) -> Option<&AsPath> {
        match self.attr(t::AS_PATH)? {
            Attr::AsPath(p) => Some(p),
            _ => None,
        }
    }

    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        match self.attr(t::NEXT_HOP)? {
            Attr::NextHop(a) => Some(*a),
            _ => None,
        }
    }

    pub fn local_pref(&self) -> Option<u32> {
        match self.attr(t::LOCAL_PREF)? {
            Attr::LocalPref(v) => Some(*v),
            _ => None,
        }
    }

    pub fn med(&self) -> Option<u32> {
        match self.attr(t::MULTI_EXIT_DISC)? {
            Attr::Med(v) => Some(*v),
            _ => None,
        }
    }

    pub fn communities(&self) -> &[Community] {
        match self.attr(t::COMMUNITIES) {
            Some(Attr::Communities(c)) => c,
            _ => &[],
        }
    }

    pub fn large_communities(&self) -> &[LargeCommunity] {
        match self.attr(t::LARGE_COMMUNITIES) {
            Some(Attr::LargeCommunities(c)) => c,
            _ => &[],
        }
    }

    pub fn mp_reach(&self) -> Option<&MpReach> {
        match self.attr(t::MP_REACH_NLRI)? {
            Attr::MpReach(m) => Some(m),
            _ => None,
        }
    }

    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        match self.attr(t::MP_UNREACH_NLRI)? {
            Attr::MpUnreach(m) => Some(m),
            _ => None,
        }
    }

    /// Every prefix announced: classic NLRI and MP_REACH_NLRI.
    pub fn announced(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.nlri.iter().map(|n| IpNet::V4(*n)).collect();
        if let Some(mp) = self.mp_reach() {
            out.extend_from_slice(mp.nlri.prefixes());
        }
        out
    }

    /// Every prefix withdrawn: classic withdrawn routes and MP_UNREACH_NLRI.
    pub fn withdrawn_prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        if let Some(mp) = self.mp_unreach() {
            out.extend_from_slice(mp.withdrawn.prefixes());
        }
        out
    }

    /// End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4 unicast, or one holding only
    /// an empty MP_UNREACH_NLRI for other families.
    pub fn end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [
                PathAttribute {
                    attr: Attr::MpUnreach(mp),
                    ..
                },
            ] => match &mp.withdrawn {
                Nlri::Prefixes(p) if p.is_empty() => Some(mp.family),
                Nlri::Opaque(b) if b.is_empty() => Some(mp.family),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn decode_body(body: &[u8], opts: &CodecOptions) -> Result<Self, UpdateError> {
        let mut r = Reader::new(body);
        let bad_list = || UpdateError::MalformedAttributeList("length fields exceed the message");
        // RFC 4271 §6.3 / RFC 7606 §4: lengths that do not fit the message reset the session.
        let wlen = r.u16().ok_or_else(bad_list)? as usize;
        let wraw = r.take(wlen).ok_or_else(bad_list)?;
        let alen = r.u16().ok_or_else(bad_list)? as usize;
        let araw = r.take(alen).ok_or_else(bad_list)?;
        let nraw = r.rest();

        let withdrawn = decode_v4_prefixes(wraw, "withdrawn routes")?;
        let nlri = decode_v4_prefixes(nraw, "NLRI")?;

        let mut update = Update {
            withdrawn,
            nlri,
            ..Default::default()
        };
        let mut seen = [false; 256];
        let mut a = Reader::new(araw);
        while !a.is_empty() {
            let start = a;
            // RFC 7606 §4: too few octets for an attribute header, or a length overrunning
            // the attributes: treat-as-withdraw; Total Attribute Length still finds the NLRI.
            let overrun = |type_code| AttributeIssue {
                type_code,
                action: ErrorAction::TreatAsWithdraw,
                error: UpdateError::MalformedAttributeList("attribute overruns the attributes"),
            };
            let (Some(flags), Some(type_code)) = (a.u8(), a.u8()) else {
                update.issues.push(overrun(0));
                break;
            };
            // RFC 4271 §4.3: the low-order four bits are unused and ignored on receipt.
            let flags = AttrFlags(flags & 0xf0);
            let len = if flags.extended_length() {
                a.u16().map(usize::from)
            } else {
                a.u8().map(usize::from)
            };
            let Some(value) = len.and_then(|len| a.take(len)) else {
                update.issues.push(overrun(type_code));
                break;
            };
            let header_len = if flags.extended_length() { 4 } else { 3 };
            let whole = start.buf_prefix(header_len + value.len());

            if seen[type_code as usize] {
                // RFC 7606 §3 g: MP_* twice resets, anything else: keep the first.
                if matches!(type_code, t::MP_REACH_NLRI | t::MP_UNREACH_NLRI) {
                    return Err(UpdateError::DuplicateAttribute { type_code });
                }
                update.issues.push(AttributeIssue {
                    type_code,
                    action: ErrorAction::AttributeDiscard,
                    error: UpdateError::DuplicateAttribute { type_code },
                });
                continue;
            }
            seen[type_code as usize] = true;

            let canonical = canonical_flags(type_code);
            match canonical {
                None if !flags.optional() => {
                    // RFC 4271 §6.3; RFC 7606 does not soften this one.
                    return Err(UpdateError::UnrecognizedWellKnown {
                        type_code,
                        data: whole.to_vec(),
                    });
                }
                None => {
                    update.attributes.push(PathAttribute {
                        flags,
                        attr: Attr::Unknown {
                            type_code,
                            value: value.to_vec(),
                        },
                    });
                    continue;
                }
                Some(c) if (c.0 ^ flags.0) & (AttrFlags::OPTIONAL | AttrFlags::TRANSITIVE) != 0 => {
                    // RFC 7606 §3 c: wrong Optional/Transitive bits make it malformed.
                    let error = UpdateError::AttributeFlags {
                        type_code,
                        flags: flags.0,
                        data: whole.to_vec(),
                    };
                    match malformed_action(type_code) {
                        ErrorAction::SessionReset => return Err(error),
                        action => update.issues.push(AttributeIssue {
                            type_code,
                            action,
                            error,
                        }),
                    }
                    continue;
                }
                Some(_) => {}
            }
            match decode_attr(type_code, value, whole, opts) {
                Ok(attr) => update.attributes.push(PathAttribute { flags, attr }),
                Err(error) => match malformed_action(type_code) {
                    ErrorAction::SessionReset => return Err(error),
                    action => update.issues.push(AttributeIssue {
                        type_code,
                        action,
                        error,
                    }),
                },
            }
        }

        // RFC 7606 §3 d: a missing well-known mandatory attribute is treat-as-withdraw.
        let mp_reach = seen[t::MP_REACH_NLRI as usize];
        if !update.nlri.is_empty() || mp_reach {
            let mut required = vec![t::ORIGIN, t::AS_PATH];
            if !update.nlri.is_empty() {
                required.push(t::NEXT_HOP);
            }
            for tc in required {
                if !seen[tc as usize] {
                    update.issues.push(AttributeIssue {
                        type_code: tc,
                        action: ErrorAction::TreatAsWithdraw,
                        error: UpdateError::MissingWellKnown(tc),
                    });
                }
            }
        }
        Ok(update)
    }

    pub(crate) fn encode_body(
        &self,
        out: &mut Vec<u8>,
        opts: &CodecOptions,
    ) -> Result<(), EncodeError> {
        let mut w = Vec::new();
        for p in &self.withdrawn {
            encode_prefix(&IpNet::V4(*p), &mut w);
        }
        let wlen = u16::try_from(w.len()).map_err(|_| EncodeError::FieldTooLong {
            what: "withdrawn routes",
            len: w.len(),
        })?;
        out.extend_from_slice(&wlen.to_be_bytes());
        out.extend_from_slice(&w);
        let mut attrs = Vec::new();
        for a in &self.attributes {
            a.encode(&mut attrs, opts)?;
        }
        let alen = u16::try_from(attrs.len()).map_err(|_| EncodeError::FieldTooLong {
            what: "path attributes",
            len: attrs.len(),
        })?;
        out.extend_from_slice(&alen.to_be_bytes());
        out.extend_from_slice(&attrs);
        for p in &self.nlri {
            encode_prefix(&IpNet::V4(*p), out);
        }
        Ok(())
    }
}

impl<'a> Reader<'a> {
    /// The first `n` bytes of what this reader had, without consuming (used to quote a whole
    /// attribute in NOTIFICATION data).
    fn buf_prefix(&self, n: usize) -> &'a [u8] {
        let mut copy = *self;
        copy.take(n).unwrap_or_default()
    }
}

fn decode_attr(
    type_code: u8,
    value: &[u8],
    whole: &[u8],
    opts: &CodecOptions,
) -> Result<Attr, UpdateError> {
    let bad_len = || UpdateError::AttributeLength {
        type_code,
        len: value.len(),
        data: whole.to_vec(),
    };
    let ipv4 = |v: &[u8]| -> Option<Ipv4Addr> { <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from) };
    let u32_of = |v: &[u8]| -> Option<u32> { <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes) };
    Ok(match type_code {
        t::ORIGIN => match value {
            [0] => Attr::Origin(Origin::Igp),
            [1] => Attr::Origin(Origin::Egp),
            [2] => Attr::Origin(Origin::Incomplete),
            [v] => {
                return Err(UpdateError::InvalidOrigin {
                    value: *v,
                    data: whole.to_vec(),
                });
            }
            _ => return Err(bad_len()),
        },
        t::AS_PATH => Attr::AsPath(
            AsPath::decode(value, opts.four_octet_as)
                .map_err(|reason| UpdateError::MalformedAsPath { reason })?,
        ),
        t::AS4_PATH => Attr::As4Path(AsPath::decode(value, true).map_err(|reason| {
            UpdateError::OptionalAttribute {
                type_code,
                reason,
                data: whole.to_vec(),
            }
        })?),
        t::NEXT_HOP => Attr::NextHop(ipv4(value).ok_or_else(bad_len)?),
        t::MULTI_EXIT_DISC => Attr::Med(u32_of(value).ok_or_else(bad_len)?),
        t::LOCAL_PREF => Attr::LocalPref(u32_of(value).ok_or_else(bad_len)?),
        t::ATOMIC_AGGREGATE if value.is_empty() => Attr::AtomicAggregate,
        t::ATOMIC_AGGREGATE => return Err(bad_len()),
        t::AGGREGATOR | t::AS4_AGGREGATOR => {
            let four = type_code == t::AS4_AGGREGATOR || opts.four_octet_as;
            let (asn, addr) = match (four, value.len()) {
                (true, 8) => (u32_of(&value[..4]), ipv4(&value[4..])),
                (false, 6) => (
                    Some(u32::from(u16::from_be_bytes([value[0], value[1]]))),
                    ipv4(&value[2..]),
                ),
                _ => (None, None),
            };
            let (Some(asn), Some(address)) = (asn, addr) else {
                return Err(bad_len());
            };
            if type_code == t::AGGREGATOR {
                Attr::Aggregator { asn, address }
            } else {
                Attr::As4Aggregator { asn, address }
            }
        }
        // RFC 7606 §7.8 / RFC 8092 §6: empty or not a multiple of the entry size.
        t::COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(4) => Attr::Communities(
            value
                .chunks_exact(4)
                .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        t::LARGE_COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(12) => {
            Attr::LargeCommunities(
                value
                    .chunks_exact(12)
                    .map(|c| LargeCommunity {
                        global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                        local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                    })
                    .collect(),
            )
        }
        t::ORIGINATOR_ID => Attr::OriginatorId(ipv4(value).ok_or_else(bad_len)?),
        t::CLUSTER_LIST if !value.is_empty() && value.len().is_multiple_of(4) => Attr::ClusterList(
            value
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect(),
        ),
        t::COMMUNITIES | t::LARGE_COMMUNITIES | t::CLUSTER_LIST => return Err(bad_len()),
        t::MP_REACH_NLRI => Attr::MpReach(decode_mp_reach(value, whole)?),
        t::MP_UNREACH_NLRI => Attr::MpUnreach(decode_mp_unreach(value, whole)?),
        _ => Attr::Unknown {
            type_code,
            value: value.to_vec(),
        },
    })
}

fn mp_error(type_code: u8, reason: &'static str, whole: &[u8]) -> UpdateError {
    UpdateError::OptionalAttribute {
        type_code,
        reason,
        data: whole.to_vec(),
    }
}

fn is_ip_unicast(f: Family) -> bool {
    f == Family::IPV4_UNICAST || f == Family::IPV6_UNICAST
}

fn decode_mp_reach(value: &[u8], whole: &[u8]) -> Result<MpReach, UpdateError> {
    let err = |reason| mp_error(t::MP_REACH_NLRI, reason, whole);
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(|| err("truncated"))?;
    let safi = r.u8().ok_or_else(|| err("truncated"))?;
    let family = Family::new(afi, safi);
    let nh_len = r.u8().ok_or_else(|| err("truncated"))?;
    let nh = r
        .take(nh_len as usize)
        .ok_or_else(|| err("next hop overruns attribute"))?;
    r.u8().ok_or_else(|| err("reserved octet missing"))?;
    let nlri_raw = r.rest();
    if !is_ip_unicast(family) {
        return Ok(MpReach {
            family,
            next_hop: MpNextHop::Other(nh.to_vec()),
            nlri: Nlri::Opaque(nlri_raw.to_vec()),
        });
    }
    // RFC 4760 §3, RFC 2545 §3 (IPv6 global + link-local), RFC 8950 (IPv6 for IPv4).
    let next_hop = match nh.len() {
        4 => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        16 | 32 => {
            let g: [u8; 16] = nh[..16].try_into().map_err(|_| err("next hop length"))?;
            let link_local = match nh.get(16..32) {
                Some(ll) => Some(Ipv6Addr::from(
                    <[u8; 16]>::try_from(ll).map_err(|_| err("next hop length"))?,
                )),
                None => None,
            };
            MpNextHop::V6 {
                global: Ipv6Addr::from(g),
                link_local,
            }
        }
        _ => return Err(err("bad next hop length")),
    };
    let nlri = decode_prefixes(family.afi, nlri_raw).map_err(err)?;
    Ok(MpReach {
        family,
        next_hop,
        nlri: Nlri::Prefixes(nlri),
    })
}

fn decode_mp_unreach(value: &[u8], whole: &[u8]) -> Result<MpUnreach, UpdateError> {
    let err = |reason| mp_error(t::MP_UNREACH_NLRI, reason, whole);
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(|| err("truncated"))?;
    let safi = r.u8().ok_or_else(|| err("truncated"))?;
    let family = Family::new(afi, safi);
    let raw = r.rest();
    let withdrawn = if is_ip_unicast(family) {
        Nlri::Prefixes(decode_prefixes(afi, raw).map_err(err)?)
    } else {
        Nlri::Opaque(raw.to_vec())
    };
    Ok(MpUnreach { family, withdrawn })
}

/// Prefixes of one family (RFC 4271 §4.3 encoding). Host bits past the length are cleared.
fn decode_prefixes(afi: u16, raw: &[u8]) -> Result<Vec<IpNet>, &'static str> {
    let max = if afi == Family::AFI_IPV6 { 128 } else { 32 };
    let mut r = Reader::new(raw);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or("truncated")?;
        if len > max {
            return Err("prefix length too long");
        }
        let bytes = r
            .take((len as usize).div_ceil(8))
            .ok_or("prefix overruns field")?;
        let net = if max == 32 {
            let mut a = [0u8; 4];
            a[..bytes.len()].copy_from_slice(bytes);
            Ipv4Net::new(Ipv4Addr::from(a), len)
                .map(|n| IpNet::V4(n.trunc()))
                .map_err(|_| "prefix length too long")?
        } else {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            Ipv6Net::new(Ipv6Addr::from(a), len)
                .map(|n| IpNet::V6(n.trunc()))
                .map_err(|_| "prefix length too long")?
        };
        out.push(net);
    }
    Ok(out)
}

fn decode_v4_prefixes(raw: &[u8], field: &'static str) -> Result<Vec<Ipv4Net>, UpdateError> {
    // RFC 7606 §5.3: an unparsable NLRI or withdrawn routes field resets the session.
    let nets = decode_prefixes(Family::AFI_IPV4, raw)
        .map_err(|reason| UpdateError::InvalidNetworkField { field, reason })?;
    Ok(nets
        .into_iter()
        .filter_map(|n| match n {
            IpNet::V4(v4) => Some(v4),
            IpNet::V6(_) => None,
        })
        .collect())
}

pub(crate) fn encode_prefix(net: &IpNet, out: &mut Vec<u8>) {
    let len = net.prefix_len();
    out.push(len);
    let n = (len as usize).div_ceil(8);
    match net.addr() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

/// Octets `net` takes in an NLRI field.
pub fn prefix_wire_len(net: &IpNet) -> usize {
    1 + (net.prefix_len() as usize).div_ceil(8)
}

fn encode_nlri(nlri: &Nlri, out: &mut Vec<u8>) {
    match nlri {
        Nlri::Prefixes(ps) => {
            for p in ps {
                encode_prefix(p, out);
            }
        }
        Nlri::Opaque(b) => out.extend_from_slice(b),
    }
}
