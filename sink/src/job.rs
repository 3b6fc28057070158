//! What one commit cycle carries from the poll loop to the committer: per table the rows and
//! the offset range of every partition they came from, with the assignment epoch they were
//! read under.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;

use k2_common::data_type::DataType;
use k2_table::offsets::TopicPartition;

/// A map keyed by topic-partition. The poll loop looks partitions up for every record;
/// SipHash's protection against crafted keys buys nothing for names K2 subscribed to
/// itself, and cost a few percent of the loop's time.
pub type PartitionMap<V> = std::collections::HashMap<TopicPartition, V, rustc_hash::FxBuildHasher>;

/// One partition's share of a commit job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// The offset the table must have recorded for this job to continue it exactly
    /// (`None`: nothing recorded yet).
    pub expected_recorded: Option<i64>,
    /// First offset handled in this job.
    pub first_offset: i64,
    /// Next offset to read after this job.
    pub end: i64,
    /// Assignment epoch when the range was read; results of older epochs are stale.
    pub epoch: u64,
}

/// Everything one commit cycle writes to one table.
#[derive(Debug)]
pub struct TableJob {
    pub data_type: DataType,
    pub batches: Vec<RecordBatch>,
    pub records: usize,
    pub partitions: BTreeMap<TopicPartition, PartitionRange>,
}

/// One commit cycle: one Iceberg transaction per table.
#[derive(Debug)]
pub struct CommitJob {
    pub tables: Vec<TableJob>,
    /// Rows for `sequence_events` found while reading this job's records.
    pub sequence_events: Vec<RecordBatch>,
    pub records: usize,
    pub bytes: usize,
}

/// Why a buffer is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealReason {
    Records,
    Bytes,
    Age,
    Shutdown,
    CaughtUp,
}

impl SealReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SealReason::Records => "records",
            SealReason::Bytes => "bytes",
            SealReason::Age => "age",
            SealReason::Shutdown => "shutdown",
            SealReason::CaughtUp => "caught_up",
        }
    }
}
