//! The harness itself: a throwaway server answers, restarts keep AOF data.

use quern_tests::{Persistence, TestRedis, config, raw_connection};
use redis::AsyncCommands;

#[tokio::test]
async fn shared_server_answers_and_prefixes_differ() {
    let (a, b) = (config(), config());
    assert_ne!(a.prefix, b.prefix);
    let mut conn = raw_connection(&a).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn aof_always_server_keeps_writes_across_kill_9() {
    let mut server = TestRedis::start_with(Persistence::AofAlways);
    let cfg = quern_tests::config_for(&server.url());
    let mut conn = raw_connection(&cfg).await;
    let _: () = conn.set("k", "v").await.unwrap();
    server.kill();
    assert!(!server.is_running());
    server.restart();
    let mut conn = raw_connection(&cfg).await;
    let v: Option<String> = conn.get("k").await.unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}
