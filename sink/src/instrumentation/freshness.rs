//! How fresh the tables are: when each last committed, and the newest `exchange_timestamp`
//! committed per table and exchange. Kept as instants and timestamps, turned into ages only
//! when scraped, so an idle ticker never has to keep them current.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use k2_table::layout::{EXCHANGE, EXCHANGE_TIMESTAMP};

use super::labels::{FreshnessLabels, TableLabels};

type Ages<L> = Family<L, Gauge<f64, AtomicU64>>;

#[derive(Clone, Default)]
pub struct Freshness {
    /// When each table last committed.
    commits_at: Arc<Mutex<BTreeMap<String, Instant>>>,
    /// The newest exchange_timestamp committed (µs) by table and exchange.
    newest: Arc<Mutex<BTreeMap<FreshnessLabels, i64>>>,
}

impl Freshness {
    pub fn committed(&self, table: &TableLabels) {
        self.commits_at
            .lock()
            .expect("freshness lock")
            .insert(table.table.clone(), Instant::now());
    }

    /// Rows of `table` just committed: remembers the newest `exchange_timestamp` per exchange
    /// (batches without those columns are skipped).
    pub fn data_committed(&self, table: &TableLabels, batches: &[RecordBatch]) {
        let mut newest = self.newest.lock().expect("freshness lock");
        for b in batches {
            let (Some(exchange), Some(ts)) = (
                b.column_by_name(EXCHANGE)
                    .and_then(|c| c.as_string_opt::<i32>()),
                b.column_by_name(EXCHANGE_TIMESTAMP)
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>()),
            ) else {
                continue;
            };
            // A batch holds few exchanges: the newest of each first, the map after.
            let mut local: Vec<(&str, i64)> = Vec::new();
            for i in 0..b.num_rows() {
                if exchange.is_null(i) || ts.is_null(i) {
                    continue;
                }
                let (e, v) = (exchange.value(i), ts.value(i));
                match local.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, n)) => *n = (*n).max(v),
                    None => local.push((e, v)),
                }
            }
            for (e, v) in local {
                let n = newest
                    .entry(FreshnessLabels {
                        table: table.table.clone(),
                        exchange: e.to_string(),
                    })
                    .or_insert(v);
                *n = (*n).max(v);
            }
        }
    }

    /// Sets the ages as of now.
    pub fn refresh(&self, commit: &Ages<TableLabels>, data: &Ages<FreshnessLabels>) {
        let now = Instant::now();
        for (table, at) in self.commits_at.lock().expect("freshness lock").iter() {
            commit
                .get_or_create(&TableLabels {
                    table: table.clone(),
                })
                .set(now.saturating_duration_since(*at).as_secs_f64());
        }
        let now_micros = chrono::Utc::now().timestamp_micros();
        for (labels, micros) in self.newest.lock().expect("freshness lock").iter() {
            data.get_or_create(labels)
                .set((now_micros - micros) as f64 / 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn data_freshness_is_the_age_of_the_newest_committed_record_per_exchange() {
        let now = chrono::Utc::now().timestamp_micros();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(EXCHANGE, DataType::Utf8, false),
                Field::new(
                    EXCHANGE_TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    false,
                ),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["asx", "asx", "binance"])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        now - 90_000_000,
                        now - 30_000_000,
                        now - 5_000_000,
                    ])
                    .with_timezone("+00:00"),
                ),
            ],
        )
        .unwrap();
        let f = Freshness::default();
        let table = TableLabels {
            table: "trades".into(),
        };
        f.data_committed(&table, &[batch]);
        let (commit, data) = (Ages::default(), Ages::default());
        f.refresh(&commit, &data);
        let age = |exchange: &str| {
            data.get_or_create(&FreshnessLabels {
                table: "trades".into(),
                exchange: exchange.into(),
            })
            .get()
        };
        assert!((30.0..35.0).contains(&age("asx")), "{}", age("asx"));
        assert!((5.0..10.0).contains(&age("binance")), "{}", age("binance"));
    }
}
