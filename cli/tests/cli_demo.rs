//! `quern demo` end to end, shortened with --duration.

mod support;

use support::run;

fn check_demo_output(out: &str) {
    assert!(out.contains("flaky-webhook") && out.contains("#1 error, wait"), "{out}");
    assert!(out.contains("#3 panic -> in the dead-letter list"), "{out}");
    assert!(out.contains("handler panicked: poisoned input"), "{out}");
    assert!(out.contains("quern --redis-url") && out.contains("--prefix quern-demo dlq demo list"), "{out}");
    let cron = out.lines().rev().find(|l| l.starts_with("cron heartbeat")).expect("a cron line");
    let ticks: u64 =
        cron.split("every 2 s: ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(ticks >= 1, "the scheduler enqueued no tick: {cron}");
    // The workflow: the payment failed once, the retry resumed there (the
    // stock was reserved by attempt 1 only), and it slept, then finished.
    let workflow = out.lines().rev().find(|l| l.starts_with("order-workflow")).expect("a workflow line");
    assert!(
        workflow
            .contains("reserve-stock ok (#1), charge-card ok (#2), slept, send-receipt ok (#2) -> completed"),
        "{workflow}"
    );
    assert!(out.contains("steps:") && out.contains("payment gateway timed out"), "{out}");
    let summary = out.lines().find(|l| l.starts_with("summary:")).expect("a summary line");
    assert!(summary.contains("1 dead-lettered"), "{summary}");
}

#[test]
fn demo_runs_on_a_throwaway_redis() {
    let cfg = quern_tests::config();
    let out = run(&cfg, &["demo", "--duration", "4s", "--throwaway-redis"]).ok();
    assert!(out.contains("a throwaway redis-server started for this demo"), "{out}");
    check_demo_output(&out);
}

#[test]
fn demo_uses_redis_url_when_given() {
    let cfg = quern_tests::config();
    let out = run(&cfg, &["demo", "--duration", "4s"]).ok();
    assert!(out.contains(&format!("Redis at {}", cfg.url)), "{out}");
    check_demo_output(&out);
    // Its data stays under its own prefix, for the printed commands to inspect.
    let stats = run(&cfg, &["--prefix", "quern-demo", "stats", "demo", "--json"]).ok();
    assert_eq!(support::json(&stats)["demo"]["failed"], 1, "{stats}");
}

#[test]
fn demo_reports_an_unreachable_redis_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = quern_tests::config_for(&format!("redis://127.0.0.1:{port}"));
    let err = run(&cfg, &["demo", "--duration", "2s"]).fails_with(1);
    assert!(err.contains("no Redis answers at"), "{err}");
    let err = run(&cfg, &["demo", "--duration", "2"]).fails_with(2);
    assert!(err.contains("no unit"), "{err}");
}
