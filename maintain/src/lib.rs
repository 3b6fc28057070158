//! Table maintenance, safe to run beside a live sink: snapshots expire after the
//! time-travel window ([`expire`]), files no snapshot references are deleted once they are
//! old enough that no writer can still commit them ([`orphans`]), closed days are compacted
//! ([`compact`]) and get their one-minute bars ([`bars`]).
//!
//! Every operation commits through the catalog with the same optimistic concurrency as the
//! sink: on a conflict it reloads and tries again, and neither side waits on the other.
//! The sink's exactly-once offsets live in a table property written with each of its
//! commits, so expiring the snapshots that carried them loses nothing.

pub mod bars;
pub mod compact;
pub mod expire;
pub mod instrumentation;
pub mod orphans;
pub mod progress;
mod retry;

use iceberg::TableIdent;
use k2_common::catalog::NAMESPACE;
use k2_common::data_type::TABLES;

/// Why a maintenance step on a table failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    // Iceberg's and object_store's errors print their own causes: part of the message,
    // not sources (a chain would print them twice).
    #[error("{table}: {what}: {error}")]
    Catalog {
        table: String,
        what: &'static str,
        error: Box<iceberg::Error>,
    },
    #[error("{table}: {what}: {error}")]
    Storage {
        table: String,
        what: String,
        error: Box<object_store::Error>,
    },
    #[error("{table}: {message}")]
    Table { table: String, message: String },
    #[error(transparent)]
    Warehouse(#[from] k2_common::warehouse::WarehouseError),
}

/// Every K2 table, or the one named (`trades`, or `market_data.trades`).
pub fn tables(only: Option<&str>) -> Result<Vec<TableIdent>, String> {
    let ident = k2_table::layout::ident;
    match only {
        None => Ok(TABLES.iter().map(|t| ident(t)).collect()),
        Some(name) => {
            let bare = name.strip_prefix(&format!("{NAMESPACE}.")).unwrap_or(name);
            if TABLES.contains(&bare) {
                Ok(vec![ident(bare)])
            } else {
                Err(format!(
                    "no table `{name}`: expected one of {}",
                    TABLES.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_named_with_or_without_its_namespace() {
        assert_eq!(tables(None).unwrap().len(), TABLES.len());
        assert_eq!(tables(Some("trades")).unwrap()[0].name(), "trades");
        assert_eq!(
            tables(Some("market_data.quotes")).unwrap()[0].name(),
            "quotes"
        );
        assert!(tables(Some("nope")).unwrap_err().contains("trades"));
    }
}
