//! The test harness shared by quern's integration tests.
//!
//! - [`redis()`] gives the Redis of this test binary: a throwaway
//!   `redis-server` started on first use (see [`TestRedis`]), or the server
//!   named by `QUERN_TEST_REDIS_URL`. (Not `REDIS_URL`: that variable often
//!   points at a Redis that matters, and tests write to theirs freely.)
//! - [`config()`] gives each test its own key prefix on that server, so tests
//!   of one binary run in parallel without seeing each other.
//! - Fault tests that kill or restart Redis start a [`TestRedis`] of their own.
//! - [`chaos`] and [`blackhole`] hold the kit of the fault-tolerance tests.
//! - [`moves`] calls the Lua scripts one state move at a time, as a worker would;
//!   [`workers`] runs a worker in the background of a test; [`sched`] runs schedulers.
//! - [`acl`] starts a server with the README's ACL users.
//! - [`tls`] makes certificates for tests of `rediss://` ([`TestRedis::start_tls`]).

pub mod acl;
pub mod blackhole;
pub mod chaos;
pub mod cluster;
pub mod moves;
mod redis_server;
pub mod sched;
pub mod sentinel;
pub mod tls;
pub mod workers;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use quern_common::RedisConfig;
pub use redis_server::{Persistence, TestRedis, ping};

/// The Redis every test of this binary shares.
#[derive(Debug)]
pub struct SharedRedis {
    url: String,
    _server: Option<TestRedis>,
    _cluster: Option<cluster::TestCluster>,
}

impl SharedRedis {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// This test binary's Redis, started on first use: a throwaway server, a
/// throwaway Redis Cluster of 3 primaries when `QUERN_TEST_CLUSTER=1`, or
/// the server of `QUERN_TEST_REDIS_URL`.
pub fn redis() -> &'static SharedRedis {
    static SHARED: OnceLock<SharedRedis> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("QUERN_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => SharedRedis { url, _server: None, _cluster: None },
        _ if on_cluster() => {
            let cluster = cluster::TestCluster::start(0);
            SharedRedis { url: cluster.url(), _server: None, _cluster: Some(cluster) }
        }
        _ => {
            let server = TestRedis::start();
            SharedRedis { url: server.url(), _server: Some(server), _cluster: None }
        }
    })
}

/// Whether this run's shared Redis is a cluster (`QUERN_TEST_CLUSTER=1`).
pub fn on_cluster() -> bool {
    std::env::var("QUERN_TEST_CLUSTER").is_ok_and(|v| v == "1")
}

/// A prefix no other test of any run on this server has used.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!(
        "qt{}-{}-{}",
        std::process::id(),
        nanos.subsec_nanos() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings for the shared Redis with a prefix of this test's own and short
/// timeouts (tests should fail fast, not hang).
pub fn config() -> RedisConfig {
    config_for(redis().url())
}

/// Settings for `url` with a fresh prefix and short timeouts.
pub fn config_for(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(unique_prefix())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
}

/// A connection for inspecting keys directly (a cluster's, on a cluster).
/// Its timeouts are generous: short ones are easy for a loaded 2-core
/// machine to miss while a test kills processes.
pub async fn raw_connection(config: &RedisConfig) -> quern_common::SelfHealingConnection {
    let patient =
        config.clone().connect_timeout(Duration::from_secs(10)).response_timeout(Duration::from_secs(10));
    patient.connect().await.expect("connect to the test Redis")
}

/// Calls of command `cmd` (lower case, e.g. `"blpop"`) so far, read from an
/// `INFO commandstats` reply.
pub fn command_calls(info: &str, cmd: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Script calls (`FCALL` and `EVALSHA`) so far, from an `INFO commandstats` reply.
pub fn script_calls(info: &str) -> u64 {
    command_calls(info, "fcall") + command_calls(info, "evalsha")
}

/// Poll `check` every 20 ms until it returns `Some`, at most `limit`; panics
/// with `what` when time runs out.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
