//! `k2-admin maintain` against the real catalog and warehouse (local disk and S3), beside a
//! running sink: snapshot expiry keeps the time-travel window and loses no offsets; cleanup
//! deletes exactly the unreferenced files old enough to be safe.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::TryStreamExt;
use iceberg::{NamespaceIdent, TableIdent};
use k2_tests::feed::{self, ASX_SYMBOLS, Feed};
use k2_tests::sink::{
    BackgroundFeed, Key, assert_exactly_once, produce, rt_scan, signal, trades_and_quotes,
    wait_exit, wait_for_assignment, wait_until,
};
use k2_tests::tables::{self, Scanned};
use k2_tests::{TestEnv, ensure_services, stderr, stdout};

fn trades_ident() -> TableIdent {
    TableIdent::new(NamespaceIdent::new("market_data".into()), "trades".into())
}

/// (snapshot id, timestamp ms) of every snapshot of the trades table, oldest first.
fn snapshots(env: &TestEnv) -> Vec<(i64, i64)> {
    k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(env).await;
        let Ok(table) = catalog.load_table(&trades_ident()).await else {
            return Vec::new();
        };
        let mut s: Vec<(i64, i64)> = table
            .metadata()
            .snapshots()
            .map(|s| (s.snapshot_id(), s.timestamp_ms()))
            .collect();
        s.sort_by_key(|&(_, ts)| ts);
        s
    })
}

/// The lineage of every row of the trades table as of `snapshot_id` (time travel).
fn lineage_at(env: &TestEnv, snapshot_id: i64) -> Vec<Key> {
    k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(env).await;
        let table = catalog.load_table(&trades_ident()).await.unwrap();
        let scan = table
            .scan()
            .snapshot_id(snapshot_id)
            .select_all()
            .build()
            .unwrap();
        let batches = scan.to_arrow().await.unwrap().try_collect().await.unwrap();
        let mut keys = Scanned {
            batches,
            files: Vec::new(),
            snapshots: Vec::new(),
        }
        .lineage();
        keys.sort();
        keys
    })
}

fn maintain(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["maintain"];
    all.extend_from_slice(args);
    let out = env.run("k2-admin", &all);
    assert!(
        out.status.success(),
        "k2-admin {all:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Snapshots older than the window expire while the sink keeps committing: a snapshot
/// inside the window still reads exactly as before, the oldest are gone, and the sink
/// neither re-reads nor doubles anything (its offsets live in a table property).
#[test]
fn expiry_beside_a_running_sink_keeps_the_window_and_loses_nothing() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var("K2_SINK__COMMIT__INTERVAL", "300ms")
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "2");
    env.create_topics();
    let background = BackgroundFeed::start(&env, 200, 1);
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    wait_until(&env, log, "20 snapshots", Duration::from_secs(90), || {
        snapshots(&env).len() >= 20
    });
    let (pinned, pinned_ms) = *snapshots(&env).last().unwrap();
    let pinned_rows = lineage_at(&env, pinned);
    std::thread::sleep(Duration::from_secs(2));

    // The window reaches 3 s before the pinned snapshot (the margin covers k2-admin's start).
    let now_ms = chrono::Utc::now().timestamp_millis();
    let window = format!("{}ms", now_ms - pinned_ms + 3_000);
    env.var("K2_MAINTENANCE__SNAPSHOT_RETENTION", &window);
    let before = snapshots(&env);
    let dry = maintain(&env, &["expire", "--table", "trades", "--dry-run"]);
    assert!(dry.contains("snapshots would expire"), "{dry}");
    assert!(
        snapshots(&env).len() >= before.len(),
        "a dry run changes nothing"
    );
    let out = maintain(&env, &["expire"]);
    let after = snapshots(&env);
    let ids: BTreeSet<i64> = after.iter().map(|s| s.0).collect();
    assert!(
        !ids.contains(&before[0].0),
        "the oldest snapshot expired:\n{out}"
    );
    assert!(
        ids.contains(&pinned),
        "the pinned snapshot is in the window"
    );
    assert!(
        after.iter().all(|&(_, ts)| ts >= pinned_ms - 3_000 - 5_000),
        "nothing older than the window (and its margin) is left:\n{out}"
    );
    assert_eq!(
        lineage_at(&env, pinned),
        pinned_rows,
        "the pinned snapshot reads as before"
    );

    // The sink goes on committing; everything lands once, nothing re-read.
    std::thread::sleep(Duration::from_secs(2));
    let expected = background.finish();
    let landed = || rt_scan(&env, "trades").rows() + rt_scan(&env, "quotes").rows();
    wait_until(
        &env,
        log,
        "everything landed",
        Duration::from_secs(90),
        || landed() >= expected.len(),
    );
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(60)).success());
    let all = trades_and_quotes(&env);
    assert_exactly_once(&all, &expected, "after expiry beside the sink");
    let text = env.log(log);
    assert!(
        !text.contains("re-reading partition") && !text.contains("another writer advanced"),
        "the sink re-read after the expiry:\n{text}"
    );
}

/// Puts `bytes` at `name` under the trades table's data directory, through the warehouse's
/// own object store; returns its URI.
fn plant(env: &TestEnv, name: &str) -> String {
    k2_tests::runtime().block_on(async {
        let config = env.k2_config();
        let catalog = tables::catalog(env).await;
        let table = catalog.load_table(&trades_ident()).await.unwrap();
        let located = k2_common::warehouse::locate(&config, table.metadata().location()).unwrap();
        let path = located.prefix.child("data").child(name);
        located
            .store
            .put(
                &path,
                object_store::PutPayload::from_static(b"not a data file"),
            )
            .await
            .unwrap();
        located.uri(&path)
    })
}

fn exists(env: &TestEnv, uri: &str) -> bool {
    let (dir, name) = uri.rsplit_once('/').unwrap();
    k2_tests::runtime().block_on(async {
        let config = env.k2_config();
        let located = k2_common::warehouse::locate(&config, dir).unwrap();
        located
            .store
            .head(&located.prefix.child(name))
            .await
            .is_ok()
    })
}

/// Three sink runs leave snapshots and files; one orphan is planted, old enough, and one
/// just before the cleanup. Expiry then cleanup delete the old orphan and the files only
/// expired snapshots referenced; the young orphan stays; the table reads complete.
fn cleanup_deletes_only_unreferenced_files_old_enough(env: &mut TestEnv) {
    env.var("K2_MAINTENANCE__MIN_SNAPSHOTS", "1")
        .var("K2_MAINTENANCE__SNAPSHOT_RETENTION", "0s")
        .var("K2_MAINTENANCE__ORPHAN_MIN_AGE", "3s");
    env.create_topics();
    let rt = k2_tests::runtime();
    let topic = env.topic(&env.asx, "trades");
    let mut expected: BTreeSet<Key> = BTreeSet::new();
    for round in 0..3 {
        let raws: Vec<_> = feed::trades(
            &topic,
            &env.asx,
            "equities",
            &ASX_SYMBOLS,
            1 + round * 50,
            200,
        )
        .into_iter()
        .map(|(r, _)| r)
        .collect();
        expected.extend(produce(&rt, &Feed::new(), &raws));
        env.sink_once(&[], Duration::from_secs(120));
    }
    assert!(snapshots(env).len() >= 3);
    let old = plant(env, "orphan-old.parquet");
    std::thread::sleep(Duration::from_secs(4));
    let young = plant(env, "orphan-young.parquet");

    let dry = maintain(env, &["clean", "--table", "trades", "--dry-run"]);
    assert!(
        dry.contains(&old),
        "the dry run lists the old orphan:\n{dry}"
    );
    assert!(!dry.contains(&young), "{dry}");
    assert!(exists(env, &old), "a dry run deletes nothing");

    let would = maintain(env, &["expire", "--table", "trades", "--dry-run"]);
    let out = maintain(env, &["all", "--table", "trades"]);
    // "market_data.trades: 2 of 3 snapshots expired, 1 kept": the dry run's plan is the
    // action's.
    let count = |text: &str, verb: &str| {
        let line = text.lines().find(|l| l.contains(verb))?;
        line.split(": ")
            .nth(1)?
            .split(' ')
            .next()
            .map(str::to_string)
    };
    assert_eq!(
        count(&would, "snapshots would expire"),
        count(&out, "snapshots expired"),
        "{would}{out}"
    );
    assert!(!exists(env, &old), "the old orphan is deleted:\n{out}");
    assert!(exists(env, &young), "the young orphan stays:\n{out}");
    assert_eq!(snapshots(env).len(), 1, "{out}");
    assert_exactly_once(&rt_scan(env, "trades"), &expected, "after cleanup");

    // Once old enough, what only the expired snapshots referenced goes too: a second
    // cleanup finds every file left referenced except the young orphan.
    std::thread::sleep(Duration::from_secs(4));
    let out = maintain(env, &["clean", "--table", "trades"]);
    assert!(!exists(env, &young), "{out}");
    assert!(
        out.contains("unreferenced deleted") && !out.contains(" 0 unreferenced deleted"),
        "the expired snapshots' files were deleted:\n{out}"
    );
    let again = maintain(env, &["clean", "--table", "trades", "--dry-run"]);
    assert!(
        again.contains(" 0 unreferenced would be deleted") && again.contains(" 0 unreferenced but"),
        "{again}"
    );
    assert_exactly_once(
        &rt_scan(env, "trades"),
        &expected,
        "after the second cleanup",
    );
}

#[test]
fn cleanup_on_a_local_warehouse() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

/// A store path percent-encodes characters such as `~`; the files Iceberg names must still
/// be recognised as referenced (misread, every file would look like an orphan).
#[test]
fn cleanup_on_a_local_warehouse_with_a_tilde_in_its_path() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    let location = format!("file://{}/ware~house", env.dir.path().display());
    env.var("K2_WAREHOUSE__LOCATION", &location);
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

#[test]
fn cleanup_on_an_s3_warehouse() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_s3_warehouse();
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

#[test]
fn cleanup_on_the_rest_catalog() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_rest_catalog();
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}
