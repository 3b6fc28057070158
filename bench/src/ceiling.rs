//! The broker's raw consume ceiling: an rdkafka consumer (the same librdkafka settings
//! the sink's consumer starts from) that reads every partition of the given topics from
//! the beginning and only counts messages and bytes, until it has reached the high
//! watermarks it saw at start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::usage;

/// The broker and the topics a measuring consumer reads.
#[derive(clap::Args)]
pub struct Source {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, required = true, num_args = 1..)]
    pub topics: Vec<String>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.source.bootstrap)
        .set("group.id", "k2-bench-ceiling")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the consumer")?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for topic in &args.source.topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| format!("metadata of {topic}"))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                remaining.insert((topic.clone(), p.id()), high);
            }
        }
    }
    let expected_partitions = remaining.len();
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let cpu_before = usage::own().cpu;
    let mut first: Option<Instant> = None;
    let (mut messages, mut bytes) = (0u64, 0u64);
    while !remaining.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1800),
                "ceiling: no progress"
            );
            continue;
        };
        let m = m?;
        first.get_or_insert_with(Instant::now);
        messages += 1;
        bytes += m.payload_len() as u64;
        let key = (m.topic().to_string(), m.partition());
        if remaining
            .get(&key)
            .is_some_and(|high| m.offset() + 1 >= *high)
        {
            remaining.remove(&key);
        }
    }
    let from_first = first.map_or(Duration::ZERO, |f| f.elapsed());
    let total = started.elapsed();
    let cpu = usage::own().cpu - cpu_before;
    println!(
        "ceiling: messages={messages} bytes={bytes} partitions={expected_partitions} \
         seconds={:.3} seconds_from_first_message={:.3} records_per_second={:.0} \
         mb_per_second={:.2} cpu_seconds={:.3}",
        total.as_secs_f64(),
        from_first.as_secs_f64(),
        messages as f64 / total.as_secs_f64(),
        bytes as f64 / 1e6 / total.as_secs_f64(),
        cpu.as_secs_f64()
    );
    Ok(())
}
