//! The sink's poll loop: consume → decode → check → buffer, then hand sealed jobs to the
//! committer task and acknowledge what it committed.
//!
//! The loop runs on its own thread (librdkafka's rebalance callbacks run inside `poll`
//! and block on the catalog). Exactly one commit job is in flight at a time; while it is,
//! the next one fills, and when that one is full too, every assigned partition is paused
//! until the committer catches up: memory stays within about twice the commit policy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iceberg::Catalog;
use prometheus_client::metrics::counter::Counter;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use k2_common::config::{CommitPolicy, K2Config};
use k2_common::schema::BuiltinSchema;
use k2_common::topic::{DataType, TopicName};

use std::num::NonZeroUsize;

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::RecordBatch;

use crate::buffer::{Buffer, CommitJob, PartitionState, SealReason};
use crate::commit::{CommitError, Committer, JobOutcome, RangeOutcome};
use crate::consumer::{self, RebalanceEvent, SinkConsumer, SinkContext};
use crate::dead_letters::{DeadLetterError, DeadLetters, PendingDeadLetters};
use crate::instrumentation::{LogBudget, Metrics, SequenceLabels};
use crate::offsets::{PartitionMap, TopicPartition};
use crate::sequence::{Instruments, Observation, SequenceKind, SequenceTracker};
use crate::serialization::{
    DECODE_BATCH_ROWS, DecodeErrorKind, RawRecord, Rejected, SchemaDecoder, SchemaSource,
    WriterSchemas, schema_id,
};
use crate::table::{
    EXCHANGE, EXCHANGE_TIMESTAMP, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, SYMBOL, TableError,
    TableLayout, ensure_table,
};
use crate::validation::{TimeWindow, shape, validate};
use rustc_hash::FxBuildHasher;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    #[error("decoding {data_type} records: {message}")]
    Decode {
        data_type: &'static str,
        message: String,
    },
    #[error("{0}")]
    Setup(String),
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
    pub sequence: std::collections::BTreeMap<&'static str, u64>,
}

struct TopicInfo {
    name: Arc<str>,
    data_type: DataType,
    consumed: Counter,
}

enum DecoderSlot {
    Ready(Box<SchemaDecoder>),
    /// The writer schema cannot be read as the table's schema: every record is rejected.
    Incompatible(String),
}

type JobMessage = (u64, CommitJob, PendingDeadLetters);

/// Everything the poll loop owns.
pub struct Sink {
    consumer: Arc<SinkConsumer>,
    catalog: Arc<dyn Catalog>,
    runtime: tokio::runtime::Handle,
    metrics: Metrics,
    policy: CommitPolicy,
    min_timestamp_micros: i64,
    max_clock_skew: Duration,
    topics: HashMap<String, TopicInfo, FxBuildHasher>,
    layouts: HashMap<DataType, TableLayout>,
    reader_schemas: HashMap<DataType, String>,
    writer_schemas: WriterSchemas,
    decoders: HashMap<(DataType, u32), DecoderSlot, FxBuildHasher>,
    buffer: Buffer,
    partitions: PartitionMap<PartitionState>,
    next_epoch: u64,
    dead_letters: DeadLetters,
    jobs: tokio::sync::mpsc::UnboundedSender<JobMessage>,
    results: mpsc::Receiver<Result<JobOutcome, CommitError>>,
    in_flight: Option<u64>,
    next_job: u64,
    paused: bool,
    watermarks: Option<HashMap<TopicPartition, i64>>,
    assigned_once: bool,
    probe: TopicPartition,
    summary: RunSummary,
    sequences: SequenceTracker,
    sequence_warmup: Duration,
    events_schema: arrow_schema::SchemaRef,
    instruments: Instruments,
    anomaly_log: LogBudget,
}

impl Sink {
    /// Connects everything: tables (created if absent), committer task, dead-letter
    /// producer, consumer subscribed to `topics`.
    pub fn start(
        config: &K2Config,
        catalog: Arc<dyn Catalog>,
        topics: &[TopicName],
        mode: Mode,
        timezones: std::collections::BTreeMap<String, chrono_tz::Tz>,
        runtime: tokio::runtime::Handle,
        metrics: Metrics,
    ) -> Result<Self, SinkError> {
        let data_types: HashSet<DataType> = topics.iter().map(TopicName::data_type).collect();
        let mut layouts = HashMap::new();
        let mut reader_schemas = HashMap::new();
        for &dt in &data_types {
            let builtin = BuiltinSchema::for_data_type(dt);
            let initial = TableLayout::new(dt, &builtin.parse())?;
            let table = runtime.block_on(ensure_table(catalog.as_ref(), &initial))?;
            // The table may have gained columns since the built-in schema: write to what
            // the table has now.
            let layout = TableLayout::from_schema(dt, table.metadata().current_schema().clone())?;
            layouts.insert(dt, layout);
            reader_schemas.insert(dt, builtin.text.to_string());
        }
        // Sequence anomalies have their own table, committed in the same cycle as the data.
        let events_layout = TableLayout::sequence_events()?;
        runtime.block_on(ensure_table(catalog.as_ref(), &events_layout))?;
        let source = match &config.schema_registry {
            Some(r) => SchemaSource::Registry(k2_common::registry::SchemaRegistryClient::new(r)),
            None => {
                let mut map = std::collections::BTreeMap::new();
                for (id, path) in config.schemas.ids() {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        SinkError::Setup(format!(
                            "schemas.ids.{id}: cannot read {}: {e}",
                            path.display()
                        ))
                    })?;
                    map.insert(id, text);
                }
                SchemaSource::Local(map)
            }
        };

        let writer_id = format!(
            "k2-sink-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let committer = Committer::new(
            catalog.clone(),
            &config.kafka.group_id,
            &writer_id,
            metrics.clone(),
        );
        let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel::<JobMessage>();
        let (results_tx, results_rx) = mpsc::channel();
        runtime.spawn(async move {
            while let Some((id, job, dead_letters)) = jobs_rx.recv().await {
                let result = committer.commit(id, job, dead_letters).await;
                if results_tx.send(result).is_err() {
                    break;
                }
            }
        });

        let client_properties = config.kafka.client_properties();
        let dead_letters = DeadLetters::new(&client_properties, &config.sink.dead_letter_topic)?;
        let context = SinkContext::new(runtime.clone(), catalog.clone(), metrics.clone());
        let topic_names: Vec<String> = topics.iter().map(ToString::to_string).collect();
        let consumer = consumer::subscribe(
            consumer::consumer_config(
                &client_properties,
                &config.kafka.group_id,
                config.kafka.group_protocol,
            ),
            context,
            &topic_names,
        )?;
        let watermarks = match mode {
            Mode::Continuous => None,
            Mode::Once => Some(consumer::high_watermarks(
                &consumer,
                &topic_names,
                Duration::from_secs(30),
            )?),
        };
        let topics = topics
            .iter()
            .map(|t| {
                let name = t.to_string();
                let info = TopicInfo {
                    name: Arc::from(name.as_str()),
                    data_type: t.data_type(),
                    consumed: metrics
                        .records_consumed
                        .get_or_create(&Metrics::topic_labels(&name))
                        .clone(),
                };
                (name, info)
            })
            .collect();
        tracing::info!(%writer_id, topics = topic_names.len(), group = %config.kafka.group_id, "sink started");
        Ok(Sink {
            consumer: Arc::new(consumer),
            catalog,
            runtime,
            metrics,
            policy: config.sink.commit.clone(),
            min_timestamp_micros: config.sink.min_timestamp.timestamp_micros(),
            max_clock_skew: config.sink.max_clock_skew,
            topics,
            layouts,
            reader_schemas,
            writer_schemas: WriterSchemas::new(source),
            decoders: HashMap::default(),
            buffer: Buffer::default(),
            partitions: PartitionMap::default(),
            next_epoch: 1,
            dead_letters,
            jobs: jobs_tx,
            results: results_rx,
            in_flight: None,
            next_job: 1,
            paused: false,
            watermarks,
            assigned_once: false,
            probe: TopicPartition::new(String::new(), 0),
            summary: RunSummary::default(),
            sequences: SequenceTracker::new(
                NonZeroUsize::new(config.sink.sequence_tracker_capacity.max(1)).expect("max(1)"),
            ),
            events_schema: events_layout.arrow_schema.clone(),
            sequence_warmup: config.sink.sequence_warmup,
            instruments: Instruments::new(timezones),
            anomaly_log: LogBudget::new(20, Duration::from_secs(10)),
        })
    }

    /// Runs until `stop` is set (then flushes, commits and leaves the group) or, with
    /// [`Mode::Once`], until caught up.
    pub fn run(mut self, stop: &AtomicBool) -> Result<RunSummary, SinkError> {
        let mut stopping = false;
        let mut last_check = Instant::now();
        loop {
            if !stopping && stop.load(Ordering::Relaxed) {
                tracing::info!("stopping: committing what is buffered");
                stopping = true;
                self.set_paused(true);
            }
            self.poll_batch()?;
            self.handle_rebalances()?;
            self.handle_results()?;

            let caught_up = self.watermarks.is_some()
                && last_check.elapsed() >= Duration::from_millis(100)
                && {
                    last_check = Instant::now();
                    self.caught_up()
                };
            let reason = if stopping {
                Some(SealReason::Shutdown)
            } else if caught_up {
                Some(SealReason::CaughtUp)
            } else {
                self.buffer.due(&self.policy)
            };
            if let Some(reason) = reason {
                if self.in_flight.is_none() {
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
                .set(self.buffer.records() as i64);
            self.metrics.buffered_bytes.set(self.buffer.bytes() as i64);

            let idle = self.in_flight.is_none() && !self.buffer.has_progress();
            if idle && (stopping || (caught_up && self.watermarks.is_some())) {
                break;
            }
        }
        self.close();
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
            sequence = ?self.summary.sequence,
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
        if state.next_offset.is_some_and(|next| offset < next) {
            // Prefetched before a re-seek: already recorded, or about to be re-read.
            return Ok(());
        }
        state.next_offset = Some(offset + 1);
        info.consumed.inc();
        self.summary.records_consumed += 1;
        let value = m.payload();
        self.buffer
            .handled(&self.probe, offset, value.map_or(0, <[u8]>::len));
        let rec = RawRecord {
            topic: info.name.clone(),
            partition: m.partition(),
            offset,
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key(),
            value: value.unwrap_or_default(),
        };
        let data_type = info.data_type;
        let id = match schema_id(value) {
            Ok(id) => id,
            Err((kind, message)) => {
                self.reject(&rec, value.is_some(), kind.as_str(), message);
                return Ok(());
            }
        };
        if !self.decoders.contains_key(&(data_type, id)) {
            let slot = self.new_decoder(data_type, id)?;
            match slot {
                Some(slot) => {
                    self.decoders.insert((data_type, id), slot);
                }
                None => {
                    let message = format!("schema id {id} is not known to the schema source");
                    self.reject(
                        &rec,
                        value.is_some(),
                        DecodeErrorKind::UnknownSchemaId.as_str(),
                        message,
                    );
                    return Ok(());
                }
            }
        }
        let full = match self
            .decoders
            .get_mut(&(data_type, id))
            .expect("inserted above")
        {
            DecoderSlot::Incompatible(why) => {
                let message =
                    format!("writer schema {id} cannot be read as the table's schema: {why}");
                self.reject(
                    &rec,
                    value.is_some(),
                    DecodeErrorKind::IncompatibleSchema.as_str(),
                    message,
                );
                return Ok(());
            }
            DecoderSlot::Ready(decoder) => match decoder.push(&rec) {
                Ok(()) => decoder.is_full(),
                Err(message) => {
                    self.reject(
                        &rec,
                        value.is_some(),
                        DecodeErrorKind::Undecodable.as_str(),
                        message,
                    );
                    return Ok(());
                }
            },
        };
        if full {
            self.flush_decoder(data_type, id)?;
        }
        Ok(())
    }

    /// A decoder for this writer schema id, `None` if the id is unknown. Blocks while the
    /// registry is unreachable: skipping ahead would lose the record's place.
    fn new_decoder(
        &mut self,
        data_type: DataType,
        id: u32,
    ) -> Result<Option<DecoderSlot>, SinkError> {
        let Some(writer) = self.writer_schema(id) else {
            return Ok(None);
        };
        if let Some(refused) = self.evolve(data_type, id, &writer)? {
            return Ok(Some(refused));
        }
        Ok(Some(self.build_decoder(data_type, id, &writer)))
    }

    fn writer_schema(&mut self, id: u32) -> Option<Arc<str>> {
        let mut delays = k2_common::retry::delays();
        loop {
            match self.runtime.block_on(self.writer_schemas.get(id)) {
                Ok(w) => return w,
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(schema_id = id, error = %e, retry_in = ?delay, "schema registry lookup failed; retrying");
                    std::thread::sleep(delay);
                }
            }
        }
    }

    fn build_decoder(&self, data_type: DataType, id: u32, writer: &str) -> DecoderSlot {
        let reader = &self.reader_schemas[&data_type];
        match SchemaDecoder::new(id, writer, reader, DECODE_BATCH_ROWS) {
            Ok(d) => {
                tracing::info!(
                    schema_id = id,
                    table = data_type.table_name(),
                    "new writer schema"
                );
                DecoderSlot::Ready(Box::new(d))
            }
            Err(why) => {
                tracing::error!(schema_id = id, table = data_type.table_name(), error = %why, "writer schema incompatible with the table");
                DecoderSlot::Incompatible(why)
            }
        }
    }

    /// A writer schema with fields the current reader schema lacks is a newer version of
    /// the data type's schema. If it can read everything written before (BACKWARD), the
    /// table gains the new fields as optional columns (rows written earlier read null),
    /// it becomes the reader schema, and every decoder of the data type is rebuilt: no
    /// restart. Otherwise its records are refused (the returned slot).
    fn evolve(
        &mut self,
        data_type: DataType,
        id: u32,
        writer: &str,
    ) -> Result<Option<DecoderSlot>, SinkError> {
        let reader = self.reader_schemas[&data_type].clone();
        let added = added_fields(&reader, writer);
        if added.is_empty() {
            return Ok(None);
        }
        if let Err(e) =
            k2_common::schema::check_backward("the table's current schema", &reader, writer)
        {
            let why = format!("adds fields {added:?} but cannot read earlier records: {e}");
            tracing::error!(schema_id = id, table = data_type.table_name(), error = %why, "writer schema refused");
            return Ok(Some(DecoderSlot::Incompatible(why)));
        }
        let avro = match apache_avro::Schema::parse_str(writer) {
            Ok(a) => a,
            Err(e) => return Ok(Some(DecoderSlot::Incompatible(e.to_string()))),
        };
        tracing::info!(schema_id = id, table = data_type.table_name(), fields = ?added, "newer writer schema: evolving the table");
        // Rows decoded so far go to the buffer in the old layout; the writer pads them.
        self.flush_decoders()?;
        let table = self.runtime.block_on(crate::table::evolve_table(
            self.catalog.as_ref(),
            data_type,
            &avro,
        ))?;
        self.layouts.insert(
            data_type,
            TableLayout::from_schema(data_type, table.metadata().current_schema().clone())?,
        );
        self.reader_schemas.insert(data_type, writer.to_string());
        let ids: Vec<u32> = self
            .decoders
            .keys()
            .filter(|(dt, _)| *dt == data_type)
            .map(|(_, id)| *id)
            .collect();
        for other in ids {
            if let Some(w) = self.writer_schema(other) {
                let slot = self.build_decoder(data_type, other, &w);
                self.decoders.insert((data_type, other), slot);
            }
        }
        Ok(None)
    }

    fn reject(
        &mut self,
        rec: &RawRecord<'_>,
        has_value: bool,
        kind: &'static str,
        message: String,
    ) {
        let rejected = Rejected::raw(rec, has_value, kind, message);
        self.summary.dead_letters += 1;
        self.dead_letters.send(rejected, &self.metrics);
    }

    /// Moves one decoder's rows through validation into the buffer.
    fn flush_decoder(&mut self, data_type: DataType, id: u32) -> Result<(), SinkError> {
        let Some(DecoderSlot::Ready(decoder)) = self.decoders.get_mut(&(data_type, id)) else {
            return Ok(());
        };
        let (decoded, mut rejected) = decoder.flush().map_err(|message| SinkError::Decode {
            data_type: data_type.table_name(),
            message,
        })?;
        if let Some(decoded) = decoded {
            let now = chrono::Utc::now();
            let window = TimeWindow {
                min_micros: self.min_timestamp_micros,
                max_micros: (now + self.max_clock_skew).timestamp_micros(),
            };
            let violations = validate(data_type, &decoded, window);
            let layout = &self.layouts[&data_type];
            let (batch, invalid) = shape(layout, decoded, violations, now.timestamp_micros())
                .map_err(|e| SinkError::Decode {
                    data_type: data_type.table_name(),
                    message: e.to_string(),
                })?;
            rejected.extend(invalid);
            if let Some(batch) = batch {
                if data_type != DataType::ReferenceData {
                    self.check_sequences(data_type, &batch);
                }
                self.buffer.add(data_type, batch);
            }
        }
        for r in rejected {
            self.summary.dead_letters += 1;
            self.dead_letters.send(r, &self.metrics);
        }
        Ok(())
    }

    /// Classifies every row's sequence number; counts, and logs anomalies at a bounded
    /// rate. Never rejects a row.
    fn check_sequences(&mut self, data_type: DataType, batch: &RecordBatch) {
        let (
            Some(exchange),
            Some(symbol),
            Some(seq),
            Some(ts),
            Some(topic),
            Some(partition),
            Some(offset),
        ) = (
            batch
                .column_by_name(EXCHANGE)
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name(SYMBOL)
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name("sequence_number")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            batch
                .column_by_name(EXCHANGE_TIMESTAMP)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>()),
            batch
                .column_by_name(KAFKA_TOPIC)
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name(KAFKA_PARTITION)
                .and_then(|c| c.as_primitive_opt::<Int32Type>()),
            batch
                .column_by_name(KAFKA_OFFSET)
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        )
        else {
            return;
        };
        let evictions_before = self.sequences.evictions();
        // Keyed by the topic as the batch holds it: no allocation per row.
        let mut counts: HashMap<(&str, &'static str), u64, FxBuildHasher> = HashMap::default();
        let mut events = SequenceEventRows::default();
        for i in 0..batch.num_rows() {
            let ex = exchange.value(i);
            let (key, day) = self
                .instruments
                .key(data_type, ex, symbol.value(i), ts.value(i));
            let actual = seq.value(i);
            let o = self
                .sequences
                .observe(&key, actual, day, partition.value(i));
            *counts.entry((topic.value(i), o.kind.as_str())).or_default() += 1;
            if let SequenceKind::Gap { size } = o.kind {
                self.metrics
                    .sequence_gap_size
                    .get_or_create(&Metrics::topic_labels(topic.value(i)))
                    .observe(size as f64);
            }
            if o.kind.is_event() {
                events.push(
                    ex,
                    data_type,
                    symbol.value(i),
                    o,
                    actual,
                    ts.value(i),
                    (topic.value(i), partition.value(i), offset.value(i)),
                );
            }
            if o.kind.is_event() && self.anomaly_log.allow() {
                tracing::warn!(
                    kind = o.kind.as_str(),
                    exchange = ex,
                    symbol = symbol.value(i),
                    data_type = data_type.as_str(),
                    expected = ?o.expected,
                    actual,
                    gap_size = match o.kind { SequenceKind::Gap { size } => size, _ => 0 },
                    topic = topic.value(i),
                    partition = partition.value(i),
                    offset = offset.value(i),
                    "sequence anomaly"
                );
            }
        }
        for ((topic, kind), n) in counts {
            *self.summary.sequence.entry(kind).or_default() += n;
            let t = Metrics::topic_labels(topic);
            self.metrics
                .sequence_events
                .get_or_create(&SequenceLabels {
                    asset_class: t.asset_class,
                    data_type: t.data_type,
                    exchange: t.exchange,
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
        if let Some(rows) = events.finish(&self.events_schema) {
            self.buffer.add_sequence_events(rows);
        }
        self.metrics
            .sequence_tracker_evictions
            .inc_by(self.sequences.evictions() - evictions_before);
        self.metrics
            .sequence_tracker_entries
            .set(self.sequences.len() as i64);
    }

    /// Learns the last committed sequence number of the instruments of newly assigned
    /// partitions, so a gap spanning a restart or a hand-over is still seen. Failing that
    /// (catalog down) the instruments start as `first_seen`; ingestion goes on.
    fn warm_up_sequences(&mut self, assigned: &TopicPartitionList) {
        let started = Instant::now();
        let mut by_type: HashMap<DataType, HashSet<TopicPartition>> = HashMap::new();
        let all: Vec<TopicPartition> = assigned
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        self.forget_sequences(&all);
        for e in assigned.elements() {
            let tp = TopicPartition::new(e.topic(), e.partition());
            if let Some(info) = self.topics.get(e.topic())
                && info.data_type != DataType::ReferenceData
            {
                by_type.entry(info.data_type).or_default().insert(tp);
            }
        }
        let mut seeded = 0;
        for (data_type, partitions) in by_type {
            let window = self.sequence_warmup;
            let result = self.runtime.block_on(async {
                let table = self
                    .catalog
                    .load_table(&crate::table::table_ident(data_type))
                    .await?;
                crate::sequence::last_committed(&table, &partitions, window).await
            });
            match result {
                Ok(rows) => {
                    for (ex, symbol, seq, ts, partition) in rows {
                        let (key, day) = self.instruments.key(data_type, &ex, &symbol, ts);
                        self.sequences.seed(key, seq, day, partition);
                        seeded += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(table = data_type.table_name(), error = %e, "sequence warm-up failed; instruments start as first_seen")
                }
            }
        }
        tracing::info!(
            instruments = seeded,
            seconds = started.elapsed().as_secs_f64(),
            "sequence tracker warmed up from the tables"
        );
    }

    /// The instruments of these partitions are about to be re-read: forget their state
    /// (one pass over the tracker for the whole set).
    fn forget_sequences<'a>(&mut self, partitions: impl IntoIterator<Item = &'a TopicPartition>) {
        let set: HashSet<(String, DataType, i32)> = partitions
            .into_iter()
            .filter_map(|tp| {
                let t = tp.topic.parse::<TopicName>().ok()?;
                Some((t.exchange().to_string(), t.data_type(), tp.partition))
            })
            .collect();
        self.sequences.forget_partitions(&set);
    }

    fn flush_decoders(&mut self) -> Result<(), SinkError> {
        let keys: Vec<(DataType, u32)> = self
            .decoders
            .iter()
            .filter(|(_, slot)| matches!(slot, DecoderSlot::Ready(d) if d.pending_rows() > 0))
            .map(|(k, _)| *k)
            .collect();
        for (dt, id) in keys {
            self.flush_decoder(dt, id)?;
        }
        Ok(())
    }

    /// Seals the buffer into a job for the committer, if there is anything to record.
    fn seal(&mut self, reason: SealReason) -> Result<(), SinkError> {
        self.flush_decoders()?;
        if !self.buffer.has_progress() {
            return Ok(());
        }
        let topics = &self.topics;
        let job = self.buffer.seal(
            |tp| {
                topics
                    .get(&tp.topic)
                    .map_or(DataType::Trades, |i| i.data_type)
            },
            &mut self.partitions,
        );
        let id = self.next_job;
        self.next_job += 1;
        tracing::debug!(
            job = id,
            reason = reason.as_str(),
            records = job.records,
            "sealed"
        );
        let dead_letters = self.dead_letters.take_pending();
        self.jobs
            .send((id, job, dead_letters))
            .map_err(|_| SinkError::Setup("the committer task ended".into()))?;
        self.in_flight = Some(id);
        Ok(())
    }

    fn handle_results(&mut self) -> Result<(), SinkError> {
        let outcome = match self.results.try_recv() {
            Ok(r) => r?,
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(SinkError::Setup("the committer task ended".into()));
            }
        };
        self.in_flight = None;
        self.summary.commits += 1;
        let mut acknowledge = TopicPartitionList::new();
        let mut fenced = Vec::new();
        for table in &outcome.tables {
            self.summary.records_committed += table.records as u64;
            for (tp, range, result) in &table.partitions {
                let current = self
                    .partitions
                    .get(tp)
                    .is_some_and(|s| s.epoch == range.epoch);
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
                    RangeOutcome::Fenced { recorded } => fenced.push((tp.clone(), *recorded)),
                }
            }
        }
        if acknowledge.count() > 0 {
            self.acknowledge(&acknowledge, CommitMode::Async);
        }
        for (tp, recorded) in fenced {
            self.reseek(&tp, recorded)?;
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
    /// table recorded.
    fn reseek(&mut self, tp: &TopicPartition, recorded: Option<i64>) -> Result<(), SinkError> {
        self.flush_decoders()?;
        self.buffer.drop_partitions(&HashSet::from([tp.clone()]));
        self.forget_sequences([tp]);
        let epoch = self.new_epoch();
        let Some(state) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        state.epoch = epoch;
        state.expected_recorded = recorded;
        state.next_offset = recorded;
        let offset = recorded.map_or(Offset::Beginning, Offset::Offset);
        tracing::warn!(partition = %tp, ?offset, "re-reading partition from the table's offset");
        self.consumer
            .seek(&tp.topic, tp.partition, offset, Duration::from_secs(10))?;
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
                    self.buffer.drop_partitions(&set);
                    for tp in &set {
                        self.partitions.remove(tp);
                    }
                    self.forget_sequences(&set);
                }
                RebalanceEvent::Assigned(assigned) => {
                    self.assigned_once = true;
                    let mut tpl = TopicPartitionList::new();
                    for a in assigned {
                        let epoch = self.new_epoch();
                        tpl.add_partition(&a.tp.topic, a.tp.partition);
                        self.partitions.insert(
                            a.tp,
                            PartitionState {
                                expected_recorded: a.recorded,
                                epoch,
                                next_offset: a.recorded,
                            },
                        );
                    }
                    if self.paused && tpl.count() > 0 {
                        let _ = self.consumer.pause(&tpl);
                    }
                    self.warm_up_sequences(&tpl);
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
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "changing the pause state failed");
        }
        self.paused = paused;
        self.metrics.paused.set(i64::from(paused));
    }

    /// `--once`: every partition that had records at start has been read up to its high
    /// watermark by this sink. A partition another member still holds (a killed sink the
    /// coordinator has not expired yet) is not caught up: `--once` waits for it.
    fn caught_up(&self) -> bool {
        let Some(watermarks) = &self.watermarks else {
            return false;
        };
        if !self.assigned_once {
            return false;
        }
        let position = self.consumer.position().unwrap_or_default();
        watermarks.iter().all(|(tp, &high)| {
            if high == 0 {
                return true;
            }
            let Some(state) = self.partitions.get(tp) else {
                return false;
            };
            let fetched = match position
                .find_partition(&tp.topic, tp.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            state.next_offset.unwrap_or(0).max(fetched) >= high
        })
    }
}

/// Rows of `sequence_events` being collected for one decoded batch.
#[derive(Default)]
struct SequenceEventRows {
    exchange: Vec<String>,
    data_type: Vec<&'static str>,
    symbol: Vec<String>,
    kind: Vec<&'static str>,
    expected: Vec<Option<i64>>,
    actual: Vec<i64>,
    gap_size: Vec<Option<i64>>,
    exchange_timestamp: Vec<i64>,
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl SequenceEventRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        exchange: &str,
        data_type: DataType,
        symbol: &str,
        o: Observation,
        actual: i64,
        ts: i64,
        (topic, partition, offset): (&str, i32, i64),
    ) {
        self.exchange.push(exchange.to_string());
        self.data_type.push(data_type.as_str());
        self.symbol.push(symbol.to_string());
        self.kind.push(o.kind.as_str());
        self.expected.push(o.expected);
        self.actual.push(actual);
        self.gap_size.push(match o.kind {
            SequenceKind::Gap { size } => Some(size),
            _ => None,
        });
        self.exchange_timestamp.push(ts);
        self.topic.push(topic.to_string());
        self.partition.push(partition);
        self.offset.push(offset);
    }

    fn finish(self, schema: &arrow_schema::SchemaRef) -> Option<RecordBatch> {
        use arrow_array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
        if self.actual.is_empty() {
            return None;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let n = self.actual.len();
        let ts = |v: Vec<i64>| -> arrow_array::ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("+00:00"))
        };
        let columns: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(StringArray::from(self.exchange)),
            Arc::new(StringArray::from(self.data_type)),
            Arc::new(StringArray::from(self.symbol)),
            Arc::new(StringArray::from(self.kind)),
            Arc::new(Int64Array::from(self.expected)),
            Arc::new(Int64Array::from(self.actual)),
            Arc::new(Int64Array::from(self.gap_size)),
            ts(self.exchange_timestamp),
            Arc::new(StringArray::from(self.topic)),
            Arc::new(Int32Array::from(self.partition)),
            Arc::new(Int64Array::from(self.offset)),
            ts(vec![now; n]),
        ];
        match RecordBatch::try_new(schema.clone(), columns) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "building sequence event rows failed");
                None
            }
        }
    }
}

/// Names of top-level fields in `writer` that `reader` does not have.
fn added_fields(reader: &str, writer: &str) -> Vec<String> {
    let names = |text: &str| -> Vec<String> {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v["fields"].as_array().map(|fs| {
                    fs.iter()
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let known = names(reader);
    names(writer)
        .into_iter()
        .filter(|n| !known.contains(n))
        .collect()
}

/// The configured subscription narrowed by command-line filters; `None` if they exclude
/// everything the configuration allows.
pub fn narrow(
    base: &k2_common::subscription::SubscriptionFilter,
    exchanges: &[String],
    asset_classes: &[String],
    data_types: &[DataType],
) -> Option<k2_common::subscription::SubscriptionFilter> {
    fn intersect<T: Ord + Clone>(
        base: &std::collections::BTreeSet<T>,
        narrow: &[T],
    ) -> Option<std::collections::BTreeSet<T>> {
        if narrow.is_empty() {
            Some(base.clone())
        } else if base.is_empty() {
            Some(narrow.iter().cloned().collect())
        } else {
            let both: std::collections::BTreeSet<T> = narrow
                .iter()
                .filter(|x| base.contains(x))
                .cloned()
                .collect();
            (!both.is_empty()).then_some(both)
        }
    }
    let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    Some(k2_common::subscription::SubscriptionFilter {
        exchanges: intersect(&base.exchanges, &lower(exchanges))?,
        asset_classes: intersect(&base.asset_classes, &lower(asset_classes))?,
        data_types: intersect(&base.data_types, data_types)?,
    })
}
