//! The local wall clock, injectable so tests can skew it.
//!
//! The scheduler never decides what is due from this clock: due times come
//! from Redis `TIME` (and the tick script refuses a tick that Redis does not
//! consider due). The local clock is only compared with Redis' to report skew.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of local wall-clock time.
pub trait WallClock: Send + Sync + 'static {
    /// The current time according to this clock.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by a fixed amount (to test clock skew).
#[derive(Debug, Clone, Copy)]
pub struct ShiftedClock {
    ahead: bool,
    by: Duration,
}

impl ShiftedClock {
    /// A clock `by` ahead of the system clock.
    pub fn ahead(by: Duration) -> Self {
        Self { ahead: true, by }
    }

    /// A clock `by` behind the system clock.
    pub fn behind(by: Duration) -> Self {
        Self { ahead: false, by }
    }
}

impl WallClock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        let by = chrono::Duration::from_std(self.by).unwrap_or(chrono::Duration::zero());
        if self.ahead { Utc::now() + by } else { Utc::now() - by }
    }
}
