//! Running the probes in `crates/lb-testkit/probe/` and computing from their records.
//!
//! Times are seconds since the Unix epoch (as the probes print them), so they line up with
//! capture timestamps.

use super::{Host, LabError, Proc, Result};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

pub const PYTHON: &str = "/usr/bin/python3";

/// Path of a probe script (`crates/lb-testkit/probe/NAME`).
pub fn script(name: &str) -> String {
    crate::kit_dir()
        .join("probe")
        .join(name)
        .display()
        .to_string()
}

/// One record of a probe: an answer (l2probe) or a result (reach).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Seconds since the epoch: receive time (l2probe) or send time (reach).
    pub t: f64,
    /// The request number it answers (l2probe: last request sent before it).
    pub seq: u64,
    /// l2probe: "reply" | "garp" | "na" | "una"; reach: "result".
    pub kind: String,
    /// l2probe: always true; reach: did it get an answer.
    pub ok: bool,
    /// l2probe: Ethernet source MAC of the answer.
    pub mac: Option<String>,
    /// reach: what the server sent (first line).
    pub data: Option<String>,
    /// reach: round-trip time in seconds.
    pub rtt: Option<f64>,
    /// l2probe: the IP this answers for (a probe may ask for several).
    pub target: Option<String>,
}

impl Record {
    /// Answers a request (ARP reply, solicited NA, successful reach), as opposed to an
    /// unsolicited announcement.
    pub fn is_answer(&self) -> bool {
        self.ok && matches!(self.kind.as_str(), "reply" | "na" | "result")
    }
}

/// A gap between answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    pub from: f64,
    pub to: f64,
}

impl Gap {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64((self.to - self.from).max(0.0))
    }
}

/// Two different MACs answered within one window: split brain.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitBrain {
    pub t: f64,
    pub first: String,
    pub second: String,
}

/// Everything a probe printed.
#[derive(Debug, Clone, Default)]
pub struct ProbeRun {
    pub start: f64,
    pub end: f64,
    pub sent: u64,
    /// Sorted by `t`.
    pub records: Vec<Record>,
}

/// The JSON objects of a probe's output, one per non-empty line (`what` names the probe in
/// the error).
fn json_lines<'a>(
    text: &'a str,
    what: &'a str,
) -> impl Iterator<Item = Result<serde_json::Value>> + 'a {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(move |line| {
            serde_json::from_str(line).map_err(|e| LabError::Parse {
                what: what.into(),
                detail: format!("{e}: {line}"),
            })
        })
}

impl ProbeRun {
    /// Parse the probe's JSON lines.
    pub fn parse(text: &str) -> Result<ProbeRun> {
        let mut run = ProbeRun::default();
        let mut saw_end = false;
        for v in json_lines(text, "probe output") {
            let v = v?;
            let t = v["t"].as_f64().unwrap_or(0.0);
            match v["ev"].as_str() {
                Some("start") => run.start = t,
                Some("end") => {
                    run.end = t;
                    run.sent = v["sent"].as_u64().unwrap_or(0);
                    saw_end = true;
                }
                Some("reply") | Some("result") => run.records.push(Record {
                    t,
                    seq: v["seq"].as_u64().unwrap_or(0),
                    kind: v["kind"].as_str().unwrap_or("result").to_string(),
                    ok: v["ok"].as_bool().unwrap_or(true),
                    mac: v["mac"].as_str().map(str::to_string),
                    data: v["data"].as_str().map(str::to_string),
                    rtt: v["rtt"].as_f64(),
                    target: v["target"].as_str().map(str::to_string),
                }),
                _ => {}
            }
        }
        if !saw_end {
            return Err(LabError::Parse {
                what: "probe output".into(),
                detail: format!("no end record (did the probe crash?):\n{text}"),
            });
        }
        run.records.sort_by(|a, b| a.t.total_cmp(&b.t));
        Ok(run)
    }

    /// The records about `ip` only (for a probe asking for several IPs), same start and end.
    pub fn for_target(&self, ip: &str) -> ProbeRun {
        ProbeRun {
            start: self.start,
            end: self.end,
            sent: self.sent,
            records: self
                .records
                .iter()
                .filter(|r| r.target.as_deref() == Some(ip))
                .cloned()
                .collect(),
        }
    }

    /// Records that answer a request.
    pub fn answers(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.is_answer())
    }

    /// Distinct MACs that answered.
    pub fn macs(&self) -> BTreeSet<String> {
        self.answers().filter_map(|r| r.mac.clone()).collect()
    }

    /// Distinct `data` values servers sent.
    pub fn data(&self) -> BTreeSet<String> {
        self.answers().filter_map(|r| r.data.clone()).collect()
    }

    /// The longest time without an answer, bounded by the probe's start and end (so a
    /// probe that never got an answer reports its whole run).
    pub fn longest_gap(&self) -> Gap {
        let mut times: Vec<f64> = vec![self.start];
        times.extend(self.answers().map(|r| r.t));
        times.push(self.end.max(self.start));
        times
            .windows(2)
            .map(|w| Gap {
                from: w[0],
                to: w[1],
            })
            .max_by(|a, b| (a.to - a.from).total_cmp(&(b.to - b.from)))
            .unwrap_or(Gap {
                from: self.start,
                to: self.end,
            })
    }

    /// The longest gap between answers only (ignores start and end).
    pub fn longest_gap_between_answers(&self) -> Option<Gap> {
        let times: Vec<f64> = self.answers().map(|r| r.t).collect();
        times
            .windows(2)
            .map(|w| Gap {
                from: w[0],
                to: w[1],
            })
            .max_by(|a, b| (a.to - a.from).total_cmp(&(b.to - b.from)))
    }

    /// The first sign of two hosts answering for the IP at once (the split-brain detector):
    /// - one request (the same `seq`) answered by two different MACs, or
    /// - answers flapping back: MAC A answers again after MAC B had taken over, within
    ///   `window` × 100 of B's first answer (a genuine move back takes an election and a
    ///   placement change: far longer).
    ///
    /// A clean handover — A's last answer, then B's first, to different requests — is not
    /// split brain however close together they are. Pass the probe interval as `window`.
    pub fn split_brain(&self, window: Duration) -> Option<SplitBrain> {
        if let Some(s) = self.answered_by_two() {
            return Some(s);
        }
        self.flapped(window)
    }

    /// Split brain without the flap heuristic: one request answered by two MACs, or two MACs
    /// interleaving (A, then B, then A again) within `span`. For runs where an IP may
    /// legitimately move back soon after a move (a rolling upgrade).
    pub fn two_macs_at_once(&self, span: Duration) -> Option<SplitBrain> {
        if let Some(s) = self.answered_by_two() {
            return Some(s);
        }
        let answers: Vec<(&str, f64)> = self
            .answers()
            .filter_map(|r| r.mac.as_deref().map(|m| (m, r.t)))
            .collect();
        // Each answer by MAC A: the next answer by another MAC B, then the next by A again.
        for (i, (a, t0)) in answers.iter().enumerate() {
            let Some(j) = (i + 1..answers.len()).find(|j| answers[*j].0 != *a) else {
                break;
            };
            if answers[j].1 - t0 > span.as_secs_f64() {
                continue;
            }
            if let Some((_, t2)) = answers[j + 1..].iter().find(|(m, _)| m == a)
                && t2 - t0 <= span.as_secs_f64()
            {
                return Some(SplitBrain {
                    t: *t2,
                    first: answers[j].0.to_string(),
                    second: a.to_string(),
                });
            }
        }
        None
    }

    fn answered_by_two(&self) -> Option<SplitBrain> {
        let mut by_seq: HashMap<u64, &str> = HashMap::new();
        for r in self.answers() {
            let Some(mac) = r.mac.as_deref() else {
                continue;
            };
            match by_seq.get(&r.seq) {
                Some(first) if *first != mac => {
                    return Some(SplitBrain {
                        t: r.t,
                        first: first.to_string(),
                        second: mac.to_string(),
                    });
                }
                _ => {
                    by_seq.insert(r.seq, mac);
                }
            }
        }
        None
    }

    fn flapped(&self, window: Duration) -> Option<SplitBrain> {
        let flap = window.as_secs_f64() * 100.0;
        // (MAC, time it took over) in order of takeover.
        let mut takeovers: Vec<(&str, f64)> = Vec::new();
        for r in self.records.iter().filter(|r| r.ok) {
            let Some(mac) = r.mac.as_deref() else {
                continue;
            };
            if takeovers.last().map(|(m, _)| *m) == Some(mac) {
                continue;
            }
            if let Some((prev, since)) = takeovers.last()
                && takeovers.iter().any(|(m, _)| *m == mac)
                && r.t - since <= flap
            {
                return Some(SplitBrain {
                    t: r.t,
                    first: prev.to_string(),
                    second: mac.to_string(),
                });
            }
            takeovers.push((mac, r.t));
        }
        None
    }

    /// Time of the first answer from `mac`.
    pub fn first_answer_from(&self, mac: &str) -> Option<f64> {
        self.answers()
            .find(|r| r.mac.as_deref() == Some(mac))
            .map(|r| r.t)
    }
}

/// A probe that is running; [`RunningProbe::finish`] waits for it and parses its records.
#[derive(Debug)]
pub struct RunningProbe {
    proc: Proc,
    duration: Duration,
}

impl RunningProbe {
    fn start(host: &Host, args: &[&str], duration: Duration) -> Result<RunningProbe> {
        let proc = host.spawn_labeled("probe", args)?;
        // The start record is printed once the socket is open: from then on it counts.
        proc.wait_for_log("\"ev\": \"start\"", Duration::from_secs(10))?;
        Ok(RunningProbe { proc, duration })
    }

    /// Wait for the probe to end by itself and parse its records.
    pub fn finish(self) -> Result<ProbeRun> {
        let status = self
            .proc
            .wait_timeout(self.duration + Duration::from_secs(10));
        match status {
            Some(s) if s.success() => ProbeRun::parse(&self.proc.stdout()),
            other => Err(LabError::Timeout {
                what: "the probe to finish".into(),
                after: self.duration,
                detail: format!("status {other:?}; output:\n{}", self.proc.log()),
            }),
        }
    }

    /// End the probe now (SIGTERM: it prints its end record) and parse its records.
    pub fn stop(self) -> Result<ProbeRun> {
        self.proc.kill(super::Signal::Term);
        self.finish()
    }

    /// The file the probe writes its JSON lines to (for reading it incrementally).
    pub fn stdout_path(&self) -> &std::path::Path {
        self.proc.stdout_path()
    }

    /// The probe's process ID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Records so far (the probe keeps running).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut text = self.proc.stdout();
        text.push_str("{\"ev\":\"end\",\"t\":0,\"sent\":0}\n");
        // Drop a half-written last line, if any, before parsing.
        let cleaned: String = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .map(|l| format!("{l}\n"))
            .collect();
        ProbeRun::parse(&cleaned)
            .map(|r| r.records)
            .unwrap_or_default()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Ask "who has `target`?" (ARP for IPv4, NS for IPv6) from `client`'s `eth0` every
/// `interval` for `duration`. The source address is the client's first address of the
/// target's family.
pub fn l2probe(
    client: &Host,
    target: IpAddr,
    duration: Duration,
    interval: Duration,
) -> Result<RunningProbe> {
    l2probe_many(client, &[target], duration, interval)
}

/// [`l2probe`] for several IPv4 (or several IPv6) targets from one process: each interval one
/// request per target; every record names its `target` (see [`ProbeRun::for_target`]).
pub fn l2probe_many(
    client: &Host,
    targets: &[IpAddr],
    duration: Duration,
    interval: Duration,
) -> Result<RunningProbe> {
    let first = targets.first().ok_or_else(|| LabError::Parse {
        what: "l2probe targets".into(),
        detail: "no target".into(),
    })?;
    let src = if first.is_ipv4() {
        client.ip4()
    } else {
        client.ip6()
    }
    .ok_or_else(|| LabError::Parse {
        what: format!("{} addresses", client.name()),
        detail: format!("no address of the family of {first}"),
    })?;
    let src = src.to_string();
    let list: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
    let list = list.join(",");
    let (dur, int) = (secs(duration), secs(interval));
    let script = script("l2probe.py");
    RunningProbe::start(
        client,
        &[
            PYTHON,
            &script,
            "--iface",
            client.ifname(),
            "--src",
            &src,
            "--target",
            &list,
            "--duration",
            &dur,
            "--interval",
            &int,
        ],
        duration,
    )
}

/// How [`reach`] probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachMode {
    Icmp,
    Tcp(u16),
    Udp(u16),
}

/// Probe `target` from `client` every `interval` for `duration` (timeout per attempt 200 ms).
pub fn reach(
    client: &Host,
    mode: ReachMode,
    target: IpAddr,
    duration: Duration,
    interval: Duration,
) -> Result<RunningProbe> {
    reach_with_timeout(
        client,
        mode,
        target,
        duration,
        interval,
        Duration::from_millis(200),
    )
}

/// [`reach`] with another timeout per attempt: a longer one tells "no route" (refused at
/// once by the router's ICMP unreachable) from a client slowed by a busy machine.
pub fn reach_with_timeout(
    client: &Host,
    mode: ReachMode,
    target: IpAddr,
    duration: Duration,
    interval: Duration,
    timeout: Duration,
) -> Result<RunningProbe> {
    let (m, port) = match mode {
        ReachMode::Icmp => ("icmp", 0),
        ReachMode::Tcp(p) => ("tcp", p),
        ReachMode::Udp(p) => ("udp", p),
    };
    let (target_s, port_s) = (target.to_string(), port.to_string());
    let (dur, int, to) = (secs(duration), secs(interval), secs(timeout));
    let script = script("reach.py");
    RunningProbe::start(
        client,
        &[
            PYTHON,
            &script,
            "--mode",
            m,
            "--target",
            &target_s,
            "--port",
            &port_s,
            "--duration",
            &dur,
            "--interval",
            &int,
            "--timeout",
            &to,
        ],
        duration,
    )
}

/// Sample the kernel's main-table route for `prefix` in `host` every `interval` for
/// `duration` (`fibprobe.py`: a route dump per sample, plus every route change the kernel
/// announces). End it early with [`RunningProbe::stop_fib`].
pub fn fib(
    host: &Host,
    prefix: &str,
    duration: Duration,
    interval: Duration,
) -> Result<RunningProbe> {
    let (dur, int) = (secs(duration), secs(interval));
    let script = script("fibprobe.py");
    RunningProbe::start(
        host,
        &[
            PYTHON,
            &script,
            "--prefix",
            prefix,
            "--duration",
            &dur,
            "--interval",
            &int,
        ],
        duration,
    )
}

impl RunningProbe {
    /// End a [`fib`] probe now and parse its records.
    pub fn stop_fib(self) -> Result<FibRun> {
        self.proc.kill(super::Signal::Term);
        let status = self
            .proc
            .wait_timeout(self.duration + Duration::from_secs(10));
        match status {
            Some(s) if s.success() => FibRun::parse(&self.proc.stdout()),
            other => Err(LabError::Timeout {
                what: "the FIB probe to finish".into(),
                after: self.duration,
                detail: format!("status {other:?}; output:\n{}", self.proc.log()),
            }),
        }
    }
}

/// One look at the route: its gateways (sorted; empty: no route) and routing protocol
/// number (186 = BGP as zebra installs it; `None`: no route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibState {
    pub nexthops: Vec<String>,
    pub proto: Option<u8>,
}

/// A change of the route the kernel announced.
#[derive(Debug, Clone, PartialEq)]
pub struct FibChange {
    pub t: f64,
    /// Removed (`RTM_DELROUTE`) rather than added or replaced.
    pub deleted: bool,
    pub state: FibState,
}

/// Everything a [`fib`] probe printed.
#[derive(Debug, Clone, Default)]
pub struct FibRun {
    pub start: f64,
    pub end: f64,
    /// (time, state), in order.
    pub samples: Vec<(f64, FibState)>,
    pub changes: Vec<FibChange>,
}

impl FibRun {
    pub fn parse(text: &str) -> Result<FibRun> {
        let mut run = FibRun::default();
        let mut saw_end = false;
        let state = |v: &serde_json::Value| FibState {
            nexthops: v["nexthops"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            proto: v["proto"].as_u64().and_then(|p| u8::try_from(p).ok()),
        };
        for v in json_lines(text, "FIB probe output") {
            let v = v?;
            let t = v["t"].as_f64().unwrap_or(0.0);
            match v["ev"].as_str() {
                Some("start") => run.start = t,
                Some("end") => {
                    run.end = t;
                    saw_end = true;
                }
                Some("sample") => run.samples.push((t, state(&v))),
                Some("change") => run.changes.push(FibChange {
                    t,
                    deleted: v["kind"] == "del",
                    state: state(&v),
                }),
                _ => {}
            }
        }
        if !saw_end {
            return Err(LabError::Parse {
                what: "FIB probe output".into(),
                detail: format!("no end record (did the probe crash?):\n{text}"),
            });
        }
        Ok(run)
    }

    /// Samples in which the route was not exactly `nexthops` (missing, or other gateways).
    pub fn gaps(&self, nexthops: &[&str]) -> usize {
        self.samples
            .iter()
            .filter(|(_, s)| s.nexthops != nexthops)
            .count()
    }

    /// Kernel announcements of a removal, or of a route with other gateways than `nexthops`.
    pub fn departures(&self, nexthops: &[&str]) -> Vec<FibChange> {
        self.changes
            .iter()
            .filter(|c| c.deleted || c.state.nexthops != nexthops)
            .cloned()
            .collect()
    }

    /// The longest time between two samples (how well the probe kept its interval).
    pub fn longest_sample_interval(&self) -> Duration {
        self.samples
            .windows(2)
            .map(|w| Duration::from_secs_f64((w[1].0 - w[0].0).max(0.0)))
            .max()
            .unwrap_or_default()
    }

    /// Time of the first sample without the route (`None`: it never left).
    pub fn first_absent(&self) -> Option<f64> {
        self.samples
            .iter()
            .find(|(_, s)| s.nexthops.is_empty())
            .map(|(t, _)| *t)
    }
}
