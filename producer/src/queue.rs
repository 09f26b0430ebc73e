//! The `Queue` handle.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use quern_common::keys::{ACTIVE_PIN, QueueKeys};
use quern_common::names;
use quern_common::scripts::{self, DEFAULT_EVENTS_MAX_LEN, ScriptCall, ScriptName};
use quern_common::{
    Error, JobEntry, JobInfo, JobOptions, JobState, QueueCounts, RateLimit, RedisConfig, Result, ScriptCode,
    SelfHealingConnection, UnreadableJob, WorkerInfo,
};
use redis::AsyncCommands;
use serde::Serialize;

use crate::DEFAULT_MAX_PAYLOAD_BYTES;
use crate::batcher::AddBatcher;

/// Jobs per script call in `add_bulk`: bounds the work of one call.
const BULK_CHUNK: usize = 1000;
/// Dead-letter entries moved per script call by `retry_all` and `purge`.
const DEAD_LETTER_BATCH: usize = 500;
/// Delayed jobs one promote call moves at most (bounded work per script).
const PROMOTE_BATCH: usize = 500;
/// Jobs one obliterate call deletes at most (bounded work per script).
const OBLITERATE_BATCH: usize = 1000;

/// A handle on one queue. Clone it freely: clones share one connection.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueCore>,
    /// Started on the first add (it needs the caller's Tokio runtime).
    batcher: Arc<OnceLock<AddBatcher>>,
}

/// What the sender task of [`AddBatcher`] shares with the handles.
pub(crate) struct QueueCore {
    conn: SelfHealingConnection,
    keys: QueueKeys,
    max_payload_bytes: usize,
    events_max_len: u64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name())
            .field("prefix", &self.inner.keys.prefix())
            .finish()
    }
}

/// The outcome of adding one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The job's id (generated, or the explicit one).
    pub id: String,
    /// False when a job with this explicit id existed already (nothing was added).
    pub created: bool,
}

/// A job to add in bulk.
#[derive(Debug, Clone)]
pub struct NewJob {
    name: String,
    payload: String,
    options: JobOptions,
}

impl NewJob {
    /// A job named `name` with a payload serialized to JSON.
    pub fn new<T: Serialize + ?Sized>(name: impl Into<String>, payload: &T) -> Result<Self> {
        let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidPayload(e.to_string()))?;
        Ok(Self { name: name.into(), payload, options: JobOptions::default() })
    }

    /// A job whose payload is already JSON text; it is checked to be valid JSON.
    pub fn from_json(name: impl Into<String>, json: impl Into<String>) -> Result<Self> {
        let payload = json.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&payload)
            .map_err(|e| Error::InvalidPayload(format!("not valid JSON: {e}")))?;
        Ok(Self { name: name.into(), payload, options: JobOptions::default() })
    }

    /// Size of the serialized payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// Set the job's options.
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }
}

/// Settings for a [`Queue`] beyond its name and Redis.
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    name: String,
    config: RedisConfig,
    max_payload_bytes: usize,
    events_max_len: u64,
}

impl QueueBuilder {
    /// Largest serialized payload accepted (default 512 KiB).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Approximate length the queue's events stream is trimmed to (default
    /// 10,000; 0 turns events off for the calls this handle makes).
    pub fn events_max_len(mut self, len: u64) -> Self {
        self.events_max_len = len;
        self
    }

    /// Connect and register the queue name.
    pub async fn connect(self) -> Result<Queue> {
        // Bad names are refused before any network wait.
        QueueKeys::new(&self.config.prefix, &self.name)?;
        let conn = self.config.connect().await?;
        let queue = self.with_connection(conn)?;
        queue.register().await?;
        Ok(queue)
    }

    /// Use an existing connection (share one among many queues). Does not
    /// register the queue name; [`Queue::add`] works all the same.
    pub fn with_connection(self, conn: SelfHealingConnection) -> Result<Queue> {
        let keys = QueueKeys::new(&self.config.prefix, &self.name)?;
        Ok(Queue {
            batcher: Arc::new(OnceLock::new()),
            inner: Arc::new(QueueCore {
                conn,
                keys,
                max_payload_bytes: self.max_payload_bytes,
                events_max_len: self.events_max_len,
            }),
        })
    }
}

impl Queue {
    /// Settings for queue `name` on the Redis of `config`.
    pub fn builder(config: &RedisConfig, name: impl Into<String>) -> QueueBuilder {
        QueueBuilder {
            name: name.into(),
            config: config.clone(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            events_max_len: DEFAULT_EVENTS_MAX_LEN,
        }
    }

    /// Connect to queue `name` with default settings, creating it if new.
    pub async fn connect(config: &RedisConfig, name: &str) -> Result<Self> {
        Self::builder(config, name).connect().await
    }

    /// Connect to queue `name` only if some producer or worker has used it;
    /// otherwise [`Error::UnknownQueue`]. For tools that inspect queues.
    pub async fn open_existing(config: &RedisConfig, name: &str) -> Result<Self> {
        QueueKeys::new(&config.prefix, name)?;
        let queue = Self::builder(config, name).with_connection(config.connect().await?)?;
        let mut conn = queue.conn();
        let known: bool = conn.sismember(QueueKeys::registry(&config.prefix), name).await?;
        if known { Ok(queue) } else { Err(Error::UnknownQueue(name.to_owned())) }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.inner.keys.name()
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.inner.keys
    }

    /// A clone of the underlying connection (cheap; shares the socket).
    pub fn connection(&self) -> SelfHealingConnection {
        self.conn()
    }

    fn conn(&self) -> SelfHealingConnection {
        self.inner.conn.clone()
    }

    fn call(&self, name: ScriptName) -> ScriptCall {
        ScriptCall::new(name, &self.inner.keys, self.inner.events_max_len)
    }

    async fn register(&self) -> Result<()> {
        let mut conn = self.conn();
        let _: i64 = conn.sadd(QueueKeys::registry(self.inner.keys.prefix()), self.name()).await?;
        Ok(())
    }

    /// Add a job with default options. Returns its generated id.
    pub async fn add<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<Added> {
        self.add_with(name, payload, JobOptions::default()).await
    }

    /// Add a job with options.
    pub async fn add_with<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        options: JobOptions,
    ) -> Result<Added> {
        self.add_one(NewJob::new(name, payload)?.options(options)).await
    }

    /// Add a job whose payload is JSON text (checked to be valid JSON).
    pub async fn add_json(&self, name: &str, json: &str, options: JobOptions) -> Result<Added> {
        self.add_one(NewJob::from_json(name, json)?.options(options)).await
    }

    /// Add many jobs, up to 1,000 per script call, all calls in one round trip.
    /// Every job is validated before any is sent, so a bad one adds nothing.
    pub async fn add_bulk(&self, jobs: &[NewJob]) -> Result<Vec<Added>> {
        if jobs.is_empty() {
            // Nothing to send (an empty pipeline is an error in the client).
            return Ok(Vec::new());
        }
        for job in jobs {
            self.validate(job)?;
        }
        let calls: Vec<ScriptCall> = jobs.chunks(BULK_CHUNK).map(|c| self.inner.add_call(c)).collect();
        let mut out = Vec::with_capacity(jobs.len());
        let results = scripts::run_pipelined(&mut self.conn(), &calls).await?;
        for (result, chunk) in results.into_iter().zip(jobs.chunks(BULK_CHUNK)) {
            out.extend(parse_added(result?, chunk.len())?);
        }
        Ok(out)
    }

    /// Validate here (errors belong to the caller), then leave through the
    /// batcher, which combines concurrent adds into one script call.
    async fn add_one(&self, job: NewJob) -> Result<Added> {
        self.validate(&job)?;
        self.batcher.get_or_init(|| AddBatcher::start(self.inner.clone())).add(job).await
    }

    fn validate(&self, job: &NewJob) -> Result<()> {
        names::validate_job_name(&job.name)?;
        job.options.validate()?;
        if job.payload.len() > self.inner.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: job.payload.len(),
                limit: self.inner.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Look a job up. `Ok(None)` if there is no such job (never added, removed,
    /// or trimmed after completing). Fields of its record that cannot be read
    /// are named in [`JobInfo::problems`]; a record that cannot be read as a
    /// job at all is [`Error::UnreadableJob`].
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>> {
        match self.read_jobs(&[id.to_owned()]).await?.pop().flatten() {
            None => Ok(None),
            Some(entry) => entry.into_result().map(Some).map_err(Error::from),
        }
    }

    /// Job counts per state, read atomically.
    pub async fn counts(&self) -> Result<QueueCounts> {
        let v: Vec<i64> = self.call(ScriptName::Counts).run(&mut self.conn()).await?;
        let [waiting, delayed, active, completed, failed, paused] = v[..] else {
            return Err(Error::Protocol(format!("counts returned {v:?}")));
        };
        let n = |x: i64| x.max(0) as u64;
        Ok(QueueCounts {
            waiting: n(waiting),
            delayed: n(delayed),
            active: n(active),
            completed: n(completed),
            failed: n(failed),
            paused: paused == 1,
        })
    }

    /// The queue's live workers, oldest first: those whose last report is
    /// recent enough (a killed worker drops off within three reaper passes).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut conn = self.conn();
        let now = quern_common::connection::redis_time_ms(&mut conn).await?;
        let ids: Vec<String> = conn.zrangebyscore(self.keys().workers(), now, "+inf").await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<String>> =
            redis::cmd("HMGET").arg(self.keys().worker_info()).arg(&ids).query_async(&mut conn).await?;
        let mut workers: Vec<WorkerInfo> =
            ids.iter().zip(stored).filter_map(|(id, s)| WorkerInfo::from_stored(id, s.as_deref()?)).collect();
        workers.sort_by(|a, b| (a.first_seen_ms, &a.id).cmp(&(b.first_seen_ms, &b.id)));
        Ok(workers)
    }

    /// Ids of jobs in `state`, in the order they will run (waiting, delayed),
    /// by lease deadline (active), newest first (completed, failed).
    pub async fn job_ids(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let k = &self.inner.keys;
        let (start, stop) = (offset as isize, (offset + limit - 1) as isize);
        let mut conn = self.conn();
        Ok(match state {
            JobState::Waiting => {
                let mut ids: Vec<String> = conn.lrange(k.wait(), start, stop).await?;
                if ids.len() < limit {
                    let listed: usize = conn.llen(k.wait()).await?;
                    let skip = offset.saturating_sub(listed) as isize;
                    let more: Vec<String> =
                        conn.zrange(k.prioritized(), skip, skip + (limit - ids.len()) as isize - 1).await?;
                    ids.extend(more);
                }
                ids
            }
            JobState::Delayed => conn.zrange(k.delayed(), start, stop).await?,
            JobState::Active => {
                let ids: Vec<String> = conn.zrange(k.active(), start, stop).await?;
                ids.into_iter().filter(|id| id != ACTIVE_PIN).collect()
            }
            JobState::Completed => {
                conn.lrange(k.completed(), -stop - 1, -start - 1).await.map(|mut v: Vec<String>| {
                    v.reverse();
                    v
                })?
            }
            JobState::Failed => conn.zrevrange(k.dead_letter(), start, stop).await?,
        })
    }

    /// Jobs in `state`, in the order of [`Queue::job_ids`]. Corrupt records
    /// never hide the others: every job that can be read is listed (with its
    /// [`JobInfo::problems`], if any), and each record that cannot is an
    /// [`UnreadableJob`] saying why, as is an id listed in `state` whose job
    /// hash is missing. Jobs removed between listing and reading are left out.
    pub async fn jobs(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobEntry>> {
        let ids = self.job_ids(state, offset, limit).await?;
        let read = self.read_jobs(&ids).await?;
        let mut entries = Vec::with_capacity(ids.len());
        for (id, entry) in ids.iter().zip(read) {
            match entry {
                Some(entry) => entries.push(entry),
                None if self.still_listed(state, id).await? => {
                    entries.push(JobEntry::Unreadable(UnreadableJob::missing(self.name(), id, state)))
                }
                None => {}
            }
        }
        Ok(entries)
    }

    /// Read these jobs' hashes in one round trip: `None` for a job with no
    /// hash, an [`UnreadableJob`] for a key that is not a hash.
    async fn read_jobs(&self, ids: &[String]) -> Result<Vec<Option<JobEntry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in ids {
            pipe.hgetall(self.inner.keys.job(id));
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut self.conn()).await?;
        let mut entries = Vec::with_capacity(ids.len());
        for (id, reply) in ids.iter().zip(replies) {
            let unreadable =
                |why: String| Some(JobEntry::Unreadable(UnreadableJob::new(self.name(), id, why)));
            entries.push(match reply {
                Ok(value) => match redis::from_redis_value::<HashMap<String, String>>(value) {
                    Ok(fields) => JobEntry::from_hash(self.name(), id, fields),
                    Err(e) => unreadable(format!("its job hash cannot be read: {e}")),
                },
                Err(e) if e.code() == Some("WRONGTYPE") => unreadable("its job key is not a hash".into()),
                Err(e) => return Err(e.into()),
            });
        }
        Ok(entries)
    }

    /// Whether `id` is (still) listed in `state`: a job found without a hash
    /// was either removed since it was listed, or its id dangles.
    async fn still_listed(&self, state: JobState, id: &str) -> Result<bool> {
        let k = &self.inner.keys;
        let mut conn = self.conn();
        let in_list = |key: &str| redis::cmd("LPOS").arg(key).arg(id).to_owned();
        Ok(match state {
            JobState::Waiting => {
                let at: Option<i64> = in_list(k.wait()).query_async(&mut conn).await?;
                let score: Option<f64> = conn.zscore(k.prioritized(), id).await?;
                at.is_some() || score.is_some()
            }
            JobState::Delayed => conn.zscore::<_, _, Option<f64>>(k.delayed(), id).await?.is_some(),
            JobState::Active => conn.zscore::<_, _, Option<f64>>(k.active(), id).await?.is_some(),
            JobState::Completed => {
                in_list(k.completed()).query_async::<Option<i64>>(&mut conn).await?.is_some()
            }
            JobState::Failed => conn.zscore::<_, _, Option<f64>>(k.dead_letter(), id).await?.is_some(),
        })
    }

    /// Remove a job that is not active.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let mut call = self.call(ScriptName::Remove);
        call.arg(id);
        let code: i64 = call.run(&mut self.conn()).await?;
        match ScriptCode::from_code(code)?.to_error(self.name(), id) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Make delayed job `id` (waiting out its delay or a retry's backoff)
    /// waiting now, behind the jobs already waiting at its priority.
    pub async fn promote(&self, id: &str) -> Result<()> {
        if !self.promote_batch(&[id]).await?.is_empty() {
            return Ok(());
        }
        let (queue, id) = (self.name().to_owned(), id.to_owned());
        match self.job(&id).await? {
            None => Err(Error::JobNotFound { queue, id }),
            Some(job) => Err(Error::NotDelayed { queue, id, state: job.state }),
        }
    }

    /// Make every delayed job waiting now, earliest due first. Returns how
    /// many moved.
    pub async fn promote_all(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let moved = self.promote_batch(&[]).await?.len();
            total += moved as u64;
            if moved < PROMOTE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Promote these ids, or with none the earliest due; bounded per call.
    async fn promote_batch(&self, ids: &[&str]) -> Result<Vec<String>> {
        let mut call = self.call(ScriptName::Promote);
        call.arg(PROMOTE_BATCH);
        for id in ids {
            call.arg(id);
        }
        call.run(&mut self.conn()).await
    }

    /// Stop job `id` for good, with `reason` as its error: a waiting or
    /// delayed job never runs; a running one loses its lease (its worker
    /// learns at its next renewal, a third of the lease at most, and its
    /// result is refused; the stock `command` kind kills its process group).
    /// The job lands in the dead-letter list, where `retry_dead_letter` can
    /// run it again.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<()> {
        let mut call = self.call(ScriptName::Cancel);
        call.arg(id).arg(reason);
        let code: i64 = call.run(&mut self.conn()).await?;
        let (queue, id) = (self.name().to_owned(), id.to_owned());
        match ScriptCode::from_code(code)? {
            ScriptCode::Ok => Ok(()),
            ScriptCode::NotFound => Err(Error::JobNotFound { queue, id }),
            ScriptCode::WrongState => match self.job(&id).await? {
                Some(job) => Err(Error::Finished { queue, id, state: job.state }),
                None => Err(Error::JobNotFound { queue, id }),
            },
            other => Err(Error::Protocol(format!("cancel returned {other:?}"))),
        }
    }

    /// Delete the queue: every job (in any state), its events, its settings
    /// (pause, rate limit) and its keys, in calls of a bounded size, then its
    /// name from the list of known queues. Refused with
    /// [`Error::QueueInUse`] while jobs run or workers are live, unless
    /// `force` (their results are then refused). Producers still adding to it
    /// create it afresh. Returns how many jobs were deleted.
    pub async fn obliterate(&self, force: bool) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut call = self.call(ScriptName::Obliterate);
            call.arg(OBLITERATE_BATCH).arg(if force { "1" } else { "0" });
            let (status, deleted): (String, u64) = call.run(&mut self.conn()).await?;
            total += deleted;
            match status.as_str() {
                "more" => continue,
                "done" => break,
                "busy" => {
                    let running = self.counts().await?.active;
                    let workers = self.workers().await?.len() as u64;
                    return Err(Error::QueueInUse { queue: self.name().to_owned(), running, workers });
                }
                other => return Err(Error::Protocol(format!("obliterate returned {other:?}"))),
            }
        }
        let _: i64 = self.conn().srem(QueueKeys::registry(self.inner.keys.prefix()), self.name()).await?;
        Ok(total)
    }

    /// Pause the queue: workers stop taking jobs from it; active jobs finish.
    pub async fn pause(&self) -> Result<()> {
        self.set_paused(true).await
    }

    /// Resume a paused queue.
    pub async fn resume(&self) -> Result<()> {
        self.set_paused(false).await
    }

    async fn set_paused(&self, paused: bool) -> Result<()> {
        let mut call = self.call(ScriptName::Pause);
        call.arg(if paused { "1" } else { "0" });
        let _: i64 = call.run(&mut self.conn()).await?;
        Ok(())
    }

    /// Limit how many jobs of this queue start per window, across all its
    /// workers (`None` removes the limit). Takes effect at the workers' next
    /// fetch and starts a fresh window. A limited queue hands no job straight
    /// to a parked worker: every start goes through a fetch, where it counts.
    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        let mut call = self.call(ScriptName::Limit);
        call.arg(limit.map(|l| l.to_field()).unwrap_or_default());
        let _: i64 = call.run(&mut self.conn()).await?;
        Ok(())
    }

    /// The queue's rate limit, if it has one.
    pub async fn rate_limit(&self) -> Result<Option<RateLimit>> {
        let field: Option<String> = self.conn().hget(self.keys().meta(), "rl").await?;
        match field {
            None => Ok(None),
            Some(text) => RateLimit::from_field(&text).map(Some).ok_or_else(|| {
                Error::Protocol(format!("unreadable rate limit {text:?} on queue {}", self.name()))
            }),
        }
    }

    /// Jobs in the dead-letter list, newest first: [`Queue::jobs`] of
    /// [`JobState::Failed`], so a corrupt record is marked, not fatal.
    pub async fn dead_letters(&self, offset: usize, limit: usize) -> Result<Vec<JobEntry>> {
        self.jobs(JobState::Failed, offset, limit).await
    }

    /// Move one dead-lettered job back to waiting with a fresh attempt budget.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<()> {
        let done = self.dead_letter_action("retry", &[id]).await?;
        if done.is_empty() { Err(self.not_dead_lettered(id).await) } else { Ok(()) }
    }

    /// Move every dead-lettered job back to waiting. Returns how many moved.
    pub async fn retry_all_dead_letters(&self) -> Result<u64> {
        self.drain_dead_letters("retry").await
    }

    /// Delete one dead-lettered job.
    pub async fn purge_dead_letter(&self, id: &str) -> Result<()> {
        let done = self.dead_letter_action("purge", &[id]).await?;
        if done.is_empty() { Err(self.not_dead_lettered(id).await) } else { Ok(()) }
    }

    /// Delete every dead-lettered job. Returns how many were deleted.
    pub async fn purge_dead_letters(&self) -> Result<u64> {
        self.drain_dead_letters("purge").await
    }

    async fn not_dead_lettered(&self, id: &str) -> Error {
        let (queue, id) = (self.name().to_owned(), id.to_owned());
        match self.job(&id).await {
            Ok(None) => Error::JobNotFound { queue, id },
            Ok(Some(_)) => Error::NotDeadLettered { queue, id },
            Err(e) => e,
        }
    }

    async fn drain_dead_letters(&self, action: &str) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = self.dead_letter_action(action, &[]).await?;
            total += done.len() as u64;
            if done.len() < DEAD_LETTER_BATCH {
                return Ok(total);
            }
        }
    }

    async fn dead_letter_action(&self, action: &str, ids: &[&str]) -> Result<Vec<String>> {
        let mut call = self.call(ScriptName::DeadLetter);
        call.arg(action).arg(DEAD_LETTER_BATCH);
        for id in ids {
            call.arg(*id);
        }
        call.run(&mut self.conn()).await
    }
}

/// Every queue name registered under `config`'s prefix, sorted.
pub async fn known_queues(conn: &mut SelfHealingConnection, prefix: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = conn.smembers(QueueKeys::registry(prefix)).await?;
    names.sort();
    Ok(names)
}

impl QueueCore {
    fn add_call(&self, jobs: &[NewJob]) -> ScriptCall {
        let mut call = ScriptCall::new(ScriptName::Add, &self.keys, self.events_max_len);
        call.arg(jobs.len());
        // Most adds are plain: a generated id and default options. They go in
        // the script's short form (3 arguments per job instead of 7).
        let stored: Vec<String> = jobs.iter().map(|j| j.options.encode_stored()).collect();
        let plain = jobs.iter().zip(&stored).all(|(j, s)| {
            let o = &j.options;
            o.job_id.is_none() && s.is_empty() && o.priority == 0 && o.delay.is_zero()
        });
        call.arg(if plain { "plain" } else { "full" });
        for (job, stored) in jobs.iter().zip(&stored) {
            let (head, tail) = scripts::split_payload(&job.payload);
            if plain {
                call.arg(&job.name).arg(head).arg(tail);
            } else {
                let o = &job.options;
                call.arg(o.job_id.as_deref().unwrap_or(""))
                    .arg(&job.name)
                    .arg(head)
                    .arg(tail)
                    .arg(stored)
                    .arg(o.priority)
                    .arg(o.delay.as_millis() as u64);
            }
        }
        call
    }

    /// Add validated jobs in one script call.
    pub(crate) async fn add_validated(&self, jobs: &[NewJob]) -> Result<Vec<Added>> {
        parse_added(self.add_call(jobs).run(&mut self.conn.clone()).await?, jobs.len())
    }
}

/// The reply of `add.lua`: the first generated id of a plain batch (the
/// others follow it), or an id and a created flag per job.
fn parse_added(v: redis::Value, jobs: usize) -> Result<Vec<Added>> {
    if let redis::Value::Int(first) = v {
        return Ok((0..jobs as i64).map(|i| Added { id: (first + i).to_string(), created: true }).collect());
    }
    let items = scripts::array(v)?;
    items
        .chunks(2)
        .map(|pair| match pair {
            [id, created] => Ok(Added { id: scripts::string(id)?, created: scripts::int(created)? == 1 }),
            _ => Err(Error::Protocol("add returned an odd list".into())),
        })
        .collect()
}
