//! Connections over TLS (`rediss://`) to a TLS-only redis-server whose
//! certificates the test makes: every kind of connection quern opens works
//! (the multiplexed one of producers and workers, the dedicated blocking one
//! of a parked worker and of an events follower, the scheduler's), a client
//! certificate is presented where the server requires one, and a wrong CA, a
//! missing CA file or plain text sent to the TLS port fail with errors that
//! say so.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quern_common::{Error, JobState, RedisConfig};
use quern_producer::{EventFollower, Queue};
use quern_scheduler::{Schedule, Scheduler, Schedules, TickOutcome};
use quern_tests::sched::RunningScheduler;
use quern_tests::tls::TestCerts;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{TestRedis, config_for, eventually, raw_connection};
use quern_worker::{JobContext, JobError, Worker};

const WAIT: Duration = Duration::from_secs(10);

/// The certificates and a TLS-only server that asks for, but does not
/// require, client certificates; shared by the tests of this binary.
struct TlsServer {
    certs: TestCerts,
    redis: TestRedis,
}

fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = TestCerts::generate();
        let redis = TestRedis::start_tls(certs.server(false));
        TlsServer { certs, redis }
    })
}

/// Settings for the TLS server trusting the test CA, with a fresh prefix.
fn tls_config() -> RedisConfig {
    let s = server();
    config_for(&s.redis.url()).tls_ca(s.certs.ca())
}

fn counting_worker(cfg: &RedisConfig, queue: &str, done: Arc<AtomicUsize>) -> quern_worker::WorkerBuilder {
    Worker::builder(cfg, queue).concurrency(2).idle_block(Duration::from_secs(20)).handler(
        "count",
        move |_ctx: JobContext, _: u32| {
            let done = done.clone();
            async move {
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        },
    )
}

#[tokio::test]
async fn a_producer_and_a_worker_run_jobs_over_tls_including_a_hand_off_to_a_parked_worker() {
    let cfg = tls_config();
    assert!(cfg.url.starts_with("rediss://"), "{}", cfg.url);
    let q = Queue::connect(&cfg, "mail").await.unwrap();
    let before = q.add("count", &1).await.unwrap().id;
    let done = Arc::new(AtomicUsize::new(0));
    let worker = RunningWorker::start(counting_worker(&cfg, "mail", done.clone())).await;
    wait_for_state(&q, &before, JobState::Completed, WAIT).await;

    // Parked, blocking on a connection of its own (TLS too, and for 20 s):
    // the next add is handed over and runs at once.
    let raw = raw_connection(&cfg).await;
    let parked = q.keys().parked().to_owned();
    eventually(WAIT, "the worker parks", || {
        let (mut raw, parked) = (raw.clone(), parked.clone());
        async move {
            let n: u64 = redis::cmd("ZCARD").arg(&parked).query_async(&mut raw).await.unwrap();
            (n > 0).then_some(())
        }
    })
    .await;
    let handed = q.add("count", &2).await.unwrap().id;
    let job = wait_for_state(&q, &handed, JobState::Completed, WAIT).await;
    assert_eq!(job.worker.as_deref(), Some(worker.id()));
    assert_eq!(done.load(Ordering::SeqCst), 2);
    worker.stop().await;
}

#[tokio::test]
async fn an_event_follower_reads_events_over_tls() {
    let cfg = tls_config();
    let q = Queue::connect(&cfg, "watched").await.unwrap();
    let mut follower = EventFollower::connect(&cfg, &q, None).await.unwrap();
    let id = q.add("n", &1).await.unwrap().id;
    let batch = tokio::time::timeout(WAIT, follower.next()).await.unwrap().unwrap();
    assert_eq!(batch[0].kind, "added");
    assert_eq!(batch[0].job_ids(), [id.as_str()]);
}

#[tokio::test]
async fn the_scheduler_enqueues_a_tick_over_tls() {
    let cfg = tls_config();
    let schedules = Schedules::connect(&cfg).await.unwrap();
    schedules.upsert(&Schedule::new("beat", "* * * * * *", "hb", "beat")).await.unwrap();
    let mut s = RunningScheduler::start(Scheduler::builder(&cfg)).await;
    eventually(WAIT, "a tick is enqueued", || {
        let ok = s.events().iter().any(|e| e.outcome == TickOutcome::Enqueued);
        async move { ok.then_some(()) }
    })
    .await;
    s.stop().await;
    let q = Queue::open_existing(&cfg, "hb").await.unwrap();
    assert!(q.counts().await.unwrap().waiting >= 1);
}

#[tokio::test]
async fn a_client_certificate_is_presented_where_the_server_requires_one() {
    let certs = &server().certs;
    let strict = TestRedis::start_tls(certs.server(true));
    let with_cert =
        config_for(&strict.url()).tls_ca(certs.ca()).tls_client_cert(certs.client_cert(), certs.client_key());
    let q = Queue::connect(&with_cert, "q").await.unwrap();
    q.add("n", &1).await.unwrap();
    let mut follower = EventFollower::connect(&with_cert, &q, None).await.unwrap();
    q.add("n", &2).await.unwrap();
    assert!(!tokio::time::timeout(WAIT, follower.next()).await.unwrap().unwrap().is_empty());

    let without = config_for(&strict.url()).tls_ca(certs.ca());
    let err = Queue::connect(&without, "q").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("CertificateRequired"), "the server asked for a certificate: {err}");
}

#[tokio::test]
async fn a_certificate_without_its_key_is_refused_before_connecting() {
    let s = server();
    let mut cfg = tls_config();
    cfg.tls.cert = Some(s.certs.client_cert());
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("QUERN_REDIS_KEY"), "{err}");
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error_naming_the_certificate_problem() {
    let s = server();
    let cfg = config_for(&s.redis.url()).tls_ca(s.certs.other_ca());
    let expected = format!(
        "TLS handshake with 127.0.0.1:{} failed: invalid peer certificate: UnknownIssuer",
        s.redis.port()
    );
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&expected), "{err}");
    // The dedicated connection for blocking waits says the same.
    let err = cfg.connect_dedicated("q", Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains(&expected), "{err}");
}

#[tokio::test]
async fn a_missing_ca_file_is_named() {
    let s = server();
    let missing = s.certs.dir().join("no-such-ca.crt");
    let cfg = config_for(&s.redis.url()).tls_ca(&missing);
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(err.to_string().contains("CA file"), "{err}");
}

#[tokio::test]
async fn plain_text_to_the_tls_port_fails_clearly_within_the_connect_timeout() {
    let s = server();
    let plain = format!("redis://127.0.0.1:{}", s.redis.port());
    let cfg = config_for(&plain);
    let started = Instant::now();
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("rediss://"), "the error hints at TLS: {err}");
    assert!(took < cfg.connect_timeout * 2 + Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn certificate_files_with_a_plain_url_are_refused() {
    let s = server();
    let cfg = config_for(&format!("redis://127.0.0.1:{}", s.redis.port())).tls_ca(s.certs.ca());
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("not a rediss:// URL"), "{err}");
}

fn env_producer(env: &[(&str, &Path)], url: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_env_producer"));
    cmd.args([quern_tests::unique_prefix().as_str(), "q"])
        .env("REDIS_URL", url)
        .env_remove("QUERN_REDIS_CA")
        .env_remove("QUERN_REDIS_CERT")
        .env_remove("QUERN_REDIS_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run env_producer")
}

#[test]
fn redis_config_from_env_reads_the_tls_variables() {
    let s = server();
    let certs = &s.certs;
    let strict = TestRedis::start_tls(certs.server(true));
    let ok = env_producer(
        &[
            ("QUERN_REDIS_CA", &certs.ca()),
            ("QUERN_REDIS_CERT", &certs.client_cert()),
            ("QUERN_REDIS_KEY", &certs.client_key()),
        ],
        &strict.url(),
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!String::from_utf8_lossy(&ok.stdout).trim().is_empty());

    let wrong = env_producer(&[("QUERN_REDIS_CA", &certs.other_ca())], &s.redis.url());
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("UnknownIssuer"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
