//! docker-compose.yml's topology run natively, end to end: the schema registry, the Apache
//! Iceberg REST catalog on PostgreSQL with its tables on S3 (scripts/services' iceberg-rest
//! and postgres, private to this test; the shared broker, registry and S3 server), the
//! sink configured the way the compose file configures it, k2-feed producing through the
//! registry, k2-query reading back, and Prometheus scraping the sink.

use std::time::Duration;

use k2_tests::services::{Prometheus, Service, free_port};
use k2_tests::sink::{metrics_address, signal, wait_exit, wait_for_assignment};
use k2_tests::{TestEnv, ensure_services, s3_port, unique};

#[test]
fn feed_sink_rest_catalog_on_postgres_s3_query_and_prometheus() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let rest_port = free_port(&[0]);
    let warehouse = format!("s3://lakehouse/{}", unique("prod"));
    let vars = [
        ("K2_POSTGRES_PORT", free_port(&[0]).to_string()),
        ("K2_REST_CATALOG_PORT", rest_port.to_string()),
        ("K2_REST_CATALOG_WAREHOUSE", warehouse.clone()),
        ("K2_S3_PORT", s3_port().to_string()),
    ];
    let _postgres = Service::start("postgres", dir.path(), &vars);
    let _catalog = Service::start("iceberg-rest", dir.path(), &vars);

    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    let rest = format!("http://127.0.0.1:{rest_port}");
    // docker-compose.yml's x-k2 environment, pointed at the native servers.
    for (k, v) in k2_tests::compose_k2_vars(&rest, &warehouse, None)
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("K2_SINK__COMMIT__INTERVAL", "1s")])
    {
        env.var(k, v);
    }
    env.create_topics();
    let out = env.run("k2-admin", &["schemas", "register"]);
    assert!(out.status.success(), "{}", k2_tests::stderr(&out));

    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    let address = metrics_address(&env, log);
    let prometheus = Prometheus::scraping(&dir.path().join("prometheus-dir"), &[&address]);

    let out = env.run("k2-feed", &k2_tests::small_poisoned_feed("6000"));
    assert!(out.status.success(), "k2-feed: {}", k2_tests::stderr(&out));
    let poison = k2_tests::fed_poison(&out) as f64;

    // Prometheus sees every good record committed and every poison one dead-lettered.
    let written = prometheus.wait_for(
        "sum(k2_records_written_total{table!=\"sequence_events\"})",
        Duration::from_secs(120),
        |v| v >= 6000.0 - poison,
    );
    assert_eq!(written, 6000.0 - poison, "{}", env.log(log));
    prometheus.wait_for("sum(k2_dead_letters_total)", Duration::from_secs(30), |v| {
        v == poison
    });

    // k2-query reads the same tables through the REST catalog and S3.
    let out = env.run(
        "k2-query",
        &[
            "--format",
            "csv",
            "-c",
            "select (select count(*) from trades) + (select count(*) from quotes) \
             + (select count(*) from reference_data) as n",
        ],
    );
    assert!(out.status.success(), "k2-query: {}", k2_tests::stderr(&out));
    let text = k2_tests::stdout(&out);
    assert_eq!(
        text.lines().nth(1).map(str::trim),
        Some(format!("{}", written as u64).as_str()),
        "{text}"
    );

    signal(&sink, "TERM");
    let status = wait_exit(&mut sink, Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", env.log(log));
}
