//! Building UPDATEs from advertisement intents (pure).
//!
//! Every route carries ORIGIN IGP (routers only do ECMP across equal ORIGINs), AS_PATH empty
//! for iBGP and `[local_asn]` for eBGP (4-octet when the peer has the capability, else
//! 2-octet with AS_TRANS plus AS4_PATH, RFC 6793 §4.2.2), LOCAL_PREF on iBGP only
//! (RFC 4271 §5.1.5: always present there, 100 unless set), communities and large
//! communities when set. IPv4 prefixes go in the classic NLRI field with NEXT_HOP; IPv6 in
//! MP_REACH_NLRI (RFC 4760) with the session's IPv6 address (and, when given, its
//! link-local address, RFC 2545 §3). Prefixes with identical attributes share UPDATEs, each
//! filled up to the message size limit. Attributes are in type-code order, as GoBGP and FRR
//! send them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use thiserror::Error;

use super::codec::{
    AsPath, Attr, CodecOptions, EncodeError, Family, HEADER_LEN, MAX_MESSAGE_LEN, Message,
    MpNextHop, MpReach, MpUnreach, Nlri, Origin, PathAttribute, Update, prefix_wire_len,
};
use super::fsm::Negotiated;
use crate::model::{Community, LargeCommunity};

/// One prefix to announce and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advertisement {
    pub prefix: IpNet,
    /// Usually the session's local address of the prefix's family. An IPv4 next hop for an
    /// IPv6 prefix is sent IPv4-mapped (`::ffff:a.b.c.d`).
    pub next_hop: IpAddr,
    /// iBGP only; ignored for eBGP.
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

/// What the builder needs to know about the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerParams {
    pub local_asn: u32,
    pub ibgp: bool,
    pub four_octet_as: bool,
    pub max_message_len: usize,
    /// Sent after the global IPv6 next hop when set (peers on the same link).
    pub ipv6_link_local: Option<Ipv6Addr>,
}

impl PeerParams {
    pub fn from_negotiated(n: &Negotiated, local_asn: u32) -> Self {
        Self {
            local_asn,
            ibgp: n.ibgp,
            four_octet_as: n.four_octet_as,
            max_message_len: n.codec_options().max_message_len,
            ipv6_link_local: None,
        }
    }

    fn codec(&self) -> CodecOptions {
        CodecOptions {
            four_octet_as: self.four_octet_as,
            max_message_len: self.max_message_len,
        }
    }
}

/// LOCAL_PREF sent to iBGP peers when the advertisement sets none.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BuildError {
    #[error(
        "prefix {prefix}: next hop {next_hop} is IPv6, the prefix IPv4 (RFC 8950 not supported)"
    )]
    NextHopFamily { prefix: IpNet, next_hop: IpAddr },
    #[error("attributes of {prefix} alone exceed the message size: {source}")]
    TooLarge {
        prefix: IpNet,
        #[source]
        source: EncodeError,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    v6: bool,
    next_hop: IpAddr,
    local_pref: Option<u32>,
    communities: Vec<Community>,
    large_communities: Vec<LargeCommunity>,
}

/// Path attributes shared by one group, without MP_REACH_NLRI.
fn base_attributes(peer: &PeerParams, key: &GroupKey) -> Vec<PathAttribute> {
    let mut attrs = vec![PathAttribute::new(Attr::Origin(Origin::Igp))];
    let path = if peer.ibgp {
        AsPath::default()
    } else {
        AsPath::sequence(vec![peer.local_asn])
    };
    let as4 = (!peer.four_octet_as && path.has_4_octet_asn()).then(|| path.clone());
    attrs.push(PathAttribute::new(Attr::AsPath(path)));
    if let (false, IpAddr::V4(nh)) = (key.v6, key.next_hop) {
        attrs.push(PathAttribute::new(Attr::NextHop(nh)));
    }
    if peer.ibgp {
        attrs.push(PathAttribute::new(Attr::LocalPref(
            key.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
        )));
    }
    if !key.communities.is_empty() {
        attrs.push(PathAttribute::new(Attr::Communities(
            key.communities.clone(),
        )));
    }
    if let Some(as4) = as4 {
        attrs.push(PathAttribute::new(Attr::As4Path(as4)));
    }
    if !key.large_communities.is_empty() {
        attrs.push(PathAttribute::new(Attr::LargeCommunities(
            key.large_communities.clone(),
        )));
    }
    attrs
}

/// Insert `attr` keeping type-code order.
fn insert_sorted(attrs: &mut Vec<PathAttribute>, attr: PathAttribute) {
    let at = attrs
        .iter()
        .position(|a| a.attr.type_code() > attr.attr.type_code())
        .unwrap_or(attrs.len());
    attrs.insert(at, attr);
}

fn v6_next_hop(peer: &PeerParams, nh: IpAddr) -> MpNextHop {
    let global = match nh {
        IpAddr::V6(g) => g,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    };
    MpNextHop::V6 {
        global,
        link_local: peer.ipv6_link_local,
    }
}

fn encoded_len(attrs: &[PathAttribute], opts: &CodecOptions) -> Result<usize, EncodeError> {
    let update = Update {
        attributes: attrs.to_vec(),
        ..Default::default()
    };
    let big = CodecOptions {
        max_message_len: usize::MAX,
        ..*opts
    };
    Message::Update(update).encode(&big).map(|b| b.len())
}

/// Encode announcements as UPDATEs: one group per distinct attribute set (in a stable
/// order), each packed into as few messages as the size limit allows.
pub fn build_updates(
    peer: &PeerParams,
    adverts: &[Advertisement],
) -> Result<Vec<Vec<u8>>, BuildError> {
    let mut groups: BTreeMap<GroupKey, Vec<IpNet>> = BTreeMap::new();
    for a in adverts {
        let v6 = matches!(a.prefix, IpNet::V6(_));
        if !v6 && a.next_hop.is_ipv6() {
            return Err(BuildError::NextHopFamily {
                prefix: a.prefix,
                next_hop: a.next_hop,
            });
        }
        let key = GroupKey {
            v6,
            next_hop: a.next_hop,
            local_pref: if peer.ibgp { a.local_pref } else { None },
            communities: a.communities.clone(),
            large_communities: a.large_communities.clone(),
        };
        let list = groups.entry(key).or_default();
        if !list.contains(&a.prefix) {
            list.push(a.prefix);
        }
    }
    let opts = peer.codec();
    let mut out = Vec::new();
    for (key, prefixes) in groups {
        let base = base_attributes(peer, &key);
        let too_large = |source| BuildError::TooLarge {
            prefix: prefixes[0],
            source,
        };
        // Size of everything but the prefixes: header, the two length fields, attributes
        // (with an empty MP_REACH_NLRI for IPv6, whose length may then grow to 2 octets).
        let fixed = if key.v6 {
            let mut attrs = base.clone();
            insert_sorted(&mut attrs, mp_reach_attr(peer, &key, Vec::new()));
            encoded_len(&attrs, &opts).map_err(too_large)?
        } else {
            encoded_len(&base, &opts).map_err(too_large)?
        };
        let mut chunks: Vec<Vec<IpNet>> = Vec::new();
        let mut current: Vec<IpNet> = Vec::new();
        let mut nlri_len = 0usize;
        for p in prefixes.iter() {
            let plen = prefix_wire_len(p);
            let mut total = fixed + nlri_len + plen;
            // MP_REACH_NLRI switches to a 2-octet length past 255 octets of value.
            if key.v6 && mp_value_len(peer, &key) + nlri_len + plen > 255 {
                total += 1;
            }
            if total > peer.max_message_len && !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
                nlri_len = 0;
            }
            nlri_len += plen;
            current.push(*p);
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        for chunk in chunks {
            let update = if key.v6 {
                let mut attrs = base.clone();
                insert_sorted(&mut attrs, mp_reach_attr(peer, &key, chunk.clone()));
                Update {
                    attributes: attrs,
                    ..Default::default()
                }
            } else {
                Update {
                    attributes: base.clone(),
                    nlri: chunk.iter().filter_map(as_v4).collect(),
                    ..Default::default()
                }
            };
            let bytes =
                Message::Update(update)
                    .encode(&opts)
                    .map_err(|source| BuildError::TooLarge {
                        prefix: chunk[0],
                        source,
                    })?;
            out.push(bytes);
        }
    }
    Ok(out)
}

/// Length of an MP_REACH_NLRI value without NLRI.
fn mp_value_len(peer: &PeerParams, _key: &GroupKey) -> usize {
    3 + 1
        + if peer.ipv6_link_local.is_some() {
            32
        } else {
            16
        }
        + 1
}

fn mp_reach_attr(peer: &PeerParams, key: &GroupKey, prefixes: Vec<IpNet>) -> PathAttribute {
    PathAttribute::new(Attr::MpReach(MpReach {
        family: Family::IPV6_UNICAST,
        next_hop: v6_next_hop(peer, key.next_hop),
        nlri: Nlri::Prefixes(prefixes),
    }))
}

fn as_v4(p: &IpNet) -> Option<Ipv4Net> {
    match p {
        IpNet::V4(v4) => Some(*v4),
        IpNet::V6(_) => None,
    }
}

/// Encode withdrawals: IPv4 in the withdrawn routes field, IPv6 in MP_UNREACH_NLRI, packed
/// up to the size limit.
pub fn build_withdrawals(peer: &PeerParams, prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let opts = peer.codec();
    let mut out = Vec::new();
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
        prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
    // Header + withdrawn length + attribute length.
    let fixed_v4 = HEADER_LEN + 4;
    // ... + MP_UNREACH_NLRI header (4 octets, extended length) + AFI/SAFI.
    let fixed_v6 = HEADER_LEN + 4 + 4 + 3;
    for (list, fixed, v6) in [(v4, fixed_v4, false), (v6, fixed_v6, true)] {
        let mut chunk: Vec<IpNet> = Vec::new();
        let mut len = 0usize;
        let mut chunks = Vec::new();
        for p in list {
            let plen = prefix_wire_len(&p);
            if fixed + len + plen > peer.max_message_len && !chunk.is_empty() {
                chunks.push(std::mem::take(&mut chunk));
                len = 0;
            }
            len += plen;
            chunk.push(p);
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        for chunk in chunks {
            let update = if v6 {
                Update {
                    attributes: vec![PathAttribute::new(Attr::MpUnreach(MpUnreach {
                        family: Family::IPV6_UNICAST,
                        withdrawn: Nlri::Prefixes(chunk),
                    }))],
                    ..Default::default()
                }
            } else {
                Update {
                    withdrawn: chunk.iter().filter_map(as_v4).collect(),
                    ..Default::default()
                }
            };
            // Sized above: a chunk always fits.
            if let Ok(bytes) = Message::Update(update).encode(&opts) {
                out.push(bytes);
            }
        }
    }
    out
}

/// End-of-RIB marker (RFC 4724 §2).
pub fn end_of_rib(family: Family) -> Vec<u8> {
    let update = if family == Family::IPV4_UNICAST {
        Update::default()
    } else {
        Update {
            attributes: vec![PathAttribute::new(Attr::MpUnreach(MpUnreach {
                family,
                withdrawn: Nlri::Prefixes(Vec::new()),
            }))],
            ..Default::default()
        }
    };
    let opts = CodecOptions {
        four_octet_as: true,
        max_message_len: MAX_MESSAGE_LEN,
    };
    // An empty UPDATE is 23 octets, 29 with the empty MP_UNREACH_NLRI (FRR's and GoBGP's
    // bytes, tests/pure/bgp_fixtures.rs): encoding cannot fail.
    Message::Update(update).encode(&opts).unwrap_or_default()
}

/// Prefix of `len` bits holding `ip` (aggregation length, e.g. /32 or /24).
pub fn aggregate(ip: IpAddr, len: u8) -> Option<IpNet> {
    match ip {
        IpAddr::V4(a) => Ipv4Net::new(a, len).ok().map(|n| IpNet::V4(n.trunc())),
        IpAddr::V6(a) => ipnet::Ipv6Net::new(a, len)
            .ok()
            .map(|n| IpNet::V6(n.trunc())),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::bgp::codec::{AS_TRANS, MAX_MESSAGE_LEN, decode};

    fn peer(ibgp: bool, four_octet_as: bool, local_asn: u32) -> PeerParams {
        PeerParams {
            local_asn,
            ibgp,
            four_octet_as,
            max_message_len: MAX_MESSAGE_LEN,
            ipv6_link_local: None,
        }
    }

    fn advert(prefix: &str, next_hop: &str) -> Advertisement {
        Advertisement {
            prefix: prefix.parse().unwrap(),
            next_hop: next_hop.parse().unwrap(),
            local_pref: Some(300),
            communities: vec![Community::NO_EXPORT],
            large_communities: vec![],
        }
    }

    fn decode_all(p: &PeerParams, msgs: &[Vec<u8>]) -> Vec<Update> {
        msgs.iter()
            .map(|m| {
                assert!(m.len() <= p.max_message_len);
                match decode(m, &p.codec()) {
                    Ok(Message::Update(u)) => {
                        assert_eq!(u.error_action(), None, "{:?}", u.issues);
                        u
                    }
                    other => panic!("not a clean UPDATE: {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn ibgp_update_has_empty_as_path_and_local_pref() {
        let p = peer(true, true, 64500);
        let u = &decode_all(
            &p,
            &build_updates(&p, &[advert("192.0.2.1/32", "10.0.0.1")]).unwrap(),
        )[0];
        assert_eq!(u.origin(), Some(Origin::Igp));
        assert!(u.as_path().unwrap().segments.is_empty());
        assert_eq!(u.local_pref(), Some(300));
        assert_eq!(u.next_hop(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(u.communities(), &[Community::NO_EXPORT]);
    }

    #[test]
    fn ibgp_update_without_local_pref_sends_the_default() {
        let p = peer(true, true, 64500);
        let mut a = advert("192.0.2.1/32", "10.0.0.1");
        a.local_pref = None;
        let u = &decode_all(&p, &build_updates(&p, &[a]).unwrap())[0];
        assert_eq!(u.local_pref(), Some(DEFAULT_LOCAL_PREF));
    }

    #[test]
    fn ebgp_update_has_our_asn_and_no_local_pref() {
        let p = peer(false, true, 4_200_000_000);
        let u = &decode_all(
            &p,
            &build_updates(&p, &[advert("192.0.2.1/32", "10.0.0.1")]).unwrap(),
        )[0];
        assert_eq!(u.as_path().unwrap().segments[0].asns, vec![4_200_000_000]);
        assert_eq!(u.local_pref(), None);
        assert!(u.attr(crate::bgp::codec::attr_type::AS4_PATH).is_none());
    }

    #[test]
    fn ebgp_update_to_a_2_octet_peer_sends_as_trans_and_as4_path() {
        let p = peer(false, false, 4_200_000_000);
        let u = &decode_all(
            &p,
            &build_updates(&p, &[advert("192.0.2.1/32", "10.0.0.1")]).unwrap(),
        )[0];
        assert_eq!(
            u.as_path().unwrap().segments[0].asns,
            vec![u32::from(AS_TRANS)]
        );
        assert_eq!(
            u.attr(crate::bgp::codec::attr_type::AS4_PATH),
            Some(&Attr::As4Path(AsPath::sequence(vec![4_200_000_000])))
        );
        // A 2-octet ASN needs no AS4_PATH.
        let p2 = peer(false, false, 64500);
        let u2 = &decode_all(
            &p2,
            &build_updates(&p2, &[advert("192.0.2.1/32", "10.0.0.1")]).unwrap(),
        )[0];
        assert_eq!(u2.as_path().unwrap().segments[0].asns, vec![64500]);
        assert!(u2.attr(crate::bgp::codec::attr_type::AS4_PATH).is_none());
    }

    #[test]
    fn ipv6_prefix_goes_in_mp_reach_with_the_link_local_next_hop_when_given() {
        let mut p = peer(false, true, 64500);
        p.ipv6_link_local = Some("fe80::1".parse().unwrap());
        let u = &decode_all(
            &p,
            &build_updates(&p, &[advert("2001:db8::1/128", "2001:db8::ff")]).unwrap(),
        )[0];
        assert!(u.nlri.is_empty());
        assert_eq!(u.next_hop(), None);
        let mp = u.mp_reach().unwrap();
        assert_eq!(
            mp.next_hop,
            MpNextHop::V6 {
                global: "2001:db8::ff".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap())
            }
        );
        assert_eq!(
            u.announced(),
            vec!["2001:db8::1/128".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn ipv6_prefix_with_ipv4_next_hop_uses_the_mapped_address() {
        let p = peer(false, true, 64500);
        let u = &decode_all(
            &p,
            &build_updates(&p, &[advert("2001:db8::1/128", "10.0.0.1")]).unwrap(),
        )[0];
        assert_eq!(
            u.mp_reach().unwrap().next_hop,
            MpNextHop::V6 {
                global: "::ffff:10.0.0.1".parse().unwrap(),
                link_local: None
            }
        );
    }

    #[test]
    fn ipv4_prefix_with_ipv6_next_hop_is_refused() {
        let p = peer(false, true, 64500);
        assert!(matches!(
            build_updates(&p, &[advert("192.0.2.1/32", "2001:db8::1")]),
            Err(BuildError::NextHopFamily { .. })
        ));
    }

    #[test]
    fn prefixes_with_identical_attributes_share_one_update() {
        let p = peer(true, true, 64500);
        let adverts: Vec<_> = (1..=10)
            .map(|i| advert(&format!("192.0.2.{i}/32"), "10.0.0.1"))
            .collect();
        let msgs = build_updates(&p, &adverts).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(decode_all(&p, &msgs)[0].nlri.len(), 10);
    }

    #[test]
    fn different_attributes_make_separate_updates() {
        let p = peer(true, true, 64500);
        let mut b = advert("192.0.2.2/32", "10.0.0.1");
        b.local_pref = Some(50);
        let msgs = build_updates(&p, &[advert("192.0.2.1/32", "10.0.0.1"), b]).unwrap();
        assert_eq!(msgs.len(), 2);
    }

    #[test]
    fn many_prefixes_are_packed_into_full_updates_under_4096_octets() {
        for v6 in [false, true] {
            let p = peer(true, true, 64500);
            let adverts: Vec<_> = (0..3000u32)
                .map(|i| {
                    if v6 {
                        advert(&format!("2001:db8::{:x}/128", i), "2001:db8::ff")
                    } else {
                        let ip = Ipv4Addr::from(0x0a00_0000 + i);
                        advert(&format!("{ip}/32"), "10.255.0.1")
                    }
                })
                .collect();
            let msgs = build_updates(&p, &adverts).unwrap();
            let updates = decode_all(&p, &msgs);
            let announced: Vec<IpNet> = updates.iter().flat_map(|u| u.announced()).collect();
            assert_eq!(
                announced,
                adverts.iter().map(|a| a.prefix).collect::<Vec<_>>()
            );
            // Every message but the last is nearly full: the next prefix would not fit.
            let per_prefix = if v6 { 17 } else { 5 };
            for m in &msgs[..msgs.len() - 1] {
                assert!(
                    m.len() + per_prefix > MAX_MESSAGE_LEN,
                    "v6={v6} len {}",
                    m.len()
                );
            }
        }
    }

    #[test]
    fn withdrawals_pack_ipv4_classic_and_ipv6_in_mp_unreach() {
        let p = peer(false, true, 64500);
        let mut prefixes: Vec<IpNet> = (0..2000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
            .collect();
        prefixes
            .extend((0..500u32).map(|i| format!("2001:db8::{i:x}/128").parse::<IpNet>().unwrap()));
        let msgs = build_withdrawals(&p, &prefixes);
        let updates = decode_all(&p, &msgs);
        let withdrawn: Vec<IpNet> = updates
            .iter()
            .flat_map(|u| u.withdrawn_prefixes())
            .collect();
        assert_eq!(withdrawn, prefixes);
        assert!(msgs.len() >= 4);
    }

    #[test]
    fn end_of_rib_markers_decode_as_such() {
        for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            let Ok(Message::Update(u)) = decode(&end_of_rib(f), &CodecOptions::default()) else {
                panic!("EoR")
            };
            assert_eq!(u.end_of_rib(), Some(f));
        }
    }

    #[test]
    fn aggregate_truncates_to_the_aggregation_length() {
        assert_eq!(
            aggregate("10.1.2.3".parse().unwrap(), 24),
            Some("10.1.2.0/24".parse().unwrap())
        );
        assert_eq!(aggregate("10.1.2.3".parse().unwrap(), 33), None);
    }
}
