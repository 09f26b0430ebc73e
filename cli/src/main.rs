//! `quern`: run workers and the scheduler, enqueue, inspect and repair queues,
//! benchmark, and see it all work in `quern demo`.
#![forbid(unsafe_code)]

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quern_common::RedisConfig;

/// quern: a durable, Redis-backed job queue.
#[derive(Debug, Parser)]
#[command(name = "quern", version, about, long_about = None)]
struct Cli {
    /// Redis to use, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, global = true, env = "REDIS_URL", default_value = quern_common::connection::DEFAULT_REDIS_URL)]
    redis_url: String,

    /// Key prefix: queues under different prefixes never see each other.
    #[arg(long, global = true, env = "QUERN_PREFIX", default_value = quern_common::keys::DEFAULT_PREFIX)]
    prefix: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure quern on the shared benchmark protocol (one JSON line per scenario on stdout).
    Bench(bench::BenchArgs),
}

impl Cli {
    fn redis_config(&self) -> RedisConfig {
        RedisConfig::new(&self.redis_url).prefix(&self.prefix)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let config = cli.redis_config();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Bench(args) => bench::run(&config, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
