//! An axum web service that enqueues jobs: `POST /signups` answers `202
//! Accepted` with the id of the `welcome` job it enqueued, and `GET /jobs/{id}`
//! tells whether that job ran, when, and how it went.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 LISTEN=127.0.0.1:3000 cargo run -p quern-examples --bin quern-example-web
//! curl -si -X POST localhost:3000/signups -H 'content-type: application/json' \
//!      -d '{"email":"ada@example.com","name":"Ada"}'
//! curl -s localhost:3000/jobs/<id>
//! ```
#![forbid(unsafe_code)]

use quern_examples::web::app;
use quern_examples::{EMAILS_QUEUE, init_logging};
use quern_producer::{Queue, RedisConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:3000".into());
    let queue = Queue::connect(&RedisConfig::from_env(), EMAILS_QUEUE).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "web producer listening");
    axum::serve(listener, app(queue))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
