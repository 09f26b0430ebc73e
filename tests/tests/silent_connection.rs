//! A Redis connection that goes silent (no close, no reset, no bytes: a dead
//! host, a NAT that forgot the flow, a failover behind a virtual IP) must not
//! stop a worker: calls time out, the socket is replaced, work goes on.

use std::time::Duration;

use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::blackhole::Blackhole;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_tests::{TestRedis, config_for};
use quern_worker::{JobContext, JobError, Worker};

#[tokio::test]
async fn a_worker_whose_connections_go_silent_keeps_running_jobs() {
    let server = TestRedis::start();
    let relay = Blackhole::start(server.addr()).await.unwrap();
    let direct = config_for(&server.url()).response_timeout(Duration::from_millis(500));
    let mut through_relay = direct.clone();
    through_relay.url = relay.url();
    let q = Queue::connect(&direct, "q").await.unwrap();
    let builder = Worker::builder(&through_relay, "q")
        .idle_block(Duration::from_secs(1))
        .handler("job", |_c: JobContext, _: ()| async { Ok::<(), JobError>(()) });
    let worker = RunningWorker::start(builder).await;
    let before = q.add("job", &()).await.unwrap().id;
    wait_for_state(&q, &before, JobState::Completed, Duration::from_secs(5)).await;

    let cut = relay.cut();
    assert!(cut >= 2, "the worker's connections went through the relay");
    let after = q.add("job", &()).await.unwrap().id;
    let job = wait_for_state(&q, &after, JobState::Completed, Duration::from_secs(10)).await;
    assert!(relay.connections() > cut, "the worker opened new connections");
    assert_eq!(job.attempts_made, 1);
    worker.stop().await;
}
