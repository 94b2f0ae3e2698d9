//! Which host should answer for a layer-2 IP (pure).
//!
//! Keep the current owner while it stays a candidate (eligible, alive, not a witness, not
//! leaving); otherwise pick the candidate with the highest rendezvous (highest-random-weight)
//! score of (host, IP). The score is FNV-1a 64 over the host name and the address bytes, so
//! every leader computes the same answer and removing a host only moves that host's IPs.
//! The leader is a candidate like any host (quorum leases: its failure costs its own IPs one
//! takeover by their successors, no more; `core.rs`).

use std::net::IpAddr;

/// Rendezvous score of `host` for `ip` (FNV-1a 64 with a final avalanche mix).
pub fn score(host: &str, ip: &IpAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    };
    for b in host.as_bytes() {
        eat(*b);
    }
    eat(0xff); // separator: ("ab", x) and ("a", "b"+x) differ
    match ip {
        IpAddr::V4(v4) => v4.octets().into_iter().for_each(&mut eat),
        IpAddr::V6(v6) => v6.octets().into_iter().for_each(&mut eat),
    }
    // splitmix64 finaliser: FNV's low bits are weak for short, similar inputs.
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The owner `ip` should have: `current` if it is among `candidates`, else the candidate with
/// the highest score (ties broken by name), or `None` when there is no candidate.
pub fn choose_owner<'a>(
    ip: &IpAddr,
    current: Option<&str>,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(u64, &'a str)> = None;
    for c in candidates {
        if Some(c) == current {
            return Some(c);
        }
        let s = score(c, ip);
        if best.is_none_or(|(bs, bn)| (s, c) > (bs, bn)) {
            best = Some((s, c));
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn ips(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a0a_0000 + i)))
            .collect()
    }

    fn assign<'a>(hosts: &[&'a str], ips: &[IpAddr]) -> BTreeMap<IpAddr, &'a str> {
        ips.iter()
            .filter_map(|ip| choose_owner(ip, None, hosts.iter().copied()).map(|h| (*ip, h)))
            .collect()
    }

    #[test]
    fn thousand_ips_spread_evenly_over_five_hosts() {
        let hosts = ["worker-1", "worker-2", "worker-3", "worker-4", "worker-5"];
        let map = assign(&hosts, &ips(1000));
        for h in hosts {
            let n = map.values().filter(|o| **o == h).count();
            assert!((160..=240).contains(&n), "{h} got {n} of 1000");
        }
    }

    #[test]
    fn removing_a_host_moves_only_its_ips() {
        let hosts = ["a", "b", "c", "d", "e"];
        let all = ips(1000);
        let before = assign(&hosts, &all);
        let after = assign(&["a", "b", "d", "e"], &all);
        for ip in &all {
            if before[ip] != "c" {
                assert_eq!(before[ip], after[ip], "{ip} moved though its host stayed");
            } else {
                assert_ne!(after[ip], "c");
            }
        }
    }

    #[test]
    fn adding_a_host_moves_about_one_in_n() {
        let all = ips(1000);
        let before = assign(&["a", "b", "c", "d"], &all);
        let after = assign(&["a", "b", "c", "d", "e"], &all);
        let moved: Vec<_> = all.iter().filter(|ip| before[*ip] != after[*ip]).collect();
        assert!(
            moved.iter().all(|ip| after[*ip] == "e"),
            "only moves to the new host"
        );
        assert!((150..=250).contains(&moved.len()), "moved {}", moved.len());
    }

    #[test]
    fn current_owner_is_kept_while_it_is_a_candidate() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let hosts = ["a", "b", "c"];
        for h in hosts {
            assert_eq!(choose_owner(&ip, Some(h), hosts), Some(h));
        }
        let fresh = choose_owner(&ip, None, hosts);
        assert_eq!(choose_owner(&ip, Some("gone"), hosts), fresh);
        assert_eq!(choose_owner(&ip, Some("a"), []), None);
    }

    #[test]
    fn score_is_stable_across_runs() {
        // Pinned: a different leader binary must compute the same placement.
        let ip = IpAddr::V4(Ipv4Addr::new(10, 10, 100, 200));
        assert_eq!(score("worker-1", &ip), score("worker-1", &ip));
        assert_ne!(score("worker-1", &ip), score("worker-2", &ip));
        assert_eq!(score("worker-1", &ip), PINNED);
    }
    const PINNED: u64 = 45_560_054_233_606_239;
}
