//! Metrics of scheduled maintenance (`k2-admin maintain … --every`), on `metrics.address`
//! beside nothing else (the sink exports its own). Labels: step, table, outcome.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::compact::Compacted;
use crate::expire::Expired;
use crate::orphans::Cleaned;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub table: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

/// Every maintenance metric, each declared here once.
#[derive(Clone)]
pub struct MaintenanceMetrics {
    runs: Family<StepLabels, Counter>,
    last_success: Family<StepLabels, Gauge>,
    partitions_compacted: Family<TableLabels, Counter>,
    files_rewritten: Family<TableLabels, Counter>,
    bytes_rewritten: Family<TableLabels, Counter>,
    snapshots_expired: Family<TableLabels, Counter>,
    orphan_files_deleted: Family<TableLabels, Counter>,
    orphan_bytes_deleted: Family<TableLabels, Counter>,
    registry: Arc<Registry>,
}

impl Default for MaintenanceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MaintenanceMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("k2_maintenance");
        let m = MaintenanceMetrics {
            runs: Family::default(),
            last_success: Family::default(),
            partitions_compacted: Family::default(),
            files_rewritten: Family::default(),
            bytes_rewritten: Family::default(),
            snapshots_expired: Family::default(),
            orphan_files_deleted: Family::default(),
            orphan_bytes_deleted: Family::default(),
            registry: Arc::new(Registry::default()),
        };
        registry.register(
            "runs",
            "Maintenance steps run, by step, table and outcome (ok, failed)",
            m.runs.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run of a step on a table",
            m.last_success.clone(),
        );
        registry.register(
            "partitions_compacted",
            "Day partitions rewritten by compaction",
            m.partitions_compacted.clone(),
        );
        registry.register(
            "files_rewritten",
            "Data files replaced by compaction",
            m.files_rewritten.clone(),
        );
        registry.register(
            "bytes_rewritten",
            "Bytes of data files replaced by compaction",
            m.bytes_rewritten.clone(),
        );
        registry.register(
            "snapshots_expired",
            "Snapshots removed by expiry",
            m.snapshots_expired.clone(),
        );
        registry.register(
            "orphan_files_deleted",
            "Unreferenced files deleted by cleanup",
            m.orphan_files_deleted.clone(),
        );
        registry.register(
            "orphan_bytes_deleted",
            "Bytes of unreferenced files deleted by cleanup",
            m.orphan_bytes_deleted.clone(),
        );
        MaintenanceMetrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// One step's outcome on one table.
    pub fn ran(&self, step: &str, table: &str, ok: bool) {
        let labels = |outcome: &str| StepLabels {
            step: step.to_string(),
            table: table.to_string(),
            outcome: outcome.to_string(),
        };
        self.runs
            .get_or_create(&labels(if ok { "ok" } else { "failed" }))
            .inc();
        if ok {
            self.last_success
                .get_or_create(&labels("ok"))
                .set(chrono::Utc::now().timestamp());
        }
    }

    pub fn compacted(&self, c: &Compacted) {
        let t = table(&c.table);
        self.partitions_compacted
            .get_or_create(&t)
            .inc_by(c.partitions as u64);
        self.files_rewritten
            .get_or_create(&t)
            .inc_by(c.files_before as u64);
        self.bytes_rewritten
            .get_or_create(&t)
            .inc_by(c.bytes_before);
    }

    pub fn expired(&self, e: &Expired) {
        self.snapshots_expired
            .get_or_create(&table(&e.table))
            .inc_by(e.removed.len() as u64);
    }

    pub fn cleaned(&self, c: &Cleaned) {
        let t = table(&c.table);
        self.orphan_files_deleted
            .get_or_create(&t)
            .inc_by(c.orphans.len() as u64);
        self.orphan_bytes_deleted
            .get_or_create(&t)
            .inc_by(c.orphan_bytes());
    }
}

fn table(name: &str) -> TableLabels {
    TableLabels {
        table: name.to_string(),
    }
}
