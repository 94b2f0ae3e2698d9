//! raft-lite messages as the core sees them (the wire format is in `wire`).

use std::net::{IpAddr, SocketAddr};

/// One message; `term` travels in the datagram header.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message {
    pub term: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body {
    /// Pre-vote (Raft thesis §9.6) for term `term`; changes no state at the receiver.
    /// `version`: the candidate's committed voter-set version (a voter with a newer one
    /// refuses; on the wire only when > 0).
    PreVote {
        version: u64,
    },
    PreVoteReply {
        granted: bool,
    },
    /// Vote request. `transfer`: sent after the leader's `TimeoutNow` (planned hand-over), so
    /// voters disregard their promise to the leader (thesis §3.10). Leases do not depend on
    /// the leader, so a hand-over revokes none.
    Vote {
        transfer: bool,
        version: u64,
    },
    /// `ack_seq` works like an `Ack`'s; `report` tells the candidate what this host can
    /// announce and which IPs it holds (a new leader keeps current holders).
    VoteReply {
        granted: bool,
        ack_seq: u64,
        report: Option<Report>,
    },
    Heartbeat(Heartbeat),
    Ack(Ack),
    /// The leader hands over: campaign now (thesis §3.10).
    TimeoutNow,
    /// Holder → voter: promise me these IPs (quorum leases, docs/raft-lite.md §3).
    Renew(Renew),
    /// Voter → holder: promised, for the request numbered `seq`.
    Grant(Grant),
    /// Holder → voter: I stopped answering for these IPs; forget my promise.
    Release(Release),
    /// A host that is not a voter → every voter, while no leader has admitted it (or it
    /// has lost its leader): admit me at `addr`. Only the leader acts on it.
    Join(Join),
    /// Leader → voters: the admitted members (not voters) and their addresses, so voters
    /// promise to them and send their grants there (never to a datagram's source address).
    Roster(Roster),
    /// Leader → voters (and, committed, every host): voter set `version` (a change of the
    /// running set by one voter). Sent only once the voter set was changed.
    Voters(VoterSet),
}

/// A voter set as the leader proposes (`commit == false`: voters of the current set accept
/// it) or commits it (every host adopts it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VoterSet {
    pub version: u64,
    pub commit: bool,
    pub voters: Vec<(String, SocketAddr)>,
    /// The set of version − 1 (a host that adopts this one may lead and propose the next,
    /// which needs it).
    pub previous: Vec<(String, SocketAddr)>,
}

/// A member asking to be admitted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Join {
    /// Where this host receives raft-lite datagrams (its configured `address`).
    pub addr: SocketAddr,
    /// Digest of the voter list this host was configured with ([`voters_digest`]): a host
    /// whose voter list disagrees with the leader's is not admitted.
    pub voters: u64,
}

/// The leader's member list, version (term in the header, `seq`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Roster {
    pub seq: u64,
    pub members: Vec<(String, SocketAddr)>,
}

/// FNV-1a over the sorted `name=addr;` of the voters: equal on hosts configured with the
/// same voter list.
pub fn voters_digest<'a>(voters: impl IntoIterator<Item = (&'a str, SocketAddr)>) -> u64 {
    let mut v: Vec<String> = voters
        .into_iter()
        .map(|(n, a)| format!("{n}={a};"))
        .collect();
    v.sort();
    v.concat().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Leader → one follower: that follower's part of the ownership map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Heartbeat {
    /// Leader-local heartbeat number; the ack echoes it.
    pub seq: u64,
    /// Map version within the term: (term, epoch) orders every map ever made.
    pub epoch: u64,
    /// Eligibility version the leader has for this follower (follower resends when different).
    pub eligibility_known: u64,
    /// IPs this follower should hold in map version (term, `epoch`).
    pub ips: Vec<IpAddr>,
    /// IPs this follower is the successor for: it takes one over when the holder's promise
    /// at this follower's voter ends without the holder renewing it.
    pub standby: Vec<IpAddr>,
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
    /// The follower is shutting down (it has released its IPs).
    pub leaving: bool,
    pub report: Option<Report>,
    /// The sender's voter-set versions (on the wire only when not all 0).
    pub voters: VoterAck,
}

/// What an ack tells the leader about the sender's voter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VoterAck {
    /// The committed version it uses.
    pub committed: u64,
    /// The version of the proposal it accepted (0: none) and that proposal's digest.
    pub accepted: u64,
    pub accepted_digest: u64,
}

/// What a host can announce, and what it holds (a valid lease) as of `eligibility_version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Report {
    pub eligibility_version: u64,
    pub eligible: Vec<IpAddr>,
    pub held: Vec<IpAddr>,
}

/// A holder's renewal request to one voter. Every request of a holder has its own number
/// (shared with [`Release`]); a voter acts on a holder's requests in increasing order only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Renew {
    pub seq: u64,
    /// Version (term, epoch) of the map the holder has: a voter stops renewing a holder whose
    /// map is older than one another holder showed for the IP (the newest map wins).
    pub claim: (u64, u64),
    /// IPs the map gives this holder.
    pub ips: Vec<IpAddr>,
    /// IPs this holder is the map's successor for and takes over (or holds after taking
    /// over); they never make a voter stop renewing another holder.
    pub standby: Vec<IpAddr>,
    /// The holder's committed voter-set version: a voter at version v grants only requests
    /// showing v or v + 1 (on the wire only when > 0).
    pub version: u64,
}

/// A voter's promise: not to promise `ips` to any other holder until the voter's clock
/// reads (its receipt of request `seq`, or later) + lease.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub seq: u64,
    pub ips: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    pub seq: u64,
    pub ips: Vec<IpAddr>,
}
