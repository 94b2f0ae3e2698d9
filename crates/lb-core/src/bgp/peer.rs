//! One BGP peer, pure: its sessions (one per TCP connection), the choice between them, and
//! what each session has been sent. The driver (`lb::bgp::driver`) owns the sockets, the
//! dial tasks and the reader/writer tasks; it names connections by the ids this machine
//! gives them.
//!
//! - Connections: the primary session dials (unless passive) and retries with backoff; a
//!   connection the peer opens while the primary is past Active gets a second session, and
//!   [`fsm::resolve_collision`] picks the survivor (RFC 4271 §6.8) as soon as one of them
//!   has the peer's OPEN. A second session that reaches Established wins outright; one that
//!   loses its connection is dropped; a live second one replaces a dead primary.
//! - Adj-RIB-Out: `desired` (from the speaker) against `sent` (what the Established session
//!   has been told); the difference goes out as UPDATEs, after the session comes up followed
//!   by End-of-RIB per family (RFC 4724 §2), and again in full on a ROUTE-REFRESH.
//! - Shutdown: withdraw everything sent, Cease/Administrative Shutdown with the
//!   communication (RFC 8203) on every connection, close, [`Output::Stopped`].
//! - Graceful restart (RFC 4724), restarting side: when the session negotiated it, a stop
//!   for a restart closes the connection without withdrawing or a NOTIFICATION, so the peer
//!   keeps our routes (marked stale) and keeps forwarding; after the restart the initial
//!   UPDATEs and End-of-RIB wait until the speaker says its routes are complete
//!   ([`Input::Ready`]), or the peer would drop the stale routes at an early End-of-RIB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;

use super::advertise::{RouteAttrs, RouteDiff, RouteSet, diff, to_advertisements};
use super::build::{PeerParams, build_updates, build_withdrawals, end_of_rib};
use super::codec::Family;
use super::fsm::{
    self, ConnectionOrigin, DownReason, Input as FsmInput, Keep, Negotiated, Output as FsmOutput,
    Session, SessionConfig, State,
};

/// What the machine needs to know of the peer beyond its session config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub port: u16,
    pub my_asn: u32,
    pub router_id: Ipv4Addr,
    /// TCP-MD5 is configured: failures to connect say that a key mismatch is silent.
    pub md5: bool,
    pub session: SessionConfig,
}

/// What a peer publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub peer_asn: u32,
    pub state: State,
    pub router_id: Option<Ipv4Addr>,
    pub local: Option<SocketAddr>,
    pub established_since: Option<Instant>,
    /// Prefixes the current session has been sent.
    pub prefixes_advertised: usize,
    /// Over the peer's lifetime.
    pub updates_received: u64,
    pub updates_sent: u64,
    pub established_count: u64,
    /// Why the session last went down or failed to come up.
    pub last_error: Option<String>,
}

impl PeerStatus {
    /// A peer that has not started (no router ID yet).
    pub fn new(address: IpAddr, peer_asn: u32) -> Self {
        Self {
            address,
            peer_asn,
            state: State::Idle,
            router_id: None,
            local: None,
            established_since: None,
            prefixes_advertised: 0,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            last_error: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Start the primary session (it dials unless passive).
    Start,
    /// The routes the speaker wants this peer to have.
    SetRoutes(RouteSet),
    /// Changes to them: a prefix's route (`None`: withdrawn). Work proportional to them.
    RouteChanges(Vec<(IpNet, Option<RouteAttrs>)>),
    /// The peer opened a connection to our listener (the driver holds the stream until
    /// [`Output::Attach`] or [`Output::Refuse`] in the same step).
    Incoming {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Dial `attempt` connected (the driver holds the stream as for `Incoming`).
    Dialed {
        attempt: u64,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Dial `attempt` failed; `error` says why, `key` is the part that identifies the kind
    /// of failure (a repeated one is logged once).
    DialFailed {
        attempt: u64,
        error: String,
        key: String,
    },
    Bytes {
        conn: u64,
        bytes: Vec<u8>,
    },
    /// The connection's reader saw EOF or an error.
    Closed {
        conn: u64,
    },
    /// The peer's BFD session failed (RFC 5882 §4.3).
    BfdDown,
    /// Withdraw, Cease with `communication`, close.
    Shutdown {
        communication: String,
    },
    /// Stopping to restart: with graceful restart negotiated, close without withdrawing or
    /// a NOTIFICATION (the peer keeps the routes while we are gone); otherwise as
    /// `Shutdown`.
    StopForRestart {
        communication: String,
    },
    /// The desired routes are complete (the daemon has synced): the initial UPDATEs and
    /// End-of-RIB may go out.
    Ready,
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Start dial `attempt` (any earlier attempt is abandoned first).
    Dial {
        attempt: u64,
    },
    /// Abandon dial `attempt`.
    AbortDial {
        attempt: u64,
    },
    /// Take the stream of the `Incoming` / `Dialed` input just given as connection `conn`:
    /// socket options, reader and writer.
    Attach {
        conn: u64,
    },
    /// Drop the stream of the `Incoming` / `Dialed` input just given.
    Refuse,
    /// Write one whole message to connection `conn`.
    Send {
        conn: u64,
        bytes: Vec<u8>,
    },
    /// Stop reading `conn`; its writer drains what is queued (a NOTIFICATION) and closes.
    Close {
        conn: u64,
    },
    Log(Event),
    /// After `Shutdown`: every connection is closing; flush the writers and end.
    Stopped,
}

/// What is worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    StateChanged {
        from: State,
        to: State,
        secondary: bool,
    },
    Established(Negotiated),
    Down {
        reason: String,
    },
    /// A connection ended before Established (not for a lost collision).
    ConnectionFailed {
        reason: String,
    },
    /// A dial failed; `repeated`: the same way as the last time (log it quietly).
    DialFailed {
        error: String,
        repeated: bool,
    },
    /// The retry timer gave up on a dial that had not connected.
    DialTimedOut {
        error: String,
        repeated: bool,
    },
    RefusedIncoming {
        state: State,
    },
    Collision {
        keep: Keep,
    },
    RouteRefreshRequested(Family),
    Updates {
        announce: Vec<IpNet>,
        withdraw: Vec<IpNet>,
    },
    BuildFailed {
        error: String,
    },
    BfdDown,
    /// Stopped for a restart with graceful restart: `prefixes` left at the peer as stale.
    LeftForRestart {
        prefixes: usize,
    },
}

struct Conn {
    id: u64,
    session: Session,
    origin: ConnectionOrigin,
    /// A TCP connection is attached (until closed).
    attached: bool,
}

impl Conn {
    fn has_connection(&self) -> bool {
        matches!(
            self.session.state(),
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }
}

/// One peer: its sessions and what it has been sent.
pub struct Peer {
    config: PeerConfig,
    primary: Conn,
    secondary: Option<Conn>,
    next_id: u64,
    /// The pending dial: its attempt id and when it started.
    dial: Option<(u64, Instant)>,
    desired: RouteSet,
    /// What the Established session has been sent.
    sent: RouteSet,
    established_since: Option<Instant>,
    updates_received: u64,
    updates_sent: u64,
    established_count: u64,
    last_error: Option<String>,
    /// The kind of the last dial failure logged, to log a repeated failure once.
    last_dial_error: Option<String>,
    stopped: bool,
    /// The desired routes are complete; until then an Established session is sent nothing.
    ready: bool,
    /// The current session has had its initial UPDATEs and End-of-RIB.
    initial_sent: bool,
}

fn describe(reason: &DownReason) -> String {
    match reason {
        DownReason::ManualStop => "stopped".into(),
        DownReason::HoldTimerExpired => "hold timer expired".into(),
        DownReason::TcpClosed => "TCP connection closed".into(),
        DownReason::CollisionLost => "connection collision resolution".into(),
        DownReason::NotificationReceived(n) => format!("NOTIFICATION received: {n}"),
        DownReason::NotificationSent(n) => format!("NOTIFICATION sent: {n}"),
        DownReason::Malformed(e) => format!("malformed message: {e}"),
    }
}

/// The hint a failed connect gets when TCP-MD5 is configured (the driver adds the kernel's
/// counters when it logs).
pub const MD5_HINT: &str =
    "; TCP-MD5 is configured: a password mismatch makes the kernels drop the segments silently";

impl Peer {
    /// `ready`: whether `initial_routes` are complete already (else wait for
    /// [`Input::Ready`] before the first UPDATEs).
    pub fn new(config: PeerConfig, initial_routes: RouteSet, ready: bool) -> Self {
        let session = Session::new(config.session.clone());
        Peer {
            config,
            primary: Conn {
                id: 0,
                session,
                origin: ConnectionOrigin::Local,
                attached: false,
            },
            secondary: None,
            next_id: 1,
            dial: None,
            desired: initial_routes,
            sent: RouteSet::new(),
            established_since: None,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            last_error: None,
            last_dial_error: None,
            stopped: false,
            ready,
            initial_sent: false,
        }
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    pub fn status(&self) -> PeerStatus {
        let stats = self.primary.session.stats();
        PeerStatus {
            address: self.config.address,
            // A dynamic ASN is known once the peer's OPEN is in.
            peer_asn: self
                .primary
                .session
                .negotiated()
                .map_or(self.config.session.peer_asn, |n| n.peer_asn),
            state: self.primary.session.state(),
            router_id: Some(self.config.router_id),
            local: self.primary.session.negotiated().map(|n| n.local),
            established_since: self.established_since,
            prefixes_advertised: self.sent.len(),
            updates_received: self.updates_received + stats.updates_in,
            updates_sent: self.updates_sent,
            established_count: self.established_count,
            last_error: self.last_error.clone(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        [
            self.primary.session.next_deadline(),
            self.secondary
                .as_ref()
                .and_then(|c| c.session.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.stopped {
            if matches!(input, Input::Incoming { .. } | Input::Dialed { .. }) {
                out.push(Output::Refuse);
            }
            return out;
        }
        match input {
            Input::Start => self.step_session(now, false, FsmInput::ManualStart, &mut out),
            Input::SetRoutes(r) => {
                self.desired = r;
                self.sync_routes(now, false, &mut out);
            }
            Input::RouteChanges(changes) => {
                let mut prefixes = Vec::with_capacity(changes.len());
                for (prefix, attrs) in changes {
                    match attrs {
                        Some(a) => self.desired.insert(prefix, a),
                        None => self.desired.remove(&prefix),
                    };
                    prefixes.push(prefix);
                }
                self.sync_prefixes(now, prefixes, &mut out);
            }
            Input::Incoming { local, remote } => self.incoming(now, local, remote, &mut out),
            Input::Dialed {
                attempt,
                local,
                remote,
            } => {
                if self.dial.map(|d| d.0) != Some(attempt)
                    || self.primary.session.state() != State::Connect
                {
                    // An abandoned attempt, or the session moved on meanwhile.
                    self.dial = self.dial.filter(|d| d.0 != attempt);
                    out.push(Output::Refuse);
                } else {
                    self.dial = None;
                    self.last_dial_error = None;
                    self.attach(now, false, ConnectionOrigin::Local, local, remote, &mut out);
                }
            }
            Input::DialFailed {
                attempt,
                error,
                key,
            } => {
                if self.dial.map(|d| d.0) == Some(attempt) {
                    self.dial = None;
                    if self.primary.session.state() == State::Connect {
                        let repeated = self.dial_failed(error.clone(), key);
                        out.push(Output::Log(Event::DialFailed { error, repeated }));
                        self.step_session(now, false, FsmInput::TcpConnectFailed, &mut out);
                    }
                }
            }
            Input::Bytes { conn, bytes } => {
                if let Some(sec) = self.which(conn) {
                    self.step_session(now, sec, FsmInput::Bytes(bytes), &mut out);
                }
            }
            Input::Closed { conn } => {
                if let Some(sec) = self.which(conn) {
                    self.step_session(now, sec, FsmInput::TcpClosed, &mut out);
                }
            }
            Input::BfdDown => {
                out.push(Output::Log(Event::BfdDown));
                self.step_session(now, false, FsmInput::BfdDown, &mut out);
                self.step_session(now, true, FsmInput::BfdDown, &mut out);
            }
            Input::Shutdown { communication } => {
                self.shutdown(now, communication, &mut out);
                return out;
            }
            Input::StopForRestart { communication } => {
                if self.graceful_restart_negotiated() {
                    self.stop_for_restart(&mut out);
                } else {
                    self.shutdown(now, communication, &mut out);
                }
                return out;
            }
            Input::Ready => {
                self.ready = true;
                if !self.initial_sent {
                    self.sync_routes(now, true, &mut out);
                }
            }
            Input::Tick => {
                self.step_session(now, false, FsmInput::Tick, &mut out);
                self.step_session(now, true, FsmInput::Tick, &mut out);
            }
        }
        self.normalize(now, &mut out);
        out
    }

    /// Whether connection `conn` is the secondary (`Some(true)`), the primary, or gone.
    fn which(&self, conn: u64) -> Option<bool> {
        if self.primary.id == conn && self.primary.attached {
            return Some(false);
        }
        match &self.secondary {
            Some(c) if c.id == conn && c.attached => Some(true),
            _ => None,
        }
    }

    /// Records a failed dial; `true` when it failed the same way as the last one.
    fn dial_failed(&mut self, error: String, key: String) -> bool {
        let repeated = self.last_dial_error.as_deref() == Some(key.as_str());
        self.last_dial_error = Some(key);
        self.last_error = Some(error);
        repeated
    }

    fn step_session(
        &mut self,
        now: Instant,
        secondary: bool,
        input: FsmInput,
        out: &mut Vec<Output>,
    ) {
        let outputs = if secondary {
            match &mut self.secondary {
                Some(c) => c.session.step(now, input),
                None => return,
            }
        } else {
            self.primary.session.step(now, input)
        };
        self.apply(now, secondary, outputs, out);
    }

    fn incoming(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        out: &mut Vec<Output>,
    ) {
        match self.primary.session.state() {
            State::Connect | State::Active => {
                if let Some((attempt, _)) = self.dial.take() {
                    out.push(Output::AbortDial { attempt });
                }
                self.attach(now, false, ConnectionOrigin::Remote, local, remote, out);
            }
            State::OpenSent | State::OpenConfirm if self.secondary.is_none() => {
                self.attach(now, true, ConnectionOrigin::Remote, local, remote, out);
            }
            // Idle (stopped or backing off), Established (RFC 4271 §6.8: the new connection
            // is closed), or already two connections: refuse.
            state => {
                out.push(Output::Log(Event::RefusedIncoming { state }));
                out.push(Output::Refuse);
            }
        }
    }

    /// Gives the stream just received to a session as connection `id`.
    fn attach(
        &mut self,
        now: Instant,
        secondary: bool,
        origin: ConnectionOrigin,
        local: SocketAddr,
        remote: SocketAddr,
        out: &mut Vec<Output>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        out.push(Output::Attach { conn: id });
        if secondary {
            let mut s = Session::new(self.config.session.clone());
            // Its own dial is never made: the connection is the peer's.
            let _ = s.step(now, FsmInput::ManualStart);
            self.secondary = Some(Conn {
                id,
                session: s,
                origin,
                attached: true,
            });
        } else {
            if self.primary.attached {
                out.push(Output::Close {
                    conn: self.primary.id,
                });
            }
            self.primary.id = id;
            self.primary.origin = origin;
            self.primary.attached = true;
        }
        self.step_session(
            now,
            secondary,
            FsmInput::TcpConnected { local, remote },
            out,
        );
    }

    fn close(&mut self, secondary: bool, out: &mut Vec<Output>) {
        let c = if secondary {
            self.secondary.as_mut()
        } else {
            Some(&mut self.primary)
        };
        if let Some(c) = c
            && c.attached
        {
            c.attached = false;
            out.push(Output::Close { conn: c.id });
        }
    }

    /// Carries out a session's outputs.
    fn apply(
        &mut self,
        now: Instant,
        secondary: bool,
        outputs: Vec<FsmOutput>,
        out: &mut Vec<Output>,
    ) {
        for o in outputs {
            match o {
                FsmOutput::Connect => {
                    if secondary {
                        continue;
                    }
                    if let Some((attempt, _)) = self.dial.take() {
                        out.push(Output::AbortDial { attempt });
                    }
                    let attempt = self.next_id;
                    self.next_id += 1;
                    self.dial = Some((attempt, now));
                    out.push(Output::Dial { attempt });
                }
                FsmOutput::Send(bytes) => {
                    let c = if secondary {
                        self.secondary.as_ref()
                    } else {
                        Some(&self.primary)
                    };
                    if let Some(c) = c.filter(|c| c.attached) {
                        out.push(Output::Send { conn: c.id, bytes });
                    }
                }
                FsmOutput::CloseTcp => {
                    if !secondary && let Some((attempt, started)) = self.dial.take() {
                        out.push(Output::AbortDial { attempt });
                        // Still in Connect: the retry timer gave up on this dial.
                        if self.primary.session.state() == State::Connect {
                            let after = now.saturating_duration_since(started);
                            let remote = SocketAddr::new(self.config.address, self.config.port);
                            let error = format!(
                                "BGP peer {}: connect to {remote} timed out after {after:?}{}",
                                self.config.address,
                                if self.config.md5 { MD5_HINT } else { "" }
                            );
                            let key = error.split("; TCP-MD5").next().unwrap_or("").to_string();
                            let repeated = self.dial_failed(error.clone(), key);
                            out.push(Output::Log(Event::DialTimedOut { error, repeated }));
                        }
                    }
                    self.close(secondary, out);
                }
                FsmOutput::StateChanged { from, to } => {
                    out.push(Output::Log(Event::StateChanged {
                        from,
                        to,
                        secondary,
                    }));
                }
                FsmOutput::Established(n) => self.established(now, secondary, n, out),
                FsmOutput::Down { reason } => {
                    let why = describe(&reason);
                    out.push(Output::Log(Event::Down {
                        reason: why.clone(),
                    }));
                    self.last_error = Some(why);
                    self.established_since = None;
                    self.sent.clear();
                }
                FsmOutput::ConnectionFailed { reason } => {
                    if !matches!(reason, DownReason::CollisionLost) {
                        let why = describe(&reason);
                        out.push(Output::Log(Event::ConnectionFailed {
                            reason: why.clone(),
                        }));
                        self.last_error = Some(why);
                    }
                }
                FsmOutput::RouteRefreshRequested(family) => {
                    out.push(Output::Log(Event::RouteRefreshRequested(family)));
                    let v6 = family == Family::IPV6_UNICAST;
                    self.sent.retain(|p, _| p.addr().is_ipv6() != v6);
                    self.sync_routes(now, false, out);
                }
            }
        }
    }

    fn established(&mut self, now: Instant, secondary: bool, n: Negotiated, out: &mut Vec<Output>) {
        if secondary {
            // The second connection won (§6.8: an Established one stays): the first closes
            // with Cease/Connection Collision Resolution and the second becomes the session.
            self.step_session(now, false, FsmInput::CollisionLost, out);
            if let Some(s) = self.secondary.take() {
                self.promote(s, out);
            }
        }
        out.push(Output::Log(Event::Established(n)));
        self.established_since = Some(now);
        self.established_count += 1;
        self.last_error = None;
        self.sent.clear();
        self.initial_sent = false;
        if self.ready {
            self.sync_routes(now, true, out);
        }
    }

    /// Whether `prefix` can be sent on the session `n` (its family, our address family).
    fn sendable(n: &Negotiated, prefix: &IpNet) -> bool {
        prefix.addr().is_ipv6() == n.local.ip().is_ipv6()
            && n.family_enabled(if prefix.addr().is_ipv6() {
                Family::IPV6_UNICAST
            } else {
                Family::IPV4_UNICAST
            })
    }

    /// [`sync_routes`](Self::sync_routes) for the given prefixes only.
    fn sync_prefixes(&mut self, now: Instant, prefixes: Vec<IpNet>, out: &mut Vec<Output>) {
        if self.primary.session.state() != State::Established || !self.initial_sent {
            return;
        }
        let Some(n) = self.primary.session.negotiated().cloned() else {
            return;
        };
        let mut d = RouteDiff::default();
        for prefix in prefixes {
            let want = self
                .desired
                .get(&prefix)
                .filter(|_| Self::sendable(&n, &prefix));
            match (want, self.sent.get(&prefix)) {
                (Some(w), Some(s)) if w == s => {}
                (Some(w), _) => {
                    d.announce.insert(prefix, w.clone());
                    self.sent.insert(prefix, w.clone());
                }
                (None, Some(_)) => {
                    d.withdraw.push(prefix);
                    self.sent.remove(&prefix);
                }
                (None, None) => {}
            }
        }
        d.withdraw.sort_unstable();
        d.withdraw.dedup();
        self.send_diff(now, &n, d, false, out);
    }

    /// Sends the difference between `sent` and `desired` on the Established session;
    /// `initial`: after the session came up, followed by End-of-RIB per family.
    fn sync_routes(&mut self, now: Instant, initial: bool, out: &mut Vec<Output>) {
        // The initial UPDATEs once per session (they wait for `ready`), nothing before them.
        if self.primary.session.state() != State::Established || initial == self.initial_sent {
            return;
        }
        if initial {
            self.initial_sent = true;
        }
        let Some(n) = self.primary.session.negotiated().cloned() else {
            return;
        };
        let wanted: RouteSet = self
            .desired
            .iter()
            .filter(|(p, _)| Self::sendable(&n, p))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        let d = diff(&self.sent, &wanted);
        self.sent = wanted;
        self.send_diff(now, &n, d, initial, out);
    }

    /// UPDATEs for `d` (withdrawals first), then End-of-RIB per family when `initial`.
    fn send_diff(
        &mut self,
        now: Instant,
        n: &Negotiated,
        d: RouteDiff,
        initial: bool,
        out: &mut Vec<Output>,
    ) {
        let local = n.local.ip();
        let params = PeerParams::from_negotiated(n, self.config.my_asn);
        let mut msgs = Vec::new();
        if !d.withdraw.is_empty() {
            msgs.extend(build_withdrawals(&params, &d.withdraw));
        }
        if !d.announce.is_empty() {
            match build_updates(&params, &to_advertisements(&d.announce, local)) {
                Ok(m) => msgs.extend(m),
                Err(e) => {
                    out.push(Output::Log(Event::BuildFailed {
                        error: e.to_string(),
                    }));
                    return;
                }
            }
        }
        if initial {
            for (fam, on) in [
                (Family::IPV4_UNICAST, n.ipv4_unicast),
                (Family::IPV6_UNICAST, n.ipv6_unicast),
            ] {
                if on {
                    msgs.push(end_of_rib(fam));
                }
            }
        }
        if !d.is_empty() {
            out.push(Output::Log(Event::Updates {
                announce: d.announce.keys().copied().collect(),
                withdraw: d.withdraw.clone(),
            }));
        }
        if !msgs.is_empty() {
            self.updates_sent += msgs.len() as u64;
            self.step_session(now, false, FsmInput::SendUpdates(msgs), out);
        }
    }

    /// Keeps at most one connection per state of affairs: drops a dead second one, promotes
    /// a live second one over a dead primary, resolves collisions.
    fn normalize(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(sec) = &self.secondary else {
            return;
        };
        if !sec.has_connection() {
            self.close(true, out);
            self.secondary = None;
            return;
        }
        if !self.primary.has_connection() {
            if let Some((attempt, _)) = self.dial.take() {
                out.push(Output::AbortDial { attempt });
            }
            if let Some(s) = self.secondary.take() {
                self.promote(s, out);
            }
            return;
        }
        // Both connected: resolve once someone has the peer's BGP identifier.
        let remote_id = self
            .primary
            .session
            .peer_open()
            .or(sec.session.peer_open())
            .map(|o| o.bgp_id);
        // (An Established session always has the peer's OPEN.)
        let Some(remote_id) = remote_id else {
            return;
        };
        let keep = if sec.session.state() == State::Established {
            Keep::New
        } else {
            fsm::resolve_collision(
                self.config.router_id,
                remote_id,
                self.primary.origin,
                self.primary.session.state(),
            )
        };
        out.push(Output::Log(Event::Collision { keep }));
        match keep {
            Keep::Existing => {
                self.step_session(now, true, FsmInput::CollisionLost, out);
                self.close(true, out);
                self.secondary = None;
            }
            Keep::New => {
                self.step_session(now, false, FsmInput::CollisionLost, out);
                if let Some(s) = self.secondary.take() {
                    self.promote(s, out);
                }
            }
        }
    }

    /// Makes `c` the primary connection; keeps the counters of the one it replaces, whose
    /// connection closes.
    fn promote(&mut self, c: Conn, out: &mut Vec<Output>) {
        let old = std::mem::replace(&mut self.primary, c);
        if old.attached {
            out.push(Output::Close { conn: old.id });
        }
        self.updates_received += old.session.stats().updates_in;
    }

    /// Both ends offered graceful restart on the current session.
    fn graceful_restart_negotiated(&self) -> bool {
        self.config.session.graceful_restart.is_some()
            && self.primary.session.state() == State::Established
            && self
                .primary
                .session
                .negotiated()
                .is_some_and(|n| n.peer_graceful_restart.is_some())
    }

    /// RFC 4724 §4: the restarting speaker just goes away; the peer keeps our routes as
    /// stale until we are back and send End-of-RIB, or the restart time runs out.
    fn stop_for_restart(&mut self, out: &mut Vec<Output>) {
        if let Some((attempt, _)) = self.dial.take() {
            out.push(Output::AbortDial { attempt });
        }
        self.close(false, out);
        self.close(true, out);
        self.stopped = true;
        out.push(Output::Log(Event::LeftForRestart {
            prefixes: self.sent.len(),
        }));
        out.push(Output::Stopped);
    }

    fn shutdown(&mut self, now: Instant, communication: String, out: &mut Vec<Output>) {
        if self.primary.session.state() == State::Established && !self.sent.is_empty() {
            if let Some(n) = self.primary.session.negotiated().cloned() {
                let params = PeerParams::from_negotiated(&n, self.config.my_asn);
                let prefixes: Vec<IpNet> = self.sent.keys().copied().collect();
                let msgs = build_withdrawals(&params, &prefixes);
                self.updates_sent += msgs.len() as u64;
                self.step_session(now, false, FsmInput::SendUpdates(msgs), out);
            }
            self.sent.clear();
        }
        let stop = FsmInput::ManualStop {
            communication: communication.clone(),
        };
        self.step_session(now, true, stop.clone(), out);
        self.step_session(now, false, stop, out);
        if let Some((attempt, _)) = self.dial.take() {
            out.push(Output::AbortDial { attempt });
        }
        self.close(false, out);
        self.close(true, out);
        self.stopped = true;
        out.push(Output::Stopped);
    }
}

impl crate::machine::Machine for Peer {
    type Input = Input;
    type Output = Output;

    fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        Peer::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Peer::next_deadline(self)
    }

    fn timer_input(&self) -> Input {
        Input::Tick
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bgp::advertise::RouteAttrs;
    use crate::bgp::codec::{
        Capability, CeaseSubcode, CodecOptions, ErrorCode, GracefulRestart, Message, Open, decode,
    };

    const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn config(local_id: Ipv4Addr) -> PeerConfig {
        PeerConfig {
            address: "10.0.0.2".parse().unwrap(),
            port: 179,
            my_asn: 64500,
            router_id: local_id,
            md5: false,
            session: SessionConfig::new(64500, 64501, local_id),
        }
    }

    fn opts() -> CodecOptions {
        CodecOptions {
            four_octet_as: true,
            max_message_len: 4096,
        }
    }

    fn encode(m: Message) -> Vec<u8> {
        m.encode(&opts()).expect("test message encodes")
    }

    fn open(id: Ipv4Addr) -> Vec<u8> {
        encode(Message::Open(Open::new(
            64501,
            90,
            id,
            vec![
                Capability::Multiprotocol(crate::bgp::codec::Family::IPV4_UNICAST),
                Capability::FourOctetAs(64501),
            ],
        )))
    }

    fn local() -> SocketAddr {
        "10.0.0.1:40000".parse().unwrap()
    }

    fn remote() -> SocketAddr {
        "10.0.0.2:179".parse().unwrap()
    }

    fn routes(prefixes: &[&str]) -> RouteSet {
        prefixes
            .iter()
            .map(|p| (p.parse().unwrap(), RouteAttrs::default()))
            .collect()
    }

    /// Messages sent on `conn`, decoded.
    fn sent_on(out: &[Output], conn: u64) -> Vec<Message> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { conn: c, bytes } if *c == conn => {
                    Some(decode(bytes, &opts()).expect("valid message"))
                }
                _ => None,
            })
            .collect()
    }

    fn attached(out: &[Output]) -> Option<u64> {
        out.iter().find_map(|o| match o {
            Output::Attach { conn } => Some(*conn),
            _ => None,
        })
    }

    fn dialed(out: &[Output]) -> Option<u64> {
        out.iter().find_map(|o| match o {
            Output::Dial { attempt } => Some(*attempt),
            _ => None,
        })
    }

    /// A peer Established over its own dial, with `initial` routes: returns it and the
    /// connection id.
    fn established(t0: Instant, initial: RouteSet) -> (Peer, u64, Vec<Output>) {
        let mut p = Peer::new(config(LOCAL_ID), initial, true);
        let attempt = dialed(&p.step(t0, Input::Start)).expect("dials at once");
        let out = p.step(
            t0,
            Input::Dialed {
                attempt,
                local: local(),
                remote: remote(),
            },
        );
        let conn = attached(&out).expect("attached");
        assert!(matches!(sent_on(&out, conn).as_slice(), [Message::Open(_)]));
        p.step(
            t0,
            Input::Bytes {
                conn,
                bytes: open(Ipv4Addr::new(10, 0, 0, 2)),
            },
        );
        let out = p.step(
            t0,
            Input::Bytes {
                conn,
                bytes: encode(Message::Keepalive),
            },
        );
        assert_eq!(p.status().state, State::Established);
        (p, conn, out)
    }

    #[test]
    fn established_session_gets_the_desired_routes_then_end_of_rib() {
        let t0 = crate::test_origin();
        let (p, conn, out) = established(t0, routes(&["192.0.2.10/32", "192.0.2.11/32"]));
        let msgs = sent_on(&out, conn);
        let updates: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(updates.len(), 2, "{msgs:?}");
        assert_eq!(updates[0].nlri.len(), 2);
        // RFC 4724 §2: End-of-RIB for IPv4 unicast is an empty UPDATE.
        assert!(updates[1].nlri.is_empty() && updates[1].withdrawn.is_empty());
        assert_eq!(p.status().prefixes_advertised, 2);
        assert_eq!(p.status().established_count, 1);
    }

    #[test]
    fn new_routes_send_only_the_difference() {
        let t0 = crate::test_origin();
        let (mut p, conn, _) = established(t0, routes(&["192.0.2.10/32", "192.0.2.11/32"]));
        let out = p.step(
            t0,
            Input::SetRoutes(routes(&["192.0.2.11/32", "192.0.2.12/32"])),
        );
        let msgs = sent_on(&out, conn);
        let (mut withdrawn, mut announced) = (vec![], vec![]);
        for m in &msgs {
            if let Message::Update(u) = m {
                withdrawn.extend(u.withdrawn.iter().map(ToString::to_string));
                announced.extend(u.nlri.iter().map(ToString::to_string));
            }
        }
        assert_eq!(withdrawn, ["192.0.2.10/32"]);
        assert_eq!(announced, ["192.0.2.12/32"]);
        // The same set again sends nothing.
        let out = p.step(
            t0,
            Input::SetRoutes(routes(&["192.0.2.11/32", "192.0.2.12/32"])),
        );
        assert!(sent_on(&out, conn).is_empty());
    }

    #[test]
    fn shutdown_withdraws_then_sends_cease_closes_and_stops() {
        let t0 = crate::test_origin();
        let (mut p, conn, _) = established(t0, routes(&["192.0.2.10/32"]));
        let out = p.step(
            t0,
            Input::Shutdown {
                communication: "maintenance".into(),
            },
        );
        let msgs = sent_on(&out, conn);
        assert!(
            matches!(&msgs[0], Message::Update(u) if u.withdrawn.len() == 1),
            "{msgs:?}"
        );
        assert!(matches!(
            &msgs[1],
            Message::Notification(n)
                if n.code == ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
        ));
        let close = out
            .iter()
            .position(|o| *o == Output::Close { conn })
            .expect("closed");
        assert_eq!(out.last(), Some(&Output::Stopped));
        assert!(close < out.len() - 1);
        assert_eq!(p.next_deadline(), None);
        // Nothing more after the stop; a late connection is refused.
        assert_eq!(
            p.step(
                t0,
                Input::Incoming {
                    local: local(),
                    remote: remote()
                }
            ),
            vec![Output::Refuse]
        );
    }

    #[test]
    fn a_dial_that_was_abandoned_is_refused_when_it_connects() {
        let t0 = crate::test_origin();
        let mut p = Peer::new(config(LOCAL_ID), RouteSet::new(), true);
        let first = dialed(&p.step(t0, Input::Start)).expect("dial");
        // The retry timer fires before the dial connects: it is abandoned and retried.
        let later = p.next_deadline().expect("retry timer");
        let out = p.step(later, Input::Tick);
        assert!(out.contains(&Output::AbortDial { attempt: first }));
        assert!(p.status().last_error.is_some());
        let out = p.step(
            later,
            Input::Dialed {
                attempt: first,
                local: local(),
                remote: remote(),
            },
        );
        assert_eq!(out, vec![Output::Refuse]);
    }

    /// RFC 4271 §6.8: with both connections in OpenConfirm, the one opened by the side
    /// with the higher BGP identifier survives.
    fn collision(local_id: Ipv4Addr, peer_id: Ipv4Addr) -> (Peer, u64, u64, Vec<Output>) {
        let t0 = crate::test_origin();
        let mut p = Peer::new(config(local_id), RouteSet::new(), true);
        let attempt = dialed(&p.step(t0, Input::Start)).expect("dial");
        let out = p.step(
            t0,
            Input::Dialed {
                attempt,
                local: local(),
                remote: remote(),
            },
        );
        let ours = attached(&out).unwrap();
        let out = p.step(
            t0,
            Input::Incoming {
                local: "10.0.0.1:179".parse().unwrap(),
                remote: "10.0.0.2:50000".parse().unwrap(),
            },
        );
        let theirs = attached(&out).expect("second connection accepted");
        assert_ne!(ours, theirs);
        let out = p.step(
            t0,
            Input::Bytes {
                conn: ours,
                bytes: open(peer_id),
            },
        );
        (p, ours, theirs, out)
    }

    #[test]
    fn collision_keeps_the_connection_of_the_higher_identifier() {
        // We are higher: our connection stays, theirs gets Cease/Collision and is closed.
        let (_, ours, theirs, out) =
            collision(Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 2));
        let notes = sent_on(&out, theirs);
        assert!(
            notes.iter().any(|m| matches!(m, Message::Notification(n)
                if n.code == ErrorCode::Cease(CeaseSubcode::ConnectionCollisionResolution))),
            "{notes:?}"
        );
        assert!(out.contains(&Output::Close { conn: theirs }));
        assert!(!out.contains(&Output::Close { conn: ours }));
        // They are higher: ours is closed, theirs becomes the session.
        let (p, ours, theirs, out) =
            collision(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(out.contains(&Output::Close { conn: ours }));
        assert!(!out.contains(&Output::Close { conn: theirs }));
        assert_eq!(
            p.which(theirs),
            Some(false),
            "the second connection is promoted"
        );
    }

    #[test]
    fn a_repeated_dial_failure_is_logged_once() {
        let t0 = crate::test_origin();
        let mut p = Peer::new(config(LOCAL_ID), RouteSet::new(), true);
        let mut attempt = dialed(&p.step(t0, Input::Start)).unwrap();
        let mut now = t0;
        let mut repeats = vec![];
        for _ in 0..3 {
            let out = p.step(
                now,
                Input::DialFailed {
                    attempt,
                    error: "connect: refused".into(),
                    key: "connect: refused".into(),
                },
            );
            repeats.extend(out.iter().filter_map(|o| match o {
                Output::Log(Event::DialFailed { repeated, .. }) => Some(*repeated),
                _ => None,
            }));
            now = p.next_deadline().expect("retry") + Duration::from_millis(1);
            attempt = dialed(&p.step(now, Input::Tick)).expect("dials again");
        }
        assert_eq!(repeats, [false, true, true]);
        assert_eq!(p.status().last_error.as_deref(), Some("connect: refused"));
    }

    #[test]
    fn route_changes_send_only_the_changed_prefixes() {
        let t0 = crate::test_origin();
        let (mut p, conn, _) = established(t0, routes(&["192.0.2.10/32", "192.0.2.11/32"]));
        let out = p.step(
            t0,
            Input::RouteChanges(vec![
                (
                    "192.0.2.12/32".parse().unwrap(),
                    Some(RouteAttrs::default()),
                ),
                ("192.0.2.10/32".parse().unwrap(), None),
                // Unchanged: nothing is sent for it.
                (
                    "192.0.2.11/32".parse().unwrap(),
                    Some(RouteAttrs::default()),
                ),
            ]),
        );
        let (mut withdrawn, mut announced) = (vec![], vec![]);
        for m in sent_on(&out, conn) {
            if let Message::Update(u) = m {
                withdrawn.extend(u.withdrawn.iter().map(ToString::to_string));
                announced.extend(u.nlri.iter().map(ToString::to_string));
            }
        }
        assert_eq!(withdrawn, ["192.0.2.10/32"]);
        assert_eq!(announced, ["192.0.2.12/32"]);
        assert_eq!(p.status().prefixes_advertised, 2);
    }

    fn gr_config() -> PeerConfig {
        let mut c = config(LOCAL_ID);
        c.session.graceful_restart = Some(crate::bgp::fsm::GracefulRestartOffer {
            restart_time: 120,
            restarted: true,
        });
        c
    }

    /// Established with `config`; the peer's OPEN offers graceful restart when `peer_gr`.
    fn up(config: PeerConfig, ready: bool, peer_gr: bool) -> (Peer, u64, Vec<Output>) {
        let t0 = crate::test_origin();
        let mut p = Peer::new(config, routes(&["192.0.2.10/32"]), ready);
        let attempt = dialed(&p.step(t0, Input::Start)).expect("dials");
        let out = p.step(
            t0,
            Input::Dialed {
                attempt,
                local: local(),
                remote: remote(),
            },
        );
        let conn = attached(&out).expect("attached");
        let ours = sent_on(&out, conn);
        let mut caps = vec![
            Capability::Multiprotocol(crate::bgp::codec::Family::IPV4_UNICAST),
            Capability::FourOctetAs(64501),
        ];
        if peer_gr {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: false,
                restart_time: 120,
                families: vec![(crate::bgp::codec::Family::IPV4_UNICAST, true)],
            }));
        }
        let open = encode(Message::Open(Open::new(
            64501,
            90,
            Ipv4Addr::new(10, 0, 0, 2),
            caps,
        )));
        p.step(t0, Input::Bytes { conn, bytes: open });
        let mut out = p.step(
            t0,
            Input::Bytes {
                conn,
                bytes: encode(Message::Keepalive),
            },
        );
        // Our OPEN first, for the capability checks.
        let mut all: Vec<Output> = ours
            .into_iter()
            .map(|m| Output::Send {
                conn,
                bytes: encode(m),
            })
            .collect();
        all.append(&mut out);
        (p, conn, all)
    }

    #[test]
    fn the_open_offers_graceful_restart_with_the_restart_time_and_forwarding_preserved() {
        let (_, conn, out) = up(gr_config(), true, true);
        let open = sent_on(&out, conn)
            .into_iter()
            .find_map(|m| match m {
                Message::Open(o) => Some(o),
                _ => None,
            })
            .expect("our OPEN");
        let gr = open
            .capabilities
            .iter()
            .find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g.clone()),
                _ => None,
            })
            .expect("graceful restart capability");
        assert_eq!(gr.restart_time, 120);
        assert!(gr.restart_state, "R bit: the first session after a start");
        assert!(gr.families.iter().all(|(_, forwarding)| *forwarding));
        assert!(!gr.families.is_empty());
    }

    #[test]
    fn a_stop_for_a_restart_leaves_the_routes_with_the_peer_when_it_negotiated_graceful_restart() {
        let t0 = crate::test_origin();
        let (mut p, conn, _) = up(gr_config(), true, true);
        let out = p.step(
            t0,
            Input::StopForRestart {
                communication: "restarting".into(),
            },
        );
        assert!(
            sent_on(&out, conn).is_empty(),
            "no withdrawal, no NOTIFICATION: {out:?}"
        );
        assert!(out.contains(&Output::Close { conn }));
        assert_eq!(out.last(), Some(&Output::Stopped));
    }

    #[test]
    fn a_stop_for_a_restart_withdraws_as_usual_when_the_peer_cannot_keep_the_routes() {
        let t0 = crate::test_origin();
        let (mut p, conn, _) = up(gr_config(), true, false);
        let out = p.step(
            t0,
            Input::StopForRestart {
                communication: "restarting".into(),
            },
        );
        let msgs = sent_on(&out, conn);
        assert!(matches!(&msgs[0], Message::Update(u) if u.withdrawn.len() == 1));
        assert!(matches!(&msgs[1], Message::Notification(_)));
    }

    #[test]
    fn nothing_and_no_end_of_rib_is_sent_before_the_routes_are_ready() {
        let t0 = crate::test_origin();
        let (mut p, conn, out) = up(gr_config(), false, true);
        assert!(
            !sent_on(&out, conn)
                .iter()
                .any(|m| matches!(m, Message::Update(_))),
            "an early End-of-RIB would make the peer drop our stale routes"
        );
        // Changes before Ready are kept, not sent.
        let out = p.step(
            t0,
            Input::RouteChanges(vec![(
                "192.0.2.11/32".parse().unwrap(),
                Some(RouteAttrs::default()),
            )]),
        );
        assert!(sent_on(&out, conn).is_empty());
        let out = p.step(t0, Input::Ready);
        let updates: Vec<_> = sent_on(&out, conn)
            .into_iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(updates.len(), 2, "the routes, then End-of-RIB");
        assert_eq!(updates[0].nlri.len(), 2);
        assert!(updates[1].nlri.is_empty() && updates[1].withdrawn.is_empty());
        assert!(sent_on(&p.step(t0, Input::Ready), conn).is_empty(), "once");
    }
}
