//! The codec against frames captured from arping, ndisc6 and the Linux kernel
//! (tests/fixtures/l2/, made by capture.sh there).

use std::net::{Ipv4Addr, Ipv6Addr};

use lb::l2::arp::{self, ArpOp};
use lb::l2::ndp::{self, NdpMessage};
use lb::l2::{MacAddr, parse_hex};

const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0b]);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/l2/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_hex(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn arping_request_decodes_as_request_for_target() {
    let f = arp::decode(&fixture("arping_request")).unwrap();
    assert_eq!(f.op, ArpOp::Request);
    assert_eq!(f.eth.dst, MacAddr::BROADCAST);
    assert_eq!(f.sender_mac, MAC_A);
    assert_eq!(f.sender_ip, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(f.target_ip, Ipv4Addr::new(10, 99, 0, 2));
    assert!(!f.is_gratuitous());
}

#[test]
fn our_arp_reply_equals_the_kernels_byte_for_byte() {
    let request = arp::decode(&fixture("arping_request")).unwrap();
    assert_eq!(
        arp::build_reply(&request, MAC_B),
        fixture("kernel_arp_reply")
    );
}

#[test]
fn our_gratuitous_arp_equals_arping_unsolicited_byte_for_byte() {
    let g = fixture("arping_unsolicited");
    assert!(arp::decode(&g).unwrap().is_gratuitous());
    assert_eq!(arp::build_gratuitous(MAC_A, Ipv4Addr::new(10, 99, 0, 1)), g);
}

#[test]
fn arping_advert_decodes_as_gratuitous_reply() {
    let f = arp::decode(&fixture("arping_advert")).unwrap();
    assert_eq!(f.op, ArpOp::Reply);
    assert!(f.is_gratuitous());
    assert_eq!(f.sender_ip, Ipv4Addr::new(10, 99, 0, 1));
}

#[test]
fn ndisc6_solicitation_decodes_with_link_local_source_and_option() {
    let f = ndp::decode(&fixture("ndisc6_ns")).unwrap();
    assert_eq!(f.hop_limit, 255);
    assert_eq!(f.src_ip, "fe80::ff:fe00:a".parse::<Ipv6Addr>().unwrap());
    assert_eq!(f.dst_ip, ndp::solicited_node(&"fd99::2".parse().unwrap()));
    let NdpMessage::Solicitation(ns) = f.message else {
        panic!("not an NS: {f:?}")
    };
    assert_eq!(ns.target, "fd99::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ns.source_ll, Some(MAC_A));
}

#[test]
fn our_neighbor_advertisement_equals_the_kernels_byte_for_byte() {
    let ns = ndp::decode(&fixture("ndisc6_ns")).unwrap();
    let ours = ndp::build_na_reply(&ns, "fd99::2".parse().unwrap(), MAC_B);
    assert_eq!(ours, fixture("kernel_na"));
}

#[test]
fn kernel_na_decodes_as_solicited_override() {
    let f = ndp::decode(&fixture("kernel_na")).unwrap();
    let NdpMessage::Advertisement(na) = f.message else {
        panic!("not an NA: {f:?}")
    };
    assert!(na.solicited && na.override_flag && !na.router);
    assert_eq!(na.target_ll, Some(MAC_B));
}

#[test]
fn kernel_dad_probe_decodes_as_dad_skipping_the_nonce_option() {
    let f = ndp::decode(&fixture("kernel_dad_ns")).unwrap();
    assert!(f.is_dad());
    assert_eq!(f.target(), "fd99::3".parse::<Ipv6Addr>().unwrap());
    let NdpMessage::Solicitation(ns) = f.message else {
        panic!("not an NS: {f:?}")
    };
    assert_eq!(ns.source_ll, None);
}

#[test]
fn our_unsolicited_na_equals_the_kernels_byte_for_byte() {
    let ours = ndp::build_unsolicited_na(MAC_B, "fd99::3".parse().unwrap());
    assert_eq!(ours, fixture("kernel_unsolicited_na"));
}

#[test]
fn every_truncation_and_single_byte_mutation_of_fixtures_is_handled_without_panic() {
    for name in [
        "arping_request",
        "kernel_arp_reply",
        "arping_unsolicited",
        "arping_advert",
        "ndisc6_ns",
        "kernel_na",
        "kernel_dad_ns",
        "kernel_unsolicited_na",
    ] {
        let f = fixture(name);
        for len in 0..=f.len() {
            let _ = arp::decode(&f[..len]);
            let _ = ndp::decode(&f[..len]);
        }
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut m = f.clone();
                m[i] ^= 1 << bit;
                let _ = arp::decode(&m);
                let _ = ndp::decode(&m);
            }
        }
    }
}
