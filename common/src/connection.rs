//! Connection settings and the two kinds of connection quern uses.
//!
//! - A [`SelfHealingConnection`]: multiplexed (concurrent calls are pipelined on
//!   one socket, which is what keeps Redis CPU per job low) and self-healing (it
//!   reconnects in the background after a failure, including a connection that
//!   went silent). Every call has a response timeout, so a caller never hangs
//!   while Redis is down.
//! - A dedicated connection for blocking waits, with a response timeout longer
//!   than the longest block, never shared with other calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::keys::DEFAULT_PREFIX;
use crate::{Error, Result};

/// The Redis URL used when neither a flag nor `REDIS_URL` gives one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` or `redis+unix:///path`.
    pub url: String,
    /// Key prefix; queues under different prefixes never see each other.
    pub prefix: String,
    /// Longest wait for a new connection.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to one call.
    pub response_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new(DEFAULT_REDIS_URL)
    }
}

impl RedisConfig {
    /// Settings for `url` with the default prefix and timeouts (2 s each).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        }
    }

    /// Settings from `REDIS_URL`, or the local default.
    pub fn from_env() -> Self {
        Self::new(std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned()))
    }

    /// Use another key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Set the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Set the response timeout.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn masked_url(&self) -> String {
        mask_password(&self.url)
    }

    /// A client for the URL; fails on a malformed URL.
    pub fn client(&self) -> Result<Client> {
        crate::names::validate_prefix(&self.prefix)?;
        let invalid =
            |e: redis::RedisError| Error::InvalidUrl { url: self.masked_url(), reason: e.to_string() };
        let info = self.url.as_str().into_connection_info().map_err(invalid)?;
        // Small pipelined writes must not wait for Nagle's algorithm: without
        // TCP_NODELAY a round trip can stall for milliseconds.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        Client::open(info.set_tcp_settings(tcp)).map_err(invalid)
    }

    /// Open a self-healing multiplexed connection. Fails within about
    /// `connect_timeout` when nothing answers.
    pub async fn connect(&self) -> Result<SelfHealingConnection> {
        let client = self.client()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let attempt = ConnectionManager::new_with_config(client.clone(), config.clone());
        let manager = self.bounded(attempt).await?;
        Ok(SelfHealingConnection {
            shared: Arc::new(Healing { client, config, current: Mutex::new((0, manager)) }),
        })
    }

    /// Open a connection of its own for blocking commands. Its response
    /// timeout is `longest_block` plus the usual response timeout, so a dead
    /// socket is noticed soon after the block should have ended.
    pub async fn connect_dedicated(&self, longest_block: Duration) -> Result<MultiplexedConnection> {
        let client = self.client()?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(longest_block + self.response_timeout));
        let attempt = client.get_multiplexed_async_connection_with_config(&config);
        self.bounded(attempt).await
    }

    async fn bounded<T>(&self, attempt: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
        // The client's own timeouts apply per attempt; this bounds the whole.
        let limit = self.connect_timeout * 2 + Duration::from_millis(500);
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Error::Connect { url: self.masked_url(), reason: e.to_string() }),
            Err(_) => {
                Err(Error::Connect { url: self.masked_url(), reason: format!("no answer within {limit:?}") })
            }
        }
    }
}

/// A multiplexed connection that replaces its socket when a call times out.
///
/// The underlying [`ConnectionManager`] reconnects when its socket is closed or
/// reset, but not when it merely goes silent (the server host died, a NAT or
/// load balancer forgot the flow, a failover moved a virtual IP): every call
/// would then time out forever. So a timed-out call here also swaps in a fresh
/// manager, which connects on its next call. Cheap to clone; clones share the
/// socket and its replacement.
#[derive(Clone)]
pub struct SelfHealingConnection {
    shared: Arc<Healing>,
}

struct Healing {
    client: Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (bumped on every replacement).
    current: Mutex<(u64, ConnectionManager)>,
}

impl std::fmt::Debug for SelfHealingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfHealingConnection").field("generation", &self.current().0).finish()
    }
}

impl SelfHealingConnection {
    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.shared.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// After a call on generation `generation` failed: replace that manager
    /// if the error says the socket may be dead and nobody replaced it yet.
    fn after_error(&self, generation: u64, error: &redis::RedisError) {
        if !error.is_timeout() {
            return;
        }
        let mut current = self.shared.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.shared.client.clone(), self.shared.config.clone())
        {
            Ok(fresh) => *current = (generation + 1, fresh),
            Err(e) => tracing::warn!(error = %e, "cannot replace a silent Redis connection"),
        }
    }
}

impl ConnectionLike for SelfHealingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let (generation, mut conn) = self.current();
        Box::pin(async move {
            let reply = conn.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.after_error(generation, e);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let (generation, mut conn) = self.current();
        Box::pin(async move {
            let reply = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &reply {
                self.after_error(generation, e);
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}://{}:***{}", &url[..scheme_end], &userinfo[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Redis' clock, in milliseconds since the Unix epoch (quern times
/// everything by it, never by the clocks of the machines that call it).
pub async fn redis_time_ms<C: ConnectionLike + Send>(conn: &mut C) -> Result<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_password("redis://user:secret@host:6379/0"), "redis://user:***@host:6379/0");
        assert_eq!(mask_password("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn malformed_url_is_a_clear_error() {
        let err = RedisConfig::new("http//nope").client().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
    }
}
