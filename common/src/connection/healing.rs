//! The self-healing multiplexed connection (of one server, or of a cluster).

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::cluster::ClusterLink;

/// A multiplexed connection that replaces its socket when a call times out.
///
/// The underlying [`ConnectionManager`] reconnects when its socket is closed or
/// reset, but not when it merely goes silent (the server host died, a NAT or
/// load balancer forgot the flow, a failover moved a virtual IP): every call
/// would then time out forever. So a timed-out call here also swaps in a fresh
/// manager, which connects on its next call. With a Sentinel URL, a call that
/// fails on a dead, silent or refused socket, or meets a `READONLY` replica,
/// makes it ask the sentinels for the master and swap in a manager connected
/// to it (see `sentinel.rs`). Cheap to clone; clones share the socket and its
/// replacement.
///
/// On a Redis Cluster it is the cluster's connection: one multiplexed socket
/// per node, each call routed to the node that serves its keys (see
/// `connection/cluster.rs`).
#[derive(Clone)]
pub struct SelfHealingConnection {
    pub(super) kind: Kind,
}

#[derive(Clone)]
pub(super) enum Kind {
    /// One server.
    Single(Arc<Healing>),
    /// A Redis Cluster.
    Cluster(ClusterLink),
}

pub(super) struct Healing {
    pub(super) client: Client,
    pub(super) config: ConnectionManagerConfig,
    /// The manager in use and its generation (bumped on every replacement).
    pub(super) current: Mutex<(u64, ConnectionManager)>,
    /// With a Sentinel URL: how to find the master again (see `sentinel.rs`).
    pub(super) sentinel: Option<Arc<super::sentinel::Follower>>,
}

impl std::fmt::Debug for SelfHealingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Single(_) => {
                f.debug_struct("SelfHealingConnection").field("generation", &self.current().0).finish()
            }
            Kind::Cluster(_) => f.debug_struct("SelfHealingConnection").field("cluster", &true).finish(),
        }
    }
}

impl SelfHealingConnection {
    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// Send `cmd` to the node that serves `key` (on one server: to it). For
    /// commands without keys that must reach a given node, such as `CLIENT
    /// UNBLOCK` of a client blocked on `key`.
    pub async fn send_to_node_of(&self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        match &self.kind {
            Kind::Single(_) => cmd.query_async(&mut self.clone()).await,
            Kind::Cluster(link) => link.send_to_node_of(key, cmd).await,
        }
    }

    pub(super) fn shared(&self) -> &Arc<Healing> {
        match &self.kind {
            Kind::Single(shared) => shared,
            Kind::Cluster(_) => unreachable!("only a single server's connection heals itself here"),
        }
    }

    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.shared().current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// After a call on generation `generation` failed: replace that manager
    /// if the error says the socket may be dead and nobody replaced it yet.
    fn after_error(&self, generation: u64, error: &redis::RedisError) {
        if let Some(follower) = &self.shared().sentinel {
            if super::sentinel::master_may_have_moved(error) {
                self.follow_master(generation, follower);
            }
            return;
        }
        if !error.is_timeout() {
            return;
        }
        let mut current = self.shared().current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(
            self.shared().client.clone(),
            self.shared().config.clone(),
        ) {
            Ok(fresh) => *current = (generation + 1, fresh),
            Err(e) => tracing::warn!(error = %e, "cannot replace a silent Redis connection"),
        }
    }
}

impl SelfHealingConnection {
    /// After a call on generation `generation` was answered: with Sentinel, a
    /// `READONLY` error in the replies means the server was demoted by a
    /// failover, so find the master again.
    fn after_reply(&self, generation: u64, replies: &[Value]) {
        if let Some(follower) = &self.shared().sentinel
            && replies.iter().any(super::sentinel::is_readonly_reply)
        {
            self.follow_master(generation, follower);
        }
    }
}

impl ConnectionLike for SelfHealingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if self.is_cluster() {
            let Kind::Cluster(link) = &mut self.kind else { unreachable!("checked") };
            return link.req_packed_command(cmd);
        }
        let (generation, mut conn) = self.current();
        Box::pin(async move {
            let reply = conn.req_packed_command(cmd).await;
            match &reply {
                Err(e) => self.after_error(generation, e),
                Ok(value) => self.after_reply(generation, std::slice::from_ref(value)),
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
        if self.is_cluster() {
            let Kind::Cluster(link) = &mut self.kind else { unreachable!("checked") };
            return link.req_packed_commands(pipeline, offset, count);
        }
        let (generation, mut conn) = self.current();
        Box::pin(async move {
            let reply = conn.req_packed_commands(pipeline, offset, count).await;
            match &reply {
                Err(e) => self.after_error(generation, e),
                Ok(values) => self.after_reply(generation, values),
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Kind::Single(_) => self.current().1.get_db(),
            Kind::Cluster(_) => 0,
        }
    }
}
