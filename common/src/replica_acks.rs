//! Replica acknowledgements: a write returns only once `n` replicas hold it.
//!
//! Redis replicates asynchronously: a master that dies right after answering
//! can take the write with it, and the replica promoted in its place never
//! saw it. `WAIT n timeout` sent right after the write, on the same
//! connection, answers once `n` replicas have acknowledged every write that
//! connection made before it, or when the timeout runs out. quern sends it in
//! the same pipeline as the script call, so it costs no extra round trip, only
//! the replication delay.
//!
//! What it guarantees: a call that returns `Ok` is on `n` replicas, so a
//! failover to one of them keeps it (Sentinel promotes the most up-to-date
//! replica). What it does not: a call that fails with
//! [`Error::NotReplicated`] was applied on the master all the same (`WAIT`
//! cannot undo it). A multiplexed connection is shared, so while a `WAIT`
//! waits, the calls queued behind it on the same connection wait too.

use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use crate::{Error, Result};

/// How many replicas must acknowledge a write, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    replicas: u32,
    timeout: Duration,
}

impl ReplicaAcks {
    /// Wait for `replicas` replicas, at most `timeout`.
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        Self { replicas, timeout }
    }

    /// Replicas that must acknowledge.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The longest wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Refuse settings that cannot work on a connection whose calls time out
    /// after `response_timeout`: no replica, no wait (`WAIT 0` would wait
    /// forever), or a wait the response timeout would cut short (the
    /// connection would then be taken for dead).
    pub fn check(&self, response_timeout: Duration) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidOptions(format!("replica acknowledgements: {why}")));
        if self.replicas == 0 {
            return invalid("at least 1 replica".into());
        }
        if self.timeout < Duration::from_millis(1) {
            return invalid("the timeout must be at least 1 ms".into());
        }
        if self.timeout >= response_timeout {
            return invalid(format!(
                "the timeout ({:?}) must be shorter than the Redis response timeout ({response_timeout:?})",
                self.timeout
            ));
        }
        Ok(())
    }

    /// `WAIT <replicas> <timeout ms>`.
    pub(crate) fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas).arg(crate::moves::millis(self.timeout).max(1));
        cmd
    }

    /// What the reply of [`ReplicaAcks::command`] means.
    pub(crate) fn verdict(&self, reply: RedisResult<Value>) -> Result<()> {
        let acked: i64 = redis::from_redis_value(reply?).map_err(redis::RedisError::from)?;
        if acked >= i64::from(self.replicas) {
            Ok(())
        } else {
            Err(Error::NotReplicated {
                wanted: self.replicas,
                acked: acked.clamp(0, i64::from(u32::MAX)) as u32,
                timeout: self.timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let rt = Duration::from_secs(2);
        assert!(ReplicaAcks::new(1, Duration::from_millis(500)).check(rt).is_ok());
        assert!(ReplicaAcks::new(0, Duration::from_millis(500)).check(rt).is_err());
        assert!(ReplicaAcks::new(1, Duration::ZERO).check(rt).is_err());
        assert!(ReplicaAcks::new(1, rt).check(rt).is_err());
    }

    #[test]
    fn too_few_acknowledgements_are_a_retryable_error() {
        let acks = ReplicaAcks::new(2, Duration::from_millis(100));
        assert!(acks.verdict(Ok(Value::Int(2))).is_ok());
        let err = acks.verdict(Ok(Value::Int(1))).unwrap_err();
        assert!(matches!(err, Error::NotReplicated { wanted: 2, acked: 1, .. }), "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("applied on the Redis master"), "{err}");
    }
}
