//! BGP-4 message codec (RFC 4271 §4) with the extensions `lb` speaks: 4-octet ASNs (RFC 6793),
//! multiprotocol IPv4/IPv6 unicast (RFC 4760), route refresh (RFC 2918, RFC 7313),
//! communities (RFC 1997), large communities (RFC 8092), graceful-restart capability parsing
//! (RFC 4724), shutdown communication (RFC 9003), extended messages (RFC 8654) and revised
//! UPDATE error handling (RFC 7606).
//!
//! Every message starts with the common header (RFC 4271 §4.1):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                           Marker (16 x 0xff)                  |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Decoding is total: any byte string yields `Ok` or a [`DecodeError`] whose
//! [`DecodeError::notification`] is the NOTIFICATION the RFCs prescribe. UPDATEs whose
//! problems RFC 7606 lets a session survive decode to `Ok` and carry their verdict in
//! [`Update::error_action`].

mod notification;
mod open;
mod update;

pub use notification::{
    CeaseSubcode, ErrorCode, FsmSubcode, HeaderSubcode, MAX_SHUTDOWN_COMMUNICATION, Notification,
    OpenSubcode, RouteRefreshSubcode, UpdateSubcode,
};
pub use open::{AddPathDirection, Capability, GracefulRestart, Open, OpenError};
pub use update::{
    AS_TRANS, AsPath, AsSegment, AsSegmentType, Attr, AttrFlags, AttributeIssue, ErrorAction,
    MpNextHop, MpReach, MpUnreach, Nlri, Origin, PathAttribute, Update, UpdateError, attr_type,
    prefix_wire_len,
};

use thiserror::Error;

/// Length of the common header.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message when both sides advertised extended messages (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// BGP version 4.
pub const BGP_VERSION: u8 = 4;

pub const MSG_OPEN: u8 = 1;
pub const MSG_UPDATE: u8 = 2;
pub const MSG_NOTIFICATION: u8 = 3;
pub const MSG_KEEPALIVE: u8 = 4;
pub const MSG_ROUTE_REFRESH: u8 = 5;

/// Address family identifier (IANA AFI) and subsequent address family identifier (SAFI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const AFI_IPV4: u16 = 1;
    pub const AFI_IPV6: u16 = 2;
    pub const SAFI_UNICAST: u8 = 1;
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };

    pub const fn new(afi: u16, safi: u8) -> Self {
        Self { afi, safi }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Family::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            Family::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            Family { afi, safi } => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// ROUTE-REFRESH (RFC 2918 §3, subtypes RFC 7313 §3.2):
///
/// ```text
///  0       7      15      23      31
/// +-------+-------+-------+-------+
/// |      AFI      |Subtype| SAFI  |
/// +-------+-------+-------+-------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    pub family: Family,
    /// 0 = normal request, 1 = Beginning of Route Refresh, 2 = End of Route Refresh.
    pub subtype: u8,
}

/// A decoded BGP message. KEEPALIVE is the bare header (RFC 4271 §4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => MSG_OPEN,
            Message::Update(_) => MSG_UPDATE,
            Message::Notification(_) => MSG_NOTIFICATION,
            Message::Keepalive => MSG_KEEPALIVE,
            Message::RouteRefresh(_) => MSG_ROUTE_REFRESH,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }

    /// Encode with header. Fails only when the message does not fit `opts.max_message_len`
    /// or a field overflows its length octets.
    pub fn encode(&self, opts: &CodecOptions) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[0xff; 16]);
        out.extend_from_slice(&[0, 0, self.type_code()]);
        match self {
            Message::Open(open) => open.encode_body(&mut out)?,
            Message::Update(update) => update.encode_body(&mut out, opts)?,
            Message::Notification(n) => n.encode_body(&mut out),
            Message::Keepalive => {}
            Message::RouteRefresh(rr) => {
                out.extend_from_slice(&rr.family.afi.to_be_bytes());
                out.push(rr.subtype);
                out.push(rr.family.safi);
            }
        }
        if out.len() > opts.max_message_len {
            return Err(EncodeError::TooLong {
                what: self.type_name(),
                len: out.len(),
                max: opts.max_message_len,
            });
        }
        let len = out.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

/// What the decoder and encoder need to know about the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecOptions {
    /// Both sides advertised the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet
    /// ASNs (RFC 6793 §4.1).
    pub four_octet_as: bool,
    /// 4096, or 65535 when both sides advertised extended messages (RFC 8654).
    pub max_message_len: usize,
}

impl Default for CodecOptions {
    fn default() -> Self {
        Self {
            four_octet_as: true,
            max_message_len: MAX_MESSAGE_LEN,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{what} message would be {len} octets, more than the {max} allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is {len} octets, more than its length field can carry")]
    FieldTooLong { what: &'static str, len: usize },
}

/// Why a message could not be decoded. Each maps to the NOTIFICATION to send
/// ([`DecodeError::notification`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message header: marker is not all ones (connection not synchronized)")]
    BadMarker,
    #[error("message header: bad length {length} for message type {msg_type}")]
    BadLength { length: u16, msg_type: u8 },
    #[error("message header: unknown message type {0}")]
    BadType(u8),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    /// A NOTIFICATION shorter than code + subcode. Never answered with a NOTIFICATION
    /// (RFC 4271 §6.4): the connection is just closed.
    #[error("NOTIFICATION: truncated")]
    NotificationTruncated,
    #[error("ROUTE-REFRESH: invalid message length {0}")]
    RouteRefreshLength(u16),
}

impl DecodeError {
    /// The NOTIFICATION RFC 4271 §6 (and RFC 7606/7313) prescribe for this error, or `None`
    /// when none must be sent (a malformed NOTIFICATION).
    pub fn notification(&self) -> Option<Notification> {
        Some(match self {
            DecodeError::BadMarker => Notification::new(ErrorCode::MessageHeader(
                HeaderSubcode::ConnectionNotSynchronized,
            )),
            // §6.1: the Data field contains the erroneous Length field.
            DecodeError::BadLength { length, .. } => Notification::with_data(
                ErrorCode::MessageHeader(HeaderSubcode::BadMessageLength),
                length.to_be_bytes().to_vec(),
            ),
            DecodeError::BadType(t) => Notification::with_data(
                ErrorCode::MessageHeader(HeaderSubcode::BadMessageType),
                vec![*t],
            ),
            DecodeError::Open(e) => e.notification(),
            DecodeError::Update(e) => e.notification(),
            DecodeError::NotificationTruncated => return None,
            // RFC 7313 §5: the Data field carries the complete message.
            DecodeError::RouteRefreshLength(_) => Notification::new(ErrorCode::RouteRefresh(
                RouteRefreshSubcode::InvalidMessageLength,
            )),
        })
    }
}

/// Check the header at the front of `buf`. `Ok(None)`: more bytes are needed;
/// `Ok(Some(n))`: the first message is `buf[..n]`.
pub fn frame_len(buf: &[u8], max_message_len: usize) -> Result<Option<usize>, DecodeError> {
    let marker_seen = buf.len().min(16);
    if buf[..marker_seen].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::BadMarker);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    let msg_type = buf[18];
    if (length as usize) < HEADER_LEN || length as usize > max_message_len {
        return Err(DecodeError::BadLength { length, msg_type });
    }
    Ok((buf.len() >= length as usize).then_some(length as usize))
}

/// Streaming framer: feed it TCP bytes, take whole messages out.
#[derive(Clone, Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_message_len: usize,
}

impl Framer {
    pub fn new(max_message_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message_len,
        }
    }

    /// Raise the limit to 65535 once extended messages are negotiated.
    pub fn set_max_message_len(&mut self, max_message_len: usize) {
        self.max_message_len = max_message_len;
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message (header included), `Ok(None)` if incomplete. After an error the
    /// stream cannot be resynchronized: the caller sends the NOTIFICATION and closes.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match frame_len(&self.buf, self.max_message_len)? {
            Some(n) => {
                let rest = self.buf.split_off(n);
                Ok(Some(std::mem::replace(&mut self.buf, rest)))
            }
            None => Ok(None),
        }
    }
}

/// Decode one whole message, header included (as returned by [`Framer::next_message`]).
pub fn decode(msg: &[u8], opts: &CodecOptions) -> Result<Message, DecodeError> {
    let n = frame_len(msg, opts.max_message_len)?.ok_or(DecodeError::BadLength {
        length: msg
            .get(16..18)
            .map_or(0, |l| u16::from_be_bytes([l[0], l[1]])),
        msg_type: msg.get(18).copied().unwrap_or(0),
    })?;
    let length = n as u16;
    let msg_type = msg[18];
    if n != msg.len() {
        return Err(DecodeError::BadLength { length, msg_type });
    }
    let body = &msg[HEADER_LEN..];
    // §6.1: minimum lengths per type are header errors.
    let bad_length = DecodeError::BadLength { length, msg_type };
    match msg_type {
        MSG_OPEN if n < 29 => Err(bad_length),
        MSG_OPEN => Ok(Message::Open(Open::decode_body(body)?)),
        MSG_UPDATE if n < 23 => Err(bad_length),
        MSG_UPDATE => Ok(Message::Update(Update::decode_body(body, opts)?)),
        MSG_NOTIFICATION if n < 21 => Err(DecodeError::NotificationTruncated),
        MSG_NOTIFICATION => Ok(Message::Notification(Notification::decode_body(body))),
        MSG_KEEPALIVE if n != 19 => Err(bad_length),
        MSG_KEEPALIVE => Ok(Message::Keepalive),
        MSG_ROUTE_REFRESH if n != 23 => Err(DecodeError::RouteRefreshLength(length)),
        MSG_ROUTE_REFRESH => Ok(Message::RouteRefresh(RouteRefresh {
            family: Family::new(u16::from_be_bytes([body[0], body[1]]), body[3]),
            subtype: body[2],
        })),
        t => Err(DecodeError::BadType(t)),
    }
}

/// Bounds-checked big-endian reader over a byte slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests;
