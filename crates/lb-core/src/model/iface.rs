//! Network interfaces as netlink reports them: MAC addresses, the events the kernel sends,
//! and the table those events fold into. Shared by the layer-2 responder (which interface
//! answers for an IP) and the daemon (is this host eligible for an IP).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit (I/G) set: broadcast or multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Reads 6 bytes at `at`; `None` when `bytes` is too short.
    pub fn read(bytes: &[u8], at: usize) -> Option<MacAddr> {
        let s = bytes.get(at..at.checked_add(6)?)?;
        let mut m = [0u8; 6];
        m.copy_from_slice(s);
        Some(MacAddr(m))
    }

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464 §7):
    /// 33:33 followed by the group's last 32 bits.
    pub fn for_ipv6_multicast(group: &std::net::Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in m.iter_mut() {
            let p = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if p.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(m))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex pairs separated by ':'")]
pub struct MacParseError(pub String);

/// One network interface: what netlink reports about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// All zero for interfaces without an Ethernet address (`lo`, tun): never chosen.
    pub mac: MacAddr,
    /// Administratively up and carrier present (IFF_UP and IFF_LOWER_UP / oper state up).
    pub up: bool,
    /// The interface's addresses with their prefix length (so also its subnets).
    pub addresses: Vec<IpNet>,
}

impl Interface {
    /// Can ARP/NDP be answered here at all: up, with an Ethernet MAC.
    pub fn usable(&self) -> bool {
        self.up && self.mac != MacAddr::ZERO && !self.mac.is_multicast()
    }

    /// One of the interface's IPv4/IPv6 subnets holds `ip`.
    pub fn has_subnet_for(&self, ip: &IpAddr) -> bool {
        self.addresses.iter().any(|net| net.contains(ip))
    }
}

/// A change of one interface or address, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// The link exists and is up with carrier (IFF_UP and IFF_LOWER_UP).
    LinkUp {
        ifindex: u32,
        name: String,
        mac: MacAddr,
    },
    /// The link exists but is down or has no carrier.
    LinkDown {
        ifindex: u32,
        name: String,
        mac: MacAddr,
    },
    LinkRemoved {
        ifindex: u32,
        name: String,
    },
    AddressAdded {
        ifindex: u32,
        address: IpNet,
    },
    AddressRemoved {
        ifindex: u32,
        address: IpNet,
    },
}

impl NetEvent {
    pub fn ifindex(&self) -> u32 {
        match self {
            NetEvent::LinkUp { ifindex, .. }
            | NetEvent::LinkDown { ifindex, .. }
            | NetEvent::LinkRemoved { ifindex, .. }
            | NetEvent::AddressAdded { ifindex, .. }
            | NetEvent::AddressRemoved { ifindex, .. } => *ifindex,
        }
    }
}

/// The interfaces as the events so far describe them.
#[derive(Clone, Debug, Default)]
pub struct InterfaceTable {
    interfaces: BTreeMap<u32, Interface>,
}

/// What applying an event changed, for the responder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    Changed(Interface),
    Removed { ifindex: u32 },
}

impl InterfaceTable {
    pub fn get(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.get(&ifindex)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.values()
    }

    pub fn by_name(&self, name: &str) -> Option<&Interface> {
        self.interfaces.values().find(|i| i.name == name)
    }

    /// Applies `event`; returns the change, or `None` when nothing changed (the kernel
    /// repeats RTM_NEWLINK for changes we do not track).
    pub fn apply(&mut self, event: &NetEvent) -> Option<TableChange> {
        let ifindex = event.ifindex();
        if let NetEvent::LinkRemoved { .. } = event {
            return self
                .interfaces
                .remove(&ifindex)
                .map(|_| TableChange::Removed { ifindex });
        }
        let entry = self.interfaces.entry(ifindex).or_insert_with(|| Interface {
            index: ifindex,
            name: String::new(),
            mac: MacAddr::ZERO,
            up: false,
            addresses: Vec::new(),
        });
        let before = entry.clone();
        match event {
            NetEvent::LinkUp { name, mac, .. } | NetEvent::LinkDown { name, mac, .. } => {
                entry.name = name.clone();
                entry.mac = *mac;
                entry.up = matches!(event, NetEvent::LinkUp { .. });
            }
            NetEvent::AddressAdded { address, .. } => {
                if !entry.addresses.contains(address) {
                    entry.addresses.push(*address);
                }
            }
            NetEvent::AddressRemoved { address, .. } => entry.addresses.retain(|a| a != address),
            NetEvent::LinkRemoved { .. } => {}
        }
        (*entry != before).then(|| TableChange::Changed(entry.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints_round_trip() {
        let m: MacAddr = "02:00:5e:0a:0B:ff".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x5e, 0x0a, 0x0b, 0xff]);
        assert_eq!(m.to_string(), "02:00:5e:0a:0b:ff");
        assert!("02:00:5e:0a:0b".parse::<MacAddr>().is_err());
        assert!("02:00:5e:0a:0b:ff:00".parse::<MacAddr>().is_err());
        assert!("02:00:5e:0a:0b:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn solicited_node_group_maps_to_33_33_ff_mac() {
        let g: std::net::Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
        assert_eq!(
            MacAddr::for_ipv6_multicast(&g).to_string(),
            "33:33:ff:00:00:10"
        );
    }
}
