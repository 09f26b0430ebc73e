//! Retry backoff: how long a failed job waits before its next attempt.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The wait before retrying a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Backoff {
    /// Retry at once.
    #[serde(rename = "none")]
    None,
    /// Always wait the same time.
    #[serde(rename = "fixed")]
    Fixed {
        /// The wait.
        #[serde(rename = "d", with = "millis")]
        delay: Duration,
    },
    /// Wait `base * 2^(attempt-1)`, capped at `max`, then shortened by a random
    /// fraction of up to `jitter` (0 to 1) so that jobs that failed together
    /// do not all retry at the same instant.
    #[serde(rename = "exp")]
    Exponential {
        /// Wait after the first failed attempt.
        #[serde(rename = "b", with = "millis")]
        base: Duration,
        /// Longest wait.
        #[serde(rename = "m", with = "millis")]
        max: Duration,
        /// Largest fraction removed at random, from 0 (none) to 1.
        #[serde(rename = "j")]
        jitter: f64,
    },
}

impl Default for Backoff {
    /// Exponential from 1 s, capped at 1 h, with 25 % jitter.
    fn default() -> Self {
        Backoff::Exponential { base: Duration::from_secs(1), max: Duration::from_secs(3600), jitter: 0.25 }
    }
}

impl Backoff {
    /// Exponential backoff with the given base and cap and the default jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff::Exponential { base, max, jitter: 0.25 }
    }

    /// Fixed backoff.
    pub fn fixed(delay: Duration) -> Self {
        Backoff::Fixed { delay }
    }

    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn delay_for(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`Backoff::delay_for`] with a given random source (for tests).
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential { base, max, jitter } => {
                let full = Self::uncapped(base, attempt).min(max);
                if jitter <= 0.0 {
                    return full;
                }
                let cut = rng.random_range(0.0..=jitter.min(1.0));
                full.mul_f64(1.0 - cut)
            }
        }
    }

    /// `base * 2^(attempt-1)`, saturating instead of overflowing.
    fn uncapped(base: Duration, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64);
        let nanos = base.as_nanos().saturating_mul(1u128 << exp);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Check the parameters: positive base, cap not below base, jitter in 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Backoff::None => Ok(()),
            Backoff::Fixed { delay } if delay > MAX_BACKOFF => {
                Err(format!("fixed backoff {delay:?} is longer than {MAX_BACKOFF:?}"))
            }
            Backoff::Fixed { .. } => Ok(()),
            Backoff::Exponential { base, max, jitter } => {
                if base.is_zero() {
                    Err("exponential backoff needs a base above zero".into())
                } else if max < base {
                    Err(format!("exponential backoff cap {max:?} is below its base {base:?}"))
                } else if max > MAX_BACKOFF {
                    Err(format!("exponential backoff cap {max:?} is longer than {MAX_BACKOFF:?}"))
                } else if !(0.0..=1.0).contains(&jitter) {
                    Err(format!("backoff jitter {jitter} is outside 0 to 1"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The longest backoff accepted: 30 days.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 24 * 3600);

/// Serde helper: a `Duration` as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn exponential_grows_doubles_and_caps() {
        let b = Backoff::Exponential {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        let got: Vec<u64> = (1..=6).map(|a| b.delay_for(a).as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay_for(500), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b =
            Backoff::Exponential { base: Duration::from_secs(1), max: Duration::from_secs(60), jitter: 0.5 };
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..2000).map(|_| b.delay_with(3, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter should spread the delays");
    }

    #[test]
    fn fixed_and_none() {
        assert_eq!(Backoff::fixed(Duration::from_secs(3)).delay_for(9), Duration::from_secs(3));
        assert_eq!(Backoff::None.delay_for(2), Duration::ZERO);
    }

    #[test]
    fn validation() {
        assert!(Backoff::default().validate().is_ok());
        let bad =
            Backoff::Exponential { base: Duration::from_secs(2), max: Duration::from_secs(1), jitter: 0.1 };
        assert!(bad.validate().is_err());
        let bad =
            Backoff::Exponential { base: Duration::from_secs(1), max: Duration::from_secs(2), jitter: 1.5 };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn compact_json() {
        let s = serde_json::to_string(&Backoff::fixed(Duration::from_millis(1500))).unwrap();
        assert_eq!(s, r#"{"k":"fixed","d":1500}"#);
        assert_eq!(serde_json::from_str::<Backoff>(&s).unwrap(), Backoff::fixed(Duration::from_millis(1500)));
    }
}
