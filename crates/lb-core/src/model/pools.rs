//! The configured pools as one shared, versioned value.
//!
//! A validated `[[pool]]` list is read by the controller (which pool holds an IP), the
//! allocator (where to take an address from), the announcers (layer 2 or BGP, interfaces,
//! selectors) and the BGP speaker (advertisements). They all hold the same [`Pools`] — an
//! `Arc`, so a clone is a pointer — and a reload hands each of them the one new value with
//! the next [`Pools::version`], instead of four copies updated one by one. Announcements name
//! their pool; [`Pools::get`] finds it by name through an index rather than a scan.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use super::Pool;

#[derive(Clone)]
pub struct Pools(Arc<Inner>);

struct Inner {
    version: u64,
    list: Vec<Pool>,
    by_name: BTreeMap<String, usize>,
}

impl Pools {
    /// Version 0 of `list` (config order kept). Validated configs have unique names; were
    /// there two, [`Pools::get`] finds the first.
    pub fn new(list: Vec<Pool>) -> Self {
        Self::versioned(list, 0)
    }

    fn versioned(list: Vec<Pool>, version: u64) -> Self {
        let mut by_name = BTreeMap::new();
        for (i, p) in list.iter().enumerate() {
            by_name.entry(p.name.clone()).or_insert(i);
        }
        Self(Arc::new(Inner {
            version,
            list,
            by_name,
        }))
    }

    /// The same pools as `self`, numbered as the successor of `running` (a reload).
    pub fn succeeding(&self, running: &Pools) -> Self {
        Self::versioned(self.0.list.clone(), running.version() + 1)
    }

    /// Counts reloads that changed the pools (0: as loaded at start).
    pub fn version(&self) -> u64 {
        self.0.version
    }

    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.index(name).map(|i| &self.0.list[i])
    }

    /// Position of pool `name` in config order.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.0.by_name.get(name).copied()
    }

    /// The pool whose ranges hold `ip` (validated pools do not overlap).
    pub fn containing(&self, ip: &IpAddr) -> Option<&Pool> {
        self.0.list.iter().find(|p| p.contains(ip))
    }

    /// Both are the very same value (not merely equal): nothing to redo.
    pub fn same(&self, other: &Pools) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Pools {
    type Target = [Pool];

    fn deref(&self) -> &[Pool] {
        &self.0.list
    }
}

/// Equal when they hold the same pools in the same order, whatever their versions: what a
/// reload compares.
impl PartialEq for Pools {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || self.0.list == other.0.list
    }
}

impl Eq for Pools {}

impl<'a> IntoIterator for &'a Pools {
    type Item = &'a Pool;
    type IntoIter = std::slice::Iter<'a, Pool>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.list.iter()
    }
}

impl Default for Pools {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl From<Vec<Pool>> for Pools {
    fn from(list: Vec<Pool>) -> Self {
        Self::new(list)
    }
}

impl FromIterator<Pool> for Pools {
    fn from_iter<I: IntoIterator<Item = Pool>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("version", &self.0.version)
            .field("list", &self.0.list)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpRange, PoolProtocol};

    fn pool(name: &str, first: &str, last: &str) -> Pool {
        Pool {
            name: name.into(),
            protocol: PoolProtocol::Layer2,
            ranges: vec![IpRange {
                first: first.parse().unwrap(),
                last: last.parse().unwrap(),
            }],
            auto_assign: true,
            avoid_buggy_ips: false,
            interfaces: vec![],
            node_selectors: vec![],
            bgp_advertisements: vec![],
            service_allocation: Default::default(),
        }
    }

    #[test]
    fn pools_are_found_by_name_and_by_address() {
        let p = Pools::new(vec![
            pool("a", "10.0.0.1", "10.0.0.9"),
            pool("b", "10.0.1.1", "10.0.1.9"),
        ]);
        assert_eq!(p.get("b").map(|p| p.name.as_str()), Some("b"));
        assert_eq!(p.index("a"), Some(0));
        assert!(p.get("c").is_none());
        let ip: IpAddr = "10.0.1.5".parse().unwrap();
        assert_eq!(p.containing(&ip).map(|p| p.name.as_str()), Some("b"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_clone_is_the_same_value_and_a_reload_numbers_the_next() {
        let running = Pools::new(vec![pool("a", "10.0.0.1", "10.0.0.9")]);
        let shared = running.clone();
        assert!(shared.same(&running));
        let loaded = Pools::new(vec![pool("a", "10.0.0.1", "10.0.0.20")]);
        let adopted = loaded.succeeding(&running);
        assert_eq!(adopted.version(), 1);
        assert!(!adopted.same(&running));
        assert_ne!(adopted, running);
        // Equality ignores the version: an unchanged reload compares equal.
        let again = Pools::new(vec![pool("a", "10.0.0.1", "10.0.0.9")]).succeeding(&running);
        assert_eq!(again, running);
    }
}
