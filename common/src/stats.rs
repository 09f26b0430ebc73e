//! A queue's counters, as the scripts keep them in Redis: how many jobs were
//! dead-lettered, retried and stalled, and how long completed jobs ran and
//! waited (histograms with fixed buckets), since the queue began
//! ([`QueueKeys::stats`](crate::QueueKeys::stats)); and what they gained per
//! minute (the last 24 hours) and per hour (the last 30 days).
//!
//! Writing them costs one `HINCRBY` per kind of event in a script call (a
//! batch of completions reads and writes the buckets it touched once); the
//! reap script files the per-minute and per-hour deltas once per minute. The
//! text forms read here are written by `count_durations` and
//! `snapshot_stats` in `scripts/prelude.lua`. A completed job's run time is
//! measured by its worker (from receiving the lease to the handler's end,
//! on its monotonic clock), its wait time by Redis' clock (from the add to
//! the start of the completing attempt).

use std::collections::HashMap;

/// Upper bounds (ms, inclusive) of the run and wait time buckets; a last
/// bucket holds everything above. The worker picks each completed job's
/// buckets ([`bucket_of`]) and the complete script counts them.
pub const BUCKET_BOUNDS_MS: [u64; 16] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000];

/// Buckets of a [`Histogram`]: one per bound and one above them all.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// The counter fields of the run time buckets, in bucket order.
pub const RUN_BUCKET_FIELDS: [&str; BUCKETS] = [
    "rb1", "rb2", "rb3", "rb4", "rb5", "rb6", "rb7", "rb8", "rb9", "rb10", "rb11", "rb12", "rb13", "rb14",
    "rb15", "rb16", "rb17",
];

/// The counter fields of the wait time buckets, in bucket order.
pub const WAIT_BUCKET_FIELDS: [&str; BUCKETS] = [
    "wb1", "wb2", "wb3", "wb4", "wb5", "wb6", "wb7", "wb8", "wb9", "wb10", "wb11", "wb12", "wb13", "wb14",
    "wb15", "wb16", "wb17",
];

/// The bucket of a duration: the first bound at or above `ms`, or the last
/// bucket, above every bound.
pub fn bucket_of(ms: u64) -> usize {
    BUCKET_BOUNDS_MS.iter().position(|&bound| ms <= bound).unwrap_or(BUCKET_BOUNDS_MS.len())
}

/// A distribution of durations in fixed buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Durations per bucket (not cumulative): `counts[i]` counts those at
    /// most `BUCKET_BOUNDS_MS[i]` and above the bound before; the last,
    /// those above every bound.
    pub counts: [u64; BUCKETS],
    /// The sum of the durations, ms.
    pub sum_ms: u64,
}

impl Histogram {
    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bound (ms) under which at least `q` (0 to 1) of the durations
    /// fall, the way Prometheus' `histogram_quantile` reads buckets (`None`:
    /// nothing counted; `u64::MAX`: above the last bound).
    pub fn quantile_bound_ms(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let wanted = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Some(BUCKET_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
    }
}

/// A queue's counters: totals since the queue began, or what one minute or
/// hour added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs dead-lettered by a failed last attempt, a permanent error or too
    /// many stalls (cancelled jobs are not counted).
    pub failed: u64,
    /// Failed attempts after which the job was scheduled to run again.
    pub retried: u64,
    /// Leases that expired (the worker crashed, was killed or lost Redis).
    pub stalled: u64,
    /// Run times of completed jobs: from the start of the attempt that
    /// completed to its acknowledgement.
    pub run: Histogram,
    /// Wait times of completed jobs: from the add (delays included) to the
    /// start of the attempt that completed.
    pub wait: Histogram,
}

impl QueueStats {
    /// Jobs completed (every completion has a run time).
    pub fn completed(&self) -> u64 {
        self.run.count()
    }

    /// Read the counters from their fields (`HGETALL` of the stats hash).
    /// Unknown fields (a newer version's) and unreadable values are skipped:
    /// counters are best-effort figures and never stop a page or a scrape.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        let mut s = QueueStats::default();
        for (name, value) in fields {
            // A negative delta comes from counters reset by hand: count nothing.
            let v = value.max(0) as u64;
            match name {
                "f" => s.failed += v,
                "r" => s.retried += v,
                "s" => s.stalled += v,
                "rs" => s.run.sum_ms += v,
                "ws" => s.wait.sum_ms += v,
                other => {
                    let (hist, bucket) = match other.split_at_checked(2) {
                        Some(("rb", b)) => (&mut s.run, b),
                        Some(("wb", b)) => (&mut s.wait, b),
                        _ => continue,
                    };
                    if let Some(i) = bucket.parse::<usize>().ok().filter(|i| (1..=BUCKETS).contains(i)) {
                        hist.counts[i - 1] += v;
                    }
                }
            }
        }
        s
    }

    /// Read the text form of a series slot: `field=value` pairs separated
    /// by spaces.
    pub fn from_text(text: &str) -> Self {
        Self::from_fields(text.split(' ').filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k, v.parse().ok()?))
        }))
    }

    /// The counters of both.
    pub fn plus(mut self, other: &QueueStats) -> Self {
        self.failed += other.failed;
        self.retried += other.retried;
        self.stalled += other.stalled;
        self.run.add(&other.run);
        self.wait.add(&other.wait);
        self
    }

    /// What `self` gained over `earlier` (counters never go down; a reset
    /// gives 0).
    pub fn since(&self, earlier: &QueueStats) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let hist = |a: &Histogram, b: &Histogram| {
            let mut h = Histogram { counts: a.counts, sum_ms: d(a.sum_ms, b.sum_ms) };
            for (x, y) in h.counts.iter_mut().zip(b.counts) {
                *x = x.saturating_sub(y);
            }
            h
        };
        QueueStats {
            failed: d(self.failed, earlier.failed),
            retried: d(self.retried, earlier.retried),
            stalled: d(self.stalled, earlier.stalled),
            run: hist(&self.run, &earlier.run),
            wait: hist(&self.wait, &earlier.wait),
        }
    }
}

/// The length of a series slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Minutes, kept 24 hours.
    Minute,
    /// Hours, kept 30 days.
    Hour,
}

impl Resolution {
    /// The slot's length in ms.
    pub fn millis(self) -> u64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    /// Slots kept.
    pub fn kept(self) -> u64 {
        match self {
            Resolution::Minute => 1_440,
            Resolution::Hour => 720,
        }
    }
}

/// One slot of a series: what the counters gained from `start_ms` for one
/// minute or hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsPoint {
    /// When the slot starts (ms since the epoch).
    pub start_ms: u64,
    /// What the counters gained in it.
    pub stats: QueueStats,
}

/// Build a series of `slots` points ending with the slot holding `now_ms`:
/// `filed` are the series hash's slot fields that were read (missing ones:
/// nothing changed), `current` what gained since the last snapshot (it goes
/// to the current slot, which the reap script files only once it ended).
pub fn series(
    resolution: Resolution,
    now_ms: u64,
    slots: usize,
    filed: &HashMap<u64, QueueStats>,
    current: QueueStats,
) -> Vec<StatsPoint> {
    let len = resolution.millis();
    let now_slot = now_ms / len;
    (0..slots as u64)
        .rev()
        .map(|back| {
            let slot = now_slot.saturating_sub(back);
            let mut stats = filed.get(&slot).copied().unwrap_or_default();
            if back == 0 {
                stats = stats.plus(&current);
            }
            StatsPoint { start_ms: slot * len, stats }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_at_or_above_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5), 0);
        assert_eq!(bucket_of(6), 1);
        assert_eq!(bucket_of(3_600_000), BUCKETS - 2);
        assert_eq!(bucket_of(3_600_001), BUCKETS - 1);
        for (i, f) in RUN_BUCKET_FIELDS.iter().enumerate() {
            assert_eq!(*f, format!("rb{}", i + 1));
            assert_eq!(WAIT_BUCKET_FIELDS[i], format!("wb{}", i + 1));
        }
    }

    #[test]
    fn text_form_reads_counters_and_buckets() {
        let s = QueueStats::from_text("f=2 r=3 s=1 rb1=4 rb17=1 rs=70 wb2=5 ws=40 zz=9 rb99=1 bad");
        assert_eq!((s.failed, s.retried, s.stalled), (2, 3, 1));
        assert_eq!(s.completed(), 5);
        assert_eq!(s.run.counts[0], 4);
        assert_eq!(s.run.counts[16], 1);
        assert_eq!(s.wait.counts[1], 5);
        assert_eq!((s.run.sum_ms, s.wait.sum_ms), (70, 40));
    }

    #[test]
    fn quantiles_follow_the_buckets() {
        let s = QueueStats::from_text("rb3=9 rb8=1");
        assert_eq!(s.run.quantile_bound_ms(0.5), Some(25));
        assert_eq!(s.run.quantile_bound_ms(1.0), Some(1_000));
        assert_eq!(s.wait.quantile_bound_ms(0.5), None);
    }

    #[test]
    fn a_series_fills_quiet_slots_with_zero_and_adds_the_current_gain() {
        let mut filed = HashMap::new();
        filed.insert(9, QueueStats::from_text("f=1"));
        let now = 10 * 60_000 + 5;
        let points = series(Resolution::Minute, now, 3, &filed, QueueStats::from_text("r=2"));
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].start_ms, 8 * 60_000);
        assert_eq!(points[0].stats, QueueStats::default());
        assert_eq!(points[1].stats.failed, 1);
        assert_eq!(points[2].stats.retried, 2);
    }
}
