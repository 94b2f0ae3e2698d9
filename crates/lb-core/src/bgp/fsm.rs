//! BGP session finite state machine (RFC 4271 §8), pure.
//!
//! [`Session::step`] takes the current time and one [`Input`] and returns the [`Output`]s for
//! the driver to carry out; the session owns no socket, task or clock. `now` is a
//! `std::time::Instant` supplied by the caller; the session keeps deadlines and the driver
//! calls `step(now, Input::Tick)` at [`Session::next_deadline`] (an early or late tick is
//! harmless: only expired deadlines fire).
//!
//! ```text
//!            ManualStart (active)          TcpConnected, send OPEN
//!   Idle ───────────────────────▶ Connect ─────────────────────────▶ OpenSent
//!    │ ▲  ManualStart (passive)     │  ▲ retry timer                   │ OPEN ok,
//!    │ └───────────────┐   connect  │  │                               │ send KEEPALIVE
//!    │   errors, stop  │   failed   ▼  │        TcpConnected           ▼
//!    └────────────▶ (restart ───▶ Active ─────────────────────▶ OpenConfirm
//!                    after backoff)                                    │ KEEPALIVE
//!                                                                      ▼
//!                                                                 Established
//! ```
//!
//! Departures from the RFC's text, on purpose: a failed TCP connect goes to Active and
//! retries with exponential backoff (base doubling to a cap) rather than to Idle; after an
//! error the session restarts itself after the same backoff (RFC 4271 §8.1.1 automatic start
//! with damping), unless it was stopped by ManualStop. Collisions (§6.8) are resolved by the
//! driver, which holds one `Session` per TCP connection, with [`resolve_collision`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::codec::CeaseSubcode;
use super::codec::{
    Capability, CodecOptions, DecodeError, ErrorAction, ErrorCode, Family, Framer, FsmSubcode,
    GracefulRestart, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message, Notification, Open,
    OpenError, RouteRefresh, decode,
};

/// RFC 4271 §8.2.2: hold timer while waiting for the peer's OPEN ("4 minutes is suggested").
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// A peer whose AS number is not fixed (MetalLB's `dynamicASN`): only whether it is ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynamicAsn {
    /// iBGP: the peer's AS is our own.
    Internal,
    /// eBGP: any AS but our own; the peer's OPEN says which.
    External,
}

impl std::fmt::Display for DynamicAsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DynamicAsn::Internal => "internal",
            DynamicAsn::External => "external",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    /// The AS the peer's OPEN must carry; ignored with `dynamic_asn`.
    pub peer_asn: u32,
    /// The peer's AS is not fixed: accept any internal (= `local_asn`) or any external one.
    pub dynamic_asn: Option<DynamicAsn>,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None` means a third of the negotiated hold time. Capped
    /// at a third of the negotiated hold time either way.
    pub keepalive_time: Option<u16>,
    /// Never dial; wait for the peer to connect.
    pub passive: bool,
    /// Delay before the first connection attempt after ManualStart.
    pub first_connect_delay: Duration,
    /// Backoff between attempts: `base * 2^n`, at most `cap`.
    pub connect_retry_base: Duration,
    pub connect_retry_cap: Duration,
    /// Families offered with the multiprotocol capability.
    pub families: Vec<Family>,
    /// Offer route refresh (RFC 2918) and enhanced route refresh (RFC 7313).
    pub route_refresh: bool,
    /// Offer extended messages (RFC 8654).
    pub extended_message: bool,
    /// Offer graceful restart (RFC 4724) as the restarting speaker.
    pub graceful_restart: Option<GracefulRestartOffer>,
}

/// What this speaker says in its graceful restart capability (RFC 4724 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartOffer {
    /// Seconds the peer keeps our routes after the session drops (12 bits).
    pub restart_time: u16,
    /// R bit: this speaker has just restarted (the first session of the process).
    pub restarted: bool,
}

impl SessionConfig {
    /// Defaults: hold 90 s, keepalive hold/3, active, no first delay, retry 1 s doubling to
    /// 120 s, IPv4 and IPv6 unicast, route refresh on, extended messages off.
    pub fn new(local_asn: u32, peer_asn: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_asn,
            peer_asn,
            dynamic_asn: None,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            passive: false,
            first_connect_delay: Duration::ZERO,
            connect_retry_base: Duration::from_secs(1),
            connect_retry_cap: Duration::from_secs(120),
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            route_refresh: true,
            extended_message: false,
            graceful_restart: None,
        }
    }

    pub fn is_ibgp(&self) -> bool {
        match self.dynamic_asn {
            Some(DynamicAsn::Internal) => true,
            Some(DynamicAsn::External) => false,
            None => self.local_asn == self.peer_asn,
        }
    }

    /// The OPEN this session sends.
    pub fn open_message(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        if self.route_refresh {
            caps.push(Capability::RouteRefresh);
            caps.push(Capability::EnhancedRouteRefresh);
        }
        caps.push(Capability::FourOctetAs(self.local_asn));
        if self.extended_message {
            caps.push(Capability::ExtendedMessage);
        }
        if let Some(gr) = self.graceful_restart {
            // F bit set for every family: forwarding (kube-proxy on this host) is not
            // lbd's and carries on while lbd restarts; without it the peer would drop our
            // routes at once (§4.2).
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: gr.restarted,
                notification: false,
                restart_time: gr.restart_time.min(4095),
                families: self.families.iter().map(|f| (*f, true)).collect(),
            }));
        }
        Open::new(self.local_asn, self.hold_time, self.router_id, caps)
    }
}

/// RFC 4271 §8.2.2 session states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    ManualStart,
    /// Stop; in OpenSent and later send Cease/Administrative Shutdown with this shutdown
    /// communication (RFC 8203/9003; empty: none). The speaker withdraws its routes first.
    ManualStop {
        communication: String,
    },
    /// A TCP connection to the peer is up: our dial succeeded or the peer's was accepted.
    TcpConnected {
        local: SocketAddr,
        remote: SocketAddr,
    },
    TcpConnectFailed,
    TcpClosed,
    /// Bytes read from the TCP connection, in order, any chunking.
    Bytes(Vec<u8>),
    /// Time passed: fire expired timers.
    Tick,
    /// Encoded UPDATEs from the speaker; sent in Established, dropped otherwise.
    SendUpdates(Vec<Vec<u8>>),
    /// The driver's collision resolution closes this connection (RFC 4271 §6.8).
    CollisionLost,
    /// BFD saw the path to the peer fail (RFC 5882 §4.3): with a connection, send
    /// Cease/BFD Down (RFC 9384) and go Idle; restart after the backoff as for any error.
    BfdDown,
}

/// Why a connection or session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    ManualStop,
    HoldTimerExpired,
    TcpClosed,
    CollisionLost,
    /// The peer told us why.
    NotificationReceived(Notification),
    /// We told the peer why (decode error, OPEN check, unexpected message).
    NotificationSent(Notification),
    /// A message too broken to answer (a truncated NOTIFICATION).
    Malformed(DecodeError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Dial the peer (abandon any attempt still pending).
    Connect,
    /// Write these bytes (one whole message) to the connection.
    Send(Vec<u8>),
    /// Close the connection (or abandon the pending dial).
    CloseTcp,
    StateChanged {
        from: State,
        to: State,
    },
    /// The session is up; the speaker sends its routes.
    Established(Negotiated),
    /// The session left Established.
    Down {
        reason: DownReason,
    },
    /// A connection ended before reaching Established.
    ConnectionFailed {
        reason: DownReason,
    },
    /// The peer asked for our routes again (RFC 2918).
    RouteRefreshRequested(Family),
}

/// What both OPENs agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    pub ibgp: bool,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub four_octet_as: bool,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    pub extended_message: bool,
    /// The peer's graceful restart capability, for information.
    pub peer_graceful_restart: Option<GracefulRestart>,
}

impl Negotiated {
    pub fn codec_options(&self) -> CodecOptions {
        CodecOptions {
            four_octet_as: self.four_octet_as,
            max_message_len: if self.extended_message {
                MAX_EXTENDED_MESSAGE_LEN
            } else {
                MAX_MESSAGE_LEN
            },
        }
    }

    pub fn family_enabled(&self, family: Family) -> bool {
        (family == Family::IPV4_UNICAST && self.ipv4_unicast)
            || (family == Family::IPV6_UNICAST && self.ipv6_unicast)
    }
}

/// Counters of what was received and sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub keepalives_in: u64,
    pub updates_in: u64,
    pub prefixes_announced_in: u64,
    pub prefixes_withdrawn_in: u64,
    pub end_of_rib_in: u64,
    /// UPDATEs handled as withdraws (RFC 7606 treat-as-withdraw).
    pub updates_treated_as_withdraw: u64,
    /// UPDATEs from which an attribute was discarded (RFC 7606 attribute discard).
    pub updates_with_attribute_discard: u64,
    pub route_refresh_in: u64,
    pub updates_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    pub established_count: u64,
}

/// Who opened a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionOrigin {
    Local,
    Remote,
}

/// Which of two colliding connections to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keep {
    Existing,
    New,
}

/// RFC 4271 §6.8 collision detection. A second connection with the same peer has reached
/// OPEN; `existing` is the older connection (its origin and state). An Established one
/// always stays; otherwise the connection opened by the speaker with the higher BGP
/// identifier stays. Send Cease/Connection Collision Resolution on the other
/// ([`Input::CollisionLost`]).
pub fn resolve_collision(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    existing_origin: ConnectionOrigin,
    existing_state: State,
) -> Keep {
    if existing_state == State::Established {
        return Keep::Existing;
    }
    let winner = if u32::from(local_id) < u32::from(remote_id) {
        ConnectionOrigin::Remote
    } else {
        ConnectionOrigin::Local
    };
    if winner == existing_origin {
        Keep::Existing
    } else {
        Keep::New
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// ManualStop was given: no automatic restart.
    stopped: bool,
    framer: Framer,
    codec: CodecOptions,
    /// Connect retry (Connect, Active) or automatic restart (Idle).
    retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    connection: Option<(SocketAddr, SocketAddr)>,
    peer_open: Option<Open>,
    negotiated: Option<Negotiated>,
    stats: Stats,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            stopped: true,
            framer: Framer::new(MAX_MESSAGE_LEN),
            codec: CodecOptions {
                four_octet_as: false,
                max_message_len: MAX_MESSAGE_LEN,
            },
            retry_at: None,
            hold_at: None,
            keepalive_at: None,
            failures: 0,
            connection: None,
            peer_open: None,
            negotiated: None,
            stats: Stats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Set in Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The peer's OPEN, from OpenConfirm on (for collision resolution).
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// The earliest pending timer: call `step(deadline, Input::Tick)` then.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Exponential backoff after the consecutive failures so far: `base` after the first,
    /// doubling each time, at most `cap`.
    pub fn backoff(&self) -> Duration {
        let base = self.config.connect_retry_base;
        let doublings = self.failures.saturating_sub(1).min(31);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        base.checked_mul(factor)
            .unwrap_or(self.config.connect_retry_cap)
            .min(self.config.connect_retry_cap)
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::ManualStart => self.manual_start(now, &mut out),
            Input::ManualStop { communication } => self.manual_stop(&communication, &mut out),
            Input::TcpConnected { local, remote } => {
                self.tcp_connected(now, local, remote, &mut out)
            }
            Input::TcpConnectFailed | Input::TcpClosed => self.tcp_failed(now, &mut out),
            Input::Bytes(bytes) => self.bytes(now, &bytes, &mut out),
            Input::Tick => self.tick(now, &mut out),
            Input::SendUpdates(updates) => {
                if self.state == State::Established {
                    for u in updates {
                        self.stats.updates_out += 1;
                        self.stats.messages_out += 1;
                        out.push(Output::Send(u));
                    }
                    self.restart_keepalive(now);
                }
            }
            Input::CollisionLost => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.send(
                        Message::Notification(Notification::cease(
                            CeaseSubcode::ConnectionCollisionResolution,
                        )),
                        &mut out,
                    );
                    self.stopped = true;
                    self.teardown(now, DownReason::CollisionLost, &mut out);
                }
            }
            Input::BfdDown => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.fail(now, Notification::cease(CeaseSubcode::BfdDown), &mut out);
                }
            }
        }
        out
    }

    fn set_state(&mut self, to: State, out: &mut Vec<Output>) {
        if self.state != to {
            out.push(Output::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    fn manual_start(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.state != State::Idle {
            return;
        }
        self.stopped = false;
        self.failures = 0;
        self.start(now, self.config.first_connect_delay, out);
    }

    /// Leave Idle: wait for the peer (passive) or dial after `delay`.
    fn start(&mut self, now: Instant, delay: Duration, out: &mut Vec<Output>) {
        self.retry_at = None;
        if self.config.passive {
            self.set_state(State::Active, out);
        } else {
            self.set_state(State::Connect, out);
            if delay.is_zero() {
                self.dial(now, out);
            } else {
                self.retry_at = Some(now + delay);
            }
        }
    }

    fn dial(&mut self, now: Instant, out: &mut Vec<Output>) {
        out.push(Output::Connect);
        // If the dial neither succeeds nor fails by then, dial again.
        self.retry_at = Some(now + self.backoff().max(self.config.connect_retry_base));
    }

    fn manual_stop(&mut self, communication: &str, out: &mut Vec<Output>) {
        self.stopped = true;
        match self.state {
            State::Idle => {
                self.retry_at = None;
            }
            State::Connect | State::Active => {
                out.push(Output::CloseTcp);
                self.clear_connection();
                self.set_state(State::Idle, out);
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.send(
                    Message::Notification(Notification::admin_shutdown(communication)),
                    out,
                );
                self.end_connection(DownReason::ManualStop, out);
                self.set_state(State::Idle, out);
            }
        }
    }

    fn tcp_connected(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        out: &mut Vec<Output>,
    ) {
        match self.state {
            State::Connect | State::Active => {
                self.connection = Some((local, remote));
                self.retry_at = None;
                self.framer = Framer::new(MAX_MESSAGE_LEN);
                self.codec = CodecOptions {
                    four_octet_as: false,
                    max_message_len: MAX_MESSAGE_LEN,
                };
                let open = self.config.open_message();
                self.send(Message::Open(open), out);
                self.hold_at = Some(now + OPEN_HOLD_TIME);
                self.set_state(State::OpenSent, out);
            }
            // §8.2.2 Idle: refuse. Later states: a second connection is the driver's
            // collision to resolve with a second Session; this one is not told about it.
            State::Idle => out.push(Output::CloseTcp),
            _ => {}
        }
    }

    fn tcp_failed(&mut self, now: Instant, out: &mut Vec<Output>) {
        match self.state {
            State::Connect => {
                // Dial failed: wait, then dial again.
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(now + self.backoff());
                self.set_state(State::Active, out);
            }
            State::OpenSent => {
                // §8.2.2 OpenSent, TcpConnectionFails: back to Active.
                self.end_connection(DownReason::TcpClosed, out);
                self.failures = self.failures.saturating_add(1);
                if !self.config.passive {
                    self.retry_at = Some(now + self.backoff());
                }
                self.set_state(State::Active, out);
            }
            State::OpenConfirm | State::Established => {
                self.teardown(now, DownReason::TcpClosed, out);
            }
            State::Idle | State::Active => {}
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.hold_at.is_some_and(|t| t <= now) {
            self.hold_at = None;
            let n = Notification::new(ErrorCode::HoldTimerExpired(0));
            self.send(Message::Notification(n), out);
            self.teardown(now, DownReason::HoldTimerExpired, out);
            return;
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.send(Message::Keepalive, out);
            self.restart_keepalive(now);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            match self.state {
                State::Idle if !self.stopped => {
                    // Automatic start after an error (§8.1.1), already damped by backoff.
                    self.start(now, Duration::ZERO, out);
                }
                State::Connect => {
                    out.push(Output::CloseTcp);
                    self.failures = self.failures.saturating_add(1);
                    self.dial(now, out);
                }
                State::Active if !self.config.passive => {
                    self.set_state(State::Connect, out);
                    self.dial(now, out);
                }
                _ => {}
            }
        }
    }

    fn bytes(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Output>) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.framer.push(bytes);
        loop {
            let frame = match self.framer.next_message() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    self.decode_failed(now, e, out);
                    return;
                }
            };
            self.stats.messages_in += 1;
            match decode(&frame, &self.codec) {
                Ok(msg) => self.message(now, msg, out),
                Err(e) => self.decode_failed(now, e, out),
            }
            // A message may have ended the connection: drop whatever else was buffered.
            if !matches!(
                self.state,
                State::OpenSent | State::OpenConfirm | State::Established
            ) {
                return;
            }
        }
    }

    fn decode_failed(&mut self, now: Instant, e: DecodeError, out: &mut Vec<Output>) {
        match e.notification() {
            Some(n) => {
                self.send(Message::Notification(n.clone()), out);
                self.teardown(now, DownReason::NotificationSent(n), out);
            }
            None => self.teardown(now, DownReason::Malformed(e), out),
        }
    }

    /// Send `n` and tear the connection down.
    fn fail(&mut self, now: Instant, n: Notification, out: &mut Vec<Output>) {
        self.send(Message::Notification(n.clone()), out);
        self.teardown(now, DownReason::NotificationSent(n), out);
    }

    fn message(&mut self, now: Instant, msg: Message, out: &mut Vec<Output>) {
        if let Message::Notification(n) = msg {
            self.stats.notifications_in += 1;
            self.teardown(now, DownReason::NotificationReceived(n), out);
            return;
        }
        let unexpected = |sub| Notification::new(ErrorCode::Fsm(sub));
        match (self.state, msg) {
            (State::OpenSent, Message::Open(open)) => self.open_received(now, open, out),
            (State::OpenSent, _) => self.fail(
                now,
                unexpected(FsmSubcode::UnexpectedMessageInOpenSent),
                out,
            ),
            (State::OpenConfirm, Message::Keepalive) => {
                self.stats.keepalives_in += 1;
                self.restart_hold(now);
                self.failures = 0;
                self.stats.established_count += 1;
                self.set_state(State::Established, out);
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (State::OpenConfirm, _) => self.fail(
                now,
                unexpected(FsmSubcode::UnexpectedMessageInOpenConfirm),
                out,
            ),
            (State::Established, Message::Keepalive) => {
                self.stats.keepalives_in += 1;
                self.restart_hold(now);
            }
            (State::Established, Message::Update(update)) => {
                self.restart_hold(now);
                self.stats.updates_in += 1;
                match update.error_action() {
                    // Treat-as-withdraw: we keep no routes from peers, so count and ignore.
                    Some(ErrorAction::TreatAsWithdraw) | Some(ErrorAction::SessionReset) => {
                        self.stats.updates_treated_as_withdraw += 1;
                        self.stats.prefixes_withdrawn_in += update.announced().len() as u64
                            + update.withdrawn_prefixes().len() as u64;
                    }
                    other => {
                        if other == Some(ErrorAction::AttributeDiscard) {
                            self.stats.updates_with_attribute_discard += 1;
                        }
                        if update.end_of_rib().is_some() {
                            self.stats.end_of_rib_in += 1;
                        }
                        self.stats.prefixes_announced_in += update.announced().len() as u64;
                        self.stats.prefixes_withdrawn_in +=
                            update.withdrawn_prefixes().len() as u64;
                    }
                }
            }
            (State::Established, Message::RouteRefresh(RouteRefresh { family, subtype })) => {
                self.restart_hold(now);
                self.stats.route_refresh_in += 1;
                // Subtype 0 is a request; 1/2 (BoRR/EoRR) only mark the peer's own refresh.
                let enabled = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.family_enabled(family));
                if subtype == 0 && enabled {
                    out.push(Output::RouteRefreshRequested(family));
                }
            }
            (State::Established, _) => self.fail(
                now,
                unexpected(FsmSubcode::UnexpectedMessageInEstablished),
                out,
            ),
            _ => {}
        }
    }

    /// Check the peer's OPEN (RFC 4271 §6.2) and negotiate.
    fn check_open(&self, open: &Open) -> Result<(), OpenError> {
        let asn = open.asn();
        match self.config.dynamic_asn {
            Some(DynamicAsn::External) if asn == self.config.local_asn => {
                return Err(OpenError::PeerAsNotExternal {
                    local: asn,
                    my_as_field: open.my_as,
                });
            }
            Some(DynamicAsn::External) => {}
            Some(DynamicAsn::Internal) | None => {
                let expected = match self.config.dynamic_asn {
                    Some(_) => self.config.local_asn,
                    None => self.config.peer_asn,
                };
                if asn != expected {
                    return Err(OpenError::BadPeerAs {
                        expected,
                        received: asn,
                        my_as_field: open.my_as,
                    });
                }
            }
        }
        // RFC 6286 §2.1: within an AS the identifiers must differ.
        if self.config.is_ibgp() && open.bgp_id == self.config.router_id {
            return Err(OpenError::BadBgpIdentifier(open.bgp_id));
        }
        if open.hold_time != 0 && open.hold_time < 3 {
            return Err(OpenError::UnacceptableHoldTime(open.hold_time));
        }
        Ok(())
    }

    fn open_received(&mut self, now: Instant, open: Open, out: &mut Vec<Output>) {
        if let Err(e) = self.check_open(&open) {
            self.fail(now, e.notification(), out);
            return;
        }
        let ours = self.config.open_message();
        let hold_time = self.config.hold_time.min(open.hold_time);
        let keepalive_time = if hold_time == 0 {
            0
        } else {
            let third = hold_time / 3;
            self.config
                .keepalive_time
                .map_or(third, |k| k.min(third))
                .max(1)
        };
        let both = |c: &Capability| ours.has(c) && open.has(c);
        let peer_fams = open.families();
        let our_fams = ours.families();
        let fam = |f: Family| peer_fams.contains(&f) && our_fams.contains(&f);
        let (local, remote) = match self.connection {
            Some(c) => c,
            None => return,
        };
        let negotiated = Negotiated {
            local,
            remote,
            peer_asn: open.asn(),
            peer_id: open.bgp_id,
            ibgp: self.config.is_ibgp(),
            hold_time,
            keepalive_time,
            four_octet_as: open.four_octet_as().is_some(),
            ipv4_unicast: fam(Family::IPV4_UNICAST),
            ipv6_unicast: fam(Family::IPV6_UNICAST),
            route_refresh: both(&Capability::RouteRefresh),
            enhanced_route_refresh: both(&Capability::EnhancedRouteRefresh),
            extended_message: both(&Capability::ExtendedMessage),
            peer_graceful_restart: open.graceful_restart().cloned(),
        };
        self.codec = negotiated.codec_options();
        self.framer.set_max_message_len(self.codec.max_message_len);
        self.peer_open = Some(open);
        self.negotiated = Some(negotiated);
        self.send(Message::Keepalive, out);
        self.restart_hold(now);
        self.restart_keepalive(now);
        self.set_state(State::OpenConfirm, out);
    }

    fn hold_duration(&self) -> Option<Duration> {
        self.negotiated
            .as_ref()
            .filter(|n| n.hold_time > 0)
            .map(|n| Duration::from_secs(u64::from(n.hold_time)))
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_at = self.hold_duration().map(|d| now + d);
    }

    fn restart_keepalive(&mut self, now: Instant) {
        self.keepalive_at = self
            .negotiated
            .as_ref()
            .filter(|n| n.keepalive_time > 0)
            .map(|n| now + Duration::from_secs(u64::from(n.keepalive_time)));
    }

    fn send(&mut self, msg: Message, out: &mut Vec<Output>) {
        let is_notification = matches!(msg, Message::Notification(_));
        let bytes = match msg.encode(&self.codec) {
            Ok(b) => b,
            // Only a NOTIFICATION quoting a huge attribute can overflow: send it without data.
            Err(_) => match msg {
                Message::Notification(n) => {
                    match Message::Notification(Notification::new(n.code)).encode(&self.codec) {
                        Ok(b) => b,
                        Err(_) => return,
                    }
                }
                _ => return,
            },
        };
        if is_notification {
            self.stats.notifications_out += 1;
        }
        self.stats.messages_out += 1;
        out.push(Output::Send(bytes));
    }

    fn clear_connection(&mut self) {
        self.connection = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.retry_at = None;
        self.peer_open = None;
        self.negotiated = None;
        self.framer = Framer::new(MAX_MESSAGE_LEN);
    }

    /// Close the connection and report why (Down from Established, ConnectionFailed before).
    fn end_connection(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        out.push(Output::CloseTcp);
        if self.state == State::Established {
            out.push(Output::Down { reason });
        } else {
            out.push(Output::ConnectionFailed { reason });
        }
        self.clear_connection();
    }

    /// Error in OpenSent or later: close, go Idle, restart after the backoff unless stopped.
    fn teardown(&mut self, now: Instant, reason: DownReason, out: &mut Vec<Output>) {
        self.end_connection(reason, out);
        self.failures = self.failures.saturating_add(1);
        if !self.stopped {
            self.retry_at = Some(now + self.backoff());
        }
        self.set_state(State::Idle, out);
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
