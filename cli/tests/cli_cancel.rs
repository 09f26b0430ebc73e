//! `quern cancel`: a running `command` job's program is killed within a
//! renewal, the job lands in the dead-letter list with the reason.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use quern_tests::config;
use support::{json, quern, run};

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cancelling_a_running_command_kills_it_and_dead_letters_the_job() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let payload = serde_json::json!({ "argv": ["sh", "-c", script] }).to_string();
    let id = run(&cfg, &["enqueue", "ops", "command", "--payload", &payload]).ok().trim().to_owned();
    let mut worker = quern(&cfg)
        .args(["worker", "ops", "--lease", "1500ms", "--shutdown-grace", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the command to start", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    });
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let proc_dir = std::path::Path::new("/proc").join(&pid);
    assert!(proc_dir.exists());

    let out = run(&cfg, &["cancel", "ops", &id, "--reason", "runaway export"]).ok();
    assert_eq!(out.trim(), format!("cancelled {id}: in the dead-letter list"));
    // The worker renews every 500 ms: it finds the lease gone and kills the program.
    wait_until("the program to be killed", || !proc_dir.exists());

    let job = json(&run(&cfg, &["job", "ops", &id, "--json"]).ok());
    assert_eq!(job["state"], "failed");
    assert_eq!(job["last_error"], "runaway export", "the worker's own failure report is refused");
    assert_eq!(job["history"].as_array().unwrap().last().unwrap()["out"], "cancelled");
    let err = run(&cfg, &["cancel", "ops", &id]).fails_with(3);
    assert!(err.contains("finished already"), "{err}");
    run(&cfg, &["cancel", "ops"]).fails_with(2);

    let _ = worker.kill();
    let _ = worker.wait();
}
