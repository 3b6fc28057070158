//! k2-feed into the real broker, landed by k2-sink: the ASX sample replays completely with
//! correct UTC times, and synthetic faults produce exactly the dead letters announced.

use std::collections::BTreeMap;
use std::time::Duration;

use k2_tests::{TestEnv, feed, stdout, tables};

/// `key=value` pairs of the feed's summary line.
fn summary(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .find(|l| l.starts_with("k2-feed: "))
        .unwrap_or_else(|| panic!("no summary line in {out:?}"))
        .split_whitespace()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn replaying_the_asx_sample_lands_every_row_with_utc_times() {
    let (env, out) = k2_tests::replay_asx(&[]);
    let s = summary(&stdout(&out));
    assert_eq!(
        s["records"],
        (91_631 + 232 + 11 + 77_849 + 549 + 60 + 4).to_string()
    );
    env.sink_once(&[], Duration::from_secs(600));

    let rt = k2_tests::runtime();
    let trades = rt.block_on(tables::scan(&env, "trades"));
    let quotes = rt.block_on(tables::scan(&env, "quotes"));
    let reference = rt.block_on(tables::scan(&env, "reference_data"));
    let mut per_symbol: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_bhp = i64::MAX;
    for b in &trades.batches {
        let sym = tables::strings(b, "symbol");
        let ts = tables::timestamps(b, "exchange_timestamp");
        for r in 0..b.num_rows() {
            *per_symbol.entry(sym.value(r).to_string()).or_default() += 1;
            if sym.value(r) == "BHP" {
                first_bhp = first_bhp.min(ts.value(r));
            }
        }
    }
    assert_eq!(per_symbol["BHP"], 91_631);
    assert_eq!(per_symbol["DVN"], 232);
    assert_eq!(per_symbol["MWR"], 11);
    assert_eq!(quotes.rows(), 77_849 + 549 + 60);
    assert_eq!(reference.rows(), 4);
    // 03/10/2014 07:57:14.754 in Sydney (AEDT, UTC+11).
    assert_eq!(
        chrono::DateTime::from_timestamp_micros(first_bhp)
            .unwrap()
            .to_rfc3339(),
        "2014-03-09T20:57:14.754+00:00"
    );
}

#[test]
fn synthetic_faults_match_the_dead_letters_and_rows() {
    let env = TestEnv::ready(2, 2, "1s");
    let out = env.run(
        "k2-feed",
        &[
            "synthetic",
            "--count",
            "6000",
            "--symbols",
            "10",
            "--poison-every",
            "97",
            "--duplicate-every",
            "250",
            "--gap-every",
            "300",
        ],
    );
    assert!(out.status.success(), "{}", k2_tests::stderr(&out));
    let s = summary(&stdout(&out));
    let poison: usize = s["poison"].parse().unwrap();
    assert_eq!(s["records"], "6000");
    assert!(
        poison >= 50 && s["duplicates"] != "0" && s["gaps"] != "0",
        "{s:?}"
    );
    env.sink_once(&[], Duration::from_secs(300));

    let rt = k2_tests::runtime();
    let rows: usize = ["trades", "quotes", "reference_data"]
        .iter()
        .map(|t| rt.block_on(tables::scan(&env, t)).rows())
        .sum();
    assert_eq!(
        rows,
        6000 - poison,
        "every valid record (duplicates included) lands"
    );
    let letters = feed::read_dead_letters(&env.dead_letter_topic);
    assert_eq!(letters.len(), poison);
    let kinds: std::collections::BTreeSet<&str> =
        letters.iter().map(|l| l.header("k2.error.kind")).collect();
    assert_eq!(kinds.len(), 7, "each poison kind in turn: {kinds:?}");
}

/// Counts from the sink's final log line, e.g. `"gap": 12` inside `sequence={...}`.
fn sequence_counts(log: &str) -> BTreeMap<String, u64> {
    let line = log
        .lines()
        .find(|l| l.contains("sink stopped"))
        .unwrap_or_else(|| panic!("no final line in:\n{log}"));
    let inner = line
        .split("sequence={")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    inner
        .split(", ")
        .filter_map(|kv| {
            let (k, v) = kv.split_once(": ")?;
            Some((k.trim_matches('"').to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn injected_gaps_and_duplicates_are_classified_exactly() {
    let env = TestEnv::ready(2, 2, "1s");
    let out = env.run(
        "k2-feed",
        &[
            "synthetic",
            "--count",
            "8000",
            "--symbols",
            "12",
            "--gap-every",
            "211",
            "--duplicate-every",
            "333",
        ],
    );
    assert!(out.status.success(), "{}", k2_tests::stderr(&out));
    let s = summary(&stdout(&out));
    env.sink_once(&[], Duration::from_secs(300));
    let log = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sink-once-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    let counts = sequence_counts(&log);
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert_eq!(get("gap").to_string(), s["gaps"], "{counts:?}");
    assert_eq!(get("duplicate").to_string(), s["duplicates"], "{counts:?}");
    assert_eq!(get("out_of_order"), 0, "{counts:?}");
    assert_eq!(
        get("first_seen"),
        2 * 2 * 12,
        "one per instrument and data type: {counts:?}"
    );
    let reference = 2 * 12;
    assert_eq!(
        counts.values().sum::<u64>(),
        8000 - reference,
        "every market record classified once: {counts:?}"
    );
    // Each injected gap is one row of market_data.sequence_events, of size one.
    let events = k2_tests::runtime().block_on(tables::scan(&env, "sequence_events"));
    assert_eq!(events.rows().to_string(), s["gaps"]);
    for b in &events.batches {
        let kind = tables::strings(b, "kind");
        let gap = tables::longs(b, "gap_size");
        for r in 0..b.num_rows() {
            assert_eq!((kind.value(r), gap.value(r)), ("gap", 1));
        }
    }
}

/// The real ASX sample with three ranges left out after sequence numbers were assigned:
/// `market_data.sequence_events` holds exactly those gaps, and nothing else.
#[test]
fn replay_with_rows_removed_finds_exactly_the_removed_ranges() {
    use arrow::array::Array;
    let (env, _) = k2_tests::replay_asx(&[
        "--drop",
        "trades:BHP:1000-1002",
        "--drop",
        "trades:BHP:50000-50000",
        "--drop",
        "quotes:BHP:20000-20004",
        "--drop",
        "trades:DVN:100-109",
    ]);
    env.sink_once(&[], Duration::from_secs(600));

    let events = k2_tests::runtime().block_on(tables::scan(&env, "sequence_events"));
    let mut found = Vec::new();
    for b in &events.batches {
        let dt = tables::strings(b, "data_type");
        let sym = tables::strings(b, "symbol");
        let kind = tables::strings(b, "kind");
        let expected = tables::longs(b, "expected");
        let actual = tables::longs(b, "actual");
        let gap = tables::longs(b, "gap_size");
        for r in 0..b.num_rows() {
            found.push((
                dt.value(r).to_string(),
                sym.value(r).to_string(),
                kind.value(r).to_string(),
                expected.value(r),
                actual.value(r),
                gap.is_valid(r).then(|| gap.value(r)),
            ));
        }
    }
    found.sort();
    let gap = |dt: &str, sym: &str, first: i64, last: i64| {
        (
            dt.to_string(),
            sym.to_string(),
            "gap".to_string(),
            first,
            last + 1,
            Some(last - first + 1),
        )
    };
    let mut want = vec![
        gap("quotes", "BHP", 20000, 20004),
        gap("trades", "BHP", 1000, 1002),
        gap("trades", "BHP", 50000, 50000),
        gap("trades", "DVN", 100, 109),
    ];
    want.sort();
    assert_eq!(found, want);
}
