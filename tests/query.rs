//! k2-query over tables the sink wrote: OHLCV against an independent computation from the
//! ASX CSV files, time travel, pruning, and the shell's errors.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};

use k2_query::{Fill, Interval, Lakehouse, OhlcvRequest, Pin, TimeZoneChoice};
use k2_tests::asx::{Bar, actual_bars, expected_bars};
use k2_tests::{TestEnv, asx_dir, ensure_services, stderr, stdout};

fn replayed_env() -> TestEnv {
    let (env, _) = k2_tests::replay_asx(&[]);
    env.sink_once(&[], Duration::from_secs(600));
    env
}

#[test]
fn ohlcv_matches_an_independent_computation_from_the_csv() {
    let env = replayed_env();
    let csv = std::fs::read_to_string(asx_dir().join("trades/7078.csv")).unwrap();
    let rt = k2_tests::runtime();
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    for (interval, width) in [("1m", 60), ("1d", 86_400)] {
        for (tz, local) in [
            (TimeZoneChoice::Utc, false),
            (TimeZoneChoice::Exchange, true),
        ] {
            let req = OhlcvRequest {
                symbols: vec!["BHP".into()],
                exchange: env.asx.clone(),
                interval: interval.parse::<Interval>().unwrap(),
                from: "2014-03-01T00:00:00Z".parse().unwrap(),
                to: "2014-04-01T00:00:00Z".parse().unwrap(),
                tz,
                fill: Fill::Omit,
                session: k2_query::SessionChoice::Off,
            };
            let got = actual_bars(&rt.block_on(session.ohlcv(&req)).unwrap());
            let want = expected_bars(&csv, width, local);
            assert_eq!(got.len(), want.len(), "{interval} {tz:?}: bar count");
            for (start, w) in &want {
                let (g, vwap) = got
                    .get(start)
                    .unwrap_or_else(|| panic!("{interval} {tz:?}: no bar at {start}"));
                let ctx = format!("{interval} {tz:?} bar at {start}");
                assert_eq!(
                    (g.open, g.high, g.low, g.close, g.volume, g.trades),
                    (w.open, w.high, w.low, w.close, w.volume, w.trades),
                    "{ctx}"
                );
                let want_vwap = w.notional as f64 / w.volume as f64 * 1e8;
                assert!(
                    (*vwap as f64 - want_vwap).abs() <= 1.0,
                    "{ctx}: vwap {vwap} vs {want_vwap}"
                );
            }
        }
    }
}

/// Filled forward, as typed rows: every minute from the first trade to the end of the
/// range; a minute without trades repeats the last close with volume 0 and no VWAP.
#[test]
fn ohlcv_fills_forward_as_typed_rows() {
    let env = replayed_env();
    let csv = std::fs::read_to_string(asx_dir().join("trades/7078.csv")).unwrap();
    let rt = k2_tests::runtime();
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    // The sample's week is 10–14 March 2014 (Sydney): its first two UTC days.
    let from: DateTime<Utc> = "2014-03-09T00:00:00Z".parse().unwrap();
    let to: DateTime<Utc> = "2014-03-11T00:00:00Z".parse().unwrap();
    let req = OhlcvRequest {
        symbols: vec!["BHP".into()],
        exchange: env.asx.clone(),
        interval: "1m".parse::<Interval>().unwrap(),
        from,
        to,
        tz: TimeZoneChoice::Utc,
        fill: Fill::Forward,
        session: k2_query::SessionChoice::Off,
    };
    let got = rt.block_on(session.ohlcv_bars(&req)).unwrap();
    let want: BTreeMap<i64, Bar> = expected_bars(&csv, 60, false)
        .into_iter()
        .filter(|(start, _)| (from.timestamp_micros()..to.timestamp_micros()).contains(start))
        .collect();
    let (&first, _) = want.first_key_value().expect("trades in the range");
    let minutes = (to.timestamp_micros() - first) / 60_000_000;
    assert_eq!(
        got.len() as i64,
        minutes,
        "one row per minute from the first trade"
    );
    let mut last_close = 0;
    for (i, bar) in got.iter().enumerate() {
        let start = first + i as i64 * 60_000_000;
        assert_eq!(bar.bucket_start.timestamp_micros(), start);
        assert_eq!(bar.symbol, "BHP");
        let row = (
            bar.open.0,
            bar.high.0,
            bar.low.0,
            bar.close.0,
            bar.volume.0,
            bar.trades,
        );
        match want.get(&start) {
            Some(w) => {
                assert_eq!(
                    row,
                    (w.open, w.high, w.low, w.close, w.volume, w.trades),
                    "{start}"
                );
                assert!(bar.vwap.is_some());
                last_close = w.close;
            }
            None => {
                assert_eq!(
                    row,
                    (last_close, last_close, last_close, last_close, 0, 0),
                    "{start}"
                );
                assert_eq!(bar.vwap, None);
            }
        }
    }
    // Typed rows from plain SQL too.
    #[derive(serde::Deserialize)]
    struct Count {
        symbol: String,
        n: i64,
    }
    let counts: Vec<Count> = rt
        .block_on(session.rows(
            "SELECT symbol, count(*) AS n FROM trades WHERE symbol = ? GROUP BY symbol",
            &[&"BHP"],
        ))
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].symbol, "BHP");
    assert_eq!(
        counts[0].n,
        csv.lines().filter(|l| !l.trim().is_empty()).count() as i64
    );
}

#[test]
fn time_travel_pins_every_table_and_pruning_reads_one_day() {
    use k2_tests::feed::{self, Feed};
    let env = TestEnv::ready(2, 1, "1s");
    let rt = k2_tests::runtime();
    let feed = Feed::new();
    let topic = env.topic(&env.asx, "trades");
    // Day 1 (2014-03-11) then day 2 (2014-03-12), each committed by its own run.
    let day = |d: i64, n: i64| -> Vec<feed::Raw> {
        (0..n)
            .map(|i| {
                let mut t = feed::trade(
                    &env.asx,
                    "equities",
                    if i % 2 == 0 { "BHP" } else { "CBA" },
                    d * 1000 + i,
                );
                t.envelope.exchange_timestamp =
                    feed::DAY0_MICROS + d * 86_400_000_000 + i * 1_000_000;
                feed::trade_record(&topic, &t)
            })
            .collect()
    };
    rt.block_on(feed.send(&day(0, 100)));
    env.sink_once(&[], Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1100));
    let between = Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(feed.send(&day(1, 60)));
    env.sink_once(&[], Duration::from_secs(120));

    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let count = |pin: Pin| -> i64 {
        let s = rt.block_on(lake.session(pin)).unwrap();
        let b = rt
            .block_on(s.sql("SELECT count(*) FROM trades", &[]))
            .unwrap();
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(count(Pin::AsOf(between)), 100, "pinned before day 2");
    assert_eq!(count(Pin::Latest), 160, "unpinned");
    // How many snapshots each run made depends on how the broker batched its fetches;
    // what is promised is that every snapshot shows exactly what was committed up to it.
    let history = rt.block_on(lake.snapshots("trades")).unwrap();
    assert!(history.len() >= 2, "{history:?}");
    assert!(
        history
            .iter()
            .all(|s| s.summary.contains_key("k2.kafka-offsets"))
    );
    let pin_to = |id: i64| Pin::Snapshots(BTreeMap::from([("trades".to_string(), Some(id))]));
    let mut committed = 0;
    for s in &history {
        committed += s.added_records.expect("added-records in the summary") as i64;
        assert_eq!(count(pin_to(s.snapshot_id)), committed, "pinned to {s:?}");
    }
    assert_eq!(committed, 160);
    let last_before = history
        .iter()
        .rfind(|s| s.committed_at <= between)
        .expect("a snapshot before day 2");
    assert_eq!(
        count(pin_to(last_before.snapshot_id)),
        100,
        "pinned to the last snapshot id before day 2"
    );

    // Pruning: one day and one symbol plans only that day's files.
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    let filter = k2_query::plan::Filter {
        exchange: Some(env.asx.clone()),
        symbols: vec!["BHP".into()],
        from: Some("2014-03-12T00:00:00Z".parse().unwrap()),
        to: Some("2014-03-13T00:00:00Z".parse().unwrap()),
    };
    let files = rt
        .block_on(session.planned_files("trades", &filter))
        .unwrap();
    let all = rt
        .block_on(session.planned_files("trades", &Default::default()))
        .unwrap();
    assert!(
        !files.is_empty() && files.len() < all.len(),
        "{files:?} of {all:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.contains("exchange_timestamp_day=2014-03-12")),
        "{files:?}"
    );

    // The shell: --as-of and SQL with -c.
    let out = env.run(
        "k2-query",
        &[
            "--as-of",
            &between.to_rfc3339(),
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM trades",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "n\n100");
}

#[test]
fn shell_errors_are_clear_and_exit_non_zero() {
    ensure_services();
    let env = TestEnv::new();
    env.set_partitions(1, 1);
    env.create_topics();
    // Trades on two exchanges: `.ohlcv` without --exchange cannot guess one.
    let records: Vec<_> = [(&env.asx, "equities"), (&env.binance, "crypto")]
        .into_iter()
        .map(|(exchange, class)| {
            let t = k2_tests::feed::trade(exchange, class, "BHP", 1);
            k2_tests::feed::trade_record(&env.topic(exchange, "trades"), &t)
        })
        .collect();
    k2_tests::runtime().block_on(k2_tests::feed::Feed::new().send(&records));
    env.sink_once(&[], Duration::from_secs(120));
    let cases: [(&[&str], &str); 7] = [
        (&["-c", "SELEC 1"], "syntax error"),
        (&["-c", "SELECT * FROM nope"], "nope"),
        (
            &["-c", "SELECT no_such_column FROM trades"],
            "no_such_column",
        ),
        (
            &["--as-of", "2001-01-01", "-c", "SELECT 1"],
            "no snapshot at or before",
        ),
        // The request's own mistakes before the exchange guess.
        (
            &["-c", ".ohlcv BHP 7x 2014-03-10 2014-03-11"],
            "interval \"7x\"",
        ),
        (&["-c", ".ohlcv BHP 1m someday 2014-03-11"], "\"someday\""),
        (
            &["-c", ".ohlcv BHP 1m 2014-03-10 2014-03-11"],
            "several exchanges",
        ),
    ];
    for (args, needle) in cases {
        let out = env.run("k2-query", args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr(&out).to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Read-only: no writing files (outside the temp directory or into the warehouse), no
    // settings changes; queries and EXPLAIN of queries still run.
    let outside = k2_tests::repo_root().join("must-not-be-written.csv");
    let warehouse = env.k2_config().warehouse.location.replace("file://", "");
    let inside = std::path::Path::new(&warehouse).join("must-not-be-written.csv");
    let copy_out = format!("COPY (SELECT 1) TO '{}'", outside.display());
    let copy_in = format!("COPY (SELECT 1) TO '{}'", inside.display());
    let explain_copy = format!("EXPLAIN ANALYZE {copy_in}");
    for sql in [
        copy_out.as_str(),
        copy_in.as_str(),
        explain_copy.as_str(),
        "SET enable_external_access = true",
        "CREATE TABLE x AS SELECT 1",
    ] {
        let out = env.run("k2-query", &["-c", sql]);
        assert!(!out.status.success(), "{sql} should fail");
        assert!(
            stderr(&out).contains("read-only"),
            "{sql}: {}",
            stderr(&out)
        );
    }
    assert!(!outside.exists() && !inside.exists());
    for sql in [
        "EXPLAIN SELECT count(*) FROM trades",
        "DESCRIBE trades",
        "SUMMARIZE quotes",
    ] {
        let out = env.run("k2-query", &["-c", sql]);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
    }
    // An empty answer still says what its columns are, in every format.
    let empty = "SELECT symbol, price FROM trades WHERE false";
    for (format, want) in [
        ("csv", "symbol,price"),
        ("json", "[]"),
        ("table", "| symbol | price |"),
    ] {
        let out = env.run("k2-query", &["--format", format, "-c", empty]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        assert!(
            stdout(&out).lines().any(|l| l.trim() == want),
            "{format}: {}",
            stdout(&out)
        );
    }
    // A catalog that cannot be reached names the URL it tried.
    let mut env = env;
    env.var(
        "K2_CATALOG",
        r#"{type="rest",name="k2",uri="http://127.0.0.1:9"}"#,
    );
    let out = env.run("k2-query", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn backtest_questions_over_the_asx_sample() {
    use arrow::datatypes::Int64Type;
    let env = replayed_env();
    let rt = k2_tests::runtime();
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    let range = k2_query::Range {
        exchange: env.asx.clone(),
        symbols: vec!["BHP".into(), "DVN".into()],
        from: "2014-03-11T00:00:00Z".parse().unwrap(),
        to: "2014-03-12T00:00:00Z".parse().unwrap(),
    };
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    let trades = rt.block_on(session.trades_in(&range)).unwrap();
    let joined = rt.block_on(session.trades_with_quotes(&range)).unwrap();
    assert!(rows(&trades) > 1000);
    assert_eq!(rows(&joined), rows(&trades), "one row per trade");
    // The prevailing quote is never after the trade.
    for b in &joined {
        let t = b["exchange_timestamp"].as_primitive::<TimestampMicrosecondType>();
        let q = b["quote_time"].as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if arrow::array::Array::is_valid(q, i) {
                assert!(q.value(i) <= t.value(i));
            }
        }
    }
    let quotes = rt.block_on(session.quotes_in(&range)).unwrap();
    let stats = rt.block_on(session.spread_stats(&range)).unwrap();
    let both_sides: i64 = stats
        .iter()
        .map(|b| {
            (0..b.num_rows())
                .map(|i| b["quotes"].as_primitive::<Int64Type>().value(i))
                .sum::<i64>()
        })
        .sum();
    assert!(both_sides > 0 && both_sides as usize <= rows(&quotes));
    let daily = rt.block_on(session.daily_summary(&range)).unwrap();
    // 2014-03-11 UTC spans two Sydney trading days (the 11th from 13:00 UTC).
    assert!(
        rows(&daily) >= 2,
        "{}",
        arrow::util::pretty::pretty_format_batches(&daily).unwrap()
    );
}

/// The backtest example pins `as_of`; re-run with the instant it printed after more data
/// has landed, it prints exactly the same (snapshots, bars, P&L). Unpinned, it sees the
/// new snapshots.
#[test]
fn backtest_example_is_reproducible_after_more_data_lands() {
    let env = replayed_env();
    let backtest = |extra: &[&str]| {
        let mut args = vec!["--symbol", "BHP", "--exchange", env.asx.as_str()];
        args.extend_from_slice(extra);
        let out = env.run("examples/backtest", &args);
        assert!(out.status.success(), "backtest: {}", stderr(&out));
        stdout(&out)
    };
    let first = backtest(&[]);
    let as_of = first
        .lines()
        .find_map(|l| l.strip_prefix("as_of: "))
        .expect("the example prints its as_of")
        .to_string();
    assert!(first.contains("one-minute bars"), "{first}");

    // More data lands: the same week replayed again (new offsets, new snapshots).
    std::thread::sleep(Duration::from_millis(1100));
    let out = env.run(
        "k2-feed",
        &[
            "replay",
            "--asx-dir",
            asx_dir().to_str().unwrap(),
            "--exchange",
            &env.asx,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.sink_once(&[], Duration::from_secs(600));

    assert_eq!(backtest(&["--as-of", &as_of]), first, "pinned re-run");
    let snapshots = |text: &str| {
        text.lines()
            .filter(|l| l.contains("snapshot"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_ne!(
        snapshots(&backtest(&[])),
        snapshots(&first),
        "an unpinned run reads the new snapshots"
    );
}

/// Markouts over trades and quotes of known prices: each trade marked at the mid (or the
/// last trade) one and ten seconds later, signed by its side, exact decimals; a horizon
/// that is not a positive duration is refused.
#[test]
fn markouts_mark_each_trade_at_each_horizon_signed_by_side() {
    use k2_common::records::{Dec8, Side};
    use k2_query::{Horizon, MarkoutPrice, MarkoutRequest, Range};
    use k2_tests::feed::{self, Feed};
    let env = TestEnv::ready(2, 1, "1s");
    let rt = k2_tests::runtime();
    let (trades_topic, quotes_topic) =
        (env.topic(&env.asx, "trades"), env.topic(&env.asx, "quotes"));
    const E8: i128 = 100_000_000;
    let t0 = feed::DAY0_MICROS + 3_600_000_000;
    let s = 1_000_000;
    let quote = |seq: i64, at: i64, bid: i128, ask: i128| {
        let mut q = feed::quote(&env.asx, "equities", "BHP", seq);
        q.envelope.exchange_timestamp = at;
        q.bid_price = Some(Dec8::from_units(bid));
        q.ask_price = Some(Dec8::from_units(ask));
        feed::quote_record(&quotes_topic, &q)
    };
    let trade = |seq: i64, at: i64, price: i128, side: Side| {
        let mut t = feed::trade(&env.asx, "equities", "BHP", seq);
        t.envelope.exchange_timestamp = at;
        t.price = Dec8::from_units(price);
        t.side = Some(side);
        feed::trade_record(&trades_topic, &t)
    };
    let records = vec![
        quote(1, t0, 10 * E8, 12 * E8),
        quote(2, t0 + 5 * s, 12 * E8, 14 * E8),
        trade(1, t0 + s / 2, 115 * E8 / 10, Side::Buy),
        trade(2, t0 + 4 * s, 12 * E8, Side::Sell),
        trade(3, t0 + 6 * s, 13 * E8, Side::Unknown),
    ];
    rt.block_on(Feed::new().send(&records));
    env.sink_once(&[], Duration::from_secs(120));
    let lake = rt.block_on(Lakehouse::open(&env.k2_config())).unwrap();
    let session = rt.block_on(lake.session(Pin::Latest)).unwrap();
    let ask = |price: MarkoutPrice, horizons: &[&str]| {
        let req = MarkoutRequest {
            range: Range {
                exchange: env.asx.clone(),
                symbols: vec!["BHP".into()],
                from: DateTime::from_timestamp_micros(t0).unwrap(),
                to: DateTime::from_timestamp_micros(t0 + 60 * s).unwrap(),
            },
            horizons: horizons
                .iter()
                .map(|h| h.parse::<Horizon>())
                .collect::<Result<_, _>>()?,
            price,
        };
        rt.block_on(session.markouts(&req))
    };
    // (price_1s, markout_1s, price_10s, markout_10s) per trade, in 1e-8 units.
    let table = |batches: Vec<RecordBatch>| -> Vec<[Option<i128>; 4]> {
        use arrow::array::Array;
        use arrow::datatypes::Decimal128Type;
        let mut out = Vec::new();
        for b in &batches {
            let col = |n: &str| b[n].as_primitive::<Decimal128Type>().clone();
            let cols = [
                col("price_1s"),
                col("markout_1s"),
                col("price_10s"),
                col("markout_10s"),
            ];
            for r in 0..b.num_rows() {
                out.push(cols.each_ref().map(|c| (!c.is_null(r)).then(|| c.value(r))));
            }
        }
        out
    };
    let mid = table(ask(MarkoutPrice::Mid, &["1s", "10s"]).unwrap());
    assert_eq!(
        mid,
        vec![
            // A buy at 11.5: mid 11 a second later (−0.5), 13 ten seconds later (+1.5).
            [
                Some(11 * E8),
                Some(-E8 / 2),
                Some(13 * E8),
                Some(3 * E8 / 2)
            ],
            // A sell at 12: mid 13 at both (the quote at exactly +1 s counts): −1, −1.
            [Some(13 * E8), Some(-E8), Some(13 * E8), Some(-E8)],
            // Side unknown: prices, no markout.
            [Some(13 * E8), None, Some(13 * E8), None],
        ]
    );
    let last = table(ask(MarkoutPrice::Trade, &["1s", "10s"]).unwrap());
    assert_eq!(
        last,
        vec![
            [
                Some(115 * E8 / 10),
                Some(0),
                Some(13 * E8),
                Some(3 * E8 / 2)
            ],
            [Some(12 * E8), Some(0), Some(13 * E8), Some(-E8)],
            [Some(13 * E8), None, Some(13 * E8), None],
        ]
    );
    for bad in ["0s", "-1s", "soon"] {
        let e = ask(MarkoutPrice::Mid, &[bad]).unwrap_err().to_string();
        assert!(e.contains("horizon"), "{bad}: {e}");
    }
    // The shell: the same question, as CSV.
    let out = env.run(
        "k2-query",
        &[
            "--format",
            "csv",
            "-c",
            &format!(
                ".markouts BHP {} {} --horizons 1s,10s --exchange {}",
                DateTime::from_timestamp_micros(t0).unwrap().to_rfc3339(),
                DateTime::from_timestamp_micros(t0 + 60 * s)
                    .unwrap()
                    .to_rfc3339(),
                env.asx
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    assert!(csv.lines().next().unwrap().contains("markout_10s"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
}
