//! Building pages: escaping, the layout, charts, the embedded assets.

use std::fmt::Write as _;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use quern_producer::StatsPoint;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

pub(crate) async fn css() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "max-age=300")], CSS)
}

pub(crate) async fn js() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "max-age=300")], JS)
}

/// `text` safe inside HTML text and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one URL path segment or query value (everything but the
/// unreserved characters percent-encoded).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What every page shows around its content.
pub(crate) struct Frame<'a> {
    pub(crate) base: &'a str,
    pub(crate) title: &'a str,
    /// Who is looking (none on the login page).
    pub(crate) actor: Option<&'a str>,
    /// The anti-forgery field of the session (none for bearer requests).
    pub(crate) csrf: Option<&'a str>,
    pub(crate) read_only: bool,
    /// Refresh the page's main part every few seconds (with JavaScript).
    pub(crate) live: bool,
}

impl Frame<'_> {
    pub(crate) fn page(&self, body: &str) -> String {
        let b = esc(self.base);
        let mut out = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · quern</title><link rel=\"stylesheet\" href=\"{b}/assets/app.css\">\
             <script src=\"{b}/assets/app.js\" defer></script></head><body>",
            esc(self.title)
        );
        out.push_str("<header><a class=\"brand\" href=\"");
        out.push_str(&b);
        out.push_str("/\">quern</a>");
        if let Some(actor) = self.actor {
            let _ = write!(
                out,
                "<nav><a href=\"{b}/\">Queues</a><a href=\"{b}/schedules\">Schedules</a>\
                 <form class=\"find\" method=\"get\" action=\"{b}/find\"><input name=\"id\" placeholder=\"job id\" aria-label=\"job id\">\
                 <input name=\"queue\" placeholder=\"queue\" aria-label=\"queue\"><button>Find</button></form></nav>\
                 <span class=\"who\">{}{}</span>",
                esc(actor),
                if self.read_only { " · read-only" } else { "" }
            );
            if let Some(csrf) = self.csrf {
                let _ = write!(
                    out,
                    "<form method=\"post\" action=\"{b}/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
                    esc(csrf)
                );
            }
        }
        out.push_str("</header>");
        let _ = write!(out, "<main{}>", if self.live { " data-live=\"5000\"" } else { "" });
        out.push_str(body);
        out.push_str("</main></body></html>");
        out
    }

    /// A form posting `action` with `fields`, asking for confirmation with
    /// `question`; empty in read-only mode.
    pub(crate) fn action(
        &self,
        to: &str,
        label: &str,
        question: &str,
        fields: &[(&str, &str)],
        danger: bool,
    ) -> String {
        if self.read_only {
            return String::new();
        }
        let mut out = format!(
            "<form method=\"post\" action=\"{}\" class=\"inline\" data-confirm=\"{}\">",
            esc(to),
            esc(question)
        );
        if let Some(csrf) = self.csrf {
            let _ = write!(out, "<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf));
        }
        for (k, v) in fields {
            let _ = write!(out, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
        }
        let _ = write!(
            out,
            "<button class=\"{}\" data-action=\"{}\">{}</button></form>",
            if danger { "danger" } else { "act" },
            esc(label),
            esc(label)
        );
        out
    }
}

/// Unix ms as UTC text.
pub(crate) fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A duration in ms, short.
pub(crate) fn took(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{:.1} min", ms as f64 / 60_000.0),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A bar chart of completed (and, stacked, dead-lettered) jobs per slot.
pub(crate) fn chart(title: &str, points: &[StatsPoint], slot_label: fn(u64) -> String) -> String {
    let (w, h) = (600.0, 90.0);
    let max = points.iter().map(|p| p.stats.completed() + p.stats.failed).max().unwrap_or(0).max(1) as f64;
    let bar = w / points.len().max(1) as f64;
    let total_done: u64 = points.iter().map(|p| p.stats.completed()).sum();
    let total_failed: u64 = points.iter().map(|p| p.stats.failed).sum();
    let mut out = format!(
        "<figure class=\"chart\"><figcaption>{} — {} completed, {} dead-lettered</figcaption>\
         <svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        total_done,
        total_failed,
        esc(title)
    );
    for (i, p) in points.iter().enumerate() {
        let done = p.stats.completed() as f64;
        let failed = p.stats.failed as f64;
        let x = i as f64 * bar;
        let hd = done / max * h;
        let hf = failed / max * h;
        let tip = format!(
            "{}: {} completed, {} dead-lettered, {} retried",
            slot_label(p.start_ms),
            p.stats.completed(),
            p.stats.failed,
            p.stats.retried
        );
        let _ = write!(
            out,
            "<g><title>{}</title><rect class=\"ok\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hd:.1}\"/>\
             <rect class=\"bad\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hf:.1}\"/></g>",
            esc(&tip),
            h - hd,
            (bar - 1.0).max(0.5),
            h - hd - hf,
            (bar - 1.0).max(0.5),
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(enc("ok-1_2.3~"), "ok-1_2.3~");
    }
}
