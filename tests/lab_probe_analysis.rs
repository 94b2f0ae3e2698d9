//! The probe-record computations (gap, split-brain detector) on synthetic records.

mod support;

use std::time::Duration;
use support::lab::probe::ProbeRun;

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
