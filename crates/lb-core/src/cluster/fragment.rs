//! raft-lite messages larger than one datagram (issue 14): fragments (kind 13) and their
//! reassembly. Pure: time is passed in.
//!
//! A message whose datagram would exceed [`MAX_DATAGRAM`] (a host with many IPs: a report of
//! its eligible and held IPs, a heartbeat, renewal, grant or release of its share) is cut
//! into `count` fragments, each a datagram of its own with the usual header and its own
//! HMAC, sequence numbers `first`, `first + 1`, … `first + count − 1`:
//!
//! ```text
//!  0      4    5   6        6+n    14+n         22+n 23+n  24+n  25+n              len-32   len
//!  +------+----+---+--------+------+------------+----+-----+-----+-----------------+--------+
//!  |"LBRL"| 2  | n | sender | term | seq        | 13 |index|count| chunk           | HMAC-  |
//!  |      |    |u8 |        | u64  | = first    | u8 | u8  | u8  | (1 byte or more)| SHA256 |
//!  |      |    |   |        |      |   + index  |    |     |     |                 |        |
//!  +------+----+---+--------+------+------------+----+-----+-----+-----------------+--------+
//!  \_____________________________ authenticated by the MAC _______________________/
//! ```
//!
//! `2 ≤ count ≤ MAX_FRAGMENTS`, `index < count`. The chunks in index order are the message's
//! *payload*: its kind byte and body exactly as one datagram would carry them after the
//! header (`wire` module comment), so a reassembled message decodes like any other; every
//! fragment carries the message's term. The message is identified by its sender and
//! `first = seq − index`: sequence numbers are per sender and never reused, so two messages
//! never share one.
//!
//! Receiver ([`Reassembler`], one per sender, fed only fragments whose MAC and anti-replay
//! window checked): a message is handed on once every fragment arrived, never in part. At
//! most [`MAX_PARTIALS`] incomplete messages per sender (a fragment of a newer message evicts
//! the oldest; one of an older message than all of them is dropped), each dropped
//! [`TIMEOUT`] after its first fragment arrived; so a sender holds at most `MAX_PARTIALS ×
//! MAX_FRAGMENTS` datagrams' worth of memory, and a forger without the key none at all (its
//! fragments fail the MAC before they get here). A lost fragment loses the message, as a
//! lost datagram did: the protocol is built for loss (docs/raft-lite.md, "Wire format").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{DropReason, MAX_DATAGRAM};

/// The kind byte of a fragment.
pub const KIND: u8 = 13;
/// Fragments per message at most: every fragment of a message sent back to back stays
/// inside the receiver's 64-entry anti-replay window.
pub const MAX_FRAGMENTS: usize = 64;
/// Incomplete messages kept per sender.
pub const MAX_PARTIALS: usize = 2;
/// An incomplete message is dropped this long after its first fragment arrived (several
/// heartbeats: a message that late is of no use any more).
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Kind, index, count.
pub const HEAD_LEN: usize = 3;

/// One fragment's body (after the kind byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub index: u8,
    pub count: u8,
    pub chunk: &'a [u8],
}

/// Parses a fragment body (the bytes after the kind byte, before the MAC).
pub fn parse(body: &[u8]) -> Result<Fragment<'_>, DropReason> {
    let m = DropReason::Malformed;
    let [index, count, chunk @ ..] = body else {
        return Err(m);
    };
    if !(2..=MAX_FRAGMENTS).contains(&usize::from(*count)) || index >= count || chunk.is_empty() {
        return Err(m);
    }
    Ok(Fragment {
        index: *index,
        count: *count,
        chunk,
    })
}

/// Cuts `payload` (a message's kind byte and body) into fragment payloads (kind 13, index,
/// count, chunk) of at most `chunk` payload bytes each; `None` if that takes more than
/// [`MAX_FRAGMENTS`].
pub fn split(payload: &[u8], chunk: usize) -> Option<Vec<Vec<u8>>> {
    let chunk = chunk.max(1);
    let count = payload.len().div_ceil(chunk);
    if !(2..=MAX_FRAGMENTS).contains(&count) {
        return None;
    }
    Some(
        payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut f = Vec::with_capacity(HEAD_LEN + c.len());
                f.extend_from_slice(&[KIND, i as u8, count as u8]);
                f.extend_from_slice(c);
                f
            })
            .collect(),
    )
}

/// The largest message payload (kind byte and body) a sender named `sender_len` bytes can
/// send in fragments.
pub fn max_payload(header_len: usize) -> usize {
    MAX_FRAGMENTS * (MAX_DATAGRAM - header_len - HEAD_LEN - super::wire::MAC_LEN)
}

/// What a [`Reassembler`] did (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Fragments taken (authentic, well-formed).
    pub fragments: u64,
    /// Messages made whole.
    pub reassembled: u64,
    /// Incomplete messages dropped after [`TIMEOUT`].
    pub expired: u64,
    /// Incomplete messages dropped for a newer one, and fragments of a message older than
    /// every one kept.
    pub evicted: u64,
}

impl ReassemblyStats {
    pub fn add(&mut self, o: &ReassemblyStats) {
        self.fragments += o.fragments;
        self.reassembled += o.reassembled;
        self.expired += o.expired;
        self.evicted += o.evicted;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Partial {
    term: u64,
    started: Instant,
    chunks: Vec<Option<Vec<u8>>>,
    missing: usize,
    bytes: usize,
}

/// Incomplete messages of one sender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reassembler {
    /// By first sequence number.
    partials: BTreeMap<u64, Partial>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// Takes fragment `f` (sequence number `seq`, header term `term`) of this sender, whose
    /// MAC and anti-replay window checked. Returns the message's term and payload once it is
    /// whole. `Malformed` when it contradicts earlier fragments of its message (another count
    /// or term; the message is dropped).
    pub fn add(
        &mut self,
        now: Instant,
        seq: u64,
        term: u64,
        f: Fragment<'_>,
    ) -> Result<Option<(u64, Vec<u8>)>, DropReason> {
        self.expire(now);
        let first = seq
            .checked_sub(u64::from(f.index))
            .ok_or(DropReason::Malformed)?;
        self.stats.fragments += 1;
        if !self.partials.contains_key(&first) {
            if self.partials.len() >= MAX_PARTIALS {
                let oldest = *self.partials.keys().next().expect("MAX_PARTIALS > 0");
                self.stats.evicted += 1;
                if first < oldest {
                    return Ok(None); // older than every message being assembled
                }
                self.partials.remove(&oldest);
            }
            self.partials.insert(
                first,
                Partial {
                    term,
                    started: now,
                    chunks: vec![None; usize::from(f.count)],
                    missing: usize::from(f.count),
                    bytes: 0,
                },
            );
        }
        let p = self.partials.get_mut(&first).expect("inserted above");
        if p.chunks.len() != usize::from(f.count) || p.term != term {
            self.partials.remove(&first);
            return Err(DropReason::Malformed);
        }
        let slot = &mut p.chunks[usize::from(f.index)];
        if slot.is_some() {
            return Ok(None); // a duplicate (the replay window normally stops it earlier)
        }
        *slot = Some(f.chunk.to_vec());
        p.missing -= 1;
        p.bytes += f.chunk.len();
        if p.missing > 0 {
            return Ok(None);
        }
        let p = self.partials.remove(&first).expect("present");
        let mut payload = Vec::with_capacity(p.bytes);
        for c in p.chunks.into_iter().flatten() {
            payload.extend_from_slice(&c);
        }
        self.stats.reassembled += 1;
        Ok(Some((p.term, payload)))
    }

    /// Drops incomplete messages whose first fragment came [`TIMEOUT`] or more before `now`.
    pub fn expire(&mut self, now: Instant) {
        let before = self.partials.len();
        self.partials
            .retain(|_, p| now.saturating_duration_since(p.started) < TIMEOUT);
        self.stats.expired += (before - self.partials.len()) as u64;
    }

    /// Chunk bytes held in incomplete messages.
    pub fn held_bytes(&self) -> usize {
        self.partials.values().map(|p| p.bytes).sum()
    }

    /// Incomplete messages held.
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        crate::test_origin()
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// Feeds fragment payloads (as `split` made them) to `r`, sequence numbers from `first`.
    fn feed(
        r: &mut Reassembler,
        now: Instant,
        first: u64,
        parts: &[Vec<u8>],
        order: &[usize],
    ) -> Vec<Option<(u64, Vec<u8>)>> {
        order
            .iter()
            .map(|&i| {
                let f = parse(&parts[i][1..]).expect("fragment");
                r.add(now, first + i as u64, 5, f).expect("accepted")
            })
            .collect()
    }

    #[test]
    fn fragment_bytes_match_the_documented_layout() {
        let parts = split(&[1, 2, 3, 4, 5], 2).expect("split");
        assert_eq!(
            parts,
            vec![
                vec![KIND, 0, 3, 1, 2],
                vec![KIND, 1, 3, 3, 4],
                vec![KIND, 2, 3, 5]
            ]
        );
        assert_eq!(
            parse(&parts[1][1..]),
            Ok(Fragment {
                index: 1,
                count: 3,
                chunk: &[3, 4]
            })
        );
    }

    #[test]
    fn split_refuses_one_fragment_and_more_than_the_maximum() {
        assert_eq!(
            split(&payload(10), 10),
            None,
            "fits one datagram: not split"
        );
        assert!(split(&payload(64 * 10), 10).is_some());
        assert_eq!(split(&payload(64 * 10 + 1), 10), None);
    }

    #[test]
    fn fragments_in_any_order_give_the_message_once_all_arrived() {
        let msg = payload(1000);
        let parts = split(&msg, 128).expect("split");
        assert_eq!(parts.len(), 8);
        let mut r = Reassembler::default();
        let order = [7, 0, 3, 1, 6, 2, 5, 4];
        let got = feed(&mut r, t0(), 100, &parts, &order);
        assert!(got[..7].iter().all(Option::is_none), "not before the last");
        assert_eq!(got[7], Some((5, msg)));
        assert_eq!(r.partials(), 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.stats().reassembled, 1);
    }

    #[test]
    fn a_duplicate_fragment_is_ignored_and_the_message_is_delivered_once() {
        let msg = payload(300);
        let parts = split(&msg, 100).expect("split");
        let mut r = Reassembler::default();
        let got = feed(&mut r, t0(), 10, &parts, &[0, 0, 1, 1, 2, 2]);
        let delivered: Vec<_> = got.into_iter().flatten().collect();
        assert_eq!(delivered, vec![(5, msg)]);
    }

    #[test]
    fn a_lost_fragment_loses_only_its_message_which_expires() {
        let parts = split(&payload(300), 100).expect("split");
        let mut r = Reassembler::default();
        assert!(
            feed(&mut r, t0(), 10, &parts, &[0, 2])
                .iter()
                .all(Option::is_none)
        );
        assert_eq!((r.partials(), r.held_bytes()), (1, 200));
        // The next message (sequence numbers after it) is whole on its own.
        let msg2 = payload(250);
        let parts2 = split(&msg2, 100).expect("split");
        let got = feed(&mut r, t0(), 13, &parts2, &[0, 1, 2]);
        assert_eq!(got[2], Some((5, msg2)));
        // The incomplete one is gone after the timeout.
        r.expire(t0() + TIMEOUT);
        assert_eq!((r.partials(), r.held_bytes()), (0, 0));
        assert_eq!(r.stats().expired, 1);
    }

    #[test]
    fn incomplete_messages_per_sender_are_bounded_newest_kept() {
        let mut r = Reassembler::default();
        let parts = split(&payload(300), 100).expect("split");
        // Ten messages, each missing its last fragment.
        for m in 0..10u64 {
            feed(&mut r, t0(), 100 + 3 * m, &parts, &[0, 1]);
            assert!(r.partials() <= MAX_PARTIALS);
            assert!(r.held_bytes() <= MAX_PARTIALS * 200);
        }
        assert_eq!(r.stats().evicted, 8);
        // The newest two are the ones kept: their last fragments complete them.
        assert!(feed(&mut r, t0(), 100 + 3 * 9, &parts, &[2])[0].is_some());
        assert!(feed(&mut r, t0(), 100 + 3 * 8, &parts, &[2])[0].is_some());
        // A fragment of an older message than every one kept is dropped without state.
        feed(&mut r, t0(), 200, &parts, &[0]);
        feed(&mut r, t0(), 210, &parts, &[0]);
        assert!(feed(&mut r, t0(), 100, &parts, &[2])[0].is_none());
        assert_eq!(r.partials(), 2);
    }

    #[test]
    fn fragments_that_disagree_on_count_or_term_drop_their_message() {
        let mut r = Reassembler::default();
        let a = split(&payload(300), 100).expect("split"); // 3 fragments
        let b = split(&payload(400), 100).expect("split"); // 4 fragments
        feed(&mut r, t0(), 10, &a, &[0]);
        let f = parse(&b[1][1..]).expect("fragment");
        assert_eq!(r.add(t0(), 11, 5, f), Err(DropReason::Malformed));
        assert_eq!(r.partials(), 0);
        feed(&mut r, t0(), 10, &a, &[0]);
        let f = parse(&a[1][1..]).expect("fragment");
        assert_eq!(r.add(t0(), 11, 6, f), Err(DropReason::Malformed));
        assert_eq!(r.partials(), 0);
    }

    #[test]
    fn malformed_fragment_headers_are_refused() {
        for body in [
            &[][..],
            &[0],
            &[0, 2],         // no chunk
            &[2, 2, 9],      // index ≥ count
            &[0, 1, 9],      // a message of one fragment is never fragmented
            &[0, 65, 9],     // over MAX_FRAGMENTS
            &[0, 255, 1, 2], // likewise
        ] {
            assert_eq!(parse(body), Err(DropReason::Malformed), "{body:?}");
        }
        let mut r = Reassembler::default();
        let f = parse(&[3, 4, 1]).expect("fragment");
        assert_eq!(
            r.add(t0(), 2, 1, f),
            Err(DropReason::Malformed),
            "seq < index"
        );
    }

    proptest::proptest! {
        /// Whatever authentic fragments arrive in whatever order (duplicates, losses, other
        /// messages interleaved), memory stays bounded and every message delivered is one
        /// that was sent, whole.
        #[test]
        fn reassembly_delivers_only_whole_messages_with_bounded_memory(
            sizes in proptest::collection::vec(2usize..2_000, 1..6),
            ops in proptest::collection::vec((0usize..6, 0usize..64, 0u64..3), 0..200),
        ) {
            let chunk = 100;
            let mut r = Reassembler::default();
            let mut msgs = Vec::new();
            let mut first = 1000u64;
            for (k, n) in sizes.iter().enumerate() {
                let mut p = payload(*n + 101);
                p[0] = k as u8;
                let parts = split(&p, chunk).expect("split");
                msgs.push((first, p, parts.clone()));
                first += parts.len() as u64;
            }
            for (m, i, dt) in ops {
                let (first, p, parts) = &msgs[m % msgs.len()];
                let i = i % parts.len();
                let now = t0() + Duration::from_millis(300 * dt);
                let f = parse(&parts[i][1..]).expect("fragment");
                if let Some((term, whole)) = r.add(now, first + i as u64, 5, f).expect("authentic") {
                    proptest::prop_assert_eq!(term, 5);
                    proptest::prop_assert_eq!(&whole, p);
                }
                proptest::prop_assert!(r.partials() <= MAX_PARTIALS);
                proptest::prop_assert!(r.held_bytes() <= MAX_PARTIALS * MAX_FRAGMENTS * chunk);
            }
        }
    }
}
