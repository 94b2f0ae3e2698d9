use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::bgp::codec::{
    Capability, CeaseSubcode, CodecOptions, ErrorCode, Family, FsmSubcode, HeaderSubcode, Message,
    Notification, Open, OpenSubcode, RouteRefresh, UpdateSubcode, decode,
};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn ebgp() -> SessionConfig {
    SessionConfig::new(64500, 64501, LOCAL_ID)
}

fn ibgp() -> SessionConfig {
    SessionConfig::new(64500, 64500, LOCAL_ID)
}

fn local() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

fn remote() -> SocketAddr {
    "10.0.0.2:179".parse().unwrap()
}

fn connected() -> Input {
    Input::TcpConnected {
        local: local(),
        remote: remote(),
    }
}

fn opts() -> CodecOptions {
    CodecOptions {
        four_octet_as: true,
        max_message_len: 4096,
    }
}

fn bytes(msg: Message) -> Input {
    Input::Bytes(msg.encode(&opts()).expect("test message encodes"))
}

fn peer_open_msg(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    Open::new(
        asn,
        hold,
        id,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
        ],
    )
}

fn peer_open(asn: u32, hold: u16) -> Input {
    bytes(Message::Open(peer_open_msg(asn, hold, PEER_ID)))
}

/// Messages the session sent, decoded.
fn sent(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(decode(b, &opts()).expect("session sends valid messages")),
            _ => None,
        })
        .collect()
}

fn sent_notification(out: &[Output]) -> Option<Notification> {
    sent(out).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

fn has(out: &[Output], wanted: &Output) -> bool {
    out.contains(wanted)
}

fn to_opensent(config: SessionConfig, t0: Instant) -> Session {
    let mut s = Session::new(config);
    s.step(t0, Input::ManualStart);
    s.step(t0, connected());
    assert_eq!(s.state(), State::OpenSent);
    s
}

fn to_openconfirm(config: SessionConfig, t0: Instant) -> Session {
    let peer = config.peer_asn;
    let mut s = to_opensent(config, t0);
    s.step(t0, peer_open(peer, 90));
    assert_eq!(s.state(), State::OpenConfirm);
    s
}

fn to_established(config: SessionConfig, t0: Instant) -> Session {
    let mut s = to_openconfirm(config, t0);
    s.step(t0, bytes(Message::Keepalive));
    assert_eq!(s.state(), State::Established);
    s
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- Idle ----

#[test]
fn idle_manual_start_dials_at_once_and_enters_connect() {
    let t0 = crate::test_origin();
    let mut s = Session::new(ebgp());
    let out = s.step(t0, Input::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert!(has(&out, &Output::Connect));
}

#[test]
fn idle_manual_start_with_first_connect_delay_dials_only_after_the_delay() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.first_connect_delay = secs(5);
    let mut s = Session::new(cfg);
    let out = s.step(t0, Input::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert!(!has(&out, &Output::Connect));
    assert_eq!(s.next_deadline(), Some(t0 + secs(5)));
    assert!(!has(&s.step(t0 + secs(4), Input::Tick), &Output::Connect));
    assert!(has(&s.step(t0 + secs(5), Input::Tick), &Output::Connect));
}

#[test]
fn idle_manual_start_of_passive_peer_enters_active_without_dialing() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.passive = true;
    let mut s = Session::new(cfg);
    let out = s.step(t0, Input::ManualStart);
    assert_eq!(s.state(), State::Active);
    assert!(!has(&out, &Output::Connect));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn idle_refuses_an_incoming_connection() {
    let mut s = Session::new(ebgp());
    let out = s.step(crate::test_origin(), connected());
    assert_eq!(out, vec![Output::CloseTcp]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn idle_after_an_error_restarts_by_itself_after_the_backoff() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    s.step(t0, peer_open(65000, 90)); // bad peer AS
    assert_eq!(s.state(), State::Idle);
    let restart = s.next_deadline().expect("restart scheduled");
    assert!(restart > t0);
    assert!(
        s.step(restart - Duration::from_millis(1), Input::Tick)
            .is_empty()
    );
    let out = s.step(restart, Input::Tick);
    assert_eq!(s.state(), State::Connect);
    assert!(has(&out, &Output::Connect));
}

#[test]
fn idle_after_manual_stop_never_restarts() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    s.step(
        t0,
        Input::ManualStop {
            communication: String::new(),
        },
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
    assert!(s.step(t0 + secs(3600), Input::Tick).is_empty());
}

#[test]
fn manual_start_when_not_idle_is_ignored() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    assert!(s.step(t0, Input::ManualStart).is_empty());
    assert_eq!(s.state(), State::OpenSent);
}

// ---- Connect ----

#[test]
fn connect_tcp_connected_sends_open_and_enters_opensent() {
    let t0 = crate::test_origin();
    let mut s = Session::new(SessionConfig::new(4_200_000_001, 64501, LOCAL_ID));
    s.step(t0, Input::ManualStart);
    let out = s.step(t0, connected());
    assert_eq!(s.state(), State::OpenSent);
    let Some(Message::Open(open)) = sent(&out).into_iter().next() else {
        panic!("no OPEN sent: {out:?}")
    };
    assert_eq!(open.my_as, crate::bgp::codec::AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_001);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, LOCAL_ID);
    assert_eq!(
        open.families(),
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    assert!(open.has(&Capability::RouteRefresh));
    // §8.2.2: a large hold timer while waiting for the OPEN.
    assert_eq!(s.next_deadline(), Some(t0 + OPEN_HOLD_TIME));
}

#[test]
fn connect_failure_goes_active_and_retries_with_exponential_backoff_up_to_the_cap() {
    let mut t = crate::test_origin();
    let mut cfg = ebgp();
    cfg.connect_retry_base = secs(1);
    cfg.connect_retry_cap = secs(8);
    let mut s = Session::new(cfg);
    s.step(t, Input::ManualStart);
    let mut waits = Vec::new();
    for _ in 0..6 {
        s.step(t, Input::TcpConnectFailed);
        assert_eq!(s.state(), State::Active);
        let next = s.next_deadline().expect("retry scheduled");
        waits.push((next - t).as_secs());
        t = next;
        let out = s.step(t, Input::Tick);
        assert_eq!(s.state(), State::Connect);
        assert!(has(&out, &Output::Connect));
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
}

#[test]
fn connect_retry_timer_expiry_abandons_the_dial_and_dials_again() {
    let t0 = crate::test_origin();
    let mut s = Session::new(ebgp());
    s.step(t0, Input::ManualStart);
    let deadline = s.next_deadline().expect("connect retry timer");
    let out = s.step(deadline, Input::Tick);
    assert_eq!(out, vec![Output::CloseTcp, Output::Connect]);
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn connect_manual_stop_abandons_the_dial_and_goes_idle() {
    let t0 = crate::test_origin();
    let mut s = Session::new(ebgp());
    s.step(t0, Input::ManualStart);
    let out = s.step(
        t0,
        Input::ManualStop {
            communication: String::new(),
        },
    );
    assert!(has(&out, &Output::CloseTcp));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
}

// ---- Active ----

#[test]
fn active_incoming_connection_sends_open_and_enters_opensent() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.passive = true;
    let mut s = Session::new(cfg);
    s.step(t0, Input::ManualStart);
    let out = s.step(t0, connected());
    assert_eq!(s.state(), State::OpenSent);
    assert!(matches!(sent(&out).as_slice(), [Message::Open(_)]));
}

#[test]
fn active_retry_timer_expiry_enters_connect_and_dials() {
    let t0 = crate::test_origin();
    let mut s = Session::new(ebgp());
    s.step(t0, Input::ManualStart);
    s.step(t0, Input::TcpConnectFailed);
    let at = s.next_deadline().expect("retry");
    let out = s.step(at, Input::Tick);
    assert!(has(
        &out,
        &Output::StateChanged {
            from: State::Active,
            to: State::Connect
        }
    ));
    assert!(has(&out, &Output::Connect));
}

#[test]
fn passive_peer_never_dials_even_after_a_failed_session() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.passive = true;
    let mut s = to_opensent(cfg, t0);
    let out = s.step(t0, Input::TcpClosed);
    assert_eq!(s.state(), State::Active);
    assert!(!has(&out, &Output::Connect));
    assert_eq!(s.next_deadline(), None);
    for n in 1..100 {
        assert!(!has(
            &s.step(t0 + secs(n * 60), Input::Tick),
            &Output::Connect
        ));
    }
}

#[test]
fn active_manual_stop_goes_idle() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.passive = true;
    let mut s = Session::new(cfg);
    s.step(t0, Input::ManualStart);
    s.step(
        t0,
        Input::ManualStop {
            communication: String::new(),
        },
    );
    assert_eq!(s.state(), State::Idle);
}

// ---- OpenSent ----

#[test]
fn opensent_valid_open_sends_keepalive_and_enters_openconfirm() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0, peer_open(64501, 30));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(sent(&out), vec![Message::Keepalive]);
    // Negotiated hold 30: the keepalive timer (10 s) is the next deadline.
    assert_eq!(s.next_deadline(), Some(t0 + secs(10)));
}

#[test]
fn opensent_with_bad_peer_as_sends_notification_and_goes_idle() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0, peer_open(65000, 90));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadPeerAs));
    assert_eq!(n.data, 65000u16.to_be_bytes());
    assert!(has(&out, &Output::CloseTcp));
    assert!(matches!(
        out.iter()
            .find(|o| matches!(o, Output::ConnectionFailed { .. })),
        Some(Output::ConnectionFailed {
            reason: DownReason::NotificationSent(_)
        })
    ));
    assert_eq!(s.state(), State::Idle);
}

fn dynamic(kind: DynamicAsn) -> SessionConfig {
    // peer_asn is not consulted with a dynamic ASN: 0 is what the config gives it.
    SessionConfig {
        dynamic_asn: Some(kind),
        ..SessionConfig::new(64500, 0, LOCAL_ID)
    }
}

#[test]
fn dynamic_external_peer_accepts_any_other_as_and_is_ebgp() {
    for asn in [64501, 65000, 4_200_000_002] {
        let t0 = crate::test_origin();
        let mut s = to_opensent(dynamic(DynamicAsn::External), t0);
        s.step(t0, peer_open(asn, 90));
        assert_eq!(s.state(), State::OpenConfirm, "AS {asn}");
        let n = s.negotiated().expect("negotiated in OpenConfirm");
        assert_eq!(n.peer_asn, asn);
        assert!(!n.ibgp);
    }
}

#[test]
fn dynamic_external_peer_sending_our_own_as_gets_bad_peer_as() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(dynamic(DynamicAsn::External), t0);
    let out = s.step(t0, peer_open(64500, 90));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadPeerAs));
    assert_eq!(n.data, 64500u16.to_be_bytes());
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn dynamic_internal_peer_accepts_only_our_own_as_and_is_ibgp() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(dynamic(DynamicAsn::Internal), t0);
    s.step(t0, peer_open(64500, 90));
    assert_eq!(s.state(), State::OpenConfirm);
    assert!(s.negotiated().expect("negotiated").ibgp);
    let mut s = to_opensent(dynamic(DynamicAsn::Internal), t0);
    let out = s.step(t0, peer_open(64501, 90));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadPeerAs));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn fixed_connect_retry_interval_redials_at_that_interval_without_doubling() {
    // What `connect_time` sets: base = cap, so every retry waits the same time.
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.connect_retry_base = secs(7);
    cfg.connect_retry_cap = secs(7);
    let mut s = Session::new(cfg);
    assert!(has(&s.step(t0, Input::ManualStart), &Output::Connect));
    let mut now = t0;
    for attempt in 1..=4u32 {
        s.step(now, Input::TcpConnectFailed);
        assert_eq!(s.next_deadline(), Some(now + secs(7)), "attempt {attempt}");
        // Nothing before the interval is up …
        assert!(!has(&s.step(now + secs(6), Input::Tick), &Output::Connect));
        now += secs(7);
        // … then the next dial.
        assert!(
            has(&s.step(now, Input::Tick), &Output::Connect),
            "attempt {attempt}"
        );
    }
}

#[test]
fn opensent_accepts_a_4_octet_peer_asn_carried_in_the_capability() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(SessionConfig::new(64500, 4_200_000_002, LOCAL_ID), t0);
    s.step(t0, peer_open(4_200_000_002, 90));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn opensent_with_our_own_bgp_identifier_on_ibgp_sends_bad_bgp_identifier() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ibgp(), t0);
    let out = s.step(t0, bytes(Message::Open(peer_open_msg(64500, 90, LOCAL_ID))));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadBgpIdentifier));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn opensent_with_our_own_bgp_identifier_on_ebgp_is_accepted() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    s.step(t0, bytes(Message::Open(peer_open_msg(64501, 90, LOCAL_ID))));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn opensent_with_hold_time_two_sends_unacceptable_hold_time() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0, peer_open(64501, 2));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::UnacceptableHoldTime));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn opensent_with_version_3_sends_unsupported_version_naming_version_4() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let mut raw = Message::Open(peer_open_msg(64501, 90, PEER_ID))
        .encode(&opts())
        .unwrap();
    raw[19] = 3;
    let out = s.step(t0, Input::Bytes(raw));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::Open(OpenSubcode::UnsupportedVersionNumber)
    );
    assert_eq!(n.data, vec![0, 4]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn opensent_with_unknown_optional_parameter_sends_unsupported_optional_parameter() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    // OPEN with one optional parameter of type 1 (deprecated authentication).
    let mut raw = vec![0xff; 16];
    raw.extend_from_slice(&[0, 32, 1, 4, 0xfb, 0xf5, 0, 90, 10, 0, 0, 2, 3, 1, 1, 0]);
    let out = s.step(t0, Input::Bytes(raw));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::Open(OpenSubcode::UnsupportedOptionalParameter)
    );
}

#[test]
fn opensent_unexpected_keepalive_sends_fsm_error() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0, bytes(Message::Keepalive));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::Fsm(FsmSubcode::UnexpectedMessageInOpenSent)
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn opensent_tcp_closed_goes_active_and_retries() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0, Input::TcpClosed);
    assert_eq!(s.state(), State::Active);
    assert!(has(
        &out,
        &Output::ConnectionFailed {
            reason: DownReason::TcpClosed
        }
    ));
    let at = s.next_deadline().expect("retry");
    assert!(has(&s.step(at, Input::Tick), &Output::Connect));
}

#[test]
fn opensent_hold_timer_expiry_sends_hold_timer_expired() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(t0 + OPEN_HOLD_TIME, Input::Tick);
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.code, ErrorCode::HoldTimerExpired(0));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn opensent_notification_received_closes_and_goes_idle() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let n = Notification::cease(CeaseSubcode::ConnectionRejected);
    let out = s.step(t0, bytes(Message::Notification(n.clone())));
    assert!(sent(&out).is_empty(), "a NOTIFICATION is never answered");
    assert!(has(
        &out,
        &Output::ConnectionFailed {
            reason: DownReason::NotificationReceived(n)
        }
    ));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.stats().notifications_in, 1);
}

#[test]
fn opensent_bad_marker_sends_connection_not_synchronized() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let mut raw = Message::Keepalive.encode(&opts()).unwrap();
    raw[3] = 0;
    let out = s.step(t0, Input::Bytes(raw));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::MessageHeader(HeaderSubcode::ConnectionNotSynchronized)
    );
}

#[test]
fn opensent_bad_length_sends_bad_message_length_with_the_length() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let mut raw = vec![0xff; 16];
    raw.extend_from_slice(&[0x10, 0x01, 2]); // 4097
    let out = s.step(t0, Input::Bytes(raw));
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::MessageHeader(HeaderSubcode::BadMessageLength)
    );
    assert_eq!(n.data, vec![0x10, 0x01]);
}

#[test]
fn opensent_manual_stop_sends_cease_administrative_shutdown() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let out = s.step(
        t0,
        Input::ManualStop {
            communication: "bye".into(),
        },
    );
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(n.shutdown_communication(), Some("bye"));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn an_open_split_across_reads_is_reassembled() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let raw = Message::Open(peer_open_msg(64501, 90, PEER_ID))
        .encode(&opts())
        .unwrap();
    for b in &raw[..raw.len() - 1] {
        s.step(t0, Input::Bytes(vec![*b]));
        assert_eq!(s.state(), State::OpenSent);
    }
    s.step(t0, Input::Bytes(raw[raw.len() - 1..].to_vec()));
    assert_eq!(s.state(), State::OpenConfirm);
}

// ---- OpenConfirm ----

#[test]
fn openconfirm_keepalive_enters_established_with_the_negotiated_result() {
    let t0 = crate::test_origin();
    let mut s = to_openconfirm(ebgp(), t0);
    let out = s.step(t0, bytes(Message::Keepalive));
    assert_eq!(s.state(), State::Established);
    let Some(Output::Established(n)) = out.iter().find(|o| matches!(o, Output::Established(_)))
    else {
        panic!("no Established output: {out:?}")
    };
    assert_eq!(n.peer_asn, 64501);
    assert_eq!(n.peer_id, PEER_ID);
    assert_eq!(n.hold_time, 90);
    assert_eq!(n.keepalive_time, 30);
    assert!(n.four_octet_as && n.ipv4_unicast && n.ipv6_unicast && n.route_refresh);
    assert!(!n.enhanced_route_refresh, "the peer did not offer it");
    assert!(!n.ibgp);
    assert_eq!((n.local, n.remote), (local(), remote()));
    assert_eq!(s.stats().established_count, 1);
}

#[test]
fn openconfirm_sends_keepalives_every_third_of_the_hold_time() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    s.step(t0, peer_open(64501, 9));
    for k in 1..=2 {
        let out = s.step(t0 + secs(3 * k), Input::Tick);
        assert_eq!(sent(&out), vec![Message::Keepalive], "keepalive {k}");
        // The peer's KEEPALIVEs keep the hold timer (9 s) from expiring.
    }
}

#[test]
fn openconfirm_hold_timer_expiry_sends_notification_and_goes_idle() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    s.step(t0, peer_open(64501, 9));
    let out = s.step(t0 + secs(9), Input::Tick);
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::HoldTimerExpired(0))
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn openconfirm_update_sends_fsm_error() {
    let t0 = crate::test_origin();
    let mut s = to_openconfirm(ebgp(), t0);
    let out = s.step(t0, bytes(Message::Update(Default::default())));
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::Fsm(FsmSubcode::UnexpectedMessageInOpenConfirm))
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn openconfirm_tcp_closed_goes_idle() {
    let t0 = crate::test_origin();
    let mut s = to_openconfirm(ebgp(), t0);
    let out = s.step(t0, Input::TcpClosed);
    assert!(has(
        &out,
        &Output::ConnectionFailed {
            reason: DownReason::TcpClosed
        }
    ));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn openconfirm_collision_lost_sends_cease_collision_resolution() {
    let t0 = crate::test_origin();
    let mut s = to_openconfirm(ebgp(), t0);
    let out = s.step(t0, Input::CollisionLost);
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::Cease(
            CeaseSubcode::ConnectionCollisionResolution
        ))
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None, "the driver drops this connection");
}

// ---- Established ----

#[test]
fn established_hold_timer_expiry_sends_notification_and_reports_down() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    // Keepalives go out at 30 and 60 s; nothing comes back.
    s.step(t0 + secs(30), Input::Tick);
    s.step(t0 + secs(60), Input::Tick);
    let out = s.step(t0 + secs(90), Input::Tick);
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::HoldTimerExpired(0))
    );
    assert!(has(
        &out,
        &Output::Down {
            reason: DownReason::HoldTimerExpired
        }
    ));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_keepalive_restarts_the_hold_timer() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    s.step(t0 + secs(80), bytes(Message::Keepalive));
    let out = s.step(t0 + secs(100), Input::Tick);
    assert!(sent_notification(&out).is_none());
    assert_eq!(s.state(), State::Established);
    let out = s.step(t0 + secs(170), Input::Tick);
    assert!(sent_notification(&out).is_some());
}

#[test]
fn established_update_is_decoded_counted_and_dropped() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let adverts = [crate::bgp::build::Advertisement {
        prefix: "192.0.2.1/32".parse().unwrap(),
        next_hop: "10.0.0.2".parse().unwrap(),
        local_pref: None,
        communities: vec![],
        large_communities: vec![],
    }];
    let peer = crate::bgp::build::PeerParams {
        local_asn: 64501,
        ibgp: false,
        four_octet_as: true,
        max_message_len: 4096,
        ipv6_link_local: None,
    };
    let updates = crate::bgp::build::build_updates(&peer, &adverts).unwrap();
    let withdraws = crate::bgp::build::build_withdrawals(&peer, &[adverts[0].prefix]);
    let mut out = Vec::new();
    for u in updates.into_iter().chain(withdraws) {
        out.extend(s.step(t0, Input::Bytes(u)));
    }
    out.extend(s.step(
        t0,
        Input::Bytes(crate::bgp::build::end_of_rib(Family::IPV4_UNICAST)),
    ));
    assert!(sent(&out).is_empty());
    assert_eq!(s.state(), State::Established);
    let st = s.stats();
    assert_eq!(st.updates_in, 3);
    assert_eq!(st.prefixes_announced_in, 1);
    assert_eq!(st.prefixes_withdrawn_in, 1);
    assert_eq!(st.end_of_rib_in, 1);
}

#[test]
fn established_malformed_update_sends_the_prescribed_notification_and_reports_down() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    // Withdrawn routes length 10 in a 4-octet body: Malformed Attribute List.
    let mut raw = vec![0xff; 16];
    raw.extend_from_slice(&[0, 23, 2, 0, 10, 0, 0]);
    let out = s.step(t0, Input::Bytes(raw));
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::Update(UpdateSubcode::MalformedAttributeList))
    );
    assert!(out.iter().any(|o| matches!(o, Output::Down { .. })));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_treat_as_withdraw_update_is_counted_and_the_session_stays_up() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    // ORIGIN with value 7 (invalid), AS_PATH, NEXT_HOP, NLRI 192.0.2.1/32.
    let mut raw = vec![0xff; 16];
    let body = [
        0, 0, 0, 14, 0x40, 1, 1, 7, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 2, 32, 192, 0, 2, 1,
    ];
    raw.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    raw.push(2);
    raw.extend_from_slice(&body);
    let out = s.step(t0, Input::Bytes(raw));
    assert!(sent(&out).is_empty(), "no NOTIFICATION: {out:?}");
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.stats().updates_treated_as_withdraw, 1);
    assert_eq!(s.stats().prefixes_announced_in, 0);
}

#[test]
fn established_route_refresh_request_is_passed_to_the_speaker() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let rr = |family, subtype| bytes(Message::RouteRefresh(RouteRefresh { family, subtype }));
    let out = s.step(t0, rr(Family::IPV6_UNICAST, 0));
    assert!(has(
        &out,
        &Output::RouteRefreshRequested(Family::IPV6_UNICAST)
    ));
    // A family that was not negotiated, and BoRR markers, ask for nothing.
    assert!(s.step(t0, rr(Family::new(1, 128), 0)).is_empty());
    assert!(s.step(t0, rr(Family::IPV4_UNICAST, 1)).is_empty());
    assert_eq!(s.stats().route_refresh_in, 3);
}

#[test]
fn established_open_sends_fsm_error() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let out = s.step(t0, peer_open(64501, 90));
    assert_eq!(
        sent_notification(&out).map(|n| n.code),
        Some(ErrorCode::Fsm(FsmSubcode::UnexpectedMessageInEstablished))
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_manual_stop_sends_cease_with_the_shutdown_communication() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let out = s.step(
        t0,
        Input::ManualStop {
            communication: "lbd stopping".into(),
        },
    );
    let n = sent_notification(&out).expect("NOTIFICATION");
    assert_eq!(
        n.code,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(n.shutdown_communication(), Some("lbd stopping"));
    // The NOTIFICATION goes out before the close.
    let send_at = out.iter().position(|o| matches!(o, Output::Send(_)));
    let close_at = out.iter().position(|o| *o == Output::CloseTcp);
    assert!(send_at < close_at);
    assert!(has(
        &out,
        &Output::Down {
            reason: DownReason::ManualStop
        }
    ));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_notification_received_reports_down_and_restarts_later() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let n = Notification::admin_reset("maintenance");
    let out = s.step(t0, bytes(Message::Notification(n.clone())));
    assert!(has(
        &out,
        &Output::Down {
            reason: DownReason::NotificationReceived(n)
        }
    ));
    assert_eq!(s.state(), State::Idle);
    let at = s.next_deadline().expect("automatic restart");
    assert!(has(&s.step(at, Input::Tick), &Output::Connect));
}

#[test]
fn established_tcp_closed_reports_down() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let out = s.step(t0, Input::TcpClosed);
    assert!(has(
        &out,
        &Output::Down {
            reason: DownReason::TcpClosed
        }
    ));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_send_updates_passes_them_out_and_defers_the_keepalive() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let eor = crate::bgp::build::end_of_rib(Family::IPV4_UNICAST);
    let out = s.step(t0 + secs(20), Input::SendUpdates(vec![eor.clone()]));
    assert_eq!(out, vec![Output::Send(eor)]);
    // Keepalive was due at 30 s; the UPDATE at 20 s moved it to 50 s.
    assert!(sent(&s.step(t0 + secs(30), Input::Tick)).is_empty());
    assert_eq!(
        sent(&s.step(t0 + secs(50), Input::Tick)),
        vec![Message::Keepalive]
    );
    assert_eq!(s.stats().updates_out, 1);
}

#[test]
fn send_updates_outside_established_are_dropped() {
    let t0 = crate::test_origin();
    let mut s = to_openconfirm(ebgp(), t0);
    assert!(
        s.step(t0, Input::SendUpdates(vec![vec![1, 2, 3]]))
            .is_empty()
    );
}

// ---- Negotiation ----

#[test]
fn hold_time_zero_disables_keepalives_and_the_hold_timer() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    s.step(t0, peer_open(64501, 0));
    s.step(t0, bytes(Message::Keepalive));
    assert_eq!(s.state(), State::Established);
    assert_eq!(
        s.negotiated().map(|n| (n.hold_time, n.keepalive_time)),
        Some((0, 0))
    );
    assert_eq!(s.next_deadline(), None);
    assert!(s.step(t0 + secs(100_000), Input::Tick).is_empty());
}

#[test]
fn configured_keepalive_is_used_but_capped_at_a_third_of_the_hold_time() {
    let t0 = crate::test_origin();
    for (configured, peer_hold, expected) in [(Some(5), 90, 5), (Some(60), 30, 10), (None, 30, 10)]
    {
        let mut cfg = ebgp();
        cfg.keepalive_time = configured;
        let mut s = to_opensent(cfg, t0);
        s.step(t0, peer_open(64501, peer_hold));
        assert_eq!(
            s.negotiated().map(|n| n.keepalive_time),
            Some(expected),
            "{configured:?} {peer_hold}"
        );
    }
}

#[test]
fn negotiated_hold_time_is_the_smaller_of_both() {
    let t0 = crate::test_origin();
    let mut cfg = ebgp();
    cfg.hold_time = 9;
    let mut s = to_opensent(cfg, t0);
    s.step(t0, peer_open(64501, 180));
    assert_eq!(s.negotiated().map(|n| n.hold_time), Some(9));
}

#[test]
fn peer_without_4_octet_or_multiprotocol_capabilities_gets_ipv4_and_2_octet_as_paths() {
    let t0 = crate::test_origin();
    let mut s = to_opensent(ebgp(), t0);
    let open = Open::new(64501, 90, PEER_ID, vec![]);
    s.step(t0, bytes(Message::Open(open)));
    let n = s.negotiated().expect("negotiated").clone();
    assert!(!n.four_octet_as);
    assert!(n.ipv4_unicast && !n.ipv6_unicast);
    assert!(!n.route_refresh);
    assert!(!n.codec_options().four_octet_as);
}

// ---- Collisions (RFC 4271 §6.8) ----

#[test]
fn collision_keeps_the_connection_opened_by_the_higher_bgp_identifier() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    use ConnectionOrigin::*;
    // We are lower: keep the connection the peer opened.
    assert_eq!(
        resolve_collision(low, high, Local, State::OpenConfirm),
        Keep::New
    );
    assert_eq!(
        resolve_collision(low, high, Remote, State::OpenConfirm),
        Keep::Existing
    );
    // We are higher: keep ours.
    assert_eq!(
        resolve_collision(high, low, Local, State::OpenConfirm),
        Keep::Existing
    );
    assert_eq!(
        resolve_collision(high, low, Remote, State::OpenSent),
        Keep::New
    );
}

#[test]
fn collision_with_an_established_session_keeps_it() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(
        resolve_collision(low, high, ConnectionOrigin::Local, State::Established),
        Keep::Existing
    );
}

#[test]
fn bfd_down_in_established_sends_cease_bfd_down_and_restarts_after_backoff() {
    let t0 = crate::test_origin();
    let mut s = to_established(ebgp(), t0);
    let out = s.step(t0 + secs(1), Input::BfdDown);
    assert_eq!(
        sent_notification(&out),
        Some(Notification::cease(CeaseSubcode::BfdDown))
    );
    assert!(has(&out, &Output::CloseTcp));
    assert!(
        out.iter().any(|o| matches!(o, Output::Down { .. })),
        "{out:?}"
    );
    assert_eq!(s.state(), State::Idle);
    let retry = s.next_deadline().expect("restart scheduled");
    let out = s.step(retry, Input::Tick);
    assert!(has(&out, &Output::Connect), "{out:?}");
}

#[test]
fn bfd_down_without_a_connection_changes_nothing() {
    let t0 = crate::test_origin();
    let mut s = Session::new(ebgp());
    s.step(t0, Input::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert!(s.step(t0, Input::BfdDown).is_empty());
    assert_eq!(s.state(), State::Connect);
}
