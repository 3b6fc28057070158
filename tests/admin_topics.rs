//! `k2-admin topics plan|apply` against the real local broker.

use k2_tests::{TestEnv, admin, ensure_services, partitions, stderr, stdout, topic_config};

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_topics_and_is_idempotent() {
    ensure_services();
    let env = TestEnv::new();
    let asx_trades = format!("market.equities.trades.{}", env.asx);
    let bnc_quotes = format!("market.crypto.quotes.{}", env.binance);
    let bnc_reference = format!("market.crypto.reference_data.{}", env.binance);

    let plan = env.run("k2-admin", &["topics", "plan"]);
    let text = stdout(&plan);
    assert!(plan.status.success(), "{text}{}", stderr(&plan));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("+ create ")).count(),
        7,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "+ create {asx_trades} partitions=30 replication=1"
        )),
        "{text}"
    );

    let apply = env.run("k2-admin", &["topics", "apply"]);
    let text = stdout(&apply);
    assert!(apply.status.success(), "{text}{}", stderr(&apply));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("done: + create"))
            .count(),
        7,
        "{text}"
    );

    let admin = admin();
    assert_eq!(partitions(&admin, &asx_trades), Some(30));
    assert_eq!(partitions(&admin, &bnc_quotes), Some(40));
    assert_eq!(partitions(&admin, &bnc_reference), Some(1));
    assert_eq!(partitions(&admin, &env.dead_letter_topic), Some(1));
    assert_eq!(
        topic_config(&admin, &bnc_reference, "cleanup.policy")
            .await
            .as_deref(),
        Some("compact")
    );
    assert_eq!(
        topic_config(&admin, &asx_trades, "retention.ms")
            .await
            .as_deref(),
        Some("604800000")
    );

    for _ in 0..2 {
        let again = env.run("k2-admin", &["topics", "plan"]);
        assert!(again.status.success(), "{}", stderr(&again));
        assert_eq!(stdout(&again), "no changes\n");
        let again = env.run("k2-admin", &["topics", "apply"]);
        assert!(again.status.success(), "{}", stderr(&again));
        assert_eq!(stdout(&again), "no changes\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_raised_and_never_lowered() {
    ensure_services();
    let env = TestEnv::new();
    let apply = env.run("k2-admin", &["topics", "apply"]);
    assert!(apply.status.success(), "{}", stdout(&apply));
    let asx_trades = format!("market.equities.trades.{}", env.asx);

    // Raising: the plan shows it, apply adds the partitions (CreatePartitions), and a
    // second apply has nothing left to do.
    let asx = env.asx.clone();
    env.edit_topics(|t| {
        t.replace(
            &format!(
                "      {asx}:\n        name: Australian Securities Exchange\n        partitions: 30"
            ),
            &format!(
                "      {asx}:\n        name: Australian Securities Exchange\n        partitions: 32"
            ),
        )
    });
    let plan = env.run("k2-admin", &["topics", "plan"]);
    let text = stdout(&plan);
    assert!(plan.status.success(), "{text}");
    assert!(
        text.contains(&format!("~ raise partitions {asx_trades}: 30 -> 32")),
        "{text}"
    );
    let apply = env.run("k2-admin", &["topics", "apply"]);
    let text = stdout(&apply);
    assert!(apply.status.success(), "{text}{}", stderr(&apply));
    assert!(
        text.contains(&format!("~ raise partitions {asx_trades}: 30 -> 32")),
        "{text}"
    );
    assert!(!text.contains("FAILED"), "{text}");
    assert_eq!(partitions(&admin(), &asx_trades), Some(32));
    let again = env.run("k2-admin", &["topics", "apply"]);
    assert_eq!(stdout(&again), "no changes\n", "{}", stderr(&again));

    // Decreasing: never; a clear error from plan and apply alike.
    let asx = env.asx.clone();
    env.edit_topics(|t| t.replace("partitions: 32", "partitions: 28"));
    for action in ["plan", "apply"] {
        let out = env.run("k2-admin", &["topics", action]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{action}: {text}");
        assert!(
            text.contains(&format!(
                "! market.equities.trades.{asx} has 32 partitions but topics.yaml says 28"
            )),
            "{action}: {text}"
        );
    }
}

#[test]
fn bad_config_exits_2_naming_the_file() {
    let env = TestEnv::new();
    env.edit_topics(|t| t.replace("partitions: 30", "partitions: 0"));
    let out = env.run("k2-admin", &["topics", "plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("topics.yaml"), "{err}");
    assert!(
        err.contains(".partitions: expected a partition count from 1 to 10000, found 0"),
        "{err}"
    );
}

/// `k2-admin status` reads the catalog and the broker with no sink running: before the
/// sink, every fed record is behind; after `k2-sink --once`, nothing is, and the tables
/// hold them all.
#[test]
fn status_reports_tables_lag_and_dead_letters_without_a_sink() {
    let env = TestEnv::ready(1, 1, "1s");
    let fed = 2_000;
    let out = env.run(
        "k2-feed",
        &["synthetic", "--count", &fed.to_string(), "--symbols", "4"],
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    let status = || -> serde_json::Value {
        let out = env.run("k2-admin", &["status", "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("JSON")
    };
    let behind = |s: &serde_json::Value| -> i64 {
        s["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["behind"].as_i64().unwrap())
            .sum()
    };
    let before = status();
    assert_eq!(behind(&before), fed, "{before:#}");
    assert_eq!(before["dead_letters"]["depth"], 0, "{before:#}");

    env.sink_once(&[], std::time::Duration::from_secs(300));
    let after = status();
    assert_eq!(behind(&after), 0, "{after:#}");
    let tables = after["tables"].as_array().unwrap();
    let records: u64 = tables.iter().map(|t| t["records"].as_u64().unwrap()).sum();
    assert_eq!(records, fed as u64, "{after:#}");
    for t in tables {
        assert!(t["snapshots"].as_u64().unwrap() >= 1, "{t}");
        assert!(t["commit_age_seconds"].as_f64().unwrap() < 600.0, "{t}");
    }
    let text = env.run("k2-admin", &["status"]);
    let text = stdout(&text);
    assert!(
        text.contains("market_data.trades") && text.contains("dead letters:"),
        "{text}"
    );
}
