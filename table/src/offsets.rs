//! Kafka offsets kept in the table's own history, which is what makes the sink exactly-once.
//!
//! Every append K2 commits carries, in its snapshot summary, the next offset to read for
//! every topic-partition whose records the table holds (merged with what earlier snapshots
//! recorded), the consumer group, the writer id and a commit id; the same metadata update
//! sets the offsets and commit id as table properties, which survive snapshot expiry. The table, not the
//! consumer group, is the authority on where to resume: the Kafka commit that follows is
//! only for lag tools.

use std::collections::BTreeMap;

use iceberg::spec::{SnapshotRef, TableMetadata};
use serde::{Deserialize, Serialize};

/// Summary property holding the offsets, as JSON `{topic: {partition: next_offset}}`.
pub const OFFSETS_PROPERTY: &str = "k2.kafka-offsets";
pub const GROUP_PROPERTY: &str = "k2.consumer-group";
/// Unique per committed job, so a commit whose acknowledgement was lost is recognised.
pub const COMMIT_ID_PROPERTY: &str = "k2.commit-id";
pub const VERSION_PROPERTY: &str = "k2.sink-version";

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

/// The offsets a table records cannot be read. Never answered with "no offsets": that
/// would make the sink re-read every retained record.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("{place}: {OFFSETS_PROPERTY} is not valid offsets JSON")]
    Json {
        place: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the table's history is broken: snapshot {snapshot_id} names parent {parent_id}, which \
         is gone, and no K2 snapshot before it says where K2 stopped (and the table has no \
         {OFFSETS_PROPERTY} property); refusing to guess where to resume: restore the \
         metadata or set the property by hand (docs/operations.md)"
    )]
    HistoryBroken { snapshot_id: i64, parent_id: i64 },
    #[error(
        "the table's {OFFSETS_PROPERTY} property was written by commit {commit_id}, but no \
         snapshot of its current history carries offsets (was it rolled back to before K2 \
         wrote?); refusing to guess where to resume (docs/operations.md)"
    )]
    NoSnapshotForProperty { commit_id: String },
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

    /// The offsets recorded as of the table's current snapshot.
    ///
    /// Each K2 commit writes them twice in one metadata update: in its snapshot's summary
    /// and in the table property [`OFFSETS_PROPERTY`], with the commit id beside it. The
    /// newest K2 snapshot in the current ancestry wins (snapshots of other tools, e.g.
    /// compaction, carry none and are skipped); the property is what survives when that
    /// snapshot has been expired. A snapshot and property that disagree mean the table was
    /// rolled back: the snapshot is what the table holds, so it wins.
    pub fn from_metadata(metadata: &TableMetadata) -> Result<Self, OffsetsError> {
        let property = Self::from_properties(metadata.properties())?;
        let mut next = metadata.current_snapshot().cloned();
        while let Some(snapshot) = next {
            if let Some(offsets) = Self::from_snapshot(&snapshot)? {
                if let Some((commit_id, _)) = &property
                    && snapshot_commit_id(&snapshot) != Some(commit_id.as_str())
                {
                    tracing::warn!(
                        snapshot_id = snapshot.snapshot_id(),
                        property_commit = %commit_id,
                        "the offsets property and the newest K2 snapshot disagree (rolled back?); using the snapshot's"
                    );
                }
                return Ok(offsets);
            }
            let Some(parent_id) = snapshot.parent_snapshot_id() else {
                break;
            };
            next = metadata.snapshot_by_id(parent_id).cloned();
            if next.is_none() {
                // Expired (by K2's maintenance or any other tool).
                return match property {
                    Some((_, offsets)) => Ok(offsets),
                    None => Err(OffsetsError::HistoryBroken {
                        snapshot_id: snapshot.snapshot_id(),
                        parent_id,
                    }),
                };
            }
        }
        match property {
            None => Ok(TableOffsets::default()),
            Some((commit_id, _)) => Err(OffsetsError::NoSnapshotForProperty { commit_id }),
        }
    }

    /// The offsets and commit id of the table properties, if K2 wrote them.
    fn from_properties(
        properties: &std::collections::HashMap<String, String>,
    ) -> Result<Option<(String, Self)>, OffsetsError> {
        let Some(json) = properties.get(OFFSETS_PROPERTY) else {
            return Ok(None);
        };
        let offsets = Self::from_json(json, || "table property".to_string())?;
        let commit_id = properties
            .get(COMMIT_ID_PROPERTY)
            .cloned()
            .unwrap_or_default();
        Ok(Some((commit_id, offsets)))
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
        let snapshot_id = snapshot.snapshot_id();
        Self::from_json(json, || format!("snapshot {snapshot_id}")).map(Some)
    }

    /// Offsets as [`Self::to_json`] writes them, or in the older form with every
    /// partition keyed (`{topic: {"0": o, …}}`), which K2 wrote before and still reads.
    pub fn from_json(json: &str, place: impl Fn() -> String) -> Result<Self, OffsetsError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Partitions {
            /// Partitions 0, 1, … in order (the compact form).
            Dense(Vec<i64>),
            // (String keys: an untagged enum buffers the map and cannot parse them as
            // integers itself.)
            Keyed(BTreeMap<String, i64>),
        }
        let nested: BTreeMap<String, Partitions> =
            serde_json::from_str(json).map_err(|source| OffsetsError::Json {
                place: place(),
                source,
            })?;
        let mut out = BTreeMap::new();
        for (topic, parts) in nested {
            match parts {
                Partitions::Dense(offsets) => {
                    for (p, o) in offsets.into_iter().enumerate() {
                        out.insert(TopicPartition::new(topic.clone(), p as i32), o);
                    }
                }
                Partitions::Keyed(map) => {
                    for (p, o) in map {
                        let p = p.parse::<i32>().map_err(|e| OffsetsError::Json {
                            place: place(),
                            source: serde::de::Error::custom(format!(
                                "partition {p:?} of {topic}: {e}"
                            )),
                        })?;
                        out.insert(TopicPartition::new(topic.clone(), p), o);
                    }
                }
            }
        }
        Ok(TableOffsets(out))
    }

    /// These offsets with `updates` applied.
    pub fn merged<'a>(&self, updates: impl IntoIterator<Item = (&'a TopicPartition, i64)>) -> Self {
        let mut out = self.0.clone();
        for (tp, o) in updates {
            out.insert(tp.clone(), o);
        }
        TableOffsets(out)
    }

    /// JSON `{topic: offsets}`: a topic whose partitions 0, 1, … n are all recorded (the
    /// usual case) as an array indexed by partition, otherwise keyed by partition. Every
    /// snapshot carries these, so their size is most of what a snapshot adds to the
    /// metadata file (ADR-23).
    pub fn to_json(&self) -> String {
        let mut nested: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
        for (tp, o) in &self.0 {
            nested
                .entry(&tp.topic)
                .or_default()
                .insert(tp.partition, *o);
        }
        let value: serde_json::Map<String, serde_json::Value> = nested
            .into_iter()
            .map(|(topic, parts)| {
                let dense = parts.keys().copied().eq(0..parts.len() as i32);
                let v = if dense {
                    serde_json::Value::from(parts.into_values().collect::<Vec<_>>())
                } else {
                    serde_json::to_value(parts).expect("a map of integers serialises")
                };
                (topic.to_string(), v)
            })
            .collect();
        serde_json::Value::Object(value).to_string()
    }
}

fn snapshot_commit_id(snapshot: &SnapshotRef) -> Option<&str> {
    snapshot
        .summary()
        .additional_properties
        .get(COMMIT_ID_PROPERTY)
        .map(String::as_str)
}

/// True if the commit `commit_id` is in the table: the property names it (nothing was
/// committed since), or a snapshot newer than `since_snapshot_id` (exclusive; `None` = from
/// the start) in the current ancestry carries it. Either way the commit landed even if
/// its acknowledgement did not reach us.
pub fn commit_landed(
    metadata: &TableMetadata,
    since_snapshot_id: Option<i64>,
    commit_id: &str,
) -> bool {
    if metadata
        .properties()
        .get(COMMIT_ID_PROPERTY)
        .map(String::as_str)
        == Some(commit_id)
    {
        return true;
    }
    let mut next = metadata.current_snapshot().cloned();
    while let Some(snapshot) = next {
        if Some(snapshot.snapshot_id()) == since_snapshot_id {
            return false;
        }
        if snapshot_commit_id(&snapshot) == Some(commit_id) {
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
    use std::collections::HashMap;

    use iceberg::spec::{
        FormatVersion, MAIN_BRANCH, NestedField, Operation, PrimitiveType, Schema, Snapshot,
        SortOrder, Summary, TableMetadataBuilder, Type, UnboundPartitionSpec,
    };

    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("market.equities.trades.asx", p)
    }

    /// A snapshot `id` (parent `id - 1`, none for 1) recording `{p0: offset}` with commit id
    /// `c{id}`, or nothing (another tool's snapshot) for `None`.
    fn snapshot(id: i64, offset: Option<i64>) -> Snapshot {
        let mut props = HashMap::new();
        if let Some(o) = offset {
            props.insert(
                OFFSETS_PROPERTY.to_string(),
                TableOffsets::default().merged([(&tp(0), o)]).to_json(),
            );
            props.insert(COMMIT_ID_PROPERTY.to_string(), format!("c{id}"));
        }
        Snapshot::builder()
            .with_snapshot_id(id)
            .with_parent_snapshot_id((id > 1).then_some(id - 1))
            .with_sequence_number(id)
            .with_timestamp_ms(1_700_000_000_000 + id)
            .with_manifest_list(format!("memory:///t/metadata/snap-{id}.avro"))
            .with_summary(Summary {
                operation: Operation::Append,
                additional_properties: props,
            })
            .build()
    }

    /// Table metadata whose main branch went through `snapshots` in order, with the ids in
    /// `expired` removed afterwards and the K2 table properties of commit `property`
    /// (id, offset), if any.
    fn metadata(
        snapshots: &[(i64, Option<i64>)],
        expired: &[i64],
        property: Option<(i64, i64)>,
    ) -> TableMetadata {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "x", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let mut properties = HashMap::new();
        if let Some((id, o)) = property {
            properties.insert(
                OFFSETS_PROPERTY.to_string(),
                TableOffsets::default().merged([(&tp(0), o)]).to_json(),
            );
            properties.insert(COMMIT_ID_PROPERTY.to_string(), format!("c{id}"));
        }
        let mut builder = TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "memory:///t".to_string(),
            FormatVersion::V2,
            properties,
        )
        .unwrap();
        for &(id, offset) in snapshots {
            builder = builder
                .set_branch_snapshot(snapshot(id, offset), MAIN_BRANCH)
                .unwrap();
        }
        builder.remove_snapshots(expired).build().unwrap().metadata
    }

    fn offset(m: &TableMetadata) -> Option<i64> {
        TableOffsets::from_metadata(m).unwrap().get(&tp(0))
    }

    #[test]
    fn newest_k2_snapshot_wins_and_other_tools_snapshots_are_skipped() {
        let m = metadata(
            &[(1, Some(10)), (2, Some(20)), (3, None)],
            &[],
            Some((2, 20)),
        );
        assert_eq!(offset(&m), Some(20));
        // Tables written before the property existed.
        let m = metadata(&[(1, Some(10)), (2, Some(20)), (3, None)], &[], None);
        assert_eq!(offset(&m), Some(20));
        assert!(
            TableOffsets::from_metadata(&metadata(&[], &[], None))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn expired_k2_snapshots_leave_the_property() {
        // Compaction (3) on top of K2's commits, then everything below it expired.
        let m = metadata(
            &[(1, Some(10)), (2, Some(20)), (3, None)],
            &[1, 2],
            Some((2, 20)),
        );
        assert_eq!(offset(&m), Some(20));
    }

    #[test]
    fn a_broken_history_without_the_property_is_an_error_not_a_fresh_start() {
        let m = metadata(&[(1, Some(10)), (2, Some(20)), (3, None)], &[1, 2], None);
        let e = TableOffsets::from_metadata(&m).unwrap_err();
        assert!(
            matches!(
                e,
                OffsetsError::HistoryBroken {
                    snapshot_id: 3,
                    parent_id: 2
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_rolled_back_table_resumes_from_the_snapshot_it_holds() {
        // Rolled back to snapshot 1 after commit 2 set the property.
        let mut m = metadata(&[(1, Some(10))], &[], Some((2, 20)));
        assert_eq!(offset(&m), Some(10));
        // Rolled back to before any K2 commit: nothing says where to resume.
        m = metadata(&[(1, None)], &[], Some((2, 20)));
        assert!(matches!(
            TableOffsets::from_metadata(&m),
            Err(OffsetsError::NoSnapshotForProperty { .. })
        ));
    }

    #[test]
    fn the_property_alone_proves_a_commit_landed() {
        let m = metadata(&[(1, Some(10)), (2, None)], &[1], Some((1, 10)));
        assert!(commit_landed(&m, None, "c1"));
        assert!(!commit_landed(&m, None, "c9"));
        let m = metadata(&[(1, Some(10)), (2, Some(20))], &[], Some((2, 20)));
        assert!(commit_landed(&m, Some(1), "c2"));
        assert!(!commit_landed(&m, Some(2), "c1"));
    }

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
        // Partitions 0..n all recorded: an array, a third of the bytes.
        let rest: Vec<TopicPartition> = (1..7)
            .map(|p| TopicPartition::new("market.equities.trades.asx", p))
            .collect();
        let dense = next.merged(rest.iter().map(|tp| (tp, i64::from(tp.partition))));
        let json = dense.to_json();
        assert!(
            json.contains(r#""market.equities.trades.asx":[10,1,2,3,4,5,6,25]"#),
            "{json}"
        );
        assert_eq!(TableOffsets::from_json(&json, String::new).unwrap(), dense);
        // The keyed form K2 wrote before still reads.
        let old = r#"{"t":{"0":5,"1":6}}"#;
        let read = TableOffsets::from_json(old, String::new).unwrap();
        assert_eq!(read.get(&TopicPartition::new("t", 1)), Some(6));
    }
}
