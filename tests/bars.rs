//! Bars kept ahead of time (`bars_1m`, built by `k2-admin maintain compact`): an OHLCV
//! question answered from them gives exactly the answer the trades give, at every pin —
//! before the bars exist, after, after late data lands in a closed day, and pinned to the
//! past, by an end-of-day tag after every other snapshot of the day has expired — and the
//! same as an independent computation from the ASX CSV files. A maintenance run killed while
//! building bars leaves no day half built.

use std::collections::BTreeMap;
use std::time::Duration;

use k2_query::{
    Bar, Fill, Interval, Lakehouse, OhlcvRequest, OhlcvSources, Pin, SessionChoice, TimeZoneChoice,
};
use k2_table::retention;
use k2_tests::asx::{actual_bars, expected_bars, expected_session_bars};
use k2_tests::feed::{self, Feed};
use k2_tests::sink::{produce, wait_until};
use k2_tests::{TestEnv, asx_dir};

const BARS: &str = "bars_1m";

fn requests(env: &TestEnv) -> Vec<OhlcvRequest> {
    let mut out = Vec::new();
    for interval in ["1m", "5m", "1h", "1d"] {
        for tz in [TimeZoneChoice::Utc, TimeZoneChoice::Exchange] {
            out.push(OhlcvRequest {
                symbols: vec!["BHP".into(), "DVN".into()],
                exchange: env.asx.clone(),
                interval: interval.parse::<Interval>().unwrap(),
                from: "2014-03-01T00:00:00Z".parse().unwrap(),
                to: "2014-04-01T00:00:00Z".parse().unwrap(),
                tz,
                fill: Fill::Omit,
                session: k2_query::SessionChoice::Off,
            });
        }
    }
    // Session bars: by session, from the open, with and without the trades outside it.
    for (interval, session) in [
        ("1d", SessionChoice::Regular),
        ("1h", SessionChoice::Regular),
        ("1d", SessionChoice::Extended),
        ("15m", SessionChoice::Extended),
    ] {
        out.push(OhlcvRequest {
            interval: interval.parse().unwrap(),
            session,
            ..out[0].clone()
        });
    }
    // A range that starts inside a day, off the minute: that day from trades.
    out.push(OhlcvRequest {
        from: "2014-03-11T23:30:00.500Z".parse().unwrap(),
        to: "2014-03-13T05:00:00Z".parse().unwrap(),
        interval: "15m".parse().unwrap(),
        ..out[0].clone()
    });
    out
}

/// `pin` with every table at the snapshot it resolves to, the bars left out: the trades'
/// own answer at the same instant.
fn without_bars(lake: &Lakehouse, pin: Pin) -> Pin {
    let pinned = k2_tests::runtime().block_on(lake.pin(pin)).unwrap();
    let mut ids: BTreeMap<String, Option<i64>> = pinned
        .tables
        .iter()
        .map(|(name, t)| (name.clone(), t.snapshot_id))
        .collect();
    ids.insert(BARS.into(), None);
    Pin::Snapshots(ids)
}

struct Answers {
    bars: Vec<Vec<Bar>>,
    sources: Vec<OhlcvSources>,
}

fn answers(lake: &Lakehouse, pin: Pin, requests: &[OhlcvRequest]) -> Answers {
    let rt = k2_tests::runtime();
    let session = rt.block_on(lake.session(pin)).unwrap();
    Answers {
        bars: requests
            .iter()
            .map(|r| rt.block_on(session.ohlcv_bars(r)).unwrap())
            .collect(),
        sources: requests
            .iter()
            .map(|r| rt.block_on(session.ohlcv_sources(r)).unwrap())
            .collect(),
    }
}

/// The answers at `pin` equal the trades' own at the same instant, request by request.
fn assert_same_as_trades(
    lake: &Lakehouse,
    pin: Pin,
    requests: &[OhlcvRequest],
    what: &str,
) -> Answers {
    let got = answers(lake, pin.clone(), requests);
    let raw = answers(lake, without_bars(lake, pin), requests);
    for (i, r) in requests.iter().enumerate() {
        assert!(raw.sources[i].bars_days.is_empty(), "{what}: bars left out");
        assert!(
            !got.bars[i].is_empty(),
            "{what}: {} {:?} has bars",
            r.interval,
            r.tz
        );
        assert_eq!(
            got.bars[i], raw.bars[i],
            "{what}: {} {:?} from {} ({}) differs from the trades' answer",
            r.interval, r.tz, r.from, got.sources[i]
        );
    }
    got
}

#[test]
fn bars_answer_exactly_what_trades_answer_at_every_pin() {
    let (env, _) = k2_tests::replay_asx(&[]);
    env.sink_once(&[], Duration::from_secs(600));
    let rt = k2_tests::runtime();
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let requests = requests(&env);
    // Before any bars: every day from trades.
    let before = rt.block_on(lake.pin(Pin::Latest)).unwrap();
    let before = Pin::Snapshots(
        before
            .tables
            .iter()
            .map(|(n, t)| (n.clone(), t.snapshot_id))
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(1100));
    let before_bars = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    let first = assert_same_as_trades(&lake, Pin::Latest, &requests, "before bars");
    assert!(first.sources.iter().all(|s| s.bars_days.is_empty()));

    // Killed after writing a day's bars file, before committing it: no day half built.
    let mut env = env;
    env.var("FAILPOINTS", "bars-after-write=sleep(60000)");
    let log = "bars-killed.log";
    let mut run = env.spawn("k2-admin", &TestEnv::COMPACT_TRADES, log);
    env.vars.pop();
    wait_until(
        &env,
        log,
        "stopped at bars-after-write",
        Duration::from_secs(120),
        || env.log(log).contains("fail_point=\"bars-after-write\""),
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = assert_same_as_trades(&lake, Pin::Latest, &requests, "after kill -9");
    assert!(
        killed.sources.iter().all(|s| s.bars_days.is_empty()),
        "{:?}",
        killed.sources
    );

    // Built: every whole day from bars, the same answers, and the CSV's bars for BHP.
    let out = env.compact_trades();
    assert!(out.contains("bars_1m: bars for"), "{out}");
    let built = assert_same_as_trades(&lake, Pin::Latest, &requests, "after the bars are built");
    assert_eq!(
        built.bars, first.bars,
        "the answers changed with compaction and bars"
    );
    for (i, r) in requests.iter().enumerate().take(8) {
        let s = &built.sources[i];
        assert!(
            s.trades_days.is_empty() && s.bars_days.len() >= 5,
            "{} {:?}: {s}",
            r.interval,
            r.tz
        );
    }
    let partial = &built.sources[12];
    assert_eq!(
        partial.trades_days,
        vec!["2014-03-11".parse().unwrap()],
        "the day the range starts in off the minute: {partial}"
    );
    let csv = std::fs::read_to_string(asx_dir().join("trades/7078.csv")).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    for r in requests.iter().take(8) {
        let bhp = OhlcvRequest {
            symbols: vec!["BHP".into()],
            ..r.clone()
        };
        let got = actual_bars(&rt.block_on(session.ohlcv(&bhp)).unwrap());
        let want = expected_bars(&csv, r.interval.seconds(), r.tz == TimeZoneChoice::Exchange);
        assert_eq!(
            got.len(),
            want.len(),
            "{} {:?}: bar count",
            r.interval,
            r.tz
        );
        for (start, w) in &want {
            let (g, vwap) = &got[start];
            assert_eq!(
                (g.open, g.high, g.low, g.close, g.volume, g.trades),
                (w.open, w.high, w.low, w.close, w.volume, w.trades),
                "{} {:?} at {start}",
                r.interval,
                r.tz
            );
            let want_vwap = w.notional as f64 / w.volume as f64 * 1e8;
            assert!(
                (*vwap as f64 - want_vwap).abs() <= 1.0,
                "vwap {vwap} vs {want_vwap}"
            );
        }
    }
    for r in &requests[8..12] {
        let bhp = OhlcvRequest {
            symbols: vec!["BHP".into()],
            ..r.clone()
        };
        let got = actual_bars(&rt.block_on(session.ohlcv(&bhp)).unwrap());
        let width = (r.interval.seconds() < 86_400).then(|| r.interval.seconds());
        let want = expected_session_bars(&csv, width, r.session == SessionChoice::Regular);
        let what = format!("{} {:?}", r.interval, r.session);
        assert_eq!(got.len(), want.len(), "{what}: bar count");
        for (start, w) in &want {
            let (g, _) = got
                .get(start)
                .unwrap_or_else(|| panic!("{what}: no bar at {start}"));
            assert_eq!(
                (g.open, g.high, g.low, g.close, g.volume, g.trades),
                (w.open, w.high, w.low, w.close, w.volume, w.trades),
                "{what} at {start}"
            );
        }
    }
    // Session mistakes are refused with what to do instead.
    for (req, message) in [
        (
            OhlcvRequest {
                interval: "2d".parse().unwrap(),
                ..requests[8].clone()
            },
            "at most one session",
        ),
        (
            OhlcvRequest {
                fill: Fill::Forward,
                ..requests[8].clone()
            },
            "not with a session",
        ),
    ] {
        let e = rt.block_on(session.ohlcv(&req)).unwrap_err().to_string();
        assert!(e.contains(message), "{e}");
    }
    // The bars are a table like the others in SQL: every trade counted once.
    let count = |sql: &str| {
        use arrow::array::AsArray;
        rt.block_on(session.sql(sql, &[])).unwrap()[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    assert_eq!(
        count("SELECT CAST(sum(trades) AS BIGINT) FROM bars_1m"),
        count("SELECT count(*) FROM trades")
    );
    // A run with nothing new rebuilds nothing.
    let again = env.compact_trades();
    assert!(again.contains("bars_1m: bars for 0 days"), "{again}");

    // Pinned to an instant before the bars: the trades, the same answers.
    let old = assert_same_as_trades(
        &lake,
        Pin::AsOf(before_bars),
        &requests,
        "as of before the bars",
    );
    assert!(
        old.sources.iter().all(|s| s.bars_days.is_empty()),
        "{:?}",
        old.sources
    );
    assert_eq!(old.bars, first.bars);
    // Pinned to the trades snapshot from before (the bars not named: their latest): the
    // replay wrote one file per day, which compaction left alone, so these bars describe
    // exactly those files and answer.
    let old = assert_same_as_trades(&lake, before.clone(), &requests, "trades pinned before");
    assert_eq!(old.bars, first.bars);

    // Late data in a closed day: that day from trades until its bars are rebuilt.
    let topic = env.topic(&env.asx, "trades");
    let mut late = feed::trade(&env.asx, "equities", "BHP", 5_000_000);
    late.envelope.exchange_timestamp = "2014-03-12T03:00:00.000250Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap()
        .timestamp_micros();
    produce(&rt, &Feed::new(), &[feed::trade_record(&topic, &late)]);
    env.sink_once(&[], Duration::from_secs(120));
    let stale = assert_same_as_trades(&lake, Pin::Latest, &requests, "after late data");
    assert_ne!(stale.bars, first.bars, "the late trade is in the answers");
    let day: chrono::NaiveDate = "2014-03-12".parse().unwrap();
    assert!(
        stale.sources[0].trades_days.contains(&day),
        "{}",
        stale.sources[0]
    );
    assert!(!stale.sources[0].bars_days.contains(&day));
    assert!(!stale.sources[0].bars_days.is_empty());
    let out = env.compact_trades();
    assert!(out.contains("bars_1m: bars for 1 days"), "{out}");
    let rebuilt = assert_same_as_trades(&lake, Pin::Latest, &requests, "after the rebuild");
    assert_eq!(rebuilt.bars, stale.bars);
    assert!(
        rebuilt.sources[0].trades_days.is_empty(),
        "{}",
        rebuilt.sources[0]
    );
    // The pin from before everything still reads as it did.
    assert_eq!(answers(&lake, before, &requests).bars, first.bars);

    // Tomorrow, once every ordinary snapshot of today has expired: the end of today, by
    // its tag or as an instant, still answers through the bars it had then.
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let tag = retention::eod_tag(today);
    let end = chrono::DateTime::from_timestamp_millis(retention::end_of_day_ms(today)).unwrap();
    let tonight = answers(&lake, Pin::AsOf(end), &requests);
    assert_eq!(tonight.bars, rebuilt.bars);
    assert!(tonight.sources[0].trades_days.is_empty());
    // An hour into tomorrow (the processes' clock, `K2_TEST_CLOCK_SKEW`): more late data
    // in the same day, landed (the sink tags today's last trades snapshot); two hours
    // later, maintenance expires today's snapshots (tagging the bars') and rebuilds that
    // day's bars.
    let skew = (end - now).num_seconds() + 3_600;
    env.var("K2_TEST_CLOCK_SKEW", &format!("{skew}s"))
        .var("K2_MAINTENANCE__MIN_SNAPSHOTS", "1");
    late.envelope.sequence_number += 1;
    late.envelope.exchange_timestamp += 60_000_000;
    produce(&rt, &Feed::new(), &[feed::trade_record(&topic, &late)]);
    env.sink_once(&[], Duration::from_secs(120));
    env.var("K2_TEST_CLOCK_SKEW", &format!("{}s", skew + 7_200));
    env.maintain(&["expire"]);
    let out = env.compact_trades();
    assert!(out.contains("bars_1m: bars for 1 days"), "{out}");
    for table in ["trades", BARS] {
        let (tags, today_kept) = eod_history(&env, table, end);
        assert_eq!(tags, std::slice::from_ref(&tag), "{table}");
        assert_eq!(
            today_kept, 1,
            "{table}: only the tagged snapshot of today is left"
        );
    }
    let tomorrow = assert_same_as_trades(&lake, Pin::Latest, &requests, "tomorrow");
    assert_ne!(
        tomorrow.bars, tonight.bars,
        "the second late trade is in the answers"
    );
    assert!(
        tomorrow.sources[0].trades_days.is_empty(),
        "{}",
        tomorrow.sources[0]
    );
    for pin in [Pin::Tag(tag.clone()), Pin::AsOf(end)] {
        let what = format!("{pin:?} after expiry");
        let pinned = assert_same_as_trades(&lake, pin, &requests, &what);
        assert_eq!(pinned.bars, tonight.bars, "{what}");
        assert_eq!(
            pinned.sources, tonight.sources,
            "{what}: bars pinned with the trades"
        );
    }
}

/// A table's end-of-day tags, and how many of its snapshots committed before `end` remain.
fn eod_history(
    env: &TestEnv,
    table: &str,
    end: chrono::DateTime<chrono::Utc>,
) -> (Vec<String>, usize) {
    let table = k2_tests::runtime().block_on(k2_tests::tables::table(env, table));
    let m = table.metadata();
    let kept = m
        .snapshots()
        .filter(|s| s.timestamp_ms() <= end.timestamp_millis())
        .count();
    (k2_tests::tables::tags(m), kept)
}

/// Random trades (equal timestamps, sequence numbers out of time order, zero quantities)
/// written straight into the trades table in a few commits, their bars built by
/// maintenance; then, for random intervals that are whole minutes, random ranges (on the
/// minute and off it), both time zones and every session choice, the answer through the
/// bars equals the trades' own. `K2_TEST_SEED` replays a run (the seed is printed).
#[test]
fn bars_equal_trades_for_random_trades_and_intervals() {
    use rand::{Rng, SeedableRng};
    let env = TestEnv::new();
    let rt = k2_tests::runtime();
    let seed: u64 = std::env::var("K2_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("K2_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let config = env.k2_config();
    let day0 = feed::DAY0_MICROS;
    rt.block_on(write_random_trades(&config, &env.asx, &mut rng, day0));
    let out = env.compact_trades();
    assert!(out.contains("bars_1m: bars for"), "{out}");
    let lake = rt.block_on(Lakehouse::open(&config)).unwrap();
    let minute = 60_000_000i64;
    for case in 0..40 {
        let minutes = [1, 2, 3, 5, 7, 10, 15, 30, 45, 60, 90, 240, 1440][rng.random_range(0..13)];
        let interval = if rng.random_bool(0.2) {
            "1d".parse::<Interval>().unwrap()
        } else {
            format!("{minutes}m").parse::<Interval>().unwrap()
        };
        // From a day before the data to a day after, on the minute (or, one time in five,
        // a few microseconds off it).
        let at = |rng: &mut rand::rngs::StdRng| {
            let m = rng.random_range(-1440..4 * 1440i64);
            let off = if rng.random_bool(0.2) {
                rng.random_range(1..1000)
            } else {
                0
            };
            day0 + m * minute + off
        };
        let (a, b) = (at(&mut rng), at(&mut rng));
        if a == b {
            continue;
        }
        let req = OhlcvRequest {
            symbols: SYMBOLS[..rng.random_range(1..=SYMBOLS.len())]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exchange: env.asx.clone(),
            interval,
            from: chrono::DateTime::from_timestamp_micros(a.min(b)).unwrap(),
            to: chrono::DateTime::from_timestamp_micros(a.max(b)).unwrap(),
            tz: [TimeZoneChoice::Utc, TimeZoneChoice::Exchange][rng.random_range(0..2)],
            fill: Fill::Omit,
            session: [
                SessionChoice::Off,
                SessionChoice::Regular,
                SessionChoice::Extended,
            ][rng.random_range(0..3)],
        };
        let got = answers(&lake, Pin::Latest, std::slice::from_ref(&req));
        let raw = answers(
            &lake,
            without_bars(&lake, Pin::Latest),
            std::slice::from_ref(&req),
        );
        assert_eq!(
            got.bars, raw.bars,
            "case {case} (K2_TEST_SEED={seed}): {req:?} ({})",
            got.sources[0]
        );
    }
}

const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];

/// About 4,000 random trades over three UTC days from `day0`, in three commits through
/// K2's own writer and commit.
async fn write_random_trades(
    config: &k2_common::config::K2Config,
    exchange: &str,
    rng: &mut rand::rngs::StdRng,
    day0: i64,
) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Decimal128Array, Int32Array, Int64Array, StringArray};
    use arrow::array::{RecordBatch, TimestampMicrosecondArray, new_null_array};
    use k2_common::DataType;
    use k2_table::layout::{self, TableLayout};
    use k2_table::stage::append::{self, Append, ManifestMerge};
    use rand::Rng;
    use rand::seq::SliceRandom;

    let catalog = k2_common::catalog::connect(config).await.unwrap();
    let layout = TableLayout::new(
        DataType::Trades,
        &k2_common::schema::BuiltinSchema::TRADE.parse(),
    )
    .unwrap();
    layout::ensure_table(catalog.as_ref(), &layout)
        .await
        .unwrap();
    let committer = k2_table::commit::MetadataCommitter::connect(config)
        .await
        .unwrap();
    // A few instants many trades share, beside scattered ones.
    let shared: Vec<i64> = (0..20)
        .map(|_| day0 + rng.random_range(0..3 * 86_400_000_000i64))
        .collect();
    let mut offset = 0i64;
    for commit in 0..3 {
        let n = rng.random_range(1_000..1_500usize);
        let mut rows: Vec<(String, i64, i64, i128, i128)> = Vec::with_capacity(n);
        for _ in 0..n {
            let symbol = SYMBOLS[rng.random_range(0..SYMBOLS.len())].to_string();
            let ts = if rng.random_bool(0.3) {
                shared[rng.random_range(0..shared.len())]
            } else {
                day0 + rng.random_range(0..3 * 86_400_000_000i64)
            };
            let price = rng.random_range(100_000_000..10_000_000_000i128);
            let quantity = if rng.random_bool(0.05) {
                0
            } else {
                rng.random_range(1..100_000_000_000i128)
            };
            rows.push((symbol, ts, 0, price, quantity));
        }
        // Sequence numbers per symbol, shuffled against time.
        let mut seqs: Vec<i64> = (0..n as i64).map(|i| i + commit * 10_000).collect();
        seqs.shuffle(rng);
        for (r, s) in rows.iter_mut().zip(seqs) {
            r.2 = s;
        }
        let schema = layout.arrow_schema.clone();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                let strings = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
                match f.name().as_str() {
                    "symbol" => strings(rows.iter().map(|r| r.0.clone()).collect()),
                    "exchange" => strings(vec![exchange.to_string(); n]),
                    "asset_class" => strings(vec!["equities".to_string(); n]),
                    "kafka_topic" => strings(vec!["random".to_string(); n]),
                    "exchange_timestamp" | "ingestion_timestamp" | "ingested_at" => Arc::new(
                        TimestampMicrosecondArray::from(
                            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                        )
                        .with_timezone("+00:00"),
                    ),
                    "sequence_number" => Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                    "kafka_offset" => Arc::new(Int64Array::from(
                        (offset..offset + n as i64).collect::<Vec<_>>(),
                    )),
                    "kafka_partition" => Arc::new(Int32Array::from(vec![0; n])),
                    "price" => Arc::new(
                        Decimal128Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                            .with_precision_and_scale(18, 8)
                            .unwrap(),
                    ),
                    "quantity" => Arc::new(
                        Decimal128Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())
                            .with_precision_and_scale(28, 8)
                            .unwrap(),
                    ),
                    _ => new_null_array(f.data_type(), n),
                }
            })
            .collect();
        offset += n as i64;
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let table = catalog.load_table(&layout.ident).await.unwrap();
        let files =
            k2_table::writer::write_data_files(&table, &[batch], &format!("random-{commit}"))
                .await
                .unwrap();
        let staged = append::stage(
            &table,
            Append {
                files,
                properties: Default::default(),
                timestamp_ms: chrono::Utc::now().timestamp_millis(),
            },
            ManifestMerge::of(table.metadata()),
            None,
        )
        .await
        .unwrap();
        committer
            .commit_to(catalog.as_ref(), &layout.ident, staged)
            .await
            .unwrap();
    }
}
