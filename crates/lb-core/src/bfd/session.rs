//! One BFD session's state machine (RFC 5880 §6.2, §6.8), asynchronous mode, pure.
//!
//! [`Session::step`] takes `now` (a `std::time::Instant` supplied by the caller) and one
//! [`Input`], and returns [`Output`]s: packets to send and state changes. The driver calls
//! `step(now, Input::Tick)` at [`Session::next_deadline`]; early or late ticks are harmless.
//!
//! ```text
//!                             +--+
//!                             |  | UP, ADMIN DOWN, TIMER
//!                             |  V
//!                     DOWN  +------+  INIT
//!              +------------|      |------------+
//!              |            | DOWN |            |
//!              |  +-------->|      |<--------+  |
//!              |  |         +------+         |  |
//!              |  |                          |  |
//!              |  |               ADMIN DOWN,|  |
//!              |  |ADMIN DOWN,          DOWN,|  |
//!              |  |TIMER                TIMER|  |
//!              V  |                          |  V
//!            +------+                      +------+
//!       +----|      |                      |      |----+
//!   DOWN|    | INIT |--------------------->|  UP  |    |INIT, UP
//!       +--->|      | INIT, UP             |      |<---+
//!            +------+                      +------+
//! ```
//!
//! Not implemented: Demand mode (we never ask for it; a peer's D bit is recorded and
//! ignored, so we keep sending periodically), the Echo function (we advertise Required Min
//! Echo RX 0), authentication (the codec rejects A=1).
//!
//! One addition to the RFC's transmission rules: a packet is sent at once on every state
//! change (not only at the next periodic slot), so the three-way handshake and a Down are
//! signalled without waiting for a jittered interval.

use std::time::{Duration, Instant};

use super::codec::{ControlPacket, Diag, State};

/// §6.8.3: while not Up, DesiredMinTxInterval is at least one second.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// Timer settings of a session (microsecond precision on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// bfd.DesiredMinTxInterval while Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Leave AdminDown (a new session starts there) and start transmitting.
    Start,
    /// Go AdminDown with diag 7 (RFC 5880 §6.8.16): the peer is told, the session stays
    /// silent afterwards except for its periodic AdminDown packets.
    AdminDown,
    /// A packet that passed [`decode`](super::codec::decode) and was demultiplexed to us.
    Received(ControlPacket),
    /// Time passed: transmit or detect a failure when due.
    Tick,
    /// New timer settings (a Poll Sequence while Up, §6.8.3).
    SetTimers(Timers),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(ControlPacket),
    /// `diag` is our bfd.LocalDiag after the change; `remote` the peer's last state (the
    /// peer asked for AdminDown: not a path failure, RFC 5882 §3.2).
    StateChanged {
        from: State,
        to: State,
        diag: Diag,
        remote: State,
    },
}

/// A small seeded PRNG (SplitMix64) for the transmit jitter: deterministic in tests.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// §6.8.7: the interval reduced by a random 0–25 % (10–25 % when DetectMult is 1).
    fn apply(&mut self, interval: Duration, detect_mult: u8) -> Duration {
        let (lo, hi) = if detect_mult == 1 {
            (75, 90)
        } else {
            (75, 100)
        };
        let pct = lo + self.next_u64() % (hi - lo + 1);
        interval * pct as u32 / 100
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

/// The §6.8.1 state variables of one session.
#[derive(Clone, Debug)]
pub struct Session {
    state: State,
    remote_state: State,
    local_discr: u32,
    remote_discr: u32,
    local_diag: Diag,
    timers: Timers,
    /// The DesiredMinTx used for our transmit interval and the RequiredMinRx used for the
    /// detection time until a Poll Sequence confirms a change (§6.8.3).
    tx_in_use: Duration,
    rx_in_use: Duration,
    remote_min_rx: Duration,
    remote_desired_min_tx: Duration,
    remote_detect_mult: u8,
    remote_demand: bool,
    /// A Poll Sequence is in progress: our packets carry P until an F arrives.
    polling: bool,
    /// bfd.DesiredMinTxInterval as last advertised (to notice a change).
    advertised_tx: Duration,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    jitter: Jitter,
}

impl Session {
    /// A session in AdminDown (§6.8.1 initial values, except bfd.SessionState which is Down
    /// on [`Input::Start`]); `local_discr` must be non-zero and unique on this system.
    pub fn new(local_discr: u32, timers: Timers, jitter: Jitter) -> Self {
        Session {
            state: State::AdminDown,
            remote_state: State::Down,
            local_discr,
            remote_discr: 0,
            local_diag: Diag::None,
            timers,
            tx_in_use: SLOW_TX.max(timers.desired_min_tx),
            rx_in_use: timers.required_min_rx,
            // §6.8.1: bfd.RemoteMinRxInterval starts at 1 (microsecond).
            remote_min_rx: Duration::from_micros(1),
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            polling: false,
            advertised_tx: SLOW_TX.max(timers.desired_min_tx),
            next_tx: None,
            detect_at: None,
            jitter,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// A peer in Demand mode asked us to stop periodic packets; we do not (see module docs).
    pub fn remote_demand(&self) -> bool {
        self.remote_demand
    }

    /// Interval between our periodic packets before jitter (§6.8.7): the larger of our
    /// DesiredMinTx in use and the peer's RequiredMinRx; `None` when the peer asked for none.
    pub fn tx_interval(&self) -> Option<Duration> {
        (!self.remote_min_rx.is_zero()).then(|| self.tx_in_use.max(self.remote_min_rx))
    }

    /// Detection time (§6.8.4, asynchronous mode): the peer's DetectMult times the larger
    /// of our RequiredMinRx in use and the peer's DesiredMinTx.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| {
            self.rx_in_use.max(self.remote_desired_min_tx) * u32::from(self.remote_detect_mult)
        })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_tx, self.detect_at].into_iter().flatten().min()
    }

    /// bfd.DesiredMinTxInterval as advertised now: at least 1 s unless Up (§6.8.3).
    fn desired_tx(&self) -> Duration {
        if self.state == State::Up {
            self.timers.desired_min_tx
        } else {
            SLOW_TX.max(self.timers.desired_min_tx)
        }
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.state == State::AdminDown {
                    self.local_diag = Diag::None;
                    self.set_state(State::Down, &mut out);
                    self.timers_changed(now);
                    self.send_now(now, false, &mut out);
                }
            }
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.local_diag = Diag::AdministrativelyDown;
                    self.set_state(State::AdminDown, &mut out);
                    self.detect_at = None;
                    self.timers_changed(now);
                    self.send_now(now, false, &mut out);
                }
            }
            Input::SetTimers(t) => {
                self.timers = t;
                self.timers_changed(now);
            }
            Input::Received(p) => self.received(now, p, &mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn set_state(&mut self, to: State, out: &mut Vec<Output>) {
        if self.state == to {
            return;
        }
        let from = self.state;
        self.state = to;
        if to == State::Up {
            self.local_diag = Diag::None;
        }
        out.push(Output::StateChanged {
            from,
            to,
            diag: self.local_diag,
            remote: self.remote_state,
        });
    }

    /// Our advertised intervals may have changed (state or config): apply them as §6.8.3
    /// allows and start a Poll Sequence while Up.
    fn timers_changed(&mut self, now: Instant) {
        let desired = self.desired_tx();
        let changed =
            desired != self.advertised_tx || self.timers.required_min_rx != self.rx_in_use;
        self.advertised_tx = desired;
        if self.state == State::Up && changed {
            // A longer TX interval or a shorter RX only after the peer's Final.
            if desired < self.tx_in_use {
                self.tx_in_use = desired;
            }
            if self.timers.required_min_rx > self.rx_in_use {
                self.rx_in_use = self.timers.required_min_rx;
            }
            self.polling = true;
        } else {
            self.tx_in_use = desired;
            self.rx_in_use = self.timers.required_min_rx;
            if self.state != State::Up {
                self.polling = false;
            }
        }
        // Never wait longer than the new interval for the next packet.
        if let (Some(at), Some(iv)) = (self.next_tx, self.tx_interval())
            && at > now + iv
        {
            self.next_tx = Some(now + iv);
        }
    }

    fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.timers.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx: micros(self.advertised_tx),
            required_min_rx: micros(self.timers.required_min_rx),
            required_min_echo_rx: 0,
        }
    }

    /// Send a packet now (P while polling unless it carries F) and restart the periodic
    /// timer from here.
    fn send_now(&mut self, now: Instant, final_: bool, out: &mut Vec<Output>) {
        let poll = self.polling && !final_;
        out.push(Output::Send(self.packet(poll, final_)));
        self.schedule_tx(now);
    }

    fn schedule_tx(&mut self, now: Instant) {
        self.next_tx = self
            .tx_interval()
            .map(|iv| now + self.jitter.apply(iv, self.timers.detect_mult));
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if let Some(at) = self.detect_at
            && now >= at
        {
            self.detect_at = None;
            // §6.8.1: RemoteDiscr is zeroed when nothing arrived within the detection time.
            self.remote_discr = 0;
            if matches!(self.state, State::Init | State::Up) {
                // §6.8.4: detection time expired.
                self.local_diag = Diag::ControlDetectionTimeExpired;
                self.remote_state = State::Down;
                self.set_state(State::Down, out);
                self.timers_changed(now);
                self.send_now(now, false, out);
            }
        }
        if let Some(at) = self.next_tx
            && now >= at
        {
            out.push(Output::Send(self.packet(self.polling, false)));
            self.schedule_tx(now);
        } else if self.next_tx.is_none() && self.state != State::AdminDown {
            // The peer's RequiredMinRx was zero and may no longer be.
            self.schedule_tx(now);
        }
    }

    /// §6.8.6 reception, after the codec's checks and demultiplexing.
    fn received(&mut self, now: Instant, p: ControlPacket, out: &mut Vec<Output>) {
        // A packet addressed to another discriminator is not ours.
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return;
        }
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_desired_min_tx = from_micros(p.desired_min_tx);
        self.remote_detect_mult = p.detect_mult;
        let old_remote_rx = self.remote_min_rx;
        self.remote_min_rx = from_micros(p.required_min_rx);
        if p.final_ && self.polling {
            // §6.5: the Poll Sequence ends; the new intervals take effect.
            self.polling = false;
            self.tx_in_use = self.advertised_tx;
            self.rx_in_use = self.timers.required_min_rx;
        }
        if self.state == State::AdminDown {
            return;
        }
        if self.remote_min_rx != old_remote_rx {
            match (self.next_tx, self.tx_interval()) {
                (_, None) => self.next_tx = None,
                (Some(at), Some(iv)) if at <= now + iv => {}
                (_, Some(_)) => self.schedule_tx(now),
            }
        }
        let before = self.state;
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.local_diag = Diag::NeighborSignaledSessionDown;
                self.set_state(State::Down, out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.set_state(State::Init, out),
                (State::Down, State::Init) => self.set_state(State::Up, out),
                (State::Init, State::Init | State::Up) => self.set_state(State::Up, out),
                (State::Up, State::Down) => {
                    self.local_diag = Diag::NeighborSignaledSessionDown;
                    self.set_state(State::Down, out);
                }
                _ => {}
            }
        }
        self.detect_at = self.detection_time().map(|d| now + d);
        let changed = self.state != before;
        if changed {
            self.timers_changed(now);
        }
        if p.poll {
            // §6.8.7: answer a Poll with a Final at once, whatever the timers say.
            self.send_now(now, true, out);
        } else if changed {
            self.send_now(now, false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timers() -> Timers {
        Timers {
            desired_min_tx: 300 * MS,
            required_min_rx: 300 * MS,
            detect_mult: 3,
        }
    }

    fn started(t0: Instant) -> Session {
        let mut s = Session::new(7, timers(), Jitter::new(1));
        let out = s.step(t0, Input::Start);
        assert_eq!(s.state(), State::Down);
        assert!(matches!(out.last(), Some(Output::Send(p)) if p.state == State::Down));
        s
    }

    fn peer(state: State, your: u32) -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 99,
            your_discriminator: your,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    fn sent(out: &[Output]) -> Vec<ControlPacket> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn changes(out: &[Output]) -> Vec<(State, Diag)> {
        out.iter()
            .filter_map(|o| match o {
                Output::StateChanged { to, diag, .. } => Some((*to, *diag)),
                _ => None,
            })
            .collect()
    }

    fn up(t0: Instant) -> Session {
        let mut s = started(t0);
        s.step(t0, Input::Received(peer(State::Down, 0)));
        s.step(t0, Input::Received(peer(State::Up, 7)));
        assert_eq!(s.state(), State::Up);
        s
    }

    #[test]
    fn three_way_handshake_goes_down_init_up() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        let out = s.step(t0, Input::Received(peer(State::Down, 0)));
        assert_eq!(changes(&out), vec![(State::Init, Diag::None)]);
        let p = sent(&out);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].state, p[0].your_discriminator), (State::Init, 99));
        let out = s.step(t0 + 10 * MS, Input::Received(peer(State::Up, 7)));
        assert_eq!(changes(&out), vec![(State::Up, Diag::None)]);
        assert_eq!(s.state(), State::Up);
    }

    #[test]
    fn down_session_goes_up_directly_when_the_peer_is_in_init() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        let out = s.step(t0, Input::Received(peer(State::Init, 7)));
        assert_eq!(changes(&out), vec![(State::Up, Diag::None)]);
    }

    #[test]
    fn detection_timeout_goes_down_with_diag_1() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        // 3 × max(300 ms, 300 ms) = 900 ms after the last packet.
        assert_eq!(s.detection_time(), Some(900 * MS));
        let out = s.step(t0 + 899 * MS, Input::Tick);
        assert!(changes(&out).is_empty());
        let out = s.step(t0 + 900 * MS, Input::Tick);
        assert_eq!(
            changes(&out),
            vec![(State::Down, Diag::ControlDetectionTimeExpired)]
        );
        let p = sent(&out);
        assert_eq!(
            p.last().map(|p| (p.state, p.diag.code())),
            Some((State::Down, 1))
        );
        assert_eq!(
            s.remote_discr(),
            0,
            "RemoteDiscr is zeroed after the detection time"
        );
    }

    #[test]
    fn each_received_packet_restarts_the_detection_timer() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        s.step(t0 + 600 * MS, Input::Received(peer(State::Up, 7)));
        let out = s.step(t0 + 1200 * MS, Input::Tick);
        assert!(changes(&out).is_empty(), "{out:?}");
        assert_eq!(s.state(), State::Up);
    }

    #[test]
    fn peer_signals_down_goes_down_with_diag_3() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let out = s.step(t0, Input::Received(peer(State::Down, 7)));
        assert_eq!(
            changes(&out),
            vec![(State::Down, Diag::NeighborSignaledSessionDown)]
        );
    }

    #[test]
    fn peer_admin_down_goes_down_with_diag_3_and_reports_the_remote_state() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut p = peer(State::AdminDown, 7);
        p.diag = Diag::AdministrativelyDown;
        let out = s.step(t0, Input::Received(p));
        assert!(out.iter().any(|o| matches!(
            o,
            Output::StateChanged {
                to: State::Down,
                diag: Diag::NeighborSignaledSessionDown,
                remote: State::AdminDown,
                ..
            }
        )));
        // And it does not come back up from AdminDown packets.
        let out = s.step(t0, Input::Received(peer(State::AdminDown, 7)));
        assert!(changes(&out).is_empty());
    }

    #[test]
    fn detection_timer_does_not_take_a_down_session_down_again() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        s.step(t0, Input::Received(peer(State::AdminDown, 0)));
        let out = s.step(t0 + Duration::from_secs(10), Input::Tick);
        assert!(changes(&out).is_empty());
    }

    #[test]
    fn transmits_at_most_once_a_second_while_not_up() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        let first = sent(&s.step(t0, Input::Tick));
        assert!(first.is_empty(), "the Start packet was just sent");
        let deadline = s.next_deadline().unwrap();
        let gap = deadline - t0;
        assert!((750 * MS..=1000 * MS).contains(&gap), "{gap:?}");
        let p = sent(&s.step(deadline, Input::Tick));
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].desired_min_tx, 1_000_000,
            "slow rate advertised while Down"
        );
        assert_eq!(p[0].required_min_rx, 300_000);
    }

    #[test]
    fn periodic_interval_is_jittered_between_75_and_100_percent() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        // Poll answered: the 300 ms rate is in use.
        let mut f = peer(State::Up, 7);
        f.final_ = true;
        s.step(t0, Input::Received(f));
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..200 {
            let at = s.next_tx.unwrap();
            gaps.push(at - now);
            s.step(at, Input::Received(peer(State::Up, 7)));
            s.step(at, Input::Tick);
            now = at;
        }
        let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        assert!(*min >= 225 * MS && *max <= 300 * MS, "{min:?} {max:?}");
        assert!(*max - *min > 40 * MS, "jitter is applied: {min:?}..{max:?}");
    }

    #[test]
    fn detect_mult_1_jitters_between_75_and_90_percent() {
        let mut j = Jitter::new(42);
        for _ in 0..500 {
            let d = j.apply(Duration::from_millis(1000), 1);
            assert!((750 * MS..=900 * MS).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn going_up_starts_a_poll_sequence_for_the_faster_rate() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        s.step(t0, Input::Received(peer(State::Down, 0)));
        let out = s.step(t0, Input::Received(peer(State::Up, 7)));
        let p = sent(&out);
        assert_eq!(p.len(), 1);
        assert!(p[0].poll, "{p:?}");
        assert_eq!(p[0].desired_min_tx, 300_000);
        // A faster TX may be used at once (§6.8.3 restricts only increases).
        assert_eq!(s.tx_interval(), Some(300 * MS));
        let mut f = peer(State::Up, 7);
        f.final_ = true;
        s.step(t0, Input::Received(f));
        let next = sent(&s.step(t0 + 300 * MS, Input::Tick));
        assert_eq!(next.len(), 1);
        assert!(!next[0].poll, "Poll ends at the Final: {next:?}");
    }

    #[test]
    fn a_poll_is_answered_at_once_with_final_and_without_poll() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut p = peer(State::Up, 7);
        p.poll = true;
        let out = s.step(t0 + MS, Input::Received(p));
        let p = sent(&out);
        assert_eq!(p.len(), 1);
        assert!(p[0].final_ && !p[0].poll, "{p:?}");
    }

    #[test]
    fn slower_tx_takes_effect_only_after_the_final() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut f = peer(State::Up, 7);
        f.final_ = true;
        s.step(t0, Input::Received(f));
        assert_eq!(s.tx_interval(), Some(300 * MS));
        let slow = Timers {
            desired_min_tx: 500 * MS,
            required_min_rx: 100 * MS,
            detect_mult: 3,
        };
        s.step(t0, Input::SetTimers(slow));
        assert_eq!(s.tx_interval(), Some(300 * MS), "unchanged until Final");
        // The shorter RX is not used for detection until Final either.
        assert_eq!(s.detection_time(), Some(900 * MS));
        let next = sent(&s.step(t0 + 300 * MS, Input::Tick));
        assert!(
            next[0].poll && next[0].desired_min_tx == 500_000,
            "{next:?}"
        );
        assert_eq!(next[0].required_min_rx, 100_000);
        s.step(t0 + 300 * MS, Input::Received(f));
        assert_eq!(s.tx_interval(), Some(500 * MS));
    }

    #[test]
    fn peer_required_min_rx_sets_a_slower_transmit_interval() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut p = peer(State::Up, 7);
        p.required_min_rx = 2_000_000;
        s.step(t0, Input::Received(p));
        assert_eq!(s.tx_interval(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn peer_required_min_rx_zero_stops_periodic_transmission() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut p = peer(State::Up, 7);
        p.required_min_rx = 0;
        s.step(t0, Input::Received(p));
        assert_eq!(s.tx_interval(), None);
        let out = s.step(t0 + Duration::from_millis(400), Input::Tick);
        assert!(sent(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn detection_time_uses_the_peer_multiplier_and_slower_of_the_two_intervals() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let mut p = peer(State::Up, 7);
        p.detect_mult = 5;
        p.desired_min_tx = 1_000_000;
        s.step(t0, Input::Received(p));
        assert_eq!(s.detection_time(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn packet_for_another_discriminator_is_ignored() {
        let t0 = crate::test_origin();
        let mut s = started(t0);
        let out = s.step(t0, Input::Received(peer(State::Init, 8)));
        assert!(out.is_empty());
        assert_eq!(s.state(), State::Down);
    }

    #[test]
    fn admin_down_tells_the_peer_with_diag_7_and_ignores_packets() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let out = s.step(t0, Input::AdminDown);
        assert_eq!(
            changes(&out),
            vec![(State::AdminDown, Diag::AdministrativelyDown)]
        );
        let p = sent(&out);
        assert_eq!((p[0].state, p[0].diag.code()), (State::AdminDown, 7));
        let out = s.step(t0, Input::Received(peer(State::Up, 7)));
        assert!(changes(&out).is_empty());
        let out = s.step(t0 + Duration::from_secs(5), Input::Tick);
        assert!(changes(&out).is_empty(), "no detection in AdminDown");
    }

    #[test]
    fn up_session_sends_the_peer_discriminator_and_configured_intervals() {
        let t0 = crate::test_origin();
        let mut s = up(t0);
        let p = sent(&s.step(t0 + 300 * MS, Input::Tick));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].state, State::Up);
        assert_eq!(p[0].my_discriminator, 7);
        assert_eq!(p[0].your_discriminator, 99);
        assert_eq!(p[0].detect_mult, 3);
        assert_eq!(p[0].required_min_echo_rx, 0);
    }
}
