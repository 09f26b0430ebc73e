//! A worker for the two workflows of `quern_examples::workflows`: the
//! nightly settlement and the onboarding flow, written with durable steps
//! and sleeps. With `enqueue` it first adds one of each (short waits).
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p quern-examples --bin quern-example-workflows -- enqueue
//! quern job workflows <id>     # the step timeline
//! ```
#![forbid(unsafe_code)]

use quern_examples::init_logging;
use quern_examples::workflows::{Backend, Onboarding, Settlement, WORKFLOWS_QUEUE, register};
use quern_producer::Queue;
use quern_worker::{RedisConfig, Worker};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let config = RedisConfig::from_env();
    if std::env::args().nth(1).as_deref() == Some("enqueue") {
        let queue = Queue::connect(&config, WORKFLOWS_QUEUE).await?;
        let settlement = Settlement { day: "2026-03-01".into(), transactions: 250 };
        let onboarding = Onboarding {
            user: "ada".into(),
            email: "ada@example.com".into(),
            nudge_after_secs: 5,
            flag_after_secs: 5,
        };
        let s = queue.add("settlement", &settlement).await?;
        let o = queue.add("onboarding", &onboarding).await?;
        tracing::info!(settlement = s.id, onboarding = o.id, "enqueued one workflow of each kind");
    }
    let worker = register(Worker::builder(&config, WORKFLOWS_QUEUE), Backend::default()).build().await?;
    tracing::info!(worker = worker.id(), "workflow worker started");
    worker.run().await?;
    Ok(())
}
