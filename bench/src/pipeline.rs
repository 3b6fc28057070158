//! The sink's path from Kafka record bytes to committed Iceberg snapshots, without a
//! broker: Confluent-framed Avro payloads from memory → decode (arrow-avro) → validate and
//! shape → sequence check → sort + Parquet + commit (the sink's committer, one job in
//! flight, as in the sink). The same stage code as `k2-sink`; only the consumer is left out.
//!
//! Two figures: wall-clock records/s on this machine (payloads generated before the clock
//! starts), and records and MB per CPU-second (per core).
//!
//! `--streaming` generates each job just before decoding it instead (bounded memory, used
//! by bench/query to build large tables; its timings include generation).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use iceberg::Catalog;

use k2_common::topic::DataType;
use k2_sink::commit::Committer;
use k2_table::commit::MetadataCommitter;
use k2_table::layout::table_ident;

use crate::jobs::{Generator, Pipeline, Records, config_in};
use crate::usage;

#[derive(clap::Args)]
pub struct Args {
    /// Records in total (trades ≈40 %, quotes, one reference record per instrument).
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Instruments per exchange (ASX equities and Binance crypto).
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// Records per commit (the sink's default `sink.commit.max_records`).
    #[arg(long, default_value_t = 500_000)]
    job_records: usize,
    /// Kafka partitions per topic the records are spread over (by symbol).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Keep the catalog and warehouse in this directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Generate each job just before decoding it (bounded memory; timings include
    /// generation).
    #[arg(long)]
    streaming: bool,
    /// Microseconds between consecutive records' exchange timestamps (sets how many days
    /// the data spans).
    #[arg(long, default_value_t = 50)]
    spacing_micros: i64,
    /// Trades only (the market is simulated the same; other records are not produced).
    #[arg(long)]
    trades_only: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let config = config_in(&dir)?;
    let rt = crate::runtime()?;
    let catalog: Arc<dyn Catalog> = rt
        .block_on(k2_common::catalog::connect(&config))
        .context("catalog")?;
    let (mut stages, metrics) = Pipeline::new(&catalog, &rt)?;
    let writer_id = format!("k2-bench-{}", std::process::id());
    let target = rt.block_on(MetadataCommitter::connect(&config))?;
    let committer = Committer::new(catalog.clone(), target, "k2-bench", &writer_id, metrics);
    let span = args.records as i64 * args.spacing_micros;
    let mut generator = Generator::new(
        args.symbols,
        args.partitions,
        chrono::Utc::now().timestamp_micros() - span - 60_000_000,
        args.spacing_micros,
        args.trades_only,
    );

    // Payloads first (outside the clock) unless streaming.
    let jobs = args.records.div_ceil(args.job_records);
    let mut pregenerated = std::collections::VecDeque::new();
    let gen_started = Instant::now();
    if !args.streaming {
        for j in 0..jobs {
            let n = args.job_records.min(args.records - j * args.job_records);
            let mut r = Records::default();
            generator.fill(&mut r, n)?;
            pregenerated.push_back(r);
        }
    }
    let generation = gen_started.elapsed();
    let payload_bytes: usize = pregenerated.iter().map(|r| r.bytes.len()).sum();

    let cpu_before = usage::own().cpu;
    let started = Instant::now();
    let mut in_flight: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let mut decode_time = Duration::ZERO;
    let mut streamed_bytes = 0usize;
    let mut scratch = Records::default();
    for j in 0..jobs {
        // Pregenerated jobs are dropped once decoded, as the sink frees a sealed buffer.
        let owned;
        let records = if args.streaming {
            let n = args.job_records.min(args.records - j * args.job_records);
            generator.fill(&mut scratch, n)?;
            streamed_bytes += scratch.bytes.len();
            &scratch
        } else {
            owned = pregenerated.pop_front().expect("one per job");
            &owned
        };
        let t = Instant::now();
        let job = stages.job(&generator, records)?;
        decode_time += t.elapsed();
        // One job in flight, as in the sink: decode the next while this one commits.
        if let Some(h) = in_flight.take() {
            rt.block_on(h)??;
        }
        let c = committer.clone();
        in_flight = Some(rt.spawn(async move {
            c.commit_tables(j as u64, job)
                .await
                .map_err(|e| anyhow::anyhow!("commit: {e}"))?;
            Ok(())
        }));
    }
    if let Some(h) = in_flight.take() {
        rt.block_on(h)??;
    }
    let wall = started.elapsed();
    let cpu = usage::own().cpu - cpu_before;
    // The figures count only if every record landed.
    anyhow::ensure!(
        stages.dead == 0,
        "{} generated records were rejected: the benchmark's data is wrong",
        stages.dead
    );
    let mut landed = 0u64;
    for dt in DataType::ALL {
        let table = rt.block_on(catalog.load_table(&table_ident(dt)))?;
        landed += table
            .metadata()
            .current_snapshot()
            .and_then(|s| {
                s.summary()
                    .additional_properties
                    .get("total-records")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64);
    }
    anyhow::ensure!(
        landed >= args.records as u64,
        "only {landed} of {} records are in the tables",
        args.records
    );
    let bytes = if args.streaming {
        streamed_bytes
    } else {
        payload_bytes
    };
    let n = args.records as f64;
    let mb = bytes as f64 / 1e6;
    println!(
        "| records | payload MB | jobs | wall s | records/s | MB/s | CPU s | records/CPU-s | MB/CPU-s | decode+check s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} | {jobs} | {:.2} | {:.0} | {:.1} | {:.2} | {:.0} | {:.1} | {:.2} | {:.0} |",
        args.records,
        mb,
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        mb / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        n / cpu.as_secs_f64(),
        mb / cpu.as_secs_f64(),
        decode_time.as_secs_f64(),
        usage::mib(usage::own().max_rss),
    );
    if !args.streaming {
        eprintln!(
            "(payloads generated in {:.1} s before the clock started; all {landed} records in the tables)",
            generation.as_secs_f64(),
        );
    }
    println!(
        "pipeline: {:.0} records/s per core ({:.1} MB/s per core; {:.0} records/s on {} cores)",
        n / cpu.as_secs_f64(),
        mb / cpu.as_secs_f64(),
        n / wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    Ok(())
}
