//! rtnetlink: interfaces, addresses and link state as events (not polling), and adding a
//! static service's IP to `lo`.
//!
//! `mod.rs` is pure: typed events made from rtnetlink messages, and `InterfaceTable`, which
//! folds events into `l2::iface::Interface` snapshots for the responder. `netlink` does the
//! I/O (dump at start, then the RTNLGRP_LINK / IPV4_IFADDR / IPV6_IFADDR groups).

pub mod netlink;

use std::collections::BTreeMap;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use crate::l2::MacAddr;
use crate::l2::iface::Interface;

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

/// The event an RTM_NEWLINK (`removed = false`) or RTM_DELLINK message stands for. Links
/// without an Ethernet-sized address (lo, tun) get the all-zero MAC.
pub fn link_event(msg: &LinkMessage, removed: bool) -> NetEvent {
    let ifindex = msg.header.index;
    let mut name = String::new();
    let mut mac = MacAddr::ZERO;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                mac = MacAddr::read(bytes, 0).unwrap_or(MacAddr::ZERO)
            }
            _ => {}
        }
    }
    if removed {
        return NetEvent::LinkRemoved { ifindex, name };
    }
    let flags = msg.header.flags;
    if flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp) {
        NetEvent::LinkUp { ifindex, name, mac }
    } else {
        NetEvent::LinkDown { ifindex, name, mac }
    }
}

/// The event an RTM_NEWADDR / RTM_DELADDR message stands for; `None` when it carries no
/// usable address. IFA_LOCAL is the interface's own address on point-to-point links, where
/// IFA_ADDRESS is the peer's, so it wins when present.
pub fn address_event(msg: &AddressMessage, removed: bool) -> Option<NetEvent> {
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => addr = Some(*ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
            _ => {}
        }
    }
    let address = IpNet::new(addr?, msg.header.prefix_len).ok()?;
    let ifindex = msg.header.index;
    Some(if removed {
        NetEvent::AddressRemoved { ifindex, address }
    } else {
        NetEvent::AddressAdded { ifindex, address }
    })
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
    use rtnetlink::packet_route::AddressFamily;

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 0x0b]),
        ];
        m
    }

    fn addr(index: u32, ip: &str, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix;
        m.header.family = AddressFamily::Inet;
        m.attributes = vec![AddressAttribute::Address(ip.parse().unwrap())];
        m
    }

    #[test]
    fn link_is_up_only_with_up_and_lower_up() {
        let mac = MacAddr([2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(
            link_event(&link(3, "eth0", LinkFlags::Up | LinkFlags::LowerUp), false),
            NetEvent::LinkUp {
                ifindex: 3,
                name: "eth0".into(),
                mac
            }
        );
        assert_eq!(
            link_event(&link(3, "eth0", LinkFlags::Up), false),
            NetEvent::LinkDown {
                ifindex: 3,
                name: "eth0".into(),
                mac
            }
        );
        assert_eq!(
            link_event(&link(3, "eth0", LinkFlags::Up), true),
            NetEvent::LinkRemoved {
                ifindex: 3,
                name: "eth0".into()
            }
        );
    }

    #[test]
    fn address_message_becomes_prefix_event() {
        assert_eq!(
            address_event(&addr(3, "10.0.0.3", 24), false),
            Some(NetEvent::AddressAdded {
                ifindex: 3,
                address: "10.0.0.3/24".parse().unwrap()
            })
        );
        let mut bad = addr(3, "10.0.0.3", 24);
        bad.header.prefix_len = 40;
        assert_eq!(address_event(&bad, false), None);
        assert_eq!(address_event(&AddressMessage::default(), false), None);
    }

    #[test]
    fn local_attribute_wins_over_peer_address() {
        let mut m = addr(3, "10.0.0.1", 32);
        m.attributes
            .push(AddressAttribute::Local("10.0.0.2".parse().unwrap()));
        let Some(NetEvent::AddressAdded { address, .. }) = address_event(&m, false) else {
            panic!()
        };
        assert_eq!(address.to_string(), "10.0.0.2/32");
    }

    #[test]
    fn table_reports_changes_and_ignores_repeats() {
        let mut t = InterfaceTable::default();
        let up = link_event(&link(3, "eth0", LinkFlags::Up | LinkFlags::LowerUp), false);
        let Some(TableChange::Changed(i)) = t.apply(&up) else {
            panic!()
        };
        assert!(i.up);
        assert_eq!(t.apply(&up), None);
        let a = address_event(&addr(3, "10.0.0.3", 24), false).unwrap();
        let Some(TableChange::Changed(i)) = t.apply(&a) else {
            panic!()
        };
        assert_eq!(i.addresses.len(), 1);
        let down = link_event(&link(3, "eth0", LinkFlags::Up), false);
        let Some(TableChange::Changed(i)) = t.apply(&down) else {
            panic!()
        };
        assert!(!i.up);
        assert_eq!(i.addresses.len(), 1, "addresses survive link down");
        let gone = NetEvent::LinkRemoved {
            ifindex: 3,
            name: "eth0".into(),
        };
        assert_eq!(t.apply(&gone), Some(TableChange::Removed { ifindex: 3 }));
        assert!(t.get(3).is_none());
    }
}
