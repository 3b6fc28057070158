//! K2 on S3-compatible storage (SeaweedFS, started by `scripts/services`): the sink writes
//! an S3 warehouse through the SQL catalog and through an Iceberg REST catalog; iceberg-rust
//! reads the tables back independently, and the query module reads them through DuckDB's
//! httpfs, read-only. (A kill -9 run on the REST catalog is in tests/sink.rs.)

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use k2_query::{Fill, Interval, Lakehouse, OhlcvRequest, Pin, TimeZoneChoice};
use k2_tests::tables::{self, Scanned};
use k2_tests::{TestEnv, stderr};

const RECORDS: usize = 6_000;

/// Feeds synthetic records, lands them with `k2-sink --once`, and checks them: every record
/// once (by Kafka lineage), every data file under `prefix`, the same counts through
/// DuckDB, OHLCV answered, and the session unable to write to the bucket.
fn round_trip(env: &TestEnv, prefix: &str) {
    let out = env.run(
        "k2-feed",
        &[
            "synthetic",
            "--count",
            &RECORDS.to_string(),
            "--symbols",
            "8",
        ],
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    env.sink_once(&[], Duration::from_secs(300));

    let rt = k2_tests::runtime();
    let scans: Vec<(&str, Scanned)> = ["trades", "quotes", "reference_data"]
        .into_iter()
        .map(|t| (t, rt.block_on(tables::scan(env, t))))
        .collect();
    let lineage: Vec<_> = scans.iter().flat_map(|(_, s)| s.lineage()).collect();
    let unique: BTreeSet<_> = lineage.iter().collect();
    assert_eq!(lineage.len(), RECORDS, "every record landed");
    assert_eq!(unique.len(), RECORDS, "no record twice");
    for (table, s) in &scans {
        assert!(!s.files.is_empty(), "{table} has files");
        for f in &s.files {
            assert!(f.starts_with(prefix), "{table}: {f} is not under {prefix}");
        }
    }

    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    for (table, s) in &scans {
        let b = rt
            .block_on(session.sql(&format!("SELECT count(*) FROM {table}"), &[]))
            .unwrap();
        let n = b[0].column(0).as_primitive::<Int64Type>().value(0);
        assert_eq!(n as usize, s.rows(), "{table} through DuckDB on S3");
    }
    let symbol = rt
        .block_on(session.sql(
            "SELECT symbol FROM trades WHERE exchange = ? LIMIT 1",
            &[&env.asx],
        ))
        .unwrap();
    let symbol = symbol[0].column(0).as_string::<i32>().value(0).to_string();
    let bars = rt
        .block_on(session.ohlcv_bars(&OhlcvRequest {
            symbols: vec![symbol.clone()],
            exchange: env.asx.clone(),
            interval: "1d".parse::<Interval>().unwrap(),
            from: "2000-01-01T00:00:00Z".parse().unwrap(),
            to: "2100-01-01T00:00:00Z".parse().unwrap(),
            tz: TimeZoneChoice::Exchange,
            fill: Fill::Omit,
            session: k2_query::SessionChoice::Off,
        }))
        .unwrap();
    let in_bars: i64 = bars.iter().map(|b| b.trades).sum();
    let direct = rt
        .block_on(session.sql(
            "SELECT count(*) FROM trades WHERE exchange = ? AND symbol = ?",
            &[&env.asx, &symbol],
        ))
        .unwrap();
    assert_eq!(
        in_bars,
        direct[0].column(0).as_primitive::<Int64Type>().value(0),
        "{symbol}: every trade in one daily bar"
    );
    // Read-only on S3 too: no writing into the bucket, no reading other buckets, no
    // settings changes.
    let bucket_root = prefix.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    for refused in [
        format!("COPY (SELECT 1 AS x) TO '{bucket_root}/k2-query-wrote-this.parquet'"),
        "SELECT * FROM read_parquet('s3://not-the-warehouse/x.parquet')".to_string(),
        "SET enable_external_access = true".to_string(),
    ] {
        let err = rt
            .block_on(session.sql(&refused, &[]))
            .expect_err(&refused)
            .to_string();
        assert!(!err.contains("HTTP"), "refused before any request: {err}");
    }
}

#[test]
fn sql_catalog_with_an_s3_warehouse() {
    let env = TestEnv::ready(2, 1, "1s");
    env.use_s3_warehouse();
    let location = env.k2_config().warehouse.location;
    assert!(location.starts_with("s3://lakehouse/"), "{location}");
    round_trip(&env, &location);
}

#[test]
fn rest_catalog_on_s3() {
    let env = TestEnv::ready(2, 1, "1s");
    env.use_rest_catalog();
    let location = env.k2_config().warehouse.location;
    round_trip(&env, &location);
    // The REST catalog records K2's offsets in each snapshot's summary, like the SQL one.
    let rt = k2_tests::runtime();
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let snapshots = rt.block_on(lake.snapshots("trades")).unwrap();
    assert!(!snapshots.is_empty());
    assert!(
        snapshots
            .iter()
            .all(|s| s.summary.keys().any(|k| k.starts_with("k2."))),
        "{snapshots:?}"
    );
}

/// A wrong S3 secret stops the sink at start with one line naming the warehouse and the
/// endpoint (the probe), not deep inside the first table write.
#[test]
fn a_wrong_s3_secret_is_one_clear_error_at_start() {
    let mut env = TestEnv::ready(1, 1, "1s");
    env.use_s3_warehouse();
    env.var("K2_WAREHOUSE__S3__SECRET_ACCESS_KEY", "not-the-secret");
    let location = env.k2_config().warehouse.location;
    let out = env.run("k2-sink", &["--once"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("warehouse {location} (endpoint http://127.0.0.1:"))
            && err.contains("cannot write"),
        "{err}"
    );
}
