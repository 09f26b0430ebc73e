//! Small runnable quern programs (see `src/bin/`):
//!
//! - `quern-example-web`: an axum service whose `POST /signups` enqueues a
//!   `welcome` job and answers `202 Accepted` with the job id, and whose
//!   `GET /jobs/{id}` reports the job's state.
//! - `quern-example-worker`: a worker with a typed handler for those jobs.
//! - `quern-example-workflows`: a worker for two workflows written with
//!   durable steps and sleeps ([`workflows`]): a nightly settlement and an
//!   onboarding flow.
//!
//! Both read `REDIS_URL` (default `redis://127.0.0.1:6379`) and use the queue
//! [`EMAILS_QUEUE`]; the payload type they share is [`Welcome`].
#![forbid(unsafe_code)]

pub mod web;
pub mod workflows;

use serde::{Deserialize, Serialize};

/// The queue both examples use.
pub const EMAILS_QUEUE: &str = "emails";

/// The payload of a `welcome` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// Where to send the welcome mail.
    pub email: String,
    /// The new user's name.
    pub name: String,
}

/// Log to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
