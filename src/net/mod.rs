//! rtnetlink: interfaces, addresses and link state as events (not polling), and adding a
//! static service's IP to `lo`.
//!
//! `mod.rs` turns rtnetlink messages into the model's typed [`NetEvent`]s, which
//! [`InterfaceTable`] (in `lb_core::model::iface`) folds into interface snapshots for the
//! responder. `netlink` does the I/O (dump at start, then the RTNLGRP_LINK / IPV4_IFADDR /
//! IPV6_IFADDR groups).

pub mod netlink;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use crate::model::iface::MacAddr;
pub use crate::model::iface::{InterfaceTable, NetEvent, TableChange};

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
