//! Headless Chromium driven over the DevTools protocol: a minimal websocket
//! client (text frames, no extensions) on blocking sockets, enough to
//! navigate, run JavaScript in the page and take screenshots.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Chromium binary: `CHROMIUM`, else `chromium` on PATH. `None` when
/// missing and not under CI (`CI` set), where a missing browser fails.
pub fn chromium() -> Option<PathBuf> {
    let bin = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "chromium".into());
    let found = Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match found {
        Ok(s) if s.success() => Some(bin),
        _ if std::env::var_os("CI").is_some() => {
            panic!("chromium is required under CI (Debian package chromium)")
        }
        _ => {
            eprintln!("chromium not found: browser test not run (./run tests installs it)");
            None
        }
    }
}

/// Where screenshots go: `target/dashboard-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: TcpStream,
    next_id: u64,
}

impl Browser {
    /// Start `bin` headless and connect to its first page.
    pub fn start(bin: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it picked into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(p) =
                std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next()?.parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not open its debugging port");
            std::thread::sleep(Duration::from_millis(100));
        };
        let page_path = loop {
            let list = http_get(port, "/json/list");
            let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            let page = targets.as_array().and_then(|t| t.iter().find(|t| t["type"] == "page"));
            if let Some(url) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                break url.split_once(&format!(":{port}")).unwrap().1.to_owned();
            }
            assert!(Instant::now() < deadline, "chromium has no page: {list}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let ws = websocket(port, &page_path);
        let mut b = Browser { child, _profile: profile, ws, next_id: 0 };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Send a DevTools command and wait for its answer (events in between
    /// are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        send_text(&mut self.ws, &json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let msg: Value = serde_json::from_str(&read_text(&mut self.ws)).unwrap();
            if msg["id"] == id {
                if let Some(e) = msg.get("error") {
                    panic!("{method} failed: {e}");
                }
                return msg["result"].clone();
            }
        }
    }

    /// Open `url` and wait until the page (or where it redirects) loaded.
    pub fn open(&mut self, url: &str) {
        self.mark();
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("!window.__quernOld");
    }

    /// Run JavaScript `js` that leaves the page (a click on a link, a form
    /// submitted) and wait until the next page loaded.
    pub fn act(&mut self, js: &str) {
        self.mark();
        let r = self.call("Runtime.evaluate", json!({ "expression": js }));
        assert!(r.get("exceptionDetails").is_none(), "{js} threw: {r}");
        self.wait_for("!window.__quernOld");
    }

    /// Mark the current document, to tell when another one replaced it.
    fn mark(&mut self) {
        self.eval("window.__quernOld = true");
    }

    /// The value of JavaScript `expr` in the page (promises awaited);
    /// `None` while the page is changing or when it throws.
    pub fn eval(&mut self, expr: &str) -> Option<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if r.get("exceptionDetails").is_some() {
            return None;
        }
        r["result"].get("value").cloned()
    }

    /// Wait (at most 20 s) until JavaScript `cond` is true in a loaded page.
    pub fn wait_for(&mut self, cond: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let expr = format!("document.readyState === 'complete' && !!({cond})");
        loop {
            if self.eval(&expr) == Some(Value::Bool(true)) {
                return;
            }
            if Instant::now() > deadline {
                let at = self.eval("location.href + '\\n' + document.body.innerText.slice(0, 2000)");
                panic!("timed out waiting for {cond}; page: {at:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Save a PNG screenshot of the page as `dir/name.png`.
    pub fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from Chromium's debugging server, which keeps connections
/// open: the body is read by its length.
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn websocket(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromium");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: cXVlcm4tZGFzaGJvYXJkLQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "websocket upgrade refused: {status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    // Nothing else was sent yet, so the reader holds no frame bytes.
    s
}

/// Send one masked text frame (clients must mask).
fn send_text(s: &mut TcpStream, text: &str) {
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x5a, 0x13, 0xc7, 0x2e];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// Read one text message (joining continuation frames; answering pings).
fn read_text(s: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).expect("read a websocket frame");
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        match opcode {
            0x8 => panic!("chromium closed the websocket"),
            0x9 => {
                // Ping: answer with a masked pong carrying the same data.
                let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                s.write_all(&pong).unwrap();
                continue;
            }
            0xA => continue,
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return String::from_utf8(message).expect("a text message");
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
