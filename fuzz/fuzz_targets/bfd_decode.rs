#![no_main]
//! BFD Control packet decoding never panics; whatever decodes re-encodes to the same 24
//! octets (Length normalised to 24).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = lb_core::bfd::codec::decode(data) {
        let mut expect = data[..lb_core::bfd::codec::PACKET_LEN].to_vec();
        expect[3] = lb_core::bfd::codec::PACKET_LEN as u8; // Length > 24 decodes; we write 24
        assert_eq!(&p.encode()[..], &expect[..]);
    }
});
