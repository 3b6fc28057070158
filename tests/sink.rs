//! k2-sink against the real broker and the embedded catalog: values, partitions, sort
//! order, exactly-once across restarts, kill -9 and a second sink, dead letters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k2_common::records::{Quote, Trade};
use k2_tests::feed::{self, ASX_SYMBOLS, CRYPTO_SYMBOLS, Feed, Raw};
use k2_tests::tables::{self, Scanned};
use k2_tests::{TestEnv, ensure_services};

type Key = (String, i32, i64);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Produces the records and returns their lineage keys in production order.
fn produce(rt: &tokio::runtime::Runtime, feed: &Feed, records: &[Raw]) -> Vec<Key> {
    let landed = rt.block_on(feed.send(records));
    records
        .iter()
        .zip(landed)
        .map(|(r, l)| (r.topic.clone(), l.partition, l.offset))
        .collect()
}

/// Every key exactly once: no duplicates, nothing missing, nothing extra.
fn assert_exactly_once(scanned: &Scanned, expected: &BTreeSet<Key>, what: &str) {
    let lineage = scanned.lineage();
    let mut counts: HashMap<&Key, usize> = HashMap::new();
    for k in &lineage {
        *counts.entry(k).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    let found: BTreeSet<Key> = lineage.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&found).take(5).collect();
    let extra: Vec<_> = found.difference(expected).take(5).collect();
    assert!(
        duplicated.is_empty() && missing.is_empty() && extra.is_empty(),
        "{what}: {} rows for {} expected; duplicated {duplicated:?}, missing {missing:?} \
         (of {}), extra {extra:?}",
        lineage.len(),
        expected.len(),
        expected.difference(&found).count(),
    );
}

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

/// Each data file sits in the partition of its rows and is sorted by (symbol, timestamp).
fn check_files(scanned: &Scanned) {
    assert!(!scanned.files.is_empty());
    for path in &scanned.files {
        let batches = tables::read_data_file(path);
        let mut last: Option<(String, i64)> = None;
        for b in &batches {
            let symbol = tables::strings(b, "symbol");
            let exchange = tables::strings(b, "exchange");
            let ts = tables::timestamps(b, "exchange_timestamp");
            for r in 0..b.num_rows() {
                let day = chrono::DateTime::from_timestamp_micros(ts.value(r))
                    .unwrap()
                    .date_naive();
                assert!(
                    path.contains(&format!("exchange={}", exchange.value(r)))
                        && path.contains(&format!("={day}")),
                    "row ({}, {day}) in file {path}",
                    exchange.value(r)
                );
                let key = (symbol.value(r).to_string(), ts.value(r));
                if let Some(prev) = &last {
                    assert!(
                        *prev <= key,
                        "{path} is not sorted: {prev:?} before {key:?}"
                    );
                }
                last = Some(key);
            }
        }
    }
}

#[test]
fn lands_every_record_once_with_values_partitions_and_sort_order() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(3, 2);
    env.var("K2_SINK__COMMIT__INTERVAL", "1s");
    env.create_topics();
    let rt = runtime();
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
    check_files(&trades);
    check_files(&quotes);
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
