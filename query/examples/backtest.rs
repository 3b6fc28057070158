//! A reproducible backtest: a moving-average crossover on 1-minute bars, pinned to an
//! instant. Run it, note the printed `--as-of`, let the sink land more data, run it again
//! with that `--as-of`: the P&L is identical, because every table is read at the same
//! snapshots. An instant reproduces while its snapshots are inside the window
//! (`maintenance.snapshot_retention`, `max_snapshots`); the end of a day — `--as-of
//! 2026-11-24` (midnight) or `--as-of eod-2026-11-23` — reproduces for as long as its
//! end-of-day tags are kept.
//!
//!     cargo run --example backtest -- --config config/k2.toml --symbol BHP --exchange asx
//!     cargo run --example backtest -- --symbol BHP --exchange asx --as-of 2026-11-23T12:00:00Z
//!     cargo run --example backtest -- --symbol BHP --exchange asx --as-of eod-2026-11-23

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::Decimal128Type;
use chrono::{DateTime, Utc};
use clap::Parser;

use k2_common::config::K2Config;
use k2_query::{Fill, Interval, Lakehouse, OhlcvRequest, Pin, TimeZoneChoice};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "config/k2.toml")]
    config: std::path::PathBuf,
    #[arg(long)]
    symbol: String,
    #[arg(long)]
    exchange: String,
    /// The instant or tag to read the lakehouse at (default: now, printed for re-runs).
    #[arg(long)]
    as_of: Option<String>,
    #[arg(long, default_value_t = 5)]
    fast: usize,
    #[arg(long, default_value_t = 20)]
    slow: usize,
}

fn mean(xs: &[i128]) -> i128 {
    xs.iter().sum::<i128>() / xs.len() as i128
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = K2Config::load(&args.config)?;
    let pin = match &args.as_of {
        Some(text) => Pin::parse(text)?,
        None => Pin::AsOf(Utc::now()),
    };
    let as_of: DateTime<Utc> = pin
        .instant()
        .context("--as-of: give an instant or an end-of-day tag")?;
    let lake = Lakehouse::open(&config).await?;
    let session = lake.session(pin.clone()).await?;
    let bars = session
        .ohlcv(&OhlcvRequest {
            symbols: vec![args.symbol.clone()],
            exchange: args.exchange.clone(),
            interval: "1m".parse::<Interval>()?,
            from: "1990-01-01T00:00:00Z".parse()?,
            to: as_of,
            tz: TimeZoneChoice::Utc,
            fill: Fill::Omit,
            session: k2_query::SessionChoice::Off,
        })
        .await
        .context("loading bars")?;
    let closes: Vec<i128> = bars
        .iter()
        .flat_map(|b| {
            let c = b["close"].as_primitive::<Decimal128Type>();
            (0..b.num_rows()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect();
    // Long one unit while the fast average is above the slow one; P&L in exact decimals.
    let mut position = 0i128;
    let mut pnl = 0i128;
    let mut trades = 0;
    for t in 1..closes.len() {
        pnl += position * (closes[t] - closes[t - 1]);
        if t + 1 >= args.slow {
            let fast = mean(&closes[t + 1 - args.fast..=t]);
            let slow = mean(&closes[t + 1 - args.slow..=t]);
            let wanted = i128::from(fast > slow);
            if wanted != position {
                trades += 1;
                position = wanted;
            }
        }
    }
    println!("as_of: {pin}");
    for (table, t) in &session.pinned().tables {
        println!("  {table}: snapshot {:?}", t.snapshot_id);
    }
    println!(
        "{} {}: {} one-minute bars, {trades} position changes, P&L {}{}.{:08} per unit",
        args.exchange,
        args.symbol,
        closes.len(),
        if pnl < 0 { "-" } else { "" },
        pnl.abs() / 100_000_000,
        pnl.abs() % 100_000_000
    );
    Ok(())
}
