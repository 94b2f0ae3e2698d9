use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::model::{Community, LargeCommunity};

fn opts() -> CodecOptions {
    CodecOptions::default()
}

fn opts2() -> CodecOptions {
    CodecOptions {
        four_octet_as: false,
        ..CodecOptions::default()
    }
}

fn msg(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    m
}

/// UPDATE with no withdrawn routes, `attrs` and `nlri`.
fn update_msg(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    msg(MSG_UPDATE, &body)
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const EMPTY_AS_PATH: [u8; 3] = [0x40, 2, 0];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 1];
const NLRI: [u8; 5] = [32, 192, 0, 2, 1];

fn mandatory() -> Vec<u8> {
    [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &NEXT_HOP].concat()
}

fn decode_update(m: &[u8], o: &CodecOptions) -> Result<Update, DecodeError> {
    match decode(m, o)? {
        Message::Update(u) => Ok(u),
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn reset_code(r: Result<Update, DecodeError>) -> ErrorCode {
    match r {
        Err(e) => e.notification().expect("a NOTIFICATION").code,
        Ok(u) => panic!("expected session reset, got {u:?}"),
    }
}

// ---- header ----

#[test]
fn header_with_bad_marker_is_connection_not_synchronized() {
    let mut m = msg(MSG_KEEPALIVE, &[]);
    m[0] = 0xfe;
    assert_eq!(decode(&m, &opts()), Err(DecodeError::BadMarker));
    assert_eq!(
        DecodeError::BadMarker.notification().map(|n| n.code),
        Some(ErrorCode::MessageHeader(
            HeaderSubcode::ConnectionNotSynchronized
        ))
    );
}

#[test]
fn header_length_below_19_or_above_4096_is_bad_message_length() {
    for len in [0u16, 18, 4097, 65535] {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&len.to_be_bytes());
        m.push(MSG_KEEPALIVE);
        let e = frame_len(&m, MAX_MESSAGE_LEN).expect_err("bad length");
        let n = e.notification().expect("NOTIFICATION");
        assert_eq!(
            n.code,
            ErrorCode::MessageHeader(HeaderSubcode::BadMessageLength)
        );
        assert_eq!(n.data, len.to_be_bytes());
    }
}

#[test]
fn extended_messages_allow_up_to_65535_octets() {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&5000u16.to_be_bytes());
    m.push(MSG_UPDATE);
    assert_eq!(frame_len(&m, MAX_EXTENDED_MESSAGE_LEN), Ok(None));
    assert!(frame_len(&m, MAX_MESSAGE_LEN).is_err());
}

#[test]
fn type_specific_minimum_lengths_are_bad_message_length() {
    for (t, body_len) in [(MSG_OPEN, 9), (MSG_UPDATE, 3), (MSG_KEEPALIVE, 1)] {
        let m = msg(t, &vec![0; body_len]);
        assert!(
            matches!(decode(&m, &opts()), Err(DecodeError::BadLength { .. })),
            "type {t}"
        );
    }
}

#[test]
fn unknown_message_type_is_bad_message_type_with_the_type() {
    let e = decode(&msg(9, &[]), &opts()).expect_err("bad type");
    let n = e.notification().expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::MessageHeader(HeaderSubcode::BadMessageType)
    );
    assert_eq!(n.data, vec![9]);
}

#[test]
fn route_refresh_with_wrong_length_is_a_route_refresh_error() {
    let e = decode(&msg(MSG_ROUTE_REFRESH, &[0, 1, 0, 1, 0]), &opts()).expect_err("bad length");
    assert_eq!(
        e.notification().map(|n| n.code),
        Some(ErrorCode::RouteRefresh(
            RouteRefreshSubcode::InvalidMessageLength
        ))
    );
}

#[test]
fn truncated_notification_is_not_answered() {
    let e = decode(&msg(MSG_NOTIFICATION, &[6]), &opts()).expect_err("truncated");
    assert_eq!(e, DecodeError::NotificationTruncated);
    assert_eq!(e.notification(), None);
}

#[test]
fn framer_reports_a_bad_marker_before_the_header_is_complete() {
    let mut f = Framer::new(MAX_MESSAGE_LEN);
    f.push(&[0xff, 0xff, 0x00]);
    assert_eq!(f.next_message(), Err(DecodeError::BadMarker));
}

#[test]
fn framer_waits_for_the_whole_message() {
    let m = msg(MSG_KEEPALIVE, &[]);
    let mut f = Framer::new(MAX_MESSAGE_LEN);
    f.push(&m[..18]);
    assert_eq!(f.next_message(), Ok(None));
    f.push(&m[18..]);
    f.push(&m[..5]);
    assert_eq!(f.next_message(), Ok(Some(m.clone())));
    assert_eq!(f.buffered(), 5);
}

// ---- OPEN ----

fn open_body(version: u8, my_as: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

fn open_err(body: Vec<u8>) -> Notification {
    decode(&msg(MSG_OPEN, &body), &opts())
        .expect_err("OPEN error")
        .notification()
        .expect("NOTIFICATION")
}

#[test]
fn open_with_zero_bgp_identifier_is_bad_bgp_identifier() {
    let n = open_err(open_body(4, 65001, 90, [0; 4], &[]));
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadBgpIdentifier));
}

#[test]
fn open_with_hold_time_one_is_unacceptable_hold_time() {
    let n = open_err(open_body(4, 65001, 1, [1; 4], &[]));
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::UnacceptableHoldTime));
}

#[test]
fn open_with_parameter_length_past_the_message_is_an_open_error() {
    let mut body = open_body(4, 65001, 90, [1; 4], &[2, 6, 65, 4, 0, 0]);
    body[9] = 20;
    let n = open_err(body);
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::Unspecific));
}

#[test]
fn open_with_malformed_4_octet_as_capability_is_an_open_error() {
    let n = open_err(open_body(4, 65001, 90, [1; 4], &[2, 5, 65, 3, 0, 0, 1]));
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::Unspecific));
}

#[test]
fn open_keeps_unknown_capabilities_raw_and_reencodes_them() {
    let body = open_body(4, 65001, 90, [1; 4], &[2, 5, 200, 3, 1, 2, 3]);
    let m = msg(MSG_OPEN, &body);
    let Ok(Message::Open(open)) = decode(&m, &opts()) else {
        panic!("OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Unknown {
            code: 200,
            value: vec![1, 2, 3]
        }]
    );
    assert_eq!(Message::Open(open).encode(&opts()), Ok(m));
}

#[test]
fn open_with_many_capabilities_uses_extended_optional_parameters_both_ways() {
    let caps: Vec<Capability> = (0..60)
        .map(|i| Capability::Unknown {
            code: 200,
            value: vec![i; 3],
        })
        .collect();
    let open = Open::new(65001, 90, Ipv4Addr::new(1, 1, 1, 1), caps);
    let bytes = Message::Open(open.clone())
        .encode(&opts())
        .expect("encodes");
    // RFC 9072: Non-Ext OP Len 255, Non-Ext OP Type 255.
    assert_eq!(&bytes[28..30], &[255, 255]);
    assert_eq!(decode(&bytes, &opts()), Ok(Message::Open(open)));
}

#[test]
fn open_for_a_4_octet_asn_sends_as_trans() {
    let open = Open::new(
        4_200_000_000,
        90,
        Ipv4Addr::new(1, 1, 1, 1),
        vec![Capability::FourOctetAs(4_200_000_000)],
    );
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
}

#[test]
fn graceful_restart_capability_round_trips() {
    let gr = GracefulRestart {
        restart_state: true,
        notification: false,
        restart_time: 120,
        families: vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, false)],
    };
    let open = Open::new(
        65001,
        90,
        Ipv4Addr::new(1, 1, 1, 1),
        vec![Capability::GracefulRestart(gr.clone())],
    );
    let bytes = Message::Open(open).encode(&opts()).unwrap();
    let Ok(Message::Open(back)) = decode(&bytes, &opts()) else {
        panic!("OPEN")
    };
    assert_eq!(back.graceful_restart(), Some(&gr));
}

// ---- NOTIFICATION ----

#[test]
fn shutdown_communication_is_cut_to_255_octets_at_a_character_boundary() {
    let long = "é".repeat(200); // 400 octets
    let n = Notification::admin_shutdown(&long);
    assert_eq!(n.data[0], 254);
    assert_eq!(
        n.shutdown_communication().map(|s| s.chars().count()),
        Some(127)
    );
}

#[test]
fn shutdown_communication_with_bad_length_or_utf8_is_treated_as_absent() {
    let code = ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown);
    assert_eq!(
        Notification::with_data(code, vec![10, b'a']).shutdown_communication(),
        None
    );
    assert_eq!(
        Notification::with_data(code, vec![2, 0xff, 0xfe]).shutdown_communication(),
        None
    );
    assert_eq!(
        Notification::with_data(code, vec![]).shutdown_communication(),
        None
    );
    assert_eq!(
        Notification::with_data(code, vec![2, b'o', b'k']).shutdown_communication(),
        Some("ok")
    );
}

#[test]
fn every_error_code_and_subcode_survives_octets_round_trip() {
    for code in 0..=255u8 {
        for sub in 0..=255u8 {
            assert_eq!(ErrorCode::from_octets(code, sub).octets(), (code, sub));
        }
    }
}

#[test]
fn notification_display_names_code_and_communication() {
    let s = Notification::admin_shutdown("maintenance").to_string();
    assert!(
        s.contains("AdministrativeShutdown") && s.contains("(6/2)") && s.contains("maintenance"),
        "{s}"
    );
}

// ---- UPDATE: RFC 7606 ----

#[test]
fn withdrawn_length_past_the_message_resets_the_session() {
    let m = msg(MSG_UPDATE, &[0, 10, 0, 0]);
    assert_eq!(
        reset_code(decode_update(&m, &opts())),
        ErrorCode::Update(UpdateSubcode::MalformedAttributeList)
    );
}

#[test]
fn total_attribute_length_past_the_message_resets_the_session() {
    let m = msg(MSG_UPDATE, &[0, 0, 0, 10, 0x40, 1, 1, 0]);
    assert_eq!(
        reset_code(decode_update(&m, &opts())),
        ErrorCode::Update(UpdateSubcode::MalformedAttributeList)
    );
}

#[test]
fn attribute_overrunning_the_attributes_is_treat_as_withdraw_and_nlri_is_still_found() {
    let mut attrs = mandatory();
    attrs.extend_from_slice(&[0xc0, 8, 40, 0, 0]); // COMMUNITIES claims 40 octets
    let u = decode_update(&update_msg(&attrs, &NLRI), &opts()).expect("survives");
    assert_eq!(u.error_action(), Some(ErrorAction::TreatAsWithdraw));
    assert_eq!(u.nlri, vec!["192.0.2.1/32".parse().unwrap()]);
}

#[test]
fn fewer_than_three_octets_left_for_an_attribute_is_treat_as_withdraw() {
    let mut attrs = mandatory();
    attrs.extend_from_slice(&[0xc0, 8]);
    let u = decode_update(&update_msg(&attrs, &NLRI), &opts()).expect("survives");
    assert_eq!(u.error_action(), Some(ErrorAction::TreatAsWithdraw));
}

fn issue_of(attrs: &[u8]) -> (Option<ErrorAction>, Update) {
    let u = decode_update(&update_msg(attrs, &NLRI), &opts()).expect("survives");
    (u.error_action(), u)
}

#[test]
fn invalid_origin_value_is_treat_as_withdraw_with_invalid_origin_error() {
    let attrs = [&[0x40, 1, 1, 9][..], &EMPTY_AS_PATH, &NEXT_HOP].concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::TreatAsWithdraw));
    let n = u.issues[0].error.notification();
    assert_eq!(
        n.code,
        ErrorCode::Update(UpdateSubcode::InvalidOriginAttribute)
    );
    assert_eq!(n.data, vec![0x40, 1, 1, 9]);
}

#[test]
fn next_hop_with_wrong_length_is_treat_as_withdraw() {
    let attrs = [
        &ORIGIN_IGP[..],
        &EMPTY_AS_PATH,
        &[0x40, 3, 5, 1, 2, 3, 4, 5],
    ]
    .concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::TreatAsWithdraw));
    assert_eq!(
        u.issues[0].error.notification().code,
        ErrorCode::Update(UpdateSubcode::AttributeLengthError)
    );
}

#[test]
fn malformed_communities_and_large_communities_are_treat_as_withdraw() {
    for bad in [
        &[0xc0, 8, 3, 1, 2, 3][..],
        &[0xc0, 8, 0],
        &[0xc0, 32, 4, 0, 0, 0, 1],
    ] {
        let attrs = [&mandatory()[..], bad].concat();
        assert_eq!(
            issue_of(&attrs).0,
            Some(ErrorAction::TreatAsWithdraw),
            "{bad:?}"
        );
    }
}

#[test]
fn malformed_atomic_aggregate_and_aggregator_are_discarded() {
    for bad in [&[0x40, 6, 1, 0][..], &[0xc0, 7, 5, 0, 1, 1, 1, 1]] {
        let attrs = [&mandatory()[..], bad].concat();
        let (action, u) = issue_of(&attrs);
        assert_eq!(action, Some(ErrorAction::AttributeDiscard), "{bad:?}");
        assert_eq!(u.attributes.len(), 3, "the bad attribute is dropped");
    }
}

#[test]
fn malformed_as4_path_is_discarded() {
    let attrs = [&mandatory()[..], &[0xc0, 17, 3, 2, 1, 0]].concat();
    assert_eq!(issue_of(&attrs).0, Some(ErrorAction::AttributeDiscard));
}

#[test]
fn duplicate_attribute_keeps_the_first_and_discards_the_rest() {
    let attrs = [
        &mandatory()[..],
        &[0xc0, 8, 4, 0, 0, 0, 1],
        &[0xc0, 8, 4, 0, 0, 0, 2],
    ]
    .concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::AttributeDiscard));
    assert_eq!(u.communities(), &[Community(1)]);
}

fn mp_reach_v6(nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh.len() as u8];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(nlri);
    let mut a = vec![0x80, 14, v.len() as u8];
    a.extend_from_slice(&v);
    a
}

#[test]
fn duplicate_mp_reach_resets_the_session() {
    let mp = mp_reach_v6(&[0x20; 16], &[]);
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &mp, &mp].concat();
    assert_eq!(
        reset_code(decode_update(&update_msg(&attrs, &[]), &opts())),
        ErrorCode::Update(UpdateSubcode::MalformedAttributeList)
    );
}

#[test]
fn mp_reach_with_a_bad_next_hop_length_resets_the_session() {
    let mp = mp_reach_v6(&[0x20; 7], &[]);
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &mp].concat();
    assert_eq!(
        reset_code(decode_update(&update_msg(&attrs, &[]), &opts())),
        ErrorCode::Update(UpdateSubcode::OptionalAttributeError)
    );
}

#[test]
fn mp_reach_with_global_and_link_local_next_hop_decodes_and_round_trips() {
    let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let nh = [global.octets(), ll.octets()].concat();
    let mp = mp_reach_v6(
        &nh,
        &[128, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
    );
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &mp].concat();
    let m = update_msg(&attrs, &[]);
    let u = decode_update(&m, &opts()).expect("valid");
    assert_eq!(u.error_action(), None);
    let reach = u.mp_reach().expect("MP_REACH");
    assert_eq!(
        reach.next_hop,
        MpNextHop::V6 {
            global,
            link_local: Some(ll)
        }
    );
    assert_eq!(u.announced(), vec!["2001:db8::9/128".parse().unwrap()]);
    assert_eq!(Message::Update(u).encode(&opts()), Ok(m));
}

#[test]
fn mp_reach_for_an_unknown_family_is_kept_opaque() {
    let mut v = vec![0, 25, 70, 2, 9, 9, 0, 1, 2, 3];
    let mut a = vec![0x80, 14, v.len() as u8];
    a.append(&mut v);
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &a].concat();
    let m = update_msg(&attrs, &[]);
    let u = decode_update(&m, &opts()).expect("valid");
    let reach = u.mp_reach().expect("MP_REACH");
    assert_eq!(reach.family, Family::new(25, 70));
    assert_eq!(reach.nlri, Nlri::Opaque(vec![1, 2, 3]));
    assert_eq!(Message::Update(u).encode(&opts()), Ok(m));
}

#[test]
fn origin_flagged_optional_is_treat_as_withdraw_with_flags_error() {
    let attrs = [&[0xc0, 1, 1, 0][..], &EMPTY_AS_PATH, &NEXT_HOP].concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::TreatAsWithdraw));
    assert_eq!(
        u.issues[0].error.notification().code,
        ErrorCode::Update(UpdateSubcode::AttributeFlagsError)
    );
}

#[test]
fn unrecognized_well_known_attribute_resets_with_the_attribute_as_data() {
    let attrs = [&mandatory()[..], &[0x40, 99, 1, 7]].concat();
    let e = decode_update(&update_msg(&attrs, &NLRI), &opts()).expect_err("reset");
    let n = e.notification().expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::Update(UpdateSubcode::UnrecognizedWellKnownAttribute)
    );
    assert_eq!(n.data, vec![0x40, 99, 1, 7]);
}

#[test]
fn unknown_optional_attribute_is_kept_with_its_flags_and_reencoded() {
    let attrs = [&mandatory()[..], &[0xe0, 99, 2, 7, 8]].concat();
    let m = update_msg(&attrs, &NLRI);
    let u = decode_update(&m, &opts()).expect("valid");
    assert_eq!(u.error_action(), None);
    let unknown = u.attributes.last().expect("kept");
    assert!(unknown.flags.partial() && unknown.flags.optional() && unknown.flags.transitive());
    assert_eq!(
        unknown.attr,
        Attr::Unknown {
            type_code: 99,
            value: vec![7, 8]
        }
    );
    assert_eq!(Message::Update(u).encode(&opts()), Ok(m));
}

#[test]
fn missing_next_hop_with_nlri_is_treat_as_withdraw() {
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH].concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::TreatAsWithdraw));
    let n = u.issues[0].error.notification();
    assert_eq!(
        n.code,
        ErrorCode::Update(UpdateSubcode::MissingWellKnownAttribute)
    );
    assert_eq!(n.data, vec![attr_type::NEXT_HOP]);
}

#[test]
fn withdraw_only_update_needs_no_attributes() {
    let m = msg(MSG_UPDATE, &[0, 5, 32, 192, 0, 2, 1, 0, 0]);
    let u = decode_update(&m, &opts()).expect("valid");
    assert_eq!(u.error_action(), None);
    assert_eq!(
        u.withdrawn_prefixes(),
        vec!["192.0.2.1/32".parse().unwrap()]
    );
}

#[test]
fn nlri_with_prefix_length_33_resets_with_invalid_network_field() {
    assert_eq!(
        reset_code(decode_update(
            &update_msg(&mandatory(), &[33, 1, 2, 3, 4, 5]),
            &opts()
        )),
        ErrorCode::Update(UpdateSubcode::InvalidNetworkField)
    );
    assert_eq!(
        reset_code(decode_update(
            &update_msg(&mandatory(), &[24, 1, 2]),
            &opts()
        )),
        ErrorCode::Update(UpdateSubcode::InvalidNetworkField)
    );
}

#[test]
fn as_path_with_an_empty_segment_is_treat_as_withdraw() {
    let attrs = [&ORIGIN_IGP[..], &[0x40, 2, 2, 2, 0], &NEXT_HOP].concat();
    let (action, u) = issue_of(&attrs);
    assert_eq!(action, Some(ErrorAction::TreatAsWithdraw));
    assert_eq!(
        u.issues[0].error.notification().code,
        ErrorCode::Update(UpdateSubcode::MalformedAsPath)
    );
}

#[test]
fn as_path_decodes_2_octet_asns_on_a_2_octet_session() {
    let attrs = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0],
        &NEXT_HOP,
    ]
    .concat();
    let u = decode_update(&update_msg(&attrs, &NLRI), &opts2()).expect("valid");
    assert_eq!(
        u.as_path().map(|p| p.segments[0].asns.clone()),
        Some(vec![65001, 23456])
    );
    // The same bytes on a 4-octet session are one 4-octet ASN short: malformed.
    let u4 = decode_update(&update_msg(&attrs, &NLRI), &opts()).expect("survives");
    assert_eq!(u4.error_action(), Some(ErrorAction::TreatAsWithdraw));
}

#[test]
fn host_bits_past_the_prefix_length_are_cleared() {
    let u = decode_update(&update_msg(&mandatory(), &[20, 10, 1, 0xff]), &opts()).expect("valid");
    assert_eq!(u.nlri, vec!["10.1.240.0/20".parse().unwrap()]);
}

#[test]
fn attribute_longer_than_255_octets_gets_the_extended_length_flag() {
    let lcs: Vec<LargeCommunity> = (0..30)
        .map(|i| LargeCommunity {
            global: 1,
            local1: 2,
            local2: i,
        })
        .collect();
    let u = Update {
        attributes: vec![PathAttribute::new(Attr::LargeCommunities(lcs.clone()))],
        ..Default::default()
    };
    let bytes = Message::Update(u).encode(&opts()).unwrap();
    assert_eq!(bytes[23], 0xc0 | AttrFlags::EXTENDED_LENGTH);
    assert_eq!(&bytes[25..27], &360u16.to_be_bytes());
    let back = decode_update(&bytes, &opts()).unwrap();
    assert_eq!(back.large_communities(), lcs.as_slice());
}

#[test]
fn encoding_a_message_past_the_size_limit_fails() {
    let u = Update {
        attributes: vec![PathAttribute::new(Attr::Unknown {
            type_code: 99,
            value: vec![0; 5000],
        })],
        ..Default::default()
    };
    assert!(matches!(
        Message::Update(u).encode(&opts()),
        Err(EncodeError::TooLong { .. })
    ));
}

#[test]
fn aggregator_and_as4_attributes_round_trip_on_a_2_octet_session() {
    let attrs = vec![
        PathAttribute::new(Attr::Origin(Origin::Egp)),
        PathAttribute::new(Attr::AsPath(AsPath::sequence(vec![65001, 23456]))),
        PathAttribute::new(Attr::NextHop(Ipv4Addr::new(10, 0, 0, 1))),
        PathAttribute::new(Attr::AtomicAggregate),
        PathAttribute::new(Attr::Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(1, 2, 3, 4),
        }),
        PathAttribute::new(Attr::As4Path(AsPath::sequence(vec![65001, 4_200_000_000]))),
        PathAttribute::new(Attr::As4Aggregator {
            asn: 4_200_000_000,
            address: Ipv4Addr::new(1, 2, 3, 4),
        }),
    ];
    let u = Update {
        attributes: attrs,
        nlri: vec!["192.0.2.0/24".parse().unwrap()],
        ..Default::default()
    };
    let bytes = Message::Update(u.clone()).encode(&opts2()).unwrap();
    assert_eq!(decode(&bytes, &opts2()), Ok(Message::Update(u)));
}
