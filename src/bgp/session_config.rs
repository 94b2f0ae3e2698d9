//! What a `[[bgp_peer]]` of lb.toml becomes for the pure session FSM
//! ([`SessionConfig`]): timers, passive, connect retry, graceful restart, dynamic AS.

use std::net::Ipv4Addr;

use super::fsm::{GracefulRestartOffer, SessionConfig};
use crate::config::BgpPeer;

/// The SessionConfig for `peer`.
pub fn session_config(peer: &BgpPeer, router_id: Ipv4Addr) -> SessionConfig {
    let mut c = SessionConfig::new(peer.my_asn, peer.peer_asn, router_id);
    c.dynamic_asn = peer.dynamic_asn;
    if let Some(t) = peer.connect_time {
        // A fixed ConnectRetryTimer, as MetalLB's connectTime (FRR `timers connect`).
        c.connect_retry_base = t;
        c.connect_retry_cap = t;
    }
    c.hold_time = u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX);
    let ka = peer.keepalive_time.as_secs();
    c.keepalive_time = (ka > 0).then(|| u16::try_from(ka).unwrap_or(u16::MAX));
    c.passive = peer.passive;
    c.first_connect_delay = peer.connect_delay;
    c.graceful_restart = peer.graceful_restart.map(|t| GracefulRestartOffer {
        restart_time: u16::try_from(t.as_secs()).unwrap_or(4095).min(4095),
        // lbd keeps nothing it received across a restart; every session of a process
        // says it has just restarted, so a peer never waits for our End-of-RIB to send.
        restarted: true,
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn peer(addr: &str, my: u32, their: u32) -> BgpPeer {
        BgpPeer {
            hold_time: Duration::from_secs(9),
            keepalive_time: Duration::from_secs(3),
            ..BgpPeer::new(my, their, addr.parse().unwrap())
        }
    }

    #[test]
    fn session_config_carries_timers_and_passive_flag() {
        let mut p = peer("10.0.0.1", 64500, 64501);
        p.passive = true;
        p.connect_delay = Duration::from_secs(2);
        let c = session_config(&p, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(c.hold_time, 9);
        assert_eq!(c.keepalive_time, Some(3));
        assert!(c.passive);
        assert_eq!(c.first_connect_delay, Duration::from_secs(2));
        assert_eq!((c.local_asn, c.peer_asn), (64500, 64501));
    }

    /// `connect_time` is the interval between attempts: a session built from the config
    /// redials a peer that refuses exactly that long after each failure, never doubling.
    #[test]
    fn connect_time_is_the_interval_between_connection_attempts() {
        use crate::bgp::fsm::{Input, Output, Session};
        let t0 = Instant::now();
        let dials = |peer: &BgpPeer| {
            let mut s = Session::new(session_config(peer, Ipv4Addr::new(10, 0, 0, 3)));
            let mut at = Vec::new();
            let mut now = t0;
            let mut out = s.step(now, Input::ManualStart);
            while at.len() < 4 {
                if out.contains(&Output::Connect) {
                    at.push(now.duration_since(t0).as_secs());
                    // The port is closed: the dial fails at once.
                    s.step(now, Input::TcpConnectFailed);
                }
                now = s.next_deadline().expect("a retry is scheduled");
                out = s.step(now, Input::Tick);
            }
            at
        };
        let mut p = peer("10.0.0.1", 64500, 64501);
        assert_eq!(dials(&p), [0, 1, 3, 7], "default: 1 s doubling");
        p.connect_time = Some(Duration::from_secs(10));
        assert_eq!(dials(&p), [0, 10, 20, 30]);
    }
}
