//! `k2-bench soak`: a sink left running as a deployment would run it — a steady feed, 1-s
//! commits, the default maintenance scheduled beside it — with a row every `--window`:
//! the sink's RSS, commit p50/p99 in that window (its own histogram), freshness p50/p99
//! (commit − produce, from the tables, of the records produced in that window), consumer
//! lag, and per table the snapshots and metadata file size. The first and last windows side
//! by side are the figure: what grows with time shows there. At the end the tables are
//! checked against the topics: every produced record exactly once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{DateTime, Utc};

use k2_common::config::K2Config;
use k2_query::{Lakehouse, Pin};

use crate::freshness::{coverage, percentile, sampled_commits};

#[derive(clap::Args)]
pub struct Args {
    /// A K2 configuration for the broker and lakehouse to use (bench/soak writes one).
    #[arg(long)]
    config: PathBuf,
    /// How long to feed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// One row per this much time.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Records per second (trades, quotes and reference data of both exchanges).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// `sink.commit.interval`.
    #[arg(long, default_value = "1s")]
    commit_interval: String,
    /// Instruments per exchange.
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// Where the processes' logs go.
    #[arg(long)]
    logs: PathBuf,
}

/// A histogram's cumulative bucket counts (`le` → count), summed over its series.
type Buckets = BTreeMap<u64, f64>;

/// What one scrape of the sink's metrics says.
struct Scrape {
    commit: Buckets,
    lag: f64,
}

fn scrape(address: &str) -> anyhow::Result<Scrape> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let mut commit = Buckets::new();
    let mut lag = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("k2_commit_duration_seconds_bucket{") {
            let le = rest
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("+Inf");
            let le = if le == "+Inf" {
                u64::MAX
            } else {
                (le.parse::<f64>()? * 1e6) as u64
            };
            let v: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
            *commit.entry(le).or_default() += v;
        } else if line.starts_with("k2_consumer_lag_records{") {
            lag += line.rsplit(' ').next().unwrap_or("0").parse::<f64>()?;
        }
    }
    Ok(Scrape { commit, lag })
}

/// The `q` quantile (seconds) of the observations between two scrapes, as the upper bound
/// of the bucket it falls in (what Prometheus' histogram_quantile would report, without
/// interpolation).
fn bucket_quantile(before: &Buckets, after: &Buckets, q: f64) -> f64 {
    let delta: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return f64::NAN;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| {
            if *le == u64::MAX {
                f64::INFINITY
            } else {
                *le as f64 / 1e6
            }
        })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn spawn(
    bin: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log)?;
    let mut c = Command::new(bin.join(name));
    c.args(args)
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().with_context(|| format!("starting {name}"))
}

/// A table's (snapshots, metadata file bytes, manifests its current snapshot lists).
async fn table_shape(lake: &Lakehouse, table: &str) -> (usize, u64, usize) {
    let Ok(t) = lake.table(table).await else {
        return (0, 0, 0);
    };
    let manifests = match t.metadata().current_snapshot() {
        Some(s) => t
            .manifest_list_reader(s)
            .load()
            .await
            .map_or(0, |l| l.entries().len()),
        None => 0,
    };
    let bytes = match t.metadata_location() {
        Some(loc) => match t.file_io().new_input(loc) {
            Ok(input) => input.metadata().await.map_or(0, |m| m.size),
            Err(_) => 0,
        },
        None => 0,
    };
    (t.metadata().snapshots().len(), bytes, manifests)
}

struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    rss: f64,
    commit_p50: f64,
    commit_p99: f64,
    lag: f64,
    tables: Vec<(usize, u64, usize)>,
}

const TABLES: [&str; 3] = ["trades", "quotes", "reference_data"];

/// Every snapshot seen so far, by id, with its table.
type Seen = BTreeMap<i64, (&'static str, k2_query::SnapshotInfo)>;

/// The trades' and quotes' snapshots as they stand now.
fn snapshots_of(rt: &tokio::runtime::Runtime, lake: &Lakehouse) -> anyhow::Result<Seen> {
    let mut out = Seen::new();
    for table in ["trades", "quotes"] {
        for s in rt.block_on(lake.snapshots(table))? {
            out.insert(s.snapshot_id, (table, s));
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = K2Config::load(&args.config)?;
    let bin = std::env::current_exe()?
        .parent()
        .context("the binaries' directory")?
        .to_path_buf();
    let config_arg = args.config.to_string_lossy().to_string();
    std::fs::create_dir_all(&args.logs)?;
    let sink_metrics = "127.0.0.1:19464";
    let mut sink = spawn(
        &bin,
        "k2-sink",
        &["--config", &config_arg],
        &[
            ("K2_SINK__COMMIT__INTERVAL", args.commit_interval.as_str()),
            ("K2_METRICS__ADDRESS", sink_metrics),
            ("K2_LOG__FORMAT", "text"),
        ],
        &args.logs.join("sink.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(args.logs.join("sink.log"))
        .unwrap_or_default()
        .contains("partitions assigned")
    {
        anyhow::ensure!(Instant::now() < deadline, "the sink got no partitions");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Maintenance as the docs tell an operator to schedule it.
    let mut maintenance = spawn(
        &bin,
        "k2-admin",
        &["--config", &config_arg, "maintain", "all", "--every", "1h"],
        &[
            ("K2_METRICS__ADDRESS", "127.0.0.1:19465"),
            ("K2_LOG__FORMAT", "text"),
        ],
        &args.logs.join("maintenance.log"),
    )?;
    let started = Utc::now();
    let mut feed = spawn(
        &bin,
        "k2-feed",
        &[
            "--config",
            &config_arg,
            "synthetic",
            "--rate",
            &args.rate.to_string(),
            "--duration",
            &humantime::format_duration(args.duration).to_string(),
            "--symbols",
            &args.symbols.to_string(),
        ],
        &[],
        &args.logs.join("feed.log"),
    )?;
    let rt = crate::runtime()?;
    let lake = rt.block_on(Lakehouse::open(&config))?;
    let mut windows: Vec<Window> = Vec::new();
    let mut seen = Seen::new();
    let mut previous = scrape(sink_metrics)?;
    let mut window_start = started;
    let n = (args.duration.as_secs_f64() / args.window.as_secs_f64()).ceil() as usize;
    for _ in 0..n {
        std::thread::sleep(args.window);
        let now = scrape(sink_metrics)?;
        let tables = TABLES
            .iter()
            .map(|t| rt.block_on(table_shape(&lake, t)))
            .collect();
        seen.extend(snapshots_of(&rt, &lake)?);
        let end = Utc::now();
        windows.push(Window {
            start: window_start,
            end,
            rss: rss_mib(sink.id()),
            commit_p50: bucket_quantile(&previous.commit, &now.commit, 0.5),
            commit_p99: bucket_quantile(&previous.commit, &now.commit, 0.99),
            lag: now.lag,
            tables,
        });
        previous = now;
        window_start = end;
    }
    let fed = feed.wait()?;
    anyhow::ensure!(
        fed.success(),
        "k2-feed failed (see {})",
        args.logs.display()
    );
    let feed_line = std::fs::read_to_string(args.logs.join("feed.log"))?
        .lines()
        .rfind(|l| l.starts_with("k2-feed: "))
        .unwrap_or_default()
        .to_string();
    // Let the last records commit, then stop the sink as a deployment would.
    std::thread::sleep(Duration::from_secs(10));
    let _ = Command::new("kill")
        .args(["-TERM", &sink.id().to_string()])
        .status();
    let _ = sink.wait();
    let _ = maintenance.kill();
    let _ = maintenance.wait();

    // Freshness per window, from the tables: each sampled record's commit time (the first
    // snapshot whose offsets cover it, among every snapshot seen at a window's end — the
    // sink expires the oldest as it goes) minus its produce time, by produce window.
    let session = rt.block_on(lake.session(Pin::Latest))?;
    seen.extend(snapshots_of(&rt, &lake)?);
    let mut latencies: Vec<Vec<i64>> = vec![Vec::new(); windows.len()];
    let bounds: Vec<i64> = windows.iter().map(|w| w.end.timestamp_micros()).collect();
    for table in ["trades", "quotes"] {
        let mut snapshots: Vec<_> = seen
            .values()
            .filter(|(t, _)| *t == table)
            .map(|(_, s)| s.clone())
            .collect();
        snapshots.sort_by_key(|s| (s.committed_at, s.snapshot_id));
        let cover = coverage(&snapshots)?;
        let since = started.timestamp_micros();
        for (produced_at, committed_at) in
            sampled_commits(&rt, &session, table, since, 300_000, &cover)?
        {
            let w = bounds.partition_point(|end| *end < produced_at);
            if let Some(l) = latencies.get_mut(w) {
                l.push(committed_at - produced_at);
            }
        }
    }
    // Exactly once: every record the topics hold is in its table once.
    let status = Command::new(bin.join("k2-admin"))
        .args(["--config", &config_arg, "status", "--format", "json"])
        .output()?;
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).context("k2-admin status --format json")?;
    let behind: i64 = status["topics"]
        .as_array()
        .map(|ts| ts.iter().filter_map(|t| t["behind"].as_i64()).sum())
        .unwrap_or(-1);
    let mut duplicated = 0i64;
    let mut rows = HashMap::new();
    for table in TABLES {
        let b = rt.block_on(session.sql(
            &format!(
                "SELECT count(*), count(DISTINCT (kafka_topic, kafka_partition, kafka_offset)) FROM {table}"
            ),
            &[],
        ))?;
        let all = b[0].column(0).as_primitive::<Int64Type>().value(0);
        let distinct = b[0].column(1).as_primitive::<Int64Type>().value(0);
        duplicated += all - distinct;
        rows.insert(table, all);
    }

    println!(
        "| window | RSS MiB | commit p50 s | commit p99 s | freshness p50 s | freshness p99 s | consumer lag | snapshots t/q/r | metadata KiB t/q/r | manifests listed t/q/r |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, w) in windows.iter().enumerate() {
        let mut l = std::mem::take(&mut latencies[i]);
        l.sort_unstable();
        println!(
            "| {}–{} min | {:.0} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} | {} | {} | {} |",
            (w.start - started).num_minutes(),
            (w.end - started).num_minutes(),
            w.rss,
            w.commit_p50,
            w.commit_p99,
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            w.lag,
            w.tables
                .iter()
                .map(|t| t.0.to_string())
                .collect::<Vec<_>>()
                .join("/"),
            w.tables
                .iter()
                .map(|t| format!("{:.0}", t.1 as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("/"),
            w.tables
                .iter()
                .map(|t| t.2.to_string())
                .collect::<Vec<_>>()
                .join("/"),
        );
        latencies[i] = l;
    }
    let (first, last) = (windows.first(), windows.last());
    println!("{feed_line}");
    println!(
        "landed: trades {} quotes {} reference_data {}; records behind the tables' offsets {behind}; duplicated rows {duplicated}",
        rows["trades"], rows["quotes"], rows["reference_data"]
    );
    if let (Some(f), Some(l)) = (first, last) {
        let worst_p99 = latencies
            .iter()
            .map(|l| percentile(l, 0.99))
            .fold(0.0f64, f64::max);
        println!(
            "soak: RSS {:.0}→{:.0} MiB ({:.2}×), commit p99 {:.3}→{:.3} s ({:.2}×), worst freshness p99 {:.2} s, lag {:.0}→{:.0}",
            f.rss,
            l.rss,
            l.rss / f.rss,
            f.commit_p99,
            l.commit_p99,
            l.commit_p99 / f.commit_p99,
            worst_p99,
            f.lag,
            l.lag,
        );
    }
    Ok(())
}
