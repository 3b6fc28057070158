//! Measures the sequence tracker: nanoseconds per record at a given number of symbols,
//! and heap bytes per remembered instrument (from the process's resident memory).
//! Run through `bench/sequence`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use k2_common::topic::DataType;
use k2_sink::check::tracker::{InstrumentKey, SequenceTracker};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn keys(n: usize) -> Vec<InstrumentKey> {
    let exchange: Arc<str> = Arc::from("asx");
    (0..n)
        .map(|i| InstrumentKey {
            exchange: exchange.clone(),
            data_type: DataType::Trades,
            symbol: format!("SYM{i:05}").into(),
        })
        .collect()
}

fn main() {
    let symbols: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let records: usize = 20_000_000;
    let day = NaiveDate::from_ymd_opt(2014, 3, 11).unwrap();

    // Per-record cost: records spread over `symbols` instruments, all in order, with the
    // lookup of a fresh key each time as the sink does.
    let names = keys(symbols);
    let mut tracker = SequenceTracker::new(NonZeroUsize::new(symbols).unwrap());
    let mut seq = vec![0i64; symbols];
    let started = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..records {
        // xorshift: a cheap, skewed-enough pick of the instrument.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % symbols as u64) as usize;
        seq[i] += 1;
        let key = InstrumentKey {
            exchange: names[i].exchange.clone(),
            data_type: DataType::Trades,
            symbol: names[i].symbol.clone(),
        };
        std::hint::black_box(tracker.observe(&key, seq[i], day, 0));
    }
    let ns = started.elapsed().as_nanos() as f64 / records as f64;

    // Memory per entry: resident growth while filling a large tracker.
    let n = 1_000_000;
    let big_keys = keys(n);
    let before = rss_bytes();
    let mut big = SequenceTracker::new(NonZeroUsize::new(n).unwrap());
    for k in &big_keys {
        big.observe(k, 1, day, 0);
    }
    let per_entry = (rss_bytes().saturating_sub(before)) as f64 / n as f64;
    std::hint::black_box(&big);

    println!("| symbols | records | ns/record | bytes/entry (8-char symbol) |");
    println!("|---|---|---|---|");
    println!("| {symbols} | {records} | {ns:.1} | {per_entry:.0} |");
    println!("sequence_tracker_ns_per_record: {ns:.1} ns");
}
