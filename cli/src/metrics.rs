//! `quern metrics`: the state of every queue and schedule under the prefix in
//! Prometheus' text format, served over HTTP or printed once.
//!
//! Every scrape reads Redis afresh (a few commands per queue and schedule), so
//! the exporter holds no state and any number of copies may run. A scrape that
//! cannot read Redis answers `quern_up 0` rather than failing, so an alert on
//! `quern_up == 0` tells "Redis is unreachable" apart from "the exporter is down".

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use quern_common::stats::BUCKET_BOUNDS_MS;
use quern_common::{QueueCounts, RateLimit, RedisConfig, SelfHealingConnection};
use quern_producer::{Histogram, Queue, QueueStats, known_queues};
use quern_scheduler::{Flag, RunOutcome, ScheduleStatus, Schedules};
use tokio::sync::Mutex;

use crate::error::{CliError, CliResult};

/// The media type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Options of `quern metrics`.
#[derive(Debug, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Address to serve the metrics on, at GET /metrics.
    #[arg(long, env = "QUERN_METRICS_LISTEN", default_value = "127.0.0.1:9646")]
    listen: SocketAddr,
    /// Print the metrics once to stdout and exit (for node_exporter's textfile
    /// collector, or a look by hand); exits 1, printing nothing, when Redis
    /// cannot be read.
    #[arg(long)]
    once: bool,
}

/// `quern metrics`.
pub(crate) async fn run(config: &RedisConfig, args: MetricsArgs) -> CliResult {
    quern_common::names::validate_prefix(&config.prefix)?;
    if args.once {
        let started = Instant::now();
        let snapshot = read(config, &config.connect().await?).await?;
        out!("{}", render(Some(&snapshot), started.elapsed()));
        return Ok(());
    }
    let mut signals = quern_common::process::ShutdownSignals::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let exporter = Arc::new(Exporter { config: config.clone(), conn: Mutex::new(None) });
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(|| async { "quern metrics exporter: GET /metrics\n" }))
        .with_state(exporter);
    // The bound address: with port 0 the system picked one.
    let bound = listener.local_addr().unwrap_or(args.listen);
    outln!("serving the metrics of prefix {:?} on http://{bound}/metrics", config.prefix);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signals.recv().await;
        })
        .await
        .map_err(|e| CliError::Failed(format!("serving metrics failed: {e}")))
}

/// What a scrape needs: the configuration and, once connected, a connection.
struct Exporter {
    config: RedisConfig,
    conn: Mutex<Option<SelfHealingConnection>>,
}

impl Exporter {
    /// The connection, opened on the first scrape that finds Redis up, then
    /// kept (it reconnects by itself).
    async fn connection(&self) -> quern_common::Result<SelfHealingConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let fresh = self.config.connect().await?;
        *conn = Some(fresh.clone());
        Ok(fresh)
    }
}

async fn scrape(State(exporter): State<Arc<Exporter>>) -> impl IntoResponse {
    let started = Instant::now();
    let read = match exporter.connection().await {
        Ok(conn) => read(&exporter.config, &conn).await,
        Err(e) => Err(e.into()),
    };
    let snapshot = read.inspect_err(|e| eprintln!("scrape: cannot read Redis: {e}")).ok();
    ([(CONTENT_TYPE, TEXT_FORMAT)], render(snapshot.as_ref(), started.elapsed()))
}

/// What one scrape read from Redis.
struct Snapshot {
    queues: Vec<(String, QueueCounts)>,
    /// What else each queue has, in the order of `queues`.
    extras: Vec<QueueExtras>,
    schedules: Vec<ScheduleStatus>,
}

/// A queue's live workers, rate limit, concurrency keys at their limit,
/// counters and oldest waiting job.
struct QueueExtras {
    workers: usize,
    rate_limit: Option<RateLimit>,
    keys_at_limit: usize,
    stats: QueueStats,
    oldest_waiting: Option<Duration>,
}

async fn read(config: &RedisConfig, conn: &SelfHealingConnection) -> CliResult<Snapshot> {
    let names = known_queues(&mut conn.clone(), &config.prefix).await?;
    let queues = crate::inspect::counts_of(config, conn, names).await?;
    let mut extras = Vec::with_capacity(queues.len());
    for (name, _) in &queues {
        let queue = Queue::builder(config, name).with_connection(conn.clone())?;
        extras.push(QueueExtras {
            workers: queue.workers().await?.len(),
            rate_limit: queue.rate_limit().await?,
            keys_at_limit: queue.concurrency_keys().await?.busy.iter().filter(|k| k.at_limit()).count(),
            stats: queue.stats().await?,
            oldest_waiting: queue.oldest_waiting_age().await?,
        });
    }
    let schedules = Schedules::with_connection(conn.clone(), &config.prefix)?.status().await?;
    Ok(Snapshot { queues, extras, schedules })
}

/// The outcomes a schedule's last run may have, as `outcome` label values.
const OUTCOMES: [&str; 6] = ["pending", "running", "completed", "failed", "dead", "gone"];

fn outcome_label(outcome: &RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Pending => "pending",
        RunOutcome::Running => "running",
        RunOutcome::Completed => "completed",
        RunOutcome::Failed { .. } => "failed",
        RunOutcome::Dead { .. } => "dead",
        RunOutcome::Gone => "gone",
    }
}

/// The exposition text; `None` when Redis could not be read (then only
/// `quern_up 0` and the scrape's duration).
fn render(snapshot: Option<&Snapshot>, took: Duration) -> String {
    let mut out = Families::default();
    out.family("quern_up", "gauge", "Whether this scrape could read Redis (1) or not (0).");
    out.sample("quern_up", &[], u8::from(snapshot.is_some()));
    out.family("quern_scrape_duration_seconds", "gauge", "How long this scrape took.");
    out.sample("quern_scrape_duration_seconds", &[], took.as_secs_f64());
    let Some(s) = snapshot else {
        return out.text;
    };

    out.family("quern_queue_jobs", "gauge", "Jobs of a queue in each state (failed: the dead-letter list).");
    for (queue, c) in &s.queues {
        for (state, n) in [
            ("waiting", c.waiting),
            ("delayed", c.delayed),
            ("active", c.active),
            ("completed", c.completed),
            ("failed", c.failed),
            ("waiting-children", c.waiting_children),
        ] {
            out.sample("quern_queue_jobs", &[("queue", queue), ("state", state)], n);
        }
    }
    out.family("quern_queue_paused", "gauge", "Whether the queue is paused (1) or not (0).");
    for (queue, c) in &s.queues {
        out.sample("quern_queue_paused", &[("queue", queue)], u8::from(c.paused));
    }

    out.family("quern_queue_workers", "gauge", "Live workers of the queue (stopping ones included).");
    for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
        out.sample("quern_queue_workers", &[("queue", queue)], x.workers);
    }
    out.family(
        "quern_queue_concurrency_keys_at_limit",
        "gauge",
        "Concurrency keys of the queue running as many jobs as their limit allows.",
    );
    for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
        out.sample("quern_queue_concurrency_keys_at_limit", &[("queue", queue)], x.keys_at_limit);
    }
    // A family's samples follow its # TYPE line, all together.
    type Limit = fn(&RateLimit) -> f64;
    let limits: [(&str, &str, Limit); 2] = [
        (
            "quern_queue_rate_limit_jobs",
            "Jobs that may start per window of the queue's rate limit (limited queues only).",
            |l| f64::from(l.max()),
        ),
        (
            "quern_queue_rate_limit_window_seconds",
            "The window of the queue's rate limit (limited queues only).",
            |l| l.per().as_secs_f64(),
        ),
    ];
    for (name, help, value) in limits {
        out.family(name, "gauge", help);
        for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
            if let Some(limit) = &x.rate_limit {
                out.sample(name, &[("queue", queue)], value(limit));
            }
        }
    }

    type Counter = fn(&QueueStats) -> u64;
    let counters: [(&str, &str, Counter); 4] = [
        ("quern_jobs_completed_total", "Jobs completed.", QueueStats::completed),
        (
            "quern_jobs_failed_total",
            "Jobs dead-lettered: last attempt failed, permanent error, or stalled too often (cancels not counted).",
            |s| s.failed,
        ),
        (
            "quern_jobs_retried_total",
            "Failed attempts after which the job was scheduled to run again.",
            |s| s.retried,
        ),
        ("quern_jobs_stalled_total", "Leases that expired (worker crashed, killed or cut off).", |s| {
            s.stalled
        }),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
            out.sample(name, &[("queue", queue)], value(&x.stats));
        }
    }
    type Hist = fn(&QueueStats) -> &Histogram;
    let histograms: [(&str, &str, Hist); 2] = [
        (
            "quern_job_run_seconds",
            "Run time of completed jobs: start of the attempt that completed to its acknowledgement.",
            |s| &s.run,
        ),
        (
            "quern_job_wait_seconds",
            "Wait time of completed jobs: add (delays included) to the start of the attempt that completed.",
            |s| &s.wait,
        ),
    ];
    for (name, help, hist) in histograms {
        out.family(name, "histogram", help);
        for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
            out.histogram(name, queue, hist(&x.stats));
        }
    }
    out.family(
        "quern_queue_oldest_waiting_seconds",
        "gauge",
        "How long the oldest waiting job has waited since it was added (0: none waits).",
    );
    for ((queue, _), x) in s.queues.iter().zip(&s.extras) {
        let age = x.oldest_waiting.unwrap_or_default();
        out.sample("quern_queue_oldest_waiting_seconds", &[("queue", queue)], age.as_secs_f64());
    }

    type Field = fn(&ScheduleStatus) -> Option<f64>;
    let per_schedule: [(&str, &str, &str, Field); 7] = [
        ("quern_schedule_enabled", "gauge", "Whether the schedule is enabled (1) or not (0).", |s| {
            Some(f64::from(u8::from(s.schedule.enabled)))
        }),
        (
            "quern_schedule_next_fire_timestamp_seconds",
            "gauge",
            "When the next tick is due (none while disabled).",
            |s| s.next_fire.map(|t| t.timestamp_millis() as f64 / 1000.0),
        ),
        (
            "quern_schedule_last_tick_timestamp_seconds",
            "gauge",
            "The last tick handled (enqueued, or skipped).",
            |s| s.last_tick.map(|t| t.timestamp_millis() as f64 / 1000.0),
        ),
        ("quern_schedule_runs_total", "counter", "Jobs enqueued by the schedule.", |s| Some(s.runs as f64)),
        (
            "quern_schedule_missed_ticks",
            "gauge",
            "Ticks missed and not acknowledged (quern schedules ack NAME).",
            |s| Some(s.missed_ticks as f64),
        ),
        (
            "quern_schedule_overlap_skips_total",
            "counter",
            "Ticks skipped because the previous run was unfinished.",
            |s| Some(s.overlap_skips as f64),
        ),
        (
            "quern_schedule_overdue",
            "gauge",
            "Whether a tick is well past due with no scheduler handling it (1) or not (0).",
            |s| Some(f64::from(u8::from(s.flags.iter().any(|f| matches!(f, Flag::Overdue { .. }))))),
        ),
    ];
    for (name, kind, help, field) in per_schedule {
        out.family(name, kind, help);
        for st in &s.schedules {
            if let Some(v) = field(st) {
                out.sample(name, &[("schedule", &st.schedule.name), ("queue", &st.schedule.queue)], v);
            }
        }
    }
    out.family(
        "quern_schedule_last_run",
        "gauge",
        "What became of the last enqueued tick's job: 1 for its outcome, 0 for the others (all 0 before the first run).",
    );
    for st in &s.schedules {
        let current = st.last_run.as_ref().map(outcome_label);
        for outcome in OUTCOMES {
            let labels = [
                ("schedule", st.schedule.name.as_str()),
                ("queue", &st.schedule.queue),
                ("outcome", outcome),
            ];
            out.sample("quern_schedule_last_run", &labels, u8::from(current == Some(outcome)));
        }
    }
    out.text
}

/// Exposition text under construction.
#[derive(Default)]
struct Families {
    text: String,
}

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A histogram's cumulative buckets, sum and count for one queue.
    fn histogram(&mut self, name: &str, queue: &str, h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut seen = 0;
        for (i, n) in h.counts.iter().enumerate() {
            seen += n;
            let le = BUCKET_BOUNDS_MS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |ms| (*ms as f64 / 1000.0).to_string());
            self.sample(&bucket, &[("queue", queue), ("le", &le)], seen);
        }
        self.sample(&format!("{name}_sum"), &[("queue", queue)], h.sum_ms as f64 / 1000.0);
        self.sample(&format!("{name}_count"), &[("queue", queue)], seen);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_unreadable_redis_gives_up_0_and_nothing_else() {
        let text = render(None, Duration::from_millis(5));
        assert!(text.contains("\nquern_up 0\n"), "{text}");
        assert!(text.contains("quern_scrape_duration_seconds 0.005\n"), "{text}");
        assert!(!text.contains("quern_queue_jobs"), "{text}");
    }

    #[test]
    fn queues_give_one_sample_per_state() {
        let counts = QueueCounts {
            waiting: 3,
            delayed: 1,
            active: 2,
            completed: 7,
            failed: 1,
            paused: true,
            waiting_children: 0,
        };
        let snapshot = Snapshot {
            queues: vec![("ops".into(), counts)],
            extras: vec![QueueExtras {
                workers: 2,
                rate_limit: None,
                keys_at_limit: 1,
                stats: QueueStats::from_text("rb1=2 rb3=1 rs=30 f=1"),
                oldest_waiting: Some(Duration::from_millis(1500)),
            }],
            schedules: Vec::new(),
        };
        let text = render(Some(&snapshot), Duration::ZERO);
        for line in [
            "quern_up 1",
            "quern_queue_jobs{queue=\"ops\",state=\"waiting\"} 3",
            "quern_queue_jobs{queue=\"ops\",state=\"failed\"} 1",
            "quern_queue_paused{queue=\"ops\"} 1",
            "quern_queue_workers{queue=\"ops\"} 2",
            "quern_queue_concurrency_keys_at_limit{queue=\"ops\"} 1",
            "# TYPE quern_schedule_runs_total counter",
            "quern_jobs_completed_total{queue=\"ops\"} 3",
            "quern_jobs_failed_total{queue=\"ops\"} 1",
            "quern_job_run_seconds_bucket{queue=\"ops\",le=\"0.005\"} 2",
            "quern_job_run_seconds_bucket{queue=\"ops\",le=\"0.01\"} 2",
            "quern_job_run_seconds_bucket{queue=\"ops\",le=\"0.025\"} 3",
            "quern_job_run_seconds_bucket{queue=\"ops\",le=\"+Inf\"} 3",
            "quern_job_run_seconds_sum{queue=\"ops\"} 0.03",
            "quern_job_run_seconds_count{queue=\"ops\"} 3",
            "quern_queue_oldest_waiting_seconds{queue=\"ops\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
        }
    }
}
