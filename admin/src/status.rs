//! `k2-admin status`: one screen of where K2 stands, read from the catalog and the broker
//! (no sink needs to run): per table its last commit, snapshot count and record count; per
//! topic how far the tables' recorded offsets are behind the broker's end; the dead-letter
//! topic's depth. The offsets are the ones the tables hold (what a restarted sink resumes
//! from), not the consumer group's, which only mirror them.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use k2_admin::broker::BrokerContext;
use k2_common::config::{K2Config, TopicsConfig};
use k2_common::data_type::DataType;
use k2_table::offsets::{TableOffsets, TopicPartition};

const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct Status {
    pub tables: Vec<TableStatus>,
    pub topics: Vec<TopicStatus>,
    pub dead_letters: DeadLetterStatus,
}

#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub last_commit: Option<DateTime<Utc>>,
    /// Seconds since the last commit.
    pub commit_age_seconds: Option<f64>,
    pub snapshots: usize,
    pub records: u64,
}

#[derive(Debug, Serialize)]
pub struct TopicStatus {
    pub topic: String,
    pub table: String,
    pub partitions: usize,
    /// Records in the topic past what the table has recorded (retention-deleted records
    /// not counted).
    pub behind: i64,
}

#[derive(Debug, Serialize)]
pub struct DeadLetterStatus {
    pub topic: String,
    /// Records the dead-letter topic holds now.
    pub depth: i64,
}

pub async fn collect(config: &K2Config, topics: &TopicsConfig) -> anyhow::Result<Status> {
    let catalog = k2_common::catalog::connect(config).await?;
    let mut consumer_config = rdkafka::ClientConfig::new();
    for (k, v) in config.kafka.client_properties() {
        consumer_config.set(k, v);
    }
    let consumer: BaseConsumer<BrokerContext> = consumer_config
        .set("group.id", format!("{}-status", config.kafka.group_id))
        .create_with_context(BrokerContext::default())
        .context("cannot create a Kafka client")?;

    let now = Utc::now();
    let mut tables = Vec::new();
    let mut recorded = std::collections::HashMap::new();
    for dt in DataType::ALL {
        let ident = k2_table::layout::table_ident(dt);
        if !catalog.table_exists(&ident).await? {
            continue;
        }
        let table = catalog.load_table(&ident).await?;
        let metadata = table.metadata();
        let current = metadata.current_snapshot();
        let last_commit = current.and_then(|s| Utc.timestamp_millis_opt(s.timestamp_ms()).single());
        tables.push(TableStatus {
            table: ident.to_string(),
            last_commit,
            commit_age_seconds: last_commit.map(|t| (now - t).as_seconds_f64()),
            snapshots: metadata.snapshots().count(),
            records: current
                .and_then(|s| s.summary().additional_properties.get("total-records"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        });
        recorded.insert(
            dt,
            TableOffsets::from_metadata(metadata)
                .with_context(|| format!("{ident}: reading its recorded offsets"))?,
        );
    }

    let mut topic_status = Vec::new();
    for spec in topics.topic_specs() {
        let name = spec.name.to_string();
        let dt = spec.name.data_type();
        let offsets = recorded.get(&dt);
        let (partitions, behind) = tokio::task::block_in_place(|| {
            let metadata = consumer
                .fetch_metadata(Some(&name), BROKER_TIMEOUT)
                .with_context(|| {
                    format!(
                        "reading {name}'s partitions from the broker{}",
                        k2_admin::broker::drain(&consumer)
                    )
                })?;
            let mut behind = 0;
            let mut partitions = 0;
            for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for p in t.partitions() {
                    partitions += 1;
                    let (low, high) = consumer
                        .fetch_watermarks(&name, p.id(), BROKER_TIMEOUT)
                        .with_context(|| format!("reading {name}[{}]'s offsets", p.id()))?;
                    let from = offsets
                        .and_then(|o| o.get(&TopicPartition::new(&name, p.id())))
                        .unwrap_or(low)
                        .max(low);
                    behind += (high - from).max(0);
                }
            }
            anyhow::Ok((partitions, behind))
        })?;
        topic_status.push(TopicStatus {
            topic: name,
            table: dt.table_name().to_string(),
            partitions,
            behind,
        });
    }

    let dlq = &config.sink.dead_letter_topic;
    let depth = tokio::task::block_in_place(|| {
        let metadata = consumer
            .fetch_metadata(Some(dlq), BROKER_TIMEOUT)
            .with_context(|| format!("reading {dlq}'s partitions from the broker"))?;
        let mut depth = 0;
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(dlq, p.id(), BROKER_TIMEOUT)?;
                depth += high - low;
            }
        }
        anyhow::Ok(depth)
    })?;
    Ok(Status {
        tables,
        topics: topic_status,
        dead_letters: DeadLetterStatus {
            topic: dlq.clone(),
            depth,
        },
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "tables (catalog)")?;
        for t in &self.tables {
            let last = match (t.last_commit, t.commit_age_seconds) {
                (Some(at), Some(age)) => format!("{} ({age:.0}s ago)", at.format("%F %T UTC")),
                _ => "never".into(),
            };
            writeln!(
                f,
                "  {:<32} last commit {last:<36} snapshots {:>6}  records {:>12}",
                t.table, t.snapshots, t.records
            )?;
        }
        writeln!(f, "topics (broker end vs offsets recorded in the tables)")?;
        for t in &self.topics {
            writeln!(
                f,
                "  {:<40} → {:<16} partitions {:>3}  behind {:>10}",
                t.topic, t.table, t.partitions, t.behind
            )?;
        }
        writeln!(
            f,
            "dead letters: {} holds {} records",
            self.dead_letters.topic, self.dead_letters.depth
        )
    }
}
