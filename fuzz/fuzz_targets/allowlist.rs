//! An allowlist entry and a URL (two lines): parsing and checking never
//! panic, and an allowed URL names a host and an allowed port.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (entry, url) = text
        .split_once('\n')
        .unwrap_or((text, "http://example.com/"));
    if let Ok(pattern) = greffon_core::Pattern::parse(entry) {
        let list = greffon_core::Allowlist::effective(None, Some(&[pattern]));
        if let Ok((_, allowed)) = list.check_str(url) {
            assert!(!allowed.host.is_empty());
        }
    }
});
