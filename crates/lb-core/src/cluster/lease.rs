//! Quorum leases (pure): the voter's promises and the holder's count of them.
//!
//! Moraru, Andersen, Kaminsky, "Paxos Quorum Leases" (SoCC 2014), and the Raft thesis §6.4
//! (leases measured from before the request is sent). The two roles are kept apart here
//! because they need not be the same hosts: today every member is a voter and every
//! non-witness member a possible holder; issue 14 makes the voters a small subset.
//!
//! - [`Voter`]: promises IP x to at most one holder at a time, until its own clock reads
//!   (receipt of the request, or the later moment it granted it) + lease. It promises x to
//!   another holder only after that promise ended on its own clock or the holder released x.
//!   After a (re)start it promises nothing for a while (the caller's quarantine, at least
//!   lease + drift): it may have forgotten promises that a holder still counts.
//! - [`Holder`]: numbers its requests and remembers when it sent each; a grant for request
//!   k from voter v counts until sent(k) + lease − drift on the holder's clock, which in real
//!   time is before v's promise ends. It may answer for x while grants from a majority of
//!   voters count. Two majorities share a voter, and that voter promised x to one holder at a
//!   time: no two holders at once (docs/raft-lite.md, "Safety").

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Memo;
use super::message::Renew;

/// Version (term, epoch) of an ownership map; the newest map wins.
pub type Claim = (u64, u64);

/// Requests whose send time a holder remembers (a grant for an older one no longer counts).
const SENT_WINDOW: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Promise {
    pub holder: usize,
    /// Voter clock: the promise ends here.
    pub until: Instant,
    /// Voter clock: when it was last made or renewed.
    pub renewed: Instant,
}

/// A request the voter could not grant yet (x promised to another holder): granted when that
/// promise ends, if still useful.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Pending {
    holder: usize,
    seq: u64,
    received: Instant,
    claim: Claim,
    standby: bool,
}

/// A promise that ended: released by its holder, or expired without renewal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Freed {
    pub ip: IpAddr,
    pub holder: usize,
    /// `Some(last renewal)` when it expired (its holder went silent), `None` when released.
    pub expired_since: Option<Instant>,
}

/// A grant to send (or, for this host's own holder, to apply): request `seq` of `holder`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Granted {
    pub holder: usize,
    pub seq: u64,
    pub ips: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Voter {
    lease: Duration,
    drift: Duration,
    /// No promise before this (a restart forgets promises: the quarantine covers them all).
    quiet_until: Instant,
    promises: BTreeMap<IpAddr, Promise>,
    /// Per IP: the newest map version a holder showed in a (non-standby) request.
    claims: BTreeMap<IpAddr, Claim>,
    /// Per holder: the highest request number acted on (older ones are ignored).
    last_seq: BTreeMap<usize, u64>,
    pending: BTreeMap<IpAddr, Vec<Pending>>,
    /// No promise ends before this (`None`: no promise): `expire` looks at every promise only
    /// once this has passed, not in every step (with thousands of IPs that scan was most of a
    /// voter's work). A promise's end only moves later, so the bound stays a bound.
    earliest: Memo<Option<Instant>>,
}

impl Voter {
    /// `quiet_until`: no promise before then (at least start + lease + drift: promises
    /// forgotten in a restart).
    pub fn new(lease: Duration, drift: Duration, quiet_until: Instant) -> Self {
        Self {
            lease,
            drift,
            quiet_until,
            promises: BTreeMap::new(),
            claims: BTreeMap::new(),
            last_seq: BTreeMap::new(),
            pending: BTreeMap::new(),
            earliest: Memo(None),
        }
    }

    /// Makes (or renews) a promise; keeps `earliest` a lower bound.
    fn promise(&mut self, ip: IpAddr, p: Promise) {
        let until = p.until;
        self.promises.insert(ip, p);
        self.earliest.0 = Some(self.earliest.0.map_or(until, |e| e.min(until)));
    }

    /// Mutation check only (`core::Mutation::ForgetPromisesOnRestart`): no quarantine after a
    /// (re)start, so promises forgotten in a crash are made again at once.
    #[doc(hidden)]
    pub fn skip_quarantine(&mut self, now: Instant) {
        self.quiet_until = now;
    }

    /// The promises in force (for status and tests).
    pub fn promises(&self) -> &BTreeMap<IpAddr, Promise> {
        &self.promises
    }

    /// Acts on a request numbered `r.seq` of `from`; returns the IPs granted now, or `None`
    /// when the request is older than one already acted on (reordered or duplicated).
    pub fn renew(&mut self, now: Instant, from: usize, r: &Renew) -> Option<Vec<IpAddr>> {
        let last = self.last_seq.entry(from).or_default();
        if r.seq <= *last {
            return None;
        }
        *last = r.seq;
        self.drop_pending_of(from);
        let mut granted = Vec::new();
        if now < self.quiet_until {
            return Some(granted);
        }
        let wanted = r
            .ips
            .iter()
            .map(|ip| (*ip, false))
            .chain(r.standby.iter().map(|ip| (*ip, true)));
        for (ip, standby) in wanted {
            let known = self.claims.get(&ip).copied().unwrap_or_default();
            if r.claim < known {
                continue; // a newer map gives this IP to someone else
            }
            if standby
                && self.pending.get(&ip).is_some_and(|l| {
                    l.iter()
                        .any(|p| !p.standby && p.holder != from && p.claim >= r.claim)
                })
            {
                // The map's holder is asking for it (a successor that took over, or a
                // former holder the map moved the IP away from, keeps it as standby): stop
                // renewing the successor, so the holder gets it within one lease.
                continue;
            }
            if !standby && r.claim > known {
                // The newest map's holder: the current promisee (an older map) is no longer
                // renewed, so the move completes within one lease even if the old holder
                // never hears the new map. A successor's request never does this.
                self.claims.insert(ip, r.claim);
            }
            match self.promises.get(&ip) {
                Some(p) if p.holder != from && now < p.until => {
                    self.pending.entry(ip).or_default().push(Pending {
                        holder: from,
                        seq: r.seq,
                        received: now,
                        claim: r.claim,
                        standby,
                    });
                }
                _ => {
                    self.promise(
                        ip,
                        Promise {
                            holder: from,
                            until: now + self.lease,
                            renewed: now,
                        },
                    );
                    granted.push(ip);
                }
            }
        }
        Some(granted)
    }

    /// `from` stopped answering for `ips` (request number `seq`): their promises end now.
    pub fn release(&mut self, from: usize, seq: u64, ips: &[IpAddr]) -> Vec<Freed> {
        let last = self.last_seq.entry(from).or_default();
        if seq <= *last {
            return Vec::new();
        }
        *last = seq;
        self.drop_pending_of(from);
        let mut freed = Vec::new();
        for ip in ips {
            if self.promises.get(ip).is_some_and(|p| p.holder == from) {
                self.promises.remove(ip);
                freed.push(Freed {
                    ip: *ip,
                    holder: from,
                    expired_since: None,
                });
            }
        }
        freed
    }

    /// Ends the promises whose time is up.
    pub fn expire(&mut self, now: Instant) -> Vec<Freed> {
        if self.earliest.0.is_none_or(|e| now < e) {
            return Vec::new(); // none ends before `earliest`
        }
        // One pass: what ends now, and the new bound for what remains.
        let mut earliest: Option<Instant> = None;
        let mut gone: Vec<IpAddr> = Vec::new();
        for (ip, p) in &self.promises {
            if now >= p.until {
                gone.push(*ip);
            } else {
                earliest = Some(earliest.map_or(p.until, |e| e.min(p.until)));
            }
        }
        self.earliest.0 = earliest;
        gone.into_iter()
            .filter_map(|ip| self.promises.remove(&ip).map(|p| (ip, p)))
            .map(|(ip, p)| Freed {
                ip,
                holder: p.holder,
                expired_since: Some(p.renewed),
            })
            .collect()
    }

    /// Grants the best waiting request for each freed IP: a holder of the newest map before
    /// a successor, then the earliest. A request is dropped once a grant could no longer give
    /// its holder any lease (received + lease − drift has passed).
    pub fn grant_pending(&mut self, now: Instant, ips: &[IpAddr]) -> Vec<Granted> {
        let mut out: Vec<Granted> = Vec::new();
        for ip in ips {
            if self.promises.contains_key(ip) {
                continue;
            }
            let Some(list) = self.pending.get_mut(ip) else {
                continue;
            };
            let known = self.claims.get(ip).copied().unwrap_or_default();
            let useful = self.lease.saturating_sub(self.drift);
            list.retain(|p| now < p.received + useful && p.claim >= known);
            let best = list
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| (p.standby, std::cmp::Reverse(p.claim), p.received))
                .map(|(k, _)| k);
            let Some(k) = best else {
                self.pending.remove(ip);
                continue;
            };
            let p = list.remove(k);
            if list.is_empty() {
                self.pending.remove(ip);
            }
            self.promise(
                *ip,
                Promise {
                    holder: p.holder,
                    until: now + self.lease,
                    renewed: now,
                },
            );
            match out
                .iter_mut()
                .find(|g| g.holder == p.holder && g.seq == p.seq)
            {
                Some(g) => g.ips.push(*ip),
                None => out.push(Granted {
                    holder: p.holder,
                    seq: p.seq,
                    ips: vec![*ip],
                }),
            }
        }
        out
    }

    fn drop_pending_of(&mut self, holder: usize) {
        self.pending.retain(|_, list| {
            list.retain(|p| p.holder != holder);
            !list.is_empty()
        });
    }

    /// When the next promise ends (a waiting request may be granted, a successor may take
    /// over), or a little earlier (a lower bound: waking then costs one look at the promises).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest.0
    }
}

/// A successor taking an IP over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// Gives up (releases what it got) if no majority by then.
    pub until: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Holder {
    lease: Duration,
    drift: Duration,
    /// The voters whose grants count (the committed voter set); a majority of them is needed.
    voters: BTreeSet<usize>,
    next_seq: u64,
    sent: VecDeque<(u64, Instant)>,
    /// Per IP, per voter: the end of the lease that voter's grants give (holder clock).
    grants: BTreeMap<IpAddr, BTreeMap<usize, Instant>>,
    /// Per IP: grants for requests numbered below this do not count (sent before a release).
    floor: BTreeMap<IpAddr, u64>,
    pub attempts: BTreeMap<IpAddr, Attempt>,
    /// The IPs the last request asked for.
    pub asked: BTreeSet<IpAddr>,
    /// No grant ends before this (`None`: none recorded): `prune` looks only once it passed.
    earliest_grant: Memo<Option<Instant>>,
}

impl Holder {
    /// `first_seq`: the incarnation number (grows across restarts, so a voter never takes a
    /// new request for an old one).
    pub fn new(voters: BTreeSet<usize>, lease: Duration, drift: Duration, first_seq: u64) -> Self {
        Self {
            lease,
            drift,
            voters,
            next_seq: first_seq.max(1),
            sent: VecDeque::new(),
            grants: BTreeMap::new(),
            floor: BTreeMap::new(),
            attempts: BTreeMap::new(),
            asked: BTreeSet::new(),
            earliest_grant: Memo(None),
        }
    }

    /// The voter set changed (docs/raft-lite.md, "Changing the voter set"): from now on
    /// grants count towards a majority of `voters` (grants already received from them
    /// count, others' no longer).
    pub fn set_voters(&mut self, voters: BTreeSet<usize>) {
        self.voters = voters;
    }

    /// A new request number, sent at `now`.
    pub fn next_request(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.push_back((seq, now));
        while self.sent.len() > SENT_WINDOW {
            self.sent.pop_front();
        }
        seq
    }

    /// Voter `from` granted `ips` for request `seq`. Returns the IPs granted that this holder
    /// does not want (to be released at that voter).
    ///
    /// `received` is `None` except in a mutation check (`core::Mutation::LeaseFromReceipt`):
    /// then the lease wrongly starts when the grant arrived.
    pub fn on_grant(
        &mut self,
        from: usize,
        seq: u64,
        ips: &[IpAddr],
        wanted: impl Fn(&IpAddr) -> bool,
        received: Option<Instant>,
    ) -> Vec<IpAddr> {
        let Some((_, sent)) = self.sent.iter().find(|(s, _)| *s == seq).copied() else {
            return Vec::new(); // too old to know when it was sent: it cannot count
        };
        let sent = received.unwrap_or(sent);
        let mut unwanted = Vec::new();
        for ip in ips {
            if self.floor.get(ip).is_some_and(|f| seq < *f) {
                continue; // asked for before this holder released it
            }
            if !wanted(ip) {
                unwanted.push(*ip);
                continue;
            }
            // The lease starts when the request was sent: before the voter received it.
            let end = sent + self.lease.saturating_sub(self.drift);
            let e = self
                .grants
                .entry(*ip)
                .or_default()
                .entry(from)
                .or_insert(end);
            *e = (*e).max(end);
            let first = self.earliest_grant.0.map_or(*e, |x| x.min(*e));
            self.earliest_grant.0 = Some(first);
        }
        unwanted
    }

    /// Until when this holder may answer for `ip`: the majority-th latest grant end.
    pub fn lease_end(&self, ip: &IpAddr) -> Option<Instant> {
        let g = self.grants.get(ip)?;
        let k = self.voters.len() / 2 + 1;
        // Grants of the voters of the set this holder counts with only.
        let ends = || {
            g.iter()
                .filter(|(v, _)| self.voters.contains(*v))
                .map(|(_, end)| *end)
        };
        if ends().count() < k {
            return None;
        }
        // The k-th latest end: the latest end that k ends reach. No allocation: this runs
        // for every IP a few times per step (a handful of voters, so the square is small).
        ends()
            .filter(|e| ends().filter(|x| x >= e).count() >= k)
            .max()
    }

    /// IPs with any grant on record (counted or not).
    pub fn granted_ips(&self) -> impl Iterator<Item = &IpAddr> {
        self.grants.keys()
    }

    /// Stop counting grants for `ip` (it is being released): requests up to now no longer
    /// count for it.
    pub fn forget(&mut self, ip: &IpAddr) {
        self.grants.remove(ip);
        self.attempts.remove(ip);
        self.floor.insert(*ip, self.next_seq);
    }

    /// Drops grant records that ended before `now` (bookkeeping only; nothing to do before
    /// the earliest grant ends).
    pub fn prune(&mut self, now: Instant) {
        if self.earliest_grant.0.is_none_or(|e| now < e) {
            return;
        }
        let mut earliest: Option<Instant> = None;
        self.grants.retain(|_, g| {
            g.retain(|_, end| now < *end);
            for end in g.values() {
                earliest = Some(earliest.map_or(*end, |x| x.min(*end)));
            }
            !g.is_empty()
        });
        self.earliest_grant.0 = earliest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(150);
    const D: Duration = Duration::from_millis(25);

    fn ip() -> IpAddr {
        "10.0.0.1".parse().expect("ip")
    }

    fn req(seq: u64, claim: Claim, standby: bool) -> Renew {
        Renew {
            seq,
            claim,
            ips: if standby { vec![] } else { vec![ip()] },
            standby: if standby { vec![ip()] } else { vec![] },
            version: 0,
        }
    }

    #[test]
    fn a_lease_ends_at_the_majority_th_latest_grant_end() {
        let t0 = crate::test_origin();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for (voters, ends, want) in [
            (3, vec![(0, 100), (1, 300), (2, 200)], Some(200)),
            (3, vec![(0, 100), (1, 300)], Some(100)),
            (3, vec![(0, 100)], None),
            (5, vec![(0, 50), (1, 50), (2, 50), (3, 10)], Some(50)),
            (
                5,
                vec![(0, 70), (1, 60), (2, 60), (3, 90), (4, 10)],
                Some(60),
            ),
            (1, vec![(0, 40)], Some(40)),
        ] {
            let mut h = Holder::new((0..voters).collect(), L, D, 1);
            h.grants
                .insert(ip(), ends.iter().map(|(v, e)| (*v, ms(*e))).collect());
            assert_eq!(
                h.lease_end(&ip()),
                want.map(ms),
                "{voters} voters, {ends:?}"
            );
        }
    }

    #[test]
    fn a_standby_promise_is_not_renewed_while_the_maps_holder_waits_for_the_ip() {
        let t0 = crate::test_origin();
        let mut v = Voter::new(L, D, t0);
        // Holder 1 holds the IP under map (1, 1).
        assert_eq!(v.renew(t0, 1, &req(1, (1, 1), false)), Some(vec![ip()]));
        // Map (1, 2) moves it to holder 2; holder 1 is now its successor and keeps asking.
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(v.renew(t1, 2, &req(1, (1, 2), false)), Some(vec![]));
        let t2 = t0 + Duration::from_millis(60);
        assert_eq!(
            v.renew(t2, 1, &req(2, (1, 2), true)),
            Some(vec![]),
            "not renewed: the holder of the newest map waits"
        );
        // Holder 2 renews; when holder 1's promise ends, holder 2 gets the IP.
        let t3 = t0 + Duration::from_millis(100);
        assert_eq!(v.renew(t3, 2, &req(2, (1, 2), false)), Some(vec![]));
        let freed = v.expire(t0 + L);
        assert_eq!(freed.len(), 1);
        let g = v.grant_pending(t0 + L, &[ip()]);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].holder, g[0].seq), (2, 2));
        // Without a waiting holder a successor's standby request is granted as before.
        let mut w = Voter::new(L, D, t0);
        assert_eq!(w.renew(t0, 1, &req(1, (1, 2), true)), Some(vec![ip()]));
    }
}
