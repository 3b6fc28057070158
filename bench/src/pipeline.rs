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
use k2_feed::event::Event;
use k2_feed::synthetic::{ExchangeSpec, SyntheticMarket};
use k2_sink::buffer::{CommitJob, PartitionRange, TableJob};
use k2_sink::commit::Committer;
use k2_sink::instrumentation::Metrics;
use k2_sink::offsets::TopicPartition;
use k2_sink::sequence::{Instruments, SequenceTracker};
use k2_sink::serialization::{RawRecord, SchemaDecoder};
use k2_sink::table::{TableLayout, ensure_table};
use k2_sink::validation::{TimeWindow, shape, validate};

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
            for dt in [DataType::Trades, DataType::Quotes, DataType::ReferenceData] {
                let name = format!("market.{}.{}.{}", ex.asset_class, dt.as_str(), ex.code);
                topic_index.insert((ex.code.clone(), dt), topics.len() as u16);
                topics.push((Arc::<str>::from(name), dt));
            }
        }
        let span = args.records as i64 * args.spacing_micros;
        Generator {
            market: SyntheticMarket::new(exchanges, args.symbols, 7, 1),
            encoders: [
                (DataType::Trades, WireEncoder::new(DataType::Trades, 1)),
                (DataType::Quotes, WireEncoder::new(DataType::Quotes, 2)),
                (
                    DataType::ReferenceData,
                    WireEncoder::new(DataType::ReferenceData, 3),
                ),
            ]
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

/// Decode → validate → shape → sequence check for one job's records; the job to commit.
struct Stages {
    layouts: HashMap<DataType, TableLayout>,
    decoders: HashMap<DataType, SchemaDecoder>,
    tracker: SequenceTracker,
    recorded: HashMap<TopicPartition, i64>,
    instruments: Instruments,
    dead: usize,
}

impl Stages {
    fn job(&mut self, generator: &Generator, records: &Records) -> anyhow::Result<CommitJob> {
        let mut batches: HashMap<DataType, Vec<arrow::record_batch::RecordBatch>> = HashMap::new();
        let mut ranges: HashMap<(u16, i32), (i64, i64)> = HashMap::new();
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
            let range = ranges
                .entry((r.topic, r.partition))
                .or_insert((r.offset, r.offset));
            range.1 = r.offset;
            let decoder = self.decoders.get_mut(dt).expect("a decoder per data type");
            decoder
                .push(&rec)
                .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
            if decoder.is_full() {
                self.flush(*dt, &mut batches)?;
            }
        }
        for dt in [DataType::Trades, DataType::Quotes, DataType::ReferenceData] {
            self.flush(dt, &mut batches)?;
        }
        let mut tables = Vec::new();
        for (dt, batches) in batches {
            let mut partitions = BTreeMap::new();
            for (&(topic, partition), &(first, last)) in &ranges {
                if generator.topics[topic as usize].1 != dt {
                    continue;
                }
                let tp =
                    TopicPartition::new(generator.topics[topic as usize].0.to_string(), partition);
                let expected = self.recorded.insert(tp.clone(), last + 1);
                partitions.insert(
                    tp,
                    PartitionRange {
                        expected_recorded: expected,
                        first_offset: first,
                        end: last + 1,
                        epoch: 0,
                    },
                );
            }
            let records = batches.iter().map(|b| b.num_rows()).sum();
            tables.push(TableJob {
                data_type: dt,
                batches,
                records,
                partitions,
            });
        }
        Ok(CommitJob {
            records: records.recs.len(),
            bytes: records.bytes.len(),
            tables,
            sequence_events: Vec::new(),
        })
    }

    fn flush(
        &mut self,
        dt: DataType,
        out: &mut HashMap<DataType, Vec<arrow::record_batch::RecordBatch>>,
    ) -> anyhow::Result<()> {
        let decoder = self.decoders.get_mut(&dt).expect("a decoder per data type");
        let (decoded, rejected) = decoder.flush().map_err(|e| anyhow::anyhow!("flush: {e}"))?;
        self.dead += rejected.len();
        let Some(decoded) = decoded else {
            return Ok(());
        };
        let now = chrono::Utc::now();
        let window = TimeWindow {
            min_micros: 0,
            max_micros: (now + Duration::from_secs(86_400)).timestamp_micros(),
        };
        let violations = validate(dt, &decoded, window);
        let (batch, invalid) = shape(
            &self.layouts[&dt],
            decoded,
            violations,
            now.timestamp_micros(),
        )?;
        self.dead += invalid.len();
        if let Some(batch) = batch {
            if dt != DataType::ReferenceData {
                self.check_sequences(dt, &batch);
            }
            out.entry(dt).or_default().push(batch);
        }
        Ok(())
    }

    /// What the sink does per row: the instrument key and trading day, then the LRU
    /// tracker's classification.
    fn check_sequences(&mut self, dt: DataType, batch: &arrow::record_batch::RecordBatch) {
        use arrow::array::AsArray;
        use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
        let exchange = batch["exchange"].as_string::<i32>();
        let symbol = batch["symbol"].as_string::<i32>();
        let seq = batch["sequence_number"].as_primitive::<Int64Type>();
        let ts = batch["exchange_timestamp"].as_primitive::<TimestampMicrosecondType>();
        let partition = batch["kafka_partition"].as_primitive::<Int32Type>();
        for i in 0..batch.num_rows() {
            let (key, day) =
                self.instruments
                    .key(dt, exchange.value(i), symbol.value(i), ts.value(i));
            self.tracker
                .observe(&key, seq.value(i), day, partition.value(i));
        }
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
    let mut layouts = HashMap::new();
    let mut decoders = HashMap::new();
    for (dt, id) in [
        (DataType::Trades, 1),
        (DataType::Quotes, 2),
        (DataType::ReferenceData, 3),
    ] {
        let builtin = BuiltinSchema::for_data_type(dt);
        let layout = TableLayout::new(dt, &builtin.parse())?;
        rt.block_on(ensure_table(catalog.as_ref(), &layout))?;
        layouts.insert(dt, layout);
        decoders.insert(
            dt,
            SchemaDecoder::new(id, builtin.text, builtin.text, 8192)
                .map_err(|e| anyhow::anyhow!(e))?,
        );
    }
    rt.block_on(ensure_table(
        catalog.as_ref(),
        &TableLayout::sequence_events()?,
    ))?;
    let mut stages = Stages {
        layouts,
        decoders,
        tracker: SequenceTracker::new(NonZeroUsize::new(10_000).unwrap()),
        recorded: HashMap::new(),
        instruments: Instruments::new(Default::default()),
        dead: 0,
    };
    let writer_id = format!("k2-bench-{}", std::process::id());
    let committer = Committer::new(catalog.clone(), "k2-bench", &writer_id, Metrics::new());
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
    for dt in [DataType::Trades, DataType::Quotes, DataType::ReferenceData] {
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
