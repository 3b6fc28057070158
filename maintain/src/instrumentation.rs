//! Metrics of scheduled maintenance (`k2-admin maintain … --every`), on `metrics.address`
//! beside nothing else (the sink exports its own). Labels: step, table, outcome.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bars::BarsBuilt;
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

k2_common::metrics! {
    /// Every maintenance metric, each declared here once (under the `k2_maintenance_` prefix).
    pub struct Declared {
        runs: Family<StepLabels, Counter> =
            "runs", "Maintenance steps run, by step, table and outcome (ok, failed)";
        last_success: Family<StepLabels, Gauge> =
            "last_success_timestamp_seconds", "Unix time of the last successful run of a step on a table";
        partitions_compacted: Family<TableLabels, Counter> =
            "partitions_compacted", "Day partitions rewritten by compaction";
        files_rewritten: Family<TableLabels, Counter> =
            "files_rewritten", "Data files replaced by compaction";
        bytes_rewritten: Family<TableLabels, Counter> =
            "bytes_rewritten", "Bytes of data files replaced by compaction";
        snapshots_expired: Family<TableLabels, Counter> =
            "snapshots_expired", "Snapshots removed by expiry";
        orphan_files_deleted: Family<TableLabels, Counter> =
            "orphan_files_deleted", "Unreferenced files deleted by cleanup";
        orphan_bytes_deleted: Family<TableLabels, Counter> =
            "orphan_bytes_deleted", "Bytes of unreferenced files deleted by cleanup";
        bar_days_built: Family<TableLabels, Counter> =
            "bar_days_built", "Exchange-days of trades whose one-minute bars were built or rebuilt";
    }
}

/// The maintenance metrics and their registry.
#[derive(Clone)]
pub struct MaintenanceMetrics {
    m: Declared,
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
        let m = Declared::register(&mut registry);
        MaintenanceMetrics {
            m,
            registry: Arc::new(registry),
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
        self.m
            .runs
            .get_or_create(&labels(if ok { "ok" } else { "failed" }))
            .inc();
        if ok {
            self.m
                .last_success
                .get_or_create(&labels("ok"))
                .set(chrono::Utc::now().timestamp());
        }
    }

    pub fn compacted(&self, c: &Compacted) {
        let t = table(&c.table);
        self.m
            .partitions_compacted
            .get_or_create(&t)
            .inc_by(c.partitions as u64);
        self.m
            .files_rewritten
            .get_or_create(&t)
            .inc_by(c.files_before as u64);
        self.m
            .bytes_rewritten
            .get_or_create(&t)
            .inc_by(c.bytes_before);
    }

    pub fn bars_built(&self, b: &BarsBuilt) {
        self.m
            .bar_days_built
            .get_or_create(&table(k2_common::data_type::BARS_1M_TABLE))
            .inc_by(b.days as u64);
    }

    pub fn expired(&self, e: &Expired) {
        self.m
            .snapshots_expired
            .get_or_create(&table(&e.table))
            .inc_by(e.removed.len() as u64);
    }

    pub fn cleaned(&self, c: &Cleaned) {
        let t = table(&c.table);
        self.m
            .orphan_files_deleted
            .get_or_create(&t)
            .inc_by(c.orphans.len() as u64);
        self.m
            .orphan_bytes_deleted
            .get_or_create(&t)
            .inc_by(c.orphan_bytes());
    }
}

fn table(name: &str) -> TableLabels {
    TableLabels {
        table: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// Operators read the metric list in docs/operations.md: it must name every metric.
    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../docs/operations.md");
        for name in super::Declared::NAMES {
            assert!(
                k2_common::metrics::documented(docs, &format!("k2_maintenance_{name}")),
                "docs/operations.md does not mention k2_maintenance_{name}"
            );
        }
    }
}
