//! The quern dashboard: a web window on every queue and schedule under a key
//! prefix, with the operator's actions, as an axum [`Router`] that
//! `quern dashboard` serves and that a team can mount in its own app.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quern_dashboard::{DashboardConfig, router};
//! let redis = quern_common::RedisConfig::new("redis://127.0.0.1:6379");
//! let config = DashboardConfig::new(redis, "a long random token")?.mounted_at("/ops/quern")?;
//! let app = axum::Router::new().nest("/ops/quern", router(config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9700").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! `GET /api/queues` gives what the overview shows of each queue as JSON.
//!
//! Pages are rendered on the server (every value escaped), with a small
//! embedded stylesheet and script (no CDN: it works offline). They work
//! without JavaScript; with it, the overview and queue pages refresh
//! themselves every few seconds and actions ask for confirmation in a
//! dialog instead of a confirmation page.
//!
//! Security: every page but the login page and the assets needs the token,
//! as `Authorization: Bearer <token>` or through the login page, which sets
//! a session cookie (`HttpOnly`, `SameSite=Strict`; sessions live in this
//! process, for 12 hours). Actions are POSTs that must carry the session's
//! anti-forgery field (bearer requests need none: browsers never add that
//! header by themselves) and must not come from another site (`Origin` and
//! `Sec-Fetch-Site` are checked). A read-only dashboard refuses every action.
//! Each action is recorded in the queue's events stream with who did it
//! ([`quern_common::EventKind::Operator`]): the name given at login, or the
//! `X-Quern-Actor` header of a bearer request.
#![forbid(unsafe_code)]

mod actions;
mod auth;
mod html;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use quern_common::{RedisConfig, SelfHealingConnection};

/// What the dashboard serves, and to whom.
#[derive(Clone)]
pub struct DashboardConfig {
    redis: RedisConfig,
    token: String,
    read_only: bool,
    base: String,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("prefix", &self.redis.prefix)
            .field("read_only", &self.read_only)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A dashboard setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl DashboardConfig {
    /// The queues of `redis` (its prefix), opened to holders of `token`.
    /// Fails on an empty token or one with characters a header cannot carry.
    pub fn new(redis: RedisConfig, token: impl Into<String>) -> Result<Self, ConfigError> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(ConfigError("the dashboard token is empty".into()));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError("the dashboard token may only hold printable ASCII, no spaces".into()));
        }
        Ok(Self { redis, token, read_only: false, base: String::new() })
    }

    /// Show everything but refuse every action.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The path the router is nested under (e.g. `/ops/quern`), so its links
    /// and its cookie point there. Default: the root.
    pub fn mounted_at(mut self, path: &str) -> Result<Self, ConfigError> {
        let path = path.trim_end_matches('/');
        if !path.is_empty()
            && (!path.starts_with('/')
                || !path.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c)))
        {
            return Err(ConfigError(format!(
                "mount path {path:?} must start with / and hold only letters, digits, / - _ ."
            )));
        }
        self.base = path.to_owned();
        Ok(self)
    }
}

/// The dashboard's shared state.
pub(crate) struct App {
    config: DashboardConfig,
    conn: tokio::sync::Mutex<Option<SelfHealingConnection>>,
    sessions: std::sync::Mutex<HashMap<String, auth::Session>>,
}

impl App {
    /// The connection, opened on the first request that finds Redis up,
    /// then kept (it reconnects by itself).
    async fn connection(&self) -> quern_common::Result<SelfHealingConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let fresh = self.config.redis.connect().await?;
        *conn = Some(fresh.clone());
        Ok(fresh)
    }

    fn base(&self) -> &str {
        &self.config.base
    }
}

/// The dashboard as a router; nest it at the path given to
/// [`DashboardConfig::mounted_at`] (or serve it at the root).
pub fn router(config: DashboardConfig) -> Router {
    let app = Arc::new(App {
        config,
        conn: tokio::sync::Mutex::new(None),
        sessions: std::sync::Mutex::new(HashMap::new()),
    });
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/schedules", get(pages::schedules))
        .route("/api/queues", get(pages::api_queues))
        .route("/find", get(pages::find))
        .route("/queues/{queue}", get(pages::queue))
        .route("/queues/{queue}/jobs/{id}", get(pages::job))
        .route("/queues/{queue}/actions", post(actions::queue_action))
        .route("/schedules/{name}/acknowledge", post(actions::acknowledge))
        .route("/logout", post(auth::logout))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth::require));
    Router::new()
        .merge(protected)
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/assets/app.css", get(html::css))
        .route("/assets/app.js", get(html::js))
        .with_state(app)
}
