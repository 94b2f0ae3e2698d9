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
}

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
        }
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
    let added: Vec<(&String, &SocketAddr)> =
        new.iter().filter(|(n, _)| !current.contains_key(*n)).collect();
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
