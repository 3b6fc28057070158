//! What a job asks of one table, decided anew against what the table records each time the
//! fenced append loop ([`super::fenced`]) loads it. Two kinds of table feed the same loop:
//! - a data table ([`DataPlan`]): each partition's range continues exactly from the offset
//!   the job expected the table to hold; a partition whose recorded offset differs was
//!   advanced by another writer, so its rows are dropped and it is reported fenced;
//! - `sequence_events` ([`EventsPlan`]): events found in records the table has already
//!   recorded (committed before a crash, then found again on the re-read) are dropped, the
//!   rest are written; nothing is ever fenced.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arrow_array::RecordBatch;

use k2_table::lineage::{LineageError, batches_without_partitions, not_yet_recorded};
use k2_table::offsets::{TableOffsets, TopicPartition};

use crate::job::PartitionRange;

/// One attempt's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Rows to write.
    pub batches: Vec<RecordBatch>,
    /// The offsets the table records after this commit (what it recorded, merged with this
    /// job's progress).
    pub offsets: TableOffsets,
    /// Partitions of the job another writer advanced: not written, to be re-read.
    pub fenced: BTreeSet<TopicPartition>,
    /// False when there is nothing to commit at all (every partition fenced, or every
    /// event already recorded).
    pub commit: bool,
}

impl Planned {
    pub fn records(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A job's demand on one table.
pub trait AppendPlan: Send + Sync {
    /// The partitions whose recorded offsets this plan depends on: an attempt with the same
    /// recorded offsets for these plans the same rows (and may reuse its files).
    fn partitions(&self) -> Vec<TopicPartition>;

    /// The decision against `recorded`.
    fn plan(&self, recorded: &TableOffsets) -> Result<Planned, LineageError>;

    /// The table's rows are market data whose freshness is tracked (not events).
    fn tracks_freshness(&self) -> bool;
}

/// A data table's rows and the partition ranges they came from.
pub struct DataPlan<'a> {
    pub batches: &'a [RecordBatch],
    pub partitions: &'a BTreeMap<TopicPartition, PartitionRange>,
}

impl AppendPlan for DataPlan<'_> {
    fn partitions(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    fn plan(&self, recorded: &TableOffsets) -> Result<Planned, LineageError> {
        let fenced: BTreeSet<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(tp, r)| recorded.get(tp) != r.expected_recorded)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in &fenced {
            tracing::warn!(
                partition = %tp,
                expected = ?self.partitions[tp].expected_recorded,
                recorded = ?recorded.get(tp),
                "another writer advanced this partition; dropping its rows and re-reading"
            );
        }
        let commit = fenced.len() < self.partitions.len();
        let dropped: HashSet<TopicPartition> = fenced.iter().cloned().collect();
        let batches = if commit {
            batches_without_partitions(self.batches, &dropped)?
        } else {
            Vec::new()
        };
        let offsets = recorded.merged(
            self.partitions
                .iter()
                .filter(|(tp, _)| !fenced.contains(*tp))
                .map(|(tp, r)| (tp, r.end)),
        );
        Ok(Planned {
            batches,
            offsets,
            fenced,
            commit,
        })
    }

    fn tracks_freshness(&self) -> bool {
        true
    }
}

/// Sequence events of a job and the end of every partition range the job read.
pub struct EventsPlan<'a> {
    pub batches: &'a [RecordBatch],
    pub ends: BTreeMap<TopicPartition, i64>,
}

impl AppendPlan for EventsPlan<'_> {
    fn partitions(&self) -> Vec<TopicPartition> {
        self.ends.keys().cloned().collect()
    }

    fn plan(&self, recorded: &TableOffsets) -> Result<Planned, LineageError> {
        let mut batches = Vec::with_capacity(self.batches.len());
        for b in self.batches {
            batches.extend(not_yet_recorded(b, recorded)?);
        }
        let offsets = recorded.merged(self.ends.iter().filter_map(|(tp, end)| {
            (recorded.get(tp).is_none_or(|r| r < *end)).then_some((tp, *end))
        }));
        Ok(Planned {
            commit: !batches.is_empty(),
            batches,
            offsets,
            fenced: BTreeSet::new(),
        })
    }

    fn tracks_freshness(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use k2_table::lineage::test_support::batch;

    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn range(expected_recorded: Option<i64>, end: i64) -> PartitionRange {
        PartitionRange {
            expected_recorded,
            first_offset: expected_recorded.unwrap_or(0),
            end,
            epoch: 1,
        }
    }

    #[test]
    fn a_data_plan_fences_partitions_another_writer_advanced() {
        let batches = [batch(&[("t", 0, 5), ("t", 0, 6), ("t", 1, 0)])];
        let partitions = BTreeMap::from([(tp(0), range(Some(5), 7)), (tp(1), range(None, 1))]);
        let plan = DataPlan {
            batches: &batches,
            partitions: &partitions,
        };
        let recorded = TableOffsets::default().merged([(&tp(0), 5)]);
        let p = plan.plan(&recorded).unwrap();
        assert_eq!((p.records(), p.fenced.len(), p.commit), (3, 0, true));
        assert_eq!(
            (p.offsets.get(&tp(0)), p.offsets.get(&tp(1))),
            (Some(7), Some(1))
        );

        // Another writer recorded partition 1 up to 4: only partition 0's rows are written.
        let recorded = recorded.merged([(&tp(1), 4)]);
        let p = plan.plan(&recorded).unwrap();
        assert_eq!(p.fenced, BTreeSet::from([tp(1)]));
        assert_eq!(p.records(), 2);
        assert_eq!(
            p.offsets.get(&tp(1)),
            Some(4),
            "the other writer's offset stays"
        );

        // Both advanced: nothing to commit.
        let recorded = recorded.merged([(&tp(0), 9)]);
        let p = plan.plan(&recorded).unwrap();
        assert!(!p.commit && p.batches.is_empty());
    }

    #[test]
    fn an_events_plan_drops_events_already_recorded_and_never_fences() {
        let batches = [batch(&[("t", 0, 3), ("t", 0, 8)])];
        let plan = EventsPlan {
            batches: &batches,
            ends: BTreeMap::from([(tp(0), 10)]),
        };
        let p = plan.plan(&TableOffsets::default()).unwrap();
        assert_eq!((p.records(), p.commit), (2, true));
        let p = plan
            .plan(&TableOffsets::default().merged([(&tp(0), 5)]))
            .unwrap();
        assert_eq!((p.records(), p.offsets.get(&tp(0))), (1, Some(10)));
        let p = plan
            .plan(&TableOffsets::default().merged([(&tp(0), 10)]))
            .unwrap();
        assert!(!p.commit && p.fenced.is_empty());
    }
}
