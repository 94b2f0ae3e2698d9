#![no_main]
//! NDP decoding never panics, and what passes validation has hop limit 255 and a
//! non-multicast target; the responder core survives the same bytes as a received frame.

use std::time::Instant;

use lb_core::l2::responder::{Claim, Input, Params, Responder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = lb_core::l2::ndp::decode(data) {
        assert_eq!(frame.hop_limit, 255);
        assert!(!frame.target().is_multicast());
    }
    let now = Instant::now();
    let mut r = Responder::new(Params::default());
    r.step(
        now,
        Input::OwnershipChanged(vec![Claim {
            ip: "fd00::1".parse().unwrap(),
            interfaces: vec![],
            services: vec![],
        }]),
    );
    r.step(
        now,
        Input::FrameReceived {
            ifindex: 1,
            bytes: data.to_vec(),
        },
    );
});
