//! A throwaway `redis-server` for `quern demo` and the integration tests
//! (cargo feature `throwaway-redis`).
//!
//! The server listens on a free port of 127.0.0.1, keeps its files (log, AOF)
//! in a temporary directory, and is killed when dropped. Because a process
//! can die without running destructors (a test binary's statics are never
//! dropped; SIGKILL), a small `sh` watchdog also kills the server as soon as
//! the process that started it is gone, so no run leaves servers behind. A
//! server meant to outlive its starter ([`Launch::keep`]) gets no watchdog.
//! With [`Launch::tls`] it listens for TLS only (`rediss://`).
//! [`Launch::args`] adds options (such as `--replicaof`), and
//! [`Launch::sentinel`] starts a Redis Sentinel instead of a server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How the server persists data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart starts empty.
    None,
    /// Append-only file, fsync after every write (`appendfsync always`).
    AofAlways,
    /// Append-only file, fsync once a second (`appendfsync everysec`).
    AofEverySec,
}

/// The certificate files of a TLS-only server (PEM).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// The CAs whose client certificates the server accepts.
    pub ca: PathBuf,
    /// Whether clients must present a certificate (`tls-auth-clients yes`)
    /// or may (`optional`).
    pub require_client_cert: bool,
}

/// How to start a [`ThrowawayRedis`].
#[derive(Debug, Clone)]
pub struct Launch {
    persistence: Persistence,
    dir_prefix: String,
    keep: bool,
    ready_within: Duration,
    extra_args: Vec<String>,
    tls: Option<ServerTls>,
    sentinel_config: Option<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            persistence: Persistence::None,
            dir_prefix: "quern-redis-".into(),
            keep: false,
            ready_within: Duration::from_secs(10),
            extra_args: Vec::new(),
            tls: None,
            sentinel_config: None,
        }
    }
}

impl Launch {
    /// How the server persists data (default: not at all).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// The start of the temporary directory's name (default `quern-redis-`).
    pub fn dir_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dir_prefix = prefix.into();
        self
    }

    /// With `true`, the server and its directory outlive the
    /// [`ThrowawayRedis`] and the process: no watchdog, nothing killed or
    /// deleted on drop.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Further `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Listen for TLS only, with these certificates (the plain port is off).
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Start a Redis Sentinel (`redis-server <file> --sentinel`) instead of a
    /// server; `config` is the text of its configuration file (its `sentinel
    /// monitor ...` lines), written to `sentinel.conf` in its directory, which
    /// the sentinel rewrites as it learns. No persistence options apply.
    pub fn sentinel(mut self, config: impl Into<String>) -> Self {
        self.sentinel_config = Some(config.into());
        self
    }

    /// How long to wait for the first PING answer (default 10 s).
    pub fn ready_within(mut self, wait: Duration) -> Self {
        self.ready_within = wait;
        self
    }

    /// Start the server and wait until it answers PING. A free port can be
    /// taken between probing and binding, so a few ports are tried. Fails with
    /// an [`ErrorKind::Io`](crate::ErrorKind::Io) error, naming the package to
    /// install when `redis-server` is not installed.
    pub fn start(self) -> Result<ThrowawayRedis> {
        let dir = tempfile::Builder::new().prefix(&self.dir_prefix).tempdir().map_err(|e| Error::Io {
            what: "create a temporary directory for redis-server".into(),
            reason: e.to_string(),
        })?;
        let mut redis =
            ThrowawayRedis { port: free_port()?, dir: Some(dir), launch: self, server: None, watchdog: None };
        let mut last_error = None;
        for _ in 0..10 {
            match redis.spawn() {
                Ok(()) => {
                    if redis.launch.keep {
                        // Leave the server running and its files in place.
                        redis.server = None;
                        if let Some(dir) = &mut redis.dir {
                            dir.disable_cleanup(true);
                        }
                    }
                    return Ok(redis);
                }
                Err(e) if !redis_server_installed() => return Err(e),
                Err(e) => last_error = Some(e),
            }
            redis.port = free_port()?;
        }
        Err(last_error.unwrap_or_else(|| io_error("start redis-server", "no attempt made")))
    }
}

/// A `redis-server` process started by this process.
#[derive(Debug)]
pub struct ThrowawayRedis {
    port: u16,
    dir: Option<tempfile::TempDir>,
    launch: Launch,
    server: Option<Child>,
    watchdog: Option<Child>,
}

impl ThrowawayRedis {
    /// Start a server with the default [`Launch`] settings.
    pub fn start() -> Result<Self> {
        Launch::default().start()
    }

    fn spawn(&mut self) -> Result<()> {
        let mut args: Vec<String> = Vec::new();
        if let Some(config) = &self.launch.sentinel_config {
            let path = self.dir().join("sentinel.conf");
            // On a restart the sentinel's own rewrite of the file is kept.
            if !path.exists() {
                std::fs::write(&path, config)
                    .map_err(|e| io_error("write the sentinel's configuration file", &e.to_string()))?;
            }
            args.extend([path.display().to_string(), "--sentinel".into()]);
        }
        args.extend(match &self.launch.tls {
            None => vec!["--port".into(), self.port.to_string()],
            Some(tls) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                tls.cert.display().to_string(),
                "--tls-key-file".into(),
                tls.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                tls.ca.display().to_string(),
                "--tls-auth-clients".into(),
                if tls.require_client_cert { "yes" } else { "optional" }.into(),
            ],
        });
        args.extend([
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir().display().to_string(),
            "--save".into(),
            String::new(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--logfile".into(),
            self.log_path().display().to_string(),
        ]);
        if self.launch.sentinel_config.is_none() {
            args.extend(["--maxmemory-policy".into(), "noeviction".into()]);
            match self.launch.persistence {
                Persistence::None => args.extend(["--appendonly".into(), "no".into()]),
                Persistence::AofAlways | Persistence::AofEverySec => {
                    let fsync =
                        if self.launch.persistence == Persistence::AofAlways { "always" } else { "everysec" };
                    args.extend(["--appendonly".into(), "yes".into(), "--appendfsync".into(), fsync.into()]);
                }
            }
        }
        args.extend(self.launch.extra_args.iter().cloned());
        let server = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    io_error(
                        "start redis-server",
                        "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; \
                         macOS: brew install redis)",
                    )
                } else {
                    io_error("start redis-server", &e.to_string())
                }
            })?;
        let server_pid = server.id();
        self.server = Some(server);
        if !self.launch.keep {
            // Kill the server when this process dies, whatever way it dies.
            let script = format!(
                "while kill -0 {parent} 2>/dev/null && kill -0 {server} 2>/dev/null; do sleep 0.5; done; \
                 kill -9 {server} 2>/dev/null",
                parent = std::process::id(),
                server = server_pid
            );
            self.watchdog = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
        }
        let deadline = Instant::now() + self.launch.ready_within;
        while Instant::now() < deadline {
            // A TLS port cannot be PINGed in plain text; it accepts once ready.
            let ready = if self.launch.tls.is_some() {
                TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            } else {
                ping(self.addr())
            };
            if ready {
                return Ok(());
            }
            if let Some(server) = self.server.as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                self.stop_processes();
                return Err(io_error("start redis-server", &format!("it exited ({status}); log:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_processes();
        Err(io_error(
            "start redis-server",
            &format!("on port {} it did not answer PING within {:?}", self.port, self.launch.ready_within),
        ))
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://...` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.launch.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    /// Whether the server process is running (always false for a kept one,
    /// which is no longer this process's child to watch).
    pub fn is_running(&mut self) -> bool {
        matches!(self.server.as_mut().map(|s| s.try_wait()), Some(Ok(None)))
    }

    /// `kill -9` the server (no shutdown save; the AOF keeps what was fsynced).
    pub fn kill(&mut self) {
        self.stop_processes();
    }

    /// Start the server again on the same port with the same data directory,
    /// retrying for a few seconds while the old socket lingers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_processes();
        let mut last = None;
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| io_error("restart redis-server", "no attempt made")))
    }

    fn stop_processes(&mut self) {
        for mut child in [self.server.take(), self.watchdog.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

/// Whether a `redis-server` executable is on `PATH`.
pub fn redis_server_installed() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join("redis-server").is_file()))
        .unwrap_or(false)
}

/// Whether something at `addr` answers a Redis PING (within about 0.7 s).
pub fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io_error("find a free port for redis-server", &e.to_string()))
}

fn io_error(what: &str, reason: &str) -> Error {
    Error::Io { what: what.to_owned(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        if !redis_server_installed() {
            eprintln!("redis-server is not installed; skipped");
            return;
        }
        let mut redis = Launch::default().dir_prefix("quern-common-test-").start().unwrap();
        assert!(ping(redis.addr()) && redis.is_running());
        let addr = redis.addr();
        redis.kill();
        assert!(!ping(addr));
        redis.restart().unwrap();
        assert!(ping(addr));
        drop(redis);
        assert!(!ping(addr));
    }
}
