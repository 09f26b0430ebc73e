//! `quern dashboard`: the web dashboard (the `quern-dashboard` router) on
//! an address of its own.

use std::net::SocketAddr;

use quern_common::RedisConfig;
use quern_dashboard::{DashboardConfig, router};
use rand::Rng;

use crate::error::{CliError, CliResult};

/// Options of `quern dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Address to serve the dashboard on.
    #[arg(long, env = "QUERN_DASHBOARD_LISTEN", default_value = "127.0.0.1:9700")]
    listen: SocketAddr,
    /// The token that opens the dashboard (as `Authorization: Bearer` or on
    /// its login page). Without one, a loopback address gets a random token,
    /// printed at start; any other address is refused.
    #[arg(long, env = "QUERN_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Show everything, refuse every action.
    #[arg(long, env = "QUERN_DASHBOARD_READ_ONLY")]
    read_only: bool,
}

/// `quern dashboard`.
pub(crate) async fn run(config: &RedisConfig, args: DashboardArgs) -> CliResult {
    quern_common::names::validate_prefix(&config.prefix)?;
    let (token, generated) = match args.token.filter(|t| !t.is_empty()) {
        Some(t) => (t, false),
        None if args.listen.ip().is_loopback() => {
            let bytes: [u8; 16] = rand::rng().random();
            (bytes.iter().map(|b| format!("{b:02x}")).collect(), true)
        }
        None => {
            return Err(CliError::Usage(format!(
                "refusing to serve the dashboard on {} without a token: anyone who can reach it could act on \
                 your queues; give --token (or QUERN_DASHBOARD_TOKEN), or listen on a loopback address",
                args.listen
            )));
        }
    };
    let dashboard = DashboardConfig::new(config.clone(), token.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?
        .read_only(args.read_only);
    let mut signals = quern_common::process::ShutdownSignals::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    outln!(
        "serving the dashboard of prefix {:?} on http://{bound}/{}",
        config.prefix,
        if args.read_only { " (read-only)" } else { "" }
    );
    if generated {
        outln!("log in with this token (made for this run; give --token to choose one): {token}");
    }
    axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(async move {
            signals.recv().await;
        })
        .await
        .map_err(|e| CliError::Failed(format!("serving the dashboard failed: {e}")))
}
