//! The configured pools, in config order, with a free-address cursor per range.
//!
//! MetalLB finds a free address by walking each CIDR from its first address and trying every
//! one (`getIPFromCIDR`), which is quadratic over a pool's life. We find the same address
//! (the lowest acceptable one, ranges in config order) with a cursor per range below which
//! every address is known to be in use, plus an index of sharable IPs by sharing key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::table::{ShareKey, Table};
use crate::model::{IpFamily, Pool, Pools, ServiceKey, ServicePort, ip_to_u128};

/// The shared [`Pools`] and, beside each (same index), the allocator's own state of it.
#[derive(Clone, Debug)]
pub(super) struct PoolSet {
    shared: Pools,
    pools: Vec<PoolState>,
}

#[derive(Clone, Debug)]
struct PoolState {
    avoid_buggy_ips: bool,
    ranges: Vec<RangeState>,
}

#[derive(Clone, Debug)]
struct RangeState {
    family: IpFamily,
    first: u128,
    last: u128,
    /// Every acceptable address in `first..cursor` is in use; `None`: the whole range is.
    cursor: Option<u128>,
}

/// MetalLB's `ipConfusesBuggyFirmwares`: an IPv4 address ending in .0 or .255.
pub(super) fn is_buggy(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

fn to_ip(family: IpFamily, n: u128) -> IpAddr {
    match family {
        // Ranges of IPv4 addresses only hold values up to u32::MAX.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Number of `n` in `lo..=hi` with `n % 256 == r`.
fn count_mod256(lo: u128, hi: u128, r: u128) -> u128 {
    let upto = |n: u128| if n < r { 0 } else { (n - r) / 256 + 1 };
    upto(hi) - if lo == 0 { 0 } else { upto(lo - 1) }
}

impl PoolState {
    fn acceptable(&self, ip: &IpAddr) -> bool {
        !(self.avoid_buggy_ips && is_buggy(ip))
    }

    /// First address of range `i` with no user at all, moving the cursor up to it.
    fn scan(&mut self, i: usize, table: &Table) -> Option<IpAddr> {
        let avoid = self.avoid_buggy_ips;
        let r = &mut self.ranges[i];
        let mut n = r.cursor?;
        loop {
            let ip = to_ip(r.family, n);
            let usable = !avoid || !is_buggy(&ip);
            if usable && !table.ips.contains_key(&ip) {
                r.cursor = Some(n);
                return Some(ip);
            }
            if n == r.last {
                r.cursor = None;
                return None;
            }
            n += 1;
        }
    }
}

impl PoolSet {
    pub fn new(shared: Pools) -> Self {
        let pools = shared
            .iter()
            .map(|pool| PoolState {
                avoid_buggy_ips: pool.avoid_buggy_ips,
                ranges: pool
                    .ranges
                    .iter()
                    .map(|r| RangeState {
                        family: r.family(),
                        first: ip_to_u128(&r.first),
                        last: ip_to_u128(&r.last),
                        cursor: Some(ip_to_u128(&r.first)),
                    })
                    .collect(),
            })
            .collect();
        Self { shared, pools }
    }

    pub fn shared(&self) -> &Pools {
        &self.shared
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn pool(&self, i: usize) -> &Pool {
        &self.shared[i]
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.shared.index(name)
    }

    pub fn reset_cursors(&mut self) {
        for p in &mut self.pools {
            for r in &mut p.ranges {
                r.cursor = Some(r.first);
            }
        }
    }

    /// `ip` has no user any more: cursors above it step back.
    pub fn note_freed(&mut self, freed: &[IpAddr]) {
        for ip in freed {
            let n = ip_to_u128(ip);
            let family = IpFamily::of(ip);
            for p in &mut self.pools {
                for r in &mut p.ranges {
                    if r.family == family && r.first <= n && n <= r.last {
                        r.cursor = Some(r.cursor.map_or(n, |c| c.min(n)));
                    }
                }
            }
        }
    }

    /// MetalLB's `poolFor`: the pool that holds every one of `ips`, not counting `.0`/`.255`
    /// in pools that avoid them. `preferred` (the pool the IPs were picked from or the
    /// annotated one) wins when it holds them; otherwise the first in config order.
    /// (Validated configs have no overlapping pools; this keeps overlaps from flapping.)
    pub fn pool_for(&self, ips: &[IpAddr], preferred: Option<usize>) -> Option<usize> {
        if ips.is_empty() {
            return None;
        }
        let holds = |i: usize| {
            let (state, pool) = (&self.pools[i], &self.shared[i]);
            ips.iter()
                .all(|ip| state.acceptable(ip) && pool.contains(ip))
        };
        preferred
            .filter(|&i| i < self.pools.len() && holds(i))
            .or_else(|| (0..self.pools.len()).find(|&i| holds(i)))
    }

    pub fn has_family(&self, i: usize, family: IpFamily) -> bool {
        self.pools[i].ranges.iter().any(|r| r.family == family)
    }

    /// The address MetalLB's `getIPFromCIDR` would pick for `svc` in pool `i`: the first
    /// range of `family` (config order) with an acceptable address, and in it the lowest
    /// address that is unused or that `svc` may share.
    pub fn first_free(
        &mut self,
        i: usize,
        family: IpFamily,
        table: &Table,
        svc: &ServiceKey,
        ports: &[ServicePort],
        key: &ShareKey,
    ) -> Option<IpAddr> {
        let state = &mut self.pools[i];
        for ri in 0..state.ranges.len() {
            let r = &state.ranges[ri];
            if r.family != family {
                continue;
            }
            let (lo, hi) = (to_ip(r.family, r.first), to_ip(r.family, r.last));
            let shared = if key.sharing.is_some() {
                table.shared.get(key).and_then(|set| {
                    set.range(lo..=hi).copied().find(|ip| {
                        state.acceptable(ip) && table.check(svc, *ip, ports, key).is_ok()
                    })
                })
            } else {
                None
            };
            let free = state.scan(ri, table);
            let best = match (free, shared) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// Capacity of pool `i` per family (IPv4, IPv6), net of avoided `.0`/`.255` addresses.
    pub fn capacity(&self, i: usize) -> (u128, u128) {
        let state = &self.pools[i];
        let (mut v4, mut v6) = (0u128, 0u128);
        for r in &state.ranges {
            let len = (r.last - r.first).saturating_add(1);
            match r.family {
                IpFamily::V4 => {
                    let buggy = if state.avoid_buggy_ips {
                        count_mod256(r.first, r.last, 0) + count_mod256(r.first, r.last, 255)
                    } else {
                        0
                    };
                    v4 = v4.saturating_add(len - buggy);
                }
                IpFamily::V6 => v6 = v6.saturating_add(len),
            }
        }
        (v4, v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_mod256_counts_dot_zero_and_dot_255_addresses() {
        // 10.0.0.0/24 has one .0 and one .255.
        let lo = 0x0a00_0000;
        assert_eq!(count_mod256(lo, lo + 255, 0), 1);
        assert_eq!(count_mod256(lo, lo + 255, 255), 1);
        // .1-.254 has neither.
        assert_eq!(count_mod256(lo + 1, lo + 254, 0), 0);
        assert_eq!(count_mod256(lo + 1, lo + 254, 255), 0);
        // a /16 has 256 of each.
        assert_eq!(count_mod256(lo, lo + 0xffff, 0), 256);
        assert_eq!(count_mod256(0, 0, 0), 1);
    }
}
