//! Start: connects the stages to their tables, the committer, the dead-letter producer and
//! the consumer, and hands the loop its first state.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;

use k2_common::config::K2Config;
use k2_common::data_type::DataType;
use k2_common::schema::BuiltinSchema;
use k2_common::topic::TopicName;

use super::{Mode, RunSummary, Sink, SinkError, TopicInfo};
use crate::check::{SequenceCheck, SequenceCheckConfig};
use crate::commit::{CommitTask, Committer};
use crate::consumer::{self, SinkContext};
use crate::dead_letters::DeadLetters;
use crate::decode::Decoding;
use crate::decode::avro::SchemaSource;
use crate::instrumentation::Metrics;
use crate::job::PartitionMap;
use crate::once::GroupProgress;
use crate::resume::Resume;
use crate::stages::Stages;
use crate::validation::Validation;
use k2_table::commit::MetadataCommitter;
use k2_table::layout::{TableLayout, ensure_table};
use k2_table::offsets::TopicPartition;
use k2_table::retention;

impl Sink {
    /// Connects everything: tables (created if absent), committer task, dead-letter
    /// producer, consumer subscribed to `topics`.
    pub fn start(
        config: &K2Config,
        catalog: Arc<dyn Catalog>,
        topics: &[TopicName],
        mode: Mode,
        timezones: BTreeMap<String, chrono_tz::Tz>,
        runtime: tokio::runtime::Handle,
        metrics: Metrics,
    ) -> Result<Self, SinkError> {
        let mut decoding = Decoding::new(
            SchemaSource::from_config(config).map_err(SinkError::Setup)?,
            catalog.clone(),
            runtime.clone(),
        );
        let data_types: HashSet<DataType> = topics.iter().map(TopicName::data_type).collect();
        for &dt in &data_types {
            let builtin = BuiltinSchema::for_data_type(dt);
            let initial = TableLayout::new(dt, &builtin.parse())?;
            let table = runtime.block_on(ensure_table(catalog.as_ref(), &initial))?;
            // The table may have gained columns since the built-in schema: write to what
            // the table has now.
            let layout = TableLayout::from_schema(dt, table.metadata().current_schema().clone())?;
            decoding.add_table(dt, layout, builtin.text);
        }
        // Sequence anomalies have their own table, committed in the same cycle as the data.
        let events_layout = TableLayout::sequence_events()?;
        runtime.block_on(ensure_table(catalog.as_ref(), &events_layout))?;

        let writer_id = format!(
            "k2-sink-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let target = runtime
            .block_on(MetadataCommitter::connect(config))
            .map_err(|e| {
                SinkError::Setup(format!(
                    "connecting to the catalog to commit: {}",
                    k2_common::report::chain(&e)
                ))
            })?;
        let committer = Committer::new(
            catalog.clone(),
            target,
            &config.kafka.group_id,
            &writer_id,
            metrics.clone(),
        )
        .with_max_file_age(config.maintenance.max_uncommitted_file_age())
        .with_retention(retention::Policy::new(&config.maintenance));
        let commits = CommitTask::spawn(committer, &runtime);

        let client_properties = config.kafka.client_properties();
        let dead_letters = DeadLetters::new(
            &client_properties,
            &config.sink.dead_letter_topic,
            metrics.clone(),
        )?;
        let context = SinkContext::new(
            runtime.clone(),
            catalog.clone(),
            metrics.clone(),
            consumer::assign_deadline(&client_properties),
        );
        let topic_names: Vec<String> = topics.iter().map(ToString::to_string).collect();
        let consumer = Arc::new(consumer::subscribe(
            consumer::consumer_config(
                &client_properties,
                &config.kafka.group_id,
                config.kafka.group_protocol,
            ),
            context,
            &topic_names,
        )?);
        let once = match mode {
            Mode::Continuous => None,
            Mode::Once => Some(GroupProgress::new(
                consumer::high_watermarks(&consumer, &topic_names, Duration::from_secs(30))?,
                topics
                    .iter()
                    .map(|t| (t.to_string(), t.data_type()))
                    .collect(),
                catalog.clone(),
                runtime.clone(),
                metrics.clone(),
            )),
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
                    tombstones: metrics
                        .tombstones
                        .get_or_create(&Metrics::topic_labels(&name))
                        .clone(),
                };
                (name, info)
            })
            .collect();
        let sequence_check = SequenceCheck::new(
            SequenceCheckConfig {
                capacity: NonZeroUsize::new(config.sink.sequence_tracker_capacity.max(1))
                    .expect("max(1)"),
                timezones,
                warmup_window: config.sink.sequence_warmup,
            },
            events_layout.arrow_schema.clone(),
            metrics.clone(),
        );
        let resume = Resume::new(
            catalog,
            consumer.clone(),
            runtime,
            metrics.clone(),
            sequence_check.warmup_window(),
        );
        tracing::info!(%writer_id, topics = topic_names.len(), group = %config.kafka.group_id, "sink started");
        Ok(Sink {
            consumer,
            resume,
            metrics,
            policy: config.sink.commit.clone(),
            topics,
            stages: Stages::new(
                decoding,
                Validation {
                    min_timestamp_micros: config.sink.min_timestamp.timestamp_micros(),
                    max_clock_skew: config.sink.max_clock_skew,
                },
                sequence_check,
            ),
            rejected: Vec::new(),
            partitions: PartitionMap::default(),
            next_epoch: 1,
            dead_letters,
            commits,
            paused: false,
            once,
            assigned_once: false,
            probe: TopicPartition::new(String::new(), 0),
            summary: RunSummary::default(),
            in_flight_since: None,
        })
    }
}
