//! `k2-query`: the analysts' shell over K2's tables (the SQL shell arrives with the query
//! issue). Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use k2_common::config::K2Config;

#[derive(Parser)]
#[command(name = "k2-query", version, about = "Query K2's Iceberg tables")]
struct Cli {
    /// Process configuration (same file as the sink).
    #[arg(long, default_value = "config/k2.toml", env = "K2_CONFIG")]
    config: PathBuf,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match K2Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("k2-query: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    k2_common::logging::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let catalog = k2_common::catalog::connect(&config).await?;
        anyhow::Ok(k2_query::tables(&catalog).await?)
    });
    match result {
        Ok(tables) => {
            for t in tables {
                println!("{t}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("k2-query: {e:#}");
            ExitCode::from(1)
        }
    }
}
