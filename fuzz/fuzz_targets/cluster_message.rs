#![no_main]
//! raft-lite datagram decoder: raw bytes, and the same bytes re-signed so the body decoder
//! (behind the MAC) is reached too.
use lb_core::cluster::wire::{append_mac, Authenticator};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-cluster-key";

fuzz_target!(|data: &[u8]| {
    let mut a = Authenticator::new(KEY, "me", ["me", "a", "b"]);
    let _ = a.open(data);
    let _ = a.open(&append_mac(data.to_vec(), KEY));
});
