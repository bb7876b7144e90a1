//! Fire times: a trigger checked once and turned into "the next instant
//! after t". Cron expressions are evaluated by croner in the task's zone
//! (a fixed time inside the spring gap fires right after it). In the
//! autumn overlap, as in Vixie cron, a job with a fixed hour fires once
//! per wall-clock time (at its first occurrence), while a job whose hour
//! field is a wildcard (`*`, `*/2`) keeps firing in real time.

use crate::TaskError;
use crate::model::Trigger;
use chrono::{DateTime, Duration, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A trigger ready to compute fire times.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    Cron {
        cron: Box<Cron>,
        tz: Tz,
        /// The hour field is a wildcard: the repeated hour of an autumn
        /// overlap fires again (real time), rather than once.
        hourly: bool,
    },
    Interval {
        every: Duration,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
    },
    Date(DateTime<Utc>),
}

impl Schedule {
    /// Checks `trigger`; every problem names its field (`trigger.expr`,
    /// `trigger.tz`, ...).
    pub(crate) fn compile(trigger: &Trigger) -> Result<Schedule, TaskError> {
        match trigger {
            Trigger::Cron { expr, tz } => {
                let cron = parse_cron(expr)?;
                let tz = match tz {
                    Some(name) => parse_zone(name)?,
                    None => {
                        return Err(TaskError::invalid(
                            "trigger.tz",
                            "missing (it is filled with the host's zone when the task is saved)",
                        ));
                    }
                };
                Ok(Schedule::Cron {
                    cron: Box::new(cron),
                    tz,
                    hourly: hour_is_wildcard(expr),
                })
            }
            Trigger::Interval {
                every_s,
                start,
                end,
            } => {
                if *every_s == 0 {
                    return Err(TaskError::invalid("trigger.every_s", "must be at least 1"));
                }
                let every = Duration::seconds(i64::try_from(*every_s).unwrap_or(i64::MAX));
                let start = start.ok_or_else(|| {
                    TaskError::invalid("trigger.start", "missing (filled when the task is saved)")
                })?;
                if let Some(end) = end
                    && *end < start
                {
                    return Err(TaskError::invalid("trigger.end", "is before trigger.start"));
                }
                Ok(Schedule::Interval {
                    every,
                    start,
                    end: *end,
                })
            }
            Trigger::Date { at } => Ok(Schedule::Date(*at)),
        }
    }

    /// The first fire time strictly after `t`, if any.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz, hourly } => {
                let mut t = t;
                loop {
                    let next = cron
                        .find_next_occurrence(&t.with_timezone(tz), false)
                        .ok()?;
                    // The second occurrence of a wall-clock time the
                    // overlap repeats already fired at its first.
                    let repeated = matches!(
                        tz.from_local_datetime(&next.naive_local()),
                        LocalResult::Ambiguous(first, _) if first != next
                    );
                    if *hourly || !repeated {
                        return Some(next.with_timezone(&Utc));
                    }
                    t = next.with_timezone(&Utc);
                }
            }
            Schedule::Interval { every, start, end } => {
                let next = if t < *start {
                    *start
                } else {
                    let every_ms = every.num_milliseconds().max(1);
                    let k = (t - *start).num_milliseconds() / every_ms + 1;
                    *start + Duration::milliseconds(k.saturating_mul(every_ms))
                };
                match end {
                    Some(end) if next > *end => None,
                    _ => Some(next),
                }
            }
            Schedule::Date(at) => (*at > t).then_some(*at),
        }
    }

    /// The fire time a task saved at `now` starts from. A date already
    /// past still fires once (late), as a missed fire would.
    pub(crate) fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Date(at) => Some(*at),
            Schedule::Interval { start, .. } if *start >= now => Some(*start),
            _ => self.next_after(now),
        }
    }
}

/// The first `n` fire times of `trigger` strictly after `after` (what
/// `greffon task next` previews), or why the trigger is invalid, naming
/// the field.
pub fn fire_times(
    trigger: &Trigger,
    after: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<Utc>>, TaskError> {
    let schedule = Schedule::compile(trigger)?;
    Ok(
        std::iter::successors(schedule.next_after(after), |t| schedule.next_after(*t))
            .take(n)
            .collect(),
    )
}

/// Whether the expression's hour field is a wildcard (`*`, `*/n`), or the
/// alias `@hourly`: such a job follows real time through a clock change.
fn hour_is_wildcard(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    match fields.as_slice() {
        [alias] => alias.eq_ignore_ascii_case("@hourly"),
        [_, hour, _, _, _] | [_, _, hour, _, _, _] => hour.starts_with('*'),
        _ => false,
    }
}

/// Five fields, or six with seconds first, or an alias (`@daily`).
fn parse_cron(expr: &str) -> Result<Cron, TaskError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr.trim())
        .map_err(|e| {
            TaskError::invalid(
                "trigger.expr",
                format!("'{expr}' is not a cron expression: {e}"),
            )
        })
}

pub(crate) fn parse_zone(name: &str) -> Result<Tz, TaskError> {
    name.parse::<Tz>().map_err(|_| {
        TaskError::invalid(
            "trigger.tz",
            format!("'{name}' is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)"),
        )
    })
}

/// Whether `name` is an IANA zone greffon knows.
pub fn check_zone(name: &str) -> Result<(), TaskError> {
    parse_zone(name).map(|_| ())
}

/// The host's IANA zone: `$TZ`, else the `/etc/localtime` link, else
/// `/etc/timezone`, else UTC.
pub fn host_zone() -> String {
    let known = |name: &str| name.parse::<Tz>().is_ok().then(|| name.to_string());
    if let Ok(tz) = std::env::var("TZ")
        && let Some(z) = known(tz.trim_start_matches(':'))
    {
        return z;
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime")
        && let Some(z) = target
            .to_str()
            .and_then(|t| t.split_once("zoneinfo/"))
            .and_then(|(_, name)| known(name))
    {
        return z;
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .and_then(|s| known(s.trim()))
        .unwrap_or_else(|| "UTC".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::compile(&Trigger::Cron {
            expr: expr.into(),
            tz: Some(tz.into()),
        })
        .expect("valid")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    /// Midnight to midnight of `date` in `tz`, in UTC.
    fn local_day(tz: Tz, date: chrono::NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let midnight = |d: chrono::NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .expect("midnight exists")
                .with_timezone(&Utc)
        };
        (midnight(date), midnight(date.succ_opt().expect("next day")))
    }

    #[test]
    fn a_daily_0230_job_fires_once_each_day_across_dst() {
        // (zone, spring-forward day, autumn fall-back day)
        let table = [
            ("Europe/Paris", "2026-03-29", "2026-10-25"),
            ("America/New_York", "2026-03-08", "2026-11-01"),
        ];
        for (zone, spring, autumn) in table {
            let tz: Tz = zone.parse().expect("zone");
            let s = cron("30 2 * * *", zone);
            for (day, expected) in [(spring, "03:00"), (autumn, "02:30")] {
                let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("date");
                for (d, want) in [
                    (date.pred_opt().expect("day before"), "02:30"),
                    (date, expected),
                    (date.succ_opt().expect("day after"), "02:30"),
                ] {
                    let (from, to) = local_day(tz, d);
                    let mut got = Vec::new();
                    let mut t = from;
                    while let Some(n) = s.next_after(t).filter(|n| *n < to) {
                        got.push(n);
                        t = n;
                    }
                    assert_eq!(got.len(), 1, "{zone} {d}: {got:?}");
                    let local = got[0].with_timezone(&tz);
                    assert_eq!(local.format("%H:%M").to_string(), want, "{zone} {d}");
                }
            }
            // In the overlap, the first 02:30 (summer time) is the one.
            let date = chrono::NaiveDate::parse_from_str(autumn, "%Y-%m-%d").expect("date");
            let (from, _) = local_day(tz, date);
            let fire = s.next_after(from).expect("fires");
            let first = tz
                .from_local_datetime(&date.and_hms_opt(2, 30, 0).expect("time"))
                .earliest()
                .expect("exists")
                .with_timezone(&Utc);
            assert_eq!(fire, first, "{zone}");
        }
    }

    /// Found by the property test: fixed times in the overlap fired at
    /// both occurrences of their wall-clock time.
    #[test]
    fn in_the_autumn_overlap_fixed_hours_fire_once_and_wildcard_hours_follow_real_time() {
        let tz: Tz = "Europe/Paris".parse().expect("zone");
        let date = chrono::NaiveDate::from_ymd_opt(2026, 10, 25).expect("date");
        let (from, to) = local_day(tz, date);
        let fires = |expr: &str| {
            let s = cron(expr, "Europe/Paris");
            let mut got = Vec::new();
            let mut t = from;
            while let Some(n) = s.next_after(t).filter(|n| *n < to) {
                got.push(n.with_timezone(&tz).format("%H:%M%:z").to_string());
                t = n;
            }
            got
        };
        assert_eq!(fires("0,1 2 * * *"), ["02:00+02:00", "02:01+02:00"]);
        let half_hours: Vec<String> = fires("*/30 * * * *")
            .into_iter()
            .filter(|f| f.starts_with("02:"))
            .collect();
        assert_eq!(
            half_hours,
            ["02:00+02:00", "02:30+02:00", "02:00+01:00", "02:30+01:00"]
        );
    }

    #[test]
    fn seconds_and_aliases_are_accepted_and_bad_input_names_the_field() {
        let s = cron("*/10 * * * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:00:10Z"))
        );
        let daily = cron("@daily", "UTC");
        assert_eq!(
            daily.next_after(utc("2026-01-01T10:00:00Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
        let e = Schedule::compile(&Trigger::Cron {
            expr: "61 * * * *".into(),
            tz: Some("UTC".into()),
        })
        .expect_err("refused");
        assert_eq!(e.field(), Some("trigger.expr"));
        let e = Schedule::compile(&Trigger::Cron {
            expr: "0 9 * * *".into(),
            tz: Some("Mars/Olympus".into()),
        })
        .expect_err("refused");
        assert_eq!(e.field(), Some("trigger.tz"));
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn intervals_count_from_their_start_and_stop_at_their_end() {
        let s = Schedule::compile(&Trigger::Interval {
            every_s: 60,
            start: Some(utc("2026-01-01T00:00:00Z")),
            end: Some(utc("2026-01-01T00:03:00Z")),
        })
        .expect("valid");
        assert_eq!(
            s.first(utc("2025-12-31T00:00:00Z")),
            Some(utc("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-01-01T00:01:30Z")),
            Some(utc("2026-01-01T00:02:00Z"))
        );
        assert_eq!(s.next_after(utc("2026-01-01T00:03:00Z")), None);
        let e = Schedule::compile(&Trigger::Interval {
            every_s: 0,
            start: Some(utc("2026-01-01T00:00:00Z")),
            end: None,
        })
        .expect_err("refused");
        assert_eq!(e.field(), Some("trigger.every_s"));
    }

    #[test]
    fn a_date_fires_once() {
        let s = Schedule::compile(&Trigger::Date {
            at: utc("2026-05-01T08:00:00Z"),
        })
        .expect("valid");
        assert_eq!(
            s.first(utc("2026-06-01T00:00:00Z")),
            Some(utc("2026-05-01T08:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2026-05-01T08:00:00Z")), None);
    }
}
