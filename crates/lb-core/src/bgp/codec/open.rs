//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492) and extended optional parameters
//! (RFC 9072).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |   AS_TRANS (23456) if the ASN needs 4 octets
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Optional parameter              Capability (parameter type 2, RFC 5492 §4)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+   +------------------------------+
//! | Parm. Type    | Parm. Length|  | Capability Code (1 octet)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+   +------------------------------+
//! ~   Parameter Value (variable)~  | Capability Length (1 octet)  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+   +------------------------------+
//!                                  | Capability Value (variable)  |
//!                                  +------------------------------+
//! ```

use std::net::Ipv4Addr;

use thiserror::Error;

use super::notification::{ErrorCode, Notification, OpenSubcode};
use super::update::AS_TRANS;
use super::{BGP_VERSION, EncodeError, Family, Reader};

const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: Non-Ext OP Type marking the extended optional parameters format.
const PARAM_EXTENDED: u8 = 255;

pub const CAP_MULTIPROTOCOL: u8 = 1;
pub const CAP_ROUTE_REFRESH: u8 = 2;
pub const CAP_EXTENDED_MESSAGE: u8 = 6;
pub const CAP_GRACEFUL_RESTART: u8 = 64;
pub const CAP_FOUR_OCTET_AS: u8 = 65;
pub const CAP_ADD_PATH: u8 = 69;
pub const CAP_ENHANCED_ROUTE_REFRESH: u8 = 70;

/// Graceful restart capability (RFC 4724 §3; the N bit from RFC 8538 §2). We send it as
/// the restarting speaker ([`crate::bgp::fsm::GracefulRestartOffer`]); the peer's is kept
/// for information.
///
/// ```text
/// +--------------------------------------------------+
/// | Capability Code = 64 (1 octet)                   |
/// +--------------------------------------------------+
/// | Capability Length = 2 + 4 * families (1 octet)   |
/// +--------------------------------------------------+
/// | Restart Flags (4 bits) | Restart Time (12 bits)  |   flags: R (0x8), N (0x4), 2 reserved
/// +--------------------------------------------------+
/// | Address Family Identifier (16 bits)              |  \
/// +--------------------------------------------------+   |
/// | Subsequent Address Family Identifier (8 bits)    |   |  once per family
/// +--------------------------------------------------+   |
/// | Flags for Address Family (8 bits)                |  /   F (0x80): forwarding kept
/// +--------------------------------------------------+
/// ```
///
/// E.g. R, restart time 120 s, IPv4 and IPv6 unicast with F:
/// `40 0a 80 78 00 01 01 80 00 02 01 80`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful restart also on NOTIFICATION.
    pub notification: bool,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Families and their F (forwarding state preserved) bit.
    pub families: Vec<(Family, bool)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddPathDirection {
    Receive,
    Send,
    Both,
    /// A value outside 1..=3, kept as sent.
    Other(u8),
}

impl From<u8> for AddPathDirection {
    fn from(v: u8) -> Self {
        match v {
            1 => AddPathDirection::Receive,
            2 => AddPathDirection::Send,
            3 => AddPathDirection::Both,
            v => AddPathDirection::Other(v),
        }
    }
}

impl From<AddPathDirection> for u8 {
    fn from(v: AddPathDirection) -> u8 {
        match v {
            AddPathDirection::Receive => 1,
            AddPathDirection::Send => 2,
            AddPathDirection::Both => 3,
            AddPathDirection::Other(v) => v,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol(Family),
    /// RFC 2918 §2.
    RouteRefresh,
    /// RFC 8654.
    ExtendedMessage,
    /// RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// RFC 6793 §3.
    FourOctetAs(u32),
    /// RFC 7911 §4 (parsed; `lb` never advertises it).
    AddPath(Vec<(Family, AddPathDirection)>),
    /// RFC 7313 §3.1.
    EnhancedRouteRefresh,
    /// Anything else, kept as sent.
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => CAP_MULTIPROTOCOL,
            Capability::RouteRefresh => CAP_ROUTE_REFRESH,
            Capability::ExtendedMessage => CAP_EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => CAP_GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => CAP_FOUR_OCTET_AS,
            Capability::AddPath(_) => CAP_ADD_PATH,
            Capability::EnhancedRouteRefresh => CAP_ENHANCED_ROUTE_REFRESH,
            Capability::Unknown { code, .. } => *code,
        }
    }

    fn decode(code: u8, value: &[u8]) -> Result<Self, OpenError> {
        let malformed = || OpenError::MalformedCapability {
            code,
            len: value.len(),
        };
        let mut r = Reader::new(value);
        let cap = match code {
            CAP_MULTIPROTOCOL if value.len() == 4 => Capability::Multiprotocol(Family::new(
                u16::from_be_bytes([value[0], value[1]]),
                value[3],
            )),
            CAP_ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            CAP_EXTENDED_MESSAGE if value.is_empty() => Capability::ExtendedMessage,
            CAP_ENHANCED_ROUTE_REFRESH if value.is_empty() => Capability::EnhancedRouteRefresh,
            CAP_FOUR_OCTET_AS if value.len() == 4 => {
                Capability::FourOctetAs(r.u32().ok_or_else(malformed)?)
            }
            CAP_GRACEFUL_RESTART if value.len() >= 2 && (value.len() - 2).is_multiple_of(4) => {
                let flags_time = r.u16().ok_or_else(malformed)?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(malformed)?;
                    let safi = r.u8().ok_or_else(malformed)?;
                    let flags = r.u8().ok_or_else(malformed)?;
                    families.push((Family::new(afi, safi), flags & 0x80 != 0));
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: flags_time & 0x8000 != 0,
                    notification: flags_time & 0x4000 != 0,
                    restart_time: flags_time & 0x0fff,
                    families,
                })
            }
            CAP_ADD_PATH if value.len().is_multiple_of(4) => {
                let mut entries = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(malformed)?;
                    let safi = r.u8().ok_or_else(malformed)?;
                    let dir = r.u8().ok_or_else(malformed)?;
                    entries.push((Family::new(afi, safi), dir.into()));
                }
                Capability::AddPath(entries)
            }
            CAP_MULTIPROTOCOL
            | CAP_ROUTE_REFRESH
            | CAP_EXTENDED_MESSAGE
            | CAP_ENHANCED_ROUTE_REFRESH
            | CAP_FOUR_OCTET_AS
            | CAP_GRACEFUL_RESTART
            | CAP_ADD_PATH => return Err(malformed()),
            code => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        };
        Ok(cap)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.code());
        let len_at = out.len();
        out.push(0);
        match self {
            Capability::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.to_be_bytes());
                out.push(0);
                out.push(f.safi);
            }
            Capability::RouteRefresh
            | Capability::ExtendedMessage
            | Capability::EnhancedRouteRefresh => {}
            Capability::GracefulRestart(gr) => {
                let flags_time = (u16::from(gr.restart_state) << 15)
                    | (u16::from(gr.notification) << 14)
                    | (gr.restart_time & 0x0fff);
                out.extend_from_slice(&flags_time.to_be_bytes());
                for (f, forwarding) in &gr.families {
                    out.extend_from_slice(&f.afi.to_be_bytes());
                    out.push(f.safi);
                    out.push(if *forwarding { 0x80 } else { 0 });
                }
            }
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::AddPath(entries) => {
                for (f, dir) in entries {
                    out.extend_from_slice(&f.afi.to_be_bytes());
                    out.push(f.safi);
                    out.push((*dir).into());
                }
            }
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        let len = out.len() - len_at - 1;
        out[len_at] = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "capability",
            len,
        })?;
        Ok(())
    }
}

/// Errors in an OPEN (RFC 4271 §6.2), found by the decoder or by the session's checks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum OpenError {
    #[error("unsupported version number {0} (we speak 4)")]
    UnsupportedVersion(u8),
    #[error("bad peer AS {received} (expected {expected})")]
    BadPeerAs {
        expected: u32,
        received: u32,
        /// The 2-octet My Autonomous System field, echoed in the NOTIFICATION data.
        my_as_field: u16,
    },
    /// `dynamic_asn = "external"` and the peer's AS is our own.
    #[error("bad peer AS {local}: the peer is external (dynamic ASN) but sent our own AS")]
    PeerAsNotExternal { local: u32, my_as_field: u16 },
    #[error("bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    #[error("unsupported optional parameter type {0}")]
    UnsupportedOptionalParameter(u8),
    #[error("optional parameters malformed: {0}")]
    MalformedOptionalParameters(&'static str),
    #[error("capability {code} has malformed length {len}")]
    MalformedCapability { code: u8, len: usize },
    #[error("unacceptable hold time {0} s")]
    UnacceptableHoldTime(u16),
    #[error("required capability missing: {0:?}")]
    UnsupportedCapability(Capability),
}

impl OpenError {
    pub fn notification(&self) -> Notification {
        let open = |s| ErrorCode::Open(s);
        match self {
            // §6.2: data is the largest locally supported version number (2 octets).
            OpenError::UnsupportedVersion(_) => Notification::with_data(
                open(OpenSubcode::UnsupportedVersionNumber),
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            OpenError::BadPeerAs { my_as_field, .. }
            | OpenError::PeerAsNotExternal { my_as_field, .. } => Notification::with_data(
                open(OpenSubcode::BadPeerAs),
                my_as_field.to_be_bytes().to_vec(),
            ),
            OpenError::BadBgpIdentifier(_) => {
                Notification::new(open(OpenSubcode::BadBgpIdentifier))
            }
            OpenError::UnsupportedOptionalParameter(_) => {
                Notification::new(open(OpenSubcode::UnsupportedOptionalParameter))
            }
            OpenError::MalformedOptionalParameters(_) | OpenError::MalformedCapability { .. } => {
                Notification::new(open(OpenSubcode::Unspecific))
            }
            OpenError::UnacceptableHoldTime(_) => {
                Notification::new(open(OpenSubcode::UnacceptableHoldTime))
            }
            // RFC 5492 §3: data lists the capabilities that are required but missing.
            OpenError::UnsupportedCapability(cap) => {
                let mut data = Vec::new();
                // A capability we build ourselves always fits its length octet.
                let _ = cap.encode(&mut data);
                Notification::with_data(open(OpenSubcode::UnsupportedCapability), data)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet field: the ASN, or AS_TRANS when it needs 4 octets (RFC 6793 §4.1).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
    /// All capabilities travel in one optional parameter (as GoBGP sends them) instead of
    /// one parameter each (as FRR does and as we send). Both are valid (RFC 5492 §4); kept
    /// so that a decoded OPEN re-encodes to the same bytes.
    pub single_capability_parameter: bool,
}

impl Open {
    /// An OPEN for `asn`, with AS_TRANS in `my_as` when `asn` needs 4 octets. The caller
    /// lists the capabilities (include [`Capability::FourOctetAs`]).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Self {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
            single_capability_parameter: false,
        }
    }

    /// The sender's ASN: the 4-octet capability if present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    pub fn has(&self, cap: &Capability) -> bool {
        self.capabilities.contains(cap)
    }

    /// Families advertised with the multiprotocol capability; with none at all, IPv4
    /// unicast is implied (RFC 4760 §8 / RFC 4271).
    pub fn families(&self) -> Vec<Family> {
        let fams: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if fams.is_empty() {
            vec![Family::IPV4_UNICAST]
        } else {
            fams
        }
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    pub(crate) fn decode_body(body: &[u8]) -> Result<Self, OpenError> {
        let mut r = Reader::new(body);
        let short = OpenError::MalformedOptionalParameters("truncated");
        // The caller checked body.len() >= 10.
        let version = r.u8().ok_or(short.clone())?;
        if version != BGP_VERSION {
            return Err(OpenError::UnsupportedVersion(version));
        }
        let my_as = r.u16().ok_or(short.clone())?;
        let hold_time = r.u16().ok_or(short.clone())?;
        // §4.2: hold time 1 or 2 seconds MUST be rejected.
        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime(hold_time));
        }
        let bgp_id = Ipv4Addr::from(r.u32().ok_or(short.clone())?);
        // RFC 6286 §2.1: any non-zero 4-octet value is a valid identifier.
        if bgp_id.is_unspecified() {
            return Err(OpenError::BadBgpIdentifier(bgp_id));
        }
        let opt_len = r.u8().ok_or(short)?;
        let rest = r.rest();
        // RFC 9072 §2: Non-Ext OP Len 255 and Non-Ext OP Type 255 mark 2-octet lengths.
        let extended = opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED);
        let params = if extended {
            let mut e = Reader::new(&rest[1..]);
            let len = e.u16().ok_or(OpenError::MalformedOptionalParameters(
                "extended length truncated",
            ))?;
            if e.remaining() != len as usize {
                return Err(OpenError::MalformedOptionalParameters(
                    "extended length disagrees with message length",
                ));
            }
            e.rest()
        } else {
            if rest.len() != opt_len as usize {
                return Err(OpenError::MalformedOptionalParameters(
                    "length disagrees with message length",
                ));
            }
            rest
        };
        let mut capabilities = Vec::new();
        let mut param_count = 0;
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let truncated = OpenError::MalformedOptionalParameters("parameter truncated");
            let ptype = p.u8().ok_or(truncated.clone())?;
            let plen = if extended {
                p.u16().ok_or(truncated.clone())? as usize
            } else {
                p.u8().ok_or(truncated.clone())? as usize
            };
            let value = p.take(plen).ok_or(truncated)?;
            if ptype != PARAM_CAPABILITIES {
                return Err(OpenError::UnsupportedOptionalParameter(ptype));
            }
            param_count += 1;
            let mut c = Reader::new(value);
            while !c.is_empty() {
                let truncated = OpenError::MalformedOptionalParameters("capability truncated");
                let code = c.u8().ok_or(truncated.clone())?;
                let len = c.u8().ok_or(truncated.clone())?;
                let cvalue = c.take(len as usize).ok_or(truncated)?;
                capabilities.push(Capability::decode(code, cvalue)?);
            }
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            single_capability_parameter: param_count == 1 && capabilities.len() > 1,
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut params = Vec::new();
        if self.single_capability_parameter {
            let mut caps = Vec::new();
            for cap in &self.capabilities {
                cap.encode(&mut caps)?;
            }
            params.push(caps);
        } else {
            for cap in &self.capabilities {
                let mut one = Vec::new();
                cap.encode(&mut one)?;
                params.push(one);
            }
        }
        let short_len: usize = params.iter().map(|p| 2 + p.len()).sum();
        let needs_extended = short_len > 255 || params.iter().any(|p| p.len() > 255);
        if !needs_extended {
            out.push(short_len as u8);
            for p in params {
                out.push(PARAM_CAPABILITIES);
                out.push(p.len() as u8);
                out.extend_from_slice(&p);
            }
        } else {
            // RFC 9072 §2.
            let ext_len: usize = params.iter().map(|p| 3 + p.len()).sum();
            let ext_len16 = u16::try_from(ext_len).map_err(|_| EncodeError::FieldTooLong {
                what: "optional parameters",
                len: ext_len,
            })?;
            out.extend_from_slice(&[255, PARAM_EXTENDED]);
            out.extend_from_slice(&ext_len16.to_be_bytes());
            for p in params {
                out.push(PARAM_CAPABILITIES);
                out.extend_from_slice(&(p.len() as u16).to_be_bytes());
                out.extend_from_slice(&p);
            }
        }
        Ok(())
    }
}
