//! Typed rows: query results deserialized into the caller's own structs (serde, through
//! `serde_arrow`). Columns map to fields by name. Decimal columns arrive as their exact
//! decimal text, so [`k2_common::records::Dec8`] (or any type deserializing from a
//! string) keeps them exact; timestamps arrive as microseconds since the epoch (use
//! `chrono::serde::ts_microseconds`).

use arrow::record_batch::RecordBatch;
use duckdb::ToSql;
use serde::de::DeserializeOwned;

use crate::error::{QueryError, Result};
use crate::session::Session;

/// Every row of `batches` as a `T`.
pub fn from_batches<T: DeserializeOwned>(batches: &[RecordBatch]) -> Result<Vec<T>> {
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let mut part: Vec<T> = serde_arrow::from_record_batch(batch).map_err(|e| {
            QueryError::Invalid(format!(
                "cannot read the result as {}: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        rows.append(&mut part);
    }
    Ok(rows)
}

impl Session {
    /// [`Session::sql`] with every row deserialized into a `T`.
    pub async fn rows<T: DeserializeOwned>(
        &self,
        query: &str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<T>> {
        from_batches(&self.sql(query, params).await?)
    }
}
