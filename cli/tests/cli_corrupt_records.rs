//! `quern dlq list`, `quern jobs` and `quern job` over hand-corrupted job
//! records: every readable job is shown, each unreadable record is marked
//! with what is wrong, and one bad record never hides the others.

mod support;

use quern_common::QueueKeys;
use quern_tests::{RedisConfig, config};
use serde_json::Value;
use support::{json, run};

/// Run one Redis command on `cfg`'s server (its cluster's node for the key).
fn redis(cfg: &RedisConfig, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = quern_tests::raw_connection(cfg).await;
        cmd.query_async::<redis::Value>(&mut conn).await.unwrap();
    });
}

/// The key of job `id` of queue `q`.
fn job_key(cfg: &RedisConfig, id: &str) -> String {
    QueueKeys::new(&cfg.prefix, "q").unwrap().job(id)
}

/// Jobs `j0`..`j{n-1}` in queue `q`; with `dead`, each cancelled into the
/// dead-letter list in turn (so `dlq list`, newest first, reads `j{n-1}`..`j0`).
fn jobs(cfg: &RedisConfig, n: usize, dead: bool) {
    for i in 0..n {
        let id = format!("j{i}");
        run(cfg, &["enqueue", "q", "work", "--id", &id, "--payload", &i.to_string()]).ok();
        if dead {
            run(cfg, &["cancel", "q", &id, "--reason", "not needed"]).ok();
        }
    }
}

fn ids(listed: &Value) -> Vec<&str> {
    listed.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect()
}

/// The table line that starts with `id`.
fn line_of<'a>(table: &'a str, id: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("no {id}: {table}"))
}

#[test]
fn dlq_list_shows_a_job_with_a_bad_created_time_among_the_others() {
    let cfg = config();
    jobs(&cfg, 3, true);
    redis(&cfg, &["HSET", &job_key(&cfg, "j1"), "t", "yesterday"]);

    let listed = json(&run(&cfg, &["dlq", "q", "list", "--json"]).ok());
    assert_eq!(ids(&listed), ["j2", "j1", "j0"]);
    assert_eq!(listed[1]["last_error"], "not needed");
    assert_eq!(
        listed[1]["problems"],
        serde_json::json!([r#"field t (created) is not a number: "yesterday""#])
    );
    assert!(listed[0].get("problems").is_none() && listed[2].get("problems").is_none(), "{listed}");

    let table = run(&cfg, &["dlq", "q", "list"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "header, three jobs, one problem: {table}");
    assert!(lines[2].starts_with("j1 ") && lines[2].contains("not needed"), "{table}");
    assert!(!table.contains("1970"), "an unknown creation time shows as -: {table}");
    assert_eq!(
        lines[3].trim_start(),
        r#"problem: field t (created) is not a number: "yesterday""#,
        "{table}"
    );
    assert!(lines[4].starts_with("j0 "), "{table}");
}

#[test]
fn dlq_list_marks_an_id_whose_job_hash_is_missing() {
    let cfg = config();
    jobs(&cfg, 3, true);
    redis(&cfg, &["DEL", &job_key(&cfg, "j1")]);

    let listed = json(&run(&cfg, &["dlq", "q", "list", "--json"]).ok());
    assert_eq!(ids(&listed), ["j2", "j1", "j0"]);
    assert_eq!(
        listed[1],
        serde_json::json!({"queue": "q", "id": "j1", "unreadable": "listed as failed but its job hash is missing"})
    );
    let table = run(&cfg, &["dlq", "q", "list"]).ok();
    assert_eq!(line_of(&table, "j1"), "j1  unreadable: listed as failed but its job hash is missing");
    assert!(line_of(&table, "j0").contains("not needed"), "{table}");
}

#[test]
fn a_record_without_a_state_is_an_unreadable_row_and_quern_job_exits_1() {
    let cfg = config();
    jobs(&cfg, 3, true);
    redis(&cfg, &["HDEL", &job_key(&cfg, "j0"), "s"]);

    let listed = json(&run(&cfg, &["dlq", "q", "list", "--json"]).ok());
    assert_eq!(ids(&listed), ["j2", "j1", "j0"]);
    assert_eq!(listed[2]["unreadable"], "field s (state) is missing");
    let table = run(&cfg, &["dlq", "q", "list"]).ok();
    assert_eq!(line_of(&table, "j0"), "j0  unreadable: field s (state) is missing");

    let err = run(&cfg, &["job", "q", "j0"]).fails_with(1);
    assert!(err.contains(r#"job "j0" of queue "q" is unreadable: field s (state) is missing"#), "{err}");
    let out = run(&cfg, &["job", "q", "j0", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        json(&out.stdout),
        serde_json::json!({"queue": "q", "id": "j0", "unreadable": "field s (state) is missing"})
    );
}

#[test]
fn quern_job_shows_a_job_with_unreadable_history_and_its_problem() {
    let cfg = config();
    jobs(&cfg, 1, true);
    redis(&cfg, &["HSET", &job_key(&cfg, "j0"), "h", "[{\"n\":1,"]);

    let human = run(&cfg, &["job", "q", "j0"]).ok();
    assert!(human.contains("state      failed") && human.contains("last error not needed"), "{human}");
    assert!(
        human.contains("\nproblems (fields of its record that cannot be read):\n  field h (history)"),
        "{human}"
    );
    let job = json(&run(&cfg, &["job", "q", "j0", "--json"]).ok());
    assert_eq!((job["id"].as_str(), job["state"].as_str()), (Some("j0"), Some("failed")));
    let problems = job["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{job}");
    assert!(problems[0].as_str().unwrap().starts_with("field h (history) is not a JSON list"), "{job}");
    let listed = json(&run(&cfg, &["dlq", "q", "list", "--json"]).ok());
    assert_eq!(listed[0]["problems"], job["problems"]);
}

#[test]
fn jobs_lists_every_waiting_job_with_the_corrupt_one_marked() {
    let cfg = config();
    jobs(&cfg, 4, false);
    redis(&cfg, &["HSET", &job_key(&cfg, "j1"), "s", "zombie"]);
    redis(&cfg, &["HSET", &job_key(&cfg, "j2"), "at", "many"]);

    let listed = json(&run(&cfg, &["jobs", "q", "--state", "waiting", "--json"]).ok());
    assert_eq!(ids(&listed), ["j0", "j1", "j2", "j3"]);
    assert_eq!(listed[1]["unreadable"], r#"field s (state) is not a job state: "zombie""#);
    assert_eq!(
        listed[2]["problems"],
        serde_json::json!([r#"field at (attempts made) is not a number: "many""#])
    );
    assert_eq!((listed[3]["payload"].as_u64(), listed[3].get("problems")), (Some(3), None));

    let table = run(&cfg, &["jobs", "q", "--state", "waiting"]).ok();
    assert_eq!(line_of(&table, "j1"), r#"j1  unreadable: field s (state) is not a job state: "zombie""#);
    assert!(table.contains(r#"problem: field at (attempts made) is not a number: "many""#), "{table}");
    for id in ["j0", "j2", "j3"] {
        assert!(line_of(&table, id).contains("work"), "{table}");
    }
}
