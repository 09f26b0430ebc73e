//! Running schedulers inside a test and reading what they enqueued.

use std::collections::HashMap;
use std::time::Duration;

use quern_common::{QueueKeys, RedisConfig};
use quern_scheduler::{Scheduler, SchedulerBuilder, ShutdownHandle, TickEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A scheduler running on its own task, reporting every tick it handles.
pub struct RunningScheduler {
    shutdown: ShutdownHandle,
    task: JoinHandle<quern_scheduler::Result<()>>,
    events: mpsc::UnboundedReceiver<TickEvent>,
    seen: Vec<TickEvent>,
}

impl RunningScheduler {
    /// Build the scheduler from `builder` and start it.
    pub async fn start(builder: SchedulerBuilder) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let scheduler: Scheduler = builder.events(tx).build().await.expect("build the scheduler");
        let shutdown = scheduler.shutdown_handle();
        let task = tokio::spawn(scheduler.run_until(std::future::pending::<()>()));
        Self { shutdown, task, events, seen: Vec::new() }
    }

    /// Every tick event received so far.
    pub fn events(&mut self) -> &[TickEvent] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Stop it (gracefully, within 10 s) and return every event it sent.
    pub async fn stop(mut self) -> Vec<TickEvent> {
        self.shutdown.shutdown();
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("scheduler ended with an error: {e}"),
            Ok(Err(e)) => panic!("scheduler task failed: {e}"),
            Err(_) => panic!("scheduler did not stop within 10 s"),
        }
        self.events();
        self.seen
    }

    /// Kill it without a graceful stop (the lease is left to expire).
    pub fn abort(mut self) -> Vec<TickEvent> {
        self.task.abort();
        self.events();
        self.seen
    }
}

/// Every job hash id in `queue` (whatever its state), read from the keys.
pub async fn job_ids(config: &RedisConfig, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new(&config.prefix, queue).expect("queue keys");
    let mut conn = crate::raw_connection(config).await;
    let pattern = format!("{}*", keys.job_prefix());
    let found: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.expect("KEYS");
    let mut ids: Vec<String> = found.into_iter().map(|k| k[keys.job_prefix().len()..].to_owned()).collect();
    ids.sort();
    ids
}

/// The `added` events of `queue`'s stream: one per job actually created.
pub async fn added_events(config: &RedisConfig, queue: &str) -> Vec<String> {
    let keys = QueueKeys::new(&config.prefix, queue).expect("queue keys");
    let mut conn = crate::raw_connection(config).await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(keys.events())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    entries
        .into_iter()
        .filter(|(_, f)| f.get("ev").is_some_and(|e| e == "added"))
        .filter_map(|(_, f)| f.get("id").cloned())
        .collect()
}
