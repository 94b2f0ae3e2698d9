//! Decode BGP messages captured from GoBGP 3.10 and FRR 8.4 (tests/fixtures/bgp/README.md)
//! and re-encode those whose layout our encoder reproduces; graceful restart (RFC 4724):
//! FRR's capability and End-of-RIB markers against ours.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use lb::bgp::build::{Advertisement, PeerParams, build_updates, build_withdrawals, end_of_rib};
use lb::bgp::codec::{
    AS_TRANS, AsSegmentType, Capability, CeaseSubcode, CodecOptions, ErrorCode, Family, Framer,
    GracefulRestart, MAX_MESSAGE_LEN, Message, MpNextHop, Open, Origin, decode,
};
use lb::bgp::fsm::{GracefulRestartOffer, SessionConfig};
use lb::model::{Community, LargeCommunity};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bgp")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    hex(text.trim())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir())
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hex"))
        .map(|n| {
            let stem = n.trim_end_matches(".hex").to_string();
            let bytes = fixture(&stem);
            (stem, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Sessions with GoBGP and FRR negotiate 4-octet ASNs.
fn opts() -> CodecOptions {
    CodecOptions {
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
    }
}

fn decoded(name: &str) -> Message {
    decode(&fixture(name), &opts()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn update(name: &str) -> lb::bgp::codec::Update {
    match decoded(name) {
        Message::Update(u) => u,
        other => panic!("{name}: expected UPDATE, got {other:?}"),
    }
}

const COMMUNITIES: [Community; 2] = [Community((64500 << 16) | 100), Community::NO_EXPORT];
const LARGE: LargeCommunity = LargeCommunity {
    global: 64500,
    local1: 1,
    local2: 2,
};

#[test]
fn every_captured_message_decodes_cleanly_with_the_type_in_its_name() {
    let all = all_fixtures();
    assert!(
        all.len() >= 60,
        "expected the captured set, found {}",
        all.len()
    );
    for (name, bytes) in all {
        let msg = decode(&bytes, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = name.rsplit('-').next().unwrap_or_default();
        let expected = match kind {
            "open" => "OPEN",
            "update" => "UPDATE",
            "keepalive" => "KEEPALIVE",
            "notification" => "NOTIFICATION",
            "routerefresh" => "ROUTE-REFRESH",
            other => panic!("{name}: unexpected kind {other}"),
        };
        assert_eq!(msg.type_name(), expected, "{name}");
        if let Message::Update(u) = &msg {
            assert_eq!(u.error_action(), None, "{name}: {:?}", u.issues);
        }
    }
}

#[test]
fn every_captured_message_reencodes_to_the_same_bytes() {
    for (name, bytes) in all_fixtures() {
        let msg = decode(&bytes, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = msg
            .encode(&opts())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, bytes, "{name}");
    }
}

#[test]
fn a_captured_session_stream_splits_into_its_messages() {
    let names = [
        "ibgp-v4-frr-00-open",
        "ibgp-v4-frr-01-keepalive",
        "ibgp-v4-frr-02-update",
        "ibgp-v4-frr-03-update",
    ];
    let stream: Vec<u8> = names.iter().flat_map(|n| fixture(n)).collect();
    let mut framer = Framer::new(MAX_MESSAGE_LEN);
    let mut got = Vec::new();
    // Feed in awkward 7-byte chunks.
    for chunk in stream.chunks(7) {
        framer.push(chunk);
        while let Some(m) = framer.next_message().expect("valid stream") {
            got.push(m);
        }
    }
    assert_eq!(framer.buffered(), 0);
    let expected: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
    assert_eq!(got, expected);
}

#[test]
fn frr_open_with_4_octet_asn_carries_as_trans_and_the_capability() {
    let Message::Open(open) = decoded("ebgp-v4-frr-00-open") else {
        panic!("not an OPEN")
    };
    assert_eq!(open.version, 4);
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_002);
    assert_eq!(open.hold_time, 9);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(open.families(), vec![Family::IPV4_UNICAST]);
    assert!(open.has(&Capability::RouteRefresh));
    assert!(open.has(&Capability::EnhancedRouteRefresh));
    assert!(open.has(&Capability::ExtendedMessage));
    let gr = open
        .graceful_restart()
        .expect("FRR advertises graceful restart");
    // A freshly started bgpd sets R and N, restart time 120 s.
    assert!(gr.restart_state);
    assert!(gr.notification);
    assert_eq!(gr.restart_time, 120);
    assert_eq!(gr.families, vec![(Family::IPV4_UNICAST, false)]);
    // FQDN (73) is kept raw, with FRR's hostname "capb".
    assert!(open.capabilities.iter().any(|c| matches!(
        c,
        Capability::Unknown { code: 73, value } if value.windows(4).any(|w| w == b"capb")
    )));
    assert!(!open.single_capability_parameter);
}

#[test]
fn gobgp_open_puts_all_capabilities_in_one_parameter() {
    let Message::Open(open) = decoded("ebgp-v4-gobgp-00-open") else {
        panic!("not an OPEN")
    };
    assert!(open.single_capability_parameter);
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.my_as, 65001);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(open.families(), vec![Family::IPV4_UNICAST]);
    let gr = open.graceful_restart().expect("configured in capture.sh");
    assert_eq!(gr.families.len(), 1);
    assert_eq!(gr.families[0].0, Family::IPV4_UNICAST);
    let Message::Open(v6) = decoded("ebgp-v6-gobgp-00-open") else {
        panic!("not an OPEN")
    };
    assert_eq!(v6.families(), vec![Family::IPV6_UNICAST]);
}

#[test]
fn gobgp_ibgp_v4_update_has_local_pref_communities_and_empty_as_path() {
    let u = update("ibgp-v4-gobgp-02-update");
    assert_eq!(u.origin(), Some(Origin::Igp));
    assert!(u.as_path().expect("AS_PATH").segments.is_empty());
    assert_eq!(u.next_hop(), Some(Ipv4Addr::new(10, 99, 0, 1)));
    assert_eq!(u.local_pref(), Some(200));
    assert_eq!(u.communities(), &COMMUNITIES);
    assert_eq!(u.large_communities(), &[LARGE]);
    assert_eq!(
        u.announced(),
        vec!["10.100.0.1/32".parse::<IpNet>().unwrap()]
    );
}

#[test]
fn frr_ebgp_v6_update_has_mp_reach_with_extended_length_and_4_octet_as_path() {
    let u = update("ebgp-v6-frr-02-update");
    let mp = u.mp_reach().expect("MP_REACH_NLRI");
    assert_eq!(mp.family, Family::IPV6_UNICAST);
    assert_eq!(
        mp.next_hop,
        MpNextHop::V6 {
            global: "fd99::2".parse().unwrap(),
            link_local: None
        }
    );
    assert_eq!(
        u.announced(),
        vec!["fd00:100::2/128".parse::<IpNet>().unwrap()]
    );
    // FRR sets the extended length bit on MP_REACH_NLRI and AS_PATH even when short.
    assert!(u.attributes[0].flags.extended_length());
    let path = u.as_path().expect("AS_PATH");
    assert_eq!(path.segments.len(), 1);
    assert_eq!(path.segments[0].kind, AsSegmentType::Sequence);
    assert_eq!(path.segments[0].asns, vec![4_200_000_002]);
    assert_eq!(u.med(), Some(0));
    assert_eq!(u.local_pref(), None, "no LOCAL_PREF on eBGP");
    assert_eq!(u.communities(), &COMMUNITIES);
    assert_eq!(u.large_communities(), &[LARGE]);
}

#[test]
fn captured_withdrawals_and_end_of_rib_markers_are_recognised() {
    let v4 = update("ibgp-v4-frr-08-update");
    assert_eq!(
        v4.withdrawn_prefixes(),
        vec!["10.100.0.2/32".parse::<IpNet>().unwrap()]
    );
    let v6 = update("ibgp-v6-frr-06-update");
    assert_eq!(
        v6.withdrawn_prefixes(),
        vec!["fd00:100::2/128".parse::<IpNet>().unwrap()]
    );
    assert_eq!(v6.end_of_rib(), None);
    assert_eq!(
        update("ibgp-v4-frr-03-update").end_of_rib(),
        Some(Family::IPV4_UNICAST)
    );
    assert_eq!(
        update("ebgp-v4-gobgp-03-update").end_of_rib(),
        Some(Family::IPV4_UNICAST)
    );
    // Neither sent an IPv6 End-of-RIB in the capture (no graceful restart on v6): ours.
    let Ok(Message::Update(eor)) = decode(&end_of_rib(Family::IPV6_UNICAST), &opts()) else {
        panic!("End-of-RIB does not decode")
    };
    assert_eq!(eor.end_of_rib(), Some(Family::IPV6_UNICAST));
}

/// The graceful restart capability (code 64) inside an encoded OPEN: its whole TLV.
fn graceful_restart_tlv(open: &[u8]) -> Vec<u8> {
    // Header 19, version 1, AS 2, hold 2, ID 4, optional parameters length 1.
    let mut params = &open[29..];
    while let [ptype, plen, rest @ ..] = params {
        let (value, next) = rest.split_at(*plen as usize);
        assert_eq!(*ptype, 2, "capabilities parameter");
        let mut caps = value;
        while let [code, len, more @ ..] = caps {
            let (cvalue, after) = more.split_at(*len as usize);
            if *code == 64 {
                return [&[*code, *len][..], cvalue].concat();
            }
            caps = after;
        }
        params = next;
    }
    panic!("no graceful restart capability in {open:02x?}")
}

/// FRR with `bgp graceful-restart`, `preserve-fw-state` and `restart-time 300` on a session
/// carrying IPv4 and IPv6 unicast (capture.sh, scenario `gr`).
#[test]
fn frr_restarting_speaker_capability_has_r_and_n_bits_restart_time_and_f_bit_per_family() {
    let Message::Open(open) = decoded("gr-v4-frr-00-open") else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.families(),
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    let gr = open
        .graceful_restart()
        .expect("graceful restart capability");
    assert!(gr.restart_state, "R: a freshly started bgpd");
    assert!(gr.notification, "N: FRR does RFC 8538");
    assert_eq!(gr.restart_time, 300);
    assert_eq!(
        gr.families,
        vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)],
        "F set for both families (preserve-fw-state)"
    );
}

/// FRR's default, helper only (as in the lab): the capability with no family at all.
#[test]
fn frr_helper_only_capability_has_the_restart_time_and_no_families() {
    let Message::Open(open) = decoded("grhelper-v4-frr-00-open") else {
        panic!("not an OPEN")
    };
    let gr = open
        .graceful_restart()
        .expect("graceful restart capability");
    assert_eq!(gr.restart_time, 120);
    assert!(gr.restart_state && gr.notification);
    assert!(gr.families.is_empty(), "{gr:?}");
    assert_eq!(
        graceful_restart_tlv(&fixture("grhelper-v4-frr-00-open")),
        [64, 2, 0xc0, 0x78]
    );
}

/// RFC 4724 §2: IPv4 End-of-RIB is an UPDATE with nothing in it (23 octets); for another
/// family, an UPDATE holding only an empty MP_UNREACH_NLRI for it (29 octets). Ours are the
/// same bytes as FRR's.
#[test]
fn frr_end_of_rib_markers_decode_and_ours_are_the_same_bytes() {
    let v4 = fixture("gr-v4-frr-02-update");
    let v6 = fixture("gr-v4-frr-03-update");
    assert_eq!(v4.len(), 23);
    assert_eq!(v6.len(), 29);
    assert_eq!(
        update("gr-v4-frr-02-update").end_of_rib(),
        Some(Family::IPV4_UNICAST)
    );
    let u6 = update("gr-v4-frr-03-update");
    assert_eq!(u6.end_of_rib(), Some(Family::IPV6_UNICAST));
    assert!(u6.announced().is_empty() && u6.withdrawn_prefixes().is_empty());
    assert_eq!(end_of_rib(Family::IPV4_UNICAST), v4);
    assert_eq!(end_of_rib(Family::IPV6_UNICAST), v6);
    // The helper-only FRR sends the same markers; so does GoBGP.
    assert_eq!(fixture("grhelper-v4-frr-02-update"), v4);
    assert_eq!(fixture("grhelper-v4-frr-03-update"), v6);
    assert_eq!(fixture("gr-v4-gobgp-02-update"), v4);
    assert_eq!(fixture("gr-v4-gobgp-03-update"), v6);
}

/// Our OPEN's capability, octet by octet as RFC 4724 §3 lays it out: code 64, length
/// 2 + 4 per family, R bit, N bit, two reserved bits, 12 bits of restart time, then AFI (2),
/// SAFI (1) and flags (F = 0x80) per family. With FRR's R, N, time and families it is
/// FRR's capability exactly.
#[test]
fn our_graceful_restart_capability_follows_the_rfc_layout_and_matches_frrs() {
    let mut config = SessionConfig::new(64500, 64500, Ipv4Addr::new(10, 0, 0, 3));
    config.graceful_restart = Some(GracefulRestartOffer {
        restart_time: 300,
        restarted: true,
    });
    let ours = Message::Open(config.open_message())
        .encode(&opts())
        .unwrap();
    let tlv = graceful_restart_tlv(&ours);
    // 300 = 0x12c; R = 0x8000; N clear: lb does not do RFC 8538.
    assert_eq!(tlv, [64, 10, 0x81, 0x2c, 0, 1, 1, 0x80, 0, 2, 1, 0x80]);
    let gr = GracefulRestart {
        restart_state: true,
        notification: true,
        restart_time: 300,
        families: vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)],
    };
    let open = Open::new(
        65001,
        9,
        Ipv4Addr::new(10, 99, 0, 2),
        vec![Capability::GracefulRestart(gr)],
    );
    let bytes = Message::Open(open).encode(&opts()).unwrap();
    assert_eq!(
        graceful_restart_tlv(&bytes),
        graceful_restart_tlv(&fixture("gr-v4-frr-00-open"))
    );
    // Not restarted, the longest restart time: R clear, all 12 bits set.
    config.graceful_restart = Some(GracefulRestartOffer {
        restart_time: 4095,
        restarted: false,
    });
    let ours = Message::Open(config.open_message())
        .encode(&opts())
        .unwrap();
    assert_eq!(&graceful_restart_tlv(&ours)[..4], [64, 10, 0x0f, 0xff]);
}

#[test]
fn frr_shutdown_notification_carries_the_shutdown_communication() {
    let Message::Notification(n) = decoded("ebgp-v4-frr-09-notification") else {
        panic!("not a NOTIFICATION")
    };
    assert_eq!(
        n.code,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(n.shutdown_communication(), Some("capbgp frr maintenance"));
    let Message::Notification(g) = decoded("ebgp-v6-gobgp-06-notification") else {
        panic!("not a NOTIFICATION")
    };
    assert_eq!(
        g.code,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(g.shutdown_communication(), None);
    // Our encoder produces FRR's bytes for the same communication.
    let ours = Message::Notification(lb::bgp::codec::Notification::admin_shutdown(
        "capbgp frr maintenance",
    ))
    .encode(&opts())
    .unwrap();
    assert_eq!(ours, fixture("ebgp-v4-frr-09-notification"));
}

#[test]
fn frr_route_refresh_requests_ipv4_unicast() {
    let Message::RouteRefresh(rr) = decoded("ibgp-v4-frr-06-routerefresh") else {
        panic!("not a ROUTE-REFRESH")
    };
    assert_eq!(rr.family, Family::IPV4_UNICAST);
    assert_eq!(rr.subtype, 0);
}

fn gobgp_advert(prefix: &str, next_hop: IpAddr) -> Advertisement {
    Advertisement {
        prefix: prefix.parse().unwrap(),
        next_hop,
        local_pref: Some(200),
        communities: COMMUNITIES.to_vec(),
        large_communities: vec![LARGE],
    }
}

fn gobgp_peer(ibgp: bool) -> PeerParams {
    PeerParams {
        local_asn: 65001,
        ibgp,
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
        ipv6_link_local: None,
    }
}

#[test]
fn builder_reproduces_gobgp_announcements_byte_for_byte() {
    let v4 = gobgp_advert("10.100.0.1/32", IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)));
    let v6 = gobgp_advert(
        "fd00:100::1/128",
        IpAddr::V6("fd99::1".parse::<Ipv6Addr>().unwrap()),
    );
    for (ibgp, scenario) in [(true, "ibgp"), (false, "ebgp")] {
        let built = build_updates(&gobgp_peer(ibgp), std::slice::from_ref(&v4)).unwrap();
        let expected = if ibgp {
            "ibgp-v4-gobgp-02-update"
        } else {
            "ebgp-v4-gobgp-05-update"
        };
        assert_eq!(built, vec![fixture(expected)], "{scenario} v4");
        let built = build_updates(&gobgp_peer(ibgp), std::slice::from_ref(&v6)).unwrap();
        assert_eq!(
            built,
            vec![fixture(&format!("{scenario}-v6-gobgp-02-update"))],
            "{scenario} v6"
        );
    }
}

#[test]
fn builder_reproduces_gobgp_withdrawals_and_end_of_rib() {
    let peer = gobgp_peer(false);
    assert_eq!(
        build_withdrawals(&peer, &["10.100.0.1/32".parse().unwrap()]),
        vec![fixture("ebgp-v4-gobgp-08-update")]
    );
    assert_eq!(
        build_withdrawals(&peer, &["fd00:100::1/128".parse().unwrap()]),
        vec![fixture("ebgp-v6-gobgp-05-update")]
    );
    assert_eq!(
        end_of_rib(Family::IPV4_UNICAST),
        fixture("ebgp-v4-gobgp-03-update")
    );
}
