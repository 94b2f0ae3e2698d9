//! The responder core: who answers ARP / Neighbor Solicitations for which IP, and when to
//! send gratuitous ARP / unsolicited NA. Pure: `step(now, input) -> Vec<Output>`.
//!
//! Time is `std::time::Instant`, passed in by the driver; the core never reads a clock.
//! The driver calls `step(now, Input::Tick)` at (or after) `next_deadline()`.
//!
//! Inputs are the owned IPs (from raft-lite: the changes, or the whole set), interface
//! snapshots (from netlink) and received frames. For each owned IP the core resolves the
//! interfaces to answer on (`iface::choose_interfaces`) again whenever its claim or an
//! interface changes (a claim change touches only that IP); an (IP, interface) pair it
//! starts answering on is announced at once, then
//! `gratuitous_count - 1` more times every `gratuitous_interval`, then every
//! `refresh_interval` while it stays (0 = no refresh).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::iface::{Interface, choose_interfaces};
use super::ndp::{self, NdpMessage};
use super::{ETHERTYPE_ARP, ETHERTYPE_IPV6, EthHeader, MacAddr, arp};
use crate::model::ServiceKey;

/// The `[layer2]` table of lb.toml.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Gratuitous ARPs / unsolicited NAs sent on taking an IP (0: none).
    pub gratuitous_count: u32,
    pub gratuitous_interval: Duration,
    /// Periodic announcement while owning; zero disables it.
    pub refresh_interval: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            gratuitous_count: 3,
            gratuitous_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// One IP this host owns now (raft-lite names it and its lease is valid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub ip: IpAddr,
    /// The pool's `interfaces`; empty: the up interface whose subnet holds the IP.
    pub interfaces: Vec<String>,
    /// The services using the IP, for logs.
    pub services: Vec<ServiceKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    FrameReceived {
        ifindex: u32,
        bytes: Vec<u8>,
    },
    /// The complete set of IPs this host owns now; IPs not listed are released.
    OwnershipChanged(Vec<Claim>),
    /// IPs this host now owns (or whose claim changed), and IPs it no longer owns.
    ClaimsChanged {
        claims: Vec<Claim>,
        released: Vec<IpAddr>,
    },
    /// A new or changed interface (state, MAC or addresses).
    LinkChanged(Interface),
    LinkRemoved {
        ifindex: u32,
    },
    Tick,
}

impl From<crate::model::iface::TableChange> for Input {
    /// What netlink's interface table reports becomes the responder's link input.
    fn from(change: crate::model::iface::TableChange) -> Self {
        match change {
            crate::model::iface::TableChange::Changed(iface) => Input::LinkChanged(iface),
            crate::model::iface::TableChange::Removed { ifindex } => Input::LinkRemoved { ifindex },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    SendFrame {
        ifindex: u32,
        /// The owned IP the frame answers or announces for (the socket task checks the
        /// lease for it at the moment of sending).
        ip: IpAddr,
        /// Why it is sent (for the per-IP request/reply/gratuitous counters).
        kind: FrameKind,
        bytes: Vec<u8>,
    },
    /// Receive frames for this solicited-node group (Ethernet `mac`) on `ifindex`. Emitted
    /// once per (interface, group) however many owned IPs share it.
    JoinMulticast {
        ifindex: u32,
        group: Ipv6Addr,
        mac: MacAddr,
    },
    LeaveMulticast {
        ifindex: u32,
        group: Ipv6Addr,
        mac: MacAddr,
    },
    Log(Event),
}

/// Why a frame is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The reply to an ARP request / Neighbor Solicitation for an IP answered on that
    /// interface: one per such request received, so it also counts the requests.
    Reply,
    /// A gratuitous ARP / unsolicited Neighbor Advertisement (burst or refresh).
    Gratuitous,
}

/// Things worth a log line (`Display` gives the line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Announcing {
        ip: IpAddr,
        interface: String,
        services: Vec<ServiceKey>,
    },
    Withdrawn {
        ip: IpAddr,
        interface: String,
    },
    Ineligible {
        ip: IpAddr,
        services: Vec<ServiceKey>,
    },
    /// Someone else claims an IP we own (a gratuitous ARP/NA or reply from another MAC).
    Conflict {
        ip: IpAddr,
        interface: String,
        other_mac: MacAddr,
    },
}

struct Services<'a>(&'a [ServiceKey]);

impl fmt::Display for Services<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Announcing {
                ip,
                interface,
                services,
            } if services.is_empty() => write!(f, "announcing {ip} on {interface}"),
            Event::Announcing {
                ip,
                interface,
                services,
            } => write!(
                f,
                "announcing {ip} on {interface} for {}",
                Services(services)
            ),
            Event::Withdrawn { ip, interface } => {
                write!(f, "no longer announcing {ip} on {interface}")
            }
            Event::Ineligible { ip, services } => write!(
                f,
                "cannot announce {ip} (for {}): no usable interface",
                Services(services)
            ),
            Event::Conflict {
                ip,
                interface,
                other_mac,
            } => write!(
                f,
                "{other_mac} on {interface} also claims {ip}, which we own"
            ),
        }
    }
}

/// What the responder has seen and sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub arp_requests_seen: u64,
    pub arp_replies_sent: u64,
    pub gratuitous_arp_sent: u64,
    pub ns_seen: u64,
    pub na_replies_sent: u64,
    pub unsolicited_na_sent: u64,
    /// Frames that failed to decode or validate (e.g. NDP with hop limit ≠ 255).
    pub malformed: u64,
}

/// Schedule of one (IP, interface) we answer on.
#[derive(Clone, Copy, Debug)]
struct Announce {
    mac: MacAddr,
    /// Burst announcements still to send after the next one.
    burst_left: u32,
    next_at: Option<Instant>,
}

pub struct Responder {
    params: Params,
    interfaces: BTreeMap<u32, Interface>,
    claims: BTreeMap<IpAddr, Claim>,
    active: BTreeMap<(IpAddr, u32), Announce>,
    /// Claimed IPs with no usable interface (reported ineligible).
    ineligible: BTreeSet<IpAddr>,
    groups: BTreeMap<(u32, Ipv6Addr), usize>,
    counters: Counters,
}

impl Responder {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            interfaces: BTreeMap::new(),
            claims: BTreeMap::new(),
            active: BTreeMap::new(),
            ineligible: BTreeSet::new(),
            groups: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The (IP, ifindex) pairs answered for now.
    pub fn answering(&self) -> Vec<(IpAddr, u32)> {
        self.active.keys().copied().collect()
    }

    /// When the next `Tick` is due; `None` when nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active.values().filter_map(|a| a.next_at).min()
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::FrameReceived { ifindex, bytes } => self.on_frame(ifindex, &bytes, &mut out),
            Input::OwnershipChanged(claims) => {
                self.claims = claims.into_iter().map(|c| (c.ip, c)).collect();
                self.ineligible.retain(|ip| self.claims.contains_key(ip));
                self.reconcile(now, &mut out);
            }
            Input::ClaimsChanged { claims, released } => {
                let mut ips = BTreeSet::new();
                for ip in released {
                    self.claims.remove(&ip);
                    self.ineligible.remove(&ip);
                    ips.insert(ip);
                }
                for c in claims {
                    ips.insert(c.ip);
                    self.claims.insert(c.ip, c);
                }
                for ip in ips {
                    self.reconcile_ip(now, ip, &mut out);
                }
            }
            Input::LinkChanged(iface) => {
                self.interfaces.insert(iface.index, iface);
                self.reconcile(now, &mut out);
            }
            Input::LinkRemoved { ifindex } => {
                self.interfaces.remove(&ifindex);
                self.reconcile(now, &mut out);
            }
            Input::Tick => self.on_tick(now, &mut out),
        }
        out
    }

    fn ifname(&self, ifindex: u32) -> String {
        self.interfaces
            .get(&ifindex)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    /// Brings `active` in line with claims × interfaces: stop at once where an IP is no
    /// longer owned or its interface is unusable; start (with a burst) where it became so.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<Output>) {
        let ips: BTreeSet<IpAddr> = self
            .claims
            .keys()
            .copied()
            .chain(self.active.keys().map(|(ip, _)| *ip))
            .collect();
        for ip in ips {
            self.reconcile_ip(now, ip, out);
        }
    }

    /// [`reconcile`](Self::reconcile) for one IP.
    fn reconcile_ip(&mut self, now: Instant, ip: IpAddr, out: &mut Vec<Output>) {
        let mut desired: BTreeMap<u32, MacAddr> = BTreeMap::new();
        if let Some(claim) = self.claims.get(&ip) {
            let chosen = choose_interfaces(&ip, &claim.interfaces, self.interfaces.values());
            let eligible = !chosen.is_empty();
            if eligible == self.ineligible.contains(&ip) {
                // Changed, or a new claim that is ineligible from the start.
                if eligible {
                    self.ineligible.remove(&ip);
                } else {
                    self.ineligible.insert(ip);
                    out.push(Output::Log(Event::Ineligible {
                        ip,
                        services: claim.services.clone(),
                    }));
                }
            }
            for ifindex in chosen {
                if let Some(i) = self.interfaces.get(&ifindex) {
                    desired.insert(ifindex, i.mac);
                }
            }
        }

        let stale: Vec<u32> = self
            .active
            .range((ip, 0)..=(ip, u32::MAX))
            .filter(|((_, ifindex), a)| desired.get(ifindex) != Some(&a.mac))
            .map(|((_, ifindex), _)| *ifindex)
            .collect();
        for ifindex in stale {
            self.active.remove(&(ip, ifindex));
            out.push(Output::Log(Event::Withdrawn {
                ip,
                interface: self.ifname(ifindex),
            }));
            self.leave(ip, ifindex, out);
        }

        for (ifindex, mac) in desired {
            if self.active.contains_key(&(ip, ifindex)) {
                continue;
            }
            let services = self
                .claims
                .get(&ip)
                .map(|c| c.services.clone())
                .unwrap_or_default();
            out.push(Output::Log(Event::Announcing {
                ip,
                interface: self.ifname(ifindex),
                services,
            }));
            self.join(ip, ifindex, out);
            let mut a = Announce {
                mac,
                burst_left: self.params.gratuitous_count,
                next_at: Some(now),
            };
            if a.burst_left == 0 {
                a.next_at = self.refresh_after(now);
            } else {
                self.announce(ip, ifindex, &mut a, now, out);
            }
            self.active.insert((ip, ifindex), a);
        }
    }

    fn refresh_after(&self, now: Instant) -> Option<Instant> {
        (!self.params.refresh_interval.is_zero()).then(|| now + self.params.refresh_interval)
    }

    /// Sends one gratuitous ARP / unsolicited NA and schedules the next.
    fn announce(
        &mut self,
        ip: IpAddr,
        ifindex: u32,
        a: &mut Announce,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let bytes = match ip {
            IpAddr::V4(v4) => {
                self.counters.gratuitous_arp_sent += 1;
                arp::build_gratuitous(a.mac, v4)
            }
            IpAddr::V6(v6) => {
                self.counters.unsolicited_na_sent += 1;
                ndp::build_unsolicited_na(a.mac, v6)
            }
        };
        out.push(Output::SendFrame {
            ifindex,
            ip,
            kind: FrameKind::Gratuitous,
            bytes,
        });
        a.burst_left = a.burst_left.saturating_sub(1);
        a.next_at = if a.burst_left > 0 {
            Some(now + self.params.gratuitous_interval)
        } else {
            self.refresh_after(now)
        };
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due: Vec<(IpAddr, u32)> = self
            .active
            .iter()
            .filter(|(_, a)| a.next_at.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for (ip, ifindex) in due {
            if let Some(mut a) = self.active.get(&(ip, ifindex)).copied() {
                if a.burst_left == 0 {
                    // A refresh: one announcement, then the next refresh.
                    a.burst_left = 1;
                }
                self.announce(ip, ifindex, &mut a, now, out);
                self.active.insert((ip, ifindex), a);
            }
        }
    }

    fn join(&mut self, ip: IpAddr, ifindex: u32, out: &mut Vec<Output>) {
        if let IpAddr::V6(v6) = ip {
            let group = ndp::solicited_node(&v6);
            let n = self.groups.entry((ifindex, group)).or_insert(0);
            *n += 1;
            if *n == 1 {
                out.push(Output::JoinMulticast {
                    ifindex,
                    group,
                    mac: MacAddr::for_ipv6_multicast(&group),
                });
            }
        }
    }

    fn leave(&mut self, ip: IpAddr, ifindex: u32, out: &mut Vec<Output>) {
        if let IpAddr::V6(v6) = ip {
            let group = ndp::solicited_node(&v6);
            if let Some(n) = self.groups.get_mut(&(ifindex, group)) {
                *n -= 1;
                if *n == 0 {
                    self.groups.remove(&(ifindex, group));
                    out.push(Output::LeaveMulticast {
                        ifindex,
                        group,
                        mac: MacAddr::for_ipv6_multicast(&group),
                    });
                }
            }
        }
    }

    /// Our own MACs: frames from them are our own (looped back or from another of our ports).
    fn is_ours(&self, mac: &MacAddr) -> bool {
        self.interfaces.values().any(|i| i.mac == *mac)
    }

    fn on_frame(&mut self, ifindex: u32, bytes: &[u8], out: &mut Vec<Output>) {
        let Some(eth) = EthHeader::read(bytes) else {
            self.counters.malformed += 1;
            return;
        };
        match eth.ethertype {
            ETHERTYPE_ARP => self.on_arp(ifindex, bytes, out),
            ETHERTYPE_IPV6 => self.on_ndp(ifindex, bytes, out),
            _ => {}
        }
    }

    fn on_arp(&mut self, ifindex: u32, bytes: &[u8], out: &mut Vec<Output>) {
        let Ok(f) = arp::decode(bytes) else {
            self.counters.malformed += 1;
            return;
        };
        if self.is_ours(&f.eth.src) || self.is_ours(&f.sender_mac) {
            return;
        }
        let sender = IpAddr::V4(f.sender_ip);
        if let Some(a) = self.active.get(&(sender, ifindex))
            && a.mac != f.sender_mac
        {
            out.push(Output::Log(Event::Conflict {
                ip: sender,
                interface: self.ifname(ifindex),
                other_mac: f.sender_mac,
            }));
        }
        if f.op != arp::ArpOp::Request || f.is_gratuitous() {
            return;
        }
        self.counters.arp_requests_seen += 1;
        let Some(a) = self.active.get(&(IpAddr::V4(f.target_ip), ifindex)) else {
            return;
        };
        self.counters.arp_replies_sent += 1;
        out.push(Output::SendFrame {
            ifindex,
            ip: IpAddr::V4(f.target_ip),
            kind: FrameKind::Reply,
            bytes: arp::build_reply(&f, a.mac),
        });
    }

    fn on_ndp(&mut self, ifindex: u32, bytes: &[u8], out: &mut Vec<Output>) {
        let f = match ndp::decode(bytes) {
            Ok(f) => f,
            // Other IPv6 traffic is not ours to judge; only broken NDP counts as malformed.
            Err(ndp::NdpError::NotIcmpv6(_) | ndp::NdpError::NotNeighborDiscovery(_)) => return,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        if self.is_ours(&f.eth.src) {
            return;
        }
        match f.message {
            NdpMessage::Advertisement(na) => {
                let ip = IpAddr::V6(na.target);
                if let (Some(a), Some(other)) = (self.active.get(&(ip, ifindex)), na.target_ll)
                    && a.mac != other
                    && !self.is_ours(&other)
                {
                    out.push(Output::Log(Event::Conflict {
                        ip,
                        interface: self.ifname(ifindex),
                        other_mac: other,
                    }));
                }
            }
            NdpMessage::Solicitation(ns) => {
                if ns.source_ll.is_some_and(|m| self.is_ours(&m)) {
                    return;
                }
                self.counters.ns_seen += 1;
                let Some(a) = self.active.get(&(IpAddr::V6(ns.target), ifindex)) else {
                    return;
                };
                self.counters.na_replies_sent += 1;
                out.push(Output::SendFrame {
                    ifindex,
                    ip: IpAddr::V6(ns.target),
                    kind: FrameKind::Reply,
                    bytes: ndp::build_na_reply(&f, ns.target, a.mac),
                });
            }
        }
    }
}

impl crate::machine::Machine for Responder {
    type Input = Input;
    type Output = Output;

    fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        Responder::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Responder::next_deadline(self)
    }

    fn timer_input(&self) -> Input {
        Input::Tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::arp::ArpOp;
    use std::net::Ipv4Addr;

    const OUR_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0b]);
    const OTHER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0c]);
    const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
    const ETH0: u32 = 2;
    const ETH1: u32 = 3;

    fn vip4() -> IpAddr {
        "10.10.100.200".parse().unwrap()
    }
    fn vip6() -> IpAddr {
        "fd00:10::200".parse().unwrap()
    }

    fn eth(index: u32, mac: MacAddr, up: bool, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: format!("eth{}", index - 2),
            mac,
            up,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn eth0(up: bool) -> Interface {
        eth(ETH0, OUR_MAC, up, &["10.10.100.3/24", "fd00:10::3/64"])
    }

    fn claim(ip: IpAddr) -> Claim {
        Claim {
            ip,
            interfaces: vec![],
            services: vec![ServiceKey::new("default", "nginx")],
        }
    }

    fn params(count: u32, interval: u64, refresh: u64) -> Params {
        Params {
            gratuitous_count: count,
            gratuitous_interval: Duration::from_secs(interval),
            refresh_interval: Duration::from_secs(refresh),
        }
    }

    /// A responder owning `ips` on eth0 (up), with the take-over output discarded.
    fn owning(p: Params, t0: Instant, ips: &[IpAddr]) -> Responder {
        let mut r = Responder::new(p);
        r.step(t0, Input::LinkChanged(eth0(true)));
        r.step(
            t0,
            Input::OwnershipChanged(ips.iter().map(|i| claim(*i)).collect()),
        );
        r
    }

    fn frames(out: &[Output]) -> Vec<(u32, Vec<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::SendFrame { ifindex, bytes, .. } => Some((*ifindex, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    fn arp_request(target: &str) -> Vec<u8> {
        arp::ArpFrame {
            eth: EthHeader {
                dst: MacAddr::BROADCAST,
                src: CLIENT_MAC,
                ethertype: ETHERTYPE_ARP,
            },
            op: ArpOp::Request,
            sender_mac: CLIENT_MAC,
            sender_ip: Ipv4Addr::new(10, 10, 100, 1),
            target_mac: MacAddr::ZERO,
            target_ip: target.parse().unwrap(),
        }
        .encode()
    }

    fn ns_for(target: IpAddr) -> Vec<u8> {
        let IpAddr::V6(t) = target else { panic!() };
        ndp::build_ns(CLIENT_MAC, "fd00:10::1".parse().unwrap(), t)
    }

    #[test]
    fn taking_an_ip_logs_and_sends_gratuitous_arp_at_once() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(Params::default());
        r.step(t0, Input::LinkChanged(eth0(true)));
        let out = r.step(t0, Input::OwnershipChanged(vec![claim(vip4())]));
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, ETH0);
        assert_eq!(
            f[0].1,
            arp::build_gratuitous(OUR_MAC, Ipv4Addr::new(10, 10, 100, 200))
        );
        let line = out
            .iter()
            .find_map(|o| match o {
                Output::Log(e @ Event::Announcing { .. }) => Some(e.to_string()),
                _ => None,
            })
            .unwrap();
        assert_eq!(line, "announcing 10.10.100.200 on eth0 for default/nginx");
        assert_eq!(r.counters().gratuitous_arp_sent, 1);
    }

    #[test]
    fn gratuitous_burst_repeats_count_times_then_refreshes() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(params(3, 1, 30));
        r.step(t0, Input::LinkChanged(eth0(true)));
        let mut sent_at = vec![];
        if !frames(&r.step(t0, Input::OwnershipChanged(vec![claim(vip4())]))).is_empty() {
            sent_at.push(Duration::ZERO);
        }
        // Tick every 250 ms for 100 s.
        for q in 1..=400u64 {
            let now = t0 + Duration::from_millis(250 * q);
            if !frames(&r.step(now, Input::Tick)).is_empty() {
                sent_at.push(now - t0);
            }
        }
        let secs: Vec<u64> = sent_at.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 32, 62, 92]);
    }

    #[test]
    fn zero_refresh_interval_stops_after_the_burst() {
        let t0 = crate::test_origin();
        let mut r = owning(params(2, 1, 0), t0, &[vip4()]);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            frames(&r.step(t0 + Duration::from_secs(1), Input::Tick)).len(),
            1
        );
        assert_eq!(r.next_deadline(), None);
        assert!(frames(&r.step(t0 + Duration::from_secs(600), Input::Tick)).is_empty());
        assert_eq!(r.counters().gratuitous_arp_sent, 2);
    }

    #[test]
    fn zero_gratuitous_count_sends_nothing_on_taking_but_still_refreshes() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(params(0, 1, 30));
        r.step(t0, Input::LinkChanged(eth0(true)));
        let out = r.step(t0, Input::OwnershipChanged(vec![claim(vip4())]));
        assert!(frames(&out).is_empty());
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn arp_request_for_owned_ip_is_answered_with_our_mac() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let req = arp_request("10.10.100.200");
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: req.clone(),
            },
        );
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].1,
            arp::build_reply(&arp::decode(&req).unwrap(), OUR_MAC)
        );
        let c = r.counters();
        assert_eq!((c.arp_requests_seen, c.arp_replies_sent), (1, 1));
    }

    #[test]
    fn arp_request_for_ip_not_owned_is_counted_not_answered() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: arp_request("10.10.100.201"),
            },
        );
        assert!(frames(&out).is_empty());
        assert_eq!(r.counters().arp_requests_seen, 1);
        assert_eq!(r.counters().arp_replies_sent, 0);
    }

    #[test]
    fn request_on_another_interface_than_the_ips_is_not_answered() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        r.step(
            t0,
            Input::LinkChanged(eth(ETH1, OTHER_MAC, true, &["192.168.1.3/24"])),
        );
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH1,
                bytes: arp_request("10.10.100.200"),
            },
        );
        assert!(frames(&out).is_empty());
    }

    #[test]
    fn requests_from_our_own_mac_are_ignored() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let mut f = arp::decode(&arp_request("10.10.100.200")).unwrap();
        f.eth.src = OUR_MAC;
        f.sender_mac = OUR_MAC;
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: f.encode(),
            },
        );
        assert!(out.is_empty());
        assert_eq!(r.counters().arp_requests_seen, 0);
    }

    #[test]
    fn gratuitous_arp_and_replies_are_not_answered() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let mut g = arp::decode(&arp_request("10.10.100.200")).unwrap();
        g.sender_ip = Ipv4Addr::new(10, 10, 100, 200);
        let mut reply = arp::decode(&arp_request("10.10.100.200")).unwrap();
        reply.op = ArpOp::Reply;
        for bytes in [g.encode(), reply.encode()] {
            let out = r.step(
                t0,
                Input::FrameReceived {
                    ifindex: ETH0,
                    bytes,
                },
            );
            assert!(frames(&out).is_empty());
        }
        assert_eq!(r.counters().arp_replies_sent, 0);
    }

    #[test]
    fn gratuitous_arp_from_another_mac_for_our_ip_logs_a_conflict() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let mut g = arp::decode(&arp_request("10.10.100.200")).unwrap();
        g.sender_ip = Ipv4Addr::new(10, 10, 100, 200);
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: g.encode(),
            },
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Log(Event::Conflict { other_mac, .. }) if *other_mac == CLIENT_MAC
        )));
    }

    #[test]
    fn neighbor_solicitation_for_owned_ipv6_is_answered_with_na() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip6()]);
        let ns = ns_for(vip6());
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: ns.clone(),
            },
        );
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        let IpAddr::V6(t) = vip6() else { panic!() };
        assert_eq!(
            f[0].1,
            ndp::build_na_reply(&ndp::decode(&ns).unwrap(), t, OUR_MAC)
        );
        assert_eq!(r.counters().na_replies_sent, 1);
    }

    #[test]
    fn dad_probe_for_owned_ipv6_is_defended_with_na_to_all_nodes() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip6()]);
        let IpAddr::V6(t) = vip6() else { panic!() };
        let dad = ndp::build_ns(CLIENT_MAC, Ipv6Addr::UNSPECIFIED, t);
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: dad,
            },
        );
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(ndp::decode(&f[0].1).unwrap().dst_ip, ndp::ALL_NODES);
    }

    #[test]
    fn ns_with_hop_limit_below_255_is_counted_malformed_and_not_answered() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip6()]);
        let mut ns = ns_for(vip6());
        ns[21] = 64;
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: ns,
            },
        );
        assert!(frames(&out).is_empty());
        assert_eq!(r.counters().malformed, 1);
    }

    #[test]
    fn taking_ipv6_joins_its_solicited_node_group_once_per_interface() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(Params::default());
        r.step(t0, Input::LinkChanged(eth0(true)));
        // fd00:10::200 and fd00:10::1:0:200 share the low 24 bits: one group.
        let other: IpAddr = "fd00:10::1:0:200".parse().unwrap();
        let mut iface = eth0(true);
        iface.addresses.push("fd00:10::/32".parse().unwrap());
        r.step(t0, Input::LinkChanged(iface));
        let out = r.step(
            t0,
            Input::OwnershipChanged(vec![claim(vip6()), claim(other)]),
        );
        let joins: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Output::JoinMulticast { .. }))
            .collect();
        assert_eq!(
            joins,
            vec![&Output::JoinMulticast {
                ifindex: ETH0,
                group: "ff02::1:ff00:200".parse().unwrap(),
                mac: "33:33:ff:00:02:00".parse().unwrap(),
            }]
        );
        // Releasing one keeps the group; releasing both leaves it.
        let out = r.step(t0, Input::OwnershipChanged(vec![claim(other)]));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::LeaveMulticast { .. }))
        );
        let out = r.step(t0, Input::OwnershipChanged(vec![]));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::LeaveMulticast { ifindex: ETH0, .. }))
        );
    }

    #[test]
    fn link_down_stops_answering_at_once_and_logs_ineligible() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4(), vip6()]);
        let out = r.step(t0, Input::LinkChanged(eth0(false)));
        let mut inel: Vec<IpAddr> = out
            .iter()
            .filter_map(|o| match o {
                Output::Log(Event::Ineligible { ip, .. }) => Some(*ip),
                _ => None,
            })
            .collect();
        inel.sort();
        assert_eq!(inel, vec![vip4(), vip6()]);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::LeaveMulticast { .. }))
        );
        assert!(r.answering().is_empty());
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: arp_request("10.10.100.200"),
            },
        );
        assert!(frames(&out).is_empty());
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn link_back_up_announces_again() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        r.step(t0, Input::LinkChanged(eth0(false)));
        let out = r.step(t0, Input::LinkChanged(eth0(true)));
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Log(Event::Announcing { ip, .. }) if *ip == vip4()
        )));
        assert_eq!(frames(&out).len(), 1);
    }

    #[test]
    fn claim_without_any_usable_interface_is_logged_ineligible_once() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(Params::default());
        r.step(t0, Input::LinkChanged(eth0(true)));
        let far = claim("203.0.113.9".parse().unwrap());
        let ineligible = |out: &[Output]| {
            out.iter()
                .filter(|o| matches!(o, Output::Log(Event::Ineligible { .. })))
                .count()
        };
        let out = r.step(t0, Input::OwnershipChanged(vec![far.clone()]));
        assert_eq!(ineligible(&out), 1);
        let out = r.step(t0, Input::OwnershipChanged(vec![far]));
        assert_eq!(ineligible(&out), 0);
    }

    #[test]
    fn releasing_an_ip_stops_answering_and_logs_withdrawal() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let out = r.step(t0, Input::OwnershipChanged(vec![]));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Log(Event::Withdrawn { .. })))
        );
        assert!(frames(&out).is_empty());
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: arp_request("10.10.100.200"),
            },
        );
        assert!(frames(&out).is_empty());
    }

    #[test]
    fn pool_interfaces_answer_on_each_listed_interface() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(params(1, 1, 0));
        r.step(t0, Input::LinkChanged(eth0(true)));
        r.step(t0, Input::LinkChanged(eth(ETH1, OTHER_MAC, true, &[])));
        let mut c = claim(vip4());
        c.interfaces = vec!["eth0".into(), "eth1".into()];
        let out = r.step(t0, Input::OwnershipChanged(vec![c]));
        let ifs: Vec<u32> = frames(&out).iter().map(|f| f.0).collect();
        assert_eq!(ifs, vec![ETH0, ETH1]);
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH1,
                bytes: arp_request("10.10.100.200"),
            },
        );
        let reply = arp::decode(&frames(&out)[0].1).unwrap();
        assert_eq!(reply.sender_mac, OTHER_MAC);
    }

    #[test]
    fn mac_change_restarts_the_burst_with_the_new_mac() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        let mut i = eth0(true);
        i.mac = OTHER_MAC;
        let out = r.step(t0, Input::LinkChanged(i));
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(arp::decode(&f[0].1).unwrap().sender_mac, OTHER_MAC);
    }

    #[test]
    fn netlink_link_down_event_silences_the_responder() {
        use crate::model::iface::{InterfaceTable, NetEvent};
        let t0 = crate::test_origin();
        let mut table = InterfaceTable::default();
        let mut r = Responder::new(Params::default());
        for ev in [
            NetEvent::LinkUp {
                ifindex: ETH0,
                name: "eth0".into(),
                mac: OUR_MAC,
            },
            NetEvent::AddressAdded {
                ifindex: ETH0,
                address: "10.10.100.3/24".parse().unwrap(),
            },
        ] {
            if let Some(change) = table.apply(&ev) {
                r.step(t0, change.into());
            }
        }
        r.step(t0, Input::OwnershipChanged(vec![claim(vip4())]));
        assert_eq!(r.answering(), vec![(vip4(), ETH0)]);
        let down = NetEvent::LinkDown {
            ifindex: ETH0,
            name: "eth0".into(),
            mac: OUR_MAC,
        };
        let out = r.step(t0, table.apply(&down).unwrap().into());
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Log(Event::Ineligible { ip, .. }) if *ip == vip4()
        )));
        assert!(r.answering().is_empty());
    }

    #[test]
    fn garbage_frames_are_counted_not_answered() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        for bytes in [vec![], vec![0xff; 13], {
            let mut b = arp_request("10.10.100.200");
            b.truncate(30);
            b
        }] {
            let out = r.step(
                t0,
                Input::FrameReceived {
                    ifindex: ETH0,
                    bytes,
                },
            );
            assert!(out.is_empty());
        }
        assert_eq!(r.counters().malformed, 3);
    }

    fn kinds(out: &[Output]) -> Vec<(IpAddr, FrameKind)> {
        out.iter()
            .filter_map(|o| match o {
                Output::SendFrame { ip, kind, .. } => Some((*ip, *kind)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_say_whether_they_answer_a_request_or_announce() {
        let t0 = crate::test_origin();
        let mut r = Responder::new(params(1, 1, 0));
        r.step(t0, Input::LinkChanged(eth0(true)));
        let out = r.step(
            t0,
            Input::OwnershipChanged(vec![claim(vip4()), claim(vip6())]),
        );
        assert_eq!(
            kinds(&out),
            [
                (vip4(), FrameKind::Gratuitous),
                (vip6(), FrameKind::Gratuitous)
            ]
        );
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: arp_request("10.10.100.200"),
            },
        );
        assert_eq!(kinds(&out), [(vip4(), FrameKind::Reply)]);
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: ns_for(vip6()),
            },
        );
        assert_eq!(kinds(&out), [(vip6(), FrameKind::Reply)]);
        // A request for an IP we do not own is seen but not answered: no frame to count.
        let out = r.step(
            t0,
            Input::FrameReceived {
                ifindex: ETH0,
                bytes: arp_request("10.10.100.201"),
            },
        );
        assert!(kinds(&out).is_empty());
    }

    #[test]
    fn a_claim_change_touches_only_its_own_ip() {
        let t0 = crate::test_origin();
        let mut r = owning(Params::default(), t0, &[vip4()]);
        // A second IP is claimed: only it is announced; the first is left as it is.
        let out = r.step(
            t0,
            Input::ClaimsChanged {
                claims: vec![claim(vip6())],
                released: vec![],
            },
        );
        assert!(out.iter().all(|o| match o {
            Output::SendFrame { ip, .. } => *ip == vip6(),
            Output::Log(Event::Announcing { ip, .. }) => *ip == vip6(),
            _ => true,
        }));
        assert_eq!(r.answering(), vec![(vip4(), ETH0), (vip6(), ETH0)]);
        // Released: it stops at once, the other keeps answering.
        let out = r.step(
            t0,
            Input::ClaimsChanged {
                claims: vec![],
                released: vec![vip4()],
            },
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Log(Event::Withdrawn { ip, .. }) if *ip == vip4()
        )));
        assert_eq!(r.answering(), vec![(vip6(), ETH0)]);
    }
}
