//! A `quern dashboard` process and a small HTTP/1.1 client for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use quern_tests::RedisConfig;

/// The token the tests serve the dashboard with.
pub const TOKEN: &str = "test-token-0123456789";

/// A running `quern dashboard`, killed when dropped.
pub struct Dashboard {
    child: Child,
    pub port: u16,
}

impl Dashboard {
    /// Start `quern dashboard --token TOKEN` with `extra` arguments on a
    /// port the system picks.
    pub fn start(config: &RedisConfig, extra: &[&str]) -> Self {
        let mut child = super::quern(config)
            .args(["dashboard", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start quern dashboard");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        let port = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Self { child, port }
    }

    /// The dashboard's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Send a request; returns the status code, the headers (names in lower
    /// case) and the body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the dashboard");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", self.port);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response { status, headers, body: body.to_owned() }
    }

    /// GET with the bearer token.
    pub fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[("Authorization", &format!("Bearer {TOKEN}"))], "")
    }

    /// POST a form with the bearer token, as `actor`.
    pub fn post(&self, path: &str, form: &str, actor: &str) -> Response {
        self.send(
            "POST",
            path,
            &[("Authorization", &format!("Bearer {TOKEN}")), ("X-Quern-Actor", actor)],
            form,
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `text` as a form value.
pub fn form_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field on the page");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}
