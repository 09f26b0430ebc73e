//! Cancelling or removing a flow's parent while it waits for its children:
//! the children that have not ended (and theirs, down the flow, in any
//! queue) are cancelled or removed too, in bounded calls; those in other
//! queues through stop records applied there at most once in effect.

use std::time::Duration;

use quern_common::moves::{Cancel, FlowCascade};
use quern_common::{JobOptions, JobState, NewJob, OnChildFailure, RedisConfig, ScriptCode};
use quern_producer::{ChildStatus, FlowJob, Queue};
use quern_tests::config;
use quern_tests::moves::Mover;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

const LEASE: Duration = Duration::from_secs(30);

fn job(id: &str) -> FlowJob {
    FlowJob::new(NewJob::new("n", &0).unwrap().options(JobOptions::new().job_id(id)))
}

async fn state(q: &Queue, id: &str) -> Option<JobState> {
    q.job_state(id).await.unwrap()
}

async fn error_of(q: &Queue, id: &str) -> String {
    q.job(id).await.unwrap().unwrap().last_error.unwrap_or_default()
}

/// Every key of the queue whose name has `part` (KEYS visits every node of a cluster).
async fn keys_with(cfg: &RedisConfig, queue: &str, part: &str) -> Vec<String> {
    let mut conn = quern_tests::raw_connection(cfg).await;
    let pattern = format!("{}:{{{queue}}}:*", cfg.prefix);
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap();
    keys.into_iter().filter(|k| k.contains(part)).collect()
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_children_that_have_not_ended_and_revokes_a_running_ones_lease() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let flow = job("p").children(OnChildFailure::Continue, [job("done"), job("run"), job("wait")]);
    q.add_flow(flow).await.unwrap();
    let leased = m.fetch(2, LEASE, "w").await.jobs;
    let (done, run) = (&leased[0], &leased[1]);
    assert_eq!((done.id.as_str(), run.id.as_str()), ("done", "run"));
    m.complete(-1, &[(&done.id, &done.token, "7")]).await;

    q.cancel("p", "not needed").await.unwrap();
    assert_eq!(state(&q, "p").await, Some(JobState::Failed));
    assert_eq!(state(&q, "done").await, Some(JobState::Completed), "ended: left alone");
    for id in ["run", "wait"] {
        assert_eq!(state(&q, id).await, Some(JobState::Failed), "{id}");
        assert_eq!(error_of(&q, id).await, "parent q/p cancelled: not needed");
    }
    let late = m.complete(-1, &[(&run.id, &run.token, "1")]).await;
    assert_eq!(late, [ScriptCode::LeaseLost], "the running child's lease was revoked");
    let p = q.job("p").await.unwrap().unwrap();
    let recorded: Vec<_> = p.children.iter().map(|c| (c.id.as_str(), c.status)).collect();
    assert_eq!(
        recorded,
        [("done", ChildStatus::Completed), ("run", ChildStatus::Failed), ("wait", ChildStatus::Failed)]
    );
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    assert_eq!(keys_with(&cfg, "q", ":flow:").await, Vec::<String>::new(), "no cascade left behind");
}

#[tokio::test]
async fn removing_a_parent_removes_its_children_that_have_not_ended_even_a_running_one() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let flow = job("p").children(OnChildFailure::FailParent, [job("done"), job("run"), job("wait")]);
    q.add_flow(flow).await.unwrap();
    let leased = m.fetch(2, LEASE, "w").await.jobs;
    m.complete(-1, &[(&leased[0].id, &leased[0].token, "7")]).await;

    q.remove("p").await.unwrap();
    assert_eq!(state(&q, "p").await, None);
    assert_eq!(state(&q, "done").await, Some(JobState::Completed), "ended: left alone");
    assert_eq!(state(&q, "run").await, None);
    assert_eq!(state(&q, "wait").await, None);
    let late = m.complete(-1, &[(&leased[1].id, &leased[1].token, "1")]).await;
    assert_eq!(late, [ScriptCode::NotFound]);
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active, c.failed, c.waiting_children), (0, 0, 0, 0), "{c:?}");
    assert_eq!(keys_with(&cfg, "q", ":flow:").await, Vec::<String>::new(), "no cascade left behind");
}

/// parents/p -> kids/k -> (kids/g1, grand/g2), kids/k2 running elsewhere: a
/// flow across three queues, two levels deep.
async fn nested_flow(cfg: &RedisConfig) -> (Queue, Queue, Queue) {
    let parents = Queue::connect(cfg, "parents").await.unwrap();
    let kids = Queue::connect(cfg, "kids").await.unwrap();
    let grand = Queue::connect(cfg, "grand").await.unwrap();
    let k = job("k")
        .in_queue("kids")
        .child(OnChildFailure::FailParent, job("g1"))
        .child(OnChildFailure::FailParent, job("g2").in_queue("grand"));
    let flow = job("p").child(OnChildFailure::Continue, k);
    parents.add_flow(flow).await.unwrap();
    (parents, kids, grand)
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_descendants_in_other_queues() {
    let cfg = config();
    let (parents, kids, grand) = nested_flow(&cfg).await;
    assert_eq!(state(&kids, "k").await, Some(JobState::WaitingChildren));

    parents.cancel("p", "stop").await.unwrap();
    assert_eq!(state(&kids, "k").await, Some(JobState::Failed));
    assert_eq!(error_of(&kids, "k").await, "parent parents/p cancelled: stop");
    assert_eq!(error_of(&kids, "g1").await, "parent kids/k cancelled: parent parents/p cancelled: stop");
    assert_eq!(error_of(&grand, "g2").await, "parent kids/k cancelled: parent parents/p cancelled: stop");
    let p = parents.job("p").await.unwrap().unwrap();
    assert_eq!(p.children[0].status, ChildStatus::Failed, "the child's end is recorded on the parent");
    for q in ["parents", "kids", "grand"] {
        assert_eq!(keys_with(&cfg, q, ":flow:").await, Vec::<String>::new(), "{q}: nothing left to relay");
    }
}

#[tokio::test]
async fn removing_a_parent_removes_its_descendants_in_other_queues() {
    let cfg = config();
    let (parents, kids, grand) = nested_flow(&cfg).await;
    parents.remove("p").await.unwrap();
    assert_eq!(state(&parents, "p").await, None);
    assert_eq!(state(&kids, "k").await, None);
    assert_eq!(state(&kids, "g1").await, None);
    assert_eq!(state(&grand, "g2").await, None);
}

#[tokio::test]
async fn a_cascade_cut_short_is_finished_by_the_workers_of_the_queues_concerned() {
    let cfg = config();
    let (_parents, kids, grand) = nested_flow(&cfg).await;
    // The cancel script alone, as if the canceller died right after it.
    let m = Mover::new(&cfg, "parents").await;
    assert_eq!(m.run(&Cancel { id: "p", reason: "stop" }).await, ScriptCode::Ok);
    assert_eq!(state(&kids, "k").await, Some(JobState::WaitingChildren), "not carried yet");

    // Paused: the children are not run, and the reapers still relay.
    kids.pause().await.unwrap();
    grand.pause().await.unwrap();
    let start = |queue: &'static str| {
        let b = Worker::builder(&cfg, queue)
            .reap_interval(Duration::from_millis(100))
            .idle_block(Duration::from_millis(200))
            .handler("n", |_ctx: JobContext, _: u32| async move { Ok::<_, JobError>(()) });
        RunningWorker::start(b)
    };
    let workers = [start("parents").await, start("kids").await, start("grand").await];
    let g2 = wait_for_state(&grand, "g2", JobState::Failed, Duration::from_secs(20)).await;
    assert_eq!(g2.last_error.as_deref(), Some("parent kids/k cancelled: parent parents/p cancelled: stop"));
    assert_eq!(state(&kids, "k").await, Some(JobState::Failed));
    assert_eq!(state(&kids, "g1").await, Some(JobState::Failed));
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test]
async fn a_parent_of_many_children_is_cancelled_in_calls_of_a_hundred_children() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let kids: Vec<FlowJob> = (0..1_000).map(|n| job(&format!("c{n}"))).collect();
    q.add_flow(job("p").children(OnChildFailure::Continue, kids)).await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    assert_eq!(m.run(&Cancel { id: "p", reason: "stop" }).await, ScriptCode::Ok);
    assert_eq!(q.counts().await.unwrap().failed, 1, "the cancel itself stops no child");

    assert_eq!(m.run(&FlowCascade(100)).await, 1, "a task left");
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.waiting), (101, 900), "one call: a hundred children");
    let mut calls = 1;
    loop {
        calls += 1;
        if m.run(&FlowCascade(100)).await == 0 {
            break;
        }
    }
    assert_eq!(calls, 10, "1,000 children in ten calls");
    let c = q.counts().await.unwrap();
    assert_eq!((c.failed, c.waiting), (1_001, 0));
    assert_eq!(
        q.job("p")
            .await
            .unwrap()
            .unwrap()
            .children
            .iter()
            .filter(|c| c.status == ChildStatus::Failed)
            .count(),
        1_000
    );
    assert_eq!(keys_with(&cfg, "q", ":flow:").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_stop_record_applied_twice_or_to_another_parents_child_changes_nothing() {
    use quern_common::moves::FlowStop;
    let cfg = config();
    let (_parents, kids, _grand) = nested_flow(&cfg).await;
    let m = Mover::new(&cfg, "kids").await;
    let stop = |parent: &'static str, child: &'static str| FlowStop {
        child,
        action: "cancel",
        parent_queue: "parents",
        parent,
        reason: "stop",
    };
    assert!(!m.run(&stop("someone-else", "k")).await, "not that parent's child");
    assert!(!m.run(&stop("p", "g1")).await, "g1 is k's child, not p's");
    assert!(!m.run(&stop("p", "no-such-job")).await);
    assert_eq!(state(&kids, "k").await, Some(JobState::WaitingChildren));
    assert!(m.run(&stop("p", "k")).await, "stopped now");
    assert!(!m.run(&stop("p", "k")).await, "applied again: nothing");
    assert_eq!(error_of(&kids, "k").await, "parent parents/p cancelled: stop");
}
