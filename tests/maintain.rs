//! `k2-admin maintain` against the real catalog and warehouse (local disk and S3), beside a
//! running sink: snapshot expiry keeps the time-travel window and loses no offsets; cleanup
//! deletes exactly the unreferenced files old enough to be safe.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::TryStreamExt;
use iceberg::{NamespaceIdent, TableIdent};
use k2_tests::engines::{At, duckdb_reads, pyiceberg_reads};
use k2_tests::feed::{self, ASX_SYMBOLS, Feed};
use k2_tests::sink::{
    BackgroundFeed, Key, assert_exactly_once, metrics_address, produce, rt_scan, scrape_counter,
    signal, trades_and_quotes, wait_exit, wait_for_assignment, wait_until,
};
use k2_tests::tables::{self, Scanned};
use k2_tests::{TestEnv, ensure_services, stderr, stdout};

/// Services up, a fresh environment with two ASX and one Binance partitions per topic.
fn small_env() -> TestEnv {
    ensure_services();
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    env
}

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

fn lineage_sums(keys: &[Key]) -> (i64, i64) {
    (keys.len() as i64, keys.iter().map(|k| k.2).sum())
}

/// Snapshots older than the window expire while the sink keeps committing: a snapshot
/// inside the window still reads exactly as before, the oldest are gone, and the sink
/// neither re-reads nor doubles anything (its offsets live in a table property).
#[test]
fn expiry_beside_a_running_sink_keeps_the_window_and_loses_nothing() {
    let mut env = small_env();
    env.var("K2_SINK__COMMIT__INTERVAL", "300ms")
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "2");
    env.create_topics();
    let background = BackgroundFeed::start(&env, 200, 1);
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    // Snapshots spanning more than the margin below, so that some lie before the window
    // whenever k2-admin reads its clock.
    const MARGIN_MS: i64 = 15_000;
    wait_until(
        &env,
        log,
        "snapshots over 16 s",
        Duration::from_secs(120),
        || {
            let s = snapshots(&env);
            s.len() >= 2 && s[s.len() - 1].1 - s[0].1 > MARGIN_MS + 1_000
        },
    );
    let (pinned, pinned_ms) = *snapshots(&env).last().unwrap();
    let pinned_rows = lineage_at(&env, pinned);
    std::thread::sleep(Duration::from_secs(2));

    // The window reaches MARGIN_MS before the pinned snapshot as seen from now; k2-admin
    // reads its clock later, which only moves the window's start later (towards the pinned
    // snapshot, reached only if the dry run and the start took longer than the margin).
    let now_ms = chrono::Utc::now().timestamp_millis();
    let window = format!("{}ms", now_ms - pinned_ms + MARGIN_MS);
    env.var("K2_MAINTENANCE__SNAPSHOT_RETENTION", &window);
    let before = snapshots(&env);
    let dry = env.maintain(&["expire", "--table", "trades", "--dry-run"]);
    assert!(dry.contains("snapshots would expire"), "{dry}");
    assert!(
        snapshots(&env).len() >= before.len(),
        "a dry run changes nothing"
    );
    let out = env.maintain(&["expire"]);
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
        after.iter().all(|&(_, ts)| ts >= pinned_ms - MARGIN_MS),
        "nothing older than the window is left:\n{out}"
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
        // As cleanup reports files: one spelling per file, whatever the table's location.
        k2_common::warehouse::canonical_uri(&located.uri(&path))
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

/// `rounds` batches of `per_round` ASX trades, each landed by its own `k2-sink --once` (a
/// snapshot and a file per partition each); returns their keys.
fn land_rounds(env: &TestEnv, rounds: i64, per_round: usize) -> BTreeSet<Key> {
    let rt = k2_tests::runtime();
    let mut expected = BTreeSet::new();
    for round in 0..rounds {
        expected.extend(produce(
            &rt,
            &Feed::new(),
            &asx_trades(env, 1 + round * 1_000, per_round),
        ));
        env.sink_once(&[], Duration::from_secs(120));
    }
    expected
}

/// `n` ASX trades, sequence numbers from `first_seq`.
fn asx_trades(env: &TestEnv, first_seq: i64, n: usize) -> Vec<k2_tests::feed::Raw> {
    let topic = env.topic(&env.asx, "trades");
    feed::trades(&topic, &env.asx, "equities", &ASX_SYMBOLS, first_seq, n)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// Three sink runs leave snapshots and files, and compaction rewrites them (every row once,
/// fewer files, each sorted); one orphan is planted, old enough, and one just before the
/// cleanup. Expiry then cleanup delete the old orphan and the files only expired snapshots
/// referenced (the compacted-away ones among them); the young orphan stays; the table
/// reads complete.
fn cleanup_deletes_only_unreferenced_files_old_enough(env: &mut TestEnv) {
    env.var("K2_MAINTENANCE__MIN_SNAPSHOTS", "1")
        .var("K2_MAINTENANCE__ORPHAN_MIN_AGE", "3s");
    env.create_topics();
    let expected = land_rounds(env, 3, 200);
    // Every snapshot older than a second is outside the window (a window needs a commit
    // interval no longer than itself).
    env.var("K2_MAINTENANCE__SNAPSHOT_RETENTION", "1s")
        .var("K2_SINK__COMMIT__INTERVAL", "1s");
    assert!(snapshots(env).len() >= 3);
    let files_before = rt_scan(env, "trades").files.len();
    let out = env.maintain(&["compact", "--table", "trades", "--older-than", "0s"]);
    let compacted = rt_scan(env, "trades");
    assert_exactly_once(&compacted, &expected, "after compaction");
    assert!(
        compacted.files.len() < files_before,
        "{files_before} files before, {} after:\n{out}",
        compacted.files.len()
    );
    if compacted.files[0].starts_with("file:") || compacted.files[0].starts_with('/') {
        tables::check_files(&compacted);
    }
    let old = plant(env, "orphan-old.parquet");
    std::thread::sleep(Duration::from_secs(4));
    let young = plant(env, "orphan-young.parquet");

    let dry = env.maintain(&["clean", "--table", "trades", "--dry-run"]);
    assert!(
        dry.contains(&old),
        "the dry run lists the old orphan:\n{dry}"
    );
    assert!(!dry.contains(&young), "{dry}");
    assert!(exists(env, &old), "a dry run deletes nothing");

    let would = env.maintain(&["expire", "--table", "trades", "--dry-run"]);
    let out = env.maintain(&["all", "--table", "trades"]);
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
    let out = env.maintain(&["clean", "--table", "trades"]);
    assert!(!exists(env, &young), "{out}");
    assert!(
        out.contains("unreferenced deleted") && !out.contains(" 0 unreferenced deleted"),
        "the expired snapshots' files were deleted:\n{out}"
    );
    let again = env.maintain(&["clean", "--table", "trades", "--dry-run"]);
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
    let mut env = small_env();
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

/// A store path percent-encodes characters such as `~`; the files Iceberg names must still
/// be recognised as referenced (misread, every file would look like an orphan).
/// Tables K2 created before it cleaned its configured paths carry `config/..` in their
/// location, and so in every file's URI. The sink keeps writing into them, maintenance
/// compacts them, and cleanup still tells referenced files from orphans (it compares one
/// spelling per file) — while a table created now is spelled without `..`.
#[test]
fn cleanup_on_a_table_located_with_the_old_spelling() {
    use k2_common::data_type::DataType;
    use k2_common::schema::BuiltinSchema;
    use k2_table::layout::{TableLayout, ensure_table};
    let mut env = small_env();
    let mut old = env.k2_config();
    let state = old.state_dir.clone();
    assert!(
        !old.warehouse.location.contains(".."),
        "{}",
        old.warehouse.location
    );
    std::fs::create_dir_all(state.join("config")).unwrap();
    old.warehouse.location = format!("file://{}/config/../warehouse", state.display());
    k2_tests::runtime().block_on(async {
        let catalog = k2_common::catalog::connect(&old).await.unwrap();
        for data_type in DataType::ALL {
            let layout =
                TableLayout::new(data_type, &BuiltinSchema::for_data_type(data_type).parse())
                    .unwrap();
            ensure_table(catalog.as_ref(), &layout).await.unwrap();
        }
        let events = TableLayout::sequence_events().unwrap();
        ensure_table(catalog.as_ref(), &events).await.unwrap();
    });
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
    let scanned = rt_scan(&env, "trades");
    assert!(
        scanned.files.iter().all(|f| f.contains("/config/../")),
        "written under the table's own location: {:?}",
        scanned.files
    );
}

#[test]
fn cleanup_on_a_local_warehouse_with_a_tilde_in_its_path() {
    let mut env = small_env();
    let location = format!("file://{}/ware~house", env.dir.path().display());
    env.var("K2_WAREHOUSE__LOCATION", &location);
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

#[test]
fn cleanup_on_an_s3_warehouse() {
    let mut env = small_env();
    env.use_s3_warehouse();
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

#[test]
fn cleanup_on_the_rest_catalog() {
    let mut env = small_env();
    env.use_rest_catalog();
    cleanup_deletes_only_unreferenced_files_old_enough(&mut env);
}

/// The sink keeps committing (today's partitions receiving data) while compaction rewrites
/// every partition: afterwards every record is in the tables exactly once, a snapshot read
/// from before the compaction returns exactly what it did, the compaction is one `replace`
/// snapshot per partition with as many rows deleted as added, its files are sorted, and the
/// sink was never fenced nor re-read anything.
#[test]
fn compaction_beside_a_running_sink_keeps_every_row_once() {
    let mut env = small_env();
    env.var("K2_SINK__COMMIT__INTERVAL", "300ms");
    env.create_topics();
    let background = BackgroundFeed::start(&env, 400, 1);
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    wait_until(&env, log, "15 snapshots", Duration::from_secs(90), || {
        snapshots(&env).len() >= 15
    });
    let (before, _) = *snapshots(&env).last().unwrap();
    let rows_before = lineage_at(&env, before);

    let out = env.maintain(&["compact", "--older-than", "0s"]);
    assert!(
        out.contains("partitions compacted")
            && !out.contains("trades: 0 partitions")
            && !out.contains("left for the next run"),
        "{out}"
    );
    assert_eq!(
        lineage_at(&env, before),
        rows_before,
        "time travel to before"
    );

    std::thread::sleep(Duration::from_secs(2));
    let expected = background.finish();
    wait_until(
        &env,
        log,
        "everything landed",
        Duration::from_secs(90),
        || trades_and_quotes(&env).rows() >= expected.len(),
    );
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(60)).success());
    assert_exactly_once(
        &trades_and_quotes(&env),
        &expected,
        "after compaction beside the sink",
    );

    let replaces = k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(&env).await;
        let table = catalog.load_table(&trades_ident()).await.unwrap();
        table
            .metadata()
            .snapshots()
            .filter(|s| s.summary().operation == iceberg::spec::Operation::Replace)
            .map(|s| s.summary().additional_properties.clone())
            .collect::<Vec<_>>()
    });
    assert!(!replaces.is_empty(), "a replace snapshot");
    for r in &replaces {
        assert_eq!(r["added-records"], r["deleted-records"], "{r:?}");
    }
    let compacted: Vec<String> = rt_scan(&env, "trades")
        .files
        .into_iter()
        .filter(|f| f.contains("k2-compact-"))
        .collect();
    assert!(!compacted.is_empty());
    tables::check_files(&Scanned {
        batches: Vec::new(),
        files: compacted,
        snapshots: Vec::new(),
    });
    let text = env.log(log);
    assert!(
        !text.contains("re-reading partition") && !text.contains("another writer advanced"),
        "the sink was fenced:\n{text}"
    );
    // Two independent readers agree, now and as of the snapshot before the compaction.
    let trades_now = rt_scan(&env, "trades").lineage();
    assert_eq!(
        duckdb_reads(&env, At::Current),
        lineage_sums(&trades_now),
        "iceberg_scan now"
    );
    assert_eq!(
        duckdb_reads(&env, At::Snapshot(before)),
        lineage_sums(&rows_before),
        "iceberg_scan before the compaction"
    );
    assert_eq!(
        pyiceberg_reads(&env, At::Current),
        lineage_sums(&trades_now),
        "PyIceberg now"
    );
    assert_eq!(
        pyiceberg_reads(&env, At::Snapshot(before)),
        lineage_sums(&rows_before),
        "PyIceberg before the compaction"
    );
    // What the sink committed after the compaction is compacted by the next run; a run
    // after that finds nothing left to do.
    env.maintain(&["compact", "--older-than", "0s"]);
    assert_exactly_once(
        &trades_and_quotes(&env),
        &expected,
        "after the second compaction",
    );
    let again = env.maintain(&["compact", "--older-than", "0s", "--dry-run"]);
    assert!(
        again.contains("trades: 0 partitions would be compacted"),
        "{again}"
    );
}

/// `kill -9` at each step of a compaction's commit (stopped there by a fail point), then at
/// random moments: after each the table reads every record exactly once (as before, or
/// compacted); a final run completes, and cleanup removes what the killed runs left behind
/// without touching anything referenced.
#[test]
fn kill_9_during_compaction_leaves_the_table_whole() {
    use rand::Rng;
    let mut env = small_env();
    env.var("K2_MAINTENANCE__ORPHAN_MIN_AGE", "2s")
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "1");
    env.create_topics();
    let expected = land_rounds(&env, 6, 2_000);
    env.var("K2_MAINTENANCE__SNAPSHOT_RETENTION", "1s")
        .var("K2_SINK__COMMIT__INTERVAL", "1s");
    // At each step of the protocol: files written; manifests and manifest list written;
    // the next metadata file written but the catalog not yet swapped to it.
    for point in [
        "compact-after-write",
        "compact-after-stage",
        "commit-after-metadata-write",
    ] {
        let log = format!("compact-{point}.log");
        env.var("FAILPOINTS", &format!("{point}=sleep(60000)"));
        let mut run = env.spawn(
            "k2-admin",
            &[
                "maintain",
                "compact",
                "--table",
                "trades",
                "--older-than",
                "0s",
            ],
            &log,
        );
        env.vars.pop();
        wait_until(
            &env,
            &log,
            &format!("stopped at {point}"),
            Duration::from_secs(60),
            || env.log(&log).contains(&format!("fail_point=\"{point}\"")),
        );
        run.kill().unwrap();
        run.wait().unwrap();
        assert_exactly_once(
            &rt_scan(&env, "trades"),
            &expected,
            &format!("after kill -9 at {point}"),
        );
        assert!(
            snapshots(&env).len() == 6,
            "nothing committed by a compaction killed at {point}"
        );
    }
    // Then at random moments, each step stretched by 300 ms so that the moments fall all
    // over the run (it takes a few milliseconds otherwise).
    env.var(
        "FAILPOINTS",
        "compact-after-write=sleep(300);compact-after-stage=sleep(300);\
         commit-after-metadata-write=sleep(300)",
    );
    let mut rng = rand::rng();
    let mut killed_before_the_end = 0;
    for i in 0..5 {
        let log = format!("compact-{i}.log");
        let mut run = env.spawn(
            "k2-admin",
            &[
                "maintain",
                "compact",
                "--table",
                "trades",
                "--older-than",
                "0s",
            ],
            &log,
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(50..1_500)));
        if run.try_wait().unwrap().is_none() {
            killed_before_the_end += 1;
        }
        run.kill().unwrap();
        run.wait().unwrap();
        assert_exactly_once(
            &rt_scan(&env, "trades"),
            &expected,
            &format!("after kill {i}:\n{}", env.log(&log)),
        );
    }
    env.vars.pop();
    eprintln!("{killed_before_the_end} of 5 runs killed before they finished");
    env.maintain(&["compact", "--table", "trades", "--older-than", "0s"]);
    std::thread::sleep(Duration::from_secs(3));
    let out = env.maintain(&["all", "--table", "trades"]);
    assert_exactly_once(
        &rt_scan(&env, "trades"),
        &expected,
        &format!("after cleanup:\n{out}"),
    );
    let again = env.maintain(&["clean", "--table", "trades", "--dry-run"]);
    assert!(
        again.contains(" 0 unreferenced would be deleted"),
        "{again}"
    );
}

/// A sink commit lands between staging a compaction and committing it (the compaction held
/// at a fail point meanwhile): the compaction's commit conflicts, it stages again on the new
/// head and lands; the sink's records and the compacted ones are all there, once.
#[test]
fn a_sink_commit_during_a_compaction_makes_it_stage_again() {
    let mut env = small_env();
    env.create_topics();
    let mut expected = land_rounds(&env, 3, 300);
    let log = "compact.log";
    env.var("FAILPOINTS", "compact-after-stage=1*sleep(8000)");
    let mut run = env.spawn(
        "k2-admin",
        &[
            "maintain",
            "compact",
            "--table",
            "trades",
            "--older-than",
            "0s",
        ],
        log,
    );
    env.vars.pop();
    wait_until(
        &env,
        log,
        "the compaction staged",
        Duration::from_secs(60),
        || env.log(log).contains("fail_point=\"compact-after-stage\""),
    );
    expected.extend(produce(
        &k2_tests::runtime(),
        &Feed::new(),
        &asx_trades(&env, 5_000, 300),
    ));
    env.sink_once(&[], Duration::from_secs(120));
    let status = wait_exit(&mut run, Duration::from_secs(60));
    let text = env.log(log);
    assert!(status.success(), "{status}:\n{text}");
    assert!(
        text.contains("compaction conflicted with another commit; staging again"),
        "{text}"
    );
    assert_exactly_once(&rt_scan(&env, "trades"), &expected, "after the conflict");
}

/// `maintain all --every 1s` runs again and again, serves its metrics, and stops cleanly on
/// SIGTERM.
#[test]
fn scheduled_maintenance_runs_until_told_to_stop_and_reports_metrics() {
    let env = small_env();
    env.create_topics();
    land_rounds(&env, 2, 200);
    let log = "maintain.log";
    let mut run = env.spawn(
        "k2-admin",
        &["maintain", "all", "--older-than", "0s", "--every", "1s"],
        log,
    );
    let address = metrics_address(&env, log);
    // Three steps over four tables per run.
    wait_until(&env, log, "two runs", Duration::from_secs(60), || {
        scrape_counter(&address, "k2_maintenance_runs_total") >= 24
    });
    assert!(scrape_counter(&address, "k2_maintenance_files_rewritten_total") >= 2);
    assert!(scrape_counter(&address, "k2_maintenance_partitions_compacted_total") >= 1);
    signal(&run, "TERM");
    let status = wait_exit(&mut run, Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", env.log(log));
    let text = env.log(log);
    assert!(!text.contains("FAILED"), "{text}");
}

/// The catalog applies a compaction's commit but the reply is lost (a fail point returns an
/// error after the swap): the retry finds its snapshot in the table and reports the
/// partition compacted, committing nothing twice.
#[test]
fn a_compaction_whose_reply_was_lost_is_recognised_not_repeated() {
    let mut env = small_env();
    env.create_topics();
    let expected = land_rounds(&env, 3, 300);
    let snapshots_before = snapshots(&env).len();
    env.var("FAILPOINTS", "commit-lost-reply=1*return");
    let run = env.run(
        "k2-admin",
        &[
            "maintain",
            "compact",
            "--table",
            "trades",
            "--older-than",
            "0s",
        ],
    );
    env.vars.pop();
    let (out, log) = (stdout(&run), stderr(&run));
    assert!(run.status.success(), "{out}{log}");
    assert!(
        log.contains("an earlier attempt landed; not committing again"),
        "{log}"
    );
    let partitions: usize = out
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        partitions >= 1 && !out.contains("left for the next run"),
        "{out}"
    );
    assert_eq!(
        snapshots(&env).len(),
        snapshots_before + partitions,
        "one replace snapshot per partition, none twice"
    );
    assert_exactly_once(&rt_scan(&env, "trades"), &expected, "after the lost reply");
}
