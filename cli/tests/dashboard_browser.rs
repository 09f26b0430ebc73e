//! The dashboard in a real browser (headless Chromium, Debian's package):
//! log in, see the queue, open a dead-lettered job, retry it and see it
//! complete; a read-only dashboard shows no actions and refuses a forged
//! one. Screenshots go to `target/dashboard-screenshots/`. Without Chromium
//! the test says so and passes, except under CI (`CI` set), where it fails.

mod support;

use std::time::Duration;

use quern_tests::config;
use support::browser::{Browser, chromium, screenshot_dir};
use support::dashboard::{Dashboard, TOKEN};
use support::{WorkerProcess, json, run, wait_finished};

/// Open the dashboard, get sent to its login page (saved as `shot`, if
/// given), and log in as `name`.
fn log_in(b: &mut Browser, d: &Dashboard, name: &str, shot: Option<&str>) {
    b.open(&format!("{}/", d.url()));
    assert_eq!(b.eval("location.pathname"), Some(serde_json::json!("/login")), "sent to the login page");
    if let Some(shot) = shot {
        b.screenshot(&screenshot_dir(), shot);
    }
    b.act(&format!(
        "document.querySelector('#token').value = '{TOKEN}'; document.querySelector('#name').value = '{name}'; \
         document.querySelector('form.login').submit()"
    ));
}

#[test]
fn in_a_browser_an_operator_retries_a_dead_lettered_job_and_sees_it_complete() {
    let Some(bin) = chromium() else { return };
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let shots = screenshot_dir();

    // A job that fails until a file exists: dead-lettered at its one attempt.
    let _worker = WorkerProcess::start(&cfg, "browser", &[]);
    let payload = serde_json::json!({ "argv": ["test", "-e", flag] }).to_string();
    let id = run(&cfg, &["enqueue", "browser", "command", "--payload", &payload, "--attempts", "1"]).ok();
    let id = id.trim();
    assert_eq!(wait_finished(&cfg, "browser", id)["state"], "failed");

    let d = Dashboard::start(&cfg, &[]);
    let mut b = Browser::start(&bin);
    log_in(&mut b, &d, "Ada", Some("01-login"));
    b.wait_for("document.querySelector('tr[data-queue=\"browser\"]')");
    b.screenshot(&shots, "02-overview");

    b.act("document.querySelector('tr[data-queue=\"browser\"] a').click()");
    b.act("[...document.querySelectorAll('.tabs a')].find(a => a.href.includes('state=failed')).click()");
    b.wait_for(&format!("document.querySelector('#jobs').innerText.includes('{id}')"));
    assert_eq!(
        b.eval("document.querySelectorAll('#workers tbody tr').length"),
        Some(serde_json::json!(1)),
        "the worker is listed"
    );
    b.screenshot(&shots, "03-dead-letter-list");

    b.act("document.querySelector('#jobs a').click()");
    b.wait_for("document.querySelector('#state').textContent === 'failed'");
    b.screenshot(&shots, "04-job-dead-lettered");

    // Retry through the page's button (its dialog accepted).
    std::fs::write(&flag, "").unwrap();
    b.act("window.confirm = () => true; document.querySelector('button[data-action=\"Retry\"]').click()");
    b.wait_for("document.querySelector('.notice')");
    // The page refreshes itself while the job waits or runs.
    b.wait_for(
        "document.querySelector('#state') && document.querySelector('#state').textContent === 'completed'",
    );
    b.screenshot(&shots, "05-job-completed");
    assert_eq!(wait_finished(&cfg, "browser", id)["state"], "completed");
    let events = run(&cfg, &["events", "browser", "--json"]).ok();
    let by_ada =
        events.lines().map(json).any(|e| e["event"] == "operator" && e["actor"] == "Ada" && e["id"] == id);
    assert!(by_ada, "the retry is recorded with who did it: {events}");
}

#[test]
fn in_a_browser_a_read_only_dashboard_shows_no_action_and_refuses_a_forged_one() {
    let Some(bin) = chromium() else { return };
    let cfg = config();
    let shots = screenshot_dir();
    let id = run(&cfg, &["enqueue", "browser-ro", "report"]).ok().trim().to_owned();
    run(&cfg, &["cancel", "browser-ro", &id, "--reason", "stopped for the test"]).ok();

    let d = Dashboard::start(&cfg, &["--read-only"]);
    let mut b = Browser::start(&bin);
    log_in(&mut b, &d, "Grace", None);
    b.open(&format!("{}/queues/browser-ro/jobs/{id}", d.url()));
    b.wait_for("document.querySelector('#state').textContent === 'failed'");
    assert_eq!(b.eval("document.querySelectorAll('button[data-action]').length"), Some(serde_json::json!(0)));
    b.screenshot(&shots, "06-read-only-job");
    let status = b.eval(&format!(
        "fetch('/queues/browser-ro/actions', {{ method: 'POST', body: new URLSearchParams({{ action: 'retry', id: '{id}', \
         confirm: 'yes', csrf: document.querySelector('input[name=csrf]').value }}) }}).then(r => r.status)"
    ));
    assert_eq!(status, Some(serde_json::json!(403)));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(json(&run(&cfg, &["job", "browser-ro", &id, "--json"]).ok())["state"], "failed");
}
