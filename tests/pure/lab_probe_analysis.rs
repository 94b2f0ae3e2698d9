//! The probe-record computations (gap, split-brain detector) and the capture check (two MACs
//! answering for one IP at once) on synthetic records and frames.

use lb_testkit::lab::probe::ProbeRun;
use std::time::Duration;

fn run(lines: &[&str]) -> ProbeRun {
    ProbeRun::parse(&lines.join("\n")).unwrap()
}

fn reply_to(t: f64, seq: u64, mac: &str) -> String {
    format!(
        r#"{{"ev": "reply", "t": {t}, "seq": {seq}, "mac": "{mac}", "kind": "reply", "lladdr": "{mac}"}}"#
    )
}

const A: &str = "02:1b:00:00:00:01";
const B: &str = "02:1b:00:00:00:02";

#[test]
fn longest_gap_spans_the_failover_between_two_macs() {
    let mut lines = vec![r#"{"ev": "start", "t": 100.0}"#.to_string()];
    for i in 0..10 {
        lines.push(reply_to(100.0 + 0.01 * i as f64, i, A));
    }
    for i in 0..10 {
        lines.push(reply_to(100.5 + 0.01 * i as f64, 50 + i, B));
    }
    lines.push(r#"{"ev": "end", "t": 100.6, "sent": 60}"#.to_string());
    let r = run(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let gap = r.longest_gap();
    assert!(
        (gap.from - 100.09).abs() < 1e-9 && (gap.to - 100.5).abs() < 1e-9,
        "{gap:?}"
    );
    assert_eq!(gap, r.longest_gap_between_answers().unwrap());
    assert_eq!(r.macs().len(), 2);
    assert_eq!(r.split_brain(Duration::from_millis(10)), None);
    assert_eq!(r.first_answer_from(B), Some(100.5));
}

#[test]
fn no_answers_make_the_whole_run_one_gap() {
    let r = run(&[
        r#"{"ev": "start", "t": 5.0}"#,
        r#"{"ev": "end", "t": 7.5, "sent": 250}"#,
    ]);
    assert_eq!(r.longest_gap().duration(), Duration::from_millis(2500));
    assert_eq!(r.longest_gap_between_answers(), None);
}

#[test]
fn split_brain_is_one_request_answered_by_two_macs() {
    let lines = [
        r#"{"ev": "start", "t": 1.0}"#.to_string(),
        reply_to(1.0, 1, A),
        reply_to(1.01, 2, A),
        reply_to(1.0102, 2, B),
        r#"{"ev": "end", "t": 1.1, "sent": 10}"#.to_string(),
    ];
    let r = run(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let sb = r
        .split_brain(Duration::from_millis(10))
        .expect("not detected");
    assert_eq!(
        (sb.first.as_str(), sb.second.as_str(), sb.t),
        (A, B, 1.0102)
    );
}

#[test]
fn a_fast_clean_handover_is_not_split_brain_but_flapping_back_is() {
    // A answers request 3, B's gratuitous ARP 3 ms later, B answers request 4: a handover.
    let garp = format!(
        r#"{{"ev": "reply", "t": 1.033, "seq": 3, "mac": "{B}", "kind": "garp", "lladdr": "{B}"}}"#
    );
    let mut lines = vec![
        r#"{"ev": "start", "t": 1.0}"#.to_string(),
        reply_to(1.03, 3, A),
        garp,
        reply_to(1.0399, 4, B),
        reply_to(1.05, 5, B),
    ];
    let end = r#"{"ev": "end", "t": 1.2, "sent": 20}"#.to_string();
    let clean = run(&lines
        .iter()
        .chain([&end])
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(clean.split_brain(Duration::from_millis(10)), None);
    // A answering again right after B took over: both are answering.
    lines.push(reply_to(1.06, 6, A));
    lines.push(end);
    let flapping = run(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let sb = flapping
        .split_brain(Duration::from_millis(10))
        .expect("flapping back not detected");
    assert_eq!((sb.first.as_str(), sb.second.as_str()), (B, A));
}

#[test]
fn truncated_probe_output_is_an_error_not_a_panic() {
    assert!(ProbeRun::parse(r#"{"ev": "start", "t": 1.0}"#).is_err());
    assert!(ProbeRun::parse("not json").is_err());
    assert!(ProbeRun::parse("").is_err());
}

mod capture_check {
    use super::{A, B};
    use lb_testkit::lab::capture::{Conflict, Frame, FrameKind, answer_conflict, answering_macs};
    use std::net::IpAddr;

    const CLIENT_MAC: &str = "02:1b:00:00:00:09";

    fn vip() -> IpAddr {
        "10.10.100.200".parse().unwrap()
    }

    fn client() -> Option<IpAddr> {
        "10.10.100.9".parse().ok()
    }

    fn frame(time: f64, src: &str, kind: FrameKind) -> Frame {
        Frame {
            time,
            src_mac: src.to_string(),
            dst_mac: "ff:ff:ff:ff:ff:ff".to_string(),
            src_ip: None,
            dst_ip: None,
            kind,
        }
    }

    fn request(t: f64) -> Frame {
        frame(
            t,
            CLIENT_MAC,
            FrameKind::ArpRequest {
                sender_ip: client(),
                sender_mac: CLIENT_MAC.to_string(),
                target_ip: Some(vip()),
            },
        )
    }

    fn reply(t: f64, mac: &str) -> Frame {
        frame(
            t,
            mac,
            FrameKind::ArpReply {
                sender_ip: Some(vip()),
                sender_mac: mac.to_string(),
                target_ip: client(),
            },
        )
    }

    fn garp(t: f64, mac: &str) -> Frame {
        frame(
            t,
            mac,
            FrameKind::ArpRequest {
                sender_ip: Some(vip()),
                sender_mac: mac.to_string(),
                target_ip: Some(vip()),
            },
        )
    }

    /// Requests every 10 ms from 0.0; A answers the first `a`, B the rest (`n` in all).
    fn handover(a: usize, n: usize) -> Vec<Frame> {
        let mut f = Vec::new();
        for i in 0..n {
            let t = i as f64 * 0.01;
            f.push(request(t));
            f.push(reply(t + 0.001, if i < a { A } else { B }));
        }
        f
    }

    #[test]
    fn a_clean_handover_with_a_gratuitous_arp_right_after_the_old_reply_is_no_conflict() {
        let mut f = handover(5, 10);
        // B announces between A's last reply and the next request.
        f.push(garp(0.045, B));
        f.sort_by(|a, b| a.time.total_cmp(&b.time));
        assert_eq!(answer_conflict(&f, vip()), None);
        assert_eq!(
            answering_macs(&f, vip()),
            vec![A.to_string(), B.to_string()]
        );
    }

    #[test]
    fn one_request_answered_by_two_macs_is_a_conflict() {
        let mut f = handover(10, 10);
        f.push(reply(0.052, B));
        f.sort_by(|a, b| a.time.total_cmp(&b.time));
        assert_eq!(
            answer_conflict(&f, vip()),
            Some(Conflict::SameRequest {
                t: 0.052,
                first: A.to_string(),
                second: B.to_string()
            })
        );
    }

    #[test]
    fn the_old_owner_announcing_after_the_new_one_took_over_is_a_conflict() {
        let mut f = handover(5, 10);
        f.push(garp(0.085, A));
        f.sort_by(|a, b| a.time.total_cmp(&b.time));
        assert_eq!(
            answer_conflict(&f, vip()),
            Some(Conflict::Interleaved {
                t: 0.085,
                mac: A.to_string(),
                other: B.to_string()
            })
        );
    }

    #[test]
    fn answers_for_other_ips_are_ignored() {
        let mut f = handover(10, 10);
        f.push(frame(
            0.052,
            B,
            FrameKind::ArpReply {
                sender_ip: "10.10.100.4".parse().ok(),
                sender_mac: B.to_string(),
                target_ip: client(),
            },
        ));
        f.sort_by(|a, b| a.time.total_cmp(&b.time));
        assert_eq!(answer_conflict(&f, vip()), None);
        assert_eq!(answering_macs(&f, vip()), vec![A.to_string()]);
    }
}
