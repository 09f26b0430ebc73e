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

/// Run by `missing_redis_server_is_a_clear_message` in a child process whose
/// PATH holds no redis-server; not meant to be run on its own.
#[test]
#[ignore = "run by missing_redis_server_is_a_clear_message with an empty PATH"]
fn start_without_redis_server_on_path() {
    TestRedis::start();
}

#[test]
fn missing_redis_server_is_a_clear_message() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "start_without_redis_server_on_path", "--nocapture"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "starting without redis-server must fail:\n{text}");
    assert!(text.contains("redis-server is not installed"), "{text}");
    assert!(text.contains("QUERN_TEST_REDIS_URL"), "says how to use another Redis:\n{text}");
}
