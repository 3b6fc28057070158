//! The sink's poll loop: consume, hand each record to the decode → validate → check →
//! buffer stages, seal the buffer into jobs for the committer, acknowledge what it
//! committed, and apply rebalances and fencing.
//!
//! The loop runs on its own thread. Newly assigned and fenced partitions stay paused while
//! [`Resume`] finds, on the runtime, where they start; the loop then seeks and resumes them. Exactly one commit job is in flight at a time; while it is,
//! the next one fills, and when that one is full too, every assigned partition is paused
//! until the committer catches up: memory stays within about twice the commit policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxBuildHasher;

use k2_common::config::CommitPolicy;
use k2_common::data_type::DataType;

use k2_table::layout::TableError;
use k2_table::lineage::LineageError;
use k2_table::offsets::TopicPartition;

use crate::commit::{CommitError, CommitTask, CommitTaskEnded, RangeOutcome};
use crate::consumer::{RebalanceEvent, SinkConsumer};
use crate::dead_letters::{DeadLetterError, DeadLetters};
use crate::decode::{DECODE_BATCH_ROWS, RawRecord, Rejected};
use crate::instrumentation::Metrics;
use crate::job::{PartitionMap, SealReason};
use crate::once::{GroupProgress, Held};
use crate::partition::{Accept, PartitionState, Position, Reading};
use crate::recorded::RecordedError;
use crate::resume::{Loaded, Resume, ResumeError, ToResume};
use crate::stages::{StageError, Stages};

mod start;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    CommitTask(#[from] CommitTaskEnded),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    #[error(transparent)]
    Stages(#[from] StageError),
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Recorded(#[from] RecordedError),
    #[error("{0}")]
    Setup(String),
    #[error("partition of topic `{0}` is not one of the subscribed market-data topics")]
    UnknownTopic(String),
}

/// How the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Until asked to stop.
    Continuous,
    /// Until every partition is caught up to its high watermark at start.
    Once,
}

/// What one run did, for the final log line.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records_consumed: u64,
    pub records_committed: u64,
    pub dead_letters: u64,
    pub commits: u64,
    /// Records per sequence classification.
    pub sequence: BTreeMap<&'static str, u64>,
}

struct TopicInfo {
    name: Arc<str>,
    data_type: DataType,
    consumed: Counter,
    tombstones: Counter,
}

/// The poll loop and the stages it drives.
pub struct Sink {
    consumer: Arc<SinkConsumer>,
    resume: Resume,
    metrics: Metrics,
    policy: CommitPolicy,
    topics: HashMap<String, TopicInfo, FxBuildHasher>,
    stages: Stages,
    /// Records the stages rejected, on their way to the dead-letter topic.
    rejected: Vec<Rejected>,
    partitions: PartitionMap<PartitionState>,
    next_epoch: u64,
    dead_letters: DeadLetters,
    commits: CommitTask,
    paused: bool,
    /// `--once`: how far the group is through what was there at the start.
    once: Option<GroupProgress>,
    assigned_once: bool,
    probe: TopicPartition,
    summary: RunSummary,
    /// When the oldest record of the job with the committer was handled.
    in_flight_since: Option<Instant>,
}

impl Sink {
    /// Runs until `stop` is set (then flushes, commits and leaves the group) or, with
    /// [`Mode::Once`], until caught up.
    pub fn run(mut self, stop: &AtomicBool) -> Result<RunSummary, SinkError> {
        let mut stopping = false;
        let mut last_check = Instant::now();
        loop {
            self.metrics.health().beat();
            if !stopping && stop.load(Ordering::Relaxed) {
                tracing::info!("stopping: committing what is buffered");
                stopping = true;
                self.set_paused(true);
            }
            self.poll_batch()?;
            self.handle_rebalances()?;
            self.handle_resumed()?;
            self.handle_results()?;

            let caught_up =
                self.once.is_some() && last_check.elapsed() >= Duration::from_millis(100) && {
                    last_check = Instant::now();
                    self.caught_up()
                };
            let reason = if stopping {
                Some(SealReason::Shutdown)
            } else if caught_up {
                Some(SealReason::CaughtUp)
            } else {
                self.stages.buffer.due(&self.policy)
            };
            if let Some(reason) = reason {
                if !self.commits.is_busy() {
                    self.seal(reason)?;
                    if !stopping && self.paused {
                        self.set_paused(false);
                    }
                } else if matches!(reason, SealReason::Records | SealReason::Bytes) && !self.paused
                {
                    tracing::info!("commit in progress and buffer full: pausing consumption");
                    self.set_paused(true);
                }
            }
            self.metrics
                .buffered_records
                .set(self.stages.buffer.records() as i64);
            self.metrics
                .buffered_bytes
                .set(self.stages.buffer.bytes() as i64);
            self.metrics.health().uncommitted_since(
                [self.in_flight_since, self.stages.buffer.oldest()]
                    .into_iter()
                    .flatten()
                    .min(),
            );

            let idle = !self.commits.is_busy() && !self.stages.buffer.has_progress();
            if idle && (stopping || caught_up) {
                break;
            }
        }
        self.close();
        self.summary.sequence = self.stages.sequence_check.counts().clone();
        Ok(self.summary)
    }

    fn close(&mut self) {
        self.dead_letters.close(Duration::from_secs(10));
        self.consumer.unsubscribe();
        tracing::info!(
            consumed = self.summary.records_consumed,
            committed = self.summary.records_committed,
            dead_letters = self.summary.dead_letters,
            commits = self.summary.commits,
            sequence = ?self.stages.sequence_check.counts(),
            "sink stopped"
        );
    }

    /// Reads what librdkafka has queued (up to a bound), waiting briefly if nothing is.
    fn poll_batch(&mut self) -> Result<(), SinkError> {
        let consumer = self.consumer.clone();
        let mut timeout = Duration::from_millis(100);
        for _ in 0..DECODE_BATCH_ROWS {
            let Some(result) = consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            // A rebalance served inside this poll is applied before its message: the
            // message may belong to a partition assigned just now.
            if consumer.context().has_events() {
                self.handle_rebalances()?;
            }
            match result {
                Ok(m) => self.on_message(&m)?,
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        Ok(())
    }

    fn on_message(&mut self, m: &BorrowedMessage<'_>) -> Result<(), SinkError> {
        let Some(info) = self.topics.get(m.topic()) else {
            return Ok(());
        };
        self.probe.topic.clear();
        self.probe.topic.push_str(m.topic());
        self.probe.partition = m.partition();
        let offset = m.offset();
        let Some(state) = self.partitions.get_mut(&self.probe) else {
            // Fetched before a revoke took effect.
            return Ok(());
        };
        match state.accept(offset) {
            Accept::Skip => return Ok(()),
            Accept::Take => {}
            Accept::TakePastStart(expected) => {
                // Past a start inside the log: the records between were aborted
                // transactions or transaction markers (read_committed skips them), so
                // nothing is missing. A start outside the log was reported when found.
                self.metrics.offset_discontinuity("skipped");
                tracing::info!(partition = %self.probe, expected, first = offset, "the first record read is past the start offset (aborted transactions or transaction markers)");
            }
        }
        info.consumed.inc();
        self.summary.records_consumed += 1;
        let value = m.payload();
        self.stages.buffer.handled(
            &self.probe,
            info.data_type,
            offset,
            value.map_or(0, <[u8]>::len),
        );
        let rec = RawRecord {
            topic: info.name.clone(),
            partition: m.partition(),
            offset,
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key(),
            value: value.unwrap_or_default(),
        };
        let kept = self
            .stages
            .push(info.data_type, &rec, value.is_some(), &mut self.rejected)?;
        if !kept {
            info.tombstones.inc();
        }
        self.send_rejected();
        Ok(())
    }

    fn send_rejected(&mut self) {
        for r in self.rejected.drain(..) {
            self.summary.dead_letters += 1;
            self.dead_letters.send(r);
        }
    }

    fn flush_decoders(&mut self) -> Result<(), SinkError> {
        self.stages.flush(&mut self.rejected)?;
        self.send_rejected();
        Ok(())
    }

    /// Seals the buffer into a job for the committer, if there is anything to record.
    fn seal(&mut self, reason: SealReason) -> Result<(), SinkError> {
        self.flush_decoders()?;
        if !self.stages.buffer.has_progress() {
            return Ok(());
        }
        self.in_flight_since = self.in_flight_since.or(self.stages.buffer.oldest());
        let job = self.stages.buffer.seal(&mut self.partitions);
        let records = job.records;
        let dead_letters = self.dead_letters.take_pending();
        let id = self.commits.submit(job, dead_letters)?;
        tracing::debug!(job = id, reason = reason.as_str(), records, "sealed");
        Ok(())
    }

    fn handle_results(&mut self) -> Result<(), SinkError> {
        let Some(outcome) = self.commits.try_result()? else {
            return Ok(());
        };
        let outcome = outcome?;
        // The cycle's id on every line of its acknowledgement (as on its sealing and
        // commit lines).
        let _cycle = tracing::info_span!("acknowledge", job = outcome.id).entered();
        self.summary.commits += 1;
        self.in_flight_since = None;
        self.metrics.health().committed();
        let mut acknowledge = TopicPartitionList::new();
        let mut fenced = Vec::new();
        for table in &outcome.tables {
            self.summary.records_committed += table.records as u64;
            for (tp, range, result) in &table.partitions {
                let current = self
                    .partitions
                    .get(tp)
                    .is_some_and(|s| s.epoch() == range.epoch);
                if !current {
                    continue;
                }
                match result {
                    RangeOutcome::Committed => {
                        let _ = acknowledge.add_partition_offset(
                            &tp.topic,
                            tp.partition,
                            Offset::Offset(range.end),
                        );
                    }
                    RangeOutcome::Fenced { .. } => fenced.push(tp.clone()),
                }
            }
        }
        if acknowledge.count() > 0 {
            self.acknowledge(&acknowledge, CommitMode::Async);
            tracing::debug!(partitions = acknowledge.count(), "acknowledged");
        }
        for tp in fenced {
            self.reseek(&tp)?;
        }
        Ok(())
    }

    /// Commits offsets to the consumer group so lag tools see progress. The table already
    /// holds them; a failure here loses nothing.
    fn acknowledge(&self, tpl: &TopicPartitionList, mode: CommitMode) {
        match self.consumer.commit(tpl, mode) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "committing offsets to the consumer group failed"),
        }
    }

    /// Another writer advanced `tp`: drop what is buffered for it and read on from what the
    /// table recorded, once [`Resume`] has loaded it (and warmed its instruments up again).
    fn reseek(&mut self, tp: &TopicPartition) -> Result<(), SinkError> {
        self.flush_decoders()?;
        self.stages
            .buffer
            .drop_partitions(&HashSet::from([tp.clone()]))?;
        self.stages.sequence_check.forget([tp]);
        let epoch = self.new_epoch();
        let Some(state) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        *state = PartitionState::resuming(epoch);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(partition = %tp, error = %e, "pausing a fenced partition failed");
        }
        tracing::warn!(partition = %tp, "re-reading partition from the table's offset");
        self.resume.load(vec![ToResume {
            tp: tp.clone(),
            data_type: self.data_type(tp)?,
            epoch,
        }]);
        Ok(())
    }

    /// The data type of a partition's topic. Every partition the loop holds came from a
    /// subscribed topic; one that did not is a fault, never guessed at.
    fn data_type(&self, tp: &TopicPartition) -> Result<DataType, SinkError> {
        self.topics
            .get(&tp.topic)
            .map(|i| i.data_type)
            .ok_or_else(|| SinkError::UnknownTopic(tp.topic.clone()))
    }

    /// Seeks the partitions whose start [`Resume`] has found (those not reassigned or
    /// fenced again since), warms their instruments up and resumes them.
    fn handle_resumed(&mut self) -> Result<(), SinkError> {
        while let Some(loaded) = self.resume.try_loaded() {
            let Loaded {
                partitions,
                warm_up,
            } = loaded?;
            let mut ready = Vec::with_capacity(partitions.len());
            for r in partitions {
                let Some(state) = self.partitions.get_mut(&r.tp) else {
                    continue;
                };
                if state.epoch() != r.epoch || !state.is_resuming() {
                    continue;
                }
                if let Some(d) = r.discontinuity {
                    self.metrics.offset_discontinuity(d.kind());
                    tracing::error!(partition = %r.tp, start = ?r.start, discontinuity = ?d, "the partition's log does not hold the offset K2 resumes from (records deleted by retention before K2 read them, or the topic was recreated); see docs/operations.md");
                }
                *state = PartitionState::Reading(Reading {
                    epoch: r.epoch,
                    expected_recorded: r.start.recorded(),
                    position: Position::Start(r.start.expected_first()),
                });
                tracing::info!(partition = %r.tp, start = ?r.start, "resuming partition");
                self.consumer.seek(
                    &r.tp.topic,
                    r.tp.partition,
                    r.start.offset(),
                    Duration::from_secs(10),
                )?;
                ready.push(r.tp);
            }
            self.stages.sequence_check.apply_warm_up(&ready, warm_up);
            if !self.paused && !ready.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for tp in &ready {
                    tpl.add_partition(&tp.topic, tp.partition);
                }
                if let Err(e) = self.consumer.resume(&tpl) {
                    tracing::warn!(error = %e, "resuming partitions failed");
                }
            }
        }
        Ok(())
    }

    fn new_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn handle_rebalances(&mut self) -> Result<(), SinkError> {
        for event in self.consumer.context().take_events() {
            match event {
                RebalanceEvent::Revoked(revoked) => {
                    // Rows of revoked partitions are dropped: the new owner re-reads them
                    // from the table's offsets. A job already with the committer may still
                    // land; the new owner's offset check then fences its duplicate.
                    self.flush_decoders()?;
                    let set: HashSet<TopicPartition> = revoked.into_iter().collect();
                    self.stages.buffer.drop_partitions(&set)?;
                    for tp in &set {
                        self.partitions.remove(tp);
                    }
                    self.stages.sequence_check.forget(&set);
                }
                RebalanceEvent::Failed(e) => return Err(e.into()),
                RebalanceEvent::Assigned(assigned) => {
                    self.assigned_once = true;
                    self.metrics.health().joined();
                    let mut to_resume = Vec::with_capacity(assigned.len());
                    for a in assigned {
                        let epoch = self.new_epoch();
                        self.partitions
                            .insert(a.tp.clone(), PartitionState::resuming(epoch));
                        to_resume.push(ToResume {
                            tp: a.tp,
                            data_type: a.data_type,
                            epoch,
                        });
                    }
                    self.resume.load(to_resume);
                }
            }
        }
        Ok(())
    }

    fn set_paused(&mut self, paused: bool) {
        if self.paused == paused {
            return;
        }
        let assignment = self.consumer.assignment().unwrap_or_default();
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            // Partitions still waiting for their start stay paused.
            let mut ready = TopicPartitionList::new();
            for e in assignment.elements() {
                let tp = TopicPartition::new(e.topic(), e.partition());
                if self.partitions.get(&tp).is_some_and(|s| !s.is_resuming()) {
                    ready.add_partition(e.topic(), e.partition());
                }
            }
            self.consumer.resume(&ready)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "changing the pause state failed");
        }
        self.paused = paused;
        self.metrics.paused.set(i64::from(paused));
    }

    /// `--once`: every partition that had records at start is read up to its high
    /// watermark — by this member for the partitions it holds, by the group (what the
    /// tables recorded) for the others ([`GroupProgress`]).
    fn caught_up(&mut self) -> bool {
        if !self.assigned_once {
            return false;
        }
        let Some(once) = self.once.as_mut() else {
            return false;
        };
        let position = self.consumer.position().unwrap_or_default();
        let partitions = &self.partitions;
        once.caught_up(|tp| match partitions.get(tp) {
            None => Held::Elsewhere,
            Some(state) if state.is_resuming() => Held::Starting,
            Some(state) => {
                let fetched = match position
                    .find_partition(&tp.topic, tp.partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                };
                Held::ReadTo(state.next_offset().unwrap_or(0).max(fetched))
            }
        })
    }
}
