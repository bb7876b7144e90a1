//! A plugin's `meta` as the worker reports it: any JSON parses or is
//! refused, and the schema inside normalizes or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = greffon_core::PluginMeta::parse(Some(&v), None);
        let _ = greffon_core::normalize(v.get("inputs").and_then(|i| i.get("schema")));
    }
});
