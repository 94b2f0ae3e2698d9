//! raft-lite: leader election and layer-2 ownership among the hosts.
//!
//! Where to look:
//! - "who owns this IP?" — [`core::Node::owned_ips`] on a host, [`core::Node::status`] on the
//!   leader (`owners`); the leader's decision is [`placement::choose_owner`].
//! - the safety argument (no two hosts ever hold a valid lease for one IP) — `docs/raft-lite.md`.
//! - bytes on the wire — [`wire`]; term and vote, which the driver keeps on disk — [`HardState`].
//!
//! Everything here is pure: time is a `std::time::Instant` passed in by the caller,
//! randomness comes from a seed. The UDP transport, the on-disk hard state and the task that
//! drives [`core::Node`] are in the `lb` crate (`lb::cluster::{transport, hard_state, driver}`).

pub mod core;
pub mod fragment;
pub mod lease;
pub mod message;
pub mod placement;
pub mod voters;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

pub use self::core::{Config, Input, MemberFilter, Node, Output, Role, Status};

/// A value that only saves work (a cache, a lower bound): equal and hashed alike whatever it
/// holds, so two nodes that differ only in it are the same state (the model checks compare
/// states). What it holds must never change an output, only how fast it is computed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memo<T>(pub(crate) T);
impl<T> PartialEq for Memo<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Memo<T> {}
impl<T> std::hash::Hash for Memo<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}
pub use self::message::Message;

/// What raft-lite must remember across a restart (Raft §5.2): stored durably by the driver
/// before any message of the step that changed it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<String>,
    /// The voter set this host uses, versioned (`None`: never recorded, e.g. a host that
    /// never ran: the configured one is version 0). The driver keeps it in a file of its
    /// own (`raft-voters.json`), so `raft-state.json` stays what earlier builds read.
    #[serde(skip)]
    pub voters: Option<voters::VoterState>,
}

/// One member of the cluster as listed in `[cluster] members` (same list on every host).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
}

/// Timers of raft-lite (`[cluster]` heartbeat, election_timeout, clock_drift).
///
/// `clock_drift` bounds how much the durations two hosts measure for the same real interval
/// (of up to two election timeouts) may differ. Lease = 3 × heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    pub heartbeat: Duration,
    /// Minimum election timeout E; timeouts are drawn from [E, 2E).
    pub election_timeout: Duration,
    pub clock_drift: Duration,
    pub lease: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("cluster heartbeat must be > 0")]
    ZeroHeartbeat,
    #[error(
        "cluster timing: lease ({lease:?} = 3 x heartbeat) + heartbeat ({heartbeat:?}) + clock_drift ({drift:?}) must be < election_timeout ({election:?})"
    )]
    LeaseTooLong {
        lease: Duration,
        heartbeat: Duration,
        drift: Duration,
        election: Duration,
    },
}

impl Timing {
    /// Validates `lease + heartbeat + clock_drift < election_timeout` with lease = 3 × heartbeat.
    pub fn new(
        heartbeat: Duration,
        election_timeout: Duration,
        clock_drift: Duration,
    ) -> Result<Self, TimingError> {
        if heartbeat.is_zero() {
            return Err(TimingError::ZeroHeartbeat);
        }
        let lease = heartbeat * 3;
        if lease + heartbeat + clock_drift >= election_timeout {
            return Err(TimingError::LeaseTooLong {
                lease,
                heartbeat,
                drift: clock_drift,
                election: election_timeout,
            });
        }
        Ok(Self {
            heartbeat,
            election_timeout,
            clock_drift,
            lease,
        })
    }
}

impl Default for Timing {
    /// heartbeat 50 ms, election timeout 300 ms, drift 25 ms, lease 150 ms.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            clock_drift: Duration::from_millis(25),
            lease: Duration::from_millis(150),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_passes_validation() {
        let d = Timing::default();
        assert_eq!(
            Timing::new(d.heartbeat, d.election_timeout, d.clock_drift),
            Ok(d)
        );
    }

    #[test]
    fn timing_rejects_lease_that_outlives_election_timeout() {
        let r = Timing::new(
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_millis(25),
        );
        assert!(matches!(r, Err(TimingError::LeaseTooLong { .. })));
    }
}
