//! Kafka offsets kept in the table's own history, which is what makes the sink exactly-once.
//!
//! Every append K2 commits carries, in its snapshot summary, the next offset to read for
//! every topic-partition whose records the table holds (merged with what earlier snapshots
//! recorded), the consumer group, the writer id and a commit id. The table, not the
//! consumer group, is the authority on where to resume: the Kafka commit that follows is
//! only for lag tools.

use std::collections::BTreeMap;

use iceberg::spec::{SnapshotRef, TableMetadata};
use serde::{Deserialize, Serialize};

/// Summary property holding the offsets, as JSON `{topic: {partition: next_offset}}`.
pub const OFFSETS_PROPERTY: &str = "k2.kafka-offsets";
pub const GROUP_PROPERTY: &str = "k2.consumer-group";
pub const WRITER_PROPERTY: &str = "k2.writer-id";
/// Unique per committed job, so a commit whose acknowledgement was lost is recognised.
pub const COMMIT_ID_PROPERTY: &str = "k2.commit-id";
pub const VERSION_PROPERTY: &str = "k2.sink-version";

/// A map keyed by topic-partition. The poll loop looks partitions up for every record;
/// SipHash's protection against crafted keys buys nothing for names K2 subscribed to
/// itself, and cost a few percent of the loop's time.
pub type PartitionMap<V> = std::collections::HashMap<TopicPartition, V, rustc_hash::FxBuildHasher>;

/// A Kafka topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("snapshot {snapshot_id}: property {OFFSETS_PROPERTY} is not valid offsets JSON: {source}")]
pub struct OffsetsError {
    snapshot_id: i64,
    #[source]
    source: serde_json::Error,
}

/// Next offset to read, per topic-partition, as recorded by a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOffsets(BTreeMap<TopicPartition, i64>);

impl TableOffsets {
    pub fn get(&self, tp: &TopicPartition) -> Option<i64> {
        self.0.get(tp).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The offsets recorded as of the table's current snapshot: the newest snapshot in its
    /// ancestry that carries them (snapshots made by other tools, e.g. maintenance, carry
    /// none and are skipped).
    pub fn from_metadata(metadata: &TableMetadata) -> Result<Self, OffsetsError> {
        let mut next = metadata.current_snapshot().cloned();
        while let Some(snapshot) = next {
            if let Some(offsets) = Self::from_snapshot(&snapshot)? {
                return Ok(offsets);
            }
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id).cloned());
        }
        Ok(TableOffsets::default())
    }

    /// The offsets recorded by this snapshot, if it recorded any.
    pub fn from_snapshot(snapshot: &SnapshotRef) -> Result<Option<Self>, OffsetsError> {
        let Some(json) = snapshot
            .summary()
            .additional_properties
            .get(OFFSETS_PROPERTY)
        else {
            return Ok(None);
        };
        let nested: BTreeMap<String, BTreeMap<i32, i64>> =
            serde_json::from_str(json).map_err(|source| OffsetsError {
                snapshot_id: snapshot.snapshot_id(),
                source,
            })?;
        Ok(Some(TableOffsets(
            nested
                .into_iter()
                .flat_map(|(topic, parts)| {
                    parts
                        .into_iter()
                        .map(move |(p, o)| (TopicPartition::new(topic.clone(), p), o))
                })
                .collect(),
        )))
    }

    /// These offsets with `updates` applied.
    pub fn merged<'a>(&self, updates: impl IntoIterator<Item = (&'a TopicPartition, i64)>) -> Self {
        let mut out = self.0.clone();
        for (tp, o) in updates {
            out.insert(tp.clone(), o);
        }
        TableOffsets(out)
    }

    pub fn to_json(&self) -> String {
        let mut nested: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
        for (tp, o) in &self.0 {
            nested
                .entry(&tp.topic)
                .or_default()
                .insert(tp.partition, *o);
        }
        serde_json::to_string(&nested).expect("maps of strings and integers serialise")
    }
}

/// True if a snapshot newer than `since_snapshot_id` (exclusive; `None` = from the start)
/// in the current ancestry carries this commit id: the commit landed even if its
/// acknowledgement did not reach us.
pub fn commit_landed(
    metadata: &TableMetadata,
    since_snapshot_id: Option<i64>,
    commit_id: &str,
) -> bool {
    let mut next = metadata.current_snapshot().cloned();
    while let Some(snapshot) = next {
        if Some(snapshot.snapshot_id()) == since_snapshot_id {
            return false;
        }
        if snapshot
            .summary()
            .additional_properties
            .get(COMMIT_ID_PROPERTY)
            .map(String::as_str)
            == Some(commit_id)
        {
            return true;
        }
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_merge() {
        let a = TopicPartition::new("market.equities.trades.asx", 0);
        let b = TopicPartition::new("market.equities.trades.asx", 7);
        let c = TopicPartition::new("market.crypto.trades.binance", 3);
        let base = TableOffsets::default().merged([(&a, 10), (&b, 20)]);
        let next = base.merged([(&b, 25), (&c, 1)]);
        assert_eq!(next.get(&a), Some(10));
        assert_eq!(next.get(&b), Some(25));
        assert_eq!(next.get(&c), Some(1));
        assert_eq!(
            next.to_json(),
            r#"{"market.crypto.trades.binance":{"3":1},"market.equities.trades.asx":{"0":10,"7":25}}"#
        );
    }
}
