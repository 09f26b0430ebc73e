//! The stock job kinds run by `quern worker`, for teams that write no Rust:
//!
//! - [`command`]: job name `command`, payload
//!   `{"argv": [...], "env": {...}, "cwd": "...", "timeout": "30s", "kill_grace": "5s"}`.
//! - [`http`]: job name `http`, payload
//!   `{"method": "POST", "url": "...", "headers": {...}, "body": ..., "timeout": "30s"}`.
//!
//! Register both on a worker with [`register`]. Enabled by the cargo feature `stock`.

pub mod command;
pub mod http;

use crate::{Error, JobContext, Result, WorkerBuilder};

/// The job names of the stock kinds.
pub const KINDS: [&str; 2] = ["command", "http"];

/// Add the `command` and `http` handlers to `builder`.
pub fn register(builder: WorkerBuilder) -> Result<WorkerBuilder> {
    let client = http::client()
        .map_err(|e| Error::Io { what: "set up the HTTP client".into(), reason: e.to_string() })?;
    Ok(builder
        .handler("command", |ctx: JobContext, job: command::CommandJob| async move {
            command::run(&job, &ctx).await
        })
        .handler("http", move |_ctx: JobContext, job: http::HttpJob| {
            let client = client.clone();
            async move { http::run(&client, &job).await }
        }))
}

/// The last `max` bytes of `bytes` as text, cut at a character boundary.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // A cut in the middle of a UTF-8 sequence shows as U+FFFD at the start: drop it.
    text.trim_start_matches('\u{FFFD}').to_owned()
}

/// The first `max` characters of `text`, with a marker when cut.
pub(crate) fn head(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
        None => text.to_owned(),
    }
}
