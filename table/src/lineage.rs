//! The lineage columns every K2 row carries (the Kafka topic, partition and offset it was
//! read from), read here and nowhere else, and the filters built on them: what the
//! exactly-once protocol drops when a partition is fenced, and what a table has already
//! recorded.

use std::collections::HashSet;

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type};
use arrow_array::{BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};

use crate::layout::{KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC};
use crate::offsets::{TableOffsets, TopicPartition};

/// A batch without the lineage columns every K2 row carries: filtering it could only drop
/// rows blindly, so it is an error, never "nothing left".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a batch of {rows} rows lacks the lineage column {column} (or it has the wrong type)")]
pub struct LineageError {
    pub column: &'static str,
    pub rows: usize,
}

/// Where each row of a batch was read from.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    topic: &'a StringArray,
    partition: &'a Int32Array,
    offset: &'a Int64Array,
}

impl<'a> Lineage<'a> {
    pub fn of(batch: &'a RecordBatch) -> Result<Self, LineageError> {
        let missing = |column| LineageError {
            column,
            rows: batch.num_rows(),
        };
        Ok(Lineage {
            topic: batch
                .column_by_name(KAFKA_TOPIC)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or(missing(KAFKA_TOPIC))?,
            partition: batch
                .column_by_name(KAFKA_PARTITION)
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
                .ok_or(missing(KAFKA_PARTITION))?,
            offset: batch
                .column_by_name(KAFKA_OFFSET)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or(missing(KAFKA_OFFSET))?,
        })
    }

    pub fn len(&self) -> usize {
        self.offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }

    pub fn topic(&self, row: usize) -> &'a str {
        self.topic.value(row)
    }

    pub fn partition(&self, row: usize) -> i32 {
        self.partition.value(row)
    }

    pub fn offset(&self, row: usize) -> i64 {
        self.offset.value(row)
    }

    /// Calls `f` with each row's topic-partition (one reused value: no allocation per row).
    fn for_each_partition(&self, mut f: impl FnMut(usize, &TopicPartition)) {
        let mut probe = TopicPartition::new(String::new(), 0);
        for row in 0..self.len() {
            probe.topic.clear();
            probe.topic.push_str(self.topic(row));
            probe.partition = self.partition(row);
            f(row, &probe);
        }
    }
}

/// The batch without rows of the given partitions; `None` if nothing is left.
pub fn without_partitions(
    batch: &RecordBatch,
    dropped: &HashSet<TopicPartition>,
) -> Result<Option<RecordBatch>, LineageError> {
    if dropped.is_empty() {
        return Ok(Some(batch.clone()));
    }
    let lineage = Lineage::of(batch)?;
    let mut keep = Vec::with_capacity(lineage.len());
    lineage.for_each_partition(|_, tp| keep.push(!dropped.contains(tp)));
    keep_rows(batch, keep)
}

/// [`without_partitions`] over a list of batches, dropping those left empty.
pub fn batches_without_partitions(
    batches: &[RecordBatch],
    dropped: &HashSet<TopicPartition>,
) -> Result<Vec<RecordBatch>, LineageError> {
    let mut kept = Vec::with_capacity(batches.len());
    for b in batches {
        kept.extend(without_partitions(b, dropped)?);
    }
    Ok(kept)
}

/// The rows of `batch` at or past the offset `recorded` holds for their partition (the
/// rest are already in the table); `None` if nothing is left.
pub fn not_yet_recorded(
    batch: &RecordBatch,
    recorded: &TableOffsets,
) -> Result<Option<RecordBatch>, LineageError> {
    if recorded.is_empty() {
        return Ok(Some(batch.clone()));
    }
    let lineage = Lineage::of(batch)?;
    let mut keep = Vec::with_capacity(lineage.len());
    lineage.for_each_partition(|row, tp| {
        keep.push(recorded.get(tp).is_none_or(|r| lineage.offset(row) >= r));
    });
    keep_rows(batch, keep)
}

fn keep_rows(batch: &RecordBatch, keep: Vec<bool>) -> Result<Option<RecordBatch>, LineageError> {
    let kept = keep.iter().filter(|k| **k).count();
    Ok(if kept == 0 {
        None
    } else if kept == batch.num_rows() {
        Some(batch.clone())
    } else {
        Some(
            filter_record_batch(batch, &BooleanArray::from(keep))
                .expect("a boolean mask of the batch's own length filters it"),
        )
    })
}

/// Batches for tests of code that filters on lineage (the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType as ArrowType, Field, Schema};

    use crate::layout::{KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC};

    /// A batch of just the lineage columns.
    pub fn batch(rows: &[(&str, i32, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KAFKA_TOPIC, ArrowType::Utf8, false),
            Field::new(KAFKA_PARTITION, ArrowType::Int32, false),
            Field::new(KAFKA_OFFSET, ArrowType::Int64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType as ArrowType, Field, Schema};

    use super::*;
    use crate::lineage::test_support::batch;

    fn offsets(b: &RecordBatch) -> Vec<i64> {
        let l = Lineage::of(b).unwrap();
        (0..l.len()).map(|i| l.offset(i)).collect()
    }

    #[test]
    fn drops_only_the_given_partitions() {
        let b = batch(&[("t", 0, 1), ("t", 1, 2), ("u", 0, 3)]);
        let dropped = HashSet::from([TopicPartition::new("t", 1)]);
        let kept = without_partitions(&b, &dropped).unwrap().unwrap();
        assert_eq!(offsets(&kept), [1, 3]);
        let all = HashSet::from([TopicPartition::new("t", 0), TopicPartition::new("t", 1)]);
        assert!(
            without_partitions(&batch(&[("t", 0, 1), ("t", 1, 2)]), &all)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn keeps_rows_at_or_past_the_recorded_offset() {
        let b = batch(&[("t", 0, 4), ("t", 0, 5), ("t", 1, 1)]);
        let recorded = TableOffsets::default().merged([(&TopicPartition::new("t", 0), 5)]);
        let kept = not_yet_recorded(&b, &recorded).unwrap().unwrap();
        assert_eq!(offsets(&kept), [5, 1]);
    }

    #[test]
    fn a_batch_without_lineage_is_an_error_not_an_empty_result() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", ArrowType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        let dropped = HashSet::from([TopicPartition::new("t", 0)]);
        assert_eq!(
            without_partitions(&b, &dropped).unwrap_err(),
            LineageError {
                column: KAFKA_TOPIC,
                rows: 2
            }
        );
        let recorded = TableOffsets::default().merged([(&TopicPartition::new("t", 0), 5)]);
        assert!(not_yet_recorded(&b, &recorded).is_err());
        // Nothing to drop: no filtering, so no lineage needed.
        assert_eq!(
            without_partitions(&b, &HashSet::new())
                .unwrap()
                .unwrap()
                .num_rows(),
            2
        );
    }
}
