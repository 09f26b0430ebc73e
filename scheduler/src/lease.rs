//! The leader lease: one key, `SET NX PX` to take it, token-checked renew
//! and release. The lease only keeps standby schedulers quiet; correctness
//! never depends on it (the watermark does that), so a leader that cannot
//! renew in time simply stops enqueuing.

use std::time::{Duration, Instant};

use quern_common::SelfHealingConnection;

use crate::Result;

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A lease held (or wanted) by one scheduler.
pub(crate) struct LeaderLease {
    key: String,
    token: String,
    duration: Duration,
    /// Local deadline until which the lease is surely ours: the time the
    /// take/renew request was sent plus the lease, minus a margin for clock
    /// rate differences. Measured on the monotonic clock.
    held_until: Option<Instant>,
}

impl LeaderLease {
    pub(crate) fn new(key: String, id: &str, duration: Duration) -> Self {
        let token = format!("{id}/{:016x}", rand::random::<u64>());
        Self { key, token, duration, held_until: None }
    }

    /// True while the lease is surely held: enqueue only then.
    pub(crate) fn is_held(&self) -> bool {
        self.held_until.is_some_and(|t| Instant::now() < t)
    }

    /// Time until the lease should be renewed (a third of it used up).
    pub(crate) fn renew_in(&self) -> Duration {
        match self.held_until {
            Some(t) => {
                t.saturating_duration_since(Instant::now()).saturating_sub(self.margin() + self.duration / 3)
            }
            None => Duration::ZERO,
        }
    }

    fn margin(&self) -> Duration {
        self.duration / 10
    }

    /// Take the lease if free, or renew it if ours. Returns whether it is held.
    /// On a Redis error the lease counts as held only until its local deadline.
    pub(crate) async fn refresh(&mut self, conn: &mut SelfHealingConnection) -> Result<bool> {
        let sent = Instant::now();
        let px = self.duration.as_millis() as u64;
        let ours = if self.held_until.is_some() {
            let renewed: i64 =
                redis::Script::new(RENEW).key(&self.key).arg(&self.token).arg(px).invoke_async(conn).await?;
            renewed == 1
        } else {
            let set: Option<String> = redis::cmd("SET")
                .arg(&self.key)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(px)
                .query_async(conn)
                .await?;
            set.is_some()
        };
        self.held_until = ours.then(|| sent + self.duration - self.margin());
        Ok(ours)
    }

    /// How long until the current holder's lease expires (for standbys).
    pub(crate) async fn remaining(&self, conn: &mut SelfHealingConnection) -> Result<Duration> {
        let ms: i64 = redis::cmd("PTTL").arg(&self.key).query_async(conn).await?;
        Ok(Duration::from_millis(ms.max(0) as u64))
    }

    /// Give the lease up (on shutdown), so a standby takes over at once.
    pub(crate) async fn release(&mut self, conn: &mut SelfHealingConnection) -> Result<()> {
        if self.held_until.take().is_some() {
            let _: i64 =
                redis::Script::new(RELEASE).key(&self.key).arg(&self.token).invoke_async(conn).await?;
        }
        Ok(())
    }
}
