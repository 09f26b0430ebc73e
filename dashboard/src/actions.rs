//! The operator's actions: each a POST, refused in read-only mode and
//! without the session's anti-forgery field, confirmed (a dialog with
//! JavaScript, else a confirmation page), done through the same library
//! calls as the CLI, then recorded in the queue's events with who did it.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{Html, IntoResponse};
use quern_common::{JobEntry, JobState};
use quern_producer::Queue;
use quern_scheduler::Schedules;
use serde::Deserialize;

use crate::App;
use crate::auth::{Who, csrf_ok};
use crate::html::{enc, esc};
use crate::pages::{PageError, PageResult};

/// Dead-lettered jobs one "all matching a name" action looks at, at most
/// (the rest stay for another click; without a filter there is no limit).
const MATCH_LIMIT: usize = 10_000;

/// An action's form.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    action: String,
    id: Option<String>,
    filter: Option<String>,
    csrf: Option<String>,
    confirm: Option<String>,
}

/// Refusals every action shares.
fn allowed(app: &App, who: &Who, csrf: Option<&str>) -> Result<(), PageError> {
    if app.config.read_only {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only: actions are refused",
        ));
    }
    if !csrf_ok(who, csrf) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "the form's anti-forgery field is missing or stale: reload the page and try again",
        ));
    }
    Ok(())
}

/// The page asking "are you sure?", for browsers without JavaScript.
fn confirmation(app: &App, who: &Who, to: &str, question: &str, fields: &[(&str, &str)]) -> PageResult {
    let frame = app.frame(who, "Confirm", false);
    let mut body =
        format!("<h1>Confirm</h1><p>{}</p><form method=\"post\" action=\"{}\">", esc(question), esc(to));
    for (k, v) in fields {
        let _ = write!(body, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
    }
    if let Some(c) = &who.csrf {
        let _ = write!(body, "<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(c));
    }
    let _ = write!(
        body,
        "<input type=\"hidden\" name=\"confirm\" value=\"yes\"><button class=\"danger\">Yes, do it</button> \
         <a href=\"javascript:history.back()\">No, go back</a></form>"
    );
    Ok(Html(frame.page(&body)).into_response())
}

fn back(to: String, message: &str) -> axum::response::Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    (StatusCode::SEE_OTHER, [(LOCATION, format!("{to}{sep}done={}", enc(message)))]).into_response()
}

/// Ids of dead-lettered jobs named `name`, among the first [`MATCH_LIMIT`].
async fn dead_lettered_named(q: &Queue, name: &str) -> Result<Vec<String>, PageError> {
    let mut ids = Vec::new();
    let mut offset = 0;
    while offset < MATCH_LIMIT {
        let page = q.jobs(JobState::Failed, offset, 500).await?;
        let n = page.len();
        ids.extend(page.into_iter().filter_map(|e| match e {
            JobEntry::Job(j) if j.name == name => Some(j.id),
            _ => None,
        }));
        if n < 500 {
            break;
        }
        offset += n;
    }
    Ok(ids)
}

pub(crate) async fn queue_action(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    allowed(&app, &who, form.csrf.as_deref())?;
    let (q, _) = app.queue(&queue).await?;
    let id = form.id.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let filter = form.filter.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let needs_id = |what: &str| {
        id.ok_or_else(|| {
            PageError::new(StatusCode::BAD_REQUEST, format!("{what} needs the job's id (field id)"))
        })
    };
    let matching = filter.map(|f| format!(" named {f}")).unwrap_or_default();
    let question = match form.action.as_str() {
        "retry" => format!("Retry dead-lettered job {}?", needs_id("retry")?),
        "purge" => format!("Delete dead-lettered job {}? This cannot be undone.", needs_id("purge")?),
        "retry_all" => format!("Retry every dead-lettered job{matching} of queue {queue}?"),
        "purge_all" => {
            format!("Delete every dead-lettered job{matching} of queue {queue}? This cannot be undone.")
        }
        "promote" => format!("Make delayed job {} waiting now?", needs_id("promote")?),
        "cancel" => format!("Cancel job {}? It moves to the dead-letter list.", needs_id("cancel")?),
        "remove" => format!("Delete job {}? This cannot be undone.", needs_id("remove")?),
        "pause" => format!("Pause queue {queue}?"),
        "resume" => format!("Resume queue {queue}?"),
        other => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown action {other:?}; expected retry, purge, retry_all, purge_all, promote, cancel, remove, pause or resume"
                ),
            ));
        }
    };
    if form.confirm.as_deref() != Some("yes") {
        let mut fields = vec![("action", form.action.as_str())];
        if let Some(id) = id {
            fields.push(("id", id));
        }
        if let Some(f) = filter {
            fields.push(("filter", f));
        }
        return confirmation(&app, &who, &format!("{}/actions", app.queue_url(&queue)), &question, &fields);
    }

    let queue_page = app.queue_url(&queue);
    let dlq_page = format!("{queue_page}?state=failed");
    let (message, to, details): (String, String, Vec<(&str, String)>) = match (form.action.as_str(), id) {
        ("retry", Some(id)) => {
            q.retry_dead_letter(id).await?;
            (format!("Job {id} moved back to waiting."), app.job_url(&queue, id), vec![("id", id.to_owned())])
        }
        ("purge", Some(id)) => {
            q.purge_dead_letter(id).await?;
            (format!("Job {id} deleted."), dlq_page, vec![("id", id.to_owned())])
        }
        ("promote", Some(id)) => {
            q.promote(id).await?;
            (format!("Job {id} is waiting now."), app.job_url(&queue, id), vec![("id", id.to_owned())])
        }
        ("cancel", Some(id)) => {
            q.cancel(id, &format!("cancelled by {} in the dashboard", who.actor)).await?;
            (format!("Job {id} cancelled."), app.job_url(&queue, id), vec![("id", id.to_owned())])
        }
        ("remove", Some(id)) => {
            q.remove(id).await?;
            (format!("Job {id} deleted."), queue_page, vec![("id", id.to_owned())])
        }
        ("retry_all" | "purge_all", _) => {
            let retry = form.action == "retry_all";
            let count = match filter {
                None if retry => q.retry_all_dead_letters().await?,
                None => q.purge_dead_letters().await?,
                Some(name) => {
                    let mut n = 0;
                    for id in dead_lettered_named(&q, name).await? {
                        let done = if retry {
                            q.retry_dead_letter(&id).await
                        } else {
                            q.purge_dead_letter(&id).await
                        };
                        match done {
                            Ok(()) => n += 1,
                            // Acted on meanwhile by someone else: not ours to count.
                            Err(e)
                                if e.kind() == quern_common::ErrorKind::NotFound
                                    || e.kind() == quern_common::ErrorKind::WrongState => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    n
                }
            };
            let verb = if retry { "moved back to waiting" } else { "deleted" };
            let mut details = vec![("count", count.to_string())];
            if let Some(f) = filter {
                details.push(("filter", format!("name={f}")));
            }
            (format!("{count} dead-lettered job(s){matching} {verb}."), dlq_page, details)
        }
        ("pause", _) => {
            q.pause().await?;
            (format!("Queue {queue} paused."), queue_page, vec![])
        }
        ("resume", _) => {
            q.resume().await?;
            (format!("Queue {queue} resumed."), queue_page, vec![])
        }
        _ => {
            return Err(PageError::new(StatusCode::BAD_REQUEST, "this action needs the job's id (field id)"));
        }
    };
    let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
    q.record_operator_action(&who.actor, &form.action, &details).await?;
    Ok(back(to, &message))
}

/// The form of acknowledging missed ticks.
#[derive(Debug, Deserialize)]
pub(crate) struct AckForm {
    csrf: Option<String>,
    confirm: Option<String>,
}

pub(crate) async fn acknowledge(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Form(form): Form<AckForm>,
) -> PageResult {
    allowed(&app, &who, form.csrf.as_deref())?;
    let to = format!("{}/schedules/{}/acknowledge", app.base(), enc(&name));
    if form.confirm.as_deref() != Some("yes") {
        return confirmation(
            &app,
            &who,
            &to,
            &format!("Acknowledge the missed ticks of schedule {name}?"),
            &[],
        );
    }
    let conn = app.connection().await?;
    let schedules = Schedules::with_connection(conn.clone(), &app.config.redis.prefix)?;
    let Some(schedule) = schedules.get(&name).await? else {
        return Err(PageError::new(StatusCode::NOT_FOUND, format!("no schedule {name}")));
    };
    schedules.acknowledge_missed(&name).await?;
    let q = Queue::builder(&app.config.redis, &schedule.queue).with_connection(conn)?;
    q.record_operator_action(&who.actor, "acknowledge_missed", &[("schedule", &name)]).await?;
    Ok(back(format!("{}/schedules", app.base()), &format!("Missed ticks of schedule {name} acknowledged.")))
}
