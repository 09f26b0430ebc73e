//! Concurrency keys of a queue: their limits, and which keys are busy.

use std::collections::HashMap;

use quern_common::moves::KeyLimit;
use quern_common::{Error, Result};
use redis::AsyncCommands;
use serde::Serialize;

use crate::Queue;

/// Largest per-key limit accepted.
pub const MAX_KEY_LIMIT: u32 = 1_000_000;

/// A queue's concurrency keys: limits and use (see [`Queue::concurrency_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencyKeys {
    /// The queue's per-key limit, for every key without its own (`None`: off).
    pub limit: Option<u32>,
    /// Whether that limit is the singleton mode (limit 1, kept across retries).
    pub singleton: bool,
    /// Keys with a limit of their own, by key.
    pub overrides: Vec<KeyOverride>,
    /// Keys with jobs running or held, by key.
    pub busy: Vec<KeyUse>,
}

/// One key's own limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyOverride {
    /// The key.
    pub key: String,
    /// Its limit.
    pub limit: u32,
    /// Whether it is a singleton key (limit 1, kept across retries).
    pub singleton: bool,
}

/// One key in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUse {
    /// The key.
    pub key: String,
    /// Jobs of the key running now (leased).
    pub active: u64,
    /// Jobs of the key waiting aside because the key was at its limit when a
    /// worker met them (jobs of the key not met yet wait in the queue's
    /// waiting list and are not counted here).
    pub waiting: u64,
    /// The limit that applies to the key (`None`: unlimited).
    pub limit: Option<u32>,
    /// For a singleton key, the job holding it (running, or between attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

fn check_key(key: &str) -> Result<()> {
    quern_common::JobOptions::new().concurrency_key(key).validate()
}

impl KeyUse {
    /// Whether the key runs as many jobs as its limit allows.
    pub fn at_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.active >= u64::from(l))
    }
}

impl Queue {
    /// Set the queue's per-key limit (`None`: off): at most `limit` jobs of
    /// one concurrency key run at once, across all workers, for every key
    /// without a limit of its own. Jobs waiting aside for their key are sorted
    /// again under the new limit. Running jobs are not interrupted.
    pub async fn set_key_limit(&self, limit: Option<u32>) -> Result<()> {
        self.key_limit(None, limit, false).await
    }

    /// Make every key of the queue without a limit of its own a singleton
    /// key (`Some(key)`: that key only): one job of the key at a time, and
    /// a job that fails and will be retried keeps the key through its
    /// backoff, so the next job of the key starts only once it has ended for
    /// good (completed, dead-lettered, cancelled or removed). A holder whose
    /// worker dies keeps the key too; it runs again when the reaper takes it
    /// back. Remove with [`Queue::set_key_limit`] or
    /// [`Queue::set_key_limit_for`] and `None`.
    pub async fn set_key_singleton(&self, key: Option<&str>) -> Result<()> {
        if let Some(key) = key {
            check_key(key)?;
        }
        self.key_limit(key, None, true).await
    }

    /// Set the limit of concurrency key `key` (`None`: the key follows the
    /// queue's limit again).
    pub async fn set_key_limit_for(&self, key: &str, limit: Option<u32>) -> Result<()> {
        check_key(key)?;
        self.key_limit(Some(key), limit, false).await
    }

    async fn key_limit(&self, key: Option<&str>, limit: Option<u32>, singleton: bool) -> Result<()> {
        if let Some(l) = limit
            && (l == 0 || l > MAX_KEY_LIMIT)
        {
            return Err(Error::InvalidOptions(format!(
                "a key limit must be 1 to {MAX_KEY_LIMIT}, got {l} (remove the limit instead, or pause the queue)"
            )));
        }
        self.run(&KeyLimit { key, limit, singleton }).await?;
        Ok(())
    }

    /// The queue's concurrency-key limits and its busy keys (running or
    /// held jobs), sorted by key.
    pub async fn concurrency_keys(&self) -> Result<ConcurrencyKeys> {
        let meta = self.keys().meta();
        let mut conn = self.connection();
        let limit: Option<String> = conn.hget(meta, "ckl").await?;
        let own: HashMap<String, String> = conn.hgetall(self.keys().key_limits()).await?;
        let mut active: HashMap<String, String> = conn.hgetall(self.keys().keys_active()).await?;
        active.remove(quern_common::keys::KEYS_ACTIVE_PIN);
        let held: HashMap<String, u64> = conn.hgetall(self.keys().keys_held()).await?;
        // A limit's text: a number, or 's' for the singleton mode (limit 1).
        let read = |text: &str| match text {
            "s" => Ok((1, true)),
            _ => text.parse::<u32>().map(|l| (l, false)).map_err(|_| {
                Error::Protocol(format!("unreadable key limit {text:?} on queue {}", self.name()))
            }),
        };
        let (limit, singleton) = match limit {
            Some(text) => read(&text).map(|(l, s)| (Some(l), s))?,
            None => (None, false),
        };
        let mut overrides = own
            .iter()
            .map(|(key, text)| {
                let (limit, singleton) = read(text)?;
                Ok(KeyOverride { key: key.clone(), limit, singleton })
            })
            .collect::<Result<Vec<_>>>()?;
        overrides.sort_by(|a, b| a.key.cmp(&b.key));
        // Field '\n<key>' of the active hash names a singleton key's holder.
        let holders: HashMap<&str, &String> =
            active.keys().filter_map(|f| f.strip_prefix('\n').map(|k| (k, f))).collect();
        let mut names: Vec<&String> =
            active.keys().filter(|k| !k.starts_with('\n')).chain(held.keys()).collect();
        names.sort();
        names.dedup();
        let busy = names
            .into_iter()
            .map(|key| KeyUse {
                key: key.clone(),
                active: active.get(key).and_then(|n| n.parse().ok()).unwrap_or(0),
                waiting: held.get(key).copied().unwrap_or(0),
                limit: overrides.iter().find(|o| &o.key == key).map(|o| o.limit).or(limit),
                holder: holders.get(key.as_str()).and_then(|f| active.get(*f)).cloned(),
            })
            .collect();
        Ok(ConcurrencyKeys { limit, singleton, overrides, busy })
    }
}
