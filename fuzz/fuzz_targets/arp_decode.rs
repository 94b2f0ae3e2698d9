#![no_main]
//! ARP decoding never panics; whatever decodes re-encodes to the same 42 octets.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = lb_core::l2::arp::decode(data) {
        let encoded = frame.encode();
        assert_eq!(&encoded[..], &data[..lb_core::l2::arp::FRAME_LEN]);
    }
});
