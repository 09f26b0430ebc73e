//! Flows: a parent job waits in `waiting-children` until every child has
//! ended, then runs with their results; failure policies per edge; children
//! in other queues report through an outbox a relay applies once.

use std::time::Duration;

use quern_common::moves::{FlowPeek, OutboxRecord};
use quern_common::{JobOptions, JobState, NewJob, OnChildFailure, QueueKeys, QueueScripts, RedisConfig};
use quern_producer::{ChildStatus, FlowJob, Queue};
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{config, raw_connection};
use quern_worker::{JobContext, JobError, Retention, Worker};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    sum: u64,
    failed: Vec<String>,
    ignored: Vec<String>,
}

fn job(name: &str, id: &str, payload: u32) -> FlowJob {
    FlowJob::new(NewJob::new(name, &payload).unwrap().options(JobOptions::new().job_id(id)))
}

async fn worker(cfg: &RedisConfig, queue: &str) -> RunningWorker {
    worker_keeping(cfg, queue, Retention::keep_all()).await
}

async fn worker_keeping(cfg: &RedisConfig, queue: &str, retention: Retention) -> RunningWorker {
    let builder = Worker::builder(cfg, queue)
        .concurrency(4)
        .idle_block(Duration::from_millis(500))
        .reap_interval(Duration::from_millis(100))
        .retention(retention)
        .handler("double", |_ctx: JobContext, n: u32| async move { Ok::<_, JobError>(n * 2) })
        .handler("reject", |_ctx: JobContext, _n: u32| async move {
            Err::<u32, JobError>(JobError::permanent("no thanks"))
        })
        .handler("sum", |ctx: JobContext, _n: u32| async move {
            let children = ctx.children::<u32>().await.map_err(JobError::permanent)?;
            if children.iter().any(|c| c.status != ChildStatus::Completed) {
                return Err(JobError::permanent("ran with a child not completed"));
            }
            Ok::<_, JobError>(children.iter().filter_map(|c| c.result).sum::<u32>())
        })
        .handler("report", |ctx: JobContext, _n: u32| async move {
            let children = ctx.children::<u32>().await.map_err(JobError::permanent)?;
            let mut report = Report { sum: 0, failed: Vec::new(), ignored: Vec::new() };
            for c in children {
                match c.status {
                    ChildStatus::Completed => report.sum += u64::from(c.result.unwrap_or(0)),
                    ChildStatus::Failed => report.failed.push(c.id),
                    ChildStatus::Ignored | ChildStatus::Removed => report.ignored.push(c.id),
                    ChildStatus::Pending => return Err(JobError::permanent("ran with a child pending")),
                }
            }
            Ok::<_, JobError>(report)
        });
    RunningWorker::start(builder).await
}

fn report(result: Option<String>) -> Report {
    serde_json::from_str(&result.expect("a result")).unwrap()
}

#[tokio::test]
async fn a_parent_waits_for_its_children_then_runs_with_their_results() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let nested = job("sum", "nested", 0).child(OnChildFailure::FailParent, job("double", "c", 10));
    let flow = job("sum", "total", 0)
        .children(OnChildFailure::FailParent, [job("double", "a", 1), job("double", "b", 2), nested]);
    let added = q.add_flow(flow).await.unwrap();
    assert_eq!(added.len(), 5);
    assert!(added.iter().all(|a| a.created));
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.waiting_children, counts.waiting),
        (2, 3),
        "two parents wait for children, three leaves wait"
    );
    let mut parents = q.job_ids(JobState::WaitingChildren, 0, 10).await.unwrap();
    parents.sort();
    assert_eq!(parents, ["nested", "total"]);
    let parent = q.job("total").await.unwrap().unwrap();
    assert_eq!(parent.state, JobState::WaitingChildren);
    let kids: Vec<_> = parent.children.iter().map(|c| (c.id.as_str(), c.status)).collect();
    assert_eq!(
        kids,
        [("a", ChildStatus::Pending), ("b", ChildStatus::Pending), ("nested", ChildStatus::Pending)]
    );
    let child = q.job("c").await.unwrap().unwrap();
    assert_eq!(
        child.parent.as_ref().map(|p| (p.id.as_str(), p.on_failure)),
        Some(("nested", OnChildFailure::FailParent))
    );

    let w = worker(&cfg, "q").await;
    let done = wait_for_state(&q, "total", JobState::Completed, WAIT).await;
    assert_eq!(done.result.as_deref(), Some("26"), "2 + 4 + (10 * 2)");
    let kids: Vec<_> = done.children.iter().map(|c| (c.id.as_str(), c.status, c.result.as_deref())).collect();
    assert_eq!(
        kids,
        [
            ("a", ChildStatus::Completed, Some("2")),
            ("b", ChildStatus::Completed, Some("4")),
            ("nested", ChildStatus::Completed, Some("20"))
        ]
    );
    assert_eq!(q.counts().await.unwrap().waiting_children, 0);
    // The transitions are events on the parent's queue.
    let events = Mover::new(&cfg, "q").await.event_entries().await;
    let of = |kind: &str, id: &str| events.iter().filter(|e| e["ev"] == kind && e["id"] == id).count();
    // child_finished lists parents, children and outcomes (one event per batch).
    let mut finished: Vec<(String, String, String)> = Vec::new();
    for e in events.iter().filter(|e| e["ev"] == "child_finished") {
        let (ids, refs, outcomes) = (e["ids"].split(','), e["children"].split(','), e["outcomes"].split(','));
        for ((id, r), o) in ids.zip(refs).zip(outcomes) {
            finished.push((id.to_owned(), r.to_owned(), o.to_owned()));
        }
    }
    finished.sort();
    let of_total: Vec<_> =
        finished.iter().filter(|f| f.0 == "total").map(|f| (f.1.as_str(), f.2.as_str())).collect();
    assert_eq!(of_total, [("q/a", "ok"), ("q/b", "ok"), ("q/nested", "ok")]);
    assert_eq!(finished.len(), 4, "a, b and nested for total, c for nested: {finished:?}");
    assert_eq!(of("children_done", "total"), 1);
    assert_eq!(of("children_done", "nested"), 1);
    w.stop().await;
}

#[tokio::test]
async fn a_flow_without_children_runs_at_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let added = q.add_flow(job("sum", "alone", 0)).await.unwrap();
    assert_eq!(added[0].state, "waiting");
    let w = worker(&cfg, "q").await;
    let done = wait_for_state(&q, "alone", JobState::Completed, WAIT).await;
    assert_eq!(done.result.as_deref(), Some("0"));
    w.stop().await;
}

#[tokio::test]
async fn a_failed_child_dead_letters_its_parent_at_once_by_default() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    // The grandparent fails too: its child (the parent) failed.
    let parent = job("sum", "parent", 0).child(OnChildFailure::default(), job("reject", "bad", 1));
    let flow = job("sum", "grandparent", 0).child(OnChildFailure::FailParent, parent);
    q.add_flow(flow).await.unwrap();
    let w = worker(&cfg, "q").await;
    let failed = wait_for_state(&q, "grandparent", JobState::Failed, WAIT).await;
    let error = failed.last_error.unwrap();
    assert!(error.contains("q/parent") && error.contains("q/bad") && error.contains("no thanks"), "{error}");
    assert_eq!(q.job("parent").await.unwrap().unwrap().state, JobState::Failed);
    assert_eq!(q.counts().await.unwrap().waiting_children, 0);
    w.stop().await;
}

#[tokio::test]
async fn continue_ignore_and_remove_let_the_parent_run_and_see_which_children_failed() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let flow = job("report", "report", 0)
        .child(OnChildFailure::Continue, job("reject", "failed", 1))
        .child(OnChildFailure::Ignore, job("reject", "ignored", 1))
        .child(OnChildFailure::Remove, job("reject", "removed", 1))
        .child(OnChildFailure::Continue, job("double", "fine", 5));
    q.add_flow(flow).await.unwrap();
    let w = worker(&cfg, "q").await;
    let done = wait_for_state(&q, "report", JobState::Completed, WAIT).await;
    assert_eq!(
        report(done.result),
        Report { sum: 10, failed: vec!["failed".into()], ignored: vec!["ignored".into(), "removed".into()] }
    );
    let statuses: Vec<_> = done.children.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [ChildStatus::Failed, ChildStatus::Ignored, ChildStatus::Removed, ChildStatus::Completed]
    );
    w.stop().await;
}

#[tokio::test]
async fn a_cancelled_or_removed_child_counts_as_failed() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.add_flow(job("report", "p1", 0).child(OnChildFailure::FailParent, job("double", "cancelled", 1)))
        .await
        .unwrap();
    q.cancel("cancelled", "not wanted").await.unwrap();
    let p1 = q.job("p1").await.unwrap().unwrap();
    assert_eq!(p1.state, JobState::Failed, "dead-lettered at once");
    assert!(p1.last_error.unwrap().contains("cancelled: not wanted"));

    q.add_flow(job("report", "p2", 0).child(OnChildFailure::Continue, job("double", "removed", 1)))
        .await
        .unwrap();
    q.remove("removed").await.unwrap();
    let p2 = q.job("p2").await.unwrap().unwrap();
    assert_eq!(p2.state, JobState::Waiting, "its only child ended");
    assert_eq!(p2.children[0].status, ChildStatus::Failed);
    assert_eq!(p2.children[0].error.as_deref(), Some("removed"));
}

#[tokio::test]
async fn adding_the_same_flow_again_adds_nothing_and_does_not_hang() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let flow = || {
        job("sum", "again", 0)
            .children(OnChildFailure::FailParent, [job("double", "x", 1), job("double", "y", 2)])
    };
    q.add_flow(flow()).await.unwrap();
    // Again while it waits: nothing new.
    let again = q.add_flow(flow()).await.unwrap();
    assert!(again.iter().all(|a| !a.created), "{again:?}");
    assert_eq!(q.counts().await.unwrap().waiting, 2);
    let w = worker(&cfg, "q").await;
    wait_for_state(&q, "again", JobState::Completed, WAIT).await;
    // Again once it finished: the parent exists and waits for nothing, so
    // nothing is added, not even its children.
    let again = q.add_flow(flow()).await.unwrap();
    assert_eq!(again.len(), 1, "the children are not added again: {again:?}");
    assert!(!again[0].created);
    assert_eq!(again[0].state, "completed");
    w.stop().await;
}

/// Children in another queue (another hash slot) report through that
/// queue's outbox. A relay that applied a record and "crashed" before
/// deleting it applies it again on its next pass, without effect.
#[tokio::test]
async fn a_child_in_another_queue_is_counted_once_even_if_the_relay_crashed_midway() {
    let cfg = config();
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    let flow = job("sum", "p", 0)
        .child(OnChildFailure::FailParent, job("double", "k1", 1).in_queue("kids"))
        .child(OnChildFailure::FailParent, job("double", "k2", 2).in_queue("kids"));
    parents.add_flow(flow).await.unwrap();
    let kids = Mover::new(&cfg, "kids").await;
    let leased = kids.fetch(1, Duration::from_secs(30), "hand").await.jobs;
    assert_eq!(leased[0].id, "k1");
    kids.complete(-1, &[("k1", &leased[0].token, "2")]).await;
    // The record waits in the kids' outbox; the parent knows nothing yet.
    let records = kids.run(&FlowPeek(10)).await;
    assert_eq!(records.len(), 1);
    let parent_keys = QueueKeys::new(&cfg.prefix, "parents").unwrap();
    let parent_scripts = QueueScripts::new(parent_keys.clone(), 1000);
    let mut conn = raw_connection(&cfg).await;
    assert_eq!(pending(&cfg, "p").await, "2");
    // Apply it by hand, then "crash" before dropping it from the outbox.
    let r = OutboxRecord::parse(&records[0]).unwrap();
    let apply = r.apply();
    assert!(parent_scripts.run(&mut conn, &apply).await.unwrap());
    assert_eq!(pending(&cfg, "p").await, "1");
    assert!(!parent_scripts.run(&mut conn, &apply).await.unwrap(), "applying twice does nothing");
    assert_eq!(kids.run(&FlowPeek(10)).await.len(), 1, "the record is still there");

    // A worker of the kids' queue relays on its reaper's passes: the record
    // is applied again (no effect) and dropped; k2 runs and reports. The
    // kids are deleted once completed: their results live with the parent.
    let kid_worker = worker_keeping(&cfg, "kids", Retention::delete_at_once()).await;
    let parent_worker = worker(&cfg, "parents").await;
    let done = wait_for_state(&parents, "p", JobState::Completed, WAIT).await;
    assert_eq!(done.result.as_deref(), Some("6"), "2 + 4, each child counted once");
    assert_eq!(pending(&cfg, "p").await, "0");
    assert!(kids.run(&FlowPeek(10)).await.is_empty(), "the outbox is empty");
    assert!(kids.hash("k2").await.is_empty(), "k2 was deleted on completion");
    let results: Vec<_> =
        done.children.iter().map(|c| (c.queue.as_str(), c.id.as_str(), c.result.as_deref())).collect();
    assert_eq!(results, [("kids", "k1", Some("2")), ("kids", "k2", Some("4"))]);
    kid_worker.stop().await;
    parent_worker.stop().await;
}

#[tokio::test]
async fn a_failed_child_in_another_queue_dead_letters_its_parent() {
    let cfg = config();
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    let flow = job("sum", "p", 0).child(OnChildFailure::FailParent, job("reject", "k", 1).in_queue("kids"));
    parents.add_flow(flow).await.unwrap();
    let kid_worker = worker(&cfg, "kids").await;
    let failed = wait_for_state(&parents, "p", JobState::Failed, WAIT).await;
    assert!(failed.last_error.unwrap().contains("kids/k"));
    kid_worker.stop().await;
}

/// The parent's count of children not yet ended (field `pc`).
async fn pending(cfg: &RedisConfig, id: &str) -> String {
    let key = QueueKeys::new(&cfg.prefix, "parents").unwrap().job(id);
    raw_connection(cfg).await.hget(key, "pc").await.unwrap()
}

#[tokio::test]
async fn a_chain_runs_its_links_in_order_and_a_failure_stops_the_rest() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    // Each "sum" link adds up the result of the link before it.
    let chain =
        FlowJob::chain([job("double", "first", 3), job("sum", "second", 0), job("sum", "third", 0)]).unwrap();
    q.add_flow(chain).await.unwrap();
    assert_eq!(q.job("third").await.unwrap().unwrap().state, JobState::WaitingChildren);
    assert_eq!(q.job("second").await.unwrap().unwrap().state, JobState::WaitingChildren);
    let w = worker(&cfg, "q").await;
    let third = wait_for_state(&q, "third", JobState::Completed, WAIT).await;
    assert_eq!(third.result.as_deref(), Some("6"));
    let second = q.job("second").await.unwrap().unwrap();
    assert!(second.finished_at_ms.unwrap() <= third.started_at_ms.unwrap(), "in order");

    let broken = FlowJob::chain([job("reject", "b1", 1), job("sum", "b2", 0), job("sum", "b3", 0)]).unwrap();
    q.add_flow(broken).await.unwrap();
    let b3 = wait_for_state(&q, "b3", JobState::Failed, WAIT).await;
    assert!(b3.last_error.as_deref().unwrap().contains("q/b2"), "{:?}", b3.last_error);
    let b2 = q.job("b2").await.unwrap().unwrap();
    assert_eq!((b2.state, b2.attempts_made), (JobState::Failed, 0), "never ran");
    assert!(FlowJob::chain(Vec::new()).is_err());
    w.stop().await;
}

/// A handler fans out to N children and a batch callback; its first attempt
/// fails after fanning out and the retry fans out again: nothing twice.
#[tokio::test]
async fn a_handler_fans_out_once_even_when_retried_and_the_callback_counts_the_outcomes() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let builder = Worker::builder(&cfg, "q")
        .concurrency(4)
        .idle_block(Duration::from_millis(500))
        .handler("double", |_ctx: JobContext, n: u32| async move { Ok::<_, JobError>(n * 2) })
        .handler("reject", |_ctx: JobContext, _n: u32| async move {
            Err::<u32, JobError>(JobError::permanent("no thanks"))
        })
        .handler("fan", |ctx: JobContext, n: u32| async move {
            let children = (0..n).map(|i| NewJob::new(if i == 0 { "reject" } else { "double" }, &i).unwrap());
            let callback = NewJob::new("callback", &()).unwrap();
            let batch = ctx
                .fan_out(callback, children, OnChildFailure::Continue)
                .await
                .map_err(JobError::permanent)?;
            if ctx.attempt() == 1 {
                return Err(JobError::retryable("fail after fanning out"));
            }
            Ok::<_, JobError>(batch)
        })
        .handler("callback", |ctx: JobContext, _: ()| async move {
            let children = ctx.children::<u32>().await.map_err(JobError::permanent)?;
            let counts = quern_worker::ChildCounts::of(&children);
            Ok::<_, JobError>((counts.succeeded, counts.failed, children.len()))
        });
    let w = RunningWorker::start(builder).await;
    let opts = JobOptions::new()
        .job_id("tick-1")
        .attempts(2)
        .backoff(quern_common::Backoff::fixed(Duration::from_millis(10)));
    q.add_with("fan", &20u32, opts).await.unwrap();
    let fan = wait_for_state(&q, "tick-1", JobState::Completed, WAIT).await;
    assert_eq!(fan.result.as_deref(), Some("\"tick-1/batch\""));
    let batch = wait_for_state(&q, "tick-1/batch", JobState::Completed, WAIT).await;
    assert_eq!(batch.result.as_deref(), Some("[19,1,20]"), "19 succeeded, 1 failed, 20 children in all");
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.completed, 1 + 1 + 19, "the fan, the callback and 19 children: nothing ran twice");
    assert_eq!(counts.failed, 1);
    w.stop().await;
}

/// Ten thousand children: added in calls of at most 1,000 jobs, each child's
/// end applied in the script that ends it, the parent run once, reading
/// every result.
#[tokio::test]
async fn a_parent_of_ten_thousand_children_runs_once_with_every_result() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let kids = (0..10_000).map(|i| job("double", &format!("kid-{i}"), 1));
    let added = q.add_flow(job("sum", "big", 0).children(OnChildFailure::FailParent, kids)).await.unwrap();
    assert_eq!(added.len(), 10_001);
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting_children, counts.waiting), (1, 10_000));
    let w = worker(&cfg, "q").await;
    let done = wait_for_state(&q, "big", JobState::Completed, Duration::from_secs(300)).await;
    assert_eq!(done.result.as_deref(), Some("20000"));
    assert_eq!(done.children.len(), 10_000);
    w.stop().await;
}

/// A real worker process of the child's queue completes the child and is
/// killed (SIGKILL) before its reaper relays the outcome: the record waits in
/// the child's queue, and the next worker there relays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_worker_killed_before_relaying_loses_no_notification() {
    use quern_tests::chaos::{ChaosJob, WorkerProcess, WorkerSettings, new_job};
    let cfg = config();
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    let child = new_job("k", ChaosJob { sleep_ms: 0, fail_attempts: 0 }, 1);
    let flow = job("count", "p", 0).child(OnChildFailure::FailParent, FlowJob::new(child).in_queue("kids"));

    let dir = tempfile::tempdir().unwrap();
    let mut settings = WorkerSettings::new(quern_tests::redis().url(), "kids", dir.path().join("ledger"));
    settings.prefix = Some(cfg.prefix.clone());
    // Its first reaper pass runs at start, before the child ends; the next
    // would come long after the kill.
    settings.reap_interval = Duration::from_secs(600);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chaos_worker"));
    let process = WorkerProcess::start(binary, &settings, &dir.path().join("worker.log")).await.unwrap();
    // Added once the worker is registered (by its first reaper pass, whose
    // relay then runs at once), so that the child ends after that relay.
    let kids_queue = Queue::connect(&cfg, "kids").await.unwrap();
    quern_tests::eventually(WAIT, "the worker to register", || {
        let kids_queue = &kids_queue;
        async move { (!kids_queue.workers().await.unwrap().is_empty()).then_some(()) }
    })
    .await;
    parents.add_flow(flow).await.unwrap();
    let kids = Mover::new(&cfg, "kids").await;
    quern_tests::eventually(WAIT, "the child to complete, its record waiting in the outbox", || {
        let kids = &kids;
        async move { (kids.run(&FlowPeek(10)).await.len() == 1).then_some(()) }
    })
    .await;
    process.kill9().await.unwrap();
    assert_eq!(parents.job("p").await.unwrap().unwrap().state, JobState::WaitingChildren);

    let relay = worker(&cfg, "kids").await;
    let builder = Worker::builder(&cfg, "parents").handler("count", |ctx: JobContext, _n: u32| async move {
        let children = ctx.children::<serde_json::Value>().await.map_err(JobError::permanent)?;
        Ok::<_, JobError>(children.iter().filter(|c| c.status == ChildStatus::Completed).count())
    });
    let runner = RunningWorker::start(builder).await;
    let done = wait_for_state(&parents, "p", JobState::Completed, WAIT).await;
    assert_eq!(done.result.as_deref(), Some("1"));
    assert_eq!(pending(&cfg, "p").await, "0", "counted once");
    relay.stop().await;
    runner.stop().await;
}
