//! Two workflows written as one job each, with durable steps and sleeps
//! (see the README's "Workflows"): a nightly settlement and an onboarding
//! flow. A crash or a failed step resumes where the job stopped: steps that
//! finished return their stored results instead of running again.
//!
//! The outside world (the ledger database, the bank, the mailer) is a
//! [`Backend`] here, so the examples run anywhere and tests can count what
//! each step did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quern_worker::{JobContext, JobError, StepRetry, WorkerBuilder};
use serde::{Deserialize, Serialize};

/// The queue of both workflows.
pub const WORKFLOWS_QUEUE: &str = "workflows";

/// Transactions settled per `settle-batch` step.
pub const SETTLEMENT_BATCH: usize = 100;

/// Stands in for the systems the steps talk to: records every side effect,
/// in order, as one line (`lock 2026-03-01`, `mail welcome ada@...`).
#[derive(Debug, Clone, Default)]
pub struct Backend {
    effects: Arc<Mutex<Vec<String>>>,
    /// Users who use the product (the others get nudged, then flagged).
    active_users: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    /// Do `line` (record it); returns its receipt number, which the step
    /// stores as its result (a mail id, a settlement reference).
    fn effect(&self, line: String) -> usize {
        tracing::info!("{line}");
        let mut effects = self.effects.lock().unwrap_or_else(|e| e.into_inner());
        effects.push(line);
        effects.len()
    }

    /// Every side effect so far, in order.
    pub fn effects(&self) -> Vec<String> {
        self.effects.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Mark `user` as active from now on.
    pub fn activate(&self, user: &str) {
        self.active_users.lock().unwrap_or_else(|e| e.into_inner()).push(user.to_owned());
    }

    fn is_active(&self, user: &str) -> bool {
        self.active_users.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|u| u == user)
    }
}

/// The payload of a `settlement` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settlement {
    /// The business day to settle (`2026-03-01`).
    pub day: String,
    /// How many transactions that day has (a real job would query them).
    pub transactions: u32,
}

/// What a settlement produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    /// The day settled.
    pub day: String,
    /// Transactions settled.
    pub settled: u32,
    /// Batches it took.
    pub batches: u32,
}

/// The nightly settlement: lock the day, gather its transactions, settle
/// them in batches of 100 (one durable step per batch: a crash in batch 7
/// resumes at batch 7), write the report, mark the day done.
pub async fn settle(
    ctx: JobContext,
    backend: Backend,
    run: Settlement,
) -> Result<SettlementReport, JobError> {
    let day = run.day.clone();
    ctx.step("lock", || async { Ok(backend.effect(format!("lock {day}"))) }).await?;
    let ids: Vec<u32> = ctx
        .step("gather", || async {
            let _receipt = backend.effect(format!("gather {day}: {} transactions", run.transactions));
            Ok((1..=run.transactions).collect())
        })
        .await?;
    let mut settled = 0;
    let mut batches = 0;
    // The bank is flaky: each batch gets three tries within the attempt.
    let retry = StepRetry::new(3, quern_worker::Backoff::fixed(Duration::from_millis(200)));
    for batch in ids.chunks(SETTLEMENT_BATCH) {
        let (first, last) = (batch[0], batch[batch.len() - 1]);
        settled += ctx
            .step_with("settle-batch", retry.clone(), || async {
                let _receipt = backend.effect(format!("settle {day} transactions {first}..={last}"));
                Ok(batch.len() as u32)
            })
            .await?;
        batches += 1;
    }
    ctx.step("report", || async { Ok(backend.effect(format!("report {day}: {settled} settled"))) }).await?;
    ctx.step("mark-done", || async { Ok(backend.effect(format!("done {day}"))) }).await?;
    Ok(SettlementReport { day, settled, batches })
}

/// The payload of an `onboarding` job. The waits are in seconds so that a
/// demo can use short ones (production: a day and a week).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Onboarding {
    /// The new user.
    pub user: String,
    /// Their address.
    pub email: String,
    /// How long after the welcome mail to check on them (production: 86,400).
    pub nudge_after_secs: u64,
    /// How long after that to flag an account still inactive (production: 6 days).
    pub flag_after_secs: u64,
}

/// How an onboarding ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnboardingOutcome {
    /// The user became active.
    Active,
    /// Still inactive after the nudge: the account was flagged.
    Flagged,
}

/// The onboarding flow: send the welcome mail, wait (a durable sleep: no
/// worker is held, and it survives restarts), nudge the user if inactive,
/// wait again, and flag the account if still inactive.
pub async fn onboard(
    ctx: JobContext,
    backend: Backend,
    o: Onboarding,
) -> Result<OnboardingOutcome, JobError> {
    ctx.step("welcome-mail", || async { Ok(backend.effect(format!("mail welcome {}", o.email))) }).await?;
    ctx.sleep(Duration::from_secs(o.nudge_after_secs)).await?;
    // Decisions come from steps, so every later run of the handler takes
    // the same path as the first one did.
    let active: bool = ctx.step("check-activity", || async { Ok(backend.is_active(&o.user)) }).await?;
    if active {
        return Ok(OnboardingOutcome::Active);
    }
    ctx.step("nudge-mail", || async { Ok(backend.effect(format!("mail nudge {}", o.email))) }).await?;
    ctx.sleep(Duration::from_secs(o.flag_after_secs)).await?;
    let active: bool = ctx.step("check-activity", || async { Ok(backend.is_active(&o.user)) }).await?;
    if active {
        return Ok(OnboardingOutcome::Active);
    }
    ctx.step("flag-account", || async { Ok(backend.effect(format!("flag {}", o.user))) }).await?;
    Ok(OnboardingOutcome::Flagged)
}

/// `builder` with the handlers of both workflows (`settlement`, `onboarding`).
pub fn register(builder: WorkerBuilder, backend: Backend) -> WorkerBuilder {
    let for_onboarding = backend.clone();
    builder
        .handler("settlement", move |ctx: JobContext, run: Settlement| settle(ctx, backend.clone(), run))
        .handler("onboarding", move |ctx: JobContext, o: Onboarding| onboard(ctx, for_onboarding.clone(), o))
}
