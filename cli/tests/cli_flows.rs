//! `quern flow add FILE`, `quern jobs --state waiting-children` and `quern job`
//! showing a parent's children and a child's parent.

mod support;

use quern_tests::config;
use support::{json, run};

const FLOW: &str = r#"{
  "queue": "reports", "name": "report", "id": "report-1", "payload": {"day": "2026-12-01"},
  "children": [
    {"name": "export", "id": "export-1"},
    {"on_failure": "continue", "queue": "scans", "name": "scan", "id": "scan-1", "payload": {"deep": true}}
  ]
}"#;

#[test]
fn a_flow_file_adds_a_parent_waiting_for_its_children_once() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.json");
    std::fs::write(&file, FLOW).unwrap();
    let file = file.to_str().unwrap();
    let added = json(&run(&cfg, &["flow", "add", file, "--json"]).ok());
    let rows: Vec<_> = added
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["queue"].as_str().unwrap().to_owned(),
                a["id"].as_str().unwrap().to_owned(),
                a["created"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("reports".to_owned(), "report-1".to_owned(), true),
            ("reports".to_owned(), "export-1".to_owned(), true),
            ("scans".to_owned(), "scan-1".to_owned(), true)
        ]
    );
    let again = run(&cfg, &["flow", "add", file]).ok();
    assert!(again.lines().all(|l| l.contains("existed")), "{again}");

    let waiting = json(&run(&cfg, &["jobs", "reports", "--state", "waiting-children", "--json"]).ok());
    assert_eq!(waiting[0]["id"], "report-1");
    let stats = json(&run(&cfg, &["stats", "reports", "--json"]).ok());
    assert_eq!(stats["reports"]["waiting-children"], 1);
    let parent = run(&cfg, &["job", "reports", "report-1"]).ok();
    assert!(
        parent.contains("children:") && parent.contains("scan-1") && parent.contains("pending"),
        "{parent}"
    );
    let child = run(&cfg, &["job", "scans", "scan-1"]).ok();
    assert!(child.contains("reports/report-1 (on failure: continue)"), "{child}");

    std::fs::write(dir.path().join("bad.json"), r#"{"name": "x"}"#).unwrap();
    let bad = run(&cfg, &["flow", "add", dir.path().join("bad.json").to_str().unwrap()]);
    assert!(bad.fails_with(2).contains("needs a \"queue\""));
}
