//! The choice of interface(s) to answer ARP/NDP on for an IP. Pure. (The interfaces
//! themselves, as netlink reports them, are [`crate::model::iface`].)

use std::net::IpAddr;

pub use crate::model::iface::Interface;

/// The interfaces to answer ARP/NDP on for `ip`, as ifindexes in ascending order:
/// - `pool_interfaces` given (the pool's `interfaces`): those of them that are usable,
///   whatever their subnets (MetalLB answers on the listed interfaces);
/// - otherwise every usable interface one of whose subnets holds `ip`.
///
/// Empty means this host cannot announce `ip` right now (it is ineligible).
pub fn choose_interfaces<'a>(
    ip: &IpAddr,
    pool_interfaces: &[String],
    interfaces: impl IntoIterator<Item = &'a Interface>,
) -> Vec<u32> {
    let mut chosen: Vec<u32> = interfaces
        .into_iter()
        .filter(|i| i.usable())
        .filter(|i| {
            if pool_interfaces.is_empty() {
                i.has_subnet_for(ip)
            } else {
                pool_interfaces.contains(&i.name)
            }
        })
        .map(|i| i.index)
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// Whether this host can announce `ip` now (for raft-lite's eligibility): some interface is
/// chosen for it.
pub fn eligible<'a>(
    ip: &IpAddr,
    pool_interfaces: &[String],
    interfaces: impl IntoIterator<Item = &'a Interface>,
) -> bool {
    !choose_interfaces(ip, pool_interfaces, interfaces).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::iface::MacAddr;

    fn iface(index: u32, name: &str, up: bool, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: name.into(),
            mac: MacAddr([2, 0, 0, 0, 0, index as u8]),
            up,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lab() -> Vec<Interface> {
        let mut lo = iface(
            1,
            "lo",
            true,
            &["127.0.0.1/8", "::1/128", "10.10.100.210/32"],
        );
        lo.mac = MacAddr::ZERO;
        vec![
            lo,
            iface(2, "enp0s3", true, &["192.168.0.5/24", "fe80::1/64"]),
            iface(3, "enp0s8", true, &["10.10.100.3/24", "fd00:10::3/64"]),
            iface(4, "enp0s9", false, &["172.16.0.3/24"]),
        ]
    }

    #[test]
    fn ipv4_chooses_the_up_interface_whose_subnet_holds_it() {
        assert_eq!(
            choose_interfaces(&ip("10.10.100.200"), &[], &lab()),
            vec![3]
        );
    }

    #[test]
    fn ipv6_chooses_the_up_interface_whose_subnet_holds_it() {
        assert_eq!(choose_interfaces(&ip("fd00:10::200"), &[], &lab()), vec![3]);
    }

    #[test]
    fn down_interface_is_not_chosen_even_if_its_subnet_matches() {
        assert!(choose_interfaces(&ip("172.16.0.200"), &[], &lab()).is_empty());
        assert!(!eligible(&ip("172.16.0.200"), &[], &lab()));
    }

    #[test]
    fn ip_in_no_subnet_is_ineligible() {
        assert!(!eligible(&ip("203.0.113.7"), &[], &lab()));
    }

    #[test]
    fn loopback_without_mac_is_never_chosen() {
        assert!(choose_interfaces(&ip("10.10.100.210"), &[], &lab()) == vec![3]);
        assert!(choose_interfaces(&ip("127.0.0.5"), &[], &lab()).is_empty());
        assert!(choose_interfaces(&ip("127.0.0.5"), &["lo".into()], &lab()).is_empty());
    }

    #[test]
    fn pool_interfaces_are_used_regardless_of_subnet() {
        let pool = vec![
            "enp0s3".to_string(),
            "enp0s9".to_string(),
            "nope0".to_string(),
        ];
        // enp0s9 is down and nope0 does not exist: only enp0s3.
        assert_eq!(
            choose_interfaces(&ip("10.10.100.200"), &pool, &lab()),
            vec![2]
        );
    }

    #[test]
    fn several_matching_interfaces_are_all_chosen_in_index_order() {
        let mut l = lab();
        l.push(iface(7, "br0", true, &["10.10.0.1/16"]));
        assert_eq!(choose_interfaces(&ip("10.10.100.200"), &[], &l), vec![3, 7]);
    }
}
