//! Framer + decoder of BGP messages, with every codec option; decoded messages re-encode.
#![no_main]

use lb_core::bgp::codec::{
    CodecOptions, Framer, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message, decode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for opts in [
        CodecOptions {
            four_octet_as: true,
            max_message_len: MAX_MESSAGE_LEN,
        },
        CodecOptions {
            four_octet_as: false,
            max_message_len: MAX_MESSAGE_LEN,
        },
        CodecOptions {
            four_octet_as: true,
            max_message_len: MAX_EXTENDED_MESSAGE_LEN,
        },
    ] {
        let mut framer = Framer::new(opts.max_message_len);
        framer.push(data);
        while let Ok(Some(frame)) = framer.next_message() {
            match decode(&frame, &opts) {
                Ok(msg) => {
                    let clean = !matches!(&msg, Message::Update(u) if u.error_action().is_some());
                    if let (true, Ok(bytes)) = (clean, msg.encode(&opts)) {
                        assert_eq!(decode(&bytes, &opts).ok(), Some(msg));
                    }
                }
                Err(e) => {
                    let _ = e.notification();
                }
            }
        }
        let _ = decode(data, &opts);
    }
});
