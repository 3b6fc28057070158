//! Bars kept ahead of time: for every closed (exchange, day) of trades, the day's one-minute
//! bars in `market_data.bars_1m` ([`k2_table::bars`]), built from the day's trades files as
//! they are after compaction, in one snapshot per day — a reader sees a day's bars whole
//! or not at all.
//!
//! A day is (re)built when its bars are missing or were built from another set of trades
//! files than the day has now (late data appended, a compaction since): the bars carry the
//! fingerprint of the files they describe, and the day's old bars are replaced in the same
//! snapshot that adds the new. A crash before that commit leaves the day as it was (the
//! written file an orphan for [`crate::orphans`]); the next run builds it again.
//!
//! Only maintenance writes the bars table; two maintenance runs racing each other conflict
//! on its `main` and the loser stages again on the winner's head.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use iceberg::expr::Reference;
use iceberg::spec::{DataContentType, Datum, Literal, PrimitiveLiteral, Struct};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use k2_common::DataType;
use k2_common::retry::Backoff;
use k2_table::bars::{self, MinuteBars, TRADE_COLUMNS, TRADES_SNAPSHOT_PROPERTY};
use k2_table::commit::{CommitError, MetadataCommitter};
use k2_table::layout::{self, TableLayout};
use k2_table::stage::append::{self, Append, ManifestMerge};
use k2_table::stage::{ManifestCache, StageError, Staged, replace};

use crate::compact::{self, Policy};
use crate::{MaintainError, retry};

/// What a bars run did.
#[derive(Debug, Clone, Default)]
pub struct BarsBuilt {
    /// Closed days whose bars were (or, in a dry run, would be) built.
    pub days: usize,
    /// Closed days whose bars already described their trades.
    pub current: usize,
    /// Bars written.
    pub rows: u64,
    /// Trades read to build them.
    pub trades: u64,
    pub dry_run: bool,
}

impl fmt::Display for BarsBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return write!(
                f,
                "{}: {} days would get bars ({} up to date)",
                bars_ident(),
                self.days,
                self.current
            );
        }
        write!(
            f,
            "{}: bars for {} days ({} rows from {} trades), {} days up to date",
            bars_ident(),
            self.days,
            self.rows,
            self.trades,
            self.current
        )
    }
}

fn bars_ident() -> TableIdent {
    layout::ident(k2_common::data_type::BARS_1M_TABLE)
}

/// One (exchange, day) of trades: its partition and live files.
struct Day {
    exchange: String,
    /// Days since the epoch.
    day: i32,
    files: Vec<String>,
}

impl Day {
    fn date(&self) -> NaiveDate {
        DateTime::from_timestamp(i64::from(self.day) * 86_400, 0)
            .map(|t| t.date_naive())
            .unwrap_or_default()
    }
}

/// Builds the bars of every closed day of trades whose bars are missing or stale.
pub async fn build(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<BarsBuilt, MaintainError> {
    let trades_ident = layout::table_ident(DataType::Trades);
    let name = bars_ident().to_string();
    let mut done = BarsBuilt {
        dry_run,
        ..Default::default()
    };
    let Ok(trades) = catalog.load_table(&trades_ident).await else {
        // No trades table yet: nothing to build from.
        return Ok(done);
    };
    let Some(trades_snapshot) = trades.metadata().current_snapshot_id() else {
        return Ok(done);
    };
    let days = closed_days(&trades, policy, now).await?;
    let layout = TableLayout::bars_1m().map_err(|e| MaintainError::Table {
        table: name.clone(),
        message: e.to_string(),
    })?;
    let mut table =
        layout::ensure_table(catalog, &layout)
            .await
            .map_err(|e| MaintainError::Table {
                table: name.clone(),
                message: e.to_string(),
            })?;
    let built = retry::catalog(&name, "reading the bars' files", || built_days(&table)).await?;
    for day in days {
        let fingerprint = bars::fingerprint(day.files.iter().map(String::as_str));
        let existing = built.get(&(day.exchange.clone(), day.day));
        if existing.is_some_and(|e| e.fingerprints == [fingerprint.clone()]) {
            done.current += 1;
            continue;
        }
        done.days += 1;
        if dry_run {
            continue;
        }
        let started = Instant::now();
        let (batch, trades_read) = fold_day(&trades, trades_snapshot, &day, &layout, &fingerprint)
            .await
            .map_err(|e| MaintainError::Table {
                table: name.clone(),
                message: format!("building the bars of {} {}: {e}", day.exchange, day.date()),
            })?;
        let partition = Struct::from_iter([
            Some(Literal::date(day.day)),
            Some(Literal::string(&day.exchange)),
            Some(Literal::string(&fingerprint)),
        ]);
        let prefix = format!("k2-bars-{}", uuid::Uuid::new_v4().simple());
        let files = k2_table::writer::write_partition(
            &table,
            std::slice::from_ref(&batch),
            partition,
            &prefix,
        )
        .await
        .map_err(|e| MaintainError::Catalog {
            table: name.clone(),
            what: "writing bars",
            error: Box::new(e),
        })?;
        k2_table::fail_point!("bars-after-write");
        let properties = HashMap::from([
            (
                TRADES_SNAPSHOT_PROPERTY.to_string(),
                trades_snapshot.to_string(),
            ),
            ("k2.operation".to_string(), "bars".to_string()),
            (
                "k2.bars.day".to_string(),
                format!("{}/{}", day.exchange, day.date()),
            ),
        ]);
        table = commit_day(catalog, committer, &day, files, properties).await?;
        done.rows += batch.num_rows() as u64;
        done.trades += trades_read;
        tracing::info!(
            exchange = %day.exchange,
            day = %day.date(),
            bars = batch.num_rows(),
            trades = trades_read,
            seconds = started.elapsed().as_secs_f64(),
            "built bars"
        );
    }
    tracing::info!(
        days = done.days,
        current = done.current,
        rows = done.rows,
        dry_run,
        "bars"
    );
    Ok(done)
}

/// The closed (exchange, day) partitions of the trades table and their live files.
async fn closed_days(
    trades: &Table,
    policy: Policy,
    now: DateTime<Utc>,
) -> Result<Vec<Day>, MaintainError> {
    let name = trades.identifier().to_string();
    let spec = trades.metadata().default_partition_spec();
    let position = |source: &str| {
        let id = trades
            .metadata()
            .current_schema()
            .field_by_name(source)
            .map(|f| f.id);
        spec.fields().iter().position(|f| Some(f.source_id) == id)
    };
    let (Some(day_at), Some(exchange_at)) = (
        position(layout::EXCHANGE_TIMESTAMP),
        position(layout::EXCHANGE),
    ) else {
        return Err(MaintainError::Table {
            table: name,
            message: "not partitioned by day and exchange: no bars can be built".into(),
        });
    };
    let partitions = retry::catalog(&name, "reading the table's files", || {
        compact::live_paths(trades)
    })
    .await?;
    let mut days = Vec::new();
    for (partition, files) in partitions {
        let (Some(Some(Literal::Primitive(PrimitiveLiteral::Int(day)))), Some(Some(exchange))) = (
            partition.fields().get(day_at).cloned(),
            partition.fields().get(exchange_at).cloned(),
        ) else {
            continue;
        };
        let Literal::Primitive(PrimitiveLiteral::String(exchange)) = exchange else {
            continue;
        };
        if !compact::day_closed(day, policy.closed_after, now) {
            continue;
        }
        days.push(Day {
            exchange,
            day,
            files,
        });
    }
    Ok(days)
}

/// The bars' days: for each (exchange, day), the fingerprints its live files carry (one,
/// unless a crash or a race left two — which a rebuild replaces) and their paths.
#[derive(Debug, Default)]
struct Built {
    fingerprints: Vec<String>,
    files: HashSet<String>,
}

async fn built_days(table: &Table) -> iceberg::Result<BTreeMap<(String, i32), Built>> {
    let mut out: BTreeMap<(String, i32), Built> = BTreeMap::new();
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(out);
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    for manifest_file in list.entries() {
        let manifest = manifest_file.load_manifest(table.file_io()).await?;
        for entry in manifest.entries() {
            if !entry.is_alive() || entry.content_type() != DataContentType::Data {
                continue;
            }
            let p = entry.data_file().partition().fields();
            if let (
                Some(Some(Literal::Primitive(PrimitiveLiteral::Int(day)))),
                Some(Some(Literal::Primitive(PrimitiveLiteral::String(exchange)))),
                Some(Some(Literal::Primitive(PrimitiveLiteral::String(fp)))),
            ) = (p.first(), p.get(1), p.get(2))
            {
                let b = out.entry((exchange.clone(), *day)).or_default();
                if !b.fingerprints.contains(fp) {
                    b.fingerprints.push(fp.clone());
                }
                b.files.insert(entry.file_path().to_string());
            }
        }
    }
    Ok(out)
}

/// Reads the day's trades (only the columns bars need) from exactly `day.files` at
/// `snapshot` and folds them into bars. Also returns the trades read.
async fn fold_day(
    trades: &Table,
    snapshot: i64,
    day: &Day,
    layout: &TableLayout,
    fingerprint: &str,
) -> Result<(arrow_array::RecordBatch, u64), String> {
    let from = i64::from(day.day) * 86_400_000_000;
    let filter = Reference::new(layout::EXCHANGE)
        .equal_to(Datum::string(&day.exchange))
        .and(
            Reference::new(layout::EXCHANGE_TIMESTAMP)
                .greater_than_or_equal_to(Datum::timestamptz_micros(from)),
        )
        .and(
            Reference::new(layout::EXCHANGE_TIMESTAMP)
                .less_than(Datum::timestamptz_micros(from + 86_400_000_000)),
        );
    let scan = trades
        .scan()
        .snapshot_id(snapshot)
        .select(TRADE_COLUMNS)
        .with_filter(filter)
        .build()
        .map_err(|e| e.to_string())?;
    let wanted: HashSet<&str> = day.files.iter().map(String::as_str).collect();
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let planned: HashSet<&str> = tasks.iter().map(|t| t.data_file_path.as_str()).collect();
    if planned != wanted {
        return Err(format!(
            "the scan planned {} files where the day has {}",
            planned.len(),
            wanted.len()
        ));
    }
    let mut stream = trades
        .reader_builder()
        .build()
        .read(futures::stream::iter(tasks.into_iter().map(Ok)).boxed())
        .map_err(|e| e.to_string())?
        .stream();
    let mut bars = MinuteBars::default();
    let mut read = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        read += batch.num_rows() as u64;
        bars.add(&batch).map_err(|e| e.to_string())?;
    }
    let batch = bars
        .finish(layout.arrow_schema.clone(), &day.exchange, fingerprint)
        .map_err(|e| e.to_string())?;
    Ok((batch, read))
}

/// Commits the day's new bars file(s) in place of its old ones, staging again on a
/// conflict. The table as it is after the commit.
async fn commit_day(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    day: &Day,
    files: Vec<iceberg::spec::DataFile>,
    properties: HashMap<String, String>,
) -> Result<Table, MaintainError> {
    let ident = bars_ident();
    let name = ident.to_string();
    let mut backoff = Backoff::new();
    let mut unsure: Option<i64> = None;
    let mut manifests = ManifestCache::default();
    for attempt in 1..=retry::ATTEMPTS {
        let current =
            retry::catalog(&name, "loading the table", || catalog.load_table(&ident)).await?;
        if let Some(id) = unsure
            && current.metadata().snapshot_by_id(id).is_some()
        {
            return Ok(current);
        }
        let built =
            retry::catalog(&name, "reading the bars' files", || built_days(&current)).await?;
        let removed = built
            .get(&(day.exchange.clone(), day.day))
            .map(|b| b.files.clone())
            .unwrap_or_default();
        let staged: Result<Staged, StageError> = if removed.is_empty() {
            append::stage(
                &current,
                Append {
                    files: files.clone(),
                    properties: properties.clone(),
                    timestamp_ms: k2_table::clock::now_ms(),
                },
                ManifestMerge::of(current.metadata()),
                None,
            )
            .await
        } else {
            replace::overwrite(
                &current,
                &removed,
                files.clone(),
                properties.clone(),
                &mut manifests,
            )
            .await
        };
        let staged = match staged {
            Ok(s) => s,
            Err(StageError::Iceberg(e))
                if k2_common::catalog::is_transient(&e) && attempt < retry::ATTEMPTS =>
            {
                backoff.wait(&format!("{name}: staging bars"), &e).await;
                continue;
            }
            Err(e) => {
                return Err(MaintainError::Table {
                    table: name,
                    message: format!("staging bars: {e}"),
                });
            }
        };
        let snapshot_id = staged.snapshot_id;
        match committer.commit_to(catalog, &ident, staged).await {
            Ok(()) => {
                return retry::catalog(&name, "loading the table", || catalog.load_table(&ident))
                    .await;
            }
            Err(CommitError::Conflict) => {
                tracing::info!(table = %name, attempt, "bars conflicted with another commit; staging again");
            }
            Err(e) if e.is_transient() && attempt < retry::ATTEMPTS => {
                unsure = Some(snapshot_id);
                backoff.wait(&format!("{name}: committing bars"), &e).await;
            }
            Err(e) => {
                return Err(MaintainError::Table {
                    table: name,
                    message: format!("committing bars: {}", k2_common::report::chain(&e)),
                });
            }
        }
    }
    Err(MaintainError::Table {
        table: name,
        message: format!(
            "the bars of {} {} did not commit in {} attempts",
            day.exchange,
            day.date(),
            retry::ATTEMPTS
        ),
    })
}
