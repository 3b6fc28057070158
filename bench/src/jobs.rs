//! The sink's own stages fed from memory: synthetic Confluent-framed Avro records (as the
//! broker would hand them over) → decode → validate → sequence check → buffer → a commit
//! job for the sink's committer. Shared by `k2-bench pipeline` and `k2-bench history`.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;

use k2_common::config::K2Config;
use k2_common::records::WireEncoder;
use k2_common::schema::BuiltinSchema;
use k2_common::topic::DataType;
use k2_feed::event::Event;
use k2_feed::synthetic::{ExchangeSpec, SyntheticMarket};
use k2_sink::check::{SequenceCheck, SequenceCheckConfig};
use k2_sink::decode::{Decoding, RawRecord, Rejected, SchemaSource};
use k2_sink::instrumentation::Metrics;
use k2_sink::job::{CommitJob, PartitionMap};
use k2_sink::partition::{PartitionState, Position, Reading};
use k2_sink::stages::Stages;
use k2_sink::validation::Validation;
use k2_table::layout::{TableLayout, ensure_table};
use k2_table::offsets::TopicPartition;

/// One record as the broker would hand it over.
pub(crate) struct Rec {
    pub topic: u16,
    pub partition: i32,
    pub offset: i64,
    pub key: std::ops::Range<usize>,
    pub value: std::ops::Range<usize>,
}

/// Generated records: one byte arena, topic names, data type per topic.
#[derive(Default)]
pub(crate) struct Records {
    pub bytes: Vec<u8>,
    pub recs: Vec<Rec>,
}

pub(crate) struct Generator {
    market: SyntheticMarket,
    encoders: HashMap<DataType, WireEncoder>,
    topics: Vec<(Arc<str>, DataType)>,
    topic_index: HashMap<(String, DataType), u16>,
    next_offset: HashMap<(u16, i32), i64>,
    partitions: i32,
    clock: i64,
    spacing: i64,
    trades_only: bool,
}

impl Generator {
    /// A market of `symbols` instruments per exchange whose records land on `partitions`
    /// partitions per topic, the first at `start_micros` and each `spacing_micros` later.
    pub fn new(
        symbols: usize,
        partitions: i32,
        start_micros: i64,
        spacing_micros: i64,
        trades_only: bool,
    ) -> Self {
        let exchanges = ExchangeSpec::shipped();
        let mut topics = Vec::new();
        let mut topic_index = HashMap::new();
        for ex in &exchanges {
            for dt in DataType::ALL {
                let name = format!("market.{}.{}.{}", ex.asset_class, dt.as_str(), ex.code);
                topic_index.insert((ex.code.clone(), dt), topics.len() as u16);
                topics.push((Arc::<str>::from(name), dt));
            }
        }
        Generator {
            market: SyntheticMarket::new(exchanges, symbols, 7, 1),
            encoders: DataType::ALL
                .map(|dt| (dt, WireEncoder::new(dt, schema_id(dt))))
                .into(),
            topics,
            topic_index,
            next_offset: HashMap::new(),
            partitions,
            clock: start_micros - spacing_micros,
            spacing: spacing_micros,
            trades_only,
        }
    }

    /// `n` records into `out` (emptied first).
    pub fn fill(&mut self, out: &mut Records, n: usize) -> anyhow::Result<()> {
        out.bytes.clear();
        out.recs.clear();
        while out.recs.len() < n {
            // The clock moves only for records produced, so `spacing` is what separates
            // consecutive records whatever is filtered out.
            let event = self.market.next_event(self.clock + self.spacing);
            let (dt, value) = match &event {
                Event::Trade(t) => (DataType::Trades, t.to_avro()),
                Event::Quote(q) => (DataType::Quotes, q.to_avro()),
                Event::Reference(r) => (DataType::ReferenceData, r.to_avro()),
                Event::Raw { .. } => continue,
            };
            if self.trades_only && dt != DataType::Trades {
                continue;
            }
            self.clock += self.spacing;
            let topic = self.topic_index[&(event.exchange().to_string(), dt)];
            let symbol = event.symbol();
            let partition = (symbol
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31) + b as u32)
                % self.partitions as u32) as i32;
            let offset = self.next_offset.entry((topic, partition)).or_insert(0);
            let key_start = out.bytes.len();
            out.bytes.extend_from_slice(symbol.as_bytes());
            let value_start = out.bytes.len();
            out.bytes.extend(self.encoders[&dt].encode(value)?);
            out.recs.push(Rec {
                topic,
                partition,
                offset: *offset,
                key: key_start..value_start,
                value: value_start..out.bytes.len(),
            });
            *offset += 1;
        }
        Ok(())
    }
}

/// The sink's own stages (decode → validate → sequence check → buffer) for one job's
/// records; the job to commit.
pub(crate) struct Pipeline {
    pub stages: Stages,
    partitions: PartitionMap<PartitionState>,
    rejected: Vec<Rejected>,
    /// Records the stages rejected (a benchmark's data must have none).
    pub dead: usize,
}

impl Pipeline {
    /// The commit job of `records`, through the sink's stages.
    pub fn job(&mut self, generator: &Generator, records: &Records) -> anyhow::Result<CommitJob> {
        let mut probe = TopicPartition::new(String::new(), 0);
        for r in &records.recs {
            let (topic, dt) = &generator.topics[r.topic as usize];
            let rec = RawRecord {
                topic: topic.clone(),
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: None,
                key: Some(&records.bytes[r.key.clone()]),
                value: &records.bytes[r.value.clone()],
            };
            probe.topic.clear();
            probe.topic.push_str(topic);
            probe.partition = r.partition;
            if !self.partitions.contains_key(&probe) {
                // Read from the beginning, as a sink does a partition no table recorded.
                self.partitions.insert(
                    probe.clone(),
                    PartitionState::Reading(Reading {
                        epoch: 1,
                        expected_recorded: None,
                        position: Position::Start(None),
                    }),
                );
            }
            self.stages
                .buffer
                .handled(&probe, *dt, r.offset, rec.value.len());
            self.stages.push(*dt, &rec, true, &mut self.rejected)?;
        }
        self.stages.flush(&mut self.rejected)?;
        self.dead += self.rejected.len();
        self.rejected.clear();
        let job = self.stages.buffer.seal(&mut self.partitions);
        Ok(job)
    }
}

/// The writer schema id the generated payloads carry.
pub(crate) fn schema_id(data_type: DataType) -> u32 {
    match data_type {
        DataType::Trades => 1,
        DataType::Quotes => 2,
        DataType::ReferenceData => 3,
    }
}

/// An embedded-default configuration whose catalog and warehouse are in `dir`.
pub(crate) fn config_in(dir: &std::path::Path) -> anyhow::Result<K2Config> {
    let topics = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/topics.yaml");
    let file = dir.join("k2.toml");
    std::fs::write(
        &file,
        format!(
            "state_dir = \".\"\ntopics_file = \"{}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n",
            topics.display()
        ),
    )?;
    Ok(K2Config::load(&file)?)
}

impl Pipeline {
    /// The sink's stages over `catalog`'s tables (created when absent), and their metrics.
    pub fn new(
        catalog: &Arc<dyn Catalog>,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<(Self, Metrics)> {
        let mut ids = BTreeMap::new();
        let mut tables = Vec::new();
        for dt in DataType::ALL {
            let builtin = BuiltinSchema::for_data_type(dt);
            let layout = TableLayout::new(dt, &builtin.parse())?;
            rt.block_on(ensure_table(catalog.as_ref(), &layout))?;
            ids.insert(schema_id(dt), builtin.text.to_string());
            tables.push((dt, layout, builtin.text));
        }
        let mut decoding = Decoding::new(
            SchemaSource::Local(ids),
            catalog.clone(),
            rt.handle().clone(),
        );
        for (dt, layout, reader) in tables {
            decoding.add_table(dt, layout, reader);
        }
        let events = TableLayout::sequence_events()?;
        rt.block_on(ensure_table(catalog.as_ref(), &events))?;
        let metrics = Metrics::new();
        let pipeline = Pipeline {
            stages: Stages::new(
                decoding,
                Validation {
                    min_timestamp_micros: 0,
                    max_clock_skew: Duration::from_secs(86_400),
                },
                SequenceCheck::new(
                    SequenceCheckConfig {
                        capacity: NonZeroUsize::new(10_000).expect("non-zero"),
                        timezones: Default::default(),
                        warmup_window: Duration::ZERO,
                    },
                    events.arrow_schema.clone(),
                    metrics.clone(),
                ),
            ),
            partitions: PartitionMap::default(),
            rejected: Vec::new(),
            dead: 0,
        };
        Ok((pipeline, metrics))
    }
}
