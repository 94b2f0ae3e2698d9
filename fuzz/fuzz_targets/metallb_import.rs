//! `lbctl import-metallb` on arbitrary input: must return a result, never panic. (That
//! accepted output parses as TOML is checked by the proptests in tests/pure/import_metallb.rs.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lb_metallb::import(text);
    }
});
