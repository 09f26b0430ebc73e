//! A throwaway `redis-server` per test binary (or per fault test): the
//! launcher of quern-common (feature `throwaway-redis`), panicking on failure
//! as tests want.
//!
//! Each server listens on a free port of 127.0.0.1, keeps its files in a
//! temporary directory, and is killed when dropped; a watchdog kills it as
//! soon as the test process is gone, so no run leaves servers behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quern_common::throwaway_redis::{Launch, ServerTls, ThrowawayRedis};
pub use quern_common::throwaway_redis::{Persistence, ping};

/// A `redis-server` process owned by the test.
#[derive(Debug)]
pub struct TestRedis(ThrowawayRedis);

impl TestRedis {
    /// Start a server without persistence.
    pub fn start() -> Self {
        Self::start_with(Persistence::None)
    }

    /// Start a server with the given persistence. Panics with a clear message
    /// when `redis-server` is not installed.
    pub fn start_with(persistence: Persistence) -> Self {
        match Launch::default().persistence(persistence).dir_prefix("quern-test-redis-").start() {
            Ok(server) => Self(server),
            Err(e) => panic!("{e}\n(or set QUERN_TEST_REDIS_URL to a Redis the tests may use)"),
        }
    }

    /// Start a server without persistence that listens for TLS only, with
    /// the certificates of `tls` (see [`crate::tls::TestCerts::server`]).
    pub fn start_tls(tls: ServerTls) -> Self {
        match Launch::default().tls(tls).dir_prefix("quern-test-redis-tls-").start() {
            Ok(server) => Self(server),
            Err(e) => panic!("{e}"),
        }
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.0.log_path()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }

    /// `kill -9` the server (no shutdown save; the AOF keeps what was fsynced).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Start the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        if let Err(e) = self.0.restart() {
            panic!("could not restart redis-server on port {}: {e}", self.0.port());
        }
    }
}
