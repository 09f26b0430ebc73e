//! `quern bench`: the five scenarios of the shared benchmark protocol
//! (bench/PROTOCOL.md of the workplace), one JSON line each on stdout.
//!
//! A user may point this at the wrong Redis, so it never flushes anything: it
//! works under a prefix of its own, refuses a database that holds any key
//! outside that prefix, and deletes its own keys before, between and after
//! the scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quern_common::RedisConfig;
use quern_producer::{FlowJob, JobOptions, NewJob, OnChildFailure, Queue};
use quern_worker::{JobContext, JobError, Retention, Worker, WorkerBuilder};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::error::{CliError, CliResult as Result};

/// Every key the benchmark writes starts with this prefix.
pub(crate) const BENCH_PREFIX: &str = "quern-bench";
const QUEUE: &str = "bench";
const LATENCY_JOBS: usize = 1_500;
/// The step names of the `steps` scenario.
const STEP_NAMES: [&str; 5] = ["step-1", "step-2", "step-3", "step-4", "step-5"];
/// Concurrency keys of the `keyed_drain` scenario.
const KEYED_DRAIN_KEYS: usize = 1_000;
const LATENCY_INTERVAL: Duration = Duration::from_millis(2);

/// Options of `quern bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Jobs per scenario (the latency scenario always uses 1,500).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) jobs: usize,
    /// Producers in flight (enqueue_single) and worker slots (drain, latency).
    #[arg(long, default_value_t = 50)]
    pub(crate) concurrency: usize,
    /// Run only these scenarios (comma-separated: enqueue_single, enqueue_bulk,
    /// memory_waiting, drain, keyed_drain, latency); memory_waiting and drain
    /// need enqueue_bulk. keyed_drain is drain with every job under one of
    /// 1,000 concurrency keys, each limited to 1 job at a time. Workflow
    /// scenarios run only when named: steps (N waiting jobs of 5 durable
    /// steps each, one worker of C slots); flow (N/10 parents of 10 children
    /// each, added in bulk 100 trees a call, then one worker of C slots).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Instead of the protocol's scenarios, measure Redis CPU per job (enqueue
    /// single, then drain) on top of a backlog of this many jobs, to show that
    /// cost does not grow with queue size (scenario `scale`).
    #[arg(long)]
    pub(crate) backlog: Option<usize>,
    /// What the backlog is: `waiting` jobs or `delayed` ones (due in a day).
    #[arg(long, default_value = "waiting", value_parser = ["waiting", "delayed"])]
    pub(crate) backlog_kind: String,
    /// Instead of the protocol's scenarios, spread the work over this many
    /// queues (scenario `spread`): C producers add N jobs round-robin, then
    /// one worker per queue drains them; Redis CPU per job is summed over
    /// the nodes and given per node. On a Redis Cluster the queues are
    /// chosen so that each primary serves as many of them.
    #[arg(long)]
    pub(crate) queues: Option<usize>,
    /// Make every add and every worker state move wait until this many
    /// replicas hold it (`WAIT` in the same pipeline; see `replica_acks` on
    /// the queue and worker builders). Needs a master with replicas.
    #[arg(long)]
    pub(crate) replica_acks: Option<u32>,
    /// The longest wait for those acknowledgements.
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse_duration, value_name = "DURATION")]
    pub(crate) replica_acks_timeout: Duration,
    /// Value of the `system` field of each line.
    #[arg(long, default_value = "quern")]
    pub(crate) system: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    i: u64,
    pad: String,
}

/// Run the scenarios and print one JSON line each.
pub(crate) async fn run(config: &RedisConfig, args: BenchArgs) -> Result<()> {
    if args.jobs == 0 || args.concurrency == 0 {
        return Err(CliError::Usage("--jobs and --concurrency must be at least 1".into()));
    }
    let config = config.clone().prefix(BENCH_PREFIX).response_timeout(Duration::from_secs(30));
    let mut admin = admin_connection(&config).await?;
    refuse_foreign_keys(&mut admin).await?;
    remove_own_keys(&mut admin).await?;
    let bench = Bench { config, admin, args };
    let outcome = bench.run_all().await;
    let mut admin = bench.admin;
    let cleanup = remove_own_keys(&mut admin).await;
    outcome.and(cleanup)
}

struct Bench {
    config: RedisConfig,
    admin: Admin,
    args: BenchArgs,
}

impl Bench {
    fn wants(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    /// A handle on queue `name`, with the replica acknowledgements asked for.
    async fn queue(&self, name: &str) -> Result<Queue> {
        let mut builder = Queue::builder(&self.config, name);
        if let Some(n) = self.args.replica_acks {
            builder = builder.replica_acks(n, self.args.replica_acks_timeout);
        }
        Ok(builder.connect().await?)
    }

    /// A worker builder for queue `name`, with the replica acknowledgements asked for.
    fn worker(&self, name: &str) -> WorkerBuilder {
        let builder = Worker::builder(&self.config, name);
        match self.args.replica_acks {
            Some(n) => builder.replica_acks(n, self.args.replica_acks_timeout),
            None => builder,
        }
    }

    fn line(&self, scenario: &str, figures: serde_json::Value) {
        let mut line = json!({ "system": self.args.system, "scenario": scenario });
        if let Some(n) = self.args.replica_acks {
            line["replica_acks"] = json!(n);
        }
        if let (Some(line), Some(figures)) = (line.as_object_mut(), figures.as_object()) {
            line.extend(figures.clone());
        }
        println!("{line}");
    }

    async fn run_all(&self) -> Result<()> {
        let mut admin = self.admin.clone();
        if let Some(backlog) = self.args.backlog {
            return self.scale(backlog).await;
        }
        if let Some(queues) = self.args.queues {
            return self.spread(queues).await;
        }
        if self.wants("enqueue_single") {
            self.enqueue_single().await?;
            remove_own_keys(&mut admin).await?;
        }
        if self.wants("enqueue_bulk") || self.wants("memory_waiting") || self.wants("drain") {
            self.enqueue_bulk().await?;
            if self.wants("drain") {
                self.drain().await?;
            }
            remove_own_keys(&mut admin).await?;
        }
        if self.wants("keyed_drain") {
            self.keyed_drain().await?;
            remove_own_keys(&mut admin).await?;
        }
        if self.wants("latency") {
            self.latency().await?;
            remove_own_keys(&mut admin).await?;
        }
        if self.args.only.iter().any(|s| s == "steps") {
            self.steps().await?;
            remove_own_keys(&mut admin).await?;
        }
        if self.args.only.iter().any(|s| s == "flow") {
            self.flow().await?;
            remove_own_keys(&mut admin).await?;
        }
        Ok(())
    }

    /// `flow`: N/10 parents, each with 10 children in the same queue, added
    /// in bulk (100 trees a call); then one worker with C slots runs every
    /// child, then every parent. Timed from the first add to the last
    /// parent completed; figures per job, children and parents.
    async fn flow(&self) -> Result<()> {
        const CHILDREN: usize = 10;
        const TREES_PER_CALL: usize = 100;
        let c = self.args.concurrency;
        let parents = (self.args.jobs / CHILDREN).max(1);
        let total = parents * (CHILDREN + 1);
        eprintln!("flow: {parents} parents of {CHILDREN} children, one worker, concurrency {c}");
        let queue = self.queue(QUEUE).await?;
        let mut admin = self.admin.clone();
        let cpu0 = redis_cpu(&mut admin).await?;
        let start = Instant::now();
        for first in (0..parents).step_by(TREES_PER_CALL) {
            let trees = (first..(first + TREES_PER_CALL).min(parents))
                .map(|p| {
                    let children = (0..CHILDREN)
                        .map(|k| Ok(FlowJob::new(NewJob::new("child", &payload(p * CHILDREN + k))?)))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(FlowJob::new(NewJob::new("parent", &payload(p))?)
                        .children(OnChildFailure::FailParent, children))
                })
                .collect::<Result<Vec<_>>>()?;
            queue.add_flows(&trees).await?;
        }
        let worker = self
            .worker(QUEUE)
            .concurrency(c)
            .retention(Retention::keep_all())
            .handler("child", |_ctx: JobContext, _job: Payload| async { Ok::<u32, JobError>(1) })
            .handler("parent", |_ctx: JobContext, _job: Payload| async { Ok::<u32, JobError>(1) })
            .build()
            .await?;
        let stop = worker.shutdown_handle();
        let running = tokio::spawn(worker.run_until(std::future::pending()));
        let mut last_report = Instant::now();
        loop {
            let counts = queue.counts().await?;
            if counts.failed > 0 {
                return Err(CliError::Failed(format!("flow: {} jobs failed", counts.failed)));
            }
            if counts.completed >= total as u64 {
                break;
            }
            if last_report.elapsed() > Duration::from_secs(2) {
                eprintln!("flow: {} of {total} completed", counts.completed);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = redis_cpu(&mut admin).await? - cpu0;
        stop.shutdown();
        join_worker(running).await?;
        let mut figures = throughput(total, c, secs, cpu);
        if let Some(map) = figures.as_object_mut() {
            map.insert("parents".into(), json!(parents));
            map.insert("children_per_parent".into(), json!(CHILDREN));
        }
        self.line("flow", figures);
        Ok(())
    }

    /// `steps`: N waiting jobs (bulk-added, not timed); one worker with C
    /// slots runs them, each job 5 durable steps whose results are stored
    /// (a lease-checked script call each) before the next step starts.
    async fn steps(&self) -> Result<()> {
        const STEPS: u32 = 5;
        let (n, c) = (self.args.jobs, self.args.concurrency);
        eprintln!("steps: {n} waiting jobs of {STEPS} durable steps, one worker, concurrency {c}");
        let queue = self.queue(QUEUE).await?;
        add_in_batches(&queue, n, &JobOptions::new()).await?;
        let mut admin = self.admin.clone();
        let worker = self
            .worker(QUEUE)
            .concurrency(c)
            .retention(Retention::keep_all())
            .handler("job", |ctx: JobContext, _job: Payload| async move {
                for s in 0..STEPS {
                    ctx.step(STEP_NAMES[s as usize], || async move { Ok(s) }).await?;
                }
                Ok::<u32, JobError>(1)
            })
            .build()
            .await?;
        let stop = worker.shutdown_handle();
        let cpu0 = redis_cpu(&mut admin).await?;
        let start = Instant::now();
        let running = tokio::spawn(worker.run_until(std::future::pending()));
        let mut last_report = Instant::now();
        loop {
            let counts = queue.counts().await?;
            if counts.completed + counts.failed >= n as u64 {
                if counts.failed > 0 {
                    return Err(CliError::Failed(format!("steps: {} jobs failed", counts.failed)));
                }
                break;
            }
            if last_report.elapsed() > Duration::from_secs(2) {
                eprintln!("steps: {} of {n} completed", counts.completed);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = redis_cpu(&mut admin).await? - cpu0;
        stop.shutdown();
        join_worker(running).await?;
        let mut figures = throughput(n, c, secs, cpu);
        if let Some(map) = figures.as_object_mut() {
            map.insert("steps_per_job".into(), json!(STEPS));
        }
        self.line("steps", figures);
        Ok(())
    }

    async fn enqueue_single(&self) -> Result<()> {
        let (n, c) = (self.args.jobs, self.args.concurrency);
        eprintln!("enqueue_single: {n} jobs, {c} producers in flight");
        let queue = self.queue(QUEUE).await?;
        let mut admin = self.admin.clone();
        let cpu0 = redis_cpu(&mut admin).await?;
        let start = Instant::now();
        add_one_by_one(std::slice::from_ref(&queue), n, c).await?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = redis_cpu(&mut admin).await? - cpu0;
        self.line("enqueue_single", throughput(n, c, secs, cpu));
        Ok(())
    }

    async fn enqueue_bulk(&self) -> Result<()> {
        let n = self.args.jobs;
        eprintln!("enqueue_bulk: {n} jobs in batches of 1,000");
        let queue = self.queue(QUEUE).await?;
        let mut admin = self.admin.clone();
        let memory0 = used_memory(&mut admin).await?;
        let cpu0 = redis_cpu(&mut admin).await?;
        let start = Instant::now();
        add_in_batches(&queue, n, &JobOptions::new()).await?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = redis_cpu(&mut admin).await? - cpu0;
        if self.wants("enqueue_bulk") {
            self.line("enqueue_bulk", throughput(n, 1, secs, cpu));
        }
        if self.wants("memory_waiting") {
            let memory = used_memory(&mut admin).await?;
            let per_job = (memory.saturating_sub(memory0)) as f64 / n as f64;
            self.line("memory_waiting", json!({ "jobs": n, "redis_bytes_per_job": per_job.round() }));
        }
        Ok(())
    }

    async fn drain(&self) -> Result<()> {
        let (n, c) = (self.args.jobs, self.args.concurrency);
        eprintln!("drain: {n} waiting jobs, one worker, concurrency {c}");
        self.drain_waiting("drain").await
    }

    /// `drain` with every job under one of `KEYED_DRAIN_KEYS` concurrency
    /// keys, each limited to one job at a time.
    async fn keyed_drain(&self) -> Result<()> {
        let (n, c) = (self.args.jobs, self.args.concurrency);
        eprintln!(
            "keyed_drain: {n} waiting jobs over {KEYED_DRAIN_KEYS} keys of limit 1, one worker, concurrency {c}"
        );
        let queue = self.queue(QUEUE).await?;
        queue.set_key_limit(Some(1)).await?;
        for first in (0..n).step_by(1000) {
            let batch = (first..(first + 1000).min(n))
                .map(|i| {
                    let key = format!("key-{}", i % KEYED_DRAIN_KEYS);
                    Ok(NewJob::new("job", &payload(i))?.options(JobOptions::new().concurrency_key(key)))
                })
                .collect::<Result<Vec<_>>>()?;
            queue.add_bulk(&batch).await?;
        }
        self.drain_waiting("keyed_drain").await
    }

    /// Drain the waiting jobs of the bench queue with one worker; report
    /// them as `scenario`.
    async fn drain_waiting(&self, scenario: &str) -> Result<()> {
        let (n, c) = (self.args.jobs, self.args.concurrency);
        let queue = self.queue(QUEUE).await?;
        let mut admin = self.admin.clone();
        let worker = noop_worker(self.worker(QUEUE), c).await?;
        let stop = worker.shutdown_handle();
        let cpu0 = redis_cpu(&mut admin).await?;
        let start = Instant::now();
        let running = tokio::spawn(worker.run_until(std::future::pending()));
        let mut last_report = Instant::now();
        loop {
            let completed = queue.counts().await?.completed;
            if completed >= n as u64 {
                break;
            }
            if last_report.elapsed() > Duration::from_secs(2) {
                eprintln!("{scenario}: {completed} of {n} completed");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = redis_cpu(&mut admin).await? - cpu0;
        stop.shutdown();
        join_worker(running).await?;
        let mut figures = throughput(n, c, secs, cpu);
        if let (Some(rss), Some(map)) = (peak_rss_mb(), figures.as_object_mut()) {
            map.insert("process_peak_rss_mb".into(), json!(rss));
        }
        self.line(scenario, figures);
        Ok(())
    }

    async fn scale(&self, backlog: usize) -> Result<()> {
        let (n, c, kind) = (self.args.jobs, self.args.concurrency, self.args.backlog_kind.as_str());
        eprintln!("scale: {n} jobs enqueued then drained on top of {backlog} {kind} jobs");
        let queue = self.queue(QUEUE).await?;
        let mut admin = self.admin.clone();
        let options = if kind == "delayed" {
            JobOptions::new().delay(Duration::from_secs(86_400))
        } else {
            JobOptions::new()
        };
        add_in_batches(&queue, backlog, &options).await?;
        let memory = used_memory(&mut admin).await?;

        let cpu0 = redis_cpu(&mut admin).await?;
        add_one_by_one(std::slice::from_ref(&queue), n, c).await?;
        let enqueue_cpu = redis_cpu(&mut admin).await? - cpu0;

        let worker = noop_worker(self.worker(QUEUE), c).await?;
        let stop = worker.shutdown_handle();
        let cpu0 = redis_cpu(&mut admin).await?;
        let running = tokio::spawn(worker.run_until(std::future::pending()));
        while queue.counts().await?.completed < n as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain_cpu = redis_cpu(&mut admin).await? - cpu0;
        stop.shutdown();
        join_worker(running).await?;
        let us = |cpu: f64| (cpu * 1e6 / n as f64 * 10.0).round() / 10.0;
        self.line(
            "scale",
            json!({
                "jobs": n,
                "concurrency": c,
                "backlog": backlog,
                "backlog_kind": kind,
                "redis_used_memory_mb": (memory as f64 / 1e6).round(),
                "enqueue_single_cpu_us_per_job": us(enqueue_cpu),
                "drain_cpu_us_per_job": us(drain_cpu),
            }),
        );
        Ok(())
    }

    async fn spread(&self, count: usize) -> Result<()> {
        let (n, c) = (self.args.jobs, self.args.concurrency);
        let names = spread_queue_names(&self.config, count).await?;
        eprintln!(
            "spread: {n} jobs over {count} queues ({}), {c} producers, one worker per queue",
            names.join(", ")
        );
        let mut queues = Vec::with_capacity(count);
        for name in &names {
            queues.push(Queue::connect(&self.config, name).await?);
        }
        let mut admin = self.admin.clone();
        let cpu0 = node_cpu(&mut admin).await?;
        let start = Instant::now();
        add_one_by_one(&queues, n, c).await?;
        let slots = (c / count).max(1);
        let mut running = Vec::with_capacity(count);
        for name in &names {
            let worker = Worker::builder(&self.config, name)
                .concurrency(slots)
                .retention(Retention::keep_all())
                .handler("job", |_ctx: JobContext, _job: Payload| async { Ok::<(), JobError>(()) })
                .build()
                .await?;
            running.push((worker.shutdown_handle(), tokio::spawn(worker.run_until(std::future::pending()))));
        }
        loop {
            let mut completed = 0;
            for q in &queues {
                completed += q.counts().await?.completed;
            }
            if completed >= n as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu1 = node_cpu(&mut admin).await?;
        for (stop, task) in running {
            stop.shutdown();
            join_worker(task).await?;
        }
        let per_node: Vec<f64> = cpu0.iter().zip(&cpu1).map(|(a, b)| (b - a) * 1e6 / n as f64).collect();
        let total: f64 = per_node.iter().sum();
        let mean = total / per_node.len() as f64;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        self.line(
            "spread",
            json!({
                "jobs": n,
                "concurrency": c,
                "queues": count,
                "nodes": per_node.len(),
                "secs": (secs * 1000.0).round() / 1000.0,
                "jobs_per_s": (n as f64 / secs).round(),
                "lifecycle_redis_cpu_us_per_job": round(total),
                "node_redis_cpu_us_per_job": per_node.iter().map(|&x| round(x)).collect::<Vec<_>>(),
                "node_share_of_mean": per_node.iter().map(|&x| (x / mean * 100.0).round() / 100.0).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    }

    async fn latency(&self) -> Result<()> {
        let c = self.args.concurrency;
        let m = LATENCY_JOBS.min(self.args.jobs.max(100));
        eprintln!("latency: {m} jobs, one every {LATENCY_INTERVAL:?}, idle worker with concurrency {c}");
        let queue = self.queue("latency").await?;
        let origin = Instant::now();
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(m)));
        let started = Arc::new(AtomicU64::new(0));
        let (lat, count) = (latencies.clone(), started.clone());
        let worker = self
            .worker("latency")
            .concurrency(c)
            .retention(Retention::keep_all())
            .handler("job", move |_ctx: JobContext, job: LatencyPayload| {
                let now = origin.elapsed().as_nanos() as u64;
                let (lat, count) = (lat.clone(), count.clone());
                async move {
                    lat.lock().await.push(now.saturating_sub(job.t_ns));
                    count.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), JobError>(())
                }
            })
            .build()
            .await?;
        let stop = worker.shutdown_handle();
        let running = tokio::spawn(worker.run_until(std::future::pending()));
        // Let the worker reach its idle, blocking wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..m {
            let t_ns = origin.elapsed().as_nanos() as u64;
            queue.add("job", &LatencyPayload { t_ns }).await?;
            tokio::time::sleep(LATENCY_INTERVAL).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::Relaxed) < m as u64 {
            if Instant::now() > deadline {
                return Err(CliError::Failed("latency: jobs did not all start within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.shutdown();
        join_worker(running).await?;
        let in_order = latencies.lock().await.clone();
        let every_50th = every_50th_extra(&in_order);
        let mut sorted = in_order;
        sorted.sort_unstable();
        let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
        let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
        self.line(
            "latency",
            json!({
                "jobs": m,
                "concurrency": c,
                "p50_ms": ms(at(0.5)),
                "p99_ms": ms(at(0.99)),
                "max_ms": ms(*sorted.last().unwrap_or(&0)),
                "every_50th_extra_ms": ms(every_50th),
            }),
        );
        Ok(())
    }
}

/// Redis runs a Lua GC step on every 50th script call, on whichever call that
/// is; at three calls a job (add, claim, complete) the step falls on the same
/// job of every 50 in a row. Returns how much slower that job is: the median
/// of the slowest of the 50 places over the median of all (about the noise
/// level, 0.01-0.02 ms, when nothing periodic is there).
fn every_50th_extra(in_order: &[u64]) -> u64 {
    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }
    let all = median(in_order.to_vec());
    let slowest = (0..50).map(|k| median(in_order.iter().skip(k).step_by(50).copied().collect())).max();
    slowest.unwrap_or(all).saturating_sub(all)
}

/// The protocol's payload: `{"i": n, "pad": "<100 times x>"}`.
fn payload(i: usize) -> Payload {
    Payload { i: i as u64, pad: "x".repeat(100) }
}

/// `n` adds of one job each, `c` of them in flight (web handlers' way),
/// round-robin over `queues`.
async fn add_one_by_one(queues: &[Queue], n: usize, c: usize) -> Result<()> {
    let queues: Arc<[Queue]> = queues.into();
    let next = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..c)
        .map(|_| {
            let (queues, next) = (queues.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), quern_common::Error>(());
                    }
                    queues[i % queues.len()].add("job", &payload(i)).await?;
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.map_err(|e| CliError::Failed(format!("producer task failed: {e}")))??;
    }
    Ok(())
}

/// `n` jobs added in bulk, 1,000 per call.
async fn add_in_batches(queue: &Queue, n: usize, options: &JobOptions) -> Result<()> {
    for first in (0..n).step_by(1000) {
        let batch = (first..(first + 1000).min(n))
            .map(|i| Ok(NewJob::new("job", &payload(i))?.options(options.clone())))
            .collect::<Result<Vec<_>>>()?;
        queue.add_bulk(&batch).await?;
    }
    Ok(())
}

/// A worker with `c` slots and a no-op handler. Completed jobs are kept, as
/// BullMQ keeps them by default.
async fn noop_worker(builder: WorkerBuilder, c: usize) -> Result<Worker> {
    Ok(builder
        .concurrency(c)
        .retention(Retention::keep_all())
        .handler("job", |_ctx: JobContext, _job: Payload| async { Ok::<(), JobError>(()) })
        .build()
        .await?)
}

#[derive(Serialize, Deserialize)]
struct LatencyPayload {
    t_ns: u64,
}

fn throughput(n: usize, c: usize, secs: f64, cpu_secs: f64) -> serde_json::Value {
    json!({
        "jobs": n,
        "concurrency": c,
        "secs": (secs * 1000.0).round() / 1000.0,
        "jobs_per_s": (n as f64 / secs).round(),
        "redis_cpu_us_per_job": (cpu_secs * 1e6 / n as f64 * 10.0).round() / 10.0,
    })
}

async fn join_worker(running: tokio::task::JoinHandle<quern_common::Result<()>>) -> Result<()> {
    Ok(running.await.map_err(|e| CliError::Failed(format!("the worker task failed: {e}")))??)
}

/// `count` queue names; on a cluster, chosen so that the primaries serve as
/// many queues each (names `bench-<i>` tried in order).
async fn spread_queue_names(config: &RedisConfig, count: usize) -> Result<Vec<String>> {
    let nodes = config.node_connections().await?.len();
    if nodes <= 1 {
        return Ok((0..count).map(|i| format!("{QUEUE}-{i}")).collect());
    }
    let mut per_node: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut names = Vec::with_capacity(count);
    let quota = count.div_ceil(nodes);
    for i in 0.. {
        if names.len() == count || i > 10_000 {
            break;
        }
        let name = format!("{QUEUE}-{i}");
        let node = config.node_of_key(quern_common::QueueKeys::new(BENCH_PREFIX, &name)?.wait()).await?;
        let served = per_node.entry(node).or_insert(0);
        if *served < quota {
            *served += 1;
            names.push(name);
        }
    }
    Ok(names)
}

/// Plain connections to every server that holds data (one, or each
/// primary of a cluster): Redis CPU and memory are summed over them.
#[derive(Clone)]
struct Admin(Vec<MultiplexedConnection>);

async fn admin_connection(config: &RedisConfig) -> Result<Admin> {
    let nodes = config.clone().response_timeout(Duration::from_secs(30)).node_connections().await?;
    Ok(Admin(nodes.into_iter().map(|(_, conn)| conn).collect()))
}

/// Refuse to run on a database holding keys that are not the benchmark's:
/// the user may have pointed us at a Redis that matters.
async fn refuse_foreign_keys(admin: &mut Admin) -> Result<()> {
    let own = format!("{BENCH_PREFIX}:");
    for conn in &mut admin.0 {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(conn).await?;
            if let Some(foreign) = keys.iter().find(|k| !k.starts_with(&own)) {
                let total: u64 = redis::cmd("DBSIZE").query_async(conn).await?;
                return Err(CliError::Usage(format!(
                    "refusing to benchmark on a database that holds keys quern bench did not write \
                     ({total} keys, e.g. {foreign:?}); point --redis-url at an empty Redis or database"
                )));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// Delete every key under the benchmark prefix (never anything else).
async fn remove_own_keys(admin: &mut Admin) -> Result<()> {
    for conn in &mut admin.0 {
        crate::keyspace::delete_prefixed(conn, BENCH_PREFIX).await?;
    }
    Ok(())
}

/// `INFO <section>` of each node.
async fn infos(admin: &mut Admin, section: &str) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(admin.0.len());
    for conn in &mut admin.0 {
        out.push(redis::cmd("INFO").arg(section).query_async(conn).await?);
    }
    Ok(out)
}

fn info_field(info: &str, field: &str) -> Result<f64> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().parse::<f64>().ok())
        .ok_or_else(|| CliError::Failed(format!("INFO has no {field}")))
}

/// Seconds of CPU Redis has used (user + system), summed over the nodes.
async fn redis_cpu(admin: &mut Admin) -> Result<f64> {
    Ok(node_cpu(admin).await?.iter().sum())
}

/// Seconds of CPU each node has used.
async fn node_cpu(admin: &mut Admin) -> Result<Vec<f64>> {
    infos(admin, "cpu")
        .await?
        .iter()
        .map(|cpu| Ok(info_field(cpu, "used_cpu_user")? + info_field(cpu, "used_cpu_sys")?))
        .collect()
}

async fn used_memory(admin: &mut Admin) -> Result<u64> {
    // Let lazily freed memory (UNLINK) settle before reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut total = 0.0;
    for memory in infos(admin, "memory").await? {
        total += info_field(&memory, "used_memory")?;
    }
    Ok(total as u64)
}

/// Peak resident memory of this process (producer and worker together), from
/// /proc on Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}
