//! Reading what the sink wrote, with iceberg-rust directly (not K2's query module), so the
//! checks do not depend on K2's own reading code.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use iceberg::{Catalog, NamespaceIdent, TableIdent};

use crate::TestEnv;

/// The rows of one table, as a list of batches, at its current snapshot.
pub struct Scanned {
    pub batches: Vec<RecordBatch>,
    /// Data file paths of the current snapshot.
    pub files: Vec<String>,
    pub snapshots: Vec<BTreeMap<String, String>>,
}

impl Scanned {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// `(kafka_topic, kafka_partition, kafka_offset)` of every row, in scan order.
    pub fn lineage(&self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::with_capacity(self.rows());
        for b in &self.batches {
            let t = b["kafka_topic"].as_string::<i32>();
            let p = b["kafka_partition"]
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let o = b["kafka_offset"].as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push((t.value(i).to_string(), p.value(i), o.value(i)));
            }
        }
        out
    }
}

pub async fn catalog(env: &TestEnv) -> Arc<dyn Catalog> {
    k2_common::catalog::connect(&env.k2_config())
        .await
        .expect("catalog")
}

/// K2's table `name` (`trades`, `bars_1m`, …) as the catalog has it now.
pub async fn table(env: &TestEnv, name: &str) -> iceberg::table::Table {
    catalog(env)
        .await
        .load_table(&k2_table::layout::ident(name))
        .await
        .unwrap()
}

/// The names of a table's tags (its refs that are not branches).
pub fn tags(m: &iceberg::spec::TableMetadata) -> Vec<String> {
    k2_table::retention::refs(m)
        .into_iter()
        .filter(|r| !r.is_branch)
        .map(|r| r.name)
        .collect()
}

/// `(table's default sort order id, each live data file's sort_order_id)` at the current
/// snapshot, as the manifests record them.
pub async fn sort_order_ids(env: &TestEnv, table: &str) -> (i64, Vec<Option<i32>>) {
    let catalog = catalog(env).await;
    let ident = TableIdent::new(NamespaceIdent::new("market_data".into()), table.into());
    let table = catalog.load_table(&ident).await.expect("the table");
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot().expect("a snapshot");
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .expect("the manifest list");
    let mut ids = Vec::new();
    for manifest in list.entries() {
        let manifest = manifest
            .load_manifest(table.file_io())
            .await
            .expect("a manifest");
        ids.extend(
            manifest
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.data_file().sort_order_id()),
        );
    }
    (metadata.default_sort_order_id(), ids)
}

/// Scans `market_data.<table>`; an absent table scans as empty.
pub async fn scan(env: &TestEnv, table: &str) -> Scanned {
    let catalog = catalog(env).await;
    let ident = TableIdent::new(NamespaceIdent::new("market_data".into()), table.into());
    let Ok(table) = catalog.load_table(&ident).await else {
        return Scanned {
            batches: Vec::new(),
            files: Vec::new(),
            snapshots: Vec::new(),
        };
    };
    let snapshots = table
        .metadata()
        .snapshots()
        .map(|s| {
            s.summary()
                .additional_properties
                .clone()
                .into_iter()
                .collect()
        })
        .collect();
    if table.metadata().current_snapshot().is_none() {
        return Scanned {
            batches: Vec::new(),
            files: Vec::new(),
            snapshots,
        };
    }
    let scan = table.scan().select_all().build().expect("scan");
    let files = scan
        .plan_files()
        .await
        .expect("plan")
        .map_ok(|t| t.data_file_path.clone())
        .try_collect()
        .await
        .expect("files");
    let batches = scan
        .to_arrow()
        .await
        .expect("to_arrow")
        .try_collect()
        .await
        .expect("batches");
    Scanned {
        batches,
        files,
        snapshots,
    }
}

/// Reads one Parquet data file from the local warehouse.
pub fn read_data_file(path: &str) -> Vec<RecordBatch> {
    let local = path.strip_prefix("file://").unwrap_or(path);
    let file = std::fs::File::open(local).unwrap_or_else(|e| panic!("open {local}: {e}"));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// Column accessors for assertions.
pub fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b[name].as_string::<i32>()
}

pub fn decimals<'a>(b: &'a RecordBatch, name: &str) -> &'a Decimal128Array {
    b[name].as_any().downcast_ref::<Decimal128Array>().unwrap()
}

pub fn longs<'a>(b: &'a RecordBatch, name: &str) -> &'a Int64Array {
    b[name].as_any().downcast_ref::<Int64Array>().unwrap()
}

pub fn timestamps<'a>(b: &'a RecordBatch, name: &str) -> &'a TimestampMicrosecondArray {
    b[name]
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap()
}

/// `Some(value)` of a nullable decimal column.
pub fn opt_decimal(a: &Decimal128Array, i: usize) -> Option<i128> {
    a.is_valid(i).then(|| a.value(i))
}

/// Each data file sits in the partition of its rows and is sorted by (symbol, timestamp).
pub fn check_files(scanned: &Scanned) {
    assert!(!scanned.files.is_empty());
    for path in &scanned.files {
        let batches = read_data_file(path);
        let mut last: Option<(String, i64)> = None;
        for b in &batches {
            let symbol = strings(b, "symbol");
            let exchange = strings(b, "exchange");
            let ts = timestamps(b, "exchange_timestamp");
            for r in 0..b.num_rows() {
                let day = chrono::DateTime::from_timestamp_micros(ts.value(r))
                    .unwrap()
                    .date_naive();
                assert!(
                    path.contains(&format!("exchange={}", exchange.value(r)))
                        && path.contains(&format!("={day}")),
                    "row ({}, {day}) in file {path}",
                    exchange.value(r)
                );
                let key = (symbol.value(r).to_string(), ts.value(r));
                if let Some(prev) = &last {
                    assert!(
                        *prev <= key,
                        "{path} is not sorted: {prev:?} before {key:?}"
                    );
                }
                last = Some(key);
            }
        }
    }
}
