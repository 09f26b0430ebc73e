//! Removing every key under one prefix, for the commands that own a prefix
//! outright (`bench`, `demo`). SCAN in batches, UNLINK what it finds: never a
//! FLUSHDB, since the database may hold other data. On a Redis Cluster every
//! primary is scanned, and keys are unlinked one by one (a command may not
//! span slots).

use quern_common::Result;
use redis::aio::ConnectionLike;

/// Delete every key that starts with `<prefix>:`.
pub(crate) async fn delete_prefixed<C: ConnectionLike + Send>(conn: &mut C, prefix: &str) -> Result<()> {
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("UNLINK").arg(key).ignore();
            }
            let _: () = pipe.query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// [`delete_prefixed`] on every node of the Redis of `config`.
pub(crate) async fn delete_prefixed_everywhere(
    config: &quern_common::RedisConfig,
    prefix: &str,
) -> Result<()> {
    for (_, mut conn) in config.node_connections().await? {
        delete_prefixed(&mut conn, prefix).await?;
    }
    Ok(())
}
