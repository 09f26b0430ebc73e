//! `quern dashboard` over HTTP: who may look (token as bearer or through the
//! login page's cookie), who may act (same site, the form's anti-forgery
//! field, not read-only), what the pages show (escaped), and what the actions
//! do and record.

mod support;

use quern_tests::config;
use support::dashboard::{Dashboard, TOKEN, csrf_of, form_value};
use support::{json, run};

/// Enqueue a job and move it to the dead-letter list (a cancel does); returns its id.
fn dead_lettered(cfg: &quern_tests::RedisConfig, queue: &str, name: &str) -> String {
    let id = run(cfg, &["enqueue", queue, name]).ok().trim().to_owned();
    run(cfg, &["cancel", queue, &id, "--reason", "for the test"]).ok();
    id
}

fn state_of(cfg: &quern_tests::RedisConfig, queue: &str, id: &str) -> String {
    json(&run(cfg, &["job", queue, id, "--json"]).ok())["state"].as_str().unwrap().to_owned()
}

#[test]
fn requests_without_the_token_are_refused_and_browsers_sent_to_log_in() {
    let cfg = config();
    let d = Dashboard::start(&cfg, &[]);
    let r = d.send("GET", "/", &[], "");
    assert_eq!(r.status, 401, "{r:?}");
    let r = d.send("GET", "/queues/x", &[("Authorization", "Bearer wrong-token")], "");
    assert_eq!(r.status, 401);
    let r = d.send("POST", "/queues/x/actions", &[], "action=pause&confirm=yes");
    assert_eq!(r.status, 401);
    let r = d.send("GET", "/queues/x?state=failed", &[("Accept", "text/html")], "");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=%2Fqueues%2Fx%3Fstate%3Dfailed"));
    let login = d.send("GET", "/login", &[], "");
    assert_eq!(login.status, 200);
    assert!(login.body.contains("name=\"token\""), "{}", login.body);
    assert_eq!(d.send("GET", "/assets/app.css", &[], "").status, 200, "assets need no token");
}

#[test]
fn the_bearer_token_opens_every_page() {
    let cfg = config();
    let id = run(&cfg, &["enqueue", "mail", "welcome", "--payload", r#"{"to":"a@example.com"}"#])
        .ok()
        .trim()
        .to_owned();
    let d = Dashboard::start(&cfg, &[]);
    let home = d.get("/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("data-queue=\"mail\""), "{}", home.body);
    assert!(home.body.contains("waiting and no live worker"), "a flag needs a human: {}", home.body);
    let q = d.get("/queues/mail");
    assert_eq!(q.status, 200);
    assert!(q.body.contains(&id), "{}", q.body);
    let job = d.get(&format!("/queues/mail/jobs/{id}"));
    assert_eq!(job.status, 200);
    assert!(job.body.contains("a@example.com"), "{}", job.body);
    let found = d.get(&format!("/find?id={id}"));
    assert_eq!(found.status, 303);
    assert_eq!(found.header("location"), Some(format!("/queues/mail/jobs/{id}").as_str()));
    assert_eq!(d.get("/queues/mail/jobs/no-such-job").status, 404);
    assert_eq!(d.get("/schedules").status, 200);
    let api = d.get("/api/queues");
    assert_eq!(api.status, 200);
    let queues = json(&api.body);
    let mail = queues.as_array().unwrap().iter().find(|q| q["queue"] == "mail").expect("queue mail listed");
    assert_eq!(mail["counts"]["waiting"], 1, "{mail}");
    assert_eq!(mail["workers"], 0);
    assert!(mail["oldest_waiting_ms"].as_u64().is_some(), "{mail}");
    assert_eq!(d.send("GET", "/api/queues", &[], "").status, 401);
    assert_eq!(d.get("/queues/mail?state=nonsense").status, 400);
}

#[test]
fn logging_in_sets_a_strict_http_only_cookie_that_opens_pages_and_lets_the_form_act() {
    let cfg = config();
    let id = dead_lettered(&cfg, "repairs", "fix");
    let d = Dashboard::start(&cfg, &[]);

    let wrong = d.send("POST", "/login", &[], "token=nope&name=mallory");
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());

    let next = form_value(&format!("/queues/repairs/jobs/{id}"));
    let ok = d.send("POST", "/login", &[], &format!("token={TOKEN}&name=Ada&next={next}"));
    assert_eq!(ok.status, 303, "{ok:?}");
    assert_eq!(ok.header("location"), Some(format!("/queues/repairs/jobs/{id}").as_str()));
    let set = ok.header("set-cookie").expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let cookie = [("Cookie", cookie.as_str())];

    let page = d.send("GET", &format!("/queues/repairs/jobs/{id}"), &cookie, "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Ada"), "the page says who is logged in");
    let csrf = csrf_of(&page.body);

    // Without the form's field, or from another site: refused.
    let form = format!("action=retry&id={id}&confirm=yes");
    assert_eq!(d.send("POST", "/queues/repairs/actions", &cookie, &form).status, 403);
    let with_csrf = format!("{form}&csrf={csrf}");
    let evil = [cookie[0], ("Origin", "http://evil.example")];
    assert_eq!(d.send("POST", "/queues/repairs/actions", &evil, &with_csrf).status, 403);
    let cross = [cookie[0], ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(d.send("POST", "/queues/repairs/actions", &cross, &with_csrf).status, 403);
    assert_eq!(state_of(&cfg, "repairs", &id), "failed", "nothing was done");

    // Unconfirmed: a confirmation page; confirmed: done, and recorded with the actor.
    let ask =
        d.send("POST", "/queues/repairs/actions", &cookie, &format!("action=retry&id={id}&csrf={csrf}"));
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("name=\"confirm\" value=\"yes\""), "{}", ask.body);
    assert_eq!(state_of(&cfg, "repairs", &id), "failed");
    let origin = format!("http://127.0.0.1:{}", d.port);
    let same = [cookie[0], ("Origin", origin.as_str())];
    let done = d.send("POST", "/queues/repairs/actions", &same, &with_csrf);
    assert_eq!(done.status, 303, "{done:?}");
    assert_eq!(state_of(&cfg, "repairs", &id), "waiting");
    let events = run(&cfg, &["events", "repairs", "--json"]).ok();
    let operator = events
        .lines()
        .map(json)
        .find(|e| e["event"] == "operator")
        .unwrap_or_else(|| panic!("no operator event in {events}"));
    assert_eq!(operator["actor"], "Ada", "{operator}");
    assert_eq!(operator["action"], "retry", "{operator}");
    assert_eq!(operator["id"], id.as_str(), "{operator}");

    // Logged out: the cookie opens nothing any more.
    assert_eq!(d.send("POST", "/logout", &cookie, &format!("csrf={csrf}")).status, 303);
    assert_eq!(d.send("GET", "/", &cookie, "").status, 401);
}

#[test]
fn actions_through_the_bearer_token_retry_purge_pause_and_filter_by_name() {
    let cfg = config();
    let a = dead_lettered(&cfg, "ops", "report");
    let b = dead_lettered(&cfg, "ops", "report");
    let c = dead_lettered(&cfg, "ops", "cleanup");
    let d = Dashboard::start(&cfg, &[]);
    let r = d.post("/queues/ops/actions", "action=retry_all&filter=report&confirm=yes", "cron-bot");
    assert_eq!(r.status, 303, "{r:?}");
    assert!(r.header("location").unwrap().contains("2%20dead-lettered"), "{r:?}");
    assert_eq!(state_of(&cfg, "ops", &a), "waiting");
    assert_eq!(state_of(&cfg, "ops", &b), "waiting");
    assert_eq!(state_of(&cfg, "ops", &c), "failed", "another name: untouched");
    assert_eq!(d.post("/queues/ops/actions", &format!("action=purge&id={c}&confirm=yes"), "x").status, 303);
    assert_eq!(run(&cfg, &["job", "ops", &c]).code, 3, "purged");
    assert_eq!(d.post("/queues/ops/actions", "action=pause&confirm=yes", "x").status, 303);
    assert!(d.get("/queues/ops").body.contains("paused"));
    assert_eq!(d.post("/queues/ops/actions", "action=explode&confirm=yes", "x").status, 400);
    assert_eq!(d.post("/queues/ops/actions", "action=retry&confirm=yes", "x").status, 400, "no id");
    assert_eq!(d.post("/queues/ops/actions", "action=retry&id=nope&confirm=yes", "x").status, 404);
}

#[test]
fn a_read_only_dashboard_shows_but_refuses_every_action() {
    let cfg = config();
    let id = dead_lettered(&cfg, "ro", "job");
    let d = Dashboard::start(&cfg, &["--read-only"]);
    let page = d.get(&format!("/queues/ro/jobs/{id}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("data-action"), "no action buttons: {}", page.body);
    let r = d.post("/queues/ro/actions", &format!("action=retry&id={id}&confirm=yes"), "x");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("read-only"), "{}", r.body);
    assert_eq!(state_of(&cfg, "ro", &id), "failed");
}

#[test]
fn payloads_names_and_errors_are_shown_escaped() {
    let cfg = config();
    let evil = "<script>alert(1)</script>";
    let payload = serde_json::json!({ "html": evil }).to_string();
    let id = run(&cfg, &["enqueue", "xss", evil, "--payload", &payload]).ok().trim().to_owned();
    run(&cfg, &["cancel", "xss", &id, "--reason", evil]).ok();
    let d = Dashboard::start(&cfg, &[]);
    for path in [format!("/queues/xss/jobs/{id}"), "/queues/xss?state=failed".to_owned()] {
        let page = d.get(&path);
        assert_eq!(page.status, 200);
        assert!(!page.body.contains(evil), "raw markup on {path}: {}", page.body);
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.body);
    }
}

#[test]
fn a_non_loopback_address_without_a_token_refuses_to_start() {
    let cfg = config();
    let out = support::quern(&cfg)
        .args(["dashboard", "--listen", "0.0.0.0:0"])
        .env_remove("QUERN_DASHBOARD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a token"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_shows_its_keys_and_its_step_timeline() {
    use quern_common::{JobOptions, JobState};
    use quern_producer::Queue;
    use quern_tests::workers::{RunningWorker, wait_for_state};
    use quern_worker::{JobContext, JobError, Worker};
    use std::time::Duration;

    let cfg = config();
    let q = Queue::connect(&cfg, "dash-steps").await.unwrap();
    let w = RunningWorker::start(Worker::builder(&cfg, "dash-steps").handler(
        "order",
        |ctx: JobContext, _: ()| async move {
            ctx.step("reserve", || async { Ok(41) }).await?;
            ctx.step("charge", || async { Err::<u32, _>(JobError::permanent("card <declined>")) }).await?;
            Ok::<(), JobError>(())
        },
    ))
    .await;
    let opts =
        JobOptions::new().concurrency_key("merchant-7").idempotency_key("order-7", Duration::from_secs(3600));
    let id = q.add_with("order", &(), opts).await.unwrap().id;
    wait_for_state(&q, &id, JobState::Failed, Duration::from_secs(10)).await;
    w.stop().await;

    let d = Dashboard::start(&cfg, &[]);
    let page = d.get(&format!("/queues/dash-steps/jobs/{id}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("merchant-7") && page.body.contains("order-7"), "keys shown: {}", page.body);
    let steps = &page.body[page.body.find("id=\"steps\"").expect("a step table")..];
    let reserve = steps.find("reserve#1").expect("the first step");
    let charge = steps.find("charge#1").expect("the second step");
    assert!(reserve < charge, "in the order they were stored");
    assert!(steps.contains("card &lt;declined&gt;"), "the failed step's error, escaped: {steps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_shows_its_flow_escaped_and_at_most_a_hundred_children() {
    use quern_common::{JobOptions, NewJob, OnChildFailure};
    use quern_producer::{FlowJob, Queue};

    let cfg = config();
    let job =
        |id: &str| FlowJob::new(NewJob::new("part", &()).unwrap().options(JobOptions::new().job_id(id)));
    let evil_id = "<i>kid\"1\"</i>";
    let kids = (0..150).map(|n| job(&format!("part-{n}"))).chain([job(evil_id)]);
    let flow = job("report-1")
        .children(OnChildFailure::Continue, kids)
        .child(OnChildFailure::FailParent, job("scan-1").in_queue("dash-scans"));
    let q = Queue::connect(&cfg, "dash-flow").await.unwrap();
    q.add_flow(flow).await.unwrap();
    q.cancel("part-0", "<script>alert(1)</script>").await.unwrap();

    let d = Dashboard::start(&cfg, &[]);
    let page = d.get("/queues/dash-flow/jobs/report-1");
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(!body.contains("<script>alert") && !body.contains(evil_id), "raw markup: {body}");
    let count = &body[body.find("id=\"children-count\"").expect("the children's count")..];
    assert!(count.starts_with("id=\"children-count\">152 children: 151 pending, 1 failed<"), "{count}");
    let table = &body[body.find("id=\"children\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr>").count(), 1 + 100, "a header and 100 children: {table}");
    assert!(table.contains("cancelled: &lt;script&gt;alert(1)&lt;/script&gt;"), "{table}");
    assert!(table.contains("href=\"/queues/dash-flow/jobs/part-0\""), "{table}");
    assert!(body.contains("and 52 more children"), "{body}");
    assert!(!table.contains("scan-1"), "the 152nd child is counted, not listed");

    // The children listed past the 100th are on their own pages, which show the parent.
    let kid = d.get(&format!("/queues/dash-flow/jobs/{}", support::dashboard::form_value(evil_id)));
    assert_eq!(kid.status, 200);
    assert!(kid.body.contains("&lt;i&gt;kid&quot;1&quot;&lt;/i&gt;") && !kid.body.contains(evil_id));
    let scan = d.get("/queues/dash-scans/jobs/scan-1");
    assert_eq!(scan.status, 200);
    let parent = &scan.body[scan.body.find("id=\"parent\"").expect("a parent table")..];
    assert!(parent.contains("href=\"/queues/dash-flow/jobs/report-1\""), "{parent}");
    assert!(parent.contains("<td>waiting-children</td><td>fail_parent</td>"), "{parent}");
    assert!(!scan.body.contains("id=\"children\""), "a child without children has no such table");

    // A parent gone (as when trimmed after it ended): its child's page says so.
    let parent_key = quern_common::QueueKeys::new(&cfg.prefix, "dash-flow").unwrap().job("report-1");
    let _: i64 = redis::cmd("DEL")
        .arg(parent_key)
        .query_async(&mut quern_tests::raw_connection(&cfg).await)
        .await
        .unwrap();
    let scan = d.get("/queues/dash-scans/jobs/scan-1");
    assert!(scan.body.contains("gone (removed"), "{}", scan.body);
}
