//! Where schedules live: a hash in Redis, edited through [`Schedules`].
//!
//! Keys (outside any queue's slot; plain commands only):
//! - `<prefix>:schedules`: hash, schedule name -> definition (JSON);
//! - `<prefix>:schedules:version`: bumped on every change, so running
//!   schedulers reload definitions within a second;
//! - `<prefix>:scheduler:leader`: the leader lease.
//!
//! Per schedule, in its target queue's slot: `<prefix>:{queue}:sched:<name>`,
//! a hash with the watermark (`wm`, the last tick handled), the last tick's
//! job id (`id`), when it was enqueued (`at`), how many runs were enqueued
//! (`runs`), ticks missed and not yet acknowledged (`missed`, `last_missed`)
//! and ticks skipped for overlap (`overlaps`, `last_overlap`).

use std::collections::HashMap;
use std::path::Path;

use quern_common::SelfHealingConnection;
use quern_common::{QueueKeys, RedisConfig};
use redis::AsyncCommands;

use crate::file::load_schedules_file;
use crate::schedule::{Schedule, StoredSchedule, validate_schedule_name};
use crate::{Error, Result};

pub(crate) fn schedules_key(prefix: &str) -> String {
    format!("{prefix}:schedules")
}

pub(crate) fn version_key(prefix: &str) -> String {
    format!("{prefix}:schedules:version")
}

pub(crate) fn leader_key(prefix: &str) -> String {
    format!("{prefix}:scheduler:leader")
}

/// The key of a schedule's state (watermark ...) in its queue's slot.
pub(crate) fn state_key(keys: &QueueKeys, schedule: &str) -> String {
    keys.custom(&format!("sched:{schedule}"))
}

/// Redis server time in milliseconds.
pub(crate) async fn redis_time_ms(conn: &mut SelfHealingConnection) -> Result<i64> {
    Ok(quern_common::connection::redis_time_ms(conn).await? as i64)
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// The schedule was new.
    Created,
    /// The stored definition changed.
    Updated,
    /// The stored definition was the same already.
    Unchanged,
}

/// What applying a set of schedules did, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// New schedules.
    pub created: Vec<String>,
    /// Changed schedules.
    pub updated: Vec<String>,
    /// Schedules already as given.
    pub unchanged: Vec<String>,
    /// Stored schedules removed because they were not given (prune only).
    pub pruned: Vec<String>,
}

/// Client API for the schedules stored in Redis.
///
/// ```no_run
/// # async fn demo() -> quern_scheduler::Result<()> {
/// use quern_scheduler::{Schedule, Schedules};
/// let schedules = Schedules::connect(&quern_common::RedisConfig::default()).await?;
/// schedules.upsert(&Schedule::new("settlement", "0 2 * * *", "billing", "settle")).await?;
/// schedules.set_enabled("settlement", false).await?;
/// for s in schedules.status().await? {
///     println!("{} next {:?} last {:?} flagged {}", s.schedule.name, s.next_fire, s.last_tick, s.flagged());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Schedules {
    conn: SelfHealingConnection,
    prefix: String,
}

impl Schedules {
    /// Connect with `config` (its prefix selects the set of schedules).
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        quern_common::names::validate_prefix(&config.prefix)?;
        Ok(Self { conn: config.connect().await?, prefix: config.prefix.clone() })
    }

    /// Use an existing connection.
    pub fn with_connection(conn: SelfHealingConnection, prefix: &str) -> Result<Self> {
        quern_common::names::validate_prefix(prefix)?;
        Ok(Self { conn, prefix: prefix.to_owned() })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn conn(&self) -> SelfHealingConnection {
        self.conn.clone()
    }

    /// Create or replace a schedule. Ticks count from now when the schedule is
    /// new, is re-enabled, or its cron expression, time zone or queue changed,
    /// so such a change never turns past ticks into misfires (nor re-enqueues,
    /// in a new queue, ticks enqueued in the old one).
    pub async fn upsert(&self, schedule: &Schedule) -> Result<Upserted> {
        schedule.validate()?;
        let mut conn = self.conn();
        let now = redis_time_ms(&mut conn).await?;
        let old: Option<String> = conn.hget(schedules_key(&self.prefix), &schedule.name).await?;
        let old = old.and_then(|raw| serde_json::from_str::<StoredSchedule>(&raw).ok());
        let mut new = schedule.to_stored(now);
        let outcome = match &old {
            None => Upserted::Created,
            Some(o) if o.same_definition(&new) => return Ok(Upserted::Unchanged),
            Some(o) => {
                // A new queue has no watermark of this schedule: counting ticks from
                // now keeps ticks enqueued in the old queue from coming again.
                let restart = o.cron != new.cron
                    || o.tz != new.tz
                    || o.queue != new.queue
                    || (!o.enabled && new.enabled);
                if !restart {
                    new.since_ms = o.since_ms;
                }
                Upserted::Updated
            }
        };
        let json = serde_json::to_string(&new).expect("a stored schedule serializes");
        // Not a transaction: the three keys live in slots of their own (Redis
        // Cluster). A scheduler that reloads between the writes sees the new
        // schedule, then reloads again for the version bump: harmless.
        let _: () = redis::pipe()
            .hset(schedules_key(&self.prefix), &schedule.name, json)
            .incr(version_key(&self.prefix), 1)
            .sadd(QueueKeys::registry(&self.prefix), &schedule.queue)
            .query_async(&mut conn)
            .await?;
        Ok(outcome)
    }

    /// Remove a schedule. Its state in the queue (watermark) is kept, so adding
    /// it back never enqueues a tick that was enqueued before.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let (removed, _): (i64, i64) = redis::pipe()
            .hdel(schedules_key(&self.prefix), name)
            .incr(version_key(&self.prefix), 1)
            .query_async(&mut conn)
            .await?;
        if removed == 0 { Err(Error::NotFound(name.to_owned())) } else { Ok(()) }
    }

    /// Enable or disable a schedule.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let schedule = self.get(name).await?.ok_or_else(|| Error::NotFound(name.to_owned()))?;
        self.upsert(&schedule.enabled(enabled)).await.map(|_| ())
    }

    /// Clear the "missed ticks" flag of a schedule (after someone looked at it).
    pub async fn acknowledge_missed(&self, name: &str) -> Result<()> {
        let schedule = self.get(name).await?.ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let keys = QueueKeys::new(&self.prefix, &schedule.queue)?;
        let _: () = self.conn().hset(state_key(&keys, name), "missed", 0).await?;
        Ok(())
    }

    /// One schedule, if stored.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>> {
        validate_schedule_name(name)?;
        let raw: Option<String> = self.conn().hget(schedules_key(&self.prefix), name).await?;
        raw.map(|raw| decode(name, &raw).map(|(s, _)| s)).transpose()
    }

    /// Every stored schedule, sorted by name.
    pub async fn list(&self) -> Result<Vec<Schedule>> {
        Ok(self.load_stored().await?.into_iter().map(|(s, _)| s).collect())
    }

    pub(crate) async fn load_stored(&self) -> Result<Vec<(Schedule, StoredSchedule)>> {
        let all: HashMap<String, String> = self.conn().hgetall(schedules_key(&self.prefix)).await?;
        let mut out = all.iter().map(|(name, raw)| decode(name, raw)).collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// Upsert every schedule given; with `prune`, remove stored schedules that
    /// are not among them. All are validated before anything is written.
    pub async fn apply(&self, schedules: &[Schedule], prune: bool) -> Result<ApplyReport> {
        for s in schedules {
            s.validate()?;
        }
        let mut report = ApplyReport::default();
        for s in schedules {
            let list = match self.upsert(s).await? {
                Upserted::Created => &mut report.created,
                Upserted::Updated => &mut report.updated,
                Upserted::Unchanged => &mut report.unchanged,
            };
            list.push(s.name.clone());
        }
        if prune {
            for stored in self.list().await? {
                if !schedules.iter().any(|s| s.name == stored.name) {
                    self.remove(&stored.name).await?;
                    report.pruned.push(stored.name);
                }
            }
        }
        Ok(report)
    }

    /// Read a TOML schedules file and [`apply`](Self::apply) it.
    pub async fn apply_file(&self, path: &Path, prune: bool) -> Result<ApplyReport> {
        let schedules = load_schedules_file(path)?;
        self.apply(&schedules, prune).await
    }

    /// The id of the scheduler holding the leader lease, if any.
    pub async fn leader(&self) -> Result<Option<String>> {
        let token: Option<String> = self.conn().get(leader_key(&self.prefix)).await?;
        Ok(token.map(|t| t.rsplit_once('/').map(|(id, _)| id.to_owned()).unwrap_or(t)))
    }
}

fn decode(name: &str, raw: &str) -> Result<(Schedule, StoredSchedule)> {
    let stored: StoredSchedule = serde_json::from_str(raw)
        .map_err(|e| Error::Corrupt { name: name.to_owned(), reason: e.to_string() })?;
    Ok((Schedule::from_stored(name, &stored)?, stored))
}
