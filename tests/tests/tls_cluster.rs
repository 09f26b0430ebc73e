//! A Redis Cluster over TLS (`rediss://` seeds): every node TLS-only, the
//! cluster bus and replication over TLS too, certificates from a private CA
//! the test generates, clients required to present a certificate. The
//! cluster connection gets the CA and the client certificate from the
//! settings, as a single server's connection does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quern_common::{Error, JobState, RedisConfig};
use quern_producer::Queue;
use quern_tests::cluster::TestCluster;
use quern_tests::config_for;
use quern_tests::tls::TestCerts;
use quern_tests::workers::{RunningWorker, counting, wait_for_state};
use quern_worker::Worker;

fn tls_config(cluster: &TestCluster, certs: &TestCerts) -> RedisConfig {
    config_for(&cluster.seeds_url().replacen("redis://", "rediss://", 1))
        .tls_ca(certs.ca())
        .tls_client_cert(certs.client_cert(), certs.client_key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_and_a_worker_run_jobs_on_a_tls_cluster_with_a_private_ca_and_a_client_certificate() {
    let certs = TestCerts::generate();
    let cluster = tokio::task::block_in_place(|| TestCluster::start_tls(0, &certs));
    let cfg = tls_config(&cluster, &certs);
    assert!(cfg.connect().await.unwrap().is_cluster());
    for queue in tokio::task::block_in_place(|| cluster.names_on_every_shard("tls")) {
        let q = Queue::connect(&cfg, &queue).await.unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let worker = RunningWorker::start(counting(
            Worker::builder(&cfg, &queue).idle_block(Duration::from_millis(300)),
            "job",
            done.clone(),
        ))
        .await;
        // Added once the worker waits: its blocking wait (on a connection
        // of its own, to the queue's node) is woken over TLS.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = q.add("job", &1).await.unwrap().id;
        wait_for_state(&q, &id, JobState::Completed, Duration::from_secs(10)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "{queue}");
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_signed_by_another_ca_is_a_clear_error() {
    let certs = TestCerts::generate();
    let cluster = tokio::task::block_in_place(|| TestCluster::start_tls(0, &certs));
    let cfg = tls_config(&cluster, &certs).tls_ca(certs.other_ca()).connect_timeout(Duration::from_secs(1));
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    // e.g. "cannot connect to Redis at rediss://127.0.0.1:7000,...: Failed to
    // create initial connections - Io: invalid peer certificate: UnknownIssuer"
    assert!(err.to_string().contains("invalid peer certificate: UnknownIssuer"), "{err}");
    // Without the client certificate the nodes refuse the handshake.
    let mut cfg = tls_config(&cluster, &certs);
    cfg.tls.cert = None;
    cfg.tls.key = None;
    let err = Queue::connect(&cfg, "q").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
