//! Packet captures: tcpdump writes a pcap, tshark turns it into typed records.

use super::{Host, LabError, Proc, Result, Signal};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A running tcpdump; [`Capture::stop`] ends it and parses the frames.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

/// What a captured frame is, as far as the lab cares.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameKind {
    /// ARP request (`sender_ip == target_ip` for a gratuitous one).
    ArpRequest {
        sender_ip: Option<IpAddr>,
        sender_mac: String,
        target_ip: Option<IpAddr>,
    },
    /// ARP reply (gratuitous replies too).
    ArpReply {
        sender_ip: Option<IpAddr>,
        sender_mac: String,
        target_ip: Option<IpAddr>,
    },
    /// ICMPv6 Neighbor Solicitation.
    NeighborSolicitation {
        target: Option<IpAddr>,
        source_mac: Option<String>,
    },
    /// ICMPv6 Neighbor Advertisement.
    NeighborAdvertisement {
        target: Option<IpAddr>,
        target_mac: Option<String>,
        solicited: bool,
    },
    /// Anything else (IP traffic, BGP, VRRP...).
    Other,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub src_mac: String,
    pub dst_mac: String,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub kind: FrameKind,
}

const FIELDS: &[&str] = &[
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "arp.opcode",
    "arp.src.proto_ipv4",
    "arp.src.hw_mac",
    "arp.dst.proto_ipv4",
    "icmpv6.type",
    "icmpv6.nd.ns.target_address",
    "icmpv6.nd.na.target_address",
    "icmpv6.nd.na.flag.s",
    "icmpv6.opt.src_linkaddr",
    "icmpv6.opt.target_linkaddr",
];

impl Capture {
    /// Start tcpdump on `iface` of `host`; returns once it says it is listening.
    pub fn start(host: &Host, iface: &str, filter: &str) -> Result<Capture> {
        let file = host.dir().join(format!(
            "{}-{iface}-{}.pcap",
            host.name(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let path = file.to_string_lossy().into_owned();
        let mut args = vec![
            "tcpdump", "-n", "-U", "-Z", "root", "-i", iface, "-w", &path,
        ];
        if !filter.is_empty() {
            args.push(filter);
        }
        let proc = host.spawn_labeled("tcpdump", &args)?;
        proc.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Capture { proc, file })
    }

    /// The pcap file (complete after `stop`).
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    /// Wait until tcpdump has written every frame the kernel queued for it: SIGUSR1 makes
    /// it print "N packets captured, M packets received by filter"; done when N >= M.
    /// (SIGINT alone loses frames still in the capture ring.)
    pub fn drain(&self) -> Result<()> {
        for _ in 0..200 {
            let seen = self.proc.stderr().matches("packets captured,").count();
            self.proc.kill(Signal::Usr1);
            super::try_wait_until(Duration::from_secs(2), "tcpdump statistics", || {
                self.proc.stderr().matches("packets captured,").count() > seen
                    || !self.proc.is_running()
            })?;
            let err = self.proc.stderr();
            let last = err
                .lines()
                .rev()
                .find(|l| l.contains("packets captured,"))
                .unwrap_or("");
            let nums: Vec<u64> = last
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [captured, received, ..] = nums[..]
                && captured >= received
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(LabError::Timeout {
            what: "tcpdump to write every captured frame".into(),
            after: Duration::from_secs(2),
            detail: self.proc.log(),
        })
    }

    /// Stop tcpdump (after draining its queue) and parse every frame.
    pub fn stop(self) -> Result<Vec<Frame>> {
        self.drain()?;
        self.proc.kill(Signal::Int);
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            self.proc.kill(Signal::Kill);
        }
        parse_pcap(&self.file)
    }
}

/// Parse a pcap file with tshark.
pub fn parse_pcap(file: &std::path::Path) -> Result<Vec<Frame>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "occurrence=f"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Parse {
            what: file.display().to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect())
}

fn ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_ascii_lowercase())
}

/// One tshark fields line (tab separated, in `FIELDS` order) into a frame.
fn parse_line(line: &str) -> Option<Frame> {
    let f: Vec<&str> = line.split('\t').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let time: f64 = get(0).parse().ok()?;
    let kind = match (get(7), get(11)) {
        ("1", _) => FrameKind::ArpRequest {
            sender_ip: ip(get(8)),
            sender_mac: get(9).to_ascii_lowercase(),
            target_ip: ip(get(10)),
        },
        ("2", _) => FrameKind::ArpReply {
            sender_ip: ip(get(8)),
            sender_mac: get(9).to_ascii_lowercase(),
            target_ip: ip(get(10)),
        },
        (_, "135") => FrameKind::NeighborSolicitation {
            target: ip(get(12)),
            source_mac: nonempty(get(15)),
        },
        (_, "136") => FrameKind::NeighborAdvertisement {
            target: ip(get(13)),
            target_mac: nonempty(get(16)),
            solicited: matches!(get(14), "1" | "True" | "true"),
        },
        _ => FrameKind::Other,
    };
    Some(Frame {
        time,
        src_mac: get(1).to_ascii_lowercase(),
        dst_mac: get(2).to_ascii_lowercase(),
        src_ip: ip(get(3)).or_else(|| ip(get(5))),
        dst_ip: ip(get(4)).or_else(|| ip(get(6))),
        kind,
    })
}

/// What a frame says about who has `ip`.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Someone asks who has `ip` (ARP request, Neighbor Solicitation).
    Request,
    /// `mac` claims `ip`: an ARP reply or solicited Neighbor Advertisement (`solicited`), or
    /// an announcement (gratuitous ARP, unsolicited NA).
    Answer { mac: String, solicited: bool },
}

/// The frames about `ip`, in capture order: requests for it and answers claiming it.
pub fn claims(frames: &[Frame], ip: IpAddr) -> Vec<(f64, Claim)> {
    let mut out: Vec<(f64, Claim)> = frames
        .iter()
        .filter_map(|f| {
            let c = match &f.kind {
                FrameKind::ArpRequest {
                    sender_ip,
                    sender_mac,
                    target_ip,
                } if *target_ip == Some(ip) => {
                    if *sender_ip == Some(ip) {
                        // Gratuitous ARP request: an announcement, not a question.
                        Claim::Answer {
                            mac: sender_mac.clone(),
                            solicited: false,
                        }
                    } else {
                        Claim::Request
                    }
                }
                FrameKind::ArpReply {
                    sender_ip,
                    sender_mac,
                    target_ip,
                } if *sender_ip == Some(ip) => Claim::Answer {
                    mac: sender_mac.clone(),
                    // A reply to nobody but itself is a gratuitous one.
                    solicited: *target_ip != Some(ip),
                },
                FrameKind::NeighborSolicitation { target, .. } if *target == Some(ip) => {
                    Claim::Request
                }
                FrameKind::NeighborAdvertisement {
                    target,
                    target_mac,
                    solicited,
                } if *target == Some(ip) => Claim::Answer {
                    mac: target_mac.clone().unwrap_or_else(|| f.src_mac.clone()),
                    solicited: *solicited,
                },
                _ => return None,
            };
            Some((f.time, c))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Two MACs answering for one IP at once, as a capture shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Conflict {
    /// Both answered between the same two requests (one request answered by both).
    SameRequest {
        t: f64,
        first: String,
        second: String,
    },
    /// `mac` answered again at `t` after `other` had taken over: the two interleave.
    Interleaved { t: f64, mac: String, other: String },
}

/// The first time two MACs answer for `ip` at once in `frames`, if any: replies to one
/// request from two MACs, or an earlier owner answering or announcing again after a new one
/// took over (A … B … A). A clean handover (A's last answer, then only B, whose gratuitous
/// announcement may follow A's reply closely) is no conflict.
pub fn answer_conflict(frames: &[Frame], ip: IpAddr) -> Option<Conflict> {
    // The MAC that replied since the last request.
    let mut since_request: Option<String> = None;
    // Owners in order of takeover.
    let mut owners: Vec<String> = Vec::new();
    for (t, c) in claims(frames, ip) {
        match c {
            Claim::Request => since_request = None,
            Claim::Answer { mac, solicited } => {
                if solicited {
                    if let Some(first) = &since_request
                        && *first != mac
                    {
                        return Some(Conflict::SameRequest {
                            t,
                            first: first.clone(),
                            second: mac,
                        });
                    }
                    since_request = Some(mac.clone());
                }
                match owners.last() {
                    Some(last) if *last == mac => {}
                    Some(last) if owners.contains(&mac) => {
                        return Some(Conflict::Interleaved {
                            t,
                            mac,
                            other: last.clone(),
                        });
                    }
                    _ => owners.push(mac),
                }
            }
        }
    }
    None
}

/// The distinct MACs that answered for `ip`, in order of their first answer.
pub fn answering_macs(frames: &[Frame], ip: IpAddr) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for (_, c) in claims(frames, ip) {
        if let Claim::Answer { mac, .. } = c
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    macs
}
