//! k2-sink against the real broker and the embedded catalog: values, partitions, sort
//! order, exactly-once across restarts, kill -9 and a second sink, dead letters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k2_common::config::GroupProtocol;
use k2_common::records::{Quote, Trade};
use k2_tests::feed::{self, ASX_SYMBOLS, CRYPTO_SYMBOLS, Feed, Raw};
use k2_tests::poison::{self, poison_records};
use k2_tests::sink::{
    BackgroundFeed, Key, assert_exactly_once, feed_topics, http_get, kill9, metrics_address,
    produce, produce_round, rt_scan, scrape_counter, scrape_gauge, scrape_samples, signal,
    trades_and_quotes, wait_exit, wait_for_assignment, wait_until,
};
use k2_tests::tables::{self, Scanned};
use k2_tests::{Spawned, TestEnv, ensure_services, env_or};

struct Market {
    trades: BTreeMap<Key, Trade>,
    quotes: BTreeMap<Key, Quote>,
}

/// Produces trades and quotes on both exchanges; sequence numbers start at `first_seq`.
fn produce_market(
    env: &TestEnv,
    rt: &tokio::runtime::Runtime,
    feed: &Feed,
    first_seq: i64,
    scale: usize,
) -> Market {
    let mut trades = BTreeMap::new();
    let mut quotes = BTreeMap::new();
    for (exchange, asset_class, symbols) in [
        (&env.asx, "equities", &ASX_SYMBOLS[..]),
        (&env.binance, "crypto", &CRYPTO_SYMBOLS[..]),
    ] {
        let t = feed::trades(
            &env.topic(exchange, "trades"),
            exchange,
            asset_class,
            symbols,
            first_seq,
            3 * scale,
        );
        let raws: Vec<Raw> = t.iter().map(|(r, _)| r.clone()).collect();
        for (k, (_, trade)) in produce(rt, feed, &raws).into_iter().zip(t) {
            trades.insert(k, trade);
        }
        let q = feed::quotes(
            &env.topic(exchange, "quotes"),
            exchange,
            asset_class,
            symbols,
            first_seq,
            2 * scale,
        );
        let raws: Vec<Raw> = q.iter().map(|(r, _)| r.clone()).collect();
        for (k, (_, quote)) in produce(rt, feed, &raws).into_iter().zip(q) {
            quotes.insert(k, quote);
        }
    }
    Market { trades, quotes }
}

fn check_trade_values(scanned: &Scanned, expected: &BTreeMap<Key, Trade>) {
    let lineage = scanned.lineage();
    let mut i = 0;
    for b in &scanned.batches {
        let symbol = tables::strings(b, "symbol");
        let exchange = tables::strings(b, "exchange");
        let price = tables::decimals(b, "price");
        let quantity = tables::decimals(b, "quantity");
        let seq = tables::longs(b, "sequence_number");
        let ts = tables::timestamps(b, "exchange_timestamp");
        let side = tables::strings(b, "side");
        for r in 0..b.num_rows() {
            let t = &expected[&lineage[i]];
            assert_eq!(symbol.value(r), t.envelope.symbol);
            assert_eq!(exchange.value(r), t.envelope.exchange);
            assert_eq!(price.value(r), t.price.0, "price of {:?}", lineage[i]);
            assert_eq!(quantity.value(r), t.quantity.0);
            assert_eq!(seq.value(r), t.envelope.sequence_number);
            assert_eq!(ts.value(r), t.envelope.exchange_timestamp);
            let want_side = match t.side {
                Some(k2_common::records::Side::Buy) => "BUY",
                Some(k2_common::records::Side::Sell) => "SELL",
                _ => "UNKNOWN",
            };
            assert_eq!(side.value(r), want_side);
            i += 1;
        }
    }
}

fn check_quote_values(scanned: &Scanned, expected: &BTreeMap<Key, Quote>) {
    let lineage = scanned.lineage();
    let mut i = 0;
    for b in &scanned.batches {
        let bid = tables::decimals(b, "bid_price");
        let ask = tables::decimals(b, "ask_price");
        let bid_size = tables::decimals(b, "bid_size");
        for r in 0..b.num_rows() {
            let q = &expected[&lineage[i]];
            assert_eq!(tables::opt_decimal(bid, r), q.bid_price.map(|d| d.0));
            assert_eq!(tables::opt_decimal(ask, r), q.ask_price.map(|d| d.0));
            assert_eq!(bid_size.value(r), q.bid_size.0);
            i += 1;
        }
    }
}

#[test]
fn lands_every_record_once_with_values_partitions_and_sort_order() {
    let env = TestEnv::ready(3, 2, "1s");
    let rt = k2_tests::runtime();
    let feed = Feed::new();

    let first = produce_market(&env, &rt, &feed, 1, 200);
    env.sink_once(&[], Duration::from_secs(180));

    let trades = rt.block_on(tables::scan(&env, "trades"));
    let quotes = rt.block_on(tables::scan(&env, "quotes"));
    let trade_keys: BTreeSet<Key> = first.trades.keys().cloned().collect();
    let quote_keys: BTreeSet<Key> = first.quotes.keys().cloned().collect();
    assert_exactly_once(&trades, &trade_keys, "trades after the first run");
    assert_exactly_once(&quotes, &quote_keys, "quotes after the first run");
    check_trade_values(&trades, &first.trades);
    check_quote_values(&quotes, &first.quotes);
    tables::check_files(&trades);
    tables::check_files(&quotes);
    // Sorted, and saying so: every file names the table's sort order (engines that plan
    // by it, e.g. Spark's compaction, read an absent id as "unsorted").
    for table in ["trades", "quotes"] {
        let (order, files) = rt.block_on(tables::sort_order_ids(&env, table));
        assert!(order > 0, "{table} declares a sort order");
        assert!(
            !files.is_empty() && files.iter().all(|id| *id == Some(order as i32)),
            "{table}: {files:?}, order {order}"
        );
    }
    let summary = trades.snapshots.last().expect("a snapshot");
    assert!(summary.contains_key("k2.kafka-offsets"), "{summary:?}");
    assert_eq!(summary["k2.consumer-group"], env.group);

    // A clean restart with nothing new adds nothing.
    env.sink_once(&[], Duration::from_secs(180));
    let again = rt.block_on(tables::scan(&env, "trades"));
    assert_exactly_once(&again, &trade_keys, "trades after an idle restart");

    // New data after a restart continues exactly where the table left off.
    let second = produce_market(&env, &rt, &feed, 1_000, 100);
    env.sink_once(&[], Duration::from_secs(180));
    let mut all_trades = first.trades.clone();
    all_trades.extend(second.trades);
    let mut all_quotes = first.quotes.clone();
    all_quotes.extend(second.quotes);
    let trades = rt.block_on(tables::scan(&env, "trades"));
    let quotes = rt.block_on(tables::scan(&env, "quotes"));
    assert_exactly_once(
        &trades,
        &all_trades.keys().cloned().collect(),
        "trades after more data",
    );
    assert_exactly_once(
        &quotes,
        &all_quotes.keys().cloned().collect(),
        "quotes after more data",
    );
    check_trade_values(&trades, &all_trades);
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_reasons_and_good_ones_land() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    poison::register_trade_without_price(&mut env, 9);
    env.create_topics();
    let rt = k2_tests::runtime();
    let feed = Feed::new();

    // Good records around and between the bad ones, in the same decode batches.
    let poison = poison_records(&env, 9);
    let topic = env.topic(&env.asx, "trades");
    let quotes_topic = env.topic(&env.asx, "quotes");
    let mut records = Vec::new();
    let mut good = BTreeSet::new();
    let mut is_good = Vec::new();
    let mut seq = 100;
    for p in &poison {
        for _ in 0..3 {
            seq += 1;
            let (t, qt) = (p.raw.topic == topic, p.raw.topic == quotes_topic);
            let r = if t {
                feed::trade_record(&topic, &feed::trade(&env.asx, "equities", "NAB", seq))
            } else {
                assert!(qt);
                feed::quote_record(
                    &quotes_topic,
                    &feed::quote(&env.asx, "equities", "NAB", seq),
                )
            };
            records.push(r);
            is_good.push(true);
        }
        records.push(p.raw.clone());
        is_good.push(false);
    }
    let keys = produce(&rt, &feed, &records);
    for (k, g) in keys.iter().zip(&is_good) {
        if *g {
            good.insert(k.clone());
        }
    }
    env.sink_once(&[], Duration::from_secs(180));

    let trades = rt.block_on(tables::scan(&env, "trades"));
    let quotes = rt.block_on(tables::scan(&env, "quotes"));
    let mut landed = Scanned {
        batches: trades.batches.into_iter().chain(quotes.batches).collect(),
        files: Vec::new(),
        snapshots: Vec::new(),
    };
    assert_exactly_once(&landed, &good, "good records around the poison");
    landed.batches.clear();

    let letters = feed::read_dead_letters(&env.dead_letter_topic);
    assert_eq!(
        letters.len(),
        poison.len(),
        "one dead letter per bad record"
    );
    let bad_keys: Vec<&Key> = keys
        .iter()
        .zip(&is_good)
        .filter(|(_, g)| !**g)
        .map(|(k, _)| k)
        .collect();
    let by_source: HashMap<Key, &feed::DeadLetter> = letters
        .iter()
        .map(|l| {
            (
                (
                    l.header("k2.source.topic").to_string(),
                    l.header("k2.source.partition").parse().unwrap(),
                    l.header("k2.source.offset").parse().unwrap(),
                ),
                l,
            )
        })
        .collect();
    for (p, key) in poison.iter().zip(bad_keys) {
        let l = by_source
            .get(key)
            .unwrap_or_else(|| panic!("no dead letter for {key:?} ({})", p.kind));
        assert_eq!(
            l.header("k2.error.kind"),
            p.kind,
            "{key:?}: {}",
            l.header("k2.error.message")
        );
        assert!(!l.header("k2.error.message").is_empty());
        assert!(!l.header("k2.sink.version").is_empty());
        assert!(!l.header("k2.timestamp").is_empty());
        assert_eq!(l.key, p.raw.key, "key bytes unchanged");
        assert_eq!(l.value, p.raw.value, "value bytes unchanged");
    }

    // Running again neither re-sends dead letters nor re-adds rows.
    env.sink_once(&[], Duration::from_secs(180));
    assert_eq!(
        feed::read_dead_letters(&env.dead_letter_topic).len(),
        poison.len()
    );
}

/// A sink configured to commit often (so kills land in and around commits) and to be
/// declared dead quickly by the group coordinator after a kill (topics not yet created).
/// Hardening 2: a poison record near the broker's 1 MB limit cannot be dead-lettered as
/// it is (K2's headers push it past the producer's `message.max.bytes`). It goes to the
/// dead-letter topic truncated, naming its source, and the sink carries on: the good
/// records around it land, nothing hangs.
#[test]
fn a_poison_record_too_large_to_dead_letter_is_sent_truncated() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let env = TestEnv::ready(1, 1, "500ms");
    let rt = k2_tests::runtime();
    let topic = env.topic(&env.asx, "trades");
    let before: Vec<Raw> = (1..=20)
        .map(|seq| feed::trade_record(&topic, &feed::trade(&env.asx, "equities", "BHP", seq)))
        .collect();
    let mut expected: BTreeSet<Key> = produce(&rt, &Feed::new(), &before).into_iter().collect();
    // Not Avro (bad magic byte), 1,040,000 bytes: under the broker's 1,048,588 but over
    // librdkafka's default 1,000,000 for the dead-letter producer.
    let big: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", k2_tests::BOOTSTRAP.as_str())
        .set("message.max.bytes", "1048576")
        .set("compression.type", "zstd")
        .create()
        .unwrap();
    let value = vec![0xEE_u8; 1_040_000];
    let (partition, offset) = rt
        .block_on(big.send(
            FutureRecord::to(&topic).key("BHP").payload(&value),
            Duration::from_secs(30),
        ))
        .map(|d| (d.partition, d.offset))
        .expect("the broker takes the large record");
    let after: Vec<Raw> = (21..=40)
        .map(|seq| feed::trade_record(&topic, &feed::trade(&env.asx, "equities", "BHP", seq)))
        .collect();
    expected.extend(produce(&rt, &Feed::new(), &after));

    env.sink_once(&[], Duration::from_secs(120));
    assert_exactly_once(
        &rt_scan(&env, "trades"),
        &expected,
        "around the large poison",
    );
    let letters = feed::read_dead_letters(&env.dead_letter_topic);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l.header("k2.source.topic"), topic);
    assert_eq!(l.header("k2.source.partition"), partition.to_string());
    assert_eq!(l.header("k2.source.offset"), offset.to_string());
    assert_eq!(l.header("k2.error.kind"), "bad_magic_byte");
    assert_eq!(l.header("k2.dead-letter.truncated"), "1040000");
    assert!(
        l.header("k2.dead-letter.error").contains("too large"),
        "{:?}",
        l.headers
    );
    assert_eq!(l.key.as_deref(), Some(&b"BHP"[..]));
    assert!(l.value.is_none());
}

/// Hardening 4: records deleted by retention before the sink read them (the sink was down
/// past `retention.ms`) are reported, not silently skipped: the restart finds its start
/// offset below the partition's first retained one, logs it as an error and counts it;
/// then it reads on from what is left.
#[test]
fn records_deleted_before_the_sink_read_them_are_reported() {
    let env = TestEnv::ready(1, 1, "500ms");
    let rt = k2_tests::runtime();
    let topic = env.topic(&env.asx, "trades");
    let batch = |from: i64| -> Vec<Raw> {
        (from..from + 100)
            .map(|seq| feed::trade_record(&topic, &feed::trade(&env.asx, "equities", "BHP", seq)))
            .collect()
    };
    let mut expected: BTreeSet<Key> = produce(&rt, &Feed::new(), &batch(1)).into_iter().collect();
    env.sink_once(&[], Duration::from_secs(120));
    let later = produce(&rt, &Feed::new(), &batch(101));
    // Retention deletes the first 50 of the records the sink has not read yet.
    let (_, partition, first_unread) = later[0].clone();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(
        &topic,
        partition,
        rdkafka::Offset::Offset(first_unread + 50),
    )
    .unwrap();
    rt.block_on(k2_tests::admin().delete_records(&tpl, &rdkafka::admin::AdminOptions::new()))
        .expect("delete records");
    expected.extend(later.into_iter().skip(50));

    let log = "after-retention.log";
    let mut child = env.spawn("k2-sink", &["--once"], log);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let text = env.log(log);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("ERROR") && text.contains("Deleted { low:"),
        "the deletion is reported:\n{text}"
    );
    assert_exactly_once(&rt_scan(&env, "trades"), &expected, "after retention");
}

fn crash_env() -> TestEnv {
    crash_env_with(GroupProtocol::Classic)
}

/// [`crash_env`] joining with this group protocol. With KIP-848 the broker sets the
/// session timeout (the local broker's `group.consumer.session.timeout.ms` is 10 s).
fn crash_env_with(protocol: GroupProtocol) -> TestEnv {
    let mut env = TestEnv::new();
    env.set_partitions(4, 3);
    env.var("K2_SINK__COMMIT__INTERVAL", "300ms")
        .var("K2_SINK__COMMIT__MAX_RECORDS", "5000")
        .var("K2_KAFKA__GROUP_PROTOCOL", protocol.as_str());
    if protocol == GroupProtocol::Classic {
        env.var(
            "K2_KAFKA__PROPERTIES",
            r#"{"session.timeout.ms"="6000","heartbeat.interval.ms"="1000"}"#,
        );
    }
    env
}

/// Kill -9 at random moments while records keep arriving, restart each time; in the end
/// every record is in the tables exactly once. `K2_CRASH_PRELOAD` (records produced before
/// the first sink starts), `K2_CRASH_CHUNK` (records per half second while the kills go on;
/// 0 for none) and `K2_CRASH_KILLS` scale it (`scripts/crash-test`: 1M preloaded).
#[test]
fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    ensure_services();
    let env = crash_env();
    env.create_topics();
    crash_run(
        &env,
        env_or("K2_CRASH_KILLS", 10),
        env_or("K2_CRASH_PRELOAD", 0),
        env_or("K2_CRASH_CHUNK", 1_000),
    );
}

/// The same in a KIP-848 group (`kafka.group_protocol = "consumer"`): the broker assigns
/// partitions and expires the killed member.
#[test]
fn kill_9_in_a_kip848_group_loses_and_doubles_nothing() {
    ensure_services();
    let env = crash_env_with(GroupProtocol::Consumer);
    env.create_topics();
    crash_run(&env, 4, 0, 1_000);
}

/// The same on the production storage path: the Iceberg REST catalog and an S3 warehouse
/// (SeaweedFS), where a commit is an HTTP call that a kill can cut anywhere.
#[test]
fn kill_9_on_a_rest_catalog_and_s3_loses_and_doubles_nothing() {
    ensure_services();
    let env = crash_env();
    env.use_rest_catalog();
    env.create_topics();
    crash_run(&env, 4, 0, 1_000);
}

fn crash_run(env: &TestEnv, kills: usize, preload: usize, chunk: usize) {
    use rand::Rng;
    let mut preloaded = BTreeSet::new();
    if preload > 0 {
        let (rt, feed, topics) = (k2_tests::runtime(), Feed::new(), feed_topics(env));
        for round in 0..preload.div_ceil(20_000) {
            let n = 20_000.min(preload - round * 20_000);
            preloaded.extend(produce_round(
                &rt,
                &feed,
                &topics,
                1 + (round * 5_000) as i64,
                n,
            ));
        }
    }
    let background = (chunk > 0).then(|| BackgroundFeed::start(env, chunk, 1_000_000_000));

    let mut rng = rand::rng();
    let mut committed_before_kill = Vec::new();
    for i in 0..kills {
        let log = format!("crash-{i}.log");
        let mut child = env.spawn("k2-sink", &[], &log);
        // Joining takes seconds (the killed member must time out first), so the clock
        // starts at the assignment; then a random moment: reading, writing, committing.
        wait_for_assignment(env, &log, &mut child);
        // Against a large backlog the first fetch can take a while: half of the kills
        // wait for the first commit, so they land among writes and commits rather than
        // all before them.
        if i % 2 == 1 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !env.log(&log).contains(" committed ") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..3_000)));
        kill9(&mut child);
        let text = env.log(&log);
        eprintln!("--- {log} ---\n{text}");
        committed_before_kill.push(text.matches(" committed ").count());
        // The restarted sink joins at once; the coordinator expires the killed member
        // (session.timeout.ms = 6 s) during that join.
    }
    let mut expected = preloaded;
    if let Some(b) = background {
        expected.extend(b.finish());
    }
    env.sink_once(
        &[],
        Duration::from_secs(600 + expected.len() as u64 / 1_000),
    );

    let all = trades_and_quotes(env);
    eprintln!(
        "{} records, commits before each kill: {committed_before_kill:?}",
        expected.len()
    );
    assert_exactly_once(&all, &expected, "after the kills");
    // The background feed's chunks leave sequence gaps; each is recorded at most once.
    let events = rt_scan(env, "sequence_events").lineage();
    let unique: BTreeSet<&Key> = events.iter().collect();
    assert_eq!(
        unique.len(),
        events.len(),
        "no sequence event recorded twice"
    );
    // Some kills land before a sink's first commit (also worth testing); most after.
    assert!(
        committed_before_kill.iter().filter(|c| **c > 0).count() >= kills.div_ceil(3),
        "too few killed sinks had committed anything: {committed_before_kill:?}"
    );
}

/// What an outside maintenance tool does: a snapshot of its own on top of K2's (no K2
/// offsets in its summary), and every snapshot below it expired, in one commit (retried
/// when the running sink commits first).
async fn outside_snapshot_then_expire_the_rest(env: &TestEnv, table: &str) {
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    let catalog = tables::catalog(env).await;
    let ident = iceberg::TableIdent::new(
        iceberg::NamespaceIdent::new("market_data".into()),
        table.into(),
    );
    // The running sink commits to the same catalog: a conflict (or a busy database) is
    // retried with the next attempt; the last error is shown if none succeeds.
    let last_error = std::cell::RefCell::new(String::new());
    let retry = |e: iceberg::Error| *last_error.borrow_mut() = format!("{e:#}");
    for _ in 0..100 {
        let t = catalog.load_table(&ident).await.expect("table");
        let tx = Transaction::new(&t);
        let tx = tx
            .fast_append()
            .set_snapshot_properties(HashMap::from([(
                "written-by".to_string(),
                "an outside tool".to_string(),
            )]))
            .apply(tx)
            .expect("append");
        let t = match tx.commit(catalog.as_ref()).await {
            Ok(t) => t,
            Err(e) => {
                retry(e);
                continue;
            }
        };
        let outside = t.metadata().current_snapshot_id();
        let tx = Transaction::new(&t);
        let tx = tx
            .expire_snapshots()
            .expire_older_than_ms(chrono::Utc::now().timestamp_millis() + 60_000)
            .retain_last(1)
            .apply(tx)
            .expect("expire");
        match tx.commit(catalog.as_ref()).await {
            // Unless the sink committed on top in between: then again.
            Ok(t) if t.metadata().current_snapshot_id() == outside => {
                assert_eq!(t.metadata().snapshots().count(), 1, "{table}");
                return;
            }
            Ok(_) => {}
            Err(e) => retry(e),
        }
    }
    panic!(
        "{table}: could not commit between the sink's commits: {}",
        last_error.borrow()
    );
}

/// Hardening 1: another tool expires K2's snapshots (leaving one of its own on top) while
/// the sink runs, and again before a restart. The offsets survive in the table
/// properties: nothing is re-read, nothing doubled.
#[test]
fn snapshots_expired_by_another_tool_lose_no_offsets() {
    ensure_services();
    let env = crash_env();
    env.create_topics();
    let rt = k2_tests::runtime();
    let background = BackgroundFeed::start(&env, 400, 1);
    let committed = |log: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while env.log(log).matches(" committed ").count() < n {
            assert!(Instant::now() < deadline, "{}", env.log(log));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut child = env.spawn("k2-sink", &[], "sink-1.log");
    committed("sink-1.log", 6);
    for table in ["trades", "quotes", "sequence_events"] {
        rt.block_on(outside_snapshot_then_expire_the_rest(&env, table));
    }
    // The running sink commits on top of the outside snapshots.
    let before = env.log("sink-1.log").matches(" committed ").count();
    committed("sink-1.log", before + 6);
    kill9(&mut child);
    // A restart reads its offsets with K2's snapshots gone.
    for table in ["trades", "quotes", "sequence_events"] {
        rt.block_on(outside_snapshot_then_expire_the_rest(&env, table));
    }
    let mut child = env.spawn("k2-sink", &[], "sink-2.log");
    committed("sink-2.log", 4);
    kill9(&mut child);
    let expected = background.finish();
    env.sink_once(&[], Duration::from_secs(300));

    for log in ["sink-1.log", "sink-2.log"] {
        let text = env.log(log);
        assert!(
            !text.contains("re-reading partition"),
            "{log}: a partition was re-read:\n{text}"
        );
    }
    // The restart resumed every partition that has records from its table.
    let text = env.log("sink-2.log");
    let with_records: BTreeSet<String> = expected
        .iter()
        .map(|(t, p, _)| format!("partition={t}[{p}] "))
        .collect();
    let started_over: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("resuming partition") && !l.contains("start=Table("))
        .filter(|l| with_records.iter().any(|p| l.contains(p.as_str())))
        .collect();
    assert!(started_over.is_empty(), "{started_over:#?}");
    let all = trades_and_quotes(&env);
    assert_exactly_once(&all, &expected, "after the expiries");
}

/// Another writer (PyIceberg, appending rows of its own) races the running sink's commits:
/// its appends land, retried by it after a conflict (the table carries no
/// `commit.retry.num-retries` to forbid that), and the sink, meeting the other writer's
/// snapshots between its own, still lands every record exactly once.
#[test]
fn another_writer_racing_the_sink_lands_and_the_sink_loses_and_doubles_nothing() {
    ensure_services();
    let env = crash_env();
    env.create_topics();
    let background = BackgroundFeed::start(&env, 400, 1);
    let mut child = env.spawn("k2-sink", &[], "sink.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.log("sink.log").matches(" committed ").count() < 3 {
        assert!(Instant::now() < deadline, "{}", env.log("sink.log"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let rounds = 8;
    let conflicts = k2_tests::engines::pyiceberg_appends(&env, rounds);
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", env.log("sink.log"));
    let mut expected = background.finish();
    env.sink_once(&[], Duration::from_secs(300));
    let properties = k2_tests::runtime().block_on(async {
        let catalog = tables::catalog(&env).await;
        let table = catalog
            .load_table(&k2_table::layout::ident("trades"))
            .await
            .unwrap();
        table.metadata().properties().clone()
    });
    assert!(
        !properties.contains_key("commit.retry.num-retries"),
        "{properties:?}"
    );
    expected.extend((0..rounds).flat_map(|r| (0..5).map(move |o| ("pyiceberg".to_string(), r, o))));
    assert_exactly_once(
        &trades_and_quotes(&env),
        &expected,
        &format!("the sink's records and PyIceberg's ({conflicts} conflicts met)"),
    );
}

/// `/healthz`, `/readyz`, commit lag, freshness and consumer lag as a sink works: not ready
/// before it is in its group (a broker that does not answer), ready while records wait
/// within the window, commit lag growing until the commit and zero after it, consumer lag
/// zero once everything is read.
#[test]
fn health_endpoints_and_lag_metrics_follow_the_sink() {
    ensure_services();

    // No broker: live, never ready, and says why.
    let mut lost = TestEnv::new();
    lost.var("K2_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1");
    let log = "lost.log";
    let mut child = lost.spawn("k2-sink", &[], log);
    let address = metrics_address(&lost, log);
    wait_until(&lost, log, "live", Duration::from_secs(30), || {
        http_get(&address, "/healthz").is_some_and(|(code, _)| code == 200)
    });
    let (code, body) = http_get(&address, "/readyz").expect("answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not in the consumer group yet"), "{body}");
    signal(&child, "KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10));

    let mut env = TestEnv::new();
    env.set_partitions(2, 2);
    env.var("K2_SINK__COMMIT__INTERVAL", "1h")
        .var("K2_SINK__COMMIT__MAX_RECORDS", "10000000");
    env.create_topics();
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let market = produce_market(&env, &rt, &feed, 1, 300);
    let fed = (market.trades.len() + market.quotes.len()) as u64;
    let log = "sink.log";
    let mut child = env.spawn("k2-sink", &[], log);
    let address = metrics_address(&env, log);
    wait_until(
        &env,
        log,
        "everything consumed",
        Duration::from_secs(120),
        || scrape_counter(&address, "k2_records_consumed_total") >= fed,
    );
    let (code, body) = http_get(&address, "/readyz").expect("answers");
    assert_eq!(
        (code, body.as_str()),
        (200, "ok\n"),
        "records wait, within the window"
    );
    assert_eq!(http_get(&address, "/healthz").map(|r| r.0), Some(200));
    let commit_lag = |a: &str| scrape_samples(a, "k2_commit_lag_seconds")[0].1;
    let first = commit_lag(&address);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        commit_lag(&address) >= first + 1.0,
        "the commit lag grows while records wait ({first} then {})",
        commit_lag(&address)
    );
    // librdkafka's statistics come every 5 s: every partition read to its end.
    wait_until(
        &env,
        log,
        "consumer lag reported",
        Duration::from_secs(30),
        || {
            let lag = scrape_samples(&address, "k2_consumer_lag_records");
            !lag.is_empty() && lag.iter().all(|(_, v)| *v == 0.0)
        },
    );
    let build = scrape_samples(&address, "k2_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert!(
        build[0]
            .0
            .contains(&format!("version=\"{}\"", k2_common::VERSION)),
        "{build:?}"
    );
    assert!(scrape_samples(&address, "k2_process_resident_memory_bytes")[0].1 > 1e6);

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", env.log(log));
    assert_eq!(
        rt_scan(&env, "trades").rows() + rt_scan(&env, "quotes").rows(),
        fed as usize
    );

    // After a commit: no lag, and a freshness per table.
    env.var("K2_SINK__COMMIT__INTERVAL", "1s");
    let log = "sink2.log";
    let mut child = env.spawn("k2-sink", &[], log);
    let address = metrics_address(&env, log);
    produce_market(&env, &rt, &feed, 1_000_000, 50);
    wait_until(&env, log, "a commit", Duration::from_secs(60), || {
        !scrape_samples(&address, "k2_freshness_commit_seconds").is_empty()
    });
    wait_until(&env, log, "no commit lag", Duration::from_secs(30), || {
        commit_lag(&address) == 0.0
    });
    let freshness = scrape_samples(&address, "k2_freshness_commit_seconds");
    assert!(
        freshness
            .iter()
            .all(|(labels, v)| labels.contains("table=") && *v < 60.0),
        "{freshness:?}"
    );
    let data = scrape_samples(&address, "k2_freshness_data_seconds");
    assert!(
        data.iter()
            .any(|(l, _)| l.contains("table=\"trades\"") && l.contains("exchange=")),
        "{data:?}"
    );
    assert_eq!(http_get(&address, "/readyz").map(|r| r.0), Some(200));
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
}

/// With `log.format = "auto"` (the shipped default) a sink whose stderr is a file writes
/// JSON lines: message and fields under `fields`, spans beside them.
#[test]
fn logs_are_json_lines_off_a_terminal() {
    ensure_services();
    let mut env = TestEnv::new();
    env.var("K2_LOG__FORMAT", "auto")
        .var("K2_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1");
    let log = "sink.json.log";
    let mut child = env.spawn("k2-sink", &[], log);
    let mut listening = None;
    wait_until(
        &env,
        log,
        "the metrics line",
        Duration::from_secs(30),
        || {
            listening = env.log(log).lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "metrics endpoint listening").then_some(v)
            });
            listening.is_some()
        },
    );
    let line = listening.unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(
        line["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(line["timestamp"].is_string(), "{line}");
    for l in env.log(log).lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
    signal(&child, "KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
}

/// SIGTERM commits what is buffered, then the group offsets; a restart adds nothing.
#[test]
fn sigterm_commits_the_buffer_and_a_restart_adds_nothing() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 2);
    // Nothing is committed before the signal: limits far away.
    env.var("K2_SINK__COMMIT__INTERVAL", "1h")
        .var("K2_SINK__COMMIT__MAX_RECORDS", "10000000");
    env.create_topics();
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let market = produce_market(&env, &rt, &feed, 1, 300);
    let expected: BTreeSet<Key> = market
        .trades
        .keys()
        .chain(market.quotes.keys())
        .cloned()
        .collect();

    let log = "sink.log";
    let mut child = env.spawn("k2-sink", &[], log);
    let address = metrics_address(&env, log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while scrape_counter(&address, "k2_records_consumed_total") < expected.len() as u64 {
        assert!(Instant::now() < deadline, "not consumed:\n{}", env.log(log));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        rt_scan(&env, "trades").rows(),
        0,
        "nothing committed before the signal"
    );

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(
        status.success(),
        "clean exit after SIGTERM ({status}):\n{}",
        env.log(log)
    );
    let all = |env: &TestEnv| {
        let t = rt_scan(env, "trades");
        let q = rt_scan(env, "quotes");
        Scanned {
            batches: t.batches.into_iter().chain(q.batches).collect(),
            files: Vec::new(),
            snapshots: Vec::new(),
        }
    };
    assert_exactly_once(&all(&env), &expected, "after SIGTERM");

    // The consumer group's offsets were committed after the table commit.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", k2_tests::BOOTSTRAP.as_str())
        .set("group.id", &env.group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut high: HashMap<(String, i32), i64> = HashMap::new();
    for (topic, p, o) in &expected {
        let h = high.entry((topic.clone(), *p)).or_default();
        *h = (*h).max(o + 1);
    }
    for (topic, p) in high.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            rdkafka::Offset::Offset(high[&(e.topic().to_string(), e.partition())]),
            "group offset of {}[{}]",
            e.topic(),
            e.partition()
        );
    }
    drop(consumer);

    env.sink_once(&[], Duration::from_secs(120));
    assert_exactly_once(&all(&env), &expected, "after a restart");
}

/// A transactional producer commits, aborts, and retries the aborted records in a new
/// transaction (as a producer does after a failure). Reading `read_committed`, the sink
/// lands the committed records exactly once and nothing of the aborted transaction; the
/// retried sequence numbers follow on without a gap or a duplicate.
#[test]
fn aborted_transactions_leave_nothing_in_the_tables() {
    let env = TestEnv::ready(2, 1, "1s");
    let topic = env.topic(&env.asx, "trades");
    let rt = k2_tests::runtime();
    let feed = Feed::transactional(&k2_tests::unique("tx"));
    let raws = |recs: Vec<(Raw, Trade)>| recs.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
    let first = raws(feed::trades(
        &topic,
        &env.asx,
        "equities",
        &ASX_SYMBOLS,
        1,
        300,
    ));
    let retried = raws(feed::trades(
        &topic,
        &env.asx,
        "equities",
        &ASX_SYMBOLS,
        51,
        300,
    ));
    let keys = |landed: Vec<feed::Landed>| -> Vec<Key> {
        landed
            .into_iter()
            .map(|l| (topic.clone(), l.partition, l.offset))
            .collect()
    };

    let mut expected: BTreeSet<Key> = keys(rt.block_on(feed.send_in_transaction(&first, true)))
        .into_iter()
        .collect();
    let aborted = keys(rt.block_on(feed.send_in_transaction(&retried, false)));
    // The sink reads past the aborted transaction before the retry arrives.
    env.sink_once(&[], Duration::from_secs(120));
    expected.extend(keys(rt.block_on(feed.send_in_transaction(&retried, true))));
    env.sink_once(&[], Duration::from_secs(120));

    let trades = rt_scan(&env, "trades");
    assert_exactly_once(&trades, &expected, "committed transactions");
    let landed: BTreeSet<Key> = trades.lineage().into_iter().collect();
    assert!(
        aborted.iter().all(|k| !landed.contains(k)),
        "a record of the aborted transaction landed"
    );
    // Every (symbol, sequence) once: 100 per symbol.
    let mut seen = BTreeSet::new();
    for b in &trades.batches {
        let sym = tables::strings(b, "symbol");
        let seq = tables::longs(b, "sequence_number");
        for r in 0..b.num_rows() {
            assert!(
                seen.insert((sym.value(r).to_string(), seq.value(r))),
                "{} {} twice",
                sym.value(r),
                seq.value(r)
            );
        }
    }
    assert_eq!(seen.len(), 600);
    // The retry continues the sequences: no gap, no duplicate recorded.
    let events = rt_scan(&env, "sequence_events");
    let kinds: Vec<String> = events
        .batches
        .iter()
        .flat_map(|b| {
            let k = tables::strings(b, "kind");
            (0..b.num_rows())
                .map(|r| k.value(r).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        kinds.iter().all(|k| k == "first_seen"),
        "unexpected sequence events: {kinds:?}"
    );
}

/// `k2-admin topics apply` raises a topic's partition count while a sink runs: the sink
/// is assigned the new partitions at its next metadata refresh and lands what arrives
/// there, with everything before and after exactly once.
#[test]
fn raised_partitions_are_picked_up_by_a_running_sink() {
    let mut env = TestEnv::ready(2, 1, "500ms");
    env.var(
        "K2_KAFKA__PROPERTIES",
        r#"{"topic.metadata.refresh.interval.ms"="1000"}"#,
    );
    let topic = env.topic(&env.asx, "trades");
    let rt = k2_tests::runtime();
    let raws = |first_seq, n| -> Vec<Raw> {
        feed::trades(&topic, &env.asx, "equities", &ASX_SYMBOLS, first_seq, n)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    };
    let mut sink = env.spawn("k2-sink", &[], "sink.log");
    wait_for_assignment(&env, "sink.log", &mut sink);
    let mut expected: BTreeSet<Key> = produce(&rt, &Feed::new(), &raws(1, 120))
        .into_iter()
        .collect();

    env.edit_topics(|t| t.replacen("partitions: 2\n", "partitions: 4\n", 1));
    let apply = env.run("k2-admin", &["topics", "apply"]);
    assert!(
        k2_tests::stdout(&apply).contains(&format!("done: ~ raise partitions {topic}: 2 -> 4")),
        "{}{}",
        k2_tests::stdout(&apply),
        k2_tests::stderr(&apply)
    );
    // A new producer sees four partitions; the symbols now hash over all of them.
    let after = produce(&rt, &Feed::new(), &raws(21, 120));
    assert!(
        after.iter().any(|(_, p, _)| *p >= 2),
        "no record went to a new partition: {after:?}"
    );
    expected.extend(after);

    let deadline = Instant::now() + Duration::from_secs(90);
    while rt_scan(&env, "trades").rows() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "the new partitions were not landed:\n{}",
            env.log("sink.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(60)).success());
    assert_exactly_once(
        &rt_scan(&env, "trades"),
        &expected,
        "after raising partitions",
    );
}

/// Which of two sinks in one group a test kills.
#[derive(Clone, Copy, Debug)]
enum Victim {
    /// The first to join. In a classic group the coordinator keeps it as the leader (the
    /// member that computes the assignment) when the second joins.
    Leader,
    /// The second, which joined mid-stream.
    Joiner,
}

/// Two sinks in one group while records arrive: one joins mid-stream, then one of them is
/// killed with -9; the coordinator expires it after the session timeout, the survivor
/// takes its partitions over, and every record lands exactly once.
fn two_sinks_one_killed(protocol: GroupProtocol, victim: Victim) {
    ensure_services();
    two_sinks_one_killed_in(&crash_env_with(protocol), victim);
}

/// Two sinks of `env` in one group while a feed runs; `victim` is killed with -9, the
/// survivor takes over; every record lands exactly once.
fn two_sinks_one_killed_in(env: &TestEnv, victim: Victim) {
    env.create_topics();
    let background = BackgroundFeed::start(env, 800, 1);

    let mut first = env.spawn("k2-sink", &[], "first.log");
    wait_for_assignment(env, "first.log", &mut first);
    std::thread::sleep(Duration::from_secs(3));
    let mut second = env.spawn("k2-sink", &[], "second.log");
    wait_for_assignment(env, "second.log", &mut second);
    // The second join revoked some of the first's partitions (cooperative-sticky).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.log("first.log").contains("partitions revoked") {
        assert!(
            Instant::now() < deadline,
            "the second sink's join never rebalanced the first:\n{}",
            env.log("first.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let (mut survivor, survivor_log, victim_log) = match victim {
        Victim::Leader => {
            kill9(&mut first);
            (second, "second.log", "first.log")
        }
        Victim::Joiner => {
            kill9(&mut second);
            (first, "first.log", "second.log")
        }
    };
    // Expired after session.timeout.ms, the victim's partitions go to the survivor: one
    // more assignment in its log than it had before the kill.
    let before = env.log(survivor_log).matches("partitions assigned").count();
    let deadline = Instant::now() + Duration::from_secs(90);
    while env.log(survivor_log).matches("partitions assigned").count() <= before {
        assert!(
            Instant::now() < deadline,
            "the survivor never took over after the {victim:?} was killed:\n{}",
            env.log(survivor_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It works through what the victim left uncommitted while records keep arriving.
    std::thread::sleep(Duration::from_secs(3));
    let expected = background.finish();
    signal(&survivor, "TERM");
    let status = wait_exit(&mut survivor, Duration::from_secs(60));
    eprintln!(
        "--- survivor ---\n{}\n--- victim ---\n{}",
        env.log(survivor_log),
        env.log(victim_log)
    );
    assert!(status.success(), "survivor: {status}");
    env.sink_once(&[], Duration::from_secs(300));

    let all = trades_and_quotes(env);
    assert_exactly_once(&all, &expected, &format!("two sinks, {victim:?} killed"));
    for log in ["first.log", "second.log"] {
        assert!(
            env.log(log).contains(" committed "),
            "{log}: the sink committed"
        );
    }
}

/// A SQL catalog on PostgreSQL, shared by two sinks in one group (one killed with -9) and
/// read by k2-query through the same catalog.
#[test]
fn two_sinks_share_a_postgres_catalog_and_k2_query_reads_it() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (_postgres, port) = k2_tests::services::Service::postgres(dir.path());
    let env = crash_env_with(GroupProtocol::Classic);
    env.use_postgres_catalog_at(port);
    two_sinks_one_killed_in(&env, Victim::Leader);

    let landed = trades_and_quotes(&env).rows();
    let out = env.run(
        "k2-query",
        &[
            "--format",
            "csv",
            "-c",
            "select (select count(*) from trades) + (select count(*) from quotes) as n",
        ],
    );
    assert!(out.status.success(), "{}", k2_tests::stderr(&out));
    let text = k2_tests::stdout(&out);
    assert_eq!(
        text.lines().nth(1).map(str::trim),
        Some(landed.to_string().as_str()),
        "{text}"
    );
}

#[test]
fn two_sinks_in_one_group_leader_killed() {
    two_sinks_one_killed(GroupProtocol::Classic, Victim::Leader);
}

#[test]
fn two_sinks_in_one_group_joiner_killed() {
    two_sinks_one_killed(GroupProtocol::Classic, Victim::Joiner);
}

/// The same under the KIP-848 consumer group protocol, where the broker assigns.
#[test]
fn two_sinks_in_a_kip848_group_first_killed() {
    two_sinks_one_killed(GroupProtocol::Consumer, Victim::Leader);
}

/// A producer switches to a newer schema (an added defaulted field) mid-stream: the
/// running sink evolves the table without a restart; earlier rows read null.
#[test]
fn newer_writer_schema_mid_stream_evolves_the_table_without_restart() {
    use apache_avro::types::Value;
    use arrow::array::Array;
    use k2_common::records::WireEncoder;
    use k2_common::topic::DataType;
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    let mut v2: serde_json::Value =
        serde_json::from_str(include_str!("../schemas/trade.avsc")).unwrap();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "trade_id",
            "type": ["null", "string"],
            "default": null,
            "doc": "Exchange-assigned trade id (added in v2)"
        }));
    let v2_path = env.dir.path().join("trade-v2.avsc");
    std::fs::write(&v2_path, v2.to_string()).unwrap();
    env.var(
        "K2_SCHEMAS__IDS",
        &format!("{{4=\"{}\"}}", v2_path.display()),
    )
    .var("K2_SINK__COMMIT__INTERVAL", "500ms");
    env.create_topics();
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let topic = env.topic(&env.asx, "trades");
    let v2_encoder = WireEncoder::with_schema(
        DataType::Trades,
        apache_avro::Schema::parse_str(&v2.to_string()).unwrap(),
        4,
    );

    let log = "sink.log";
    let mut child = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut child);
    let old: Vec<Raw> = feed::trades(&topic, &env.asx, "equities", &ASX_SYMBOLS, 1, 300)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let mut keys_v1: BTreeSet<Key> = produce(&rt, &feed, &old).into_iter().collect();
    // Let some of the old ones commit first, so both old files and old buffers exist.
    std::thread::sleep(Duration::from_secs(2));
    let new: Vec<Raw> = (1000..1300)
        .map(|seq| {
            let t = feed::trade(&env.asx, "equities", "BHP", seq);
            let Value::Record(mut fields) = t.to_avro() else {
                unreachable!()
            };
            fields.push((
                "trade_id".into(),
                Value::Union(1, Box::new(Value::String(format!("T{seq}")))),
            ));
            Raw {
                topic: topic.clone(),
                key: Some(b"BHP".to_vec()),
                value: Some(v2_encoder.encode(Value::Record(fields)).unwrap()),
            }
        })
        .collect();
    let keys_v2: BTreeSet<Key> = produce(&rt, &feed, &new).into_iter().collect();
    let again: Vec<Raw> = feed::trades(&topic, &env.asx, "equities", &ASX_SYMBOLS, 2000, 100)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    keys_v1.extend(produce(&rt, &feed, &again));

    let address = metrics_address(&env, log);
    let total = (keys_v1.len() + keys_v2.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while scrape_counter(&address, "k2_records_written_total") < total {
        assert!(Instant::now() < deadline, "not written:\n{}", env.log(log));
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let text = env.log(log);
    assert_eq!(text.matches("sink started").count(), 1, "no restart");
    assert!(text.contains("table schema evolved"), "{text}");

    let scanned = rt_scan(&env, "trades");
    let all: BTreeSet<Key> = keys_v1.union(&keys_v2).cloned().collect();
    assert_exactly_once(&scanned, &all, "across the schema change");
    let lineage = scanned.lineage();
    let mut i = 0;
    for b in &scanned.batches {
        let trade_id = tables::strings(b, "trade_id");
        for r in 0..b.num_rows() {
            let key = &lineage[i];
            if keys_v2.contains(key) {
                assert!(
                    trade_id.is_valid(r) && trade_id.value(r).starts_with('T'),
                    "{key:?}"
                );
            } else {
                assert!(trade_id.is_null(r), "old row {key:?} reads null");
            }
            i += 1;
        }
    }
}

/// Holds the SQL catalog's database of `env` exclusively from another process for `secs`
/// seconds (the catalog is unavailable: every read and commit fails with "database is
/// locked" after SQLite's busy timeout). Returns once the lock is taken; the process exits
/// when it lets go.
fn lock_catalog(env: &TestEnv, secs: u64) -> Spawned {
    let db = env.dir.path().join("state/catalog.db");
    let mut locker = Spawned(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys,time\n\
                 c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\n\
                 time.sleep(float(sys.argv[2]))\nc.execute('COMMIT')",
                db.to_str().unwrap(),
                &secs.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(locker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    locker
}

/// The catalog becomes unavailable (its SQLite database exclusively locked by another
/// process) while records keep arriving: the sink retries with backoff, pauses
/// consumption once its buffer is full instead of growing it, and after the outage
/// everything lands exactly once.
#[test]
fn catalog_outage_retries_pauses_and_loses_nothing() {
    ensure_services();
    let mut env = crash_env();
    env.var("K2_SINK__COMMIT__MAX_RECORDS", "2000");
    env.create_topics();
    let background = BackgroundFeed::start(&env, 1_000, 1);
    let log = "sink.log";
    let mut child = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut child);
    let address = metrics_address(&env, log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape_counter(&address, "k2_records_written_total") == 0 {
        assert!(Instant::now() < deadline, "no commit:\n{}", env.log(log));
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another process holds the catalog database exclusively for 12 s.
    let mut locker = lock_catalog(&env, 12);
    let mut max_buffered = 0;
    let mut paused_seen = false;
    while locker.try_wait().unwrap().is_none() {
        max_buffered = max_buffered.max(scrape_gauge(&address, "k2_buffered_records").unwrap_or(0));
        paused_seen |= scrape_gauge(&address, "k2_consumption_paused") == Some(1);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let expected = background.finish();
    let text = env.log(log);
    assert!(text.contains("failed; retrying"), "retries logged:\n{text}");
    assert!(paused_seen, "consumption paused during the outage:\n{text}");
    // The buffer stops near its limit: one commit's worth plus one poll batch per stage.
    assert!(
        max_buffered <= 2_000 + 3 * 8_192,
        "buffer grew to {max_buffered}"
    );

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{}", env.log(log));
    env.sink_once(&[], Duration::from_secs(300));
    let all = trades_and_quotes(&env);
    assert_exactly_once(&all, &expected, "after the catalog outage");
}

/// BHP trades with these sequence numbers on an equities `topic` of `exchange`.
fn bhp_trades(topic: &str, exchange: &str, seqs: std::ops::RangeInclusive<i64>) -> Vec<Raw> {
    seqs.map(|s| feed::trade_record(topic, &feed::trade(exchange, "equities", "BHP", s)))
        .collect()
}

/// The one sequence event of `events` is BHP's gap: 101 expected, 103 read.
fn assert_gap_101_to_103(events: &Scanned) {
    use arrow::array::Array;
    let b = events.batches.iter().find(|b| b.num_rows() > 0).unwrap();
    assert_eq!(tables::strings(b, "kind").value(0), "gap");
    assert_eq!(tables::longs(b, "expected").value(0), 101);
    assert_eq!(tables::longs(b, "actual").value(0), 103);
    let gap = tables::longs(b, "gap_size");
    assert!(gap.is_valid(0));
    assert_eq!(gap.value(0), 2);
}

/// A gap that spans a restart is still reported: on assignment the sequence tracker
/// learns each instrument's last committed sequence number from the table.
#[test]
fn a_gap_spanning_a_restart_is_reported() {
    let env = TestEnv::ready(2, 1, "1s");
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let topic = env.topic(&env.asx, "trades");
    let batch = |seqs| bhp_trades(&topic, &env.asx, seqs);
    produce(&rt, &feed, &batch(1..=100));
    env.sink_once(&[], Duration::from_secs(120));
    produce(&rt, &feed, &batch(103..=150));
    env.sink_once(&[], Duration::from_secs(120));

    let events = rt_scan(&env, "sequence_events");
    assert_eq!(events.rows(), 1, "exactly one event");
    assert_gap_101_to_103(&events);
}

/// The catalog stalls while partitions are being assigned, with a short
/// `max.poll.interval.ms` (20 s, so the assignment deadline is 10 s). The rebalance
/// callback waits for the tables' offsets only up to that deadline: a 6 s stall leaves the
/// sink in its group, landing everything; a 40 s stall stops it with a clear error within
/// the deadline instead of holding the group (before, the callback retried for as long as
/// the catalog was down, and the member was expelled from the group inside it).
#[test]
fn a_catalog_stalled_at_assignment_never_holds_the_group() {
    let mut env = TestEnv::ready(2, 1, "500ms");
    env.var(
        "K2_KAFKA__PROPERTIES",
        r#"{"topic.metadata.refresh.interval.ms"="1000","max.poll.interval.ms"="20000","session.timeout.ms"="6000","heartbeat.interval.ms"="1000"}"#,
    );
    let topic = env.topic(&env.asx, "trades");
    let rt = k2_tests::runtime();
    let raws = |first_seq, n| -> Vec<Raw> {
        feed::trades(&topic, &env.asx, "equities", &ASX_SYMBOLS, first_seq, n)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    };
    let raise = |from: usize, to: usize| {
        env.edit_topics(|t| {
            t.replacen(
                &format!("partitions: {from}\n"),
                &format!("partitions: {to}\n"),
                1,
            )
        });
        let apply = env.run("k2-admin", &["topics", "apply"]);
        assert!(apply.status.success(), "{}", k2_tests::stderr(&apply));
    };
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    let mut expected: BTreeSet<Key> = produce(&rt, &Feed::new(), &raws(1, 60))
        .into_iter()
        .collect();
    let assignments = |env: &TestEnv| env.log(log).matches("partitions assigned").count();

    // A short stall: the callback retries the offsets read, then assigns; the member stays.
    let before = assignments(&env);
    let mut locker = lock_catalog(&env, 6);
    raise(2, 3);
    wait_until(&env, log, "a rebalance", Duration::from_secs(30), || {
        assignments(&env) > before
    });
    assert!(
        locker.wait().unwrap().success(),
        "the lock was held for its 6 s"
    );
    let after = produce(&rt, &Feed::new(), &raws(11, 60));
    assert!(after.iter().any(|(_, p, _)| *p == 2), "{after:?}");
    expected.extend(after);
    wait_until(
        &env,
        log,
        "everything landed",
        Duration::from_secs(60),
        || rt_scan(&env, "trades").rows() >= expected.len(),
    );
    let text = env.log(log);
    assert!(
        text.contains("reading the offsets recorded in trades failed; retrying"),
        "the callback met the stalled catalog:\n{text}"
    );
    assert!(
        !text.contains("maximum poll interval"),
        "the member was expelled from its group:\n{text}"
    );
    assert!(
        sink.try_wait().unwrap().is_none(),
        "the sink is still running"
    );

    // A long stall: the callback gives up at its deadline and the sink stops, saying why,
    // long before the catalog comes back.
    let mut locker = lock_catalog(&env, 40);
    raise(3, 4);
    let status = wait_exit(&mut sink, Duration::from_secs(120));
    assert!(
        locker.try_wait().unwrap().is_none(),
        "the sink waited for the catalog to come back"
    );
    assert!(!status.success(), "{status}:\n{}", env.log(log));
    let text = env.log(log);
    assert!(
        text.contains("the catalog did not answer within 10s"),
        "the stop names the stalled catalog:\n{text}"
    );
    assert!(
        !text.contains("maximum poll interval"),
        "the member was expelled from its group:\n{text}"
    );
    drop(locker);

    env.sink_once(&[], Duration::from_secs(120));
    assert_exactly_once(&rt_scan(&env, "trades"), &expected, "after the stalls");
}

/// Another writer lands a partition's records while this sink still buffers them; the
/// records produced after that skip two sequence numbers. The sink's commit is fenced, it
/// resumes the partition from the table's offset, and the first record it reads there is
/// the one after the gap: the tracker, warmed up again from the table, reports the gap
/// exactly once (forgotten without a warm-up, the instrument would have been "first seen"
/// and the gap missed).
#[test]
fn a_gap_right_after_a_fenced_partition_is_reported() {
    let mut env = TestEnv::ready(1, 1, "10s");
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let topic = env.topic(&env.asx, "trades");
    let asx = env.asx.clone();
    let batch = |seqs| bhp_trades(&topic, &asx, seqs);
    let mut expected: BTreeSet<Key> = produce(&rt, &feed, &batch(1..=100)).into_iter().collect();
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    let address = metrics_address(&env, log);
    wait_until(
        &env,
        log,
        "100 records read",
        Duration::from_secs(60),
        || scrape_counter(&address, "k2_records_consumed_total") >= 100,
    );
    // Frozen before its 10 s commit interval is up, the sink cannot commit while the
    // other writer — a sink in another consumer group, run once — lands the same records.
    signal(&sink, "STOP");
    let resumed = format!("resuming partition partition={topic}[0]");
    env.var("K2_KAFKA__GROUP_ID", &k2_tests::unique("other"));
    env.sink_once(&[], Duration::from_secs(120));
    env.vars.pop();
    assert_eq!(rt_scan(&env, "trades").rows(), 100);
    signal(&sink, "CONT");
    wait_until(
        &env,
        log,
        "the sink's commit fenced and the partition resumed",
        Duration::from_secs(60),
        || {
            scrape_counter(&address, "k2_fenced_partitions_total") >= 1
                && env.log(log).matches(&resumed).count() >= 2
        },
    );

    expected.extend(produce(&rt, &feed, &batch(103..=150)));
    wait_until(
        &env,
        log,
        "the records after the gap read",
        Duration::from_secs(60),
        || scrape_counter(&address, "k2_records_consumed_total") >= 148,
    );
    signal(&sink, "TERM");
    let status = wait_exit(&mut sink, Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", env.log(log));

    assert_exactly_once(&rt_scan(&env, "trades"), &expected, "after the fence");
    let events = rt_scan(&env, "sequence_events");
    assert_eq!(events.rows(), 1, "exactly one event:\n{}", env.log(log));
    assert_gap_101_to_103(&events);
}

/// A parallel backfill: three `k2-sink --once` in one group over one backlog. Each stops
/// once the whole backlog is committed — by whichever member held each partition, across
/// the rebalances their joining and leaving cause — and exits 0; every record is in the
/// tables once. (Before, each waited for every partition to be read by itself, and all
/// three idled until killed.)
#[test]
fn three_once_members_backfill_in_parallel_and_all_stop() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(3, 2);
    env.var("K2_SINK__COMMIT__INTERVAL", "1s");
    env.create_topics();
    let rt = k2_tests::runtime();
    let market = produce_market(&env, &rt, &Feed::new(), 1, 1_000);
    let expected: BTreeSet<Key> = market
        .trades
        .keys()
        .chain(market.quotes.keys())
        .cloned()
        .collect();
    let logs: Vec<String> = (0..3).map(|i| format!("once-{i}.log")).collect();
    let mut members: Vec<_> = logs
        .iter()
        .map(|log| env.spawn("k2-sink", &["--once"], log))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut statuses = vec![None; members.len()];
    while statuses.iter().any(Option::is_none) {
        for (member, status) in members.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                *status = member.0.try_wait().unwrap();
            }
        }
        if Instant::now() > deadline {
            for (member, log) in members.iter_mut().zip(&logs) {
                let _ = member.0.kill();
                eprintln!("--- {log} ---\n{}", env.log(log));
            }
            panic!("not every member stopped within 240 s: {statuses:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (status, log) in statuses.into_iter().flatten().zip(&logs) {
        assert!(status.success(), "{log}: {status}\n{}", env.log(log));
    }
    assert_exactly_once(&trades_and_quotes(&env), &expected, "three --once members");
}

/// coreutils `timeout` delivers its SIGTERM to the child and again to the child's group:
/// the two arrive together and count as one request, so the sink commits what is
/// buffered and exits 0 (it used to take the second as "exit at once").
#[test]
fn a_signal_delivered_twice_together_still_commits_the_buffer() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    // Nothing is committed before the signal: limits far away.
    env.var("K2_SINK__COMMIT__INTERVAL", "1h")
        .var("K2_SINK__COMMIT__MAX_RECORDS", "10000000");
    env.create_topics();
    let rt = k2_tests::runtime();
    let market = produce_market(&env, &rt, &Feed::new(), 1, 200);
    let expected: BTreeSet<Key> = market
        .trades
        .keys()
        .chain(market.quotes.keys())
        .cloned()
        .collect();
    let log = env.dir.path().join("timeout.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "TERM", "12"])
        .arg(k2_tests::bin("k2-sink"))
        .arg("--config")
        .arg(&env.config)
        .env_remove("K2_STATE_DIR")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("timeout(1)");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    // timeout exits 124 when it had to signal; the sink itself must have flushed.
    assert_eq!(status.code(), Some(124), "{text}");
    assert!(
        !text.contains("second signal: exiting without flushing"),
        "{text}"
    );
    assert_exactly_once(
        &trades_and_quotes(&env),
        &expected,
        "after timeout's SIGTERM",
    );
}

/// A metrics address another process holds is a configuration error at start, naming the
/// key and the address (the sink used to log it and run unobserved).
#[test]
fn a_taken_metrics_address_refuses_to_start() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(1, 1);
    env.create_topics();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    env.var("K2_METRICS__ADDRESS", &address);
    let out = env.run("k2-sink", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", k2_tests::stderr(&out));
    let err = k2_tests::stderr(&out);
    assert!(
        err.contains(&format!("metrics.address: cannot listen on {address}"))
            && err.contains("Address already in use"),
        "{err}"
    );
}
