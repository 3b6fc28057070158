//! `k2-bench query`: OHLCV questions three ways over the same trades table:
//! - K2: `Session::ohlcv` (iceberg-rust plans the files, DuckDB reads them);
//! - floor: a plain DuckDB connection running the same aggregate (the same bucketing and
//!   predicate shape as K2, with literals) with `read_parquet` over exactly the files K2
//!   planned (planning not timed: the least any engine could do);
//! - `iceberg_scan`: DuckDB's own Iceberg extension over the table's metadata file.
//!
//! Each case latest and as-of (pinned to the snapshot in the middle of the history), warm
//! (median of repeated runs in one session) and cold (OS page cache dropped when
//! permitted, new session or connection).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::AsArray;
use chrono::{DateTime, TimeZone, Utc};
use duckdb::Connection;

use k2_common::config::K2Config;
use k2_query::plan::Filter;
use k2_query::{
    Fill, Horizon, Interval, Lakehouse, MarkoutPrice, MarkoutRequest, OhlcvRequest, Pin,
    TimeZoneChoice,
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Warm repetitions per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// DuckDB extension directory with iceberg and avro (skip iceberg_scan if absent).
    #[arg(long)]
    extensions: Option<PathBuf>,
    /// Instead of the three-way comparison: the same questions through K2's Python
    /// package, run by this interpreter (bench/query.py), against the Rust library.
    #[arg(long)]
    python: Option<PathBuf>,
}

pub struct Case {
    pub name: &'static str,
    pub req: OhlcvRequest,
}

pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn drop_caches() -> bool {
    // Needs root; without it "cold" means a new session over a warm OS cache.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// The OHLCV aggregate K2 runs (the same bucketing, UTC) over `src`, rows chosen by `filter`.
pub fn ohlcv_sql(req: &OhlcvRequest, src: &str, filter: &str) -> String {
    let unit = match req.interval.unit {
        k2_query::ohlcv::IntervalUnit::Second => "second",
        k2_query::ohlcv::IntervalUnit::Minute => "minute",
        k2_query::ohlcv::IntervalUnit::Hour => "hour",
        k2_query::ohlcv::IntervalUnit::Day => "day",
    };
    format!(
        "SELECT symbol,
                make_timestamptz(epoch_us(time_bucket(INTERVAL '{} {unit}',
                    make_timestamp(epoch_us(exchange_timestamp)), TIMESTAMP '2000-01-01')))
                    AS bucket_start,
                arg_min(price, (exchange_timestamp, sequence_number)) AS open,
                max(price) AS high, min(price) AS low,
                arg_max(price, (exchange_timestamp, sequence_number)) AS close,
                sum(quantity) AS volume,
                CAST(sum(price * quantity) / nullif(sum(quantity), 0) AS DECIMAL(18, 8)) AS vwap,
                count(*) AS trades
         FROM {src}
         WHERE {filter}
         GROUP BY ALL ORDER BY symbol, bucket_start",
        req.interval.count,
    )
}

/// The request's range as a WHERE clause with literals, in the shape K2 binds.
fn literal_filter(req: &OhlcvRequest) -> String {
    let symbols: Vec<String> = req
        .symbols
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!(
        "exchange = '{}' AND symbol >= {} AND symbol <= {} AND list_contains([{}], symbol)
           AND exchange_timestamp >= TIMESTAMPTZ '{}' AND exchange_timestamp < TIMESTAMPTZ '{}'",
        req.exchange,
        symbols.iter().min().expect("a symbol"),
        symbols.iter().max().expect("a symbol"),
        symbols.join(", "),
        req.from.to_rfc3339(),
        req.to.to_rfc3339(),
    )
}

fn floor_sql(req: &OhlcvRequest, src: &str) -> String {
    ohlcv_sql(req, src, &literal_filter(req))
}

/// What a trades table holds: its row count, its busiest ASX symbol and a typical one (the
/// median by trade count: the synthetic market's activity is skewed, the busiest symbol has
/// about 75 times the median's trades), every ASX symbol and its time span.
pub struct Survey {
    pub total: i64,
    pub busiest: String,
    pub typical: String,
    pub all: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// The first column of `batches`, a string column, as owned strings.
fn first_strings(batches: Vec<arrow::record_batch::RecordBatch>) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn survey(rt: &tokio::runtime::Runtime, session: &k2_query::Session) -> anyhow::Result<Survey> {
    let total: i64 = rt.block_on(session.sql("SELECT count(*) FROM trades", &[]))?[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    let by_count = first_strings(rt.block_on(session.sql(
        "SELECT symbol, count(*) AS n FROM trades WHERE exchange = 'asx'
         GROUP BY symbol ORDER BY n DESC, symbol",
        &[],
    ))?);
    anyhow::ensure!(!by_count.is_empty(), "the trades table has no ASX trades");
    let busiest = by_count[0].clone();
    let typical = by_count[by_count.len() / 2].clone();
    // By count, the symbols are every ASX symbol; sorted for the requests.
    let mut all = by_count.clone();
    all.sort();
    let span = rt.block_on(session.sql(
        "SELECT epoch_us(min(exchange_timestamp)), epoch_us(max(exchange_timestamp)) FROM trades",
        &[],
    ))?;
    let micros = |c: usize| {
        span[0]
            .column(c)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    Ok(Survey {
        total,
        busiest,
        typical,
        all,
        first: Utc.timestamp_micros(micros(0)).unwrap(),
        last: Utc.timestamp_micros(micros(1)).unwrap(),
    })
}

fn rows(batches: &[arrow::record_batch::RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn time<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = K2Config::load(&args.config)?;
    let rt = crate::runtime()?;
    let lake = rt.block_on(Lakehouse::open(&config))?;
    let table = rt.block_on(lake.table("trades"))?;
    let metadata_location = table
        .metadata_location()
        .context("the trades table has no metadata location")?
        .to_string();
    let history = rt.block_on(lake.snapshots("trades"))?;
    anyhow::ensure!(
        history.len() >= 2,
        "the trades table needs at least two snapshots"
    );
    let middle = &history[history.len() / 2];
    let as_of = middle.committed_at;

    let session = rt.block_on(lake.session(Pin::Latest))?;
    let Survey {
        total,
        busiest,
        typical,
        all,
        first,
        last,
    } = survey(&rt, &session)?;
    // A whole day in the middle of the data (one that exists in the as-of snapshot too).
    let day_start: DateTime<Utc> = {
        let mid = first + (as_of.min(last) - first) / 2;
        mid.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc()
    };
    let day_end = day_start + chrono::Duration::days(1);
    drop(session);

    let req = |symbols: Vec<String>, interval: &str, from, to| OhlcvRequest {
        symbols,
        exchange: "asx".into(),
        interval: interval.parse::<Interval>().unwrap(),
        from,
        to,
        tz: TimeZoneChoice::Utc,
        fill: Fill::Omit,
        session: k2_query::SessionChoice::Off,
    };
    let cases = [
        Case {
            name: "1m, one symbol-day",
            req: req(vec![busiest.clone()], "1m", day_start, day_end),
        },
        Case {
            name: "1m, median symbol-day",
            req: req(vec![typical.clone()], "1m", day_start, day_end),
        },
        Case {
            name: "1m, all symbols, one day",
            req: req(all.clone(), "1m", day_start, day_end),
        },
        Case {
            name: "1d, all symbols, all data",
            req: req(
                all.clone(),
                "1d",
                first - chrono::Duration::days(1),
                last + chrono::Duration::days(1),
            ),
        },
    ];

    if let Some(python) = &args.python {
        // The symbol-day and full-day questions a backtest asks.
        let asked: Vec<Case> = cases
            .into_iter()
            .filter(|c| c.name.starts_with("1m"))
            .collect();
        return crate::query_python::run(python, &args.config, &rt, &lake, &asked, args.repeat);
    }

    let iceberg = args.extensions.as_ref().and_then(|dir| {
        let conn = Connection::open_in_memory().ok()?;
        conn.execute_batch(&format!(
            "SET extension_directory = '{}'; SET autoinstall_known_extensions = false;
             LOAD avro; LOAD iceberg;",
            dir.display()
        ))
        .map_err(|e| eprintln!("iceberg_scan skipped: {e}"))
        .ok()?;
        Some(dir.clone())
    });
    let iceberg_conn = |dir: &PathBuf| -> anyhow::Result<Connection> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(&format!(
            "SET extension_directory = '{}'; SET autoinstall_known_extensions = false;
             LOAD avro; LOAD iceberg; SET TimeZone = 'UTC';",
            dir.display()
        ))?;
        Ok(conn)
    };

    let can_drop = drop_caches();
    println!(
        "trades: {total} rows, {} snapshots, {} → {}; as-of = snapshot {} at {}; cold = {}",
        history.len(),
        first.format("%F"),
        last.format("%F"),
        middle.snapshot_id,
        as_of.to_rfc3339(),
        if can_drop {
            "page cache dropped + new session"
        } else {
            "new session (page cache warm: no permission to drop it)"
        }
    );
    println!(
        "| case | pin | rows | files | K2 warm ms | floor warm ms | K2/floor warm | iceberg_scan warm ms | K2 cold ms | floor cold ms | K2/floor cold | iceberg_scan cold ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut headline = None;
    // The latest snapshots without the one-minute bars: what the trades alone answer in.
    let trades_only = {
        let pinned = rt.block_on(lake.pin(Pin::Latest))?;
        let mut ids: std::collections::BTreeMap<String, Option<i64>> = pinned
            .tables
            .iter()
            .map(|(name, t)| (name.clone(), t.snapshot_id))
            .collect();
        ids.insert(k2_common::data_type::BARS_1M_TABLE.into(), None);
        Pin::Snapshots(ids)
    };
    for case in &cases {
        for (pin_name, pin) in [
            ("latest", Pin::Latest),
            ("latest, trades only", trades_only.clone()),
            ("as-of", Pin::AsOf(as_of)),
        ] {
            let snapshot_id = match pin {
                Pin::AsOf(_) => middle.snapshot_id,
                _ => history.last().unwrap().snapshot_id,
            };
            // K2 cold: new session (pinning and views included), one run.
            drop_caches();
            let (k2_cold, _) = time(|| {
                let s = rt.block_on(lake.session(pin.clone()))?;
                Ok(rows(&rt.block_on(s.ohlcv(&case.req))?))
            })?;
            let session = rt.block_on(lake.session(pin.clone()))?;
            let mut warm = Vec::new();
            let mut n = 0;
            for _ in 0..args.repeat {
                let (d, r) = time(|| Ok(rt.block_on(session.ohlcv(&case.req))?))?;
                n = rows(&r);
                warm.push(d);
            }
            let k2_warm = median(warm);
            // Which days the bars answered: part of the pin's name in the row.
            let sources = rt.block_on(session.ohlcv_sources(&case.req))?;
            let pin_name = if sources.bars_days.is_empty() {
                pin_name.to_string()
            } else {
                format!("{pin_name} ({sources})")
            };
            let filter = Filter {
                exchange: Some(case.req.exchange.clone()),
                symbols: case.req.symbols.clone(),
                from: Some(case.req.from),
                to: Some(case.req.to),
            };
            let files = rt.block_on(session.planned_files("trades", &filter))?;
            let list: Vec<String> = files
                .iter()
                .map(|f| format!("'{}'", k2_query::plan::duckdb_path(f)))
                .collect();
            let src = format!("read_parquet([{}], union_by_name = true)", list.join(", "));
            let sql = floor_sql(&case.req, &src);
            drop_caches();
            let (floor_cold, _) = time(|| {
                let c = Connection::open_in_memory()?;
                c.execute_batch("SET TimeZone = 'UTC'")?;
                Ok(rows(&c.prepare(&sql)?.query_arrow([])?.collect::<Vec<_>>()))
            })?;
            let conn = Connection::open_in_memory()?;
            conn.execute_batch("SET TimeZone = 'UTC'")?;
            let mut warm = Vec::new();
            for _ in 0..args.repeat {
                let (d, r) = time(|| Ok(conn.prepare(&sql)?.query_arrow([])?.collect::<Vec<_>>()))?;
                anyhow::ensure!(rows(&r) == n, "{}: floor and K2 disagree", case.name);
                warm.push(d);
            }
            let floor_warm = median(warm);
            let (ice_warm, ice_cold) = match &iceberg {
                Some(dir) => {
                    let src = format!(
                        "iceberg_scan('{metadata_location}', snapshot_from_id => {snapshot_id})"
                    );
                    let sql = floor_sql(&case.req, &src);
                    drop_caches();
                    let (cold, _) = time(|| {
                        let c = iceberg_conn(dir)?;
                        Ok(rows(&c.prepare(&sql)?.query_arrow([])?.collect::<Vec<_>>()))
                    })?;
                    let c = iceberg_conn(dir)?;
                    let mut warm = Vec::new();
                    for _ in 0..args.repeat {
                        let (d, r) =
                            time(|| Ok(c.prepare(&sql)?.query_arrow([])?.collect::<Vec<_>>()))?;
                        anyhow::ensure!(
                            rows(&r) == n,
                            "{}: iceberg_scan and K2 disagree",
                            case.name
                        );
                        warm.push(d);
                    }
                    (
                        format!("{:.1}", median(warm).as_secs_f64() * 1e3),
                        format!("{:.1}", cold.as_secs_f64() * 1e3),
                    )
                }
                None => ("n/a".into(), "n/a".into()),
            };
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {} | {pin_name} | {n} | {} | {:.1} | {:.1} | {:.2} | {ice_warm} | {:.1} | {:.1} | {:.2} | {ice_cold} |",
                case.name,
                files.len(),
                ms(k2_warm),
                ms(floor_warm),
                ms(k2_warm) / ms(floor_warm),
                ms(k2_cold),
                ms(floor_cold),
                ms(k2_cold) / ms(floor_cold),
            );
            if headline.is_none() {
                headline = Some(ms(k2_warm));
            }
        }
    }
    // Markouts of the busiest symbol-day at three horizons, against the last trade's price
    // (this table has no quotes).
    let markouts = MarkoutRequest {
        range: k2_query::Range {
            exchange: "asx".into(),
            symbols: vec![busiest.clone()],
            from: day_start,
            to: day_end,
        },
        horizons: ["1s", "10s", "60s"]
            .iter()
            .map(|h| h.parse::<Horizon>())
            .collect::<Result<_, _>>()?,
        price: MarkoutPrice::Trade,
    };
    drop_caches();
    let (cold, _) = time(|| {
        let s = rt.block_on(lake.session(Pin::Latest))?;
        Ok(rows(&rt.block_on(s.markouts(&markouts))?))
    })?;
    let session = rt.block_on(lake.session(Pin::Latest))?;
    let mut warm = Vec::new();
    let mut n = 0;
    for _ in 0..args.repeat {
        let (d, r) = time(|| Ok(rt.block_on(session.markouts(&markouts))?))?;
        n = rows(&r);
        warm.push(d);
    }
    println!(
        "markouts: busiest symbol-day ({n} trades), horizons 1s/10s/60s at the last trade's price: {:.1} ms warm, {:.1} ms cold",
        median(warm).as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3
    );
    println!(
        "query: {:.1} ms one symbol-day 1-minute OHLCV, warm, on {total} rows",
        headline.unwrap_or(f64::NAN)
    );
    Ok(())
}
