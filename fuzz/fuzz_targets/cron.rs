//! A cron expression in a zone (the first byte picks it): refused naming
//! the field, or its fire times strictly increase.
#![no_main]

use chrono::{TimeZone, Utc};
use greffon_scheduler::{Trigger, fire_times};
use libfuzzer_sys::fuzz_target;

const ZONES: [&str; 4] = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "UTC",
];

fuzz_target!(|data: &[u8]| {
    let Some((zone, expr)) = data.split_first() else {
        return;
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let trigger = Trigger::Cron {
        expr: expr.to_string(),
        tz: Some(ZONES[*zone as usize % ZONES.len()].to_string()),
    };
    let start = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
    match fire_times(&trigger, start, 50) {
        Ok(times) => {
            let mut last = start;
            for t in times {
                assert!(t > last, "{expr}: {t} after {last}");
                last = t;
            }
        }
        Err(e) => assert!(e.to_string().contains("trigger."), "{e}"),
    }
});
