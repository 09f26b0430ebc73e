//! The producer: idempotent job ids, bulk adds, and a clear, specific error
//! for every kind of bad input or unreachable Redis, within a bounded time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quern_common::options::{MAX_ATTEMPTS, MAX_DELAY, MAX_PRIORITY};
use quern_common::{Backoff, Error, JobOptions, JobState, RedisConfig};
use quern_producer::{NewJob, Queue};
use quern_tests::blackhole::Blackhole;
use quern_tests::moves::Mover;
use quern_tests::{TestRedis, config, config_for};
use quern_worker::{JobContext, JobError, Worker};

/// Longest any failing call may take before it reports an error.
const BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_explicit_job_id_adds_once_and_later_adds_change_nothing() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let opts = JobOptions::new().job_id("invoice-2026-11-42");
    let first = q.add_with("invoice", &serde_json::json!({ "amount": 10 }), opts.clone()).await.unwrap();
    assert_eq!((first.id.as_str(), first.created), ("invoice-2026-11-42", true));
    let again = q
        .add_with(
            "other-name",
            &serde_json::json!({ "amount": 99 }),
            opts.clone().delay(Duration::from_secs(9)),
        )
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), again.created), ("invoice-2026-11-42", false));
    let job = q.job(&first.id).await.unwrap().unwrap();
    assert_eq!((job.name.as_str(), job.payload.as_str()), ("invoice", r#"{"amount":10}"#), "first add wins");
    assert_eq!(job.state, JobState::Waiting);
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed), (1, 0), "not queued twice");

    // Still idempotent once the job has run, and after it was removed it can be added anew.
    let m = Mover::new(&cfg, "q").await;
    let leased = m.fetch(1, Duration::from_secs(30), "w").await.jobs.remove(0);
    m.complete(-1, &[(&leased.id, &leased.token, "")]).await;
    assert!(!q.add_with("invoice", &1, opts.clone()).await.unwrap().created);
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    q.remove(&first.id).await.unwrap();
    assert!(q.add_with("invoice", &1, opts).await.unwrap().created);
}

#[tokio::test]
async fn concurrent_adds_of_one_job_id_create_it_exactly_once() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(
                async move { q.add_with("job", &i, JobOptions::new().job_id("once")).await.unwrap() },
            )
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let added = t.await.unwrap();
        assert_eq!(added.id, "once");
        created += usize::from(added.created);
    }
    assert_eq!(created, 1);
    assert_eq!(q.counts().await.unwrap().waiting, 1);
}

#[tokio::test]
async fn bulk_add_returns_one_outcome_per_job_in_order_across_chunks() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let jobs: Vec<NewJob> = (0..2_345u32).map(|i| NewJob::new("job", &i).unwrap()).collect();
    let added = q.add_bulk(&jobs).await.unwrap();
    assert_eq!(added.len(), 2_345);
    assert!(added.iter().all(|a| a.created));
    let distinct: std::collections::HashSet<&str> = added.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(distinct.len(), 2_345);
    for i in [0usize, 999, 1000, 2344] {
        let job = q.job(&added[i].id).await.unwrap().unwrap();
        assert_eq!(job.payload, i.to_string(), "outcome {i} belongs to job {i}");
    }
    assert_eq!(
        q.job_ids(JobState::Waiting, 0, 3).await.unwrap(),
        [added[0].id.as_str(), &added[1].id, &added[2].id]
    );
    assert_eq!(q.counts().await.unwrap().waiting, 2_345);
    assert!(q.add_bulk(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn bulk_add_with_duplicate_ids_inside_and_outside_the_batch() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.add_with("job", &"existing", JobOptions::new().job_id("a")).await.unwrap();
    let with_id =
        |id: &str, payload: &str| NewJob::new("job", payload).unwrap().options(JobOptions::new().job_id(id));
    let jobs = [
        with_id("a", "dup of existing"),
        with_id("b", "first b"),
        NewJob::new("job", &"generated").unwrap(),
        with_id("b", "second b"),
        with_id("c", "c"),
        with_id("c", "c again"),
    ];
    let added = q.add_bulk(&jobs).await.unwrap();
    let got: Vec<(&str, bool)> = added.iter().map(|a| (a.id.as_str(), a.created)).collect();
    assert_eq!(got[0], ("a", false));
    assert_eq!(got[1], ("b", true));
    assert!(got[2].1 && got[2].0.parse::<u64>().is_ok(), "generated ids are numbers: {got:?}");
    assert_eq!(got[3..], [("b", false), ("c", true), ("c", false)]);
    assert_eq!(q.job("b").await.unwrap().unwrap().payload, r#""first b""#);
    assert_eq!(q.job("a").await.unwrap().unwrap().payload, r#""existing""#);
    assert_eq!(q.counts().await.unwrap().waiting, 4, "a, b, the generated one and c");
}

#[tokio::test]
async fn one_bad_job_in_a_bulk_adds_nothing() {
    let cfg = config();
    let q = Queue::builder(&cfg, "q").max_payload_bytes(64).connect().await.unwrap();
    let good = NewJob::new("job", &1).unwrap();
    for bad in [
        NewJob::new("", &1).unwrap(),
        NewJob::new("job", &"x".repeat(100)).unwrap(),
        NewJob::new("job", &1).unwrap().options(JobOptions::new().attempts(0)),
        NewJob::new("job", &1).unwrap().options(JobOptions::new().job_id("12")),
    ] {
        let err = q.add_bulk(&[good.clone(), bad]).await.unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
    assert_eq!(q.counts().await.unwrap().waiting, 0);
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_with_its_size() {
    let cfg = config();
    let q = Queue::builder(&cfg, "q").max_payload_bytes(100).connect().await.unwrap();
    // A JSON string of n characters serializes to n + 2 bytes.
    q.add("job", &"x".repeat(98)).await.expect("exactly at the limit is fine");
    let err = q.add("job", &"x".repeat(99)).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { size: 101, limit: 100 }), "{err}");
    assert_eq!(err.to_string(), "payload is 101 bytes, over the limit of 100 bytes");
    assert!(err.is_invalid_input() && !err.is_retryable());
    let json = format!("[{}]", "1,".repeat(60) + "1");
    let err = q.add_json("job", &json, JobOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    assert_eq!(q.counts().await.unwrap().waiting, 1);

    // The default limit is 512 KiB.
    let q = Queue::connect(&cfg, "big").await.unwrap();
    q.add("job", &"x".repeat(512 * 1024 - 2)).await.unwrap();
    let err = q.add("job", &"x".repeat(512 * 1024)).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { limit: 524_288, .. }), "{err}");
}

#[tokio::test]
async fn invalid_queue_names_are_refused_before_connecting() {
    let cfg = config();
    for bad in ["", "has space", "a:b", "brace{tag}", "ünicode", "new\nline", &"q".repeat(129)] {
        let err = Queue::connect(&cfg, bad).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidQueueName { name, .. } if name == bad), "{bad:?}: {err}");
        assert!(err.is_invalid_input());
        let err = Worker::builder(&cfg, bad)
            .handler("x", |_c: JobContext, _: ()| async { Ok::<(), JobError>(()) })
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidQueueName { .. }), "worker, {bad:?}: {err}");
    }
    // Refused even when Redis is unreachable: validation comes first.
    let nowhere = RedisConfig::new("redis://127.0.0.1:1").prefix("p");
    assert!(matches!(Queue::connect(&nowhere, "a b").await.unwrap_err(), Error::InvalidQueueName { .. }));
    Queue::connect(&cfg, &"q".repeat(128)).await.expect("128 characters is the limit");
    Queue::connect(&cfg, "emails.v2-eu_west").await.expect("letters, digits, '.', '-', '_'");
}

#[tokio::test]
async fn invalid_job_names_and_ids_are_refused() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    for bad in ["", "bell\u{7}", &"n".repeat(257)] {
        let err = q.add(bad, &1).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidJobName { name, .. } if name == bad), "{bad:?}: {err}");
    }
    q.add(&"n".repeat(256), &1).await.expect("256 bytes is the limit");
    q.add("send email ✉", &1).await.expect("spaces and unicode are fine in job names");
    for bad in ["", "42", "has space", "tab\t", &"i".repeat(257)] {
        let err = q.add_with("job", &1, JobOptions::new().job_id(bad)).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidJobId { id, .. } if id == bad), "{bad:?}: {err}");
    }
    let err = q.add_with("job", &1, JobOptions::new().job_id("1234")).await.unwrap_err();
    assert!(err.to_string().contains("reserved for generated ids"), "{err}");
    assert_eq!(q.counts().await.unwrap().waiting, 2);
}

#[tokio::test]
async fn out_of_range_options_name_the_option() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let ms = Duration::from_millis;
    let cases: Vec<(JobOptions, &str)> = vec![
        (JobOptions::new().attempts(0), "attempts"),
        (JobOptions::new().attempts(MAX_ATTEMPTS + 1), "attempts"),
        (JobOptions::new().priority(MAX_PRIORITY + 1), "priority"),
        (JobOptions::new().delay(MAX_DELAY + ms(1)), "delay"),
        (JobOptions::new().timeout(Duration::ZERO), "timeout"),
        (JobOptions::new().backoff(Backoff::Exponential { base: ms(0), max: ms(10), jitter: 0.1 }), "base"),
        (JobOptions::new().backoff(Backoff::Exponential { base: ms(20), max: ms(10), jitter: 0.1 }), "cap"),
        (JobOptions::new().backoff(Backoff::Exponential { base: ms(1), max: ms(10), jitter: 1.5 }), "jitter"),
        (
            JobOptions::new().backoff(Backoff::Exponential { base: ms(1), max: ms(10), jitter: -0.1 }),
            "jitter",
        ),
        (
            JobOptions::new().backoff(Backoff::Exponential { base: ms(1), max: ms(10), jitter: f64::NAN }),
            "jitter",
        ),
        (JobOptions::new().backoff(Backoff::fixed(Duration::from_secs(31 * 24 * 3600))), "fixed backoff"),
    ];
    for (opts, word) in cases {
        let err = q.add_with("job", &1, opts.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{opts:?}: {err}");
        assert!(err.to_string().contains(word), "{opts:?}: {err} should name {word}");
    }
    for opts in [
        JobOptions::new().attempts(MAX_ATTEMPTS).priority(MAX_PRIORITY).delay(MAX_DELAY),
        JobOptions::new().timeout(ms(1)).backoff(Backoff::None),
    ] {
        q.add_with("job", &1, opts).await.expect("limits themselves are accepted");
    }
    assert_eq!(q.counts().await.unwrap().waiting + q.counts().await.unwrap().delayed, 2);
}

#[tokio::test]
async fn add_json_checks_the_json_and_stores_it_verbatim() {
    let cfg = config();
    let q = Queue::connect(&cfg, "q").await.unwrap();
    for bad in ["", "{", "{'a': 1}", "[1,]", "nul", "{\"a\":1} trailing"] {
        let err = q.add_json("job", bad, JobOptions::new()).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidPayload(m) if m.contains("not valid JSON")), "{bad:?}: {err}");
    }
    let text = r#"{ "b": [1, 2.50, "x"],  "a": null }"#;
    let id = q.add_json("job", text, JobOptions::new()).await.unwrap().id;
    assert_eq!(q.job(&id).await.unwrap().unwrap().payload, text);
    assert!(matches!(NewJob::from_json("job", "{").unwrap_err(), Error::InvalidPayload(_)));

    // A value serde_json cannot write (map keys must be strings) is refused too.
    let mut unwritable = HashMap::new();
    unwritable.insert((1, 2), 3);
    let err = q.add("job", &unwritable).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPayload(_)), "{err}");
    assert_eq!(q.counts().await.unwrap().waiting, 1);
}

#[tokio::test]
async fn malformed_redis_urls_and_prefixes_are_clear_errors() {
    for url in ["http//nope", "redis://host:notaport", "ftp://127.0.0.1:6379", ""] {
        let err = Queue::connect(&RedisConfig::new(url).prefix("p"), "q").await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url:?}: {err}");
        assert!(err.is_invalid_input() && !err.is_retryable(), "{url:?}");
    }
    let err =
        Queue::connect(&RedisConfig::new("redis://u:hunter2@host:bad").prefix("p"), "q").await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "the password is masked: {err}");
    let cfg = config();
    for prefix in ["", "a b", "x{y}"] {
        let err = Queue::connect(&cfg.clone().prefix(prefix), "q").await.unwrap_err();
        assert!(matches!(&err, Error::InvalidOptions(m) if m.contains("prefix")), "{prefix:?}: {err}");
    }
}

#[tokio::test]
async fn a_closed_port_fails_fast_with_a_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config_for(&format!("redis://127.0.0.1:{port}"));
    let started = Instant::now();
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_connection_error() && err.is_retryable());
    assert!(err.to_string().contains(&port.to_string()), "names the address: {err}");
}

#[tokio::test]
async fn a_redis_url_nobody_answers_is_an_error_within_a_bounded_time() {
    // A listener that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let cfg = config_for(&format!("redis://{addr}"));
    let started = Instant::now();
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    let took = started.elapsed();
    assert!(took < BOUND, "connect took {took:?}");
    assert!(err.is_connection_error(), "{err}");

    let started = Instant::now();
    let err = Worker::builder(&cfg, "q")
        .handler("x", |_c: JobContext, _: ()| async { Ok::<(), JobError>(()) })
        .build()
        .await
        .unwrap_err();
    assert!(started.elapsed() < BOUND, "worker build took {:?}", started.elapsed());
    assert!(err.is_connection_error(), "{err}");

    let started = Instant::now();
    let err = Queue::open_existing(&cfg, "q").await.unwrap_err();
    assert!(started.elapsed() < BOUND && err.is_connection_error(), "{err} after {:?}", started.elapsed());
    hold.abort();
}

#[tokio::test]
async fn a_connection_that_goes_silent_fails_calls_within_the_response_timeout_then_is_replaced() {
    let server = TestRedis::start();
    let relay = Blackhole::start(server.addr()).await.unwrap();
    let cfg = config_for(&relay.url()).response_timeout(Duration::from_millis(500));
    let q = Queue::connect(&cfg, "q").await.unwrap();
    q.add("job", &1).await.unwrap();
    relay.cut();
    let started = Instant::now();
    let err = q.add("job", &2).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < BOUND, "add on a silent connection took {took:?}");
    assert!(err.is_retryable(), "{err}");
    // The handle replaces the silent socket (new connections go through the
    // relay, as they would to a server that took over the address).
    let counts = quern_tests::eventually(Duration::from_secs(5), "the queue handle to reconnect", || {
        let q = q.clone();
        async move {
            let started = Instant::now();
            let counts = q.counts().await;
            assert!(started.elapsed() < BOUND, "a call after the cut took {:?}", started.elapsed());
            counts.ok()
        }
    })
    .await;
    assert_eq!(counts.waiting, 1);
    q.add("job", &3).await.expect("adds work again");
    assert!(relay.connections() >= 2, "a new connection was opened");
}

#[tokio::test]
async fn open_existing_refuses_a_queue_nobody_used() {
    let cfg = config();
    let err = Queue::open_existing(&cfg, "never-used").await.unwrap_err();
    assert!(matches!(&err, Error::UnknownQueue(n) if n == "never-used"), "{err}");
    Queue::connect(&cfg, "used").await.unwrap();
    Queue::open_existing(&cfg, "used").await.expect("registered by connect");
    let mut conn = Queue::connect(&cfg, "other").await.unwrap().connection();
    let names = quern_producer::known_queues(&mut conn, &cfg.prefix).await.unwrap();
    assert_eq!(names, ["other", "used"]);
}
