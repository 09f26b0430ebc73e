//! Who may look and act: the token (bearer header or login), sessions, and
//! the checks that keep other sites from acting through a logged-in browser.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, REFERER, SET_COOKIE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;

use crate::App;
use crate::html::{Frame, esc};

/// The session cookie's name.
const COOKIE_NAME: &str = "quern_session";
/// How long a login holds.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The actor recorded for bearer requests without `X-Quern-Actor`.
const BEARER_ACTOR: &str = "api (bearer token)";

/// A logged-in browser.
pub(crate) struct Session {
    actor: String,
    csrf: String,
    expires: Instant,
}

/// Who makes this request, as the pages and actions see it.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    pub(crate) actor: String,
    /// The session's anti-forgery value; `None` for a bearer request.
    pub(crate) csrf: Option<String>,
}

fn random_hex() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE_NAME).then(|| v.to_owned())
        },
    )
}

/// A name to record as the actor: printable, short.
fn clean_actor(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    name.trim().to_owned()
}

impl App {
    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        if let Some(auth) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let token = auth.strip_prefix("Bearer ")?;
            if !same(token.trim(), &self.config.token) {
                return None;
            }
            let actor = headers
                .get("x-quern-actor")
                .and_then(|v| v.to_str().ok())
                .map(clean_actor)
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| BEARER_ACTOR.to_owned());
            return Some(Who { actor, csrf: None });
        }
        let id = cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        let s = sessions.get(&id)?;
        Some(Who { actor: s.actor.clone(), csrf: Some(s.csrf.clone()) })
    }
}

/// Whether a state-changing request comes from this site: `Sec-Fetch-Site`
/// (sent by current browsers) must not say another site, and `Origin` (or,
/// without it, `Referer`) must name the host the request was sent to.
pub(crate) fn same_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let from = headers.get(ORIGIN).or_else(|| headers.get(REFERER)).and_then(|v| v.to_str().ok());
    match from {
        None => true,
        Some("null") => false,
        Some(url) => {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            rest.split('/').next() == Some(host)
        }
    }
}

/// Let requests with the token through, with a [`Who`]; send browsers
/// without it to the login page, and refuse the others.
pub(crate) async fn require(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let Some(who) = app.who(req.headers()) else {
        let wants_html = req.method() == Method::GET
            && req
                .headers()
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        if wants_html {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let next = format!("{}{}", app.base(), path);
            let to = format!("{}/login?next={}", app.base(), crate::html::enc(&next));
            return (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            "the quern dashboard needs its token: Authorization: Bearer <token>, or log in at /login\n",
        )
            .into_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_site(req.headers()) {
        return (StatusCode::FORBIDDEN, "refused: this request comes from another site\n").into_response();
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// Where to go after logging in: only a path of this dashboard.
fn safe_next(app: &App, next: Option<&str>) -> String {
    let home = format!("{}/", app.base());
    match next {
        Some(n)
            if n.starts_with(&format!("{}/", app.base())) && !n.starts_with("//") && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ => home,
    }
}

fn login_form(app: &App, next: &str, error: Option<&str>) -> String {
    let frame = Frame {
        base: app.base(),
        title: "Log in",
        actor: None,
        csrf: None,
        read_only: app.config.read_only,
        live: false,
    };
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", esc(e))).unwrap_or_default();
    frame.page(&format!(
        "<form class=\"login\" method=\"post\" action=\"{}/login\"><h1>quern dashboard</h1>{error}\
         <label for=\"token\">Token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <label for=\"name\">Your name (recorded with your actions)</label><input id=\"name\" name=\"name\" autocomplete=\"username\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button class=\"act\" type=\"submit\">Log in</button></form>",
        esc(app.base()),
        esc(next)
    ))
}

pub(crate) async fn login_page(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Html<String> {
    Html(login_form(&app, &safe_next(&app, q.next.as_deref()), None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    name: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(&app, form.next.as_deref());
    if !same_site(&headers) {
        return (StatusCode::FORBIDDEN, "refused: this request comes from another site\n").into_response();
    }
    if !same(form.token.trim(), &app.config.token) {
        // A pause makes guessing slow.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return (StatusCode::UNAUTHORIZED, Html(login_form(&app, &next, Some("That token is not right."))))
            .into_response();
    }
    let actor = match clean_actor(&form.name) {
        n if n.is_empty() => "operator".to_owned(),
        n => n,
    };
    let id = random_hex();
    let session = Session { actor, csrf: random_hex(), expires: Instant::now() + SESSION_TTL };
    app.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), session);
    let path = if app.base().is_empty() { "/" } else { app.base() };
    let cookie = format!(
        "{COOKIE_NAME}={id}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    (StatusCode::SEE_OTHER, [(SET_COOKIE, cookie), (LOCATION, next)]).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    csrf: Option<String>,
}

pub(crate) async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(id) = cookie(&headers) {
        let mut sessions = app.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.get(&id).is_some_and(|s| form.csrf.as_deref().is_some_and(|c| same(c, &s.csrf))) {
            sessions.remove(&id);
        }
    }
    let path = if app.base().is_empty() { "/" } else { app.base() };
    let clear = format!("{COOKIE_NAME}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::SEE_OTHER, [(SET_COOKIE, clear), (LOCATION, format!("{}/login", app.base()))])
        .into_response()
}

/// Whether an action's anti-forgery field matches the session's (bearer
/// requests carry none and need none).
pub(crate) fn csrf_ok(who: &Who, sent: Option<&str>) -> bool {
    match &who.csrf {
        None => true,
        Some(expected) => sent.is_some_and(|s| same(s, expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn other_sites_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "127.0.0.1:9700".parse().unwrap());
        assert!(same_site(&h), "no origin: a non-browser client");
        h.insert(ORIGIN, "http://127.0.0.1:9700".parse().unwrap());
        assert!(same_site(&h));
        h.insert(ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_site(&h));
        h.insert(ORIGIN, "http://127.0.0.1:9700".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_site(&h));
    }
}
