//! raft-lite messages as the core sees them (the wire format is in `wire`).

use std::net::IpAddr;

/// One message; `term` travels in the datagram header.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message {
    pub term: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body {
    /// Pre-vote (Raft thesis §9.6) for term `term`; changes no state at the receiver.
    PreVote,
    PreVoteReply {
        granted: bool,
    },
    /// Vote request. `transfer`: sent after the leader's `TimeoutNow` (planned handover, the
    /// old leader has revoked every lease), so voters disregard their promise.
    Vote {
        transfer: bool,
    },
    /// `ack_seq` works like an `Ack`'s: the new leader's first heartbeat may echo it.
    VoteReply {
        granted: bool,
        ack_seq: u64,
        report: Option<Report>,
    },
    Heartbeat(Heartbeat),
    Ack(Ack),
    /// The leader hands over: campaign now (thesis §3.10).
    TimeoutNow,
}

/// Leader → one follower: that follower's part of the ownership map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Heartbeat {
    /// Leader-local heartbeat number; the ack echoes it.
    pub seq: u64,
    /// Map version within the term.
    pub epoch: u64,
    /// Latest ack sequence received from this follower; the follower's lease runs from when
    /// it sent that ack. `None`: no lease extension in this heartbeat.
    pub echo: Option<u64>,
    /// Eligibility version the leader has for this follower (follower resends when different).
    pub eligibility_known: u64,
    /// The leader knows this follower is leaving and has moved all its IPs away.
    pub leave_ok: bool,
    /// IPs this follower owns in map version `epoch`.
    pub ips: Vec<IpAddr>,
}

/// Follower → leader.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ack {
    /// The heartbeat acknowledged.
    pub heartbeat: u64,
    /// Follower-local ack number (starts at the incarnation number).
    pub ack_seq: u64,
    /// Highest map epoch applied.
    pub epoch: u64,
    pub eligibility_version: u64,
    /// The follower is shutting down and asks to have its IPs moved.
    pub leaving: bool,
    pub report: Option<Report>,
}

/// What a host can announce, and what it held before the current term.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Report {
    pub eligibility_version: u64,
    pub eligible: Vec<IpAddr>,
    pub held: Vec<IpAddr>,
}
