//! `greffon.toml`: any text parses or is refused naming where.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = greffon_core::Config::parse(text, std::path::Path::new("greffon.toml"));
    }
});
