//! `k2-bench layout`: what the Parquet layout and the shape of the symbol predicate
//! contribute to the one-symbol-day OHLCV query.
//!
//! One day of the trades table (the day `k2-bench query` asks about) is read, sorted by
//! (symbol, exchange_timestamp) as compaction leaves it, and written again once per
//! layout — row-group size, column statistics down to pages (the page index) or only per
//! chunk, a bloom filter on `symbol`, which columns get dictionaries — into files that roll at the compaction target size,
//! each file's symbol range kept as Iceberg's manifest would keep it. The 1-minute bars of
//! the busiest symbol and of a typical (median) one are then asked for over exactly the
//! files whose range holds it, with each predicate shape, warm (median of repeated runs on
//! one connection) and cold (page cache dropped when permitted, new connection). Nothing
//! here is K2's query path; it is the floor under it, per layout.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType as ArrowType, Schema};
use duckdb::{Connection, ToSql};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use k2_common::config::K2Config;
use k2_query::plan::Filter;
use k2_query::{Fill, Interval, Lakehouse, OhlcvRequest, Pin, TimeZoneChoice};

use crate::query::{Survey, drop_caches, median, ohlcv_sql, survey};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Warm repetitions per case (the median is reported).
    #[arg(long, default_value_t = 9)]
    repeat: usize,
    /// Where the rewritten files go (removed afterwards); default: the system's temporary
    /// directory.
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Files roll at this size, as compaction's `maintenance.target_file_size` (MiB).
    #[arg(long, default_value_t = 256)]
    target_mib: usize,
}

struct Layout {
    name: &'static str,
    props: WriterProperties,
}

/// Which columns get dictionary encoding (the rest plain, or delta for integers).
#[derive(Clone, Copy)]
enum Dictionary {
    /// Every column (parquet's default).
    All,
    /// String columns only: symbols, venues, lineage topics repeat; timestamps, sequence
    /// numbers and offsets hardly ever do, and their dictionaries cost time and bytes.
    Strings,
    /// As `Strings`, integers and timestamps delta-encoded (sorted within a symbol).
    StringsDelta,
}

fn props(
    schema: &Schema,
    row_group_rows: usize,
    statistics: EnabledStatistics,
    bloom: bool,
    dictionary: Dictionary,
) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_statistics_enabled(statistics)
        .set_dictionary_enabled(true);
    if !matches!(dictionary, Dictionary::All) {
        for f in schema.fields() {
            let path = ColumnPath::from(f.name().as_str());
            match f.data_type() {
                ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => {}
                ArrowType::Int32 | ArrowType::Int64 | ArrowType::Timestamp(_, _)
                    if matches!(dictionary, Dictionary::StringsDelta) =>
                {
                    b = b
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
                }
                _ => b = b.set_column_dictionary_enabled(path, false),
            }
        }
    }
    if bloom {
        // Sized for the symbols of one row group, not the 1M-value default (≈1 MiB each).
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from("symbol"), true)
            .set_column_bloom_filter_fpp(ColumnPath::from("symbol"), 0.01)
            .set_column_bloom_filter_ndv(ColumnPath::from("symbol"), 10_000);
    }
    b.build()
}

fn layouts(schema: &Schema) -> Vec<Layout> {
    use Dictionary::{All, Strings, StringsDelta};
    use EnabledStatistics::{Chunk, Page};
    let layout = |name, rows, stats, bloom, dict| Layout {
        name,
        props: props(schema, rows, stats, bloom, dict),
    };
    vec![
        Layout {
            name: "K2 writer (as shipped)",
            props: k2_table::writer::writer_properties(schema),
        },
        // Before ADR-21: 1M-row groups, dictionaries everywhere.
        layout("1M rows/group, page index", 1 << 20, Page, false, All),
        layout("1M rows/group, chunk stats", 1 << 20, Chunk, false, All),
        layout("1M rows/group, page index, bloom", 1 << 20, Page, true, All),
        layout(
            "1M rows/group, dictionary: strings",
            1 << 20,
            Page,
            false,
            Strings,
        ),
        layout("256k rows/group", 1 << 18, Page, false, All),
        layout("128k rows/group", 1 << 17, Page, false, All),
        layout(
            "128k rows/group, dictionary: strings",
            1 << 17,
            Page,
            false,
            Strings,
        ),
        layout(
            "128k rows/group, dictionary: strings, delta integers",
            1 << 17,
            Page,
            false,
            StringsDelta,
        ),
        layout(
            "64k rows/group, dictionary: strings",
            1 << 16,
            Page,
            false,
            Strings,
        ),
        layout(
            "16k rows/group, dictionary: strings",
            1 << 14,
            Page,
            false,
            Strings,
        ),
    ]
}

/// A written file and the symbols it spans (what the manifest's bounds prune on).
struct Written {
    path: PathBuf,
    min: String,
    max: String,
}

/// The shapes of the symbol predicate measured. `?` are bound in this order: exchange,
/// [low, high,] symbols (comma-joined), from, to.
struct Shape {
    name: &'static str,
    filter: &'static str,
    range: bool,
}

const SHAPES: [Shape; 3] = [
    Shape {
        name: "list_contains (bound)",
        filter: "exchange = ? AND list_contains(string_split(?, ','), symbol)
                 AND exchange_timestamp >= CAST(? AS TIMESTAMPTZ)
                 AND exchange_timestamp < CAST(? AS TIMESTAMPTZ)",
        range: false,
    },
    Shape {
        name: "symbol range + list_contains (bound)",
        filter: "exchange = ? AND symbol >= ? AND symbol <= ?
                 AND list_contains(string_split(?, ','), symbol)
                 AND exchange_timestamp >= CAST(? AS TIMESTAMPTZ)
                 AND exchange_timestamp < CAST(? AS TIMESTAMPTZ)",
        range: true,
    },
    Shape {
        name: "symbol = literal",
        filter: "",
        range: false,
    },
];

/// The day's rows, sorted by (symbol, exchange_timestamp).
fn read_sorted(files: &[String]) -> anyhow::Result<RecordBatch> {
    let mut batches = Vec::new();
    for f in files {
        let path = k2_query::plan::duckdb_path(f);
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            File::open(&path).with_context(|| format!("open {path}"))?,
        )?
        .with_batch_size(64 * 1024)
        .build()?;
        for b in reader {
            batches.push(b?);
        }
    }
    let schema = batches.first().context("the day has no rows")?.schema();
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    let key = |name: &str| -> anyhow::Result<SortColumn> {
        Ok(SortColumn {
            values: all
                .column_by_name(name)
                .with_context(|| format!("no column {name}"))?
                .clone(),
            options: None,
        })
    };
    let order = lexsort_to_indices(&[key("symbol")?, key("exchange_timestamp")?], None)?;
    Ok(take_record_batch(&all, &order)?)
}

fn symbol_at(batch: &RecordBatch, row: usize) -> String {
    let c = batch.column_by_name("symbol").expect("symbol column");
    match c.as_string_opt::<i32>() {
        Some(a) => a.value(row).to_string(),
        None => c.as_string_view().value(row).to_string(),
    }
}

/// `rows` written under `dir` with `props`, rolling files at `target` bytes.
fn write(
    rows: &RecordBatch,
    dir: &Path,
    props: &WriterProperties,
    target: usize,
) -> anyhow::Result<Vec<Written>> {
    std::fs::create_dir_all(dir)?;
    let chunk = 64 * 1024;
    let mut files = Vec::new();
    let mut current: Option<(ArrowWriter<File>, Written)> = None;
    let mut offset = 0;
    while offset < rows.num_rows() {
        let len = chunk.min(rows.num_rows() - offset);
        let part = rows.slice(offset, len);
        let (writer, written) = match &mut current {
            Some(c) => c,
            None => {
                let path = dir.join(format!("part-{:05}.parquet", files.len()));
                let w =
                    ArrowWriter::try_new(File::create(&path)?, rows.schema(), Some(props.clone()))?;
                current.insert((
                    w,
                    Written {
                        path,
                        min: symbol_at(&part, 0),
                        max: String::new(),
                    },
                ))
            }
        };
        writer.write(&part)?;
        written.max = symbol_at(&part, len - 1);
        offset += len;
        if writer.bytes_written() + writer.in_progress_size() >= target {
            let (w, f) = current.take().expect("a file is open");
            w.close()?;
            files.push(f);
        }
    }
    if let Some((w, f)) = current {
        w.close()?;
        files.push(f);
    }
    Ok(files)
}

fn run_query(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> anyhow::Result<usize> {
    let mut stmt = conn.prepare(sql)?;
    Ok(stmt.query_arrow(params)?.map(|b| b.num_rows()).sum())
}

fn connection() -> anyhow::Result<Connection> {
    let c = Connection::open_in_memory()?;
    c.execute_batch("SET TimeZone = 'UTC'")?;
    Ok(c)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = K2Config::load(&args.config)?;
    let rt = crate::runtime()?;
    let lake = rt.block_on(Lakehouse::open(&config))?;
    let session = rt.block_on(lake.session(Pin::Latest))?;
    let Survey {
        busiest,
        typical,
        first,
        last,
        ..
    } = survey(&rt, &session)?;
    let day_start = (first + (last - first) / 2)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let day_end = day_start + chrono::Duration::days(1);
    let files = rt.block_on(session.planned_files(
        "trades",
        &Filter {
            exchange: Some("asx".into()),
            symbols: Vec::new(),
            from: Some(day_start),
            to: Some(day_end),
        },
    ))?;
    drop(session);
    let t = Instant::now();
    let rows = read_sorted(&files)?;
    eprintln!(
        "layout: {} rows of {} in {} files read and sorted in {:.1}s",
        rows.num_rows(),
        day_start.format("%F"),
        files.len(),
        t.elapsed().as_secs_f64()
    );

    let req = |symbol: &str| OhlcvRequest {
        symbols: vec![symbol.to_string()],
        exchange: "asx".into(),
        interval: "1m".parse::<Interval>().expect("valid interval"),
        from: day_start,
        to: day_end,
        tz: TimeZoneChoice::Utc,
        fill: Fill::Omit,
        session: k2_query::SessionChoice::Off,
    };
    let (from, to) = (day_start.to_rfc3339(), day_end.to_rfc3339());
    let scratch = match &args.scratch {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };

    println!(
        "day {} ({} rows), symbols {busiest} (busiest) and {typical} (median), files roll at {} MiB",
        day_start.format("%F"),
        rows.num_rows(),
        args.target_mib
    );
    println!(
        "| layout | files | MiB | write s | symbol | files read | predicate | bars | warm ms | cold ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, layout) in layouts(&rows.schema()).into_iter().enumerate() {
        let dir = scratch.path().join(format!("layout-{i}"));
        let t = Instant::now();
        let written = write(&rows, &dir, &layout.props, args.target_mib << 20)?;
        let write_s = t.elapsed().as_secs_f64();
        let bytes: u64 = written
            .iter()
            .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
            .sum();
        for symbol in [&busiest, &typical] {
            let read: Vec<String> = written
                .iter()
                .filter(|f| f.min <= *symbol && *symbol <= f.max)
                .map(|f| format!("'{}'", f.path.display()))
                .collect();
            let src = format!("read_parquet([{}], union_by_name = true)", read.join(", "));
            let mut bars = None;
            for shape in &SHAPES {
                let sql = if shape.filter.is_empty() {
                    ohlcv_sql(
                        &req(symbol),
                        &src,
                        &format!(
                            "exchange = 'asx' AND symbol = '{}'
                             AND exchange_timestamp >= TIMESTAMPTZ '{from}'
                             AND exchange_timestamp < TIMESTAMPTZ '{to}'",
                            symbol.replace('\'', "''")
                        ),
                    )
                } else {
                    ohlcv_sql(&req(symbol), &src, shape.filter)
                };
                let exchange = "asx".to_string();
                let mut params: Vec<&dyn ToSql> = Vec::new();
                if !shape.filter.is_empty() {
                    params.push(&exchange);
                    if shape.range {
                        params.push(symbol);
                        params.push(symbol);
                    }
                    params.push(symbol);
                    params.push(&from);
                    params.push(&to);
                }
                drop_caches();
                let t = Instant::now();
                let n = run_query(&connection()?, &sql, &params)?;
                let cold = t.elapsed();
                let conn = connection()?;
                let mut warm = Vec::new();
                for _ in 0..args.repeat {
                    let t = Instant::now();
                    let m = run_query(&conn, &sql, &params)?;
                    warm.push(t.elapsed());
                    anyhow::ensure!(m == n, "{}: {} bars, then {m}", shape.name, n);
                }
                anyhow::ensure!(
                    *bars.get_or_insert(n) == n,
                    "{} / {}: {n} bars, other shapes {}",
                    layout.name,
                    shape.name,
                    bars.unwrap_or(0)
                );
                println!(
                    "| {} | {} | {:.0} | {write_s:.1} | {symbol} | {} | {} | {n} | {:.1} | {:.1} |",
                    layout.name,
                    written.len(),
                    bytes as f64 / (1 << 20) as f64,
                    read.len(),
                    shape.name,
                    median(warm).as_secs_f64() * 1e3,
                    cold.as_secs_f64() * 1e3,
                );
            }
        }
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
