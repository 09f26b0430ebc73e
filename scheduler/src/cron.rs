//! Cron expressions in a time zone, and the fire times they produce.
//!
//! Expressions have 5 fields (`minute hour day-of-month month day-of-week`) or
//! 6 with seconds first; `@hourly`-style nicknames work too. They are read
//! with the `croner` crate (Vixie-cron semantics; names like `MON`, `JAN`;
//! `L`, `W` and `#` modifiers).
//!
//! # Daylight saving time
//! Fire times are computed on the wall clock of the schedule's zone, then
//! turned into UTC instants:
//! - **Spring forward** (a wall-clock hour is skipped): a fixed-time schedule
//!   whose time falls in the gap (say `30 2 * * *` in Europe/Berlin on the last
//!   Sunday of March) fires once, at the first instant after the gap (03:00
//!   local). Interval schedules (`*/15 * * * *`) simply have no ticks in the
//!   skipped hour.
//! - **Fall back** (a wall-clock hour repeats): a fixed-time schedule fires
//!   once, at the first of the two instants. Interval schedules (a wildcard or
//!   step in the seconds, minutes or hours field) fire in both copies of the
//!   hour, because those are distinct real instants.
//!
//! Every tick is then identified by its UTC instant, so the two copies of a
//! repeated hour never collide.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::{Error, Result};

/// A parsed cron expression bound to a time zone.
#[derive(Clone)]
pub struct CronSpec {
    expression: String,
    zone: Tz,
    cron: Cron,
}

impl fmt::Debug for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSpec").field("expression", &self.expression).field("zone", &self.zone).finish()
    }
}

impl CronSpec {
    /// Parse `expression` (5 or 6 fields, or a nickname) in the IANA `zone`.
    /// `schedule` names the schedule in error messages.
    pub fn parse(schedule: &str, expression: &str, zone: &str) -> Result<Self> {
        let zone_parsed: Tz = zone
            .parse()
            .map_err(|_| Error::UnknownTimeZone { name: schedule.to_owned(), zone: zone.to_owned() })?;
        let bad = |reason: String| Error::InvalidCron {
            name: schedule.to_owned(),
            expression: expression.to_owned(),
            reason,
        };
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if !trimmed.starts_with('@') {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 && fields != 6 {
                return Err(bad(format!(
                    "it has {fields} fields; use 5 (minute hour day month weekday) or 6 (second first)"
                )));
            }
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(trimmed).map_err(|e| bad(e.to_string()))?;
        let spec = Self { expression: trimmed.to_owned(), zone: zone_parsed, cron };
        // A pattern such as `0 0 30 2 *` (30 February) parses but never fires.
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("a valid date");
        if spec.next_after(probe).is_none() {
            return Err(bad("it never matches a real date".into()));
        }
        Ok(spec)
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// Fire times strictly after `after`, in order.
    pub fn fire_times_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut cursor = after;
        std::iter::from_fn(move || {
            let next = self.next_after(cursor)?;
            cursor = next;
            Some(next)
        })
    }

    /// The latest `k` fire times in `(after, upto]`, latest first.
    pub fn latest_between(&self, after: DateTime<Utc>, upto: DateTime<Utc>, k: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = upto.with_timezone(&self.zone);
        let mut inclusive = true;
        while out.len() < k {
            let Ok(t) = self.cron.find_previous_occurrence(&cursor, inclusive) else { break };
            let utc = t.with_timezone(&Utc);
            if utc <= after {
                break;
            }
            out.push(utc);
            cursor = t;
            inclusive = false;
        }
        out
    }

    /// Fire times in `(after, upto]`, at most `limit` of them (the earliest).
    pub fn fire_times_between(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        self.fire_times_after(after).take_while(|t| *t <= upto).take(limit).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn times(spec: &CronSpec, after: &str, n: usize) -> Vec<String> {
        spec.fire_times_after(utc(after))
            .take(n)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn five_and_six_fields() {
        let s = CronSpec::parse("a", "0 2 * * *", "UTC").unwrap();
        assert_eq!(times(&s, "2026-11-23T01:00:00Z", 2), ["2026-11-23T02:00:00Z", "2026-11-24T02:00:00Z"]);
        let s = CronSpec::parse("a", "*/20 * * * * *", "UTC").unwrap();
        assert_eq!(
            times(&s, "2026-11-23T01:00:00Z", 3),
            ["2026-11-23T01:00:20Z", "2026-11-23T01:00:40Z", "2026-11-23T01:01:00Z"]
        );
    }

    #[test]
    fn nicknames() {
        let s = CronSpec::parse("a", "@daily", "UTC").unwrap();
        assert_eq!(times(&s, "2026-11-23T01:00:00Z", 1), ["2026-11-24T00:00:00Z"]);
        let s = CronSpec::parse("a", "@hourly", "Europe/Berlin").unwrap();
        assert_eq!(times(&s, "2026-11-23T01:10:00Z", 1), ["2026-11-23T02:00:00Z"]);
    }

    #[test]
    fn next_is_strictly_after() {
        let s = CronSpec::parse("a", "0 2 * * *", "UTC").unwrap();
        assert_eq!(s.next_after(utc("2026-11-23T02:00:00Z")), Some(utc("2026-11-24T02:00:00Z")));
    }

    #[test]
    fn zone_shifts_the_instant() {
        let s = CronSpec::parse("a", "0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: CET = UTC+1.
        assert_eq!(times(&s, "2026-11-23T00:00:00Z", 1), ["2026-11-23T01:00:00Z"]);
    }

    #[test]
    fn spring_forward_fixed_time_in_the_gap_fires_once_after_it() {
        // Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = CronSpec::parse("a", "30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            times(&s, "2026-03-28T12:00:00Z", 3),
            // 28th 02:30 CET was before `after`; 29th: the gap, so 03:00 CEST = 01:00Z;
            // 30th: 02:30 CEST = 00:30Z.
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
        );
    }

    #[test]
    fn spring_forward_interval_skips_the_missing_hour() {
        let s = CronSpec::parse("a", "0 * * * *", "Europe/Berlin").unwrap();
        // 00:00Z = 01:00 CET, 01:00Z = 03:00 CEST (02:00 local does not exist).
        assert_eq!(
            times(&s, "2026-03-28T23:30:00Z", 3),
            ["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
        );
    }

    #[test]
    fn fall_back_fixed_time_fires_once_at_the_first_instant() {
        // Berlin, 25 October 2026: 03:00 CEST goes back to 02:00 CET; 02:30
        // happens at 00:30Z and again at 01:30Z.
        let s = CronSpec::parse("a", "30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(times(&s, "2026-10-24T12:00:00Z", 2), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    }

    #[test]
    fn fall_back_interval_fires_in_both_copies_of_the_hour() {
        let s = CronSpec::parse("a", "30 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            times(&s, "2026-10-24T23:00:00Z", 4),
            ["2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"]
        );
    }

    #[test]
    fn bad_input_gets_clear_errors() {
        let e = CronSpec::parse("s", "0 2 * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("4 fields"), "{e}");
        let e = CronSpec::parse("s", "61 * * * *", "UTC").unwrap_err();
        assert!(matches!(e, Error::InvalidCron { .. }), "{e}");
        let e = CronSpec::parse("s", "", "UTC").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = CronSpec::parse("s", "0 2 * * *", "Mars/Olympus").unwrap_err().to_string();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        let e = CronSpec::parse("s", "0 0 30 2 *", "UTC").unwrap_err().to_string();
        assert!(e.contains("never matches"), "{e}");
        let e = CronSpec::parse("s", "0 0 0 1 1 * 2030", "UTC").unwrap_err().to_string();
        assert!(e.contains("7 fields"), "{e}");
    }

    #[test]
    fn latest_between_walks_back() {
        let s = CronSpec::parse("a", "*/10 * * * * *", "UTC").unwrap();
        let v = s.latest_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:01:00Z"), 3);
        assert_eq!(
            v,
            [utc("2026-01-01T00:01:00Z"), utc("2026-01-01T00:00:50Z"), utc("2026-01-01T00:00:40Z")]
        );
        let v = s.latest_between(utc("2026-01-01T00:00:30Z"), utc("2026-01-01T00:01:05Z"), 10);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn between_is_half_open_and_bounded() {
        let s = CronSpec::parse("a", "* * * * * *", "UTC").unwrap();
        let v = s.fire_times_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:10Z"), 100);
        assert_eq!(v.len(), 10);
        assert_eq!(v[0], utc("2026-01-01T00:00:01Z"));
        assert_eq!(
            s.fire_times_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:10Z"), 3).len(),
            3
        );
    }
}
