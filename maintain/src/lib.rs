//! Table maintenance, safe to run beside a live sink: snapshots expire after the
//! time-travel window ([`expire`]), files no snapshot references are deleted once they are
//! old enough that no writer can still commit them ([`orphans`]).
//!
//! Every operation commits through the catalog with the same optimistic concurrency as the
//! sink: on a conflict it reloads and tries again, and neither side waits on the other.
//! The sink's exactly-once offsets live in a table property written with each of its
//! commits, so expiring the snapshots that carried them loses nothing.

/// A named point where a test can make this process stop (`FAILPOINTS=<name>=sleep(60000)`,
/// then kill -9): logged when reached, so the test knows where it stopped. Nothing at all
/// without the `failpoints` feature.
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::list().iter().any(|(n, _)| n == $name) {
            tracing::info!(fail_point = $name, "at a fail point");
        }
        fail::fail_point!($name);
    };
}
pub(crate) use fail_point;

pub mod compact;
pub mod expire;
pub mod instrumentation;
pub mod metadata_commit;
pub mod orphans;
pub mod progress;
pub mod replace;
mod rest_commit;
mod retry;

use iceberg::{NamespaceIdent, TableIdent};
use k2_common::catalog::NAMESPACE;
use k2_common::data_type::TABLES;

/// Why a maintenance step on a table failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    #[error("{table}: {what}: {source}")]
    Catalog {
        table: String,
        what: &'static str,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("{table}: {what}: {source}")]
    Storage {
        table: String,
        what: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{table}: {message}")]
    Table { table: String, message: String },
    #[error(transparent)]
    Warehouse(#[from] k2_common::warehouse::WarehouseError),
}

/// Every K2 table, or the one named (`trades`, or `market_data.trades`).
pub fn tables(only: Option<&str>) -> Result<Vec<TableIdent>, String> {
    let ident =
        |name: &str| TableIdent::new(NamespaceIdent::new(NAMESPACE.to_string()), name.to_string());
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
