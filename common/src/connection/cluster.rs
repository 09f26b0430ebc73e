//! Redis Cluster: the multiplexed connection of a cluster, and the node a
//! blocking wait goes to.
//!
//! Every key of a queue carries the queue's hash tag, so every script call
//! touches one slot and goes to the primary that owns it (redis-rs routes
//! `FCALL`/`EVALSHA` by their first key and follows `MOVED`/`ASK`).
//! `FUNCTION LOAD` and `SCRIPT LOAD` go to every primary. A pipeline may hold
//! calls for several slots (the scheduler ticks many queues in one round
//! trip): it is cut into one pipeline per slot, sent concurrently, and the
//! replies put back in order. quern's pipelines are never transactions, so
//! this changes nothing but the path.
//!
//! A `WAIT` (replica acknowledgements) counts the replicas that hold the
//! writes its connection made before it, so it must follow those writes on
//! the same node: it goes at its place in the pipeline of every slot, and
//! its reply is the smallest count. Sent alone, redis-rs would send it to
//! every primary, concurrently with the writes: it could count replicas
//! before the writes arrived, one shard without replicas would fail every
//! queue's acknowledgements, and one dead primary every call.

use std::collections::HashMap;

use futures::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use super::RedisConfig;
use crate::{Error, Result};

impl RedisConfig {
    /// The seed nodes when the URL names several (`redis://h1:p1,h2:p2`),
    /// which makes it a cluster's; `None` for a URL of one server (which may
    /// still be a cluster node: see [`is_cluster`]).
    pub(super) fn cluster_seeds(&self) -> Result<Option<Vec<ConnectionInfo>>> {
        if self.url.starts_with("redis+sentinel") {
            return Ok(None);
        }
        let (head, hosts, tail) = split_url(&self.url);
        if !hosts.contains(',') {
            return Ok(None);
        }
        let seeds = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|host| {
                format!("{head}{host}{tail}").into_connection_info().map_err(|e| Error::InvalidUrl {
                    url: self.masked_url(),
                    reason: format!("seed node {host:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(seeds))
    }

    /// The connection settings of this URL with its host and port replaced
    /// by a node's (credentials, TLS and database kept).
    pub(super) fn node_info(&self, host: &str, port: u16) -> Result<ConnectionInfo> {
        let (head, hosts, tail) = split_url(&self.url);
        // A node that never met another one does not know its own address
        // and reports an empty host (a one-node cluster): it is the one the
        // URL names.
        let seed_host = hosts.split(',').next().and_then(|h| h.rsplit_once(':')).map_or(hosts, |(h, _)| h);
        let host = if host.is_empty() { seed_host } else { host };
        format!("{head}{host}:{port}{tail}")
            .into_connection_info()
            .map_err(|e| Error::InvalidUrl { url: self.masked_url(), reason: e.to_string() })
    }

    /// A client for `info`, with the settings every quern connection has
    /// (no Nagle delay, the TLS files for `rediss://`).
    pub(super) fn client_for(&self, info: ConnectionInfo) -> Result<redis::Client> {
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        super::tls::client(info.set_tcp_settings(tcp), &self.tls, &self.masked_url())
    }
}

/// `scheme://[userinfo@]`, the hosts, and the rest (`/db`, `?query`).
fn split_url(url: &str) -> (&str, &str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let start = url[after_scheme..].rfind('@').map_or(after_scheme, |i| after_scheme + i + 1);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    (&url[..start], &url[start..end], &url[end..])
}

/// The connection of a cluster: one multiplexed connection per node,
/// reconnected and re-routed by redis-rs.
#[derive(Clone)]
pub(super) struct ClusterLink {
    conn: ClusterConnection,
}

impl ClusterLink {
    /// Connect to the cluster whose seed nodes are `seeds`.
    /// A `rediss://` cluster's nodes get the settings' CA and client
    /// certificate, as a single server's connection does.
    pub(super) async fn connect(config: &RedisConfig, seeds: Vec<ConnectionInfo>) -> Result<Self> {
        let is_tls = seeds.iter().any(|s| matches!(s.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let certs = super::tls::certificates(is_tls, &config.tls, &config.masked_url())?;
        let with_certs = certs.is_some();
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            .retries(2);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let client = builder.build().map_err(|e| match with_certs {
            true => super::tls::unusable(&config.tls, &e),
            false => Error::InvalidUrl { url: config.masked_url(), reason: e.to_string() },
        })?;
        let conn = config.bounded(client.get_async_connection()).await?;
        Ok(Self { conn })
    }

    /// Send `cmd` to the primary that serves `key`.
    pub(super) async fn send_to_node_of(&self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
            key,
            SlotAddr::Master,
        )));
        self.conn.clone().route_command(cmd, route).await
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    /// Send a pipeline, cut by slot when its calls span several.
    pub(super) fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
            let groups = by_slot(&cmds);
            if pipeline.is_transaction() || groups.len() <= 1 {
                return self.conn.req_packed_commands(pipeline, offset, count).await;
            }
            let sends = groups.into_iter().map(|(group, positions)| {
                let mut conn = self.conn.clone();
                let cmds = &cmds;
                async move {
                    let values = match group {
                        Group::Slot(_) => {
                            let mut part = redis::pipe();
                            for &i in &positions {
                                part.add_command(cmds[i].clone());
                            }
                            conn.req_packed_commands(&part, 0, positions.len()).await?
                        }
                        // A call that spans slots or nodes alone: redis-rs routes it.
                        Group::Alone(_) => vec![conn.req_packed_command(cmds[positions[0]]).await?],
                    };
                    Ok::<_, redis::RedisError>((positions, values))
                }
            });
            let mut replies: Vec<Option<Value>> = vec![None; cmds.len()];
            for (positions, values) in try_join_all(sends).await? {
                for (i, v) in positions.into_iter().zip(values) {
                    // A `WAIT` sent to several slots' nodes: the fewest replicas.
                    replies[i] = Some(match replies[i].take() {
                        None => v,
                        Some(earlier) => fewest_acks(earlier, v),
                    });
                }
            }
            Ok(replies.into_iter().map(|v| v.unwrap_or(Value::Nil)).skip(offset).take(count).collect())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    /// Calls for one slot, sent as one pipeline (redis-rs routes it).
    Slot(u16),
    /// A call sent on its own (the command at this position): keyless,
    /// or over several keys; redis-rs routes it.
    Alone(usize),
}

/// The calls of a pipeline grouped by the slot they go to, each group in
/// pipeline order. A `WAIT` goes in every slot's group (alone when there is
/// none), at its place: it must follow the writes it waits for on their node.
fn by_slot(cmds: &[&Cmd]) -> Vec<(Group, Vec<usize>)> {
    let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Group, usize> = HashMap::new();
    let mut waits = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        if is_wait(cmd) {
            waits.push(i);
            continue;
        }
        let group = match single_key(cmd) {
            Some(key) => Group::Slot(slot_of_bytes(key)),
            None => Group::Alone(i),
        };
        match index.get(&group) {
            Some(&g) => groups[g].1.push(i),
            None => {
                index.insert(group, groups.len());
                groups.push((group, vec![i]));
            }
        }
    }
    let mut slots = groups.iter_mut().filter(|(g, _)| matches!(g, Group::Slot(_))).peekable();
    if slots.peek().is_none() {
        groups.extend(waits.into_iter().map(|i| (Group::Alone(i), vec![i])));
    } else {
        for (_, positions) in slots {
            positions.extend(&waits);
            positions.sort_unstable();
        }
    }
    groups
}

/// Whether `cmd` is a `WAIT`.
fn is_wait(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"WAIT"))
}

/// Two nodes' replies to one `WAIT`: the smaller count (an error wins).
fn fewest_acks(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.min(y)),
        (Value::Int(_), other) | (other, _) => other,
    }
}

/// The one key `cmd` touches, for the commands quern pipelines: a script
/// call's first key, or the first argument of a single-key command. `None`
/// for commands without keys or over several (sent on their own).
fn single_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(bytes) => bytes,
            _ => &b""[..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"FCALL" | b"FCALL_RO" | b"EVALSHA" | b"EVAL" | b"EVALSHA_RO" | b"EVAL_RO" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (keys > 0).then(|| args.get(3).copied()).flatten()
        }
        b"TIME" | b"INFO" | b"PING" | b"CLIENT" | b"FUNCTION" | b"SCRIPT" | b"CLUSTER" | b"KEYS"
        | b"SCAN" | b"DBSIZE" | b"WAIT" | b"XREAD" | b"XREADGROUP" | b"MGET" | b"MSET" | b"BLPOP"
        | b"BRPOP" => None,
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" if args.len() > 2 => None,
        _ => args.get(1).copied(),
    }
}

/// Whether the server at the other end of `conn` runs in cluster mode.
/// A server that refuses `INFO` (an ACL without it) counts as standalone.
pub(super) async fn is_cluster<C: ConnectionLike + Send>(conn: &mut C) -> bool {
    let info: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    info.is_ok_and(|text| text.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// The addresses of the cluster's primaries, as the node at the other end
/// of `conn` knows them (`CLUSTER SLOTS`), each once.
pub(super) async fn primaries<C: ConnectionLike + Send>(conn: &mut C) -> Result<Vec<(String, u16)>> {
    let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in slots {
        if let Some(node) = primary_of_range(&range).map(|(_, _, node)| node)
            && !out.contains(&node)
        {
            out.push(node);
        }
    }
    Ok(out)
}

/// `(first slot, last slot, primary address)` of one `CLUSTER SLOTS` entry.
fn primary_of_range(range: &Value) -> Option<(i64, i64, (String, u16))> {
    let Value::Array(parts) = range else { return None };
    let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
        (parts.first(), parts.get(1), parts.get(2))
    else {
        return None;
    };
    let host = match primary.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = match primary.get(1)? {
        Value::Int(p) => u16::try_from(*p).ok()?,
        _ => return None,
    };
    Some((*start, *end, (host, port)))
}

/// The primary that serves `key`, asked of the node at `seed` (`CLUSTER SLOTS`).
pub(super) async fn node_of<C: ConnectionLike + Send>(conn: &mut C, key: &str) -> Result<(String, u16)> {
    let slot = slot_of(key);
    let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    for range in &slots {
        if let Some((start, end, node)) = primary_of_range(range)
            && (start..=end).contains(&i64::from(slot))
        {
            return Ok(node);
        }
    }
    Err(Error::Protocol(format!("no node of the cluster serves slot {slot} (key {key:?})")))
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
pub(crate) fn slot_of(key: &str) -> u16 {
    slot_of_bytes(key.as_bytes())
}

fn slot_of_bytes(bytes: &[u8]) -> u16 {
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn a_url_splits_into_credentials_hosts_and_database() {
        assert_eq!(super::split_url("redis://u:p@h1:1,h2:2/3"), ("redis://u:p@", "h1:1,h2:2", "/3"));
        assert_eq!(super::split_url("rediss://h:1"), ("rediss://", "h:1", ""));
        let cfg = crate::RedisConfig::new("redis://u:p@h1:1,h2:2/0");
        let seeds = cfg.cluster_seeds().unwrap().unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].redis_settings().username(), Some("u"));
        assert!(crate::RedisConfig::new("redis://h:1").cluster_seeds().unwrap().is_none());
        let one = crate::RedisConfig::new("redis://u:p@10.0.0.5:7000/0");
        let node = one.node_info("", 7000).unwrap();
        assert_eq!(node.addr().to_string(), "10.0.0.5:7000", "an empty host is the URL's");
        assert_eq!(one.node_info("10.0.0.6", 7001).unwrap().addr().to_string(), "10.0.0.6:7001");
    }

    #[test]
    fn a_wait_follows_the_writes_of_every_slot_on_their_node() {
        use super::{Group, by_slot, slot_of};
        let fcall = |key: &str| {
            let mut c = redis::cmd("FCALL");
            c.arg("f").arg(1).arg(key);
            c
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(100);
        let (a, b) = (fcall("q:{a}:wait"), fcall("q:{b}:wait"));
        let groups = by_slot(&[&a, &b, &a, &wait]);
        assert_eq!(
            groups,
            vec![(Group::Slot(slot_of("a")), vec![0, 2, 3]), (Group::Slot(slot_of("b")), vec![1, 3])]
        );
        assert_eq!(by_slot(&[&a, &wait]), vec![(Group::Slot(slot_of("a")), vec![0, 1])], "one pipeline");
        assert_eq!(by_slot(&[&wait]), vec![(Group::Alone(0), vec![0])]);
        use redis::Value;
        assert_eq!(super::fewest_acks(Value::Int(2), Value::Int(1)), Value::Int(1));
        assert_eq!(super::fewest_acks(Value::Int(1), Value::Nil), Value::Nil, "not a count: passed on");
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("quern:{emails}:wait"), slot_of("quern:{emails}:j:42"));
        assert_eq!(slot_of("quern:{emails}:wait"), slot_of("emails"));
        assert_eq!(slot_of("a{}b"), slot_of("a{}b"), "an empty tag hashes the whole key");
    }
}
