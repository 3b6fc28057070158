//! The broker's own delivery latency under load: a consumer that starts at the end of the
//! given topics and, for each message, notes now − the message's create time (set by the
//! producer when the record was produced). What the sink's freshness cannot beat.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: crate::ceiling::Source,
    /// How long to listen.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.source.bootstrap)
        .set(
            "group.id",
            format!("k2-bench-delivery-{}", std::process::id()),
        )
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    let topics: Vec<&str> = args.source.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let end = Instant::now() + args.duration;
    let mut latencies: Vec<i64> = Vec::new();
    while Instant::now() < end {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(created) = m.timestamp().to_millis() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
            latencies.push(now - created);
        }
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p) as usize)
            .map_or(f64::NAN, |v| *v as f64 / 1e3)
    };
    println!(
        "delivery: messages={} p50={:.2} p99={:.2} max={:.2}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
