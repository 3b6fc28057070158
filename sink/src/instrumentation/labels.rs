//! The label sets of the sink's metrics. Labels are low-cardinality only: exchange, asset
//! class, data type, table, outcome, operation, kind. Never symbols, partitions or offsets.

use prometheus_client::encoding::EncodeLabelSet;

use k2_common::topic::TopicName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
}

impl TopicLabels {
    pub fn of(topic: &str) -> Self {
        match topic.parse::<TopicName>() {
            Ok(t) => TopicLabels {
                asset_class: t.asset_class().to_string(),
                data_type: t.data_type().to_string(),
                exchange: t.exchange().to_string(),
            },
            Err(_) => TopicLabels {
                asset_class: "unknown".into(),
                data_type: "unknown".into(),
                exchange: "unknown".into(),
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SequenceLabels {
    pub asset_class: String,
    pub data_type: String,
    pub exchange: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub table: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FreshnessLabels {
    pub table: String,
    pub exchange: String,
}

/// What was retried.
#[derive(Clone, Copy, Debug)]
pub enum Operation {
    CatalogLoad,
    OffsetsRead,
    DataFileWrite,
    Commit,
    /// Another writer committed first: the commit is planned again on the new head.
    CommitConflict,
    DeadLetterSend,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::CatalogLoad,
        Operation::OffsetsRead,
        Operation::DataFileWrite,
        Operation::Commit,
        Operation::CommitConflict,
        Operation::DeadLetterSend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CatalogLoad => "catalog_load",
            Operation::OffsetsRead => "offsets_read",
            Operation::DataFileWrite => "data_file_write",
            Operation::Commit => "commit",
            Operation::CommitConflict => "commit_conflict",
            Operation::DeadLetterSend => "dead_letter_send",
        }
    }

    pub(super) fn labels(self) -> OperationLabels {
        OperationLabels {
            operation: self.as_str().into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// A broker, as librdkafka names it (`host:port/id`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub broker: String,
}

/// A single `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}
