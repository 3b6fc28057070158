//! `k2-feed`: produce synthetic or replayed market data.
//!
//! Exit codes: 0 done, 1 broker or registry failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use k2_common::config::{K2Config, TopicsConfig};
use k2_common::schema::BuiltinSchema;
use k2_common::startup::Program;
use k2_common::subscription::{Subscription, SubscriptionFilter};
use k2_common::topic::{DataType, TopicName};
use k2_feed::asx::AsxReplay;
use k2_feed::event::Event;
use k2_feed::faults::{FaultPlan, Faults};
use k2_feed::sender::{Pace, Pacer, SchemaIds, Sender};
use k2_feed::synthetic::{ExchangeSpec, SyntheticMarket};

#[derive(Parser)]
#[command(
    name = "k2-feed",
    version,
    about = "Produce exchange market data into Kafka"
)]
struct Cli {
    /// Process configuration (same file as the sink).
    #[arg(
        long,
        default_value = "config/k2.toml",
        env = "K2_CONFIG",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a realistic market for the exchanges in topics.yaml.
    Synthetic(SyntheticArgs),
    /// Replay the ASX sample CSV files (trades, quotes, reference data).
    Replay(ReplayArgs),
}

#[derive(Args)]
struct FaultArgs {
    /// Skip one sequence number every N market records (a gap the sink must report).
    #[arg(long, value_name = "N", default_value_t = 0)]
    gap_every: u64,
    /// Send every Nth market record twice (same sequence number).
    #[arg(long, value_name = "N", default_value_t = 0)]
    duplicate_every: u64,
    /// After every Nth market record, a broken record (each kind the sink dead-letters, in turn).
    #[arg(long, value_name = "N", default_value_t = 0)]
    poison_every: u64,
}

#[derive(Args)]
struct SyntheticArgs {
    /// Symbols per exchange.
    #[arg(long, default_value_t = 50)]
    symbols: usize,
    /// Records per second over all topics (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Total records over all topics (reference data included).
    #[arg(long)]
    count: Option<u64>,
    /// Run for this long, e.g. 30s, 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Only these exchanges (default: all in topics.yaml).
    #[arg(long = "exchange")]
    exchanges: Vec<String>,
    /// Only these data types: trades, quotes, reference_data (default: all). The market
    /// is simulated the same; records of other types are not sent (nor counted).
    #[arg(long = "data-type")]
    data_types: Vec<DataType>,
    /// Random seed (same seed, same market).
    #[arg(long, default_value_t = 2014)]
    seed: u64,
    /// First sequence number of every instrument. Default: microseconds since UTC
    /// midnight, so a later run continues each instrument's sequence with a gap (the time
    /// the feed was off) instead of going back to 1.
    #[arg(long)]
    first_sequence: Option<i64>,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// Directory with trades/, quotes/ and reference-data/ (see its FORMAT.md).
    #[arg(long)]
    asx_dir: PathBuf,
    /// Exchange code to publish under (an equities exchange in topics.yaml).
    #[arg(long, default_value = "asx")]
    exchange: String,
    /// Replay at this multiple of real time (default: as fast as possible).
    #[arg(long)]
    speed: Option<f64>,
    /// Leave out records after sequence numbers are assigned, to simulate lost data:
    /// `DATA_TYPE:SYMBOL:FIRST-LAST` (sequence numbers, inclusive). Repeatable.
    #[arg(long = "drop", value_name = "RANGE", value_parser = parse_drop)]
    drops: Vec<(DataType, String, i64, i64)>,
    #[command(flatten)]
    faults: FaultArgs,
}

fn parse_drop(s: &str) -> Result<(DataType, String, i64, i64), String> {
    let err =
        || format!("expected DATA_TYPE:SYMBOL:FIRST-LAST, e.g. trades:BHP:100-102, got {s:?}");
    let mut parts = s.splitn(3, ':');
    let (Some(dt), Some(symbol), Some(range)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err());
    };
    let dt: DataType = dt.parse().map_err(|_| err())?;
    let (a, b) = range.split_once('-').ok_or_else(err)?;
    let (a, b) = (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
    Ok((dt, symbol.to_string(), a, b))
}

const PROGRAM: Program = Program("k2-feed");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = match PROGRAM.start(&cli.config, true) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let topics = started.topics.expect("loaded: asked for");
    match PROGRAM
        .runtime(1)
        .block_on(run(cli.command, &started.config, &topics))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_some() => PROGRAM.misused(e),
        Err(e) => PROGRAM.failed(e),
    }
}

/// A usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

async fn run(command: Command, config: &K2Config, topics: &TopicsConfig) -> anyhow::Result<()> {
    match command {
        Command::Synthetic(args) => synthetic(args, config, topics).await,
        Command::Replay(args) => replay(args, config, topics).await,
    }
}

fn plan(f: &FaultArgs) -> FaultPlan {
    FaultPlan {
        gap_every: f.gap_every,
        duplicate_every: f.duplicate_every,
        poison_every: f.poison_every,
    }
}

/// Writer schema ids: registered with the Schema Registry when one is configured (under
/// each topic's subject), else the ids assigned in the config.
async fn schema_ids(
    config: &K2Config,
    topics: &TopicsConfig,
    names: &[TopicName],
) -> anyhow::Result<SchemaIds> {
    let mut ids = SchemaIds::new();
    if let Some(registry) = &config.schema_registry {
        let client = k2_common::registry::SchemaRegistryClient::new(registry);
        for t in names {
            let schema = BuiltinSchema::for_data_type(t.data_type());
            let subject = topics.subject(t);
            let id = client
                .register(&subject, schema.text)
                .await
                .with_context(|| format!("registering {subject} at {}", client.url()))?;
            ids.insert(t.data_type(), id);
        }
        return Ok(ids);
    }
    for (id, path) in config.schemas.ids() {
        let file = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if let Some(dt) = DataType::ALL
            .into_iter()
            .find(|dt| BuiltinSchema::for_data_type(*dt).name == file)
        {
            ids.entry(dt).or_insert(id);
        }
    }
    for t in names {
        if !ids.contains_key(&t.data_type()) {
            bail!(Usage(format!(
                "no schema id for {} in schemas.ids of the config (and no schema_registry)",
                t.data_type()
            )));
        }
    }
    Ok(ids)
}

async fn synthetic(
    args: SyntheticArgs,
    config: &K2Config,
    topics: &TopicsConfig,
) -> anyhow::Result<()> {
    if args.count.is_none() && args.duration.is_none() {
        bail!(Usage(
            "give --count N or --duration D (or both: whichever comes first)".into()
        ));
    }
    let filter = SubscriptionFilter {
        exchanges: args
            .exchanges
            .iter()
            .map(|e| e.to_ascii_lowercase())
            .collect(),
        data_types: DataType::ALL.into_iter().collect(),
        ..Default::default()
    };
    let names = topics
        .resolve(&Subscription::Filter(filter))
        .map_err(|e| Usage(e.to_string()))?;
    if names.is_empty() {
        bail!(Usage(format!(
            "no exchange {:?} in {}",
            args.exchanges,
            config.topics_file.display()
        )));
    }
    let mut exchanges: Vec<ExchangeSpec> = names
        .iter()
        .map(|t| ExchangeSpec {
            code: t.exchange().to_string(),
            asset_class: t.asset_class().to_string(),
        })
        .collect();
    exchanges.dedup_by(|a, b| a.code == b.code);
    let ids = schema_ids(config, topics, &names).await?;
    let first_sequence = args.first_sequence.unwrap_or_else(|| {
        let now = chrono::Utc::now();
        (now - now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc())
        .num_microseconds()
        .unwrap_or(1)
        .max(1)
    });
    let mut market = SyntheticMarket::new(exchanges, args.symbols, args.seed, first_sequence);
    let mut faults = Faults::new(plan(&args.faults));
    let mut sender = Sender::new(&config.kafka.client_properties(), &names, &ids, args.count)?;
    let pace = args.rate.map_or(Pace::Unlimited, Pace::Rate);
    let mut pacer = Pacer::new(pace);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(4);
    'outer: loop {
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let now = chrono::Utc::now().timestamp_micros();
        batch.clear();
        let event = market.next_event(now);
        if !args.data_types.is_empty() && !args.data_types.contains(&event.data_type()) {
            continue;
        }
        faults.apply(event, &mut batch);
        for e in batch.drain(..) {
            if args.count.is_some_and(|c| sent >= c) {
                break 'outer;
            }
            pacer.wait(sent, None).await;
            sender.send(e).await?;
            sent += 1;
        }
    }
    finish(sender, started, &faults).await
}

async fn replay(args: ReplayArgs, config: &K2Config, topics: &TopicsConfig) -> anyhow::Result<()> {
    let Some((asset_class, _)) = topics.exchange(&args.exchange) else {
        bail!(Usage(format!(
            "exchange {:?} is not in {}",
            args.exchange,
            config.topics_file.display()
        )));
    };
    let names: Vec<TopicName> = DataType::ALL
        .into_iter()
        .map(|dt| TopicName::new(asset_class, dt, &args.exchange))
        .collect::<Result<_, _>>()
        .map_err(|e| Usage(e.to_string()))?;
    let data = AsxReplay::load(&args.asx_dir, &args.exchange)?;
    let total = data.events.len() as u64;
    tracing::info!(
        records = total,
        companies = data.companies.len(),
        "replaying the ASX sample"
    );
    let ids = schema_ids(config, topics, &names).await?;
    let mut faults = Faults::new(plan(&args.faults));
    let mut sender = Sender::new(&config.kafka.client_properties(), &names, &ids, Some(total))?;
    let mut pacer = Pacer::new(args.speed.map_or(Pace::Unlimited, Pace::Replay));
    let started = Instant::now();
    let mut out: Vec<Event> = Vec::with_capacity(4);
    let mut sent = 0;
    let mut dropped = 0u64;
    for mut e in data.events {
        let dt = e.data_type();
        let symbol = e.symbol().to_string();
        if let Some(seq) = e.sequence_mut().map(|s| *s)
            && args
                .drops
                .iter()
                .any(|(d, s, a, b)| *d == dt && *s == symbol && (*a..=*b).contains(&seq))
        {
            dropped += 1;
            continue;
        }
        out.clear();
        faults.apply(e, &mut out);
        for e in out.drain(..) {
            pacer.wait(sent, e.event_micros()).await;
            sender.send(e).await?;
            sent += 1;
        }
    }
    if dropped > 0 {
        tracing::info!(dropped, "records left out on purpose (--drop)");
    }
    finish(sender, started, &faults).await
}

async fn finish(sender: Sender, started: Instant, faults: &Faults) -> anyhow::Result<()> {
    let summary = sender.finish(started).await?;
    for (topic, n) in &summary.per_topic {
        tracing::info!(%topic, records = n, "sent");
    }
    let i = &faults.injected;
    println!(
        "k2-feed: {summary} gaps={} duplicates={} poison={}",
        i.gaps,
        i.duplicates,
        i.poison_total()
    );
    Ok(())
}
