//! raft-lite datagrams: encoding, HMAC-SHA256 authentication and replay protection (pure).
//!
//! One message per UDP datagram, all integers big-endian:
//!
//! ```text
//!  0       4     5     6          6+n      14+n     22+n  23+n           len-32      len
//!  +-------+-----+-----+----------+--------+--------+-----+----------------+-----------+
//!  | "LBRL"| ver | n   | sender   | term   | seq    | kind| body           | HMAC-     |
//!  | magic | =2  | u8  | n bytes  | u64    | u64    | u8  | (per kind)     | SHA256    |
//!  +-------+-----+-----+----------+--------+--------+-----+----------------+-----------+
//!  \__________________________ authenticated by the MAC ______________________/
//! ```
//!
//! `seq` is per sender and starts at wall-clock nanoseconds at boot, so it keeps increasing
//! across restarts; the receiver keeps the highest seq seen and a 64-bit bitmap of the ones
//! below it (like IPsec's anti-replay window, RFC 4303 §3.4.3).
//!
//! Bodies: an IP list is `count u16` then per IP `4|6 u8` and 4 or 16 bytes; a report is
//! `version u64, eligible ips, held ips`; an optional value is `0|1 u8` then the value.
//! - 1 PreVote: empty            - 2 PreVoteReply: granted u8      - 3 Vote: transfer u8
//! - 4 VoteReply: granted u8, ack_seq u64, report?
//! - 5 Heartbeat: seq u64, epoch u64, eligibility_known u64, ips, standby ips
//! - 6 Ack: heartbeat u64, ack_seq u64, epoch u64, eligibility_version u64, leaving u8, report?
//! - 7 TimeoutNow: empty
//! - 8 Renew: seq u64, claim term u64, claim epoch u64, ips, standby ips
//! - 9 Grant: seq u64, ips                 - 10 Release: seq u64, ips
//! - 11 Join: addr, voters digest u64
//! - 12 Roster: seq u64, count u16, per member: name (len u8, bytes), addr
//! - 13 Fragment: index u8, count u8, chunk (a message that does not fit one datagram; see
//!   [`fragment`](super::fragment))
//! - 16 Voters: version u64, commit u8, voters, previous voters (each: count u16, per voter:
//!   name (len u8, bytes), addr)
//!
//! Once the voter set has been changed at run time (docs/raft-lite.md, "Changing the voter
//! set"), PreVote, Vote and Renew end with the sender's voter-set version (u64, not 0) and
//! Ack with three u64 (committed version, accepted version, accepted digest). Before that
//! they end where version 2 always ended them, byte for byte; a host of an older build drops
//! the longer forms (and kind 16) as `malformed`, so every host runs this build before the
//! first voter change.
//!
//! An address is `4|6 u8`, 4 or 16 bytes, port u16. Kinds 11 and 12 (members that do not
//! vote, issue 14) did not change the version: they are sent only when a non-voter host
//! exists, which needs every voter upgraded first; an older version-2 host drops them as
//! `malformed`, and every other kind is unchanged.
//!
//! Versions: 1 was the leader-derived lease protocol (up to commit da6889c); 2 adds quorum
//! leases (kinds 8–10, the heartbeat lost its lease echo and gained the successor list). The
//! two cannot work together (a version-1 leader's map would stop version-2 holders, a
//! version-1 host would count no version-2 promise), so each drops the other's datagrams as
//! `unsupported_version` before reading anything else: version 1 checks `ver == 1`, version 2
//! checks `ver == 2`. docs/operate.md gives the upgrade procedure.
//!
//! Size limit: [`MAX_DATAGRAM`] (60 000 bytes) per datagram. A message that fits (one host's
//! lists up to about 3 500 IPv6 or 11 000 IPv4 addresses) is one datagram, encoded exactly as
//! in the previous release. A larger one (a report of 50 000 eligible addresses, say) goes in
//! fragments, kind 13, each sealed on its own and reassembled by the receiver before the core
//! sees the message ([`Sealer::seal_all`], [`Authenticator::receive`], [`super::fragment`]): up
//! to 64 fragments, about 3.8 MB, ~760 000 IPv4 or ~220 000 IPv6 addresses per message. Only
//! a message no earlier release could send at all is fragmented, so a version-2 peer of the
//! previous release (which drops kind 13 as `malformed`) loses nothing it had before. An IP
//! list of 65 535 addresses or more (never in one datagram) has the count `0xffff` followed by
//! a `u32` count. [`Sealer::seal`] (one datagram) still refuses a message over the limit.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::fragment;
use super::message::{
    Ack, Body, Grant, Heartbeat, Join, Message, Release, Renew, Report, Roster, VoterAck, VoterSet,
};

pub const MAGIC: [u8; 4] = *b"LBRL";
/// The protocol version this build speaks (and the only one it accepts).
pub const VERSION: u8 = 2;
pub const MAC_LEN: usize = 32;
pub const MAX_DATAGRAM: usize = 60_000;
/// Smallest possible datagram: header with a 1-byte name, kind, MAC.
const MIN_LEN: usize = 4 + 1 + 1 + 1 + 8 + 8 + 1 + MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("truncated datagram")]
    Truncated,
    #[error("bad magic (not raft-lite)")]
    BadMagic,
    /// Another version than [`VERSION`] (version 1 says "unsupported (newer) protocol
    /// version" of version 2's datagrams).
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    #[error("sender is not a cluster member")]
    UnknownSender,
    #[error("bad MAC (wrong cluster key or forged)")]
    BadMac,
    #[error("replayed datagram")]
    Replayed,
    #[error("datagram older than the replay window")]
    TooOld,
    #[error("malformed body")]
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::UnsupportedVersion,
        DropReason::UnknownSender,
        DropReason::BadMac,
        DropReason::Replayed,
        DropReason::TooOld,
        DropReason::Malformed,
    ];

    /// The `reason` label of `lb_cluster_datagrams_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::BadMac => "bad_mac",
            DropReason::Replayed => "replayed",
            DropReason::TooOld => "too_old",
            DropReason::Malformed => "malformed",
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "raft-lite message to be sent is {size} bytes, over the {MAX_DATAGRAM}-byte limit (too many IPs for one host)"
    )]
    TooLarge { size: usize },
    #[error("member name {0:?} is longer than 255 bytes")]
    NameTooLong(String),
}

/// Signs outgoing messages of one sender.
#[derive(Clone)]
pub struct Sealer {
    name: String,
    key: Vec<u8>,
    next_seq: u64,
}

impl Sealer {
    /// `first_seq`: wall-clock nanoseconds at boot (increases across restarts).
    pub fn new(name: &str, key: &[u8], first_seq: u64) -> Result<Self, SealError> {
        if name.len() > 255 || name.is_empty() {
            return Err(SealError::NameTooLong(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            key: key.to_vec(),
            next_seq: first_seq,
        })
    }

    /// One datagram, or several fragments (kind 13, [`fragment`]) when the message does not
    /// fit one: a message that fits is encoded exactly as before (a peer of the previous
    /// release reads it), and only a message no release could send in one datagram is
    /// fragmented. [`SealError::TooLarge`] over [`fragment::MAX_FRAGMENTS`] fragments.
    pub fn seal_all(&mut self, msg: &Message) -> Result<Vec<Vec<u8>>, SealError> {
        let payload = encode_payload(msg);
        let head = header_len(&self.name);
        let size = head + payload.len() + MAC_LEN;
        let parts = if size <= MAX_DATAGRAM {
            vec![payload]
        } else {
            let chunk = MAX_DATAGRAM - head - fragment::HEAD_LEN - MAC_LEN;
            fragment::split(&payload, chunk).ok_or(SealError::TooLarge { size })?
        };
        Ok(parts
            .iter()
            .map(|p| {
                let seq = self.next_seq;
                self.next_seq += 1;
                frame(&self.name, msg.term, seq, p, &self.key)
            })
            .collect())
    }

    /// One datagram; refuses a message that does not fit (see [`Sealer::seal_all`]).
    pub fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, SealError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = encode(&self.name, seq, msg, &self.key);
        if bytes.len() > MAX_DATAGRAM {
            return Err(SealError::TooLarge { size: bytes.len() });
        }
        Ok(bytes)
    }
}

/// Encodes and signs; no size check (see [`Sealer::seal`]).
pub fn encode(sender: &str, seq: u64, msg: &Message, key: &[u8]) -> Vec<u8> {
    frame(sender, msg.term, seq, &encode_payload(msg), key)
}

/// The header (magic to seq) of a datagram from `sender`.
fn put_header(b: &mut Vec<u8>, sender: &str, term: u64, seq: u64) {
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    let name = &sender.as_bytes()[..sender.len().min(255)];
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(&term.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
}

/// Bytes before the kind byte in a datagram from `sender`.
pub(crate) fn header_len(sender: &str) -> usize {
    4 + 1 + 1 + sender.len().min(255) + 8 + 8
}

/// Header, `payload` (kind byte and body), MAC.
pub(crate) fn frame(sender: &str, term: u64, seq: u64, payload: &[u8], key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(header_len(sender) + payload.len() + MAC_LEN);
    put_header(&mut b, sender, term, seq);
    b.extend_from_slice(payload);
    append_mac(b, key)
}

/// The kind byte and the body of `msg` (what follows the header; the term is in the header).
pub(crate) fn encode_payload(msg: &Message) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    match &msg.body {
        Body::PreVote { version } => {
            b.push(1);
            put_version(&mut b, *version);
        }
        Body::PreVoteReply { granted } => {
            b.push(2);
            b.push(u8::from(*granted));
        }
        Body::Vote { transfer, version } => {
            b.push(3);
            b.push(u8::from(*transfer));
            put_version(&mut b, *version);
        }
        Body::VoteReply {
            granted,
            ack_seq,
            report,
        } => {
            b.push(4);
            b.push(u8::from(*granted));
            b.extend_from_slice(&ack_seq.to_be_bytes());
            put_report(&mut b, report.as_ref());
        }
        Body::Heartbeat(h) => {
            b.push(5);
            b.extend_from_slice(&h.seq.to_be_bytes());
            b.extend_from_slice(&h.epoch.to_be_bytes());
            b.extend_from_slice(&h.eligibility_known.to_be_bytes());
            put_ips(&mut b, &h.ips);
            put_ips(&mut b, &h.standby);
        }
        Body::Ack(a) => {
            b.push(6);
            b.extend_from_slice(&a.heartbeat.to_be_bytes());
            b.extend_from_slice(&a.ack_seq.to_be_bytes());
            b.extend_from_slice(&a.epoch.to_be_bytes());
            b.extend_from_slice(&a.eligibility_version.to_be_bytes());
            b.push(u8::from(a.leaving));
            put_report(&mut b, a.report.as_ref());
            if a.voters != VoterAck::default() {
                b.extend_from_slice(&a.voters.committed.to_be_bytes());
                b.extend_from_slice(&a.voters.accepted.to_be_bytes());
                b.extend_from_slice(&a.voters.accepted_digest.to_be_bytes());
            }
        }
        Body::TimeoutNow => b.push(7),
        Body::Renew(r) => {
            b.push(8);
            b.extend_from_slice(&r.seq.to_be_bytes());
            b.extend_from_slice(&r.claim.0.to_be_bytes());
            b.extend_from_slice(&r.claim.1.to_be_bytes());
            put_ips(&mut b, &r.ips);
            put_ips(&mut b, &r.standby);
            put_version(&mut b, r.version);
        }
        Body::Grant(g) => {
            b.push(9);
            b.extend_from_slice(&g.seq.to_be_bytes());
            put_ips(&mut b, &g.ips);
        }
        Body::Release(r) => {
            b.push(10);
            b.extend_from_slice(&r.seq.to_be_bytes());
            put_ips(&mut b, &r.ips);
        }
        Body::Join(j) => {
            b.push(11);
            put_addr(&mut b, &j.addr);
            b.extend_from_slice(&j.voters.to_be_bytes());
        }
        Body::Roster(r) => {
            b.push(12);
            b.extend_from_slice(&r.seq.to_be_bytes());
            put_members(&mut b, &r.members);
        }
        Body::Voters(v) => {
            b.push(16);
            b.extend_from_slice(&v.version.to_be_bytes());
            b.push(u8::from(v.commit));
            put_members(&mut b, &v.voters);
            put_members(&mut b, &v.previous);
        }
    }
    b
}

/// A voter-set version trails a message only when it is not 0: until the voter set is first
/// changed, every datagram is byte for byte what version 2 always sent.
fn put_version(b: &mut Vec<u8>, v: u64) {
    if v > 0 {
        b.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_members(b: &mut Vec<u8>, members: &[(String, SocketAddr)]) {
    let n = members.len().min(u16::MAX as usize);
    b.extend_from_slice(&(n as u16).to_be_bytes());
    for (name, addr) in &members[..n] {
        let name = &name.as_bytes()[..name.len().min(255)];
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        put_addr(b, addr);
    }
}

/// Appends HMAC-SHA256 of `payload` under `key` (the last step of encoding; also lets tests
/// and fuzzing reach the body decoder with arbitrary authenticated bytes).
pub fn append_mac(mut payload: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(&payload);
    payload.extend_from_slice(&mac.finalize().into_bytes());
    payload
}

/// `count u16`, or for 65 535 IPs and more (only in a fragmented message: at least 5 bytes
/// each, they never fit one datagram, so a peer of the previous release never sees it)
/// `0xffff` then `count u32`; then the IPs.
fn put_ips(b: &mut Vec<u8>, ips: &[IpAddr]) {
    let n = ips.len().min(u32::MAX as usize);
    if n < LONG_LIST as usize {
        b.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        b.extend_from_slice(&LONG_LIST.to_be_bytes());
        b.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for ip in &ips[..n] {
        put_ip(b, ip);
    }
}

/// The IP-list count that announces a `u32` count (see `put_ips`).
const LONG_LIST: u16 = u16::MAX;

fn put_addr(b: &mut Vec<u8>, a: &SocketAddr) {
    put_ip(b, &a.ip());
    b.extend_from_slice(&a.port().to_be_bytes());
}

fn put_ip(b: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            b.push(4);
            b.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b.push(6);
            b.extend_from_slice(&v6.octets());
        }
    }
}

fn put_report(b: &mut Vec<u8>, r: Option<&Report>) {
    match r {
        None => b.push(0),
        Some(r) => {
            b.push(1);
            b.extend_from_slice(&r.eligibility_version.to_be_bytes());
            put_ips(b, &r.eligible);
            put_ips(b, &r.held);
        }
    }
}

/// The parts of a datagram before authentication.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub sender: &'a str,
    pub term: u64,
    pub seq: u64,
    /// Offset of the kind byte.
    body_at: usize,
}

/// Checks framing, magic and version; does not check the MAC.
pub fn parse_header(d: &[u8]) -> Result<Header<'_>, DropReason> {
    if d.len() < 6 {
        return Err(DropReason::Truncated);
    }
    if d[..4] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    if d[4] != VERSION {
        return Err(DropReason::UnsupportedVersion);
    }
    if d.len() < MIN_LEN {
        return Err(DropReason::Truncated);
    }
    let n = d[5] as usize;
    let mut r = Reader {
        d: &d[..d.len() - MAC_LEN],
        at: 6,
    };
    let name = r.take(n).ok_or(DropReason::Truncated)?;
    let sender = std::str::from_utf8(name).map_err(|_| DropReason::UnknownSender)?;
    let term = r.u64().ok_or(DropReason::Truncated)?;
    let seq = r.u64().ok_or(DropReason::Truncated)?;
    if r.at >= r.d.len() {
        return Err(DropReason::Truncated);
    }
    Ok(Header {
        sender,
        term,
        seq,
        body_at: r.at,
    })
}

/// Decodes the body of an authenticated datagram.
fn decode_body(d: &[u8], h: &Header<'_>) -> Result<Message, DropReason> {
    decode_payload(h.term, &d[h.body_at..d.len() - MAC_LEN])
}

/// Decodes a kind byte and its body (one datagram's, or a reassembled message's).
pub(crate) fn decode_payload(term: u64, payload: &[u8]) -> Result<Message, DropReason> {
    let mut r = Reader { d: payload, at: 0 };
    let m = DropReason::Malformed;
    let kind = r.u8().ok_or(m)?;
    let body = match kind {
        1 => Body::PreVote {
            version: r.version().ok_or(m)?,
        },
        2 => Body::PreVoteReply {
            granted: r.bool().ok_or(m)?,
        },
        3 => Body::Vote {
            transfer: r.bool().ok_or(m)?,
            version: r.version().ok_or(m)?,
        },
        4 => Body::VoteReply {
            granted: r.bool().ok_or(m)?,
            ack_seq: r.u64().ok_or(m)?,
            report: r.report().ok_or(m)?,
        },
        5 => Body::Heartbeat(Heartbeat {
            seq: r.u64().ok_or(m)?,
            epoch: r.u64().ok_or(m)?,
            eligibility_known: r.u64().ok_or(m)?,
            ips: r.ips().ok_or(m)?,
            standby: r.ips().ok_or(m)?,
        }),
        6 => Body::Ack(Ack {
            heartbeat: r.u64().ok_or(m)?,
            ack_seq: r.u64().ok_or(m)?,
            epoch: r.u64().ok_or(m)?,
            eligibility_version: r.u64().ok_or(m)?,
            leaving: r.bool().ok_or(m)?,
            report: r.report().ok_or(m)?,
            voters: if r.at < r.d.len() {
                VoterAck {
                    committed: r.u64().ok_or(m)?,
                    accepted: r.u64().ok_or(m)?,
                    accepted_digest: r.u64().ok_or(m)?,
                }
            } else {
                VoterAck::default()
            },
        }),
        7 => Body::TimeoutNow,
        8 => Body::Renew(Renew {
            seq: r.u64().ok_or(m)?,
            claim: (r.u64().ok_or(m)?, r.u64().ok_or(m)?),
            ips: r.ips().ok_or(m)?,
            standby: r.ips().ok_or(m)?,
            version: r.version().ok_or(m)?,
        }),
        9 => Body::Grant(Grant {
            seq: r.u64().ok_or(m)?,
            ips: r.ips().ok_or(m)?,
        }),
        10 => Body::Release(Release {
            seq: r.u64().ok_or(m)?,
            ips: r.ips().ok_or(m)?,
        }),
        11 => Body::Join(Join {
            addr: r.addr().ok_or(m)?,
            voters: r.u64().ok_or(m)?,
        }),
        12 => {
            let seq = r.u64().ok_or(m)?;
            let members = r.members().ok_or(m)?;
            Body::Roster(Roster { seq, members })
        }
        16 => Body::Voters(VoterSet {
            version: r.u64().ok_or(m)?,
            commit: r.bool().ok_or(m)?,
            voters: r.members().ok_or(m)?,
            previous: r.members().ok_or(m)?,
        }),
        _ => return Err(m),
    };
    if r.at != r.d.len() {
        return Err(m); // trailing bytes
    }
    Ok(Message { term, body })
}

struct Reader<'a> {
    d: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.d.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn ip(&mut self) -> Option<IpAddr> {
        Some(match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(self.take(16)?).ok()?)),
            _ => return None,
        })
    }
    fn addr(&mut self) -> Option<SocketAddr> {
        let ip = self.ip()?;
        let port = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        Some(SocketAddr::new(ip, port))
    }
    fn ips(&mut self) -> Option<Vec<IpAddr>> {
        let n = match u16::from_be_bytes(self.take(2)?.try_into().ok()?) {
            LONG_LIST => u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize,
            n => usize::from(n),
        };
        let mut v = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            v.push(self.ip()?);
        }
        Some(v)
    }
    /// A trailing voter-set version: 0 when absent (the message ends here), else a u64
    /// that must not be 0.
    fn version(&mut self) -> Option<u64> {
        if self.at == self.d.len() {
            return Some(0);
        }
        self.u64().filter(|v| *v > 0)
    }
    fn members(&mut self) -> Option<Vec<(String, SocketAddr)>> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        let mut members = Vec::with_capacity(usize::from(n).min(4096));
        for _ in 0..n {
            let len = self.u8()? as usize;
            let name = std::str::from_utf8(self.take(len)?).ok()?;
            if name.is_empty() {
                return None;
            }
            members.push((name.to_owned(), self.addr()?));
        }
        Some(members)
    }
    /// `Some(None)`: absent; `None`: malformed.
    fn report(&mut self) -> Option<Option<Report>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(Report {
                eligibility_version: self.u64()?,
                eligible: self.ips()?,
                held: self.ips()?,
            })),
            _ => None,
        }
    }
}

/// Per-sender anti-replay window: highest seq and a bitmap of the 64 below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Window {
    highest: u64,
    /// Bit i set: `highest - i` was seen (bit 0 is `highest` itself).
    seen: u64,
}

impl Window {
    fn check(&self, seq: u64) -> Result<(), DropReason> {
        if self.seen == 0 || seq > self.highest {
            return Ok(());
        }
        let back = self.highest - seq;
        if back >= 64 {
            Err(DropReason::TooOld)
        } else if self.seen & (1 << back) != 0 {
            Err(DropReason::Replayed)
        } else {
            Ok(())
        }
    }
    fn accept(&mut self, seq: u64) {
        if self.seen == 0 {
            *self = Window {
                highest: seq,
                seen: 1,
            };
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift } | 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
    }
}

/// Receiver side: authenticates datagrams from the members and drops replays. Pure.
#[derive(Clone, Debug)]
pub struct Authenticator {
    key: Vec<u8>,
    me: String,
    windows: BTreeMap<String, Window>,
    drops: BTreeMap<DropReason, u64>,
    /// Incomplete fragmented messages, per sender (only senders whose MAC checked).
    reassembly: BTreeMap<String, fragment::Reassembler>,
}

impl Authenticator {
    /// `members`: every member name (datagrams claiming to be from `me` are dropped too).
    pub fn new<'a>(key: &[u8], me: &str, members: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            key: key.to_vec(),
            me: me.to_owned(),
            windows: members
                .into_iter()
                .filter(|m| *m != me)
                .map(|m| (m.to_owned(), Window::default()))
                .collect(),
            drops: BTreeMap::new(),
            reassembly: BTreeMap::new(),
        }
    }

    /// Returns the sender and the message, or why it was dropped (and counts the drop).
    pub fn open(&mut self, d: &[u8]) -> Result<(String, Message), DropReason> {
        let r = self.open_inner(d);
        if let Err(reason) = r {
            *self.drops.entry(reason).or_default() += 1;
        }
        r
    }

    /// Like [`Authenticator::open`], and fragments (kind 13) are reassembled: `Ok(None)`
    /// for a fragment taken (the message is not whole yet), `Ok(Some(..))` for a whole
    /// message, in one datagram or the last of its fragments to arrive.
    pub fn receive(
        &mut self,
        now: Instant,
        d: &[u8],
    ) -> Result<Option<(String, Message)>, DropReason> {
        let r = self.receive_inner(now, d);
        if let Err(reason) = r {
            *self.drops.entry(reason).or_default() += 1;
        }
        r
    }

    fn receive_inner(
        &mut self,
        now: Instant,
        d: &[u8],
    ) -> Result<Option<(String, Message)>, DropReason> {
        let h = self.authenticate(d)?;
        let payload = &d[h.body_at..d.len() - MAC_LEN];
        if payload.first() != Some(&fragment::KIND) {
            return self.open_inner(d).map(Some);
        }
        let f = fragment::parse(&payload[1..])?;
        // Authentic and well-formed: its sequence number is used.
        let sender = h.sender.to_owned();
        if let Some(w) = self.windows.get_mut(&sender) {
            w.accept(h.seq);
        }
        let whole = self
            .reassembly
            .entry(sender.clone())
            .or_default()
            .add(now, h.seq, h.term, f)?;
        match whole {
            None => Ok(None),
            Some((term, payload)) => {
                if payload.first() == Some(&fragment::KIND) {
                    return Err(DropReason::Malformed); // fragments of fragments
                }
                decode_payload(term, &payload).map(|m| Some((sender, m)))
            }
        }
    }

    /// Drops incomplete fragmented messages older than [`fragment::TIMEOUT`] (of senders
    /// that went quiet; a sender's own fragments expire its old ones).
    pub fn expire(&mut self, now: Instant) {
        for r in self.reassembly.values_mut() {
            r.expire(now);
        }
    }

    /// Reassembly counters, all senders together.
    pub fn reassembly_stats(&self) -> fragment::ReassemblyStats {
        let mut s = fragment::ReassemblyStats::default();
        for r in self.reassembly.values() {
            s.add(&r.stats());
        }
        s
    }

    /// Bytes held in incomplete fragmented messages.
    pub fn reassembly_held_bytes(&self) -> usize {
        self.reassembly.values().map(|r| r.held_bytes()).sum()
    }

    /// Header, known sender, MAC, anti-replay window (not advanced).
    fn authenticate<'d>(&self, d: &'d [u8]) -> Result<Header<'d>, DropReason> {
        let h = parse_header(d)?;
        if h.sender == self.me {
            return Err(DropReason::UnknownSender);
        }
        let window = *self
            .windows
            .get(h.sender)
            .ok_or(DropReason::UnknownSender)?;
        let split = d.len() - MAC_LEN;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&d[..split]);
        mac.verify_slice(&d[split..])
            .map_err(|_| DropReason::BadMac)?;
        window.check(h.seq)?;
        Ok(h)
    }

    fn open_inner(&mut self, d: &[u8]) -> Result<(String, Message), DropReason> {
        let h = self.authenticate(d)?;
        let msg = decode_body(d, &h)?;
        let sender = h.sender.to_owned();
        if let Some(w) = self.windows.get_mut(&sender) {
            w.accept(h.seq);
        }
        Ok((sender, msg))
    }

    /// Drop counters by reason (for metrics and rate-limited logs).
    pub fn drops(&self) -> &BTreeMap<DropReason, u64> {
        &self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_is_listed_once_with_its_own_snake_case_label() {
        let labels: std::collections::BTreeSet<&str> =
            DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        assert_eq!(DropReason::BadMac.label(), "bad_mac");
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::new(KEY, "b", ["a", "b", "c"])
    }

    fn ip4(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn samples() -> Vec<Message> {
        let report = Report {
            eligibility_version: 9,
            eligible: vec![ip4("10.0.0.1"), "fd00::1".parse().expect("ip")],
            held: vec![ip4("10.0.0.2")],
        };
        [
            Body::PreVote { version: 0 },
            Body::PreVoteReply { granted: true },
            Body::Vote {
                transfer: true,
                version: 0,
            },
            Body::VoteReply {
                granted: true,
                ack_seq: 77,
                report: Some(report.clone()),
            },
            Body::VoteReply {
                granted: false,
                ack_seq: 0,
                report: None,
            },
            Body::Heartbeat(Heartbeat {
                seq: 5,
                epoch: 6,
                eligibility_known: 8,
                ips: vec![ip4("10.10.100.200"), "fd00:10::5".parse().expect("ip")],
                standby: vec![ip4("10.10.100.201")],
            }),
            Body::Heartbeat(Heartbeat {
                seq: 1,
                epoch: 1,
                eligibility_known: 0,
                ips: vec![],
                standby: vec![],
            }),
            Body::Ack(Ack {
                heartbeat: 1,
                ack_seq: 2,
                epoch: 3,
                eligibility_version: 4,
                leaving: true,
                report: Some(report.clone()),
                voters: VoterAck::default(),
            }),
            Body::Ack(Ack {
                heartbeat: 1,
                ack_seq: 2,
                epoch: 3,
                eligibility_version: 4,
                leaving: false,
                report: Some(report),
                voters: VoterAck {
                    committed: 1,
                    accepted: 2,
                    accepted_digest: 0xfeed,
                },
            }),
            Body::TimeoutNow,
            Body::Renew(Renew {
                seq: 9,
                claim: (3, 4),
                ips: vec![ip4("10.10.100.200")],
                standby: vec!["fd00:10::5".parse().expect("ip")],
                version: 0,
            }),
            Body::Renew(Renew {
                seq: 9,
                claim: (3, 4),
                ips: vec![],
                standby: vec![],
                version: 2,
            }),
            Body::Grant(Grant {
                seq: 9,
                ips: vec![ip4("10.10.100.200")],
            }),
            Body::Release(Release {
                seq: 10,
                ips: vec![],
            }),
            Body::Join(Join {
                addr: "[fd00::7]:7946".parse().expect("addr"),
                voters: 0xdead_beef,
            }),
            Body::Roster(Roster {
                seq: 3,
                members: vec![
                    ("worker-9".into(), "10.0.0.9:7946".parse().expect("addr")),
                    ("w".into(), "[fd00::9]:1".parse().expect("addr")),
                ],
            }),
            Body::Roster(Roster {
                seq: 4,
                members: vec![],
            }),
            Body::Voters(VoterSet {
                version: 2,
                commit: true,
                voters: vec![("a".into(), "10.0.0.1:7946".parse().expect("addr"))],
                previous: vec![],
            }),
            // The voter-set versions that trail these once the set has changed.
            Body::PreVote { version: 3 },
            Body::Vote {
                transfer: false,
                version: 7,
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            term: 100 + i as u64,
            body,
        })
        .collect()
    }

    #[test]
    fn at_voter_set_version_0_messages_end_where_version_2_always_ended_them() {
        // Hosts of the previous release drop trailing bytes as malformed: until the voter
        // set is changed, nothing may trail.
        let pv = encode(
            "a",
            1,
            &Message {
                term: 1,
                body: Body::PreVote { version: 0 },
            },
            KEY,
        );
        assert_eq!(pv.len(), 4 + 1 + 1 + 1 + 8 + 8 + 1 + MAC_LEN);
        let renew = |version| {
            encode(
                "a",
                1,
                &Message {
                    term: 1,
                    body: Body::Renew(Renew {
                        seq: 1,
                        claim: (1, 1),
                        ips: vec![],
                        standby: vec![],
                        version,
                    }),
                },
                KEY,
            )
            .len()
        };
        assert_eq!(
            renew(0),
            4 + 1 + 1 + 1 + 8 + 8 + 1 + 8 + 16 + 2 + 2 + MAC_LEN
        );
        assert_eq!(renew(5), renew(0) + 8);
    }

    #[test]
    fn every_message_kind_round_trips() {
        let mut a = auth();
        for (i, m) in samples().into_iter().enumerate() {
            let d = encode("a", 1000 + i as u64, &m, KEY);
            assert_eq!(a.open(&d), Ok(("a".to_string(), m)));
        }
    }

    #[test]
    fn pre_vote_bytes_match_the_documented_layout() {
        let d = encode(
            "a",
            0x0102_0304_0506_0708,
            &Message {
                term: 3,
                body: Body::PreVote { version: 0 },
            },
            KEY,
        );
        let expected_head: &[u8] = &[
            b'L', b'B', b'R', b'L', 2, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 1,
        ];
        assert_eq!(&d[..expected_head.len()], expected_head);
        assert_eq!(d.len(), expected_head.len() + MAC_LEN);
        let mut mac = HmacSha256::new_from_slice(KEY).expect("key");
        mac.update(expected_head);
        assert_eq!(&d[expected_head.len()..], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn replayed_datagram_is_dropped_and_counted() {
        let mut a = auth();
        let d = encode("a", 50, &samples()[0], KEY);
        assert!(a.open(&d).is_ok());
        assert_eq!(a.open(&d), Err(DropReason::Replayed));
        assert_eq!(a.drops().get(&DropReason::Replayed), Some(&1));
    }

    #[test]
    fn reordered_datagrams_inside_the_window_are_accepted() {
        let mut a = auth();
        let m = &samples()[0];
        for seq in [100, 98, 99, 163, 101] {
            assert!(a.open(&encode("a", seq, m, KEY)).is_ok(), "seq {seq}");
        }
        assert_eq!(a.open(&encode("a", 99, m, KEY)), Err(DropReason::TooOld));
        assert_eq!(a.open(&encode("a", 101, m, KEY)), Err(DropReason::Replayed));
    }

    #[test]
    fn sequence_window_is_per_sender() {
        let mut a = auth();
        let m = &samples()[0];
        assert!(a.open(&encode("a", 500, m, KEY)).is_ok());
        assert!(a.open(&encode("c", 500, m, KEY)).is_ok());
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let mut a = auth();
        let d = encode("a", 1, &samples()[0], b"another key");
        assert_eq!(a.open(&d), Err(DropReason::BadMac));
    }

    #[test]
    fn flipped_bit_is_bad_mac_and_does_not_consume_the_sequence_number() {
        let mut a = auth();
        let good = encode("a", 7, &samples()[5], KEY);
        let mut bad = good.clone();
        let last = bad.len() - MAC_LEN - 1;
        bad[last] ^= 1;
        assert_eq!(a.open(&bad), Err(DropReason::BadMac));
        assert!(
            a.open(&good).is_ok(),
            "a forgery must not burn the real seq"
        );
    }

    #[test]
    fn unknown_and_own_sender_are_dropped() {
        let mut a = auth();
        let m = &samples()[0];
        assert_eq!(
            a.open(&encode("mallory", 1, m, KEY)),
            Err(DropReason::UnknownSender)
        );
        assert_eq!(
            a.open(&encode("b", 1, m, KEY)),
            Err(DropReason::UnknownSender)
        );
    }

    #[test]
    fn newer_version_is_dropped_not_parsed() {
        let mut a = auth();
        let mut d = encode("a", 1, &samples()[0], KEY);
        d[4] = 3;
        assert_eq!(a.open(&d), Err(DropReason::UnsupportedVersion));
        assert_eq!(a.drops().get(&DropReason::UnsupportedVersion), Some(&1));
    }

    /// A version-1 datagram (the leader-derived leases before quorum leases) is dropped as
    /// unsupported before its MAC or body is looked at, as version 1 drops version 2: a mixed
    /// cluster splits into two groups that ignore each other (docs/operate.md, upgrading).
    #[test]
    fn version_one_datagrams_are_dropped_as_unsupported() {
        let mut a = auth();
        // A version-1 heartbeat as the previous release encoded it (echo and leave_ok).
        let mut p = Vec::new();
        p.extend_from_slice(b"LBRL");
        p.push(1);
        p.push(1);
        p.push(b'a');
        p.extend_from_slice(&3u64.to_be_bytes());
        p.extend_from_slice(&77u64.to_be_bytes());
        p.push(5);
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&1u64.to_be_bytes());
        p.push(0);
        p.extend_from_slice(&0u64.to_be_bytes());
        p.push(0);
        p.extend_from_slice(&0u16.to_be_bytes());
        let d = append_mac(p, KEY);
        assert_eq!(a.open(&d), Err(DropReason::UnsupportedVersion));
        // And a version-2 datagram carries 2 in the byte a version-1 host compares with 1.
        let d = encode("a", 78, &samples()[0], KEY);
        assert_eq!(d[4], 2);
        assert_ne!(d[4], 1);
    }

    #[test]
    fn bad_magic_and_truncation_are_classified() {
        let mut a = auth();
        let d = encode("a", 1, &samples()[3], KEY);
        let mut m = d.clone();
        m[0] = b'X';
        assert_eq!(a.open(&m), Err(DropReason::BadMagic));
        assert_eq!(a.open(&d[..3]), Err(DropReason::Truncated));
        assert_eq!(a.open(&d[..20]), Err(DropReason::Truncated));
        // Cutting the tail breaks the MAC (the receiver cannot tell a cut from a forgery).
        assert_eq!(a.open(&d[..d.len() - 1]), Err(DropReason::BadMac));
    }

    #[test]
    fn authentic_but_malformed_body_is_malformed() {
        let mut a = auth();
        let mut d = encode("a", 1, &samples()[1], KEY);
        d.truncate(d.len() - MAC_LEN);
        let kind_at = d.len() - 2;
        d[kind_at] = 99; // unknown kind
        let d = append_mac(d, KEY);
        assert_eq!(a.open(&d), Err(DropReason::Malformed));
    }

    #[test]
    fn sealer_refuses_oversized_messages_and_counts_sequence() {
        let mut s = Sealer::new("a", KEY, 10).expect("sealer");
        let ips: Vec<IpAddr> = (0..4000u32)
            .map(|i| IpAddr::V6(Ipv6Addr::from(u128::from(i))))
            .collect();
        let big = Message {
            term: 1,
            body: Body::Heartbeat(Heartbeat {
                seq: 1,
                epoch: 1,
                eligibility_known: 0,
                ips,
                standby: vec![],
            }),
        };
        assert!(matches!(s.seal(&big), Err(SealError::TooLarge { .. })));
        let d = s.seal(&samples()[0]).expect("small");
        assert_eq!(parse_header(&d).expect("header").seq, 11);
    }

    #[test]
    fn three_thousand_ipv4_addresses_fit_one_heartbeat() {
        let ips: Vec<IpAddr> = (0..3000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(i)))
            .collect();
        let mut s = Sealer::new("worker-1", KEY, 1).expect("sealer");
        let m = Message {
            term: 1,
            body: Body::Heartbeat(Heartbeat {
                seq: 1,
                epoch: 1,
                eligibility_known: 1,
                ips,
                standby: vec![],
            }),
        };
        let d = s.seal(&m).expect("fits");
        assert!(d.len() < MAX_DATAGRAM);
    }

    /// A report of 50,000 eligible addresses (IPv4 and IPv6) and 10,000 held ones: ~560 kB.
    fn big_report_message() -> Message {
        let eligible: Vec<IpAddr> = (0..50_000u32)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
                } else {
                    IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)))
                }
            })
            .collect();
        Message {
            term: 7,
            body: Body::Ack(Ack {
                heartbeat: 1,
                ack_seq: 2,
                epoch: 3,
                eligibility_version: 4,
                leaving: false,
                report: Some(Report {
                    eligibility_version: 4,
                    held: eligible[..10_000].to_vec(),
                    eligible,
                }),
                voters: VoterAck::default(),
            }),
        }
    }

    #[test]
    fn a_message_that_fits_is_sealed_exactly_as_before() {
        for m in samples() {
            let mut one = Sealer::new("a", KEY, 40).expect("sealer");
            let mut all = Sealer::new("a", KEY, 40).expect("sealer");
            assert_eq!(
                all.seal_all(&m).expect("fits"),
                vec![one.seal(&m).expect("fits")]
            );
        }
        // The largest heartbeat that fits one datagram is still one datagram.
        let n = (MAX_DATAGRAM - header_len("a") - 1 - 24 - 4 - MAC_LEN) / 5;
        let m = Message {
            term: 1,
            body: Body::Heartbeat(Heartbeat {
                seq: 1,
                epoch: 1,
                eligibility_known: 1,
                ips: (0..n as u32).map(|i| IpAddr::V4(i.into())).collect(),
                standby: vec![],
            }),
        };
        let d = Sealer::new("a", KEY, 1)
            .expect("sealer")
            .seal_all(&m)
            .expect("fits");
        assert_eq!(d.len(), 1);
        assert!(d[0].len() <= MAX_DATAGRAM && d[0].len() > MAX_DATAGRAM - 5);
    }

    #[test]
    fn a_large_report_travels_in_fragments_each_under_the_limit_and_arrives_whole() {
        let m = big_report_message();
        let mut s = Sealer::new("a", KEY, 1000).expect("sealer");
        let parts = s.seal_all(&m).expect("fragments");
        assert!(parts.len() >= 10, "{} fragments", parts.len());
        assert!(parts.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let mut a = auth();
        let t = crate::test_origin();
        let (last, rest) = parts.split_last().expect("parts");
        for d in rest {
            assert_eq!(a.receive(t, d), Ok(None));
        }
        assert!(a.reassembly_held_bytes() > 500_000);
        assert_eq!(a.receive(t, last), Ok(Some(("a".to_string(), m))));
        assert_eq!(a.reassembly_held_bytes(), 0);
        assert_eq!(a.reassembly_stats().reassembled, 1);
        // Sequence numbers went on from the fragments.
        let d = s.seal(&samples()[0]).expect("small");
        assert_eq!(
            parse_header(&d).expect("header").seq,
            1000 + parts.len() as u64
        );
    }

    #[test]
    fn fragments_reordered_and_replayed_give_the_message_once() {
        let m = big_report_message();
        let parts = Sealer::new("a", KEY, 1)
            .expect("sealer")
            .seal_all(&m)
            .expect("fragments");
        let mut a = auth();
        let t = crate::test_origin();
        let mut delivered = Vec::new();
        for k in (0..parts.len()).rev() {
            if let Some(x) = a.receive(t, &parts[k]).expect("accepted") {
                delivered.push(x);
            }
            assert_eq!(a.receive(t, &parts[k]), Err(DropReason::Replayed));
        }
        assert_eq!(delivered, vec![("a".to_string(), m)]);
    }

    #[test]
    fn a_lost_fragment_loses_the_message_and_its_memory_is_freed() {
        let m = big_report_message();
        let mut s = Sealer::new("a", KEY, 1).expect("sealer");
        let parts = s.seal_all(&m).expect("fragments");
        let mut a = auth();
        let t = crate::test_origin();
        for d in parts.iter().skip(1) {
            assert_eq!(a.receive(t, d), Ok(None));
        }
        a.expire(t + fragment::TIMEOUT);
        assert_eq!(a.reassembly_held_bytes(), 0);
        assert_eq!(a.reassembly_stats().expired, 1);
        // The next one arrives.
        for d in s.seal_all(&m).expect("fragments") {
            if let Some((_, got)) = a.receive(t, &d).expect("accepted") {
                assert_eq!(got, m);
            }
        }
        assert_eq!(a.reassembly_stats().reassembled, 1);
    }

    #[test]
    fn forged_fragments_fail_the_mac_and_hold_no_memory() {
        let m = big_report_message();
        let mut forger = Sealer::new("a", b"not the key", 1).expect("sealer");
        let mut a = auth();
        let t = crate::test_origin();
        for _ in 0..3 {
            for d in forger.seal_all(&m).expect("fragments") {
                assert_eq!(a.receive(t, &d), Err(DropReason::BadMac));
            }
        }
        assert_eq!(a.reassembly_held_bytes(), 0);
        assert_eq!(a.reassembly_stats().fragments, 0);
    }

    #[test]
    fn fragments_are_malformed_to_a_receiver_that_does_not_reassemble() {
        // `open` decodes one datagram as the previous release did: kind 13 is unknown.
        let parts = Sealer::new("a", KEY, 1)
            .expect("sealer")
            .seal_all(&big_report_message())
            .expect("fragments");
        let mut a = auth();
        assert_eq!(a.open(&parts[0]), Err(DropReason::Malformed));
        assert_eq!(parts[0][4], VERSION, "the version is unchanged");
    }

    #[test]
    fn fragment_header_bytes_match_the_documented_layout() {
        let parts = Sealer::new("a", KEY, 0x10)
            .expect("sealer")
            .seal_all(&big_report_message())
            .expect("fragments");
        let n = parts.len() as u8;
        for (i, d) in parts.iter().enumerate() {
            let head: &[u8] = &[b'L', b'B', b'R', b'L', 2, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 7];
            assert_eq!(&d[..15], head);
            assert_eq!(d[15..23], (0x10 + i as u64).to_be_bytes());
            assert_eq!(d[23..26], [fragment::KIND, i as u8, n]);
        }
        // The first chunk starts with the message's own kind byte (6, Ack).
        assert_eq!(parts[0][26], 6);
    }

    #[test]
    fn a_list_of_more_than_65535_addresses_round_trips() {
        let ips: Vec<IpAddr> = (0..70_000u32).map(|i| IpAddr::V4(i.into())).collect();
        let m = Message {
            term: 1,
            body: Body::Grant(Grant { seq: 3, ips }),
        };
        let parts = Sealer::new("a", KEY, 1)
            .expect("sealer")
            .seal_all(&m)
            .expect("fragments");
        let mut a = auth();
        let t = crate::test_origin();
        let got: Vec<_> = parts
            .iter()
            .filter_map(|d| a.receive(t, d).expect("accepted"))
            .collect();
        assert_eq!(got, vec![("a".to_string(), m)]);
    }

    #[test]
    fn a_message_over_the_fragment_limit_is_refused() {
        let ips: Vec<IpAddr> = (0..250_000u128).map(|i| IpAddr::V6(i.into())).collect();
        let m = Message {
            term: 1,
            body: Body::Release(Release { seq: 1, ips }),
        };
        let mut s = Sealer::new("a", KEY, 1).expect("sealer");
        assert!(matches!(s.seal_all(&m), Err(SealError::TooLarge { .. })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_authenticated_bytes_decode_or_error(payload: Vec<u8>) {
            let mut a = auth();
            let mut p = encode("a", 1, &samples()[0], KEY);
            p.truncate(6 + 1 + 16); // a valid header from "a", up to the kind byte
            p.extend_from_slice(&payload);
            let _ = a.open(&append_mac(p, KEY));
        }
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let mut a = auth();
        let valid: Vec<Vec<u8>> = samples()
            .iter()
            .enumerate()
            .map(|(i, m)| encode("a", i as u64, m, KEY))
            .collect();
        let mut x: u64 = 0x1234_5678;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut d = valid[i % valid.len()].clone();
            match next() % 4 {
                0 => {
                    let at = next() as usize % d.len();
                    d[at] ^= 1 << (next() % 8);
                }
                1 => d.truncate(next() as usize % (d.len() + 1)),
                2 => d.extend((0..next() % 40).map(|_| next() as u8)),
                _ => d = (0..next() % 120).map(|_| next() as u8).collect(),
            }
            let _ = a.open(&d);
            let _ = parse_header(&d);
            // Re-signed, the mutation reaches the body decoder.
            if d.len() > MAC_LEN {
                let payload = d[..d.len() - MAC_LEN].to_vec();
                let _ = a.open(&append_mac(payload, KEY));
            }
        }
    }
}
