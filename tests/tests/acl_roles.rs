//! Each quern role connected as the ACL user the README gives it (the
//! README's `ACL SETUSER` lines are read and run on a throwaway
//! redis-server): it does its whole work with no command refused (`ACL LOG`
//! stays empty for it), and what it must not do is refused (`NOPERM`, or the
//! same refusal of a command inside a script: `ErrorKind::Denied`).
//! The read-only operator is tested through the CLI (`cli/tests/cli_acl.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::{Backoff, ErrorKind, JobEntry, JobState, RateLimit, RedisConfig};
use quern_producer::{EventFollower, FlowJob, JobOptions, NewJob, OnChildFailure, Queue, known_queues};
use quern_scheduler::{Schedule, Scheduler, Schedules, TickOutcome};
use quern_tests::acl::AclServer;
use quern_tests::moves::Mover;
use quern_tests::sched::RunningScheduler;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{eventually, raw_connection};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(15);

/// Commands no quern role may run, and a key outside the prefix.
async fn assert_refused_outside_its_role(server: &AclServer, user: &str) {
    let mut conn = raw_connection(&server.config_of(user)).await;
    for cmd in [
        redis::cmd("FLUSHALL"),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("GET").arg("other:key").clone(),
    ] {
        let refused: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
        let e = refused.expect_err("refused");
        assert_eq!(e.code(), Some("NOPERM"), "{user}: {e}");
    }
}

#[tokio::test]
async fn a_producer_user_adds_jobs_and_reads_its_queue() {
    let server = AclServer::start().await;
    let cfg = server.config_of("quern-producer");
    let q = Queue::connect(&cfg, "mail").await.unwrap();
    let id = q.add("welcome", &serde_json::json!({"to": "ada"})).await.unwrap().id;
    q.add_with("later", &1, JobOptions::new().delay(Duration::from_secs(3600)).priority(2)).await.unwrap();
    let first = q.add_with("once", &1, JobOptions::new().job_id("order-7")).await.unwrap();
    let again = q.add_with("once", &1, JobOptions::new().job_id("order-7")).await.unwrap();
    assert_eq!(first.id, again.id);
    let big = "x".repeat(300 * 1024);
    q.add("big", &big).await.unwrap();
    // Idempotency and concurrency keys, waiting for an outcome, busy keys.
    let day = Duration::from_secs(86_400);
    let keyed = JobOptions::new().idempotency_key("pay-1", day).concurrency_key("merchant");
    let paid = q.add_with("pay", &1, keyed.clone()).await.unwrap();
    assert!(q.add_with("pay", &1, keyed).await.unwrap().deduplicated);
    let skip = JobOptions::new().concurrency_key("merchant").skip_if_key_busy();
    assert!(q.add_with("pay", &2, skip).await.unwrap().created, "no job of the key runs");
    let waited = q.wait_for::<()>(&paid.id, Duration::from_millis(50)).await.unwrap();
    assert_eq!(waited, quern_producer::JobOutcome::TimedOut);
    q.concurrency_keys().await.unwrap();

    assert_eq!(q.job(&id).await.unwrap().unwrap().state, JobState::Waiting);
    for state in
        [JobState::Waiting, JobState::Delayed, JobState::Active, JobState::Completed, JobState::Failed]
    {
        q.jobs(state, 0, 10).await.unwrap();
    }
    assert_eq!(q.counts().await.unwrap().waiting, 5);
    // A listed id whose job hash is gone: the listing checks that it is
    // still listed (`LPOS` on the waiting list, `ZSCORE` on the priorities)
    // and reports it, not hides it.
    let mut admin = server.admin().await;
    let _: () = redis::cmd("RPUSH").arg(q.keys().wait()).arg("ghost").query_async(&mut admin).await.unwrap();
    let listed = q.jobs(JobState::Waiting, 0, 10).await.unwrap();
    assert!(listed.iter().any(|e| matches!(e, JobEntry::Unreadable(u) if u.id == "ghost")), "{listed:?}");
    let _: () =
        redis::cmd("LREM").arg(q.keys().wait()).arg(0).arg("ghost").query_async(&mut admin).await.unwrap();
    assert!(q.workers().await.unwrap().is_empty());
    assert!(!q.recent_events(10).await.unwrap().is_empty());
    assert!(known_queues(&mut q.connection(), &cfg.prefix).await.unwrap().contains(&"mail".to_owned()));
    let mut follower = EventFollower::connect(&cfg, &q, None).await.unwrap();
    q.add("welcome", &2).await.unwrap();
    assert!(!tokio::time::timeout(WAIT, follower.next()).await.unwrap().unwrap().is_empty());
    Queue::open_existing(&cfg, "mail").await.unwrap();
    assert_eq!(server.denials_of("quern-producer").await, Vec::<String>::new());

    // Not its work: deleting the queue, a worker's blocking wait.
    let e = q.obliterate(true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    let mut conn = raw_connection(&cfg).await;
    let e = redis::cmd("BLPOP")
        .arg(q.keys().wake())
        .arg(1)
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    assert_eq!(q.counts().await.unwrap().waiting, 6, "nothing was deleted");
    assert_refused_outside_its_role(&server, "quern-producer").await;
}

#[tokio::test]
async fn a_worker_user_runs_jobs_retries_dead_letters_and_takes_hand_offs() {
    let server = AclServer::start().await;
    let producer = Queue::connect(&server.config_of("quern-producer"), "work").await.unwrap();
    let cfg = server.config_of("quern-worker");
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    let builder = Worker::builder(&cfg, "work")
        .concurrency(4)
        .lease(Duration::from_millis(900))
        .reap_interval(Duration::from_millis(200))
        .idle_block(Duration::from_secs(20))
        .shutdown_grace(Duration::from_millis(300))
        .handler("job", move |ctx: JobContext, kind: String| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                match kind.as_str() {
                    "flaky" if ctx.attempt() == 1 => Err(JobError::retryable("try again")),
                    "doomed" => Err(JobError::permanent("never")),
                    // Runs past the shutdown grace: handed back at shutdown.
                    "hang" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(())
                    }
                    "slow" => {
                        ctx.progress(&serde_json::json!({"done": 1})).await?;
                        // Longer than the lease: it is renewed meanwhile.
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        });
    let worker = RunningWorker::start(builder).await;
    let retry = JobOptions::new().attempts(3).backoff(Backoff::fixed(Duration::from_millis(100)));
    let ok = producer.add("job", "ok").await.unwrap().id;
    let flaky = producer.add_with("job", "flaky", retry.clone()).await.unwrap().id;
    let doomed = producer.add_with("job", "doomed", retry).await.unwrap().id;
    let slow = producer.add("job", "slow").await.unwrap().id;
    wait_for_state(&producer, &ok, JobState::Completed, WAIT).await;
    wait_for_state(&producer, &flaky, JobState::Completed, WAIT).await;
    wait_for_state(&producer, &doomed, JobState::Failed, WAIT).await;
    wait_for_state(&producer, &slow, JobState::Completed, WAIT).await;

    // Parked on its blocking wait: the next add is handed over.
    let mut admin = server.admin().await;
    let parked = producer.keys().parked().to_owned();
    for _ in 0..200 {
        let n: u64 = redis::cmd("ZCARD").arg(&parked).query_async(&mut admin).await.unwrap();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handed = producer.add("job", "ok").await.unwrap().id;
    wait_for_state(&producer, &handed, JobState::Completed, WAIT).await;
    // The producer sees the live worker, and reads events after a given one.
    assert_eq!(producer.workers().await.unwrap().len(), 1);
    assert!(!producer.events_after("0", 100).await.unwrap().is_empty());

    // A rate-limited queue (set by an administrator): the limiter's counter.
    let admin_cfg = RedisConfig::new(server.redis().url());
    let limited = Queue::connect(&admin_cfg, "limited").await.unwrap();
    limited.set_rate_limit(Some(RateLimit::new(100, Duration::from_secs(1)).unwrap())).await.unwrap();
    let limited_worker = RunningWorker::start(
        Worker::builder(&cfg, "limited")
            .handler("job", |_: JobContext, _: String| async { Ok::<(), JobError>(()) }),
    )
    .await;
    let id = limited.add("job", "ok").await.unwrap().id;
    wait_for_state(&limited, &id, JobState::Completed, WAIT).await;
    limited_worker.stop().await;

    // Concurrency keys (limits set by an administrator): held jobs, freed
    // slots, a singleton holder kept through its retry.
    let keyed = Queue::connect(&admin_cfg, "keyed").await.unwrap();
    keyed.set_key_limit(Some(1)).await.unwrap();
    keyed.set_key_singleton(Some("one")).await.unwrap();
    let keyed_worker = RunningWorker::start(Worker::builder(&cfg, "keyed").concurrency(4).handler(
        "job",
        |ctx: JobContext, kind: String| async move {
            if kind == "flaky" && ctx.attempt() == 1 { Err(JobError::retryable("again")) } else { Ok(()) }
        },
    ))
    .await;
    let retry = JobOptions::new().attempts(2).backoff(Backoff::fixed(Duration::from_millis(50)));
    let keyed_producer = Queue::connect(&server.config_of("quern-producer"), "keyed").await.unwrap();
    let mut ids = Vec::new();
    for (kind, key) in [("flaky", "k"), ("ok", "k"), ("ok", "k"), ("flaky", "one"), ("ok", "one")] {
        let opts = retry.clone().concurrency_key(key);
        ids.push(keyed_producer.add_with("job", kind, opts).await.unwrap().id);
    }
    for id in &ids {
        wait_for_state(&keyed_producer, id, JobState::Completed, WAIT).await;
    }
    keyed_worker.stop().await;
    // A job still running when the worker stops goes back to waiting, at
    // the head (`LPUSH`), and a worker is woken unless the queue is paused
    // (`HEXISTS`).
    let hung = producer.add("job", "hang").await.unwrap().id;
    wait_for_state(&producer, &hung, JobState::Active, WAIT).await;
    worker.stop().await;
    assert_eq!(producer.job(&hung).await.unwrap().unwrap().state, JobState::Waiting);
    // A job handed over to a worker that parked and died: a worker's reap
    // takes its record off the hand-off list (`LREM`), the job waits again.
    let ghosted = Mover::new(&cfg, "ghosted").await;
    ghosted.park("ghost", Duration::from_millis(100), Duration::from_millis(200)).await;
    let handed = Queue::connect(&server.config_of("quern-producer"), "ghosted").await.unwrap();
    let id = handed.add("job", "ok").await.unwrap().id;
    assert_eq!(ghosted.handoffs().await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ghosted.reap(0, 100, 0).await.recovered, [id]);
    assert!(ghosted.handoffs().await.is_empty());
    assert_eq!(server.denials_of("quern-worker").await, Vec::<String>::new());
    assert_eq!(server.denials_of("quern-producer").await, Vec::<String>::new());

    // Not its work: deleting the queue.
    let own = Queue::connect(&cfg, "work").await.unwrap();
    let e = own.obliterate(true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert_refused_outside_its_role(&server, "quern-worker").await;
}

#[tokio::test]
async fn a_scheduler_user_leads_and_enqueues_ticks() {
    let server = AclServer::start().await;
    let cfg = server.config_of("quern-scheduler");
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("beat", "* * * * * *", "hb", "beat")).await.unwrap();
    // A tick whose job waits a while is scheduled (`ZADD`, and `ZRANGE` to
    // see whether it is the earliest timer).
    let later = JobOptions::new().delay(Duration::from_secs(60));
    schedules.upsert(&Schedule::new("later", "* * * * * *", "hb", "later").options(later)).await.unwrap();
    let mut s = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_millis(600))).await;
    eventually(WAIT, "it leads and enqueues two ticks", || {
        let n = s.events().iter().filter(|e| e.outcome == TickOutcome::Enqueued).count();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    assert!(s.is_leader());
    // A standby asks how long the leader's lease has left (`PTTL`).
    let standby = RunningScheduler::start(Scheduler::builder(&cfg).lease(Duration::from_millis(600))).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!standby.is_leader());
    standby.stop().await;
    s.stop().await;
    schedules.list().await.unwrap();
    schedules.leader().await.unwrap();
    schedules.status().await.unwrap();
    schedules.set_enabled("beat", false).await.unwrap();
    schedules.remove("beat").await.unwrap();
    assert_eq!(server.denials_of("quern-scheduler").await, Vec::<String>::new());
    let hb = Queue::open_existing(&server.config_of("quern-producer"), "hb").await.unwrap();
    let counts = hb.counts().await.unwrap();
    assert!(counts.waiting >= 2 && counts.delayed >= 2, "{counts:?}");
    assert_refused_outside_its_role(&server, "quern-scheduler").await;
}

#[tokio::test]
async fn producer_and_worker_users_run_flows_across_queues() {
    let server = AclServer::start().await;
    let producer = Queue::connect(&server.config_of("quern-producer"), "parents").await.unwrap();
    let cfg = server.config_of("quern-worker");
    let job = |name: &str, id: &str| {
        FlowJob::new(NewJob::new(name, &()).unwrap().options(JobOptions::new().job_id(id)))
    };
    let flow = job("fan", "p1")
        .child(OnChildFailure::FailParent, job("ok", "k1").in_queue("kids"))
        .child(OnChildFailure::Continue, job("doomed", "k2").in_queue("kids"));
    producer.add_flow(flow).await.unwrap();
    let builder = |queue: &str| {
        Worker::builder(&cfg, queue)
            .reap_interval(Duration::from_millis(100))
            .handler("ok", |_ctx: JobContext, _: ()| async { Ok::<(), JobError>(()) })
            .handler("doomed", |_ctx: JobContext, _: ()| async {
                Err::<(), JobError>(JobError::permanent("never"))
            })
            // A handler fans out (the worker user adds a flow), then reads children.
            .handler("fan", |ctx: JobContext, _: ()| async move {
                let children = ctx.children::<()>().await?;
                let kids = (0..3).map(|_| NewJob::new("ok", &()).unwrap());
                let callback = NewJob::new("ok", &()).unwrap();
                ctx.fan_out(callback, kids, OnChildFailure::FailParent).await?;
                Ok::<usize, JobError>(children.len())
            })
    };
    let parents = RunningWorker::start(builder("parents")).await;
    let kids = RunningWorker::start(builder("kids")).await;
    let p1 = wait_for_state(&producer, "p1", JobState::Completed, WAIT).await;
    assert_eq!(p1.result.as_deref(), Some("2"));
    wait_for_state(&producer, "p1/batch", JobState::Completed, WAIT).await;
    parents.stop().await;
    kids.stop().await;
    assert_eq!(server.denials_of("quern-worker").await, Vec::<String>::new());
    assert_eq!(server.denials_of("quern-producer").await, Vec::<String>::new());
}
