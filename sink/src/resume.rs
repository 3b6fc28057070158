//! Resume: where each newly assigned or fenced partition starts reading, found off the
//! poll thread.
//!
//! The rebalance callback runs inside `poll`, and anything slow there (a warm-up scan of
//! the tables, a catalog that needs retries) would hold the poll thread past
//! `max.poll.interval.ms` and get the sink thrown out of its group. So the callback only
//! reads the recorded offsets (bounded) and assigns the partitions paused; this stage
//! loads, on the runtime, what the tables record now (the group's committed offset for
//! partitions no table has seen), the partitions' watermarks and the sequence warm-up;
//! the poll loop then seeks each partition there and resumes it. A fenced partition goes
//! through the same path, so its instruments are warmed up again too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use k2_common::data_type::DataType;

use k2_table::offsets::{TableOffsets, TopicPartition};

use crate::check::WarmUp;
use crate::consumer::SinkConsumer;
use crate::instrumentation::Metrics;
use crate::recorded::{RecordedError, recorded_offsets};

/// A partition to (re)start, tagged with the epoch of the reading it starts.
#[derive(Debug, Clone)]
pub struct ToResume {
    pub tp: TopicPartition,
    pub data_type: DataType,
    pub epoch: u64,
}

/// Where a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The next offset its table recorded.
    Table(i64),
    /// No table recorded it: the consumer group's committed offset.
    Group(i64),
    /// Nobody recorded it: its first retained record (`auto.offset.reset=earliest`).
    Beginning,
}

impl Start {
    pub fn offset(self) -> Offset {
        match self {
            Start::Table(o) | Start::Group(o) => Offset::Offset(o),
            Start::Beginning => Offset::Beginning,
        }
    }

    /// The offset the table is expected to hold for this partition.
    pub fn recorded(self) -> Option<i64> {
        match self {
            Start::Table(o) => Some(o),
            Start::Group(_) | Start::Beginning => None,
        }
    }

    /// The offset of the first record this start should read, if known.
    pub fn expected_first(self) -> Option<i64> {
        match self {
            Start::Table(o) | Start::Group(o) => Some(o),
            Start::Beginning => None,
        }
    }
}

/// A start offset that the partition's log no longer (or not yet) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discontinuity {
    /// Below the first retained offset: records were deleted by retention before K2 read
    /// them.
    Deleted { low: i64 },
    /// Beyond the end of the log: the topic was deleted and recreated (or truncated); the
    /// log restarts below offsets K2 already recorded.
    BeyondEnd { high: i64 },
}

impl Discontinuity {
    pub fn kind(self) -> &'static str {
        match self {
            Discontinuity::Deleted { .. } => "deleted",
            Discontinuity::BeyondEnd { .. } => "beyond_end",
        }
    }

    /// How a start offset sits in a log holding `[low, high)`.
    pub fn of(start: Start, low: i64, high: i64) -> Option<Self> {
        let offset = start.expected_first()?;
        if offset < low {
            Some(Discontinuity::Deleted { low })
        } else if offset > high {
            Some(Discontinuity::BeyondEnd { high })
        } else {
            None
        }
    }
}

/// One partition, ready to seek.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub start: Start,
    pub discontinuity: Option<Discontinuity>,
}

/// A batch of partitions ready to seek, with the warm-up of their instruments.
#[derive(Debug)]
pub struct Loaded {
    pub partitions: Vec<Resumed>,
    pub warm_up: WarmUp,
}

/// Where partitions start could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Recorded(#[from] RecordedError),
    #[error("the resume task ended")]
    Ended,
}

/// Loads start positions on the runtime and hands them to the poll loop.
pub struct Resume {
    catalog: Arc<dyn Catalog>,
    consumer: Arc<SinkConsumer>,
    runtime: tokio::runtime::Handle,
    metrics: Metrics,
    warmup_window: Duration,
    loaded_tx: std::sync::mpsc::Sender<Result<Loaded, ResumeError>>,
    loaded: std::sync::mpsc::Receiver<Result<Loaded, ResumeError>>,
}

impl Resume {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        consumer: Arc<SinkConsumer>,
        runtime: tokio::runtime::Handle,
        metrics: Metrics,
        warmup_window: Duration,
    ) -> Self {
        let (loaded_tx, loaded) = std::sync::mpsc::channel();
        Resume {
            catalog,
            consumer,
            runtime,
            metrics,
            warmup_window,
            loaded_tx,
            loaded,
        }
    }

    /// Starts loading where `partitions` resume; the result comes from [`Self::try_loaded`].
    pub fn load(&self, partitions: Vec<ToResume>) {
        if partitions.is_empty() {
            return;
        }
        let catalog = self.catalog.clone();
        let consumer = self.consumer.clone();
        let metrics = self.metrics.clone();
        let window = self.warmup_window;
        let tx = self.loaded_tx.clone();
        self.runtime.spawn(async move {
            let result = load(catalog.as_ref(), consumer, &metrics, window, partitions).await;
            let _ = tx.send(result);
        });
    }

    /// A finished load, if any.
    pub fn try_loaded(&self) -> Option<Result<Loaded, ResumeError>> {
        self.loaded.try_recv().ok()
    }
}

async fn load(
    catalog: &dyn Catalog,
    consumer: Arc<SinkConsumer>,
    metrics: &Metrics,
    window: Duration,
    partitions: Vec<ToResume>,
) -> Result<Loaded, ResumeError> {
    let data_types: BTreeSet<DataType> = partitions.iter().map(|p| p.data_type).collect();
    let mut recorded: BTreeMap<DataType, TableOffsets> = BTreeMap::new();
    for dt in data_types {
        recorded.insert(dt, recorded_offsets(catalog, dt, metrics).await?);
    }
    let unrecorded: Vec<TopicPartition> = partitions
        .iter()
        .filter(|p| recorded[&p.data_type].get(&p.tp).is_none())
        .map(|p| p.tp.clone())
        .collect();
    let all: Vec<TopicPartition> = partitions.iter().map(|p| p.tp.clone()).collect();
    let (committed, watermarks) = tokio::task::spawn_blocking(move || {
        (
            group_committed(&consumer, &unrecorded),
            watermarks(&consumer, &all),
        )
    })
    .await
    .map_err(|_| ResumeError::Ended)?;
    let tps: Vec<TopicPartition> = partitions.iter().map(|p| p.tp.clone()).collect();
    let warm_up = WarmUp::load(catalog, window, &tps).await;
    let partitions = partitions
        .into_iter()
        .map(|p| {
            let start = match (recorded[&p.data_type].get(&p.tp), committed.get(&p.tp)) {
                (Some(o), _) => Start::Table(o),
                (None, Some(&o)) => Start::Group(o),
                (None, None) => Start::Beginning,
            };
            let discontinuity = watermarks
                .get(&p.tp)
                .and_then(|&(low, high)| Discontinuity::of(start, low, high));
            Resumed {
                tp: p.tp,
                epoch: p.epoch,
                start,
                discontinuity,
            }
        })
        .collect();
    Ok(Loaded {
        partitions,
        warm_up,
    })
}

/// The group's committed offsets of `partitions` (those it has one for). Only consulted
/// for partitions no table recorded; failing to read them falls back to the beginning,
/// which can duplicate nothing (the table recorded nothing of these partitions).
fn group_committed(
    consumer: &SinkConsumer,
    partitions: &[TopicPartition],
) -> BTreeMap<TopicPartition, i64> {
    if partitions.is_empty() {
        return BTreeMap::new();
    }
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((TopicPartition::new(e.topic(), e.partition()), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the group's committed offsets failed; partitions no table recorded start from the beginning");
            BTreeMap::new()
        }
    }
}

/// `(low, high)` watermarks of `partitions`, for those the broker answered.
fn watermarks(
    consumer: &SinkConsumer,
    partitions: &[TopicPartition],
) -> BTreeMap<TopicPartition, (i64, i64)> {
    partitions
        .iter()
        .filter_map(|tp| {
            match consumer.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10)) {
                Ok(w) => Some((tp.clone(), w)),
                Err(e) => {
                    tracing::debug!(partition = %tp, error = %e, "no watermarks");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_outside_the_log_is_a_discontinuity() {
        assert_eq!(Discontinuity::of(Start::Table(5), 0, 10), None);
        assert_eq!(Discontinuity::of(Start::Table(10), 0, 10), None);
        assert_eq!(Discontinuity::of(Start::Table(10), 10, 10), None);
        assert_eq!(
            Discontinuity::of(Start::Table(5), 8, 10),
            Some(Discontinuity::Deleted { low: 8 })
        );
        assert_eq!(
            Discontinuity::of(Start::Table(50), 0, 10),
            Some(Discontinuity::BeyondEnd { high: 10 })
        );
        assert_eq!(
            Discontinuity::of(Start::Group(3), 4, 10),
            Some(Discontinuity::Deleted { low: 4 })
        );
        assert_eq!(Discontinuity::of(Start::Beginning, 4, 10), None);
    }

    #[test]
    fn only_table_starts_are_recorded() {
        assert_eq!(Start::Table(7).recorded(), Some(7));
        assert_eq!(Start::Group(7).recorded(), None);
        assert_eq!(Start::Beginning.recorded(), None);
        assert_eq!(Start::Beginning.offset(), Offset::Beginning);
        assert_eq!(Start::Group(7).offset(), Offset::Offset(7));
    }
}
