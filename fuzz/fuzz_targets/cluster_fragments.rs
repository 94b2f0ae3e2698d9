#![no_main]
//! raft-lite fragment reassembly (kind 13): the input is a sequence of authentic fragments
//! (each re-signed, so every one reaches the reassembler) with arbitrary index, count,
//! sequence number, term, chunk and arrival time. Never panics; memory stays bounded.
use std::time::{Duration, Instant};

use lb_core::cluster::fragment::{MAX_FRAGMENTS, MAX_PARTIALS};
use lb_core::cluster::message::{Body, Message};
use lb_core::cluster::wire::{append_mac, encode, Authenticator, MAC_LEN, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-cluster-key";

fuzz_target!(|data: &[u8]| {
    let mut a = Authenticator::new(KEY, "me", ["me", "a"]);
    let t0 = Instant::now();
    let mut seq = 1_000u64;
    let mut ms = 0u64;
    let mut rest = data;
    // Record: seq step, term, index, count, time step (ms), chunk length, chunk.
    while let [step, term, index, count, dt, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        seq = seq.wrapping_add(u64::from(*step)).wrapping_sub(8);
        ms += u64::from(*dt);
        let mut d = encode(
            "a",
            seq,
            &Message {
                term: u64::from(*term % 4),
                body: Body::PreVote { version: 0 },
            },
            KEY,
        );
        d.truncate(d.len() - MAC_LEN - 1); // the header, up to the kind byte
        d.extend_from_slice(&[13, *index, *count]);
        d.extend_from_slice(chunk);
        let d = append_mac(d, KEY);
        let _ = a.receive(t0 + Duration::from_millis(ms), &d);
        assert!(a.reassembly_held_bytes() <= MAX_PARTIALS * MAX_FRAGMENTS * MAX_DATAGRAM);
    }
});
