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
        self.key_limit(None, limit).await
    }

    /// Set the limit of concurrency key `key` (`None`: the key follows the
    /// queue's limit again).
    pub async fn set_key_limit_for(&self, key: &str, limit: Option<u32>) -> Result<()> {
        if key.is_empty() || key.len() > quern_common::options::MAX_CONCURRENCY_KEY_BYTES {
            return Err(Error::InvalidOptions(format!(
                "concurrency key must be 1 to {} bytes, got {}",
                quern_common::options::MAX_CONCURRENCY_KEY_BYTES,
                key.len()
            )));
        }
        self.key_limit(Some(key), limit).await
    }

    async fn key_limit(&self, key: Option<&str>, limit: Option<u32>) -> Result<()> {
        if let Some(l) = limit
            && (l == 0 || l > MAX_KEY_LIMIT)
        {
            return Err(Error::InvalidOptions(format!(
                "a key limit must be 1 to {MAX_KEY_LIMIT}, got {l} (remove the limit instead, or pause the queue)"
            )));
        }
        self.run(&KeyLimit { key, limit }).await?;
        Ok(())
    }

    /// The queue's concurrency-key limits and its busy keys (running or
    /// held jobs), sorted by key.
    pub async fn concurrency_keys(&self) -> Result<ConcurrencyKeys> {
        let meta = self.keys().meta();
        let mut conn = self.connection();
        let limit: Option<String> = conn.hget(meta, "ckl").await?;
        let own: HashMap<String, String> = conn.hgetall(self.keys().key_limits()).await?;
        let active: HashMap<String, u64> = conn.hgetall(self.keys().keys_active()).await?;
        let held: HashMap<String, u64> = conn.hgetall(self.keys().keys_held()).await?;
        let number = |what: &str, text: &str| {
            text.parse::<u32>()
                .map_err(|_| Error::Protocol(format!("unreadable {what} {text:?} on queue {}", self.name())))
        };
        let limit = limit.map(|l| number("key limit", &l)).transpose()?;
        let mut overrides = own
            .iter()
            .map(|(key, l)| Ok(KeyOverride { key: key.clone(), limit: number("key limit", l)? }))
            .collect::<Result<Vec<_>>>()?;
        overrides.sort_by(|a, b| a.key.cmp(&b.key));
        let mut names: Vec<&String> = active.keys().chain(held.keys()).collect();
        names.sort();
        names.dedup();
        let busy = names
            .into_iter()
            .map(|key| KeyUse {
                key: key.clone(),
                active: active.get(key).copied().unwrap_or(0),
                waiting: held.get(key).copied().unwrap_or(0),
                limit: overrides.iter().find(|o| &o.key == key).map(|o| o.limit).or(limit),
            })
            .collect();
        Ok(ConcurrencyKeys { limit, overrides, busy })
    }
}
