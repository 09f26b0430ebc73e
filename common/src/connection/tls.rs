//! TLS (`rediss://` URLs): which certificate authority a connection trusts,
//! which client certificate it presents, and failures that say what went
//! wrong with the certificates.
//!
//! quern uses rustls (through redis-rs). Without a CA file the server's
//! certificate must chain to one of the system's root certificates (read
//! from the usual places, or `SSL_CERT_FILE` / `SSL_CERT_DIR`); with one,
//! only to the CAs in that file. A client certificate and its key go
//! together (for servers started with `tls-auth-clients yes`).

use std::path::{Path, PathBuf};

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, TlsCertificates};

use crate::{Error, Result};

/// Environment variable: the PEM file of the CAs to trust for `rediss://`.
pub const ENV_CA: &str = "QUERN_REDIS_CA";
/// Environment variable: the PEM file of the client certificate (chain).
pub const ENV_CERT: &str = "QUERN_REDIS_CERT";
/// Environment variable: the PEM file of the client certificate's private key.
pub const ENV_KEY: &str = "QUERN_REDIS_KEY";

/// The certificate files of a `rediss://` connection, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the certificate authorities to trust instead of the
    /// system's root certificates.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain), presented to servers that
    /// ask for one; needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named by `QUERN_REDIS_CA`, `QUERN_REDIS_CERT` and
    /// `QUERN_REDIS_KEY` (unset or empty: none).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self { ca: var(ENV_CA), cert: var(ENV_CERT), key: var(ENV_KEY) }
    }

    /// True when no file is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// A client for `info`: plain for `redis://` and `redis+unix://`, TLS with
/// `files` for `rediss://`. `url` (password masked) names the URL in errors.
pub(super) fn client(info: ConnectionInfo, files: &TlsFiles, url: &str) -> Result<Client> {
    let is_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    match certificates(is_tls, files, url)? {
        None => {
            Client::open(info).map_err(|e| Error::InvalidUrl { url: url.to_owned(), reason: e.to_string() })
        }
        Some(certs) => Client::build_with_tls(info, certs).map_err(|e| unusable(files, &e)),
    }
}

/// The certificates a connection to a server of `url` presents and trusts:
/// `None` for a plain URL, or a `rediss://` one that uses the system's root
/// certificates and no client certificate. Refuses certificate files with
/// a plain URL, and a certificate without its key (or the other way round).
pub(super) fn certificates(is_tls: bool, files: &TlsFiles, url: &str) -> Result<Option<TlsCertificates>> {
    if !is_tls {
        if files.is_empty() {
            return Ok(None);
        }
        // Certificates given for a plain URL: the caller expects TLS, so
        // sending plain text (and a password) would be the wrong guess.
        return Err(Error::InvalidOptions(format!(
            "TLS certificate files are set ({ENV_CA}, {ENV_CERT} or {ENV_KEY}, or --redis-ca, \
             --redis-cert, --redis-key) but the Redis URL {url} is not a rediss:// URL"
        )));
    }
    install_crypto_provider();
    let client_tls = match (&files.cert, &files.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "client certificate")?,
            client_key: read(key, "client key")?,
        }),
        _ => {
            return Err(Error::InvalidOptions(format!(
                "a TLS client certificate needs its key and a key its certificate: set both \
                 {ENV_CERT} and {ENV_KEY} (--redis-cert and --redis-key) or neither"
            )));
        }
    };
    let root_cert = files.ca.as_deref().map(|ca| read(ca, "CA")).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        // The system's root certificates, loaded by redis-rs at connect time.
        return Ok(None);
    }
    Ok(Some(TlsCertificates { client_tls, root_cert }))
}

/// Certificate files redis-rs could not use (not PEM, a key that does not fit).
pub(super) fn unusable(files: &TlsFiles, e: &RedisError) -> Error {
    Error::InvalidOptions(format!("unusable TLS certificate files ({}): {e}", describe_files(files)))
}

/// Why a connection attempt to `url` failed: a TLS problem named as one
/// (with the server's `host:port`), and a hint at `rediss://` when a plain
/// connection was closed before Redis answered (a TLS port does that).
pub(super) fn failure_reason(url: &str, error: &RedisError) -> String {
    let info = url.into_connection_info().ok();
    let addr = info.as_ref().map(|i| i.addr());
    let host_port = match addr {
        Some(ConnectionAddr::Tcp(host, port)) | Some(ConnectionAddr::TcpTls { host, port, .. }) => {
            format!("{host}:{port}")
        }
        _ => String::new(),
    };
    if let Some(tls) = rustls_error(error) {
        return format!("TLS handshake with {host_port} failed: {tls}");
    }
    let closed = error.is_connection_dropped() && !error.is_connection_refusal();
    if matches!(addr, Some(ConnectionAddr::Tcp(..))) && closed {
        return format!(
            "{error} (the server at {host_port} closed the connection before answering; if it \
             expects TLS, use a rediss:// URL)"
        );
    }
    error.to_string()
}

/// The rustls error behind `error`, if any (an invalid or untrusted
/// certificate, a handshake the server broke off).
fn rustls_error(error: &RedisError) -> Option<&rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(mut e) = source {
        // redis-rs keeps its cause behind an `Arc`.
        if let Some(shared) = e.downcast_ref::<Shared>() {
            e = shared.as_ref();
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = e.source();
    }
    None
}

/// rustls needs one process-wide crypto provider; quern builds it with
/// `ring`. Installing fails harmlessly when the process set one already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io {
        what: format!("read the Redis TLS {what} file {}", path.display()),
        reason: e.to_string(),
    })
}

fn describe_files(files: &TlsFiles) -> String {
    [("CA", &files.ca), ("certificate", &files.cert), ("key", &files.key)]
        .iter()
        .filter_map(|(what, path)| path.as_ref().map(|p| format!("{what} {}", p.display())))
        .collect::<Vec<_>>()
        .join(", ")
}
