//! Running the built `quern` binary against the test binary's Redis.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output};

use quern_tests::RedisConfig;

/// What one run of `quern` printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Assert a zero exit and return stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "quern failed: stdout={} stderr={}", self.stdout, self.stderr);
        self.stdout
    }

    /// Assert exit `code` and return stderr.
    pub fn fails_with(self, code: i32) -> String {
        assert_eq!(self.code, code, "unexpected exit: stdout={} stderr={}", self.stdout, self.stderr);
        self.stderr
    }
}

/// A `quern` command pointed at `config`'s Redis and prefix (and its TLS
/// files, through `QUERN_REDIS_CA`, `QUERN_REDIS_CERT`, `QUERN_REDIS_KEY`).
pub fn quern(config: &RedisConfig) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quern"));
    cmd.env("REDIS_URL", &config.url).env("QUERN_PREFIX", &config.prefix).env_remove("RUST_LOG");
    let tls = &config.tls;
    for (var, file) in
        [("QUERN_REDIS_CA", &tls.ca), ("QUERN_REDIS_CERT", &tls.cert), ("QUERN_REDIS_KEY", &tls.key)]
    {
        match file {
            Some(path) => cmd.env(var, path),
            None => cmd.env_remove(var),
        };
    }
    cmd
}

/// Run `quern args...` against `config` and wait for it.
pub fn run(config: &RedisConfig, args: &[&str]) -> Run {
    Run::from(quern(config).args(args).output().expect("run quern"))
}

/// Parse JSON printed by quern.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A `quern worker` process, killed when dropped.
pub struct WorkerProcess {
    child: std::process::Child,
}

impl WorkerProcess {
    /// Start `quern worker <queue>` with extra environment variables.
    pub fn start(config: &RedisConfig, queue: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = quern(config);
        cmd.args(["worker", queue, "--concurrency", "4", "--shutdown-grace", "2s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self { child: cmd.spawn().expect("start quern worker") }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `quern job --json` until the job is completed or failed; returns it.
pub fn wait_finished(config: &RedisConfig, queue: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = run(config, &["job", queue, id, "--json"]);
        if r.code == 0 {
            let job = json(&r.stdout);
            if job["state"] == "completed" || job["state"] == "failed" {
                return job;
            }
        }
        assert!(std::time::Instant::now() < deadline, "job {id} did not finish in time: {}", r.stdout);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub mod browser;
pub mod dashboard;
