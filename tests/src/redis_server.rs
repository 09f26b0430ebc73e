//! A throwaway `redis-server` per test binary (or per fault test).
//!
//! Each server listens on a free port of 127.0.0.1, keeps its files in a
//! temporary directory, and is killed when dropped. Because a test binary's
//! statics are never dropped, a small `sh` watchdog also kills the server as
//! soon as the test process is gone, so no run leaves servers behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A `redis-server` process owned by the test.
#[derive(Debug)]
pub struct TestRedis {
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    server: Option<Child>,
    watchdog: Option<Child>,
}

impl TestRedis {
    /// Start a server without persistence.
    pub fn start() -> Self {
        Self::start_with(Persistence::None)
    }

    /// Start a server with the given persistence. Panics with a clear message
    /// when `redis-server` is not installed.
    pub fn start_with(persistence: Persistence) -> Self {
        let dir = tempfile::Builder::new().prefix("quern-test-redis-").tempdir().expect("create a temp dir");
        let mut redis = Self { port: free_port(), dir, persistence, server: None, watchdog: None };
        let mut last_error = String::new();
        // A free port can be taken between probing and binding; try a few.
        for _ in 0..10 {
            match redis.spawn() {
                Ok(()) => return redis,
                Err(e) if e.contains("not installed") => panic!("{e}"),
                Err(e) => last_error = e,
            }
            redis.port = free_port();
        }
        panic!("could not start a throwaway redis-server: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--save".into(),
            String::new(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--logfile".into(),
            self.log_path().display().to_string(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ];
        match self.persistence {
            Persistence::None => args.extend(["--appendonly".into(), "no".into()]),
            Persistence::AofAlways | Persistence::AofEverySec => {
                let fsync = if self.persistence == Persistence::AofAlways { "always" } else { "everysec" };
                args.extend(["--appendonly".into(), "yes".into(), "--appendfsync".into(), fsync.into()]);
            }
        }
        let server = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    "redis-server is not installed (on Debian: apt-get install redis-server), \
                     or set QUERN_TEST_REDIS_URL to a Redis the tests may use"
                        .to_owned()
                } else {
                    format!("cannot run redis-server: {e}")
                }
            })?;
        let server_pid = server.id();
        self.server = Some(server);
        // Kill the server when the test process dies, whatever way it dies.
        let script = format!(
            "while kill -0 {test} 2>/dev/null && kill -0 {server} 2>/dev/null; do sleep 0.5; done; \
             kill -9 {server} 2>/dev/null",
            test = std::process::id(),
            server = server_pid
        );
        self.watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.addr()) {
                return Ok(());
            }
            if let Some(server) = self.server.as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                self.stop_processes();
                return Err(format!("redis-server exited ({status}); log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_processes();
        Err(format!("redis-server on port {} did not answer PING within 10 s", self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.server.as_mut().map(|s| s.try_wait()), Some(Ok(None)))
    }

    /// `kill -9` the server (no shutdown save; the AOF keeps what was fsynced).
    pub fn kill(&mut self) {
        self.stop_processes();
    }

    /// Start the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.stop_processes();
        let mut last = String::new();
        // The old socket may linger for a moment; retry while the port is busy.
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}: {last}", self.port);
    }

    fn stop_processes(&mut self) {
        for child in [self.server.take(), self.watchdog.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    listener.local_addr().expect("probe address").port()
}

/// Whether something at `addr` answers a Redis PING.
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
