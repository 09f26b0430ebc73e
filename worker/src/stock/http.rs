//! The `http` job kind: one HTTP request.
//!
//! - 2xx completes the job (the result holds the status and the start of the body).
//! - 408, 429, 5xx and network errors (refused, reset, timed out) are
//!   retryable failed attempts.
//! - Any other status (other 4xx, an unfollowed 3xx) fails permanently.
//!
//! Secrets stay out of Redis: write `${API_TOKEN}` in the URL or a header value
//! and the worker substitutes its own environment variable `API_TOKEN` when it
//! sends the request. Error messages quote the URL as written, unexpanded.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::head;
use crate::JobError;

/// Request timeout when the payload gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Characters of a response body kept in the result or an error message.
pub const BODY_HEAD_CHARS: usize = 1024;

/// The payload of an `http` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJob {
    /// HTTP method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL; `${VAR}` is replaced by the worker's environment variable `VAR`.
    pub url: String,
    /// Request headers; `${VAR}` in values is replaced like in the URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body: a JSON string is sent as is, any other JSON value is sent
    /// serialized with `Content-Type: application/json` (unless a header sets one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Longest time for the whole request, e.g. `"10s"` (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "quern_common::duration::text_opt")]
    pub timeout: Option<Duration>,
}

fn default_method() -> String {
    "GET".into()
}

/// What a successful request returned (stored as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOutput {
    /// The status code (2xx).
    pub status: u16,
    /// The start of the response body.
    pub body: String,
}

/// The client the stock worker shares between requests.
pub fn client() -> reqwest::Result<Client> {
    Client::builder().user_agent(concat!("quern-worker/", env!("CARGO_PKG_VERSION"))).build()
}

/// Replace every `${NAME}` by the environment variable `NAME`. An unset
/// variable is a permanent failure naming it (never its value).
pub fn expand_env(text: &str) -> Result<String, JobError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(JobError::permanent(format!("unclosed ${{ in {text:?}")));
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(JobError::permanent(format!("invalid variable name {name:?} in ${{...}}")));
        }
        let value = std::env::var(name).map_err(|_| {
            JobError::permanent(format!("environment variable {name} is not set on this worker"))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Send the request and classify the answer (see the module docs).
pub async fn run(client: &Client, job: &HttpJob) -> Result<HttpOutput, JobError> {
    let method = Method::from_bytes(job.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| JobError::permanent(format!("invalid HTTP method {:?}", job.method)))?;
    let url = expand_env(&job.url)?;
    let mut headers = HeaderMap::new();
    for (name, template) in &job.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| JobError::permanent(format!("invalid header name {name:?}")))?;
        let mut value = HeaderValue::from_str(&expand_env(template)?)
            .map_err(|_| JobError::permanent(format!("invalid value for header {name:?}")))?;
        // Keep expanded secrets out of debug output.
        value.set_sensitive(template.contains("${"));
        headers.insert(header, value);
    }
    let mut request = client.request(method.clone(), &url).timeout(job.timeout.unwrap_or(DEFAULT_TIMEOUT));
    match &job.body {
        None => {}
        Some(Value::String(text)) => request = request.body(text.clone()),
        Some(json) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            request = request.body(json.to_string());
        }
    }
    let what = format!("{method} {}", job.url);
    let response = request.headers(headers).send().await.map_err(|e| request_error(&what, e))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body = head(&body, BODY_HEAD_CHARS);
    if status.is_success() {
        return Ok(HttpOutput { status: status.as_u16(), body });
    }
    let message = format!("{what} answered {status}: {body}");
    if is_retryable(status) { Err(JobError::retryable(message)) } else { Err(JobError::permanent(message)) }
}

/// 408, 429 and 5xx are worth retrying; other non-2xx statuses are not.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn request_error(what: &str, e: reqwest::Error) -> JobError {
    // Describe without the URL reqwest would print (it may hold expanded secrets).
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        JobError::permanent(format!("{what}: invalid request: {detail}"))
    } else if e.is_timeout() {
        JobError::retryable(format!("{what}: timed out: {detail}"))
    } else {
        JobError::retryable(format!("{what}: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_environment_variables() {
        // PATH is set in any test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("a ${PATH} b").unwrap(), format!("a {path} b"));
        assert_eq!(expand_env("no vars $HOME").unwrap(), "no vars $HOME");
        let err = expand_env("Bearer ${QUERN_SURELY_UNSET_VAR}").unwrap_err();
        assert!(err.is_permanent() && err.message().contains("QUERN_SURELY_UNSET_VAR"), "{err}");
        assert!(expand_env("${1X}").is_err());
        assert!(expand_env("${OPEN").is_err());
    }

    #[test]
    fn classifies_statuses() {
        for code in [408, 429, 500, 502, 503] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422, 301] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
