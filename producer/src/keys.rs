//! Concurrency keys of a queue: their limits, and which keys are busy.

use std::collections::HashMap;

use quern_common::moves::KeyLimit;
use quern_common::{Error, JobEntry, JobState, Result, UnreadableJob, fields};
use redis::AsyncCommands;
use serde::Serialize;

use crate::Queue;

/// Largest per-key limit accepted.
pub const MAX_KEY_LIMIT: u32 = 1_000_000;

/// Entries of the queue's waiting lists one call of
/// [`Queue::waiting_jobs_of_key`] reads at most, to find a key's jobs there.
pub const KEY_SCAN_PAGE: usize = 1_000;

/// Entries of the waiting lists read per round trip while scanning.
const SCAN_CHUNK: usize = 200;

/// A page of one concurrency key's waiting jobs (see
/// [`Queue::waiting_jobs_of_key`]).
#[derive(Debug, Clone)]
pub struct KeyJobsPage {
    /// The jobs found, in the order they run.
    pub jobs: Vec<JobEntry>,
    /// Where the next page starts (`None`: the listing is complete).
    pub next: Option<usize>,
}

/// A queue's concurrency keys: limits and use (see [`Queue::concurrency_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencyKeys {
    /// The queue's per-key limit, for every key without its own (`None`: off).
    pub limit: Option<u32>,
    /// Whether that limit is the singleton mode (limit 1, kept across retries).
    pub singleton: bool,
    /// Keys with a limit of their own, by key.
    pub overrides: Vec<KeyOverride>,
    /// Keys with jobs running or waiting, by key.
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
    /// Jobs of the key waiting: every one, whether still in the queue's
    /// waiting lists or held aside for the key (exact; kept by the scripts
    /// as keyed jobs move, so reading it costs one hash read). Jobs added
    /// by a quern older than this count are not in it; it never reads
    /// below `held`.
    pub waiting: u64,
    /// Of those, the jobs held aside because the key was at its limit when a
    /// worker met them; they run first when a slot of the key frees.
    pub held: u64,
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

    /// The waiting jobs of concurrency key `key`, a page at a time: its held
    /// jobs first (they run first when a slot of the key frees), then its
    /// jobs in the queue's waiting lists (by priority, then age). Start at
    /// position 0 and pass [`KeyJobsPage::next`] on.
    ///
    /// A key's held jobs are on a list of their own; its other waiting
    /// jobs are found by reading the queue's waiting lists, so one call
    /// returns at most `limit` jobs and reads at most [`KEY_SCAN_PAGE`]
    /// entries of those lists: a page may come back short, or empty, with a
    /// `next` to go on from. Positions count entries of the lists, like the
    /// offsets of [`Queue::job_ids`]: jobs that start or are added while
    /// paging may be skipped or listed twice.
    pub async fn waiting_jobs_of_key(&self, key: &str, from: usize, limit: usize) -> Result<KeyJobsPage> {
        check_key(key)?;
        let k = self.keys();
        let held_list = k.key_held_list(key);
        let mut conn = self.connection();
        let (held, waiting, prioritized): (usize, usize, usize) = redis::pipe()
            .llen(&held_list)
            .llen(k.wait())
            .zcard(k.prioritized())
            .query_async(&mut conn)
            .await?;
        let end = held + waiting + prioritized;
        let mut pos = from;
        let mut ids: Vec<String> = Vec::new();
        if limit > 0 && pos < held {
            let stop = (pos + limit).min(held) - 1;
            ids = conn.lrange(&held_list, pos as isize, stop as isize).await?;
            pos = stop + 1;
        }
        let mut scanned = 0;
        while ids.len() < limit && pos < end && scanned < KEY_SCAN_PAGE {
            let n = SCAN_CHUNK.min(KEY_SCAN_PAGE - scanned);
            let chunk: Vec<String> = if pos < held + waiting {
                let at = pos - held;
                conn.lrange(k.wait(), at as isize, (at + n.min(held + waiting - pos)) as isize - 1).await?
            } else {
                let at = pos - held - waiting;
                conn.zrange(k.prioritized(), at as isize, (at + n) as isize - 1).await?
            };
            if chunk.is_empty() {
                // The list got shorter meanwhile: on to the next, or done.
                pos = if pos < held + waiting { held + waiting } else { end };
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &chunk {
                pipe.hget(k.job(id), fields::CONCURRENCY_KEY);
            }
            let keys: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            for (id, job_key) in chunk.iter().zip(keys) {
                if ids.len() == limit {
                    break;
                }
                pos += 1;
                scanned += 1;
                if job_key.as_deref() == Some(key) {
                    ids.push(id.clone());
                }
            }
        }
        let read = self.read_jobs(&ids).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, entry) in ids.iter().zip(read) {
            match entry {
                Some(entry) => jobs.push(entry),
                None if self.still_listed(JobState::Waiting, id).await? => jobs
                    .push(JobEntry::Unreadable(UnreadableJob::missing(self.name(), id, JobState::Waiting))),
                None => {}
            }
        }
        Ok(KeyJobsPage { jobs, next: (pos < end).then_some(pos) })
    }

    /// The queue's concurrency-key limits and its busy keys (with jobs
    /// running or waiting), sorted by key.
    pub async fn concurrency_keys(&self) -> Result<ConcurrencyKeys> {
        let meta = self.keys().meta();
        let mut conn = self.connection();
        let limit: Option<String> = conn.hget(meta, "ckl").await?;
        let own: HashMap<String, String> = conn.hgetall(self.keys().key_limits()).await?;
        let mut active: HashMap<String, String> = conn.hgetall(self.keys().keys_active()).await?;
        active.remove(quern_common::keys::KEYS_ACTIVE_PIN);
        let held: HashMap<String, u64> = conn.hgetall(self.keys().keys_held()).await?;
        let waiting: HashMap<String, i64> = conn.hgetall(self.keys().keys_waiting()).await?;
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
            active.keys().filter(|k| !k.starts_with('\n')).chain(held.keys()).chain(waiting.keys()).collect();
        names.sort();
        names.dedup();
        let busy = names
            .into_iter()
            .map(|key| KeyUse {
                key: key.clone(),
                active: active.get(key).and_then(|n| n.parse().ok()).unwrap_or(0),
                // Held jobs are waiting jobs: never show fewer waiting than
                // held (a count kept before this version may fall short).
                waiting: waiting
                    .get(key)
                    .map_or(0, |&n| u64::try_from(n).unwrap_or(0))
                    .max(held.get(key).copied().unwrap_or(0)),
                held: held.get(key).copied().unwrap_or(0),
                limit: overrides.iter().find(|o| &o.key == key).map(|o| o.limit).or(limit),
                holder: holders.get(key.as_str()).and_then(|f| active.get(*f)).cloned(),
            })
            .collect();
        Ok(ConcurrencyKeys { limit, singleton, overrides, busy })
    }
}
