//! `k2-bench history`: what a table's history costs as it grows. Tens of thousands of small
//! commits go through the sink's own path (its stages and its committer, one job at a
//! time) at a simulated `--interval` apart, and at each checkpoint the program measures:
//! commit latency p50/p99 over the last 500 commits before it, planning and
//! answering a one-symbol question about a fixed day (written before the history began, so
//! the answer's data is the same at every checkpoint and only the history differs), the
//! metadata file's size, the manifests the current snapshot lists and how many of them the
//! question's plan reads, the files in the table's `metadata/` folder, the snapshots and
//! refs, and the process's resident memory.
//!
//! Snapshots are stamped by a simulated clock (a commit every `--interval`), so the default
//! retention policy — the window of ordinary snapshots, end-of-day tags — acts as it would
//! over the simulated week. The embedded catalog (SQLite, local warehouse) by default;
//! `--config` for another (the REST catalog on S3 in `bench/history`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use iceberg::{Catalog, TableIdent};

use k2_common::config::K2Config;
use k2_common::topic::DataType;
use k2_query::{Lakehouse, Pin, Range};
use k2_sink::commit::Committer;
use k2_table::commit::MetadataCommitter;
use k2_table::layout::table_ident;
use k2_table::retention;

use crate::jobs::{Generator, Pipeline, Records, config_in};
use crate::usage;

#[derive(clap::Args)]
pub struct Args {
    /// Commit counts at which to measure (ascending).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,30000,60000")]
    checkpoints: Vec<usize>,
    /// Records per commit (small: history, not volume, is what this measures).
    #[arg(long, default_value_t = 200)]
    records_per_commit: usize,
    /// Simulated time between commits (the sink's `sink.commit.interval`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Instruments per exchange.
    #[arg(long, default_value_t = 50)]
    symbols: usize,
    /// Partitions per topic (70 in all, as the shipped topics.yaml: the offsets each
    /// snapshot records grow with them).
    #[arg(long, default_value_t = 35)]
    partitions: i32,
    /// Repetitions of the question at each checkpoint (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// A K2 configuration (catalog and warehouse) instead of a temporary embedded one. Its
    /// tables must not exist yet.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Label for the printed rows (e.g. "embedded", "rest+s3").
    #[arg(long, default_value = "embedded")]
    label: String,
}

/// The question day's data: commits before the history, this many records each.
const QUESTION_COMMITS: usize = 24;
const QUESTION_RECORDS: usize = 2_000;
/// Commit latencies are those of the last this-many commits before each checkpoint.
const LATENCY_WINDOW: usize = 500;
/// Commits slower than this are reported as they happen.
const SLOW_COMMIT_SECONDS: f64 = 0.5;

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.checkpoints.windows(2).all(|w| w[0] < w[1]) && !args.checkpoints.is_empty(),
        "--checkpoints must be ascending"
    );
    let temp = tempfile::tempdir()?;
    let config = match &args.config {
        Some(file) => K2Config::load(file)?,
        None => config_in(temp.path())?,
    };
    let rt = crate::runtime()?;
    let catalog: Arc<dyn Catalog> = rt
        .block_on(k2_common::catalog::connect(&config))
        .context("catalog")?;
    let (mut pipeline, metrics) = Pipeline::new(&catalog, &rt)?;
    let last = *args.checkpoints.last().expect("not empty");
    let interval_micros = args.interval.as_micros() as i64;
    // Snapshots are stamped, and their ages judged, by the simulated clock: a week of
    // history in minutes, under the default retention policy. It starts at the wall clock
    // (a snapshot is never older than the table's last update) and runs ahead of it; the
    // data's own times stay in the past, where the sink accepts them.
    let clock_start = Utc::now().timestamp_millis();
    let clock = Arc::new(AtomicI64::new(clock_start));
    let target = rt.block_on(MetadataCommitter::connect(&config))?;
    let committer = Committer::new(
        catalog.clone(),
        target,
        "k2-bench-history",
        &format!("k2-bench-{}", std::process::id()),
        metrics,
    )
    .with_retention(retention::Policy::new(&config.maintenance))
    .with_clock({
        let clock = clock.clone();
        Arc::new(move || clock.load(Ordering::SeqCst))
    });
    // The history ends now; the question day is the day before it began.
    let history_start = {
        let start = Utc::now().timestamp_micros() - last as i64 * interval_micros;
        let day = DateTime::from_timestamp_micros(start)
            .expect("in range")
            .date_naive();
        day.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros()
    };
    let question_day = history_start - 86_400_000_000;
    let question = Range {
        exchange: "asx".into(),
        symbols: vec!["BHP".into()],
        from: Utc
            .timestamp_micros(question_day)
            .single()
            .expect("in range"),
        to: Utc
            .timestamp_micros(history_start)
            .single()
            .expect("in range"),
    };

    let mut records = Records::default();
    // The question day: spread over the whole day.
    let spacing = 86_400_000_000 / (QUESTION_COMMITS * QUESTION_RECORDS) as i64;
    let mut generator = Generator::new(args.symbols, args.partitions, question_day, spacing, true);
    let mut job_id = 0u64;
    for n in 0..QUESTION_COMMITS {
        clock.store(clock_start + n as i64 + 1, Ordering::SeqCst);
        generator.fill(&mut records, QUESTION_RECORDS)?;
        let job = pipeline.job(&generator, &records)?;
        job_id += 1;
        rt.block_on(committer.commit_tables(job_id, job))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let lake = rt.block_on(Lakehouse::open(&config))?;
    let expected = answer(&rt, &lake, &question)?.0;
    anyhow::ensure!(expected > 0, "the question day has no BHP trades");

    // The history: one commit every `interval` of simulated time.
    let mut generator = Generator::new(
        args.symbols,
        args.partitions,
        history_start,
        interval_micros / args.records_per_commit as i64,
        true,
    );
    let ident = table_ident(DataType::Trades);
    println!(
        "| catalog | commits | simulated | commit p50 s | commit p99 s | plan+answer s | metadata KiB | manifests listed | manifests planned | metadata/ files | snapshots | refs | RSS MiB | heap MiB | jemalloc resident MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut latencies: Vec<f64> = Vec::new();
    let mut done = 0usize;
    for &checkpoint in &args.checkpoints {
        while done < checkpoint {
            clock.store(
                clock_start + 1_000 + (done as i64 + 1) * interval_micros / 1000,
                Ordering::SeqCst,
            );
            generator.fill(&mut records, args.records_per_commit)?;
            let job = pipeline.job(&generator, &records)?;
            job_id += 1;
            let t = Instant::now();
            rt.block_on(committer.commit_tables(job_id, job))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let secs = t.elapsed().as_secs_f64();
            if secs > SLOW_COMMIT_SECONDS {
                // Which commits make the p99: a merge of a large manifest, a tag, the machine.
                eprintln!("commit {} took {secs:.3} s", done + 1);
            }
            latencies.push(secs);
            done += 1;
        }
        anyhow::ensure!(pipeline.dead == 0, "generated records were rejected");
        let (rows, plan_answer) = answer_median(&rt, &lake, &question, args.repeat)?;
        anyhow::ensure!(
            rows == expected,
            "the question's answer changed with history: {rows} rows, {expected} before"
        );
        let shape = rt.block_on(shape(catalog.as_ref(), &ident, &question))?;
        // The last commits before the checkpoint: what a commit costs at this history,
        // not the average since the table was empty.
        let mut latencies: Vec<f64> =
            latencies[latencies.len().saturating_sub(LATENCY_WINDOW)..].to_vec();
        latencies.sort_by(f64::total_cmp);
        let heap = usage::heap();
        println!(
            "| {} | {checkpoint} | {:.1} d | {:.3} | {:.3} | {:.3} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            args.label,
            (checkpoint as f64 * args.interval.as_secs_f64()) / 86_400.0,
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            plan_answer,
            shape.metadata_bytes as f64 / 1024.0,
            shape.manifests,
            shape.planned_manifests,
            shape
                .metadata_files
                .map_or("-".to_string(), |n| n.to_string()),
            shape.snapshots,
            shape.refs,
            usage::mib(usage::current_rss()),
            usage::mib(heap.allocated),
            usage::mib(heap.resident),
        );
    }
    eprintln!(
        "({} commits in {:.0} s of wall time; the question returned {expected} rows every time)",
        done,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Rows of the question and seconds to plan and answer it in a new session (pinned to the
/// latest snapshots, as a backtest starting now would be).
fn answer(
    rt: &tokio::runtime::Runtime,
    lake: &Lakehouse,
    question: &Range,
) -> anyhow::Result<(usize, f64)> {
    let t = Instant::now();
    let rows = rt.block_on(async {
        let session = lake.session(Pin::Latest).await?;
        let batches = session.trades_in(question).await?;
        Ok::<_, k2_query::QueryError>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
    })?;
    Ok((rows, t.elapsed().as_secs_f64()))
}

fn answer_median(
    rt: &tokio::runtime::Runtime,
    lake: &Lakehouse,
    question: &Range,
    repeat: usize,
) -> anyhow::Result<(usize, f64)> {
    let mut times = Vec::with_capacity(repeat);
    let mut rows = 0;
    for _ in 0..repeat.max(1) {
        let (r, s) = answer(rt, lake, question)?;
        rows = r;
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    Ok((rows, quantile(&times, 0.5)))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What the table's history looks like now.
struct Shape {
    metadata_bytes: u64,
    manifests: usize,
    /// Manifests whose partition summary admits the question's day (what planning reads).
    planned_manifests: usize,
    /// Files in the table's `metadata/` folder (local warehouses only).
    metadata_files: Option<usize>,
    snapshots: usize,
    refs: usize,
}

async fn shape(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    question: &Range,
) -> anyhow::Result<Shape> {
    let table = catalog.load_table(ident).await?;
    let m = table.metadata();
    let location = table.metadata_location().context("no metadata location")?;
    let metadata_bytes = table.file_io().new_input(location)?.metadata().await?.size;
    let snapshot = m.current_snapshot().context("no snapshot")?;
    let list = table.manifest_list_reader(snapshot).load().await?;
    let day = (question.from.timestamp_micros() / 86_400_000_000) as i32;
    let planned_manifests = list
        .entries()
        .iter()
        .filter(|mf| {
            mf.partitions
                .as_ref()
                .and_then(|p| p.first())
                .is_none_or(|s| {
                    // A day is an int, serialised as four little-endian bytes.
                    let bound = |b: Option<&[u8]>| {
                        b.and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map(i32::from_le_bytes)
                    };
                    match (
                        bound(s.lower_bound.as_deref().map(|v| &v[..])),
                        bound(s.upper_bound.as_deref().map(|v| &v[..])),
                    ) {
                        (Some(lo), Some(hi)) => lo <= day && day <= hi,
                        _ => true,
                    }
                })
        })
        .count();
    let local = k2_query::plan::duckdb_path(location);
    let metadata_files = std::path::Path::new(&local)
        .parent()
        .filter(|_| !local.contains("://"))
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .map(|d| d.count());
    Ok(Shape {
        metadata_bytes,
        manifests: list.entries().len(),
        planned_manifests,
        metadata_files,
        snapshots: m.snapshots().len(),
        refs: k2_table::retention::refs(m).len(),
    })
}
