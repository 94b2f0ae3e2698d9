//! The BFD Control packet (RFC 5880 §4.1), without the optional authentication section.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Intervals are in microseconds. [`decode`] applies the reception checks of RFC 5880
//! §6.8.6 that need no session (version, length, detect multiplier, multipoint, my
//! discriminator, your discriminator vs. state, authentication); a packet passing them is
//! handed to the session by the driver.

/// Length of a Control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// The only version defined (RFC 5880 §4.1).
pub const VERSION: u8 = 1;

/// Session state as carried in the Sta field (RFC 5880 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Diagnostic code (RFC 5880 §4.1): why the sender's session last left Up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31: reserved; carried as received.
    Reserved(u8),
}

impl Diag {
    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            n => Diag::Reserved(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(n) => n & 0x1f,
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved(n) => return write!(f, "reserved diagnostic {n}"),
        };
        f.write_str(s)
    }
}

/// A BFD Control packet without authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    /// P: the sender asks for a packet with F in reply (RFC 5880 §6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub control_plane_independent: bool,
    /// D: Demand mode.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds; 0: the sender does not want Control packets.
    pub required_min_rx: u32,
    /// Microseconds; 0: no Echo packets.
    pub required_min_echo_rx: u32,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("BFD packet too short: {0} octets, a Control packet has at least 24")]
    Truncated(usize),
    #[error("BFD version {0} is not supported (only version 1)")]
    Version(u8),
    #[error("BFD Length field {length} is invalid (minimum {min}, datagram has {available})")]
    Length {
        length: u8,
        min: usize,
        available: usize,
    },
    #[error(
        "BFD packet has the Authentication (A) bit set: lb does not support BFD authentication"
    )]
    AuthenticationNotSupported,
    #[error("BFD Detect Mult is zero")]
    ZeroDetectMult,
    #[error("BFD Multipoint (M) bit is set")]
    Multipoint,
    #[error("BFD My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("BFD Your Discriminator is zero in state {0} (allowed only in Down and AdminDown)")]
    ZeroYourDiscriminator(State),
    #[error("BFD packet has both Poll and Final set")]
    PollAndFinal,
}

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decode one Control packet from a UDP payload, applying the §6.8.6 checks that need no
/// session. Octets after the Length field's end are ignored.
pub fn decode(data: &[u8]) -> Result<ControlPacket, DecodeError> {
    if data.len() < PACKET_LEN {
        // Check the version first when there is one: a wrong-version short packet is
        // reported for what it is.
        if let Some(b) = data.first()
            && b >> 5 != VERSION
        {
            return Err(DecodeError::Version(b >> 5));
        }
        return Err(DecodeError::Truncated(data.len()));
    }
    let version = data[0] >> 5;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = data[1];
    let length = data[3];
    let auth = flags & FLAG_A != 0;
    // With A set the minimum is 26 (§6.8.6); either way it must fit the datagram.
    let min = if auth { PACKET_LEN + 2 } else { PACKET_LEN };
    if usize::from(length) < min || usize::from(length) > data.len() {
        return Err(DecodeError::Length {
            length,
            min,
            available: data.len(),
        });
    }
    if auth {
        return Err(DecodeError::AuthenticationNotSupported);
    }
    let detect_mult = data[2];
    if detect_mult == 0 {
        return Err(DecodeError::ZeroDetectMult);
    }
    if flags & FLAG_M != 0 {
        return Err(DecodeError::Multipoint);
    }
    let state = State::from_bits(flags >> 6);
    let p = ControlPacket {
        diag: Diag::from_code(data[0]),
        state,
        poll: flags & FLAG_P != 0,
        final_: flags & FLAG_F != 0,
        control_plane_independent: flags & FLAG_C != 0,
        demand: flags & FLAG_D != 0,
        detect_mult,
        my_discriminator: be32(data, 4),
        your_discriminator: be32(data, 8),
        desired_min_tx: be32(data, 12),
        required_min_rx: be32(data, 16),
        required_min_echo_rx: be32(data, 20),
    };
    if p.my_discriminator == 0 {
        return Err(DecodeError::ZeroMyDiscriminator);
    }
    if p.your_discriminator == 0 && !matches!(state, State::Down | State::AdminDown) {
        return Err(DecodeError::ZeroYourDiscriminator(state));
    }
    // §4.1/§6.8.7: P and F are never both set.
    if p.poll && p.final_ {
        return Err(DecodeError::PollAndFinal);
    }
    Ok(p)
}

impl ControlPacket {
    /// The 24 octets (A = 0, M = 0, version 1, Length 24).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (VERSION << 5) | self.diag.code();
        let mut flags = (self.state as u8) << 6;
        for (on, bit) in [
            (self.poll, FLAG_P),
            (self.final_, FLAG_F),
            (self.control_plane_independent, FLAG_C),
            (self.demand, FLAG_D),
        ] {
            if on {
                flags |= bit;
            }
        }
        b[1] = flags;
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn up_packet() -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state: State::Up,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0x0a0b_0c0d,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn up_packet_encodes_to_the_rfc_layout() {
        let b = up_packet().encode();
        assert_eq!(
            b.to_vec(),
            hex("20 c0 03 18  01020304  0a0b0c0d  000493e0  000493e0  00000000")
        );
        assert_eq!(decode(&b), Ok(up_packet()));
    }

    #[test]
    fn flags_and_diag_round_trip() {
        let mut p = up_packet();
        p.diag = Diag::ControlDetectionTimeExpired;
        p.state = State::Init;
        p.poll = true;
        p.control_plane_independent = true;
        p.demand = true;
        let b = p.encode();
        assert_eq!(b[0], 0x21);
        assert_eq!(b[1], 0x80 | 0x20 | 0x08 | 0x02);
        assert_eq!(decode(&b), Ok(p));
        p.poll = false;
        p.final_ = true;
        assert_eq!(decode(&p.encode()).map(|d| d.final_), Ok(true));
    }

    #[test]
    fn up_packet_captured_from_frr_bfdd_decodes() {
        // FRR 8.4 bfdd (profile 300 ms / 300 ms / 3, echo RX 50 ms) to lbd, Up; captured
        // with tcpdump by tests/lab/bfd_lab.rs (which prints each run's packet).
        let b = hex("20 c0 03 18 c6 25 33 1d 80 26 39 9d 00 04 93 e0 00 04 93 e0 00 00 c3 50");
        let p = decode(&b).unwrap();
        assert_eq!(p.state, State::Up);
        assert_eq!(p.diag, Diag::None);
        assert!(!p.poll && !p.final_ && !p.demand && !p.control_plane_independent);
        assert_eq!(p.detect_mult, 3);
        assert_eq!(p.my_discriminator, 0xc625_331d);
        assert_eq!(p.your_discriminator, 0x8026_399d);
        assert_eq!(p.desired_min_tx, 300_000);
        assert_eq!(p.required_min_rx, 300_000);
        assert_eq!(p.required_min_echo_rx, 50_000);
        assert_eq!(p.encode().to_vec(), b);
    }

    #[test]
    fn authentication_bit_is_rejected_with_a_clear_error() {
        let mut b = up_packet().encode().to_vec();
        b[1] |= FLAG_A;
        b.extend_from_slice(&[1, 2]); // a 2-octet stub of an auth section
        b[3] = 26;
        let e = decode(&b).unwrap_err();
        assert_eq!(e, DecodeError::AuthenticationNotSupported);
        assert!(e.to_string().contains("authentication"), "{e}");
    }

    #[test]
    fn wrong_version_is_discarded() {
        let mut b = up_packet().encode();
        b[0] = (2 << 5) | b[0] & 0x1f;
        assert_eq!(decode(&b), Err(DecodeError::Version(2)));
        assert_eq!(decode(&[0x40]), Err(DecodeError::Version(2)));
    }

    #[test]
    fn short_datagram_and_bad_length_field_are_discarded() {
        let b = up_packet().encode();
        assert_eq!(decode(&b[..23]), Err(DecodeError::Truncated(23)));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated(0)));
        let mut short = b;
        short[3] = 20;
        assert!(matches!(
            decode(&short),
            Err(DecodeError::Length { length: 20, .. })
        ));
        let mut long = b;
        long[3] = 48; // more than the datagram carries
        assert!(matches!(
            decode(&long),
            Err(DecodeError::Length { length: 48, .. })
        ));
    }

    #[test]
    fn trailing_octets_beyond_length_are_ignored() {
        let mut b = up_packet().encode().to_vec();
        b.extend_from_slice(&[0xff; 8]);
        assert_eq!(decode(&b), Ok(up_packet()));
    }

    #[test]
    fn zero_detect_mult_multipoint_and_zero_my_discriminator_are_discarded() {
        let mut b = up_packet().encode();
        b[2] = 0;
        assert_eq!(decode(&b), Err(DecodeError::ZeroDetectMult));
        let mut b = up_packet().encode();
        b[1] |= FLAG_M;
        assert_eq!(decode(&b), Err(DecodeError::Multipoint));
        let mut p = up_packet();
        p.my_discriminator = 0;
        assert_eq!(decode(&p.encode()), Err(DecodeError::ZeroMyDiscriminator));
    }

    #[test]
    fn zero_your_discriminator_is_allowed_only_in_down_and_admin_down() {
        let mut p = up_packet();
        p.your_discriminator = 0;
        for (state, ok) in [
            (State::AdminDown, true),
            (State::Down, true),
            (State::Init, false),
            (State::Up, false),
        ] {
            p.state = state;
            assert_eq!(decode(&p.encode()).is_ok(), ok, "{state}");
        }
    }

    #[test]
    fn poll_and_final_together_are_discarded() {
        let mut p = up_packet();
        p.poll = true;
        p.final_ = true;
        assert_eq!(decode(&p.encode()), Err(DecodeError::PollAndFinal));
    }

    #[test]
    fn reserved_diag_codes_round_trip() {
        let mut p = up_packet();
        p.diag = Diag::Reserved(17);
        assert_eq!(decode(&p.encode()).map(|d| d.diag), Ok(Diag::Reserved(17)));
    }
}
