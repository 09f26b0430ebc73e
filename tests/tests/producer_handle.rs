//! The `Queue` handle: cheap to clone and share across tasks (one connection
//! for all clones), and queues and prefixes that never see each other.

use std::collections::HashSet;

use quern_common::{JobState, QueueKeys};
use quern_producer::Queue;
use quern_tests::{TestRedis, config, config_for, raw_connection};

fn assert_shareable<T: Clone + Send + Sync + 'static>() {}

#[tokio::test]
async fn clones_share_one_connection_and_adds_from_many_tasks_all_land() {
    assert_shareable::<Queue>();
    let server = TestRedis::start();
    let cfg = config_for(&server.url());
    let q = Queue::connect(&cfg, "q").await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for j in 0..20 {
                    ids.push(q.add("job", &(i * 100 + j)).await.unwrap().id);
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1000, "every add got an id of its own");
    assert_eq!(q.counts().await.unwrap().waiting, 1000);
    let mut inspect = raw_connection(&cfg).await;
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut inspect).await.unwrap();
    assert_eq!(
        clients.lines().count(),
        2,
        "one connection for the queue and its clones, one for this check:\n{clients}"
    );
}

#[tokio::test]
async fn queues_and_prefixes_are_isolated() {
    let cfg = config();
    let other_prefix = config_for(quern_tests::redis().url());
    let emails = Queue::connect(&cfg, "emails").await.unwrap();
    let reports = Queue::connect(&cfg, "reports").await.unwrap();
    let emails_elsewhere = Queue::connect(&other_prefix, "emails").await.unwrap();
    let id = emails.add("send", &1).await.unwrap().id;
    reports.add("build", &2).await.unwrap();
    reports.add("build", &3).await.unwrap();
    assert_eq!(emails.counts().await.unwrap().waiting, 1);
    assert_eq!(reports.counts().await.unwrap().waiting, 2);
    assert_eq!(emails_elsewhere.counts().await.unwrap().waiting, 0);
    assert!(emails_elsewhere.job(&id).await.unwrap().is_none());
    assert_eq!(emails.job(&id).await.unwrap().unwrap().state, JobState::Waiting);
    // Every key of a queue carries its hash tag (one cluster slot per queue).
    let mut conn = raw_connection(&cfg).await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", cfg.prefix)).query_async(&mut conn).await.unwrap();
    let registry = QueueKeys::registry(&cfg.prefix);
    for key in keys.iter().filter(|k| **k != registry) {
        assert!(
            key.starts_with(&format!("{}:{{emails}}:", cfg.prefix))
                || key.starts_with(&format!("{}:{{reports}}:", cfg.prefix)),
            "{key} is outside its queue's hash tag"
        );
    }
}
