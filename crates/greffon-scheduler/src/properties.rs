//! Property tests of the triggers (issue #18): for any interval or cron
//! expression, in zones with daylight saving, successive fire times
//! strictly increase and keep to what the trigger says, across the days
//! clocks change. `scripts/fuzz` runs them longer.

use crate::model::Trigger;
use crate::trigger::{Schedule, parse_zone};
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use proptest::prelude::*;

/// Zones with daylight saving (Lord Howe moves by 30 minutes), and UTC.
const ZONES: &[&str] = &[
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "UTC",
];

/// An instant within a few days of a 2026 clock change, or anywhere in
/// 2000–2040.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let changes = [
        Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 1, 5, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 4, 5, 0, 0, 0).unwrap(),
    ];
    prop_oneof![
        (
            prop::sample::select(changes.to_vec()),
            -3 * 86_400i64..3 * 86_400
        )
            .prop_map(|(c, s)| c + Duration::seconds(s)),
        (946_684_800i64..2_208_988_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
    ]
}

/// A cron field: `*`, a value, a list, a range or a step within `0..n`.
fn field(n: u32) -> impl Strategy<Value = (String, Vec<u32>)> {
    prop_oneof![
        Just(("*".to_string(), (0..n).collect())),
        (0..n).prop_map(|v| (v.to_string(), vec![v])),
        prop::collection::btree_set(0..n, 1..4).prop_map(|s| {
            let v: Vec<u32> = s.into_iter().collect();
            (
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
                v,
            )
        }),
        (0..n, 0..n).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            (format!("{lo}-{hi}"), (lo..=hi).collect())
        }),
        (1..n.min(13)).prop_map(move |s| (format!("*/{s}"), (0..n).step_by(s as usize).collect())),
    ]
}

proptest! {
    #[test]
    fn interval_fires_are_the_grid_from_start_and_stop_at_end(
        every_s in 1u64..100_000,
        start in instant(),
        from in instant(),
        end_after in prop::option::of(0i64..10_000_000),
    ) {
        let end = end_after.map(|s| start + Duration::seconds(s));
        let schedule = Schedule::compile(&Trigger::Interval { every_s, start: Some(start), end })
            .expect("valid");
        let mut t = from;
        for _ in 0..20 {
            let Some(next) = schedule.next_after(t) else {
                prop_assert!(end.is_some(), "an open interval always fires again");
                break;
            };
            prop_assert!(next > t);
            prop_assert!(next >= start);
            prop_assert_eq!((next - start).num_seconds() % every_s as i64, 0);
            prop_assert!(end.is_none_or(|e| next <= e));
            t = next;
        }
    }

    /// Fires strictly increase, fall on the expression's minutes and hours
    /// in wall-clock time — except a fire moved out of a spring gap,
    /// which comes at the first minute after it — and, unless the hour is
    /// a wildcard, never repeat a wall-clock time of the autumn overlap.
    /// (This found fixed times repeated in the overlap: `0,1 2 * * *` in
    /// Europe/Paris fired at 02:01 twice on 2026-10-25.)
    #[test]
    fn cron_fires_increase_and_match_their_fields_across_clock_changes(
        (minute, minutes) in field(60),
        (hour, hours) in field(24),
        zone in prop::sample::select(ZONES),
        from in instant(),
    ) {
        let expr = format!("{minute} {hour} * * *");
        let trigger = Trigger::Cron { expr: expr.clone(), tz: Some(zone.to_string()) };
        let schedule = Schedule::compile(&trigger).expect("valid");
        let tz = parse_zone(zone).expect("zone");
        let mut t = from;
        let mut seen_local = Vec::new();
        for _ in 0..30 {
            let next = schedule.next_after(t).expect("a daily expression always fires");
            prop_assert!(next > t, "{} in {}: {} after {}", expr, zone, next, t);
            prop_assert!(next - t <= Duration::days(2), "{} in {}: a gap of {}", expr, zone, next - t);
            let local = next.with_timezone(&tz);
            let on_grid = minutes.contains(&local.minute()) && hours.contains(&local.hour());
            // Moved out of a gap: the wall clock just before did not exist.
            let one_minute_before = (local.naive_local() - Duration::minutes(1)).and_local_timezone(tz);
            let after_gap = matches!(one_minute_before, chrono::LocalResult::None);
            prop_assert!(on_grid || after_gap, "{} in {}: fired at {}", expr, zone, local);
            prop_assert!(local.second() == 0);
            let wall = local.naive_local();
            prop_assert!(hour.starts_with('*') || !seen_local.contains(&wall), "{} in {}: {} twice", expr, zone, wall);
            seen_local.push(wall);
            t = next;
        }
    }

    #[test]
    fn any_expression_text_is_parsed_or_refused_naming_the_field(expr in ".{0,30}") {
        let trigger = Trigger::Cron { expr, tz: Some("UTC".into()) };
        if let Err(e) = Schedule::compile(&trigger) {
            prop_assert!(e.to_string().contains("trigger.expr"), "{}", e);
        }
    }
}
