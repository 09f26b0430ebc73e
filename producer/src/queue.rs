//! The `Queue` handle.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use quern_common::fields;
use quern_common::keys::{ACTIVE_PIN, QueueKeys};
use quern_common::moves::{
    Add, Cancel, Counts, DEFAULT_EVENTS_MAX_LEN, DeadLetter, DeadLetterAction, Limit, Move, Obliterate,
    ObliterateStatus, Pause, Promote, Remove,
};
use quern_common::names;
use quern_common::scripts::{self, ScriptCall};
use quern_common::stats::{self, QueueStats, Resolution, StatsPoint};
use quern_common::{
    Added, Error, JobEntry, JobInfo, JobOptions, JobState, NewJob, QueueCounts, QueueScripts, RateLimit,
    RedisConfig, ReplicaAcks, Result, ScriptCode, SelfHealingConnection, UnreadableJob, WorkerInfo,
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
    inner: Arc<QueueInner>,
    /// Started on the first add (it needs the caller's Tokio runtime).
    batcher: Arc<OnceLock<AddBatcher>>,
}

struct QueueInner {
    conn: SelfHealingConnection,
    /// Where to open dedicated connections for blocking reads (waits).
    config: RedisConfig,
    scripts: QueueScripts,
    max_payload_bytes: usize,
    /// Replicas every add waits for, if any.
    replica_acks: Option<ReplicaAcks>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name()).field("prefix", &self.keys().prefix()).finish()
    }
}

/// Settings for a [`Queue`] beyond its name and Redis.
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    name: String,
    config: RedisConfig,
    max_payload_bytes: usize,
    events_max_len: u64,
    replica_acks: Option<ReplicaAcks>,
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

    /// Make every add return only once `replicas` replicas hold it, waiting
    /// at most `timeout` (shorter than the Redis response timeout). A `WAIT`
    /// goes in the same pipeline as the add: no extra round trip, but each add
    /// waits for replication, and so do the calls queued behind it on the
    /// shared connection. When fewer replicas acknowledge in time, the add
    /// fails with [`Error::NotReplicated`] (retryable), although the job *was*
    /// added on the master: retrying an add with an explicit job id
    /// ([`JobOptions::job_id`]) is idempotent, while retrying an add with a
    /// generated id may add the job twice. Other calls (cancel, retry, ...)
    /// do not wait.
    pub fn replica_acks(mut self, replicas: u32, timeout: std::time::Duration) -> Self {
        self.replica_acks = Some(ReplicaAcks::new(replicas, timeout));
        self
    }

    /// Connect and register the queue name.
    pub async fn connect(self) -> Result<Queue> {
        // Bad names and settings are refused before any network wait.
        QueueKeys::new(&self.config.prefix, &self.name)?;
        self.check_replica_acks()?;
        let conn = self.config.connect().await?;
        let queue = self.with_connection(conn)?;
        queue.register().await?;
        Ok(queue)
    }

    /// Use an existing connection (share one among many queues). Does not
    /// register the queue name; [`Queue::add`] works all the same.
    pub fn with_connection(self, conn: SelfHealingConnection) -> Result<Queue> {
        let keys = QueueKeys::new(&self.config.prefix, &self.name)?;
        self.check_replica_acks()?;
        Ok(Queue {
            batcher: Arc::new(OnceLock::new()),
            inner: Arc::new(QueueInner {
                conn,
                config: self.config,
                scripts: QueueScripts::new(keys, self.events_max_len),
                max_payload_bytes: self.max_payload_bytes,
                replica_acks: self.replica_acks,
            }),
        })
    }

    fn check_replica_acks(&self) -> Result<()> {
        match &self.replica_acks {
            Some(acks) => acks.check(self.config.response_timeout),
            None => Ok(()),
        }
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
            replica_acks: None,
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
        self.inner.scripts.queue()
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        self.inner.scripts.keys()
    }

    /// A clone of the underlying connection (cheap; shares the socket).
    pub fn connection(&self) -> SelfHealingConnection {
        self.conn()
    }

    fn conn(&self) -> SelfHealingConnection {
        self.inner.conn.clone()
    }

    /// About how many entries the queue's events stream keeps.
    pub(crate) fn events_max_len(&self) -> u64 {
        self.inner.scripts.events_max_len()
    }

    /// The largest payload this handle adds, in bytes.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes
    }

    /// The Redis settings this handle was built with.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Run state move `m` on this queue.
    pub(crate) async fn run<M: Move>(&self, m: &M) -> Result<M::Reply> {
        self.inner.scripts.run(&mut self.conn(), m).await
    }

    async fn register(&self) -> Result<()> {
        let mut conn = self.conn();
        let _: i64 = conn.sadd(QueueKeys::registry(self.keys().prefix()), self.name()).await?;
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
        self.add_one(NewJob::new(name, payload)?.options(traced(options))).await
    }

    /// Add a job whose payload is JSON text (checked to be valid JSON).
    pub async fn add_json(&self, name: &str, json: &str, options: JobOptions) -> Result<Added> {
        self.add_one(NewJob::from_json(name, json)?.options(traced(options))).await
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
        let adds: Vec<Add<'_>> = jobs.chunks(BULK_CHUNK).map(|jobs| Add { jobs }).collect();
        let calls: Vec<ScriptCall> = adds.iter().map(|add| self.inner.scripts.call(add)).collect();
        let mut out = Vec::with_capacity(jobs.len());
        let acks = self.inner.replica_acks.as_ref();
        let (results, acked) = scripts::run_pipelined_acked(&mut self.conn(), &calls, acks).await?;
        for (result, add) in results.into_iter().zip(&adds) {
            out.extend(add.parse(result?)?);
        }
        acked?;
        Ok(out)
    }

    /// Validate here (errors belong to the caller), then leave through the
    /// batcher, which combines concurrent adds into one script call.
    async fn add_one(&self, job: NewJob) -> Result<Added> {
        self.validate(&job)?;
        self.batcher
            .get_or_init(|| {
                AddBatcher::start(self.conn(), self.inner.scripts.clone(), self.inner.replica_acks)
            })
            .add(job)
            .await
    }

    fn validate(&self, job: &NewJob) -> Result<()> {
        names::validate_job_name(job.name())?;
        job.job_options().validate()?;
        if job.payload_len() > self.inner.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: job.payload_len(),
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

    /// The state of job `id` alone (one field read: cheap whatever the job
    /// holds, such as a parent's thousands of children), or `None` when
    /// there is no such job. A state this version does not know is
    /// [`Error::InvalidOptions`].
    pub async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
        let stored: Option<String> = self.conn().hget(self.keys().job(id), fields::STATE).await?;
        stored.map(|s| s.parse()).transpose()
    }

    /// Job counts per state, read atomically.
    pub async fn counts(&self) -> Result<QueueCounts> {
        self.run(&Counts).await
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
        let k = self.keys();
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
                    if ids.len() < limit {
                        let listed = listed + conn.zcard::<_, usize>(k.prioritized()).await?;
                        let skip = offset.saturating_sub(listed);
                        ids.extend(self.held_ids(skip, limit - ids.len()).await?);
                    }
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
            JobState::WaitingChildren => conn.zrange(k.waiting_children(), start, stop).await?,
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
    pub(crate) async fn read_jobs(&self, ids: &[String]) -> Result<Vec<Option<JobEntry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in ids {
            pipe.hgetall(self.keys().job(id));
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
    pub(crate) async fn still_listed(&self, state: JobState, id: &str) -> Result<bool> {
        let k = self.keys();
        let mut conn = self.conn();
        let in_list = |key: &str| redis::cmd("LPOS").arg(key).arg(id).to_owned();
        Ok(match state {
            JobState::Waiting => {
                let at: Option<i64> = in_list(k.wait()).query_async(&mut conn).await?;
                let score: Option<f64> = conn.zscore(k.prioritized(), id).await?;
                let mut listed = at.is_some() || score.is_some();
                for key in self.held_keys().await? {
                    if listed {
                        break;
                    }
                    let list = k.key_held_list(&key);
                    listed = in_list(&list).query_async::<Option<i64>>(&mut conn).await?.is_some();
                }
                listed
            }
            JobState::Delayed => conn.zscore::<_, _, Option<f64>>(k.delayed(), id).await?.is_some(),
            JobState::Active => conn.zscore::<_, _, Option<f64>>(k.active(), id).await?.is_some(),
            JobState::Completed => {
                in_list(k.completed()).query_async::<Option<i64>>(&mut conn).await?.is_some()
            }
            JobState::Failed => conn.zscore::<_, _, Option<f64>>(k.dead_letter(), id).await?.is_some(),
            JobState::WaitingChildren => {
                conn.zscore::<_, _, Option<f64>>(k.waiting_children(), id).await?.is_some()
            }
        })
    }

    /// Keys with jobs held aside for their concurrency key, sorted.
    async fn held_keys(&self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self.conn().hkeys(self.keys().keys_held()).await?;
        keys.sort();
        Ok(keys)
    }

    /// Ids of jobs held aside for their concurrency key (waiting too), key
    /// by key: `limit` of them after skipping `offset`.
    async fn held_ids(&self, offset: usize, limit: usize) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let (mut skip, mut ids) = (offset, Vec::new());
        for key in self.held_keys().await? {
            if ids.len() >= limit {
                break;
            }
            let list = self.keys().key_held_list(&key);
            let len: usize = conn.llen(&list).await?;
            if skip >= len {
                skip -= len;
                continue;
            }
            let want = (limit - ids.len()) as isize;
            let more: Vec<String> = conn.lrange(&list, skip as isize, skip as isize + want - 1).await?;
            skip = 0;
            ids.extend(more);
        }
        Ok(ids)
    }

    /// Remove a job that is not active. A flow's parent waiting for its
    /// children takes with it its children that have not ended (and
    /// theirs), a running one too (its lease revoked): see [`Queue::cancel`]
    /// for how and when.
    pub async fn remove(&self, id: &str) -> Result<()> {
        match self.run(&Remove { id }).await?.to_error(self.name(), id) {
            Some(e) => Err(e),
            None => self.settle_flows().await,
        }
    }

    /// Carry a cancelled or removed parent's end to its children, in this
    /// queue and the queues they live in (see
    /// [`quern_common::flow::settle_flows`]). Cheap when there is nothing
    /// to do: three script calls that find nothing.
    async fn settle_flows(&self) -> Result<()> {
        quern_common::flow::settle_flows(&mut self.conn(), &self.inner.scripts).await
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
        self.run(&Promote { batch: PROMOTE_BATCH, ids }).await
    }

    /// Stop job `id` for good, with `reason` as its error: a waiting or
    /// delayed job never runs; a running one loses its lease (its worker
    /// learns at its next renewal, a third of the lease at most, and its
    /// result is refused; the stock `command` kind kills its process group).
    /// The job lands in the dead-letter list, where `retry_dead_letter` can
    /// run it again.
    ///
    /// A flow's parent waiting for its children: its children that have
    /// not ended are cancelled too (and theirs, down the flow), each with
    /// the error `parent <queue>/<id> cancelled: <reason>`. Those in this
    /// queue go in script calls of at most 100 children each; those in
    /// other queues through a stop record this queue keeps until it is
    /// applied in theirs. This call carries the cascade as far as it can
    /// before it returns; if it is cut short (a crash, Redis unreachable),
    /// the reaper of any worker of the queues concerned finishes it.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<()> {
        let code = self.run(&Cancel { id, reason }).await?;
        let (queue, id) = (self.name().to_owned(), id.to_owned());
        match code {
            ScriptCode::Ok => self.settle_flows().await,
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
    ///
    /// Flows stay whole: a job deleted before it ended whose parent is in
    /// another queue is reported to that parent as removed (a failure under
    /// the edge's policy) through the queue's flow outbox, and the outbox
    /// (with the outcomes of children that ended and were not relayed yet)
    /// is relayed to the parents' queues before the queue's last keys go.
    /// No parent elsewhere is left waiting for a child deleted here.
    pub async fn obliterate(&self, force: bool) -> Result<u64> {
        let mut total = 0;
        let mut drop_unreadable = false;
        loop {
            let reply = self.run(&Obliterate { batch: OBLITERATE_BATCH, force, drop_unreadable }).await?;
            total += reply.deleted;
            match reply.status {
                ObliterateStatus::More => continue,
                ObliterateStatus::Relay => {
                    let relayed =
                        quern_common::flow::relay_outbox(&mut self.conn(), &self.inner.scripts).await?;
                    // Records that cannot be read can never be applied
                    // (they were logged): the next call deletes them.
                    drop_unreadable = relayed.moved == 0 && relayed.stops == 0 && relayed.unreadable > 0;
                }
                ObliterateStatus::Done => break,
                ObliterateStatus::Busy => {
                    let running = self.counts().await?.active;
                    let workers = self.workers().await?.len() as u64;
                    return Err(Error::QueueInUse { queue: self.name().to_owned(), running, workers });
                }
                other => return Err(Error::Protocol(format!("obliterate answered {other}"))),
            }
        }
        let _: i64 = self.conn().srem(QueueKeys::registry(self.keys().prefix()), self.name()).await?;
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
        self.run(&Pause { paused }).await
    }

    /// Limit how many jobs of this queue start per window, across all its
    /// workers (`None` removes the limit). Takes effect at the workers' next
    /// fetch and starts a fresh window. A limited queue hands no job straight
    /// to a parked worker: every start goes through a fetch, where it counts.
    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        self.run(&Limit { limit }).await
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

    /// The queue's counters since it began: dead-lettered, retried and
    /// stalled jobs, and the run and wait time histograms of completed jobs
    /// (see [`quern_common::stats`]).
    pub async fn stats(&self) -> Result<QueueStats> {
        // Unreadable values (a hand-edited hash) are skipped, not an error.
        let fields: Vec<(String, String)> = self.conn().hgetall(self.keys().stats()).await?;
        Ok(QueueStats::from_fields(fields.iter().filter_map(|(k, v)| Some((k.as_str(), v.parse().ok()?)))))
    }

    /// What the counters gained per minute or hour: `slots` points, oldest
    /// first, the last being the current (unfinished) minute or hour. Quiet
    /// slots are zero. Minutes reach back 24 hours and hours 30 days; the
    /// per-slot figures are filed by the workers' reapers once per slot, so
    /// a time with no worker running files nothing until one runs again.
    pub async fn stats_series(&self, resolution: Resolution, slots: usize) -> Result<Vec<StatsPoint>> {
        let slots = slots.clamp(1, resolution.kept() as usize);
        let mut conn = self.conn();
        let now = quern_common::connection::redis_time_ms(&mut conn).await?;
        let key = match resolution {
            Resolution::Minute => self.keys().stats_minutes(),
            Resolution::Hour => self.keys().stats_hours(),
        };
        let now_slot = now / resolution.millis();
        let wanted: Vec<u64> = (0..slots as u64).map(|back| now_slot.saturating_sub(back)).collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&key).arg("last").arg(&wanted);
        let mut read: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        let totals = self.stats().await?;
        let last = read.first_mut().and_then(Option::take);
        let current = totals.since(&last.as_deref().map(QueueStats::from_text).unwrap_or(totals));
        let filed: HashMap<u64, QueueStats> = wanted
            .iter()
            .zip(read.iter().skip(1))
            .filter_map(|(slot, text)| Some((*slot, QueueStats::from_text(text.as_deref()?))))
            .collect();
        Ok(stats::series(resolution, now, slots, &filed, current))
    }

    /// How long the oldest waiting job has waited since it was added (delays
    /// included), judged by the heads of the waiting list and of the
    /// prioritized set: `None` when nothing waits.
    pub async fn oldest_waiting_age(&self) -> Result<Option<std::time::Duration>> {
        let mut conn = self.conn();
        let k = self.keys();
        let now = quern_common::connection::redis_time_ms(&mut conn).await?;
        let mut heads: Vec<String> = conn.lrange(k.wait(), 0, 0).await?;
        let prio: Vec<String> = conn.zrange(k.prioritized(), 0, 0).await?;
        heads.extend(prio);
        let mut oldest: Option<u64> = None;
        for id in heads {
            let created: Option<String> = conn.hget(k.job(&id), fields::CREATED).await?;
            if let Some(t) = created.and_then(|t| t.parse::<u64>().ok()) {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        Ok(oldest.map(|t| std::time::Duration::from_millis(now.saturating_sub(t))))
    }

    /// Record in the queue's events stream that `actor` did `action`, with
    /// `details` (e.g. `("id", job id)`): an [`EventKind::Operator`] entry, so
    /// who did what stays beside the moves' own events. Tools that act for
    /// people (the dashboard) call it after each action.
    ///
    /// [`EventKind::Operator`]: quern_common::EventKind::Operator
    pub async fn record_operator_action(
        &self,
        actor: &str,
        action: &str,
        details: &[(&str, &str)],
    ) -> Result<()> {
        let max_len = self.inner.scripts.events_max_len();
        if max_len == 0 {
            return Ok(());
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys().events()).arg("MAXLEN").arg("~").arg(max_len).arg("*");
        cmd.arg("ev").arg("operator").arg("actor").arg(actor).arg("action").arg(action);
        for (k, v) in details {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Jobs in the dead-letter list, newest first: [`Queue::jobs`] of
    /// [`JobState::Failed`], so a corrupt record is marked, not fatal.
    pub async fn dead_letters(&self, offset: usize, limit: usize) -> Result<Vec<JobEntry>> {
        self.jobs(JobState::Failed, offset, limit).await
    }

    /// Move one dead-lettered job back to waiting with a fresh attempt budget.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<()> {
        let done = self.dead_letter_action(DeadLetterAction::Retry, &[id]).await?;
        if done.is_empty() { Err(self.not_dead_lettered(id).await) } else { Ok(()) }
    }

    /// Move dead-lettered job `id` back to waiting to run again from its
    /// durable step `step` (`NAME`, its first occurrence, or `NAME#N`): that
    /// step and every step stored after it are forgotten and run again; the
    /// steps stored before it keep their results. Fails with
    /// [`Error::UnknownStep`] when the job has no such step (nothing moves).
    pub async fn retry_dead_letter_from_step(&self, id: &str, step: &str) -> Result<()> {
        let key = quern_common::steps::parse_step_ref(step)?;
        let ids = [id];
        let done = self
            .run(&DeadLetter { action: DeadLetterAction::Retry, batch: 1, ids: &ids, from_step: Some(&key) })
            .await?;
        if !done.is_empty() {
            return Ok(());
        }
        match self.job(id).await? {
            Some(job) if job.state == JobState::Failed => {
                let stored: Vec<String> = job.steps.iter().map(|s| s.key()).collect();
                Err(Error::UnknownStep {
                    queue: self.name().to_owned(),
                    id: id.to_owned(),
                    step: key,
                    stored: if stored.is_empty() { "none".to_owned() } else { stored.join(", ") },
                })
            }
            _ => Err(self.not_dead_lettered(id).await),
        }
    }

    /// Move every dead-lettered job back to waiting. Returns how many moved.
    pub async fn retry_all_dead_letters(&self) -> Result<u64> {
        self.drain_dead_letters(DeadLetterAction::Retry).await
    }

    /// Delete one dead-lettered job.
    pub async fn purge_dead_letter(&self, id: &str) -> Result<()> {
        let done = self.dead_letter_action(DeadLetterAction::Purge, &[id]).await?;
        if done.is_empty() { Err(self.not_dead_lettered(id).await) } else { Ok(()) }
    }

    /// Delete every dead-lettered job. Returns how many were deleted.
    pub async fn purge_dead_letters(&self) -> Result<u64> {
        self.drain_dead_letters(DeadLetterAction::Purge).await
    }

    async fn not_dead_lettered(&self, id: &str) -> Error {
        let (queue, id) = (self.name().to_owned(), id.to_owned());
        match self.job(&id).await {
            Ok(None) => Error::JobNotFound { queue, id },
            Ok(Some(_)) => Error::NotDeadLettered { queue, id },
            Err(e) => e,
        }
    }

    async fn drain_dead_letters(&self, action: DeadLetterAction) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = self.dead_letter_action(action, &[]).await?;
            total += done.len() as u64;
            if done.len() < DEAD_LETTER_BATCH {
                return Ok(total);
            }
        }
    }

    async fn dead_letter_action(&self, action: DeadLetterAction, ids: &[&str]) -> Result<Vec<String>> {
        self.run(&DeadLetter { action, batch: DEAD_LETTER_BATCH, ids, from_step: None }).await
    }
}

/// `options` with the current span's trace context, when built with the
/// feature `otel`, the span belongs to an OpenTelemetry trace and the
/// options name no trace parent of their own.
fn traced(options: JobOptions) -> JobOptions {
    #[cfg(feature = "otel")]
    if options.trace_parent.is_none()
        && let Some(traceparent) = crate::otel::current_trace_parent()
    {
        return options.trace_parent(traceparent);
    }
    options
}

/// Every queue name registered under `config`'s prefix, sorted.
pub async fn known_queues(conn: &mut SelfHealingConnection, prefix: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = conn.smembers(QueueKeys::registry(prefix)).await?;
    names.sort();
    Ok(names)
}
