//! `k2-sink`: Kafka exchange topics into Iceberg.
//!
//! Exit codes: 0 success, 1 runtime failure (catalog, storage, broker), 2 bad configuration
//! or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use k2_common::config::{K2Config, TopicsConfig};
use k2_common::schema::BuiltinSchema;
use k2_common::topic::DataType;
use k2_sink::table::{TableLayout, ensure_table};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match K2Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("k2-sink: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = TopicsConfig::load(&config.topics_file) {
        eprintln!("k2-sink: {e}");
        return ExitCode::from(2);
    }
    k2_common::logging::init(&config.log);
    if !cli.init {
        eprintln!("k2-sink: the consume loop is not built yet; use --init or --print-config");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(init(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k2-sink: {e:#}");
            ExitCode::from(1)
        }
    }
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
