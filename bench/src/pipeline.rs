//! The sink's path from Kafka record bytes to committed Iceberg snapshots, without a
//! broker: Confluent-framed Avro payloads from memory → decode (arrow-avro) → validate and
//! shape → sequence check → sort + Parquet + commit (the sink's committer, one job in
//! flight, as in the sink). The same stage code as `k2-sink`; only the consumer is left out.
//!
//! Two figures: wall-clock records/s on this machine (payloads generated before the clock
//! starts), and records and MB per CPU-second (per core).
//!
//! `--streaming` generates each job just before decoding it instead (bounded memory, used
//! by bench/query to build large tables; its timings include generation).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use iceberg::Catalog;

use k2_common::config::K2Config;
use k2_common::records::WireEncoder;
use k2_common::schema::BuiltinSchema;
use k2_common::topic::DataType;
use k2_common::topic::TopicName;
use k2_feed::event::Event;
use k2_feed::synthetic::{ExchangeSpec, SyntheticMarket};
use k2_sink::commit::Committer;
use k2_sink::decoder::{RawRecord, Rejected, SchemaSource};
use k2_sink::decoding::Decoding;
use k2_sink::instrumentation::Metrics;
use k2_sink::job::{CommitJob, PartitionState};
use k2_sink::offsets::{PartitionMap, TopicPartition};
use k2_sink::sequence_check::{SequenceCheck, SequenceCheckConfig};
use k2_sink::stages::Stages;
use k2_sink::table::{TableLayout, ensure_table};
use k2_sink::validation::Validation;

use crate::usage;

#[derive(clap::Args)]
pub struct Args {
    /// Records in total (trades ≈40 %, quotes, one reference record per instrument).
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Instruments per exchange (ASX equities and Binance crypto).
    #[arg(long, default_value_t = 100)]
    symbols: usize,
    /// Records per commit (the sink's default `sink.commit.max_records`).
    #[arg(long, default_value_t = 500_000)]
    job_records: usize,
    /// Kafka partitions per topic the records are spread over (by symbol).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Keep the catalog and warehouse in this directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Generate each job just before decoding it (bounded memory; timings include
    /// generation).
    #[arg(long)]
    streaming: bool,
    /// Microseconds between consecutive records' exchange timestamps (sets how many days
    /// the data spans).
    #[arg(long, default_value_t = 50)]
    spacing_micros: i64,
    /// Trades only (the market is simulated the same; other records are not produced).
    #[arg(long)]
    trades_only: bool,
}

/// One record as the broker would hand it over.
struct Rec {
    topic: u16,
    partition: i32,
    offset: i64,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// Generated records: one byte arena, topic names, data type per topic.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    recs: Vec<Rec>,
}

struct Generator {
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
    fn new(args: &Args) -> Self {
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
        let span = args.records as i64 * args.spacing_micros;
        Generator {
            market: SyntheticMarket::new(exchanges, args.symbols, 7, 1),
            encoders: DataType::ALL
                .map(|dt| (dt, WireEncoder::new(dt, schema_id(dt))))
                .into(),
            topics,
            topic_index,
            next_offset: HashMap::new(),
            partitions: args.partitions,
            clock: chrono::Utc::now().timestamp_micros() - span - 60_000_000,
            spacing: args.spacing_micros,
            trades_only: args.trades_only,
        }
    }

    fn fill(&mut self, out: &mut Records, n: usize) -> anyhow::Result<()> {
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
struct Pipeline {
    stages: Stages,
    partitions: PartitionMap<PartitionState>,
    rejected: Vec<Rejected>,
    dead: usize,
}

impl Pipeline {
    fn job(&mut self, generator: &Generator, records: &Records) -> anyhow::Result<CommitJob> {
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
            self.stages
                .buffer
                .handled(&probe, r.offset, rec.value.len());
            self.stages.push(*dt, &rec, true, &mut self.rejected)?;
        }
        self.stages.flush(&mut self.rejected)?;
        self.dead += self.rejected.len();
        self.rejected.clear();
        let job = self.stages.buffer.seal(
            |tp| {
                tp.topic
                    .parse::<TopicName>()
                    .map_or(DataType::Trades, |t| t.data_type())
            },
            &mut self.partitions,
        );
        Ok(job)
    }
}

/// The writer schema id the generated payloads carry.
fn schema_id(data_type: DataType) -> u32 {
    match data_type {
        DataType::Trades => 1,
        DataType::Quotes => 2,
        DataType::ReferenceData => 3,
    }
}

fn config_in(dir: &std::path::Path) -> anyhow::Result<K2Config> {
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let config = config_in(&dir)?;
    let rt = crate::runtime()?;
    let catalog: Arc<dyn Catalog> = rt
        .block_on(k2_common::catalog::connect(&config))
        .context("catalog")?;
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
    let mut stages = Pipeline {
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
    let writer_id = format!("k2-bench-{}", std::process::id());
    let committer = Committer::new(catalog.clone(), "k2-bench", &writer_id, metrics);
    let mut generator = Generator::new(&args);

    // Payloads first (outside the clock) unless streaming.
    let jobs = args.records.div_ceil(args.job_records);
    let mut pregenerated = std::collections::VecDeque::new();
    let gen_started = Instant::now();
    if !args.streaming {
        for j in 0..jobs {
            let n = args.job_records.min(args.records - j * args.job_records);
            let mut r = Records::default();
            generator.fill(&mut r, n)?;
            pregenerated.push_back(r);
        }
    }
    let generation = gen_started.elapsed();
    let payload_bytes: usize = pregenerated.iter().map(|r| r.bytes.len()).sum();

    let cpu_before = usage::own().cpu;
    let started = Instant::now();
    let mut in_flight: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let mut decode_time = Duration::ZERO;
    let mut streamed_bytes = 0usize;
    let mut scratch = Records::default();
    for j in 0..jobs {
        // Pregenerated jobs are dropped once decoded, as the sink frees a sealed buffer.
        let owned;
        let records = if args.streaming {
            let n = args.job_records.min(args.records - j * args.job_records);
            generator.fill(&mut scratch, n)?;
            streamed_bytes += scratch.bytes.len();
            &scratch
        } else {
            owned = pregenerated.pop_front().expect("one per job");
            &owned
        };
        let t = Instant::now();
        let job = stages.job(&generator, records)?;
        decode_time += t.elapsed();
        // One job in flight, as in the sink: decode the next while this one commits.
        if let Some(h) = in_flight.take() {
            rt.block_on(h)??;
        }
        let c = committer.clone();
        in_flight = Some(rt.spawn(async move {
            c.commit_tables(j as u64, job)
                .await
                .map_err(|e| anyhow::anyhow!("commit: {e}"))?;
            Ok(())
        }));
    }
    if let Some(h) = in_flight.take() {
        rt.block_on(h)??;
    }
    let wall = started.elapsed();
    let cpu = usage::own().cpu - cpu_before;
    // The figures count only if every record landed.
    anyhow::ensure!(
        stages.dead == 0,
        "{} generated records were rejected: the benchmark's data is wrong",
        stages.dead
    );
    let mut landed = 0u64;
    for dt in DataType::ALL {
        let table = rt.block_on(catalog.load_table(&k2_sink::table::table_ident(dt)))?;
        landed += table
            .metadata()
            .current_snapshot()
            .and_then(|s| {
                s.summary()
                    .additional_properties
                    .get("total-records")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64);
    }
    anyhow::ensure!(
        landed >= args.records as u64,
        "only {landed} of {} records are in the tables",
        args.records
    );
    let bytes = if args.streaming {
        streamed_bytes
    } else {
        payload_bytes
    };
    let n = args.records as f64;
    let mb = bytes as f64 / 1e6;
    println!(
        "| records | payload MB | jobs | wall s | records/s | MB/s | CPU s | records/CPU-s | MB/CPU-s | decode+check s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} | {jobs} | {:.2} | {:.0} | {:.1} | {:.2} | {:.0} | {:.1} | {:.2} | {:.0} |",
        args.records,
        mb,
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        mb / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        n / cpu.as_secs_f64(),
        mb / cpu.as_secs_f64(),
        decode_time.as_secs_f64(),
        usage::mib(usage::own().max_rss),
    );
    if !args.streaming {
        eprintln!(
            "(payloads generated in {:.1} s before the clock started; all {landed} records in the tables)",
            generation.as_secs_f64(),
        );
    }
    println!(
        "pipeline: {:.0} records/s per core ({:.1} MB/s per core; {:.0} records/s on {} cores)",
        n / cpu.as_secs_f64(),
        mb / cpu.as_secs_f64(),
        n / wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    Ok(())
}
