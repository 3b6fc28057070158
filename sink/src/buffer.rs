//! Buffer: rows waiting for the next commit, per table, and how far each partition has
//! been handled (written to the buffer or dead-lettered). The commit policy decides when
//! the buffer is sealed into a [`CommitJob`].

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use arrow_array::RecordBatch;

use k2_common::config::CommitPolicy;
use k2_common::data_type::DataType;

use k2_table::lineage::{LineageError, batches_without_partitions};
use k2_table::offsets::TopicPartition;

use crate::job::{CommitJob, PartitionMap, PartitionRange, SealReason, TableJob};
use crate::partition::PartitionState;

#[derive(Debug)]
struct Progress {
    /// The data type of the partition's topic: which table records its offsets.
    data_type: DataType,
    first_offset: i64,
    end: i64,
}

#[derive(Debug, Default)]
pub struct Buffer {
    tables: BTreeMap<DataType, Vec<RecordBatch>>,
    sequence_events: Vec<RecordBatch>,
    progress: PartitionMap<Progress>,
    records: usize,
    /// Records handled since the last seal, including those still in a decoder or
    /// dead-lettered: what the commit policy counts.
    handled: usize,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    pub fn records(&self) -> usize {
        self.records
    }

    /// Records handled since the last seal (decoded or not yet).
    pub fn handled_records(&self) -> usize {
        self.handled
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if any partition has progress to record (even with no rows: dead letters).
    pub fn has_progress(&self) -> bool {
        !self.progress.is_empty()
    }

    /// Marks `offset` of `tp` (a topic of `data_type`) as handled; `bytes` is its payload
    /// size.
    pub fn handled(&mut self, tp: &TopicPartition, data_type: DataType, offset: i64, bytes: usize) {
        match self.progress.get_mut(tp) {
            Some(p) => p.end = offset + 1,
            None => {
                self.progress.insert(
                    tp.clone(),
                    Progress {
                        data_type,
                        first_offset: offset,
                        end: offset + 1,
                    },
                );
            }
        }
        self.bytes += bytes;
        self.handled += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    pub fn add_sequence_events(&mut self, batch: RecordBatch) {
        self.sequence_events.push(batch);
    }

    pub fn add(&mut self, data_type: DataType, batch: RecordBatch) {
        self.records += batch.num_rows();
        self.tables.entry(data_type).or_default().push(batch);
    }

    /// When the oldest record in the buffer was handled (`None` when empty).
    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Which limit of the policy, if any, says it is time to commit.
    pub fn due(&self, policy: &CommitPolicy) -> Option<SealReason> {
        if self.handled as u64 >= policy.max_records {
            Some(SealReason::Records)
        } else if self.bytes as u64 >= policy.max_bytes.as_u64() {
            Some(SealReason::Bytes)
        } else if self.oldest.is_some_and(|t| t.elapsed() >= policy.interval) {
            Some(SealReason::Age)
        } else {
            None
        }
    }

    /// Removes every row and all progress of these partitions (revoked or fenced).
    pub fn drop_partitions(
        &mut self,
        dropped: &HashSet<TopicPartition>,
    ) -> Result<(), LineageError> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.progress.retain(|tp, _| !dropped.contains(tp));
        let mut records = 0;
        for batches in self.tables.values_mut() {
            let kept = batches_without_partitions(batches, dropped)?;
            records += kept.iter().map(RecordBatch::num_rows).sum::<usize>();
            *batches = kept;
        }
        self.tables.retain(|_, b| !b.is_empty());
        self.sequence_events = batches_without_partitions(&self.sequence_events, dropped)?;
        // Bytes are an estimate for the policy; scale them with the rows kept.
        if self.records > 0 {
            let scale = |v: usize| (v as u128 * records as u128 / self.records as u128) as usize;
            self.bytes = scale(self.bytes);
            self.handled = scale(self.handled);
        }
        self.records = records;
        if self.progress.is_empty() {
            self.bytes = 0;
            self.handled = 0;
            self.oldest = None;
        }
        Ok(())
    }

    /// Empties the buffer into a job. `state` gives, per partition, the offset the table
    /// is expected to hold and the assignment epoch; it is advanced to this job's end. A
    /// partition not being read has no expectation (and epoch 0, which no reading has):
    /// the committer fences it if the table recorded anything, and the loop ignores it.
    pub fn seal(&mut self, state: &mut PartitionMap<PartitionState>) -> CommitJob {
        let mut tables: BTreeMap<DataType, TableJob> = BTreeMap::new();
        for (data_type, batches) in std::mem::take(&mut self.tables) {
            let records = batches.iter().map(RecordBatch::num_rows).sum();
            tables.insert(
                data_type,
                TableJob {
                    data_type,
                    batches,
                    records,
                    partitions: BTreeMap::new(),
                },
            );
        }
        for (tp, p) in self.progress.drain() {
            let data_type = p.data_type;
            let (expected_recorded, epoch) = state
                .get_mut(&tp)
                .and_then(|s| s.seal(p.end))
                .unwrap_or((None, 0));
            let range = PartitionRange {
                expected_recorded,
                first_offset: p.first_offset,
                end: p.end,
                epoch,
            };
            tables
                .entry(data_type)
                .or_insert_with(|| TableJob {
                    data_type,
                    batches: Vec::new(),
                    records: 0,
                    partitions: BTreeMap::new(),
                })
                .partitions
                .insert(tp, range);
        }
        let job = CommitJob {
            tables: tables.into_values().collect(),
            sequence_events: std::mem::take(&mut self.sequence_events),
            records: self.records,
            bytes: self.bytes,
        };
        self.records = 0;
        self.handled = 0;
        self.bytes = 0;
        self.oldest = None;
        job
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytesize::ByteSize;

    use super::*;
    use crate::partition::{Position, Reading};
    use k2_table::lineage::test_support::batch;

    fn tp(topic: &str, p: i32) -> TopicPartition {
        TopicPartition::new(topic, p)
    }

    /// Offsets `range` of `tp` handled (10 bytes each) and added as rows of trades.
    fn fill(buffer: &mut Buffer, t: &str, p: i32, range: std::ops::Range<i64>) {
        for o in range.clone() {
            buffer.handled(&tp(t, p), DataType::Trades, o, 10);
        }
        let rows: Vec<(&str, i32, i64)> = range.map(|o| (t, p, o)).collect();
        buffer.add(DataType::Trades, batch(&rows));
    }

    #[test]
    fn seal_records_each_partition_range_and_advances_the_expectation() {
        let mut buffer = Buffer::default();
        fill(&mut buffer, "a", 0, 5..8);
        fill(&mut buffer, "a", 1, 0..2);
        // A dead-lettered record: handled, no row.
        buffer.handled(&tp("a", 1), DataType::Trades, 2, 10);
        let reading = |expected_recorded, epoch| {
            PartitionState::Reading(Reading {
                epoch,
                expected_recorded,
                position: Position::Next(0),
            })
        };
        let mut state = PartitionMap::default();
        state.insert(tp("a", 0), reading(Some(5), 3));
        state.insert(tp("a", 1), reading(None, 4));
        let job = buffer.seal(&mut state);
        assert_eq!(job.records, 5);
        let ranges = &job.tables[0].partitions;
        let a0 = &ranges[&tp("a", 0)];
        assert_eq!(
            (a0.expected_recorded, a0.first_offset, a0.end, a0.epoch),
            (Some(5), 5, 8, 3)
        );
        let a1 = &ranges[&tp("a", 1)];
        assert_eq!(
            (a1.expected_recorded, a1.first_offset, a1.end, a1.epoch),
            (None, 0, 3, 4)
        );
        assert_eq!(state[&tp("a", 0)], reading(Some(8), 3));
        assert_eq!(state[&tp("a", 1)], reading(Some(3), 4));
        assert!(!buffer.has_progress());
        assert_eq!(
            (buffer.records(), buffer.bytes(), buffer.handled_records()),
            (0, 0, 0)
        );
    }

    #[test]
    fn dropping_partitions_removes_their_rows_and_progress_only() {
        let mut buffer = Buffer::default();
        fill(&mut buffer, "a", 0, 0..4);
        fill(&mut buffer, "a", 1, 0..4);
        buffer
            .drop_partitions(&HashSet::from([tp("a", 1)]))
            .unwrap();
        assert_eq!(buffer.records(), 4);
        assert_eq!(buffer.handled_records(), 4);
        let job = buffer.seal(&mut PartitionMap::default());
        assert_eq!(
            job.tables[0].partitions.keys().collect::<Vec<_>>(),
            [&tp("a", 0)]
        );
        fill(&mut buffer, "a", 0, 4..6);
        buffer
            .drop_partitions(&HashSet::from([tp("a", 0)]))
            .unwrap();
        assert!(!buffer.has_progress());
        assert_eq!((buffer.records(), buffer.bytes()), (0, 0));
        assert_eq!(buffer.due(&CommitPolicy::default()), None);
    }

    #[test]
    fn due_by_records_handled_then_bytes_then_age() {
        let policy = |records, bytes, interval| CommitPolicy {
            max_records: records,
            max_bytes: ByteSize::b(bytes),
            interval,
        };
        let mut buffer = Buffer::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(buffer.due(&policy(1, 1, Duration::ZERO)), None, "empty");
        fill(&mut buffer, "a", 0, 0..3);
        assert_eq!(buffer.due(&policy(3, 1, hour)), Some(SealReason::Records));
        assert_eq!(buffer.due(&policy(4, 30, hour)), Some(SealReason::Bytes));
        assert_eq!(
            buffer.due(&policy(4, 31, Duration::ZERO)),
            Some(SealReason::Age)
        );
        assert_eq!(buffer.due(&policy(4, 31, hour)), None);
    }
}
