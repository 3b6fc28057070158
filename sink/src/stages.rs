//! The record path between the consumer and the committer, as one value: decode →
//! validate → check sequences → buffer. The poll loop feeds it records it has accepted
//! (after its partition bookkeeping) and routes what it rejects to the dead-letter topic;
//! `bench/pipeline` drives the same value from memory.

use k2_common::data_type::DataType;

use crate::buffer::Buffer;
use crate::check::{SequenceCheck, SequenceCheckError};
use crate::decode::avro::{RawRecord, Rejected};
use crate::decode::{Decoded, Decoding, DecodingError, Pushed};
use crate::validation::Validation;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Decoding(#[from] DecodingError),
    #[error("validating {data_type} records")]
    Validation {
        data_type: &'static str,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error(transparent)]
    SequenceCheck(#[from] SequenceCheckError),
}

pub struct Stages {
    pub decoding: Decoding,
    pub validation: Validation,
    pub sequence_check: SequenceCheck,
    pub buffer: Buffer,
    /// Batches the decode stage has finished, on their way to validation.
    decoded: Vec<Decoded>,
}

impl Stages {
    pub fn new(decoding: Decoding, validation: Validation, sequence_check: SequenceCheck) -> Self {
        Stages {
            decoding,
            validation,
            sequence_check,
            buffer: Buffer::default(),
            decoded: Vec::new(),
        }
    }

    /// One record of `data_type` into the stages (`has_value` is false for a record without
    /// a value). Records rejected on the way, this one or earlier ones whose batch
    /// completed now, are appended to `rejected`.
    /// Returns false for a tombstone (see [`Pushed::Tombstone`]).
    pub fn push(
        &mut self,
        data_type: DataType,
        rec: &RawRecord<'_>,
        has_value: bool,
        rejected: &mut Vec<Rejected>,
    ) -> Result<bool, StageError> {
        match self
            .decoding
            .push(data_type, rec, has_value, &mut self.decoded)?
        {
            Pushed::Accepted => {}
            Pushed::Rejected(r) => rejected.push(*r),
            Pushed::Tombstone => return Ok(false),
        }
        if !self.decoded.is_empty() {
            self.drain(rejected)?;
        }
        Ok(true)
    }

    /// Every row still in a decoder into the buffer (before sealing, a re-seek or a revoke).
    pub fn flush(&mut self, rejected: &mut Vec<Rejected>) -> Result<(), StageError> {
        self.decoding.flush(&mut self.decoded)?;
        self.drain(rejected)
    }

    fn drain(&mut self, rejected: &mut Vec<Rejected>) -> Result<(), StageError> {
        for d in std::mem::take(&mut self.decoded) {
            rejected.extend(d.rejected);
            let Some(rows) = d.rows else { continue };
            let (batch, invalid) = self
                .validation
                .apply(d.data_type, &d.layout, rows)
                .map_err(|source| StageError::Validation {
                    data_type: d.data_type.as_str(),
                    source,
                })?;
            rejected.extend(invalid);
            if let Some(batch) = batch {
                if let Some(events) = self.sequence_check.check(d.data_type, &batch)? {
                    self.buffer.add_sequence_events(events);
                }
                self.buffer.add(d.data_type, batch);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Stages over a real SQLite catalog in a temporary directory, for the unit tests of
    //! this stage and of the committer.
    use std::collections::BTreeMap;
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use std::time::Duration;

    use iceberg::Catalog;
    use k2_common::K2Config;
    use k2_common::records::{Dec8, Envelope, Trade, WireEncoder};
    use k2_common::schema::BuiltinSchema;

    use super::*;
    use crate::check::SequenceCheckConfig;
    use crate::decode::avro::SchemaSource;
    use crate::instrumentation::Metrics;
    use k2_table::layout::{TableLayout, ensure_table};
    use k2_table::offsets::TopicPartition;

    pub(crate) const TOPIC: &str = "market.equities.trades.asx";

    /// A SQLite catalog and a warehouse in `dir`, with the trades and sequence events
    /// tables.
    pub(crate) fn catalog(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Arc<dyn Catalog> {
        let topics = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/topics.yaml");
        std::fs::write(
            dir.join("k2.toml"),
            format!(
                "state_dir = \".\"\ntopics_file = \"{}\"\n",
                topics.display()
            ),
        )
        .unwrap();
        let config = K2Config::load(dir.join("k2.toml")).unwrap();
        let catalog = rt.block_on(k2_common::catalog::connect(&config)).unwrap();
        let trade = BuiltinSchema::for_data_type(DataType::Trades);
        let layout = TableLayout::new(DataType::Trades, &trade.parse()).unwrap();
        rt.block_on(ensure_table(catalog.as_ref(), &layout))
            .unwrap();
        rt.block_on(ensure_table(
            catalog.as_ref(),
            &TableLayout::sequence_events().unwrap(),
        ))
        .unwrap();
        catalog
    }

    /// The stages over `catalog`, trades only, writer schema id 1 = the shipped trade
    /// schema.
    pub(crate) fn stages(catalog: Arc<dyn Catalog>, rt: &tokio::runtime::Runtime) -> Stages {
        let trade = BuiltinSchema::for_data_type(DataType::Trades);
        let layout = TableLayout::new(DataType::Trades, &trade.parse()).unwrap();
        let events = TableLayout::sequence_events().unwrap();
        let mut decoding = Decoding::new(
            SchemaSource::Local(BTreeMap::from([(1, trade.text.to_string())])),
            catalog,
            rt.handle().clone(),
        )
        .with_batch_rows(3);
        decoding.add_table(DataType::Trades, layout, trade.text);
        Stages::new(
            decoding,
            Validation {
                min_timestamp_micros: 0,
                max_clock_skew: Duration::from_secs(60),
            },
            SequenceCheck::new(
                SequenceCheckConfig {
                    capacity: NonZeroUsize::new(100).unwrap(),
                    timezones: BTreeMap::new(),
                    warmup_window: Duration::ZERO,
                },
                events.arrow_schema.clone(),
                Metrics::new(),
            ),
        )
    }

    pub(crate) fn trade(symbol: &str, seq: i64, price: i64) -> Vec<u8> {
        trade_with(symbol, seq, price, |_| {})
    }

    /// A trade as [`trade`] makes it, changed by `edit` before encoding.
    pub(crate) fn trade_with(
        symbol: &str,
        seq: i64,
        price: i64,
        edit: impl FnOnce(&mut Trade),
    ) -> Vec<u8> {
        let now = chrono::Utc::now().timestamp_micros();
        let mut t = Trade {
            envelope: Envelope {
                symbol: symbol.into(),
                company_id: None,
                exchange: "asx".into(),
                asset_class: "equities".into(),
                exchange_timestamp: now - 1_000_000,
                sequence_number: seq,
                ingestion_timestamp: now,
                isin: None,
                contract_type: None,
                settlement_currency: None,
                funding_rate: None,
            },
            price: Dec8::new(price, 0),
            quantity: Dec8::new(10, 0),
            side: None,
            qualifiers: None,
            venue: None,
        };
        edit(&mut t);
        WireEncoder::new(DataType::Trades, 1)
            .encode(t.to_avro())
            .unwrap()
    }

    /// Pushes `values` as offsets 0.. of partition 0, then flushes; returns the rejects.
    pub(crate) fn push_all(stages: &mut Stages, values: &[Option<Vec<u8>>]) -> Vec<Rejected> {
        push_all_as(stages, DataType::Trades, values)
    }

    pub(crate) fn push_all_as(
        stages: &mut Stages,
        data_type: DataType,
        values: &[Option<Vec<u8>>],
    ) -> Vec<Rejected> {
        push_from(stages, data_type, 0, values)
    }

    /// Pushes `values` as offsets `first`.. of partition 0, then flushes.
    pub(crate) fn push_from(
        stages: &mut Stages,
        data_type: DataType,
        first: i64,
        values: &[Option<Vec<u8>>],
    ) -> Vec<Rejected> {
        let topic: Arc<str> = Arc::from(TOPIC);
        let tp = TopicPartition::new(TOPIC, 0);
        let mut rejected = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let offset = first + i as i64;
            let rec = RawRecord {
                topic: topic.clone(),
                partition: 0,
                offset,
                timestamp_ms: None,
                key: Some(b"BHP"),
                value: value.as_deref().unwrap_or_default(),
            };
            stages
                .buffer
                .handled(&tp, data_type, offset, rec.value.len());
            stages
                .push(data_type, &rec, value.is_some(), &mut rejected)
                .unwrap();
        }
        stages.flush(&mut rejected).unwrap();
        rejected
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    use super::test_support::*;
    use super::*;
    use crate::job::PartitionMap;
    use crate::partition::PartitionState;
    use k2_table::offsets::TopicPartition;

    #[test]
    fn good_rows_reach_the_buffer_and_bad_ones_come_back_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut stages = stages(catalog(dir.path(), &rt), &rt);
        let mut unknown_id = trade("BHP", 3, 40);
        unknown_id[1..5].copy_from_slice(&9u32.to_be_bytes());
        let rejected = push_all(
            &mut stages,
            &[
                Some(trade("BHP", 1, 40)),
                Some(vec![1, 2, 3]),
                Some(trade("BHP", 2, 0)),
                None,
                Some(unknown_id),
                Some(trade("BHP", 3, 41)),
                Some(trade("BHP", 4, 42)),
            ],
        );
        let kinds: Vec<(i64, &str)> = rejected.iter().map(|r| (r.source.offset, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, "bad_magic_byte"),
                (3, "missing_value"),
                (4, "unknown_schema_id"),
                (2, "invalid_price"),
            ]
        );
        assert_eq!(stages.buffer.records(), 3);
        // Every record counts as handled, rejected or not: the job records all 7 offsets.
        let mut partitions = PartitionMap::<PartitionState>::default();
        let job = stages.buffer.seal(&mut partitions);
        assert_eq!(job.tables.len(), 1);
        let range = &job.tables[0].partitions[&TopicPartition::new(TOPIC, 0)];
        assert_eq!((range.first_offset, range.end), (0, 7));
    }

    #[test]
    fn a_tombstone_on_the_compacted_reference_topic_is_handled_not_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut stages = stages(catalog(dir.path(), &rt), &rt);
        let rejected = push_all_as(&mut stages, DataType::ReferenceData, &[None, None]);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(stages.buffer.records(), 0);
        // Both offsets are handled: the next job records them.
        let job = stages.buffer.seal(&mut PartitionMap::default());
        let range = &job.tables[0].partitions[&TopicPartition::new(TOPIC, 0)];
        assert_eq!((range.first_offset, range.end), (0, 2));
    }

    #[test]
    fn a_reread_partition_warmed_up_again_still_reports_a_gap_across_the_reread() {
        use crate::check::WarmUp;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut stages = stages(catalog(dir.path(), &rt), &rt);
        push_all(
            &mut stages,
            &[Some(trade("BHP", 1, 40)), Some(trade("BHP", 2, 40))],
        );
        let tp = TopicPartition::new(TOPIC, 0);
        // Fenced: what was known is forgotten; the tables say BHP's last committed is 2.
        let now = chrono::Utc::now().timestamp_micros();
        stages.sequence_check.apply_warm_up(
            std::slice::from_ref(&tp),
            WarmUp::from_rows(
                DataType::Trades,
                vec![("asx".into(), "BHP".into(), 2, now, 0)],
            ),
        );
        push_from(
            &mut stages,
            DataType::Trades,
            2,
            &[Some(trade("BHP", 5, 40))],
        );
        assert_eq!(stages.sequence_check.counts().get("gap"), Some(&1));
        assert_eq!(stages.sequence_check.counts().get("first_seen"), Some(&1));
        // Forgotten without a warm-up (the old re-seek), the same record is first_seen.
        stages.sequence_check.forget([&tp]);
        push_from(
            &mut stages,
            DataType::Trades,
            3,
            &[Some(trade("BHP", 9, 40))],
        );
        assert_eq!(stages.sequence_check.counts().get("gap"), Some(&1));
        assert_eq!(stages.sequence_check.counts().get("first_seen"), Some(&2));
    }

    #[test]
    fn a_gap_in_sequence_numbers_becomes_an_event_row_and_never_drops_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut stages = stages(catalog(dir.path(), &rt), &rt);
        let rejected = push_all(
            &mut stages,
            &[
                Some(trade("BHP", 1, 40)),
                Some(trade("BHP", 2, 40)),
                Some(trade("BHP", 5, 40)),
                Some(trade("BHP", 6, 40)),
            ],
        );
        assert!(rejected.is_empty());
        assert_eq!(stages.buffer.records(), 4);
        let job = stages.buffer.seal(&mut PartitionMap::default());
        let events: Vec<_> = job.sequence_events.iter().collect();
        assert_eq!(events.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let gap = events[0]["gap_size"].as_primitive::<Int64Type>().value(0);
        let offset = events[0]["kafka_offset"]
            .as_primitive::<Int64Type>()
            .value(0);
        assert_eq!((gap, offset), (2, 2));
        assert_eq!(stages.sequence_check.counts().get("gap"), Some(&1));
    }
}
