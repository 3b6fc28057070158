//! `k2-bench freshness-report`: how fresh the tables were during a run, from the tables
//! alone. A record's produce time is its `exchange_timestamp` (the synthetic feed stamps
//! it just before producing); its commit time is the commit time of the first snapshot
//! whose recorded Kafka offsets (`k2.kafka-offsets`) cover its offset. From those:
//! latency percentiles, the backlog (produced − committed) over time, and snapshots and
//! files created per hour. RSS samples taken by bench/freshness are summarised too.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use chrono::{DateTime, Utc};

use k2_common::config::K2Config;
use k2_query::{Lakehouse, Pin};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Start of the run: records produced and snapshots committed before it are ignored.
    #[arg(long)]
    since: DateTime<Utc>,
    /// A file of `unix_seconds rss_kib` lines sampled during the run.
    #[arg(long)]
    rss: Option<PathBuf>,
    /// A label for the table row (e.g. the commit interval).
    #[arg(long, default_value = "")]
    label: String,
    /// Records sampled for the latency percentiles.
    #[arg(long, default_value_t = 500_000)]
    sample: usize,
}

/// Per topic-partition: (next offset recorded, commit time µs), ascending.
pub(crate) type Coverage = HashMap<(String, i32), Vec<(i64, i64)>>;

/// When each offset of each topic-partition was first covered by a snapshot.
pub(crate) fn coverage(snapshots: &[k2_query::SnapshotInfo]) -> anyhow::Result<Coverage> {
    let mut out: Coverage = HashMap::new();
    for s in snapshots {
        let Some(json) = s.summary.get("k2.kafka-offsets") else {
            continue;
        };
        let offsets = k2_table::offsets::TableOffsets::from_json(json, || {
            format!("snapshot {}", s.snapshot_id)
        })
        .context("k2.kafka-offsets")?;
        for (tp, next) in offsets.iter() {
            let entry = out.entry((tp.topic.clone(), tp.partition)).or_default();
            if entry.last().is_none_or(|(n, _)| next > *n) {
                entry.push((next, s.committed_at.timestamp_micros()));
            }
        }
    }
    Ok(out)
}

/// (produce time, commit time) in µs of up to `sample` records of `table` produced since
/// `since_us`: the commit time is that of the first snapshot whose offsets cover the record
/// (records `cover` knows no snapshot for are left out).
pub(crate) fn sampled_commits(
    rt: &tokio::runtime::Runtime,
    session: &k2_query::Session,
    table: &str,
    since_us: i64,
    sample: usize,
    cover: &Coverage,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let batches = rt.block_on(session.sql(
        &format!(
            "SELECT kafka_topic, kafka_partition, kafka_offset, epoch_us(exchange_timestamp)
             FROM {table} WHERE exchange_timestamp >= make_timestamptz(?::BIGINT)
             USING SAMPLE {sample} ROWS"
        ),
        &[&since_us],
    ))?;
    let mut out = Vec::new();
    for b in &batches {
        let topic = b.column(0).as_string::<i32>();
        let partition = b.column(1).as_primitive::<Int32Type>();
        let offset = b.column(2).as_primitive::<Int64Type>();
        let ts = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let key = (topic.value(i).to_string(), partition.value(i));
            let Some(c) = cover.get(&key) else { continue };
            let at = c.partition_point(|(next, _)| *next <= offset.value(i));
            if let Some((_, commit)) = c.get(at) {
                out.push((ts.value(i), *commit));
            }
        }
    }
    Ok(out)
}

/// The `p` quantile of sorted microseconds, in seconds.
pub(crate) fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = K2Config::load(&args.config)?;
    let rt = crate::runtime()?;
    let lake = rt.block_on(Lakehouse::open(&config))?;
    let session = rt.block_on(lake.session(Pin::Latest))?;
    let since = args.since.timestamp_micros();
    let mut latencies = Vec::new();
    let (mut snapshots_n, mut files_n) = (0u64, 0u64);
    let mut produced: Vec<i64> = Vec::new();
    let mut committed: Vec<i64> = Vec::new();
    let mut last_commit = since;
    for table in ["trades", "quotes"] {
        let snapshots = rt.block_on(lake.snapshots(table))?;
        let run_snapshots: Vec<_> = snapshots
            .iter()
            .filter(|s| s.committed_at.timestamp_micros() >= since)
            .collect();
        snapshots_n += run_snapshots.len() as u64;
        files_n += run_snapshots
            .iter()
            .filter_map(|s| s.summary.get("added-data-files")?.parse::<u64>().ok())
            .sum::<u64>();
        if let Some(s) = run_snapshots.last() {
            last_commit = last_commit.max(s.committed_at.timestamp_micros());
        }
        let cover = coverage(&snapshots)?;
        for (produced_at, committed_at) in
            sampled_commits(&rt, &session, table, since, args.sample, &cover)?
        {
            latencies.push(committed_at - produced_at);
            produced.push(produced_at);
            committed.push(committed_at);
        }
    }
    anyhow::ensure!(
        !latencies.is_empty(),
        "no records produced since {}",
        args.since
    );
    latencies.sort_unstable();
    produced.sort_unstable();
    committed.sort_unstable();
    // Backlog (in sampled records) at 10-second steps: produced by t minus committed by t.
    let end = *produced.last().unwrap();
    let mut backlog = Vec::new();
    let mut t = since + 10_000_000;
    while t <= end {
        let p = produced.partition_point(|x| *x <= t);
        let c = committed.partition_point(|x| *x <= t);
        backlog.push(p.saturating_sub(c));
        t += 10_000_000;
    }
    let quarter = (backlog.len() / 4).max(1);
    let mean = |xs: &[usize]| xs.iter().sum::<usize>() as f64 / xs.len().max(1) as f64;
    let (early, late) = (
        mean(&backlog[..quarter.min(backlog.len())]),
        mean(&backlog[backlog.len().saturating_sub(quarter)..]),
    );
    let flat = late <= early * 1.5 + 1.0;
    let hours = (last_commit - since) as f64 / 3.6e9;
    let rss: Vec<u64> = match &args.rss {
        Some(p) => std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect(),
        None => Vec::new(),
    };
    let rss_mib = |k: Option<&u64>| k.map_or(f64::NAN, |k| *k as f64 / 1024.0);
    println!(
        "| run | sampled records | p50 s | p99 s | max s | backlog early→late (sampled) | lag flat | snapshots/h | files/h | RSS MiB first/max/last |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0}→{:.0} | {} | {:.0} | {:.0} | {:.0}/{:.0}/{:.0} |",
        args.label,
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        early,
        late,
        if flat { "yes" } else { "no" },
        snapshots_n as f64 / hours,
        files_n as f64 / hours,
        rss_mib(rss.first()),
        rss_mib(rss.iter().max()),
        rss_mib(rss.last()),
    );
    println!(
        "freshness: {:.2} s p99 commit latency ({})",
        percentile(&latencies, 0.99),
        args.label
    );
    Ok(())
}
