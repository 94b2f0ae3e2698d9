//! Every BFD session of this host, pure: demultiplexing of received packets, discriminator
//! allocation, replacement and removal of sessions, and the status each peer's watcher sees.
//! The UDP sockets are the driver's (`lb::bfd::driver`); it opens one per session when told
//! ([`Output::Open`]) and sends what [`Output::Send`] says.
//!
//! Demultiplexing (RFC 5880 §6.8.6): by Your Discriminator when non-zero, else by the
//! source address (the peer's address); a packet whose source is not the session's peer is
//! dropped. Received packets whose TTL / hop limit is not 255 are dropped (RFC 5881 §5,
//! GTSM). Discriminators are allocated from a random non-zero start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::codec::{ControlPacket, Diag, State, decode};
use super::session::{self, Jitter, Session, Timers};

/// RFC 5881 §5: the TTL / hop limit sent and required on receipt.
pub const TTL: u8 = 255;
/// RFC 5881 §4: source ports are in this range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// What the driver publishes about one peer's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdStatus {
    pub peer: IpAddr,
    pub state: State,
    pub diag: Diag,
    pub remote_state: State,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// Times the session left Up for a path failure (detection timeout or the peer
    /// signalling Down); a peer's AdminDown does not count (RFC 5882 §3.2). The BGP peer
    /// task resets its session when this grows.
    pub failures: u64,
    pub up_since: Option<Instant>,
}

impl BfdStatus {
    /// Before the session's first step.
    pub fn initial(peer: IpAddr) -> Self {
        BfdStatus {
            peer,
            state: State::AdminDown,
            diag: Diag::None,
            remote_state: State::Down,
            local_discriminator: 0,
            remote_discriminator: 0,
            failures: 0,
            up_since: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Start a session to `peer` from `source` (`None`: the address the kernel picks);
    /// replaces an existing session to the same peer.
    Add {
        peer: IpAddr,
        source: Option<IpAddr>,
        timers: Timers,
    },
    /// New intervals (a Poll Sequence while Up).
    SetTimers {
        peer: IpAddr,
        timers: Timers,
    },
    /// The session goes AdminDown (diag 7, RFC 5880 §6.8.16), keeps telling the peer for a
    /// detection time, then ends.
    Remove {
        peer: IpAddr,
    },
    /// Every session sends AdminDown once, then [`Output::Stopped`].
    Shutdown,
    /// A datagram on the BFD port.
    Datagram {
        from: IpAddr,
        ttl: Option<u8>,
        bytes: Vec<u8>,
    },
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open session `discr`'s send socket: bound to `source` (`None`: any) and a source port
    /// in 49152–65535, trying from `port_hint` (RFC 5881 §4), TTL / hop limit 255.
    Open {
        discr: u32,
        peer: IpAddr,
        source: Option<IpAddr>,
        port_hint: u16,
    },
    /// Session `discr` ended: close its socket.
    Close {
        discr: u32,
    },
    /// Send `packet` on session `discr`'s socket to the peer.
    Send {
        discr: u32,
        peer: IpAddr,
        packet: ControlPacket,
    },
    /// The status of the session a watcher of `peer` follows changed.
    Status {
        discr: u32,
        status: BfdStatus,
    },
    Log(Event),
    /// After [`Input::Shutdown`]: every session has said AdminDown.
    Stopped,
}

/// What is worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Added {
        peer: IpAddr,
        discr: u32,
        timers: Timers,
    },
    Removed {
        peer: IpAddr,
    },
    Up {
        peer: IpAddr,
        source: Option<IpAddr>,
    },
    /// Left Up for a path failure (counted in [`BfdStatus::failures`]).
    Failed {
        peer: IpAddr,
        diag: Diag,
    },
    /// Left Up administratively (this side or the peer's AdminDown).
    AdminDown {
        peer: IpAddr,
        state: State,
        diag: Diag,
        remote: State,
    },
    /// Any other state change (debug).
    State {
        peer: IpAddr,
        from: State,
        to: State,
        diag: Diag,
    },
    /// A received packet was dropped (debug).
    Dropped {
        from: IpAddr,
        why: DropReason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// RFC 5881 §5.
    Ttl(Option<u8>),
    Malformed(String),
    NoSession {
        your_discriminator: u32,
    },
    NotThePeer,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Ttl(t) => write!(f, "TTL is {t:?}, not 255"),
            DropReason::Malformed(e) => write!(f, "{e}"),
            DropReason::NoSession { your_discriminator } => {
                write!(
                    f,
                    "for no session (your discriminator {your_discriminator})"
                )
            }
            DropReason::NotThePeer => f.write_str("from an address that is not the session's peer"),
        }
    }
}

struct Entry {
    session: Session,
    peer: IpAddr,
    source: Option<IpAddr>,
    failures: u64,
    up_since: Option<Instant>,
    /// Removed: AdminDown is being sent until then.
    remove_at: Option<Instant>,
    last_status: Option<BfdStatus>,
}

/// Every session, by local discriminator.
pub struct Sessions {
    sessions: BTreeMap<u32, Entry>,
    rng: Jitter,
    next_discr: u32,
}

impl Sessions {
    pub fn new(seed: u64) -> Self {
        let mut rng = Jitter::new(seed);
        let next_discr = (rng.next_u64() as u32).max(1);
        Sessions {
            sessions: BTreeMap::new(),
            rng,
            next_discr,
        }
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Add {
                peer,
                source,
                timers,
            } => self.add(now, peer, source, timers, &mut out),
            Input::SetTimers { peer, timers } => {
                if let Some(d) = self.find_peer(peer) {
                    self.step_session(now, d, session::Input::SetTimers(timers), &mut out);
                }
            }
            Input::Remove { peer } => self.remove(now, peer, &mut out),
            Input::Shutdown => {
                let all: Vec<IpAddr> = self.sessions.values().map(|e| e.peer).collect();
                for p in all {
                    self.remove(now, p, &mut out);
                }
                out.push(Output::Stopped);
            }
            Input::Datagram { from, ttl, bytes } => self.datagram(now, from, ttl, &bytes, &mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|e| [e.session.next_deadline(), e.remove_at])
            .flatten()
            .min()
    }

    fn find_peer(&self, peer: IpAddr) -> Option<u32> {
        self.sessions
            .iter()
            .find(|(_, e)| e.peer == peer && e.remove_at.is_none())
            .map(|(d, _)| *d)
    }

    fn alloc_discr(&mut self) -> u32 {
        loop {
            let d = self.next_discr;
            self.next_discr = self.next_discr.wrapping_add(1);
            if d != 0 && !self.sessions.contains_key(&d) {
                return d;
            }
        }
    }

    /// Drops the sessions of `peer` that are only saying AdminDown: their packets would take
    /// the peer's side of a new session down.
    fn drop_removed(&mut self, peer: IpAddr, out: &mut Vec<Output>) {
        let gone: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.peer == peer && e.remove_at.is_some())
            .map(|(d, _)| *d)
            .collect();
        for discr in gone {
            self.sessions.remove(&discr);
            out.push(Output::Close { discr });
        }
    }

    fn add(
        &mut self,
        now: Instant,
        peer: IpAddr,
        source: Option<IpAddr>,
        timers: Timers,
        out: &mut Vec<Output>,
    ) {
        self.drop_removed(peer, out);
        if self.find_peer(peer).is_some() {
            self.remove(now, peer, out);
            self.drop_removed(peer, out);
        }
        let discr = self.alloc_discr();
        let port_hint = *SOURCE_PORTS.start() + (self.rng.next_u64() % 16384) as u16;
        let session = Session::new(discr, timers, Jitter::new(self.rng.next_u64()));
        out.push(Output::Open {
            discr,
            peer,
            source,
            port_hint,
        });
        out.push(Output::Log(Event::Added {
            peer,
            discr,
            timers,
        }));
        self.sessions.insert(
            discr,
            Entry {
                session,
                peer,
                source,
                failures: 0,
                up_since: None,
                remove_at: None,
                last_status: None,
            },
        );
        self.step_session(now, discr, session::Input::Start, out);
    }

    fn remove(&mut self, now: Instant, peer: IpAddr, out: &mut Vec<Output>) {
        let Some(d) = self.find_peer(peer) else {
            return;
        };
        self.step_session(now, d, session::Input::AdminDown, out);
        if let Some(e) = self.sessions.get_mut(&d) {
            // Keep telling the peer for its detection time (at least 1 s, at most 5 s).
            let keep = e
                .session
                .detection_time()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_secs(1), Duration::from_secs(5));
            e.remove_at = Some(now + keep);
            out.push(Output::Log(Event::Removed { peer }));
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let ended: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.remove_at.is_some_and(|at| now >= at))
            .map(|(d, _)| *d)
            .collect();
        for discr in ended {
            self.sessions.remove(&discr);
            out.push(Output::Close { discr });
        }
        let due: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.next_deadline().is_some_and(|d| d <= now))
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            self.step_session(now, d, session::Input::Tick, out);
        }
    }

    fn datagram(
        &mut self,
        now: Instant,
        from: IpAddr,
        ttl: Option<u8>,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) {
        let from = canonical(from);
        let drop = |why| Output::Log(Event::Dropped { from, why });
        // RFC 5881 §5: single-hop packets must arrive with TTL / hop limit 255.
        if ttl != Some(TTL) {
            out.push(drop(DropReason::Ttl(ttl)));
            return;
        }
        let p = match decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                out.push(drop(DropReason::Malformed(e.to_string())));
                return;
            }
        };
        let discr = if p.your_discriminator != 0 {
            Some(p.your_discriminator).filter(|x| self.sessions.contains_key(x))
        } else {
            self.find_peer(from)
        };
        let Some(discr) = discr else {
            out.push(drop(DropReason::NoSession {
                your_discriminator: p.your_discriminator,
            }));
            return;
        };
        if self.sessions.get(&discr).map(|e| e.peer) != Some(from) {
            out.push(drop(DropReason::NotThePeer));
            return;
        }
        self.step_session(now, discr, session::Input::Received(p), out);
    }

    fn step_session(
        &mut self,
        now: Instant,
        discr: u32,
        input: session::Input,
        out: &mut Vec<Output>,
    ) {
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        let peer = e.peer;
        for o in e.session.step(now, input) {
            match o {
                session::Output::Send(packet) => out.push(Output::Send {
                    discr,
                    peer,
                    packet,
                }),
                session::Output::StateChanged {
                    from,
                    to,
                    diag,
                    remote,
                } => {
                    let ev = if to == State::Up {
                        e.up_since = Some(now);
                        Event::Up {
                            peer,
                            source: e.source,
                        }
                    } else if from == State::Up {
                        e.up_since = None;
                        if to == State::Down && remote != State::AdminDown {
                            e.failures += 1;
                            Event::Failed { peer, diag }
                        } else {
                            Event::AdminDown {
                                peer,
                                state: to,
                                diag,
                                remote,
                            }
                        }
                    } else {
                        Event::State {
                            peer,
                            from,
                            to,
                            diag,
                        }
                    };
                    out.push(Output::Log(ev));
                }
            }
        }
        let status = BfdStatus {
            peer,
            state: e.session.state(),
            diag: e.session.local_diag(),
            remote_state: e.session.remote_state(),
            local_discriminator: discr,
            remote_discriminator: e.session.remote_discr(),
            failures: e.failures,
            up_since: e.up_since,
        };
        if e.last_status.as_ref() != Some(&status) {
            e.last_status = Some(status.clone());
            out.push(Output::Status { discr, status });
        }
    }
}

impl crate::machine::Machine for Sessions {
    type Input = Input;
    type Output = Output;

    fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        Sessions::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Sessions::next_deadline(self)
    }

    fn timer_input(&self) -> Input {
        Input::Tick
    }
}

/// IPv4-mapped IPv6 sources (never expected: the IPv6 socket is V6ONLY) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers {
            desired_min_tx: Duration::from_millis(50),
            required_min_rx: Duration::from_millis(50),
            detect_mult: 3,
        }
    }

    fn peer() -> IpAddr {
        "10.0.0.1".parse().unwrap()
    }

    fn sent(out: &[Output]) -> Vec<&ControlPacket> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { packet, .. } => Some(packet),
                _ => None,
            })
            .collect()
    }

    fn opened(out: &[Output]) -> Vec<u32> {
        out.iter()
            .filter_map(|o| match o {
                Output::Open { discr, .. } => Some(*discr),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn adding_a_peer_opens_a_socket_and_sends_down_at_once() {
        let t0 = crate::test_origin();
        let mut s = Sessions::new(7);
        let out = s.step(
            t0,
            Input::Add {
                peer: peer(),
                source: None,
                timers: timers(),
            },
        );
        let d = opened(&out);
        assert_eq!(d.len(), 1);
        assert_ne!(d[0], 0);
        assert_eq!(sent(&out)[0].state, State::Down);
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Status { status, .. } if status.state == State::Down && status.local_discriminator == d[0]
        )));
    }

    #[test]
    fn a_packet_with_ttl_254_or_from_another_address_is_dropped() {
        let t0 = crate::test_origin();
        let mut s = Sessions::new(7);
        s.step(
            t0,
            Input::Add {
                peer: peer(),
                source: None,
                timers: timers(),
            },
        );
        let mut p = *sent(&s.step(t0 + Duration::from_secs(2), Input::Tick))[0];
        p.my_discriminator = 99;
        p.your_discriminator = 0;
        let out = s.step(
            t0,
            Input::Datagram {
                from: peer(),
                ttl: Some(254),
                bytes: p.encode().to_vec(),
            },
        );
        assert!(matches!(
            out.as_slice(),
            [Output::Log(Event::Dropped {
                why: DropReason::Ttl(Some(254)),
                ..
            })]
        ));
        let out = s.step(
            t0,
            Input::Datagram {
                from: "10.0.0.9".parse().unwrap(),
                ttl: Some(255),
                bytes: p.encode().to_vec(),
            },
        );
        assert!(matches!(
            out.as_slice(),
            [Output::Log(Event::Dropped {
                why: DropReason::NoSession { .. },
                ..
            })]
        ));
    }

    #[test]
    fn readding_a_peer_replaces_its_session_and_closes_the_old_socket() {
        let t0 = crate::test_origin();
        let mut s = Sessions::new(7);
        let add = Input::Add {
            peer: peer(),
            source: None,
            timers: timers(),
        };
        let first = opened(&s.step(t0, add.clone()))[0];
        let out = s.step(t0, add);
        assert!(out.contains(&Output::Close { discr: first }));
        let second = opened(&out)[0];
        assert_ne!(first, second);
    }

    #[test]
    fn a_removed_session_says_admin_down_then_ends_after_its_detection_time() {
        let t0 = crate::test_origin();
        let mut s = Sessions::new(7);
        let d = opened(&s.step(
            t0,
            Input::Add {
                peer: peer(),
                source: None,
                timers: timers(),
            },
        ))[0];
        let out = s.step(t0, Input::Remove { peer: peer() });
        assert_eq!(sent(&out)[0].state, State::AdminDown);
        let end = s.next_deadline().expect("a deadline");
        assert!(end <= t0 + Duration::from_secs(5));
        let out = s.step(t0 + Duration::from_secs(5), Input::Tick);
        assert!(out.contains(&Output::Close { discr: d }));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn shutdown_says_admin_down_on_every_session_then_stops() {
        let t0 = crate::test_origin();
        let mut s = Sessions::new(7);
        for p in ["10.0.0.1", "10.0.0.2"] {
            s.step(
                t0,
                Input::Add {
                    peer: p.parse().unwrap(),
                    source: None,
                    timers: timers(),
                },
            );
        }
        let out = s.step(t0, Input::Shutdown);
        let admin: Vec<_> = sent(&out)
            .into_iter()
            .filter(|p| p.state == State::AdminDown)
            .collect();
        assert_eq!(admin.len(), 2);
        assert_eq!(out.last(), Some(&Output::Stopped));
    }
}
