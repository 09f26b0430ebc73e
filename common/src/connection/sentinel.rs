//! Redis Sentinel: `redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/db]`.
//!
//! The sentinels are asked for the current master of `<master-name>` (redis-rs'
//! `Sentinel`: the first sentinel that names a master not flagged down, whose
//! `ROLE` then says `master`); the credentials and the database are the
//! master's (the sentinels are reached without credentials).
//!
//! Following the master across a failover: a failover either kills the old
//! master (its calls fail with connection errors or time out) or demotes it
//! (the sentinels kill its clients, and a reconnect lands on a replica that
//! answers `READONLY`). On any of these, the [`SelfHealingConnection`] asks
//! the sentinels again in the background and swaps in a manager connected to
//! the master they name. A forced failover can also leave the old master
//! working, and taking writes that are lost when the sentinels demote it
//! seconds later: so a watcher task also asks a sentinel every 500 ms which
//! master it names, and follows a new one at once. The failed call itself is returned as an error, as
//! always: nothing is sent twice behind the caller's back. One look-up runs at
//! a time per connection; while the sentinels name no master (the old one is
//! down and no replica is promoted yet), each failed call starts another.
//! Dedicated (blocking) connections ask the sentinels each time they connect;
//! their owners reconnect after an error, which comes when the old master
//! dies or is demoted (the sentinels then kill its clients), not before: a
//! worker's blocking wait can listen to a forced failover's old master until
//! then, and work reaches it by its fetches, every idle block.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::io::tcp::TcpSettings;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
};
use tokio::sync::Mutex as AsyncMutex;

use super::RedisConfig;
use super::healing::{Healing, SelfHealingConnection};
use crate::{Error, Result};

/// The scheme of Sentinel URLs.
pub(super) const SCHEME: &str = "redis+sentinel://";
const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// Pause after a look-up that found no master, so callers that fail fast do
/// not keep the sentinels busy.
const LOOKUP_PAUSE: Duration = Duration::from_millis(100);

/// A parsed Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    pub(super) sentinels: Vec<(String, u16)>,
    pub(super) master: String,
    pub(super) db: i64,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl SentinelUrl {
    /// `Ok(None)` for a URL of another scheme; `Err(reason)` for a malformed one.
    pub(super) fn parse(url: &str) -> std::result::Result<Option<Self>, String> {
        let Some(rest) = url.strip_prefix(SCHEME) else {
            return Ok(None);
        };
        if rest.contains(['?', '#']) {
            return Err("query parameters and fragments are not supported in a Sentinel URL".into());
        }
        let Some((authority, path)) = rest.split_once('/') else {
            return Err(format!(
                "no master name: the form is {SCHEME}host:port[,host:port...]/<master-name>[/db]"
            ));
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((user, pass)) => (user, Some(percent_decode(pass)?)),
                    None => (info, None),
                };
                let user = if user.is_empty() { None } else { Some(percent_decode(user)?) };
                (user, pass)
            }
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            sentinels.push(parse_host(host.trim())?);
        }
        let mut segments = path.split('/');
        let master = percent_decode(segments.next().unwrap_or_default())?;
        if master.is_empty() {
            return Err("no master name after the sentinels' addresses".into());
        }
        let db =
            match segments.next() {
                None | Some("") => 0,
                Some(db) => db.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| {
                    format!("the database after the master name must be a number, got {db:?}")
                })?,
            };
        if segments.any(|s| !s.is_empty()) {
            return Err("too many path segments: the form is .../<master-name>[/db]".into());
        }
        Ok(Some(Self { sentinels, master, db, username, password }))
    }

    /// How to reach the master once a sentinel names it.
    fn node_info(&self) -> SentinelNodeConnectionInfo {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(pass) = &self.password {
            redis = redis.set_password(pass);
        }
        SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(redis)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true))
    }

    fn sentinel_infos(&self) -> Vec<ConnectionInfo> {
        self.sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port).into_connection_info())
            .collect::<redis::RedisResult<Vec<_>>>()
            .unwrap_or_default()
    }

    fn addresses(&self) -> String {
        self.sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", ")
    }
}

fn parse_host(text: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) =
            rest.split_once(']').ok_or_else(|| format!("unclosed '[' in sentinel address {text:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(format!("empty host in sentinel address {text:?}"));
    }
    let port = match port {
        None => DEFAULT_SENTINEL_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port in sentinel address {text:?}"))?,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or("a '%' not followed by two hex digits")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoded text that is not UTF-8".into())
}

/// The sentinels of one URL, and the look-up of the master they name.
pub(super) struct Sentinels {
    url: SentinelUrl,
    config: RedisConfig,
    node: SentinelNodeConnectionInfo,
    lookup: AsyncMutex<Sentinel>,
}

impl Sentinels {
    pub(super) fn new(config: &RedisConfig, url: SentinelUrl) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl { url: config.masked_url(), reason };
        let lookup = Sentinel::build(url.sentinel_infos()).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { node: url.node_info(), url, config: config.clone(), lookup: AsyncMutex::new(lookup) })
    }

    /// A client of the master the sentinels name now (checked with `ROLE`).
    pub(super) async fn master(&self) -> Result<Client> {
        let limit = self.config.connect_timeout * 2 + Duration::from_millis(500);
        let found = {
            let mut lookup = self.lookup.lock().await;
            tokio::time::timeout(limit, lookup.async_master_for(&self.url.master, Some(&self.node))).await
        };
        match found {
            Ok(Ok(client)) => Ok(client),
            // The master refused the URL's credentials: no failover will
            // change that (`ErrorKind::Denied`).
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    redis::ErrorKind::AuthenticationFailed
                        | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
                ) =>
            {
                Err(Error::Redis(e))
            }
            Ok(Err(e)) => Err(self.diagnose(e.to_string()).await),
            Err(_) => Err(self.diagnose(format!("no master named within {limit:?}")).await),
        }
    }

    /// Why no master was found: no sentinel answers, none knows the name, or
    /// the master they know cannot be reached now (a failover under way).
    async fn diagnose(&self, reason: String) -> Error {
        let url = self.config.masked_url();
        let (mut reachable, mut known) = (0, 0);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        for info in self.url.sentinel_infos() {
            let Ok(client) = Client::open(info) else { continue };
            let Ok(mut conn) = client.get_multiplexed_async_connection_with_config(&config).await else {
                continue;
            };
            let reply: redis::RedisResult<redis::Value> =
                redis::cmd("SENTINEL").arg("MASTER").arg(&self.url.master).query_async(&mut conn).await;
            match reply {
                Ok(_) => (reachable, known) = (reachable + 1, known + 1),
                Err(e) if e.detail().is_some_and(|d| d.contains("No such master")) => reachable += 1,
                Err(_) => {}
            }
        }
        let sentinels = self.url.addresses();
        if reachable == 0 {
            Error::Connect { url, reason: format!("no sentinel reachable (tried {sentinels}): {reason}") }
        } else if known == 0 {
            Error::UnknownSentinelMaster { url, master: self.url.master.clone() }
        } else {
            Error::Connect {
                url,
                reason: format!(
                    "the sentinels know master {:?} but name no reachable master now (a failover under way?): {reason}",
                    self.url.master
                ),
            }
        }
    }
}

/// What a Sentinel-backed [`SelfHealingConnection`] keeps to follow its master.
pub(super) struct Follower {
    sentinels: Sentinels,
    /// A look-up is under way.
    busy: AtomicBool,
    /// `host:port` of the master in use.
    master: std::sync::Mutex<String>,
}

impl Follower {
    fn master(&self) -> String {
        self.master.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_master(&self, addr: String) {
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

/// `host:port` of a client's server.
fn address(client: &Client) -> String {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

/// How often the watcher asks a sentinel which master it names.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Ask a sentinel every [`WATCH_EVERY`] which master it names, and follow a
/// new one. A failover does not always break the old master's connections: a
/// forced failover (`SENTINEL FAILOVER`, or the old master cut off from the
/// sentinels but not from its clients) leaves it a working master until the
/// sentinels demote it, seconds later, and writes it takes meanwhile are
/// lost. Ends when the connection's last handle is dropped.
async fn watch(shared: std::sync::Weak<Healing>, follower: Arc<Follower>) {
    let mut sentinel: Option<MultiplexedConnection> = None;
    let mut next = 0;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(follower.sentinels.config.connect_timeout))
        .set_response_timeout(Some(follower.sentinels.config.response_timeout));
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        if shared.strong_count() == 0 {
            return;
        }
        if sentinel.is_none() {
            let infos = follower.sentinels.url.sentinel_infos();
            let Some(info) = infos.get(next % infos.len().max(1)).cloned() else { return };
            next += 1;
            let Ok(client) = Client::open(info) else { continue };
            sentinel = client.get_multiplexed_async_connection_with_config(&config).await.ok();
        }
        let Some(conn) = sentinel.as_mut() else { continue };
        let named: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&follower.sentinels.url.master)
            .query_async(conn)
            .await;
        match named {
            Ok(Some((host, port))) if format!("{host}:{port}") != follower.master() => {
                let Some(shared) = shared.upgrade() else { return };
                let conn = SelfHealingConnection { kind: super::healing::Kind::Single(shared) };
                let generation = conn.shared().current.lock().unwrap_or_else(|e| e.into_inner()).0;
                conn.follow_master(generation, &follower);
            }
            Ok(_) => {}
            Err(_) => sentinel = None,
        }
    }
}

/// Open the self-healing connection of a Sentinel URL.
pub(super) async fn connect(
    config: &RedisConfig,
    url: SentinelUrl,
    manager: ConnectionManagerConfig,
) -> Result<SelfHealingConnection> {
    crate::names::validate_prefix(&config.prefix)?;
    let sentinels = Sentinels::new(config, url)?;
    let client = sentinels.master().await?;
    let current = config.bounded(ConnectionManager::new_with_config(client.clone(), manager.clone())).await?;
    let follower = Arc::new(Follower {
        sentinels,
        busy: AtomicBool::new(false),
        master: std::sync::Mutex::new(address(&client)),
    });
    let shared = Arc::new(Healing {
        client,
        config: manager,
        current: std::sync::Mutex::new((0, current)),
        sentinel: Some(follower.clone()),
    });
    tokio::spawn(watch(Arc::downgrade(&shared), follower));
    Ok(SelfHealingConnection { kind: super::healing::Kind::Single(shared) })
}

/// Open a dedicated connection to the master the sentinels name now.
pub(super) async fn connect_dedicated(
    config: &RedisConfig,
    url: SentinelUrl,
    settings: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection> {
    crate::names::validate_prefix(&config.prefix)?;
    let client = Sentinels::new(config, url)?.master().await?;
    config.bounded(client.get_multiplexed_async_connection_with_config(settings)).await
}

/// Whether a failed call says the master may have moved: the socket died,
/// went silent or was refused, or the server is a replica now.
pub(super) fn master_may_have_moved(error: &redis::RedisError) -> bool {
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.code() == Some("READONLY")
}

/// Whether a reply holds a `READONLY` error (a pipeline's replies do not
/// fail the pipeline; each carries its own error).
pub(super) fn is_readonly_reply(value: &redis::Value) -> bool {
    match value {
        redis::Value::ServerError(e) => e.code() == "READONLY",
        redis::Value::Array(values) => values.iter().any(is_readonly_reply),
        _ => false,
    }
}

impl SelfHealingConnection {
    /// Ask the sentinels for the master in the background and, when they
    /// name one, replace manager `generation` by one connected to it.
    pub(super) fn follow_master(&self, generation: u64, follower: &Arc<Follower>) {
        if follower.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            follower.busy.store(false, Ordering::Release);
            return;
        };
        let (conn, follower) = (self.clone(), follower.clone());
        runtime.spawn(async move {
            conn.replace_with_master(generation, &follower).await;
            follower.busy.store(false, Ordering::Release);
        });
    }

    async fn replace_with_master(&self, generation: u64, follower: &Follower) {
        let found = match follower.sentinels.master().await {
            Ok(client) => {
                let manager =
                    ConnectionManager::new_with_config(client.clone(), self.shared().config.clone());
                follower.sentinels.config.bounded(manager).await.map(|m| (client, m))
            }
            Err(e) => Err(e),
        };
        match found {
            Ok((client, manager)) => {
                let mut current = self.shared().current.lock().unwrap_or_else(|e| e.into_inner());
                if current.0 == generation {
                    *current = (generation + 1, manager);
                    let master = address(&client);
                    if master != follower.master() {
                        tracing::info!(%master, "following the Redis master the sentinels name");
                    }
                    follower.set_master(master);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the Redis master through the sentinels; asking again on the next failed call");
                tokio::time::sleep(LOOKUP_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> SentinelUrl {
        SentinelUrl::parse(url).unwrap().unwrap()
    }

    #[test]
    fn parses_the_sentinel_url_form() {
        let u = parse("redis+sentinel://user:p%40ss@10.0.0.1:26379,host-b,[::1]:5000/mymaster/3");
        assert_eq!(
            u.sentinels,
            vec![("10.0.0.1".into(), 26379), ("host-b".into(), 26379), ("::1".into(), 5000)]
        );
        assert_eq!((u.master.as_str(), u.db), ("mymaster", 3));
        assert_eq!((u.username.as_deref(), u.password.as_deref()), (Some("user"), Some("p@ss")));
        let u = parse("redis+sentinel://:secret@h:1/m");
        assert_eq!((u.username, u.password.as_deref(), u.db), (None, Some("secret"), 0));
        assert!(SentinelUrl::parse("redis://h:1/0").unwrap().is_none());
    }

    #[test]
    fn refuses_malformed_sentinel_urls() {
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:0/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/1/2",
            "redis+sentinel://h:1/m?x=1",
            "redis+sentinel://[::1/m",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
