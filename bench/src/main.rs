//! `k2-bench`: the measuring programs behind the `bench/*` scripts. Each prints a result
//! table and a final `name: value unit` line; the scripts add the machine and commit and
//! append a row to docs/benchmarks.md. Nothing here is a test and nothing asserts a time.

mod ceiling;
mod delivery;
mod freshness;
mod history;
mod jobs;
mod layout;
mod measure;
mod pipeline;
mod query;
mod query_python;
mod soak;
mod table_costs;
mod usage;

use clap::{Parser, Subcommand};

/// glibc's malloc kept the peaks of manifest merges resident for good; jemalloc returns
/// freed pages after a few seconds (ADR-24).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "k2-bench", about = "K2 benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The sink's decode → check → sort → Parquet → commit path, no broker.
    Pipeline(pipeline::Args),
    /// The broker's raw consume ceiling: a consumer that only counts messages.
    Ceiling(ceiling::Args),
    /// The broker's delivery latency (produce → consume) while a feed runs.
    Delivery(delivery::Args),
    /// Runs a command; prints its wall time, CPU time and peak RSS.
    Measure(measure::Args),
    /// Commit latency, backlog and snapshot rate of a run, from the tables.
    FreshnessReport(freshness::Args),
    /// OHLCV questions: K2 against the read_parquet floor and iceberg_scan.
    Query(query::Args),
    /// The one-symbol-day query over one day rewritten in each Parquet layout.
    Layout(layout::Args),
    /// Metadata size, scan planning and commit latency of the trades table as it is.
    TableCosts(table_costs::Args),
    /// Commit and query costs as a table's history grows to tens of thousands of commits.
    History(history::Args),
    /// A sink left running with a steady feed and scheduled maintenance, window by window.
    Soak(soak::Args),
}

/// The async runtime the measuring programs drive the catalog and DuckDB sessions with (two
/// workers, as the sink's).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Pipeline(a) => pipeline::run(a),
        Command::Ceiling(a) => ceiling::run(a),
        Command::Delivery(a) => delivery::run(a),
        Command::Measure(a) => measure::run(a),
        Command::FreshnessReport(a) => freshness::run(a),
        Command::Query(a) => query::run(a),
        Command::Layout(a) => layout::run(a),
        Command::TableCosts(a) => table_costs::run(a),
        Command::History(a) => history::run(a),
        Command::Soak(a) => soak::run(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
