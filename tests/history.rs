//! History kept bounded for months (ADR-23), against the real broker and catalog: an
//! end-of-day tag answers `as_of` its day after every ordinary snapshot has expired, with
//! the same rows in every table pinned together, and other engines (DuckDB's
//! `iceberg_scan`, PyIceberg) read the merged, expired, pruned tables and the tag by name;
//! expiry and manifest merging beside a running sink, with restarts after each, land every
//! record exactly once without re-reading from the beginning.
//!
//! Days cannot be waited for here, so the processes are told the time instead:
//! `K2_TEST_CLOCK_SKEW` moves the clock K2 stamps snapshots with and judges their age by
//! (test builds only, `k2_table::clock`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use k2_common::data_type::TABLES;
use k2_query::{Lakehouse, Pin};
use k2_table::layout::ident;
use k2_table::retention;
use k2_tests::engines::{At, duckdb_reads, pyiceberg_reads};
use k2_tests::sink::{
    BackgroundFeed, assert_exactly_once, kill9, rt_scan, signal, wait_exit, wait_for_assignment,
};
use k2_tests::tables;
use k2_tests::{TestEnv, ensure_services, stderr, stdout};

/// Feeds `n` synthetic records (trades, quotes, reference data of both exchanges) and lands
/// them with `k2-sink --once`.
fn land(env: &TestEnv, n: usize, seed: u64) {
    let out = env.run(
        "k2-feed",
        &[
            "synthetic",
            "--count",
            &n.to_string(),
            "--symbols",
            "6",
            "--seed",
            &seed.to_string(),
        ],
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    env.sink_once(&[], Duration::from_secs(120));
}

/// Sets an Iceberg property on every K2 table (as an operator or another engine would).
fn set_property(env: &TestEnv, key: &str, value: &str) {
    k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(env).await;
        for t in TABLES {
            let Ok(table) = catalog.load_table(&ident(t)).await else {
                continue;
            };
            let tx = Transaction::new(&table);
            let tx = tx
                .update_table_properties()
                .set(key.into(), value.into())
                .apply(tx)
                .unwrap();
            tx.commit(catalog.as_ref()).await.unwrap();
        }
    });
}

/// Per table: rows and the sum of their offsets, as a session pinned by `pin` reads them.
fn answers(env: &TestEnv, pin: Pin) -> BTreeMap<String, (i64, i64)> {
    let config = env.k2_config();
    k2_tests::runtime().block_on(async {
        let lake = Lakehouse::open(&config).await.unwrap();
        let session = lake.session(pin).await.unwrap();
        let mut out = BTreeMap::new();
        for t in ["trades", "quotes", "reference_data"] {
            let b = session
                .sql(
                    &format!("SELECT count(*), coalesce(sum(kafka_offset), 0)::BIGINT FROM {t}"),
                    &[],
                )
                .await
                .unwrap();
            let count =
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(0))
                    .value(0);
            let sum =
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(1))
                    .value(0);
            out.insert(t.to_string(), (count, sum));
        }
        out
    })
}

/// The trades table's (snapshots, manifests listed by its current snapshot, tags).
fn trades_history(env: &TestEnv) -> (usize, usize, Vec<String>) {
    history_of(env, "trades")
}

/// A table's (snapshots, manifests listed by its current snapshot, tags).
fn history_of(env: &TestEnv, name: &str) -> (usize, usize, Vec<String>) {
    k2_tests::runtime().block_on(async {
        let table = tables::table(env, name).await;
        let m = table.metadata();
        let snapshot = m.current_snapshot().unwrap();
        let manifests = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .unwrap()
            .entries()
            .len();
        (m.snapshots().len(), manifests, tables::tags(m))
    })
}

fn tag_snapshot(env: &TestEnv, tag: &str) -> i64 {
    k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(env).await;
        let table = catalog.load_table(&ident("trades")).await.unwrap();
        table
            .metadata()
            .snapshot_for_ref(tag)
            .map(|s| s.snapshot_id())
            .unwrap_or_else(|| panic!("no tag {tag}"))
    })
}

/// A day's end-of-day tag outlives every ordinary snapshot of that day: `as_of` the day's
/// end (an instant, or the tag by name) reads the same rows in all three tables as before
/// the expiry, while the latest reads on; K2, DuckDB and PyIceberg agree, after manifests
/// were merged, snapshots expired and metadata files pruned. The day ends by the sinks'
/// clock (`K2_TEST_CLOCK_SKEW`, test builds only): the next sink run stands an hour into
/// tomorrow, tags today's last snapshots and expires the rest.
#[test]
fn an_end_of_day_tag_answers_as_of_its_day_after_every_snapshot_expired() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var("K2_SINK__COMMIT__INTERVAL", "1s")
        .var("K2_MAINTENANCE__SNAPSHOT_RETENTION", "30min")
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "1");
    env.create_topics();
    let started = Utc::now();
    land(&env, 3_000, 1);
    // Merge every three manifests (Iceberg's property), so a few runs show it.
    set_property(&env, k2_table::stage::append::MIN_COUNT_TO_MERGE, "3");
    for seed in 2..=5 {
        land(&env, 1_000, seed);
    }
    let (_, manifests, _) = trades_history(&env);
    assert!(manifests <= 3, "{manifests} manifests after 5 runs: merged");

    let now = Utc::now();
    let day = now.date_naive();
    let tag = retention::eod_tag(day);
    let end = DateTime::from_timestamp_millis(retention::end_of_day_ms(day)).unwrap();
    let before = answers(&env, Pin::AsOf(end));
    let before_reads = (
        duckdb_reads(&env, At::Current),
        pyiceberg_reads(&env, At::Current),
    );
    // A backtest pinned to the day's end: the pin it prints must reproduce after expiry.
    let backtest = |env: &TestEnv| {
        let out = env.run(
            "examples/backtest",
            &[
                "--symbol",
                "BHP",
                "--exchange",
                env.asx.as_str(),
                "--as-of",
                &tag,
            ],
        );
        assert!(out.status.success(), "backtest: {}", stderr(&out));
        stdout(&out)
    };
    let backtest_before = backtest(&env);
    assert!(
        backtest_before.contains(&format!("as_of: {tag}")),
        "{backtest_before}"
    );

    // An hour into tomorrow: the sink's next commits tag today and expire the rest.
    let skew = (end - now).num_seconds() + 3_600;
    env.var("K2_TEST_CLOCK_SKEW", &format!("{skew}s"));
    land(&env, 2_000, 9);
    for table in ["trades", "quotes", "reference_data"] {
        let (_, _, tags) = history_of(&env, table);
        assert_eq!(tags, std::slice::from_ref(&tag), "{table}");
    }
    // Maintenance, two hours later still, applies the same plan: nothing of today's is left
    // but the tagged snapshot.
    env.var("K2_TEST_CLOCK_SKEW", &format!("{}s", skew + 7_200));
    let out = env.run("k2-admin", &["maintain", "expire"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (snapshots, _, _) = trades_history(&env);
    assert_eq!(snapshots, 2, "the tagged snapshot and the head");

    // The day's end reads as before, by instant and by tag, every table pinned together.
    assert_eq!(answers(&env, Pin::AsOf(end)), before, "as of the day's end");
    assert_eq!(answers(&env, Pin::Tag(tag.clone())), before, "by the tag");
    let latest = answers(&env, Pin::Latest);
    assert!(
        latest["trades"].0 > before["trades"].0,
        "the latest reads on"
    );
    assert_eq!(
        backtest(&env),
        backtest_before,
        "the printed pin reproduces"
    );
    // The shell takes the tag as --as-of.
    let out = env.run(
        "k2-query",
        &[
            "--as-of",
            &tag,
            "--format",
            "csv",
            "-c",
            "SELECT count(*) FROM trades",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&before["trades"].0.to_string()),
        "{}",
        stdout(&out)
    );
    // An instant of today before its last commit has expired: said so, naming the tag.
    let gone = env.run(
        "k2-query",
        &["--as-of", &started.to_rfc3339(), "-c", "SELECT 1"],
    );
    assert!(!gone.status.success());
    let err = stderr(&gone);
    assert!(err.contains("expired"), "{err}");
    // A tag no table has is an error naming it.
    let unknown = env.run("k2-query", &["--as-of", "nightly-build", "-c", "SELECT 1"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("has no tag \"nightly-build\""),
        "{}",
        stderr(&unknown)
    );

    // Other engines: the tag by name (PyIceberg), its snapshot (DuckDB), and the current
    // table through the merged manifests and pruned metadata.
    let tagged = tag_snapshot(&env, &tag);
    assert_eq!(pyiceberg_reads(&env, At::Tag(&tag)), before_reads.1);
    assert_eq!(duckdb_reads(&env, At::Snapshot(tagged)), before_reads.0);
    let lineage = rt_scan(&env, "trades").lineage();
    let sums = (
        lineage.len() as i64,
        lineage.iter().map(|k| k.2).sum::<i64>(),
    );
    assert_eq!(duckdb_reads(&env, At::Current), sums);
    assert_eq!(pyiceberg_reads(&env, At::Current), sums);
    let metadata_dir = env
        .dir
        .path()
        .join("state/warehouse/market_data/trades/metadata");
    let json = std::fs::read_dir(metadata_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".metadata.json"))
        .count();
    assert!(
        json <= k2_table::layout::METADATA_VERSIONS_KEPT + 1,
        "{json} metadata files: pruned as they are replaced"
    );
}

/// The sink expires its own snapshots and merges its manifests while it runs (a window of
/// four snapshots — an hour that the count ends first, as at a fast commit rate — merging
/// every three), `k2-admin maintain expire` runs beside it, and it is
/// restarted — stopped, killed — after each: every record lands exactly once, and every
/// restart resumes from the tables' offsets (never from the beginning).
#[test]
fn expiry_and_merging_beside_a_running_sink_with_restarts_lose_and_double_nothing() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var("K2_SINK__COMMIT__INTERVAL", "300ms")
        .var("K2_MAINTENANCE__SNAPSHOT_RETENTION", "1h")
        .var("K2_MAINTENANCE__MAX_SNAPSHOTS", "4")
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "2");
    env.create_topics();
    let background = BackgroundFeed::start(&env, 60, 1);
    let mut logs = Vec::new();
    for round in 0..4 {
        let log = format!("sink-{round}.log");
        let mut sink = env.spawn("k2-sink", &[], &log);
        wait_for_assignment(&env, &log, &mut sink);
        if round == 0 {
            set_property(&env, k2_table::stage::append::MIN_COUNT_TO_MERGE, "3");
        }
        std::thread::sleep(Duration::from_secs(4));
        let out = env.run("k2-admin", &["maintain", "expire"]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(Duration::from_secs(2));
        if round % 2 == 0 {
            signal(&sink.0, "TERM");
            assert!(wait_exit(&mut sink.0, Duration::from_secs(60)).success());
        } else {
            kill9(&mut sink.0);
        }
        logs.push(log);
    }
    let expected = background.finish();
    env.sink_once(&[], Duration::from_secs(120));
    let mut landed = rt_scan(&env, "trades");
    landed.batches.extend(rt_scan(&env, "quotes").batches);
    assert_exactly_once(&landed, &expected, "after expiry, merging and restarts");
    // Every run after the first resumed each fed partition from its table's offsets
    // (reference data, never fed here, has none to resume from).
    for log in &logs[1..] {
        let text = env.log(log);
        assert!(
            !text.lines().any(|l| l.contains("start=Beginning")
                && (l.contains(".trades.") || l.contains(".quotes."))),
            "{log} re-read a partition from the beginning"
        );
    }
    let (snapshots, manifests, _) = trades_history(&env);
    // The count, its slack and the commit that expires (4 + 1 + 1), and an end-of-day tag
    // should a midnight have passed during the run.
    assert!(
        snapshots <= 7,
        "{snapshots} snapshots: expired by count as the sink went"
    );
    assert!(
        manifests <= 6,
        "{manifests} manifests: merged as the sink went"
    );
}
