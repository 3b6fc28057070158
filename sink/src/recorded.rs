//! Reading the offsets a table recorded, as both the rebalance callback ([`crate::consumer`],
//! bounded by the assignment deadline) and [`crate::resume`] (off the poll thread) do:
//! retried while the catalog or storage may come back, an error when the offsets cannot be
//! read — never "no offsets", which would re-read every retained record.

use std::time::Duration;

use iceberg::Catalog;

use k2_common::data_type::DataType;
use k2_table::layout::table_ident;
use k2_table::offsets::{OffsetsError, TableOffsets};

use crate::commit::is_fatal;
use crate::instrumentation::{Metrics, Operation};

/// A table's offsets cannot be read, and retrying will not change that (or may not, within
/// the time there is).
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    #[error("reading the offsets recorded in {table}")]
    Offsets {
        table: &'static str,
        #[source]
        source: OffsetsError,
    },
    #[error("loading {table} to read its offsets")]
    Table {
        table: &'static str,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error(
        "the catalog did not answer within {deadline:?} when reading the offsets recorded in {table}; stopping rather than holding the consumer group"
    )]
    Deadline {
        table: &'static str,
        deadline: Duration,
    },
}

/// The offsets the table of `dt` recorded. Retries what may pass (the catalog or storage
/// being unreachable), counting each retry.
pub async fn recorded_offsets(
    catalog: &dyn Catalog,
    dt: DataType,
    metrics: &Metrics,
) -> Result<TableOffsets, RecordedError> {
    let table = dt.table_name();
    let what = format!("reading the offsets recorded in {table}");
    let ident = table_ident(dt);
    let loaded = k2_common::retry::retry(
        &what,
        || catalog.load_table(&ident),
        |e| !is_fatal(e),
        |_| metrics.retried(Operation::OffsetsRead),
    )
    .await
    .map_err(|source| RecordedError::Table {
        table,
        source: Box::new(source),
    })?;
    TableOffsets::from_metadata(loaded.metadata())
        .map_err(|source| RecordedError::Offsets { table, source })
}
