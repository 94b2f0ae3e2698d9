//! The BGP decoders are total (random and mutated input yields `Ok` or an error, never a
//! panic), and random valid messages survive encode → decode unchanged.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lb::bgp::codec::{
    AsPath, AsSegment, AsSegmentType, Attr, Capability, CodecOptions, ErrorCode, Family, Framer,
    MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message, MpNextHop, MpReach, MpUnreach, Nlri,
    Notification, Open, Origin, PathAttribute, RouteRefresh, Update, decode,
};
use lb::bgp::fsm::{Input, Session, SessionConfig, State};
use lb::model::{Community, LargeCommunity};
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bgp");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let s = std::fs::read_to_string(p).expect("readable");
            let s = s.trim();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}

fn all_opts() -> [CodecOptions; 3] {
    [
        CodecOptions {
            four_octet_as: true,
            max_message_len: MAX_MESSAGE_LEN,
        },
        CodecOptions {
            four_octet_as: false,
            max_message_len: MAX_MESSAGE_LEN,
        },
        CodecOptions {
            four_octet_as: true,
            max_message_len: MAX_EXTENDED_MESSAGE_LEN,
        },
    ]
}

/// Decode `bytes` every way we can; a decoded message must re-encode, and that encoding must
/// decode to the same message when the first decode was clean.
fn exercise(bytes: &[u8]) {
    for opts in all_opts() {
        let mut framer = Framer::new(opts.max_message_len);
        framer.push(bytes);
        while let Ok(Some(m)) = framer.next_message() {
            let _ = decode(&m, &opts);
        }
        if let Ok(msg) = decode(bytes, &opts) {
            if let Message::Update(u) = &msg
                && u.error_action().is_some()
            {
                continue;
            }
            let again = msg.encode(&opts).expect("a decoded message re-encodes");
            assert_eq!(decode(&again, &opts).as_ref(), Ok(&msg));
        }
        if let Err(e) = decode(bytes, &opts) {
            let _ = e.notification();
            let _ = e.to_string();
        }
    }
}

fn with_header(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()).min(65535) as u16).to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    m
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    FixLength,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        Just(Mutation::FixLength),
    ]
}

fn apply(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for mu in muts {
        match mu {
            Mutation::Flip { at, xor } if !m.is_empty() => {
                let i = at % m.len();
                m[i] ^= xor;
            }
            Mutation::Truncate { at } if !m.is_empty() => m.truncate(at % m.len()),
            Mutation::Insert { at, bytes } => {
                let i = at % (m.len() + 1);
                m.splice(i..i, bytes.iter().copied());
            }
            // Keep the header's length consistent so the body decoders get exercised.
            Mutation::FixLength if m.len() >= 19 => {
                let len = (m.len().min(65535) as u16).to_be_bytes();
                m[16] = len[0];
                m[17] = len[1];
            }
            _ => {}
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        msg_type in 0..=6u8,
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        exercise(&with_header(msg_type, &body));
    }

    #[test]
    fn mutated_captured_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..5),
    ) {
        let all = fixtures();
        let m = apply(all[pick.index(all.len())].clone(), &muts);
        exercise(&m);
    }
}

fn established_session(t0: Instant) -> Session {
    let mut s = Session::new(SessionConfig::new(
        65002,
        65001,
        Ipv4Addr::new(10, 99, 0, 2),
    ));
    let local: SocketAddr = "10.99.0.2:40000".parse().unwrap();
    let remote: SocketAddr = "10.99.0.1:179".parse().unwrap();
    s.step(t0, Input::ManualStart);
    s.step(t0, Input::TcpConnected { local, remote });
    let open = Open::new(
        65001,
        90,
        Ipv4Addr::new(10, 99, 0, 1),
        vec![Capability::FourOctetAs(65001)],
    );
    let opts = CodecOptions::default();
    s.step(t0, Input::Bytes(Message::Open(open).encode(&opts).unwrap()));
    s.step(t0, Input::Bytes(Message::Keepalive.encode(&opts).unwrap()));
    assert_eq!(s.state(), State::Established);
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn an_established_session_survives_mutated_captured_streams(
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        muts in prop::collection::vec(mutation(), 0..3),
        chunk in 1..64usize,
    ) {
        let all = fixtures();
        let t0 = Instant::now();
        let mut s = established_session(t0);
        let mut stream: Vec<u8> = picks.iter().flat_map(|p| all[p.index(all.len())].clone()).collect();
        stream = apply(stream, &muts);
        for c in stream.chunks(chunk) {
            s.step(t0, Input::Bytes(c.to_vec()));
        }
        // Either still up, or it went down through a proper path.
        prop_assert!(matches!(s.state(), State::Established | State::Idle));
    }
}

// ---- encode → decode round trip of random valid messages ----

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0..=32u8).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0..=128u8)
        .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()))
}

fn as_path() -> impl Strategy<Value = AsPath> {
    let seg = (
        prop_oneof![
            Just(AsSegmentType::Sequence),
            Just(AsSegmentType::Set),
            Just(AsSegmentType::ConfedSequence),
            Just(AsSegmentType::ConfedSet)
        ],
        prop::collection::vec(any::<u32>(), 1..6),
    )
        .prop_map(|(kind, asns)| AsSegment { kind, asns });
    prop::collection::vec(seg, 0..3).prop_map(|segments| AsPath { segments })
}

fn optional_attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<u32>().prop_map(Attr::Med),
        any::<u32>().prop_map(Attr::LocalPref),
        Just(Attr::AtomicAggregate),
        (any::<u32>(), any::<u32>()).prop_map(|(asn, a)| Attr::Aggregator {
            asn,
            address: Ipv4Addr::from(a)
        }),
        prop::collection::vec(any::<u32>().prop_map(Community), 1..10).prop_map(Attr::Communities),
        prop::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global, local1, local2)| {
                LargeCommunity {
                    global,
                    local1,
                    local2,
                }
            }),
            1..10
        )
        .prop_map(Attr::LargeCommunities),
        (
            any::<u128>(),
            prop::option::of(any::<u128>()),
            prop::collection::vec(v6net(), 0..10)
        )
            .prop_map(|(g, ll, nlri)| Attr::MpReach(MpReach {
                family: Family::IPV6_UNICAST,
                next_hop: MpNextHop::V6 {
                    global: Ipv6Addr::from(g),
                    link_local: ll.map(Ipv6Addr::from)
                },
                nlri: Nlri::Prefixes(nlri),
            })),
        prop::collection::vec(v6net(), 0..10).prop_map(|w| Attr::MpUnreach(MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: Nlri::Prefixes(w),
        })),
        as_path().prop_map(Attr::As4Path),
        (100..=255u8, prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(type_code, value)| Attr::Unknown { type_code, value }),
    ]
}

fn update() -> impl Strategy<Value = Update> {
    (
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        as_path(),
        any::<u32>(),
        prop::collection::vec(optional_attr(), 0..6),
        prop::collection::vec(v4net(), 0..20),
        prop::collection::vec(v4net(), 0..20),
    )
        .prop_map(|(origin, path, nh, extras, nlri, withdrawn)| {
            let mut attributes = vec![
                PathAttribute::new(Attr::Origin(origin)),
                PathAttribute::new(Attr::AsPath(path)),
                PathAttribute::new(Attr::NextHop(Ipv4Addr::from(nh))),
            ];
            for e in extras {
                if attributes
                    .iter()
                    .all(|a| a.attr.type_code() != e.type_code())
                {
                    attributes.push(PathAttribute::new(e));
                }
            }
            Update {
                withdrawn,
                attributes,
                nlri,
                issues: vec![],
            }
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>())
            .prop_map(|(afi, safi)| Capability::Multiprotocol(Family::new(afi, safi))),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (200..=255u8, prop::collection::vec(any::<u8>(), 0..10))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        update().prop_map(Message::Update),
        (
            any::<u32>(),
            3..=u16::MAX,
            1..=u32::MAX,
            prop::collection::vec(capability(), 0..8),
            any::<bool>()
        )
            .prop_map(|(asn, hold, id, caps, single)| {
                let mut open = Open::new(asn, hold, Ipv4Addr::from(id), caps);
                open.single_capability_parameter = single && open.capabilities.len() > 1;
                Message::Open(open)
            }),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(c, s, data)| {
                Message::Notification(Notification::with_data(ErrorCode::from_octets(c, s), data))
            }),
        ".{0,80}".prop_map(|text| Message::Notification(Notification::admin_shutdown(&text))),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), 0..=2u8).prop_map(|(afi, safi, subtype)| {
            Message::RouteRefresh(RouteRefresh {
                family: Family::new(afi, safi),
                subtype,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_valid_messages_round_trip(msg in message(), four_octet_as in any::<bool>()) {
        let opts = CodecOptions { four_octet_as, max_message_len: MAX_MESSAGE_LEN };
        // On a 2-octet session ASNs above 65535 become AS_TRANS: compare on a 4-octet one.
        let opts = if matches!(msg, Message::Update(_)) && !four_octet_as {
            CodecOptions { four_octet_as: true, ..opts }
        } else {
            opts
        };
        let bytes = msg.encode(&opts).expect("random messages are sized to fit");
        prop_assert_eq!(decode(&bytes, &opts), Ok(msg));
    }
}
