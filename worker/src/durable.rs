//! The durable step and sleep calls of [`JobContext`]: replay what the job
//! stored, run and store what it did not (see `steps.rs` for the book they
//! keep, and the README's "Workflows" for the guarantees).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quern_common::moves::{Move, Sleep, Step, StepEnd, StepReply, WakeAt};
use quern_common::steps::{SLEEP_STEP, StepOutcome, StepRecord, validate_step_name};
use quern_common::{Backoff, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::warn;

use crate::handler::{JobContext, JobError};
use crate::steps::{Divergence, Found, StepRetry};

impl JobContext {
    /// Run `step` once for this job: a durable step.
    ///
    /// The first time the job reaches this call, `step` runs and its result
    /// is stored in the job (a script that checks this attempt's lease, so a
    /// worker that lost its lease stores nothing) before `step` returns it.
    /// Every later attempt of the job (a retry, a recovery after a crash, the
    /// run after a [`sleep`](Self::sleep)) gets the stored result back
    /// without running `step`. Steps are told apart by name and occurrence:
    /// the third call of `step("settle-batch", ..)` in a run is
    /// `settle-batch#3`, so loops work, as long as the handler calls its
    /// steps in the same order on every run (take decisions from step
    /// results, not from the clock or randomness outside steps).
    ///
    /// A retryable error fails the attempt (retried after the job's
    /// backoff; the retry resumes at this step); a permanent one is stored
    /// as the step's failure and dead-letters the job, keeping the steps
    /// that finished. Use `?` on the result. A step runs at least once, and
    /// more than once only when its attempt lost its lease before the
    /// result was stored (a crash, a partition, a pause longer than the
    /// lease, or a shutdown whose grace period ended inside the step).
    ///
    /// The name: 1 to 100 bytes, without `#`, not starting with `~`.
    pub async fn step<T, F, Fut>(&self, name: &str, step: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        self.step_with(name, StepRetry::new(1, Backoff::default()), step).await
    }

    /// [`step`](Self::step), retrying a retryable error of the step inside
    /// this attempt as `retry` says before the attempt fails.
    pub async fn step_with<T, F, Fut>(&self, name: &str, retry: StepRetry, mut step: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        validate_step_name(name).map_err(JobError::permanent)?;
        self.load_steps().await?;
        let (key, found) = self.step_book().next_call(name);
        match found {
            Found::Finished(record) => return decode(&key, &record),
            Found::Run { diverged } => self.on_divergence(&key, diverged)?,
        }
        let started = Instant::now();
        let mut run = 1;
        let outcome = loop {
            match step().await {
                Err(e) if !e.is_permanent() && !e.is_sleeping() && run < retry.attempts => {
                    warn!(job = %self.id(), step = %key, run, error = %e, "step failed; running it again");
                    tokio::time::sleep(retry.delay_after(run)).await;
                    run += 1;
                }
                other => break other,
            }
        };
        let took = millis(started.elapsed());
        match outcome {
            Ok(value) => {
                let json = serde_json::to_string(&value).map_err(|e| {
                    JobError::permanent(format!("the result of step {key} does not serialize: {e}"))
                })?;
                match self.store_step(&key, StepEnd::Ok, took, &json).await? {
                    Some(earlier) => decode(&key, &earlier),
                    None => Ok(value),
                }
            }
            Err(e) => {
                if e.is_permanent()
                    && let Err(store) = self.store_step(&key, StepEnd::Failed, took, e.message()).await
                {
                    warn!(job = %self.id(), step = %key, error = %store, "could not store the step's failure");
                }
                Err(e)
            }
        }
    }

    /// Sleep for `duration` (by Redis' clock), holding no worker: a durable
    /// sleep. The wake time is stored as a step, the job gives up its lease
    /// and its slot and moves to `delayed` without spending an attempt, and
    /// this returns an error that ends the attempt ([`JobError::is_sleeping`]):
    /// return it with `?`. At the wake time the job runs again from the
    /// start of its handler; its steps return their stored results and this
    /// same call returns `Ok(())`, so the handler continues after the sleep.
    /// A sleeping job survives worker and Redis restarts (with persistence on).
    /// Sleeps count among the job's steps (as `~sleep#<n>`).
    pub async fn sleep(&self, duration: Duration) -> Result<(), JobError> {
        self.sleep_to(WakeAt::In(millis(duration))).await
    }

    /// [`sleep`](Self::sleep) until `instant` (compared with Redis' clock).
    pub async fn sleep_until(&self, instant: SystemTime) -> Result<(), JobError> {
        let at = instant.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0);
        self.sleep_to(WakeAt::At(at)).await
    }

    async fn sleep_to(&self, wake: WakeAt) -> Result<(), JobError> {
        self.load_steps().await?;
        let (key, found) = self.step_book().next_call(SLEEP_STEP);
        match found {
            Found::Finished(_) => return Ok(()),
            Found::Run { diverged } => self.on_divergence(&key, diverged)?,
        }
        let limits = self.step_rules().limits;
        let sleep = Sleep { id: self.id(), token: self.token(), key: &key, wake, limits };
        let reply = self.with_retries(&key, &sleep).await?;
        match reply {
            StepReply::Sleeping(at) => {
                self.mark_slept();
                Err(JobError::sleeping(at))
            }
            StepReply::Awake(at) => {
                let record = self.own_record(&key, 0, StepOutcome::Sleep, at.to_string());
                self.step_book().stored(record);
                Ok(())
            }
            StepReply::AlreadyStored(_) => Ok(()),
            other => Err(self.refused(&key, other)),
        }
    }

    /// Read the job's stored steps, once per attempt (not before its first
    /// step or sleep: a job without steps never pays for this).
    async fn load_steps(&self) -> Result<(), JobError> {
        if self.step_book().is_loaded() {
            return Ok(());
        }
        let key = self.client().job_key(self.id());
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut self.client().conn()).await.map_err(|e| {
                JobError::retryable(format!("cannot read the stored steps of job {}: {e}", self.id()))
            })?;
        let mut book = self.step_book();
        if !book.is_loaded() {
            for problem in book.load(&fields) {
                warn!(job = %self.id(), %problem, "unreadable step record; the step runs again");
            }
        }
        Ok(())
    }

    fn on_divergence(&self, key: &str, diverged: Option<Vec<String>>) -> Result<(), JobError> {
        let Some(not_reached) = diverged else { return Ok(()) };
        let message = format!(
            "steps changed: job {} calls step {key}, which it has not stored, before reaching its stored steps {} (was the handler changed while the job waited?)",
            self.id(),
            not_reached.join(", ")
        );
        match self.step_rules().divergence {
            Divergence::WarnAndRunOn => {
                warn!(job = %self.id(), "{message}; running on");
                Ok(())
            }
            Divergence::DeadLetter => Err(JobError::permanent(message)),
        }
    }

    /// Store a step's end; `Some(record)` if a finished record was there
    /// already (use it instead).
    async fn store_step(
        &self,
        key: &str,
        end: StepEnd,
        took_ms: u64,
        value: &str,
    ) -> Result<Option<StepRecord>, JobError> {
        let limits = self.step_rules().limits;
        let step = Step { id: self.id(), token: self.token(), key, end, took_ms, value, limits };
        let reply = self.with_retries(key, &step).await?;
        match reply {
            StepReply::Stored(_) => {
                let outcome = if end == StepEnd::Ok { StepOutcome::Ok } else { StepOutcome::Failed };
                let record = self.own_record(key, took_ms, outcome, value.to_owned());
                self.step_book().stored(record);
                Ok(None)
            }
            StepReply::AlreadyStored(raw) => {
                let record = StepRecord::parse(key, &raw).map_err(JobError::permanent)?;
                self.step_book().stored(record.clone());
                Ok(Some(record))
            }
            other => Err(self.refused(key, other)),
        }
    }

    /// Run a step or sleep write, again while Redis cannot be reached and
    /// the lease may still hold: a write whose reply was lost is found
    /// stored the second time, so retrying never stores twice.
    async fn with_retries<M: Move<Reply = StepReply>>(
        &self,
        key: &str,
        write: &M,
    ) -> Result<StepReply, JobError> {
        let give_up = Instant::now() + self.step_rules().lease;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.client().run(write).await {
                Ok(reply) => return Ok(reply),
                Err(e)
                    if e.kind() == ErrorKind::Unavailable
                        && Instant::now() + pause < give_up
                        && !self.is_lease_lost() =>
                {
                    warn!(job = %self.id(), step = %key, error = %e, "cannot store the step yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(JobError::retryable(format!(
                        "cannot store step {key} of job {}: {e}",
                        self.id()
                    )));
                }
            }
        }
    }

    fn refused(&self, key: &str, reply: StepReply) -> JobError {
        match reply {
            StepReply::LeaseLost => JobError::retryable(format!(
                "lease lost: step {key} of job {} was not stored (the job was taken over, and runs elsewhere)",
                self.id()
            )),
            StepReply::NotFound => {
                JobError::retryable(format!("job {} is gone: step {key} was not stored", self.id()))
            }
            StepReply::Limit(why) => {
                JobError::permanent(format!("step limit: {why} (WorkerBuilder::step_limits sets the limits)"))
            }
            other => JobError::retryable(format!("unexpected reply storing step {key}: {other:?}")),
        }
    }

    fn own_record(&self, key: &str, took_ms: u64, outcome: StepOutcome, value: String) -> StepRecord {
        let (name, occurrence) = key.rsplit_once('#').unwrap_or((key, "1"));
        StepRecord {
            name: name.to_owned(),
            occurrence: occurrence.parse().unwrap_or(1),
            seq: 0,
            attempt: self.attempt(),
            started_at_ms: 0,
            took_ms,
            outcome,
            value,
        }
    }
}

/// A stored result, as the step's type.
fn decode<T: DeserializeOwned>(key: &str, record: &StepRecord) -> Result<T, JobError> {
    serde_json::from_str(&record.value).map_err(|e| {
        JobError::permanent(format!(
            "the stored result of step {key} does not decode as {} ({e}): did the step's type change?",
            std::any::type_name::<T>()
        ))
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
