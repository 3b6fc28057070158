//! What a long compaction reports as it goes, for a person watching: `k2-admin` draws it
//! as a bar on a terminal; schedules and tests pass [`Silent`]. Log lines and metrics are
//! separate and always emitted.

/// Observer of one compaction run. Bytes are input (compressed Parquet) bytes, the unit
/// the run's total is known in before it starts.
pub trait Progress: Send + Sync {
    /// `bytes` in `partitions` partitions of `table` are about to be rewritten.
    fn started(&self, _table: &str, _partitions: usize, _bytes: u64) {}
    /// Rewriting `partition` begins.
    fn partition(&self, _partition: &str) {}
    /// `bytes` more have been read, sorted and written again.
    fn advanced(&self, _bytes: u64) {}
    /// The run is over (done, abandoned or failed).
    fn finished(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
