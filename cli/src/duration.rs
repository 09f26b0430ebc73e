//! Durations and times on the command line: parsing (shared with job payloads,
//! in quern-common) and short human renderings.

use std::time::Duration;

pub(crate) use quern_common::duration::parse_duration;

/// A short human rendering: `350ms`, `1.2s`, `2m05s`, `3h02m`.
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A Unix time in milliseconds as `2026-11-23 07:26:17.123Z` (UTC).
pub(crate) fn format_unix_ms(ms: u64) -> String {
    // Past chrono's last representable instant (year 262143) only by a
    // corrupt or forged timestamp: show the raw number then.
    match i64::try_from(ms).ok().and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
        None => format!("{ms} ms after the Unix epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(format_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_unix_ms(1_795_000_000_123), "2026-11-18 11:06:40.123Z");
        assert_eq!(format_unix_ms(951_782_400_007), "2000-02-29 00:00:00.007Z");
        assert_eq!(format_unix_ms(253_402_300_799_999), "9999-12-31 23:59:59.999Z");
    }
}
