//! `k2-bench table-costs`: what a table's history costs each commit and each query, measured
//! on the table as it is: the current metadata file's size, snapshot and manifest counts,
//! the time iceberg-rust takes to plan a scan of the whole table, and the latency of a
//! commit like the sink's (a fast append of one small file plus the offsets property; the
//! rows appended are copies of the table's first rows, so run it on benchmark tables only).

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;
use iceberg::TableIdent;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use k2_common::config::K2Config;
use k2_common::topic::DataType;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = K2Config::load(&args.config)?;
    let rt = crate::runtime()?;
    let catalog = rt.block_on(k2_common::catalog::connect(&config))?;
    let ident: TableIdent = k2_table::layout::table_ident(DataType::Trades);
    let table = rt.block_on(catalog.load_table(&ident))?;
    let metadata_bytes = std::fs::metadata(k2_query::plan::duckdb_path(
        table.metadata_location().context("no metadata location")?,
    ))
    .map(|m| m.len())
    .unwrap_or(0);
    let snapshots = table.metadata().snapshots().count();
    let snapshot = table
        .metadata()
        .current_snapshot()
        .context("the trades table has no snapshot")?;
    let manifests = rt
        .block_on(table.manifest_list_reader(snapshot).load())?
        .entries()
        .len();

    let mut plans = Vec::new();
    let mut files = Vec::new();
    for _ in 0..args.repeat {
        let t = Instant::now();
        files = rt.block_on(async {
            table
                .scan()
                .select_all()
                .build()?
                .plan_files()
                .await?
                .map_ok(|task| task.data_file_path)
                .try_collect::<Vec<_>>()
                .await
        })?;
        plans.push(t.elapsed());
    }

    // A few of the table's own rows, written and appended as the sink would.
    let first = files.first().context("the trades table has no files")?;
    let rows =
        ParquetRecordBatchReaderBuilder::try_new(File::open(k2_query::plan::duckdb_path(first))?)?
            .with_batch_size(10)
            .build()?
            .next()
            .context("an empty data file")??;
    let mut commits = Vec::new();
    let mut table = table;
    for n in 0..args.repeat {
        let t = Instant::now();
        table = rt.block_on(async {
            let written = k2_table::writer::write_sorted(
                &table,
                std::slice::from_ref(&rows),
                &format!("bench-commit-{}", uuid::Uuid::new_v4().simple()),
                k2_table::writer::TARGET_FILE_SIZE,
            )
            .await?;
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .with_check_duplicate(false)
                .add_data_files(written)
                .apply(tx)?;
            let tx = tx
                .update_table_properties()
                .set("k2.bench.commit".into(), n.to_string())
                .apply(tx)?;
            tx.commit(catalog.as_ref()).await
        })?;
        commits.push(t.elapsed());
    }
    let ms = |xs| crate::query::median(xs).as_secs_f64() * 1e3;
    let (plan_ms, commit_ms) = (ms(plans), ms(commits));
    println!(
        "| metadata bytes | snapshots | manifests | data files | plan whole table ms | commit ms |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {metadata_bytes} | {snapshots} | {manifests} | {} | {plan_ms:.1} | {commit_ms:.1} |",
        files.len(),
    );
    println!("table-costs: plan {plan_ms:.1} ms, commit {commit_ms:.1} ms");
    Ok(())
}
