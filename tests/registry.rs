//! The Schema Registry path, against the real Confluent-API registry of the local services:
//! `k2-admin schemas register`, records serialized by the official confluent-kafka client
//! decoded by the sink through the registry, and k2-feed framing with registry ids.

use std::collections::BTreeMap;
use std::time::Duration;

use k2_tests::registry::{Registry, python};
use k2_tests::{BOOTSTRAP, TestEnv, stderr, stdout, tables};

#[test]
fn registry_path_end_to_end() {
    let python = python();
    let registry = Registry::local();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var(
        "K2_SCHEMA_REGISTRY",
        &format!("{{url=\"{}\"}}", registry.url),
    )
    .var("K2_SINK__COMMIT__INTERVAL", "1s");
    env.create_topics();

    // k2-admin registers every subject, idempotently.
    let first = env.run("k2-admin", &["schemas", "register"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = env.run("k2-admin", &["schemas", "register"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&first), stdout(&second), "same ids the second time");
    let subjects = registry.get("/subjects");
    for s in [
        "market.equities.trades-value",
        "market.equities.quotes-value",
        "market.crypto.trades-value",
        "market.crypto.reference_data-value",
    ] {
        assert!(
            subjects.as_array().unwrap().iter().any(|x| x == s),
            "{s} in {subjects}"
        );
    }
    assert_eq!(
        registry.get("/config/market.equities.trades-value")["compatibilityLevel"],
        "BACKWARD"
    );

    // Records written by the official client decode through the registry.
    let topic = env.topic(&env.asx, "trades");
    let out = std::process::Command::new(&python)
        .arg(k2_tests::repo_root().join("tests/registry/produce_with_confluent_kafka.py"))
        .args([
            BOOTSTRAP.as_str(),
            &registry.url,
            &topic,
            "market.equities.trades-value",
            k2_tests::repo_root()
                .join("schemas/trade.avsc")
                .to_str()
                .unwrap(),
            "40",
            &env.asx,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let produced: BTreeMap<i64, serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["sequence_number"].as_i64().unwrap(), v)
        })
        .collect();
    env.sink_once(&[], Duration::from_secs(120));
    let trades = k2_tests::runtime().block_on(tables::scan(&env, "trades"));
    assert_eq!(trades.rows(), 40);
    for b in &trades.batches {
        let seq = tables::longs(b, "sequence_number");
        let price = tables::decimals(b, "price");
        let qty = tables::decimals(b, "quantity");
        let ts = tables::timestamps(b, "exchange_timestamp");
        for r in 0..b.num_rows() {
            let p = &produced[&seq.value(r)];
            assert_eq!(price.value_as_string(r), p["price"].as_str().unwrap());
            assert_eq!(qty.value_as_string(r), p["quantity"].as_str().unwrap());
            assert_eq!(ts.value(r), p["ts"].as_i64().unwrap());
        }
    }

    // k2-feed frames with the registry's ids (registering as it goes).
    let out = env.run(
        "k2-feed",
        &["synthetic", "--count", "300", "--symbols", "5"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.sink_once(&[], Duration::from_secs(120));
    let rows: usize = ["trades", "quotes", "reference_data"]
        .iter()
        .map(|t| k2_tests::runtime().block_on(tables::scan(&env, t)).rows())
        .sum();
    assert_eq!(rows, 340, "the client's 40 plus the feed's 300");
    assert!(k2_tests::feed::read_dead_letters(&env.dead_letter_topic).is_empty());
}

/// Several admins setting a fresh subject's compatibility at once (subjects are shared by every
/// exchange of a data type, so concurrent `k2-admin schemas register` runs do this) all
/// succeed: Apicurio answers the losers of the rule's creation 409, and the client settles it.
#[test]
fn concurrent_admins_set_one_subjects_compatibility() {
    use k2_common::config::{Compatibility, SchemaRegistryConfig};
    use k2_common::registry::SchemaRegistryClient;

    let registry = Registry::local();
    let client = SchemaRegistryClient::new(&SchemaRegistryConfig {
        url: registry.url.clone(),
        username: None,
        password: None,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..5 {
        let subject = format!(
            "k2.test.race{}x{round}x{}-value",
            std::process::id(),
            rand::random::<u32>()
        );
        let results = rt.block_on(futures::future::join_all((0..8).map(|_| {
            let client = client.clone();
            let subject = subject.clone();
            async move {
                client
                    .set_compatibility(&subject, Compatibility::Backward)
                    .await
            }
        })));
        for r in results {
            r.unwrap_or_else(|e| panic!("{subject}: {e}"));
        }
        assert_eq!(
            registry.get(&format!("/config/{subject}"))["compatibilityLevel"],
            "BACKWARD"
        );
    }
}
