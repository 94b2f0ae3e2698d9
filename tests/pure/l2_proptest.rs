//! Decoders and the responder return errors instead of panicking on any input: random
//! frames, and fixtures with random mutations. Builders round-trip through decoders.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use lb::l2::iface::Interface;
use lb::l2::responder::{Claim, Input, Params, Responder};
use lb::l2::{MacAddr, arp, ndp, parse_hex};
use proptest::prelude::*;

const FIXTURES: [&str; 8] = [
    "arping_request",
    "kernel_arp_reply",
    "arping_unsolicited",
    "arping_advert",
    "ndisc6_ns",
    "kernel_na",
    "kernel_dad_ns",
    "kernel_unsolicited_na",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/l2/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_hex(&std::fs::read_to_string(&path).expect("fixture readable")).expect("fixture hex")
}

fn responder() -> Responder {
    let now = Instant::now();
    let mut r = Responder::new(Params::default());
    r.step(
        now,
        Input::LinkChanged(Interface {
            index: 2,
            name: "eth0".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 0x0b]),
            up: true,
            addresses: vec![
                "10.99.0.2/24".parse().unwrap(),
                "fd99::2/64".parse().unwrap(),
            ],
        }),
    );
    r.step(
        now,
        Input::OwnershipChanged(
            ["10.99.0.2", "fd99::2", "fd99::3"]
                .iter()
                .map(|ip| Claim {
                    ip: ip.parse().unwrap(),
                    interfaces: vec![],
                    services: vec![],
                })
                .collect(),
        ),
    );
    r
}

/// A fixture with some octets overwritten, truncated or extended.
fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    (
        0..FIXTURES.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(which, edits, cut, tail)| {
            let mut f = fixture(FIXTURES[which]);
            for (at, byte) in edits {
                let i = at.index(f.len());
                f[i] = byte;
            }
            f.truncate(cut.index(f.len() + 1));
            f.extend(tail);
            f
        })
}

proptest! {
    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = arp::decode(&bytes);
        let _ = ndp::decode(&bytes);
    }

    #[test]
    fn decoders_and_responder_never_panic_on_mutated_fixtures(frame in mutated_fixture()) {
        let _ = arp::decode(&frame);
        if let Ok(f) = ndp::decode(&frame) {
            prop_assert_eq!(f.hop_limit, 255);
            prop_assert!(!f.target().is_multicast());
        }
        let mut r = responder();
        let out = r.step(Instant::now(), Input::FrameReceived { ifindex: 2, bytes: frame });
        prop_assert!(out.len() <= 2);
    }

    #[test]
    fn random_frames_with_ndp_header_prefix_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        hop in any::<u8>(),
    ) {
        // Ethernet + IPv6 header for ICMPv6, then random bytes: reaches the deeper checks.
        let mut f = ndp::build_ns(MacAddr([2, 0, 0, 0, 0, 1]), "fd99::1".parse().unwrap(), "fd99::2".parse().unwrap());
        f.truncate(54);
        f[21] = hop;
        f[18..20].copy_from_slice(&(tail.len() as u16).to_be_bytes());
        f.extend(tail);
        let _ = ndp::decode(&f);
        let _ = responder().step(Instant::now(), Input::FrameReceived { ifindex: 2, bytes: f });
    }

    #[test]
    fn arp_reply_round_trips_for_any_addresses(
        a in any::<[u8; 6]>(), b in any::<[u8; 6]>(), s in any::<u32>(), t in any::<u32>(),
    ) {
        let req = arp::decode(&arp::ArpFrame {
            eth: lb::l2::EthHeader { dst: MacAddr::BROADCAST, src: MacAddr(a), ethertype: lb::l2::ETHERTYPE_ARP },
            op: arp::ArpOp::Request,
            sender_mac: MacAddr(a),
            sender_ip: Ipv4Addr::from(s),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::from(t),
        }.encode()).unwrap();
        let rep = arp::decode(&arp::build_reply(&req, MacAddr(b))).unwrap();
        prop_assert_eq!(rep.sender_ip, Ipv4Addr::from(t));
        prop_assert_eq!(rep.target_ip, Ipv4Addr::from(s));
        prop_assert_eq!(rep.sender_mac, MacAddr(b));
    }

    #[test]
    fn na_reply_validates_for_any_unicast_target(src in any::<u128>(), target in any::<u128>(), mac in any::<[u8; 6]>()) {
        let target = Ipv6Addr::from(target);
        let src = Ipv6Addr::from(src);
        prop_assume!(!target.is_multicast() && !src.is_multicast() && !src.is_unspecified());
        let ns = ndp::decode(&ndp::build_ns(MacAddr([2, 0, 0, 0, 0, 1]), src, target)).unwrap();
        let na = ndp::decode(&ndp::build_na_reply(&ns, target, MacAddr(mac))).unwrap();
        prop_assert_eq!(na.target(), target);
        prop_assert_eq!(na.dst_ip, src);
    }

    #[test]
    fn responder_survives_any_input_sequence(
        steps in proptest::collection::vec((0u8..5, any::<u8>(), any::<bool>()), 0..40),
    ) {
        let t0 = Instant::now();
        let mut r = responder();
        let ips: [IpAddr; 3] = ["10.99.0.2".parse().unwrap(), "fd99::2".parse().unwrap(), "10.99.0.9".parse().unwrap()];
        for (i, (kind, x, flag)) in steps.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(700 * i as u64);
            let input = match kind {
                0 => Input::Tick,
                1 => Input::OwnershipChanged(ips.iter().take(x as usize % 4).map(|ip| Claim { ip: *ip, interfaces: vec![], services: vec![] }).collect()),
                2 => Input::LinkChanged(Interface {
                    index: 2 + (x as u32 % 2),
                    name: format!("eth{}", x % 2),
                    mac: MacAddr([2, 0, 0, 0, 0, x]),
                    up: flag,
                    addresses: vec!["10.99.0.2/24".parse().unwrap(), "fd99::2/64".parse().unwrap()],
                }),
                3 => Input::LinkRemoved { ifindex: 2 + (x as u32 % 2) },
                _ => Input::FrameReceived { ifindex: 2, bytes: fixture(FIXTURES[x as usize % FIXTURES.len()]) },
            };
            r.step(now, input);
            // Never answering on an interface that is not known.
            for (_, ifindex) in r.answering() {
                prop_assert!(ifindex == 2 || ifindex == 3);
            }
        }
    }
}
