//! lb.toml parser and validator on arbitrary UTF-8: must return Ok or Err, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let ctx = lb_config::Context {
            hostname: "worker-1".into(),
            check_files: false,
        };
        if let Err(diagnostics) = lb_config::parse_str(text, Path::new("fuzz.toml"), &ctx) {
            // Rendering must not panic either.
            let _ = diagnostics.to_string();
        }
    }
});
