//! Deleting a queue: every job in every state and every key of the queue go,
//! in calls of bounded size; a queue in use is refused unless forced.

use quern_common::FailureKind;
use std::time::Duration;

use quern_common::{Error, JobOptions, JobState, RateLimit};
use quern_producer::{NewJob, Queue, known_queues};
use quern_tests::config;
use quern_tests::moves::Mover;

const LEASE: Duration = Duration::from_secs(30);

async fn keys_of(cfg: &quern_common::RedisConfig, queue: &str) -> Vec<String> {
    // KEYS (not SCAN): on a cluster it visits every node.
    let mut conn = quern_tests::raw_connection(cfg).await;
    let pattern = format!("{}:{{{queue}}}:*", cfg.prefix);
    redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn every_job_in_every_state_and_every_key_goes_and_other_queues_stay() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let other = Queue::connect(&cfg, "other").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let kept = other.add("n", &0).await.unwrap().id;

    let bulk: Vec<NewJob> = (0..1_500).map(|i| NewJob::new("n", &i).unwrap()).collect();
    q.add_bulk(&bulk).await.unwrap();
    let done = m.fetch(2, LEASE, "w").await.jobs;
    m.complete(-1, &[(&done[0].id, &done[0].token, "ok")]).await;
    m.fail(&done[1].id, &done[1].token, "boom", FailureKind::Error, -1).await;
    q.add_with("n", &1, JobOptions::new().priority(4)).await.unwrap();
    q.add_with("n", &2, JobOptions::new().delay(Duration::from_secs(3600))).await.unwrap();
    // Jobs with idempotency and concurrency keys, more keys than one call
    // deletes; one key outlives its job.
    let day = Duration::from_secs(24 * 3600);
    let keyed: Vec<NewJob> = (0..1_100)
        .map(|i| {
            let options =
                JobOptions::new().idempotency_key(format!("pay-{i}"), day).concurrency_key("merchant");
            NewJob::new("n", &i).unwrap().options(options)
        })
        .collect();
    q.add_bulk(&keyed).await.unwrap();
    let gone = q.add_with("n", &3, JobOptions::new().idempotency_key("gone", day)).await.unwrap().id;
    q.remove(&gone).await.unwrap();
    q.set_rate_limit(Some(RateLimit::new(5, Duration::from_secs(60)).unwrap())).await.unwrap();
    q.pause().await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.completed, c.failed), (2_599, 1, 1, 1));
    assert!(!keys_of(&cfg, "q").await.is_empty());

    assert_eq!(q.obliterate(false).await.unwrap(), 2_602, "more than one call's worth");
    assert_eq!(keys_of(&cfg, "q").await, Vec::<String>::new(), "no key of the queue is left");
    let names = known_queues(&mut q.connection(), &cfg.prefix).await.unwrap();
    assert_eq!(names, vec!["other".to_owned()]);
    assert_eq!(other.job(&kept).await.unwrap().unwrap().state, JobState::Waiting, "other queues stay");
}

#[tokio::test]
async fn a_queue_with_running_jobs_is_refused_unless_forced() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let m = Mover::new(&cfg, "q").await;
    let id = q.add("n", &1).await.unwrap().id;
    q.add("n", &2).await.unwrap();
    let running = m.fetch(1, LEASE, "w").await.jobs.remove(0);

    let err = q.obliterate(false).await.unwrap_err();
    assert!(matches!(err, Error::QueueInUse { running: 1, workers: 0, .. }), "{err}");
    assert_eq!(q.counts().await.unwrap().waiting, 1, "nothing deleted");

    assert_eq!(q.obliterate(true).await.unwrap(), 2);
    assert!(keys_of(&cfg, "q").await.is_empty());
    let late = m.complete(-1, &[(&id, &running.token, "late")]).await;
    assert_ne!(late, [quern_common::ScriptCode::Ok], "the running job's result is refused");
    assert!(q.job(&id).await.unwrap().is_none());
}

/// A parent in queue `parents` with two children in queue `kids` under
/// `policy`: `done` completed (its outcome still in the kids' outbox, no
/// worker relayed it) and `wait` waiting. Then queue `kids` is deleted.
async fn delete_a_queue_of_children(cfg: &quern_common::RedisConfig, policy: quern_common::OnChildFailure) {
    use quern_producer::FlowJob;
    let job = |name: &str, id: &str| {
        FlowJob::new(NewJob::new(name, &0).unwrap().options(JobOptions::new().job_id(id))).in_queue("kids")
    };
    let parents = Queue::connect(cfg, "parents").await.unwrap();
    let kids = Queue::connect(cfg, "kids").await.unwrap();
    let flow = job("report", "p")
        .in_queue("parents")
        .child(policy, job("n", "done"))
        .child(policy, job("n", "wait"));
    parents.add_flow(flow).await.unwrap();
    let m = Mover::new(cfg, "kids").await;
    let done = m.fetch(1, LEASE, "w").await.jobs.remove(0);
    assert_eq!(done.id, "done");
    m.complete(-1, &[(&done.id, &done.token, "41")]).await;
    assert_eq!(parents.job("p").await.unwrap().unwrap().state, JobState::WaitingChildren, "not relayed yet");

    assert_eq!(kids.obliterate(false).await.unwrap(), 2);
    assert_eq!(
        keys_of(cfg, "kids").await,
        Vec::<String>::new(),
        "no key of the queue is left, its outbox neither"
    );
}

#[tokio::test]
async fn deleting_a_queue_of_children_dead_letters_their_parent_under_fail_parent() {
    let cfg = config();
    delete_a_queue_of_children(&cfg, quern_common::OnChildFailure::FailParent).await;
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    let p = parents.job("p").await.unwrap().unwrap();
    assert_eq!(p.state, JobState::Failed, "no parent waits for a child deleted");
    let error = p.last_error.unwrap();
    assert!(error.contains("kids/wait") && error.contains("removed: its queue was deleted"), "{error}");
    let statuses: Vec<_> = p.children.iter().map(|c| (c.id.as_str(), c.status)).collect();
    use quern_common::ChildStatus;
    assert_eq!(statuses, [("done", ChildStatus::Completed), ("wait", ChildStatus::Failed)]);
}

#[tokio::test]
async fn deleting_a_queue_of_children_lets_a_continue_parent_run_and_see_them() {
    use quern_common::ChildStatus;
    use quern_tests::workers::{RunningWorker, wait_for_state};
    use quern_worker::{JobContext, JobError, Worker};
    let cfg = config();
    delete_a_queue_of_children(&cfg, quern_common::OnChildFailure::Continue).await;
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    assert_eq!(parents.job("p").await.unwrap().unwrap().state, JobState::Waiting);
    let w = RunningWorker::start(Worker::builder(&cfg, "parents").handler(
        "report",
        |ctx: JobContext, _: u32| async move {
            let children = ctx.children::<u32>().await.map_err(JobError::permanent)?;
            let seen: Vec<String> = children
                .iter()
                .map(|c| format!("{} {:?} {:?} {:?}", c.id, c.status, c.result, c.error))
                .collect();
            Ok::<_, JobError>(seen)
        },
    ))
    .await;
    let p = wait_for_state(&parents, "p", JobState::Completed, Duration::from_secs(10)).await;
    w.stop().await;
    let seen: Vec<String> = serde_json::from_str(&p.result.unwrap()).unwrap();
    assert_eq!(
        seen,
        [
            format!("done {:?} Some(41) None", ChildStatus::Completed),
            format!("wait {:?} None Some(\"removed: its queue was deleted\")", ChildStatus::Failed),
        ]
    );
}

#[tokio::test]
async fn deleting_a_queue_of_parents_removes_their_children_in_other_queues() {
    use quern_producer::FlowJob;
    let cfg = config();
    let job = |id: &str| FlowJob::new(NewJob::new("n", &0).unwrap().options(JobOptions::new().job_id(id)));
    let parents = Queue::connect(&cfg, "parents").await.unwrap();
    let kids = Queue::connect(&cfg, "kids").await.unwrap();
    let flow = job("p")
        .child(quern_common::OnChildFailure::FailParent, job("k").in_queue("kids"))
        .child(quern_common::OnChildFailure::FailParent, job("sibling"));
    parents.add_flow(flow).await.unwrap();
    let kept = kids.add("n", &0).await.unwrap().id;

    assert_eq!(parents.obliterate(false).await.unwrap(), 2);
    assert_eq!(keys_of(&cfg, "parents").await, Vec::<String>::new(), "no key of the queue is left");
    assert_eq!(kids.job_state("k").await.unwrap(), None, "the deleted parent's child went with it");
    assert_eq!(kids.job_state(&kept).await.unwrap(), Some(JobState::Waiting), "other jobs stay");
}
