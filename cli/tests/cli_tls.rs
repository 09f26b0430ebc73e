//! The CLI over TLS: `--redis-url rediss://...` with `--redis-ca`,
//! `--redis-cert` and `--redis-key` (or `QUERN_REDIS_CA`, `QUERN_REDIS_CERT`,
//! `QUERN_REDIS_KEY`) against a TLS-only redis-server whose certificates the
//! test makes; these run the README's TLS examples. A wrong CA exits 1
//! naming the certificate problem.

mod support;

use quern_tests::tls::TestCerts;
use quern_tests::{TestRedis, config_for};
use support::{WorkerProcess, json, quern, run, wait_finished};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn stats_and_enqueue_over_rediss_with_the_ca_flag() {
    let certs = TestCerts::generate();
    let redis = TestRedis::start_tls(certs.server(false));
    let cfg = config_for(&redis.url());
    let ca = certs.ca();
    let with_ca = |args: &[&str]| {
        let mut all = vec!["--redis-url", cfg.url.as_str(), "--redis-ca", path(&ca)];
        all.extend_from_slice(args);
        run(&cfg, &all)
    };
    // The README: quern --redis-url rediss://... --redis-ca FILE stats
    assert_eq!(json(&with_ca(&["stats", "--json"]).ok()), serde_json::json!({}));
    with_ca(&["enqueue", "ops", "command", "--payload", r#"{"argv":["true"]}"#]).ok();
    let stats = json(&with_ca(&["stats", "--json"]).ok());
    assert_eq!(stats["ops"]["waiting"], 1, "{stats}");
}

#[test]
fn a_worker_presents_the_client_certificate_of_the_variables_where_the_server_requires_one() {
    let certs = TestCerts::generate();
    let redis = TestRedis::start_tls(certs.server(true));
    let cfg = config_for(&redis.url());
    let (ca, cert, key) = (certs.ca(), certs.client_cert(), certs.client_key());
    let flags = ["--redis-ca", path(&ca), "--redis-cert", path(&cert), "--redis-key", path(&key)];
    let id = run(
        &cfg,
        &[&flags[..], &["enqueue", "ops", "command", "--payload", r#"{"argv":["true"]}"#]].concat(),
    )
    .ok();
    // The README: REDIS_URL=rediss://... QUERN_REDIS_CA=... QUERN_REDIS_CERT=...
    // QUERN_REDIS_KEY=... quern worker ops (support::quern sets the variables).
    let tls_cfg = cfg.clone().tls_ca(&ca).tls_client_cert(&cert, &key);
    let _worker = WorkerProcess::start(&tls_cfg, "ops", &[]);
    let job = wait_finished(&tls_cfg, "ops", id.trim());
    assert_eq!(job["state"], "completed", "{job}");

    let refused = run(&cfg, &["--redis-ca", path(&ca), "stats"]).fails_with(1);
    assert!(refused.contains("CertificateRequired"), "{refused}");
}

#[test]
fn a_wrong_ca_exits_1_naming_the_certificate_problem() {
    let certs = TestCerts::generate();
    let redis = TestRedis::start_tls(certs.server(false));
    let cfg = config_for(&redis.url());
    let other = certs.other_ca();
    let stderr = run(&cfg, &["--redis-ca", path(&other), "stats"]).fails_with(1);
    let expected = format!(
        "TLS handshake with 127.0.0.1:{} failed: invalid peer certificate: UnknownIssuer",
        redis.port()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // Through the variable, the same.
    let out = quern(&cfg).env("QUERN_REDIS_CA", &other).arg("stats").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No CA given: the system's roots, which do not hold the test CA.
    let stderr = run(&cfg, &["stats"]).fails_with(1);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    let missing = certs.dir().join("missing.pem");
    let stderr = run(&cfg, &["--redis-ca", path(&missing), "stats"]).fails_with(1);
    assert!(stderr.contains(path(&missing)), "{stderr}");
    let stderr = run(&cfg, &["--redis-cert", path(&certs.client_cert()), "stats"]).fails_with(2);
    assert!(stderr.contains("--redis-key"), "{stderr}");
}
