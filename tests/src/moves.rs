//! Driving the Lua scripts one state move at a time, as a worker would, so
//! tests can check each move and each result code without a worker runtime.

use std::collections::HashMap;
use std::time::Duration;

use quern_common::keys::{ACTIVE_PIN, QueueKeys};
use quern_common::scripts::{self, DEFAULT_EVENTS_MAX_LEN, ScriptCall, ScriptName};
use quern_common::{RedisConfig, ScriptCode};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// A job as the fetch script hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// Job id.
    pub id: String,
    /// Fencing token of this lease.
    pub token: String,
    /// Attempt number (1 for the first).
    pub attempt: i64,
    /// Job name.
    pub name: String,
    /// Payload JSON.
    pub payload: String,
    /// Stored options ('' = defaults).
    pub options: String,
}

/// The reply of one fetch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The queue is paused.
    pub paused: bool,
    /// Milliseconds until the next delayed job is due (-1: none or a full batch).
    pub next_delayed_ms: i64,
    /// The jobs leased.
    pub jobs: Vec<Leased>,
}

impl Fetched {
    /// The ids leased, in order.
    pub fn ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }
}

/// The reply of one reap call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Ids sent back to waiting.
    pub recovered: Vec<String>,
    /// Ids dead-lettered for stalling too often.
    pub dead: Vec<String>,
    /// Completed jobs trimmed by age.
    pub trimmed: i64,
}

/// Calls the scripts of one queue on a plain connection; panics on any Redis error.
#[derive(Clone)]
pub struct Mover {
    conn: MultiplexedConnection,
    keys: QueueKeys,
}

impl std::fmt::Debug for Mover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mover").field("queue", &self.keys.base()).finish()
    }
}

impl Mover {
    /// A mover for `queue` under `config`'s prefix.
    pub async fn new(config: &RedisConfig, queue: &str) -> Self {
        let keys = QueueKeys::new(&config.prefix, queue).expect("valid queue name");
        Self { conn: crate::raw_connection(config).await, keys }
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// A clone of the connection, for inspecting keys.
    pub fn conn(&self) -> MultiplexedConnection {
        self.conn.clone()
    }

    fn call(&self, name: ScriptName) -> ScriptCall {
        ScriptCall::new(name, &self.keys, DEFAULT_EVENTS_MAX_LEN)
    }

    /// Lease up to `k` jobs to `worker`.
    pub async fn fetch(&self, k: usize, lease: Duration, worker: &str) -> Fetched {
        self.fetch_call(self.fetch_args(k, lease, worker)).await
    }

    /// Lease up to `k` jobs to `worker`, which parks as `member` for `ttl`
    /// if the batch comes back short (as a worker's fetch does).
    pub async fn fetch_parking(
        &self,
        k: usize,
        lease: Duration,
        worker: &str,
        member: &str,
        ttl: Duration,
    ) -> Fetched {
        let mut call = self.fetch_args(k, lease, worker);
        call.arg(member).arg(ttl.as_millis() as u64);
        self.fetch_call(call).await
    }

    fn fetch_args(&self, k: usize, lease: Duration, worker: &str) -> ScriptCall {
        let mut call = self.call(ScriptName::Fetch);
        call.arg(k).arg(lease.as_millis() as u64).arg(worker).arg(1000);
        call
    }

    async fn fetch_call(&self, call: ScriptCall) -> Fetched {
        let reply = scripts::parse_fetch(call.run(&mut self.conn.clone()).await.expect("fetch"))
            .expect("fetch reply");
        let jobs = reply
            .jobs
            .into_iter()
            .map(|j| Leased {
                id: j.id,
                token: j.token,
                attempt: i64::from(j.attempt),
                name: j.name,
                payload: j.payload,
                options: j.options,
            })
            .collect();
        Fetched {
            paused: reply.paused,
            next_delayed_ms: reply.next_delayed_ms.map_or(-1, |ms| ms as i64),
            jobs,
        }
    }

    /// Acknowledge `(id, token, result)` triples, keeping `keep` completed jobs
    /// (-1: all). One code per job.
    pub async fn complete(&self, keep: i64, jobs: &[(&str, &str, &str)]) -> Vec<ScriptCode> {
        let mut call = self.call(ScriptName::Complete);
        call.arg(keep);
        for (id, token, result) in jobs {
            call.arg(*id).arg(*token).arg(*result);
        }
        let codes: Vec<i64> = call.run(&mut self.conn.clone()).await.expect("complete");
        codes.into_iter().map(|c| ScriptCode::from_code(c).expect("known code")).collect()
    }

    /// Record a failed attempt; `delay_ms` -1 dead-letters.
    pub async fn fail(&self, id: &str, token: &str, message: &str, kind: &str, delay_ms: i64) -> ScriptCode {
        let mut call = self.call(ScriptName::Fail);
        call.arg(id).arg(token).arg(message).arg(kind).arg(delay_ms);
        let code: i64 = call.run(&mut self.conn.clone()).await.expect("fail");
        ScriptCode::from_code(code).expect("known code")
    }

    /// Renew `(id, token)` leases; returns the ids whose lease is lost.
    pub async fn renew(&self, lease: Duration, jobs: &[(&str, &str)]) -> Vec<String> {
        self.renew_recording(lease, "", jobs).await
    }

    /// Renew leases, recording `worker` as the jobs' worker unless it is ''.
    async fn renew_recording(&self, lease: Duration, worker: &str, jobs: &[(&str, &str)]) -> Vec<String> {
        let mut call = self.call(ScriptName::Renew);
        call.arg(lease.as_millis() as u64).arg(worker);
        for (id, token) in jobs {
            call.arg(*id).arg(*token);
        }
        call.run(&mut self.conn.clone()).await.expect("renew")
    }

    /// Hand `(id, token)` leases back; returns how many were released.
    pub async fn release(&self, jobs: &[(&str, &str)]) -> i64 {
        let mut call = self.call(ScriptName::Release);
        for (id, token) in jobs {
            call.arg(*id).arg(*token);
        }
        call.run(&mut self.conn.clone()).await.expect("release")
    }

    /// Register `worker` as parked (as its short fetch would) for `ttl`, with
    /// hand-offs leased for `lease`. Returns the parking member.
    pub async fn park(&self, worker: &str, lease: Duration, ttl: Duration) -> String {
        let member = format!("{} {worker}", lease.as_millis());
        let until = self.now_ms().await + ttl.as_millis() as u64;
        let _: () = redis::cmd("ZADD")
            .arg(self.keys.parked())
            .arg(until)
            .arg(&member)
            .query_async(&mut self.conn.clone())
            .await
            .expect("park");
        member
    }

    /// The parking members of the queue, earliest lapse first.
    pub async fn parked(&self) -> Vec<String> {
        self.zset_ids(self.keys.parked()).await
    }

    /// The records on the hand-off list, parsed.
    pub async fn handoffs(&self) -> Vec<scripts::LeasedJob> {
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.handoff())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .expect("handoff list");
        records.iter().map(|r| scripts::parse_handoff(r).expect("hand-off record")).collect()
    }

    /// Claim handed-over `(id, token)` leases for `worker`; the lost ids.
    pub async fn claim(&self, lease: Duration, worker: &str, jobs: &[(&str, &str)]) -> Vec<String> {
        self.renew_recording(lease, worker, jobs).await
    }

    /// Record progress `json` of job `id` as the holder of lease `token`.
    pub async fn progress(&self, id: &str, token: &str, json: &str) -> ScriptCode {
        let mut call = self.call(ScriptName::Progress);
        call.arg(id).arg(token).arg(json);
        let code: i64 = call.run(&mut self.conn.clone()).await.expect("progress");
        ScriptCode::from_code(code).expect("known code")
    }

    /// Unpark `member`; how many unclaimed hand-offs went back to waiting.
    pub async fn unpark(&self, member: &str) -> i64 {
        let mut call = self.call(ScriptName::Unpark);
        call.arg(member);
        call.run(&mut self.conn.clone()).await.expect("unpark")
    }

    /// Run the reaper once.
    pub async fn reap(&self, max_stalls: u32, limit: usize, max_age_ms: u64) -> Reaped {
        let mut call = self.call(ScriptName::Reap);
        call.arg(max_stalls).arg(limit).arg(max_age_ms);
        let (recovered, dead, trimmed): (Vec<String>, Vec<String>, i64) =
            call.run(&mut self.conn.clone()).await.expect("reap");
        Reaped { recovered, dead, trimmed }
    }

    /// Remove a job; the raw code.
    pub async fn remove(&self, id: &str) -> ScriptCode {
        let mut call = self.call(ScriptName::Remove);
        call.arg(id);
        let code: i64 = call.run(&mut self.conn.clone()).await.expect("remove");
        ScriptCode::from_code(code).expect("known code")
    }

    /// The fields of job `id`'s hash.
    pub async fn hash(&self, id: &str) -> HashMap<String, String> {
        self.conn.clone().hgetall(self.keys.job(id)).await.expect("hgetall")
    }

    /// One field of job `id`'s hash.
    pub async fn field(&self, id: &str, field: &str) -> Option<String> {
        self.conn.clone().hget(self.keys.job(id), field).await.expect("hget")
    }

    /// The priority-0 waiting list, head first.
    pub async fn wait_list(&self) -> Vec<String> {
        self.conn.clone().lrange(self.keys.wait(), 0, -1).await.expect("lrange")
    }

    /// Members of a sorted set of the queue, lowest score first (without the
    /// active set's pin, which is not a job).
    pub async fn zset(&self, key: &str) -> Vec<(String, f64)> {
        let all: Vec<(String, f64)> = self.conn.clone().zrange_withscores(key, 0, -1).await.expect("zrange");
        all.into_iter().filter(|(id, _)| id != ACTIVE_PIN).collect()
    }

    /// The ids of a sorted set of the queue, lowest score first (without the
    /// active set's pin).
    pub async fn zset_ids(&self, key: &str) -> Vec<String> {
        self.zset(key).await.into_iter().map(|(id, _)| id).collect()
    }

    /// The completed list, oldest first.
    pub async fn completed_list(&self) -> Vec<String> {
        self.conn.clone().lrange(self.keys.completed(), 0, -1).await.expect("lrange")
    }

    /// Redis' clock in ms.
    pub async fn now_ms(&self) -> u64 {
        quern_common::connection::redis_time_ms(&mut self.conn.clone()).await.expect("TIME")
    }

    /// The `ev` field of every entry of the events stream, oldest first.
    pub async fn events(&self) -> Vec<String> {
        let reply: redis::streams::StreamRangeReply =
            self.conn.clone().xrange_all(self.keys.events()).await.expect("xrange");
        reply.ids.iter().map(|e| e.get::<String>("ev").unwrap_or_default()).collect()
    }

    /// Every entry of the events stream as field -> value, oldest first.
    pub async fn event_entries(&self) -> Vec<HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply =
            self.conn.clone().xrange_all(self.keys.events()).await.expect("xrange");
        reply
            .ids
            .iter()
            .map(|e| e.map.keys().map(|k| (k.clone(), e.get::<String>(k).unwrap_or_default())).collect())
            .collect()
    }
}
