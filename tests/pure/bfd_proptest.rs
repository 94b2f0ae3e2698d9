//! BFD codec: decoding never panics on any input; every packet that decodes re-encodes to
//! the same 24 octets (Length normalised to 24); encode then decode is the identity.

use lb::bfd::codec::{ControlPacket, Diag, PACKET_LEN, State, decode};
use proptest::prelude::*;

fn packet() -> impl Strategy<Value = ControlPacket> {
    (
        (
            0u8..32,
            0u8..4,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            1u8..=255,
        ),
        (
            1u32..,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
    )
        .prop_map(|((diag, st, p, c, d, mult), (my, your, tx, rx, echo))| {
            let state = match st {
                0 => State::AdminDown,
                1 => State::Down,
                2 => State::Init,
                _ => State::Up,
            };
            ControlPacket {
                diag: Diag::from_code(diag),
                state,
                poll: p,
                final_: !p && c,
                control_plane_independent: c,
                demand: d,
                detect_mult: mult,
                my_discriminator: my,
                your_discriminator: if your == 0 { 1 } else { your },
                desired_min_tx: tx,
                required_min_rx: rx,
                required_min_echo_rx: echo,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decode_never_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&data);
    }

    #[test]
    fn decoded_packets_reencode_to_the_same_octets(data in proptest::collection::vec(any::<u8>(), 24..40)) {
        if let Ok(p) = decode(&data) {
            // Length may exceed 24 (octets after it are ignored); we always write 24.
            let mut expect = data[..PACKET_LEN].to_vec();
            expect[3] = PACKET_LEN as u8;
            prop_assert_eq!(&p.encode()[..], &expect[..]);
        }
    }

    #[test]
    fn encode_then_decode_round_trips(p in packet()) {
        prop_assert_eq!(decode(&p.encode()), Ok(p));
    }

    #[test]
    fn mutated_valid_packets_decode_or_fail_cleanly(p in packet(), at in 0usize..24, byte in any::<u8>(), cut in 0usize..=24) {
        let mut b = p.encode().to_vec();
        b[at] = byte;
        b.truncate(cut.max(1));
        let _ = decode(&b);
    }
}
