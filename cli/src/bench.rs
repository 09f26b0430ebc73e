//! `quern bench`: the scenarios of the shared benchmark protocol.

use quern_common::{RedisConfig, Result};

/// Options of `quern bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Jobs per scenario.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) jobs: usize,
    /// Producers in flight (enqueue_single) and worker slots (drain, latency).
    #[arg(long, default_value_t = 50)]
    pub(crate) concurrency: usize,
}

/// Run the scenarios (under construction).
pub(crate) async fn run(_config: &RedisConfig, _args: BenchArgs) -> Result<()> {
    Err(quern_common::Error::InvalidOptions("quern bench is not built yet".into()))
}
