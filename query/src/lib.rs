//! k2-query: questions over K2's Iceberg tables. The DuckDB engine, snapshot pinning and
//! OHLCV arrive with the query issue; today the crate lists what the catalog holds.

use std::sync::Arc;

use iceberg::{Catalog, NamespaceIdent, TableIdent};

use k2_common::catalog::NAMESPACE;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("catalog: {0}")]
    Catalog(#[from] iceberg::Error),
}

/// The K2 tables the catalog holds, sorted.
pub async fn tables(catalog: &Arc<dyn Catalog>) -> Result<Vec<TableIdent>, QueryError> {
    let ns = NamespaceIdent::new(NAMESPACE.to_string());
    if !catalog.namespace_exists(&ns).await? {
        return Ok(Vec::new());
    }
    let mut t = catalog.list_tables(&ns).await?;
    t.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(t)
}
