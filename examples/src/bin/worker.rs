//! A custom worker with a typed handler: runs the `welcome` jobs that
//! `quern-example-web` enqueues. Run as many copies as you like.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p quern-examples --bin quern-example-worker
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use quern_examples::{EMAILS_QUEUE, Welcome, init_logging};
use quern_worker::{JobContext, JobError, RedisConfig, Worker};

/// Pretend to send the mail. A real handler would call an email API here and
/// return its errors: `?` turns them into retryable failures.
async fn send_welcome(ctx: JobContext, mail: Welcome) -> Result<serde_json::Value, JobError> {
    if mail.email.ends_with("@example.invalid") {
        // Retrying cannot fix an address that does not exist: straight to the dead-letter list.
        return Err(JobError::permanent(format!("{} does not exist", mail.email)));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    tracing::info!(job = ctx.id(), attempt = ctx.attempt(), to = %mail.email, "welcome mail sent");
    Ok(serde_json::json!({ "sent_to": mail.email, "attempt": ctx.attempt() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let concurrency = std::env::var("CONCURRENCY").ok().and_then(|c| c.parse().ok()).unwrap_or(20);
    let worker = Worker::builder(&RedisConfig::from_env(), EMAILS_QUEUE)
        .concurrency(concurrency)
        .handler("welcome", send_welcome)
        .build()
        .await?;
    tracing::info!(worker = worker.id(), concurrency, "email worker started");
    // Until SIGTERM/SIGINT; then running jobs finish and the rest go back to waiting.
    worker.run().await?;
    Ok(())
}
