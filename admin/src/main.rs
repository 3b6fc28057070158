//! `k2-admin`: make the broker and the Schema Registry match K2's configuration, and keep
//! the tables healthy (`maintain`).
//!
//! Exit codes: 0 success (for `plan`, also when changes are pending), 1 a change failed or
//! cannot be made, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use k2_admin::{schemas, topics};

mod maintain;
mod progress;
mod status;
use k2_common::config::{K2Config, TopicsConfig};
use k2_common::registry::SchemaRegistryClient;
use k2_common::startup::Program;

/// glibc's malloc kept the peaks of manifest merges resident for good; jemalloc returns
/// freed pages after a few seconds (ADR-24).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "k2-admin",
    version,
    about = "Topic and schema administration for K2"
)]
struct Cli {
    /// Process configuration (K2_* environment variables override it).
    #[arg(
        long,
        global = true,
        default_value = "config/k2.toml",
        env = "K2_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Kafka topics defined by topics.yaml.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Avro schemas in the Schema Registry.
    Schemas {
        #[command(subcommand)]
        action: SchemasAction,
    },
    /// Where K2 stands, from the catalog and the broker (no sink needed): per table the
    /// last commit and snapshot count, per topic how far the tables are behind, the
    /// dead-letter topic's depth.
    Status {
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Table maintenance, safe beside a running sink (policy: the `maintenance` section).
    Maintain {
        #[command(subcommand)]
        step: MaintainStep,
        /// Only this table (e.g. `trades`); every K2 table if omitted.
        #[arg(long, global = true)]
        table: Option<String>,
        /// Report what would be done; change nothing.
        #[arg(long, global = true)]
        dry_run: bool,
        /// Compact partitions whose day ended at least this long ago (overrides
        /// `maintenance.compact_after`; `0s`: every partition, today's included).
        #[arg(long, global = true, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Run again and again, this long apart, until SIGTERM or Ctrl-C; serve the
        /// maintenance metrics on `metrics.address` meanwhile.
        #[arg(long, global = true, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum StatusFormat {
    Text,
    Json,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum MaintainStep {
    /// Expire snapshots outside the window (`maintenance.snapshot_retention`,
    /// `maintenance.max_snapshots`; keeping `maintenance.min_snapshots`).
    Expire,
    /// Delete files no snapshot references, older than `maintenance.orphan_min_age`.
    Clean,
    /// Rewrite each closed day partition into few large files sorted by symbol and time,
    /// then build the one-minute bars (`bars_1m`) of every closed day of trades that lacks
    /// them or whose trades changed.
    Compact,
    /// Compact, expire, then clean.
    All,
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Print what `apply` would change.
    Plan,
    /// Create missing topics, raise partition counts, update configs.
    Apply,
}

#[derive(Subcommand)]
enum SchemasAction {
    /// Register every schema under its subject with the configured compatibility.
    Register,
}

const PROGRAM: Program = Program("k2-admin");

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Fail points named in FAILPOINTS, in builds with the `failpoints` feature (tests).
    let _fail_points = fail::FailScenario::setup();
    let started = match PROGRAM.start_logging_to(&cli.config, true, progress::LogWriter) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let topics_config = started.topics.expect("loaded: asked for");
    match PROGRAM
        .runtime(1)
        .block_on(run(cli.command, &started.config, &topics_config))
    {
        Ok(code) => code,
        Err(e) => PROGRAM.failed(e),
    }
}

async fn run(
    command: Command,
    config: &K2Config,
    topics_config: &TopicsConfig,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Topics { action } => {
            let mut cc = ClientConfig::new();
            for (k, v) in config.kafka.client_properties() {
                cc.set(k, v);
            }
            let admin: AdminClient<DefaultClientContext> = cc
                .create()
                .context("cannot create the Kafka admin client")?;
            let desired = topics::desired_topics(topics_config, &config.sink.dead_letter_topic);
            let names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
            let existing = topics::inspect(&admin, &cc, &names).await?;
            let plan = topics::diff(&desired, &existing);
            print!("{plan}");
            match action {
                TopicsAction::Plan => Ok(if plan.has_errors() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }),
                TopicsAction::Apply => {
                    let mut failed = plan.has_errors();
                    for applied in topics::apply(&admin, &plan).await {
                        match applied.result {
                            Ok(()) => println!("done: {}", applied.change),
                            Err(e) => {
                                failed = true;
                                println!("FAILED: {}: {e}", applied.change);
                            }
                        }
                    }
                    Ok(if failed {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
        Command::Status { format } => {
            let status = status::collect(config, topics_config).await?;
            match format {
                StatusFormat::Text => print!("{status}"),
                StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Maintain {
            step,
            table,
            dry_run,
            older_than,
            every,
        } => {
            let request = maintain::Request {
                step,
                table,
                dry_run,
                older_than,
                every,
            };
            maintain::run(config, request).await
        }
        Command::Schemas {
            action: SchemasAction::Register,
        } => {
            let Some(registry) = &config.schema_registry else {
                anyhow::bail!(
                    "{}: schema_registry.url: expected a Schema Registry URL to register with, \
                     found none (set it or K2_SCHEMA_REGISTRY__URL)",
                    config
                        .source
                        .as_ref()
                        .map_or("config".into(), |p| p.display().to_string())
                );
            };
            let client = SchemaRegistryClient::new(registry);
            for r in schemas::register_all(&client, topics_config).await? {
                println!("{} -> id {} ({}.avsc)", r.subject, r.id, r.schema_name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
