//! The pages: overview, a queue's jobs, a job, schedules, find-by-id.
//!
//! Every page reads Redis afresh with a bounded number of commands: a few per
//! queue on the overview, one page of jobs (and, with a name filter, at most
//! [`FILTER_SCAN`] entries looked at) on a queue's page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{Html, IntoResponse, Response};
use quern_common::events::{Event, parse_entries};
use quern_common::{ChildStatus, JobEntry, JobInfo, JobState, SelfHealingConnection};
use quern_producer::{Queue, QueueStats, Resolution, StatsPoint, known_queues};
use quern_scheduler::{Flag, RunOutcome, ScheduleStatus, Schedules};
use serde::Deserialize;

use crate::App;
use crate::auth::Who;
use crate::html::{Frame, chart, enc, esc, time, took};

/// Jobs per page.
pub(crate) const PAGE: usize = 50;
/// Entries a name filter looks at per page, at most.
pub(crate) const FILTER_SCAN: usize = 1_000;

/// A page that could not be shown.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<quern_common::Error> for PageError {
    fn from(e: quern_common::Error) -> Self {
        let status = match e.kind() {
            quern_common::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            quern_common::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            quern_common::ErrorKind::WrongState | quern_common::ErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl From<quern_scheduler::Error> for PageError {
    fn from(e: quern_scheduler::Error) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>quern: {}</title></head>\
             <body><h1>{}</h1><p>{}</p><p><a href=\"javascript:history.back()\">Back</a></p></body></html>",
            self.status.as_u16(),
            esc(self.status.canonical_reason().unwrap_or("error")),
            esc(&self.message)
        );
        (self.status, Html(body)).into_response()
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

impl App {
    pub(crate) fn frame<'a>(&'a self, who: &'a Who, title: &'a str, live: bool) -> Frame<'a> {
        Frame {
            base: self.base(),
            title,
            actor: Some(&who.actor),
            csrf: who.csrf.as_deref(),
            read_only: self.config.read_only,
            live,
        }
    }

    pub(crate) async fn queue(&self, name: &str) -> Result<(Queue, SelfHealingConnection), PageError> {
        let conn = self.connection().await?;
        let queue = Queue::builder(&self.config.redis, name).with_connection(conn.clone())?;
        Ok((queue, conn))
    }

    pub(crate) fn queue_url(&self, queue: &str) -> String {
        format!("{}/queues/{}", self.base(), enc(queue))
    }

    pub(crate) fn job_url(&self, queue: &str, id: &str) -> String {
        format!("{}/queues/{}/jobs/{}", self.base(), enc(queue), enc(id))
    }
}

/// A message after an action (`?done=`), shown escaped.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Notice {
    done: Option<String>,
}

impl Notice {
    fn html(&self) -> String {
        self.done.as_deref().map(|d| format!("<p class=\"notice\">{}</p>", esc(d))).unwrap_or_default()
    }
}

fn minute_label(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or_else(String::new, |t| t.format("%H:%M UTC").to_string())
}

fn hour_label(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or_else(String::new, |t| t.format("%b %d %H:00 UTC").to_string())
}

/// Sum series of the same length point by point.
fn add_series(total: &mut Vec<StatsPoint>, more: &[StatsPoint]) {
    if total.is_empty() {
        total.extend_from_slice(more);
        return;
    }
    for (a, b) in total.iter_mut().zip(more) {
        a.stats = a.stats.plus(&b.stats);
    }
}

/// What the overview shows of one queue.
struct QueueRow {
    name: String,
    counts: quern_common::QueueCounts,
    workers: usize,
    rate: Option<quern_common::RateLimit>,
    hour: Vec<StatsPoint>,
    day: Vec<StatsPoint>,
    oldest_waiting: Option<std::time::Duration>,
}

impl QueueRow {
    fn last_hour(&self) -> QueueStats {
        self.hour.iter().fold(QueueStats::default(), |a, p| a.plus(&p.stats))
    }
}

async fn read_row(app: &App, conn: &SelfHealingConnection, name: String) -> Result<QueueRow, PageError> {
    let q = Queue::builder(&app.config.redis, &name).with_connection(conn.clone())?;
    Ok(QueueRow {
        counts: q.counts().await?,
        workers: q.workers().await?.len(),
        rate: q.rate_limit().await?,
        hour: q.stats_series(Resolution::Minute, 60).await?,
        day: q.stats_series(Resolution::Hour, 24).await?,
        oldest_waiting: q.oldest_waiting_age().await?,
        name,
    })
}

/// Redis' eviction policy, or why it could not be read (managed services
/// often refuse `CONFIG`).
async fn maxmemory_policy(conn: &SelfHealingConnection) -> Result<String, String> {
    let reply: redis::RedisResult<Vec<String>> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut conn.clone()).await;
    match reply {
        Ok(v) if v.len() == 2 => Ok(v[1].clone()),
        Ok(v) => Err(format!("unexpected reply {v:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn schedule_flags(s: &ScheduleStatus) -> Vec<String> {
    s.flags
        .iter()
        .map(|f| match f {
            Flag::LastRunFailed => "its last run failed an attempt".to_owned(),
            Flag::LastRunDead => "its last run is dead-lettered".to_owned(),
            Flag::Missed { ticks } => format!("{ticks} missed tick(s) not acknowledged"),
            Flag::Overdue { since } => {
                format!("overdue since {} (is a scheduler running?)", since.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        })
        .collect()
}

pub(crate) async fn overview(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Query(notice): Query<Notice>,
) -> PageResult {
    let conn = app.connection().await?;
    let names = known_queues(&mut conn.clone(), &app.config.redis.prefix).await?;
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        rows.push(read_row(&app, &conn, name).await?);
    }
    let schedules = Schedules::with_connection(conn.clone(), &app.config.redis.prefix)?.status().await?;
    let policy = maxmemory_policy(&conn).await;

    let mut flags: Vec<(bool, String)> = Vec::new();
    match &policy {
        Ok(p) if p != "noeviction" => flags.push((
            true,
            format!("Redis' maxmemory-policy is {p}: under memory pressure Redis may evict jobs. Set it to noeviction."),
        )),
        Ok(_) => {}
        Err(e) => flags.push((false, format!("Redis' maxmemory-policy could not be read ({e}); it should be noeviction."))),
    }
    for r in &rows {
        let q = &r.name;
        let hour = r.last_hour();
        if hour.failed > 0 {
            flags.push((
                true,
                format!(
                    "Queue {q}: {} job(s) dead-lettered in the last hour ({} in the list).",
                    hour.failed, r.counts.failed
                ),
            ));
        }
        if r.counts.waiting > 0 && r.workers == 0 && !r.counts.paused {
            flags.push((true, format!("Queue {q}: {} job(s) waiting and no live worker.", r.counts.waiting)));
        }
    }
    for s in &schedules {
        for f in schedule_flags(s) {
            flags.push((true, format!("Schedule {}: {f}.", s.schedule.name)));
        }
    }

    let mut body = notice.html();
    body.push_str("<h1>Queues</h1>");
    if flags.is_empty() {
        body.push_str("<p class=\"ok-note\">Nothing needs a human right now.</p>");
    } else {
        body.push_str("<h2>Needs a human</h2><ul class=\"flags\">");
        for (bad, f) in &flags {
            let _ = write!(body, "<li class=\"{}\">{}</li>", if *bad { "bad" } else { "" }, esc(f));
        }
        body.push_str("</ul>");
    }
    let mut hour = Vec::new();
    let mut day = Vec::new();
    for r in &rows {
        add_series(&mut hour, &r.hour);
        add_series(&mut day, &r.day);
    }
    if !rows.is_empty() {
        body.push_str("<div class=\"charts\">");
        body.push_str(&chart("All queues, last hour (per minute)", &hour, minute_label));
        body.push_str(&chart("All queues, last day (per hour)", &day, hour_label));
        body.push_str("</div>");
    }
    body.push_str(
        "<h2>Every queue</h2><table id=\"queues\"><thead><tr><th>queue</th><th class=\"num\">waiting</th><th class=\"num\">delayed</th>\
         <th class=\"num\">active</th><th class=\"num\">completed</th><th class=\"num\">dead-lettered</th><th class=\"num\">workers</th>\
         <th class=\"num\">done / failed last hour</th><th>oldest waiting</th><th>state</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"10\" class=\"muted\">No queue under this prefix yet.</td></tr>");
    }
    for r in &rows {
        let c = &r.counts;
        let hour = r.last_hour();
        let mut state = String::new();
        if c.paused {
            state.push_str("<span class=\"tag warn\">paused</span> ");
        }
        if let Some(l) = &r.rate {
            let _ = write!(
                state,
                "<span class=\"tag\">limit {} per {}</span>",
                l.max(),
                esc(&took(l.per().as_millis() as u64))
            );
        }
        let failed_cell =
            if c.failed > 0 { format!("<span class=\"tag bad\">{}</span>", c.failed) } else { "0".into() };
        let _ = write!(
            body,
            "<tr data-queue=\"{}\"><td><a href=\"{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{failed_cell}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td><td>{}</td><td>{state}</td></tr>",
            esc(&r.name),
            esc(&app.queue_url(&r.name)),
            esc(&r.name),
            c.waiting,
            c.delayed,
            c.active,
            c.completed,
            r.workers,
            hour.completed(),
            hour.failed,
            r.oldest_waiting.map(|d| took(d.as_millis() as u64)).unwrap_or_else(|| "—".into()),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p class=\"muted\">Prefix {} · {} schedule(s) · <a href=\"{}/schedules\">schedules</a></p>",
        esc(&app.config.redis.prefix),
        schedules.len(),
        esc(app.base())
    );
    Ok(Html(app.frame(&who, "Queues", true).page(&body)).into_response())
}

/// `GET /api/queues`: what the overview shows of each queue, as JSON, for
/// scripts and other dashboards.
pub(crate) async fn api_queues(State(app): State<Arc<App>>) -> PageResult {
    let conn = app.connection().await?;
    let names = known_queues(&mut conn.clone(), &app.config.redis.prefix).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let r = read_row(&app, &conn, name).await?;
        let hour = r.last_hour();
        out.push(serde_json::json!({
            "queue": r.name,
            "counts": r.counts,
            "workers": r.workers,
            "rate_limit": r.rate.map(|l| serde_json::json!({ "max": l.max(), "per_ms": l.per().as_millis() as u64 })),
            "last_hour": {
                "completed": hour.completed(),
                "failed": hour.failed,
                "retried": hour.retried,
                "stalled": hour.stalled,
            },
            "oldest_waiting_ms": r.oldest_waiting.map(|d| d.as_millis() as u64),
        }));
    }
    Ok(axum::Json(out).into_response())
}

/// The query of a queue's page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    #[serde(default)]
    offset: usize,
    name: Option<String>,
    done: Option<String>,
}

/// Jobs of `state` from `offset`: with a name filter, the matching ones among
/// at most [`FILTER_SCAN`] entries. Returns them and the offset of the next
/// page, if there is more.
async fn list_jobs(
    q: &Queue,
    state: JobState,
    offset: usize,
    name: Option<&str>,
) -> Result<(Vec<JobEntry>, Option<usize>), PageError> {
    let Some(name) = name else {
        let mut jobs = q.jobs(state, offset, PAGE + 1).await?;
        let more = jobs.len() > PAGE;
        jobs.truncate(PAGE);
        return Ok((jobs, more.then_some(offset + PAGE)));
    };
    let mut found = Vec::new();
    let mut at = offset;
    while at < offset + FILTER_SCAN && found.len() < PAGE {
        let chunk = q.jobs(state, at, 200).await?;
        let n = chunk.len();
        for (i, entry) in chunk.into_iter().enumerate() {
            let hit = match &entry {
                JobEntry::Job(j) => j.name == name,
                JobEntry::Unreadable(_) => false,
            };
            if hit {
                found.push(entry);
                if found.len() == PAGE {
                    return Ok((found, Some(at + i + 1)));
                }
            }
        }
        if n < 200 {
            return Ok((found, None));
        }
        at += n;
    }
    Ok((found, Some(at)))
}

fn job_row(app: &App, queue: &str, entry: &JobEntry) -> String {
    match entry {
        JobEntry::Job(j) => {
            let when = j.finished_at_ms.or(j.started_at_ms).unwrap_or(j.created_at_ms);
            let error = j
                .last_error
                .as_deref()
                .map(|e| esc(&e.chars().take(120).collect::<String>()))
                .unwrap_or_default();
            format!(
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td>{}</td><td>{error}</td></tr>",
                esc(&app.job_url(queue, &j.id)),
                esc(&j.id),
                esc(&j.name),
                j.state,
                j.attempts_made,
                j.max_attempts,
                esc(&time(when)),
            )
        }
        JobEntry::Unreadable(u) => format!(
            "<tr><td><a href=\"{}\">{}</a></td><td colspan=\"5\" class=\"muted\">unreadable: {}</td></tr>",
            esc(&app.job_url(queue, &u.id)),
            esc(&u.id),
            esc(&u.problem)
        ),
    }
}

fn describe(e: &Event) -> String {
    let details: Vec<String> =
        e.fields.iter().map(|(k, v)| format!("{k}={}", v.chars().take(80).collect::<String>())).collect();
    format!("{} {} {}", time(e.at_ms), e.kind, details.join(" "))
}

pub(crate) async fn queue(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let (q, conn) = app.queue(&name).await?;
    let state: JobState = query.state.as_deref().unwrap_or("waiting").parse()?;
    let filter = query.name.as_deref().filter(|n| !n.is_empty());
    let counts = q.counts().await?;
    let workers = q.workers().await?;
    let hour = q.stats_series(Resolution::Minute, 60).await?;
    let day = q.stats_series(Resolution::Hour, 24).await?;
    let totals = q.stats().await?;
    let (jobs, next) = list_jobs(&q, state, query.offset, filter).await?;
    let events: redis::Value = redis::cmd("XREVRANGE")
        .arg(q.keys().events())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(15)
        .query_async(&mut conn.clone())
        .await
        .map_err(quern_common::Error::from)?;
    let events = parse_entries(events).unwrap_or_default();

    let frame = app.frame(&who, &name, true);
    let url = app.queue_url(&name);
    let mut body = Notice { done: query.done.clone() }.html();
    let _ = write!(body, "<h1>Queue {}</h1>", esc(&name));
    if counts.paused {
        body.push_str("<p><span class=\"tag warn\">paused</span> workers take no new job</p>");
    }
    body.push_str("<p>");
    if counts.paused {
        body.push_str(&frame.action(
            &format!("{url}/actions"),
            "Resume",
            &format!("Resume queue {name}?"),
            &[("action", "resume")],
            false,
        ));
    } else {
        body.push_str(&frame.action(
            &format!("{url}/actions"),
            "Pause",
            &format!("Pause queue {name}?"),
            &[("action", "pause")],
            true,
        ));
    }
    let run = |p: f64| totals.run.quantile_bound_ms(p).map_or_else(|| "—".into(), bound);
    let wait = |p: f64| totals.wait.quantile_bound_ms(p).map_or_else(|| "—".into(), bound);
    let _ = write!(
        body,
        "</p><p class=\"muted\">{} live worker(s) · since the start: {} completed, {} dead-lettered, {} retried, {} stalled · \
         run time p50 {} p95 {} · wait time p50 {} p95 {}</p>",
        workers.len(),
        totals.completed(),
        totals.failed,
        totals.retried,
        totals.stalled,
        run(0.5),
        run(0.95),
        wait(0.5),
        wait(0.95)
    );
    body.push_str("<div class=\"charts\">");
    body.push_str(&chart("Last hour (per minute)", &hour, minute_label));
    body.push_str(&chart("Last day (per hour)", &day, hour_label));
    body.push_str("</div>");

    body.push_str("<p class=\"tabs\">");
    for s in JobState::ALL {
        let n = match s {
            JobState::Waiting => counts.waiting,
            JobState::Delayed => counts.delayed,
            JobState::Active => counts.active,
            JobState::Completed => counts.completed,
            JobState::Failed => counts.failed,
            JobState::WaitingChildren => counts.waiting_children,
        };
        let label = if s == JobState::Failed { "dead-lettered".to_owned() } else { s.to_string() };
        let _ = write!(
            body,
            "<a class=\"{}\" href=\"{}?state={}\">{} ({n})</a>",
            if s == state { "on" } else { "" },
            esc(&url),
            s,
            label
        );
    }
    body.push_str("</p>");
    let _ = write!(
        body,
        "<form method=\"get\" action=\"{}\"><input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <input name=\"name\" placeholder=\"job name\" aria-label=\"filter by job name\" value=\"{}\"> <button>Filter</button></form>",
        esc(&url),
        esc(filter.unwrap_or(""))
    );
    if state == JobState::Failed && counts.failed > 0 {
        let (what, fields): (String, Vec<(&str, &str)>) = match filter {
            Some(f) => (format!("every dead-lettered job named {f}"), vec![("filter", f)]),
            None => ("every dead-lettered job".to_owned(), vec![]),
        };
        let mut retry = fields.clone();
        retry.push(("action", "retry_all"));
        let mut purge = fields;
        purge.push(("action", "purge_all"));
        body.push_str("<p>");
        body.push_str(&frame.action(
            &format!("{url}/actions"),
            "Retry all",
            &format!("Retry {what} of queue {name}?"),
            &retry,
            false,
        ));
        body.push_str(&frame.action(
            &format!("{url}/actions"),
            "Purge all",
            &format!("Delete {what} of queue {name}? This cannot be undone."),
            &purge,
            true,
        ));
        body.push_str("</p>");
    }
    body.push_str("<table id=\"jobs\"><thead><tr><th>id</th><th>name</th><th>state</th><th class=\"num\">attempts</th><th>when</th><th>last error</th></tr></thead><tbody>");
    if jobs.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No job here.</td></tr>");
    }
    for j in &jobs {
        body.push_str(&job_row(&app, &name, j));
    }
    body.push_str("</tbody></table><p>");
    let filter_q = filter.map(|f| format!("&name={}", enc(f))).unwrap_or_default();
    if query.offset > 0 {
        let _ = write!(body, "<a href=\"{}?state={state}{}\">First page</a> ", esc(&url), esc(&filter_q));
    }
    if let Some(n) = next {
        let _ = write!(
            body,
            "<a href=\"{}?state={state}&offset={n}{}\">Next page</a>",
            esc(&url),
            esc(&filter_q)
        );
    }
    body.push_str("</p><h2>Live workers</h2><table id=\"workers\"><thead><tr><th>worker</th><th class=\"num\">running / slots</th><th>version</th><th>since</th><th>last report</th></tr></thead><tbody>");
    if workers.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No live worker.</td></tr>");
    }
    for w in &workers {
        let _ = write!(
            body,
            "<tr><td>{}{}</td><td class=\"num\">{} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.id),
            if w.stopping { " <span class=\"tag warn\">stopping</span>" } else { "" },
            w.running,
            w.concurrency,
            esc(&w.version),
            time(w.first_seen_ms),
            time(w.last_seen_ms)
        );
    }
    body.push_str("</tbody></table><h2>Recent events</h2><ul>");
    for e in &events {
        let _ = write!(body, "<li>{}</li>", esc(&describe(e)));
    }
    body.push_str("</ul>");
    Ok(Html(frame.page(&body)).into_response())
}

fn bound(ms: u64) -> String {
    if ms == u64::MAX { "> 1 h".to_owned() } else { format!("≤ {}", took(ms)) }
}

/// The actions a job in its state allows: (action, label, question, danger).
fn job_actions(j: &JobInfo) -> Vec<(&'static str, &'static str, &'static str, bool)> {
    match j.state {
        JobState::Waiting => vec![
            ("cancel", "Cancel", "Cancel this job? It moves to the dead-letter list.", true),
            ("remove", "Remove", "Delete this job? This cannot be undone.", true),
        ],
        JobState::Delayed => vec![
            ("promote", "Run now", "Make this delayed job waiting now?", false),
            ("cancel", "Cancel", "Cancel this job? It moves to the dead-letter list.", true),
            ("remove", "Remove", "Delete this job? This cannot be undone.", true),
        ],
        JobState::Active => {
            vec![("cancel", "Cancel", "Cancel this running job? Its worker loses the lease.", true)]
        }
        JobState::Completed => vec![("remove", "Remove", "Delete this job? This cannot be undone.", true)],
        JobState::Failed => vec![
            ("retry", "Retry", "Move this job back to waiting with a fresh attempt budget?", false),
            ("purge", "Purge", "Delete this dead-lettered job? This cannot be undone.", true),
        ],
        JobState::WaitingChildren => vec![
            (
                "cancel",
                "Cancel",
                "Cancel this parent and its children that have not ended? They move to the dead-letter list.",
                true,
            ),
            (
                "remove",
                "Remove",
                "Delete this parent and its children that have not ended? This cannot be undone.",
                true,
            ),
        ],
    }
}

/// JSON text pretty-printed, or as it is when it is not JSON.
fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

pub(crate) async fn job(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Path((name, id)): Path<(String, String)>,
    Query(notice): Query<Notice>,
) -> PageResult {
    let (q, _) = app.queue(&name).await?;
    let Some(j) = q.job(&id).await? else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("queue {name} has no job {id} (never added, removed, or trimmed after completing)"),
        ));
    };
    let title = format!("Job {id}");
    let frame = app.frame(&who, &title, j.state == JobState::Active || j.state == JobState::Waiting);
    let mut body = notice.html();
    let _ = write!(
        body,
        "<h1>Job {} <span class=\"tag{}\" id=\"state\">{}</span></h1><p><a href=\"{}\">← queue {}</a></p><p>",
        esc(&j.id),
        if j.state == JobState::Failed { " bad" } else { "" },
        j.state,
        esc(&app.queue_url(&name)),
        esc(&name)
    );
    let to = format!("{}/actions", app.queue_url(&name));
    for (action, label, question, danger) in job_actions(&j) {
        body.push_str(&frame.action(&to, label, question, &[("action", action), ("id", &j.id)], danger));
    }
    body.push_str("</p><dl class=\"kv\">");
    let mut kv = |k: &str, v: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    };
    kv("name", j.name.clone());
    kv("priority", j.priority.to_string());
    kv("attempts", format!("{} of {}", j.attempts_made, j.max_attempts));
    kv("stalls", j.stalls.to_string());
    kv("added", time(j.created_at_ms));
    if let Some(t) = j.started_at_ms {
        kv("latest attempt started", time(t));
    }
    if let Some(t) = j.finished_at_ms {
        kv("finished", time(t));
    }
    if let Some(w) = &j.worker {
        kv("worker", w.clone());
    }
    if let Some(e) = &j.last_error {
        let label = if j.state == JobState::Completed { "error of an earlier attempt" } else { "last error" };
        kv(label, e.clone());
    }
    if let Some(k) = &j.concurrency_key {
        kv("concurrency key", k.clone());
    }
    if let Some(k) = &j.idempotency_key {
        kv("idempotency key", k.clone());
    }
    body.push_str("</dl>");
    for problem in &j.problems {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(problem));
    }
    let _ = write!(body, "<h2>Payload</h2><pre id=\"payload\">{}</pre>", esc(&pretty(&j.payload)));
    if let Some(p) = &j.progress {
        let _ = write!(body, "<h2>Progress</h2><pre>{}</pre>", esc(&pretty(p)));
    }
    if let Some(r) = &j.result {
        let _ = write!(body, "<h2>Result</h2><pre id=\"result\">{}</pre>", esc(&pretty(r)));
    }
    body.push_str(
        "<h2>Attempts</h2><table id=\"attempts\"><thead><tr><th>#</th><th>outcome</th><th>started</th><th>took</th><th>worker</th><th>error</th></tr></thead><tbody>",
    );
    if j.history.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">Not run yet.</td></tr>");
    }
    for a in &j.history {
        let took_ms = match (a.started_at_ms, a.finished_at_ms) {
            (Some(s), Some(f)) => took(f.saturating_sub(s)),
            _ => String::new(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.number.map(|n| n.to_string()).unwrap_or_default(),
            esc(a.outcome.as_str()),
            a.started_at_ms.map(time).unwrap_or_default(),
            took_ms,
            esc(a.worker.as_deref().unwrap_or("")),
            esc(a.error.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table>");
    step_timeline(&mut body, &j.steps);
    flow_section(&app, &mut body, &j).await;
    Ok(Html(frame.page(&body)).into_response())
}

/// Children listed on a job's page, at most: a parent of 10,000 children
/// keeps a short page (its children are counted by status, all of them).
pub(crate) const CHILDREN_SHOWN: usize = 100;
/// Characters of a child's result or error shown in its row, at most.
const CHILD_DETAIL_CHARS: usize = 200;

/// `text` cut to `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The job's flow: its parent (read for its state: one field) and its
/// children as the job records them (no read per child), the first
/// [`CHILDREN_SHOWN`] listed.
async fn flow_section(app: &App, body: &mut String, j: &JobInfo) {
    if let Some(p) = &j.parent {
        let state = match app.queue(&p.queue).await {
            Ok((q, _)) => match q.job_state(&p.id).await {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => "gone (removed, or trimmed after it ended)".to_owned(),
                Err(e) => format!("unreadable: {e}"),
            },
            Err(e) => format!("unreadable: {}", e.message),
        };
        let _ = write!(
            body,
            "<h2>Parent</h2><table id=\"parent\"><thead><tr><th>queue</th><th>job</th><th>state</th><th>if this job fails</th></tr></thead>\
             <tbody><tr><td><a href=\"{}\">{}</a></td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr></tbody></table>",
            esc(&app.queue_url(&p.queue)),
            esc(&p.queue),
            esc(&app.job_url(&p.queue, &p.id)),
            esc(&p.id),
            esc(&state),
            esc(p.on_failure.as_str())
        );
    }
    if j.children.is_empty() {
        return;
    }
    let count = |status: ChildStatus| j.children.iter().filter(|c| c.status == status).count();
    let tally: Vec<String> = [
        (ChildStatus::Pending, "pending"),
        (ChildStatus::Completed, "completed"),
        (ChildStatus::Failed, "failed"),
        (ChildStatus::Ignored, "ignored"),
        (ChildStatus::Removed, "removed"),
    ]
    .into_iter()
    .filter_map(|(status, label)| match count(status) {
        0 => None,
        n => Some(format!("{n} {label}")),
    })
    .collect();
    let _ = write!(
        body,
        "<h2>Children</h2><p id=\"children-count\">{} {}: {}</p><table id=\"children\"><thead><tr><th>queue</th><th>job</th><th>outcome</th><th>result or error</th></tr></thead><tbody>",
        j.children.len(),
        if j.children.len() == 1 { "child" } else { "children" },
        tally.join(", ")
    );
    for c in j.children.iter().take(CHILDREN_SHOWN) {
        let detail = c.error.as_deref().or(c.result.as_deref()).unwrap_or("");
        let _ = write!(
            body,
            "<tr><td><a href=\"{}\">{}</a></td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&app.queue_url(&c.queue)),
            esc(&c.queue),
            esc(&app.job_url(&c.queue, &c.id)),
            esc(&c.id),
            child_status(c.status),
            esc(&clip(detail, CHILD_DETAIL_CHARS))
        );
    }
    body.push_str("</tbody></table>");
    if j.children.len() > CHILDREN_SHOWN {
        let _ = write!(
            body,
            "<p class=\"muted\" id=\"children-more\">and {} more children not listed (<code>quern job</code> lists them all)</p>",
            j.children.len() - CHILDREN_SHOWN
        );
    }
}

/// A child's outcome as its parent records it.
fn child_status(status: ChildStatus) -> &'static str {
    match status {
        ChildStatus::Pending => "pending",
        ChildStatus::Completed => "completed",
        ChildStatus::Failed => "failed",
        ChildStatus::Ignored => "ignored",
        ChildStatus::Removed => "removed",
    }
}

/// The job's durable steps and sleeps, in the order they were stored.
fn step_timeline(body: &mut String, steps: &[quern_common::steps::StepRecord]) {
    if steps.is_empty() {
        return;
    }
    body.push_str(
        "<h2>Steps</h2><table id=\"steps\"><thead><tr><th>#</th><th>step</th><th>outcome</th><th>started</th><th>took</th><th class=\"num\">attempt</th><th>detail</th></tr></thead><tbody>",
    );
    for step in steps {
        let detail = match step.wake_at_ms() {
            Some(wake) => format!("until {}", time(wake)),
            None => step.detail(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            step.seq,
            esc(&step.key()),
            esc(&step.outcome.to_string()),
            time(step.started_at_ms),
            took(step.took_ms),
            step.attempt,
            esc(&detail)
        );
    }
    body.push_str("</tbody></table>");
}

/// The query of find-by-id.
#[derive(Debug, Deserialize)]
pub(crate) struct FindQuery {
    id: String,
    queue: Option<String>,
}

pub(crate) async fn find(State(app): State<Arc<App>>, Query(f): Query<FindQuery>) -> PageResult {
    let id = f.id.trim();
    if id.is_empty() {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "give a job id to find"));
    }
    let conn = app.connection().await?;
    let queues = match f.queue.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => vec![q.to_owned()],
        None => known_queues(&mut conn.clone(), &app.config.redis.prefix).await?,
    };
    for name in &queues {
        let q = Queue::builder(&app.config.redis, name).with_connection(conn.clone())?;
        let exists: bool = redis::cmd("EXISTS")
            .arg(q.keys().job(id))
            .query_async(&mut conn.clone())
            .await
            .map_err(quern_common::Error::from)?;
        if exists {
            return Ok((StatusCode::SEE_OTHER, [(LOCATION, app.job_url(name, id))]).into_response());
        }
    }
    Err(PageError::new(StatusCode::NOT_FOUND, format!("no job {id} in {} queue(s) looked at", queues.len())))
}

pub(crate) async fn schedules(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Query(notice): Query<Notice>,
) -> PageResult {
    let conn = app.connection().await?;
    let list = Schedules::with_connection(conn, &app.config.redis.prefix)?.status().await?;
    let frame = app.frame(&who, "Schedules", true);
    let mut body = notice.html();
    body.push_str(
        "<h1>Schedules</h1><table id=\"schedules\"><thead><tr><th>schedule</th><th>queue</th><th>cron</th><th>next fire</th>\
         <th>last tick</th><th>last run</th><th class=\"num\">runs</th><th class=\"num\">missed ticks</th><th>needs attention</th></tr></thead><tbody>",
    );
    if list.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">No schedule under this prefix.</td></tr>");
    }
    for s in &list {
        let d = &s.schedule;
        let last_run = match &s.last_run {
            None => "—".to_owned(),
            Some(RunOutcome::Pending) => "pending".into(),
            Some(RunOutcome::Running) => "running".into(),
            Some(RunOutcome::Completed) => "completed".into(),
            Some(RunOutcome::Failed { error }) => {
                format!("failed, retrying: {}", error.as_deref().unwrap_or(""))
            }
            Some(RunOutcome::Dead { error }) => format!("dead-lettered: {}", error.as_deref().unwrap_or("")),
            Some(RunOutcome::Gone) => "gone (trimmed or removed)".into(),
        };
        let last_run = match (&s.last_job_id, &s.last_run) {
            (Some(id), Some(r)) if !matches!(r, RunOutcome::Gone) => {
                format!("<a href=\"{}\">{}</a>", esc(&app.job_url(&d.queue, id)), esc(&last_run))
            }
            _ => esc(&last_run),
        };
        let mut missed = s.missed_ticks.to_string();
        if s.missed_ticks > 0 {
            missed.push(' ');
            missed.push_str(&frame.action(
                &format!("{}/schedules/{}/acknowledge", app.base(), enc(&d.name)),
                "Acknowledge",
                &format!("Acknowledge the missed ticks of schedule {}?", d.name),
                &[],
                false,
            ));
        }
        let _ = write!(
            body,
            "<tr><td>{}{}</td><td><a href=\"{}\">{}</a></td><td>{} ({})</td><td>{}</td><td>{}</td><td>{last_run}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{missed}</td><td>{}</td></tr>",
            esc(&d.name),
            if d.enabled { "" } else { " <span class=\"tag\">disabled</span>" },
            esc(&app.queue_url(&d.queue)),
            esc(&d.queue),
            esc(&d.cron),
            esc(&d.time_zone),
            s.next_fire.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "—".into()),
            s.last_tick.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "—".into()),
            s.runs,
            esc(&schedule_flags(s).join("; ")),
        );
    }
    body.push_str("</tbody></table>");
    Ok(Html(frame.page(&body)).into_response())
}
