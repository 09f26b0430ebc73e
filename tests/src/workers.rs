//! Running a worker in the background of a test, and waiting on jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::{JobInfo, JobState};
use quern_producer::Queue;
use quern_worker::{JobContext, JobError, ShutdownHandle, Worker, WorkerBuilder};
use tokio::task::JoinHandle;

/// A worker running on its own task until [`RunningWorker::stop`].
#[derive(Debug)]
pub struct RunningWorker {
    id: String,
    shutdown: ShutdownHandle,
    task: JoinHandle<quern_worker::Result<()>>,
}

impl RunningWorker {
    /// Build the worker and start it.
    pub async fn start(builder: WorkerBuilder) -> Self {
        let worker: Worker = builder.build().await.expect("build the worker");
        let id = worker.id().to_owned();
        let shutdown = worker.shutdown_handle();
        let task = tokio::spawn(worker.run_until(std::future::pending()));
        Self { id, shutdown, task }
    }

    /// The worker's id, as recorded with every attempt.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the worker's loop has ended (it should not, before `stop`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shut down gracefully and wait (at most 10 s) for `run` to return `Ok`.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("worker {} ended with an error: {e}", self.id),
            Ok(Err(e)) => panic!("worker {} task failed: {e}", self.id),
            Err(_) => panic!("worker {} did not stop within 10 s", self.id),
        }
    }
}

/// Wait until job `id` is in `state` (at most `limit`) and return it.
pub async fn wait_for_state(queue: &Queue, id: &str, state: JobState, limit: Duration) -> JobInfo {
    let what = format!("job {id} to be {state}");
    let mut last = None;
    let found = tokio::time::timeout(limit, async {
        loop {
            let job = queue.job(id).await.expect("read the job");
            if let Some(job) = job {
                if job.state == state {
                    return job;
                }
                last = Some(job);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match found {
        Ok(job) => job,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}; last seen: {last:#?}"),
    }
}

/// `builder` with a handler for job `name` that succeeds at once, whatever
/// the payload, counting its runs in `done`.
pub fn counting(builder: WorkerBuilder, name: &str, done: Arc<AtomicUsize>) -> WorkerBuilder {
    builder.handler(name, move |_ctx: JobContext, _payload: serde_json::Value| {
        let done = done.clone();
        async move {
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    })
}
