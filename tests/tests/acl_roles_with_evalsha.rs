//! The README's ACL rules for a Redis without Functions: `+fcall
//! +function|load` replaced by `+evalsha +script|load`. quern is refused
//! `FCALL` and `FUNCTION LOAD`, falls back to `EVALSHA` (for the whole
//! process, hence a test binary of its own) and a producer and a worker do
//! their work with no further command refused.

use std::time::Duration;

use quern_common::JobState;
use quern_producer::Queue;
use quern_tests::acl::AclServer;
use quern_tests::workers::{RunningWorker, wait_for_state};
use quern_worker::{JobContext, JobError, Worker};

#[tokio::test]
async fn producer_and_worker_users_with_evalsha_instead_of_functions() {
    let server = AclServer::start_with(|rule| match rule {
        "+fcall" => "+evalsha".into(),
        "+function|load" => "+script|load".into(),
        other => other.into(),
    })
    .await;
    let producer = Queue::connect(&server.config_of("quern-producer"), "q").await.unwrap();
    let first = producer.add("job", &1).await.unwrap().id;
    let worker = RunningWorker::start(
        Worker::builder(&server.config_of("quern-worker"), "q")
            .handler("job", |_: JobContext, _: u32| async { Ok::<(), JobError>(()) }),
    )
    .await;
    wait_for_state(&producer, &first, JobState::Completed, Duration::from_secs(15)).await;
    assert!(!quern_common::scripts::calls_functions(), "fell back to EVALSHA");
    let second = producer.add("job", &2).await.unwrap().id;
    wait_for_state(&producer, &second, JobState::Completed, Duration::from_secs(15)).await;
    worker.stop().await;
    // The refused FCALL and FUNCTION LOAD are logged; nothing else is.
    for user in ["quern-producer", "quern-worker"] {
        let other: Vec<String> = server
            .denials_of(user)
            .await
            .into_iter()
            .filter(|d| !d.contains(" fcall ") && !d.contains(" function|load "))
            .collect();
        assert_eq!(other, Vec::<String>::new(), "{user}");
    }
}
