//! `k2-sink`: Kafka exchange topics into Iceberg.
//!
//! Exit codes: 0 success (including a clean stop on SIGTERM/SIGINT), 1 runtime failure
//! (catalog, storage, broker), 2 bad configuration or usage, 130 a second signal (exit at
//! once; nothing uncommitted was recorded, so a restart resumes safely).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;

use k2_common::config::K2Config;
use k2_common::schema::BuiltinSchema;
use k2_common::startup::{EXIT_INTERRUPTED, Program, StopRequest, StopSignals};
use k2_common::subscription::Subscription;
use k2_common::topic::DataType;
use k2_sink::ingest::{Mode, Sink};
use k2_sink::instrumentation::Metrics;
use k2_table::layout::{TableLayout, ensure_table};

/// glibc's malloc kept the peaks of manifest merges resident for good; jemalloc returns
/// freed pages after a few seconds (ADR-24).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "k2-sink",
    version,
    about = "Kafka market-data topics into Iceberg, exactly once"
)]
struct Cli {
    /// Process configuration (K2_* environment variables override it).
    #[arg(long, default_value = "config/k2.toml", env = "K2_CONFIG")]
    config: PathBuf,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Create the namespace and tables if absent, then exit.
    #[arg(long)]
    init: bool,
    /// Consume until everything there at start (the high watermarks then) is committed,
    /// by this member or the other members of the group, then exit 0. Several members
    /// started together backfill in parallel; each stops when the whole backlog is in.
    #[arg(long)]
    once: bool,
    /// Only these exchanges (repeatable; narrows `subscription` in the config).
    #[arg(long = "exchange", value_name = "CODE")]
    exchanges: Vec<String>,
    /// Only these asset classes (repeatable).
    #[arg(long = "asset-class", value_name = "NAME")]
    asset_classes: Vec<String>,
    /// Only these data types (repeatable): trades, quotes, reference_data.
    #[arg(long = "data-type", value_name = "TYPE")]
    data_types: Vec<DataType>,
}

const PROGRAM: Program = Program("k2-sink");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = match PROGRAM.start(&cli.config, !cli.print_config && !cli.init) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let config = started.config;
    if cli.print_config {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = PROGRAM.runtime(2);
    if cli.init {
        return PROGRAM.finish(runtime.block_on(init(&config)));
    }
    let topics_config = started.topics.expect("loaded: asked for");
    let Some(filter) =
        config
            .subscription
            .filter
            .narrowed(&cli.exchanges, &cli.asset_classes, &cli.data_types)
    else {
        return PROGRAM
            .usage(&"the command-line filters exclude every topic the config subscribes to");
    };
    let topics = match topics_config.resolve(&Subscription::Filter(filter)) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => {
            return PROGRAM.usage(&format!(
                "the subscription matches no topic in {}",
                config.topics_file.display()
            ));
        }
        Err(e) => return PROGRAM.misused(e),
    };
    let mode = if cli.once {
        Mode::Once
    } else {
        Mode::Continuous
    };
    // Bound before anything else: a sink that cannot be observed does not start (a
    // configuration error, like any other).
    let listener = match config.metrics.address {
        Some(address) => match runtime.block_on(k2_common::metrics::bind(address)) {
            Ok(l) => Some(l),
            Err(e) => return PROGRAM.misused(e),
        },
        None => None,
    };
    PROGRAM.finish(run(
        &config,
        listener,
        &topics,
        topics_config.timezones(),
        mode,
        &runtime,
    ))
}

fn run(
    config: &K2Config,
    listener: Option<tokio::net::TcpListener>,
    topics: &[k2_common::topic::TopicName],
    timezones: std::collections::BTreeMap<String, chrono_tz::Tz>,
    mode: Mode,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let metrics = Metrics::with_health(k2_sink::instrumentation::health_policy(config));
    if let Some(listener) = listener {
        let served = metrics.clone();
        runtime.spawn(async move {
            if let Err(e) = served.serve(listener).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let signalled = stop.clone();
    runtime.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut signals = StopSignals::default();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            match signals.on_signal(std::time::Instant::now()) {
                StopRequest::Graceful => {
                    tracing::info!(
                        "signal received: flushing and committing (signal again to exit at once)"
                    );
                    signalled.store(true, Ordering::Relaxed);
                }
                StopRequest::Repeated => {
                    tracing::info!("the same stop signal again (sent together): still flushing");
                }
                StopRequest::Immediate => {
                    tracing::warn!("second signal: exiting without flushing");
                    std::process::exit(EXIT_INTERRUPTED.into());
                }
            }
        }
    });
    // With a SQL catalog K2 chooses where tables live, under the warehouse: check it can
    // write there before anything else (a REST catalog decides locations itself).
    if matches!(config.catalog, k2_common::config::CatalogConfig::Sql { .. }) {
        runtime.block_on(k2_common::warehouse::probe(config))?;
    }
    let catalog = runtime
        .block_on(k2_common::catalog::connect(config))
        .context("connecting to the catalog")?;
    let sink = Sink::start(
        config,
        catalog,
        topics,
        mode,
        timezones,
        runtime.handle().clone(),
        metrics,
    )?;
    let summary = sink.run(&stop)?;
    tracing::info!(?summary, "done");
    Ok(())
}

async fn init(config: &K2Config) -> anyhow::Result<()> {
    let catalog = k2_common::catalog::connect(config).await?;
    for data_type in DataType::ALL {
        let layout = TableLayout::new(data_type, &BuiltinSchema::for_data_type(data_type).parse())?;
        let table = ensure_table(catalog.as_ref(), &layout).await?;
        println!("{} at {}", layout.ident, table.metadata().location());
    }
    Ok(())
}
