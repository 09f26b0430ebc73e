//! Where Redis is: the URL, the key prefix and the timeouts, and how a URL
//! becomes a client.

use std::time::Duration;

use redis::{Client, IntoConnectionInfo};

use super::tls::{self, TlsFiles};
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
    /// Certificate files for a `rediss://` URL (none: trust the system's
    /// root certificates, present no client certificate).
    pub tls: TlsFiles,
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
            tls: TlsFiles::default(),
        }
    }

    /// Settings from `REDIS_URL` (or the local default) and the TLS files of
    /// `QUERN_REDIS_CA`, `QUERN_REDIS_CERT` and `QUERN_REDIS_KEY`.
    pub fn from_env() -> Self {
        Self::new(std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned()))
            .tls(TlsFiles::from_env())
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

    /// Use these TLS certificate files (for a `rediss://` URL).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = files;
        self
    }

    /// Trust the certificate authorities in this PEM file instead of the
    /// system's root certificates.
    pub fn tls_ca(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca = Some(path.into());
        self
    }

    /// Present this client certificate (PEM, with its private key) to a
    /// server that asks for one.
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.cert = Some(cert.into());
        self.tls.key = Some(key.into());
        self
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn masked_url(&self) -> String {
        mask_password(&self.url)
    }

    /// A client for the URL (with the TLS files for `rediss://`); fails on a
    /// malformed URL or unusable certificate files.
    pub fn client(&self) -> Result<Client> {
        crate::names::validate_prefix(&self.prefix)?;
        let invalid =
            |e: redis::RedisError| Error::InvalidUrl { url: self.masked_url(), reason: e.to_string() };
        let info = self.url.as_str().into_connection_info().map_err(invalid)?;
        // Small pipelined writes must not wait for Nagle's algorithm: without
        // TCP_NODELAY a round trip can stall for milliseconds.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        tls::client(info.set_tcp_settings(tcp), &self.tls, &self.masked_url())
    }

    /// Bound a connection attempt by about twice the connect timeout; a
    /// failure names the URL (password masked).
    pub(crate) async fn bounded<T>(&self, attempt: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
        // The client's own timeouts apply per attempt; this bounds the whole.
        let limit = self.connect_timeout * 2 + Duration::from_millis(500);
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                Err(Error::Connect { url: self.masked_url(), reason: tls::failure_reason(&self.url, &e) })
            }
            Err(_) => {
                Err(Error::Connect { url: self.masked_url(), reason: format!("no answer within {limit:?}") })
            }
        }
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
