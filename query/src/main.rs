//! `k2-query`: a SQL shell over K2's Iceberg tables.
//!
//! Exit codes: 0 success, 1 a query or the catalog failed, 2 bad configuration or usage.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use arrow::record_batch::RecordBatch;
use clap::{Parser, ValueEnum};

use k2_common::startup::Program;
use k2_query::{
    Fill, Horizon, Interval, Lakehouse, MarkoutPrice, MarkoutRequest, OhlcvRequest, Pin, Session,
    SessionChoice, TimeZoneChoice,
};

#[derive(Parser)]
#[command(
    name = "k2-query",
    version,
    about = "SQL, OHLCV bars and time travel over K2's tables"
)]
struct Cli {
    /// Process configuration (the same file as the sink).
    #[arg(long, default_value = "config/k2.toml", env = "K2_CONFIG")]
    config: PathBuf,
    /// Run this SQL or dot command and exit (repeatable; run in order).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,
    /// Run the statements in this file and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// With --format parquet: the file to write.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Read every table as of this instant (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC) or
    /// tag (`eod-2026-12-07`: the end of that UTC day, kept after the snapshots expire).
    #[arg(long, value_name = "TIMESTAMP|TAG")]
    as_of: Option<String>,
    /// Read a table at a snapshot id: `table=id` (repeatable).
    #[arg(long = "snapshot", value_name = "TABLE=ID")]
    snapshots: Vec<String>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    /// Aligned columns; a row count when stdout is a terminal.
    Table,
    /// A header line, then one line a row.
    Csv,
    /// One JSON array of row objects a statement (`[]` when nothing matched).
    Json,
    /// A Parquet file (--output).
    Parquet,
}

struct Shell {
    lakehouse: Lakehouse,
    session: Session,
    format: Format,
    output: Option<PathBuf>,
    timer: bool,
    runtime: tokio::runtime::Runtime,
}

const PROGRAM: Program = Program("k2-query");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match PROGRAM.start(&cli.config, false) {
        Ok(s) => s.config,
        Err(code) => return code,
    };
    if cli.print_config {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if cli.format == Format::Parquet && cli.output.is_none() {
        return PROGRAM.usage(&"--format parquet needs --output FILE");
    }
    let pin = match pin_from_args(cli.as_of.as_deref(), &cli.snapshots) {
        Ok(p) => p,
        Err(e) => return PROGRAM.misused(e),
    };
    let runtime = PROGRAM.runtime(1);
    let opened = runtime.block_on(async {
        let lakehouse = Lakehouse::open(&config).await?;
        let session = lakehouse.session(pin).await?;
        anyhow::Ok((lakehouse, session))
    });
    let (lakehouse, session) = match opened {
        Ok(x) => x,
        Err(e) => return PROGRAM.failed(e),
    };
    let mut shell = Shell {
        lakehouse,
        session,
        format: cli.format,
        output: cli.output,
        timer: false,
        runtime,
    };
    let mut scripted: Vec<String> = cli.commands;
    if let Some(f) = &cli.file {
        match std::fs::read_to_string(f) {
            Ok(text) => scripted.extend(statements(&text)),
            Err(e) => return PROGRAM.usage(&format!("{}: {e}", f.display())),
        }
    }
    if !scripted.is_empty() {
        for cmd in &scripted {
            if let Err(e) = shell.run(cmd) {
                return PROGRAM.failed(e);
            }
        }
        return ExitCode::SUCCESS;
    }
    shell.repl()
}

/// Splits a script into statements: dot commands end at the line, SQL at `;`.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut sql = String::new();
    for line in text.lines() {
        let t = line.trim();
        if sql.trim().is_empty() && t.starts_with('.') {
            out.push(t.to_string());
            continue;
        }
        if t.starts_with("--") {
            continue;
        }
        sql.push_str(line);
        sql.push('\n');
        if t.ends_with(';') {
            out.push(std::mem::take(&mut sql));
        }
    }
    if !sql.trim().is_empty() {
        out.push(sql);
    }
    out
}

fn parse_instant(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(k2_query::instant::parse(s)?)
}

fn pin_from_args(as_of: Option<&str>, snapshots: &[String]) -> anyhow::Result<Pin> {
    match (as_of, snapshots.is_empty()) {
        (Some(_), false) => bail!("--as-of and --snapshot cannot be combined"),
        (None, true) => Ok(Pin::Latest),
        (Some(t), true) => Ok(Pin::parse(t)?),
        (None, false) => {
            let mut ids = BTreeMap::new();
            for s in snapshots {
                let (t, id) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--snapshot {s:?}: expected TABLE=ID"))?;
                let id: i64 = id
                    .parse()
                    .map_err(|_| anyhow!("--snapshot {s:?}: {id:?} is not a snapshot id"))?;
                ids.insert(t.to_string(), Some(id));
            }
            Ok(Pin::Snapshots(ids))
        }
    }
}

const HELP: &str = "\
.tables                         tables and the snapshot each is pinned to
.schema <table>                 columns and types
.snapshots <table>              history: id, committed at, operation, records, Kafka offsets
.asof <timestamp>|<tag>|now     pin every table to an instant, a tag (eod-2026-12-07: the
                                end of that UTC day), or back to the latest
.ohlcv <symbol> <interval> <from> <to> [--exchange <ex>] [--tz exchange|utc]
       [--fill none|forward]    bars: bucket_start, open, high, low, close, volume, vwap, trades
       [--session none|regular|extended]
                                (forward: empty buckets carry the last close, volume 0;
                                regular: buckets from each session's open, in-session
                                trades only; extended: the trading day's others too)
.markouts <symbol> <from> <to> [--horizons 1s,10s,60s] [--price mid|trade] [--exchange <ex>]
                                each trade with the price at each horizon after it and its
                                markout (price then − trade price, + for a buy, − for a sell)
.timer on|off                   print how long each statement took (and, after .ohlcv,
                                how many days came from bars_1m and how many from trades)
.help                           this text
Anything else is SQL over the views trades, quotes, reference_data, sequence_events,
bars_1m.";

impl Shell {
    fn run(&mut self, input: &str) -> anyhow::Result<()> {
        let input = input.trim();
        if input.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        if let Some(dot) = input.strip_prefix('.') {
            self.dot(dot)?;
        } else {
            let batches = self
                .runtime
                .block_on(self.session.sql(input.trim_end_matches(';'), &[]))?;
            self.print(&batches)?;
        }
        if self.timer {
            eprintln!("Run Time: {:.3} s", started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn dot(&mut self, dot: &str) -> anyhow::Result<()> {
        let args: Vec<&str> = dot.split_whitespace().collect();
        match args.as_slice() {
            ["help"] => println!("{HELP}"),
            ["tables"] => {
                for (name, t) in &self.session.pinned().tables {
                    match t.snapshot_id {
                        Some(id) => println!("{name}\tsnapshot {id}"),
                        None => println!("{name}\t(empty at this instant)"),
                    }
                }
            }
            ["schema", table] => {
                for (col, ty) in self.runtime.block_on(self.session.describe(table))? {
                    println!("{col}\t{ty}");
                }
            }
            ["snapshots", table] => {
                let history = self.runtime.block_on(self.lakehouse.snapshots(table))?;
                for s in history {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.snapshot_id,
                        s.committed_at.to_rfc3339(),
                        s.operation,
                        s.added_records.map_or("-".to_string(), |n| n.to_string()),
                        if s.refs.is_empty() {
                            "-".to_string()
                        } else {
                            s.refs.join(",")
                        },
                        s.summary.get("k2.kafka-offsets").map_or("", String::as_str)
                    );
                }
            }
            ["asof", when] => {
                let pin = Pin::parse(when)?;
                self.session = self.runtime.block_on(self.lakehouse.session(pin))?;
            }
            ["timer", on] => self.timer = *on == "on",
            ["ohlcv", symbol, interval, from, to, rest @ ..] => {
                let mut exchange = None;
                let mut tz = TimeZoneChoice::Utc;
                let mut fill = Fill::Omit;
                let mut session = SessionChoice::Off;
                let mut it = rest.iter();
                while let Some(flag) = it.next() {
                    match (*flag, it.next()) {
                        ("--exchange", Some(ex)) => exchange = Some(ex.to_string()),
                        ("--tz", Some(&"exchange")) => tz = TimeZoneChoice::Exchange,
                        ("--tz", Some(&"utc")) => tz = TimeZoneChoice::Utc,
                        ("--fill", Some(&"forward")) => fill = Fill::Forward,
                        ("--fill", Some(&"none")) => fill = Fill::Omit,
                        ("--session", Some(choice)) => session = choice.parse()?,
                        (other, _) => bail!(".ohlcv: unexpected {other:?}; see .help"),
                    }
                }
                // The request's own mistakes first: guessing the exchange asks the tables.
                let interval = interval.parse::<Interval>()?;
                let (from, to) = (parse_instant(from)?, parse_instant(to)?);
                let exchange = match exchange {
                    Some(e) => e,
                    None => self.only_exchange()?,
                };
                let req = OhlcvRequest {
                    symbols: vec![symbol.to_string()],
                    exchange,
                    interval,
                    from,
                    to,
                    tz,
                    fill,
                    session,
                };
                let batches = self.runtime.block_on(self.session.ohlcv(&req))?;
                if self.timer {
                    // Where the bars came from, beside the time they took.
                    let sources = self.runtime.block_on(self.session.ohlcv_sources(&req))?;
                    eprintln!("Sources: {sources}");
                }
                let projected: Vec<RecordBatch> = batches
                    .iter()
                    .map(|b| b.project(&(1..b.num_columns()).collect::<Vec<_>>()))
                    .collect::<Result<_, _>>()?;
                self.print(&projected)?;
            }
            ["markouts", symbol, from, to, rest @ ..] => {
                let mut exchange = None;
                let mut horizons = "1s,10s,60s".to_string();
                let mut price = MarkoutPrice::Mid;
                let mut it = rest.iter();
                while let Some(flag) = it.next() {
                    match (*flag, it.next()) {
                        ("--exchange", Some(ex)) => exchange = Some(ex.to_string()),
                        ("--horizons", Some(h)) => horizons = h.to_string(),
                        ("--price", Some(p)) => price = p.parse()?,
                        (other, _) => bail!(".markouts: unexpected {other:?}; see .help"),
                    }
                }
                let horizons = horizons
                    .split(',')
                    .map(str::parse::<Horizon>)
                    .collect::<Result<Vec<_>, _>>()?;
                let (from, to) = (parse_instant(from)?, parse_instant(to)?);
                let exchange = match exchange {
                    Some(e) => e,
                    None => self.only_exchange()?,
                };
                let req = MarkoutRequest {
                    range: k2_query::Range {
                        exchange,
                        symbols: vec![symbol.to_string()],
                        from,
                        to,
                    },
                    horizons,
                    price,
                };
                let batches = self.runtime.block_on(self.session.markouts(&req))?;
                self.print(&batches)?;
            }
            _ => bail!("unknown or incomplete command .{dot}; see .help"),
        }
        Ok(())
    }

    /// The exchange when `--exchange` is omitted: the only one with trades.
    fn only_exchange(&self) -> anyhow::Result<String> {
        let b = self.runtime.block_on(
            self.session
                .sql("SELECT DISTINCT exchange FROM trades ORDER BY 1", &[]),
        )?;
        let names: Vec<String> = b
            .iter()
            .flat_map(|b| {
                let a = arrow::array::AsArray::as_string::<i32>(b.column(0));
                (0..b.num_rows())
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        match names.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no trades at this instant"),
            many => bail!(
                "several exchanges have trades ({}): give --exchange",
                many.join(", ")
            ),
        }
    }

    fn print(&self, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match self.format {
            Format::Table => {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
                // As psql and DuckDB's shell do, for a person reading (not for pipes).
                if std::io::stdout().is_terminal() {
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
                }
            }
            Format::Csv => {
                let mut w = arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Format::Json => {
                // One JSON array per statement: `[]` when nothing matched.
                let mut w = arrow_json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
                writeln!(out)?;
            }
            Format::Parquet => {
                let path = self.output.as_ref().expect("checked at start");
                let Some(first) = batches.first() else {
                    return Ok(());
                };
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut w = parquet::arrow::ArrowWriter::try_new(file, first.schema(), None)?;
                for b in batches {
                    w.write(b)?;
                }
                w.close()?;
            }
        }
        Ok(())
    }

    fn repl(&mut self) -> ExitCode {
        if !std::io::stdin().is_terminal() {
            // Piped input: a script.
            let mut text = String::new();
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            for s in statements(&text) {
                if let Err(e) = self.run(&s) {
                    return PROGRAM.failed(e);
                }
            }
            return ExitCode::SUCCESS;
        }
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => return PROGRAM.failed(e),
        };
        let history = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".k2_query_history");
        let _ = editor.load_history(&history);
        println!(
            "k2-query {} — .help for commands, Ctrl-D to quit",
            k2_common::VERSION
        );
        let mut pending = String::new();
        loop {
            let prompt = if pending.is_empty() { "k2> " } else { "..> " };
            match editor.readline(prompt) {
                Ok(line) => {
                    let t = line.trim();
                    if pending.is_empty() && t.starts_with('.') {
                        let _ = editor.add_history_entry(t);
                        if let Err(e) = self.run(t) {
                            eprintln!("error: {e:#}");
                        }
                        continue;
                    }
                    pending.push_str(&line);
                    pending.push('\n');
                    if t.ends_with(';') {
                        let stmt = std::mem::take(&mut pending);
                        let _ = editor.add_history_entry(stmt.trim());
                        if let Err(e) = self.run(&stmt) {
                            eprintln!("error: {e:#}");
                        }
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => pending.clear(),
                Err(_) => break,
            }
        }
        let _ = editor.save_history(&history);
        ExitCode::SUCCESS
    }
}
