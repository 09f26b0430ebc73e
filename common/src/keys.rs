//! Redis key layout. Every key of queue `q` is `<prefix>:{q}:<suffix>`, so all
//! of a queue's keys hash to one cluster slot and every script touches one slot.

use crate::Result;
use crate::names;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "quern";

/// A member the fetch script keeps in every queue's active sorted set at score
/// `+inf`; it is not a job (job ids have no spaces). Being longer than 64 bytes
/// it keeps the set in Redis' skiplist encoding: in the compact listpack
/// encoding, which Redis uses for sets of up to 128 short members, adding and
/// removing leases scans the whole set and cost about five times more Redis CPU
/// per job with 50 leases held. Keep in sync with `scripts/prelude.lua`.
pub const ACTIVE_PIN: &str = "~ not a job: keeps this sorted set in skiplist encoding, which is faster ~";

/// A field of the concurrency keys' active hash ([`QueueKeys::keys_active`])
/// that is no key (keys hold no newline): longer than 64 bytes, it keeps the
/// hash in hashtable encoding, where the scripts find a key's field without
/// scanning the others. Readers skip it. Keep in sync with `CK_PIN` in
/// `scripts/prelude.lua`.
pub const KEYS_ACTIVE_PIN: &str =
    "\n\n not a key: keeps this hash in hashtable encoding, where fields are found fast";

/// Key suffixes in the order every script receives them as `KEYS`
/// (see `scripts/prelude.lua`).
const SUFFIXES: [&str; 9] =
    ["meta", "wait", "prio", "delayed", "active", "completed", "dlq", "events", "wake"];

/// The keys of one queue, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    name: String,
    prefix: String,
    base: String,
    all: Vec<String>,
    job_prefix: String,
    parked: String,
    handoff: String,
    limiter: String,
    workers: String,
    worker_info: String,
}

impl QueueKeys {
    /// Keys of queue `name` under `prefix`. Fails on an invalid queue name.
    pub fn new(prefix: &str, name: &str) -> Result<Self> {
        names::validate_queue_name(name)?;
        names::validate_prefix(prefix)?;
        let base = format!("{prefix}:{{{name}}}:");
        let all: Vec<String> = SUFFIXES.iter().map(|s| format!("{base}{s}")).collect();
        Ok(Self {
            parked: format!("{}:parked", all[8]),
            handoff: format!("{}:handoff", all[8]),
            limiter: format!("{}:limiter", all[0]),
            workers: format!("{}:workers", all[0]),
            worker_info: format!("{}:workers:info", all[0]),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            job_prefix: format!("{base}j:"),
            base,
            all,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key prefix (`quern` by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:{<queue>}:`, the start of every key of this queue.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The fixed keys every script gets as `KEYS`, in prelude order.
    pub fn script_keys(&self) -> &[String] {
        &self.all
    }

    /// Prefix of job hashes; a job's key is this followed by its id.
    pub fn job_prefix(&self) -> &str {
        &self.job_prefix
    }

    /// Key of the hash holding job `id`.
    pub fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix)
    }

    /// Hash of queue settings and counters (paused flag, id and token counters).
    pub fn meta(&self) -> &str {
        &self.all[0]
    }

    /// List of waiting jobs of priority 0, FIFO.
    pub fn wait(&self) -> &str {
        &self.all[1]
    }

    /// Sorted set of waiting jobs with a priority above 0.
    pub fn prioritized(&self) -> &str {
        &self.all[2]
    }

    /// Sorted set of delayed jobs, scored by due time (ms).
    pub fn delayed(&self) -> &str {
        &self.all[3]
    }

    /// Sorted set of active jobs, scored by lease deadline (ms). Once a job
    /// has been fetched it also holds [`ACTIVE_PIN`] (score `+inf`), which
    /// is not a job.
    pub fn active(&self) -> &str {
        &self.all[4]
    }

    /// List of completed job ids, oldest first.
    pub fn completed(&self) -> &str {
        &self.all[5]
    }

    /// The dead-letter list: sorted set of failed jobs, scored by failure time (ms).
    pub fn dead_letter(&self) -> &str {
        &self.all[6]
    }

    /// The queue's bounded events stream.
    pub fn events(&self) -> &str {
        &self.all[7]
    }

    /// Sorted set of flows' parents waiting for their children, by add time
    /// (see `scripts/flow.lua`).
    pub fn waiting_children(&self) -> String {
        format!("{}:flow:wc", self.all[0])
    }

    /// List of outcome records of this queue's children whose parents live
    /// in other queues, for a worker's flow relay to apply there.
    pub fn flow_outbox(&self) -> String {
        format!("{}:flow:out", self.all[0])
    }

    /// List that idle workers block on; holds at most one marker.
    pub fn wake(&self) -> &str {
        &self.all[8]
    }

    /// Sorted set of workers waiting for work that take jobs handed over by
    /// adds: member `<hand-off lease ms> <worker id>`, scored by when the
    /// registration lapses (ms). Scripts derive it from [`Self::wake`].
    pub fn parked(&self) -> &str {
        &self.parked
    }

    /// List of jobs an add leased and handed to the parked workers, one
    /// record each (`id`, token, attempt, name, options, then the payload,
    /// separated by newlines); parked workers block on it.
    pub fn handoff(&self) -> &str {
        &self.handoff
    }

    /// Counter of the jobs started in the current window of the queue's rate
    /// limit; it expires when the window closes (see `scripts/fetch.lua`).
    /// Scripts derive it from [`Self::meta`].
    pub fn limiter(&self) -> &str {
        &self.limiter
    }

    /// Sorted set of the queue's live workers: member the worker id, scored
    /// by when its registration lapses (ms). Workers register and refresh
    /// with each reaper pass and leave when they stop (see `scripts/reap.lua`).
    /// Scripts derive it from [`Self::meta`].
    pub fn workers(&self) -> &str {
        &self.workers
    }

    /// Hash of worker id to `<first seen ms> <last seen ms> <info JSON>`
    /// (Redis time), beside [`Self::workers`].
    pub fn worker_info(&self) -> &str {
        &self.worker_info
    }

    /// String holding the id of the first job added with idempotency key
    /// `key`, expiring when the key's window ends (see `scripts/add.lua`).
    /// Scripts derive it from [`Self::meta`].
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.meta())
    }

    /// Sorted set of the queue's idempotency keys, scored by when their
    /// window ends (ms): how deleting the queue finds them (no SCAN); the
    /// reaper drops entries whose window is over. Scripts derive it from
    /// [`Self::meta`].
    pub fn idempotency_index(&self) -> String {
        format!("{}:idem-keys", self.meta())
    }

    /// Hash of concurrency key -> jobs of the key leased now. Scripts derive
    /// it and the other concurrency-key keys from [`Self::meta`] (see
    /// `free_key_slot` in `scripts/prelude.lua`); the queue's per-key limit
    /// is field `ckl` of the meta hash, and field `ckw` counts held jobs.
    pub fn keys_active(&self) -> String {
        format!("{}:ck:active", self.meta())
    }

    /// Hash of concurrency key -> jobs held aside for it (its limit was
    /// reached when a fetch met them).
    pub fn keys_held(&self) -> String {
        format!("{}:ck:held", self.meta())
    }

    /// Hash of concurrency key -> the key's waiting jobs (held aside or in
    /// the queue's waiting lists), kept by the scripts that move a keyed job
    /// in or out of waiting (`count_key_waiting` in `scripts/prelude.lua`).
    pub fn keys_waiting(&self) -> String {
        format!("{}:ck:waiting", self.meta())
    }

    /// List of the jobs held aside for concurrency key `key`, oldest first.
    pub fn key_held_list(&self, key: &str) -> String {
        format!("{}:ck:w:{key}", self.meta())
    }

    /// Hash of concurrency key -> its own limit.
    pub fn key_limits(&self) -> String {
        format!("{}:ck:limits", self.meta())
    }

    /// Hash of the queue's counters since it began (dead-lettered, retried,
    /// stalled, and the run and wait time histograms of completed jobs), kept
    /// by the scripts; see [`crate::stats`]. Scripts derive it from [`Self::meta`].
    pub fn stats(&self) -> String {
        format!("{}:stats", self.meta())
    }

    /// Hash of what the counters of [`Self::stats`] gained per minute (field:
    /// the minute number since the epoch), the last 24 hours; kept by the
    /// reap script. Scripts derive it from [`Self::meta`].
    pub fn stats_minutes(&self) -> String {
        format!("{}:stats:m", self.meta())
    }

    /// The same per hour (field: the hour number since the epoch), the last 30 days.
    pub fn stats_hours(&self) -> String {
        format!("{}:stats:h", self.meta())
    }

    /// A key of this queue with a custom suffix, in the same hash slot
    /// (used by the scheduler for its per-schedule watermarks).
    pub fn custom(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// The set of known queue names under `prefix`. It lives outside any
    /// queue's slot and is only written with plain commands, never in a script.
    pub fn registry(prefix: &str) -> String {
        format!("{prefix}:queues")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = QueueKeys::new("quern", "emails").unwrap();
        assert_eq!(k.wait(), "quern:{emails}:wait");
        assert_eq!(k.job("42"), "quern:{emails}:j:42");
        assert!(k.script_keys().iter().all(|key| key.starts_with("quern:{emails}:")));
        assert_eq!(k.script_keys().len(), 9);
    }

    #[test]
    fn rejects_bad_queue_names() {
        assert!(QueueKeys::new("quern", "a{b}").is_err());
        assert!(QueueKeys::new("quern", "").is_err());
    }
}
