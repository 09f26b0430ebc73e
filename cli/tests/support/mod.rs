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
    fn from(out: Output) -> Self {
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

/// A `quern` command pointed at `config`'s Redis and prefix.
pub fn quern(config: &RedisConfig) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quern"));
    cmd.env("REDIS_URL", &config.url).env("QUERN_PREFIX", &config.prefix).env_remove("RUST_LOG");
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
