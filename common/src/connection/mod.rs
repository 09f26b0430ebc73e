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
//! connection; `tls` makes `rediss://` clients from certificate files;
//! `sentinel` finds the master through Redis Sentinel (`redis+sentinel://`
//! URLs) and follows it across failovers; `cluster` serves a Redis Cluster. Each further kind of Redis deployment (TLS, Sentinel,
//! Cluster) goes in a file of its own here, and `connect` /
//! `connect_dedicated` below choose between them.

mod cluster;
mod config;
mod healing;
mod sentinel;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

pub use config::{DEFAULT_REDIS_URL, RedisConfig};
pub use healing::SelfHealingConnection;
pub use tls::{ENV_CA, ENV_CERT, ENV_KEY, TlsFiles};

use crate::Result;

impl RedisConfig {
    /// Open a self-healing multiplexed connection. Fails within about
    /// `connect_timeout` when nothing answers.
    pub async fn connect(&self) -> Result<SelfHealingConnection> {
        if let Some(seeds) = self.cluster_seeds()? {
            let link = cluster::ClusterLink::connect(self, seeds).await?;
            return Ok(SelfHealingConnection { kind: healing::Kind::Cluster(link) });
        }
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
        let mut manager = self.bounded(attempt).await?;
        // A URL of one node of a cluster: use the cluster.
        if cluster::is_cluster(&mut manager).await {
            let seeds = vec![client.get_connection_info().clone()];
            let link = cluster::ClusterLink::connect(self, seeds).await?;
            return Ok(SelfHealingConnection { kind: healing::Kind::Cluster(link) });
        }
        let healing = healing::Healing { client, config, current: Mutex::new((0, manager)), sentinel: None };
        Ok(SelfHealingConnection { kind: healing::Kind::Single(Arc::new(healing)) })
    }

    /// Open a connection of its own for blocking commands on `key`. Its
    /// response timeout is `longest_block` plus the usual response timeout,
    /// so a dead socket is noticed soon after the block should have ended.
    /// On a Redis Cluster it goes to the primary that serves `key` now; after
    /// a resharding or a failover the block fails (`MOVED`, or a dead
    /// socket), and the next connection finds the new owner.
    pub async fn connect_dedicated(
        &self,
        key: &str,
        longest_block: Duration,
    ) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(longest_block + self.response_timeout));
        if let Some(url) = self.sentinel_url()? {
            return sentinel::connect_dedicated(self, url, &config).await;
        }
        let (mut conn, on_cluster) = self.probe(&config).await?;
        if !on_cluster {
            return Ok(conn);
        }
        let (host, port) = cluster::node_of(&mut conn, key).await?;
        let client = self.client_for(self.node_info(&host, port)?)?;
        self.bounded(client.get_multiplexed_async_connection_with_config(&config)).await
    }
}

impl RedisConfig {
    /// One plain connection per server that holds data: the server itself,
    /// or each primary of a cluster, with its `host:port`. For work that
    /// must visit every node (scanning keys, reading `INFO` per shard);
    /// commands on these connections must not span slots.
    pub async fn node_connections(&self) -> Result<Vec<(String, MultiplexedConnection)>> {
        if let Some(url) = self.sentinel_url()? {
            return Ok(vec![(
                self.masked_url(),
                sentinel::connect_dedicated(self, url, &self.plain_config()).await?,
            )]);
        }
        let (mut conn, on_cluster) = self.probe(&self.plain_config()).await?;
        if !on_cluster {
            return Ok(vec![(self.masked_url(), conn)]);
        }
        let mut nodes = Vec::new();
        for (host, port) in cluster::primaries(&mut conn).await? {
            let client = self.client_for(self.node_info(&host, port)?)?;
            let conn = self
                .bounded(client.get_multiplexed_async_connection_with_config(&self.plain_config()))
                .await?;
            nodes.push((format!("{host}:{port}"), conn));
        }
        Ok(nodes)
    }

    /// `host:port` of the primary that serves `key` (on one server: its URL,
    /// password masked).
    pub async fn node_of_key(&self, key: &str) -> Result<String> {
        if self.sentinel_url()?.is_some() {
            return Ok(self.masked_url());
        }
        let (mut conn, on_cluster) = self.probe(&self.plain_config()).await?;
        if !on_cluster {
            return Ok(self.masked_url());
        }
        let (host, port) = cluster::node_of(&mut conn, key).await?;
        Ok(format!("{host}:{port}"))
    }
}

impl RedisConfig {
    /// The parsed URL if it is a Sentinel one (`redis+sentinel://`).
    fn sentinel_url(&self) -> Result<Option<sentinel::SentinelUrl>> {
        sentinel::SentinelUrl::parse(&self.url)
            .map_err(|reason| crate::Error::InvalidUrl { url: self.masked_url(), reason })
    }
}

impl RedisConfig {
    /// The connect and response timeouts of these settings, for plain connections.
    fn plain_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }

    /// A plain connection to the server of the URL (or the first seed of a
    /// cluster's URL that answers: a dead node among the seeds does not stop
    /// a worker's blocking wait from finding its node), and whether it is a
    /// cluster node.
    async fn probe(&self, config: &AsyncConnectionConfig) -> Result<(MultiplexedConnection, bool)> {
        let clients = match self.cluster_seeds()? {
            Some(seeds) => seeds.into_iter().map(|s| self.client_for(s)).collect::<Result<Vec<_>>>()?,
            None => vec![self.client()?],
        };
        let mut failure = None;
        for client in clients {
            match self.bounded(client.get_multiplexed_async_connection_with_config(config)).await {
                Ok(mut conn) => {
                    let on_cluster = cluster::is_cluster(&mut conn).await;
                    return Ok((conn, on_cluster));
                }
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| crate::Error::InvalidUrl {
            url: self.masked_url(),
            reason: "no seed node in the URL".into(),
        }))
    }
}

/// Redis' clock, in milliseconds since the Unix epoch (quern times
/// everything by it, never by the clocks of the machines that call it).
pub async fn redis_time_ms<C: ConnectionLike + Send>(conn: &mut C) -> Result<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}
