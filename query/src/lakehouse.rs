//! The entry point: the same catalog and warehouse as the sink.

use std::collections::BTreeMap;
use std::sync::Arc;

use iceberg::{Catalog, NamespaceIdent};

use k2_common::catalog::NAMESPACE;
use k2_common::config::{K2Config, TopicsConfig, TradingSessions};
use k2_common::data_type::BARS_1M_TABLE;

use crate::TABLES;
use crate::error::{QueryError, Result};
use crate::session::Session;
use crate::snapshot::{self, Pin, Pinned, PinnedTable, SnapshotInfo};
use crate::storage::WarehouseAccess;

pub struct Lakehouse {
    catalog: Arc<dyn Catalog>,
    catalog_uri: String,
    /// Exchange time zones, for bars aligned to the exchange's trading day.
    timezones: BTreeMap<String, chrono_tz::Tz>,
    /// Exchange trading sessions (hours and calendar), for session bars.
    sessions: BTreeMap<String, TradingSessions>,
    warehouse: WarehouseAccess,
}

impl std::fmt::Debug for Lakehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lakehouse")
            .field("catalog", &self.catalog_uri)
            .finish()
    }
}

impl Lakehouse {
    /// Connects to the configured catalog and checks that it answers.
    pub async fn open(config: &K2Config) -> Result<Self> {
        let catalog_uri = match &config.catalog {
            k2_common::config::CatalogConfig::Sql { uri, .. } => uri.to_string(),
            k2_common::config::CatalogConfig::Rest { uri, .. } => uri.to_string(),
        };
        let unreachable = |error| QueryError::Unreachable {
            uri: catalog_uri.clone(),
            error: Box::new(error),
        };
        let catalog = k2_common::catalog::connect(config).await.map_err(|e| {
            QueryError::Invalid(format!(
                "cannot connect to the catalog at {catalog_uri}: {e:#}"
            ))
        })?;
        catalog.list_namespaces(None).await.map_err(unreachable)?;
        // Without topics.yaml the questions still run (no exchange time or sessions); a
        // topics.yaml that is wrong is an error, as for every other K2 program.
        let topics = match TopicsConfig::load(&config.topics_file) {
            Ok(t) => Some(t),
            Err(_) if !config.topics_file.exists() => None,
            Err(e) => return Err(QueryError::Invalid(e.to_string())),
        };
        let timezones = topics.as_ref().map(|t| t.timezones()).unwrap_or_default();
        let sessions = topics.map(|t| t.sessions().clone()).unwrap_or_default();
        Ok(Lakehouse {
            catalog,
            catalog_uri,
            timezones,
            sessions,
            warehouse: WarehouseAccess::from_config(config),
        })
    }

    pub fn timezone(&self, exchange: &str) -> Option<chrono_tz::Tz> {
        self.timezones.get(exchange).copied()
    }

    /// The warehouse location (where DuckDB may read).
    pub fn warehouse(&self) -> &str {
        self.warehouse.location()
    }

    /// The K2 tables the catalog holds, sorted.
    pub async fn tables(&self) -> Result<Vec<String>> {
        let ns = NamespaceIdent::new(NAMESPACE.to_string());
        if !self.catalog.namespace_exists(&ns).await? {
            return Ok(Vec::new());
        }
        let mut t: Vec<String> = self
            .catalog
            .list_tables(&ns)
            .await?
            .into_iter()
            .map(|t| t.name().to_string())
            .collect();
        t.sort();
        Ok(t)
    }

    pub async fn table(&self, name: &str) -> Result<iceberg::table::Table> {
        if !TABLES.contains(&name) {
            return Err(QueryError::UnknownTable(name.to_string()));
        }
        let ident = k2_table::layout::ident(name);
        Ok(self.catalog.load_table(&ident).await?)
    }

    /// A table's snapshots, oldest first, with their summaries (K2's Kafka offsets
    /// included).
    pub async fn snapshots(&self, table: &str) -> Result<Vec<SnapshotInfo>> {
        Ok(snapshot::history(&self.table(table).await?))
    }

    /// Resolves `pin` for every table that exists.
    pub async fn pin(&self, pin: Pin) -> Result<Pinned> {
        if let Pin::Snapshots(ids) = &pin
            && let Some(unknown) = ids.keys().find(|t| !TABLES.contains(&t.as_str()))
        {
            return Err(QueryError::UnknownTable(unknown.clone()));
        }
        let mut tables = BTreeMap::new();
        for name in self.tables().await? {
            if !TABLES.contains(&name.as_str()) {
                continue;
            }
            let table = self.table(&name).await?;
            let snapshot_id = match snapshot::resolve(&name, &table, &pin) {
                Ok(id) => id,
                // The bars are derived from the trades and only ever stand in for them
                // where they hold the same (module bars): a pin they cannot follow (a
                // snapshot since expired, an instant before them) reads without them and
                // answers the same.
                Err(_) if name == BARS_1M_TABLE => None,
                Err(e) => return Err(e),
            };
            tables.insert(name, PinnedTable { table, snapshot_id });
        }
        let pinned = Pinned { tables, pin };
        snapshot::check_as_of(&pinned)?;
        Ok(pinned)
    }

    /// A read-only DuckDB session over the pinned tables.
    pub async fn session(&self, pin: Pin) -> Result<Session> {
        let pinned = self.pin(pin).await?;
        Session::open(
            pinned,
            (self.timezones.clone(), self.sessions.clone()),
            &self.warehouse,
        )
        .await
    }
}
