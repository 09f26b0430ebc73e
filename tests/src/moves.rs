//! Driving the Lua scripts one state move at a time, as a worker would, so
//! tests can check each move and each result code without a worker runtime.

use std::collections::HashMap;
use std::time::Duration;

use quern_common::keys::{ACTIVE_PIN, QueueKeys};
use quern_common::moves::{
    Ack, Complete, DEFAULT_EVENTS_MAX_LEN, Fail, Fetch, FetchReply, LeasedJob, Listing, Move, Parking,
    Progress, Reap, ReapReply, Release, Remove, Renew, Unpark,
};
use quern_common::{FailureKind, QueueScripts, RedisConfig, ScriptCode, SelfHealingConnection};
use redis::AsyncCommands;

/// Calls the scripts of one queue on a plain connection; panics on any Redis error.
#[derive(Clone)]
pub struct Mover {
    conn: SelfHealingConnection,
    scripts: QueueScripts,
}

impl std::fmt::Debug for Mover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mover").field("queue", &self.keys().base()).finish()
    }
}

impl Mover {
    /// A mover for `queue` under `config`'s prefix.
    pub async fn new(config: &RedisConfig, queue: &str) -> Self {
        let keys = QueueKeys::new(&config.prefix, queue).expect("valid queue name");
        Self {
            conn: crate::raw_connection(config).await,
            scripts: QueueScripts::new(keys, DEFAULT_EVENTS_MAX_LEN),
        }
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        self.scripts.keys()
    }

    /// Run state move `m`; panics on a Redis error.
    pub async fn run<M: Move>(&self, m: &M) -> M::Reply {
        match self.scripts.run(&mut self.conn.clone(), m).await {
            Ok(reply) => reply,
            Err(e) => panic!("{}: {e}", M::SCRIPT.file_stem()),
        }
    }

    /// A clone of the connection, for inspecting keys.
    pub fn conn(&self) -> SelfHealingConnection {
        self.conn.clone()
    }

    /// Lease up to `k` jobs to `worker`.
    pub async fn fetch(&self, k: usize, lease: Duration, worker: &str) -> FetchReply {
        self.run(&Fetch { want: k, lease, worker, promote_limit: 1000, parking: None }).await
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
    ) -> FetchReply {
        let parking = Some(Parking { member, ttl });
        self.run(&Fetch { want: k, lease, worker, promote_limit: 1000, parking }).await
    }

    /// Acknowledge `(id, token, result)` triples, keeping `keep` completed jobs
    /// (-1: all). One code per job.
    pub async fn complete(&self, keep: i64, jobs: &[(&str, &str, &str)]) -> Vec<ScriptCode> {
        let acks: Vec<Ack> = jobs
            .iter()
            .map(|(id, token, result)| Ack {
                id: (*id).into(),
                token: (*token).into(),
                result: (*result).into(),
                run_ms: 0,
                wait_ms: 0,
            })
            .collect();
        self.run(&Complete { keep: u64::try_from(keep).ok(), acks: &acks }).await
    }

    /// Record a failed attempt of `kind`; `delay_ms` -1 dead-letters.
    pub async fn fail(
        &self,
        id: &str,
        token: &str,
        message: &str,
        kind: FailureKind,
        delay_ms: i64,
    ) -> ScriptCode {
        let retry_in = u64::try_from(delay_ms).ok().map(Duration::from_millis);
        self.run(&Fail { id, token, message, kind, retry_in }).await
    }

    /// Renew `(id, token)` leases; returns the ids whose lease is lost.
    pub async fn renew(&self, lease: Duration, jobs: &[(&str, &str)]) -> Vec<String> {
        self.run(&Renew { lease, claimer: None, leases: &owned(jobs) }).await
    }

    /// Hand `(id, token)` leases back; returns how many were released.
    pub async fn release(&self, jobs: &[(&str, &str)]) -> u64 {
        self.run(&Release { leases: &owned(jobs) }).await
    }

    /// Register `worker` as parked (as its short fetch would) for `ttl`, with
    /// hand-offs leased for `lease`. Returns the parking member.
    pub async fn park(&self, worker: &str, lease: Duration, ttl: Duration) -> String {
        let member = format!("{} {worker}", lease.as_millis());
        let until = self.now_ms().await + ttl.as_millis() as u64;
        let _: () = redis::cmd("ZADD")
            .arg(self.keys().parked())
            .arg(until)
            .arg(&member)
            .query_async(&mut self.conn.clone())
            .await
            .expect("park");
        member
    }

    /// The parking members of the queue, earliest lapse first.
    pub async fn parked(&self) -> Vec<String> {
        self.zset_ids(self.keys().parked()).await
    }

    /// The records on the hand-off list, parsed.
    pub async fn handoffs(&self) -> Vec<LeasedJob> {
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys().handoff())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .expect("handoff list");
        records.iter().map(|r| LeasedJob::from_handoff(r).expect("hand-off record")).collect()
    }

    /// Claim handed-over `(id, token)` leases for `worker`; the lost ids.
    pub async fn claim(&self, lease: Duration, worker: &str, jobs: &[(&str, &str)]) -> Vec<String> {
        self.run(&Renew { lease, claimer: Some(worker), leases: &owned(jobs) }).await
    }

    /// Record progress `json` of job `id` as the holder of lease `token`.
    pub async fn progress(&self, id: &str, token: &str, json: &str) -> ScriptCode {
        self.run(&Progress { id, token, json }).await
    }

    /// Unpark `member`; how many unclaimed hand-offs went back to waiting.
    pub async fn unpark(&self, member: &str) -> u64 {
        self.run(&Unpark { parking: member, listing: Listing::Unchanged }).await
    }

    /// Run the reaper once.
    pub async fn reap(&self, max_stalls: u32, limit: usize, max_age_ms: u64) -> ReapReply {
        let max_age = (max_age_ms > 0).then(|| Duration::from_millis(max_age_ms));
        self.run(&Reap { max_stalls, batch: limit, max_age, registration: None }).await
    }

    /// Remove a job; the raw code.
    pub async fn remove(&self, id: &str) -> ScriptCode {
        self.run(&Remove { id }).await
    }

    /// The fields of job `id`'s hash.
    pub async fn hash(&self, id: &str) -> HashMap<String, String> {
        self.conn.clone().hgetall(self.keys().job(id)).await.expect("hgetall")
    }

    /// One field of job `id`'s hash.
    pub async fn field(&self, id: &str, field: &str) -> Option<String> {
        self.conn.clone().hget(self.keys().job(id), field).await.expect("hget")
    }

    /// The priority-0 waiting list, head first.
    pub async fn wait_list(&self) -> Vec<String> {
        self.conn.clone().lrange(self.keys().wait(), 0, -1).await.expect("lrange")
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
        self.conn.clone().lrange(self.keys().completed(), 0, -1).await.expect("lrange")
    }

    /// Redis' clock in ms.
    pub async fn now_ms(&self) -> u64 {
        quern_common::connection::redis_time_ms(&mut self.conn.clone()).await.expect("TIME")
    }

    /// The `ev` field of every entry of the events stream, oldest first.
    pub async fn events(&self) -> Vec<String> {
        let reply: redis::streams::StreamRangeReply =
            self.conn.clone().xrange_all(self.keys().events()).await.expect("xrange");
        reply.ids.iter().map(|e| e.get::<String>("ev").unwrap_or_default()).collect()
    }

    /// Every entry of the events stream as field -> value, oldest first.
    pub async fn event_entries(&self) -> Vec<HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply =
            self.conn.clone().xrange_all(self.keys().events()).await.expect("xrange");
        reply
            .ids
            .iter()
            .map(|e| e.map.keys().map(|k| (k.clone(), e.get::<String>(k).unwrap_or_default())).collect())
            .collect()
    }
}

fn owned(leases: &[(&str, &str)]) -> Vec<(String, String)> {
    leases.iter().map(|(id, token)| ((*id).to_owned(), (*token).to_owned())).collect()
}
