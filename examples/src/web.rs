//! The routes of the web producer example (served by `quern-example-web`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quern_producer::{Error, JobOptions, Queue};
use serde_json::json;

use crate::Welcome;

/// An error answer: the status and a JSON body saying why.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if e.is_invalid_input() {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        } else if e.is_retryable() {
            // Redis is down or slow: the client may try again; nothing was enqueued twice
            // if it passes the same idempotency key.
            ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        } else {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `POST /signups`: enqueue the welcome mail and answer at once.
async fn signup(State(queue): State<Queue>, Json(user): Json<Welcome>) -> Result<Response, ApiError> {
    if !user.email.contains('@') {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid email {:?}", user.email)));
    }
    // The email makes the job id: a retried request does not send two mails.
    let opts = JobOptions::new().job_id(format!("welcome-{}", user.email)).attempts(5);
    let added = queue.add_with("welcome", &user, opts).await?;
    let body =
        json!({ "job_id": added.id, "created": added.created, "status": format!("/jobs/{}", added.id) });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /jobs/{id}`: the job's state, attempts and outcome.
async fn status(State(queue): State<Queue>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(job) = queue.job(&id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id:?}")));
    };
    let body = json!({
        "id": job.id,
        "state": job.state,
        "attempts": job.attempts_made,
        "max_attempts": job.max_attempts,
        "created_at_ms": job.created_at_ms,
        "finished_at_ms": job.finished_at_ms,
        "last_error": job.last_error,
        "result": job.result.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
    });
    Ok(Json(body).into_response())
}

/// The routes, over a queue handle (cheap to clone: one shared connection).
pub fn app(queue: Queue) -> Router {
    Router::new().route("/signups", post(signup)).route("/jobs/{id}", get(status)).with_state(queue)
}
