//! K2's Kafka clients over a secured listener — TLS, the broker's certificate checked
//! against a CA, and SCRAM-SHA-512 authentication — set through `kafka.properties` as the
//! production checklist says, against a real Apache Kafka broker (a private one: the shared
//! test broker is plaintext).

use std::path::Path;
use std::time::Duration;

use k2_tests::services::{SCRAM_PASSWORD, Service};
use k2_tests::{TestEnv, ensure_services, stderr, stdout};

fn secured(env: &mut TestEnv, bootstrap: &str, ca: &Path, password: &str) {
    env.var("K2_KAFKA__BOOTSTRAP_SERVERS", bootstrap);
    env.var(
        "K2_KAFKA__PROPERTIES",
        &format!(
            r#"{{"security.protocol"="SASL_SSL","sasl.mechanism"="SCRAM-SHA-512","sasl.username"="k2","sasl.password"="{password}","ssl.ca.location"="{}"}}"#,
            ca.display()
        ),
    );
}

/// `k2-admin` (admin client), `k2-feed` (producer), `k2-sink` (consumer group and the
/// dead-letter producer) and `k2-admin status` (group offsets) all work over SASL_SSL;
/// an untrusted certificate or a wrong password is a clear error, not a hang.
#[test]
fn every_k2_client_works_over_sasl_ssl_with_scram() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, bootstrap, ca) = Service::kafka_sasl_ssl(dir.path());
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var("K2_SINK__COMMIT__INTERVAL", "1s");
    secured(&mut env, &bootstrap, &ca, SCRAM_PASSWORD);
    env.create_topics();

    let fed = 3_000;
    let out = env.run(
        "k2-feed",
        &[
            "synthetic",
            "--count",
            &fed.to_string(),
            "--symbols",
            "4",
            "--poison-every",
            "500",
        ],
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    let poison = k2_tests::fed_poison(&out);

    env.sink_once(&[], Duration::from_secs(300));
    let out = env.run("k2-admin", &["status", "--format", "json"]);
    assert!(out.status.success(), "k2-admin status: {}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let behind: i64 = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["behind"].as_i64().unwrap())
        .sum();
    let records: u64 = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["table"].as_str().unwrap().ends_with("sequence_events"))
        .map(|t| t["records"].as_u64().unwrap())
        .sum();
    assert_eq!(behind, 0, "{status:#}");
    assert_eq!(records, fed - poison, "{status:#}");
    assert_eq!(status["dead_letters"]["depth"], poison, "{status:#}");

    // The broker's certificate is checked: against the system's CAs it is not trusted.
    let system_cas = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if system_cas.exists() {
        secured(&mut env, &bootstrap, system_cas, SCRAM_PASSWORD);
        let out = env.run("k2-admin", &["topics", "plan"]);
        assert!(
            !out.status.success(),
            "an untrusted certificate was accepted"
        );
        assert!(
            stderr(&out).contains("certificate verify failed"),
            "{}",
            stderr(&out)
        );
    }

    secured(&mut env, &bootstrap, &ca, "not-the-password");
    let out = env.run("k2-admin", &["topics", "plan"]);
    assert!(!out.status.success(), "a wrong password was accepted");
    assert!(
        stderr(&out).contains("(the broker connection: sasl_ssl://")
            && stderr(&out).contains("SASL authentication error: Authentication failed"),
        "{}",
        stderr(&out)
    );
}
