//! A queue's rate limit: at most `max` jobs start per window of `per`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::{Error, Result};

/// The longest window a rate limit may have.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most `max` jobs of a queue start (are leased to a worker, retries
/// included) in one window of `per`, across all its workers. A window opens
/// with the first start after the previous one closed, so two windows may
/// follow each other closely: over any span of `per`, at most `2 * max` start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    max: u32,
    per: Duration,
}

impl RateLimit {
    /// A limit of `max` starts (at least 1) per `per` (1 ms to 7 days, whole
    /// milliseconds).
    pub fn new(max: u32, per: Duration) -> Result<Self> {
        if max == 0 {
            return Err(Error::InvalidOptions("a rate limit allows at least 1 job per window".into()));
        }
        if per < Duration::from_millis(1) || per > MAX_WINDOW || !per.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(Error::InvalidOptions(format!(
                "a rate limit's window must be whole milliseconds from 1ms to 7d, not {per:?}"
            )));
        }
        Ok(Self { max, per })
    }

    /// Jobs that may start per window.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The window.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// As stored in the queue's meta hash: `<max> <window ms>`.
    pub fn to_field(&self) -> String {
        format!("{} {}", self.max, self.per.as_millis())
    }

    /// Read the stored form; `None` if it is not one.
    pub fn from_field(text: &str) -> Option<Self> {
        let (max, ms) = text.split_once(' ')?;
        Self::new(max.parse().ok()?, Duration::from_millis(ms.parse().ok()?)).ok()
    }
}

/// Written `<max>/<window>`, e.g. `100/1m`, `5/1s`, `1/500ms`.
impl FromStr for RateLimit {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::InvalidOptions(format!("rate limit {text:?}: {why}; write e.g. 100/1m or 5/1s"))
        };
        let (max, per) = text.split_once('/').ok_or_else(|| bad("no '/'".into()))?;
        let max: u32 =
            max.trim().parse().map_err(|_| bad(format!("{:?} is not a whole number of jobs", max.trim())))?;
        let per = parse_duration(per.trim()).map_err(bad)?;
        Self::new(max, per)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.per.as_millis();
        let (n, unit) = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(size, _)| ms.is_multiple_of(*size))
            .map_or((ms, "ms"), |(size, unit)| (ms / size, unit));
        write!(f, "{}/{n}{unit}", self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let limit: RateLimit = "100/1m".parse().unwrap();
        assert_eq!((limit.max(), limit.per()), (100, Duration::from_secs(60)));
        assert_eq!(limit.to_field(), "100 60000");
        assert_eq!(RateLimit::from_field("100 60000"), Some(limit));
        assert_eq!("5/500ms".parse::<RateLimit>().unwrap().per(), Duration::from_millis(500));
        for text in ["100/1m", "5/1500ms", "1/2h", "3/1d", "7/90s"] {
            assert_eq!(text.parse::<RateLimit>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn refuses_what_is_not_a_limit() {
        for bad in ["0/1s", "five/1s", "5", "5/", "5/0ms", "5/8d", "-1/1s", "5/1"] {
            assert!(matches!(bad.parse::<RateLimit>(), Err(Error::InvalidOptions(_))), "{bad}");
        }
        assert_eq!(RateLimit::from_field("garbage"), None);
    }
}
