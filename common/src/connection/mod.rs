//! Connection settings and the kinds of connection quern uses.
//!
//! - A [`SelfHealingConnection`]: multiplexed (concurrent calls are pipelined on
//!   one socket, which is what keeps Redis CPU per job low) and self-healing (it
//!   reconnects in the background after a failure, including a connection that
//!   went silent). Every call has a response timeout, so a caller never hangs
//!   while Redis is down.
//! - A dedicated connection for blocking waits, with a response timeout longer
//!   than the longest block, never shared with other calls.
//!
//! `config` turns settings into clients; `healing` holds the multiplexed
//! connection; `sentinel` finds the master through Redis Sentinel
//! (`redis+sentinel://` URLs) and follows it across failovers. Each further kind of Redis deployment (TLS, Sentinel,
//! Cluster) goes in a file of its own here, and `connect` /
//! `connect_dedicated` below choose between them.

mod config;
mod healing;
mod sentinel;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

pub use config::{DEFAULT_REDIS_URL, RedisConfig};
pub use healing::SelfHealingConnection;

use crate::Result;

impl RedisConfig {
    /// Open a self-healing multiplexed connection. Fails within about
    /// `connect_timeout` when nothing answers.
    pub async fn connect(&self) -> Result<SelfHealingConnection> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        if let Some(url) = self.sentinel_url()? {
            return sentinel::connect(self, url, config).await;
        }
        let client = self.client()?;
        let attempt = ConnectionManager::new_with_config(client.clone(), config.clone());
        let manager = self.bounded(attempt).await?;
        Ok(SelfHealingConnection {
            shared: Arc::new(healing::Healing {
                client,
                config,
                current: Mutex::new((0, manager)),
                sentinel: None,
            }),
        })
    }

    /// Open a connection of its own for blocking commands. Its response
    /// timeout is `longest_block` plus the usual response timeout, so a dead
    /// socket is noticed soon after the block should have ended.
    pub async fn connect_dedicated(&self, longest_block: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(longest_block + self.response_timeout));
        if let Some(url) = self.sentinel_url()? {
            return sentinel::connect_dedicated(self, url, &config).await;
        }
        let client = self.client()?;
        let attempt = client.get_multiplexed_async_connection_with_config(&config);
        self.bounded(attempt).await
    }
}

impl RedisConfig {
    /// The parsed URL if it is a Sentinel one (`redis+sentinel://`).
    fn sentinel_url(&self) -> Result<Option<sentinel::SentinelUrl>> {
        sentinel::SentinelUrl::parse(&self.url)
            .map_err(|reason| crate::Error::InvalidUrl { url: self.masked_url(), reason })
    }
}

/// Redis' clock, in milliseconds since the Unix epoch (quern times
/// everything by it, never by the clocks of the machines that call it).
pub async fn redis_time_ms<C: ConnectionLike + Send>(conn: &mut C) -> Result<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}
