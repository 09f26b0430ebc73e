//! A job on its way in: what a producer adds, and what the add answers.

use serde::Serialize;

use crate::{Error, JobOptions, Result};

/// A job to add (alone or in bulk).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) name: String,
    pub(crate) payload: String,
    pub(crate) options: JobOptions,
}

impl NewJob {
    /// A job named `name` with a payload serialized to JSON.
    pub fn new<T: Serialize + ?Sized>(name: impl Into<String>, payload: &T) -> Result<Self> {
        let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidPayload(e.to_string()))?;
        Ok(Self { name: name.into(), payload, options: JobOptions::default() })
    }

    /// A job whose payload is already JSON text; it is checked to be valid JSON.
    pub fn from_json(name: impl Into<String>, json: impl Into<String>) -> Result<Self> {
        let payload = json.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&payload)
            .map_err(|e| Error::InvalidPayload(format!("not valid JSON: {e}")))?;
        Ok(Self { name: name.into(), payload, options: JobOptions::default() })
    }

    /// Set the job's options.
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The payload (JSON text).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Size of the serialized payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// The job's options.
    pub fn job_options(&self) -> &JobOptions {
        &self.options
    }
}

/// The outcome of adding one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The job's id (generated, or the explicit one).
    pub id: String,
    /// False when nothing was added: a job with this explicit id existed
    /// already, or the add was deduplicated by its idempotency key.
    pub created: bool,
    /// True when the job's idempotency key was used less than its window
    /// ago: nothing was added and `id` is the first job's id.
    pub deduplicated: bool,
    /// True when the job asked to be skipped if its concurrency key was busy
    /// ([`crate::JobOptions::skip_if_key_busy`]) and it was: nothing was
    /// added; `id` is the key's singleton holder, or empty.
    pub skipped: bool,
}
