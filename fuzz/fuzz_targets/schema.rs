//! A schema and arguments (two JSON documents split by a NUL byte): what
//! normalizes compiles, and checking any arguments against it never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(schema), Some(args)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(schema), Ok(args)) = (
        serde_json::from_slice::<serde_json::Value>(schema),
        serde_json::from_slice::<serde_json::Value>(args),
    ) else {
        return;
    };
    if let Ok((source, schema)) = greffon_core::normalize(Some(&schema)) {
        let checker =
            greffon_core::InputSchema::compile(source, schema).expect("normalized compiles");
        let _ = checker.check(args);
    }
});
