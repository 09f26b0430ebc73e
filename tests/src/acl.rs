//! Redis ACL users for the role tests, made from the README's own
//! `ACL SETUSER` lines (so the README shows exactly what the tests use).

use std::collections::HashMap;

use crate::{RedisConfig, TestRedis};

/// The `ACL SETUSER ...` lines of the README's "Connecting" section, as
/// argument lists (`["ACL", "SETUSER", "quern-producer", "on", ...]`).
pub fn readme_acl_lines() -> Vec<Vec<String>> {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let text = std::fs::read_to_string(readme).expect("read README.md");
    let lines: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert!(!lines.is_empty(), "README.md has no ACL SETUSER lines");
    lines
}

/// The README's line for `user`, as arguments.
pub fn readme_acl_line(user: &str) -> Vec<String> {
    readme_acl_lines()
        .into_iter()
        .find(|l| l.get(2).is_some_and(|u| u == user))
        .unwrap_or_else(|| panic!("README.md has no ACL SETUSER line for {user}"))
}

/// A throwaway redis-server with the README's ACL users.
#[derive(Debug)]
pub struct AclServer {
    redis: TestRedis,
    lines: Vec<Vec<String>>,
}

impl AclServer {
    /// Start a server and create every user of the README's ACL lines.
    pub async fn start() -> Self {
        Self::start_with(|rule| rule.to_owned()).await
    }

    /// Like [`AclServer::start`], with every rule of the README's lines
    /// replaced by what `edit` makes of it (rules it returns as "" are left out).
    pub async fn start_with(edit: impl Fn(&str) -> String) -> Self {
        let redis = TestRedis::start();
        let lines = readme_acl_lines()
            .into_iter()
            .map(|l| l.iter().map(|rule| edit(rule)).filter(|r| !r.is_empty()).collect())
            .collect();
        let server = Self { redis, lines };
        let mut admin = server.admin().await;
        for line in &server.lines {
            let mut cmd = redis::cmd(&line[0]);
            cmd.arg(&line[1..]);
            let _: () = cmd.query_async(&mut admin).await.unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        server
    }

    /// The server.
    pub fn redis(&self) -> &TestRedis {
        &self.redis
    }

    /// A connection as the default user (all permissions).
    pub async fn admin(&self) -> quern_common::SelfHealingConnection {
        crate::raw_connection(&RedisConfig::new(self.redis.url())).await
    }

    /// `redis://user:password@127.0.0.1:port`, the password taken from the
    /// user's README line (its `>password` rule).
    pub fn url_of(&self, user: &str) -> String {
        let line = self
            .lines
            .iter()
            .find(|l| l.get(2).is_some_and(|u| u == user))
            .unwrap_or_else(|| panic!("no ACL line for {user}"));
        let password = line.iter().find_map(|a| a.strip_prefix('>')).expect("a >password rule");
        format!("redis://{user}:{password}@127.0.0.1:{}", self.redis.port())
    }

    /// Settings for `user` with the default prefix and short timeouts.
    pub fn config_of(&self, user: &str) -> RedisConfig {
        RedisConfig::new(self.url_of(user))
            .connect_timeout(std::time::Duration::from_secs(1))
            .response_timeout(std::time::Duration::from_secs(2))
    }

    /// The denials the server logged (`ACL LOG`) for `user`, as
    /// `"<context> <object> (<reason>)"`, oldest first.
    pub async fn denials_of(&self, user: &str) -> Vec<String> {
        let mut admin = self.admin().await;
        let log: Vec<HashMap<String, redis::Value>> =
            redis::cmd("ACL").arg("LOG").arg(1000).query_async(&mut admin).await.expect("ACL LOG");
        let text = |e: &HashMap<String, redis::Value>, f: &str| match e.get(f) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let mut found: Vec<String> = log
            .iter()
            .filter(|e| text(e, "username") == user)
            .map(|e| format!("{} {} ({})", text(e, "context"), text(e, "object"), text(e, "reason")))
            .collect();
        found.reverse();
        found
    }

    /// Forget the logged denials.
    pub async fn reset_denials(&self) {
        let mut admin = self.admin().await;
        let _: () =
            redis::cmd("ACL").arg("LOG").arg("RESET").query_async(&mut admin).await.expect("ACL LOG RESET");
    }
}
