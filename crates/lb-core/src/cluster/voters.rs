//! Changing the voter set at run time (pure): the versioned set every host keeps, and what a
//! reload's new `voters` list means for it (docs/raft-lite.md, "Changing the voter set").
//!
//! The committed set S_k has a version k (0: the configured set). A change adds or removes
//! exactly one voter (Raft thesis §4.1: a majority of S_k and one of S_{k+1} then always
//! share a voter). The leader proposes S_{k+1}; a voter of S_k accepts one value per version
//! (the first it hears, durably); the leader commits once a majority of S_k accepted it, so
//! at most one value is ever committed per version. Hosts use committed sets only.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::message::voters_digest;

/// Voter name → raft-lite address.
pub type Voters = BTreeMap<String, SocketAddr>;

/// A host's durable knowledge of the voter set (kept with term and vote).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoterState {
    /// k: the version of `voters`.
    pub version: u64,
    /// S_k, the committed set this host uses (elections, majorities of grants).
    pub voters: Voters,
    /// S_{k-1} (empty at version 0): the leader's fence before proposing k+1 needs it.
    #[serde(default)]
    pub previous: Voters,
    /// A proposal this voter accepted and has not seen committed (version k+1).
    #[serde(default)]
    pub accepted: Option<Accepted>,
    /// Digests of earlier sets this host used (the latest [`HISTORY`]): a host that joins
    /// with one of them is behind, not misconfigured, and is sent the current set.
    #[serde(default)]
    pub history: Vec<u64>,
}

/// Earlier voter-set digests kept.
pub const HISTORY: usize = 32;

/// A proposed set a voter accepted: it accepts no other value for this version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub version: u64,
    pub voters: Voters,
}

impl VoterState {
    /// The configured set, version 0.
    pub fn configured(voters: Voters) -> Self {
        Self {
            version: 0,
            voters,
            previous: Voters::new(),
            accepted: None,
            history: Vec::new(),
        }
    }

    /// Whether `d` is the digest of a set this host used before the current one.
    pub fn used_before(&self, d: u64) -> bool {
        self.history.contains(&d)
    }
}

/// [`voters_digest`] of a set.
pub fn digest(v: &Voters) -> u64 {
    voters_digest(v.iter().map(|(n, a)| (n.as_str(), *a)))
}

/// One voter added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    Add { name: String, addr: SocketAddr },
    Remove { name: String },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add { name, addr } => write!(f, "add voter {name} at {addr}"),
            Change::Remove { name } => write!(f, "remove voter {name}"),
        }
    }
}

/// Why a new voter list is not a change the cluster can make.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VoterChangeError {
    #[error(
        "the new voter list differs from the running one ({running}) in {count} voters ({names}): change one voter per reload (add or remove one, reload every voter, wait for `lbctl cluster` to show the new set, then the next)"
    )]
    MoreThanOne {
        running: String,
        count: usize,
        names: String,
    },
    #[error(
        "voter {name} has address {new} in the new list but {running} in the running set: remove it and add it again, one reload each"
    )]
    AddressChanged {
        name: String,
        running: SocketAddr,
        new: SocketAddr,
    },
    #[error("the new voter list is empty: a cluster needs at least one voter")]
    Empty,
}

/// What `new` (a reloaded `voters` list) asks of the running set `current`: nothing
/// (`Ok(None)`), one change, or an error naming what is wrong.
pub fn change(current: &Voters, new: &Voters) -> Result<Option<Change>, VoterChangeError> {
    if new.is_empty() {
        return Err(VoterChangeError::Empty);
    }
    for (name, addr) in new {
        if let Some(running) = current.get(name)
            && running != addr
        {
            return Err(VoterChangeError::AddressChanged {
                name: name.clone(),
                running: *running,
                new: *addr,
            });
        }
    }
    let added: Vec<(&String, &SocketAddr)> = new
        .iter()
        .filter(|(n, _)| !current.contains_key(*n))
        .collect();
    let removed: Vec<&String> = current.keys().filter(|n| !new.contains_key(*n)).collect();
    match (added.as_slice(), removed.as_slice()) {
        ([], []) => Ok(None),
        ([(name, addr)], []) => Ok(Some(Change::Add {
            name: (*name).clone(),
            addr: **addr,
        })),
        ([], [name]) => Ok(Some(Change::Remove {
            name: (*name).clone(),
        })),
        _ => Err(VoterChangeError::MoreThanOne {
            running: current.keys().cloned().collect::<Vec<_>>().join(", "),
            count: added.len() + removed.len(),
            names: added
                .iter()
                .map(|(n, _)| format!("+{n}"))
                .chain(removed.iter().map(|n| format!("-{n}")))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `current` with `c` applied.
pub fn apply(current: &Voters, c: &Change) -> Voters {
    let mut v = current.clone();
    match c {
        Change::Add { name, addr } => {
            v.insert(name.clone(), *addr);
        }
        Change::Remove { name } => {
            v.remove(name);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Voters {
        names
            .iter()
            .map(|n| {
                let last = n.bytes().last().unwrap_or(b'a');
                ((*n).to_owned(), SocketAddr::from(([10, 0, 0, last], 7946)))
            })
            .collect()
    }

    #[test]
    fn one_voter_added_or_removed_is_a_change_and_the_same_list_is_none() {
        let abc = set(&["a", "b", "c"]);
        assert_eq!(change(&abc, &abc), Ok(None));
        let abcd = set(&["a", "b", "c", "d"]);
        let add = change(&abc, &abcd).expect("one").expect("some");
        assert_eq!(apply(&abc, &add), abcd);
        assert_eq!(add.to_string(), "add voter d at 10.0.0.100:7946");
        let rm = change(&abcd, &set(&["a", "b", "d"]))
            .expect("one")
            .expect("some");
        assert_eq!(rm, Change::Remove { name: "c".into() });
    }

    #[test]
    fn two_differences_or_a_moved_voter_are_refused_naming_them() {
        let abc = set(&["a", "b", "c"]);
        let e = change(&abc, &set(&["a", "b", "d"])).expect_err("two");
        assert!(e.to_string().contains("+d, -c"), "{e}");
        let mut moved = abc.clone();
        moved.insert("c".into(), SocketAddr::from(([10, 0, 0, 9], 7946)));
        assert!(matches!(
            change(&abc, &moved),
            Err(VoterChangeError::AddressChanged { .. })
        ));
        assert_eq!(change(&abc, &Voters::new()), Err(VoterChangeError::Empty));
    }
}

/// The change carried out by the real core on a small lossless network (one clock, messages
/// delivered at once): every host adopts each version, a voter added then removed, the
/// fence between two changes, and never two holders of one IP.
#[cfg(test)]
mod change_tests {
    use std::collections::{BTreeSet, VecDeque};
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cluster::core::{Config, Input, Node, Output, Role};
    use crate::cluster::message::{Body, Message, Renew};
    use crate::cluster::{HardState, Member, Timing};

    const MS: Duration = Duration::from_millis(1);

    fn addr(n: &str) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n.bytes().last().unwrap_or(0)], 7946))
    }

    fn list(names: &[&str]) -> Voters {
        names.iter().map(|n| ((*n).to_owned(), addr(n))).collect()
    }

    fn cfg(me: &str, voters: &[&str]) -> Config {
        Config {
            me: me.into(),
            members: voters
                .iter()
                .map(|n| Member {
                    name: (*n).into(),
                    addr: addr(n),
                })
                .collect(),
            address: None,
            solo: false,
            witness: false,
            timing: Timing::default(),
            seed: u64::from(me.bytes().last().unwrap_or(0)),
            incarnation: 1,
        }
    }

    fn ips() -> Vec<IpAddr> {
        (1..=4u8).map(|k| IpAddr::from([10, 9, 0, k])).collect()
    }

    struct Net {
        now: Instant,
        nodes: BTreeMap<String, Node>,
        hard: BTreeMap<String, HardState>,
        queue: VecDeque<(String, String, Message)>,
        outputs: Vec<(Instant, String, Output)>,
    }

    impl Net {
        fn new(t0: Instant) -> Self {
            Net {
                now: t0,
                nodes: BTreeMap::new(),
                hard: BTreeMap::new(),
                queue: VecDeque::new(),
                outputs: Vec::new(),
            }
        }

        fn start(&mut self, me: &str, voters: &[&str]) {
            let hard = self.hard.get(me).cloned().unwrap_or_default();
            let (mut n, out) = Node::new(cfg(me, voters), hard, self.now).expect("node");
            self.carry(me, out);
            let d: BTreeMap<IpAddr, String> =
                ips().into_iter().map(|ip| (ip, ip.to_string())).collect();
            let out = n.step(self.now, Input::DesiredIps(d));
            self.carry(me, out);
            let out = n.step(
                self.now,
                Input::LocalEligibility(ips().into_iter().collect()),
            );
            self.nodes.insert(me.to_owned(), n);
            self.carry(me, out);
        }

        fn input(&mut self, me: &str, i: Input) {
            let now = self.now;
            let out = self.nodes.get_mut(me).expect("node").step(now, i);
            self.carry(me, out);
            self.drain();
        }

        fn carry(&mut self, me: &str, out: Vec<Output>) {
            for o in out {
                match o {
                    Output::Send { to, msg } => self.queue.push_back((me.to_owned(), to, msg)),
                    Output::Persist(h) => {
                        self.hard.insert(me.to_owned(), h);
                    }
                    o => self.outputs.push((self.now, me.to_owned(), o)),
                }
            }
        }

        fn drain(&mut self) {
            while let Some((from, to, msg)) = self.queue.pop_front() {
                let now = self.now;
                if let Some(n) = self.nodes.get_mut(&to) {
                    let out = n.step(now, Input::Received { from, msg });
                    self.carry(&to, out);
                }
            }
        }

        /// Runs for `d` in 1 ms steps, checking after each that no IP has two holders.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += MS;
                let names: Vec<String> = self.nodes.keys().cloned().collect();
                for n in names {
                    let now = self.now;
                    let out = self.nodes.get_mut(&n).expect("node").step(now, Input::Tick);
                    self.carry(&n, out);
                }
                self.drain();
                for ip in ips() {
                    let holders: Vec<&String> = self
                        .nodes
                        .iter()
                        .filter(|(_, n)| n.owned_ips(self.now).contains(&ip))
                        .map(|(name, _)| name)
                        .collect();
                    assert!(holders.len() <= 1, "{ip} held by {holders:?}");
                }
            }
        }

        fn versions(&self) -> BTreeMap<&str, u64> {
            self.nodes
                .iter()
                .map(|(n, node)| (n.as_str(), node.voter_set().0))
                .collect()
        }

        fn leader(&self) -> Option<&str> {
            self.nodes
                .iter()
                .find(|(_, n)| n.role() == Role::Leader)
                .map(|(name, _)| name.as_str())
        }

        fn held(&self) -> BTreeSet<IpAddr> {
            self.nodes
                .values()
                .flat_map(|n| n.owned_ips(self.now))
                .collect()
        }

        fn when(&self, f: impl Fn(&Output) -> bool) -> Option<Instant> {
            self.outputs
                .iter()
                .find(|(_, _, o)| f(o))
                .map(|(t, _, _)| *t)
        }
    }

    fn warm(t0: Instant) -> Net {
        let mut net = Net::new(t0);
        for n in ["a", "b", "c"] {
            net.start(n, &["a", "b", "c"]);
        }
        net.run(Duration::from_secs(3));
        assert!(net.leader().is_some());
        assert_eq!(
            net.held().len(),
            ips().len(),
            "every IP held once warmed up"
        );
        net
    }

    #[test]
    fn a_voter_added_then_another_removed_by_reloading_every_voter_reaches_every_host() {
        let mut net = warm(crate::test_origin());
        net.start("d", &["a", "b", "c", "d"]);
        for n in ["a", "b", "c"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "c", "d"])));
            net.run(Duration::from_millis(100));
        }
        net.run(Duration::from_secs(1));
        assert_eq!(
            net.versions(),
            BTreeMap::from([("a", 1), ("b", 1), ("c", 1), ("d", 1)])
        );
        for node in net.nodes.values() {
            assert_eq!(node.voter_set().1, &list(&["a", "b", "c", "d"]));
        }
        assert_eq!(net.held().len(), ips().len());
        // Then c leaves the voters (reload with a, b, d everywhere).
        for n in ["a", "b", "c", "d"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "d"])));
        }
        net.run(Duration::from_secs(2));
        assert!(
            net.versions().values().all(|v| *v == 2),
            "{:?}",
            net.versions()
        );
        assert!(!net.nodes["c"].is_voter(), "c was removed");
        assert!(net.nodes["d"].is_voter());
        assert!(net.leader().is_some_and(|l| l != "c"));
        assert_eq!(
            net.held().len(),
            ips().len(),
            "every IP held after both changes"
        );
        // The committed set is durable: a restart of a keeps version 2 whatever its file says.
        let hard = net.hard["a"].clone();
        assert_eq!(hard.voters.as_ref().map(|v| v.version), Some(2));
        let (n, out) = Node::new(cfg("a", &["a", "b", "c"]), hard, net.now).expect("node");
        assert_eq!(n.voter_set(), (2, &list(&["a", "b", "d"])));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::VoterProposal(_) | Output::VotersProposed { .. })),
            "a restart with a stale file proposes nothing: {out:?}"
        );
    }

    #[test]
    fn a_dead_voter_is_replaced_by_removing_it_first_then_adding_the_new_one() {
        let mut net = warm(crate::test_origin());
        // c dies for good (its process is gone; its datagrams with it).
        net.nodes.remove("c");
        net.run(Duration::from_secs(1));
        assert!(
            net.leader().is_some(),
            "a and b are a majority of {{a, b, c}}"
        );
        for n in ["a", "b"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b"])));
        }
        net.run(Duration::from_secs(1));
        assert_eq!(net.versions(), BTreeMap::from([("a", 1), ("b", 1)]));
        assert_eq!(net.held().len(), ips().len(), "c's IPs moved to a and b");
        net.start("d", &["a", "b", "d"]);
        for n in ["a", "b"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "d"])));
        }
        net.run(Duration::from_secs(2));
        assert_eq!(
            net.versions(),
            BTreeMap::from([("a", 2), ("b", 2), ("d", 2)])
        );
        assert!(net.nodes["d"].is_voter());
        assert_eq!(net.held().len(), ips().len());
    }

    #[test]
    fn the_next_change_waits_a_lease_and_drift_after_a_majority_of_the_old_set_adopted_the_last() {
        let mut net = warm(crate::test_origin());
        net.start("d", &["a", "b", "c", "d"]);
        // Both proposals at once on every voter: the second must wait for the fence.
        for n in ["a", "b", "c"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "c", "d"])));
        }
        net.run(Duration::from_millis(300));
        let committed = net
            .when(|o| matches!(o, Output::VotersChanged { version: 1, .. }))
            .expect("version 1 committed");
        for n in ["a", "b", "c", "d"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "d"])));
        }
        net.run(Duration::from_secs(1));
        let proposed = net
            .when(|o| matches!(o, Output::VotersProposed { version: 2, .. }))
            .expect("version 2 proposed");
        let t = Timing::default();
        assert!(
            proposed >= committed + t.lease + t.clock_drift,
            "proposed {:?} after the commit",
            proposed - committed
        );
    }

    #[test]
    fn a_reload_two_voters_away_is_refused_and_changes_nothing() {
        let mut net = warm(crate::test_origin());
        net.input("a", Input::ProposeVoters(list(&["a", "d", "e"])));
        assert!(net.outputs.iter().any(|(_, n, o)| n == "a"
            && matches!(
                o,
                Output::VoterProposal(Err(VoterChangeError::MoreThanOne { .. }))
            )));
        net.run(Duration::from_secs(1));
        assert!(net.versions().values().all(|v| *v == 0));
    }

    #[test]
    fn a_voter_past_a_change_grants_no_request_showing_an_older_set_and_sends_it_the_set() {
        let mut net = warm(crate::test_origin());
        net.start("d", &["a", "b", "c", "d"]);
        for n in ["a", "b", "c"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "c", "d"])));
        }
        net.run(Duration::from_millis(500));
        assert_eq!(net.nodes["b"].voter_set().0, 1);
        // A holder still at version 0 (a stale member) asks b.
        let out = net.nodes.get_mut("b").expect("b").step(
            net.now,
            Input::Received {
                from: "a".into(),
                msg: Message {
                    term: 1,
                    body: Body::Renew(Renew {
                        seq: u64::MAX / 2,
                        claim: (u64::MAX / 2, 1),
                        ips: ips(),
                        standby: vec![],
                        version: 0,
                    }),
                },
            },
        );
        let sent: Vec<&Body> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } if to == "a" => Some(&msg.body),
                _ => None,
            })
            .collect();
        assert!(
            !sent.iter().any(|b| matches!(b, Body::Grant(_))),
            "{sent:?}"
        );
        assert!(
            sent.iter()
                .any(|b| matches!(b, Body::Voters(v) if v.commit && v.version == 1)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_candidate_behind_the_voters_set_gets_no_pre_vote() {
        let mut net = warm(crate::test_origin());
        net.start("d", &["a", "b", "c", "d"]);
        for n in ["a", "b", "c"] {
            net.input(n, Input::ProposeVoters(list(&["a", "b", "c", "d"])));
        }
        net.run(Duration::from_secs(1));
        let voter = net
            .nodes
            .keys()
            .find(|n| Some(n.as_str()) != net.leader())
            .cloned()
            .expect("a follower");
        let other = ["a", "b", "c"]
            .into_iter()
            .find(|n| *n != voter && Some(*n) != net.leader())
            .expect("another");
        // Well after its leader's promise: only the version decides.
        net.nodes
            .remove(net.leader().expect("leader").to_owned().as_str());
        net.run(Timing::default().election_timeout * 3);
        let term = net.nodes[&voter].term();
        let ask = |version| Input::Received {
            from: other.into(),
            msg: Message {
                term: term + 10,
                body: Body::PreVote { version },
            },
        };
        let granted = |out: &[Output]| {
            out.iter().any(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: Message {
                            body: Body::PreVoteReply { granted: true },
                            ..
                        },
                        ..
                    }
                )
            })
        };
        let now = net.now + Timing::default().election_timeout * 3;
        let n = net.nodes.get_mut(&voter).expect("voter");
        let out = n.step(now, ask(0));
        assert!(!granted(&out), "version 0 < 1: {out:?}");
        let out = n.step(now, ask(1));
        assert!(granted(&out) || n.role() == Role::Leader, "{out:?}");
    }
}
